//! What the classifier needs from the catalog (`classify::CatalogFacts`) in one query, and a cheap
//! signature of the user-defined objects to tell when to load it again. Both are pgwarden's own fixed
//! text, run in a READ ONLY transaction on a pooled connection that is reset afterwards.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use super::{Database, DbError, session::Session};
use crate::classify::{
    CatalogFacts,
    catalog::{MASK_SCHEMA, UserCast, mask_comment_source},
};

/// The facts and the signature are small catalog reads; anything slower means trouble.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One JSON object: every user-defined function, operator, type and cast (outside `pg_catalog` and
/// `information_schema`; extension objects count as user-defined), relation names of `pg_catalog` and
/// of the search path's schemas, the search path, and the masking views with their comments.
pub const FACTS_SQL: &str = r#"
WITH RECURSIVE
fns AS (
    SELECT p.proname::text AS name,
           n.nspname || '.' || p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')' AS id
      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
),
ops AS (
    SELECT o.oprname::text AS name,
           n.nspname || '.' || o.oprname || '(' || coalesce(pg_catalog.format_type(nullif(o.oprleft, 0), NULL), 'NONE')
             || ', ' || coalesce(pg_catalog.format_type(nullif(o.oprright, 0), NULL), 'NONE') || ')' AS id
      FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
),
types AS (
    SELECT t.typname::text AS name, n.nspname || '.' || t.typname AS id
      FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
),
-- Rewrite rules (views) and row-security policies that use user functions, operators or types,
-- then views over those relations, transitively.
code(rel, via) AS (
    SELECT coalesce(r.ev_class, pol.polrelid),
           CASE d.refclassid WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN d.refobjid::pg_catalog.regprocedure::text
                             WHEN 'pg_catalog.pg_operator'::pg_catalog.regclass THEN d.refobjid::pg_catalog.regoperator::text
                             ELSE d.refobjid::pg_catalog.regtype::text END
      FROM pg_catalog.pg_depend d
      LEFT JOIN pg_catalog.pg_rewrite r ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND r.oid = d.objid
      LEFT JOIN pg_catalog.pg_policy pol ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND pol.oid = d.objid
     WHERE d.classid IN ('pg_catalog.pg_rewrite'::pg_catalog.regclass, 'pg_catalog.pg_policy'::pg_catalog.regclass)
       AND d.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass,
                            'pg_catalog.pg_type'::pg_catalog.regclass)
       AND d.refobjid >= 16384
    UNION
    -- Tables with a column of a domain whose CHECK calls user code: any value converted to the
    -- table's row type (`COALESCE(t, '(1,2)')`, `jsonb_populate_record(t, …)`) runs that CHECK.
    SELECT a.attrelid, 'column ' || a.attname || ' of the domain ' || t.oid::pg_catalog.regtype::text
      FROM pg_catalog.pg_attribute a
      JOIN pg_catalog.pg_type col ON col.oid = a.atttypid
      JOIN pg_catalog.pg_type t ON t.oid IN (col.oid, col.typelem, col.typbasetype)
     WHERE a.attrelid >= 16384 AND a.attnum > 0 AND NOT a.attisdropped AND t.typtype = 'd'
       AND EXISTS (SELECT FROM pg_catalog.pg_constraint k
                     JOIN pg_catalog.pg_depend kd ON kd.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
                                                 AND kd.objid = k.oid
                    WHERE k.contypid = t.oid AND kd.refobjid >= 16384
                      AND kd.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass,
                                            'pg_catalog.pg_operator'::pg_catalog.regclass))
    UNION
    SELECT r.ev_class, c.via
      FROM code c
      JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = c.rel
                                 AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
      JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
     WHERE r.ev_class <> c.rel
),
rels AS (
    SELECT n.nspname::text AS schema, c.relname::text AS name
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
       AND (n.nspname = 'pg_catalog' OR n.nspname = ANY (pg_catalog.current_schemas(false)))
)
SELECT pg_catalog.json_build_object(
  'functions', (SELECT coalesce(pg_catalog.json_object_agg(name, ids), '{}')
                  FROM (SELECT name, pg_catalog.json_agg(id ORDER BY id) AS ids FROM fns GROUP BY name) f),
  'operators', (SELECT coalesce(pg_catalog.json_object_agg(name, ids), '{}')
                  FROM (SELECT name, pg_catalog.json_agg(id ORDER BY id) AS ids FROM ops GROUP BY name) o),
  'types', (SELECT coalesce(pg_catalog.json_object_agg(name, ids), '{}')
              FROM (SELECT name, pg_catalog.json_agg(id ORDER BY id) AS ids FROM types GROUP BY name) t),
  'casts', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
                'source', s.typname, 'target', t.typname,
                'function', CASE c.castmethod WHEN 'f' THEN c.castfunc::pg_catalog.regprocedure::text
                                              WHEN 'i' THEN 'WITH INOUT' ELSE 'WITHOUT FUNCTION' END)), '[]')
              FROM pg_catalog.pg_cast c
              JOIN pg_catalog.pg_type s ON s.oid = c.castsource
              JOIN pg_catalog.pg_type t ON t.oid = c.casttarget
             WHERE c.oid >= 16384),
  'relations', (SELECT coalesce(pg_catalog.json_object_agg(schema, names), '{}')
                  FROM (SELECT schema, pg_catalog.json_agg(name) AS names FROM rels GROUP BY schema) r),
  'code_relations', (SELECT coalesce(pg_catalog.json_object_agg(rel, vias), '{}')
                       FROM (SELECT n.nspname || '.' || cl.relname AS rel, pg_catalog.json_agg(DISTINCT c.via) AS vias
                               FROM code c JOIN pg_catalog.pg_class cl ON cl.oid = c.rel
                               JOIN pg_catalog.pg_namespace n ON n.oid = cl.relnamespace
                              GROUP BY 1) x),
  'hijacks', (SELECT coalesce(pg_catalog.json_agg(h.x ORDER BY h.x), '[]') FROM (
      SELECT 'operator ' || o.oid::pg_catalog.regoperator::text AS x
        FROM pg_catalog.pg_operator o
       WHERE o.oid >= 16384
         AND o.oprname IN ('=', '<>', '<', '>', '<=', '>=', '~~', '!~~', '~~*', '!~~*', '~', '!~')
         AND (o.oprleft = 0 OR (SELECT t.typnamespace FROM pg_catalog.pg_type t WHERE t.oid = o.oprleft)
                               = 'pg_catalog'::pg_catalog.regnamespace)
         AND (o.oprright = 0 OR (SELECT t.typnamespace FROM pg_catalog.pg_type t WHERE t.oid = o.oprright)
                                = 'pg_catalog'::pg_catalog.regnamespace)
      UNION ALL
      -- A default sort or hash order for a built-in type: DISTINCT, ORDER BY, UNION, GROUP BY,
      -- GREATEST and array_position find its operators without naming them.
      SELECT 'default ' || am.amname || ' operator class ' || oc.opcname || ' for ' || oc.opcintype::pg_catalog.regtype::text
        FROM pg_catalog.pg_opclass oc JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod
       WHERE oc.oid >= 16384 AND oc.opcdefault AND am.amname IN ('btree', 'hash')
         AND (SELECT t.typnamespace FROM pg_catalog.pg_type t WHERE t.oid = oc.opcintype) = 'pg_catalog'::pg_catalog.regnamespace
      UNION ALL
      SELECT 'implicit cast from ' || c.castsource::pg_catalog.regtype::text || ' to '
             || c.casttarget::pg_catalog.regtype::text
        FROM pg_catalog.pg_cast c
       WHERE c.oid >= 16384 AND c.castcontext IN ('i', 'a') AND c.castmethod IN ('f', 'i')
         AND (SELECT t.typnamespace FROM pg_catalog.pg_type t WHERE t.oid = c.castsource) = 'pg_catalog'::pg_catalog.regnamespace
         AND (SELECT t.typnamespace FROM pg_catalog.pg_type t WHERE t.oid = c.casttarget) = 'pg_catalog'::pg_catalog.regnamespace
  ) h),
  'search_path', pg_catalog.to_json(pg_catalog.current_schemas(false)),
  'mask_views', (SELECT coalesce(pg_catalog.json_object_agg(c.relname, pg_catalog.obj_description(c.oid, 'pg_class')), '{}')
                   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'pgwarden_mask' AND c.relkind IN ('v', 'm'))
)
"#;

