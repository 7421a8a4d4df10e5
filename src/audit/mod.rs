//! The audit trail: one JSON object per line, each carrying the hash of the one before, appended under
//! an exclusive file lock (so concurrent calls and processes never interleave or fork the chain).
//! Records of anything that changes data or leaves the database are fsynced before the action runs.

pub mod redact;
pub mod sign;
pub mod sink;
#[cfg(test)]
mod trail_tests;
pub mod verify;

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
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
    /// The first record of a file that carries on a chain begun in another file: rotation, or a
    /// file removed, moved or emptied while in use. Its `prev` is the last record before it.
    Continued,
    /// The file ended before the last record pgwarden wrote or checkpointed: records were cut or
    /// replaced. The chain continues from what is left, and this says what is missing.
    Cut,
}

/// The reviewer's part, when a person was asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ApprovalRecord {
    /// Where it happened. For a call: the surface that answered (`elicitation`, `mcp_app`,
    /// `console`, `cli` — the ids of `call::Surface`), the surfaces a pending approval was announced
    /// on joined by `+`, `pgwarden_await` when an approved call is replayed, or `none` (nothing could
    /// ask). For an `approval` event: the surface that decided, or what moved it — `created`,
    /// `await` (claimed to run), `executed`, `ttl`, `cancel` (why is in `reason`), `shutdown`.
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

/// How a call ended, as its last record says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Ok,
    /// Postgres (or pgwarden) failed it.
    Error,
    /// The policy said `deny`.
    Denied,
    /// A person (or the lack of one) did not approve it.
    NotApproved,
    /// Refused before anything ran: bad arguments, or something pgwarden will not run.
    Refused,
    /// It ran and was rolled back (over the reviewer's row limit).
    RolledBack,
    /// The connection was lost at COMMIT and its fate is unknown.
    CommitUnknown,
    Cancelled,
    /// Returned to a 2026-07-28 client to ask its user; the retry is another call.
    AwaitingApproval,
    /// Became a pending approval for `pgwarden_await`.
    PendingApproval,
    /// A word this version does not know (a record written by another version, or edited): read so
    /// `audit verify` can name the record, never written.
    #[serde(other)]
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Denied => "denied",
            Status::NotApproved => "not_approved",
            Status::Refused => "refused",
            Status::RolledBack => "rolled_back",
            Status::CommitUnknown => "commit_unknown",
            Status::Cancelled => "cancelled",
            Status::AwaitingApproval => "awaiting_approval",
            Status::PendingApproval => "pending_approval",
            Status::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OutcomeRecord {
    pub status: Status,
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

impl OutcomeRecord {
    /// An outcome that is only a status and how long the call took.
    pub fn status(status: Status, duration_ms: u64) -> OutcomeRecord {
        OutcomeRecord {
            status,
            duration_ms,
            ..OutcomeRecord::default()
        }
    }
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
    /// The caller's name for people (a token's `email`), when it carried one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub display_name: Option<String>,
    /// The caller's groups, as verified when the call arrived.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub groups: Vec<String>,
    /// How the caller was authenticated (issuer, client id, token id — never the token).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub authn: Option<crate::call::Authn>,
    /// The database the call ran on, by its `pgwarden.toml` name (when pgwarden serves several).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub database: Option<String>,
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
    /// The signing key's Ed25519 signature of `hash`: a record added by anyone without the key
    /// (appended after the last checkpoint, or while pgwarden was stopped) shows.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sig: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log `{path}` cannot be written: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Key(String),
    #[error(
        "the audit log `{path}` ends with a line that is not a complete record; run `pgwarden audit verify {path}` and move the file aside to start a new one"
    )]
    Torn { path: String },
    /// The trail in the state database (`--state-url`) could not take the record.
    #[error("the audit trail in the state database cannot be written: {0}")]
    Database(String),
    /// The writer task ended before it wrote (the process is shutting down).
    #[error("the audit writer stopped before the record was written ({0})")]
    Stopped(String),
}

/// The hash of a record: SHA-256 over its canonical JSON (sorted keys) without `hash` and `sig`.
pub fn hash_of(value: &serde_json::Value) -> String {
    let sealed = value
        .as_object()
        .is_some_and(|m| m.contains_key("hash") || m.contains_key("sig"));
    if !sealed {
        return digest_hex(value);
    }
    let mut v = value.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("hash");
        map.remove("sig");
    }
    digest_hex(&v)
}

