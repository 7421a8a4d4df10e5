//! `pgwarden audit verify` and `pgwarden audit show`: recompute the chain and name the first line
//! that was edited, deleted, inserted or reordered; print records for a person or a script.

use std::path::{Path, PathBuf};

use super::{
    Event, GENESIS_PREV, Record, hash_of,
    sign::{self, Checkpoint, PublicKey},
};

/// The first line that breaks the chain, and how.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{file}:{line}`: {problem}")]
pub struct Broken {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// Reads and checks every record of one file; returns them when the chain is whole. A file starts
/// with a genesis record, or with a `continued` record carrying on a chain from another file.
pub fn verify(path: &Path) -> Result<Vec<Record>, Broken> {
    let file = path.display().to_string();
    let broken = |line: usize, problem: String| Broken {
        file: file.clone(),
        line,
        problem,
    };
    // Only a regular file: a FIFO planted among rotated files must not hang the check.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() || (m.is_symlink() && std::fs::metadata(path).is_ok_and(|m| m.is_file())) => {}
        Ok(_) => return Err(broken(0, "not a regular file".into())),
        Err(e) => return Err(broken(0, format!("cannot read the audit log: {e}"))),
    }
    // Line by line, each at most a little over what one record can hold (16 MiB of SQL, escaped),
    // so a planted file of one endless line cannot exhaust memory.
    use std::io::{BufRead, Read};
    const MAX_LINE: u64 = 80 * 1024 * 1024;
    let file = std::fs::File::open(path).map_err(|e| broken(0, format!("cannot read the audit log: {e}")))?;
    let mut reader = std::io::BufReader::new(file);
    let mut records: Vec<Record> = Vec::new();
    let mut prev_hash = GENESIS_PREV.to_string();
    let mut buf = Vec::new();
    for i in 0.. {
        let n = i + 1;
        buf.clear();
        let read = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| broken(n, format!("cannot read the audit log: {e}")))?;
        if read == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') {
            if read as u64 > MAX_LINE {
                return Err(broken(
                    n,
                    "a line longer than any record pgwarden writes: the file was edited".into(),
                ));
            }
            return Err(broken(n, "the last line is incomplete (a write was cut short)".into()));
        }
        buf.pop();
        let Ok(raw) = std::str::from_utf8(&buf) else {
            return Err(broken(n, "not UTF-8 text: the line was edited".into()));
        };
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| broken(n, format!("not a JSON record ({e}); the line was edited")))?;
        let record: Record = serde_json::from_value(value.clone())
            .map_err(|e| broken(n, format!("not an audit record ({e}); the line was edited")))?;
        if record.hash.as_deref() != Some(hash_of(&value).as_str()) {
            return Err(broken(
                n,
                "its hash does not match its content: the line was edited".into(),
            ));
        }
        // The hash covers the parsed record, so the line must be exactly how pgwarden writes it:
        // a key given twice, reordered keys or re-escaped text would otherwise show one thing to
        // `grep` and another to the check.
        if serde_json::to_string(&record).ok().as_deref() != Some(raw) {
            return Err(broken(
                n,
                "it is not written the way pgwarden writes records (a key repeated, reordered or re-escaped): the line was edited".into(),
            ));
        }
        let expected = match records.last() {
            Some(last) => match last.seq.checked_add(1) {
                Some(s) => s,
                None => {
                    return Err(broken(
                        n,
                        "a sequence number past the last possible one: the file was forged".into(),
                    ));
                }
            },
            // A file carrying on a chain starts where the chain stood.
            None if record.event == Some(Event::Continued) => {
                prev_hash = record.prev.clone();
                record.seq
            }
            None => 0,
        };
        if record.seq != expected {
            let problem = if record.seq > expected {
                format!(
                    "sequence {} where {expected} was expected: a line before it was deleted",
                    record.seq
                )
            } else {
                format!(
                    "sequence {} where {expected} was expected: a line was inserted or lines were reordered",
                    record.seq
                )
            };
            return Err(broken(n, problem));
        }
        if record.prev != prev_hash {
            return Err(broken(
                n,
                "it does not follow the line before it (prev hash differs): lines were inserted, deleted or reordered"
                    .into(),
            ));
        }
        prev_hash = record.hash.clone().unwrap_or_default();
        records.push(record);
    }
    Ok(records)
}

