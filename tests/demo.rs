//! `pgwarden demo`: the terminal client runs SQL against the sandbox through a real `pgwarden serve`
//! child and renders approval prompts that a person answers on stdin.

mod common;

use std::{io::Write, process::Stdio, time::Duration};

use common::{BIN, edit_policy, eventually_blocking};

/// `pgwarden demo` on a fresh sandbox under `dir`, with pipes; `policy` instead of the default.
fn demo(dir: &std::path::Path, policy: Option<&std::path::Path>) -> std::process::Child {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["demo", "--sandbox-dir"])
        .arg(dir.join("sandbox"))
        .env_remove("DATABASE_URL")
        .env_remove("PGWARDEN_POLICY")
        .env_remove("BROWSER")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("PGWARDEN_AUDIT_LOG", dir.join("audit.jsonl"))
        .arg("--server-log")
        .arg(dir.join("server.log"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = policy {
        cmd.arg("--policy").arg(p);
    }
    cmd.spawn().unwrap()
}

#[test]
fn demo_shows_rows_and_an_approval_prompt_answered_in_the_terminal() {
    let dir = tempfile::Builder::new().prefix("pgw-demo-").tempdir_in("/tmp").unwrap();
    let mut child = demo(dir.path(), None);
    // A read; a write answered "dry run" with a row limit and a reason; the read again; a denied
    // write; then quit.
    let script = "SELECT chr(27) || '[2J' || chr(8238) || 'x' AS shown;\n\
                  SELEC 1;\n\
                  COPY orders TO STDOUT;\n\
                  \\d\n\
                  SELECT status FROM orders WHERE id = 1;\n\
                  UPDATE orders SET status = 'refunded'\n WHERE id = 1 RETURNING id, status;\nd\nten\n5\njust looking\n\
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
        // Issue 17 item 10: what a new user ran into.
        "did you mean `SELECT`?",
        "use the `export` tool",
        "usage: \\d TABLE",
        "a row limit is a whole number such as 10",
        "returning (id, status):",
        "server log: ",
        "reviewer's reason: just looking",
        "not approved: the reviewer denied it (reviewer's reason: \"not today\")",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    // Issue 16 item 5: a value carrying terminal escapes (clear screen, right-to-left override) is
    // shown escaped, never sent to the terminal.
    assert!(!stdout.contains('\u{1b}') && !stdout.contains('\u{202e}'), "{stdout:?}");
    assert!(stdout.contains("\\u{001B}[2J\\u{202E}x"), "{stdout}");
    // Advice written for a model ("ask the user …") is turned into words for the person reading.
    assert!(!stdout.contains("ask the user"), "{stdout}");
    // A typo and COPY TO STDOUT were answered at once: two prompts only (the UPDATE, the DELETE).
    assert_eq!(
        stdout.matches("[a]pprove, [d]ry run or [n] deny?").count(),
        2,
        "{stdout}"
    );
    // The server's log lines go to its log file, never into the terminal.
    assert!(!stdout.contains(" WARN ") && !stdout.contains(" INFO "), "{stdout}");
    // The dry run changed nothing: the second read shows the same status as the first.
    assert_eq!(stdout.matches("status\n------\npaid\n").count(), 2, "{stdout}");
}

/// A person slower than the server's wait budget: the statement comes back pending, the demo keeps
/// waiting with `pgwarden_await`, and the prompt's late answer runs it once.
#[test]
fn demo_waits_for_a_prompt_answered_after_the_wait_budget() {
    let dir = tempfile::Builder::new().prefix("pgw-demo-").tempdir_in("/tmp").unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        edit_policy(include_str!("../tool-policies/default.toml"))
            .add(r#"approval.wait_budget = "1s""#)
            .toml(),
    )
    .unwrap();
    let mut child = demo(dir.path(), Some(&policy));
    let mut stdin = child.stdin.take().unwrap();
    let mut child_out = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut child_out, &mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    stdin
        .write_all(b"UPDATE orders SET status = 'refunded' WHERE id = 1;\n")
        .unwrap();
    stdin.flush().unwrap();
    // The person sees the prompt, reads it for longer than the server waits, then approves.
    let asked = std::time::Instant::now();
    while !seen.lock().unwrap().contains("[a]pprove") {
        assert!(asked.elapsed().as_secs() < 60, "no prompt: {}", seen.lock().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The server stopped waiting and recorded the call as pending, the prompt still open.
    let trail = dir.path().join("audit.jsonl");
    eventually_blocking(Duration::from_secs(10), "the call to turn pending", || {
        let records = std::fs::read_to_string(&trail).unwrap_or_default();
        records.contains("no answer within the wait budget").then_some(())
    });
    stdin
        .write_all(b"a\n\nchecked\nSELECT status FROM orders WHERE id = 1;\n\\q\n")
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let stdout = seen.lock().unwrap().clone();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "[a]pprove, [d]ry run or [n] deny?",
        "waiting for a decision on approval apr_",
        "it ran once.",
        "status\n--------\nrefunded\n",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    assert_eq!(stdout.matches("ran once").count(), 1, "{stdout}");
}
