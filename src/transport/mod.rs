//! The stdio transport, guarded: pgwarden reads the client's lines itself before rmcp does, so a
//! message over the size limit is answered and audited (rmcp would drop it and leave the request
//! hanging), and a message that repeats a JSON key is refused (serde_json would read it last-wins).
//!
//! ```text
//! stdin ─► guard ──(duplex)──► rmcp ──(duplex)──► pass_on ─┐
//!            └──────── its own error answers ──────────────┴─► write_lines ─► stdout
//! ```

mod pipe;
mod scan;
mod unique;

use std::{io, sync::Arc};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream},
    sync::mpsc,
};

use crate::audit::{AuditLog, Event, OutcomeRecord, Record};
use scan::{Head, HeadScanner};
use unique::Keys;

/// The most bytes one message may take, its newline included. The same as rmcp's own limit
/// (`DEFAULT_MAX_LINE_LENGTH`), so every line pgwarden passes on is one rmcp reads.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// JSON-RPC's "Invalid Request".
const INVALID_REQUEST: i64 = -32600;
/// How much of stdin is read at a time, and the size of the pipes to and from rmcp.
const CHUNK: usize = 64 * 1024;
/// Whole lines waiting for stdout.
const QUEUE: usize = 64;

/// rmcp's ends of the guarded pipes: it reads the client's messages from the first and writes its
/// own to the second. `(DuplexStream, DuplexStream)` is an rmcp transport as it is.
pub type Pipes = (DuplexStream, DuplexStream);

/// The guarded transport over this process's stdin and stdout. `audit` records what is refused.
/// The handle ends once every line for stdout is written (await it, bounded, before exiting).
pub fn stdio(audit: Arc<AuditLog>) -> (Pipes, tokio::task::JoinHandle<()>) {
    guarded(pipe::stdin(), pipe::stdout(), audit)
}

/// [`guard`], with the handle of the task that writes to `output`.
fn guarded<R, W>(input: R, output: W, audit: Arc<AuditLog>) -> (Pipes, tokio::task::JoinHandle<()>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (to_rmcp, rmcp_in) = tokio::io::duplex(CHUNK);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(CHUNK);
    let (lines, queue) = mpsc::channel(QUEUE);
    let written = tokio::spawn(write_lines(queue, output));
    tokio::spawn(pass_on(from_rmcp, lines.clone()));
    let guard = Guard { to_rmcp, lines, audit };
    tokio::spawn(guard.run(input));
    ((rmcp_in, rmcp_out), written)
}

/// The guarded transport over any byte streams: a client's messages come in on `input`, one per
/// line, and every message for it goes out on `output` as one whole line.
pub fn guard<R, W>(input: R, output: W, audit: Arc<AuditLog>) -> Pipes
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    guarded(input, output, audit).0
}

/// Writes each queued line to `output` whole, until the queue closes or `output` fails.
async fn write_lines<W: AsyncWrite + Unpin>(mut queue: mpsc::Receiver<Vec<u8>>, mut output: W) {
    while let Some(line) = queue.recv().await {
        let written = async {
            output.write_all(&line).await?;
            output.flush().await
        };
        if let Err(e) = written.await {
            tracing::error!("cannot write to stdout ({e}); the session ends");
            return;
        }
    }
}

