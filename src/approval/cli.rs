//! The terminal approval channel, client side: `pgwarden approvals` finds the sockets of the
//! serving processes of this user (`approval::local`), asks each with one JSON line, and renders
//! approvals for a terminal — the statement first, every model-supplied field escaped.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    local::{Item, MAX_LINE, Request, Response, SOCKET_PREFIX, SOCKET_SUFFIX},
    packet::{one_line, visible},
};

/// A server must answer within this.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "no pgwarden server is listening in `{0}`; run this as the user that runs `pgwarden serve`, with the same \
         XDG_RUNTIME_DIR, or pass `--socket <path>`"
    )]
    NoServer(String),
    #[error("cannot read `{0}`: {1}")]
    Dir(String, std::io::Error),
    #[error("cannot reach `{0}`: {1}")]
    Connect(String, std::io::Error),
    #[error("`{0}` answered: {1}")]
    Server(String, String),
    #[error(
        "no approval `{0}` on any pgwarden server of this user; `pgwarden approvals list --all` shows them (an approval \
         is gone once its server stops)"
    )]
    Unknown(String),
    #[error("`{0}` matches {1} approvals; use the approval id")]
    Ambiguous(String, usize),
}

/// What to do.
pub enum Command {
    /// Pending approvals (`all`: also decided, expired and done ones).
    List {
        all: bool,
    },
    Show {
        key: String,
    },
    /// `decision`: `approve`, `dry_run` or `deny`.
    Decide {
        key: String,
        decision: &'static str,
        row_limit: Option<u64>,
        reason: Option<String>,
    },
}

/// Where to ask: one socket, or every `approvals-*.sock` in the runtime directory.
pub enum Target<'a> {
    Socket(&'a Path),
    Dir(&'a Path),
}

/// Runs `command` and returns what to print.
pub fn run(target: Target<'_>, command: Command) -> Result<String, CliError> {
    let sockets = match target {
        Target::Socket(p) => Sockets {
            paths: vec![p.to_path_buf()],
            skip_dead: false,
        },
        Target::Dir(d) => Sockets {
            paths: sockets(d)?,
            skip_dead: true,
        },
    };
    match command {
        Command::List { all } => list(&sockets, all),
        Command::Show { key } => {
            let (_, server, item) = find(&sockets, &key)?;
            Ok(render(&server, &item))
        }
        Command::Decide {
            key,
            decision,
            row_limit,
            reason,
        } => {
            let (socket, server, item) = find(&sockets, &key)?;
            let request = Request::Decide {
                id: item.approval_id.clone(),
                action_hash: item.action_hash.clone(),
                decision: decision.into(),
                max_rows_affected: row_limit,
                reason,
            };
            let answer = ask(&socket, &request)?;
            let mut out = render(&server, &item);
            match (answer.error, answer.state_label) {
                (Some(e), _) => Err(CliError::Server(socket.display().to_string(), e)),
                (None, label) => {
                    out.push_str(&format!(
                        "\n{} {}: {}\n",
                        item.approval_id,
                        item.fingerprint,
                        label.unwrap_or_default()
                    ));
                    Ok(out)
                }
            }
        }
    }
}

/// The servers' sockets in `dir`, by name.
fn sockets(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::NoServer(dir.display().to_string()));
        }
        Err(e) => return Err(CliError::Dir(dir.display().to_string(), e)),
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(SOCKET_PREFIX) && name.ends_with(SOCKET_SUFFIX)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(CliError::NoServer(dir.display().to_string()));
    }
    Ok(found)
}

