//! The embedded default database: a private cluster under the user's data directory, started (or
//! reused) by `serve`, seeded once with a demo shop, set up for the policy's masks at every start
//! (as `pgwarden setup` would), and stopped when the last pgwarden using it exits.

use std::{collections::BTreeMap, fs::File, path::PathBuf};

use super::cluster::{Cluster, ClusterError, Owner, find_binaries};
use crate::policy::Mask;

/// The role the agent's SQL runs as: reads what `setup` granted, owns nothing, is not a superuser.
pub const AGENT_ROLE: &str = "pgwarden_agent";
/// The role that owns the demo objects; approved changes run as it.
pub const OWNER_ROLE: &str = "pgwarden_owner";
/// The database holding the demo schema.
pub const DEMO_DB: &str = "demo";
/// pgwarden's own state (`serve --http` on the sandbox): its database and the role that owns it,
/// which the agent's role cannot connect to.
pub const STATE_DB: &str = "pgwarden_state";
pub const STATE_ROLE: &str = "pgwarden_state";
const DEMO_SQL: &str = include_str!("demo.sql");
const SEEDED_MARKER: &str = "seeded";
/// The marker's content. v1 sandboxes had the agent own the demo objects.
const SEEDED_V2: &str = "demo schema v2 (owner pgwarden_owner)\n";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("sandbox lock file `{path}`: {reason}")]
    Lock { path: String, reason: String },
    #[error("seeding the sandbox failed: {0}")]
    Seed(String),
}

/// A running sandbox this process holds a share of: a shared `flock` on `pgwarden.lock`, one per
/// pgwarden using it. Starting and stopping happen under an exclusive `flock` on `setup.lock`, so two
/// pgwardens never initialise at once and nobody stops the cluster while another is starting it.
pub struct Sandbox {
    pub cluster: Cluster,
    users: File,
    setup: File,
}

