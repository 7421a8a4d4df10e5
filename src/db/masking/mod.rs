//! Column masks enforced by PostgreSQL, the way PostgreSQL Anonymizer does dynamic masking.
//!
//! The role the agent's SQL runs as has no privilege on masked columns of the base tables; it reads
//! them through `security_barrier` views in the schema `pgwarden_mask`, which its `search_path`
//! puts first. A qualified reference to a base column fails with Postgres's own permission error,
//! whatever pgwarden's parser believed. Partitions, inheritance children and parents of a masked
//! table are masked too (Postgres checks privileges on the relation named, not on the rows'
//! home), and views that read a masked column are not readable by the agent at all.
//!
//! `pgwarden setup` (as a privileged login) makes the database match the policy; `serve` checks
//! at start-up, as the agent, that it does ([`verify`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{DbError, quote_ident};
use crate::policy::Mask;

mod verify;

pub use verify::{Enforcement, verify};

/// Where the masking views live. The agent's `search_path` starts here.
pub use crate::classify::catalog::MASK_SCHEMA;
/// Where the hash salt lives: no privilege for anyone but its owner.
pub const PRIVATE_SCHEMA: &str = "pgwarden_private";
/// Bumped when the generated SQL changes shape, so an old setup is re-run.
const VERSION: &str = "pgwarden masks v1";

/// Why masks could not be set up or are not enforced. Each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the catalog lookup for masks was unreadable: {0}")]
    Catalog(String),
    #[error(
        "masked tables `{0}` and `{1}` have the same name; `{MASK_SCHEMA}` holds one masking view per name, so rename one of them or mask only one"
    )]
    NameClash(String, String),
    #[error("{0}")]
    Setup(String),
}

/// One relation that carries masked columns: a table the policy names, or a partition, inheritance
/// child or parent of one.
#[derive(Debug, Clone, Deserialize)]
pub struct MaskedTable {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<MaskedTableColumn>,
    /// Row-level security is enabled: a masking view reads the table as its owner, so the
    /// policies meant for the agent would not apply. Refused until pgwarden can honour them.
    #[serde(default)]
    pub row_security: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MaskedTableColumn {
    pub name: String,
    pub attnum: i16,
    /// `None` for a column shown as it is.
    pub mask: Option<Mask>,
}

/// A view or materialized view that reads a masked column, directly or through other views.
#[derive(Debug, Clone, Deserialize)]
pub struct TaintedView {
    pub oid: u32,
    pub schema: String,
    pub name: String,
}

/// What setup does with the agent role's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleAction {
    /// It does not exist yet.
    Create,
    /// It exists with an attribute a least-privilege role must not have.
    Restrict,
    /// It exists as it should be.
    Keep,
}

/// What the catalog says about the policy's masks in one database.
#[derive(Debug, Clone, Deserialize)]
pub struct MaskPlan {
    pub tables: Vec<MaskedTable>,
    pub tainted: Vec<TaintedView>,
    /// Policy tables that do not exist in this database.
    pub missing: Vec<String>,
    /// `SECURITY DEFINER` functions whose owner can read a masked column.
    #[serde(default)]
    pub definers: Vec<DefinerFunction>,
}

/// A function that runs with its owner's rights, who can read masked columns.
#[derive(Debug, Clone, Deserialize)]
pub struct DefinerFunction {
    pub oid: u32,
    /// `schema.name(argtypes)`, as `regprocedure` prints it.
    pub signature: String,
}

