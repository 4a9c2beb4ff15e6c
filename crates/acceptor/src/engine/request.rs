//! The reload requests: a tick, a manual reload or a reconfiguration, from
//! its ticket to its landing (see the state machine in the parent module).

use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_io::Timer;
use tls_reload_build::BuildError;
use tls_reload_detect::{DetectError, Detector, Fingerprint, Watcher};

use super::{retire, Engine, Happening, Kind, Reconfigure, State};
use crate::source::DetectorSource;
use crate::{ReloadError, SkipReason};

/// The ticket sequence and the floors below which a result is stale (see
/// the module docs).
#[derive(Debug, Default)]
pub(super) struct Order {
    /// The last ticket issued.
    seq: u64,
    /// A background result with a lower ticket does not land.
    background_floor: u64,
    /// A manual result with a lower ticket does not land.
    manual_floor: u64,
}

impl Order {
    fn issue(&mut self, manual: bool) -> u64 {
        self.seq += 1;
        if manual {
            // Whatever started before this must not land after it.
            self.background_floor = self.seq;
            self.manual_floor = self.seq;
        }
        self.seq
    }

    fn is_stale(&self, ticket: u64, manual: bool) -> bool {
        let floor = if manual {
            self.manual_floor
        } else {
            self.background_floor
        };
        ticket < floor
    }

    fn landed(&mut self, ticket: u64, reconfigured: bool) {
        let past = if reconfigured { self.seq } else { ticket };
        self.background_floor = self.background_floor.max(past + 1);
    }
}

/// A request's ticket and everything it builds from, taken in one step.
struct Request<K: Kind> {
    ticket: u64,
    manual: bool,
    materials: K::Materials,
    template: K::Template,
    previous: Arc<K::Built>,
    /// A reconfiguration's source for the new detector, made outside the lock.
    switch: Option<DetectorSource<K::Materials>>,
}

/// A build that landed: what was applied.
#[derive(Debug)]
pub(crate) struct Applied<B> {
    /// The generation now served.
    pub(crate) generation: u64,
    /// The build now served.
    pub(crate) built: Arc<B>,
}

impl<K: Kind> Engine<K> {
    /// One reloader tick: detect, and on a change build and apply.
    ///
    /// Returns whether the files were exactly those served: nothing moved.
    pub(crate) async fn tick(&self) -> bool {
        let detector = self.state().watcher.detector().clone();
        let fingerprint = match settled_fingerprint(&*detector).await {
            Ok(fingerprint) => fingerprint,
            Err(error) => {
                self.record_failure(error.into(), None, false);
                return false;
            }
        };
        let Some(news) = self.observe(&detector, fingerprint.clone()) else {
            return self.state().watcher.committed() == Some(&fingerprint);
        };
        match news {
            Some(paths) => {
                log_detected(&paths);
                self.emit(Happening::Detected { paths });
            }
            None => tracing::debug!("retrying files that failed to build"),
        }
        self.build_settled(&detector, fingerprint).await;
        false
    }

    /// Hands a fingerprint to the watcher. `None`: nothing to build (no
    /// change, a known failure to wait out, or the detector was switched
    /// meanwhile); else the changed paths if the change is news.
    fn observe(
        &self,
        detector: &Arc<dyn Detector>,
        fingerprint: Fingerprint,
    ) -> Option<Option<Vec<PathBuf>>> {
        let mut state = self.state();
        if !Arc::ptr_eq(state.watcher.detector(), detector) {
            return None;
        }
        let Some(change) = state.watcher.observe(fingerprint) else {
            // Back to what is served: a new failure is news again.
            state.last_failure = None;
            tracing::trace!("no change");
            return None;
        };
        let failing = state.watcher.failed_since(change.fingerprint());
        if failing.is_some_and(|since| since.elapsed() < self.settings.retry_interval) {
            let first = !std::mem::replace(&mut state.skip_reported, true);
            drop(state);
            tracing::trace!("files unchanged since the last failed build");
            if first {
                self.emit(Happening::Skipped {
                    reason: SkipReason::KnownFailure,
                });
            }
            return None;
        }
        let news = change.is_news().then(|| change.paths().to_vec());
        Some(news)
    }

