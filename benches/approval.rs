//! The cost of asking, without the human: the same single-row UPDATE through MCP with the policy
//! allowing it outright (no prompt), with an elicitation prompt answered at once (2025 protocols),
//! and with the 2026-07-28 `InputRequiredResult` round trip — against raw tokio-postgres, in one run.
//!
//! Run: `cargo bench --bench approval` (optionally `-- --iterations 500`).

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Era, Mcp, Reviewer, TestDb};
use serde_json::json;

fn median_us(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let iterations = common::bench_arg("--iterations", 300);
    let db = TestDb::new(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL);
         INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 10000) g; ANALYZE;",
    )
    .await;
    let sql = |i: usize| {
        format!(
            "UPDATE accounts SET balance = balance + 1 WHERE id = {}",
            1 + i % 10_000
        )
    };

    let raw = db.client().await;
    let mut raw_t = Vec::new();
    for i in 0..iterations {
        let t = Instant::now();
        assert_eq!(raw.execute(&sql(i), &[]).await.unwrap(), 1);
        raw_t.push(t.elapsed());
    }

    let allow = "[[rule]]\nid = \"writes-run\"\neffect = \"allow\"\ncategories = [\"write\"]\n";
    let approve = include_str!("../tool-policies/default.toml");
    let mut results = Vec::new();
    for (label, policy, era) in [
        ("policy allows it (no prompt)", allow, Era::Legacy),
        ("prompt answered at once (elicitation)", approve, Era::Legacy),
        ("prompt answered at once (2026 input_required)", approve, Era::Modern),
    ] {
        let mcp = Mcp::reviewed(&db, policy, Reviewer::says("approve", None, None), era).await;
        for i in 0..20 {
            mcp.ok("query", json!({"sql": sql(i)})).await;
        }
        let mut t_all = Vec::new();
        for i in 0..iterations {
            let t = Instant::now();
            let out = mcp.ok("query", json!({"sql": sql(i)})).await;
            assert_eq!(out["change"]["rows_affected"], json!(1));
            t_all.push(t.elapsed());
        }
        results.push((label, median_us(t_all)));
    }
    let base = median_us(raw_t);
    println!("single-row UPDATE, {iterations} iterations each                      median µs   ratio");
    println!("raw tokio-postgres (baseline)                                    {base:>9.1}    1.00");
    for (label, m) in &results {
        println!("pgwarden over MCP, {label:<46} {m:>9.1}   {:>5.2}", m / base);
    }
    println!(
        "approval overhead without the human: elicitation {:+.0} µs, input_required {:+.0} µs over no prompt",
        results[1].1 - results[0].1,
        results[2].1 - results[0].1
    );
}
