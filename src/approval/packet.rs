//! The review packet: everything a person needs to decide, in the prompt's message, concise and
//! scannable. The SQL is pretty-printed only when the pretty form parses to the very same statement
//! as the text that will be sent; otherwise the text is shown as given.

use serde::Serialize;

pub use crate::text::{hidden_format, one_line, visible};

use crate::{
    call::Action,
    classify::{Assessment, bounded},
    policy::Decision,
};

#[derive(Debug, Clone, Serialize)]
pub struct ReviewPacket {
    /// One line: what, where, how risky.
    pub summary: String,
    pub sql: String,
    pub category: String,
    pub risk: String,
    pub reasons: Vec<String>,
    /// `schema.table` with its policy tags.
    pub tables: Vec<(String, Vec<String>)>,
    /// "rule `x` (file:line)" and its reason.
    pub rule: String,
    pub rule_reason: String,
    /// The planner's estimate of rows touched, for UPDATE/DELETE/MERGE/INSERT … SELECT.
    pub estimated_rows: Option<f64>,
    /// The estimate is for the person only: with masks in the policy, an estimate for a predicate
    /// on a masked column is an oracle for its values, so what the model receives leaves it out.
    pub estimate_for_person_only: bool,
    pub requested_by: String,
    /// The model's own account of why; not verified.
    pub intent: Option<String>,
    /// Tool-specific lines (an export's target and columns).
    pub details: Vec<String>,
    /// The database it runs on, when pgwarden serves several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl ReviewPacket {
    pub fn new(action: &Action, a: &Assessment, d: &Decision, estimated_rows: Option<f64>) -> ReviewPacket {
        let sql = action.sql.as_deref().unwrap_or_default();
        let kinds: Vec<&str> = a.statements.iter().map(|s| s.kind.as_str()).collect();
        let mut tables: Vec<(String, Vec<String>)> = a
            .tables
            .iter()
            .map(|t| (t.clone(), d.tags.get(t).cloned().unwrap_or_default()))
            .collect();
        tables.extend(
            a.cte_shadowed
                .iter()
                .map(|t| (t.clone(), d.tags.get(t).cloned().unwrap_or_default())),
        );
        let on = if a.tables.is_empty() {
            String::new()
        } else {
            format!(" on {}", a.tables.join(", "))
        };
        let c = &action.caller;
        // The verified identity first; the client's name is whatever the client says it is.
        let client = match (&c.client_name, &c.client_version) {
            (Some(n), Some(v)) => format!("client {n} {v} (as it names itself)"),
            (Some(n), None) => format!("client {n} (as it names itself)"),
            _ => "an unnamed client".into(),
        };
        let mut who: Vec<String> = c.identity.iter().map(|i| i.describe()).collect();
        who.push(client);
        who.push(format!("session {}", c.session_id.get(..8).unwrap_or(&c.session_id)));
        let on = match &action.database {
            Some(db) => format!("{on} in database `{db}`"),
            None => on,
        };
        ReviewPacket {
            summary: format!(
                "{}{on} via `{}` ({}, risk {})",
                kinds.join("; "),
                action.tool,
                a.category().as_str(),
                a.risk.as_str()
            ),
            sql: pretty(sql),
            category: a.category().as_str().into(),
            risk: a.risk.as_str().into(),
            reasons: a.reasons.clone(),
            tables,
            rule: d.rule_label(),
            rule_reason: d.reason.clone(),
            estimated_rows,
            estimate_for_person_only: false,
            requested_by: who.join(" · "),
            intent: action.intent.clone().filter(|s| !s.trim().is_empty()),
            details: vec![],
            database: action.database.clone(),
        }
    }

    /// The prompt's message. The action comes first; every model- or client-supplied field is
    /// one labelled line, escaped and cut to length, so none can forge a section or push the
    /// statement out of view (issue 16 item 3).
    pub fn message(&self) -> String {
        let mut m = format!(
            "pgwarden: approve this {}?\n{}\n",
            self.category,
            one_line(&self.summary, 300)
        );
        if let Some(db) = &self.database {
            m.push_str(&format!("Database: {}\n", one_line(db, 100)));
        }
        m.push_str(&format!("\nSQL:\n{}\n\n", shown_sql(&self.sql)));
        m.push_str(&format!(
            "Decided by: {} — {}\n",
            one_line(&self.rule, 300),
            one_line(&self.rule_reason, 300)
        ));
        for d in &self.details {
            m.push_str(&format!("{}\n", one_line(d, 400)));
        }
        if let Some(n) = self.estimated_rows {
            m.push_str(&format!("Estimated rows: ~{n:.0} (planner estimate)\n"));
        }
        if !self.tables.is_empty() {
            let t: Vec<String> = self
                .tables
                .iter()
                .map(|(t, tags)| {
                    if tags.is_empty() {
                        t.clone()
                    } else {
                        format!("{t} [{}]", tags.join(", "))
                    }
                })
                .collect();
            m.push_str(&format!("Tables: {}\n", one_line(&t.join(", "), 600)));
        }
        for r in &self.reasons {
            m.push_str(&format!("Why: {}\n", one_line(r, 400)));
        }
        m.push_str(&format!("Requested by: {}\n", one_line(&self.requested_by, 300)));
        if let Some(i) = &self.intent {
            m.push_str(&format!(
                "Intent (the model's words, unverified): {}\n",
                one_line(i, 500)
            ));
        }
        m.push_str(
            "\nApprove runs it and commits; Dry run runs it, reports the rows and rolls back; Deny runs nothing. \
             A row limit rolls the change back if it touches more rows.",
        );
        m
    }
}

