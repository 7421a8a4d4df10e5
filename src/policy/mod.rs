//! Who may do what without asking: rules, table tags and column masks loaded from
//! `tool-policies/*.toml`, and `evaluate`, a pure function from an assessed call to a decision.
//!
//! Rules are checked top to bottom and the first match decides; no match is `deny`. Match keys are
//! read in the safe direction for each effect: an `allow` rule must cover *everything* the call
//! touches (every category, every table), an `approve` or `deny` rule needs only *one* hit. So an
//! allow rule never lets an unlisted table or category ride along, and a deny rule is never dodged
//! by adding a harmless table to the query.

mod load;
mod matching;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    call::Tool,
    classify::{Assessment, Category, Risk},
};
pub use load::{LoadError, PolicyErrors};
pub use matching::{Glob, is_database_name};

/// The built-in policy used when the operator gives none: `tool-policies/default.toml`.
pub const DEFAULT_POLICY: &str = include_str!("../../tool-policies/default.toml");

/// How long a reviewer has to answer, when neither the rule nor `[defaults]` say. Defaults to 5 min.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Approve,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Approve => "approve",
            Effect::Deny => "deny",
        }
    }
}

/// The longest duration any setting may have: 24 days, within Postgres's `statement_timeout`
/// (`INT_MAX` ms) and far from the point where adding to a clock overflows (and panics).
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(24 * 24 * 3600);

/// How a masked column is shown. Every mask yields text (or NULL for NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mask {
    /// `alice@example.com` → `a***@example.com`.
    Email,
    /// Any value → `[redacted]`.
    Redact,
    /// A salted SHA-256 prefix: equal values stay equal (the salt is per database), so joins and
    /// `GROUP BY` still work, but the value cannot be looked up.
    Hash,
    /// `123-45-6789` → `***6789`; values of four characters or fewer are fully hidden.
    Last4,
    /// Always NULL.
    Null,
}

impl Mask {
    pub fn as_str(self) -> &'static str {
        match self {
            Mask::Email => "email",
            Mask::Redact => "redact",
            Mask::Hash => "hash",
            Mask::Last4 => "last4",
            Mask::Null => "null",
        }
    }
}

/// Where a rule or setting was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Per-call limits a rule or `[defaults]` may set. Unset means "the server's setting".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallLimits {
    /// The most rows a call returns.
    pub max_rows: Option<u32>,
    /// The most result bytes a call returns.
    pub max_result_bytes: Option<u64>,
    pub statement_timeout: Option<Duration>,
    pub approval_timeout: Option<Duration>,
}

impl CallLimits {
    /// `self`, with unset values taken from `fallback`.
    fn or(self, fallback: CallLimits) -> CallLimits {
        CallLimits {
            max_rows: self.max_rows.or(fallback.max_rows),
            max_result_bytes: self.max_result_bytes.or(fallback.max_result_bytes),
            statement_timeout: self.statement_timeout.or(fallback.statement_timeout),
            approval_timeout: self.approval_timeout.or(fallback.approval_timeout),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub effect: Effect,
    /// Shown to the model on `deny` and to the reviewer on `approve`.
    pub reason: Option<String>,
    pub tools: Option<Vec<Tool>>,
    pub categories: Option<Vec<Category>>,
    /// Patterns `schema.table`, or `NAME:schema.table` for one database only.
    pub tables: Option<Vec<Glob>>,
    pub tags: Option<Vec<String>>,
    /// The databases the rule applies to (`databases = ["prod"]`); `None`: every database.
    /// Evaluate a database's projection (`Policy::for_database`), where this is always `None`.
    pub databases: Option<Vec<String>>,
    pub risk_at_least: Option<Risk>,
    pub principals: Option<Vec<Glob>>,
    /// Matches a caller in any of these groups (globs).
    pub groups: Option<Vec<Glob>>,
    pub limits: CallLimits,
    /// The weakest approval channel this rule accepts (on top of `[approval.min_channel]`);
    /// `team` when the rule names `reviewers`.
    pub min_channel: Option<Level>,
    /// Who may approve its calls, how many must, and where they are told.
    pub review: Reviewers,
    pub origin: Origin,
}

/// A rule's `reviewers`, `min_approvals` and `notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reviewers {
    /// Principals, and groups written `group:NAME`, who may approve; empty: anyone who may
    /// approve at the call's level. The requester never approves their own call.
    pub reviewers: Vec<String>,
    /// Distinct people who must approve (1 unless set); any one denial ends it.
    pub min_approvals: u32,
    /// Where new approvals are announced: `slack:#channel`, `teams:NAME`, `webhook:NAME`.
    pub notify: Vec<String>,
}

impl Default for Reviewers {
    fn default() -> Self {
        Reviewers {
            reviewers: vec![],
            min_approvals: 1,
            notify: vec![],
        }
    }
}

impl Reviewers {
    /// Only verified reviewers can satisfy it.
    pub fn is_team(&self) -> bool {
        !self.reviewers.is_empty() || self.min_approvals > 1
    }

