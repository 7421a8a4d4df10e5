//! The walk over a whole statement tree: nested statements, function calls in every position,
//! relations, row locks, `SELECT … INTO`, custom operators and casts, and the shapes sqlparser
//! misreads (`FROM ONLY`, `U&"…"`).

use std::{collections::BTreeSet, ops::ControlFlow};

use sqlparser::ast::{
    BinaryOperator, DataType, Expr, ObjectName, ObjectNamePart, Query, Select, SelectItem, SetExpr, Statement,
    TableFactor, Visit, Visitor,
};

use super::{
    Category, Finding,
    catalog::{CatalogFacts, MASK_SCHEMA, fold},
    functions::{SENSITIVE_FUNCTIONS, SENSITIVE_RELATIONS, canonical, dangerous, is_read_safe},
    statements::{base_of, kind_of},
    usercode,
};

#[derive(Default)]
pub struct Walked {
    pub findings: Vec<Finding>,
    pub tables: BTreeSet<String>,
    /// One-part names that match a CTE of the statement. They usually mean the CTE, but a DML
    /// target or a reference inside the CTE's own body means the table, so policy counts them too.
    pub shadowed: BTreeSet<String>,
    pub functions: BTreeSet<String>,
    /// Databases named before a schema (`otherdb.public.t`, `otherdb.public.f()`).
    pub catalogs: BTreeSet<String>,
}

/// Walks `statement`. With `plan_only` (plain EXPLAIN) the target's statement kinds do not count,
/// since it is never run, but its function calls and misleading shapes still do.
pub fn walk(statement: &Statement, plan_only: bool, facts: &CatalogFacts) -> Walked {
    let mut w = Walk {
        depth: 0,
        plan_only,
        facts,
        out: Walked::default(),
        relations: Vec::new(),
        cte_names: BTreeSet::new(),
        table_functions: BTreeSet::new(),
        reported: Vec::new(),
    };
    if let Some(finding) = usercode::hijacks(facts) {
        w.out.findings.push(finding);
    }
    let _ = statement.visit(&mut w);
    // Relations the visitor does not report as such.
    for name in named_relations(statement) {
        w.relations.push(parts_of(name));
    }
    let cte_names = std::mem::take(&mut w.cte_names);
    let table_functions = std::mem::take(&mut w.table_functions);
    for parts in std::mem::take(&mut w.relations) {
        w.out.catalogs.extend(catalog_of(&parts));
        let name = qualify(&parts, facts);
        if table_functions.contains(&name) {
            continue;
        }
        if parts.len() == 1 && cte_names.contains(&fold(&parts[0].0, parts[0].1)) {
            w.out.shadowed.insert(name);
        } else {
            if let Some(code) = facts.code_relations.get(&name) {
                let code = code.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
                w.find(
                    Category::Unknown,
                    format!(
                        "reads `{name}`, whose view definition, row-security policy or column types run user-defined code ({code})"
                    ),
                );
            }
            w.out.tables.insert(name);
        }
    }
    w.out
}

struct Walk<'a> {
    depth: usize,
    plan_only: bool,
    facts: &'a CatalogFacts,
    out: Walked,
    relations: Vec<Vec<(String, bool)>>,
    cte_names: BTreeSet<String>,
    table_functions: BTreeSet<String>,
    /// Nested statements already reported with their CTE name.
    reported: Vec<*const Statement>,
}

