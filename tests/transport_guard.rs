//! Issue 16, items 4 and 14, against the real binary over stdio, spoken as raw JSON-RPC lines: a
//! request over 16 MiB used to be dropped and only logged (the client waited forever), and JSON with
//! a repeated key was read last-wins — an approval answer `{"decision":"deny","decision":"approve"}`
//! approved.

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

mod common;

use std::time::Duration;

use common::{RawServer, TestDb, TestServer};
use serde_json::json;

const SETUP: &str = "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);
                     INSERT INTO orders VALUES (1, 'open'), (2, 'open');";
const UPDATE: &str = "UPDATE orders SET status = 'cancelled' WHERE status = 'open'";

/// Reads and writes run; nothing needs a person.
const ALLOW_WRITES: &str = r#"
[[rule]]
id = "reads-and-writes-run"
effect = "allow"
categories = ["read", "write"]
"#;

/// Writes need the client's own prompt (no console, so nothing opens a browser).
const WRITES_NEED_APPROVAL: &str = r#"
[approval]
channels = ["elicitation"]

[approval.min_channel]
critical = "client"

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]

[[rule]]
id = "writes-need-approval"
effect = "approve"
categories = ["write"]
"#;

/// `pgwarden serve` on `db` with `policy`, initialized by a client that builds its own JSON-RPC;
/// with `elicitation` it declares it can show prompts.
async fn start(db: &TestDb, policy: &str, elicitation: bool) -> RawServer {
    let mut server = TestServer::builder().database(db).policy(policy).start_raw().await;
    let capabilities = if elicitation {
        json!({ "elicitation": {} })
    } else {
        json!({})
    };
    server.initialize(capabilities).await;
    server
}

fn records(server: &RawServer) -> Vec<pgwarden::audit::Record> {
    pgwarden::audit::verify::verify(server.audit_path()).expect("the audit chain verifies")
}

/// Ends the session as a client does, by closing stdin; the server must exit cleanly.
async fn close(server: RawServer) {
    let (_, status, _) = server.finish().await;
    assert!(status.success(), "{status}");
}

async fn statuses(db: &TestDb) -> Vec<String> {
    db.column("SELECT status FROM orders ORDER BY id").await
}

fn refusals(server: &RawServer) -> Vec<pgwarden::audit::Record> {
    records(server)
        .into_iter()
        .filter(|r| r.outcome.as_ref().is_some_and(|o| o.status == "refused"))
        .collect()
}

#[tokio::test]
async fn a_request_over_16_mib_is_answered_with_an_error_audited_and_the_next_one_runs() {
    let db = TestDb::new(SETUP).await;
    let mut server = start(&db, ALLOW_WRITES, false).await;
    let sql = format!("SELECT '{}'", "x".repeat(17 << 20));
    let big = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"query","arguments":{"sql":sql}}});
    let big = big.to_string().into_bytes();
    let size = big.len();
    let started = std::time::Instant::now();
    server.send_raw(&big).await;
    let answer = server.reply(2).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(answer["error"]["code"], json!(-32600), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("the request is {size} bytes, over pgwarden's 16 MiB limit"))
            && message.contains("send less"),
        "{message}"
    );
    let refused = refusals(&server);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].tool.as_deref(), Some("query"));
    assert_eq!(refused[0].outcome.as_ref().unwrap().message.as_deref(), Some(message));

    let next = server.call(3, "query", json!({"sql": "SELECT 1 + 1 AS two"})).await;
    assert_eq!(next["result"]["isError"], json!(false), "{next}");
    assert_eq!(next["result"]["structuredContent"]["rows"], json!([[2]]), "{next}");
    close(server).await;
}

#[tokio::test]
async fn a_request_with_a_repeated_key_is_refused_and_nothing_runs() {
    let db = TestDb::new(SETUP).await;
    let mut server = start(&db, ALLOW_WRITES, false).await;
    // serde_json alone would read the second `sql`, which the policy lets run.
    let line = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"query","arguments":{{"sql":"SELECT status FROM orders","sql":"{UPDATE}"}}}}}}"#
    );
    server.send_raw(line.as_bytes()).await;
    let answer = server.reply(2).await;
    assert_eq!(answer["error"]["code"], json!(-32600), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("repeats the key `params.arguments.sql`"), "{message}");
    assert_eq!(statuses(&db).await, ["open", "open"]);
    let refused = refusals(&server);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].tool.as_deref(), Some("query"));
    // No call reached the pipeline.
    assert!(
        records(&server).iter().all(|r| r.sql.is_none()),
        "{:?}",
        records(&server)
    );

    // The policy does let the update run: only the repeat stopped it.
    let next = server.call(3, "query", json!({ "sql": UPDATE })).await;
    assert_eq!(next["result"]["isError"], json!(false), "{next}");
    assert_eq!(statuses(&db).await, ["cancelled", "cancelled"]);
    close(server).await;
}

#[tokio::test]
async fn an_approval_answer_with_decision_twice_does_not_approve() {
    let db = TestDb::new(SETUP).await;
    let mut server = start(&db, WRITES_NEED_APPROVAL, true).await;
    server
        .send(
            &json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"query","arguments":{"sql":UPDATE}}}),
        )
        .await;
    let prompt = server.next(|v| v["method"] == json!("elicitation/create")).await;
    let answer = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"action":"accept","content":{{"decision":"deny","decision":"approve"}}}}}}"#,
        prompt["id"]
    );
    server.send_raw(answer.as_bytes()).await;
    let result = server.reply(2).await;
    assert_eq!(result["result"]["isError"], json!(true), "{result}");
    assert_eq!(statuses(&db).await, ["open", "open"]);
    let records = records(&server);
    let call = records
        .iter()
        .find(|r| r.sql.as_deref().is_some_and(|s| s.starts_with("UPDATE")))
        .expect("the call's record");
    assert_eq!(call.outcome.as_ref().unwrap().status, "not_approved", "{call:?}");
    let refused = refusals(&server);
    assert_eq!(refused.len(), 1, "{records:?}");
    let why = refused[0].outcome.as_ref().unwrap().message.as_deref().unwrap();
    assert!(why.contains("repeats the key `result.content.decision`"), "{why}");

    // A clean answer still approves: the guard refuses the repeat, not the prompt.
    server
        .send(
            &json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"query","arguments":{"sql":UPDATE}}}),
        )
        .await;
    let prompt = server.next(|v| v["method"] == json!("elicitation/create")).await;
    server
        .send(&json!({"jsonrpc":"2.0","id":prompt["id"],"result":{"action":"accept","content":{"decision":"approve"}}}))
        .await;
    let result = server.reply(3).await;
    assert_eq!(result["result"]["isError"], json!(false), "{result}");
    assert_eq!(statuses(&db).await, ["cancelled", "cancelled"]);
    close(server).await;
}

/// pgwarden declares no prompts capability, so `prompts/*` are unknown methods (-32601), not an
/// empty list that reads as support (conformance: sep-2575-server-declares-prompts-in-discover).
#[tokio::test]
async fn prompts_are_not_methods_pgwarden_has() {
    let db = TestDb::new(SETUP).await;
    let mut server = start(&db, WRITES_NEED_APPROVAL, false).await;
    server
        .send(&json!({"jsonrpc":"2.0","id":7,"method":"prompts/list"}))
        .await;
    assert_eq!(server.reply(7).await["error"]["code"], json!(-32601));
    server
        .send(&json!({"jsonrpc":"2.0","id":8,"method":"prompts/get","params":{"name":"x"}}))
        .await;
    assert_eq!(server.reply(8).await["error"]["code"], json!(-32601));
    close(server).await;
}
