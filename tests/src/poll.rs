//! The one way tests wait: look at a condition every few milliseconds until it holds or
//! a deadline passes, and say in the error what was awaited and what was seen last.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Time between two looks: short beside every deadline, long enough not to busy-spin.
const INTERVAL: Duration = Duration::from_millis(20);

/// Calls `check` until it returns `Ok`, for at most `timeout`. `Err(seen)` means "not
/// yet"; the last `seen` and `what` (the awaited condition, as a phrase) make the
/// timeout's error. Blocks the thread between looks.
pub fn poll_until<T, E: Debug>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, E>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(seen) if start.elapsed() >= timeout => return Err(timed_out(timeout, what, seen)),
            Err(_) => std::thread::sleep(INTERVAL),
        }
    }
}

/// [`poll_until`] for checks that await, sleeping on the tokio timer between looks.
pub async fn poll_until_async<T, E: Debug>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(seen) if start.elapsed() >= timeout => return Err(timed_out(timeout, what, seen)),
            Err(_) => tokio::time::sleep(INTERVAL).await,
        }
    }
}

fn timed_out(timeout: Duration, what: &str, seen: impl Debug) -> anyhow::Error {
    anyhow::anyhow!("timed out after {timeout:?} waiting until {what}; last seen: {seen:?}")
}
