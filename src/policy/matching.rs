//! Whether a rule matches a call, and whether an earlier rule already matches everything a later one
//! would (an unreachable rule). Both read each key in the safe direction for the rule's effect.
//! Also the policy as one database sees it (`Policy::for_database`).

use std::collections::{BTreeMap, BTreeSet};

use crate::{call::Tool, classify::Category};

use super::{Effect, Origin, Policy, Rule};

/// A name pattern where `*` stands for any run of characters (`finance.*`, `ci-*`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(pub String);

impl Glob {
    pub fn matches(&self, text: &str) -> bool {
        wildcard(self.0.as_bytes(), text.as_bytes())
    }

    /// Matches every `schema.table`.
    fn is_universal(&self) -> bool {
        self.0 == "*" || self.0 == "*.*"
    }

    /// True only when every name `self` matches is certainly matched by `other` too.
    fn within(&self, other: &Glob) -> bool {
        pattern_within(&self.0, &other.0)
    }

    /// `within` for table patterns, which may be limited to one database (`prod:public.*`): an
    /// unprefixed `other` holds in every database, a prefixed one only in its own.
    fn table_within(&self, other: &Glob) -> bool {
        match (split_database(&self.0), split_database(&other.0)) {
            ((_, mine), (None, theirs)) => pattern_within(mine, theirs),
            ((Some(a), mine), (Some(b), theirs)) if a == b => pattern_within(mine, theirs),
            _ => false,
        }
    }
}

fn pattern_within(pattern: &str, other: &str) -> bool {
    if other == pattern || other == "*" || (!pattern.contains('*') && wildcard(other.as_bytes(), pattern.as_bytes())) {
        return true;
    }
    // `prefix*` contains anything that starts with `prefix`, wildcards included.
    match other.strip_suffix('*') {
        Some(prefix) if !prefix.contains('*') => pattern.starts_with(prefix),
        _ => false,
    }
}

/// A database name as policies write it: a non-empty word of ASCII letters, digits, `_` and `-`.
pub fn is_database_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `prod:public.users` → (`prod`, `public.users`); `public.users` → (None, `public.users`).
/// Only text before the first `:` that has no `.` is a database, so a quoted table name with a
/// colon (`public.a:b`) stays a table name.
pub fn split_database(key: &str) -> (Option<&str>, &str) {
    match key.split_once(':') {
        Some((db, rest)) if !db.contains('.') => (Some(db), rest),
        _ => (None, key),
    }
}

/// `key` as database `name` sees it: unprefixed keys as they are, `name:`'s without the prefix,
/// other databases' not at all.
fn for_db<'k>(key: &'k str, name: &str) -> Option<&'k str> {
    match split_database(key) {
        (None, _) => Some(key),
        (Some(db), rest) if db == name => Some(rest),
        _ => None,
    }
}

fn applies_to(databases: &Option<Vec<String>>, name: &str) -> bool {
    databases.as_ref().is_none_or(|d| d.iter().any(|d| d == name))
}

/// The databases a rule can match in at most; `None`: any. A rule whose `tables` are all prefixed
/// matches only in those databases.
fn reach(rule: &Rule) -> Option<BTreeSet<&str>> {
    let by_key = rule
        .databases
        .as_ref()
        .map(|d| d.iter().map(String::as_str).collect::<BTreeSet<_>>());
    let by_tables = rule.tables.as_ref().and_then(|globs| {
        globs
            .iter()
            .map(|g| split_database(&g.0).0)
            .collect::<Option<BTreeSet<&str>>>()
    });
    match (by_key, by_tables) {
        (Some(a), Some(b)) => Some(a.intersection(&b).copied().collect()),
        (a, b) => a.or(b),
    }
}

