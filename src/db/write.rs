//! Approved changes: the exact statement a person approved, through the extended protocol, inside
//! a transaction that commits only when it is not a dry run and stayed within the reviewer's row
//! limit. Also the row estimate (`EXPLAIN`, never `ANALYZE`) shown in the review packet.

use std::time::Duration;

use futures_util::{TryStreamExt, pin_mut};
use tokio_util::sync::CancellationToken;

use super::{Column, Database, DbError, budget::ByteBudget, session::Session, values};

/// How to run one approved change.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    pub statement_timeout: Duration,
    /// Roll back after running: report what would have changed.
    pub dry_run: bool,
    /// Roll back, and say so, when more rows than this change.
    pub max_rows_affected: Option<u64>,
    /// `RETURNING` rows kept for the result; 0 shows none.
    pub returning_rows: usize,
    /// The most raw bytes of `RETURNING` rows kept (see `budget`).
    pub returning_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct WriteResult {
    /// Rows the statement inserted, updated, deleted or merged (0 for DDL).
    pub rows_affected: u64,
    pub committed: bool,
    /// The first `RETURNING` rows, when asked for.
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<serde_json::Value>>,
    /// True when the byte cap stopped `rows` short of `returning_rows`.
    pub returning_cut: bool,
    /// The connection was lost while committing and Postgres, asked again, said it committed.
    pub commit_confirmed_after_loss: bool,
}

