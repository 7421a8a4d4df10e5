//! Settings for `serve`, parsed and validated once in `main` and passed down as plain values.
//! Nothing below `main` reads the environment.

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::{policy::Policy, units::parse_byte_size};

/// Which database pgwarden serves.
#[derive(Debug, Clone)]
pub enum DatabaseChoice {
    /// A libpq-style URL or `key=value` string given by the operator.
    Url(String),
    /// The embedded sandbox cluster in this directory.
    Sandbox(PathBuf),
    /// The `[[database]]` entries of a `pgwarden.toml`, the first the default.
    Declared(Vec<DeclaredDatabase>),
}

/// Limits applied to every read.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows returned when the model does not ask for a number. Defaults to 500.
    pub default_max_rows: u32,
    /// The most rows any call may return, whatever the model asks. Defaults to 10 000.
    pub max_rows_limit: u32,
    /// Per-statement time limit inside Postgres. Defaults to 15 s.
    pub statement_timeout: Duration,
    /// The most result bytes (as Postgres sends them) any call returns. Defaults to 16 MiB.
    pub max_result_bytes: u64,
}

/// 16 MiB: room for tens of thousands of ordinary rows, while a handful of huge values cannot
/// grow a response (and the server's memory) into gigabytes.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 16 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_max_rows: 500,
            max_rows_limit: 10_000,
            statement_timeout: Duration::from_secs(15),
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseChoice,
    /// The login approved changes run as, when not the agent's. Defaults to none (the same login).
    pub change_database: Option<String>,
    /// The audit trail. Defaults to `$XDG_STATE_HOME/pgwarden/audit.jsonl`.
    pub audit_log: PathBuf,
    /// The signing key, checkpoint file and rotation size of the trail.
    pub audit: crate::audit::AuditOptions,
    /// How often the head of the trail is signed (also at rotation and shutdown). Defaults to 5 s.
    pub checkpoint_every: Duration,
    /// Where exports go. Defaults to `$XDG_DATA_HOME/pgwarden/exports`.
    pub export_dir: PathBuf,
    /// A private directory (made 0700) for the review console's sign-in redirect pages. Defaults to
    /// `$XDG_RUNTIME_DIR/pgwarden`, else `$XDG_STATE_HOME/pgwarden/console` (see `default_location`).
    pub console_dir: PathBuf,
    pub limits: Limits,
    /// Connections kept open to Postgres. Defaults to 4.
    pub pool_size: usize,
    /// Defaults to the built-in `tool-policies/default.toml`.
    pub policy: Arc<Policy>,
    /// Who uses this server, for rules with `principals` (stdio). Defaults to none.
    pub principal: Option<String>,
    /// Where approvals and the audit trail live for `serve --http` (shared by replicas). Defaults
    /// to none: with the sandbox, a `pgwarden_state` database in its cluster; with
    /// `--database-url`, this process's memory and the audit file.
    pub state_url: Option<String>,
}

/// One database of a `pgwarden.toml` (`[[database]]`), as written: its URL still a reference to
/// be resolved by `main` (which alone reads the environment).
#[derive(Debug, Clone)]
pub struct DeclaredDatabase {
    /// What tools' `database` argument, policy `databases = [...]` and `NAME:` prefixes call it.
    pub name: String,
    pub url: UrlFrom,
    /// The login approved changes run as, when not the agent's.
    pub change_url: Option<UrlFrom>,
    /// Defaults to `--pool-size`.
    pub pool_size: Option<usize>,
    /// Each unset value defaults to the `serve` flag.
    pub max_rows: Option<u32>,
    pub max_rows_limit: Option<u32>,
    pub statement_timeout: Option<Duration>,
    pub max_result_bytes: Option<u64>,
}

/// Where a connection string comes from. Inline only without a password: the file is meant to be
/// committed, its secrets are not.
#[derive(Clone)]
pub enum UrlFrom {
    Inline(String),
    /// The name of an environment variable holding it.
    Env(String),
    /// A file holding it (e.g. a mounted secret), relative to the config file's directory.
    File(PathBuf),
}

