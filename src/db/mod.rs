//! Everything that talks to PostgreSQL: the pool, read execution, catalog discovery, value
//! decoding, and the clusters pgwarden starts itself (embedded sandbox, tests).

pub mod budget;
pub mod catalog;
pub mod cluster;
pub mod connect;
pub mod export;
pub mod grant;
pub mod mask;
pub mod read;
pub mod sandbox;
mod session;
pub mod values;
pub mod write;

use deadpool_postgres::Pool;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use connect::{ConnectError, Target};
pub use read::{Column, ReadResult};
pub use session::DbError;

/// `"name"`, with embedded quotes doubled: how pgwarden writes every identifier it puts in SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A connected database: the pool, the TLS connector (also needed to cancel queries), and a
/// password-free description for logs.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    tls: MakeRustlsConnect,
    pub display: String,
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
        let pool = connect::connect_pool(&target, pool_size).await?;
        Ok(Database {
            pool,
            tls: target.tls,
            display: target.display,
        })
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
