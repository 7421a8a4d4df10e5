//! The `pgwarden` binary as a client launches it: clear start-up errors, a sandbox from nothing,
//! and nothing but protocol on stdout.

mod common;

use std::time::Duration;

use common::{TestServer, socket_dsn};
use serde_json::json;

/// Runs `pgwarden serve` with a URL that must fail; returns (stdout, stderr).
fn failing_start(url: &str) -> (String, String) {
    let out = TestServer::builder().database_url(url).output();
    assert!(!out.status.success(), "pgwarden should fail to start with {url}");
    (
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_database_urls_fail_at_start_up_with_a_clear_error() {
    let (stdout, stderr) = failing_start("postgres://nobody:hunter2@127.0.0.1:1/x");
    assert!(stdout.is_empty(), "stdout must stay protocol-only: {stdout}");
    assert!(
        stderr.contains("cannot reach PostgreSQL at nobody@127.0.0.1:1/x"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");

    let (_, stderr) = failing_start("postgres://u@h:notaport/db");
    assert!(stderr.contains("invalid database URL"), "{stderr}");

    let (_, stderr) = failing_start(&socket_dsn("ghost", "postgres"));
    assert!(
        stderr.contains("login to ghost@") && stderr.contains("28000"),
        "{stderr}"
    );

    let (_, stderr) = failing_start(&socket_dsn(common::AGENT, "no_such_db"));
    assert!(stderr.contains("database does not exist"), "{stderr}");
}

#[tokio::test]
async fn stdout_carries_only_protocol_messages() {
    let db = common::TestDb::new("CREATE TABLE t (a int);").await;
    let mut server = TestServer::builder()
        .database(&db)
        .env("PGWARDEN_LOG", "debug")
        .start_raw()
        .await;
    let messages = [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"query","arguments":{"sql":"SELECT * FROM t"}}}),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"query","arguments":{"sql":"ALTER SYSTEM SET work_mem = '1MB'"}}}),
        json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"query","arguments":{"sql":"SELECT nope"}}}),
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"describe_table","arguments":{"table":"t"}}}),
    ];
    for m in &messages {
        server.send(m).await;
    }
    // Every line on stdout must be a JSON-RPC message (`next` and `finish` fail the test otherwise).
    let mut replies = Vec::new();
    while replies.len() < 5 {
        replies.push(server.next(|_| true).await);
    }
    // Then end the session and read stdout to its end: shutdown writes nothing else there either.
    let (rest, status, stderr) = server.finish().await;
    for v in rest {
        assert!(v.get("id").is_none() || v["id"].is_null(), "an unasked reply: {v}");
    }
    assert!(status.success());
    let by_id = |id: i64| replies.iter().find(|r| r["id"] == json!(id)).unwrap().clone();
    assert_eq!(by_id(2)["result"]["isError"], json!(false));
    assert_eq!(by_id(3)["result"]["isError"], json!(true));
    assert_eq!(by_id(4)["result"]["isError"], json!(true));
    assert_eq!(by_id(5)["result"]["isError"], json!(false));
    assert!(
        stderr.contains("using the database"),
        "start-up logs go to stderr: {stderr}"
    );
}

