//! Tool schemas in the subset every host accepts. schemars writes full JSON Schema 2020-12; this
//! pass rewrites it once, when the tool list is built, into what OpenAI function calling, Gemini
//! function declarations and strict validators (ajv, the Inspector's `--strict`) all take.
//!
//! What changes, and why:
//! - `$ref`/`$defs` are inlined and `$schema` is dropped (Gemini rejects both; a `$ref` with a
//!   sibling `description` is an error for OpenAI).
//! - a `oneOf`/`anyOf` of `const`s (a Rust enum with doc comments) becomes a plain `enum`; the
//!   variants' docs move into the description.
//! - integer and number `format`s (`int64`, `uint64`, `uint`, `double`, …) are dropped: they are not
//!   in OpenAI's list, and validators warn on unknown formats. `minimum` stays.
//! - `default: null` is dropped (OpenAI rejects `default`; an absent field already means "none").
//! - a boolean schema becomes its object form (`true` → `{}`, `false` → `{"not": {}}`).
//! - Nullable fields. Inputs: an optional field (not in `required`) loses its `null` branch and
//!   keeps a single `type`: absent is how a caller says "none", and that is the one spelling both
//!   OpenAI and Gemini accept (`nullable: true` is OpenAPI, not JSON Schema; `["T","null"]` is
//!   not OpenAPI). A null sent anyway is still accepted by the server. Outputs: a value that can
//!   be null keeps saying so, as `anyOf` of single-type branches (no `type` arrays).
//! - Inputs lose `additionalProperties` (Gemini's subset has no such field); unknown arguments are
//!   still refused when the arguments are read.
//!
//! Anything this pass cannot express portably is left as it is, and `tests/schemas.rs` fails on it.

use rmcp::model::JsonObject;
use serde_json::{Map, Value, json};

/// Which side of a tool a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Arguments: read by the model's host, so the common subset of the hosts' dialects.
    Input,
    /// Structured results: read by SDK validators, so plain JSON Schema that tells the truth.
    Output,
}

/// `$ref` chains deeper than this are left alone (a recursive type); the test reports them.
const MAX_DEPTH: usize = 32;

/// A tool's `inputSchema`, rewritten into the common subset.
pub fn input(schema: &JsonObject) -> JsonObject {
    rewrite_root(schema, Side::Input)
}

/// A tool's `outputSchema`, rewritten the same way but keeping nullability.
pub fn output(schema: &JsonObject) -> JsonObject {
    rewrite_root(schema, Side::Output)
}

fn rewrite_root(schema: &JsonObject, side: Side) -> JsonObject {
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut root = schema.clone();
    root.remove("$defs");
    root.remove("definitions");
    match rewrite(Value::Object(root), &defs, side, 0) {
        Value::Object(o) => o,
        _ => schema.clone(),
    }
}

fn rewrite(node: Value, defs: &Map<String, Value>, side: Side, depth: usize) -> Value {
    let mut node = match node {
        Value::Bool(true) => return json!({}),
        Value::Bool(false) => return json!({ "not": {} }),
        Value::Object(o) => o,
        other => return other,
    };
    if let Some(target) = node.get("$ref").and_then(Value::as_str).map(str::to_string)
        && depth < MAX_DEPTH
        && let Some(Value::Object(def)) = target
            .strip_prefix("#/$defs/")
            .or_else(|| target.strip_prefix("#/definitions/"))
            .and_then(|name| defs.get(name))
    {
        node.remove("$ref");
        return rewrite(Value::Object(merge(node, def.clone())), defs, side, depth + 1);
    }
    node.remove("$schema");
    if node.get("default") == Some(&Value::Null) {
        node.remove("default");
    }
    if side == Side::Input {
        node.remove("additionalProperties");
    }
    if let Some(c) = node.remove("const") {
        node.insert("enum".into(), json!([c]));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = node.get(key)
            && let Some((values, notes)) = enum_of(branches)
        {
            node.remove(key);
            node.insert("type".into(), json!("string"));
            node.insert("enum".into(), Value::Array(values));
            if !notes.is_empty() {
                let described = match node.get("description").and_then(Value::as_str) {
                    Some(d) => format!("{d}\n{}", notes.join("\n")),
                    None => notes.join("\n"),
                };
                node.insert("description".into(), described.into());
            }
        }
    }
    let numeric = |t: &Value| t == "integer" || t == "number";
    if node
        .get("type")
        .is_some_and(|t| numeric(t) || t.as_array().is_some_and(|ts| ts.iter().any(numeric)))
    {
        node.remove("format");
    }
    for key in ["items", "not", "additionalProperties"] {
        if let Some(sub) = node.remove(key) {
            node.insert(key.into(), rewrite(sub, defs, side, depth + 1));
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(subs)) = node.remove(key) {
            let subs = subs.into_iter().map(|s| rewrite(s, defs, side, depth + 1)).collect();
            node.insert(key.into(), Value::Array(subs));
        }
    }
    let required: Vec<String> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(Value::Object(props)) = node.remove("properties") {
        let props = props
            .into_iter()
            .map(|(name, sub)| {
                let sub = rewrite(sub, defs, side, depth + 1);
                let sub = match side {
                    Side::Input if !required.contains(&name) => without_null(sub),
                    _ => sub,
                };
                (name, sub)
            })
            .collect();
        node.insert("properties".into(), Value::Object(props));
    }
    if side == Side::Output {
        split_type_array(&mut node);
    }
    Value::Object(node)
}

