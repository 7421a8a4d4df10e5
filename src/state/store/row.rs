//! One approval row of `pgwarden.approvals` as the store reads it, and how the store's failures
//! are told: the cause to the log, a short reason to the caller.

use crate::approval::{
    Approved,
    pending::{Listed, PendingError, Review, State, StoredCall, Vote},
};
use crate::db::connect::source_chain;

/// The columns every read takes, in [`Row::from`]'s order.
pub(super) const COLUMNS: &str = "id, owner, action_hash, call, review, state, approved, reason, votes, notes, shown, \
     deadline > now() AS live, deadline";

/// One approval row.
#[derive(Clone)]
pub(super) struct Row {
    pub(super) id: String,
    pub(super) owner: String,
    pub(super) hash: String,
    pub(super) call: StoredCall,
    pub(super) review: Review,
    pub(super) state: State,
    pub(super) votes: Vec<Vote>,
    pub(super) notes: serde_json::Map<String, serde_json::Value>,
    pub(super) shown: bool,
    /// Its deadline has not passed (by the database's clock).
    pub(super) live: bool,
}

impl Row {
    pub(super) fn from(r: &tokio_postgres::Row) -> Result<Row, PendingError> {
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
    pub(super) fn current(&self) -> State {
        if self.state.is_open() && !self.live {
            State::Expired
        } else {
            self.state.clone()
        }
    }

    /// Expired by the clock, but not yet recorded as such.
    pub(super) fn lapsed(&self) -> bool {
        self.state.is_open() && !self.live
    }

    pub(super) fn listed(&self) -> Listed {
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
pub(super) fn store<E: std::error::Error>(e: E) -> PendingError {
    let cause = source_chain(&e);
    tracing::error!("state database: {cause}");
    PendingError::Store(short(&cause))
}

pub(super) fn audit<E: std::error::Error>(e: E) -> PendingError {
    let cause = source_chain(&e);
    tracing::error!("state database: appending to the audit chain: {cause}");
    PendingError::Audit(short(&cause))
}

/// The first words of a cause, without the statement or values Postgres may quote.
fn short(cause: &str) -> String {
    let first = cause.lines().next().unwrap_or_default();
    first.chars().take(200).collect()
}

/// The word a state is stored as.
pub(super) fn word(state: &State) -> &'static str {
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