    /// Builds and applies the files of `fingerprint`, starting again while
    /// they move under the build: a build whose inputs changed while it ran
    /// (a renewer halfway through writing, a `..data` swap between the
    /// certificate and the key) is neither applied nor a failure. Only a
    /// build of files that held still is applied or reported as failed.
    /// Files still moving after [`SETTLE_ATTEMPTS`] are left to the next
    /// check, with a [`SkipReason::Unsettled`].
    async fn build_settled(&self, detector: &Arc<dyn Detector>, mut fingerprint: Fingerprint) {
        let mut pause = SETTLE_PAUSE;
        for attempt in 1..=SETTLE_ATTEMPTS {
            let now = match self
                .run(Some(fingerprint), None, false, Some(&**detector))
                .await
            {
                Landed::Done(_) => return,
                Landed::Moved(_) if attempt == SETTLE_ATTEMPTS => break,
                Landed::Moved(now) => now,
            };
            tracing::debug!(
                attempt,
                "tls materials moved while they were read; building again once they settle"
            );
            Timer::after(pause).await;
            pause *= 2;
            fingerprint = match now {
                Some(now) => now,
                None => match settled_fingerprint(&**detector).await {
                    Ok(now) => now,
                    Err(error) => return self.record_failure(error.into(), None, false),
                },
            };
        }
        tracing::debug!("tls materials still moving; the next check tries again");
        self.emit(Happening::Skipped {
            reason: SkipReason::Unsettled,
        });
    }

    /// Builds from the materials in force (or `reconfigure`'s new ones) and
    /// applies the result unless a newer request overtook it.
    pub(crate) async fn reload(
        &self,
        reconfigure: Option<Reconfigure<K>>,
    ) -> Result<Applied<K::Built>, ReloadError> {
        match self.run(None, reconfigure, true, None).await {
            Landed::Done(result) => result,
            // Only a run with a detector to check against reports a move.
            Landed::Moved(_) => Err(ReloadError::Superseded),
        }
    }

    /// One request, from its ticket to its landing. With `check`, the files
    /// are fingerprinted again once the build is done (after [`QUIET`] when
    /// it failed), and a build whose files moved is dropped, neither applied
    /// nor a failure: [`Landed::Moved`].
    async fn run(
        &self,
        fingerprint: Option<Fingerprint>,
        reconfigure: Option<Reconfigure<K>>,
        manual: bool,
        check: Option<&dyn Detector>,
    ) -> Landed<K::Built> {
        let request = self.begin(manual, reconfigure);
        // Made outside the lock: a user's factory may be slow, or ask for
        // the status, which takes that lock.
        let switch = request
            .switch
            .as_ref()
            .map(|source| source.make(&self.kind, &request.materials, &request.template));
        let fingerprint = match (fingerprint, &switch) {
            (Some(fingerprint), _) => Some(fingerprint),
            (None, Some(detector)) => detector.fingerprint().await.ok(),
            (None, None) => {
                let detector = self.state().watcher.detector().clone();
                detector.fingerprint().await.ok()
            }
        };
        let built = {
            let kind = self.kind.clone();
            let (materials, template) = (request.materials.clone(), request.template.clone());
            let previous = request.previous.clone();
            blocking::unblock(move || kind.build(&materials, &template, Some(&previous))).await
        };
        if let Some(check) = check {
            if let Some(now) = moved(check, built.is_err(), fingerprint.as_ref()).await {
                retire(built);
                return Landed::Moved(now);
            }
        }
        let result = match built {
            Ok(built) => {
                self.land(request, Arc::new(built), fingerprint, switch)
                    .await
            }
            Err(error) => Err(self.refused(&request, error, fingerprint)),
        };
        Landed::Done(result)
    }

    /// Takes a ticket and a snapshot of what to build, in one step.
    fn begin(&self, manual: bool, reconfigure: Option<Reconfigure<K>>) -> Request<K> {
        let mut state = self.state();
        let ticket = state.order.issue(manual);
        let (materials, template, switch) = match reconfigure {
            None => (state.materials.clone(), state.template.clone(), None),
            Some(Reconfigure::Materials(materials)) => (
                materials,
                state.template.clone(),
                Some(state.source.clone()),
            ),
            Some(Reconfigure::Template(template)) => (
                state.materials.clone(),
                template,
                Some(state.source.clone()),
            ),
        };
        Request {
            ticket,
            manual,
            materials,
            template,
            previous: state.current.clone(),
            switch,
        }
    }

