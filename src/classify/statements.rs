//! The category of each statement kind, as a table. Every variant pgwarden decided on is listed,
//! with a comment where the choice is not obvious; everything else is `unknown`.

use sqlparser::ast::{
    AlterRoleOperation, AlterTableOperation, BinaryOperator, CopyTarget, Expr, FromTable, MergeAction, ObjectType,
    Reset, ResetConfig, Set, Statement, UnaryOperator, Value,
};

/// The kinds of the statements that need the copy sub-protocol (see `syntax::not_runnable`).
pub(super) const COPY_TO_STDOUT: &str = "COPY TO STDOUT";
pub(super) const COPY_FROM_STDIN: &str = "COPY FROM STDIN";

use super::{Category, Finding, functions::PUBLIC_SETTINGS, settings};

pub struct Base {
    pub kind: String,
    pub finding: Finding,
    /// `EXPLAIN` without ANALYZE: the target is planned, never run.
    pub plan_only: bool,
}

fn mk(kind: &str, category: Category, reason: impl Into<String>) -> Base {
    Base {
        kind: kind.to_string(),
        finding: Finding {
            category,
            reason: reason.into(),
        },
        plan_only: false,
    }
}

/// `EXPLAIN` runs its target when ANALYZE is on, in either spelling (sqlparser_gaps §3.3).
pub fn explain_analyzes(analyze: bool, options: Option<&[sqlparser::ast::UtilityOption]>) -> bool {
    analyze
        || options.unwrap_or_default().iter().any(|o| {
            let name = o.name.value.to_ascii_lowercase();
            (name == "analyze" || name == "analyse")
                && !matches!(
                    o.arg.as_ref().map(|a| a.to_string().to_ascii_lowercase()).as_deref(),
                    Some("false" | "off" | "0")
                )
        })
}

