//! The review app at `/review` (issue 21), end to end in headless Chromium: a real OpenID provider
//! (`oidc-provider`, its own login form), the real `pgwarden serve --http`, and people in their own
//! browsers. Alice's call waits until Bob signs in and approves it on the packet's page; her
//! `pgwarden_await` then runs it once. Alice cannot approve her own call; a decision without the
//! page's CSRF token, or sent from another site, or by someone the rule does not name, is refused;
//! every refusal is audited.
//! `min_approvals = 2` shows "1 of 2" after Bob and runs after Carol. Without a browser: the
//! sign-in asks for PKCE S256 with `state` and `nonce`, and refuses an answer it did not start.

mod common;

use std::time::Duration;

use common::{
    Era, TestDb, TestServer,
    browser::Browser,
    http::HttpServer,
    oidc::Oidc,
    team::{asked, await_call},
    text,
};
use pgwarden::auth::tokens::new_token;
use serde_json::json;

const SETUP: &str = "CREATE TABLE orders (id int PRIMARY KEY, status text, touched int NOT NULL DEFAULT 0);
INSERT INTO orders VALUES (1, 'open', 0), (2, 'open', 0);";

/// Writes go to a team reviewer: Bob and Carol by name, or anyone in `dba` (Alice is in it, so
/// only "nobody approves their own request" stops her).
fn policy(min_approvals: u32) -> String {
    format!(
        r#"
[approval]
wait_budget = "1s"

[[rule]]
id = "reviewed-writes"
effect = "approve"
categories = ["write"]
reviewers = ["bob@example.com", "carol@example.com", "group:dba"]
min_approvals = {min_approvals}

[[rule]]
id = "reads"
effect = "allow"
categories = ["read"]
"#
    )
}

/// A reason as a hostile reviewer (or a compromised surface) might write it.
const HOSTILE_REASON: &str = "<img src=x onerror=\"document.title='pwned'\"><b>looks right</b> \u{202E}";

const INTENT: &str = "Mark order 1 as shipped <b>now</b>: the customer called";

struct Setup {
    db: TestDb,
    _oidc: Oidc,
    server: HttpServer,
    /// `http://127.0.0.1:<port>`.
    base: String,
    /// Alice's MCP token (principal `alice@example.com`, group `dba`).
    alice: String,
    _dir: tempfile::TempDir,
}

/// A free loopback port: the review app's redirect URI and `resource` must name the port before
/// the server starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Which of the provider's clients the review app is.
#[derive(Clone, Copy)]
enum Client {
    /// `pgwarden-review`, with a secret.
    Confidential,
    /// `pgwarden-review-public`: PKCE alone.
    Public,
}

async fn setup(min_approvals: u32, client: Client) -> Setup {
    setup_with(min_approvals, client, false).await
}

