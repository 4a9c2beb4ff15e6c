//! Handshake deadlines that share timers.
//!
//! Every new async-io timer wakes the reactor thread to register it. With a
//! timer per handshake that is a wake-up per connection, which a busy server
//! pays for in throughput. Handshakes are instead grouped in grains (a
//! thirty-second of the timeout, at most 250 ms long) and every handshake of
//! a grain waits on one shared timer: two timers per grain, none per
//! handshake, and no clock read on the accept path.
//!
//! ```text
//!  Deadlines ── newest: ArcSwapOption<Grain> ──► Grain { open, fired, waiting, timeout, timer }
//!                                                   ▲            ▲
//!  Deadline (one per handshake) ── Arc<Grain> ──────┘            │ woken through a Weak
//!                                                   async-io Timer (in the reactor)
//! ```
//!
//! - A grain is **open** from when an accept makes it until its first timer
//!   closes it, a grain later. Starting a deadline is an atomic load of the
//!   newest grain and of its `open` flag, and an `Arc` clone: no clock read,
//!   no lock, no allocation. An accept that finds no open grain makes one
//!   (the only clock read); two that do so at once may each make one, and
//!   the last one stored is shared from then on.
//! - When the closing timer fires, the grain clears `open` (a sequentially
//!   consistent swap: no accept can join after it), reads the clock, and
//!   registers its second timer a timeout after that moment. Every
//!   handshake of the grain started before the grain closed, so none ends
//!   before its timeout, however late the closing timer fires; and none
//!   waits more than the timeout plus the grain plus that lateness.
//! - Both timers hold the grain weakly; when the second fires, the grain
//!   sets `fired` and wakes every handshake waiting on it. Once the last
//!   handshake and `Deadlines` let go of the grain, its timer goes too.
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
    timeout: Duration,
    /// How long a grain stays open (at least a millisecond).
    grain: Duration,
    /// The newest grain.
    newest: ArcSwapOption<Grain>,
}

impl Deadlines {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            grain: (timeout / 32).clamp(Duration::from_millis(1), Duration::from_millis(250)),
            newest: ArcSwapOption::empty(),
        }
    }

    /// A deadline that passes between `timeout` and `timeout` plus one grain
    /// (plus however late the reactor runs its timers) from now; `None` when
    /// that is too far to represent.
    #[inline]
    pub(crate) fn start(&self) -> Option<Deadline> {
        if let Some(newest) = &*self.newest.load() {
            if newest.open.load(Ordering::Acquire) {
                return Some(Deadline::new(newest.clone()));
            }
        }
        self.open_grain()
    }

    /// Opens a grain, once per grain.
    #[cold]
    fn open_grain(&self) -> Option<Deadline> {
        let now = Instant::now();
        // The deadline must be representable from the grain's end.
        now.checked_add(self.grain)?.checked_add(self.timeout)?;
        let grain = Grain::open(now + self.grain, self.timeout);
        self.newest.store(Some(grain.clone()));
        Some(Deadline::new(grain))
    }
}

/// The handshakes that started while it was open, and the timers that close
/// it and then tell them their time is up.
#[derive(Debug)]
struct Grain {
    /// Accepts may still join it.
    open: AtomicBool,
    fired: AtomicBool,
    waiting: Mutex<Waiting>,
    timeout: Duration,
    /// The timer pending (closing, then firing), kept so it stays
    /// registered.
    timer: Mutex<Option<Timer>>,
}

#[derive(Debug, Default)]
struct Waiting {
    wakers: Vec<Option<Waker>>,
    /// Slots of `wakers` given back, to take before growing it.
    free: Vec<usize>,
}

impl Grain {
    /// A grain open until `close_at`.
    fn open(close_at: Instant, timeout: Duration) -> Arc<Self> {
        let grain = Arc::new(Self {
            open: AtomicBool::new(true),
            fired: AtomicBool::new(false),
            waiting: Mutex::default(),
            timeout,
            timer: Mutex::new(None),
        });
        grain.arm(close_at, Step::Close);
        grain
    }

