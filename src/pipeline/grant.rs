//! `grant` through the pipeline: arguments checked, every name resolved in the catalog, the
//! statement built from quoted identifiers, decided as `privilege`/`critical`, shown to a person with
//! the role's privileges before → after, run exactly as shown, and audited.

use tokio_util::sync::CancellationToken;

use super::{
    ToolError,
    step::{Control, Estimate, ForReview, OnBehalf, Step},
};
use crate::{
    approval::Approved,
    audit::OutcomeRecord,
    classify::{Assessment, Category, Risk, StatementAssessment},
    db::{
        grant::{Grantee, LookupError},
        write::{WriteError, WriteOptions},
    },
    grant::{self, GrantAction, ObjectType},
    policy::Decision,
    tools::grant::{GrantArgs, GrantOutput, ObjectPrivileges},
    trail::Trail,
};

pub(super) struct Grant<'a>(pub &'a GrantArgs);

pub(super) struct Plan {
    statement: String,
    grantee: Grantee,
    objects: Vec<crate::db::grant::GrantObject>,
    privileges: Vec<String>,
    /// What the role holds now, for the reviewer and the record.
    before: Vec<(String, Vec<String>)>,
    warnings: Vec<String>,
}

impl Step for Grant<'_> {
    type Plan = Plan;
    type Output = GrantOutput;

    fn recorded(&self) -> serde_json::Value {
        let args = self.0;
        serde_json::json!({
            "action": args.action,
            "privileges": args.privileges,
            "object_type": args.object_type,
            "objects": args.objects,
            "role": args.role,
            "with_grant_option": args.with_grant_option,
        })
    }

    async fn assess(
        &self,
        p: &OnBehalf<'_>,
        _: &mut Trail,
        ct: &CancellationToken,
    ) -> Result<(Assessment, Plan), ToolError> {
        let args = self.0;
        if args.intent.trim().is_empty() {
            return Err(ToolError::BadArguments(
                "`intent` is required for privilege changes: say in a sentence why the role needs this".into(),
            ));
        }
        let privileges = grant::privileges(args.object_type, &args.privileges).map_err(ToolError::BadArguments)?;
        let timeout = p.limits.statement_timeout;
        let (grantee, objects) =
            p.db.resolve_grant(args.object_type, &args.objects, args.role.trim(), timeout, ct)
                .await
                .map_err(|e| match e {
                    LookupError::NotFound(m) => ToolError::BadArguments(m),
                    LookupError::Db(d) => ToolError::Db(d),
                })?;
        // Databases are the cluster's objects: granting on another one would change it from here.
        if args.object_type == ObjectType::Database
            && let Some(other) = objects.iter().find(|o| !p.may_name_database(&o.display))
        {
            return Err(ToolError::Refused(format!(
                "the grant is on database `{}`, but a call reaches only the database it runs on; call `grant` \
                 with that database's `database` argument",
                other.display
            )));
        }
        let with_grant_option = args.with_grant_option.unwrap_or(false);
        let object_sql: Vec<String> = objects.iter().map(|o| o.sql.clone()).collect();
        let statement = grant::statement(
            args.action,
            &privileges,
            args.object_type,
            &object_sql,
            &grantee.sql(),
            with_grant_option,
        );
        let verb = match args.action {
            GrantAction::Grant => "grants",
            GrantAction::Revoke => "revokes",
        };
        let shown: Vec<String> = objects.iter().map(|o| o.display.clone()).collect();
        let mut reasons = vec![format!(
            "{verb} {} on {} {} {} {}",
            privileges.join(", "),
            args.object_type.as_str().replace('_', " "),
            shown.join(", "),
            if args.action == GrantAction::Grant {
                "to"
            } else {
                "from"
            },
            grantee.display()
        )];
        let mut warnings = Vec::new();
        if grantee == Grantee::Public {
            warnings.push("⚠ PUBLIC: this applies to EVERY role, including ones created later".to_string());
        }
        if privileges == ["ALL"] {
            warnings.push("⚠ ALL PRIVILEGES: every privilege on these objects".to_string());
        }
        if with_grant_option && args.action == GrantAction::Grant {
            warnings.push("⚠ WITH GRANT OPTION: the role may pass these privileges on to others".to_string());
        }
        reasons.extend(warnings.iter().cloned());
        let tables: Vec<String> = match args.object_type {
            ObjectType::Table | ObjectType::Sequence => shown.clone(),
            _ => vec![],
        };
        let assessment = Assessment {
            statements: vec![StatementAssessment {
                kind: statement.split_whitespace().next().unwrap_or("GRANT").to_string(),
                category: Category::Privilege,
                risk: Risk::Critical,
                reasons: reasons.clone(),
            }],
            categories: vec![Category::Privilege],
            risk: Risk::Critical,
            tables,
            cte_shadowed: vec![],
            functions: vec![],
            databases: vec![],
            reasons,
        };
        let plan = Plan {
            statement,
            grantee,
            objects,
            privileges,
            before: vec![],
            warnings,
        };
        Ok((assessment, plan))
    }

    async fn review(
        &self,
        p: &OnBehalf<'_>,
        _: &Assessment,
        plan: &mut Plan,
        _: &Decision,
        trail: &mut Trail,
        ct: &CancellationToken,
    ) -> Result<ForReview, ToolError> {
        let args = self.0;
        let timeout = p.limits.statement_timeout;
        plan.before =
            p.db.privileges_held(&plan.grantee, args.object_type, &plan.objects, timeout, ct)
                .await?;
        trail.details(serde_json::json!({ "statement": plan.statement, "before": privileges_json(&plan.before) }));
        let mut details = plan.warnings.clone();
        details.push(format!("Statement: {}", plan.statement));
        details.push(format!(
            "Role: {} — privileges now (before → after):",
            plan.grantee.display()
        ));
        for (object, held) in &plan.before {
            let after: Vec<String> = expected_after(args.action, &plan.privileges, args.object_type, held);
            details.push(format!(
                "  {object}: {} → {}",
                list(held),
                if args.object_type == ObjectType::AllTablesInSchema {
                    format!("{} on every table in the schema", plan.privileges.join(", "))
                } else {
                    list(&after)
                }
            ));
        }
        Ok(ForReview {
            bound: self.recorded(),
            details,
            timeout,
            estimate: Estimate::None,
        })
    }

    async fn execute(
        &self,
        p: &OnBehalf<'_>,
        _: &Assessment,
        plan: Plan,
        _: &Decision,
        approved: Approved,
        trail: &mut Trail,
        ctl: &Control,
    ) -> Result<GrantOutput, ToolError> {
        let (ct, timeout) = (&ctl.cancel, p.limits.statement_timeout);
        let opts = WriteOptions {
            statement_timeout: timeout,
            dry_run: approved.dry_run,
            max_rows_affected: None,
            returning_rows: 0,
            returning_bytes: 0,
        };
        let result = p.db.write(&plan.statement, opts, ct).await.map_err(|e| match e {
            WriteError::Db(d) => ToolError::Db(d),
            e @ WriteError::CommitUnknown { .. } => ToolError::CommitUnknown(e.to_string()),
            other => ToolError::RolledBack(other.to_string()),
        })?;
        let after =
            p.db.privileges_held(&plan.grantee, self.0.object_type, &plan.objects, timeout, ct)
                .await?;
        trail.details_after(serde_json::json!({ "after": privileges_json(&after), "committed": result.committed }));
        Ok(GrantOutput {
            statement: plan.statement,
            committed: result.committed,
            privileges_after: after
                .into_iter()
                .map(|(object, privileges)| ObjectPrivileges { object, privileges })
                .collect(),
        })
    }

    fn outcome(_: &GrantOutput) -> OutcomeRecord {
        OutcomeRecord::default()
    }
}

fn privileges_json(v: &[(String, Vec<String>)]) -> serde_json::Value {
    v.iter()
        .map(|(o, p)| (o.clone(), serde_json::json!(p)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn list(v: &[String]) -> String {
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

/// What the role should hold afterwards, for the prompt (inherited privileges may remain after a
/// revoke; the result reports what it really holds).
fn expected_after(action: GrantAction, asked: &[String], t: ObjectType, held: &[String]) -> Vec<String> {
    let asked: Vec<String> = if asked == ["ALL"] {
        t.privileges().iter().map(|p| p.to_string()).collect()
    } else {
        asked.to_vec()
    };
    t.privileges()
        .iter()
        .map(|p| p.to_string())
        .filter(|p| match action {
            GrantAction::Grant => held.contains(p) || asked.contains(p),
            GrantAction::Revoke => held.contains(p) && !asked.contains(p),
        })
        .collect()
}
