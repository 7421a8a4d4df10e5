//! Property test over mutated corpus statements: the classifier never panics, and text that does
//! not parse is never a read. Deterministic (seeded xorshift), so a failure reproduces.

#[path = "common/corpus.rs"]
mod corpus;

use pgwarden::classify::classify;
use sqlparser::{dialect::PostgreSqlDialect, parser::Parser};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "'",
    "\"",
    ";",
    "(",
    ")",
    "$$",
    "$a$",
    "--",
    "/*",
    "*/",
    "\n",
    "\r",
    "\\",
    "U&",
    "E'",
    " ",
    ",",
    "::",
    "SELECT",
    "DELETE FROM t",
    "COMMIT",
    "WITH d AS (",
    "pg_read_file('x')",
    "FROM ONLY",
    "OPERATOR(+)",
    "ANALYZE",
    "é",
    "\u{a0}",
    "\0",
    "🎉",
];

fn mutate(rng: &mut Rng, base: &str, other: &str) -> String {
    let mut chars: Vec<char> = base.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 => chars.truncate(at),
            1 => {
                let piece: Vec<char> = PIECES[rng.below(PIECES.len())].chars().collect();
                chars.splice(at..at, piece);
            }
            2 if at < chars.len() => {
                chars.remove(at);
            }
            _ => {
                let o: Vec<char> = other.chars().collect();
                let from = rng.below(o.len() + 1);
                chars.splice(at..at, o[from..].iter().copied());
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn mutated_sql_never_panics_and_unparseable_text_is_never_a_read() {
    let corpus: Vec<String> = corpus::rows().into_iter().map(|r| r.sql).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut unparseable = 0;
    for i in 0..20_000 {
        let a = &corpus[rng.below(corpus.len())];
        let b = &corpus[rng.below(corpus.len())];
        let sql = mutate(&mut rng, a, b);
        let assessment = classify(&sql);
        if Parser::parse_sql(&PostgreSqlDialect {}, &sql).is_err() {
            unparseable += 1;
            assert!(
                !assessment.is_read(),
                "case {i}: unparseable text classified as read: {sql:?}"
            );
        }
    }
    assert!(
        unparseable > 1000,
        "the mutator should produce plenty of unparseable text ({unparseable})"
    );
}
