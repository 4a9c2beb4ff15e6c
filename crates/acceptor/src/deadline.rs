//! Handshake deadlines that share timers.
//!
//! Every new async-io timer wakes the reactor thread to register it. With a
//! timer per handshake that is a wake-up per connection, which a busy server
//! pays for in throughput. Deadlines are instead rounded up to a coarse grain
//! (a thirty-second of the timeout, at most 250 ms) and every handshake in
//! the same grain waits on one shared timer: a wake-up per grain.
//!
//! ```text
//!  Deadlines ── newest: ArcSwapOption<Grain> ──► Grain { number, fired, waiting, timer }
//!                                                   ▲            ▲
//!  Deadline (one per handshake) ── Arc<Grain> ──────┘            │ woken through a Weak
//!                                                   async-io Timer (in the reactor)
//! ```
//!
//! - The newest grain sits in an `ArcSwapOption`, so starting a deadline is
//!   a clock read and an atomic load: no lock, no allocation. Two accepts
//!   that open the same new grain at once may each make one; the last one
//!   stored is shared from then on, and the other serves its own handshake.
//! - A grain's timer is registered with the reactor once, when the grain is
//!   made, with a waker that holds the grain weakly; when it fires, the
//!   grain sets `fired` and wakes every handshake waiting on it. Once the
//!   last handshake and `Deadlines` let go of the grain, its timer goes too.
//! - `waiting` (a mutex, held for a few lines, no user code under it) keeps
//!   the waker of each handshake that waits, in a slot it reuses. A
//!   handshake takes a slot on its first pending poll, keeps a copy of the
//!   waker it left so later polls compare without locking, and gives the
//!   slot back when dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_io::Timer;
use futures::task::ArcWake;
use futures::FutureExt;

#[derive(Debug)]
pub(crate) struct Deadlines {
    /// The timeout in nanoseconds.
    timeout_ns: u64,
    /// The grain in nanoseconds (at least a millisecond).
    grain_ns: u64,
    origin: Instant,
    /// The newest grain.
    newest: ArcSwapOption<Grain>,
}

impl Deadlines {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout_ns: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
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

    /// A deadline that passes between `timeout` and `timeout` plus one grain
    /// from now; `None` when that is too far to represent.
    pub(crate) fn start(&self) -> Option<Deadline> {
        // Integer grains since `origin` (no 128-bit division on the accept
        // path); the instant is only made for a new grain.
        let now = Instant::now().saturating_duration_since(self.origin);
        let since = now
            .as_secs()
            .checked_mul(1_000_000_000)?
            .checked_add(u64::from(now.subsec_nanos()))?
            .checked_add(self.timeout_ns)?;
        let number = since.div_ceil(self.grain_ns);
        if let Some(newest) = &*self.newest.load() {
            if newest.number == number {
                return Some(Deadline::new(newest.clone()));
            }
        }
        let when = self
            .origin
            .checked_add(Duration::from_nanos(number.checked_mul(self.grain_ns)?))?;
        let grain = Grain::start(number, when);
        self.newest.store(Some(grain.clone()));
        Some(Deadline::new(grain))
    }
}

/// The handshakes whose deadlines end at one instant, and the timer that
/// tells them.
#[derive(Debug)]
struct Grain {
    number: u64,
    fired: AtomicBool,
    waiting: Mutex<Waiting>,
    /// Registered with the reactor at start; kept so it stays registered.
    timer: Mutex<Option<Timer>>,
}

#[derive(Debug, Default)]
struct Waiting {
    wakers: Vec<Option<Waker>>,
    /// Slots of `wakers` given back, to take before growing it.
    free: Vec<usize>,
}

impl Grain {
    fn start(number: u64, when: Instant) -> Arc<Self> {
        let grain = Arc::new(Self {
            number,
            fired: AtomicBool::new(false),
            waiting: Mutex::default(),
            timer: Mutex::new(None),
        });
        // Polled once to register it; it fires at `when` and calls `Ring`.
        let ring = futures::task::waker(Arc::new(Ring(Arc::downgrade(&grain))));
        let mut timer = Timer::at(when);
        if timer.poll_unpin(&mut Context::from_waker(&ring)).is_ready() {
            grain.fire();
        } else {
            *lock(&grain.timer) = Some(timer);
        }
        grain
    }

    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *lock(&self.waiting));
        // Woken outside the lock.
        for waker in wakers.wakers.into_iter().flatten() {
            waker.wake();
        }
        *lock(&self.timer) = None;
    }
}

