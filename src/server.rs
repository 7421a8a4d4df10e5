//! The MCP face of pgwarden: the rmcp `ServerHandler` with its tools. Each tool turns its
//! arguments into an `Action` and hands it to the pipeline; results carry structured content
//! plus a compact text rendering.

use std::sync::Arc;

use std::time::Duration;

use rmcp::{
    ErrorData as McpError, ServerHandler,
    handler::server::{
        common::schema_for_output,
        tool::{InputResponses, RequestState, ToolCallContext, ToolRouter},
        wrapper::Parameters,
    },
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestMethod,
        GetPromptRequestParams, GetPromptResponse, Implementation, JsonObject, ListPromptsRequestMethod,
        ListPromptsResult, ListResourcesResult, ListToolsResult, MetaObject, PaginatedRequestParams, ProtocolVersion,
        ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource, ResourceContents,
        ServerCapabilities, ServerConfig,
    },
    service::{RequestContext, RoleServer},
    tool, tool_router,
};
use serde::Serialize;

use crate::{
    approval::{
        Approved, Channel, LocalRoute, Preapproved, Route, StateSealer,
        hub::PendingInfo,
        pending::{Awaited, Decision, PendingError, State, StoredCall},
        surface::card_reviewer,
    },
    call::{Caller, Identity, Principal, Surface, Tool},
    db::catalog::{TableDescription, TableList},
    pipeline::{Control, Databases, Outcome, ToolError},
    tools::{
        self, ToolCall, ToolOutput,
        approval::{AwaitArgs, AwaitOutput, OrPending, PendingApproval, ReviewDecision, ReviewRef},
        describe_table::DescribeTableArgs,
        export::{ExportArgs, ExportOutput},
        grant::{GrantArgs, GrantOutput},
        list_tables::ListTablesArgs,
        query::{QueryArgs, QueryOutput},
    },
};

/// The MCP Apps extension a host declares when it renders `ui://` views.
pub const UI_EXTENSION: &str = "io.modelcontextprotocol/ui";
/// The review card's resource: static, the same bytes for every approval.
pub const REVIEW_URI: &str = "ui://pgwarden/review.html";
pub const REVIEW_MIME: &str = "text/html;profile=mcp-app";
const REVIEW_HTML: &str = include_str!("../assets/review.html");
/// Where the card's per-approval secret travels: only in the guarded call's result `_meta`.
pub const REVIEW_META_KEY: &str = "dev.pgwarden/review";
/// Tools only the card may call (`visibility: ["app"]`), listed only to hosts that render it.
pub const APP_ONLY: &[&str] = &[
    "pgwarden_review_ready",
    "pgwarden_review_status",
    "pgwarden_review_decide",
    "pgwarden_review_open",
];
/// `pgwarden_await` sends a progress notification this often while it waits.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

const INSTRUCTIONS: &str = "pgwarden gives you a PostgreSQL database. Start with `list_tables`, then \
`describe_table` for the columns you need, then `query` with one SELECT per call. Results are capped \
(`truncated: true` means more rows exist: filter or aggregate instead of raising the cap). The operator's \
policy decides what runs: writes and DDL usually need the user's approval in a prompt (give an `intent`), \
session changes are refused, and some columns come back masked (e.g. `a***@example.com`). A denial or a \
refused approval names the rule and reason: adapt your plan, do not work around it. A result with \
`status: \"pending_approval\"` ran nothing: a person decides it outside this chat; call `pgwarden_await` with its \
`approval_id` — you cannot approve anything yourself.";

#[derive(Clone)]
pub struct PgWarden {
    pipeline: Arc<Databases>,
    session: Session,
    tool_router: ToolRouter<PgWarden>,
}

/// Says who is calling, per call: the transport's verified identity (stdio: the operator's
/// `--principal`, vouched for by whoever started the process; HTTP: the bearer token).
pub trait Identify: Send + Sync {
    fn identify(&self, ctx: &RequestContext<RoleServer>) -> Option<Identity>;

    /// The session a call belongs to, when the transport names it per request (a stateless HTTP
    /// request has no session of its own); otherwise the handler's own [`Session::id`].
    fn session_id(&self, _ctx: &RequestContext<RoleServer>) -> Option<String> {
        None
    }
}

/// One identity for every call (stdio).
pub struct Fixed(pub Option<Identity>);

impl Identify for Fixed {
    fn identify(&self, _: &RequestContext<RoleServer>) -> Option<Identity> {
        self.0.clone()
    }
}

