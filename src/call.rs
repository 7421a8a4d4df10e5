//! What a tool call is, before anything decides about it: the `Tool`, who is calling (`Caller`,
//! `Principal`), the `Action` the pipeline carries, and the `Surface`s a person can decide it on.
//! A leaf: it uses nothing else in the crate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A tool that reaches the database. The card's app-only tools (`pgwarden_review_*`) are not
/// calls of their own: they act on a stored `Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    Query,
    Export,
    Grant,
    ListTables,
    DescribeTable,
}

impl Tool {
    /// Every tool, in the order policy errors and `pgwarden check --tool` list them.
    pub const ALL: [Tool; 5] = [
        Tool::Query,
        Tool::Export,
        Tool::Grant,
        Tool::ListTables,
        Tool::DescribeTable,
    ];

    /// The name MCP clients call it by, policy files write and audit records keep.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Query => "query",
            Tool::Export => "export",
            Tool::Grant => "grant",
            Tool::ListTables => "list_tables",
            Tool::DescribeTable => "describe_table",
        }
    }

    pub fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Goes through policy and approval, can wait for a person, and links the review card.
    /// The catalog tools only read what the agent's login may already see.
    pub fn guarded(self) -> bool {
        match self {
            Tool::Query | Tool::Export | Tool::Grant => true,
            Tool::ListTables | Tool::DescribeTable => false,
        }
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a person sees and decides an approval. One set of ids for policy files (`channels`),
/// audit records and what the model is told; adding a surface adds a variant here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Surface {
    /// The client's own prompt (`elicitation/create`, or a 2026-07-28 input request).
    Elicitation,
    /// The review card inside the chat, for hosts that render MCP Apps.
    McpApp,
    /// The local review console in the browser.
    Console,
    /// `pgwarden approvals` in a terminal of the same OS user, over the server's private Unix socket.
    Cli,
    /// The team review app at `/review`: a reviewer signed in with the organisation's OpenID provider.
    Web,
    /// `/api/v1/approvals` (and `pgwarden approvals --server`) with a reviewer's bearer token.
    Api,
    /// The Slack app's buttons, each request signed by Slack.
    Slack,
}

impl Surface {
    pub const ALL: [Surface; 7] = [
        Surface::Elicitation,
        Surface::McpApp,
        Surface::Console,
        Surface::Cli,
        Surface::Web,
        Surface::Api,
        Surface::Slack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Elicitation => "elicitation",
            Surface::McpApp => "mcp_app",
            Surface::Console => "console",
            Surface::Cli => "cli",
            Surface::Web => "web",
            Surface::Api => "api",
            Surface::Slack => "slack",
        }
    }

    /// How strongly the surface vouches that a person decided.
    pub fn level(self) -> Level {
        match self {
            Surface::Elicitation | Surface::McpApp => Level::Client,
            Surface::Console | Surface::Cli => Level::Local,
            Surface::Web | Surface::Api | Surface::Slack => Level::Team,
        }
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How strong a surface must be (`[approval.min_channel]`, a rule's `min_channel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The MCP client shows the prompt (elicitation) or card (MCP Apps): trust rests on the host.
    Client,
    /// The review console pgwarden opens in the person's browser, or `pgwarden approvals` in a
    /// terminal of the same OS user: trust rests on the OS session.
    Local,
    /// A reviewer with a verified identity (the review app, the API, Slack), never the requester:
    /// trust rests on the organisation's identity provider. A rule naming `reviewers` needs it.
    Team,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Client => "client",
            Level::Local => "local",
            Level::Team => "team",
        }
    }
}

/// Who is calling: the operator's `--principal` on stdio, the verified token's subject (or the
/// configured claim) over HTTP; policy rules can match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Principal(String);

