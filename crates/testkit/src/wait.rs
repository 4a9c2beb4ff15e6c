//! Deadlines: every wait in a test is bounded.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures::future::{self, Either};

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How often the `wait_until` functions look.
const POLL: Duration = Duration::from_millis(10);

/// Polls `condition` every 10 ms until it holds (true) or `deadline` passes
/// (false). Never sleeps longer than it must.
pub async fn wait_until<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        Timer::after(POLL).await;
    }
}

/// [`wait_until`] for a plain thread: polls every 10 ms.
pub fn wait_until_blocking(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// `future`, or a `TimedOut` error after `limit`.
pub async fn timeout<T>(
    limit: Duration,
    future: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    futures::pin_mut!(future);
    match future::select(future, Timer::after(limit)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
    }
}
