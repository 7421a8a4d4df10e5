//! An MCP client session with a test server, in process or the real binary ([`Mcp`]): tool calls
//! as a client makes them, the server's files and trail, and shorthands for the usual servers.

use std::{
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::Arc,
    time::Duration,
};

use pgwarden::{config::Limits, pipeline::Databases};
use rmcp::{
    ClientHandler, RoleClient,
    model::{CallToolRequestParams, CallToolResult},
    service::RunningService,
};
use serde_json::Value;
use tokio::process::Child;

use super::{
    TestDb,
    server::{Era, TestServer, stderr_of},
    text,
};

/// An MCP client session with a real pgwarden server. `H` is the client's handler: `()` declares
/// no elicitation; [`super::Reviewer`] answers approval prompts.
pub struct Mcp<H: ClientHandler = ()> {
    pub client: RunningService<RoleClient, H>,
    /// The server's own directory: `audit.jsonl`, `exports/`, and for the binary `policy.toml`,
    /// `stderr.log` and the runtime directory `run/`. Removed with the session.
    pub(super) dir: Arc<tempfile::TempDir>,
    pub(super) audit: PathBuf,
    pub(super) server: Server,
}

/// Where the server runs.
pub(super) enum Server {
    InProcess(Arc<Databases>, Arc<pgwarden::console::Console>),
    Child(Child),
}

/// A session with any client handler (its `get_info` declares its capabilities), in process,
/// deciding with `policy` (TOML text), legacy handshake.
pub async fn session<H: ClientHandler>(db: &TestDb, policy: &str, handler: H) -> Mcp<H> {
    session_in(db, policy, handler, Era::Legacy).await
}

/// [`session`] in protocol era `era`.
pub async fn session_in<H: ClientHandler>(db: &TestDb, policy: &str, handler: H, era: Era) -> Mcp<H> {
    TestServer::builder()
        .database(db)
        .policy(policy)
        .handler(handler)
        .era(era)
        .in_process()
        .await
}

impl Mcp<super::Reviewer> {
    /// A session with `reviewer` answering prompts, deciding with `policy` (TOML text), in process.
    pub async fn reviewed(db: &TestDb, policy: &str, reviewer: super::Reviewer, era: Era) -> Mcp<super::Reviewer> {
        session_in(db, policy, reviewer, era).await
    }
}

impl Mcp {
    /// An in-process server with the built-in policy and `limits`.
    pub async fn start(db: &TestDb, limits: Limits) -> Mcp {
        TestServer::builder().database(db).limits(limits).in_process().await
    }

    /// An in-process server deciding with `policy` (TOML text) as `principal`.
    pub async fn with_policy(db: &TestDb, policy: &str, principal: Option<&str>) -> Mcp {
        TestServer::builder()
            .database(db)
            .policy(policy)
            .principal(principal)
            .in_process()
            .await
    }
}

impl<H: ClientHandler> Mcp<H> {
    /// The in-process server's pipeline, for what a test plays outside MCP (the review console).
    pub fn pipeline(&self) -> &Arc<Databases> {
        match &self.server {
            Server::InProcess(pipeline, _) => pipeline,
            Server::Child(_) => panic!("the binary's pipeline is in another process"),
        }
    }

    /// The in-process server's review console, which a test plays the browser of.
    pub fn console(&self) -> &Arc<pgwarden::console::Console> {
        match &self.server {
            Server::InProcess(_, console) => console,
            Server::Child(_) => panic!("the binary's console is in another process"),
        }
    }

    /// The binary's process id.
    pub fn pid(&self) -> u32 {
        match &self.server {
            Server::Child(child) => child.id().expect("the server is running"),
            Server::InProcess(..) => panic!("an in-process server has no process of its own"),
        }
    }

    /// The server's own directory (see [`Mcp`]).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where `export` writes.
    pub fn export_dir(&self) -> PathBuf {
        self.dir().join("exports")
    }

    /// What the binary wrote to stderr so far.
    pub fn stderr(&self) -> String {
        stderr_of(&self.dir)
    }

    /// Ends the session as a client does, and waits for the binary to exit.
    pub async fn close(&mut self) -> ExitStatus {
        let _ = self.client.close().await;
        let Server::Child(child) = &mut self.server else {
            panic!("an in-process server has no process to wait for");
        };
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the server exits when its client leaves")
            .unwrap()
    }

    /// A request the server answers only after it has read everything the client sent before
    /// (an answer to a prompt, say).
    pub async fn round_trip(&self) {
        self.client.list_tools(None).await.expect("the server answers");
    }

    pub fn audit_path(&self) -> PathBuf {
        self.audit.clone()
    }

    /// Every record of this server's audit trail, after checking the chain.
    pub fn audit_records(&self) -> Vec<pgwarden::audit::Record> {
        pgwarden::audit::verify::verify(&self.audit).expect("the audit chain verifies")
    }

    /// Starts a tool call that the test can cancel (`handle.cancel(..)`) while it runs.
    pub async fn start_call(&self, tool: &str, args: Value) -> rmcp::service::RequestHandle<RoleClient> {
        use rmcp::model::{CallToolRequest, ClientRequest};
        let params = CallToolRequestParams::new(tool.to_string())
            .with_arguments(args.as_object().cloned().expect("object args"));
        self.client
            .peer()
            .send_cancellable_request(
                ClientRequest::CallToolRequest(CallToolRequest::new(params)),
                rmcp::service::PeerRequestOptions::no_options(),
            )
            .await
            .expect("send the tool call")
    }

    pub async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        let params = CallToolRequestParams::new(tool.to_string())
            .with_arguments(args.as_object().cloned().expect("object args"));
        tokio::time::timeout(Duration::from_secs(60), self.client.call_tool(params))
            .await
            .expect("tool call timed out")
            .expect("tool call failed at the protocol level")
    }

    /// Calls a tool that must succeed and returns its structured content.
    pub async fn ok(&self, tool: &str, args: Value) -> Value {
        let r = self.call(tool, args.clone()).await;
        assert_ne!(r.is_error, Some(true), "{tool} {args} failed: {}", text(&r));
        r.structured_content.clone().expect("structured content")
    }

    /// Calls a tool that must fail and returns the error text shown to the model.
    pub async fn err(&self, tool: &str, args: Value) -> String {
        let r = self.call(tool, args.clone()).await;
        assert_eq!(
            r.is_error,
            Some(true),
            "{tool} {args} should have failed but returned: {}",
            text(&r)
        );
        text(&r)
    }
}
