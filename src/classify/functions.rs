//! Function names that are safe to call inside an unattended read: pure computation over their
//! arguments, or catalog lookups that disclose nothing beyond what the catalogs already show.
//! Anything not listed — user-defined, extension, or a known-dangerous built-in — is not a plain read.

use super::Category;

/// Canonical (lower-case, `pg_catalog.` stripped) names.
pub const READ_SAFE: &[&str] = &[
    // aggregates
    "count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "string_agg", "array_agg",
    "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "bit_and", "bit_or", "bit_xor",
    "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "corr", "covar_pop",
    "covar_samp", "regr_slope", "regr_intercept", "regr_count", "regr_r2", "regr_avgx", "regr_avgy",
    "percentile_cont", "percentile_disc", "mode", "any_value", "range_agg", "range_intersect_agg",
    // window functions
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
    "first_value", "last_value", "nth_value",
    // conditional and comparison
    "coalesce", "nullif", "greatest", "least", "num_nulls", "num_nonnulls",
    // math
    "abs", "cbrt", "ceil", "ceiling", "degrees", "div", "exp", "factorial", "floor", "gcd", "lcm", "ln",
    "log", "log10", "mod", "pi", "power", "pow", "radians", "round", "scale", "sign", "sqrt", "trunc",
    "width_bucket", "min_scale", "trim_scale", "acos", "asin", "atan", "atan2", "cos", "cot", "sin", "tan",
    "acosd", "asind", "atand", "atan2d", "cosd", "cotd", "sind", "tand", "sinh", "cosh", "tanh",
    "asinh", "acosh", "atanh", "random",
    // strings
    "ascii", "bit_length", "btrim", "char_length", "character_length", "chr", "concat", "concat_ws",
    "format", "initcap", "left", "length", "lower", "lpad", "ltrim", "md5", "normalize", "octet_length",
    "overlay", "position", "quote_ident", "quote_literal", "quote_nullable", "regexp_count", "regexp_instr",
    "regexp_like", "regexp_match", "regexp_matches", "regexp_replace", "regexp_split_to_array",
    "regexp_split_to_table", "regexp_substr", "repeat", "replace", "reverse", "right", "rpad", "rtrim",
    "split_part", "starts_with", "string_to_array", "string_to_table", "strpos", "substr", "substring",
    "to_hex", "translate", "trim", "upper", "unistr", "encode", "decode", "sha224", "sha256", "sha384",
    "sha512", "convert_from", "convert_to", "to_ascii", "get_bit", "get_byte", "set_bit", "set_byte",
    // formatting and conversion
    "to_char", "to_date", "to_number", "to_timestamp", "cast", "text",
    // date and time
    "age", "clock_timestamp", "current_date", "current_time", "current_timestamp", "date_bin", "date_part",
    "date_trunc", "extract", "isfinite", "justify_days", "justify_hours", "justify_interval",
    "localtime", "localtimestamp", "make_date", "make_interval", "make_time", "make_timestamp",
    "make_timestamptz", "now", "statement_timestamp", "timeofday", "transaction_timestamp", "timezone",
    // json and jsonb
    "to_json", "to_jsonb", "array_to_json", "row_to_json", "json_build_array", "jsonb_build_array",
    "json_build_object", "jsonb_build_object", "json_object", "jsonb_object", "json_array_length",
    "jsonb_array_length", "json_each", "jsonb_each", "json_each_text", "jsonb_each_text",
    "json_extract_path", "jsonb_extract_path", "json_extract_path_text", "jsonb_extract_path_text",
    "json_object_keys", "jsonb_object_keys", "json_array_elements", "jsonb_array_elements",
    "json_array_elements_text", "jsonb_array_elements_text", "json_typeof", "jsonb_typeof",
    "json_strip_nulls", "jsonb_strip_nulls", "jsonb_set", "jsonb_set_lax", "jsonb_insert", "jsonb_pretty",
    "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query", "jsonb_path_query_array",
    "jsonb_path_query_first", "json_populate_record", "jsonb_populate_record", "json_to_record",
    "jsonb_to_record", "json_to_recordset", "jsonb_to_recordset",
    // arrays
    "array_append", "array_cat", "array_dims", "array_fill", "array_length", "array_lower", "array_ndims",
    "array_position", "array_positions", "array_prepend", "array_remove", "array_replace", "array_to_string",
    "array_upper", "cardinality", "trim_array", "unnest", "array",
    // ranges
    "lower_inc", "upper_inc", "lower_inf", "upper_inf", "isempty", "range_merge", "int4range", "int8range",
    "numrange", "tsrange", "tstzrange", "daterange", "multirange",
    // series and misc pure
    "generate_series", "generate_subscripts", "gen_random_uuid", "pg_typeof", "format_type", "currval",
    "lastval", "xmlparse", "xmlelement", "xmlforest", "xmlconcat", "xmlagg", "xpath", "xpath_exists",
    "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery", "ts_rank",
    "ts_rank_cd", "ts_headline", "setweight", "strip", "numnode", "querytree",
    // catalog information (disclose only what the catalogs show anyway)
    "current_database", "current_schema", "current_schemas", "current_user", "session_user", "user",
    "version", "obj_description", "col_description", "shobj_description", "pg_get_viewdef",
    "pg_get_indexdef", "pg_get_constraintdef", "pg_get_functiondef", "pg_get_function_arguments",
    "pg_get_function_result", "pg_get_triggerdef", "pg_get_expr", "pg_get_serial_sequence",
    "pg_get_userbyid", "pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible",
    "pg_relation_size", "pg_table_size", "pg_indexes_size", "pg_total_relation_size",
    "pg_database_size", "pg_size_pretty", "pg_size_bytes", "pg_column_size", "to_regclass", "to_regtype",
    "to_regproc", "to_regnamespace", "to_regrole", "has_table_privilege", "has_column_privilege",
    "has_schema_privilege", "has_database_privilege", "has_function_privilege", "has_sequence_privilege",
    "pg_has_role", "pg_encoding_to_char", "pg_postmaster_start_time", "pg_is_in_recovery", "pg_backend_pid",
];

