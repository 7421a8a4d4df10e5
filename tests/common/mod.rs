//! Test harness: one throwaway PostgreSQL cluster per test binary (started with pgwarden's own
//! cluster code, stopped by a watchdog when the test process exits, however it exits), a fresh
//! database per test, and a real MCP session with the real server over an in-process pipe.
#![allow(dead_code)]

use std::{
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use pgwarden::{
    PgWarden,
    config::Limits,
    db::{
        Database, Target,
        cluster::{Cluster, Owner, find_binaries},
        sandbox::HARDEN_SQL,
    },
    pipeline::Pipeline,
    policy::Policy,
};
use rmcp::{
    ClientHandler, ClientLifecycleMode, ClientServiceExt, ErrorData, RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult,
        ElicitationAction, Implementation, ProtocolVersion,
    },
    service::{RequestContext, RunningService},
};
use serde_json::Value;

pub const AGENT: &str = "pgwarden_agent";
/// Owns the tables of an [`TestDb::owned`] database; approved changes there run as it.
pub const OWNER: &str = "pgwarden_owner";

pub struct TestCluster {
    pub cluster: Cluster,
    _watchdog: Mutex<Child>,
}

static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
static DB_COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The shared cluster of this test binary, started on first use.
pub fn cluster() -> &'static TestCluster {
    CLUSTER.get_or_init(|| {
        let owner = Owner::for_current_process().expect("cluster owner");
        // Under /tmp so that the `postgres` user can reach it when we run as root.
        let dir = tempfile::Builder::new()
            .prefix("pgw-test-")
            .tempdir_in("/tmp")
            .expect("temp dir")
            .keep();
        let cluster = Cluster::new(dir.clone(), find_binaries().expect("PostgreSQL binaries"), owner).expect("cluster");
        cluster
            .init(&[
                "fsync = off",
                "synchronous_commit = off",
                "full_page_writes = off",
                "max_connections = 200",
            ])
            .expect("initdb");
        cluster.start().expect("start cluster");
        // The watchdog holds a pipe from us; when this process ends for any reason the pipe closes,
        // `cat` returns, and the cluster is stopped and its files removed.
        let pg_ctl = cluster.bindir.join("pg_ctl");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "cat >/dev/null; '{}' stop -D '{}' -m immediate >/dev/null 2>&1; rm -rf '{}'",
                pg_ctl.display(),
                cluster.data_dir().display(),
                dir.display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/tmp");
        if let Some(o) = owner {
            use std::os::unix::process::CommandExt;
            cmd.uid(o.uid).gid(o.gid);
        }
        let watchdog = cmd.spawn().expect("watchdog");
        let setup = format!("CREATE ROLE {AGENT} LOGIN; CREATE ROLE {OWNER} LOGIN");
        block_on_sql(&cluster, "postgres", &setup);
        block_on_sql(&cluster, "template1", HARDEN_SQL);
        TestCluster {
            cluster,
            _watchdog: Mutex::new(watchdog),
        }
    })
}

fn block_on_sql(cluster: &Cluster, db: &str, sql: &str) {
    let config = cluster.connect_config("postgres", db);
    let sql = sql.to_string();
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let (client, conn) = config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .expect("connect as postgres");
                    tokio::spawn(conn);
                    client.batch_execute(&sql).await.expect("setup SQL");
                })
        });
    });
}

/// A fresh database, with `setup` run in it as its owner: the agent role itself ([`TestDb::new`]),
/// or [`OWNER`] with the agent reading what `pgwarden setup` granted ([`TestDb::owned`]).
pub struct TestDb {
    pub name: String,
    /// Set for [`TestDb::owned`]: approved changes run as this login.
    pub owner: Option<&'static str>,
}

impl TestDb {
    pub async fn new(setup: &str) -> TestDb {
        Self::create(AGENT, setup).await
    }

    /// A database whose objects [`OWNER`] owns, set up by `pgwarden setup` (as the superuser) for
    /// the masks of `policy` (TOML text): the agent reads through Postgres's privileges.
    pub async fn owned(setup: &str, policy: &str) -> TestDb {
        let mut db = Self::create(OWNER, setup).await;
        db.owner = Some(OWNER);
        db.setup(policy).await.expect("pgwarden setup");
        db
    }

    /// A database whose objects [`OWNER`] owns, before any `pgwarden setup`.
    pub async fn create_for_setup(setup: &str) -> TestDb {
        let mut db = Self::create(OWNER, setup).await;
        db.owner = Some(OWNER);
        db
    }

