//! Schema discovery from the system catalogs: our own fixed, parameterised SQL, run in the same
//! READ ONLY transaction as agent reads.

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Database, DbError, session::Session};

/// Most relations `list_tables` returns in one answer.
pub const MAX_LISTED: i64 = 2000;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SchemaInfo {
    pub name: String,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    /// `table`, `partitioned table`, `view`, `materialized view` or `foreign table`.
    pub kind: String,
    /// The planner's row estimate (from the last ANALYZE); null when never analysed.
    pub row_estimate: Option<i64>,
    pub comment: Option<String>,
    /// Whether the connected role may SELECT from it.
    pub readable: bool,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TableList {
    pub schemas: Vec<SchemaInfo>,
    pub tables: Vec<TableInfo>,
    /// True when more than the listing limit exist; filter by `schema`.
    pub truncated: bool,
    /// Something to tell the user, e.g. that this is the demo sandbox and not their database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// The database listed, when pgwarden serves several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Every database this pgwarden serves (when several): pass one's `name` as any tool's
    /// `database` argument.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseInfo>,
}

/// One database a pgwarden serves, as `list_tables` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DatabaseInfo {
    pub name: String,
    /// Used when a call names no database.
    pub default: bool,
    /// False while pgwarden cannot use it (unreachable, or not set up); its calls fail until then.
    pub available: bool,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub nullable: bool,
    pub default: Option<String>,
    /// `always`/`by default` for identity columns, `stored` for generated ones.
    pub generated: Option<String>,
    pub comment: Option<String>,
    /// Set when the policy masks this column: `query` returns it masked, and filters see the mask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<crate::policy::Mask>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub references_table: String,
    pub references_columns: Vec<String>,
    pub definition: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct IndexInfo {
    pub name: String,
    pub unique: bool,
    pub primary: bool,
    pub definition: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ConstraintInfo {
    pub name: String,
    /// `unique`, `check` or `exclusion`.
    pub kind: String,
    pub definition: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TableDescription {
    pub schema: String,
    pub name: String,
    pub kind: String,
    pub comment: Option<String>,
    pub row_estimate: Option<i64>,
    pub columns: Vec<ColumnInfo>,
    pub primary_key: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    pub indexes: Vec<IndexInfo>,
    pub constraints: Vec<ConstraintInfo>,
    /// The view's query, for views and materialized views.
    pub view_definition: Option<String>,
    /// Compliance tags the policy gives this table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Failures of discovery that the model should correct.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("schema `{name}` does not exist; schemas here: {available}")]
    NoSchema { name: String, available: String },
    #[error("table `{0}` not found; call `list_tables` to see what exists, and quote mixed-case names (\"MyTable\")")]
    NoTable(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

const KIND_SQL: &str = "CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view' \
                        WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' ELSE c.relkind::text END";
const USER_SCHEMA: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgwarden_mask', 'pgwarden_private') \
                           AND n.nspname NOT LIKE 'pg\\_toast%' \
                           AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

impl Database {
    pub async fn list_tables(
        &self,
        schema: Option<&str>,
        timeout: Duration,
        ct: &CancellationToken,
    ) -> Result<TableList, CatalogError> {
        let mut session = Session::open(self).await?;
        let schema = schema.map(str::to_string);
        session
            .guarded(ct, timeout + Duration::from_secs(5), async |s: &mut Session| {
                let tx = s.begin_read(timeout).await?;
                let schemas: Vec<SchemaInfo> = tx
                    .query(
                        &format!(
                            "SELECT n.nspname::text, obj_description(n.oid, 'pg_namespace') FROM pg_namespace n \
                             WHERE {USER_SCHEMA} ORDER BY 1"
                        ),
                        &[],
                    )
                    .await
                    .map_err(DbError::from_pg)?
                    .iter()
                    .map(|r| SchemaInfo {
                        name: r.get(0),
                        comment: r.get(1),
                    })
                    .collect();
                if let Some(name) = &schema
                    && !schemas.iter().any(|s| &s.name == name)
                {
                    let available = schemas
                        .iter()
                        .map(|s| format!("`{}`", s.name))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(CatalogError::NoSchema {
                        name: name.clone(),
                        available,
                    });
                }
                let rows = tx
                    .query(
                        &format!(
                            "SELECT n.nspname::text, c.relname::text, {KIND_SQL}, \
                                    CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END, \
                                    obj_description(c.oid, 'pg_class'), has_any_column_privilege(c.oid, 'SELECT') \
                             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                             WHERE c.relkind IN ('r','p','v','m','f') AND NOT c.relispartition AND {USER_SCHEMA} \
                               AND ($1::text IS NULL OR n.nspname = $1) \
                             ORDER BY 1, 2 LIMIT $2"
                        ),
                        &[&schema, &(MAX_LISTED + 1)],
                    )
                    .await
                    .map_err(DbError::from_pg)?;
                let truncated = rows.len() as i64 > MAX_LISTED;
                let tables = rows
                    .iter()
                    .take(MAX_LISTED as usize)
                    .map(|r| TableInfo {
                        schema: r.get(0),
                        name: r.get(1),
                        kind: r.get(2),
                        row_estimate: r.get(3),
                        comment: r.get(4),
                        readable: r.get(5),
                    })
                    .collect();
                let schemas = match &schema {
                    Some(name) => schemas.into_iter().filter(|s| &s.name == name).collect(),
                    None => schemas,
                };
                Ok(TableList {
                    schemas,
                    tables,
                    truncated,
                    notice: None,
                    database: None,
                    databases: vec![],
                })
            })
            .await
    }

    /// `table` is SQL syntax for a relation name (`orders`, `analytics.monthly_revenue`,
    /// `"MixedCase"`), resolved with the connection's search_path.
    pub async fn describe_table(
        &self,
        table: &str,
        timeout: Duration,
        ct: &CancellationToken,
    ) -> Result<TableDescription, CatalogError> {
        let mut session = Session::open(self).await?;
        session
            .guarded(ct, timeout + Duration::from_secs(5), async |s: &mut Session| {
                let tx = s.begin_read(timeout).await?;
                let head = tx
                    .query_opt(
                        &format!(
                            "SELECT c.oid, n.nspname::text, c.relname::text, {KIND_SQL}, obj_description(c.oid, 'pg_class'), \
                                    CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END, \
                                    CASE WHEN c.relkind IN ('v','m') THEN pg_get_viewdef(c.oid, true) END \
                             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                             WHERE c.oid = coalesce( \
                                     -- a masking view stands for its table: describe the table
                                     (SELECT to_regclass(substr(obj_description(m.oid, 'pg_class'), 18)) \
                                        FROM pg_class m WHERE m.oid = to_regclass($1) \
                                         AND m.relnamespace = to_regnamespace('pgwarden_mask') \
                                         AND obj_description(m.oid, 'pg_class') LIKE 'pgwarden mask of %'), \
                                     to_regclass($1)) \
                               AND c.relkind IN ('r','p','v','m','f')"
                        ),
                        &[&table],
                    )
                    .await
                    .map_err(|e| match DbError::from_pg(e) {
                        // to_regclass raises on syntax errors in the name rather than returning NULL.
                        DbError::Sql { .. } => CatalogError::NoTable(table.to_string()),
                        other => CatalogError::Db(other),
                    })?
                    .ok_or_else(|| CatalogError::NoTable(table.to_string()))?;
                let oid: u32 = head.get(0);
                let columns = tx
                    .query(
                        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, \
                                pg_get_expr(d.adbin, d.adrelid), \
                                CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' ELSE \
                                  CASE a.attgenerated WHEN 's' THEN 'stored' END END, \
                                col_description(a.attrelid, a.attnum) \
                         FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                         WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                        &[&oid],
                    )
                    .await
                    .map_err(DbError::from_pg)?
                    .iter()
                    .map(|r| ColumnInfo {
                        name: r.get(0),
                        type_name: r.get(1),
                        nullable: r.get(2),
                        default: r.get(3),
                        generated: r.get(4),
                        comment: r.get(5),
                        mask: None,
                    })
                    .collect();
                let constraints = tx
                    .query(
                        "SELECT con.conname::text, con.contype::text, pg_get_constraintdef(con.oid, true), \
                                ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i) \
                                      JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i), \
                                con.confrelid::regclass::text, \
                                ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i) \
                                      JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i) \
                         FROM pg_constraint con WHERE con.conrelid = $1 ORDER BY con.conname",
                        &[&oid],
                    )
                    .await
                    .map_err(DbError::from_pg)?;
                let mut primary_key = Vec::new();
                let mut foreign_keys = Vec::new();
                let mut others = Vec::new();
                for r in &constraints {
                    let (name, kind, definition): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                    match kind.as_str() {
                        "p" => primary_key = r.get(3),
                        "f" => foreign_keys.push(ForeignKey {
                            name,
                            columns: r.get(3),
                            references_table: r.get(4),
                            references_columns: r.get(5),
                            definition,
                        }),
                        "u" | "c" | "x" => others.push(ConstraintInfo {
                            name,
                            kind: match kind.as_str() { "u" => "unique", "c" => "check", _ => "exclusion" }.into(),
                            definition,
                        }),
                        _ => {}
                    }
                }
                let indexes = tx
                    .query(
                        "SELECT c.relname::text, i.indisunique, i.indisprimary, pg_get_indexdef(i.indexrelid) \
                         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1 ORDER BY 1",
                        &[&oid],
                    )
                    .await
                    .map_err(DbError::from_pg)?
                    .iter()
                    .map(|r| IndexInfo { name: r.get(0), unique: r.get(1), primary: r.get(2), definition: r.get(3) })
                    .collect();
                Ok(TableDescription {
                    schema: head.get(1),
                    name: head.get(2),
                    kind: head.get(3),
                    comment: head.get(4),
                    row_estimate: head.get(5),
                    columns,
                    primary_key,
                    foreign_keys,
                    indexes,
                    constraints: others,
                    view_definition: head.get(6),
                    tags: vec![],
                })
            })
            .await
    }
}
