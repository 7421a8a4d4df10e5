//! A PostgreSQL cluster run from the system's server binaries: find them, `initdb`, start, stop.
//! Used by the embedded sandbox and by the test suite; listens only on a Unix socket in its own directory.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; tried {tried}. Install them \
         (Debian/Ubuntu: `sudo apt-get install postgresql`, Fedora: `sudo dnf install postgresql-server`, \
         macOS: `brew install postgresql@17`) and, if they are somewhere else, set PGWARDEN_PG_BINDIR to the \
         directory holding them (in the MCP client's `env` for a server it starts); or point pgwarden at an \
         existing server with DATABASE_URL"
    )]
    NoBinaries { tried: String },
    #[error(
        "PGWARDEN_PG_BINDIR is `{0}`, which does not hold initdb, pg_ctl and postgres; give the `bin` directory of \
         a PostgreSQL installation"
    )]
    BadBindir(String),
    #[error(
        "running as root, the sandbox cluster must run as the `postgres` OS user, which does not exist; \
         create it (`useradd --system postgres`) or run pgwarden as a normal user"
    )]
    NoPostgresUser,
    #[error("socket path `{0}` is too long for a Unix socket (max 107 bytes); choose a shorter sandbox directory")]
    SocketPathTooLong(String),
    #[error("{action} failed in `{dir}`: {detail}")]
    Io {
        action: &'static str,
        dir: String,
        detail: String,
    },
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
}

/// The OS account that owns and runs the cluster: ourselves, or `postgres` when we are root.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// `None` means "the current user"; as root, the `postgres` account.
    pub fn for_current_process() -> Result<Option<Owner>, ClusterError> {
        if rustix::process::geteuid().as_raw() != 0 {
            return Ok(None);
        }
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or(ClusterError::NoPostgresUser)?;
        let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
        Ok(Some(Owner { uid, gid }))
    }
}

/// Where to look for the server binaries.
pub struct Search {
    /// `PGWARDEN_PG_BINDIR`: used alone when set.
    pub explicit: Option<PathBuf>,
    /// `PATH`.
    pub path: Option<std::ffi::OsString>,
    /// Prefix for the well-known install locations (`/`; a fake tree in tests).
    pub root: PathBuf,
    /// Ask `pg_config --bindir`.
    pub pg_config: bool,
}

impl Search {
    pub fn from_env() -> Search {
        Search {
            explicit: std::env::var_os("PGWARDEN_PG_BINDIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            path: std::env::var_os("PATH"),
            root: PathBuf::from("/"),
            pg_config: true,
        }
    }
}

/// Install locations that `PATH` often misses, each `(directory with one `*`, binaries below it)`:
/// Debian/Ubuntu, PGDG RPMs, Homebrew's keg-only formulae (Apple silicon and Intel; a server started
/// from the Dock gets launchd's minimal `PATH`), and Postgres.app.
const INSTALLS: &[(&str, &str)] = &[
    ("usr/lib/postgresql/*", "bin"),
    ("usr/pgsql-*", "bin"),
    ("opt/homebrew/opt/postgresql@*", "bin"),
    ("usr/local/opt/postgresql@*", "bin"),
    ("opt/homebrew/opt/postgresql*", "bin"),
    ("usr/local/opt/postgresql*", "bin"),
    ("Applications/Postgres.app/Contents/Versions/*", "bin"),
];

/// Finds a directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn find_binaries() -> Result<PathBuf, ClusterError> {
    find_binaries_in(&Search::from_env())
}