    /// Whether a reviewer with this principal and these groups is named.
    pub fn names(&self, principal: &str, groups: &[String]) -> bool {
        self.reviewers.is_empty()
            || self.reviewers.iter().any(|r| match r.strip_prefix("group:") {
                Some(g) => groups.iter().any(|have| have == g),
                None => r == principal,
            })
    }
}

/// Tags given to the tables a pattern matches.
#[derive(Debug, Clone)]
pub struct TableTags {
    /// `schema.table`, or `NAME:schema.table` for one database only.
    pub pattern: Glob,
    pub tags: Vec<String>,
    pub origin: Origin,
}

// The review surfaces and how strongly each vouches for the person live in `call`, so policy,
// approval, audit and the model-facing text share one vocabulary.
pub use crate::call::{Level, Surface};

/// `[approval]`: how approvals outside the client's own prompt work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSettings {
    /// How long a guarded call or `pgwarden_await` waits for a decision before answering "still
    /// pending". Defaults to 40 s, below every known client's tool-call timeout.
    pub wait_budget: Duration,
    /// How long a pending approval waits for a person. Defaults to 10 min.
    pub pending_ttl: Duration,
    /// A client prompt declined or dismissed faster than this was answered by the client, not by
    /// a person reading it (some clients auto-decline): the approval moves on to the console or the
    /// card. Defaults to 1 s; zero takes every decline as a person's.
    pub instant_decline: Duration,
    /// How long an approved action waits for `pgwarden_await` to run it. Defaults to 5 min.
    pub approved_ttl: Duration,
    /// Open approvals per session. Defaults to 3.
    pub max_open_per_session: usize,
    /// The enabled channels. Defaults to all of them (the team surfaces exist only with `serve --http`).
    pub channels: BTreeSet<Surface>,
    /// The weakest channel that may approve a call of each risk (low, medium, high, critical).
    /// Defaults to `client` up to high and `local` for critical.
    pub min_channel: BTreeMap<Risk, Level>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            wait_budget: Duration::from_secs(40),
            pending_ttl: Duration::from_secs(600),
            instant_decline: Duration::from_secs(1),
            approved_ttl: Duration::from_secs(300),
            max_open_per_session: 3,
            channels: Surface::ALL.into(),
            min_channel: [
                (Risk::Low, Level::Client),
                (Risk::Medium, Level::Client),
                (Risk::High, Level::Client),
                (Risk::Critical, Level::Local),
            ]
            .into(),
        }
    }
}

impl ApprovalSettings {
    /// The weakest channel allowed for a call of `risk` under a rule asking for at least `rule`.
    pub fn level_for(&self, risk: Risk, rule: Option<Level>) -> Level {
        self.level_and_source(risk, rule.map(|l| ("", l))).0
    }

    pub fn enabled(&self, channel: Surface) -> bool {
        self.channels.contains(&channel)
    }

    /// Whether an enabled channel can give `local` approval (the console or the terminal).
    pub fn local_enabled(&self) -> bool {
        self.enabled(Surface::Console) || self.enabled(Surface::Cli)
    }