/// The files of a trail in chain order: `path`'s rotated predecessors (`<path>.<last seq>`, oldest
/// first), then `path`.
pub fn trail_files(path: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        && let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            if let Some(seq) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix(name))
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|n| n.parse::<u64>().ok())
                && entry.file_type().is_ok_and(|t| t.is_file())
            {
                rotated.push((seq, path.with_file_name(&file_name)));
            }
        }
    }
    rotated.sort();
    let files: Vec<PathBuf> = rotated
        .into_iter()
        .map(|(_, p)| p)
        .chain([path.to_path_buf()])
        .collect();
    // A rotation that stopped between linking the old file aside and renaming the new one in
    // leaves two names for one file: keep the later.
    let inode = |p: &PathBuf| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let mut kept = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let id = inode(f);
        if id.is_none() || !files[i + 1..].iter().any(|later| inode(later) == id) {
            kept.push(f.clone());
        }
    }
    kept
}

/// What `audit verify` found across a trail's files and its checkpoints.
#[derive(Debug, Default)]
pub struct Report {
    pub files: Vec<String>,
    pub records: Vec<Record>,
    /// Tampering or a broken chain: the trail cannot be trusted as complete.
    pub problems: Vec<String>,
    /// Things a reader should know that are not tampering (repairs, rotation, an unsealed tail).
    pub notes: Vec<String>,
    /// `decision` records with no `outcome`: a change whose end nobody recorded.
    pub unfinished: Vec<Record>,
    pub checkpoints: usize,
    /// The last checkpoint that matched the log: seq and time.
    pub sealed: Option<(u64, String)>,
}

/// Checks the files in order (each continuing the one before), then every checkpoint against
/// them. With `key`, each checkpoint must carry its signature and a trail without checkpoints is a
/// problem; without, signatures are checked against the key each checkpoint names.
pub fn verify_trail(files: &[PathBuf], checkpoints: &Path, key: Option<&PublicKey>) -> Report {
    let mut report = Report::default();
    for path in files {
        report.files.push(path.display().to_string());
        let records = match verify(path) {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(e.to_string());
                return report;
            }
        };
        let Some(first) = records.first() else {
            continue;
        };
        match report.records.last() {
            Some(last) if first.prev != last.hash.clone().unwrap_or_default() || first.seq != last.seq + 1 => {
                let recorded = match (first.event, first.details.as_ref().and_then(|d| d["reason"].as_str())) {
                    (Some(Event::Continued), Some(reason)) => format!(" (pgwarden recorded: {reason})"),
                    _ => String::new(),
                };
                report.problems.push(format!(
                    "`{}:1`: it does not continue `{}` (which ends at seq {}): a file between them is missing, or one was replaced{recorded}",
                    path.display(),
                    report.files[report.files.len() - 2],
                    last.seq
                ));
                return report;
            }
            // The oldest file must begin the chain: anything else means older records are gone.
            None if first.event != Some(Event::Genesis) || first.seq != 0 => {
                report.problems.push(format!(
                    "`{}:1`: the trail starts at seq {} ({}), not with a genesis record: the files before it are missing. \
                     If they were archived, pass them too, oldest first: `pgwarden audit verify OLDER… {}`",
                    path.display(),
                    first.seq,
                    first.event.map_or("no event".into(), |e| format!("{e:?}").to_lowercase()),
                    path.display()
                ));
                return report;
            }
            _ => {}
        }
        report.records.extend(records);
    }
    for r in &report.records {
        let detail = |k: &str| r.details.as_ref().and_then(|d| d.get(k)).cloned().unwrap_or_default();
        match r.event {
            Some(Event::Cut) => report.problems.push(format!(
                "seq {}: pgwarden found records {}–{} missing while it ran (the file was cut or replaced) and recorded it",
                r.seq,
                detail("missing_from_seq"),
                detail("missing_to_seq")
            )),
            Some(Event::Continued) if detail("reason") != "rotated" => report.problems.push(format!(
                "seq {}: {} (pgwarden carried the chain on in a new file)",
                r.seq,
                detail("reason").as_str().unwrap_or("the file was replaced")
            )),
            Some(Event::Repair) => report.notes.push(format!(
                "seq {}: a partly written record ({} bytes, a full disk or a crash) was cut and the chain continued",
                r.seq,
                detail("cut_bytes")
            )),
            _ => {}
        }
    }
    report.unfinished = unfinished(&report.records).into_iter().cloned().collect();
    if let Some(key) = key {
        check_signatures(&mut report, key);
    }
    check_checkpoints(&mut report, checkpoints, key);
    report
}

