//! Where audit records go, as a seam: the pipeline and the approval store append through
//! [`AuditSink`], held as `Arc<dyn AuditSink>`. Today's sink is the signed, hash-chained file
//! ([`FileSink`]); a sink shared by several replicas (a table in Postgres) is another
//! implementation of the same trait.

use std::sync::Arc;

use async_trait::async_trait;

use super::{AuditError, AuditLog, Record};

/// How far a record must have gone before `append` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written (to the operating system): a read's record, a refusal.
    Written,
    /// On stable storage: a decision to run a change, a person's decision on an approval. What it
    /// records happens only after this.
    Synced,
}

#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Appends `record` to the trail, filling in its place in the chain, and returns it as written.
    async fn append(&self, record: Record, durability: Durability) -> Result<Record, AuditError>;
}

/// The audit file. Anything that may wait — an fsync, a lock another writer holds, reading the
/// file back — runs on tokio's blocking pool, never on the async workers that serve other calls
/// meanwhile; a record that needs none of that is written at once (`AuditLog::try_append_now`).
pub struct FileSink(Arc<AuditLog>);

impl FileSink {
    pub fn shared(log: Arc<AuditLog>) -> Arc<dyn AuditSink> {
        Arc::new(FileSink(log))
    }
}

#[async_trait]
impl AuditSink for FileSink {
    async fn append(&self, record: Record, durability: Durability) -> Result<Record, AuditError> {
        let durable = durability == Durability::Synced;
        // A record that needs no fsync is one `write` to the page cache when nothing else is
        // writing: done here, with no hand-off to another thread. Anything that could wait (a lock
        // held, a file to read back, an fsync) goes to the blocking pool.
        let record = if durable {
            record
        } else {
            match self.0.try_append_now(record) {
                Ok(done) => return done,
                Err(record) => record,
            }
        };
        let log = self.0.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(move || log.append(record, durable))
                .await
                .unwrap_or_else(|e| Err(AuditError::Stopped(e.to_string()))),
            // Outside a runtime (a CLI command, a test) there are no workers to keep free.
            Err(_) => log.append(record, durable),
        }
    }
}
