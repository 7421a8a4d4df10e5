//! Serving MCP sessions: one file per transport. Each builds the handler (`server::PgWarden`) of a
//! session with what the session needs — its id, the `requestState` sealing key (made by `main`,
//! shared by every session) and how calls are identified — and runs it until it ends. `stdio` is
//! today's transport; a second one adds a file here.

pub mod http;
pub mod stdio;
