//! Red-team regression tests for several databases from one pgwarden (issue 22). Each test is an
//! attack that worked against `pgwarden serve --config` with real PostgreSQL when it was written;
//! each FAILS until the class it names is closed.
//!
//! The setting: `staging` and `prod` are two databases of one cluster. The operator lets agents do
//! anything on `staging` and nothing but reads on `prod`, where `private.*` is off limits. What a
//! call on `staging` can do to `prod` must not depend on `staging`'s permissive rules. Reached as
//! one login (as in many installations), roles, database settings and sessions — the cluster's —
//! would be shared: pgwarden refuses that configuration, and with a login per database Postgres
//! itself refuses what a call on one does to the other.

mod common;

use std::{
    io::Read,
    net::TcpListener,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    AGENT, RawServer, TestDb, TestServer,
    databases::{POLICY, PRIVATE, SETUP, config, tempdir},
};
use serde_json::{Value, json};

/// `staging` then `prod`, both the agent's own databases in the suite's cluster.
async fn staging_and_prod() -> (TestDb, TestDb) {
    let staging = TestDb::new(SETUP).await;
    let prod = TestDb::new(&format!("{SETUP}\n{PRIVATE}")).await;
    (staging, prod)
}

/// A login of `staging`'s own that may do anything there (all privileges on its tables, schema
/// and database), as an operator gives a permissive staging: its URL.
async fn staging_login(staging: &TestDb) -> String {
    let role = format!("{}_agent", staging.name);
    let admin = staging.admin().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {db} TO {role}; \
             GRANT ALL ON SCHEMA public TO {role}; GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}",
            db = staging.name
        ))
        .await
        .unwrap();
    common::socket_dsn(&role, &staging.name)
}

/// Two databases of one server reached as one login would share the cluster's roles, settings and
/// sessions: refused at start, naming both and the fix.
#[test]
fn red22_two_databases_reached_as_one_login_on_one_server_are_refused_at_start() {
    let dir = tempdir();
    let out = TestServer::builder()
        .policy(POLICY)
        .args(["--config".as_ref(), two_databases(dir.path()).as_os_str()])
        .env("STAGING_URL", common::socket_dsn(AGENT, "staging"))
        .env("PROD_URL", common::socket_dsn(AGENT, "prod"))
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("databases `staging` and `prod` are reached as the same login `pgwarden_agent`")
            && stderr.contains("--agent-role"),
        "{stderr}"
    );
    // Nor may an agent log in as another database's change login.
    let config = config(
        dir.path(),
        "[[database]]\nname = \"staging\"\nurl_env = \"STAGING_URL\"\n\
         [[database]]\nname = \"prod\"\nurl_env = \"PROD_URL\"\nchange_url_env = \"PROD_CHANGE\"\n",
    );
    let out = TestServer::builder()
        .policy(POLICY)
        .args(["--config".as_ref(), config.as_os_str()])
        .env("STAGING_URL", common::socket_dsn("pgwarden_owner", "staging"))
        .env("PROD_URL", common::socket_dsn(AGENT, "prod"))
        .env("PROD_CHANGE", common::socket_dsn("pgwarden_owner", "prod"))
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`prod`'s change login)"), "{stderr}");
}

fn two_databases(dir: &Path) -> PathBuf {
    config(
        dir,
        "[[database]]\nname = \"staging\"\nurl_env = \"STAGING_URL\"\n\
         [[database]]\nname = \"prod\"\nurl_env = \"PROD_URL\"\n",
    )
}