    /// The weakest channel for `risk` under a rule asking for at least `rule`, and the setting
    /// that asks for it: `[approval.min_channel] critical` or the rule's `min_channel`.
    pub fn level_and_source(&self, risk: Risk, rule: Option<(&str, Level)>) -> (Level, String) {
        let by_risk = self.min_channel.get(&risk).copied().unwrap_or(Level::Client);
        match rule {
            Some((id, level)) if level > by_risk => {
                (level, format!("rule `{id}`'s `min_channel = \"{}\"`", level.as_str()))
            }
            _ => (
                by_risk,
                format!("`[approval.min_channel] {} = \"{}\"`", risk.as_str(), by_risk.as_str()),
            ),
        }
    }
}

/// A loaded, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub defaults: CallLimits,
    pub approval: ApprovalSettings,
    pub rules: Vec<Rule>,
    /// `[[database_role]]`: the role a caller's transactions take (`SET LOCAL ROLE`), first match.
    pub roles: Vec<RoleMapping>,
    pub tables: Vec<TableTags>,
    /// `schema.table` (or `NAME:schema.table` for one database only) → column → mask, names
    /// exactly as Postgres stores them.
    pub masks: BTreeMap<String, BTreeMap<String, Mask>>,
    /// Where each mask was set, by its `[columns."…"]` key (`[NAME:]schema.table.column`).
    pub mask_origins: BTreeMap<String, Origin>,
    /// The files it came from, in load order.
    pub sources: Vec<String>,
}

/// Callers (by principal and group, both when both are given) whose transactions take `role`:
/// a narrower role than the login, which stays the ceiling.
#[derive(Debug, Clone)]
pub struct RoleMapping {
    pub role: String,
    pub principals: Option<Vec<Glob>>,
    pub groups: Option<Vec<Glob>>,
    /// The databases the mapping applies to; `None`: every database.
    pub databases: Option<Vec<String>>,
    pub origin: Origin,
}

impl Policy {
    /// The longest a person may be asked to decide one call (a rule's or the defaults'
    /// `approval_timeout`, else the built-in 5 minutes): how long a prompt may keep a session open.
    pub fn longest_approval_wait(&self) -> Duration {
        self.rules
            .iter()
            .filter_map(|r| r.limits.approval_timeout)
            .chain(self.defaults.approval_timeout)
            .fold(DEFAULT_APPROVAL_TIMEOUT, Duration::max)
    }

    /// The database role of the first `[[database_role]]` that matches the caller.
    pub fn role_for(&self, principal: Option<&str>, groups: &[String]) -> Option<&str> {
        self.roles
            .iter()
            .find(|m| {
                m.principals
                    .as_ref()
                    .is_none_or(|ps| principal.is_some_and(|p| ps.iter().any(|g| g.matches(p))))
                    && m.groups
                        .as_ref()
                        .is_none_or(|gs| groups.iter().any(|g| gs.iter().any(|p| p.matches(g))))
            })
            .map(|m| m.role.as_str())
    }
}

/// What is being decided: one tool call, as classified.
pub struct Request<'a> {
    pub tool: Tool,
    pub assessment: &'a Assessment,
    /// Who is calling: `--principal` on stdio, the verified identity over HTTP.
    pub principal: Option<&'a str>,
    /// The caller's verified groups.
    pub groups: &'a [String],
}

/// A masked column the call touches, for prompts and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaskedColumn {
    /// `schema.table.column`.
    pub column: String,
    pub mask: Mask,
}

