//! Approvals that outlive the tool call: the store and the review surfaces, put together. A guarded
//! call that no in-call prompt settled becomes a pending approval here and is announced on every
//! surface that can show it; a person decides it on one of them; `pgwarden_await` runs the stored
//! call once.

use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;

use super::{
    OpenPrompt, Reply, ReviewPacket, Verdict,
    packet::{one_line, visible},
    pending::{
        ApprovalStore, Attestation, Decision, PendingError, Review, Reviewer, State, StoredCall, fingerprint,
        new_secret,
    },
    reach::Terminal,
    surface::{Announced, Offer, ReviewSurface},
};
use crate::{
    call::{Surface, Tool},
    policy::ApprovalSettings,
};

/// What the model (and the card) is told about a new pending approval.
#[derive(Debug, Clone)]
pub struct PendingInfo {
    pub approval_id: String,
    pub fingerprint: String,
    pub expires_at: String,
    /// Where the person can decide, in the order they were announced.
    pub surfaces: Vec<Surface>,
    /// The same, as the model tells the person ("in the pgwarden review window in their browser").
    pub places: Vec<String>,
    /// Whether the card may decide (false when the policy needs a local approval).
    pub can_decide_here: bool,
    /// The packet the card shows (the console has its own copy).
    pub packet: serde_json::Value,
    /// Why a surface that should have shown it could not.
    pub problems: Vec<(Surface, String)>,
    /// The card's secret and the action hash: only for the result's `_meta`, never for the model.
    pub nonce: String,
    pub action_hash: String,
    /// How long `pgwarden_await` waits.
    pub wait_budget: std::time::Duration,
}

impl PendingInfo {
    /// Why `surface` could not show it, if it could not.
    pub fn problem(&self, surface: Surface) -> Option<&str> {
        self.problems
            .iter()
            .find(|(s, _)| *s == surface)
            .map(|(_, p)| p.as_str())
    }
}

/// The approvals of this process.
pub struct Approvals {
    pub settings: ApprovalSettings,
    pub store: Arc<dyn ApprovalStore>,
    /// Registered at start, in the order they are announced on; only those the policy enables.
    surfaces: RwLock<Vec<Arc<dyn ReviewSurface>>>,
    /// Which server this is, for the surfaces that list approvals of several.
    label: String,
    /// Whether `pgwarden approvals` can reach this process (see `local::listen`).
    terminal: Mutex<Terminal>,
}

