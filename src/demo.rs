//! `pgwarden demo`: a small terminal MCP client for trying pgwarden. It launches `pgwarden serve` as
//! a child over stdio (the same path Claude uses), reads SQL and `\` commands, prints results as
//! tables, and renders approval prompts in the terminal so a person can approve, dry-run or deny.

use std::{path::PathBuf, sync::Arc};

use rmcp::{
    ClientHandler, ErrorData, RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult,
        ElicitationAction, Implementation,
    },
    service::RequestContext,
    transport::{ConfigureCommandExt, TokioChildProcess},
};
use serde_json::{Value, json};

/// Everything the server sends reaches a person's terminal here: control and bidi characters are
/// shown escaped (newlines and tabs kept), so a row or a message cannot rewrite the screen.
use crate::approval::packet::visible;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin},
    sync::Mutex,
};

/// What `demo` needs to start its server.
pub struct DemoOptions {
    /// This binary, to run as `serve`.
    pub exe: PathBuf,
    /// Extra arguments for `serve` (`--policy`, `--sandbox-dir`, …).
    pub serve_args: Vec<String>,
    /// Extra environment for `serve` (a database URL goes here, not on the command line).
    pub serve_env: Vec<(String, String)>,
    /// Where the server's log goes, so its lines never land inside a prompt.
    pub server_log: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start `pgwarden serve`: {0}")]
    Start(String),
    #[error("terminal: {0}")]
    Io(#[from] std::io::Error),
}

type Input = Arc<Mutex<Lines<BufReader<Stdin>>>>;

/// Answers approval prompts from the terminal. Shares stdin with the read loop, which is waiting on
/// the tool call while a prompt is open.
#[derive(Clone)]
struct TerminalReviewer {
    input: Input,
}

impl ClientHandler for TerminalReviewer {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_elicitation().build(),
            Implementation::new("pgwarden-demo", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let ElicitRequestParams::FormElicitationParams { message, .. } = request else {
            return Ok(ElicitResult::new(ElicitationAction::Decline));
        };
        let mut out = tokio::io::stdout();
        let bar = "─".repeat(72);
        let _ = out
            .write_all(format!("\n{bar}\n{}\n{bar}\n", visible(&message)).as_bytes())
            .await;
        let mut input = self.input.lock().await;
        let decision = loop {
            let _ = out.write_all(b"[a]pprove, [d]ry run or [n] deny? ").await;
            let _ = out.flush().await;
            match input.next_line().await {
                Ok(Some(l)) => match l.trim().to_lowercase().as_str() {
                    "a" | "approve" => break "approve",
                    "d" | "dry run" | "dry_run" => break "dry_run",
                    "n" | "deny" => break "deny",
                    _ => continue,
                },
                // End of input: nobody is there to approve.
                _ => return Ok(ElicitResult::new(ElicitationAction::Cancel)),
            }
        };
        let mut content = json!({ "decision": decision });
        if decision != "deny" {
            // Asked again until it is a whole number or blank: a limit typed wrong must never
            // turn into no limit.
            loop {
                let _ = out.write_all(b"row limit (blank for none): ").await;
                let _ = out.flush().await;
                let Ok(Some(l)) = input.next_line().await else {
                    return Ok(ElicitResult::new(ElicitationAction::Cancel));
                };
                let l = l.trim();
                if l.is_empty() {
                    break;
                }
                match l.parse::<u64>() {
                    Ok(n) => {
                        content["max_rows_affected"] = n.into();
                        break;
                    }
                    Err(_) => {
                        let _ = out
                            .write_all(b"a row limit is a whole number such as 10 (or blank for none)\n")
                            .await;
                    }
                }
            }
        }
        let _ = out.write_all(b"reason (optional): ").await;
        let _ = out.flush().await;
        if let Ok(Some(l)) = input.next_line().await
            && !l.trim().is_empty()
        {
            content["reason"] = l.trim().into();
        }
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(content))
    }
}

const HELP: &str = "Type SQL ending with `;` (it may span lines), or a command:
  \\tables          list tables (list_tables)
  \\d NAME          describe a table (describe_table)
  \\tools           the tools the server offers
  \\help            this help
  \\q               quit
Reads run at once; writes and DDL show an approval prompt here, as Claude Code would.";

