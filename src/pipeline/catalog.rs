//! The catalog facts the classifier decides with: loaded at start, reloaded right after a change ran
//! through pgwarden, and by a watcher that polls a cheap signature every 2 s.
//!
//! Residual window: DDL made outside pgwarden (another client, a migration) is seen at the next poll,
//! so a call less than 2 s after it is classified with the old facts. The Postgres-side enforcement
//! (the agent's role, its privileges, the masking views in `pgwarden_mask`) does not depend on these
//! facts and still holds in that window; the facts only make the classifier ask a person sooner.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::{classify::CatalogFacts, db::DbError};

/// How often the watcher checks the signature. Defaults to 2 s.
pub const CATALOG_POLL: Duration = Duration::from_secs(2);

/// The facts in use and the signature they were loaded at.
#[derive(Default)]
pub(super) struct CatalogState {
    facts: Arc<CatalogFacts>,
    signature: Option<String>,
    /// Set when the policy masks columns and Postgres no longer enforces them for the agent's
    /// login (a grant, a new view or partition since start-up): agent SQL is refused meanwhile.
    masks_problem: Option<String>,
}

impl Pipeline {
    /// The facts the next classification uses (no catalog until the first load).
    pub fn catalog_facts(&self) -> Arc<CatalogFacts> {
        let state = self.catalog.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.facts.clone()
    }

    /// Loads the facts now. The signature is read first, so a change racing the load shows up as a
    /// new signature at the next poll.
    ///
    /// With masks in the policy it also asks Postgres again whether they are enforced; the answer
    /// holds until the next change of the signature.
    pub async fn refresh_catalog(&self) -> Result<(), DbError> {
        // First the search paths, so the facts below are read under the path every call runs with.
        self.db.pin_search_paths().await?;
        let signature = self.db.catalog_signature().await?;
        let known = self
            .catalog
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .signature
            .clone();
        // Nothing changed since the last load (e.g. after a plain UPDATE): nothing to reload.
        if known.as_ref() == Some(&signature) {
            return Ok(());
        }
        let facts = self.db.catalog_facts().await?;
        let masks_problem = match self
            .db
            .ensure_masks_enforced(&self.policy.masks, &self.policy.sources.join(","))
            .await
        {
            Ok((warnings, masked)) => {
                for w in &warnings {
                    tracing::warn!("{w}");
                }
                if masked > 0 && known.is_none() {
                    tracing::info!("masks are enforced by Postgres for this login ({masked} masked relation(s))");
                }
                None
            }
            Err(crate::db::masking::MaskError::Db(e)) => return Err(e),
            Err(e) => {
                tracing::error!("{e}");
                Some(e.to_string())
            }
        };
        let mut state = self.catalog.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *state = CatalogState {
            facts: Arc::new(facts),
            signature: Some(signature),
            masks_problem,
        };
        Ok(())
    }

    /// Why Postgres does not enforce the policy's masks for the agent's login, as of the last load
    /// (`serve` refuses to start on it; later, calls are refused until it is fixed).
    pub fn masks_problem(&self) -> Option<String> {
        let state = self.catalog.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.masks_problem.clone()
    }

    /// `Err` while the policy's masks are not enforced by Postgres (see [`CatalogState`]).
    pub(super) fn masks_hold(&self) -> Result<(), super::ToolError> {
        let state = self.catalog.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &state.masks_problem {
            None => Ok(()),
            Some(problem) => Err(super::ToolError::Refused(format!(
                "the database stopped enforcing the policy's column masks since pgwarden started, so no SQL runs \
                 until the operator fixes it ({})",
                problem.lines().next().unwrap_or_default()
            ))),
        }
    }

    /// After a change ran: reload, and keep the old facts if that fails (the watcher retries).
    pub(super) async fn refresh_after_change(&self) {
        if let Err(e) = self.refresh_catalog().await {
            tracing::warn!("reloading the catalog facts after a change failed: {e}");
        }
    }

    /// Polls the signature every [`CATALOG_POLL`] and reloads when it changed, until `ct` is cancelled
    /// or the pipeline is gone.
    pub fn watch_catalog(self: &Arc<Self>, ct: CancellationToken) -> tokio::task::JoinHandle<()> {
        let pipeline: Weak<Pipeline> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = ct.cancelled() => return,
                    _ = tokio::time::sleep(CATALOG_POLL) => {}
                }
                let Some(p) = pipeline.upgrade() else { return };
                let known = p
                    .catalog
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .signature
                    .clone();
                match p.db.catalog_signature().await {
                    Ok(now) if Some(&now) == known.as_ref() => {}
                    Ok(_) => match p.refresh_catalog().await {
                        Ok(()) => tracing::debug!("catalog changed; reloaded the catalog facts"),
                        Err(e) => tracing::warn!("reloading the catalog facts failed: {e}"),
                    },
                    Err(e) => tracing::debug!("checking the catalog signature failed: {e}"),
                }
            }
        })
    }
}
