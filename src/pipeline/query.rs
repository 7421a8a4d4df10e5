//! `query`: one statement. Reads run as the agent's login in a READ ONLY transaction that is rolled
//! back; changes (after the policy, and a person when it asks) run with the reviewer's dry run or
//! row limit and report what they changed.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{
    ToolError,
    step::{Control, Estimate, ForReview, OnBehalf, Step},
};
use crate::{
    approval::Approved,
    audit::OutcomeRecord,
    classify::{self, Assessment},
    db::{
        DbError,
        budget::TruncatedBy,
        read::ReadLimits,
        write::{WriteError, WriteOptions},
    },
    policy::{Decision, Effect},
    tools::query::{Change, QueryArgs, QueryOutput},
    trail::Trail,
};

/// `RETURNING` rows shown for an approved change, at most.
const RETURNING_SHOWN: usize = 10;

pub(super) struct Query<'a>(pub &'a QueryArgs);

pub(super) struct Plan {
    started: Instant,
    sql: String,
    /// Set by `review`: the rows this call may return, a note when the request was capped, the
    /// byte cap and the statement timeout.
    max_rows: u32,
    notice: Option<String>,
    max_bytes: u64,
    timeout: Duration,
}

impl Step for Query<'_> {
    type Plan = Plan;
    type Output = QueryOutput;

    fn recorded(&self) -> serde_json::Value {
        serde_json::json!({ "max_rows": self.0.max_rows })
    }

    async fn assess(
        &self,
        p: &OnBehalf<'_>,
        trail: &mut Trail,
        _: &CancellationToken,
    ) -> Result<(Assessment, Plan), ToolError> {
        let started = Instant::now();
        let sql = self.0.sql.as_str();
        if sql.trim().is_empty() {
            return Err(ToolError::BadArguments("`sql` is empty; pass one SQL statement".into()));
        }
        p.masks_hold()?;
        let assessment = classify::classify_with(sql, &p.catalog_facts());
        trail.assessed(&assessment);
        // Text PostgreSQL rejects outright (a typo such as `SELEC`, only ever among what the
        // classifier could not read) and COPY needing the copy protocol are answered now, not sent
        // to a person to approve.
        let unknown = assessment.categories.contains(&classify::Category::Unknown);
        let refused = unknown.then(|| classify::certain_syntax_error(sql)).flatten();
        if let Some(e) = refused.or_else(|| classify::not_runnable(&assessment)) {
            return Err(ToolError::BadArguments(e));
        }
        if assessment.statements.len() > 1 {
            return Err(ToolError::Refused(format!(
                "{} statements given; `query` runs exactly one statement per call",
                assessment.statements.len()
            )));
        }
        let plan = Plan {
            started,
            sql: sql.to_string(),
            max_rows: 0,
            notice: None,
            max_bytes: 0,
            timeout: Duration::ZERO,
        };
        Ok((assessment, plan))
    }

    async fn review(
        &self,
        p: &OnBehalf<'_>,
        assessment: &Assessment,
        plan: &mut Plan,
        decision: &Decision,
        _: &mut Trail,
        _: &CancellationToken,
    ) -> Result<ForReview, ToolError> {
        (plan.max_rows, plan.notice) = p.row_cap(self.0.max_rows, decision.max_rows)?;
        // `--max-result-bytes` is the server's hard maximum; a policy may only lower it.
        plan.max_bytes = decision
            .max_result_bytes
            .map_or(p.limits.max_result_bytes, |b| b.min(p.limits.max_result_bytes));
        plan.timeout = decision.statement_timeout.unwrap_or(p.limits.statement_timeout);
        let kind = assessment.statements.first().map(|s| s.kind.as_str());
        let estimate = match kind {
            Some("UPDATE" | "DELETE" | "MERGE" | "INSERT") if runs_as_read(assessment, &plan.sql) => Estimate::AsRead,
            Some("UPDATE" | "DELETE" | "MERGE" | "INSERT") => Estimate::AsChange,
            _ => Estimate::None,
        };
        Ok(ForReview {
            bound: serde_json::json!({ "max_rows": plan.max_rows }),
            details: vec![],
            timeout: plan.timeout,
            estimate,
        })
    }

    async fn execute(
        &self,
        p: &OnBehalf<'_>,
        assessment: &Assessment,
        plan: Plan,
        decision: &Decision,
        approved: Approved,
        _: &mut Trail,
        ctl: &Control,
    ) -> Result<QueryOutput, ToolError> {
        if runs_as_read(assessment, &plan.sql) {
            p.read(plan, &ctl.cancel).await
        } else {
            p.change(plan, decision, approved, &ctl.cancel).await
        }
    }

    fn outcome(out: &QueryOutput) -> OutcomeRecord {
        OutcomeRecord {
            rows: out.change.is_none().then_some(out.row_count as u64),
            rows_affected: out.change.as_ref().map(|c| c.audited_rows_affected),
            committed: out.change.as_ref().map(|c| c.committed),
            ..OutcomeRecord::default()
        }
    }
}

