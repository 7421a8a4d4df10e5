//! A real OpenID provider for the tests ([`Oidc`]): the `oidc-provider` package (Node), installed
//! with npm under the target directory on first use, running `tests/data/oidc/provider.mjs` on a
//! free loopback port. Its clients `alice`, `bob` and `brief` stand for people (see the script).

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Child,
};

const PACKAGE: &str = "oidc-provider@9.13.3";

pub struct Oidc {
    child: Child,
    /// `http://127.0.0.1:<port>`, as it writes `iss`.
    pub issuer: String,
}

/// Where the provider package and script live: `target/oidc-npm`.
fn home() -> PathBuf {
    let target = std::path::Path::new(super::BIN)
        .parent()
        .and_then(|p| p.parent())
        .unwrap();
    target.join("oidc-npm")
}

/// Installs the provider once per test process ([`install_once`]) and target directory (test
/// processes may race: npm into a private directory, then a rename).
fn install_once() -> PathBuf {
    static SCRIPT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(install).clone()
}

fn install() -> PathBuf {
    let dir = home();
    let script = dir.join("provider.mjs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&script, include_str!("../data/oidc/provider.mjs")).unwrap();
    let modules = dir.join("node_modules");
    if modules.join("oidc-provider").join("package.json").exists() {
        return script;
    }
    let scratch = dir.join(format!("install-{}", std::process::id()));
    let out = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
        .arg(&scratch)
        .arg(PACKAGE)
        .output()
        .expect("npm (Node.js) is needed for the OpenID provider; `.ci/run` installs it");
    assert!(
        out.status.success(),
        "npm install {PACKAGE}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first to finish wins; the others' copies are thrown away.
    if std::fs::rename(scratch.join("node_modules"), &modules).is_err() {
        assert!(modules.exists());
    }
    let _ = std::fs::remove_dir_all(&scratch);
    script
}

impl Oidc {
    pub async fn start() -> Oidc {
        let script = tokio::task::spawn_blocking(install_once).await.unwrap();
        let mut child = tokio::process::Command::new("node")
            .arg(&script)
            .current_dir(home())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let issuer = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the provider starts")
            .unwrap()
            .and_then(|l| l.strip_prefix("issuer ").map(str::to_string))
            .expect("the provider's issuer line");
        Oidc { child, issuer }
    }

    fn port(&self) -> u16 {
        self.issuer.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// An access token for `client` (a person) for `resource`, with `scope`.
    pub async fn token(&self, client: &str, resource: &str, scope: &str) -> String {
        let body = format!(
            "grant_type=client_credentials&client_id={client}&client_secret={client}-secret&scope={}&resource={}",
            scope.replace(' ', "%20"),
            resource.replace(':', "%3A").replace('/', "%2F")
        );
        let r = super::http(
            self.port(),
            "POST",
            "/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 200, "token for {client}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    /// Signs with a new key from now on; the old one leaves the key set.
    pub async fn rotate(&self) {
        let r = super::http(self.port(), "POST", "/test/rotate", &[], Some("")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
