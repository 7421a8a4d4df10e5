//! Test servers from one builder ([`TestServer::builder`]): the real `pgwarden serve` binary over
//! stdio ([`ServerBuilder::start`], [`ServerBuilder::start_raw`], [`ServerBuilder::output`]) or the
//! same server in this process over a pipe ([`ServerBuilder::in_process`]), on the suite's cluster,
//! with a policy, the person in the client, a protocol era and its own audit trail.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use pgwarden::{
    PgWarden,
    approval::{
        StateSealer,
        hub::{Approvals, CardSurface},
    },
    call::Principal,
    config::Limits,
    console::Console,
    db::Database,
    pipeline::{Databases, Pipeline},
    policy::Policy,
    server::Session,
};
use rmcp::{
    ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt, model::ProtocolVersion,
    service::RunningService,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Child,
};

use super::{
    TestDb,
    console::FakeBrowser,
    mcp::{Mcp, Server},
    raw::RawServer,
};

/// The `pgwarden` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_pgwarden");

/// How long a server has to answer `initialize` (a sandbox is created on first start).
const HANDSHAKE: Duration = Duration::from_secs(60);

/// Which protocol era a session negotiates.
#[derive(Clone, Copy, Debug)]
pub enum Era {
    /// `initialize`, 2025-06-18: prompts arrive as `elicitation/create` requests mid-call.
    Legacy,
    /// `server/discover`, 2026-07-28: prompts arrive in an `InputRequiredResult`.
    Modern,
}

/// Where test servers come from.
pub struct TestServer;

impl TestServer {
    /// A server with nothing chosen yet: no database, the built-in policy, a client that shows no
    /// prompts, the legacy era, a trail in the server's own directory, no browser.
    pub fn builder() -> ServerBuilder<()> {
        ServerBuilder {
            setup: Setup::default(),
            handler: (),
        }
    }
}

/// What a test server is made of; `H` is the client's handler (it declares what the client can do).
pub struct ServerBuilder<H> {
    setup: Setup,
    handler: H,
}

/// Everything but the client's handler.
#[derive(Default)]
struct Setup {
    db: Option<TestDb>,
    database_url: Option<String>,
    sandbox: Option<PathBuf>,
    policy: Option<String>,
    policy_file: Option<PathBuf>,
    era: Option<Era>,
    audit: Option<PathBuf>,
    browser: Option<PathBuf>,
    env: Vec<(OsString, Option<OsString>)>,
    args: Vec<OsString>,
    connected: Option<Database>,
    limits: Option<Limits>,
    principal: Option<String>,
}

impl<H: ClientHandler> ServerBuilder<H> {
    /// Serves `db`, as the agent (and, in process, its owner for approved changes).
    pub fn database(mut self, db: &TestDb) -> Self {
        self.setup.db = Some(db.clone());
        self
    }

    /// The binary serves this `--database-url` instead (one that must fail, say).
    pub fn database_url(mut self, url: &str) -> Self {
        self.setup.database_url = Some(url.to_string());
        self
    }

    /// The binary serves its sandbox cluster in `dir` (`--sandbox-dir`).
    pub fn sandbox(mut self, dir: &Path) -> Self {
        self.setup.sandbox = Some(dir.to_path_buf());
        self
    }

    /// Decides with `policy` (TOML text) instead of the built-in one.
    pub fn policy(mut self, policy: impl AsRef<str>) -> Self {
        self.setup.policy = Some(policy.as_ref().to_string());
        self
    }

    /// The binary decides with the policy file at `path` (`tool-policies/…`).
    pub fn policy_file(mut self, path: &str) -> Self {
        self.setup.policy_file = Some(path.into());
        self
    }

    /// The client is `handler`; it declares what the client can do (prompts, MCP Apps).
    pub fn handler<H2: ClientHandler>(self, handler: H2) -> ServerBuilder<H2> {
        ServerBuilder {
            setup: self.setup,
            handler,
        }
    }

    /// The client is the scripted person `reviewer`, who answers approval prompts.
    pub fn reviewer(self, reviewer: super::Reviewer) -> ServerBuilder<super::Reviewer> {
        self.handler(reviewer)
    }

    /// The session negotiates protocol era `era` (legacy unless said).
    pub fn era(mut self, era: Era) -> Self {
        self.setup.era = Some(era);
        self
    }

