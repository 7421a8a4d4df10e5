//! Who sent a message too large to keep: its JSON-RPC `id`, `method`, whether it answers a request
//! (`result`/`error`), and a tool call's `params.name`, read in one streaming pass over the top two
//! levels of the object. It holds a few small values, never the message.

use serde_json::Value;

/// The most bytes of one key or value of interest that are kept; longer ones are not read.
const MAX_CAPTURE: usize = 1024;
/// Nesting is followed this deep; past it the scan stops (with what it found so far).
const MAX_DEPTH: usize = 1024;

/// What the scan found. A field given twice counts as not found.
#[derive(Debug, Default, PartialEq)]
pub struct Head {
    /// The top-level `id`, when it appears once and is a string, a number or null.
    pub id: Option<Value>,
    /// The top-level `id` key appears at all (so this is not a notification).
    pub has_id: bool,
    pub method: Option<String>,
    /// The top-level `method` key appears at all.
    pub has_method: bool,
    /// The top-level `result` or `error` key appears: the message answers a request.
    pub is_answer: bool,
    /// `params.name`, the tool of a `tools/call`.
    pub tool: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Field {
    Id,
    Method,
    Params,
    Answer,
    Name,
    Other,
}

/// One field found: how often, and its value when it was small and read.
#[derive(Default)]
struct Slot {
    times: u32,
    value: Option<Value>,
}

impl Slot {
    fn get(&self) -> Option<&Value> {
        if self.times == 1 { self.value.as_ref() } else { None }
    }
}

#[derive(Default)]
pub struct HeadScanner {
    /// Containers open around the current byte.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The text is not an object, or it ended: nothing more is read.
    stopped: bool,
    /// Inside the top-level `params` object (depth 2 then belongs to it).
    in_params: bool,
    /// Per tracked level (the top object, `params`): a key comes next, and the last key read.
    expect_key: [bool; 2],
    key: [Option<Field>; 2],
    /// The bytes of the key or value being read, and what it is.
    capture: Option<Capture>,
    id: Slot,
    method: Slot,
    name: Slot,
    params: u32,
    answer: u32,
}

struct Capture {
    target: Target,
    bytes: Vec<u8>,
    /// Grew past [`MAX_CAPTURE`]: counted, not read.
    too_long: bool,
}

#[derive(Clone, Copy)]
enum Target {
    Key(usize),
    Value(Field),
}

impl HeadScanner {
    pub fn new() -> HeadScanner {
        HeadScanner::default()
    }

    /// The level (0: the top object, 1: `params`) the scan is at, if it is one it follows.
    fn level(&self) -> Option<usize> {
        match self.depth {
            1 => Some(0),
            2 if self.in_params => Some(1),
            _ => None,
        }
    }

    /// Reads the next bytes of the message (without its newline).
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() && !self.stopped {
            if self.in_string && self.capture.is_none() {
                // The bulk of a large message is one long string: skip to where it may end.
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                match bytes[i..].iter().position(|&b| b == b'"' || b == b'\\') {
                    Some(n) => i += n,
                    None => return,
                }
            }
            self.byte(bytes[i]);
            i += 1;
        }
    }

