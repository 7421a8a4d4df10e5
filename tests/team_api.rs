//! The approvals API (issue 21) against the real `pgwarden serve --http` and a real Postgres: a
//! call by alice waits until another reviewer decides through `/api/v1/approvals` or
//! `pgwarden approvals --server`; nobody approves their own call; `min_approvals = 2` needs two
//! different people; a reviewer the rule does not name is refused; every refusal is in the trail;
//! and what runs, runs once.

mod common;

use std::time::Duration;

use common::{
    Era, TestDb, TestServer,
    http::HttpServer,
    team::{Api, Team, statuses},
};
use rmcp::{Peer, RoleClient};
use serde_json::{Value, json};

const SETUP: &str = "CREATE TABLE orders (id int PRIMARY KEY, status text);
INSERT INTO orders VALUES (1, 'open'), (2, 'open');";

/// Changes wait for bob or a dba (never the requester); reads run. `wait_budget` returns the
/// pending approval at once.
const POLICY: &str = r#"
[approval]
wait_budget = "1s"

[[rule]]
id = "team-reviewed-changes"
effect = "approve"
categories = ["write"]
reviewers = ["bob", "group:dba"]

[[rule]]
id = "reads"
effect = "allow"
categories = ["read", "export"]
"#;

/// Alice and carol (group `dba`), bob (no groups) and dave (group `ops`, which no rule names).
fn team() -> Team {
    Team::new(
        "pgw-team-api-",
        &[
            ("alice", &["dba"]),
            ("bob", &[]),
            ("carol", &["dba"]),
            ("dave", &["ops"]),
        ],
    )
}

async fn server(db: &TestDb, team: &Team, policy: &str) -> HttpServer {
    team.serve(TestServer::builder().database(db).policy(policy), "").await
}

/// Alice asks for `sql` with a client that shows no prompts: the id of the pending approval.
async fn alice_asks(alice: &Peer<RoleClient>, sql: &str) -> String {
    common::team::pending(alice, sql, Some("ship order 1")).await
}

/// Alice's `pgwarden_await` of `id`, waiting at most `wait` seconds: its structured result.
async fn alice_awaits(alice: &Peer<RoleClient>, id: &str, wait: u64) -> Value {
    common::team::awaited(alice, id, wait).await
}

