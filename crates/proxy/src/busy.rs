//! Busy-polling a connection that is alone on its worker, for a short,
//! adaptive window, before it parks in the poller.
//!
//! On a lone connection that echoes (a client that waits for each answer)
//! every round trip is a chain: the client's request wakes the proxy, the
//! proxy wakes the target, the target's answer wakes the proxy, the proxy
//! wakes the client. On a virtual machine each wake-up of a CPU that went
//! idle costs tens of microseconds before the woken thread runs (the
//! hypervisor has to bring the halted virtual CPU back), and the proxy paid
//! it twice per round trip. HAProxy's `busy-polling` option is the same
//! cure, for the whole process and always on; here it is automatic and
//! bounded:
//!
//! - **Only a connection alone on its worker** polls (one copy, and no
//!   other connection handed to that worker, handshaking or queued): with
//!   others on the thread there is other work to do, and polling one
//!   connection would hold them up. A connection handed to the worker
//!   while it polls (the accept loop counts it at once) ends the poll at
//!   the next turn. So the state is the worker's, in a thread-local, and
//!   an idle connection pays no byte for it.
//! - **Only while both directions wait to read** (nothing waits for a full
//!   socket to drain).
//! - **The window adapts to the waits it sees**, the way KVM's halt polling
//!   does: it starts at zero (no polling), grows (from [`START`], doubling,
//!   up to [`MAX`]) after each wait that was short but longer than the
//!   window, and drops to zero after any wait longer than [`MAX`]. A
//!   connection that goes quiet so polls at most one window (100 µs) and
//!   then parks as before; an idle one never polls.
//! - **It yields the CPU at every turn** (`sched_yield`), so that a peer
//!   on the same CPU (the client or the target, on a busy machine) runs at
//!   once rather than after the poller's time slice, and it **parks as
//!   soon as a yield let another thread run** and nothing came of it: that
//!   CPU is wanted, and polling would only take time from others.
//! - **It backs off when it loses the CPU**: a poll that ends more than
//!   [`LOST`] after it began (a CPU hog beside the proxy, which a yield
//!   lets run for a whole time slice) sets the window to zero and holds
//!   polling off for the next [`HOLD_OFF`] short waits, twice as many
//!   after each further loss (halved again after [`EASE_AFTER`] polls that
//!   found something in time). A yield that merely let a peer run is no
//!   loss: on a quiet machine the target often shares the proxy's CPU, and
//!   holding polling off for it cost the echo row 30 % (372 against 518
//!   MB/s).
//!
//! While polling, reads go to the socket itself ([`polling`]): the
//! poller's readiness is only brought up to date when the worker parks.

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first window after a short wait.
const START: Duration = Duration::from_micros(20);

/// The longest window, and the longest wait that counts as short.
const MAX: Duration = Duration::from_micros(100);

/// Short waits without polling after the first time a poll lost the CPU.
const HOLD_OFF: u32 = 16;

/// A poll that ends this long after it began lost the CPU to another
/// thread for a while (a time slice is milliseconds).
const LOST: Duration = Duration::from_micros(200);

/// A yield that took this long let another thread run on this CPU: the
/// CPU is wanted, and the copy parks rather than poll on.
const HANDED_OVER: Duration = Duration::from_micros(5);

/// The most short waits a run of losses holds polling off for.
const MAX_HOLD_OFF: u32 = 4096;

/// Polls that find something before the hold-off after a loss halves.
const EASE_AFTER: u32 = 1024;

/// Whether copies may busy-poll at all (`--busy-poll`, on by default): one
/// setting for the process, made at start-up.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Lets copies busy-poll (`--busy-poll on`) or never (`off`).
pub(crate) fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

thread_local! {
    /// Set while a copy polls: reads ask the socket.
    static POLLING: Cell<bool> = const { Cell::new(false) };
    /// The state of this worker's polling: only a connection alone on its
    /// worker polls, so one state per worker (not per connection, which
    /// would cost every idle connection its bytes).
    static STATE: Cell<BusyPoll> = const { Cell::new(BusyPoll::new()) };
    /// The count of connections handed to this worker and not yet closed,
    /// queued ones included (the accept loop's `Worker::open`).
    static WORKER: RefCell<Option<Arc<AtomicUsize>>> = const { RefCell::new(None) };
}

/// Whether a copy on this thread is busy-polling: a read should ask the
/// socket rather than trust the poller's readiness, which is only brought
/// up to date when the worker parks.
pub(crate) fn polling() -> bool {
    POLLING.try_with(Cell::get).unwrap_or(false)
}