    fn byte(&mut self, b: u8) {
        if self.in_string {
            self.keep(b);
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                self.end_capture();
            }
            return;
        }
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => self.end_capture(),
            b'"' => {
                self.in_string = true;
                match self.level() {
                    Some(l) if self.expect_key[l] => self.start(Target::Key(l)),
                    Some(l) => self.start_value(l),
                    None => {}
                }
                self.keep(b);
            }
            b'{' | b'[' => {
                if self.depth == 0 && b != b'{' {
                    self.stopped = true;
                    return;
                }
                if self.depth == 1 && self.key[0] == Some(Field::Params) && b == b'{' {
                    self.in_params = true;
                    self.expect_key[1] = true;
                    self.key[1] = None;
                }
                self.depth += 1;
                if self.depth == 1 {
                    self.expect_key[0] = true;
                }
                if self.depth > MAX_DEPTH {
                    self.stopped = true;
                }
            }
            b'}' | b']' => {
                self.end_capture();
                self.depth = self.depth.saturating_sub(1);
                if self.depth <= 1 {
                    self.in_params = false;
                }
                if self.depth == 0 {
                    self.stopped = true;
                }
            }
            b',' => {
                self.end_capture();
                if let Some(l) = self.level() {
                    self.expect_key[l] = true;
                }
            }
            b':' => {
                self.end_capture();
                if let Some(l) = self.level() {
                    self.expect_key[l] = false;
                }
            }
            _ => {
                // A number or a literal (`null`, `true`), read up to the next delimiter.
                if self.capture.is_none()
                    && let Some(l) = self.level()
                    && !self.expect_key[l]
                {
                    self.start_value(l);
                }
                self.keep(b);
            }
        }
    }

    /// A value starts at level `l`: read it when its key is one of interest.
    fn start_value(&mut self, l: usize) {
        let wanted = match (l, self.key[l]) {
            (0, Some(f @ (Field::Id | Field::Method))) | (1, Some(f @ Field::Name)) => f,
            _ => return,
        };
        self.start(Target::Value(wanted));
    }

    fn start(&mut self, target: Target) {
        self.capture = Some(Capture {
            target,
            bytes: Vec::new(),
            too_long: false,
        });
    }

    fn keep(&mut self, b: u8) {
        if let Some(c) = &mut self.capture {
            if c.bytes.len() < MAX_CAPTURE {
                c.bytes.push(b);
            } else {
                c.too_long = true;
            }
        }
    }

    fn end_capture(&mut self) {
        let Some(c) = self.capture.take() else { return };
        let value = if c.too_long {
            None
        } else {
            serde_json::from_slice::<Value>(&c.bytes).ok()
        };
        match c.target {
            Target::Key(l) => {
                let field = match value.as_ref().and_then(Value::as_str) {
                    Some("id") if l == 0 => Field::Id,
                    Some("method") if l == 0 => Field::Method,
                    Some("params") if l == 0 => Field::Params,
                    Some("result" | "error") if l == 0 => Field::Answer,
                    Some("name") if l == 1 => Field::Name,
                    _ => Field::Other,
                };
                self.key[l] = Some(field);
                match field {
                    Field::Id => self.id.times += 1,
                    Field::Method => self.method.times += 1,
                    Field::Name => self.name.times += 1,
                    Field::Params => self.params += 1,
                    Field::Answer => self.answer += 1,
                    Field::Other => {}
                }
            }
            Target::Value(field) => {
                let slot = match field {
                    Field::Id => &mut self.id,
                    Field::Method => &mut self.method,
                    _ => &mut self.name,
                };
                slot.value = value;
            }
        }
    }

    /// What was found, once the message has been read to its end.
    pub fn finish(mut self) -> Head {
        self.end_capture();
        let string = |s: &Slot| s.get().and_then(Value::as_str).map(str::to_string);
        let method = string(&self.method);
        Head {
            id: self
                .id
                .get()
                .filter(|v| v.is_string() || v.is_number() || v.is_null())
                .cloned(),
            has_id: self.id.times > 0,
            has_method: self.method.times > 0,
            tool: string(&self.name).filter(|_| method.as_deref() == Some("tools/call") && self.params == 1),
            method,
            is_answer: self.answer > 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Scans `text` fed in pieces of `chunk` bytes.
    fn scan(text: &str, chunk: usize) -> Head {
        let mut s = HeadScanner::new();
        for piece in text.as_bytes().chunks(chunk) {
            s.feed(piece);
        }
        s.finish()
    }

    fn head(id: Option<Value>, method: Option<&str>, tool: Option<&str>) -> Head {
        Head {
            has_id: id.is_some(),
            has_method: method.is_some(),
            id,
            method: method.map(str::to_string),
            tool: tool.map(str::to_string),
            is_answer: false,
        }
    }

    #[test]
    fn the_id_method_and_tool_are_found_wherever_they_are() {
        let big = "x".repeat(100_000);
        let cases = [
            (
                format!(
                    r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"query","arguments":{{"sql":"{big}"}}}}}}"#
                ),
                head(Some(json!(7)), Some("tools/call"), Some("query")),
            ),
            // The TypeScript SDK writes `id` last, after the big `params`.
            (
                format!(
                    r#"{{"method":"tools/call","params":{{"arguments":{{"sql":"{big}"}},"name":"query"}},"jsonrpc":"2.0","id":"abc-1"}}"#
                ),
                head(Some(json!("abc-1")), Some("tools/call"), Some("query")),
            ),
            // Escaped strings: quotes, backslashes and braces inside strings are not structure.
            (
                format!(
                    r#"{{ "params" : {{ "arguments" : {{ "sql" : "a \"}}]\\\" , \"id\": 9 {big}\\" }} , "name" : "export" }} , "id" : "q\"1" , "method" : "tools/call" }}"#
                ),
                head(Some(json!("q\"1")), Some("tools/call"), Some("export")),
            ),
            // Nested values before the id, with `id` and `name` keys of their own.
            (
                format!(
                    r#"{{"params":{{"meta":{{"id":1,"name":"no"}},"list":[{{"id":2}},[3,{{"name":"no"}}]],"name":"query","arguments":{{"sql":"{big}"}}}},"method":"tools/call","id":-12.5e3}}"#
                ),
                head(Some(json!(-12.5e3)), Some("tools/call"), Some("query")),
            ),
            // A key spelled with an escape is the same key.
            (
                format!(r#"{{"\u0069d":3,"method":"ping","params":{{"x":"{big}"}}}}"#),
                head(Some(json!(3)), Some("ping"), None),
            ),
            (
                r#"{"id":null,"method":"tools/list"}"#.into(),
                head(Some(Value::Null), Some("tools/list"), None),
            ),
            // No id: a notification, or not a message at all.
            (
                format!(r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"data":"{big}"}}}}"#),
                head(None, Some("notifications/message"), None),
            ),
            (format!(r#"["{big}", {{"id":1}}]"#), head(None, None, None)),
            (format!(r#""{big}""#), head(None, None, None)),
            // `name` only counts for a tool call.
            (
                r#"{"id":1,"method":"prompts/get","params":{"name":"p"}}"#.into(),
                head(Some(json!(1)), Some("prompts/get"), None),
            ),
        ];
        for (text, want) in cases {
            for chunk in [1, 3, 7, 4096, usize::MAX] {
                let short = &text[..text.len().min(80)];
                assert_eq!(scan(&text, chunk), want, "chunk {chunk}: {short}");
            }
        }
    }

    #[test]
    fn a_truncated_message_yields_what_came_before_the_cut() {
        let text = format!(
            r#"{{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{{"name":"query","arguments":{{"sql":"{}"#,
            "y".repeat(5000)
        );
        assert_eq!(
            scan(&text, 100),
            head(Some(json!(42)), Some("tools/call"), Some("query"))
        );
        // Cut inside the id: not an id.
        assert_eq!(scan(r#"{"id":"abc"#, 1).id, None);
        assert!(scan(r#"{"id":"abc"#, 1).has_id);
    }

    #[test]
    fn ambiguous_or_unusable_ids_are_not_used() {
        let twice = scan(r#"{"id":1,"method":"ping","id":2}"#, 5);
        assert_eq!((twice.id, twice.has_id), (None, true));
        let object = scan(r#"{"id":{"a":1},"method":"ping"}"#, 5);
        assert_eq!((object.id, object.has_id), (None, true));
        let long = scan(&format!(r#"{{"id":"{}","method":"ping"}}"#, "z".repeat(5000)), 64);
        assert_eq!(
            (long.id, long.has_id, long.method.as_deref()),
            (None, true, Some("ping"))
        );
        let method_twice = scan(r#"{"id":1,"method":"tools/call","method":"ping"}"#, 5);
        assert_eq!(method_twice.method, None);
    }

    #[test]
    fn an_answer_is_told_from_a_request() {
        let answer = scan(
            &format!(
                r#"{{"jsonrpc":"2.0","result":{{"content":"{}"}},"id":0}}"#,
                "a".repeat(3000)
            ),
            10,
        );
        assert_eq!(
            (answer.id, answer.is_answer, answer.method),
            (Some(json!(0)), true, None)
        );
        let error = scan(r#"{"jsonrpc":"2.0","id":"s","error":{"code":1}}"#, 10);
        assert!(error.is_answer);
    }
}
