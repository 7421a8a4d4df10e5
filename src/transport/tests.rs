//! The guard between a scripted client and a stand-in for rmcp, over in-process pipes.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::*;
use crate::audit::verify;

struct Wire {
    /// The client's end of stdin and stdout.
    client_in: DuplexStream,
    client_out: BufReader<DuplexStream>,
    /// rmcp's end: what it reads, and where it writes.
    rmcp_in: BufReader<DuplexStream>,
    rmcp_out: DuplexStream,
    _dir: tempfile::TempDir,
    audit: std::path::PathBuf,
}

/// With `broken_audit`, the trail ends in a line that is no record, so every append fails.
fn wire_with(broken_audit: bool) -> Wire {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = Arc::new(AuditLog::open(&path).unwrap());
    if broken_audit {
        std::fs::write(&path, "not a record\n").unwrap();
    }
    let (client_in, stdin) = tokio::io::duplex(1 << 16);
    let (stdout, client_out) = tokio::io::duplex(1 << 16);
    let (rmcp_in, rmcp_out) = guard(stdin, stdout, log);
    Wire {
        client_in,
        client_out: BufReader::new(client_out),
        rmcp_in: BufReader::new(rmcp_in),
        rmcp_out,
        _dir: dir,
        audit: path,
    }
}

fn wire() -> Wire {
    wire_with(false)
}

async fn line_of<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Value {
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
        .await
        .expect("a line within 10 s")
        .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

impl Wire {
    async fn send(&mut self, text: &str) {
        self.client_in.write_all(text.as_bytes()).await.unwrap();
        self.client_in.write_all(b"\n").await.unwrap();
    }

    fn refusals(&self) -> Vec<crate::audit::Record> {
        verify::verify(&self.audit)
            .unwrap()
            .into_iter()
            .filter(|r| r.outcome.as_ref().is_some_and(|o| o.status == "refused"))
            .collect()
    }
}

#[tokio::test]
async fn clean_lines_pass_both_ways_unchanged() {
    let mut w = wire();
    let request = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    w.send(request).await;
    w.send("not json at all").await;
    assert_eq!(
        line_of(&mut w.rmcp_in).await,
        serde_json::from_str::<Value>(request).unwrap()
    );
    let mut junk = String::new();
    w.rmcp_in.read_line(&mut junk).await.unwrap();
    assert_eq!(junk, "not json at all\n");
    w.rmcp_out
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n")
        .await
        .unwrap();
    assert_eq!(
        line_of(&mut w.client_out).await,
        json!({"jsonrpc":"2.0","id":1,"result":{}})
    );
    assert!(w.refusals().is_empty());
}

/// Issue 16 item 4: an answer to an approval prompt with `decision` twice was read last-wins.
#[tokio::test]
async fn an_answer_with_a_repeated_key_reaches_rmcp_as_an_error_for_its_request() {
    let mut w = wire();
    w.send(
        r#"{"jsonrpc":"2.0","id":0,"result":{"action":"accept","content":{"decision":"deny","decision":"approve"}}}"#,
    )
    .await;
    let got = line_of(&mut w.rmcp_in).await;
    assert_eq!(got["id"], json!(0), "{got}");
    assert_eq!(got["error"]["code"], json!(-32600), "{got}");
    let message = got["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("repeats the key `result.content.decision`"),
        "{message}"
    );
    let r = w.refusals();
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(
        r[0].outcome
            .as_ref()
            .unwrap()
            .message
            .as_ref()
            .unwrap()
            .contains("counts as no answer")
    );
}

#[tokio::test]
async fn a_request_with_a_repeated_key_is_answered_and_never_reaches_rmcp() {
    let mut w = wire();
    w.send(r#"{"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{"name":"query","arguments":{"sql":"SELECT 1","sql":"DROP TABLE t"}}}"#)
        .await;
    w.send(r#"{"jsonrpc":"2.0","id":2,"id":3,"method":"ping"}"#).await;
    w.send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"requestId":2}}"#)
        .await;
    w.send(r#"{"jsonrpc":"2.0","id":0,"id":1,"result":{}}"#).await;
    w.send(r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#).await;
    let first = line_of(&mut w.client_out).await;
    assert_eq!(first["id"], json!("r1"), "{first}");
    assert!(
        first["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`params.arguments.sql`"),
        "{first}"
    );
    // Which id was meant is unknown: `null`.
    let second = line_of(&mut w.client_out).await;
    assert_eq!(second["id"], Value::Null, "{second}");
    // Only the clean request reaches rmcp; the notification and the answer with two ids are dropped.
    assert_eq!(line_of(&mut w.rmcp_in).await["id"], json!(4));
    let r = w.refusals();
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(r[0].tool.as_deref(), Some("query"));
    assert_eq!(
        r[0].details.as_ref().unwrap()["repeated_key"],
        json!("params.arguments.sql")
    );
}

/// Issue 16 item 14: a line over 16 MiB was dropped and only logged; the request hung.
#[tokio::test]
async fn a_message_over_the_limit_is_answered_and_the_next_one_passes() {
    let mut w = wire();
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"query","arguments":{{"sql":"SELECT '{}'"}}}},"id":77}}"#,
        "x".repeat(MAX_MESSAGE_BYTES)
    );
    let (mut client_in, next) = (w.client_in, r#"{"jsonrpc":"2.0","id":78,"method":"ping"}"#);
    let writer = tokio::spawn(async move {
        client_in.write_all(big.as_bytes()).await.unwrap();
        client_in.write_all(b"\n").await.unwrap();
        client_in.write_all(next.as_bytes()).await.unwrap();
        client_in.write_all(b"\n").await.unwrap();
        client_in
    });
    let answer = line_of(&mut w.client_out).await;
    assert_eq!(answer["id"], json!(77), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("over pgwarden's 16 MiB limit") && message.contains("send less"),
        "{message}"
    );
    assert_eq!(line_of(&mut w.rmcp_in).await["id"], json!(78));
    w.client_in = writer.await.unwrap();
    let r = w.refusals();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].tool.as_deref(), Some("query"));
    assert!(r[0].details.as_ref().unwrap()["bytes"].as_u64().unwrap() > MAX_MESSAGE_BYTES as u64);
}

