//! Issue 17 item 2: approving critical actions without a desktop. The real `pgwarden serve` runs
//! over stdio with no browser and no display (as over SSH, in a devcontainer or Codespaces); a
//! person approves or denies from another terminal with `pgwarden approvals`, which reaches the
//! server over its private Unix socket and nobody else can.

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Output,
};

use common::{BIN, Mcp, Reviewer, TestDb, TestServer, edit_policy, text};
use serde_json::{Value, json};

const SETUP: &str = "CREATE TABLE t (id int PRIMARY KEY);
                     INSERT INTO t VALUES (1), (2), (3);
                     CREATE TABLE u (id int PRIMARY KEY);
                     INSERT INTO u VALUES (1), (2);";

/// Changes need approval; critical ones at the default `local` level. Short waits.
const POLICY: &str = r#"
[approval]
wait_budget = "1s"
pending_ttl = "60s"

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]

[[rule]]
id = "changes-need-approval"
effect = "approve"
categories = ["write", "ddl", "destructive"]
reason = "changes need a person"
"#;

/// `pgwarden serve` started as a client configuration would start it, without a desktop (no
/// browser, no display), by a client that shows prompts and approves every one: they must not
/// count for critical risk.
async fn start(db: &TestDb, policy: &str) -> Mcp<Reviewer> {
    TestServer::builder()
        .database(db)
        .policy(policy)
        .reviewer(Reviewer::says("approve", None, None))
        .start()
        .await
}

/// The server's runtime directory (`$XDG_RUNTIME_DIR`), where its approvals socket lives.
fn runtime(server: &Mcp<Reviewer>) -> PathBuf {
    server.dir().join("run")
}

/// `pgwarden approvals …` in another terminal of the same user.
fn approvals(server: &Mcp<Reviewer>, args: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .arg("approvals")
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime(server))
        .output()
        .unwrap()
}

/// The raw records of the server's audit trail.
fn audit(server: &Mcp<Reviewer>) -> Vec<Value> {
    std::fs::read_to_string(server.audit_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn rows(db: &TestDb, table: &str) -> i64 {
    db.column(&format!("SELECT count(*) FROM {table}")).await[0]
}

/// A critical call that must come back pending, offered in the terminal; its structured content.
async fn pending(server: &Mcp<Reviewer>, sql: &str) -> Value {
    let r = server.call("query", json!({ "sql": sql, "intent": "clean up" })).await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let s = r.structured_content.clone().unwrap();
    assert_eq!(s["status"], "pending_approval", "{s}");
    assert_eq!(s["surfaces"], json!(["cli"]), "no console without a desktop: {s}");
    let id = s["approval_id"].as_str().unwrap();
    assert!(
        text(&r).contains(&format!(
            "`pgwarden approvals approve {id}` — a command for the person, never for you"
        )),
        "{}",
        text(&r)
    );
    s
}

fn socket_of(runtime: &Path) -> PathBuf {
    std::fs::read_dir(runtime.join("pgwarden"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("approvals-"))
        .expect("the server's approvals socket")
}

#[tokio::test]
async fn a_critical_delete_is_approved_from_another_terminal_and_runs_once() {
    let db = TestDb::new(SETUP).await;
    let mut server = start(&db, POLICY).await;
    // The client's prompt still decides `client`-level calls in the same session.
    let r = server
        .call("query", json!({ "sql": "UPDATE u SET id = id + 10 WHERE id = 1" }))
        .await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));

    let s = pending(&server, "DELETE FROM t").await;
    let id = s["approval_id"].as_str().unwrap().to_string();
    let fp = s["fingerprint"].as_str().unwrap().to_string();

    let socket = socket_of(&runtime(&server));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    let dir_mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700, "runtime directory mode");

    let list = approvals(&server, &["list"]);
    assert!(list.status.success(), "{}", err(&list));
    assert!(out(&list).contains(&id) && out(&list).contains(&fp), "{}", out(&list));
    assert!(out(&list).contains("critical risk"), "{}", out(&list));

    let show = approvals(&server, &["show", &fp]);
    assert!(show.status.success(), "{}", err(&show));
    let shown = out(&show);
    assert!(shown.contains("SQL:\n  DELETE FROM\n    t\n"), "{shown}");
    assert!(
        shown.find("DELETE FROM").unwrap() < shown.find("Intent:").unwrap(),
        "SQL first: {shown}"
    );
    assert!(shown.contains("clean up (the model's words, unverified)"), "{shown}");

    // A wrong or unknown id is a clear error, and nothing is decided.
    let wrong = approvals(&server, &["approve", "apr_0000nothere"]);
    assert!(!wrong.status.success());
    assert!(err(&wrong).contains("no approval `apr_0000nothere`"), "{}", err(&wrong));

    let approve = approvals(&server, &["approve", &id, "--reason", "tables are scratch"]);
    assert!(approve.status.success(), "{}", err(&approve));
    assert!(
        out(&approve).contains("approved; runs at the next pgwarden_await"),
        "{}",
        out(&approve)
    );
    assert_eq!(rows(&db, "t").await, 3, "approval alone runs nothing");

    let again = approvals(&server, &["approve", &id]);
    assert!(!again.status.success(), "first decision wins");
    assert!(err(&again).contains("already decided"), "{}", err(&again));

    let r = server.call("pgwarden_await", json!({ "approval_id": id })).await;
    let s = r.structured_content.clone().unwrap();
    assert_eq!(s["status"], "executed", "{s}");
    assert_eq!(rows(&db, "t").await, 0);
    let r = server.call("pgwarden_await", json!({ "approval_id": id })).await;
    assert_ne!(r.structured_content.unwrap()["status"], "executed", "used once");

    let decided: Vec<Value> = audit(&server)
        .into_iter()
        .filter(|r| r["approval"]["approval_id"] == json!(id) && r["approval"]["answer"] == "approved")
        .collect();
    assert_eq!(decided.len(), 1, "one decision in the trail");
    let a = &decided[0]["approval"];
    assert_eq!(a["channel"], "cli", "{a}");
    assert_eq!(a["reason"], "tables are scratch", "{a}");
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let by = a["decided_by"].as_str().unwrap();
    assert!(by.starts_with(&format!("uid {uid} (pgwarden approvals, pid ")), "{by}");
    server.close().await;
}

