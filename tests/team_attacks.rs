//! Red team of team approvals (issue 21), against the real `pgwarden serve --http`, a real Postgres
//! and a local Slack stand-in: one person must not pass for two (a requester approving their own
//! call, or one reviewer counting twice toward `min_approvals`) because two surfaces spell their
//! principal differently; garbage sent to the decision endpoints is refused clearly and the server
//! stays up; replayed decisions change nothing.

mod common;

use common::{
    Era, OWNER, TestDb, TestServer,
    http::HttpServer,
    socket_dsn,
    standin::StandIn,
    team::{
        Api, SLACK_BOT as BOT, SLACK_SIGNING as SIGNING, Team, awaited, buttons, pending, post_slack, slack_form,
        team_policy,
    },
};
use rmcp::{Peer, RoleClient};
use serde_json::{Value, json};

const SETUP: &str = "CREATE TABLE orders (id int PRIMARY KEY, status text);
INSERT INTO orders VALUES (1, 'open'), (2, 'open');";

/// Changes wait for `min` dbas other than the requester, announced in Slack.
fn policy(min: u32) -> String {
    team_policy(&format!("min_approvals = {min}\nnotify = [\"slack:#db-approvals\"]"))
}

/// The Slack app at the stand-in `api`: every user decides as their confirmed e-mail address
/// (which pgwarden lower-cases), and those addresses are dbas.
fn slack_config(api: &str) -> String {
    common::team::slack_config(
        api,
        "[slack.groups]\ndba = [\"alice@example.com\", \"bob@example.com\", \"carol@example.com\"]\n",
    )
}

/// Slack's `users.info` for alice, bob and carol: confirmed e-mail addresses, as people type them.
fn slack_users() -> Value {
    let user = |id: &str, email: &str| json!({ "id": id, "name": id.to_lowercase(), "is_email_confirmed": true, "profile": { "email": email } });
    json!({
        "U0ALICE": user("U0ALICE", "Alice@Example.com"),
        "U0BOB": user("U0BOB", "Bob@Example.com"),
        "U0CAROL": user("U0CAROL", "carol@example.com"),
    })
}

/// A directory with the Slack secrets and a token file whose principals are e-mail addresses
/// spelled as the identity provider (or the operator) spells them: `Alice@Example.com`.
fn team() -> Team {
    let dba: &[&str] = &["dba"];
    let team = Team::new(
        "pgw-team-attacks-",
        &[
            ("Alice@Example.com", dba),
            ("Bob@Example.com", dba),
            ("carol@example.com", dba),
        ],
    );
    team.slack_secrets();
    team
}

async fn start(db: &TestDb, team: &Team, policy: &str, slack: &StandIn, state: Option<&str>) -> HttpServer {
    let mut builder = TestServer::builder().database(db).policy(policy);
    if let Some(url) = state {
        builder = builder.args(["--state-url", url]);
    }
    team.serve(builder, &slack_config(&slack.url)).await
}

async fn await_(alice: &Peer<RoleClient>, id: &str) -> Value {
    awaited(alice, id, 0).await
}

/// POSTs `body` to the interactivity endpoint, signed with the app's secret now.
async fn to_slack_raw(s: &HttpServer, body: Vec<u8>, content_type: &str) -> (u16, String) {
    post_slack(s, body, content_type, SIGNING, chrono::Utc::now().timestamp()).await
}

async fn to_slack(s: &HttpServer, payload: &Value) -> (u16, String) {
    to_slack_raw(s, slack_form(payload), "application/x-www-form-urlencoded").await
}

fn click(user: &str, action: &str, value: &str, respond: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": { "id": user, "team_id": "T0TEAM" },
        "team": { "id": "T0TEAM" },
        "trigger_id": format!("trigger-{user}"),
        "response_url": respond,
        "actions": [{ "type": "button", "action_id": action, "value": value }],
    })
}