/// Queues rmcp's messages (it writes one per line) for stdout.
async fn pass_on(from_rmcp: DuplexStream, lines: mpsc::Sender<Vec<u8>>) {
    let mut from_rmcp = BufReader::with_capacity(CHUNK, from_rmcp);
    loop {
        let mut line = Vec::new();
        match from_rmcp.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if lines.send(line).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The reader of stdin. Dropping it (at the end of stdin) closes rmcp's input: the session ends.
struct Guard {
    to_rmcp: DuplexStream,
    lines: mpsc::Sender<Vec<u8>>,
    audit: Arc<AuditLog>,
}

/// rmcp or stdout is gone: nothing more can be delivered.
struct Gone;

/// How a refused message is answered.
enum Kind {
    /// Answered on stdout with an error for its id (`null` when it has none that can be used).
    Request,
    /// The client's answer to one of our requests: rmcp gets an error for that request instead,
    /// so whatever waits for it (an approval prompt) fails closed.
    Answer(Value),
    /// An answer whose id cannot be used (repeated, or not a string or number): it cannot be
    /// routed, so it is dropped, and the request it answers times out (no approval either).
    Unroutable,
    /// Nothing to answer.
    Notification,
}

impl Guard {
    async fn run<R: AsyncRead + Unpin>(mut self, input: R) {
        let mut input = Lines::new(input);
        loop {
            let step = match input.next().await {
                Ok(Line::Whole(line)) => self.line(line).await,
                Ok(Line::TooLong { bytes, head }) => self.too_long(bytes, head).await,
                Ok(Line::End) => return,
                Err(e) => {
                    tracing::error!("cannot read stdin ({e}); the session ends");
                    return;
                }
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn line(&mut self, line: &[u8]) -> Result<(), Gone> {
        // What rmcp parses: without the newline, a carriage return, or a byte order mark.
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        match unique::check(body) {
            // Not JSON: rmcp answers it (or ignores it) as it always has.
            Keys::Unique | Keys::NotJson => self.to_rmcp.write_all(line).await.map_err(|_| Gone),
            Keys::Repeated(path) => self.repeated(body, &path).await,
        }
    }

    async fn repeated(&mut self, body: &[u8], path: &str) -> Result<(), Gone> {
        let head = head_of(&serde_json::from_slice(body).unwrap_or_default(), path);
        let key = shown(path);
        let (kind, message) = match kind(&head) {
            Kind::Request => (
                Kind::Request,
                format!(
                    "the request repeats the key `{key}`; pgwarden refuses JSON with duplicate keys, since readers \
                     disagree on which value counts; send each key once"
                ),
            ),
            Kind::Answer(id) => {
                let message = format!(
                    "the client's answer to request {id} repeats the key `{key}`; pgwarden refuses JSON with \
                     duplicate keys, so it counts as no answer"
                );
                (Kind::Answer(id), message)
            }
            Kind::Unroutable => (
                Kind::Unroutable,
                format!(
                    "an answer from the client repeats the key `{key}` and cannot be matched to a request; it is \
                     dropped and counts as no answer"
                ),
            ),
            Kind::Notification => {
                tracing::warn!(
                    "dropped a notification (`{}`) that repeats the key `{key}`",
                    head.method.as_deref().unwrap_or("?")
                );
                return Ok(());
            }
        };
        self.refuse(&head, kind, message, json!({ "repeated_key": key })).await
    }

    async fn too_long(&mut self, bytes: usize, head: Head) -> Result<(), Gone> {
        let limit = MAX_MESSAGE_BYTES / (1024 * 1024);
        let (kind, message) = match kind(&head) {
            Kind::Answer(id) => {
                let message = format!(
                    "the client's answer to request {id} is {bytes} bytes, over pgwarden's {limit} MiB limit for one \
                     message, so it counts as no answer"
                );
                (Kind::Answer(id), message)
            }
            // Said even when no usable id was found: the client may be waiting for it.
            Kind::Request | Kind::Unroutable | Kind::Notification => (
                Kind::Request,
                format!(
                    "the request is {bytes} bytes, over pgwarden's {limit} MiB limit for one message; send less \
                     (e.g. a smaller SQL text)"
                ),
            ),
        };
        self.refuse(&head, kind, message, json!({ "bytes": bytes })).await
    }

    /// Audits the refusal, then answers it. A failed audit is logged and the message is refused
    /// all the same.
    async fn refuse(&mut self, head: &Head, kind: Kind, message: String, mut details: Value) -> Result<(), Gone> {
        tracing::warn!("refused a message: {message}");
        details["method"] = json!(head.method);
        details["jsonrpc_id"] = json!(head.id);
        let record = Record {
            event: Some(Event::Call),
            tool: head.tool.clone(),
            outcome: Some(OutcomeRecord {
                status: crate::audit::Status::Refused,
                message: Some(message.clone()),
                ..OutcomeRecord::default()
            }),
            details: Some(details),
            ..Record::default()
        };
        let audit = self.audit.clone();
        match tokio::task::spawn_blocking(move || audit.append(record, true)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("the refusal above is not in the audit trail: {e}"),
            Err(e) => tracing::error!("the refusal above is not in the audit trail: {e}"),
        }
        let error = |id: Value| {
            let mut line = json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": { "code": INVALID_REQUEST, "message": message },
            })
            .to_string()
            .into_bytes();
            line.push(b'\n');
            line
        };
        match kind {
            Kind::Answer(id) => self.to_rmcp.write_all(&error(id)).await.map_err(|_| Gone),
            Kind::Unroutable => Ok(()),
            Kind::Request | Kind::Notification => {
                let id = head.id.clone().unwrap_or(Value::Null);
                self.lines.send(error(id)).await.map_err(|_| Gone)
            }
        }
    }
}

/// Tells requests from answers and notifications.
fn kind(head: &Head) -> Kind {
    if head.is_answer && !head.has_method {
        match &head.id {
            Some(id) if !id.is_null() => Kind::Answer(id.clone()),
            _ => Kind::Unroutable,
        }
    } else if head.has_method && !head.has_id {
        Kind::Notification
    } else {
        Kind::Request
    }
}

/// The head of a message read whole (last-wins), leaving out what `repeated` makes ambiguous.
fn head_of(message: &Value, repeated: &str) -> Head {
    let top = |key: &str| message.get(key).filter(|_| repeated != key);
    let method = top("method").and_then(Value::as_str).map(str::to_string);
    let tool = message
        .get("params")
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .filter(|_| method.as_deref() == Some("tools/call") && repeated != "params" && repeated != "params.name")
        .map(str::to_string);
    Head {
        id: top("id")
            .filter(|v| v.is_string() || v.is_number() || v.is_null())
            .cloned(),
        has_id: message.get("id").is_some(),
        has_method: message.get("method").is_some(),
        is_answer: message.get("result").is_some() || message.get("error").is_some(),
        method,
        tool,
    }
}

/// A key path as shown in an error: a client's key can be any length.
fn shown(path: &str) -> String {
    const MAX: usize = 200;
    match path.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &path[..cut]),
        None => path.to_string(),
    }
}

/// Reads stdin one line at a time, never holding more than one message within the limit.
struct Lines<R> {
    input: BufReader<R>,
    line: Vec<u8>,
}

enum Line<'a> {
    /// A whole line, its newline included.
    Whole(&'a [u8]),
    /// A line over [`MAX_MESSAGE_BYTES`], read to its end and let go: its size without the
    /// newline, and who sent it.
    TooLong { bytes: usize, head: Head },
    /// The end of stdin. A last line without its newline is not a whole message (rmcp drops it too).
    End,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    fn new(input: R) -> Lines<R> {
        Lines {
            input: BufReader::with_capacity(CHUNK, input),
            line: Vec::new(),
        }
    }

    async fn next(&mut self) -> io::Result<Line<'_>> {
        self.line.clear();
        // A large message's buffer is not kept for the small ones after it.
        self.line.shrink_to(CHUNK);
        loop {
            let (take, whole, over) = {
                let chunk = self.input.fill_buf().await?;
                if chunk.is_empty() {
                    return Ok(Line::End);
                }
                let newline = chunk.iter().position(|&b| b == b'\n');
                let take = newline.map_or(chunk.len(), |i| i + 1);
                let over = self.line.len() + take > MAX_MESSAGE_BYTES;
                if !over {
                    self.line.extend_from_slice(&chunk[..take]);
                }
                (take, newline.is_some(), over)
            };
            if over {
                return self.skip().await;
            }
            self.input.consume(take);
            if whole {
                return Ok(Line::Whole(&self.line));
            }
        }
    }

    /// Reads the rest of a line that is over the limit, keeping only what [`HeadScanner`] keeps.
    async fn skip(&mut self) -> io::Result<Line<'_>> {
        let mut head = HeadScanner::new();
        head.feed(&self.line);
        let mut bytes = self.line.len();
        self.line.clear();
        loop {
            let (take, whole) = {
                let chunk = self.input.fill_buf().await?;
                if chunk.is_empty() {
                    break;
                }
                let newline = chunk.iter().position(|&b| b == b'\n');
                let content = newline.unwrap_or(chunk.len());
                head.feed(&chunk[..content]);
                bytes += content;
                (newline.map_or(content, |i| i + 1), newline.is_some())
            };
            self.input.consume(take);
            if whole {
                break;
            }
        }
        Ok(Line::TooLong {
            bytes,
            head: head.finish(),
        })
    }
}

#[cfg(test)]
mod tests;
