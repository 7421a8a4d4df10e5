//! Generic webhooks. (Being written: Standard Webhooks signatures, retries.)

use std::{path::Path, sync::Arc};

use serde::Deserialize;

use super::{Notifier, TeamContext};

/// `[webhooks.NAME]` in the HTTP config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {}

impl WebhookConfig {
    /// Makes relative paths relative to the config's directory and checks the values.
    pub fn resolve(&mut self, _dir: &Path) -> Result<(), String> {
        Ok(())
    }
}

pub fn notifier(_ctx: &Arc<TeamContext>) -> Option<Arc<dyn Notifier>> {
    None
}
