//! The only place the steps meet: a tool call's `Action` is classified, decided by the policy,
//! approved by a person when the policy says so, then executed with the policy's limits and masks,
//! and the outcome shaped for the model. (The audit joins here in a later stage.)

use std::{sync::Arc, time::Instant};

use tokio_util::sync::CancellationToken;

use rmcp::model::InputRequiredResult;

use crate::{
    approval::{
        self, Asked, Asking, Channel, ReviewPacket, Route, Verdict,
        hub::{Approvals, PendingInfo, StoredCall, Surfaces},
        pending::{Awaited, State},
        reach::{ClientPrompt, NoChannel, no_channel_message},
    },
    audit::{ApprovalRecord, AuditLog, OutcomeRecord},
    call::{Action, Principal, Tool},
    classify::{self, Assessment},
    config::Limits,
    db::{
        Database, DbError,
        budget::TruncatedBy,
        catalog::{CatalogError, TableDescription, TableList},
        read::ReadLimits,
        write::{WriteError, WriteOptions},
    },
    policy::{ApprovalChannel, Decision, Effect, Level, Policy, Request},
    tools::query::{Change, QueryOutput},
    trail::Trail,
};

mod catalog;
mod export;
mod grant;

pub use catalog::CATALOG_POLL;

/// `RETURNING` rows shown for an approved change, at most.
const RETURNING_SHOWN: usize = 10;

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
    /// A person (or the lack of one) did not approve the call.
    #[error(
        "not approved: {why}{}. It was {what}, and {rule} requires a person's approval. Nothing was executed; adapt the plan, or ask the user how to proceed.",
        reason.as_ref().map(|r| format!(" (reviewer's reason: \"{r}\")")).unwrap_or_default()
    )]
    NotApproved {
        rule: String,
        what: String,
        why: String,
        reason: Option<String>,
    },
    /// The change ran but was rolled back, e.g. over the reviewer's row limit.
    #[error("{0}")]
    RolledBack(String),
    /// The connection was lost at COMMIT and its fate could not be learned: never "try again".
    #[error("{0}")]
    CommitUnknown(String),
    #[error("{0}")]
    Db(DbError),
    #[error("{0}")]
    Catalog(String),
}

/// What `approve` needs to know about the call beyond the action itself.
struct Ask<'a> {
    assessment: &'a Assessment,
    decision: &'a Decision,
    /// The call's arguments besides the SQL and intent: part of what the approval is bound to.
    arguments: serde_json::Value,
    /// For the row estimate shown in the prompt.
    timeout: std::time::Duration,
    /// Tool-specific lines for the prompt (an export's target, a grant's before → after).
    details: Vec<String>,
}

/// A call about to become a pending approval.
struct Pending<'a> {
    local: &'a approval::LocalRoute,
    hash: &'a str,
    packet: &'a ReviewPacket,
    level: Level,
    /// What a refusal says when no surface can show it (the level's setting, the client's prompt).
    refusal: NoChannel<'a>,
    /// The client's prompt, still open: its answer can decide the approval.
    prompt: Option<approval::OpenPrompt>,
    /// Why the client's own prompt did not settle it, when there was one.
    client_prompt: Option<&'a str>,
    /// When the call started asking.
    asked_at: Instant,
}

/// What a person approved (a refusal of any kind is an error instead).
#[derive(Debug, Default)]
struct Approved {
    dry_run: bool,
    max_rows_affected: Option<u64>,
    reason: Option<String>,
}

