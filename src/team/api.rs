//! The approvals API, for reviewers' tools and `pgwarden approvals --server`: list, show and decide
//! approvals with a reviewer's bearer token (a static token or an OAuth access token, checked as
//! `/mcp` checks them). The OpenAPI document is at `/api/v1/openapi.json`.
//!
//! A caller sees the approvals they asked for and those they may decide; deciding goes through the
//! store, which applies the rule's reviewers, `min_approvals` and "nobody approves their own
//! request", and records refusals.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, Query, State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

use super::{TeamContext, view};
use crate::{
    approval::{
        packet::one_line,
        pending::{Decision, Listed, Reviewer},
    },
    call::{Authn, Identity, Surface},
};

/// The OpenAPI 3.1 description of this API.
const OPENAPI: &str = include_str!("openapi.json");

pub fn router(ctx: Arc<TeamContext>) -> Router {
    Router::new()
        .route("/api/v1/approvals", get(list))
        .route("/api/v1/approvals/{id}", get(show))
        .route("/api/v1/approvals/{id}/decision", post(decide))
        .route("/api/v1/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(ctx)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// A JSON error: `{"error": "…"}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "a reviewer's bearer token is required (Authorization: Bearer …)",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="pgwarden", error="invalid_token""#),
    );
    r
}

/// The caller's verified identity, or the 401 to answer with.
async fn who(ctx: &TeamContext, headers: &HeaderMap) -> Result<Identity, Response> {
    let token = crate::auth::bearer(headers).ok_or_else(unauthorized)?;
    ctx.verifier.identify(token).await.ok_or_else(unauthorized)
}

/// Whether `who` may see `a`: they asked for it, or they may decide it.
fn visible_to(a: &Listed, who: &Identity) -> bool {
    let principal = who.principal.as_str();
    a.review.requester.as_deref() == Some(principal) || a.review.team.names(principal, &who.groups)
}

/// How the API's reviewer was verified, for the audit trail.
fn reviewer(who: &Identity) -> Reviewer {
    let by = match &who.via {
        Authn::Token { token_id } => format!("token {token_id}"),
        Authn::Oauth { issuer, .. } => format!("oauth {issuer}"),
        Authn::Operator => "operator".into(),
    };
    Reviewer::verified(
        Surface::Api,
        who.principal.as_str(),
        who.display.as_deref(),
        who.groups.clone(),
        by,
    )
}

/// The words of [`State::words`](crate::approval::pending::State::words), as `?state=` takes them.
const STATES: [&str; 9] = [
    "pending",
    "approved",
    "dry_run",
    "denied",
    "expired",
    "cancelled",
    "executing",
    "done",
    "failed",
];

#[derive(Deserialize)]
struct ListQuery {
    /// Only approvals in this state (`pending`, `approved`, `denied`, …).
    state: Option<String>,
}

async fn list(State(ctx): State<Arc<TeamContext>>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    let who = match who(&ctx, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if let Some(s) = q.state.as_deref()
        && !STATES.contains(&s)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown state `{}`; expected one of {}",
                one_line(s, 40),
                STATES.join(", ")
            ),
        );
    }
    let all = ctx.approvals.store.list().await;
    let shown: Vec<serde_json::Value> = all
        .iter()
        .filter(|a| visible_to(a, &who))
        .filter(|a| q.state.as_deref().is_none_or(|s| a.state.words().0 == s))
        .map(view)
        .collect();
    Json(serde_json::json!({ "approvals": shown })).into_response()
}

async fn show(State(ctx): State<Arc<TeamContext>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let who = match who(&ctx, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    match ctx.approvals.store.get(&id).await {
        Some(a) if visible_to(&a, &who) => Json(view(&a)).into_response(),
        _ => error(StatusCode::NOT_FOUND, format!("no approval `{id}` that you may see")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// `approve`, `dry_run` or `deny`.
    decision: String,
    /// The action hash of what the reviewer was shown.
    action_hash: String,
    max_rows_affected: Option<u64>,
    reason: Option<String>,
}

async fn decide(
    State(ctx): State<Arc<TeamContext>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Response {
    let who = match who(&ctx, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON {{\"decision\": \"approve\"|\"dry_run\"|\"deny\", \"action_hash\": \"…\", \
                     \"max_rows_affected\": N?, \"reason\": \"…\"?}} ({e})"
                ),
            );
        }
    };
    let decision = match Decision::parse(&body.decision, body.max_rows_affected, body.reason) {
        Ok(d) => d,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let store = &ctx.approvals.store;
    match store.get(&id).await {
        Some(a) if visible_to(&a, &who) => {}
        Some(_) => {
            let why = "not among this approval's reviewers";
            store
                .refused(Some(&id), Surface::Api, &reviewer(&who).decided_by(), why)
                .await;
            return error(StatusCode::FORBIDDEN, format!("you may not decide `{id}`: {why}"));
        }
        None => return error(StatusCode::NOT_FOUND, format!("no approval `{id}`")),
    }
    match store.decide(&id, &body.action_hash, &reviewer(&who), decision).await {
        Ok(state) => {
            let (word, label) = state.words();
            let approval = store.get(&id).await.map(|a| view(&a));
            Json(serde_json::json!({ "state": word, "state_label": label, "approval": approval })).into_response()
        }
        Err(e) => error(super::status_of(&e), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::STATES;
    use crate::approval::{Approved, pending::State};

    /// `?state=` takes exactly the words the API shows.
    #[test]
    fn the_state_filter_knows_every_state_word() {
        let approved = |dry_run| {
            State::Approved(Approved {
                dry_run,
                max_rows_affected: None,
                reason: None,
            })
        };
        let words: Vec<&str> = [
            State::Pending,
            approved(false),
            approved(true),
            State::Denied { reason: None },
            State::Expired,
            State::Cancelled,
            State::Executing,
            State::Done { ok: true },
            State::Done { ok: false },
        ]
        .iter()
        .map(|s| s.words().0)
        .collect();
        assert_eq!(words, STATES);
    }
}
