//! Who is calling over HTTP: the `--http-config` file, and the two ways a request proves who sent
//! it — an OAuth 2.1 access token (a JWT checked against the issuer's keys, `oauth`) or a static
//! token from a file of token hashes (`tokens`). Either way the request comes out carrying a
//! verified [`Identity`]; no credential is kept, logged or passed on.

pub mod oauth;
pub mod tokens;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;

use crate::{call::Identity, channels, config::ConfigError};

/// How requests prove who sent them.
pub enum Verifier {
    Oauth(Arc<oauth::Oauth>),
    Tokens(tokens::Tokens),
}

impl Verifier {
    /// The identity a bearer token proves, if it proves one (an OAuth token is checked here, as
    /// the layer in front of `/mcp` checks it).
    pub async fn identify(&self, token: &str) -> Option<Identity> {
        match self {
            Verifier::Oauth(o) => o.validator.validate(token).await.ok().and_then(|t| o.identity(&t)),
            Verifier::Tokens(t) => t.identify(token),
        }
    }
}

/// The bearer token of `Authorization: Bearer …`; none when the header is missing, repeated or
/// of another scheme.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = all.next()?.to_str().ok()?;
    if all.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `pgwarden serve --http ADDR --http-config FILE`: everything HTTP needs besides the address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// This server's URL as clients reach it (`https://pgwarden.example.com/mcp`): the audience
    /// OAuth tokens must name and the `resource` of the protected-resource metadata.
    pub resource: String,
    /// `Host` headers accepted besides loopback (DNS-rebinding protection).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Browser `Origin`s accepted; requests from any other origin are refused.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The key that seals 2026-07-28 approval states (made owner-only on first start). Give every
    /// replica the same file, so a retry may land on any of them. Defaults to `state.key` beside
    /// this file.
    pub state_key: Option<PathBuf>,
    /// The largest request body, in bytes. Defaults to 1 MiB.
    #[serde(default = "default_body_limit")]
    pub max_request_bytes: usize,
    pub oauth: Option<oauth::OauthSettings>,
    pub tokens: Option<TokensSettings>,
    /// `[review]`: the team review app at `/review` (reviewers sign in with OpenID Connect).
    pub review: Option<channels::review::ReviewConfig>,
    /// `[slack]`: the Slack app that posts approvals and takes decisions from its buttons.
    pub slack: Option<channels::slack::SlackConfig>,
    /// `[teams.NAME]`: Microsoft Teams Workflows webhooks (`notify = ["teams:NAME"]`).
    #[serde(default)]
    pub teams: BTreeMap<String, channels::teams::TeamsConfig>,
    /// `[webhooks.NAME]`: signed JSON events (`notify = ["webhook:NAME"]`).
    #[serde(default)]
    pub webhooks: BTreeMap<String, channels::webhook::WebhookConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensSettings {
    /// The token file `pgwarden token new` appends to (hashes, never tokens).
    pub file: PathBuf,
}

fn default_body_limit() -> usize {
    1 << 20
}

/// How requests authenticate: exactly one of `[oauth]` and `[tokens]`.
pub enum Auth {
    Oauth(oauth::OauthSettings),
    Tokens(PathBuf),
}

impl HttpConfig {
    /// Reads and checks `path`; relative paths inside it are relative to its directory.
    pub fn load(path: &Path) -> Result<HttpConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read the HTTP config `{}`: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    /// [`HttpConfig::load`] of `text`, read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<HttpConfig, ConfigError> {
        let mut config: HttpConfig =
            toml::from_str(text).map_err(|e| ConfigError(format!("`{}`: {}", path.display(), e.message())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let url = url::Url::parse(&config.resource).map_err(|e| {
            ConfigError(format!(
                "`{}`: `resource` must be this server's URL as clients reach it, e.g. `https://pgwarden.example.com/mcp` ({e})",
                path.display()
            ))
        })?;
        if !matches!(url.scheme(), "https" | "http") || url.fragment().is_some() {
            return Err(ConfigError(format!(
                "`{}`: `resource` must be an http(s) URL without a fragment",
                path.display()
            )));
        }
        if config.max_request_bytes < 1024 {
            return Err(ConfigError(format!(
                "`{}`: `max_request_bytes` must be at least 1024",
                path.display()
            )));
        }
        config.state_key = Some(dir.join(config.state_key.take().unwrap_or_else(|| "state.key".into())));
        if let Some(t) = &mut config.tokens {
            t.file = dir.join(&t.file);
        }
        if let Some(r) = &mut config.review {
            r.resolve(dir)
                .map_err(|e| ConfigError(format!("`{}` [review]: {e}", path.display())))?;
        }
        if let Some(s) = &mut config.slack {
            s.resolve(dir)
                .map_err(|e| ConfigError(format!("`{}` [slack]: {e}", path.display())))?;
        }
        for (name, t) in &mut config.teams {
            t.resolve(dir)
                .map_err(|e| ConfigError(format!("`{}` [teams.{name}]: {e}", path.display())))?;
        }
        for (name, w) in &mut config.webhooks {
            w.resolve(dir)
                .map_err(|e| ConfigError(format!("`{}` [webhooks.{name}]: {e}", path.display())))?;
        }
        config.auth_mode(path)?;
        Ok(config)
    }

    /// The one way requests authenticate.
    pub fn auth_mode(&self, path: &Path) -> Result<Auth, ConfigError> {
        match (&self.oauth, &self.tokens) {
            (Some(o), None) => Ok(Auth::Oauth(o.clone())),
            (None, Some(t)) => Ok(Auth::Tokens(t.file.clone())),
            (Some(_), Some(_)) => Err(ConfigError(format!(
                "`{}` has both `[oauth]` and `[tokens]`; keep one: requests authenticate one way",
                path.display()
            ))),
            (None, None) => Err(ConfigError(format!(
                "`{}` says neither how requests authenticate: add `[oauth]` (an issuer) or `[tokens]` (a token file); \
                 pgwarden serves no one it cannot identify",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configs_load_and_bad_ones_say_what_to_fix() {
        for (name, text) in [
            ("http-oauth.toml", include_str!("../../examples/http-oauth.toml")),
            ("http-tokens.toml", include_str!("../../examples/http-tokens.toml")),
        ] {
            let path = Path::new("/etc/pgwarden").join(name);
            let c = HttpConfig::parse(text, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(c.auth_mode(&path).is_ok());
            assert_eq!(c.state_key.as_deref(), Some(Path::new("/etc/pgwarden/state.key")));
        }
        let p = Path::new("/x/http.toml");
        let err = |text: &str| HttpConfig::parse(text, p).err().unwrap().0;
        assert!(err("resource = \"https://a/mcp\"\n").contains("neither how requests authenticate"));
        assert!(
            err("resource = \"https://a/mcp\"\n[tokens]\nfile = \"t\"\n[oauth]\nissuer = \"https://i/\"\n")
                .contains("both")
        );
        assert!(err("resource = \"not a url\"\n[tokens]\nfile = \"t\"\n").contains("`resource` must be"));
        assert!(err("resource = \"https://a/mcp\"\ntokenz = 1\n").contains("unknown field"));
        let c = HttpConfig::parse("resource = \"https://a/mcp\"\n[tokens]\nfile = \"t.toml\"\n", p).unwrap();
        assert_eq!(c.tokens.unwrap().file, Path::new("/x/t.toml"), "relative to the config");
    }
}
