//! Column masks, applied inside Postgres so a masked value never exists raw in a result.
//!
//! Every relation the query names is resolved by Postgres itself (`to_regclass`, so the search path
//! and quoting rules are Postgres's). Each reference to a table with masked columns — or to one of
//! its partitions or inheritance children — is replaced by a subquery that selects the masked
//! expression under the column's own name. Whatever the query does next (aliases, subqueries,
//! `upper(email)`, `email || ''`, whole-row `to_json(c)`, filters) sees only the masked value.
//! What cannot be rewritten is refused: views and materialized views that read a masked column,
//! `TABLE t`, CTE names that shadow a masked table, planner statistics (`pg_stats`, which hold
//! samples of column values). As a last check, no result column may come
//! straight from a masked column (RowDescription's table OID and attribute number).

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::ControlFlow,
};

use serde::Deserialize;
use sqlparser::ast::{
    Ident, ObjectName, Query, SetExpr, Statement, TableAlias, TableFactor, Visit, VisitMut, Visitor, VisitorMut,
};

use super::quote_ident;
use crate::{
    classify::bounded::{self, CLASSIFY_LIMITS},
    policy::Mask,
};

/// The masks of a policy, ready to apply.
#[derive(Debug, Clone)]
pub struct Masking {
    /// `schema.table` → column → mask.
    pub masks: BTreeMap<String, BTreeMap<String, Mask>>,
    /// Mixed into `hash` so digests cannot be looked up; fresh per server run.
    pub salt: String,
}

/// Why a query was not run: its result could have carried a masked value raw.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MaskRefusal(pub String);

/// The relations a query names, and the names its CTEs introduce.
pub struct References {
    statement: Statement,
    /// Every relation name as written, with how often it occurs.
    names: BTreeMap<String, usize>,
    /// Names used as `TABLE name`.
    table_commands: BTreeSet<String>,
    cte_names: BTreeSet<String>,
}

impl References {
    /// Parses `sql` (already classified as one read). `None` when it names no relation at all.
    pub fn of(sql: &str) -> Result<Option<References>, MaskRefusal> {
        let mut parsed = bounded::parse(sql, CLASSIFY_LIMITS)
            .map_err(|e| MaskRefusal(format!("{e}, so masks cannot be applied")))?;
        if parsed.len() != 1 {
            return Err(MaskRefusal("masks can only be applied to exactly one statement".into()));
        }
        let statement = parsed.remove(0);
        let mut c = Collect::default();
        let _ = Visit::visit(&statement, &mut c);
        if c.names.is_empty() && c.table_commands.is_empty() {
            return Ok(None);
        }
        Ok(Some(References {
            statement,
            names: c.names,
            table_commands: c.table_commands,
            cte_names: c.cte_names,
        }))
    }

    /// Names to resolve in the catalog.
    pub fn names(&self) -> Vec<String> {
        self.names.keys().chain(self.table_commands.iter()).cloned().collect()
    }
}

#[derive(Default)]
struct Collect {
    names: BTreeMap<String, usize>,
    table_commands: BTreeSet<String>,
    cte_names: BTreeSet<String>,
}

impl Visitor for Collect {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        *self.names.entry(relation.to_string()).or_default() += 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.cte_names.insert(folded(&cte.alias.name));
            }
        }
        table_commands(&query.body, &mut self.table_commands);
        ControlFlow::Continue(())
    }
}

fn table_commands(body: &SetExpr, out: &mut BTreeSet<String>) {
    match body {
        SetExpr::Table(t) => {
            let name = t.table_name.clone().unwrap_or_default();
            out.insert(match &t.schema_name {
                Some(schema) => format!("{schema}.{name}"),
                None => name,
            });
        }
        SetExpr::SetOperation { left, right, .. } => {
            table_commands(left, out);
            table_commands(right, out);
        }
        _ => {}
    }
}

