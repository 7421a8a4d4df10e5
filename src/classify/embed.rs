//! Agent text placed inside pgwarden's own fixed text (`COPY (…) TO STDOUT`, `EXPLAIN (…) …`)
//! runs only when that changes nothing about how the agent's text is read: no comment in it, and
//! the whole tokenizes as exactly the parts side by side. Otherwise the part a comment or an open
//! string swallowed would be what Postgres runs.

use sqlparser::{
    dialect::PostgreSqlDialect,
    tokenizer::{Token, Tokenizer, Whitespace},
};

/// Why agent text cannot be embedded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EmbedError(pub String);

fn tokens(sql: &str) -> Result<Vec<Token>, EmbedError> {
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| EmbedError(format!("the SQL does not tokenize ({e})")))
}

fn significant(tokens: Vec<Token>) -> Vec<Token> {
    tokens
        .into_iter()
        .filter(|t| {
            !matches!(
                t,
                Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab)
            )
        })
        .collect()
}

/// `prefix`, `sql` and `suffix` joined, when the joined text reads as the three parts side by side
/// and `sql` holds no comment.
pub fn embed(prefix: &str, sql: &str, suffix: &str) -> Result<String, EmbedError> {
    let inner = tokens(sql)?;
    if inner.iter().any(|t| {
        matches!(
            t,
            Token::Whitespace(Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_))
        )
    }) {
        return Err(EmbedError(
            "the SQL has a comment, and pgwarden runs it inside its own statement here; remove the comment".into(),
        ));
    }
    let mut expected = significant(tokens(prefix)?);
    expected.extend(significant(inner));
    expected.extend(significant(tokens(suffix)?));
    let joined = format!("{prefix}{sql}{suffix}");
    if significant(tokens(&joined)?) != expected {
        return Err(EmbedError(
            "the SQL does not stand on its own inside pgwarden's statement (an open quote, parenthesis or comment \
             would swallow pgwarden's text); send one complete statement"
                .into(),
        ));
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::embed;

    #[test]
    fn a_complete_query_embeds_and_comments_or_open_quotes_do_not() {
        assert_eq!(
            embed("COPY (\n", "SELECT 'a', \"b\" FROM t", "\n) TO STDOUT").unwrap(),
            "COPY (\nSELECT 'a', \"b\" FROM t\n) TO STDOUT"
        );
        for bad in [
            "SELECT 1 -- swallow",
            "SELECT 1 /* swallow",
            "SELECT 1 /* x */",
            "SELECT $x$",
        ] {
            assert!(embed("COPY (\n", bad, "\n) TO STDOUT").is_err(), "{bad}");
        }
    }
}
