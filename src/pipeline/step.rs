//! One tool's part of a call, behind one small trait, in the shape of mini-redis's
//! `Command::apply`: the tool checks its arguments and says what the call is (`assess`), says what
//! a reviewer sees once the policy decided (`review`), and runs it (`execute`). Everything between
//! — the policy, the person, the audit records, the order they happen in — is [`Pipeline::run_step`],
//! the same for every tool.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use futures_util::future::BoxFuture;

use super::{Outcome, Pipeline, ToolError, describe};
use crate::{
    approval::{
        self, Approved, ReviewPacket, Route,
        gate::{self, Gated, Refusal},
    },
    audit::{OutcomeRecord, Status},
    call::{Action, Caller},
    classify::{self, Assessment},
    db::{CallTag, Database},
    policy::{Decision, Effect},
    tools::ToolCall,
    trail::Trail,
};

/// What a call may use while it runs besides its arguments: cancellation, and where to report
/// progress (rows written by an export) when the client asked for it.
pub struct Control {
    pub cancel: CancellationToken,
    pub progress: Option<Box<dyn Fn(u64) + Send + Sync>>,
}

impl Control {
    pub fn new(cancel: CancellationToken) -> Control {
        Control { cancel, progress: None }
    }

    pub(super) fn progress(&self, rows: u64) {
        if let Some(p) = &self.progress {
            p(rows);
        }
    }
}

/// Whether the prompt shows a row estimate, and planned as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Estimate {
    None,
    /// Planned as a read (EXPLAIN in a READ ONLY transaction).
    AsRead,
    /// Planned as the change it is (EXPLAIN of the statement, rolled back).
    AsChange,
}

/// What a person reviewing the call sees beyond the SQL, and what the approval is bound to.
pub(super) struct ForReview {
    /// The call's arguments besides the SQL and intent, as they will run (a capped `max_rows`).
    pub bound: serde_json::Value,
    /// Tool-specific lines for the prompt (an export's target, a grant's before → after).
    pub details: Vec<String>,
    /// For the row estimate.
    pub timeout: Duration,
    pub estimate: Estimate,
}

/// One tool's steps. `Plan` carries what `assess` and `review` learned to `execute`.
pub(super) trait Step {
    type Plan: Send + Sync;
    type Output;

    /// Why an approved dry run cannot run, for a tool where it means nothing (an export writes
    /// the file or does not).
    const NO_DRY_RUN: Option<&'static str> = None;

    /// The arguments recorded with the call, besides the SQL and intent.
    fn recorded(&self) -> serde_json::Value;

    /// Checks the arguments and says what the call is; an error ends the call before the policy.
    async fn assess(
        &self,
        p: &OnBehalf<'_>,
        trail: &mut Trail,
        ct: &CancellationToken,
    ) -> Result<(Assessment, Self::Plan), ToolError>;

    /// After the policy decided (allow or approve): what a reviewer sees. A tool no person
    /// reviews keeps the default.
    async fn review(
        &self,
        p: &OnBehalf<'_>,
        _assessment: &Assessment,
        _plan: &mut Self::Plan,
        decision: &Decision,
        _trail: &mut Trail,
        _ct: &CancellationToken,
    ) -> Result<ForReview, ToolError> {
        Ok(ForReview {
            bound: self.recorded(),
            details: vec![],
            timeout: decision.statement_timeout.unwrap_or(p.limits.statement_timeout),
            estimate: Estimate::None,
        })
    }

    /// Runs the call, with what a person approved (nothing, when the policy allowed it).
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        p: &OnBehalf<'_>,
        assessment: &Assessment,
        plan: Self::Plan,
        decision: &Decision,
        approved: Approved,
        trail: &mut Trail,
        ctl: &Control,
    ) -> Result<Self::Output, ToolError>;

    /// What the outcome record says of a call that succeeded (its status is set to `ok`).
    fn outcome(output: &Self::Output) -> OutcomeRecord;
}

impl Pipeline {
    /// One call of one tool, start to end: a trail, the tool's assessment, the policy, a person
    /// when the policy asks, the decision on disk before anything changes, execution, and the
    /// call's last record.
    pub(super) async fn run_step<S: Step>(
        &self,
        step: &S,
        call: &ToolCall,
        action: &Action,
        route: &Route,
        ctl: &Control,
    ) -> Result<Outcome<S::Output>, ToolError> {
        let mut trail = Trail::new(action, step.recorded());
        let result = self
            .on_behalf(&action.caller)
            .steps(step, call, action, route, ctl, &mut trail)
            .await;
        let duration_ms = trail.elapsed_ms();
        let outcome = match &result {
            Ok(Outcome::Done(out)) => OutcomeRecord {
                status: Status::Ok,
                duration_ms,
                ..S::outcome(out)
            },
            Ok(Outcome::InputRequired(_)) => OutcomeRecord::status(Status::AwaitingApproval, duration_ms),
            Ok(Outcome::Pending(_)) => OutcomeRecord::status(Status::PendingApproval, duration_ms),
            Err(e) => super::failure(e, duration_ms),
        };
        self.finish(&trail, outcome, result).await
    }
}

/// The pipeline as one call sees it: the same pipeline, with a database handle whose transactions
/// carry who the call is for (`db::CallTag`: `application_name`, `pgwarden.principal`, the mapped
/// role). Every step reaches Postgres through [`OnBehalf::db`].
pub(super) struct OnBehalf<'a> {
    pipeline: &'a Pipeline,
    pub db: std::borrow::Cow<'a, Database>,
}

