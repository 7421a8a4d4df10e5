//! Team review over HTTP (`serve --http`): approvals decided by reviewers other than the requester,
//! with verified identities, on any replica.
//!
//! - `api`: `/api/v1/approvals` for reviewers with a bearer token; `client` is its side in
//!   `pgwarden approvals --server`.
//! - `web`: the review app at `/review`, signed in with the organisation's OpenID provider.
//! - `slack`: the Slack app — posts each approval with buttons; its interactivity endpoint takes
//!   signed decisions.
//! - `teams`: an Adaptive Card through a Teams Workflows webhook, linking to the review app.
//! - `webhook`: JSON events signed per Standard Webhooks, retried with backoff.
//!
//! Every surface decides through the one [`ApprovalStore::decide`](crate::approval::pending::ApprovalStore::decide)
//! with a [`Reviewer::verified`](crate::approval::pending::Reviewer::verified), which applies the
//! rule's reviewers, `min_approvals` and "nobody approves their own request". Notifiers hear of each
//! change from the store's events (sent once, by the replica that made it) and are routed by the
//! rule's `notify`.

pub mod api;
pub mod client;
pub mod slack;
pub mod teams;
pub mod web;
pub mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;

use crate::{
    approval::{
        hub::Approvals,
        pending::ApprovalEvent,
        surface::{Announced, Offer, ReviewSurface},
    },
    audit::sink::AuditSink,
    auth::{HttpConfig, Verifier},
    call::Surface,
};

/// What the team surfaces share.
pub struct TeamContext {
    pub approvals: Arc<Approvals>,
    /// The audit trail (refusals of forged or unauthorised decisions go here).
    pub audit: Arc<dyn AuditSink>,
    /// Checks bearer tokens (the API).
    pub verifier: Arc<Verifier>,
    /// The HTTP config: `resource` (this server's public URL) and the team sections.
    pub config: Arc<HttpConfig>,
    /// Where this server is reached: the origin of `resource` (`https://pgwarden.example.com`).
    pub base: String,
    /// An HTTP client for the outside services (Slack, Teams, webhooks, the OpenID provider).
    pub client: reqwest::Client,
}

impl TeamContext {
    /// The review app's page for one approval.
    pub fn review_url(&self, id: &str) -> String {
        format!("{}/review/approvals/{id}", self.base)
    }
}

/// Records of requests nobody vouches for (an unsigned or forged Slack request: anyone on the
/// network can send one) at most one per `every`, so they cannot flood the audit chain or hold its
/// lock against real calls; the ones in between are counted into the next record.
pub struct Throttle {
    every: std::time::Duration,
    /// When the last record was let through, and how many were refused without one since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    pub fn new(every: std::time::Duration) -> Throttle {
        Throttle {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(n)`: record this one now, saying `n` more were refused unrecorded since the last
    /// record; `None`: counted, not recorded.
    pub fn admit(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let skipped = s.1;
                *s = (Some(now), 0);
                Some(skipped)
            }
        }
    }
}

/// Something that tells people about approvals: a Slack channel, a Teams webhook, a webhook.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// The `notify` scheme it serves: `slack`, `teams`, `webhook`.
    fn scheme(&self) -> &'static str;

    /// Tells `target` (the part after `scheme:`) about `event`; `Err` says why it could not.
    async fn notify(&self, target: &str, event: &ApprovalEvent) -> Result<(), String>;
}

/// Every route the team surfaces serve, outside `/mcp`.
pub fn router(ctx: &Arc<TeamContext>) -> Result<Router, String> {
    Ok(Router::new()
        .merge(api::router(ctx.clone()))
        .merge(web::router(ctx.clone())?)
        .merge(slack::router(ctx.clone())?))
}

/// The notifiers the config sets up.
pub fn notifiers(ctx: &Arc<TeamContext>) -> Vec<Arc<dyn Notifier>> {
    let mut all: Vec<Arc<dyn Notifier>> = vec![];
    all.extend(slack::notifier(ctx));
    all.extend(teams::notifier(ctx));
    all.extend(webhook::notifier(ctx));
    all
}

/// Registers the team surfaces (so calls whose rule needs a team reviewer can go pending) and
/// starts routing the store's events to the notifiers, until the store goes.
pub fn start(ctx: &Arc<TeamContext>) {
    let approvals = &ctx.approvals;
    approvals.register(Arc::new(TeamSurface {
        surface: Surface::Api,
        base: ctx.base.clone(),
    }));
    if ctx.config.review.is_some() {
        approvals.register(Arc::new(TeamSurface {
            surface: Surface::Web,
            base: ctx.base.clone(),
        }));
    }
    if ctx.config.slack.is_some() {
        approvals.register(Arc::new(TeamSurface {
            surface: Surface::Slack,
            base: ctx.base.clone(),
        }));
    }
    let notifiers = notifiers(ctx);
    let mut events = approvals.store.events();
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("notifications: {n} approval events were skipped (too many at once)");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            for target in event.approval.review.team.notify.clone() {
                let Some((scheme, name)) = target.split_once(':') else {
                    continue;
                };
                let scheme = scheme.to_string();
                let Some(n) = notifiers.iter().find(|n| n.scheme() == scheme).cloned() else {
                    tracing::warn!(
                        approval = event.approval.id,
                        "`notify = \"{target}\"`: the HTTP config sets up no `{scheme}`"
                    );
                    continue;
                };
                let (event, name) = (event.clone(), name.to_string());
                tokio::spawn(async move {
                    if let Err(e) = n.notify(&name, &event).await {
                        tracing::warn!(approval = event.approval.id, "notifying {scheme}:{name}: {e}");
                    }
                });
            }
        }
    });
}

