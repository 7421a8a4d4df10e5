//! The parse limits: text just under them classifies as usual, text over them is `unknown` with
//! the reason, and the worst tree they let through fits a debug build's 2 MiB worker stack.

use super::*;
use crate::classify::{Category, classify};

/// A statement of `n` links of one kind of chain (or nesting).
fn chain(kind: &str, n: usize) -> String {
    match kind {
        "+" => format!("SELECT 1{}", "+1".repeat(n)),
        "AND" => format!("SELECT true{}", " AND true".repeat(n)),
        "||" => format!("SELECT 'a'{}", "||'a'".repeat(n)),
        "::int" => format!("SELECT 1{}", "::int".repeat(n)),
        "IS NULL" => format!("SELECT 1{}", " IS NULL".repeat(n)),
        "UNION ALL" => format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(n)),
        "()" => format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
        "[]" => format!("SELECT {}1{}", "ARRAY[".repeat(n), "]".repeat(n)),
        other => unreachable!("no chain `{other}`"),
    }
}

const CHAINS: [&str; 6] = ["+", "AND", "||", "::int", "IS NULL", "UNION ALL"];

/// Runs `f` on a thread with a tokio worker's stack (2 MiB); a stack overflow aborts the test binary.
fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no panic")
}

#[test]
fn chains_just_under_the_limit_classify_normally_on_a_worker_stack() {
    for kind in CHAINS {
        let sql = chain(kind, CLASSIFY_LIMITS.max_operators);
        let got = on_worker_stack(move || classify(&sql));
        assert_eq!(got.category(), Category::Read, "{kind}: {:?}", got.reasons);
    }
}

#[test]
fn chains_over_the_limit_are_unknown_with_the_count_and_the_limit() {
    for kind in CHAINS {
        let sql = chain(kind, CLASSIFY_LIMITS.max_operators + 1);
        let got = classify(&sql);
        assert_eq!(got.category(), Category::Unknown, "{kind}");
        assert_eq!(
            got.reasons,
            [format!(
                "the SQL has {} chained operators in one statement, more than pgwarden reads (limit 1000); \
                 split it or ask for approval, so what it does is unknown",
                CLASSIFY_LIMITS.max_operators + 1
            )],
            "{kind}"
        );
    }
}

#[test]
fn a_megabyte_of_chained_operators_is_unknown_without_building_a_tree() {
    for kind in CHAINS {
        let sql = chain(kind, 100_000);
        let got = on_worker_stack(move || classify(&sql));
        assert_eq!(got.category(), Category::Unknown, "{kind}");
        assert!(
            got.reasons[0].contains("more than pgwarden reads"),
            "{kind}: {:?}",
            got.reasons
        );
    }
}

#[test]
fn nesting_just_under_the_limit_classifies_and_over_it_is_unknown() {
    for kind in ["()", "[]"] {
        let under = chain(kind, CLASSIFY_LIMITS.max_nesting);
        let got = on_worker_stack(move || classify(&under));
        assert_eq!(got.category(), Category::Read, "{kind}: {:?}", got.reasons);
        let got = classify(&chain(kind, 100_000));
        assert_eq!(
            got.reasons,
            [
                "the SQL nests parentheses, brackets or JOINs 100000 deep, more than pgwarden reads (limit 40); \
              flatten it or ask for approval, so what it does is unknown"
            ],
            "{kind}"
        );
    }
}

/// `levels` nested openings, each link of the path carrying its share of the operator budget.
fn deepest_mix(open: &str, close: &str, levels: usize) -> String {
    let per_level = CLASSIFY_LIMITS.max_operators / (levels + 1) - 1; // plus the `+` before the opening
    let ops = "+1".repeat(per_level);
    format!(
        "{}1{ops}{}",
        format!("1{ops} + {open}").repeat(levels),
        close.repeat(levels)
    )
}

