//! Handshake deadlines that share timers.
//!
//! Every new async-io timer wakes the reactor thread to register it. With a
//! timer per handshake that is a wake-up per connection, which a busy server
//! pays for in throughput. Deadlines are instead rounded up to a coarse grain
//! (a thirty-second of the timeout, at most 250 ms) and every handshake in
//! the same grain waits on one shared timer: a wake-up per grain.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures::future::{FutureExt, Shared};

/// The timer a handshake waits on: fires at or a little after its deadline.
pub(crate) type Deadline = Shared<Timer>;

#[derive(Debug)]
pub(crate) struct Deadlines {
    timeout: Duration,
    grain: Duration,
    origin: Instant,
    /// Timers by the instant they fire, oldest first.
    timers: Mutex<VecDeque<(Instant, Deadline)>>,
}

impl Deadlines {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            grain: (timeout / 32).clamp(Duration::from_millis(1), Duration::from_millis(250)),
            origin: Instant::now(),
            timers: Mutex::new(VecDeque::new()),
        }
    }

    /// A timer that fires between `timeout` and `timeout` plus one grain from
    /// now; `None` when that is too far to represent.
    pub(crate) fn start(&self) -> Option<Deadline> {
        let mut timers = self.timers.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken under the lock, so instants only grow along the queue.
        let now = Instant::now();
        let exact = now.checked_add(self.timeout)?;
        let grains = (exact - self.origin)
            .as_nanos()
            .div_ceil(self.grain.as_nanos());
        let when = self
            .origin
            .checked_add(self.grain.checked_mul(u32::try_from(grains).ok()?)?)?;
        while timers.front().is_some_and(|(at, _)| *at <= now) {
            timers.pop_front();
        }
        if let Some((at, timer)) = timers.back() {
            if *at == when {
                return Some(timer.clone());
            }
        }
        let timer = Timer::at(when).shared();
        timers.push_back((when, timer.clone()));
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
        assert_eq!(
            deadlines.timers.lock().expect("lock").len(),
            1,
            "one shared timer"
        );
        let fired = futures::executor::block_on(first);
        futures::executor::block_on(second);
        let waited = fired.duration_since(started);
        assert!(waited >= Duration::from_millis(320), "{waited:?}");
        assert!(waited < Duration::from_millis(320 + 10 + 500), "{waited:?}");
        // Expired timers are dropped when the next deadline starts.
        let _next = deadlines.start().expect("a deadline");
        assert_eq!(deadlines.timers.lock().expect("lock").len(), 1);
    }

    #[test]
    fn a_timeout_too_long_to_represent_is_no_deadline() {
        assert!(Deadlines::new(Duration::MAX).start().is_none());
    }
}
