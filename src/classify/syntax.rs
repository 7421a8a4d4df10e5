//! Text PostgreSQL certainly rejects before running anything: a statement must start with one of
//! its commands (or `(` for a parenthesized query). A typo such as `SELEC …` is answered at once
//! with the error and a suggestion, instead of going to a person as an "unknown" statement to
//! approve and then failing.

use sqlparser::tokenizer::{Token, Whitespace};

/// The words a statement can start with in PostgreSQL's grammar (`stmt` in gram.y).
const COMMANDS: &[&str] = &[
    "ABORT",
    "ALTER",
    "ANALYSE",
    "ANALYZE",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "CLOSE",
    "CLUSTER",
    "COMMENT",
    "COMMIT",
    "COPY",
    "CREATE",
    "DEALLOCATE",
    "DECLARE",
    "DELETE",
    "DISCARD",
    "DO",
    "DROP",
    "END",
    "EXECUTE",
    "EXPLAIN",
    "FETCH",
    "GRANT",
    "IMPORT",
    "INSERT",
    "LISTEN",
    "LOAD",
    "LOCK",
    "MERGE",
    "MOVE",
    "NOTIFY",
    "PREPARE",
    "REASSIGN",
    "REFRESH",
    "REINDEX",
    "RELEASE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SECURITY",
    "SELECT",
    "SET",
    "SHOW",
    "START",
    "TABLE",
    "TRUNCATE",
    "UNLISTEN",
    "UPDATE",
    "VACUUM",
    "VALUES",
    "WITH",
];

/// The syntax error PostgreSQL would give, when the text cannot start a statement.
pub fn certain_syntax_error(sql: &str) -> Option<String> {
    let tokens = super::bounded::tokenize(sql).ok()?;
    let first = tokens.iter().map(|t| &t.token).find(|t| {
        !matches!(
            t,
            Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab)
                | Token::Whitespace(Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_))
        )
    })?;
    let word = match first {
        Token::Word(w) if w.quote_style.is_none() => w.value.to_uppercase(),
        Token::LParen | Token::SemiColon | Token::EOF => return None,
        other => {
            return Some(format!(
                "syntax error at or near \"{other}\": a statement starts with an SQL command"
            ));
        }
    };
    if COMMANDS.contains(&word.as_str()) {
        return None;
    }
    let suggestion = COMMANDS
        .iter()
        .map(|c| (distance(&word, c), c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| format!(" — did you mean `{c}`?"))
        .unwrap_or_default();
    Some(format!(
        "syntax error at or near \"{first}\": no SQL command starts with it{suggestion} Nothing was run; fix the statement"
    ))
}

/// Why `query` cannot run the statement at all, whatever a person decides: `COPY … TO STDOUT` and
/// `COPY … FROM STDIN` need the copy sub-protocol, which `query` does not speak. Read from the
/// assessment: the statement is not parsed again.
pub fn not_runnable(assessment: &super::Assessment) -> Option<String> {
    use super::statements::{COPY_FROM_STDIN, COPY_TO_STDOUT};
    assessment.statements.iter().find_map(|s| match s.kind.as_str() {
        COPY_TO_STDOUT => Some(
            "`COPY … TO STDOUT` streams through the copy protocol, which `query` does not speak; use the `export` \
             tool (it writes the rows to a file, CSV or JSON lines) or a plain SELECT"
                .to_string(),
        ),
        COPY_FROM_STDIN => Some(
            "`COPY … FROM STDIN` needs the copy protocol to send rows, which `query` does not speak; use INSERT"
                .to_string(),
        ),
        _ => None,
    })
}

/// Edit distance (insertions, deletions, substitutions).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_cannot_start_a_statement_is_named_with_a_suggestion() {
        let e = certain_syntax_error("SELEC * FROM orders").unwrap();
        assert!(e.contains("\"SELEC\"") && e.contains("did you mean `SELECT`"), "{e}");
        assert!(
            certain_syntax_error("  -- why\n/* c */ selec 1")
                .unwrap()
                .contains("SELECT")
        );
        assert!(certain_syntax_error("\"SELECT\" 1").is_some());
        assert!(certain_syntax_error("DESCRIBE orders").is_some());
        let runnable = |sql| not_runnable(&super::super::classify(sql));
        assert!(runnable("COPY orders TO STDOUT").unwrap().contains("`export`"));
        assert!(runnable("COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)").is_some());
        assert!(runnable("COPY orders FROM STDIN").unwrap().contains("INSERT"));
        assert!(runnable("COPY orders FROM '/tmp/x'").is_none());
        assert!(runnable("SELECT 1").is_none());
        for ok in [
            "select 1",
            "(SELECT 1)",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "TABLE t",
            "values (1)",
            "",
        ] {
            assert_eq!(certain_syntax_error(ok), None, "{ok}");
        }
    }
}
