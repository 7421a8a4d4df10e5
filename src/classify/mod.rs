//! What a SQL text does, decided from its parsed AST alone (pure: no I/O, no clock).
//!
//! `classify` parses with sqlparser's `PostgreSqlDialect`, maps each statement's kind to a category
//! (an explicit table in `statements`), then walks the whole tree (`walk`): nested statements in CTEs,
//! COPY, PREPARE and EXPLAIN ANALYZE, every function call in expressions and in FROM, row locks,
//! `SELECT … INTO`, custom operators and casts, sensitive catalogs and shapes the parser misreads.
//! Anything it cannot read is `unknown`: fail closed. `classify_with` adds what the catalog knows
//! (`catalog`): user code behind built-in syntax, how names resolve, masking views.

pub mod bounded;
pub use syntax::{certain_syntax_error, not_runnable};
pub mod catalog;
mod embed;
mod functions;
mod settings;
mod statements;
mod syntax;
mod usercode;
mod walk;

pub use catalog::CatalogFacts;

use std::collections::BTreeSet;

pub use embed::{EmbedError, embed};

use serde::{Deserialize, Serialize};
use sqlparser::{ast::Statement, tokenizer::Token};

/// What a statement does, from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Read,
    Write,
    Export,
    Ddl,
    Admin,
    Unknown,
    Destructive,
    Privilege,
}

/// How much harm a mistake could do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Category {
    pub fn risk(self) -> Risk {
        match self {
            Category::Read => Risk::Low,
            Category::Write => Risk::Medium,
            Category::Export | Category::Ddl | Category::Admin | Category::Unknown => Risk::High,
            Category::Destructive | Category::Privilege => Risk::Critical,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Read => "read",
            Category::Write => "write",
            Category::Export => "export",
            Category::Ddl => "ddl",
            Category::Admin => "admin",
            Category::Unknown => "unknown",
            Category::Destructive => "destructive",
            Category::Privilege => "privilege",
        }
    }
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }
}

/// One thing the classifier noticed, with the AST fact behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub category: Category,
    pub reason: String,
}

/// One statement of the text.
#[derive(Debug, Clone, Serialize)]
pub struct StatementAssessment {
    /// The statement's kind as written: `SELECT`, `DELETE`, `CREATE TABLE`, …
    pub kind: String,
    pub category: Category,
    pub risk: Risk,
    pub reasons: Vec<String>,
}

/// Everything `classify` found out about a SQL text.
#[derive(Debug, Clone, Serialize)]
pub struct Assessment {
    pub statements: Vec<StatementAssessment>,
    /// Every category found in any statement or nested part, least severe first: a `SELECT` with a
    /// data-modifying CTE is `[read, write]`.
    pub categories: Vec<Category>,
    /// The highest risk of any statement.
    pub risk: Risk,
    /// Relations touched, schema-qualified (`public.` when written without a schema).
    pub tables: Vec<String>,
    /// One-part names that match a CTE but could also mean a table (a DML target, a reference in
    /// the CTE's own body). Policy treats them as tables; they are not listed in `tables`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cte_shadowed: Vec<String>,
    /// Functions called, canonical names.
    pub functions: Vec<String>,
    /// Databases the text names before a schema (`otherdb.public.t`): a connection reaches one
    /// database, so any but its own is a cross-database reference.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Why the risk is what it is, one sentence per AST fact.
    pub reasons: Vec<String>,
}

impl Assessment {
    /// True when every statement is a plain read.
    pub fn is_read(&self) -> bool {
        !self.statements.is_empty() && self.categories == [Category::Read]
    }

    /// The most severe category.
    pub fn category(&self) -> Category {
        self.categories.iter().copied().max().unwrap_or(Category::Unknown)
    }

    fn unknown(reason: String) -> Assessment {
        Assessment::of_finding(
            "UNKNOWN".into(),
            Finding {
                category: Category::Unknown,
                reason,
            },
        )
    }

    /// One statement known from its tokens only.
    fn of_finding(kind: String, finding: Finding) -> Assessment {
        let Finding { category, reason } = finding;
        Assessment {
            statements: vec![StatementAssessment {
                kind,
                category,
                risk: category.risk(),
                reasons: vec![reason.clone()],
            }],
            categories: vec![category],
            risk: category.risk(),
            tables: vec![],
            cte_shadowed: vec![],
            functions: vec![],
            databases: vec![],
            reasons: vec![reason],
        }
    }
}

/// Nested comment levels sent without review. Real SQL nests comments a few levels at most.
const MAX_COMMENT_NESTING: usize = 32;

/// The first word or symbol of `sql` after whitespace and comments, upper-cased (`SELECT`, `(`).
pub fn first_keyword(sql: &str) -> Option<String> {
    let tokens = bounded::tokenize(sql).ok()?;
    tokens.into_iter().find_map(|t| match t.token {
        Token::Whitespace(_) => None,
        Token::Word(w) => Some(w.value.to_ascii_uppercase()),
        other => Some(other.to_string()),
    })
}

/// How deep `/* … */` comments nest inside a comment's text (the outer one not counted).
fn comment_nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                deepest = deepest.max(depth);
                i += 2;
            }
            (b'*', b'/') => {
                depth = depth.saturating_sub(1);
                i += 2;
            }
            _ => i += 1,
        }
    }
    deepest
}

/// Classifies every statement in `sql` from the text alone; the text as a whole takes the highest risk.
/// The same as `classify_with(sql, &CatalogFacts::default())`.
pub fn classify(sql: &str) -> Assessment {
    classify_with(sql, &CatalogFacts::default())
}

