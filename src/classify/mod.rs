//! What a SQL text does, decided from its parsed AST alone (pure: no I/O).
//!
//! Today this is the strict gate `query` needs: a text is a *plain read* only when it is exactly one
//! `SELECT`-shaped query whose every nested statement is a query, that takes no row locks, creates
//! nothing (`SELECT … INTO`), and calls only allow-listed functions through plain operators and
//! built-in types. Everything else — including anything the parser cannot read — is refused.

mod functions;

use std::ops::ControlFlow;

use sqlparser::{
    ast::{BinaryOperator, DataType, Expr, ObjectName, ObjectNamePart, Query, Select, Statement, TableFactor, Visit, Visitor},
    dialect::PostgreSqlDialect,
    parser::Parser,
};

pub use functions::{canonical, is_read_safe};

/// Why a text is not a plain read. The message is shown to the model, so it says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotARead(pub String);

/// Accepts `sql` only if it is a single plain read (see the module docs).
pub fn check_plain_read(sql: &str) -> Result<(), NotARead> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| NotARead(format!("pgwarden could not parse this SQL ({e}); only statements it understands run")))?;
    let statement = match statements.as_slice() {
        [] => return Err(NotARead("no SQL statement given".into())),
        [one] => one,
        many => {
            return Err(NotARead(format!(
                "{} statements given; `query` runs exactly one statement per call",
                many.len()
            )));
        }
    };
    if !matches!(statement, Statement::Query(_)) {
        return Err(NotARead(format!(
            "`{}` is not a read; `query` only runs SELECT-style reads (writes, DDL and other statements are refused)",
            statement_kind(statement)
        )));
    }
    let mut walk = Walk::default();
    match statement.visit(&mut walk) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(reason) => Err(NotARead(reason)),
    }
}

fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ").to_uppercase()
}

#[derive(Default)]
struct Walk {
    depth: usize,
}

fn object_name(name: &ObjectName) -> Vec<(String, bool)> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(id) => (id.value.clone(), id.quote_style.is_some()),
            ObjectNamePart::Function(f) => (f.to_string(), true),
        })
        .collect()
}

fn check_function(name: &ObjectName, position: &str) -> ControlFlow<String> {
    let canon = canonical(&object_name(name));
    if is_read_safe(&canon) {
        ControlFlow::Continue(())
    } else {
        ControlFlow::Break(format!(
            "calls `{canon}` {position}, which is not on pgwarden's list of functions safe in an unattended read"
        ))
    }
}

impl Visitor for Walk {
    type Break = String;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<String> {
        self.depth += 1;
        if self.depth > 1 && !matches!(statement, Statement::Query(_)) {
            // Data-modifying CTEs and the like: `WITH d AS (DELETE …) SELECT …`.
            return ControlFlow::Break(format!("contains a nested `{}` statement, which is not a read", statement_kind(statement)));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _: &Statement) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if !query.locks.is_empty() {
            return ControlFlow::Break("takes row locks (FOR UPDATE/SHARE), which is not a plain read".into());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<String> {
        if select.into.is_some() {
            return ControlFlow::Break("SELECT … INTO creates a table, which is not a read".into());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            // Set-returning functions in FROM are relations to the parser (sqlparser_gaps §3.4).
            TableFactor::Table { name, args: Some(_), .. } | TableFactor::Function { name, .. } => check_function(name, "in FROM"),
            // `FROM ONLY t` parses as a table named ONLY (sqlparser_gaps §3.1).
            TableFactor::Table { name, .. } if name.0.len() == 1 && name.to_string().eq_ignore_ascii_case("only") => {
                ControlFlow::Break("uses `FROM ONLY`, which pgwarden's parser misreads; drop ONLY".into())
            }
            TableFactor::Table { .. } | TableFactor::Derived { .. } | TableFactor::TableFunction { .. } | TableFactor::UNNEST { .. } | TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            other => ControlFlow::Break(format!("uses `{other}`, which is not PostgreSQL FROM syntax pgwarden accepts")),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        match expr {
            Expr::Function(f) => check_function(&f.name, "in an expression"),
            Expr::BinaryOp { op: BinaryOperator::Custom(op), .. } => {
                ControlFlow::Break(format!("uses the custom operator `{op}`, which may run any function"))
            }
            Expr::BinaryOp { op: BinaryOperator::PGCustomBinaryOperator(parts), .. } => {
                ControlFlow::Break(format!("uses the operator `OPERATOR({})`, which may run any function", parts.join(".")))
            }
            Expr::Cast { data_type: DataType::Custom(name, _), .. } => {
                ControlFlow::Break(format!("casts to the type `{name}`; casts to non-built-in types may run functions"))
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_reads_pass() {
        for sql in [
            "SELECT 1",
            "select id, lower(email) from customers where country = 'GB' order by id limit 10",
            "WITH t AS (SELECT * FROM orders) SELECT count(*), sum(total) FROM t",
            "SELECT * FROM generate_series(1, 10) AS g(i)",
            "SELECT c.name, o.total FROM customers c JOIN LATERAL (SELECT total FROM orders WHERE customer_id = c.id LIMIT 1) o ON true",
            "SELECT pg_catalog.now(), '2024-01-01'::date, 1::numeric(10,2)",
            "SELECT 1;",
        ] {
            assert_eq!(check_plain_read(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for sql in [
            "DELETE FROM t",
            "SELECT 1; COMMIT; DROP TABLE x",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * INTO newt FROM t",
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT * FROM pg_read_file('/etc/passwd')",
            "SELECT * FROM dblink_exec('dbname=x', 'DROP TABLE t')",
            "SELECT U&\"pg\\005fread\\005ffile\"('/etc/hostname')",
            "SELECT password FROM ONLY users",
            "SELECT 5::touchy",
            "SELECT set_config('statement_timeout', '0', false)",
            "SELECT my_function(1)",
            "SET TRANSACTION READ WRITE",
            "EXPLAIN ANALYZE DELETE FROM t",
            "SELEC 1",
            "",
        ] {
            assert!(check_plain_read(sql).is_err(), "{sql} should be refused");
        }
    }
}
