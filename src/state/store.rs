//! The approval store on the state database: every replica sees the same approvals. Each change is
//! one transaction — the row moved by a conditional `UPDATE`, its audit record appended to the
//! shared chain, a `NOTIFY` — committed together or not at all. Whether an approval is still live
//! is decided by the database's clock in the statement that reads or moves it (`deadline > now()`),
//! so nothing depends on a sweep having run; the claim that runs an approved call is a single
//! `UPDATE … WHERE state = 'approved' AND deadline > now() RETURNING`, which exactly one replica wins.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};
use tokio_postgres::Transaction;

use super::{CHANNEL, StateDb, chain};
use crate::{
    approval::{
        Approved,
        memory::{Cause, Change, audited_refusal, check_shown, refusal_record, transition_record, vote_record},
        pending::{
            ApprovalEvent, ApprovalStore, Awaited, Cancel, Decision, EventKind, Listed, PendingError, Review, Reviewer,
            State, StoredCall, Ttls, Vote, judge, same_secret, vote_of,
        },
    },
    audit::Record,
};

/// The columns every read takes, in [`Row::from`]'s order.
const COLUMNS: &str = "id, owner, action_hash, call, review, state, approved, reason, votes, notes, shown, \
     deadline > now() AS live, deadline";

/// One approval row.
#[derive(Clone)]
struct Row {
    id: String,
    owner: String,
    hash: String,
    call: StoredCall,
    review: Review,
    state: State,
    votes: Vec<Vote>,
    notes: serde_json::Map<String, serde_json::Value>,
    shown: bool,
    /// Its deadline has not passed (by the database's clock).
    live: bool,
}

impl Row {
    fn from(r: &tokio_postgres::Row) -> Result<Row, PendingError> {
        let json = |i: usize| -> Result<serde_json::Value, PendingError> { r.try_get(i).map_err(store) };
        let word: String = r.try_get(5).map_err(store)?;
        let approved: Option<serde_json::Value> = r.try_get(6).map_err(store)?;
        let reason: Option<String> = r.try_get(7).map_err(store)?;
        let state = match word.as_str() {
            "pending" => State::Pending,
            "approved" => State::Approved(approved.map(parse_json::<Approved>).transpose()?.unwrap_or_default()),
            "denied" => State::Denied { reason },
            "expired" => State::Expired,
            "cancelled" => State::Cancelled,
            "executing" => State::Executing,
            "done" => State::Done { ok: true },
            "failed" => State::Done { ok: false },
            other => {
                return Err(PendingError::Store(format!(
                    "unknown approval state `{other}` in the state database"
                )));
            }
        };
        let mut review: Review = parse_json(json(4)?)?;
        // The deadline moves when an approval is approved (it must then run soon).
        review.expires_at = r.try_get(12).map_err(store)?;
        Ok(Row {
            id: r.try_get(0).map_err(store)?,
            owner: r.try_get(1).map_err(store)?,
            hash: r.try_get(2).map_err(store)?,
            call: parse_json(json(3)?)?,
            review,
            state,
            votes: parse_json(json(8)?)?,
            notes: parse_json(json(9)?)?,
            shown: r.try_get(10).map_err(store)?,
            live: r.try_get(11).map_err(store)?,
        })
    }

    /// Its state as of now: an open approval past its deadline is expired, recorded or not.
    fn current(&self) -> State {
        if self.state.is_open() && !self.live {
            State::Expired
        } else {
            self.state.clone()
        }
    }

    /// Expired by the clock, but not yet recorded as such.
    fn lapsed(&self) -> bool {
        self.state.is_open() && !self.live
    }

