//! The MCP reference server `@modelcontextprotocol/server-postgres`, pinned: installed with npm
//! under the target directory on first use, run as `node <entry> <url>`, spoken to over stdio.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use rmcp::{RoleClient, ServiceExt, service::RunningService};
use serde_json::Value;

use crate::common;

const REFERENCE_PACKAGE: &str = "@modelcontextprotocol/server-postgres";
pub const REFERENCE_VERSION: &str = "0.6.2";

/// The reference server's entry point, installed under `target/peers-npm` on first use.
pub fn install_reference() -> Result<PathBuf, String> {
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(format!(
                "`node --version` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(e) => return Err(format!("`node` is not available: {e}; install Node.js 18 or later")),
    }
    let target = Path::new(common::BIN).parent().and_then(Path::parent);
    let dir = target
        .ok_or("no target directory above the pgwarden binary")?
        .join("peers-npm");
    let package = dir.join("node_modules").join(REFERENCE_PACKAGE);
    let installed = std::fs::read_to_string(package.join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .is_some_and(|p| p["version"] == REFERENCE_VERSION);
    if !installed {
        let spec = format!("{REFERENCE_PACKAGE}@{REFERENCE_VERSION}");
        println!("installing {spec} into {} (first run only)", dir.display());
        let out = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&dir)
            .arg(&spec)
            .output()
            .map_err(|e| format!("`npm` is not available: {e}"))?;
        if !out.status.success() {
            return Err(format!("`npm install {spec}` failed: {}", npm_error(&out.stderr)));
        }
    }
    let entry = package.join("dist").join("index.js");
    match entry.exists() {
        true => Ok(entry),
        false => Err(format!("{} is missing after `npm install`", entry.display())),
    }
}

/// The gist of npm's error output: its error code and the first line that says what failed.
fn npm_error(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let lines = stderr.lines().map(|l| l.trim_start_matches("npm error").trim());
    let code = lines.clone().find(|l| l.starts_with("code "));
    let what = lines
        .clone()
        .find(|l| !l.is_empty() && !["code ", "syscall ", "errno ", "at "].iter().any(|p| l.starts_with(p)));
    match (code, what) {
        (None, None) => stderr.trim().to_string(),
        (code, what) => [code, what].into_iter().flatten().collect::<Vec<_>>().join("; "),
    }
}

/// The database as a URL for node-postgres: over the cluster's socket (`host=` a directory), as
/// the agent role, like `pgwarden serve --database-url`.
pub fn reference_url(db: &common::TestDb) -> String {
    let c = &common::cluster().cluster;
    let mut url = url::Url::parse(&format!(
        "postgresql://{}@localhost:{}/{}",
        common::AGENT,
        c.port,
        db.name
    ))
    .expect("a valid URL");
    url.query_pairs_mut()
        .append_pair("host", &c.socket_dir().to_string_lossy());
    url.to_string()
}

/// The reference server run as `node <entry> <url>` (the measured pid is node itself), killed on drop.
pub struct Reference {
    pub client: RunningService<RoleClient, ()>,
    pub child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Reference {
    pub async fn start(entry: &Path, url: &str) -> Result<Reference, String> {
        let dir = tempfile::Builder::new()
            .prefix("pgw-peers-ref-")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new("node")
            .arg(entry)
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start node: {e}"))?;
        // The client and transport rmcp's `TokioChildProcess` wraps, on the child's pipes, exactly
        // as the test builder speaks to `pgwarden serve`.
        let io = (child.stdout.take().expect("piped"), child.stdin.take().expect("piped"));
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        let client = match tokio::time::timeout(Duration::from_secs(60), ().serve(io)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(format!("no MCP session with the reference server: {e}; {}", log_text())),
            Err(_) => {
                return Err(format!(
                    "the reference server did not answer within 60 s; {}",
                    log_text()
                ));
            }
        };
        Ok(Reference {
            client,
            child,
            _dir: dir,
        })
    }

    pub async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.child.kill().await;
    }
}
