//! The console's HTTP side: routes, the checks every request passes first, and the limits that
//! keep idle or slow connections (any local user can open them) from holding the console.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::{net::TcpListener, sync::Semaphore};

use super::{Session, Shared};
use crate::approval::pending::{Decision, PendingError};

const LOGIN_HTML: &str = include_str!("../../assets/console/login.html");
const LOGIN_JS: &str = include_str!("../../assets/console/login.js");
const INDEX_HTML: &str = include_str!("../../assets/console/index.html");
const CONSOLE_JS: &str = include_str!("../../assets/console/console.js");
const CONSOLE_CSS: &str = include_str!("../../assets/console/console.css");

const COOKIE: &str = "pgwarden_session";
/// Bodies larger than this are refused.
const MAX_BODY: usize = 64 * 1024;
/// A request's head must arrive within this (on a new connection, and between requests on a kept-alive
/// one): a browser on this machine sends it in milliseconds.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A request's body must arrive within this.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once. A browser opens at most six per host; the
/// cap keeps a flood far below the usual 1024 open files.
const MAX_CONNECTIONS: usize = 128;
/// The pause after an accept error other than a dropped connection (out of file descriptors): the
/// loop must not spin while nothing can be accepted.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// A long poll answers after this long without news.
const LONG_POLL: Duration = Duration::from_secs(25);
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

type Reply = Response<Full<Bytes>>;

pub(super) fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let stop = shared.stop.clone();
    tokio::spawn(async move {
        let mut backing_off = false;
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) if dropped_connection(&e) => continue,
                Err(e) => {
                    if !backing_off {
                        tracing::warn!("review console: cannot accept connections ({e}); retrying");
                    }
                    backing_off = true;
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            backing_off = false;
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let svc = service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(secure(handle(&shared, req).await)) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_BODY.max(8192))
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// Errors that concern one connection only: accept again at once.
fn dropped_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
}

/// The headers every response carries. No `Access-Control-*`, ever.
fn secure(mut r: Reply) -> Reply {
    let h = r.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, v: serde_json::Value) -> Reply {
    reply(status, "application/json", v.to_string())
}

fn error(status: StatusCode, message: &str) -> Reply {
    json(status, serde_json::json!({ "error": message }))
}

/// Our own Host and Origin, and nothing else.
fn allowed_origin(shared: &Shared, value: &str, with_scheme: bool) -> bool {
    let port = shared.addr.port();
    let scheme = if with_scheme { "http://" } else { "" };
    value == format!("{scheme}127.0.0.1:{port}") || value == format!("{scheme}localhost:{port}")
}

fn header(req: &Request<Incoming>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn cookie(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")).map(str::to_string))
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Reply {
    // DNS rebinding: a page on another name that resolves here carries its own Host.
    match header(&req, header::HOST) {
        Some(h) if allowed_origin(shared, h, false) => {}
        _ => {
            return error(
                StatusCode::FORBIDDEN,
                "wrong Host: the console answers only to 127.0.0.1 and localhost",
            );
        }
    }
    let origin = header(&req, header::ORIGIN);
    if origin.is_some_and(|o| !allowed_origin(shared, o, true))
        || header(&req, header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site")
    {
        return error(StatusCode::FORBIDDEN, "requests from other sites are refused");
    }
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/login") => reply(StatusCode::OK, "text/html; charset=utf-8", LOGIN_HTML),
        (Method::GET, "/login.js") => reply(StatusCode::OK, "text/javascript; charset=utf-8", LOGIN_JS),
        (Method::GET, "/console.css") => reply(StatusCode::OK, "text/css; charset=utf-8", CONSOLE_CSS),
        (Method::GET, "/console.js") => reply(StatusCode::OK, "text/javascript; charset=utf-8", CONSOLE_JS),
        (Method::POST, "/api/login") => {
            if origin.is_none() {
                return error(StatusCode::FORBIDDEN, "a sign-in needs the page's Origin header");
            }
            login(shared, req).await
        }
        (Method::GET, "/" | "/index.html" | "/api/pending") | (Method::POST, "/api/decide") => {
            let Some(session) = cookie(&req).and_then(|c| shared.session(&c)) else {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "not signed in: pgwarden opens this console in your browser itself when an approval is waiting",
                );
            };
            match path.as_str() {
                "/api/pending" => pending(shared, &req, &session.csrf).await,
                "/api/decide" => {
                    if origin.is_none() {
                        return error(StatusCode::FORBIDDEN, "a decision needs the page's Origin header");
                    }
                    decide(shared, req, &session).await
                }
                _ => reply(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
            }
        }
        (_, "/login" | "/api/login" | "/" | "/api/pending" | "/api/decide") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn body<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Reply> {
    let is_json = header(&req, header::CONTENT_TYPE).is_some_and(|c| c.starts_with("application/json"));
    if !is_json {
        return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send JSON"));
    }
    let bytes = tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| error(StatusCode::REQUEST_TIMEOUT, "the request body took too long"))?
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, &format!("unreadable request: {e}")))
}

/// The sign-in form. Like every body here it is a serde struct, which refuses a field given twice
/// (`duplicate field`) rather than reading it last-wins.
#[derive(Deserialize)]
struct Login {
    secret: String,
}

/// A person's decision on a pending approval.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decide {
    approval_id: String,
    action_hash: String,
    decision: String,
    max_rows_affected: Option<u64>,
    reason: Option<String>,
}

