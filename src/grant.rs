//! Structured GRANT/REVOKE: which privileges each object type takes, and the statement built from
//! catalog-resolved names, every identifier quoted — no argument is ever spliced into SQL text.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GrantAction {
    Grant,
    Revoke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectType {
    Table,
    Schema,
    Sequence,
    Function,
    Database,
    /// Every table (and view) currently in the given schemas.
    AllTablesInSchema,
}

impl ObjectType {
    /// What PostgreSQL allows on this kind of object (`ALL` aside).
    pub fn privileges(self) -> &'static [&'static str] {
        match self {
            ObjectType::Table | ObjectType::AllTablesInSchema => &[
                "SELECT",
                "INSERT",
                "UPDATE",
                "DELETE",
                "TRUNCATE",
                "REFERENCES",
                "TRIGGER",
            ],
            ObjectType::Sequence => &["USAGE", "SELECT", "UPDATE"],
            ObjectType::Schema => &["USAGE", "CREATE"],
            ObjectType::Function => &["EXECUTE"],
            ObjectType::Database => &["CONNECT", "CREATE", "TEMPORARY"],
        }
    }

    fn keyword(self) -> &'static str {
        match self {
            ObjectType::Table => "TABLE",
            ObjectType::Schema => "SCHEMA",
            ObjectType::Sequence => "SEQUENCE",
            ObjectType::Function => "FUNCTION",
            ObjectType::Database => "DATABASE",
            ObjectType::AllTablesInSchema => "ALL TABLES IN SCHEMA",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Table => "table",
            ObjectType::Schema => "schema",
            ObjectType::Sequence => "sequence",
            ObjectType::Function => "function",
            ObjectType::Database => "database",
            ObjectType::AllTablesInSchema => "all_tables_in_schema",
        }
    }
}

/// The privileges asked for, checked and normalised: `ALL` alone, or a set this type allows.
pub fn privileges(object_type: ObjectType, asked: &[String]) -> Result<Vec<String>, String> {
    if asked.is_empty() {
        return Err(format!(
            "`privileges` is empty; name at least one of {} (or ALL)",
            object_type.privileges().join(", ")
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for p in asked {
        let norm = p.trim().to_ascii_uppercase();
        let norm = match norm.as_str() {
            "ALL PRIVILEGES" => "ALL".to_string(),
            "TEMP" => "TEMPORARY".to_string(),
            _ => norm,
        };
        if norm != "ALL" && !object_type.privileges().contains(&norm.as_str()) {
            return Err(format!(
                "`{p}` is not a privilege on a {}; PostgreSQL allows {} (or ALL)",
                object_type.as_str(),
                object_type.privileges().join(", ")
            ));
        }
        if !out.contains(&norm) {
            out.push(norm);
        }
    }
    if out.len() > 1 && out.iter().any(|p| p == "ALL") {
        return Err("`ALL` already includes every privilege; pass it alone".into());
    }
    Ok(out)
}

/// The statement, from names the catalog confirmed. `objects` are already SQL (quoted identifiers,
/// or a function's `regprocedure` text from PostgreSQL itself); `grantee` is a quoted role or
/// `PUBLIC`.
pub fn statement(
    action: GrantAction,
    privileges: &[String],
    object_type: ObjectType,
    objects: &[String],
    grantee: &str,
    with_grant_option: bool,
) -> String {
    let privs = if privileges == ["ALL"] {
        "ALL PRIVILEGES".to_string()
    } else {
        privileges.join(", ")
    };
    match action {
        GrantAction::Grant => format!(
            "GRANT {privs} ON {} {} TO {grantee}{}",
            object_type.keyword(),
            objects.join(", "),
            if with_grant_option { " WITH GRANT OPTION" } else { "" }
        ),
        GrantAction::Revoke => format!(
            "REVOKE {}{privs} ON {} {} FROM {grantee}",
            if with_grant_option { "GRANT OPTION FOR " } else { "" },
            object_type.keyword(),
            objects.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_follow_what_postgres_allows_per_type() {
        assert_eq!(
            privileges(ObjectType::Table, &["select".into(), " Insert ".into()]).unwrap(),
            ["SELECT", "INSERT"]
        );
        assert_eq!(
            privileges(ObjectType::Database, &["temp".into()]).unwrap(),
            ["TEMPORARY"]
        );
        assert_eq!(
            privileges(ObjectType::Schema, &["all privileges".into()]).unwrap(),
            ["ALL"]
        );
        assert!(
            privileges(ObjectType::Table, &["USAGE".into()])
                .unwrap_err()
                .contains("not a privilege on a table")
        );
        assert!(privileges(ObjectType::Function, &["SELECT".into()]).is_err());
        assert!(privileges(ObjectType::Table, &[]).is_err());
        assert!(privileges(ObjectType::Table, &["ALL".into(), "SELECT".into()]).is_err());
        assert!(privileges(ObjectType::Table, &["SELECT; DROP TABLE x".into()]).is_err());
    }
}