/// The waker the grain's timer calls: it holds the grain weakly, so a grain
/// nobody waits on any more is dropped with its timer.
struct Ring(Weak<Grain>);

impl ArcWake for Ring {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if let Some(grain) = arc_self.0.upgrade() {
            grain.fire();
        }
    }
}

/// One handshake's deadline: ready once its grain's timer fired.
#[derive(Debug)]
pub(crate) struct Deadline {
    grain: Arc<Grain>,
    /// The slot this handshake's waker is in, and a copy of that waker.
    slot: Option<(usize, Waker)>,
}

impl Deadline {
    fn new(grain: Arc<Grain>) -> Self {
        Self { grain, slot: None }
    }

    /// Ready once the deadline passed; until then, the task is woken when
    /// it does.
    pub(crate) fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.grain.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        match &self.slot {
            Some((_, waker)) if waker.will_wake(cx.waker()) => return Poll::Pending,
            _ => {}
        }
        let waker = cx.waker().clone();
        {
            let mut waiting = lock(&self.grain.waiting);
            let waiting = &mut *waiting;
            match self.slot.as_ref().map(|(slot, _)| *slot) {
                // The grain fired and took the slots: the check below sees it.
                Some(slot) if slot >= waiting.wakers.len() => {}
                Some(slot) => waiting.wakers[slot] = Some(waker.clone()),
                None => {
                    let slot = match waiting.free.pop() {
                        Some(slot) => {
                            waiting.wakers[slot] = Some(waker.clone());
                            slot
                        }
                        None => {
                            waiting.wakers.push(Some(waker.clone()));
                            waiting.wakers.len() - 1
                        }
                    };
                    self.slot = Some((slot, waker));
                }
            }
        }
        // A fire between the first check and the registration took the
        // wakers before this one was in: look again.
        if self.grain.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let Some((slot, _)) = self.slot.take() else {
            return;
        };
        // A grain that fired has handed its slots out already.
        if self.grain.fired.load(Ordering::Acquire) {
            return;
        }
        let mut waiting = lock(&self.grain.waiting);
        if let Some(waker) = waiting.wakers.get_mut(slot) {
            *waker = None;
            waiting.free.push(slot);
        }
    }
}

/// Nothing under these locks panics; a poisoned one still holds consistent
/// slots.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    fn passed(deadline: &mut Deadline) -> Instant {
        futures::executor::block_on(poll_fn(|cx| deadline.poll_passed(cx)));
        Instant::now()
    }

    #[test]
    fn handshakes_in_one_grain_share_a_timer_that_fires_after_the_timeout() {
        let deadlines = Deadlines::new(Duration::from_millis(320));
        let started = Instant::now();
        let mut first = deadlines.start().expect("a deadline");
        let mut second = deadlines.start().expect("a deadline");
        assert!(Arc::ptr_eq(&first.grain, &second.grain), "one shared grain");
        let fired = passed(&mut first);
        assert!(second.grain.fired.load(Ordering::Acquire), "fired for both");
        passed(&mut second);
        let waited = fired.duration_since(started);
        assert!(waited >= Duration::from_millis(320), "{waited:?}");
        assert!(waited < Duration::from_millis(320 + 10 + 500), "{waited:?}");
        // A later grain gets a timer of its own.
        let mut next = deadlines.start().expect("a deadline");
        assert!(!Arc::ptr_eq(&next.grain, &first.grain));
        assert!(passed(&mut next) > fired);
    }

    #[test]
    fn a_dropped_handshake_gives_its_slot_back_and_a_grain_nobody_holds_goes() {
        let deadlines = Deadlines::new(Duration::from_secs(3600));
        let noop = futures::task::noop_waker();
        let mut cx = Context::from_waker(&noop);
        let mut first = deadlines.start().expect("a deadline");
        assert!(first.poll_passed(&mut cx).is_pending());
        assert!(
            first.poll_passed(&mut cx).is_pending(),
            "same waker: no new slot"
        );
        drop(first);
        for _ in 0..10 {
            let mut next = deadlines.start().expect("a deadline");
            assert!(next.poll_passed(&mut cx).is_pending());
        }
        let grain = deadlines.newest.load_full().expect("a grain");
        assert_eq!(lock(&grain.waiting).wakers.len(), 1, "the slot was reused");
        let weak = Arc::downgrade(&grain);
        drop((grain, deadlines));
        assert!(
            weak.upgrade().is_none(),
            "no cycle through the timer's waker"
        );
    }

    #[test]
    fn a_timeout_too_long_to_represent_is_no_deadline() {
        assert!(Deadlines::new(Duration::MAX).start().is_none());
    }
}
