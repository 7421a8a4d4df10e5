//! The team of the team-approval tests (issue 21): people with tokens in a directory that also
//! holds the server's HTTP config and secrets ([`Team`]), the team policy ([`team_policy`]),
//! Alice's pending call and her `pgwarden_await` ([`pending`], [`await_call`], [`awaited`]), the
//! approvals API as a reviewer's tool speaks it ([`Api`]) and Slack's side of a click
//! ([`slack_signature`], [`post_slack`], [`buttons`]).

use std::path::{Path, PathBuf};

use pgwarden::auth::tokens::new_token;
use rmcp::{Peer, RoleClient, model::CallToolResult};
use serde_json::{Value, json};

use super::{
    TestDb,
    http::{HttpServer, call},
    server::ServerBuilder,
    text,
};

/// Slack's own example signing secret.
pub const SLACK_SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// The Slack app's bot token.
pub const SLACK_BOT: &str = "xoxb-17-test-bot-token";

/// A temporary directory with a token file (`tokens.toml`) for up to four people, alice, bob,
/// carol and dave, and each one's token, also in `<principal>.token` (mode 0600) for the CLI.
pub struct Team {
    pub dir: tempfile::TempDir,
    pub alice: String,
    pub bob: String,
    pub carol: String,
    pub dave: String,
}

