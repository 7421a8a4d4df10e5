//! `[review]`: the review app at `/review`, where reviewers sign in with the organisation's OpenID
//! provider (authorization code with PKCE) and decide approvals. The app is `team::web`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer};

use super::Secret;

/// `[review]` of the HTTP config.
///
/// ```toml
/// [review]
/// issuer = "https://login.example.com/"
/// client_id = "pgwarden-review"
/// client_secret_file = "review-client.secret"
/// scopes = ["openid", "email", "profile", "groups"]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    /// The OpenID provider, byte for byte as it writes `iss`; its endpoints and keys are found
    /// through `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The review app's client at the provider. Its redirect URI is this server's origin followed
    /// by `/review/callback`.
    pub client_id: String,
    /// A file holding the client's secret (sent with HTTP Basic). Without it the app is a public
    /// client, protected by PKCE alone.
    pub client_secret_file: Option<PathBuf>,
    /// Read from `client_secret_file` at start.
    #[serde(skip)]
    pub client_secret: Option<Secret>,
    /// Scopes asked for at sign-in; must include `openid`. Defaults to `openid email profile`.
    /// Add the scope that makes your provider send groups (often `groups`) when rules name
    /// `group:NAME` reviewers.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim that names the reviewer, matched against rules' `reviewers` and never the
    /// requester's principal. Defaults to `email` (refused when the provider says
    /// `email_verified` is `false` or `"false"`); a sign-in without it is named by `sub`.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// The claim listing the reviewer's groups (a string array, or one string). Defaults to
    /// `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// How long a sign-in lasts (`8h`, `30m`). Defaults to 8 hours; at most 7 days.
    #[serde(default = "default_session_lifetime", deserialize_with = "duration")]
    pub session_lifetime: Duration,
    /// The key that seals sign-in cookies, made owner-only on first start. Give every replica the
    /// same file, so a reviewer stays signed in whichever replica answers. Defaults to
    /// `review-session.key` beside the config.
    pub session_key_file: Option<PathBuf>,
    /// Talk to the provider over plain HTTP on a host that is not loopback (an in-cluster address
    /// on a trusted network). Loopback is always allowed.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_principal_claim() -> String {
    "email".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_session_lifetime() -> Duration {
    Duration::from_secs(8 * 3600)
}

/// The longest sign-in.
const MAX_SESSION: Duration = Duration::from_secs(7 * 24 * 3600);

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration like `8h` or `30m` ({e})")))
}

impl ReviewConfig {
    /// Makes relative paths relative to the config's directory and checks the values.
    pub fn resolve(&mut self, dir: &Path) -> Result<(), String> {
        check_url(&self.issuer, self.allow_insecure_http)
            .map_err(|e| format!("`issuer` must be the OpenID provider's URL as it writes `iss`: {e}"))?;
        if self.client_id.trim().is_empty() {
            return Err("`client_id` must name the review app's client at the provider".into());
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(format!(
                "`scopes` must include `openid` (got {:?}); it is an OpenID Connect sign-in",
                self.scopes
            ));
        }
        if let Some(s) = self
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return Err(format!("`scopes`: {s:?} is not a scope (one word each)"));
        }
        for (key, claim) in [
            ("principal_claim", &self.principal_claim),
            ("groups_claim", &self.groups_claim),
        ] {
            if claim.trim().is_empty() {
                return Err(format!("`{key}` must name a claim"));
            }
        }
        if self.session_lifetime < Duration::from_secs(60) || self.session_lifetime > MAX_SESSION {
            return Err(format!(
                "`session_lifetime` must be between 1m and 7days (got {})",
                humantime::format_duration(self.session_lifetime)
            ));
        }
        self.client_secret_file = self.client_secret_file.take().map(|f| dir.join(f));
        if let Some(f) = &self.client_secret_file {
            self.client_secret = Some(Secret::read(f, "the review app's client secret")?);
        }
        let key = self
            .session_key_file
            .take()
            .unwrap_or_else(|| "review-session.key".into());
        self.session_key_file = Some(dir.join(key));
        Ok(())
    }

    /// The session key file (after [`ReviewConfig::resolve`]).
    pub fn session_key(&self) -> PathBuf {
        self.session_key_file
            .clone()
            .unwrap_or_else(|| "review-session.key".into())
    }
}

/// An `https` URL without query or fragment; plain `http` only on loopback or when allowed.
pub fn check_url(text: &str, allow_insecure_http: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}` must not have a query or fragment"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_insecure_http || is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "`{text}` is plain HTTP on a host that is not loopback; use https (or set `allow_insecure_http = true` \
             for a trusted network)"
        )),
        other => Err(format!("`{text}`: `{other}` is not http(s)")),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(dir: &Path, text: &str) -> Result<ReviewConfig, String> {
        let mut c: ReviewConfig = toml::from_str(text).map_err(|e| e.message().to_string())?;
        c.resolve(dir).map(|()| c)
    }

    fn parse(text: &str) -> Result<ReviewConfig, String> {
        parse_in(Path::new("/etc/pgwarden"), text)
    }

    #[test]
    fn defaults_are_documented_and_bad_values_say_what_to_fix() {
        let c = parse("issuer = \"https://login.example.com/\"\nclient_id = \"pgw\"\n").unwrap();
        assert_eq!(c.scopes, ["openid", "email", "profile"]);
        assert_eq!(c.principal_claim, "email");
        assert_eq!(c.groups_claim, "groups");
        assert_eq!(c.session_lifetime, Duration::from_secs(8 * 3600));
        assert_eq!(c.session_key(), Path::new("/etc/pgwarden/review-session.key"));
        assert_eq!(c.client_secret_file, None);

        let dir = tempfile::tempdir().unwrap();
        let config = "issuer = \"http://127.0.0.1:9/\"\nclient_id = \"pgw\"\nclient_secret_file = \"s\"\n\
                      session_lifetime = \"30m\"\nscopes = [\"openid\", \"groups\"]\n";
        let e = parse_in(dir.path(), config).unwrap_err();
        assert!(e.contains("cannot read the review app's client secret"), "{e}");
        std::fs::write(dir.path().join("s"), "sesame\n").unwrap();
        let c = parse_in(dir.path(), config).unwrap();
        assert_eq!(c.client_secret_file, Some(dir.path().join("s")));
        assert_eq!(c.client_secret.as_ref().map(Secret::expose), Some("sesame"));
        assert!(!format!("{c:?}").contains("sesame"), "never printed");
        assert_eq!(c.session_lifetime, Duration::from_secs(1800));

        for (text, says) in [
            (
                "issuer = \"http://idp.example.com/\"\nclient_id = \"p\"\n",
                "plain HTTP",
            ),
            ("issuer = \"https://idp/?x=1\"\nclient_id = \"p\"\n", "query"),
            ("issuer = \"https://idp/\"\nclient_id = \" \"\n", "`client_id`"),
            (
                "issuer = \"https://idp/\"\nclient_id = \"p\"\nscopes = [\"email\"]\n",
                "must include `openid`",
            ),
            (
                "issuer = \"https://idp/\"\nclient_id = \"p\"\nsession_lifetime = \"soon\"\n",
                "not a duration",
            ),
            (
                "issuer = \"https://idp/\"\nclient_id = \"p\"\nsession_lifetime = \"30days\"\n",
                "between 1m and 7days",
            ),
            (
                "issuer = \"https://idp/\"\nclient_id = \"p\"\nclient_secret = \"x\"\n",
                "unknown field",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert!(parse("issuer = \"http://idp:9/\"\nclient_id = \"p\"\nallow_insecure_http = true\n").is_ok());
    }
}
