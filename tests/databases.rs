//! Several databases from one pgwarden (issue 22), against real PostgreSQL: `sales` and
//! `analytics` are two databases of the suite's cluster, `ops` lives on a second cluster this test
//! starts, stops and starts again. One `pgwarden serve --config pgwarden.toml` serves all three:
//! each database keeps its own rules, masks (enforced by Postgres, set up with `pgwarden setup
//! --database`), row caps and audit records; a call that names another database is refused; a
//! database that is down fails only its own calls, and serves again when it comes back; approvals
//! replay on the database they were asked for, over HTTP with the Postgres approval store.

mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use common::{
    AGENT, Era, OWNER, TestDb, TestServer, eventually,
    team::{Api, Team},
};
use pgwarden::db::cluster::{Cluster, Owner, find_binaries};
use serde_json::{Value, json};

/// The same tables in `sales` and `analytics`: customers with e-mails, and an events log.
const SETUP: &str = "CREATE TABLE customers (id int PRIMARY KEY, email text);
INSERT INTO customers VALUES (1, 'alice@example.com'), (2, 'bob@example.com'), (3, 'carol@example.com');
CREATE TABLE events (id serial PRIMARY KEY, what text);";

/// sales: no changes, e-mails masked and tagged; analytics: writes run; everywhere: reads run.
const POLICY: &str = r#"
[[rule]]
id = "sales-changes-denied"
effect = "deny"
databases = ["sales"]
categories = ["write", "ddl", "destructive"]
reason = "sales is production: agents change nothing there"

[[rule]]
id = "analytics-writes-run"
effect = "allow"
databases = ["analytics"]
categories = ["write"]

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]

[tables."sales:public.customers"]
tags = ["pii"]

[columns."sales:public.customers.email"]
mask = "email"
"#;

/// A second PostgreSQL cluster, on its own socket directory, stopped and removed on drop.
struct SecondCluster {
    cluster: Cluster,
    dir: PathBuf,
}

