//! Several `pgwarden serve --http` replicas on one state database (issue 21): an approval created
//! on one is decided through another and run exactly once — also when both race to claim it; a
//! replica killed mid-approval loses nothing; the one audit chain in Postgres verifies and exports.

mod common;

use std::time::{Duration, Instant};

use common::{
    OWNER, TestDb, TestServer,
    http::HttpServer,
    socket_dsn,
    team::{Api, Team, awaited, team_policy},
};
use rmcp::{Peer, RoleClient};
use serde_json::{Value, json};

const SETUP: &str = "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL);
INSERT INTO counters SELECT g, 0 FROM generate_series(1, 20) g;";

const TOKENS: &str = "[tokens]\nfile = \"tokens.toml\"\n";

/// Two replicas sharing a state database, a token file, the state key and the audit key.
struct Pair {
    team: Team,
    db: TestDb,
    state_url: String,
    a: HttpServer,
    b: HttpServer,
}

impl Pair {
    fn dir(&self) -> &std::path::Path {
        self.team.path()
    }
}

async fn replica(db: &TestDb, team: &Team, state_url: &str, policy: &str) -> HttpServer {
    let builder = TestServer::builder()
        .database(db)
        .policy(policy)
        .args(["--state-url", state_url, "--audit-key"])
        .args([team.path().join("audit-signing.key")]);
    team.serve(builder, "").await
}

async fn pair() -> Pair {
    pair_with(&team_policy("")).await
}

async fn pair_with(policy: &str) -> Pair {
    let db = TestDb::new(SETUP).await;
    let state = TestDb::create_for_setup("").await;
    let state_url = socket_dsn(OWNER, &state.name);
    let team = Team::new("pgw-replicas-", &[("alice", &["dba"]), ("bob", &["dba"])]);
    let a = replica(&db, &team, &state_url, policy).await;
    let b = replica(&db, &team, &state_url, policy).await;
    Pair {
        team,
        db,
        state_url,
        a,
        b,
    }
}

/// Alice's UPDATE of counter `id`, pending: its approval id.
async fn pending_update(client: &Peer<RoleClient>, id: i32) -> String {
    let sql = format!("UPDATE counters SET n = n + 1 WHERE id = {id}");
    common::team::pending(client, &sql, None).await
}

/// A reviewer's decision through the approvals API of `server`, on the hash it shows them: the
/// status and the body.
async fn decide(server: &HttpServer, token: &str, id: &str, decision: &str) -> (u16, Value) {
    Api::of(server).decide_shown(token, id, decision, None).await
}

async fn counter(db: &TestDb, id: i32) -> i32 {
    db.column::<i32>(&format!("SELECT n FROM counters WHERE id = {id}"))
        .await[0]
}

/// The chain in the state database: `audit verify --state-url` with the replicas' public key.
fn verify(p: &Pair) -> std::process::Output {
    std::process::Command::new(common::BIN)
        .args(["audit", "verify", "--state-url", &p.state_url, "--key"])
        .arg(p.dir().join("audit-signing.key.pub"))
        .output()
        .unwrap()
}