/// The statement as shown: hidden characters visible, and runs of empty lines (inside a string,
/// say) folded to a marker, so the rest of the statement stays in view.
fn shown_sql(sql: &str) -> String {
    let mut out = Vec::new();
    let mut empty = 0usize;
    for line in visible(sql).split('\n') {
        if line.trim().is_empty() {
            empty += 1;
            continue;
        }
        match empty {
            0 => {}
            1 => out.push(String::new()),
            n => out.push(format!("[… {n} empty lines …]")),
        }
        empty = 0;
        out.push(line.to_string());
    }
    out.join("\n")
}

/// sqlparser's pretty form when it parses back to the same statements, else the text as given
/// (also when the text is too big to print safely: see `PRETTY_LIMITS`).
fn pretty(sql: &str) -> String {
    let Ok(original) = bounded::parse(sql, bounded::PRETTY_LIMITS) else {
        return sql.trim().to_string();
    };
    let printed: Vec<String> = original.iter().map(|s| format!("{s:#}")).collect();
    let joined = printed.join(";\n");
    match bounded::parse(&joined, bounded::PRETTY_LIMITS) {
        Ok(again) if again == original => joined,
        _ => sql.trim().to_string(),
    }
}

#[cfg(test)]
mod spoofing_tests {
    use super::*;

    /// Regression (issue 16 item 3): newlines in `intent` forged sections of the prompt, and 60
    /// blank lines pushed the real statement out of view.
    #[test]
    fn model_supplied_fields_cannot_forge_sections_or_hide_the_statement() {
        let mut p = ReviewPacket {
            summary: "UPDATE on public.t via `query` (write, risk medium)".into(),
            sql: "UPDATE t SET a = 1 WHERE id > 0".into(),
            category: "write".into(),
            risk: "medium".into(),
            reasons: vec![],
            tables: vec![],
            rule: "rule `r`".into(),
            rule_reason: "x".into(),
            estimated_rows: None,
            estimate_for_person_only: false,
            requested_by: "client\nDecided by: rule `safe`".into(),
            intent: Some(format!("harmless{}\nSQL:\nSELECT 1", "\n".repeat(60))),
            details: vec!["File: out.csv\nRisk: low".into()],
            database: None,
        };
        let m = p.message();
        let sql_at = m.find("UPDATE t SET a = 1 WHERE id > 0").unwrap();
        assert!(sql_at < m.find("Intent").unwrap(), "the action comes first:\n{m}");
        assert_eq!(m.matches("\nSQL:").count(), 1, "{m}");
        assert_eq!(m.lines().filter(|l| l.starts_with("Decided by:")).count(), 1, "{m}");
        assert!(m.contains("client\\nDecided by"), "{m}");
        assert!(!m.contains("\n\n\n"), "{m:?}");
        let intent_line = m.lines().find(|l| l.starts_with("Intent")).unwrap();
        assert!(
            intent_line.contains("more characters") || intent_line.len() < 800,
            "{intent_line}"
        );
        p.sql = format!("UPDATE t SET a = '{}' WHERE id > 0", "\n".repeat(60));
        let m = p.message();
        assert!(m.contains("[… 60 empty lines …]") || m.contains("empty lines"), "{m}");
        assert!(m.lines().count() < 30, "{m}");
    }
}

#[cfg(test)]
mod tests {
    use sqlparser::{dialect::PostgreSqlDialect, parser::Parser};

    use super::*;

    #[test]
    fn pretty_sql_is_the_same_statement_and_hidden_characters_show() {
        let p = pretty("update orders set status='x' where id=1");
        assert!(p.starts_with("UPDATE orders"), "{p}");
        assert_eq!(
            Parser::parse_sql(&PostgreSqlDialect {}, &p).unwrap(),
            Parser::parse_sql(&PostgreSqlDialect {}, "update orders set status='x' where id=1").unwrap()
        );
        assert_eq!(pretty("SELEC nonsense"), "SELEC nonsense");
        assert_eq!(visible("a\u{202E}b\rc\n"), "a\\u{202E}b\\u{000D}c\n");
    }

    #[test]
    fn long_chains_show_as_written_and_never_overflow_a_worker_stack() {
        let printed = |n: usize| {
            let sql = format!("select 1{}", "+1".repeat(n));
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || pretty(&sql))
                .expect("spawn")
                .join()
                .expect("no panic")
        };
        let limit = bounded::PRETTY_LIMITS.max_operators;
        assert!(
            printed(limit).starts_with("SELECT\n  1 + 1"),
            "pretty-printed up to the limit"
        );
        assert!(printed(limit + 1).starts_with("select 1+1"), "as written past it");
        assert!(printed(500_000).starts_with("select 1+1"));
    }
}
