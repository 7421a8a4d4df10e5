//! The terminal approval channel, server side: while `pgwarden serve` runs it listens on a Unix
//! socket of its own (`approvals-<pid>.sock`, mode 0600, in the user's private 0700 runtime
//! directory, the console's), and answers only connections whose peer credentials carry its own uid.
//!
//! The model cannot reach it: it speaks MCP only, and no tool touches this socket. A person runs
//! `pgwarden approvals list|show|approve|deny` (see `approval::cli`) in another terminal; a decision
//! counts as `local`, is audited as channel `cli` with the deciding uid, and goes through
//! [`ApprovalStore::decide`](super::pending::ApprovalStore::decide) like the console's: first decision wins, bound to the action hash.
//! The protocol is one JSON request line and one JSON answer line per connection.

use std::{
    io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;

use super::{
    hub::Approvals,
    pending::{Attestation, Decision, Listed, Reviewer, State, fingerprint},
    reach::Terminal,
    surface::{Announced, Offer, ReviewSurface},
};
use crate::call::Surface;

/// Socket names: `approvals-<pid>.sock`, one per serving process; the CLI talks to all of them.
pub const SOCKET_PREFIX: &str = "approvals-";
pub const SOCKET_SUFFIX: &str = ".sock";
/// A request line longer than this is refused.
pub const MAX_LINE: u64 = 64 * 1024;
/// A request must arrive within this: the CLI sends it at once.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// `sun_path` holds 108 bytes on Linux, including the final NUL.
const MAX_SOCKET_PATH: usize = 107;

/// What `pgwarden approvals` asks.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Every approval this server holds, newest first.
    List,
    /// The approvals whose id or fingerprint is `key`.
    Show { key: String },
    /// A person's decision on approval `id`, as shown with `action_hash`.
    Decide {
        id: String,
        action_hash: String,
        /// `approve`, `dry_run` or `deny`.
        decision: String,
        max_rows_affected: Option<u64>,
        reason: Option<String>,
    },
}

/// The answer: `server` always; `approvals` for list and show; `state` after a decision; `error`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub server: String,
    #[serde(default)]
    pub approvals: Vec<Item>,
    pub state: Option<String>,
    pub state_label: Option<String>,
    pub error: Option<String>,
}

/// One approval as the terminal shows it. `packet` is the review packet the console shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub approval_id: String,
    pub fingerprint: String,
    pub action_hash: String,
    pub state: String,
    pub state_label: String,
    pub created_at: String,
    pub expires_at: String,
    pub packet: serde_json::Value,
}

impl Item {
    fn from(l: &Listed) -> Item {
        let (state, label) = l.state.words();
        let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Item {
            approval_id: l.id.clone(),
            fingerprint: fingerprint(&l.hash),
            action_hash: l.hash.clone(),
            state: state.into(),
            state_label: label,
            created_at: time(&l.review.created_at),
            expires_at: time(&l.review.expires_at),
            packet: l.review.packet.clone(),
        }
    }
}

/// The fingerprint as typed by a person: case and dashes do not matter.
pub fn normalize_key(key: &str) -> String {
    key.trim().to_ascii_lowercase().replace('-', "")
}

/// The socket of this process; removed (and the listener stopped) when dropped.
pub struct Socket {
    path: PathBuf,
    stop: CancellationToken,
}

impl Socket {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts the terminal channel in `dir` when `cli` is enabled; `None` (with the reason kept for
/// refusals and logged) when it is off or cannot listen. Call within the runtime.
pub fn listen(approvals: &Arc<Approvals>, dir: &Path) -> Option<Socket> {
    if !approvals.settings.enabled(Surface::Cli) {
        approvals.set_terminal(Terminal::Off);
        return None;
    }
    match bind(dir) {
        Ok((listener, path)) => {
            let stop = CancellationToken::new();
            serve(listener, approvals.clone(), stop.clone());
            tracing::info!(socket = %path.display(), "approvals socket listening (`pgwarden approvals`)");
            approvals.set_terminal(Terminal::Listening);
            approvals.register(Arc::new(CliSurface(Arc::downgrade(approvals))));
            Some(Socket { path, stop })
        }
        Err(e) => {
            let why = format!("cannot listen in `{}`: {e}", dir.display());
            tracing::warn!("approvals socket: {why}");
            approvals.set_terminal(Terminal::NotListening(why));
            None
        }
    }
}

fn bind(dir: &Path) -> io::Result<(UnixListener, PathBuf)> {
    crate::dirs::private_dir(dir)?;
    let path = dir.join(format!("{SOCKET_PREFIX}{}{SOCKET_SUFFIX}", std::process::id()));
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(io::Error::other(format!(
            "the socket path `{}` is longer than a Unix socket allows; set XDG_RUNTIME_DIR to a shorter directory",
            path.display()
        )));
    }
    remove_dead_sockets(dir);
    // Our pid is in the name: a file there is a leftover of a dead process that had our pid.
    if let Ok(meta) = std::fs::symlink_metadata(&path)
        && meta.file_type().is_socket()
    {
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    // The directory is 0700 already; the socket itself is the owner's only as well.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, path))
}

/// Sockets left by servers that were killed: nobody accepts on them any more.
fn remove_dead_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let is_socket = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket());
        if is_socket
            && name.starts_with(SOCKET_PREFIX)
            && name.ends_with(SOCKET_SUFFIX)
            && std::os::unix::net::UnixStream::connect(&path)
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn serve(listener: UnixListener, approvals: Arc<Approvals>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("approvals socket: cannot accept ({e})");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let approvals = approvals.clone();
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = connection(stream, &approvals).await {
                    tracing::debug!("approvals socket: connection ended: {e}");
                }
            });
        }
    });
}

