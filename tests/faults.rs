//! Faults of the machine and the database (issue 16): a Postgres that accepts connections but never
//! answers must not hang a call, and pgwarden answers again once it is back.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{TestDb, TestServer};
use pgwarden::{
    config::Limits,
    db::{Database, Target},
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP proxy to the test cluster's Unix socket that can go silent: while `silent`, it forwards
/// nothing in either direction, and new connections are accepted and left unanswered.
async fn silent_proxy(socket: std::path::PathBuf, silent: Arc<AtomicBool>) -> u16 {
    proxy(socket, silent, Arc::new(AtomicBool::new(false))).await
}

/// [`silent_proxy`], which also, while `cut_at_commit`, passes a `COMMIT` on to Postgres and then
/// drops the client's connection before the answer comes back.
async fn proxy(socket: std::path::PathBuf, silent: Arc<AtomicBool>, cut_at_commit: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let silent = silent.clone();
            let cut_at_commit = cut_at_commit.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                if silent.load(Ordering::SeqCst) {
                    // Accept and never answer.
                    return hold(client).await;
                }
                let Ok(server) = tokio::net::UnixStream::connect(&socket).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let cut = Arc::new(AtomicBool::new(false));
                let up = tokio::spawn(relay(cr, sw, silent.clone(), Some((cut_at_commit, cut.clone()))));
                let down = tokio::spawn(relay_until(sr, cw, silent, cut));
                let _ = tokio::join!(up, down);
            });
        }
    });
    port
}

/// Holds `connection` open, silent, until the test ends (its runtime drops this task).
async fn hold<T>(connection: T) {
    let _held = connection;
    std::future::pending::<()>().await
}

/// The test cluster's Unix socket.
fn cluster_socket() -> std::path::PathBuf {
    let c = &common::cluster().cluster;
    c.socket_dir().join(format!(".s.PGSQL.{}", c.port))
}

/// `db` reached through a proxy on `port`, as the agent, with a 2 s connect timeout.
async fn through_proxy(db: &TestDb, port: u16) -> Database {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(common::AGENT)
        .dbname(&db.name)
        .connect_timeout(Duration::from_secs(2))
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    Database::connect(Target::from_config(config).unwrap(), 2)
        .await
        .unwrap()
}

/// Copies `from` to `to` until either closes; once `silent`, swallows everything. With
/// `(cut_at_commit, cut)`: after passing on a chunk holding `COMMIT` while `cut_at_commit`, sets `cut`.
async fn relay(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    silent: Arc<AtomicBool>,
    commit: Option<(Arc<AtomicBool>, Arc<AtomicBool>)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silent.load(Ordering::SeqCst) {
            return hold(to).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if let Some((armed, cut)) = &commit
            && armed.load(Ordering::SeqCst)
            && buf[..n].windows(6).any(|w| w == b"COMMIT")
        {
            cut.store(true, Ordering::SeqCst);
            // Keep the server side open so COMMIT completes there.
            return hold(to).await;
        }
    }
}

/// Server to client: [`relay`], but once `cut` is set the client's side is closed, unanswered.
async fn relay_until(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    silent: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            let _ = to.shutdown().await;
            return;
        }
        if silent.load(Ordering::SeqCst) {
            return hold(to).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Issue 16 item 13: with the server accepting connections but never answering, a read waited more
/// than 150 s despite a 3 s statement timeout. Every call now ends within its bounds, and the next
/// call after the database is back succeeds.
#[tokio::test]
async fn a_silent_postgres_never_hangs_a_call() {
    let db = TestDb::new("CREATE TABLE t (a int); INSERT INTO t VALUES (1);").await;
    let socket = cluster_socket();
    let silent = Arc::new(AtomicBool::new(false));
    let port = silent_proxy(socket, silent.clone()).await;
    let database = through_proxy(&db, port).await;
    let limits = Limits {
        statement_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let mcp = TestServer::builder()
        .connected(database)
        .limits(limits)
        .in_process()
        .await;
    let read = json!({ "sql": "SELECT a FROM t" });
    assert_eq!(mcp.ok("query", read.clone()).await["rows"], json!([[1]]));

    silent.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let started = Instant::now();
        let r = mcp.call("query", read.clone()).await;
        assert_eq!(r.is_error, Some(true), "{:?}", r);
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "a call against a silent server took {:?}",
            started.elapsed()
        );
    }

    silent.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = mcp.call("query", read.clone()).await;
        if r.is_error != Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pgwarden did not recover: {}",
            common::text(&r)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Issue 16 item 12: the connection dropped after COMMIT was sent; the row had changed, yet the model
/// was told "the database is unavailable, try again". Now the transaction's fate is asked of
/// Postgres (`txid_status`) and reported.
#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_resolved_not_reported_as_a_failure() {
    let db = TestDb::new("CREATE TABLE t (a int); INSERT INTO t VALUES (1);").await;
    let socket = cluster_socket();
    let cut = Arc::new(AtomicBool::new(false));
    let port = proxy(socket, Arc::new(AtomicBool::new(false)), cut.clone()).await;
    let database = through_proxy(&db, port).await;
    let mcp = TestServer::builder()
        .connected(database)
        .policy("[[rule]]\nid = \"all\"\neffect = \"allow\"\ncategories = [\"read\", \"write\"]\n")
        .in_process()
        .await;
    cut.store(true, Ordering::SeqCst);
    let r = mcp
        .call("query", json!({ "sql": "UPDATE t SET a = 2 WHERE a = 1" }))
        .await;
    cut.store(false, Ordering::SeqCst);
    let text = common::text(&r);
    assert_ne!(r.is_error, Some(true), "{text}");
    assert!(text.contains("confirms the change committed"), "{text}");
    let a: i32 = db
        .client()
        .await
        .query_one("SELECT a FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(a, 2);
}
