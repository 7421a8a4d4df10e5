//! The servers this bench starts itself, over stdio: `pgwarden serve` with the flags and environment
//! the test builder gives it, and the reference server; either one bare or under callgrind.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use rmcp::{RoleClient, ServiceExt, service::RunningService};

use crate::common::{self, TestDb};

/// A server the bench can start.
#[derive(Clone, Copy)]
pub enum Peer<'a> {
    Pgwarden(&'a TestDb),
    /// `node <entry> <url>`: the measured pid is node itself.
    Reference {
        entry: &'a Path,
        url: &'a str,
    },
}

impl Peer<'_> {
    /// Its command line, with what it writes (trail, exports, runtime directory) under `dir`.
    pub fn command(self, dir: &Path) -> Command {
        match self {
            // As `Setup::command` in tests/common builds it: nothing from this environment that
            // `serve` reads, no browser, logging at `warn` like the measured run.
            Peer::Pgwarden(db) => {
                let mut cmd = Command::new(common::BIN);
                for (key, _) in std::env::vars_os() {
                    if key.to_string_lossy().starts_with("PGWARDEN_") {
                        cmd.env_remove(key);
                    }
                }
                cmd.arg("serve")
                    .arg("--database-url")
                    .arg(db.dsn())
                    .arg("--audit-log")
                    .arg(dir.join("audit.jsonl"))
                    .arg("--export-dir")
                    .arg(dir.join("exports"))
                    .env("XDG_RUNTIME_DIR", dir.join("run"))
                    .env("PGWARDEN_LOG", "warn");
                for key in ["DATABASE_URL", "BROWSER", "DISPLAY", "WAYLAND_DISPLAY"] {
                    cmd.env_remove(key);
                }
                cmd
            }
            Peer::Reference { entry, url } => {
                let mut cmd = Command::new("node");
                cmd.arg(entry).arg(url);
                cmd
            }
        }
    }

    /// The same under `valgrind --tool=callgrind`, its dumps to [`callgrind_out`]`(dir)`.`<n>`.
    pub fn under_callgrind(self, dir: &Path) -> Command {
        let bare = self.command(dir);
        let mut cmd = Command::new("valgrind");
        cmd.arg("--tool=callgrind")
            .arg("--quiet")
            .arg(format!("--callgrind-out-file={}", callgrind_out(dir).display()))
            .arg(bare.get_program())
            .args(bare.get_args());
        for (key, value) in bare.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd
    }
}

pub fn callgrind_out(dir: &Path) -> PathBuf {
    dir.join("callgrind.out")
}

/// A fresh directory for one server's files.
pub fn server_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("pgw-peers-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())
}

/// A server started by the bench, with an rmcp client on its stdio; killed on drop.
pub struct Running {
    pub client: RunningService<RoleClient, ()>,
    pub child: tokio::process::Child,
    pub dir: tempfile::TempDir,
}

impl Running {
    /// The server `command` gives for a fresh directory, with an MCP session (the same client type
    /// as the test builder's); its stderr goes to `stderr.log` there, quoted if it does not answer.
    pub async fn start(command: impl FnOnce(&Path) -> Command, within: Duration) -> Result<Running, String> {
        let dir = server_dir()?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?;
        let cmd = command(dir.path());
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = tokio::process::Command::from(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start `{program}`: {e}"))?;
        let io = (child.stdout.take().expect("piped"), child.stdin.take().expect("piped"));
        let client = match tokio::time::timeout(within, ().serve(io)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(format!("no MCP session with `{program}`: {e}; {}", stderr_of(&dir))),
            Err(_) => {
                return Err(format!(
                    "`{program}` did not answer within {within:?}; {}",
                    stderr_of(&dir)
                ));
            }
        };
        Ok(Running { client, child, dir })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    pub async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.child.kill().await;
    }
}

/// The last lines a server wrote to stderr, for an error.
pub fn stderr_of(dir: &tempfile::TempDir) -> String {
    let text = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let lines: Vec<&str> = text.trim().lines().collect();
    match lines.len() {
        0 => "no output on stderr".into(),
        n => lines[n.saturating_sub(3)..].join(" / "),
    }
}
