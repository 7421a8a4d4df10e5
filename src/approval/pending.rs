//! Pending approvals as durable handles, for surfaces outside the call that asked (the console,
//! the card, the terminal, a prompt answered late): a state machine with atomic transitions, TTLs,
//! idempotent creation and single use, behind the [`ApprovalStore`] trait. Today's store keeps them
//! in this process's memory (`approval::memory`); a store shared by replicas implements the same
//! trait.
//!
//! ```text
//! PENDING ──decide(approve…)──► APPROVED ──claim (once)──► EXECUTING ──► DONE
//!    │ └──decide(deny)──► DENIED           └── unused TTL ──► EXPIRED
//!    ├── pending TTL ──► EXPIRED
//!    └── cancel ──► CANCELLED
//! ```
//! Only review surfaces call [`ApprovalStore::decide`]; the model can only create (through a
//! guarded tool) and await. Every transition is written to the audit trail before it takes effect,
//! and a decision or a claim that cannot be recorded does not happen.

use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{Approved, packet::visible};
use crate::call::{Action, Level, Surface};

/// Where an approval is in its life. Terminal: `Denied`, `Expired`, `Cancelled`, `Done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Pending,
    Approved(Approved),
    Denied { reason: Option<String> },
    Expired,
    Cancelled,
    Executing,
    Done { ok: bool },
}

impl State {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            State::Denied { .. } | State::Expired | State::Cancelled | State::Done { .. }
        )
    }

    /// Still open: a person may decide it, or it may still run.
    pub fn is_open(&self) -> bool {
        matches!(self, State::Pending | State::Approved(_))
    }

    /// A word and a sentence for the state, for the console, the card, the terminal and the model.
    pub fn words(&self) -> (&'static str, String) {
        match self {
            State::Pending => ("pending", "waiting for a person's decision".into()),
            State::Approved(Approved { dry_run: true, .. }) => (
                "dry_run",
                "approved as a dry run; runs (and rolls back) at the next pgwarden_await".into(),
            ),
            State::Approved(Approved {
                max_rows_affected: Some(n),
                ..
            }) => (
                "approved",
                format!("approved with a row limit of {n}; runs at the next pgwarden_await"),
            ),
            State::Approved(_) => ("approved", "approved; runs at the next pgwarden_await".into()),
            State::Denied { reason: Some(r) } => ("denied", format!("denied: {}", visible(r))),
            State::Denied { reason: None } => ("denied", "denied".into()),
            State::Expired => ("expired", "expired without being run".into()),
            State::Cancelled => ("cancelled", "cancelled".into()),
            State::Executing => ("executing", "running now".into()),
            State::Done { ok: true } => ("done", "ran".into()),
            State::Done { ok: false } => ("failed", "ran and failed".into()),
        }
    }
}

/// How long things may wait.
#[derive(Debug, Clone, Copy)]
pub struct Ttls {
    /// A person has this long to decide. Defaults to 10 min.
    pub pending: Duration,
    /// An approval not claimed by an await within this time expires. Defaults to 5 min.
    pub approved_unused: Duration,
    /// Open approvals per session. Defaults to 3.
    pub max_open_per_session: usize,
}

impl From<&crate::policy::ApprovalSettings> for Ttls {
    fn from(s: &crate::policy::ApprovalSettings) -> Ttls {
        Ttls {
            pending: s.pending_ttl,
            approved_unused: s.approved_ttl,
            max_open_per_session: s.max_open_per_session,
        }
    }
}

impl Default for Ttls {
    fn default() -> Self {
        Ttls {
            pending: Duration::from_secs(600),
            approved_unused: Duration::from_secs(300),
            max_open_per_session: 3,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PendingError {
    #[error("approval `{0}` is unknown or expired")]
    Unknown(String),
    #[error("this session already has {0} approvals waiting; wait for them, or ask the user to decide them")]
    TooMany(usize),
    #[error("the decision was made on a different version of this action (hash mismatch); reload and decide again")]
    StaleHash,
    #[error("approval `{0}` was already decided")]
    AlreadyDecided(String),
    #[error("approval `{0}` belongs to another session")]
    NotYours(String),
    #[error("this approval cannot be decided here: {0}")]
    WrongChannel(String),
    #[error("the decision could not be recorded in the audit log ({0}); nothing changed")]
    Audit(String),
}

/// Who vouches that the reviewer is who the surface says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attestation {
    /// The operating system: the console's sign-in of the local user, or the approvals socket's
    /// peer credentials.
    Os,
    /// The MCP host that renders the card, which proves itself with the approval's secret nonce
    /// (the store checks it).
    Host { nonce: String },
    /// The MCP client, answering the prompt pgwarden sent it for this action.
    Client,
}

/// Who decided an approval: on which surface, as whom, and who vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewer {
    pub surface: Surface,
    /// The person as the surface knows them: the OS user, `uid 1000 (pid 42)`, "the person in the
    /// chat client".
    pub identity: String,
    pub attested_by: Attestation,
}

impl Reviewer {
    /// `decided_by` in the audit trail.
    pub fn decided_by(&self) -> String {
        match self.attested_by {
            Attestation::Os => self.identity.clone(),
            Attestation::Host { .. } => format!("{} (host-attested)", self.identity),
            Attestation::Client => format!("{} (client-attested)", self.identity),
        }
    }
}

/// What a surface shows about an approval. Nothing here is secret except `nonce`, which only the
/// card gets (through the result's `_meta`).
#[derive(Debug, Clone)]
pub struct Review {
    /// The review packet as the surfaces render it.
    pub packet: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The weakest surface that may decide it (the policy's `min_channel` for the call).
    pub level: Level,
    /// The card's per-approval secret.
    pub nonce: String,
}

/// The call an approval stands for, exactly as it will run: the tool call as given, serialised
/// (the model cannot send new arguments later), and the action it was judged as, caller included.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCall {
    /// The serialised `tools::ToolCall`.
    pub call: serde_json::Value,
    pub action: Action,
    /// The action hash the person approves.
    pub hash: String,
}

/// One approval, as the surfaces list it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub hash: String,
    pub state: State,
    pub review: Review,
}

