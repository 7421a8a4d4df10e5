//! The cost of signing the audit trail, in one run: a record appended without a key (the baseline),
//! a signed record (what `serve` writes), a record appended durably (fsync, as decisions are, then
//! its checkpoint), a checkpoint (sign the head, fsync log and checkpoint file), and an Ed25519
//! signature alone. CPU time of this process per operation (user + system),
//! which is steadier here than wall time; wall time is shown too.
//!
//! Run: `cargo bench --bench audit` (optionally `-- --iterations 2000`).

#![allow(clippy::print_stdout)] // a test or benchmark reports on stdout

use std::time::{Duration, Instant};

use pgwarden::audit::{AuditLog, AuditOptions, Event, Record, sign::SigningKey};

fn cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn record(i: usize) -> Record {
    Record {
        event: Some(Event::Call),
        tool: Some("query".into()),
        sql: Some(format!("SELECT * FROM orders WHERE id = {i}")),
        ..Record::default()
    }
}

/// Runs `f` `n` times; returns (CPU µs, wall µs) per run.
fn measure(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let (c, w) = (cpu(), Instant::now());
    for i in 0..n {
        f(i);
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    (per(cpu() - c), per(w.elapsed()))
}

fn main() {
    let n: usize = std::env::args()
        .skip_while(|a| a != "--iterations")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        key: Some(dir.path().join("audit-signing.key")),
        ..AuditOptions::default()
    };
    let log = AuditLog::open_with(&dir.path().join("audit.jsonl"), &options).unwrap();
    let key = SigningKey::load_or_create(options.key.as_ref().unwrap()).unwrap();
    let plain = AuditLog::open(&dir.path().join("plain.jsonl")).unwrap();
    // Warm up.
    for i in 0..50 {
        log.append(record(i), false).unwrap();
        plain.append(record(i), false).unwrap();
    }
    let append = measure(n, |i| {
        plain.append(record(i), false).unwrap();
    });
    let signed = measure(n, |i| {
        log.append(record(i), false).unwrap();
    });
    let sign_only = measure(n, |i| {
        std::hint::black_box(key.checkpoint(i as u64, "ab".repeat(32).as_str(), "audit.jsonl", None));
    });
    let checkpoint = measure(n / 4, |i| {
        log.append(record(i), false).unwrap();
        log.checkpoint().unwrap().expect("the head moved");
    });
    let durable = measure(n / 4, |i| {
        log.append(record(i), true).unwrap();
    });
    println!("audit trail, {n} iterations (per operation: CPU µs / wall µs, and CPU as a multiple of a plain append)");
    let row = |label: &str, (c, w): (f64, f64)| {
        println!("  {label:<58} {c:>8.1} / {w:>8.1}   {:>6.2}×", c / append.0);
    };
    row("append a record, no key (baseline)", append);
    row("append a signed record (what serve writes)", signed);
    row("Ed25519 signature of a checkpoint, in memory", sign_only);
    row("append + checkpoint (sign, fsync log and checkpoint file)", checkpoint);
    row("durable append (a decision: fsync, then its checkpoint)", durable);
    println!(
        "  a checkpoint every 5 s over a record stream costs {:.3} % of one core",
        (checkpoint.0 - signed.0) / 5e6 * 100.0
    );
}
