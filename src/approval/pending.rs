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

struct Entry<A> {
    session: String,
    hash: String,
    action: A,
    state: watch::Sender<State>,
    /// When the current state expires, for `Pending` and `Approved`.
    deadline: Instant,
}

/// The approvals of this process. `A` is the stored action that runs once approved.
pub struct ApprovalStore<A> {
    ttls: Ttls,
    entries: Mutex<HashMap<String, Entry<A>>>,
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
    pub fn new(ttls: Ttls) -> ApprovalStore<A> {
        ApprovalStore {
            ttls,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<A>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Expires what is past its deadline (called on every access).
    fn sweep(&self, entries: &mut HashMap<String, Entry<A>>) {
        let now = Instant::now();
        for e in entries.values_mut() {
            let current = e.state.borrow().clone();
            if matches!(current, State::Pending | State::Approved { .. }) && now >= e.deadline {
                e.state.send_replace(State::Expired);
            }
        }
    }

    /// A new pending approval, or the id of an identical one still pending in the same session.
    pub fn create(&self, session: &str, hash: &str, action: A) -> Result<String, PendingError> {
        let mut entries = self.lock();
        self.sweep(&mut entries);
        if let Some((id, _)) = entries
            .iter()
            .find(|(_, e)| e.session == session && e.hash == hash && *e.state.borrow() == State::Pending)
        {
            return Ok(id.clone());
        }
        let open = entries
            .values()
            .filter(|e| e.session == session && *e.state.borrow() == State::Pending)
            .count();
        if open >= self.ttls.max_open_per_session {
            return Err(PendingError::TooMany(open));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (state, _) = watch::channel(State::Pending);
        entries.insert(
            id.clone(),
            Entry {
                session: session.into(),
                hash: hash.into(),
                action,
                state,
                deadline: Instant::now() + self.ttls.pending,
            },
        );
        Ok(id)
    }

    /// A person's decision, carrying the hash of what they were shown. Only channel handlers call this.
    pub fn decide(&self, id: &str, shown_hash: &str, decision: Decision) -> Result<State, PendingError> {
        let mut entries = self.lock();
        self.sweep(&mut entries);
        let e = entries.get_mut(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
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
            } => {
                e.deadline = Instant::now() + self.ttls.approved_unused;
                State::Approved {
                    dry_run,
                    max_rows_affected,
                    reason,
                }
            }
            Decision::Deny { reason } => State::Denied { reason },
        };
        e.state.send_replace(next.clone());
        Ok(next)
    }

    /// Cancels a pending (or approved, unclaimed) approval.
    pub fn cancel(&self, id: &str) {
        let mut entries = self.lock();
        if let Some(e) = entries.get_mut(id)
            && !e.state.borrow().is_terminal()
            && *e.state.borrow() != State::Executing
        {
            e.state.send_replace(State::Cancelled);
        }
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
                e.state.send_replace(State::Executing);
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
        if let Some(e) = self.lock().get_mut(id)
            && *e.state.borrow() == State::Executing
        {
            e.state.send_replace(State::Done { ok });
        }
    }

    /// The current state, for the console and the model.
    pub fn state(&self, id: &str) -> Option<State> {
        let mut entries = self.lock();
        self.sweep(&mut entries);
        entries.get(id).map(|e| e.state.borrow().clone())
    }
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

    fn approve() -> Decision {
        Decision::Approve {
            dry_run: false,
            max_rows_affected: None,
            reason: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fifty_concurrent_awaits_execute_once() {
        let store = Arc::new(ApprovalStore::<String>::new(Ttls::default()));
        let id = store.create("s", "h", "UPDATE t SET x = 1".into()).unwrap();
        let waits: Vec<_> = (0..50)
            .map(|_| {
                let store = store.clone();
                let id = id.clone();
                tokio::spawn(async move { store.wait(&id, "s", Duration::from_secs(40)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        store.decide(&id, "h", approve()).unwrap();
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
            store.decide(&id, "h", approve()),
            Err(PendingError::AlreadyDecided(id.clone()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ttls_expire_pending_and_unclaimed_approvals() {
        let store = ApprovalStore::<u8>::new(Ttls::default());
        let a = store.create("s", "a", 1).unwrap();
        tokio::time::advance(Duration::from_secs(601)).await;
        assert_eq!(store.state(&a), Some(State::Expired));
        assert_eq!(
            store.decide(&a, "a", approve()),
            Err(PendingError::AlreadyDecided(a.clone()))
        );
        let b = store.create("s", "b", 2).unwrap();
        store.decide(&b, "b", approve()).unwrap();
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(
            store.wait(&b, "s", Duration::from_secs(1)).await,
            Ok(Awaited::Finished(State::Expired))
        );
        // Still pending after the wait budget: the model is told so.
        let c = store.create("s", "c", 3).unwrap();
        assert_eq!(
            store.wait(&c, "s", Duration::from_secs(40)).await,
            Ok(Awaited::StillPending)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn binding_identity_caps_and_denials() {
        let store = ApprovalStore::<u8>::new(Ttls::default());
        let a = store.create("s", "a", 1).unwrap();
        assert_eq!(
            store.create("s", "a", 1).unwrap(),
            a,
            "an identical pending action reuses its id"
        );
        assert_ne!(store.create("other", "a", 1).unwrap(), a, "per session");
        assert_eq!(store.decide(&a, "a-stale", approve()), Err(PendingError::StaleHash));
        assert_eq!(
            store.wait(&a, "other", Duration::from_secs(1)).await,
            Err(PendingError::NotYours(a.clone()))
        );
        store.create("s", "b", 2).unwrap();
        store.create("s", "c", 3).unwrap();
        assert_eq!(store.create("s", "d", 4), Err(PendingError::TooMany(3)));
        store
            .decide(
                &a,
                "a",
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
}