async fn login(shared: &Shared, req: Request<Incoming>) -> Reply {
    let given: Login = match body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match shared.sign_in(&given.secret) {
        Ok(cookie) => {
            let mut r = reply(StatusCode::NO_CONTENT, "text/plain", "");
            if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/")) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(message) => error(StatusCode::UNAUTHORIZED, message),
    }
}

/// The approvals, answered at once when `since` is old, else when something changes (or after
/// `LONG_POLL`).
async fn pending(shared: &Shared, req: &Request<Incoming>, csrf: &str) -> Reply {
    shared.polled();
    let since: Option<u64> = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("since=")))
        .and_then(|v| v.parse().ok());
    let mut changes = shared.store.changes();
    if since == Some(*changes.borrow_and_update()) {
        // Expiry happens on access: look again every second while waiting.
        let until = tokio::time::Instant::now() + LONG_POLL;
        loop {
            tokio::select! {
                _ = changes.changed() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    shared.store.expire_due().await;
                    shared.polled();
                    if tokio::time::Instant::now() >= until {
                        break;
                    }
                }
            }
        }
    }
    let generation = *shared.store.changes().borrow();
    let approvals: Vec<serde_json::Value> = shared
        .store
        .list()
        .await
        .into_iter()
        .map(|l| {
            let (state, label) = l.state.words();
            serde_json::json!({
                "approval_id": l.id,
                "state": state,
                "state_label": label,
                "fingerprint": crate::approval::pending::fingerprint(&l.hash),
                "action_hash": l.hash,
                "created_at": l.review.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "expires_at": l.review.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "packet": l.review.packet,
            })
        })
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({
            "generation": generation,
            "csrf": csrf,
            "client": shared.label,
            "approvals": approvals,
        }),
    )
}

async fn decide(shared: &Shared, req: Request<Incoming>, session: &Session) -> Reply {
    let token = header(&req, header::HeaderName::from_static("x-csrf-token")).unwrap_or_default();
    if !crate::approval::pending::same_secret(token, &session.csrf) {
        return error(StatusCode::FORBIDDEN, "missing or wrong CSRF token; reload the page");
    }
    let d: Decide = match body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let decision = match Decision::parse(&d.decision, d.max_rows_affected, d.reason) {
        Ok(d) => d,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    let reviewer = super::reviewer(&session.decider);
    match shared
        .store
        .decide(&d.approval_id, &d.action_hash, &reviewer, decision)
        .await
    {
        Ok(state) => {
            let (state, label) = state.words();
            json(
                StatusCode::OK,
                serde_json::json!({ "state": state, "state_label": label }),
            )
        }
        Err(e @ (PendingError::StaleHash | PendingError::AlreadyDecided(_))) => {
            error(StatusCode::CONFLICT, &e.to_string())
        }
        Err(e @ PendingError::Unknown(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16 item 4, for the console: a body that gives a field twice is refused, not read last-wins.
    #[test]
    fn a_body_with_a_field_given_twice_is_refused() {
        let decide = |body: &str| serde_json::from_str::<Decide>(body).map(|d| d.decision);
        assert_eq!(
            decide(r#"{"approval_id":"a","action_hash":"h","decision":"deny"}"#).unwrap(),
            "deny"
        );
        for body in [
            r#"{"approval_id":"a","action_hash":"h","decision":"deny","decision":"approve"}"#,
            r#"{"approval_id":"a","action_hash":"h","decision":"deny","\u0064ecision":"approve"}"#,
            r#"{"approval_id":"a","action_hash":"h","decision":"approve","max_rows_affected":1,"max_rows_affected":9}"#,
            r#"{"approval_id":"a","approval_id":"b","action_hash":"h","decision":"deny"}"#,
        ] {
            let e = decide(body).unwrap_err().to_string();
            assert!(e.contains("duplicate field"), "{body}: {e}");
        }
        let e = serde_json::from_str::<Login>(r#"{"secret":"a","secret":"b"}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("duplicate field `secret`"), "{e}");
    }
}
