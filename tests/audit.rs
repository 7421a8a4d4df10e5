//! The audit trail over real MCP against a real Postgres: every call is recorded, the chain
//! verifies (and `pgwarden audit verify` fails on tampering), secrets are redacted, changes are
//! recorded before they run, and no record means no action.

mod common;

use std::{process::Command, sync::Arc, time::Duration};

use common::{BIN, Era, Mcp, Reviewer, TestDb, TestServer, eventually, poll, text};
use pgwarden::audit::{AuditLog, Event};
use serde_json::json;

const SETUP: &str = "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);
                     INSERT INTO orders VALUES (1, 'open'), (2, 'open'), (3, 'shipped');";

const POLICY: &str = r#"
[[rule]]
id = "no-deletes"
effect = "deny"
categories = ["write", "destructive"]
tables = ["public.orders"]
reason = "orders are never deleted"
tools = ["query"]
risk_at_least = "critical"

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]

[[rule]]
id = "changes-need-approval"
effect = "approve"
categories = ["write", "ddl", "destructive", "privilege", "export", "unknown"]

# The reviewer here is the client's prompt, also for critical statements (CREATE ROLE).
[approval.min_channel]
critical = "client"
"#;

/// Reads and writes run; nothing needs a person.
const ALLOW_ALL: &str = "[[rule]]\nid = \"all\"\neffect = \"allow\"\ncategories = [\"read\", \"write\"]\n";

#[tokio::test]
async fn a_session_is_recorded_call_by_call_and_tampering_is_caught() {
    let db = TestDb::new(SETUP).await;
    db.admin()
        .await
        .batch_execute("ALTER ROLE pgwarden_agent CREATEROLE")
        .await
        .unwrap();
    let reviewer = Reviewer::says("approve", None, Some("ok by ops"));
    let mcp = Mcp::reviewed(&db, POLICY, reviewer.clone(), Era::Legacy).await;

    mcp.ok("query", json!({"sql": "SELECT * FROM orders", "intent": "look"}))
        .await;
    mcp.ok(
        "query",
        json!({"sql": "UPDATE orders SET status = 'paid' WHERE id = 1"}),
    )
    .await;
    mcp.err("query", json!({"sql": "SELECT 1/0"})).await;
    let role = mcp
        .call(
            "query",
            json!({"sql": "CREATE ROLE audit_probe LOGIN PASSWORD 'hunter2-secret'"}),
        )
        .await;
    assert_ne!(role.is_error, Some(true), "{}", text(&role));
    let e = mcp.err("query", json!({"sql": "DELETE FROM orders"})).await;
    assert!(e.starts_with("denied by rule `no-deletes`"), "{e}");

    let path = mcp.audit_path();
    let raw = std::fs::read_to_string(&path).unwrap();
    assert!(!raw.contains("hunter2"), "the password reached the audit file");
    let records = mcp.audit_records();
    let events: Vec<(Option<Event>, Option<&str>, Option<&str>)> = records
        .iter()
        .map(|r| {
            (
                r.event,
                r.decision.as_deref(),
                r.outcome.as_ref().map(|o| o.status.as_str()),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            (Some(Event::Genesis), None, None),
            (Some(Event::Call), Some("allow"), Some("ok")),
            (Some(Event::Decision), Some("approve"), None),
            (Some(Event::Outcome), None, Some("ok")),
            (Some(Event::Call), Some("allow"), Some("error")),
            (Some(Event::Decision), Some("approve"), None),
            (Some(Event::Outcome), None, Some("ok")),
            (Some(Event::Call), Some("deny"), Some("denied")),
        ]
    );
    let read = &records[1];
    assert_eq!(read.outcome.as_ref().unwrap().rows, Some(3));
    assert_eq!(read.arguments.as_ref().unwrap()["intent"], json!("look"));
    assert_eq!(read.client.as_deref(), Some("pgwarden-test-reviewer 1.0"));
    let update = &records[2];
    let approval = update.approval.as_ref().unwrap();
    assert_eq!(
        (approval.channel.as_str(), approval.answer.as_str()),
        ("elicitation", "approve")
    );
    assert_eq!(approval.reason.as_deref(), Some("ok by ops"));
    assert_eq!(
        update
            .rule
            .as_deref()
            .map(|r| r.starts_with("changes-need-approval (test.toml:")),
        Some(true)
    );
    assert_eq!(records[3].call_id, update.call_id, "the outcome names its decision");
    assert_eq!(records[3].outcome.as_ref().unwrap().rows_affected, Some(1));
    assert_eq!(records[4].outcome.as_ref().unwrap().sqlstate.as_deref(), Some("22012"));
    assert_eq!(
        records[5].sql.as_deref(),
        Some("CREATE ROLE audit_probe LOGIN PASSWORD '[redacted]'")
    );
    assert_eq!(
        records[7].rule.as_deref().map(|r| r.starts_with("no-deletes")),
        Some(true)
    );

    // The CLI agrees, and names the line of each kind of tampering.
    let verify = |p: &std::path::Path| {
        let out = Command::new(BIN).args(["audit", "verify"]).arg(p).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = verify(&path);
    assert!(
        ok && out.starts_with("ok: ") && out.contains("holds 8 records"),
        "{out}"
    );
    let lines: Vec<&str> = raw.lines().collect();
    let tampered = path.with_file_name("tampered.jsonl");
    for (name, doctored, line) in [
        (
            "edited",
            {
                let mut l = lines.clone();
                let e = l[2].replace("paid", "void");
                l[2] = Box::leak(e.into_boxed_str());
                l
            },
            3,
        ),
        (
            "deleted",
            {
                let mut l = lines.clone();
                l.remove(4);
                l
            },
            5,
        ),
        (
            "inserted",
            {
                let mut l = lines.clone();
                l.insert(2, lines[1]);
                l
            },
            3,
        ),
        (
            "swapped",
            {
                let mut l = lines.clone();
                l.swap(5, 6);
                l
            },
            6,
        ),
    ] {
        std::fs::write(&tampered, doctored.join("\n") + "\n").unwrap();
        let (ok, out) = verify(&tampered);
        assert!(!ok, "{name}: {out}");
        assert!(out.contains(&format!("tampered.jsonl:{line}`")), "{name}: {out}");
    }
    let show = Command::new(BIN)
        .args(["audit", "show", "--decision", "denied"])
        .arg(&path)
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains("DELETE FROM orders") && !show.contains("UPDATE orders"),
        "{show}"
    );
    // Issue 17 item 11: a filter that can match nothing because it is misspelled is an error.
    for args in [["--since", "yesterday"], ["--decision", "bogus"]] {
        let out = Command::new(BIN)
            .args(["audit", "show"])
            .args(args)
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(args[1]), "{err}");
    }
}

