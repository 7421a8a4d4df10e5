//! The store's moves, each one transaction: open, decide (or vote), claim, settle, expire — the
//! row changed by a conditional statement, its audit record appended to the shared chain, a
//! `NOTIFY`, committed together.

use tokio_postgres::Transaction;

use super::{
    PgStore,
    row::{COLUMNS, Row, audit, store, word},
};
use crate::{
    approval::{
        Approved,
        memory::{Cause, Change, check_shown, transition_record, vote_record},
        pending::{
            ApprovalEvent, Awaited, Decision, EventKind, PendingError, Review, Reviewer, State, StoredCall, judge,
            vote_of,
        },
    },
    audit::Record,
    state::{CHANNEL, chain},
};

impl PgStore {
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, PendingError> {
        self.db.pool.get().await.map_err(store)
    }

    /// The row of `id`, locked for this transaction.
    pub(super) async fn locked(&self, tx: &Transaction<'_>, id: &str) -> Result<Row, PendingError> {
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

    pub(super) async fn read(&self, id: &str) -> Result<Option<Row>, PendingError> {
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

    /// Appends `record` and tells the other replicas something moved, in `tx` (the NOTIFY is
    /// delivered when it commits).
    pub(super) async fn record(&self, tx: &Transaction<'_>, record: Record) -> Result<(), PendingError> {
        chain::append(tx, self.db.key.as_deref(), record).await.map_err(audit)?;
        // The statement, not `pg_notify()`: hardened clusters revoke the function from PUBLIC.
        tx.execute(&format!("NOTIFY {CHANNEL}"), &[]).await.map_err(store)?;
        Ok(())
    }

    /// Moves `row` to `change.to` and records it, in `tx`; the row as it is afterwards.
    pub(super) async fn transition(
        &self,
        tx: &Transaction<'_>,
        row: &Row,
        change: &Change<'_>,
    ) -> Result<Row, PendingError> {
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
        self.record(tx, record).await?;
        Row::from(&updated)
    }

    /// Records that `row` lapsed (its deadline passed), in `tx`.
    pub(super) async fn expire(&self, tx: &Transaction<'_>, row: &Row) -> Result<Row, PendingError> {
        let change = Change::unattended(State::Expired, Cause::Expired, None);
        self.transition(tx, row, &change).await
    }

    /// After a commit: wakes this replica's waiters and tells the notifiers.
    pub(super) fn announce(&self, kind: EventKind, row: &Row, by: Option<String>) {
        self.generation.send_modify(|g| *g += 1);
        let _ = self.events.send(ApprovalEvent {
            kind,
            approval: row.listed(),
            by,
        });
    }

    /// APPROVED → EXECUTING for exactly one caller, on any replica. `None` while pending.
    pub(super) async fn try_claim(&self, id: &str) -> Result<Option<Awaited>, PendingError> {
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
            self.record(&tx, transition_record(id, &row.owner, &row.hash, &change))
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

    pub(super) async fn approved_of(&self, tx: &Transaction<'_>, id: &str) -> Result<Approved, PendingError> {
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
    pub(super) async fn settle(&self, id: &str, from: &[&str], change: Change<'_>) -> Result<(), PendingError> {
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

    pub(super) async fn open_once(
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
        self.record(&tx, transition_record(&id, owner, &call.hash, &change))
            .await?;
        tx.commit().await.map_err(store)?;
        for e in &expired {
            self.announce(EventKind::Expired, e, None);
        }
        self.announce(EventKind::Created, &row, None);
        Ok((id, row.review))
    }

    pub(super) async fn decide_in(
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
                self.record(tx, record).await?;
                Ok((State::Pending, Row::from(&updated)?, EventKind::Voted))
            }
        }
    }
}