/// Why an approved change did not commit although it ran.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(
        "the change touched {affected} row{}, more than the reviewer's limit of {limit}; it was rolled back and nothing changed",
        if *affected == 1 { "" } else { "s" }
    )]
    OverLimit { affected: u64, limit: u64 },
    /// The connection was lost while committing, and whether the transaction committed could not be
    /// learned. The change may or may not be in the database: retrying could apply it twice.
    #[error(
        "commit unknown: the connection to the database was lost while committing, and whether transaction \
         {xid} committed could not be learned. Do NOT retry the change: ask the user to check the data first"
    )]
    CommitUnknown { xid: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What `write` learned before the connection was lost at `COMMIT` (internal: resolved below).
struct LostAtCommit {
    xid: Option<i64>,
    result: WriteResult,
}

impl Database {
    /// Runs `sql`, as approved, in a read-write transaction.
    pub async fn write(
        &self,
        sql: &str,
        opts: WriteOptions,
        ct: &CancellationToken,
    ) -> Result<WriteResult, WriteError> {
        let mut session = Session::open_change(self).await?;
        let deadline = opts.statement_timeout + Duration::from_secs(5);
        let mut lost: Option<LostAtCommit> = None;
        let outcome = session
            .guarded(ct, deadline, async |s: &mut Session| {
                let custom_types = s.custom_types.clone();
                let tx = s.begin_write(opts.statement_timeout).await?;
                let statement = tx.prepare(sql).await;
                custom_types.store(
                    statement
                        .as_ref()
                        .map(super::session::uses_custom_types)
                        .unwrap_or(true),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let statement = statement.map_err(DbError::from_pg)?;
                if !statement.params().is_empty() {
                    return Err(DbError::Client(format!(
                        "the statement has {} parameter placeholder(s) ($1 …); write the values into the SQL",
                        statement.params().len()
                    ))
                    .into());
                }
                let columns = Column::of(&statement);
                let stream = tx
                    .query_raw(&statement, std::iter::empty::<i32>())
                    .await
                    .map_err(DbError::from_pg)?;
                pin_mut!(stream);
                let mut rows = Vec::new();
                let mut budget = ByteBudget::new(opts.returning_bytes);
                let mut returning_cut = false;
                // Every row is read (the change runs to the end), but only those within both caps are decoded.
                while let Some(row) = stream.try_next().await.map_err(DbError::from_pg)? {
                    if rows.len() < opts.returning_rows && !returning_cut && !budget.admit(&row)? {
                        returning_cut = true;
                    }
                    if rows.len() < opts.returning_rows && !returning_cut {
                        let decoded = (0..row.len())
                            .map(|i| {
                                let cell: values::RawCell =
                                    row.try_get(i).map_err(|e| DbError::Client(e.to_string()))?;
                                Ok(values::to_json(row.columns()[i].type_(), cell.0))
                            })
                            .collect::<Result<Vec<_>, DbError>>()?;
                        rows.push(decoded);
                    }
                }
                let rows_affected = stream.rows_affected().unwrap_or(0);
                if let Some(limit) = opts.max_rows_affected
                    && rows_affected > limit
                {
                    // Dropping the transaction rolls it back.
                    return Err(WriteError::OverLimit {
                        affected: rows_affected,
                        limit,
                    });
                }
                let result = |committed| WriteResult {
                    rows_affected,
                    committed,
                    columns: if opts.returning_rows > 0 {
                        columns.clone()
                    } else {
                        vec![]
                    },
                    rows: rows.clone(),
                    returning_cut,
                    commit_confirmed_after_loss: false,
                };
                if opts.dry_run {
                    tx.rollback().await.map_err(DbError::from_pg)?;
                    return Ok(result(false));
                }
                // The transaction's id, so that a commit whose answer is lost can be resolved
                // (`txid_status`) instead of reported as a failure that invites a second write.
                // Under a savepoint: where the function is not executable (hardened databases revoke
                // the txid family), the change goes on without it rather than fail.
                tx.batch_execute("SAVEPOINT pgwarden_xid")
                    .await
                    .map_err(DbError::from_pg)?;
                let xid: Option<i64> = match tx.query_one("SELECT pg_catalog.txid_current_if_assigned()", &[]).await {
                    Ok(row) => row.try_get(0).ok().flatten(),
                    Err(_) => {
                        tx.batch_execute("ROLLBACK TO SAVEPOINT pgwarden_xid")
                            .await
                            .map_err(DbError::from_pg)?;
                        None
                    }
                };
                // Set before COMMIT is sent: if the answer never comes (the connection drops, or the
                // deadline or a cancellation ends this future), the commit's fate is asked below.
                lost = Some(LostAtCommit {
                    xid,
                    result: result(true),
                });
                match tx.commit().await {
                    Ok(()) => {
                        lost = None;
                        Ok(result(true))
                    }
                    Err(e) if e.as_db_error().is_none() => Err(DbError::from_pg(e).into()),
                    // Postgres answered with an error (a deferred constraint, say): not committed.
                    Err(e) => {
                        lost = None;
                        Err(DbError::from_pg(e).into())
                    }
                }
            })
            .await;
        drop(session);
        match (outcome, lost) {
            (Err(_), Some(LostAtCommit { xid, mut result })) => match match xid {
                Some(xid) => self.transaction_status(xid).await,
                None => None,
            } {
                Some(true) => {
                    result.commit_confirmed_after_loss = true;
                    Ok(result)
                }
                Some(false) => Err(WriteError::Db(DbError::Client(
                    "the connection was lost while committing; Postgres says the transaction did not commit, so \
                     nothing changed"
                        .into(),
                ))),
                None => Err(WriteError::CommitUnknown {
                    xid: xid.map_or_else(|| "(id unavailable)".into(), |x| x.to_string()),
                }),
            },
            (outcome, _) => outcome,
        }
    }

    /// Whether transaction `xid` committed (`Some(true)`), aborted (`Some(false)`), or cannot be
    /// told (`None`: still in progress, too old, or the database cannot be reached), asked on a
    /// fresh connection within a few seconds.
    async fn transaction_status(&self, xid: i64) -> Option<bool> {
        let ask = async {
            let mut failures = 0;
            loop {
                if let Ok(mut session) = Session::open_change(self).await {
                    let tx = session.begin_read(Duration::from_secs(2)).await.ok()?;
                    let row = tx.query_one("SELECT pg_catalog.txid_status($1)", &[&xid]).await.ok()?;
                    let status: Option<String> = row.try_get(0).ok()?;
                    match status.as_deref() {
                        Some("committed") => return Some(true),
                        Some("aborted") => return Some(false),
                        // The server may still be finishing the COMMIT whose answer was lost (its
                        // backend has not noticed the connection is gone): ask again shortly.
                        Some("in progress") => {}
                        _ => return None,
                    }
                } else {
                    failures += 1;
                    if failures == 3 {
                        return None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), ask).await.ok().flatten()
    }

    /// The planner's estimate of the rows `sql` would touch, from `EXPLAIN (FORMAT JSON)` in a read-only
    /// transaction (planning only: nothing runs). `None` when there is no estimate to give.
    /// `change`: plan as the change login (a write's privileges are checked at planning); a read is
    /// planned as the agent's login, so planning-time user code never runs with more rights.
    pub async fn estimate_rows(
        &self,
        sql: &str,
        change: bool,
        timeout: Duration,
        ct: &CancellationToken,
    ) -> Option<f64> {
        let explain = match crate::classify::embed("EXPLAIN (FORMAT JSON) ", sql, "") {
            Ok(text) => text,
            Err(e) => {
                tracing::debug!("no row estimate: {e}");
                return None;
            }
        };
        // READ ONLY and rolled back, as the login the statement would run as.
        let limits = super::read::ReadLimits {
            max_rows: 1,
            statement_timeout: timeout,
            max_bytes: crate::config::DEFAULT_MAX_RESULT_BYTES,
        };
        let login = if change {
            super::read::Login::Change
        } else {
            super::read::Login::Agent
        };
        let result = self.read_on(login, &explain, limits, ct).await;
        let plan = match result {
            Ok(r) => r.rows.into_iter().next()?.into_iter().next()?,
            Err(e) => {
                tracing::debug!("no row estimate: {e}");
                return None;
            }
        };
        let plan = match plan {
            serde_json::Value::String(s) => serde_json::from_str(&s).ok()?,
            v => v,
        };
        let top = plan.get(0)?.get("Plan")?;
        // ModifyTable reports 0 rows itself; the rows it will change come from its input.
        let node = if top.get("Node Type").and_then(|n| n.as_str()) == Some("ModifyTable") {
            top.get("Plans").and_then(|p| p.get(0)).unwrap_or(top)
        } else {
            top
        };
        node.get("Plan Rows").and_then(|r| r.as_f64())
    }
}
