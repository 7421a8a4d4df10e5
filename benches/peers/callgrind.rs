//! Instructions per read counted by valgrind's callgrind, which needs no hardware counters: a server
//! of its own started under callgrind, warmed up, its counts zeroed, then dumped after the counted reads.

use std::{path::Path, process::Command, time::Duration};

use rmcp::{RoleClient, service::RunningService};

use crate::launch::{Peer, Running, callgrind_out};

/// Under callgrind a server runs 20–100× slower, node's start-up most of all.
const START_WITHIN: Duration = Duration::from_secs(300);
/// How long the warm-up and counted reads may take before the pass is given up (its server killed).
const READS_WITHIN: Duration = Duration::from_secs(900);
/// Lets what the last read leaves behind (see `probe::SETTLE`) run before the dump, at valgrind's pace.
const SETTLE: Duration = Duration::from_secs(1);

/// Whether `valgrind` and `callgrind_control` are on PATH.
pub fn available() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

/// Callgrind's `Ir` (user-space instructions, every thread) per read of `peer` started under it:
/// `warmup` reads, counts zeroed, `reads` reads, dump.
pub async fn instructions(
    peer: Peer<'_>,
    warmup: usize,
    reads: usize,
    read: impl AsyncFn(&RunningService<RoleClient, ()>, usize) -> Result<(), String>,
) -> Result<f64, String> {
    let server = Running::start(|dir| peer.under_callgrind(dir), START_WITHIN).await?;
    let counted = async {
        for i in 0..warmup {
            read(&server.client, i).await?;
        }
        tokio::time::sleep(SETTLE).await;
        control(server.pid(), "--zero")?;
        for i in warmup..warmup + reads {
            read(&server.client, i).await?;
        }
        tokio::time::sleep(SETTLE).await;
        control(server.pid(), "--dump")?;
        // The first dump on request goes to `<out file>.1`.
        let mut out = callgrind_out(server.dir.path()).into_os_string();
        out.push(".1");
        dumped_ir(Path::new(&out))
    };
    let counted = tokio::time::timeout(READS_WITHIN, counted)
        .await
        .unwrap_or_else(|_| Err(format!("reads not done within {READS_WITHIN:?} under callgrind")));
    server.stop().await;
    Ok(counted? as f64 / reads as f64)
}

/// `callgrind_control <action> <pid>`, which answers once the running callgrind has acted.
fn control(pid: u32, action: &str) -> Result<(), String> {
    let out = Command::new("callgrind_control")
        .arg(action)
        .arg(pid.to_string())
        .output()
        .map_err(|e| format!("cannot run `callgrind_control`: {e}"))?;
    let said = String::from_utf8_lossy(&out.stdout);
    match out.status.success() && said.contains("OK") {
        true => Ok(()),
        false => Err(format!(
            "`callgrind_control {action} {pid}` failed: {} {}",
            said.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// The total of a dump: its `summary:` line (`totals:` in older formats), `Ir` being the only event.
fn dumped_ir(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("no callgrind dump at {}: {e}", path.display()))?;
    ["summary:", "totals:"]
        .iter()
        .find_map(|key| text.lines().find_map(|l| l.strip_prefix(key)))
        .and_then(|total| total.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no `summary:` or `totals:` line in {}", path.display()))
}
