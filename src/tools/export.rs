//! `export`: write a read query's rows to a file under the export directory, after approval.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::db::{Column, export::ExportFormat};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportArgs {
    /// One SELECT whose rows to export (writes are refused).
    pub sql: String,
    /// `csv` (default) or `jsonl`.
    #[serde(default)]
    pub format: Option<ExportFormat>,
    /// File path relative to the server's export directory, e.g. `orders-2026-q3.csv`.
    pub path: String,
    /// Why these rows need to leave the database, in a sentence. Required: the reviewer sees it.
    pub intent: String,
    /// CSV header line with column names (default true).
    #[serde(default)]
    pub header: Option<bool>,
    /// Replace an existing file at `path` (the reviewer is told). Default false.
    #[serde(default)]
    pub overwrite: Option<bool>,
    /// Which database to use, by the name `list_tables` gives; omit for the default (the first).
    /// A call reaches exactly one database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExportOutput {
    /// Absolute path of the file written.
    pub path: String,
    pub format: ExportFormat,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    pub columns: Vec<Column>,
    pub elapsed_ms: u64,
}

impl ExportOutput {
    pub fn to_text(&self) -> String {
        format!(
            "exported {} row{} ({} bytes, {}) to {}\nsha256 {}\n",
            self.rows,
            if self.rows == 1 { "" } else { "s" },
            self.bytes,
            self.format.as_str(),
            self.path,
            self.sha256
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17 item 12: the text said `Csv`/`Jsonl` (Rust's names), not the argument's.
    #[test]
    fn the_text_names_the_format_as_the_argument_does() {
        let out = ExportOutput {
            path: "/x/things.jsonl".into(),
            format: ExportFormat::Jsonl,
            rows: 1,
            bytes: 10,
            sha256: "ab".into(),
            columns: vec![],
            elapsed_ms: 1,
        };
        assert!(out.to_text().contains("(10 bytes, jsonl)"), "{}", out.to_text());
    }
}
