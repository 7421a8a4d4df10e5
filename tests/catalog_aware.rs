//! Issue 15 against a real PostgreSQL: user code that hides behind built-in syntax (computed fields,
//! domains with CHECKs, user operators, views over them) is never run as an allowed read. Under the
//! default policy it needs a person, and with nobody to ask it is refused before anything runs.

mod common;

use std::time::{Duration, Instant};

use common::{Mcp, TestDb, limits};
use serde_json::json;

/// Every user function here first records that it ran, so a run is visible even when the read-only
/// transaction turns the INSERT into an error (the error then names the read-only transaction).
const SETUP: &str = r#"
CREATE TABLE ran (what text);
CREATE TABLE customers (id int PRIMARY KEY, name varchar(40), email text);
INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com'), (2, 'Bob', 'bob@example.com');
CREATE FUNCTION touch(v text) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO ran VALUES ('touch ' || v); RETURN true; END $$;
CREATE DOMAIN checked AS text CHECK (touch(VALUE));
CREATE FUNCTION email_of(c customers) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO ran VALUES ('email_of'); RETURN c.email; END $$;
CREATE FUNCTION cust_eq(a customers, b customers) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO ran VALUES ('cust_eq'); RETURN a.id = b.id; END $$;
CREATE OPERATOR = (LEFTARG = customers, RIGHTARG = customers, FUNCTION = cust_eq);
CREATE FUNCTION lower(v varchar) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO ran VALUES ('lower'); RETURN v; END $$;
CREATE VIEW customer_emails AS SELECT c.id, c.email_of FROM customers c;
"#;

async fn ran(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM ran", &[])
        .await
        .expect("count ran")
        .get(0)
}

#[tokio::test]
async fn user_code_behind_builtin_syntax_is_never_an_allowed_read() {
    let db = TestDb::new(SETUP).await;
    // The built-in default policy: reads run, `unknown` needs a person; this client cannot ask one.
    let mcp = Mcp::start(&db, limits()).await;
    for sql in [
        "SELECT c.email_of FROM customers c",
        "SELECT (c).email_of FROM customers c",
        "SELECT email_of(c) FROM customers c",
        "SELECT 'x'::checked",
        "SELECT CAST('x' AS checked)",
        "SELECT ARRAY['x']::checked[]",
        "SELECT a.id FROM customers a, customers b WHERE a = b",
        "SELECT lower(name) FROM customers",
        "SELECT * FROM customer_emails",
    ] {
        let e = mcp.err("query", json!({ "sql": sql })).await;
        assert!(e.contains("classified as unknown"), "{sql}: {e}");
        assert!(e.contains("Nothing was executed"), "{sql}: {e}");
        assert!(!e.contains("read-only transaction"), "{sql} ran: {e}");
    }
    assert_eq!(ran(&db).await, 0, "no user function ran");
    // The same table read without the user code is still a plain read.
    let out = mcp
        .ok("query", json!({ "sql": "SELECT c.name FROM customers c ORDER BY id" }))
        .await;
    assert_eq!(out["rows"], json!([["Ada"], ["Bob"]]));
}