/// Every record must carry `key`'s signature of its hash: a record added by anyone else (appended
/// after the last checkpoint, or while pgwarden was stopped) has none, and one re-hashed after an
/// edit carries a signature of another hash.
fn check_signatures(report: &mut Report, key: &PublicKey) {
    for r in &report.records {
        let hash = r.hash.as_deref().unwrap_or_default();
        let problem = match &r.sig {
            Some(sig) if key.signed_record(hash, sig) => continue,
            Some(_) => "its signature is not your key's: the record was forged or re-hashed",
            None => "it is not signed: it was added (or its signature removed) by someone without the key",
        };
        report.problems.push(format!("seq {}: {problem}", r.seq));
        return;
    }
}

/// `decision` records with no `outcome` of the same call after them.
pub fn unfinished(records: &[Record]) -> Vec<&Record> {
    let finished: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| r.event == Some(Event::Outcome))
        .filter_map(|r| r.call_id.as_deref())
        .collect();
    records
        .iter()
        .filter(|r| r.event == Some(Event::Decision))
        .filter(|r| !r.call_id.as_deref().is_some_and(|c| finished.contains(c)))
        .collect()
}

fn check_checkpoints(report: &mut Report, path: &Path, key: Option<&PublicKey>) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        report
            .problems
            .push(format!("the checkpoints `{}` are not a regular file", path.display()));
        return;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let missing = format!(
                "no checkpoint file `{}`: nothing proves the log was not cut at the end or replaced",
                path.display()
            );
            if key.is_some() {
                report.problems.push(missing);
            } else {
                report.notes.push(missing);
            }
            return;
        }
        Err(e) => {
            report
                .problems
                .push(format!("cannot read the checkpoints `{}`: {e}", path.display()));
            return;
        }
    };
    let by_seq: std::collections::HashMap<u64, &Record> = report.records.iter().map(|r| (r.seq, r)).collect();
    let first = report.records.first().map(|r| r.seq);
    let last = report.records.last().map(|r| r.seq);
    let mut prev = GENESIS_PREV.to_string();
    let mut problems = Vec::new();
    let mut beyond = None;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, raw) in lines.iter().enumerate() {
        let n = i + 1;
        let at = format!("`{}:{n}`", path.display());
        let Some(line) = raw.strip_suffix('\n') else {
            report.notes.push(format!(
                "{at}: the last checkpoint is incomplete (a write was cut short); ignored"
            ));
            break;
        };
        let Ok(cp) = serde_json::from_str::<Checkpoint>(line) else {
            problems.push(format!("{at}: not a checkpoint; the line was edited"));
            break;
        };
        let signed = match key {
            Some(k) => cp.signed_by(k),
            None => PublicKey::parse(&cp.key).is_ok_and(|k| cp.signed_by(&k)),
        };
        if !signed {
            problems.push(match key {
                Some(k) if cp.key != k.to_string() => format!(
                    "{at}: signed by {} , not by your key {k}: the checkpoints (and the log) were replaced",
                    cp.key
                ),
                _ => format!("{at}: its signature does not verify: the checkpoint was forged or edited"),
            });
            break;
        }
        if cp.prev != prev {
            problems.push(format!(
                "{at}: it does not follow the checkpoint before it: checkpoints were deleted, inserted or reordered"
            ));
            break;
        }
        prev = sign::line_hash(line);
        report.checkpoints += 1;
        match (first, last) {
            (Some(f), _) if cp.seq < f => {} // in an earlier file not given
            (_, Some(l)) if cp.seq <= l => match by_seq.get(&cp.seq) {
                Some(r) if r.hash.as_deref() == Some(cp.head.as_str()) => {
                    report.sealed = Some((cp.seq, cp.time.clone()));
                }
                _ => problems.push(format!(
                    "{at}: the record at seq {} is not the one signed at {}: the log was replaced, or edited and re-hashed",
                    cp.seq, cp.time
                )),
            },
            // A cut tail puts every later checkpoint past the end: name the latest one.
            (_, Some(l)) => beyond = Some(format!(
                "{at}: a checkpoint signed at {} covers seq {}, but the log ends at seq {l}: records were cut from its end",
                cp.time, cp.seq
            )),
            (_, None) => beyond = Some(format!(
                "{at}: a checkpoint signed at {} covers seq {}, but the log is empty: it was emptied or replaced",
                cp.time, cp.seq
            )),
        }
    }
    problems.extend(beyond);
    report.problems.extend(problems);
    if key.is_some() && report.checkpoints == 0 && report.records.iter().any(|r| r.event != Some(Event::Genesis)) {
        report.problems.push(format!(
            "`{}` holds no checkpoint: nothing proves the log was not cut at the end or replaced",
            path.display()
        ));
    }
    if let (Some(l), Some((s, time))) = (last, &report.sealed)
        && *s < l
    {
        report.notes.push(format!(
            "records after seq {s} (to seq {l}) are not yet covered by a checkpoint (the last one matched is from {time})"
        ));
    }
}