impl std::ops::Deref for OnBehalf<'_> {
    type Target = Pipeline;

    fn deref(&self) -> &Pipeline {
        self.pipeline
    }
}

impl Pipeline {
    /// This pipeline for `caller`'s call: tagged when there is someone to name or a role to take.
    pub(super) fn on_behalf(&self, caller: &Caller) -> OnBehalf<'_> {
        let principal = caller.principal().map(|p| p.as_str().to_string());
        let role = self
            .policy
            .role_for(principal.as_deref(), caller.groups())
            .map(str::to_string);
        let db = match (principal, role) {
            (None, None) => std::borrow::Cow::Borrowed(&self.db),
            (principal, role) => std::borrow::Cow::Owned(self.db.for_call(CallTag { principal, role })),
        };
        OnBehalf { pipeline: self, db }
    }
}

impl OnBehalf<'_> {
    async fn steps<S: Step>(
        &self,
        step: &S,
        call: &ToolCall,
        action: &Action,
        route: &Route,
        ctl: &Control,
        trail: &mut Trail,
    ) -> Result<Outcome<S::Output>, ToolError> {
        let ct = &ctl.cancel;
        let (assessment, mut plan) = step.assess(self, trail, ct).await?;
        if let Err(e) = self.one_database(&assessment) {
            trail.assessed(&assessment);
            return Err(e);
        }
        let decision = self.evaluate(action, &assessment, trail);
        let decision = self.decide(action, &assessment, decision, action.tool.guarded())?;
        let review = step.review(self, &assessment, &mut plan, &decision, trail, ct).await?;
        // A replay of a call a person approved goes through the gate whatever the policy says now:
        // it must still be the action they saw, and runs only with what they granted (a dry run, a
        // row limit) — even if a changed policy or catalog would now let it run outright.
        let approved = if decision.effect == Effect::Approve || route.preapproved.is_some() {
            match self
                .ask(call, action, &assessment, &decision, review, route, trail, ct)
                .await?
            {
                Gated::InputRequired(r) => return Ok(Outcome::InputRequired(r)),
                Gated::Pending(p) => return Ok(Outcome::Pending(p)),
                Gated::Approved(approved) => approved,
            }
        } else {
            Approved::default()
        };
        if let Some(why) = S::NO_DRY_RUN.filter(|_| approved.dry_run) {
            return Err(ToolError::NotApproved {
                rule: decision.rule_label(),
                what: describe(&assessment),
                why: why.into(),
                reason: approved.reason,
            });
        }
        // A change, or anything a person approved (an export, a read of a sensitive catalog), is on
        // disk before it runs.
        if decision.effect == Effect::Approve || !assessment.is_read() {
            self.write_decision(trail).await?;
        }
        step.execute(self, &assessment, plan, &decision, approved, trail, ctl)
            .await
            .map(Outcome::Done)
    }

    /// Asks a person through the approval gate; what the gate says becomes the call's records.
    #[allow(clippy::too_many_arguments)]
    async fn ask(
        &self,
        call: &ToolCall,
        action: &Action,
        assessment: &Assessment,
        decision: &Decision,
        review: ForReview,
        route: &Route,
        trail: &mut Trail,
        ct: &CancellationToken,
    ) -> Result<Gated, ToolError> {
        let stored = serde_json::to_value(call)
            .map_err(|e| ToolError::Refused(format!("the call could not be stored for later ({e})")))?;
        let ask = gate::Ask {
            action,
            hash: approval::action_hash(action, &review.bound),
            risk: assessment.risk,
            rule: decision.rule.as_deref().zip(decision.min_channel),
            timeout: decision.approval_timeout,
            stored,
            team: decision.review.clone(),
        };
        let packet =
            || -> BoxFuture<'_, ReviewPacket> { Box::pin(self.packet(action, assessment, decision, &review, ct)) };
        let outcome = self
            .approvals
            .gate(ask, route, &packet, &mut |record| trail.approval(record), ct)
            .await;
        if outcome.claimed.is_some() {
            trail.executed_approval = outcome.claimed;
        }
        outcome.result.map_err(|refusal| match refusal {
            Refusal::NotApproved { why, reason } => ToolError::NotApproved {
                rule: decision.rule_label(),
                what: describe(assessment),
                why,
                reason,
            },
            Refusal::Refused(why) => ToolError::Refused(why),
        })
    }

    /// What a person is shown: the packet, with a row estimate where planning is safe.
    async fn packet(
        &self,
        action: &Action,
        assessment: &Assessment,
        decision: &Decision,
        review: &ForReview,
        ct: &CancellationToken,
    ) -> ReviewPacket {
        // Planning can run user code (an IMMUTABLE function is folded at plan time), and this runs
        // before anyone approved: no estimate for a statement with anything unknown.
        let plannable = !assessment.categories.contains(&classify::Category::Unknown);
        let sql = action.sql.as_deref().unwrap_or_default();
        let estimate = match review.estimate {
            Estimate::AsRead if plannable => self.db.estimate_rows(sql, false, review.timeout, ct).await,
            Estimate::AsChange if plannable => self.db.estimate_rows(sql, true, review.timeout, ct).await,
            _ => None,
        };
        let mut packet = ReviewPacket::new(action, assessment, decision, estimate);
        packet.estimate_for_person_only = !self.policy.masks.is_empty();
        packet.details = review.details.clone();
        packet
    }
}