/// `$1`: `[[schema, table, column, mask], …]` from the policy. Answers with one JSON value: the
/// masked relations (the policy's tables, and every relation of their inheritance or partition
/// hierarchies, with the column masked by name), the views that read any masked column (through
/// other views too; whole-row references count), and the policy tables that do not exist.
const PLAN_SQL: &str = r#"
WITH RECURSIVE
wanted AS (
    SELECT m->>0 AS nsp, m->>1 AS rel, m->>2 AS col, m->>3 AS mask
      FROM pg_catalog.json_array_elements($1::text::json) AS m
),
named AS (
    SELECT w.*, c.oid
      FROM wanted w
      LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = w.nsp
      LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.rel AND c.relkind IN ('r', 'p', 'f')
),
edges(a, b) AS (
    SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits
    UNION ALL
    SELECT inhparent, inhrelid FROM pg_catalog.pg_inherits
),
hier(oid, col, mask) AS (
    SELECT oid, col, mask FROM named WHERE oid IS NOT NULL
    UNION
    SELECT e.b, h.col, h.mask FROM hier h JOIN edges e ON e.a = h.oid
),
masked_cols AS (
    SELECT h.oid, a.attnum, min(h.mask) AS mask
      FROM hier h
      JOIN pg_catalog.pg_attribute a ON a.attrelid = h.oid AND a.attname = h.col AND a.attnum > 0 AND NOT a.attisdropped
     GROUP BY h.oid, a.attnum
),
tainted(oid) AS (
    SELECT w.ev_class
      FROM pg_catalog.pg_depend d
      JOIN masked_cols mc ON mc.oid = d.refobjid AND d.refobjsubid IN (0, mc.attnum)
      JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
       AND w.ev_class <> d.refobjid
    UNION
    SELECT w.ev_class
      FROM tainted t
      JOIN pg_catalog.pg_depend d ON d.refobjid = t.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass
                                 AND d.classid = 'pg_catalog.pg_rewrite'::regclass
      JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid
     WHERE w.ev_class <> t.oid
)
SELECT pg_catalog.json_build_object(
  'tables', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
        'oid', c.oid::int8, 'schema', n.nspname, 'name', c.relname, 'row_security', c.relrowsecurity,
        'columns', (SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                        'name', a.attname, 'attnum', a.attnum,
                        'mask', (SELECT mc.mask FROM masked_cols mc WHERE mc.oid = c.oid AND mc.attnum = a.attnum))
                      ORDER BY a.attnum)
                      FROM pg_catalog.pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))
      ORDER BY n.nspname, c.relname), '[]')
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid IN (SELECT oid FROM masked_cols)),
  'tainted', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
        'oid', c.oid::int8, 'schema', n.nspname, 'name', c.relname) ORDER BY n.nspname, c.relname), '[]')
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid IN (SELECT oid FROM tainted) AND n.nspname <> 'pgwarden_mask'),
  'missing', (SELECT coalesce(pg_catalog.json_agg(DISTINCT nsp || '.' || rel), '[]') FROM named WHERE oid IS NULL),
  -- SECURITY DEFINER functions run as their owner: one whose owner can read a masked column hands
  -- that column to anyone who may call it.
  'definers', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
        'oid', p.oid::int8, 'signature', p.oid::regprocedure::text) ORDER BY p.oid), '[]')
      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND EXISTS (SELECT FROM masked_cols mc
                    WHERE pg_catalog.has_column_privilege(p.proowner, mc.oid, mc.attnum, 'SELECT')))
)::text
"#;

