//! The team channels' sections of the HTTP config (`[review]`, `[slack]`, `[teams.NAME]`,
//! `[webhooks.NAME]`): plain settings, read with the rest of the `--http-config` file by `auth`,
//! used by the `team` surfaces that serve them. Each `resolve` makes relative paths relative to
//! the config's directory and checks the values, so a bad section stops the server at start.

pub mod review;
pub mod slack;
pub mod teams;
pub mod webhook;

use std::path::Path;

/// A secret read from a `*_file` key (a signing secret, a bot token, a webhook URL that is itself
/// the credential): never printed, not even by `{:?}`.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// The secret in `path`, trimmed of surrounding whitespace (a file usually ends in a newline).
    pub fn read(path: &Path, what: &str) -> Result<Secret, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} from `{}`: {e}", path.display()))?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(format!("`{}` is empty; it must hold {what}", path.display()));
        }
        Ok(Secret(secret.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Checks a URL pgwarden sends approvals to: `https`, or plain `http` to this machine only (a
/// local relay, a test's stand-in) — review packets are not for the open network.
pub fn outbound_url(url: &str, key: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(url).map_err(|e| format!("`{key}` must be a URL ({e})"))?;
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" => Ok(u),
        "http" if loopback => Ok(u),
        "http" => Err(format!(
            "`{key}` must be an https URL (plain http only to localhost): approvals carry SQL and names"
        )),
        _ => Err(format!("`{key}` must be an https URL")),
    }
}
