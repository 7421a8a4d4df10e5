//! `describe_table`: columns, keys, indexes and comments of one table or view.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::db::catalog::TableDescription;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeTableArgs {
    /// The table or view, as in SQL: `orders`, `analytics.monthly_revenue`, or `"MixedCase"`.
    /// Unqualified names resolve through the search_path (usually `public`).
    pub table: String,
    /// Why you are looking, in a sentence. Recorded with the call.
    #[serde(default)]
    pub intent: Option<String>,
    /// Which database to use, by the name `list_tables` gives; omit for the default (the first).
    /// A call reaches exactly one database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

pub fn to_text(d: &TableDescription) -> String {
    let mut out = format!("{}.{} ({})", d.schema, d.name, d.kind);
    if let Some(n) = d.row_estimate {
        out.push_str(&format!(", ~{n} rows"));
    }
    if let Some(c) = &d.comment {
        out.push_str(&format!(" — {c}"));
    }
    if !d.tags.is_empty() {
        out.push_str(&format!(" [tags: {}]", d.tags.join(", ")));
    }
    out.push_str("\ncolumns:\n");
    for c in &d.columns {
        out.push_str(&format!(
            "  {} {}{}",
            c.name,
            c.type_name,
            if c.nullable { "" } else { " NOT NULL" }
        ));
        if let Some(g) = &c.generated {
            out.push_str(&format!(" GENERATED {g}"));
        }
        if let Some(def) = &c.default {
            out.push_str(&format!(" DEFAULT {def}"));
        }
        if let Some(com) = &c.comment {
            out.push_str(&format!(" — {com}"));
        }
        if let Some(m) = c.mask {
            out.push_str(&format!(" [masked: {}]", m.as_str()));
        }
        out.push('\n');
    }
    if !d.primary_key.is_empty() {
        out.push_str(&format!("primary key: ({})\n", d.primary_key.join(", ")));
    }
    for fk in &d.foreign_keys {
        out.push_str(&format!("foreign key {}: {}\n", fk.name, fk.definition));
    }
    for c in &d.constraints {
        out.push_str(&format!("{} constraint {}: {}\n", c.kind, c.name, c.definition));
    }
    for i in &d.indexes {
        out.push_str(&format!("index {}\n", i.definition));
    }
    if let Some(v) = &d.view_definition {
        out.push_str(&format!("definition:\n{v}\n"));
    }
    out
}
