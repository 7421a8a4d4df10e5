//! `grant` over real MCP against a real Postgres: grant and revoke on each object type, unknown
//! names refused, injection through any field changes nothing, a declined prompt changes nothing,
//! and the prompt shows the statement and the privileges before → after.

mod common;

use common::{Answer, Era, Mcp, Reviewer, TestDb, edit_policy};
use rmcp::model::{ElicitResult, ElicitationAction};
use serde_json::{Value, json};

const SETUP: &str = r#"
CREATE SCHEMA app;
CREATE TABLE app.orders (id int);
CREATE TABLE app.items (id int);
CREATE TABLE app."Mixed""Name" (id int);
CREATE SEQUENCE app.seq;
CREATE FUNCTION app.f(int) RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION app.f(text) RETURNS int LANGUAGE sql AS 'SELECT 2';
CREATE FUNCTION app.g() RETURNS int LANGUAGE sql AS 'SELECT 3';
REVOKE EXECUTE ON FUNCTION app.f(int), app.f(text), app.g() FROM PUBLIC;
"#;

/// The default policy, but approved in the client's prompt even at critical risk (grants are
/// critical; by default those go to the local review console, which these tests do not play).
fn policy() -> String {
    edit_policy(include_str!("../tool-policies/default.toml"))
        .add(r#"approval.min_channel.critical = "client""#)
        .toml()
}

async fn setup() -> TestDb {
    let db = TestDb::new(SETUP).await;
    // Roles are cluster-wide and the tests run in parallel: the first one creates it.
    if let Err(e) = db.admin().await.batch_execute("CREATE ROLE analyst").await {
        let code = e.code().map(|c| c.code().to_string());
        assert!(
            matches!(code.as_deref(), Some("42710" | "23505")),
            "creating the test role: {e:?}"
        );
    }
    db
}

async fn has(db: &TestDb, check: &str) -> bool {
    db.client()
        .await
        .query_one(&format!("SELECT {check}"), &[])
        .await
        .unwrap()
        .get(0)
}

fn call(action: &str, privileges: &[&str], object_type: &str, objects: &[&str], role: &str) -> Value {
    json!({"action": action, "privileges": privileges, "object_type": object_type, "objects": objects,
           "role": role, "intent": "the analyst needs it for the quarterly report"})
}

#[tokio::test]
async fn grant_and_revoke_take_effect_on_every_object_type() {
    let db = setup().await;
    let reviewer = Reviewer::says("approve", None, None);
    let mcp = Mcp::reviewed(&db, &policy(), reviewer.clone(), Era::Legacy).await;
    let name = db.name.clone();
    let cases: Vec<(&str, &[&str], Vec<&str>, String)> = vec![
        (
            "table",
            &["SELECT"],
            vec!["app.orders"],
            "has_table_privilege('analyst', 'app.orders', 'SELECT')".into(),
        ),
        (
            "schema",
            &["USAGE"],
            vec!["app"],
            "has_schema_privilege('analyst', 'app', 'USAGE')".into(),
        ),
        (
            "sequence",
            &["USAGE"],
            vec!["app.seq"],
            "has_sequence_privilege('analyst', 'app.seq', 'USAGE')".into(),
        ),
        (
            "function",
            &["EXECUTE"],
            vec!["app.f(integer)"],
            "has_function_privilege('analyst', 'app.f(int)', 'EXECUTE')".into(),
        ),
        (
            "database",
            &["CONNECT"],
            vec![name.as_str()],
            format!("has_database_privilege('analyst', '{name}', 'CONNECT')"),
        ),
        (
            "all_tables_in_schema",
            &["INSERT"],
            vec!["app"],
            "has_table_privilege('analyst', 'app.items', 'INSERT')".into(),
        ),
    ];
    for (object_type, privs, objects, check) in &cases {
        if *object_type == "database" {
            db.admin()
                .await
                .batch_execute(&format!("REVOKE CONNECT ON DATABASE {name} FROM PUBLIC"))
                .await
                .unwrap();
        }
        assert!(!has(&db, check).await, "{object_type}: not yet");
        let out = mcp
            .ok("grant", call("grant", privs, object_type, objects, "analyst"))
            .await;
        assert_eq!(out["committed"], json!(true), "{out}");
        assert!(has(&db, check).await, "{object_type}: granted ({out})");
        let out = mcp
            .ok("grant", call("revoke", privs, object_type, objects, "analyst"))
            .await;
        assert!(!has(&db, check).await, "{object_type}: revoked ({out})");
    }
    let prompt = reviewer.prompts().first().unwrap().clone();
    for needle in [
        "approve this privilege",
        "GRANT SELECT ON TABLE \"app\".\"orders\" TO \"analyst\"",
        "app.orders: none → SELECT",
        "the analyst needs it for the quarterly report",
        "risk critical",
    ] {
        assert!(prompt.contains(needle), "prompt lacks `{needle}`:\n{prompt}");
    }
    // The audit trail has the statement and the privileges before and after.
    let records = mcp.audit_records();
    let decision = records
        .iter()
        .find(|r| r.tool.as_deref() == Some("grant") && r.details.is_some())
        .unwrap();
    let d = decision.details.as_ref().unwrap();
    assert_eq!(
        d["statement"],
        json!("GRANT SELECT ON TABLE \"app\".\"orders\" TO \"analyst\"")
    );
    assert_eq!(d["before"]["app.orders"], json!([]));
    let outcome = records
        .iter()
        .find(|r| r.call_id == decision.call_id && r.outcome.is_some())
        .unwrap();
    assert_eq!(
        outcome.details.as_ref().unwrap()["after"]["app.orders"],
        json!(["SELECT"])
    );
    // Exact names reach even awkward objects, quoted correctly.
    mcp.ok(
        "grant",
        call("grant", &["SELECT"], "table", &["app.Mixed\"Name"], "analyst"),
    )
    .await;
    assert!(has(&db, "has_table_privilege('analyst', 'app.\"Mixed\"\"Name\"', 'SELECT')").await);
}

#[tokio::test]
async fn public_all_and_grant_option_are_called_out_and_a_decline_changes_nothing() {
    let db = setup().await;
    let reviewer = Reviewer::new(Answer::Reply(ElicitResult::new(ElicitationAction::Decline)));
    let mcp = Mcp::reviewed(&db, &policy(), reviewer.clone(), Era::Legacy).await;
    let mut args = call("grant", &["ALL"], "table", &["app.orders"], "PUBLIC");
    args["with_grant_option"] = json!(false);
    let e = mcp.err("grant", args).await;
    assert!(e.starts_with("not approved"), "{e}");
    let mut args = call("grant", &["SELECT"], "table", &["app.orders"], "analyst");
    args["with_grant_option"] = json!(true);
    mcp.err("grant", args).await;
    let prompts = reviewer.prompts();
    assert!(
        prompts[0].contains("⚠ PUBLIC") && prompts[0].contains("⚠ ALL PRIVILEGES"),
        "{}",
        prompts[0]
    );
    assert!(prompts[1].contains("⚠ WITH GRANT OPTION"), "{}", prompts[1]);
    assert!(!has(&db, "has_table_privilege('public', 'app.orders', 'SELECT')").await);
    assert!(!has(&db, "has_table_privilege('analyst', 'app.orders', 'SELECT')").await);
}

#[tokio::test]
async fn unknown_names_and_injection_attempts_change_nothing() {
    let db = setup().await;
    let reviewer = Reviewer::says("approve", None, None);
    let mcp = Mcp::reviewed(&db, &policy(), reviewer.clone(), Era::Legacy).await;
    let bad: Vec<(Value, &str)> = vec![
        (
            call("grant", &["SELECT"], "table", &["app.orders"], "nobody"),
            "role `nobody` does not exist",
        ),
        (
            call("grant", &["SELECT"], "table", &["app.nope"], "analyst"),
            "table `app.nope` does not exist",
        ),
        (
            call(
                "grant",
                &["SELECT"],
                "table",
                &["app.orders"],
                "analyst; DROP TABLE app.orders",
            ),
            "does not exist",
        ),
        (
            call(
                "grant",
                &["SELECT"],
                "table",
                &["app.orders; DROP TABLE app.items"],
                "analyst",
            ),
            "does not exist",
        ),
        (
            call(
                "grant",
                &["SELECT"],
                "table",
                &["app.orders\" TO PUBLIC; --"],
                "analyst",
            ),
            "does not exist",
        ),
        (
            call(
                "grant",
                &["SELECT ON app.items TO analyst; --"],
                "table",
                &["app.orders"],
                "analyst",
            ),
            "is not a privilege",
        ),
        (
            call("grant", &["USAGE"], "table", &["app.orders"], "analyst"),
            "is not a privilege on a table",
        ),
        // Cyrillic "а" in "аnalyst" and "оrders": look-alikes are different names.
        (
            call("grant", &["SELECT"], "table", &["app.orders"], "\u{0430}nalyst"),
            "does not exist",
        ),
        (
            call("grant", &["SELECT"], "table", &["app.\u{043E}rders"], "analyst"),
            "does not exist",
        ),
        (
            call("grant", &["EXECUTE"], "function", &["app.f"], "analyst"),
            "is overloaded",
        ),
        (
            call("grant", &["SELECT"], "table", &[], "analyst"),
            "`objects` is empty",
        ),
    ];
    for (args, why) in bad {
        let e = mcp.err("grant", args.clone()).await;
        assert!(e.contains(why), "{args}: {e}");
    }
    let mut no_intent = call("grant", &["SELECT"], "table", &["app.orders"], "analyst");
    no_intent["intent"] = json!("");
    assert!(mcp.err("grant", no_intent).await.contains("`intent` is required"));
    assert!(reviewer.prompts().is_empty(), "nothing reached a person");
    for check in [
        "has_table_privilege('analyst', 'app.orders', 'SELECT')",
        "has_table_privilege('public', 'app.orders', 'SELECT')",
        "to_regclass('app.items') IS NOT NULL AND to_regclass('app.orders') IS NOT NULL",
    ] {
        let want = check.starts_with("to_regclass");
        assert_eq!(has(&db, check).await, want, "{check}");
    }
}

#[tokio::test]
async fn raw_grant_through_query_still_needs_approval() {
    let db = setup().await;
    let mcp = Mcp::with_policy(&db, &policy(), None).await;
    let e = mcp
        .err("query", json!({"sql": "GRANT SELECT ON app.orders TO analyst"}))
        .await;
    assert!(
        e.contains("classified as privilege") && e.starts_with("not approved"),
        "{e}"
    );
    assert!(!has(&db, "has_table_privilege('analyst', 'app.orders', 'SELECT')").await);
}

/// Issue 16, item 6: a real role named `Public` was turned into the keyword PUBLIC (every role).
/// Only `PUBLIC`/`public` mean every role; `Public` is that role, and the prompt says so.
#[tokio::test]
async fn a_role_named_public_in_another_case_is_that_role_not_everyone() {
    let db = setup().await;
    if let Err(e) = db.admin().await.batch_execute("CREATE ROLE \"Public\"").await {
        let code = e.code().map(|c| c.code().to_string());
        assert!(matches!(code.as_deref(), Some("42710" | "23505")), "{e:?}");
    }
    let reviewer = Reviewer::says("approve", None, None);
    let mcp = Mcp::reviewed(&db, &policy(), reviewer.clone(), Era::Legacy).await;
    let out = mcp
        .ok("grant", call("grant", &["SELECT"], "table", &["app.items"], "Public"))
        .await;
    assert!(out["statement"].as_str().unwrap().ends_with("TO \"Public\""), "{out}");
    let prompt = reviewer.prompts().pop().unwrap();
    assert!(prompt.contains("not PUBLIC"), "{prompt}");
    assert!(!prompt.contains("⚠ PUBLIC"), "{prompt}");
    assert!(has(&db, "has_table_privilege('Public', 'app.items', 'SELECT')").await);
    assert!(!has(&db, "has_table_privilege('public', 'app.items', 'SELECT')").await);
}
