//! The `pgwarden` binary as a client launches it: clear start-up errors, a sandbox from nothing,
//! and nothing but protocol on stdout.

mod common;

use std::{
    io::{BufRead, Write},
    process::{Command, Stdio},
    time::Duration,
};

use rmcp::{
    ServiceExt,
    model::CallToolRequestParams,
    transport::{ConfigureCommandExt, TokioChildProcess},
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_pgwarden");

fn socket_dsn(user: &str, db: &str) -> String {
    let c = &common::cluster().cluster;
    format!(
        "host={} port={} user={user} dbname={db}",
        c.socket_dir().display(),
        c.port
    )
}

/// Runs `pgwarden serve` with a URL that must fail; returns (stdout, stderr).
fn failing_start(url: &str) -> (String, String) {
    let out = Command::new(BIN)
        .args(["serve", "--database-url", url])
        .env_remove("DATABASE_URL")
        .env("PGWARDEN_AUDIT_LOG", "/tmp/pgwarden-test-audit/startup.jsonl")
        .stdin(Stdio::piped())
        .output()
        .expect("run pgwarden");
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

#[test]
fn stdout_carries_only_protocol_messages() {
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::TestDb::new("CREATE TABLE t (a int);"));
    let runtime = tempfile::Builder::new().prefix("pgw-run-").tempdir_in("/tmp").unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--database-url", &socket_dsn(common::AGENT, &db.name)])
        .env("PGWARDEN_LOG", "debug")
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("PGWARDEN_AUDIT_LOG", "/tmp/pgwarden-test-audit/startup.jsonl")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let messages = [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"query","arguments":{"sql":"SELECT * FROM t"}}}),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"query","arguments":{"sql":"ALTER SYSTEM SET work_mem = '1MB'"}}}),
        json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"query","arguments":{"sql":"SELECT nope"}}}),
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"describe_table","arguments":{"table":"t"}}}),
    ];
    for m in &messages {
        writeln!(stdin, "{m}").unwrap();
    }
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let protocol = |line: std::io::Result<String>| {
        let line = line.unwrap();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("non-protocol line on stdout: {line:?} ({e})"));
        assert_eq!(v["jsonrpc"], json!("2.0"), "{line}");
        v
    };
    let mut lines = stdout.lines();
    let mut replies = Vec::new();
    while replies.len() < 5 {
        let line = lines.next().expect("a reply to every request");
        replies.push(protocol(line));
    }
    // Then end the session and read stdout to its end: shutdown writes nothing else there either.
    drop(stdin);
    for line in lines {
        let v = protocol(line);
        assert!(v.get("id").is_none() || v["id"].is_null(), "an unasked reply: {v}");
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    let by_id = |id: i64| replies.iter().find(|r| r["id"] == json!(id)).unwrap().clone();
    assert_eq!(by_id(2)["result"]["isError"], json!(false));
    assert_eq!(by_id(3)["result"]["isError"], json!(true));
    assert_eq!(by_id(4)["result"]["isError"], json!(true));
    assert_eq!(by_id(5)["result"]["isError"], json!(false));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("using the database"),
        "start-up logs go to stderr: {stderr}"
    );
}

