//! Finding a key repeated in one JSON object, anywhere in a message. serde_json reads
//! `{"decision":"deny","decision":"approve"}` as `approve` (last wins); pgwarden refuses it instead.

use std::{cell::RefCell, collections::HashSet, fmt};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What one look at a line found.
#[derive(Debug, PartialEq, Eq)]
pub enum Keys {
    /// Not JSON, or nested deeper than serde_json reads: rmcp cannot read it either.
    NotJson,
    /// Every object's keys are distinct.
    Unique,
    /// The first key found twice, as a path from the top (`params.arguments.sql`, `a[0].b`).
    Repeated(String),
}

/// Walks `line` (one JSON text) with serde_json's own parser and recursion limit, so it reads
/// exactly what rmcp would read.
pub fn check(line: &[u8]) -> Keys {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(line);
    let walked = Walk {
        found: &found,
        at: None,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (walked, found.into_inner()) {
        (Ok(()), Some(path)) => Keys::Repeated(path),
        (Ok(()), None) => Keys::Unique,
        (Err(_), _) => Keys::NotJson,
    }
}

/// Where a value sits: a linked list on the stack, rendered only when a repeat is found.
struct Step<'a> {
    parent: Option<&'a Step<'a>>,
    segment: Segment<'a>,
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn render(step: Option<&Step>) -> String {
    let mut segments = Vec::new();
    let mut at = step;
    while let Some(s) = at {
        segments.push(&s.segment);
        at = s.parent;
    }
    let mut path = String::new();
    for s in segments.into_iter().rev() {
        match s {
            Segment::Key(k) if path.is_empty() => path.push_str(k),
            Segment::Key(k) => {
                path.push('.');
                path.push_str(k);
            }
            Segment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

/// Reads any JSON value, keeping nothing but the first repeated key's path.
struct Walk<'a> {
    found: &'a RefCell<Option<String>>,
    at: Option<&'a Step<'a>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            let step = Step {
                parent: self.at,
                segment: Segment::Index(index),
            };
            let element = Walk {
                found: self.found,
                at: Some(&step),
            };
            if seq.next_element_seed(element)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let step = Step {
                parent: self.at,
                segment: Segment::Key(&key),
            };
            let first = !keys.contains(&key);
            if !first && self.found.borrow().is_none() {
                *self.found.borrow_mut() = Some(render(Some(&step)));
            }
            // Read on to the end: a repeat in a text that is not JSON after all is not a message.
            map.next_value_seed(Walk {
                found: self.found,
                at: Some(&step),
            })?;
            if first {
                keys.insert(key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repeated(s: &str) -> Keys {
        check(s.as_bytes())
    }

    #[test]
    fn repeats_are_found_anywhere_and_named_by_their_path() {
        let cases = [
            (r#"{"a":1,"a":2}"#, Some("a")),
            (r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#, Some("id")),
            (
                r#"{"id":0,"result":{"action":"accept","content":{"decision":"deny","decision":"approve"}}}"#,
                Some("result.content.decision"),
            ),
            (r#"{"a":[{"b":1},{"c":1,"c":2}]}"#, Some("a[1].c")),
            (r#"[[{"x":{"y":1,"y":1}}]]"#, Some("[0][0].x.y")),
            // The same key after a JSON escape is the same key.
            (r#"{"decision":"deny","\u0064ecision":"approve"}"#, Some("decision")),
            // The first repeat is named.
            (r#"{"a":{"b":1,"b":2},"a":3}"#, Some("a.b")),
            // Distinct keys, the same key in sibling or nested objects, and arrays are fine.
            (
                r#"{"a":{"k":1},"b":{"k":1},"c":[{"k":1},{"k":2}],"k":{"k":{"k":1}}}"#,
                None,
            ),
            (r#"{"a":"a","b":["a","a"],"A":1}"#, None),
            (r#"[1,2,"x",null,true,{}]"#, None),
            ("  {}  ", None),
        ];
        for (json, want) in cases {
            let want = match want {
                Some(p) => Keys::Repeated(p.to_string()),
                None => Keys::Unique,
            };
            assert_eq!(repeated(json), want, "{json}");
        }
    }

    #[test]
    fn text_serde_json_does_not_read_is_not_json() {
        for text in [
            "",
            "not json",
            r#"{"a":1,"a":2"#,
            r#"{"a":1} {"b":2}"#,
            &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
        ] {
            assert_eq!(repeated(text), Keys::NotJson, "{text}");
        }
        // Within serde_json's recursion limit a repeat is still found.
        let deep = format!(r#"{}{{"a":1,"a":2}}{}"#, "[".repeat(100), "]".repeat(100));
        assert_eq!(repeated(&deep), Keys::Repeated(format!("{}.a", "[0]".repeat(100))));
    }
}
