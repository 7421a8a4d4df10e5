//! Human approval over real MCP against a real Postgres: a scripted reviewer answers the prompts in
//! both protocol eras; only an explicit approve changes data, and what runs is what was shown.

mod common;

use std::time::Duration;

use common::{Answer, Era, Mcp, Reviewer, TestDb, edit_policy, eventually, text};
use rmcp::model::{CallToolRequestParams, CallToolResponse, ElicitResult, ElicitationAction};
use serde_json::{Value, json};

const SETUP: &str = "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);
                     INSERT INTO orders VALUES (1, 'open'), (2, 'open'), (3, 'shipped');";

const POLICY: &str = include_str!("../tool-policies/default.toml");

const UPDATE: &str = "UPDATE orders SET status = 'cancelled' WHERE status = 'open'";

async fn statuses(db: &TestDb) -> Vec<String> {
    db.column("SELECT status FROM orders ORDER BY id").await
}

fn untouched() -> Vec<String> {
    vec!["open".into(), "open".into(), "shipped".into()]
}

#[tokio::test]
async fn an_approved_update_commits_and_the_prompt_shows_what_a_person_needs() {
    for era in [Era::Legacy, Era::Modern] {
        let db = TestDb::new(SETUP).await;
        let reviewer = Reviewer::says("approve", None, Some("customer asked"));
        let mcp = Mcp::reviewed(&db, POLICY, reviewer.clone(), era).await;
        let out = mcp
            .ok(
                "query",
                json!({"sql": UPDATE, "intent": "cancel the open orders of a churned customer"}),
            )
            .await;
        assert_eq!(out["change"]["rows_affected"], json!(2), "{era:?}: {out}");
        assert_eq!(out["change"]["committed"], json!(true));
        assert_eq!(out["change"]["reviewer_reason"], json!("customer asked"));
        assert!(
            out["change"]["approved_under"]
                .as_str()
                .unwrap()
                .contains("changes-need-approval")
        );
        assert_eq!(statuses(&db).await, ["cancelled", "cancelled", "shipped"], "{era:?}");

        let prompts = reviewer.prompts();
        assert_eq!(prompts.len(), 1, "{era:?}: one prompt per call");
        let p = &prompts[0];
        for needle in [
            "approve this write",
            "UPDATE on public.orders",
            "risk medium",
            "rule `changes-need-approval` (test.toml:",
            "Estimated rows: ~",
            "Tables: public.orders",
            "Requested by: client pgwarden-test-reviewer 1.0 (as it names itself)",
            "Intent (the model's words, unverified): cancel the open orders of a churned customer",
            "Why: updates `orders`",
            "SQL:\nUPDATE orders\nSET\n  status = 'cancelled'\nWHERE\n  status = 'open'",
        ] {
            assert!(p.contains(needle), "{era:?}: prompt lacks `{needle}`:\n{p}");
        }
    }
}

/// Issue 17 item 7: a 2025-06-18 client gets the choice as `enum` + `enumNames` (a titled `oneOf`
/// may render as a free-text box there); later protocols get the titled enum. Never an empty form.
#[tokio::test]
async fn each_protocol_gets_the_approval_choice_it_can_render() {
    use rmcp::model::ProtocolVersion;
    for (era, protocol, titled) in [
        (Era::Legacy, ProtocolVersion::V_2025_06_18, false),
        (Era::Legacy, ProtocolVersion::V_2025_11_25, true),
        (Era::Modern, ProtocolVersion::V_2026_07_28, true),
    ] {
        let db = TestDb::new(SETUP).await;
        let mut reviewer = Reviewer::says("approve", None, None);
        reviewer.protocol = protocol.clone();
        let mcp = Mcp::reviewed(&db, POLICY, reviewer.clone(), era).await;
        let out = mcp.ok("query", json!({"sql": UPDATE, "intent": "tidy up"})).await;
        assert_eq!(out["change"]["committed"], json!(true), "{protocol}: {out}");
        let forms = reviewer.forms.lock().unwrap().clone();
        assert_eq!(forms.len(), 1, "{protocol}");
        let form = &forms[0];
        assert_eq!(form["required"], json!(["decision"]), "{protocol}: {form}");
        let decision = &form["properties"]["decision"];
        if titled {
            assert_eq!(
                decision["oneOf"][0],
                json!({"const": "approve", "title": "Approve: run it and commit"})
            );
            assert!(decision.get("enumNames").is_none(), "{protocol}: {decision}");
        } else {
            assert_eq!(
                decision["enum"],
                json!(["approve", "dry_run", "deny"]),
                "{protocol}: {decision}"
            );
            assert_eq!(decision["enumNames"][2], json!("Deny: do not run it"));
            assert!(decision.get("oneOf").is_none(), "{protocol}: {decision}");
        }
    }
}

