//! What the database's catalog says about the names a SQL text uses: user-defined code (functions,
//! operators, types, casts), which schema an unqualified relation name resolves to, and the masking
//! views. Plain data (loaded by `db::facts`); the lookups here are pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// The schema whose views mask tables for the agent (created by the Postgres-side enforcement).
pub const MASK_SCHEMA: &str = "pgwarden_mask";

#[cfg(test)]
#[test]
fn mask_comments_name_their_table_as_stored() {
    assert_eq!(
        mask_comment_source("pgwarden mask of public.customers").as_deref(),
        Some("public.customers")
    );
    assert_eq!(
        mask_comment_source("pgwarden mask of public.\"My \"\"Table\"\"\"").as_deref(),
        Some("public.My \"Table\"")
    );
    assert_eq!(mask_comment_source("pgwarden mask of customers"), None);
    assert_eq!(mask_comment_source("something else"), None);
}

/// PostgreSQL truncates identifiers to `NAMEDATALEN - 1` bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// What PostgreSQL knows that the SQL text does not show. `Default` is "no catalog": the classifier
/// then decides from the text alone (the offline `pgwarden check`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CatalogFacts {
    /// Every function, procedure and aggregate outside `pg_catalog`/`information_schema` (extension
    /// objects included), by name: `email_of` → [`public.email_of(c customers)`].
    pub functions: BTreeMap<String, Vec<String>>,
    /// Operator symbols some user-defined operator uses: `=` → [`public.=(customers, customers)`].
    pub operators: BTreeMap<String, Vec<String>>,
    /// Every type outside `pg_catalog`/`information_schema` (domains, enums, ranges, base and composite
    /// types, table row types, their array forms `_name`), by name → `schema.name`.
    pub types: BTreeMap<String, Vec<String>>,
    /// User-defined casts (`pg_cast.oid >= 16384`).
    pub casts: Vec<UserCast>,
    /// Relation names of `pg_catalog` and of each schema on the search path.
    pub relations: BTreeMap<String, BTreeSet<String>>,
    /// The search path as resolved by `current_schemas(false)`: `pg_catalog` appears only when it is
    /// written in the path; otherwise PostgreSQL searches it first, implicitly.
    pub search_path: Vec<String>,
    /// Views in `pgwarden_mask` → the table each masks (`schema.table`), from the view's comment.
    pub mask_views: BTreeMap<String, String>,
    /// User operators and casts that change built-in syntax everywhere (see `usercode::hijacks`).
    pub hijacks: Vec<String>,
    /// Relations whose read runs user code: views (through other views too) over user functions,
    /// operators or types, and tables whose row-security policies call them. `schema.name` → the code.
    pub code_relations: BTreeMap<String, Vec<String>>,
}

/// One row of `pg_cast` created by a user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserCast {
    /// `pg_type.typname` of the source and target.
    pub source: String,
    pub target: String,
    /// `schema.function(args)`, or `WITHOUT FUNCTION`/`WITH INOUT`.
    pub function: String,
}

impl CatalogFacts {
    /// No catalog at all: classification from the text alone.
    pub fn is_empty(&self) -> bool {
        *self == CatalogFacts::default()
    }

    /// The user-defined functions called `name` (folded), if any.
    pub fn function(&self, name: &str) -> Option<&[String]> {
        self.functions.get(name).map(Vec::as_slice).filter(|v| !v.is_empty())
    }

    pub fn operator(&self, symbol: &str) -> Option<&[String]> {
        self.operators.get(symbol).map(Vec::as_slice).filter(|v| !v.is_empty())
    }

    pub fn user_type(&self, name: &str) -> Option<&[String]> {
        self.types.get(name).map(Vec::as_slice).filter(|v| !v.is_empty())
    }

