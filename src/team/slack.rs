//! The Slack app. (Being written: posts approvals with buttons; signed interactivity endpoint.)

use std::sync::Arc;

use super::{Notifier, TeamContext};
use axum::Router;

pub fn router(_ctx: Arc<TeamContext>) -> Result<Router, String> {
    Ok(Router::new())
}

pub fn notifier(_ctx: &Arc<TeamContext>) -> Option<Arc<dyn Notifier>> {
    None
}
