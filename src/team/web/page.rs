//! The review app's pages, rendered on the server from `team::view`'s JSON. Everything shown is
//! escaped here (the packet holds the model's words and SQL: hostile text), with hidden characters
//! made visible; the pages carry no inline script or style, so the CSP can forbid both. The
//! script (`review.js`) only refreshes state and votes, through `textContent`.

use serde_json::Value;

use super::session::Session;
use crate::text::visible;

/// `s` safe inside HTML text and quoted attributes, hidden characters shown as `\u{…}`.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in visible(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A whole page: the header (who is signed in, sign out) and `main`.
pub fn layout(title: &str, who: Option<&Session>, main: &str) -> String {
    let account = match who {
        Some(s) => {
            let name = match &s.display {
                Some(d) => format!("{} ({})", esc(&s.principal), esc(d)),
                None => esc(&s.principal),
            };
            format!(
                r#"<p class="who">Signed in as <strong id="principal">{name}</strong></p>
<form method="post" action="/review/logout" class="signout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Sign out</button></form>"#,
                csrf = esc(&s.csrf)
            )
        }
        None => String::new(),
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · pgwarden review</title>
<link rel="stylesheet" href="/review/static/review.css">
<script src="/review/static/review.js" defer></script>
</head>
<body>
<header class="top"><a class="brand" href="/review">pgwarden review</a>{account}</header>
<main id="main">
{main}
</main>
</body>
</html>
"#,
        title = esc(title)
    )
}