impl Approvals {
    pub fn new(settings: ApprovalSettings, store: Arc<dyn ApprovalStore>, label: String) -> Arc<Approvals> {
        // Expiry is recorded when it happens, not when something next looks.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&store);
            handle.spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    let Some(store) = weak.upgrade() else { return };
                    store.expire_due().await;
                }
            });
        }
        let terminal = if settings.enabled(Surface::Cli) {
            Terminal::NotListening("this process has not opened its approvals socket".into())
        } else {
            Terminal::Off
        };
        Arc::new(Approvals {
            settings,
            store,
            surfaces: RwLock::new(vec![]),
            label,
            terminal: Mutex::new(terminal),
        })
    }

    /// Approvals kept in this process's memory ([`MemoryStore`](super::memory::MemoryStore)),
    /// recorded in `audit`.
    pub fn in_memory(
        settings: ApprovalSettings,
        audit: Arc<dyn crate::audit::sink::AuditSink>,
        label: String,
    ) -> Arc<Approvals> {
        let store = Arc::new(super::memory::MemoryStore::new((&settings).into(), audit));
        Approvals::new(settings, store, label)
    }

    /// Adds a surface approvals are announced on, unless the policy turned it off.
    pub fn register(&self, surface: Arc<dyn ReviewSurface>) {
        if self.settings.enabled(surface.id()) {
            self.surfaces.write().unwrap_or_else(|p| p.into_inner()).push(surface);
        }
    }

    fn registered(&self) -> Vec<Arc<dyn ReviewSurface>> {
        self.surfaces.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Which server and client this is (also what `pgwarden approvals` shows).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Where the terminal surface stands (set by `local::listen`).
    pub fn terminal(&self) -> Terminal {
        self.terminal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set_terminal(&self, t: Terminal) {
        *self.terminal.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Brings the registered `surface` in front of the person.
    pub async fn bring_forward(&self, surface: Surface) -> Result<(), String> {
        let found = self.registered().into_iter().find(|s| s.id() == surface);
        match found {
            Some(s) => s.bring_forward().await,
            None => Err(format!("the `{surface}` surface is off")),
        }
    }

    /// Whether some registered surface can show and decide a call with this offer.
    pub fn reachable(&self, offer: &Offer) -> bool {
        self.registered()
            .iter()
            .any(|s| s.offers(offer) && s.may_decide(offer.level))
    }

    /// A pending approval for `call`, announced on `prompt` (the client's prompt, still open) and
    /// every registered surface that can show it.
    pub async fn open(
        &self,
        call: StoredCall,
        packet: &ReviewPacket,
        offer: Offer,
        team: &crate::policy::Reviewers,
        prompt: Option<Arc<dyn ReviewSurface>>,
    ) -> Result<PendingInfo, PendingError> {
        let settings = &self.settings;
        let now = chrono::Utc::now();
        let expires_at =
            now + chrono::Duration::from_std(settings.pending_ttl).unwrap_or_else(|_| chrono::Duration::minutes(10));
        let shown = shown_packet(call.action.tool, packet);
        let session = call.action.caller.owner();
        let hash = call.hash.clone();
        let review = Review {
            packet: shown.clone(),
            created_at: now,
            expires_at,
            level: offer.level,
            nonce: new_secret(),
            requester: call.action.caller.verified_principal().map(str::to_string),
            requester_aliases: match (call.action.caller.verified_principal(), &call.action.caller.identity) {
                (Some(_), Some(i)) => i.display.iter().chain(&i.aliases).cloned().collect(),
                _ => vec![],
            },
            team: team.clone(),
        };
        let (id, review) = match self.store.open_or_reuse(&session, call, review).await {
            Ok(opened) => opened,
            Err(e) => {
                if let Some(p) = &prompt {
                    p.withdraw("", "pgwarden could not keep the approval open").await;
                }
                return Err(e);
            }
        };
        let client_may_decide = offer.level == crate::call::Level::Client;
        let mut info = PendingInfo {
            fingerprint: fingerprint(&hash),
            expires_at: review.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            surfaces: vec![],
            places: vec![],
            can_decide_here: offer.card_host && settings.enabled(Surface::McpApp) && client_may_decide,
            packet: shown,
            problems: vec![],
            nonce: review.nonce,
            action_hash: hash.clone(),
            wait_budget: settings.wait_budget,
            approval_id: id.clone(),
        };
        let surfaces = prompt
            .into_iter()
            .chain(self.registered().into_iter().filter(|s| s.offers(&offer)));
        for surface in surfaces {
            let announced = Announced {
                id: &id,
                hash: &hash,
                shown_on: &info.surfaces,
                client_may_decide,
            };
            match surface.announce(&announced).await {
                Ok(()) => {
                    info.surfaces.push(surface.id());
                    info.places.push(surface.place(&id));
                }
                Err(e) => {
                    tracing::warn!(approval = id, surface = surface.id().as_str(), "not shown: {e}");
                    info.problems.push((surface.id(), e));
                }
            }
        }
        Ok(info)
    }
}

/// The client's own prompt, still open after the call that sent it stopped waiting: its answer
/// decides the approval, unless a person decided it elsewhere first (then the client is told to
/// close the prompt).
pub struct PromptSurface {
    prompt: Mutex<Option<OpenPrompt>>,
    store: Arc<dyn ApprovalStore>,
}

impl PromptSurface {
    pub fn open(prompt: OpenPrompt, store: Arc<dyn ApprovalStore>) -> Arc<dyn ReviewSurface> {
        Arc::new(PromptSurface {
            prompt: Mutex::new(Some(prompt)),
            store,
        })
    }

    fn take(&self) -> Option<OpenPrompt> {
        self.prompt.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The person answering the client's own prompt, vouched for by the client.
fn prompt_reviewer() -> Reviewer {
    Reviewer::attested(
        Surface::Elicitation,
        "the person answering the client's prompt",
        Attestation::Client,
    )
}

#[async_trait]
impl ReviewSurface for PromptSurface {
    fn id(&self) -> Surface {
        Surface::Elicitation
    }

    fn offers(&self, _: &Offer) -> bool {
        true
    }

    fn place(&self, _: &str) -> String {
        "in the approval prompt their MCP client is showing".into()
    }

    async fn announce(&self, a: &Announced<'_>) -> Result<(), String> {
        let Some(mut prompt) = self.take() else {
            return Err("the prompt was already closed".into());
        };
        let (store, id, hash) = (self.store.clone(), a.id.to_string(), a.hash.to_string());
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
                    None if store.state(&id).await == Some(State::Pending) => continue,
                    None => {
                        prompt.withdraw("the approval was decided elsewhere").await;
                        return;
                    }
                }
            };
            let decision = match reply {
                Some(Reply::Person(Verdict::Approved(approved))) => Decision::Approve(approved),
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
            if let Err(e) = store.decide(&id, &hash, &prompt_reviewer(), decision).await {
                tracing::info!(
                    approval = id,
                    "the late answer in the client's prompt was not taken: {e}"
                );
            }
        });
        Ok(())
    }

    async fn withdraw(&self, _: &str, why: &str) {
        if let Some(p) = self.take() {
            p.withdraw(why).await;
        }
    }
}

/// The review card in the chat (MCP Apps). The host shows it from the guarded call's result, so
/// announcing it sends nothing; the card's tools decide with [`card_reviewer`](super::surface::card_reviewer).
pub struct CardSurface;

#[async_trait]
impl ReviewSurface for CardSurface {
    fn id(&self) -> Surface {
        Surface::McpApp
    }

    fn offers(&self, offer: &Offer) -> bool {
        offer.card_host
    }

    fn place(&self, _: &str) -> String {
        "in the pgwarden approval card in this chat".into()
    }

    async fn announce(&self, _: &Announced<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// How long the card has to report that it is on screen.
pub const CARD_READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The packet as the surfaces show it: every string with hidden characters visible.
fn shown_packet(tool: Tool, p: &ReviewPacket) -> serde_json::Value {
    serde_json::json!({
        "summary": one_line(&p.summary, 300),
        "tool": tool,
        "database": p.database.as_deref().map(visible),
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