/// Which records `show` prints.
#[derive(Debug, Default)]
pub struct Filter {
    /// RFC 3339 time or date (`2026-11-21`); records at or after it.
    pub since: Option<String>,
    /// `allowed`, `approved`, `denied`, `not_approved`, `failed`, … (matches the decision or outcome).
    pub decision: Option<String>,
    pub tool: Option<String>,
}

impl Filter {
    pub fn keeps(&self, r: &Record) -> bool {
        if r.event == Some(super::Event::Genesis) {
            return false;
        }
        if let Some(since) = &self.since
            && r.time.as_str() < since.as_str()
        {
            return false;
        }
        if let Some(tool) = &self.tool
            && r.tool.as_deref() != Some(tool.as_str())
        {
            return false;
        }
        if let Some(d) = &self.decision
            && label(r) != *d
        {
            return false;
        }
        true
    }
}

/// The words `label` gives, which `audit show --decision` accepts.
pub const LABELS: &[&str] = &[
    "allowed",
    "approved",
    "dry_run",
    "denied",
    "not_approved",
    "pending",
    "failed",
    "commit_unknown",
];

/// One word for what happened: `allowed`, `approved` (a person approved it), `dry_run`, `denied`,
/// `not_approved`, `pending` (asked, not yet decided), `failed`, `commit_unknown`.
pub fn label(r: &Record) -> String {
    use super::Status;
    let status = r.outcome.as_ref().map(|o| o.status);
    let answer = r.approval.as_ref().map(|a| a.answer.as_str());
    match (r.decision.as_deref(), status) {
        (Some("deny"), _) => "denied".into(),
        (_, Some(Status::NotApproved)) => "not_approved".into(),
        // The first leg of an approval round trip: the policy asks, nobody has decided yet.
        (_, Some(Status::AwaitingApproval | Status::PendingApproval)) => "pending".into(),
        (_, Some(Status::CommitUnknown)) => "commit_unknown".into(),
        (_, Some(Status::Error | Status::RolledBack | Status::Cancelled | Status::Refused | Status::Unknown)) => {
            "failed".into()
        }
        (Some("approve"), _) if answer == Some("dry_run") => "dry_run".into(),
        (Some("approve"), _) if answer == Some("approve") => "approved".into(),
        (Some("approve"), _) => "pending".into(),
        (Some("allow"), _) => "allowed".into(),
        _ if r.event == Some(super::Event::Outcome) => status.map_or("outcome", Status::as_str).into(),
        _ if r.event == Some(super::Event::Approval) => answer.map_or("-".into(), str::to_string),
        _ => "-".into(),
    }
}