/// A page with one message (signed out, a sign-in that failed, not found).
pub fn message(title: &str, who: Option<&Session>, body: &str, link: Option<(&str, &str)>) -> String {
    let link = link
        .map(|(href, label)| format!(r#"<p><a href="{}">{}</a></p>"#, esc(href), esc(label)))
        .unwrap_or_default();
    layout(
        title,
        who,
        &format!("<h1>{}</h1>\n<p>{}</p>\n{link}", esc(title), esc(body)),
    )
}

/// "1 of 2" approvals given; all of them once it is approved (the last approval ends the wait
/// without leaving a vote).
fn tally(v: &Value) -> String {
    let votes = v.get("votes").and_then(Value::as_array).map_or(0, Vec::len) as u64;
    let needed = v.get("min_approvals").and_then(Value::as_u64).unwrap_or(1);
    let approved = matches!(
        text(v, "state"),
        "approved" | "dry_run" | "executing" | "done" | "failed"
    );
    format!("{} of {needed}", if approved { needed } else { votes })
}

fn risk_badge(risk: &str) -> String {
    let class = match risk {
        "low" | "medium" | "high" | "critical" => risk,
        _ => "unknown",
    };
    format!(r#"<span class="badge risk-{class}">{}</span>"#, esc(risk))
}

/// The list of approvals the reviewer may see, refreshed live by the script.
pub fn list(who: &Session, approvals: &[Value]) -> String {
    let rows: String = approvals.iter().map(row).collect();
    let empty = if approvals.is_empty() { "" } else { " hidden" };
    let main = format!(
        r#"<h1>Approvals</h1>
<p class="muted">Approvals you asked for or may decide. This list updates by itself; <span id="live" role="status">up to date</span>.</p>
<table id="approvals" data-live="/review/api/approvals">
<thead><tr><th scope="col">Approval</th><th scope="col">What</th><th scope="col">Requested by</th><th scope="col">Risk</th><th scope="col">State</th><th scope="col">Approvals</th><th scope="col">Expires</th></tr></thead>
<tbody>
{rows}</tbody>
</table>
<p id="empty"{empty}>Nothing to review.</p>"#
    );
    layout("Approvals", Some(who), &main)
}

fn row(v: &Value) -> String {
    let p = &v["packet"];
    let id = text(v, "id");
    format!(
        "<tr data-id=\"{id}\"><td><a href=\"/review/approvals/{id}\"><code>{fp}</code></a></td><td>{summary}</td><td>{who}</td><td>{risk}</td><td class=\"state state-{state}\">{label}</td><td>{tally}</td><td><time datetime=\"{exp}\">{exp}</time></td></tr>\n",
        id = esc(id),
        fp = esc(text(v, "fingerprint")),
        summary = esc(text(p, "summary")),
        who = esc(v
            .get("requester")
            .and_then(Value::as_str)
            .unwrap_or("an unverified caller")),
        risk = risk_badge(text(p, "risk")),
        state = esc(text(v, "state")),
        label = esc(text(v, "state_label")),
        tally = tally(v),
        exp = esc(text(v, "expires_at")),
    )
}

/// What the page says after a decision was sent: done, or refused and why.
pub enum Outcome {
    Done(String),
    Refused(String),
}

/// Whether the signed-in person may act on this approval here.
pub struct Standing {
    /// They asked for it: nobody approves their own request.
    pub requester: bool,
    /// The rule names them (or names no one).
    pub reviewer: bool,
}

/// One approval: the whole review packet, the votes so far, and the decision form.
pub fn approval(who: &Session, v: &Value, standing: &Standing, outcome: Option<&Outcome>) -> String {
    let p = &v["packet"];
    let id = text(v, "id");
    let state = text(v, "state");
    let flash = match outcome {
        Some(Outcome::Done(m)) => format!(r#"<div id="outcome" class="flash ok" role="status">{}</div>"#, esc(m)),
        Some(Outcome::Refused(m)) => format!(
            r#"<div id="outcome" class="flash refused" role="alert"><strong>Refused:</strong> {}</div>"#,
            esc(m)
        ),
        None => String::new(),
    };
    let intent = match p.get("intent").and_then(Value::as_str) {
        Some(i) => format!(r#"<blockquote id="intent">{}</blockquote>"#, esc(i)),
        None => r#"<p id="intent" class="muted">The model gave no reason.</p>"#.to_string(),
    };
    let mut facts = String::new();
    let mut fact = |term: &str, html: String| {
        facts.push_str(&format!("<dt>{}</dt><dd>{html}</dd>\n", esc(term)));
    };
    if let Some(db) = p.get("database").and_then(Value::as_str) {
        fact("Database", format!(r#"<span id="database">{}</span>"#, esc(db)));
    }
    fact(
        "Risk",
        format!(
            r#"<span id="risk">{}</span> · category {}"#,
            risk_badge(text(p, "risk")),
            esc(text(p, "category"))
        ),
    );
    if let Some(reasons) = p.get("reasons").and_then(Value::as_array).filter(|r| !r.is_empty()) {
        let items: String = reasons
            .iter()
            .map(|r| format!("<li>{}</li>", esc(r.as_str().unwrap_or_default())))
            .collect();
        fact("Why it needs review", format!(r#"<ul id="reasons">{items}</ul>"#));
    }
    if let Some(tables) = p.get("tables").and_then(Value::as_array).filter(|t| !t.is_empty()) {
        let items: String = tables.iter().map(table).collect();
        fact("Tables", format!(r#"<ul id="tables">{items}</ul>"#));
    }
    if let Some(n) = p.get("estimated_rows").and_then(Value::as_f64) {
        fact(
            "Estimated rows",
            format!(r#"<span id="rows">~{n:.0}</span> (the planner's estimate)"#),
        );
    }
    fact(
        "Decided by",
        format!("{} — {}", esc(text(p, "rule")), esc(text(p, "rule_reason"))),
    );
    for d in p.get("details").and_then(Value::as_array).into_iter().flatten() {
        fact("Detail", esc(d.as_str().unwrap_or_default()));
    }
    fact(
        "Fingerprint",
        format!(r#"<code id="fingerprint">{}</code>"#, esc(text(v, "fingerprint"))),
    );
    fact(
        "Action hash",
        format!(r#"<code id="action-hash">{}</code>"#, esc(text(v, "action_hash"))),
    );
    fact(
        "Requested",
        format!(r#"<time datetime="{t}">{t}</time>"#, t = esc(text(v, "created_at"))),
    );
    fact(
        "Expires",
        format!(r#"<time datetime="{t}">{t}</time>"#, t = esc(text(v, "expires_at"))),
    );
    let reviewers: Vec<&str> = v
        .get("reviewers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    fact(
        "Who may approve",
        if reviewers.is_empty() {
            "anyone who may approve at this level, except the requester".to_string()
        } else {
            format!("{} (never the requester)", esc(&reviewers.join(", ")))
        },
    );
    let votes: String = v
        .get("votes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(vote)
        .collect();
    let decide = if state != "pending" {
        String::new()
    } else if standing.requester {
        r#"<p class="notice">You asked for this call. Nobody approves their own request: another reviewer must decide it.</p>"#.to_string()
    } else if !standing.reviewer {
        r#"<p class="notice">You are not among this approval's reviewers.</p>"#.to_string()
    } else {
        form(id, text(v, "action_hash"), &who.csrf)
    };
    let main = format!(
        r#"<p><a href="/review">← All approvals</a></p>
<h1>Approval <code>{fp}</code></h1>
{flash}
<article id="approval" data-id="{id}" data-live="/review/api/approvals/{id}" data-state="{state_word}">
<p class="state-line">State: <strong id="state" class="state state-{state_word}">{label}</strong></p>
<p id="summary" class="summary">{summary}</p>
<section aria-labelledby="h-who"><h2 id="h-who">Requested by (verified identity)</h2>
<p id="requester"><strong>{requester}</strong></p>
<p id="requested-by" class="muted">{requested_by}</p></section>
<section aria-labelledby="h-intent" class="intent"><h2 id="h-intent">The model's stated intent <span class="muted">(its own words, not verified)</span></h2>
{intent}</section>
<section aria-labelledby="h-sql"><h2 id="h-sql">SQL</h2>
<pre id="sql"><code>{sql}</code></pre></section>
<dl class="facts">
{facts}</dl>
<section aria-labelledby="h-votes"><h2 id="h-votes">Approvals so far: <span id="tally">{tally}</span></h2>
<ul id="votes">{votes}</ul></section>
<section id="decide" aria-labelledby="h-decide"><h2 id="h-decide">Your decision</h2>
<p id="closed" class="notice"{closed}>This approval is no longer waiting: <span id="closed-state">{label}</span>.</p>
{decide}</section>
</article>"#,
        fp = esc(text(v, "fingerprint")),
        id = esc(id),
        state_word = esc(state),
        label = esc(text(v, "state_label")),
        summary = esc(text(p, "summary")),
        requester = esc(v
            .get("requester")
            .and_then(Value::as_str)
            .unwrap_or("an unverified caller")),
        requested_by = esc(text(p, "requested_by")),
        sql = esc(text(p, "sql")),
        tally = tally(v),
        closed = if state == "pending" { " hidden" } else { "" },
    );
    layout(&format!("Approval {}", text(v, "fingerprint")), Some(who), &main)
}

fn table(t: &Value) -> String {
    // `{"name", "tags"}` as the hub shows it; a `(name, tags)` pair as `ReviewPacket` serialises it.
    let (name, tags) = match t {
        Value::Array(pair) => (pair.first(), pair.get(1)),
        other => (other.get("name"), other.get("tags")),
    };
    let tags: String = tags
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|g| format!(r#" <span class="tag">{}</span>"#, esc(g)))
        .collect();
    format!(
        "<li><code>{}</code>{tags}</li>",
        esc(name.and_then(Value::as_str).unwrap_or_default())
    )
}

fn vote(v: &Value) -> String {
    let mut terms = vec![];
    if v.get("dry_run").and_then(Value::as_bool) == Some(true) {
        terms.push("as a dry run".to_string());
    }
    if let Some(n) = v.get("max_rows_affected").and_then(Value::as_u64) {
        terms.push(format!("row limit {n}"));
    }
    if let Some(r) = v.get("reason").and_then(Value::as_str) {
        terms.push(format!("“{r}”"));
    }
    let terms = if terms.is_empty() {
        String::new()
    } else {
        format!(" — {}", esc(&terms.join(", ")))
    };
    format!("<li>{}{terms}</li>", esc(text(v, "decided_by")))
}

fn form(id: &str, hash: &str, csrf: &str) -> String {
    format!(
        r#"<form id="decision" method="post" action="/review/approvals/{id}/decision">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="action_hash" value="{hash}">
<p class="hint">You decide on the action with fingerprint <code>{fp}</code>; if it changed, pgwarden refuses the decision.</p>
<div class="field"><label for="reason">Reason <span class="muted">(optional; shown to the requester and kept in the audit trail)</span></label>
<textarea id="reason" name="reason" rows="2" maxlength="500"></textarea></div>
<div class="field"><label for="max-rows">Row limit <span class="muted">(optional: roll back if more rows change)</span></label>
<input id="max-rows" name="max_rows_affected" type="number" min="0" step="1" inputmode="numeric"></div>
<div class="buttons">
<button type="submit" name="decision" value="approve" id="approve" class="primary">Approve</button>
<button type="submit" name="decision" value="dry_run" id="dry-run">Approve as a dry run</button>
<button type="submit" name="decision" value="deny" id="deny" class="danger">Deny</button>
</div>
</form>"#,
        id = esc(id),
        csrf = esc(csrf),
        hash = esc(hash),
        fp = esc(&crate::approval::pending::fingerprint(hash)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_text_is_escaped_and_hidden_characters_show() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("a\u{202E}b"), "a\\u{202E}b");
        let who = Session {
            principal: "bob@example.com".into(),
            display: Some("<b>Bob</b>".into()),
            groups: vec![],
            aliases: vec![],
            csrf: "t".into(),
            issuer: "i".into(),
        };
        let v = json!({
            "id": "ap\"1", "state": "pending", "state_label": "waiting", "action_hash": "abcdef0123",
            "fingerprint": "abcd-ef01-23", "min_approvals": 2, "votes": [{"decided_by": "carol <c>"}],
            "packet": {"summary": "<img src=x onerror=alert(1)>", "sql": "UPDATE t SET a='</pre><script>'",
                       "intent": "<script>steal()</script>", "risk": "high\" onmouseover=\"x",
                       "tables": [{"name": "public.t", "tags": ["<pii>"]}, ["public.u", ["pii"]]],
                       "reasons": ["<why>"]}
        });
        let standing = Standing {
            requester: false,
            reviewer: true,
        };
        let page = approval(&who, &v, &standing, Some(&Outcome::Refused("<nope>".into())));
        for hostile in [
            "<img",
            "<script>",
            "</pre><script>",
            "<pii>",
            "<why>",
            "<c>",
            "<b>",
            "<nope>",
            "\" onmouseover",
        ] {
            assert!(!page.contains(hostile), "{hostile} unescaped in:\n{page}");
        }
        assert!(page.contains("1 of 2"));
        assert!(
            page.contains("<code>public.t</code> <span class=\"tag\">&lt;pii&gt;</span>"),
            "{page}"
        );
        assert!(
            page.contains("<code>public.u</code> <span class=\"tag\">pii</span>"),
            "{page}"
        );
        assert!(page.contains(r#"class="badge risk-unknown""#));
        assert!(!page.contains("style="), "no inline style (CSP)");
        assert!(!page.contains("<script>"), "no inline script (CSP)");
        let own = approval(
            &who,
            &v,
            &Standing {
                requester: true,
                reviewer: true,
            },
            None,
        );
        assert!(own.contains("Nobody approves their own request") && !own.contains(r#"id="decision""#));
    }
}