/// [`find_binaries`] over an explicit search: `PGWARDEN_PG_BINDIR` alone when set; else
/// `pg_config --bindir`, `PATH`, then the install locations, newest version first.
pub fn find_binaries_in(search: &Search) -> Result<PathBuf, ClusterError> {
    let complete = |dir: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file());
    if let Some(dir) = &search.explicit {
        return if complete(dir) {
            Ok(dir.clone())
        } else {
            Err(ClusterError::BadBindir(dir.display().to_string()))
        };
    }
    let mut tried = Vec::new();
    if search.pg_config {
        tried.push("`pg_config --bindir`".to_string());
        if let Ok(out) = Command::new("pg_config").arg("--bindir").stdin(Stdio::null()).output()
            && out.status.success()
        {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if complete(&dir) {
                return Ok(dir);
            }
        }
    }
    if let Some(path) = &search.path {
        tried.push("PATH".to_string());
        for dir in std::env::split_paths(path) {
            if complete(&dir) {
                return Ok(dir);
            }
        }
    }
    for (pattern, bin) in INSTALLS {
        let (parent, prefix) = pattern.rsplit_once('/').unwrap_or(("", pattern));
        let prefix = prefix.trim_end_matches('*');
        tried.push(format!("/{pattern}/{bin}"));
        let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(search.root.join(parent))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let version = name.strip_prefix(prefix)?.trim_start_matches('@');
                Some((version_key(version), e.path().join(bin)))
            })
            .filter(|(_, dir)| complete(dir))
            .collect();
        found.sort();
        if let Some((_, dir)) = found.pop() {
            return Ok(dir);
        }
    }
    Err(ClusterError::NoBinaries {
        tried: tried.join(", "),
    })
}

/// Orders `17`, `16.4`, `latest` (highest) and `` (an unversioned install, lowest).
fn version_key(v: &str) -> Vec<u32> {
    if v == "latest" {
        return vec![u32::MAX];
    }
    v.split(['.', '-', '_']).map(|p| p.parse().unwrap_or(0)).collect()
}

/// A cluster laid out under one directory: `data/` (PGDATA), `run/` (socket), `postgres.log`.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub bindir: PathBuf,
    pub dir: PathBuf,
    pub owner: Option<Owner>,
    pub port: u16,
}

impl Cluster {
    pub fn new(dir: PathBuf, bindir: PathBuf, owner: Option<Owner>) -> Result<Cluster, ClusterError> {
        let cluster = Cluster {
            bindir,
            dir,
            owner,
            port: 5432,
        };
        let socket = cluster.socket_dir().join(format!(".s.PGSQL.{}", cluster.port));
        if socket.as_os_str().len() > 107 {
            return Err(ClusterError::SocketPathTooLong(socket.display().to_string()));
        }
        Ok(cluster)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }
    pub fn is_initialized(&self) -> bool {
        self.data_dir().join("PG_VERSION").is_file()
    }

