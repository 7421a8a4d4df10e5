//! The approvals API's client: `pgwarden approvals --server URL` lists, shows and decides a team's
//! approvals as the reviewer whose bearer token it holds (`team::api` is the server side).
//!
//! A decision carries the action hash of the approval as fetched and printed just before, so what
//! is approved is what the reviewer was shown. Everything the server sends is escaped before it
//! reaches the terminal.

use std::{path::Path, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::approval::{
    cli::{Command, render},
    local::Item,
    packet::one_line,
};

/// The server must answer within this.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`--server {0}`: {1}")]
    Url(String, String),
    #[error("cannot read the token file `{0}`: {1}")]
    TokenFile(String, std::io::Error),
    /// Where the token came from, and what is wrong with it.
    #[error("{0} {1}")]
    BadToken(String, &'static str),
    #[error(
        "no reviewer token: pass `--token-file PATH` (a file holding your token from `pgwarden token new`, or an \
         OAuth access token) or set PGWARDEN_TOKEN"
    )]
    NoToken,
    #[error("cannot reach `{0}`: {1}")]
    Connect(String, String),
    #[error("`--ca-cert {0}`: {1}")]
    CaCert(String, String),
    #[error(
        "`{0}` did not accept your token (401): it is unknown, revoked or expired. Check that `--token-file` or \
         PGWARDEN_TOKEN holds your own token (`pgwarden token new` prints it once) or a current access token"
    )]
    Unauthorized(String),
    #[error(
        "refused (403): {0}\nthe attempt is recorded in the audit trail; a reviewer the rule names, other than the \
         requester, must decide it"
    )]
    Forbidden(String),
    #[error("not decided (409): {0}\n`pgwarden approvals show {1}` shows where it stands now")]
    Conflict(String, String),
    #[error("{0} (404); `pgwarden approvals list --all` shows the approvals you may see")]
    NotFound(String),
    #[error("`{0}` answered {1}: {2}")]
    Server(String, StatusCode, String),
    #[error("no approval you may see has the fingerprint `{0}`; `pgwarden approvals list --all` shows them")]
    UnknownFingerprint(String),
    #[error("`{0}` matches {1} approvals; use the approval id")]
    Ambiguous(String, usize),
}

/// Reads a reviewer token from `path`: the token alone, surrounding whitespace ignored.
pub fn read_token_file(path: &Path) -> Result<String, ClientError> {
    let name = || format!("the token file `{}`", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::TokenFile(path.display().to_string(), e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ClientError::BadToken(name(), "is empty; it must hold your token"));
    }
    if token.contains('=') && token.contains('\n') {
        return Err(ClientError::BadToken(
            name(),
            "looks like the server's token list (names and hashes); give the file that holds your own token, \
             as `pgwarden token new` printed it",
        ));
    }
    check_token(token).map_err(|why| ClientError::BadToken(name(), why))?;
    Ok(token.to_string())
}

/// A token goes into an HTTP header: printable ASCII without spaces.
pub fn check_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err("must hold only the token (printable characters, no spaces or line breaks)");
    }
    Ok(())
}