#[tokio::test]
async fn deny_from_the_terminal_reaches_the_model_with_its_reason() {
    let db = TestDb::new(SETUP).await;
    let mut server = start(&db, POLICY).await;
    let s = pending(&server, "TRUNCATE u").await;
    let id = s["approval_id"].as_str().unwrap().to_string();
    let deny = approvals(&server, &["deny", &id, "--reason", "keep u"]);
    assert!(deny.status.success(), "{}", err(&deny));
    assert!(out(&deny).contains("denied: keep u"), "{}", out(&deny));
    let r = server.call("pgwarden_await", json!({ "approval_id": id })).await;
    let s = r.structured_content.clone().unwrap();
    assert_eq!(s["status"], "denied", "{s}");
    assert!(text(&r).contains("keep u"), "{}", text(&r));
    assert_eq!(rows(&db, "u").await, 2);
    let list = approvals(&server, &["list"]);
    assert!(out(&list).contains("no pending approvals"), "{}", out(&list));
    assert!(
        approvals(&server, &["list", "--all"])
            .stdout
            .windows(id.len())
            .any(|w| w == id.as_bytes())
    );
    server.close().await;
}

/// Another OS user cannot list or decide: the runtime directory and the socket are the owner's
/// only, and a connection that gets past the file modes is refused by its peer credentials.
#[tokio::test]
async fn another_user_cannot_list_or_approve() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || std::process::Command::new("runuser").arg("--help").output().is_err() {
        eprintln!("skipped: needs root and runuser to act as another user");
        return;
    }
    let db = TestDb::new(SETUP).await;
    let mut server = start(&db, POLICY).await;
    let s = pending(&server, "DELETE FROM t").await;
    let id = s["approval_id"].as_str().unwrap().to_string();
    let socket = socket_of(&runtime(&server));
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", BIN, "approvals"])
            .args(args)
            .env("XDG_RUNTIME_DIR", runtime(&server))
            .output()
            .unwrap()
    };
    // Let `nobody` reach the test's directories (the server's own runtime dir stays 0700).
    for p in [server.dir().to_path_buf(), runtime(&server)] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let o = as_nobody(&["list"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("Permission denied"), "{}", err(&o));
    let o = as_nobody(&["--socket", socket.to_str().unwrap(), "approve", &id]);
    assert!(!o.status.success());
    assert!(err(&o).contains("Permission denied"), "the socket is 0600: {}", err(&o));

    // Past the file modes (as if they were wrong), the server itself refuses another uid.
    std::fs::set_permissions(socket.parent().unwrap(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [vec!["list"], vec!["approve", id.as_str()], vec!["show", id.as_str()]] {
        let mut all = vec!["--socket", socket.to_str().unwrap()];
        all.extend(args);
        let o = as_nobody(&all);
        assert!(!o.status.success());
        assert!(
            err(&o).contains("refused: this pgwarden answers only to its own user (uid 0)"),
            "{}",
            err(&o)
        );
        assert!(!out(&o).contains("DELETE"), "nothing shown: {}", out(&o));
    }
    let show = out(&approvals(&server, &["show", &id]));
    assert!(
        show.contains("waiting for a person's decision"),
        "still pending: {show}"
    );
    assert_eq!(rows(&db, "t").await, 3);
    server.close().await;
}

/// Issue 17 item 2: with no local channel at all (no desktop, and the terminal channel turned
/// off), a critical action is refused — and the refusal says what is true: the level the policy
/// requires, what is missing, and the settings that change it; not "this client cannot show
/// approval prompts" to a client that just showed one.
#[tokio::test]
async fn without_any_local_channel_the_refusal_says_what_is_true() {
    let db = TestDb::new(SETUP).await;
    let policy = edit_policy(POLICY)
        .add(r#"approval.channels = ["elicitation", "mcp_app", "console"]"#)
        .toml();
    let mut server = start(&db, &policy).await;
    let r = server
        .call("query", json!({ "sql": "UPDATE u SET id = id + 10 WHERE id = 1" }))
        .await;
    assert_ne!(r.is_error, Some(true), "the client's prompt works: {}", text(&r));
    let r = server.call("query", json!({ "sql": "DELETE FROM t" })).await;
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(!t.contains("cannot show approval prompts"), "{t}");
    for said in [
        "requires `local` approval for critical-risk actions (`[approval.min_channel] critical = \"local\"`)",
        "counts only as `client` level",
        "the review console could not be shown (there is no desktop session",
        "`cli` is not in `[approval] channels`",
        "set `[approval.min_channel] critical = \"client\"`",
    ] {
        assert!(t.contains(said), "missing {said:?} in: {t}");
    }
    assert_eq!(rows(&db, "t").await, 3);
    let o = approvals(&server, &["list"]);
    assert!(!o.status.success(), "no socket when the channel is off");
    assert!(err(&o).contains("no pgwarden server is listening"), "{}", err(&o));
    server.close().await;
}
