//! Second red-team pass on several databases from one pgwarden (issue 22). Each test is an attack
//! that worked against the real `pgwarden` binary and real PostgreSQL when it was written; each
//! FAILS until the class it names is closed.
//!
//! The setting (as in `databases_attacks.rs`): `staging` and `prod` are two databases of one
//! cluster. Agents may do anything on `staging`; on `prod` they may only read, and never
//! `private.*`.

mod common;

use std::process::Command;

use common::{
    AGENT, Era, Mcp, OWNER, TestDb, TestServer,
    databases::{POLICY, PRIVATE, SETUP, config, tempdir},
    team::{Api, Team},
};
use serde_json::json;

/// The read the classifier judges as `public.customers` on `prod`, repeated after the agent's own
/// `prod` connection (pool of one) is closed: a read returning a composite (a table's row type,
/// not a built-in type) makes pgwarden close the connection instead of resetting it, so the next
/// call opens a fresh session that picks up the database's and the login's current defaults.
async fn prod_reads_after_reconnect(mcp: &Mcp) -> Vec<String> {
    let read = json!({ "sql": "SELECT email FROM customers ORDER BY id", "database": "prod" });
    let mut seen = Vec::new();
    for _ in 0..3 {
        let recycle = mcp
            .call(
                "query",
                json!({ "sql": "SELECT c FROM customers c LIMIT 1", "database": "prod" }),
            )
            .await;
        let r = mcp.call("query", read.clone()).await;
        seen.push(format!("(recycle: {})\n{}", common::text(&recycle), common::text(&r)));
    }
    seen
}

/// RED22B-1 (the logins check reads URLs, not servers). `check_logins_apart` compares the hosts,
/// host addresses and ports as written. The same socket directory spelled through a symlink (as
/// `localhost` vs `127.0.0.1`, a host name vs its address, a pgbouncer port vs the server's port,
/// or a default port vs an explicit one would be) is "another server": both databases run as one
/// login, and RED22-2 is back — on `staging` the agent sets its login's `search_path` for `prod`,
/// and a read on `prod` judged as `public.customers` returns `private.customers`.
/// An honest operator's mistake; the agent exploits it with allowed calls only.
#[tokio::test]
async fn red22b_one_login_on_one_server_spelled_differently_is_still_one_login() {
    let dir = tempdir();
    let staging = TestDb::new(SETUP).await;
    let prod = TestDb::new(&format!("{SETUP}\n{PRIVATE}")).await;
    let socket = common::cluster().cluster.socket_dir();
    let alias = dir.path().join("pg");
    std::os::unix::fs::symlink(&socket, &alias).unwrap();
    let port = common::cluster().cluster.port;
    let prod_url = format!("host={} port={port} user={AGENT} dbname={}", alias.display(), prod.name);
    let config = config(
        dir.path(),
        "[[database]]\nname = \"staging\"\nurl_env = \"STAGING_URL\"\n\
         [[database]]\nname = \"prod\"\nurl_env = \"PROD_URL\"\npool_size = 1\n",
    );
    let builder = || {
        TestServer::builder()
            .policy(POLICY)
            .args(["--config".as_ref(), config.as_os_str()])
            .env("STAGING_URL", staging.dsn())
            .env("PROD_URL", prod_url.clone())
    };
    let out = builder().output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("same login") {
        return; // refused at start: closed
    }
    let mcp = builder().start().await;
    let p = &prod.name;
    let set = mcp
        .call(
            "query",
            json!({ "sql": format!("ALTER ROLE CURRENT_USER IN DATABASE {p} SET search_path = private, public"),
                    "database": "staging" }),
        )
        .await;
    let seen = prod_reads_after_reconnect(&mcp).await;
    prod.admin()
        .await
        .batch_execute(&format!("ALTER ROLE {AGENT} IN DATABASE {p} RESET ALL"))
        .await
        .unwrap();
    assert!(
        seen.iter().all(|t| !t.contains("SECRET-private-row")),
        "pgwarden served `staging` and `prod` as one login (`{AGENT}`, socket dir spelled `{}` and `{}`); \
         a read on `prod` returned rows of `private.customers`, which prod's rule denies:\n{}\n\
         (on staging: {})",
        socket.display(),
        alias.display(),
        seen.join("\n---\n"),
        common::text(&set)
    );
}

