//! User code hidden behind built-in syntax, found with the catalog's help: attribute notation
//! (`c.email_of` runs `email_of(c)`), operators on built-in symbols, user types and domains (their
//! CHECKs and input functions), user casts, and user functions that shadow or overload a built-in name.

use sqlparser::ast::{AccessExpr, ArrayElemTypeDef, BinaryOperator, DataType, Expr, Ident, TimezoneInfo};

use super::{
    Category, Finding,
    catalog::{CatalogFacts, fold},
};

fn unknown(reason: String) -> Finding {
    Finding {
        category: Category::Unknown,
        reason,
    }
}

fn list(objects: &[String]) -> String {
    objects.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", ")
}

/// A call of the function `parts` (as written): user code when a user function has its name and the
/// name is not pinned to `pg_catalog` (PostgreSQL picks an overload by argument type, and a user
/// `lower(varchar)` beats the built-in for a varchar argument).
pub fn function_call(parts: &[(String, bool)], facts: &CatalogFacts, position: &str) -> Option<Finding> {
    let (name, schema) = split(parts)?;
    if schema.as_deref() == Some("pg_catalog") {
        return None;
    }
    if let Some(defs) = facts.function(&name) {
        return Some(unknown(format!(
            "calls `{name}` {position}, and {} is user-defined code that PostgreSQL may run for it",
            list(defs)
        )));
    }
    // `mytype('x')` is a cast to the type when no function has the name.
    facts.user_type(&name).map(|defs| {
        unknown(format!(
            "`{name}(…)` {position} casts to the user-defined type {}, whose checks or input function may run any code",
            list(defs)
        ))
    })
}

