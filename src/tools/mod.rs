//! One file per tool: its arguments (whose doc comments become the input schema), its structured
//! output, and the compact text a model reads. Handlers only turn arguments into an `Action`.

pub mod approval;
pub mod describe_table;
pub mod export;
pub mod grant;
pub mod list_tables;
pub mod query;

pub(crate) fn rows_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "description": "One array per row, values in column order. bigint beyond 2^53 and numeric are strings; \
                        timestamps are ISO 8601 (timestamptz in UTC, suffixed Z); json/jsonb are JSON; bytea is \\x-prefixed hex.",
        "items": { "type": "array", "items": { "type": ["string", "number", "integer", "boolean", "null", "array", "object"] } }
    })
}
