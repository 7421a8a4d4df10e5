//! `pgwarden demo`: the terminal client runs SQL against the sandbox through a real `pgwarden serve`
//! child and renders approval prompts that a person answers on stdin.

use std::{io::Write, process::Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_pgwarden");

#[test]
fn demo_shows_rows_and_an_approval_prompt_answered_in_the_terminal() {
    let dir = tempfile::Builder::new().prefix("pgw-demo-").tempdir_in("/tmp").unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["demo", "--sandbox-dir"])
        .arg(dir.path().join("sandbox"))
        .env_remove("DATABASE_URL")
        .env("PGWARDEN_AUDIT_LOG", dir.path().join("audit.jsonl"))
        .env_remove("PGWARDEN_POLICY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A read; a write answered "dry run" with a row limit and a reason; the read again; a denied
    // write; then quit.
    let script = "SELECT status FROM orders WHERE id = 1;\n\
                  UPDATE orders SET status = 'refunded'\n WHERE id = 1;\nd\n5\njust looking\n\
                  SELECT status FROM orders WHERE id = 1;\n\
                  DELETE FROM orders WHERE id = 1;\nn\nnot today\n\
                  \\q\n";
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "status\n------\npaid\n",
        "pgwarden: approve this write?",
        "UPDATE on public.orders via `query` (write, risk medium)",
        "[a]pprove, [d]ry run or [n] deny?",
        "1 row affected; rolled back (dry run); approved under rule `changes-need-approval`",
        "reviewer's reason: just looking",
        "not approved: the reviewer denied it (reviewer's reason: \"not today\")",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    // The dry run changed nothing: the second read shows the same status as the first.
    assert_eq!(stdout.matches("status\n------\npaid\n").count(), 2, "{stdout}");
}