async fn connection(mut stream: UnixStream, approvals: &Approvals) -> io::Result<()> {
    let server = approvals.label().to_string();
    let cred = stream.peer_cred()?;
    let me = rustix::process::geteuid().as_raw();
    if cred.uid() != me {
        tracing::warn!(
            uid = cred.uid(),
            pid = cred.pid(),
            "approvals socket: refused a connection from another user"
        );
        let error = format!(
            "refused: this pgwarden answers only to its own user (uid {me}); you are uid {}",
            cred.uid()
        );
        return answer(
            &mut stream,
            &Response {
                server,
                error: Some(error),
                ..Response::default()
            },
        )
        .await;
    }
    let mut line = String::new();
    let read = {
        let mut reader = BufReader::new((&mut stream).take(MAX_LINE));
        tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await
    };
    let response = match read {
        Err(_) => Response {
            error: Some("no request within 5 s".into()),
            ..Response::default()
        },
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if !line.ends_with('\n') => Response {
            error: Some(format!(
                "the request must be one line of JSON, at most {MAX_LINE} bytes"
            )),
            ..Response::default()
        },
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let decider = match cred.pid() {
                    Some(pid) => format!("uid {} (pgwarden approvals, pid {pid})", cred.uid()),
                    None => format!("uid {} (pgwarden approvals)", cred.uid()),
                };
                handle(approvals, request, decider).await
            }
            Err(e) => Response {
                error: Some(format!("unreadable request: {e}")),
                ..Response::default()
            },
        },
    };
    answer(&mut stream, &Response { server, ..response }).await
}

async fn answer(stream: &mut UnixStream, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_string(response).map_err(io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    stream.shutdown().await
}

async fn handle(approvals: &Approvals, request: Request, decider: String) -> Response {
    let store = &approvals.store;
    match request {
        Request::List => Response {
            approvals: store.list().await.iter().map(Item::from).collect(),
            ..Response::default()
        },
        Request::Show { key } => {
            let key = normalize_key(&key);
            Response {
                approvals: store
                    .list()
                    .await
                    .iter()
                    .filter(|l| l.id.to_ascii_lowercase() == key || normalize_key(&fingerprint(&l.hash)) == key)
                    .map(Item::from)
                    .collect(),
                ..Response::default()
            }
        }
        Request::Decide {
            id,
            action_hash,
            decision,
            max_rows_affected,
            reason,
        } => {
            let decision = match Decision::parse(&decision, max_rows_affected, reason) {
                Ok(d) => d,
                Err(e) => {
                    return Response {
                        error: Some(e),
                        ..Response::default()
                    };
                }
            };
            let reviewer = Reviewer::attested(Surface::Cli, decider, Attestation::Os);
            match store.decide(&id, &action_hash, &reviewer, decision).await {
                Ok(state) => {
                    let (word, label) = state.words();
                    Response {
                        state: Some(word.into()),
                        state_label: Some(label),
                        ..Response::default()
                    }
                }
                Err(e) => Response {
                    error: Some(e.to_string()),
                    state: store.state(&id).await.as_ref().map(|s: &State| s.words().0.to_string()),
                    ..Response::default()
                },
            }
        }
    }
}

/// The terminal surface: `pgwarden approvals` lists and decides over the socket, so announcing sends
/// nothing; it can show approvals while the socket listens.
struct CliSurface(std::sync::Weak<Approvals>);

#[async_trait::async_trait]
impl ReviewSurface for CliSurface {
    fn id(&self) -> Surface {
        Surface::Cli
    }

    fn offers(&self, _: &Offer) -> bool {
        self.0.upgrade().is_some_and(|a| a.terminal() == Terminal::Listening)
    }

    fn place(&self, id: &str) -> String {
        format!(
            "in a terminal of their own on this computer (`pgwarden approvals approve {id}` — a command for the person, \
             never for you to run)"
        )
    }

    async fn announce(&self, _: &Announced<'_>) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_strict_json_lines() {
        let r: Request = serde_json::from_str(r#"{"op":"show","key":"apr_1"}"#).unwrap();
        assert!(matches!(r, Request::Show { key } if key == "apr_1"));
        for bad in [
            r#"{"op":"decide","id":"a","action_hash":"h","decision":"approve","extra":1}"#,
            r#"{"op":"show","key":"a","key":"b"}"#,
            r#"{"op":"approve_all"}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_key(" A3F9-0C21-7E "), "a3f90c217e");
    }
}