    fn listed(&self) -> Listed {
        Listed {
            id: self.id.clone(),
            hash: self.hash.clone(),
            state: self.current(),
            review: self.review.clone(),
            votes: self.votes.clone(),
            notes: self.notes.clone(),
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, PendingError> {
    serde_json::from_value(v).map_err(store)
}

/// A failure of the state database: the cause goes to the log, the caller hears that nothing changed.
fn store<E: std::error::Error>(e: E) -> PendingError {
    let cause = super::chain_of(&e);
    tracing::error!("state database: {cause}");
    PendingError::Store(short(&cause))
}

fn audit<E: std::error::Error>(e: E) -> PendingError {
    let cause = super::chain_of(&e);
    tracing::error!("state database: appending to the audit chain: {cause}");
    PendingError::Audit(short(&cause))
}

/// The first words of a cause, without the statement or values Postgres may quote.
fn short(cause: &str) -> String {
    let first = cause.lines().next().unwrap_or_default();
    first.chars().take(200).collect()
}

/// The word a state is stored as.
fn word(state: &State) -> &'static str {
    match state {
        State::Pending => "pending",
        State::Approved(_) => "approved",
        State::Denied { .. } => "denied",
        State::Expired => "expired",
        State::Cancelled => "cancelled",
        State::Executing => "executing",
        State::Done { ok: true } => "done",
        State::Done { ok: false } => "failed",
    }
}

pub struct PgStore {
    db: Arc<StateDb>,
    ttls: Ttls,
    /// Bumped on every change any replica announces (LISTEN), and on this replica's own.
    generation: watch::Sender<u64>,
    events: broadcast::Sender<ApprovalEvent>,
}

impl PgStore {
    /// The store on `db`, listening for other replicas' changes until it is dropped.
    pub fn start(db: Arc<StateDb>, ttls: Ttls) -> Arc<PgStore> {
        let s = Arc::new(PgStore {
            db,
            ttls,
            generation: watch::channel(0).0,
            events: broadcast::channel(256).0,
        });
        tokio::spawn(listen(Arc::downgrade(&s)));
        s
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, PendingError> {
        self.db.pool.get().await.map_err(store)
    }

    /// The row of `id`, locked for this transaction.
    async fn locked(&self, tx: &Transaction<'_>, id: &str) -> Result<Row, PendingError> {
        let row = tx
            .query_opt(
                &format!("SELECT {COLUMNS} FROM pgwarden.approvals WHERE id = $1 FOR UPDATE"),
                &[&id],
            )
            .await
            .map_err(store)?
            .ok_or_else(|| PendingError::Unknown(id.into()))?;
        Row::from(&row)
    }

    async fn read(&self, id: &str) -> Result<Option<Row>, PendingError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM pgwarden.approvals WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(store)?;
        row.as_ref().map(Row::from).transpose()
    }

    /// Appends `record` and announces `id`, in `tx`.
    async fn record(&self, tx: &Transaction<'_>, id: &str, record: Record) -> Result<(), PendingError> {
        chain::append(tx, self.db.key.as_deref(), record).await.map_err(audit)?;
        // The statement, not `pg_notify()`: hardened clusters revoke the function from PUBLIC.
        let _ = id;
        tx.batch_execute(&format!("NOTIFY {CHANNEL}")).await.map_err(store)?;
        Ok(())
    }

    /// Moves `row` to `change.to` and records it, in `tx`; the row as it is afterwards.
    async fn transition(&self, tx: &Transaction<'_>, row: &Row, change: &Change<'_>) -> Result<Row, PendingError> {
        let (approved, reason) = match &change.to {
            State::Approved(a) => (Some(serde_json::to_value(a).map_err(store)?), None),
            State::Denied { reason } => (None, reason.clone()),
            State::Cancelled => (None, change.note.map(str::to_string)),
            _ => (None, None),
        };
        let keep_approved = matches!(change.to, State::Executing | State::Done { .. });
        let extend = match change.to {
            State::Approved(_) => Some(self.ttls.approved_unused.as_secs_f64()),
            _ => None,
        };
        let updated = tx
            .query_one(
                &format!(
                    "UPDATE pgwarden.approvals SET state = $2, \
                       approved = CASE WHEN $5 THEN approved ELSE $3 END, reason = $4, \
                       deadline = CASE WHEN $6::float8 IS NULL THEN deadline ELSE now() + make_interval(secs => $6) END \
                     WHERE id = $1 RETURNING {COLUMNS}"
                ),
                &[&row.id, &word(&change.to), &approved, &reason, &keep_approved, &extend],
            )
            .await
            .map_err(store)?;
        let record = transition_record(&row.id, &row.owner, &row.hash, change);
        self.record(tx, &row.id, record).await?;
        Row::from(&updated)
    }

    /// Records that `row` lapsed (its deadline passed), in `tx`.
    async fn expire(&self, tx: &Transaction<'_>, row: &Row) -> Result<Row, PendingError> {
        let change = Change {
            to: State::Expired,
            cause: Cause::Expired,
            reviewer: None,
            note: None,
            must_record: false,
        };
        self.transition(tx, row, &change).await
    }

    /// After a commit: wakes this replica's waiters and tells the notifiers.
    fn announce(&self, kind: EventKind, row: &Row, by: Option<String>) {
        self.generation.send_modify(|g| *g += 1);
        let _ = self.events.send(ApprovalEvent {
            kind,
            approval: row.listed(),
            by,
        });
    }

    /// APPROVED → EXECUTING for exactly one caller, on any replica. `None` while pending.
    async fn try_claim(&self, id: &str) -> Result<Option<Awaited>, PendingError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store)?;
        let claimed = tx
            .query_opt(
                &format!(
                    "UPDATE pgwarden.approvals SET state = 'executing', claimed_by = $2 \
                     WHERE id = $1 AND state = 'approved' AND deadline > now() RETURNING {COLUMNS}"
                ),
                &[&id, &self.db.replica],
            )
            .await
            .map_err(store)?;
        if let Some(row) = claimed {
            let row = Row::from(&row)?;
            let approved = self.approved_of(&tx, id).await?;
            let change = Change {
                to: State::Executing,
                cause: Cause::Claimed,
                reviewer: None,
                note: None,
                must_record: true,
            };
            self.record(&tx, id, transition_record(id, &row.owner, &row.hash, &change))
                .await?;
            tx.commit().await.map_err(store)?;
            self.announce(EventKind::Decided, &row, None);
            return Ok(Some(Awaited::Execute {
                call: Box::new(row.call),
                approved,
            }));
        }
        let row = self.locked(&tx, id).await?;
        if row.lapsed() {
            let row = self.expire(&tx, &row).await?;
            tx.commit().await.map_err(store)?;
            self.announce(EventKind::Expired, &row, None);
            return Ok(Some(Awaited::Finished(State::Expired)));
        }
        drop(tx);
        Ok(match row.state {
            State::Pending => None,
            other => Some(Awaited::Finished(other)),
        })
    }

