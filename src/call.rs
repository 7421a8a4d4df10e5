//! What a tool call is, before anything decides about it: the `Tool`, who is calling (`Caller`,
//! `Principal`), the `Action` the pipeline carries, and the `Surface`s a person can decide it on.
//! A leaf: it uses nothing else in the crate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A tool that reaches the database. The card's app-only tools (`pgwarden_review_*`) are not
/// calls of their own: they act on a stored `Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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
}

impl Surface {
    pub const ALL: [Surface; 4] = [Surface::Elicitation, Surface::McpApp, Surface::Console, Surface::Cli];

    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Elicitation => "elicitation",
            Surface::McpApp => "mcp_app",
            Surface::Console => "console",
            Surface::Cli => "cli",
        }
    }

    /// How strongly the surface vouches that a person decided.
    pub fn level(self) -> Level {
        match self {
            Surface::Elicitation | Surface::McpApp => Level::Client,
            Surface::Console | Surface::Cli => Level::Local,
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
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Client => "client",
            Level::Local => "local",
        }
    }
}

/// Who the operator says is using this server (`--principal`); policy rules can match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// Who is calling, as far as the transport tells us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub principal: Option<Principal>,
    /// Minted per server instance on stdio.
    pub session_id: String,
}

/// One tool call, as the rest of the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub tool: Tool,
    pub sql: Option<String>,
    pub intent: Option<String>,
    pub caller: Caller,
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
