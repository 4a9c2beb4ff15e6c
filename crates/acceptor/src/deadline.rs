//! Handshake deadlines that share timers.
//!
//! Every new async-io timer wakes the reactor thread to register it. With a
//! timer per handshake that is a wake-up per connection, which a busy server
//! pays for in throughput. Deadlines are instead rounded up to a coarse grain
//! (a thirty-second of the timeout, at most 250 ms) and every handshake in
//! the same grain waits on one shared timer: a wake-up per grain.
//!
//! The newest timer sits in an `ArcSwapOption`, so starting a deadline takes
//! no lock: the accept path stays lock-free. Two accepts that open the same
//! new grain at once may each make a timer; the last one stored is shared
//! from then on, and the other simply fires for its own handshake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_io::Timer;
use futures::future::{FutureExt, Shared};

/// The timer a handshake waits on: fires at or a little after its deadline.
pub(crate) type Deadline = Shared<Timer>;

#[derive(Debug)]
pub(crate) struct Deadlines {
    timeout: Duration,
    /// The grain in nanoseconds (at least a millisecond).
    grain_ns: u64,
    origin: Instant,
    /// The newest timer and the grain it fires at (grains since `origin`).
    newest: ArcSwapOption<(u64, Deadline)>,
}

impl Deadlines {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            grain_ns: u64::try_from(
                (timeout / 32)
                    .clamp(Duration::from_millis(1), Duration::from_millis(250))
                    .as_nanos(),
            )
            .unwrap_or(1_000_000),
            origin: Instant::now(),
            newest: ArcSwapOption::empty(),
        }
    }

    /// A timer that fires between `timeout` and `timeout` plus one grain from
    /// now; `None` when that is too far to represent.
    pub(crate) fn start(&self) -> Option<Deadline> {
        // Integer grains since `origin` (no 128-bit division on the accept
        // path); the instant is only made for a new timer.
        let exact = Instant::now().checked_add(self.timeout)? - self.origin;
        let since = exact
            .as_secs()
            .checked_mul(1_000_000_000)?
            .checked_add(u64::from(exact.subsec_nanos()))?;
        let grain = since.div_ceil(self.grain_ns);
        if let Some(newest) = &*self.newest.load() {
            if newest.0 == grain {
                return Some(newest.1.clone());
            }
        }
        let when = self
            .origin
            .checked_add(Duration::from_nanos(grain.checked_mul(self.grain_ns)?))?;
        let timer = Timer::at(when).shared();
        self.newest.store(Some(Arc::new((grain, timer.clone()))));
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_in_one_grain_share_a_timer_that_fires_after_the_timeout() {
        let deadlines = Deadlines::new(Duration::from_millis(320));
        let started = Instant::now();
        let first = deadlines.start().expect("a deadline");
        let second = deadlines.start().expect("a deadline");
        let fired = futures::executor::block_on(first);
        // The same timer: it fired at the same instant.
        assert_eq!(
            futures::executor::block_on(second),
            fired,
            "one shared timer"
        );
        let waited = fired.duration_since(started);
        assert!(waited >= Duration::from_millis(320), "{waited:?}");
        assert!(waited < Duration::from_millis(320 + 10 + 500), "{waited:?}");
        // A later grain gets a timer of its own.
        let next = deadlines.start().expect("a deadline");
        assert!(futures::executor::block_on(next) > fired);
    }

    #[test]
    fn a_timeout_too_long_to_represent_is_no_deadline() {
        assert!(Deadlines::new(Duration::MAX).start().is_none());
    }
}