#[tokio::test]
async fn the_sandbox_starts_from_nothing_serves_the_demo_and_stops_afterwards() {
    let dir = tempfile::Builder::new().prefix("pgw-sbx-").tempdir_in("/tmp").unwrap();
    let sandbox_dir = dir.path().join("sandbox");
    let audit = sandbox_dir.with_file_name("audit.jsonl");
    let start = |policy| {
        TestServer::builder()
            .sandbox(&sandbox_dir)
            .policy_file(policy)
            .audit(&audit)
            .start()
    };
    let default_policy = concat!(env!("CARGO_MANIFEST_DIR"), "/tool-policies/default.toml");
    let sandbox_policy = concat!(env!("CARGO_MANIFEST_DIR"), "/tool-policies/sandbox.toml");
    let mut client = start(sandbox_policy).await;
    // Issue 17 item 5: a shell DATABASE_URL the client never passed left the person on the demo
    // sandbox with nothing but an INFO line. Now the instructions and the first result say so.
    let instructions = client
        .client
        .peer_info()
        .and_then(|i| i.instructions.clone())
        .unwrap_or_default();
    assert!(
        instructions.contains("demo sandbox, not your database"),
        "{instructions}"
    );
    let list = client.call("list_tables", json!({})).await;
    let list_out = list.structured_content.clone().unwrap();
    assert!(
        list_out["notice"]
            .as_str()
            .is_some_and(|n| n.contains("pass it in the client config's `env`")),
        "{list_out}"
    );
    let again = client.call("list_tables", json!({})).await;
    assert!(again.structured_content.unwrap().get("notice").is_none(), "said once");
    let tables: Vec<String> = list.structured_content.unwrap()["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}.{}", t["schema"].as_str().unwrap(), t["name"].as_str().unwrap()))
        .collect();
    for t in [
        "public.customers",
        "public.orders",
        "public.products",
        "analytics.monthly_revenue",
    ] {
        assert!(tables.contains(&t.to_string()), "{t} missing: {tables:?}");
    }
    let r = client
        .call(
            "query",
            json!({"sql": "SELECT count(*) AS n, count(email) AS e, current_user AS u FROM customers"}),
        )
        .await;
    let out = r.structured_content.unwrap();
    assert_eq!(out["rows"][0], json!([200, 200, "pgwarden_agent"]));
    let d = client.call("describe_table", json!({"table": "customers"})).await;
    let cols = d.structured_content.unwrap()["columns"].clone();
    assert!(cols.as_array().unwrap().iter().any(|c| c["name"] == "phone"));

    // A second client (Claude Desktop and Claude Code at once) shares the running sandbox; the first
    // leaving does not stop it under the second. Both serve the shipped sandbox policy, whose masks
    // the sandbox sets up itself: Postgres enforces them. A policy with other masks (the default
    // masks nothing) is refused while they serve, rather than unmask what they promised.
    let refused = TestServer::builder()
        .sandbox(&sandbox_dir)
        .policy_file(default_policy)
        .audit(&audit)
        .output();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("another pgwarden is serving this sandbox"), "{stderr}");
    let mut second = start(sandbox_policy).await;
    let r = second
        .call(
            "query",
            json!({"sql": "SELECT email, phone FROM customers WHERE phone IS NOT NULL ORDER BY id LIMIT 1"}),
        )
        .await;
    let row = r.structured_content.unwrap()["rows"][0].clone();
    assert!(
        row[0].as_str().unwrap().contains("***@") && row[1].as_str().unwrap().starts_with("***"),
        "{row}"
    );
    let r = second
        .call("query", json!({"sql": "SELECT email FROM public.customers LIMIT 1"}))
        .await;
    assert_eq!(r.is_error, Some(true));
    assert!(format!("{:?}", r.content).contains("42501"), "{:?}", r.content);
    let count = json!({"sql": "SELECT count(*) FROM orders"});
    let n = second.ok("query", count.clone()).await;
    assert_eq!(n["rows"][0][0], json!(1500), "{n}");
    // The first leaves: once its process has exited, it has done all it does on the way out.
    client.close().await;
    let pid_file = sandbox_dir.join("data/postmaster.pid");
    assert!(
        pid_file.exists(),
        "the first pgwarden out stopped the cluster under the second"
    );
    let n = second.ok("query", count).await;
    assert_eq!(n["rows"][0][0], json!(1500), "{n}");
    second.close().await;

    // The last pgwarden out stops the cluster.
    let _ = common::poll(Duration::from_secs(20), async || (!pid_file.exists()).then_some(())).await;
    assert!(
        !pid_file.exists(),
        "the sandbox cluster is still running after pgwarden exited"
    );
    assert!(sandbox_dir.join("seeded").is_file());
}
