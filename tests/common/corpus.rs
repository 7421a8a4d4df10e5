//! The shared attack corpus (`tests/data/sql-corpus.tsv`), read once for the classifier test, the
//! property test and the benchmark.
#![allow(dead_code)]

pub struct Row {
    pub id: String,
    pub expected: String,
    pub sql: String,
}

pub fn rows() -> Vec<Row> {
    include_str!("../data/sql-corpus.tsv")
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            Row {
                id: cols[0].into(),
                expected: cols[2].into(),
                sql: unescape(cols[3]),
            }
        })
        .collect()
}

/// COPY-text unescaping, as the corpus is written.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('v') => out.push('\x0b'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = [chars.next(), chars.next()].into_iter().flatten().collect();
                out.push(u8::from_str_radix(&hex, 16).map(char::from).unwrap_or('?'));
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}
