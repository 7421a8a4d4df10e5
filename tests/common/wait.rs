//! Waiting for what a test expects to happen, rather than sleeping for a guess at how long it
//! takes: poll a condition until it holds, with a deadline that fails the test.

use std::time::{Duration, Instant};

/// The first pause between two looks; it doubles up to [`SLOWEST`], so a quick event is seen at
/// once and a slow one is not polled hard (some checks make a tool call or read the audit trail).
const FIRST: Duration = Duration::from_millis(10);
const SLOWEST: Duration = Duration::from_millis(200);

/// Polls `check` until it returns `Some` and returns that; fails the test, naming `what` it waited
/// for, when `within` passes first.
pub async fn eventually<T>(within: Duration, what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    match poll(within, check).await {
        Some(found) => found,
        None => panic!("waited {within:?} for {what}"),
    }
}

/// Polls `check` until it returns `Some` and returns that, or `None` once `within` passed first
/// (for a test that says more than [`eventually`] when it gives up).
pub async fn poll<T>(within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    let mut pause = FIRST;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(SLOWEST);
    }
}

/// [`eventually`] for a test without a runtime: blocks this thread between looks.
pub fn eventually_blocking<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    let mut pause = FIRST;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(SLOWEST);
    }
}
