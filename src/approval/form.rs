//! The approval form (`requestedSchema`) and how an answer is read. The contract scripted clients
//! rely on: `decision` is `approve`, `dry_run` or `deny`; `max_rows_affected` (optional integer ≥ 0)
//! caps the rows the change may touch; `reason` (optional) is passed to the model and the audit.

use rmcp::model::{ElicitResult, ElicitationAction, ElicitationSchema, EnumSchema, LegacyEnumSchema, ProtocolVersion};

/// What the reviewer decided. Anything but an explicit approve or dry run is "not approved".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approved(super::Approved),
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

/// How the form spells the decision's choices, by the protocol the client negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// 2025-06-18 knows only `enum` + `enumNames`; a titled `oneOf` may render as a free-text box.
    EnumNames,
    /// 2025-11-25 and later: a titled single-select enum (`oneOf` of `const` + `title`).
    Titled,
}

impl Spelling {
    /// The spelling for a session on `version` (unknown or older than 2025-11-25: `enumNames`,
    /// which every version with elicitation accepts).
    pub fn for_version(version: Option<&ProtocolVersion>) -> Spelling {
        match version {
            Some(v) if *v >= ProtocolVersion::V_2025_11_25 => Spelling::Titled,
            _ => Spelling::EnumNames,
        }
    }
}

const DECISIONS: [(&str, &str); 3] = [
    ("approve", "Approve: run it and commit"),
    ("dry_run", "Dry run: run it, report, roll back"),
    ("deny", "Deny: do not run it"),
];

/// The approval form. Never empty: `decision` is always there and required (some clients accept
/// an empty form without showing it).
pub fn schema(spelling: Spelling) -> Result<ElicitationSchema, String> {
    let values: Vec<String> = DECISIONS.iter().map(|(v, _)| v.to_string()).collect();
    let titles: Vec<String> = DECISIONS.iter().map(|(_, t)| t.to_string()).collect();
    let decision = match spelling {
        Spelling::Titled => EnumSchema::builder(values)
            .enum_titles(titles)?
            .title("Decision")
            .build(),
        Spelling::EnumNames => {
            let mut legacy = LegacyEnumSchema::new(values);
            legacy.enum_names = Some(titles);
            legacy.title = Some("Decision".into());
            EnumSchema::Legacy(legacy)
        }
    };
    ElicitationSchema::builder()
        .required_enum_schema("decision", decision)
        .optional_integer_with("max_rows_affected", |s| {
            // 2^53 - 1: the largest integer a JavaScript client holds exactly.
            s.range(0, (1i64 << 53) - 1)
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
        Some(d @ ("approve" | "dry_run")) => Verdict::Approved(super::Approved {
            dry_run: d == "dry_run",
            max_rows_affected,
            reason,
        }),
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
            Verdict::Approved(crate::approval::Approved {
                dry_run: false,
                max_rows_affected: Some(3),
                reason: Some("ok".into())
            })
        );
        assert!(matches!(
            read(&accept(json!({"decision": "dry_run"}))),
            Verdict::Approved(crate::approval::Approved { dry_run: true, .. })
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
    fn the_form_is_flat_and_titled_from_2025_11_25() {
        for v in [ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28] {
            assert_eq!(Spelling::for_version(Some(&v)), Spelling::Titled);
        }
        let s = serde_json::to_value(schema(Spelling::Titled).unwrap()).unwrap();
        assert_eq!(s["required"], json!(["decision"]));
        assert_eq!(s["properties"]["decision"]["oneOf"][1]["const"], json!("dry_run"));
        assert!(s["properties"]["decision"].get("enumNames").is_none());
        assert_eq!(s["properties"]["max_rows_affected"]["type"], json!("integer"));
        assert_eq!(s["properties"]["reason"]["type"], json!("string"));
    }

    /// Issue 17 item 7: a 2025-06-18 client gets `enum` + `enumNames`, the only enum it knows.
    #[test]
    fn a_2025_06_18_client_gets_enum_names() {
        assert_eq!(
            Spelling::for_version(Some(&ProtocolVersion::V_2025_06_18)),
            Spelling::EnumNames
        );
        assert_eq!(Spelling::for_version(None), Spelling::EnumNames);
        let s = serde_json::to_value(schema(Spelling::EnumNames).unwrap()).unwrap();
        assert_eq!(
            s["properties"]["decision"],
            json!({
                "type": "string",
                "title": "Decision",
                "enum": ["approve", "dry_run", "deny"],
                "enumNames": ["Approve: run it and commit", "Dry run: run it, report, roll back", "Deny: do not run it"],
            })
        );
        assert_eq!(s["required"], json!(["decision"]));
    }

    /// Every spelling is a flat form of primitives that 2025-06-18 allows, and never empty.
    #[test]
    fn every_form_is_flat_primitive_and_never_empty() {
        for spelling in [Spelling::EnumNames, Spelling::Titled] {
            let s = serde_json::to_value(schema(spelling).unwrap()).unwrap();
            assert_eq!(s["type"], json!("object"));
            let props = s["properties"].as_object().unwrap();
            assert!(
                props.contains_key("decision") && s["required"] == json!(["decision"]),
                "{s}"
            );
            for (name, p) in props {
                assert!(
                    ["string", "integer", "number", "boolean"].contains(&p["type"].as_str().unwrap_or("")),
                    "{name}: {p}"
                );
            }
            for k in s.as_object().unwrap().keys() {
                assert!(
                    ["type", "properties", "required"].contains(&k.as_str()),
                    "{spelling:?}: root `{k}`"
                );
            }
            // Issue 17 item 12: i64::MAX, which a JavaScript client reads rounded.
            assert_eq!(
                props["max_rows_affected"]["maximum"],
                json!(9_007_199_254_740_991i64),
                "{s}"
            );
        }
    }
}