#[tokio::test]
async fn an_unwritable_audit_file_stops_calls_from_running() {
    let db = TestDb::new(SETUP).await;
    let mcp = TestServer::builder().database(&db).policy(ALLOW_ALL).in_process().await;
    // A trail that cannot be written: its path turned into a directory after it was opened.
    let trail = mcp.audit_path();
    std::fs::remove_file(&trail).unwrap();
    std::fs::create_dir(&trail).unwrap();
    let e = mcp
        .err(
            "query",
            json!({"sql": "UPDATE orders SET status = 'paid'  WHERE id = 1"}),
        )
        .await;
    assert!(e.contains("the audit record could not be written"), "{e}");
    let e = mcp.err("query", json!({"sql": "SELECT * FROM orders"})).await;
    assert!(e.contains("pgwarden returns nothing it has not recorded"), "{e}");
    let status: String = db
        .client()
        .await
        .query_one("SELECT status FROM orders WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "open", "the write did not run");
}

#[tokio::test]
async fn concurrent_calls_write_whole_lines_in_one_chain() {
    let db = TestDb::new(SETUP).await;
    let mcp = Arc::new(Mcp::with_policy(&db, POLICY, None).await);
    let calls = (0..40).map(|i| {
        let mcp = mcp.clone();
        tokio::spawn(async move {
            mcp.ok(
                "query",
                json!({"sql": format!("SELECT {i} AS n, count(*) FROM generate_series(1, 20000)")}),
            )
            .await
        })
    });
    for c in calls {
        c.await.unwrap();
    }
    let records = mcp.audit_records();
    assert_eq!(records.len(), 41);
    let mut seen: Vec<String> = records[1..].iter().map(|r| r.sql.clone().unwrap()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 40, "every call once");
}

#[tokio::test]
async fn a_crash_between_decision_and_action_leaves_a_decision_without_outcome() {
    let db = TestDb::new(SETUP).await;
    // Hold the row so the approved UPDATE blocks after its decision is on disk.
    let mut holder = db.admin().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM orders WHERE id = 1 FOR UPDATE", &[])
        .await
        .unwrap();

    let server = TestServer::builder().database(&db).policy(ALLOW_ALL).start().await;
    let audit = server.audit_path();
    let call = server
        .start_call(
            "query",
            json!({"sql": "UPDATE orders SET status = 'paid' WHERE id = 1"}),
        )
        .await;
    eventually(Duration::from_secs(10), "a decision record", async || {
        let trail = std::fs::read_to_string(&audit).unwrap_or_default();
        trail.contains("\"event\":\"decision\"").then_some(())
    })
    .await;
    // The change runs only once its decision is durable and checkpointed: wait until it is in
    // Postgres, blocked on the held row, so the crash falls between decision and action.
    let watcher = db.admin().await;
    eventually(Duration::from_secs(10), "the UPDATE waiting on the row", async || {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE orders%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (waiting > 0).then_some(())
    })
    .await;
    // SAFETY: sending SIGKILL to our own child.
    unsafe { libc::kill(server.pid() as i32, libc::SIGKILL) };
    let _ = call.await_response().await;
    tx.rollback().await.unwrap();

    let records = pgwarden::audit::verify::verify(&audit).expect("the chain is whole after a crash");
    let last = records.last().unwrap();
    assert_eq!(last.event, Some(Event::Decision));
    assert!(
        !records
            .iter()
            .any(|r| r.event == Some(Event::Outcome) && r.call_id == last.call_id),
        "a visible decision without an outcome"
    );
    // Issue 16 item 7: `audit verify` says so with its own exit code, and `audit show` marks it.
    let (code, out) = verify_with_key(&audit);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("UNFINISHED: 1 change(s)") && out.contains("UPDATE orders"),
        "{out}"
    );
    let show = Command::new(BIN).args(["audit", "show"]).arg(&audit).output().unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.lines()
            .any(|l| l.contains("UNFINISHED") && l.contains("UPDATE orders")),
        "{show}"
    );
}

