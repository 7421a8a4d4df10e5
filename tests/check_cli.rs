//! `pgwarden check`: the assessment and decision as a person or script sees them.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pgwarden");

fn check_json(sql: &str) -> Value {
    let out = Command::new(BIN)
        .args(["check", "--format", "json", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_report_has_the_documented_fields_and_decision() {
    let v = check_json("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d");
    for key in [
        "categories",
        "risk",
        "statements",
        "tables",
        "functions",
        "reasons",
        "decision",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["decision"]["effect"], "approve");
    assert_eq!(v["risk"], "critical");
    assert_eq!(v["tables"], serde_json::json!(["public.t"]));

    let v = check_json("SELECT lower(name) FROM customers");
    assert_eq!(v["decision"]["effect"], "allow");
    assert_eq!(v["categories"], serde_json::json!(["read"]));
    assert_eq!(v["functions"], serde_json::json!(["lower"]));
}

#[test]
fn sql_can_come_from_stdin_and_text_output_names_the_reason() {
    let mut child = Command::new(BIN)
        .arg("check")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT * FROM pg_read_file('/etc/passwd')")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("decision: approve"), "{text}");
    assert!(text.contains("calls `pg_read_file` in FROM"), "{text}");
}

#[test]
fn usage_errors_exit_non_zero() {
    let out = Command::new(BIN)
        .args(["check", "--format", "yaml", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("PGWARDEN_POLICY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_with_a_policy_shows_the_deciding_rule_tags_and_masks() {
    let (ok, out, err) = run(&[
        "check",
        "--policy",
        "tool-policies/sandbox.toml",
        "DELETE FROM customers",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("decision: deny by rule `customers-are-never-destroyed` (tool-policies/sandbox.toml:"),
        "{out}"
    );
    assert!(out.contains("tags: public.customers: gdpr, pii"), "{out}");
    assert!(out.contains("mask: public.customers.email (email)"), "{out}");

    let (ok, out, _) = run(&[
        "check",
        "--policy",
        "tool-policies/sandbox.toml",
        "--principal",
        "alice",
        "--format",
        "json",
        "UPDATE orders SET status = 'x' WHERE id = 1",
    ]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"]["rule"], "finance-team-changes-orders");
    assert_eq!(v["decision"]["approval_timeout"], "15m");

    let (ok, out, _) = run(&[
        "check",
        "--policy",
        "tool-policies/readonly.toml",
        "--tool",
        "query",
        "VACUUM",
    ]);
    assert!(ok);
    assert!(
        out.starts_with("decision: deny by rule `readonly-denies-the-rest`"),
        "{out}"
    );
}

#[test]
fn policy_lint_accepts_every_shipped_file_and_names_the_line_of_a_bad_one() {
    for file in ["default.toml", "readonly.toml", "sandbox.toml"] {
        let path = format!("tool-policies/{file}");
        let (ok, out, err) = run(&["policy", "lint", &path]);
        assert!(ok, "{path}: {err}");
        assert!(out.starts_with("ok: "), "{out}");
    }
    let (_, out, _) = run(&["policy", "lint", "tool-policies/default.toml"]);
    assert!(
        out.contains("1. deny    admin-denied  (tool-policies/default.toml:"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nid = \"a\"\neffect = \"allow\"\ncategoriez = [\"read\"]\n",
    )
    .unwrap();
    let (ok, out, err) = run(&["policy", "lint", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("`{}:4`: unknown key `categoriez`", bad.display())),
        "{err}"
    );

    // `serve` refuses to start with it, before touching any database.
    let (ok, _, err) = run(&[
        "serve",
        "--policy",
        bad.to_str().unwrap(),
        "--database-url",
        "postgres://x@127.0.0.1:1/x",
    ]);
    assert!(!ok);
    assert!(err.contains("unknown key `categoriez`"), "{err}");
}

/// Issue 17 item 2: `check` shows the approval level a call needs, the setting that asks for it and
/// the channels that can give it — and that `[approval.min_channel]` changes it.
#[test]
fn check_shows_the_approval_level_the_policy_requires() {
    let (ok, out, err) = run(&["check", "DELETE FROM t"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "approval: needs `local` level or stronger, by `[approval.min_channel] critical = \"local\"`; channels: console, cli, web, api, slack"
        ),
        "{out}"
    );
    let v = check_json("DELETE FROM t");
    assert_eq!(v["approval"]["level"], "local", "{v}");
    assert_eq!(
        v["approval"]["channels"],
        serde_json::json!(["console", "cli", "web", "api", "slack"])
    );

    let v = check_json("UPDATE t SET x = 1 WHERE id = 1");
    assert_eq!(v["decision"]["effect"], "approve");
    assert_eq!(v["approval"]["level"], "client", "{v}");
    assert_eq!(
        v["approval"]["channels"],
        serde_json::json!(["elicitation", "mcp_app", "console", "cli", "web", "api", "slack"])
    );
    assert!(check_json("SELECT 1").get("approval").is_none(), "nothing to approve");
    let (_, out, _) = run(&["check", "SELECT 1"]);
    assert!(!out.contains("approval:"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        "[approval.min_channel]\ncritical = \"client\"\n\n[[rule]]\nid = \"changes\"\neffect = \"approve\"\ncategories = [\"destructive\"]\n",
    )
    .unwrap();
    let (ok, out, err) = run(&["check", "--policy", policy.to_str().unwrap(), "DELETE FROM t"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("approval: needs `client` level or stronger, by `[approval.min_channel] critical = \"client\"`"),
        "{out}"
    );
}
