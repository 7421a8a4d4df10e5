//! The only place the steps meet: a tool call's `Action` is classified, decided by the policy,
//! approved by a person when the policy says so, then executed with the policy's limits and masks,
//! and the outcome shaped for the model. (The audit joins here in a later stage.)

use std::sync::Arc;

use rmcp::model::InputRequiredResult;

use crate::{
    approval::{
        Route,
        hub::{Approvals, PendingInfo},
    },
    audit::{
        OutcomeRecord, Status,
        sink::{AuditSink, Durability},
    },
    call::{Action, Caller},
    classify::Assessment,
    config::Limits,
    db::{Database, DbError, catalog::CatalogError},
    policy::{Decision, Effect, Policy, Request},
    tools::{ToolCall, ToolOutput},
    trail::Trail,
};

mod catalog;
mod describe_table;
mod export;
mod grant;
mod list_tables;
mod query;
mod router;
mod step;

pub use catalog::CATALOG_POLL;
pub use router::{Databases, OPEN_WITHIN, Opening, RETRY_EVERY, START_WAIT, Shared};
pub use step::Control;

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

/// A call's result: done, waiting for the client to answer an approval prompt (2026-07-28), or
/// waiting for a person in the console or the card (`pgwarden_await` picks it up).
pub enum Outcome<T> {
    Done(T),
    InputRequired(InputRequiredResult),
    Pending(PendingInfo),
}

