//! The `pgwarden` command line. The only place `anyhow` lives and the environment is read.

#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgwarden::{
    approval::{
        StateSealer,
        hub::{Approvals, CardSurface},
    },
    audit::sink::FileSink,
    call::{Principal, Tool},
    config::{DatabaseChoice, Limits, Settings},
    console::Console,
    db::{Target, sandbox::Sandbox},
    pipeline::{Databases, Opening, Shared},
    policy::{Policy, Request},
    server::Session,
    text::quoted,
};

#[derive(Parser)]
#[command(
    name = "pgwarden",
    version,
    about = "MCP server for PostgreSQL with a human in charge of high-impact actions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `serve --help` says beyond its flags.
const SERVE_HELP: &str = "\
Logs go to stderr; PGWARDEN_LOG sets the filter (default `pgwarden=info,rmcp=warn`, e.g.
`PGWARDEN_LOG=pgwarden=debug`). Nothing but MCP messages is written to stdout.

Approvals: a client that can show prompts (elicitation) asks there. Otherwise, or when the policy
requires a local person (`[approval.min_channel]`), pgwarden opens its review console: a page on
127.0.0.1 whose one-time sign-in link is written to a private file in $XDG_RUNTIME_DIR/pgwarden
and opened with $BROWSER or xdg-open; the call returns `pending_approval` and the model waits
with `pgwarden_await`.";

