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
    #[error("{0} approvals of this requester are already waiting; wait for them, or ask the user to decide them")]
    TooMany(usize),
    #[error("the decision was made on a different version of this action (hash mismatch); reload and decide again")]
    StaleHash,
    #[error("approval `{0}` was already decided")]
    AlreadyDecided(String),
    #[error("approval `{0}` belongs to another requester")]
    NotYours(String),
    #[error("this approval cannot be decided here: {0}")]
    WrongChannel(String),
    #[error("the decision could not be recorded in the audit log ({0}); nothing changed")]
    Audit(String),
    #[error("nobody approves their own request: this call was made by you; another reviewer must decide it")]
    SelfApproval,
    #[error("you are not among the reviewers of this approval (the rule names {0})")]
    NotAReviewer(String),
    #[error("you already approved this; it needs another reviewer's approval too")]
    AlreadyVoted,
    #[error("the approval store cannot be reached ({0}); nothing changed")]
    Store(String),
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
    /// A verified identity: an OpenID sign-in, a bearer token, a request Slack signed. `by` says
    /// which (`oidc https://idp/`, `token tok_…`, `slack T0123`).
    Verified { by: String },
}

/// Who decided an approval: on which surface, as whom, and who vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewer {
    pub surface: Surface,
    /// The person as the surface knows them: the OS user, `uid 1000 (pid 42)`, "the person in the
    /// chat client".
    pub identity: String,
    pub attested_by: Attestation,
    /// The verified principal (only with [`Attestation::Verified`]), matched against the rule's
    /// `reviewers` and never the requester's.
    pub principal: Option<String>,
    /// The verified groups, for `group:NAME` reviewers.
    pub groups: Vec<String>,
    /// Other names the identity carried (an e-mail beside an OpenID `sub`): never the requester's.
    pub aliases: Vec<String>,
}

impl Reviewer {
    /// A reviewer the organisation's identity provider (or Slack, or a token) vouches for.
    pub fn verified(
        surface: Surface,
        principal: &str,
        display: Option<&str>,
        groups: Vec<String>,
        by: impl Into<String>,
    ) -> Reviewer {
        let identity = match display.filter(|d| *d != principal) {
            Some(d) => format!("{principal} ({})", d.chars().take(80).collect::<String>()),
            None => principal.to_string(),
        };
        Reviewer {
            surface,
            identity,
            attested_by: Attestation::Verified { by: by.into() },
            principal: Some(principal.to_string()),
            groups,
            aliases: display.map(str::to_string).into_iter().collect(),
        }
    }

    /// A reviewer vouched for by something other than an identity provider.
    pub fn attested(surface: Surface, identity: impl Into<String>, attested_by: Attestation) -> Reviewer {
        Reviewer {
            surface,
            identity: identity.into(),
            attested_by,
            principal: None,
            groups: vec![],
            aliases: vec![],
        }
    }

    /// `decided_by` in the audit trail.
    pub fn decided_by(&self) -> String {
        match &self.attested_by {
            Attestation::Os => self.identity.clone(),
            Attestation::Host { .. } => format!("{} (host-attested)", self.identity),
            Attestation::Client => format!("{} (client-attested)", self.identity),
            Attestation::Verified { by } => format!("{} (verified: {by})", self.identity),
        }
    }
}

/// One reviewer's approval of an approval that needs several (`min_approvals`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vote {
    pub principal: String,
    /// As the audit trail names them.
    pub decided_by: String,
    pub dry_run: bool,
    pub max_rows_affected: Option<u64>,
    pub reason: Option<String>,
}

/// What a reviewer's decision does, by the approval's rules: refused, one approval of several
/// (`Ok(None)`), or the approval's new state.
pub fn judge(
    review: &Review,
    votes: &[Vote],
    reviewer: &Reviewer,
    decision: &Decision,
) -> Result<Option<State>, PendingError> {
    let team = &review.team;
    // Any name the reviewer carries against any name the requester carried: one person may be
    // `sub` to the OpenID provider and an e-mail address to Slack.
    let asked = review.requester.iter().chain(&review.requester_aliases);
    let by: Vec<&String> = reviewer.principal.iter().chain(&reviewer.aliases).collect();
    if reviewer.principal.is_some() && asked.into_iter().any(|a| by.iter().any(|b| same_person(a, b))) {
        return Err(PendingError::SelfApproval);
    }
    if team.is_team() {
        let Some(by) = &reviewer.principal else {
            return Err(PendingError::WrongChannel(
                "this approval needs a verified reviewer: decide it in the pgwarden review app, the API or Slack"
                    .into(),
            ));
        };
        if !team.names(by, &reviewer.groups) {
            return Err(PendingError::NotAReviewer(team.reviewers.join(", ")));
        }
    }
    let approved = match decision {
        Decision::Deny { reason } => return Ok(Some(State::Denied { reason: reason.clone() })),
        Decision::Approve(a) => a,
    };
    if let Some(by) = &reviewer.principal
        && votes.iter().any(|v| same_person(&v.principal, by))
    {
        return Err(PendingError::AlreadyVoted);
    }
    if (votes.len() as u32) + 1 < team.min_approvals {
        return Ok(None);
    }
    // Several approvals: the strictest of what they granted.
    let mut merged = approved.clone();
    for v in votes {
        merged.dry_run |= v.dry_run;
        merged.max_rows_affected = match (merged.max_rows_affected, v.max_rows_affected) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        merged.reason = match (v.reason.clone(), merged.reason.take()) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
    }
    Ok(Some(State::Approved(merged)))
}

