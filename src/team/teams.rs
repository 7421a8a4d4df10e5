//! Microsoft Teams (`[teams.NAME]`, `notify = ["teams:NAME"]`): an Adaptive Card (1.4) posted
//! through a Workflows webhook with the review packet and a link to the review app, when an
//! approval is created, decided or expires. Workflows webhooks are one-way, so the decision is
//! made in the review app (or the API), never in Teams.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{
    Notifier, TeamContext,
    webhook::{Delivery, Keep, deliver, event_type, no_redirects},
};
use crate::{
    approval::{
        packet::visible,
        pending::{ApprovalEvent, Listed, fingerprint},
    },
    channels::teams::TeamsConfig,
};

/// The longest SQL a card shows; the review app shows all of it.
const SQL_SHOWN: usize = 3000;

struct Teams {
    ctx: Arc<TeamContext>,
    channels: BTreeMap<String, TeamsConfig>,
    client: reqwest::Client,
    records: tokio::sync::Mutex<()>,
}

pub fn notifier(ctx: &Arc<TeamContext>) -> Option<Arc<dyn Notifier>> {
    if ctx.config.teams.is_empty() {
        return None;
    }
    Some(Arc::new(Teams {
        ctx: ctx.clone(),
        channels: ctx.config.teams.clone(),
        client: no_redirects(),
        records: tokio::sync::Mutex::new(()),
    }))
}

#[async_trait]
impl Notifier for Teams {
    fn scheme(&self) -> &'static str {
        "teams"
    }

    async fn notify(&self, target: &str, event: &ApprovalEvent) -> Result<(), String> {
        let Some(channel) = self.channels.get(target) else {
            return Err(format!("the HTTP config has no `[teams.{target}]`"));
        };
        let Some(kind) = event_type(event) else {
            return Ok(());
        };
        if !matches!(kind, "approval.created" | "approval.decided" | "approval.expired") {
            return Ok(());
        }
        let card = card(
            &event.approval,
            event.by.as_deref(),
            &self.ctx.review_url(&event.approval.id),
        );
        let body = json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": card,
            }],
        })
        .to_string();
        let name = format!("teams:{target}");
        let no_headers = |_: i64| vec![];
        let delivery = Delivery {
            name: &name,
            url: channel.url.expose(),
            body,
            headers: &no_headers,
            retries: 3,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(15),
        };
        let keep = Keep {
            ctx: &self.ctx,
            lock: &self.records,
            id: &event.approval.id,
            event: kind,
            webhook_id: None,
        };
        deliver(&self.client, &delivery, &keep)
            .await
            .map_err(|e| format!("{kind} not posted: {e}"))
    }
}

/// A line of text. A `TextRun` takes no markdown, so model- and client-supplied text (made one
/// line, hidden characters visible, by [`shown`]) cannot form a link or emphasis.
fn line(label: Option<&str>, value: &str) -> Value {
    let mut inlines = vec![];
    if let Some(l) = label {
        inlines.push(json!({ "type": "TextRun", "text": format!("{l}: "), "weight": "Bolder" }));
    }
    if !value.is_empty() {
        inlines.push(json!({ "type": "TextRun", "text": value }));
    }
    json!({ "type": "RichTextBlock", "inlines": inlines })
}

/// The card for approval `a`: what was asked, by whom, the SQL, the risk, the outcome when
/// decided, and a button to the review app.
pub fn card(a: &Listed, by: Option<&str>, review_url: &str) -> Value {
    let p = &a.review.packet;
    let field = |name: &str, max: usize| shown(p[name].as_str().unwrap_or("-"), max);
    let (word, label) = a.state.words();
    let title = match word {
        "pending" => format!("pgwarden: approval needed — {}", field("summary", 200)),
        _ => format!("pgwarden: {} — {}", shown(&label, 200), field("summary", 200)),
    };
    let sql = p["sql"].as_str().unwrap_or_default();
    let head: String = sql.chars().take(SQL_SHOWN).collect();
    let cut = sql.chars().count() - head.chars().count();
    let mut body = vec![json!({
        "type": "RichTextBlock",
        "inlines": [{ "type": "TextRun", "text": title, "weight": "Bolder", "size": "Medium" }],
    })];
    if word != "pending" {
        let outcome = match by {
            Some(b) => format!("{label} — by {}", shown(b, 200)),
            None => label,
        };
        body.push(line(Some("Outcome"), &outcome));
    }
    body.push(line(Some("Requested by"), &field("requested_by", 300)));
    if let Some(i) = p["intent"].as_str() {
        body.push(line(Some("Intent (the model's words, unverified)"), &shown(i, 500)));
    }
    body.push(line(Some("SQL"), ""));
    body.push(json!({
        "type": "RichTextBlock",
        "inlines": [{ "type": "TextRun", "text": head, "fontType": "Monospace" }],
    }));
    if cut > 0 {
        body.push(line(
            None,
            &format!("… {cut} more characters: read all of it in the review app before deciding."),
        ));
    }
    body.push(line(
        Some("Risk"),
        &format!("{} ({})", field("risk", 20), field("category", 40)),
    ));
    let reasons: Vec<String> = p["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|r| shown(r, 300))
        .collect();
    if !reasons.is_empty() {
        body.push(line(Some("Why"), &reasons.join("; ")));
    }
    if let Some(t) = tables(p) {
        body.push(line(Some("Tables"), &t));
    }
    if let Some(n) = p["estimated_rows"].as_f64() {
        body.push(line(Some("Estimated rows"), &format!("~{n:.0} (planner estimate)")));
    }
    body.push(line(
        Some("Rule"),
        &format!("{} — {}", field("rule", 200), field("rule_reason", 300)),
    ));
    if !a.review.team.reviewers.is_empty() {
        body.push(line(Some("Reviewers"), &a.review.team.reviewers.join(", ")));
    }
    body.push(line(
        Some("Fingerprint"),
        &format!("{} · approval {}", fingerprint(&a.hash), a.id),
    ));
    json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": { "width": "Full" },
        "body": body,
        "actions": [{ "type": "Action.OpenUrl", "title": "Review in pgwarden", "url": review_url }],
    })
}

/// `s` on a card or in a message: hidden characters visible and at most `max` characters. The
/// packet's fields arrive escaped already (`one_line`, `visible`), and showing them again changes
/// nothing, so text is never escaped twice.
pub fn shown(s: &str, max: usize) -> String {
    let v = visible(s);
    let n = v.chars().count();
    if n <= max {
        return v;
    }
    format!(
        "{}… ({} more characters)",
        v.chars().take(max).collect::<String>(),
        n - max
    )
}

/// `orders [pii], items`.
pub fn tables(p: &Value) -> Option<String> {
    let t: Vec<String> = p["tables"]
        .as_array()?
        .iter()
        .map(|t| {
            let name = shown(t["name"].as_str().unwrap_or("?"), 120);
            let tags: Vec<&str> = t["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if tags.is_empty() {
                name
            } else {
                format!("{name} [{}]", shown(&tags.join(", "), 120))
            }
        })
        .collect();
    (!t.is_empty()).then(|| t.join(", "))
}
