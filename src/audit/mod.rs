//! The audit trail: one JSON object per line, each carrying the hash of the one before, appended under
//! an exclusive file lock (so concurrent calls and processes never interleave or fork the chain).
//! Records of anything that changes data or leaves the database are fsynced before the action runs.

pub mod redact;
pub mod verify;

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The schema version written in every record (`v`).
pub const VERSION: u32 = 1;
/// `prev` of the genesis record.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The first record of a file.
    Genesis,
    /// A decision to run a change, written (and fsynced) before it runs; an `outcome` follows.
    Decision,
    /// What happened to a call that had a `decision` record.
    Outcome,
    /// A whole call in one record: reads, refusals and denials.
    Call,
    /// A pending approval changed state (created, decided, expired, cancelled, executing, done),
    /// written before the change takes effect.
    Approval,
    /// The file ended in a partly written record (a full disk, a crash mid-write): it was cut back
    /// to the last whole record, and this says how many bytes went. The chain continues.
    Repair,
}

/// The reviewer's part, when a person was asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ApprovalRecord {
    /// `elicitation`, `input_required`, `console`, `mcp_app`, or `none` (no channel could ask).
    pub channel: String,
    /// `approve`, `dry_run`, or why it was not approved; for a pending approval, its new state.
    pub answer: String,
    /// Who decided, for decisions made outside the client: the local OS user for the console.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decided_by: Option<String>,
    /// The pending approval this record is about, and the action it is bound to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub approval_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub action_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub row_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// For a call that went pending after asking in the client: what became of that prompt (no
    /// answer within the wait budget, or declined too fast to be a person's).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_prompt: Option<String>,
    pub waited_ms: u64,
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OutcomeRecord {
    /// `ok`, `error`, `denied`, `not_approved`, `refused`, `rolled_back`, `cancelled`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rows_affected: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub committed: Option<bool>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sqlstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
    /// An export's file, size and SHA-256.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
}

/// One line of the audit file. `seq`, `prev`, `hash` and `time` are set by [`AuditLog::append`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub v: u32,
    pub seq: u64,
    pub time: String,
    pub event: Option<Event>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool: Option<String>,
    /// The call's arguments, with secrets redacted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub arguments: Option<serde_json::Value>,
    /// The SQL, with secrets redacted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sql: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub categories: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub risk: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub reasons: Vec<String>,
    /// `allow`, `approve` or `deny`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub approval: Option<ApprovalRecord>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub outcome: Option<OutcomeRecord>,
    /// Tool-specific facts: a grant's statement and the role's privileges before (on the decision)
    /// and after (on the outcome).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub details: Option<serde_json::Value>,
    pub prev: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hash: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log `{path}` cannot be written: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the audit log `{path}` ends with a line that is not a complete record; run `pgwarden audit verify {path}` and move the file aside to start a new one"
    )]
    Torn { path: String },
}

