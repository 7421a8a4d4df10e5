//! Settings for `serve`, parsed and validated once in `main` and passed down as plain values.
//! Nothing below `main` reads the environment.

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::policy::Policy;

/// Which database pgwarden serves.
#[derive(Debug, Clone)]
pub enum DatabaseChoice {
    /// A libpq-style URL or `key=value` string given by the operator.
    Url(String),
    /// The embedded sandbox cluster in this directory.
    Sandbox(PathBuf),
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_max_rows: 500,
            max_rows_limit: 10_000,
            statement_timeout: Duration::from_secs(15),
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
    /// Where exports go. Defaults to `$XDG_DATA_HOME/pgwarden/exports`.
    pub export_dir: PathBuf,
    pub limits: Limits,
    /// Connections kept open to Postgres. Defaults to 4.
    pub pool_size: usize,
    /// Defaults to the built-in `tool-policies/default.toml`.
    pub policy: Arc<Policy>,
    /// Who uses this server, for rules with `principals`. Defaults to none.
    pub principal: Option<String>,
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
        if self.statement_timeout < Duration::from_millis(1) {
            return Err(ConfigError(
                "`--statement-timeout` must be at least 1ms (e.g. `15s`)".into(),
            ));
        }
        Ok(self)
    }
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
}
