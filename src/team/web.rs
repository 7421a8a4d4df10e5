//! The review app at `/review`. (Being written: reviewers sign in with OpenID Connect.)

use std::{path::Path, sync::Arc};

use axum::Router;
use serde::Deserialize;

use super::TeamContext;

/// `[review]` in the HTTP config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {}

impl ReviewConfig {
    /// Makes relative paths relative to the config's directory and checks the values.
    pub fn resolve(&mut self, _dir: &Path) -> Result<(), String> {
        Ok(())
    }
}

pub fn router(_ctx: Arc<TeamContext>) -> Result<Router, String> {
    Ok(Router::new())
}