#[test]
fn the_deepest_mixes_under_both_limits_fit_a_worker_stack() {
    // The parser's recursion limit stops nesting before ours does (a `+ (` link takes about two of its
    // levels, a scalar subquery three): from our limit down, the deepest text it reads must classify.
    for (open, close) in [("(", ")"), ("ARRAY[", "]"), ("(SELECT ", ")")] {
        let deepest = on_worker_stack(move || {
            (1..=CLASSIFY_LIMITS.max_nesting).rev().find(|&levels| {
                classify(&format!("SELECT {}", deepest_mix(open, close, levels))).category() == Category::Read
            })
        });
        assert!(deepest.is_some_and(|l| l >= 12), "{open}: {deepest:?}");
    }
}

#[test]
fn big_lists_are_flat_and_classify_normally() {
    let list: Vec<String> = (0..50_000).map(|i| format!("-{i}")).collect();
    let sql = format!("SELECT * FROM t WHERE id IN ({})", list.join(", "));
    assert_eq!(classify(&sql).category(), Category::Read);
    let items: Vec<String> = (0..2_000).map(|i| format!("c{i}::text || 'x'")).collect();
    let sql = format!("SELECT {} FROM t", items.join(", "));
    assert_eq!(classify(&sql).category(), Category::Read);
    let rows: Vec<String> = (0..20_000).map(|i| format!("({i}, 'v{i}', -{i}.5)")).collect();
    let sql = format!("INSERT INTO t VALUES {}", rows.join(", "));
    assert_eq!(classify(&sql).category(), Category::Write);
}

#[test]
fn the_shape_counts_the_deepest_path_not_every_operator() {
    let shape = |sql: &str| {
        let s = Shape::of(&tokenize(sql).expect("tokenizes"));
        (s.operators, s.nesting)
    };
    assert_eq!(shape("SELECT a + b, c + d + e"), (2, 0));
    assert_eq!(shape("SELECT a + f(b + c, d) + e"), (3, 1));
    assert_eq!(shape("SELECT 1, 2 UNION SELECT 3, 4 UNION SELECT 5"), (2, 0));
    assert_eq!(shape("SELECT -1, - 2, x - 3"), (1, 0));
    assert_eq!(shape("SELECT 1+1; SELECT 1+1+1"), (2, 0));
    assert_eq!(shape("SELECT (1+1; SELECT 1+1+1"), (3, 1));
}

/// Regression (red team, issue 15): `a JOIN b JOIN c … ON true ON true …` nests one level per JOIN,
/// and 300 of them overflowed the server's stack; an `ON` inside a subquery must not hide them.
#[test]
fn joins_waiting_for_their_on_count_as_nesting() {
    let chain = |n: usize, relation: &str| {
        let mut sql = "SELECT 1 FROM t0".to_string();
        for i in 1..=n {
            sql.push_str(&format!(" JOIN {} t{i}", relation));
        }
        sql.push_str(&" ON true".repeat(n));
        sql
    };
    assert_eq!(classify(&chain(10, "t")).category(), Category::Read);
    for sql in [chain(300, "t"), chain(300, "(SELECT DISTINCT ON (1) 1)")] {
        let a = on_worker_stack(move || classify(&sql));
        assert_eq!(a.category(), Category::Unknown, "{:?}", a.reasons);
        assert!(a.reasons[0].contains("or JOINs"), "{:?}", a.reasons);
    }
    // Flat joins, each with its ON, and CROSS/NATURAL joins do not nest.
    let flat: String = (1..2000).map(|i| format!(" JOIN t t{i} ON true")).collect();
    assert_eq!(classify(&format!("SELECT 1 FROM t{flat}")).category(), Category::Read);
    let cross: String = (1..2000)
        .map(|i| format!(" CROSS JOIN t t{i} NATURAL LEFT JOIN u u{i}"))
        .collect();
    assert_eq!(classify(&format!("SELECT 1 FROM t{cross}")).category(), Category::Read);
}