/// What a transport gives the handler of one MCP session.
#[derive(Clone)]
pub struct Session {
    /// Names the session in approvals and audit records.
    pub id: String,
    /// Seals 2026-07-28 approval states.
    pub sealer: Arc<StateSealer>,
    pub identity: Arc<dyn Identify>,
}

impl Session {
    /// A session with a fresh id, sealing with `sealer`, calls made as `principal` (named by the
    /// operator).
    pub fn new(sealer: Arc<StateSealer>, principal: Option<Principal>) -> Session {
        Session::identified(sealer, Arc::new(Fixed(principal.map(Identity::operator))))
    }

    /// A session with a fresh id whose calls are identified by `identity`.
    pub fn identified(sealer: Arc<StateSealer>, identity: Arc<dyn Identify>) -> Session {
        Session {
            id: uuid::Uuid::new_v4().to_string(),
            sealer,
            identity,
        }
    }
}

impl PgWarden {
    pub fn new(pipeline: Arc<Databases>, session: Session) -> PgWarden {
        PgWarden {
            pipeline,
            session,
            tool_router: portable_router(),
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
                sealer: self.session.sealer.clone(),
                state,
                responses,
            }
        } else {
            let spelling = crate::approval::form::Spelling::for_version(ctx.protocol_version().as_ref());
            Channel::Elicit(ctx.peer.clone(), spelling)
        }
    }

    /// Every way this call can reach a person.
    fn route(
        &self,
        ctx: &RequestContext<RoleServer>,
        state: Option<String>,
        responses: Option<rmcp::model::InputResponses>,
    ) -> Route {
        Route {
            client: self.channel(ctx, state, responses),
            local: Some(LocalRoute {
                card_host: card_host(ctx),
            }),
            preapproved: None,
        }
    }

    /// The session this call belongs to: approvals are stored under it and only it may await them.
    fn session_id(&self, ctx: &RequestContext<RoleServer>) -> String {
        self.session
            .identity
            .session_id(ctx)
            .unwrap_or_else(|| self.session.id.clone())
    }

    /// Who is calling: the client as it names itself, and the principal the transport vouches for.
    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Caller {
        let client = ctx.client_info();
        Caller {
            client_name: client.as_ref().map(|c| c.name.clone()),
            client_version: client.as_ref().map(|c| c.version.clone()),
            identity: self.session.identity.identify(ctx),
            session_id: self.session_id(ctx),
        }
    }

    /// A tool call through the pipeline, answered as MCP: the result, a prompt for the client to
    /// show (2026-07-28), or a pending approval.
    async fn run(
        &self,
        call: ToolCall,
        route: Route,
        ctl: Control,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let outcome = self.pipeline.run(&call, self.caller(ctx), &route, &ctl).await;
        respond(outcome, card_host(ctx))
    }
}

fn success<T: Serialize>(value: &T, text: String) -> Result<CallToolResult, McpError> {
    let json = serde_json::to_value(value).map_err(|e| McpError::internal_error(e.to_string(), None))?;
    Ok(structured(json, text))
}

/// Structured content with our own text rendering. (Not `CallToolResult::structured`, which
/// renders the whole value to a string first only for it to be replaced.)
fn structured(json: serde_json::Value, text: String) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(json);
    result
}

fn failure(e: ToolError) -> Result<CallToolResult, McpError> {
    Ok(CallToolResult::error(vec![ContentBlock::text(e.for_model())]))
}

/// Whether the host renders MCP Apps views (it declared the UI extension with our MIME type).
pub fn card_host(ctx: &RequestContext<RoleServer>) -> bool {
    ctx.client_capabilities()
        .and_then(|c| c.extensions)
        .and_then(|e| e.get(UI_EXTENSION).cloned())
        .is_some_and(|ui| {
            ui.get("mimeTypes")
                .and_then(|m| m.as_array())
                .is_none_or(|m| m.iter().any(|t| t.as_str() == Some(REVIEW_MIME)))
        })
}

/// The pending envelope: the same instructions in `content` and `structuredContent.message`; the
/// card's nonce only in `_meta`, and only for hosts that render the card.
fn pending_result(info: &PendingInfo, card: bool) -> CallToolResult {
    let pending = PendingApproval::new(info);
    let text = pending.message.clone();
    let mut result = structured(
        serde_json::to_value(&pending).unwrap_or_else(|_| serde_json::json!({})),
        text,
    );
    if card && info.surfaces.contains(&Surface::McpApp) {
        let mut meta = JsonObject::new();
        meta.insert(
            REVIEW_META_KEY.into(),
            serde_json::json!({ "nonce": info.nonce, "action_hash": info.action_hash }),
        );
        result.meta = Some(MetaObject(meta));
    }
    result
}

