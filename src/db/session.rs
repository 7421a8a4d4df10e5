//! One call's use of a pooled connection: a READ ONLY transaction that has taken its snapshot, and a
//! reset (`ROLLBACK`, `DISCARD ALL`) before the connection can serve another call.

use std::time::Duration;

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::IsolationLevel;
use tokio_util::sync::CancellationToken;

use super::Database;

/// What went wrong talking to Postgres. `Sql` is the model's business (it carries SQLSTATE and
/// message); `Unavailable` is the operator's and is shown to the model without internals.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{}", sql_message(.code, .message, .detail, .hint, .position))]
    Sql {
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
        position: Option<u32>,
    },
    #[error("{0}")]
    Client(String),
    #[error("the call was cancelled; nothing was kept")]
    Cancelled,
    #[error("the database did not answer within {0:?}; the query was cancelled")]
    Deadline(Duration),
    #[error("the database is unavailable right now; try again shortly")]
    Unavailable(String),
}

fn sql_message(
    code: &str,
    message: &str,
    detail: &Option<String>,
    hint: &Option<String>,
    position: &Option<u32>,
) -> String {
    let mut out = format!("SQL error {code}: {message}");
    if let Some(p) = position {
        out.push_str(&format!(" (at character {p})"));
    }
    if let Some(d) = detail {
        out.push_str(&format!("\ndetail: {d}"));
    }
    if let Some(h) = hint {
        out.push_str(&format!("\nhint: {h}"));
    }
    out
}

impl DbError {
    pub fn from_pg(e: tokio_postgres::Error) -> DbError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code().to_string();
            let hint = db
                .hint()
                .map(str::to_string)
                .or_else(|| our_hint(&code).map(str::to_string));
            let position = match db.position() {
                Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p),
                _ => None,
            };
            return DbError::Sql {
                code,
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint,
                position,
            };
        }
        if e.is_closed() {
            return DbError::Unavailable(e.to_string());
        }
        // Client-side problems with well-formed input, e.g. a statement that expects parameters.
        DbError::Client(e.to_string())
    }

    pub fn pool(e: deadpool_postgres::PoolError) -> DbError {
        DbError::Unavailable(e.to_string())
    }

    /// SQLSTATE when this is a Postgres error.
    pub fn code(&self) -> Option<&str> {
        match self {
            DbError::Sql { code, .. } => Some(code),
            _ => None,
        }
    }
}

fn our_hint(code: &str) -> Option<&'static str> {
    match code {
        "25006" => Some("pgwarden runs `query` in a READ ONLY transaction; this statement tried to write"),
        "25001" => Some("the transaction mode cannot be changed: pgwarden's read transaction has already started"),
        "57014" => Some("the statement hit pgwarden's statement_timeout; narrow the query (WHERE, LIMIT) or aggregate"),
        "42601" => Some("a syntax error: fix the statement near the position named (one statement per call)"),
        // tokio-postgres stops reading a Bind or Parse reply at BindComplete/RowDescription, so a
        // statement_timeout that fires at the Sync right after is only seen as this error on the
        // next step. In pgwarden's own calls that is what it means.
        "25P02" => Some(
            "an earlier step of this call was cancelled, almost always by pgwarden's statement_timeout: \
             narrow the query (WHERE, LIMIT) or aggregate",
        ),
        _ => None,
    }
}

/// Our own fixed text, run right after BEGIN: a transaction-local timeout, who the call is for
/// (see [`CallTag`]), then a statement that takes the snapshot and checks that Postgres lexes as
/// pgwarden's parser does.
fn snapshot_sql(timeout: Duration, tag: Option<&CallTag>, search_path: Option<&String>) -> String {
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
    let tag = tag.map(CallTag::sql).unwrap_or_default();
    let path = search_path.map(String::as_str).unwrap_or_default();
    format!(
        "SET LOCAL statement_timeout = {ms}; {path}{tag}{}",
        super::connect::LEXING_CHECK_SQL
    )
}

/// Who a call's transactions run for, set transaction-locally in each of them: `application_name`
/// and `pgwarden.principal` (so `pg_stat_activity`, server logs and pgaudit name the person), and the
/// database role the operator mapped the caller to (`SET LOCAL ROLE`). The login stays the ceiling:
/// Postgres only lets it take roles it is a member of, and `RESET ROLE` returns to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTag {
    pub principal: Option<String>,
    pub role: Option<String>,
}