/// RED22B-2 (a shared change login runs UNAPPROVED changes). The check lets two databases share a
/// change login ("what runs as it, a person approved"), but every change a policy *allows* runs
/// as the change login too. With the tables' owner as both databases' change login (as
/// `tests/databases.rs` configures `sales` and `analytics`), an allowed call on `staging` runs as
/// the owner of database `prod`: `ALTER DATABASE prod SET search_path = private, public` succeeds,
/// prod's agent picks it up at its next session, and a read judged as `public.customers` returns
/// `private.customers`. Honest configuration; the agent exploits it with one allowed call.
#[tokio::test]
async fn red22b_an_allowed_change_on_one_database_cannot_change_another_through_a_shared_change_login() {
    let dir = tempdir();
    let staging = TestDb::create_for_setup(SETUP).await;
    let prod = TestDb::create_for_setup(&format!("{SETUP}\n{PRIVATE}")).await;
    // Each database its own agent login (what the logins check asks for), set up like `pgwarden setup`.
    let staging_agent = format!("{}_agent", staging.name);
    let admin = staging.admin().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {staging_agent} LOGIN; GRANT CONNECT ON DATABASE {s} TO {staging_agent}; \
             GRANT USAGE ON SCHEMA public TO {staging_agent}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {staging_agent}",
            s = staging.name
        ))
        .await
        .unwrap();
    prod.admin()
        .await
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA public, private TO {AGENT}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public, private TO {AGENT}"
        ))
        .await
        .unwrap();
    let config = config(
        dir.path(),
        "[[database]]\nname = \"staging\"\nurl_env = \"STAGING_URL\"\nchange_url_env = \"STAGING_CHANGE\"\n\
         [[database]]\nname = \"prod\"\nurl_env = \"PROD_URL\"\nchange_url_env = \"PROD_CHANGE\"\npool_size = 1\n",
    );
    let builder = || {
        TestServer::builder()
            .policy(POLICY)
            .args(["--config".as_ref(), config.as_os_str()])
            .env("STAGING_URL", common::socket_dsn(&staging_agent, &staging.name))
            .env("STAGING_CHANGE", common::socket_dsn(OWNER, &staging.name))
            .env("PROD_URL", prod.dsn())
            .env("PROD_CHANGE", common::socket_dsn(OWNER, &prod.name))
    };
    let out = builder().output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("same login") {
        return; // refused at start: closed
    }
    let mcp = builder().start().await;
    let before = mcp
        .ok(
            "query",
            json!({ "sql": "SELECT email FROM customers ORDER BY id", "database": "prod" }),
        )
        .await;
    assert!(!before.to_string().contains("SECRET"), "{before}");
    let p = &prod.name;
    let alter = mcp
        .call(
            "query",
            json!({ "sql": format!("ALTER DATABASE {p} SET search_path = private, public"), "database": "staging" }),
        )
        .await;
    let seen = prod_reads_after_reconnect(&mcp).await;
    let settings: i64 = prod
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE d.datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    prod.admin()
        .await
        .batch_execute(&format!("ALTER DATABASE {p} RESET ALL"))
        .await
        .unwrap();
    assert!(
        alter.is_error == Some(true) && settings == 0 && seen.iter().all(|t| !t.contains("SECRET-private-row")),
        "an allowed call on `staging` ran as the shared change login `{OWNER}` and changed database `prod`:\n\
         ALTER DATABASE on staging: {}\nprod's database settings now: {settings}\nreads on prod:\n{}",
        common::text(&alter),
        seen.join("\n---\n")
    );
}

