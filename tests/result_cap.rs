//! Issue 15: results have a byte cap. Five 100 MB values used to become a 1 GB response and 2 GB
//! of server memory; now the read stops at the cap (16 MiB by default), says so, and memory stays
//! bounded. Alone in its file so the memory peak is this test's.

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

mod common;

use common::{Mcp, TestDb, TestServer, limits};
use pgwarden::config::Limits;
use serde_json::json;

/// Peak resident memory of this (test) process, which runs the server in-process, in KiB.
fn peak_kib() -> u64 {
    common::vm_hwm_kib(std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_values_of_150_mb_come_back_truncated_within_the_byte_cap() {
    let db = TestDb::new("").await;
    let mcp = Mcp::start(&db, limits()).await;
    let before = peak_kib();
    let r = mcp
        .call(
            "query",
            json!({ "sql": "SELECT repeat('x', 150*1024*1024) AS v FROM generate_series(1, 20)" }),
        )
        .await;
    assert_ne!(r.is_error, Some(true), "{}", common::text(&r));
    let out = r.structured_content.clone().expect("structured content");
    assert_eq!(out["truncated"], json!(true));
    assert_eq!(out["truncated_by"], json!("bytes"));
    assert_eq!(out["row_count"], json!(0), "a 150 MB value alone passes the 16 MiB cap");
    let notice = out["notice"].as_str().unwrap_or_default();
    assert!(notice.contains("byte cap of 16MiB"), "{notice}");
    assert!(serde_json::to_string(&r).expect("serializes").len() < 16 << 20);
    // One 150 MB row is buffered by the Postgres client before it can be measured; twenty (3 GB,
    // and as much again as JSON) are not.
    let grown_mib = peak_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 1024, "the peak grew by {grown_mib} MiB");
    eprintln!("peak memory grew by {grown_mib} MiB");
    let out = mcp.ok("query", json!({ "sql": "SELECT 1 AS one" })).await;
    assert_eq!(out["rows"], json!([[1]]));
}

#[tokio::test]
async fn rows_stop_at_the_cap_and_the_rows_before_it_come_back() {
    let db = TestDb::new("").await;
    let mcp = Mcp::start(
        &db,
        Limits {
            max_result_bytes: 64 << 10,
            ..limits()
        },
    )
    .await;
    let out = mcp
        .ok(
            "query",
            json!({ "sql": "SELECT repeat('x', 10000) FROM generate_series(1, 100)" }),
        )
        .await;
    assert_eq!(out["row_count"], json!(6), "6 × 10,000 bytes fit in 64 KiB, 7 do not");
    assert_eq!(out["truncated_by"], json!("bytes"));
    let out = mcp
        .ok("query", json!({ "sql": "SELECT g FROM generate_series(1, 3) g" }))
        .await;
    assert_eq!(out["truncated"], json!(false));
    assert!(out.get("truncated_by").is_none(), "{out}");
}

#[tokio::test]
async fn returning_rows_stop_at_the_cap_while_the_change_runs_to_the_end() {
    let db = TestDb::new("CREATE TABLE blobs (v text);").await;
    let limits = Limits {
        max_result_bytes: 1536 << 10,
        ..limits()
    };
    let mcp = TestServer::builder()
        .database(&db)
        .policy("[[rule]]\nid = \"all\"\neffect = \"allow\"\n")
        .limits(limits)
        .in_process()
        .await;
    let out = mcp
        .ok(
            "query",
            json!({ "sql": "INSERT INTO blobs SELECT repeat('x', 1024*1024) FROM generate_series(1, 5) RETURNING v" }),
        )
        .await;
    assert_eq!(out["change"]["rows_affected"], json!(5));
    assert_eq!(out["row_count"], json!(1), "1 MiB fits in 1.5 MiB, 2 MiB does not");
    assert_eq!(out["truncated_by"], json!("bytes"));
}
