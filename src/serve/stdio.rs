//! One MCP session over stdin/stdout: the guarded pipes (`transport`), the handler, and a clean end
//! — the client closing stdin (the last answers still reach stdout) or a signal. The principal of
//! every call is the operator's `--principal`, vouched for by whoever started the process.

use std::{future::Future, sync::Arc, time::Duration};

use rmcp::ServiceExt;

use crate::{
    audit::AuditLog,
    pipeline::Databases,
    server::{PgWarden, Session},
};

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("starting the MCP session: {0}")]
    Start(String),
    #[error("MCP session: {0}")]
    Session(String),
}

/// Serves `pipeline` over stdio as `session` until the client leaves or `shutdown` completes.
pub async fn serve(
    pipeline: Arc<Databases>,
    session: Session,
    audit: Arc<AuditLog>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StdioError> {
    let (pipes, written) = crate::transport::stdio(audit);
    let service = PgWarden::new(pipeline, session)
        .serve(pipes)
        .await
        .map_err(|e| StdioError::Start(e.to_string()))?;
    let cancel = service.cancellation_token();
    tokio::select! {
        r = service.waiting() => {
            // The client closed stdin: let the last answers reach stdout before exiting.
            let _ = tokio::time::timeout(Duration::from_secs(2), written).await;
            r.map(|_| ()).map_err(|e| StdioError::Session(e.to_string()))
        }
        _ = shutdown => {
            tracing::info!("shutting down on signal");
            cancel.cancel();
            Ok(())
        }
    }
}
