//! `pgwarden check`: the assessment of a SQL text and the decision it would get, for people and
//! scripts. Until policy files land, the decision is built in: reads are allowed, everything else
//! needs approval.

use serde::Serialize;

use crate::classify::{Assessment, Category};

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// `allow`, `approve` or `deny`.
    pub effect: &'static str,
    /// The rules that decided, by id.
    pub rules: Vec<&'static str>,
}

pub fn decide(assessment: &Assessment) -> Decision {
    if assessment.is_read() {
        Decision {
            effect: "allow",
            rules: vec!["builtin-reads-run"],
        }
    } else {
        Decision {
            effect: "approve",
            rules: vec!["builtin-non-reads-need-approval"],
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    assessment: &'a Assessment,
    decision: Decision,
}

pub fn to_json(assessment: &Assessment) -> String {
    serde_json::to_string_pretty(&Report {
        assessment,
        decision: decide(assessment),
    })
    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

pub fn to_text(assessment: &Assessment) -> String {
    let d = decide(assessment);
    let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(", ") };
    let mut out = format!(
        "decision: {} (rule {})\nrisk: {}\ncategories: {}\n",
        d.effect,
        d.rules.join(", "),
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
    out
}
