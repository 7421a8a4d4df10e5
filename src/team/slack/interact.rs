//! `POST /slack/interactivity`: the app's button clicks and Deny dialogs. Each request must carry
//! Slack's signature over its exact body (`X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret,
//! "v0:{timestamp}:{body}")>`) with a timestamp within 5 minutes; the clicking user is mapped to a
//! principal (`[slack.users]`, or their confirmed e-mail), and the decision goes through the store,
//! which applies the rule's reviewers and refuses self-approval. Every refusal is audited: those
//! the store makes by the store, the rest (a forged or stale request, an unmapped user, another
//! workspace) here.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use ring::hmac;
use serde_json::{Value, json};

use super::{Slack, blocks};
use crate::{
    approval::{
        packet::one_line,
        pending::{Decision, PendingError, Reviewer},
    },
    call::Surface,
};

pub fn router(slack: Arc<Slack>) -> Router {
    Router::new()
        .route("/slack/interactivity", post(interactivity))
        .layer(DefaultBodyLimit::max(512 * 1024))
        .with_state(slack)
}

/// How far a request's timestamp may be from now, in seconds (Slack's own advice: 5 minutes).
const WINDOW: u64 = 300;

/// `X-Slack-Signature` of `body` sent at `timestamp`, as Slack computes it.
#[cfg(test)]
fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("v0:{timestamp}:").into_bytes();
    signed.extend_from_slice(body);
    let tag = hmac::sign(&key, &signed);
    format!(
        "v0={}",
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Whether Slack signed `body` within the window around `now`; if not, why not.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(sig)) = (header("x-slack-request-timestamp"), header("x-slack-signature")) else {
        return Err("the request is not signed (no X-Slack-Signature or X-Slack-Request-Timestamp)");
    };
    let tag = sig
        .strip_prefix("v0=")
        .and_then(unhex)
        .ok_or("the signature is not a v0 signature")?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("v0:{timestamp}:").into_bytes();
    signed.extend_from_slice(body);
    // Constant-time, inside ring.
    hmac::verify(&key, &signed, &tag)
        .map_err(|_| "the signature does not match: not signed with this app's signing secret")?;
    let at: i64 = timestamp.parse().map_err(|_| "the request timestamp is not a number")?;
    if now.abs_diff(at) > WINDOW {
        return Err("the request timestamp is more than 5 minutes from now: a replayed request, or a wrong clock");
    }
    Ok(())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a request asks, read from its `payload`.
struct Interaction {
    user: String,
    team: String,
    response_url: Option<String>,
    trigger_id: Option<String>,
    what: What,
}

enum What {
    /// A message button: `approve`, `dry_run`, `deny` or `open`.
    Button { action: String, id: String, hash: String },
    /// The Deny dialog, submitted.
    Denied {
        id: String,
        hash: String,
        reason: Option<String>,
    },
    /// Anything else the app may be sent (a dialog closed, a shortcut): acknowledged, ignored.
    Other,
}

impl Interaction {
    fn read(p: &Value) -> Interaction {
        let s = |v: &Value| v.as_str().map(str::to_string);
        let what = match p["type"].as_str() {
            Some("block_actions") => {
                let a = &p["actions"][0];
                let value = a["value"].as_str().and_then(blocks::parse_value);
                match (s(&a["action_id"]), value) {
                    (Some(action), Some((id, hash))) => What::Button {
                        action,
                        id: id.into(),
                        hash: hash.into(),
                    },
                    (Some(action), None) if action == "open" => What::Button {
                        action,
                        id: String::new(),
                        hash: String::new(),
                    },
                    _ => What::Other,
                }
            }
            Some("view_submission") if p["view"]["callback_id"] == blocks::DENY_VIEW => {
                let meta: Value = p["view"]["private_metadata"]
                    .as_str()
                    .and_then(|m| serde_json::from_str(m).ok())
                    .unwrap_or_default();
                match (s(&meta["id"]), s(&meta["hash"])) {
                    (Some(id), Some(hash)) => What::Denied {
                        id,
                        hash,
                        reason: s(&p["view"]["state"]["values"]["reason"]["reason"]["value"]),
                    },
                    _ => What::Other,
                }
            }
            _ => What::Other,
        };
        let response_url = match &what {
            What::Denied { .. } => p["view"]["private_metadata"]
                .as_str()
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
                .and_then(|m| s(&m["response_url"])),
            _ => s(&p["response_url"]),
        };
        Interaction {
            user: s(&p["user"]["id"]).unwrap_or_default(),
            team: s(&p["team"]["id"])
                .or_else(|| s(&p["user"]["team_id"]))
                .unwrap_or_default(),
            response_url,
            trigger_id: s(&p["trigger_id"]),
            what,
        }
    }

