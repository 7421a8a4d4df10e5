//! Local stand-ins for the services pgwarden notifies — Slack's Web API, a Teams workflow, a
//! webhook receiver: an HTTP server on a free loopback port that records every request as it
//! arrived (headers and exact body, so the test can check signatures) and answers as the test
//! scripts it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::HeaderMap, response::IntoResponse};
use serde_json::{Value, json};

use super::eventually;

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The path and query (`/api/chat.postMessage`).
    pub path: String,
    /// Lower-cased names.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// How the stand-in answers: given the request and those before it, a status and a JSON body.
pub type Answer = dyn Fn(&Seen, &[Seen]) -> (u16, Value) + Send + Sync;

struct Shared {
    seen: Mutex<Vec<Seen>>,
    answer: Box<Answer>,
}

pub struct StandIn {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// A stand-in answering with `answer`.
    pub async fn start(answer: impl Fn(&Seen, &[Seen]) -> (u16, Value) + Send + Sync + 'static) -> StandIn {
        let shared = Arc::new(Shared {
            seen: Mutex::new(vec![]),
            answer: Box::new(answer),
        });
        let app = axum::Router::new().fallback(record).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StandIn { url, shared, task }
    }

    /// Slack's Web API as pgwarden uses it: `chat.postMessage` (into channel `C0APPROVALS`, each
    /// message its own `ts`), `chat.update`, `views.open`, `users.info` of `users` (id → the user
    /// object), and `response_url`s (any other path) — each call needing the bot token `token`.
    pub async fn slack(token: &'static str, users: Value) -> StandIn {
        StandIn::start(move |r, before| {
            let method = r.path.trim_start_matches("/api/").split('?').next().unwrap_or_default();
            if !r.path.starts_with("/api/") {
                return (200, json!({ "ok": true }));
            }
            if r.header("authorization") != Some(&format!("Bearer {token}")) {
                return (200, json!({ "ok": false, "error": "invalid_auth" }));
            }
            match method {
                "chat.postMessage" => {
                    let n = before.iter().filter(|b| b.path == r.path).count();
                    (
                        200,
                        json!({ "ok": true, "channel": "C0APPROVALS", "ts": format!("1700000000.{:06}", n + 1) }),
                    )
                }
                "chat.update" | "views.open" => (200, json!({ "ok": true })),
                "users.info" => {
                    let id = r.path.split("user=").nth(1).unwrap_or_default();
                    match users.get(id) {
                        Some(u) => (200, json!({ "ok": true, "user": u })),
                        None => (200, json!({ "ok": false, "error": "user_not_found" })),
                    }
                }
                _ => (200, json!({ "ok": false, "error": "unknown_method" })),
            }
        })
        .await
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Those to `path` (without the query).
    pub fn to(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.split('?').next() == Some(path))
            .collect()
    }

    /// Waits for the `n`th request (1-based) to `path` that `check` accepts.
    pub async fn nth(&self, n: usize, path: &str, check: impl Fn(&Seen) -> bool) -> Seen {
        eventually(Duration::from_secs(30), &format!("request {n} to {path}"), async || {
            self.to(path).into_iter().filter(|s| check(s)).nth(n - 1)
        })
        .await
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let seen = Seen {
        method: method.to_string(),
        path: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).to_string(),
    };
    let (status, answer) = {
        let mut all = shared.seen.lock().unwrap();
        let answer = (shared.answer)(&seen, &all);
        all.push(seen);
        answer
    };
    (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(answer))
}