/// A team surface as the approval hub sees it: it can show (and decide) any approval; the
/// notifiers, not `announce`, carry the news.
struct TeamSurface {
    surface: Surface,
    base: String,
}

#[async_trait]
impl ReviewSurface for TeamSurface {
    fn id(&self) -> Surface {
        self.surface
    }

    fn offers(&self, _: &Offer) -> bool {
        true
    }

    fn place(&self, id: &str) -> String {
        match self.surface {
            Surface::Web => format!("in the pgwarden review app ({}/review/approvals/{id})", self.base),
            Surface::Slack => "in the team's Slack approvals channel".into(),
            _ => format!("by a reviewer, through pgwarden's approvals API (`pgwarden approvals show {id}`)"),
        }
    }

    async fn announce(&self, _: &Announced<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// The HTTP status of a refused decision, for the API and the review app.
pub fn status_of(e: &crate::approval::pending::PendingError) -> http::StatusCode {
    use crate::approval::pending::PendingError;
    use http::StatusCode;
    match e {
        PendingError::Unknown(_) => StatusCode::NOT_FOUND,
        PendingError::SelfApproval
        | PendingError::NotAReviewer(_)
        | PendingError::WrongChannel(_)
        | PendingError::NotYours(_) => StatusCode::FORBIDDEN,
        PendingError::StaleHash | PendingError::AlreadyDecided(_) | PendingError::AlreadyVoted => StatusCode::CONFLICT,
        PendingError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
        PendingError::Audit(_) | PendingError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// An approval as every team surface shows it (the API's `VIEW`, the review app's data, what
/// Slack, Teams and webhooks are sent): no secret (the card's nonce stays out).
pub fn view(a: &crate::approval::pending::Listed) -> serde_json::Value {
    let (word, label) = a.state.words();
    let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    serde_json::json!({
        "id": a.id,
        "state": word,
        "state_label": label,
        "action_hash": a.hash,
        "fingerprint": crate::approval::pending::fingerprint(&a.hash),
        "created_at": time(&a.review.created_at),
        "expires_at": time(&a.review.expires_at),
        "level": a.review.level.as_str(),
        "requester": a.review.requester,
        "reviewers": a.review.team.reviewers,
        "min_approvals": a.review.team.min_approvals,
        "votes": a.votes,
        "packet": a.review.packet,
        // Where it was announced and how the deliveries went (`slack:#channel`, `webhook:NAME`).
        "notifications": a.notes,
    })
}