impl Sandbox {
    /// Starts the sandbox if it is not running, initialising and seeding it the first time, and
    /// makes it enforce `masks`. Blocking: call from `spawn_blocking` or before the runtime is busy.
    pub fn open(dir: PathBuf, masks: &BTreeMap<String, BTreeMap<String, Mask>>) -> Result<Sandbox, SandboxError> {
        let bindir = find_binaries()?;
        let owner = Owner::for_current_process()?;
        let cluster = Cluster::new(dir, bindir, owner)?;
        cluster.prepare_dir()?;
        let open = |name: &str| {
            let path = cluster.dir.join(name);
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| lock_error(&path, e))?;
            Ok::<_, SandboxError>((file, path))
        };
        let (users, users_path) = open("pgwarden.lock")?;
        let (setup, setup_path) = open("setup.lock")?;
        if setup.try_lock().is_err() {
            tracing::info!("another pgwarden is starting or stopping the sandbox; waiting for it");
            setup.lock().map_err(|e| lock_error(&setup_path, e))?;
        }
        // Whether another pgwarden serves this sandbox now (it holds a share of `pgwarden.lock`).
        let others = match users.try_lock() {
            Ok(()) => {
                let _ = users.unlock();
                false
            }
            Err(_) => true,
        };
        let ready = Self::ensure_running(&cluster)
            .and_then(|()| block_on(apply_masks(&cluster, masks, others)))
            .and_then(|()| {
                // Never blocks: the only exclusive hold on `pgwarden.lock` is taken under `setup.lock`.
                users.lock_shared().map_err(|e| lock_error(&users_path, e))
            });
        let _ = setup.unlock();
        ready?;
        Ok(Sandbox { cluster, users, setup })
    }

    fn ensure_running(cluster: &Cluster) -> Result<(), SandboxError> {
        let seeded = cluster.dir.join(SEEDED_MARKER);
        if !seeded.is_file() {
            tracing::info!(dir = %cluster.dir.display(), "creating the sandbox cluster (first run)");
            if cluster.is_running() {
                cluster.stop()?;
            }
            cluster.init(&[])?;
            cluster.start()?;
            if let Err(e) = seed(cluster) {
                let _ = cluster.stop();
                return Err(e);
            }
            std::fs::write(&seeded, SEEDED_V2)
                .map_err(|e| SandboxError::Seed(format!("writing `{}`: {e}", seeded.display())))?;
        } else {
            if !cluster.is_running() {
                tracing::info!(dir = %cluster.dir.display(), "starting the sandbox cluster");
                cluster.start()?;
            }
            if std::fs::read_to_string(&seeded).unwrap_or_default() != SEEDED_V2 {
                tracing::info!("moving the sandbox's demo objects to the owner role `{OWNER_ROLE}`");
                block_on(migrate_v1(cluster))?;
                std::fs::write(&seeded, SEEDED_V2)
                    .map_err(|e| SandboxError::Seed(format!("writing `{}`: {e}", seeded.display())))?;
            }
        }
        Ok(())
    }

    /// How pgwarden connects for the agent's SQL: as the agent role, to the demo database.
    pub fn connect_config(&self) -> tokio_postgres::Config {
        self.cluster.connect_config(AGENT_ROLE, DEMO_DB)
    }

    /// How pgwarden connects for approved changes: as the owner of the demo objects.
    pub fn change_config(&self) -> tokio_postgres::Config {
        self.cluster.connect_config(OWNER_ROLE, DEMO_DB)
    }

    /// How pgwarden connects to its own state database, made on first use.
    pub async fn state_config(&self) -> Result<tokio_postgres::Config, SandboxError> {
        {
            let admin = self.cluster.connect_config("postgres", "postgres");
            run_sql(
                &admin,
                &format!(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{STATE_ROLE}') \
                     THEN CREATE ROLE {STATE_ROLE} LOGIN; END IF; END $$"
                ),
            )
            .await?;
            // Two pgwardens starting at once may both try: the loser's "already exists" is fine.
            match run_sql(&admin, &format!("CREATE DATABASE {STATE_DB} OWNER {STATE_ROLE}")).await {
                Err(SandboxError::Seed(e)) if e.contains("42P04") => {}
                other => other?,
            }
            run_sql(&admin, &format!("REVOKE ALL ON DATABASE {STATE_DB} FROM PUBLIC")).await?;
        }
        Ok(self.cluster.connect_config(STATE_ROLE, STATE_DB))
    }

    /// Gives up this process's share; the last one out stops the cluster.
    pub fn release(self) {
        // Under the set-up lock: nobody is between starting the cluster and taking their share.
        if self.setup.lock().is_err() {
            return;
        }
        let _ = self.users.unlock();
        if self.users.try_lock().is_ok() {
            tracing::info!("stopping the sandbox cluster (no other pgwarden uses it)");
            if let Err(e) = self.cluster.stop() {
                tracing::warn!("stopping the sandbox cluster failed: {e}");
            }
            let _ = self.users.unlock();
        }
        let _ = self.setup.unlock();
    }
}

fn lock_error(path: &std::path::Path, e: std::io::Error) -> SandboxError {
    SandboxError::Lock {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Runs `work` on a private runtime: we are on a blocking thread.
fn block_on(work: impl std::future::Future<Output = Result<(), SandboxError>>) -> Result<(), SandboxError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SandboxError::Seed(e.to_string()))?
        .block_on(work)
}

/// Creates the owner and agent roles and the demo database, hardens it, and loads the demo schema
/// as the owner. Runs our own fixed SQL only (never agent text).
fn seed(cluster: &Cluster) -> Result<(), SandboxError> {
    block_on(async {
        let admin = cluster.connect_config("postgres", "postgres");
        run_sql(&admin, &format!("CREATE ROLE {OWNER_ROLE} LOGIN")).await?;
        run_sql(&admin, &format!("CREATE ROLE {AGENT_ROLE} LOGIN")).await?;
        run_sql(&admin, &format!("CREATE DATABASE {DEMO_DB} OWNER {OWNER_ROLE}")).await?;
        run_sql(&cluster.connect_config("postgres", DEMO_DB), HARDEN_SQL).await?;
        run_sql(&cluster.connect_config(OWNER_ROLE, DEMO_DB), DEMO_SQL).await
    })
}

