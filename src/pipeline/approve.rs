//! Asking a person about a call the policy sent for approval: a stored call someone already
//! approved, the client's own prompt, a pending approval for the console, the card or the terminal,
//! or a refusal that says why nobody could be asked.

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{
    Approved, Ask, Outcome, Pipeline, ToolError, describe,
    step::{Estimate, ForReview},
};
use crate::{
    approval::{
        self, Asked, Asking, Channel, ReviewPacket, Route, Verdict,
        hub::{StoredCall, Surfaces},
        pending::{Awaited, State},
        reach::{ClientPrompt, NoChannel, no_channel_message},
    },
    audit::ApprovalRecord,
    call::Action,
    classify,
    policy::{ApprovalChannel, Level},
    tools::ToolCall,
    trail::Trail,
};

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

impl Pipeline {
    /// Asks a person about an `approve` decision; a refusal of any kind is an error naming the rule.
    ///
    /// In order: a stored call someone already approved (run by `pgwarden_await`) must still be the
    /// same action; the client's own prompt when the policy accepts a `client` channel and the client
    /// can show one; else a pending approval for the console or the card; else a refusal.
    pub(super) async fn approve(
        &self,
        action: &Action,
        ask: Ask<'_>,
        route: &Route,
        ct: &CancellationToken,
        trail: &mut Trail,
    ) -> Result<Outcome<Approved>, ToolError> {
        let Ask {
            call,
            assessment,
            decision,
            review:
                ForReview {
                    bound,
                    details,
                    timeout,
                    estimate,
                },
        } = ask;
        let hash = approval::action_hash(action, &bound);
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
            // Planning can run user code (an IMMUTABLE function is folded at plan time), and this
            // runs before anyone approved: no estimate for a statement with anything unknown.
            let plannable = !assessment.categories.contains(&classify::Category::Unknown);
            let sql = action.sql.as_deref().unwrap_or_default();
            let estimate = match estimate {
                Estimate::AsRead if plannable => self.db.estimate_rows(sql, false, timeout, ct).await,
                Estimate::AsChange if plannable => self.db.estimate_rows(sql, true, timeout, ct).await,
                _ => None,
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
            return self
                .approve_pending(action, call, pending, ct, trail, not_approved)
                .await;
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
        self.approve_pending(action, call, pending, ct, trail, not_approved)
            .await
    }

    /// A pending approval: shown in the console (and the card), then waited for within the budget
    /// unless the host renders the card (which needs the result first). Approved in time → the
    /// call goes on and runs now; otherwise the model gets the handle for `pgwarden_await`.
    async fn approve_pending(
        &self,
        action: &Action,
        call: &ToolCall,
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
        let stored = serde_json::to_value(call)
            .map_err(|e| ToolError::Refused(format!("the call could not be stored for later ({e})")))?;
        let call = StoredCall {
            call: stored,
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
}