impl Walk<'_> {
    fn find(&mut self, category: Category, reason: String) {
        self.out.findings.push(Finding { category, reason });
    }

    fn function(&mut self, name: &ObjectName, position: &str) {
        let parts = parts_of(name);
        let canon = canonical(&parts);
        self.out.functions.insert(canon.clone());
        self.out.catalogs.extend(catalog_of(&parts));
        let last = parts.last().map(|(v, q)| fold(v, *q)).unwrap_or_default();
        // In any schema: extensions such as pg_stat_statements live wherever they were installed.
        if SENSITIVE_FUNCTIONS.contains(&last.as_str()) {
            return self.find(
                Category::Export,
                format!("calls `{canon}` {position}, which returns secrets or other sessions' data"),
            );
        }
        if let Some(finding) = usercode::function_call(&parts, self.facts, position) {
            return self.out.findings.push(finding);
        }
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

/// The database of a `database.schema.name`, as Postgres folds it.
fn catalog_of(parts: &[(String, bool)]) -> Option<String> {
    (parts.len() >= 3).then(|| {
        let (v, q) = &parts[parts.len() - 3];
        fold(v, *q)
    })
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

/// `schema.table` as PostgreSQL reads it (ASCII-only folding, 63-byte truncation). An unqualified
/// name resolves along the search path when the catalog is known; otherwise it is `public.` unless it
/// looks like a system catalog. A masking view stands for the table it masks.
fn qualify(parts: &[(String, bool)], facts: &CatalogFacts) -> String {
    let f = |(v, q): &(String, bool)| fold(v, *q);
    let (schema, name) = match parts {
        [name] => {
            let n = f(name);
            let schema = match facts.resolve_relation(&n) {
                Some(schema) => schema.to_string(),
                // Known catalog, and pg_catalog has no such relation: it is not a system catalog.
                None if n.starts_with("pg_") && facts.relations.contains_key("pg_catalog") => "public".into(),
                None if n.starts_with("pg_") => "pg_catalog".into(),
                None => "public".into(),
            };
            (schema, n)
        }
        [.., schema, name] => (f(schema), f(name)),
        [] => return String::new(),
    };
    if schema == MASK_SCHEMA {
        return facts.mask_source(&name);
    }
    format!("{schema}.{name}")
}

impl Visitor for Walk<'_> {
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
                self.cte_names.insert(fold(&name, cte.alias.name.quote_style.is_some()));
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
        // `SELECT mytype 'x'` is a typed literal to PostgreSQL (it may run the type's input function and
        // checks); the parser reads a column `mytype` with the alias `'x'`, which PostgreSQL never allows.
        for item in &select.projection {
            if let SelectItem::ExprWithAlias { expr, alias } = item
                && alias.quote_style == Some('\'')
            {
                self.find(
                    Category::Unknown,
                    format!("`{expr} '{}'` is a typed literal the parser misreads as an alias, so the type it uses is unknown", alias.value),
                );
            }
        }
        for from in &select.from {
            for j in &from.joins {
                let found = usercode::join(j, self.facts);
                self.out.findings.extend(found);
            }
        }
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
        let last = parts.last().map(|(v, q)| fold(v, *q)).unwrap_or_default();
        // In any schema and unqualified: information_schema views, extensions installed anywhere
        // (`extensions.pg_stat_statements`), and look-alikes reached through the search path.
        if SENSITIVE_RELATIONS.contains(&last.as_str()) {
            self.find(Category::Export, format!("reads the sensitive catalog `{last}`"));
        }
        self.relations.push(parts);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        // Types written in column definition lists (`json_to_record(…) AS t(a mydomain)`,
        // `XMLTABLE … COLUMNS a mytype`) are input conversions like casts.
        let mut types: Vec<&DataType> = Vec::new();
        let alias = match factor {
            TableFactor::Table { alias, .. }
            | TableFactor::Derived { alias, .. }
            | TableFactor::TableFunction { alias, .. }
            | TableFactor::Function { alias, .. }
            | TableFactor::UNNEST { alias, .. }
            | TableFactor::JsonTable { alias, .. }
            | TableFactor::XmlTable { alias, .. } => alias.as_ref(),
            TableFactor::NestedJoin {
                alias,
                table_with_joins,
            } => {
                for j in &table_with_joins.joins {
                    let found = usercode::join(j, self.facts);
                    self.out.findings.extend(found);
                }
                alias.as_ref()
            }
            _ => None,
        };
        types.extend(
            alias
                .iter()
                .flat_map(|a| a.columns.iter().filter_map(|c| c.data_type.as_ref())),
        );
        match factor {
            TableFactor::XmlTable { columns, .. } => types.extend(columns.iter().filter_map(|c| match &c.option {
                sqlparser::ast::XmlTableColumnOption::NamedInfo { r#type, .. } => Some(r#type),
                _ => None,
            })),
            TableFactor::JsonTable { columns, .. } => types.extend(columns.iter().filter_map(|c| match c {
                sqlparser::ast::JsonTableColumn::Named(n) => Some(&n.r#type),
                _ => None,
            })),
            _ => {}
        }
        for t in types {
            let found = usercode::cast(t, self.facts);
            self.out.findings.extend(found);
            if let DataType::Custom(name, _) = t
                && !is_builtin_type(name)
            {
                self.find(
                    Category::Unknown,
                    format!("declares a column of the type `{name}`; a user-defined type may run any function"),
                );
            }
        }
        match factor {
            // Set-returning functions in FROM are relations to the parser (sqlparser_gaps §3.4).
            TableFactor::Table {
                name, args: Some(_), ..
            }
            | TableFactor::Function { name, .. } => {
                self.table_functions.insert(qualify(&parts_of(name), self.facts));
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
        let mut user = usercode::attribute_notation(expr, self.facts);
        user.extend(usercode::operators(expr, self.facts));
        match expr {
            Expr::Cast { data_type, .. } => user.extend(usercode::cast(data_type, self.facts)),
            Expr::TypedString(t) => user.extend(usercode::cast(&t.data_type, self.facts)),
            _ => {}
        }
        self.out.findings.extend(user);
        match expr {
            Expr::Function(f) if public_setting_lookup(f) => {
                self.out.functions.insert("current_setting".into());
                if let Some(finding) = usercode::function_call(&parts_of(&f.name), self.facts, "in an expression") {
                    self.out.findings.push(finding);
                }
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
            matches!(&v.value, Value::SingleQuotedString(name) if super::functions::PUBLIC_SETTINGS.contains(&name.to_ascii_lowercase().as_str()))
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
