//! Signing reviewers in with the organisation's OpenID provider: discovery, the authorization
//! request (code flow, PKCE S256, `state`, `nonce`), the code exchange, and the ID token checked
//! against the provider's keys (signature, `iss`, `aud`, `exp`, `nonce`) before any claim is read.
//! Claims the ID token leaves out (`email`, groups) come from the userinfo endpoint, for the same
//! `sub`.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use oauth_resource_server::{KeyNaming, OAuthConfig, OAuthValidator, TokenRejection};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{
    approval::pending::same_secret,
    channels::review::{ReviewConfig, check_url},
};

/// The provider's endpoints and a validator for its ID tokens.
pub struct Provider {
    authorization_endpoint: url::Url,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    validator: OAuthValidator,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}

/// What the token endpoint answers.
#[derive(Deserialize)]
struct Tokens {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// A reviewer the provider vouched for.
#[derive(Debug)]
pub struct SignedIn {
    pub principal: String,
    pub display: Option<String>,
    pub groups: Vec<String>,
    /// Their other names here: `sub`, and a verified e-mail address, when not the principal.
    pub aliases: Vec<String>,
}

/// Reads the provider's discovery document and prepares to check its ID tokens.
/// `app_url` is the review app's URL (the validator's resource, never sent anywhere).
pub async fn discover(client: &reqwest::Client, config: &ReviewConfig, app_url: &str) -> Result<Provider, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        config.issuer.trim_end_matches('/')
    );
    let doc: Discovery = client
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("cannot read `{url}`: {e}"))?
        .json()
        .await
        .map_err(|e| format!("`{url}` is not an OpenID discovery document: {e}"))?;
    if doc.issuer != config.issuer {
        return Err(format!(
            "`{url}` names the issuer `{}`, not `{}`; set `issuer` exactly as the provider writes it",
            doc.issuer, config.issuer
        ));
    }
    if let Some(methods) = &doc.code_challenge_methods_supported
        && !methods.iter().any(|m| m == "S256")
    {
        return Err(format!(
            "the provider does not support PKCE with S256 (it lists {methods:?})"
        ));
    }
    let insecure = config.allow_insecure_http;
    let authorization_endpoint = url::Url::parse(&doc.authorization_endpoint)
        .map_err(|e| format!("the provider's authorization_endpoint: {e}"))?;
    check_url(authorization_endpoint.origin().ascii_serialization().as_str(), insecure)
        .map_err(|e| format!("the provider's authorization_endpoint: {e}"))?;
    for endpoint in std::iter::once(&doc.token_endpoint).chain(doc.userinfo_endpoint.as_ref()) {
        let origin = url::Url::parse(endpoint)
            .map(|u| u.origin().ascii_serialization())
            .map_err(|e| format!("the provider's endpoint `{endpoint}`: {e}"))?;
        check_url(&origin, insecure).map_err(|e| format!("the provider's endpoint `{endpoint}`: {e}"))?;
    }
    let checks = OAuthConfig {
        enabled: true,
        issuer: config.issuer.clone(),
        jwks_uri: Some(doc.jwks_uri),
        // An ID token names the client it was issued to.
        audience: config.client_id.clone(),
        resource: app_url.to_string(),
        // What sets an ID token apart is checked here instead: it comes straight from the token
        // endpoint, for this sign-in's nonce.
        allow_unscoped_tokens: true,
        allow_insecure_http: insecure,
        accept_static_bearer: false,
        principal_claims: vec!["sub".into()],
        ..OAuthConfig::default()
    };
    let resolved = checks
        .resolve(KeyNaming::Dotted("review"))
        .map_err(|e| e.to_string())?
        .ok_or("the ID token checks are off")?;
    let validator = OAuthValidator::new(&resolved).map_err(|e| e.to_string())?;
    Ok(Provider {
        authorization_endpoint,
        token_endpoint: doc.token_endpoint,
        userinfo_endpoint: doc.userinfo_endpoint,
        validator,
    })
}

/// The PKCE S256 challenge of `verifier`.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// How this app signs people in at the provider: its client, its redirect URI.
pub struct Flow<'a> {
    pub config: &'a ReviewConfig,
    pub client: &'a reqwest::Client,
    pub secret: Option<&'a str>,
    pub redirect_uri: &'a str,
}