/// Classifies `sql` knowing what the catalog holds: any use of user-defined functions (attribute
/// notation included), operators, types, domains or casts is `unknown`; unqualified names resolve
/// along the search path; a masking view is reported as the table it masks.
pub fn classify_with(sql: &str, facts: &CatalogFacts) -> Assessment {
    let tokens = match bounded::tokenize(sql) {
        Ok(tokens) => tokens,
        Err(e) => return Assessment::unknown(format!("{e}, so what it does is unknown")),
    };
    // PostgreSQL opens a dollar-quoted string at `$tag$` for any tag byte >= 0x80, sqlparser only for
    // alphanumerics: `$a€$ … $a€$` is a string to one and live SQL to the other. Where sqlparser
    // sees a `$…` placeholder, the two readings may differ, and `query` takes no parameters anyway.
    if let Some(p) = tokens.iter().find_map(|t| match &t.token {
        Token::Placeholder(p) => Some(p),
        _ => None,
    }) {
        return Assessment::unknown(format!(
            "`{p}` is a parameter placeholder or a dollar-quote tag that PostgreSQL and pgwarden's parser read \
             differently, so what the text does is unknown; write values into the SQL, and use plain tags such as `$body$`"
        ));
    }
    // PostgreSQL's lexer takes quadratic time in the nesting of `/* /* … */ */` and cannot be
    // cancelled while it works: 200 000 levels held a backend for minutes past statement_timeout.
    if let Some(depth) = tokens
        .iter()
        .filter_map(|t| match &t.token {
            Token::Whitespace(sqlparser::tokenizer::Whitespace::MultiLineComment(c)) => Some(comment_nesting(c)),
            _ => None,
        })
        .max()
        .filter(|d| *d > MAX_COMMENT_NESTING)
    {
        return Assessment::unknown(format!(
            "a comment nests {depth} levels deep, more than pgwarden sends unreviewed (limit {MAX_COMMENT_NESTING}): \
             PostgreSQL's lexer slows down quadratically on them and cannot be cancelled meanwhile; remove the comment"
        ));
    }
    // PostgreSQL truncates identifiers to 63 bytes with only a NOTICE: two names sharing the first 63
    // bytes are one object to it, so the name a reviewer or a policy rule sees is not the one that runs.
    let long: Vec<Finding> = tokens
        .iter()
        .filter_map(|t| match &t.token {
            Token::Word(w) if w.value.len() > catalog::MAX_IDENTIFIER_BYTES => Some(Finding {
                category: Category::Unknown,
                reason: format!(
                    "the identifier `{}…` is longer than 63 bytes; PostgreSQL truncates it to `{}`, which may name another object",
                    catalog::truncate_identifier(&w.value).chars().take(20).collect::<String>(),
                    catalog::fold(&w.value, w.quote_style.is_some())
                ),
            }),
            _ => None,
        })
        .collect();
    let parsed = match bounded::parse_tokens(tokens.clone(), bounded::CLASSIFY_LIMITS) {
        Ok(statements) => statements,
        Err(e @ bounded::ParseError::Parse(_)) => {
            return match settings::alter_setting(&tokens) {
                Some((kind, finding)) if long.is_empty() => Assessment::of_finding(kind, finding),
                _ => Assessment::unknown(format!("{e}, so what it does is unknown")),
            };
        }
        Err(e) => return Assessment::unknown(format!("{e}, so what it does is unknown")),
    };
    if parsed.is_empty() {
        return Assessment::unknown("no SQL statement found".into());
    }
    let mut tables = BTreeSet::new();
    let mut shadowed = BTreeSet::new();
    let mut functions = BTreeSet::new();
    let mut catalogs = BTreeSet::new();
    let mut categories = BTreeSet::new();
    let mut statements = Vec::new();
    for statement in &parsed {
        let (assessment, walk, found) = classify_statement(statement, facts, &long);
        tables.extend(walk.tables);
        shadowed.extend(walk.shadowed);
        functions.extend(walk.functions);
        catalogs.extend(walk.catalogs);
        categories.extend(found);
        statements.push(assessment);
    }
    let mut reasons: Vec<String> = statements.iter().flat_map(|s| s.reasons.iter().cloned()).collect();
    if parsed.len() > 1 {
        reasons.push(format!("{} statements in one text", parsed.len()));
    }
    Assessment {
        risk: statements.iter().map(|s| s.risk).max().unwrap_or(Risk::High),
        categories: categories.into_iter().collect(),
        cte_shadowed: shadowed.difference(&tables).cloned().collect(),
        tables: tables.into_iter().collect(),
        functions: functions.into_iter().collect(),
        databases: catalogs.into_iter().collect(),
        reasons,
        statements,
    }
}

fn classify_statement(
    statement: &Statement,
    facts: &CatalogFacts,
    text_findings: &[Finding],
) -> (StatementAssessment, walk::Walked, BTreeSet<Category>) {
    let base = statements::base_of(statement);
    let walked = walk::walk(statement, base.plan_only, facts);
    let mut findings = vec![base.finding];
    findings.extend(walked.findings.iter().cloned());
    findings.extend(text_findings.iter().cloned());
    let found: BTreeSet<Category> = findings.iter().map(|f| f.category).collect();
    let category = found.iter().copied().max().unwrap_or(Category::Unknown);
    let mut reasons: Vec<String> = Vec::new();
    for f in findings.iter().filter(|f| f.category != Category::Read) {
        if !reasons.contains(&f.reason) {
            reasons.push(f.reason.clone());
        }
    }
    let assessment = StatementAssessment {
        kind: base.kind,
        category,
        risk: category.risk(),
        reasons,
    };
    (assessment, walked, found)
}

#[cfg(test)]
mod catalog_tests;
#[cfg(test)]
mod tests;