/// RED22-1 (cross-database write through shared objects). Databases, role defaults per database
/// and database privileges live in the cluster's shared catalogs: a call on `staging`, decided by
/// `staging`'s rules, changed `prod` — `ALTER DATABASE prod CONNECTION LIMIT 0` made `prod`
/// unavailable to pgwarden at its next connection, `GRANT CREATE ON DATABASE prod TO PUBLIC` (the
/// `grant` tool) let every role create schemas there, and `ALTER ROLE … IN DATABASE prod SET`
/// changed the agent's session defaults in `prod` (see RED22-2 for what that buys).
#[tokio::test]
async fn red22_a_call_on_one_database_cannot_change_another_database_or_the_logins_defaults_there() {
    let dir = tempdir();
    let (staging, prod) = staging_and_prod().await;
    let mcp = TestServer::builder()
        .policy(POLICY)
        .args(["--config".as_ref(), two_databases(dir.path()).as_os_str()])
        .env("STAGING_URL", staging_login(&staging).await)
        .env("PROD_URL", prod.dsn())
        .start()
        .await;
    let p = &prod.name;
    let attacks = [
        (
            "query",
            json!({ "sql": format!("ALTER DATABASE {p} CONNECTION LIMIT 0") }),
        ),
        (
            "query",
            json!({ "sql": format!("ALTER DATABASE {p} SET work_mem = '64kB'") }),
        ),
        (
            "query",
            json!({ "sql": format!("COMMENT ON DATABASE {p} IS 'changed from staging'") }),
        ),
        (
            "query",
            json!({ "sql": format!("ALTER ROLE CURRENT_USER IN DATABASE {p} SET lock_timeout = '1ms'") }),
        ),
        (
            "grant",
            json!({ "action": "grant", "privileges": ["CREATE"], "object_type": "database", "objects": [p],
                    "role": "PUBLIC", "intent": "let everyone make schemas" }),
        ),
    ];
    let mut ran = Vec::new();
    for (tool, mut args) in attacks {
        args["database"] = json!("staging");
        let r = mcp.call(tool, args.clone()).await;
        if r.is_error != Some(true) {
            ran.push(format!("{tool} {}: {}", args, common::text(&r)));
        }
    }
    // What Postgres says about prod now, then put it back before judging.
    let admin = prod.admin().await;
    let row = admin
        .query_one(
            "SELECT d.datconnlimit, shobj_description(d.oid, 'pg_database'), \
                    has_database_privilege('public', d.oid, 'CREATE'), \
                    (SELECT count(*) FROM pg_db_role_setting s WHERE s.setdatabase = d.oid \
                     AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = $1))) \
             FROM pg_database d WHERE d.datname = current_database()",
            &[&AGENT],
        )
        .await
        .unwrap();
    let (limit, comment, public_create, settings): (i32, Option<String>, bool, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {p} CONNECTION LIMIT -1; ALTER DATABASE {p} RESET ALL; \
             ALTER ROLE {AGENT} IN DATABASE {p} RESET ALL; COMMENT ON DATABASE {p} IS NULL; \
             REVOKE CREATE ON DATABASE {p} FROM PUBLIC"
        ))
        .await
        .unwrap();
    // Staging's login may keep defaults of its own for prod (Postgres lets a role set its own):
    // no session of pgwarden's for prod is that login, so nothing of prod's changes.
    assert!(
        ran.iter().all(|r| r.contains("ALTER ROLE CURRENT_USER")),
        "calls on `staging` changed database `prod` ({p}) under staging's rules:\n{}",
        ran.join("\n")
    );
    mcp.ok(
        "query",
        json!({ "sql": "SELECT count(*) FROM customers", "database": "prod" }),
    )
    .await;
    assert_eq!(
        (limit, comment, public_create, settings),
        (-1, None, false, 0),
        "prod's connection limit, comment, PUBLIC CREATE and its login's and database's settings are untouched"
    );
}

/// RED22-2 (prod's deny rule dodged from staging). On `staging` (anything runs) the agent sets its
/// own login's `search_path` for `prod` and terminates its own `prod` sessions (same login: Postgres
/// lets it). pgwarden's pool reconnects to `prod` with the new default, while the classifier still
/// resolves `customers` with the search path it loaded at start: `SELECT email FROM customers` on
/// `prod` is judged a read of `public.customers` and returns `private.customers`, which `prod`'s
/// rule denies.
#[tokio::test]
async fn red22_login_defaults_set_from_another_database_do_not_redirect_reads_past_a_deny_rule() {
    let dir = tempdir();
    let (staging, prod) = staging_and_prod().await;
    // The suite's template database is hardened like pgwarden's sandbox (`HARDEN_SQL` revokes
    // `pg_terminate_backend` from PUBLIC); `pgwarden setup` does not do that to the databases an
    // operator brings, which keep PostgreSQL's default: any login may end its own sessions.
    staging
        .admin()
        .await
        .batch_execute("GRANT EXECUTE ON FUNCTION pg_terminate_backend(int, bigint) TO PUBLIC")
        .await
        .unwrap();
    let mcp = TestServer::builder()
        .policy(POLICY)
        .args(["--config".as_ref(), two_databases(dir.path()).as_os_str()])
        .env("STAGING_URL", staging_login(&staging).await)
        .env("PROD_URL", prod.dsn())
        .start()
        .await;
    let read = json!({ "sql": "SELECT email FROM customers ORDER BY id", "database": "prod" });
    let denied = mcp
        .err(
            "query",
            json!({ "sql": "SELECT email FROM private.customers", "database": "prod" }),
        )
        .await;
    assert!(denied.contains("prod-private-denied"), "{denied}");
    assert!(!mcp.ok("query", read.clone()).await.to_string().contains("SECRET"));

    let p = &prod.name;
    let set = mcp
        .call(
            "query",
            json!({ "sql": format!("ALTER ROLE CURRENT_USER IN DATABASE {p} SET search_path = private, public"),
                "database": "staging" }),
        )
        .await;
    let kill = mcp
        .call(
            "query",
            json!({ "sql": format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                                WHERE datname = '{p}' AND usename = current_user"),
                "database": "staging" }),
        )
        .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = mcp.call("query", read.clone()).await;
        seen.push(common::text(&r));
    }
    prod.admin()
        .await
        .batch_execute(&format!("ALTER ROLE {AGENT} IN DATABASE {p} RESET ALL"))
        .await
        .unwrap();
    assert!(
        seen.iter().all(|t| !t.contains("SECRET-private-row")),
        "a read on `prod` returned rows of `private.customers`, which prod's rule denies:\n{}\n\
         (on staging: `ALTER ROLE … IN DATABASE prod SET search_path`: {}; `pg_terminate_backend`: {})",
        seen.join("\n---\n"),
        common::text(&set),
        common::text(&kill)
    );
}

