//! `pgwarden setup`: makes a database enforce what the policy promises, run once by an operator
//! with a privileged login (and again when the policy's masks or the tables change). It creates
//! or checks the agent role, the masking views and the grants (see `db::masking`), in one
//! transaction, and checks the result with Postgres's own privilege functions.

use std::collections::BTreeMap;

use super::{
    DbError, Target,
    connect::connect_pool,
    masking::{Enforcement, MASK_SCHEMA, MaskError, MaskPlan, PRIVATE_SCHEMA, RoleAction, verify},
};
use crate::policy::Mask;

/// What to set up.
#[derive(Debug, Clone)]
pub struct SetupRequest {
    /// The role pgwarden logs in as for the agent's SQL. Defaults to `pgwarden_agent`.
    pub agent_role: String,
    /// Schemas the agent may read; empty means every schema but the system ones.
    pub schemas: Vec<String>,
    /// Only compute the SQL; change nothing.
    pub print_only: bool,
}

/// What setup did (or would do).
#[derive(Debug)]
pub struct SetupReport {
    pub sql: Vec<String>,
    pub applied: bool,
    pub enforcement: Option<Enforcement>,
}

/// Schemas that are never granted: the system's and pgwarden's own.
const OWN_SCHEMAS: &str = "SELECT nspname::text FROM pg_catalog.pg_namespace \
     WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'pgwarden_mask', 'pgwarden_private') \
     ORDER BY nspname";

/// True when `target`'s masking schema was set up for exactly `masks` (as the tables are now).
pub async fn is_current(target: &Target, masks: &BTreeMap<String, BTreeMap<String, Mask>>) -> Result<bool, MaskError> {
    let pool = connect_pool(target, 1)
        .await
        .map_err(|e| MaskError::Setup(e.to_string()))?;
    let client = pool.get().await.map_err(DbError::pool)?;
    let plan = MaskPlan::discover(&**client, masks).await?;
    plan.is_installed(&**client).await
}

/// Runs setup against `target` (a privileged login) for `masks`.
pub async fn run(
    target: &Target,
    masks: &BTreeMap<String, BTreeMap<String, Mask>>,
    request: &SetupRequest,
) -> Result<SetupReport, MaskError> {
    let pool = connect_pool(target, 1)
        .await
        .map_err(|e| MaskError::Setup(e.to_string()))?;
    let mut client = pool.get().await.map_err(DbError::pool)?;
    let tx = client.transaction().await.map_err(DbError::from_pg)?;
    let row = tx
        .query_one(
            "SELECT current_user::text, current_database()::text, \
             EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1::text), \
             EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1::text AND (rolsuper OR rolcreatedb \
                     OR rolcreaterole OR rolreplication OR rolbypassrls))",
            &[&request.agent_role],
        )
        .await
        .map_err(DbError::from_pg)?;
    let (me, database, role_exists, role_too_strong): (String, String, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if me == request.agent_role {
        return Err(MaskError::Setup(format!(
            "setup is logged in as `{me}`, the agent role itself; run it with a privileged login (the tables' owner \
             or a superuser) and name the agent role with `--agent-role`"
        )));
    }
    if request.agent_role.trim().is_empty() {
        return Err(MaskError::Setup(
            "`--agent-role` is empty; name the role pgwarden logs in as".into(),
        ));
    }
    let schemas = if request.schemas.is_empty() {
        tx.query(OWN_SCHEMAS, &[])
            .await
            .map_err(DbError::from_pg)?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        request.schemas.clone()
    };
    if let Some(bad) = schemas.iter().find(|s| *s == MASK_SCHEMA || *s == PRIVATE_SCHEMA) {
        return Err(MaskError::Setup(format!(
            "`{bad}` is pgwarden's own schema; grant other schemas"
        )));
    }
    let plan = MaskPlan::discover(&*tx, masks).await?;
    if let Some(problem) = plan.unsupported().into_iter().next() {
        return Err(MaskError::Setup(problem));
    }
    let role = match (role_exists, role_too_strong) {
        (false, _) => RoleAction::Create,
        (true, true) => RoleAction::Restrict,
        (true, false) => RoleAction::Keep,
    };
    let sql = plan.setup_sql(&request.agent_role, &database, role, &schemas);
    if request.print_only {
        return Ok(SetupReport {
            sql,
            applied: false,
            enforcement: None,
        });
    }
    for statement in &sql {
        tx.batch_execute(statement).await.map_err(|e| {
            let e = DbError::from_pg(e);
            MaskError::Setup(format!("`{statement}` failed: {e}"))
        })?;
    }
    // Checked as Postgres sees it now, before anything is committed.
    let plan = MaskPlan::discover(&*tx, masks).await?;
    let enforcement = verify(&*tx, &plan, Some(&request.agent_role)).await?;
    if !enforcement.problems.is_empty() {
        return Err(MaskError::Setup(format!(
            "after setup, masks would still not be enforced: {}; nothing was changed",
            enforcement.problems.join("; ")
        )));
    }
    tx.commit().await.map_err(DbError::from_pg)?;
    Ok(SetupReport {
        sql,
        applied: true,
        enforcement: Some(enforcement),
    })
}