/// SHA-256 of a value's compact JSON, in lower-case hex, written straight into the hasher.
fn digest_hex(value: &serde_json::Value) -> String {
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(Sha256::new());
    // Writing a `Value` into memory cannot fail.
    let _ = serde_json::to_writer(&mut hashing, value);
    hex(&hashing.0.finalize())
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Where the trail is kept besides the log itself.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// The Ed25519 signing key (made on first use). Without one no checkpoints are written.
    pub key: Option<PathBuf>,
    /// The checkpoint file; `<log>.checkpoints` when not given.
    pub checkpoints: Option<PathBuf>,
    /// Rotate the log when it grows past this many bytes.
    pub rotate_bytes: Option<u64>,
}

/// `<log>.checkpoints`.
pub fn default_checkpoints(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".checkpoints");
    log.with_file_name(name)
}

/// The head of the chain: a record's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: String,
}

struct Signer {
    key: sign::SigningKey,
    path: PathBuf,
}

struct Inner {
    file: File,
    /// The latest head this process wrote, saw, or found checkpointed: a file that ends before it
    /// was cut, emptied or replaced.
    known: Option<Head>,
    /// The file's length when its last record was `known` (this process wrote it, or read and
    /// accepted it): while the file still has that length, nobody else wrote to it, and the next
    /// record follows `known` without reading the file back. Any other length — another process
    /// appended, the file was cut, emptied or replaced — takes the full look at its tail.
    end: Option<u64>,
    /// Everything up to `end` is on stable storage (the last write was fsynced): a checkpoint right
    /// after a durable append needs no second fsync of the log.
    synced: bool,
    /// Rotation by size failed (a name taken): not retried until a SIGHUP.
    rotate_failed: bool,
}

/// The audit file, shared by every call of this process (and safe to share with other processes).
pub struct AuditLog {
    path: PathBuf,
    inner: Mutex<Inner>,
    signer: Option<Signer>,
    rotate_bytes: Option<u64>,
}

/// Records written ahead of the next one, and where the chain stands after them.
struct Plan {
    lines: String,
    seq: u64,
    prev: String,
    /// Something besides a genesis record must be written (a repair, a cut, a continuation).
    notes: bool,
    /// The file was not read: it still ends where this process last left it.
    fast: bool,
}

impl Plan {
    /// The last record once `lines` are written.
    fn head(&self) -> Head {
        Head {
            seq: self.seq - 1,
            hash: self.prev.clone(),
        }
    }
}

impl AuditLog {
    /// Fills in `seq`, `prev`, `time` and `hash`, and signs the hash when there is a key.
    fn seal(&self, record: Record, seq: u64, prev: &str) -> Record {
        let mut record = seal_unsigned(record, seq, prev);
        if let (Some(signer), Some(hash)) = (&self.signer, &record.hash) {
            record.sig = Some(signer.key.sign_record(hash));
        }
        record
    }