    /// The audit trail goes to `path` instead of the server's own directory.
    pub fn audit(mut self, path: &Path) -> Self {
        self.setup.audit = Some(path.to_path_buf());
        self
    }

    /// The review console opens in `browser` (else it opens nowhere: no browser, no desktop).
    pub fn browser(mut self, browser: &FakeBrowser) -> Self {
        self.setup.browser = Some(browser.command());
        self
    }

    /// The binary runs with `key=value` in its environment.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.setup.env.push((key.into(), Some(value.into())));
        self
    }

    /// The binary runs without `key` in its environment.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.setup.env.push((key.into(), None));
        self
    }

    /// More `serve` flags for the binary.
    pub fn args<S: Into<OsString>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.setup.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// In process: reaches Postgres through `database` (a proxy, say) instead of the one `database` names.
    pub fn connected(mut self, database: Database) -> Self {
        self.setup.connected = Some(database);
        self
    }

    /// In process: row cap, result bytes and statement timeout.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.setup.limits = Some(limits);
        self
    }

    /// In process: the caller is `principal`, for rules with `principals`.
    pub fn principal(mut self, principal: Option<&str>) -> Self {
        self.setup.principal = principal.map(str::to_string);
        self
    }

    /// The real `pgwarden serve`, a child over stdio, with an MCP session in the chosen era.
    pub async fn start(self) -> Mcp<H> {
        let era = self.setup.era.unwrap_or(Era::Legacy);
        let (dir, audit) = self.setup.files();
        let mut child = self.setup.child(&dir, &audit);
        let io = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
        let client = match tokio::time::timeout(HANDSHAKE, handshake(self.handler, io, era)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!("no MCP session with pgwarden serve: {e}\n{}", stderr_of(&dir)),
            Err(_) => panic!(
                "pgwarden serve did not answer within {HANDSHAKE:?}\n{}",
                stderr_of(&dir)
            ),
        };
        Mcp {
            client,
            dir,
            audit,
            server: Server::Child(child),
        }
    }

    /// The real `pgwarden serve`, spoken to in raw JSON-RPC lines, before `initialize`.
    pub async fn start_raw(self) -> RawServer {
        let (dir, audit) = self.setup.files();
        let mut child = self.setup.child(&dir, &audit);
        RawServer {
            stdin: Some(child.stdin.take().unwrap()),
            stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
            dir,
            audit,
        }
    }

    /// Runs the real `pgwarden serve` with no client (stdin at its end) until it exits.
    pub fn output(self) -> std::process::Output {
        let (dir, audit) = self.setup.files();
        self.setup
            .command(&dir, &audit)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run pgwarden serve")
    }

    /// The same server in this process over a pipe: its pipeline is at hand ([`Mcp::pipeline`]).
    /// Like `serve`, it refuses a policy with masks that Postgres does not enforce.
    pub async fn in_process(self) -> Mcp<H> {
        let mut setup = self.setup;
        for (what, given) in [
            ("a database URL", setup.database_url.is_some()),
            ("a sandbox", setup.sandbox.is_some()),
            ("a policy file", setup.policy_file.is_some()),
            ("environment", !setup.env.is_empty()),
            ("flags", !setup.args.is_empty()),
        ] {
            assert!(!given, "{what} is for the binary; an in-process server takes none");
        }
        let policy = match &setup.policy {
            Some(text) => Policy::parse("test.toml", text).unwrap_or_else(|e| panic!("test policy: {e}")),
            None => Policy::builtin(),
        };
        let database = match (setup.connected.take(), &setup.db) {
            (Some(database), _) => database,
            (None, Some(db)) => db.database(2).await,
            (None, None) => panic!("an in-process server needs `database` or `connected`"),
        };
        let (dir, audit) = setup.files();
        let log = Arc::new(pgwarden::audit::AuditLog::open(&audit).expect("audit log"));
        // Wired as `pgwarden serve` wires it: approvals in memory, the card's and the console's
        // surfaces registered, a fresh session sealing key.
        let sink = pgwarden::audit::sink::FileSink::shared(log);
        let approvals = Approvals::in_memory(policy.approval.clone(), sink.clone(), "test".into());
        approvals.register(Arc::new(CardSurface));
        let console = Console::new(approvals.store.clone(), "test".into(), dir.path().join("console"));
        approvals.register(console.clone());
        let pipeline = Arc::new(Pipeline::new(
            database,
            setup.limits.unwrap_or_default(),
            Arc::new(policy),
            sink,
            approvals,
            dir.path().join("exports"),
        ));
        let browser = setup.browser.as_deref().map_or("false".into(), Path::to_string_lossy);
        console.use_browser(&browser);
        let session = Session::new(
            Arc::new(StateSealer::new()),
            setup.principal.clone().map(Principal::new),
        );
        let (pipeline, client_io) = serve_in_process(pipeline, session).await;
        let era = setup.era.unwrap_or(Era::Legacy);
        let client = handshake(self.handler, client_io, era).await.expect("MCP handshake");
        Mcp {
            client,
            dir,
            audit,
            server: Server::InProcess(pipeline, console),
        }
    }
}