/// The refusals of deciding `id` in the server's trail: (decided_by, reason).
fn refusals(s: &HttpServer, id: &str) -> Vec<(String, String)> {
    s.raw
        .audit_records()
        .iter()
        .filter(|r| r.event == Some(pgwarden::audit::Event::Approval))
        .filter_map(|r| r.approval.as_ref())
        .filter(|a| a.answer == "refused" && a.approval_id.as_deref() == Some(id))
        .map(|a| {
            (
                a.decided_by.clone().unwrap_or_default(),
                a.reason.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// `pgwarden approvals ARGS` with the environment `env` (and no PGWARDEN_* from the test's own).
async fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(common::BIN);
    cmd.arg("approvals")
        .args(args)
        .env_remove("PGWARDEN_SERVER")
        .env_remove("PGWARDEN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI answers within 60 s")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_call_waits_until_bob_approves_through_the_api_and_runs_once() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let s = server(&db, &team, POLICY).await;
    let api = Api::of(&s);
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let id = alice_asks(&alice, "UPDATE orders SET status = 'shipped' WHERE id = 1").await;

    // It waits: nothing ran, and her await says so.
    assert_eq!(alice_awaits(&alice, &id, 0).await["status"], "pending");
    assert_eq!(statuses(&db).await, ["open", "open"]);

    // Bob sees it among the pending ones, with the whole packet.
    let (status, list) = api.get(&team.bob, "/approvals?state=pending").await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&Value> = list["approvals"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!(listed[0]["id"], json!(id));
    let a = api.approval(&team.bob, &id).await;
    assert_eq!(a["state"], "pending");
    assert_eq!(a["requester"], "alice");
    assert_eq!(a["level"], "team");
    assert_eq!(a["reviewers"], json!(["bob", "group:dba"]));
    assert!(a["packet"]["sql"].as_str().unwrap().contains("UPDATE orders"), "{a}");
    assert!(
        a["packet"]["requested_by"].as_str().unwrap().starts_with("alice"),
        "{a}"
    );
    assert_eq!(a["packet"]["intent"], "ship order 1");
    assert!(a["packet"]["tables"].to_string().contains("public.orders"), "{a}");

    // Bob approves; alice's await runs it.
    let (status, answer) = api
        .decide_shown(&team.bob, &id, "approve", Some("customer asked"))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "approved");
    let decided_at = std::time::Instant::now();
    let ran = alice_awaits(&alice, &id, 5).await;
    let round_trip = decided_at.elapsed();
    assert_eq!(ran["status"], "executed", "{ran}");
    assert_eq!(ran["executed"], true);
    assert_eq!(ran["reviewer_reason"], "customer asked");
    assert_eq!(statuses(&db).await, ["shipped", "open"]);
    eprintln!("decision recorded (API) to executed (pgwarden_await returned): {round_trip:?}");

    // Once: a second await reports it done and runs nothing.
    let again = alice_awaits(&alice, &id, 0).await;
    assert_eq!(again["status"], "done", "{again}");
    assert_ne!(again["executed"], true);
    assert_eq!(statuses(&db).await, ["shipped", "open"]);

    // The trail names bob, verified by his token, on the API.
    let records = s.raw.audit_records();
    let decided: Vec<_> = records
        .iter()
        .filter_map(|r| r.approval.as_ref())
        .filter(|a| a.approval_id.as_deref() == Some(id.as_str()) && a.channel == "api")
        .collect();
    assert_eq!(decided.len(), 1, "{records:#?}");
    let by = decided[0].decided_by.as_deref().unwrap_or_default();
    assert!(by.starts_with("bob (verified: token "), "{by}");
}

#[tokio::test]
async fn alice_cannot_approve_her_own_call_through_the_api_or_the_cli() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let s = server(&db, &team, POLICY).await;
    let api = Api::of(&s);
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let id = alice_asks(&alice, "UPDATE orders SET status = 'shipped' WHERE id = 1").await;

    // She is a dba, so she sees it, but it is hers.
    let (status, answer) = api.decide_shown(&team.alice, &id, "approve", None).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("nobody approves their own request"),
        "{answer}"
    );
    let (status, _) = api.decide_shown(&team.alice, &id, "dry_run", None).await;
    assert_eq!(status, 403);

    // The CLI says so and fails.
    let url = s.url.clone();
    let token_file = team.token_file("alice");
    let (ok, out, err) = cli(
        &[
            "approve",
            &id,
            "--server",
            &url,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("refused (403)") && err.contains("nobody approves their own request"),
        "{err}"
    );
    assert!(err.contains("recorded in the audit trail"), "{err}");

    // Nothing changed, and each attempt is in the trail with why.
    assert_eq!(api.approval(&team.bob, &id).await["state"], "pending");
    assert_eq!(alice_awaits(&alice, &id, 0).await["status"], "pending");
    assert_eq!(statuses(&db).await, ["open", "open"]);
    let refused = refusals(&s, &id);
    assert_eq!(refused.len(), 3, "{refused:?}");
    for (by, why) in &refused {
        assert!(by.starts_with("alice (verified: token "), "{by}");
        assert!(why.contains("nobody approves their own request"), "{why}");
    }
}

#[tokio::test]
async fn two_approvals_need_two_different_people() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let policy = POLICY.replace(
        "reviewers = [\"bob\", \"group:dba\"]",
        "reviewers = [\"bob\", \"group:dba\"]\nmin_approvals = 2",
    );
    let s = server(&db, &team, &policy).await;
    let api = Api::of(&s);
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let id = alice_asks(&alice, "UPDATE orders SET status = 'shipped' WHERE id = 1").await;

    // Bob's approval is one of two: still pending, and the view says who approved.
    let (status, answer) = api.decide_shown(&team.bob, &id, "approve", Some("looks right")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "pending");
    let a = api.approval(&team.carol, &id).await;
    assert_eq!(a["state"], "pending");
    assert_eq!(a["min_approvals"], 2);
    let votes = a["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 1, "1 of 2: {a}");
    assert_eq!(votes[0]["principal"], "bob");
    assert_eq!(votes[0]["reason"], "looks right");
    assert_eq!(alice_awaits(&alice, &id, 0).await["status"], "pending");

    // The CLI shows the count.
    let token_file = team.token_file("carol");
    let (ok, out, err) = cli(
        &[
            "show",
            &id,
            "--server",
            &s.url,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("Approvals:    1 of 2 approvals"), "{out}");
    assert!(out.contains("Approved by:  bob (verified: token "), "{out}");

    // Bob again does not count twice.
    let (status, answer) = api.decide_shown(&team.bob, &id, "approve", None).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("already approved"),
        "{answer}"
    );
    assert_eq!(
        api.approval(&team.carol, &id).await["votes"].as_array().unwrap().len(),
        1
    );

    // Carol's is the second: approved, and it runs once.
    let (status, answer) = api.decide_shown(&team.carol, &id, "approve", None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "approved");
    let ran = alice_awaits(&alice, &id, 5).await;
    assert_eq!(ran["status"], "executed", "{ran}");
    assert_eq!(alice_awaits(&alice, &id, 0).await["status"], "done");
    assert_eq!(statuses(&db).await, ["shipped", "open"]);
}

#[tokio::test]
async fn a_reviewer_the_rule_does_not_name_is_refused_and_a_denial_ends_it() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let s = server(&db, &team, POLICY).await;
    let api = Api::of(&s);
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let id = alice_asks(&alice, "UPDATE orders SET status = 'shipped' WHERE id = 1").await;
    let hash = api.approval(&team.bob, &id).await["action_hash"].clone();

    // Dave (ops) is not among `bob, group:dba`: he does not see it and cannot decide it.
    let (status, list) = api.get(&team.dave, "/approvals").await;
    assert_eq!(
        (status, list["approvals"].as_array().unwrap().len()),
        (200, 0),
        "{list}"
    );
    assert_eq!(api.get(&team.dave, &format!("/approvals/{id}")).await.0, 404);
    for decision in ["approve", "deny"] {
        let (status, answer) = api
            .decide(&team.dave, &id, json!({ "decision": decision, "action_hash": hash }))
            .await;
        assert_eq!(status, 403, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains("not among"), "{answer}");
    }
    let refused = refusals(&s, &id);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|(by, why)| by.starts_with("dave (verified: token ") && why.contains("not among"))
    );
    assert_eq!(api.approval(&team.bob, &id).await["state"], "pending");

    // Carol (a dba) denies with a reason: it ends, and alice is told why.
    let (status, answer) = api
        .decide_shown(&team.carol, &id, "deny", Some("not during the freeze"))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "denied");
    let out = alice_awaits(&alice, &id, 5).await;
    assert_eq!(out["status"], "denied", "{out}");
    assert_eq!(out["executed"], false);
    assert_eq!(out["reviewer_reason"], "not during the freeze");
    // Decided is decided: bob's approval comes too late.
    let (status, answer) = api
        .decide(&team.bob, &id, json!({ "decision": "approve", "action_hash": hash }))
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(statuses(&db).await, ["open", "open"]);
}

