//! Policies edited by key instead of by text. A text edit that misses (a typo'd key, a value
//! written differently in the base) silently leaves the policy as it was; here a key to change
//! must be in the base, a key to add must not be, and pgwarden's own loader checks the result.

use toml::{Table, Value};

/// Starts an edit of `base` (policy TOML).
pub fn edit_policy(base: &str) -> PolicyEdit {
    let table = base
        .parse::<Table>()
        .unwrap_or_else(|e| panic!("the base policy is not TOML: {e}"));
    PolicyEdit { table }
}

/// A policy being edited; [`PolicyEdit::toml`] gives the result.
#[derive(Clone)]
pub struct PolicyEdit {
    table: Table,
}

#[derive(Clone, Copy, PartialEq)]
enum Edit {
    /// Every key must be in the policy already.
    Set,
    /// Every key must be new (its tables may exist).
    Add,
}

impl PolicyEdit {
    /// Changes settings the policy has. `assignment` is TOML, e.g. `approval.wait_budget = "20s"`;
    /// a key the policy does not have fails the test (a typo would otherwise change nothing).
    pub fn set(mut self, assignment: &str) -> PolicyEdit {
        merge(&mut self.table, parse(assignment), &mut Vec::new(), Edit::Set);
        self
    }

    /// Adds settings the policy leaves out, with the tables they need, e.g.
    /// `approval.min_channel.critical = "client"`; a key the policy already has fails the test
    /// (`set` changes it). A key pgwarden does not know fails at [`PolicyEdit::toml`].
    pub fn add(mut self, assignment: &str) -> PolicyEdit {
        merge(&mut self.table, parse(assignment), &mut Vec::new(), Edit::Add);
        self
    }

    /// The edited policy as TOML text, once pgwarden's loader (which refuses unknown keys) took it.
    pub fn toml(&self) -> String {
        let text = toml::to_string(&self.table).expect("a TOML table serializes");
        if let Err(e) = pgwarden::policy::Policy::parse("edited.toml", &text) {
            panic!("the edited policy does not load: {e}\n{text}");
        }
        text
    }
}

fn parse(assignment: &str) -> Table {
    assignment
        .parse::<Table>()
        .unwrap_or_else(|e| panic!("`{assignment}` is not TOML: {e}"))
}

fn merge(into: &mut Table, from: Table, path: &mut Vec<String>, edit: Edit) {
    for (key, value) in from {
        path.push(key.clone());
        let at = path.join(".");
        match (into.get_mut(&key), value) {
            (Some(Value::Table(inner)), Value::Table(value)) => merge(inner, value, path, edit),
            (Some(old), value) => {
                assert!(
                    edit == Edit::Set,
                    "`{at}` is already in the policy (as {old}); change it with `set`"
                );
                *old = value;
            }
            (None, value) => {
                assert!(
                    edit == Edit::Add,
                    "`{at}` is not in the policy, so setting it changes nothing: check its spelling, \
                     or `add` a setting the policy leaves out"
                );
                into.insert(key, value);
            }
        }
        path.pop();
    }
}
