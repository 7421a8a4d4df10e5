//! Approvals for clients without elicitation: a guarded call becomes a pending approval, the person
//! decides in the local review console (played here over real HTTP, as a browser would) or in the
//! MCP Apps card, and `pgwarden_await` runs the stored call exactly once.

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{
    Answer, Console, Era, FakeBrowser, Mcp, Reviewer, TestDb, TestServer, edit_policy, eventually, http, session,
    session_in, text,
};
use rmcp::{
    ClientHandler,
    model::{
        ClientCapabilities, ClientConfig, ElicitResult, ElicitationAction, Implementation, ProtocolVersion,
        ReadResourceRequestParams,
    },
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SETUP: &str = "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL);
                     INSERT INTO counters VALUES (1, 0), (2, 0), (3, 0);";
const BUMP_ONE: &str = "UPDATE counters SET n = n + 1 WHERE id = 1";
const BUMP_ALL: &str = "UPDATE counters SET n = n + 1";

/// Writes need approval; the console is the only channel outside the client; short waits.
const POLICY: &str = r#"
[approval]
wait_budget = "1s"
pending_ttl = "30s"
channels = ["elicitation", "mcp_app", "console"]

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]

[[rule]]
id = "changes-need-approval"
effect = "approve"
categories = ["write", "ddl", "destructive"]
reason = "changes need a person"
"#;

/// A client that declares no elicitation; with `ui`, it declares the MCP Apps extension.
#[derive(Clone, Default)]
struct Host {
    ui: bool,
    /// Progress notifications received: (progress, message).
    progress: Arc<Mutex<Vec<common::Progress>>>,
}

impl Host {
    /// A host that renders MCP Apps.
    fn ui() -> Host {
        Host {
            ui: true,
            ..Host::default()
        }
    }
}

impl ClientHandler for Host {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        if self.ui {
            let mut ext = BTreeMap::new();
            ext.insert(
                "io.modelcontextprotocol/ui".to_string(),
                json!({ "mimeTypes": ["text/html;profile=mcp-app"] })
                    .as_object()
                    .cloned()
                    .unwrap(),
            );
            caps.extensions = Some(ext);
        }
        ClientConfig::new(caps, Implementation::new("pgwarden-test-host", "1.0"))
            .with_protocol_version(ProtocolVersion::V_2025_06_18)
    }

    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _cx: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.progress.lock().unwrap().push((params.progress, params.message));
    }
}

async fn counts(db: &TestDb) -> Vec<i32> {
    db.column("SELECT n FROM counters ORDER BY id").await
}

/// A guarded call that must come back pending; returns its structured content.
async fn pending_call<H: ClientHandler>(mcp: &Mcp<H>, sql: &str) -> Value {
    let r = mcp
        .call("query", json!({ "sql": sql, "intent": "bump the counter" }))
        .await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let s = r.structured_content.clone().expect("structured");
    assert_eq!(s["status"], "pending_approval", "{s}");
    assert_eq!(s["executed"], false);
    let id = s["approval_id"].as_str().unwrap();
    let t = text(&r);
    assert_eq!(
        t,
        s["message"].as_str().unwrap(),
        "the same instructions in content and structuredContent"
    );
    assert!(t.starts_with("NOT EXECUTED"), "{t}");
    assert!(t.contains("You cannot approve it yourself"), "{t}");
    assert!(
        t.contains(&format!("pgwarden_await {{\"approval_id\":\"{id}\"}}")),
        "{t}"
    );
    assert!(t.contains(s["fingerprint"].as_str().unwrap()), "{t}");
    s
}

