//! `export` through the pipeline: the path is checked before anything runs, the SQL must be a read,
//! the call is decided as category `export` with the read's tables and tags, a person approves it
//! (by default), the decision is on disk, then rows stream to a temporary file renamed into place.

use std::{collections::BTreeSet, time::Instant};

use tokio_util::sync::CancellationToken;

use super::{Action, Ask, Outcome, Pipeline, ToolError};
use crate::{
    approval::Route,
    classify::{self, Category},
    db::export::{ExportFormat, ExportSpec},
    tools::export::{ExportArgs, ExportOutput},
    trail::Trail,
};

impl Pipeline {
    pub async fn export(
        &self,
        action: &Action,
        args: &ExportArgs,
        route: &Route,
        progress: &(dyn Fn(u64) + Send + Sync),
        ct: &CancellationToken,
    ) -> Result<Outcome<ExportOutput>, ToolError> {
        let extra = serde_json::json!({
            "path": args.path,
            "format": args.format.unwrap_or_default(),
            "header": args.header,
            "overwrite": args.overwrite,
        });
        let mut trail = Trail::new(action, extra.clone());
        let result = self
            .run_export(action, args, &extra, route, progress, ct, &mut trail)
            .await;
        let outcome = trail.export_outcome(&result);
        self.finish(&trail, outcome, result)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_export(
        &self,
        action: &Action,
        args: &ExportArgs,
        extra: &serde_json::Value,
        route: &Route,
        progress: &(dyn Fn(u64) + Send + Sync),
        ct: &CancellationToken,
        trail: &mut Trail,
    ) -> Result<Outcome<ExportOutput>, ToolError> {
        let started = Instant::now();
        let sql = args.sql.trim();
        if sql.is_empty() {
            return Err(ToolError::BadArguments("`sql` is empty; pass one SELECT".into()));
        }
        if args.intent.trim().is_empty() {
            return Err(ToolError::BadArguments(
                "`intent` is required for exports: say in a sentence why these rows need to leave the database".into(),
            ));
        }
        let overwrite = args.overwrite.unwrap_or(false);
        let root = self.export_root.as_ref().map_err(|e| ToolError::Refused(e.clone()))?;
        let target = root
            .resolve(&args.path, overwrite)
            .map_err(|e| ToolError::BadArguments(e.to_string()))?;
        self.masks_hold()?;
        let read = classify::classify_with(sql, &self.catalog_facts());
        if read.statements.len() != 1 || !read.is_read() {
            trail.assessed(&read);
            return Err(ToolError::Refused(format!(
                "`export` only exports one plain read, and this is {}",
                super::describe(&read)
            )));
        }
        // Policy sees an export: the read's tables and tags, category `export`.
        let mut assessment = read.clone();
        let categories: BTreeSet<Category> = assessment
            .categories
            .iter()
            .copied()
            .chain([Category::Export])
            .collect();
        assessment.categories = categories.into_iter().collect();
        assessment.risk = assessment.risk.max(Category::Export.risk());
        assessment
            .reasons
            .push("writes query results to a file outside the database".into());
        let decision = self.evaluate(action, &assessment, trail);
        let decision = self.decide(action, &assessment, decision, true)?;
        let timeout = decision.statement_timeout.unwrap_or(self.limits.statement_timeout);
        let format = args.format.unwrap_or_default();
        let header = args.header.unwrap_or(true) && format == ExportFormat::Csv;

        // Described (and checked against masks) before anyone is asked.
        let columns = self.db.describe_query(sql, timeout, ct).await?;
        if decision.effect == crate::policy::Effect::Approve {
            let masks: Vec<String> = decision
                .masks
                .iter()
                .map(|m| format!("{} ({})", m.column, m.mask.as_str()))
                .collect();
            let mut details = vec![
                format!(
                    "Target: {}{} ({:?}{})",
                    target.path.display(),
                    if overwrite {
                        " — REPLACES the existing file"
                    } else {
                        ""
                    },
                    format,
                    if header { ", header" } else { "" }
                ),
                format!(
                    "Columns: {}",
                    columns
                        .iter()
                        .map(|c| format!("{} {}", c.name, c.type_name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ];
            if !masks.is_empty() {
                details.push(format!("Masked in the file: {}", masks.join(", ")));
            }
            let ask = Ask {
                assessment: &assessment,
                decision: &decision,
                arguments: extra.clone(),
                timeout,
                details,
            };
            match self.approve(action, ask, route, ct, trail).await? {
                Outcome::InputRequired(r) => return Ok(Outcome::InputRequired(r)),
                Outcome::Pending(p) => return Ok(Outcome::Pending(p)),
                Outcome::Done(approved) if approved.dry_run => {
                    return Err(ToolError::NotApproved {
                        rule: decision.rule_label(),
                        what: super::describe(&assessment),
                        why: "a dry run of an export writes nothing; the reviewer did not approve writing the file"
                            .into(),
                        reason: approved.reason,
                    });
                }
                Outcome::Done(_) => {}
            }
        }
        // The data leaves the database only once this is on disk.
        self.write_decision(trail)?;

        let spec = ExportSpec {
            format,
            header,
            statement_timeout: timeout,
        };
        let partial = target
            .create_partial()
            .map_err(|e| ToolError::Refused(format!("the export file could not be created: {e}")))?;
        let file = partial
            .file
            .try_clone()
            .map_err(|e| ToolError::Refused(format!("the export file could not be opened: {e}")))?;
        let result = match self.db.export(sql, spec, file, progress, ct).await {
            Ok(r) => r,
            Err(e) => {
                target.discard(&partial);
                return Err(e.into());
            }
        };
        target
            .commit(&partial, overwrite)
            .map_err(|e| ToolError::Refused(format!("`{}`: {e}", args.path)))?;
        Ok(Outcome::Done(ExportOutput {
            path: target.path.display().to_string(),
            format,
            rows: result.rows,
            bytes: result.bytes,
            sha256: result.sha256,
            columns,
            elapsed_ms: started.elapsed().as_millis() as u64,
        }))
    }
}
