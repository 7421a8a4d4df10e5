//! The Slack message of an approval (Block Kit) and the Deny dialog. Everything the model or the
//! client supplied goes into `rich_text` text elements, which Slack shows as typed: no mrkdwn, no
//! links, no mentions can be forged from a statement or an intent. A statement too long to show
//! whole gets no Approve button: nobody approves text they could not read.

use serde_json::{Value, json};

use super::super::teams::{shown, tables};
use crate::approval::pending::{Listed, fingerprint};

/// The longest statement a message shows (Slack caps a block's text near 3000 characters).
const SQL_SHOWN: usize = 2500;

/// The `block_id` of the buttons, and the `callback_id` of the Deny dialog.
pub const ACTIONS: &str = "pgwarden_decision";
pub const DENY_VIEW: &str = "pgwarden_deny";

fn plain(s: &str) -> Value {
    json!({ "type": "text", "text": s })
}

fn bold(s: &str) -> Value {
    json!({ "type": "text", "text": s, "style": { "bold": true } })
}

/// One labelled line: its text elements.
fn labelled(label: &str, value: &str) -> Vec<Value> {
    let mut elements = vec![bold(&format!("{label}: "))];
    if !value.is_empty() {
        elements.push(plain(value));
    }
    elements
}

/// Lines as one `rich_text_section`.
fn section(lines: Vec<Vec<Value>>) -> Value {
    let n = lines.len();
    let mut elements = vec![];
    for (i, mut l) in lines.into_iter().enumerate() {
        elements.append(&mut l);
        if i + 1 < n {
            elements.push(plain("\n"));
        }
    }
    json!({ "type": "rich_text_section", "elements": elements })
}

fn plain_text(s: &str, max: usize) -> Value {
    let s: String = s.chars().take(max).collect();
    json!({ "type": "plain_text", "text": s, "emoji": false })
}

/// Slack's three mrkdwn control characters, escaped (for the notification's fallback text).
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// What a message button carries: the approval and the hash of what the message shows.
pub fn button_value(id: &str, hash: &str) -> String {
    format!("{id}|{hash}")
}

/// [`button_value`] read back.
pub fn parse_value(value: &str) -> Option<(&str, &str)> {
    let (id, hash) = value.split_once('|')?;
    (!id.is_empty() && !hash.is_empty()).then_some((id, hash))
}

