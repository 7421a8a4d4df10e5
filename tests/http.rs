//! `pgwarden serve --http` with static tokens (issue 20): nothing is served without a valid token;
//! two principals in one server are decided, prompted and audited as themselves, in both protocol
//! eras; a session belongs to whoever opened it; and a 2026-07-28 retry is served by a second
//! pgwarden process that shares the state key.

mod common;

use common::{
    Era, Reviewer, TestDb, TestServer, http,
    http::{HttpServer, call},
    text,
};
use pgwarden::auth::tokens::new_token;
use rmcp::model::CallToolResponse;
use serde_json::json;

const SETUP: &str = "CREATE TABLE orders (id int PRIMARY KEY, status text);
INSERT INTO orders VALUES (1, 'open'), (2, 'open');";

const POLICY: &str = r#"
[[rule]]
id = "dba-changes"
effect = "approve"
categories = ["write"]
groups = ["dba"]

[[rule]]
id = "reads"
effect = "allow"
categories = ["read", "export"]
"#;

const WHO: &str = "SELECT current_setting('application_name') AS app, current_setting('pgwarden.principal') AS p";

struct Team {
    dir: tempfile::TempDir,
    alice: String,
    bob: String,
    /// Also in `dba`.
    carol: String,
}

/// A token file with alice and carol (group `dba`) and bob (no groups).
fn team() -> Team {
    let dir = tempfile::Builder::new().prefix("pgw-http-").tempdir_in("/tmp").unwrap();
    let file = dir.path().join("tokens.toml");
    let alice = new_token(&file, "alice", &["dba".into()]).unwrap();
    let bob = new_token(&file, "bob", &[]).unwrap();
    let carol = new_token(&file, "carol", &["dba".into()]).unwrap();
    Team { dir, alice, bob, carol }
}

const TOKENS: &str = "[tokens]\nfile = \"tokens.toml\"\n";

async fn server(db: &TestDb, team: &Team) -> HttpServer {
    let builder = TestServer::builder().database(db).policy(POLICY);
    HttpServer::start(builder, team.dir.path(), "http://127.0.0.1/mcp", TOKENS).await
}