/// [`pending_call`], for its approval id.
async fn pending_id<H: ClientHandler>(mcp: &Mcp<H>, sql: &str) -> String {
    pending_call(mcp, sql).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn await_call<H: ClientHandler>(mcp: &Mcp<H>, id: &str) -> (Value, bool) {
    let r = mcp.call("pgwarden_await", json!({ "approval_id": id })).await;
    (
        r.structured_content.clone().expect("structured"),
        r.is_error == Some(true),
    )
}

#[tokio::test]
async fn console_approval_runs_the_stored_call_once_and_every_step_is_audited() {
    let db = TestDb::new(SETUP).await;
    let mcp = session(&db, POLICY, Host::default()).await;
    let browser = FakeBrowser::install(&mcp);
    let pending = pending_call(&mcp, BUMP_ONE).await;
    let id = pending["approval_id"].as_str().unwrap().to_string();
    assert_eq!(pending["surfaces"], json!(["console"]));
    assert_eq!(counts(&db).await, [0, 0, 0], "nothing ran");

    // The identical call in the same session gets the same handle (no new window either).
    let again = pending_call(&mcp, BUMP_ONE).await;
    assert_eq!(again["approval_id"], pending["approval_id"]);

    let (port, secret) = browser.login_url().await;
    assert_eq!(mcp.console().addr().await.unwrap().ip().to_string(), "127.0.0.1");
    let console = Console::sign_in(port, &secret).await;
    let listed = console.pending().await;
    let a = &listed["approvals"][0];
    assert_eq!(a["approval_id"], id.as_str());
    assert_eq!(a["state"], "pending");
    assert_eq!(a["fingerprint"], pending["fingerprint"]);
    let sql = a["packet"]["sql"].as_str().unwrap();
    assert!(
        sql.contains("counters") && sql.contains("n + 1") && sql.contains("id = 1"),
        "{sql}"
    );
    assert_eq!(a["packet"]["intent"], "bump the counter");
    assert_eq!(a["packet"]["risk"], "medium");
    assert!(
        a["packet"]["requested_by"]
            .as_str()
            .unwrap()
            .contains("pgwarden-test-host")
    );

    // Still pending: await says so after its budget, and nothing ran.
    let (out, _) = await_call(&mcp, &id).await;
    assert_eq!(
        (out["status"].as_str(), out["timed_out"].as_bool()),
        (Some("pending"), Some(true))
    );
    assert_eq!(counts(&db).await, [0, 0, 0]);

    let r = console.decide(&id, "approve", None, Some("ok by me")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "approved");
    assert_eq!(
        console.decide(&id, "approve", None, None).await.status,
        409,
        "decided once"
    );

    // Several awaits at once: exactly one runs it.
    let results = futures_util::future::join_all((0..5).map(|_| await_call(&mcp, &id))).await;
    let executed: Vec<_> = results.iter().filter(|(o, _)| o["executed"] == true).collect();
    assert_eq!(executed.len(), 1, "{results:?}");
    let (ran, is_error) = executed[0];
    assert!(!is_error);
    assert_eq!(ran["status"], "executed");
    assert_eq!(ran["result"]["change"]["rows_affected"], 1);
    assert_eq!(ran["reviewer_reason"], "ok by me");
    assert_eq!(counts(&db).await, [1, 0, 0], "ran exactly once");
    let (after, _) = await_call(&mcp, &id).await;
    assert_eq!(after["status"], "done", "{after}");
    assert_eq!(counts(&db).await, [1, 0, 0]);

    // The audit trail: every transition, with channel and decider, before its effect.
    let records = mcp.audit_records();
    let transitions: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.event == Some(pgwarden::audit::Event::Approval))
        .map(|r| {
            let a = r.approval.as_ref().unwrap();
            assert_eq!(a.approval_id.as_deref(), Some(id.as_str()));
            (a.answer.clone(), a.channel.clone())
        })
        .collect();
    assert_eq!(
        transitions,
        [
            ("pending".into(), "created".into()),
            ("approved".into(), "console".into()),
            ("executing".into(), "await".into()),
            ("done".into(), "executed".into()),
        ]
    );
    let approved = records
        .iter()
        .find(|r| r.approval.as_ref().is_some_and(|a| a.answer == "approved"))
        .unwrap();
    assert!(
        approved
            .approval
            .as_ref()
            .unwrap()
            .decided_by
            .as_deref()
            .unwrap()
            .contains("local console"),
        "{approved:?}"
    );
    let decision = records
        .iter()
        .find(|r| r.event == Some(pgwarden::audit::Event::Decision))
        .expect("the run's decision record");
    assert_eq!(decision.sql.as_deref(), Some(BUMP_ONE));
    let decision_seq = decision.seq;
    let executing_seq = records
        .iter()
        .find(|r| r.approval.as_ref().is_some_and(|a| a.answer == "executing"))
        .unwrap()
        .seq;
    assert!(
        executing_seq < decision_seq,
        "the claim is recorded before the change runs"
    );

    // The login secret is nowhere the model or the log can see.
    let audit = std::fs::read_to_string(mcp.audit_path()).unwrap();
    assert!(!audit.contains(&secret));
    assert!(!audit.contains(console.cookie.split('=').nth(1).unwrap()));
    for (o, _) in &results {
        assert!(!o.to_string().contains(&secret));
    }
    assert!(!pending.to_string().contains(&secret));
}

