//! Notifications that carry the decision (issue 21): the real `pgwarden serve --http` on a real
//! Postgres tells local stand-ins for Slack, a Teams workflow and a webhook receiver about Alice's
//! pending change, and the stand-ins check what it sends — the bot token, the Block Kit packet,
//! the Standard Webhooks signature, the Adaptive Card. Bob decides with a Slack click signed the
//! way Slack signs it; forged, stale, unmapped, outside and self-approving clicks are refused and
//! audited.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{
    Era, TestDb, TestServer,
    http::HttpServer,
    standin::{Seen, StandIn},
    team::{
        Api, SLACK_BOT as BOT, SLACK_SIGNING as SIGNING, Team, await_call, buttons, post_slack, slack_form, statuses,
        team_policy,
    },
    text,
};
use pgwarden::audit::ApprovalRecord;
use rmcp::{Peer, RoleClient};
use serde_json::{Value, json};

const SETUP: &str = "CREATE TABLE orders (id int PRIMARY KEY, status text);
INSERT INTO orders VALUES (1, 'open'), (2, 'open');";

/// A Standard Webhooks secret: `whsec_` and 32 random bytes.
const WHSEC: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Changes wait for a dba other than the requester, and are announced on `{notify}`.
fn policy(notify: &str) -> String {
    team_policy(&format!("notify = [{notify}]"))
}

/// Tokens for alice and bob, both dbas; the secrets the HTTP config names.
fn team() -> Team {
    let team = Team::new("pgw-notify-", &[("alice", &["dba"]), ("bob", &["dba"])]);
    team.slack_secrets();
    team.secret("ops.whsec", WHSEC);
    team
}

/// The Slack app, talking to the stand-in at `api`: bob and alice are dbas, carol is mapped but
/// no dba, anyone else is looked up by e-mail (and dave@example.com is a dba).
fn slack_config(api: &str) -> String {
    common::team::slack_config(
        api,
        r#"[slack.users]
U0BOB = { principal = "bob", groups = ["dba"] }
U0ALICE = { principal = "alice", groups = ["dba"] }
U0CAROL = "carol"
[slack.groups]
dba = ["dave@example.com"]
"#,
    )
}

async fn start(db: &TestDb, team: &Team, policy: &str, config: &str) -> HttpServer {
    team.serve(TestServer::builder().database(db).policy(policy), config)
        .await
}

/// Alice's change, pending: its approval id.
async fn pending(alice: &Peer<RoleClient>, sql: &str) -> String {
    common::team::pending(alice, sql, Some("ship the order")).await
}

/// `pgwarden_await` by alice: whether it failed, its structured result, its text.
async fn await_(alice: &Peer<RoleClient>, id: &str, wait: u64) -> (bool, Value, String) {
    let r = await_call(alice, id, wait).await;
    (
        r.is_error == Some(true),
        r.structured_content.clone().unwrap_or_default(),
        text(&r),
    )
}

/// A click on a message button by Slack user `user`, as Slack sends it.
fn button(user: &str, action: &str, value: &str, response_url: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": { "id": user, "username": user.to_lowercase(), "team_id": "T0TEAM" },
        "team": { "id": "T0TEAM", "domain": "example" },
        "api_app_id": "A0PGWARDEN",
        "trigger_id": format!("trigger-{user}"),
        "response_url": response_url,
        "container": { "type": "message", "message_ts": "1700000000.000001", "channel_id": "C0APPROVALS" },
        "channel": { "id": "C0APPROVALS", "name": "db-approvals" },
        "actions": [{ "type": "button", "action_id": action, "block_id": "pgwarden_decision", "value": value }],
    })
}