#[tokio::test]
async fn created_on_one_replica_approved_through_the_other_runs_once() {
    let p = pair().await;
    let alice_a = p.a.connect((), &p.team.alice, common::Era::Legacy).await;
    let id = pending_update(&alice_a, 1).await;

    // Alice may not approve her own call, on either replica; the refusal is in the shared trail.
    let (status, body) = decide(&p.b, &p.team.alice, &id, "approve").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("nobody approves their own"),
        "{body}"
    );

    // Alice waits on A while Bob approves on B: the NOTIFY wakes A's waiter.
    let waiting = tokio::spawn({
        let alice_a = alice_a.peer().clone();
        let id = id.clone();
        async move {
            let r = awaited(&alice_a, &id, 30).await;
            (r, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let decided = Instant::now();
    let (status, body) = decide(&p.b, &p.team.bob, &id, "approve").await;
    assert_eq!(status, 200, "{body}");
    let (r, ran) = waiting.await.unwrap();
    assert_eq!(r["executed"], json!(true), "{r}");
    eprintln!(
        "ROUND TRIP decision on B → execution on A: {} ms",
        ran.duration_since(decided).as_millis()
    );
    assert_eq!(counter(&p.db, 1).await, 1);

    // Awaiting again, on the other replica this time, does not run it again.
    let alice_b = p.b.connect((), &p.team.alice, common::Era::Legacy).await;
    let again = awaited(&alice_b, &id, 0).await;
    assert_ne!(again["executed"], json!(true), "{again}");
    assert_eq!(counter(&p.db, 1).await, 1);

    let out = verify(&p);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    let export = p.dir().join("export.jsonl");
    let out = std::process::Command::new(common::BIN)
        .args(["audit", "export", "--state-url", &p.state_url, "--out"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<pgwarden::audit::Record> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let answers: Vec<String> = records
        .iter()
        .filter_map(|r| r.approval.as_ref())
        .filter(|a| a.approval_id.as_deref() == Some(id.as_str()))
        .map(|a| format!("{} {}", a.answer, a.channel))
        .collect();
    assert_eq!(
        answers,
        [
            "pending created",
            // The call's own record: pending, on the surfaces that can show it.
            "pending cli+api",
            "refused api",
            "approved api",
            "executing await",
            // The run's record, then how it ended.
            "approve pgwarden_await",
            "done executed"
        ],
        "{answers:?}"
    );
    let refusal = records
        .iter()
        .filter_map(|r| r.approval.as_ref())
        .find(|a| a.answer == "refused")
        .unwrap();
    assert!(refusal.reason.as_deref().unwrap().contains("nobody approves their own"));
    // The copy verifies as a file trail too.
    let out = std::process::Command::new(common::BIN)
        .args(["audit", "verify"])
        .arg(&export)
        .arg("--key")
        .arg(p.dir().join("audit-signing.key.pub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn both_replicas_racing_to_claim_run_each_approval_exactly_once() {
    let p = pair().await;
    let alice_a = p.a.connect((), &p.team.alice, common::Era::Legacy).await;
    let alice_b = p.b.connect((), &p.team.alice, common::Era::Legacy).await;
    const ROUNDS: i32 = 10;
    let mut winners = [0, 0];
    for id in 1..=ROUNDS {
        let approval = pending_update(&alice_a, id).await;
        let (status, body) = decide(&p.a, &p.team.bob, &approval, "approve").await;
        assert_eq!(status, 200, "{body}");
        let (on_a, on_b) = tokio::join!(awaited(&alice_a, &approval, 5), awaited(&alice_b, &approval, 5));
        let ran = [&on_a, &on_b].map(|r| r["executed"] == json!(true));
        assert_eq!(ran.iter().filter(|r| **r).count(), 1, "round {id}: {on_a} / {on_b}");
        winners[usize::from(ran[1])] += 1;
        assert_eq!(counter(&p.db, id).await, 1, "round {id}");
    }
    eprintln!(
        "CLAIM RACE: {ROUNDS} rounds, each run once (won by A {}, by B {})",
        winners[0], winners[1]
    );
    assert!(verify(&p).status.success());
}

#[tokio::test]
async fn a_replica_killed_mid_approval_loses_nothing() {
    let p = pair().await;
    let alice_a = p.a.connect((), &p.team.alice, common::Era::Legacy).await;
    let id = pending_update(&alice_a, 3).await;
    let pid = p.a.raw.pid();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // B still shows it, Bob approves it there, and Alice's await on B runs it.
    let (status, body) = decide(&p.b, &p.team.bob, &id, "approve").await;
    assert_eq!(status, 200, "{body}");
    let alice_b = p.b.connect((), &p.team.alice, common::Era::Legacy).await;
    let r = awaited(&alice_b, &id, 10).await;
    assert_eq!(r["executed"], json!(true), "{r}");
    assert_eq!(counter(&p.db, 3).await, 1);
    let out = verify(&p);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Whether an approval still counts is the database clock's call, in the claim itself: once its
/// deadline passed it is never run, on any replica.
#[tokio::test]
async fn an_approval_past_its_deadline_is_run_by_no_replica() {
    let p = pair_with(&team_policy("").replace("wait_budget = \"1s\"", "wait_budget = \"1s\"\napproved_ttl = \"1s\""))
        .await;
    let alice_a = p.a.connect((), &p.team.alice, common::Era::Legacy).await;
    let alice_b = p.b.connect((), &p.team.alice, common::Era::Legacy).await;
    let id = pending_update(&alice_a, 5).await;
    let (status, body) = decide(&p.b, &p.team.bob, &id, "approve").await;
    assert_eq!(status, 200, "{body}");
    // The approved call waits for its await for one second, then no longer counts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (on_a, on_b) = tokio::join!(awaited(&alice_a, &id, 0), awaited(&alice_b, &id, 0));
    for r in [&on_a, &on_b] {
        assert_ne!(r["executed"], json!(true), "{r}");
        assert!(r.to_string().contains("expired"), "{r}");
    }
    assert_eq!(counter(&p.db, 5).await, 0);
}

/// What `serve --http` serving `db` with `--state-url state_url` says when it will not start.
fn refused_at_start(db: &TestDb, state_url: &str) -> String {
    let team = Team::new("pgw-replicas-", &[("alice", &[])]);
    std::fs::write(
        team.path().join("http.toml"),
        format!("resource = \"http://127.0.0.1/mcp\"\n{TOKENS}"),
    )
    .unwrap();
    let out = TestServer::builder()
        .database(db)
        .policy(team_policy(""))
        .args(["--http", "127.0.0.1:0", "--http-config"])
        .args([team.path().join("http.toml")])
        .args(["--state-url", state_url])
        .output();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_state_database_the_agent_can_reach_is_refused_at_start() {
    let db = TestDb::create_for_setup("").await;
    // The served database itself, reached as another login.
    let err = refused_at_start(&db, &socket_dsn(OWNER, &db.name));
    assert!(err.contains("is the database pgwarden serves"), "{err}");
}

/// However the URLs are spelled, the agent's own session must not see pgwarden's state tables.
#[tokio::test]
async fn pgwarden_tables_the_agents_session_can_see_are_refused_at_start() {
    // The served database holds a `pgwarden` schema (it was once given as the state URL, say).
    let db = TestDb::new("CREATE SCHEMA pgwarden; CREATE TABLE pgwarden.audit_head (one boolean);").await;
    let state = TestDb::create_for_setup("").await;
    let err = refused_at_start(&db, &socket_dsn(OWNER, &state.name));
    assert!(
        err.contains("the agent's session sees pgwarden's state tables"),
        "{err}"
    );
}
