//! The review app at `/review` (`[review]` in the HTTP config): reviewers sign in with the
//! organisation's OpenID provider, see the approvals they asked for or may decide — live, with the
//! whole review packet and the votes so far — and approve, approve as a dry run, set a row limit or
//! deny.
//!
//! - Sign-in (`oidc`): authorization code with PKCE S256, `state` and `nonce`; the ID token is
//!   checked against the provider's keys. The session is a sealed cookie (`session`): HttpOnly,
//!   SameSite=Lax, `Path=/review`, `Secure` over https; no replica keeps a session table.
//! - Every decision is a form POST carrying the session's CSRF token and the action hash shown; it
//!   must come from this origin. It goes through the store's `decide` with a
//!   [`Reviewer::verified`], which applies the rule's reviewers, `min_approvals` and "nobody
//!   approves their own request"; refusals are shown on the page and audited (a refused form of a
//!   signed-in reviewer through `refused`, before the store).
//! - Pages are rendered on the server, escaped (`page`); a small script refreshes them. The CSP
//!   allows no inline script or style.
//!
//! Routes: `GET /review` (the list), `GET /review/approvals/{id}` (one packet),
//! `POST /review/approvals/{id}/decision`, `GET /review/api/approvals[/{id}]` (the JSON the
//! script polls), `GET /review/login`, `GET /review/callback`, `POST /review/logout` (from this app's pages only; `GET` shows
//! the button), and
//! `/review/static/…`.

mod oidc;
mod page;
mod session;
mod signin;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Form, Path, State, rejection::FormRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;

use self::{
    page::{Outcome, Standing},
    session::{SESSION_COOKIE, Sealer, Session, cookie},
};
use super::{TeamContext, view};
use crate::{
    approval::pending::{Decision, Listed, Reviewer, State as Approval, same_person, same_secret},
    call::Surface,
    channels::{Secret, review::ReviewConfig},
};

const JS: &str = include_str!("web/review.js");
const CSS: &str = include_str!("web/review.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the review app's handlers share.
struct Web {
    ctx: Arc<TeamContext>,
    config: ReviewConfig,
    sealer: Sealer,
    provider: oidc::Shared,
    /// `<origin>/review/callback`.
    redirect_uri: String,
    /// Cookies are `Secure` when the app is served over https.
    secure: bool,
}

/// The review app's routes when the config has `[review]` (none otherwise). Reads the session key
/// now (making it on first start), so a bad key file stops the server at start, as a bad client
/// secret file does when the config is read; the provider is asked for its endpoints at the first
/// sign-in (and again while it cannot be reached).
pub fn router(ctx: Arc<TeamContext>) -> Result<Router, String> {
    let Some(config) = ctx.config.review.clone() else {
        return Ok(Router::new());
    };
    let key_file = config.session_key();
    let make = || {
        let mut key = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| std::io::Error::other("no randomness for a key"))?;
        Ok(key)
    };
    let (key, _) = crate::dirs::secret_file(&key_file, make).map_err(|e| {
        format!(
            "[review]: the session key `{}` cannot be used ({e}); it must be an owner-only file of this user",
            key_file.display()
        )
    })?;
    let sealer = Sealer::new(&key).map_err(|e| format!("[review]: the session key `{}`: {e}", key_file.display()))?;
    let web = Arc::new(Web {
        redirect_uri: format!("{}/review/callback", ctx.base),
        secure: ctx.base.starts_with("https://"),
        ctx,
        config,
        sealer,
        provider: oidc::Shared::new(),
    });
    Ok(Router::new()
        .route("/review", get(list_page))
        .route("/review/approvals/{id}", get(approval_page))
        .route("/review/approvals/{id}/decision", post(decide))
        .route("/review/api/approvals", get(list_json))
        .route("/review/api/approvals/{id}", get(approval_json))
        .route("/review/login", get(signin::login))
        .route("/review/callback", get(signin::callback))
        .route("/review/logout", get(signin::sign_out).post(signin::logout))
        .route(
            "/review/static/review.js",
            get(|| asset("text/javascript; charset=utf-8", JS)),
        )
        .route(
            "/review/static/review.css",
            get(|| asset("text/css; charset=utf-8", CSS)),
        )
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(axum::middleware::map_response(secure))
        .with_state(web))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The headers every answer of the review app carries. No `Access-Control-*`, ever.
async fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        // Not `no-referrer`: with it a browser sends `Origin: null` on the page's own POSTs.
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

fn html(status: StatusCode, body: String) -> Response {
    (status, Html(body)).into_response()
}

impl Web {
    /// The signed-in reviewer of this request.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let s: Session = self.sealer.open(SESSION_COOKIE, cookie(headers, SESSION_COOKIE)?)?;
        (s.issuer == self.config.issuer).then_some(s)
    }

    /// The signed-in reviewer, or a redirect to sign in and come back to `here`.
    fn signed_in(&self, headers: &HeaderMap, here: &str) -> Result<Session, Redirect> {
        self.session(headers).ok_or_else(|| {
            let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
            Redirect::to(&format!("/review/login?next={next}"))
        })
    }

    /// Where a POST came from when that is not this app's own page (`Origin` or
    /// `Sec-Fetch-Site`; a client that sends neither is judged by the CSRF token alone).
    fn cross_site(&self, headers: &HeaderMap) -> Option<String> {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        (origin.is_some_and(|o| o != self.ctx.base) || fetch_site.is_some_and(|f| f != "same-origin"))
            .then(|| origin.or(fetch_site).unwrap_or_default().to_string())
    }

    fn reviewer(&self, s: &Session) -> Reviewer {
        let mut r = Reviewer::verified(
            Surface::Web,
            &s.principal,
            s.display.as_deref(),
            s.groups.clone(),
            format!("oidc {}", self.config.issuer),
        );
        // The store refuses a reviewer known by any of these as the requester.
        r.aliases.extend(s.aliases.iter().cloned());
        r
    }

    async fn provider(&self) -> Result<Arc<oidc::Provider>, String> {
        let app = format!("{}/review", self.ctx.base);
        self.provider
            .get_or_try_init(|| async { oidc::discover(&self.ctx.client, &self.config, &app).await.map(Arc::new) })
            .await
            .cloned()
    }

    fn flow(&self) -> oidc::Flow<'_> {
        oidc::Flow {
            config: &self.config,
            client: &self.ctx.client,
            secret: self.config.client_secret.as_ref().map(Secret::expose),
            redirect_uri: &self.redirect_uri,
        }
    }
}

