//! Issue 15, "no input crashes the server": a megabyte of chained SQL used to overflow the stack
//! while the tree was walked, printed or dropped, aborting the process with every call in flight.
//! Now it is `unknown` with the reason, and the server answers the next call.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use common::{Mcp, TestDb, limits};
use serde_json::{Value, json};

/// About 1 MB of one kind of chain.
fn megabyte_of(kind: &str) -> String {
    let (head, link, tail) = match kind {
        "+" => ("SELECT 1", "+1", ""),
        "AND" => ("SELECT true", " AND true", ""),
        "||" => ("SELECT 'a'", "||'a'", ""),
        "::int" => ("SELECT 1", "::int", ""),
        "UNION ALL" => ("SELECT 1", " UNION ALL SELECT 1", ""),
        "(" => ("SELECT ", "(", "1"),
        other => unreachable!("no chain `{other}`"),
    };
    let n = (1 << 20) / link.len();
    let close = if kind == "(" { ")".repeat(n) } else { String::new() };
    format!("{head}{}{tail}{close}", link.repeat(n))
}

const KINDS: [&str; 6] = ["+", "AND", "||", "::int", "UNION ALL", "("];

/// On a multi-thread runtime, as in `serve`: the call runs on a tokio worker with a 2 MiB stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_of_chained_sql_is_refused_and_the_server_answers_the_next_call() {
    let db = TestDb::new("").await;
    let mcp = Mcp::start(&db, limits()).await;
    for kind in KINDS {
        let err = mcp.err("query", json!({ "sql": megabyte_of(kind) })).await;
        assert!(err.contains("more than pgwarden reads"), "{kind}: {err}");
        let out = mcp.ok("query", json!({ "sql": "SELECT 1 + 1 AS two" })).await;
        assert_eq!(out["rows"], json!([[2]]), "after {kind}");
    }
}

#[test]
fn check_reads_a_megabyte_of_chained_sql_as_unknown() {
    for kind in KINDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgwarden"))
            .args(["check", "--format", "json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pgwarden check");
        let sql = megabyte_of(kind);
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(sql.as_bytes()));
        let out = child.wait_with_output().expect("pgwarden check ran");
        writer.join().expect("writer").expect("SQL written");
        assert!(
            out.status.success(),
            "{kind}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        assert_eq!(v["categories"], json!(["unknown"]), "{kind}");
        assert!(
            v["reasons"][0]
                .as_str()
                .is_some_and(|r| r.contains("more than pgwarden reads")),
            "{kind}: {v}"
        );
    }
}
