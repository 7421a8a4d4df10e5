//! The approval store of one process: approvals in memory, every transition written to the audit
//! sink before it takes effect. Transitions happen one at a time (an async lock held while the
//! record is written, off the async workers); the map of approvals is locked only to read or apply
//! a state, never while the audit record is written. Time comes from `tokio::time`, so tests run
//! with paused time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::watch, time::Instant};

use super::pending::{
    ApprovalEvent, ApprovalStore, Attestation, Awaited, Cancel, Decision, EventKind, Listed, PendingError, Review,
    Reviewer, State, StoredCall, Ttls, Vote, fingerprint, judge, same_secret, vote_of,
};
use crate::audit::{
    ApprovalRecord, Event, Record,
    sink::{AuditSink, Durability},
};

struct Entry {
    session: String,
    call: StoredCall,
    state: watch::Sender<State>,
    /// When the current state expires, for `Pending` and `Approved`.
    deadline: Instant,
    review: Review,
    /// The card reported that it is showing this approval.
    shown: bool,
    /// Creation order, for listing.
    seq: u64,
    /// Approvals so far, while more are needed.
    votes: Vec<Vote>,
    notes: serde_json::Map<String, serde_json::Value>,
}

impl Entry {
    fn listed(&self, id: &str) -> Listed {
        Listed {
            id: id.to_string(),
            hash: self.call.hash.clone(),
            state: self.state.borrow().clone(),
            review: self.review.clone(),
            votes: self.votes.clone(),
            notes: self.notes.clone(),
        }
    }
}

/// What moved an approval, as the audit record's `channel` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    Created,
    Decided(crate::call::Surface),
    /// `pgwarden_await` claimed it to run.
    Claimed,
    Executed,
    /// Its TTL ran out.
    Expired,
    Cancelled,
    Shutdown,
}

impl Cause {
    /// The event notifiers hear of it.
    pub(crate) fn event(self) -> EventKind {
        match self {
            Cause::Created => EventKind::Created,
            Cause::Decided(_) => EventKind::Decided,
            Cause::Claimed => EventKind::Decided,
            Cause::Executed => EventKind::Executed,
            Cause::Expired => EventKind::Expired,
            Cause::Cancelled | Cause::Shutdown => EventKind::Cancelled,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Cause::Created => "created",
            Cause::Decided(s) => s.as_str(),
            Cause::Claimed => "await",
            Cause::Executed => "executed",
            Cause::Expired => "ttl",
            Cause::Cancelled => "cancel",
            Cause::Shutdown => "shutdown",
        }
    }
}

/// A transition about to be recorded.
pub(crate) struct Change<'a> {
    pub(crate) to: State,
    pub(crate) cause: Cause,
    pub(crate) reviewer: Option<&'a Reviewer>,
    /// Why, when not a person's reason (a cancellation).
    pub(crate) note: Option<&'static str>,
    /// A failed record stops it (decisions, claims, creation); expiry and cancellation happen
    /// regardless (they only take authority away).
    pub(crate) must_record: bool,
}

impl Change<'static> {
    /// A change nobody decided (expiry, the end of a run, a cancellation): recorded, but it
    /// happens even when the record cannot be written, since it only takes authority away.
    pub(crate) fn unattended(to: State, cause: Cause, note: Option<&'static str>) -> Change<'static> {
        Change {
            to,
            cause,
            reviewer: None,
            note,
            must_record: false,
        }
    }
}

/// The audit record of `change` to approval `id` (of `session`, for the action `hash`).
pub(crate) fn transition_record(id: &str, session: &str, hash: &str, change: &Change<'_>) -> Record {
    let answer = if change.cause == Cause::Shutdown {
        "abandoned"
    } else {
        change.to.words().0
    };
    let (row_limit, reason) = match &change.to {
        State::Approved(a) => (a.max_rows_affected, a.reason.clone()),
        State::Denied { reason } => (None, reason.clone()),
        _ => (None, change.note.map(str::to_string)),
    };
    Record {
        event: Some(Event::Approval),
        session_id: Some(session.to_string()),
        approval: Some(ApprovalRecord {
            channel: change.cause.as_str().into(),
            answer: answer.into(),
            decided_by: change.reviewer.map(Reviewer::decided_by),
            approval_id: Some(id.to_string()),
            action_hash: Some(hash.to_string()),
            fingerprint: Some(fingerprint(hash)),
            row_limit,
            reason,
            ..ApprovalRecord::default()
        }),
        ..Record::default()
    }
}