impl std::fmt::Debug for UrlFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlFrom::Inline(_) => f.write_str("Inline(..)"),
            UrlFrom::Env(v) => write!(f, "Env({v})"),
            UrlFrom::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl UrlFrom {
    /// The connection string: `env` looks a variable up (main passes `std::env::var`).
    pub fn resolve(&self, what: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
        let text = match self {
            UrlFrom::Inline(url) => url.clone(),
            UrlFrom::Env(var) => match env(var) {
                Some(v) if !v.trim().is_empty() => v,
                Some(_) => {
                    return Err(ConfigError(format!(
                        "{what}: the environment variable `{var}` is empty"
                    )));
                }
                None => {
                    return Err(ConfigError(format!(
                        "{what}: the environment variable `{var}` is not set"
                    )));
                }
            },
            UrlFrom::File(path) => std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("{what}: cannot read `{}`: {e}", path.display())))?,
        };
        let text = text.trim().to_string();
        if text.is_empty() {
            return Err(ConfigError(format!("{what}: the connection string is empty")));
        }
        Ok(text)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    database: Vec<RawDatabase>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    name: String,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    change_url: Option<String>,
    change_url_env: Option<String>,
    change_url_file: Option<PathBuf>,
    pool_size: Option<i64>,
    max_rows: Option<i64>,
    max_rows_limit: Option<i64>,
    statement_timeout: Option<String>,
    max_result_bytes: Option<String>,
}

/// A database name as the policy and the tools write it: a word of ASCII letters, digits, `_`, `-`.
pub fn is_database_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Reads a `pgwarden.toml`: its `[[database]]` entries, first one the default.
pub fn load_databases(path: &std::path::Path) -> Result<Vec<DeclaredDatabase>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read the config `{}`: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    parse_databases(&path.display().to_string(), &text, dir)
}

/// As [`load_databases`], from text; `file` names it in errors, `dir` anchors relative `*_file` paths.
pub fn parse_databases(file: &str, text: &str, dir: &std::path::Path) -> Result<Vec<DeclaredDatabase>, ConfigError> {
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| ConfigError(format!("`{file}`: {}", e.to_string().trim_end())))?;
    if raw.database.is_empty() {
        return Err(ConfigError(format!(
            "`{file}` declares no `[[database]]`; add one (`name = \"prod\"`, `url_env = \"PROD_DATABASE_URL\"`)"
        )));
    }
    let mut out: Vec<DeclaredDatabase> = Vec::new();
    for d in raw.database {
        let what = format!("`{file}`, database `{}`", d.name);
        if !is_database_name(&d.name) {
            return Err(ConfigError(format!(
                "{what}: a name is a word of letters, digits, `_` and `-` (at most 63), e.g. `prod`"
            )));
        }
        // `Prod` and `prod` would be two databases a person reads as one.
        if let Some(first) = out.iter().find(|o| o.name.eq_ignore_ascii_case(&d.name)) {
            return Err(ConfigError(format!(
                "{what} is declared twice (as `{}` before); names must be unique, whatever their case",
                first.name
            )));
        }
        let url = url_from(&what, "url", d.url, d.url_env, d.url_file, dir)?.ok_or_else(|| {
            ConfigError(format!(
                "{what}: give `url_env` (an environment variable) or `url_file`"
            ))
        })?;
        let change_url = url_from(
            &what,
            "change_url",
            d.change_url,
            d.change_url_env,
            d.change_url_file,
            dir,
        )?;
        let number = |key: &str, v: Option<i64>, max: i64| -> Result<Option<i64>, ConfigError> {
            match v {
                Some(n) if n < 1 || n > max => Err(ConfigError(format!("{what}: `{key}` must be between 1 and {max}"))),
                other => Ok(other),
            }
        };
        let statement_timeout = d
            .statement_timeout
            .map(|t| {
                humantime::parse_duration(&t)
                    .map_err(|e| ConfigError(format!("{what}: `statement_timeout = \"{t}\"`: {e} (e.g. `15s`)")))
            })
            .transpose()?;
        let max_result_bytes = d
            .max_result_bytes
            .map(|b| parse_byte_size(&b).map_err(|e| ConfigError(format!("{what}: `max_result_bytes`: {e}"))))
            .transpose()?;
        out.push(DeclaredDatabase {
            pool_size: number("pool_size", d.pool_size, 256)?.map(|n| n as usize),
            max_rows: number("max_rows", d.max_rows, u32::MAX.into())?.map(|n| n as u32),
            max_rows_limit: number("max_rows_limit", d.max_rows_limit, u32::MAX.into())?.map(|n| n as u32),
            statement_timeout,
            max_result_bytes,
            name: d.name,
            url,
            change_url,
        });
    }
    Ok(out)
}