/// Canonical form used for matching: unquoted parts folded to lower case, quoted parts verbatim,
/// a leading `pg_catalog` schema dropped. `U&"…"` names stay undecoded, so they never match.
pub fn canonical(parts: &[(String, bool)]) -> String {
    let folded: Vec<String> = parts.iter().map(|(v, quoted)| if *quoted { v.clone() } else { v.to_lowercase() }).collect();
    match folded.as_slice() {
        [schema, name] if schema == "pg_catalog" => name.clone(),
        _ => folded.join("."),
    }
}

pub fn is_read_safe(canonical_name: &str) -> bool {
    READ_SAFE.contains(&canonical_name)
}

/// What a function call does, when it is not a plain read: its category and the family it belongs to.
pub fn dangerous(name: &str) -> Option<(Category, &'static str)> {
    let starts = |p: &str| name.starts_with(p);
    Some(match name {
        "pg_read_file" | "pg_read_binary_file" | "pg_stat_file" | "lo_import" | "lo_export" | "lo_get" => {
            (Category::Export, "server file and large-object access")
        }
        _ if starts("pg_ls_") => (Category::Export, "server file access"),
        "lo_create" | "lo_creat" | "lo_from_bytea" | "lo_put" | "lowrite" | "lo_unlink" | "lo_truncate" | "lo_open"
        | "loread" | "lo_close" | "lo_lseek" | "lo_tell" => (Category::Write, "large-object access"),
        _ if starts("dblink") || starts("postgres_fdw") => (Category::Unknown, "runs SQL in another session (dblink/FDW)"),
        "pg_terminate_backend" | "pg_cancel_backend" | "pg_reload_conf" | "pg_rotate_logfile" | "pg_switch_wal"
        | "pg_create_restore_point" | "pg_promote" | "pg_checkpoint" | "pg_log_backend_memory_contexts" => {
            (Category::Admin, "server signalling and control")
        }
        _ if name.contains("replication_slot") || starts("pg_logical_") || starts("pg_replication_origin") => {
            (Category::Admin, "replication control")
        }
        _ if starts("pg_stat_reset") => (Category::Admin, "statistics reset"),
        "set_config" => (Category::Admin, "changes a server setting"),
        _ if starts("pg_advisory") || starts("pg_try_advisory") => (Category::Admin, "advisory locks (survive ROLLBACK)"),
        "nextval" | "setval" => (Category::Write, "sequence changes (not rolled back)"),
        "pg_sleep" | "pg_sleep_for" | "pg_sleep_until" => (Category::Admin, "holds a connection (pg_sleep)"),
        "txid_current" | "pg_current_xact_id" => (Category::Write, "assigns a transaction id"),
        "pg_notify" => (Category::Write, "sends a notification (NOTIFY)"),
        _ if starts("query_to_xml") || starts("cursor_to_xml") || name == "ts_stat" || name == "ts_rewrite" => {
            (Category::Unknown, "runs SQL given as a string")
        }
        _ if starts("database_to_xml") || starts("schema_to_xml") || starts("table_to_xml") => {
            (Category::Export, "bulk export of whole tables")
        }
        "current_setting" => (Category::Export, "reads a server setting"),
        _ => return None,
    })
}

/// Settings whose value is no secret; `SHOW` and `current_setting` of anything else count as export.
pub const PUBLIC_SETTINGS: &[&str] = &[
    "server_version", "server_version_num", "server_encoding", "client_encoding", "timezone", "datestyle",
    "intervalstyle", "search_path", "statement_timeout", "lock_timeout", "transaction_isolation",
    "transaction_read_only", "default_transaction_read_only", "standard_conforming_strings", "work_mem",
    "max_connections", "lc_collate", "lc_ctype", "lc_messages", "lc_monetary", "lc_numeric", "lc_time",
    "integer_datetimes", "application_name", "is_superuser", "extra_float_digits", "bytea_output",
];

/// Catalogs whose contents are secrets or other sessions' data: reading them is an export.
pub const SENSITIVE_RELATIONS: &[&str] = &[
    "pg_authid", "pg_shadow", "pg_user_mapping", "pg_user_mappings", "pg_settings", "pg_file_settings",
    "pg_hba_file_rules", "pg_ident_file_mappings", "pg_stat_activity", "pg_stat_statements", "pg_largeobject",
    "pg_db_role_setting", "pg_stat_replication", "pg_replication_slots", "pg_subscription",
];
