//! What the run prints: the point read's table with its notes, the 1,000-row read's table and the
//! start-up's, each figure next to its baselines from the same run.

use crate::{
    Read, common,
    probe::{self, Counter, Plan, Report},
    startup::Startup,
};

/// The point read: one row per run, then what is missing and why, then how each figure is taken.
pub fn print_report(plan: &Plan, db: &common::TestDb, url: &str, runs: [(&str, Result<Report, String>); 4]) {
    let [(_, raw), (_, pgwarden), (_, reference), (_, bare)] = &runs;
    let backend = |r: &Result<Report, String>| r.as_ref().ok().and_then(|r| r.backend.clone().ok());

    println!();
    println!(
        "sequential point read `{}` (100k rows, n varying), database `{}`",
        Read::Point.sql(0).replace("= 1", "= n"),
        db.name
    );
    let (tool, how) = match plan.counter {
        Counter::Perf => ("perf", format!("over the {} traced reads", plan.traced)),
        Counter::Callgrind(reads) => (
            "callgrind",
            format!(
                "over {reads} reads of a server of its own under callgrind, after {} warm-up",
                plan.warmup
            ),
        ),
    };
    println!(
        "{} reads measured after {} warm-up; syscalls over {} more reads; instructions ({tool}) {how}",
        plan.iterations, plan.warmup, plan.traced
    );
    println!("servers over stdio with the same rmcp client; the reference server reads {url}");
    println!();
    println!(
        "{:<30} {:>10} {:>8} {:>8} {:>11} {:>9} {:>12} {:>12} {:>8}",
        "per read", "CPU", "vs ref", "vs raw", "wall p50", "syscalls", "instructions", "backend CPU", "vs bare"
    );
    let row = |name: &str, run: &Result<Report, String>, vs_ref: String, vs_raw: String| {
        let Ok(r) = run else {
            println!("{name:<30} skipped: see below");
            return;
        };
        println!(
            "{name:<30} {:>10} {:>8} {:>8} {:>11} {:>9} {:>12} {:>12} {:>8}",
            us(r.cpu),
            vs_ref,
            vs_raw,
            us(Some(r.wall)),
            r.syscalls
                .as_ref()
                .map_or("n/a".into(), |s| format!("{:.1}", s.per_read)),
            r.instructions.as_ref().map_or("n/a".into(), |i| format!("{i:.0}")),
            us(r.backend.clone().ok()),
            ratio(r.backend.clone().ok(), backend(bare)),
        );
    };
    for (name, run) in &runs[..3] {
        let mine = cpu(run);
        row(name, run, ratio(mine, cpu(reference)), ratio(mine, cpu(raw)));
    }
    // The backend baseline; its CPU is the client's, like the raw read's.
    row(runs[3].0, bare, "—".into(), "—".into());

    println!();
    for (name, run) in &runs {
        match run {
            Err(e) => println!("{name}: skipped ({e})"),
            Ok(r) => {
                if let Ok(s) = &r.syscalls {
                    let top: Vec<String> = s.top.iter().map(|(n, c)| format!("{n} {c:.1}")).collect();
                    println!("{name}: syscalls per read: {}", top.join(", "));
                }
                if let Err(e) = &r.backend {
                    println!("{name}: backend CPU: {e}");
                }
            }
        }
    }
    let measured = || runs.iter().filter_map(|(name, run)| Some((*name, run.as_ref().ok()?)));
    unavailable(
        "syscalls: strace",
        measured().map(|(n, r)| (n, r.syscalls.as_ref().err())),
    );
    unavailable(
        &format!("instructions: {tool}"),
        measured().map(|(n, r)| (n, r.instructions.as_ref().err())),
    );

    let tick = 1e9 / probe::clock_tick_hz() as f64 / plan.iterations as f64;
    println!();
    println!(
        "CPU: a server's utime + stime (/proc/<pid>/stat, all threads; tick resolution ±{:.1} µs per \
         read at {} reads); raw tokio-postgres: this process (CLOCK_PROCESS_CPUTIME_ID), prepare + \
         query per read over one connection; vs ref, vs raw: that CPU against the reference server's \
         and raw tokio-postgres's.",
        tick / 1e3,
        plan.iterations
    );
    println!(
        "syscalls: `strace -c -f -p` attached to the warm process (every thread) around the traced reads \
         only, no start-up; the raw rows count this client."
    );
    match plan.counter {
        Counter::Perf => {
            println!("instructions: `perf stat -e instructions:u -p` attached the same way, around more reads.")
        }
        Counter::Callgrind(_) => println!(
            "instructions: callgrind's Ir (user space, every thread) in a server started under \
             `valgrind --tool=callgrind`: warm-up, `callgrind_control --zero`, the counted reads, \
             `--dump`; the same reads as the measured loop, nothing of start-up or shutdown."
        ),
    }
    println!(
        "backend CPU: on-CPU time (/proc/<pid>/schedstat) of every client backend serving the run, \
         over the measured loop; vs bare: against `SELECT 1` through raw tokio-postgres."
    );
    if let (Some(p), Some(b), Some(r)) = (backend(pgwarden), backend(bare), backend(raw)) {
        println!(
            "pgwarden's backend CPU per read: {:.2}x a bare `SELECT 1`, {:.2}x the same point read from raw \
             tokio-postgres (issue 19 asks for at most 1.5x a bare SELECT).",
            p / b,
            p / r
        );
    }
}

