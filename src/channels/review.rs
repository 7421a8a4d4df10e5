//! `[review]: the review app at `/review`` (being written).

use std::path::Path;

use serde::Deserialize;

/// `[review]: the review app at `/review``.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {}

impl ReviewConfig {
    /// Makes relative paths relative to the config's directory and checks the values.
    pub fn resolve(&mut self, _dir: &Path) -> Result<(), String> {
        Ok(())
    }
}
