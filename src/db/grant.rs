//! Catalog side of `grant`: every name the model gives is looked up exactly (no case folding, no
//! parsing) and must name a real object or role; and what a role can do on those objects, before and
//! after.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Database, DbError, quote_ident, session::Session};
use crate::grant::ObjectType;

/// An object the catalog confirmed.
#[derive(Debug, Clone)]
pub struct GrantObject {
    pub oid: u32,
    /// For people: `public.orders`, `public.f(integer)`.
    pub display: String,
    /// For the statement: quoted identifiers, or PostgreSQL's own `regprocedure` text.
    pub sql: String,
}

/// Who receives (or loses) the privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    Public,
    Role(String),
}

impl Grantee {
    pub fn sql(&self) -> String {
        match self {
            Grantee::Public => "PUBLIC".into(),
            Grantee::Role(r) => quote_ident(r),
        }
    }

    /// The name `has_*_privilege` takes.
    fn check_name(&self) -> String {
        match self {
            Grantee::Public => "public".into(),
            Grantee::Role(r) => r.clone(),
        }
    }

    pub fn display(&self) -> String {
        match self {
            Grantee::Public => "PUBLIC (every role, now and later)".into(),
            Grantee::Role(r) if r.eq_ignore_ascii_case("public") => {
                format!("{r} (the role named `{r}`, not PUBLIC)")
            }
            Grantee::Role(r) => r.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// `schema.name` split at the first dot; a bare name is in `public`.
fn split(name: &str) -> (String, String) {
    match name.split_once('.') {
        Some((s, n)) => (s.to_string(), n.to_string()),
        None => ("public".to_string(), name.to_string()),
    }
}

impl Database {
    /// Resolves the grantee and each object, exactly as written.
    pub async fn resolve_grant(
        &self,
        object_type: ObjectType,
        objects: &[String],
        role: &str,
        timeout: Duration,
        ct: &CancellationToken,
    ) -> Result<(Grantee, Vec<GrantObject>), LookupError> {
        let mut session = Session::open(self).await?;
        session
            .guarded(ct, timeout + Duration::from_secs(5), async |s: &mut Session| {
                let tx = s.begin_read(timeout).await?;
                let q = async |sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]| {
                    tx.query(sql, params).await.map_err(DbError::from_pg)
                };
                // Only the keyword as SQL writes it means every role; `Public` is a role of that name
                // (Postgres reserves only the lower-case `public` as a role name).
                let grantee = if role == "PUBLIC" || role == "public" {
                    Grantee::Public
                } else {
                    let rows = q("SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = $1", &[&role]).await?;
                    if rows.is_empty() {
                        return Err(LookupError::NotFound(format!(
                            "role `{role}` does not exist (names are matched exactly, case and all); check it with the user"
                        )));
                    }
                    Grantee::Role(role.to_string())
                };
                if objects.is_empty() {
                    return Err(LookupError::NotFound("`objects` is empty; name at least one".into()));
                }
                let mut found = Vec::new();
                for name in objects {
                    let missing = || {
                        LookupError::NotFound(format!(
                            "{} `{name}` does not exist (names are matched exactly; write `schema.name`)",
                            object_type.as_str().replace('_', " ")
                        ))
                    };
                    let object = match object_type {
                        ObjectType::Table | ObjectType::Sequence => {
                            let (schema, rel) = split(name);
                            let kinds = if object_type == ObjectType::Sequence { "S" } else { "rpvmf" };
                            let rows = q(
                                "SELECT c.oid, n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
                                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                                 WHERE n.nspname = $1 AND c.relname = $2 AND strpos($3, c.relkind::text) > 0",
                                &[&schema, &rel, &kinds],
                            )
                            .await?;
                            let r = rows.first().ok_or_else(missing)?;
                            let (s, n): (String, String) = (r.get(1), r.get(2));
                            GrantObject {
                                oid: r.get(0),
                                display: format!("{s}.{n}"),
                                sql: format!("{}.{}", quote_ident(&s), quote_ident(&n)),
                            }
                        }
                        ObjectType::Schema | ObjectType::AllTablesInSchema | ObjectType::Database => {
                            let sql = if object_type == ObjectType::Database {
                                "SELECT oid, datname::text FROM pg_catalog.pg_database WHERE datname = $1"
                            } else {
                                "SELECT oid, nspname::text FROM pg_catalog.pg_namespace WHERE nspname = $1"
                            };
                            let rows = q(sql, &[name]).await?;
                            let r = rows.first().ok_or_else(missing)?;
                            GrantObject {
                                oid: r.get(0),
                                display: r.get(1),
                                sql: quote_ident(&r.get::<_, String>(1)),
                            }
                        }
                        ObjectType::Function => {
                            // `schema.name`, or `schema.name(argtypes)` when it is overloaded; the
                            // SQL text is PostgreSQL's own rendering of the function it found.
                            let (base, args) = match name.split_once('(') {
                                Some((b, a)) => (b.to_string(), Some(a.trim_end_matches(')').to_string())),
                                None => (name.clone(), None),
                            };
                            let (schema, fname) = split(&base);
                            let rows = q(
                                "SELECT p.oid, p.oid::regprocedure::text, \
                                        pg_catalog.pg_get_function_identity_arguments(p.oid) \
                                 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                                 WHERE n.nspname = $1 AND p.proname = $2 AND p.prokind IN ('f', 'p')",
                                &[&schema, &fname],
                            )
                            .await?;
                            let matching: Vec<_> = rows
                                .iter()
                                .filter(|r| {
                                    args.as_ref().is_none_or(|a| {
                                        r.get::<_, String>(2).replace(' ', "") == a.replace(' ', "")
                                    })
                                })
                                .collect();
                            match matching.as_slice() {
                                [r] => GrantObject {
                                    oid: r.get(0),
                                    display: r.get(1),
                                    sql: r.get(1),
                                },
                                [] => return Err(missing()),
                                several => {
                                    return Err(LookupError::NotFound(format!(
                                        "function `{name}` is overloaded; name one: {}",
                                        several.iter().map(|r| r.get::<_, String>(1)).collect::<Vec<_>>().join(", ")
                                    )));
                                }
                            }
                        }
                    };
                    found.push(object);
                }
                Ok((grantee, found))
            })
            .await
    }

    /// For each object, the privileges `grantee` holds (directly, through PUBLIC or membership).
    /// For `all_tables_in_schema`, per privilege: on how many of the schema's tables.
    pub async fn privileges_held(
        &self,
        grantee: &Grantee,
        object_type: ObjectType,
        objects: &[GrantObject],
        timeout: Duration,
        ct: &CancellationToken,
    ) -> Result<Vec<(String, Vec<String>)>, DbError> {
        let who = grantee.check_name();
        let privs: Vec<String> = object_type.privileges().iter().map(|p| p.to_string()).collect();
        let mut session = Session::open(self).await?;
        session
            .guarded(ct, timeout + Duration::from_secs(5), async |s: &mut Session| {
                let tx = s.begin_read(timeout).await?;
                let mut out = Vec::new();
                for o in objects {
                    let check = match object_type {
                        ObjectType::Table => "has_table_privilege($1, $2::oid, p)",
                        ObjectType::Sequence => "has_sequence_privilege($1, $2::oid, p)",
                        ObjectType::Schema => "has_schema_privilege($1, $2::oid, p)",
                        ObjectType::Function => "has_function_privilege($1, $2::oid, p)",
                        ObjectType::Database => "has_database_privilege($1, $2::oid, p)",
                        ObjectType::AllTablesInSchema => {
                            let rows = tx
                                .query(
                                    "SELECT p || ' on ' || count(*) FILTER (WHERE pg_catalog.has_table_privilege($1, c.oid, p)) \
                                            || '/' || count(*) || ' tables' \
                                     FROM unnest($3::text[]) WITH ORDINALITY AS u(p, ord) \
                                     CROSS JOIN pg_catalog.pg_class c \
                                     WHERE c.relnamespace = $2::oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                                     GROUP BY p, ord ORDER BY ord",
                                    &[&who, &o.oid, &privs],
                                )
                                .await
                                .map_err(DbError::from_pg)?;
                            out.push((o.display.clone(), rows.iter().map(|r| r.get(0)).collect()));
                            continue;
                        }
                    };
                    let rows = tx
                        .query(
                            &format!(
                                "SELECT p FROM unnest($3::text[]) WITH ORDINALITY AS u(p, ord) WHERE pg_catalog.{check} ORDER BY ord"
                            ),
                            &[&who, &o.oid, &privs],
                        )
                        .await
                        .map_err(DbError::from_pg)?;
                    out.push((o.display.clone(), rows.iter().map(|r| r.get(0)).collect()));
                }
                Ok(out)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::{GrantAction, statement};

    /// The statement `grant` builds from names quoted here keeps every identifier quoted.
    #[test]
    fn statements_quote_every_identifier() {
        assert_eq!(
            statement(
                GrantAction::Grant,
                &["SELECT".into()],
                ObjectType::Table,
                &[format!("{}.{}", quote_ident("public"), quote_ident("a\"b"))],
                &quote_ident("analyst; DROP"),
                true
            ),
            "GRANT SELECT ON TABLE \"public\".\"a\"\"b\" TO \"analyst; DROP\" WITH GRANT OPTION"
        );
        assert_eq!(
            statement(
                GrantAction::Revoke,
                &["ALL".into()],
                ObjectType::AllTablesInSchema,
                &[quote_ident("s")],
                "PUBLIC",
                false
            ),
            "REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA \"s\" FROM PUBLIC"
        );
    }
}