/// The approvals API of the server at `server`: its base URL or its `/mcp` resource URL.
pub fn api_root(server: &str) -> Result<url::Url, ClientError> {
    let bad = |why: &str| ClientError::Url(one_line(server, 200), why.to_string());
    let mut url =
        url::Url::parse(server).map_err(|e| bad(&format!("not a URL ({e}); e.g. `https://pgwarden.example.com`")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("must be an http(s) URL, e.g. `https://pgwarden.example.com`"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials; the token comes from `--token-file` or PGWARDEN_TOKEN",
        ));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        return Err(bad(
            "plain http would send your token unencrypted; use https (plain http only to localhost)",
        ));
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/mcp").unwrap_or(path).to_string();
    url.set_path(&format!("{path}/api/v1/approvals"));
    Ok(url)
}

/// A pgwarden server's approvals API, as one reviewer.
pub struct Remote {
    /// `…/api/v1/approvals`.
    api: url::Url,
    token: String,
    http: reqwest::Client,
}

impl Remote {
    /// A client of the server at `server` (see [`api_root`]) speaking as the owner of `token`.
    /// `ca_cert`: a PEM file of certificates to trust besides the public roots (an internal CA,
    /// or the server's own self-signed certificate).
    pub fn new(server: &str, token: String, ca_cert: Option<&std::path::Path>) -> Result<Remote, ClientError> {
        let api = api_root(server)?;
        check_token(&token).map_err(|why| ClientError::BadToken("the token (PGWARDEN_TOKEN)".into(), why))?;
        let mut http = reqwest::Client::builder();
        if let Some(path) = ca_cert {
            let bad = |why: String| ClientError::CaCert(path.display().to_string(), why);
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("it holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)".into()));
            }
            for c in certs {
                http = http.add_root_certificate(c);
            }
        }
        let http = http
            .timeout(TIMEOUT)
            // An API that redirects is misconfigured, and the token must not follow it elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pgwarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Connect(api.to_string(), e.to_string()))?;
        Ok(Remote { api, token, http })
    }

    /// The server as the reviewer reads it: its origin and path prefix.
    fn server(&self) -> String {
        let s = self.api.as_str();
        s.strip_suffix("/api/v1/approvals").unwrap_or(s).to_string()
    }

    /// The URL of `…/approvals/{id}[/decision]`, the id as one path segment.
    fn url(&self, id: Option<&str>, decision: bool) -> url::Url {
        let mut url = self.api.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(id);
            if decision {
                segments.push("decision");
            }
        }
        url
    }

    /// Runs `command`; `json`: print what the API answered instead of text.
    pub async fn run(&self, command: Command, json: bool) -> Result<String, ClientError> {
        match command {
            Command::List { all } => {
                let mut url = self.url(None, false);
                if !all {
                    url.query_pairs_mut().append_pair("state", "pending");
                }
                let list = self.send(self.http.get(url), "").await?;
                Ok(if json {
                    pretty(&list)
                } else {
                    self.render_list(&list, all)
                })
            }
            Command::Show { key } => {
                let a = self.find(&key).await?;
                Ok(if json { pretty(&a) } else { self.render(&a) })
            }
            Command::Decide {
                key,
                decision,
                row_limit,
                reason,
            } => {
                // Fetched just before: the hash sent is the one of what is printed.
                let a = self.find(&key).await?;
                let id = text(&a, "id");
                let body = json!({
                    "decision": decision,
                    "action_hash": text(&a, "action_hash"),
                    "max_rows_affected": row_limit,
                    "reason": reason,
                });
                let answer = self
                    .send(self.http.post(self.url(Some(&id), true)).json(&body), &id)
                    .await?;
                if json {
                    return Ok(pretty(&answer));
                }
                let now = match answer.get("approval") {
                    Some(a) if a.is_object() => a,
                    _ => &a,
                };
                let mut out = self.render(now);
                out.push_str(&format!(
                    "\n{} {}: {}\n",
                    one_line(&id, 80),
                    one_line(&text(&a, "fingerprint"), 20),
                    one_line(&text(&answer, "state_label"), 300),
                ));
                if answer["state"] == "pending" {
                    out.push_str(&format!(
                        "your approval is recorded ({}); it waits for another reviewer's\n",
                        votes_line(now)
                    ));
                }
                Ok(out)
            }
        }
    }

    /// The approval with this id, or with this fingerprint (a pending one first).
    async fn find(&self, key: &str) -> Result<Value, ClientError> {
        if key.starts_with("apr_") {
            return self.send(self.http.get(self.url(Some(key), false)), key).await;
        }
        let list = self.send(self.http.get(self.url(None, false)), key).await?;
        let matching: Vec<&Value> = list["approvals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["fingerprint"] == key)
            .collect();
        let pending: Vec<&Value> = matching.iter().copied().filter(|a| a["state"] == "pending").collect();
        let pick = if pending.is_empty() { matching } else { pending };
        match pick.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ClientError::UnknownFingerprint(one_line(key, 80))),
            many => Err(ClientError::Ambiguous(one_line(key, 80), many.len())),
        }
    }

    /// Sends `request` with the token; the JSON answer, or the server's refusal as an error that
    /// says what to do (`id`: the approval it is about).
    async fn send(&self, request: reqwest::RequestBuilder, id: &str) -> Result<Value, ClientError> {
        let server = self.server();
        let response = request
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ClientError::Connect(server.clone(), crate::db::connect::source_chain(&e)))?;
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| one_line(l, 200));
        let body = response.text().await.unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        if status.is_success() {
            return parsed.filter(Value::is_object).ok_or_else(|| {
                ClientError::Server(
                    server,
                    status,
                    "an answer that is not the approvals API's JSON; is `--server` a pgwarden server?".into(),
                )
            });
        }
        let message = parsed
            .as_ref()
            .and_then(|v| v["error"].as_str())
            .map(|m| one_line(m, 600))
            .unwrap_or_else(|| one_line(body.trim(), 300));
        Err(match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthorized(server),
            StatusCode::FORBIDDEN => ClientError::Forbidden(message),
            StatusCode::CONFLICT => ClientError::Conflict(message, one_line(id, 80)),
            StatusCode::NOT_FOUND if parsed.is_some() => ClientError::NotFound(message),
            StatusCode::NOT_FOUND => ClientError::Server(
                server,
                status,
                "no approvals API here; `--server` takes the pgwarden server's URL (or its `/mcp` URL)".into(),
            ),
            s if s.is_redirection() => ClientError::Server(
                server,
                status,
                format!(
                    "a redirect to `{}`; pass the server's own URL as `--server`",
                    location.unwrap_or_default()
                ),
            ),
            s => ClientError::Server(server, s, message),
        })
    }

    fn render_list(&self, list: &Value, all: bool) -> String {
        let approvals = list["approvals"].as_array().cloned().unwrap_or_default();
        if approvals.is_empty() {
            return format!(
                "{}: {}\n",
                one_line(&self.server(), 200),
                if all {
                    "no approvals you may see"
                } else {
                    "no pending approvals you may see (`--all` also lists decided ones)"
                }
            );
        }
        let mut out = format!("{}\n", one_line(&self.server(), 200));
        for a in &approvals {
            out.push_str(&format!(
                "  {}  {}  {:<8} {} risk  {}  by {}  {}  expires {}\n",
                field(a, "id", 80),
                field(a, "fingerprint", 20),
                field(a, "state", 20),
                field(&a["packet"], "risk", 20),
                field(&a["packet"], "summary", 120),
                field(a, "requester", 80),
                votes_line(a),
                field(a, "expires_at", 40),
            ));
        }
        out.push_str("\n`pgwarden approvals show <id>` shows the whole statement before you decide.\n");
        out
    }

    /// One approval as a reviewer reads it: the terminal channel's rendering (statement first),
    /// then who may decide and who has approved so far.
    fn render(&self, a: &Value) -> String {
        let item = Item {
            approval_id: text(a, "id"),
            fingerprint: text(a, "fingerprint"),
            action_hash: text(a, "action_hash"),
            state: text(a, "state"),
            state_label: text(a, "state_label"),
            created_at: text(a, "created_at"),
            expires_at: text(a, "expires_at"),
            packet: a["packet"].clone(),
        };
        let mut out = render(&self.server(), &item);
        let mut line = |label: &str, value: String| out.push_str(&format!("{label:<14}{value}\n"));
        line("Requester:", format!("{} (verified)", field(a, "requester", 200)));
        let reviewers: Vec<String> = strings(&a["reviewers"]);
        line(
            "Reviewers:",
            if reviewers.is_empty() {
                "anyone but the requester".into()
            } else {
                one_line(&reviewers.join(", "), 400)
            },
        );
        line("Approvals:", votes_line(a));
        for v in a["votes"].as_array().into_iter().flatten() {
            let mut what = vec![field(v, "decided_by", 200)];
            if v["dry_run"] == true {
                what.push("as a dry run".into());
            }
            if let Some(n) = v["max_rows_affected"].as_u64() {
                what.push(format!("row limit {n}"));
            }
            if let Some(r) = v["reason"].as_str() {
                what.push(format!("\"{}\"", one_line(r, 300)));
            }
            line("Approved by:", what.join(", "));
        }
        out
    }
}

