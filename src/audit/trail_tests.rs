//! Issue 16 items 7 and 9: signed checkpoints make a cut, emptied, re-hashed or replaced trail show,
//! and a trail removed, moved or rotated under a running server keeps its chain.

use std::path::{Path, PathBuf};

use super::{
    AuditLog, AuditOptions, Event, GENESIS_PREV, Record, hash_of,
    sign::PublicKey,
    verify::{Report, trail_files, verify_trail},
};

struct Trail {
    _dir: tempfile::TempDir,
    log: PathBuf,
    key: PathBuf,
    checkpoints: PathBuf,
}

impl Trail {
    fn new() -> Trail {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        Trail {
            key: dir.path().join("audit-signing.key"),
            checkpoints: dir.path().join("audit.jsonl.checkpoints"),
            log,
            _dir: dir,
        }
    }

    fn options(&self) -> AuditOptions {
        AuditOptions {
            key: Some(self.key.clone()),
            checkpoints: Some(self.checkpoints.clone()),
            rotate_bytes: None,
        }
    }

    fn open(&self) -> AuditLog {
        AuditLog::open_with(&self.log, &self.options()).unwrap()
    }

    fn public(&self) -> PublicKey {
        PublicKey::parse(&std::fs::read_to_string(super::sign::public_path(&self.key)).unwrap()).unwrap()
    }

    fn verify(&self) -> Report {
        verify_trail(&trail_files(&self.log), &self.checkpoints, Some(&self.public()))
    }
}

fn call(log: &AuditLog, sql: &str) {
    log.append(
        Record {
            event: Some(Event::Call),
            tool: Some("query".into()),
            sql: Some(sql.into()),
            ..Record::default()
        },
        false,
    )
    .unwrap();
}

fn problems(r: &Report) -> String {
    r.problems.join("\n")
}

/// Re-seals every line after an edit, as a forger would: the chain alone verifies again.
fn rehash(lines: &mut [serde_json::Value]) {
    let mut prev = GENESIS_PREV.to_string();
    for v in lines.iter_mut() {
        v["prev"] = prev.clone().into();
        v.as_object_mut().unwrap().remove("hash");
        let h = hash_of(v);
        v["hash"] = h.clone().into();
        prev = h;
    }
}