#[tokio::test]
async fn a_stale_hash_is_refused_and_the_openapi_document_describes_what_is_served() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let s = server(&db, &team, POLICY).await;
    let api = Api::of(&s);
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let id = alice_asks(&alice, "UPDATE orders SET status = 'shipped' WHERE id = 1").await;
    let a = api.approval(&team.bob, &id).await;

    // A decision on another version of the action is refused; nothing changes.
    let stale = "0".repeat(a["action_hash"].as_str().unwrap().len());
    let (status, answer) = api
        .decide(&team.bob, &id, json!({ "decision": "approve", "action_hash": stale }))
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("hash mismatch"), "{answer}");
    assert_eq!(api.approval(&team.bob, &id).await["state"], "pending");

    // Without a valid token: 401 with a challenge, on every path.
    for (token, path) in [
        ("", "/approvals"),
        ("pgw_nope", "/approvals"),
        ("pgw_nope", &format!("/approvals/{id}")),
    ] {
        let r = api
            .http
            .get(format!("{}{path}", api.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    }
    let (status, _) = api
        .decide(
            "pgw_nope",
            &id,
            json!({ "decision": "approve", "action_hash": a["action_hash"] }),
        )
        .await;
    assert_eq!(status, 401);
    // A bad body or an unknown state filter says what is expected.
    let (status, answer) = api
        .decide(&team.bob, &id, json!({ "decision": "yes", "action_hash": "x" }))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("approve, dry_run or deny"),
        "{answer}"
    );
    let (status, answer) = api.get(&team.bob, "/approvals?state=waiting").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("pending"), "{answer}");

    // The OpenAPI document is served without a token, parses, and lists the three paths.
    let r = api.http.get(format!("{}/openapi.json", api.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = r.json().await.expect("the OpenAPI document parses");
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/approvals",
        "/api/v1/approvals/{id}",
        "/api/v1/approvals/{id}/decision",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    // …and it describes what the API sends: every field of a served approval and its packet, and
    // every state word.
    let schema = &doc["components"]["schemas"]["Approval"];
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&schema["properties"]), "the Approval schema's fields");
    for required in schema["required"].as_array().unwrap() {
        assert!(a.get(required.as_str().unwrap()).is_some(), "{required}");
    }
    let packet = keys(&schema["properties"]["packet"]["properties"]);
    for k in keys(&a["packet"]) {
        assert!(packet.contains(&k), "the packet's `{k}` is not in the schema");
    }
    let vote = keys(&doc["components"]["schemas"]["Vote"]["properties"]);
    let (_, answer) = api.decide_shown(&team.bob, &id, "approve", None).await;
    assert!(
        keys(
            &doc["paths"]["/api/v1/approvals/{id}/decision"]["post"]["responses"]["200"]["content"]["application/json"]
                ["schema"]["properties"]
        )
        .iter()
        .all(|k| answer.get(k).is_some())
    );
    for v in answer["approval"]["votes"].as_array().unwrap() {
        assert_eq!(keys(v), vote);
    }
    let words = doc["components"]["schemas"]["StateWord"]["enum"].as_array().unwrap();
    assert!(words.contains(&answer["state"]), "{answer}");
}