/// The message for `a` as it stands: the fallback text and the blocks. `decided_by` names who
/// decided it, once decided; `review_link` is the review app's page for it, when there is one.
pub fn message(a: &Listed, decided_by: Option<&str>, review_link: Option<&str>) -> (String, Value) {
    let p = &a.review.packet;
    let field = |name: &str, max: usize| shown(p[name].as_str().unwrap_or("-"), max);
    let (word, label) = a.state.words();
    let summary = field("summary", 200);
    let (title, text) = if word == "pending" {
        (
            format!("Approval needed: {summary}"),
            format!("pgwarden approval {} needs a decision: {}", a.id, escaped(&summary)),
        )
    } else {
        (
            format!("{}: {summary}", capitalised(word)),
            format!("pgwarden approval {}: {}", a.id, escaped(&shown(&label, 200))),
        )
    };

    let sql = p["sql"].as_str().unwrap_or_default();
    let head: String = sql.chars().take(SQL_SHOWN).collect();
    let cut = sql.chars().count() - head.chars().count();
    let mut lines = vec![];
    let requester = a.review.requester.as_deref().unwrap_or("(not verified)");
    lines.push(labelled("Requested by", &shown(requester, 120)));
    lines.push(labelled("Caller", &field("requested_by", 300)));
    if let Some(i) = p["intent"].as_str() {
        lines.push(labelled("Intent (the model's words, unverified)", &shown(i, 500)));
    }
    lines.push(labelled("SQL", ""));
    let mut rich = vec![section(lines)];
    rich.push(json!({
        "type": "rich_text_preformatted",
        "elements": [plain(if head.is_empty() { "-" } else { &head })],
    }));
    let mut facts = vec![];
    if cut > 0 {
        facts.push(labelled(
            "Cut",
            &format!("{cut} more characters are not shown; read the whole statement in the review app"),
        ));
    }
    facts.push(labelled(
        "Risk",
        &format!(
            "{} ({}) via `{}`",
            field("risk", 20),
            field("category", 40),
            field("tool", 40)
        ),
    ));
    for r in p["reasons"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        facts.push(labelled("Why", &shown(r, 300)));
    }
    if let Some(t) = tables(p) {
        facts.push(labelled("Tables", &t));
    }
    if let Some(n) = p["estimated_rows"].as_f64() {
        facts.push(labelled("Estimated rows", &format!("~{n:.0} (planner estimate)")));
    }
    facts.push(labelled(
        "Rule",
        &format!("{} — {}", field("rule", 200), field("rule_reason", 300)),
    ));
    let team = &a.review.team;
    if !team.reviewers.is_empty() || team.min_approvals > 1 {
        let who = if team.reviewers.is_empty() {
            "any verified reviewer".to_string()
        } else {
            team.reviewers.join(", ")
        };
        facts.push(labelled(
            "Reviewers",
            &shown(&format!("{who}; {} must approve", team.min_approvals), 300),
        ));
    }
    if !a.votes.is_empty() {
        let names: Vec<&str> = a.votes.iter().map(|v| v.principal.as_str()).collect();
        facts.push(labelled(
            "Approved so far",
            &shown(
                &format!("{} of {} ({})", names.len(), team.min_approvals, names.join(", ")),
                300,
            ),
        ));
    }
    if word != "pending" {
        let outcome = match decided_by {
            Some(by) => format!("{label} — decided by {}", shown(by, 200)),
            None => label.clone(),
        };
        facts.push(labelled("Outcome", &outcome));
    }
    rich.push(section(facts));

    let mut blocks = vec![
        json!({ "type": "header", "text": plain_text(&title, 150) }),
        json!({ "type": "rich_text", "elements": rich }),
        json!({ "type": "context", "elements": [plain_text(&format!(
            "Fingerprint {} · approval {} · expires {}",
            fingerprint(&a.hash),
            a.id,
            a.review.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ), 300)] }),
    ];
    if word == "pending" {
        blocks.push(buttons(a, cut == 0, review_link));
    } else if let Some(link) = review_link {
        blocks.push(json!({ "type": "actions", "block_id": ACTIONS, "elements": [open_button(link)] }));
    }
    (text, json!(blocks))
}

fn capitalised(word: &str) -> String {
    let w = word.replace('_', " ");
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => w,
    }
}

fn open_button(link: &str) -> Value {
    json!({ "type": "button", "action_id": "open", "text": plain_text("Open in review app", 75), "url": link })
}

/// Approve (with a confirmation), Dry run, Deny…, and the review app; only Deny and the review app
/// when the statement is not shown whole.
fn buttons(a: &Listed, whole: bool, review_link: Option<&str>) -> Value {
    let value = button_value(&a.id, &a.hash);
    let mut elements = vec![];
    if whole {
        elements.push(json!({
            "type": "button", "action_id": "approve", "style": "primary", "value": value,
            "text": plain_text("Approve", 75),
            "confirm": {
                "title": plain_text("Approve and run it?", 100),
                "text": plain_text(&format!("It runs and commits. Fingerprint {}.", fingerprint(&a.hash)), 300),
                "confirm": plain_text("Approve", 30),
                "deny": plain_text("Back", 30),
            },
        }));
        elements.push(json!({
            "type": "button", "action_id": "dry_run", "value": value, "text": plain_text("Dry run", 75),
        }));
    }
    elements.push(json!({
        "type": "button", "action_id": "deny", "style": "danger", "value": value, "text": plain_text("Deny…", 75),
    }));
    if let Some(link) = review_link {
        elements.push(open_button(link));
    }
    json!({ "type": "actions", "block_id": ACTIONS, "elements": elements })
}

