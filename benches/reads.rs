//! Read-path benchmark against a throwaway cluster, everything measured in the same run:
//!
//! 1. a point read through pgwarden (real MCP client ↔ server in process) versus the same read
//!    through raw tokio-postgres, and pgwarden's database layer alone — reported as ratios;
//!    Also the cost of column masks: the same point read through the database layer with a mask
//!    on `items.name` (enforced by Postgres: the agent reads a security-barrier masking view),
//!    against the unmasked layer read.
//! 2. `SELECT * FROM` a 1M-row table through the `pgwarden serve` binary: wall time of the capped
//!    read and the server process's peak RSS (VmHWM).
//!
//! Run: `cargo bench --bench reads` (optionally `-- --iterations 5000`).

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use pgwarden::db::read::ReadLimits;
use rmcp::model::CallToolRequestParams;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let median = us(samples[samples.len() / 2]);
    let p99 = us(samples[samples.len() * 99 / 100]);
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
    (median, p99, mean)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let iterations = common::bench_arg("--iterations", 2000);
    let db = common::TestDb::new(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), created_at timestamptz);
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25, '2025-01-01'::timestamptz + g * interval '1 minute'
         FROM generate_series(1, 100000) g;
         CREATE TABLE million AS SELECT g AS id, md5(g::text) AS payload, g * 0.5 AS amount FROM generate_series(1, 1000000) g;
         ANALYZE;",
    )
    .await;
    let sql_for = |i: usize| {
        format!(
            "SELECT id, name, price, created_at FROM items WHERE id = {}",
            1 + (i * 7919) % 100_000
        )
    };

    // Baseline: raw tokio-postgres, one connection, the same SQL text (prepare + execute per call).
    let raw = db.client().await;
    for i in 0..200 {
        raw.query(&sql_for(i), &[]).await.unwrap();
    }
    let mut raw_samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        let rows = raw.query(&sql_for(i), &[]).await.unwrap();
        assert_eq!(rows.len(), 1);
        raw_samples.push(t.elapsed());
    }

    // pgwarden's database layer alone: READ ONLY transaction, snapshot, portal, rollback, reset.
    let database = db.database(2).await;
    let ct = CancellationToken::new();
    let limits = ReadLimits {
        max_rows: 500,
        statement_timeout: Duration::from_secs(15),
        max_bytes: pgwarden::config::DEFAULT_MAX_RESULT_BYTES,
    };
    for i in 0..200 {
        database.read(&sql_for(i), limits, &ct).await.unwrap();
    }
    let mut layer_samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        let r = database.read(&sql_for(i), limits, &ct).await.unwrap();
        assert_eq!(r.rows.len(), 1);
        layer_samples.push(t.elapsed());
    }

    // The same read with a mask on `items.name`, enforced by Postgres: the agent reads the
    // `pgwarden_mask.items` security-barrier view (what `pgwarden setup` made); nothing is rewritten.
    let masked_db = common::TestDb::owned(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), created_at timestamptz);
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25, '2025-01-01'::timestamptz + g * interval '1 minute'
         FROM generate_series(1, 100000) g;
         ANALYZE;",
        "[columns.\"public.items.name\"]\nmask = \"email\"\n[[rule]]\nid = \"r\"\neffect = \"allow\"\ncategories = [\"read\"]\n",
    )
    .await;
    let masked_database = masked_db.database(2).await;
    for i in 0..200 {
        masked_database.read(&sql_for(i), limits, &ct).await.unwrap();
    }
    let mut masked_samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        let r = masked_database.read(&sql_for(i), limits, &ct).await.unwrap();
        assert_eq!(r.rows[0][1], json!("***"), "masked (no @, so fully hidden)");
        masked_samples.push(t.elapsed());
    }

    // The whole thing: an MCP client calling `query` on the real server (classify + execute + JSON).
    let mcp = TestServer::builder()
        .database(&db)
        .limits(common::limits())
        .in_process()
        .await;
    for i in 0..200 {
        mcp.ok("query", json!({"sql": sql_for(i)})).await;
    }
    let mut mcp_samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        let out = mcp.ok("query", json!({"sql": sql_for(i)})).await;
        assert_eq!(out["row_count"], json!(1));
        mcp_samples.push(t.elapsed());
    }

    let (raw_med, raw_p99, raw_mean) = stats(raw_samples);
    let (layer_med, layer_p99, layer_mean) = stats(layer_samples);
    let (mcp_med, mcp_p99, mcp_mean) = stats(mcp_samples);
    let (masked_med, masked_p99, masked_mean) = stats(masked_samples);
    println!("point read, {iterations} iterations each (µs)        median      p99     mean   ratio (median)");
    println!("raw tokio-postgres (baseline)               {raw_med:>9.1} {raw_p99:>8.1} {raw_mean:>8.1}   1.00");
    println!(
        "pgwarden db layer (RO tx + portal + reset)  {layer_med:>9.1} {layer_p99:>8.1} {layer_mean:>8.1}   {:.2}",
        layer_med / raw_med
    );
    println!(
        "pgwarden over MCP (in-process client)       {mcp_med:>9.1} {mcp_p99:>8.1} {mcp_mean:>8.1}   {:.2}",
        mcp_med / raw_med
    );
    println!(
        "pgwarden db layer, masked column            {masked_med:>9.1} {masked_p99:>8.1} {masked_mean:>8.1}   {:.2} ({:.2}x the unmasked layer read)",
        masked_med / raw_med,
        masked_med / layer_med
    );

    // 1M rows through the real binary: capped, and the server's memory stays small.
    // Its own trail and exports (as every test server): a benchmark never writes into the user's.
    let mut server = TestServer::builder()
        .database(&db)
        .env("PGWARDEN_LOG", "warn")
        .start()
        .await;
    let pid = server.pid();
    let call = |sql: &str| {
        CallToolRequestParams::new("query").with_arguments(json!({"sql": sql}).as_object().cloned().unwrap())
    };
    let baseline_rss = common::vm_hwm_kib(pid);
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = server.client.call_tool(call("SELECT * FROM million")).await.unwrap();
        times.push(t.elapsed());
        let out = r.structured_content.unwrap();
        assert_eq!(out["row_count"], json!(500));
        assert_eq!(out["truncated"], json!(true));
    }
    let t = Instant::now();
    let r = server
        .client
        .call_tool(call("SELECT count(*) FROM million"))
        .await
        .unwrap();
    let full_scan = t.elapsed();
    assert_eq!(r.structured_content.unwrap()["rows"][0][0], json!(1_000_000));
    let peak = common::vm_hwm_kib(pid);
    server.close().await;
    times.sort();
    println!();
    println!("SELECT * FROM million (1M rows) through `pgwarden serve`, capped at 500 rows:");
    println!(
        "  median {:.1} ms, worst {:.1} ms over 5 calls; truncated = true",
        ms(times[2]),
        ms(times[4])
    );
    println!(
        "  (a full count(*) scan of the same table in the same run: {:.1} ms)",
        ms(full_scan)
    );
    println!(
        "  server peak RSS (VmHWM): {:.1} MiB (after start-up: {:.1} MiB)",
        peak as f64 / 1024.0,
        baseline_rss as f64 / 1024.0
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