/// The audit record of one reviewer's approval when more are needed: `approved 1 of 2`.
pub(crate) fn vote_record(
    id: &str,
    session: &str,
    hash: &str,
    reviewer: &Reviewer,
    vote: &Vote,
    of: (usize, u32),
) -> Record {
    Record {
        event: Some(Event::Approval),
        session_id: Some(session.to_string()),
        approval: Some(ApprovalRecord {
            channel: reviewer.surface.as_str().into(),
            answer: format!("approved {} of {}", of.0, of.1),
            decided_by: Some(reviewer.decided_by()),
            approval_id: Some(id.to_string()),
            action_hash: Some(hash.to_string()),
            fingerprint: Some(fingerprint(hash)),
            row_limit: vote.max_rows_affected,
            reason: vote.reason.clone(),
            ..ApprovalRecord::default()
        }),
        ..Record::default()
    }
}

/// The audit record of a refused attempt to decide.
pub(crate) fn refusal_record(id: Option<&str>, surface: crate::call::Surface, by: &str, why: &str) -> Record {
    Record {
        event: Some(Event::Approval),
        approval: Some(ApprovalRecord {
            channel: surface.as_str().into(),
            answer: "refused".into(),
            decided_by: Some(by.to_string()),
            approval_id: id.map(str::to_string),
            reason: Some(why.to_string()),
            ..ApprovalRecord::default()
        }),
        ..Record::default()
    }
}

/// Whether a refusal is worth a record: someone tried to decide what they may not.
pub(crate) fn audited_refusal(e: &PendingError) -> bool {
    matches!(
        e,
        PendingError::SelfApproval
            | PendingError::NotAReviewer(_)
            | PendingError::WrongChannel(_)
            | PendingError::AlreadyVoted
            // A decision about another version of the action than the one stored.
            | PendingError::StaleHash
    )
}

pub struct MemoryStore {
    ttls: Ttls,
    entries: Mutex<HashMap<String, Entry>>,
    /// Held by the one transition in progress, across its audit write.
    turn: tokio::sync::Mutex<()>,
    audit: Arc<dyn AuditSink>,
    /// Bumped on every change, so surfaces can wait for news.
    generation: watch::Sender<u64>,
    /// Used `requestState` nonces, until they could no longer open anyway.
    nonces: Mutex<HashMap<String, Instant>>,
    events: tokio::sync::broadcast::Sender<ApprovalEvent>,
}