/// Says once why a figure is missing when every run misses it for the same reason, else per run.
fn unavailable<'a>(what: &str, runs: impl Iterator<Item = (&'a str, Option<&'a String>)>) {
    let runs: Vec<(&str, Option<&String>)> = runs.collect();
    match runs.first() {
        Some((_, Some(first))) if runs.iter().all(|(_, e)| *e == Some(*first)) => {
            println!("{what} unavailable ({first})")
        }
        _ => {
            for (name, e) in runs {
                if let Some(e) = e {
                    println!("{what} unavailable for {name} ({e})");
                }
            }
        }
    }
}

/// `a` against `b`, as `1.23x`.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

fn cpu(run: &Result<Report, String>) -> Option<f64> {
    run.as_ref().ok().and_then(|r| r.cpu)
}

fn us(ns: Option<f64>) -> String {
    ns.map_or("n/a".into(), |ns| format!("{:.1} µs", ns / 1e3))
}

/// The 1,000-row read: CPU and wall per read, against the reference server and raw tokio-postgres.
pub fn print_range(plan: &Plan, runs: [(&str, Result<Report, String>); 3]) {
    let [(_, raw), _, (_, reference)] = &runs;
    println!();
    println!(
        "1,000-row read `{}` (n varying), {} reads measured after {} warm-up; pgwarden asks for \
         `max_rows` 1000 (its default cap is 500)",
        Read::Range
            .sql(0)
            .replace("> 0 AND id <= 1000", "> n AND id <= n + 1000"),
        plan.iterations,
        plan.warmup
    );
    println!(
        "{:<30} {:>10} {:>8} {:>8} {:>11} {:>12}",
        "per 1,000-row read", "CPU", "vs ref", "vs raw", "wall p50", "backend CPU"
    );
    for (name, run) in &runs {
        match run {
            Ok(r) => println!(
                "{name:<30} {:>10} {:>8} {:>8} {:>11} {:>12}",
                us(r.cpu),
                ratio(r.cpu, cpu(reference)),
                ratio(r.cpu, cpu(raw)),
                us(Some(r.wall)),
                us(r.backend.clone().ok()),
            ),
            Err(e) => println!("{name:<30} skipped ({e})"),
        }
    }
    let tick = 1e9 / probe::clock_tick_hz() as f64 / plan.iterations as f64;
    println!(
        "CPU, backend CPU: as for the point read, over this loop (tick resolution ±{:.1} µs per read).",
        tick / 1e3
    );
}

/// The start-up of each server, pgwarden's against the reference server's.
pub fn print_startup(starts: usize, runs: [(&str, Result<Startup, String>); 2]) {
    let [_, (_, reference)] = &runs;
    println!();
    println!(
        "start-up to `initialize` answered: {starts} starts after one untimed start, a fresh directory each, \
         medians"
    );
    println!(
        "{:<30} {:>10} {:>8} {:>10} {:>8}",
        "per start", "wall", "vs ref", "CPU", "vs ref"
    );
    let wall = |r: &Result<Startup, String>| r.as_ref().ok().map(|s| s.wall);
    let cpu = |r: &Result<Startup, String>| r.as_ref().ok().map(|s| s.cpu);
    let ms = |ns: f64| format!("{:.2} ms", ns / 1e6);
    for (name, run) in &runs {
        match run {
            Ok(s) => println!(
                "{name:<30} {:>10} {:>8} {:>10} {:>8}",
                ms(s.wall),
                ratio(Some(s.wall), wall(reference)),
                ms(s.cpu),
                ratio(Some(s.cpu), cpu(reference)),
            ),
            Err(e) => println!("{name:<30} skipped ({e})"),
        }
    }
    println!(
        "wall: spawn to the first line on stdout, the answer to a raw JSON-RPC `initialize` written at \
         spawn; CPU: the server's threads by then (/proc/<pid>/task/*/schedstat), read before it is \
         stopped (stdin closed) and reaped."
    );
}
