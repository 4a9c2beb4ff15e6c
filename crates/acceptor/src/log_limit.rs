//! A budget of log lines per time window, for events a peer can cause at
//! will: the peer must not set our log volume.

use std::time::{Duration, Instant};

/// How many lines a [`LogLimit`] lets through per window by default.
pub const DEFAULT_LOG_BUDGET: u32 = 10;
/// The window of a default [`LogLimit`].
pub const DEFAULT_LOG_WINDOW: Duration = Duration::from_secs(10);

/// At most `budget` log lines per `window`, for events that anyone on the
/// network can cause (a failed handshake, say); the rest are counted, and
/// each window that held lines back ends with one summary.
///
/// A window opens at the first event after the previous one closed and
/// lasts `window`, so a steady flood gives `budget` lines and one summary
/// per window, and a quiet server loses nothing. The clock is passed in, so
/// the limit is deterministic to test. It takes `&mut self`: one owner
/// (such as an [`Incoming`](crate::Incoming)) needs no lock; wrap it in a
/// `Mutex` to share it.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tls_reload_acceptor::LogLimit;
///
/// let mut limit = LogLimit::new(2, Duration::from_secs(10));
/// let start = Instant::now();
/// for n in 0..5 {
///     let admission = limit.admit(start);
///     if admission.log {
///         println!("bad client number {n}");
///     }
/// }
/// // Nothing to summarise before the window ends...
/// assert_eq!(limit.roll_over(start + Duration::from_secs(9)), None);
/// // ...then the three lines held back.
/// let held = limit.roll_over(start + Duration::from_secs(10)).expect("a summary");
/// assert_eq!(held.count, 3);
/// ```
#[derive(Clone, Debug)]
pub struct LogLimit {
    budget: u32,
    window: Duration,
    /// When the open window began; `None` when no window is open.
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// What [`LogLimit::admit`] says about an event.
#[must_use = "an admission says whether to log"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Whether to log this event at its usual level. When false, log it at
    /// most at an opt-in level such as `debug`.
    pub log: bool,
    /// The lines held back in the window this event found closed: log a
    /// summary of them before this event.
    pub ended: Option<Suppressed>,
}

/// The lines a [`LogLimit`] held back in one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suppressed {
    /// How many.
    pub count: u64,
    /// Over how long: the window, or less when it was cut short by
    /// [`finish`](LogLimit::finish). Whole milliseconds.
    pub over: Duration,
}

impl Default for LogLimit {
    /// [`DEFAULT_LOG_BUDGET`] lines per [`DEFAULT_LOG_WINDOW`].
    fn default() -> Self {
        Self::new(DEFAULT_LOG_BUDGET, DEFAULT_LOG_WINDOW)
    }
}