/// A tool's result.
fn respond(outcome: Result<Outcome<ToolOutput>, ToolError>, card: bool) -> Result<CallToolResponse, McpError> {
    match outcome {
        Ok(Outcome::Done(out)) => {
            let text = out.to_text();
            let json = out
                .into_value()
                .map_err(|e| McpError::internal_error(e.to_string(), None))?;
            Ok(structured(json, text).into())
        }
        Ok(Outcome::InputRequired(r)) => Ok(r.into()),
        Ok(Outcome::Pending(info)) => Ok(pending_result(&info, card).into()),
        Err(e) => failure(e).map(Into::into),
    }
}

/// Every tool pgwarden has (the card's app-only ones too), as `tools/list` describes them.
pub fn tool_definitions() -> Vec<rmcp::model::Tool> {
    portable_router().list_all()
}

/// The tools with their schemas rewritten into the subset every host accepts (`tools::portable`).
fn portable_router() -> ToolRouter<PgWarden> {
    let mut router = PgWarden::tool_router();
    for route in router.map.values_mut() {
        let tool = &mut route.attr;
        tool.input_schema = Arc::new(tools::portable::input(&tool.input_schema));
        tool.output_schema = tool
            .output_schema
            .as_ref()
            .map(|s| Arc::new(tools::portable::output(s)));
    }
    router
}

/// A guarded tool's output schema: its own output, or a pending approval (both objects).
fn guarded_schema<T: schemars::JsonSchema + std::any::Any>() -> std::sync::Arc<JsonObject> {
    let mut schema = schema_for_output::<OrPending<T>>().as_ref().clone();
    schema.insert("type".into(), serde_json::json!("object"));
    std::sync::Arc::new(schema)
}

