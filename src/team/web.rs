//! The review app at `/review`. (Being written: reviewers sign in with OpenID Connect.)

use std::sync::Arc;

use super::TeamContext;
use axum::Router;

pub fn router(_ctx: Arc<TeamContext>) -> Result<Router, String> {
    Ok(Router::new())
}
