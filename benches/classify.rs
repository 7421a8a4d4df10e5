//! Classifier throughput over the shared corpus, against sqlparser's parse alone in the same run,
//! and classification plus the policy decision (the shipped `sandbox.toml`: tags, patterns, masks),
//! and catalog-aware classification with a large catalog (2,000 user functions, 2,000 types, 200
//! operators, 500 relations on the search path).
//! Run: `cargo bench --bench classify`.

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

#[path = "../tests/common/corpus.rs"]
mod corpus;

use std::time::Instant;

use pgwarden::{
    call::Tool,
    classify::{CatalogFacts, classify, classify_with},
    policy::{Policy, Request},
};
use sqlparser::{dialect::PostgreSqlDialect, parser::Parser};

fn main() {
    let corpus: Vec<String> = corpus::rows().into_iter().map(|r| r.sql).collect();
    let rounds = 200;
    for sql in &corpus {
        std::hint::black_box(classify(sql));
    }
    let measure = |f: &dyn Fn(&str)| {
        let mut per_statement = Vec::with_capacity(corpus.len() * rounds);
        let started = Instant::now();
        for _ in 0..rounds {
            for sql in &corpus {
                let t = Instant::now();
                f(sql);
                per_statement.push(t.elapsed().as_nanos() as f64 / 1000.0);
            }
        }
        let total = started.elapsed().as_secs_f64();
        per_statement.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| per_statement[((per_statement.len() - 1) as f64 * q) as usize];
        ((corpus.len() * rounds) as f64 / total, p(0.5), p(0.99))
    };
    let (parse_rate, parse_p50, parse_p99) = measure(&|sql| {
        std::hint::black_box(Parser::parse_sql(&PostgreSqlDialect {}, sql).ok());
    });
    let (rate, p50, p99) = measure(&|sql| {
        std::hint::black_box(classify(sql));
    });
    let policy = Policy::parse("sandbox.toml", include_str!("../tool-policies/sandbox.toml")).unwrap();
    let (policy_rate, policy_p50, policy_p99) = measure(&|sql| {
        let assessment = classify(sql);
        std::hint::black_box(policy.evaluate(&Request {
            tool: Tool::Query,
            assessment: &assessment,
            principal: Some("alice"),
            groups: &[],
        }));
    });
    let facts = big_catalog();
    let (facts_rate, facts_p50, facts_p99) = measure(&|sql| {
        std::hint::black_box(classify_with(sql, &facts));
    });
    println!("{} corpus statements x {rounds} rounds", corpus.len());
    println!("                          statements/s    p50 µs   p99 µs");
    println!("sqlparser parse (baseline) {parse_rate:>13.0} {parse_p50:>9.2} {parse_p99:>8.2}");
    println!("pgwarden classify          {rate:>13.0} {p50:>9.2} {p99:>8.2}");
    println!("classify + policy decision {policy_rate:>13.0} {policy_p50:>9.2} {policy_p99:>8.2}");
    println!("classify_with, big catalog {facts_rate:>13.0} {facts_p50:>9.2} {facts_p99:>8.2}");
    println!("classify / parse p50 ratio: {:.2}", p50 / parse_p50);
    println!("classify + policy / parse p50 ratio: {:.2}", policy_p50 / parse_p50);
    println!(
        "classify_with (big catalog) / classify p50 ratio: {:.2}",
        facts_p50 / p50
    );
}

/// A catalog larger than most: none of its names collide with the corpus's, so this measures the
/// lookups, not extra findings.
fn big_catalog() -> CatalogFacts {
    let mut f = CatalogFacts::default();
    for i in 0..2000 {
        f.functions
            .insert(format!("user_fn_{i}"), vec![format!("app.user_fn_{i}(integer)")]);
        f.types
            .insert(format!("user_type_{i}"), vec![format!("app.user_type_{i}")]);
    }
    for i in 0..200 {
        f.operators
            .insert(format!("@#{i}"), vec![format!("app.@#{i}(integer, integer)")]);
    }
    f.search_path = vec!["app".into(), "public".into()];
    f.relations
        .insert("app".into(), (0..500).map(|i| format!("table_{i}")).collect());
    f
}