pub async fn run(options: DemoOptions) -> Result<(), DemoError> {
    let cmd = tokio::process::Command::new(&options.exe).configure(|c| {
        c.arg("serve")
            .args(&options.serve_args)
            .envs(options.serve_env.iter().map(|(k, v)| (k, v)))
            // The person at the terminal chose the sandbox: no "not your database" notice.
            .env("PGWARDEN_DEMO", "1");
    });
    if let Some(dir) = options.server_log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::File::create(&options.server_log)?;
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(log)
        .spawn()
        .map_err(|e| DemoError::Start(e.to_string()))?;
    let input: Input = Arc::new(Mutex::new(BufReader::new(tokio::io::stdin()).lines()));
    let mut out = tokio::io::stdout();
    out.write_all(b"pgwarden demo: starting the server (the sandbox may take a few seconds the first time)...\n")
        .await?;
    let client = match (TerminalReviewer { input: input.clone() }).serve(transport).await {
        Ok(c) => c,
        Err(e) => {
            // The server's own words say why (no PostgreSQL binaries, a bad policy, …).
            let log = std::fs::read_to_string(&options.server_log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let why = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            return Err(DemoError::Start(format!("{e}\n{}", visible(&why))));
        }
    };
    out.write_all(format!("server log: {}\n", options.server_log.display()).as_bytes())
        .await?;
    out.write_all(format!("connected. {HELP}\n").as_bytes()).await?;
    let mut buffer = String::new();
    loop {
        out.write_all(if buffer.is_empty() {
            b"pgwarden> "
        } else {
            b"      ... "
        })
        .await?;
        out.flush().await?;
        let line = { input.lock().await.next_line().await? };
        let Some(line) = line else { break };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let (cmd, arg) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
            let text = match cmd {
                "\\q" => break,
                "\\help" | "\\?" => HELP.to_string(),
                "\\tools" => match client.list_all_tools().await {
                    Ok(tools) => tools
                        .iter()
                        .map(|t| format!("{}: {}", t.name, t.description.as_deref().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    Err(e) => format!("error: {e}"),
                },
                "\\tables" => call(&client, "list_tables", json!({})).await,
                "\\d" if !arg.trim().is_empty() => call(&client, "describe_table", json!({"table": arg.trim()})).await,
                "\\d" => "usage: \\d TABLE (e.g. \\d customers); \\tables lists them".to_string(),
                _ => format!("unknown command `{cmd}`; \\help lists them"),
            };
            out.write_all(format!("{}\n", visible(&text)).as_bytes()).await?;
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut buffer);
        let text = run_sql(&client, sql.trim(), &mut out).await?;
        out.write_all(format!("{}\n", visible(&text)).as_bytes()).await?;
    }
    let _ = client.cancel().await;
    Ok(())
}

type Client<S> = rmcp::service::RunningService<RoleClient, S>;

async fn call<S: rmcp::Service<RoleClient>>(client: &Client<S>, tool: &str, args: Value) -> String {
    match call_result(client, tool, args).await {
        Ok(r) => render(tool, &r),
        Err(e) => e,
    }
}

async fn call_result<S: rmcp::Service<RoleClient>>(
    client: &Client<S>,
    tool: &str,
    args: Value,
) -> Result<CallToolResult, String> {
    let params =
        CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap_or_default());
    client.call_tool(params).await.map_err(|e| format!("error: {e}"))
}

/// Runs typed SQL. A statement waiting for a person (the prompt was not answered within the
/// server's wait budget, or it needs the review console) is waited for with `pgwarden_await`, as
/// someone at a terminal expects, until it is decided or expires.
async fn run_sql<S: rmcp::Service<RoleClient>>(
    client: &Client<S>,
    sql: &str,
    out: &mut tokio::io::Stdout,
) -> std::io::Result<String> {
    let args = json!({"sql": sql, "intent": "typed by a person in pgwarden demo"});
    let mut r = match call_result(client, "query", args).await {
        Ok(r) => r,
        Err(e) => return Ok(e),
    };
    let mut tool = "query";
    while let Some((id, fingerprint)) = waiting(&r) {
        if tool == "query" {
            let line = format!(
                "waiting for a decision on approval {id} (fingerprint {fingerprint}): answer the prompt above, or \
                 use the pgwarden review window if it opened...\n"
            );
            out.write_all(visible(&line).as_bytes()).await?;
            out.flush().await?;
        }
        tool = "pgwarden_await";
        r = match call_result(client, tool, json!({ "approval_id": id })).await {
            Ok(r) => r,
            Err(e) => return Ok(e),
        };
    }
    Ok(render(tool, &r))
}

/// The approval a result is still waiting for: (id, fingerprint).
fn waiting(r: &CallToolResult) -> Option<(String, String)> {
    let v = r.structured_content.as_ref()?;
    if !matches!(v["status"].as_str(), Some("pending_approval" | "pending")) {
        return None;
    }
    let id = v["approval_id"].as_str()?.to_string();
    Some((id, v["fingerprint"].as_str().unwrap_or("-").to_string()))
}

/// Rows as an aligned table; everything else as the server's own text.
fn render(tool: &str, r: &CallToolResult) -> String {
    let text: String = r
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    if r.is_error == Some(true) {
        return format!("error: {}", for_person(&text));
    }
    let Some(v) = &r.structured_content else { return text };
    if tool != "query" || v.get("change").is_some() {
        return text;
    }
    let columns: Vec<String> = v["columns"]
        .as_array()
        .map(|c| c.iter().map(|c| c["name"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    row.as_array()
                        .map(|cells| cells.iter().map(cell).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut out = format!("{}\n", line(&columns));
    out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-"));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out.push_str(&format!(
        "({} row{}{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        if v["truncated"] == json!(true) {
            ", truncated"
        } else {
            ""
        }
    ));
    if let Some(n) = v.get("notice").and_then(|n| n.as_str()) {
        out.push_str(&format!("\nnote: {n}"));
    }
    out
}

/// The server writes its errors for a model ("ask the user …"); here the user is reading. The
/// advice meant for a model is turned into what it means for the person.
fn for_person(text: &str) -> String {
    [
        (
            "Nothing was executed; this is the operator's policy, so do not retry it in another form — ask the user instead.",
            "Nothing was executed (the operator's policy).",
        ),
        (
            "Nothing was executed; adapt the plan, or ask the user how to proceed.",
            "Nothing was executed.",
        ),
        (
            "Do NOT retry the change: ask the user to check the data first",
            "Check the data before running it again",
        ),
        ("— ask the user to run it outside pgwarden", "— run it outside pgwarden"),
    ]
    .iter()
    .fold(text.to_string(), |t, (for_model, for_you)| t.replace(for_model, for_you))
}

/// One cell, at most 40 characters, NULL spelled out.
fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = visible(&s.replace('\n', "\\n").replace('\r', "\\r").replace('\t', "\\t"));
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(39).collect::<String>())
    } else {
        s
    }
}