/// A call's result: done, waiting for the client to answer an approval prompt (2026-07-28), or
/// waiting for a person in the console or the card (`pgwarden_await` picks it up).
pub enum Outcome<T> {
    Done(T),
    InputRequired(InputRequiredResult),
    Pending(PendingInfo),
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
    /// The policy masks columns and approved changes run as a login that may read them: what a
    /// change reports back (RETURNING rows, error details) is withheld from the model.
    withhold_change_output: bool,
    principal: Option<Principal>,
    audit: Arc<AuditLog>,
    /// Where `export` writes. Defaults to `$XDG_DATA_HOME/pgwarden/exports`.
    /// The export directory, opened once (see `export_path`); why not, when it could not be.
    export_root: Result<crate::export_path::ExportRoot, String>,
    /// Pending approvals, the console and the card.
    approvals: Arc<Approvals>,
    /// What the catalog holds (user code, names, masking views), for `classify_with`; see `catalog`.
    catalog: std::sync::RwLock<catalog::CatalogState>,
    /// Said with the first `list_tables` or `query` result: which database this is, when the person
    /// may believe it is another (the demo sandbox because no DATABASE_URL reached pgwarden).
    database_note: Option<String>,
    noted: std::sync::atomic::AtomicBool,
}

/// What the model (and, through it, the person) is told when pgwarden serves its sandbox.
pub const SANDBOX_NOTE: &str = "connected to pgwarden's demo sandbox, not your database: no DATABASE_URL reached \
pgwarden (pass it in the client config's `env`; many clients do not pass the shell's variables to servers)";

impl Pipeline {
    /// Says, once, with the first `list_tables` or `query` result (and in the instructions) that this
    /// is the demo sandbox.
    pub fn serving_sandbox(mut self) -> Pipeline {
        self.database_note = Some(SANDBOX_NOTE.to_string());
        self
    }

    /// Which database this is, when it needs saying.
    pub fn database_note(&self) -> Option<&str> {
        self.database_note.as_deref()
    }

    /// The database note the first time it is asked for, then never.
    fn first_note(&self) -> Option<String> {
        let note = self.database_note.as_ref()?;
        (!self.noted.swap(true, std::sync::atomic::Ordering::Relaxed)).then(|| note.clone())
    }

    pub fn new(
        db: Database,
        limits: Limits,
        policy: Arc<Policy>,
        principal: Option<String>,
        audit: Arc<AuditLog>,
        export_dir: std::path::PathBuf,
        console_dir: std::path::PathBuf,
    ) -> Pipeline {
        let withhold_change_output = !policy.masks.is_empty() && db.separate_change_login;
        let label = format!(
            "pgwarden {} (pid {}) · policy {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            policy.sources.join(", ")
        );
        let approvals = Approvals::new(policy.approval.clone(), audit.clone(), label, console_dir);
        Pipeline {
            approvals,
            db,
            limits,
            policy,
            withhold_change_output,
            principal: principal.map(Principal::new),
            audit,
            export_root: crate::export_path::ExportRoot::open(&export_dir).map_err(|e| e.to_string()),
            catalog: Default::default(),
            database_note: None,
            noted: Default::default(),
        }
    }

    /// The pending approvals of this process.
    pub fn approvals(&self) -> &Arc<Approvals> {
        &self.approvals
    }

    /// The operator-configured principal, for `Caller`.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// The policy's decision for `action`: `deny` becomes an error. With `approvable`, `approve`
    /// comes back for the caller to ask a person; otherwise it is refused too.
    fn decide(
        &self,
        action: &Action,
        assessment: &Assessment,
        decision: Decision,
        approvable: bool,
    ) -> Result<Decision, ToolError> {
        tracing::info!(
            tool = action.tool.name(),
            effect = decision.effect.as_str(),
            rule = decision.rule.as_deref().unwrap_or("-"),
            "policy decision"
        );
        let what = || describe(assessment);
        match decision.effect {
            Effect::Allow => Ok(decision),
            Effect::Approve if approvable => Ok(decision),
            Effect::Deny => Err(ToolError::Denied {
                rule: decision.rule_label(),
                reason: format!("{} ({})", decision.reason, what()),
            }),
            Effect::Approve => Err(ToolError::Refused(format!(
                "{}; {} requires a person's approval ({}), and `{}` cannot ask for one",
                what(),
                decision.rule_label(),
                decision.reason,
                action.tool
            ))),
        }
    }