impl<T> Outcome<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Done(t) => Outcome::Done(f(t)),
            Outcome::InputRequired(r) => Outcome::InputRequired(r),
            Outcome::Pending(p) => Outcome::Pending(p),
        }
    }
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
    audit: Arc<dyn AuditSink>,
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
    /// Its `pgwarden.toml` name, when pgwarden serves several databases: actions, packets and
    /// records carry it.
    name: Option<String>,
    /// What Postgres calls the database (`current_database()`): the only one a statement may name.
    current_database: Option<String>,
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
        audit: Arc<dyn AuditSink>,
        approvals: Arc<Approvals>,
        export_dir: std::path::PathBuf,
    ) -> Pipeline {
        let withhold_change_output = !policy.masks.is_empty() && db.separate_change_login;
        Pipeline {
            approvals,
            db,
            limits,
            policy,
            withhold_change_output,
            audit,
            export_root: crate::export_path::ExportRoot::open(&export_dir).map_err(|e| e.to_string()),
            catalog: Default::default(),
            database_note: None,
            noted: Default::default(),
            name: None,
            current_database: None,
        }
    }

    /// Names this pipeline's database: `name` as pgwarden serves it (none when it serves one),
    /// `current` as Postgres calls it.
    pub fn named(mut self, name: Option<String>, current: String) -> Pipeline {
        self.name = name;
        self.current_database = Some(current);
        self
    }

    /// Whether a call here may name database `name`: this one, or any when pgwarden serves only
    /// one (a grant on another database of the cluster is then the operator's business).
    fn may_name_database(&self, name: &str) -> bool {
        self.name.is_none() || self.current_database.as_deref() == Some(name)
    }

    /// Refuses a statement that reaches past this database: a `db.schema.table` naming another
    /// database, or (when pgwarden serves several) dblink / postgres_fdw, which open sessions of
    /// their own. Postgres refuses the first itself; this says why before anything runs.
    fn one_database(&self, a: &Assessment) -> Result<(), ToolError> {
        let here = self.current_database.as_deref();
        if let Some(other) = a.databases.iter().find(|d| Some(d.as_str()) != here) {
            return Err(ToolError::Refused(format!(
                "the statement names database `{other}` (`{other}.schema.table`), but a call reaches only the \
                 database it runs on{}; write `schema.table`, and for another database call the tool again with its \
                 `database` argument (`list_tables` lists them)",
                here.map(|h| format!(" (`{h}`)")).unwrap_or_default()
            )));
        }
        if self.name.is_some()
            && let Some(f) = a.functions.iter().find(|f| {
                let last = f.rsplit('.').next().unwrap_or(f);
                last.starts_with("dblink") || last.starts_with("postgres_fdw")
            })
        {
            return Err(ToolError::Refused(format!(
                "`{f}` opens a session to another database, and a call reaches only the database it runs on; \
                 call the tool again with that database's `database` argument (`list_tables` lists them)"
            )));
        }
        Ok(())
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The pending approvals of this process.
    /// Where the audit trail goes (the file, or the state database's chain).
    pub fn audit(&self) -> &Arc<dyn AuditSink> {
        &self.audit
    }

    pub fn approvals(&self) -> &Arc<Approvals> {
        &self.approvals
    }

    /// The one entry point for a tool call, first or replayed: `call` as the client sent it (or as
    /// an approval stored it), by `caller`, asking a person through `route` when the policy says so.
    pub async fn run(
        &self,
        call: &ToolCall,
        caller: Caller,
        route: &Route,
        ctl: &Control,
    ) -> Result<Outcome<ToolOutput>, ToolError> {
        let mut action = action_of(call, caller, self.name.clone());
        action.database_at = self.name.as_ref().map(|_| self.db.display.clone());
        match call {
            ToolCall::Query(args) => Ok(self
                .run_step(&query::Query(args), call, &action, route, ctl)
                .await?
                .map(ToolOutput::Query)),
            ToolCall::Export(args) => Ok(self
                .run_step(&export::Export(args), call, &action, route, ctl)
                .await?
                .map(ToolOutput::Export)),
            ToolCall::Grant(args) => Ok(self
                .run_step(&grant::Grant(args), call, &action, route, ctl)
                .await?
                .map(ToolOutput::Grant)),
            ToolCall::ListTables(args) => Ok(self
                .run_step(&list_tables::ListTables(args), call, &action, route, ctl)
                .await?
                .map(ToolOutput::ListTables)),
            ToolCall::DescribeTable(args) => Ok(self
                .run_step(&describe_table::DescribeTable(args), call, &action, route, ctl)
                .await?
                .map(ToolOutput::DescribeTable)),
        }
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
        tracing::debug!(
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

    /// The decision, fsynced, before an action runs: no record, no action.
    async fn write_decision(&self, trail: &mut Trail) -> Result<(), ToolError> {
        self.audit
            .append(trail.decision_record(), Durability::Synced)
            .await
            .map_err(|e| ToolError::Refused(format!("the audit record could not be written ({e})")))?;
        trail.decision_written = true;
        Ok(())
    }

    /// Writes the call's last record. A read or refusal that cannot be audited is not returned; a
    /// change that already ran (its decision is on disk) is reported with the failure logged.
    async fn finish<T>(
        &self,
        trail: &Trail,
        outcome: OutcomeRecord,
        result: Result<T, ToolError>,
    ) -> Result<T, ToolError> {
        let ok = outcome.status == Status::Ok;
        let durability = if trail.decision_written {
            Durability::Synced
        } else {
            Durability::Written
        };
        let written = self.audit.append(trail.final_record(outcome), durability).await;
        // The stored call of an approval ran (or failed): its approval is done either way.
        if let Some(id) = &trail.executed_approval {
            self.approvals.store.finish(id, ok).await;
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

    /// The policy's decision, recorded in the trail.
    fn evaluate(&self, action: &Action, assessment: &Assessment, trail: &mut Trail) -> Decision {
        trail.assessed(assessment);
        let decision = self.policy.evaluate(&Request {
            tool: action.tool,
            assessment,
            principal: action.caller.principal().map(|p| p.as_str()),
            groups: action.caller.groups(),
        });
        trail.decided(&decision);
        decision
    }
}

/// The `Action` of `call` by `caller` on `database` (named when pgwarden serves several).
fn action_of(call: &ToolCall, caller: Caller, database: Option<String>) -> Action {
    Action {
        tool: call.tool(),
        sql: call.sql().map(str::to_string),
        intent: call.intent().map(str::to_string),
        caller,
        database,
        database_at: None,
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

/// The outcome record of a call that failed.
fn failure(e: &ToolError, duration_ms: u64) -> OutcomeRecord {
    let status = match e {
        ToolError::Denied { .. } => Status::Denied,
        ToolError::NotApproved { .. } => Status::NotApproved,
        ToolError::RolledBack(_) => Status::RolledBack,
        ToolError::CommitUnknown(_) => Status::CommitUnknown,
        ToolError::Db(DbError::Cancelled) => Status::Cancelled,
        ToolError::Refused(_) | ToolError::BadArguments(_) => Status::Refused,
        _ => Status::Error,
    };
    OutcomeRecord {
        status,
        duration_ms,
        sqlstate: match e {
            ToolError::Db(d) => d.code().map(str::to_string),
            _ => None,
        },
        message: Some(crate::audit::redact::sql(&e.to_string())),
        ..OutcomeRecord::default()
    }
}
