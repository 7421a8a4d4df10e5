//! What a run costs, per read: the warm-up, the measured loop (CPU of the measured process and of
//! the Postgres backends serving it, wall time), then strace and perf attached around shorter loops.

use std::{
    collections::HashMap,
    process::Stdio,
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal, kill_process};

/// Lets what a read leaves behind (the reference server's un-awaited `ROLLBACK`, a statement
/// close) reach the backend before a snapshot, so that it is counted with the loop.
const SETTLE: Duration = Duration::from_millis(100);

/// How many reads each pass makes.
pub struct Plan {
    pub warmup: usize,
    pub iterations: usize,
    /// Reads with strace, then perf, attached; 0 for neither.
    pub traced: usize,
    pub counter: Counter,
}

/// What counts the instructions of a read.
#[derive(Clone, Copy)]
pub enum Counter {
    /// `perf stat`, attached around the traced reads.
    Perf,
    /// Callgrind, over this many reads of a server of its own started under it (see `callgrind`).
    Callgrind(usize),
}

/// What one run measured, per read.
pub struct Report {
    /// CPU of the measured process, ns.
    pub cpu: Option<f64>,
    /// Median wall time of a read, ns.
    pub wall: f64,
    pub syscalls: Result<Syscalls, String>,
    pub instructions: Result<f64, String>,
    /// CPU of the Postgres backends that served the run, ns.
    pub backend: Result<f64, String>,
}

pub struct Syscalls {
    pub per_read: f64,
    /// The most frequent (at least one in 20 reads), per read.
    pub top: Vec<(String, f64)>,
}

/// Warm-up, the measured loop, then the shorter traced passes. An error is a read that failed.
pub async fn measure(
    plan: &Plan,
    process: Process,
    backends: &Backends<'_>,
    read: impl AsyncFn(usize) -> Result<(), String>,
) -> Result<Report, String> {
    let mut n = 0;
    for _ in 0..plan.warmup {
        read(n).await?;
        n += 1;
    }
    tokio::time::sleep(SETTLE).await;
    let (cpu_before, backends_before) = (process.cpu_ns(), backends.cpu_ns().await);
    let mut samples = Vec::with_capacity(plan.iterations);
    for _ in 0..plan.iterations {
        let t = Instant::now();
        read(n).await?;
        samples.push(t.elapsed());
        n += 1;
    }
    tokio::time::sleep(SETTLE).await;
    let (cpu_after, backends_after) = (process.cpu_ns(), backends.cpu_ns().await);
    samples.sort();

    let per_read = |total: u64| total as f64 / plan.iterations as f64;
    let cpu = cpu_before.zip(cpu_after).map(|(b, a)| per_read(a.saturating_sub(b)));
    let backend = backends_before
        .and_then(|before| backend_delta(&before, &backends_after?))
        .map(per_read);

    let mut traced = async |tool: Result<Attached, String>| -> Result<String, String> {
        let tool = tool?;
        for _ in 0..plan.traced {
            read(n).await?;
            n += 1;
        }
        tokio::time::sleep(SETTLE).await;
        tool.finish().await
    };
    let (syscalls, instructions) = match plan.traced {
        0 => (Err("not traced".into()), Err("not traced".into())),
        _ => {
            let syscalls = traced(Attached::strace(process.pid()).await).await;
            let syscalls = syscalls.and_then(|out| parse_strace(&out, plan.traced));
            let instructions = match plan.counter {
                Counter::Perf => traced(Attached::perf(process.pid()).await).await,
                Counter::Callgrind(_) => {
                    Err("callgrind counts a server it starts under valgrind, not this client".into())
                }
            };
            let instructions = instructions
                .and_then(|out| parse_perf(&out))
                .map(|i| i / plan.traced as f64);
            (syscalls, instructions)
        }
    };
    Ok(Report {
        cpu,
        wall: samples[samples.len() / 2].as_nanos() as f64,
        syscalls,
        instructions,
        backend,
    })
}

/// The process whose CPU a run counts.
#[derive(Clone, Copy)]
pub enum Process {
    /// This benchmark: the raw tokio-postgres client.
    Myself,
    Server(u32),
}

impl Process {
    fn pid(self) -> u32 {
        match self {
            Process::Myself => std::process::id(),
            Process::Server(pid) => pid,
        }
    }

    /// CPU used so far by every thread of the process, ns.
    fn cpu_ns(self) -> Option<u64> {
        match self {
            Process::Myself => {
                let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                // SAFETY: `ts` is a valid timespec for the call to write.
                let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
                (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
            }
            Process::Server(pid) => stat_cpu_ns(pid),
        }
    }
}

/// utime + stime of a whole process (/proc/<pid>/stat), ns, at clock-tick resolution.
fn stat_cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command (which may hold spaces and parentheses) come fields 3…; utime is 14.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 1_000_000_000 / clock_tick_hz())
}

pub fn clock_tick_hz() -> u64 {
    // SAFETY: sysconf reads a constant of the system and has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// On-CPU time of a backend (one thread), ns: the scheduler's own count where the kernel keeps it.
fn backend_cpu_ns(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .or_else(|| stat_cpu_ns(pid as u32))
}

/// The Postgres backends that serve a run.
pub enum Backends<'a> {
    /// One connection of this process.
    One(i32),
    /// Every client backend of the database but this process's (`skip`, the monitor's own): the
    /// connections of the one server running.
    Server {
        monitor: &'a tokio_postgres::Client,
        skip: i32,
    },
}