    /// Registers the timer for `step` at `when` (polled once, with a waker
    /// that holds the grain weakly), or takes the step now if it is due.
    fn arm(self: &Arc<Self>, when: Instant, step: Step) {
        let waker = futures::task::waker(Arc::new(Ring {
            grain: Arc::downgrade(self),
            step,
        }));
        let mut timer = Timer::at(when);
        if timer
            .poll_unpin(&mut Context::from_waker(&waker))
            .is_ready()
        {
            self.take(step);
            return;
        }
        #[cfg(test)]
        tests::stall_after_poll(self, step);
        let mut slot = lock(&self.timer);
        // The timer may have fired already, on the reactor's thread, between
        // the poll and the lock (a thread descheduled that long): its step is
        // then taken, and the slot may hold the next step's timer, which must
        // stay registered.
        let taken = match step {
            Step::Close => !self.open.load(Ordering::SeqCst),
            Step::Fire => self.fired.load(Ordering::Acquire),
        };
        let dropped = if taken {
            Some(timer)
        } else {
            slot.replace(timer)
        };
        drop(slot);
        // Dropped outside the lock: the spent timer, or the one replaced
        // (the timer that closed the grain).
        drop(dropped);
    }

    fn take(self: &Arc<Self>, step: Step) {
        match step {
            Step::Close => self.close(),
            Step::Fire => self.fire(),
        }
    }

    /// No accept joins from now on; the handshakes that did time out a
    /// timeout from now.
    fn close(self: &Arc<Self>) {
        // SeqCst: once the swap is done, no accept can still see the grain
        // open, so every handshake in it started before the clock read.
        if !self.open.swap(false, Ordering::SeqCst) {
            return;
        }
        match Instant::now().checked_add(self.timeout) {
            Some(when) => self.arm(when, Step::Fire),
            // Checked when the grain opened; unreachable in practice.
            None => drop(lock(&self.timer).take()),
        }
    }

    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *lock(&self.waiting));
        // Woken outside the lock.
        for waker in wakers.wakers.into_iter().flatten() {
            waker.wake();
        }
        let timer = lock(&self.timer).take();
        drop(timer);
    }
}

/// What a grain's timer does when it fires.
#[derive(Clone, Copy, Debug)]
enum Step {
    Close,
    Fire,
}

/// The waker a grain's timer calls: it holds the grain weakly, so a grain
/// nobody waits on any more is dropped with its timer.
struct Ring {
    grain: Weak<Grain>,
    step: Step,
}

impl ArcWake for Ring {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if let Some(grain) = arc_self.grain.upgrade() {
            grain.take(arc_self.step);
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
    #[inline]
    pub(crate) fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.grain.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let id = WakerId::of(cx.waker());
        match self.slot {
            Some((_, left)) if left == id => Poll::Pending,
            _ => self.wait(cx.waker(), id),
        }
    }