/// `pgwarden audit verify --key <the .pub beside the log>`: its exit code and output.
fn verify_with_key(log: &std::path::Path) -> (Option<i32>, String) {
    let key = log.with_file_name("audit-signing.key.pub");
    let out = Command::new(BIN)
        .args(["audit", "verify", "--key"])
        .arg(&key)
        .arg(log)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A real `pgwarden serve` over stdio with an allow-all policy, its trail in its own directory,
/// checkpoints every 100 ms.
async fn served(db: &TestDb) -> Mcp {
    TestServer::builder()
        .database(db)
        .policy(ALLOW_ALL)
        .args(["--audit-checkpoint-every", "100ms"])
        .start()
        .await
}

async fn read(server: &Mcp, n: i32) {
    server.ok("query", json!({"sql": format!("SELECT {n} AS n")})).await;
}

/// Waits until a checkpoint covers the log's last record.
async fn sealed(log: &std::path::Path) {
    let trail = || {
        let files = pgwarden::audit::verify::trail_files(log);
        pgwarden::audit::verify::verify_trail(&files, &pgwarden::audit::default_checkpoints(log), None)
    };
    let covered = poll(Duration::from_secs(10), async || {
        let r = trail();
        (r.sealed.as_ref().map(|s| s.0) == r.records.last().map(|l| l.seq) && r.sealed.is_some()).then_some(())
    });
    if covered.await.is_none() {
        panic!("no checkpoint covers the head: {:?}", trail());
    }
}

/// Issue 16 item 7: cutting the last records of a running server's trail passed `audit verify`.
#[tokio::test]
async fn records_cut_from_a_running_servers_trail_are_proved_missing() {
    let db = TestDb::new(SETUP).await;
    let mut server = served(&db).await;
    let audit = server.audit_path();
    for n in 0..4 {
        read(&server, n).await;
    }
    sealed(&audit).await;
    let (code, out) = verify_with_key(&audit);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("checkpoint(s) signed by ed25519:"), "{out}");
    // Cut the last two records while the server runs: the chain of what is left is whole.
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&audit, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    assert!(pgwarden::audit::verify::verify(&audit).is_ok());
    let (code, out) = verify_with_key(&audit);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("records were cut from its end"), "{out}");
    // The server notices on its next record and says what is missing.
    read(&server, 9).await;
    let (code, out) = verify_with_key(&audit);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("missing while it ran"), "{out}");
    server.close().await;
}

