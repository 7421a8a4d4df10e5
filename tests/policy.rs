//! Policy over MCP against a real Postgres: deny rules stop calls without a prompt, per-call limits
//! apply, and masked columns never come back raw — through aliases, subqueries, expressions,
//! whole-row values, CTEs, partitions, or views.

mod common;

use common::{Mcp, TestDb, edit_policy, text};
use serde_json::{Value, json};

const SETUP: &str = r#"
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text, token text);
INSERT INTO customers VALUES
  (1, 'Ada', 'ada.lovelace@corp.com', '123-45-6789', 'tok-secret-1'),
  (2, 'Grace', 'grace.hopper@navy.mil', '987-65-4321', 'tok-secret-1'),
  (3, 'Alan', NULL, NULL, NULL);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int, total numeric);
INSERT INTO orders VALUES (10, 1, 9.99), (11, 2, 20.00);
CREATE TABLE canary (id int PRIMARY KEY, v text);
INSERT INTO canary VALUES (1, 'alive');
CREATE VIEW v_emails AS SELECT id, lower(email) AS contact FROM customers;
CREATE VIEW v_filtered AS SELECT id, name FROM customers WHERE email LIKE '%@corp.com';
CREATE VIEW v_rows AS SELECT row_to_json(c) AS j FROM customers c;
CREATE VIEW v_names AS SELECT id, name FROM customers;
CREATE VIEW v_over AS SELECT * FROM v_emails;
CREATE MATERIALIZED VIEW mv_emails AS SELECT email FROM customers;
CREATE TABLE people (id int, region text, email text) PARTITION BY LIST (region);
CREATE TABLE people_eu PARTITION OF people FOR VALUES IN ('eu');
INSERT INTO people VALUES (1, 'eu', 'linus.t@kernel.org');
CREATE SCHEMA app;
CREATE TABLE app.customers (id int, email text);
INSERT INTO app.customers VALUES (1, 'not-masked@app.example');
"#;

const POLICY: &str = r#"
[defaults]
max_rows = 50

[tables."public.customers"]
tags = ["pii"]

[columns."public.customers.email"]
mask = "email"
[columns."public.customers.ssn"]
mask = "last4"
[columns."public.customers.token"]
mask = "hash"
[columns."public.people.email"]
mask = "redact"

[[rule]]
id = "canary-frozen"
effect = "deny"
tables = ["public.canary"]
categories = ["write", "destructive", "ddl"]
reason = "the canary table is frozen"

[[rule]]
id = "tiny-orders"
effect = "allow"
categories = ["read"]
tables = ["public.orders"]
max_rows = 1
statement_timeout = "200ms"

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]

[[rule]]
id = "changes-need-approval"
effect = "approve"
categories = ["write", "ddl", "destructive", "privilege", "export", "unknown"]
"#;

/// Raw values that must never appear in anything the model receives.
const SECRETS: &[&str] = &[
    "ada.lovelace",
    "grace.hopper",
    "123-45-6789",
    "987-65-4321",
    "tok-secret",
    "linus.t",
    "ADA.LOVELACE",
    "GRACE.HOPPER",
];

fn assert_no_secret(sql: &str, r: &rmcp::model::CallToolResult) {
    let everything = format!("{}\n{}", text(r), r.structured_content.clone().unwrap_or(Value::Null));
    for s in SECRETS {
        assert!(!everything.contains(s), "`{sql}` leaked `{s}`:\n{everything}");
    }
}

