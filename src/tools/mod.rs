//! One file per tool: its arguments (whose doc comments become the input schema), its structured
//! output, and the compact text a model reads. Handlers only turn arguments into an `Action`.

pub mod approval;
pub mod describe_table;
pub mod export;
pub mod grant;
pub mod list_tables;
pub mod portable;
pub mod query;

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
