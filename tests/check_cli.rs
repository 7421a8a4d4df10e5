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
