//! `[webhooks.NAME]: a generic signed webhook` (being written).

use std::path::Path;

use serde::Deserialize;

/// `[webhooks.NAME]: a generic signed webhook`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {}

impl WebhookConfig {
    /// Makes relative paths relative to the config's directory and checks the values.
    pub fn resolve(&mut self, _dir: &Path) -> Result<(), String> {
        Ok(())
    }
}