    /// Runs `pgwarden setup` for `policy` (TOML text) as the superuser.
    pub async fn setup(&self, policy: &str) -> Result<pgwarden::db::setup::SetupReport, String> {
        let policy = Policy::parse("test.toml", policy).unwrap_or_else(|e| panic!("test policy: {e}"));
        let target = Target::from_config(cluster().cluster.connect_config("postgres", &self.name)).unwrap();
        let request = pgwarden::db::setup::SetupRequest {
            agent_role: AGENT.into(),
            schemas: vec![],
            print_only: false,
        };
        pgwarden::db::setup::run(&target, &policy.masks, &request)
            .await
            .map_err(|e| e.to_string())
    }

    async fn create(owner: &str, setup: &str) -> TestDb {
        let c = &cluster().cluster;
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let admin = superuser(c, "postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner}"))
            .await
            .expect("create database");
        if !setup.is_empty() {
            role_client(owner, &name)
                .await
                .batch_execute(setup)
                .await
                .expect("test setup SQL");
        }
        TestDb { name, owner: None }
    }

    pub fn config(&self) -> tokio_postgres::Config {
        cluster().cluster.connect_config(AGENT, &self.name)
    }

    pub async fn database(&self, pool_size: usize) -> Database {
        let change = self
            .owner
            .map(|o| Target::from_config(cluster().cluster.connect_config(o, &self.name)).unwrap());
        Database::connect_with_change(Target::from_config(self.config()).unwrap(), change, pool_size)
            .await
            .expect("connect")
    }

    /// A direct connection as the owner of the tables (the agent for [`TestDb::new`]).
    pub async fn owner_client(&self) -> tokio_postgres::Client {
        role_client(self.owner.unwrap_or(AGENT), &self.name).await
    }

    /// A direct connection (as the agent role) for checking what really happened.
    pub async fn client(&self) -> tokio_postgres::Client {
        agent_client(&self.name).await
    }

    /// A direct superuser connection to this database.
    pub async fn admin(&self) -> tokio_postgres::Client {
        superuser(&cluster().cluster, &self.name).await
    }
}

async fn superuser(c: &Cluster, db: &str) -> tokio_postgres::Client {
    let (client, conn) = c
        .connect_config("postgres", db)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect as postgres");
    tokio::spawn(conn);
    client
}

async fn agent_client(db: &str) -> tokio_postgres::Client {
    role_client(AGENT, db).await
}

async fn role_client(role: &str, db: &str) -> tokio_postgres::Client {
    let (client, conn) = cluster()
        .cluster
        .connect_config(role, db)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect as agent");
    tokio::spawn(conn);
    client
}

/// An MCP client session with a real pgwarden server, in process over a duplex pipe. `H` is the
/// client's handler: `()` declares no elicitation; [`Reviewer`] answers approval prompts.
pub struct Mcp<H: ClientHandler = ()> {
    pub client: RunningService<RoleClient, H>,
    /// The server's pipeline, for what a test plays outside MCP (the approval store).
    pub pipeline: Arc<Pipeline>,
    /// The server's review console, which a test plays the browser of.
    pub console: Arc<pgwarden::console::Console>,
    /// Holds this server's audit trail (`audit.jsonl`); removed with the session.
    pub audit_dir: Arc<tempfile::TempDir>,
}

/// A fresh audit trail in its own temporary directory.
fn audit_log() -> (Arc<tempfile::TempDir>, Arc<pgwarden::audit::AuditLog>) {
    let dir = tempfile::Builder::new()
        .prefix("pgw-audit-")
        .tempdir_in("/tmp")
        .unwrap();
    let log = pgwarden::audit::AuditLog::open(&dir.path().join("audit.jsonl")).expect("audit log");
    (Arc::new(dir), Arc::new(log))
}

/// How the scripted reviewer answers.
#[derive(Clone)]
pub enum Answer {
    Reply(ElicitResult),
    /// Never answers (until the server gives up and cancels the prompt).
    Hang,
    /// Answers after a while, as a person taking their time would.
    After(Duration, ElicitResult),
    /// Answers after a while even if the server withdrew the prompt meanwhile (a client that did
    /// not notice the withdrawal).
    Late(Duration, ElicitResult),
}

/// One progress notification: (progress, message).
pub type Progress = (f64, Option<String>);