#[tokio::test]
async fn the_cli_lists_shows_and_approves_with_a_token_from_a_file_never_from_argv() {
    let db = TestDb::new(SETUP).await;
    let team = team();
    let s = server(&db, &team, POLICY).await;
    let alice = s.connect((), &team.alice, Era::Legacy).await;
    let id = alice_asks(&alice, "UPDATE orders SET status = 'shipped' WHERE id = 1").await;
    let bob_file = team.token_file("bob");
    let bob_file = bob_file.to_str().unwrap();
    // The server's URL as clients know it (`…/mcp`), or its base.
    let mcp_url = s.url.clone();
    let base = format!("http://127.0.0.1:{}", s.port());

    // list: the pending approval.
    let (ok, out, err) = cli(&["list", "--server", &mcp_url, "--token-file", bob_file], &[]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&id) && out.contains("pending") && out.contains("by alice"),
        "{out}"
    );
    assert!(out.contains("0 of 1 approval"), "{out}");

    // show: the SQL and the fingerprint (server and token from the environment here).
    let (ok, out, err) = cli(
        &["show", &id],
        &[
            ("PGWARDEN_SERVER", base.as_str()),
            ("PGWARDEN_TOKEN", team.bob.as_str()),
        ],
    )
    .await;
    assert!(ok, "{err}");
    let a = Api::of(&s).approval(&team.bob, &id).await;
    let fingerprint = a["fingerprint"].as_str().unwrap();
    // The statement as it will run (pretty-printed when that parses to the same statement).
    for part in ["UPDATE orders", "status = 'shipped'", "id = 1"] {
        assert!(out.contains(part), "{part}: {out}");
    }
    assert!(out.contains(&format!("fingerprint {fingerprint}")), "{out}");
    for line in [
        "Requested by: alice",
        "Intent:",
        "Tables:       public.orders",
        "Risk:",
        "Reviewers:    bob, group:dba",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(
        out.find("UPDATE orders").unwrap() < out.find("Intent:").unwrap(),
        "the statement first"
    );
    // --json: the API's view, to script with.
    let (ok, out, err) = cli(
        &[
            "show",
            fingerprint,
            "--json",
            "--server",
            &base,
            "--token-file",
            bob_file,
        ],
        &[],
    )
    .await;
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["action_hash"], a["action_hash"]);

    // A token is never an argument: there is no such flag, and nothing is sent.
    let (ok, _, err) = cli(&["approve", &id, "--server", &base, "--token", &team.bob], &[]).await;
    assert!(!ok);
    assert!(err.contains("unexpected argument '--token'"), "{err}");
    assert!(!err.contains(&team.bob[4..]), "the token is not echoed: {err}");
    // Without a token: what to do. A wrong token: 401, what to check.
    let (ok, _, err) = cli(&["list", "--server", &base], &[]).await;
    assert!(
        !ok && err.contains("--token-file PATH") && err.contains("PGWARDEN_TOKEN"),
        "{err}"
    );
    let (ok, _, err) = cli(&["list", "--server", &base], &[("PGWARDEN_TOKEN", "pgw_wrong")]).await;
    assert!(!ok && err.contains("did not accept your token (401)"), "{err}");
    // A remote server over plain http: refused before the token leaves.
    let (ok, _, err) = cli(
        &[
            "list",
            "--server",
            "http://pgwarden.example.com",
            "--token-file",
            bob_file,
        ],
        &[],
    )
    .await;
    assert!(!ok && err.contains("unencrypted"), "{err}");
    assert_eq!(alice_awaits(&alice, &id, 0).await["status"], "pending");

    // approve: bob's decision, on the hash it printed; alice's await runs it.
    let (ok, out, err) = cli(
        &[
            "approve",
            &id,
            "--server",
            &base,
            "--token-file",
            bob_file,
            "--reason",
            "checked",
        ],
        &[],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("UPDATE orders") && out.contains(&format!("{id} {fingerprint}: approved")),
        "{out}"
    );
    let ran = alice_awaits(&alice, &id, 5).await;
    assert_eq!(ran["status"], "executed", "{ran}");
    assert_eq!(ran["reviewer_reason"], "checked");
    assert_eq!(statuses(&db).await, ["shipped", "open"]);
    // Deciding again: 409, with where it stands.
    let (ok, _, err) = cli(&["deny", &id, "--server", &base, "--token-file", bob_file], &[]).await;
    assert!(
        !ok && err.contains("not decided (409)") && err.contains("already decided"),
        "{err}"
    );
    assert!(err.contains(&format!("pgwarden approvals show {id}")), "{err}");
    let (ok, out, _) = cli(&["list", "--all", "--server", &base, "--token-file", bob_file], &[]).await;
    assert!(ok && out.contains(&id) && out.contains("done"), "{out}");
}

