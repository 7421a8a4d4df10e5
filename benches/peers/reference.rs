//! The MCP reference server `@modelcontextprotocol/server-postgres`, pinned: installed with npm
//! under the target directory on first use, run as `node <entry> <url>` ([`crate::launch::Peer`]).

use std::path::{Path, PathBuf};

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
