//! Start-up to `initialize` answered: a server spawned afresh with a raw JSON-RPC `initialize` line
//! on its stdin, timed until the first line on its stdout; its CPU read before it is stopped.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::launch::{Peer, server_dir, stderr_of};

/// How long a start may take before the run is reported as failed.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// Medians over the timed starts, ns.
pub struct Startup {
    pub wall: f64,
    pub cpu: f64,
}

/// `starts` timed starts of `peer`, after one untimed start that warms the page cache.
pub async fn startup(peer: Peer<'_>, starts: usize) -> Result<Startup, String> {
    let mut walls = Vec::with_capacity(starts);
    let mut cpus = Vec::with_capacity(starts);
    for n in 0..=starts {
        let (wall, cpu) = start_once(peer).await?;
        if n > 0 {
            walls.push(wall);
            cpus.push(cpu);
        }
    }
    Ok(Startup {
        wall: median(walls),
        cpu: median(cpus),
    })
}

/// Wall time from spawn to the answer and the server's CPU by then, ns; the server is stopped
/// (stdin closed, then killed if it lingers) and reaped.
async fn start_once(peer: Peer<'_>) -> Result<(f64, f64), String> {
    let dir = server_dir()?;
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::from(peer.command(dir.path()));
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "peers", "version": "0"}}});
    let line = format!("{initialize}\n");

    let t = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start the server: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut answer = String::new();
    let answered = async {
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await?;
        stdout.read_line(&mut answer).await
    };
    let answered = tokio::time::timeout(ANSWER_WITHIN, answered).await;
    let wall = t.elapsed().as_nanos() as f64;
    let cpu = child.id().and_then(threads_cpu_ns);

    drop(stdin);
    if tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    match answered {
        Err(_) => {
            return Err(format!(
                "no answer to `initialize` within {ANSWER_WITHIN:?}; {}",
                stderr_of(&dir)
            ));
        }
        Ok(Err(e)) => return Err(format!("talking to the server: {e}; {}", stderr_of(&dir))),
        Ok(Ok(_)) => {}
    }
    let reply: Value = serde_json::from_str(&answer).unwrap_or_default();
    if reply["id"] != 1 || !reply["result"]["serverInfo"].is_object() {
        return Err(format!("the first line is not the answer to `initialize`: {answer:?}"));
    }
    let cpu = cpu.ok_or("cannot read the server's threads under /proc")?;
    Ok((wall, cpu as f64))
}

/// On-CPU time of the threads of `pid` so far, ns (`/proc/<pid>/task/*/schedstat`): unlike
/// utime + stime, not rounded to a clock tick, which is as long as a whole start. A thread that
/// already ended is not counted.
fn threads_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let on_cpu = |task: std::fs::DirEntry| {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        text.split_whitespace().next()?.parse::<u64>().ok()
    };
    Some(tasks.flatten().filter_map(on_cpu).sum())
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
