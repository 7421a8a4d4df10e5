//! Text as pgwarden shows it to people: control and bidirectional-formatting characters made
//! visible, so a string quoted from a model, a record or a database cannot hide what it says. A
//! leaf: it uses nothing else in the crate.

/// Control and bidirectional-formatting characters shown as `\u{…}` so the text cannot hide what it
/// does; newlines and tabs stay.
/// Characters that reorder, hide or break text on a screen without being control characters:
/// bidi marks and overrides, zero-width characters, line and paragraph separators.
pub fn hidden_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

pub fn visible(s: &str) -> String {
    s.chars()
        .map(|c| {
            let hidden = (c.is_control() && c != '\n' && c != '\t') || hidden_format(c);
            if hidden {
                format!("\\u{{{:04X}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `s` as one line: hidden characters visible, line breaks and tabs shown as `\n`, `\r`, `\t`, and
/// at most `max` characters (the rest counted, not shown).
pub fn one_line(s: &str, max: usize) -> String {
    let escaped = visible(
        &s.replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
            .replace('\t', "\\t"),
    );
    let total = escaped.chars().count();
    if total <= max {
        return escaped;
    }
    format!(
        "{}… ({} more characters)",
        escaped.chars().take(max).collect::<String>(),
        total - max
    )
}

/// Names as code, comma-separated: `` `a`, `b` ``, for messages that list what may be given.
pub fn quoted<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