/// A server whose certificate no public root vouches for (an internal CA, a self-signed one): the
/// CLI refuses it, saying why, until `--ca-cert` (or PGWARDEN_CA_CERT) names the certificate.
#[tokio::test]
async fn the_cli_trusts_a_private_certificate_only_when_told_to() {
    let db = TestDb::new(SETUP).await;
    let team = Team::new("pgw-team-api-", &[("alice", &["dba"]), ("bob", &["dba"])]);
    let builder = TestServer::builder().database(&db).policy(POLICY);
    let (s, cert) = HttpServer::start_tls(builder, team.path(), "[tokens]\nfile = \"tokens.toml\"\n").await;
    let bob_file = team.token_file("bob");
    let bob_file = bob_file.to_str().unwrap();
    let (ok, _, err) = cli(&["list", "--server", &s.url, "--token-file", bob_file], &[]).await;
    assert!(!ok);
    assert!(err.contains("certificate"), "{err}");
    let cert = cert.to_str().unwrap();
    let (ok, out, err) = cli(
        &["list", "--server", &s.url, "--token-file", bob_file, "--ca-cert", cert],
        &[],
    )
    .await;
    assert!(ok, "{out}{err}");
    let (ok, _, err) = cli(
        &["list", "--server", &s.url, "--token-file", bob_file],
        &[("PGWARDEN_CA_CERT", cert)],
    )
    .await;
    assert!(ok, "{err}");
    // A file that holds no certificate is named, with what is wrong.
    let (ok, _, err) = cli(
        &[
            "list",
            "--server",
            &s.url,
            "--token-file",
            bob_file,
            "--ca-cert",
            bob_file,
        ],
        &[],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("--ca-cert") && err.contains("no PEM certificate"), "{err}");
}