#[tokio::test]
async fn deny_decline_cancel_and_junk_answers_change_nothing() {
    let db = TestDb::new(SETUP).await;
    let reviewer = Reviewer::says("deny", None, Some("not during the audit"));
    let mcp = Mcp::reviewed(&db, POLICY, reviewer.clone(), Era::Legacy).await;
    let e = mcp.err("query", json!({"sql": UPDATE})).await;
    assert!(
        e.starts_with("not approved: the reviewer denied it (reviewer's reason: \"not during the audit\")"),
        "{e}"
    );
    assert!(e.contains("Nothing was executed"), "{e}");
    for (answer, why) in [
        (ElicitResult::new(ElicitationAction::Decline), "declined"),
        (ElicitResult::new(ElicitationAction::Cancel), "dismissed"),
        (
            ElicitResult::new(ElicitationAction::Accept).with_content(json!({"decision": "yes please"})),
            "no valid decision",
        ),
        (ElicitResult::new(ElicitationAction::Accept), "no valid decision"),
    ] {
        reviewer.set(Answer::Reply(answer));
        let e = mcp.err("query", json!({"sql": UPDATE})).await;
        assert!(e.starts_with("not approved:") && e.contains(why), "{e}");
    }
    assert_eq!(statuses(&db).await, untouched());
}

#[tokio::test]
async fn a_dry_run_reports_the_rows_and_rolls_back() {
    let db = TestDb::new(SETUP).await;
    let reviewer = Reviewer::says("dry_run", None, None);
    let mcp = Mcp::reviewed(&db, POLICY, reviewer, Era::Legacy).await;
    let out = mcp
        .ok(
            "query",
            json!({"sql": "DELETE FROM orders WHERE status = 'open' RETURNING id"}),
        )
        .await;
    assert_eq!(out["change"]["rows_affected"], json!(2));
    assert_eq!(out["change"]["committed"], json!(false));
    assert_eq!(out["change"]["dry_run"], json!(true));
    assert_eq!(out["rows"], json!([[1], [2]]), "RETURNING rows of the dry run");
    assert_eq!(statuses(&db).await, untouched());
}

#[tokio::test]
async fn the_reviewers_row_limit_rolls_back_a_larger_change() {
    let db = TestDb::new(SETUP).await;
    let reviewer = Reviewer::says("approve", Some(1), None);
    let mcp = Mcp::reviewed(&db, POLICY, reviewer.clone(), Era::Legacy).await;
    let e = mcp.err("query", json!({"sql": UPDATE})).await;
    assert!(
        e.contains("touched 2 rows, more than the reviewer's limit of 1; it was rolled back and nothing changed"),
        "{e}"
    );
    assert_eq!(statuses(&db).await, untouched());
    reviewer.set(Answer::Reply(
        ElicitResult::new(ElicitationAction::Accept)
            .with_content(json!({"decision": "approve", "max_rows_affected": 2})),
    ));
    let out = mcp.ok("query", json!({"sql": UPDATE})).await;
    assert_eq!(out["change"]["row_limit"], json!(2));
    assert_eq!(statuses(&db).await, ["cancelled", "cancelled", "shipped"]);
}

#[tokio::test]
async fn a_client_without_prompts_is_refused_with_what_to_do() {
    let db = TestDb::new(SETUP).await;
    let mut reviewer = Reviewer::says("approve", None, None);
    reviewer.elicitation = false;
    let mcp = Mcp::reviewed(&db, POLICY, reviewer.clone(), Era::Legacy).await;
    let e = mcp.err("query", json!({"sql": UPDATE})).await;
    assert!(e.contains("this client cannot show approval prompts"), "{e}");
    assert!(e.contains("a reply in the chat cannot approve it"), "{e}");
    assert!(e.contains("The operator can allow it in the policy"), "{e}");
    assert!(reviewer.prompts().is_empty(), "never asked");
    assert_eq!(statuses(&db).await, untouched());
}