/// RED22B-5 (`pgwarden check --database` decides for a database nobody declared). Without
/// `--config`, any name is taken: a misspelt or differently-cased `prod` silently drops every
/// `databases = ["prod"]` rule and `prod:` pattern, and `check` answers "allow" for a write that
/// `serve` denies on `prod`. `serve` refuses a policy naming unknown databases; `check` should not
/// answer for a name the policy and no config know.
#[test]
fn red22b_check_refuses_a_database_name_it_cannot_know_instead_of_deciding_without_its_rules() {
    let dir = tempdir();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("{POLICY}\n[[rule]]\nid = \"writes-run\"\neffect = \"allow\"\ncategories = [\"write\"]\n"),
    )
    .unwrap();
    let check = |name: &str| {
        let out = Command::new(common::BIN)
            .args(["check", "--policy"])
            .arg(&policy)
            .args(["--database", name, "UPDATE customers SET email = NULL WHERE id = 1"])
            .env_remove("PGWARDEN_CONFIG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (_, prod) = check("prod");
    assert!(prod.contains("deny by rule `prod-reads-only`"), "{prod}");
    let mut silent = Vec::new();
    for name in ["Prod", "prod ", "prd"] {
        let (ok, said) = check(name);
        if ok && !said.contains("deny") {
            silent.push(format!("--database {name:?}: {said}"));
        }
    }
    assert!(
        silent.is_empty(),
        "`check` decided for databases neither the policy nor a config names, without prod's rules:\n{}",
        silent.join("\n")
    );
}

/// RED22B-3 (an approval follows a name, not a database). Over HTTP with `--state-url`, an approved
/// call survives a restart, and its stored call names its database only by its `pgwarden.toml`
/// name. Restarted with a config where that name reaches another database (names swapped, a URL
/// edited, an environment variable pointing elsewhere), the change bob approved for one database
/// runs on the other when alice awaits it. Operator-reachable (a config edit), not agent-reachable;
/// but the reviewer approved a change to a database, and it ran on one nobody approved.
#[tokio::test]
async fn red22b_an_approved_call_runs_only_on_the_database_it_was_approved_for_after_a_restart() {
    let dir = tempdir();
    let setup = "CREATE TABLE events (id serial PRIMARY KEY, what text);";
    let first = TestDb::create_for_setup(setup).await;
    let second = TestDb::create_for_setup(setup).await;
    // Each database its own agent and change logins (pgwarden refuses shared ones).
    let mut agents = Vec::new();
    let mut writers = Vec::new();
    for db in [&first, &second] {
        let role = format!("{}_agent", db.name);
        let writer = format!("{}_writer", db.name);
        db.admin()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN; GRANT CONNECT ON DATABASE {d} TO {role}; \
                 GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}; \
                 CREATE ROLE {writer} LOGIN; GRANT CONNECT ON DATABASE {d} TO {writer}; \
                 GRANT USAGE ON SCHEMA public TO {writer}; GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {writer}; \
                 GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {writer}",
                d = db.name
            ))
            .await
            .unwrap();
        agents.push(role);
        writers.push(writer);
    }
    let url = |i: usize, db: &TestDb| common::socket_dsn(&agents[i], &db.name);
    let state = TestDb::create_for_setup("").await;
    let team = Team::new("pgw-red22b-team-", &[("alice", &[]), ("bob", &["dba"])]);
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
id = "sales-changes-reviewed"
effect = "approve"
databases = ["sales"]
categories = ["write"]
reviewers = ["group:dba"]

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]
"#;
    let key = dir.path().join("audit.key");
    let serve = |analytics: (String, String), sales: (String, String)| {
        let config = dir.path().join("pgwarden.toml");
        std::fs::write(
            &config,
            format!(
                "[[database]]\nname = \"sales\"\nurl = \"{}\"\nchange_url = \"{}\"\n\
                 [[database]]\nname = \"analytics\"\nurl = \"{}\"\nchange_url = \"{}\"\n",
                sales.0, sales.1, analytics.0, analytics.1
            ),
        )
        .unwrap();
        team.serve(
            TestServer::builder()
                .policy(policy)
                .args(["--config".as_ref(), config.as_os_str()])
                .args(["--state-url".to_string(), common::socket_dsn(OWNER, &state.name)])
                .args(["--audit-key".as_ref(), key.as_os_str()]),
            "",
        )
    };
    let first_urls = (url(0, &first), common::socket_dsn(&writers[0], &first.name));
    let second_urls = (url(1, &second), common::socket_dsn(&writers[1], &second.name));
    let s = serve(first_urls.clone(), second_urls.clone()).await;
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let insert = json!({ "sql": "INSERT INTO events (what) VALUES ('approved for analytics')",
                         "database": "analytics", "intent": "log it" });
    let r = alice.call_tool(common::http::call("query", insert)).await.unwrap();
    let pending = r
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("{}", common::text(&r)));
    assert_eq!(pending["status"], "pending_approval", "{pending}");
    let id = pending["approval_id"].as_str().unwrap().to_string();
    let api = Api::of(&s);
    let (status, answer) = api.approve(&team.bob, &id).await;
    assert_eq!(status, 200, "{answer}");
    drop(alice);
    drop(s);

    // Restarted with the names swapped: `analytics` now reaches the other database.
    let s = serve(second_urls, first_urls).await;
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let ran = common::team::await_call(&alice, &id, 5).await;
    let on = |db: &TestDb| {
        let name = db.name.clone();
        async move {
            let rows = TestDb { name, owner: None }
                .admin()
                .await
                .query("SELECT what FROM events", &[])
                .await
                .unwrap();
            rows.len()
        }
    };
    let (on_first, on_second) = (on(&first).await, on(&second).await);
    assert_eq!(
        on_second,
        0,
        "bob approved an INSERT for `analytics` = database {}; after a restart where `analytics` names {}, \
         it ran there ({on_first} row(s) on the approved one, {on_second} on the other):\n{}",
        first.name,
        second.name,
        common::text(&ran)
    );
}

