//! The approval form (`requestedSchema`) and how an answer is read. The contract scripted clients
//! rely on: `decision` is `approve`, `dry_run` or `deny`; `max_rows_affected` (optional integer ≥ 0)
//! caps the rows the change may touch; `reason` (optional) is passed to the model and the audit.

use rmcp::model::{ElicitResult, ElicitationAction, ElicitationSchema, EnumSchema};

/// What the reviewer decided. Anything but an explicit approve or dry run is "not approved".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approved {
        dry_run: bool,
        max_rows_affected: Option<u64>,
        reason: Option<String>,
    },
    NotApproved {
        /// What happened, for the model: "the reviewer denied it", "no answer within 5m", …
        why: String,
        reason: Option<String>,
    },
}

impl Verdict {
    pub fn not_approved(why: impl Into<String>) -> Verdict {
        Verdict::NotApproved {
            why: why.into(),
            reason: None,
        }
    }
}

pub fn schema() -> Result<ElicitationSchema, String> {
    let decision = EnumSchema::builder(vec!["approve".into(), "dry_run".into(), "deny".into()])
        .enum_titles(vec![
            "Approve: run it and commit".into(),
            "Dry run: run it, report, roll back".into(),
            "Deny: do not run it".into(),
        ])?
        .title("Decision")
        .build();
    ElicitationSchema::builder()
        .required_enum_schema("decision", decision)
        .optional_integer_with("max_rows_affected", |s| {
            s.range(0, i64::MAX)
                .title("Row limit")
                .description("Roll back if the change touches more rows than this")
        })
        .optional_string_with("reason", |s| {
            s.title("Reason").description("Shown to the model and recorded")
        })
        .build()
        .map_err(str::to_string)
}

/// Reads a client's answer. Fail closed: a missing, unknown or malformed decision is not approval.
pub fn read(answer: &ElicitResult) -> Verdict {
    match answer.action {
        ElicitationAction::Decline => return Verdict::not_approved("the reviewer declined the prompt"),
        ElicitationAction::Cancel => return Verdict::not_approved("the prompt was dismissed without an answer"),
        ElicitationAction::Accept => {}
        _ => return Verdict::not_approved("the client answered the prompt with an unknown action"),
    }
    let content = answer.content.as_ref();
    let field = |k: &str| content.and_then(|c| c.get(k)).filter(|v| !v.is_null());
    let reason = field("reason")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let max_rows_affected = match field("max_rows_affected") {
        None => None,
        Some(v) => match v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
        {
            Some(n) => Some(n),
            None => {
                return Verdict::NotApproved {
                    why: format!(
                        "the answer's row limit `{v}` is not a whole number of rows, so it was not taken as approval"
                    ),
                    reason,
                };
            }
        },
    };
    match field("decision").and_then(|v| v.as_str()) {
        Some("approve") => Verdict::Approved {
            dry_run: false,
            max_rows_affected,
            reason,
        },
        Some("dry_run") => Verdict::Approved {
            dry_run: true,
            max_rows_affected,
            reason,
        },
        Some("deny") => Verdict::NotApproved {
            why: "the reviewer denied it".into(),
            reason,
        },
        other => Verdict::NotApproved {
            why: format!(
                "the answer had no valid decision ({}), so it was not taken as approval",
                other.map_or("none".to_string(), |d| format!("`{d}`"))
            ),
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn accept(v: serde_json::Value) -> ElicitResult {
        ElicitResult::new(ElicitationAction::Accept).with_content(v)
    }

    #[test]
    fn only_an_explicit_approve_or_dry_run_approves() {
        assert_eq!(
            read(&accept(
                json!({"decision": "approve", "max_rows_affected": 3, "reason": " ok "})
            )),
            Verdict::Approved {
                dry_run: false,
                max_rows_affected: Some(3),
                reason: Some("ok".into())
            }
        );
        assert!(matches!(
            read(&accept(json!({"decision": "dry_run"}))),
            Verdict::Approved { dry_run: true, .. }
        ));
        for bad in [
            accept(json!({})),
            accept(json!({"decision": "APPROVE"})),
            accept(json!({"decision": "yes"})),
            accept(json!({"decision": "approve", "max_rows_affected": -1})),
            accept(json!({"decision": "approve", "max_rows_affected": "10"})),
            accept(json!({"decision": "deny", "reason": "no"})),
            ElicitResult::new(ElicitationAction::Decline),
            ElicitResult::new(ElicitationAction::Cancel),
            ElicitResult::new(ElicitationAction::Accept),
        ] {
            assert!(matches!(read(&bad), Verdict::NotApproved { .. }), "{bad:?}");
        }
    }

    #[test]
    fn the_form_is_flat_and_titled() {
        let s = serde_json::to_value(schema().unwrap()).unwrap();
        assert_eq!(s["required"], json!(["decision"]));
        assert_eq!(s["properties"]["decision"]["oneOf"][1]["const"], json!("dry_run"));
        assert_eq!(s["properties"]["max_rows_affected"]["type"], json!("integer"));
        assert_eq!(s["properties"]["reason"]["type"], json!("string"));
    }
}