impl Principal {
    pub fn new(name: impl Into<String>) -> Self {
        Principal(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is calling, as the transport verified it: the principal policy rules match, the groups
/// `groups` rules match, a name for people to read, and how it was established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub principal: Principal,
    /// A name for people (the token's `email` or `preferred_username`), when it carried one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub display: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub groups: Vec<String>,
    pub via: Authn,
    /// Other verified names of the same person (an OAuth token's `sub` and `email` besides the
    /// claim that names the principal): never their own reviewer under any of them.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub aliases: Vec<String>,
}

impl Identity {
    /// The operator's `--principal` on stdio.
    pub fn operator(principal: Principal) -> Identity {
        Identity {
            principal,
            display: None,
            groups: Vec::new(),
            via: Authn::Operator,
            aliases: Vec::new(),
        }
    }

    /// "alice (alice@example.com; groups dba, analysts; OAuth token from https://idp/)", for
    /// reviewers: the principal policy decided by first, then the name for people (which the
    /// person may choose themselves, so it never comes first and is cut short).
    pub fn describe(&self) -> String {
        let name = self.display.as_deref().filter(|d| *d != self.principal.as_str());
        let mut facts: Vec<String> = name
            .map(|d| d.chars().take(80).collect::<String>())
            .into_iter()
            .collect();
        if !self.groups.is_empty() {
            facts.push(format!("groups {}", self.groups.join(", ")));
        }
        facts.push(match &self.via {
            Authn::Operator => "named by the operator, not verified".to_string(),
            Authn::Token { token_id } => format!("static token {token_id}"),
            Authn::Oauth { issuer, .. } => format!("OAuth token from {issuer}"),
        });
        format!("{} ({})", self.principal, facts.join("; "))
    }
}

/// How a caller's identity was established. Never the credential itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Authn {
    /// `--principal` on stdio: vouched for by whoever started the process.
    Operator,
    /// A static bearer token from the token file, named by its id (a prefix of its hash).
    Token { token_id: String },
    /// A JWT access token verified against the issuer's keys.
    Oauth {
        issuer: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        client_id: Option<String>,
        /// The token's `jti`.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        token_id: Option<String>,
    },
}

/// Who is calling, as far as the transport tells us.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The client as it names itself: not verified.
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    /// The verified identity; none on stdio without `--principal`.
    pub identity: Option<Identity>,
    /// Minted per server instance on stdio; per MCP session (or per principal, for stateless
    /// requests) over HTTP.
    pub session_id: String,
}

impl Caller {
    pub fn principal(&self) -> Option<&Principal> {
        self.identity.as_ref().map(|i| &i.principal)
    }

    pub fn groups(&self) -> &[String] {
        self.identity.as_ref().map_or(&[], |i| &i.groups)
    }

    /// The principal, when a token proved it (not the operator's word on stdio).
    pub fn verified_principal(&self) -> Option<&str> {
        self.identity
            .as_ref()
            .filter(|i| i.via != Authn::Operator)
            .map(|i| i.principal.as_str())
    }

    /// Who an approval belongs to, and may await it: the verified principal (from any session on
    /// any replica), else the session.
    pub fn owner(&self) -> String {
        match self.verified_principal() {
            Some(p) => format!("principal:{p}"),
            None => self.session_id.clone(),
        }
    }
}

/// One tool call, as the rest of the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub tool: Tool,
    pub sql: Option<String>,
    pub intent: Option<String>,
    pub caller: Caller,
    /// The database it runs on, by its `pgwarden.toml` name; none when pgwarden serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// What that name opens (`user@host:port/db`, no password), bound into the approval's hash:
    /// an approval made for one database never runs on another the name was pointed at since.
    #[serde(skip)]
    pub database_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_name_reads_back_as_the_same_tool() {
        for t in Tool::ALL {
            assert_eq!(Tool::from_name(t.name()), Some(t));
            assert_eq!(t.to_string(), t.name());
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(t.name()));
        }
        assert_eq!(Tool::from_name("Query"), None);
        assert_eq!(Tool::from_name("pgwarden_review_decide"), None);
    }

    #[test]
    fn a_principal_serializes_as_its_plain_name() {
        assert_eq!(serde_json::to_string(&Principal::new("alice")).unwrap(), r#""alice""#);
    }
}
