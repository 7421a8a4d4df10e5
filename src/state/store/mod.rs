//! The approval store on the state database: every replica sees the same approvals. Each change is
//! one transaction — the row moved by a conditional `UPDATE`, its audit record appended to the
//! shared chain, a `NOTIFY` — committed together or not at all. Whether an approval is still live
//! is decided by the database's clock in the statement that reads or moves it (`deadline > now()`),
//! so nothing depends on a sweep having run; the claim that runs an approved call is a single
//! `UPDATE … WHERE state = 'approved' AND deadline > now() RETURNING`, which exactly one replica wins.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};

mod listen;
mod moves;
mod row;

use row::{COLUMNS, Row, audit, store};

use super::{StateDb, chain};
use crate::approval::{
    memory::{Cause, Change, audited_refusal, check_card, refusal_record},
    pending::{
        ApprovalEvent, ApprovalStore, Awaited, Cancel, Decision, EventKind, Listed, PendingError, Review, Reviewer,
        State, StoredCall, Ttls,
    },
};

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
        tokio::spawn(listen::listen(Arc::downgrade(&s)));
        s
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
        let change = Change::unattended(State::Done { ok }, Cause::Executed, None);
        if let Err(e) = self.settle(id, &["executing"], change).await {
            tracing::error!(approval = id, "recording how the approved call ended: {e}");
        }
    }

    async fn cancel(&self, id: &str, why: Cancel) {
        let change = Change::unattended(State::Cancelled, Cause::Cancelled, Some(why.as_str()));
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
        check_card(&row.review, nonce)?;
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