impl Flow<'_> {
    /// Where to send the browser to sign in.
    pub fn authorize_url(&self, p: &Provider, state: &str, nonce: &str, verifier: &str) -> String {
        let mut url = p.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", self.redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge(verifier))
            .append_pair("code_challenge_method", "S256");
        url.into()
    }

    /// Trades `code` for tokens, checks the ID token (and its `nonce`), and reads the reviewer.
    pub async fn finish(&self, p: &Provider, code: &str, verifier: &str, nonce: &str) -> Result<SignedIn, String> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut request = self.client.post(&p.token_endpoint);
        match self.secret {
            // RFC 6749 §2.3.1: both halves form-encoded before Basic.
            Some(secret) => {
                let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                request = request.basic_auth(enc(&self.config.client_id), Some(enc(secret)));
            }
            None => form.push(("client_id", &self.config.client_id)),
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("the provider's token endpoint cannot be reached: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let error = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| status.to_string());
            return Err(format!("the provider refused the sign-in code ({error})"));
        }
        let tokens: Tokens = response
            .json()
            .await
            .map_err(|e| format!("the provider's token response is unreadable: {e}"))?;
        let id_token = tokens
            .id_token
            .ok_or("the provider sent no ID token (is `openid` among the scopes?)")?;
        let checked = p.validator.validate(&id_token).await.map_err(|e| {
            let detail = match &e {
                TokenRejection::Invalid(i) => i.detail().to_string(),
                other => other.to_string(),
            };
            tracing::warn!("review app: an ID token was refused: {detail}");
            "the provider's ID token did not check out (signature, issuer, audience or expiry)".to_string()
        })?;
        let mut claims = checked.claims().clone();
        let sent_nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or_default();
        if !same_secret(sent_nonce, nonce) {
            return Err("the ID token is not for this sign-in (wrong nonce)".into());
        }
        issued_to(&claims, &self.config.client_id)?;
        if let (Some(endpoint), Some(access)) = (&p.userinfo_endpoint, &tokens.access_token) {
            match self.userinfo(endpoint, access).await {
                Ok(more) if more.get("sub") == claims.get("sub") => {
                    for (k, v) in more {
                        claims.entry(k).or_insert(v);
                    }
                }
                Ok(_) => return Err("the provider's userinfo names another person than the ID token".into()),
                Err(e) => tracing::warn!("review app: userinfo: {e}; using the ID token's claims only"),
            }
        }
        signed_in(self.config, &claims)
    }

    async fn userinfo(&self, endpoint: &str, access: &str) -> Result<Map<String, Value>, String> {
        self.client
            .get(endpoint)
            .bearer_auth(access)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())
    }
}

/// Whether checked `claims` were issued to this client (OpenID Connect Core 3.1.3.7): the
/// validator has seen `client_id` among the audiences; with others beside it, `azp` must name
/// this client, and a present `azp` must always.
pub fn issued_to(claims: &Map<String, Value>, client_id: &str) -> Result<(), String> {
    let audiences = match claims.get("aud") {
        Some(Value::Array(all)) => all.len(),
        _ => 1,
    };
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == client_id => Ok(()),
        Some(Value::String(azp)) => Err(format!("the ID token was issued to another client (`{azp}`)")),
        Some(azp) => Err(format!("the ID token was issued to another client ({azp})")),
        None if audiences > 1 => {
            Err("the ID token names several audiences but not which client it was issued to (no `azp`)".into())
        }
        None => Ok(()),
    }
}

/// Whether the provider says the e-mail address is not verified: `false`, or the string
/// `"false"` some providers send.
fn unverified(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => !s.trim().eq_ignore_ascii_case("true"),
        Some(_) => true,
        None => false,
    }
}

