use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::{self, BoxStream, Stream, StreamExt};

use crate::{Change, DetectError, Detection, Detector, EventWatch, Fingerprint, Wake};

/// A detector plus the fingerprint that was last **committed**.
///
/// [`check`](Watcher::check) returns a [`Change`] only when the current
/// fingerprint differs from the committed one; nothing is committed until the
/// caller says so with [`commit`](Watcher::commit), after acting on the
/// change. So a change whose handling failed, and an error (a file missing),
/// commit nothing, and the same change is seen again at the next check.
///
/// Take the fingerprint *before* reading the files you act on: if a file
/// changes in between, the next check differs from what was committed, which
/// costs an extra round, never a missed change.
///
/// ```no_run
/// # smol::block_on(async {
/// use tls_reload_detect::{Combined, Watcher};
/// let mut watcher = Watcher::new(Combined::new("tls.crt"));
/// if let Some(change) = watcher.check().await? {
///     println!("changed: {:?}", change.paths());
///     // ... act on it; only if that worked:
///     watcher.commit(change.into_fingerprint());
/// }
/// # Ok::<_, tls_reload_detect::DetectError>(()) });
/// ```
///
/// # Failures and retries
///
/// A caller that acts on changes itself, fingerprint in hand (the
/// reloading acceptor does), hands each fingerprint to
/// [`observe`](Watcher::observe), which also says whether the change is
/// news or the same files seen again. When acting fails it records so with
/// [`fail`](Watcher::fail): [`failed_since`](Watcher::failed_since) then
/// tells how long those same files have been known to fail, so a retry can
/// wait. A fingerprint equal to the committed one (the files came back as
/// they were) forgets both.
#[derive(Clone)]
pub struct Watcher {
    detector: Arc<dyn Detector>,
    committed: Option<Fingerprint>,
    /// The last change `observe` returned.
    seen: Option<Fingerprint>,
    /// The last fingerprint whose handling failed, and when.
    failed: Option<(Fingerprint, Instant)>,
}

impl Watcher {
    /// A watcher with nothing committed: its first check reports a change.
    pub fn new(detector: impl Detector + 'static) -> Self {
        Self::from_arc(Arc::new(detector))
    }

    /// A watcher over a shared detector.
    pub fn from_arc(detector: Arc<dyn Detector>) -> Self {
        Self {
            detector,
            committed: None,
            seen: None,
            failed: None,
        }
    }

    /// A watcher whose committed fingerprint is `committed`: the state
    /// already acted on (`None`: nothing known, the first check is a change).
    pub fn with_committed(detector: Arc<dyn Detector>, committed: Option<Fingerprint>) -> Self {
        Self {
            committed,
            ..Self::from_arc(detector)
        }
    }

    /// Takes a fingerprint and returns it as a change if it differs from the
    /// committed one. Commits nothing.
    pub async fn check(&self) -> Result<Option<Change>, DetectError> {
        let current = self.detector.fingerprint().await?;
        if self.committed.as_ref() == Some(&current) {
            return Ok(None);
        }
        let news = self.seen.as_ref() != Some(&current);
        Ok(Some(Change::new(current, self.committed.clone(), news)))
    }

    /// Compares a fingerprint taken by the caller with the committed one,
    /// and remembers it as seen: the change, if any, says whether it is
    /// [news](Change::is_news). A fingerprint equal to the committed one
    /// forgets what was seen and failed, so the next change is news again.
    pub fn observe(&mut self, current: Fingerprint) -> Option<Change> {
        if self.committed.as_ref() == Some(&current) {
            self.seen = None;
            self.failed = None;
            return None;
        }
        let news = self.seen.as_ref() != Some(&current);
        self.seen = Some(current.clone());
        Some(Change::new(current, self.committed.clone(), news))
    }

    /// Records `fingerprint` as the state that has been acted on.
    pub fn commit(&mut self, fingerprint: Fingerprint) {
        self.committed = Some(fingerprint);
        self.seen = None;
        self.failed = None;
    }

    /// Forgets the committed fingerprint (it could not be taken for what is
    /// now acted on): the next check is a change, whatever it finds.
    pub fn uncommit(&mut self) {
        self.committed = None;
        self.seen = None;
        self.failed = None;
    }

    /// Records that acting on `fingerprint` failed, at `at`.
    pub fn fail(&mut self, fingerprint: Fingerprint, at: Instant) {
        self.failed = Some((fingerprint, at));
    }

    /// Since when acting on exactly `fingerprint` has been failing, if the
    /// last failure recorded is of these files.
    pub fn failed_since(&self, fingerprint: &Fingerprint) -> Option<Instant> {
        self.failed
            .as_ref()
            .filter(|(failed, _)| failed == fingerprint)
            .map(|(_, at)| *at)
    }

    /// Takes a fingerprint and commits it at once: the baseline for later
    /// checks.
    pub async fn prime(&mut self) -> Result<Fingerprint, DetectError> {
        let current = self.detector.fingerprint().await?;
        self.committed = Some(current.clone());
        Ok(current)
    }

    /// The committed fingerprint, if any.
    pub fn committed(&self) -> Option<&Fingerprint> {
        self.committed.as_ref()
    }

    /// The detector.
    pub fn detector(&self) -> &Arc<dyn Detector> {
        &self.detector
    }
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("detector", &self.detector)
            .field("committed", &self.committed)
            .field("failed", &self.failed.as_ref().map(|(_, at)| at))
            .finish_non_exhaustive()
    }
}

