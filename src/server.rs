//! The MCP face of pgwarden: the rmcp `ServerHandler` with its tools. Each tool turns its
//! arguments into an `Action` and hands it to the pipeline; results carry structured content
//! plus a compact text rendering.

use std::sync::Arc;

use rmcp::{
    ErrorData as McpError, ServerHandler,
    handler::server::{common::schema_for_output, tool::ToolRouter, wrapper::Parameters},
    model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig},
    service::{RequestContext, RoleServer},
    tool, tool_handler, tool_router,
};
use serde::Serialize;

use crate::{
    db::catalog::{TableDescription, TableList},
    pipeline::{Action, Caller, Pipeline, ToolError},
    tools::{
        self,
        describe_table::DescribeTableArgs,
        list_tables::ListTablesArgs,
        query::{QueryArgs, QueryOutput},
    },
};

const INSTRUCTIONS: &str = "pgwarden gives you a PostgreSQL database. Start with `list_tables`, then \
`describe_table` for the columns you need, then `query` with one SELECT per call. Results are capped \
(`truncated: true` means more rows exist: filter or aggregate instead of raising the cap). The operator's \
policy decides what runs: writes, DDL and session changes are refused or need a person's approval, and \
some columns come back masked (e.g. `a***@example.com`); a denial names the rule, so do not work around it.";

#[derive(Clone)]
pub struct PgWarden {
    pipeline: Arc<Pipeline>,
    session_id: String,
    tool_router: ToolRouter<PgWarden>,
}

impl PgWarden {
    pub fn new(pipeline: Arc<Pipeline>) -> PgWarden {
        PgWarden {
            pipeline,
            session_id: uuid::Uuid::new_v4().to_string(),
            tool_router: Self::tool_router(),
        }
    }

    fn action(
        &self,
        tool: &'static str,
        sql: Option<String>,
        intent: Option<String>,
        ctx: &RequestContext<RoleServer>,
    ) -> Action {
        let client = ctx.client_info();
        Action {
            tool,
            sql,
            intent,
            caller: Caller {
                client_name: client.as_ref().map(|c| c.name.clone()),
                client_version: client.as_ref().map(|c| c.version.clone()),
                principal: self.pipeline.principal().map(str::to_string),
                session_id: self.session_id.clone(),
            },
        }
    }
}

fn success<T: Serialize>(value: &T, text: String) -> Result<CallToolResult, McpError> {
    let json = serde_json::to_value(value).map_err(|e| McpError::internal_error(e.to_string(), None))?;
    let mut result = CallToolResult::structured(json);
    result.content = vec![ContentBlock::text(text)];
    Ok(result)
}

fn failure(e: ToolError) -> Result<CallToolResult, McpError> {
    Ok(CallToolResult::error(vec![ContentBlock::text(e.for_model())]))
}

#[tool_router]
impl PgWarden {
    /// Run one read-only SQL query (SELECT) and return typed rows.
    #[tool(
        description = "Run one read-only PostgreSQL query (a single SELECT; CTEs, joins and aggregates are fine) \
                       and get typed rows back. Rows are capped by `max_rows`; `truncated: true` means more exist. \
                       Writes, DDL, SET and multiple statements are refused; the operator's policy may deny some \
                       tables and mask some columns.",
        output_schema = schema_for_output::<QueryOutput>(),
        annotations(title = "Query (read-only)", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn query(
        &self,
        Parameters(args): Parameters<QueryArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let action = self.action("query", Some(args.sql), args.intent, &ctx);
        match self.pipeline.query(&action, args.max_rows, &ctx.ct).await {
            Ok(out) => success(&out, out.to_text()),
            Err(e) => failure(e),
        }
    }

    #[tool(
        description = "List schemas, tables and views (all non-system schemas, or one) with row estimates and comments.",
        output_schema = schema_for_output::<TableList>(),
        annotations(title = "List tables", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_tables(
        &self,
        Parameters(args): Parameters<ListTablesArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let action = self.action("list_tables", None, None, &ctx);
        match self
            .pipeline
            .list_tables(&action, args.schema.as_deref(), &ctx.ct)
            .await
        {
            Ok(list) => success(&list, tools::list_tables::to_text(&list)),
            Err(e) => failure(e),
        }
    }

    #[tool(
        description = "Describe one table or view: columns with types, nullability and defaults, primary and foreign keys, indexes, constraints and comments.",
        output_schema = schema_for_output::<TableDescription>(),
        annotations(title = "Describe table", read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn describe_table(
        &self,
        Parameters(args): Parameters<DescribeTableArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let action = self.action("describe_table", None, None, &ctx);
        match self.pipeline.describe_table(&action, &args.table, &ctx.ct).await {
            Ok(d) => success(&d, tools::describe_table::to_text(&d)),
            Err(e) => failure(e),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PgWarden {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("pgwarden", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}
