//! `/api/v1/approvals`. (Being written.)

use std::sync::Arc;

use axum::Router;

use super::TeamContext;

pub fn router(_ctx: Arc<TeamContext>) -> Router {
    Router::new()
}
