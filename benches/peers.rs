//! pgwarden against its peers, in one run on the same database: the same sequential reads over a
//! 100k-row table (`n` varying) — a point read `SELECT id, name, price, created_at FROM items WHERE
//! id = n` and a 1,000-row read `… WHERE id > n AND id <= n + 1000` — through
//!
//! 1. raw tokio-postgres, prepare + query per read over one connection: the physical limit;
//! 2. the `pgwarden serve` binary;
//! 3. the MCP reference server `@modelcontextprotocol/server-postgres` 0.6.2 (node), installed with
//!    npm under `target/peers-npm` on first run;
//!
//! both servers over stdio with the same rmcp client. Per point read: the server's CPU (utime +
//! stime of its process; for raw tokio-postgres this process's own CPU), the median wall time,
//! syscalls (`strace -c` attached around a shorter loop), user-space instructions (callgrind, in a
//! server of its own started under valgrind; else `perf stat`, where the machine counts them) and
//! the CPU of the Postgres backends serving it, against a bare `SELECT 1`. Per 1,000-row read: the
//! CPU and wall time. Then each server's start-up: spawn to its answer to `initialize`.
//!
//! Run: `cargo bench --bench peers` (optionally `-- --iterations 2000 --warmup 200 --traced 300
//! --counted 100 --starts 20`).

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "peers/callgrind.rs"]
mod callgrind;
#[path = "peers/launch.rs"]
mod launch;
#[path = "peers/probe.rs"]
mod probe;
#[path = "peers/reference.rs"]
mod reference;
#[path = "peers/report.rs"]
mod report;
#[path = "peers/startup.rs"]
mod startup;

use std::time::Duration;

use common::TestServer;
use launch::{Peer, Running};
use probe::{Backends, Counter, Plan, Process, measure};
use reference::REFERENCE_VERSION;
use rmcp::{
    RoleClient,
    model::{CallToolRequestParams, CallToolResult},
    service::RunningService,
};
use serde_json::{Value, json};

/// How long one tool call may take before the run is reported as failed; generous, as under
/// callgrind a call is 20–100× slower.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The two reads of the run, over `items` (100k rows), `n` varying with the read's number.
#[derive(Clone, Copy)]
enum Read {
    Point,
    /// 1,000 rows: above pgwarden's default row cap (500), so it asks for `max_rows` 1000.
    Range,
}

impl Read {
    fn sql(self, i: usize) -> String {
        let columns = "SELECT id, name, price, created_at FROM items";
        match self {
            Read::Point => format!("{columns} WHERE id = {}", 1 + (i * 7919) % 100_000),
            Read::Range => {
                let n = (i * 7919) % 99_001;
                format!("{columns} WHERE id > {n} AND id <= {}", n + 1000)
            }
        }
    }

    fn rows(self) -> usize {
        match self {
            Read::Point => 1,
            Read::Range => 1000,
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let counter = match callgrind::available() {
        true => Counter::Callgrind(common::bench_arg("--counted", 100).max(1)),
        false => Counter::Perf,
    };
    let plan = Plan {
        warmup: common::bench_arg("--warmup", 200),
        iterations: common::bench_arg("--iterations", 2000).max(1),
        traced: common::bench_arg("--traced", 300).max(1),
        counter,
    };
    // The 1,000-row read: CPU, wall and backends only, over a fifth of the reads.
    let range_plan = Plan {
        warmup: plan.warmup / 10,
        iterations: (plan.iterations / 5).max(1),
        traced: 0,
        counter,
    };
    let starts = common::bench_arg("--starts", 20).max(1);
    let entry = reference::install_reference();
    let db = common::TestDb::new(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), created_at timestamptz);
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25, '2025-01-01'::timestamptz + g * interval '1 minute'
         FROM generate_series(1, 100000) g;
         ANALYZE;",
    )
    .await;
    let monitor = db.admin().await;
    let raw = db.client().await;
    let raw_pid: i32 = raw.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let (one, servers) = (
        Backends::One(raw_pid),
        Backends::Server {
            monitor: &monitor,
            skip: raw_pid,
        },
    );

    let raw_read = async |read: Read, i| {
        let rows = raw.query(&read.sql(i), &[]).await.map_err(|e| e.to_string())?;
        expect(rows.len() == read.rows(), || format!("{} rows", rows.len()))
    };
    let raw_run = measure(&plan, Process::Myself, &one, async |i| raw_read(Read::Point, i).await).await;
    let raw_range = measure(&range_plan, Process::Myself, &one, async |i| {
        raw_read(Read::Range, i).await
    })
    .await;
    let bare_read = async |_| raw.query("SELECT 1", &[]).await.map(drop).map_err(|e| e.to_string());
    let bare_run = measure(&plan, Process::Myself, &one, bare_read).await;