#[derive(Subcommand)]
enum Command {
    /// Try pgwarden in the terminal: starts `serve` on the sandbox and gives you a small MCP client
    /// that runs SQL and shows approval prompts.
    Demo(DemoArgs),
    /// Serve MCP over stdio (for Claude Desktop, Claude Code, VS Code, Cursor).
    #[command(after_help = SERVE_HELP)]
    Serve(Box<ServeArgs>),
    /// Classify SQL offline and show the policy decision it would get (SQL from the argument or stdin).
    Check(CheckArgs),
    /// Make a database enforce the policy (run once with a privileged login, again when the masks
    /// or the tables change): the agent role, the masking views in `pgwarden_mask`, and the grants.
    Setup(SetupArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check and read the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Decide pending approvals from a terminal (no desktop needed): talks to every `pgwarden serve`
    /// of this OS user over its private socket in `$XDG_RUNTIME_DIR/pgwarden`. Counts as `local`.
    /// With `--server URL`: a team's approvals on a `pgwarden serve --http`, as the reviewer whose
    /// token you give (`--token-file` or PGWARDEN_TOKEN), through its approvals API.
    Approvals(ApprovalsArgs),
    /// Static bearer tokens for `serve --http` with a `[tokens]` file.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token for NAME: prints it once (keep it in the client's config) and appends only its
    /// hash, with NAME and the groups, to the token file.
    New {
        /// The principal the token speaks for (what policy rules with `principals` match).
        name: String,
        /// A group the principal is in (repeatable), for rules and roles with `groups`.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The token file (the HTTP config's `[tokens] file`).
        #[arg(long, default_value = "tokens.toml")]
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct ApprovalsArgs {
    /// Ask only this server socket (`approvals-<pid>.sock`) instead of every one in the runtime directory.
    #[arg(long, global = true, conflicts_with = "server")]
    socket: Option<PathBuf>,
    /// Ask this `pgwarden serve --http` server instead (its URL or its `/mcp` URL; https unless on
    /// localhost), as the reviewer whose token you give.
    #[arg(long, global = true, env = "PGWARDEN_SERVER", value_name = "URL")]
    server: Option<String>,
    /// With `--server`: a file holding your token (as `pgwarden token new` printed it, or an OAuth
    /// access token). Defaults to the environment variable PGWARDEN_TOKEN. Never give a token as an
    /// argument: other users can read a command line.
    #[arg(long, global = true, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// With `--server`: trust the certificates in this PEM file too (an internal CA, or the
    /// server's self-signed certificate), besides the public roots.
    #[arg(long, global = true, env = "PGWARDEN_CA_CERT", value_name = "PATH")]
    ca_cert: Option<PathBuf>,
    /// With `--server`: print the API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Pending approvals of every server of this user (or of `--server`): id, fingerprint, risk, summary.
    List {
        /// Also approvals already decided, expired or run.
        #[arg(long)]
        all: bool,
    },
    /// The whole review packet of one approval, statement first.
    Show {
        /// The approval id (`apr_…`) or its fingerprint (`a3f9-0c21-7e`).
        approval: String,
    },
    /// Approve: the stored call runs at the model's next `pgwarden_await`.
    Approve {
        /// The approval id (`apr_…`) or its fingerprint (`a3f9-0c21-7e`).
        approval: String,
        /// Run it, report the rows and roll back.
        #[arg(long)]
        dry_run: bool,
        /// Roll the change back if it touches more rows than this.
        #[arg(long, visible_alias = "max-rows")]
        row_limit: Option<u64>,
        /// Why, for the audit trail and the model.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny: nothing runs; the model gets the reason.
    Deny {
        /// The approval id (`apr_…`) or its fingerprint (`a3f9-0c21-7e`).
        approval: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the trail: the hash chain across rotated files, and the signed checkpoints. Exits 0
    /// when whole, 2 on tampering (an edit, a cut tail, an emptied or replaced file), 3 when whole but
    /// a change has a `decision` and no `outcome` (unfinished), 1 when it cannot be read.
    Verify {
        /// The audit file (`--audit-log` of `serve`); its rotated files (`<log>.<seq>`) beside it are
        /// read too. Several files: exactly these, oldest first (e.g. rotated files archived elsewhere).
        #[arg(required_unless_present = "state_url", conflicts_with = "state_url")]
        paths: Vec<PathBuf>,
        /// Check the trail in this state database (`serve --state-url`) instead of files.
        #[arg(long, env = "PGWARDEN_STATE_URL", hide_env_values = true)]
        state_url: Option<String>,
        /// The public key the checkpoints must be signed with: `ed25519:…` or a `.pub` file. Without
        /// it, signatures are checked against the key each checkpoint names, which proves less.
        #[arg(long)]
        key: Option<String>,
        /// The checkpoint file. Defaults to `<path>.checkpoints`.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
    /// Write the trail kept in a state database (`serve --state-url`) as JSONL — the file trail's
    /// format, one record per line, oldest first — with its signed checkpoint in
    /// `<out>.checkpoints`; `audit verify <out>` checks the copy.
    Export {
        /// The state database.
        #[arg(long, env = "PGWARDEN_STATE_URL", hide_env_values = true)]
        state_url: String,
        /// Where to write the records (the checkpoint goes beside it).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public half of a signing key (`ed25519:…`), to keep where the log's machine
    /// cannot change it and pass to `audit verify --key`.
    Key {
        /// The key file (`--audit-key` of `serve`).
        path: PathBuf,
    },
    /// Print records as a table (or JSON lines with `--format json`).
    Show {
        path: PathBuf,
        /// Only records at or after this time (RFC 3339, or a date such as 2026-11-21).
        #[arg(long)]
        since: Option<String>,
        /// Only `allowed`, `approved` (a person approved), `dry_run`, `denied`, `not_approved`,
        /// `pending` (asked, undecided), `failed` or `commit_unknown` records.
        #[arg(long)]
        decision: Option<String>,
        /// Only this tool.
        #[arg(long)]
        tool: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file or directory and list its rules; exits non-zero on any error.
    Lint {
        /// A policy file, or a directory of `*.toml` files.
        path: PathBuf,
    },
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Policy file or directory for the server (default: the built-in default policy).
    #[arg(long, env = "PGWARDEN_POLICY")]
    policy: Option<PathBuf>,
    /// Where the sandbox cluster lives (default as for `serve`).
    #[arg(long, env = "PGWARDEN_SANDBOX_DIR")]
    sandbox_dir: Option<PathBuf>,
    /// Serve this database instead of the sandbox.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where the server's log goes (default `$XDG_STATE_HOME/pgwarden/demo-server.log`).
    #[arg(long)]
    server_log: Option<PathBuf>,
}

/// `--tool`: the names policy files use, listed in `--help` and in the error for any other.
fn tool_name() -> impl clap::builder::TypedValueParser<Value = Tool> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Tool::ALL.map(Tool::name))
        .try_map(|name| Tool::from_name(&name).ok_or("not a tool"))
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Policy file or directory to decide with; the built-in default policy when omitted.
    #[arg(long, env = "PGWARDEN_POLICY")]
    policy: Option<PathBuf>,
    /// The tool the SQL would be sent through.
    #[arg(long, default_value = "query", value_parser = tool_name())]
    tool: Tool,
    /// Decide as this principal (see `serve --principal`).
    #[arg(long)]
    principal: Option<String>,
    /// Decide as a member of this group (repeatable), for rules with `groups`.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Decide for this database (its `pgwarden.toml` name): only its rules, tags and masks apply.
    /// Default: the first of `--config`, else the policy as a whole.
    #[arg(long)]
    database: Option<String>,
    /// The `pgwarden.toml` whose databases `--database` names (checked against it).
    #[arg(long, env = "PGWARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// The SQL to check; read from stdin when omitted.
    sql: Option<String>,
}

#[derive(clap::Args)]
struct SetupArgs {
    /// A privileged login: the tables' owner or a superuser. Prefer the environment variable, so the
    /// password stays out of the process list.
    #[arg(long, env = "PGWARDEN_SETUP_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The role pgwarden logs in as for the agent's SQL (created when missing; set its password
    /// yourself, e.g. `\password pgwarden_agent` in psql).
    #[arg(long, default_value = "pgwarden_agent")]
    agent_role: String,
    /// The policy whose masks the database must enforce (default: the built-in default policy).
    #[arg(long, env = "PGWARDEN_POLICY")]
    policy: Option<PathBuf>,
    /// A schema the agent may read (repeatable). Default: every schema but the system ones.
    #[arg(long = "schema")]
    schemas: Vec<String>,
    /// Print the SQL setup would run, and change nothing.
    #[arg(long)]
    print_sql: bool,
    /// Which database this is, by its `pgwarden.toml` name: the masks the policy gives it (its
    /// `NAME:` entries and the unprefixed ones) are set up. Default: the URL's database name.
    #[arg(long)]
    database: Option<String>,
    /// The `pgwarden.toml` whose databases `--database` names (checked against it).
    #[arg(long, env = "PGWARDEN_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Serve MCP over Streamable HTTP on this address (e.g. `127.0.0.1:8080`, loopback only: put a
    /// TLS proxy in front) instead of stdio; needs `--http-config`.
    #[arg(long, env = "PGWARDEN_HTTP", requires = "http_config", conflicts_with = "principal")]
    http: Option<std::net::SocketAddr>,
    /// The HTTP config file: this server's URL, and how requests authenticate (`[oauth]` or
    /// `[tokens]`); see `examples/http.toml`.
    #[arg(long, env = "PGWARDEN_HTTP_CONFIG", requires = "http")]
    http_config: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); with `--tls-key`.
    #[arg(long, env = "PGWARDEN_TLS_CERT", requires_all = ["http", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "PGWARDEN_TLS_KEY", requires_all = ["http", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Several databases to serve, declared in a `pgwarden.toml` (`[[database]]` entries: name,
    /// `url_env` or `url_file`, pool size and limits; the first is the default). Instead of
    /// `--database-url`; see the README's "Several databases".
    #[arg(long, env = "PGWARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// PostgreSQL to serve: `postgres://user:password@host:5432/db` or `host=… user=…`.
    /// Without one, pgwarden starts its own sandbox cluster with a demo schema.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The login approved changes (writes, DDL, grants) run as, when it is not the agent's own
    /// `DATABASE_URL` login. With masks, what such a change reports back is withheld from the model.
    #[arg(long, env = "PGWARDEN_CHANGE_DATABASE_URL", hide_env_values = true)]
    change_database_url: Option<String>,
    /// Where the sandbox cluster lives. Defaults to `$XDG_DATA_HOME/pgwarden/sandbox`
    /// (`~/.local/share/pgwarden/sandbox`; `/var/lib/pgwarden/sandbox` as root).
    #[arg(long, env = "PGWARDEN_SANDBOX_DIR")]
    sandbox_dir: Option<PathBuf>,
    /// Rows a `query` returns when the model does not say.
    #[arg(long, env = "PGWARDEN_MAX_ROWS", default_value_t = 500)]
    max_rows: u32,
    /// The most rows any `query` may return.
    #[arg(long, env = "PGWARDEN_MAX_ROWS_LIMIT", default_value_t = 10_000)]
    max_rows_limit: u32,
    /// Time limit for each statement, e.g. `15s`, `500ms`, `2m`.
    #[arg(long, env = "PGWARDEN_STATEMENT_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    statement_timeout: Duration,
    /// The most result bytes any call returns (as PostgreSQL sends them), e.g. `16MiB`, `512KiB` or
    /// plain bytes; a larger result is cut off and marked truncated.
    #[arg(long, env = "PGWARDEN_MAX_RESULT_BYTES", default_value = "16MiB", value_parser = pgwarden::units::parse_byte_size)]
    max_result_bytes: u64,
    /// Connections kept open to PostgreSQL.
    #[arg(long, env = "PGWARDEN_POOL_SIZE", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pool_size: u16,
    /// Policy file, or directory of `*.toml` files read in name order. Defaults to the built-in copy
    /// of `tool-policies/default.toml` (reads run, changes need approval, admin is denied).
    #[arg(long, env = "PGWARDEN_POLICY")]
    policy: Option<PathBuf>,
    /// Who uses this server, for policy rules with `principals` (e.g. set per user in the client's
    /// MCP config). Unset, rules with `principals` never match.
    #[arg(long, env = "PGWARDEN_PRINCIPAL")]
    principal: Option<String>,
    /// The audit trail (hash-chained JSONL). Defaults to `$XDG_STATE_HOME/pgwarden/audit.jsonl`
    /// (`~/.local/state/…`; `/var/log/pgwarden/audit.jsonl` as root).
    #[arg(long, env = "PGWARDEN_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// The Ed25519 key that signs the trail's checkpoints: its own owner-only file, made on first
    /// start, with its public half beside it (`.pub`). Defaults to `audit-signing.key` beside the log.
    #[arg(long, env = "PGWARDEN_AUDIT_KEY")]
    audit_key: Option<PathBuf>,
    /// Where signed checkpoints go. Defaults to `<audit log>.checkpoints`.
    #[arg(long, env = "PGWARDEN_AUDIT_CHECKPOINTS")]
    audit_checkpoints: Option<PathBuf>,
    /// How often the head of the trail is signed when it moved (also at rotation and shutdown).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    audit_checkpoint_every: Duration,
    /// Rotate the trail when it grows past this size (e.g. `64MiB`); the old file becomes
    /// `<log>.<last seq>` and the chain continues in a new one. `SIGHUP` rotates at once.
    #[arg(long, env = "PGWARDEN_AUDIT_ROTATE_SIZE", value_parser = pgwarden::config::parse_rotate_size)]
    audit_rotate_size: Option<u64>,
    /// With `--http`: a PostgreSQL database for pgwarden's own tables (pending approvals, decisions,
    /// used nonces, the audit trail), shared by every replica given the same URL. It must not be
    /// the served database. Defaults to a `pgwarden_state` database in the sandbox cluster when
    /// serving the sandbox; with `--database-url` and no state URL, approvals live in this process.
    #[arg(long, env = "PGWARDEN_STATE_URL", hide_env_values = true, requires = "http")]
    state_url: Option<String>,
    /// Where `export` writes files. Defaults to `$XDG_DATA_HOME/pgwarden/exports`
    /// (`~/.local/share/…`; `/var/lib/pgwarden/exports` as root).
    #[arg(long, env = "PGWARDEN_EXPORT_DIR")]
    export_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGWARDEN_LOG")
                .unwrap_or_else(|_| "pgwarden=info,rmcp=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    // One thread runs every task: a stdio session serves one client, its calls are short, and
    // anything that may block (an fsync, the sandbox's start) goes to the blocking pool. Without
    // worker threads handing tasks to each other, a point read costs ~20 % less server CPU
    // (benches/peers.rs; issue 19).
    // Over HTTP, many clients at once: worker threads.
    let runtime = match &cli.command {
        Command::Serve(a) if a.http.is_some() => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Demo(args) => runtime.block_on(demo(args)),
        Command::Check(args) => check(args),
        Command::Setup(args) => runtime.block_on(setup(args)),
        Command::Policy(PolicyCommand::Lint { path }) => lint(&path),
        Command::Audit(AuditCommand::Verify {
            state_url: Some(url),
            key,
            ..
        }) => {
            // The database's chain, exported to a private directory and checked like a file.
            let dir = match tempfile_dir() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("pgwarden: error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let path = dir.join("audit.jsonl");
            let exported = runtime.block_on(pgwarden::state::chain::export_to(&url, &path));
            let code = match exported {
                Ok(_) => audit_verify(std::slice::from_ref(&path), key.as_deref(), None),
                Err(e) => {
                    eprintln!("pgwarden: error: the audit trail in the state database: {e}");
                    ExitCode::FAILURE
                }
            };
            let _ = std::fs::remove_dir_all(&dir);
            return code;
        }
        Command::Audit(AuditCommand::Verify {
            paths,
            key,
            checkpoints,
            ..
        }) => {
            return audit_verify(&paths, key.as_deref(), checkpoints);
        }
        Command::Audit(AuditCommand::Export { state_url, out }) => runtime
            .block_on(pgwarden::state::chain::export_to(&state_url, &out))
            .map_err(|e| anyhow::anyhow!("the audit trail in the state database: {e}"))
            .map(|done| {
                eprintln!(
                    "pgwarden: wrote {} records to {} ({})",
                    done.records,
                    out.display(),
                    if done.checkpoint.is_some() {
                        "with its signed checkpoint beside it"
                    } else {
                        "no signed checkpoint: the trail was written without a key"
                    }
                );
            }),
        Command::Audit(AuditCommand::Key { path }) => audit_key(&path),
        Command::Token(TokenCommand::New { name, groups, file }) => token_new(&name, &groups, &file),
        Command::Audit(AuditCommand::Show {
            path,
            since,
            decision,
            tool,
            format,
        }) => audit_show(&path, since, decision, tool, format),
        Command::Approvals(args) => approvals(args, &runtime),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgwarden: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let sql = match args.sql {
        Some(sql) => sql,
        None => {
            use std::io::{IsTerminal, Read};
            if std::io::stdin().is_terminal() {
                anyhow::bail!("no SQL given; pass it as an argument (`pgwarden check 'SELECT 1'`) or on stdin");
            }
            let mut sql = String::new();
            std::io::stdin()
                .read_to_string(&mut sql)
                .context("reading SQL from stdin")?;
            sql
        }
    };
    let policy = load_policy(args.policy.as_deref())?;
    let database = database_named(&policy, args.config.as_deref(), args.database, "check")?;
    if database.is_none()
        && let Some((name, at)) = policy.databases_named().into_iter().next()
    {
        anyhow::bail!(
            "the policy names databases (`{name}` at {at}), so a decision depends on which: pass `--database NAME`"
        );
    }
    let policy = match &database {
        Some(name) => policy.for_database(name),
        None => policy,
    };
    let assessment = pgwarden::classify::classify(&sql);
    let decision = policy.evaluate(&Request {
        tool: args.tool,
        assessment: &assessment,
        principal: args.principal.as_deref(),
        groups: &args.groups,
    });
    let out = match args.format {
        Format::Text => pgwarden::check::to_text(database.as_deref(), &assessment, &decision, &policy.approval),
        Format::Json => pgwarden::check::to_json(database.as_deref(), &assessment, &decision, &policy.approval) + "\n",
    };
    write_stdout(&out)
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let mut serve_args = Vec::new();
    if let Some(p) = args.policy {
        // Check it here, so a bad file is reported before anything starts.
        load_policy(Some(&p))?;
        serve_args.extend(["--policy".to_string(), p.display().to_string()]);
    }
    if let Some(d) = args.sandbox_dir {
        serve_args.extend(["--sandbox-dir".to_string(), d.display().to_string()]);
    }
    let serve_env: Vec<(String, String)> = args
        .database_url
        .filter(|u| !u.trim().is_empty())
        .map(|u| ("DATABASE_URL".to_string(), u))
        .into_iter()
        .collect();
    let exe = std::env::current_exe().context("finding the pgwarden binary")?;
    let server_log = args.server_log.unwrap_or_else(|| {
        default_location(
            "/var/log/pgwarden/demo-server.log",
            "XDG_STATE_HOME",
            ".local/state",
            "demo-server.log",
        )
    });
    pgwarden::demo::run(pgwarden::demo::DemoOptions {
        exe,
        serve_args,
        serve_env,
        server_log,
    })
    .await?;
    Ok(())
}

async fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let policy = load_policy(args.policy.as_deref())?;
    let target = Target::from_url(&args.database_url)?;
    let name = args.database.unwrap_or_else(|| served_name(&target));
    database_named(&policy, args.config.as_deref(), Some(name.clone()), "setup")?;
    let policy = policy.for_database(&name);
    let request = pgwarden::db::setup::SetupRequest {
        agent_role: args.agent_role.clone(),
        schemas: args.schemas,
        print_only: args.print_sql,
    };
    let report = pgwarden::db::setup::run(&target, &policy.masks, &request)
        .await
        .with_context(|| format!("setting up {}", target.display))?;
    if !report.applied {
        return write_stdout(&report.sql.iter().map(|s| format!("{s};\n")).collect::<String>());
    }
    for w in report.enforcement.iter().flat_map(|e| e.warnings.iter()) {
        tracing::warn!("{w}");
    }
    write_stdout(&format!(
        "ok: {} now enforces the policy's {} masked column(s) for `{}` ({} statements); connect pgwarden as `{}`\n",
        target.display,
        policy.masks.values().map(|m| m.len()).sum::<usize>(),
        args.agent_role,
        report.sql.len(),
        args.agent_role
    ))
}

/// `audit verify`: 0 whole, 2 tampered, 3 unfinished, 1 unreadable or bad arguments.
/// A new private directory under the system's temporary directory.
fn tempfile_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("pgwarden-verify-{}", uuid::Uuid::new_v4().simple()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

fn audit_verify(paths: &[PathBuf], key: Option<&str>, checkpoints: Option<PathBuf>) -> ExitCode {
    use pgwarden::audit::{sign::PublicKey, verify};
    let key = match key.map(PublicKey::parse).transpose() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("pgwarden: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        eprintln!("pgwarden: error: there is no audit log at `{}`", missing.display());
        return ExitCode::FAILURE;
    }
    let path = &paths[paths.len() - 1];
    let files = match paths {
        [one] => verify::trail_files(one),
        many => many.to_vec(),
    };
    let checkpoints = checkpoints.unwrap_or_else(|| pgwarden::audit::default_checkpoints(path));
    let report = verify::verify_trail(&files, &checkpoints, key.as_ref());
    // What a record says (a reason, a tool name) may have been written by whoever forged it: shown
    // with control and bidi characters escaped, so it cannot rewrite the terminal.
    let shown = |text: String| pgwarden::approval::packet::visible(&text);
    let notes: String = report.notes.iter().map(|n| format!("note: {n}\n")).collect();
    let mut out = String::new();
    if !report.problems.is_empty() {
        out.push_str("TAMPERED: the audit trail cannot be trusted as complete:\n");
        for p in &report.problems {
            out.push_str(&format!("  - {p}\n"));
        }
        let _ = write_stdout(&shown(out + &notes));
        return ExitCode::from(2);
    }
    let range = match (report.records.first(), report.records.last()) {
        (Some(f), Some(l)) => format!(" (seq {}–{}, to {})", f.seq, l.seq, l.time),
        _ => String::new(),
    };
    let files = if report.files.len() == 1 {
        format!("`{}`", report.files[0])
    } else {
        format!("{} files (`{}` …)", report.files.len(), report.files[0])
    };
    out.push_str(&format!(
        "ok: {files} holds {} records{range}, chained from genesis; {}\n",
        report.records.len(),
        match (&report.sealed, &key) {
            (Some((seq, time)), Some(k)) => format!(
                "{} checkpoint(s) signed by {k}, the last matching seq {seq} at {time}",
                report.checkpoints
            ),
            (Some((seq, time)), None) => format!(
                "{} checkpoint(s) whose signatures verify against the key they name (pass --key to prove it is yours), the last matching seq {seq} at {time}",
                report.checkpoints
            ),
            (None, _) => "no checkpoint covers it yet".into(),
        }
    ));
    if !report.unfinished.is_empty() {
        out.push_str(&format!(
            "UNFINISHED: {} change(s) have a decision and no outcome (the process ended while they ran, or they still run):\n",
            report.unfinished.len()
        ));
        for r in &report.unfinished {
            out.push_str(&format!(
                "  - seq {} at {}: {} {}\n",
                r.seq,
                r.time,
                r.tool.as_deref().unwrap_or("-"),
                pgwarden::approval::packet::one_line(r.sql.as_deref().unwrap_or(""), 100)
            ));
        }
        let _ = write_stdout(&shown(out + &notes));
        return ExitCode::from(3);
    }
    match write_stdout(&shown(out + &notes)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn audit_key(path: &std::path::Path) -> anyhow::Result<()> {
    if !path.exists() {
        anyhow::bail!(
            "there is no key at `{}`; `pgwarden serve` makes it on first start (`--audit-key`)",
            path.display()
        );
    }
    let key = pgwarden::audit::sign::SigningKey::load_or_create(path)?;
    write_stdout(&format!("{}\n", key.public()))
}

fn audit_show(
    path: &std::path::Path,
    since: Option<String>,
    decision: Option<String>,
    tool: Option<String>,
    format: Format,
) -> anyhow::Result<()> {
    use pgwarden::audit::verify;
    let filter = verify::Filter { since, decision, tool };
    filter.check().map_err(anyhow::Error::msg)?;
    if !path.exists() {
        anyhow::bail!("there is no audit log at `{}`", path.display());
    }
    let mut records = Vec::new();
    for file in verify::trail_files(path) {
        records.extend(verify::verify(&file).map_err(|e| anyhow::anyhow!("audit chain broken: {e}"))?);
    }
    let unfinished: std::collections::HashSet<u64> = verify::unfinished(&records).iter().map(|r| r.seq).collect();
    let kept: Vec<_> = records.iter().filter(|r| filter.keeps(r)).collect();
    let out = match format {
        Format::Text => verify::table(&kept, &unfinished),
        // JSON lines stay JSON, but characters that could rewrite a terminal are `\u` escapes.
        Format::Json => kept
            .iter()
            .map(|r| {
                serde_json::to_string(r)
                    .unwrap_or_default()
                    .chars()
                    .map(|c| {
                        if c.is_control() || pgwarden::approval::packet::hidden_format(c) {
                            format!("\\u{:04x}", c as u32)
                        } else {
                            c.to_string()
                        }
                    })
                    .collect::<String>()
                    + "\n"
            })
            .collect(),
    };
    write_stdout(&out)
}

/// `pgwarden approvals`: the terminal channel's client (`approval::cli`), or with `--server` the
/// approvals API's (`team::client`).
fn approvals(args: ApprovalsArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    use pgwarden::approval::cli::{Command as Cli, Target, run};
    let command = match args.command {
        ApprovalsCommand::List { all } => Cli::List { all },
        ApprovalsCommand::Show { approval } => Cli::Show { key: approval },
        ApprovalsCommand::Approve {
            approval,
            dry_run,
            row_limit,
            reason,
        } => Cli::Decide {
            key: approval,
            decision: if dry_run { "dry_run" } else { "approve" },
            row_limit,
            reason,
        },
        ApprovalsCommand::Deny { approval, reason } => Cli::Decide {
            key: approval,
            decision: "deny",
            row_limit: None,
            reason,
        },
    };
    if let Some(server) = &args.server {
        use pgwarden::team::client::{ClientError, Remote, read_token_file};
        let token = match &args.token_file {
            Some(path) => read_token_file(path)?,
            None => std::env::var("PGWARDEN_TOKEN")
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .ok_or(ClientError::NoToken)?,
        };
        let remote = Remote::new(server, token, args.ca_cert.as_deref())?;
        return write_stdout(&runtime.block_on(remote.run(command, args.json))?);
    }
    if args.json || args.token_file.is_some() || args.ca_cert.is_some() {
        anyhow::bail!("`--json`, `--token-file` and `--ca-cert` go with `--server URL` (or PGWARDEN_SERVER)");
    }
    let dir = console_dir();
    let target = match &args.socket {
        Some(socket) => Target::Socket(socket),
        None => Target::Dir(&dir),
    };
    write_stdout(&run(target, command)?)
}

fn write_stdout(out: &str) -> anyhow::Result<()> {
    use std::io::Write;
    std::io::stdout().write_all(out.as_bytes()).context("writing to stdout")
}

fn load_policy(path: Option<&std::path::Path>) -> anyhow::Result<Policy> {
    match path {
        None => Ok(Policy::builtin()),
        Some(path) => Policy::load(path).map_err(|e| anyhow::anyhow!("invalid policy `{}`:\n{e}", path.display())),
    }
}

fn lint(path: &std::path::Path) -> anyhow::Result<()> {
    let policy = load_policy(Some(path))?;
    let mut out = format!(
        "ok: {} rule(s), {} tagged table pattern(s), {} masked column(s) from {}\n",
        policy.rules.len(),
        policy.tables.len(),
        policy.masks.values().map(|m| m.len()).sum::<usize>(),
        policy.sources.join(", ")
    );
    for (i, rule) in policy.rules.iter().enumerate() {
        out.push_str(&format!(
            "{:>3}. {:<7} {}  ({})\n",
            i + 1,
            rule.effect.as_str(),
            rule.id,
            rule.origin
        ));
    }
    out.push_str("  -. deny    (no rule matched)\n");
    write_stdout(&out)
}

/// A default path from the environment (see `config::default_location`).
fn default_location(root_path: &str, xdg_var: &str, home_sub: &str, leaf: &str) -> PathBuf {
    let is_root = rustix::process::geteuid().as_raw() == 0;
    pgwarden::config::default_location(
        is_root,
        root_path,
        std::env::var_os(xdg_var).map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
        home_sub,
        leaf,
    )
}

/// The private directory of the console's sign-in pages and the approvals sockets. The runtime
/// directory is the user's own (0700, per the XDG spec) and cleared at logout.
fn console_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|p| p.join("pgwarden"))
        .unwrap_or_else(|| default_location("/var/lib/pgwarden/console", "XDG_STATE_HOME", ".local/state", "console"))
}

fn settings(args: ServeArgs) -> anyhow::Result<Settings> {
    let url = args.database_url.filter(|u| !u.trim().is_empty());
    let database = match (args.config, url) {
        (Some(config), None) => DatabaseChoice::Declared(pgwarden::config::load_databases(&config)?),
        (Some(config), Some(_)) => anyhow::bail!(
            "both `--config {}` and a database URL (`--database-url` or DATABASE_URL) are given; the config \
             declares the databases: drop the URL, or the config",
            config.display()
        ),
        (None, Some(url)) => DatabaseChoice::Url(url),
        (None, None) => DatabaseChoice::Sandbox(args.sandbox_dir.unwrap_or_else(|| {
            default_location("/var/lib/pgwarden/sandbox", "XDG_DATA_HOME", ".local/share", "sandbox")
        })),
    };
    if matches!(database, DatabaseChoice::Declared(_))
        && args.change_database_url.as_ref().is_some_and(|u| !u.trim().is_empty())
    {
        anyhow::bail!(
            "`--change-database-url` goes with `--database-url`; with `--config`, give each database its \
             `change_url_env` or `change_url_file`"
        );
    }
    let limits = Limits {
        default_max_rows: args.max_rows,
        max_rows_limit: args.max_rows_limit,
        statement_timeout: args.statement_timeout,
        max_result_bytes: args.max_result_bytes,
    }
    .validate()?;
    let policy = load_policy(args.policy.as_deref())?;
    let audit_log = args.audit_log.unwrap_or_else(|| {
        default_location(
            "/var/log/pgwarden/audit.jsonl",
            "XDG_STATE_HOME",
            ".local/state",
            "audit.jsonl",
        )
    });
    let export_dir = args
        .export_dir
        .unwrap_or_else(|| default_location("/var/lib/pgwarden/exports", "XDG_DATA_HOME", ".local/share", "exports"));
    let audit = pgwarden::audit::AuditOptions {
        key: Some(
            args.audit_key
                .unwrap_or_else(|| audit_log.with_file_name("audit-signing.key")),
        ),
        checkpoints: Some(
            args.audit_checkpoints
                .unwrap_or_else(|| pgwarden::audit::default_checkpoints(&audit_log)),
        ),
        rotate_bytes: args.audit_rotate_size,
    };
    if args.audit_checkpoint_every < Duration::from_millis(100)
        || args.audit_checkpoint_every > Duration::from_secs(86_400)
    {
        anyhow::bail!("`--audit-checkpoint-every` must be between 100ms and 24h");
    }
    pgwarden::config::check_export_dir_holds(
        &export_dir,
        &[
            ("audit trail", &audit_log),
            ("audit signing key", audit.key.as_deref().unwrap_or(&audit_log)),
            ("audit checkpoints", audit.checkpoints.as_deref().unwrap_or(&audit_log)),
        ],
    )?;
    let console_dir = console_dir();
    Ok(Settings {
        change_database: args.change_database_url.filter(|u| !u.trim().is_empty()),
        audit_log,
        audit,
        checkpoint_every: args.audit_checkpoint_every,
        export_dir,
        console_dir,
        database,
        limits,
        pool_size: args.pool_size as usize,
        policy: Arc::new(policy),
        principal: args.principal.filter(|p| !p.trim().is_empty()),
        state_url: args.state_url.filter(|u| !u.trim().is_empty()),
    })
}

/// `pgwarden token new`: the token on stdout, once; only its hash is kept.
fn token_new(name: &str, groups: &[String], file: &std::path::Path) -> anyhow::Result<()> {
    let token = pgwarden::auth::tokens::new_token(file, name, groups)?;
    eprintln!(
        "pgwarden: added a token for `{name}` to {} (only its hash); it is shown once:",
        file.display()
    );
    write_stdout(&format!("{token}\n"))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let http = match (args.http, &args.http_config) {
        (Some(addr), Some(path)) => {
            let tls = args
                .tls_cert
                .clone()
                .zip(args.tls_key.clone())
                .map(|(cert, key)| pgwarden::serve::http::TlsFiles { cert, key });
            Some((addr, pgwarden::auth::HttpConfig::load(path)?, tls))
        }
        _ => None,
    };
    let settings = settings(args)?;
    check_policy_databases(&settings)?;
    let mut sandbox = None;
    // Each database to serve, with the policy as it sees it.
    let (openings, several) = match &settings.database {
        DatabaseChoice::Url(url) => {
            let target = Target::from_url(url)?;
            let change = settings.change_database.as_deref().map(Target::from_url).transpose()?;
            (vec![single(target, change, &settings, false)], false)
        }
        DatabaseChoice::Sandbox(dir) => {
            let dir = dir.clone();
            let masks = settings.policy.for_database(pgwarden::db::sandbox::DEMO_DB).masks;
            let opened = tokio::task::spawn_blocking(move || Sandbox::open(dir, &masks))
                .await?
                .context("cannot start the embedded sandbox database")?;
            let target = Target::from_config(opened.connect_config())?;
            let change = Some(Target::from_config(opened.change_config())?);
            sandbox = Some(opened);
            // `pgwarden demo` starts its server on the sandbox on purpose; anyone else may not know.
            let say = std::env::var_os("PGWARDEN_DEMO").is_none();
            if say {
                tracing::warn!("{}", pgwarden::pipeline::SANDBOX_NOTE);
            }
            (vec![single(target, change, &settings, say)], false)
        }
        DatabaseChoice::Declared(list) => {
            let env = |var: &str| std::env::var(var).ok();
            let mut openings = Vec::new();
            for d in list {
                let what = format!("database `{}`", d.name);
                let target = Target::from_url(&d.url.resolve(&what, &env)?).with_context(|| what.clone())?;
                let change = match &d.change_url {
                    Some(c) => Some(
                        Target::from_url(&c.resolve(&format!("{what}, change_url"), &env)?)
                            .with_context(|| what.clone())?,
                    ),
                    None => None,
                };
                openings.push(Opening {
                    name: d.name.clone(),
                    target,
                    change,
                    pool_size: d.pool_size.unwrap_or(settings.pool_size),
                    limits: settings.limits.for_database(d)?,
                    policy: Arc::new(settings.policy.for_database(&d.name)),
                    sandbox: false,
                });
            }
            check_logins_apart(&openings)?;
            (openings, true)
        }
    };
    // Approvals and the audit trail of `serve --http` live in Postgres, shared by replicas: the
    // `--state-url`, else the sandbox's own state database.
    let state = match (&settings.state_url, &sandbox) {
        (Some(url), _) => Some(Target::from_url(url)?),
        (None, Some(sandbox)) if http.is_some() => Some(Target::from_config(
            sandbox
                .state_config()
                .await
                .context("cannot make the sandbox's state database")?,
        )?),
        _ => None,
    };
    if let Some(state) = &state {
        for o in &openings {
            pgwarden::state::check_apart(&state.config, &o.target.config)
                .with_context(|| format!("database `{}`", o.name))?;
        }
    }
    let result = run(openings, several, state, &settings, http).await;
    if let Some(sandbox) = sandbox {
        let _ = tokio::task::spawn_blocking(move || sandbox.release()).await;
    }
    result
}

/// Each database's logins must be its own: roles, their per-database settings, databases and
/// sessions belong to the whole cluster, so a login two databases of one server share could, from
/// one, change the other (`ALTER DATABASE`, `ALTER ROLE … IN DATABASE`, ending its sessions) — and
/// a change login runs every change the policy allows, not only approved ones. With logins of
/// their own, Postgres refuses all of that. This compares the URLs as written; each database also
/// checks, as it opens, who its logins really are on which cluster (`pipeline::Databases`).
fn check_logins_apart(openings: &[Opening]) -> anyhow::Result<()> {
    // Where a login lands: the server as the URL names it, and the user.
    let login = |t: &Target| {
        let c = &t.config;
        (
            format!("{:?} {:?} {:?}", c.get_hosts(), c.get_hostaddrs(), c.get_ports()),
            c.get_user().unwrap_or_default().to_string(),
        )
    };
    let logins = |o: &Opening| {
        let mut v = vec![("agent", login(&o.target))];
        v.extend(o.change.as_ref().map(|c| ("change", login(c))));
        v
    };
    for (i, a) in openings.iter().enumerate() {
        for b in &openings[i + 1..] {
            for (what_a, la) in logins(a) {
                if let Some((what_b, _)) = logins(b).into_iter().find(|(_, lb)| *lb == la) {
                    anyhow::bail!(
                        "databases `{}` and `{}` are reached as the same login `{}` on the same server (`{}`'s {what_a} \
                         login, `{}`'s {what_b} login): roles, database settings and sessions belong to the whole \
                         cluster, so a call on one could change the other; give each database logins of its own, \
                         e.g. `pgwarden setup --database {} --agent-role pgwarden_{}` with that database's privileged \
                         URL, and a change login that owns only that database's tables",
                        a.name,
                        b.name,
                        la.1,
                        a.name,
                        b.name,
                        b.name,
                        b.name.replace('-', "_"),
                    );
                }
            }
        }
    }
    Ok(())
}

/// The one database of `--database-url` or the sandbox, named as Postgres calls it.
fn single(target: Target, change: Option<Target>, settings: &Settings, sandbox: bool) -> Opening {
    let name = served_name(&target);
    Opening {
        policy: Arc::new(settings.policy.for_database(&name)),
        name,
        target,
        change,
        pool_size: settings.pool_size,
        limits: settings.limits,
        sandbox,
    }
}

/// The database `check` or `setup` works for: `name` (none: the config's first), checked against
/// the databases the `--config` declares, or without one against the names the policy uses.
fn database_named(
    policy: &Policy,
    config: Option<&std::path::Path>,
    name: Option<String>,
    command: &str,
) -> anyhow::Result<Option<String>> {
    let Some(config) = config else {
        if let Some(name) = &name {
            known_to_policy(policy, name, command)?;
        }
        return Ok(name);
    };
    let declared = pgwarden::config::load_databases(config)?;
    let Some(name) = name else {
        return Ok(declared.first().map(|d| d.name.clone()));
    };
    if declared.iter().any(|d| d.name == name) {
        return Ok(Some(name));
    }
    anyhow::bail!(
        "no database `{name}` in `{}`; it declares {}: pass one of them as `--database`",
        config.display(),
        quoted(declared.iter().map(|d| &d.name))
    )
}

/// Without a `--config`, a database name the policy does not use cannot be told from a misspelt one
/// (`Prod` for `prod`), whose rules and masks would quietly not apply: refused when the policy
/// names databases at all.
fn known_to_policy(policy: &Policy, name: &str, command: &str) -> anyhow::Result<()> {
    let named = policy.databases_named();
    if named.is_empty() || named.contains_key(name) {
        return Ok(());
    }
    anyhow::bail!(
        "the policy names databases {}, not `{name}`: pass one of them as `--database`, or `--config pgwarden.toml` \
         to {command} a database the policy gives nothing of its own",
        quoted(named.keys())
    )
}

/// The name of the one database of `--database-url`: what Postgres calls it.
fn served_name(target: &Target) -> String {
    target
        .config
        .get_dbname()
        .or(target.config.get_user())
        .unwrap_or("postgres")
        .to_string()
}

/// Every database the policy names must be one pgwarden serves: a misspelt name would quietly
/// leave a rule or a mask out.
fn check_policy_databases(settings: &Settings) -> anyhow::Result<()> {
    let served: Vec<String> = match &settings.database {
        DatabaseChoice::Declared(list) => list.iter().map(|d| d.name.clone()).collect(),
        DatabaseChoice::Url(url) => vec![served_name(&Target::from_url(url)?)],
        DatabaseChoice::Sandbox(_) => vec![pgwarden::db::sandbox::DEMO_DB.to_string()],
    };
    let unknown: Vec<String> = settings
        .policy
        .databases_named()
        .into_iter()
        .filter(|(name, _)| !served.contains(name))
        .map(|(name, at)| format!("{at}: the policy names database `{name}`, which pgwarden does not serve"))
        .collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "{}\nthis pgwarden serves {}; fix the name, or declare the database",
            unknown.join("\n"),
            quoted(&served)
        );
    }
    Ok(())
}

/// `serve --http`: where to listen, and the HTTP config.
type Http = Option<(
    std::net::SocketAddr,
    pgwarden::auth::HttpConfig,
    Option<pgwarden::serve::http::TlsFiles>,
)>;

async fn run(
    openings: Vec<Opening>,
    several: bool,
    state: Option<Target>,
    settings: &Settings,
    http: Http,
) -> anyhow::Result<()> {
    tracing::info!(
        "policy: {} ({} rules)",
        settings.policy.sources.join(", "),
        settings.policy.rules.len()
    );
    let keeper = tokio_util::sync::CancellationToken::new();
    // The agent's sessions must not see the state database (checked as each database opens).
    let state_display = state.as_ref().map(|s| s.display.clone());
    // The trail and the approvals: in the state database (every replica's, one chain), or in the
    // audit file and this process's memory.
    let (sink, shared, file): (Arc<dyn pgwarden::audit::sink::AuditSink>, _, _) = match state {
        Some(state) => {
            let path = settings
                .audit
                .key
                .clone()
                .unwrap_or_else(|| settings.audit_log.with_file_name("audit-signing.key"));
            let key = pgwarden::audit::sign::SigningKey::load_or_create(&path)
                .with_context(|| format!("the audit signing key `{}`", path.display()))?;
            tracing::info!(
                "approvals and the audit trail: state database {} (records signed by {}; give every replica this key)",
                state.display,
                key.public()
            );
            let db = pgwarden::state::StateDb::open(state, Some(Arc::new(key)), settings.pool_size.max(4)).await?;
            let store: Arc<dyn pgwarden::approval::pending::ApprovalStore> =
                pgwarden::state::store::PgStore::start(db.clone(), (&settings.policy.approval).into());
            (Arc::new(pgwarden::state::chain::PgSink(db)) as _, Some(store), None)
        }
        None => {
            let audit = Arc::new(pgwarden::audit::AuditLog::open_with(
                &settings.audit_log,
                &settings.audit,
            )?);
            tracing::info!(
                "audit trail: {} (checkpoints signed by {})",
                settings.audit_log.display(),
                audit.public_key().map(|k| k.to_string()).unwrap_or_default()
            );
            tokio::spawn(keep_trail(audit.clone(), settings.checkpoint_every, keeper.clone()));
            (FileSink::shared(audit.clone()), None, Some(audit))
        }
    };
    let label = format!(
        "pgwarden {} (pid {}) · policy {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        settings.policy.sources.join(", ")
    );
    let approvals = match shared {
        Some(store) => Approvals::new(settings.policy.approval.clone(), store, label.clone()),
        None => Approvals::in_memory(settings.policy.approval.clone(), sink.clone(), label.clone()),
    };
    // Review surfaces, in the order a new approval is announced on them (each only if the policy
    // enables it); the terminal's registers itself when its socket listens, below.
    approvals.register(Arc::new(CardSurface));
    approvals.register(Console::new(
        approvals.store.clone(),
        label,
        settings.console_dir.clone(),
    ));
    let watcher = tokio_util::sync::CancellationToken::new();
    let pipeline = Databases::new(
        openings,
        Shared {
            audit: sink,
            approvals: approvals.clone(),
            export_dir: settings.export_dir.clone(),
            policy: settings.policy.clone(),
            state: state_display,
            stop: watcher.clone(),
        },
        several,
    );
    let failed = pipeline.open_all().await;
    match failed.into_iter().next() {
        // One database: it must open, as it always had to.
        Some((_, why)) if !several => {
            watcher.cancel();
            keeper.cancel();
            anyhow::bail!("{why}");
        }
        Some(_) => tracing::warn!(
            "serving the databases that opened; the others' calls fail with the reason until they open (retried every {}s)",
            pgwarden::pipeline::RETRY_EVERY.as_secs()
        ),
        None => {}
    }
    // `pgwarden approvals` from another terminal; the socket goes when this ends.
    let _terminal = pgwarden::approval::local::listen(&approvals, &settings.console_dir);
    let result = match http {
        Some((addr, config, tls)) => pgwarden::serve::http::serve(pipeline, config, addr, tls, shutdown_signal())
            .await
            .map_err(anyhow::Error::from),
        None => {
            // Seals 2026-07-28 approval states; the key lives only in this process.
            let sealer = Arc::new(StateSealer::new());
            let session = Session::new(sealer, settings.principal.clone().map(Principal::new));
            let audit = file.clone().context("stdio keeps its audit trail in a file")?;
            pgwarden::serve::stdio::serve(pipeline, session, audit, shutdown_signal())
                .await
                .map_err(anyhow::Error::from)
        }
    };
    watcher.cancel();
    keeper.cancel();
    // Approvals still open die with this process: say so in the trail (`abandoned`).
    approvals.store.abandon_open().await;
    // Batched records (reads) become durable on a clean shutdown.
    if let Some(audit) = file {
        audit.flush()?;
    }
    result
}

/// Signs the trail's head every `every` (when it moved) and rotates it on `SIGHUP`, until cancelled.
async fn keep_trail(audit: Arc<pgwarden::audit::AuditLog>, every: Duration, stop: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let rotate = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let audit = audit.clone();
        let done = tokio::task::spawn_blocking(move || {
            if rotate {
                audit.rotate().map(|_| ())
            } else {
                audit.checkpoint().map(|_| ())
            }
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("audit trail: {e}"),
            Err(e) => tracing::error!("audit trail task: {e}"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