#[tokio::test]
async fn no_answer_within_the_approval_timeout_runs_nothing() {
    let db = TestDb::new(SETUP).await;
    let policy = edit_policy(POLICY).set(r#"defaults.approval_timeout = "1s""#).toml();
    let reviewer = Reviewer::new(Answer::Hang);
    let mcp = Mcp::reviewed(&db, &policy, reviewer, Era::Legacy).await;
    let e = mcp.err("query", json!({"sql": UPDATE})).await;
    assert!(e.contains("no answer within 1s"), "{e}");
    assert_eq!(statuses(&db).await, untouched());
}

#[tokio::test]
async fn a_tool_call_cancelled_while_the_prompt_is_open_runs_nothing() {
    let db = TestDb::new(SETUP).await;
    // The reviewer says yes once the call was cancelled, whatever happened meanwhile.
    let yes = ElicitResult::new(ElicitationAction::Accept).with_content(json!({"decision": "approve"}));
    let reviewer = Reviewer::new(Answer::LateOnCue(yes));
    let mcp = Mcp::reviewed(&db, POLICY, reviewer.clone(), Era::Legacy).await;
    let handle = mcp.start_call("query", json!({"sql": UPDATE})).await;
    eventually(Duration::from_secs(2), "the prompt", async || {
        (!reviewer.prompts().is_empty()).then_some(())
    })
    .await;
    assert_eq!(reviewer.prompts().len(), 1, "the prompt is open");
    handle.cancel(Some("user pressed stop".into())).await.unwrap();
    // The approval arrives after the call was cancelled: nothing may run.
    reviewer.cue();
    eventually(Duration::from_secs(2), "the late approval", async || {
        (reviewer.answered() == 1).then_some(())
    })
    .await;
    mcp.round_trip().await;
    assert_eq!(statuses(&db).await, untouched());
    // The server is still serving.
    mcp.ok("query", json!({"sql": "SELECT 1"})).await;
}

#[tokio::test]
async fn the_2026_state_is_bound_to_the_action_and_used_once() {
    let db = TestDb::new(SETUP).await;
    let reviewer = Reviewer::says("approve", None, None);
    let mcp = Mcp::reviewed(&db, POLICY, reviewer, Era::Modern).await;
    let call = |sql: &str| {
        CallToolRequestParams::new("query").with_arguments(json!({"sql": sql}).as_object().cloned().unwrap())
    };
    let approve = json!({"approval": {"action": "accept", "content": {"decision": "approve"}}});
    let responses = |v: &Value| v.as_object().unwrap().clone().into_iter().collect();

    let CallToolResponse::InputRequired(first) = mcp.client.call_tool_once(call(UPDATE)).await.unwrap() else {
        panic!("expected input_required");
    };
    let state = first.request_state.clone().expect("sealed state");
    assert!(first.input_requests.as_ref().unwrap().contains_key("approval"));

    let once = |params: CallToolRequestParams| async {
        match mcp.client.call_tool_once(params).await.unwrap() {
            CallToolResponse::Complete(r) => r,
            _ => panic!("expected a final result"),
        }
    };
    // An answer without our state, a state without an answer, a forged state, and a state sealed for
    // a different statement: all refused, nothing runs.
    let mut p = call(UPDATE);
    p.input_responses = Some(responses(&approve));
    let r = once(p).await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).contains("an answer without pgwarden's request state"),
        "{}",
        text(&r)
    );
    let mut p = call(UPDATE);
    p.request_state = Some(state.clone());
    assert!(text(&once(p).await).contains("a request state but no answer"));
    let mut p = call(UPDATE);
    p.request_state = Some(format!("{state}x"));
    p.input_responses = Some(responses(&approve));
    assert!(text(&once(p).await).contains("the approval state is not valid"));
    let mut p = call("DELETE FROM orders WHERE id = 3");
    p.request_state = Some(state.clone());
    p.input_responses = Some(responses(&approve));
    assert!(
        text(&once(p).await).contains("the approval state is not valid"),
        "bound to the exact SQL"
    );
    assert_eq!(statuses(&db).await, untouched());

    // The real answer with the real state runs it, once.
    let mut p = call(UPDATE);
    p.request_state = Some(state.clone());
    p.input_responses = Some(responses(&approve));
    let r = once(p.clone()).await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(statuses(&db).await, ["cancelled", "cancelled", "shipped"]);
    let r = once(p).await;
    assert!(text(&r).contains("already used"), "{}", text(&r));

    // The SDK's own retry loop (answering through the handler) works end to end.
    let out = mcp
        .ok(
            "query",
            json!({"sql": "UPDATE orders SET status = 'open' WHERE id = 3"}),
        )
        .await;
    assert_eq!(out["change"]["committed"], json!(true));
}

#[tokio::test]
async fn a_policy_that_allows_a_write_runs_it_without_a_prompt() {
    let db = TestDb::new(SETUP).await;
    let policy = "[[rule]]\nid = \"writes-run\"\neffect = \"allow\"\ncategories = [\"write\"]\n";
    let reviewer = Reviewer::says("deny", None, None);
    let mcp = Mcp::reviewed(&db, policy, reviewer.clone(), Era::Legacy).await;
    let out = mcp.ok("query", json!({"sql": UPDATE})).await;
    assert_eq!(out["change"]["committed"], json!(true));
    assert!(out["change"].get("approved_under").is_none());
    assert!(reviewer.prompts().is_empty());
    assert_eq!(statuses(&db).await, ["cancelled", "cancelled", "shipped"]);
}

#[tokio::test]
async fn a_statement_that_cannot_run_in_a_transaction_is_refused_with_the_reason() {
    let db = TestDb::new(SETUP).await;
    let reviewer = Reviewer::says("approve", None, None);
    let mcp = Mcp::reviewed(&db, POLICY, reviewer, Era::Legacy).await;
    let e = mcp
        .err(
            "query",
            json!({"sql": "CREATE INDEX CONCURRENTLY orders_status_idx ON orders (status)"}),
        )
        .await;
    assert!(e.contains("25001") && e.contains("cannot run in one"), "{e}");
    let indexes = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_status_idx'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(indexes.get::<_, i64>(0), 0);
}
