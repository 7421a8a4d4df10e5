//! Whether Postgres enforces a mask plan for a role, asked of Postgres itself
//! (`has_column_privilege` and friends): at `serve` start-up as the agent, and after `setup`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{MASK_SCHEMA, MaskError, MaskPlan};
use crate::{db::DbError, policy::Mask};

/// Everything wrong with how the database enforces the policy's masks, for the start-up refusal.
#[derive(Debug, Default)]
pub struct Enforcement {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// What the role `$3` (the agent's; `current_user` at start-up) can do, checked by Postgres itself.
const PRIVILEGES_SQL: &str = r#"
WITH r AS (SELECT oid, rolname, rolsuper, rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = $3::text)
SELECT pg_catalog.json_build_object(
  'user', $3::text,
  'exists', EXISTS (SELECT FROM r),
  'superuser', coalesce((SELECT rolsuper FROM r), false),
  'bypassrls', coalesce((SELECT rolbypassrls FROM r), false),
  'member_of', (SELECT coalesce(pg_catalog.json_agg(g.rolname ORDER BY g.rolname), '[]')
                  FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
                 WHERE m.member = (SELECT oid FROM r)),
  'readable_columns', (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(c.oid::int8, c.attnum)), '[]')
                         FROM pg_catalog.json_array_elements($1::text::json) AS e
                         CROSS JOIN LATERAL (SELECT (e->>0)::oid AS oid, (e->>1)::int2 AS attnum) c
                        WHERE EXISTS (SELECT FROM r) AND pg_catalog.has_column_privilege($3::text, c.oid, c.attnum, 'SELECT')),
  'callable_definers', (SELECT coalesce(pg_catalog.json_agg(f::int8), '[]')
                         FROM pg_catalog.json_array_elements_text($4::text::json) AS f
                        WHERE EXISTS (SELECT FROM r) AND pg_catalog.has_function_privilege($3::text, f::oid, 'EXECUTE')),
  'readable_views', (SELECT coalesce(pg_catalog.json_agg(v::int8), '[]')
                       FROM pg_catalog.json_array_elements_text($2::text::json) AS v
                      WHERE EXISTS (SELECT FROM r) AND pg_catalog.has_any_column_privilege($3::text, v::oid, 'SELECT')),
  'fingerprint', pg_catalog.obj_description(pg_catalog.to_regnamespace('pgwarden_mask'), 'pg_namespace'),
  'search_path', (SELECT pg_catalog.array_to_string(s.setconfig, ',') FROM pg_catalog.pg_db_role_setting s
                   WHERE s.setrole = (SELECT oid FROM r)
                     AND s.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())),
  'first_schema', (pg_catalog.current_schemas(false))[1]
)::text
"#;

#[derive(Deserialize)]
struct Privileges {
    user: String,
    exists: bool,
    superuser: bool,
    bypassrls: bool,
    member_of: Vec<String>,
    readable_columns: Vec<(u32, i16)>,
    readable_views: Vec<u32>,
    callable_definers: Vec<u32>,
    fingerprint: Option<String>,
    search_path: Option<String>,
    first_schema: Option<String>,
}