/// [`setup`]; with `oauth`, MCP callers sign in with the provider's access tokens instead (`[oauth]`:
/// the principal is the token's `sub`, the default; people are shown by their `name`, which these
/// access tokens do not carry).
async fn setup_with(min_approvals: u32, client: Client, oauth: bool) -> Setup {
    let db = TestDb::new(SETUP).await;
    let oidc = Oidc::start().await;
    let dir = tempfile::Builder::new()
        .prefix("pgw-review-")
        .tempdir_in("/tmp")
        .unwrap();
    let alice = new_token(&dir.path().join("tokens.toml"), "alice@example.com", &["dba".into()]).unwrap();
    std::fs::write(dir.path().join("review-client.secret"), "pgwarden-review-secret\n").unwrap();
    let client = match client {
        Client::Confidential => "client_id = \"pgwarden-review\"\nclient_secret_file = \"review-client.secret\"",
        Client::Public => "client_id = \"pgwarden-review-public\"",
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = format!(
        r#"resource = "{base}/mcp"
{tokens}

[review]
issuer = "{issuer}"
{client}
scopes = ["openid", "email", "profile", "groups"]
session_lifetime = "1h"
{oauth}"#,
        issuer = oidc.issuer,
        tokens = if oauth {
            ""
        } else {
            "\n[tokens]\nfile = \"tokens.toml\""
        },
        oauth = if oauth {
            format!(
                "\n[oauth]\nissuer = \"{}\"\nrequired_scopes = [\"pgwarden\"]\nallow_insecure_http = true\n\
                 display_claims = [\"name\"]\n",
                oidc.issuer
            )
        } else {
            String::new()
        },
    );
    let path = dir.path().join("http.toml");
    std::fs::write(&path, config).unwrap();
    let raw = TestServer::builder()
        .database(&db)
        .policy(policy(min_approvals))
        .args([
            "--http".to_string(),
            format!("127.0.0.1:{port}"),
            "--http-config".into(),
        ])
        .args([&path])
        .start_raw()
        .await;
    let url = common::eventually(Duration::from_secs(60), "the server to listen", async || {
        raw.stderr()
            .lines()
            .find_map(|l| l.strip_prefix("pgwarden: listening on "))
            .map(str::to_string)
    })
    .await;
    Setup {
        db,
        _oidc: oidc,
        server: HttpServer { raw, url },
        base,
        alice,
        _dir: dir,
    }
}

impl Setup {
    /// Alice asks to mark order `id` shipped; the call returns pending. The approval's id and
    /// fingerprint.
    async fn alice_asks(&self, id: u32) -> (rmcp::service::RunningService<rmcp::RoleClient, ()>, String, String) {
        let alice = self.server.connect((), &self.alice, Era::Legacy).await;
        let sql = format!("UPDATE orders SET status = 'shipped', touched = touched + 1 WHERE id = {id}");
        let pending = asked(&alice, &sql, Some(INTENT)).await;
        let approval = pending["approval_id"].as_str().unwrap().to_string();
        let fingerprint = pending["fingerprint"].as_str().unwrap().to_string();
        (alice, approval, fingerprint)
    }

    /// `person` opens `path` of the review app in a new browser and signs in at the provider's
    /// form on the way.
    async fn signed_in(&self, person: &str, path: &str) -> Browser {
        let mut b = Browser::launch().await;
        let at = b.goto(&format!("{}{path}", self.base)).await;
        assert!(
            at.url.contains("/interaction/"),
            "sent to the provider's sign-in: {at:?}"
        );
        b.fill("#username", person).await;
        b.fill("#password", &format!("{person}-password")).await;
        let back = b.click_and_load("#sign-in").await;
        assert_eq!(
            (back.status, back.url.as_str()),
            (200, format!("{}{path}", self.base).as_str()),
            "back on the page after signing in"
        );
        b
    }

    /// The rows of `orders` as (status, how often the update ran).
    async fn orders(&self) -> Vec<(String, i32)> {
        let c = self.db.client().await;
        c.query("SELECT status, touched FROM orders ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// The audit trail's refused decisions on `approval`: (who, why).
    fn refusals(&self, approval: &str) -> Vec<(String, String)> {
        self.server
            .raw
            .audit_records()
            .into_iter()
            .filter_map(|r| r.approval)
            .filter(|a| a.answer == "refused" && a.channel == "web" && a.approval_id.as_deref() == Some(approval))
            .map(|a| (a.decided_by.unwrap_or_default(), a.reason.unwrap_or_default()))
            .collect()
    }
}

#[tokio::test]
async fn bob_approves_alices_call_in_the_browser_and_her_await_runs_it_once() {
    let s = setup(1, Client::Confidential).await;
    let (alice, approval, fingerprint) = s.alice_asks(1).await;

    let clock = std::time::Instant::now();
    let mut bob = s.signed_in("bob", &format!("/review/approvals/{approval}")).await;
    let signing_in = clock.elapsed();
    // The whole packet: who asked (verified), the model's words (escaped, not markup), the SQL,
    // the tables, the risk and why, and the fingerprint Alice's client was shown.
    assert!(
        bob.text("#principal").await.contains("bob@example.com (Bob Builder)"),
        "signed in as Bob"
    );
    assert_eq!(bob.text("#requester").await, "alice@example.com");
    assert!(bob.text("#requested-by").await.contains("static token"));
    assert_eq!(bob.text("#intent").await, INTENT, "the intent as text, not markup");
    assert_eq!(bob.count("#intent b").await, 0, "the model's markup is not rendered");
    let sql = bob.text("#sql").await;
    assert!(sql.contains("UPDATE orders") && sql.contains("'shipped'"), "{sql}");
    assert!(bob.text("#tables").await.contains("public.orders"));
    assert!(!bob.text("#risk").await.is_empty());
    assert_eq!(bob.text("#fingerprint").await, fingerprint);
    assert_eq!(bob.text("#state").await, "waiting for a person's decision");
    assert_eq!(bob.text("#tally").await, "0 of 1");

    // The list shows it too.
    bob.goto(&format!("{}/review", s.base)).await;
    assert!(
        bob.text(&format!("tr[data-id=\"{approval}\"]"))
            .await
            .contains(&fingerprint)
    );
    bob.goto(&format!("{}/review/approvals/{approval}", s.base)).await;

    // Not yet approved: Alice's await finds it still pending.
    let r = await_call(&alice, &approval, 0).await;
    assert_ne!(
        r.structured_content.as_ref().map(|v| &v["executed"]),
        Some(&json!(true))
    );

    let clock = std::time::Instant::now();
    let done = bob.click_and_load("#approve").await;
    let deciding = clock.elapsed();
    assert_eq!(done.status, 200);
    assert!(
        bob.text("#outcome").await.contains("decided: approved"),
        "{}",
        bob.text("#outcome").await
    );
    assert!(
        bob.url().await.ends_with(&format!("/review/approvals/{approval}")),
        "a reload does not resend"
    );

    let clock = std::time::Instant::now();
    let r = await_call(&alice, &approval, 5).await;
    let running = clock.elapsed();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(r.structured_content.unwrap()["executed"], json!(true));
    assert_eq!(s.orders().await, [("shipped".into(), 1), ("open".into(), 0)]);
    // Once: a second await runs nothing again.
    let _ = await_call(&alice, &approval, 0).await;
    assert_eq!(s.orders().await[0], ("shipped".into(), 1));
    // The page follows by itself.
    let clock = std::time::Instant::now();
    bob.wait_text("#state", "ran").await;
    assert_eq!(bob.text("#tally").await, "1 of 1");
    eprintln!(
        "measured: sign-in through the provider {signing_in:?}; approve click to page {deciding:?}; \
         await to executed {running:?}; the page showing it ran {:?} later",
        clock.elapsed()
    );
    assert!(bob.visible("#closed").await);
    assert!(!bob.visible("#decision").await, "no form once decided");

    // The trail says who approved, verified by the provider.
    let decided: Vec<_> = s
        .server
        .raw
        .audit_records()
        .into_iter()
        .filter_map(|r| r.approval)
        .filter(|a| a.channel == "web" && a.answer == "approved")
        .collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    let by = decided[0].decided_by.clone().unwrap();
    assert!(
        by.starts_with("bob@example.com (Bob Builder)") && by.contains("verified: oidc http://127.0.0.1:"),
        "{by}"
    );
    assert!(
        bob.console()
            .await
            .iter()
            .all(|l| !l.contains("Content Security Policy")),
        "no CSP violation"
    );
}

#[tokio::test]
async fn alice_cannot_approve_her_own_call_and_forged_decisions_are_refused_and_audited() {
    let s = setup(1, Client::Confidential).await;
    let (alice, approval, _) = s.alice_asks(1).await;
    let page = format!("/review/approvals/{approval}");

    // Alice (a dba, so one of the reviewers) sees her own call but no form to decide it…
    let mut own = s.signed_in("alice", &page).await;
    assert!(own.text("#decide").await.contains("Nobody approves their own request"));
    assert_eq!(own.count("#decision").await, 0);
    // …and a decision she makes up in the page with her own valid CSRF token is refused by pgwarden.
    let forged = own
        .submit(
            r#"(() => {
                const f = document.createElement('form');
                f.method = 'post';
                f.action = location.pathname + '/decision';
                const add = (name, value) => {
                    const i = document.createElement('input');
                    i.type = 'hidden'; i.name = name; i.value = value; f.append(i);
                };
                add('csrf', document.querySelector('form.signout input[name=csrf]').value);
                add('action_hash', document.getElementById('action-hash').textContent);
                add('decision', 'approve');
                document.body.append(f);
                f.submit();
            })()"#,
        )
        .await;
    assert_eq!(forged.status, 403);
    let refused = own.text("#outcome").await;
    assert!(
        refused.contains("Refused") && refused.contains("nobody approves their own request"),
        "{refused}"
    );
    assert_eq!(own.text("#state").await, "waiting for a person's decision");

    // Bob, signed in: a decision without the CSRF token, or with a wrong one, is refused before
    // it reaches the approval…
    let mut bob = s.signed_in("bob", &page).await;
    let hash = bob.text("#action-hash").await;
    for csrf in [None, Some("not-the-token")] {
        let body = match csrf {
            None => format!("action_hash={hash}&decision=approve"),
            Some(t) => format!("csrf={t}&action_hash={hash}&decision=approve"),
        };
        let answer = bob
            .eval(&format!(
                "fetch(location.pathname + '/decision', {{method: 'POST', headers: {{'Content-Type': \
                 'application/x-www-form-urlencoded'}}, body: '{body}'}}).then(async r => [r.status, await r.text()])"
            ))
            .await;
        assert_eq!(answer[0], json!(403), "{csrf:?}: {answer}");
        assert!(answer[1].as_str().unwrap().contains("no valid CSRF token"), "{answer}");
    }
    // …and so is one sent from another site's page, even with the right token (the provider's
    // origin: another port of the same host, so the browser still sends Bob's cookie).
    let csrf = bob
        .eval("document.querySelector('form.signout input[name=csrf]').value")
        .await;
    let issuer = s._oidc.issuer.clone();
    bob.goto(&format!("{issuer}/.well-known/openid-configuration")).await;
    let cross = bob
        .submit(&format!(
            r#"(() => {{
                const f = document.createElement('form');
                f.method = 'post';
                f.action = '{base}{page}/decision';
                for (const [name, value] of [['csrf', {csrf}], ['action_hash', '{hash}'], ['decision', 'approve']]) {{
                    const i = document.createElement('input');
                    i.type = 'hidden'; i.name = name; i.value = value; f.append(i);
                }}
                document.body.append(f);
                f.submit();
            }})()"#,
            base = s.base,
        ))
        .await;
    assert_eq!(cross.status, 403);
    assert!(bob.text("#outcome").await.contains("sent from another site"));
    // Someone the rule does not name (not Bob or Carol, not in `dba`) sees nothing to review, and a
    // decision they make up is refused.
    let mut outsider = s.signed_in("brief", "/review").await;
    assert!(outsider.visible("#empty").await, "nothing to review");
    assert_eq!(
        outsider.goto(&format!("{}{page}", s.base)).await.status,
        404,
        "not even the packet"
    );
    let outside = outsider
        .submit(&format!(
            r#"(() => {{
                const f = document.createElement('form');
                f.method = 'post';
                f.action = '{page}/decision';
                for (const [name, value] of [['csrf', document.querySelector('form.signout input[name=csrf]').value],
                                             ['action_hash', '{hash}'], ['decision', 'approve']]) {{
                    const i = document.createElement('input');
                    i.type = 'hidden'; i.name = name; i.value = value; f.append(i);
                }}
                document.body.append(f);
                f.submit();
            }})()"#
        ))
        .await;
    assert_eq!(outside.status, 403);
    assert!(
        outsider
            .text("main")
            .await
            .contains("not among this approval's reviewers")
    );
    // Without a session at all: nothing is decided (and nobody to audit).
    let mut stranger = Browser::launch().await;
    stranger.goto(&format!("{}/review/static/review.css", s.base)).await;
    let answer = stranger
        .eval(&format!(
            "fetch('{page}/decision', {{method: 'POST', headers: {{'Content-Type': \
             'application/x-www-form-urlencoded'}}, body: 'csrf=x&action_hash={hash}&decision=approve'}}).then(r => r.status)"
        ))
        .await;
    assert_eq!(answer, json!(401));

    // Nothing ran, the approval still waits, and every refusal is in the trail with who and why.
    let r = await_call(&alice, &approval, 0).await;
    assert_ne!(
        r.structured_content.as_ref().map(|v| &v["executed"]),
        Some(&json!(true))
    );
    assert_eq!(s.orders().await[0], ("open".into(), 0));
    let refusals = s.refusals(&approval);
    let by = |who: &str, why: &str| {
        refusals
            .iter()
            .filter(|(b, r)| b.starts_with(who) && r.contains(why))
            .count()
    };
    assert_eq!(
        by("alice@example.com", "nobody approves their own request"),
        1,
        "{refusals:?}"
    );
    assert_eq!(by("bob@example.com", "CSRF"), 2, "{refusals:?}");
    assert_eq!(by("bob@example.com", "another site"), 1, "{refusals:?}");
    assert_eq!(
        by("brief@example.com", "not among this approval's reviewers"),
        1,
        "{refusals:?}"
    );
    assert_eq!(refusals.len(), 5, "{refusals:?}");
}