/// What a person decides on a surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approve(Approved),
    Deny { reason: Option<String> },
}

impl Decision {
    /// A surface's answer: `approve`, `dry_run` or `deny`, with an optional row limit and reason.
    pub fn parse(decision: &str, max_rows_affected: Option<u64>, reason: Option<String>) -> Result<Decision, String> {
        let reason = reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
        match decision {
            "approve" | "dry_run" => Ok(Decision::Approve(Approved {
                dry_run: decision == "dry_run",
                max_rows_affected,
                reason,
            })),
            "deny" => Ok(Decision::Deny { reason }),
            other => Err(format!("unknown decision `{other}`; expected approve, dry_run or deny")),
        }
    }
}

/// What `wait` reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Awaited {
    /// Approved, and this caller won the single execution: run `call` with what was approved.
    Execute { call: Box<StoredCall>, approved: Approved },
    /// Still pending when the wait budget ran out.
    StillPending,
    /// A terminal state (or another caller is executing it).
    Finished(State),
}

/// Why an approval was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The tool call that was waiting for it was cancelled by the client.
    CallCancelled,
    /// No surface could show it.
    Unseen,
}

impl Cancel {
    pub fn as_str(self) -> &'static str {
        match self {
            Cancel::CallCancelled => "the tool call was cancelled",
            Cancel::Unseen => "no surface could show it",
        }
    }
}

/// The approvals pgwarden keeps, wherever it keeps them. Held as `Arc<dyn ApprovalStore>`.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    fn ttls(&self) -> Ttls;

    /// A new pending approval for `call` in `session`, or the one already pending for the same
    /// session and action hash, with the review it keeps (an existing approval keeps its own
    /// expiry and nonce).
    async fn open_or_reuse(
        &self,
        session: &str,
        call: StoredCall,
        review: Review,
    ) -> Result<(String, Review), PendingError>;

    /// Whether `session` already has an approval for `hash` waiting for a decision.
    async fn is_pending(&self, session: &str, hash: &str) -> bool;

    /// A person's decision on a surface, carrying the hash of what they were shown. The reviewer's
    /// surface must be strong enough for the approval's level, and a card must hold its nonce.
    async fn decide(
        &self,
        id: &str,
        shown_hash: &str,
        reviewer: &Reviewer,
        decision: Decision,
    ) -> Result<State, PendingError>;

    /// Waits up to `budget` for a decision; the caller that sees it approved first claims it (the
    /// single execution) and gets `Execute`.
    async fn wait(&self, id: &str, session: &str, budget: Duration) -> Result<Awaited, PendingError>;

    /// Records how the execution ended.
    async fn finish(&self, id: &str, ok: bool);

    /// Cancels a pending (or approved, unclaimed) approval.
    async fn cancel(&self, id: &str, why: Cancel);

    /// At shutdown: every approval still open is recorded as abandoned.
    async fn abandon_open(&self);

    /// Every approval (newest first).
    async fn list(&self) -> Vec<Listed>;

    /// The current state of `id`.
    async fn state(&self, id: &str) -> Option<State>;

    /// Moves approvals past their deadline to `Expired`, so waiting surfaces see it when it
    /// happens (the hub calls this every second).
    async fn expire_due(&self);

    /// A counter that moves on every change, for surfaces that show approvals live.
    fn changes(&self) -> watch::Receiver<u64>;

    /// The state of `id`, for a surface holding its nonce (the card).
    async fn state_with_nonce(&self, id: &str, nonce: &str) -> Result<State, PendingError>;

    /// The card says it is on screen (with the approval's nonce).
    async fn mark_shown(&self, id: &str, nonce: &str) -> Result<(), PendingError>;

    /// Whether the card reported itself on screen.
    async fn was_shown(&self, id: &str) -> bool;

    /// Takes a single-use nonce (of a sealed `requestState`) until `ttl` from now: true the first
    /// time, false for every replay.
    async fn use_nonce(&self, nonce: &str, ttl: Duration) -> bool;
}

/// Compares two secrets without an early exit (by their SHA-256, so lengths leak nothing either).
pub fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0 && !b.is_empty()
}

/// A fresh 256-bit secret, hex.
pub fn new_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// The first 40 bits of an action hash, grouped for people: `a3f9-0c21-7e`.
pub fn fingerprint(hash: &str) -> String {
    let h: String = hash.chars().take(10).collect();
    format!(
        "{}-{}-{}",
        h.get(0..4).unwrap_or(""),
        h.get(4..8).unwrap_or(""),
        h.get(8..10).unwrap_or("")
    )
}