#[tokio::test]
async fn masked_columns_never_come_back_raw() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let mcp = Mcp::with_policy(&db, POLICY, None).await;

    // Plain columns are masked with the column's own mask, NULL stays NULL.
    let out = mcp
        .ok(
            "query",
            json!({"sql": "SELECT id, email, ssn FROM customers ORDER BY id"}),
        )
        .await;
    assert_eq!(
        out["rows"],
        json!([
            [1, "a***@corp.com", "***6789"],
            [2, "g***@navy.mil", "***4321"],
            [3, null, null]
        ])
    );
    // Hash: equal values stay equal, nothing of the value shows.
    let out = mcp
        .ok("query", json!({"sql": "SELECT token FROM customers ORDER BY id"}))
        .await;
    let t = &out["rows"];
    assert_eq!(t[0], t[1], "same token, same digest");
    assert_eq!(t[2][0], Value::Null);
    assert_eq!(t[0][0].as_str().unwrap().len(), 16);

    // Every shape reads the masking view (the agent's search_path starts with it).
    #[rustfmt::skip]
    let shapes = [
        "SELECT * FROM customers",
        "SELECT email AS e, ssn AS s FROM customers",
        "SELECT e FROM (SELECT email AS e FROM customers) s",
        "SELECT upper(email), ssn || '' FROM customers",
        "SELECT email || '' AS x, concat(ssn, token) FROM customers",
        "SELECT c FROM customers c",
        "SELECT to_json(c), row_to_json(c.*) FROM customers c",
        "SELECT array_agg(c.*) FROM customers c",
        "SELECT string_agg(email, ',') FROM customers",
        "WITH x AS (SELECT * FROM customers) SELECT * FROM x",
        "SELECT * FROM CUSTOMERS",
        "SELECT * FROM \"customers\"",
        "SELECT customers.email FROM customers",
        "SELECT (SELECT email FROM customers ORDER BY id LIMIT 1)",
        "SELECT o.id, x.email FROM orders o, LATERAL (SELECT email FROM customers c WHERE c.id = o.customer_id) x",
        "SELECT c.email, o.total FROM customers c JOIN orders o ON o.customer_id = c.id",
        "SELECT a.email, b.ssn FROM customers a JOIN customers b USING (id)",
        "SELECT email FROM customers UNION ALL SELECT 'x'",
        "SELECT email FROM people_eu",
        "SELECT * FROM people",
        "SELECT format('%s', email), substr(ssn, 1, 11) FROM customers",
        "SELECT email FROM customers WHERE email IS NOT NULL ORDER BY email",
        "WITH customers AS (SELECT 1 AS email) SELECT * FROM customers",
        "EXPLAIN VERBOSE SELECT token FROM customers",
    ];
    for sql in shapes {
        let r = mcp.call("query", json!({"sql": sql})).await;
        assert_ne!(r.is_error, Some(true), "`{sql}` failed: {}", text(&r));
        assert_no_secret(sql, &r);
    }

    // Filters see the masked value too, so they cannot be used as an oracle.
    let out = mcp
        .ok(
            "query",
            json!({"sql": "SELECT count(*) FROM customers WHERE email = 'ada.lovelace@corp.com'"}),
        )
        .await;
    assert_eq!(out["rows"], json!([[0]]));
    let out = mcp
        .ok(
            "query",
            json!({"sql": "SELECT count(*) FROM customers WHERE ssn LIKE '123%'"}),
        )
        .await;
    assert_eq!(out["rows"], json!([[0]]));

    // Unmasked columns, other tables and same-named tables elsewhere are untouched.
    let out = mcp
        .ok("query", json!({"sql": "SELECT name FROM customers ORDER BY id"}))
        .await;
    assert_eq!(out["rows"], json!([["Ada"], ["Grace"], ["Alan"]]));
    let out = mcp
        .ok("query", json!({"sql": "SELECT name FROM public.customers ORDER BY id"}))
        .await;
    assert_eq!(
        out["rows"],
        json!([["Ada"], ["Grace"], ["Alan"]]),
        "unmasked base columns stay readable"
    );
    let out = mcp.ok("query", json!({"sql": "SELECT email FROM app.customers"})).await;
    assert_eq!(out["rows"], json!([["not-masked@app.example"]]));
    let out = mcp
        .ok("query", json!({"sql": "SELECT * FROM v_names ORDER BY id"}))
        .await;
    assert_eq!(
        out["rows"][0],
        json!([1, "Ada"]),
        "a view that reads no masked column runs"
    );

    // describe_table tells the model which columns it will only see masked, of the table itself.
    let d = mcp.ok("describe_table", json!({"table": "customers"})).await;
    assert_eq!(d["tags"], json!(["pii"]));
    assert_eq!(d["schema"], json!("public"), "{d}");
    let masks: Vec<Value> = d["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["mask"].clone())
        .collect();
    assert_eq!(
        masks,
        [Value::Null, Value::Null, json!("email"), json!("last4"), json!("hash")]
    );

    // The base columns and every view over them: Postgres's own permission error, whatever the
    // classifier believed.
    for sql in [
        "SELECT * FROM public.customers",
        "SELECT * FROM PUBLIC.CUSTOMERS",
        "SELECT email FROM public.customers",
        "SELECT c FROM public.customers c",
        "SELECT count(*) FROM public.customers WHERE email LIKE 'ada%'",
        "SELECT email FROM public.people_eu",
        "SELECT * FROM public.people",
        "SELECT * FROM v_emails",
        "SELECT id FROM v_filtered",
        "SELECT * FROM v_rows",
        "SELECT * FROM v_over",
        "SELECT * FROM mv_emails",
        "SELECT upper(contact) FROM public.v_emails",
    ] {
        let r = mcp.call("query", json!({"sql": sql})).await;
        assert_eq!(r.is_error, Some(true), "`{sql}` should fail: {}", text(&r));
        assert!(
            text(&r).contains("42501") && text(&r).contains("permission denied"),
            "`{sql}`: {}",
            text(&r)
        );
        assert_no_secret(sql, &r);
    }
    // Shapes the classifier cannot read fully need approval (refused here), so they never run.
    for sql in [
        // Regression (red team): `$a€$` opens a dollar-quoted string for PostgreSQL but not for the parser.
        "SELECT $a€$, $$ $a€$ AS p, (SELECT string_agg(email || ' ' || ssn, ', ') FROM customers) AS q, $a€$ $$, $a€$",
        "SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats WHERE tablename = 'customers'",
        "SELECT email FROM ONLY customers",
        "SELECT query_to_xml('SELECT email FROM customers', true, true, '')",
    ] {
        let r = mcp.call("query", json!({"sql": sql})).await;
        assert_eq!(r.is_error, Some(true), "`{sql}`: {}", text(&r));
        assert_no_secret(sql, &r);
    }
}