#[tokio::test]
async fn two_approvals_show_as_one_of_two_after_bob_and_run_after_carol() {
    // This time the review app is a public client: PKCE alone protects its sign-ins.
    let s = setup(2, Client::Public).await;
    let (alice, approval, _) = s.alice_asks(2).await;
    let page = format!("/review/approvals/{approval}");

    // Carol has the page open before Bob votes: his vote reaches her through the script.
    let mut carol = s.signed_in("carol", &page).await;
    assert_eq!(carol.text("#tally").await, "0 of 2");
    let mut bob = s.signed_in("bob", &page).await;
    assert_eq!(bob.text("#tally").await, "0 of 2");
    bob.fill("#reason", HOSTILE_REASON).await;
    bob.click_and_load("#approve").await;
    assert!(bob.text("#outcome").await.contains("needs another reviewer"));
    assert_eq!(bob.text("#tally").await, "1 of 2");
    assert!(bob.text("#votes").await.contains("bob@example.com (Bob Builder)"));
    assert!(bob.text("#votes").await.contains("looks right"));
    // A reviewer's words are text too, on the server's page and in the script's updates.
    carol.wait_text("#tally", "1 of 2").await;
    for (who, b) in [("bob", &mut bob), ("carol", &mut carol)] {
        let votes = b.text("#votes").await;
        assert!(
            votes.contains("<img src=x onerror=") && votes.contains("\\u{202E}"),
            "{who}: {votes}"
        );
        assert_eq!(b.count("#votes img, #votes b").await, 0, "{who}: markup rendered");
        assert_ne!(b.eval("document.title").await, json!("pwned"), "{who}");
    }
    assert_eq!(bob.text("#state").await, "waiting for a person's decision");
    // Bob cannot be both approvals.
    bob.click_and_load("#approve").await;
    assert!(bob.text("#outcome").await.contains("you already approved this"));
    let r = await_call(&alice, &approval, 0).await;
    assert_ne!(
        r.structured_content.as_ref().map(|v| &v["executed"]),
        Some(&json!(true))
    );

    carol.click_and_load("#approve").await;
    assert!(carol.text("#outcome").await.contains("decided: approved"));
    assert_eq!(carol.text("#tally").await, "2 of 2");
    // Bob's page follows.
    bob.wait_text("#state", "approved").await;
    assert_eq!(bob.text("#tally").await, "2 of 2");

    let r = await_call(&alice, &approval, 5).await;
    assert_eq!(
        r.structured_content.clone().unwrap()["executed"],
        json!(true),
        "{}",
        text(&r)
    );
    assert_eq!(s.orders().await, [("open".into(), 0), ("shipped".into(), 1)]);
}