/// The outcome of `evaluate`: the effect, the rule that decided and what applies to the call.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub effect: Effect,
    /// The deciding rule's id; `None` when no rule matched (and the effect is `deny`).
    pub rule: Option<String>,
    pub origin: Option<Origin>,
    /// The rule's `reason`, or a sentence saying what matched.
    pub reason: String,
    #[serde(serialize_with = "ser_opt_duration")]
    pub statement_timeout: Option<Duration>,
    pub max_rows: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_result_bytes: Option<u64>,
    #[serde(serialize_with = "ser_duration")]
    pub approval_timeout: Duration,
    /// Tags of the tables the call touches.
    pub tags: BTreeMap<String, Vec<String>>,
    /// Masks on the tables the call touches.
    pub masks: Vec<MaskedColumn>,
    /// The deciding rule's `min_channel`, if it set one.
    pub min_channel: Option<Level>,
    /// The deciding rule's reviewers.
    pub review: Reviewers,
}

impl Decision {
    /// "rule `x` (file:line)", or "no rule" when none matched.
    pub fn rule_label(&self) -> String {
        match (&self.rule, &self.origin) {
            (Some(id), Some(origin)) => format!("rule `{id}` ({origin})"),
            (Some(id), None) => format!("rule `{id}`"),
            _ => "no policy rule".into(),
        }
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

impl Policy {
    /// The built-in `default.toml`.
    pub fn builtin() -> Policy {
        load::parse_sources(&[("built-in default.toml".into(), DEFAULT_POLICY.into())])
            .expect("the built-in default policy is valid (tested)")
    }

    /// Loads a file, or every `*.toml` in a directory in name order.
    pub fn load(path: &std::path::Path) -> Result<Policy, PolicyErrors> {
        load::load_path(path)
    }

    /// Parses policy text; `name` is used in error messages.
    pub fn parse(name: &str, text: &str) -> Result<Policy, PolicyErrors> {
        load::parse_sources(&[(name.into(), text.into())])
    }

    /// Tags of `table` (`schema.table`), from every matching `[tables."…"]` entry.
    pub fn tags_of(&self, table: &str) -> BTreeSet<&str> {
        self.tables
            .iter()
            .filter(|t| t.pattern.matches(table))
            .flat_map(|t| t.tags.iter().map(String::as_str))
            .collect()
    }

    /// Decides `request`: the first matching rule wins; no match is `deny`.
    pub fn evaluate(&self, request: &Request<'_>) -> Decision {
        let a = request.assessment;
        let mut touched: BTreeSet<&str> = a.tables.iter().map(String::as_str).collect();
        touched.extend(a.cte_shadowed.iter().map(String::as_str));
        let tags: BTreeMap<&str, BTreeSet<&str>> = touched.iter().map(|t| (*t, self.tags_of(t))).collect();
        let subject = matching::Subject {
            tool: request.tool,
            categories: a.categories.iter().copied().collect(),
            risk: a.risk,
            tables: &tags,
            principal: request.principal,
            groups: request.groups,
        };
        let rule = self.rules.iter().find(|r| matching::matches(r, &subject));
        let limits = rule.map(|r| r.limits).unwrap_or_default().or(self.defaults);
        Decision {
            effect: rule.map_or(Effect::Deny, |r| r.effect),
            rule: rule.map(|r| r.id.clone()),
            origin: rule.map(|r| r.origin.clone()),
            reason: match rule {
                Some(r) => r.reason.clone().unwrap_or_else(|| matching::describe(r)),
                None => "no rule matched this call, and what no rule allows is denied".into(),
            },
            statement_timeout: limits.statement_timeout,
            max_rows: limits.max_rows,
            max_result_bytes: limits.max_result_bytes,
            approval_timeout: limits.approval_timeout.unwrap_or(DEFAULT_APPROVAL_TIMEOUT),
            tags: tags
                .iter()
                .filter(|(_, t)| !t.is_empty())
                .map(|(table, t)| (table.to_string(), t.iter().map(|s| s.to_string()).collect()))
                .collect(),
            masks: touched
                .iter()
                .filter_map(|t| self.masks.get(*t).map(|cols| (t, cols)))
                .flat_map(|(t, cols)| {
                    cols.iter().map(move |(c, m)| MaskedColumn {
                        column: format!("{t}.{c}"),
                        mask: *m,
                    })
                })
                .collect(),
            min_channel: rule.and_then(|r| r.min_channel),
            review: rule.map(|r| r.review.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests;