    pub async fn query(
        &self,
        action: &Action,
        max_rows: Option<i64>,
        route: &Route,
        ct: &CancellationToken,
    ) -> Result<Outcome<QueryOutput>, ToolError> {
        let mut trail = Trail::new(action, serde_json::json!({ "max_rows": max_rows }));
        let result = self.run_query(action, max_rows, route, ct, &mut trail).await;
        let outcome = trail.query_outcome(&result);
        self.finish(&trail, outcome, result)
    }

    /// The decision, fsynced, before an action runs: no record, no action.
    fn write_decision(&self, trail: &mut Trail) -> Result<(), ToolError> {
        self.audit
            .append(trail.decision_record(), true)
            .map_err(|e| ToolError::Refused(format!("the audit record could not be written ({e})")))?;
        trail.decision_written = true;
        Ok(())
    }

    /// Writes the call's last record. A read or refusal that cannot be audited is not returned; a
    /// change that already ran (its decision is on disk) is reported with the failure logged.
    fn finish<T>(&self, trail: &Trail, outcome: OutcomeRecord, result: Result<T, ToolError>) -> Result<T, ToolError> {
        let ok = outcome.status == "ok";
        let written = self.audit.append(trail.final_record(outcome), trail.decision_written);
        // The stored call of an approval ran (or failed): its approval is done either way.
        if let Some(id) = &trail.executed_approval {
            self.approvals.store.finish(id, ok);
        }
        match written {
            Ok(_) => result,
            Err(e) if trail.decision_written => {
                tracing::error!("the outcome of an audited change could not be recorded: {e}");
                result
            }
            Err(e) => {
                tracing::error!("audit write failed: {e}");
                Err(ToolError::Refused(format!(
                    "the audit record could not be written ({e}), and pgwarden returns nothing it has not recorded"
                )))
            }
        }
    }