/// The values (and their docs) of an enum written as `oneOf`/`anyOf` branches of string `const`s
/// or plain string `enum`s; `None` when any branch is something else.
fn enum_of(branches: &[Value]) -> Option<(Vec<Value>, Vec<String>)> {
    let mut values = vec![];
    let mut notes = vec![];
    for b in branches {
        let b = b.as_object()?;
        if b.keys()
            .any(|k| !["const", "enum", "type", "description", "title"].contains(&k.as_str()))
            || b.get("type").is_some_and(|t| t != "string")
        {
            return None;
        }
        let these: Vec<Value> = match (b.get("const"), b.get("enum")) {
            (Some(c), None) => vec![c.clone()],
            (None, Some(Value::Array(e))) => e.clone(),
            _ => return None,
        };
        if !these.iter().all(Value::is_string) {
            return None;
        }
        if let Some(d) = b.get("description").and_then(Value::as_str) {
            let names: Vec<String> = these
                .iter()
                .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
                .collect();
            notes.push(format!("{}: {}", names.join(", "), d.replace('\n', " ")));
        }
        values.extend(these);
    }
    (!values.is_empty()).then_some((values, notes))
}

/// An optional input without its `null` branch: `["T","null"]` → `T`, `anyOf [X, null]` → `X`.
fn without_null(node: Value) -> Value {
    let Value::Object(mut node) = node else { return node };
    if let Some(Value::Array(types)) = node.get("type") {
        let rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if rest.len() == 1 {
            node.insert("type".into(), rest[0].clone());
        }
    }
    if let Some(Value::Array(branches)) = node.get("anyOf") {
        let rest: Vec<&Value> = branches.iter().filter(|b| !is_null_schema(b)).collect();
        if rest.len() == 1
            && branches.len() == 2
            && let Value::Object(inner) = rest[0].clone()
        {
            node.remove("anyOf");
            return Value::Object(merge(node, inner));
        }
    }
    Value::Object(node)
}

/// `inner` with `outer`'s keywords on top; both descriptions are kept, the outer (the field's) first.
fn merge(outer: Map<String, Value>, mut inner: Map<String, Value>) -> Map<String, Value> {
    let inner_doc = inner.remove("description");
    inner.extend(outer);
    if let Some(Value::String(doc)) = inner_doc {
        let joined = match inner.get("description").and_then(Value::as_str) {
            Some(d) if d != doc => format!("{d}\n{doc}"),
            _ => doc,
        };
        inner.insert("description".into(), joined.into());
    }
    inner
}

fn is_null_schema(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.len() == 1 && o.get("type") == Some(&json!("null")))
}

/// `"type": ["T", "null"]` → `anyOf [{"type": "T", …}, {"type": "null"}]`, keeping the annotations
/// outside; the type-specific keywords go with their branch.
fn split_type_array(node: &mut Map<String, Value>) {
    let Some(Value::Array(types)) = node.get("type") else {
        return;
    };
    let types = types.clone();
    node.remove("type");
    let mut branches = vec![];
    for t in types {
        let mut branch = Map::new();
        branch.insert("type".into(), t.clone());
        if t != "null" {
            for (k, v) in node.iter() {
                if !["description", "title", "anyOf", "oneOf", "allOf"].contains(&k.as_str()) {
                    branch.insert(k.clone(), v.clone());
                }
            }
        }
        branches.push(Value::Object(branch));
    }
    node.retain(|k, _| ["description", "title"].contains(&k.as_str()));
    node.insert("anyOf".into(), Value::Array(branches));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> JsonObject {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn refs_are_inlined_and_titled_enums_become_plain_enums() {
        let s = obj(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "format": { "anyOf": [{ "$ref": "#/$defs/F" }, { "type": "null" }], "default": null,
                            "description": "`csv` or `jsonl`." },
                "kind": { "$ref": "#/$defs/K", "description": "the kind" }
            },
            "required": ["kind"],
            "additionalProperties": false,
            "$defs": {
                "F": { "oneOf": [{ "const": "csv", "type": "string", "description": "CSV." },
                                 { "const": "jsonl", "type": "string" }] },
                "K": { "oneOf": [{ "enum": ["a", "b"], "type": "string" }, { "const": "c", "type": "string" }] }
            }
        }));
        assert_eq!(
            Value::Object(input(&s)),
            json!({
                "type": "object",
                "properties": {
                    "format": { "type": "string", "enum": ["csv", "jsonl"],
                                "description": "`csv` or `jsonl`.\n`csv`: CSV." },
                    "kind": { "type": "string", "enum": ["a", "b", "c"], "description": "the kind" }
                },
                "required": ["kind"]
            })
        );
    }

    #[test]
    fn optional_inputs_drop_null_and_integer_formats() {
        let s = obj(json!({
            "type": "object",
            "properties": {
                "n": { "type": ["integer", "null"], "format": "uint64", "minimum": 0, "default": null },
                "must": { "type": ["string", "null"] }
            },
            "required": ["must"]
        }));
        let out = Value::Object(input(&s));
        assert_eq!(out["properties"]["n"], json!({ "type": "integer", "minimum": 0 }));
        // A required nullable input has no portable spelling: it is left for the test to catch.
        assert_eq!(out["properties"]["must"]["type"], json!(["string", "null"]));
    }

    #[test]
    fn outputs_keep_null_as_single_type_branches() {
        let s = obj(json!({
            "type": "object",
            "properties": {
                "n": { "type": ["integer", "null"], "format": "int64", "description": "rows" },
                "any": true,
                "never": false
            }
        }));
        let out = Value::Object(output(&s));
        assert_eq!(
            out["properties"]["n"],
            json!({ "description": "rows", "anyOf": [{ "type": "integer" }, { "type": "null" }] })
        );
        assert_eq!(out["properties"]["any"], json!({}));
        assert_eq!(out["properties"]["never"], json!({ "not": {} }));
    }
}
