//! The Slack app (`[slack]`, `notify = ["slack:#channel"]`): posts each approval's review packet
//! with Approve / Dry run / Deny buttons (`blocks`) and updates the message as the approval moves
//! on; its interactivity endpoint (`interact`) takes the button clicks, each request signed by
//! Slack, and decides as the clicking Slack user's mapped principal.
//!
//! The message's place is kept with the approval (`slack:#channel` → `{channel, ts}`), so the
//! replica that sees a later change updates the message another replica posted.

mod api;
pub mod blocks;
mod interact;

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::Router;
use serde_json::json;

use super::{Notifier, TeamContext};
use crate::{
    approval::pending::{ApprovalEvent, EventKind},
    channels::slack::SlackConfig,
};
pub use api::Posted;

/// The Slack app: its config and a Web API client.
pub struct Slack {
    ctx: Arc<TeamContext>,
    config: SlackConfig,
    api: api::WebApi,
    /// One update at a time per approval, so the message ends showing its latest state.
    updating: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Unverified requests are recorded at most once a second.
    unverified: super::Throttle,
}

impl Slack {
    fn new(ctx: &Arc<TeamContext>) -> Option<Arc<Slack>> {
        let config = ctx.config.slack.clone()?;
        let api = api::WebApi {
            base: config.api_base.clone(),
            token: config.bot_token.clone(),
            client: ctx.client.clone(),
        };
        Some(Arc::new(Slack {
            ctx: ctx.clone(),
            config,
            api,
            updating: std::sync::Mutex::default(),
            unverified: super::Throttle::new(std::time::Duration::from_secs(1)),
        }))
    }

    /// The review app's page for `id`, when the review app is set up.
    fn review_link(&self, id: &str) -> Option<String> {
        self.ctx.config.review.as_ref().map(|_| self.ctx.review_url(id))
    }

    fn turn(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut all = self.updating.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(id.to_string()).or_default().clone()
    }

    fn done_with(&self, id: &str) {
        self.updating.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Where the message about `id` for `key` was posted (it may still be being posted, by this
    /// replica or another: wait a little).
    async fn posted(&self, id: &str, key: &str) -> Option<(Posted, Option<String>)> {
        let mut pause = Duration::from_millis(20);
        let mut waited = Duration::ZERO;
        loop {
            let a = self.ctx.approvals.store.get(id).await?;
            if let Some(note) = a.notes.get(key) {
                let channel = note["channel"].as_str()?.to_string();
                let ts = note["ts"].as_str()?.to_string();
                let by = note["decided_by"].as_str().map(str::to_string);
                return Some((Posted { channel, ts }, by));
            }
            if waited >= POST_WAIT {
                return None;
            }
            tokio::time::sleep(pause).await;
            waited += pause;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// How long an update waits for the message it updates to be posted.
const POST_WAIT: Duration = Duration::from_secs(15);

pub fn router(ctx: Arc<TeamContext>) -> Result<Router, String> {
    Ok(match Slack::new(&ctx) {
        Some(slack) => interact::router(slack),
        None => Router::new(),
    })
}

pub fn notifier(ctx: &Arc<TeamContext>) -> Option<Arc<dyn Notifier>> {
    Slack::new(ctx).map(|s| s as Arc<dyn Notifier>)
}

#[async_trait]
impl Notifier for Slack {
    fn scheme(&self) -> &'static str {
        "slack"
    }

    async fn notify(&self, target: &str, event: &ApprovalEvent) -> Result<(), String> {
        let id = &event.approval.id;
        let key = format!("slack:{target}");
        let store = &self.ctx.approvals.store;
        if event.kind == EventKind::Created {
            let (text, blocks) = blocks::message(&event.approval, None, self.review_link(id).as_deref());
            let at = self.api.post(target, &text, &blocks).await?;
            return store
                .annotate(id, &key, json!({ "channel": at.channel, "ts": at.ts }))
                .await
                .map_err(|e| format!("the message was posted but its place not kept: {e}"));
        }
        let Some((at, mut decided_by)) = self.posted(id, &key).await else {
            return Err(format!("no message about `{id}` to update in {target}"));
        };
        let turn = self.turn(id);
        let _one = turn.lock().await;
        if event.kind == EventKind::Decided && decided_by.is_none() && event.by.is_some() {
            decided_by = event.by.clone();
            let note = json!({ "channel": at.channel, "ts": at.ts, "decided_by": decided_by });
            if let Err(e) = store.annotate(id, &key, note).await {
                tracing::warn!(approval = id, "slack: who decided was not kept: {e}");
            }
        }
        // The approval as it is now, not as this event saw it: events may be handled out of order.
        let now = store.get(id).await.unwrap_or_else(|| event.approval.clone());
        let (text, blocks) = blocks::message(&now, decided_by.as_deref(), self.review_link(id).as_deref());
        let result = self.api.update(&at, &text, &blocks).await;
        if now.state.is_terminal() {
            self.done_with(id);
        }
        result
    }
}
