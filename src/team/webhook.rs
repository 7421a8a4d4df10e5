//! Generic webhooks. (Being written: Standard Webhooks signatures, retries.)

use std::sync::Arc;

use super::{Notifier, TeamContext};

pub fn notifier(_ctx: &Arc<TeamContext>) -> Option<Arc<dyn Notifier>> {
    None
}