/// Whether `s` asked for approval `a`: the requester's principal (and, with `theirs_too`, the
/// other names their identity carried) is one of `s`'s names, as the store judges it: the same
/// person under another spelling, or under the `sub` an `[oauth]` caller is known by.
fn asked(a: &Listed, s: &Session, theirs_too: bool) -> bool {
    let theirs = a
        .review
        .requester
        .iter()
        .chain(a.review.requester_aliases.iter().filter(|_| theirs_too));
    let ours = || std::iter::once(&s.principal).chain(s.aliases.iter());
    a.review.requester.is_some() && theirs.into_iter().any(|r| ours().any(|o| same_person(r, o)))
}

/// Where `s` stands on approval `a`.
fn standing(a: &Listed, s: &Session) -> Standing {
    Standing {
        requester: asked(a, s, true),
        reviewer: a.review.team.names(&s.principal, &s.groups),
    }
}

/// Reviewers see what they asked for and what they may decide (as the API shows them). A name
/// the requester's identity merely carried (a display name they may choose) shows nobody else
/// their calls.
fn visible(a: &Listed, s: &Session) -> bool {
    asked(a, s, false) || a.review.team.names(&s.principal, &s.groups)
}

async fn visible_views(web: &Web, s: &Session) -> Vec<serde_json::Value> {
    let mut all: Vec<Listed> = web
        .ctx
        .approvals
        .store
        .list()
        .await
        .into_iter()
        .filter(|a| visible(a, s))
        .collect();
    // Waiting ones first; newest first within each (the store's order).
    all.sort_by_key(|a| !a.state.is_open());
    all.iter().map(view).collect()
}

async fn list_page(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let s = match web.signed_in(&headers, "/review") {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    html(StatusCode::OK, page::list(&s, &visible_views(&web, &s).await))
}

fn signed_out_json() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({ "error": "your sign-in has ended; reload the page to sign in again" })),
    )
        .into_response()
}

async fn list_json(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = web.session(&headers) else {
        return signed_out_json();
    };
    Json(serde_json::json!({ "approvals": visible_views(&web, &s).await })).into_response()
}