#[tokio::test]
async fn the_sandbox_starts_from_nothing_serves_the_demo_and_stops_afterwards() {
    let dir = tempfile::Builder::new().prefix("pgw-sbx-").tempdir_in("/tmp").unwrap();
    let sandbox_dir = dir.path().join("sandbox");
    let start = |policy: &'static str| {
        let sandbox_dir = sandbox_dir.clone();
        async move {
            let cmd = tokio::process::Command::new(BIN).configure(|c| {
                c.arg("serve")
                    .arg("--sandbox-dir")
                    .arg(&sandbox_dir)
                    .args(["--policy", policy])
                    .env_remove("DATABASE_URL")
                    .env("PGWARDEN_AUDIT_LOG", sandbox_dir.with_file_name("audit.jsonl"));
            });
            let session = ().serve(TokioChildProcess::new(cmd).unwrap());
            tokio::time::timeout(Duration::from_secs(60), session)
                .await
                .expect("pgwarden answered `initialize` within 60 s")
                .expect("MCP session with the sandbox")
        }
    };
    let default_policy = concat!(env!("CARGO_MANIFEST_DIR"), "/tool-policies/default.toml");
    let sandbox_policy = concat!(env!("CARGO_MANIFEST_DIR"), "/tool-policies/sandbox.toml");
    let client = start(sandbox_policy).await;
    let call = |tool: &str, args: Value| {
        CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap())
    };
    // Issue 17 item 5: a shell DATABASE_URL the client never passed left the person on the demo
    // sandbox with nothing but an INFO line. Now the instructions and the first result say so.
    let instructions = client
        .peer_info()
        .and_then(|i| i.instructions.clone())
        .unwrap_or_default();
    assert!(
        instructions.contains("demo sandbox, not your database"),
        "{instructions}"
    );
    let list = client.call_tool(call("list_tables", json!({}))).await.unwrap();
    let list_out = list.structured_content.clone().unwrap();
    assert!(
        list_out["notice"]
            .as_str()
            .is_some_and(|n| n.contains("pass it in the client config's `env`")),
        "{list_out}"
    );
    let again = client.call_tool(call("list_tables", json!({}))).await.unwrap();
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
        .call_tool(call(
            "query",
            json!({"sql": "SELECT count(*) AS n, count(email) AS e, current_user AS u FROM customers"}),
        ))
        .await
        .unwrap();
    let out = r.structured_content.unwrap();
    assert_eq!(out["rows"][0], json!([200, 200, "pgwarden_agent"]));
    let d = client
        .call_tool(call("describe_table", json!({"table": "customers"})))
        .await
        .unwrap();
    let cols = d.structured_content.unwrap()["columns"].clone();
    assert!(cols.as_array().unwrap().iter().any(|c| c["name"] == "phone"));

    // A second client (Claude Desktop and Claude Code at once) shares the running sandbox; the first
    // leaving does not stop it under the second. Both serve the shipped sandbox policy, whose masks
    // the sandbox sets up itself: Postgres enforces them. A policy with other masks (the default
    // masks nothing) is refused while they serve, rather than unmask what they promised.
    let refused = std::process::Command::new(BIN)
        .args(["serve", "--policy", default_policy, "--sandbox-dir"])
        .arg(&sandbox_dir)
        .env_remove("DATABASE_URL")
        .env("PGWARDEN_AUDIT_LOG", sandbox_dir.with_file_name("audit.jsonl"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("another pgwarden is serving this sandbox"), "{stderr}");
    let second = start(sandbox_policy).await;
    let r = second
        .call_tool(call(
            "query",
            json!({"sql": "SELECT email, phone FROM customers WHERE phone IS NOT NULL ORDER BY id LIMIT 1"}),
        ))
        .await
        .unwrap();
    let row = r.structured_content.unwrap()["rows"][0].clone();
    assert!(
        row[0].as_str().unwrap().contains("***@") && row[1].as_str().unwrap().starts_with("***"),
        "{row}"
    );
    let r = second
        .call_tool(call(
            "query",
            json!({"sql": "SELECT email FROM public.customers LIMIT 1"}),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(format!("{:?}", r.content).contains("42501"), "{:?}", r.content);
    let count = || call("query", json!({"sql": "SELECT count(*) FROM orders"}));
    let n = second.call_tool(count()).await.unwrap().structured_content.unwrap();
    assert_eq!(n["rows"][0][0], json!(1500), "{n}");
    client.cancel().await.unwrap();
    let pid_file = sandbox_dir.join("data/postmaster.pid");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        pid_file.exists(),
        "the first pgwarden out stopped the cluster under the second"
    );
    let n = second.call_tool(count()).await.unwrap().structured_content.unwrap();
    assert_eq!(n["rows"][0][0], json!(1500), "{n}");
    second.cancel().await.unwrap();

    // The last pgwarden out stops the cluster.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pid_file.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !pid_file.exists(),
        "the sandbox cluster is still running after pgwarden exited"
    );
    assert!(sandbox_dir.join("seeded").is_file());
}