impl MaskPlan {
    /// The masked relations a masking view cannot serve faithfully: those with row-level security.
    pub fn unsupported(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|t| t.row_security)
            .map(|t| {
                format!(
                    "`{}.{}` has row-level security, which a masking view (it reads as its owner) would not apply \
                     to the agent; pgwarden cannot mask a column of it yet, so remove its masks or its policies",
                    t.schema, t.name
                )
            })
            .collect()
    }

    /// Reads the plan for `masks` (policy: `schema.table` → column → mask) from the catalog.
    pub async fn discover(
        client: &impl tokio_postgres::GenericClient,
        masks: &BTreeMap<String, BTreeMap<String, Mask>>,
    ) -> Result<MaskPlan, MaskError> {
        let wanted: Vec<[&str; 4]> = masks
            .iter()
            .filter_map(|(table, cols)| table.split_once('.').map(|(s, t)| (s, t, cols)))
            .flat_map(|(s, t, cols)| cols.iter().map(move |(c, m)| [s, t, c.as_str(), m.as_str()]))
            .collect();
        let param = serde_json::to_string(&wanted).map_err(|e| MaskError::Catalog(e.to_string()))?;
        let row = client.query_one(PLAN_SQL, &[&param]).await.map_err(DbError::from_pg)?;
        let json: String = row.try_get(0).map_err(|e| MaskError::Catalog(e.to_string()))?;
        let plan: MaskPlan = serde_json::from_str(&json).map_err(|e| MaskError::Catalog(e.to_string()))?;
        let mut seen: BTreeMap<&str, &MaskedTable> = BTreeMap::new();
        for t in &plan.tables {
            if let Some(other) = seen.insert(&t.name, t) {
                return Err(MaskError::NameClash(
                    format!("{}.{}", other.schema, other.name),
                    format!("{}.{}", t.schema, t.name),
                ));
            }
        }
        Ok(plan)
    }

    /// The masking view of each masked relation, in a stable order.
    fn views(&self) -> Vec<String> {
        self.tables
            .iter()
            .map(|t| {
                let select: Vec<String> = t
                    .columns
                    .iter()
                    .map(|c| {
                        let col = quote_ident(&c.name);
                        match c.mask {
                            Some(mask) => format!("{} AS {col}", mask_sql(mask, &col)),
                            None => col,
                        }
                    })
                    .collect();
                format!(
                    "CREATE VIEW {MASK_SCHEMA}.{} WITH (security_barrier) AS SELECT {} FROM {}.{}",
                    quote_ident(&t.name),
                    select.join(", "),
                    quote_ident(&t.schema),
                    quote_ident(&t.name)
                )
            })
            .collect()
    }

    /// A digest of everything the masking schema must contain: the policy's masks as applied to
    /// the tables as they are now. A column added, a mask changed, a partition attached: it changes.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(VERSION.as_bytes());
        for v in self.views() {
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        for t in &self.tainted {
            h.update(format!("tainted {}.{}\n", t.schema, t.name).as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What setup writes on the masking schema, and `verify` expects to find there.
    pub fn stamp(&self) -> String {
        format!("{VERSION} {}", self.fingerprint())
    }

    /// True when the masking schema was made for exactly this plan.
    pub async fn is_installed(&self, client: &impl tokio_postgres::GenericClient) -> Result<bool, MaskError> {
        let row = client
            .query_one(
                "SELECT pg_catalog.obj_description(pg_catalog.to_regnamespace('pgwarden_mask'), 'pg_namespace')",
                &[],
            )
            .await
            .map_err(DbError::from_pg)?;
        Ok(row.try_get::<_, Option<String>>(0).ok().flatten().as_deref() == Some(self.stamp().as_str()))
    }

    /// The statements that make the database match the policy for `agent`. Idempotent: run them
    /// again whenever the policy's masks or the tables change. `grant_schemas`: where the agent
    /// may read (every table and view there, masked columns excepted).
    pub fn setup_sql(
        &self,
        agent: &str,
        database: &str,
        role_action: RoleAction,
        grant_schemas: &[String],
    ) -> Vec<String> {
        let role = quote_ident(agent);
        let mut sql = Vec::new();
        const LEAST: &str = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";
        match role_action {
            RoleAction::Create => sql.push(format!("CREATE ROLE {role} LOGIN {LEAST}")),
            RoleAction::Restrict => sql.push(format!("ALTER ROLE {role} {LEAST}")),
            RoleAction::Keep => {}
        }
        sql.push(format!(
            "ALTER ROLE {role} IN DATABASE {} SET search_path = {MASK_SCHEMA}, \"$user\", public",
            quote_ident(database)
        ));
        for schema in grant_schemas {
            let s = quote_ident(schema);
            sql.push(format!("GRANT USAGE ON SCHEMA {s} TO {role}"));
            sql.push(format!("GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {role}"));
        }
        // The hash salt: readable only through the masking views (which run as their owner).
        sql.push(format!("CREATE SCHEMA IF NOT EXISTS {PRIVATE_SCHEMA}"));
        sql.push(format!("REVOKE ALL ON SCHEMA {PRIVATE_SCHEMA} FROM PUBLIC"));
        sql.push(format!(
            "CREATE TABLE IF NOT EXISTS {PRIVATE_SCHEMA}.salt (salt text NOT NULL)"
        ));
        sql.push(format!("REVOKE ALL ON {PRIVATE_SCHEMA}.salt FROM PUBLIC"));
        sql.push(format!(
            "INSERT INTO {PRIVATE_SCHEMA}.salt SELECT pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text \
             WHERE NOT EXISTS (SELECT FROM {PRIVATE_SCHEMA}.salt)"
        ));
        // The masking schema is pgwarden's alone: made anew so that nothing stale survives.
        sql.push(format!("DROP SCHEMA IF EXISTS {MASK_SCHEMA} CASCADE"));
        sql.push(format!("CREATE SCHEMA {MASK_SCHEMA}"));
        sql.push(format!("REVOKE ALL ON SCHEMA {MASK_SCHEMA} FROM PUBLIC"));
        sql.push(format!("GRANT USAGE ON SCHEMA {MASK_SCHEMA} TO {role}"));
        for t in &self.tables {
            let base = format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name));
            // Table-level SELECT covers every column; it goes, and the unmasked columns come back
            // one by one. From PUBLIC too: every role, the agent included, holds PUBLIC's rights.
            sql.push(format!("REVOKE SELECT ON {base} FROM PUBLIC, {role}"));
            let open: Vec<String> = t
                .columns
                .iter()
                .filter(|c| c.mask.is_none())
                .map(|c| quote_ident(&c.name))
                .collect();
            if !open.is_empty() {
                sql.push(format!("GRANT SELECT ({}) ON {base} TO {role}", open.join(", ")));
            }
        }
        for v in &self.tainted {
            sql.push(format!(
                "REVOKE SELECT ON {}.{} FROM PUBLIC, {role}",
                quote_ident(&v.schema),
                quote_ident(&v.name)
            ));
        }
        for f in &self.definers {
            sql.push(format!(
                "REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC, {role}",
                f.signature
            ));
        }
        for (t, view) in self.tables.iter().zip(self.views()) {
            let name = format!("{MASK_SCHEMA}.{}", quote_ident(&t.name));
            sql.push(view);
            // The source as SQL (quoted only where needed), so `to_regclass` finds it again.
            let source = format!("{}.{}", quote_if_needed(&t.schema), quote_if_needed(&t.name));
            sql.push(format!(
                "COMMENT ON VIEW {name} IS 'pgwarden mask of {}'",
                source.replace('\'', "''")
            ));
            sql.push(format!("GRANT SELECT ON {name} TO {role}"));
        }
        sql.push(format!("COMMENT ON SCHEMA {MASK_SCHEMA} IS '{}'", self.stamp()));
        sql
    }
}