fn read_values(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Writes records the way pgwarden does (field order of `Record`), as a careful forger would.
fn write_values(path: &Path, values: &[serde_json::Value]) {
    let text: String = values
        .iter()
        .map(|v| serde_json::to_string(&serde_json::from_value::<Record>(v.clone()).unwrap()).unwrap() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_cut_tail_an_emptied_file_a_rehashed_edit_and_a_replaced_trail_each_fail_verify_with_the_key() {
    let t = Trail::new();
    let log = t.open();
    for i in 0..6 {
        call(&log, &format!("SELECT {i}"));
    }
    let cp = log.checkpoint().unwrap().expect("a checkpoint of seq 6");
    assert_eq!(cp.seq, 6);
    assert!(
        log.checkpoint().unwrap().is_none(),
        "an unmoved head is not signed twice"
    );
    call(&log, "SELECT 'after'");
    log.flush().unwrap();
    drop(log);
    // Whole: every checkpoint verifies and matches.
    let whole = t.verify();
    assert!(whole.problems.is_empty(), "{}", problems(&whole));
    assert_eq!(whole.checkpoints, 2);
    assert_eq!(whole.sealed.as_ref().map(|s| s.0), Some(7));
    let original = std::fs::read_to_string(&t.log).unwrap();
    let values = read_values(&t.log);

    // 1. Cut tail: the hash chain of what is left is whole (the old `verify` said ok).
    let kept: String = original.lines().take(5).map(|l| format!("{l}\n")).collect();
    std::fs::write(&t.log, &kept).unwrap();
    assert!(
        super::verify::verify(&t.log).is_ok(),
        "the chain alone cannot see a cut tail"
    );
    let r = t.verify();
    assert!(
        problems(&r).contains("covers seq 7, but the log ends at seq 4"),
        "{}",
        problems(&r)
    );

    // 2. Emptied file.
    std::fs::write(&t.log, "").unwrap();
    let r = t.verify();
    assert!(problems(&r).contains("the log is empty"), "{}", problems(&r));

    // 3. An edit, re-hashed down the chain.
    let mut edited = values.clone();
    edited[3]["sql"] = "SELECT 'nothing to see'".into();
    rehash(&mut edited);
    write_values(&t.log, &edited);
    assert!(
        super::verify::verify(&t.log).is_ok(),
        "the chain alone cannot see a re-hash"
    );
    let r = t.verify();
    assert!(
        problems(&r).contains("is not the one signed") && problems(&r).contains("re-hashed"),
        "{}",
        problems(&r)
    );

    // 4. A freshly forged trail, checkpoints and all, signed with another key.
    let forger = Trail::new();
    let fake = forger.open();
    for i in 0..8 {
        call(&fake, &format!("SELECT {i}"));
    }
    fake.flush().unwrap();
    std::fs::copy(&forger.log, &t.log).unwrap();
    std::fs::copy(&forger.checkpoints, &t.checkpoints).unwrap();
    assert!(
        verify_trail(std::slice::from_ref(&t.log), &t.checkpoints, None)
            .problems
            .is_empty(),
        "without the key a forgery looks whole: the key is what proves it"
    );
    let r = t.verify();
    assert!(problems(&r).contains("not by your key"), "{}", problems(&r));
    // …and a forged log kept under the real checkpoints.
    std::fs::write(&t.checkpoints, "").unwrap();
    std::fs::write(&t.log, &original).unwrap();
    let log = t.open();
    log.flush().unwrap();
    drop(log);
    std::fs::copy(&forger.log, &t.log).unwrap();
    let r = t.verify();
    assert!(problems(&r).contains("is not the one signed"), "{}", problems(&r));

    // Without any checkpoint file, the key cannot prove anything: that is a failure too.
    std::fs::remove_file(&t.checkpoints).unwrap();
    std::fs::write(&t.log, &original).unwrap();
    assert!(problems(&t.verify()).contains("no checkpoint file"));
}

#[test]
fn a_forged_or_reordered_checkpoint_is_named() {
    let t = Trail::new();
    let log = t.open();
    for i in 0..3 {
        call(&log, &format!("SELECT {i}"));
        log.checkpoint().unwrap();
    }
    drop(log);
    let text = std::fs::read_to_string(&t.checkpoints).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    // A checkpoint moved to claim a later head: its signature no longer verifies.
    std::fs::write(&t.checkpoints, text.replacen("\"seq\":1", "\"seq\":2", 1)).unwrap();
    assert!(problems(&t.verify()).contains("signature does not verify"));
    // A checkpoint dropped from the middle.
    std::fs::write(&t.checkpoints, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    assert!(problems(&t.verify()).contains("does not follow the checkpoint before it"));
}

#[test]
fn records_cut_while_the_log_is_open_are_recorded_and_the_chain_goes_on() {
    let t = Trail::new();
    let log = t.open();
    for i in 0..5 {
        call(&log, &format!("SELECT {i}"));
    }
    let text = std::fs::read_to_string(&t.log).unwrap();
    let kept: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
    std::fs::write(&t.log, kept).unwrap();
    call(&log, "SELECT 'next'");
    let records = super::verify::verify(&t.log).unwrap();
    let cut = records
        .iter()
        .find(|r| r.event == Some(Event::Cut))
        .expect("a cut record");
    let d = cut.details.as_ref().unwrap();
    assert_eq!(
        (d["missing_from_seq"].as_u64(), d["missing_to_seq"].as_u64()),
        (Some(4), Some(5))
    );
    assert_eq!(records.last().unwrap().sql.as_deref(), Some("SELECT 'next'"));
    assert!(problems(&t.verify()).contains("records 4–5 missing"));

    // Cut before a restart: the checkpoint remembers the head; the new process records the cut.
    log.flush().unwrap();
    drop(log);
    let text = std::fs::read_to_string(&t.log).unwrap();
    let kept: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(&t.log, kept).unwrap();
    drop(t.open());
    let records = super::verify::verify(&t.log).unwrap();
    assert_eq!(records.last().unwrap().event, Some(Event::Cut));
}

#[test]
fn a_removed_or_moved_log_is_noticed_on_the_next_append_and_the_chain_links_across_files() {
    let t = Trail::new();
    let log = t.open();
    call(&log, "SELECT 1");
    let before = super::verify::verify(&t.log).unwrap().last().unwrap().clone();
    // `rm`: the next record would have gone into the unlinked inode.
    std::fs::remove_file(&t.log).unwrap();
    call(&log, "SELECT 2");
    let records = super::verify::verify(&t.log).unwrap();
    assert_eq!(records[0].event, Some(Event::Continued));
    assert_eq!(records[0].prev, before.hash.clone().unwrap());
    assert_eq!(records[0].seq, before.seq + 1);
    assert_eq!(records[1].sql.as_deref(), Some("SELECT 2"));
    let reason = records[0].details.as_ref().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("removed"), "{reason}");
    // `mv`: the records would have gone into the renamed file.
    let moved = t.log.with_file_name("elsewhere.jsonl");
    std::fs::rename(&t.log, &moved).unwrap();
    call(&log, "SELECT 3");
    assert_eq!(
        super::verify::verify(&moved).unwrap().len(),
        2,
        "nothing more went into the moved file"
    );
    let records = super::verify::verify(&t.log).unwrap();
    assert!(
        records[0].details.as_ref().unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("moved away")
    );
    // The moved file and the new one chain; verify says a file went missing in between otherwise.
    // The `rm`ed file is gone, so the moved one no longer starts the chain: verify says so.
    let r = verify_trail(&[moved.clone(), t.log.clone()], &t.checkpoints, None);
    assert!(
        r.problems.iter().any(|p| p.contains("the files before it are missing")),
        "{r:?}"
    );
    // A different, empty file put in its place is noticed too.
    let swapped = t.log.with_file_name("swapped.jsonl");
    std::fs::rename(&t.log, &swapped).unwrap();
    std::fs::write(&t.log, "").unwrap();
    call(&log, "SELECT 4");
    let records = super::verify::verify(&t.log).unwrap();
    assert!(
        records[0].details.as_ref().unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("moved or replaced")
    );
    assert_eq!(records[1].sql.as_deref(), Some("SELECT 4"));
}

#[test]
fn rotation_by_size_continues_the_chain_and_verify_reads_every_file() {
    let t = Trail::new();
    let log = AuditLog::open_with(
        &t.log,
        &AuditOptions {
            rotate_bytes: Some(4096),
            ..t.options()
        },
    )
    .unwrap();
    for i in 0..40 {
        call(&log, &format!("SELECT '{}'", "x".repeat(i * 10)));
    }
    log.flush().unwrap();
    let files = trail_files(&t.log);
    assert!(files.len() > 3, "{files:?}");
    let r = t.verify();
    assert!(r.problems.is_empty(), "{}", problems(&r));
    assert_eq!(r.records.iter().filter(|r| r.event == Some(Event::Call)).count(), 40);
    // A rotated file that goes missing breaks the link.
    std::fs::remove_file(&files[1]).unwrap();
    assert!(problems(&t.verify()).contains("does not continue"));
    // SIGHUP's rotation: `rotate` moves the file aside at once.
    let rotated = log.rotate().unwrap().expect("a rotated file");
    assert!(rotated.exists());
    call(&log, "SELECT 'after'");
    let records = super::verify::verify(&t.log).unwrap();
    assert_eq!(records[0].event, Some(Event::Continued));
}

#[test]
fn a_decision_without_an_outcome_is_unfinished() {
    let t = Trail::new();
    let log = t.open();
    for (event, call_id) in [(Event::Decision, "a"), (Event::Outcome, "a"), (Event::Decision, "b")] {
        log.append(
            Record {
                event: Some(event),
                call_id: Some(call_id.into()),
                sql: Some("DELETE FROM t".into()),
                ..Record::default()
            },
            true,
        )
        .unwrap();
    }
    log.flush().unwrap();
    let r = t.verify();
    assert!(r.problems.is_empty(), "{}", problems(&r));
    assert_eq!(r.unfinished.len(), 1);
    assert_eq!(r.unfinished[0].call_id.as_deref(), Some("b"));
}

#[test]
fn a_signing_key_others_can_read_is_refused_and_two_starts_share_one_key() {
    use std::os::unix::fs::PermissionsExt;
    let t = Trail::new();
    let a = super::sign::SigningKey::load_or_create(&t.key).unwrap();
    let b = super::sign::SigningKey::load_or_create(&t.key).unwrap();
    assert_eq!(a.public(), b.public());
    assert_eq!(std::fs::metadata(&t.key).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&t.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = super::sign::SigningKey::load_or_create(&t.key)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("can be read by other users"), "{e}");
}

/// Red-team round on the above (each was a way past `verify --key` or a way to misuse the server).
#[test]
fn a_trail_missing_its_oldest_files_or_forged_from_a_continued_record_fails() {
    let t = Trail::new();
    let log = AuditLog::open_with(
        &t.log,
        &AuditOptions {
            rotate_bytes: Some(4096),
            ..t.options()
        },
    )
    .unwrap();
    for i in 0..30 {
        call(&log, &format!("SELECT '{}'", "y".repeat(i * 10)));
    }
    log.flush().unwrap();
    assert!(t.verify().problems.is_empty());
    let files = trail_files(&t.log);
    std::fs::remove_file(&files[0]).unwrap();
    assert!(problems(&t.verify()).contains("the files before it are missing"));
    // A lone forged `continued` record claiming a rotation.
    for f in &files[1..files.len() - 1] {
        std::fs::remove_file(f).unwrap();
    }
    let mut forged = serde_json::json!({"v":1,"seq":1000,"time":"2026-01-01T00:00:00.000Z","event":"continued",
        "details":{"reason":"rotated"},"prev":"ab".repeat(32)});
    forged["hash"] = hash_of(&forged).into();
    write_values(&t.log, &[forged]);
    assert!(problems(&t.verify()).contains("the files before it are missing"));
}

#[test]
fn an_empty_checkpoint_file_proves_nothing_with_the_key() {
    let t = Trail::new();
    let log = t.open();
    call(&log, "SELECT 1");
    log.flush().unwrap();
    std::fs::write(&t.checkpoints, "").unwrap();
    assert!(problems(&t.verify()).contains("holds no checkpoint"));
    std::fs::write(&t.checkpoints, "{\"v\":1").unwrap();
    assert!(problems(&t.verify()).contains("holds no checkpoint"));
}

#[test]
fn records_added_without_the_key_are_named_and_the_server_never_signs_them_as_its_own() {
    let t = Trail::new();
    let log = t.open();
    for i in 0..3 {
        call(&log, &format!("SELECT {i}"));
    }
    log.flush().unwrap();
    // Appended after the last checkpoint by someone without the key (e.g. hiding an unfinished
    // change behind a forged outcome): the chain is whole, but the record is not signed.
    let mut values = read_values(&t.log);
    let last = values.last().unwrap().clone();
    let mut extra = serde_json::json!({"v":1,"seq": last["seq"].as_u64().unwrap() + 1,
        "time":"2026-01-01T00:00:00.000Z","event":"outcome","prev": last["hash"].clone()});
    extra["hash"] = hash_of(&extra).into();
    values.push(extra);
    write_values(&t.log, &values);
    assert!(super::verify::verify(&t.log).is_ok());
    assert!(
        problems(&t.verify()).contains("seq 4: it is not signed"),
        "{}",
        problems(&t.verify())
    );
    // The running server does not carry on from the forged record as if it were its own: it
    // records that the file's last record is not its, and the next checkpoint covers that record.
    call(&log, "SELECT 'next'");
    let records = super::verify::verify(&t.log).unwrap();
    let n = records.len();
    assert_eq!(records[n - 2].event, Some(Event::Cut), "{:?}", records[n - 2]);
    assert!(problems(&t.verify()).contains("missing while it ran"));
    // A key repeated inside a record (readers take the last, `grep` sees the first).
    let text = std::fs::read_to_string(&t.log).unwrap();
    let doctored = text.replacen(
        "\"sql\":\"SELECT 1\"",
        "\"sql\":\"DROP TABLE users\",\"sql\":\"SELECT 1\"",
        1,
    );
    assert_ne!(doctored, text);
    std::fs::write(&t.log, doctored).unwrap();
    let e = super::verify::verify(&t.log).unwrap_err();
    assert!(e.problem.contains("not written the way pgwarden writes records"), "{e}");
}

#[test]
fn the_trail_never_follows_a_symlink_or_adopts_a_file_it_does_not_own() {
    let t = Trail::new();
    let dir = t.log.parent().unwrap().to_path_buf();
    let victim = dir.join("victim.conf");
    std::fs::write(&victim, "keep = me").unwrap();
    std::os::unix::fs::symlink(&victim, &t.log).unwrap();
    let e = AuditLog::open_with(&t.log, &t.options()).err().unwrap().to_string();
    assert!(e.contains("symbolic link"), "{e}");
    std::fs::remove_file(&t.log).unwrap();
    // Swapped for a symlink while open: the append fails (nothing runs), the target is untouched.
    let log = t.open();
    call(&log, "SELECT 1");
    std::fs::remove_file(&t.log).unwrap();
    std::os::unix::fs::symlink(&victim, &t.log).unwrap();
    assert!(
        log.append(
            Record {
                event: Some(Event::Call),
                ..Record::default()
            },
            false
        )
        .is_err()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep = me");
    // A planted `.pub` symlink is not written through.
    let other = Trail::new();
    let target = other.log.with_file_name("target.txt");
    std::fs::write(&target, "untouched").unwrap();
    std::os::unix::fs::symlink(&target, super::sign::public_path(&other.key)).unwrap();
    drop(other.open());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    // A trail someone else created first (in a shared directory) is refused, not adopted.
    if rustix::process::geteuid().as_raw() == 0 {
        let shared = Trail::new();
        std::fs::write(&shared.log, "").unwrap();
        std::os::unix::fs::chown(&shared.log, Some(65534), None).unwrap();
        let e = AuditLog::open_with(&shared.log, &shared.options())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("belongs to uid 65534"), "{e}");
    }
}

#[test]
fn two_writers_sharing_a_log_rotate_without_forking_the_chain() {
    let t = Trail::new();
    let options = AuditOptions {
        rotate_bytes: Some(4096),
        ..t.options()
    };
    let logs = [
        std::sync::Arc::new(AuditLog::open_with(&t.log, &options).unwrap()),
        std::sync::Arc::new(AuditLog::open_with(&t.log, &options).unwrap()),
    ];
    let threads: Vec<_> = (0..2)
        .map(|w| {
            let log = logs[w].clone();
            std::thread::spawn(move || {
                for i in 0..80 {
                    call(&log, &format!("SELECT {w}, '{}'", "z".repeat(i % 50)));
                    if i % 17 == w {
                        log.rotate().unwrap();
                    }
                    if i % 5 == 0 {
                        log.checkpoint().unwrap();
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    for l in &logs {
        l.flush().unwrap();
    }
    let r = t.verify();
    assert!(r.problems.is_empty(), "{}", problems(&r));
    assert_eq!(r.records.iter().filter(|r| r.event == Some(Event::Call)).count(), 160);
    assert!(!r.records.iter().any(|r| r.event == Some(Event::Cut)), "no false alarm");
    // Rotating a file that holds nothing since its first record makes no new file.
    // (A writer without the size limit, so the record below cannot itself trigger a rotation.)
    let plain = AuditLog::open_with(&t.log, &t.options()).unwrap();
    call(&plain, "SELECT 'last'");
    let n = trail_files(&t.log).len();
    assert!(plain.rotate().unwrap().is_some());
    assert!(plain.rotate().unwrap().is_none());
    assert_eq!(trail_files(&t.log).len(), n + 1);
}

#[test]
fn odd_files_never_hang_or_panic_verify() {
    let t = Trail::new();
    let log = t.open();
    call(&log, "SELECT 1");
    log.flush().unwrap();
    // A FIFO among the rotated names is not a trail file.
    let fifo = t.log.with_file_name("audit.jsonl.5");
    mkfifo(&fifo);
    assert!(t.verify().problems.is_empty());
    // Sequence numbers at the end of the range.
    let mut a = serde_json::json!({"v":1,"seq":u64::MAX,"time":"t","event":"genesis","prev":GENESIS_PREV});
    a["hash"] = hash_of(&a).into();
    let mut b = serde_json::json!({"v":1,"seq":0,"time":"t","event":"call","prev":a["hash"].clone()});
    b["hash"] = hash_of(&b).into();
    write_values(&t.log, &[a, b]);
    assert!(super::verify::verify(&t.log).is_err());
}

/// Red-team round 2: signatures stripped, checkpoints deleted, odd files where checkpoints go.
#[test]
fn stripped_signatures_and_a_deleted_checkpoint_file_do_not_launder_a_forgery() {
    let t = Trail::new();
    let log = t.open();
    for i in 0..2 {
        call(&log, &format!("SELECT {i}"));
    }
    log.flush().unwrap();
    drop(log);
    // Offline: every signature removed, a record rewritten, the chain re-hashed.
    let mut values = read_values(&t.log);
    for v in values.iter_mut() {
        v.as_object_mut().unwrap().remove("sig");
    }
    values[1]["sql"] = "SELECT 'forged'".into();
    rehash(&mut values);
    write_values(&t.log, &values);
    let r = t.verify();
    assert!(problems(&r).contains("it is not signed"), "{}", problems(&r));
    // …and the checkpoints deleted, then the server started again: it does not sign on from an
    // unsigned record as if it were its own.
    std::fs::remove_file(&t.checkpoints).unwrap();
    let log = t.open();
    call(&log, "SELECT 'after restart'");
    log.flush().unwrap();
    let records = super::verify::verify(&t.log).unwrap();
    assert!(records.iter().any(|r| r.event == Some(Event::Cut)), "{records:?}");
    let r = t.verify();
    assert!(!r.problems.is_empty());
}

#[test]
fn a_signed_trail_from_elsewhere_copied_over_the_log_is_not_continued_silently() {
    let t = Trail::new();
    let log = t.open();
    for i in 0..3 {
        call(&log, &format!("SELECT {i}"));
    }
    // Another, longer trail signed with the same key (e.g. an older run's).
    let other = t.log.with_file_name("other.jsonl");
    let elsewhere = AuditLog::open_with(
        &other,
        &AuditOptions {
            checkpoints: Some(t.log.with_file_name("other.checkpoints")),
            ..t.options()
        },
    )
    .unwrap();
    for i in 0..8 {
        call(&elsewhere, &format!("SELECT 'elsewhere {i}'"));
    }
    std::fs::copy(&other, &t.log).unwrap();
    call(&log, "SELECT 'next'");
    let records = super::verify::verify(&t.log).unwrap();
    let cut = &records[records.len() - 2];
    assert_eq!(cut.event, Some(Event::Cut), "{cut:?}");
    assert_eq!(cut.details.as_ref().unwrap()["last_known_seq"].as_u64(), Some(3));
}

#[test]
fn checkpoint_files_that_are_fifos_junk_or_someone_elses_never_hang_or_pass() {
    // A FIFO where the checkpoints go: refused at once, for the server and for verify.
    let t = Trail::new();
    mkfifo(&t.checkpoints);
    assert!(AuditLog::open_with(&t.log, &t.options()).is_err());
    std::fs::write(&t.log, "").unwrap();
    assert!(problems(&t.verify()).contains("not a regular file"));

    // A long junk tail after the last checkpoint still leaves it readable: a cut is still seen.
    let t = Trail::new();
    let log = t.open();
    for i in 0..4 {
        call(&log, &format!("SELECT {i}"));
    }
    log.flush().unwrap();
    drop(log);
    let mut cps = std::fs::OpenOptions::new().append(true).open(&t.checkpoints).unwrap();
    std::io::Write::write_all(&mut cps, "x".repeat(9000).as_bytes()).unwrap();
    let text = std::fs::read_to_string(&t.log).unwrap();
    let kept: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(&t.log, kept).unwrap();
    drop(t.open());
    let records = super::verify::verify(&t.log).unwrap();
    assert_eq!(records.last().unwrap().event, Some(Event::Cut));

    // A checkpoint file that cannot be written: a change's decision is not taken as recorded.
    if rustix::process::geteuid().as_raw() == 0 {
        let t = Trail::new();
        let log = t.open();
        call(&log, "SELECT 1");
        log.flush().unwrap();
        std::os::unix::fs::chown(&t.checkpoints, Some(65534), None).unwrap();
        let decision = Record {
            event: Some(Event::Decision),
            ..Record::default()
        };
        assert!(log.append(decision, true).is_err());
        // The `.pub` beside the key, made by someone else first, is replaced, not written into.
        std::os::unix::fs::chown(&t.checkpoints, Some(0), None).unwrap();
        let pub_file = super::sign::public_path(&t.key);
        std::fs::write(&pub_file, "ed25519:theirs").unwrap();
        std::os::unix::fs::chown(&pub_file, Some(65534), None).unwrap();
        drop(t.open());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&pub_file).unwrap().uid(), 0);
        assert!(std::fs::read_to_string(&pub_file).unwrap().starts_with("ed25519:"));
        assert_ne!(std::fs::read_to_string(&pub_file).unwrap(), "ed25519:theirs");
    }
}

#[test]
fn crlf_lines_are_edits_and_show_escapes_separators() {
    let t = Trail::new();
    let log = t.open();
    call(&log, "SELECT '\u{2028}\u{061C}x'");
    log.flush().unwrap();
    let records = super::verify::verify(&t.log).unwrap();
    let shown = super::verify::table(&records.iter().collect::<Vec<_>>(), &Default::default());
    assert!(!shown.contains('\u{2028}') && !shown.contains('\u{061C}'), "{shown:?}");
    let text = std::fs::read_to_string(&t.log).unwrap();
    std::fs::write(&t.log, text.replace('\n', "\r\n")).unwrap();
    assert!(super::verify::verify(&t.log).is_err());
}

fn mkfifo(path: &Path) {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
}

/// The next record follows the head kept in memory while the file still ends where this process
/// left it. A record replaced by one of exactly the same length in between is not seen by the
/// writer (it does not read the file back), but the chain no longer leads through it: `verify`
/// names the break. Another writer's record (the file grew) is read, and the chain goes on after it.
#[test]
fn the_head_in_memory_is_used_only_while_the_file_ends_where_it_was_left() {
    let t = Trail::new();
    let log = t.open();
    call(&log, "SELECT 1");
    call(&log, "SELECT 2");
    // Same length, other content: the last record's SQL with one digit changed, re-hashed.
    let mut values = read_values(&t.log);
    let last = values.len() - 1;
    values[last]["sql"] = serde_json::json!("SELECT 3");
    rehash(&mut values[last..]);
    let before = std::fs::metadata(&t.log).unwrap().len();
    write_values(&t.log, &values);
    assert_eq!(std::fs::metadata(&t.log).unwrap().len(), before, "the same length");
    call(&log, "SELECT 4");
    log.flush().unwrap();
    assert!(
        !problems(&t.verify()).is_empty(),
        "the replaced record breaks the chain"
    );

    // A second writer on the same file: the first reads its record back and chains after it.
    let t = Trail::new();
    let (a, b) = (t.open(), t.open());
    call(&a, "SELECT 'a'");
    call(&b, "SELECT 'b'");
    call(&a, "SELECT 'a again'");
    a.flush().unwrap();
    let records = super::verify::verify(&t.log).unwrap();
    let sql: Vec<_> = records.iter().filter_map(|r| r.sql.as_deref()).collect();
    assert_eq!(sql, ["SELECT 'a'", "SELECT 'b'", "SELECT 'a again'"]);
    assert!(records.iter().all(|r| r.event != Some(Event::Cut)), "{records:?}");
    assert_eq!(problems(&t.verify()), "");
}

/// Appends the way the server's sink does for a record that needs no fsync: the fast path when it
/// can, else the full append. Says whether the fast path took it.
fn sink_call(log: &AuditLog, sql: &str) -> bool {
    let record = Record {
        event: Some(Event::Call),
        tool: Some("query".into()),
        sql: Some(sql.into()),
        ..Record::default()
    };
    match log.try_append_now(record) {
        Ok(done) => {
            done.unwrap();
            true
        }
        Err(record) => {
            log.append(record, false).unwrap();
            false
        }
    }
}

/// Red team, the in-memory head: an attacker cuts the last records and appends forged ones of
/// exactly the same total length (re-chained, so the file alone looks whole), or swaps in a
/// same-length copy under the path. The writer's fast path does not read the file back, but it
/// never chains onto, or checkpoints, the forged records: `verify` names the break, and a file
/// that is not the open one is never taken on the fast path.
#[test]
fn same_length_forgeries_under_the_fast_path_still_fail_verify() {
    let t = Trail::new();
    let log = t.open();
    for i in 0..3 {
        sink_call(&log, &format!("SELECT {i}"));
    }
    // A decision (durable, checkpointed), then two more records on the fast path.
    log.append(
        Record {
            event: Some(Event::Decision),
            tool: Some("query".into()),
            sql: Some("DELETE FROM users".into()),
            ..Record::default()
        },
        true,
    )
    .unwrap();
    assert!(sink_call(&log, "SELECT 8"), "the fast path after a durable append");
    assert!(sink_call(&log, "SELECT 9"));
    // Truncate the decision and what followed, append forged records of the same total length.
    let mut values = read_values(&t.log);
    let n = values.len();
    for v in &mut values[n - 3..] {
        if v["sql"] == "DELETE FROM users" {
            v["sql"] = "SELECT 'harmless'".into();
            v["event"] = "call".into();
        }
    }
    rehash(&mut values);
    let before = std::fs::metadata(&t.log).unwrap().len();
    let text: String = values
        .iter()
        .map(|v| serde_json::to_string(&serde_json::from_value::<Record>(v.clone()).unwrap()).unwrap() + "\n")
        .collect();
    // Pad the forged SQL so the file has exactly the length the writer left.
    let pad = before as i64 - text.len() as i64;
    assert!(pad >= 0, "{pad}");
    values[n - 3]["sql"] = format!("SELECT 'harmless'{}", " ".repeat(pad as usize)).into();
    rehash(&mut values);
    {
        use std::io::Write;
        let f = std::fs::OpenOptions::new().write(true).open(&t.log).unwrap();
        let keep: u64 = std::fs::read_to_string(&t.log)
            .unwrap()
            .lines()
            .take(n - 3)
            .map(|l| l.len() as u64 + 1)
            .sum();
        f.set_len(keep).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&t.log).unwrap();
        for v in &values[n - 3..] {
            let l = serde_json::to_string(&serde_json::from_value::<Record>(v.clone()).unwrap()).unwrap() + "\n";
            f.write_all(l.as_bytes()).unwrap();
        }
    }
    assert_eq!(std::fs::metadata(&t.log).unwrap().len(), before, "the same length");
    sink_call(&log, "SELECT 10");
    log.flush().unwrap();
    let r = t.verify();
    assert!(!r.problems.is_empty(), "the forged decision went unnoticed");

    // The path swapped for a same-length copy (another inode): never the fast path.
    let t = Trail::new();
    let log = t.open();
    sink_call(&log, "SELECT 1");
    sink_call(&log, "SELECT 2");
    // An identical copy: read back, nothing to report.
    let copy = t.log.with_extension("copy");
    std::fs::copy(&t.log, &copy).unwrap();
    std::fs::rename(&copy, &t.log).unwrap();
    assert!(!sink_call(&log, "SELECT 3"), "a replaced file is read back");
    log.flush().unwrap();
    assert_eq!(problems(&t.verify()), "");
    // A same-length copy whose last record is forged (re-chained): named.
    let mut values = read_values(&t.log);
    let last = values.len() - 1;
    values[last]["sql"] = "SELECT 4".into();
    rehash(&mut values);
    write_values(&copy, &values);
    assert_eq!(
        std::fs::metadata(&copy).unwrap().len(),
        std::fs::metadata(&t.log).unwrap().len()
    );
    std::fs::rename(&copy, &t.log).unwrap();
    assert!(!sink_call(&log, "SELECT 5"), "a replaced file is read back");
    log.flush().unwrap();
    assert!(!t.verify().problems.is_empty(), "the forged copy went unnoticed");

    // Rotation by size while the fast path is in use: the chain goes on, verify is clean.
    let t = Trail::new();
    let log = AuditLog::open_with(
        &t.log,
        &AuditOptions {
            rotate_bytes: Some(2048),
            ..t.options()
        },
    )
    .unwrap();
    for i in 0..40 {
        sink_call(&log, &format!("SELECT '{}'", "y".repeat(i * 5)));
    }
    log.flush().unwrap();
    assert!(trail_files(&t.log).len() > 2);
    let r = t.verify();
    assert!(r.problems.is_empty(), "{}", problems(&r));
    assert_eq!(r.records.iter().filter(|r| r.event == Some(Event::Call)).count(), 40);
}
