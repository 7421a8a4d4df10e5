//! Test harness: one throwaway PostgreSQL cluster per test binary (started with pgwarden's own
//! cluster code, stopped by a watchdog when the test process exits, however it exits), a fresh
//! database per test, and the kit the tests share: real servers from one builder ([`server`]), the
//! scripted person in the client ([`reviewer`]), the review console and a stand-in browser
//! ([`console`]), policies edited by key ([`policy`]) and waiting for events ([`wait`]).
#![allow(dead_code)] // each test binary uses part of the kit

pub mod browser;
pub mod console;
pub mod databases;
pub mod http;
pub mod mcp;
pub mod npm;
pub mod oidc;
pub mod policy;
pub mod raw;
pub mod reviewer;
pub mod server;
pub mod standin;
pub mod team;
pub mod wait;

use std::{
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
};

#[allow(unused_imports)]
pub use console::{Console, FakeBrowser, Response, http};
#[allow(unused_imports)]
pub use mcp::{Mcp, session, session_in};
use pgwarden::{
    config::Limits,
    db::{
        Database, Target,
        cluster::{Cluster, Owner, find_binaries},
        sandbox::HARDEN_SQL,
    },
    policy::Policy,
};
#[allow(unused_imports)]
pub use policy::edit_policy;
#[allow(unused_imports)]
pub use raw::RawServer;
#[allow(unused_imports)]
pub use reviewer::{Answer, Progress, Reviewer};
use rmcp::model::CallToolResult;
#[allow(unused_imports)]
pub use server::{BIN, Era, TestServer};
#[allow(unused_imports)]
pub use wait::{eventually, eventually_blocking, poll};

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
#[derive(Clone)]
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

    /// How `pgwarden serve --database-url` reaches this database as the agent (over the socket).
    pub fn dsn(&self) -> String {
        socket_dsn(AGENT, &self.name)
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

    /// The first column of every row `sql` returns, read as the agent: what really happened.
    pub async fn column<T: for<'a> tokio_postgres::types::FromSql<'a>>(&self, sql: &str) -> Vec<T> {
        let rows = self.client().await.query(sql, &[]).await.unwrap();
        rows.iter().map(|r| r.get(0)).collect()
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

/// A libpq connection string to database `db` of the test cluster as `user`, over its socket.
pub fn socket_dsn(user: &str, db: &str) -> String {
    let c = &cluster().cluster;
    format!(
        "host={} port={} user={user} dbname={db}",
        c.socket_dir().display(),
        c.port
    )
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

/// A benchmark's `--name N` argument (`cargo bench --bench … -- --name N`), else `default`.
pub fn bench_arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of a process, ns (clock-tick resolution), for the benchmarks.
pub fn cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let mut f = stat.rsplit_once(')').unwrap().1.split_whitespace();
    let utime: u64 = f.nth(11).unwrap().parse().unwrap();
    let stime: u64 = f.next().unwrap().parse().unwrap();
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    (utime + stime) * 1_000_000_000 / hz
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
