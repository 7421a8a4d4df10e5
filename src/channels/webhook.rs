//! `[webhooks.NAME]`: JSON events about approvals, signed per the Standard Webhooks specification
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`), retried with
//! exponential backoff; rules send to it with `notify = ["webhook:NAME"]`.
//!
//! ```toml
//! [webhooks.ops]
//! url = "https://hooks.example.com/pgwarden"
//! secret_file = "ops.whsec"            # whsec_<base64>, as Standard Webhooks libraries make them
//! events = ["created", "decided"]      # default: every event
//! ```

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine;
use serde::Deserialize;

use super::{Secret, outbound_url};

/// Every event type, as `type` names it in the event (`approval.created`, …).
pub const EVENTS: [&str; 6] = ["created", "voted", "decided", "expired", "executed", "cancelled"];

/// `[webhooks.NAME]`: a generic signed webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed.
    pub url: String,
    /// A file holding the signing secret, `whsec_` and the base64 of the key (24 to 64 bytes).
    pub secret_file: PathBuf,
    /// Which events are sent (`created`, `voted`, `decided`, `expired`, `executed`, `cancelled`).
    /// Defaults to all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Attempts after the first, on a network error, a timeout, 429 or 5xx. Defaults to 5.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The first wait before a retry; each next one doubles (with jitter), at most 10 min.
    /// Defaults to 1 s.
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    /// How long one attempt may take. Defaults to 10 s.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// The key, decoded from `secret_file` at start.
    #[serde(skip)]
    pub key: Secret,
}

fn default_retries() -> u32 {
    5
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Durations written as people write them (`"10s"`, `"500ms"`).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration like \"10s\" ({e})")))
    }
}

impl WebhookConfig {
    /// Makes relative paths relative to the config's directory, reads the secret and checks the
    /// values.
    pub fn resolve(&mut self, dir: &Path) -> Result<(), String> {
        outbound_url(&self.url, "url")?;
        self.secret_file = dir.join(&self.secret_file);
        let secret = Secret::read(&self.secret_file, "the webhook's signing secret (whsec_…)")?;
        let key = secret
            .expose()
            .strip_prefix("whsec_")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|k| (24..=64).contains(&k.len()))
            .ok_or_else(|| {
                format!(
                    "`{}` must hold `whsec_` and the base64 of 24 to 64 random bytes, e.g. from \
                     `printf 'whsec_%s\\n' \"$(openssl rand -base64 32)\"`",
                    self.secret_file.display()
                )
            })?;
        self.key = Secret(base64::engine::general_purpose::STANDARD.encode(key));
        for e in &mut self.events {
            let name = e.strip_prefix("approval.").unwrap_or(e).to_string();
            if !EVENTS.contains(&name.as_str()) {
                return Err(format!(
                    "`events`: unknown event `{e}`; expected some of {}",
                    EVENTS.join(", ")
                ));
            }
            *e = name;
        }
        if self.retries > 20 {
            return Err("`retries` must be at most 20".into());
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(120) {
            return Err("`timeout` must be between 1ms and 2 min".into());
        }
        if self.backoff > Duration::from_secs(600) {
            return Err("`backoff` must be at most 10 min".into());
        }
        Ok(())
    }

    /// The signing key's bytes.
    pub fn key_bytes(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(self.key.expose())
            .unwrap_or_default()
    }

    /// Whether events of `kind` (`created`, …) are sent.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == kind)
    }
}
