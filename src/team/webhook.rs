//! Generic webhooks (`[webhooks.NAME]`, `notify = ["webhook:NAME"]`): each approval event as JSON
//! `{"type": "approval.created", "timestamp": …, "data": <the approval>}`, signed per the Standard
//! Webhooks specification and retried with exponential backoff and jitter on a network error, a
//! timeout, 429 or 5xx (never on another 4xx). Each delivery is kept with the approval
//! (`webhook:NAME` → `{"approval.created": {attempts, status, …}}`) and failures are logged.
//!
//! The retrying POST ([`deliver`]) also carries Teams cards.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use base64::Engine;
use ring::hmac;

use super::{Notifier, TeamContext, view};
use crate::{
    approval::pending::{ApprovalEvent, EventKind, State},
    channels::webhook::WebhookConfig,
};

/// The event's `type`, or none for a change that is not an event of its own: an await claiming
/// an approved call to run (the store tells it as `decided`; `executed` follows).
pub fn event_type(e: &ApprovalEvent) -> Option<&'static str> {
    Some(match e.kind {
        EventKind::Decided if matches!(e.approval.state, State::Executing | State::Done { .. }) => return None,
        EventKind::Created => "approval.created",
        EventKind::Voted => "approval.voted",
        EventKind::Decided => "approval.decided",
        EventKind::Expired => "approval.expired",
        EventKind::Executed => "approval.executed",
        EventKind::Cancelled => "approval.cancelled",
    })
}

/// The event's JSON: the approval as every team surface shows it, and who made the change.
pub fn event_body(kind: &str, e: &ApprovalEvent, at: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    let mut data = view(&e.approval);
    if let Some(d) = data.as_object_mut() {
        // Other channels' delivery records are no business of this receiver.
        d.remove("notifications");
        d.insert("changed_by".into(), serde_json::json!(e.by));
    }
    serde_json::json!({
        "type": kind,
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
}

/// `webhook-signature` for message `id` sent at `timestamp` (Unix seconds): `v1,` and the base64
/// HMAC-SHA256 of `{id}.{timestamp}.{body}` under the secret's key bytes.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()))
}

/// One POST of JSON, retried.
pub struct Delivery<'a> {
    /// `webhook:ops`, `teams:dba`: in logs and as the approval's note key.
    pub name: &'a str,
    pub url: &'a str,
    pub body: String,
    /// Extra headers for each attempt, given the attempt's Unix time (signatures).
    pub headers: &'a (dyn Fn(i64) -> Vec<(&'static str, String)> + Send + Sync),
    pub retries: u32,
    pub backoff: Duration,
    pub timeout: Duration,
}

/// How a delivery stands after an attempt, as the approval's note keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempted {
    pub attempts: u32,
    /// `delivered`, `retrying` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    /// Worth another attempt (after at least this long, when the receiver said).
    Retry(String, Option<u16>, Option<Duration>),
    Failed(String, Option<u16>),
}

/// Where a delivery's record is kept: with approval `id`, under the delivery's name, for `event`.
pub struct Keep<'a> {
    pub ctx: &'a TeamContext,
    /// One writer of records at a time in this process.
    pub lock: &'a tokio::sync::Mutex<()>,
    pub id: &'a str,
    pub event: &'a str,
    /// The Standard Webhooks message id, kept with the record.
    pub webhook_id: Option<&'a str>,
}

impl Keep<'_> {
    async fn record(&self, name: &str, a: &Attempted) {
        let mut record = serde_json::to_value(a).unwrap_or_default();
        if let Some(w) = self.webhook_id {
            record["webhook_id"] = w.into();
        }
        keep_record(self.ctx, self.lock, self.id, name, self.event, record).await;
    }
}

/// POSTs `d` until it is accepted (2xx), a retry would not help, or the retries are spent,
/// keeping how it stands after each attempt.
pub async fn deliver(client: &reqwest::Client, d: &Delivery<'_>, keep: &Keep<'_>) -> Result<(), String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let now = chrono::Utc::now();
        let mut req = client
            .post(d.url)
            .timeout(d.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::USER_AGENT,
                concat!("pgwarden/", env!("CARGO_PKG_VERSION")),
            )
            .body(d.body.clone());
        for (k, v) in (d.headers)(now.timestamp()) {
            req = req.header(k, v);
        }
        let outcome = match req.send().await {
            Ok(r) => {
                let status = r.status();
                let code = status.as_u16();
                if status.is_success() {
                    Outcome::Delivered(code)
                } else if code == 429 || status.is_server_error() {
                    let after = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    Outcome::Retry(format!("answered HTTP {code}"), Some(code), after)
                } else if status.is_redirection() {
                    Outcome::Failed(
                        format!("answered HTTP {code}; redirects are not followed: configure the final URL"),
                        Some(code),
                    )
                } else {
                    Outcome::Failed(
                        format!("answered HTTP {code}, which a retry would not change"),
                        Some(code),
                    )
                }
            }
            // Without the URL: a Teams workflow's URL is its credential.
            Err(e) => Outcome::Retry(e.without_url().to_string(), None, None),
        };
        let more = attempt <= d.retries;
        let (attempted, result) = match outcome {
            Outcome::Delivered(code) => (
                Attempted {
                    attempts: attempt,
                    status: "delivered",
                    http_status: Some(code),
                    delivered_at: Some(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                    last_error: None,
                },
                Ok(()),
            ),
            Outcome::Retry(why, code, after) if more => {
                let wait = backoff(d.backoff, attempt).max(after.unwrap_or_default().min(MAX_WAIT));
                tracing::warn!(
                    "{}: attempt {attempt} failed ({why}); retrying in {}",
                    d.name,
                    humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
                );
                let a = Attempted {
                    attempts: attempt,
                    status: "retrying",
                    http_status: code,
                    delivered_at: None,
                    last_error: Some(why),
                };
                keep.record(d.name, &a).await;
                tokio::time::sleep(wait).await;
                continue;
            }
            Outcome::Retry(why, code, _) | Outcome::Failed(why, code) => (
                Attempted {
                    attempts: attempt,
                    status: "failed",
                    http_status: code,
                    delivered_at: None,
                    last_error: Some(why.clone()),
                },
                Err(format!("{why} after {attempt} attempt(s)")),
            ),
        };
        keep.record(d.name, &attempted).await;
        return result;
    }
}