#[tokio::test]
async fn a_deny_rule_stops_a_write_without_any_prompt() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let mcp = Mcp::with_policy(&db, POLICY, None).await;
    for sql in [
        "UPDATE canary SET v = 'dead' WHERE id = 1",
        "DELETE FROM canary",
        "WITH canary AS (DELETE FROM canary WHERE id = 1 RETURNING *) SELECT * FROM canary",
        "UPDATE orders o SET total = 0 FROM canary c WHERE c.id = o.id",
        "DROP TABLE canary",
    ] {
        let e = mcp.err("query", json!({"sql": sql})).await;
        assert!(
            e.starts_with("denied by rule `canary-frozen` (test.toml:"),
            "`{sql}`: {e}"
        );
        assert!(e.contains("the canary table is frozen"), "{e}");
    }
    let r = db
        .client()
        .await
        .query_one("SELECT v FROM canary WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "alive");
    // A write elsewhere is not denied but needs approval, which this build cannot ask for yet.
    let e = mcp
        .err("query", json!({"sql": "UPDATE orders SET total = 0 WHERE id = 10"}))
        .await;
    assert!(
        e.contains("rule `changes-need-approval`") && e.contains("approval"),
        "{e}"
    );
}

#[tokio::test]
async fn policy_limits_apply_per_call() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let mcp = Mcp::with_policy(&db, POLICY, None).await;
    // `tiny-orders` caps orders at one row …
    let out = mcp
        .ok("query", json!({"sql": "SELECT * FROM orders", "max_rows": 100}))
        .await;
    assert_eq!(
        (out["row_count"].clone(), out["truncated"].clone()),
        (json!(1), json!(true))
    );
    assert!(out["notice"].as_str().unwrap().contains("capped at 1"), "{out}");
    // … and gives it 200 ms (the server's own default would be 15 s).
    let started = std::time::Instant::now();
    let e = mcp
        .err(
            "query",
            json!({"sql": "SELECT count(*) FROM orders, generate_series(1, 1000000000)"}),
        )
        .await;
    // 57014, or — when the timer fires at the Sync after Bind, which tokio-postgres does not read —
    // 25P02 on the next step; both name the timeout (regression: a bare 25P02 under load).
    assert!(e.contains("57014") || e.contains("25P02"), "{e}");
    assert!(e.contains("statement_timeout"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the rule's timeout applied"
    );
    // Other reads get `[defaults]`: 50 rows.
    let out = mcp
        .ok(
            "query",
            json!({"sql": "SELECT * FROM generate_series(1, 100)", "max_rows": 100}),
        )
        .await;
    assert_eq!(out["row_count"], json!(50));
}

#[tokio::test]
async fn principals_and_discovery_go_through_the_policy() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let policy = r#"
[tables."public.customers"]
tags = ["pii"]