/// Tells this worker thread where its count of open connections is (once
/// per thread; the same count for all its connections).
pub(crate) fn on_worker(open: &Arc<AtomicUsize>) {
    let _ = WORKER.try_with(|worker| {
        worker.borrow_mut().get_or_insert_with(|| open.clone());
    });
}

/// Whether other client connections share this worker thread (or wait in
/// its queue).
fn others_on_worker() -> bool {
    WORKER
        .try_with(|worker| {
            worker
                .borrow()
                .as_ref()
                .is_some_and(|open| open.load(Ordering::Relaxed) > 1)
        })
        .unwrap_or(false)
}

/// To call when a copy is polled: if the lone copy had parked, that wait
/// counts (see [`BusyPoll::woken`]).
pub(crate) fn woken() {
    let _ = STATE.try_with(|state| {
        let mut busy = state.get();
        busy.woken();
        state.set(busy);
    });
}

/// The copy has nothing to do and both directions wait to read: polls
/// with this worker's state (see [`BusyPoll::poll`]).
pub(crate) fn poll(alone: bool, progress: impl FnMut() -> io::Result<bool>) -> io::Result<bool> {
    poll_if(ENABLED.load(Ordering::Relaxed), alone, progress)
}

/// [`poll`], if `enabled`.
fn poll_if(
    enabled: bool,
    alone: bool,
    progress: impl FnMut() -> io::Result<bool>,
) -> io::Result<bool> {
    if !enabled {
        return Ok(false);
    }
    let Ok(mut busy) = STATE.try_with(Cell::get) else {
        return Ok(false);
    };
    let polled = busy.poll(alone, progress);
    let _ = STATE.try_with(|state| state.set(busy));
    polled
}

/// Opens this thread's window, as after a run of short waits.
#[cfg(test)]
pub(crate) fn open_window() {
    STATE.with(|state| state.set(BusyPoll::open()));
}

/// Sets [`POLLING`] while alive.
struct Polling;

impl Polling {
    fn start() -> Self {
        let _ = POLLING.try_with(|p| p.set(true));
        Self
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        let _ = POLLING.try_with(|p| p.set(false));
    }
}

/// A worker's busy-polling state.
#[derive(Clone, Copy, Debug)]
struct BusyPoll {
    /// How long the next wait is polled; zero: not at all.
    window: Duration,
    /// When the copy began to wait, if it parked: the wait is measured
    /// when it is polled again.
    parked: Option<Instant>,
    /// Short waits still to see before the window may grow again.
    hold_off: u32,
    /// What the next loss sets `hold_off` to.
    penalty: u32,
    /// Polls that found something since the last loss or easing.
    found: u32,
}

impl BusyPoll {
    /// Not polling yet.
    const fn new() -> Self {
        Self {
            window: Duration::ZERO,
            parked: None,
            hold_off: 0,
            penalty: HOLD_OFF,
            found: 0,
        }
    }

    /// A state whose window is open already.
    #[cfg(test)]
    fn open() -> Self {
        Self {
            window: MAX,
            ..Self::new()
        }
    }

    /// To call when the copy is polled: if it had parked, that wait counts.
    fn woken(&mut self) {
        if let Some(parked) = self.parked.take() {
            self.waited(parked.elapsed());
        }
    }

    /// The copy has nothing to do and both directions wait to read:
    /// calls `progress` (which polls both directions and says whether
    /// anything moved), yielding the CPU before each call, until it says
    /// so or the window ends. `false`: the copy parks.
    ///
    /// `alone`: no other copy runs on this thread.
    fn poll(
        &mut self,
        alone: bool,
        mut progress: impl FnMut() -> io::Result<bool>,
    ) -> io::Result<bool> {
        if !alone || others_on_worker() {
            return Ok(false);
        }
        let start = Instant::now();
        if self.window.is_zero() {
            self.parked = Some(start);
            return Ok(false);
        }
        let _polling = Polling::start();
        loop {
            let turn = Instant::now();
            std::thread::yield_now();
            let handed_over = turn.elapsed() > HANDED_OVER;
            let moved = progress()?;
            let elapsed = start.elapsed();
            if elapsed > LOST {
                self.lost();
            } else if moved {
                self.found();
            }
            if moved {
                return Ok(true);
            }
            // A connection handed to this worker meanwhile (the accept
            // loop counts it at once) ends the poll: its handshake waits
            // for this thread.
            if handed_over || elapsed >= self.window || others_on_worker() {
                self.parked = Some(start);
                return Ok(false);
            }
        }
    }

