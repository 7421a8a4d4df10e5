//! Pending approvals as durable handles, for channels outside the MCP client (the local review
//! console): a state machine with atomic transitions, TTLs, idempotent creation and single use.
//!
//! ```text
//! PENDING ──decide(approve…)──► APPROVED ──claim (once)──► EXECUTING ──► DONE
//!    │ └──decide(deny)──► DENIED           └── unused TTL ──► EXPIRED
//!    ├── pending TTL ──► EXPIRED
//!    └── cancel ──► CANCELLED
//! ```
//! Only channel handlers call [`ApprovalStore::decide`]; the model can only create (through a
//! guarded tool) and await. Time comes from `tokio::time`, so tests run with paused time.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use sha2::{Digest, Sha256};
use tokio::{sync::watch, time::Instant};

/// Where an approval is in its life. Terminal: `Denied`, `Expired`, `Cancelled`, `Done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Pending,
    Approved {
        dry_run: bool,
        max_rows_affected: Option<u64>,
        reason: Option<String>,
    },
    Denied {
        reason: Option<String>,
    },
    Expired,
    Cancelled,
    Executing,
    Done {
        ok: bool,
    },
}

impl State {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            State::Denied { .. } | State::Expired | State::Cancelled | State::Done { .. }
        )
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

/// Where a decision comes from. The store checks what each channel may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The local review console, signed in by the person at this computer (`user`).
    Console { user: String },
    /// The review card in the chat (MCP Apps), proving itself with the approval's nonce.
    Card { nonce: String },
    /// A late answer to the client's own prompt, which pgwarden sent for this action (the call
    /// stopped waiting for it, and the approval went pending).
    Prompt,
    /// `pgwarden approvals` in a terminal, over the approvals socket: the peer's uid (checked to be
    /// ours) and pid, as `decided_by`.
    Cli { decided_by: String },
}

impl Via {
    pub fn channel(&self) -> &'static str {
        match self {
            Via::Console { .. } => "console",
            Via::Card { .. } => "mcp_app",
            Via::Prompt => "elicitation",
            Via::Cli { .. } => "cli",
        }
    }

    fn decided_by(&self) -> String {
        match self {
            Via::Console { user } => user.clone(),
            Via::Card { .. } => "the person in the chat client (host-attested)".into(),
            Via::Prompt => "the person answering the client's prompt (client-attested)".into(),
            Via::Cli { decided_by } => decided_by.clone(),
        }
    }
}

/// What channels show about an approval. Nothing here is secret except `nonce`, which only the
/// card gets (through the result's `_meta`).
#[derive(Debug, Clone)]
pub struct Review {
    /// The review packet as the channels render it.
    pub packet: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Whether a client-level channel (the card) may decide; false when policy needs `local`.
    pub card_may_decide: bool,
    /// The card's per-approval secret.
    pub nonce: String,
}

/// A state change, handed to the store's recorder before it takes effect.
#[derive(Debug)]
pub struct Transition<'a> {
    pub id: &'a str,
    pub session: &'a str,
    pub hash: &'a str,
    pub to: &'a State,
    pub channel: &'a str,
    pub decided_by: Option<String>,
}

/// Writes transitions somewhere durable (the audit log). An error stops a decision or an
/// execution; expiry and cancellation happen regardless (they only take authority away).
pub type Recorder = Box<dyn Fn(&Transition<'_>) -> Result<(), String> + Send + Sync>;

/// One approval, as the channels list it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub hash: String,
    pub state: State,
    pub review: Review,
}

/// What a person decides in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approve {
        dry_run: bool,
        max_rows_affected: Option<u64>,
        reason: Option<String>,
    },
    Deny {
        reason: Option<String>,
    },
}

impl Decision {
    /// A channel's answer: `approve`, `dry_run` or `deny`, with an optional row limit and reason.
    pub fn parse(decision: &str, max_rows_affected: Option<u64>, reason: Option<String>) -> Result<Decision, String> {
        let reason = reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
        match decision {
            "approve" | "dry_run" => Ok(Decision::Approve {
                dry_run: decision == "dry_run",
                max_rows_affected,
                reason,
            }),
            "deny" => Ok(Decision::Deny { reason }),
            other => Err(format!("unknown decision `{other}`; expected approve, dry_run or deny")),
        }
    }
}

struct Entry<A> {
    session: String,
    hash: String,
    action: A,
    state: watch::Sender<State>,
    /// When the current state expires, for `Pending` and `Approved`.
    deadline: Instant,
    review: Review,
    /// The card reported that it is showing this approval.
    card_ready: bool,
    /// Creation order, for listing.
    seq: u64,
}

