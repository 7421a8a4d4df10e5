//! Who a call is for, past the parser (issue 20): every transaction of a call names the caller in
//! `application_name` and `pgwarden.principal` (transaction-local, so nothing leaks to the next call
//! on the pooled connection), and takes the database role `[[database_role]]` maps the caller to —
//! narrower than the login, which stays the ceiling. Rules with `groups` decide by verified groups,
//! and audit records carry the identity and how it was authenticated.

mod common;

use common::{AGENT, Mcp, TestDb, TestServer};
use pgwarden::{
    approval::{Channel, Route},
    call::{Authn, Caller, Identity, Principal},
    pipeline::{Control, Outcome},
    tools::ToolCall,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SETUP: &str = "CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items VALUES (1, 'one'), (2, 'two');
CREATE TABLE payroll (id int, salary int);
INSERT INTO payroll VALUES (1, 100);";

const WHO: &str = "SELECT current_user::text AS role, session_user::text AS login, \
    current_setting('application_name') AS app, current_setting('pgwarden.principal', true) AS principal";

fn policy(role: &str) -> String {
    format!(
        r#"
[[database_role]]
role = "{role}"
groups = ["analysts"]

[[rule]]
id = "contractors-read-nothing"
effect = "deny"
groups = ["contractors"]

# `current_setting` is classified as reading server settings (export).
[[rule]]
id = "reads"
effect = "allow"
categories = ["read", "export"]
"#
    )
}

fn person(principal: &str, groups: &[&str]) -> Identity {
    Identity {
        principal: Principal::new(principal),
        display: Some(format!("{principal}@example.com")),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        via: Authn::Oauth {
            issuer: "https://idp.example/".into(),
            client_id: Some("client-1".into()),
            token_id: Some("jti-1".into()),
        },
        aliases: vec![],
    }
}

/// A `query` call straight through the pipeline, as `identity`: its rows, or the error the model sees.
async fn query_as(mcp: &Mcp, identity: Option<Identity>, sql: &str) -> Result<Vec<Value>, String> {
    let call: ToolCall = serde_json::from_value(json!({ "tool": "query", "arguments": { "sql": sql } })).unwrap();
    let caller = Caller {
        client_name: Some("identity-test".into()),
        client_version: None,
        identity,
        session_id: "s1".into(),
    };
    let route = Route::client(Channel::Unavailable);
    match mcp
        .pipeline()
        .run(&call, caller, &route, &Control::new(CancellationToken::new()))
        .await
    {
        Ok(Outcome::Done(out)) => {
            let v = out.into_value().unwrap();
            Ok(v["rows"].as_array().cloned().unwrap_or_default())
        }
        Ok(_) => Err("asked for approval".into()),
        Err(e) => Err(e.for_model()),
    }
}

/// Makes `role` (NOLOGIN, SELECT on `items` only) and lets the agent's login take it.
async fn narrow_role(db: &TestDb) -> String {
    let role = format!("{}_analyst", db.name);
    db.admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} NOLOGIN; GRANT SELECT ON items TO {role}; GRANT {role} TO {AGENT}"
        ))
        .await
        .unwrap();
    role
}

