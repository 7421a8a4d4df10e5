//! What Postgres itself enforces, whatever pgwarden's parser believed (issue 15): masks through
//! column privileges and masking views (as the agent's own login, psql-style, and through the
//! database layer with no classifier in front), masks across partitions and inheritance, lexing
//! settings pinned against database and role defaults, `serve` refusing masks it cannot see
//! enforced, `setup --print-sql` changing nothing, and change errors that never quote masked values.

mod common;

use std::{process::Command, time::Duration};

use common::{AGENT, BIN, Mcp, Reviewer, TestDb, TestServer, socket_dsn, text};
use pgwarden::db::read::ReadLimits;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SETUP: &str = r#"
CREATE TABLE customers (id int PRIMARY KEY, name text, email text CHECK (email <> 'forbidden'), phone text);
INSERT INTO customers VALUES (1, 'Ada', 'ada.lovelace@corp.com', '+44 20 7946 0958'), (2, 'Grace', 'grace@navy.mil', NULL);
CREATE VIEW v_contacts AS SELECT id, email FROM customers;
CREATE VIEW v_names AS SELECT id, name FROM customers;
CREATE FUNCTION email_of(c customers) RETURNS text LANGUAGE sql AS 'SELECT c.email';
CREATE FUNCTION lookup_email(int) RETURNS text LANGUAGE sql SECURITY DEFINER
  AS 'SELECT email FROM public.customers WHERE id = $1';
CREATE VIEW v_lookup AS SELECT id, lookup_email(id) AS contact FROM customers;
CREATE TABLE events (id int, region text, contact text) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
INSERT INTO events VALUES (1, 'eu', 'linus@kernel.org'), (2, 'us', 'ken@bell-labs.com');
CREATE TABLE parent_log (id int, secret text);
CREATE TABLE child_log (extra int) INHERITS (parent_log);
INSERT INTO child_log VALUES (1, 'child-secret-value', 7);
"#;

/// Masks on a table, on one partition only, and on an inheritance child only.
const POLICY: &str = r#"
[columns."public.customers.email"]
mask = "email"
[columns."public.customers.phone"]
mask = "last4"
[columns."public.events_eu.contact"]
mask = "redact"
[columns."public.child_log.secret"]
mask = "hash"

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]

[[rule]]
id = "changes-need-approval"
effect = "approve"
categories = ["write", "ddl", "destructive", "unknown"]
"#;

const SECRETS: &[&str] = &[
    "ada.lovelace",
    "grace@navy",
    "7946 0958",
    "linus@",
    "ken@bell",
    "child-secret",
];

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaked `{s}`: {text}");
    }
}

fn limits() -> ReadLimits {
    ReadLimits {
        max_rows: 100,
        statement_timeout: Duration::from_secs(5),
        max_bytes: pgwarden::config::DEFAULT_MAX_RESULT_BYTES,
    }
}

/// Texts that name base columns directly. Sent by a classifier-free path, each must fail in
/// Postgres or return nothing raw.
const HOSTILE: &[&str] = &[
    "SELECT email FROM public.customers",
    "SELECT * FROM public.customers",
    "SELECT c FROM public.customers c",
    "SELECT row_to_json(c) FROM public.customers c",
    "SELECT count(*) FROM public.customers WHERE email LIKE 'ada%'",
    "SELECT public.email_of(c) FROM public.customers c",
    "SELECT c.email_of FROM public.customers c",
    "SELECT * FROM v_contacts",
    "SELECT public.lookup_email(1)",
    "SELECT * FROM public.v_lookup",
    "SELECT contact FROM public.events",
    "SELECT contact FROM public.events_us",
    "SELECT contact FROM public.events_eu",
    "SELECT secret FROM public.parent_log",
    "SELECT secret FROM ONLY public.parent_log",
    "SELECT secret FROM public.child_log",
    "SELECT most_common_vals::text FROM pg_catalog.pg_stats WHERE tablename = 'customers'",
    "SELECT 1 - -1, (SELECT string_agg(email, ',') FROM public.customers)",
];

