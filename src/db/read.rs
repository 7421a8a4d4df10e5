//! Agent reads: one statement through the extended protocol, inside the session's READ ONLY
//! transaction, streamed from a portal that stops at the row cap. Never `simple_query`.

use std::time::Duration;

use futures_util::{TryStreamExt, pin_mut};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{
    Database, DbError,
    budget::{ByteBudget, TruncatedBy},
    session::Session,
    values,
};

/// A result column: its name and Postgres type (`int8`, `text[]`, `numeric`, …).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, PartialEq)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

impl Column {
    /// The result columns of a prepared statement.
    pub fn of(statement: &tokio_postgres::Statement) -> Vec<Column> {
        statement
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_string(),
                type_name: values::type_name(c.type_()),
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct ReadResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<serde_json::Value>>,
    /// True when more rows existed than the caps allowed.
    pub truncated: bool,
    /// Which cap cut the result short.
    pub truncated_by: Option<TruncatedBy>,
}

/// Which login a read runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Login {
    Agent,
    Change,
}

/// Limits for one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// At least 1: a portal fetch of 0 would mean "all rows".
    pub max_rows: u32,
    pub statement_timeout: Duration,
    /// The most raw result bytes (see `budget`).
    pub max_bytes: u64,
}

impl Database {
    /// Runs `sql` (text from the agent) as a read. The statement is sent with Parse/Bind/Execute, so
    /// Postgres itself rejects a second statement (42601); the READ ONLY transaction rejects writes
    /// (25006); the transaction is always rolled back. It runs as the agent's login, so masked
    /// columns are whatever Postgres lets that role see (see `masking`).
    pub async fn read(&self, sql: &str, limits: ReadLimits, ct: &CancellationToken) -> Result<ReadResult, DbError> {
        self.read_on(Login::Agent, sql, limits, ct).await
    }

    /// [`Database::read`] as `login`.
    pub(super) async fn read_on(
        &self,
        login: Login,
        sql: &str,
        limits: ReadLimits,
        ct: &CancellationToken,
    ) -> Result<ReadResult, DbError> {
        let max_rows = limits.max_rows.clamp(1, i32::MAX as u32 - 1) as usize;
        let mut session = match login {
            Login::Agent => Session::open(self).await?,
            Login::Change => Session::open_change(self).await?,
        };
        let deadline = limits.statement_timeout + Duration::from_secs(5);
        session
            .guarded(ct, deadline, async |s: &mut Session| {
                let mut budget = ByteBudget::new(limits.max_bytes);
                let (tx, statement) = begin_agent_read(s, limits.statement_timeout, sql).await?;
                let columns = Column::of(&statement);
                let portal = tx.bind(&statement, &[]).await.map_err(DbError::from_pg)?;
                // One row past the cap tells "exactly max_rows" apart from "more than max_rows".
                let stream = tx
                    .query_portal_raw(&portal, max_rows as i32 + 1)
                    .await
                    .map_err(DbError::from_pg)?;
                pin_mut!(stream);
                let mut rows = Vec::new();
                let mut truncated_by = None;
                while let Some(row) = stream.try_next().await.map_err(DbError::from_pg)? {
                    if rows.len() == max_rows {
                        truncated_by = Some(TruncatedBy::Rows);
                        break;
                    }
                    if !budget.admit(&row)? {
                        truncated_by = Some(TruncatedBy::Bytes);
                        break;
                    }
                    let decoded = (0..row.len())
                        .map(|i| {
                            let cell: values::RawCell = row.try_get(i).map_err(|e| DbError::Client(e.to_string()))?;
                            Ok(values::to_json(row.columns()[i].type_(), cell.0))
                        })
                        .collect::<Result<Vec<_>, DbError>>()?;
                    rows.push(decoded);
                }
                drop(tx);
                if truncated_by == Some(TruncatedBy::Bytes) {
                    // The portal may still be sending rows of any size: stop it.
                    s.abandon();
                }
                Ok(ReadResult {
                    columns,
                    rows,
                    truncated: truncated_by.is_some(),
                    truncated_by,
                })
            })
            .await
    }
}

/// The read transaction for agent text, prepared (Parse/Describe) exactly as written: masks are
/// Postgres's business (column privileges and masking views, see `masking`), never a rewrite.
pub(super) async fn begin_agent_read<'s>(
    s: &'s mut Session,
    timeout: Duration,
    sql: &str,
) -> Result<(deadpool_postgres::Transaction<'s>, tokio_postgres::Statement), DbError> {
    let (tx, statement) = s.begin_read_prepared(timeout, sql).await?;
    if !statement.params().is_empty() {
        return Err(DbError::Client(format!(
            "the statement has {} parameter placeholder(s) ($1 …); pgwarden takes no parameters, so write the values into the SQL",
            statement.params().len()
        )));
    }
    Ok((tx, statement))
}
