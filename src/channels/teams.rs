//! `[teams.NAME]: a Microsoft Teams Workflows webhook` (being written).

use std::path::Path;

use serde::Deserialize;

/// `[teams.NAME]: a Microsoft Teams Workflows webhook`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {}

impl TeamsConfig {
    /// Makes relative paths relative to the config's directory and checks the values.
    pub fn resolve(&mut self, _dir: &Path) -> Result<(), String> {
        Ok(())
    }
}