    /// Opens (creating it and its directory when missing) the log at `path`, without signing.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(path, &AuditOptions::default())
    }

    /// Opens the log at `path`. Nothing is written until the first record (then a genesis record
    /// starts a new file) unless the file needs mending: a torn tail is cut, and a file that ends
    /// before its last checkpoint gets a record saying so before anything else.
    pub fn open_with(path: &Path, options: &AuditOptions) -> Result<AuditLog, AuditError> {
        let io = |source| AuditError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = open_file(path)?;
        let signer = match &options.key {
            Some(key) => Some(Signer {
                key: sign::SigningKey::load_or_create(key).map_err(|e| AuditError::Key(e.to_string()))?,
                path: options.checkpoints.clone().unwrap_or_else(|| default_checkpoints(path)),
            }),
            None => None,
        };
        let known = match &signer {
            Some(s) => last_checkpoint(s)?,
            None => None,
        };
        let log = AuditLog {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file,
                known,
                end: None,
                synced: false,
                rotate_failed: false,
            }),
            signer,
            rotate_bytes: options.rotate_bytes,
        };
        log.settle()?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public half of the signing key, when checkpoints are signed.
    pub fn public_key(&self) -> Option<&sign::PublicKey> {
        self.signer.as_ref().map(|s| s.key.public())
    }

    fn io(&self) -> impl Fn(std::io::Error) -> AuditError + '_ {
        |source| AuditError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Appends `record` without waiting on anything, when that is possible: no other thread or
    /// process is writing (neither lock is held), the file still ends where this process left it
    /// (nothing to read back), and no rotation is due. Then the only I/O is one `write` to the page
    /// cache, no fsync. `Err(record)` when it would have to wait or read: the caller appends it with
    /// [`AuditLog::append`] on a thread that may block.
    #[allow(clippy::result_large_err)] // the record goes back to the caller, unboxed, to write it
    pub fn try_append_now(&self, record: Record) -> Result<Result<Record, AuditError>, Record> {
        use std::os::unix::fs::MetadataExt;
        let Ok(mut inner) = self.inner.try_lock() else {
            return Err(record);
        };
        let (Some(end), Some(_)) = (inner.end, &inner.known) else {
            return Err(record);
        };
        // The lock is taken on the open file itself (no duplicate): nothing replaces it here.
        match inner.file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(record),
            Err(std::fs::TryLockError::Error(e)) => return Ok(Err(self.io()(e))),
        }
        // Still the file at the path, still ending where this process left it, no rotation due.
        // Anything else (the path gone or another file, an error) is for `append` to sort out.
        let unchanged = (|| -> Result<bool, AuditError> {
            let open = inner.file.metadata().map_err(self.io())?;
            let Ok(here) = std::fs::metadata(&self.path) else {
                return Ok(false);
            };
            let rotate = self.rotate_bytes.is_some_and(|limit| end >= limit) && !inner.rotate_failed;
            Ok(open.len() == end && here.dev() == open.dev() && here.ino() == open.ino() && !rotate)
        })();
        let written = match unchanged {
            // The file ends at `end` with `known`: `plan` takes its fast path and reads nothing.
            Ok(true) => self
                .plan(&mut inner, None, end)
                .and_then(|plan| self.write_planned(&mut inner, plan, end, record, false)),
            Ok(false) => {
                let _ = inner.file.unlock();
                return Err(record);
            }
            Err(e) => Err(e),
        };
        let _ = inner.file.unlock();
        Ok(written)
    }

    /// Appends `record` (its `seq`, `prev`, `time` and `hash` are filled in) as one line, and with
    /// `durable` fsyncs it before returning. Returns the record as written.
    pub fn append(&self, record: Record, durable: bool) -> Result<Record, AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (lock, why, len) = self.lock_current(&mut inner)?;
        let plan = self.plan(&mut inner, why, len)?;
        let record = self.write_planned(&mut inner, plan, len, record, durable)?;
        if let Some(limit) = self.rotate_bytes {
            let len = match inner.end {
                Some(end) => end,
                None => inner.file.metadata().map_err(self.io())?.len(),
            };
            if len >= limit
                && !inner.rotate_failed
                && let Err(e) = self.rotate_locked(&mut inner)
            {
                // Not retried on every append; SIGHUP tries again.
                inner.rotate_failed = true;
                tracing::error!("cannot rotate the audit trail (the log keeps growing): {e}");
            }
        }
        drop(lock);
        drop(inner);
        // A decision (written before a change runs) is checkpointed at once: cutting it, the record
        // an attacker would most like gone, then shows even if the process dies right after. A
        // change whose decision cannot be checkpointed does not run.
        if durable {
            self.checkpoint()?;
        }
        Ok(record)
    }

    /// Writes what `plan` needs and then `record`, sealed where the plan leaves the chain, to the
    /// locked file that was `len` bytes long; fsyncs when `durable` (or the plan mended the file),
    /// and remembers the new head and where the file now ends.
    #[inline]
    fn write_planned(
        &self,
        inner: &mut Inner,
        mut plan: Plan,
        len: u64,
        record: Record,
        durable: bool,
    ) -> Result<Record, AuditError> {
        let record = self.seal(record, plan.seq, &plan.prev);
        plan.lines.push_str(&line(&record));
        inner.end = None;
        inner.synced = false;
        inner.file.write_all(plan.lines.as_bytes()).map_err(self.io())?;
        if durable || plan.notes {
            inner.file.sync_data().map_err(self.io())?;
            inner.synced = true;
        }
        inner.known = Some(Head {
            seq: record.seq,
            hash: record.hash.clone().unwrap_or_default(),
        });
        // Nothing was cut or repaired on the fast path: the file grew by exactly what was written.
        inner.end = if plan.fast {
            Some(len + plan.lines.len() as u64)
        } else {
            Some(inner.file.metadata().map_err(self.io())?.len())
        };
        Ok(record)
    }

    /// Makes everything written so far durable and signs a checkpoint of it (clean shutdown).
    pub fn flush(&self) -> Result<(), AuditError> {
        {
            let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.file.sync_data().map_err(self.io())?;
        }
        self.checkpoint().map(|_| ())
    }

    /// Writes whatever mending the file needs now (a torn tail, records missing since the last
    /// checkpoint or since this process last wrote), without a record of its own.
    fn settle(&self) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.mend(&mut inner).map(|_| ())
    }

    /// Locks the current file and writes (durably) the records it needs before any other: a
    /// repair, a cut, a continuation. Returns the lock and where the chain stands.
    fn mend(&self, inner: &mut Inner) -> Result<(FileLock, Plan), AuditError> {
        let (lock, why, len) = self.lock_current(inner)?;
        let plan = self.plan(inner, why, len)?;
        if plan.notes {
            inner.end = None;
            inner.file.write_all(plan.lines.as_bytes()).map_err(self.io())?;
            inner.file.sync_data().map_err(self.io())?;
            inner.known = Some(plan.head());
            inner.end = Some(inner.file.metadata().map_err(self.io())?.len());
        }
        Ok((lock, plan))
    }

    /// Signs the chain's current head and appends the checkpoint to the checkpoint file, after the
    /// log itself is durable. Does nothing without a key or when the head was already signed.
    pub fn checkpoint(&self) -> Result<Option<sign::Checkpoint>, AuditError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (_lock, plan) = self.mend(&mut inner)?;
        if !plan.notes && !plan.lines.is_empty() {
            // Only a genesis would be written: a new file has nothing to sign yet.
            return Ok(None);
        }
        // The log is durable before its head is signed; after a durable append (a decision) it
        // already is, so its checkpoint costs one fsync (of the checkpoint file), not two.
        if !(plan.fast && inner.synced) {
            inner.file.sync_data().map_err(self.io())?;
            inner.synced = true;
        }
        let head = plan.head();
        if inner.known.as_ref() != Some(&head) {
            // The head is the file's last record, as read and accepted by `plan`.
            inner.end = Some(inner.file.metadata().map_err(self.io())?.len());
            inner.known = Some(head.clone());
        }
        let cp_io = |source| AuditError::Io {
            path: signer.path.display().to_string(),
            source,
        };
        let mut cps = open_file(&signer.path)?;
        let _cp_lock = FileLock::exclusive(&cps).map_err(cp_io)?;
        cut_to_last_line(&mut cps).map_err(cp_io)?;
        let last = sign::last_line(&mut cps).map_err(cp_io)?;
        if let Some(l) = &last
            && let Ok(cp) = serde_json::from_str::<sign::Checkpoint>(l)
            && cp.seq == head.seq
            && cp.head == head.hash
        {
            return Ok(None);
        }
        let file_name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let cp = signer.key.checkpoint(head.seq, &head.hash, &file_name, last.as_deref());
        cps.write_all(format!("{}\n", cp.line()).as_bytes()).map_err(cp_io)?;
        cps.sync_data().map_err(cp_io)?;
        Ok(Some(cp))
    }

    /// Moves the current file aside as `<log>.<last seq>` and starts a new one whose first record
    /// continues the chain (SIGHUP, or the size limit).
    pub fn rotate(&self) -> Result<Option<PathBuf>, AuditError> {
        let rotated = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let (_lock, _) = self.mend(&mut inner)?;
            inner.rotate_failed = false;
            match self.rotate_locked(&mut inner)? {
                Some(r) => r,
                None => return Ok(None),
            }
        };
        self.checkpoint()?;
        Ok(Some(rotated))
    }

    /// Rotation with the current file locked. The new file is written aside (its first record a
    /// `continued` one) and renamed into place, so the path always names a file that continues the
    /// chain; a crash part-way leaves either the old file or the new one there. `None` when the file
    /// holds nothing since its first record.
    fn rotate_locked(&self, inner: &mut Inner) -> Result<Option<PathBuf>, AuditError> {
        inner.file.sync_data().map_err(self.io())?;
        let head = match self.tail(&mut inner.file)? {
            Some(t) if !matches!(t.event, Some(Event::Genesis | Event::Continued)) => Head {
                seq: t.seq,
                hash: t.hash.unwrap_or_default(),
            },
            _ => return Ok(None),
        };
        let name = self.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let rotated = self.path.with_file_name(format!("{name}.{}", head.seq));
        let aside = self
            .path
            .with_file_name(format!(".{name}.rotating.{}", std::process::id()));
        let _ = std::fs::remove_file(&aside);
        let mut file = open_file(&aside)?;
        let continued = self.seal(
            continued_record(
                "rotated",
                Some(rotated.file_name().unwrap_or_default().to_string_lossy().as_ref()),
                &head,
            ),
            next_seq(head.seq, &self.path)?,
            &head.hash,
        );
        let placed = file
            .write_all(line(&continued).as_bytes())
            .and_then(|()| file.sync_data())
            // A link never replaces an existing file; the rename swaps the path in one step.
            .and_then(|()| std::fs::hard_link(&self.path, &rotated))
            .and_then(|()| std::fs::rename(&aside, &self.path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&aside);
            return Err(self.io()(e));
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        inner.known = Some(Head {
            seq: continued.seq,
            hash: continued.hash.clone().unwrap_or_default(),
        });
        inner.end = None;
        inner.synced = false;
        inner.file = file;
        tracing::info!(
            "rotated the audit trail: records up to seq {} are in `{}`",
            head.seq,
            rotated.display()
        );
        Ok(Some(rotated))
    }

    /// Locks the file at the log's path. When the path no longer names the open file (removed,
    /// moved, rotated by another process), opens what is there now (creating it) and says why.
    /// Also returns the file's length, as locked.
    fn lock_current(&self, inner: &mut Inner) -> Result<(FileLock, Option<&'static str>, u64), AuditError> {
        use std::os::unix::fs::MetadataExt;
        let mut why = None;
        // Bounded: each round waits for the other writer to finish a record; only a path replaced
        // again and again (on purpose) runs out.
        for _ in 0..256 {
            let lock = FileLock::exclusive(&inner.file).map_err(self.io())?;
            let open = inner.file.metadata().map_err(self.io())?;
            match std::fs::metadata(&self.path) {
                Ok(m) if m.dev() == open.dev() && m.ino() == open.ino() => return Ok((lock, why, open.len())),
                Ok(_) => {
                    why.get_or_insert("the audit file was moved or replaced while in use");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    why.get_or_insert("the audit file was removed (or moved away) while in use");
                }
                Err(e) => return Err(self.io()(e)),
            }
            drop(lock);
            tracing::warn!(
                "the audit trail `{}` is no longer the file pgwarden had open; continuing the chain in the file now at that path",
                self.path.display()
            );
            inner.file = open_file(&self.path)?;
            inner.end = None;
            inner.synced = false;
        }
        Err(self.io()(std::io::Error::other(
            "the file at this path keeps being replaced; nothing was recorded",
        )))
    }

    /// What must be written before the next record: a genesis for a new chain; a continuation when
    /// the file is empty but the chain had a head (removed, moved, emptied); a `cut` record when the
    /// file ends before the head this process knows; a repair for a torn tail.
    fn plan(&self, inner: &mut Inner, why: Option<&str>, len: u64) -> Result<Plan, AuditError> {
        if let (Some(end), Some(known), None) = (inner.end, &inner.known, why)
            && end == len
        {
            return Ok(Plan {
                lines: String::new(),
                seq: next_seq(known.seq, &self.path)?,
                prev: known.hash.clone(),
                notes: false,
                fast: true,
            });
        }
        let repaired = self.cut_torn_tail(&mut inner.file)?;
        let tail = self.tail(&mut inner.file)?;
        let mut lines = String::new();
        let mut notes = false;
        let (mut seq, mut prev) = match (tail, &inner.known) {
            (None, None) => {
                let genesis = self.seal(
                    Record {
                        event: Some(Event::Genesis),
                        ..Record::default()
                    },
                    0,
                    GENESIS_PREV,
                );
                lines.push_str(&line(&genesis));
                (1, genesis.hash.unwrap_or_default())
            }
            (None, Some(known)) => {
                let reason = why.unwrap_or("the audit file was emptied while in use, or before pgwarden started");
                tracing::warn!(
                    "{reason}: records up to seq {} are not in `{}`",
                    known.seq,
                    self.path.display()
                );
                let continued = self.seal(
                    continued_record(reason, None, known),
                    next_seq(known.seq, &self.path)?,
                    &known.hash,
                );
                lines.push_str(&line(&continued));
                notes = true;
                (continued.seq + 1, continued.hash.unwrap_or_default())
            }
            (Some(t), known) => {
                let hash = t.hash.clone().unwrap_or_default();
                // A record this process did not see must be signed with its key: one added by
                // anyone else (a forged file, records appended while it was stopped) is not.
                let foreign = |t: &Record| match &self.signer {
                    Some(s) => !t
                        .sig
                        .as_deref()
                        .is_some_and(|sig| s.key.public().signed_record(&hash, sig)),
                    None => false,
                };
                // Cut: the file ends before what this process wrote or checkpointed, or the record
                // there is another. Foreign: a later record not signed with the key, or one that
                // does not lead back to the head this process knew.
                let cut = match known {
                    Some(k) if t.seq < k.seq => true,
                    Some(k) if t.seq == k.seq => hash != k.hash,
                    _ => false,
                };
                // The record this process wrote last needs no checking (and no signature check on
                // every append).
                let ours = matches!(known, Some(k) if t.seq == k.seq && hash == k.hash);
                let foreign = !cut
                    && !ours
                    && (foreign(&t)
                        || match known {
                            Some(k) if t.seq > k.seq => !self.leads_back(&mut inner.file, k)?,
                            _ => false,
                        });
                let seq = next_seq(t.seq, &self.path)?;
                match known {
                    Some(k) if cut => {
                        tracing::error!(
                            "the audit trail `{}` ends at seq {} but pgwarden wrote seq {}: records were cut or replaced",
                            self.path.display(),
                            t.seq,
                            k.seq
                        );
                        let cut = self.seal(cut_record(t.seq, k), seq, &hash);
                        lines.push_str(&line(&cut));
                        notes = true;
                        (cut.seq + 1, cut.hash.unwrap_or_default())
                    }
                    _ if foreign => {
                        tracing::error!(
                            "the last record of the audit trail `{}` was not written by pgwarden with this key",
                            self.path.display()
                        );
                        let cut = self.seal(foreign_record(t.seq, known.as_ref()), seq, &hash);
                        lines.push_str(&line(&cut));
                        notes = true;
                        (cut.seq + 1, cut.hash.unwrap_or_default())
                    }
                    _ => (seq, hash),
                }
            }
        };
        if let Some(cut) = repaired {
            let repair = self.seal(repair_record(cut), seq, &prev);
            prev = repair.hash.clone().unwrap_or_default();
            seq += 1;
            lines.push_str(&line(&repair));
            notes = true;
        }
        Ok(Plan {
            lines,
            seq,
            prev,
            notes,
            fast: false,
        })
    }

    /// Whether the record at `known.seq` in this file (found reading back from the end, up to 64
    /// MiB) is the one this process knew. A file that starts after it (rotated by another process
    /// sharing the log) leads back as far as can be told here.
    fn leads_back(&self, file: &mut File, known: &Head) -> Result<bool, AuditError> {
        let found = lines_from_end(file, 64 * 1024 * 1024, |raw| {
            let r = serde_json::from_slice::<Record>(raw).ok()?;
            match r.seq {
                s if s == known.seq => Some(r.hash.as_deref() == Some(known.hash.as_str())),
                s if s < known.seq => Some(false),
                _ => None,
            }
        })
        .map_err(self.io())?;
        Ok(found.unwrap_or(true))
    }

    /// When the file does not end with a newline, cuts it back to its last whole line and returns
    /// how many bytes went. Only a partial last line is cut: a whole line that does not verify is
    /// left for `tail` to refuse.
    fn cut_torn_tail(&self, file: &mut File) -> Result<Option<u64>, AuditError> {
        let (len, keep) = cut_to_last_line(file).map_err(self.io())?;
        if len == keep {
            return Ok(None);
        }
        tracing::warn!(
            "the audit trail `{}` ended in a partly written record; cut {} byte(s) back to the last whole record",
            self.path.display(),
            len - keep
        );
        Ok(Some(len - keep))
    }

    /// The last record of the file, read back from its end.
    fn tail(&self, file: &mut File) -> Result<Option<Record>, AuditError> {
        let io = self.io();
        let len = file.seek(SeekFrom::End(0)).map_err(&io)?;
        if len == 0 {
            return Ok(None);
        }
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1)).map_err(&io)?;
        file.read_exact(&mut last).map_err(&io)?;
        let line = match last[0] {
            b'\n' => lines_from_end(file, u64::MAX, |line| Some(line.to_vec())).map_err(&io)?,
            _ => None,
        };
        match line {
            Some(line) => parse_last(&line, &self.path).map(Some),
            None => Err(AuditError::Torn {
                path: self.path.display().to_string(),
            }),
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

/// The first record of a file that continues the chain after `head`.
fn continued_record(reason: &str, previous_file: Option<&str>, head: &Head) -> Record {
    Record {
        event: Some(Event::Continued),
        details: Some(serde_json::json!({
            "reason": reason,
            "previous_file": previous_file,
            "continues_seq": head.seq,
        })),
        ..Record::default()
    }
}

/// The sequence number after `seq`; a file claiming the last one there is was forged.
fn next_seq(seq: u64, path: &Path) -> Result<u64, AuditError> {
    seq.checked_add(1)
        .filter(|s| *s < u64::MAX / 2)
        .ok_or_else(|| AuditError::Torn {
            path: path.display().to_string(),
        })
}

/// The record that says the file's last record was not written by pgwarden with this key (or
/// does not lead back to the last head it knew).
fn foreign_record(seq: u64, known: Option<&Head>) -> Record {
    Record {
        event: Some(Event::Cut),
        details: Some(serde_json::json!({
            "reason": "the file's last record was not written by pgwarden with this key, or does not lead back to the last record it wrote: records were added or the file replaced",
            "foreign_seq": seq,
            "last_known_seq": known.map(|k| k.seq),
            "last_known_hash": known.map(|k| k.hash.clone()),
        })),
        ..Record::default()
    }
}

/// The record that says the file ends (at `seq`) before the head pgwarden knew.
fn cut_record(seq: u64, known: &Head) -> Record {
    let from = if seq < known.seq { seq + 1 } else { seq };
    Record {
        event: Some(Event::Cut),
        details: Some(serde_json::json!({
            "reason": "the file ends before records pgwarden wrote or checkpointed: they were cut, or the file was replaced",
            "missing_from_seq": from,
            "missing_to_seq": known.seq,
            "missing_head": known.hash,
        })),
        ..Record::default()
    }
}

/// Opens (creating it owner-only) a trail file for reading and appending. Owner-only like
/// exports: the trail holds SQL, intents and who decided.
fn open_file(path: &Path) -> Result<File, AuditError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    };
    // Never through a symlink, never anything but a regular file this user owns: whoever can
    // write the directory must not make pgwarden truncate, chmod or fill some other file, or adopt
    // a trail they can read and rewrite.
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io(std::io::Error::other(
                "it is a symbolic link; give the real path (`--audit-log`, `--audit-checkpoints`)",
            )),
            _ => io(e),
        })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other("it is not a regular file")));
    }
    {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(io(std::io::Error::other(format!(
                "it belongs to uid {}, not to the user pgwarden runs as (uid {me}); move it aside",
                meta.uid()
            ))));
        }
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "the audit file `{}` was readable by others (mode {:o}); making it owner-only",
            path.display(),
            mode & 0o777
        );
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    Ok(file)
}