#[tokio::test]
async fn the_agent_login_cannot_read_masked_columns_whatever_the_text() {
    let db = TestDb::owned(SETUP, POLICY).await;
    // psql-style: a plain session as the agent role, no pgwarden in between.
    let agent = db.client().await;
    for sql in HOSTILE {
        match agent.simple_query(sql).await {
            Err(e) => {
                let code = e.code().map(|c| c.code().to_string());
                assert_eq!(code.as_deref(), Some("42501"), "`{sql}`: {e}");
            }
            Ok(messages) => {
                let seen: Vec<String> = messages
                    .iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                            (0..r.len())
                                .map(|i| r.get(i).unwrap_or("").to_string())
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect();
                assert_clean(sql, &seen.join("\n"));
            }
        }
    }
    // The database layer, with no classifier in front of it.
    let database = db.database(2).await;
    let ct = CancellationToken::new();
    for sql in HOSTILE {
        match database.read(sql, limits(), &ct).await {
            Err(e) => assert_clean(sql, &e.to_string()),
            Ok(r) => assert_clean(sql, &format!("{:?}", r.rows)),
        }
    }
    // The same names unqualified read the masking views: masked, never raw.
    for (sql, expected) in [
        (
            "SELECT email FROM customers ORDER BY id",
            json!([["a***@corp.com"], ["g***@navy.mil"]]),
        ),
        ("SELECT phone FROM customers ORDER BY id", json!([["***0958"], [null]])),
        (
            "SELECT contact FROM events ORDER BY id",
            json!([["[redacted]"], ["[redacted]"]]),
        ),
        ("SELECT contact FROM events_us", json!([["[redacted]"]])),
    ] {
        let r = database.read(sql, limits(), &ct).await.unwrap();
        assert_eq!(json!(r.rows), expected, "{sql}");
    }
    let r = database
        .read("SELECT secret FROM parent_log", limits(), &ct)
        .await
        .unwrap();
    assert_eq!(
        r.rows[0][0].as_str().map(str::len),
        Some(16),
        "hashed through the parent: {:?}",
        r.rows
    );
}

#[tokio::test]
async fn masks_hold_through_query_for_partitions_children_views_and_computed_fields() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let mcp = Mcp::with_policy(&db, POLICY, None).await;
    for sql in HOSTILE.iter().chain(&[
        "SELECT * FROM events",
        "SELECT * FROM parent_log",
        "SELECT * FROM child_log",
        "SELECT c.email_of FROM customers c",
        "SELECT * FROM v_names",
    ]) {
        let r = mcp.call("query", json!({"sql": sql})).await;
        let all = format!("{}\n{:?}", text(&r), r.structured_content);
        assert_clean(sql, &all);
    }
}

#[tokio::test]
async fn a_lexing_setting_installed_for_the_database_or_role_never_reaches_pgwarden() {
    let db = TestDb::new("CREATE TABLE t (v text); INSERT INTO t VALUES ('x');").await;
    let admin = db.admin().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} SET standard_conforming_strings = off; \
             ALTER ROLE {AGENT} IN DATABASE {} SET backslash_quote = on",
            db.name, db.name
        ))
        .await
        .unwrap();
    // A plain session gets the defaults: the backslash escapes the quote.
    let plain = db.client().await;
    let r = plain.simple_query("SHOW standard_conforming_strings").await.unwrap();
    assert!(
        matches!(&r[1], tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("off")),
        "the database default is really installed"
    );
    // pgwarden's sessions lex as its parser does: `'a\'` is the two characters a and \.
    let database = db.database(2).await;
    let ct = CancellationToken::new();
    for _ in 0..3 {
        let r = database
            .read(
                "SELECT current_setting('standard_conforming_strings'), current_setting('backslash_quote'), 'a\\' AS s",
                limits(),
                &ct,
            )
            .await
            .unwrap();
        assert_eq!(json!(r.rows), json!([["on", "off", "a\\"]]));
    }
}

fn write_policy(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, POLICY).unwrap();
    path
}

