//! `classify_with` against hand-built catalog facts: the attack classes of issue 15, table-driven.

use std::collections::{BTreeMap, BTreeSet};

use super::{Category::*, catalog::UserCast, *};

/// A catalog like the attacker's: a computed field, a domain, an enum, operators on `=` and `?`, a
/// user `lower(varchar)`, a user cast, pg_stat_statements in `extensions`, a `public.pg_foo` table
/// and a masking view.
fn facts() -> CatalogFacts {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        m
    };
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    CatalogFacts {
        functions: map(&[
            ("email_of", "public.email_of(c customers)"),
            ("lower", "public.lower(character varying)"),
            ("touch", "public.touch()"),
            ("pg_stat_statements", "extensions.pg_stat_statements(showtext boolean)"),
        ]),
        operators: map(&[("=", "public.=(customers, customers)"), ("?", "public.?(text, text)")]),
        types: map(&[
            ("email", "public.email"),
            ("_email", "public._email"),
            ("mood", "public.mood"),
            ("_mood", "public._mood"),
        ]),
        casts: vec![UserCast {
            source: "mood".into(),
            target: "text".into(),
            function: "public.mood_text(mood)".into(),
        }],
        relations: BTreeMap::from([
            ("pg_catalog".to_string(), set(&["pg_class", "pg_roles", "pg_authid"])),
            ("public".to_string(), set(&["customers", "pg_foo", "orders"])),
            ("pgwarden_mask".to_string(), set(&["customers"])),
            ("extensions".to_string(), set(&["pg_stat_statements"])),
        ]),
        search_path: vec!["pgwarden_mask".into(), "public".into(), "extensions".into()],
        mask_views: BTreeMap::from([("customers".to_string(), "public.customers".to_string())]),
        code_relations: map(&[("public.customer_emails", "email_of(customers)")]),
        hijacks: vec![],
    }
}

/// Regression (red team of issue 15): implied `=` in NULLIF and USING/NATURAL joins, domains named
/// like types the parser knows but PostgreSQL does not, types in column definition lists, and
/// user operators or implicit casts over built-in types.
#[test]
fn implied_operators_parser_type_names_and_column_definitions_are_unknown() {
    let mut f = facts();
    f.types.insert("mydom".into(), vec!["public.mydom".into()]);
    for (sql, naming) in [
        ("SELECT NULLIF(name, 'x') FROM customers", "public.="),
        ("SELECT * FROM customers a JOIN customers b USING (id)", "USING"),
        ("SELECT * FROM customers a NATURAL JOIN customers b", "USING"),
        ("SELECT * FROM (customers a JOIN customers b USING (id))", "USING"),
        (
            "SELECT * FROM json_to_record('{\"a\":\"x\"}') AS t(a mydom)",
            "public.mydom",
        ),
        (
            "SELECT * FROM XMLTABLE('/r' PASSING '<r/>'::xml COLUMNS a mydom PATH 'a')",
            "public.mydom",
        ),
    ] {
        let a = classify_with(sql, &f);
        assert_eq!(a.category(), Unknown, "{sql}: {:?}", a.reasons);
        assert!(
            a.reasons.iter().any(|r| r.contains(naming)),
            "{sql}: {:?} should name `{naming}`",
            a.reasons
        );
    }
    // Names the parser reads as types of other databases: to PostgreSQL only a user type or domain.
    for sql in [
        "SELECT 'x'::string",
        "SELECT 'x'::datetime",
        "SELECT CAST('1' AS tinyint)",
        "SELECT datetime 'x'",
        "SELECT 'x'::blob",
        "SELECT * FROM json_to_record('{}') AS t(a mydom)",
    ] {
        assert_eq!(
            classify(sql).category(),
            Unknown,
            "{sql} offline: {:?}",
            classify(sql).reasons
        );
    }
    // A user `=` over built-in types, or an implicit user cast between them: nothing is a plain read.
    let mut hijacked = facts();
    hijacked.hijacks = vec!["operator public.=(character varying,character varying)".into()];
    let a = classify_with("SELECT 1", &hijacked);
    assert_eq!(a.category(), Unknown, "{:?}", a.reasons);
    assert!(a.reasons[0].contains("public.=(character varying"), "{:?}", a.reasons);
    for sql in [
        "SELECT 1::int4, 'x'::varchar(10)",
        "SELECT * FROM orders o JOIN customers c ON c.id > o.id",
    ] {
        assert_eq!(classify_with(sql, &facts()).category(), Read, "{sql}");
    }
}

