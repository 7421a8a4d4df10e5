//! What HTTP and verifying who is calling cost per call (issue 20): the same sequential point read
//! through the `pgwarden serve` binary over stdio (the baseline), over Streamable HTTP with a static
//! token, and over HTTP with an OAuth JWT checked against a real OpenID provider's keys
//! (`oidc-provider`, installed with npm on first run) — server CPU per call and median wall time,
//! as ratios against stdio, in one run. All three speak the 2025-06-18 protocol (a session).
//!
//! Run: `cargo bench --bench http` (optionally `-- --iterations 2000 --warmup 200`).

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Era, TestDb, TestServer, cpu_ns, http::HttpServer, oidc::Oidc};
use rmcp::{ClientHandler, RoleClient, model::CallToolRequestParams, service::RunningService};
use serde_json::json;

const RESOURCE: &str = "http://127.0.0.1/mcp";

struct Run {
    cpu_us: f64,
    wall_us: f64,
}

async fn measure<H: ClientHandler>(client: &RunningService<RoleClient, H>, pid: u32, warmup: usize, n: usize) -> Run {
    let read = async |i: usize| {
        let sql = format!("SELECT id, name FROM items WHERE id = {}", 1 + (i * 7919) % 10_000);
        let args = json!({ "sql": sql }).as_object().cloned().unwrap();
        let r = client
            .call_tool(CallToolRequestParams::new("query").with_arguments(args))
            .await
            .expect("call");
        assert_ne!(r.is_error, Some(true), "{r:?}");
    };
    for i in 0..warmup {
        read(i).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = cpu_ns(pid);
    let mut wall = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        read(warmup + i).await;
        wall.push(t.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cpu = cpu_ns(pid) - before;
    wall.sort();
    Run {
        cpu_us: cpu as f64 / n as f64 / 1e3,
        wall_us: wall[n / 2].as_secs_f64() * 1e6,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let warmup = common::bench_arg("--warmup", 200);
    let n = common::bench_arg("--iterations", 2000).max(1);
    let db = TestDb::new(
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 10000) g; ANALYZE;",
    )
    .await;
    let builder = || TestServer::builder().database(&db).env("PGWARDEN_LOG", "warn");

    let mut stdio = builder().start().await;
    let stdio_run = measure(&stdio.client, stdio.pid(), warmup, n).await;
    stdio.close().await;

    let dir = tempfile::Builder::new()
        .prefix("pgw-bench-http-")
        .tempdir_in("/tmp")
        .unwrap();
    let token = pgwarden::auth::tokens::new_token(&dir.path().join("tokens.toml"), "alice", &["dba".into()]).unwrap();
    let tokens = HttpServer::start(builder(), dir.path(), RESOURCE, "[tokens]\nfile = \"tokens.toml\"\n").await;
    let client = tokens.connect((), &token, Era::Legacy).await;
    let token_run = measure(&client, tokens.raw.pid(), warmup, n).await;
    drop(client);
    drop(tokens);

    // The same, with approvals and the audit chain in a state database (`--state-url`): each
    // call's record is a transaction on the shared chain instead of a line in a file.
    let state = TestDb::create_for_setup("").await;
    let state_url = common::socket_dsn(common::OWNER, &state.name);
    let shared = HttpServer::start(
        builder().args(["--state-url", &state_url]),
        dir.path(),
        RESOURCE,
        "[tokens]\nfile = \"tokens.toml\"\n",
    )
    .await;
    let client = shared.connect((), &token, Era::Legacy).await;
    let state_run = measure(&client, shared.raw.pid(), warmup, n).await;
    drop(client);
    drop(shared);

    let oidc = Oidc::start().await;
    let jwt = oidc.token("alice", RESOURCE, "pgwarden").await;
    let dir = tempfile::Builder::new()
        .prefix("pgw-bench-http-")
        .tempdir_in("/tmp")
        .unwrap();
    let config = format!(
        "[oauth]\nissuer = \"{}\"\nrequired_scopes = [\"pgwarden\"]\nallow_insecure_http = true\n",
        oidc.issuer
    );
    let oauth = HttpServer::start(builder(), dir.path(), RESOURCE, &config).await;
    let client = oauth.connect((), &jwt, Era::Legacy).await;
    let jwt_run = measure(&client, oauth.raw.pid(), warmup, n).await;

    println!();
    println!("sequential point read through `pgwarden serve`, {n} calls after {warmup} warm-up, one run");
    println!(
        "{:<34} {:>14} {:>9} {:>11} {:>9}",
        "transport", "server CPU", "vs stdio", "wall p50", "vs stdio"
    );
    for (name, r) in [
        ("stdio (baseline)", &stdio_run),
        ("HTTP, static token", &token_run),
        ("HTTP, token, --state-url trail", &state_run),
        ("HTTP, OAuth JWT (RS256, JWKS)", &jwt_run),
    ] {
        println!(
            "{name:<34} {:>11.1} µs {:>8.2}x {:>8.1} µs {:>8.2}x",
            r.cpu_us,
            r.cpu_us / stdio_run.cpu_us,
            r.wall_us,
            r.wall_us / stdio_run.wall_us
        );
    }
    println!(
        "server CPU: utime + stime of the server process (/proc/<pid>/stat) over the measured calls; \
         HTTP includes the session's SSE framing and, for OAuth, an RS256 signature check per request."
    );
}