/// Calls `visit` with each whole, non-empty line of `file` (without its newline), from the last
/// to the first, until it returns something, `limit` bytes were read, or the file begins. Bytes
/// after the last newline (a write cut short) are not a line. The one reader of the trail's files
/// from their end: the last record, the last checkpoint, the record a writer last knew.
fn lines_from_end<T>(
    file: &mut File,
    limit: u64,
    mut visit: impl FnMut(&[u8]) -> Option<T>,
) -> std::io::Result<Option<T>> {
    const CHUNK: u64 = 64 * 1024;
    let len = file.seek(SeekFrom::End(0))?;
    let mut pos = len;
    // Bytes from `pos` up to the last line boundary handled, not yet a whole line.
    let mut carry: Vec<u8> = Vec::new();
    let mut past_last_newline = false;
    while pos > 0 && len - pos < limit {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&carry);
        let mut end = chunk.len();
        while let Some(nl) = chunk[..end].iter().rposition(|&b| b == b'\n') {
            if past_last_newline
                && nl + 1 < end
                && let Some(found) = visit(&chunk[nl + 1..end])
            {
                return Ok(Some(found));
            }
            past_last_newline = true;
            end = nl;
        }
        chunk.truncate(end);
        carry = chunk;
        pos = start;
    }
    if pos == 0 && past_last_newline && !carry.is_empty() {
        return Ok(visit(&carry));
    }
    Ok(None)
}

