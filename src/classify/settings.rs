//! Statements that change server settings: which settings change how PostgreSQL lexes SQL, and the
//! `ALTER SYSTEM … SET` / `ALTER DATABASE … SET` forms sqlparser cannot parse, recognised from tokens
//! only when they have exactly the grammar's shape (anything else stays `unknown`).

use sqlparser::{
    keywords::Keyword,
    tokenizer::{Token, TokenWithSpan},
};

use super::{Category, Finding};

/// Settings that change how PostgreSQL turns the next text into tokens, so that pgwarden's parser
/// (which always lexes `'…'` with `standard_conforming_strings = on` and UTF-8) reads another
/// statement than PostgreSQL does:
/// - `standard_conforming_strings`: off makes `\` an escape inside `'…'` (sqlparser_gaps §3.11, S2);
/// - `backslash_quote`: whether `\'` may end-escape a quote in those strings;
/// - `escape_string_warning`: only a warning, but it is the one signal that the above is in play;
/// - `client_encoding` (and `SET NAMES`): in SJIS, BIG5, GBK, GB18030 or UHC a multibyte character may
///   end in byte 0x5C (`\`) or 0x27 (`'`), which changes where a string ends.
///
/// Not listed: `lc_ctype` and `server_encoding` cannot be changed by SET/ALTER (they are fixed when the
/// database is created), and `search_path` changes name resolution, not lexing.
pub const LEXING_SETTINGS: &[&str] = &[
    "standard_conforming_strings",
    "backslash_quote",
    "escape_string_warning",
    "client_encoding",
];

pub fn is_lexing(setting: &str) -> bool {
    LEXING_SETTINGS.contains(&setting.to_ascii_lowercase().as_str())
}

/// The reason for a statement that sets `setting`, naming lexing when that is what it changes.
pub fn set_reason(what: &str, setting: &str) -> String {
    if is_lexing(setting) {
        format!("{what} changes `{setting}`, which changes how PostgreSQL lexes SQL (strings and escapes)")
    } else {
        format!("{what} changes the setting `{setting}`")
    }
}

/// `ALTER SYSTEM SET|RESET …` and `ALTER DATABASE name SET|RESET …` (and `ALTER ROLE ALL …`), which
/// sqlparser 0.63 rejects: `(kind, finding)` when the tokens have exactly the grammar's shape.
pub fn alter_setting(tokens: &[TokenWithSpan]) -> Option<(String, Finding)> {
    let mut t: Vec<&Token> = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    while t.last() == Some(&&Token::SemiColon) {
        t.pop();
    }
    let kw =
        |i: usize, k: Keyword| matches!(t.get(i), Some(Token::Word(w)) if w.keyword == k && w.quote_style.is_none());
    let word = |i: usize| matches!(t.get(i), Some(Token::Word(_)));
    if !kw(0, Keyword::ALTER) {
        return None;
    }
    let (kind, rest) = if kw(1, Keyword::SYSTEM) {
        ("ALTER SYSTEM", 2)
    } else if kw(1, Keyword::DATABASE) && word(2) {
        ("ALTER DATABASE", 3)
    } else {
        return None;
    };
    let (name, after) = setting_name(&t, rest + 1)?;
    let shape_ok = if kw(rest, Keyword::RESET) {
        after == t.len()
    } else if kw(rest, Keyword::SET) {
        let from_current = kind == "ALTER DATABASE" && kw(after, Keyword::FROM) && kw(after + 1, Keyword::CURRENT);
        let assign = matches!(t.get(after), Some(Token::Eq)) || kw(after, Keyword::TO);
        if from_current {
            after + 2 == t.len()
        } else {
            assign
                && after + 1 < t.len()
                && t[after + 1..].iter().all(|v| {
                    matches!(
                        v,
                        Token::Word(_) | Token::Number(..) | Token::SingleQuotedString(_) | Token::Comma | Token::Minus
                    )
                })
        }
    } else {
        false
    };
    if !shape_ok {
        return None;
    }
    let scope = if kind == "ALTER SYSTEM" {
        "for the whole server"
    } else {
        "for every new session in the database"
    };
    let reason = format!("{} {scope}", set_reason(&format!("`{kind}`"), &name));
    Some((
        kind.to_string(),
        Finding {
            category: Category::Admin,
            reason,
        },
    ))
}

/// A setting name (`work_mem`, `app.secret`) starting at `i`, or `ALL`: the name and where it ends.
fn setting_name(t: &[&Token], i: usize) -> Option<(String, usize)> {
    let part = |i: usize| match t.get(i) {
        Some(Token::Word(w)) => Some(if w.quote_style.is_some() {
            w.value.clone()
        } else {
            w.value.to_ascii_lowercase()
        }),
        _ => None,
    };
    let mut name = part(i)?;
    let mut j = i + 1;
    while matches!(t.get(j), Some(Token::Period)) {
        name = format!("{name}.{}", part(j + 1)?);
        j += 2;
    }
    Some((name, j))
}
