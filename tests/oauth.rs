//! `pgwarden serve --http` as an OAuth 2.1 resource server (issue 20), against a real OpenID
//! provider (`oidc-provider`): RFC 9728 metadata and 401 challenges pointing to it; tokens for this
//! resource accepted and their person seen in the prompt, the trail and Postgres; tokens for another
//! audience, from another issuer, expired or without a tool's scope refused; a rotated signing key
//! picked up without a restart.

mod common;

use std::time::Duration;

use common::{
    Era, Reviewer, TestDb, TestServer, http,
    http::{HttpServer, call},
    oidc::Oidc,
    text,
};
use serde_json::{Value, json};

const SETUP: &str = "CREATE TABLE orders (id int PRIMARY KEY, status text);
INSERT INTO orders VALUES (1, 'open');";

const POLICY: &str = r#"
[[rule]]
id = "dba-changes"
effect = "approve"
categories = ["write", "privilege"]
groups = ["dba"]

[[rule]]
id = "reads"
effect = "allow"
categories = ["read", "export"]
"#;

const RESOURCE: &str = "http://127.0.0.1/mcp";

fn config(issuer: &str) -> String {
    format!(
        r#"
[oauth]
issuer = "{issuer}"
required_scopes = ["pgwarden"]
leeway_secs = 0
allow_insecure_http = true

[oauth.tool_scopes]
grant = ["pgwarden", "pgwarden:grant"]
"#
    )
}

async fn server(db: &TestDb, oidc: &Oidc, dir: &tempfile::TempDir) -> HttpServer {
    let builder = TestServer::builder().database(db).policy(POLICY);
    HttpServer::start(builder, dir.path(), RESOURCE, &config(&oidc.issuer)).await
}

/// A raw `initialize` with `token`: the status and the `WWW-Authenticate` challenge.
async fn initialize(s: &HttpServer, token: Option<&str>) -> (u16, String) {
    post(s, token, r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#).await
}

async fn post(s: &HttpServer, token: Option<&str>, body: &str) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let r = http(s.port(), "POST", "/mcp", &headers, Some(body)).await;
    (r.status, r.headers.get("www-authenticate").cloned().unwrap_or_default())
}