async fn approval_json(State(web): State<Arc<Web>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(s) = web.session(&headers) else {
        return signed_out_json();
    };
    match web.ctx.approvals.store.get(&id).await {
        Some(a) if visible(&a, &s) => Json(view(&a)).into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no approval `{id}` that you may see") })),
        )
            .into_response(),
    }
}

fn not_found(s: &Session, id: &str) -> Response {
    html(
        StatusCode::NOT_FOUND,
        page::message(
            "No such approval",
            Some(s),
            &format!("There is no approval `{id}` that you may see (it may have been removed after it ended)."),
            Some(("/review", "All approvals")),
        ),
    )
}

async fn approval_page(State(web): State<Arc<Web>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = match web.signed_in(&headers, &format!("/review/approvals/{id}")) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match web.ctx.approvals.store.get(&id).await {
        Some(a) if visible(&a, &s) => html(StatusCode::OK, page::approval(&s, &view(&a), &standing(&a, &s), None)),
        _ => not_found(&s, &id),
    }
}

/// The decision form. Every field may be missing, so a form without its CSRF token is refused
/// as such (and audited) rather than as unreadable.
#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action_hash: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    max_rows_affected: String,
    #[serde(default)]
    reason: String,
}

async fn decide(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    let Some(s) = web.session(&headers) else {
        return html(
            StatusCode::UNAUTHORIZED,
            page::message(
                "Not signed in",
                None,
                "Your sign-in has ended, so the decision was not sent. Sign in and decide again.",
                Some((&format!("/review/login?next=/review/approvals/{id}"), "Sign in")),
            ),
        );
    };
    let store = &web.ctx.approvals.store;
    let reviewer = web.reviewer(&s);
    // The approval's page again, saying what became of the decision.
    let show = async |status: StatusCode, outcome: Outcome| match store.get(&id).await {
        Some(a) if visible(&a, &s) => html(status, page::approval(&s, &view(&a), &standing(&a, &s), Some(&outcome))),
        Some(_) => {
            let why = match outcome {
                Outcome::Done(m) | Outcome::Refused(m) => m,
            };
            let page = page::message("Refused", Some(&s), &why, Some(("/review", "All approvals")));
            html(status, page)
        }
        None => not_found(&s, &id),
    };
    // A decision that may not be made: audited, as the store audits its own refusals.
    let refuse = async |status: StatusCode, why: String| {
        store
            .refused(Some(&id), Surface::Web, &reviewer.decided_by(), &why)
            .await;
        tracing::warn!(
            approval = id,
            "review app: refused a decision by {}: {why}",
            s.principal
        );
        show(status, Outcome::Refused(why)).await
    };
    if let Some(from) = web.cross_site(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("the decision was sent from another site (`{from}`), not from the review app's own page"),
        )
        .await;
    }
    let form = match form {
        Ok(Form(f)) => f,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("the form could not be read ({e})")).await,
    };
    if !same_secret(&form.csrf, &s.csrf) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the form carried no valid CSRF token (it did not come from your review page, or is from an older \
             sign-in); reload the page and decide again"
                .into(),
        )
        .await;
    }
    let rows = match form.max_rows_affected.trim() {
        "" => None,
        n => match n.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let why = format!("the row limit `{n}` is not a whole number of rows; nothing was decided");
                return show(StatusCode::BAD_REQUEST, Outcome::Refused(why)).await;
            }
        },
    };
    let reason = Some(form.reason).filter(|r| !r.trim().is_empty());
    let decision = match Decision::parse(&form.decision, rows, reason) {
        Ok(d) => d,
        Err(m) => return show(StatusCode::BAD_REQUEST, Outcome::Refused(m)).await,
    };
    match store.get(&id).await {
        Some(a) if visible(&a, &s) => {}
        Some(_) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "you are not among this approval's reviewers".into(),
            )
            .await;
        }
        None => return not_found(&s, &id),
    }
    let outcome = match store.decide(&id, &form.action_hash, &reviewer, decision).await {
        Ok(Approval::Pending) => Ok("your approval is recorded; it needs another reviewer's approval too".to_string()),
        Ok(state) => Ok(format!("decided: {}", state.words().1)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(m) => show(StatusCode::OK, Outcome::Done(m)).await,
        // The store audited it.
        Err(e) => show(super::status_of(&e), Outcome::Refused(e.to_string())).await,
    }
}