pub fn base_of(statement: &Statement) -> Base {
    use Category::*;
    match statement {
        Statement::Query(_) => mk("SELECT", Read, "a query"),
        Statement::Explain {
            analyze,
            options,
            statement: target,
            ..
        } => {
            if explain_analyzes(*analyze, options.as_deref()) {
                let mut b = mk("EXPLAIN ANALYZE", Read, "EXPLAIN ANALYZE executes its target");
                // CREATE TABLE AS / SELECT INTO / CREATE MATERIALIZED VIEW under EXPLAIN ANALYZE create
                // relations even inside a READ ONLY transaction (verified on PostgreSQL 15: the READ
                // ONLY check does not cover EXPLAIN ANALYZE's target).
                let creates = matches!(**target, Statement::CreateTable(_) | Statement::CreateView(_))
                    || matches!(&**target, Statement::Query(q) if matches!(&*q.body, sqlparser::ast::SetExpr::Select(s) if s.into.is_some()));
                if creates {
                    b.finding = Finding {
                        category: Ddl,
                        reason: "EXPLAIN ANALYZE of a statement that creates a relation, which runs even in a READ ONLY transaction".into(),
                    };
                }
                b
            } else {
                Base {
                    plan_only: true,
                    ..mk("EXPLAIN", Read, "EXPLAIN without ANALYZE only plans")
                }
            }
        }
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(".");
            if PUBLIC_SETTINGS.contains(&name.as_str()) {
                mk("SHOW", Read, "shows a public setting")
            } else {
                mk(
                    "SHOW",
                    Export,
                    format!("shows the setting `{name}`, which may hold a secret"),
                )
            }
        }
        // Cursors without WITH HOLD die with the transaction; FETCH/CLOSE only read them.
        Statement::Declare { stmts } if stmts.iter().all(|d| d.hold != Some(true)) => {
            mk("DECLARE", Read, "declares a cursor")
        }
        Statement::Declare { .. } => mk(
            "DECLARE",
            Admin,
            "DECLARE … WITH HOLD keeps a cursor after the transaction",
        ),
        Statement::Fetch { .. } => mk("FETCH", Read, "reads from a cursor"),
        Statement::Close { .. } => mk("CLOSE", Read, "closes a cursor"),

        Statement::Insert(i) => mk("INSERT", Write, format!("inserts into `{}`", i.table)),
        Statement::Update(u) => match &u.selection {
            None => mk(
                "UPDATE",
                Destructive,
                format!("UPDATE of `{}` without WHERE changes every row", u.table.relation),
            ),
            Some(w) if is_tautology(w) => mk(
                "UPDATE",
                Destructive,
                format!("UPDATE of `{}` with an always-true WHERE `{w}`", u.table.relation),
            ),
            Some(_) => mk("UPDATE", Write, format!("updates `{}`", u.table.relation)),
        },
        Statement::Delete(d) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
            let target = from
                .iter()
                .map(|t| t.relation.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            match &d.selection {
                None if d.using.is_none() => mk(
                    "DELETE",
                    Destructive,
                    format!("DELETE from `{target}` without WHERE removes every row"),
                ),
                Some(w) if is_tautology(w) => mk(
                    "DELETE",
                    Destructive,
                    format!("DELETE from `{target}` with an always-true WHERE `{w}`"),
                ),
                _ => mk("DELETE", Write, format!("deletes from `{target}`")),
            }
        }
        Statement::Merge(m) if m.clauses.iter().any(|c| matches!(c.action, MergeAction::Delete { .. })) => {
            mk("MERGE", Destructive, format!("MERGE into `{}` deletes rows", m.table))
        }
        Statement::Merge(m) => mk("MERGE", Write, format!("merges into `{}`", m.table)),
        Statement::Copy {
            to: false,
            target: CopyTarget::Stdin,
            ..
        } => mk(COPY_FROM_STDIN, Write, "COPY … FROM STDIN loads rows into a table"),
        Statement::Copy { to: false, .. } => mk("COPY FROM", Write, "COPY … FROM loads rows into a table"),
        Statement::Copy {
            target: CopyTarget::Program { .. },
            ..
        } => mk(
            "COPY TO PROGRAM",
            Privilege,
            "COPY … TO PROGRAM runs a shell command on the database server",
        ),
        Statement::Copy {
            target: CopyTarget::File { filename },
            ..
        } => mk(
            "COPY TO",
            Export,
            format!("COPY … TO writes the server file `{filename}`"),
        ),
        Statement::Copy { .. } => mk(COPY_TO_STDOUT, Export, "COPY … TO STDOUT exports data"),
        Statement::NOTIFY { .. } => mk("NOTIFY", Write, "NOTIFY sends a message to other sessions"),

        Statement::Truncate(t) => mk(
            "TRUNCATE",
            Destructive,
            format!(
                "TRUNCATE `{}` removes every row",
                t.table_names
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Statement::Drop { object_type, names, .. } => {
            let what = names.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
            let kind = format!("DROP {object_type}");
            match object_type {
                ObjectType::Role | ObjectType::User => mk(&kind, Privilege, format!("drops the role `{what}`")),
                _ => mk(&kind, Destructive, format!("drops `{what}`")),
            }
        }
        Statement::DropFunction(_)
        | Statement::DropProcedure { .. }
        | Statement::DropTrigger(_)
        | Statement::DropExtension(_)
        | Statement::DropPolicy(_)
        | Statement::DropDomain(_)
        | Statement::DropOperator(_)
        | Statement::DropOperatorFamily(_)
        | Statement::DropOperatorClass(_)
        | Statement::DropSecret { .. }
        | Statement::DropConnector { .. } => mk(
            &kind_of(statement),
            Destructive,
            format!("`{}` drops an object", kind_of(statement)),
        ),
        Statement::AlterTable(a) => {
            let drops = a.operations.iter().any(|op| {
                matches!(
                    op,
                    AlterTableOperation::DropColumn { .. }
                        | AlterTableOperation::DropConstraint { .. }
                        | AlterTableOperation::DropPartitions { .. }
                        | AlterTableOperation::DropPrimaryKey { .. }
                        | AlterTableOperation::DropForeignKey { .. }
                )
            });
            let owner = a
                .operations
                .iter()
                .any(|op| matches!(op, AlterTableOperation::OwnerTo { .. }));
            if owner {
                mk("ALTER TABLE", Privilege, format!("changes the owner of `{}`", a.name))
            } else if drops {
                mk(
                    "ALTER TABLE",
                    Destructive,
                    format!("ALTER TABLE `{}` drops a column or constraint", a.name),
                )
            } else {
                mk("ALTER TABLE", Ddl, format!("alters `{}`", a.name))
            }
        }
        Statement::CreateFunction(f)
            if f.security
                .as_ref()
                .is_some_and(|s| s.to_string().to_ascii_uppercase().contains("DEFINER")) =>
        {
            mk(
                "CREATE FUNCTION",
                Privilege,
                format!("creates SECURITY DEFINER function `{}`", f.name),
            )
        }
        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateSequence { .. }
        | Statement::CreateDomain(_)
        | Statement::CreateType { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateTrigger(_)
        | Statement::CreateExtension(_)
        | Statement::CreatePolicy(_)
        | Statement::CreateServer(_)
        | Statement::CreateDatabase { .. }
        | Statement::CreateOperator(_)
        | Statement::CreateOperatorFamily(_)
        | Statement::CreateOperatorClass(_)
        | Statement::CreateTextSearch(_)
        | Statement::CreateCollation(_)
        | Statement::CreateVirtualTable { .. }
        | Statement::AlterSchema(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterView { .. }
        | Statement::AlterFunction(_)
        | Statement::AlterType(_)
        | Statement::AlterCollation(_)
        | Statement::AlterOperator(_)
        | Statement::AlterOperatorFamily(_)
        | Statement::AlterOperatorClass(_)
        | Statement::AlterTextSearch(_)
        | Statement::AlterPolicy(_)
        | Statement::RenameTable(_)
        | Statement::Comment { .. } => mk(
            &kind_of(statement),
            Ddl,
            format!("`{}` changes the schema", kind_of(statement)),
        ),

        // `ALTER ROLE|USER … [IN DATABASE …] SET|RESET setting`: a session default, like ALTER DATABASE
        // … SET; except the defaults that switch privileges at login.
        Statement::AlterRole {
            operation:
                op @ (AlterRoleOperation::Set { .. }
                | AlterRoleOperation::Reset {
                    config_name: ResetConfig::ConfigName(_),
                    ..
                }),
            ..
        } => {
            let setting = match op {
                AlterRoleOperation::Set { config_name, .. }
                | AlterRoleOperation::Reset {
                    config_name: ResetConfig::ConfigName(config_name),
                    ..
                } => config_name.to_string().to_ascii_lowercase(),
                _ => String::new(),
            };
            if setting == "role" || setting == "session_authorization" {
                mk(
                    "ALTER ROLE",
                    Privilege,
                    format!("sets the login default `{setting}`, which switches privileges"),
                )
            } else {
                mk(
                    "ALTER ROLE",
                    Admin,
                    settings::set_reason("`ALTER ROLE … SET`", &setting),
                )
            }
        }
        // `SET role = x` is the generic form of SET ROLE.
        Statement::Set(Set::SingleAssignment { variable, .. })
            if matches!(
                variable.to_string().to_ascii_lowercase().as_str(),
                "role" | "session_authorization"
            ) =>
        {
            mk(
                "SET",
                Privilege,
                format!("`{statement}` switches to another role's privileges"),
            )
        }
        Statement::Set(Set::SingleAssignment { variable, .. }) => mk(
            "SET",
            Admin,
            settings::set_reason(&format!("`{statement}`"), &variable.to_string()),
        ),
        Statement::Set(Set::SetNames { .. }) => {
            mk("SET", Admin, settings::set_reason("`SET NAMES`", "client_encoding"))
        }
        Statement::Reset(r) if matches!(&r.reset, Reset::ConfigurationParameter(n) if settings::is_lexing(&n.to_string())) => {
            mk(
                "RESET",
                Admin,
                settings::set_reason("RESET", statement.to_string().get("RESET ".len()..).unwrap_or_default()),
            )
        }
        Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::CreateRole(_)
        | Statement::AlterRole { .. }
        | Statement::CreateUser(_)
        | Statement::AlterUser(_) => mk(
            &kind_of(statement),
            Privilege,
            format!("`{}` changes privileges or roles", kind_of(statement)),
        ),
        Statement::Set(Set::SetRole { .. }) => {
            mk("SET ROLE", Privilege, "SET ROLE switches to another role's privileges")
        }
        Statement::Set(Set::SetSessionAuthorization(_)) => mk(
            "SET SESSION AUTHORIZATION",
            Privilege,
            "SET SESSION AUTHORIZATION switches user",
        ),
        // RESET ROLE parses as a generic RESET of a parameter named ROLE (sqlparser_gaps §3.6).
        Statement::Reset(r) if resets_role(&r.reset) => mk(
            "RESET",
            Privilege,
            "RESET ROLE/SESSION AUTHORIZATION switches privileges",
        ),
        // Every SET/RESET can undo a guard (transaction mode, timeouts, string lexing): never a read.
        Statement::Set(_) => mk("SET", Admin, format!("`{}` changes session state", statement)),
        Statement::Reset(_) => mk("RESET", Admin, "RESET changes session state"),
        Statement::Discard { .. } => mk("DISCARD", Admin, "DISCARD changes session state"),
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => mk(
            &kind_of(statement),
            Admin,
            format!(
                "`{}` is transaction control, which can end pgwarden's guard transaction",
                kind_of(statement)
            ),
        ),
        // PREPARE survives ROLLBACK; its body is walked as a nested statement too.
        Statement::Prepare { .. } => mk(
            "PREPARE",
            Admin,
            "PREPARE creates a prepared statement that outlives the transaction",
        ),
        Statement::Deallocate { .. } => mk("DEALLOCATE", Admin, "DEALLOCATE changes session state"),
        Statement::Vacuum(_)
        | Statement::Analyze(_)
        | Statement::Lock(_)
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. }
        | Statement::Load { .. } => mk(
            &kind_of(statement),
            Admin,
            format!("`{}` is maintenance or session administration", kind_of(statement)),
        ),
        // EXECUTE and CALL run code whose content the text does not show.
        Statement::Execute { .. } => mk(
            "EXECUTE",
            Unknown,
            "EXECUTE runs a prepared statement whose content is not visible here",
        ),
        Statement::Call(_) => mk("CALL", Unknown, "CALL runs a procedure whose body is not visible here"),
        other => mk(
            &kind_of(other),
            Unknown,
            format!("`{}` is not a statement pgwarden has classified", kind_of(other)),
        ),
    }
}

/// `RESET ROLE` parses as a RESET of a configuration parameter named ROLE.
fn resets_role(reset: &Reset) -> bool {
    match reset {
        Reset::SessionAuthorization => true,
        Reset::ConfigurationParameter(name) => {
            let n = name.to_string().to_ascii_lowercase();
            n == "role" || n == "session_authorization"
        }
        _ => false,
    }
}

/// The first words of the statement as written, e.g. `CREATE TABLE`.
pub fn kind_of(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(3).collect();
    let n = match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
        Some("CREATE" | "ALTER" | "DROP" | "START" | "RELEASE") => 2,
        _ => 1,
    };
    words
        .iter()
        .take(n)
        .map(|w| w.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// WHERE clauses that match every row: `true`, `1 = 1`, `x = x`, `NOT false`, `… OR true`.
pub fn is_tautology(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => matches!(v.value, Value::Boolean(true)),
        Expr::Nested(inner) => is_tautology(inner),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => is_contradiction(expr),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            right,
        } => is_tautology(left) || is_tautology(right),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => is_tautology(left) && is_tautology(right),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq | BinaryOperator::GtEq | BinaryOperator::LtEq,
            right,
        } => left == right,
        // `1 <> 2`, `'a' <> 'b'`: two different literals.
        Expr::BinaryOp {
            left,
            op: BinaryOperator::NotEq,
            right,
        } => is_literal(left) && is_literal(right) && left != right,
        Expr::IsNotNull(inner) => {
            is_literal(inner) && !matches!(&**inner, Expr::Value(v) if matches!(v.value, Value::Null))
        }
        Expr::IsTrue(inner) => is_tautology(inner),
        Expr::IsNotFalse(inner) => is_tautology(inner),
        _ => false,
    }
}

fn is_contradiction(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => matches!(v.value, Value::Boolean(false)),
        Expr::Nested(inner) => is_contradiction(inner),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => is_tautology(expr),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::NotEq,
            right,
        } => left == right,
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => is_contradiction(left) || is_contradiction(right),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            right,
        } => is_contradiction(left) && is_contradiction(right),
        _ => false,
    }
}

fn is_literal(e: &Expr) -> bool {
    matches!(e, Expr::Value(_))
}