/// POSTs `payload` to pgwarden's interactivity endpoint, signed with `secret` at `ts`.
async fn to_slack_endpoint(s: &HttpServer, payload: &Value, secret: &str, ts: i64) -> (u16, String) {
    post_slack(s, slack_form(payload), "application/x-www-form-urlencoded", secret, ts).await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The approval records the server's trail holds.
fn approval_records(s: &HttpServer) -> Vec<ApprovalRecord> {
    s.raw.audit_records().into_iter().filter_map(|r| r.approval).collect()
}

#[tokio::test]
async fn bob_approves_alices_change_with_a_signed_slack_click_and_the_message_shows_the_outcome() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let slack = StandIn::slack(BOT, json!({})).await;
    let s = start(
        &db,
        &team,
        &policy(r##""slack:#db-approvals""##),
        &slack_config(&slack.url),
    )
    .await;
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let sql = "UPDATE orders SET status = 'shipped' WHERE id = 1";
    let id = pending(&alice, sql).await;

    // The packet, posted with the bot token to the rule's channel.
    let post = slack.nth(1, "/api/chat.postMessage", |_| true).await;
    assert_eq!(post.header("authorization"), Some(format!("Bearer {BOT}").as_str()));
    let message = post.json();
    assert_eq!(message["channel"], "#db-approvals");
    let shown = message["blocks"].to_string();
    for part in [
        "UPDATE orders",
        "status = 'shipped'",
        "alice",
        "ship the order",
        "team-changes",
        "group:dba",
    ] {
        assert!(shown.contains(part), "`{part}` is not in the message: {shown}");
    }
    let b = buttons(&message);
    assert_eq!(
        b.keys().collect::<Vec<_>>(),
        ["approve", "deny", "dry_run"],
        "{message}"
    );
    let value = b["approve"].clone();
    assert!(value.starts_with(&format!("{id}|")), "{value}");
    assert!(
        !message["text"].as_str().unwrap().contains('<'),
        "the notification text is escaped"
    );

    // Bob's click, signed as Slack signs it: approved, and Bob is told so.
    let clicked = Instant::now();
    let respond = format!("{}/respond/bob", slack.url);
    let (status, body) = to_slack_endpoint(&s, &button("U0BOB", "approve", &value, &respond), SIGNING, now()).await;
    assert_eq!(status, 200, "{body}");
    let told = slack.nth(1, "/respond/bob", |_| true).await.json();
    assert_eq!(told["response_type"], "ephemeral");
    assert!(told["text"].as_str().unwrap().contains("approved"), "{told}");

    // Alice's await runs it, once.
    let (failed, out, said) = await_(&alice, &id, 10).await;
    assert!(!failed, "{said}");
    assert_eq!(out["executed"], json!(true), "{out}");
    let executed = clicked.elapsed();
    assert_eq!(statuses(&db).await, ["shipped", "open"]);
    let (_, again, said) = await_(&alice, &id, 0).await;
    assert_ne!(again["executed"], json!(true), "ran twice: {said}");
    assert_eq!(statuses(&db).await, ["shipped", "open"]);

    // The message now says how it ended, and has no buttons left to press.
    let is_final = |r: &Seen| r.json()["blocks"].to_string().contains("ran — decided by bob");
    let update = slack.nth(1, "/api/chat.update", is_final).await;
    let updated = clicked.elapsed();
    let m = update.json();
    assert_eq!(update.header("authorization"), Some(format!("Bearer {BOT}").as_str()));
    assert_eq!(
        (m["channel"].as_str(), m["ts"].as_str()),
        (Some("C0APPROVALS"), Some("1700000000.000001"))
    );
    assert!(buttons(&m).is_empty(), "{m}");
    assert!(m["blocks"].to_string().contains("verified: slack T0TEAM"), "{m}");

    // The trail names Bob, verified through Slack.
    let decided = approval_records(&s)
        .into_iter()
        .find(|a| a.channel == "slack" && a.answer == "approved")
        .expect("the decision's record");
    assert_eq!(decided.approval_id.as_deref(), Some(id.as_str()));
    assert!(
        decided
            .decided_by
            .as_deref()
            .unwrap()
            .starts_with("bob (Slack U0BOB) (verified: slack T0TEAM)"),
        "{decided:?}"
    );
    eprintln!("measured: Slack click → executed by await {executed:?}; → message updated {updated:?}");
    assert!(!s.raw.stderr().contains(SIGNING) && !s.raw.stderr().contains(BOT));
}

#[tokio::test]
async fn forged_stale_unmapped_outside_and_self_approving_slack_clicks_are_refused_and_audited() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let users = json!({
        "U0DAVE": { "id": "U0DAVE", "name": "dave", "is_email_confirmed": true, "profile": { "email": "Dave@Example.com" } },
    });
    let slack = StandIn::slack(BOT, users).await;
    let s = start(
        &db,
        &team,
        &policy(r##""slack:#db-approvals""##),
        &slack_config(&slack.url),
    )
    .await;
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let id = pending(&alice, "UPDATE orders SET status = 'held' WHERE id = 2").await;
    let value = buttons(&slack.nth(1, "/api/chat.postMessage", |_| true).await.json())["approve"].clone();
    let respond = |who: &str| format!("{}/respond/{who}", slack.url);
    let click = |user: &str| button(user, "approve", &value, &respond(user));

    // Not signed with the app's secret; signed, but six minutes ago.
    let (status, body) = to_slack_endpoint(&s, &click("U0BOB"), "not-the-signing-secret", now()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("signature does not match"), "{body}");
    let (status, body) = to_slack_endpoint(&s, &click("U0BOB"), SIGNING, now() - 360).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("more than 5 minutes"), "{body}");
    // Signed by Slack, but: carol is no dba, alice asked for it herself, eve is nobody pgwarden knows.
    for (user, expected) in [
        ("U0CAROL", "not among the reviewers"),
        ("U0ALICE", "nobody approves their own request"),
        ("U0EVE", "could not be looked up"),
    ] {
        let (status, body) = to_slack_endpoint(&s, &click(user), SIGNING, now()).await;
        assert_eq!(status, 200, "{user}: {body}");
        let told = slack.nth(1, &format!("/respond/{user}"), |_| true).await.json();
        let told = told["text"].as_str().unwrap();
        assert!(told.starts_with("Refused") && told.contains(expected), "{user}: {told}");
    }
    // Nothing ran, and nothing was decided.
    let (_, out, said) = await_(&alice, &id, 0).await;
    assert!(said.starts_with("Still waiting for a person's decision"), "{said}");
    assert_ne!(out["executed"], json!(true));
    assert_eq!(statuses(&db).await, ["open", "open"]);
    assert!(slack.to("/respond/U0BOB").is_empty(), "a forged request got an answer");

    // Each is in the trail, with why.
    let refused: Vec<ApprovalRecord> = approval_records(&s)
        .into_iter()
        .filter(|a| a.answer == "refused" && a.channel == "slack")
        .collect();
    let why = |part: &str| {
        refused
            .iter()
            .find(|a| a.reason.as_deref().unwrap_or_default().contains(part))
            .unwrap_or_else(|| panic!("no refusal saying `{part}` in {refused:#?}"))
    };
    assert!(
        why("signature does not match")
            .decided_by
            .as_deref()
            .unwrap()
            .contains("unverified")
    );
    why("more than 5 minutes");
    assert!(
        why("not among the reviewers")
            .decided_by
            .as_deref()
            .unwrap()
            .starts_with("carol")
    );
    assert!(
        why("nobody approves their own")
            .decided_by
            .as_deref()
            .unwrap()
            .starts_with("alice")
    );
    assert!(
        why("could not be looked up")
            .decided_by
            .as_deref()
            .unwrap()
            .contains("U0EVE")
    );
    assert_eq!(refused.len(), 5, "{refused:#?}");
    assert!(refused.iter().all(|a| a.approval_id.as_deref() == Some(id.as_str())));

    // Dave, a dba by his e-mail, denies with a reason: the dialog opens, he submits it.
    let deny = buttons(&slack.nth(1, "/api/chat.postMessage", |_| true).await.json())["deny"].clone();
    let (status, _) = to_slack_endpoint(&s, &button("U0DAVE", "deny", &deny, &respond("U0DAVE")), SIGNING, now()).await;
    assert_eq!(status, 200);
    let opened = slack.nth(1, "/api/views.open", |_| true).await.json();
    assert_eq!(opened["trigger_id"], "trigger-U0DAVE");
    let view = &opened["view"];
    let submitted = json!({
        "type": "view_submission",
        "user": { "id": "U0DAVE", "team_id": "T0TEAM" },
        "team": { "id": "T0TEAM" },
        "view": {
            "callback_id": view["callback_id"],
            "private_metadata": view["private_metadata"],
            "state": { "values": { "reason": { "reason": { "type": "plain_text_input", "value": "not during the sale" } } } },
        },
    });
    let (status, body) = to_slack_endpoint(&s, &submitted, SIGNING, now()).await;
    assert_eq!((status, body.as_str()), (200, r#"{"response_action":"clear"}"#));
    let (_, _, said) = await_(&alice, &id, 5).await;
    assert!(
        said.contains("DENIED") && said.contains("not during the sale"),
        "{said}"
    );
    assert_eq!(statuses(&db).await, ["open", "open"]);
    let denied = approval_records(&s)
        .into_iter()
        .find(|a| a.answer == "denied")
        .expect("the denial's record");
    assert!(
        denied
            .decided_by
            .unwrap()
            .starts_with("dave@example.com (Slack U0DAVE)"),
        "mapped through users.info"
    );
    let update = slack
        .nth(1, "/api/chat.update", |r| r.body.contains("not during the sale"))
        .await;
    assert!(buttons(&update.json()).is_empty());
}

/// Checks a Standard Webhooks request as a receiver must: the signature over
/// `{webhook-id}.{webhook-timestamp}.{body}` with the secret's key, and a fresh timestamp.
fn verify_webhook(r: &Seen) -> Value {
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let key = base64::engine::general_purpose::STANDARD
        .decode(WHSEC.strip_prefix("whsec_").unwrap())
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let tag = ring::hmac::sign(&key, format!("{id}.{ts}.{}", r.body).as_bytes());
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()));
    let given = r.header("webhook-signature").expect("webhook-signature");
    assert!(given.split(' ').any(|s| s == expected), "bad signature {given}");
    assert!((now() - ts.parse::<i64>().unwrap()).abs() < 300);
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

#[tokio::test]
async fn webhook_events_are_signed_and_a_failed_delivery_is_retried_with_the_same_id() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    // The receiver fails its first request.
    let hook = StandIn::start(|_, before| {
        if before.is_empty() {
            (500, json!({}))
        } else {
            (200, json!({}))
        }
    })
    .await;
    let config = format!(
        "[webhooks.ops]\nurl = \"{}/hooks/pgwarden\"\nsecret_file = \"ops.whsec\"\nbackoff = \"100ms\"\n",
        hook.url
    );
    let s = start(&db, &team, &policy(r#""webhook:ops""#), &config).await;
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let id = pending(&alice, "UPDATE orders SET status = 'shipped' WHERE id = 1").await;

    let first = hook.nth(1, "/hooks/pgwarden", |_| true).await;
    let retried = hook.nth(2, "/hooks/pgwarden", |_| true).await;
    assert_eq!(
        first.header("webhook-id"),
        retried.header("webhook-id"),
        "a retry keeps its id"
    );
    assert_eq!(first.body, retried.body);
    let created = verify_webhook(&retried);
    assert_eq!(created["type"], "approval.created");
    assert_eq!(created["data"]["id"], id.as_str());
    assert_eq!(created["data"]["state"], "pending");
    assert!(
        created["data"]["packet"]["sql"]
            .as_str()
            .unwrap()
            .contains("UPDATE orders")
    );

    // Bob approves through the API; alice's await runs it.
    let api = Api::of(&s);
    let hash = created["data"]["action_hash"].as_str().unwrap();
    let (status, answer) = api
        .decide(&team.bob, &id, json!({ "decision": "approve", "action_hash": hash }))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (failed, out, said) = await_(&alice, &id, 10).await;
    assert!(!failed && out["executed"] == json!(true), "{said}");

    let of = |kind: &'static str| move |r: &Seen| r.body.contains(&format!("\"type\":\"approval.{kind}\""));
    let decided = verify_webhook(&hook.nth(1, "/hooks/pgwarden", of("decided")).await);
    assert_eq!(decided["data"]["state"], "approved");
    assert!(
        decided["data"]["changed_by"].as_str().unwrap().starts_with("bob"),
        "{decided}"
    );
    let executed = verify_webhook(&hook.nth(1, "/hooks/pgwarden", of("executed")).await);
    assert_eq!(executed["data"]["state"], "done");
    let ids: std::collections::BTreeSet<_> = hook
        .to("/hooks/pgwarden")
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "created (twice), decided, executed");

    // The delivery record, as the approvals API shows it.
    let record = common::eventually(Duration::from_secs(10), "the delivery records", async || {
        let (_, a) = api.show(&team.bob, &id).await;
        let r = a["notifications"]["webhook:ops"].clone();
        (r["approval.executed"]["status"] == "delivered").then_some(r)
    })
    .await;
    let created = &record["approval.created"];
    assert_eq!(created["attempts"], 2, "{record}");
    assert_eq!(created["status"], "delivered");
    assert_eq!(created["webhook_id"].as_str(), first.header("webhook-id"));
    assert!(created["delivered_at"].is_string());
    assert_eq!(record["approval.decided"]["attempts"], 1);
    assert!(
        s.raw
            .stderr()
            .contains("webhook:ops: attempt 1 failed (answered HTTP 500)")
    );
    assert!(
        !s.raw.stderr().contains("C2FVsBQIhrscChlQIMV"),
        "the secret stays out of the logs"
    );
}

#[tokio::test]
async fn teams_gets_an_adaptive_card_with_the_packet_and_a_link_to_the_review_app() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let teams = StandIn::start(|_, _| (202, json!({}))).await;
    // The workflow's URL is a secret, kept in a file.
    let secret_path = "/workflows/8b7e1f0c/triggers/manual/paths/invoke?sig=s3cr3t-sig";
    std::fs::write(
        team.dir.path().join("teams-dba.url"),
        format!("{}{secret_path}\n", teams.url),
    )
    .unwrap();
    let s = start(
        &db,
        &team,
        &policy(r#""teams:dba""#),
        "[teams.dba]\nurl_file = \"teams-dba.url\"\n",
    )
    .await;
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let sql = "UPDATE orders SET status = 'shipped' WHERE id = 1";
    let id = pending(&alice, sql).await;

    let posted = teams
        .nth(1, "/workflows/8b7e1f0c/triggers/manual/paths/invoke", |_| true)
        .await;
    assert_eq!(posted.path, secret_path);
    let message = posted.json();
    assert_eq!(message["type"], "message");
    let attachment = &message["attachments"][0];
    assert_eq!(attachment["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &attachment["content"];
    assert_eq!(
        (card["type"].as_str(), card["version"].as_str()),
        (Some("AdaptiveCard"), Some("1.4"))
    );
    let shown = card["body"].to_string();
    for part in [
        "UPDATE orders",
        "status = 'shipped'",
        "alice",
        "ship the order",
        "team-changes",
    ] {
        assert!(shown.contains(part), "`{part}` is not on the card: {shown}");
    }
    let open = &card["actions"][0];
    assert_eq!(open["type"], "Action.OpenUrl");
    assert_eq!(open["url"], format!("http://127.0.0.1/review/approvals/{id}"));

    // Decided through the API: a second card says so.
    let (status, _) = Api::of(&s)
        .decide_shown(&team.bob, &id, "deny", Some("not today"))
        .await;
    assert_eq!(status, 200);
    let second = teams
        .nth(2, "/workflows/8b7e1f0c/triggers/manual/paths/invoke", |_| true)
        .await;
    let card = second.json()["attachments"][0]["content"]["body"].to_string();
    assert!(card.contains("denied: not today") && card.contains("bob"), "{card}");
    assert!(
        !s.raw.stderr().contains("s3cr3t-sig"),
        "the workflow URL stays out of the logs"
    );
}

/// Two replicas on one state database: the approval is created (and posted to Slack) by one, the
/// click lands on the other, and whichever sees a change updates the message the first posted.
#[tokio::test]
async fn a_slack_click_on_one_replica_decides_what_another_posted_and_both_update_its_message() {
    let db = TestDb::new(SETUP).await;
    // The state database, as tests/replicas.rs makes it: owned by a role the agent is not.
    let state = TestDb::create_for_setup("").await;
    let team = team();
    let slack = StandIn::slack(BOT, json!({})).await;
    let replica = async || {
        let builder = TestServer::builder()
            .database(&db)
            .policy(policy(r##""slack:#db-approvals""##))
            .args([
                "--state-url",
                &common::socket_dsn(common::OWNER, &state.name),
                "--audit-key",
            ])
            .args([team.dir.path().join("audit-signing.key")]);
        team.serve(builder, &slack_config(&slack.url)).await
    };
    let (first, second) = (replica().await, replica().await);
    let alice = first.connect((), &team.alice, Era::Legacy).await;
    let id = pending(&alice, "UPDATE orders SET status = 'shipped' WHERE id = 2").await;
    let post = slack.nth(1, "/api/chat.postMessage", |_| true).await;
    let value = buttons(&post.json())["approve"].clone();

    let clicked = Instant::now();
    let respond = format!("{}/respond/bob", slack.url);
    let (status, body) =
        to_slack_endpoint(&second, &button("U0BOB", "approve", &value, &respond), SIGNING, now()).await;
    assert_eq!(status, 200, "{body}");
    // The second replica updates the first's message with the decision…
    let approved = slack
        .nth(1, "/api/chat.update", |r| r.body.contains("decided by bob"))
        .await
        .json();
    assert_eq!(approved["ts"], "1700000000.000001");
    let (failed, out, said) = await_(&alice, &id, 10).await;
    assert!(!failed && out["executed"] == json!(true), "{said}");
    let executed = clicked.elapsed();
    assert_eq!(statuses(&db).await, ["open", "shipped"]);
    // …and the first, which ran it, says so in the same message.
    let ran = slack
        .nth(1, "/api/chat.update", |r| r.body.contains("ran — decided by bob"))
        .await
        .json();
    assert_eq!(
        (ran["channel"].as_str(), ran["ts"].as_str()),
        (Some("C0APPROVALS"), Some("1700000000.000001"))
    );
    assert_eq!(slack.to("/api/chat.postMessage").len(), 1, "posted once");
    eprintln!("measured: Slack click on one replica → executed by await on the other {executed:?}");
}