impl Team {
    /// A directory named `prefix…` in /tmp with tokens for `people` — alice, bob, carol and dave
    /// in that order, each as (principal, groups); those not given have no token (an empty one).
    pub fn new(prefix: &str, people: &[(&str, &[&str])]) -> Team {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp").unwrap();
        let mut tokens = people.iter().map(|(name, groups)| mint(dir.path(), name, groups));
        let mut next = || tokens.next().unwrap_or_default();
        let (alice, bob, carol, dave) = (next(), next(), next(), next());
        Team {
            dir,
            alice,
            bob,
            carol,
            dave,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The file holding `principal`'s token.
    pub fn token_file(&self, principal: &str) -> PathBuf {
        self.path().join(format!("{principal}.token"))
    }

    /// Writes `value` and a newline to the file `name` in the directory, as secrets are kept.
    pub fn secret(&self, name: &str, value: &str) {
        std::fs::write(self.path().join(name), format!("{value}\n")).unwrap();
    }

    /// The Slack app's signing secret and bot token, in `slack-signing` and `slack-bot`.
    pub fn slack_secrets(&self) {
        self.secret("slack-signing", SLACK_SIGNING);
        self.secret("slack-bot", SLACK_BOT);
    }

    /// Starts `builder`'s server over HTTP (resource `http://127.0.0.1/mcp`) in this directory,
    /// taking the token file and `config` (more of the HTTP config's TOML).
    pub async fn serve(&self, builder: ServerBuilder<()>, config: &str) -> HttpServer {
        let config = format!("[tokens]\nfile = \"tokens.toml\"\n{config}");
        HttpServer::start(builder, self.path(), "http://127.0.0.1/mcp", &config).await
    }
}

/// Mints `principal`'s token in `dir`'s `tokens.toml` and keeps it in `<principal>.token`.
fn mint(dir: &Path, principal: &str, groups: &[&str]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    let token = new_token(&dir.join("tokens.toml"), principal, &groups).unwrap();
    let path = dir.join(format!("{principal}.token"));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    token
}

/// The team policy: changes (rule `team-changes`) wait for a dba other than the requester, with
/// `extra` lines added to that rule (`min_approvals`, `notify`); reads run; `wait_budget = "1s"`
/// returns the pending approval at once.
pub fn team_policy(extra: &str) -> String {
    format!(
        r#"
[approval]
wait_budget = "1s"

[[rule]]
id = "team-changes"
effect = "approve"
categories = ["write"]
reviewers = ["group:dba"]
{extra}

[[rule]]
id = "reads"
effect = "allow"
categories = ["read"]
"#
    )
}

/// The `status` column of `orders`, by id.
pub async fn statuses(db: &TestDb) -> Vec<String> {
    db.column("SELECT status FROM orders ORDER BY id").await
}

/// `client` asks for `sql` (with `intent`, if any), and it waits for a person: the structured
/// result (`approval_id`, `fingerprint`, …).
pub async fn asked(client: &Peer<RoleClient>, sql: &str, intent: Option<&str>) -> Value {
    let mut args = json!({ "sql": sql });
    if let Some(intent) = intent {
        args["intent"] = json!(intent);
    }
    let r = client.call_tool(call("query", args)).await.unwrap();
    let pending = r.structured_content.clone().unwrap_or_else(|| panic!("{}", text(&r)));
    assert_eq!(pending["status"], "pending_approval", "{pending}");
    pending
}

/// [`asked`]: the pending approval's id.
pub async fn pending(client: &Peer<RoleClient>, sql: &str, intent: Option<&str>) -> String {
    asked(client, sql, intent).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `client`'s `pgwarden_await` of `id`, waiting at most `wait` seconds.
pub async fn await_call(client: &Peer<RoleClient>, id: &str, wait: u64) -> CallToolResult {
    client
        .call_tool(call(
            "pgwarden_await",
            json!({ "approval_id": id, "wait_seconds": wait }),
        ))
        .await
        .unwrap()
}

/// [`await_call`]'s structured result, or `{text, is_error}` when it has none.
pub async fn awaited(client: &Peer<RoleClient>, id: &str, wait: u64) -> Value {
    let r = await_call(client, id, wait).await;
    r.structured_content
        .clone()
        .unwrap_or_else(|| json!({ "text": text(&r), "is_error": r.is_error }))
}

/// The approvals API of a server, spoken with reqwest as any reviewer's tool would.
pub struct Api {
    /// `http://127.0.0.1:<port>/api/v1`.
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn of(s: &HttpServer) -> Api {
        Api {
            base: format!("http://127.0.0.1:{}/api/v1", s.port()),
            http: reqwest::Client::new(),
        }
    }

    /// GET `path` (below the base) as `token`'s owner: the status and the JSON answer (null if
    /// none).
    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The approval `id` as `token`'s owner sees it: the status and the view.
    pub async fn show(&self, token: &str, id: &str) -> (u16, Value) {
        self.get(token, &format!("/approvals/{id}")).await
    }

    /// The approval `id` as `token`'s owner sees it, which they must.
    pub async fn approval(&self, token: &str, id: &str) -> Value {
        let (status, a) = self.show(token, id).await;
        assert_eq!(status, 200, "{a}");
        a
    }

    /// POSTs `body` as a decision on `id` as `token`'s owner: the status and the answer's text.
    pub async fn post_raw(&self, token: &str, id: &str, body: Vec<u8>, content_type: &str) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}/approvals/{id}/decision", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Posts the decision `body` on `id` as `token`'s owner: the status and the answer (as a JSON
    /// string when it is not JSON).
    pub async fn decide(&self, token: &str, id: &str, body: Value) -> (u16, Value) {
        let (status, text) = self
            .post_raw(token, id, body.to_string().into_bytes(), "application/json")
            .await;
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Decides `id` as `token`'s owner on the action hash the API shows them (which it must).
    pub async fn decide_shown(&self, token: &str, id: &str, decision: &str, reason: Option<&str>) -> (u16, Value) {
        let hash = self.approval(token, id).await["action_hash"].clone();
        let body = json!({ "decision": decision, "action_hash": hash, "reason": reason });
        self.decide(token, id, body).await
    }

    /// Approves `id` as `token`'s owner on the hash shown to them, whatever the showing said
    /// (no reason).
    pub async fn approve(&self, token: &str, id: &str) -> (u16, Value) {
        let (_, shown) = self.show(token, id).await;
        let body = json!({ "decision": "approve", "action_hash": shown["action_hash"] });
        self.decide(token, id, body).await
    }
}

/// The `[slack]` table of the HTTP config for the app at the stand-in `api` (its secrets from
/// [`Team::slack_secrets`], users looked up by e-mail), followed by `more` (`[slack.users]`,
/// `[slack.groups]`).
pub fn slack_config(api: &str, more: &str) -> String {
    format!(
        r#"
[slack]
signing_secret_file = "slack-signing"
bot_token_file = "slack-bot"
api_base = "{api}/api"
lookup_email = true
{more}"#
    )
}

/// `X-Slack-Signature` as Slack computes it: HMAC-SHA256 of `v0:{ts}:{body}` with `secret`.
pub fn slack_signature(secret: &str, ts: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("v0:{ts}:").into_bytes();
    signed.extend_from_slice(body);
    let tag = ring::hmac::sign(&key, &signed);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// Slack's form body for an interaction: `payload=<the JSON>`.
pub fn slack_form(payload: &Value) -> Vec<u8> {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
        .into_bytes()
}

/// POSTs `body` to `s`'s Slack interactivity endpoint, signed with `secret` at `ts`: the status
/// and the answer.
pub async fn post_slack(s: &HttpServer, body: Vec<u8>, content_type: &str, secret: &str, ts: i64) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/slack/interactivity", s.port()))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", slack_signature(secret, ts, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A Slack message's buttons: action id → value (or URL).
pub fn buttons(message: &Value) -> std::collections::BTreeMap<String, String> {
    message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap().clone())
        .map(|e| {
            let v = e["value"].as_str().or(e["url"].as_str()).unwrap_or_default();
            (e["action_id"].as_str().unwrap().to_string(), v.to_string())
        })
        .collect()
}