/// Changes whenever a user-defined object is created, altered, renamed or dropped: per catalog, the
/// count and the sum of `oid + xmin` of rows with `oid >= 16384` (objects created after initdb). Each
/// part is a range scan of the catalog's oid index (pg_description's (objoid, …) index), so its cost
/// grows with user objects only.
pub const SIGNATURE_SQL: &str = r#"
SELECT concat_ws(':',
  (SELECT count(*) || '/' || coalesce(sum(oid::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_proc WHERE oid >= 16384),
  (SELECT count(*) || '/' || coalesce(sum(oid::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_type WHERE oid >= 16384),
  (SELECT count(*) || '/' || coalesce(sum(oid::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_operator WHERE oid >= 16384),
  (SELECT count(*) || '/' || coalesce(sum(oid::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_cast WHERE oid >= 16384),
  (SELECT count(*) || '/' || coalesce(sum(oid::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_opclass WHERE oid >= 16384),
  (SELECT count(*) || '/' || coalesce(sum(oid::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_constraint WHERE oid >= 16384),
  (SELECT count(*) || '/' || coalesce(sum(oid::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_class WHERE oid >= 16384),
  (SELECT count(*) || '/' || coalesce(sum(oid::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_namespace WHERE oid >= 16384),
  (SELECT count(*) || '/' || coalesce(sum(oid::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_rewrite WHERE oid >= 16384),
  (SELECT count(*) || '/' || coalesce(sum(oid::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_policy WHERE oid >= 16384),
  (SELECT count(*) || '/' || coalesce(sum(objoid::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_description
    WHERE objoid >= 16384 AND classoid = 'pg_catalog.pg_class'::pg_catalog.regclass),
  -- Column privileges and role memberships: what the mask check (`masking::verify`) depends on.
  (SELECT count(*) || '/' || coalesce(sum(attrelid::int8 + attnum + xmin::text::int8), 0) FROM pg_catalog.pg_attribute
    WHERE attrelid >= 16384 AND attacl IS NOT NULL),
  (SELECT count(*) || '/' || coalesce(sum(roleid::int8 + member::int8 + xmin::text::int8), 0) FROM pg_catalog.pg_auth_members),
  pg_catalog.array_to_string(pg_catalog.current_schemas(false), ',')
)
"#;

/// `FACTS_SQL`'s answer before the masking views' comments are read.
#[derive(Deserialize)]
struct Raw {
    #[serde(flatten)]
    facts: CatalogFacts,
    #[serde(default, rename = "casts")]
    casts: Vec<UserCast>,
    #[serde(default, rename = "mask_views")]
    mask_comments: BTreeMap<String, Option<String>>,
}

impl Database {
    /// What the classifier should know about this database's user-defined objects and names.
    pub async fn catalog_facts(&self) -> Result<CatalogFacts, DbError> {
        let json = self.catalog_value(FACTS_SQL).await?;
        let raw: Raw = serde_json::from_value(json)
            .map_err(|e| DbError::Client(format!("the catalog facts were unreadable: {e}")))?;
        let mut facts = raw.facts;
        facts.casts = raw.casts;
        // A view without the comment stands for itself (policy sees `pgwarden_mask.x`).
        facts.mask_views = raw
            .mask_comments
            .into_iter()
            .filter_map(|(view, comment)| {
                let source = comment.as_deref().and_then(mask_comment_source)?;
                Some((view, source))
            })
            .collect();
        tracing::debug!(
            functions = facts.functions.len(),
            operators = facts.operators.len(),
            types = facts.types.len(),
            casts = facts.casts.len(),
            mask_views = facts.mask_views.len(),
            "loaded catalog facts (mask schema `{MASK_SCHEMA}`)"
        );
        Ok(facts)
    }

    /// A value that changes when the user-defined objects or the search path change.
    pub async fn catalog_signature(&self) -> Result<String, DbError> {
        let value = self.catalog_value(SIGNATURE_SQL).await?;
        Ok(value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string()))
    }

    async fn catalog_value(&self, sql: &str) -> Result<serde_json::Value, DbError> {
        let mut session = Session::open(self).await?;
        let ct = tokio_util::sync::CancellationToken::new();
        // Bounded on the client too: a silent server must not hold the watcher (and a pool slot).
        let rows = session
            .guarded(&ct, TIMEOUT + Duration::from_secs(2), async |s: &mut Session| {
                let tx = s.begin_read(TIMEOUT).await?;
                tx.query(sql, &[]).await.map_err(DbError::from_pg)
            })
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| DbError::Client("a catalog query returned no row".into()))?;
        if let Ok(json) = row.try_get::<_, serde_json::Value>(0) {
            return Ok(json);
        }
        let text: String = row.try_get(0).map_err(DbError::from_pg)?;
        Ok(serde_json::Value::String(text))
    }
}
