//! Other replicas' changes, heard through `LISTEN pgwarden_approvals`.

use std::time::Duration;

use super::PgStore;
use crate::state::CHANNEL;

/// Follows other replicas' changes (LISTEN) into `generation`, reconnecting when the connection
/// drops; every reconnect bumps it too, so waiters look again.
pub(super) async fn listen(store: std::sync::Weak<PgStore>) {
    use futures_util::StreamExt;
    loop {
        let Some(target) = store.upgrade().map(|s| s.db.target.clone()) else {
            return;
        };
        let connected = target.config.connect(target.tls.clone()).await;
        match connected {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async {
                    client.execute(&format!("LISTEN {CHANNEL}"), &[]).await?;
                    Ok::<_, tokio_postgres::Error>(())
                };
                // The connection must be polled for the LISTEN to complete.
                let mut listening = std::pin::pin!(listening);
                let ok = loop {
                    tokio::select! {
                        r = &mut listening => break r.is_ok(),
                        m = messages.next() => if !matches!(m, Some(Ok(_))) { break false },
                    }
                };
                if ok {
                    if let Some(s) = store.upgrade() {
                        s.generation.send_modify(|g| *g += 1);
                    }
                    while let Some(m) = messages.next().await {
                        let Some(s) = store.upgrade() else { return };
                        match m {
                            Ok(tokio_postgres::AsyncMessage::Notification(_)) => s.generation.send_modify(|g| *g += 1),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!("state database: the LISTEN connection failed ({e}); reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("state database: cannot LISTEN ({e}); retrying"),
        }
        if let Some(s) = store.upgrade() {
            s.generation.send_modify(|g| *g += 1);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
