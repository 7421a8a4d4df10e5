//! The MCP face of pgwarden: the rmcp `ServerHandler` with its tools. Each tool turns its
//! arguments into an `Action` and hands it to the pipeline; results carry structured content
//! plus a compact text rendering.

use std::sync::Arc;

use rmcp::{
    ErrorData as McpError, ServerHandler,
    handler::server::{
        common::schema_for_output,
        tool::{InputResponses, RequestState, ToolRouter},
        wrapper::Parameters,
    },
    model::{
        CallToolResponse, CallToolResult, ContentBlock, Implementation, ProtocolVersion, ServerCapabilities,
        ServerConfig,
    },
    service::{RequestContext, RoleServer},
    tool, tool_handler, tool_router,
};
use serde::Serialize;

use crate::{
    approval::{Channel, StateSealer},
    db::catalog::{TableDescription, TableList},
    pipeline::{Action, Caller, Outcome, Pipeline, ToolError},
    tools::{
        self,
        describe_table::DescribeTableArgs,
        export::{ExportArgs, ExportOutput},
        grant::{GrantArgs, GrantOutput},
        list_tables::ListTablesArgs,
        query::{QueryArgs, QueryOutput},
    },
};

const INSTRUCTIONS: &str = "pgwarden gives you a PostgreSQL database. Start with `list_tables`, then \
`describe_table` for the columns you need, then `query` with one SELECT per call. Results are capped \
(`truncated: true` means more rows exist: filter or aggregate instead of raising the cap). The operator's \
policy decides what runs: writes and DDL usually need the user's approval in a prompt (give an `intent`), \
session changes are refused, and some columns come back masked (e.g. `a***@example.com`). A denial or a \
refused approval names the rule and reason: adapt your plan, do not work around it.";

#[derive(Clone)]
pub struct PgWarden {
    pipeline: Arc<Pipeline>,
    /// Seals 2026-07-28 approval states; its key lives only in this process.
    sealer: Arc<StateSealer>,
    session_id: String,
    tool_router: ToolRouter<PgWarden>,
}

impl PgWarden {
    pub fn new(pipeline: Arc<Pipeline>) -> PgWarden {
        PgWarden {
            pipeline,
            sealer: Arc::new(StateSealer::new()),
            session_id: uuid::Uuid::new_v4().to_string(),
            tool_router: Self::tool_router(),
        }
    }

    /// How this call can reach a person: an elicitation request (2025 protocols), an
    /// `InputRequiredResult` round trip (2026-07-28), or not at all (no elicitation capability).
    fn channel(
        &self,
        ctx: &RequestContext<RoleServer>,
        state: Option<String>,
        responses: Option<rmcp::model::InputResponses>,
    ) -> Channel {
        // `{}` means form mode (2025-06-18 clients); a URL-only client cannot show our form.
        let can_prompt = ctx
            .client_capabilities()
            .and_then(|c| c.elicitation)
            .is_some_and(|e| e.form.is_some() || e.url.is_none());
        if !can_prompt {
            return Channel::Unavailable;
        }
        if ctx
            .protocol_version()
            .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28)
        {
            Channel::InputRequired {
                sealer: self.sealer.clone(),
                state,
                responses,
            }
        } else {
            Channel::Elicit(ctx.peer.clone())
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
        description = "Run one PostgreSQL statement. Reads (a single SELECT; CTEs, joins and aggregates are fine) \
                       return typed rows, capped by `max_rows`; `truncated: true` means more exist. Writes and DDL \
                       run only if the operator's policy allows them — usually after the user approves them in a \
                       prompt that shows the SQL, its risk and your `intent`, so say in `intent` why you need it. \
                       The policy may deny some statements or tables and mask some columns.",
        output_schema = schema_for_output::<QueryOutput>(),
        annotations(title = "Query", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn query(
        &self,
        Parameters(args): Parameters<QueryArgs>,
        RequestState(state): RequestState,
        InputResponses(responses): InputResponses,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let action = self.action("query", Some(args.sql), args.intent, &ctx);
        let channel = self.channel(&ctx, state, responses);
        match self.pipeline.query(&action, args.max_rows, &channel, &ctx.ct).await {
            Ok(Outcome::Done(out)) => success(&out, out.to_text()).map(Into::into),
            Ok(Outcome::InputRequired(r)) => Ok(r.into()),
            Err(e) => failure(e).map(Into::into),
        }
    }

    #[tool(
        description = "Export the rows of one read query to a file (CSV or JSON lines) under the server's export \
                       directory. A person usually approves it first and sees your `intent`, the columns and the \
                       target; masked columns stay masked in the file. Returns the path, row count, size and SHA-256.",
        output_schema = schema_for_output::<ExportOutput>(),
        annotations(title = "Export to a file", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn export(
        &self,
        Parameters(args): Parameters<ExportArgs>,
        RequestState(state): RequestState,
        InputResponses(responses): InputResponses,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let action = self.action("export", Some(args.sql.clone()), Some(args.intent.clone()), &ctx);
        let channel = self.channel(&ctx, state, responses);
        // Progress notifications (rows written) when the client asked for them.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        if let Some(token) = ctx.meta.get_progress_token() {
            let peer = ctx.peer.clone();
            tokio::spawn(async move {
                while let Some(rows) = rx.recv().await {
                    let param = rmcp::model::ProgressNotificationParam::new(token.clone(), rows as f64)
                        .with_message(format!("{rows} rows written"));
                    let _ = peer.notify_progress(param).await;
                }
            });
        }
        let progress = move |rows: u64| {
            let _ = tx.send(rows);
        };
        match self.pipeline.export(&action, &args, &channel, &progress, &ctx.ct).await {
            Ok(Outcome::Done(out)) => success(&out, out.to_text()).map(Into::into),
            Ok(Outcome::InputRequired(r)) => Ok(r.into()),
            Err(e) => failure(e).map(Into::into),
        }
    }

    #[tool(
        description = "Grant or revoke privileges (structured; no SQL). A person reviews every change and sees the \
                       exact statement, the role's privileges before and after, and your `intent`. Names are matched \
                       exactly against the catalog: unknown roles or objects are refused.",
        output_schema = schema_for_output::<GrantOutput>(),
        annotations(title = "Grant or revoke privileges", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn grant(
        &self,
        Parameters(args): Parameters<GrantArgs>,
        RequestState(state): RequestState,
        InputResponses(responses): InputResponses,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let action = self.action("grant", None, Some(args.intent.clone()), &ctx);
        let channel = self.channel(&ctx, state, responses);
        match self.pipeline.grant(&action, &args, &channel, &ctx.ct).await {
            Ok(Outcome::Done(out)) => success(&out, out.to_text()).map(Into::into),
            Ok(Outcome::InputRequired(r)) => Ok(r.into()),
            Err(e) => failure(e).map(Into::into),
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
        let action = self.action("list_tables", None, args.intent, &ctx);
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
        let action = self.action("describe_table", None, args.intent, &ctx);
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
