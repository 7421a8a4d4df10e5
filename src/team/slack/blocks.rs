//! The Slack message of an approval (Block Kit) and the Deny dialog. Everything the model or the
//! client supplied goes into `rich_text` text elements, which Slack shows as typed: no mrkdwn, no
//! links, no mentions can be forged from a statement or an intent. A statement too long to show
//! whole gets no Approve button: nobody approves text they could not read.

use serde_json::{Value, json};

use crate::approval::{
    packet::one_line,
    pending::{Listed, fingerprint},
};

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
    let field = |name: &str, max: usize| one_line(p[name].as_str().unwrap_or("-"), max);
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
            format!("pgwarden approval {}: {}", a.id, escaped(&one_line(&label, 200))),
        )
    };

    let sql = p["sql"].as_str().unwrap_or_default();
    let shown: String = sql.chars().take(SQL_SHOWN).collect();
    let cut = sql.chars().count() - shown.chars().count();
    let mut lines = vec![];
    let requester = a.review.requester.as_deref().unwrap_or("(not verified)");
    lines.push(labelled("Requested by", &one_line(requester, 120)));
    lines.push(labelled("Caller", &field("requested_by", 300)));
    if let Some(i) = p["intent"].as_str() {
        lines.push(labelled("Intent (the model's words, unverified)", &one_line(i, 500)));
    }
    lines.push(labelled("SQL", ""));
    let mut rich = vec![section(lines)];
    rich.push(json!({
        "type": "rich_text_preformatted",
        "elements": [plain(if shown.is_empty() { "-" } else { &shown })],
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
        facts.push(labelled("Why", &one_line(r, 300)));
    }
    if let Some(t) = super::super::teams::tables(p) {
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
            &one_line(&format!("{who}; {} must approve", team.min_approvals), 300),
        ));
    }
    if !a.votes.is_empty() {
        let names: Vec<&str> = a.votes.iter().map(|v| v.principal.as_str()).collect();
        facts.push(labelled(
            "Approved so far",
            &one_line(
                &format!("{} of {} ({})", names.len(), team.min_approvals, names.join(", ")),
                300,
            ),
        ));
    }
    if word != "pending" {
        let outcome = match decided_by {
            Some(by) => format!("{label} — decided by {}", one_line(by, 200)),
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