#[test]
fn user_code_behind_builtin_syntax_is_unknown_with_the_catalog() {
    let f = facts();
    for (sql, naming) in [
        // attribute notation: computed fields
        ("SELECT c.email_of FROM customers c", "public.email_of(c customers)"),
        ("SELECT (c).email_of FROM customers c", "public.email_of(c customers)"),
        (
            "SELECT public.customers.email_of FROM public.customers",
            "public.email_of",
        ),
        (
            "SELECT id FROM customers c WHERE c.email_of LIKE '%@x'",
            "public.email_of",
        ),
        ("SELECT email_of(c) FROM customers c", "public.email_of"),
        ("SELECT * FROM touch()", "public.touch()"),
        // typed literals, casts, arrays of user types
        ("SELECT email 'a@b'", "typed literal"),
        ("SELECT 'a@b'::email", "public.email"),
        ("SELECT CAST('a@b' AS public.email)", "public.email"),
        ("SELECT CAST(ARRAY['a@b'] AS email[])", "public.email"),
        ("SELECT '{sad}'::mood[]", "public.mood"),
        ("SELECT email('a@b')", "public.email"),
        // user operators on built-in symbols
        (
            "SELECT * FROM customers a, customers b WHERE a = b",
            "public.=(customers, customers)",
        ),
        ("SELECT * FROM customers WHERE id IN (1, 2)", "public.="),
        ("SELECT '{}'::jsonb ? 'a'", "public.?(text, text)"),
        // overloads and shadows of built-in names
        ("SELECT lower(name) FROM customers", "public.lower(character varying)"),
        // user casts to built-in types
        ("SELECT 'sad'::text", "mood_text"),
        // views over user code
        ("SELECT * FROM customer_emails", "email_of(customers)"),
    ] {
        let a = classify_with(sql, &f);
        assert_eq!(a.category(), Unknown, "{sql}: {:?}", a.reasons);
        assert!(
            a.reasons.iter().any(|r| r.contains(naming)),
            "{sql}: reasons {:?} should name `{naming}`",
            a.reasons
        );
    }
}

#[test]
fn the_same_texts_without_a_catalog_keep_todays_verdicts() {
    for (sql, want) in [
        ("SELECT c.email_of FROM customers c", Read),
        ("SELECT lower(name) FROM customers", Read),
        ("SELECT * FROM customers a, customers b WHERE a = b", Read),
        ("SELECT 'sad'::text", Read),
        ("SELECT 'a@b'::email", Unknown),
    ] {
        assert_eq!(classify(sql).category(), want, "{sql}");
        assert_eq!(
            classify(sql).category(),
            classify_with(sql, &CatalogFacts::default()).category()
        );
    }
}

#[test]
fn builtins_pinned_to_pg_catalog_stay_reads() {
    let f = facts();
    for sql in [
        "SELECT pg_catalog.lower(name) FROM customers",
        "SELECT c.name FROM customers c",
        "SELECT 1::int4, 'x'::varchar(10)",
        "SELECT count(*) FROM orders WHERE id > 3",
    ] {
        let a = classify_with(sql, &f);
        assert_eq!(a.category(), Read, "{sql}: {:?}", a.reasons);
    }
}

#[test]
fn secrets_in_catalogs_are_exports_in_any_schema() {
    let f = facts();
    for sql in [
        "SELECT rolname, rolconfig FROM pg_roles",
        "SELECT useconfig FROM pg_catalog.pg_user",
        "SELECT * FROM pg_db_role_setting",
        "SELECT * FROM information_schema.user_mapping_options",
        "SELECT * FROM information_schema.user_mappings",
        "SELECT umoptions FROM pg_user_mappings",
        "SELECT query FROM pg_stat_statements",
        "SELECT query FROM public.pg_stat_statements",
        "SELECT query FROM extensions.pg_stat_statements",
        "SELECT * FROM extensions.pg_stat_statements_info",
        "SELECT * FROM extensions.pg_stat_statements(true)",
        "SELECT srvoptions FROM pg_foreign_server",
        "SELECT fdwoptions FROM pg_catalog.pg_foreign_data_wrapper",
        "SELECT * FROM information_schema.foreign_server_options",
        "SELECT * FROM information_schema.foreign_data_wrapper_options",
        "SELECT * FROM pg_options_to_table((SELECT srvoptions FROM pg_foreign_server LIMIT 1))",
    ] {
        for (label, a) in [("text only", classify(sql)), ("catalog", classify_with(sql, &f))] {
            assert!(a.categories.contains(&Export), "{sql} ({label}): {:?}", a.reasons);
            assert!(!a.is_read(), "{sql} ({label})");
        }
    }
}

