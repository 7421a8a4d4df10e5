//! The one way pgwarden parses SQL: the token stream is measured first, and text whose tree could
//! be deep enough to overflow the stack (when it is walked, printed, compared or dropped) is refused.
//!
//! sqlparser's own recursion limit bounds prefix nesting (`((…))`, `NOT NOT …`, `f(f(…))`), but it
//! reads infix chains (`1+1+…`, `a AND b AND …`, `x::int::int…`, `… UNION ALL …`) in a loop and
//! builds a tree one level deeper per operator; every recursive pass over that tree then needs one
//! stack frame per level. Tokens are a flat list, so counting them is safe at any size.

use sqlparser::{
    ast::Statement,
    dialect::PostgreSqlDialect,
    keywords::Keyword,
    parser::{Parser, ParserError},
    tokenizer::{Token, TokenWithSpan, Tokenizer, TokenizerError},
};

/// How much structure one parse may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Infix operators and casts chained on one path of a statement's tree, plus its set
    /// operations (see `Shape`).
    pub max_operators: usize,
    /// Parentheses and brackets open at once.
    pub max_nesting: usize,
}

/// The depth sqlparser may recurse to while parsing (its default, made explicit). Deeper prefix
/// nesting is a parse error, so the text is `unknown`.
pub const RECURSION_LIMIT: usize = 50;

/// Limits for classifying and for the masking rewrite.
///
/// Measured in a debug build on a 2 MiB thread (a tokio worker's stack), the first pass to overflow
/// is dropping the tree, at 20,000–35,000 chained `+`; visiting and printing last longer. 1,000
/// operators stays 20× inside that while leaving room for machine-written SQL (a few hundred `OR`s).
/// Lists (`IN (1, 2, …)`, `VALUES (…), (…)`, select lists) are flat in the tree and not counted, so
/// a 50,000-item `IN` list classifies normally. 40 open parentheses stays under the parser's
/// recursion limit, so deep nesting gets this clear reason instead of a parser message.
pub const CLASSIFY_LIMITS: ParseLimits = ParseLimits {
    max_operators: 1_000,
    max_nesting: 40,
};

/// Limits for pretty-printing a review packet, which also compares two trees with `==`: that
/// derived comparison overflowed a debug 2 MiB stack between 800 and 1,000 chained `+`. Past 200
/// the packet shows the text as written.
pub const PRETTY_LIMITS: ParseLimits = ParseLimits {
    max_operators: 200,
    max_nesting: 40,
};

/// Why a text was not parsed. The messages finish the sentence "…, so what it does is unknown".
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the SQL does not parse ({0})")]
    Tokenize(#[from] TokenizerError),
    #[error(
        "the SQL has {found} chained operators in one statement, more than pgwarden reads (limit {limit}); \
         split it or ask for approval"
    )]
    TooManyOperators { found: usize, limit: usize },
    #[error(
        "the SQL nests parentheses, brackets or JOINs {found} deep, more than pgwarden reads (limit {limit}); \
         flatten it or ask for approval"
    )]
    TooDeep { found: usize, limit: usize },
    #[error("the SQL does not parse ({0})")]
    Parse(#[from] ParserError),
}

/// Tokenizes `sql` with the PostgreSQL dialect (safe at any size: no tree).
pub fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, ParseError> {
    Ok(Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location()?)
}

/// Parses `sql` when its tokens are within `limits`.
pub fn parse(sql: &str, limits: ParseLimits) -> Result<Vec<Statement>, ParseError> {
    parse_tokens(tokenize(sql)?, limits)
}

/// Parses already tokenized SQL when it is within `limits`.
pub fn parse_tokens(tokens: Vec<TokenWithSpan>, limits: ParseLimits) -> Result<Vec<Statement>, ParseError> {
    check(&tokens, limits)?;
    Ok(Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens)
        .parse_statements()?)
}

/// Refuses tokens over `limits`: the deepest operator chain in one statement, or the deepest nesting.
pub fn check(tokens: &[TokenWithSpan], limits: ParseLimits) -> Result<(), ParseError> {
    let shape = Shape::of(tokens);
    if shape.nesting > limits.max_nesting {
        return Err(ParseError::TooDeep {
            found: shape.nesting,
            limit: limits.max_nesting,
        });
    }
    if shape.operators > limits.max_operators {
        return Err(ParseError::TooManyOperators {
            found: shape.operators,
            limit: limits.max_operators,
        });
    }
    Ok(())
}

/// An upper bound on how deep the tree of a token list can get.
#[derive(Debug, Default, PartialEq)]
struct Shape {
    /// The most operators on one path from a statement's root: operators chained in a list item
    /// plus those of the items it sits in, plus every set operation of the statement.
    operators: usize,
    /// The most parentheses and brackets open at once, plus JOINs still waiting for their `ON`
    /// or `USING` (`a JOIN b JOIN c … ON … ON …` nests one level per JOIN, and the parser reads
    /// it by recursion its limit does not bound: 300 of them overflowed a server's stack).
    nesting: usize,
}

