//! One file per tool: its arguments (whose doc comments become the input schema), its structured
//! output, and the compact text a model reads. A call is a [`ToolCall`]: the tool and its
//! arguments as given, serialisable so an approval can store it and run it later; what it returns
//! is a [`ToolOutput`].

pub mod approval;
pub mod describe_table;
pub mod export;
pub mod grant;
pub mod list_tables;
pub mod portable;
pub mod query;

use serde::{Deserialize, Serialize};

use crate::{
    call::Tool,
    db::catalog::{TableDescription, TableList},
};

/// One call of a tool that reaches the database, with its arguments exactly as the client sent
/// them. A pending approval stores this and `pgwarden_await` runs it again through the same entry
/// point (`Pipeline::run`), so what runs is what was stored — never anything the model sends later.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "tool", content = "arguments", rename_all = "snake_case")]
pub enum ToolCall {
    Query(query::QueryArgs),
    Export(export::ExportArgs),
    Grant(grant::GrantArgs),
    ListTables(list_tables::ListTablesArgs),
    DescribeTable(describe_table::DescribeTableArgs),
}

impl ToolCall {
    pub fn tool(&self) -> Tool {
        match self {
            ToolCall::Query(_) => Tool::Query,
            ToolCall::Export(_) => Tool::Export,
            ToolCall::Grant(_) => Tool::Grant,
            ToolCall::ListTables(_) => Tool::ListTables,
            ToolCall::DescribeTable(_) => Tool::DescribeTable,
        }
    }

    /// The SQL the call runs, when the caller wrote it (`grant` builds its own).
    pub fn sql(&self) -> Option<&str> {
        match self {
            ToolCall::Query(a) => Some(&a.sql),
            ToolCall::Export(a) => Some(&a.sql),
            ToolCall::Grant(_) | ToolCall::ListTables(_) | ToolCall::DescribeTable(_) => None,
        }
    }

    /// The database the call names; none means the default.
    pub fn database(&self) -> Option<&str> {
        match self {
            ToolCall::Query(a) => a.database.as_deref(),
            ToolCall::Export(a) => a.database.as_deref(),
            ToolCall::Grant(a) => a.database.as_deref(),
            ToolCall::ListTables(a) => a.database.as_deref(),
            ToolCall::DescribeTable(a) => a.database.as_deref(),
        }
    }

    /// The same call, naming `database` (what the router resolved it to), so a stored call replays
    /// on the database it was approved for even if the default changes.
    pub fn on_database(mut self, database: Option<String>) -> ToolCall {
        let slot = match &mut self {
            ToolCall::Query(a) => &mut a.database,
            ToolCall::Export(a) => &mut a.database,
            ToolCall::Grant(a) => &mut a.database,
            ToolCall::ListTables(a) => &mut a.database,
            ToolCall::DescribeTable(a) => &mut a.database,
        };
        *slot = database;
        self
    }

    /// What the model said it intends.
    pub fn intent(&self) -> Option<&str> {
        match self {
            ToolCall::Query(a) => a.intent.as_deref(),
            ToolCall::Export(a) => Some(&a.intent),
            ToolCall::Grant(a) => Some(&a.intent),
            ToolCall::ListTables(a) => a.intent.as_deref(),
            ToolCall::DescribeTable(a) => a.intent.as_deref(),
        }
    }
}

/// What a call returned, one variant per tool: structured content and the text a model reads.
#[derive(Debug)]
pub enum ToolOutput {
    Query(query::QueryOutput),
    Export(export::ExportOutput),
    Grant(grant::GrantOutput),
    ListTables(TableList),
    DescribeTable(TableDescription),
}

impl ToolOutput {
    /// The structured content, the result's rows moved into it rather than copied.
    pub fn into_value(self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            ToolOutput::Query(mut o) => {
                let rows = std::mem::take(&mut o.rows);
                let mut value = serde_json::to_value(&o)?;
                value["rows"] = serde_json::Value::Array(rows.into_iter().map(serde_json::Value::Array).collect());
                Ok(value)
            }
            ToolOutput::Export(o) => serde_json::to_value(o),
            ToolOutput::Grant(o) => serde_json::to_value(o),
            ToolOutput::ListTables(o) => serde_json::to_value(o),
            ToolOutput::DescribeTable(o) => serde_json::to_value(o),
        }
    }

    /// The compact text rendering.
    pub fn to_text(&self) -> String {
        match self {
            ToolOutput::Query(o) => o.to_text(),
            ToolOutput::Export(o) => o.to_text(),
            ToolOutput::Grant(o) => o.to_text(),
            ToolOutput::ListTables(o) => list_tables::to_text(o),
            ToolOutput::DescribeTable(o) => describe_table::to_text(o),
        }
    }
}

/// `rows`: an array, and nothing per row. The shape of a row and the type of each cell are in
/// `columns`; a per-cell union of every JSON type said nothing more, and SDKs validate the schema
/// against every result: even `items: {"type": "array"}` made a 1,000-row read through the Python
/// SDK 1.6× slower with validation than without (`benches/sdk_validation.py`).
pub(crate) fn rows_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "description": "One array per row, values in column order, typed as `columns` says. bigint beyond 2^53 and \
                        numeric are strings; timestamps are ISO 8601 (timestamptz in UTC, suffixed Z); json/jsonb are \
                        JSON; bytea is \\x-prefixed hex; NULL is null."
    })
}

/// A value that is always a JSON object but has no fixed shape (a review packet, a stored call's
/// arguments or result): said so, rather than the bare `true` schemars writes for `Value`.
pub(crate) fn object_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object" })
}