impl Backends<'_> {
    /// CPU used so far by each backend, ns.
    async fn cpu_ns(&self) -> Result<HashMap<i32, u64>, String> {
        let pids: Vec<i32> = match self {
            Backends::One(pid) => vec![*pid],
            Backends::Server { monitor, skip } => monitor
                .query(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                     AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND pid <> $1",
                    &[skip],
                )
                .await
                .map_err(|e| format!("listing the server's backends: {e}"))?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        };
        pids.into_iter()
            .map(|pid| {
                let ns = backend_cpu_ns(pid)
                    .ok_or_else(|| format!("cannot read /proc/{pid}: the backends must run on this machine"))?;
                Ok((pid, ns))
            })
            .collect()
    }
}

/// CPU the backends used between two snapshots; a backend that connected in between counts whole.
fn backend_delta(before: &HashMap<i32, u64>, after: &HashMap<i32, u64>) -> Result<u64, String> {
    if let Some(gone) = before.keys().find(|pid| !after.contains_key(pid)) {
        return Err(format!("backend {gone} disconnected during the loop; its CPU is lost"));
    }
    Ok(after
        .iter()
        .map(|(pid, ns)| ns.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum())
}

/// strace or perf attached to a process for one loop; killed if dropped before [`Attached::finish`].
struct Attached {
    child: std::process::Child,
    tool: &'static str,
    dir: tempfile::TempDir,
}

impl Attached {
    /// `strace -c -f -p`, once it traces every thread of `pid`.
    async fn strace(pid: u32) -> Result<Attached, String> {
        let out = ["-f", "-c", "-U", "calls,name", "-o"];
        let mut attached = Attached::spawn("strace", &out, pid)?;
        let tracer = attached.child.id().to_string();
        for _ in 0..500 {
            if traced_by(pid, &tracer) {
                return Ok(attached);
            }
            if !matches!(attached.child.try_wait(), Ok(None)) {
                return Err(format!("strace stopped at once: {}", attached.stderr()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(format!("strace did not attach within 5 s: {}", attached.stderr()))
    }

    /// `perf stat -e instructions:u -p`; perf gives no sign that it counts, so it gets a moment.
    async fn perf(pid: u32) -> Result<Attached, String> {
        let args = ["stat", "-e", "instructions:u", "-x", ",", "-o"];
        let mut attached = Attached::spawn("perf", &args, pid)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        match attached.child.try_wait() {
            Ok(None) => Ok(attached),
            _ => Err(format!("perf stopped at once: {}", attached.stderr())),
        }
    }

    /// `tool <args> <output file> -p <pid>`, its stderr kept for the reason it fails.
    fn spawn(tool: &'static str, args: &[&str], pid: u32) -> Result<Attached, String> {
        let dir = tempfile::Builder::new()
            .prefix("pgw-peers-")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let stderr = std::fs::File::create(dir.path().join("stderr")).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(tool)
            .args(args)
            .arg(dir.path().join("out"))
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("`{tool}` is not installed"),
                _ => format!("cannot run `{tool}`: {e}"),
            })?;
        Ok(Attached { child, tool, dir })
    }

    fn stderr(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default();
        text.trim().lines().last().unwrap_or("no output").to_string()
    }

    /// Stops it with SIGINT (strace detaches, perf stops counting; both then write their summary)
    /// and returns that summary.
    async fn finish(mut self) -> Result<String, String> {
        let pid = Pid::from_raw(self.child.id() as i32).ok_or("no pid")?;
        kill_process(pid, Signal::INT).map_err(|e| format!("stopping {}: {e}", self.tool))?;
        for _ in 0..1000 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return std::fs::read_to_string(self.dir.path().join("out"))
                    .map_err(|e| format!("{} wrote no summary ({e}): {}", self.tool, self.stderr()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(format!("{} did not stop within 10 s of SIGINT", self.tool))
    }
}

impl Drop for Attached {
    /// SIGINT first, so that strace detaches cleanly from the process it traces; then SIGKILL.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process(pid, Signal::INT);
        }
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether every thread of `pid` has `tracer` as its tracer.
fn traced_by(pid: u32, tracer: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("status")).is_ok_and(|status| {
            status
                .lines()
                .any(|l| l.strip_prefix("TracerPid:").is_some_and(|t| t.trim() == tracer))
        })
    })
}

/// `strace -c -U calls,name` output: `<calls> <syscall>` lines, then `<calls> total`.
fn parse_strace(out: &str, reads: usize) -> Result<Syscalls, String> {
    let mut counts: Vec<(String, f64)> = Vec::new();
    let mut total = None;
    for line in out.lines() {
        let mut words = line.split_whitespace();
        let (Some(Ok(calls)), Some(name)) = (words.next().map(str::parse::<u64>), words.next()) else {
            continue;
        };
        let per_read = calls as f64 / reads as f64;
        match name {
            "total" => total = Some(per_read),
            _ => counts.push((name.to_string(), per_read)),
        }
    }
    counts.sort_by(|a, b| b.1.total_cmp(&a.1));
    counts.retain(|(_, per_read)| *per_read >= 0.05);
    counts.truncate(8);
    let per_read = total.ok_or_else(|| format!("no total in strace's summary: {out:?}"))?;
    Ok(Syscalls { per_read, top: counts })
}

/// `perf stat -x,` output: `<count>,,instructions:u,…`, or `<not supported>` in place of the count.
fn parse_perf(out: &str) -> Result<f64, String> {
    let line = out
        .lines()
        .find(|l| l.contains("instructions"))
        .ok_or_else(|| format!("perf counted nothing: {:?}", out.trim()))?;
    let count = line.split(',').next().unwrap_or_default();
    match count.parse::<f64>() {
        Ok(n) => Ok(n),
        Err(_) if count == "<not supported>" => {
            Err("`instructions:u` is <not supported>: this machine exposes no hardware counters".into())
        }
        Err(_) => Err(format!("perf reported `{}`", line.trim())),
    }
}
