//! Export throughput: 1M rows through `pgwarden serve` (the real binary, MCP over stdio) against
//! `psql \copy` of the same query into the same directory, in one run; and the server's peak RSS.
//!
//! Run: `cargo bench --bench export` (optionally `-- --rounds 5`).

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use rmcp::model::CallToolRequestParams;
use serde_json::json;

const QUERY: &str = "SELECT * FROM million";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = common::bench_arg("--rounds", 5);
    let db = common::TestDb::new(
        "CREATE TABLE million AS SELECT g AS id, md5(g::text) AS payload, g * 0.5 AS amount, \
         now() - g * interval '1 second' AS at FROM generate_series(1, 1000000) g; ANALYZE;",
    )
    .await;
    let work = tempfile::Builder::new()
        .prefix("pgw-export-bench-")
        .tempdir_in("/tmp")
        .unwrap();
    let c = &common::cluster().cluster;
    let psql = c.bindir.join("psql");

    // Baseline: psql \copy of the same query, same format, same disk.
    let mut psql_times = Vec::new();
    for i in 0..rounds {
        let file = work.path().join(format!("psql-{i}.csv"));
        let t = Instant::now();
        let status = std::process::Command::new(&psql)
            .args(["-X", "-q", "-h"])
            .arg(c.socket_dir())
            .args(["-p", &c.port.to_string(), "-U", common::AGENT, "-d", &db.name, "-c"])
            .arg(format!(
                "\\copy ({QUERY}) TO '{}' WITH (FORMAT csv, HEADER true)",
                file.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        psql_times.push(t.elapsed());
    }

    let mut server = TestServer::builder()
        .database(&db)
        .policy("[[rule]]\nid = \"exports-run\"\neffect = \"allow\"\ncategories = [\"read\", \"export\"]\n")
        .args(["--statement-timeout", "120s"])
        .env("PGWARDEN_LOG", "warn")
        .start()
        .await;
    let (pid, exports) = (server.pid(), server.export_dir());
    let after_start = common::vm_hwm_kib(pid);
    let mut times = Vec::new();
    for i in 0..rounds {
        let args = json!({"sql": QUERY, "path": format!("pgw-{i}.csv"), "intent": "benchmark"});
        let t = Instant::now();
        let r = server
            .client
            .call_tool(CallToolRequestParams::new("export").with_arguments(args.as_object().cloned().unwrap()))
            .await
            .unwrap();
        times.push(t.elapsed());
        let out = r.structured_content.expect("export result");
        assert_eq!(out["rows"], json!(1_000_000), "{out}");
        let ours = std::fs::metadata(exports.join(format!("pgw-{i}.csv"))).unwrap().len();
        let theirs = std::fs::metadata(work.path().join("psql-0.csv")).unwrap().len();
        assert_eq!(ours, theirs, "same bytes as psql");
    }
    let peak = common::vm_hwm_kib(pid);
    server.close().await;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    let (p, g) = (median(psql_times), median(times));
    println!("export of {QUERY} (1M rows, CSV with header), median of {rounds}");
    println!("psql \\copy (baseline)        {p:>9.1} ms   1.00");
    println!("pgwarden export over MCP     {g:>9.1} ms   {:.2}", g / p);
    println!(
        "server peak RSS (VmHWM): {:.1} MiB (after start-up: {:.1} MiB)",
        peak as f64 / 1024.0,
        after_start as f64 / 1024.0
    );
}