/// One request, one answer.
fn ask(socket: &Path, request: &Request) -> Result<Response, CliError> {
    let name = || socket.display().to_string();
    let mut stream = UnixStream::connect(socket).map_err(|e| CliError::Connect(name(), e))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| CliError::Connect(name(), e))?;
    let mut line = serde_json::to_string(request).map_err(|e| CliError::Server(name(), e.to_string()))?;
    line.push('\n');
    // A server that refuses us answers without reading: its answer still says why.
    let sent = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    // An answer carries whole review packets: allow far more than a request.
    let read = BufReader::new(stream.take(MAX_LINE * 1024)).read_line(&mut answer);
    match (sent, read) {
        (_, Ok(n)) if n > 0 => {}
        (Err(e), _) | (Ok(()), Err(e)) => return Err(CliError::Connect(name(), e)),
        (Ok(()), Ok(_)) => return Err(CliError::Server(name(), "no answer".into())),
    }
    let response: Response =
        serde_json::from_str(&answer).map_err(|e| CliError::Server(name(), format!("an unreadable answer ({e})")))?;
    match (&response.error, &response.state) {
        // A refused decision still says where the approval stands; the caller reports it.
        (Some(_), Some(_)) => Ok(response),
        (Some(e), None) => Err(CliError::Server(name(), e.clone())),
        _ => Ok(response),
    }
}

/// The sockets to ask. `skip_dead`: they were found in the runtime directory, where a killed
/// server leaves its socket behind; one named with `--socket` is reported as it is.
struct Sockets {
    paths: Vec<PathBuf>,
    skip_dead: bool,
}

/// Every server's answer to `request`. A found socket nobody listens on (its server died without
/// removing it) is skipped; any other failure is reported.
fn ask_all(sockets: &Sockets, request: &Request) -> Result<Vec<(PathBuf, Response)>, CliError> {
    let Sockets {
        paths: sockets,
        skip_dead,
    } = sockets;
    let mut answers = Vec::new();
    let mut dead = 0;
    for socket in sockets {
        match ask(socket, request) {
            Ok(r) => answers.push((socket.clone(), r)),
            Err(CliError::Connect(_, e))
                if *skip_dead
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                    ) =>
            {
                dead += 1
            }
            Err(e) => return Err(e),
        }
    }
    if answers.is_empty() && dead > 0 {
        let dir = sockets[0].parent().unwrap_or(Path::new("")).display().to_string();
        return Err(CliError::NoServer(dir));
    }
    Ok(answers)
}

fn list(sockets: &Sockets, all: bool) -> Result<String, CliError> {
    let mut out = String::new();
    let mut shown = 0;
    for (_, r) in ask_all(sockets, &Request::List)? {
        let items: Vec<&Item> = r.approvals.iter().filter(|i| all || i.state == "pending").collect();
        if items.is_empty() {
            continue;
        }
        out.push_str(&format!("{}\n", one_line(&r.server, 200)));
        for i in items {
            shown += 1;
            out.push_str(&format!(
                "  {}  {}  {:<8} {} risk  {}  expires {}\n",
                i.approval_id,
                i.fingerprint,
                i.state,
                field(&i.packet, "risk", 20),
                field(&i.packet, "summary", 120),
                i.expires_at,
            ));
        }
    }
    if shown == 0 {
        out.push_str(if all {
            "no approvals\n"
        } else {
            "no pending approvals (`--all` also lists decided ones)\n"
        });
    } else {
        out.push_str("\n`pgwarden approvals show <id>` shows the whole statement before you decide.\n");
    }
    Ok(out)
}

/// The approval with this id or fingerprint: a pending one first, else the newest.
fn find(sockets: &Sockets, key: &str) -> Result<(PathBuf, String, Item), CliError> {
    let request = Request::Show { key: key.to_string() };
    let mut matches: Vec<(PathBuf, String, Item)> = Vec::new();
    for (socket, r) in ask_all(sockets, &request)? {
        matches.extend(r.approvals.into_iter().map(|i| (socket.clone(), r.server.clone(), i)));
    }
    let pending: Vec<usize> = (0..matches.len())
        .filter(|i| matches[*i].2.state == "pending")
        .collect();
    let pick = match (pending.len(), matches.len()) {
        (_, 0) => return Err(CliError::Unknown(one_line(key, 80))),
        (1, _) => pending[0],
        (0, _) if matches.iter().all(|m| m.0 == matches[0].0) => 0,
        (_, n) => return Err(CliError::Ambiguous(one_line(key, 80), n)),
    };
    Ok(matches.swap_remove(pick))
}

