//! `query`: run one read-only SQL statement and return typed rows.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::db::{Column, budget::TruncatedBy};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryArgs {
    /// One PostgreSQL statement. Reads (SELECT, CTEs, joins, aggregates) run directly; writes and DDL
    /// run only if the operator's policy allows them, usually after a person approves them in a
    /// prompt. One statement per call.
    pub sql: String,
    /// Most rows to return (default set by the server, usually 500). More rows than this sets
    /// `truncated: true`; the server also enforces a hard maximum.
    #[serde(default)]
    pub max_rows: Option<i64>,
    /// Why you are running this query, in a sentence. Recorded with the call.
    #[serde(default)]
    pub intent: Option<String>,
    /// Which database to use, by the name `list_tables` gives; omit for the default (the first).
    /// A call reaches exactly one database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct QueryOutput {
    /// Result columns in order, with their Postgres types.
    pub columns: Vec<Column>,
    #[schemars(schema_with = "super::rows_schema")]
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Number of rows in `rows`.
    pub row_count: usize,
    /// True when the query had more rows than `max_rows`, or more bytes than the server's result
    /// cap; refine it (WHERE, LIMIT, aggregates, fewer or narrower columns).
    pub truncated: bool,
    /// Which cap cut the result short: `rows` (`max_rows`) or `bytes` (the result byte cap; see
    /// `notice`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated_by: Option<TruncatedBy>,
    /// The row cap that applied to this call.
    pub max_rows: u32,
    /// Wall time inside pgwarden, in milliseconds.
    pub elapsed_ms: u64,
    /// Set when the server adjusted the request, e.g. capped `max_rows`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// For a change (INSERT, UPDATE, DELETE, MERGE, DDL): what happened. `rows` then holds the first
    /// `RETURNING` rows, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Change {
    /// Rows inserted, updated, deleted or merged (0 for DDL). Null when withheld: a dry run under
    /// masks, as a login that can read masked columns, would tell how many rows match a guess.
    pub rows_affected: Option<u64>,
    /// The count as it was, for the audit trail only.
    #[serde(skip)]
    #[schemars(skip)]
    pub audited_rows_affected: u64,
    /// False for a dry run: it ran, and was rolled back.
    pub committed: bool,
    pub dry_run: bool,
    /// The most rows the reviewer allowed the change to touch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_limit: Option<u64>,
    /// The policy rule under which a person approved it; absent when the policy allowed it outright.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_under: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewer_reason: Option<String>,
}

impl QueryOutput {
    /// Compact, unambiguous text: a header, then one JSON array per row.
    pub fn to_text(&self) -> String {
        if let Some(c) = &self.change {
            let mut out = format!(
                "{} affected; {}{}\n",
                match c.rows_affected {
                    Some(1) => "1 row".to_string(),
                    Some(n) => format!("{n} rows"),
                    None => "row count withheld (masked columns)".to_string(),
                },
                if c.committed {
                    "committed"
                } else {
                    "rolled back (dry run)"
                },
                c.approved_under
                    .as_ref()
                    .map(|r| format!("; approved under {r}"))
                    .unwrap_or_default()
            );
            if let Some(r) = &c.reviewer_reason {
                out.push_str(&format!("reviewer's reason: {r}\n"));
            }
            if !self.rows.is_empty() {
                let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
                out.push_str(&format!("returning ({}):\n", names.join(", ")));
                for row in &self.rows {
                    out.push_str(&serde_json::Value::Array(row.clone()).to_string());
                    out.push('\n');
                }
            }
            if let Some(n) = &self.notice {
                out.push_str(&format!("note: {n}\n"));
            }
            return out;
        }
        let mut out = format!(
            "{} row{}{} in {} ms\ncolumns: {}\n",
            self.row_count,
            if self.row_count == 1 { "" } else { "s" },
            match self.truncated_by {
                Some(TruncatedBy::Bytes) => " (truncated at the result byte cap; more rows exist)".to_string(),
                _ if self.truncated => format!(" (truncated at max_rows={}; more rows exist)", self.max_rows),
                _ => String::new(),
            },
            self.elapsed_ms,
            self.columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.type_name))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        for row in &self.rows {
            out.push_str(&serde_json::Value::Array(row.clone()).to_string());
            out.push('\n');
        }
        if let Some(n) = &self.notice {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}