[[rule]]
id = "ci-no-pii"
effect = "deny"
tags = ["pii"]
principals = ["ci-*"]
reason = "CI jobs do not read personal data"

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]
"#;
    let ci = Mcp::with_policy(&db, policy, Some("ci-nightly")).await;
    let e = ci.err("query", json!({"sql": "SELECT name FROM customers"})).await;
    assert!(e.starts_with("denied by rule `ci-no-pii`"), "{e}");
    let e = ci.err("describe_table", json!({"table": "customers"})).await;
    assert!(e.contains("CI jobs do not read personal data"), "{e}");
    ci.ok("describe_table", json!({"table": "orders"})).await;
    ci.ok("list_tables", json!({})).await;

    let alice = Mcp::with_policy(&db, policy, Some("alice")).await;
    alice.ok("query", json!({"sql": "SELECT name FROM customers"})).await;
    alice.ok("describe_table", json!({"table": "customers"})).await;

    // A policy that allows nothing for discovery denies it by default.
    let only_query = "[[rule]]\nid = \"q\"\neffect = \"allow\"\ntools = [\"query\"]\ncategories = [\"read\"]\n";
    let m = Mcp::with_policy(&db, only_query, None).await;
    let e = m.err("list_tables", json!({})).await;
    assert!(e.starts_with("denied by no policy rule"), "{e}");
}

#[tokio::test]
async fn planner_statistics_of_masked_columns_are_hidden_by_postgres() {
    // The classifier calls pg_stats an export; below it, Postgres shows the agent statistics only
    // for columns it may read, so even a read the classifier let through samples nothing masked.
    let db = TestDb::owned(&format!("{SETUP} ANALYZE customers;"), POLICY).await;
    let database = db.database(1).await;
    let limits = pgwarden::db::read::ReadLimits {
        max_rows: 10,
        statement_timeout: std::time::Duration::from_secs(5),
        max_bytes: pgwarden::config::DEFAULT_MAX_RESULT_BYTES,
    };
    let ct = tokio_util::sync::CancellationToken::new();
    let sql = "SELECT attname::text, most_common_vals::text, histogram_bounds::text FROM pg_catalog.pg_stats \
               WHERE tablename = 'customers' AND schemaname = 'public'";
    let owner = db.owner_client().await;
    let rows: Vec<String> = owner
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{:?} {:?}",
                r.get::<_, Option<String>>(1),
                r.get::<_, Option<String>>(2)
            )
        })
        .collect();
    let rows = rows.join("\n");
    assert!(
        rows.contains("tok-secret") && rows.contains("ada.lovelace"),
        "the statistics hold the values: {rows}"
    );
    let seen = database.read(sql, limits, &ct).await.unwrap();
    let rows = format!("{:?}", seen.rows);
    assert!(
        rows.contains("Ada"),
        "unmasked columns' statistics stay visible: {rows}"
    );
    for s in SECRETS {
        assert!(!rows.contains(s), "pg_stats leaked `{s}` to the agent: {rows}");
    }
}

/// The tests' policy edits (`common::edit_policy`): a key to change that the base does not have
/// fails the test, where a text replacement that misses would leave the policy as it was.
#[test]
#[should_panic(expected = "`approval.wait_budgte` is not in the policy")]
fn a_test_that_sets_a_misspelled_policy_key_fails() {
    edit_policy("[approval]\nwait_budget = \"1s\"\n").set(r#"approval.wait_budgte = "20s""#);
}

/// … and so does a key it adds that pgwarden does not know, or one the base already has.
#[test]
fn a_test_policy_edit_adds_only_keys_pgwarden_knows_and_never_over_the_base() {
    let base = "[approval]\nwait_budget = \"1s\"\n\n[[rule]]\nid = \"reads-run\"\neffect = \"allow\"\ncategories = [\"read\"]\n";
    let edited = edit_policy(base)
        .set(r#"approval.wait_budget = "20s""#)
        .add(r#"approval.min_channel.critical = "client""#)
        .toml();
    pgwarden::policy::Policy::parse("edited.toml", &edited).expect("the edit loads");
    assert!(
        edited.contains("wait_budget = \"20s\"") && !edited.contains("\"1s\""),
        "{edited}"
    );
    assert!(
        edited.contains("critical = \"client\"") && edited.contains("reads-run"),
        "{edited}"
    );
    let unknown = std::panic::catch_unwind(|| edit_policy(base).add(r#"approval.wait_budgte = "20s""#).toml());
    let already = std::panic::catch_unwind(|| edit_policy(base).add(r#"approval.wait_budget = "20s""#));
    assert!(unknown.is_err(), "pgwarden's loader refuses a key it does not know");
    assert!(already.is_err(), "`add` does not overwrite what the base says");
}