    /// User casts to the type `name` (a `pg_type.typname`).
    pub fn casts_to<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a UserCast> + 'a {
        self.casts.iter().filter(move |c| c.target == name)
    }

    /// The schemas PostgreSQL searches for an unqualified name, in order: `pg_catalog` first unless
    /// the path names it somewhere else.
    pub fn search_order(&self) -> Vec<&str> {
        let mut order: Vec<&str> = Vec::with_capacity(self.search_path.len() + 1);
        if !self.search_path.iter().any(|s| s == "pg_catalog") {
            order.push("pg_catalog");
        }
        order.extend(self.search_path.iter().map(String::as_str));
        order
    }

    /// The schema an unqualified relation name resolves to, when the catalog knows it.
    pub fn resolve_relation(&self, name: &str) -> Option<&str> {
        self.search_order()
            .into_iter()
            .find(|schema| self.relations.get(*schema).is_some_and(|r| r.contains(name)))
    }

    /// The table a masking view stands for; the view itself when its comment names none.
    pub fn mask_source(&self, view: &str) -> String {
        self.mask_views
            .get(view)
            .cloned()
            .unwrap_or_else(|| format!("{MASK_SCHEMA}.{view}"))
    }
}

/// The source table named by a masking view's comment, `pgwarden mask of public.customers` (each
/// part double-quoted where Postgres would need it), as `schema.table` with the names as stored.
pub fn mask_comment_source(comment: &str) -> Option<String> {
    let rest = comment.trim().strip_prefix("pgwarden mask of ")?.trim();
    let mut parts = Vec::new();
    let mut chars = rest.chars().peekable();
    while chars.peek().is_some() {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.push(c);
                chars.next();
            }
        }
        if part.is_empty() || part.contains(char::is_whitespace) && !rest.contains('"') {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => {}
            Some(_) => return None,
        }
    }
    match parts.as_slice() {
        [schema, table] => Some(format!("{schema}.{table}")),
        _ => None,
    }
}

/// How PostgreSQL reads a name: unquoted ASCII letters folded to lower case (only ASCII: `CUSTÖMERS`
/// is `custÖmers`), then truncated to 63 bytes at a character boundary, quoted or not.
pub fn fold(value: &str, quoted: bool) -> String {
    let folded = if quoted {
        value.to_string()
    } else {
        value.to_ascii_lowercase()
    };
    truncate_identifier(&folded).to_string()
}

/// The first 63 bytes of `name`, cut back to a character boundary (`pg_mbcliplen`).
pub fn truncate_identifier(name: &str) -> &str {
    if name.len() <= MAX_IDENTIFIER_BYTES {
        return name;
    }
    let mut end = MAX_IDENTIFIER_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_and_truncate_like_postgres() {
        for (value, quoted, want) in [
            ("CUSTÖMERS", false, "custÖmers"),
            ("Kelvin\u{212A}", false, "kelvin\u{212A}"),
            ("MiXed", true, "MiXed"),
            (&"a".repeat(70), false, &"a".repeat(63)),
            // 62 ASCII bytes then a 2-byte character: cut before it, not through it.
            (&format!("{}é", "b".repeat(62)), true, &"b".repeat(62)),
        ] {
            assert_eq!(fold(value, quoted), want, "{value}");
        }
    }

    #[test]
    fn mask_comments_name_their_source() {
        for (comment, want) in [
            ("pgwarden mask of public.customers", Some("public.customers")),
            ("  pgwarden mask of sales.orders ", Some("sales.orders")),
            ("masks customers", None),
            ("pgwarden mask of customers", None),
        ] {
            assert_eq!(mask_comment_source(comment).as_deref(), want, "{comment}");
        }
    }

    #[test]
    fn pg_catalog_is_searched_first_unless_the_path_places_it() {
        let mut f = CatalogFacts {
            search_path: vec!["public".into()],
            ..CatalogFacts::default()
        };
        assert_eq!(f.search_order(), ["pg_catalog", "public"]);
        f.search_path = vec!["public".into(), "pg_catalog".into()];
        assert_eq!(f.search_order(), ["public", "pg_catalog"]);
    }
}
