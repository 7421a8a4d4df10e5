//! A real browser for the tests ([`Browser`]): headless Chromium (`/usr/bin/chromium`, the
//! Debian package `chromium`) driven by `playwright-core` (installed with npm under the target
//! directory on first use) through `tests/data/review/driver.mjs`, one command at a time. Each
//! [`Browser`] is one person: its own Chromium with a fresh profile (`--user-data-dir`), so its
//! own cookies.

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
};

const PACKAGE: &str = "playwright-core@1.65.1";
pub const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// The profile directory, removed with the browser.
    _profile: tempfile::TempDir,
}

/// The driver package and its script, in `target/browser-npm`.
const NPM: super::npm::Package = super::npm::Package {
    home: "browser-npm",
    spec: PACKAGE,
    script: ("driver.mjs", include_str!("../data/review/driver.mjs")),
    needed_for: "to drive the browser",
};

fn home() -> PathBuf {
    NPM.home()
}

/// Installs the driver once per test process (and target directory, see [`super::npm`]).
fn install_once() -> PathBuf {
    static SCRIPT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is needed for the review app's browser tests: `apt-get install chromium` (`.ci/run` installs it)"
        );
        NPM.install()
    })
    .clone()
}

/// Where a click or a page load ended: the HTTP status of the page and its address.
#[derive(Debug)]
pub struct Loaded {
    pub status: u16,
    pub url: String,
}

impl Browser {
    /// A new headless Chromium with a fresh profile.
    pub async fn launch() -> Browser {
        let script = tokio::task::spawn_blocking(install_once).await.unwrap();
        let profile = tempfile::Builder::new()
            .prefix("pgw-chromium-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut child = tokio::process::Command::new("node")
            .arg(&script)
            .arg(profile.path())
            .current_dir(home())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(90), stdout.next_line())
            .await
            .expect("Chromium starts within 90 s")
            .unwrap()
            .expect("the driver's first line");
        assert_eq!(ready, r#"{"ready":true}"#, "the driver did not start");
        Browser {
            child,
            stdin,
            stdout,
            _profile: profile,
        }
    }

    /// Runs `command`; its value, or the driver's error.
    pub async fn try_run(&mut self, command: Value) -> Result<Value, String> {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser did not answer {command} within 60 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("the browser driver ended during {command}"));
        let answer: Value = serde_json::from_str(&line).unwrap();
        if answer["ok"] == json!(true) {
            Ok(answer["value"].clone())
        } else {
            Err(format!("{} (at {})", answer["error"], answer["url"]))
        }
    }

    async fn run(&mut self, command: Value) -> Value {
        match self.try_run(command.clone()).await {
            Ok(v) => v,
            Err(e) => {
                let log = self.try_run(json!({"op": "console"})).await.unwrap_or_default();
                let page = self
                    .try_run(json!({"op": "eval", "expression": "document.body ? document.body.innerText : ''"}))
                    .await
                    .unwrap_or_default();
                panic!("browser: {command} failed: {e}\npage text: {page}\nconsole: {log}")
            }
        }
    }

    fn loaded(v: Value) -> Loaded {
        Loaded {
            status: v["status"].as_u64().unwrap_or_default() as u16,
            url: v["url"].as_str().unwrap_or_default().to_string(),
        }
    }

    pub async fn goto(&mut self, url: &str) -> Loaded {
        Self::loaded(self.run(json!({"op": "goto", "url": url})).await)
    }

    pub async fn fill(&mut self, selector: &str, value: &str) {
        self.run(json!({"op": "fill", "selector": selector, "value": value}))
            .await;
    }

    /// Clicks `selector` and waits for the page the click loads.
    pub async fn click_and_load(&mut self, selector: &str) -> Loaded {
        Self::loaded(
            self.run(json!({"op": "click", "selector": selector, "navigates": true}))
                .await,
        )
    }

    /// The text of the first element matching `selector` (waiting for it to exist).
    pub async fn text(&mut self, selector: &str) -> String {
        self.run(json!({"op": "text", "selector": selector}))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the first element matching `selector` contains `text`; its whole text.
    pub async fn wait_text(&mut self, selector: &str, text: &str) -> String {
        self.run(json!({"op": "wait_text", "selector": selector, "text": text}))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// How many elements match `selector`.
    pub async fn count(&mut self, selector: &str) -> u64 {
        self.run(json!({"op": "count", "selector": selector}))
            .await
            .as_u64()
            .unwrap_or_default()
    }

    pub async fn visible(&mut self, selector: &str) -> bool {
        self.run(json!({"op": "visible", "selector": selector}))
            .await
            .as_bool()
            .unwrap_or_default()
    }

    pub async fn url(&mut self) -> String {
        self.run(json!({"op": "url"}))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, expression: &str) -> Value {
        self.run(json!({"op": "eval", "expression": expression})).await
    }

    /// Runs `expression` in the page (one that submits a form) and waits for the page it loads.
    pub async fn submit(&mut self, expression: &str) -> Loaded {
        Self::loaded(self.run(json!({"op": "submit", "expression": expression})).await)
    }

    /// What the page logged (and its uncaught errors).
    pub async fn console(&mut self) -> Vec<String> {
        let v = self.run(json!({"op": "console"})).await;
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