/// The Deny dialog: an optional reason, sent back with the approval and hash in
/// `private_metadata`.
pub fn deny_view(id: &str, hash: &str, response_url: Option<&str>) -> Value {
    let meta = json!({ "id": id, "hash": hash, "response_url": response_url }).to_string();
    json!({
        "type": "modal",
        "callback_id": DENY_VIEW,
        "private_metadata": meta,
        "title": plain_text("Deny approval", 24),
        "submit": plain_text("Deny", 24),
        "close": plain_text("Cancel", 24),
        "blocks": [
            { "type": "section", "text": plain_text(&format!(
                "Deny {id} (fingerprint {})? Nothing runs; the requester is told the reason.", fingerprint(hash)), 3000) },
            { "type": "input", "block_id": "reason", "optional": true,
              "label": plain_text("Reason", 100),
              "element": { "type": "plain_text_input", "action_id": "reason", "multiline": true, "max_length": 500 } },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        approval::pending::{Review, State, Vote},
        call::Level,
        policy::Reviewers,
    };

    fn listed(sql: &str, state: State, votes: Vec<Vote>) -> Listed {
        Listed {
            id: "apr_1".into(),
            hash: "ab".repeat(32),
            state,
            review: Review {
                packet: json!({
                    "summary": "UPDATE on <!channel> via `query`",
                    "tool": "query",
                    "sql": sql,
                    "risk": "high",
                    "category": "write",
                    "reasons": ["*bold* <https://evil.example|click>"],
                    "tables": [{ "name": "public.orders", "tags": ["pii"] }],
                    "rule": "rule `r`",
                    "rule_reason": "why",
                    "requested_by": "alice",
                    "intent": "<@U0BOSS> said so \u{202e}",
                }),
                created_at: chrono::Utc::now(),
                expires_at: chrono::Utc::now(),
                level: Level::Team,
                nonce: "secret-nonce".into(),
                requester: Some("alice".into()),
                requester_aliases: vec![],
                team: Reviewers {
                    reviewers: vec!["group:dba".into()],
                    min_approvals: 2,
                    notify: vec![],
                },
            },
            votes,
            notes: Default::default(),
        }
    }

    fn kinds(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(t) = m.get("type").and_then(Value::as_str) {
                    out.push(t.to_string());
                }
                m.values().for_each(|x| kinds(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| kinds(x, out)),
            _ => {}
        }
    }

    fn action_ids(blocks: &Value) -> Vec<String> {
        blocks
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().unwrap().iter())
            .map(|e| e["action_id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn model_text_is_shown_as_typed_and_never_as_mrkdwn() {
        let (text, blocks) = message(
            &listed("UPDATE orders SET s = '</script>'", State::Pending, vec![]),
            None,
            None,
        );
        let mut types = vec![];
        kinds(&blocks, &mut types);
        assert!(!types.iter().any(|t| t == "mrkdwn"), "{types:?}");
        assert!(!text.contains('<') && text.contains("&lt;!channel&gt;"), "{text}");
        let shown = blocks.to_string();
        assert!(
            shown.contains("<@U0BOSS>") && shown.contains("\\\\u{202E}"),
            "shown as typed, hidden characters visible: {shown}"
        );
        assert!(shown.contains("</script>"));
        assert!(!shown.contains("secret-nonce"));
        assert_eq!(action_ids(&blocks), ["approve", "dry_run", "deny"]);
    }

    #[test]
    fn a_statement_too_long_to_show_whole_cannot_be_approved_from_slack() {
        let long = format!("UPDATE orders SET note = '{}'", "x".repeat(3000));
        let (_, blocks) = message(
            &listed(&long, State::Pending, vec![]),
            None,
            Some("https://p/review/approvals/apr_1"),
        );
        assert_eq!(action_ids(&blocks), ["deny", "open"]);
        assert!(blocks.to_string().contains("more characters are not shown"));
    }

    #[test]
    fn votes_show_while_pending_and_the_outcome_replaces_the_buttons() {
        let vote = Vote {
            principal: "bob".into(),
            decided_by: "bob (verified: slack T1)".into(),
            dry_run: false,
            max_rows_affected: None,
            reason: None,
        };
        let (_, blocks) = message(&listed("DELETE FROM t", State::Pending, vec![vote]), None, None);
        assert!(blocks.to_string().contains("1 of 2 (bob)"));
        assert_eq!(action_ids(&blocks).len(), 3, "still open for the second approval");
        let denied = State::Denied {
            reason: Some("no".into()),
        };
        let (text, blocks) = message(
            &listed("DELETE FROM t", denied, vec![]),
            Some("carol (verified: slack T1)"),
            None,
        );
        assert!(action_ids(&blocks).is_empty());
        assert!(blocks.to_string().contains("denied: no — decided by carol"), "{blocks}");
        assert!(text.contains("denied"));
    }
}
