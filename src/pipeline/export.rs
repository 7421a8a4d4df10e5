//! `export` through the pipeline: the path is checked before anything runs, the SQL must be a read,
//! the call is decided as category `export` with the read's tables and tags, a person approves it
//! (by default), the decision is on disk, then rows stream to a temporary file renamed into place.

use std::{collections::BTreeSet, time::Instant};

use tokio_util::sync::CancellationToken;

use super::{
    ToolError,
    step::{Control, Estimate, ForReview, OnBehalf, Step},
};
use crate::{
    approval::Approved,
    audit::OutcomeRecord,
    classify::{self, Assessment, Category},
    db::{
        Column,
        export::{ExportFormat, ExportSpec},
    },
    export_path::Target,
    policy::Decision,
    tools::export::{ExportArgs, ExportOutput},
    trail::Trail,
};

pub(super) struct Export<'a>(pub &'a ExportArgs);

pub(super) struct Plan {
    started: Instant,
    target: Target,
    format: ExportFormat,
    header: bool,
    /// The result's columns, described (and checked against masks) before anyone is asked.
    columns: Vec<Column>,
    timeout: std::time::Duration,
}

impl Step for Export<'_> {
    type Plan = Plan;
    type Output = ExportOutput;

    const NO_DRY_RUN: Option<&'static str> =
        Some("a dry run of an export writes nothing; the reviewer did not approve writing the file");

    fn recorded(&self) -> serde_json::Value {
        let args = self.0;
        serde_json::json!({
            "path": args.path,
            "format": args.format.unwrap_or_default(),
            "header": args.header,
            "overwrite": args.overwrite,
        })
    }

    async fn assess(
        &self,
        p: &OnBehalf<'_>,
        trail: &mut Trail,
        _: &CancellationToken,
    ) -> Result<(Assessment, Plan), ToolError> {
        let (args, started) = (self.0, Instant::now());
        let sql = args.sql.trim();
        if sql.is_empty() {
            return Err(ToolError::BadArguments("`sql` is empty; pass one SELECT".into()));
        }
        if args.intent.trim().is_empty() {
            return Err(ToolError::BadArguments(
                "`intent` is required for exports: say in a sentence why these rows need to leave the database".into(),
            ));
        }
        let root = p.export_root.as_ref().map_err(|e| ToolError::Refused(e.clone()))?;
        let target = root
            .resolve(&args.path, args.overwrite.unwrap_or(false))
            .map_err(|e| ToolError::BadArguments(e.to_string()))?;
        p.masks_hold()?;
        let read = classify::classify_with(sql, &p.catalog_facts());
        if read.statements.len() != 1 || !read.is_read() {
            trail.assessed(&read);
            return Err(ToolError::Refused(format!(
                "`export` only exports one plain read, and this is {}",
                super::describe(&read)
            )));
        }
        // Policy sees an export: the read's tables and tags, category `export`.
        let mut assessment = read;
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
        let format = args.format.unwrap_or_default();
        let plan = Plan {
            started,
            target,
            format,
            header: args.header.unwrap_or(true) && format == ExportFormat::Csv,
            columns: vec![],
            timeout: p.limits.statement_timeout,
        };
        Ok((assessment, plan))
    }

    async fn review(
        &self,
        p: &OnBehalf<'_>,
        _: &Assessment,
        plan: &mut Plan,
        decision: &Decision,
        _: &mut Trail,
        ct: &CancellationToken,
    ) -> Result<ForReview, ToolError> {
        plan.timeout = decision.statement_timeout.unwrap_or(p.limits.statement_timeout);
        plan.columns = p.db.describe_query(self.0.sql.trim(), plan.timeout, ct).await?;
        let masks: Vec<String> = decision
            .masks
            .iter()
            .map(|m| format!("{} ({})", m.column, m.mask.as_str()))
            .collect();
        let mut details = vec![
            format!(
                "Target: {}{} ({:?}{})",
                plan.target.path.display(),
                if self.0.overwrite.unwrap_or(false) {
                    " — REPLACES the existing file"
                } else {
                    ""
                },
                plan.format,
                if plan.header { ", header" } else { "" }
            ),
            format!(
                "Columns: {}",
                plan.columns
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.type_name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ];
        if !masks.is_empty() {
            details.push(format!("Masked in the file: {}", masks.join(", ")));
        }
        Ok(ForReview {
            bound: self.recorded(),
            details,
            timeout: plan.timeout,
            estimate: Estimate::AsRead,
        })
    }

    async fn execute(
        &self,
        p: &OnBehalf<'_>,
        _: &Assessment,
        plan: Plan,
        _: &Decision,
        _: Approved,
        _: &mut Trail,
        ctl: &Control,
    ) -> Result<ExportOutput, ToolError> {
        let args = self.0;
        let Plan {
            started,
            target,
            format,
            header,
            columns,
            timeout,
        } = plan;
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
        let progress = |rows: u64| ctl.progress(rows);
        let result = match p.db.export(args.sql.trim(), spec, file, &progress, &ctl.cancel).await {
            Ok(r) => r,
            Err(e) => {
                target.discard(&partial);
                return Err(e.into());
            }
        };
        target
            .commit(&partial, args.overwrite.unwrap_or(false))
            .map_err(|e| ToolError::Refused(format!("`{}`: {e}", args.path)))?;
        Ok(ExportOutput {
            path: target.path.display().to_string(),
            format,
            rows: result.rows,
            bytes: result.bytes,
            sha256: result.sha256,
            columns,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    fn outcome(out: &ExportOutput) -> OutcomeRecord {
        OutcomeRecord {
            rows: Some(out.rows),
            path: Some(out.path.clone()),
            bytes: Some(out.bytes),
            sha256: Some(out.sha256.clone()),
            ..OutcomeRecord::default()
        }
    }
}
