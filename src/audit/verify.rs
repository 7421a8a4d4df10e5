//! `pgwarden audit verify` and `pgwarden audit show`: recompute the chain and name the first line
//! that was edited, deleted, inserted or reordered; print records for a person or a script.

use std::path::Path;

use super::{GENESIS_PREV, Record, hash_of};

/// The first line that breaks the chain, and how.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{file}:{line}`: {problem}")]
pub struct Broken {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// Reads and checks every record; returns them when the chain is whole.
pub fn verify(path: &Path) -> Result<Vec<Record>, Broken> {
    let file = path.display().to_string();
    let broken = |line: usize, problem: String| Broken {
        file: file.clone(),
        line,
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| broken(0, format!("cannot read the audit log: {e}")))?;
    if !text.is_empty() && !text.ends_with('\n') {
        let n = text.lines().count();
        return Err(broken(n, "the last line is incomplete (a write was cut short)".into()));
    }
    let mut records = Vec::new();
    let mut prev_hash = GENESIS_PREV.to_string();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
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
        if record.seq != i as u64 {
            let problem = if record.seq > i as u64 {
                format!(
                    "sequence {} where {i} was expected: a line before it was deleted",
                    record.seq
                )
            } else {
                format!(
                    "sequence {} where {i} was expected: a line was inserted or lines were reordered",
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

/// One word for what happened: `allowed`, `approved`, `denied`, `not_approved`, `failed`, `pending`.
pub fn label(r: &Record) -> String {
    let status = r.outcome.as_ref().map(|o| o.status.as_str());
    match (r.decision.as_deref(), status) {
        (Some("deny"), _) => "denied".into(),
        (_, Some("not_approved")) => "not_approved".into(),
        (_, Some("error" | "rolled_back" | "cancelled" | "refused")) => "failed".into(),
        (Some("approve"), _) if r.approval.as_ref().is_some_and(|a| a.answer == "dry_run") => "dry_run".into(),
        (Some("approve"), _) => "approved".into(),
        (Some("allow"), _) => "allowed".into(),
        _ if r.event == Some(super::Event::Outcome) => status.unwrap_or("outcome").into(),
        _ if r.event == Some(super::Event::Approval) => r.approval.as_ref().map_or("-".into(), |a| a.answer.clone()),
        _ => "-".into(),
    }
}

/// A readable table, one record per line.
pub fn table(records: &[&Record]) -> String {
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
            let mut bits = vec![o.status.clone()];
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
        let shown = |t: &str| crate::approval::packet::visible(&t.replace(['\n', '\r', '\t'], " "));
        out.push_str(&format!(
            "{:<24} {:>5} {:<8} {:<14} {:<12} {:<28} {}\n",
            shown(r.time.get(..23).unwrap_or(&r.time)),
            r.seq,
            event,
            shown(r.tool.as_deref().unwrap_or("-")),
            shown(&label(r)),
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
        let shown = table(&records.iter().collect::<Vec<_>>());
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