impl Setup {
    /// The server's own directory, and where its audit trail goes.
    fn files(&self) -> (Arc<tempfile::TempDir>, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("pgw-server-")
            .tempdir_in("/tmp")
            .unwrap();
        let audit = self.audit.clone().unwrap_or_else(|| dir.path().join("audit.jsonl"));
        (Arc::new(dir), audit)
    }

    /// `pgwarden serve` as a client launches it, kept to its directory: its trail and exports there,
    /// its runtime directory (console pages, approvals socket) there, nothing from the test's own
    /// environment that `serve` reads, and a browser only if one was given.
    /// [`Setup::command`] started with pipes for stdin and stdout, stderr to `stderr.log`.
    fn child(&self, dir: &tempfile::TempDir, audit: &Path) -> Child {
        let mut cmd = tokio::process::Command::from(self.command(dir, audit));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pgwarden serve")
    }

    fn command(&self, dir: &tempfile::TempDir, audit: &Path) -> std::process::Command {
        assert!(
            self.connected.is_none() && self.limits.is_none() && self.principal.is_none(),
            "`connected`, `limits` and `principal` are for an in-process server; give the binary flags"
        );
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("serve");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PGWARDEN_") {
                cmd.env_remove(key);
            }
        }
        cmd.env_remove("DATABASE_URL");
        if let Some(db) = &self.db {
            cmd.arg("--database-url").arg(db.dsn());
        }
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        if let Some(sandbox) = &self.sandbox {
            cmd.arg("--sandbox-dir").arg(sandbox);
        }
        if let Some(text) = &self.policy {
            let file = dir.path().join("policy.toml");
            std::fs::write(&file, text).unwrap();
            cmd.arg("--policy").arg(file);
        }
        if let Some(file) = &self.policy_file {
            cmd.arg("--policy").arg(file);
        }
        cmd.arg("--audit-log")
            .arg(audit)
            .arg("--export-dir")
            .arg(dir.path().join("exports"))
            .env("XDG_RUNTIME_DIR", dir.path().join("run"));
        match &self.browser {
            Some(browser) => {
                cmd.env("BROWSER", browser);
            }
            None => {
                cmd.env_remove("BROWSER")
                    .env_remove("DISPLAY")
                    .env_remove("WAYLAND_DISPLAY");
            }
        }
        cmd.args(&self.args);
        for (key, value) in &self.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd
    }
}

/// The client's side of the session, in `era`.
pub(super) async fn handshake<H, T, E, A>(
    handler: H,
    io: T,
    era: Era,
) -> Result<RunningService<RoleClient, H>, rmcp::service::ClientInitializeError>
where
    H: ClientHandler,
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    match era {
        Era::Legacy => handler.serve(io).await,
        Era::Modern => {
            let lifecycle = ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            };
            handler.serve_with_lifecycle(io, lifecycle).await
        }
    }
}

/// Serves `pipeline` on one end of an in-process pipe, with its catalog facts loaded and watched
/// until the session ends; returns the client's end.
async fn serve_in_process(pipeline: Arc<Pipeline>, session: Session) -> (Arc<Databases>, tokio::io::DuplexStream) {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    pipeline.refresh_catalog().await.expect("catalog facts");
    if let Some(problem) = pipeline.masks_problem() {
        panic!("{problem}");
    }
    let watcher = tokio_util::sync::CancellationToken::new();
    pipeline.watch_catalog(watcher.clone());
    let databases = Databases::one(pipeline, "test".into(), watcher.clone());
    let server = PgWarden::new(databases.clone(), session);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
        watcher.cancel();
    });
    (databases, client_io)
}

pub(super) fn stderr_of(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
}
