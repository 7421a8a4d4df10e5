//! Approvals that outlive the tool call: the pending store, the review console and the card, put
//! together. A guarded call that no in-client prompt can approve becomes a pending approval here;
//! the person decides it in the console (or the card); `pgwarden_await` runs the stored call once.

use std::sync::Arc;

use super::{
    OpenPrompt, Reply, ReviewPacket, Verdict,
    packet::{one_line, visible},
    pending::{ApprovalStore, Decision, PendingError, Review, State, Transition, Ttls, Via, fingerprint, new_secret},
    reach::Terminal,
};
use crate::{
    audit::{ApprovalRecord, AuditLog, Event, Record},
    call::{Action, Tool},
    console::Console,
    policy::{ApprovalChannel, ApprovalSettings, Level},
};

/// The call an approval stands for, exactly as it will run: the tool call as given, serialised
/// (the model cannot send new arguments later), and the action it was judged as, caller included.
#[derive(Debug, Clone)]
pub struct StoredCall {
    /// The serialised `tools::ToolCall`.
    pub call: serde_json::Value,
    pub action: Action,
    /// The action hash the person approves.
    pub hash: String,
}

pub type Store = ApprovalStore<StoredCall>;

/// What the model (and the card) is told about a new pending approval.
#[derive(Debug, Clone)]
pub struct PendingInfo {
    pub approval_id: String,
    pub fingerprint: String,
    pub expires_at: String,
    /// Where the person can decide: `client_prompt` (still open), `mcp_app` (the card in this
    /// chat), `local_console`, `cli` (`pgwarden approvals` in a terminal).
    pub surfaces: Vec<&'static str>,
    /// Whether the card may decide (false when the policy needs a local approval).
    pub can_decide_here: bool,
    /// The packet the card shows (the console has its own copy).
    pub packet: serde_json::Value,
    /// Why the console could not be shown, if it could not.
    pub console_problem: Option<String>,
    /// The card's secret and the action hash: only for the result's `_meta`, never for the model.
    pub nonce: String,
    pub action_hash: String,
    /// How long `pgwarden_await` waits.
    pub wait_budget: std::time::Duration,
}

/// The approvals of this process.
pub struct Approvals {
    pub settings: ApprovalSettings,
    pub store: Arc<Store>,
    pub console: Arc<Console>,
    /// Whether `pgwarden approvals` can reach this process (see `local::listen`).
    terminal: std::sync::Mutex<Terminal>,
}

/// Where a new pending approval will be shown.
pub struct Surfaces {
    /// The host renders MCP Apps and the card channel is on.
    pub card: bool,
    /// The weakest channel the policy accepts for this call.
    pub level: Level,
    /// The client's own prompt is still open (the call's budget ran out before an answer).
    pub prompt: bool,
}