async fn statuses(db: &TestDb) -> Vec<String> {
    db.column("SELECT status FROM orders ORDER BY id").await
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

#[tokio::test]
async fn nothing_is_served_without_a_valid_token_and_a_session_stays_its_openers() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let s = server(&db, &team).await;
    let port = s.port();
    let json = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    let with = |token: &str| {
        let mut h = json.to_vec();
        h.push(("Authorization", Box::leak(format!("Bearer {token}").into_boxed_str())));
        h
    };
    for headers in [
        json.to_vec(),
        with("pgw_not-a-token"),
        with(&team.alice[..team.alice.len() - 1]),
        with(""),
        {
            let mut h = json.to_vec();
            h.push((
                "Authorization",
                Box::leak(format!("Basic {}", team.alice).into_boxed_str()),
            ));
            h
        },
    ] {
        let r = http(port, "POST", "/mcp", &headers, Some(INITIALIZE)).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        assert!(
            r.headers
                .get("www-authenticate")
                .is_some_and(|c| c.starts_with("Bearer")),
            "{:?}",
            r.headers
        );
    }
    // The right token opens a session…
    let r = http(port, "POST", "/mcp", &with(&team.alice), Some(INITIALIZE)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let session = r.headers.get("mcp-session-id").expect("a session id").clone();
    // …which nobody else may use, whatever they know of it.
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let mut bob = with(&team.bob);
    bob.push(("Mcp-Session-Id", &session));
    bob.push(("Mcp-Protocol-Version", "2025-06-18"));
    let r = http(port, "POST", "/mcp", &bob, Some(list)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    // Two credentials: refused, whichever is valid.
    let mut two = with(&team.bob);
    two.push((
        "Authorization",
        Box::leak(format!("Bearer {}", team.alice).into_boxed_str()),
    ));
    assert_eq!(http(port, "POST", "/mcp", &two, Some(INITIALIZE)).await.status, 401);
    // A web page's request (it carries its Origin) is refused unless the config lists the origin.
    let mut page = with(&team.alice);
    page.push(("Origin", "http://evil.example"));
    assert_eq!(http(port, "POST", "/mcp", &page, Some(INITIALIZE)).await.status, 403);
    // One principal holds at most 32 sessions: opening more closes their oldest.
    for _ in 0..32 {
        assert_eq!(
            http(port, "POST", "/mcp", &with(&team.alice), Some(INITIALIZE))
                .await
                .status,
            200
        );
    }
    let mut oldest = with(&team.alice);
    oldest.push(("Mcp-Session-Id", &session));
    oldest.push(("Mcp-Protocol-Version", "2025-06-18"));
    common::eventually(
        std::time::Duration::from_secs(5),
        "the oldest session to close",
        async || (http(port, "POST", "/mcp", &oldest, Some(list)).await.status == 404).then_some(()),
    )
    .await;
    // DNS rebinding: a foreign Host is refused even with a good token.
    let mut foreign = with(&team.alice);
    foreign.push(("Host", "evil.example"));
    let r = http(port, "POST", "/mcp", &foreign, Some(INITIALIZE)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    // No token ever reaches the trail or the logs.
    let trail = std::fs::read_to_string(s.raw.audit_path()).unwrap_or_default();
    let logs = s.raw.stderr();
    for secret in [&team.alice, &team.bob] {
        assert!(!trail.contains(&secret[4..]) && !logs.contains(&secret[4..]));
    }
}

#[tokio::test]
async fn two_principals_are_decided_prompted_and_audited_as_themselves_in_both_eras() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let s = server(&db, &team).await;
    let reviewer = Reviewer::says("approve", None, None);
    let alice = s.connect(reviewer.clone(), &team.alice, Era::Legacy).await;
    let bob = s
        .connect(Reviewer::says("approve", None, None), &team.bob, Era::Legacy)
        .await;

    // Reads run as each, and Postgres sees who.
    for (client, name) in [(&alice, "alice"), (&bob, "bob")] {
        let r = client.call_tool(call("query", json!({ "sql": WHO }))).await.unwrap();
        let rows = &r.structured_content.unwrap()["rows"];
        assert_eq!(rows, &json!([[format!("pgwarden: {name}"), name]]));
    }
    // alice is in `dba`: her change asks her, and the prompt names her as verified.
    let update = "UPDATE orders SET status = 'shipped' WHERE id = 1";
    let r = alice
        .call_tool(call("query", json!({ "sql": update, "intent": "ship it" })))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let prompt = reviewer.prompts().pop().expect("a prompt");
    assert!(
        prompt.contains("Requested by: alice (groups dba; static token "),
        "{prompt}"
    );
    // bob is not: no rule lets him change anything.
    let r = bob
        .call_tool(call(
            "query",
            json!({ "sql": "UPDATE orders SET status = 'x' WHERE id = 2" }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("no policy rule"), "{}", text(&r));
    assert_eq!(statuses(&db).await, ["shipped", "open"]);

    // The 2026-07-28 era over HTTP, statelessly: alice's prompt round trip, answered.
    let modern = Reviewer::says("approve", None, None);
    let alice26 = s.connect(modern.clone(), &team.alice, Era::Modern).await;
    let r = alice26
        .call_tool(call(
            "query",
            json!({ "sql": "UPDATE orders SET status = 'held' WHERE id = 2" }),
        ))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert!(
        modern
            .prompts()
            .pop()
            .unwrap()
            .contains("Requested by: alice (groups dba")
    );
    assert_eq!(statuses(&db).await, ["shipped", "held"]);

    // The trail says who did what, authenticated how — and never the token.
    let records = s.raw.audit_records();
    let by = |p: &str| records.iter().filter(|r| r.principal.as_deref() == Some(p)).count();
    assert!(by("alice") >= 3 && by("bob") >= 2, "{records:#?}");
    for r in records.iter().filter(|r| r.principal.is_some()) {
        let authn = serde_json::to_value(&r.authn).unwrap();
        assert_eq!(authn["method"], "token", "{authn}");
        assert_eq!(authn["token_id"].as_str().unwrap().len(), 12);
    }
    let alice_groups: Vec<_> = records
        .iter()
        .filter(|r| r.principal.as_deref() == Some("alice"))
        .map(|r| r.groups.clone())
        .collect();
    assert!(alice_groups.iter().all(|g| g == &["dba"]), "{alice_groups:?}");
}

#[tokio::test]
async fn a_2026_retry_is_served_by_a_second_process_sharing_the_state_key() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let first = server(&db, &team).await;
    let second = server(&db, &team).await;
    let a = first
        .connect(Reviewer::says("approve", None, None), &team.alice, Era::Modern)
        .await;
    let b = second
        .connect(Reviewer::says("approve", None, None), &team.alice, Era::Modern)
        .await;
    let update = "UPDATE orders SET status = 'cancelled' WHERE id = 1";
    let CallToolResponse::InputRequired(asked) =
        a.call_tool_once(call("query", json!({ "sql": update }))).await.unwrap()
    else {
        panic!("expected input_required");
    };
    let approve = json!({"approval": {"action": "accept", "content": {"decision": "approve"}}});
    let mut retry = call("query", json!({ "sql": update }));
    retry.request_state = asked.request_state.clone();
    retry.input_responses = Some(approve.as_object().unwrap().clone().into_iter().collect());
    // carol (also a dba) cannot use alice's state: the approval is bound to who asked.
    let c = second
        .connect(Reviewer::says("approve", None, None), &team.carol, Era::Modern)
        .await;
    match c.call_tool_once(retry.clone()).await.unwrap() {
        CallToolResponse::Complete(r) => {
            assert_eq!(r.is_error, Some(true), "{}", text(&r));
            assert!(text(&r).contains("the approval state is not valid"), "{}", text(&r));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(statuses(&db).await, ["open", "open"]);
    // alice's retry lands on the other process, which opens the state and runs the change.
    match b.call_tool_once(retry).await.unwrap() {
        CallToolResponse::Complete(r) => assert_ne!(r.is_error, Some(true), "{}", text(&r)),
        other => panic!("expected the change to run, got {other:?}"),
    }
    assert_eq!(statuses(&db).await, ["cancelled", "open"]);
}

/// `--tls-cert`/`--tls-key`: HTTPS on a non-loopback-capable listener, authenticated as over plain
/// HTTP; plain HTTP on a non-loopback address without them is refused at start.
#[tokio::test]
async fn https_with_the_given_certificate_and_plain_http_only_on_loopback() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let db = TestDb::new(SETUP).await;
    let team = team();
    let builder = TestServer::builder().database(&db).policy(POLICY);
    let (s, cert) = HttpServer::start_tls(builder, team.dir.path(), TOKENS).await;

    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let post = async |token: Option<&str>| -> String {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port())).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\n{auth}Content-Length: {}\r\n\r\n{INITIALIZE}",
            s.port(),
            INITIALIZE.len()
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 64];
        let n = tls.read(&mut head).await.unwrap();
        String::from_utf8_lossy(&head[..n]).to_string()
    };
    assert!(post(None).await.starts_with("HTTP/1.1 401"));
    assert!(post(Some(&team.alice)).await.starts_with("HTTP/1.1 200"));
    // A plaintext client gets no MCP out of the TLS port.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", s.port())).await.unwrap();
    plain
        .write_all(
            format!(
                "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{INITIALIZE}",
                INITIALIZE.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));

    // Plain HTTP on an address other than loopback: refused at start, with the fix.
    let out = TestServer::builder()
        .database(&db)
        .args(["--http", "0.0.0.0:0", "--http-config"])
        .args([&team.dir.path().join("http.toml")])
        .output();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plain HTTP on loopback only") && err.contains("--tls-cert"),
        "{err}"
    );
}

