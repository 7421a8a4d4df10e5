//! `[slack]: the Slack app` (being written).

use std::path::Path;

use serde::Deserialize;

/// `[slack]: the Slack app`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {}

impl SlackConfig {
    /// Makes relative paths relative to the config's directory and checks the values.
    pub fn resolve(&mut self, _dir: &Path) -> Result<(), String> {
        Ok(())
    }
}