/// Cuts a file that does not end in a newline back to its last whole line. Returns the length
/// before and after.
fn cut_to_last_line(file: &mut File) -> std::io::Result<(u64, u64)> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((0, 0));
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok((len, len));
    }
    // The end of the last whole line, read backwards in chunks.
    let mut end = len;
    let keep = loop {
        let start = end.saturating_sub(64 * 1024);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if let Some(nl) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + nl as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    file.set_len(keep)?;
    file.sync_data()?;
    Ok((len, keep))
}

/// The head the last checkpoint signed by this key covers, if there is one.
fn last_checkpoint(signer: &Signer) -> Result<Option<Head>, AuditError> {
    if !signer.path.exists() {
        return Ok(None);
    }
    // The same rules as for writing it: no symlink, no FIFO, ours.
    let mut file = open_file(&signer.path)?;
    let last = sign::last_line(&mut file).map_err(|source| AuditError::Io {
        path: signer.path.display().to_string(),
        source,
    })?;
    let Some(cp) = last.and_then(|l| serde_json::from_str::<sign::Checkpoint>(&l).ok()) else {
        return Ok(None);
    };
    if !cp.signed_by(signer.key.public()) {
        tracing::warn!(
            "the last checkpoint in `{}` is not signed by this key; `pgwarden audit verify` will say more",
            signer.path.display()
        );
        return Ok(None);
    }
    Ok(Some(Head {
        seq: cp.seq,
        hash: cp.head,
    }))
}

