//! The few Slack Web API methods pgwarden calls, with the bot token: `chat.postMessage`,
//! `chat.update`, `views.open` and `users.info`. A rate limit (429) is waited out and retried.

use std::time::Duration;

use serde_json::{Value, json};

use crate::channels::Secret;

pub struct WebApi {
    /// `https://slack.com/api`, or a stand-in.
    pub base: String,
    pub token: Secret,
    pub client: reqwest::Client,
}

/// Where a message was posted: what `chat.update` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The channel's id (`C0123`), whatever name it was posted to.
    pub channel: String,
    pub ts: String,
}

/// Tries per call when Slack says to slow down or is briefly unavailable.
const TRIES: u32 = 3;

impl WebApi {
    /// `POST {base}/{method}` with a JSON body; Slack's answer when it says `ok`.
    async fn call(&self, method: &str, body: &Value) -> Result<Value, String> {
        let url = format!("{}/{method}", self.base);
        let mut tried = 0;
        loop {
            tried += 1;
            let sent = self
                .client
                .post(&url)
                .bearer_auth(self.token.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
                .body(body.to_string())
                .send()
                .await;
            match answer(method, sent).await {
                Err(Retry::After(wait)) if tried < TRIES => tokio::time::sleep(wait).await,
                Err(Retry::After(_)) => {
                    return Err(format!("{method}: Slack is rate limiting; gave up after {TRIES} tries"));
                }
                Err(Retry::No(e)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }

    /// Posts `blocks` (with `text` for notifications) to `channel` (`#name` or an id).
    pub async fn post(&self, channel: &str, text: &str, blocks: &Value) -> Result<Posted, String> {
        let v = self
            .call(
                "chat.postMessage",
                &json!({ "channel": channel, "text": text, "blocks": blocks, "unfurl_links": false, "unfurl_media": false }),
            )
            .await?;
        match (v["channel"].as_str(), v["ts"].as_str()) {
            (Some(c), Some(ts)) => Ok(Posted {
                channel: c.to_string(),
                ts: ts.to_string(),
            }),
            _ => Err("chat.postMessage: Slack's answer names no channel and ts".into()),
        }
    }

    /// Replaces the message at `at` with `blocks`.
    pub async fn update(&self, at: &Posted, text: &str, blocks: &Value) -> Result<(), String> {
        self.call(
            "chat.update",
            &json!({ "channel": at.channel, "ts": at.ts, "text": text, "blocks": blocks }),
        )
        .await
        .map(|_| ())
    }

    /// Opens `view` (a modal) for the person who clicked (`trigger_id`, valid for 3 s).
    pub async fn open_view(&self, trigger_id: &str, view: &Value) -> Result<(), String> {
        self.call("views.open", &json!({ "trigger_id": trigger_id, "view": view }))
            .await
            .map(|_| ())
    }

    /// `users.info` of `user`: the user object.
    pub async fn user(&self, user: &str) -> Result<Value, String> {
        let sent = self
            .client
            .get(format!("{}/users.info", self.base))
            .bearer_auth(self.token.expose())
            .query(&[("user", user)])
            .send()
            .await;
        match answer("users.info", sent).await {
            Ok(v) => Ok(v["user"].clone()),
            Err(Retry::After(_)) => Err("users.info: Slack is rate limiting; try again in a minute".into()),
            Err(Retry::No(e)) => Err(e),
        }
    }
}

enum Retry {
    /// Rate limited or briefly unavailable: try again after this long.
    After(Duration),
    No(String),
}

/// Slack's answer: the JSON when `ok`, else why not.
async fn answer(method: &str, sent: Result<reqwest::Response, reqwest::Error>) -> Result<Value, Retry> {
    let r = sent.map_err(|e| Retry::No(format!("{method}: {}", e.without_url())))?;
    let status = r.status();
    if status.as_u16() == 429 || status.is_server_error() {
        let after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1)
            .min(30);
        return Err(Retry::After(Duration::from_secs(after)));
    }
    let v: Value = r.json().await.map_err(|e| {
        Retry::No(format!(
            "{method}: HTTP {status}, not Slack's JSON ({})",
            e.without_url()
        ))
    })?;
    if v["ok"] == json!(true) {
        Ok(v)
    } else {
        let error = v["error"].as_str().unwrap_or("no error given");
        Err(Retry::No(format!("{method}: Slack says `{error}`{}", hint(error))))
    }
}

/// What to do about the Slack errors a setup runs into.
fn hint(error: &str) -> &'static str {
    match error {
        "not_in_channel" => " (invite the app to the channel: /invite @pgwarden)",
        "channel_not_found" => " (check the channel in the rule's `notify`, and invite the app to it)",
        "invalid_auth" | "not_authed" | "token_revoked" => " (check `bot_token_file`)",
        "missing_scope" => " (add the scope the manifest lists and reinstall the app)",
        "expired_trigger_id" => " (the dialog opened too late)",
        _ => "",
    }
}
