//! What serving several databases costs per call (issue 22): the same sequential point read
//! through the `pgwarden serve` binary over stdio, serving one database (`--database-url`, the
//! baseline) and serving three from a `pgwarden.toml` (`--config`) — calls naming no database (the
//! default) and calls naming the third. Server CPU per call and median wall time, as ratios against
//! the one-database server, measured in interleaved rounds in one run.
//!
//! Run: `cargo bench --bench databases` (optionally `-- --iterations 4000 --warmup 300`).

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestDb, TestServer, cpu_ns};
use rmcp::{ClientHandler, RoleClient, model::CallToolRequestParams, service::RunningService};
use serde_json::json;

#[derive(Default)]
struct Totals {
    cpu_ns: u64,
    wall: Vec<Duration>,
}

/// `n` point reads on `database` (none: the default), adding CPU and wall times to `totals`.
async fn round<H: ClientHandler>(
    client: &RunningService<RoleClient, H>,
    pid: u32,
    database: Option<&str>,
    start: usize,
    n: usize,
    totals: &mut Totals,
) {
    let read = async |i: usize| {
        let sql = format!("SELECT id, name FROM items WHERE id = {}", 1 + (i * 7919) % 10_000);
        let mut args = json!({ "sql": sql });
        if let Some(db) = database {
            args["database"] = json!(db);
        }
        let r = client
            .call_tool(CallToolRequestParams::new("query").with_arguments(args.as_object().cloned().unwrap()))
            .await
            .expect("call");
        assert_ne!(r.is_error, Some(true), "{r:?}");
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = cpu_ns(pid);
    for i in start..start + n {
        let t = Instant::now();
        read(i).await;
        totals.wall.push(t.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    totals.cpu_ns += cpu_ns(pid) - before;
}

/// A login of `db`'s own that may read `items` (pgwarden wants one login per database): its URL.
async fn own_login(db: &TestDb) -> String {
    let role = format!("{}_reader", db.name);
    db.admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT CONNECT ON DATABASE {d} TO {role}; \
             GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON items TO {role}",
            d = db.name
        ))
        .await
        .unwrap();
    common::socket_dsn(&role, &db.name)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let warmup = common::bench_arg("--warmup", 200);
    let n = common::bench_arg("--iterations", 2000).max(8);
    let setup = "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 10000) g; ANALYZE;";
    let (a, b, c) = (
        TestDb::new(setup).await,
        TestDb::new(setup).await,
        TestDb::new(setup).await,
    );
    let dir = tempfile::Builder::new()
        .prefix("pgw-bench-dbs-")
        .tempdir_in("/tmp")
        .unwrap();
    let config = dir.path().join("pgwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[[database]]\nname = \"first\"\nurl = \"{}\"\n[[database]]\nname = \"second\"\nurl = \"{}\"\n\
             [[database]]\nname = \"third\"\nurl = \"{}\"\n",
            a.dsn(),
            own_login(&b).await,
            own_login(&c).await
        ),
    )
    .unwrap();
    let one = TestServer::builder()
        .database(&a)
        .env("PGWARDEN_LOG", "warn")
        .start()
        .await;
    let three = TestServer::builder()
        .args(["--config".as_ref(), config.as_os_str()])
        .env("PGWARDEN_LOG", "warn")
        .start()
        .await;

    let mut warm = Totals::default();
    round(&one.client, one.pid(), None, 0, warmup, &mut warm).await;
    round(&three.client, three.pid(), None, 0, warmup, &mut warm).await;
    round(&three.client, three.pid(), Some("third"), 0, warmup, &mut warm).await;

    // Interleaved rounds, so drift on a noisy machine falls on all three alike.
    let rounds = 4;
    let per = n / rounds;
    let (mut base, mut default, mut named) = (Totals::default(), Totals::default(), Totals::default());
    for r in 0..rounds {
        let start = warmup + r * per;
        round(&one.client, one.pid(), None, start, per, &mut base).await;
        round(&three.client, three.pid(), None, start, per, &mut default).await;
        round(&three.client, three.pid(), Some("third"), start, per, &mut named).await;
    }
    let calls = (per * rounds) as f64;
    let summary = |t: &mut Totals| {
        t.wall.sort();
        (
            t.cpu_ns as f64 / calls / 1e3,
            t.wall[t.wall.len() / 2].as_secs_f64() * 1e6,
        )
    };
    let (base_cpu, base_wall) = summary(&mut base);
    println!();
    println!(
        "sequential point read through `pgwarden serve` (stdio), {} calls each after {warmup} warm-up, {rounds} interleaved rounds",
        per * rounds
    );
    println!(
        "{:<44} {:>14} {:>9} {:>11} {:>9}",
        "server", "server CPU", "vs one", "wall p50", "vs one"
    );
    for (name, t) in [
        ("one database, --database-url (baseline)", &mut base),
        ("three databases, --config, the default", &mut default),
        ("three databases, --config, `database: third`", &mut named),
    ] {
        let (cpu, wall) = summary(t);
        println!(
            "{name:<44} {cpu:>11.1} µs {:>8.2}x {wall:>8.1} µs {:>8.2}x",
            cpu / base_cpu,
            wall / base_wall
        );
    }
    println!("server CPU: utime + stime of the server process (/proc/<pid>/stat) over the measured calls.");
}