    // The binary as reads.rs starts it: its own trail and exports, logging at `warn`.
    let mut server = TestServer::builder()
        .database(&db)
        .env("PGWARDEN_LOG", "warn")
        .start()
        .await;
    let process = Process::Server(server.pid());
    let client = &server.client;
    let mut pgwarden_run = measure(&plan, process, &servers, async |i| {
        pgwarden_read(client, Read::Point, i).await
    })
    .await;
    let pgwarden_range = measure(&range_plan, process, &servers, async |i| {
        pgwarden_read(client, Read::Range, i).await
    })
    .await;
    server.close().await;

    let url = reference::reference_url(&db);
    let reference = entry.as_deref().map(|entry| Peer::Reference { entry, url: &url });
    let started = match reference {
        Ok(peer) => Running::start(|dir| peer.command(dir), Duration::from_secs(60)).await,
        Err(e) => Err(e.clone()),
    };
    let (mut reference_run, reference_range) = match started {
        Ok(running) => {
            let (process, client) = (Process::Server(running.pid()), &running.client);
            let run = measure(&plan, process, &servers, async |i| {
                reference_read(client, Read::Point, i).await
            })
            .await;
            let range = measure(&range_plan, process, &servers, async |i| {
                reference_read(client, Read::Range, i).await
            })
            .await;
            running.stop().await;
            (run, range)
        }
        Err(e) => (Err(e.clone()), Err(e)),
    };

    if let Counter::Callgrind(reads) = plan.counter {
        let pgwarden = Peer::Pgwarden(&db);
        let read = async |c: &_, i| pgwarden_read(c, Read::Point, i).await;
        if let Ok(run) = &mut pgwarden_run {
            run.instructions = callgrind::instructions(pgwarden, plan.warmup, reads, read).await;
        }
        let read = async |c: &_, i| reference_read(c, Read::Point, i).await;
        if let (Ok(run), Ok(peer)) = (&mut reference_run, reference) {
            run.instructions = callgrind::instructions(peer, plan.warmup, reads, read).await;
        }
    }

    let pgwarden_startup = startup::startup(Peer::Pgwarden(&db), starts).await;
    let reference_startup = match reference {
        Ok(peer) => startup::startup(peer, starts).await,
        Err(e) => Err(e.clone()),
    };

    let reference_name = format!("server-postgres {REFERENCE_VERSION} (node)");
    report::print_report(
        &plan,
        &db,
        &url,
        [
            ("raw tokio-postgres (client)", raw_run),
            ("pgwarden serve", pgwarden_run),
            (&reference_name, reference_run),
            ("bare SELECT 1 (raw)", bare_run),
        ],
    );
    report::print_range(
        &range_plan,
        [
            ("raw tokio-postgres (client)", raw_range),
            ("pgwarden serve", pgwarden_range),
            (&reference_name, reference_range),
        ],
    );
    report::print_startup(
        starts,
        [
            ("pgwarden serve", pgwarden_startup),
            (&reference_name, reference_startup),
        ],
    );
}

fn expect(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected answer: {}", what()))
    }
}

/// `read` through pgwarden, which answers the row count in its structured content.
async fn pgwarden_read(client: &RunningService<RoleClient, ()>, read: Read, i: usize) -> Result<(), String> {
    let mut args = json!({"sql": read.sql(i)});
    if let Read::Range = read {
        args["max_rows"] = json!(read.rows());
    }
    let out = mcp_read(client, args).await?.structured_content.unwrap_or_default();
    expect(out["row_count"] == json!(read.rows()), || format!("answered {out}"))
}

/// `read` through the reference server, which answers the rows as a JSON array in text.
async fn reference_read(client: &RunningService<RoleClient, ()>, read: Read, i: usize) -> Result<(), String> {
    let text = common::text(&mcp_read(client, json!({"sql": read.sql(i)})).await?);
    let rows = serde_json::from_str::<Value>(&text).unwrap_or_default();
    expect(rows.as_array().is_some_and(|r| r.len() == read.rows()), || {
        format!("answered {text}")
    })
}

/// One `query` call through an MCP client, the same client type for both servers.
async fn mcp_read(client: &RunningService<RoleClient, ()>, args: Value) -> Result<CallToolResult, String> {
    let args = args.as_object().cloned().unwrap_or_default();
    let call = client.call_tool(CallToolRequestParams::new("query").with_arguments(args));
    let r = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
        .map_err(|e| format!("tool call failed: {e}"))?;
    match r.is_error {
        Some(true) => Err(format!("tool error: {}", common::text(&r))),
        _ => Ok(r),
    }
}