/// One of `key`, `key_env`, `key_file`; an inline one must not carry a password.
fn url_from(
    what: &str,
    key: &str,
    inline: Option<String>,
    env: Option<String>,
    file: Option<PathBuf>,
    dir: &std::path::Path,
) -> Result<Option<UrlFrom>, ConfigError> {
    let given = [inline.is_some(), env.is_some(), file.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ConfigError(format!(
            "{what}: give one of `{key}`, `{key}_env` and `{key}_file`"
        )));
    }
    if let Some(url) = inline {
        let parsed: Result<tokio_postgres::Config, _> = url.parse();
        match parsed {
            Ok(c) if c.get_password().is_some() => {
                return Err(ConfigError(format!(
                    "{what}: `{key}` carries a password; keep secrets out of this file: use `{key}_env` or `{key}_file`"
                )));
            }
            Ok(_) => return Ok(Some(UrlFrom::Inline(url))),
            Err(e) => return Err(ConfigError(format!("{what}: `{key}` is not a connection string ({e})"))),
        }
    }
    if let Some(var) = env {
        if var.trim().is_empty() {
            return Err(ConfigError(format!("{what}: `{key}_env` names no variable")));
        }
        return Ok(Some(UrlFrom::Env(var)));
    }
    Ok(file.map(|f| UrlFrom::File(if f.is_absolute() { f } else { dir.join(f) })))
}

impl Limits {
    /// These limits with a database's own settings over them, validated.
    pub fn for_database(self, d: &DeclaredDatabase) -> Result<Limits, ConfigError> {
        Limits {
            default_max_rows: d.max_rows.unwrap_or(self.default_max_rows),
            max_rows_limit: d.max_rows_limit.unwrap_or(self.max_rows_limit),
            statement_timeout: d.statement_timeout.unwrap_or(self.statement_timeout),
            max_result_bytes: d.max_result_bytes.unwrap_or(self.max_result_bytes),
        }
        .validate()
        .map_err(|e| {
            // Said in the file's words: its keys, not the flags they default to.
            let keys =
                e.0.replace("`--max-rows-limit`", "`max_rows_limit`")
                    .replace("`--max-rows`", "`max_rows`")
                    .replace("`--max-result-bytes`", "`max_result_bytes`")
                    .replace("`--statement-timeout`", "`statement_timeout`");
            ConfigError(format!(
                "database `{}`: {keys} (in the config or the serve flags)",
                d.name
            ))
        })
    }
}

/// A setting that does not make sense, named with the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Limits {
    pub fn validate(self) -> Result<Limits, ConfigError> {
        if self.default_max_rows == 0 || self.max_rows_limit == 0 {
            return Err(ConfigError(
                "`--max-rows` and `--max-rows-limit` must be at least 1".into(),
            ));
        }
        if self.default_max_rows > self.max_rows_limit {
            return Err(ConfigError(format!(
                "`--max-rows` ({}) is above `--max-rows-limit` ({}); lower it or raise the limit",
                self.default_max_rows, self.max_rows_limit
            )));
        }
        if self.max_result_bytes < 1024 {
            return Err(ConfigError(format!(
                "`--max-result-bytes` must be at least 1KiB (got {} bytes); the default is 16MiB",
                self.max_result_bytes
            )));
        }
        if self.statement_timeout < Duration::from_millis(1) {
            return Err(ConfigError(
                "`--statement-timeout` must be at least 1ms (e.g. `15s`)".into(),
            ));
        }
        if self.statement_timeout > crate::policy::MAX_DURATION {
            return Err(ConfigError(format!(
                "`--statement-timeout` is longer than pgwarden allows (at most {}); use a shorter duration",
                humantime::format_duration(crate::policy::MAX_DURATION)
            )));
        }
        Ok(self)
    }
}

/// Refuses an export directory that holds the audit trail: an export (with `overwrite`) could
/// otherwise replace the trail, or sit beside it for anyone reading exports.
pub fn check_export_dir(export_dir: &std::path::Path, audit_log: &std::path::Path) -> Result<(), ConfigError> {
    check_export_dir_holds(export_dir, &[("audit trail", audit_log)])
}

