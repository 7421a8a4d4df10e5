//! Turning a libpq-style database URL into a connected, validated pool.
//! Owns URL pre-processing (TLS options tokio-postgres does not know), TLS setup and start-up errors.

use std::{path::PathBuf, sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Everything that can go wrong before the server is ready. Each message ends with what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid database URL: {0}; expected e.g. `postgres://user:password@host:5432/dbname`")]
    BadUrl(String),
    #[error("cannot read `sslrootcert` file `{path}`: {reason}")]
    RootCert { path: PathBuf, reason: String },
    #[error("cannot reach PostgreSQL at {target}: {reason}; check the host and port, and that the server is running")]
    Unreachable { target: String, reason: String },
    #[error("login to {target} failed: {message} (SQLSTATE {code}); check the user name and password in the URL")]
    Login {
        target: String,
        code: String,
        message: String,
    },
    #[error("database does not exist at {target}: {message}; create it or fix the database name in the URL")]
    NoDatabase { target: String, message: String },
    #[error(
        "TLS with {target} failed: {reason}; use `sslmode=disable` for a server without TLS, or `sslrootcert=/path/ca.pem` to trust a private CA"
    )]
    Tls { target: String, reason: String },
    #[error("PostgreSQL at {target} refused the connection: {message} (SQLSTATE {code})")]
    Refused {
        target: String,
        code: String,
        message: String,
    },
    #[error("connecting to {target} timed out after {secs} s; check the host and port and any firewall in between")]
    Timeout { target: String, secs: u64 },
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
}

/// A parsed target: the tokio-postgres config plus what we decided about TLS.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// `user@host:port/db`, never with the password; safe for logs and messages.
    pub display: String,
}

/// Parses a `postgres://` URL or a `key=value` connection string.
///
/// tokio-postgres only knows `sslmode` disable/prefer/require and no `sslrootcert`, so both are handled
/// here: `verify-ca`/`verify-full` become `require`. Certificates are always verified (webpki roots plus
/// `sslrootcert`), hostnames included. Without an `sslmode`, loopback and Unix-socket hosts connect in
/// plain text and remote hosts use TLS when the server offers it.
pub fn parse_target(url: &str) -> Result<Target, ConnectError> {
    let (cleaned, sslmode, rootcert) = strip_tls_params(url);
    let mut config: tokio_postgres::Config = cleaned
        .parse()
        .map_err(|e: tokio_postgres::Error| ConnectError::BadUrl(redact_err(&e.to_string(), url)))?;
    if config.get_hosts().is_empty() {
        return Err(ConnectError::BadUrl("no host given".into()));
    }
    if config.get_user().is_none() {
        return Err(ConnectError::BadUrl("no user given".into()));
    }
    let local = config.get_hosts().iter().all(|h| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1"),
    });
    match sslmode.as_deref() {
        None | Some("prefer") | Some("allow") if local => config.ssl_mode(SslMode::Disable),
        None | Some("prefer") | Some("allow") => config.ssl_mode(SslMode::Prefer),
        Some("disable") => config.ssl_mode(SslMode::Disable),
        Some("require") | Some("verify-ca") | Some("verify-full") => config.ssl_mode(SslMode::Require),
        Some(other) => {
            return Err(ConnectError::BadUrl(format!(
                "unknown sslmode `{other}`; expected disable, prefer, require, verify-ca or verify-full"
            )));
        }
    };
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    // A peer that vanished without closing the connection is noticed within a minute or so.
    config.keepalives(true).keepalives_idle(Duration::from_secs(30));
    config.application_name("pgwarden");
    let tls = make_tls(rootcert)?;
    let display = describe(&config);
    Ok(Target { config, tls, display })
}

impl Target {
    /// See [`parse_target`].
    pub fn from_url(url: &str) -> Result<Target, ConnectError> {
        parse_target(url)
    }

    /// A target for a cluster we started ourselves (Unix socket, no TLS needed).
    pub fn from_config(config: tokio_postgres::Config) -> Result<Target, ConnectError> {
        let display = describe(&config);
        Ok(Target {
            config,
            tls: make_tls(None)?,
            display,
        })
    }
}

/// `user@host:port/db` for logs; never includes the password.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{}:{}/{}",
        config.get_user().unwrap_or("?"),
        host,
        port,
        config.get_dbname().unwrap_or(config.get_user().unwrap_or("?"))
    )
}

fn strip_tls_params(url: &str) -> (String, Option<String>, Option<PathBuf>) {
    let mut sslmode = None;
    let mut rootcert = None;
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            sslmode = Some(value.to_string());
            true
        }
        "sslrootcert" => {
            rootcert = Some(PathBuf::from(value));
            true
        }
        _ => false,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None, None);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                !take(k, v)
            })
            .collect();
        let mut out = base.to_string();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
        // tokio-postgres only understands the three modes; the real mode is applied after parsing.
        (out, sslmode, rootcert)
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                !take(k.trim(), v.trim().trim_matches('\''))
            })
            .collect();
        (kept.join(" "), sslmode, rootcert)
    }
}