fn await_output(out: AwaitOutput, is_error: bool) -> Result<CallToolResult, McpError> {
    let mut r = success(&out, out.message.clone())?;
    if is_error {
        r.is_error = Some(true);
    }
    Ok(r)
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
        output_schema = guarded_schema::<QueryOutput>(),
        annotations(title = "Query", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn query(
        &self,
        Parameters(args): Parameters<QueryArgs>,
        RequestState(state): RequestState,
        InputResponses(responses): InputResponses,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let route = self.route(&ctx, state, responses);
        self.run(ToolCall::Query(args), route, Control::new(ctx.ct.clone()), &ctx)
            .await
    }

    #[tool(
        description = "Export the rows of one read query to a file (CSV or JSON lines) under the server's export \
                       directory. A person usually approves it first and sees your `intent`, the columns and the \
                       target; masked columns stay masked in the file. Returns the path, row count, size and SHA-256.",
        output_schema = guarded_schema::<ExportOutput>(),
        annotations(title = "Export to a file", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn export(
        &self,
        Parameters(args): Parameters<ExportArgs>,
        RequestState(state): RequestState,
        InputResponses(responses): InputResponses,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let route = self.route(&ctx, state, responses);
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
        let ctl = Control {
            cancel: ctx.ct.clone(),
            progress: Some(Box::new(move |rows: u64| {
                let _ = tx.send(rows);
            })),
        };
        self.run(ToolCall::Export(args), route, ctl, &ctx).await
    }

    #[tool(
        description = "Grant or revoke privileges (structured; no SQL). A person reviews every change and sees the \
                       exact statement, the role's privileges before and after, and your `intent`. Names are matched \
                       exactly against the catalog: unknown roles or objects are refused.",
        output_schema = guarded_schema::<GrantOutput>(),
        annotations(title = "Grant or revoke privileges", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn grant(
        &self,
        Parameters(args): Parameters<GrantArgs>,
        RequestState(state): RequestState,
        InputResponses(responses): InputResponses,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let route = self.route(&ctx, state, responses);
        self.run(ToolCall::Grant(args), route, Control::new(ctx.ct.clone()), &ctx)
            .await
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
    ) -> Result<CallToolResponse, McpError> {
        // Discovery never asks a person.
        let route = Route::client(Channel::Unavailable);
        self.run(ToolCall::ListTables(args), route, Control::new(ctx.ct.clone()), &ctx)
            .await
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
    ) -> Result<CallToolResponse, McpError> {
        let route = Route::client(Channel::Unavailable);
        self.run(ToolCall::DescribeTable(args), route, Control::new(ctx.ct.clone()), &ctx)
            .await
    }

    #[tool(
        description = "Wait for a person's decision on a pending approval (a call that returned `status: \"pending_approval\"`), \
                       then get its outcome. If they approved, the stored call runs now, exactly once — with their dry run \
                       or row limit — and its result is returned. Otherwise: denied (with their reason), expired, cancelled, \
                       or still pending after the wait (up to about 40 s). Only a person can approve, outside this chat; if it \
                       is still pending, tell the user what awaits their decision and end your turn.",
        output_schema = schema_for_output::<AwaitOutput>(),
        annotations(title = "Await an approval", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn pgwarden_await(
        &self,
        Parameters(args): Parameters<AwaitArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        self.await_approval(args, &ctx).await
    }

    #[tool(
        description = "Review card only: the card reports that it is on screen.",
        meta = app_only_meta()
    )]
    async fn pgwarden_review_ready(&self, Parameters(args): Parameters<ReviewRef>) -> Result<CallToolResult, McpError> {
        match self
            .pipeline
            .approvals()
            .store
            .mark_shown(&args.approval_id, &args.nonce)
            .await
        {
            Ok(()) => Ok(CallToolResult::success(vec![ContentBlock::text("ok")])),
            Err(e) => failure(ToolError::Refused(e.to_string())),
        }
    }

    #[tool(
        description = "Review card only: the state of the approval the card shows.",
        meta = app_only_meta()
    )]
    async fn pgwarden_review_status(
        &self,
        Parameters(args): Parameters<ReviewRef>,
    ) -> Result<CallToolResult, McpError> {
        match self
            .pipeline
            .approvals()
            .store
            .state_with_nonce(&args.approval_id, &args.nonce)
            .await
        {
            Ok(state) => card_state(&state),
            Err(e) => failure(ToolError::Refused(e.to_string())),
        }
    }

    #[tool(
        description = "Review card only: the person's decision on the approval the card shows.",
        meta = app_only_meta()
    )]
    async fn pgwarden_review_decide(
        &self,
        Parameters(args): Parameters<ReviewDecision>,
    ) -> Result<CallToolResult, McpError> {
        let decision = match Decision::parse(&args.decision, args.max_rows_affected, args.reason) {
            Ok(d) => d,
            Err(m) => return failure(ToolError::BadArguments(m)),
        };
        let reviewer = card_reviewer(args.nonce);
        match self
            .pipeline
            .approvals()
            .store
            .decide(&args.approval_id, &args.action_hash, &reviewer, decision)
            .await
        {
            Ok(state) => card_state(&state),
            Err(e) => failure(ToolError::Refused(e.to_string())),
        }
    }

    #[tool(
        description = "Review card only: open the pgwarden review window in the person's browser.",
        meta = app_only_meta()
    )]
    async fn pgwarden_review_open(&self, Parameters(args): Parameters<ReviewRef>) -> Result<CallToolResult, McpError> {
        let approvals = self.pipeline.approvals();
        if let Err(e) = approvals.store.state_with_nonce(&args.approval_id, &args.nonce).await {
            return failure(ToolError::Refused(e.to_string()));
        }
        match approvals.bring_forward(Surface::Console).await {
            Ok(_) => Ok(CallToolResult::success(vec![ContentBlock::text(
                "the review window is open in the browser",
            )])),
            Err(e) => failure(ToolError::Refused(e)),
        }
    }
}

/// `_meta` of the card's tools: callable by the card, hidden from the model.
fn app_only_meta() -> MetaObject {
    let mut m = JsonObject::new();
    m.insert("ui".into(), serde_json::json!({ "visibility": ["app"] }));
    MetaObject(m)
}

fn card_state(state: &State) -> Result<CallToolResult, McpError> {
    let (word, label) = state.words();
    success(
        &serde_json::json!({ "state": word, "state_label": label }),
        label.clone(),
    )
}

