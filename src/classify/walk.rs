//! The walk over a whole statement tree: nested statements, function calls in every position,
//! relations, row locks, `SELECT … INTO`, custom operators and casts, and the shapes sqlparser
//! misreads (`FROM ONLY`, `U&"…"`).

use std::{collections::BTreeSet, ops::ControlFlow};

use sqlparser::ast::{
    BinaryOperator, DataType, Expr, ObjectName, ObjectNamePart, Query, Select, SetExpr, Statement, TableFactor, Visit,
    Visitor,
};

use super::{
    Category, Finding,
    functions::{SENSITIVE_RELATIONS, canonical, dangerous, is_read_safe},
    statements::{base_of, kind_of},
};

#[derive(Default)]
pub struct Walked {
    pub findings: Vec<Finding>,
    pub tables: BTreeSet<String>,
    /// One-part names that match a CTE of the statement. They usually mean the CTE, but a DML
    /// target or a reference inside the CTE's own body means the table, so policy counts them too.
    pub shadowed: BTreeSet<String>,
    pub functions: BTreeSet<String>,
}

/// Walks `statement`. With `plan_only` (plain EXPLAIN) the target's statement kinds do not count,
/// since it is never run, but its function calls and misleading shapes still do.
pub fn walk(statement: &Statement, plan_only: bool) -> Walked {
    let mut w = Walk {
        plan_only,
        ..Walk::default()
    };
    let _ = statement.visit(&mut w);
    // Relations the visitor does not report as such.
    for name in named_relations(statement) {
        w.relations.push(parts_of(name));
    }
    let cte_names = std::mem::take(&mut w.cte_names);
    let table_functions = std::mem::take(&mut w.table_functions);
    for parts in std::mem::take(&mut w.relations) {
        let name = qualify(&parts);
        if table_functions.contains(&name) {
            continue;
        }
        if parts.len() == 1 && cte_names.contains(&parts[0].0.to_lowercase()) {
            w.out.shadowed.insert(name);
        } else {
            w.out.tables.insert(name);
        }
    }
    w.out
}

#[derive(Default)]
struct Walk {
    depth: usize,
    plan_only: bool,
    out: Walked,
    relations: Vec<Vec<(String, bool)>>,
    cte_names: BTreeSet<String>,
    table_functions: BTreeSet<String>,
    /// Nested statements already reported with their CTE name.
    reported: Vec<*const Statement>,
}

impl Walk {
    fn find(&mut self, category: Category, reason: String) {
        self.out.findings.push(Finding { category, reason });
    }

    fn function(&mut self, name: &ObjectName, position: &str) {
        let parts = parts_of(name);
        let canon = canonical(&parts);
        self.out.functions.insert(canon.clone());
        if is_read_safe(&canon) {
            return;
        }
        match dangerous(&canon) {
            Some((category, family)) => self.find(category, format!("calls `{canon}` {position} ({family})")),
            None => self.find(
                Category::Unknown,
                format!("calls `{canon}` {position}, which is not a built-in pgwarden knows to be safe (user-defined or unknown)"),
            ),
        }
    }
}

fn parts_of(name: &ObjectName) -> Vec<(String, bool)> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(id) => (id.value.clone(), id.quote_style.is_some()),
            ObjectNamePart::Function(f) => (f.to_string(), true),
        })
        .collect()
}

/// `schema.table`, folding unquoted names; unqualified names are `public.` unless they are system catalogs.
fn qualify(parts: &[(String, bool)]) -> String {
    let fold = |(v, q): &(String, bool)| if *q { v.clone() } else { v.to_lowercase() };
    match parts {
        [name] => {
            let n = fold(name);
            if n.starts_with("pg_") {
                format!("pg_catalog.{n}")
            } else {
                format!("public.{n}")
            }
        }
        [.., schema, name] => format!("{}.{}", fold(schema), fold(name)),
        [] => String::new(),
    }
}

