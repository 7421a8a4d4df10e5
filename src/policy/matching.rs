//! Whether a rule matches a call, and whether an earlier rule already matches everything a later one
//! would (an unreachable rule). Both read each key in the safe direction for the rule's effect.

use std::collections::{BTreeMap, BTreeSet};

use crate::{call::Tool, classify::Category};

use super::{Effect, Rule};

/// A name pattern where `*` stands for any run of characters (`finance.*`, `ci-*`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(pub String);

impl Glob {
    pub fn matches(&self, text: &str) -> bool {
        wildcard(self.0.as_bytes(), text.as_bytes())
    }

    fn is_literal(&self) -> bool {
        !self.0.contains('*')
    }

    /// Matches every `schema.table`.
    fn is_universal(&self) -> bool {
        self.0 == "*" || self.0 == "*.*"
    }

    /// True only when every name `self` matches is certainly matched by `other` too.
    fn within(&self, other: &Glob) -> bool {
        if other.0 == self.0 || other.0 == "*" || (self.is_literal() && other.matches(&self.0)) {
            return true;
        }
        // `prefix*` contains anything that starts with `prefix`, wildcards included.
        match other.0.strip_suffix('*') {
            Some(prefix) if !prefix.contains('*') => self.0.starts_with(prefix),
            _ => false,
        }
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
    let tables = match (&earlier.tables, &later.tables) {
        (None, _) => true,
        (Some(e), Some(l)) if direction_ok => l.iter().all(|p| e.iter().any(|q| p.within(q))),
        (Some(e), Some(_)) => e.iter().any(Glob::is_universal),
        (Some(_), None) => false,
    };
    let tags = match (&earlier.tags, &later.tags) {
        (None, _) => true,
        (Some(e), Some(l)) if direction_ok => l.iter().all(|t| e.contains(t)),
        _ => false,
    };
    tools && principals && groups && risk && categories && tables && tags
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