/// A sandbox seeded before v2 had the agent own everything: hand it all to the owner role.
async fn migrate_v1(cluster: &Cluster) -> Result<(), SandboxError> {
    let admin = cluster.connect_config("postgres", "postgres");
    run_sql(
        &admin,
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{OWNER_ROLE}') \
             THEN CREATE ROLE {OWNER_ROLE} LOGIN; END IF; END $$"
        ),
    )
    .await?;
    run_sql(
        &cluster.connect_config("postgres", DEMO_DB),
        &format!("REASSIGN OWNED BY {AGENT_ROLE} TO {OWNER_ROLE}"),
    )
    .await
}

/// `pgwarden setup` for the sandbox, as its superuser: the agent reads every demo schema, and
/// Postgres enforces `masks`. Without masks, tables the owner creates later are readable too.
/// While `others` serve the sandbox, its masks are theirs too: a policy that masks different
/// columns is refused rather than change what they promised.
async fn apply_masks(
    cluster: &Cluster,
    masks: &BTreeMap<String, BTreeMap<String, Mask>>,
    others: bool,
) -> Result<(), SandboxError> {
    let admin = cluster.connect_config("postgres", DEMO_DB);
    let target = super::Target::from_config(admin.clone()).map_err(|e| SandboxError::Seed(e.to_string()))?;
    if others {
        let current = super::setup::is_current(&target, masks)
            .await
            .map_err(|e| SandboxError::Seed(format!("checking the sandbox's masks: {e}")))?;
        if current {
            return Ok(());
        }
        return Err(SandboxError::Seed(
            "another pgwarden is serving this sandbox with a policy that masks different columns; use the same \
             policy, stop the other one, or give this one its own `--sandbox-dir`"
                .into(),
        ));
    }
    let request = super::setup::SetupRequest {
        agent_role: AGENT_ROLE.into(),
        schemas: vec![],
        print_only: false,
    };
    super::setup::run(&target, masks, &request)
        .await
        .map_err(|e| SandboxError::Seed(format!("setting up masks: {e}")))?;
    let defaults = if masks.is_empty() {
        "GRANT SELECT ON TABLES TO"
    } else {
        "REVOKE SELECT ON TABLES FROM"
    };
    run_sql(
        &admin,
        &format!("ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} {defaults} {AGENT_ROLE}"),
    )
    .await
}

/// Defence in depth for the sandbox: least privilege in the database is the only hard boundary, so
/// functions that act outside a read-only transaction are not executable by ordinary roles.
pub const HARDEN_SQL: &str = r"
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'pg_catalog' AND (
      p.proname IN ('pg_terminate_backend', 'pg_cancel_backend', 'set_config', 'ts_stat', 'ts_rewrite',
                    'pg_sleep', 'pg_sleep_for', 'pg_sleep_until', 'pg_notify', 'txid_current',
                    'pg_current_xact_id', 'lowrite', 'loread')
      OR p.proname LIKE 'pg\_advisory%' OR p.proname LIKE 'pg\_try\_advisory%'
      OR p.proname LIKE '%to\_xml%' OR p.proname LIKE 'lo\_%')
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
  END LOOP;
END $$;
DO $$ BEGIN EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database()); END $$;
";

async fn run_sql(config: &tokio_postgres::Config, sql: &str) -> Result<(), SandboxError> {
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| SandboxError::Seed(format!("connecting: {e}")))?;
    let driver = tokio::spawn(conn);
    let result = client.batch_execute(sql).await.map_err(|e| {
        SandboxError::Seed(match e.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => e.to_string(),
        })
    });
    drop(client);
    let _ = driver.await;
    result
}