fn folded(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// What the catalog says about the names a query uses (one JSON row from `CATALOG_SQL`).
#[derive(Debug, Deserialize)]
pub struct Resolution {
    #[serde(default)]
    refs: Vec<Resolved>,
    /// `[oid, attnum]` of every masked column, partitions and children included.
    #[serde(default)]
    masked_columns: Vec<(u32, i16)>,
}

#[derive(Debug, Deserialize)]
struct Resolved {
    name: String,
    /// `schema.table` of the policy entry whose masks apply (a parent's, for a child table).
    policy_table: Option<String>,
    /// `"schema"."table"`, quoted.
    qualified: Option<String>,
    #[serde(default)]
    columns: Vec<String>,
    /// A view or materialized view that reads a masked column, directly or through other views.
    #[serde(default)]
    tainted: bool,
    /// The policy tables it reads from, for the message.
    #[serde(default)]
    sources: Vec<String>,
}

/// The cheap first look at the names a query uses (`$1`, as written): what each resolves to, its
/// kind, whether it has a parent, and its columns. Enough on its own when no name is a view or a
/// partition/child; otherwise `CATALOG_SQL` follows.
pub const RESOLVE_SQL: &str = r#"
SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
  'name', u.name,
  'oid', c.oid::int8,
  'kind', c.relkind,
  'plain', n.nspname || '.' || c.relname,
  'qualified', pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
  'has_parent', c.relispartition OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid),
  'columns', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(a.attname, a.attnum) ORDER BY a.attnum), '[]')
                FROM pg_catalog.pg_attribute a
               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
)), '[]')
FROM unnest($1::text[]) AS u(name)
JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(u.name)
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
"#;

/// Catalogs whose rows carry samples of any column's values (most common values, histograms).
const STATISTICS: &[&str] = &[
    "pg_catalog.pg_stats",
    "pg_catalog.pg_stats_ext",
    "pg_catalog.pg_stats_ext_exprs",
    "pg_catalog.pg_statistic",
    "pg_catalog.pg_statistic_ext_data",
];

/// One row of `RESOLVE_SQL`.
#[derive(Debug, Deserialize)]
pub struct Named {
    name: String,
    oid: u32,
    kind: String,
    plain: String,
    qualified: String,
    has_parent: bool,
    columns: Vec<(String, i16)>,
}

/// One query: relation names (as written) and the policy's masked tables and columns. Answers with
/// one JSON value, `{refs: [...], masked_columns: [[oid, attnum], ...]}`. It starts from the names
/// the query uses and walks down (views to what they read, children to their parents) through the
/// catalog indexes, so its cost does not grow with the size of the catalog.
pub const CATALOG_SQL: &str = r#"
WITH RECURSIVE
refs AS (
    SELECT u.name, pg_catalog.to_regclass(u.name)::oid AS oid FROM unnest($1::text[]) AS u(name)
),
-- What each referenced view or materialized view reads, through other views too.
deps(ref, oid, subid) AS (
    SELECT r.oid, d.refobjid, d.refobjsubid
      FROM refs r
      JOIN pg_catalog.pg_rewrite w ON w.ev_class = r.oid
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = w.oid
                                 AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> r.oid
    UNION
    SELECT x.ref, d.refobjid, d.refobjsubid
      FROM deps x
      JOIN pg_catalog.pg_rewrite w ON w.ev_class = x.oid
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = w.oid
                                 AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> x.oid
),
-- Every relation in sight with its ancestors: partitions and inheritance children take their parents' masks.
anc(base, oid) AS (
    SELECT s.oid, s.oid FROM (SELECT oid FROM refs WHERE oid IS NOT NULL UNION SELECT oid FROM deps) s
    UNION
    SELECT a.base, i.inhparent FROM anc a JOIN pg_catalog.pg_inherits i ON i.inhrelid = a.oid
),
masked_cols AS (
    SELECT a.base AS oid, att.attnum, n.nspname || '.' || c.relname AS policy_table
      FROM anc a
      JOIN pg_catalog.pg_class c ON c.oid = a.oid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_catalog.pg_attribute att ON att.attrelid = a.base AND att.attnum > 0 AND NOT att.attisdropped
     WHERE n.nspname || '.' || c.relname = ANY($2::text[])
       AND n.nspname || '.' || c.relname || '.' || att.attname = ANY($3::text[])
),
tainted AS (
    SELECT DISTINCT x.ref, mc.policy_table AS source
      FROM deps x JOIN masked_cols mc ON mc.oid = x.oid AND x.subid IN (0, mc.attnum)
)
SELECT pg_catalog.json_build_object(
  'refs', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', r.name,
      'policy_table', (SELECT min(mc.policy_table) FROM masked_cols mc WHERE mc.oid = r.oid),
      'qualified', (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
                      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.oid = r.oid),
      'columns', (SELECT coalesce(pg_catalog.json_agg(a.attname ORDER BY a.attnum), '[]')
                    FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped),
      'tainted', EXISTS (SELECT 1 FROM tainted t WHERE t.ref = r.oid),
      'sources', (SELECT coalesce(pg_catalog.json_agg(t.source), '[]') FROM tainted t WHERE t.ref = r.oid)
  )), '[]') FROM refs r WHERE r.oid IS NOT NULL),
  'masked_columns', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(mc.oid::int8, mc.attnum)), '[]')
                       FROM masked_cols mc)
)
"#;