    async fn approved_of(&self, tx: &Transaction<'_>, id: &str) -> Result<Approved, PendingError> {
        let v: Option<serde_json::Value> = tx
            .query_one("SELECT approved FROM pgwarden.approvals WHERE id = $1", &[&id])
            .await
            .map_err(store)?
            .try_get(0)
            .map_err(store)?;
        v.map(|v| serde_json::from_value(v).map_err(store))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Moves `id` from one of `from` to `to` (finish, cancel), recorded; nothing when it is not in
    /// one of them.
    async fn settle(&self, id: &str, from: &[&str], change: Change<'_>) -> Result<(), PendingError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store)?;
        let row = self.locked(&tx, id).await?;
        if !from.contains(&word(&row.state)) || (row.state.is_open() && !row.live) {
            return Ok(());
        }
        let row = self.transition(&tx, &row, &change).await?;
        tx.commit().await.map_err(store)?;
        self.announce(change.cause.event(), &row, None);
        Ok(())
    }

    async fn open_once(
        &self,
        owner: &str,
        call: &StoredCall,
        review: &Review,
    ) -> Result<(String, Review), PendingError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store)?;
        // What of this requester lapsed is recorded first (and leaves the one-pending index).
        let lapsed = tx
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM pgwarden.approvals WHERE owner = $1 AND state IN ('pending', 'approved') \
                     AND deadline <= now() ORDER BY deadline FOR UPDATE"
                ),
                &[&owner],
            )
            .await
            .map_err(store)?;
        let mut expired = vec![];
        for r in &lapsed {
            expired.push(self.expire(&tx, &Row::from(r)?).await?);
        }
        let existing = tx
            .query_opt(
                &format!("SELECT {COLUMNS} FROM pgwarden.approvals WHERE owner = $1 AND action_hash = $2 AND state = 'pending'"),
                &[&owner, &call.hash],
            )
            .await
            .map_err(store)?;
        if let Some(r) = existing {
            let row = Row::from(&r)?;
            tx.commit().await.map_err(store)?;
            for e in &expired {
                self.announce(EventKind::Expired, e, None);
            }
            return Ok((row.id, row.review));
        }
        let open: i64 = tx
            .query_one(
                "SELECT count(*) FROM pgwarden.approvals WHERE owner = $1 AND state = 'pending'",
                &[&owner],
            )
            .await
            .map_err(store)?
            .get(0);
        if open as usize >= self.ttls.max_open_per_session {
            tx.commit().await.map_err(store)?;
            return Err(PendingError::TooMany(open as usize));
        }
        let id = format!("apr_{}", uuid::Uuid::new_v4().simple());
        let created = tx
            .query_one(
                &format!(
                    "INSERT INTO pgwarden.approvals (id, owner, action_hash, call, review, state, deadline) \
                     VALUES ($1, $2, $3, $4, $5, 'pending', now() + make_interval(secs => $6)) RETURNING {COLUMNS}"
                ),
                &[
                    &id,
                    &owner,
                    &call.hash,
                    &serde_json::to_value(call).map_err(store)?,
                    &serde_json::to_value(review).map_err(store)?,
                    &self.ttls.pending.as_secs_f64(),
                ],
            )
            .await
            .map_err(store)?;
        let row = Row::from(&created)?;
        let change = Change {
            to: State::Pending,
            cause: Cause::Created,
            reviewer: None,
            note: None,
            must_record: true,
        };
        self.record(&tx, &id, transition_record(&id, owner, &call.hash, &change))
            .await?;
        tx.commit().await.map_err(store)?;
        for e in &expired {
            self.announce(EventKind::Expired, e, None);
        }
        self.announce(EventKind::Created, &row, None);
        Ok((id, row.review))
    }

    async fn decide_in(
        &self,
        tx: &Transaction<'_>,
        row: &Row,
        shown_hash: &str,
        reviewer: &Reviewer,
        decision: &Decision,
    ) -> Result<(State, Row, EventKind), PendingError> {
        check_shown(&row.id, &row.review, &row.hash, &row.state, shown_hash, reviewer)?;
        match judge(&row.review, &row.votes, reviewer, decision)? {
            Some(next) => {
                let change = Change {
                    to: next.clone(),
                    cause: Cause::Decided(reviewer.surface),
                    reviewer: Some(reviewer),
                    note: None,
                    must_record: true,
                };
                let row = self.transition(tx, row, &change).await?;
                Ok((next, row, EventKind::Decided))
            }
            None => {
                let Decision::Approve(approved) = decision else {
                    return Err(PendingError::AlreadyDecided(row.id.clone()));
                };
                let vote = vote_of(reviewer, approved);
                let mut votes = row.votes.clone();
                votes.push(vote.clone());
                let updated = tx
                    .query_one(
                        &format!("UPDATE pgwarden.approvals SET votes = $2 WHERE id = $1 RETURNING {COLUMNS}"),
                        &[&row.id, &serde_json::to_value(&votes).map_err(store)?],
                    )
                    .await
                    .map_err(store)?;
                let record = vote_record(
                    &row.id,
                    &row.owner,
                    &row.hash,
                    reviewer,
                    &vote,
                    (votes.len(), row.review.team.min_approvals),
                );
                self.record(tx, &row.id, record).await?;
                Ok((State::Pending, Row::from(&updated)?, EventKind::Voted))
            }
        }
    }
}