fn make_tls(rootcert: Option<PathBuf>) -> Result<MakeRustlsConnect, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = rootcert {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| ConnectError::RootCert {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(ConnectError::RootCert {
                path,
                reason: "no PEM certificates in it".into(),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ConnectError::RootCert {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Pool(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Never echo a password back: tokio-postgres errors can quote the input.
fn redact_err(msg: &str, url: &str) -> String {
    let mut out = msg.to_string();
    if let Some(pw) = password_of(url) {
        out = out.replace(&pw, "****");
    }
    out
}

fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    let pw = userinfo.split_once(':')?.1;
    (!pw.is_empty()).then(|| pw.to_string())
}

/// Settings that change how PostgreSQL *lexes* SQL, pinned in every connection's startup packet.
/// A startup option outranks role, database and `postgresql.conf` defaults, so an
/// `ALTER DATABASE … SET standard_conforming_strings = off` cannot make Postgres read a backslash
/// differently from pgwarden's parser; `DISCARD ALL` resets to these values, not to the defaults.
/// Each transaction also checks them ([`LEXING_CHECK_SQL`]).
pub const LEXING_OPTIONS: &str = "-c standard_conforming_strings=on -c backslash_quote=off";

/// Fails the transaction with a message naming the setting when lexing is not what pgwarden's
/// parser assumes. Not constant-folded: `current_setting` is only stable.
pub const LEXING_CHECK_SQL: &str = "SELECT CASE WHEN pg_catalog.current_setting('standard_conforming_strings') = 'on' \
     AND pg_catalog.current_setting('backslash_quote') = 'off' THEN 1 \
     ELSE ('pgwarden refuses to run: standard_conforming_strings=' \
           || pg_catalog.current_setting('standard_conforming_strings') || ', backslash_quote=' \
           || pg_catalog.current_setting('backslash_quote'))::int END";

/// `config` with [`LEXING_OPTIONS`] added to whatever `options` it already carries.
pub fn with_lexing_options(config: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut config = config.clone();
    let options = match config.get_options() {
        Some(existing) if !existing.trim().is_empty() => format!("{existing} {LEXING_OPTIONS}"),
        _ => LEXING_OPTIONS.to_string(),
    };
    config.options(options);
    config
}

/// Builds a pool and proves it works by opening one connection now, so a wrong URL fails at start-up.
pub async fn connect_pool(target: &Target, max_size: usize) -> Result<Pool, ConnectError> {
    let manager = Manager::from_config(
        with_lexing_options(&target.config),
        target.tls.clone(),
        // Each call resets its own connection before returning it (see `db::session`), so recycling
        // only has to check that the socket is still open.
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let secs = target.config.get_connect_timeout().map(|d| d.as_secs()).unwrap_or(10);
    // Every wait on the pool is bounded (issue 16 item 13): a Postgres that accepts connections but
    // never answers made calls wait for ever, since the connect timeout covers only the socket.
    let pool = Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(secs + 5)))
        .create_timeout(Some(Duration::from_secs(secs)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| ConnectError::Pool(e.to_string()))?;
    match tokio::time::timeout(Duration::from_secs(secs + 1), pool.get()).await {
        Err(_) => Err(ConnectError::Timeout {
            target: target.display.clone(),
            secs,
        }),
        Ok(Ok(_client)) => Ok(pool),
        Ok(Err(e)) => Err(explain_pool_error(&target.display, secs, e)),
    }
}

fn explain_pool_error(target: &str, secs: u64, e: deadpool_postgres::PoolError) -> ConnectError {
    let target = target.to_string();
    match e {
        deadpool_postgres::PoolError::Backend(pg) => explain_pg_error(target, secs, &pg),
        deadpool_postgres::PoolError::Timeout(_) => ConnectError::Timeout { target, secs },
        other => ConnectError::Pool(other.to_string()),
    }
}

fn explain_pg_error(target: String, secs: u64, e: &tokio_postgres::Error) -> ConnectError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code().to_string();
        let message = db.message().to_string();
        return match code.as_str() {
            "28P01" | "28000" => ConnectError::Login { target, code, message },
            "3D000" => ConnectError::NoDatabase { target, message },
            _ => ConnectError::Refused { target, code, message },
        };
    }
    let reason = source_chain(e);
    let lower = reason.to_lowercase();
    if lower.contains("tls") || lower.contains("certificate") || lower.contains("ssl") {
        ConnectError::Tls { target, reason }
    } else if lower.contains("timed out") || lower.contains("timeout") {
        ConnectError::Timeout { target, secs }
    } else {
        ConnectError::Unreachable { target, reason }
    }
}

/// An error and its causes, `: `-joined, each cause said once (libraries often repeat their
/// source's text); tokio-postgres says only "db error" without them.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_params_are_taken_out_of_urls_and_dsns() {
        let (u, m, r) =
            strip_tls_params("postgres://u:p@h/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x");
        assert_eq!(u, "postgres://u:p@h/db?application_name=x");
        assert_eq!(m.as_deref(), Some("verify-full"));
        assert_eq!(r, Some(PathBuf::from("/ca.pem")));
        let (u, m, _) = strip_tls_params("host=h user=u sslmode=require");
        assert_eq!(u, "host=h user=u");
        assert_eq!(m.as_deref(), Some("require"));
    }

    #[test]
    fn loopback_without_sslmode_is_plain_and_remote_prefers_tls() {
        let t = parse_target("postgres://u@localhost/db").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
        let t = parse_target("postgres://u@db.example.com/db").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Prefer);
        let t = parse_target("postgres://u@localhost/db?sslmode=verify-full").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        let e = parse_target("postgres://u:hunter2@h:notaport/db")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("invalid database URL"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse_target("postgres://u@h/db?sslmode=sometimes")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown sslmode `sometimes`"), "{e}");
    }

    #[test]
    fn display_never_contains_the_password() {
        let t = parse_target("postgres://alice:s3cret@db.example.com:6543/shop").unwrap();
        assert_eq!(t.display, "alice@db.example.com:6543/shop");
    }
}