impl OnBehalf<'_> {
    /// A read (or a query a person approved that only reads): READ ONLY, rolled back.
    async fn read(&self, plan: Plan, ct: &CancellationToken) -> Result<QueryOutput, ToolError> {
        let limits = ReadLimits {
            max_rows: plan.max_rows,
            statement_timeout: plan.timeout,
            max_bytes: plan.max_bytes,
        };
        let result = self.db.read(&plan.sql, limits, ct).await?;
        let elapsed_ms = plan.started.elapsed().as_millis() as u64;
        tracing::debug!(
            tool = "query",
            rows = result.rows.len(),
            truncated = result.truncated,
            elapsed_ms,
            "query done"
        );
        let notes: Vec<String> = plan
            .notice
            .into_iter()
            .chain(byte_cap_note(result.truncated_by, plan.max_bytes, result.rows.len()))
            .chain(self.first_note())
            .collect();
        Ok(QueryOutput {
            row_count: result.rows.len(),
            columns: result.columns,
            rows: result.rows,
            truncated: result.truncated,
            truncated_by: result.truncated_by,
            max_rows: plan.max_rows,
            elapsed_ms,
            notice: (!notes.is_empty()).then(|| notes.join("; ")),
            change: None,
        })
    }

    /// A statement that may change something: the change login, the reviewer's dry run or row
    /// limit, and what it changed.
    async fn change(
        &self,
        plan: Plan,
        decision: &Decision,
        approved: Approved,
        ct: &CancellationToken,
    ) -> Result<QueryOutput, ToolError> {
        let Approved {
            dry_run,
            max_rows_affected,
            reason: reviewer_reason,
        } = approved;
        let (max_rows, max_bytes) = (plan.max_rows, plan.max_bytes);
        // Masked columns never come back through RETURNING of a login that may read them.
        let returning_rows = if self.withhold_change_output {
            0
        } else {
            RETURNING_SHOWN.min(max_rows as usize)
        };
        let opts = WriteOptions {
            statement_timeout: plan.timeout,
            dry_run,
            max_rows_affected,
            returning_rows,
            returning_bytes: max_bytes,
        };
        let result = self.db.write(&plan.sql, opts, ct).await.map_err(|e| match e {
            WriteError::OverLimit { limit, .. } if self.withhold_change_output => ToolError::RolledBack(format!(
                "the change touched more rows than the reviewer's limit of {limit}; it was rolled back and nothing changed"
            )),
            WriteError::OverLimit { .. } => ToolError::RolledBack(e.to_string()),
            WriteError::CommitUnknown { .. } => ToolError::CommitUnknown(e.to_string()),
            WriteError::Db(DbError::Sql { ref code, .. }) if code == "25001" => ToolError::Refused(format!(
                "{e}; pgwarden runs every change inside a transaction (so a dry run or row limit can roll it back), \
                 and this statement cannot run in one — ask the user to run it outside pgwarden"
            )),
            // A failing row's detail, and many messages (`invalid input syntax for type integer:
            // "…"`), quote column values; from a login that may read masked columns, only the
            // SQLSTATE and position reach the model.
            WriteError::Db(DbError::Sql { code, position, .. }) if self.withhold_change_output => {
                ToolError::Db(DbError::Sql {
                    message: "the message is withheld: the change ran as a login that can read masked columns, \
                              and Postgres messages can quote their values"
                        .into(),
                    code,
                    detail: None,
                    hint: None,
                    position,
                })
            }
            WriteError::Db(db) => ToolError::Db(db),
        })?;
        let elapsed_ms = plan.started.elapsed().as_millis() as u64;
        tracing::info!(
            tool = "query",
            rows_affected = result.rows_affected,
            committed = result.committed,
            elapsed_ms,
            "change done"
        );
        if result.committed {
            // It may have created or replaced user code the next call must be judged against.
            self.refresh_after_change().await;
        }
        let truncated_by = if result.returning_cut {
            Some(TruncatedBy::Bytes)
        } else {
            ((result.rows.len() as u64) < result.rows_affected && !result.rows.is_empty()).then_some(TruncatedBy::Rows)
        };
        let mut notes: Vec<String> = plan.notice.into_iter().collect();
        notes.extend(byte_cap_note(truncated_by, max_bytes, result.rows.len()));
        notes.extend(self.first_note());
        if result.commit_confirmed_after_loss {
            notes.push(
                "the connection was lost right after COMMIT; Postgres, asked again, confirms the change committed \
                 (do not run it again)"
                    .into(),
            );
        }
        if self.withhold_change_output {
            notes.push("RETURNING rows are not shown while the policy masks columns".into());
        }
        Ok(QueryOutput {
            row_count: result.rows.len(),
            truncated: truncated_by.is_some(),
            truncated_by,
            columns: result.columns,
            rows: result.rows,
            max_rows,
            elapsed_ms,
            notice: (!notes.is_empty()).then(|| notes.join("; ")),
            change: Some(Change {
                // A dry run changes nothing, so its count serves only to learn about the rows.
                rows_affected: (!(dry_run && self.withhold_change_output)).then_some(result.rows_affected),
                audited_rows_affected: result.rows_affected,
                committed: result.committed,
                dry_run,
                row_limit: max_rows_affected,
                approved_under: (decision.effect == Effect::Approve).then(|| decision.rule_label()),
                reviewer_reason,
            }),
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
}

/// What the model is told when the byte cap cut its result short.
fn byte_cap_note(truncated_by: Option<TruncatedBy>, max_bytes: u64, rows: usize) -> Option<String> {
    (truncated_by == Some(TruncatedBy::Bytes)).then(|| {
        format!(
            "the result was cut off after {rows} row{} at the byte cap of {} for one call; select fewer or \
             narrower columns (e.g. `left(col, 200)`, `length(col)` instead of a large value) or fewer rows \
             (WHERE, LIMIT, aggregates)",
            if rows == 1 { "" } else { "s" },
            crate::units::format_byte_size(max_bytes)
        )
    })
}

/// True when the call takes the read path (the agent's login, READ ONLY, rolled back): plain reads,
/// and also a query a person approved because it reads a sensitive catalog or holds something the
/// classifier could not read. Only statements that may change something take the change login.
fn runs_as_read(a: &Assessment, sql: &str) -> bool {
    use classify::Category;
    // Text the parser could not read goes by its first word: a query is still a query.
    let kind = match a.statements.as_slice() {
        [s] if s.kind == "UNKNOWN" => classify::first_keyword(sql).unwrap_or_default(),
        [s] => s.kind.clone(),
        _ => String::new(),
    };
    let query = matches!(
        kind.as_str(),
        "SELECT" | "WITH" | "VALUES" | "TABLE" | "(SELECT" | "(" | "SHOW"
    );
    a.is_read()
        || (query
            && a.categories
                .iter()
                .all(|c| matches!(c, Category::Read | Category::Export | Category::Unknown)))
}