/// The approvals of this process. `A` is the stored action that runs once approved.
pub struct ApprovalStore<A> {
    ttls: Ttls,
    entries: Mutex<HashMap<String, Entry<A>>>,
    record: Recorder,
    /// Bumped on every change, so channels can wait for news.
    generation: watch::Sender<u64>,
}

/// What `wait` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Awaited<A> {
    /// Approved, and this caller won the single execution: run `action` with these modifiers.
    Execute {
        action: A,
        dry_run: bool,
        max_rows_affected: Option<u64>,
        reason: Option<String>,
    },
    /// Still pending when the wait budget ran out.
    StillPending,
    /// A terminal state (or another caller is executing it).
    Finished(State),
}

impl<A: Clone> ApprovalStore<A> {
    pub fn new(ttls: Ttls, record: Recorder) -> ApprovalStore<A> {
        ApprovalStore {
            ttls,
            entries: Mutex::new(HashMap::new()),
            record,
            generation: watch::channel(0).0,
        }
    }

    pub fn ttls(&self) -> Ttls {
        self.ttls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<A>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records and applies a transition. `must_record`: a failed record stops it.
    fn transition(
        &self,
        id: &str,
        e: &mut Entry<A>,
        to: State,
        channel: &str,
        decided_by: Option<String>,
        must_record: bool,
    ) -> Result<(), PendingError> {
        let t = Transition {
            id,
            session: &e.session,
            hash: &e.hash,
            to: &to,
            channel,
            decided_by,
        };
        if let Err(err) = (self.record)(&t) {
            if must_record {
                return Err(PendingError::Audit(err));
            }
            tracing::error!(approval = id, "approval transition not recorded: {err}");
        }
        e.state.send_replace(to);
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Expires what is past its deadline (called on every access).
    fn sweep(&self, entries: &mut HashMap<String, Entry<A>>) {
        let now = Instant::now();
        for (id, e) in entries.iter_mut() {
            let current = e.state.borrow().clone();
            if matches!(current, State::Pending | State::Approved { .. }) && now >= e.deadline {
                let _ = self.transition(id, e, State::Expired, "ttl", None, false);
            }
        }
    }

    /// A new pending approval, or the id of an identical one still pending in the same session.
    pub fn create(&self, session: &str, hash: &str, action: A, review: Review) -> Result<String, PendingError> {
        self.create_or_reuse(session, hash, action, review).map(|(id, _)| id)
    }

    /// Like [`create`](Self::create), also returning the review kept for the id (an existing
    /// approval keeps its own expiry and nonce).
    pub fn create_or_reuse(
        &self,
        session: &str,
        hash: &str,
        action: A,
        review: Review,
    ) -> Result<(String, Review), PendingError> {
        let mut entries = self.lock();
        self.sweep(&mut entries);
        if let Some((id, e)) = entries
            .iter()
            .find(|(_, e)| e.session == session && e.hash == hash && *e.state.borrow() == State::Pending)
        {
            return Ok((id.clone(), e.review.clone()));
        }
        let open = entries
            .values()
            .filter(|e| e.session == session && *e.state.borrow() == State::Pending)
            .count();
        if open >= self.ttls.max_open_per_session {
            return Err(PendingError::TooMany(open));
        }
        let id = format!("apr_{}", uuid::Uuid::new_v4().simple());
        let seq = entries.values().map(|e| e.seq + 1).max().unwrap_or(0);
        let (state, _) = watch::channel(State::Pending);
        let mut e = Entry {
            session: session.into(),
            hash: hash.into(),
            action,
            state,
            deadline: Instant::now() + self.ttls.pending,
            review,
            card_ready: false,
            seq,
        };
        self.transition(&id, &mut e, State::Pending, "created", None, true)?;
        let kept = e.review.clone();
        entries.insert(id.clone(), e);
        Ok((id, kept))
    }

    /// Whether `session` already has an approval for `hash` waiting for a decision.
    pub fn is_pending(&self, session: &str, hash: &str) -> bool {
        let mut entries = self.lock();
        self.sweep(&mut entries);
        entries
            .values()
            .any(|e| e.session == session && e.hash == hash && *e.state.borrow() == State::Pending)
    }

    /// A person's decision, carrying the hash of what they were shown. Only channel handlers call
    /// this — no model-visible tool does.
    pub fn decide(&self, id: &str, shown_hash: &str, via: &Via, decision: Decision) -> Result<State, PendingError> {
        let mut entries = self.lock();
        self.sweep(&mut entries);
        let e = entries.get_mut(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
        if let Via::Card { nonce } = via {
            check_nonce(e, nonce)?;
            if !e.review.card_may_decide {
                return Err(PendingError::WrongChannel(
                    "the policy needs a local approval for this action: decide it in the pgwarden review window".into(),
                ));
            }
        }
        if e.hash != shown_hash {
            return Err(PendingError::StaleHash);
        }
        if *e.state.borrow() != State::Pending {
            return Err(PendingError::AlreadyDecided(id.into()));
        }
        let next = match decision {
            Decision::Approve {
                dry_run,
                max_rows_affected,
                reason,
            } => State::Approved {
                dry_run,
                max_rows_affected,
                reason,
            },
            Decision::Deny { reason } => State::Denied { reason },
        };
        self.transition(id, e, next.clone(), via.channel(), Some(via.decided_by()), true)?;
        if matches!(next, State::Approved { .. }) {
            e.deadline = Instant::now() + self.ttls.approved_unused;
        }
        Ok(next)
    }

    /// Cancels a pending (or approved, unclaimed) approval.
    pub fn cancel(&self, id: &str, why: &str) {
        let mut entries = self.lock();
        if let Some(e) = entries.get_mut(id)
            && !e.state.borrow().is_terminal()
            && *e.state.borrow() != State::Executing
        {
            let _ = self.transition(id, e, State::Cancelled, why, None, false);
        }
    }

    /// The card says it is on screen (with the approval's nonce).
    pub fn card_ready(&self, id: &str, nonce: &str) -> Result<(), PendingError> {
        let mut entries = self.lock();
        let e = entries.get_mut(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
        check_nonce(e, nonce)?;
        e.card_ready = true;
        Ok(())
    }

    /// Whether the card reported itself on screen.
    pub fn is_card_ready(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|e| e.card_ready)
    }

    /// The state of `id`, for a channel holding its nonce.
    pub fn state_for_card(&self, id: &str, nonce: &str) -> Result<State, PendingError> {
        let mut entries = self.lock();
        self.sweep(&mut entries);
        let e = entries.get(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
        check_nonce(e, nonce)?;
        Ok(e.state.borrow().clone())
    }

    /// Every approval of this process (newest first), for the console.
    pub fn list(&self) -> Vec<Listed> {
        let mut entries = self.lock();
        self.sweep(&mut entries);
        let mut all: Vec<(u64, Listed)> = entries
            .iter()
            .map(|(id, e)| {
                (
                    e.seq,
                    Listed {
                        id: id.clone(),
                        hash: e.hash.clone(),
                        state: e.state.borrow().clone(),
                        review: e.review.clone(),
                    },
                )
            })
            .collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.0));
        all.into_iter().map(|(_, l)| l).collect()
    }

    /// The current generation and a receiver that sees the next change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// At shutdown: every approval still open is recorded as abandoned (channel `shutdown`), so
    /// the trail does not end on `pending`. Pending approvals live in memory and die with us.
    pub fn abandon_open(&self) {
        let mut entries = self.lock();
        for (id, e) in entries.iter_mut() {
            let current = e.state.borrow().clone();
            if matches!(current, State::Pending | State::Approved { .. }) {
                let _ = self.transition(id, e, State::Cancelled, "shutdown", None, false);
            }
        }
    }

    /// Moves expired entries along, so waiting channels see it.
    pub fn tick(&self) {
        let mut entries = self.lock();
        self.sweep(&mut entries);
    }

    /// Waits up to `budget` for a decision. Exactly one caller gets `Execute` for an approval.
    pub async fn wait(&self, id: &str, session: &str, budget: Duration) -> Result<Awaited<A>, PendingError> {
        let mut rx = {
            let mut entries = self.lock();
            self.sweep(&mut entries);
            let e = entries.get(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
            if e.session != session {
                return Err(PendingError::NotYours(id.into()));
            }
            e.state.subscribe()
        };
        let until = Instant::now() + budget;
        loop {
            if let Some(done) = self.try_claim(id)? {
                return Ok(done);
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Ok(Awaited::Finished(State::Expired));
                    }
                }
                _ = tokio::time::sleep_until(until) => {
                    return Ok(self.try_claim(id)?.unwrap_or(Awaited::StillPending));
                }
            }
        }
    }

    /// The compare-and-swap: APPROVED → EXECUTING for one caller. `None` while pending.
    fn try_claim(&self, id: &str) -> Result<Option<Awaited<A>>, PendingError> {
        let mut entries = self.lock();
        self.sweep(&mut entries);
        let e = entries.get_mut(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
        let current = e.state.borrow().clone();
        Ok(match current {
            State::Pending => None,
            State::Approved {
                dry_run,
                max_rows_affected,
                reason,
            } => {
                self.transition(id, e, State::Executing, "await", None, true)?;
                Some(Awaited::Execute {
                    action: e.action.clone(),
                    dry_run,
                    max_rows_affected,
                    reason,
                })
            }
            other => Some(Awaited::Finished(other)),
        })
    }

    /// Records how the execution ended.
    pub fn finish(&self, id: &str, ok: bool) {
        let mut entries = self.lock();
        if let Some(e) = entries.get_mut(id)
            && *e.state.borrow() == State::Executing
        {
            let _ = self.transition(id, e, State::Done { ok }, "executed", None, false);
        }
    }

    /// The current state, for the console and the model.
    pub fn state(&self, id: &str) -> Option<State> {
        let mut entries = self.lock();
        self.sweep(&mut entries);
        entries.get(id).map(|e| e.state.borrow().clone())
    }
}

/// The card proves itself with the approval's nonce.
fn check_nonce<A>(e: &Entry<A>, nonce: &str) -> Result<(), PendingError> {
    if same_secret(nonce, &e.review.nonce) {
        Ok(())
    } else {
        Err(PendingError::WrongChannel(
            "the card's proof does not match this approval".into(),
        ))
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn review() -> Review {
        Review {
            packet: serde_json::json!({}),
            created_at: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
            card_may_decide: true,
            nonce: "n0nce".into(),
        }
    }

    fn console() -> Via {
        Via::Console { user: "alice".into() }
    }

    /// A store whose recorder keeps `id to channel` lines.
    fn recorded<A: Clone>() -> (ApprovalStore<A>, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let store = ApprovalStore::new(
            Ttls::default(),
            Box::new(move |t: &Transition<'_>| {
                sink.lock().unwrap().push(format!("{:?} {}", t.to, t.channel));
                Ok(())
            }),
        );
        (store, log)
    }

    fn approve() -> Decision {
        Decision::Approve {
            dry_run: false,
            max_rows_affected: None,
            reason: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fifty_concurrent_awaits_execute_once() {
        let store = Arc::new(recorded::<String>().0);
        let id = store.create("s", "h", "UPDATE t SET x = 1".into(), review()).unwrap();
        let waits: Vec<_> = (0..50)
            .map(|_| {
                let store = store.clone();
                let id = id.clone();
                tokio::spawn(async move { store.wait(&id, "s", Duration::from_secs(40)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        store.decide(&id, "h", &console(), approve()).unwrap();
        let mut executions = 0;
        for w in waits {
            if let Awaited::Execute { .. } = w.await.unwrap().unwrap() {
                executions += 1;
            }
        }
        assert_eq!(executions, 1);
        assert_eq!(store.state(&id), Some(State::Executing));
        store.finish(&id, true);
        assert_eq!(store.state(&id), Some(State::Done { ok: true }));
        assert_eq!(
            store.decide(&id, "h", &console(), approve()),
            Err(PendingError::AlreadyDecided(id.clone()))
        );
    }

    /// Issue 16 item 10: approvals still open at shutdown ended the trail on `pending`.
    #[tokio::test]
    async fn open_approvals_are_recorded_abandoned_at_shutdown() {
        let (store, seen) = recorded::<u8>();
        let a = store.create("s", "a", 1, review()).unwrap();
        let b = store.create("s", "b", 2, review()).unwrap();
        store.decide(&b, "b", &console(), approve()).unwrap();
        let c = store.create("s", "c", 3, review()).unwrap();
        store
            .decide(&c, "c", &console(), Decision::parse("deny", None, None).unwrap())
            .unwrap();
        store.abandon_open();
        for id in [&a, &b] {
            assert_eq!(store.state(id), Some(State::Cancelled));
        }
        assert!(matches!(store.state(&c), Some(State::Denied { .. })));
        let shutdown = seen.lock().unwrap().iter().filter(|t| t.contains("shutdown")).count();
        assert_eq!(shutdown, 2, "{:?}", seen.lock().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn ttls_expire_pending_and_unclaimed_approvals() {
        let (store, _) = recorded::<u8>();
        let a = store.create("s", "a", 1, review()).unwrap();
        tokio::time::advance(Duration::from_secs(601)).await;
        assert_eq!(store.state(&a), Some(State::Expired));
        assert_eq!(
            store.decide(&a, "a", &console(), approve()),
            Err(PendingError::AlreadyDecided(a.clone()))
        );
        let b = store.create("s", "b", 2, review()).unwrap();
        store.decide(&b, "b", &console(), approve()).unwrap();
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(
            store.wait(&b, "s", Duration::from_secs(1)).await,
            Ok(Awaited::Finished(State::Expired))
        );
        // Still pending after the wait budget: the model is told so.
        let c = store.create("s", "c", 3, review()).unwrap();
        assert_eq!(
            store.wait(&c, "s", Duration::from_secs(40)).await,
            Ok(Awaited::StillPending)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn binding_identity_caps_and_denials() {
        let (store, _) = recorded::<u8>();
        let a = store.create("s", "a", 1, review()).unwrap();
        assert_eq!(
            store.create("s", "a", 1, review()).unwrap(),
            a,
            "an identical pending action reuses its id"
        );
        assert_ne!(store.create("other", "a", 1, review()).unwrap(), a, "per session");
        assert_eq!(
            store.decide(&a, "a-stale", &console(), approve()),
            Err(PendingError::StaleHash)
        );
        assert_eq!(
            store.wait(&a, "other", Duration::from_secs(1)).await,
            Err(PendingError::NotYours(a.clone()))
        );
        store.create("s", "b", 2, review()).unwrap();
        store.create("s", "c", 3, review()).unwrap();
        assert_eq!(store.create("s", "d", 4, review()), Err(PendingError::TooMany(3)));
        store
            .decide(
                &a,
                "a",
                &console(),
                Decision::Deny {
                    reason: Some("no".into()),
                },
            )
            .unwrap();
        assert_eq!(
            store.wait(&a, "s", Duration::from_secs(1)).await,
            Ok(Awaited::Finished(State::Denied {
                reason: Some("no".into())
            }))
        );
        assert_eq!(
            store.wait("nope", "s", Duration::from_secs(1)).await,
            Err(PendingError::Unknown("nope".into()))
        );
        assert_eq!(fingerprint("a3f90c217e99"), "a3f9-0c21-7e");
    }

    #[tokio::test(start_paused = true)]
    async fn card_needs_its_nonce_and_permission_and_every_transition_is_recorded_first() {
        let (store, log) = recorded::<u8>();
        let a = store.create("s", "a", 1, review()).unwrap();
        let wrong = Via::Card { nonce: "guess".into() };
        assert!(matches!(
            store.decide(&a, "a", &wrong, approve()),
            Err(PendingError::WrongChannel(_))
        ));
        assert!(store.card_ready(&a, "guess").is_err());
        assert!(!store.is_card_ready(&a));
        store.card_ready(&a, "n0nce").unwrap();
        assert!(store.is_card_ready(&a));
        let card = Via::Card { nonce: "n0nce".into() };
        store.decide(&a, "a", &card, approve()).unwrap();
        let Awaited::Execute { .. } = store.wait(&a, "s", Duration::from_secs(1)).await.unwrap() else {
            panic!("approved by the card")
        };
        store.finish(&a, true);
        let critical = store
            .create(
                "s",
                "b",
                2,
                Review {
                    card_may_decide: false,
                    ..review()
                },
            )
            .unwrap();
        assert!(matches!(
            store.decide(&critical, "b", &card, approve()),
            Err(PendingError::WrongChannel(m)) if m.contains("local approval")
        ));
        store.cancel(&critical, "cancelled by the client");
        assert_eq!(
            *log.lock().unwrap(),
            [
                "Pending created",
                "Approved { dry_run: false, max_rows_affected: None, reason: None } mcp_app",
                "Executing await",
                "Done { ok: true } executed",
                "Pending created",
                "Cancelled cancelled by the client",
            ]
        );
        // A decision that cannot be recorded does not happen.
        let failing = ApprovalStore::<u8>::new(
            Ttls::default(),
            Box::new(|t: &Transition<'_>| {
                if *t.to == State::Pending {
                    Ok(())
                } else {
                    Err("disk full".into())
                }
            }),
        );
        let c = failing.create("s", "c", 3, review()).unwrap();
        assert!(matches!(
            failing.decide(&c, "c", &console(), approve()),
            Err(PendingError::Audit(_))
        ));
        assert_eq!(failing.state(&c), Some(State::Pending));
    }
}