/// `pgwarden serve` with [`POLICY`] as a client starts it: `Ok(())` when it got past the mask
/// check (it then stops, as stdin is closed before `initialize`), else its stderr.
fn serve(db: &TestDb) -> Result<(), String> {
    let out = TestServer::builder().database(db).policy(POLICY).output();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if stderr.contains("masks are enforced by Postgres for this login") {
        Ok(())
    } else {
        Err(stderr)
    }
}

#[tokio::test]
async fn serve_refuses_masks_that_postgres_does_not_enforce_and_names_the_fix() {
    // The agent owns the tables: it can read every column, so no mask would hold.
    let unprotected = TestDb::new(SETUP).await;
    let e = serve(&unprotected).unwrap_err();
    assert!(e.contains("does not enforce them"), "{e}");
    assert!(e.contains("can read the masked columns"), "{e}");
    assert!(e.contains("pgwarden setup"), "{e}");

    let db = TestDb::owned(SETUP, POLICY).await;
    serve(&db).unwrap_or_else(|e| panic!("serve should start after setup: {e}"));

    // A column added since setup: the masking views no longer match, so setup must run again.
    db.owner_client()
        .await
        .batch_execute("ALTER TABLE customers ADD COLUMN notes text")
        .await
        .unwrap();
    let e = serve(&db).unwrap_err();
    assert!(e.contains("do not match this policy"), "{e}");
    // A view over a masked column granted to everyone behind setup's back.
    db.setup(POLICY).await.unwrap();
    serve(&db).unwrap();
    db.owner_client()
        .await
        .batch_execute("GRANT SELECT ON v_contacts TO PUBLIC")
        .await
        .unwrap();
    let e = serve(&db).unwrap_err();
    assert!(e.contains("`public.v_contacts`"), "{e}");
    // A SECURITY DEFINER function whose owner reads masked columns, callable again.
    db.setup(POLICY).await.unwrap();
    db.owner_client()
        .await
        .batch_execute("GRANT EXECUTE ON FUNCTION lookup_email(int) TO PUBLIC")
        .await
        .unwrap();
    let e = serve(&db).unwrap_err();
    assert!(e.contains("SECURITY DEFINER function `lookup_email(integer)`"), "{e}");
    // Row-level security on a masked table: a masking view would read it as its owner, so the
    // agent would see rows its policies hide (second red team). Refused, by serve and by setup.
    db.owner_client()
        .await
        .batch_execute(
            "REVOKE EXECUTE ON FUNCTION lookup_email(int) FROM PUBLIC; ALTER TABLE customers ENABLE ROW LEVEL SECURITY; \
             CREATE POLICY only_ada ON customers TO pgwarden_agent USING (id = 1)",
        )
        .await
        .unwrap();
    let e = serve(&db).unwrap_err();
    assert!(e.contains("`public.customers` has row-level security"), "{e}");
    let e = db.setup(POLICY).await.unwrap_err();
    assert!(e.contains("`public.customers` has row-level security"), "{e}");
}