/// Operators counted at one nesting level: in the list item being read, and the most in any item
/// already read (a comma separates items, which are siblings in the tree, not a chain).
#[derive(Default)]
struct Level {
    current: usize,
    most: usize,
    /// JOINs at this level still waiting for their `ON`/`USING` (an `ON` inside parentheses,
    /// such as `DISTINCT ON (…)` in a subquery, belongs to that inner level).
    pending_joins: usize,
    /// A `NATURAL` or `CROSS` was read and its `JOIN` has not come yet.
    unconstrained: bool,
}

impl Level {
    fn deepest(&self) -> usize {
        self.current.max(self.most)
    }
}

impl Shape {
    fn of(tokens: &[TokenWithSpan]) -> Shape {
        let mut shape = Shape::default();
        let mut levels = vec![Level::default()];
        // `UNION`/`INTERSECT`/`EXCEPT` chain whole select lists, commas and all, so they are counted
        // for the statement and never reset by a comma.
        let mut set_operations = 0;
        // JOINs waiting for their constraint at every level, kept as a sum (no walk per token).
        let mut joins = 0usize;
        let mut previous: Option<&Token> = None;
        for t in tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_))) {
            let top = levels.len() - 1;
            match &t.token {
                Token::LParen | Token::LBracket | Token::LBrace => {
                    levels.push(Level::default());
                    shape.nesting = shape.nesting.max(levels.len() - 1 + joins);
                }
                Token::RParen | Token::RBracket | Token::RBrace if top > 0 => {
                    let closed = levels.pop().unwrap_or_default();
                    joins -= closed.pending_joins;
                    let inner = closed.deepest();
                    levels[top - 1].current += inner;
                }
                Token::Comma => {
                    levels[top].most = levels[top].deepest();
                    levels[top].current = 0;
                }
                // A statement ends only at the top level: a `;` inside parentheses is a parse error,
                // and the parser builds (and drops) the tree before it.
                Token::SemiColon if top == 0 => {
                    shape.operators = shape.operators.max(levels[0].deepest() + set_operations);
                    levels[0] = Level::default();
                    set_operations = 0;
                    joins = 0;
                }
                // CROSS and NATURAL joins take no constraint, so they never wait for one.
                Token::Word(w) if matches!(w.keyword, Keyword::CROSS | Keyword::NATURAL) => {
                    levels[top].unconstrained = true;
                }
                Token::Word(w) if w.keyword == Keyword::JOIN => {
                    let waits = usize::from(!std::mem::take(&mut levels[top].unconstrained));
                    levels[top].pending_joins += waits;
                    joins += waits;
                    shape.nesting = shape.nesting.max(levels.len() - 1 + joins);
                }
                Token::Word(w)
                    if matches!(w.keyword, Keyword::ON | Keyword::USING) && levels[top].pending_joins > 0 =>
                {
                    levels[top].pending_joins -= 1;
                    joins -= 1;
                }
                Token::Word(w) if matches!(w.keyword, Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT) => {
                    set_operations += 1;
                }
                token if is_operator(token, previous) => levels[top].current += 1,
                _ => {}
            }
            previous = Some(&t.token);
        }
        // Unclosed parentheses: their operators count as if closed here.
        while levels.len() > 1 {
            let inner = levels.pop().map_or(0, |l| l.deepest());
            if let Some(outer) = levels.last_mut() {
                outer.current += inner;
            }
        }
        shape.operators = shape.operators.max(levels[0].deepest() + set_operations);
        shape
    }
}

/// True for a token that joins two operands into one deeper node. A sign after `(`, `,` or another
/// operator is unary (`IN (-1, -2)`): the parser reads it by recursion, which its limit bounds.
fn is_operator(token: &Token, previous: Option<&Token>) -> bool {
    match token {
        Token::Word(w) => {
            matches!(
                w.keyword,
                Keyword::AND
                    | Keyword::OR
                    | Keyword::XOR
                    | Keyword::NOT
                    | Keyword::IS
                    | Keyword::IN
                    | Keyword::LIKE
                    | Keyword::ILIKE
                    | Keyword::SIMILAR
                    | Keyword::BETWEEN
                    | Keyword::COLLATE
                    | Keyword::AT
                    | Keyword::OVERLAPS
                    | Keyword::OPERATOR
            ) && w.quote_style.is_none()
        }
        Token::Plus | Token::Minus => previous.is_some_and(is_operand_end),
        Token::EOF | Token::Comma | Token::Period | Token::SemiColon | Token::Placeholder(_) => false,
        t if is_literal(t) => false,
        // Every other symbol: arithmetic, comparison, `||`, `::`, JSON and geometric operators.
        _ => true,
    }
}

/// A token after which a sign is binary: an operand or a closing bracket.
fn is_operand_end(token: &Token) -> bool {
    matches!(token, Token::Word(_) | Token::RParen | Token::RBracket | Token::RBrace) || is_literal(token)
}

fn is_literal(token: &Token) -> bool {
    matches!(
        token,
        Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

#[cfg(test)]
#[path = "bounded_tests.rs"]
mod tests;