impl CallTag {
    /// The statements, ending in `; `. Values are `U&'…'` literals with every character but
    /// ASCII letters and digits escaped, identifiers are quoted: no principal or role name can
    /// change what runs. (`U&` strings are an error unless `standard_conforming_strings` is on, so
    /// under other lexing settings the transaction fails rather than runs.) `SET`, not
    /// `set_config()`, which `pgwarden setup` takes away from the agent.
    fn sql(&self) -> String {
        let literal = |s: &str| {
            let mut out = String::from("U&'");
            for c in s.chars() {
                match c {
                    c if c.is_ascii_alphanumeric() => out.push(c),
                    // Postgres text cannot hold NUL.
                    '\0' => out.push_str("\\FFFD"),
                    c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\{:04X}", c as u32)),
                    c => out.push_str(&format!("\\+{:06X}", c as u32)),
                }
            }
            out.push('\'');
            out
        };
        let mut sql = String::new();
        if let Some(p) = &self.principal {
            // application_name holds at most 63 bytes of printable ASCII.
            let app: String = format!("pgwarden: {p}")
                .chars()
                .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
                .take(63)
                .collect();
            sql.push_str(&format!(
                "SET LOCAL application_name = {}; SET LOCAL pgwarden.principal = {}; ",
                literal(&app),
                literal(p)
            ));
        }
        if let Some(role) = &self.role {
            sql.push_str(&format!("SET LOCAL ROLE {}; ", super::quote_ident(role)));
        }
        sql
    }
}

/// A pooled connection checked out for one call.
pub(super) struct Session {
    conn: Option<Object>,
    db: Database,
    /// Set when a statement used a type that is not built in: tokio-postgres then prepared its own
    /// type-lookup statements, which `DISCARD ALL` deallocates while the client keeps using them,
    /// so such a connection is closed instead of reset.
    pub(super) custom_types: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// True when `statement` takes or returns a type that is not built in (an enum, a domain, a
/// composite such as a view's row type, or an array of one).
pub(super) fn uses_custom_types(statement: &tokio_postgres::Statement) -> bool {
    let custom = |t: &tokio_postgres::types::Type| tokio_postgres::types::Type::from_oid(t.oid()).is_none();
    statement.columns().iter().any(|c| custom(c.type_())) || statement.params().iter().any(custom)
}

impl Session {
    /// A connection as the agent's login.
    pub(super) async fn open(db: &Database) -> Result<Session, DbError> {
        let conn = db.pool.get().await.map_err(DbError::pool)?;
        Ok(Session {
            conn: Some(conn),
            db: db.clone(),
            custom_types: Default::default(),
        })
    }

    /// A connection as the login approved changes run as.
    pub(super) async fn open_change(db: &Database) -> Result<Session, DbError> {
        let conn = db.change.get().await.map_err(DbError::pool)?;
        Ok(Session {
            conn: Some(conn),
            db: db.clone(),
            custom_types: Default::default(),
        })
    }

    /// `BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY`, a transaction-local `statement_timeout`,
    /// then `SELECT 1` so the snapshot exists before any agent text runs: after that, nothing in the
    /// transaction can switch it to read-write (PostgreSQL refuses `SET TRANSACTION READ WRITE` once a
    /// query has run in the transaction).
    pub(super) async fn begin_read(&mut self, timeout: Duration) -> Result<Transaction<'_>, DbError> {
        let setup = snapshot_sql(timeout, self.db.tag.as_deref(), self.db.paths.agent.get());
        let tx = self.start_read_only().await?;
        tx.batch_execute(&setup).await.map_err(DbError::from_pg)?;
        Ok(tx)
    }

    /// [`Session::begin_read`] plus Parse/Describe of `sql`, pipelined: the snapshot batch and the
    /// prepare travel together (one round trip). Parsing executes nothing, so this is as safe as
    /// waiting, and the snapshot batch is still sent — and run — first.
    pub(super) async fn begin_read_prepared(
        &mut self,
        timeout: Duration,
        sql: &str,
    ) -> Result<(Transaction<'_>, tokio_postgres::Statement), DbError> {
        let custom_types = self.custom_types.clone();
        let setup = snapshot_sql(timeout, self.db.tag.as_deref(), self.db.paths.agent.get());
        let tx = self.start_read_only().await?;
        let (snapshot, statement) = futures_util::future::join(tx.batch_execute(&setup), tx.prepare(sql)).await;
        snapshot.map_err(DbError::from_pg)?;
        // Set even when the prepare failed: a type lookup may have happened before the error.
        custom_types.store(
            statement.as_ref().map(uses_custom_types).unwrap_or(true),
            std::sync::atomic::Ordering::Relaxed,
        );
        let statement = statement.map_err(DbError::from_pg)?;
        Ok((tx, statement))
    }

