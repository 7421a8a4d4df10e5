//! The only place the steps meet: a tool call's `Action` is classified, decided by the policy, then
//! executed with the policy's limits and masks, and the outcome shaped for the model. (Approval and
//! audit join here in later stages.)

use std::{sync::Arc, time::Instant};

use tokio_util::sync::CancellationToken;

use crate::{
    classify::{self, Assessment},
    config::Limits,
    db::{
        Database, DbError,
        catalog::{CatalogError, TableDescription, TableList},
        mask::Masking,
        read::ReadLimits,
    },
    policy::{Decision, Effect, Policy, Request},
    tools::query::QueryOutput,
};

/// Who is calling, as far as the transport tells us.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    /// Who the operator says is using this server (`--principal`); policy rules can match it.
    pub principal: Option<String>,
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
    /// The policy said `deny`.
    #[error(
        "denied by {rule}: {reason}. Nothing was executed; this is the operator's policy, so do not retry it in another form — ask the user instead."
    )]
    Denied { rule: String, reason: String },
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
    policy: Arc<Policy>,
    /// The policy's masks with this run's hash salt; `None` when the policy masks nothing.
    masking: Option<Masking>,
    principal: Option<String>,
}

impl Pipeline {
    pub fn new(db: Database, limits: Limits, policy: Arc<Policy>, principal: Option<String>) -> Pipeline {
        let masking = (!policy.masks.is_empty()).then(|| Masking {
            masks: policy.masks.clone(),
            salt: uuid::Uuid::new_v4().simple().to_string(),
        });
        Pipeline {
            db,
            limits,
            policy,
            masking,
            principal,
        }
    }

    /// The operator-configured principal, for `Caller`.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// The policy's decision for `action`; `allow` comes back, `deny` and `approve` become errors.
    fn decide(&self, action: &Action, assessment: &Assessment) -> Result<Decision, ToolError> {
        let decision = self.policy.evaluate(&Request {
            tool: action.tool,
            assessment,
            principal: action.caller.principal.as_deref(),
        });
        tracing::info!(
            tool = action.tool,
            effect = decision.effect.as_str(),
            rule = decision.rule.as_deref().unwrap_or("-"),
            "policy decision"
        );
        let what = || {
            let mut s = format!(
                "classified as {} (risk {})",
                assessment.category().as_str(),
                assessment.risk.as_str()
            );
            if !assessment.reasons.is_empty() {
                s.push_str(&format!(": {}", assessment.reasons.join("; ")));
            }
            s
        };
        match decision.effect {
            Effect::Allow => Ok(decision),
            Effect::Deny => Err(ToolError::Denied {
                rule: decision.rule_label(),
                reason: format!("{} ({})", decision.reason, what()),
            }),
            Effect::Approve => Err(ToolError::Refused(format!(
                "{}; {} requires a person's approval ({}), and this pgwarden cannot ask for approvals yet; \
                 ask the user to run it themselves or to change the policy",
                what(),
                decision.rule_label(),
                decision.reason
            ))),
        }
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
        let assessment = classify::classify(sql);
        if assessment.statements.len() > 1 {
            return Err(ToolError::Refused(format!(
                "{} statements given; `query` runs exactly one statement per call",
                assessment.statements.len()
            )));
        }
        let decision = self.decide(action, &assessment)?;
        // Only reads have an execution path until approvals land; a policy that allows a write
        // outright is honoured then. The database guards (READ ONLY, extended protocol) apply
        // whatever the classifier says: it is a layer, not a replacement.
        if !assessment.is_read() {
            return Err(ToolError::Refused(format!(
                "classified as {} (risk {}): {}; {} allows it, but this pgwarden runs only reads through `query` so far",
                assessment.category().as_str(),
                assessment.risk.as_str(),
                assessment.reasons.join("; "),
                decision.rule_label()
            )));
        }
        let (max_rows, notice) = self.row_cap(max_rows, decision.max_rows)?;
        let limits = ReadLimits {
            max_rows,
            statement_timeout: decision.statement_timeout.unwrap_or(self.limits.statement_timeout),
        };
        let result = self.db.read(sql, limits, self.masking.as_ref(), ct).await?;
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

    /// The rows this call may return: what the model asked for, within the server's hard limit and
    /// the policy's cap for this call.
    fn row_cap(&self, requested: Option<i64>, policy_cap: Option<u32>) -> Result<(u32, Option<String>), ToolError> {
        let limit = policy_cap.map_or(self.limits.max_rows_limit, |p| p.min(self.limits.max_rows_limit));
        match requested {
            None => Ok((self.limits.default_max_rows.min(limit), None)),
            Some(n) if n < 1 => Err(ToolError::BadArguments(format!(
                "`max_rows` must be at least 1 (got {n})"
            ))),
            Some(n) if n > limit as i64 => Ok((
                limit,
                Some(format!(
                    "max_rows {n} is above the limit for this call; capped at {limit}"
                )),
            )),
            Some(n) => Ok((n as u32, None)),
        }
    }

    /// Discovery is a catalog read: the policy decides it like any read, with no tables.
    pub async fn list_tables(
        &self,
        action: &Action,
        schema: Option<&str>,
        ct: &CancellationToken,
    ) -> Result<TableList, ToolError> {
        let decision = self.decide(action, &classify::classify("SELECT 1"))?;
        let timeout = decision.statement_timeout.unwrap_or(self.limits.statement_timeout);
        Ok(self.db.list_tables(schema, timeout, ct).await?)
    }

    /// Describing a table is decided as a read of that table, so table and tag rules apply.
    pub async fn describe_table(
        &self,
        action: &Action,
        table: &str,
        ct: &CancellationToken,
    ) -> Result<TableDescription, ToolError> {
        let table = table.trim();
        if table.is_empty() {
            return Err(ToolError::BadArguments(
                "`table` is empty; pass a table name such as `orders` or `sales.orders`".into(),
            ));
        }
        // Anything that is not exactly one relation name cannot name a table.
        let assessment = classify::classify(&format!("SELECT * FROM {table}"));
        if !assessment.is_read() || assessment.tables.len() != 1 || assessment.statements.len() != 1 {
            return Err(CatalogError::NoTable(table.to_string()).into());
        }
        let decision = self.decide(action, &assessment)?;
        let timeout = decision.statement_timeout.unwrap_or(self.limits.statement_timeout);
        let mut d = self.db.describe_table(table, timeout, ct).await?;
        // Tell the model up front which columns it will only see masked.
        let name = format!("{}.{}", d.schema, d.name);
        d.tags = self.policy.tags_of(&name).into_iter().map(str::to_string).collect();
        if let Some(masks) = self.policy.masks.get(&name) {
            for c in &mut d.columns {
                c.mask = masks.get(&c.name).copied();
            }
        }
        Ok(d)
    }
}