/// The sign-in as a plain HTTP client sees it: pages send the signed-out to the provider, the
/// request asks for a code with PKCE S256, `state` and `nonce` (kept in a sealed, HttpOnly cookie
/// for `/review` only), and the callback refuses an answer this browser did not start. Every
/// answer carries a CSP without inline script or style.
#[tokio::test]
async fn sign_in_asks_for_pkce_and_refuses_an_answer_it_did_not_start() {
    let s = setup(1, Client::Confidential).await;
    let port = s.server.port();
    let get = async |path: &str, cookie: Option<&str>| {
        let cookie = cookie.map(|c| format!("pgwarden_review_login={c}"));
        let mut headers = vec![];
        if let Some(c) = &cookie {
            headers.push(("Cookie", c.as_str()));
        }
        common::http(port, "GET", path, &headers, None).await
    };

    let r = get("/review", None).await;
    assert_eq!(
        (r.status, r.headers["location"].as_str()),
        (303, "/review/login?next=%2Freview")
    );
    let csp = &r.headers["content-security-policy"];
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(get("/review/api/approvals", None).await.status, 401);

    let r = get("/review/login?next=/review/approvals/x", None).await;
    assert_eq!(r.status, 303);
    let to = url::Url::parse(&r.headers["location"]).unwrap();
    let q: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    assert!(to.as_str().starts_with(&s._oidc.issuer), "{to}");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "pgwarden-review");
    assert_eq!(q["redirect_uri"], format!("{}/review/callback", s.base));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "openid email profile groups");
    for key in ["state", "nonce", "code_challenge"] {
        assert!(q[key].len() >= 43, "{key}: {}", q[key]);
    }
    let set = &r.headers["set-cookie"];
    assert!(
        set.starts_with("pgwarden_review_login=")
            && set.contains("; Path=/review; HttpOnly; SameSite=Lax; Max-Age=600"),
        "{set}"
    );
    let login = set["pgwarden_review_login=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(!login.contains(&q["state"]), "the cookie is sealed, not readable");

    // An answer without the sign-in's cookie, with another state, or with a cookie altered.
    let altered = |c: &str| {
        let first = if c.starts_with('A') { 'B' } else { 'A' };
        format!("{first}{}", &c[1..])
    };
    let state = &q["state"];
    for (path, cookie, says) in [
        (
            format!("/review/callback?code=c&state={state}"),
            None,
            "another browser",
        ),
        (
            "/review/callback?code=c&state=forged".into(),
            Some(login.clone()),
            "wrong state",
        ),
        (
            format!("/review/callback?code=c&state={state}"),
            Some(altered(&login)),
            "another browser",
        ),
        (
            format!("/review/callback?code=c&state={state}&iss=http://evil.example"),
            Some(login.clone()),
            "another provider",
        ),
    ] {
        let r = get(&path, cookie.as_deref()).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.body.contains(says), "{path}: {}", r.body);
        assert!(!r.headers.contains_key("location"), "not signed in");
    }
    // A code the provider never issued, with the right state: the provider refuses it.
    let r = get(&format!("/review/callback?code=made-up&state={state}"), Some(&login)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("refused the sign-in code"), "{}", r.body);
    // A session cookie nobody sealed is no session.
    let r = common::http(
        port,
        "GET",
        "/review/api/approvals",
        &[("Cookie", "pgwarden_review=eyJwcmluY2lwYWwiOiJib2IifQ")],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}

