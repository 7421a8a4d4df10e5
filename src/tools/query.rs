//! `query`: run one read-only SQL statement and return typed rows.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::db::Column;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryArgs {
    /// One PostgreSQL SELECT statement (CTEs, joins, subqueries and aggregates are fine). Writes,
    /// DDL, SET and multiple statements are refused.
    pub sql: String,
    /// Most rows to return (default set by the server, usually 500). More rows than this sets
    /// `truncated: true`; the server also enforces a hard maximum.
    #[serde(default)]
    pub max_rows: Option<i64>,
    /// Why you are running this query, in a sentence. Recorded with the call.
    #[serde(default)]
    pub intent: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct QueryOutput {
    /// Result columns in order, with their Postgres types.
    pub columns: Vec<Column>,
    #[schemars(schema_with = "super::rows_schema")]
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Number of rows in `rows`.
    pub row_count: usize,
    /// True when the query had more rows than `max_rows`; refine it (WHERE, LIMIT, aggregates).
    pub truncated: bool,
    /// The row cap that applied to this call.
    pub max_rows: u32,
    /// Wall time inside pgwarden, in milliseconds.
    pub elapsed_ms: u64,
    /// Set when the server adjusted the request, e.g. capped `max_rows`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

impl QueryOutput {
    /// Compact, unambiguous text: a header, then one JSON array per row.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{} row{}{} in {} ms\ncolumns: {}\n",
            self.row_count,
            if self.row_count == 1 { "" } else { "s" },
            if self.truncated {
                format!(" (truncated at max_rows={}; more rows exist)", self.max_rows)
            } else {
                String::new()
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
