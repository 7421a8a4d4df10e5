//! Agent reads: one statement through the extended protocol, inside the session's READ ONLY
//! transaction, streamed from a portal that stops at the row cap. Never `simple_query`.

use std::time::Duration;

use futures_util::{TryStreamExt, pin_mut};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{
    Database, DbError,
    budget::{ByteBudget, TruncatedBy},
    mask::{CATALOG_SQL, Masking, Named, RESOLVE_SQL, References, Resolution},
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
    /// (25006); the transaction is always rolled back. With `masking`, masked columns are masked
    /// inside Postgres (see `mask`), or the read is refused.
    pub async fn read(
        &self,
        sql: &str,
        limits: ReadLimits,
        masking: Option<&Masking>,
        ct: &CancellationToken,
    ) -> Result<ReadResult, DbError> {
        let max_rows = limits.max_rows.clamp(1, i32::MAX as u32 - 1) as usize;
        let masked = masked_refs(sql, masking)?;
        let mut session = Session::open(self).await?;
        let deadline = limits.statement_timeout + Duration::from_secs(5);
        session
            .guarded(ct, deadline, async |s: &mut Session| {
                let mut budget = ByteBudget::new(limits.max_bytes);
                let (tx, statement, _) = begin_masked_read(s, limits.statement_timeout, sql, masked).await?;
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

/// The single JSON value our catalog queries answer with, decoded.
fn catalog_json<T: serde::de::DeserializeOwned>(rows: &[tokio_postgres::Row]) -> Result<T, DbError> {
    let json: serde_json::Value = rows
        .first()
        .and_then(|r| r.try_get(0).ok())
        .ok_or_else(|| DbError::Masked("the catalog lookup for masks returned nothing".into()))?;
    serde_json::from_value(json)
        .map_err(|e| DbError::Masked(format!("the catalog lookup for masks was unreadable: {e}")))
}

/// The relations `sql` names, when masks are in play. A query that names no relation cannot reach a
/// masked column, so it gets `None` and runs as written.
pub(super) fn masked_refs<'m>(
    sql: &str,
    masking: Option<&'m Masking>,
) -> Result<Option<(&'m Masking, References)>, DbError> {
    Ok(match masking {
        Some(m) => References::of(sql)
            .map_err(|e| DbError::Masked(e.0))?
            .map(|refs| (m, refs)),
        None => None,
    })
}

/// The read transaction for agent text, prepared (Parse/Describe): with masks, names are resolved
/// and masked tables rewritten first, and no result column may come straight from a masked column.
/// Returns the transaction, the prepared statement and the SQL text it was prepared from.
pub(super) async fn begin_masked_read<'s>(
    s: &'s mut Session,
    timeout: Duration,
    sql: &str,
    masked: Option<(&Masking, References)>,
) -> Result<(deadpool_postgres::Transaction<'s>, tokio_postgres::Statement, String), DbError> {
    let (tx, statement, found, run) = match masked {
        None => {
            let (tx, statement) = s.begin_read_prepared(timeout, sql).await?;
            (tx, statement, None, sql.to_string())
        }
        Some((masking, refs)) => {
            use tokio_postgres::types::Type;
            let names = refs.names();
            let (tables, columns) = masking.catalog_params();
            let (tx, rows) = s
                .begin_read_query(timeout, RESOLVE_SQL, &[(&names, Type::TEXT_ARRAY)])
                .await?;
            let named: Vec<Named> = catalog_json(&rows)?;
            let found: Resolution = match masking.resolve_named(named).map_err(|e| DbError::Masked(e.0))? {
                Some(found) => found,
                None => {
                    let rows = tx
                        .query_typed(
                            CATALOG_SQL,
                            &[
                                (&names, Type::TEXT_ARRAY),
                                (&tables, Type::TEXT_ARRAY),
                                (&columns, Type::TEXT_ARRAY),
                            ],
                        )
                        .await
                        .map_err(DbError::from_pg)?;
                    catalog_json(&rows)?
                }
            };
            let rewritten = masking.rewrite(refs, &found).map_err(|e| DbError::Masked(e.0))?;
            let statement = tx
                .prepare(rewritten.as_deref().unwrap_or(sql))
                .await
                .map_err(DbError::from_pg)?;
            let run = rewritten.unwrap_or_else(|| sql.to_string());
            (tx, statement, Some(found), run)
        }
    };
    if let Some(found) = &found
        && let Some(c) = statement
            .columns()
            .iter()
            .find(|c| Masking::leaks(found, c.table_oid(), c.column_id()))
    {
        return Err(DbError::Masked(format!(
            "result column `{}` would come straight from a masked column",
            c.name()
        )));
    }
    if !statement.params().is_empty() {
        return Err(DbError::Client(format!(
            "the statement has {} parameter placeholder(s) ($1 …); pgwarden takes no parameters, so write the values into the SQL",
            statement.params().len()
        )));
    }
    Ok((tx, statement, run))
}