    /// A build that failed: reported unless a newer request overtook it.
    fn refused(
        &self,
        request: &Request<K>,
        error: BuildError,
        fingerprint: Option<Fingerprint>,
    ) -> ReloadError {
        if self.state().order.is_stale(request.ticket, request.manual) {
            return ReloadError::Superseded;
        }
        let error = ReloadError::from(error);
        self.record_failure(error.clone(), fingerprint, request.manual);
        error
    }

    /// Applies a good build unless a newer request overtook it: the one
    /// place a config is stored.
    async fn land(
        &self,
        request: Request<K>,
        built: Arc<K::Built>,
        fingerprint: Option<Fingerprint>,
        switch: Option<Arc<dyn Detector>>,
    ) -> Result<Applied<K::Built>, ReloadError> {
        self.emit(Happening::Built { built: &built });
        #[cfg(feature = "test-util")]
        if let (false, Some(hook)) = (request.manual, &self.settings.before_background_apply) {
            hook().await;
        }
        let mut state = self.state();
        if state.order.is_stale(request.ticket, request.manual) {
            drop(state);
            tracing::debug!(ticket = request.ticket, "dropped a stale build");
            retire(built);
            self.emit(Happening::Skipped {
                reason: SkipReason::Stale,
            });
            return Err(ReloadError::Superseded);
        }
        state.order.landed(request.ticket, switch.is_some());
        match switch {
            Some(detector) => {
                state.materials = request.materials;
                state.template = request.template;
                state.watcher = Watcher::with_committed(detector, fingerprint);
            }
            None => match fingerprint {
                Some(fingerprint) => state.watcher.commit(fingerprint),
                // Nothing is known to match the served files: the next
                // check rebuilds.
                None => state.watcher.uncommit(),
            },
        }
        Ok(self.apply(state, built, request.manual))
    }

    /// Serves `built` from now on; `state` is the held lock.
    fn apply(
        &self,
        mut state: MutexGuard<'_, State<K>>,
        built: Arc<K::Built>,
        manual: bool,
    ) -> Applied<K::Built> {
        let old_served = self.served.swap(self.kind.served(&built));
        let old_built = std::mem::replace(&mut state.current, built.clone());
        let now = SystemTime::now();
        state.generation += 1;
        state.applied_at = now;
        state.last_reload_at = Some(now);
        state.reloads_applied += 1;
        state.last_failure = None;
        let generation = state.generation;
        drop(state);
        retire((old_served, old_built));
        let resumption = self.kind.resumption(&built);
        match self.kind.leaf(&built) {
            Some(leaf) => tracing::info!(
                generation,
                serial = %leaf.serial_hex(),
                subject = %leaf.subject,
                ?resumption,
                "tls reload applied"
            ),
            None => tracing::info!(generation, ?resumption, "tls reload applied"),
        }
        self.emit(Happening::Applied {
            generation,
            built: &built,
            manual,
        });
        Applied { generation, built }
    }

    /// Records and reports a failure: once per distinct cause and files, or
    /// `always` for a manual reload, whose caller asked.
    fn record_failure(&self, error: ReloadError, fingerprint: Option<Fingerprint>, always: bool) {
        let message = error.to_string();
        let key = (error.cause(), fingerprint.clone());
        let mut state = self.state();
        let repeated = state.last_failure.as_ref() == Some(&key);
        state.last_failure = Some(key);
        state.skip_reported = false;
        if let Some(fingerprint) = fingerprint {
            state.watcher.fail(fingerprint, Instant::now());
        }
        if repeated && !always {
            drop(state);
            tracing::debug!(error = %message, "tls reload still failing");
            return;
        }
        state.reloads_failed += 1;
        state.last_error = Some((message.clone(), SystemTime::now()));
        drop(state);
        tracing::warn!(error = %message, "tls reload failed; keeping the last good config");
        self.emit(Happening::Failed { error });
    }
}

/// How an [`Engine::run`] ended.
enum Landed<B> {
    /// Applied, refused or overtaken.
    Done(Result<Applied<B>, ReloadError>),
    /// The files moved while they were read; their fingerprint now, if it
    /// could be taken.
    Moved(Option<Fingerprint>),
}