#[tokio::test]
async fn deny_dry_run_row_limit_and_expiry_through_the_console() {
    let db = TestDb::new(SETUP).await;
    let policy = edit_policy(POLICY).set(r#"approval.pending_ttl = "3s""#).toml();
    let mcp = session(&db, &policy, Host::default()).await;
    let browser = FakeBrowser::install(&mcp);

    // Deny, with a reason the model receives.
    let id = pending_id(&mcp, BUMP_ONE).await;
    let console = Console::open(&browser).await;
    assert_eq!(
        console.decide(&id, "deny", None, Some("not on a Friday")).await.status,
        200
    );
    let (out, _) = await_call(&mcp, &id).await;
    assert_eq!(out["status"], "denied");
    assert_eq!(out["executed"], false);
    assert_eq!(out["reviewer_reason"], "not on a Friday");
    assert!(out["message"].as_str().unwrap().contains("not on a Friday"));
    assert_eq!(counts(&db).await, [0, 0, 0]);

    // Dry run: runs, reports, rolls back.
    let id = pending_id(&mcp, BUMP_ALL).await;
    assert_eq!(console.decide(&id, "dry_run", None, None).await.status, 200);
    let (out, _) = await_call(&mcp, &id).await;
    assert_eq!(out["status"], "executed");
    assert_eq!(out["result"]["change"]["dry_run"], true);
    assert_eq!(out["result"]["change"]["rows_affected"], 3);
    assert_eq!(counts(&db).await, [0, 0, 0]);

    // Row limit below what it touches: rolled back, reported as a failure.
    let id = pending_id(&mcp, BUMP_ALL).await;
    assert_eq!(console.decide(&id, "approve", Some(2), None).await.status, 200);
    let (out, is_error) = await_call(&mcp, &id).await;
    assert!(is_error, "{out}");
    assert_eq!(out["status"], "failed");
    assert!(out["message"].as_str().unwrap().contains("rolled back"), "{out}");
    assert_eq!(counts(&db).await, [0, 0, 0]);

    // Nobody decides: it expires, and a late approval is refused.
    let id = pending_id(&mcp, BUMP_ONE).await;
    eventually(Duration::from_secs(10), "the approval to expire", async || {
        transitions(&mcp, &id)
            .iter()
            .any(|(state, _, _)| state == "expired")
            .then_some(())
    })
    .await;
    let (out, _) = await_call(&mcp, &id).await;
    assert_eq!(out["status"], "expired", "{out}");
    assert_eq!(console.decide(&id, "approve", None, None).await.status, 409);
    assert_eq!(counts(&db).await, [0, 0, 0]);

    // An unknown handle (e.g. after a restart) fails closed.
    let (out, _) = await_call(&mcp, "apr_0000").await;
    assert_eq!(out["status"], "unknown_or_expired");
}

#[tokio::test]
async fn approved_within_the_wait_the_call_itself_returns_the_result() {
    let db = TestDb::new(SETUP).await;
    let policy = edit_policy(POLICY).set(r#"approval.wait_budget = "20s""#).toml();
    let mcp = Arc::new(session(&db, &policy, Host::default()).await);
    let browser = FakeBrowser::install(&mcp);
    let call = {
        let mcp = mcp.clone();
        tokio::spawn(async move { mcp.call("query", json!({ "sql": BUMP_ONE })).await })
    };
    let console = Console::open(&browser).await;
    let id = eventually(Duration::from_secs(10), "the approval in the console", async || {
        let listed = console.pending().await;
        listed["approvals"][0]["approval_id"].as_str().map(str::to_string)
    })
    .await;
    assert_eq!(console.decide(&id, "approve", None, None).await.status, 200);
    let r = call.await.unwrap();
    let s = r.structured_content.clone().unwrap();
    assert_eq!(s["change"]["rows_affected"], 1, "{s}");
    assert_eq!(counts(&db).await, [1, 0, 0]);
    let (after, _) = await_call(&mcp, &id).await;
    assert_eq!(after["status"], "done");

    // A call cancelled while it waits cancels its approval; the console cannot approve it later.
    let handle = mcp.start_call("query", json!({ "sql": BUMP_ALL })).await;
    let id = eventually(
        Duration::from_secs(10),
        "the second approval in the console",
        async || {
            let listed = console.pending().await;
            listed["approvals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["state"] == "pending")
                .map(|a| a["approval_id"].as_str().unwrap().to_string())
        },
    )
    .await;
    handle.cancel(None).await.unwrap();
    eventually(Duration::from_secs(2), "the approval to be cancelled", async || {
        let state = mcp.pipeline().approvals().store.state(&id).await;
        (state == Some(pgwarden::approval::pending::State::Cancelled)).then_some(())
    })
    .await;
    assert_eq!(console.decide(&id, "approve", None, None).await.status, 409);
    assert_eq!(counts(&db).await, [1, 0, 0]);
}

#[tokio::test]
async fn console_refuses_foreign_hosts_origins_missing_sessions_and_reused_secrets() {
    let db = TestDb::new(SETUP).await;
    let mcp = session(&db, POLICY, Host::default()).await;
    let browser = FakeBrowser::install(&mcp);
    let id = pending_id(&mcp, BUMP_ONE).await;
    let (port, secret) = browser.login_url().await;
    let origin = format!("http://127.0.0.1:{port}");
    let json_ct = ("Content-Type", "application/json");
    let login_body = json!({ "secret": secret }).to_string();

    // DNS rebinding: a foreign Host is refused before anything else, even with the right secret.
    let r = http(port, "GET", "/login", &[("Host", "evil.example")], None).await;
    assert_eq!(r.status, 403);
    let r = http(
        port,
        "POST",
        "/api/login",
        &[("Host", &format!("evil.example:{port}")), ("Origin", &origin), json_ct],
        Some(&login_body),
    )
    .await;
    assert_eq!(r.status, 403);
    // A foreign Origin, and a sign-in without any Origin.
    let r = http(
        port,
        "POST",
        "/api/login",
        &[("Origin", "http://evil.example"), json_ct],
        Some(&login_body),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = http(port, "POST", "/api/login", &[json_ct], Some(&login_body)).await;
    assert_eq!(r.status, 403);
    // No session: 401 for the page and the API.
    for path in ["/", "/api/pending"] {
        assert_eq!(http(port, "GET", path, &[], None).await.status, 401, "{path}");
    }
    let r = http(
        port,
        "GET",
        "/api/pending",
        &[("Cookie", "pgwarden_session=guess")],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    // None of the refusals used up the secret; the real sign-in works once.
    let console = Console::sign_in(port, &secret).await;
    let r = http(
        port,
        "POST",
        "/api/login",
        &[("Origin", &origin), json_ct],
        Some(&login_body),
    )
    .await;
    assert_eq!(r.status, 401, "a used secret is refused");
    // Signed in, but a decision without the CSRF token, or with a foreign Origin, is refused.
    let listed = console.pending().await;
    let hash = listed["approvals"][0]["action_hash"].as_str().unwrap().to_string();
    let body = json!({ "approval_id": id, "action_hash": hash, "decision": "approve" }).to_string();
    let r = http(
        port,
        "POST",
        "/api/decide",
        &[("Cookie", &console.cookie), ("Origin", &origin), json_ct],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let csrf = listed["csrf"].as_str().unwrap();
    let r = http(
        port,
        "POST",
        "/api/decide",
        &[
            ("Cookie", &console.cookie),
            ("Origin", "http://evil.example"),
            json_ct,
            ("X-CSRF-Token", csrf),
        ],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 403);
    // A decision on a different version of the action (stale hash) is refused.
    let stale = json!({ "approval_id": id, "action_hash": "0".repeat(64), "decision": "approve" }).to_string();
    let r = http(
        port,
        "POST",
        "/api/decide",
        &[
            ("Cookie", &console.cookie),
            ("Origin", &origin),
            json_ct,
            ("X-CSRF-Token", csrf),
        ],
        Some(&stale),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        mcp.pipeline().approvals().store.state(&id).await,
        Some(pgwarden::approval::pending::State::Pending)
    );
    // Headers: strict CSP, no framing, no caching, and never CORS.
    for r in [
        http(port, "GET", "/login", &[], None).await,
        http(port, "GET", "/", &[("Cookie", &console.cookie)], None).await,
        http(port, "OPTIONS", "/api/decide", &[("Origin", &origin)], None).await,
    ] {
        let csp = r.headers.get("content-security-policy").expect("CSP");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(r.headers.get("x-frame-options").map(String::as_str), Some("DENY"));
        assert_eq!(r.headers.get("cache-control").map(String::as_str), Some("no-store"));
        assert!(
            !r.headers.keys().any(|k| k.starts_with("access-control-")),
            "{:?}",
            r.headers
        );
    }
    // A console tab polled recently, so a new approval launches no second window.
    let id2 = pending_id(&mcp, BUMP_ALL).await;
    assert_ne!(id2, id);
    assert_eq!(browser.urls().len(), 1, "no second window while a console tab is open");
}

#[tokio::test]
async fn the_card_decides_with_its_nonce_and_only_app_tools_can() {
    let db = TestDb::new(SETUP).await;
    let mcp = session(&db, POLICY, Host::ui()).await;
    let _browser = FakeBrowser::install(&mcp);
    let tools = mcp.client.list_all_tools().await.unwrap();
    let by_name = |n: &str| tools.iter().find(|t| t.name == n).cloned();
    for guarded in ["query", "export", "grant"] {
        let meta = by_name(guarded).unwrap().meta.unwrap();
        assert_eq!(meta.0["ui"]["resourceUri"], "ui://pgwarden/review.html");
    }
    for app in [
        "pgwarden_review_ready",
        "pgwarden_review_status",
        "pgwarden_review_decide",
        "pgwarden_review_open",
    ] {
        let meta = by_name(app)
            .unwrap_or_else(|| panic!("{app} listed for a UI host"))
            .meta
            .unwrap();
        assert_eq!(meta.0["ui"]["visibility"], json!(["app"]), "{app}");
    }
    // The card's resource is static: the same bytes whatever is pending.
    let read = || async {
        let r = mcp
            .client
            .read_resource(ReadResourceRequestParams::new("ui://pgwarden/review.html"))
            .await
            .unwrap();
        serde_json::to_value(&r.contents[0]).unwrap()
    };
    let before = read().await;
    assert_eq!(before["mimeType"], "text/html;profile=mcp-app");

    // A UI host gets the pending result at once, with the nonce only in `_meta`.
    let started = std::time::Instant::now();
    let r = mcp.call("query", json!({ "sql": BUMP_ONE, "intent": "bump" })).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "no wait for a card host"
    );
    let s = r.structured_content.clone().unwrap();
    assert_eq!(s["status"], "pending_approval");
    assert_eq!(s["can_decide_here"], true);
    assert_eq!(s["surfaces"], json!(["mcp_app", "console"]));
    let review = &r.meta.as_ref().expect("_meta").0["dev.pgwarden/review"];
    let nonce = review["nonce"].as_str().unwrap().to_string();
    let hash = review["action_hash"].as_str().unwrap().to_string();
    assert!(
        !text(&r).contains(&nonce) && !s.to_string().contains(&nonce),
        "the nonce is only in _meta"
    );
    assert_eq!(read().await, before);
    let id = s["approval_id"].as_str().unwrap().to_string();
    // The identical call again: the same approval, and the same nonce (the card it shows can decide).
    let again = mcp.call("query", json!({ "sql": BUMP_ONE, "intent": "bump" })).await;
    assert_eq!(again.structured_content.as_ref().unwrap()["approval_id"], id.as_str());
    assert_eq!(
        again.meta.as_ref().unwrap().0["dev.pgwarden/review"]["nonce"],
        nonce.as_str()
    );

    let decide = |nonce: String, hash: String, decision: &str| json!({ "approval_id": id, "nonce": nonce, "action_hash": hash, "decision": decision });
    let e = mcp
        .err(
            "pgwarden_review_decide",
            decide("guess".into(), hash.clone(), "approve"),
        )
        .await;
    assert!(e.contains("proof does not match"), "{e}");
    let e = mcp
        .err(
            "pgwarden_review_decide",
            decide(nonce.clone(), "0".repeat(64), "approve"),
        )
        .await;
    assert!(e.contains("hash mismatch"), "{e}");
    let r = mcp
        .call("pgwarden_review_ready", json!({ "approval_id": id, "nonce": nonce }))
        .await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let st = mcp
        .ok("pgwarden_review_status", json!({ "approval_id": id, "nonce": nonce }))
        .await;
    assert_eq!(st["state"], "pending");
    let st = mcp
        .ok("pgwarden_review_decide", decide(nonce.clone(), hash.clone(), "approve"))
        .await;
    assert_eq!(st["state"], "approved");
    let (out, _) = await_call(&mcp, &id).await;
    assert_eq!(out["status"], "executed");
    assert_eq!(counts(&db).await, [1, 0, 0]);
    let approved = mcp
        .audit_records()
        .into_iter()
        .find(|r| r.approval.as_ref().is_some_and(|a| a.answer == "approved"))
        .unwrap();
    assert_eq!(approved.approval.unwrap().channel, "mcp_app");

    // Critical: the card can only open the console.
    let r = mcp.call("query", json!({ "sql": "DROP TABLE counters" })).await;
    let s = r.structured_content.clone().unwrap();
    assert_eq!(s["can_decide_here"], false, "{s}");
    let review = &r.meta.as_ref().unwrap().0["dev.pgwarden/review"];
    let id = s["approval_id"].as_str().unwrap().to_string();
    let args = json!({
        "approval_id": id, "nonce": review["nonce"], "action_hash": review["action_hash"], "decision": "approve"
    });
    let e = mcp.err("pgwarden_review_decide", args).await;
    assert!(e.contains("local approval"), "{e}");
    assert_eq!(counts(&db).await, [1, 0, 0]);
}

/// No tool the model can see changes an approval: call every model-visible tool, with arguments
/// built to look like a decision, while an approval is pending — it stays pending.
#[tokio::test]
async fn no_model_visible_tool_can_change_an_approval() {
    for ui in [false, true] {
        let db = TestDb::new(SETUP).await;
        let mcp = session(&db, POLICY, Host { ui, ..Host::default() }).await;
        let _browser = FakeBrowser::install(&mcp);
        let r = mcp.call("query", json!({ "sql": BUMP_ONE })).await;
        let id = r.structured_content.clone().unwrap()["approval_id"]
            .as_str()
            .unwrap()
            .to_string();
        let hash = mcp.pipeline().approvals().store.list().await[0].hash.clone();
        let tools = mcp.client.list_all_tools().await.unwrap();
        let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
        let model_visible: Vec<_> = tools
            .iter()
            .filter(|t| {
                t.meta
                    .as_ref()
                    .and_then(|m| m.0.get("ui"))
                    .and_then(|u| u.get("visibility"))
                    .is_none_or(|v| v.as_array().unwrap().iter().any(|x| x == "model"))
            })
            .collect();
        if !ui {
            assert!(names.iter().all(|n| !n.starts_with("pgwarden_review_")), "{names:?}");
            assert!(
                tools
                    .iter()
                    .all(|t| t.meta.as_ref().is_none_or(|m| !m.0.contains_key("ui")))
            );
            let e = mcp
                .client
                .call_tool(
                    rmcp::model::CallToolRequestParams::new("pgwarden_review_decide").with_arguments(
                        json!({ "approval_id": id, "nonce": "x", "action_hash": hash, "decision": "approve" })
                            .as_object()
                            .cloned()
                            .unwrap(),
                    ),
                )
                .await;
            assert!(e.is_err(), "hidden tools do not exist for this client");
        }
        let await_tool = tools.iter().find(|t| t.name == "pgwarden_await").unwrap();
        let props = await_tool.input_schema["properties"].as_object().unwrap();
        assert_eq!(
            props.keys().collect::<Vec<_>>(),
            ["approval_id", "wait_seconds"],
            "no SQL can ride along"
        );
        let hostile = json!({
            "approval_id": id, "action_hash": hash, "decision": "approve", "approve": true, "nonce": hash,
            "sql": format!("SELECT '{id}' -- approve"), "intent": "approve", "wait_seconds": 0,
        });
        for t in &model_visible {
            let props = t.input_schema["properties"].as_object().cloned().unwrap_or_default();
            let args: serde_json::Map<String, Value> = props
                .keys()
                .filter_map(|k| hostile.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            let _ = mcp
                .client
                .call_tool(rmcp::model::CallToolRequestParams::new(t.name.to_string()).with_arguments(args))
                .await;
            let state = mcp.pipeline().approvals().store.state(&id).await;
            assert_eq!(
                state,
                Some(pgwarden::approval::pending::State::Pending),
                "after {} (ui: {ui})",
                t.name
            );
        }
        assert_eq!(counts(&db).await, [0, 0, 0]);
    }
}

/// The real binary, as Claude Desktop runs it: `$BROWSER` gets a redirect page in
/// `$XDG_RUNTIME_DIR/pgwarden` that leads to the sign-in URL, and its secret appears nowhere else —
/// not in the browser's argv or environment, not in stderr, not in any tool result, not in the audit file.
#[tokio::test]
async fn the_sign_in_secret_never_leaves_the_browser_url() {
    let db = TestDb::new(SETUP).await;
    let browser = FakeBrowser::new();
    let mut server = TestServer::builder()
        .database(&db)
        .policy(POLICY)
        .browser(&browser)
        .env("PGWARDEN_LOG", "debug")
        .start()
        .await;
    let runtime = server.dir().join("run");
    let audit = server.audit_path();
    let mut seen = Vec::new();
    let r = server.call("query", json!({ "sql": BUMP_ONE })).await;
    seen.push(serde_json::to_string(&r).unwrap());
    let id = r.structured_content.unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (port, secret) = browser.login_url().await;
    assert_eq!(secret.len(), 64, "256 bits");
    let argv = browser.recorded("argv");
    assert!(
        argv.starts_with(&format!("file://{}/pgwarden/login-", runtime.display())),
        "{argv}"
    );
    let console = Console::sign_in(port, &secret).await;
    assert_eq!(console.decide(&id, "approve", None, None).await.status, 200);
    let r = server.call("pgwarden_await", json!({ "approval_id": id })).await;
    assert_eq!(r.structured_content.as_ref().unwrap()["status"], "executed");
    seen.push(serde_json::to_string(&r).unwrap());
    for tool in ["list_tables", "pgwarden_await"] {
        let args = if tool == "list_tables" {
            json!({})
        } else {
            json!({ "approval_id": id })
        };
        seen.push(serde_json::to_string(&server.call(tool, args).await).unwrap());
    }
    server.close().await;
    let err = server.stderr();
    let cookie = console.cookie.split('=').nth(1).unwrap().to_string();
    assert!(err.contains("opened the review console"), "{err}");
    let browser_env = browser.recorded("env");
    for (what, text) in [
        ("stderr", err),
        ("audit", std::fs::read_to_string(&audit).unwrap()),
        ("the browser's argv", argv),
        ("the browser's environment", browser_env),
    ]
    .into_iter()
    .chain(seen.into_iter().map(|s| ("a tool result", s)))
    {
        assert!(!text.contains(&secret), "the sign-in secret is in {what}");
        assert!(!text.contains(&cookie), "the session cookie is in {what}");
    }
    assert_eq!(counts(&db).await, [1, 0, 0]);
}

#[tokio::test]
async fn five_wrong_sign_in_secrets_revoke_the_link() {
    let db = TestDb::new(SETUP).await;
    let mcp = session(&db, POLICY, Host::default()).await;
    let browser = FakeBrowser::install(&mcp);
    pending_call(&mcp, BUMP_ONE).await;
    let (port, secret) = browser.login_url().await;
    let origin = format!("http://127.0.0.1:{port}");
    let headers = [("Origin", origin.as_str()), ("Content-Type", "application/json")];
    for guess in 0..5 {
        let body = json!({ "secret": format!("{guess:064}") }).to_string();
        assert_eq!(
            http(port, "POST", "/api/login", &headers, Some(&body)).await.status,
            401
        );
    }
    let body = json!({ "secret": secret }).to_string();
    let r = http(port, "POST", "/api/login", &headers, Some(&body)).await;
    assert_eq!(r.status, 401, "revoked after five wrong tries: {}", r.body);
}

/// Issue 16: the sign-in URL was the browser's argv, which every local user can read in
/// `/proc/<pid>/cmdline`; `nobody` signed in with it and approved a DELETE, and the audit named
/// "uid 0 (local console)" as the decider.
#[tokio::test]
async fn the_sign_in_secret_is_in_no_argv_or_environment_only_in_a_private_page() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let db = TestDb::new(SETUP).await;
    let mcp = session(&db, POLICY, Host::default()).await;
    let browser = FakeBrowser::install(&mcp);
    let id = pending_id(&mcp, BUMP_ONE).await;
    let (port, secret) = browser.login_url().await;
    let (argv, env) = (browser.recorded("argv"), browser.recorded("env"));
    assert!(!argv.contains(&secret), "the secret is in the browser's argv: {argv}");
    assert!(!env.contains(&secret), "the secret is in the browser's environment");
    let page = std::path::PathBuf::from(argv.trim().strip_prefix("file://").expect("a file:// URL"));
    let dir = page.parent().unwrap();
    assert_eq!(
        std::fs::metadata(&page).unwrap().mode() & 0o777,
        0o600,
        "{}",
        page.display()
    );
    assert_eq!(std::fs::metadata(dir).unwrap().mode() & 0o777, 0o700);
    // Open the way down to the directory, so that only pgwarden's own modes keep others out.
    for up in dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with("/tmp/") && *a != "/tmp")
    {
        std::fs::set_permissions(up, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let other = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "cat"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(!other.status.success(), "another user read the page");
    assert!(!String::from_utf8_lossy(&other.stdout).contains(&secret));

    let console = Console::sign_in(port, &secret).await;
    assert!(!page.exists(), "the page is removed once the link is used");
    assert_eq!(console.decide(&id, "approve", None, None).await.status, 200);
    let decided: Vec<_> = transitions(&mcp, &id).into_iter().filter_map(|(_, _, by)| by).collect();
    let by = decided.last().expect("a decider");
    assert!(by.starts_with("local console session "), "{by}");
    assert!(
        !by.contains("uid"),
        "the decider is the signed-in session, not a uid: {by}"
    );
}

/// Issue 16: 300 half-open requests held the console for good, its accept loop spun and new
/// approvals failed with "too many open files". Now idle connections are closed after the header
/// timeout (5 s), at most 128 are served at once (the rest are closed at once), a real request
/// gets in within seconds, and a body that never finishes is refused after 10 s.
#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout_and_a_real_request_still_gets_in() {
    let db = TestDb::new(SETUP).await;
    let mcp = session(&db, POLICY, Host::default()).await;
    let port = mcp.console().addr().await.unwrap().port();
    // A body that never finishes is answered 408 after the body timeout (10 s).
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"secret\":"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let slow = tokio::spawn(async move {
        let mut raw = Vec::new();
        let _ = slow.read_to_end(&mut raw).await;
        String::from_utf8_lossy(&raw).to_string()
    });
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        // Half a request head, and then nothing (a refused connection may already be gone).
        let _ = s.write_all(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n").await;
        idle.push(s);
    }
    // Beyond the 128 served at once, connections are closed at once.
    let mut buf = [0u8; 512];
    let mut at_once = 0;
    for s in &mut idle {
        let read = tokio::time::timeout(Duration::from_millis(5), s.read(&mut buf)).await;
        at_once += usize::from(matches!(read, Ok(Ok(0) | Err(_))));
    }
    assert!(
        at_once >= 50,
        "beyond 128, connections are closed at once (only {at_once} were)"
    );
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(9);

    // A whole request, retried as a browser would until it is answered.
    let request = format!("GET /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let answered = loop {
        assert!(tokio::time::Instant::now() < deadline, "no answer within 9 s");
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            s.write_all(request.as_bytes()).await.ok()?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await.ok()?;
            String::from_utf8_lossy(&raw).lines().next().map(str::to_string)
        };
        match tokio::time::timeout(Duration::from_secs(1), attempt).await {
            Ok(Some(status)) if !status.is_empty() => break status,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "answered only after {:?}",
        started.elapsed()
    );

    // Every idle connection ends: the excess ones at once, the served ones at the header timeout.
    let mut last_closed = Duration::ZERO;
    for s in &mut idle {
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => panic!("an idle connection is still open after {:?}", started.elapsed()),
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => continue,
            }
        }
        last_closed = last_closed.max(started.elapsed());
    }
    assert!(
        last_closed >= Duration::from_secs(3),
        "the served idle connections were held until the header timeout, not dropped at once ({last_closed:?})"
    );
    let slow = tokio::time::timeout_at(started + Duration::from_secs(13), slow)
        .await
        .expect("the unfinished body is answered")
        .unwrap();
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
}

/// The transitions the audit trail recorded for approval `id`: (state, channel, decided_by).
fn transitions<H: ClientHandler>(mcp: &Mcp<H>, id: &str) -> Vec<(String, String, Option<String>)> {
    mcp.audit_records()
        .iter()
        .filter_map(|r| {
            r.approval
                .as_ref()
                .filter(|_| r.event == Some(pgwarden::audit::Event::Approval))
        })
        .filter(|a| a.approval_id.as_deref() == Some(id))
        .map(|a| (a.answer.clone(), a.channel.clone(), a.decided_by.clone()))
        .collect()
}

fn approve() -> ElicitResult {
    ElicitResult::new(ElicitationAction::Accept).with_content(json!({ "decision": "approve" }))
}

/// A client that shows prompts but whose person takes longer than the call may wait: the call turns
/// into a pending approval with the prompt still open, and the late answer decides it.
#[tokio::test]
async fn a_prompt_unanswered_within_the_budget_turns_pending_and_its_late_answer_decides() {
    let db = TestDb::new(SETUP).await;
    let reviewer = Reviewer::new(Answer::OnCue(approve()));
    let mcp = session(&db, POLICY, reviewer.clone()).await;
    let _browser = FakeBrowser::install(&mcp);
    let started = std::time::Instant::now();
    let pending = pending_call(&mcp, BUMP_ONE).await;
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "the call returned at its budget (1 s), not when the person answered: {:?}",
        started.elapsed()
    );
    assert_eq!(reviewer.prompts().len(), 1, "the client's prompt was shown");
    assert_eq!(pending["surfaces"], json!(["elicitation", "console"]));
    let message = pending["message"].as_str().unwrap();
    assert!(
        message.contains("in the approval prompt their MCP client is showing"),
        "{message}"
    );
    assert_eq!(counts(&db).await, [0, 0, 0], "nothing ran yet");
    let id = pending["approval_id"].as_str().unwrap().to_string();

    // The same call again while it waits: the same approval, and no second prompt that could
    // approve it a second time.
    let again = pending_call(&mcp, BUMP_ONE).await;
    assert_eq!(again["approval_id"], id.as_str());
    assert_eq!(reviewer.prompts().len(), 1, "one prompt for one action");
    let records = mcp.audit_records();
    let went_pending = records
        .iter()
        .filter_map(|r| r.approval.as_ref())
        .find(|a| a.client_prompt.as_deref() == Some("no answer within the wait budget; the prompt stays open"))
        .expect("the call's record says why it went pending");
    assert_eq!(went_pending.channel, "elicitation+console");
    assert!(went_pending.waited_ms >= 900, "{went_pending:?}");

    // The person answers now, after the call stopped waiting.
    reviewer.cue();
    let mut out = Value::Null;
    for _ in 0..6 {
        out = await_call(&mcp, &id).await.0;
        if out["status"] != "pending" {
            break;
        }
    }
    assert_eq!(out["status"], "executed", "{out}");
    assert_eq!(counts(&db).await, [1, 0, 0], "ran once, after the late answer");
    let t = transitions(&mcp, &id);
    assert_eq!(t[1].0, "approved", "{t:?}");
    assert_eq!(t[1].1, "elicitation", "{t:?}");
    assert!(t[1].2.as_deref().unwrap().contains("client's prompt"), "{t:?}");
    assert_eq!(*reviewer.withdrawn.lock().unwrap(), 0);
}

/// The open prompt and the console are two places for one decision: the first wins, and the client
/// is told to close the prompt it still shows.
#[tokio::test]
async fn a_decision_in_the_console_closes_the_prompt_still_open() {
    let db = TestDb::new(SETUP).await;
    let reviewer = Reviewer::new(Answer::Hang);
    let mcp = session(&db, POLICY, reviewer.clone()).await;
    let browser = FakeBrowser::install(&mcp);
    let pending = pending_call(&mcp, BUMP_ONE).await;
    let id = pending["approval_id"].as_str().unwrap().to_string();
    let console = Console::open(&browser).await;
    assert_eq!(*reviewer.withdrawn.lock().unwrap(), 0, "the prompt is still open");
    let r = console.decide(&id, "deny", None, Some("not today")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(Duration::from_secs(2), "the prompt to be withdrawn", async || {
        (reviewer.withdrawals() > 0).then_some(())
    })
    .await;
    assert_eq!(
        *reviewer.withdrawn.lock().unwrap(),
        1,
        "the client was told to close its prompt"
    );
    let (out, _) = await_call(&mcp, &id).await;
    assert_eq!(out["status"], "denied");
    assert_eq!(out["reviewer_reason"], "not today");
    assert_eq!(counts(&db).await, [0, 0, 0]);
    let t = transitions(&mcp, &id);
    assert_eq!(
        t.iter().map(|(s, c, _)| (s.as_str(), c.as_str())).collect::<Vec<_>>(),
        [("pending", "created"), ("denied", "console")],
        "the prompt's late \"cancel\" decided nothing"
    );
}

/// A decline faster than a person can read (clients that auto-decline) is not a person's "no": the
/// approval goes on to the console, in both protocol eras. With `instant_decline = "0s"` the same
/// decline is taken as a person's.
#[tokio::test]
async fn an_instant_decline_goes_on_to_the_console_in_both_eras() {
    for era in [Era::Legacy, Era::Modern] {
        let db = TestDb::new(SETUP).await;
        let reviewer = Reviewer::new(Answer::Reply(ElicitResult::new(ElicitationAction::Decline)));
        let mcp = session_in(&db, POLICY, reviewer.clone(), era).await;
        let browser = FakeBrowser::install(&mcp);
        let pending = pending_call(&mcp, BUMP_ONE).await;
        assert_eq!(reviewer.prompts().len(), 1, "{era:?}: the client was asked first");
        assert_eq!(pending["surfaces"], json!(["console"]), "{era:?}");
        let id = pending["approval_id"].as_str().unwrap().to_string();
        let records = mcp.audit_records();
        let declined = records
            .iter()
            .filter_map(|r| r.approval.as_ref()?.client_prompt.clone())
            .find(|p| p.contains("faster than a person can read"))
            .unwrap_or_else(|| panic!("{era:?}: the quick decline is recorded"));
        assert!(declined.contains("declined pgwarden's approval prompt"), "{declined}");

        let console = Console::open(&browser).await;
        assert_eq!(console.decide(&id, "approve", None, None).await.status, 200);
        let (out, _) = await_call(&mcp, &id).await;
        assert_eq!(out["status"], "executed", "{era:?}: {out}");
        assert_eq!(counts(&db).await, [1, 0, 0], "{era:?}");

        let strict = edit_policy(POLICY).add(r#"approval.instant_decline = "0s""#).toml();
        let mcp = session_in(&db, &strict, reviewer.clone(), era).await;
        let e = mcp.err("query", json!({ "sql": BUMP_ONE })).await;
        assert!(
            e.starts_with("not approved: the reviewer declined the prompt"),
            "{era:?}: {e}"
        );
        assert_eq!(counts(&db).await, [1, 0, 0], "{era:?}");
    }
}

/// The card has a few seconds to report that it is on screen; when it does not, the console opens
/// too. A card that reports ready keeps the console closed.
#[tokio::test]
async fn the_console_opens_only_when_the_card_does_not_report_ready() {
    let db = TestDb::new(SETUP).await;
    let mcp = session(&db, POLICY, Host::ui()).await;
    let browser = FakeBrowser::install(&mcp);
    let within = pgwarden::approval::hub::CARD_READY_WITHIN;

    let r = mcp.call("query", json!({ "sql": BUMP_ONE, "intent": "bump" })).await;
    let id = r.structured_content.as_ref().unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let nonce = r.meta.as_ref().unwrap().0["dev.pgwarden/review"]["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    let ready = mcp
        .call("pgwarden_review_ready", json!({ "approval_id": id, "nonce": nonce }))
        .await;
    assert_ne!(ready.is_error, Some(true), "{}", text(&ready));
    tokio::time::sleep(within + Duration::from_millis(700)).await;
    assert!(browser.urls().is_empty(), "the card is up: no console window");

    let r = mcp
        .call(
            "query",
            json!({ "sql": "UPDATE counters SET n = n + 1 WHERE id = 2", "intent": "bump two" }),
        )
        .await;
    assert_eq!(
        r.structured_content.as_ref().unwrap()["can_decide_here"],
        true,
        "the card can decide it"
    );
    tokio::time::sleep(within - Duration::from_millis(1500)).await;
    assert!(browser.urls().is_empty(), "the card still has time");
    eventually(Duration::from_millis(2200), "the console to open", async || {
        (!browser.urls().is_empty()).then_some(())
    })
    .await;
    assert_eq!(browser.urls().len(), 1, "no card on screen: the console opened");
}

/// `pgwarden_await` sends progress notifications while it waits (here one, before the decision).
#[tokio::test]
async fn await_reports_progress_while_it_waits() {
    let db = TestDb::new(SETUP).await;
    let policy = edit_policy(POLICY).set(r#"approval.wait_budget = "20s""#).toml();
    let host = Host::ui();
    let mcp = session(&db, &policy, host.clone()).await;
    let _browser = FakeBrowser::install(&mcp);
    let r = mcp.call("query", json!({ "sql": BUMP_ONE, "intent": "bump" })).await;
    let id = r.structured_content.as_ref().unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let review = &r.meta.as_ref().unwrap().0["dev.pgwarden/review"];
    let decide = json!({ "approval_id": id, "nonce": review["nonce"], "action_hash": review["action_hash"], "decision": "approve" });
    // The card decides once the await has reported that it is still waiting.
    let card = async {
        eventually(Duration::from_secs(10), "a progress notification", async || {
            (!host.progress.lock().unwrap().is_empty()).then_some(())
        })
        .await;
        mcp.ok("pgwarden_review_decide", decide).await;
    };
    let ((out, _), ()) = tokio::join!(await_call(&mcp, &id), card);
    assert_eq!(out["status"], "executed", "{out}");
    let seen = host.progress.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        1,
        "one notification at 5 s, then the decision right after it: {seen:?}"
    );
    assert_eq!(seen[0].0, 1.0);
    assert!(seen[0].1.as_deref().unwrap().contains(&id), "{seen:?}");
}

/// A prompt closed without a choice after its call returned decides nothing (a client may close
/// prompts on its own then): the approval stays pending for the console.
#[tokio::test]
async fn a_late_dismissal_of_the_prompt_leaves_the_approval_pending() {
    let db = TestDb::new(SETUP).await;
    let dismiss = ElicitResult::new(ElicitationAction::Cancel);
    let reviewer = Reviewer::new(Answer::OnCue(dismiss));
    let mcp = session(&db, POLICY, reviewer.clone()).await;
    let browser = FakeBrowser::install(&mcp);
    let pending = pending_call(&mcp, BUMP_ONE).await;
    let id = pending["approval_id"].as_str().unwrap().to_string();
    // The person closes the prompt after the call returned; the server has read it once it answers
    // the next request.
    reviewer.cue();
    eventually(Duration::from_secs(2), "the dismissal", async || {
        (reviewer.answered() == 1).then_some(())
    })
    .await;
    mcp.round_trip().await;
    let store = &mcp.pipeline().approvals().store;
    assert_eq!(
        store.state(&id).await,
        Some(pgwarden::approval::pending::State::Pending)
    );
    let console = Console::open(&browser).await;
    assert_eq!(console.decide(&id, "approve", None, None).await.status, 200);
    let (out, _) = await_call(&mcp, &id).await;
    assert_eq!(out["status"], "executed", "{out}");
    assert_eq!(counts(&db).await, [1, 0, 0]);
}

/// Regression (issue 15): with masks in the policy, the planner's estimate for a predicate on a
/// masked column told the model how many rows match a guessed value. The person still sees it.
#[tokio::test]
async fn with_masks_the_row_estimate_reaches_the_person_but_not_the_model() {
    let setup = "CREATE TABLE customers (id int PRIMARY KEY, email text);
                 INSERT INTO customers SELECT g, 'user' || g || '@corp.com' FROM generate_series(1, 500) g;
                 ANALYZE customers;";
    let policy = edit_policy(POLICY)
        .add(r#"columns."public.customers.email".mask = "email""#)
        .toml();
    let db = TestDb::owned(setup, &policy).await;
    let mcp = session(&db, &policy, Host::default()).await;
    let browser = FakeBrowser::install(&mcp);
    let r = mcp
        .call(
            "query",
            json!({ "sql": "DELETE FROM public.customers WHERE email LIKE 'user1%'", "intent": "probe" }),
        )
        .await;
    let s = r.structured_content.clone().expect("structured");
    assert_eq!(s["status"], "pending_approval", "{s}");
    assert_eq!(s["packet"]["estimated_rows"], Value::Null, "{s}");
    assert!(!text(&r).contains("Estimated rows"), "{}", text(&r));
    let console = Console::open(&browser).await;
    let listed = console.pending().await;
    assert!(
        listed["approvals"][0]["packet"]["estimated_rows"].as_f64().is_some(),
        "the person sees the estimate: {listed}"
    );
}

/// Issue 16 item 10: a pending approval became `expired` in the trail only when something looked it
/// up; now the expiry is recorded when it happens.
#[tokio::test]
async fn expiry_is_recorded_when_it_happens_without_anyone_asking() {
    let db = TestDb::new(SETUP).await;
    let policy = edit_policy(POLICY).set(r#"approval.pending_ttl = "2s""#).toml();
    let mcp = session(&db, &policy, Host::default()).await;
    let _browser = FakeBrowser::install(&mcp);
    let pending = pending_call(&mcp, BUMP_ONE).await;
    let id = pending["approval_id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "the expiry to be recorded", async || {
        let expired = mcp.audit_records().iter().any(|r| {
            r.approval
                .as_ref()
                .is_some_and(|a| a.approval_id.as_deref() == Some(id.as_str()) && a.answer == "expired")
        });
        expired.then_some(())
    })
    .await;
    assert_eq!(counts(&db).await, [0, 0, 0]);
}