    async fn run_query(
        &self,
        action: &Action,
        max_rows: Option<i64>,
        route: &Route,
        ct: &CancellationToken,
        trail: &mut Trail,
    ) -> Result<Outcome<QueryOutput>, ToolError> {
        let started = Instant::now();
        let sql = action.sql.as_deref().unwrap_or_default();
        if sql.trim().is_empty() {
            return Err(ToolError::BadArguments("`sql` is empty; pass one SQL statement".into()));
        }
        self.masks_hold()?;
        let assessment = classify::classify_with(sql, &self.catalog_facts());
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
        let decision = self.evaluate(action, &assessment, trail);
        let decision = self.decide(action, &assessment, decision, true)?;
        let (max_rows, notice) = self.row_cap(max_rows, decision.max_rows)?;
        // `--max-result-bytes` is the server's hard maximum; a policy may only lower it.
        let max_bytes = decision
            .max_result_bytes
            .map_or(self.limits.max_result_bytes, |p| p.min(self.limits.max_result_bytes));
        let timeout = decision.statement_timeout.unwrap_or(self.limits.statement_timeout);
        let approved = match decision.effect {
            Effect::Approve => {
                let ask = Ask {
                    assessment: &assessment,
                    decision: &decision,
                    arguments: serde_json::json!({ "max_rows": max_rows }),
                    timeout,
                    details: vec![],
                };
                match self.approve(action, ask, route, ct, trail).await? {
                    Outcome::InputRequired(r) => return Ok(Outcome::InputRequired(r)),
                    Outcome::Pending(p) => return Ok(Outcome::Pending(p)),
                    Outcome::Done(approved) => approved,
                }
            }
            _ => Approved::default(),
        };
        let Approved {
            dry_run,
            max_rows_affected,
            reason: reviewer_reason,
        } = approved;
        // A change, or anything a person approved (an export-category read, say), is on disk before it runs.
        if decision.effect == Effect::Approve || !assessment.is_read() {
            self.write_decision(trail)?;
        }
        if runs_as_read(&assessment, sql) {
            // A read that needed approval (an export, say) runs like any read: READ ONLY, rolled back.
            let limits = ReadLimits {
                max_rows,
                statement_timeout: timeout,
                max_bytes,
            };
            let result = self.db.read(sql, limits, ct).await?;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            tracing::info!(
                tool = action.tool.name(),
                rows = result.rows.len(),
                truncated = result.truncated,
                elapsed_ms,
                "query done"
            );
            let notes: Vec<String> = notice
                .into_iter()
                .chain(byte_cap_note(result.truncated_by, max_bytes, result.rows.len()))
                .chain(self.first_note())
                .collect();
            return Ok(Outcome::Done(QueryOutput {
                row_count: result.rows.len(),
                columns: result.columns,
                rows: result.rows,
                truncated: result.truncated,
                truncated_by: result.truncated_by,
                max_rows,
                elapsed_ms,
                notice: (!notes.is_empty()).then(|| notes.join("; ")),
                change: None,
            }));
        }
        // Masked columns never come back through RETURNING of a login that may read them.
        let returning_rows = if self.withhold_change_output {
            0
        } else {
            RETURNING_SHOWN.min(max_rows as usize)
        };
        let opts = WriteOptions {
            statement_timeout: timeout,
            dry_run,
            max_rows_affected,
            returning_rows,
            returning_bytes: max_bytes,
        };
        let result = self.db.write(sql, opts, ct).await.map_err(|e| match e {
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
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            tool = action.tool.name(),
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
        let mut notes: Vec<String> = notice.into_iter().collect();
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
        Ok(Outcome::Done(QueryOutput {
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
        }))
    }

    /// Asks a person about an `approve` decision; a refusal of any kind is an error naming the rule.
    ///
    /// In order: a stored call someone already approved (run by `pgwarden_await`) must still be the
    /// same action; the client's own prompt when the policy accepts a `client` channel and the client
    /// can show one; else a pending approval for the console or the card; else a refusal.
    async fn approve(
        &self,
        action: &Action,
        ask: Ask<'_>,
        route: &Route,
        ct: &CancellationToken,
        trail: &mut Trail,
    ) -> Result<Outcome<Approved>, ToolError> {
        let Ask {
            assessment,
            decision,
            arguments,
            timeout,
            details,
        } = ask;
        let hash = approval::action_hash(action, &arguments);
        let asked_at = Instant::now();
        let not_approved = |why: String, reason: Option<String>| ToolError::NotApproved {
            rule: decision.rule_label(),
            what: describe(assessment),
            why,
            reason,
        };
        if let Some(pre) = &route.preapproved {
            trail.approval(ApprovalRecord {
                channel: "pgwarden_await".into(),
                answer: if pre.dry_run { "dry_run" } else { "approve" }.into(),
                row_limit: pre.max_rows_affected,
                reason: pre.reason.clone(),
                approval_id: Some(pre.approval_id.clone()),
                action_hash: Some(hash.clone()),
                fingerprint: Some(approval::pending::fingerprint(&hash)),
                ..ApprovalRecord::default()
            });
            trail.executed_approval = Some(pre.approval_id.clone());
            if pre.hash != hash {
                return Err(ToolError::Refused(
                    "the approved action no longer matches what would run now (its arguments or caller changed); \
                     make the call again to ask for a new approval"
                        .into(),
                ));
            }
            return Ok(Outcome::Done(Approved {
                dry_run: pre.dry_run,
                max_rows_affected: pre.max_rows_affected,
                reason: pre.reason.clone(),
            }));
        }
        let settings = &self.approvals.settings;
        let (level, required_by) =
            settings.level_and_source(assessment.risk, decision.rule.as_deref().zip(decision.min_channel));
        let client = if !settings.enabled(ApprovalChannel::Elicitation) {
            ClientPrompt::Off
        } else if matches!(route.client, Channel::Unavailable) {
            ClientPrompt::Unavailable
        } else {
            ClientPrompt::Available
        };
        let client_prompt = level == Level::Client && client == ClientPrompt::Available;
        let local = route
            .local
            .as_ref()
            .filter(|l| self.approvals.reachable(l.card_host, level));
        let refusal = NoChannel {
            risk: assessment.risk,
            level,
            required_by: &required_by,
            client,
            prompt_outcome: None,
            console_problem: None,
            terminal: self.approvals.terminal(),
        };
        if !client_prompt && local.is_none() {
            trail.approval(ApprovalRecord {
                channel: "none".into(),
                answer: "no channel can ask a person".into(),
                ..ApprovalRecord::default()
            });
            let console_problem = settings
                .enabled(ApprovalChannel::Console)
                .then_some("it is not offered for this call");
            let why = no_channel_message(&NoChannel {
                console_problem,
                ..refusal
            });
            return Err(not_approved(why, None));
        }
        let review = || async {
            let kind = assessment
                .statements
                .first()
                .map(|s| s.kind.as_str())
                .unwrap_or_default();
            // Planning can run user code (an IMMUTABLE function is folded at plan time), and this
            // runs before anyone approved: no estimate for a statement with anything unknown.
            let plannable = !assessment.categories.contains(&classify::Category::Unknown);
            let estimate = if plannable
                && (matches!(kind, "UPDATE" | "DELETE" | "MERGE" | "INSERT") || action.tool == Tool::Export)
            {
                self.db
                    .estimate_rows(
                        action.sql.as_deref().unwrap_or_default(),
                        action.tool != Tool::Export
                            && !runs_as_read(assessment, action.sql.as_deref().unwrap_or_default()),
                        timeout,
                        ct,
                    )
                    .await
            } else {
                None
            };
            let mut packet = ReviewPacket::new(action, assessment, decision, estimate);
            packet.estimate_for_person_only = !self.policy.masks.is_empty();
            packet.details = details.clone();
            packet
        };
        // The same call again while it waits for a decision: the same approval, not a second prompt
        // (two prompts could approve it twice).
        let waiting = route
            .local
            .as_ref()
            .filter(|l| !route.client.has_answer() && l.approvals.store.is_pending(&action.caller.session_id, &hash));
        if !client_prompt || waiting.is_some() {
            let Some(local) = waiting.or(local) else {
                return Err(not_approved("no approval channel is available".into(), None));
            };
            let pending = Pending {
                local,
                hash: &hash,
                packet: &review().await,
                level,
                refusal,
                prompt: None,
                client_prompt: waiting.map(|_| "an identical call is already waiting for a decision"),
                asked_at,
            };
            return self.approve_pending(action, pending, ct, trail, not_approved).await;
        }
        // A prompt the client answers later needs somewhere for that answer to go: a pending approval.
        let budget = (route.local.is_some() && matches!(route.client, Channel::Elicit(..)))
            .then_some(settings.wait_budget)
            .filter(|b| *b < decision.approval_timeout);
        let asking = Asking {
            timeout: decision.approval_timeout,
            budget,
            instant_decline: settings.instant_decline,
        };
        let packet = if route.client.has_answer() {
            None
        } else {
            Some(review().await)
        };
        let channel_name = match &route.client {
            Channel::Elicit(..) => "elicitation",
            Channel::InputRequired { .. } => "input_required",
            Channel::Unavailable => "none",
        };
        let record = |trail: &mut Trail, answer: &str, row_limit: Option<u64>, reason: Option<String>| {
            trail.approval(ApprovalRecord {
                channel: channel_name.into(),
                answer: answer.into(),
                row_limit,
                reason,
                waited_ms: asked_at.elapsed().as_millis() as u64,
                ..ApprovalRecord::default()
            })
        };
        let asked = route
            .client
            .ask(packet.as_ref(), &hash, &asking, ct)
            .await
            .map_err(|e| ToolError::Refused(e.to_string()))?;
        let (prompt, what, target) = match asked {
            Asked::InputRequired(r) => {
                record(trail, "prompt sent (input_required)", None, None);
                return Ok(Outcome::InputRequired(r));
            }
            // The prompt is still a place to decide; the call stops waiting for it.
            Asked::StillOpen(prompt) => (
                Some(prompt),
                "no answer within the wait budget; the prompt stays open".to_string(),
                route.local.as_ref(),
            ),
            // Nothing approved it; another channel may still reach the person.
            Asked::Unseen(why) => {
                tracing::info!(tool = action.tool.name(), "{why}");
                (None, why, local)
            }
            Asked::Verdict(Verdict::NotApproved { why, reason }) => {
                tracing::info!(
                    tool = action.tool.name(),
                    rule = decision.rule.as_deref().unwrap_or("-"),
                    "not approved: {why}"
                );
                record(trail, &why, None, reason.clone());
                return Err(not_approved(why, reason));
            }
            Asked::Verdict(Verdict::Approved {
                dry_run,
                max_rows_affected,
                reason,
            }) => {
                tracing::info!(
                    tool = action.tool.name(),
                    rule = decision.rule.as_deref().unwrap_or("-"),
                    dry_run,
                    ?max_rows_affected,
                    "approved"
                );
                record(
                    trail,
                    if dry_run { "dry_run" } else { "approve" },
                    max_rows_affected,
                    reason.clone(),
                );
                return Ok(Outcome::Done(Approved {
                    dry_run,
                    max_rows_affected,
                    reason,
                }));
            }
        };
        let Some(local) = target else {
            record(trail, &what, None, None);
            return Err(not_approved(
                format!("{what}, and no other approval channel is enabled, so nobody could approve it"),
                None,
            ));
        };
        let packet = match packet {
            Some(p) => p,
            None => review().await,
        };
        let pending = Pending {
            local,
            hash: &hash,
            packet: &packet,
            level,
            refusal,
            prompt,
            client_prompt: Some(&what),
            asked_at,
        };
        self.approve_pending(action, pending, ct, trail, not_approved).await
    }

    /// A pending approval: shown in the console (and the card), then waited for within the budget
    /// unless the host renders the card (which needs the result first). Approved in time → the
    /// call goes on and runs now; otherwise the model gets the handle for `pgwarden_await`.
    async fn approve_pending(
        &self,
        action: &Action,
        pending: Pending<'_>,
        ct: &CancellationToken,
        trail: &mut Trail,
        not_approved: impl Fn(String, Option<String>) -> ToolError,
    ) -> Result<Outcome<Approved>, ToolError> {
        let Pending {
            local,
            hash,
            packet,
            level,
            refusal,
            prompt,
            client_prompt,
            asked_at,
        } = pending;
        let call = StoredCall {
            tool: action.tool,
            arguments: local.arguments.clone(),
            action: action.clone(),
            hash: hash.to_string(),
        };
        let surfaces = Surfaces {
            card: local.card_host,
            level,
            prompt: prompt.is_some(),
        };
        let info = match local.approvals.open(call, hash, packet, surfaces).await {
            Ok(info) => info,
            Err(e) => {
                if let Some(p) = &prompt {
                    p.withdraw("pgwarden could not keep the approval open").await;
                }
                return Err(ToolError::Refused(e.to_string()));
            }
        };
        let record = |trail: &mut Trail, answer: &str| {
            trail.approval(ApprovalRecord {
                channel: info.surfaces.join("+"),
                answer: answer.into(),
                approval_id: Some(info.approval_id.clone()),
                action_hash: Some(hash.to_string()),
                fingerprint: Some(info.fingerprint.clone()),
                client_prompt: client_prompt.map(str::to_string),
                waited_ms: asked_at.elapsed().as_millis() as u64,
                ..ApprovalRecord::default()
            })
        };
        let store = &local.approvals.store;
        if info.surfaces.is_empty() {
            store.cancel(&info.approval_id, "no surface could show it");
            record(trail, "no surface could show it");
            let console_problem = local
                .approvals
                .settings
                .enabled(ApprovalChannel::Console)
                .then(|| info.console_problem.as_deref().unwrap_or("it did not open"));
            let why = no_channel_message(&NoChannel {
                prompt_outcome: client_prompt,
                console_problem,
                terminal: local.approvals.terminal(),
                ..refusal
            });
            return Err(not_approved(why, None));
        }
        if let Some(prompt) = prompt {
            // The call already waited its budget for the prompt; its answer now decides the approval.
            local
                .approvals
                .follow_prompt(info.approval_id.clone(), hash.to_string(), prompt);
            record(trail, "pending");
            return Ok(Outcome::Pending(info));
        }
        if local.card_host && info.surfaces.contains(&"mcp_app") {
            record(trail, "pending");
            return Ok(Outcome::Pending(info));
        }
        let waited = tokio::select! {
            w = store.wait(&info.approval_id, &action.caller.session_id, info.wait_budget) => w,
            _ = ct.cancelled() => {
                store.cancel(&info.approval_id, "the tool call was cancelled");
                record(trail, "cancelled with the call");
                return Err(not_approved("the tool call was cancelled while waiting for approval".into(), None));
            }
        };
        match waited.map_err(|e| ToolError::Refused(e.to_string()))? {
            Awaited::StillPending => {
                record(trail, "pending");
                Ok(Outcome::Pending(info))
            }
            Awaited::Execute {
                dry_run,
                max_rows_affected,
                reason,
                ..
            } => {
                record(trail, if dry_run { "dry_run" } else { "approve" });
                trail.executed_approval = Some(info.approval_id.clone());
                Ok(Outcome::Done(Approved {
                    dry_run,
                    max_rows_affected,
                    reason,
                }))
            }
            Awaited::Finished(state) => {
                let (word, sentence) = approval::hub::state_words(&state);
                record(trail, word);
                Err(match state {
                    State::Denied { reason } => not_approved("a person denied it in the review console".into(), reason),
                    _ => not_approved(format!("the approval {sentence}"), None),
                })
            }
        }
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
        let mut trail = Trail::new(action, serde_json::json!({ "schema": schema }));
        let result = async {
            let assessment = classify::classify("SELECT 1");
            let decision = self.evaluate(action, &assessment, &mut trail);
            let decision = self.decide(action, &assessment, decision, false)?;
            let timeout = decision.statement_timeout.unwrap_or(self.limits.statement_timeout);
            let mut list = self.db.list_tables(schema, timeout, ct).await?;
            list.notice = self.first_note();
            Ok(list)
        }
        .await;
        let outcome = trail.simple_outcome(&result);
        self.finish(&trail, outcome, result)
    }

    /// The policy's decision, recorded in the trail.
    fn evaluate(&self, action: &Action, assessment: &Assessment, trail: &mut Trail) -> Decision {
        trail.assessed(assessment);
        let decision = self.policy.evaluate(&Request {
            tool: action.tool,
            assessment,
            principal: action.caller.principal.as_ref().map(Principal::as_str),
        });
        trail.decided(&decision);
        decision
    }

    /// Describing a table is decided as a read of that table, so table and tag rules apply.
    pub async fn describe_table(
        &self,
        action: &Action,
        table: &str,
        ct: &CancellationToken,
    ) -> Result<TableDescription, ToolError> {
        let mut trail = Trail::new(action, serde_json::json!({ "table": table }));
        let result = self.run_describe(action, table, ct, &mut trail).await;
        let outcome = trail.simple_outcome(&result);
        self.finish(&trail, outcome, result)
    }

    async fn run_describe(
        &self,
        action: &Action,
        table: &str,
        ct: &CancellationToken,
        trail: &mut Trail,
    ) -> Result<TableDescription, ToolError> {
        let table = table.trim();
        if table.is_empty() {
            return Err(ToolError::BadArguments(
                "`table` is empty; pass a table name such as `orders` or `sales.orders`".into(),
            ));
        }
        // Anything that is not exactly one relation name cannot name a table.
        let assessment = classify::classify_with(&format!("SELECT * FROM {table}"), &self.catalog_facts());
        if !assessment.is_read() || assessment.tables.len() != 1 || assessment.statements.len() != 1 {
            return Err(CatalogError::NoTable(table.to_string()).into());
        }
        let decision = self.evaluate(action, &assessment, trail);
        let decision = self.decide(action, &assessment, decision, false)?;
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

/// "classified as write (risk medium): updates `public.orders`", for messages to the model.
fn describe(assessment: &Assessment) -> String {
    let mut s = format!(
        "classified as {} (risk {})",
        assessment.category().as_str(),
        assessment.risk.as_str()
    );
    if !assessment.reasons.is_empty() {
        s.push_str(&format!(": {}", assessment.reasons.join("; ")));
    }
    s
}
