//! pgwarden's own state in Postgres (`serve --http --state-url`): pending approvals, decisions,
//! single-use nonces and the audit trail, in a `pgwarden` schema that every replica shares.
//!
//! - `chain`: the audit trail as one hash chain for all replicas (sequence and previous hash
//!   assigned under a row lock, in the transaction of the change it records); its export.
//! - `store`: the [`ApprovalStore`](crate::approval::pending::ApprovalStore) on those tables.
//!
//! The schema is created by versioned migrations (refinery) applied at start, under an advisory
//! lock so replicas starting together take turns.

pub mod chain;
pub mod store;

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::{
    audit::sign::SigningKey,
    db::connect::{ConnectError, Target, connect_pool, source_chain},
};

/// The migrations, oldest first. Never edit one that has shipped: add the next.
const MIGRATIONS: &[(&str, &str)] = &[("V1__state", include_str!("migrations/V1__state.sql"))];

/// The NOTIFY channel every change is announced on.
pub const CHANNEL: &str = "pgwarden_approvals";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state database: {0}")]
    Connect(#[from] ConnectError),
    #[error("the state database {target}: {message}")]
    Db { target: String, message: String },
    #[error("migrating the state database {target}: {message}")]
    Migrate { target: String, message: String },
    #[error(
        "the state database {0} is the database pgwarden serves: the agent's login could read or change approvals and the audit trail there. \
         Give `--state-url` a database of its own that the agent's login cannot connect to"
    )]
    SameDatabase(String),
    #[error(
        "the agent's session sees pgwarden's state tables (`pgwarden.audit_head`) in the database it serves: its SQL could read or change \
         approvals and the audit trail there. Keep the state database apart ({0}), and drop or revoke the `pgwarden` schema in the served database"
    )]
    Visible(String),
}

/// The state database: a pool for transactions, where to LISTEN, and the key that signs the trail.
pub struct StateDb {
    pub(crate) pool: Pool,
    pub(crate) target: Target,
    pub(crate) key: Option<Arc<SigningKey>>,
    /// This replica, as `claimed_by` names it: `host pid N`.
    pub replica: String,
}

impl StateDb {
    /// Connects, applies the migrations not yet applied, and keeps a pool of `pool_size`.
    pub async fn open(
        target: Target,
        key: Option<Arc<SigningKey>>,
        pool_size: usize,
    ) -> Result<Arc<StateDb>, StateError> {
        migrate(&target).await?;
        let pool = connect_pool(&target, pool_size.max(2)).await?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Ok(Arc::new(StateDb {
            pool,
            target,
            key,
            replica: format!("{} pid {}", host.trim(), std::process::id()),
        }))
    }

    /// `user@host:port/db`, for logs.
    pub fn display(&self) -> &str {
        &self.target.display
    }
}

/// One connection of its own (LISTEN, migrations, export), driven on a task until dropped.
pub(crate) async fn connect_one(target: &Target) -> Result<tokio_postgres::Client, StateError> {
    let err = |e: tokio_postgres::Error| StateError::Db {
        target: target.display.clone(),
        message: e.to_string(),
    };
    let (client, connection) = target.config.connect(target.tls.clone()).await.map_err(err)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("state database connection ended: {e}");
        }
    });
    Ok(client)
}

/// Applies the migrations not yet applied (history in `pgwarden.schema_history`), one replica at a
/// time: under an advisory lock where the login may take one; elsewhere a replica that lost the
/// race to another applying the same migration looks again once the other is done.
async fn migrate(target: &Target) -> Result<(), StateError> {
    let fail = |message: String| StateError::Migrate {
        target: target.display.clone(),
        message,
    };
    let mut client = connect_one(target).await?;
    let locked = client
        .execute("SELECT pg_advisory_lock(hashtext('pgwarden state migrations'))", &[])
        .await
        .is_ok();
    let migrations = MIGRATIONS
        .iter()
        .map(|(name, sql)| refinery_core::Migration::unapplied(name, sql))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(source_chain(&e)))?;
    let mut runner = refinery_core::Runner::new(&migrations);
    runner.set_migration_table_name("pgwarden.schema_history");
    let mut report = Err(String::new());
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        report = match client.execute("CREATE SCHEMA IF NOT EXISTS pgwarden", &[]).await {
            Ok(_) => runner.run_async(&mut client).await.map_err(|e| source_chain(&e)),
            Err(e) => Err(source_chain(&e)),
        };
        if report.is_ok() || locked {
            break;
        }
    }
    if locked {
        let _ = client
            .execute("SELECT pg_advisory_unlock(hashtext('pgwarden state migrations'))", &[])
            .await;
    }
    for m in report.map_err(fail)?.applied_migrations() {
        tracing::info!("state database {}: applied migration {m}", target.display);
    }
    Ok(())
}

/// Refuses to serve when the agent's session (`agent`, a connection to the served database) can
/// see pgwarden's state tables: then its SQL could read or change approvals and the trail.
pub async fn check_unseen(agent: &tokio_postgres::Client, state: &str) -> Result<(), StateError> {
    let seen: bool = agent
        .query_one("SELECT pg_catalog.to_regclass('pgwarden.audit_head') IS NOT NULL", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| StateError::Db {
            target: state.to_string(),
            message: source_chain(&e),
        })?;
    if seen {
        return Err(StateError::Visible(state.to_string()));
    }
    Ok(())
}

/// Refuses a state database that is the served one: same host, port and database name.
pub fn check_apart(state: &tokio_postgres::Config, served: &tokio_postgres::Config) -> Result<(), StateError> {
    let same = state.get_hosts() == served.get_hosts()
        && state.get_ports() == served.get_ports()
        && state.get_dbname().or(state.get_user()) == served.get_dbname().or(served.get_user());
    if same {
        return Err(StateError::SameDatabase(crate::db::connect::describe(state)));
    }
    Ok(())
}