/// Whether two verified principals may be one person, for the rules that keep one person from
/// passing for two (their own reviewer, two of `min_approvals`): surfaces spell the same person
/// differently (a token or an OpenID claim says `Alice@Example.com`, Slack's lookup gives
/// `alice@example.com`), so case and surrounding space do not tell people apart here. Matching a
/// rule's `reviewers` stays exact: there a difference refuses, here it would let one through.
pub fn same_person(a: &str, b: &str) -> bool {
    let fold = |s: &str| s.trim().to_lowercase();
    fold(a) == fold(b)
}

/// The vote a reviewer's approval leaves while more are needed.
pub fn vote_of(reviewer: &Reviewer, approved: &Approved) -> Vote {
    Vote {
        principal: reviewer.principal.clone().unwrap_or_else(|| reviewer.identity.clone()),
        decided_by: reviewer.decided_by(),
        dry_run: approved.dry_run,
        max_rows_affected: approved.max_rows_affected,
        reason: approved.reason.clone(),
    }
}

/// What a surface shows about an approval. Nothing here is secret except `nonce`, which only the
/// card gets (through the result's `_meta`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Review {
    /// The review packet as the surfaces render it.
    pub packet: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The weakest surface that may decide it (the policy's `min_channel` for the call).
    pub level: Level,
    /// The card's per-approval secret.
    pub nonce: String,
    /// The requester's verified principal: never their own reviewer.
    pub requester: Option<String>,
    /// Other names the requester's verified identity carried (its e-mail or username): no
    /// reviewer known by one of them approves either.
    #[serde(default)]
    pub requester_aliases: Vec<String>,
    /// The rule's reviewers, how many must approve, and where it is announced.
    pub team: crate::policy::Reviewers,
}

/// The call an approval stands for, exactly as it will run: the tool call as given, serialised
/// (the model cannot send new arguments later), and the action it was judged as, caller included.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Approvals given so far while more are needed (`min_approvals`).
    pub votes: Vec<Vote>,
    /// What notifiers keep about it (`slack` → the message to update, `webhook:ops` → deliveries).
    pub notes: serde_json::Map<String, serde_json::Value>,
}

/// What happened to an approval, for the notifiers (Slack, Teams, webhooks). Sent by the replica
/// that made the change, once, after it was recorded.
#[derive(Debug, Clone)]
pub struct ApprovalEvent {
    pub kind: EventKind,
    /// The approval after the change.
    pub approval: Listed,
    /// Who made the change, as the audit trail names them.
    pub by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    /// One approval of several (`min_approvals`).
    Voted,
    Decided,
    Expired,
    Executed,
    Cancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Voted => "voted",
            EventKind::Decided => "decided",
            EventKind::Expired => "expired",
            EventKind::Executed => "executed",
            EventKind::Cancelled => "cancelled",
        }
    }
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

    /// A new pending approval for `call` of `session` — the requester's [`Caller::owner`](crate::call::Caller::owner):
    /// their verified principal, else their MCP session — or the one already pending for the same
    /// owner and action hash, with the review it keeps (an existing approval keeps its own expiry
    /// and nonce).
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
    /// single execution) and gets `Execute`. `session` is the awaiting caller's owner, which must
    /// be the approval's.
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

    /// One approval, as the surfaces list it.
    async fn get(&self, id: &str) -> Option<Listed>;

    /// Keeps `value` under `key` with the approval (a notifier's message id, a delivery record).
    async fn annotate(&self, id: &str, key: &str, value: serde_json::Value) -> Result<(), PendingError>;

    /// Every change this process makes, once recorded (a receiver that falls behind skips).
    fn events(&self) -> tokio::sync::broadcast::Receiver<ApprovalEvent>;

    /// Records a refused attempt to decide (`id` when known): a forged or stale request, a reviewer
    /// who may not decide it.
    async fn refused(&self, id: Option<&str>, surface: Surface, by: &str, why: &str);
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