#[tokio::test]
async fn a_function_created_after_start_is_recognised_within_the_refresh_period() {
    let db = TestDb::new(SETUP).await;
    let mcp = Mcp::start(&db, limits()).await;
    let sql = "SELECT c.name, c.nickname FROM customers c";
    let e = mcp.err("query", json!({ "sql": sql })).await;
    assert!(e.contains("column c.nickname does not exist"), "before: {e}");
    db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION nickname(c customers) RETURNS text LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO ran VALUES ('nickname'); RETURN c.name; END $$",
        )
        .await
        .expect("create the function outside pgwarden");
    let started = Instant::now();
    loop {
        let e = mcp.err("query", json!({ "sql": sql })).await;
        if e.contains("classified as unknown") {
            assert!(e.contains("public.nickname(c customers)"), "{e}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still not recognised: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ran(&db).await, 0);
}

#[tokio::test]
async fn the_catalog_facts_name_the_user_objects_and_the_signature_moves_with_them() {
    let db = TestDb::new(SETUP).await;
    let database = db.database(1).await;
    let facts = database.catalog_facts().await.expect("facts");
    assert_eq!(facts.functions["email_of"], ["public.email_of(c customers)"]);
    assert_eq!(facts.operators["="], ["public.=(customers, customers)"]);
    assert!(facts.types.contains_key("checked") && facts.types.contains_key("_checked"));
    assert!(facts.code_relations["public.customer_emails"][0].contains("email_of"));
    assert_eq!(facts.search_path, ["public"]);
    assert!(facts.relations["pg_catalog"].contains("pg_class"));
    let before = database.catalog_signature().await.expect("signature");
    assert_eq!(before, database.catalog_signature().await.expect("signature"));
    db.client()
        .await
        .batch_execute(
            "CREATE SCHEMA pgwarden_mask; CREATE VIEW pgwarden_mask.customers AS SELECT id, name FROM public.customers; \
             COMMENT ON VIEW pgwarden_mask.customers IS 'pgwarden mask of public.customers'",
        )
        .await
        .expect("mask view");
    assert_ne!(before, database.catalog_signature().await.expect("signature"));
    let facts = database.catalog_facts().await.expect("facts");
    assert_eq!(facts.mask_views["customers"], "public.customers");
}

/// Regression (red team of issue 15): a user `=` over built-in types is looked up by name for
/// `NULLIF`, `JOIN … USING` and more; domains named like other databases' types (`string`,
/// `datetime`) and types in column definition lists ran their CHECKs as allowed reads.
#[tokio::test]
async fn hijacked_builtin_syntax_and_parser_named_domains_never_run_as_reads() {
    let setup = format!(
        "{SETUP}
         CREATE DOMAIN string AS text CHECK (touch(VALUE));
         CREATE DOMAIN datetime AS text CHECK (touch(VALUE));
         CREATE TABLE vt (v varchar); INSERT INTO vt VALUES ('a');
         CREATE TABLE vt2 (v varchar); INSERT INTO vt2 VALUES ('a');"
    );
    let db = TestDb::new(&setup).await;
    let mcp = Mcp::start(&db, limits()).await;
    for sql in [
        "SELECT 'x'::string",
        "SELECT 'x'::datetime",
        "SELECT datetime 'x'",
        "SELECT * FROM json_to_record('{\"a\":\"x\"}') AS t(a checked)",
        "SELECT * FROM jsonb_to_recordset('[{\"a\":\"x\"}]') AS t(a datetime)",
        "SELECT * FROM XMLTABLE('/r' PASSING ('<r><a>x</a></r>'::xml) COLUMNS a checked PATH 'a')",
    ] {
        let e = mcp.err("query", json!({ "sql": sql })).await;
        assert!(e.contains("classified as unknown"), "{sql}: {e}");
    }
    assert_eq!(ran(&db).await, 0, "no user code ran");

    // Now a user `=` over varchar: every statement needs a person, NULLIF and USING included.
    db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION spy_eq(a varchar, b varchar) RETURNS boolean LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO ran VALUES ('spy_eq'); RETURN a::text = b::text; END $$;
             CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = spy_eq);",
        )
        .await
        .unwrap();
    let mcp = Mcp::start(&db, limits()).await;
    for sql in [
        "SELECT NULLIF('a'::varchar, 'b'::varchar)",
        "SELECT * FROM vt JOIN vt2 USING (v)",
        "SELECT * FROM vt NATURAL JOIN vt2",
        "SELECT 1",
    ] {
        let e = mcp.err("query", json!({ "sql": sql })).await;
        assert!(e.contains("classified as unknown"), "{sql}: {e}");
        assert!(
            e.contains("operator =(character varying,character varying)"),
            "{sql}: {e}"
        );
    }
    assert_eq!(ran(&db).await, 0, "no user code ran");
}

/// Issue 15, class 4: secrets that catalogs show to any role — another role's settings, the
/// agent's own user mapping with its password, other sessions' statements — were auto-allowed reads.
/// Below the classifier Postgres really does show them, so the classifier is what stops them.
#[tokio::test]
async fn catalog_secrets_are_never_auto_allowed_reads() {
    let db = TestDb::new("CREATE TABLE t (a int);").await;
    let holder = format!("{}_secret_holder", db.name);
    db.admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {holder} NOLOGIN;
             ALTER ROLE {holder} SET app.jwt_secret = 'sekrit-jwt-value';
             CREATE EXTENSION postgres_fdw;
             CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'db.internal', dbname 'x');
             CREATE USER MAPPING FOR {agent} SERVER remote OPTIONS (user 'svc', password 'sekrit-fdw-password');
             GRANT USAGE ON FOREIGN SERVER remote TO {agent};
             CREATE EXTENSION pg_stat_statements;",
            agent = common::AGENT
        ))
        .await
        .unwrap();
    let reads = [
        "SELECT rolname, rolconfig FROM pg_roles",
        "SELECT usename, useconfig FROM pg_catalog.pg_user",
        "SELECT setconfig FROM pg_db_role_setting",
        "SELECT srvname, umoptions FROM pg_user_mappings",
        "SELECT * FROM information_schema.user_mapping_options",
        "SELECT * FROM information_schema._pg_user_mappings",
        "SELECT option_name, option_value FROM information_schema.foreign_server_options",
        "SELECT srvoptions FROM pg_foreign_server",
        "SELECT * FROM pg_options_to_table((SELECT umoptions FROM pg_user_mappings LIMIT 1))",
        "SELECT query FROM public.pg_stat_statements",
        "SELECT proconfig FROM pg_proc WHERE proconfig IS NOT NULL",
    ];
    // The leak is real: the agent's own login reads them straight from the catalogs.
    let plain = db.client().await;
    let seen = plain
        .query_one(
            "SELECT (SELECT array_to_string(rolconfig, ',') FROM pg_roles WHERE rolname = $1), \
                           (SELECT array_to_string(umoptions, ',') FROM pg_user_mappings)",
            &[&holder],
        )
        .await
        .unwrap();
    assert!(seen.get::<_, String>(0).contains("sekrit-jwt-value"));
    assert!(seen.get::<_, String>(1).contains("sekrit-fdw-password"));
    let mcp = Mcp::start(&db, limits()).await;
    for sql in reads {
        let r = mcp.call("query", json!({ "sql": sql })).await;
        let all = format!("{}\n{:?}", common::text(&r), r.structured_content);
        assert_eq!(r.is_error, Some(true), "{sql} ran: {all}");
        assert!(
            all.contains("classified as export") || all.contains("sensitive catalog"),
            "{sql}: {all}"
        );
        assert!(!all.contains("sekrit"), "{sql} leaked: {all}");
    }
}

