//! Everything that talks to PostgreSQL: the pool, read execution, catalog discovery, value
//! decoding, `pgwarden setup`, and the clusters pgwarden starts itself (embedded sandbox, tests).

pub mod budget;
pub mod catalog;
pub mod cluster;
pub mod connect;
pub mod export;
pub mod facts;
pub mod grant;
pub mod masking;
pub mod read;
pub mod sandbox;
mod session;
pub mod setup;
pub mod values;
pub mod write;

use deadpool_postgres::Pool;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use connect::{ConnectError, Target};
pub use read::{Column, ReadResult};
pub use session::{CallTag, DbError};

/// `"name"`, with embedded quotes doubled: how pgwarden writes every identifier it puts in SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A connected database: the agent's pool, the pool approved changes run on, the TLS connector
/// (also needed to cancel queries), and a password-free description for logs.
///
/// Agent text that changes nothing (reads, exports, describes) runs as the agent's login, the role
/// `pgwarden setup` made: Postgres then enforces masks and read access whatever the text says.
/// Approved changes run as the change login, which is the same login unless the operator gave
/// another one whose rights they chose.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    change: Pool,
    /// True when changes run as a login other than the agent's (which may read masked columns).
    pub separate_change_login: bool,
    tls: MakeRustlsConnect,
    pub display: String,
    /// Who the transactions run for, on a handle made for one call ([`Database::for_call`]).
    tag: Option<std::sync::Arc<CallTag>>,
    /// Each login's search path as first read, set in every transaction it runs (see
    /// [`Database::pin_search_paths`]); shared by every handle of this database.
    paths: std::sync::Arc<SearchPaths>,
}

/// `SET LOCAL search_path = …; ` for the agent's and the change login's transactions.
#[derive(Default)]
struct SearchPaths {
    agent: std::sync::OnceLock<String>,
    change: std::sync::OnceLock<String>,
}

/// A database's logins as Postgres knows them ([`Database::logins`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logins {
    /// The cluster's system identifier; none when the login may not read it.
    pub cluster: Option<String>,
    /// The roles the agent and change logins are, or are members of (`pg_*` roles left out).
    pub roles: std::collections::BTreeSet<String>,
}

/// Facts about the connection, logged at start-up.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub version: String,
    pub user: String,
    pub database: String,
    pub superuser: bool,
}

impl Database {
    /// Connects and checks the connection now, so that a wrong URL fails at start-up.
    pub async fn connect(target: Target, pool_size: usize) -> Result<Database, ConnectError> {
        Database::connect_with_change(target, None, pool_size).await
    }

    /// As [`Database::connect`], with approved changes on `change` when given.
    pub async fn connect_with_change(
        target: Target,
        change: Option<Target>,
        pool_size: usize,
    ) -> Result<Database, ConnectError> {
        let pool = connect::connect_pool(&target, pool_size).await?;
        let (change, separate) = match change {
            Some(c) => (connect::connect_pool(&c, pool_size.div_ceil(2)).await?, true),
            None => (pool.clone(), false),
        };
        Ok(Database {
            pool,
            change,
            separate_change_login: separate,
            tls: target.tls,
            display: target.display,
            tag: None,
            paths: Default::default(),
        })
    }

    /// Who this database's logins are, as Postgres knows them: the cluster (its system identifier,
    /// when the login may read it) and every role the agent and change logins are or can become.
    pub async fn logins(&self) -> Result<Logins, DbError> {
        async fn roles(pool: &Pool) -> Result<Vec<String>, DbError> {
            let conn = pool.get().await.map_err(DbError::pool)?;
            let row = conn
                .query_one(
                    "SELECT ARRAY(SELECT rolname::text FROM pg_catalog.pg_roles \
                     WHERE pg_catalog.pg_has_role(session_user, oid, 'MEMBER') AND rolname !~ '^pg_')",
                    &[],
                )
                .await
                .map_err(DbError::from_pg)?;
            Ok(row.get(0))
        }
        let conn = self.pool.get().await.map_err(DbError::pool)?;
        let cluster = conn
            .query_one(
                "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
                &[],
            )
            .await
            .ok()
            .map(|r| r.get::<_, String>(0));
        drop(conn);
        let mut all: std::collections::BTreeSet<String> = roles(&self.pool).await?.into_iter().collect();
        if self.separate_change_login {
            all.extend(roles(&self.change).await?);
        }
        Ok(Logins { cluster, roles: all })
    }

    /// Reads each login's effective search path once (`current_schemas(false)`, what the
    /// classifier resolves names with) and from then on sets it in every transaction: a default
    /// changed later from outside — `ALTER ROLE … SET search_path`, `ALTER DATABASE … SET`, from
    /// this database or another, taking effect on the pool's next connection — no longer changes
    /// which table an unqualified name means, so what runs is what was classified.
    pub async fn pin_search_paths(&self) -> Result<(), DbError> {
        async fn read(pool: &Pool) -> Result<String, DbError> {
            let conn = pool.get().await.map_err(DbError::pool)?;
            let row = conn
                .query_one("SELECT pg_catalog.current_schemas(false)::text[]", &[])
                .await
                .map_err(DbError::from_pg)?;
            let schemas: Vec<String> = row.get(0);
            let list = if schemas.is_empty() {
                "''".to_string()
            } else {
                schemas.iter().map(|s| quote_ident(s)).collect::<Vec<_>>().join(", ")
            };
            Ok(format!("SET LOCAL search_path = {list}; "))
        }
        if self.paths.agent.get().is_none() {
            let agent = read(&self.pool).await?;
            let change = if self.separate_change_login {
                read(&self.change).await?
            } else {
                agent.clone()
            };
            let _ = self.paths.agent.set(agent);
            let _ = self.paths.change.set(change);
        }
        Ok(())
    }

    /// The same database, for one call: each transaction it runs is tagged with `tag`.
    pub fn for_call(&self, tag: CallTag) -> Database {
        Database {
            tag: Some(std::sync::Arc::new(tag)),
            ..self.clone()
        }
    }

    /// A connection as the agent's login, for pgwarden's own checks.
    pub async fn agent_client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool.get().await.map_err(DbError::pool)
    }

    pub async fn facts(&self) -> Result<ServerFacts, DbError> {
        let conn = self.pool.get().await.map_err(DbError::pool)?;
        let row = conn
            .query_one(
                "SELECT current_setting('server_version'), current_user::text, current_database()::text, \
                 (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
                &[],
            )
            .await
            .map_err(DbError::from_pg)?;
        Ok(ServerFacts {
            version: row.get(0),
            user: row.get(1),
            database: row.get(2),
            superuser: row.get(3),
        })
    }
}