    /// The approval it is about.
    fn approval(&self) -> Option<&str> {
        match &self.what {
            What::Button { id, .. } | What::Denied { id, .. } if !id.is_empty() => Some(id),
            _ => None,
        }
    }
}

/// The `payload` field of a form-encoded body.
fn payload(body: &[u8]) -> Option<Value> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .and_then(|(_, v)| serde_json::from_str(&v).ok())
}

async fn interactivity(State(slack): State<Arc<Slack>>, headers: HeaderMap, body: Bytes) -> Response {
    let store = &slack.ctx.approvals.store;
    let payload = payload(&body);
    let signed = verify(
        slack.config.signing_secret.expose(),
        &headers,
        &body,
        chrono::Utc::now().timestamp(),
    );
    if let Err(why) = signed {
        // What the request claims is unverified: recorded as a claim, cut short.
        let claim = payload.as_ref().map(Interaction::read);
        let user = claim.as_ref().map(|c| one_line(&c.user, 40)).unwrap_or_default();
        let by = format!("an unverified Slack request (claiming user `{user}`)");
        let id = match claim.as_ref().and_then(Interaction::approval) {
            Some(id) if store.get(id).await.is_some() => Some(id.to_string()),
            _ => None,
        };
        // Anyone can send these: one naming a real approval (whose id only its reviewers have
        // seen) is always recorded; the rest at most once a second, with a count.
        let admitted = match id {
            Some(_) => Some(0),
            None => slack.unverified.admit(),
        };
        if let Some(skipped) = admitted {
            let why = match skipped {
                0 => why.to_string(),
                n => format!("{why} (and {n} more unverified requests refused since the last such record)"),
            };
            store.refused(id.as_deref(), Surface::Slack, &by, &why).await;
            tracing::warn!("slack: refused a request: {why}");
        }
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    let Some(payload) = payload else {
        return (StatusCode::BAD_REQUEST, "expected a form with a JSON `payload`").into_response();
    };
    let i = Interaction::read(&payload);
    let (id, hash) = match &i.what {
        What::Button { action, id, hash } if action != "open" => (id.clone(), hash.clone()),
        What::Denied { id, hash, .. } => (id.clone(), hash.clone()),
        // The review app's link, a dialog closed: nothing to decide.
        _ => return StatusCode::OK.into_response(),
    };
    let reviewer = match slack.reviewer(&i).await {
        Ok(r) => r,
        Err(why) => {
            let by = format!("Slack user {} ({})", one_line(&i.user, 40), one_line(&i.team, 40));
            store.refused(Some(&id), Surface::Slack, &by, &why).await;
            return slack.answer(&i, Err(why));
        }
    };
    let decision = match &i.what {
        What::Button { action, .. } if action == "deny" => {
            // A dialog asks for the reason; if it cannot open, Deny still denies.
            let opened = match &i.trigger_id {
                Some(t) => {
                    slack
                        .api
                        .open_view(t, &blocks::deny_view(&id, &hash, i.response_url.as_deref()))
                        .await
                }
                None => Err("no trigger_id".into()),
            };
            match opened {
                Ok(()) => return StatusCode::OK.into_response(),
                Err(e) => {
                    tracing::warn!(
                        approval = id,
                        "slack: the Deny dialog did not open ({e}); denying without a reason"
                    );
                    Decision::Deny { reason: None }
                }
            }
        }
        What::Button { action, .. } => match Decision::parse(action, None, None) {
            Ok(d) => d,
            Err(e) => return slack.answer(&i, Err(e)),
        },
        What::Denied { reason, .. } => Decision::Deny { reason: reason.clone() },
        What::Other => return StatusCode::OK.into_response(),
    };
    let outcome = match store.decide(&id, &hash, &reviewer, decision).await {
        Ok(state) => Ok(format!("{id}: {}", state.words().1)),
        Err(e) => Err(refusal(&id, &e)),
    };
    slack.answer(&i, outcome)
}

/// What the reviewer is told when the store refuses.
fn refusal(id: &str, e: &PendingError) -> String {
    format!("{id} was not decided: {e}")
}

impl Slack {
    /// The clicking user as a verified reviewer, or why they may not decide.
    async fn reviewer(&self, i: &Interaction) -> Result<Reviewer, String> {
        let c = &self.config;
        if let Some(team) = &c.team_id
            && &i.team != team
        {
            return Err(format!(
                "the request came from Slack workspace `{}`, not `{team}` (`[slack] team_id`)",
                one_line(&i.team, 40)
            ));
        }
        let entry = c.users.get(&i.user);
        let principal = match entry {
            Some(u) => u.principal().to_string(),
            None if c.lookup_email => self.email_of(&i.user).await?,
            None => {
                return Err(format!(
                    "Slack user {} is not mapped to a pgwarden principal; an operator adds them to `[slack.users]`",
                    one_line(&i.user, 40)
                ));
            }
        };
        let groups = c.groups_of(&principal, entry);
        let display = format!("Slack {}", one_line(&i.user, 40));
        Ok(Reviewer::verified(
            Surface::Slack,
            &principal,
            Some(&display),
            groups,
            format!("slack {}", one_line(&i.team, 40)),
        ))
    }

    /// The confirmed e-mail address of Slack user `user`, lower-cased, as their principal.
    async fn email_of(&self, user: &str) -> Result<String, String> {
        let u = self
            .api
            .user(user)
            .await
            .map_err(|e| format!("Slack user {} could not be looked up ({e})", one_line(user, 40)))?;
        if u["deleted"] == json!(true) || u["is_bot"] == json!(true) {
            return Err("deactivated users and bots do not decide approvals".into());
        }
        if u["is_restricted"] == json!(true) || u["is_ultra_restricted"] == json!(true) {
            return Err("guest accounts decide only when `[slack.users]` maps them".into());
        }
        if u["is_email_confirmed"] == json!(false) {
            return Err("the Slack user's e-mail address is not confirmed".into());
        }
        match u["profile"]["email"].as_str() {
            Some(e) if e.contains('@') => Ok(e.trim().to_ascii_lowercase()),
            _ => Err(
                "Slack gave no e-mail address for the user (the app needs the `users:read.email` scope), \
                 and they are not in `[slack.users]`"
                    .into(),
            ),
        }
    }

    /// Tells the person how it went: in the Deny dialog (its errors) or as a message only they see
    /// (through the request's `response_url`).
    fn answer(&self, i: &Interaction, outcome: Result<String, String>) -> Response {
        let text = match &outcome {
            Ok(m) => m.clone(),
            Err(m) => format!("Refused: {m}"),
        };
        if let Some(url) = &i.response_url
            && crate::channels::outbound_url(url, "response_url").is_ok()
        {
            let (client, url) = (self.ctx.client.clone(), url.clone());
            let body = json!({
                "response_type": "ephemeral",
                "replace_original": false,
                "text": text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"),
            });
            tokio::spawn(async move {
                if let Err(e) = client.post(url).json(&body).send().await {
                    tracing::warn!("slack: the answer to the reviewer was not sent: {}", e.without_url());
                }
            });
        }
        match (&i.what, outcome) {
            (What::Denied { .. }, Err(m)) => Json(json!({
                "response_action": "errors",
                "errors": { "reason": m.chars().take(300).collect::<String>() },
            }))
            .into_response(),
            (What::Denied { .. }, Ok(_)) => Json(json!({ "response_action": "clear" })).into_response(),
            _ => StatusCode::OK.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's documented example (api.slack.com, "Verifying requests from Slack").
    #[test]
    fn slacks_documented_example_verifies_and_a_changed_byte_does_not() {
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let ts = "1531420618";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(signature(secret, ts, body), sig);
        let mut h = HeaderMap::new();
        h.insert("x-slack-request-timestamp", ts.parse().unwrap());
        h.insert("x-slack-signature", sig.parse().unwrap());
        assert_eq!(verify(secret, &h, body, 1531420618 + 60), Ok(()));
        assert!(
            verify(secret, &h, body, 1531420618 + 301)
                .unwrap_err()
                .contains("5 minutes")
        );
        let mut forged = body.to_vec();
        forged[6] ^= 1;
        assert!(
            verify(secret, &h, &forged, 1531420618)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(verify("another secret", &h, body, 1531420618).is_err());
        assert!(
            verify(secret, &HeaderMap::new(), body, 1531420618)
                .unwrap_err()
                .contains("not signed")
        );
    }
}