/// A stand-in PostgreSQL that accepts every login (AuthenticationOk, ReadyForQuery) and then never
/// answers: a pgbouncer whose pool is paused, a proxy whose upstream hangs. Bound on 127.0.0.1.
fn start_silent_postgres(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                use std::io::Write;
                loop {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
                    if s.read_exact(&mut body).is_err() {
                        return;
                    }
                    // SSLRequest / GSSENCRequest: say no, and read the real start-up message.
                    if body.len() == 4
                        && matches!(u32::from_be_bytes(body[..4].try_into().unwrap()), 80877103 | 80877104)
                    {
                        let _ = s.write_all(b"N");
                        continue;
                    }
                    break;
                }
                let _ = s.write_all(b"R\0\0\0\x08\0\0\0\0Z\0\0\0\x05I");
                let mut sink = [0u8; 4096];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
}

fn silent_config(dir: &Path, port: u16) -> PathBuf {
    config(
        dir,
        &format!(
            "[[database]]\nname = \"staging\"\nurl_env = \"STAGING_URL\"\n\
             [[database]]\nname = \"hole\"\nurl = \"host=127.0.0.1 port={port} user={AGENT} dbname=hole\"\n"
        ),
    )
}

/// The answer to `SELECT 1` on `database`; [`RawServer`] gives up (panics) when none comes
/// within 30 s.
async fn select_1(server: &mut RawServer, id: i64, database: &str) -> Value {
    server
        .call(id, "query", json!({ "sql": "SELECT 1", "database": database }))
        .await
}

/// `pgwarden serve` for `staging` and `hole` (127.0.0.1:`port`), initialized.
async fn with_hole(dir: &Path, port: u16) -> RawServer {
    let staging = TestDb::new(SETUP).await;
    let mut server = TestServer::builder()
        .policy(POLICY.replace("prod", "hole"))
        .args(["--config".as_ref(), silent_config(dir, port).as_os_str()])
        .env("STAGING_URL", staging.dsn())
        .start_raw()
        .await;
    // Panics ("the server answered within 30 s") while the start waits on `hole`.
    server.initialize(json!({})).await;
    server
}

/// RED22-3 (availability at start-up). A database that logs in but never answers a query stalled
/// `serve` before it answered `initialize`: opening a database reads its server facts with no
/// time limit, and `serve` waits for every database to open. `staging`, healthy, was never served.
#[tokio::test]
async fn red22_a_database_that_logs_in_but_never_answers_does_not_stall_the_start() {
    let dir = tempdir();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    start_silent_postgres(listener);
    let mut server = with_hole(dir.path(), port).await;
    let ok = select_1(&mut server, 2, "staging").await;
    assert_ne!(ok["result"]["isError"], json!(true), "{ok}");
    let hole = select_1(&mut server, 3, "hole").await;
    assert_eq!(hole["result"]["isError"], json!(true), "{hole}");
    assert!(hole.to_string().contains("unavailable"), "{hole}");
}

/// RED22-4 (availability while serving). `hole` is down at start (nothing listens), then comes
/// back as a server that logs in but never answers. The background retry takes the database's
/// open-lock and never returns, so every call naming `hole` waits for ever — never refused, never
/// audited — and other databases still down would never be retried.
#[tokio::test]
async fn red22_a_database_that_comes_back_silent_fails_its_calls_in_bounded_time() {
    let dir = tempdir();
    let port = {
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port()
    };
    let mut server = with_hole(dir.path(), port).await;
    let down = select_1(&mut server, 2, "hole").await;
    assert!(down.to_string().contains("unavailable"), "{down}");
    start_silent_postgres(TcpListener::bind(("127.0.0.1", port)).unwrap());
    // Past the retry pause: the background retry (or this call) is opening `hole` now.
    tokio::time::sleep(pgwarden::pipeline::RETRY_EVERY + Duration::from_secs(2)).await;
    let ok = select_1(&mut server, 3, "staging").await;
    assert_ne!(ok["result"]["isError"], json!(true), "{ok}");
    // Panics ("the server answered within 30 s") while the call waits on `hole`.
    let hole = select_1(&mut server, 4, "hole").await;
    assert_eq!(hole["result"]["isError"], json!(true), "{hole}");
}