/// Watches `detector`: at once when file-system events say one of its
/// [paths](Detector::watched_paths) moved, and every `interval` whatever
/// the events say (the backstop).
///
/// The first fingerprint, taken when the stream is first polled, is the
/// baseline. After that the stream yields one [`Change`] per check at which
/// the fingerprint moved (and commits it), and an error when a check fails,
/// once per distinct error: a file that stays missing is reported once, and
/// again only after a successful check. It never ends. Events only wake a
/// check (see [`EventWatch`]); where they are unavailable, it polls, and
/// [`Watch::detection`] says why.
///
/// ```no_run
/// use futures::StreamExt;
/// use std::time::Duration;
/// use tls_reload_detect::{watch, Composite, Strategy};
/// # smol::block_on(async {
/// let detector = Composite::from_paths(Strategy::Combined, ["tls.crt", "tls.key"]);
/// let mut changes = watch(detector, Duration::from_secs(10));
/// while let Some(event) = changes.next().await {
///     match event {
///         Ok(change) => println!("changed: {:?}", change.paths()),
///         Err(error) => eprintln!("error: {error}"),
///     }
/// }
/// # });
/// ```
pub fn watch(detector: impl Detector + 'static, interval: Duration) -> Watch {
    watch_with(detector, interval, EventWatch::new())
}

/// [`watch`] without events: a check every `interval`, nothing else.
pub fn poll(detector: impl Detector + 'static, interval: Duration) -> Watch {
    watch_with(detector, interval, EventWatch::off("events off"))
}

/// [`watch`] with the given event watch ([`EventWatch::off`] to poll only).
pub fn watch_with(
    detector: impl Detector + 'static,
    interval: Duration,
    events: EventWatch,
) -> Watch {
    let detection = Arc::new(Mutex::new(events.detection().clone()));
    let state = WatchState {
        watcher: Watcher::new(detector),
        events: Some(events),
        primed: false,
        interval,
        last_error: None,
        detection: detection.clone(),
    };
    let inner = stream::unfold(state, |mut state| async move {
        loop {
            let result = state.next_check().await;
            match result {
                Ok(change) => {
                    state.last_error = None;
                    if let Some(change) = change {
                        state.watcher.commit(change.fingerprint().clone());
                        return Some((Ok(change), state));
                    }
                }
                Err(error) => {
                    let text = error.to_string();
                    if state.last_error.as_deref() != Some(text.as_str()) {
                        state.last_error = Some(text);
                        return Some((Err(error), state));
                    }
                }
            }
        }
    })
    .boxed();
    Watch { inner, detection }
}

struct WatchState {
    watcher: Watcher,
    /// Taken out while it is re-armed on the blocking pool.
    events: Option<EventWatch>,
    primed: bool,
    interval: Duration,
    last_error: Option<String>,
    detection: Arc<Mutex<Detection>>,
}

impl WatchState {
    /// The baseline first; then, after the next wake-up, a check.
    async fn next_check(&mut self) -> Result<Option<Change>, DetectError> {
        if !self.primed {
            self.primed = true;
            let primed = self.watcher.prime().await.map(|_| None);
            self.rearm().await;
            return primed;
        }
        let wake = match self.events.as_mut() {
            Some(events) => events.wait(Instant::now() + self.interval).await,
            None => Wake::Poll,
        };
        let checked = self.watcher.check().await;
        // What the paths resolve to can only have moved if something did:
        // an idle poll costs what it costs without events.
        let events_on = self
            .events
            .as_ref()
            .is_some_and(|e| e.detection().is_events());
        if wake == Wake::Event || !matches!(checked, Ok(None)) || !events_on {
            self.rearm().await;
        }
        checked
    }

    /// Re-arms the event watch off the executor (a swap may have changed
    /// which directories matter).
    async fn rearm(&mut self) {
        let Some(mut events) = self.events.take_if(|events| events.has_backend()) else {
            return;
        };
        let paths = self.watcher.detector().watched_paths();
        let events = blocking::unblock(move || {
            events.arm(&paths);
            events
        })
        .await;
        *self
            .detection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = events.detection().clone();
        self.events = Some(events);
    }
}

/// The stream returned by [`watch`].
#[must_use = "streams do nothing unless polled"]
pub struct Watch {
    inner: BoxStream<'static, Result<Change, DetectError>>,
    detection: Arc<Mutex<Detection>>,
}

impl Watch {
    /// How changes are detected now: events, or poll only and why.
    pub fn detection(&self) -> Detection {
        self.detection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Stream for Watch {
    type Item = Result<Change, DetectError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("detection", &self.detection())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[derive(Debug)]
    struct Never;

    #[async_trait::async_trait]
    impl Detector for Never {
        async fn fingerprint(&self) -> Result<Fingerprint, DetectError> {
            Ok(Fingerprint::of_bytes(b"never asked"))
        }
    }

    #[test]
    fn a_change_is_news_once_and_a_failure_is_of_its_files() {
        let (a, b) = (Fingerprint::of_bytes(b"a"), Fingerprint::of_bytes(b"b"));
        let mut watcher = Watcher::with_committed(Arc::new(Never), Some(a.clone()));
        assert!(watcher.observe(a.clone()).is_none());
        assert!(watcher.observe(b.clone()).is_some_and(|c| c.is_news()));
        assert!(watcher.observe(b.clone()).is_some_and(|c| !c.is_news()));

        let at = Instant::now();
        watcher.fail(b.clone(), at);
        assert_eq!(watcher.failed_since(&b), Some(at));
        assert_eq!(watcher.failed_since(&a), None);
        // Back to the committed files: the failure and the change are forgotten.
        assert!(watcher.observe(a.clone()).is_none());
        assert_eq!(watcher.failed_since(&b), None);
        assert!(watcher.observe(b.clone()).is_some_and(|c| c.is_news()));

        watcher.commit(b.clone());
        assert!(watcher.observe(b).is_none());
        watcher.uncommit();
        assert!(watcher.observe(a).is_some_and(|c| c.is_news()));
    }
}