/// How many times a background build whose files moved under it starts
/// again before the files are left to the next check.
const SETTLE_ATTEMPTS: u32 = 5;
/// The pause before a build of files that moved starts again; it doubles
/// each time (5, 10, 20, 40 ms).
const SETTLE_PAUSE: Duration = Duration::from_millis(5);
/// How long the files of a failed background build must stay unchanged
/// after it for the failure to count: a renewer writing the certificate,
/// then the key, is done well within it.
const QUIET: Duration = Duration::from_millis(50);
/// How often the files of a failed build are looked at during [`QUIET`]:
/// the second write of a pair is seen within this, not at its end.
const QUIET_STEP: Duration = Duration::from_millis(5);
/// The pause before a fingerprint that failed is asked again; it doubles
/// each time (20, 40, 80, 160 ms: about 300 ms before a missing file counts).
const MISSING_PAUSE: Duration = Duration::from_millis(20);

/// The files' fingerprint now, if it differs from `before` (the one the
/// build started from). After a failed build the files are looked at every
/// [`QUIET_STEP`] for [`QUIET`]: a pair written file by file fails to build
/// between the two writes, so a failure counts only once the files have
/// stayed put, and the second write is seen as soon as it lands.
async fn moved(
    detector: &dyn Detector,
    failed: bool,
    before: Option<&Fingerprint>,
) -> Option<Option<Fingerprint>> {
    let quiet_until = Instant::now() + if failed { QUIET } else { Duration::ZERO };
    loop {
        let now = detector.fingerprint().await.ok();
        if now.as_ref() != before {
            return Some(now);
        }
        if Instant::now() >= quiet_until {
            return None;
        }
        Timer::after(QUIET_STEP).await;
    }
}

/// A fingerprint, asked again after a pause while it fails: a file missing
/// for a moment (deleted, then written again) is not yet a failure.
async fn settled_fingerprint(detector: &dyn Detector) -> Result<Fingerprint, DetectError> {
    let mut pause = MISSING_PAUSE;
    let mut attempt = 1;
    loop {
        match detector.fingerprint().await {
            Ok(fingerprint) => return Ok(fingerprint),
            Err(error) if attempt >= SETTLE_ATTEMPTS => return Err(error),
            Err(error) => tracing::debug!(%error, attempt, "no fingerprint yet; asking again"),
        }
        Timer::after(pause).await;
        pause *= 2;
        attempt += 1;
    }
}

/// How many changed paths a detection log line names; the rest are counted.
const LOGGED_PATHS: usize = 8;

/// Logs a detection: a few paths and a count, since a CA directory of
/// thousands of files would otherwise make one huge line.
fn log_detected(paths: &[PathBuf]) {
    let shown: Vec<_> = paths
        .iter()
        .take(LOGGED_PATHS)
        .map(|p| p.display())
        .collect();
    let more = paths.len().saturating_sub(LOGGED_PATHS);
    if more == 0 {
        tracing::info!(paths = ?shown, "tls materials changed");
    } else {
        tracing::info!(paths = ?shown, more, "tls materials changed");
        tracing::debug!(?paths, "tls materials changed: every path");
    }
}

#[cfg(test)]
mod tests {
    use super::Order;

    #[test]
    fn a_manual_request_outranks_everything_that_began_before_it() {
        let mut order = Order::default();
        let background = order.issue(false);
        let manual = order.issue(true);
        assert!(order.is_stale(background, false));
        assert!(!order.is_stale(manual, true));
        let newer = order.issue(true);
        assert!(order.is_stale(manual, true));
        assert!(!order.is_stale(newer, true));
    }

    #[test]
    fn a_landed_result_outranks_older_background_builds_only() {
        let mut order = Order::default();
        let switch = order.issue(true);
        let older = order.issue(false);
        let newer = order.issue(false);
        order.landed(newer, false);
        assert!(order.is_stale(older, false));
        // The switch began before `newer` landed, and still lands.
        assert!(!order.is_stale(switch, true));
    }

    #[test]
    fn a_landed_switch_outranks_every_background_build_begun_before_it() {
        let mut order = Order::default();
        let switch = order.issue(true);
        let of_old_paths = order.issue(false);
        order.landed(switch, true);
        assert!(order.is_stale(of_old_paths, false));
        let of_new_paths = order.issue(false);
        assert!(!order.is_stale(of_new_paths, false));
    }
}