/// A client that can show prompts and answers them from a script, recording every message shown.
#[derive(Clone)]
pub struct Reviewer {
    pub answer: Arc<Mutex<Answer>>,
    pub seen: Arc<Mutex<Vec<String>>>,
    pub elicitation: bool,
    /// Progress notifications received: (progress, message).
    pub progress: Arc<Mutex<Vec<Progress>>>,
    /// Prompts the server withdrew (cancelled) while they were open.
    pub withdrawn: Arc<Mutex<usize>>,
    /// The `requestedSchema` of every form prompt shown.
    pub forms: Arc<Mutex<Vec<Value>>>,
    /// The protocol version it asks for at `initialize`; defaults to 2025-06-18.
    pub protocol: ProtocolVersion,
}

impl Reviewer {
    pub fn new(answer: Answer) -> Reviewer {
        Reviewer {
            answer: Arc::new(Mutex::new(answer)),
            seen: Arc::new(Mutex::new(Vec::new())),
            elicitation: true,
            progress: Arc::new(Mutex::new(Vec::new())),
            withdrawn: Arc::new(Mutex::new(0)),
            forms: Arc::new(Mutex::new(Vec::new())),
            protocol: ProtocolVersion::V_2025_06_18,
        }
    }

    /// Answers `decision` (with optional row limit and reason), as a person clicking the form would.
    pub fn says(decision: &str, max_rows_affected: Option<u64>, reason: Option<&str>) -> Reviewer {
        let mut content = serde_json::json!({ "decision": decision });
        if let Some(n) = max_rows_affected {
            content["max_rows_affected"] = n.into();
        }
        if let Some(r) = reason {
            content["reason"] = r.into();
        }
        Reviewer::new(Answer::Reply(
            ElicitResult::new(ElicitationAction::Accept).with_content(content),
        ))
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn prompts(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl ClientHandler for Reviewer {
    fn get_info(&self) -> ClientConfig {
        let caps = if self.elicitation {
            ClientCapabilities::builder().enable_elicitation().build()
        } else {
            ClientCapabilities::default()
        };
        ClientConfig::new(caps, Implementation::new("pgwarden-test-reviewer", "1.0"))
            .with_protocol_version(self.protocol.clone())
    }

    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _cx: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push((params.progress, params.message));
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        cx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if let ElicitRequestParams::FormElicitationParams {
            message,
            requested_schema,
            ..
        } = &request
        {
            self.seen.lock().unwrap().push(message.clone());
            self.forms
                .lock()
                .unwrap()
                .push(serde_json::to_value(requested_schema).unwrap());
        }
        let answer = self.answer.lock().unwrap().clone();
        match answer {
            Answer::Reply(r) => Ok(r),
            Answer::Hang => {
                cx.ct.cancelled().await;
                *self.withdrawn.lock().unwrap() += 1;
                Ok(ElicitResult::new(ElicitationAction::Cancel))
            }
            Answer::Late(delay, r) => {
                tokio::time::sleep(delay).await;
                Ok(r)
            }
            Answer::After(delay, r) => tokio::select! {
                _ = tokio::time::sleep(delay) => Ok(r),
                _ = cx.ct.cancelled() => {
                    *self.withdrawn.lock().unwrap() += 1;
                    Ok(ElicitResult::new(ElicitationAction::Cancel))
                }
            },
        }
    }
}

/// Which protocol era a reviewed session negotiates.
#[derive(Clone, Copy, Debug)]
pub enum Era {
    /// `initialize`, 2025-06-18: prompts arrive as `elicitation/create` requests mid-call.
    Legacy,
    /// `server/discover`, 2026-07-28: prompts arrive in an `InputRequiredResult`.
    Modern,
}

/// A session with any client handler (its `get_info` declares its capabilities), legacy handshake.
pub async fn session<H: ClientHandler>(db: &TestDb, policy: &str, handler: H) -> Mcp<H> {
    session_in(db, policy, handler, Era::Legacy).await
}

/// A session with `handler`, deciding with `policy` (TOML text), in protocol era `era`.
pub async fn session_in<H: ClientHandler>(db: &TestDb, policy: &str, handler: H, era: Era) -> Mcp<H> {
    let policy = Policy::parse("test.toml", policy).unwrap_or_else(|e| panic!("test policy: {e}"));
    let (audit_dir, audit) = audit_log();
    let (pipeline, console, client_io) =
        spawn_server(db.database(2).await, limits(), policy, None, &audit_dir, audit).await;
    let client = match era {
        Era::Legacy => handler.serve(client_io).await.expect("MCP handshake"),
        Era::Modern => handler
            .serve_with_lifecycle(
                client_io,
                ClientLifecycleMode::Discover {
                    preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                },
            )
            .await
            .expect("MCP discover"),
    };
    Mcp {
        client,
        pipeline,
        console,
        audit_dir,
    }
}

/// A real server on one end of an in-process pipe, with its catalog facts loaded and watched until
/// the session ends; returns its pipeline and the client's end. Like `serve`, it refuses a policy
/// with masks that Postgres does not enforce.
async fn spawn_server(
    database: Database,
    limits: Limits,
    policy: Policy,
    principal: Option<String>,
    audit_dir: &tempfile::TempDir,
    audit: Arc<pgwarden::audit::AuditLog>,
) -> (Arc<Pipeline>, Arc<pgwarden::console::Console>, tokio::io::DuplexStream) {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    // Wired as `pgwarden serve` wires it: the approvals in memory, the card's and the console's
    // surfaces registered, the console never opening a real browser (a test plays the browser).
    let sink = pgwarden::audit::sink::FileSink::shared(audit);
    let approvals = pgwarden::approval::hub::Approvals::in_memory(policy.approval.clone(), sink.clone(), "test".into());
    approvals.register(Arc::new(pgwarden::approval::hub::CardSurface));
    let console =
        pgwarden::console::Console::new(approvals.store.clone(), "test".into(), audit_dir.path().join("console"));
    console.use_browser("false");
    approvals.register(console.clone());
    let pipeline = Arc::new(Pipeline::new(
        database,
        limits,
        Arc::new(policy),
        sink,
        approvals,
        audit_dir.path().join("exports"),
    ));
    pipeline.refresh_catalog().await.expect("catalog facts");
    if let Some(problem) = pipeline.masks_problem() {
        panic!("{problem}");
    }
    let watcher = tokio_util::sync::CancellationToken::new();
    pipeline.watch_catalog(watcher.clone());
    let session = pgwarden::server::Session::new(
        Arc::new(pgwarden::approval::StateSealer::new()),
        principal.map(pgwarden::call::Principal::new),
    );
    let server = PgWarden::new(pipeline.clone(), session);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
        watcher.cancel();
    });
    (pipeline, console, client_io)
}

