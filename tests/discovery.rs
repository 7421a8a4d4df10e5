//! `list_tables` and `describe_table` over real MCP, including non-public schemas.

mod common;

use common::{Mcp, TestDb, limits};
use serde_json::json;

const SALES: &str = r#"
CREATE SCHEMA sales;
COMMENT ON SCHEMA sales IS 'Invoicing';
CREATE TABLE sales.customers (id bigint PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE sales.invoices (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES sales.customers(id),
    amount numeric(10,2) NOT NULL DEFAULT 0 CHECK (amount >= 0),
    note text
);
COMMENT ON TABLE sales.invoices IS 'Issued invoices';
COMMENT ON COLUMN sales.invoices.note IS 'Free text';
CREATE INDEX invoices_customer_idx ON sales.invoices (customer_id);
CREATE VIEW sales.big_invoices AS SELECT * FROM sales.invoices WHERE amount > 1000;
CREATE TABLE "Mixed Case" (x int);
CREATE TABLE public.plain (x int);
"#;

#[tokio::test]
async fn list_tables_covers_every_user_schema_and_filters_by_one() {
    let db = TestDb::new(SALES).await;
    let mcp = Mcp::start(&db, limits()).await;
    let all = mcp.ok("list_tables", json!({})).await;
    let names: Vec<String> = all["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}.{}", t["schema"].as_str().unwrap(), t["name"].as_str().unwrap()))
        .collect();
    for expected in [
        "public.Mixed Case",
        "public.plain",
        "sales.big_invoices",
        "sales.customers",
        "sales.invoices",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("pg_catalog.") || n.starts_with("information_schema."))
    );

    let sales = mcp.ok("list_tables", json!({"schema": "sales"})).await;
    assert_eq!(sales["schemas"], json!([{"name": "sales", "comment": "Invoicing"}]));
    let invoices = sales["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "invoices")
        .unwrap();
    assert_eq!(invoices["kind"], json!("table"));
    assert_eq!(invoices["comment"], json!("Issued invoices"));
    assert_eq!(invoices["readable"], json!(true));
    let view = sales["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "big_invoices")
        .unwrap();
    assert_eq!(view["kind"], json!("view"));

    let e = mcp.err("list_tables", json!({"schema": "nope"})).await;
    assert!(
        e.contains("schema `nope` does not exist") && e.contains("`sales`"),
        "{e}"
    );
}

#[tokio::test]
async fn describe_table_shows_columns_keys_indexes_and_comments() {
    let db = TestDb::new(SALES).await;
    let mcp = Mcp::start(&db, limits()).await;
    let d = mcp.ok("describe_table", json!({"table": "sales.invoices"})).await;
    assert_eq!(d["schema"], json!("sales"));
    assert_eq!(d["comment"], json!("Issued invoices"));
    let cols = d["columns"].as_array().unwrap();
    assert_eq!(cols.len(), 4);
    assert_eq!(cols[0]["name"], json!("id"));
    assert_eq!(cols[0]["generated"], json!("always"));
    assert_eq!(cols[2]["type"], json!("numeric(10,2)"));
    assert_eq!(cols[2]["nullable"], json!(false));
    assert_eq!(cols[2]["default"], json!("0"));
    assert_eq!(cols[3]["comment"], json!("Free text"));
    assert_eq!(d["primary_key"], json!(["id"]));
    assert_eq!(d["foreign_keys"][0]["columns"], json!(["customer_id"]));
    assert_eq!(d["foreign_keys"][0]["references_table"], json!("sales.customers"));
    assert_eq!(d["foreign_keys"][0]["references_columns"], json!(["id"]));
    assert!(
        d["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "invoices_customer_idx")
    );
    assert!(
        d["constraints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "check")
    );

    let v = mcp.ok("describe_table", json!({"table": "sales.big_invoices"})).await;
    assert_eq!(v["kind"], json!("view"));
    assert!(v["view_definition"].as_str().unwrap().contains("amount > 1000"));

    let m = mcp.ok("describe_table", json!({"table": "\"Mixed Case\""})).await;
    assert_eq!(m["name"], json!("Mixed Case"));

    for bad in ["sales.nope", "invoices; DROP TABLE sales.invoices", "\"unterminated"] {
        let e = mcp.err("describe_table", json!({"table": bad})).await;
        assert!(e.contains("not found"), "{bad}: {e}");
    }
    let e = mcp.err("describe_table", json!({"table": ""})).await;
    assert!(e.contains("`table` is empty"), "{e}");
}

#[tokio::test]
async fn tools_are_listed_with_honest_annotations_and_output_schemas() {
    let db = TestDb::new("").await;
    let mcp = Mcp::start(&db, limits()).await;
    let tools = mcp.client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "describe_table",
            "export",
            "grant",
            "list_tables",
            "pgwarden_await",
            "query"
        ]
    );
    for t in &tools {
        let a = t.annotations.as_ref().expect("annotations");
        // `query` can change data once a person approves it, and `export` writes files: neither
        // may claim to be read-only; `query`, `grant` (and `pgwarden_await`, which runs an approved
        // call of either) can destroy data.
        let changes = ["query", "export", "grant", "pgwarden_await"].contains(&t.name.as_ref());
        assert_eq!(a.read_only_hint, Some(!changes), "{}", t.name);
        assert_eq!(
            a.destructive_hint,
            Some(t.name == "query" || t.name == "grant" || t.name == "pgwarden_await"),
            "{}",
            t.name
        );
        assert!(t.output_schema.is_some(), "{} has an output schema", t.name);
    }
    let query = tools.iter().find(|t| t.name == "query").unwrap();
    let props = query.input_schema.get("properties").unwrap();
    assert!(props.get("sql").is_some() && props.get("max_rows").is_some() && props.get("intent").is_some());
}