#[tokio::test]
async fn tokens_from_the_issuer_for_this_resource_identify_their_person() {
    let db = TestDb::new(SETUP).await;
    let oidc = Oidc::start().await;
    let dir = tempfile::Builder::new()
        .prefix("pgw-oauth-")
        .tempdir_in("/tmp")
        .unwrap();
    let s = server(&db, &oidc, &dir).await;

    // Discovery: metadata naming the issuer, and a challenge pointing to it.
    let r = http(s.port(), "GET", "/.well-known/oauth-protected-resource/mcp", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let meta: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(meta["resource"], RESOURCE);
    assert_eq!(meta["authorization_servers"], json!([oidc.issuer]));
    let (status, challenge) = initialize(&s, None).await;
    assert_eq!(status, 401);
    assert!(
        challenge.contains("resource_metadata=\"http://127.0.0.1/.well-known/oauth-protected-resource/mcp\""),
        "{challenge}"
    );

    // The right token: alice, as the provider says, in the prompt, the trail and Postgres.
    let token = oidc.token("alice", RESOURCE, "pgwarden pgwarden:grant").await;
    let reviewer = Reviewer::says("approve", None, None);
    let alice = s.connect(reviewer.clone(), &token, Era::Legacy).await;
    let r = alice
        .call_tool(call(
            "query",
            json!({ "sql": "SELECT current_setting('pgwarden.principal') AS p, current_setting('application_name') AS a" }),
        ))
        .await
        .unwrap();
    assert_eq!(
        r.structured_content.unwrap()["rows"],
        json!([["alice", "pgwarden: alice"]])
    );
    let r = alice
        .call_tool(call(
            "query",
            json!({ "sql": "UPDATE orders SET status = 'shipped' WHERE id = 1" }),
        ))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let prompt = reviewer.prompts().pop().unwrap();
    assert!(
        prompt.contains(&format!(
            "Requested by: alice (alice@example.com; groups dba; OAuth token from {})",
            oidc.issuer
        )),
        "{prompt}"
    );
    let records = s.raw.audit_records();
    let change = records
        .iter()
        .find(|r| r.sql.as_deref().is_some_and(|q| q.starts_with("UPDATE")))
        .unwrap();
    assert_eq!(change.principal.as_deref(), Some("alice"));
    assert_eq!(change.groups, ["dba"]);
    let authn = serde_json::to_value(&change.authn).unwrap();
    assert_eq!(authn["method"], "oauth");
    assert_eq!(authn["issuer"], json!(oidc.issuer));
    assert_eq!(authn["client_id"], "alice");
    assert!(authn["token_id"].as_str().is_some_and(|j| !j.is_empty()));
    let trail = std::fs::read_to_string(s.raw.audit_path()).unwrap();
    assert!(
        !trail.contains(&token) && !s.raw.stderr().contains(&token),
        "the token is never kept"
    );

    // The 2026-07-28 era over HTTP with the same token.
    let modern = Reviewer::says("approve", None, None);
    let alice26 = s.connect(modern.clone(), &token, Era::Modern).await;
    let r = alice26
        .call_tool(call(
            "query",
            json!({ "sql": "UPDATE orders SET status = 'open' WHERE id = 1" }),
        ))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert!(
        modern
            .prompts()
            .pop()
            .unwrap()
            .contains("alice (alice@example.com; groups dba")
    );
}

#[tokio::test]
async fn wrong_audience_issuer_expiry_or_scope_is_refused() {
    let db = TestDb::new(SETUP).await;
    let oidc = Oidc::start().await;
    let other = Oidc::start().await;
    let dir = tempfile::Builder::new()
        .prefix("pgw-oauth-")
        .tempdir_in("/tmp")
        .unwrap();
    let s = server(&db, &oidc, &dir).await;

    let good = oidc.token("bob", RESOURCE, "pgwarden").await;
    assert_eq!(initialize(&s, Some(&good)).await.0, 200);
    for (what, token) in [
        (
            "another audience",
            oidc.token("bob", "http://127.0.0.1/other", "pgwarden").await,
        ),
        ("another issuer", other.token("bob", RESOURCE, "pgwarden").await),
        ("tampered", format!("{}x", &good[..good.len() - 1])),
        ("not a JWT", "pgw_static-token".to_string()),
    ] {
        let (status, challenge) = initialize(&s, Some(&token)).await;
        assert_eq!(status, 401, "{what}");
        assert!(challenge.contains("invalid_token"), "{what}: {challenge}");
    }
    let brief = oidc.token("brief", RESOURCE, "pgwarden").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(initialize(&s, Some(&brief)).await.0, 401, "expired");

    // bob's token lacks `pgwarden:grant`: a grant call is refused before pgwarden sees it, with
    // the scopes it needs; other tools still work.
    let grant = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"grant","arguments":{"action":"grant","privileges":["SELECT"],"object_type":"table","objects":["orders"],"role":"x"}}}"#;
    let (status, challenge) = post(&s, Some(&good), grant).await;
    assert_eq!(status, 403);
    assert!(
        challenge.contains("insufficient_scope") && challenge.contains("pgwarden:grant"),
        "{challenge}"
    );
}

/// The provider switches signing keys: tokens signed with the new key are accepted without a
/// restart, once pgwarden refetches the key set (at most once a minute, so an unknown `kid` cannot
/// make it hammer the issuer).
#[tokio::test]
async fn a_rotated_signing_key_is_picked_up_without_a_restart() {
    let db = TestDb::new(SETUP).await;
    let oidc = Oidc::start().await;
    let dir = tempfile::Builder::new()
        .prefix("pgw-oauth-")
        .tempdir_in("/tmp")
        .unwrap();
    let s = server(&db, &oidc, &dir).await;
    let before = oidc.token("bob", RESOURCE, "pgwarden").await;
    assert_eq!(initialize(&s, Some(&before)).await.0, 200);
    oidc.rotate().await;
    let after = oidc.token("bob", RESOURCE, "pgwarden").await;
    assert_ne!(before, after);
    common::eventually(Duration::from_secs(90), "the new key to be accepted", async || {
        (initialize(&s, Some(&after)).await.0 == 200).then_some(())
    })
    .await;
}
