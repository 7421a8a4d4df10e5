//! The approval gate: for a call the policy sent to a person, decides how to ask, then asks, waits,
//! or turns the call into a pending approval — and says which, with the records the call's audit
//! trail keeps. In order: a stored call someone already approved (replayed by `pgwarden_await`)
//! must still be the same action; the client's own prompt when the policy accepts a `client` level
//! and the client can show one; else a pending approval announced on the review surfaces; else a
//! refusal that says why nobody could be asked and what would change it.

use std::{sync::Arc, time::Instant};

use futures_util::future::BoxFuture;
use rmcp::model::InputRequiredResult;
use tokio_util::sync::CancellationToken;

use super::{
    Approved, Asked, Asking, Channel, ReviewPacket, Route, Verdict,
    hub::{Approvals, PendingInfo, PromptSurface},
    pending::{Awaited, Cancel, State, StoredCall, fingerprint},
    reach::{ClientPrompt, NoChannel, no_channel_message},
    surface::{Offer, ReviewSurface},
};
use crate::{
    audit::ApprovalRecord,
    call::{Action, Level, Surface},
    classify::Risk,
};

/// A call the policy sent for approval.
pub struct Ask<'a> {
    pub action: &'a Action,
    /// The hash of the action with its bound arguments and caller: what a person approves.
    pub hash: String,
    pub risk: Risk,
    /// The rule that asked, and the level it requires (`min_channel`), when it set one.
    pub rule: Option<(&'a str, Level)>,
    /// How long a prompt may wait for its answer (the rule's `approval_timeout`).
    pub timeout: std::time::Duration,
    /// The call as it will run, serialised, stored if it becomes a pending approval.
    pub stored: serde_json::Value,
    /// The rule's reviewers, `min_approvals` and `notify`.
    pub team: crate::policy::Reviewers,
}

/// How the gate let the call through, or stopped it for now.
pub enum Gated {
    /// A person approved it (with a dry run, a row limit, a reason): it runs now.
    Approved(Approved),
    /// Returned to a 2026-07-28 client, which shows the prompt and retries with the answer.
    InputRequired(InputRequiredResult),
    /// A pending approval: `pgwarden_await` picks it up.
    Pending(PendingInfo),
}

/// Why it does not run.
#[derive(Debug)]
pub enum Refusal {
    /// A person (or the lack of one) did not approve it.
    NotApproved { why: String, reason: Option<String> },
    /// It cannot be asked about here (a replay that no longer matches, an approval that cannot be
    /// kept, a forged answer).
    Refused(String),
}

/// What the gate came to, and the approval this call now runs for (it is finished with the call).
pub struct GateOutcome {
    pub result: Result<Gated, Refusal>,
    pub claimed: Option<String>,
}

impl From<Result<Gated, Refusal>> for GateOutcome {
    fn from(result: Result<Gated, Refusal>) -> Self {
        GateOutcome { result, claimed: None }
    }
}