    /// Leaves `waker` in this handshake's slot (taking one on the first
    /// wait).
    fn wait(&mut self, waker: &Waker, id: WakerId) -> Poll<()> {
        let waker = Some(waker.clone());
        let mut waiting = lock(&self.grain.waiting);
        let (slot, replaced) = match self.slot {
            Some((slot, _)) => match waiting.wakers.get_mut(slot) {
                Some(left) => (slot, std::mem::replace(left, waker)),
                // The grain fired and took the slots: the check below sees
                // it.
                None => (slot, waker),
            },
            None => match waiting.free.pop() {
                Some(slot) if slot < waiting.wakers.len() => {
                    (slot, std::mem::replace(&mut waiting.wakers[slot], waker))
                }
                _ => {
                    waiting.wakers.push(waker);
                    (waiting.wakers.len() - 1, None)
                }
            },
        };
        drop(waiting);
        // Dropped outside the lock: the task it wakes may go with it.
        drop(replaced);
        self.slot = Some((slot, id));
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
#[inline]
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
        let left = match waiting.wakers.get_mut(slot) {
            Some(left) => left.take(),
            None => None,
        };
        if left.is_some() {
            waiting.free.push(slot);
        }
        drop(waiting);
        // Dropped outside the lock: the task it wakes may go with it.
        drop(left);
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

    thread_local! {
        /// Whether this thread, between registering a grain's closing timer
        /// and keeping it, waits until the timer has closed the grain.
        static STALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    pub(super) fn stall_after_poll(grain: &Grain, step: Step) {
        if matches!(step, Step::Close) && STALL.get() {
            let give_up = Instant::now() + Duration::from_secs(10);
            while grain.open.load(Ordering::SeqCst) && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn a_closing_timer_that_fires_before_it_is_kept_leaves_the_grain_armed() {
        // The thread opening the grain stalls after registering the closing
        // timer (due in 1.6 ms) until it has fired: the grain closes and
        // arms its firing timer (due 50 ms later) meanwhile, which the
        // stalled thread must not replace.
        STALL.set(true);
        let deadlines = Deadlines::new(Duration::from_millis(50));
        let started = Instant::now();
        let mut deadline = deadlines.start().expect("a deadline");
        STALL.set(false);
        assert!(
            !deadline.grain.open.load(Ordering::SeqCst),
            "closed while stalled"
        );
        let passed = futures::executor::block_on(async {
            let timeout = Timer::after(Duration::from_secs(10));
            let passed = poll_fn(|cx| deadline.poll_passed(cx));
            futures::pin_mut!(passed);
            matches!(
                futures::future::select(passed, timeout).await,
                futures::future::Either::Left(_)
            )
        });
        assert!(
            passed,
            "the grain never fired: its firing timer was dropped"
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

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
    fn no_deadline_passes_before_its_timeout_whichever_grain_it_joins() {
        // 1 ms grains: forty starts a quarter of a millisecond apart join a
        // dozen grains, early and late in each.
        let timeout = Duration::from_millis(20);
        let deadlines = Deadlines::new(timeout);
        let mut started = Vec::new();
        for _ in 0..40 {
            started.push((Instant::now(), deadlines.start().expect("a deadline")));
            std::thread::sleep(Duration::from_micros(250));
        }
        let grains = started
            .windows(2)
            .filter(|pair| !Arc::ptr_eq(&pair[0].1.grain, &pair[1].1.grain))
            .count();
        assert!(grains >= 2, "the starts span several grains ({grains})");
        let noop = futures::task::noop_waker();
        let mut cx = Context::from_waker(&noop);
        let mut passed: Vec<Option<Instant>> = vec![None; started.len()];
        let give_up = Instant::now() + Duration::from_secs(10);
        while passed.iter().any(Option::is_none) && Instant::now() < give_up {
            for ((_, deadline), passed) in started.iter_mut().zip(&mut passed) {
                if passed.is_none() && deadline.poll_passed(&mut cx).is_ready() {
                    *passed = Some(Instant::now());
                }
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        for ((start, _), passed) in started.iter().zip(&passed) {
            let waited = passed
                .expect("every deadline passes")
                .duration_since(*start);
            assert!(
                waited >= timeout,
                "passed after {waited:?}, before its timeout"
            );
        }
    }

    /// A waker whose last clone, dropped, drops a deadline: a task that
    /// goes with its waker drops the handshakes it held.
    struct Holder {
        _held: Deadline,
    }

    impl ArcWake for Holder {
        fn wake_by_ref(_: &Arc<Self>) {}
    }

    #[test]
    fn a_waker_whose_drop_drops_a_deadline_of_the_same_grain_does_not_deadlock() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let deadlines = Deadlines::new(Duration::from_secs(3600));
            let noop = futures::task::noop_waker();
            let mut noop_cx = Context::from_waker(&noop);
            let held = |deadlines: &Deadlines| {
                let noop = futures::task::noop_waker();
                let mut held = deadlines.start().expect("a deadline");
                assert!(held
                    .poll_passed(&mut Context::from_waker(&noop))
                    .is_pending());
                futures::task::waker(Arc::new(Holder { _held: held }))
            };
            // Replaced in its slot by a later poll's waker.
            let mut replaced = deadlines.start().expect("a deadline");
            let waker = held(&deadlines);
            assert!(replaced
                .poll_passed(&mut Context::from_waker(&waker))
                .is_pending());
            drop(waker);
            assert!(replaced.poll_passed(&mut noop_cx).is_pending());
            // Released from its slot when its handshake goes.
            let mut released = deadlines.start().expect("a deadline");
            let waker = held(&deadlines);
            assert!(released
                .poll_passed(&mut Context::from_waker(&waker))
                .is_pending());
            drop(waker);
            drop(released);
            let _ = done.send(());
        });
        assert!(
            finished.recv_timeout(Duration::from_secs(10)).is_ok(),
            "deadlocked: a waker was dropped under the grain's lock"
        );
    }

    #[test]
    fn a_timeout_too_long_to_represent_is_no_deadline() {
        assert!(Deadlines::new(Duration::MAX).start().is_none());
    }
}
