//! The Slack app. (Being written: posts approvals with buttons; signed interactivity endpoint.)

use std::{path::Path, sync::Arc};

use axum::Router;
use serde::Deserialize;

use super::{Notifier, TeamContext};

/// `[slack]` in the HTTP config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {}

impl SlackConfig {
    /// Makes relative paths relative to the config's directory and checks the values.
    pub fn resolve(&mut self, _dir: &Path) -> Result<(), String> {
        Ok(())
    }
}

pub fn router(_ctx: Arc<TeamContext>) -> Result<Router, String> {
    Ok(Router::new())
}

pub fn notifier(_ctx: &Arc<TeamContext>) -> Option<Arc<dyn Notifier>> {
    None
}