#[test]
fn names_resolve_as_postgres_resolves_them() {
    let f = facts();
    for (sql, facts, want) in [
        // ASCII-only folding: Ö stays upper case, as in PostgreSQL.
        ("SELECT * FROM CUSTÖMERS", CatalogFacts::default(), "public.custÖmers"),
        (
            "SELECT * FROM SALES.CUSTÖMERS",
            CatalogFacts::default(),
            "sales.custÖmers",
        ),
        // pg_-prefixed names that pg_catalog does not have are the user's.
        ("SELECT * FROM pg_foo", f.clone(), "public.pg_foo"),
        ("SELECT * FROM pg_foo", CatalogFacts::default(), "pg_catalog.pg_foo"),
        ("SELECT * FROM pg_class", f.clone(), "pg_catalog.pg_class"),
        // A masking view first on the search path is reported as the table it masks.
        ("SELECT * FROM customers", f.clone(), "public.customers"),
        ("SELECT * FROM pgwarden_mask.customers", f.clone(), "public.customers"),
        ("SELECT * FROM orders", f.clone(), "public.orders"),
        // 63-byte truncation at a character boundary.
        (
            &format!("DROP TABLE {}", "a".repeat(70)),
            CatalogFacts::default(),
            &format!("public.{}", "a".repeat(63)),
        ),
        (
            &format!("SELECT * FROM \"{}é\"", "b".repeat(62)),
            CatalogFacts::default(),
            &format!("public.{}", "b".repeat(62)),
        ),
    ] {
        let a = classify_with(sql, &facts);
        assert_eq!(a.tables, [want.to_string()], "{sql}");
    }
}

#[test]
fn identifiers_over_63_bytes_are_unknown_and_name_the_truncated_form() {
    let long = "customers_".repeat(7);
    for sql in [
        format!("SELECT * FROM {long}"),
        format!("SELECT {long} FROM t"),
        format!("DROP TABLE \"{long}\""),
    ] {
        let a = classify(&sql);
        assert!(a.categories.contains(&Unknown), "{sql}");
        assert!(
            a.reasons
                .iter()
                .any(|r| r.contains(&long[..63]) && r.contains("63 bytes")),
            "{sql}: {:?}",
            a.reasons
        );
    }
    assert_eq!(classify(&format!("SELECT * FROM {}", "a".repeat(63))).category(), Read);
}

#[test]
fn settings_that_change_lexing_are_admin_in_every_form() {
    for sql in [
        "SET standard_conforming_strings = off",
        "SET SESSION backslash_quote = on",
        "RESET standard_conforming_strings",
        "SET NAMES 'SJIS'",
        "SET client_encoding TO 'BIG5'",
        "ALTER ROLE agent SET standard_conforming_strings = off",
        "ALTER ROLE agent IN DATABASE app SET standard_conforming_strings TO off",
        "ALTER USER agent SET client_encoding = 'SJIS'",
        "ALTER ROLE agent RESET standard_conforming_strings",
        "ALTER DATABASE app SET standard_conforming_strings = off",
        "ALTER DATABASE app SET standard_conforming_strings TO DEFAULT",
        "ALTER DATABASE app SET client_encoding FROM CURRENT",
        "ALTER DATABASE app RESET standard_conforming_strings",
        "ALTER SYSTEM SET standard_conforming_strings = off",
        "ALTER SYSTEM SET escape_string_warning TO off;",
        "ALTER SYSTEM RESET backslash_quote",
    ] {
        let a = classify(sql);
        assert_eq!(a.category(), Admin, "{sql}: {:?}", a.reasons);
        assert!(a.reasons.iter().any(|r| r.contains("lexes")), "{sql}: {:?}", a.reasons);
    }
    // Shapes the token check does not know stay unknown; role switches stay privilege.
    for (sql, want) in [
        ("ALTER SYSTEM SET work_mem = '5MB'; DROP TABLE t", Unknown),
        ("ALTER DATABASE app OWNER TO agent", Unknown),
        ("ALTER SYSTEM SET x = (SELECT 1)", Unknown),
        ("ALTER ROLE agent SET role = 'admin'", Privilege),
        ("SET role = 'victim'", Privilege),
        ("ALTER ROLE agent SUPERUSER", Privilege),
    ] {
        assert_eq!(classify(sql).category(), want, "{sql}");
    }
}

/// Regression (red team, issue 15): deeply nested comments kept a Postgres backend lexing for
/// minutes, past statement_timeout and `pg_terminate_backend`.
#[test]
fn deeply_nested_comments_are_not_sent_unreviewed() {
    let nested = |n: usize| format!("SELECT 1 {}{}", "/*".repeat(n), "*/".repeat(n));
    assert_eq!(classify(&nested(3)).category(), Read);
    let a = classify(&nested(2_000));
    assert_eq!(a.category(), Unknown, "{:?}", a.reasons);
    assert!(a.reasons[0].contains("nests 1999 levels"), "{:?}", a.reasons);
}