impl Policy {
    /// The policy as database `name` sees it: rules and `[[database_role]]`s limited to other
    /// databases dropped, table patterns, tag entries and masks for other databases dropped and
    /// `name:` prefixes stripped, and a rule whose every table pattern was for another database
    /// dropped (it cannot match here). Nothing in the result names a database.
    pub fn for_database(&self, name: &str) -> Policy {
        let rules = self
            .rules
            .iter()
            .filter(|r| applies_to(&r.databases, name))
            .filter_map(|r| {
                let tables = match &r.tables {
                    None => None,
                    Some(globs) => {
                        let kept: Vec<Glob> = globs
                            .iter()
                            .filter_map(|g| for_db(&g.0, name).map(|p| Glob(p.to_string())))
                            .collect();
                        if kept.is_empty() {
                            return None;
                        }
                        Some(kept)
                    }
                };
                Some(Rule {
                    tables,
                    databases: None,
                    ..r.clone()
                })
            })
            .collect();
        let roles = self
            .roles
            .iter()
            .filter(|m| applies_to(&m.databases, name))
            .map(|m| super::RoleMapping {
                databases: None,
                ..m.clone()
            })
            .collect();
        let tables = self
            .tables
            .iter()
            .filter_map(|t| {
                for_db(&t.pattern.0, name).map(|p| super::TableTags {
                    pattern: Glob(p.to_string()),
                    ..t.clone()
                })
            })
            .collect();
        // `prod:public.t` and `public.t` may mask different columns of one table: merge them
        // (loading refuses one column masked both ways).
        let mut masks: BTreeMap<String, BTreeMap<String, super::Mask>> = BTreeMap::new();
        for (table, cols) in &self.masks {
            if let Some(t) = for_db(table, name) {
                masks.entry(t.to_string()).or_default().extend(cols.clone());
            }
        }
        let mask_origins = self
            .mask_origins
            .iter()
            .filter_map(|(column, at)| for_db(column, name).map(|c| (c.to_string(), at.clone())))
            .collect();
        Policy {
            defaults: self.defaults,
            approval: self.approval.clone(),
            rules,
            roles,
            tables,
            masks,
            mask_origins,
            sources: self.sources.clone(),
        }
    }

    /// Every database the policy names (in `databases = [...]` and in `NAME:` prefixes), each
    /// with the place of its first mention in load order.
    pub fn databases_named(&self) -> BTreeMap<String, Origin> {
        fn prefix(key: &str) -> Option<&str> {
            split_database(key).0
        }
        let rules = self.rules.iter().flat_map(|r| {
            let listed = r.databases.iter().flatten().map(String::as_str);
            let prefixed = r.tables.iter().flatten().filter_map(|g| prefix(&g.0));
            listed.chain(prefixed).map(|d| (d, &r.origin))
        });
        let roles = self
            .roles
            .iter()
            .flat_map(|m| m.databases.iter().flatten().map(move |d| (d.as_str(), &m.origin)));
        let tags = self
            .tables
            .iter()
            .filter_map(|t| prefix(&t.pattern.0).map(|d| (d, &t.origin)));
        let masks = self
            .mask_origins
            .iter()
            .filter_map(|(k, at)| prefix(k).map(|d| (d, at)));
        let order = |at: &Origin| {
            let file = self.sources.iter().position(|s| *s == at.file).unwrap_or(usize::MAX);
            (file, at.line)
        };
        let mut named: BTreeMap<String, Origin> = BTreeMap::new();
        for (db, at) in rules.chain(roles).chain(tags).chain(masks) {
            match named.get_mut(db) {
                Some(first) if order(first) <= order(at) => {}
                Some(first) => *first = at.clone(),
                None => {
                    named.insert(db.to_string(), at.clone());
                }
            }
        }
        named
    }
}

/// Iterative wildcard match with backtracking to the last `*`; linear in practice.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The facts of a call that rules look at.
pub struct Subject<'a> {
    pub tool: Tool,
    pub categories: BTreeSet<Category>,
    pub risk: crate::classify::Risk,
    /// Every table the call touches, with its tags.
    pub tables: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
    pub principal: Option<&'a str>,
    pub groups: &'a [String],
}

pub fn matches(rule: &Rule, s: &Subject<'_>) -> bool {
    let every = rule.effect == Effect::Allow;
    if let Some(tools) = &rule.tools
        && !tools.contains(&s.tool)
    {
        return false;
    }
    if let Some(principals) = &rule.principals
        && !s.principal.is_some_and(|p| principals.iter().any(|g| g.matches(p)))
    {
        return false;
    }
    if let Some(groups) = &rule.groups
        && !s.groups.iter().any(|g| groups.iter().any(|p| p.matches(g)))
    {
        return false;
    }
    if let Some(min) = rule.risk_at_least
        && s.risk < min
    {
        return false;
    }
    if let Some(listed) = &rule.categories {
        let hit = if every {
            // Reading is part of every other category: `write` covers an `UPDATE … FROM`.
            let others: Vec<&Category> = s.categories.iter().filter(|c| **c != Category::Read).collect();
            if others.is_empty() {
                s.categories.contains(&Category::Read) && listed.contains(&Category::Read)
            } else {
                others.iter().all(|c| listed.contains(c))
            }
        } else {
            s.categories.iter().any(|c| listed.contains(c))
        };
        if !hit {
            return false;
        }
    }
    if let Some(globs) = &rule.tables {
        let fits = |t: &&str| globs.iter().any(|g| g.matches(t));
        let hit = !s.tables.is_empty()
            && if every {
                s.tables.keys().all(fits)
            } else {
                s.tables.keys().any(fits)
            };
        if !hit {
            return false;
        }
    }
    if let Some(tags) = &rule.tags {
        let carries = |t: &BTreeSet<&str>| tags.iter().any(|tag| t.contains(tag.as_str()));
        let hit = !s.tables.is_empty()
            && if every {
                s.tables.values().all(carries)
            } else {
                s.tables.values().any(carries)
            };
        if !hit {
            return false;
        }
    }
    true
}

