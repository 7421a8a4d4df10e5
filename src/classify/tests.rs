//! Table-driven rules: each case is a statement and the category it must get.

use super::{Category::*, *};

fn category(sql: &str) -> Category {
    classify(sql).category()
}

#[test]
fn reads_that_look_dangerous_stay_reads() {
    for sql in [
        "SELECT 'DROP TABLE users; DELETE FROM t' AS s",
        "SELECT 1 -- ; DROP TABLE t",
        "SELECT /* DELETE FROM t; */ count(*) FROM t",
        "SELECT id AS \"delete\", v AS \"commit\" FROM t",
        "SELECT * FROM \"drop table users\"",
        "SELECT $$; DROP TABLE orders; $$",
        "SELECT format('DROP TABLE %I', 't')",
        "SELECT E'\\'; DROP TABLE orders; --'",
        "WITH deleted AS (SELECT * FROM t WHERE v = 'delete') SELECT * FROM deleted",
        "SELECT c.name, o.total FROM customers c JOIN LATERAL (SELECT total FROM orders WHERE customer_id = c.id LIMIT 1) o ON true",
        "SELECT pg_catalog.now(), '2024-01-01'::date, 1::numeric(10,2), 'public.t'::regclass",
        "SELECT current_setting('server_version')",
        "EXPLAIN DELETE FROM t",
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        "SHOW search_path",
        "SELECT * FROM generate_series(1, 10) AS g(i)",
    ] {
        assert_eq!(category(sql), Read, "{sql}: {:?}", classify(sql).reasons);
    }
}

#[test]
fn each_rule_assigns_its_category() {
    for (sql, want) in [
        ("INSERT INTO t VALUES (1)", Write),
        ("UPDATE t SET v = 1 WHERE id = 2", Write),
        ("UPDATE t SET v = 1", Destructive),
        ("DELETE FROM t WHERE id = 1", Write),
        ("DELETE FROM t", Destructive),
        ("DELETE FROM t WHERE 1 = 1", Destructive),
        ("DELETE FROM t WHERE id = id", Destructive),
        ("DELETE FROM t WHERE NOT false", Destructive),
        ("DELETE FROM t WHERE id = 3 OR true", Destructive),
        ("DELETE FROM t WHERE 1 <> 2", Destructive),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            Destructive,
        ),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v",
            Write,
        ),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Destructive),
        (
            "WITH d AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM d",
            Write,
        ),
        ("SELECT * FROM t FOR UPDATE", Write),
        ("SELECT * INTO t2 FROM t", Ddl),
        ("CREATE TABLE x (a int)", Ddl),
        ("ALTER TABLE t ADD COLUMN c int", Ddl),
        ("ALTER TABLE t DROP COLUMN c", Destructive),
        ("DROP TABLE t", Destructive),
        ("TRUNCATE t", Destructive),
        ("GRANT SELECT ON t TO public", Privilege),
        ("ALTER ROLE agent SUPERUSER", Privilege),
        ("SET ROLE victim", Privilege),
        ("RESET ROLE", Privilege),
        ("SET statement_timeout = 0", Admin),
        ("SET LOCAL transaction_read_only = off", Admin),
        ("SET TRANSACTION READ WRITE", Admin),
        ("RESET ALL", Admin),
        ("COMMIT", Admin),
        ("BEGIN", Admin),
        ("DISCARD ALL", Admin),
        ("VACUUM t", Admin),
        ("LISTEN ch", Admin),
        ("NOTIFY ch", Write),
        ("PREPARE p AS DELETE FROM t", Destructive),
        ("EXECUTE p", Unknown),
        ("CALL p_wipe()", Unknown),
        ("DO $$ BEGIN END $$", Unknown),
        ("EXPLAIN ANALYZE DELETE FROM t", Destructive),
        ("EXPLAIN (ANALYZE) DELETE FROM t", Destructive),
        ("EXPLAIN (ANALYZE on) DELETE FROM t", Destructive),
        ("EXPLAIN (FORMAT json, ANALYSE) UPDATE t SET v = 1 WHERE id = 1", Write),
        ("EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", Ddl),
        ("EXPLAIN ANALYZE SELECT * INTO x FROM t", Ddl),
        ("COPY t TO STDOUT", Export),
        ("COPY t TO '/tmp/x'", Export),
        ("COPY (SELECT 1) TO PROGRAM 'id'", Privilege),
        ("COPY t FROM STDIN", Write),
        ("COPY (DELETE FROM t RETURNING *) TO STDOUT", Destructive),
        ("SELECT pg_read_file('/etc/passwd')", Export),
        ("SELECT * FROM pg_ls_dir('.')", Export),
        (
            "SELECT x FROM t CROSS JOIN LATERAL pg_read_file('/etc/passwd') AS x",
            Export,
        ),
        ("VALUES (pg_terminate_backend(1))", Admin),
        ("SELECT * FROM dblink_exec('dbname=x', 'DROP TABLE t')", Unknown),
        ("SELECT set_config('statement_timeout', '0', false)", Admin),
        ("SELECT pg_advisory_lock(42)", Admin),
        ("SELECT nextval('s')", Write),
        ("SELECT pg_sleep(5)", Admin),
        ("SELECT query_to_xml('SELECT 1', true, true, '')", Unknown),
        ("SELECT * FROM ts_stat('SELECT 1')", Unknown),
        ("SELECT table_to_xml('t', true, true, '')", Export),
        ("SELECT current_setting('app.jwt_secret')", Export),
        ("SHOW app.jwt_secret", Export),
        ("SELECT * FROM pg_authid", Export),
        ("SELECT usename, passwd FROM pg_catalog.pg_shadow", Export),
        ("SELECT query FROM pg_stat_activity", Export),
        ("SELECT most_common_vals FROM pg_stats WHERE attname = 'email'", Export),
        ("SELECT my_function(1)", Unknown),
        ("SELECT public.touch()", Unknown),
        ("SELECT U&\"pg\\005fread\\005ffile\"('/etc/hostname')", Unknown),
        ("SELECT * FROM ONLY users", Unknown),
        ("SELECT 5::touchy", Unknown),
        ("SELECT 1 OPERATOR(public.===) 1", Unknown),
        ("KILL 123", Unknown),
        ("SHOW TABLES", Unknown),
        ("SELEC 1", Unknown),
        ("", Unknown),
    ] {
        assert_eq!(category(sql), want, "{sql}: {:?}", classify(sql).reasons);
    }
}