/// A line that fits is passed on whole, newline included, so rmcp's own limit never drops it.
#[tokio::test]
async fn a_message_at_the_limit_passes() {
    let mut w = wire();
    let head = r#"{"jsonrpc":"2.0","id":5,"method":"ping","params":{"pad":""#;
    let tail = r#""}}"#;
    let pad = "p".repeat(MAX_MESSAGE_BYTES - head.len() - tail.len() - 1);
    let line = format!("{head}{pad}{tail}");
    let mut client_in = w.client_in;
    let writer = tokio::spawn(async move {
        client_in.write_all(line.as_bytes()).await.unwrap();
        client_in.write_all(b"\n").await.unwrap();
        client_in
    });
    let mut got = Vec::new();
    w.rmcp_in.read_until(b'\n', &mut got).await.unwrap();
    assert_eq!(got.len(), MAX_MESSAGE_BYTES);
    w.client_in = writer.await.unwrap();
}

#[tokio::test]
async fn an_unwritable_audit_trail_still_refuses() {
    let mut w = wire_with(true);
    w.send(r#"{"jsonrpc":"2.0","id":9,"id":9,"method":"ping"}"#).await;
    assert_eq!(line_of(&mut w.client_out).await["error"]["code"], json!(-32600));
    assert_eq!(std::fs::read_to_string(&w.audit).unwrap(), "not a record\n");
}

#[tokio::test]
async fn the_end_of_stdin_closes_rmcps_input() {
    let mut w = wire();
    w.send(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
    w.client_in.write_all(b"{\"partial\":").await.unwrap();
    w.client_in.shutdown().await.unwrap();
    drop(w.client_in);
    let mut all = String::new();
    tokio::time::timeout(Duration::from_secs(5), w.rmcp_in.read_to_string(&mut all))
        .await
        .expect("rmcp's input ends")
        .unwrap();
    assert_eq!(all, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n");
}

#[test]
fn the_limit_is_rmcps() {
    assert_eq!(MAX_MESSAGE_BYTES, rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH);
}
