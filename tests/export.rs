//! `export` over real MCP against a real Postgres: CSV and JSONL correctness, path escapes refused,
//! a declined approval writes nothing, masks apply in the file, and the audit records the file.

mod common;

use std::time::Duration;

use common::{Answer, Era, Mcp, Reviewer, TestDb, eventually};
use rmcp::model::{ElicitResult, ElicitationAction};
use serde_json::{Value, json};

const SETUP: &str = r#"
CREATE TABLE things (id int PRIMARY KEY, label text, note text, amount numeric, big bigint);
INSERT INTO things VALUES
  (1, 'plain', NULL, 0.1, 9007199254740993),
  (2, 'comma, "quoted"', E'line one\nline two', 12345678901234567890.123456789, -1),
  (3, 'ünïcødé ✓ 漢字', '', 1e-20, 0),
  (4, E'back\\slash', E'tab\there', NULL, NULL);
CREATE TABLE customers (id int, email text);
INSERT INTO customers VALUES (1, 'ada.lovelace@corp.com');
"#;

const POLICY: &str = r#"
[columns."public.customers.email"]
mask = "email"

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]

[[rule]]
id = "exports-need-approval"
effect = "approve"
tools = ["export"]
categories = ["export"]
"#;

#[tokio::test]
async fn csv_and_jsonl_keep_quoting_nulls_newlines_unicode_and_every_digit() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let reviewer = Reviewer::says("approve", None, None);
    let mcp = Mcp::reviewed(&db, POLICY, reviewer.clone(), Era::Legacy).await;
    let sql = "SELECT id, label, note, amount, big FROM things ORDER BY id";
    let out = mcp
        .ok(
            "export",
            json!({"sql": sql, "path": "q3/things.csv", "intent": "hand the finance team the ledger"}),
        )
        .await;
    assert_eq!(out["rows"], json!(4));
    let path = out["path"].as_str().unwrap();
    assert!(path.starts_with(mcp.export_dir().canonicalize().unwrap().to_str().unwrap()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
        0o600,
        "owner-only"
    );
    let csv = std::fs::read(path).unwrap();
    assert_eq!(out["bytes"], json!(csv.len()));
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&csv).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert_eq!(out["sha256"], json!(digest));
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "id,label,note,amount,big\n\
         1,plain,,0.1,9007199254740993\n\
         2,\"comma, \"\"quoted\"\"\",\"line one\nline two\",12345678901234567890.123456789,-1\n\
         3,ünïcødé ✓ 漢字,\"\",0.00000000000000000001,0\n\
         4,back\\slash,tab\there,,\n"
    );
    let prompt = reviewer.prompts().pop().unwrap();
    for needle in [
        "Target: ",
        "q3/things.csv",
        "Columns: id int4, label text, note text, amount numeric, big int8",
        "hand the finance team",
    ] {
        assert!(prompt.contains(needle), "prompt lacks `{needle}`:\n{prompt}");
    }

    let out = mcp
        .ok(
            "export",
            json!({"sql": sql, "path": "things.jsonl", "format": "jsonl", "intent": "same, as JSON"}),
        )
        .await;
    let text = std::fs::read_to_string(out["path"].as_str().unwrap()).unwrap();
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[1]["label"], json!("comma, \"quoted\""));
    assert_eq!(rows[1]["note"], json!("line one\nline two"));
    assert_eq!(rows[2]["label"], json!("ünïcødé ✓ 漢字"));
    assert_eq!(rows[3]["label"], json!("back\\slash"));
    assert_eq!(rows[0]["note"], Value::Null);
    // Numbers keep every digit in the file.
    assert!(
        text.contains("12345678901234567890.123456789") && text.contains("9007199254740993"),
        "{text}"
    );

    // The audit trail has the decision before and the file after.
    let records = mcp.audit_records();
    let outcome = records
        .iter()
        .rev()
        .find(|r| r.outcome.as_ref().is_some_and(|o| o.path.is_some()))
        .unwrap();
    assert_eq!(
        outcome.outcome.as_ref().unwrap().sha256.as_deref(),
        out["sha256"].as_str()
    );
}

