//! `list_tables`: schemas, tables and views with row estimates and comments.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::db::catalog::TableList;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTablesArgs {
    /// Only this schema (exact name). Omit to list every non-system schema.
    #[serde(default)]
    pub schema: Option<String>,
    /// Why you are looking, in a sentence. Recorded with the call.
    #[serde(default)]
    pub intent: Option<String>,
    /// Which database to use, by the name `list_tables` gives; omit for the default (the first).
    /// A call reaches exactly one database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

pub fn to_text(list: &TableList) -> String {
    let mut out = String::new();
    if let Some(db) = &list.database {
        out.push_str(&format!("database {db}\n"));
    }
    for schema in &list.schemas {
        out.push_str(&format!("schema {}", schema.name));
        if let Some(c) = &schema.comment {
            out.push_str(&format!(" — {c}"));
        }
        out.push('\n');
        for t in list.tables.iter().filter(|t| t.schema == schema.name) {
            out.push_str(&format!("  {}.{} ({}", t.schema, t.name, t.kind));
            if let Some(n) = t.row_estimate {
                out.push_str(&format!(", ~{n} rows"));
            }
            if !t.readable {
                out.push_str(", no SELECT privilege");
            }
            out.push(')');
            if let Some(c) = &t.comment {
                out.push_str(&format!(" — {c}"));
            }
            out.push('\n');
        }
    }
    if list.tables.is_empty() {
        out.push_str("no tables or views\n");
    }
    if list.truncated {
        out.push_str("(list truncated; pass `schema` to see one schema)\n");
    }
    if !list.databases.is_empty() {
        let names: Vec<String> = list
            .databases
            .iter()
            .map(|d| match (d.default, d.available) {
                (true, true) => format!("{} (default)", d.name),
                (true, false) => format!("{} (default, unavailable)", d.name),
                (false, true) => d.name.clone(),
                (false, false) => format!("{} (unavailable)", d.name),
            })
            .collect();
        out.push_str(&format!(
            "databases: {} — pass `database` to any tool to use another\n",
            names.join(", ")
        ));
    }
    if let Some(n) = &list.notice {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}