/// A string field of the packet, on one line.
fn field(packet: &serde_json::Value, name: &str, max: usize) -> String {
    one_line(packet[name].as_str().unwrap_or("-"), max)
}

/// One approval as a person reads it before deciding: the statement first.
pub fn render(server: &str, i: &Item) -> String {
    let p = &i.packet;
    let mut out = format!(
        "pgwarden approval {} · fingerprint {} · {}\n\nSQL:\n{}\n\n",
        i.approval_id,
        i.fingerprint,
        one_line(&i.state_label, 200),
        indent(&visible(p["sql"].as_str().unwrap_or_default())),
    );
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<14}{value}\n"));
    line("What:", field(p, "summary", 300));
    line(
        "Risk:",
        format!(
            "{} ({}) via `{}`",
            field(p, "risk", 20),
            field(p, "category", 40),
            field(p, "tool", 40)
        ),
    );
    if p["database"].is_string() {
        line("Database:", field(p, "database", 100));
    }
    line(
        "Decided by:",
        format!("{} — {}", field(p, "rule", 300), field(p, "rule_reason", 300)),
    );
    if let Some(n) = p["estimated_rows"].as_f64() {
        line("Estimate:", format!("~{n:.0} rows (planner estimate)"));
    }
    let tables: Vec<String> = p["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let tags: Vec<&str> = t["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str())
                .collect();
            let name = t["name"].as_str().unwrap_or_default();
            if tags.is_empty() {
                name.to_string()
            } else {
                format!("{name} [{}]", tags.join(", "))
            }
        })
        .collect();
    if !tables.is_empty() {
        line("Tables:", one_line(&tables.join(", "), 600));
    }
    for list in ["reasons", "details"] {
        for r in p[list].as_array().into_iter().flatten().filter_map(|r| r.as_str()) {
            line(if list == "reasons" { "Why:" } else { "Detail:" }, one_line(r, 400));
        }
    }
    line("Requested by:", field(p, "requested_by", 300));
    if let Some(intent) = p["intent"].as_str() {
        line(
            "Intent:",
            format!("{} (the model's words, unverified)", one_line(intent, 500)),
        );
    }
    line("Server:", one_line(server, 300));
    line("Expires:", one_line(&i.expires_at, 40));
    out
}

fn indent(sql: &str) -> String {
    sql.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the model wrote cannot restyle or rewrite the person's terminal: escape sequences,
    /// bidi overrides and line breaks in its fields are shown, not obeyed.
    #[test]
    fn model_supplied_fields_cannot_drive_the_terminal() {
        let item = Item {
            approval_id: "apr_1".into(),
            fingerprint: "a3f9-0c21-7e".into(),
            action_hash: "h".into(),
            state: "pending".into(),
            state_label: "waiting for a person's decision".into(),
            created_at: "t".into(),
            expires_at: "t".into(),
            packet: serde_json::json!({
                "sql": "DELETE FROM t\u{1b}[2K\u{202e}",
                "summary": "delete",
                "risk": "critical",
                "intent": "fine\n\nApproved by admin\u{1b}]0;x\u{7}",
                "requested_by": "c",
            }),
        };
        let text = render("srv", &item);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}') && !text.contains('\u{7}'),
            "{text}"
        );
        assert!(
            text.find("DELETE FROM t").unwrap() < text.find("Intent:").unwrap(),
            "SQL first"
        );
        let intent = text.lines().find(|l| l.starts_with("Intent:")).unwrap();
        assert!(intent.contains("Approved by admin"), "one line: {text}");
    }
}