#[tokio::test]
async fn each_transaction_names_the_caller_and_takes_the_mapped_role() {
    let db = TestDb::new(SETUP).await;
    let role = narrow_role(&db).await;
    let mcp = TestServer::builder()
        .database(&db)
        .policy(policy(&role))
        .in_process()
        .await;

    // An analyst: tagged, and running as the narrower role.
    let rows = query_as(&mcp, Some(person("alice", &["analysts"])), WHO).await.unwrap();
    assert_eq!(rows, vec![json!([role, AGENT, "pgwarden: alice", "alice"])]);
    let err = query_as(&mcp, Some(person("alice", &["analysts"])), "SELECT * FROM payroll")
        .await
        .unwrap_err();
    assert!(
        err.contains("permission denied"),
        "Postgres enforces the narrower role: {err}"
    );
    // Someone else: tagged, as the login itself.
    let rows = query_as(&mcp, Some(person("bob", &["ops"])), WHO).await.unwrap();
    assert_eq!(rows, vec![json!([AGENT, AGENT, "pgwarden: bob", "bob"])]);
    assert_eq!(
        query_as(&mcp, Some(person("bob", &["ops"])), "SELECT salary FROM payroll")
            .await
            .unwrap(),
        vec![json!([100])]
    );
    // Nobody named: the connection's own name, no principal — nothing left over from earlier calls
    // on the same pooled connections.
    // (Once a connection has seen the setting, Postgres keeps it defined, empty.)
    for _ in 0..4 {
        let rows = query_as(&mcp, None, WHO).await.unwrap();
        assert_eq!(
            rows[0].as_array().unwrap()[..3],
            [json!(AGENT), json!(AGENT), json!("pgwarden")]
        );
        assert!(rows[0][3].is_null() || rows[0][3] == "", "{rows:?}");
    }
    // A group rule decides by the verified groups.
    let err = query_as(&mcp, Some(person("carol", &["contractors"])), "SELECT 1")
        .await
        .unwrap_err();
    assert!(err.contains("contractors-read-nothing"), "{err}");

    // The audit trail says who, in which groups, and how they were authenticated — never a token.
    let records = mcp.audit_records();
    let alice = records
        .iter()
        .find(|r| r.principal.as_deref() == Some("alice"))
        .expect("a record of alice's call");
    assert_eq!(alice.groups, ["analysts"]);
    assert_eq!(alice.display_name.as_deref(), Some("alice@example.com"));
    assert_eq!(
        serde_json::to_value(&alice.authn).unwrap(),
        json!({ "method": "oauth", "issuer": "https://idp.example/", "client_id": "client-1", "token_id": "jti-1" })
    );
}

/// A principal is data, never SQL: quotes, semicolons, backslashes, non-ASCII and control characters
/// reach `pgwarden.principal` verbatim and run nothing; `application_name` gets a printable copy.
#[tokio::test]
async fn a_hostile_principal_name_is_only_ever_a_value() {
    let db = TestDb::new(SETUP).await;
    let mcp = TestServer::builder()
        .database(&db)
        .policy(policy("nobody_mapped"))
        .in_process()
        .await;
    for name in [
        "o'brien",
        "x'); DROP TABLE items; --",
        "\\'; DROP TABLE items; --",
        "$$; DROP TABLE items; $$",
        "\"; RESET ROLE; --",
        "Zoë 🙂\u{7}\t",
        &"long".repeat(40),
    ] {
        let rows = query_as(&mcp, Some(person(name, &[])), WHO).await.unwrap();
        assert_eq!(rows[0][3], json!(name), "{name:?}");
        let app = rows[0][2].as_str().unwrap();
        assert!(app.starts_with("pgwarden: ") && app.len() <= 63, "{app:?}");
        assert!(app.chars().all(|c| c.is_ascii_graphic() || c == ' '), "{app:?}");
    }
    assert_eq!(db.column::<i64>("SELECT count(*) FROM items").await, [2]);
}

/// A mapping to a role the login cannot take fails the call in Postgres: nothing runs as the login.
#[tokio::test]
async fn a_role_the_login_cannot_take_refuses_the_call() {
    let db = TestDb::new(SETUP).await;
    let role = format!("{}_other", db.name);
    db.admin()
        .await
        .batch_execute(&format!("CREATE ROLE {role} NOLOGIN"))
        .await
        .unwrap();
    let mcp = TestServer::builder()
        .database(&db)
        .policy(policy(&role))
        .in_process()
        .await;
    let err = query_as(&mcp, Some(person("alice", &["analysts"])), "SELECT 1")
        .await
        .unwrap_err();
    assert!(err.contains("permission denied to set role"), "{err}");
}
