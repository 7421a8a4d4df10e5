//! pgwarden's local review console from the outside: a stand-in for the browser pgwarden launches
//! ([`FakeBrowser`]), and the console's HTTP API played as its pages play it ([`Console`], [`http`]).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use rmcp::ClientHandler;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{eventually, mcp::Mcp};

/// What the "browser" pgwarden launches does with the `file://` page it is given: reads the page
/// and follows its redirect (an `http` URL it follows directly). It records the URL it lands on in
/// `urls`, its argv in `argv` and its environment in `env`, in its own directory.
pub struct FakeBrowser {
    dir: tempfile::TempDir,
}

impl FakeBrowser {
    /// The browser command, ready for [`FakeBrowser::install`] or a server's `$BROWSER`.
    pub fn new() -> FakeBrowser {
        let dir = tempfile::Builder::new()
            .prefix("pgw-browser-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("browser.sh"),
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{d}/argv'\nenv >> '{d}/env'\n\
                 case \"$1\" in file://*) sed -n 's/^location.replace(\"\\(.*\\)\");$/\\1/p' \"${{1#file://}}\" ;;\n\
                 *) printf '%s\\n' \"$1\" ;; esac >> '{d}/urls'\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("browser.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeBrowser { dir }
    }

    /// The browser an in-process server launches from now on.
    pub fn install<H: ClientHandler>(mcp: &Mcp<H>) -> FakeBrowser {
        let browser = FakeBrowser::new();
        mcp.console().use_browser(browser.command().to_str().unwrap());
        browser
    }

    /// The command pgwarden runs.
    pub fn command(&self) -> PathBuf {
        self.dir.path().join("browser.sh")
    }

    /// What it recorded in `what` (`argv`, `env` or `urls`), empty before it ran.
    pub fn recorded(&self, what: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(what)).unwrap_or_default()
    }

    /// The URLs it landed on, in order.
    pub fn urls(&self) -> Vec<String> {
        self.recorded("urls").lines().map(str::to_string).collect()
    }

    /// Waits for the launch and returns (port, secret) from `http://127.0.0.1:PORT/login#k=SECRET`.
    pub async fn login_url(&self) -> (u16, String) {
        let url = eventually(Duration::from_secs(5), "pgwarden to open the browser", async || {
            self.urls().last().cloned()
        })
        .await;
        let rest = url.strip_prefix("http://127.0.0.1:").expect("loopback URL");
        let (port, rest) = rest.split_once('/').unwrap();
        let secret = rest.strip_prefix("login#k=").expect("secret in the fragment");
        (port.parse().unwrap(), secret.to_string())
    }
}

/// One HTTP/1.1 exchange with the console on `port`; a `Host` header is added unless given.
pub async fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or_default());
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// An HTTP answer: its status, headers (names lowercased) and body.
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A signed-in console session, as the page holds it.
pub struct Console {
    pub port: u16,
    pub cookie: String,
    pub origin: String,
}

impl Console {
    /// Signs in the way `login.js` does: POST the fragment's secret with the page's Origin.
    pub async fn sign_in(port: u16, secret: &str) -> Console {
        let origin = format!("http://127.0.0.1:{port}");
        let page = http(port, "GET", "/login", &[], None).await;
        assert_eq!(page.status, 200);
        let r = http(
            port,
            "POST",
            "/api/login",
            &[("Origin", &origin), ("Content-Type", "application/json")],
            Some(&json!({ "secret": secret }).to_string()),
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.body);
        let set = r.headers.get("set-cookie").expect("a session cookie");
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        let cookie = set.split(';').next().unwrap().to_string();
        Console { port, cookie, origin }
    }

    /// Signs in through the link pgwarden opened in `browser`.
    pub async fn open(browser: &FakeBrowser) -> Console {
        let (port, secret) = browser.login_url().await;
        Console::sign_in(port, &secret).await
    }

    pub async fn pending(&self) -> Value {
        let r = http(self.port, "GET", "/api/pending", &[("Cookie", &self.cookie)], None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// Decides the approval `id` with the hash the console shows for it.
    pub async fn decide(&self, id: &str, decision: &str, max_rows: Option<u64>, reason: Option<&str>) -> Response {
        let listed = self.pending().await;
        let a = listed["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["approval_id"] == id)
            .cloned()
            .expect("listed");
        let csrf = listed["csrf"].as_str().unwrap().to_string();
        let body = json!({
            "approval_id": id,
            "action_hash": a["action_hash"],
            "decision": decision,
            "max_rows_affected": max_rows,
            "reason": reason,
        });
        http(
            self.port,
            "POST",
            "/api/decide",
            &[
                ("Cookie", &self.cookie),
                ("Origin", &self.origin),
                ("Content-Type", "application/json"),
                ("X-CSRF-Token", &csrf),
            ],
            Some(&body.to_string()),
        )
        .await
    }
}
