//! The only place the steps meet: a tool call's `Action` is classified, then executed, and the
//! outcome shaped for the model. (Policy, approval and audit join here in later stages.)

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::{
    classify,
    config::Limits,
    db::{
        Database, DbError,
        catalog::{CatalogError, TableDescription, TableList},
        read::ReadLimits,
    },
    tools::query::QueryOutput,
};

/// Who is calling, as far as the transport tells us.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    /// Minted per server instance on stdio.
    pub session_id: String,
}

/// One tool call, as the rest of the pipeline sees it.
#[derive(Debug, Clone)]
pub struct Action {
    pub tool: &'static str,
    pub sql: Option<String>,
    pub intent: Option<String>,
    pub caller: Caller,
}

/// What the model is told when a call does not succeed. `Internal` details go to the log only.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("bad arguments: {0}")]
    BadArguments(String),
    #[error("refused: {0}. Nothing was executed.")]
    Refused(String),
    #[error("{0}")]
    Db(DbError),
    #[error("{0}")]
    Catalog(String),
}

impl From<DbError> for ToolError {
    fn from(e: DbError) -> Self {
        ToolError::Db(e)
    }
}

impl From<CatalogError> for ToolError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Db(db) => ToolError::Db(db),
            other => ToolError::Catalog(other.to_string()),
        }
    }
}

impl ToolError {
    /// The text shown to the model; internal causes are logged here and replaced by a plain sentence.
    pub fn for_model(&self) -> String {
        if let ToolError::Db(DbError::Unavailable(detail)) = self {
            tracing::error!("database unavailable: {detail}");
        }
        self.to_string()
    }
}

pub struct Pipeline {
    db: Database,
    limits: Limits,
}

impl Pipeline {
    pub fn new(db: Database, limits: Limits) -> Pipeline {
        Pipeline { db, limits }
    }

    pub async fn query(
        &self,
        action: &Action,
        max_rows: Option<i64>,
        ct: &CancellationToken,
    ) -> Result<QueryOutput, ToolError> {
        let started = Instant::now();
        let sql = action.sql.as_deref().unwrap_or_default();
        if sql.trim().is_empty() {
            return Err(ToolError::BadArguments(
                "`sql` is empty; pass one SELECT statement".into(),
            ));
        }
        let (max_rows, notice) = self.row_cap(max_rows)?;
        // Until policies and approval land, only plain reads run at all. The database guards (READ
        // ONLY, extended protocol) still apply: the classifier is a layer, not a replacement.
        let assessment = classify::classify(sql);
        if assessment.statements.len() > 1 {
            return Err(ToolError::Refused(format!(
                "{} statements given; `query` runs exactly one statement per call",
                assessment.statements.len()
            )));
        }
        if !assessment.is_read() {
            return Err(ToolError::Refused(format!(
                "classified as {} (risk {}): {}; `query` only runs reads until approvals are available",
                assessment.category().as_str(),
                assessment.risk.as_str(),
                assessment.reasons.join("; ")
            )));
        }
        let limits = ReadLimits {
            max_rows,
            statement_timeout: self.limits.statement_timeout,
        };
        let result = self.db.read(sql, limits, ct).await?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            tool = action.tool,
            rows = result.rows.len(),
            truncated = result.truncated,
            elapsed_ms,
            "query done"
        );
        Ok(QueryOutput {
            row_count: result.rows.len(),
            columns: result.columns,
            rows: result.rows,
            truncated: result.truncated,
            max_rows,
            elapsed_ms,
            notice,
        })
    }

    fn row_cap(&self, requested: Option<i64>) -> Result<(u32, Option<String>), ToolError> {
        let limit = self.limits.max_rows_limit;
        match requested {
            None => Ok((self.limits.default_max_rows, None)),
            Some(n) if n < 1 => Err(ToolError::BadArguments(format!(
                "`max_rows` must be at least 1 (got {n})"
            ))),
            Some(n) if n > limit as i64 => Ok((
                limit,
                Some(format!("max_rows {n} is above this server's limit; capped at {limit}")),
            )),
            Some(n) => Ok((n as u32, None)),
        }
    }

    pub async fn list_tables(&self, schema: Option<&str>, ct: &CancellationToken) -> Result<TableList, ToolError> {
        Ok(self.db.list_tables(schema, self.limits.statement_timeout, ct).await?)
    }

    pub async fn describe_table(&self, table: &str, ct: &CancellationToken) -> Result<TableDescription, ToolError> {
        if table.trim().is_empty() {
            return Err(ToolError::BadArguments(
                "`table` is empty; pass a table name such as `orders` or `sales.orders`".into(),
            ));
        }
        Ok(self
            .db
            .describe_table(table.trim(), self.limits.statement_timeout, ct)
            .await?)
    }
}