/// The hash of a record: SHA-256 over its canonical JSON (sorted keys) without `hash`.
pub fn hash_of(value: &serde_json::Value) -> String {
    let mut v = value.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("hash");
    }
    Sha256::digest(v.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The audit file, shared by every call of this process (and safe to share with other processes).
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating it and its directory when missing) the log at `path`. Nothing is written
    /// until the first record; then a genesis record starts a new file.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let io = |source| AuditError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Owner-only, like exports: the trail holds SQL, intents and who decided.
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the audit trail `{}` was readable by others (mode {:o}); making it owner-only",
                path.display(),
                mode & 0o777
            );
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        let log = AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        };
        // Mend a torn tail now rather than on the first write; anything else wrong is refused.
        {
            let mut f = log.file.lock().unwrap_or_else(|p| p.into_inner());
            let _lock = FileLock::exclusive(&f).map_err(io)?;
            if let Some(cut) = log.cut_torn_tail(&mut f)? {
                drop(_lock);
                drop(f);
                log.append(repair_record(cut), true)?;
            } else {
                log.tail(&mut f)?;
            }
        }
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` (its `seq`, `prev`, `time` and `hash` are filled in) as one line, and with
    /// `durable` fsyncs it before returning. Returns the record as written.
    pub fn append(&self, mut record: Record, durable: bool) -> Result<Record, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _lock = FileLock::exclusive(&file).map_err(io)?;
        // A write that failed half-way (disk full) left a torn record: cut it, say so, go on.
        let repaired = self.cut_torn_tail(&mut file)?.map(repair_record);
        let (mut seq, mut prev) = match self.tail(&mut file)? {
            Some(last) => (last.seq + 1, last.hash.unwrap_or_default()),
            None => (0, GENESIS_PREV.to_string()),
        };
        let mut lines = String::new();
        if seq == 0 {
            let genesis = seal(
                Record {
                    event: Some(Event::Genesis),
                    ..Record::default()
                },
                0,
                GENESIS_PREV,
            );
            prev = genesis.hash.clone().unwrap_or_default();
            seq = 1;
            lines.push_str(&line(&genesis));
        }
        if let Some(repair) = repaired {
            let repair = seal(repair, seq, &prev);
            prev = repair.hash.clone().unwrap_or_default();
            seq += 1;
            lines.push_str(&line(&repair));
        }
        record = seal(record, seq, &prev);
        lines.push_str(&line(&record));
        file.write_all(lines.as_bytes()).map_err(io)?;
        if durable {
            file.sync_data().map_err(io)?;
        }
        Ok(record)
    }

    /// Makes everything written so far durable (clean shutdown).
    pub fn flush(&self) -> Result<(), AuditError> {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.sync_data().map_err(|source| AuditError::Io {
            path: self.path.display().to_string(),
            source,
        })
    }

    /// When the file does not end with a newline, cuts it back to its last whole line and returns
    /// how many bytes went. Only a partial last line is cut: a whole line that does not verify is
    /// left for `tail` to refuse.
    fn cut_torn_tail(&self, file: &mut File) -> Result<Option<u64>, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let len = file.seek(SeekFrom::End(0)).map_err(io)?;
        if len == 0 {
            return Ok(None);
        }
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
        file.read_exact(&mut last).map_err(io)?;
        if last[0] == b'\n' {
            return Ok(None);
        }
        // The end of the last whole line, read backwards in chunks.
        let mut end = len;
        let keep = loop {
            let start = end.saturating_sub(64 * 1024);
            let mut chunk = vec![0u8; (end - start) as usize];
            file.seek(SeekFrom::Start(start)).map_err(io)?;
            file.read_exact(&mut chunk).map_err(io)?;
            if let Some(nl) = chunk.iter().rposition(|&b| b == b'\n') {
                break start + nl as u64 + 1;
            }
            if start == 0 {
                break 0;
            }
            end = start;
        };
        file.set_len(keep).map_err(io)?;
        file.sync_data().map_err(io)?;
        tracing::warn!(
            "the audit trail `{}` ended in a partly written record; cut {} byte(s) back to the last whole record",
            self.path.display(),
            len - keep
        );
        Ok(Some(len - keep))
    }

    /// The last record of the file, read back from its end.
    fn tail(&self, file: &mut File) -> Result<Option<Record>, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let len = file.seek(SeekFrom::End(0)).map_err(io)?;
        if len == 0 {
            return Ok(None);
        }
        let mut start = len;
        let mut buf = Vec::new();
        // Read backwards in growing chunks until the last complete line is in `buf`.
        let mut chunk_size = 4096u64;
        loop {
            let step = chunk_size.min(start);
            chunk_size *= 2;
            start -= step;
            file.seek(SeekFrom::Start(start)).map_err(io)?;
            let mut chunk = vec![0; (len - start) as usize - buf.len()];
            file.read_exact(&mut chunk).map_err(io)?;
            chunk.extend_from_slice(&buf);
            buf = chunk;
            let body = buf.strip_suffix(b"\n");
            let Some(body) = body else {
                return Err(AuditError::Torn {
                    path: self.path.display().to_string(),
                });
            };
            if let Some(nl) = body.iter().rposition(|&b| b == b'\n') {
                return parse_last(&body[nl + 1..], &self.path).map(Some);
            }
            if start == 0 {
                return parse_last(body, &self.path).map(Some);
            }
        }
    }
}

fn parse_last(line: &[u8], path: &Path) -> Result<Record, AuditError> {
    let torn = || AuditError::Torn {
        path: path.display().to_string(),
    };
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|_| torn())?;
    let record: Record = serde_json::from_value(value.clone()).map_err(|_| torn())?;
    if record.hash.as_deref() != Some(hash_of(&value).as_str()) {
        return Err(torn());
    }
    Ok(record)
}

/// The record that says a torn tail was cut.
fn repair_record(cut: u64) -> Record {
    Record {
        event: Some(Event::Repair),
        details: Some(serde_json::json!({
            "cut_bytes": cut,
            "reason": "the last record was only partly written (a full disk or a crash); it was cut back to the last whole record",
        })),
        ..Record::default()
    }
}

fn seal(mut record: Record, seq: u64, prev: &str) -> Record {
    record.v = VERSION;
    record.seq = seq;
    record.prev = prev.to_string();
    record.time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    record.hash = None;
    let value = serde_json::to_value(&record).unwrap_or_default();
    record.hash = Some(hash_of(&value));
    record
}

fn line(record: &Record) -> String {
    let mut s = serde_json::to_string(record).unwrap_or_default();
    s.push('\n');
    s
}

/// `flock(LOCK_EX)` for the duration of one append, across processes.
struct FileLock(i32);

impl FileLock {
    fn exclusive(file: &File) -> std::io::Result<FileLock> {
        let fd = file.as_raw_fd();
        // SAFETY: flock on a valid open descriptor; released in Drop.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FileLock(fd))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: the descriptor outlives the lock (the file is borrowed for the whole append).
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}
