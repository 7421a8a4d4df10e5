//! The audit trail in the state database: one hash chain for every replica. Each record is sealed
//! (sequence, previous hash, hash, signature) while its transaction holds the lock on
//! `pgwarden.audit_head`, so records of concurrent replicas line up one after another, and a state
//! change commits together with its record or not at all. The head carries a checkpoint signed
//! with the trail's key, so a cut tail shows; `pgwarden audit export` writes the chain as the file
//! trail's JSONL, which `audit verify` checks.

use std::{io::Write, sync::Arc};

use super::StateDb;
use crate::audit::{
    AuditError, Event, GENESIS_PREV, Record, record_line, seal_record,
    sign::SigningKey,
    sink::{AuditSink, Durability},
};
use async_trait::async_trait;

/// Appends `record` in the transaction `tx` (which must commit for it to count); returns it sealed.
pub(crate) async fn append(
    tx: &tokio_postgres::Transaction<'_>,
    key: Option<&SigningKey>,
    record: Record,
) -> Result<Record, tokio_postgres::Error> {
    let head = tx
        .query_one("SELECT seq, hash FROM pgwarden.audit_head WHERE one FOR UPDATE", &[])
        .await?;
    let (mut seq, mut prev): (i64, String) = (head.get(0), head.get(1));
    if seq < 0 {
        let genesis = seal_record(
            Record {
                event: Some(Event::Genesis),
                ..Record::default()
            },
            0,
            GENESIS_PREV,
            key,
        );
        insert(tx, &genesis).await?;
        seq = 0;
        prev = genesis.hash.unwrap_or_default();
    }
    let sealed = seal_record(record, (seq + 1) as u64, &prev, key);
    insert(tx, &sealed).await?;
    let hash = sealed.hash.clone().unwrap_or_default();
    let checkpoint = key.map(|k| k.checkpoint(sealed.seq, &hash, "pgwarden.audit", None).line());
    tx.execute(
        "UPDATE pgwarden.audit_head SET seq = $1, hash = $2, checkpoint = $3 WHERE one",
        &[&(sealed.seq as i64), &hash, &checkpoint],
    )
    .await?;
    Ok(sealed)
}

async fn insert(tx: &tokio_postgres::Transaction<'_>, record: &Record) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO pgwarden.audit (seq, hash, line) VALUES ($1, $2, $3)",
        &[
            &(record.seq as i64),
            &record.hash.as_deref().unwrap_or_default(),
            &record_line(record),
        ],
    )
    .await
}

/// The pipeline's records (calls, decisions, outcomes) in the shared chain, each in its own
/// transaction. A record that only needs to be written commits without waiting for the WAL flush.
pub struct PgSink(pub Arc<StateDb>);

#[async_trait]
impl AuditSink for PgSink {
    async fn append(&self, record: Record, durability: Durability) -> Result<Record, AuditError> {
        let fail = |e: &dyn std::fmt::Display| AuditError::Database(e.to_string());
        let mut client = self.0.pool.get().await.map_err(|e| fail(&e))?;
        let tx = client.transaction().await.map_err(|e| fail(&e))?;
        if durability == Durability::Written {
            tx.execute("SET LOCAL synchronous_commit = off", &[])
                .await
                .map_err(|e| fail(&e))?;
        }
        let sealed = append(&tx, self.0.key.as_deref(), record).await.map_err(|e| fail(&e))?;
        tx.commit().await.map_err(|e| fail(&e))?;
        Ok(sealed)
    }
}

/// What [`export`] wrote.
#[derive(Debug, Default)]
pub struct Exported {
    pub records: u64,
    /// The signed checkpoint of the head, for `<file>.checkpoints`.
    pub checkpoint: Option<String>,
}

/// Writes the chain to `out` as JSONL, oldest first, a page at a time. The head's checkpoint is
/// read in the same snapshot.
pub async fn export(client: &mut tokio_postgres::Client, out: &mut dyn Write) -> Result<Exported, String> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let head = tx
        .query_opt("SELECT checkpoint FROM pgwarden.audit_head WHERE one", &[])
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == tokio_postgres::error::SqlState::UNDEFINED_TABLE => {
                "this database holds no pgwarden state (no `pgwarden.audit_head`): is it the `--state-url` of `serve`?"
                    .into()
            }
            _ => e.to_string(),
        })?;
    let mut done = Exported {
        checkpoint: head.and_then(|r| r.get(0)),
        ..Exported::default()
    };
    let mut after = -1i64;
    loop {
        let rows = tx
            .query(
                "SELECT seq, line FROM pgwarden.audit WHERE seq > $1 ORDER BY seq LIMIT 2000",
                &[&after],
            )
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        for row in &rows {
            let line: &str = row.get(1);
            out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
            out.write_all(b"\n").map_err(|e| e.to_string())?;
            done.records += 1;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(done)
}

/// Exports the chain of the database at `url` to `path` (and its checkpoint to
/// `<path>.checkpoints`), for `pgwarden audit export` and `audit verify --state-url`.
pub async fn export_to(url: &str, path: &std::path::Path) -> Result<Exported, String> {
    let target = crate::db::connect::Target::from_url(url).map_err(|e| e.to_string())?;
    let mut client = super::connect_one(&target).await.map_err(|e| e.to_string())?;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?,
    );
    let done = export(&mut client, &mut file).await?;
    let checkpoints = crate::audit::default_checkpoints(path);
    let text = done.checkpoint.as_deref().map(|c| format!("{c}\n")).unwrap_or_default();
    std::fs::write(&checkpoints, text).map_err(|e| format!("cannot write `{}`: {e}", checkpoints.display()))?;
    Ok(done)
}
