//! The real `pgwarden serve` spoken to in raw JSON-RPC lines ([`RawServer`]), for what an SDK
//! client would never send: oversized requests, repeated keys, hand-written answers.

use std::{
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::Arc,
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
};

use super::server::stderr_of;

/// The real `pgwarden serve` spoken to line by line, as a client that builds its own JSON-RPC.
pub struct RawServer {
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) stdout: Lines<BufReader<ChildStdout>>,
    pub(super) dir: Arc<tempfile::TempDir>,
    pub(super) audit: PathBuf,
}

impl RawServer {
    /// `initialize` (2025-06-18) with `capabilities`, then `notifications/initialized`.
    pub async fn initialize(&mut self, capabilities: Value) {
        self.send(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":capabilities,"clientInfo":{"name":"raw","version":"0"}}}))
            .await;
        let init = self.reply(1).await;
        assert!(init["result"]["serverInfo"].is_object(), "{init}");
        self.send(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await;
    }

    pub async fn send(&mut self, message: &Value) {
        self.send_raw(message.to_string().as_bytes()).await;
    }

    /// Writes `line` as it is, then a newline.
    pub async fn send_raw(&mut self, line: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// The next JSON-RPC message from the server that `wanted` accepts (others are skipped);
    /// anything on stdout that is not a JSON-RPC message fails the test.
    pub async fn next(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let read = async {
            loop {
                let line = self
                    .stdout
                    .next_line()
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("the server closed stdout:\n{}", stderr_of(&self.dir)));
                let v = protocol(&line);
                // Shown when a test fails.
                eprintln!("<- {}", line.chars().take(300).collect::<String>());
                if wanted(&v) {
                    return v;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the server answered within 30 s")
    }

    /// The server's answer to our request `id`.
    pub async fn reply(&mut self, id: i64) -> Value {
        self.next(|v| v["id"] == json!(id) && v.get("method").is_none()).await
    }

    pub async fn call(&mut self, id: i64, tool: &str, arguments: Value) -> Value {
        self.send(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":arguments}}))
            .await;
        self.reply(id).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        stderr_of(&self.dir)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn audit_records(&self) -> Vec<pgwarden::audit::Record> {
        pgwarden::audit::verify::verify(&self.audit).expect("the audit chain verifies")
    }

    pub fn audit_path(&self) -> &Path {
        &self.audit
    }

    /// Ends the session as a client does, by closing stdin; returns what the server wrote to stdout
    /// after that (each a JSON-RPC message), how it exited, and its stderr.
    pub async fn finish(mut self) -> (Vec<Value>, ExitStatus, String) {
        drop(self.stdin.take());
        let rest = async {
            let mut rest = Vec::new();
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                rest.push(protocol(&line));
            }
            let status = self.child.wait().await.unwrap();
            (rest, status)
        };
        let (rest, status) = tokio::time::timeout(Duration::from_secs(30), rest)
            .await
            .expect("the server exits when stdin ends");
        (rest, status, stderr_of(&self.dir))
    }
}

/// A line of the server's stdout, which carries nothing but JSON-RPC messages.
fn protocol(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON on stdout: {line:?} ({e})"));
    assert_eq!(v["jsonrpc"], json!("2.0"), "not JSON-RPC on stdout: {line}");
    v
}