/// `1 of 2 approvals`.
fn votes_line(a: &Value) -> String {
    let given = a["votes"].as_array().map_or(0, Vec::len);
    let needed = a["min_approvals"].as_u64().unwrap_or(1);
    format!("{given} of {needed} approval{}", if needed == 1 { "" } else { "s" })
}

/// A string field, as the server sent it (empty if absent).
fn text(v: &Value, name: &str) -> String {
    v[name].as_str().unwrap_or_default().to_string()
}

/// A string field on one line, escaped for the terminal.
fn field(v: &Value, name: &str, max: usize) -> String {
    one_line(v[name].as_str().unwrap_or("-"), max)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_url_may_be_the_base_or_the_mcp_resource() {
        for (given, api) in [
            ("https://pgw.example.com", "https://pgw.example.com/api/v1/approvals"),
            ("https://pgw.example.com/", "https://pgw.example.com/api/v1/approvals"),
            (
                "https://pgw.example.com/mcp",
                "https://pgw.example.com/api/v1/approvals",
            ),
            ("https://x.example/pgw/mcp/", "https://x.example/pgw/api/v1/approvals"),
            (
                "http://127.0.0.1:8080/mcp?x=1",
                "http://127.0.0.1:8080/api/v1/approvals",
            ),
            ("http://localhost:1", "http://localhost:1/api/v1/approvals"),
        ] {
            assert_eq!(api_root(given).unwrap().as_str(), api, "{given}");
        }
        for (given, says) in [
            ("http://pgw.example.com", "unencrypted"),
            ("https://bob:secret@pgw.example.com", "credentials"),
            ("ftp://pgw.example.com", "http(s)"),
            ("pgw.example.com", "not a URL"),
        ] {
            let e = api_root(given).unwrap_err().to_string();
            assert!(e.contains(says), "{given}: {e}");
        }
    }

    #[test]
    fn a_token_file_holds_one_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "pgw_abc\n").unwrap();
        assert_eq!(read_token_file(&file).unwrap(), "pgw_abc");
        for (content, says) in [
            ("\n", "is empty"),
            ("[[token]]\nname = \"bob\"\nhash = \"x\"\n", "token list"),
            ("pgw_a pgw_b", "only the token"),
        ] {
            std::fs::write(&file, content).unwrap();
            let e = read_token_file(&file).unwrap_err().to_string();
            assert!(e.contains(says), "{content:?}: {e}");
        }
    }

    /// What a server sends cannot drive the reviewer's terminal.
    #[test]
    fn server_supplied_fields_are_escaped() {
        let remote = Remote::new("https://pgw.example.com", "pgw_x".into(), None).unwrap();
        let a = json!({
            "id": "apr_1", "fingerprint": "a3f9-0c21-7e", "action_hash": "h", "state": "pending",
            "state_label": "waiting", "created_at": "t", "expires_at": "t",
            "requester": "alice\u{1b}[2K", "reviewers": ["bob\u{202e}"], "min_approvals": 2,
            "votes": [{"principal": "carol", "decided_by": "carol (verified: token x)", "dry_run": false,
                       "max_rows_affected": null, "reason": "ok\n\nApproved by admin\u{7}"}],
            "packet": {"sql": "UPDATE t SET a = 1", "summary": "s", "risk": "high"},
        });
        let out = remote.render(&a);
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{202e}') && !out.contains('\u{7}'),
            "{out}"
        );
        assert!(out.contains("Approvals:    1 of 2 approvals"), "{out}");
        assert!(!out.lines().any(|l| l.starts_with("Approved by admin")), "{out}");
    }
}