/// A client that cannot show prompts gets a pending approval; a person approves it in a terminal
/// (`pgwarden approvals`), and the same caller's `pgwarden_await` runs it — over HTTP, in a session
/// (2025) and statelessly (2026, scoped to the principal). Someone else cannot await it.
#[tokio::test]
async fn a_pending_approval_is_awaited_by_its_caller_over_http_in_both_eras() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    // Return the pending approval at once instead of waiting for a decision first.
    let policy = format!("[approval]\nwait_budget = \"1s\"\n{POLICY}");
    let builder = TestServer::builder().database(&db).policy(policy);
    let s = HttpServer::start(builder, team.dir.path(), "http://127.0.0.1/mcp", TOKENS).await;
    for (era, id, status) in [(Era::Legacy, 1, "shipped"), (Era::Modern, 2, "held")] {
        let alice = s.connect((), &team.alice, era).await;
        let sql = format!("UPDATE orders SET status = '{status}' WHERE id = {id}");
        let r = alice.call_tool(call("query", json!({ "sql": sql }))).await.unwrap();
        let pending = r.structured_content.unwrap();
        assert_eq!(pending["status"], "pending_approval", "{era:?}: {pending}");
        let approval = pending["approval_id"].as_str().unwrap().to_string();
        // carol is a dba too, but it is not her call.
        let carol = s.connect((), &team.carol, era).await;
        let r = carol
            .call_tool(call(
                "pgwarden_await",
                json!({ "approval_id": approval, "wait_seconds": 0 }),
            ))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(true), "{era:?}: {}", text(&r));
        let out = std::process::Command::new(common::BIN)
            .args(["approvals", "approve", &approval])
            .env("XDG_RUNTIME_DIR", s.raw.dir().join("run"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r = alice
            .call_tool(call(
                "pgwarden_await",
                json!({ "approval_id": approval, "wait_seconds": 5 }),
            ))
            .await
            .unwrap();
        assert_ne!(r.is_error, Some(true), "{era:?}: {}", text(&r));
        assert_eq!(r.structured_content.unwrap()["executed"], json!(true), "{era:?}");
    }
    assert_eq!(statuses(&db).await, ["shipped", "held"]);
}

/// A client that connects and never finishes its request head cannot hold the connection: it is
/// closed after the header timeout (30 s), before authentication is even asked.
#[tokio::test]
async fn a_silent_or_trickling_connection_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::new(SETUP).await;
    let team = team();
    let s = server(&db, &team).await;
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", s.port())).await.unwrap();
    let mut trickle = tokio::net::TcpStream::connect(("127.0.0.1", s.port())).await.unwrap();
    trickle
        .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let closed = async |c: &mut tokio::net::TcpStream| {
        let mut buf = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(45), c.read_to_end(&mut buf))
            .await
            .is_ok()
    };
    assert!(closed(&mut silent).await, "a silent connection stays open");
    assert!(closed(&mut trickle).await, "a half-sent request head stays open");
    // The server still serves.
    let headers = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("Authorization", &format!("Bearer {}", team.alice)),
    ];
    assert_eq!(
        http(s.port(), "POST", "/mcp", &headers, Some(INITIALIZE)).await.status,
        200
    );
}