impl Mcp<Reviewer> {
    /// A session with `reviewer` answering prompts, deciding with `policy` (TOML text).
    pub async fn reviewed(db: &TestDb, policy: &str, reviewer: Reviewer, era: Era) -> Mcp<Reviewer> {
        session_in(db, policy, reviewer, era).await
    }
}

impl Mcp {
    pub async fn start(db: &TestDb, limits: Limits) -> Mcp {
        Self::start_with(db.database(2).await, limits).await
    }

    pub async fn start_with(database: Database, limits: Limits) -> Mcp {
        Self::start_with_policy(database, limits, Policy::builtin(), None).await
    }

    /// A server deciding with `policy` (TOML text) as `principal`.
    pub async fn with_policy(db: &TestDb, policy: &str, principal: Option<&str>) -> Mcp {
        let policy = Policy::parse("test.toml", policy).unwrap_or_else(|e| panic!("test policy: {e}"));
        Self::start_with_policy(db.database(2).await, limits(), policy, principal.map(str::to_string)).await
    }

    pub async fn start_with_policy(
        database: Database,
        limits: Limits,
        policy: Policy,
        principal: Option<String>,
    ) -> Mcp {
        let (audit_dir, audit) = audit_log();
        Self::start_with_audit(database, limits, policy, principal, audit_dir, audit).await
    }

    /// A server writing its audit trail to `audit` (which may be unwritable, e.g. `/dev/full`).
    pub async fn start_with_audit(
        database: Database,
        limits: Limits,
        policy: Policy,
        principal: Option<String>,
        audit_dir: Arc<tempfile::TempDir>,
        audit: Arc<pgwarden::audit::AuditLog>,
    ) -> Mcp {
        let (pipeline, console, client_io) = spawn_server(database, limits, policy, principal, &audit_dir, audit).await;
        let client = ().serve(client_io).await.expect("MCP handshake");
        Mcp {
            client,
            pipeline,
            console,
            audit_dir,
        }
    }
}

impl<H: ClientHandler> Mcp<H> {
    pub fn audit_path(&self) -> std::path::PathBuf {
        self.audit_dir.path().join("audit.jsonl")
    }

    /// Every record of this server's audit trail, after checking the chain.
    pub fn audit_records(&self) -> Vec<pgwarden::audit::Record> {
        pgwarden::audit::verify::verify(&self.audit_path()).expect("the audit chain verifies")
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

pub fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn limits() -> Limits {
    Limits::default()
}

/// Peak resident memory (VmHWM) of a process, in KiB, for the benchmarks.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}
