//! Reading policy files: TOML into raw structs, then every check that makes a policy trustworthy
//! (known keys and values, unique ids, no unreachable rules, tags that exist), each error naming
//! its file and line and saying what is expected.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    ops::Range,
    path::Path,
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::{
    ApprovalSettings, CallLimits, Effect, Glob, Level, Mask, Origin, Policy, Reviewers, Rule, Surface, TableTags,
    matching,
};
use crate::{
    call::Tool,
    classify::{Category, Risk},
    text::quoted,
};

/// One thing wrong with a policy, at a place when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub origin: Option<Origin>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o) => write!(f, "`{o}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Everything wrong with a policy, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<LoadError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    defaults: Option<Spanned<RawLimits>>,
    approval: Option<Spanned<RawApproval>>,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    database_role: Vec<RawRole>,
    #[serde(default)]
    tables: BTreeMap<Spanned<String>, RawTable>,
    #[serde(default)]
    columns: BTreeMap<Spanned<String>, RawColumn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_rows: Option<Spanned<i64>>,
    max_result_bytes: Option<Spanned<RawBytes>>,
    statement_timeout: Option<Spanned<String>>,
    approval_timeout: Option<Spanned<String>>,
}

/// A byte size: a whole number of bytes, or a string such as `"16MiB"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawBytes {
    Bytes(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    wait_budget: Option<Spanned<String>>,
    pending_ttl: Option<Spanned<String>>,
    approved_ttl: Option<Spanned<String>>,
    instant_decline: Option<Spanned<String>>,
    max_open_per_session: Option<Spanned<i64>>,
    channels: Option<Spanned<Vec<Surface>>>,
    min_channel: Option<BTreeMap<Risk, Level>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    effect: Effect,
    reason: Option<String>,
    tools: Option<Spanned<Vec<String>>>,
    categories: Option<Spanned<Vec<Category>>>,
    tables: Option<Spanned<Vec<String>>>,
    tags: Option<Spanned<Vec<String>>>,
    risk_at_least: Option<Risk>,
    principals: Option<Spanned<Vec<String>>>,
    groups: Option<Spanned<Vec<String>>>,
    databases: Option<Spanned<Vec<String>>>,
    max_rows: Option<Spanned<i64>>,
    max_result_bytes: Option<Spanned<RawBytes>>,
    statement_timeout: Option<Spanned<String>>,
    approval_timeout: Option<Spanned<String>>,
    min_channel: Option<Level>,
    reviewers: Option<Spanned<Vec<String>>>,
    min_approvals: Option<Spanned<i64>>,
    notify: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    role: Spanned<String>,
    principals: Option<Spanned<Vec<String>>>,
    groups: Option<Spanned<Vec<String>>>,
    databases: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    tags: Spanned<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    mask: Mask,
}

/// Loads a file, or every `*.toml` in a directory in name order.
pub fn load_path(path: &Path) -> Result<Policy, PolicyErrors> {
    let fail = |message: String| PolicyErrors(vec![LoadError { origin: None, message }]);
    let files = if path.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(|e| fail(format!("cannot read the policy directory `{}`: {e}", path.display())))?;
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(fail(format!(
                "no `*.toml` files in the policy directory `{}`; add one (see tool-policies/README.md)",
                path.display()
            )));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut sources = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| {
            fail(format!(
                "cannot read the policy file `{}`: {e}; pass a readable file or directory to `--policy`",
                file.display()
            ))
        })?;
        sources.push((file.display().to_string(), text));
    }
    parse_sources(&sources)
}

/// Parses and validates `(name, text)` sources as one policy, rules concatenated in order.
pub fn parse_sources(sources: &[(String, String)]) -> Result<Policy, PolicyErrors> {
    let mut b = Builder::default();
    for (name, text) in sources {
        b.sources.push(name.clone());
        match toml::from_str::<RawFile>(text) {
            Ok(raw) => b.add_file(name, text, raw),
            Err(e) => b.errors.push(LoadError {
                origin: e.span().map(|s| origin(name, text, s)),
                message: reword(e.message()),
            }),
        }
    }
    b.finish()
}

