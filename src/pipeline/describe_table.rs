//! `describe_table`: decided as a read of that table, so table and tag rules apply; the columns it
//! will only see masked are marked.

use tokio_util::sync::CancellationToken;

use super::{
    ToolError,
    step::{Control, OnBehalf, Step},
};
use crate::{
    approval::Approved,
    audit::OutcomeRecord,
    classify::{self, Assessment},
    db::catalog::{CatalogError, TableDescription},
    policy::Decision,
    tools::describe_table::DescribeTableArgs,
    trail::Trail,
};

pub(super) struct DescribeTable<'a>(pub &'a DescribeTableArgs);

impl Step for DescribeTable<'_> {
    type Plan = ();
    type Output = TableDescription;

    fn recorded(&self) -> serde_json::Value {
        serde_json::json!({ "table": self.0.table })
    }

    async fn assess(
        &self,
        p: &OnBehalf<'_>,
        _: &mut Trail,
        _: &CancellationToken,
    ) -> Result<(Assessment, ()), ToolError> {
        let table = self.0.table.trim();
        if table.is_empty() {
            return Err(ToolError::BadArguments(
                "`table` is empty; pass a table name such as `orders` or `sales.orders`".into(),
            ));
        }
        // Anything that is not exactly one relation name cannot name a table.
        let assessment = classify::classify_with(&format!("SELECT * FROM {table}"), &p.catalog_facts());
        if !assessment.is_read() || assessment.tables.len() != 1 || assessment.statements.len() != 1 {
            return Err(CatalogError::NoTable(table.to_string()).into());
        }
        Ok((assessment, ()))
    }

    async fn execute(
        &self,
        p: &OnBehalf<'_>,
        _: &Assessment,
        _: (),
        decision: &Decision,
        _: Approved,
        _: &mut Trail,
        ctl: &Control,
    ) -> Result<TableDescription, ToolError> {
        let timeout = decision.statement_timeout.unwrap_or(p.limits.statement_timeout);
        let mut d = p.db.describe_table(self.0.table.trim(), timeout, &ctl.cancel).await?;
        // Tell the model up front which columns it will only see masked.
        let name = format!("{}.{}", d.schema, d.name);
        d.tags = p.policy.tags_of(&name).into_iter().map(str::to_string).collect();
        if let Some(masks) = p.policy.masks.get(&name) {
            for c in &mut d.columns {
                c.mask = masks.get(&c.name).copied();
            }
        }
        Ok(d)
    }

    fn outcome(_: &TableDescription) -> OutcomeRecord {
        OutcomeRecord::default()
    }
}