impl Visitor for Walk {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth > 1 && !self.plan_only && !self.reported.contains(&(statement as *const _)) {
            let nested = base_of(statement);
            if nested.finding.category != Category::Read {
                self.find(
                    nested.finding.category,
                    format!("nested {}: {}", kind_of(statement), nested.finding.reason),
                );
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _: &Statement) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let name = cte.alias.name.value.clone();
                self.cte_names.insert(name.to_lowercase());
                if let SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) =
                    &*cte.query.body
                    && !self.plan_only
                {
                    let nested = base_of(s);
                    self.reported.push(s as *const _);
                    self.find(
                        nested.finding.category,
                        format!("data-modifying CTE `{name}`: {}", nested.finding.reason),
                    );
                }
            }
        }
        if !query.locks.is_empty() && !self.plan_only {
            self.find(Category::Write, "takes row locks (FOR UPDATE/SHARE)".into());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        if let Some(into) = &select.into
            && !self.plan_only
        {
            self.find(
                Category::Ddl,
                format!("SELECT … INTO creates the table `{}`", into.table),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let parts = parts_of(relation);
        let last = parts
            .last()
            .map(|(v, q)| if *q { v.clone() } else { v.to_lowercase() })
            .unwrap_or_default();
        let system = parts.len() == 1
            || parts
                .get(parts.len().saturating_sub(2))
                .is_some_and(|(s, _)| s.eq_ignore_ascii_case("pg_catalog"));
        if system && SENSITIVE_RELATIONS.contains(&last.as_str()) {
            self.find(Category::Export, format!("reads the sensitive catalog `{last}`"));
        }
        self.relations.push(parts);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            // Set-returning functions in FROM are relations to the parser (sqlparser_gaps §3.4).
            TableFactor::Table {
                name, args: Some(_), ..
            }
            | TableFactor::Function { name, .. } => {
                self.table_functions.insert(qualify(&parts_of(name)));
                self.function(name, "in FROM");
            }
            // `FROM ONLY t` parses as a table named ONLY aliased `t` (sqlparser_gaps §3.1).
            TableFactor::Table { name, .. } if parts_of(name).as_slice() == [("ONLY".to_string(), false)] => {
                self.find(
                    Category::Unknown,
                    "`FROM ONLY` is misread by the parser, so the table it reads is unknown".into(),
                );
            }
            TableFactor::Table { .. }
            | TableFactor::Derived { .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::UNNEST { .. }
            | TableFactor::NestedJoin { .. }
            | TableFactor::XmlTable { .. } => {}
            other => self.find(
                Category::Unknown,
                format!("`{other}` is not PostgreSQL FROM syntax pgwarden has classified"),
            ),
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(f) if public_setting_lookup(f) => {
                self.out.functions.insert("current_setting".into());
            }
            Expr::Function(f) => self.function(&f.name, "in an expression"),
            // `U&"…"` identifiers parse as `U & "…"` with the escapes left undecoded (sqlparser_gaps §3.2).
            Expr::BinaryOp {
                left,
                op: BinaryOperator::BitwiseAnd,
                ..
            } if matches!(&**left, Expr::Identifier(id) if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("u")) =>
            {
                self.find(
                    Category::Unknown,
                    "uses a `U&\"…\"` identifier, which the parser misreads".into(),
                );
            }
            Expr::BinaryOp {
                op: BinaryOperator::Custom(op),
                ..
            } => {
                self.find(
                    Category::Unknown,
                    format!("uses the custom operator `{op}`, which may run any function"),
                );
            }
            Expr::BinaryOp {
                op: BinaryOperator::PGCustomBinaryOperator(parts),
                ..
            } => {
                self.find(
                    Category::Unknown,
                    format!("uses `OPERATOR({})`, which may run any function", parts.join(".")),
                );
            }
            Expr::Cast {
                data_type: DataType::Custom(name, _),
                ..
            } if !is_builtin_type(name) => {
                self.find(
                    Category::Unknown,
                    format!("casts to the type `{name}`; a user-defined cast may run any function"),
                );
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn named_relations(statement: &Statement) -> Vec<&ObjectName> {
    use sqlparser::ast::{CopySource, GrantObjects, ObjectType};
    fn grant_tables(objects: &Option<GrantObjects>) -> Vec<&ObjectName> {
        match objects {
            Some(GrantObjects::Tables(names)) => names.iter().collect(),
            _ => vec![],
        }
    }
    match statement {
        Statement::Drop {
            object_type: ObjectType::Table | ObjectType::View | ObjectType::MaterializedView,
            names,
            ..
        } => names.iter().collect(),
        Statement::Copy {
            source: CopySource::Table { table_name, .. },
            ..
        } => vec![table_name],
        Statement::Grant(g) => grant_tables(&g.objects),
        Statement::Revoke(r) => grant_tables(&r.objects),
        _ => vec![],
    }
}

/// `current_setting('server_version')` and other settings that are no secret.
fn public_setting_lookup(f: &sqlparser::ast::Function) -> bool {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments, Value};
    if canonical(&parts_of(&f.name)) != "current_setting" {
        return false;
    }
    let FunctionArguments::List(list) = &f.args else {
        return false;
    };
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))]
        | [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))), _] => {
            matches!(&v.value, Value::SingleQuotedString(name) if super::functions::PUBLIC_SETTINGS.contains(&name.to_lowercase().as_str()))
        }
        _ => false,
    }
}

/// Built-in types the parser reports as `Custom`; casts to them run only built-in code.
fn is_builtin_type(name: &ObjectName) -> bool {
    const BUILTIN: &[&str] = &[
        "regclass",
        "regtype",
        "regproc",
        "regprocedure",
        "regnamespace",
        "regrole",
        "regoper",
        "regoperator",
        "regconfig",
        "regdictionary",
        "xml",
        "inet",
        "cidr",
        "macaddr",
        "macaddr8",
        "tsvector",
        "tsquery",
        "money",
        "point",
        "line",
        "lseg",
        "box",
        "path",
        "polygon",
        "circle",
        "int4range",
        "int8range",
        "numrange",
        "tsrange",
        "tstzrange",
        "daterange",
        "int4multirange",
        "int8multirange",
        "nummultirange",
        "name",
        "oid",
        "xid",
        "pg_lsn",
        "bit",
        "varbit",
        "bpchar",
        "jsonpath",
        "citext",
        "int2",
        "int4",
        "int8",
        "float4",
        "float8",
        "bool",
        "timestamptz",
        "timetz",
        "txid_snapshot",
        "pg_snapshot",
        "record",
    ];
    let canon = canonical(&parts_of(name));
    BUILTIN.contains(&canon.as_str())
}