    /// A poll found something in time: after [`EASE_AFTER`] of them, the
    /// next loss holds polling off half as long.
    fn found(&mut self) {
        self.found += 1;
        if self.found == EASE_AFTER {
            self.found = 0;
            self.penalty = (self.penalty / 2).max(HOLD_OFF);
        }
    }

    /// A wait (polled, then parked) took `wait`.
    fn waited(&mut self, wait: Duration) {
        if wait > MAX {
            self.window = Duration::ZERO;
        } else if self.hold_off > 0 {
            self.hold_off -= 1;
        } else if wait > self.window {
            self.window = (self.window * 2).clamp(START, MAX);
        }
    }

    /// Another thread had the CPU for a while during a poll.
    fn lost(&mut self) {
        self.found = 0;
        self.window = Duration::ZERO;
        self.hold_off = self.penalty;
        self.penalty = (self.penalty * 2).min(MAX_HOLD_OFF);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_with_short_waits_and_closes_after_a_long_one() {
        let mut busy = BusyPoll::new();
        assert_eq!(busy.window, Duration::ZERO);
        let short = Duration::from_micros(90);
        busy.waited(short);
        assert_eq!(busy.window, START);
        busy.waited(short);
        assert_eq!(busy.window, 2 * START);
        busy.waited(short);
        busy.waited(short);
        assert_eq!(busy.window, MAX);
        // A wait the window covers leaves it as it is.
        busy.waited(Duration::from_micros(30));
        assert_eq!(busy.window, MAX);
        busy.waited(Duration::from_millis(5));
        assert_eq!(busy.window, Duration::ZERO);
    }

    #[test]
    fn a_lost_cpu_holds_polling_off_longer_each_time() {
        let mut busy = BusyPoll::open();
        busy.lost();
        assert_eq!(busy.window, Duration::ZERO);
        for _ in 0..HOLD_OFF {
            busy.waited(Duration::from_micros(50));
            assert_eq!(busy.window, Duration::ZERO);
        }
        busy.waited(Duration::from_micros(50));
        assert_eq!(busy.window, START);
        busy.lost();
        assert_eq!(busy.hold_off, 2 * HOLD_OFF);
    }

    /// A poll calls `progress` with reads sent to the socket, until it
    /// says that something moved (unless another thread wanted the CPU
    /// meanwhile); one that finds nothing parks, and its wait counts from
    /// its start; beside another copy or connection it does not poll at
    /// all.
    #[test]
    fn a_connection_handed_to_the_worker_ends_a_poll_at_once() {
        let open = Arc::new(AtomicUsize::new(1));
        on_worker(&open);
        let mut busy = BusyPoll::open();
        let mut calls = 0;
        let found = busy
            .poll(true, || {
                calls += 1;
                if calls == 2 {
                    open.store(2, Ordering::Relaxed);
                }
                Ok(false)
            })
            .unwrap();
        assert!(!found);
        // Without the check the poll would go on to its 100 µs window,
        // a turn per yield.
        assert!(calls <= 2, "polled {calls} turns after the hand-over");
        assert!(busy.parked.is_some());
    }

    #[test]
    fn busy_poll_off_never_polls() {
        open_window();
        let polled = poll_if(false, true, || panic!("polled with --busy-poll off"));
        assert!(!polled.unwrap());
        assert!(!polling());
    }

    #[test]
    fn a_poll_ends_with_progress_or_with_the_window() {
        let mut busy = BusyPoll::open();
        let mut calls = 0;
        let found = busy
            .poll(true, || {
                calls += 1;
                assert!(polling(), "reads would trust stale readiness");
                Ok(calls == 3)
            })
            .unwrap();
        assert!(!polling());
        if found {
            assert_eq!(calls, 3);
            assert!(busy.parked.is_none());
        } else {
            // Only when another thread wanted this CPU meanwhile (the
            // test threads share two).
            assert!(calls < 3 && busy.parked.is_some());
        }

        let mut busy = BusyPoll::open();
        let start = Instant::now();
        assert!(!busy.poll(true, || Ok(false)).unwrap());
        assert!(busy.parked.is_some_and(|parked| parked >= start));

        let mut busy = BusyPoll::open();
        assert!(!busy
            .poll(false, || panic!("polled beside another copy"))
            .unwrap());
        on_worker(&Arc::new(AtomicUsize::new(2)));
        assert!(!busy
            .poll(true, || panic!("polled beside another connection"))
            .unwrap());
        assert!(busy.parked.is_none());
    }
}