/// Regression (second red team, issue 15): a domain whose CHECK calls user code runs it whenever a
/// value is converted to the table's row type (`COALESCE(t, '(…)')`), with neither the domain nor
/// the function in the text; a default btree operator class for a built-in type runs user code
/// for DISTINCT, ORDER BY and UNION with no operator written.
#[tokio::test]
async fn domain_checks_behind_row_types_and_default_operator_classes_are_unknown() {
    let setup = format!(
        "{SETUP}
         CREATE DOMAIN posint AS int CHECK (touch(VALUE::text));
         CREATE TABLE dt (id int, d posint);
         INSERT INTO dt VALUES (1, NULL);
         TRUNCATE ran;"
    );
    let db = TestDb::new(&setup).await;
    let mcp = Mcp::start(&db, limits()).await;
    for sql in [
        "SELECT COALESCE(t, '(2,11)') FROM dt t",
        "SELECT t FROM dt t UNION ALL SELECT '(1,17)'",
        "SELECT jsonb_populate_record(t, '{\"d\": 7}') FROM dt t",
        "SELECT id FROM dt",
    ] {
        let e = mcp.err("query", json!({ "sql": sql })).await;
        assert!(e.contains("classified as unknown"), "{sql}: {e}");
        assert!(e.contains("of the domain posint"), "{sql}: {e}");
    }
    assert_eq!(ran(&db).await, 0, "no user code ran");

    db.admin()
        .await
        .batch_execute(
            "CREATE FUNCTION jcmp(a json, b json) RETURNS int LANGUAGE plpgsql IMMUTABLE AS
               $$ BEGIN INSERT INTO ran VALUES ('jcmp'); RETURN 0; END $$;
             CREATE FUNCTION jlt(a json, b json) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT jcmp(a, b) < 0';
             CREATE FUNCTION jeq(a json, b json) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT jcmp(a, b) = 0';
             CREATE OPERATOR <<< (LEFTARG = json, RIGHTARG = json, FUNCTION = jlt);
             CREATE OPERATOR <<= (LEFTARG = json, RIGHTARG = json, FUNCTION = jlt);
             CREATE OPERATOR === (LEFTARG = json, RIGHTARG = json, FUNCTION = jeq);
             CREATE OPERATOR >>= (LEFTARG = json, RIGHTARG = json, FUNCTION = jlt);
             CREATE OPERATOR >>> (LEFTARG = json, RIGHTARG = json, FUNCTION = jlt);
             CREATE OPERATOR CLASS json_user_ops DEFAULT FOR TYPE json USING btree AS
               OPERATOR 1 <<<, OPERATOR 2 <<=, OPERATOR 3 ===, OPERATOR 4 >>=, OPERATOR 5 >>>,
               FUNCTION 1 jcmp(json, json);",
        )
        .await
        .unwrap();
    let mcp = Mcp::start(&db, limits()).await;
    for sql in [
        "SELECT DISTINCT x FROM (VALUES ('[1]'::json), ('[2]'::json)) v(x)",
        "SELECT '[1]'::json UNION SELECT '[2]'::json",
        "SELECT 1",
    ] {
        let e = mcp.err("query", json!({ "sql": sql })).await;
        assert!(
            e.contains("default btree operator class json_user_ops for json"),
            "{sql}: {e}"
        );
    }
    assert_eq!(ran(&db).await, 0, "no user code ran");
}
