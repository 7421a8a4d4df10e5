//! `grant`: structured GRANT/REVOKE, always reviewed by a person (by default), never spliced SQL.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::grant::{GrantAction, ObjectType};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantArgs {
    /// `grant` or `revoke`.
    pub action: GrantAction,
    /// e.g. `["SELECT"]`, `["USAGE"]`, `["ALL"]`; must be valid for `object_type`.
    pub privileges: Vec<String>,
    pub object_type: ObjectType,
    /// Exact names: `schema.table`, `schema`, `schema.function` (or `schema.function(integer)` when
    /// overloaded), a database name. Matched exactly, case and all.
    pub objects: Vec<String>,
    /// The exact role name, or `PUBLIC` (every role).
    pub role: String,
    /// Let the role pass the privilege on (grant), or take only that right away (revoke).
    #[serde(default)]
    pub with_grant_option: Option<bool>,
    /// Why this privilege change is needed, in a sentence. Required: the reviewer sees it.
    pub intent: String,
    /// Which database to use, by the name `list_tables` gives; omit for the default (the first).
    /// A call reaches exactly one database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GrantOutput {
    /// The statement that ran.
    pub statement: String,
    pub committed: bool,
    /// Per object, the privileges the role holds now.
    pub privileges_after: Vec<ObjectPrivileges>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ObjectPrivileges {
    pub object: String,
    pub privileges: Vec<String>,
}

impl GrantOutput {
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}: {}\n",
            if self.committed { "done" } else { "dry run, rolled back" },
            self.statement
        );
        for o in &self.privileges_after {
            out.push_str(&format!(
                "  {}: {}\n",
                o.object,
                if o.privileges.is_empty() {
                    "-".to_string()
                } else {
                    o.privileges.join(", ")
                }
            ));
        }
        out
    }
}