/// The longest wait between two attempts.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The wait after attempt `n` (1-based): `first` doubled per attempt, at most [`MAX_WAIT`], then
/// spread over 75–125 % so receivers that failed together are not retried together.
fn backoff(first: Duration, n: u32) -> Duration {
    let base = first.saturating_mul(1u32 << (n - 1).min(20)).min(MAX_WAIT);
    let spread = 0.75 + (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 2000.0;
    base.mul_f64(spread)
}

/// Keeps `attempted` as the approval's record of `event` on `name` (`webhook:ops` →
/// `{"approval.created": …}`), one writer at a time in this process.
pub async fn keep_record(
    ctx: &TeamContext,
    lock: &tokio::sync::Mutex<()>,
    id: &str,
    name: &str,
    event: &str,
    attempted: serde_json::Value,
) {
    let _one = lock.lock().await;
    let mut records = ctx
        .approvals
        .store
        .get(id)
        .await
        .and_then(|a| a.notes.get(name).and_then(|v| v.as_object().cloned()))
        .unwrap_or_default();
    records.insert(event.to_string(), attempted);
    if let Err(e) = ctx.approvals.store.annotate(id, name, records.into()).await {
        tracing::warn!(approval = id, "{name}: the delivery record was not kept: {e}");
    }
}

/// The webhooks of the HTTP config.
struct Webhooks {
    ctx: Arc<TeamContext>,
    hooks: BTreeMap<String, WebhookConfig>,
    /// Webhooks are not redirected: a signed event goes where the config says or nowhere.
    client: reqwest::Client,
    records: tokio::sync::Mutex<()>,
}

pub fn notifier(ctx: &Arc<TeamContext>) -> Option<Arc<dyn Notifier>> {
    if ctx.config.webhooks.is_empty() {
        return None;
    }
    Some(Arc::new(Webhooks {
        ctx: ctx.clone(),
        hooks: ctx.config.webhooks.clone(),
        client: no_redirects(),
        records: tokio::sync::Mutex::new(()),
    }))
}

/// An HTTP client that does not follow redirects.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

#[async_trait]
impl Notifier for Webhooks {
    fn scheme(&self) -> &'static str {
        "webhook"
    }

    async fn notify(&self, target: &str, event: &ApprovalEvent) -> Result<(), String> {
        let Some(hook) = self.hooks.get(target) else {
            return Err(format!("the HTTP config has no `[webhooks.{target}]`"));
        };
        let Some(kind) = event_type(event) else {
            return Ok(());
        };
        if !hook.wants(event.kind.as_str()) {
            return Ok(());
        }
        // The same id on every attempt, so the receiver can drop a repeat it already handled.
        let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let body = event_body(kind, event, chrono::Utc::now()).to_string();
        let key = hook.key_bytes();
        let headers = |ts: i64| {
            vec![
                ("webhook-id", msg_id.clone()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", sign(&key, &msg_id, ts, &body)),
            ]
        };
        let name = format!("webhook:{target}");
        let delivery = Delivery {
            name: &name,
            url: &hook.url,
            body: body.clone(),
            headers: &headers,
            retries: hook.retries,
            backoff: hook.backoff,
            timeout: hook.timeout,
        };
        let keep = Keep {
            ctx: &self.ctx,
            lock: &self.records,
            id: &event.approval.id,
            event: kind,
            webhook_id: Some(&msg_id),
        };
        deliver(&self.client, &delivery, &keep)
            .await
            .map_err(|e| format!("{kind} ({msg_id}) not delivered: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's own example (its reference libraries' test vector).
    #[test]
    fn signatures_match_the_specifications_example() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_ten_minutes() {
        let s = Duration::from_secs(1);
        for n in 1..=4u32 {
            let w = backoff(s, n).as_secs_f64();
            let base = f64::from(1u32 << (n - 1));
            assert!(w >= base * 0.75 && w <= base * 1.25, "{n}: {w}");
        }
        assert!(backoff(s, 30) <= MAX_WAIT.mul_f64(1.25));
    }
}