/// Issue 16 item 9: records went into the unlinked or renamed file after `rm`/`mv` of the live
/// trail. Now the server notices on its next record and carries the chain on at the path; SIGHUP
/// rotates with the chain continuing.
#[tokio::test]
async fn a_running_servers_trail_rotates_on_sighup_and_survives_being_moved() {
    let db = TestDb::new(SETUP).await;
    let mut server = served(&db).await;
    let audit = server.audit_path();
    read(&server, 1).await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    eventually(Duration::from_secs(10), "SIGHUP to rotate the trail", async || {
        (pgwarden::audit::verify::trail_files(&audit).len() >= 2).then_some(())
    })
    .await;
    read(&server, 2).await;
    sealed(&audit).await;
    let (code, out) = verify_with_key(&audit);
    let dump: String = pgwarden::audit::verify::trail_files(&audit)
        .iter()
        .map(|f| format!("{}:\n{}", f.display(), std::fs::read_to_string(f).unwrap_or_default()))
        .collect();
    assert_eq!(code, Some(0), "{out}\n{dump}");
    assert!(out.contains("holds") && out.contains("2 files"), "{out}");
    // `mv` the live file away: the next record lands at the path, not in the moved file.
    let moved = server.dir().join("moved.jsonl");
    std::fs::rename(&audit, &moved).unwrap();
    let moved_len = std::fs::metadata(&moved).unwrap().len();
    read(&server, 3).await;
    assert_eq!(std::fs::metadata(&moved).unwrap().len(), moved_len);
    let records = pgwarden::audit::verify::verify(&audit).unwrap();
    assert_eq!(records[0].event, Some(Event::Continued));
    assert_eq!(records[1].sql.as_deref(), Some("SELECT 3 AS n"));
    let (code, out) = verify_with_key(&audit);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("moved away) while in use"), "{out}");
    server.close().await;
}

/// Issue 16 item 11: a password Postgres joins across a line break, and an error message quoting a
/// secret value, reached the audit file.
#[tokio::test]
async fn secrets_split_across_literals_or_quoted_in_errors_never_reach_the_trail() {
    let db = TestDb::new(SETUP).await;
    db.admin()
        .await
        .batch_execute("ALTER ROLE pgwarden_agent CREATEROLE")
        .await
        .unwrap();
    let reviewer = Reviewer::says("approve", None, None);
    let mcp = Mcp::reviewed(&db, POLICY, reviewer, Era::Legacy).await;
    mcp.call(
        "query",
        json!({"sql": "CREATE ROLE audit_probe2 LOGIN PASSWORD 'abc'\n'hunter2-joined'"}),
    )
    .await;
    // Postgres quotes the literal in its error: `invalid input syntax for type integer: "…"`.
    mcp.call(
        "query",
        json!({"sql": "ALTER ROLE audit_probe2 CONNECTION LIMIT 1 VALID UNTIL 'hunter2-in-error'"}),
    )
    .await;
    let raw = std::fs::read_to_string(mcp.audit_path()).unwrap();
    assert!(!raw.contains("hunter2"), "a secret reached the audit file:\n{raw}");
    assert!(raw.contains("[redacted]"), "{raw}");
}

/// What `audit verify` quotes from a record (a `continued` record's reason) may come from a forger:
/// it reaches the terminal escaped.
#[test]
fn audit_verify_shows_quoted_record_text_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    log.append(
        pgwarden::audit::Record {
            event: Some(Event::Continued),
            details: Some(json!({"reason": "\u{1b}[2J\u{1b}[Hok: all is well\u{202e}"})),
            ..Default::default()
        },
        true,
    )
    .unwrap();
    let out = Command::new(BIN).args(["audit", "verify"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(!stdout.contains('\u{1b}') && !stdout.contains('\u{202e}'), "{stdout:?}");
    assert!(stdout.contains("\\u{001B}[2J"), "{stdout}");
}
