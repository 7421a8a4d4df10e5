//! The OAuth 2.1 resource server, as the MCP authorization spec asks: JWT access tokens checked
//! against the issuer's JWKS (cached, refetched on an unknown `kid`) for signature, `iss`, `aud`
//! (this server's resource), `exp` and `nbf`; RFC 9728 metadata and RFC 6750 challenges; scopes
//! required of every request and per tool. The checking is `oauth-resource-server`'s; this file
//! maps the settings and turns a checked token into an [`Identity`].

use std::sync::Arc;

use oauth_resource_server::{AuthorizedToken, KeyNaming, OAuthConfig, OAuthValidator};
use serde::Deserialize;

use crate::{
    call::{Authn, Identity, Principal},
    config::ConfigError,
};

/// `[oauth]` in the HTTP config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OauthSettings {
    /// The issuer, byte for byte as it writes `iss` (trailing slash and all).
    pub issuer: String,
    /// The issuer's key set; found through its discovery document when omitted.
    pub jwks_uri: Option<String>,
    /// What tokens must name in `aud`. Defaults to the config's `resource` (RFC 8707).
    pub audience: Option<String>,
    /// The claim that names the principal policy rules match. Defaults to `sub`.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// Claims shown to people as the caller's name, first present wins.
    #[serde(default = "default_display_claims")]
    pub display_claims: Vec<String>,
    /// The claim listing the caller's groups (a string array, or one string). Defaults to `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Scopes every request needs.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Scopes a tool call needs besides, by tool name (`grant = ["pgwarden:admin"]`).
    #[serde(default)]
    pub tool_scopes: std::collections::BTreeMap<String, Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. Defaults to 60.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Fetch keys over plain HTTP: for a test issuer on loopback only.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn default_leeway() -> u64 {
    oauth_resource_server::DEFAULT_LEEWAY_SECS
}

fn default_principal_claim() -> String {
    "sub".into()
}

fn default_display_claims() -> Vec<String> {
    vec!["email".into(), "preferred_username".into()]
}

fn default_groups_claim() -> String {
    "groups".into()
}

/// A validator and how to read identities out of the tokens it accepts.
pub struct Oauth {
    pub validator: Arc<OAuthValidator>,
    pub settings: OauthSettings,
}

impl Oauth {
    pub fn new(settings: OauthSettings, resource: &str) -> Result<Oauth, ConfigError> {
        let audience = settings.audience.clone().unwrap_or_else(|| resource.to_string());
        let config = OAuthConfig {
            enabled: true,
            issuer: settings.issuer.clone(),
            jwks_uri: settings.jwks_uri.clone(),
            audience,
            resource: resource.to_string(),
            required_scopes: settings.required_scopes.clone(),
            scopes_supported: Some(
                settings
                    .required_scopes
                    .iter()
                    .chain(settings.tool_scopes.values().flatten())
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            ),
            allow_unscoped_tokens: settings.required_scopes.is_empty(),
            allow_insecure_http: settings.allow_insecure_http,
            leeway_secs: settings.leeway_secs,
            accept_static_bearer: false,
            principal_claims: vec![settings.principal_claim.clone()],
            ..OAuthConfig::default()
        };
        let resolved = config
            .resolve(KeyNaming::Dotted("oauth"))
            .map_err(|e| ConfigError(format!("the HTTP config's `[oauth]`: {e}")))?
            .ok_or_else(|| ConfigError("`[oauth]` is not enabled".into()))?;
        let validator =
            OAuthValidator::new(&resolved).map_err(|e| ConfigError(format!("the HTTP config's `[oauth]`: {e}")))?;
        Ok(Oauth {
            validator: Arc::new(validator),
            settings,
        })
    }

    /// The caller a checked token names; `None` when it lacks the principal claim.
    pub fn identity(&self, token: &AuthorizedToken) -> Option<Identity> {
        let s = &self.settings;
        let claims = token.claims();
        let text = |name: &str| claims.get(name).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
        let principal = text(&s.principal_claim)?;
        let display = s.display_claims.iter().find_map(|c| text(c)).map(str::to_string);
        let mut groups: Vec<String> = token
            .claim_values(&s.groups_claim)
            .into_iter()
            .map(str::to_string)
            .collect();
        groups.dedup();
        // The person's other names at the issuer, whatever names the principal: a reviewer
        // signed in elsewhere under one of them is still the requester.
        let aliases = ["sub", "email"]
            .into_iter()
            .filter(|c| *c != s.principal_claim)
            .filter_map(|c| text(c).map(str::to_string))
            .collect();
        Some(Identity {
            principal: Principal::new(principal),
            display,
            groups,
            via: Authn::Oauth {
                issuer: token.issuer.clone(),
                client_id: token.client_id.clone(),
                token_id: token.jti.clone(),
            },
            aliases,
        })
    }
}