/// A cookie sealed as the review app seals them (`team::web::session`), with the server's own
/// session key: a session for whoever a test needs, without a browser. `exp` is Unix seconds.
fn seal(s: &Setup, purpose: &str, exp: u64, value: serde_json::Value) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    use sha2::{Digest, Sha256};
    let key = std::fs::read(s._dir.path().join("review-session.key")).unwrap();
    let mut h = Sha256::new();
    h.update(b"pgwarden review cookies v1\0");
    h.update(&key);
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &h.finalize()[..]).unwrap());
    let nonce: [u8; 12] = rand_nonce();
    let mut data = serde_json::to_vec(&json!({ "exp": exp, "v": value })).unwrap();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(purpose.as_bytes()),
        &mut data,
    )
    .unwrap();
    URL_SAFE_NO_PAD.encode([nonce.to_vec(), data].concat())
}

/// What a cookie sealed for `purpose` holds, or `None`.
fn unseal(s: &Setup, purpose: &str, text: &str) -> Option<serde_json::Value> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    use sha2::{Digest, Sha256};
    let key = std::fs::read(s._dir.path().join("review-session.key")).unwrap();
    let mut h = Sha256::new();
    h.update(b"pgwarden review cookies v1\0");
    h.update(&key);
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &h.finalize()[..]).unwrap());
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let (nonce, sealed) = bytes.split_at(12);
    let mut sealed = sealed.to_vec();
    let plain = key
        .open_in_place(
            Nonce::try_assume_unique_for_key(nonce).ok()?,
            Aad::from(purpose.as_bytes()),
            &mut sealed,
        )
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(plain)
        .ok()
        .map(|e| e["v"].clone())
}