    /// Creates `dir` (owned by the cluster's owner, mode 0700) if needed.
    pub fn prepare_dir(&self) -> Result<(), ClusterError> {
        for dir in [&self.dir, &self.socket_dir()] {
            std::fs::create_dir_all(dir).map_err(|e| self.io("creating the directory", e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| self.io("setting permissions", e))?;
            if let Some(o) = self.owner {
                std::os::unix::fs::chown(dir, Some(o.uid), Some(o.gid)).map_err(|e| self.io("chown", e))?;
            }
        }
        Ok(())
    }

    /// `initdb` with trust auth on the private socket only, then our settings appended to postgresql.conf.
    /// `extra` settings (e.g. `fsync = off` for tests) are appended as given.
    pub fn init(&self, extra: &[&str]) -> Result<(), ClusterError> {
        self.prepare_dir()?;
        let data = self.data_dir();
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| self.io("removing an incomplete data directory", e))?;
        }
        self.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth-local=trust".as_ref(),
                "--auth-host=reject".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--no-locale".as_ref(),
                "--no-instructions".as_ref(),
            ],
        )?;
        let quote = |p: &Path| p.display().to_string().replace('\'', "''");
        let mut conf = format!(
            "\n# added by pgwarden: private Unix socket only\nlisten_addresses = ''\nport = {}\n\
             unix_socket_directories = '{}'\nunix_socket_permissions = 0700\n",
            self.port,
            quote(&self.socket_dir())
        );
        for line in extra {
            conf.push_str(line);
            conf.push('\n');
        }
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| self.io("writing postgresql.conf", e))
    }

    pub fn is_running(&self) -> bool {
        self.is_initialized()
            && self
                .command("pg_ctl")
                .args(["status", "-D"])
                .arg(self.data_dir())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
    }

    pub fn start(&self) -> Result<(), ClusterError> {
        let log = self.log_file();
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
            ],
        )
        .map(|_| ())
        .map_err(|e| match e {
            ClusterError::Command { command, output } => ClusterError::Command {
                command,
                output: format!("{output}\nserver log `{}`:\n{}", log.display(), tail(&log, 15)),
            },
            other => other,
        })
    }

    pub fn stop(&self) -> Result<(), ClusterError> {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-w".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
            ],
        )
        .map(|_| ())
    }

    /// A ready-to-run command for one of the cluster's binaries, as the cluster's owner,
    /// with stdout captured (our own stdout is the MCP channel).
    pub fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(binary));
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.env_remove("PGDATA").env("LC_ALL", "C");
        if let Some(o) = self.owner {
            cmd.uid(o.uid).gid(o.gid);
        }
        cmd
    }

    /// Connection settings for a user and database on this cluster's socket.
    pub fn connect_config(&self, user: &str, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.port)
            .user(user)
            .dbname(dbname)
            .application_name("pgwarden")
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        config
    }

    fn run(&self, binary: &str, args: &[&std::ffi::OsStr]) -> Result<Output, ClusterError> {
        let mut cmd = self.command(binary);
        cmd.args(args);
        let command = format!(
            "{binary} {}",
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
        );
        let out = cmd.output().map_err(|e| ClusterError::Command {
            command: command.clone(),
            output: e.to_string(),
        })?;
        if !out.status.success() {
            let output = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Err(ClusterError::Command {
                command,
                output: output.trim().to_string(),
            });
        }
        Ok(out)
    }

    fn io(&self, action: &'static str, e: std::io::Error) -> ClusterError {
        ClusterError::Io {
            action,
            dir: self.dir.display().to_string(),
            detail: e.to_string(),
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(root: &Path, dir: &str) -> PathBuf {
        let bin = root.join(dir);
        std::fs::create_dir_all(&bin).unwrap();
        for b in ["initdb", "pg_ctl", "postgres"] {
            std::fs::write(bin.join(b), "").unwrap();
        }
        bin
    }

    fn search(root: &Path) -> Search {
        Search {
            explicit: None,
            path: Some("/nonexistent-a:/nonexistent-b".into()),
            root: root.to_path_buf(),
            pg_config: false,
        }
    }

    /// Issue 17 item 1: a keg-only Homebrew PostgreSQL (and Postgres.app) was never found, and the
    /// error did not say where pgwarden had looked or how to point it at the binaries.
    #[test]
    fn homebrew_and_postgres_app_installs_are_found_newest_first() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let e = find_binaries_in(&search(r)).unwrap_err().to_string();
        assert!(
            e.contains("/opt/homebrew/opt/postgresql@*/bin")
                && e.contains("/Applications/Postgres.app/Contents/Versions/*/bin")
                && e.contains("PGWARDEN_PG_BINDIR"),
            "{e}"
        );
        let app = install(r, "Applications/Postgres.app/Contents/Versions/16/bin");
        assert_eq!(find_binaries_in(&search(r)).unwrap(), app);
        install(r, "usr/local/opt/postgresql@15/bin");
        let newest = install(r, "opt/homebrew/opt/postgresql@17/bin");
        install(r, "opt/homebrew/opt/postgresql@16/bin");
        std::fs::create_dir_all(r.join("opt/homebrew/opt/postgresql@18/bin")).unwrap(); // incomplete
        assert_eq!(find_binaries_in(&search(r)).unwrap(), newest);
        // The variable wins, and a wrong one is named.
        let explicit = install(r, "custom/pg/bin");
        let mut s = search(r);
        s.explicit = Some(explicit.clone());
        assert_eq!(find_binaries_in(&s).unwrap(), explicit);
        s.explicit = Some(r.join("custom"));
        assert!(
            find_binaries_in(&s)
                .unwrap_err()
                .to_string()
                .contains("does not hold initdb")
        );
        assert!(version_key("latest") > version_key("17") && version_key("16.4") > version_key("16"));
    }
}