impl PgWarden {
    /// `pgwarden_await`: waits within the budget (progress every few seconds), then reports; an
    /// approved action runs here, once, from what was stored — never from anything the model sends.
    async fn await_approval(
        &self,
        args: AwaitArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let approvals = self.pipeline.approvals().clone();
        let store = &approvals.store;
        let id = args.approval_id.trim().to_string();
        // Whose approvals these are: the verified principal (on any replica), else this session.
        let session = self.caller(ctx).owner();
        let budget = args
            .wait_seconds
            .map(Duration::from_secs)
            .map_or(approvals.settings.wait_budget, |w| {
                w.min(approvals.settings.wait_budget)
            });
        let until = tokio::time::Instant::now() + budget;
        let token = ctx.meta.get_progress_token();
        let mut ticks = 0u32;
        let status = |status: &str, message: String, reason: Option<String>, timed_out: bool| AwaitOutput {
            status: status.into(),
            executed: false,
            approval_id: id.clone(),
            timed_out,
            message,
            reviewer_reason: reason,
            result: None,
        };
        let awaited = loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let slice = left.min(PROGRESS_EVERY);
            let r = tokio::select! {
                r = store.wait(&id, &session, slice) => r,
                _ = ctx.ct.cancelled() => return failure(ToolError::Refused(
                    "the wait was cancelled; the approval itself is unchanged".into())),
            };
            match r {
                Ok(Awaited::StillPending) if !left.is_zero() && slice < left => {
                    ticks += 1;
                    if let Some(token) = &token {
                        let p = rmcp::model::ProgressNotificationParam::new(token.clone(), f64::from(ticks))
                            .with_message(format!("waiting for a person's decision on {id}"));
                        let _ = ctx.peer.notify_progress(p).await;
                    }
                }
                other => break other,
            }
        };
        let out = match awaited {
            Err(PendingError::Unknown(_)) => status(
                "unknown_or_expired",
                format!(
                    "pgwarden has no approval `{id}`: it expired, or the server restarted (pending approvals do not \
                     survive a restart). Nothing was executed. If the user still wants it, make the original call again."
                ),
                None,
                false,
            ),
            Err(e) => return failure(ToolError::Refused(e.to_string())),
            Ok(Awaited::StillPending) => status(
                "pending",
                format!(
                    "Still waiting for a person's decision on {id} (nothing was executed). Tell the user that \
                     pgwarden's review window (or card) has an action waiting for them, then end your turn; call \
                     pgwarden_await again when they say they have decided."
                ),
                None,
                true,
            ),
            Ok(Awaited::Finished(state)) => {
                let (word, label) = state.words();
                let (message, reason) = match state {
                    State::Denied { reason } => (
                        format!(
                            "A person DENIED {id}; nothing was executed. Do not retry it in another form — ask the user \
                             how to proceed.{}",
                            reason
                                .as_ref()
                                .map(|r| format!(" Their reason: \"{r}\""))
                                .unwrap_or_default()
                        ),
                        reason,
                    ),
                    State::Executing => (
                        format!("{id} is being run by another pgwarden_await call right now."),
                        None,
                    ),
                    State::Done { .. } => (format!("{id} already ran; an approval runs once."), None),
                    _ => (format!("{id} {label}; nothing was executed."), None),
                };
                status(word, message, reason, false)
            }
            Ok(Awaited::Execute { call: stored, approved }) => {
                let route = Route {
                    client: Channel::Unavailable,
                    local: None,
                    preapproved: Some(Preapproved {
                        approval_id: id.clone(),
                        hash: stored.hash.clone(),
                        approved: approved.clone(),
                    }),
                };
                let ran = self.replay(&stored, &route, ctx).await;
                store.finish(&id, ran.is_ok()).await;
                let Approved {
                    dry_run,
                    max_rows_affected,
                    reason,
                } = approved;
                let how = match (dry_run, max_rows_affected) {
                    (true, _) => "approved as a dry run (rolled back)".to_string(),
                    (false, Some(n)) => format!("approved with a row limit of {n}"),
                    (false, None) => "approved".to_string(),
                };
                let why = reason
                    .as_ref()
                    .map(|r| format!(" Reviewer's note: \"{r}\"."))
                    .unwrap_or_default();
                match ran {
                    Ok((value, text)) => AwaitOutput {
                        status: "executed".into(),
                        executed: true,
                        approval_id: id.clone(),
                        timed_out: false,
                        message: format!("A person {how} {id}; it ran once.{why}\n{text}"),
                        reviewer_reason: reason,
                        result: Some(value),
                    },
                    Err(e) => {
                        return await_output(
                            AwaitOutput {
                                status: "failed".into(),
                                executed: true,
                                approval_id: id.clone(),
                                timed_out: false,
                                message: format!("A person {how} {id}, but running it failed: {}", e.for_model()),
                                reviewer_reason: reason,
                                result: None,
                            },
                            true,
                        );
                    }
                }
            }
        };
        await_output(out, false)
    }

    /// Runs a stored call through the same entry point as any call (classification and policy
    /// are checked again, and the call must hash to what the person approved), as its first caller.
    async fn replay(
        &self,
        stored: &StoredCall,
        route: &Route,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<(serde_json::Value, String), ToolError> {
        let call: ToolCall = serde_json::from_value(stored.call.clone())
            .map_err(|e| ToolError::Refused(format!("the stored call could not be read back ({e})")))?;
        let caller = stored.action.caller.clone();
        match self
            .pipeline
            .run(&call, caller, route, &Control::new(ctx.ct.clone()))
            .await?
        {
            Outcome::Done(out) => {
                let text = out.to_text();
                let value = out
                    .into_value()
                    .map_err(|e| ToolError::Refused(format!("the result could not be shown ({e})")))?;
                Ok((value, text))
            }
            _ => Err(ToolError::Refused(
                "the approved call asked for another approval".into(),
            )),
        }
    }
}