/// Fills in a record's place in a chain (`seq`, `prev`, `time`, `hash`) and signs its hash with
/// `key`: how every trail seals its records, the file's and the state database's.
pub fn seal_record(record: Record, seq: u64, prev: &str, key: Option<&sign::SigningKey>) -> Record {
    let mut record = seal_unsigned(record, seq, prev);
    if let (Some(key), Some(hash)) = (key, &record.hash) {
        record.sig = Some(key.sign_record(hash));
    }
    record
}

/// A record as one line of a trail, without its newline.
pub fn record_line(record: &Record) -> String {
    serde_json::to_string(record).unwrap_or_default()
}

fn seal_unsigned(mut record: Record, seq: u64, prev: &str) -> Record {
    record.v = VERSION;
    record.seq = seq;
    record.prev = prev.to_string();
    record.time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    record.hash = None;
    record.sig = None;
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
/// Holds its own descriptor of the locked file (a `dup`), so the lock is released on exactly the
/// file it was taken on even after the caller's handle is replaced (rotation) and its number
/// reused by another open. `flock(LOCK_EX)` through `File::lock`, across processes.
struct FileLock(File);

impl FileLock {
    fn exclusive(file: &File) -> std::io::Result<FileLock> {
        let own = file.try_clone()?;
        own.lock()?;
        Ok(FileLock(own))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}