/// The posted message's `approve` button value.
async fn approve_value(slack: &StandIn) -> String {
    let m = slack.nth(1, "/api/chat.postMessage", |_| true).await.json();
    buttons(&m)["approve"].clone()
}

/// Found by the red team: the token (or OpenID `email` claim) spells alice `Alice@Example.com`,
/// Slack's lookup lower-cases her address to `alice@example.com`, and "nobody approves their own
/// request" compared the two byte for byte — so alice approved her own change in Slack.
#[tokio::test]
async fn a_requester_cannot_approve_her_own_call_in_slack_under_another_spelling_of_her_address() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let slack = StandIn::slack(BOT, slack_users()).await;
    let s = start(&db, &team, &policy(1), &slack, None).await;
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let id = pending(&alice, "UPDATE orders SET status = 'shipped' WHERE id = 1", None).await;
    let value = approve_value(&slack).await;

    let respond = format!("{}/respond/alice", slack.url);
    let (status, body) = to_slack(&s, &click("U0ALICE", "approve", &value, &respond)).await;
    assert_eq!(status, 200, "{body}");
    let told = slack.nth(1, "/respond/alice", |_| true).await.json();
    let told = told["text"].as_str().unwrap_or_default().to_string();
    assert!(
        told.contains("nobody approves their own request"),
        "alice approved her own call through Slack: {told}"
    );
    assert_ne!(await_(&alice, &id).await["executed"], json!(true));
    assert_eq!(
        db.column::<String>("SELECT status FROM orders WHERE id = 1").await,
        ["open"]
    );
    // Bob still may.
    let (status, body) = Api::of(&s).approve(&team.bob, &id).await;
    assert_eq!(status, 200, "{body}");
}

/// Found by the red team: bob approves through the API as `Bob@Example.com` and again in Slack as
/// `bob@example.com`; `min_approvals = 2` counted him twice.
#[tokio::test]
async fn one_reviewer_does_not_count_twice_through_the_api_and_slack() {
    let db = TestDb::new(SETUP).await;
    let state = TestDb::create_for_setup("").await;
    let state_url = socket_dsn(OWNER, &state.name);
    let team = team();
    let slack = StandIn::slack(BOT, slack_users()).await;
    let s = start(&db, &team, &policy(2), &slack, Some(&state_url)).await;
    let api = Api::of(&s);
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let id = pending(&alice, "UPDATE orders SET status = 'shipped' WHERE id = 1", None).await;
    let value = approve_value(&slack).await;

    let (status, body) = api.approve(&team.bob, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "pending", "{body}");

    let respond = format!("{}/respond/bob", slack.url);
    let (status, body) = to_slack(&s, &click("U0BOB", "approve", &value, &respond)).await;
    assert_eq!(status, 200, "{body}");
    let told = slack.nth(1, "/respond/bob", |_| true).await.json();
    let told = told["text"].as_str().unwrap_or_default().to_string();
    assert!(told.contains("already approved"), "bob counted twice: {told}");
    let (_, shown) = api.show(&team.carol, &id).await;
    assert_eq!(shown["state"], "pending", "{shown}");
    assert_eq!(shown["votes"].as_array().map(Vec::len), Some(1), "{shown}");

    // Carol is the second person.
    let (status, body) = api.approve(&team.carol, &id).await;
    assert_eq!((status, body["state"].clone()), (200, json!("approved")), "{body}");
}

