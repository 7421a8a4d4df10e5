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

/// The provider package and its script, in `target/oidc-npm`.
const NPM: super::npm::Package = super::npm::Package {
    home: "oidc-npm",
    spec: PACKAGE,
    script: ("provider.mjs", include_str!("../data/oidc/provider.mjs")),
    needed_for: "for the OpenID provider",
};

fn home() -> PathBuf {
    NPM.home()
}

/// Installs the provider once per test process (and target directory, see [`super::npm`]).
fn install_once() -> PathBuf {
    static SCRIPT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| NPM.install()).clone()
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