#[test]
fn a_batch_takes_its_highest_risk_and_lists_every_statement() {
    let a = classify("SELECT 1; COMMIT; DROP TABLE x");
    assert_eq!(a.statements.len(), 3);
    assert_eq!(a.risk, Risk::Critical);
    assert_eq!(a.categories, vec![Read, Admin, Destructive]);
    assert!(!a.is_read());
}

#[test]
fn reasons_name_the_ast_fact() {
    let a = classify("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d");
    assert!(
        a.reasons
            .iter()
            .any(|r| r.contains("data-modifying CTE `d`") && r.contains("`t`")),
        "{:?}",
        a.reasons
    );
    let a = classify("SELECT * FROM pg_read_file('/etc/passwd')");
    assert!(
        a.reasons.iter().any(|r| r.contains("calls `pg_read_file` in FROM")),
        "{:?}",
        a.reasons
    );
}

#[test]
fn tables_are_schema_qualified_and_functions_listed() {
    let a = classify(
        "WITH x AS (SELECT 1) SELECT * FROM orders o JOIN sales.Invoices i ON true, x, \"Mixed\" WHERE lower(o.v) = 'a'",
    );
    assert_eq!(a.tables, vec!["public.Mixed", "public.orders", "sales.invoices"]);
    assert_eq!(a.functions, vec!["lower"]);
    let a = classify("SELECT * FROM generate_series(1, 3)");
    assert!(a.tables.is_empty(), "{:?}", a.tables);
    assert_eq!(a.functions, vec!["generate_series"]);
}

#[test]
fn categories_list_every_finding_not_only_the_worst() {
    let a = classify("WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d");
    assert_eq!(a.categories, vec![Read, Write]);
    assert_eq!(a.category(), Write);
}

#[test]
fn a_name_shared_by_a_cte_and_a_table_is_kept_for_policy() {
    // The DELETE target cannot be the CTE: Postgres deletes from the table `canary`.
    let a = classify("WITH canary AS (DELETE FROM canary RETURNING *) SELECT * FROM canary");
    assert_eq!(a.cte_shadowed, vec!["public.canary".to_string()]);
    assert!(a.tables.is_empty(), "{:?}", a.tables);
    let b = classify("WITH c AS (SELECT 1) SELECT * FROM c JOIN public.c USING (x)");
    assert_eq!(b.tables, vec!["public.c".to_string()]);
    assert!(b.cte_shadowed.is_empty(), "already a table: {:?}", b.cte_shadowed);
}

/// Regression: a dollar-quote tag with a non-alphanumeric byte >= 0x80 (`$a€$`) opens a string for
/// PostgreSQL but not for sqlparser, which hid a subquery on `customers` inside what it took for a
/// `$$` string (found by red-teaming the masks).
#[test]
fn dollar_quote_tags_the_parser_misreads_are_unknown() {
    for sql in [
        "SELECT $a€$, $$ $a€$ AS p, (SELECT string_agg(email, ',') FROM customers) AS q, $a€$ $$, $a€$",
        "SELECT $€$, $$ $€$ AS p, (SELECT 1) AS q, $€$ $$, $€$",
        "SELECT $a\u{a0}$ x $a\u{a0}$",
        "SELECT $1",
        "SELECT * FROM t WHERE id = $1",
    ] {
        let a = classify(sql);
        assert_eq!(a.category(), Unknown, "{sql}: {:?}", a.reasons);
        assert!(a.reasons[0].contains("dollar-quote tag"), "{:?}", a.reasons);
    }
    for sql in [
        "SELECT $$ x $$",
        "SELECT $body$ x $body$",
        "SELECT $é$ x $é$",
        "SELECT data ? 'k' FROM t",
    ] {
        assert_eq!(category(sql), Read, "{sql}: {:?}", classify(sql).reasons);
    }
}