/// Builds the review packet (which may plan the statement for a row estimate) when it is needed.
pub type PacketFn<'a> = &'a (dyn Fn() -> BoxFuture<'a, ReviewPacket> + Send + Sync);

/// Where the call records what happened in its trail.
pub type RecordFn<'a> = &'a mut (dyn FnMut(ApprovalRecord) + Send);

fn not_approved(why: impl Into<String>, reason: Option<String>) -> Refusal {
    Refusal::NotApproved {
        why: why.into(),
        reason,
    }
}

impl Approvals {
    /// Asks a person about `ask` through `route`.
    pub async fn gate(
        &self,
        ask: Ask<'_>,
        route: &Route,
        packet: PacketFn<'_>,
        record: RecordFn<'_>,
        ct: &CancellationToken,
    ) -> GateOutcome {
        let hash = ask.hash.clone();
        if let Some(pre) = &route.preapproved {
            let a = &pre.approved;
            record(ApprovalRecord {
                channel: "pgwarden_await".into(),
                answer: if a.dry_run { "dry_run" } else { "approve" }.into(),
                row_limit: a.max_rows_affected,
                reason: a.reason.clone(),
                approval_id: Some(pre.approval_id.clone()),
                action_hash: Some(hash.clone()),
                fingerprint: Some(fingerprint(&hash)),
                ..ApprovalRecord::default()
            });
            let result = if pre.hash != hash {
                Err(Refusal::Refused(
                    "the approved action no longer matches what would run now (its arguments or caller changed); \
                     make the call again to ask for a new approval"
                        .into(),
                ))
            } else {
                Ok(Gated::Approved(a.clone()))
            };
            return GateOutcome {
                result,
                claimed: Some(pre.approval_id.clone()),
            };
        }
        let asked_at = Instant::now();
        let settings = &self.settings;
        let (level, required_by) = settings.level_and_source(ask.risk, ask.rule);
        let client = if !settings.enabled(Surface::Elicitation) {
            ClientPrompt::Off
        } else if matches!(route.client, Channel::Unavailable) {
            ClientPrompt::Unavailable
        } else {
            ClientPrompt::Available
        };
        let client_prompt = level == Level::Client && client == ClientPrompt::Available;
        let offer = route.local.as_ref().map(|l| Offer {
            card_host: l.card_host,
            level,
        });
        let reachable = offer.filter(|o| self.reachable(o));
        let refusal = NoChannel {
            risk: ask.risk,
            level,
            required_by: &required_by,
            client,
            prompt_outcome: None,
            console_problem: None,
            terminal: self.terminal(),
        };
        if !client_prompt && reachable.is_none() {
            record(ApprovalRecord {
                channel: "none".into(),
                answer: "no channel can ask a person".into(),
                ..ApprovalRecord::default()
            });
            let console_problem = settings
                .enabled(Surface::Console)
                .then_some("it is not offered for this call");
            let why = no_channel_message(&NoChannel {
                console_problem,
                ..refusal
            });
            return Err(not_approved(why, None)).into();
        }
        // The same call again while it waits for a decision: the same approval, not a second prompt
        // (two prompts could approve it twice).
        let waiting = match offer {
            Some(o) if !route.client.has_answer() && self.store.is_pending(&ask.action.caller.owner(), &hash).await => {
                Some(o)
            }
            _ => None,
        };
        let pending = Pending {
            asked_at,
            refusal,
            record,
        };
        if !client_prompt || waiting.is_some() {
            let Some(offer) = waiting.or(reachable) else {
                return Err(not_approved("no approval channel is available", None)).into();
            };
            let why = waiting.map(|_| "an identical call is already waiting for a decision");
            return self.pending(&ask, offer, &packet().await, None, why, pending, ct).await;
        }
        // A prompt the client answers later needs somewhere for that answer to go: a pending approval.
        let budget = (route.local.is_some() && matches!(route.client, Channel::Elicit(..)))
            .then_some(settings.wait_budget)
            .filter(|b| *b < ask.timeout);
        let asking = Asking {
            timeout: ask.timeout,
            budget,
            instant_decline: settings.instant_decline,
        };
        let shown = if route.client.has_answer() {
            None
        } else {
            Some(packet().await)
        };
        // Both protocol eras show the client's own prompt: one surface, `elicitation`.
        let channel = Surface::Elicitation.as_str();
        let Pending {
            asked_at,
            refusal,
            record,
        } = pending;
        let mut note = |answer: &str, row_limit: Option<u64>, reason: Option<String>| {
            record(ApprovalRecord {
                channel: channel.into(),
                answer: answer.into(),
                row_limit,
                reason,
                waited_ms: asked_at.elapsed().as_millis() as u64,
                ..ApprovalRecord::default()
            })
        };
        let asked = match route
            .client
            .ask(shown.as_ref(), &hash, &asking, self.store.as_ref(), ct)
            .await
        {
            Ok(asked) => asked,
            Err(e) => return Err(Refusal::Refused(e.to_string())).into(),
        };
        let tool = ask.action.tool.name();
        let rule = ask.rule.map_or("-", |r| r.0);
        let (prompt, what, target) = match asked {
            Asked::InputRequired(r) => {
                note("prompt sent (input_required)", None, None);
                return Ok(Gated::InputRequired(r)).into();
            }
            // The prompt is still a place to decide; the call stops waiting for it.
            Asked::StillOpen(prompt) => (
                Some(PromptSurface::open(prompt, self.store.clone())),
                "no answer within the wait budget; the prompt stays open".to_string(),
                offer,
            ),
            // Nothing approved it; another surface may still reach the person.
            Asked::Unseen(why) => {
                tracing::info!(tool, "{why}");
                (None, why, reachable)
            }
            Asked::Verdict(Verdict::NotApproved { why, reason }) => {
                tracing::info!(tool, rule, "not approved: {why}");
                note(&why, None, reason.clone());
                return Err(not_approved(why, reason)).into();
            }
            Asked::Verdict(Verdict::Approved(approved)) => {
                tracing::info!(
                    tool,
                    rule,
                    dry_run = approved.dry_run,
                    max_rows_affected = ?approved.max_rows_affected,
                    "approved"
                );
                let answer = if approved.dry_run { "dry_run" } else { "approve" };
                note(answer, approved.max_rows_affected, approved.reason.clone());
                return Ok(Gated::Approved(approved)).into();
            }
        };
        let Some(offer) = target else {
            note(&what, None, None);
            return Err(not_approved(
                format!("{what}, and no other approval channel is enabled, so nobody could approve it"),
                None,
            ))
            .into();
        };
        let shown = match shown {
            Some(p) => p,
            None => packet().await,
        };
        let pending = Pending {
            asked_at,
            refusal,
            record,
        };
        self.pending(&ask, offer, &shown, prompt, Some(&what), pending, ct)
            .await
    }

    /// A pending approval: announced on the surfaces, then waited for within the budget unless the
    /// host renders the card (which needs the result first) or the client's prompt is still open.
    /// Approved in time → the call goes on and runs now; otherwise the model gets the handle for
    /// `pgwarden_await`.
    #[allow(clippy::too_many_arguments)]
    async fn pending(
        &self,
        ask: &Ask<'_>,
        offer: Offer,
        packet: &ReviewPacket,
        prompt: Option<Arc<dyn ReviewSurface>>,
        client_prompt: Option<&str>,
        pending: Pending<'_, '_>,
        ct: &CancellationToken,
    ) -> GateOutcome {
        let Pending {
            asked_at,
            refusal,
            record,
        } = pending;
        let call = StoredCall {
            call: ask.stored.clone(),
            action: ask.action.clone(),
            hash: ask.hash.clone(),
        };
        let follows_prompt = prompt.is_some();
        let info = match self.open(call, packet, offer, &ask.team, prompt).await {
            Ok(info) => info,
            Err(e) => return Err(Refusal::Refused(e.to_string())).into(),
        };
        let mut note = |answer: &str| {
            record(ApprovalRecord {
                channel: info.surfaces.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("+"),
                answer: answer.into(),
                approval_id: Some(info.approval_id.clone()),
                action_hash: Some(ask.hash.clone()),
                fingerprint: Some(info.fingerprint.clone()),
                client_prompt: client_prompt.map(str::to_string),
                waited_ms: asked_at.elapsed().as_millis() as u64,
                ..ApprovalRecord::default()
            })
        };
        let store = &self.store;
        if info.surfaces.is_empty() {
            store.cancel(&info.approval_id, Cancel::Unseen).await;
            note(Cancel::Unseen.as_str());
            let console_problem = self
                .settings
                .enabled(Surface::Console)
                .then(|| info.problem(Surface::Console).unwrap_or("it did not open"));
            let why = no_channel_message(&NoChannel {
                prompt_outcome: client_prompt,
                console_problem,
                terminal: self.terminal(),
                ..refusal
            });
            return Err(not_approved(why, None)).into();
        }
        // The call already waited its budget for the prompt, or the card needs the result to show.
        if follows_prompt || (offer.card_host && info.surfaces.contains(&Surface::McpApp)) {
            note("pending");
            return Ok(Gated::Pending(info)).into();
        }
        let session = &ask.action.caller.owner();
        let waited = tokio::select! {
            w = store.wait(&info.approval_id, session, info.wait_budget) => w,
            _ = ct.cancelled() => {
                store.cancel(&info.approval_id, Cancel::CallCancelled).await;
                note("cancelled with the call");
                return Err(not_approved("the tool call was cancelled while waiting for approval", None)).into();
            }
        };
        match waited {
            Err(e) => Err(Refusal::Refused(e.to_string())).into(),
            Ok(Awaited::StillPending) => {
                note("pending");
                Ok(Gated::Pending(info)).into()
            }
            Ok(Awaited::Execute { approved, .. }) => {
                note(if approved.dry_run { "dry_run" } else { "approve" });
                GateOutcome {
                    result: Ok(Gated::Approved(approved)),
                    claimed: Some(info.approval_id.clone()),
                }
            }
            Ok(Awaited::Finished(state)) => {
                let (word, sentence) = state.words();
                note(word);
                Err(match state {
                    State::Denied { reason } => not_approved("a person denied it in the review console", reason),
                    _ => not_approved(format!("the approval {sentence}"), None),
                })
                .into()
            }
        }
    }
}

/// What a call about to go pending carries into it.
struct Pending<'r, 'a> {
    asked_at: Instant,
    /// What a refusal says when no surface can show it.
    refusal: NoChannel<'a>,
    record: RecordFn<'r>,
}
