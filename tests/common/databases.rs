//! The setting of the several-databases attack tests (issue 22): `staging` and `prod`, two
//! databases of one cluster. Agents may do anything on `staging`; on `prod` they may only read, and
//! never `private.*`.

use std::path::{Path, PathBuf};

/// Both databases: customers with e-mails.
pub const SETUP: &str = "CREATE TABLE customers (id int PRIMARY KEY, email text);
INSERT INTO customers VALUES (1, 'alice@example.com'), (2, 'bob@example.com');";

/// `prod` also has `private.customers`, which its policy denies.
pub const PRIVATE: &str = "CREATE SCHEMA private;
CREATE TABLE private.customers (id int PRIMARY KEY, email text);
INSERT INTO private.customers VALUES (99, 'SECRET-private-row');";

/// staging: anything runs. prod: reads only, and never `private.*`.
pub const POLICY: &str = r#"
[[rule]]
id = "prod-private-denied"
effect = "deny"
tables = ["prod:private.*"]
reason = "private is off limits"

[[rule]]
id = "prod-reads-only"
effect = "deny"
databases = ["prod"]
categories = ["write", "ddl", "destructive", "privilege", "admin", "export", "unknown"]
reason = "prod is production"

[[rule]]
id = "staging-anything"
effect = "allow"
databases = ["staging"]
categories = ["read", "write", "ddl", "destructive", "privilege", "admin", "export", "unknown"]

[[rule]]
id = "reads-run"
effect = "allow"
categories = ["read"]
"#;

/// A fresh directory under /tmp (where the `postgres` user can reach it when we run as root).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("pgw-dbs-").tempdir_in("/tmp").unwrap()
}

/// `body` as `pgwarden.toml` in `dir`.
pub fn config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("pgwarden.toml");
    std::fs::write(&path, body).unwrap();
    path
}