impl Approvals {
    /// `console_dir`: a private directory of this user for the console's sign-in pages.
    pub fn new(
        settings: ApprovalSettings,
        audit: Arc<AuditLog>,
        label: String,
        console_dir: std::path::PathBuf,
    ) -> Arc<Approvals> {
        let ttls = Ttls {
            pending: settings.pending_ttl,
            approved_unused: settings.approved_ttl,
            max_open_per_session: settings.max_open_per_session,
        };
        let record = move |t: &Transition<'_>| {
            let (state, _) = state_words(t.to);
            let state = if t.channel == "shutdown" { "abandoned" } else { state };
            let mut record = Record {
                event: Some(Event::Approval),
                session_id: Some(t.session.to_string()),
                approval: Some(ApprovalRecord {
                    channel: t.channel.to_string(),
                    answer: state.to_string(),
                    decided_by: t.decided_by.clone(),
                    approval_id: Some(t.id.to_string()),
                    action_hash: Some(t.hash.to_string()),
                    fingerprint: Some(fingerprint(t.hash)),
                    ..ApprovalRecord::default()
                }),
                ..Record::default()
            };
            if let Some(a) = record.approval.as_mut() {
                match t.to {
                    State::Approved {
                        max_rows_affected,
                        reason,
                        ..
                    } => {
                        a.row_limit = *max_rows_affected;
                        a.reason = reason.clone();
                    }
                    State::Denied { reason } => a.reason = reason.clone(),
                    _ => {}
                }
            }
            // Decisions and executions are fsynced before they take effect.
            let durable = !matches!(t.to, State::Pending);
            audit
                .append(std::mem::take(&mut record), durable)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let store = Arc::new(ApprovalStore::new(ttls, Box::new(record)));
        // Expiry is recorded when it happens, not when something next looks (issue 16 item 10).
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&store);
            handle.spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    let Some(store) = weak.upgrade() else { return };
                    store.tick();
                }
            });
        }
        let terminal = if settings.enabled(ApprovalChannel::Cli) {
            Terminal::NotListening("this process has not opened its approvals socket".into())
        } else {
            Terminal::Off
        };
        Arc::new(Approvals {
            console: Arc::new(Console::new(store.clone(), label, console_dir)),
            settings,
            store,
            terminal: std::sync::Mutex::new(terminal),
        })
    }

    /// Where the terminal channel stands (set by `local::listen`).
    pub fn terminal(&self) -> Terminal {
        self.terminal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set_terminal(&self, t: Terminal) {
        *self.terminal.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Whether some channel outside the client's prompt can approve a call needing `level`.
    pub fn reachable(&self, card_host: bool, level: Level) -> bool {
        let s = &self.settings;
        s.enabled(ApprovalChannel::Console)
            || self.terminal() == Terminal::Listening
            || (card_host && s.enabled(ApprovalChannel::McpApp) && level == Level::Client)
    }

    /// A pending approval for `call`, shown on the surfaces that can take it.
    pub async fn open(
        &self,
        call: StoredCall,
        hash: &str,
        packet: &ReviewPacket,
        surfaces: Surfaces,
    ) -> Result<PendingInfo, PendingError> {
        let settings = &self.settings;
        let card = surfaces.card && settings.enabled(ApprovalChannel::McpApp);
        let console = settings.enabled(ApprovalChannel::Console);
        let card_may_decide = card && surfaces.level == Level::Client;
        let now = chrono::Utc::now();
        let expires_at =
            now + chrono::Duration::from_std(settings.pending_ttl).unwrap_or_else(|_| chrono::Duration::minutes(10));
        let shown = shown_packet(call.action.tool, packet);
        let session = call.action.caller.session_id.clone();
        let review = Review {
            packet: shown.clone(),
            created_at: now,
            expires_at,
            card_may_decide,
            nonce: new_secret(),
        };
        let (id, review) = self.store.create_or_reuse(&session, hash, call, review)?;
        let nonce = review.nonce.clone();
        let mut info = PendingInfo {
            fingerprint: fingerprint(hash),
            expires_at: review.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            surfaces: vec![],
            can_decide_here: card_may_decide,
            packet: shown,
            console_problem: None,
            nonce,
            action_hash: hash.to_string(),
            wait_budget: settings.wait_budget,
            approval_id: id.clone(),
        };
        if surfaces.prompt {
            info.surfaces.push("client_prompt");
        }
        if card {
            info.surfaces.push("mcp_app");
        }
        if console {
            // With a card that can decide, the console opens only if the card does not show up.
            if card_may_decide {
                info.surfaces.push("local_console");
                self.open_console_unless_card_ready(id);
            } else {
                match self.console.show().await {
                    Ok(_) => info.surfaces.push("local_console"),
                    Err(e) => {
                        tracing::warn!(approval = info.approval_id, "review console not shown: {e}");
                        info.console_problem = Some(e);
                    }
                }
            }
        }
        if self.terminal() == Terminal::Listening {
            info.surfaces.push("cli");
        }
        Ok(info)
    }

    /// A prompt the call stopped waiting for stays open: its answer decides the approval, unless a
    /// person decided it elsewhere first (then the client is told to close the prompt).
    pub fn follow_prompt(&self, id: String, hash: String, mut prompt: OpenPrompt) {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut changes = store.changes();
            let reply = loop {
                let replied = tokio::select! {
                    r = prompt.reply(None) => Some(r),
                    changed = changes.changed() => {
                        if changed.is_err() { Some(None) } else { None }
                    }
                };
                match replied {
                    Some(reply) => break reply,
                    None if store.state(&id) == Some(State::Pending) => continue,
                    None => {
                        prompt.withdraw("the approval was decided elsewhere").await;
                        return;
                    }
                }
            };
            let decision = match reply {
                Some(Reply::Person(Verdict::Approved {
                    dry_run,
                    max_rows_affected,
                    reason,
                })) => Decision::Approve {
                    dry_run,
                    max_rows_affected,
                    reason,
                },
                Some(Reply::Person(Verdict::NotApproved { reason, why })) => {
                    tracing::info!(approval = id, "not approved in the client's prompt: {why}");
                    Decision::Deny { reason }
                }
                other => {
                    tracing::info!(
                        approval = id,
                        "the client's prompt closed without a decision: {other:?}"
                    );
                    return;
                }
            };
            if let Err(e) = store.decide(&id, &hash, &Via::Prompt, decision) {
                tracing::info!(
                    approval = id,
                    "the late answer in the client's prompt was not taken: {e}"
                );
            }
        });
    }

    /// The card must report itself on screen within a few seconds; otherwise the console opens.
    fn open_console_unless_card_ready(&self, id: String) {
        let store = self.store.clone();
        let console = self.console.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CARD_READY_WITHIN).await;
            if !store.is_card_ready(&id) && store.state(&id) == Some(State::Pending) {
                tracing::info!(
                    approval = id,
                    "the review card did not report ready; opening the console"
                );
                if let Err(e) = console.show().await {
                    tracing::warn!(approval = id, "review console not shown: {e}");
                }
            }
        });
    }
}