/// Garbage to the decision endpoints: each answered with a clear 4xx, nothing decided, the server
/// still serving; a decision replayed, or carrying another approval's hash, changes nothing.
#[tokio::test]
async fn garbage_and_replayed_decisions_are_refused_clearly_and_change_nothing() {
    let db = TestDb::new(SETUP).await;
    let state = TestDb::create_for_setup("").await;
    let state_url = socket_dsn(OWNER, &state.name);
    let team = team();
    let slack = StandIn::slack(BOT, slack_users()).await;
    let s = start(&db, &team, &policy(1), &slack, Some(&state_url)).await;
    let api = Api::of(&s);
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let a = pending(&alice, "UPDATE orders SET status = 'shipped' WHERE id = 1", None).await;
    let b = pending(&alice, "UPDATE orders SET status = 'held' WHERE id = 2", None).await;
    let (_, shown_b) = api.show(&team.bob, &b).await;

    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("not JSON", b"{{{{".to_vec()),
        ("a JSON string", b"\"approve\"".to_vec()),
        (
            "deep nesting",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        ),
        (
            "100 KiB",
            format!(
                "{{\"decision\":\"approve\",\"action_hash\":\"{}\"}}",
                "a".repeat(100_000)
            )
            .into_bytes(),
        ),
        ("unknown decision", br#"{"decision":"yes","action_hash":"x"}"#.to_vec()),
        ("missing hash", br#"{"decision":"approve"}"#.to_vec()),
        (
            "extra field",
            br#"{"decision":"approve","action_hash":"x","by":"bob"}"#.to_vec(),
        ),
        (
            "negative rows",
            br#"{"decision":"approve","action_hash":"x","max_rows_affected":-1}"#.to_vec(),
        ),
        (
            "invalid UTF-8",
            b"{\"decision\":\"approve\",\"action_hash\":\"\xff\xfe\"}".to_vec(),
        ),
    ];
    for (what, body) in bodies {
        let big = body.len() > 64 * 1024;
        let sent = api
            .http
            .post(format!("{}/approvals/{a}/decision", api.base))
            .bearer_auth(&team.bob)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let r = match sent {
            Ok(r) => r,
            // Past the body limit the server may answer before the client has sent it all, and
            // close the connection: the client then sees the reset, not the answer.
            Err(e) if big => {
                eprintln!("{what}: {e}");
                continue;
            }
            Err(e) => panic!("{what}: {e}"),
        };
        let (status, text) = (r.status().as_u16(), r.text().await.unwrap_or_default());
        assert!((400..500).contains(&status), "{what}: {status} {text}");
        assert!(text.contains("error"), "{what}: {text}");
    }
    // Odd ids: SQL, unicode, a NUL, very long.
    for id in ["x' OR '1'='1", "apr_%E2%80%AE", "apr_%00", &"a".repeat(5000)] {
        let (status, text) = api
            .post_raw(
                &team.bob,
                id,
                br#"{"decision":"approve","action_hash":"x"}"#.to_vec(),
                "application/json",
            )
            .await;
        assert_eq!(status, 404, "{id}: {text}");
    }
    // Another approval's hash, then the real decision and its replay.
    let body = json!({ "decision": "approve", "action_hash": shown_b["action_hash"] });
    let (status, answer) = api.decide(&team.bob, &a, body).await;
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = api.approve(&team.bob, &a).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = api.approve(&team.bob, &a).await;
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = api.approve(&team.carol, &a).await;
    assert_eq!(status, 409, "{answer}");

    // Slack: signed garbage.
    for (what, body, ty) in [
        ("empty", vec![], "application/x-www-form-urlencoded"),
        ("no payload", b"a=b".to_vec(), "application/x-www-form-urlencoded"),
        (
            "payload not JSON",
            b"payload=%7B%7B".to_vec(),
            "application/x-www-form-urlencoded",
        ),
        (
            "payload not an object",
            b"payload=42".to_vec(),
            "application/x-www-form-urlencoded",
        ),
        ("JSON body", br#"{"type":"block_actions"}"#.to_vec(), "application/json"),
    ] {
        let (status, text) = to_slack_raw(&s, body, ty).await;
        assert!(status < 500, "{what}: {status} {text}");
    }
    for payload in [
        json!({ "type": "block_actions" }),
        json!({ "type": "block_actions", "actions": [] }),
        json!({ "type": "block_actions", "user": { "id": "U0BOB" }, "team": { "id": "T0TEAM" },
                "actions": [{ "action_id": "approve", "value": "garbage" }] }),
        json!({ "type": "block_actions", "user": { "id": "U0BOB" }, "team": { "id": "T0TEAM" },
                "actions": [{ "action_id": "approve", "value": format!("{b}|{}", "0".repeat(64)) }] }),
        json!({ "type": "block_actions", "user": { "id": "U0BOB" }, "team": { "id": "T0TEAM" },
                "actions": [{ "action_id": "approve", "value": "apr_\u{0}|x" }] }),
        json!({ "type": "view_submission", "user": { "id": "U0BOB" }, "view": { "callback_id": "pgwarden_deny", "private_metadata": "{" } }),
        json!({ "type": "view_submission", "user": { "id": "U0BOB" }, "view": { "callback_id": "pgwarden_deny",
                "private_metadata": json!({ "id": b, "hash": "nope" }).to_string() } }),
    ] {
        let (status, text) = to_slack(&s, &payload).await;
        assert!(status < 500, "{payload}: {status} {text}");
    }
    // Nothing of that decided b; the server still serves.
    let (status, shown) = api.show(&team.bob, &b).await;
    assert_eq!((status, shown["state"].clone()), (200, json!("pending")), "{shown}");
    assert_eq!(await_(&alice, &a).await["executed"], json!(true));
    // No secret in the log.
    let log = s.raw.stderr();
    for secret in [SIGNING, BOT, &team.bob, &team.alice] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }
}

/// Unsigned requests to the Slack endpoint — anyone on the network can send one — naming no
/// approval are refused and recorded, but at most one record a second, with a count of the others:
/// a burst cannot flood the shared audit chain (it added one record per request, ~470/s, before).
/// One naming a real approval is always recorded (tests/notify.rs).
#[tokio::test]
async fn a_burst_of_forged_slack_requests_is_refused_and_recorded_without_flooding_the_trail() {
    let db = TestDb::new(SETUP).await;
    let state = TestDb::create_for_setup("").await;
    let state_url = socket_dsn(OWNER, &state.name);
    let team = team();
    let slack = StandIn::slack(BOT, slack_users()).await;
    let s = start(&db, &team, &policy(1), &slack, Some(&state_url)).await;
    let count = async || {
        let c = state.owner_client().await;
        let n: i64 = c
            .query_one("SELECT count(*) FROM pgwarden.audit", &[])
            .await
            .unwrap()
            .get(0);
        n
    };
    let before = count().await;
    let http = reqwest::Client::new();
    let n = 300;
    let started = std::time::Instant::now();
    let sends = (0..n).map(|i| {
        let http = http.clone();
        let url = format!("http://127.0.0.1:{}/slack/interactivity", s.port());
        async move {
            http.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", "1")
                .header("x-slack-signature", "v0=00")
                .body(format!("payload=%7B%22user%22%3A%7B%22id%22%3A%22U{i}%22%7D%7D"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let answers = futures_util::future::join_all(sends).await;
    let took = started.elapsed();
    assert!(answers.iter().all(|a| matches!(a, Ok(401))), "{answers:?}");
    let added = count().await - before;
    eprintln!(
        "FLOOD: {n} unsigned Slack requests in {took:?} added {added} audit records ({:.0} records/s)",
        added as f64 / took.as_secs_f64()
    );
    assert!(
        added >= 1 && (added as f64) <= took.as_secs_f64() + 2.0,
        "{added} records for {n} forged requests in {took:?}"
    );
    // The next one, a second later, is recorded with the count of those left out.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = http
        .post(format!("http://127.0.0.1:{}/slack/interactivity", s.port()))
        .header("x-slack-request-timestamp", "1")
        .header("x-slack-signature", "v0=00")
        .body("payload=%7B%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let c = state.owner_client().await;
    let last: String = c
        .query_one("SELECT line FROM pgwarden.audit ORDER BY seq DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        last.contains("more unverified requests refused since the last such record"),
        "{last}"
    );
    let (status, _) = Api::of(&s).show(&team.bob, "apr_none").await;
    assert_eq!(status, 404);
}