#[tokio::test]
async fn path_escapes_writes_and_declines_write_nothing() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let reviewer = Reviewer::says("approve", None, None);
    let mcp = Mcp::reviewed(&db, POLICY, reviewer.clone(), Era::Legacy).await;
    let sql = "SELECT * FROM things";
    for (path, why) in [
        ("../escape.csv", "may not contain `..`"),
        ("/tmp/escape.csv", "must be relative"),
        ("", "`path` is empty"),
    ] {
        let e = mcp
            .err("export", json!({"sql": sql, "path": path, "intent": "x"}))
            .await;
        assert!(e.contains(why), "{path}: {e}");
    }
    let e = mcp
        .err(
            "export",
            json!({"sql": "DELETE FROM things", "path": "d.csv", "intent": "x"}),
        )
        .await;
    assert!(e.contains("only exports one plain read"), "{e}");
    let e = mcp
        .err("export", json!({"sql": sql, "path": "d.csv", "intent": "  "}))
        .await;
    assert!(e.contains("`intent` is required"), "{e}");
    assert!(reviewer.prompts().is_empty(), "nothing was even asked");

    reviewer.set(Answer::Reply(ElicitResult::new(ElicitationAction::Decline)));
    let e = mcp
        .err("export", json!({"sql": sql, "path": "declined.csv", "intent": "x"}))
        .await;
    assert!(e.starts_with("not approved"), "{e}");
    reviewer.set(Answer::Reply(
        ElicitResult::new(ElicitationAction::Accept).with_content(json!({"decision": "dry_run"})),
    ));
    let e = mcp
        .err("export", json!({"sql": sql, "path": "dry.csv", "intent": "x"}))
        .await;
    assert!(e.contains("writes nothing"), "{e}");
    let dir = mcp.export_dir();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(files.is_empty(), "nothing written: {files:?}");

    // An existing file is not replaced unless asked (and the prompt says so).
    reviewer.set(Answer::Reply(
        ElicitResult::new(ElicitationAction::Accept).with_content(json!({"decision": "approve"})),
    ));
    mcp.ok("export", json!({"sql": sql, "path": "once.csv", "intent": "x"}))
        .await;
    let e = mcp
        .err("export", json!({"sql": sql, "path": "once.csv", "intent": "x"}))
        .await;
    assert!(e.contains("already exists"), "{e}");
    mcp.ok(
        "export",
        json!({"sql": "SELECT 1 AS one", "path": "once.csv", "intent": "x", "overwrite": true}),
    )
    .await;
    assert!(
        reviewer
            .prompts()
            .last()
            .unwrap()
            .contains("REPLACES the existing file")
    );
    assert_eq!(std::fs::read_to_string(dir.join("once.csv")).unwrap(), "one\n1\n");
}

#[tokio::test]
async fn masks_apply_in_the_exported_file() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let mcp = Mcp::reviewed(&db, POLICY, Reviewer::says("approve", None, None), Era::Legacy).await;
    for (format, path) in [("csv", "c.csv"), ("jsonl", "c.jsonl")] {
        let out = mcp
            .ok(
                "export",
                json!({"sql": "SELECT id, email, upper(email) AS shout FROM customers", "path": path, "format": format, "intent": "x"}),
            )
            .await;
        let text = std::fs::read_to_string(out["path"].as_str().unwrap()).unwrap();
        assert!(!text.to_lowercase().contains("ada.lovelace"), "{format}: {text}");
        assert!(text.contains("a***@corp.com"), "{format}: {text}");
    }
}

#[tokio::test]
async fn a_cancelled_export_leaves_no_file() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let policy = "[[rule]]\nid = \"exports-run\"\neffect = \"allow\"\ntools = [\"export\"]\ncategories = [\"read\", \"export\"]\n";
    let mcp = Mcp::reviewed(&db, policy, Reviewer::says("deny", None, None), Era::Legacy).await;
    let handle = mcp
        .start_call(
            "export",
            json!({"sql": "SELECT g, md5(g::text) FROM generate_series(1, 100000000) g", "path": "big.csv", "intent": "x"}),
        )
        .await;
    let dir = mcp.export_dir();
    let listing = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    eventually(Duration::from_secs(20), "the export to start", async || {
        listing().iter().any(|f| f.ends_with(".partial")).then_some(())
    })
    .await;
    handle.cancel(Some("stop".into())).await.unwrap();
    eventually(Duration::from_secs(10), "the partial file to go", async || {
        listing().is_empty().then_some(())
    })
    .await;
    assert!(listing().is_empty(), "left behind: {:?}", listing());
    // The outcome is recorded after the file is gone.
    eventually(Duration::from_secs(10), "the call's outcome record", async || {
        mcp.audit_records().pop().filter(|r| r.outcome.is_some()).map(|_| ())
    })
    .await;
    let last = mcp.audit_records().pop().unwrap();
    assert_eq!(
        last.outcome.as_ref().map(|o| o.status.as_str()),
        Some("cancelled"),
        "{last:?}"
    );
}

#[tokio::test]
async fn a_long_export_reports_progress_in_rows_written() {
    let db = TestDb::owned(SETUP, POLICY).await;
    let reviewer = Reviewer::says("approve", None, None);
    let mcp = Mcp::reviewed(&db, POLICY, reviewer.clone(), Era::Legacy).await;
    let out = mcp
        .ok(
            "export",
            json!({"sql": "SELECT g FROM generate_series(1, 50000) g", "path": "p.csv", "intent": "x"}),
        )
        .await;
    assert_eq!(out["rows"], json!(50000));
    // Progress notifications are handled apart from the result: wait for them.
    eventually(Duration::from_secs(2), "three progress notifications", async || {
        (reviewer.progress.lock().unwrap().len() >= 3).then_some(())
    })
    .await;
    let seen = reviewer.progress.lock().unwrap().clone();
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(
        seen.iter()
            .all(|(_, m)| m.as_deref().is_some_and(|m| m.ends_with("rows written"))),
        "{seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "increasing: {seen:?}");
}