/// `x.f` and `(x).f`: PostgreSQL runs the function `f(x)` when `x` has no column `f` (computed fields).
/// Any dotted name whose last part names a user function counts: which one wins depends on columns
/// pgwarden does not see.
pub fn attribute_notation(expr: &Expr, facts: &CatalogFacts) -> Vec<Finding> {
    let mut fields: Vec<&Ident> = Vec::new();
    match expr {
        Expr::CompoundIdentifier(idents) if idents.len() > 1 => fields.extend(idents.last()),
        Expr::CompoundFieldAccess { access_chain, .. } => {
            for access in access_chain {
                match access {
                    AccessExpr::Dot(Expr::Identifier(id)) => fields.push(id),
                    AccessExpr::Dot(Expr::CompoundIdentifier(ids)) => fields.extend(ids.iter()),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    fields
        .into_iter()
        .filter_map(|id| {
            let name = fold(&id.value, id.quote_style.is_some());
            facts.function(&name).map(|defs| {
                unknown(format!(
                    "`{expr}` may be attribute notation for a function call: {} is user-defined code",
                    list(defs)
                ))
            })
        })
        .collect()
}

/// Operator symbols an expression applies, written or implied (`IN` compares with `=`, `BETWEEN` with
/// `>=` and `<=`, `LIKE` is `~~`).
fn operator_symbols(expr: &Expr) -> Vec<String> {
    let binary = |op: &BinaryOperator| match op {
        BinaryOperator::Custom(s) => s.clone(),
        BinaryOperator::PGCustomBinaryOperator(parts) => parts.last().cloned().unwrap_or_default(),
        other => other.to_string(),
    };
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect();
    match expr {
        Expr::BinaryOp { op, .. } => vec![binary(op)],
        Expr::UnaryOp { op, .. } => vec![op.to_string()],
        Expr::AnyOp { compare_op, .. } | Expr::AllOp { compare_op, .. } => vec![binary(compare_op)],
        Expr::InList { negated, .. } | Expr::InSubquery { negated, .. } | Expr::InUnnest { negated, .. } => {
            words(if *negated { &["=", "<>"] } else { &["="] })
        }
        Expr::IsDistinctFrom(..) | Expr::IsNotDistinctFrom(..) => words(&["="]),
        Expr::Case { operand: Some(_), .. } => words(&["="]),
        Expr::Between { .. } => words(&[">=", "<="]),
        Expr::Like { negated, .. } => words(if *negated { &["!~~"] } else { &["~~"] }),
        Expr::ILike { negated, .. } => words(if *negated { &["!~~*"] } else { &["~~*"] }),
        Expr::SimilarTo { negated, .. } => words(if *negated { &["!~"] } else { &["~"] }),
        // `NULLIF(a, b)` compares with `=`, looked up by name like a written `a = b`.
        Expr::Function(f)
            if f.name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|id| fold(&id.value, id.quote_style.is_some()) == "nullif") =>
        {
            words(&["="])
        }
        _ => vec![],
    }
}

/// `JOIN … USING (…)` and `NATURAL JOIN` compare the joined columns with `=`, looked up by name.
pub fn join(join: &sqlparser::ast::Join, facts: &CatalogFacts) -> Vec<Finding> {
    let text = join.to_string();
    if !(text.contains(" USING(")
        || text.contains(" USING (")
        || text.starts_with("NATURAL ")
        || text.contains(" NATURAL "))
    {
        return vec![];
    }
    facts
        .operator("=")
        .map(|defs| {
            vec![unknown(format!(
                "`JOIN … USING`/`NATURAL JOIN` compares with `=`, and the user-defined {} has that symbol; \
                 PostgreSQL picks the operator by operand types, which pgwarden does not know, so it may run user code",
                list(defs)
            ))]
        })
        .unwrap_or_default()
}

/// Objects that change what built-in syntax means everywhere: user operators with a symbol that
/// PostgreSQL also looks up implicitly (`=` for `IN`, `NULLIF`, `USING`, `CASE`; `<`, `>` for
/// `BETWEEN`; `~~` for `LIKE` …) over built-in operand types, and user casts between built-in types
/// that PostgreSQL applies implicitly. Where they exist, no statement is a plain read.
pub fn hijacks(facts: &CatalogFacts) -> Option<Finding> {
    (!facts.hijacks.is_empty()).then(|| {
        unknown(format!(
            "the database defines {}, which PostgreSQL may apply to built-in types anywhere, implicitly; \
             no statement can be read as plain built-in code until it is dropped",
            list(&facts.hijacks)
        ))
    })
}

/// PostgreSQL's built-in type names, as `pg_type.typname` or the first word of a keyword spelling.
/// The parser knows more names (`string`, `datetime`, `tinyint`, `blob`, …): to PostgreSQL those can
/// only be user-defined types or domains.
const BUILTIN_TYPES: &[&str] = &[
    "bool",
    "boolean",
    "bytea",
    "char",
    "character",
    "nchar",
    "national",
    "varchar",
    "bpchar",
    "name",
    "text",
    "int",
    "integer",
    "int2",
    "int4",
    "int8",
    "smallint",
    "bigint",
    "real",
    "float",
    "float4",
    "float8",
    "double",
    "numeric",
    "decimal",
    "dec",
    "money",
    "oid",
    "xid",
    "xid8",
    "cid",
    "tid",
    "regproc",
    "regprocedure",
    "regoper",
    "regoperator",
    "regclass",
    "regcollation",
    "regtype",
    "regrole",
    "regnamespace",
    "regconfig",
    "regdictionary",
    "json",
    "jsonb",
    "jsonpath",
    "xml",
    "uuid",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "bit",
    "varbit",
    "point",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "tsvector",
    "tsquery",
    "pg_lsn",
    "txid_snapshot",
    "pg_snapshot",
    "int4range",
    "int8range",
    "numrange",
    "tsrange",
    "tstzrange",
    "daterange",
    "int4multirange",
    "int8multirange",
    "nummultirange",
    "tsmultirange",
    "tstzmultirange",
    "datemultirange",
    "record",
    "void",
    "unknown",
    "cstring",
    "aclitem",
    "refcursor",
    "int2vector",
    "oidvector",
    "pg_node_tree",
];

/// A use of a symbol that a user-defined operator also defines. PostgreSQL picks the operator by the
/// operand types, which pgwarden does not know, so any such use may run the user's function.
pub fn operators(expr: &Expr, facts: &CatalogFacts) -> Vec<Finding> {
    if facts.operators.is_empty() {
        return vec![];
    }
    operator_symbols(expr)
        .into_iter()
        .filter_map(|symbol| {
            facts.operator(&symbol).map(|defs| {
                unknown(format!(
                    "uses the operator `{symbol}`, and the user-defined {} has that symbol; PostgreSQL picks the \
                     operator by operand types, which pgwarden does not know, so it may run user code",
                    list(defs)
                ))
            })
        })
        .collect()
}

/// A cast or typed literal to `data_type`: user code when the type (or its element type) is
/// user-defined, or when a user cast leads to it.
pub fn cast(data_type: &DataType, facts: &CatalogFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut element = data_type;
    let mut arrays = 0;
    while let DataType::Array(
        ArrayElemTypeDef::SquareBracket(inner, _)
        | ArrayElemTypeDef::AngleBracket(inner)
        | ArrayElemTypeDef::Parenthesis(inner)
        | ArrayElemTypeDef::Qualified(inner, _),
    ) = element
    {
        element = inner;
        arrays += 1;
    }
    if !matches!(element, DataType::Custom(..))
        && let Some(name) = pg_type_name(element)
        && !BUILTIN_TYPES.contains(&name.as_str())
    {
        out.push(unknown(format!(
            "casts to `{data_type}`, which is not a PostgreSQL built-in type, so it can only be a user-defined \
             type or domain whose checks or input function may run any code"
        )));
    }
    if let DataType::Custom(name, _) = element {
        let parts: Vec<(String, bool)> = name
            .0
            .iter()
            .map(|p| match p.as_ident() {
                Some(id) => (id.value.clone(), id.quote_style.is_some()),
                None => (p.to_string(), true),
            })
            .collect();
        if let Some((n, schema)) = split(&parts)
            && schema.as_deref() != Some("pg_catalog")
            && let Some(defs) = facts.user_type(&n)
        {
            out.push(unknown(format!(
                "casts to `{data_type}`, and {} is a user-defined type whose checks or input function may run any code",
                list(defs)
            )));
        }
    }
    if let Some(base) = pg_type_name(element) {
        let target = if arrays > 0 { format!("_{base}") } else { base };
        for c in facts.casts_to(&target) {
            out.push(unknown(format!(
                "casts to `{data_type}`, and the user-defined cast from `{}` to `{}` ({}) may run for it",
                c.source, c.target, c.function
            )));
        }
    }
    out
}

/// The last part of a name folded, and its schema when written.
fn split(parts: &[(String, bool)]) -> Option<(String, Option<String>)> {
    let (name, q) = parts.last()?;
    let schema = (parts.len() > 1).then(|| {
        let (s, sq) = &parts[parts.len() - 2];
        fold(s, *sq)
    });
    Some((fold(name, *q), schema))
}

/// `pg_type.typname` of a type as the parser spells it, for matching user casts.
fn pg_type_name(data_type: &DataType) -> Option<String> {
    let tz = |t: &TimezoneInfo| matches!(t, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz);
    Some(
        match data_type {
            DataType::Custom(name, _) => {
                return name.0.last().map(|p| match p.as_ident() {
                    Some(id) => fold(&id.value, id.quote_style.is_some()),
                    None => p.to_string(),
                });
            }
            DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4",
            DataType::BigInt(_) | DataType::Int8(_) => "int8",
            DataType::SmallInt(_) | DataType::Int2(_) => "int2",
            DataType::Text => "text",
            DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar",
            DataType::Char(_) | DataType::Character(_) => "bpchar",
            DataType::Bool | DataType::Boolean => "bool",
            DataType::Real | DataType::Float4 => "float4",
            DataType::DoublePrecision | DataType::Float8 => "float8",
            DataType::Numeric(_) | DataType::Decimal(_) => "numeric",
            DataType::Date => "date",
            DataType::Timestamp(_, t) if tz(t) => "timestamptz",
            DataType::Timestamp(..) => "timestamp",
            DataType::Time(_, t) if tz(t) => "timetz",
            DataType::Time(..) => "time",
            DataType::Interval { .. } => "interval",
            DataType::JSON => "json",
            DataType::JSONB => "jsonb",
            DataType::Uuid => "uuid",
            DataType::Bytea => "bytea",
            other => {
                let text = other.to_string().to_ascii_lowercase();
                return text.split(['(', ' ']).next().map(str::to_string);
            }
        }
        .to_string(),
    )
}