impl SecondCluster {
    /// Started, with the agent role and a database `ops` holding `jobs`.
    async fn start() -> SecondCluster {
        let owner = Owner::for_current_process().expect("cluster owner");
        let dir = tempfile::Builder::new()
            .prefix("pgw-second-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let cluster = Cluster::new(dir.clone(), find_binaries().expect("PostgreSQL binaries"), owner).unwrap();
        cluster.init(&["fsync = off", "max_connections = 50"]).expect("initdb");
        cluster.start().expect("start the second cluster");
        let second = SecondCluster { cluster, dir };
        let admin = second.client("postgres", "postgres").await;
        admin
            .batch_execute(&format!("CREATE ROLE {AGENT} LOGIN"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE ops OWNER {AGENT}"))
            .await
            .unwrap();
        second
            .client(AGENT, "ops")
            .await
            .batch_execute("CREATE TABLE jobs (id int PRIMARY KEY, name text); INSERT INTO jobs VALUES (1, 'nightly')")
            .await
            .unwrap();
        second
    }

    async fn client(&self, user: &str, db: &str) -> tokio_postgres::Client {
        let (client, conn) = self
            .cluster
            .connect_config(user, db)
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    /// How pgwarden reaches `ops` as the agent: no password, so it may sit in the config file.
    fn dsn(&self) -> String {
        format!(
            "host={} port={} user={AGENT} dbname=ops",
            self.cluster.socket_dir().display(),
            self.cluster.port
        )
    }

    fn stop(&self) {
        self.cluster.stop().expect("stop the second cluster");
    }

    fn restart(&self) {
        self.cluster.start().expect("start the second cluster again");
    }
}

impl Drop for SecondCluster {
    fn drop(&mut self) {
        let _ = Command::new(self.cluster.bindir.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.cluster.data_dir())
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `analytics`' agent login: each database has logins of its own (pgwarden refuses two databases
/// reached as one login on one server). Named after the database, as tests run side by side.
fn analytics_agent(analytics: &TestDb) -> String {
    format!("{}_agent", analytics.name)
}

/// `analytics`' owner, its change login.
fn analytics_owner(analytics: &TestDb) -> String {
    format!("{}_owner", analytics.name)
}

/// A database owned by a login of its own ([`analytics_owner`]), with `setup` run as it.
async fn own_database(setup: &str) -> TestDb {
    let db = TestDb::create_for_setup("").await;
    let owner = analytics_owner(&db);
    db.admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {owner} LOGIN; ALTER DATABASE {d} OWNER TO {owner}",
            d = db.name
        ))
        .await
        .unwrap();
    let (client, conn) = tokio_postgres::connect(&common::socket_dsn(&owner, &db.name), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.batch_execute(setup).await.unwrap();
    db
}

/// `sales` and `analytics` in the suite's cluster, their tables owned by [`OWNER`] and by
/// [`analytics_owner`] (approved changes run as them), each set up by `pgwarden setup --database
/// NAME` for its agent login:
/// [`AGENT`] for sales, whose e-mails the policy masks, and [`analytics_agent`], nothing masked.
async fn sales_and_analytics(dir: &std::path::Path) -> (TestDb, TestDb) {
    let sales = TestDb::create_for_setup(SETUP).await;
    let analytics = own_database(SETUP).await;
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let analytics_role = analytics_agent(&analytics);
    for (db, name, role, masked) in [
        (&sales, "sales", AGENT, 1),
        (&analytics, "analytics", analytics_role.as_str(), 0),
    ] {
        let out = Command::new(common::BIN)
            .args(["setup", "--database", name, "--agent-role", role, "--policy"])
            .arg(&policy)
            .env("PGWARDEN_SETUP_DATABASE_URL", common::socket_dsn("postgres", &db.name))
            .env_remove("PGWARDEN_CONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains(&format!("{masked} masked column(s)")),
            "setup for `{name}` masks what the policy gives it: {said}"
        );
    }
    (sales, analytics)
}

/// How pgwarden reaches `analytics` as its agent, and as the owner for approved changes.
fn analytics_urls(analytics: &TestDb) -> (String, String) {
    (
        common::socket_dsn(&analytics_agent(analytics), &analytics.name),
        common::socket_dsn(&analytics_owner(analytics), &analytics.name),
    )
}

/// What `events` holds, read as the superuser.
async fn events(db: &TestDb) -> Vec<String> {
    let rows = db
        .admin()
        .await
        .query("SELECT what FROM events ORDER BY id", &[])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// The `pgwarden.toml`: `sales` by environment variable (the agent's login, and the owner's for
/// changes), `analytics` from a file (its row cap 2), `ops` inline (no password in it).
fn config(dir: &std::path::Path, analytics: &TestDb, ops: &str) -> PathBuf {
    let (agent, owner) = analytics_urls(analytics);
    std::fs::write(dir.join("analytics.url"), format!("{agent}\n")).unwrap();
    let path = dir.join("pgwarden.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[database]]
name = "sales"
url_env = "SALES_URL"
change_url_env = "SALES_CHANGE_URL"
pool_size = 2

[[database]]
name = "analytics"
url_file = "analytics.url"
change_url = "{owner}"
max_rows = 2

[[database]]
name = "ops"
url = "{ops}"
statement_timeout = "5s"
"#
        ),
    )
    .unwrap();
    path
}

fn rows(v: &Value) -> Vec<Value> {
    v["rows"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn three_databases_keep_their_own_rules_masks_and_records_and_one_down_recovers() {
    let dir = tempfile::Builder::new().prefix("pgw-dbs-").tempdir_in("/tmp").unwrap();
    let (sales, analytics) = sales_and_analytics(dir.path()).await;
    let ops = SecondCluster::start().await;
    let config = config(dir.path(), &analytics, &ops.dsn());
    // `ops` is down when pgwarden starts: the other two must serve anyway.
    ops.stop();
    let mcp = TestServer::builder()
        .policy(POLICY)
        .args(["--config".as_ref(), config.as_os_str()])
        .env("SALES_URL", sales.dsn())
        .env("SALES_CHANGE_URL", common::socket_dsn(OWNER, &sales.name))
        .start()
        .await;
    assert!(
        mcp.stderr().contains("database `ops`"),
        "the problem is reported by name at start:\n{}",
        mcp.stderr()
    );

    // `list_tables` says which databases there are, the default first, and which is down.
    let listed = mcp.ok("list_tables", json!({})).await;
    assert_eq!(listed["database"], "sales");
    assert_eq!(
        listed["databases"],
        json!([
            { "name": "sales", "default": true, "available": true },
            { "name": "analytics", "default": false, "available": true },
            { "name": "ops", "default": false, "available": false },
        ])
    );

    // Masks are per database, and Postgres enforces them (the agent has no SELECT on sales' email).
    let masked = mcp
        .ok("query", json!({ "sql": "SELECT email FROM customers ORDER BY id" }))
        .await;
    assert_eq!(rows(&masked)[0], json!(["a***@example.com"]), "{masked}");
    let direct = sales
        .client()
        .await
        .query("SELECT email FROM public.customers", &[])
        .await;
    assert!(direct.is_err(), "Postgres itself refuses the agent the base column");
    let plain = mcp
        .ok(
            "query",
            json!({ "sql": "SELECT email FROM customers ORDER BY id", "database": "analytics" }),
        )
        .await;
    assert_eq!(rows(&plain)[0], json!(["alice@example.com"]), "{plain}");
    // ... and so are row caps: analytics returns at most 2 rows unless asked.
    assert_eq!(rows(&plain).len(), 2);
    assert_eq!(plain["truncated"], true);
    assert_eq!(rows(&masked).len(), 3);

    // Rules are per database: the same INSERT is denied on sales and runs on analytics.
    let insert = "INSERT INTO events (what) VALUES ('signup')";
    let denied = mcp.err("query", json!({ "sql": insert, "database": "sales" })).await;
    assert!(denied.contains("sales-changes-denied"), "{denied}");
    mcp.ok("query", json!({ "sql": insert, "database": "analytics" })).await;
    assert_eq!(events(&analytics).await, ["signup"]);
    assert!(
        sales
            .admin()
            .await
            .query("SELECT 1 FROM events", &[])
            .await
            .unwrap()
            .is_empty()
    );

    // A call reaches one database: naming another in the SQL is refused before anything runs,
    // dblink too, and an unknown `database` is a bad argument that names the real ones.
    let cross = format!("SELECT * FROM {}.public.events", analytics.name);
    let refused = mcp.err("query", json!({ "sql": cross, "database": "sales" })).await;
    assert!(
        refused.contains(&format!("names database `{}`", analytics.name)),
        "{refused}"
    );
    let cross_fn = format!("SELECT {}.public.now()", analytics.name);
    let refused = mcp.err("query", json!({ "sql": cross_fn })).await;
    assert!(refused.contains("names database"), "{refused}");
    let dblink = mcp
        .err(
            "query",
            json!({ "sql": "SELECT * FROM dblink('dbname=analytics', 'SELECT 1') AS t(x int)" }),
        )
        .await;
    assert!(dblink.contains("opens a session to another database"), "{dblink}");
    let unknown = mcp
        .err("query", json!({ "sql": "SELECT 1", "database": "staging" }))
        .await;
    assert!(
        unknown.contains("no database `staging`") && unknown.contains("`sales`, `analytics`, `ops`"),
        "{unknown}"
    );
    // A grant on another database (a cluster-wide object) is refused from here too.
    let grant = mcp
        .err(
            "grant",
            json!({ "action": "grant", "privileges": ["CONNECT"], "object_type": "database",
                    "objects": [analytics.name], "role": OWNER, "intent": "let the owner in" }),
        )
        .await;
    assert!(grant.contains("a call reaches only the database it runs on"), "{grant}");
    // Its own name in a three-part name is fine: it is this database.
    let own = format!("SELECT count(*) FROM {}.public.events", analytics.name);
    mcp.ok("query", json!({ "sql": own, "database": "analytics" })).await;

    // `ops` is down: its calls fail clearly, the others serve.
    let down = mcp
        .err("query", json!({ "sql": "SELECT name FROM jobs", "database": "ops" }))
        .await;
    assert!(down.contains("database `ops` is unavailable"), "{down}");

    // It comes back: pgwarden opens it without a restart.
    ops.restart();
    let back = eventually(Duration::from_secs(30), "ops to serve after its restart", async || {
        let r = mcp
            .call("query", json!({ "sql": "SELECT name FROM jobs", "database": "ops" }))
            .await;
        (r.is_error != Some(true)).then(|| r.structured_content.unwrap())
    })
    .await;
    assert_eq!(rows(&back), [json!(["nightly"])]);
    let listed = mcp.ok("list_tables", json!({ "database": "ops" })).await;
    assert_eq!(listed["database"], "ops");
    assert_eq!(listed["databases"][2]["available"], true, "{listed}");
    assert!(listed["tables"].to_string().contains("jobs"), "{listed}");

    // Down again while served: a clear error, the others unaffected; back again: served.
    ops.stop();
    let down = mcp
        .err("query", json!({ "sql": "SELECT name FROM jobs", "database": "ops" }))
        .await;
    assert!(down.contains("unavailable"), "{down}");
    mcp.ok("query", json!({ "sql": "SELECT 1", "database": "analytics" }))
        .await;
    ops.restart();
    eventually(Duration::from_secs(30), "ops to serve again", async || {
        let r = mcp
            .call("query", json!({ "sql": "SELECT name FROM jobs", "database": "ops" }))
            .await;
        (r.is_error != Some(true)).then_some(())
    })
    .await;

    // Every record names its database.
    let records = mcp.audit_records();
    let of = |db: &str, needle: &str| {
        records
            .iter()
            .filter(|r| r.database.as_deref() == Some(db))
            .filter(|r| r.sql.as_deref().is_some_and(|s| s.contains(needle)))
            .cloned()
            .collect::<Vec<_>>()
    };
    let sales_insert = of("sales", "INSERT INTO events");
    assert_eq!(sales_insert.len(), 1, "{sales_insert:?}");
    assert_eq!(sales_insert[0].decision.as_deref(), Some("deny"));
    assert!(
        sales_insert[0]
            .rule
            .as_deref()
            .is_some_and(|r| r.starts_with("sales-changes-denied ")),
        "{sales_insert:?}"
    );
    let analytics_insert = of("analytics", "INSERT INTO events");
    assert!(
        analytics_insert.iter().any(|r| r
            .rule
            .as_deref()
            .is_some_and(|r| r.starts_with("analytics-writes-run "))),
        "{analytics_insert:?}"
    );
    assert!(!of("sales", "SELECT email").is_empty());
    assert!(!of("analytics", "SELECT email").is_empty());
    let ops_records = of("ops", "SELECT name FROM jobs");
    assert!(
        ops_records.iter().any(|r| r
            .outcome
            .as_ref()
            .is_some_and(|o| o.message.as_deref().is_some_and(|m| m.contains("unavailable")))),
        "the refused calls on ops are recorded too: {ops_records:?}"
    );
    assert!(
        ops_records
            .iter()
            .any(|r| r.outcome.as_ref().is_some_and(|o| o.rows == Some(1))),
        "{ops_records:?}"
    );
    assert!(
        of("staging", "SELECT 1").is_empty() && records.iter().any(|r| r.sql.as_deref() == Some("SELECT 1")),
        "an unknown database is recorded without a name it does not have"
    );
}

#[test]
fn a_policy_naming_a_database_pgwarden_does_not_serve_stops_the_start_with_its_place() {
    let dir = tempfile::Builder::new().prefix("pgw-dbs-").tempdir_in("/tmp").unwrap();
    let config = dir.path().join("pgwarden.toml");
    std::fs::write(
        &config,
        "[[database]]\nname = \"sales\"\nurl = \"host=/nowhere user=x dbname=sales\"\n",
    )
    .unwrap();
    let policy = "[[rule]]\nid = \"r\"\neffect = \"allow\"\ncategories = [\"read\"]\ndatabases = [\"salse\"]\n";
    let out = TestServer::builder()
        .policy(policy)
        .args(["--config".as_ref(), config.as_os_str()])
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("policy.toml:") && stderr.contains("database `salse`") && stderr.contains("`sales`"),
        "{stderr}"
    );

    // A password inline in the file is refused: secrets come from the environment or a file.
    std::fs::write(
        &config,
        "[[database]]\nname = \"sales\"\nurl = \"postgres://u:hunter2@db/sales\"\n",
    )
    .unwrap();
    let out = TestServer::builder()
        .args(["--config".as_ref(), config.as_os_str()])
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("carries a password") && stderr.contains("url_env"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn check_names_the_database_and_decides_with_its_rules() {
    let dir = tempfile::Builder::new().prefix("pgw-dbs-").tempdir_in("/tmp").unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let config = dir.path().join("pgwarden.toml");
    std::fs::write(
        &config,
        "[[database]]\nname = \"sales\"\nurl_env = \"X\"\n[[database]]\nname = \"analytics\"\nurl_env = \"Y\"\n",
    )
    .unwrap();
    let check = |args: &[&str]| {
        let out = Command::new(common::BIN)
            .arg("check")
            .arg("--policy")
            .arg(&policy)
            .args(args)
            .env_remove("PGWARDEN_CONFIG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let update = "UPDATE customers SET email = NULL WHERE id = 1";
    let cfg = config.to_str().unwrap();
    let (_, sales) = check(&["--config", cfg, update]);
    assert!(
        sales.starts_with("database: sales\n"),
        "the default is the first: {sales}"
    );
    assert!(sales.contains("deny by rule `sales-changes-denied`"), "{sales}");
    let (_, analytics) = check(&["--config", cfg, "--database", "analytics", update]);
    assert!(
        analytics.contains("allow by rule `analytics-writes-run`"),
        "{analytics}"
    );
    let (_, json) = check(&[
        "--config",
        cfg,
        "--database",
        "sales",
        "--format",
        "json",
        "SELECT email FROM customers",
    ]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["database"], "sales");
    assert_eq!(v["decision"]["masks"][0]["column"], "public.customers.email");
    assert_eq!(v["decision"]["tags"]["public.customers"], json!(["pii"]));
    let (ok, wrong) = check(&["--config", cfg, "--database", "staging", update]);
    assert!(!ok && wrong.contains("no database `staging`"), "{wrong}");
    // Without a database, a decision that depends on one is not guessed.
    let (ok, unsaid) = check(&[update]);
    assert!(!ok && unsaid.contains("pass `--database NAME`"), "{unsaid}");
}

/// Over HTTP, with approvals in the Postgres state database: alice's change to `analytics` waits
/// for bob, shows him the database, and runs there — not on the default — when she awaits it.
#[tokio::test]
async fn an_approval_runs_on_the_database_it_was_asked_for_over_http() {
    let dir = tempfile::Builder::new().prefix("pgw-dbs-").tempdir_in("/tmp").unwrap();
    let (sales, analytics) = sales_and_analytics(dir.path()).await;
    let state = TestDb::create_for_setup("").await;
    let team = Team::new("pgw-dbs-team-", &[("alice", &[]), ("bob", &["dba"])]);
    let config = dir.path().join("pgwarden.toml");
    let (agent, owner) = analytics_urls(&analytics);
    std::fs::write(dir.path().join("analytics.url"), format!("{agent}\n")).unwrap();
    std::fs::write(
        &config,
        format!(
            "[[database]]\nname = \"sales\"\nurl_env = \"SALES_URL\"\n\
             [[database]]\nname = \"analytics\"\nurl_file = \"analytics.url\"\nchange_url = \"{owner}\"\n"
        ),
    )
    .unwrap();
    let policy = r#"
[approval]
wait_budget = "1s"

[[rule]]
id = "analytics-changes-reviewed"
effect = "approve"
databases = ["analytics"]
categories = ["write"]
reviewers = ["group:dba"]

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]
"#;
    let key = dir.path().join("audit.key");
    let s = team
        .serve(
            TestServer::builder()
                .policy(policy)
                .args(["--config".as_ref(), config.as_os_str()])
                .args(["--state-url".to_string(), common::socket_dsn(OWNER, &state.name)])
                .args(["--audit-key".as_ref(), key.as_os_str()])
                .env("SALES_URL", sales.dsn()),
            "",
        )
        .await;
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let insert =
        json!({ "sql": "INSERT INTO events (what) VALUES ('reviewed')", "database": "analytics", "intent": "log it" });
    let r = alice
        .call_tool(common::http::call("query", insert.clone()))
        .await
        .unwrap();
    let pending = r
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("{}", common::text(&r)));
    assert_eq!(pending["status"], "pending_approval", "{pending}");
    let id = pending["approval_id"].as_str().unwrap().to_string();
    // The same change on sales is not this rule's (no rule allows it there): denied outright.
    let mut on_sales = insert.clone();
    on_sales["database"] = json!("sales");
    let r = alice.call_tool(common::http::call("query", on_sales)).await.unwrap();
    assert_eq!(r.is_error, Some(true), "{}", common::text(&r));

    // Bob sees which database it is for, and approves.
    let api = Api::of(&s);
    let a = api.approval(&team.bob, &id).await;
    assert_eq!(a["packet"]["database"], "analytics", "{a}");
    assert!(
        a["packet"]["summary"]
            .as_str()
            .unwrap()
            .contains("in database `analytics`"),
        "{a}"
    );
    let (status, answer) = api.approve(&team.bob, &id).await;
    assert_eq!(status, 200, "{answer}");
    let ran = common::team::awaited(&alice, &id, 5).await;
    assert_eq!(ran["status"], "executed", "{ran}");
    assert_eq!(events(&analytics).await, ["reviewed"]);
    assert!(
        sales
            .admin()
            .await
            .query("SELECT 1 FROM events", &[])
            .await
            .unwrap()
            .is_empty()
    );
}