impl MemoryStore {
    pub fn new(ttls: Ttls, audit: Arc<dyn AuditSink>) -> MemoryStore {
        MemoryStore {
            ttls,
            entries: Mutex::new(HashMap::new()),
            turn: tokio::sync::Mutex::new(()),
            audit,
            generation: watch::channel(0).0,
            nonces: Mutex::new(HashMap::new()),
            events: tokio::sync::broadcast::channel(256).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `change` of `id`, then applies it. The caller holds `turn`, so nothing else moves
    /// the approval between its check and this.
    async fn apply(&self, id: &str, change: Change<'_>) -> Result<(), PendingError> {
        let Some(record) = self.record(id, &change) else {
            return Err(PendingError::Unknown(id.into()));
        };
        // Decisions and executions are fsynced before they take effect.
        let durability = if change.to == State::Pending {
            Durability::Written
        } else {
            Durability::Synced
        };
        if let Err(err) = self.audit.append(record, durability).await {
            if change.must_record {
                return Err(PendingError::Audit(err.to_string()));
            }
            tracing::error!(approval = id, "approval transition not recorded: {err}");
        }
        let mut entries = self.lock();
        let e = entries.get_mut(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
        match &change.to {
            State::Approved(_) => e.deadline = Instant::now() + self.ttls.approved_unused,
            State::Pending => e.deadline = Instant::now() + self.ttls.pending,
            _ => {}
        }
        e.state.send_replace(change.to);
        let event = ApprovalEvent {
            kind: change.cause.event(),
            approval: e.listed(id),
            by: change.reviewer.map(Reviewer::decided_by),
        };
        drop(entries);
        self.generation.send_modify(|g| *g += 1);
        let _ = self.events.send(event);
        Ok(())
    }

    /// The audit record of `change`.
    fn record(&self, id: &str, change: &Change<'_>) -> Option<Record> {
        let entries = self.lock();
        let e = entries.get(id)?;
        Some(transition_record(id, &e.session, &e.call.hash, change))
    }

    /// Expires what is past its deadline. The caller holds `turn`.
    async fn sweep(&self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.state.borrow().is_open() && now >= e.deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let change = Change::unattended(State::Expired, Cause::Expired, None);
            let _ = self.apply(&id, change).await;
        }
    }

    /// Expires what is due, then reads.
    async fn swept<T>(&self, read: impl FnOnce(&HashMap<String, Entry>) -> T) -> T {
        let _turn = self.turn.lock().await;
        self.sweep().await;
        read(&self.lock())
    }

    fn state_of(&self, id: &str) -> Option<State> {
        self.lock().get(id).map(|e| e.state.borrow().clone())
    }

    /// One reviewer's approval while more are needed: recorded, then kept; the approval stays
    /// pending. The caller holds `turn`.
    async fn vote(&self, id: &str, reviewer: &Reviewer, decision: &Decision) -> Result<State, PendingError> {
        let Decision::Approve(approved) = decision else {
            return Err(PendingError::AlreadyDecided(id.into()));
        };
        let vote = vote_of(reviewer, approved);
        let record = {
            let entries = self.lock();
            let e = entries.get(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
            vote_record(
                id,
                &e.session,
                &e.call.hash,
                reviewer,
                &vote,
                (e.votes.len() + 1, e.review.team.min_approvals),
            )
        };
        self.audit
            .append(record, Durability::Synced)
            .await
            .map_err(|e| PendingError::Audit(e.to_string()))?;
        let event = {
            let mut entries = self.lock();
            let e = entries.get_mut(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
            e.votes.push(vote);
            ApprovalEvent {
                kind: EventKind::Voted,
                approval: e.listed(id),
                by: Some(reviewer.decided_by()),
            }
        };
        self.generation.send_modify(|g| *g += 1);
        let _ = self.events.send(event);
        Ok(State::Pending)
    }

    /// The compare-and-swap: APPROVED → EXECUTING for one caller. `None` while pending.
    async fn try_claim(&self, id: &str) -> Result<Option<Awaited>, PendingError> {
        let _turn = self.turn.lock().await;
        self.sweep().await;
        let (current, call) = {
            let entries = self.lock();
            let e = entries.get(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
            (e.state.borrow().clone(), e.call.clone())
        };
        Ok(match current {
            State::Pending => None,
            State::Approved(approved) => {
                let change = Change {
                    to: State::Executing,
                    cause: Cause::Claimed,
                    reviewer: None,
                    note: None,
                    must_record: true,
                };
                self.apply(id, change).await?;
                Some(Awaited::Execute {
                    call: Box::new(call),
                    approved,
                })
            }
            other => Some(Awaited::Finished(other)),
        })
    }
}

/// What every decision must pass before the approval's rules judge it: the card's nonce, the
/// surface's level, the hash the reviewer saw, and a state still waiting.
fn check_decision(id: &str, e: &Entry, shown_hash: &str, reviewer: &Reviewer) -> Result<(), PendingError> {
    check_shown(id, &e.review, &e.call.hash, &e.state.borrow(), shown_hash, reviewer)
}

/// [`check_decision`] of an approval `id` for the action `hash`, as any store keeps it.
pub(crate) fn check_shown(
    id: &str,
    review: &Review,
    hash: &str,
    state: &State,
    shown_hash: &str,
    reviewer: &Reviewer,
) -> Result<(), PendingError> {
    if let Attestation::Host { nonce } = &reviewer.attested_by {
        check_card(review, nonce)?;
    }
    check_level(review.level, reviewer)?;
    if hash != shown_hash {
        return Err(PendingError::StaleHash);
    }
    if *state != State::Pending {
        return Err(PendingError::AlreadyDecided(id.into()));
    }
    Ok(())
}

/// The reviewer's surface is strong enough for the approval's level.
pub(crate) fn check_level(level: crate::call::Level, reviewer: &Reviewer) -> Result<(), PendingError> {
    use crate::call::Level;
    if reviewer.surface.level() >= level {
        return Ok(());
    }
    Err(PendingError::WrongChannel(match level {
        Level::Team => {
            "this approval needs a verified reviewer: decide it in the pgwarden review app, the API or Slack".into()
        }
        _ => "the policy needs a local approval for this action: decide it in the pgwarden review window".into(),
    }))
}

fn check_nonce(e: &Entry, nonce: &str) -> Result<(), PendingError> {
    check_card(&e.review, nonce)
}

/// The card proves itself with the approval's nonce, in any store.
pub(crate) fn check_card(review: &Review, nonce: &str) -> Result<(), PendingError> {
    if same_secret(nonce, &review.nonce) {
        Ok(())
    } else {
        Err(PendingError::WrongChannel(
            "the card's proof does not match this approval".into(),
        ))
    }
}

#[async_trait]
impl ApprovalStore for MemoryStore {
    fn ttls(&self) -> Ttls {
        self.ttls
    }

    async fn open_or_reuse(
        &self,
        session: &str,
        call: StoredCall,
        review: Review,
    ) -> Result<(String, Review), PendingError> {
        let _turn = self.turn.lock().await;
        self.sweep().await;
        let id = {
            let mut entries = self.lock();
            if let Some((id, e)) = entries
                .iter()
                .find(|(_, e)| e.session == session && e.call.hash == call.hash && *e.state.borrow() == State::Pending)
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
            // Nobody knows the id, and every reader waits for `turn`, until its creation is
            // recorded; if it cannot be, it goes again.
            let entry = Entry {
                session: session.into(),
                call,
                state: watch::channel(State::Pending).0,
                deadline: Instant::now() + self.ttls.pending,
                review,
                shown: false,
                seq,
                votes: vec![],
                notes: serde_json::Map::new(),
            };
            entries.insert(id.clone(), entry);
            id
        };
        let change = Change {
            to: State::Pending,
            cause: Cause::Created,
            reviewer: None,
            note: None,
            must_record: true,
        };
        if let Err(e) = self.apply(&id, change).await {
            self.lock().remove(&id);
            return Err(e);
        }
        let kept = self.lock().get(&id).map(|e| e.review.clone());
        kept.map(|r| (id.clone(), r)).ok_or(PendingError::Unknown(id))
    }

    async fn is_pending(&self, session: &str, hash: &str) -> bool {
        self.swept(|entries| {
            entries
                .values()
                .any(|e| e.session == session && e.call.hash == hash && *e.state.borrow() == State::Pending)
        })
        .await
    }

    async fn decide(
        &self,
        id: &str,
        shown_hash: &str,
        reviewer: &Reviewer,
        decision: Decision,
    ) -> Result<State, PendingError> {
        let _turn = self.turn.lock().await;
        self.sweep().await;
        let judged = {
            let entries = self.lock();
            let e = entries.get(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
            check_decision(id, e, shown_hash, reviewer).and_then(|()| judge(&e.review, &e.votes, reviewer, &decision))
        };
        let next = match judged {
            Ok(Some(next)) => next,
            Ok(None) => return self.vote(id, reviewer, &decision).await,
            Err(e) => {
                if audited_refusal(&e) {
                    self.refused(Some(id), reviewer.surface, &reviewer.decided_by(), &e.to_string())
                        .await;
                }
                return Err(e);
            }
        };
        let change = Change {
            to: next.clone(),
            cause: Cause::Decided(reviewer.surface),
            reviewer: Some(reviewer),
            note: None,
            must_record: true,
        };
        self.apply(id, change).await?;
        Ok(next)
    }

    async fn wait(&self, id: &str, session: &str, budget: Duration) -> Result<Awaited, PendingError> {
        let mut rx = {
            let entries = self.lock();
            let e = entries.get(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
            if e.session != session {
                return Err(PendingError::NotYours(id.into()));
            }
            e.state.subscribe()
        };
        let until = Instant::now() + budget;
        loop {
            if let Some(done) = self.try_claim(id).await? {
                return Ok(done);
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Ok(Awaited::Finished(State::Expired));
                    }
                }
                _ = tokio::time::sleep_until(until) => {
                    return Ok(self.try_claim(id).await?.unwrap_or(Awaited::StillPending));
                }
            }
        }
    }

    async fn finish(&self, id: &str, ok: bool) {
        let _turn = self.turn.lock().await;
        if self.state_of(id) == Some(State::Executing) {
            let change = Change::unattended(State::Done { ok }, Cause::Executed, None);
            let _ = self.apply(id, change).await;
        }
    }

    async fn cancel(&self, id: &str, why: Cancel) {
        let _turn = self.turn.lock().await;
        if self.state_of(id).is_some_and(|s| s.is_open()) {
            let change = Change::unattended(State::Cancelled, Cause::Cancelled, Some(why.as_str()));
            let _ = self.apply(id, change).await;
        }
    }

    async fn abandon_open(&self) {
        let _turn = self.turn.lock().await;
        let open: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.state.borrow().is_open())
            .map(|(id, _)| id.clone())
            .collect();
        for id in open {
            let change = Change::unattended(State::Cancelled, Cause::Shutdown, None);
            let _ = self.apply(&id, change).await;
        }
    }

    async fn list(&self) -> Vec<Listed> {
        self.swept(|entries| {
            let mut all: Vec<(u64, Listed)> = entries.iter().map(|(id, e)| (e.seq, e.listed(id))).collect();
            all.sort_by_key(|e| std::cmp::Reverse(e.0));
            all.into_iter().map(|(_, l)| l).collect()
        })
        .await
    }

    async fn state(&self, id: &str) -> Option<State> {
        self.swept(|entries| entries.get(id).map(|e| e.state.borrow().clone()))
            .await
    }

    async fn expire_due(&self) {
        let _turn = self.turn.lock().await;
        self.sweep().await;
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    async fn state_with_nonce(&self, id: &str, nonce: &str) -> Result<State, PendingError> {
        self.swept(|entries| {
            let e = entries.get(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
            check_nonce(e, nonce)?;
            Ok(e.state.borrow().clone())
        })
        .await
    }

    async fn mark_shown(&self, id: &str, nonce: &str) -> Result<(), PendingError> {
        let mut entries = self.lock();
        let e = entries.get_mut(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
        check_nonce(e, nonce)?;
        e.shown = true;
        Ok(())
    }

    async fn was_shown(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|e| e.shown)
    }

    async fn use_nonce(&self, nonce: &str, ttl: Duration) -> bool {
        let mut used = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        used.retain(|_, until| *until > now);
        if used.contains_key(nonce) {
            return false;
        }
        used.insert(nonce.to_string(), now + ttl);
        true
    }

    async fn get(&self, id: &str) -> Option<Listed> {
        self.swept(|entries| entries.get(id).map(|e| e.listed(id))).await
    }

    async fn annotate(&self, id: &str, key: &str, value: serde_json::Value) -> Result<(), PendingError> {
        let mut entries = self.lock();
        let e = entries.get_mut(id).ok_or_else(|| PendingError::Unknown(id.into()))?;
        e.notes.insert(key.to_string(), value);
        Ok(())
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<ApprovalEvent> {
        self.events.subscribe()
    }

    async fn refused(&self, id: Option<&str>, surface: crate::call::Surface, by: &str, why: &str) {
        let mut record = refusal_record(id, surface, by, why);
        record.session_id = id.and_then(|id| self.lock().get(id).map(|e| e.session.clone()));
        if let Err(e) = self.audit.append(record, Durability::Written).await {
            tracing::error!("a refused decision was not recorded: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        approval::{
            Approved,
            pending::{Attestation, Decision, StoredCall},
            surface::card_reviewer,
        },
        audit::AuditError,
        call::{Action, Caller, Level, Surface, Tool},
    };

    use super::*;

    /// A sink that keeps `state channel` lines, or refuses every record but the creations.
    struct Kept {
        lines: Mutex<Vec<String>>,
        only_creations: bool,
    }

    #[async_trait]
    impl AuditSink for Kept {
        async fn append(&self, record: Record, _: Durability) -> Result<Record, AuditError> {
            let a = record.approval.clone().unwrap_or_default();
            if self.only_creations && a.answer != "pending" {
                return Err(AuditError::Stopped("disk full".into()));
            }
            self.lines.lock().unwrap().push(format!("{} {}", a.answer, a.channel));
            Ok(record)
        }
    }

    fn store_with(only_creations: bool) -> (MemoryStore, Arc<Kept>) {
        let kept = Arc::new(Kept {
            lines: Mutex::new(vec![]),
            only_creations,
        });
        (MemoryStore::new(Ttls::default(), kept.clone()), kept)
    }

    fn store() -> (MemoryStore, Arc<Kept>) {
        store_with(false)
    }

    fn review() -> Review {
        Review {
            packet: serde_json::json!({}),
            created_at: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
            level: Level::Client,
            nonce: "n0nce".into(),
            requester: None,
            requester_aliases: vec![],
            team: crate::policy::Reviewers::default(),
        }
    }

    fn call(hash: &str) -> StoredCall {
        StoredCall {
            call: serde_json::json!({ "tool": "query" }),
            action: Action {
                tool: Tool::Query,
                sql: Some("UPDATE t SET x = 1".into()),
                intent: None,
                caller: Caller::default(),
                database: None,
                database_at: None,
            },
            hash: hash.into(),
        }
    }

    async fn create(store: &MemoryStore, session: &str, hash: &str) -> Result<String, PendingError> {
        store
            .open_or_reuse(session, call(hash), review())
            .await
            .map(|(id, _)| id)
    }

    fn console() -> Reviewer {
        Reviewer::attested(Surface::Console, "alice", Attestation::Os)
    }

    fn approve() -> Decision {
        Decision::Approve(Approved::default())
    }

    #[tokio::test(start_paused = true)]
    async fn fifty_concurrent_awaits_execute_once() {
        let store = Arc::new(store().0);
        let id = create(&store, "s", "h").await.unwrap();
        let waits: Vec<_> = (0..50)
            .map(|_| {
                let store = store.clone();
                let id = id.clone();
                tokio::spawn(async move { store.wait(&id, "s", Duration::from_secs(40)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        store.decide(&id, "h", &console(), approve()).await.unwrap();
        let mut executions = 0;
        for w in waits {
            if let Awaited::Execute { .. } = w.await.unwrap().unwrap() {
                executions += 1;
            }
        }
        assert_eq!(executions, 1);
        assert_eq!(store.state(&id).await, Some(State::Executing));
        store.finish(&id, true).await;
        assert_eq!(store.state(&id).await, Some(State::Done { ok: true }));
        assert_eq!(
            store.decide(&id, "h", &console(), approve()).await,
            Err(PendingError::AlreadyDecided(id.clone()))
        );
    }

    /// Approvals still open at shutdown would end the trail on `pending`.
    #[tokio::test]
    async fn open_approvals_are_recorded_abandoned_at_shutdown() {
        let (store, kept) = store();
        let a = create(&store, "s", "a").await.unwrap();
        let b = create(&store, "s", "b").await.unwrap();
        store.decide(&b, "b", &console(), approve()).await.unwrap();
        let c = create(&store, "s", "c").await.unwrap();
        let deny = Decision::parse("deny", None, None).unwrap();
        store.decide(&c, "c", &console(), deny).await.unwrap();
        store.abandon_open().await;
        for id in [&a, &b] {
            assert_eq!(store.state(id).await, Some(State::Cancelled));
        }
        assert!(matches!(store.state(&c).await, Some(State::Denied { .. })));
        let lines = kept.lines.lock().unwrap().clone();
        let abandoned = lines.iter().filter(|t| *t == "abandoned shutdown").count();
        assert_eq!(abandoned, 2, "{lines:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn ttls_expire_pending_and_unclaimed_approvals() {
        let (store, kept) = store();
        let a = create(&store, "s", "a").await.unwrap();
        tokio::time::advance(Duration::from_secs(601)).await;
        store.expire_due().await;
        assert_eq!(
            kept.lines.lock().unwrap().last().map(String::as_str),
            Some("expired ttl"),
            "recorded when it happens"
        );
        assert_eq!(store.state(&a).await, Some(State::Expired));
        assert_eq!(
            store.decide(&a, "a", &console(), approve()).await,
            Err(PendingError::AlreadyDecided(a.clone()))
        );
        let b = create(&store, "s", "b").await.unwrap();
        store.decide(&b, "b", &console(), approve()).await.unwrap();
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(
            store.wait(&b, "s", Duration::from_secs(1)).await,
            Ok(Awaited::Finished(State::Expired))
        );
        // Still pending after the wait budget: the model is told so.
        let c = create(&store, "s", "c").await.unwrap();
        assert_eq!(
            store.wait(&c, "s", Duration::from_secs(40)).await,
            Ok(Awaited::StillPending)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn binding_identity_caps_and_denials() {
        let (store, _) = store();
        let a = create(&store, "s", "a").await.unwrap();
        assert_eq!(
            create(&store, "s", "a").await.unwrap(),
            a,
            "an identical pending action reuses its id"
        );
        assert_ne!(create(&store, "other", "a").await.unwrap(), a, "per session");
        assert_eq!(
            store.decide(&a, "a-stale", &console(), approve()).await,
            Err(PendingError::StaleHash)
        );
        assert_eq!(
            store.wait(&a, "other", Duration::from_secs(1)).await,
            Err(PendingError::NotYours(a.clone()))
        );
        create(&store, "s", "b").await.unwrap();
        create(&store, "s", "c").await.unwrap();
        assert_eq!(create(&store, "s", "d").await, Err(PendingError::TooMany(3)));
        let deny = Decision::Deny {
            reason: Some("no".into()),
        };
        store.decide(&a, "a", &console(), deny).await.unwrap();
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
    async fn card_needs_its_nonce_and_level_and_every_transition_is_recorded_first() {
        let (store, kept) = store();
        let a = create(&store, "s", "a").await.unwrap();
        assert!(matches!(
            store.decide(&a, "a", &card_reviewer("guess".into()), approve()).await,
            Err(PendingError::WrongChannel(_))
        ));
        assert!(store.mark_shown(&a, "guess").await.is_err());
        assert!(!store.was_shown(&a).await);
        store.mark_shown(&a, "n0nce").await.unwrap();
        assert!(store.was_shown(&a).await);
        let card = card_reviewer("n0nce".into());
        store.decide(&a, "a", &card, approve()).await.unwrap();
        let Awaited::Execute { .. } = store.wait(&a, "s", Duration::from_secs(1)).await.unwrap() else {
            panic!("approved by the card")
        };
        store.finish(&a, true).await;
        let local = Review {
            level: Level::Local,
            ..review()
        };
        let (critical, _) = store.open_or_reuse("s", call("b"), local).await.unwrap();
        assert!(matches!(
            store.decide(&critical, "b", &card, approve()).await,
            Err(PendingError::WrongChannel(m)) if m.contains("local approval")
        ));
        store.cancel(&critical, Cancel::CallCancelled).await;
        assert_eq!(
            *kept.lines.lock().unwrap(),
            [
                "pending created",
                "refused mcp_app",
                "approved mcp_app",
                "executing await",
                "done executed",
                "pending created",
                "refused mcp_app",
                "cancelled cancel",
            ]
        );
        // A decision that cannot be recorded does not happen, nor a creation.
        let (failing, _) = store_with(true);
        let c = create(&failing, "s", "c").await.unwrap();
        assert!(matches!(
            failing.decide(&c, "c", &console(), approve()).await,
            Err(PendingError::Audit(_))
        ));
        assert_eq!(failing.state(&c).await, Some(State::Pending));
    }

    /// Team rules: the requester never approves their own call, only named reviewers decide,
    /// `min_approvals` needs that many different people (the strictest grant wins), one denial ends
    /// it, and every refusal is recorded.
    #[tokio::test(start_paused = true)]
    async fn four_eyes_reviewers_and_quorum() {
        let (store, kept) = store();
        let team = Review {
            level: Level::Team,
            requester: Some("alice".into()),
            requester_aliases: vec!["alice@example.com".into()],
            team: crate::policy::Reviewers {
                reviewers: vec!["group:dba".into(), "carol".into()],
                min_approvals: 2,
                notify: vec![],
            },
            ..review()
        };
        let (id, _) = store
            .open_or_reuse("principal:alice", call("h"), team.clone())
            .await
            .unwrap();
        let verified = |p: &str, groups: &[&str]| {
            Reviewer::verified(
                Surface::Api,
                p,
                None,
                groups.iter().map(|g| g.to_string()).collect(),
                "token t",
            )
        };
        let limit = |n| {
            Decision::Approve(Approved {
                max_rows_affected: Some(n),
                ..Approved::default()
            })
        };
        assert_eq!(
            store.decide(&id, "h", &verified("alice", &["dba"]), approve()).await,
            Err(PendingError::SelfApproval)
        );
        assert!(matches!(
            store.decide(&id, "h", &verified("mallory", &["dev"]), approve()).await,
            Err(PendingError::NotAReviewer(_))
        ));
        assert!(matches!(
            store.decide(&id, "h", &console(), approve()).await,
            Err(PendingError::WrongChannel(_))
        ));
        assert_eq!(
            store.decide(&id, "h", &verified("bob", &["dba"]), limit(10)).await,
            Ok(State::Pending)
        );
        assert_eq!(
            store.decide(&id, "h", &verified("bob", &["dba"]), approve()).await,
            Err(PendingError::AlreadyVoted),
            "one person is one approval"
        );
        // Another surface's spelling of the same person (Slack's lookup lower-cases addresses).
        assert_eq!(
            store.decide(&id, "h", &verified(" Alice", &["dba"]), approve()).await,
            Err(PendingError::SelfApproval),
            "the requester under another spelling"
        );
        // One person, two names: `sub` to the OpenID provider, an e-mail address to Slack.
        assert_eq!(
            store
                .decide(&id, "h", &verified("Alice@Example.com", &["dba"]), approve())
                .await,
            Err(PendingError::SelfApproval),
            "the requester by the e-mail her identity carried"
        );
        let by_sub = Reviewer::verified(
            Surface::Web,
            "8d7f-sub",
            Some("alice@example.com"),
            vec!["dba".into()],
            "oidc i",
        );
        assert_eq!(
            store.decide(&id, "h", &by_sub, approve()).await,
            Err(PendingError::SelfApproval),
            "the requester signed in under another subject with her address"
        );
        assert_eq!(
            store.decide(&id, "h", &verified("BOB ", &["dba"]), approve()).await,
            Err(PendingError::AlreadyVoted),
            "one person under another spelling is still one approval"
        );
        assert_eq!(store.get(&id).await.unwrap().votes.len(), 1);
        let done = store
            .decide(&id, "h", &verified("carol", &[]), limit(50))
            .await
            .unwrap();
        assert_eq!(
            done,
            State::Approved(Approved {
                max_rows_affected: Some(10),
                ..Approved::default()
            }),
            "the strictest limit"
        );
        let (other, _) = store.open_or_reuse("principal:alice", call("i"), team).await.unwrap();
        let deny = Decision::Deny {
            reason: Some("no".into()),
        };
        assert!(matches!(
            store.decide(&other, "i", &verified("bob", &["dba"]), deny).await,
            Ok(State::Denied { .. })
        ));
        let lines = kept.lines.lock().unwrap().clone();
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("refused")).count(),
            8,
            "{lines:?}"
        );
        assert!(lines.contains(&"approved 1 of 2 api".to_string()), "{lines:?}");
    }

    /// A `requestState` nonce is taken once, and forgotten only after it could no longer open.
    #[tokio::test(start_paused = true)]
    async fn a_nonce_is_used_once() {
        let (store, _) = store();
        assert!(store.use_nonce("n1", Duration::from_secs(60)).await);
        assert!(!store.use_nonce("n1", Duration::from_secs(60)).await, "a replay");
        assert!(store.use_nonce("n2", Duration::from_secs(60)).await);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(
            !store.use_nonce("n1", Duration::from_secs(60)).await,
            "still remembered"
        );
    }

    /// A decision's audit record is written while no thread holds the store's map: a reader is
    /// answered while a slow sink is still writing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_do_not_wait_on_the_audit_write_behind_a_lock() {
        struct Slow(tokio::sync::Notify);
        #[async_trait]
        impl AuditSink for Slow {
            async fn append(&self, record: Record, _: Durability) -> Result<Record, AuditError> {
                if record.approval.as_ref().is_some_and(|a| a.answer == "approved") {
                    self.0.notified().await;
                }
                Ok(record)
            }
        }
        let slow = Arc::new(Slow(tokio::sync::Notify::new()));
        let store = Arc::new(MemoryStore::new(Ttls::default(), slow.clone()));
        let (id, _) = store.open_or_reuse("s", call("h"), review()).await.unwrap();
        let deciding = {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move { store.decide(&id, "h", &console(), approve()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The map is free: a surface that only peeks (the card's ready flag) answers at once.
        assert!(!store.was_shown(&id).await);
        assert!(!deciding.is_finished(), "the decision waits for its record");
        slow.0.notify_one();
        assert!(matches!(deciding.await.unwrap(), Ok(State::Approved(_))));
        assert_eq!(store.state(&id).await, Some(State::Approved(Approved::default())));
    }

    /// Red team: a claim whose record cannot be written does not happen (the approval stays
    /// approved, nothing runs), and a later await claims it once; a decision arriving when the
    /// pending TTL has run out is refused, even before the sweeper ran.
    #[tokio::test(start_paused = true)]
    async fn an_unrecorded_claim_runs_nothing_and_a_decision_at_the_deadline_is_refused() {
        struct FailClaims(std::sync::atomic::AtomicBool);
        #[async_trait]
        impl AuditSink for FailClaims {
            async fn append(&self, record: Record, _: Durability) -> Result<Record, AuditError> {
                let a = record.approval.clone().unwrap_or_default();
                if a.answer == "executing" && self.0.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(AuditError::Stopped("disk full".into()));
                }
                Ok(record)
            }
        }
        let sink = Arc::new(FailClaims(std::sync::atomic::AtomicBool::new(true)));
        let failing = MemoryStore::new(Ttls::default(), sink.clone());
        let id = create(&failing, "s", "h").await.unwrap();
        failing.decide(&id, "h", &console(), approve()).await.unwrap();
        assert!(matches!(
            failing.wait(&id, "s", Duration::from_secs(1)).await,
            Err(PendingError::Audit(_))
        ));
        assert_eq!(failing.state(&id).await, Some(State::Approved(Approved::default())));
        sink.0.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            failing.wait(&id, "s", Duration::from_secs(1)).await,
            Ok(Awaited::Execute { .. })
        ));
        assert!(matches!(
            failing.wait(&id, "s", Duration::from_secs(1)).await,
            Ok(Awaited::Finished(State::Executing))
        ));

        let (store, _) = store();
        let late = create(&store, "s", "l").await.unwrap();
        tokio::time::advance(Ttls::default().pending).await;
        assert_eq!(
            store.decide(&late, "l", &console(), approve()).await,
            Err(PendingError::AlreadyDecided(late.clone()))
        );
        assert_eq!(store.state(&late).await, Some(State::Expired));
    }
}
