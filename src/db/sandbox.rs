//! The embedded default database: a private cluster under the user's data directory, started (or
//! reused) by `serve`, seeded once with a demo shop, and stopped when the last pgwarden using it exits.

use std::{fs::File, path::PathBuf};

use super::cluster::{Cluster, ClusterError, Owner, find_binaries};

/// The role the sandbox hands to the agent: owns the demo objects, is not a superuser.
pub const AGENT_ROLE: &str = "pgwarden_agent";
/// The database holding the demo schema.
pub const DEMO_DB: &str = "demo";
const DEMO_SQL: &str = include_str!("demo.sql");
const SEEDED_MARKER: &str = "seeded";

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
    /// Starts the sandbox if it is not running, initialising and seeding it the first time.
    /// Blocking: call from `spawn_blocking` or before the runtime is busy.
    pub fn open(dir: PathBuf) -> Result<Sandbox, SandboxError> {
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
        let ready = Self::ensure_running(&cluster).and_then(|()| {
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
            std::fs::write(&seeded, b"demo schema v1\n")
                .map_err(|e| SandboxError::Seed(format!("writing `{}`: {e}", seeded.display())))?;
        } else if !cluster.is_running() {
            tracing::info!(dir = %cluster.dir.display(), "starting the sandbox cluster");
            cluster.start()?;
        }
        Ok(())
    }

    /// How pgwarden connects: as the non-superuser agent role, to the demo database.
    pub fn connect_config(&self) -> tokio_postgres::Config {
        self.cluster.connect_config(AGENT_ROLE, DEMO_DB)
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

/// Creates the agent role and demo database, hardens it, and loads the demo schema. Runs our own
/// fixed SQL only (never agent text), on a private runtime since we are on a blocking thread.
fn seed(cluster: &Cluster) -> Result<(), SandboxError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SandboxError::Seed(e.to_string()))?;
    rt.block_on(async {
        let admin = cluster.connect_config("postgres", "postgres");
        run_sql(&admin, &format!("CREATE ROLE {AGENT_ROLE} LOGIN")).await?;
        run_sql(&admin, &format!("CREATE DATABASE {DEMO_DB} OWNER {AGENT_ROLE}")).await?;
        run_sql(&cluster.connect_config("postgres", DEMO_DB), HARDEN_SQL).await?;
        run_sql(&cluster.connect_config(AGENT_ROLE, DEMO_DB), DEMO_SQL).await
    })
}

/// Defence in depth for the sandbox (research/defenses.md §3 L1): functions that act outside a
/// read-only transaction are not executable by ordinary roles.
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
