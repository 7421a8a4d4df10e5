//! `list_tables`: a catalog read, decided by the policy like any read, with no tables.

use tokio_util::sync::CancellationToken;

use super::{
    ToolError,
    step::{Control, OnBehalf, Step},
};
use crate::{
    approval::Approved,
    audit::OutcomeRecord,
    classify::{self, Assessment},
    db::catalog::TableList,
    policy::Decision,
    tools::list_tables::ListTablesArgs,
    trail::Trail,
};

pub(super) struct ListTables<'a>(pub &'a ListTablesArgs);

impl Step for ListTables<'_> {
    type Plan = ();
    type Output = TableList;

    fn recorded(&self) -> serde_json::Value {
        serde_json::json!({ "schema": self.0.schema })
    }

    async fn assess(
        &self,
        _: &OnBehalf<'_>,
        _: &mut Trail,
        _: &CancellationToken,
    ) -> Result<(Assessment, ()), ToolError> {
        Ok((classify::classify("SELECT 1"), ()))
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
    ) -> Result<TableList, ToolError> {
        let timeout = decision.statement_timeout.unwrap_or(p.limits.statement_timeout);
        let mut list = p.db.list_tables(self.0.schema.as_deref(), timeout, &ctl.cancel).await?;
        list.notice = p.first_note();
        Ok(list)
    }

    fn outcome(_: &TableList) -> OutcomeRecord {
        OutcomeRecord::default()
    }
}