fn rand_nonce() -> [u8; 12] {
    let mut n = [0u8; 12];
    n.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..12]);
    n
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The review app attacked over plain HTTP, as a web attacker would: a model's hostile packet
/// (markup, attribute breaks, `javascript:`, bidi overrides) is text on the page; pages with
/// packets are never cached or framed; a decision POST from another site (`Origin: null`, another
/// origin, `Sec-Fetch-Site` not same-origin) is refused even with the right CSRF token, as is one
/// naming approval A with approval B's action hash; altered, swapped, expired or foreign cookies
/// are no session; the JSON shows an outsider nothing; `next=` never leaves the app.
#[tokio::test]
async fn a_web_attacker_gets_nothing_from_the_review_app() {
    let s = setup(1, Client::Confidential).await;
    let port = s.server.port();
    let alice = s.server.connect((), &s.alice, Era::Legacy).await;
    let hostile = "</blockquote><script>alert(1)</script>\"><img src=x onerror=alert(2)> \
                   <a href=\"javascript:alert(3)\">x</a> pay \u{202E}gnp.exe";
    let sql = "UPDATE orders SET status = '</code></pre><script>alert(4)</script>' WHERE id = 1";
    let a_id = asked(&alice, sql, Some(hostile)).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_id = asked(&alice, "UPDATE orders SET status = 'x' WHERE id = 2", None).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();

    let session = |principal: &str, groups: &[&str], exp: u64, issuer: &str| {
        seal(
            &s,
            "pgwarden_review",
            exp,
            json!({"principal": principal, "display": null, "groups": groups, "aliases": [], "csrf": format!("csrf-{principal}"),
                   "issuer": issuer}),
        )
    };
    let issuer = s._oidc.issuer.clone();
    let bob = format!(
        "pgwarden_review={}",
        session("bob@example.com", &[], unix_now() + 600, &issuer)
    );
    let get = async |path: &str, cookie: &str| common::http(port, "GET", path, &[("Cookie", cookie)], None).await;

    // The packet's page: the model's words are text, not markup; hidden characters show.
    let page = get(&format!("/review/approvals/{a_id}"), &bob).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let scripts: Vec<_> = page.body.match_indices("<script").collect();
    assert_eq!(scripts.len(), 1, "only the app's own script: {}", page.body);
    assert!(
        page.body
            .contains(r#"<script src="/review/static/review.js" defer></script>"#)
    );
    for markup in ["<img", "<a href=\"javascript", "onerror=alert(2)>", "\u{202E}"] {
        assert!(!page.body.contains(markup), "{markup} in {}", page.body);
    }
    assert!(page.body.contains("\\u{202E}gnp.exe"), "the override shows");
    // Never cached, never framed, no script but the app's.
    let json = get(&format!("/review/api/approvals/{a_id}"), &bob).await;
    assert_eq!(json.status, 200);
    for r in [
        &page,
        &json,
        &get("/review", &bob).await,
        &get("/review/api/approvals", &bob).await,
    ] {
        assert_eq!(r.headers["cache-control"], "no-store");
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        let csp = &r.headers["content-security-policy"];
        assert!(
            csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(
            !r.headers.keys().any(|k| k.starts_with("access-control-")),
            "{:?}",
            r.headers
        );
    }
    assert!(json.headers["content-type"].starts_with("application/json"));
    let a_hash = serde_json::from_str::<serde_json::Value>(&json.body).unwrap()["action_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let b_hash =
        serde_json::from_str::<serde_json::Value>(&get(&format!("/review/api/approvals/{b_id}"), &bob).await.body)
            .unwrap()["action_hash"]
            .as_str()
            .unwrap()
            .to_string();

    // Decisions from another site, with Bob's cookie and his right CSRF token: refused.
    let post = async |id: &str, hash: &str, headers: &[(&str, &str)]| {
        let mut all = vec![
            ("Cookie", bob.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        all.extend_from_slice(headers);
        let body = format!("csrf=csrf-bob@example.com&action_hash={hash}&decision=approve");
        common::http(
            port,
            "POST",
            &format!("/review/approvals/{id}/decision"),
            &all,
            Some(&body),
        )
        .await
    };
    let provider_origin = {
        let u = url::Url::parse(&issuer).unwrap();
        u.origin().ascii_serialization()
    };
    for headers in [
        vec![("Origin", "null")],
        vec![("Origin", provider_origin.as_str())],
        vec![("Origin", "http://evil.example")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
        vec![("Origin", s.base.as_str()), ("Sec-Fetch-Site", "cross-site")],
    ] {
        let r = post(&a_id, &a_hash, &headers).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert!(r.body.contains("sent from another site"), "{headers:?}: {}", r.body);
    }
    // Approval A named with approval B's action hash (B's page, the same token): refused.
    let same = [("Origin", s.base.as_str()), ("Sec-Fetch-Site", "same-origin")];
    let r = post(&a_id, &b_hash, &same).await;
    assert!(r.status >= 400, "{}", r.body);
    // Nothing was decided.
    for id in [&a_id, &b_id] {
        let v: serde_json::Value =
            serde_json::from_str(&get(&format!("/review/api/approvals/{id}"), &bob).await.body).unwrap();
        assert_eq!(v["state"], "pending", "{v}");
    }

    // Cookies: the sign-in cookie as the session, a session for `pgwarden_review_login`, an expired
    // one, one from another provider, one altered: no session.
    let login = seal(
        &s,
        "pgwarden_review_login",
        unix_now() + 600,
        json!({"state": "s", "nonce": "n", "verifier": "v", "next": "/review"}),
    );
    let swapped = seal(
        &s,
        "pgwarden_review_login",
        unix_now() + 600,
        json!({"principal": "bob@example.com", "display": null, "groups": [], "csrf": "c", "issuer": issuer}),
    );
    let expired = session("bob@example.com", &[], unix_now() - 1, &issuer);
    let foreign = session("bob@example.com", &[], unix_now() + 600, "https://evil.example/");
    let mut altered = bob["pgwarden_review=".len()..].to_string().into_bytes();
    altered[30] = if altered[30] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    // A session sealed before reviewers' other names were kept: signed out, not a reviewer
    // without them.
    let older = seal(
        &s,
        "pgwarden_review",
        unix_now() + 600,
        json!({"principal": "bob@example.com", "display": null, "groups": [], "csrf": "c", "issuer": issuer}),
    );
    for c in [login, swapped, expired, foreign, altered, older] {
        let r = get("/review/api/approvals", &format!("pgwarden_review={c}")).await;
        assert_eq!(r.status, 401, "{c}: {}", r.body);
    }

    // Someone the rule does not name sees nothing, in the list or by id.
    let mallory = format!(
        "pgwarden_review={}",
        session("mallory@example.com", &[], unix_now() + 600, &issuer)
    );
    let r = get("/review/api/approvals", &mallory).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["approvals"],
        json!([])
    );
    assert_eq!(
        get(&format!("/review/api/approvals/{a_id}"), &mallory).await.status,
        404
    );
    assert_eq!(get(&format!("/review/approvals/{a_id}"), &mallory).await.status, 404);

    // `next=`: wherever it says, the page after sign-in is the review app's on this origin.
    let base = url::Url::parse(&s.base).unwrap();
    for next in [
        "//evil.example",
        "/review//evil.example",
        "%2F%2Fevil.example",
        "/review/%2F%2Fevil.example",
        "/review/%252F%252Fevil.example",
        "/review/../../evil",
        "/review/..%2F..%2F%2Fevil.example",
        "%5C%5Cevil.example",
        "/review/%5C%5Cevil.example",
        "/review%5C..%5C%5Cevil.example",
        "https://evil.example/review",
        "/review/%0d%0aSet-Cookie:%20x=1",
        "javascript:alert(1)//review/",
        "/review@evil.example",
    ] {
        let r = get(&format!("/review/login?next={next}"), "").await;
        assert_eq!(r.status, 303, "{next}: {}", r.body);
        let sealed = r.headers["set-cookie"]["pgwarden_review_login=".len()..]
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let to = unseal(&s, "pgwarden_review_login", &sealed).unwrap()["next"]
            .as_str()
            .unwrap()
            .to_string();
        let lands = base.join(&to).unwrap();
        assert_eq!(lands.origin(), base.origin(), "{next} → {to}");
        assert!(lands.path().starts_with("/review"), "{next} → {to} → {lands}");
    }

    // With this origin's headers the same session decides: the refusals above were not for want
    // of a session.
    let r = post(&a_id, &a_hash, &same).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("decided: approved"), "{}", r.body);

    // Signing out: a link or a form from another site does not end Bob's session; his own page's
    // button does.
    let cleared = |r: &common::Response| {
        r.headers
            .get("set-cookie")
            .is_some_and(|c| c.starts_with("pgwarden_review=;"))
    };
    let r = get("/review/logout", &bob).await;
    assert!(
        !cleared(&r) && r.body.contains("Sign out</button>"),
        "{:?}\n{}",
        r.headers,
        r.body
    );
    let logout = async |headers: &[(&str, &str)]| {
        let mut all = vec![("Cookie", bob.as_str())];
        all.extend_from_slice(headers);
        common::http(port, "POST", "/review/logout", &all, Some("")).await
    };
    for headers in [
        vec![("Origin", "null")],
        vec![("Origin", provider_origin.as_str())],
        vec![("Sec-Fetch-Site", "cross-site")],
    ] {
        let r = logout(&headers).await;
        assert_eq!(r.status, 403, "{headers:?}");
        assert!(!cleared(&r), "{headers:?}: {:?}", r.headers);
    }
    let r = logout(&same).await;
    assert!(r.status == 200 && cleared(&r), "{:?}", r.headers);
}

/// The same person under two names: MCP callers signed in by `[oauth]` are their token's `sub`
/// (`alice`), reviewers in the review app their e-mail address (`alice@example.com`), both the
/// defaults, and her access token carries nothing else that names her. Alice, a `dba`, still
/// cannot approve her own call: the review app knows her `sub` at the same provider.
#[tokio::test]
async fn alice_cannot_approve_her_own_call_under_her_other_name_at_the_same_provider() {
    let s = setup_with(1, Client::Confidential, true).await;
    let token = s._oidc.token("alice", &format!("{}/mcp", s.base), "pgwarden").await;
    let alice = s.server.connect((), &token, Era::Legacy).await;
    let sql = "UPDATE orders SET status = 'shipped', touched = touched + 1 WHERE id = 1";
    let pending = asked(&alice, sql, Some(INTENT)).await;
    let approval = pending["approval_id"].as_str().unwrap().to_string();
    let page = format!("/review/approvals/{approval}");

    let mut own = s.signed_in("alice", &page).await;
    assert_eq!(
        own.text("#requester").await,
        "alice",
        "requested as her token's subject"
    );
    assert!(
        own.text("#decide").await.contains("Nobody approves their own request"),
        "{}",
        own.text("#decide").await
    );
    assert_eq!(own.count("#decision").await, 0, "no form for her own call");
    let hash = own.text("#action-hash").await;
    let answer = own
        .eval(&format!(
            "fetch(location.pathname + '/decision', {{method: 'POST', headers: {{'Content-Type': \
             'application/x-www-form-urlencoded'}}, body: 'csrf=' + encodeURIComponent(document.querySelector(\
             'form.signout input[name=csrf]').value) + '&action_hash={hash}&decision=approve'}})\
             .then(async r => [r.status, await r.text()])"
        ))
        .await;
    assert_eq!(answer[0], json!(403), "{answer}");
    assert!(
        answer[1]
            .as_str()
            .unwrap()
            .contains("nobody approves their own request"),
        "{answer}"
    );
    let r = await_call(&alice, &approval, 0).await;
    assert_ne!(
        r.structured_content.as_ref().map(|v| &v["executed"]),
        Some(&json!(true)),
        "{}",
        text(&r)
    );
    assert_eq!(s.orders().await[0], ("open".into(), 0));
    assert_eq!(s.refusals(&approval).len(), 1, "audited: {:?}", s.refusals(&approval));
}
