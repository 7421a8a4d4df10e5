//! A panic inside one tool call ends that call, not the server: it becomes an opaque internal-error
//! result for the model and a log line (with the panic message) for the operator.
//!
//! rmcp runs each request in its own tokio task, so without this a panic would not abort the
//! process, but the call would never be answered. A stack overflow is an abort, not a panic, and
//! cannot be caught: `classify::bounded` keeps SQL trees shallow enough that it cannot happen.

use std::{any::Any, future::Future, panic::AssertUnwindSafe};

use futures_util::FutureExt;
use rmcp::model::{CallToolResult, ContentBlock};

/// What the model is told; the details are only in the operator's log.
pub const INTERNAL_ERROR: &str = "internal error: pgwarden failed while handling this call and abandoned it; \
     whether it ran is unknown, so check before retrying. The operator's log has the details.";

/// Runs `call`; a panic inside it becomes `on_panic(message)`.
///
/// `AssertUnwindSafe` is sound here: the panicking call's own state is dropped, and state shared
/// with other calls sits behind locks that poison or behind async primitives that stay consistent.
pub async fn contain<T>(tool: &str, call: impl Future<Output = T>, on_panic: impl FnOnce() -> T) -> T {
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(out) => out,
        Err(panic) => {
            tracing::error!(tool, "a tool call panicked and was abandoned: {}", message(&*panic));
            on_panic()
        }
    }
}

/// The opaque tool result for a call that panicked.
pub fn internal_error() -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(INTERNAL_ERROR)])
}

fn message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_call_becomes_the_fallback_and_the_next_call_runs() {
        let out = contain("query", async { panic!("boom at {}", 1) }, || "fallback").await;
        assert_eq!(out, "fallback");
        let out = contain("query", async { "answer" }, || "fallback").await;
        assert_eq!(out, "answer");
    }

    #[test]
    fn the_logged_message_is_the_panic_text() {
        let caught = std::panic::catch_unwind(|| panic!("with {}", "args")).expect_err("panics");
        assert_eq!(message(&*caught), "with args");
        let caught = std::panic::catch_unwind(|| panic!("static")).expect_err("panics");
        assert_eq!(message(&*caught), "static");
    }
}
