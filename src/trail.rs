//! One call's audit trail: the facts gathered as the pipeline runs, turned into records — a
//! `decision` written before a change runs, then its `outcome`, or a single `call` record for reads,
//! refusals and denials.

use std::time::Instant;

use crate::{
    audit::{ApprovalRecord, Event, OutcomeRecord, Record, redact},
    call::Action,
    classify::Assessment,
    policy::Decision,
};

pub struct Trail {
    base: Record,
    started: Instant,
    /// A durable `decision` record exists: the final record is its `outcome`.
    pub decision_written: bool,
    /// The pending approval whose stored call this is running, if any.
    pub executed_approval: Option<String>,
    /// Tool-specific facts for the last record (a grant's privileges after).
    after: Option<serde_json::Value>,
    /// Values redacted from the call's SQL: error messages lose them too.
    secrets: Vec<String>,
}

impl Trail {
    pub fn new(action: &Action, extra_arguments: serde_json::Value) -> Trail {
        let c = &action.caller;
        let (sql, secrets) = match action.sql.as_deref().map(redact::sql_and_secrets) {
            Some((sql, secrets)) => (Some(sql), secrets),
            None => (None, vec![]),
        };
        let mut arguments = serde_json::json!({});
        if let Some(s) = &sql {
            arguments["sql"] = s.clone().into();
        }
        if let Some(i) = &action.intent {
            arguments["intent"] = i.clone().into();
        }
        if let (Some(map), Some(extra)) = (arguments.as_object_mut(), extra_arguments.as_object()) {
            map.extend(
                extra
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        Trail {
            base: Record {
                call_id: Some(uuid::Uuid::new_v4().to_string()),
                session_id: Some(c.session_id.clone()),
                client: c.client_name.as_ref().map(|n| match &c.client_version {
                    Some(v) => format!("{n} {v}"),
                    None => n.clone(),
                }),
                principal: c.principal().map(|p| p.as_str().to_string()),
                display_name: c.identity.as_ref().and_then(|i| i.display.clone()),
                groups: c.groups().to_vec(),
                authn: c.identity.as_ref().map(|i| i.via.clone()),
                database: action.database.clone(),
                tool: Some(action.tool.name().to_string()),
                arguments: Some(arguments),
                sql,
                ..Record::default()
            },
            started: Instant::now(),
            decision_written: false,
            executed_approval: None,
            after: None,
            secrets,
        }
    }

    pub fn assessed(&mut self, a: &Assessment) {
        self.base.categories = a.categories.iter().map(|c| c.as_str().to_string()).collect();
        self.base.risk = Some(a.risk.as_str().into());
        // A parser error quotes the token it stopped at, which may be a secret.
        self.base.reasons = a.reasons.iter().map(|r| redact::scrub(r, &self.secrets)).collect();
    }

    pub fn decided(&mut self, d: &Decision) {
        self.base.decision = Some(d.effect.as_str().into());
        self.base.rule = Some(match (&d.rule, &d.origin) {
            (Some(id), Some(o)) => format!("{id} ({o})"),
            (Some(id), None) => id.clone(),
            _ => "(no rule matched)".into(),
        });
    }

    /// Facts recorded with the decision (and the whole call).
    pub fn details(&mut self, v: serde_json::Value) {
        self.base.details = Some(v);
    }

    /// Facts recorded with the outcome.
    pub fn details_after(&mut self, v: serde_json::Value) {
        self.after = Some(v);
    }

    pub fn approval(&mut self, a: ApprovalRecord) {
        self.base.approval = Some(a);
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The record written, durably, before a change runs.
    pub fn decision_record(&self) -> Record {
        Record {
            event: Some(Event::Decision),
            ..self.base.clone()
        }
    }

    /// The last record of the call: the `outcome` of a decision, or the whole `call`.
    pub fn final_record(&self, mut outcome: OutcomeRecord) -> Record {
        if let Some(m) = &outcome.message {
            outcome.message = Some(redact::scrub(m, &self.secrets));
        }
        if self.decision_written {
            // The outcome repeats only what links it to its decision.
            Record {
                event: Some(Event::Outcome),
                call_id: self.base.call_id.clone(),
                session_id: self.base.session_id.clone(),
                tool: self.base.tool.clone(),
                outcome: Some(outcome),
                details: self.after.clone(),
                ..Record::default()
            }
        } else {
            let mut record = Record {
                event: Some(Event::Call),
                outcome: Some(outcome),
                ..self.base.clone()
            };
            if let (Some(before), Some(after)) = (&self.base.details, &self.after) {
                record.details = Some(serde_json::json!({ "before": before, "after": after }));
            }
            record
        }
    }
}
