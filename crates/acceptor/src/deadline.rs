//! Handshake deadlines that share timers.
//!
//! Every new async-io timer wakes the reactor thread to register it. With a
//! timer per handshake that is a wake-up per connection, which a busy server
//! pays for in throughput. Deadlines are instead rounded up to a coarse grain
//! (a thirty-second of the timeout, at most 250 ms) and every handshake in
//! the same grain waits on one shared timer: a wake-up per grain.
//!
//! ```text
//!  Deadlines ── newest: ArcSwapOption<Grain> ──► Grain { end_ns, fired, waiting, timer }
//!                                                   ▲            ▲
//!  Deadline (one per handshake) ── Arc<Grain> ──────┘            │ woken through a Weak
//!                                                   async-io Timer (in the reactor)
//! ```
//!
//! - The newest grain sits in an `ArcSwapOption`, so starting a deadline is
//!   a clock read, an atomic load and a comparison: no lock, no allocation,
//!   no division. Two accepts
//!   that open the same new grain at once may each make one; the last one
//!   stored is shared from then on, and the other serves its own handshake.
//! - A grain's timer is registered with the reactor once, when the grain is
//!   made, with a waker that holds the grain weakly; when it fires, the
//!   grain sets `fired` and wakes every handshake waiting on it. Once the
//!   last handshake and `Deadlines` let go of the grain, its timer goes too.
//! - `waiting` (a mutex, held for a few lines, no user code under it) keeps
//!   the waker of each handshake that waits, in a slot it reuses. A
//!   handshake takes a slot on its first pending poll, keeps which waker it
//!   left (its pointers, not a clone) so later polls compare without
//!   locking, and gives the slot back when dropped.

use std::io;
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
    wait_ns: u64,
    /// The grain in nanoseconds (at least a millisecond).
    grain_ns: u64,
    clock: Clock,
    /// The newest grain.
    newest: ArcSwapOption<Grain>,
}

impl Deadlines {
    pub(crate) fn new(timeout: Duration) -> Self {
        let clock = Clock::new();
        Self {
            wait_ns: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            grain_ns: u64::try_from(
                (timeout / 32)
                    .clamp(Duration::from_millis(1), Duration::from_millis(250))
                    .as_nanos(),
            )
            .unwrap_or(1_000_000),
            clock,
            newest: ArcSwapOption::empty(),
        }
    }

    /// A deadline that passes between `timeout` and `timeout` plus one grain
    /// from now; `None` when that is too far to represent.
    #[inline]
    pub(crate) fn start(&self) -> Option<Deadline> {
        // A clock read, an addition and a comparison (no division): the
        // newest grain serves every handshake whose earliest end it does not
        // precede.
        let due = self.due_ns()?;
        if let Some(newest) = &*self.newest.load() {
            if due <= newest.end_ns {
                return Some(Deadline::new(newest.clone()));
            }
        }
        self.start_grain(due)
    }

    /// The earliest a deadline starting now may pass, in nanoseconds since
    /// the clock's origin; `None` when too far to represent.
    #[inline]
    fn due_ns(&self) -> Option<u64> {
        self.clock.elapsed_ns().checked_add(self.wait_ns)
    }

    /// The end of the grain `due_ns` falls in: in nanoseconds since the
    /// clock's origin, and as an instant.
    fn grain_end(&self, due_ns: u64) -> Option<(u64, Instant)> {
        let end_ns = due_ns.div_ceil(self.grain_ns).checked_mul(self.grain_ns)?;
        let when = self
            .clock
            .origin
            .checked_add(Duration::from_nanos(end_ns))?;
        Some((end_ns, when))
    }

    /// Opens the grain that `due` falls in, once per grain.
    #[cold]
    fn start_grain(&self, due: u64) -> Option<Deadline> {
        let (end_ns, when) = self.grain_end(due)?;
        let grain = Grain::start(end_ns, when);
        self.newest.store(Some(grain.clone()));
        Some(Deadline::new(grain))
    }
}

/// Nanoseconds since an origin, from `Instant`. (Linux's coarse clock is
/// five times cheaper to read, but it lags: up to 11 ms against its 4 ms
/// tick on this project's VM under load, so a deadline could end early.)
#[derive(Debug)]
struct Clock {
    origin: Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since `origin`; saturates at `u64::MAX` (some five
    /// centuries).
    #[inline]
    fn elapsed_ns(&self) -> u64 {
        let since = Instant::now().saturating_duration_since(self.origin);
        since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()))
    }
}

/// The handshakes whose deadlines end at one instant, and the timer that
/// tells them.
#[derive(Debug)]
struct Grain {
    /// When its handshakes' deadlines pass, in nanoseconds since the
    /// clock's origin.
    end_ns: u64,
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
    fn start(end_ns: u64, when: Instant) -> Arc<Self> {
        let grain = Arc::new(Self {
            end_ns,
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
    /// The slot this handshake's waker is in, and which waker that is.
    slot: Option<(usize, WakerId)>,
}

/// Which waker a slot holds: what [`Waker::will_wake`] compares (its data
/// and vtable pointers), kept as addresses, so that a later poll with the
/// same waker neither locks nor clones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WakerId(usize, usize);

impl WakerId {
    fn of(waker: &Waker) -> Self {
        Self(
            waker.data() as usize,
            std::ptr::from_ref(waker.vtable()) as usize,
        )
    }
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
        let id = WakerId::of(cx.waker());
        match self.slot {
            Some((_, left)) if left == id => return Poll::Pending,
            _ => {}
        }
        let waker = cx.waker().clone();
        {
            let mut waiting = lock(&self.grain.waiting);
            let waiting = &mut *waiting;
            match self.slot {
                // The grain fired and took the slots: the check below sees it.
                Some((slot, _)) if slot >= waiting.wakers.len() => {}
                Some((slot, _)) => waiting.wakers[slot] = Some(waker),
                None => {
                    let slot = match waiting.free.pop() {
                        Some(slot) => {
                            waiting.wakers[slot] = Some(waker);
                            slot
                        }
                        None => {
                            waiting.wakers.push(Some(waker));
                            waiting.wakers.len() - 1
                        }
                    };
                    self.slot = Some((slot, id));
                }
            }
        }
        if let Some((_, left)) = &mut self.slot {
            *left = id;
        }
        // A fire between the first check and the registration took the
        // wakers before this one was in: look again.
        if self.grain.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The error of a handshake whose `deadline` passed, once it has (never,
/// without one); until then, the task is woken when it does.
pub(crate) fn timed_out(deadline: &mut Option<Deadline>, cx: &mut Context<'_>) -> Poll<io::Error> {
    match deadline {
        Some(deadline) => deadline
            .poll_passed(cx)
            .map(|()| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
        None => Poll::Pending,
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
