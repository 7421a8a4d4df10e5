//! pgwarden: an MCP server that lets LLM clients work with PostgreSQL while a human stays in
//! charge of every high-impact action.
//!
//! ```text
//! tools/call ──► tool handler ──► Action ──► classify ──► policy ──► approval ──► execute ──► result
//!  (rmcp)        (args → Action)   (what)    (risk)      (decide)   (human)     (Postgres)   (masked)
//!                                     └───────────── audit: a record at every step ─────────────┘
//! ```
//!
//! `server` owns the MCP surface, `pipeline` is the only place the steps meet, `classify` is pure,
//! and `db` is the only module that talks to Postgres.
//!
//! Layers, lowest first: call, units, text, dirs, contain, export_path, classify, policy, audit,
//! config, grant, db, approval, console, tools, trail, pipeline, server, transport, serve, check,
//! demo.
//! A module imports only from modules listed before it (and from itself); `tests/architecture.rs`
//! holds every `crate::` path in `src/` to this order. The binary, `main.rs`, stands above them all.
//!
//! Layout: `call` is the leaf the others build on — `Tool`, `Action`, `Caller`, `Principal`, using
//! nothing else in the crate — so `approval`, `policy`, `trail` and `server` name a call without
//! depending on `pipeline`. A new tool touches: a `Tool` variant in `call.rs` (its name and whether
//! it is guarded; policy files, `pgwarden check --tool` and the card link follow from it), its
//! arguments and output in `tools/<name>.rs`, its handler in `server.rs` (plus an arm in
//! `run_stored` when guarded, which the compiler asks for), its step in `pipeline/`, and what it
//! runs in `db/`.

#![forbid(unsafe_code)]

pub mod approval;
pub mod audit;
pub mod call;
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
pub mod text;
pub mod tools;
pub mod trail;
pub mod transport;
pub mod units;

pub use server::PgWarden;