/// True when `earlier` certainly matches every call `later` matches, so `later` can never decide.
/// Conservative: `false` when unsure.
pub fn covers(earlier: &Rule, later: &Rule) -> bool {
    let e_every = earlier.effect == Effect::Allow;
    let l_every = later.effect == Effect::Allow;
    // An "every" rule only covers an "any" rule when its list cannot miss.
    let direction_ok = !e_every || l_every;
    let tools = match (&earlier.tools, &later.tools) {
        (None, _) => true,
        (Some(e), Some(l)) => l.iter().all(|t| e.contains(t)),
        (Some(_), None) => false,
    };
    let principals = match (&earlier.principals, &later.principals) {
        (None, _) => true,
        (Some(e), Some(l)) => l.iter().all(|p| e.iter().any(|q| p.within(q))),
        (Some(_), None) => false,
    };
    // A caller `later` matches has a group matching one of its patterns; `earlier` matches it too
    // when each such pattern lies within one of `earlier`'s.
    let groups = match (&earlier.groups, &later.groups) {
        (None, _) => true,
        (Some(e), Some(l)) => l.iter().all(|p| e.iter().any(|q| p.within(q))),
        (Some(_), None) => false,
    };
    let risk = match (earlier.risk_at_least, later.risk_at_least) {
        (None, _) => true,
        (Some(e), Some(l)) => l >= e,
        (Some(_), None) => false,
    };
    let categories = match (&earlier.categories, &later.categories) {
        (None, _) => true,
        (Some(e), Some(l)) if direction_ok => l.iter().all(|c| e.contains(c)),
        (Some(e), _) => ALL_CATEGORIES.iter().all(|c| e.contains(c)),
    };
    // An earlier rule limited to some databases covers only a later one that can match in no others.
    let databases = match (&earlier.databases, reach(later)) {
        (None, _) => true,
        (Some(e), Some(l)) => l.iter().all(|d| e.iter().any(|x| x == d)),
        (Some(_), None) => false,
    };
    let tables = match (&earlier.tables, &later.tables) {
        (None, _) => true,
        (Some(e), Some(l)) if direction_ok => l.iter().all(|p| e.iter().any(|q| p.table_within(q))),
        (Some(e), Some(_)) => e.iter().any(Glob::is_universal),
        (Some(_), None) => false,
    };
    let tags = match (&earlier.tags, &later.tags) {
        (None, _) => true,
        (Some(e), Some(l)) if direction_ok => l.iter().all(|t| e.contains(t)),
        _ => false,
    };
    tools && databases && principals && groups && risk && categories && tables && tags
}

const ALL_CATEGORIES: [Category; 8] = [
    Category::Read,
    Category::Write,
    Category::Export,
    Category::Ddl,
    Category::Admin,
    Category::Unknown,
    Category::Destructive,
    Category::Privilege,
];

/// A sentence saying what a rule matches, for decisions of rules without a `reason`.
pub fn describe(rule: &Rule) -> String {
    let join = |v: Vec<String>| v.join(", ");
    let mut parts = Vec::new();
    if let Some(t) = &rule.tools {
        parts.push(format!(
            "tools {}",
            join(t.iter().map(|t| t.name().to_string()).collect())
        ));
    }
    if let Some(c) = &rule.categories {
        parts.push(format!(
            "categories {}",
            join(c.iter().map(|c| c.as_str().to_string()).collect())
        ));
    }
    if let Some(d) = &rule.databases {
        parts.push(format!("databases {}", join(d.clone())));
    }
    if let Some(t) = &rule.tables {
        parts.push(format!("tables {}", join(t.iter().map(|g| g.0.clone()).collect())));
    }
    if let Some(t) = &rule.tags {
        parts.push(format!("tags {}", join(t.clone())));
    }
    if let Some(r) = rule.risk_at_least {
        parts.push(format!("risk at least {}", r.as_str()));
    }
    if let Some(p) = &rule.principals {
        parts.push(format!("principals {}", join(p.iter().map(|g| g.0.clone()).collect())));
    }
    if let Some(g) = &rule.groups {
        parts.push(format!("groups {}", join(g.iter().map(|g| g.0.clone()).collect())));
    }
    if parts.is_empty() {
        format!("rule `{}` matches every call", rule.id)
    } else {
        format!("rule `{}` matches {}", rule.id, parts.join("; "))
    }
}