    /// A read-write transaction for an approved change, with the transaction-local timeout.
    pub(super) async fn begin_write(&mut self, timeout: Duration) -> Result<Transaction<'_>, DbError> {
        let setup = snapshot_sql(timeout, self.db.tag.as_deref(), self.db.paths.change.get());
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| DbError::Unavailable("connection already released".into()))?;
        let tx = conn
            .build_transaction()
            .read_only(false)
            .start()
            .await
            .map_err(DbError::from_pg)?;
        tx.batch_execute(&setup).await.map_err(DbError::from_pg)?;
        Ok(tx)
    }

    async fn start_read_only(&mut self) -> Result<Transaction<'_>, DbError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| DbError::Unavailable("connection already released".into()))?;
        conn.build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(DbError::from_pg)
    }

    /// Runs `work` against this session, bounded by the caller's cancellation and a client-side
    /// deadline (a backstop for `statement_timeout`). When either fires, the running query is
    /// cancelled on the server and the connection is thrown away rather than reused.
    pub(super) async fn guarded<T, E: From<DbError>>(
        &mut self,
        ct: &CancellationToken,
        deadline: Duration,
        work: impl AsyncFnOnce(&mut Session) -> Result<T, E>,
    ) -> Result<T, E> {
        let cancel = self.conn.as_ref().map(|c| c.cancel_token());
        let outcome = tokio::select! {
            r = work(self) => return r,
            _ = ct.cancelled() => DbError::Cancelled,
            _ = tokio::time::sleep(deadline) => DbError::Deadline(deadline),
        };
        self.abandon_with(cancel);
        Err(outcome.into())
    }

    /// Cancels whatever the connection is still running (e.g. the rest of a result cut short) and
    /// throws the connection away rather than reusing it.
    pub(super) fn abandon(&mut self) {
        let cancel = self.conn.as_ref().map(|c| c.cancel_token());
        self.abandon_with(cancel);
    }

    fn abandon_with(&mut self, cancel: Option<tokio_postgres::CancelToken>) {
        if let Some(token) = cancel {
            let tls = self.db.tls.clone();
            tokio::spawn(async move {
                if let Err(e) = token.cancel_query(tls).await {
                    tracing::warn!("cancelling an abandoned query failed: {e}");
                }
            });
        }
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}

impl Drop for Session {
    /// Resets the connection in the background (the caller already has its answer): the `ROLLBACK`
    /// queued when the transaction was dropped, then `DISCARD ALL`, which also drops advisory locks,
    /// prepared statements, temp tables, LISTENs and every `SET`. Only a connection that reset
    /// cleanly goes back to the pool.
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.custom_types.load(std::sync::atomic::Ordering::Relaxed) {
            return drop(Object::take(conn));
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return drop(Object::take(conn));
        };
        handle.spawn(async move {
            // The dropped transaction already queued its ROLLBACK. DISCARD ALL refuses to run inside a
            // transaction block, so if anything were still open it fails and the connection is dropped.
            // Bounded: a silent server must not keep the connection (and its pool slot) for ever.
            let reset =
                tokio::time::timeout(std::time::Duration::from_secs(5), conn.batch_execute("DISCARD ALL")).await;
            match reset {
                Ok(Ok(())) => {
                    // DISCARD ALL deallocated every prepared statement: forget the cached ones.
                    // (Calls that made tokio-postgres prepare type lookups never get here.)
                    conn.clear_type_cache();
                    conn.statement_cache.clear();
                }
                Ok(Err(e)) => {
                    tracing::debug!("connection reset failed, dropping it: {e}");
                    drop(Object::take(conn));
                }
                Err(_) => {
                    tracing::debug!("connection reset timed out, dropping it");
                    drop(Object::take(conn));
                }
            }
        });
    }
}