/// How long the card has to report that it is on screen.
pub const CARD_READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A word and a sentence for a state, for the console, the card and the model.
pub fn state_words(state: &State) -> (&'static str, String) {
    match state {
        State::Pending => ("pending", "waiting for a person's decision".into()),
        State::Approved { dry_run: true, .. } => (
            "dry_run",
            "approved as a dry run; runs (and rolls back) at the next pgwarden_await".into(),
        ),
        State::Approved {
            max_rows_affected: Some(n),
            ..
        } => (
            "approved",
            format!("approved with a row limit of {n}; runs at the next pgwarden_await"),
        ),
        State::Approved { .. } => ("approved", "approved; runs at the next pgwarden_await".into()),
        State::Denied { reason: Some(r) } => ("denied", format!("denied: {}", visible(r))),
        State::Denied { reason: None } => ("denied", "denied".into()),
        State::Expired => ("expired", "expired without being run".into()),
        State::Cancelled => ("cancelled", "cancelled".into()),
        State::Executing => ("executing", "running now".into()),
        State::Done { ok: true } => ("done", "ran".into()),
        State::Done { ok: false } => ("failed", "ran and failed".into()),
    }
}

/// The packet as the console and the card show it: every string with hidden characters visible.
fn shown_packet(tool: Tool, p: &ReviewPacket) -> serde_json::Value {
    serde_json::json!({
        "summary": one_line(&p.summary, 300),
        "tool": tool,
        "sql": visible(&p.sql),
        "category": p.category,
        "risk": p.risk,
        "reasons": p.reasons.iter().map(|r| visible(r)).collect::<Vec<_>>(),
        "tables": p.tables.iter().map(|(t, tags)| serde_json::json!({ "name": visible(t), "tags": tags })).collect::<Vec<_>>(),
        "rule": visible(&p.rule),
        "rule_reason": visible(&p.rule_reason),
        "estimated_rows": p.estimated_rows,
        "estimate_for_person_only": p.estimate_for_person_only,
        "requested_by": one_line(&p.requested_by, 300),
        "intent": p.intent.as_deref().map(|i| one_line(i, 500)),
        "details": p.details.iter().map(|d| one_line(d, 400)).collect::<Vec<_>>(),
    })
}