impl Masking {
    /// `$2` and `$3` of `CATALOG_SQL`: masked tables and masked `schema.table.column`s.
    pub fn catalog_params(&self) -> (Vec<String>, Vec<String>) {
        let tables = self.masks.keys().cloned().collect();
        let columns = self
            .masks
            .iter()
            .flat_map(|(t, cols)| cols.keys().map(move |c| format!("{t}.{c}")))
            .collect();
        (tables, columns)
    }

    /// The resolution from `RESOLVE_SQL` alone, when it is complete: no name is a view or
    /// materialized view (whose masked reads need the dependency walk) and none has a parent (whose
    /// masks it inherits). `None` means run `CATALOG_SQL`.
    pub fn resolve_named(&self, named: Vec<Named>) -> Result<Option<Resolution>, MaskRefusal> {
        if let Some(n) = named.iter().find(|n| STATISTICS.contains(&n.plain.as_str())) {
            return Err(MaskRefusal(format!(
                "`{}` holds samples of column values, masked columns included",
                n.name
            )));
        }
        if named.iter().any(|n| n.has_parent || n.kind == "v" || n.kind == "m") {
            return Ok(None);
        }
        let mut masked_columns = Vec::new();
        let refs = named
            .into_iter()
            .map(|n| {
                let masks = self.masks.get(&n.plain);
                if let Some(masks) = masks {
                    masked_columns.extend(
                        n.columns
                            .iter()
                            .filter(|(c, _)| masks.contains_key(c))
                            .map(|(_, att)| (n.oid, *att)),
                    );
                }
                Resolved {
                    name: n.name,
                    policy_table: masks.map(|_| n.plain),
                    qualified: Some(n.qualified),
                    columns: n.columns.into_iter().map(|(c, _)| c).collect(),
                    tainted: false,
                    sources: vec![],
                }
            })
            .collect();
        Ok(Some(Resolution { refs, masked_columns }))
    }