/// The reviewer named by checked `claims`.
pub fn signed_in(config: &ReviewConfig, claims: &Map<String, Value>) -> Result<SignedIn, String> {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let email_unverified = unverified(claims.get("email_verified"));
    let principal = match text(&config.principal_claim) {
        Some(p) => {
            if config.principal_claim == "email" && email_unverified {
                return Err(format!(
                    "the provider says the e-mail address `{p}` is not verified; verify it there and sign in again"
                ));
            }
            p
        }
        None => text("sub").ok_or("the ID token names nobody (no `sub`)")?,
    };
    let display = ["name", "preferred_username", "email"]
        .iter()
        .find_map(|c| text(c))
        .filter(|d| *d != principal);
    let mut groups: Vec<String> = match claims.get(&config.groups_claim) {
        Some(Value::String(g)) => vec![g.clone()],
        Some(Value::Array(all)) => all.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => vec![],
    };
    // The session cookie carries them: a bounded list of bounded names.
    groups.retain(|g| !g.is_empty() && g.len() <= 200);
    groups.sort();
    groups.dedup();
    if groups.len() > 100 {
        tracing::warn!(
            "review app: {principal} is in {} groups; only the first 100 are kept",
            groups.len()
        );
        groups.truncate(100);
    }
    let mut aliases: Vec<String> = text("sub")
        .into_iter()
        .chain(text("email").filter(|_| !email_unverified))
        .filter(|a| *a != principal)
        .collect();
    aliases.dedup();
    Ok(SignedIn {
        principal,
        display,
        groups,
        aliases,
    })
}

/// The provider, found once (and again after a failure).
pub type Shared = tokio::sync::OnceCell<Arc<Provider>>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> ReviewConfig {
        let mut c: ReviewConfig = toml::from_str("issuer = \"https://idp/\"\nclient_id = \"pgw\"\n").unwrap();
        c.resolve(std::path::Path::new("/x")).unwrap();
        c
    }

    #[test]
    fn pkce_challenge_is_rfc_7636s_example() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_reviewer_is_the_verified_email_else_the_subject() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        let c = config();
        let bob = signed_in(
            &c,
            &claims(json!({"sub": "b1", "email": "bob@example.com", "name": "Bob", "groups": ["dba", "dba", ""]})),
        )
        .unwrap();
        assert_eq!(
            (bob.principal.as_str(), bob.display.as_deref(), bob.groups, bob.aliases),
            (
                "bob@example.com",
                Some("Bob"),
                vec!["dba".to_string()],
                vec!["b1".to_string()]
            )
        );
        let sub = signed_in(&c, &claims(json!({"sub": "b1", "groups": "ops"}))).unwrap();
        assert_eq!((sub.principal.as_str(), sub.groups), ("b1", vec!["ops".to_string()]));
        let e = signed_in(
            &c,
            &claims(json!({"sub": "b1", "email": "bob@example.com", "email_verified": false})),
        )
        .unwrap_err();
        assert!(e.contains("not verified"), "{e}");
        assert!(signed_in(&c, &claims(json!({"email": " "}))).is_err());
        // Some providers send the flag as a string: "false" is as unverified as `false`.
        for flag in [json!("false"), json!("False"), json!(0), json!(null)] {
            let e = signed_in(
                &c,
                &claims(json!({"sub": "b1", "email": "bob@example.com", "email_verified": flag})),
            );
            assert!(e.is_err_and(|e| e.contains("not verified")), "email_verified: {flag}");
        }
        for flag in [json!(true), json!("true")] {
            let ok = signed_in(
                &c,
                &claims(json!({"sub": "b1", "email": "bob@example.com", "email_verified": flag})),
            );
            assert_eq!(ok.unwrap().principal, "bob@example.com", "email_verified: {flag}");
        }
    }

    #[test]
    fn an_id_token_with_other_audiences_must_say_it_was_issued_to_this_client() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert!(issued_to(&claims(json!({"aud": "pgw"})), "pgw").is_ok());
        assert!(issued_to(&claims(json!({"aud": ["pgw"]})), "pgw").is_ok());
        assert!(issued_to(&claims(json!({"aud": ["pgw", "other"], "azp": "pgw"})), "pgw").is_ok());
        let e = issued_to(&claims(json!({"aud": ["pgw", "other"]})), "pgw").unwrap_err();
        assert!(e.contains("no `azp`"), "{e}");
        let e = issued_to(&claims(json!({"aud": ["pgw", "other"], "azp": "other"})), "pgw").unwrap_err();
        assert!(e.contains("another client"), "{e}");
        assert!(issued_to(&claims(json!({"aud": "pgw", "azp": 7})), "pgw").is_err());
    }
}