impl ServerHandler for PgWarden {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(Implementation::new("pgwarden", env!("CARGO_PKG_VERSION")))
            .with_instructions(match self.pipeline.database_note() {
                Some(note) => format!("{INSTRUCTIONS} Note: {note}."),
                None => INSTRUCTIONS.to_string(),
            })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // The card's tools do not exist for hosts that cannot render the card.
        if APP_ONLY.contains(&request.name.as_ref()) && !card_host(&context) {
            return Err(McpError::invalid_params(
                format!("unknown tool `{}`", request.name),
                None,
            ));
        }
        let tool = request.name.to_string();
        let tcc = ToolCallContext::new(self, request, context);
        crate::contain::contain(&tool, self.tool_router.call(tcc), || {
            Ok(crate::contain::internal_error().into())
        })
        .await
    }

    /// Hosts that render MCP Apps get the card linked on guarded tools and the card's app-only
    /// tools; every other client sees neither.
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let card = card_host(&context);
        let tools = self
            .tool_router
            .list_all()
            .into_iter()
            .filter(|t| card || !APP_ONLY.contains(&t.name.as_ref()))
            .map(|mut t| {
                if card && Tool::from_name(&t.name).is_some_and(Tool::guarded) {
                    let mut meta = t.meta.take().unwrap_or_default();
                    meta.0
                        .insert("ui".into(), serde_json::json!({ "resourceUri": REVIEW_URI }));
                    t.meta = Some(meta);
                }
                t
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        self.tool_router.get(name).cloned()
    }

    /// pgwarden has no prompts and does not declare the capability, so `prompts/*` are not methods
    /// it has (rmcp would otherwise answer an empty list, which reads as support).
    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Err(McpError::method_not_found::<ListPromptsRequestMethod>())
    }

    async fn get_prompt(
        &self,
        _request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        Err(McpError::method_not_found::<GetPromptRequestMethod>())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let mut resources = vec![];
        if card_host(&context) {
            let mut r = Resource::new(REVIEW_URI, "pgwarden-review")
                .with_title("pgwarden approval card")
                .with_description("Shows a pending pgwarden approval so the person in the chat can decide it");
            r.mime_type = Some(REVIEW_MIME.into());
            resources.push(r);
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if request.uri != REVIEW_URI {
            return Err(McpError::resource_not_found(
                format!("no resource `{}`", request.uri),
                None,
            ));
        }
        let mut meta = JsonObject::new();
        meta.insert("ui".into(), serde_json::json!({ "prefersBorder": true }));
        let contents = ResourceContents::TextResourceContents {
            uri: REVIEW_URI.into(),
            mime_type: Some(REVIEW_MIME.into()),
            text: REVIEW_HTML.into(),
            meta: Some(MetaObject(meta)),
        };
        Ok(ReadResourceResponse::Complete(ReadResourceResult::new(vec![contents])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Tool` and the router name the same tools: a tool registered without its variant (or a
    /// variant never registered) would let policy files name a tool no client can call, or miss one.
    #[test]
    fn the_router_registers_every_tool_under_its_name_and_no_other() {
        let mut registered: Vec<String> = tool_definitions()
            .into_iter()
            .map(|t| t.name.to_string())
            .filter(|n| !n.starts_with("pgwarden_"))
            .collect();
        registered.sort();
        let mut named: Vec<String> = Tool::ALL.iter().map(|t| t.name().to_string()).collect();
        named.sort();
        assert_eq!(registered, named);
    }
}