fn origin(file: &str, text: &str, span: Range<usize>) -> Origin {
    let at = span.start.min(text.len());
    Origin {
        file: file.to_string(),
        line: text.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1,
    }
}

/// serde's words for TOML's things: keys, not fields; values, not variants.
fn reword(message: &str) -> String {
    message
        .trim()
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
        .replace("unknown variant", "unknown value")
        .replace(", expected", "; expected")
}

#[derive(Default)]
struct Builder {
    sources: Vec<String>,
    errors: Vec<LoadError>,
    defaults: CallLimits,
    defaults_at: BTreeMap<&'static str, Origin>,
    approval: ApprovalSettings,
    approval_at: Option<Origin>,
    rules: Vec<Rule>,
    roles: Vec<super::RoleMapping>,
    tables: Vec<TableTags>,
    masks: BTreeMap<String, BTreeMap<String, super::Mask>>,
    mask_origins: BTreeMap<String, Origin>,
}

impl Builder {
    fn error(&mut self, at: Origin, message: String) {
        self.errors.push(LoadError {
            origin: Some(at),
            message,
        });
    }

    fn add_file(&mut self, file: &str, text: &str, raw: RawFile) {
        let at = |span: Range<usize>| origin(file, text, span);
        if let Some(d) = raw.defaults {
            let place = at(d.span());
            let d = d.into_inner();
            let limits = self.limits(
                &at,
                d.max_rows,
                d.max_result_bytes,
                d.statement_timeout,
                d.approval_timeout,
            );
            for (key, set) in [
                ("max_rows", limits.max_rows.is_some()),
                ("max_result_bytes", limits.max_result_bytes.is_some()),
                ("statement_timeout", limits.statement_timeout.is_some()),
                ("approval_timeout", limits.approval_timeout.is_some()),
            ] {
                if !set {
                    continue;
                }
                if let Some(first) = self.defaults_at.get(key) {
                    let message = format!("`defaults.{key}` is already set at `{first}`; set it in one file only");
                    self.error(place.clone(), message);
                } else {
                    self.defaults_at.insert(key, place.clone());
                }
            }
            self.defaults = limits.or(self.defaults);
        }
        if let Some(a) = raw.approval {
            self.add_approval(&at, a);
        }
        for r in raw.rule {
            self.add_rule(&at, r);
        }
        for r in raw.database_role {
            self.add_role(&at, r);
        }
        // In file order (the maps sort by name), so "already … at" points back up the file.
        let mut tables: Vec<_> = raw.tables.into_iter().collect();
        tables.sort_by_key(|(key, _)| key.span().start);
        let mut columns: Vec<_> = raw.columns.into_iter().collect();
        columns.sort_by_key(|(key, _)| key.span().start);
        for (key, table) in tables {
            let place = at(key.span());
            let pattern = key.into_inner();
            if let Err(m) = table_key(&pattern) {
                self.error(place.clone(), format!("table `{pattern}`: {m}"));
            }
            let tags = table.tags.into_inner();
            if tags.is_empty()
                || tags
                    .iter()
                    .any(|t| t.trim().is_empty() || t.contains(char::is_whitespace))
            {
                self.error(
                    place.clone(),
                    format!("table `{pattern}`: `tags` must be a non-empty list of words, e.g. `tags = [\"pii\"]`"),
                );
            }
            if let Some(first) = self.tables.iter().find(|t| t.pattern.0 == pattern) {
                let message = format!(
                    "table `{pattern}` is already tagged at `{}`; merge the two",
                    first.origin
                );
                self.error(place.clone(), message);
            }
            self.tables.push(TableTags {
                pattern: Glob(pattern),
                tags,
                origin: place,
            });
        }
        for (key, column) in columns {
            let place = at(key.span());
            let name = key.into_inner();
            let (database, rest) = matching::split_database(&name);
            if let Some(Err(m)) = database.map(database_prefix) {
                self.error(place, format!("column `{name}`: {m}"));
                continue;
            }
            let parts: Vec<&str> = rest.split('.').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.is_empty() || p.contains('*')) {
                self.error(
                    place,
                    format!(
                        "column `{name}`: write `schema.table.column` exactly, e.g. `public.customers.email` (no patterns), or `NAME:schema.table.column` for one database"
                    ),
                );
                continue;
            }
            let table = match database {
                Some(db) => format!("{db}:{}.{}", parts[0], parts[1]),
                None => format!("{}.{}", parts[0], parts[1]),
            };
            if let Some(first) = self.mask_origins.get(&name) {
                let message = format!("column `{name}` already has a mask at `{first}`; keep one");
                self.error(place, message);
                continue;
            }
            // A database's mask does not override one for every database: one column, one mask.
            let clash = self.mask_origins.iter().find(|(k, _)| {
                let (other_db, other_rest) = matching::split_database(k);
                other_rest == rest && (database.is_none() || other_db.is_none())
            });
            if let Some((other, first)) = clash {
                let message = format!(
                    "column `{name}` is also masked as `{other}` at `{first}`, and a mask for every database and one for a single database cannot both hold; keep one"
                );
                self.error(place, message);
                continue;
            }
            self.mask_origins.insert(name.clone(), place);
            self.masks
                .entry(table)
                .or_default()
                .insert(parts[2].to_string(), column.mask);
        }
    }

    fn limits(
        &mut self,
        at: &dyn Fn(Range<usize>) -> Origin,
        max_rows: Option<Spanned<i64>>,
        max_result_bytes: Option<Spanned<RawBytes>>,
        statement_timeout: Option<Spanned<String>>,
        approval_timeout: Option<Spanned<String>>,
    ) -> CallLimits {
        let mut limits = CallLimits::default();
        if let Some(n) = max_rows {
            match u32::try_from(*n.get_ref()) {
                Ok(v) if v >= 1 => limits.max_rows = Some(v),
                _ => self.error(
                    at(n.span()),
                    format!(
                        "`max_rows` must be a whole number from 1 to {} (got {})",
                        u32::MAX,
                        n.get_ref()
                    ),
                ),
            }
        }
        if let Some(raw) = max_result_bytes {
            let parsed = match raw.get_ref() {
                RawBytes::Bytes(n) => u64::try_from(*n).map_err(|_| n.to_string()),
                RawBytes::Text(t) => crate::units::parse_byte_size(t).map_err(|_| format!("\"{t}\"")),
            };
            match parsed {
                Ok(n) if n >= 1024 => limits.max_result_bytes = Some(n),
                Ok(n) => self.error(
                    at(raw.span()),
                    format!("`max_result_bytes` must be at least 1KiB (got {n} bytes); write e.g. \"16MiB\""),
                ),
                Err(got) => self.error(
                    at(raw.span()),
                    format!(
                        "`max_result_bytes` must be bytes (`1048576`) or a size such as \"512KiB\" or \"16MiB\" (got {got})"
                    ),
                ),
            }
        }
        limits.statement_timeout = statement_timeout.and_then(|d| self.duration(at, "statement_timeout", d));
        limits.approval_timeout = approval_timeout.and_then(|d| self.duration(at, "approval_timeout", d));
        limits
    }

    fn duration(&mut self, at: &dyn Fn(Range<usize>) -> Origin, key: &str, raw: Spanned<String>) -> Option<Duration> {
        match humantime::parse_duration(raw.get_ref()) {
            Ok(d) if d > super::MAX_DURATION => {
                self.error(
                    at(raw.span()),
                    format!(
                        "`{key}` is {}, longer than pgwarden allows (at most {}); use a shorter duration",
                        raw.get_ref(),
                        humantime::format_duration(super::MAX_DURATION)
                    ),
                );
                None
            }
            Ok(d) if d >= Duration::from_millis(1) => Some(d),
            _ => {
                self.error(
                    at(raw.span()),
                    format!(
                        "`{key}` must be a duration such as \"15s\", \"500ms\" or \"5m\" (got `{}`)",
                        raw.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn add_approval(&mut self, at: &dyn Fn(Range<usize>) -> Origin, raw: Spanned<RawApproval>) {
        let place = at(raw.span());
        if let Some(first) = &self.approval_at {
            let message = format!("`[approval]` is already set at `{first}`; set it in one file only");
            self.error(place, message);
            return;
        }
        self.approval_at = Some(place.clone());
        let a = raw.into_inner();
        let mut s = ApprovalSettings::default();
        let durations = [
            ("wait_budget", a.wait_budget, &mut s.wait_budget),
            ("pending_ttl", a.pending_ttl, &mut s.pending_ttl),
            ("approved_ttl", a.approved_ttl, &mut s.approved_ttl),
        ];
        for (key, raw, slot) in durations {
            if let Some(d) = raw.and_then(|d| self.duration(at, key, d)) {
                *slot = d;
            }
        }
        if s.wait_budget > Duration::from_secs(300) {
            self.error(
                place.clone(),
                format!(
                    "`approval.wait_budget` is {}, longer than clients wait for a tool call (Claude Desktop gives up after about 60 s); use at most \"5m\", ideally \"40s\"",
                    humantime::format_duration(s.wait_budget)
                ),
            );
        }
        if let Some(raw) = a.instant_decline {
            match humantime::parse_duration(raw.get_ref()) {
                Ok(d) => s.instant_decline = d,
                Err(_) => self.error(
                    at(raw.span()),
                    format!(
                        "`instant_decline` must be a duration such as \"1s\", \"300ms\" or \"0s\" (got `{}`)",
                        raw.get_ref()
                    ),
                ),
            }
        }
        if s.instant_decline > Duration::from_secs(5) {
            self.error(
                place.clone(),
                format!(
                    "`approval.instant_decline` is {}; a person can read and decline a prompt in that time, and their \
                     \"no\" would be taken as the client's. Use at most \"5s\" (default \"1s\", \"0s\" turns it off)",
                    humantime::format_duration(s.instant_decline)
                ),
            );
        }
        if s.pending_ttl < s.wait_budget {
            self.error(
                place.clone(),
                "`approval.pending_ttl` must be at least `wait_budget`, or approvals expire while the model waits"
                    .into(),
            );
        }
        if let Some(n) = a.max_open_per_session {
            match usize::try_from(*n.get_ref()) {
                Ok(v) if (1..=100).contains(&v) => s.max_open_per_session = v,
                _ => self.error(
                    at(n.span()),
                    format!(
                        "`approval.max_open_per_session` must be a whole number from 1 to 100 (got {})",
                        n.get_ref()
                    ),
                ),
            }
        }
        if let Some(c) = a.channels {
            let list = c.get_ref();
            if list.is_empty() {
                self.error(
                    at(c.span()),
                    "`approval.channels = []` means no person can ever approve anything; list at least one of \"elicitation\", \"mcp_app\", \"console\", \"cli\", \"web\", \"api\", \"slack\" (or make the rules `deny`)".into(),
                );
            }
            s.channels = list.iter().copied().collect();
        }
        for (risk, level) in a.min_channel.unwrap_or_default() {
            s.min_channel.insert(risk, level);
        }
        if !s.channels.is_empty() && !s.local_enabled() && s.min_channel.values().any(|l| *l == Level::Local) {
            self.error(
                place,
                "`approval.min_channel` asks for `local` approval for some risk, but the `console` and `cli` channels are off, so those calls could never be approved; enable \"console\" or \"cli\", or lower `min_channel` (the default is critical = \"local\")".into(),
            );
        }
        self.approval = s;
    }

    fn add_rule(&mut self, at: &dyn Fn(Range<usize>) -> Origin, r: RawRule) {
        let place = at(r.id.span());
        let id = r.id.into_inner();
        let name = if id.is_empty() {
            "(no id)".to_string()
        } else {
            id.clone()
        };
        if id.trim().is_empty() || id.contains(char::is_whitespace) {
            self.error(
                place.clone(),
                format!("rule id `{id}` must be a non-empty word without spaces, e.g. `reads-run`"),
            );
        }
        if let Some(first) = self.rules.iter().find(|x| x.id == id) {
            let message = format!(
                "rule id `{id}` is already used at `{}`; ids must be unique",
                first.origin
            );
            self.error(place.clone(), message);
        }
        let owner = format!("rule `{name}`");
        let tools = self.list(at, &owner, "tools", r.tools, |t: &String| {
            Tool::from_name(t).ok_or_else(|| format!("unknown tool `{t}`; expected one of {}", quoted(Tool::ALL)))
        });
        let categories = self.list(at, &owner, "categories", r.categories, |c: &Category| Ok(*c));
        let tables = self.list(at, &owner, "tables", r.tables, |t: &String| {
            table_key(t)
                .map(|_| Glob(t.clone()))
                .map_err(|m| format!("table `{t}`: {m}"))
        });
        let tags = self.list(at, &owner, "tags", r.tags, |t: &String| {
            if t.trim().is_empty() {
                Err("tags must not be empty strings".into())
            } else {
                Ok(t.clone())
            }
        });
        let principals = self.list(at, &owner, "principals", r.principals, |p: &String| {
            if p.trim().is_empty() {
                Err("principals must not be empty strings; use `*` for anyone named".into())
            } else {
                Ok(Glob(p.clone()))
            }
        });
        let groups = self.list(at, &owner, "groups", r.groups, |g: &String| {
            if g.trim().is_empty() {
                Err("groups must not be empty strings; use `*` for anyone in a group".into())
            } else {
                Ok(Glob(g.clone()))
            }
        });
        let databases = self.list(at, &owner, "databases", r.databases, database_name);
        let limits = self.limits(
            at,
            r.max_rows,
            r.max_result_bytes,
            r.statement_timeout,
            r.approval_timeout,
        );
        if r.effect == Effect::Deny
            && (limits.max_rows.is_some() || limits.max_result_bytes.is_some() || limits.statement_timeout.is_some())
        {
            self.error(
                place.clone(),
                format!(
                    "rule `{name}` denies, so `max_rows`, `max_result_bytes` and `statement_timeout` have no effect; remove them"
                ),
            );
        }
        if r.effect != Effect::Approve && r.min_channel.is_some() {
            self.error(
                place.clone(),
                format!("rule `{name}` does not ask for approval, so `min_channel` has no effect; remove it"),
            );
        }
        if r.effect != Effect::Approve && limits.approval_timeout.is_some() {
            self.error(
                place.clone(),
                format!("rule `{name}` does not ask for approval, so `approval_timeout` has no effect; remove it"),
            );
        }
        let review = self.reviewers(at, &name, r.reviewers, r.min_approvals, r.notify);
        let mut min_channel = r.min_channel;
        if review.is_team() {
            match min_channel {
                Some(level) if level < Level::Team => self.error(
                    place.clone(),
                    format!(
                        "rule `{name}` names `reviewers` (or `min_approvals` above 1), which only verified reviewers can \
                         satisfy, but sets `min_channel = \"{}\"`; remove `min_channel` (it becomes \"team\")",
                        level.as_str()
                    ),
                ),
                _ => min_channel = Some(Level::Team),
            }
        }
        if r.effect != Effect::Approve && (review != Reviewers::default()) {
            self.error(
                place.clone(),
                format!(
                    "rule `{name}` does not ask for approval, so `reviewers`, `min_approvals` and `notify` have no effect; remove them"
                ),
            );
        }
        self.rules.push(Rule {
            id,
            effect: r.effect,
            reason: r.reason.filter(|s| !s.trim().is_empty()),
            tools,
            categories,
            tables,
            tags,
            databases,
            risk_at_least: r.risk_at_least,
            principals,
            groups,
            limits,
            min_channel,
            review,
            origin: place,
        });
    }

    /// A rule's `reviewers`, `min_approvals` and `notify`.
    fn reviewers(
        &mut self,
        at: &dyn Fn(Range<usize>) -> Origin,
        name: &str,
        reviewers: Option<Spanned<Vec<String>>>,
        min_approvals: Option<Spanned<i64>>,
        notify: Option<Spanned<Vec<String>>>,
    ) -> Reviewers {
        let reviewers = self
            .list(at, &format!("rule `{name}`"), "reviewers", reviewers, |who: &String| {
                let who = who.trim();
                match who.strip_prefix("group:") {
                    Some(g) if g.trim().is_empty() => Err("`group:` needs a group name, e.g. `group:dba`".into()),
                    _ if who.is_empty() => Err("reviewers must not be empty strings".into()),
                    _ => Ok(who.to_string()),
                }
            })
            .unwrap_or_default();
        let notify = self
            .list(at, &format!("rule `{name}`"), "notify", notify, |n: &String| match n.split_once(':') {
                Some(("slack" | "teams" | "webhook", target)) if !target.trim().is_empty() => Ok(n.trim().to_string()),
                _ => Err(format!(
                    "`{n}` names no channel; write `slack:#channel`, `teams:NAME` or `webhook:NAME` (NAME as in the HTTP config)"
                )),
            })
            .unwrap_or_default();
        let mut wanted = 1;
        if let Some(n) = &min_approvals {
            let place = at(n.span());
            let named = reviewers.iter().filter(|r| !r.starts_with("group:")).count();
            let groups = reviewers.len() - named;
            match u32::try_from(*n.get_ref()) {
                Ok(v @ 1..=10) if groups > 0 || reviewers.is_empty() || v as usize <= named => wanted = v,
                Ok(v @ 1..=10) => self.error(
                    place,
                    format!(
                        "rule `{name}`: `min_approvals = {v}` needs {v} different people, but `reviewers` names only {named}; add reviewers or a `group:`"
                    ),
                ),
                _ => self.error(
                    place,
                    format!("rule `{name}`: `min_approvals` must be between 1 and 10 (distinct people who approve)"),
                ),
            }
        }
        Reviewers {
            reviewers,
            min_approvals: wanted,
            notify,
        }
    }

    /// A `[[database_role]]`: who (principals, groups; both must match when both are given) takes
    /// which role for their calls.
    fn add_role(&mut self, at: &dyn Fn(Range<usize>) -> Origin, r: RawRole) {
        let place = at(r.role.span());
        let role = r.role.into_inner();
        if role.trim().is_empty() || role.contains('\0') {
            self.error(
                place.clone(),
                "`database_role`: `role` must name a database role, e.g. `role = \"analyst_ro\"`".into(),
            );
        }
        let what = format!("database_role `{role}`");
        let glob = |kind: &'static str| {
            move |p: &String| {
                if p.trim().is_empty() {
                    Err(format!("{kind} must not be empty strings"))
                } else {
                    Ok(Glob(p.clone()))
                }
            }
        };
        let principals = self.list(at, &what, "principals", r.principals, glob("principals"));
        let groups = self.list(at, &what, "groups", r.groups, glob("groups"));
        let databases = self.list(at, &what, "databases", r.databases, database_name);
        self.roles.push(super::RoleMapping {
            role,
            principals,
            groups,
            databases,
            origin: place,
        });
    }

    /// A match-key list: never empty, every item valid.
    fn list<T, U>(
        &mut self,
        at: &dyn Fn(Range<usize>) -> Origin,
        owner: &str,
        key: &str,
        raw: Option<Spanned<Vec<T>>>,
        check: impl Fn(&T) -> Result<U, String>,
    ) -> Option<Vec<U>> {
        let raw = raw?;
        let place = at(raw.span());
        if raw.get_ref().is_empty() {
            self.error(
                place,
                format!("{owner}: `{key} = []` never matches anything; remove the key to match any {key}"),
            );
            return Some(Vec::new());
        }
        let mut out = Vec::new();
        for item in raw.get_ref() {
            match check(item) {
                Ok(v) => out.push(v),
                Err(m) => self.error(place.clone(), format!("{owner}: {m}")),
            }
        }
        Some(out)
    }

    fn finish(mut self) -> Result<Policy, PolicyErrors> {
        if self.rules.is_empty() && self.errors.is_empty() {
            self.errors.push(LoadError {
                origin: None,
                message: format!(
                    "no `[[rule]]` in {}; without rules every call is denied — add rules (see tool-policies/README.md)",
                    quoted(&self.sources)
                ),
            });
        }
        // Tags a rule names but no table carries: almost always a typo, and the rule could never match.
        let known: BTreeSet<&str> = self
            .tables
            .iter()
            .flat_map(|t| t.tags.iter().map(String::as_str))
            .collect();
        let mut late = Vec::new();
        for rule in &self.rules {
            for tag in rule.tags.iter().flatten() {
                if !known.contains(tag.as_str()) {
                    late.push(LoadError {
                        origin: Some(rule.origin.clone()),
                        message: format!(
                            "rule `{}` matches tag `{tag}`, but no `[tables.\"…\"]` entry carries it; tag a table or fix the spelling (known tags: {})",
                            rule.id,
                            if known.is_empty() { "none".to_string() } else { quoted(&known) }
                        ),
                    });
                }
            }
        }
        for rule in &self.rules {
            let (Some(dbs), Some(globs)) = (&rule.databases, &rule.tables) else {
                continue;
            };
            let lands = globs.iter().any(|g| match matching::split_database(&g.0).0 {
                None => true,
                Some(db) => dbs.iter().any(|d| d == db),
            });
            if !lands {
                late.push(LoadError {
                    origin: Some(rule.origin.clone()),
                    message: format!(
                        "rule `{}` can never match: it applies to databases {}, but every pattern in its `tables` names another database; fix `databases` or the `NAME:` prefixes",
                        rule.id,
                        quoted(dbs)
                    ),
                });
            }
        }
        for (i, later) in self.rules.iter().enumerate() {
            if let Some(earlier) = self.rules[..i].iter().find(|e| matching::covers(e, later)) {
                late.push(LoadError {
                    origin: Some(later.origin.clone()),
                    message: format!(
                        "rule `{}` can never match: rule `{}` at `{}` comes first and matches every call it would; move `{}` above it or narrow `{}`",
                        later.id, earlier.id, earlier.origin, later.id, earlier.id
                    ),
                });
            }
        }
        self.errors.extend(late);
        if !self.errors.is_empty() {
            return Err(PolicyErrors(self.errors));
        }
        if !self.approval.local_enabled()
            && let Some(rule) = self.rules.iter().find(|r| r.min_channel == Some(Level::Local))
        {
            return Err(PolicyErrors(vec![LoadError {
                origin: Some(rule.origin.clone()),
                message: format!(
                    "rule `{}` needs `local` approval, but the `console` and `cli` channels are off in `[approval]`; enable one or lower `min_channel`",
                    rule.id
                ),
            }]));
        }
        Ok(Policy {
            defaults: self.defaults,
            approval: self.approval,
            rules: self.rules,
            roles: self.roles,
            tables: self.tables,
            masks: self.masks,
            mask_origins: self.mask_origins,
            sources: self.sources,
        })
    }
}

/// A table pattern, optionally for one database: `[NAME:]schema.table`.
fn table_key(p: &str) -> Result<(), String> {
    match matching::split_database(p) {
        (Some(db), rest) => database_prefix(db).and_then(|()| table_pattern(rest)),
        (None, rest) => table_pattern(rest),
    }
}

/// The `NAME` of a `NAME:` prefix.
fn database_prefix(db: &str) -> Result<(), String> {
    if db.is_empty() {
        Err("the database prefix before `:` is empty; write `NAME:schema.table`, e.g. `prod:public.users`, or drop the `:`".into())
    } else if !super::is_database_name(db) {
        Err(format!(
            "the database prefix `{db}` must be a database name (letters, digits, `_` and `-`; no patterns), e.g. `prod:public.users`; leave the prefix out to mean every database"
        ))
    } else {
        Ok(())
    }
}

/// An entry of `databases = [...]`.
fn database_name(db: &String) -> Result<String, String> {
    if super::is_database_name(db) {
        Ok(db.clone())
    } else {
        Err(format!(
            "database `{db}` must be a database name (letters, digits, `_` and `-`; no patterns), e.g. `databases = [\"prod\"]`; remove the key to mean every database"
        ))
    }
}

/// A `schema.table` pattern: `*` is any run of characters; the name needs its schema.
fn table_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    match p.split_once('.') {
        Some((schema, table)) if !schema.is_empty() && !table.is_empty() => Ok(()),
        _ => Err("write `schema.table`, e.g. `public.customers`, `finance.*` or `*`".into()),
    }
}
