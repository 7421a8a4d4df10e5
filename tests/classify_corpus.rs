//! The shared attack corpus (379 statements verified against PostgreSQL), table-driven: no statement
//! whose minimum risk is above `read` may come out `allow`; reads that come out higher are listed.

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

use pgwarden::classify::classify;

#[path = "common/corpus.rs"]
mod corpus;

use corpus::{Row, rows as corpus};

#[test]
fn corpus_is_complete() {
    assert_eq!(corpus().len(), 379);
}

#[test]
fn no_non_read_statement_is_allowed() {
    let mut escaped = Vec::new();
    for row in corpus().iter().filter(|r| r.expected != "read") {
        let a = classify(&row.sql);
        if a.is_read() {
            escaped.push(format!("{} (expected at least {}): {}", row.id, row.expected, row.sql));
        }
    }
    assert!(
        escaped.is_empty(),
        "{} non-read statements classified as read:\n{}",
        escaped.len(),
        escaped.join("\n")
    );
}

#[test]
fn plain_reads_are_allowed_and_over_classified_ones_are_listed() {
    let reads: Vec<Row> = corpus().into_iter().filter(|r| r.expected == "read").collect();
    let mut over = Vec::new();
    for row in &reads {
        let a = classify(&row.sql);
        if !a.is_read() {
            over.push(format!(
                "{}: {} -> {} ({})",
                row.id,
                row.sql,
                a.category().as_str(),
                a.reasons.join("; ")
            ));
        }
    }
    println!(
        "over-classified reads ({} of {}):\n{}",
        over.len(),
        reads.len(),
        over.join("\n")
    );
    let allowed = reads.len() - over.len();
    // Deliberate refusals among the corpus reads: `FROM ONLY` (misparsed), `PREPARE` (outlives the
    // transaction), `SELECT $1` (no parameters in `query`) and statements sqlparser cannot parse.
    assert!(
        allowed * 100 >= reads.len() * 95,
        "only {allowed} of {} reads allowed:\n{}",
        reads.len(),
        over.join("\n")
    );
}
