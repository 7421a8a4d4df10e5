//! pgwarden: an MCP server that lets LLM clients work with PostgreSQL while a human stays in
//! charge of every high-impact action.
//!
//! ```text
//! tools/call ─► server ─► ToolCall ─► Pipeline::run ─► Step::assess ─► policy ─► approval gate ─► Step::execute ─► result
//!  (rmcp)      (handler)  (tool+args)  (one entry)      (classify)     (decide)   (ask/wait/pending)  (Postgres)   (masked)
//!                                          └──────────── audit: a record at every step (AuditSink) ────────────┘
//! ```
//!
//! `serve` runs a session over a transport, `server` is its MCP handler, `pipeline` is the only
//! place the steps of a call meet (one `Pipeline` per served database, behind
//! `pipeline::Databases`, which picks it by the call's `database` argument), `classify` and `policy` are pure, `approval` holds the gate, the
//! store and the review surfaces, `db` is the only module that talks to the served Postgres, and
//! `state` keeps pgwarden's own tables (approvals and the audit chain shared by `serve --http`
//! replicas, `--state-url`). `team` holds the surfaces where another person decides over HTTP (the
//! approvals API, the review app, Slack) and the notifiers (Slack, Teams, webhooks); `channels` is
//! their part of the HTTP config.
//!
//! Layers, lowest first: call, units, text, dirs, contain, export_path, classify, policy, audit,
//! config, channels, auth, grant, db, approval, state, console, tools, trail, pipeline, server, transport,
//! team, serve, check, demo.
//! A module imports only from modules listed before it (and from itself); `tests/architecture.rs`
//! holds every `crate::` path in `src/` to this order. The binary, `main.rs`, stands above them all.
//!
//! # Layout
//!
//! `call` is the leaf the others build on — `Tool`, `Surface`, `Level`, `Action`, `Caller`,
//! `Principal` — so policy, approval, audit and the MCP handler share one vocabulary without
//! depending on one another.
//!
//! The seams, each a trait held as `Arc<dyn …>`: `audit::sink::AuditSink` (where records go;
//! the signed file, `FileSink`, or the state database's chain, `state::chain::PgSink`),
//! `approval::pending::ApprovalStore` (pending approvals: `approval::memory::MemoryStore` in one
//! process, `state::store::PgStore` shared by replicas), `approval::surface::ReviewSurface` (where a person
//! decides), and `server::Identify` (who is calling, per call; stdio: the operator's
//! `--principal`). A transport is a file in `serve/` (`serve/stdio.rs`); the `requestState`
//! sealing key and each session's id come to it from `main`.
//!
//! A new tool touches: a `Tool` variant in `call.rs` (its name and whether it is guarded; policy
//! files, `pgwarden check --tool` and the card link follow from it); its arguments, output and
//! text in `tools/<name>.rs` with its variant in `tools::ToolCall`/`ToolOutput` (`tools/mod.rs`);
//! its `Step` (assess, review, execute) in `pipeline/<name>.rs` with its arm in `Pipeline::run`;
//! its `#[tool]` handler in `server.rs`, which only builds the `ToolCall`; and what it runs in
//! `db/`. The compiler asks for every match arm; `pgwarden_await` replays a stored call through
//! the same `Pipeline::run`, so nothing else changes.
//!
//! A new review surface touches: a `Surface` variant in `call.rs` (its id, used in policy files,
//! audit records and what the model is told, and its level); one file implementing
//! `ReviewSurface` (announce, withdraw, where the person finds it), which decides through
//! `ApprovalStore::decide` with its `Reviewer { surface, identity, attested_by }`; and one
//! registration line in `main.rs` (`approvals.register(…)`).

#![forbid(unsafe_code)]

pub mod approval;
pub mod audit;
pub mod auth;
pub mod call;
pub mod channels;
pub mod check;
pub mod classify;
pub mod config;
pub mod console;
pub mod contain;
pub mod db;
pub mod demo;
pub mod dirs;
pub mod export_path;
pub mod grant;
pub mod pipeline;
pub mod policy;
pub mod serve;
pub mod server;
pub mod state;
pub mod team;
pub mod text;
pub mod tools;
pub mod trail;
pub mod transport;
pub mod units;

pub use server::PgWarden;