impl LogLimit {
    /// At most `budget` lines per `window`. A budget of zero keeps only the
    /// summaries; a zero window lets every line through.
    pub fn new(budget: u32, window: Duration) -> Self {
        Self {
            budget,
            window,
            start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// The most lines per window.
    pub fn budget(&self) -> u32 {
        self.budget
    }

    /// How long a window lasts.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Counts an event that happened at `now` and says whether to log it,
    /// and whether a window that held lines back closed before it.
    pub fn admit(&mut self, now: Instant) -> Admission {
        let ended = self.roll_over(now);
        if self.start.is_none() {
            self.start = Some(now);
        }
        let log = self.logged < self.budget;
        if log {
            self.logged += 1;
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
        }
        Admission { log, ended }
    }

    /// When the open window ends, if it has held lines back: the moment
    /// [`roll_over`](LogLimit::roll_over) has a summary to give. `None`
    /// when there is nothing to summarise (or the window never ends).
    pub fn summary_due(&self) -> Option<Instant> {
        if self.suppressed == 0 {
            return None;
        }
        self.start?.checked_add(self.window)
    }

    /// Closes the open window if it has ended by `now`, and returns what it
    /// held back, if anything.
    pub fn roll_over(&mut self, now: Instant) -> Option<Suppressed> {
        let start = self.start?;
        let end = start.checked_add(self.window)?;
        if now < end {
            return None;
        }
        self.close(self.window)
    }

    /// Closes the open window now, ended or not (say, at shutdown), and
    /// returns what it held back, if anything.
    pub fn finish(&mut self, now: Instant) -> Option<Suppressed> {
        let start = self.start?;
        let over = now.saturating_duration_since(start).min(self.window);
        let millis = u64::try_from(over.as_millis()).unwrap_or(u64::MAX);
        self.close(Duration::from_millis(millis))
    }

    fn close(&mut self, over: Duration) -> Option<Suppressed> {
        let count = self.suppressed;
        self.start = None;
        self.logged = 0;
        self.suppressed = 0;
        (count > 0).then_some(Suppressed { count, over })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn lets_the_budget_through_then_counts() {
        let mut limit = LogLimit::new(3, WINDOW);
        let t0 = Instant::now();
        let logged: Vec<bool> = (0..10).map(|_| limit.admit(t0).log).collect();
        assert_eq!(
            logged,
            [true, true, true, false, false, false, false, false, false, false]
        );
        assert_eq!(limit.summary_due(), Some(t0 + WINDOW));
    }

    #[test]
    fn the_window_rolls_over_with_one_summary() {
        let mut limit = LogLimit::new(2, WINDOW);
        let t0 = Instant::now();
        for s in 0..5 {
            let _ = limit.admit(t0 + secs(s));
        }
        assert_eq!(limit.roll_over(t0 + secs(9)), None, "not yet");
        assert_eq!(
            limit.roll_over(t0 + secs(10)),
            Some(Suppressed {
                count: 3,
                over: WINDOW
            })
        );
        assert_eq!(limit.roll_over(t0 + secs(20)), None, "summarised once");
        assert_eq!(limit.summary_due(), None);
        // A fresh window, with a fresh budget.
        assert!(limit.admit(t0 + secs(30)).log);
        assert!(limit.admit(t0 + secs(31)).log);
        assert!(!limit.admit(t0 + secs(32)).log);
        assert_eq!(limit.summary_due(), Some(t0 + secs(40)));
    }

    #[test]
    fn an_event_after_the_window_brings_its_summary() {
        let mut limit = LogLimit::new(1, WINDOW);
        let t0 = Instant::now();
        assert_eq!(
            limit.admit(t0),
            Admission {
                log: true,
                ended: None
            }
        );
        assert_eq!(
            limit.admit(t0 + secs(1)),
            Admission {
                log: false,
                ended: None
            }
        );
        // An hour later, nobody rolled the window over: the next event does.
        assert_eq!(
            limit.admit(t0 + secs(3600)),
            Admission {
                log: true,
                ended: Some(Suppressed {
                    count: 1,
                    over: WINDOW
                })
            }
        );
    }

    #[test]
    fn a_window_without_suppressed_lines_ends_silently() {
        let mut limit = LogLimit::new(5, WINDOW);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limit.admit(t0).log);
        }
        assert_eq!(limit.summary_due(), None);
        assert_eq!(limit.roll_over(t0 + WINDOW), None);
        assert_eq!(limit.finish(t0 + WINDOW), None);
        assert_eq!(limit.admit(t0 + WINDOW).ended, None);
    }

    #[test]
    fn a_steady_flood_gives_the_budget_and_a_summary_per_window() {
        let mut limit = LogLimit::new(10, WINDOW);
        let t0 = Instant::now();
        let (mut lines, mut summaries, mut counted) = (0, 0, 0);
        // 100 events a second for a minute.
        for ms in (0..60_000).step_by(10) {
            let admission = limit.admit(t0 + Duration::from_millis(ms));
            lines += u64::from(admission.log);
            if let Some(held) = admission.ended {
                summaries += 1;
                counted += held.count;
            }
        }
        if let Some(held) = limit.finish(t0 + secs(60)) {
            summaries += 1;
            counted += held.count;
        }
        assert_eq!(lines, 60, "10 lines in each of 6 windows");
        assert_eq!(summaries, 6);
        assert_eq!(lines + counted, 6000, "every event is logged or counted");
    }

    #[test]
    fn finish_cuts_the_window_short() {
        let mut limit = LogLimit::new(0, WINDOW);
        let t0 = Instant::now();
        assert!(!limit.admit(t0).log, "a zero budget keeps only summaries");
        let held = limit.finish(t0 + Duration::from_micros(2_500_700));
        assert_eq!(
            held,
            Some(Suppressed {
                count: 1,
                over: Duration::from_millis(2500)
            })
        );
        assert_eq!(limit.finish(t0 + secs(3)), None);
    }

    #[test]
    fn a_zero_window_limits_nothing_and_a_huge_one_never_ends() {
        let mut none = LogLimit::new(1, Duration::ZERO);
        let t0 = Instant::now();
        assert!((0..100).all(|_| none.admit(t0).log));

        let mut forever = LogLimit::new(1, Duration::MAX);
        let _ = forever.admit(t0);
        assert!(!forever.admit(t0 + secs(1)).log);
        assert_eq!(forever.summary_due(), None);
        assert_eq!(forever.roll_over(t0 + secs(1_000_000)), None);
        assert_eq!(forever.finish(t0 + secs(5)).map(|held| held.count), Some(1));
    }
}