#[tokio::test]
async fn setup_print_sql_changes_nothing_and_setup_runs_twice() {
    let db = TestDb::create_for_setup(SETUP).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(&dir);
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .arg("setup")
            .args(["--policy"])
            .arg(&policy)
            .args(["--agent-role", "pgw_setup_agent"])
            .args(extra)
            .env("PGWARDEN_SETUP_DATABASE_URL", socket_dsn("postgres", &db.name))
            .output()
            .unwrap()
    };
    let out = run(&["--print-sql"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(
        sql.contains("CREATE VIEW pgwarden_mask.\"customers\" WITH (security_barrier)"),
        "{sql}"
    );
    assert!(
        sql.contains("REVOKE SELECT ON \"public\".\"events_us\""),
        "siblings of a masked partition: {sql}"
    );
    assert!(sql.contains("REVOKE SELECT ON \"public\".\"v_contacts\""), "{sql}");
    let admin = db.admin().await;
    async fn exists(a: &tokio_postgres::Client) -> bool {
        a.query_one("SELECT to_regnamespace('pgwarden_mask') IS NOT NULL", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    }
    assert!(!exists(&admin).await, "--print-sql changed the database");
    for _ in 0..2 {
        let out = run(&[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    }
    assert!(exists(&admin).await);
    let denied: bool = admin
        .query_one(
            "SELECT NOT has_column_privilege('pgw_setup_agent', 'public.customers', 'email', 'SELECT') \
               AND has_column_privilege('pgw_setup_agent', 'public.customers', 'name', 'SELECT')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(denied);
}

#[tokio::test]
async fn a_failed_change_as_another_login_never_quotes_masked_values() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let reviewer = Reviewer::says("approve", None, None);
    let mcp = Mcp::reviewed(&db, POLICY, reviewer, common::Era::Legacy).await;
    for sql in [
        // `invalid input syntax for type integer: "ada.lovelace@corp.com"`
        "UPDATE public.customers SET id = email::int WHERE id = 1",
        // `Failing row contains (1, Ada, forbidden, +44 20 7946 0958)`
        "UPDATE public.customers SET email = 'forbidden' WHERE id = 1",
        "UPDATE public.customers SET name = name WHERE id = 1 RETURNING *",
    ] {
        let r = mcp.call("query", json!({"sql": sql})).await;
        let all = format!("{}\n{:?}", text(&r), r.structured_content);
        assert_clean(sql, &all);
    }
}

/// Regression (red team): an approved `unknown` SELECT ran on the change path as the login that can
/// read masked columns and reported its row count, and a dry run's count answered "how many rows
/// match this guess".
#[tokio::test]
async fn approved_queries_run_as_the_agent_and_dry_runs_under_masks_report_no_count() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let mcp = Mcp::reviewed(&db, POLICY, Reviewer::says("approve", None, None), common::Era::Legacy).await;
    let sql = "SELECT id, email FROM ONLY public.customers WHERE email LIKE 'ada%'";
    let r = mcp.call("query", json!({ "sql": sql })).await;
    let all = format!("{}\n{:?}", text(&r), r.structured_content);
    assert_eq!(r.is_error, Some(true), "{all}");
    assert!(
        all.contains("42501"),
        "ran as the agent, which may not read the column: {all}"
    );
    assert!(!all.contains("rows affected"), "{all}");

    let mcp = Mcp::reviewed(&db, POLICY, Reviewer::says("dry_run", None, None), common::Era::Legacy).await;
    let out = mcp
        .ok(
            "query",
            json!({ "sql": "UPDATE public.customers SET name = name WHERE email LIKE 'ada%'" }),
        )
        .await;
    assert_eq!(out["change"]["rows_affected"], serde_json::Value::Null, "{out}");
    assert_eq!(out["change"]["committed"], json!(false), "{out}");
    let records = mcp.audit_records();
    let outcome = records.last().unwrap().outcome.as_ref().unwrap();
    assert_eq!(outcome.rows_affected, Some(1), "the audit trail keeps the count");
}

/// A grant made behind pgwarden's back while it serves (or a second sandbox user's policy): within
/// the catalog watcher's period pgwarden stops running SQL rather than serve unmasked data.
#[tokio::test]
async fn masks_undone_while_serving_stop_every_call_until_setup_runs_again() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let mcp = Mcp::with_policy(&db, POLICY, None).await;
    let read = json!({ "sql": "SELECT email FROM customers ORDER BY id LIMIT 1" });
    assert_eq!(mcp.ok("query", read.clone()).await["rows"], json!([["a***@corp.com"]]));
    db.owner_client()
        .await
        .batch_execute("GRANT SELECT ON customers TO PUBLIC")
        .await
        .unwrap();
    let until = |want_refused: bool| {
        let mcp = &mcp;
        let read = read.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let r = mcp.call("query", read.clone()).await;
                let refused = text(&r).contains("stopped enforcing the policy's column masks");
                assert_clean("a read while masks were undone", &text(&r));
                if refused == want_refused {
                    return text(&r);
                }
                assert!(std::time::Instant::now() < deadline, "still {}", text(&r));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let refused = until(true).await;
    assert!(refused.contains("can read the masked column"), "{refused}");
    db.setup(POLICY).await.unwrap();
    until(false).await;
}
