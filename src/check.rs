//! `pgwarden check`: the assessment of a SQL text and the policy decision it would get, for people
//! and scripts.

use serde::Serialize;

use crate::{
    classify::{Assessment, Category},
    policy::{ApprovalSettings, Decision, Effect, Level, Surface},
};

#[derive(Serialize)]
struct Report<'a> {
    /// The database it was decided for (`--database`).
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'a str>,
    #[serde(flatten)]
    assessment: &'a Assessment,
    decision: &'a Decision,
    /// For `approve`: the channel level a person's approval needs, and where it can come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<Approval>,
}

/// How strong the approval of an `approve` decision must be.
#[derive(Serialize)]
struct Approval {
    /// `client` or `local`.
    level: Level,
    /// The setting that asks for it: `[approval.min_channel] <risk>` or the rule's `min_channel`.
    required_by: String,
    /// The enabled channels that can give it.
    channels: Vec<&'static str>,
}

fn approval(assessment: &Assessment, d: &Decision, settings: &ApprovalSettings) -> Option<Approval> {
    if d.effect != Effect::Approve {
        return None;
    }
    let (level, required_by) = settings.level_and_source(assessment.risk, d.rule.as_deref().zip(d.min_channel));
    let channels = Surface::ALL
        .into_iter()
        .filter(|s| s.level() >= level && settings.enabled(*s))
        .map(Surface::as_str)
        .collect();
    Some(Approval {
        level,
        required_by,
        channels,
    })
}

pub fn to_json(
    database: Option<&str>,
    assessment: &Assessment,
    decision: &Decision,
    settings: &ApprovalSettings,
) -> String {
    let approval = approval(assessment, decision, settings);
    serde_json::to_string_pretty(&Report {
        database,
        assessment,
        decision,
        approval,
    })
    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

pub fn to_text(database: Option<&str>, assessment: &Assessment, d: &Decision, settings: &ApprovalSettings) -> String {
    let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(", ") };
    let mut out = database.map(|db| format!("database: {db}\n")).unwrap_or_default();
    out += &format!(
        "decision: {} by {}\n  {}\nrisk: {}\ncategories: {}\n",
        d.effect.as_str(),
        d.rule_label(),
        d.reason,
        assessment.risk.as_str(),
        assessment
            .categories
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (i, s) in assessment.statements.iter().enumerate() {
        out.push_str(&format!(
            "statement {}: {} — {} ({})\n",
            i + 1,
            s.kind,
            s.category.as_str(),
            s.risk.as_str()
        ));
        for r in &s.reasons {
            out.push_str(&format!("  - {r}\n"));
        }
        if s.category == Category::Read && s.reasons.is_empty() {
            out.push_str("  - a plain read\n");
        }
    }
    out.push_str(&format!(
        "tables: {}\nfunctions: {}\n",
        list(&assessment.tables),
        list(&assessment.functions)
    ));
    for (table, tags) in &d.tags {
        out.push_str(&format!("tags: {table}: {}\n", tags.join(", ")));
    }
    for m in &d.masks {
        out.push_str(&format!("mask: {} ({})\n", m.column, m.mask.as_str()));
    }
    let mut limits = Vec::new();
    if let Some(n) = d.max_rows {
        limits.push(format!("max_rows {n}"));
    }
    if let Some(n) = d.max_result_bytes {
        limits.push(format!("max_result_bytes {n}"));
    }
    if let Some(t) = d.statement_timeout {
        limits.push(format!("statement_timeout {}", humantime::format_duration(t)));
    }
    if d.effect == crate::policy::Effect::Approve {
        limits.push(format!(
            "approval_timeout {}",
            humantime::format_duration(d.approval_timeout)
        ));
    }
    if !limits.is_empty() {
        out.push_str(&format!("limits: {}\n", limits.join(", ")));
    }
    if let Some(a) = approval(assessment, d, settings) {
        out.push_str(&format!(
            "approval: needs `{}` level or stronger, by {}; channels: {}\n",
            a.level.as_str(),
            a.required_by,
            if a.channels.is_empty() {
                "none enabled".to_string()
            } else {
                a.channels.join(", ")
            }
        ));
    }
    out
}