impl Filter {
    /// Refuses a filter that can match nothing because it is misspelled: an unknown `--decision`,
    /// a `--since` that is not a date or an RFC 3339 time.
    pub fn check(&self) -> Result<(), String> {
        if let Some(d) = &self.decision
            && !LABELS.contains(&d.as_str())
        {
            return Err(format!("`--decision {d}` is not one of: {}", LABELS.join(", ")));
        }
        if let Some(since) = &self.since {
            let date = chrono::NaiveDate::parse_from_str(since, "%Y-%m-%d").is_ok();
            let time = chrono::DateTime::parse_from_rfc3339(since).is_ok();
            if !date && !time {
                return Err(format!(
                    "`--since {since}` is not a date (2026-11-21) or an RFC 3339 time (2026-11-21T09:00:00Z)"
                ));
            }
        }
        Ok(())
    }
}

/// A readable table, one record per line.
pub fn table(records: &[&Record], unfinished: &std::collections::HashSet<u64>) -> String {
    let mut out = format!(
        "{:<24} {:>5} {:<8} {:<14} {:<12} {:<28} {}\n",
        "time", "seq", "event", "tool", "result", "rule", "sql / outcome"
    );
    for r in records {
        let event = match r.event {
            Some(super::Event::Decision) => "decision",
            Some(super::Event::Outcome) => "outcome",
            Some(super::Event::Call) => "call",
            Some(super::Event::Approval) => "approval",
            Some(super::Event::Repair) => "repair",
            Some(super::Event::Continued) => "continued",
            Some(super::Event::Cut) => "CUT",
            _ => "-",
        };
        let mut detail = r.sql.clone().unwrap_or_default().replace('\n', " ");
        if let (Some(super::Event::Approval), Some(a)) = (r.event, &r.approval) {
            detail = format!(
                "{} {} via {}{}",
                a.approval_id.as_deref().unwrap_or("-"),
                a.fingerprint.as_deref().unwrap_or(""),
                a.channel,
                a.decided_by.as_ref().map(|d| format!(" by {d}")).unwrap_or_default()
            );
        }
        if let Some(o) = &r.outcome {
            let mut bits = vec![o.status.to_string()];
            if let Some(n) = o.rows {
                bits.push(format!("{n} rows"));
            }
            if let Some(n) = o.rows_affected {
                bits.push(format!("{n} affected"));
            }
            if let Some(c) = &o.sqlstate {
                bits.push(c.clone());
            }
            detail = if detail.is_empty() {
                bits.join(", ")
            } else {
                format!("{detail}  → {}", bits.join(", "))
            };
        }
        if detail.chars().count() > 100 {
            detail = format!("{}…", detail.chars().take(99).collect::<String>());
        }
        // Model-supplied text reaches a person's terminal here: one line, control and bidi
        // characters shown escaped, so a record cannot rewrite the screen (issue 16 item 5).
        let shown = |t: &str| crate::text::visible(&t.replace(['\n', '\r', '\t'], " "));
        out.push_str(&format!(
            "{:<24} {:>5} {:<8} {:<14} {:<12} {:<28} {}\n",
            shown(r.time.get(..23).unwrap_or(&r.time)),
            r.seq,
            event,
            shown(r.tool.as_deref().unwrap_or("-")),
            shown(&if unfinished.contains(&r.seq) {
                "UNFINISHED".to_string()
            } else {
                label(r)
            }),
            shown(r.rule.as_deref().unwrap_or("-")),
            shown(&detail)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, Event, Record};

    fn log_with(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..n {
            log.append(
                Record {
                    event: Some(Event::Call),
                    tool: Some("query".into()),
                    sql: Some(format!("SELECT {i}")),
                    ..Record::default()
                },
                false,
            )
            .unwrap();
        }
        (dir, path)
    }

    /// Issue 17 item 8: `--decision approved` listed the first leg of a 2026 input-required round
    /// trip (policy effect `approve`, nobody had decided) as approved.
    #[test]
    fn only_what_a_person_approved_is_labelled_approved() {
        use crate::audit::{ApprovalRecord, OutcomeRecord};
        let asked = Record {
            event: Some(Event::Call),
            decision: Some("approve".into()),
            outcome: Some(OutcomeRecord {
                status: crate::audit::Status::AwaitingApproval,
                ..OutcomeRecord::default()
            }),
            ..Record::default()
        };
        assert_eq!(label(&asked), "pending");
        let decided = Record {
            event: Some(Event::Decision),
            decision: Some("approve".into()),
            approval: Some(ApprovalRecord {
                answer: "approve".into(),
                ..ApprovalRecord::default()
            }),
            ..Record::default()
        };
        assert_eq!(label(&decided), "approved");
        let filter = Filter {
            decision: Some("approved".into()),
            ..Filter::default()
        };
        assert!(!filter.keeps(&asked) && filter.keeps(&decided));
        // Issue 17 item 11: a misspelled filter is refused, not an empty table.
        for (since, decision) in [(Some("yesterday"), None), (None, Some("bogus"))] {
            let f = Filter {
                since: since.map(str::to_string),
                decision: decision.map(str::to_string),
                tool: None,
            };
            assert!(f.check().is_err());
        }
        assert!(
            Filter {
                since: Some("2026-11-21".into()),
                ..Filter::default()
            }
            .check()
            .is_ok()
        );
    }

    /// Regression (issue 16 item 5): a refused statement carrying terminal escape codes replaced its
    /// own row in `audit show` with a fake "allowed … SELECT" line; and the trail was `0644`.
    #[test]
    fn audit_show_escapes_terminal_control_and_the_trail_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append(
            Record {
                event: Some(Event::Call),
                tool: Some("query".into()),
                sql: Some("DROP TABLE t\u{1b}[2K\r2026 allowed query SELECT 1\u{202e}".into()),
                rule: Some("r\u{1b}[31m".into()),
                ..Record::default()
            },
            false,
        )
        .unwrap();
        log.flush().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let records = verify(&path).unwrap();
        let shown = table(&records.iter().collect::<Vec<_>>(), &Default::default());
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown:?}");
        assert!(!shown.contains('\u{202e}'), "{shown:?}");
        assert!(shown.contains("\\u{001B}[2K"), "{shown}");
        assert_eq!(shown.lines().count(), 3, "header, genesis and one record: {shown}");
        // An existing trail others could read is made owner-only.
        let loose = dir.path().join("loose.jsonl");
        std::fs::write(&loose, "").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(AuditLog::open(&loose).unwrap());
        assert_eq!(std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777, 0o600);
    }

    fn rewrite(path: &std::path::Path, f: impl FnOnce(&mut Vec<String>)) {
        let mut lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        f(&mut lines);
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn the_chain_names_the_first_edited_deleted_inserted_or_reordered_line() {
        let (_d, path) = log_with(5);
        assert_eq!(verify(&path).unwrap().len(), 6, "genesis + 5");
        let original = std::fs::read_to_string(&path).unwrap();
        type Tamper = Box<dyn FnOnce(&mut Vec<String>)>;
        let cases: Vec<(&str, Tamper, usize, &str)> = vec![
            (
                "edit",
                Box::new(|l| l[3] = l[3].replace("SELECT 2", "SELECT 9")),
                4,
                "edited",
            ),
            (
                "delete",
                Box::new(|l| {
                    l.remove(2);
                }),
                3,
                "deleted",
            ),
            (
                "insert",
                Box::new(|l| {
                    let x = l[2].clone();
                    l.insert(3, x);
                }),
                4,
                "inserted or lines were reordered",
            ),
            ("swap", Box::new(|l| l.swap(2, 3)), 3, "deleted"),
            (
                "truncate last",
                Box::new(|l| {
                    let n = l.len() - 1;
                    l[n].truncate(10);
                }),
                6,
                "edited",
            ),
        ];
        for (name, change, line, word) in cases {
            std::fs::write(&path, &original).unwrap();
            rewrite(&path, change);
            let e = verify(&path).expect_err(name);
            assert_eq!(e.line, line, "{name}: {e}");
            assert!(e.problem.contains(word), "{name}: {e}");
        }
        // A torn last line (no newline) is named too.
        std::fs::write(&path, &original[..original.len() - 5]).unwrap();
        assert!(verify(&path).unwrap_err().problem.contains("incomplete"));
    }

    #[test]
    fn records_longer_than_the_tail_read_still_chain() {
        let (_d, path) = log_with(1);
        let log = AuditLog::open(&path).unwrap();
        for n in [10_000, 70_000, 10] {
            let sql = format!("SELECT '{}'", "x".repeat(n));
            log.append(
                Record {
                    event: Some(Event::Call),
                    sql: Some(sql),
                    ..Record::default()
                },
                false,
            )
            .unwrap();
        }
        assert_eq!(verify(&path).unwrap().len(), 5);
    }

    #[test]
    fn a_new_process_continues_the_chain_and_a_torn_tail_is_refused() {
        let (_d, path) = log_with(2);
        let again = AuditLog::open(&path).unwrap();
        again
            .append(
                Record {
                    event: Some(Event::Call),
                    ..Record::default()
                },
                true,
            )
            .unwrap();
        let records = verify(&path).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
        // Issue 16 item 8: a record only partly written (a full disk) wedged the trail for good.
        // Now it is cut back to the last whole record, the cut is recorded, and the chain goes on.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 3]).unwrap();
        let log = AuditLog::open(&path).unwrap();
        log.append(
            Record {
                event: Some(Event::Call),
                ..Record::default()
            },
            true,
        )
        .unwrap();
        let records = verify(&path).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(records[3].event, Some(Event::Repair));
        let cut = records[3].details.as_ref().unwrap()["cut_bytes"].as_u64().unwrap();
        assert!(cut > 100, "the whole torn record went: {cut}");
        // A torn tail left by a running server is mended on its next append too.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}{{\"v\":1,\"seq\":5,\"ti")).unwrap();
        log.append(
            Record {
                event: Some(Event::Call),
                ..Record::default()
            },
            true,
        )
        .unwrap();
        let records = verify(&path).unwrap();
        assert_eq!(records[5].event, Some(Event::Repair));
        assert_eq!(records.len(), 7);
        // A whole last line that does not verify is tampering, not a torn write: still refused.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"seq\":6", "\"seq\":9")).unwrap();
        assert!(matches!(
            AuditLog::open(&path),
            Err(crate::audit::AuditError::Torn { .. })
        ));
    }
}