    /// The query with every masked table replaced by its masked subquery, or the reason it cannot
    /// run. `Ok(None)` when the query reads nothing masked (it then runs as written).
    pub fn rewrite(&self, refs: References, found: &Resolution) -> Result<Option<String>, MaskRefusal> {
        let by_name: BTreeMap<&str, &Resolved> = found.refs.iter().map(|r| (r.name.as_str(), r)).collect();
        let sensitive = |name: &str| by_name.get(name).is_some_and(|r| r.tainted || r.policy_table.is_some());
        for name in refs.names.keys().chain(refs.table_commands.iter()) {
            let Some(r) = by_name.get(name.as_str()) else { continue };
            if r.tainted {
                return Err(MaskRefusal(format!(
                    "`{name}` is a view that reads masked columns of {}, and masks cannot be applied through a view; \
                     query the table directly so its masks apply",
                    r.sources
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        if let Some(name) = refs.table_commands.iter().find(|n| sensitive(n)) {
            return Err(MaskRefusal(format!(
                "`TABLE {name}` reads masked columns; write `SELECT … FROM {name}` so masks can be applied"
            )));
        }
        if let Some(name) = refs
            .names
            .keys()
            .find(|n| sensitive(n) && refs.cte_names.contains(n.as_str()))
        {
            return Err(MaskRefusal(format!(
                "the CTE name `{name}` is also the name of a table with masked columns; rename the CTE"
            )));
        }
        if !refs.names.keys().any(|n| sensitive(n)) {
            return Ok(None);
        }
        // A plan shows the masking expressions themselves, including the hash salt.
        if matches!(
            refs.statement,
            Statement::Explain { .. } | Statement::ExplainTable { .. }
        ) {
            return Err(MaskRefusal(
                "EXPLAIN of a query over masked columns is not available, since the plan would show how they are masked"
                    .into(),
            ));
        }
        let mut statement = refs.statement;
        let mut rewriter = Rewrite {
            masking: self,
            by_name: &by_name,
            rewritten: BTreeMap::new(),
            error: None,
        };
        let _ = VisitMut::visit(&mut statement, &mut rewriter);
        if let Some(e) = rewriter.error {
            return Err(e);
        }
        // Every occurrence of a masked table must have been replaced; one in any other position
        // (a place sqlparser calls a relation but that is not a FROM item) is refused.
        for (name, count) in &refs.names {
            if sensitive(name) && rewriter.rewritten.get(name.as_str()).copied().unwrap_or(0) < *count {
                return Err(MaskRefusal(format!(
                    "`{name}` has masked columns and is used where masks cannot be applied; read it in a FROM clause"
                )));
            }
        }
        Ok(Some(statement.to_string()))
    }

    /// The masked subquery for one table: every column in order, masked ones replaced.
    fn subquery(&self, r: &Resolved) -> Result<Query, MaskRefusal> {
        let (Some(policy_table), Some(qualified)) = (&r.policy_table, &r.qualified) else {
            return Err(MaskRefusal(format!("`{}` could not be resolved for masking", r.name)));
        };
        let masks = self.masks.get(policy_table);
        let select: Vec<String> = r
            .columns
            .iter()
            .map(|c| {
                let col = quote_ident(c);
                match masks.and_then(|m| m.get(c)) {
                    Some(mask) => format!("{} AS {col}", mask_sql(*mask, &col, &self.salt)),
                    None => col,
                }
            })
            .collect();
        let sql = format!("SELECT {} FROM {qualified}", select.join(", "));
        let parsed = bounded::parse(&sql, CLASSIFY_LIMITS).map_err(|e| {
            MaskRefusal(format!(
                "internal: the masked subquery for `{}` did not parse: {e}",
                r.name
            ))
        })?;
        match parsed.into_iter().next() {
            Some(Statement::Query(q)) => Ok(*q),
            _ => Err(MaskRefusal(format!("internal: no masked subquery for `{}`", r.name))),
        }
    }

    /// True when a result column comes straight from a masked column: the last check before rows
    /// are fetched.
    pub fn leaks(found: &Resolution, table_oid: Option<u32>, column_id: Option<i16>) -> bool {
        match (table_oid, column_id) {
            (Some(oid), Some(att)) if oid != 0 => found.masked_columns.iter().any(|&(o, a)| o == oid && a == att),
            _ => false,
        }
    }
}

struct Rewrite<'a> {
    masking: &'a Masking,
    by_name: &'a BTreeMap<&'a str, &'a Resolved>,
    rewritten: BTreeMap<String, usize>,
    error: Option<MaskRefusal>,
}

impl VisitorMut for Rewrite<'_> {
    type Break = ();

    // After the children: the subquery put in place is not visited again.
    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            with_hints,
            version: None,
            with_ordinality: false,
            partitions,
            json_path: None,
            sample: None,
            index_hints,
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
            return ControlFlow::Continue(());
        }
        let key = name.to_string();
        let Some(resolved) = self.by_name.get(key.as_str()) else {
            return ControlFlow::Continue(());
        };
        if resolved.policy_table.is_none() {
            return ControlFlow::Continue(());
        }
        let subquery = match self.masking.subquery(resolved) {
            Ok(q) => q,
            Err(e) => {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
        };
        // `FROM customers` keeps the name `customers` for column references such as `customers.email`.
        let alias = alias.take().or_else(|| {
            name.0.last().and_then(|part| part.as_ident()).map(|id| TableAlias {
                explicit: true,
                name: id.clone(),
                columns: vec![],
                at: None,
            })
        });
        *factor = TableFactor::Derived {
            lateral: false,
            subquery: Box::new(subquery),
            alias,
            sample: None,
        };
        *self.rewritten.entry(key).or_default() += 1;
        ControlFlow::Continue(())
    }
}

/// The SQL expression for `mask` over the (quoted) column `col`. NULL stays NULL; the result is text.
fn mask_sql(mask: Mask, col: &str, salt: &str) -> String {
    let text = format!("({col})::text");
    match mask {
        Mask::Email => format!(
            "CASE WHEN {col} IS NULL THEN NULL WHEN strpos({text}, '@') > 1 \
             THEN left({text}, 1) || '***' || substr({text}, strpos({text}, '@')) ELSE '***' END"
        ),
        Mask::Redact => format!("CASE WHEN {col} IS NULL THEN NULL ELSE '[redacted]' END"),
        Mask::Hash => format!(
            "CASE WHEN {col} IS NULL THEN NULL ELSE left(encode(sha256(convert_to('{salt}' || {text}, 'UTF8')), 'hex'), 16) END"
        ),
        Mask::Last4 => format!(
            "CASE WHEN {col} IS NULL THEN NULL WHEN length({text}) > 4 THEN '***' || right({text}, 4) ELSE '****' END"
        ),
        Mask::Null => "NULL::text".into(),
    }
}