/// Checks that Postgres enforces `plan` for `role` (`None`: the connected role): the role is no
/// superuser, does not bypass row security, belongs to no role it could `SET ROLE` to, cannot read
/// any masked column or any view over one, and the masking views are the ones this policy needs.
pub async fn verify(
    client: &impl tokio_postgres::GenericClient,
    plan: &MaskPlan,
    role: Option<&str>,
) -> Result<Enforcement, MaskError> {
    let role_is_current = role.is_none();
    let role = match role {
        Some(r) => r.to_string(),
        None => client
            .query_one("SELECT current_user::text", &[])
            .await
            .map_err(DbError::from_pg)?
            .try_get(0)
            .map_err(|e| MaskError::Catalog(e.to_string()))?,
    };
    let columns: Vec<(u32, i16)> = plan
        .tables
        .iter()
        .flat_map(|t| {
            t.columns
                .iter()
                .filter(|c| c.mask.is_some())
                .map(move |c| (t.oid, c.attnum))
        })
        .collect();
    let views: Vec<String> = plan.tainted.iter().map(|v| v.oid.to_string()).collect();
    let cols = serde_json::to_string(&columns).map_err(|e| MaskError::Catalog(e.to_string()))?;
    let views_json = serde_json::to_string(&views).map_err(|e| MaskError::Catalog(e.to_string()))?;
    let definers: Vec<String> = plan.definers.iter().map(|f| f.oid.to_string()).collect();
    let definers_json = serde_json::to_string(&definers).map_err(|e| MaskError::Catalog(e.to_string()))?;
    let row = client
        .query_one(PRIVILEGES_SQL, &[&cols, &views_json, &role, &definers_json])
        .await
        .map_err(DbError::from_pg)?;
    let json: String = row.try_get(0).map_err(|e| MaskError::Catalog(e.to_string()))?;
    let p: Privileges = serde_json::from_str(&json).map_err(|e| MaskError::Catalog(e.to_string()))?;
    let mut out = Enforcement::default();
    let who = format!("`{}`", p.user);
    if !p.exists {
        out.problems.push(format!("the role {who} does not exist"));
        return Ok(out);
    }
    if p.superuser {
        out.problems
            .push(format!("{who} is a superuser, and no privilege holds for a superuser"));
    }
    if p.bypassrls {
        out.problems.push(format!("{who} bypasses row-level security"));
    }
    if !p.member_of.is_empty() {
        out.problems.push(format!(
            "{who} is a member of {}, so `SET ROLE` could lift the masks",
            p.member_of
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let name_of = |oid: u32, attnum: i16| {
        plan.tables
            .iter()
            .find(|t| t.oid == oid)
            .map(|t| {
                let col = t
                    .columns
                    .iter()
                    .find(|c| c.attnum == attnum)
                    .map(|c| c.name.as_str())
                    .unwrap_or("?");
                format!("`{}.{}.{col}`", t.schema, t.name)
            })
            .unwrap_or_default()
    };
    let readable: BTreeSet<String> = p.readable_columns.iter().map(|&(o, a)| name_of(o, a)).collect();
    if !readable.is_empty() && !p.superuser {
        out.problems.push(format!(
            "{who} can read the masked column{} {} directly",
            if readable.len() == 1 { "" } else { "s" },
            readable.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let views: Vec<String> = plan
        .tainted
        .iter()
        .filter(|v| p.readable_views.contains(&v.oid))
        .map(|v| format!("`{}.{}`", v.schema, v.name))
        .collect();
    if !views.is_empty() && !p.superuser {
        out.problems.push(format!(
            "{who} can read {}, which read{} masked columns",
            views.join(", "),
            if views.len() == 1 { "s" } else { "" }
        ));
    }
    let callable: Vec<String> = plan
        .definers
        .iter()
        .filter(|f| p.callable_definers.contains(&f.oid))
        .map(|f| format!("`{}`", f.signature))
        .collect();
    if !callable.is_empty() && !p.superuser {
        out.problems.push(format!(
            "{who} can call the SECURITY DEFINER function{} {}, whose owner reads masked columns",
            if callable.len() == 1 { "" } else { "s" },
            callable.join(", ")
        ));
    }
    out.problems.extend(plan.unsupported());
    let expected = plan.stamp();
    match p.fingerprint {
        None => out.problems.push(format!("the masking schema `{MASK_SCHEMA}` does not exist")),
        Some(f) if f != expected => out.problems.push(format!(
            "the masking views in `{MASK_SCHEMA}` do not match this policy and these tables (masks, columns or partitions changed since setup)"
        )),
        Some(_) => {}
    }
    let starts_with_masks = match (&p.search_path, role_is_current) {
        (_, true) => p.first_schema.as_deref() == Some(MASK_SCHEMA),
        (Some(s), false) => s.starts_with(&format!("search_path={MASK_SCHEMA}")),
        (None, false) => false,
    };
    if !starts_with_masks && !plan.tables.is_empty() {
        out.warnings.push(format!(
            "{who}'s search_path does not start with `{MASK_SCHEMA}`, so unqualified names of masked tables fail \
             with a permission error instead of reading the masking view"
        ));
    }
    if !plan.missing.is_empty() {
        out.warnings.push(format!(
            "the policy masks columns of {}, which do not exist in this database",
            plan.missing
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(out)
}

impl crate::db::Database {
    /// Refuses, with what to run, unless Postgres enforces `masks` for the agent's login. Returns
    /// the warnings and the number of masked relations. Nothing to check without masks.
    pub async fn ensure_masks_enforced(
        &self,
        masks: &BTreeMap<String, BTreeMap<String, Mask>>,
        policy_label: &str,
    ) -> Result<(Vec<String>, usize), MaskError> {
        if masks.is_empty() {
            return Ok((vec![], 0));
        }
        let client = self.agent_client().await?;
        let plan = MaskPlan::discover(&**client, masks).await?;
        let enforcement = verify(&**client, &plan, None).await?;
        if !enforcement.problems.is_empty() {
            return Err(MaskError::Setup(format!(
                "the policy masks columns, but {} does not enforce them: {}.\nRun `pgwarden setup` once with a \
                 privileged login (`PGWARDEN_SETUP_DATABASE_URL=postgres://owner@host/db pgwarden setup --policy \
                 {policy_label} --agent-role ROLE`; `--print-sql` shows the SQL first), then serve with DATABASE_URL \
                 logging in as that role",
                self.display,
                enforcement.problems.join("; ")
            )));
        }
        Ok((enforcement.warnings, plan.tables.len()))
    }
}