/// Follows other replicas' changes (LISTEN) into `generation`, reconnecting when the connection
/// drops; every reconnect bumps it too, so waiters look again.
async fn listen(store: std::sync::Weak<PgStore>) {
    use futures_util::StreamExt;
    loop {
        let Some(target) = store.upgrade().map(|s| s.db.target.clone()) else {
            return;
        };
        let connected = target.config.connect(target.tls.clone()).await;
        match connected {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async {
                    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
                    Ok::<_, tokio_postgres::Error>(())
                };
                // The connection must be polled for the LISTEN to complete.
                let mut listening = std::pin::pin!(listening);
                let ok = loop {
                    tokio::select! {
                        r = &mut listening => break r.is_ok(),
                        m = messages.next() => if !matches!(m, Some(Ok(_))) { break false },
                    }
                };
                if ok {
                    if let Some(s) = store.upgrade() {
                        s.generation.send_modify(|g| *g += 1);
                    }
                    while let Some(m) = messages.next().await {
                        let Some(s) = store.upgrade() else { return };
                        match m {
                            Ok(tokio_postgres::AsyncMessage::Notification(_)) => s.generation.send_modify(|g| *g += 1),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!("state database: the LISTEN connection failed ({e}); reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("state database: cannot LISTEN ({e}); retrying"),
        }
        if let Some(s) = store.upgrade() {
            s.generation.send_modify(|g| *g += 1);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[async_trait]
impl ApprovalStore for PgStore {
    fn ttls(&self) -> Ttls {
        self.ttls
    }

    async fn open_or_reuse(
        &self,
        session: &str,
        call: StoredCall,
        review: Review,
    ) -> Result<(String, Review), PendingError> {
        // Two replicas opening the same action at once: the one-pending index stops the second,
        // which then finds the first's.
        match self.open_once(session, &call, &review).await {
            Err(PendingError::Store(e)) if e.contains("approvals_one_pending") => {
                self.open_once(session, &call, &review).await
            }
            other => other,
        }
    }

    async fn is_pending(&self, session: &str, hash: &str) -> bool {
        let Ok(client) = self.client().await else {
            return false;
        };
        client
            .query_one(
                "SELECT EXISTS (SELECT FROM pgwarden.approvals WHERE owner = $1 AND action_hash = $2 \
                 AND state = 'pending' AND deadline > now())",
                &[&session, &hash],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(false)
    }

    async fn decide(
        &self,
        id: &str,
        shown_hash: &str,
        reviewer: &Reviewer,
        decision: Decision,
    ) -> Result<State, PendingError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store)?;
        let row = self.locked(&tx, id).await?;
        if row.lapsed() {
            let row = self.expire(&tx, &row).await?;
            tx.commit().await.map_err(store)?;
            self.announce(EventKind::Expired, &row, None);
            return Err(PendingError::AlreadyDecided(id.into()));
        }
        match self.decide_in(&tx, &row, shown_hash, reviewer, &decision).await {
            Ok((state, row, kind)) => {
                tx.commit().await.map_err(store)?;
                self.announce(kind, &row, Some(reviewer.decided_by()));
                Ok(state)
            }
            Err(e) => {
                drop(tx);
                if audited_refusal(&e) {
                    self.refused(Some(id), reviewer.surface, &reviewer.decided_by(), &e.to_string())
                        .await;
                }
                Err(e)
            }
        }
    }

    async fn wait(&self, id: &str, session: &str, budget: Duration) -> Result<Awaited, PendingError> {
        let row = self.read(id).await?.ok_or_else(|| PendingError::Unknown(id.into()))?;
        if row.owner != session {
            return Err(PendingError::NotYours(id.into()));
        }
        let mut changes = self.generation.subscribe();
        let until = tokio::time::Instant::now() + budget;
        loop {
            changes.mark_unchanged();
            if let Some(done) = self.try_claim(id).await? {
                return Ok(done);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(Awaited::StillPending);
            }
            // A NOTIFY wakes it at once; the periodic look covers a LISTEN connection being
            // re-established.
            let tick = (until - now).min(Duration::from_secs(2));
            let _ = tokio::time::timeout(tick, changes.changed()).await;
        }
    }

    async fn finish(&self, id: &str, ok: bool) {
        let change = Change {
            to: State::Done { ok },
            cause: Cause::Executed,
            reviewer: None,
            note: None,
            must_record: false,
        };
        if let Err(e) = self.settle(id, &["executing"], change).await {
            tracing::error!(approval = id, "recording how the approved call ended: {e}");
        }
    }

    async fn cancel(&self, id: &str, why: Cancel) {
        let change = Change {
            to: State::Cancelled,
            cause: Cause::Cancelled,
            reviewer: None,
            note: Some(why.as_str()),
            must_record: false,
        };
        if let Err(e) = self.settle(id, &["pending", "approved"], change).await {
            tracing::error!(approval = id, "cancelling the approval: {e}");
        }
    }

    /// Nothing: another replica may serve them (their requester's `pgwarden_await` lands anywhere).
    async fn abandon_open(&self) {}

    async fn list(&self) -> Vec<Listed> {
        let Ok(client) = self.client().await else {
            return vec![];
        };
        match client
            .query(
                &format!("SELECT {COLUMNS} FROM pgwarden.approvals ORDER BY seq DESC LIMIT 1000"),
                &[],
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| Row::from(r).ok())
                .map(|r| r.listed())
                .collect(),
            Err(e) => {
                tracing::error!("state database: listing approvals: {e}");
                vec![]
            }
        }
    }

    async fn state(&self, id: &str) -> Option<State> {
        self.read(id).await.ok().flatten().map(|r| r.current())
    }

    async fn expire_due(&self) {
        let due = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(store)?;
            let rows = tx
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM pgwarden.approvals WHERE state IN ('pending', 'approved') \
                         AND deadline <= now() ORDER BY deadline LIMIT 50 FOR UPDATE SKIP LOCKED"
                    ),
                    &[],
                )
                .await
                .map_err(store)?;
            let mut expired = vec![];
            for r in &rows {
                expired.push(self.expire(&tx, &Row::from(r)?).await?);
            }
            tx.commit().await.map_err(store)?;
            Ok::<_, PendingError>(expired)
        };
        match due.await {
            Ok(rows) => {
                for r in &rows {
                    self.announce(EventKind::Expired, r, None);
                }
            }
            Err(e) => tracing::warn!("state database: recording expired approvals: {e}"),
        }
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    async fn state_with_nonce(&self, id: &str, nonce: &str) -> Result<State, PendingError> {
        let row = self.read(id).await?.ok_or_else(|| PendingError::Unknown(id.into()))?;
        if !same_secret(nonce, &row.review.nonce) {
            return Err(PendingError::WrongChannel(
                "the card's proof does not match this approval".into(),
            ));
        }
        Ok(row.current())
    }

    async fn mark_shown(&self, id: &str, nonce: &str) -> Result<(), PendingError> {
        self.state_with_nonce(id, nonce).await?;
        let client = self.client().await?;
        client
            .execute("UPDATE pgwarden.approvals SET shown = true WHERE id = $1", &[&id])
            .await
            .map_err(store)?;
        Ok(())
    }

    async fn was_shown(&self, id: &str) -> bool {
        self.read(id).await.ok().flatten().is_some_and(|r| r.shown)
    }

    async fn use_nonce(&self, nonce: &str, ttl: Duration) -> bool {
        let Ok(client) = self.client().await else {
            return false;
        };
        let taken = client
            .execute(
                "WITH gone AS (DELETE FROM pgwarden.used_nonces WHERE until < now()) \
                 INSERT INTO pgwarden.used_nonces (nonce, until) VALUES ($1, now() + make_interval(secs => $2)) \
                 ON CONFLICT (nonce) DO NOTHING",
                &[&nonce, &ttl.as_secs_f64()],
            )
            .await;
        match taken {
            Ok(n) => n == 1,
            Err(e) => {
                tracing::error!("state database: recording a used requestState nonce: {e}");
                false
            }
        }
    }

    async fn get(&self, id: &str) -> Option<Listed> {
        self.read(id).await.ok().flatten().map(|r| r.listed())
    }

    async fn annotate(&self, id: &str, key: &str, value: serde_json::Value) -> Result<(), PendingError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE pgwarden.approvals SET notes = notes || jsonb_build_object($2::text, $3::jsonb) WHERE id = $1",
                &[&id, &key, &value],
            )
            .await
            .map_err(store)?;
        if n == 0 {
            return Err(PendingError::Unknown(id.into()));
        }
        Ok(())
    }

    fn events(&self) -> broadcast::Receiver<ApprovalEvent> {
        self.events.subscribe()
    }

    async fn refused(&self, id: Option<&str>, surface: crate::call::Surface, by: &str, why: &str) {
        let done = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(store)?;
            let mut record = refusal_record(id, surface, by, why);
            if let Some(id) = id {
                record.session_id = tx
                    .query_opt("SELECT owner FROM pgwarden.approvals WHERE id = $1", &[&id])
                    .await
                    .map_err(store)?
                    .map(|r| r.get(0));
            }
            chain::append(&tx, self.db.key.as_deref(), record)
                .await
                .map_err(audit)?;
            tx.commit().await.map_err(store)
        };
        if let Err(e) = done.await {
            tracing::error!("a refused decision was not recorded: {e}");
        }
    }
}