/// `name` bare when Postgres would read it back unchanged, else quoted.
fn quote_if_needed(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { name.to_string() } else { quote_ident(name) }
}

/// The SQL expression for `mask` over the (quoted) column `col`: built-in functions only, NULL
/// stays NULL, the result is text. The hash salt is read from the private table by the view,
/// which runs with its owner's rights.
fn mask_sql(mask: Mask, col: &str) -> String {
    let text = format!("({col})::text");
    match mask {
        Mask::Email => format!(
            "CASE WHEN {col} IS NULL THEN NULL WHEN pg_catalog.strpos({text}, '@') > 1 \
             THEN pg_catalog.left({text}, 1) || '***' || pg_catalog.substr({text}, pg_catalog.strpos({text}, '@')) ELSE '***' END"
        ),
        Mask::Redact => format!("CASE WHEN {col} IS NULL THEN NULL ELSE '[redacted]' END"),
        Mask::Hash => format!(
            "CASE WHEN {col} IS NULL THEN NULL ELSE pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(\
             (SELECT s.salt FROM {PRIVATE_SCHEMA}.salt s LIMIT 1) || {text}, 'UTF8')), 'hex'), 16) END"
        ),
        Mask::Last4 => format!(
            "CASE WHEN {col} IS NULL THEN NULL WHEN pg_catalog.length({text}) > 4 THEN '***' || pg_catalog.right({text}, 4) ELSE '****' END"
        ),
        Mask::Null => "NULL::text".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> MaskPlan {
        MaskPlan {
            tables: vec![MaskedTable {
                oid: 1,
                schema: "public".into(),
                name: "customers".into(),
                columns: vec![
                    MaskedTableColumn {
                        name: "id".into(),
                        attnum: 1,
                        mask: None,
                    },
                    MaskedTableColumn {
                        name: "email".into(),
                        attnum: 2,
                        mask: Some(Mask::Email),
                    },
                ],
                row_security: false,
            }],
            tainted: vec![],
            missing: vec![],
            definers: vec![],
        }
    }

    #[test]
    fn setup_revokes_the_table_and_grants_unmasked_columns_and_the_view() {
        let sql = plan()
            .setup_sql("agent", "shop", RoleAction::Create, &["public".into()])
            .join(";\n");
        assert!(
            sql.contains("REVOKE SELECT ON \"public\".\"customers\" FROM PUBLIC, \"agent\""),
            "{sql}"
        );
        assert!(
            sql.contains("GRANT SELECT (\"id\") ON \"public\".\"customers\" TO \"agent\""),
            "{sql}"
        );
        assert!(
            sql.contains("CREATE VIEW pgwarden_mask.\"customers\" WITH (security_barrier)"),
            "{sql}"
        );
        // Grants for the whole schema come first; the revoke after them wins.
        assert!(sql.find("GRANT SELECT ON ALL TABLES").unwrap() < sql.find("REVOKE SELECT ON \"public\"").unwrap());
    }

    #[test]
    fn the_fingerprint_changes_with_masks_and_columns() {
        let a = plan();
        let mut b = plan();
        b.tables[0].columns[1].mask = Some(Mask::Redact);
        let mut c = plan();
        c.tables[0].columns.push(MaskedTableColumn {
            name: "phone".into(),
            attnum: 3,
            mask: None,
        });
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint(), plan().fingerprint());
    }
}