/// Refuses an export directory that holds any of the trail's files (the log, its checkpoints, the
/// signing key): an export must never overwrite or expose them.
pub fn check_export_dir_holds(
    export_dir: &std::path::Path,
    files: &[(&str, &std::path::Path)],
) -> Result<(), ConfigError> {
    let resolve = |p: &std::path::Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let exports = resolve(export_dir);
    for (what, file) in files {
        let dir = file.parent().map(resolve).unwrap_or_default();
        if dir.starts_with(&exports) {
            return Err(ConfigError(format!(
                "the export directory `{}` holds the {what} `{}`; give exports a directory of their own \
                 (`--export-dir`) or move the {what}",
                export_dir.display(),
                file.display()
            )));
        }
    }
    Ok(())
}

/// `--audit-rotate-size`: a byte size (as [`parse_byte_size`]) of at least 4 KiB.
pub fn parse_rotate_size(text: &str) -> Result<u64, String> {
    let bytes = parse_byte_size(text)?;
    if bytes < 4096 {
        return Err(format!(
            "`{text}` is too small to rotate at; give at least 4KiB (e.g. `64MiB`)"
        ));
    }
    Ok(bytes)
}

/// Where pgwarden keeps something by default: `root_path` when running as root (root's home is
/// closed to the `postgres` user), else `$XDG_…/pgwarden/<leaf>` (`xdg`, when absolute) or
/// `~/<home_sub>/pgwarden/<leaf>`, or under `/tmp` without a home.
pub fn default_location(
    is_root: bool,
    root_path: &str,
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
    home_sub: &str,
    leaf: &str,
) -> PathBuf {
    if is_root {
        return PathBuf::from(root_path);
    }
    xdg.filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(home_sub)))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("pgwarden")
        .join(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16 item 16: an export could be written over the audit trail.
    #[test]
    fn an_export_directory_holding_the_audit_trail_is_refused() {
        let d = PathBuf::from("/srv/pgw");
        assert!(check_export_dir(&d, &d.join("audit.jsonl")).is_err());
        assert!(check_export_dir(&d, &d.join("logs/audit.jsonl")).is_err());
        assert!(check_export_dir(&d.join("exports"), &d.join("audit.jsonl")).is_ok());
    }

    #[test]
    fn the_example_database_file_loads() {
        let text = include_str!("../examples/pgwarden.toml");
        let parsed = parse_databases("examples/pgwarden.toml", text, std::path::Path::new("/etc")).unwrap();
        let names: Vec<&str> = parsed.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["prod", "analytics", "staging"]);
        for d in &parsed {
            Limits::default().for_database(d).unwrap();
        }
    }

    #[test]
    fn a_database_file_names_each_database_and_keeps_secrets_out() {
        let dir = std::path::Path::new("/etc/pgwarden");
        let parsed = parse_databases(
            "pgwarden.toml",
            r#"
[[database]]
name = "prod"
url_env = "PROD_URL"
change_url_file = "secrets/prod-change.url"
pool_size = 8
statement_timeout = "3s"
max_rows = 50
max_result_bytes = "1MiB"

[[database]]
name = "replica"
url = "host=/run/postgresql dbname=app user=reader"
"#,
            dir,
        )
        .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].name, "prod");
        assert!(matches!(&parsed[0].url, UrlFrom::Env(v) if v == "PROD_URL"));
        assert!(matches!(&parsed[0].change_url, Some(UrlFrom::File(f)) if f == &dir.join("secrets/prod-change.url")));
        let limits = Limits::default().for_database(&parsed[0]).unwrap();
        assert_eq!(limits.statement_timeout, Duration::from_secs(3));
        assert_eq!(limits.default_max_rows, 50);
        assert_eq!(limits.max_rows_limit, 10_000, "unset values come from the flags");
        assert_eq!(limits.max_result_bytes, 1 << 20);
        assert_eq!(parsed[0].pool_size, Some(8));
        let env = |v: &str| (v == "PROD_URL").then(|| "host=db user=u password=p dbname=prod\n".to_string());
        assert_eq!(
            parsed[0].url.resolve("prod", &env).unwrap(),
            "host=db user=u password=p dbname=prod"
        );
        let missing = parsed[0]
            .url
            .resolve("database `prod`", &|_| None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            missing,
            "database `prod`: the environment variable `PROD_URL` is not set"
        );
        assert!(
            !format!("{parsed:?}").contains("reader"),
            "inline URLs stay out of Debug output"
        );

        let err = |text: &str| parse_databases("p.toml", text, dir).unwrap_err().to_string();
        let e = err("[[database]]\nname = \"a\"\nurl = \"postgres://u:hunter2@h/db\"\n");
        assert!(e.contains("carries a password") && !e.contains("hunter2"), "{e}");
        let e = err("[[database]]\nname = \"a\"\nurl_env = \"A\"\n[[database]]\nname = \"a\"\nurl_env = \"B\"\n");
        assert!(e.contains("declared twice"), "{e}");
        let e = err("[[database]]\nname = \"a\"\nurl_env = \"A\"\n[[database]]\nname = \"A\"\nurl_env = \"B\"\n");
        assert!(e.contains("declared twice (as `a` before)"), "{e}");
        let e = err("[[database]]\nname = \"a b\"\nurl_env = \"A\"\n");
        assert!(e.contains("a name is a word"), "{e}");
        let e = err("[[database]]\nname = \"a\"\n");
        assert!(e.contains("give `url_env`"), "{e}");
        let e = err("[[database]]\nname = \"a\"\nurl_env = \"A\"\nurl_file = \"f\"\n");
        assert!(e.contains("give one of `url`, `url_env` and `url_file`"), "{e}");
        let e = err("[[database]]\nname = \"a\"\nurl_env = \"A\"\npool_size = 0\n");
        assert!(e.contains("`pool_size` must be between 1 and 256"), "{e}");
        let limits = parse_databases(
            "p.toml",
            "[[database]]\nname = \"a\"\nurl_env = \"A\"\nmax_rows = 20000\n",
            dir,
        )
        .unwrap();
        let e2 = Limits::default().for_database(&limits[0]).unwrap_err().to_string();
        assert!(
            e2.contains("database `a`: `max_rows` (20000) is above `max_rows_limit` (10000)"),
            "{e2}"
        );
        let e = err("[[database]]\nname = \"a\"\nurl_env = \"A\"\nhost = \"x\"\n");
        assert!(e.contains("unknown field `host`"), "{e}");
        assert!(err("").contains("declares no `[[database]]`"));
    }

    #[test]
    fn a_rotation_size_is_a_byte_size_of_at_least_4_kib() {
        assert_eq!(parse_rotate_size("64MiB"), Ok(64 << 20));
        assert!(parse_rotate_size("1KiB").unwrap_err().contains("at least 4KiB"));
        assert!(parse_rotate_size("lots").unwrap_err().contains("not a byte size"));
    }

    #[test]
    fn a_statement_timeout_too_long_to_add_to_a_clock_is_refused_at_start() {
        let limits = Limits {
            statement_timeout: Duration::from_secs(u64::MAX),
            ..Limits::default()
        };
        let e = limits.validate().unwrap_err().to_string();
        assert!(
            e.contains("`--statement-timeout` is longer than pgwarden allows"),
            "{e}"
        );
    }

    #[test]
    fn default_locations_follow_xdg_then_home_and_root_goes_elsewhere() {
        let home = Some(PathBuf::from("/home/ada"));
        let at = |root, xdg: Option<&str>, home: Option<PathBuf>| {
            default_location(
                root,
                "/var/lib/pgwarden/sandbox",
                xdg.map(PathBuf::from),
                home,
                ".local/share",
                "sandbox",
            )
        };
        assert_eq!(
            at(false, Some("/data"), home.clone()),
            PathBuf::from("/data/pgwarden/sandbox")
        );
        assert_eq!(
            at(false, Some("relative"), home.clone()),
            PathBuf::from("/home/ada/.local/share/pgwarden/sandbox")
        );
        assert_eq!(at(false, None, None), PathBuf::from("/tmp/pgwarden/sandbox"));
        assert_eq!(
            at(true, Some("/data"), home),
            PathBuf::from("/var/lib/pgwarden/sandbox")
        );
    }

    #[test]
    fn a_result_cap_under_a_kibibyte_is_refused_with_the_fix() {
        let e = Limits {
            max_result_bytes: 100,
            ..Limits::default()
        }
        .validate()
        .expect_err("too small");
        assert_eq!(
            e.to_string(),
            "`--max-result-bytes` must be at least 1KiB (got 100 bytes); the default is 16MiB"
        );
    }
}