/// The logins check as each database opens: the same login spelled through another path to the
/// same socket passes the URL comparison, but Postgres says who the login is and which cluster
/// this is (`pg_control_system()`): the second database does not open, and says why; the first
/// serves.
#[tokio::test]
async fn a_login_shared_under_another_spelling_is_caught_when_the_second_database_opens() {
    let dir = tempdir();
    let staging = TestDb::new(SETUP).await;
    let prod = TestDb::new(&format!("{SETUP}\n{PRIVATE}")).await;
    let alias = dir.path().join("pg");
    std::os::unix::fs::symlink(common::cluster().cluster.socket_dir(), &alias).unwrap();
    let prod_url = format!(
        "host={} port={} user={AGENT} dbname={}",
        alias.display(),
        common::cluster().cluster.port,
        prod.name
    );
    let config = config(
        dir.path(),
        "[[database]]\nname = \"staging\"\nurl_env = \"STAGING_URL\"\n\
         [[database]]\nname = \"prod\"\nurl_env = \"PROD_URL\"\n",
    );
    let mcp = TestServer::builder()
        .policy(POLICY)
        .args(["--config".as_ref(), config.as_os_str()])
        .env("STAGING_URL", staging.dsn())
        .env("PROD_URL", prod_url)
        .start()
        .await;
    // Whichever opened first serves; the other is refused, saying why.
    let mut answers = Vec::new();
    for name in ["staging", "prod"] {
        let r = mcp.call("query", json!({ "sql": "SELECT 1", "database": name })).await;
        answers.push((name, r.is_error == Some(true), common::text(&r)));
    }
    let served: Vec<_> = answers.iter().filter(|a| !a.1).collect();
    let refused: Vec<_> = answers.iter().filter(|a| a.1).collect();
    assert_eq!((served.len(), refused.len()), (1, 1), "{answers:?}");
    let (name, _, e) = refused[0];
    assert!(
        e.contains(&format!(
            "database `{name}` is unavailable (its logins share the role `{AGENT}` with database `{}` on the same cluster",
            served[0].0
        )),
        "{e}"
    );
}

/// A login's default `search_path` changed after pgwarden read it — here by the operator's
/// superuser, as anything that can `ALTER ROLE` would — takes effect on the pool's next
/// connection, but pgwarden sets the path it classified with in every transaction: an unqualified
/// name still means the table it was judged as. (One database, `--database-url`.)
#[tokio::test]
async fn a_search_path_changed_behind_pgwardens_back_does_not_change_what_a_name_means() {
    let db = TestDb::new(&format!("{SETUP}\n{PRIVATE}")).await;
    let mcp = TestServer::builder()
        .database(&db)
        .policy(
            "[[rule]]\nid = \"private-denied\"\neffect = \"deny\"\ntables = [\"private.*\"]\n\
             [[rule]]\nid = \"reads\"\neffect = \"allow\"\ncategories = [\"read\"]\n",
        )
        .args(["--pool-size", "1"])
        .start()
        .await;
    let read = json!({ "sql": "SELECT email FROM customers ORDER BY id" });
    assert!(!mcp.ok("query", read.clone()).await.to_string().contains("SECRET"));
    let admin = db.admin().await;
    admin
        .batch_execute(&format!(
            "ALTER ROLE {AGENT} IN DATABASE {} SET search_path = private, public",
            db.name
        ))
        .await
        .unwrap();
    // End the pool's session, so the next call opens one with the new default.
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{AGENT}' AND datname = '{}'",
            db.name
        ))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = mcp.call("query", read.clone()).await;
        seen.push(common::text(&r));
    }
    admin
        .batch_execute(&format!("ALTER ROLE {AGENT} IN DATABASE {} RESET ALL", db.name))
        .await
        .unwrap();
    assert!(
        seen.iter()
            .any(|t| t.contains("a***@") || t.contains("alice@example.com")),
        "the read runs again after the reconnect: {seen:?}"
    );
    assert!(
        seen.iter().all(|t| !t.contains("SECRET-private-row")),
        "a read judged as `public.customers` returned `private.customers`: {seen:?}"
    );
}
