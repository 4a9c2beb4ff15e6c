//! The state behind every acceptor handle, and the reload logic.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use async_io::Timer;
use futures::future::BoxFuture;
use rustls::ServerConfig;
use tls_reload_build::{Built, Materials, Template};
use tls_reload_detect::{Composite, DetectError, Detector, Fingerprint, Strategy};

use crate::deadline::Deadlines;
use crate::error::Cause;
use crate::{ReloadError, ReloadEvent, Reloaded, SkipReason, Status};

/// Makes a detector for a set of materials.
pub(crate) type DetectorFactory = dyn Fn(&Materials) -> Box<dyn Detector> + Send + Sync;

/// Where the reloader's detector comes from.
#[derive(Clone)]
pub(crate) enum DetectorSource {
    /// A built-in strategy over the material paths.
    Strategy(Strategy),
    /// One detector, whatever the paths.
    Fixed(Arc<dyn Detector>),
    /// A detector made from the materials, anew when they change.
    Factory(Arc<DetectorFactory>),
}

impl DetectorSource {
    pub(crate) fn make(&self, materials: &Materials, template: &Template) -> Arc<dyn Detector> {
        match self {
            Self::Strategy(strategy) => Arc::new(Composite::from_paths_with_limit(
                *strategy,
                materials.paths(),
                template.file_size_limit(),
            )),
            Self::Fixed(detector) => detector.clone(),
            Self::Factory(factory) => Arc::from(factory(materials)),
        }
    }
}

impl fmt::Debug for DetectorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Strategy(strategy) => write!(f, "{strategy}"),
            Self::Fixed(detector) => write!(f, "{detector:?}"),
            Self::Factory(_) => f.write_str("<factory>"),
        }
    }
}

/// What a reconfiguration changes; the other half is taken as it stands
/// when the reconfiguration takes its ticket.
#[derive(Debug)]
pub(crate) enum Reconfigure {
    Materials(Materials),
    Template(Template),
}

/// A built config waiting to be applied at the next accept.
struct Pending {
    ticket: u64,
    /// The materials epoch it was built from.
    epoch: u64,
    built: Arc<Built>,
    fingerprint: Option<Fingerprint>,
    manual: bool,
}

pub(crate) struct Settings {
    pub(crate) interval: Duration,
    pub(crate) retry_interval: Duration,
    pub(crate) handshake_timeout: Option<Duration>,
    /// Awaited between a background build and its apply (a test hook).
    pub(crate) before_background_apply: Option<Hook>,
}

/// See [`Builder::before_background_apply`](crate::Builder::before_background_apply).
pub(crate) type Hook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

pub(crate) struct Shared {
    /// What new handshakes use: loaded once per accept.
    config: ArcSwap<ServerConfig>,
    pending: ArcSwapOption<Pending>,
    /// Build tickets, in the order builds start.
    tickets: AtomicU64,
    state: Mutex<State>,
    subscribers: Mutex<Vec<async_channel::Sender<ReloadEvent>>>,
    pub(crate) settings: Settings,
    /// Handshake deadlines, when handshakes have a timeout.
    pub(crate) deadlines: Option<Deadlines>,
    /// Never sent on: dropped with the last handle, which ends the reloaders.
    _alive: async_channel::Sender<()>,
    pub(crate) alive: async_channel::Receiver<()>,
}

struct State {
    materials: Materials,
    template: Template,
    source: DetectorSource,
    detector: Arc<dyn Detector>,
    /// The fingerprint of the files the served config was built from.
    committed: Option<Fingerprint>,
    /// Builds with a ticket below this were overtaken by a manual reload.
    min_ticket: u64,
    /// Bumped when the materials or template are switched: a build from
    /// other materials is never applied after the switch.
    epoch: u64,
    applied_ticket: u64,
    current: Arc<Built>,
    generation: u64,
    applied_at: SystemTime,
    last_reload_at: Option<SystemTime>,
    reloads_applied: u64,
    reloads_failed: u64,
    last_error: Option<(String, SystemTime)>,
    /// The last failure, to report a repeat once and not rebuild the same
    /// broken files every tick.
    last_failure: Option<Failure>,
    /// The last fingerprint reported as detected, so a retry of the same
    /// files is not news.
    detected: Option<Fingerprint>,
}

struct Failure {
    cause: Cause,
    fingerprint: Option<Fingerprint>,
    at: Instant,
    /// Whether a skip of these same files was reported already.
    skip_reported: bool,
}

pub(crate) struct Start {
    pub(crate) materials: Materials,
    pub(crate) template: Template,
    pub(crate) source: DetectorSource,
    pub(crate) settings: Settings,
}

impl Shared {
    /// Builds the first config, failing fast.
    pub(crate) async fn start(start: Start) -> Result<Arc<Self>, tls_reload_build::BuildError> {
        let detector = start.source.make(&start.materials, &start.template);
        // Fingerprint before reading: a change in between costs one more
        // reload later, never a missed one.
        let committed = match detector.fingerprint().await {
            Ok(fingerprint) => Some(fingerprint),
            Err(error) => {
                tracing::debug!(%error, "no fingerprint at start-up; the first check will rebuild");
                None
            }
        };
        let built = tls_reload_build::build(&start.materials, &start.template, None).await?;
        Ok(Self::new(start, detector, committed, built))
    }

    /// Builds the first config on the current thread, failing fast.
    pub(crate) fn start_blocking(start: Start) -> Result<Arc<Self>, tls_reload_build::BuildError> {
        let detector = start.source.make(&start.materials, &start.template);
        let committed = futures::executor::block_on(detector.fingerprint()).ok();
        let built = tls_reload_build::build_blocking(&start.materials, &start.template, None)?;
        Ok(Self::new(start, detector, committed, built))
    }

    fn new(
        start: Start,
        detector: Arc<dyn Detector>,
        committed: Option<Fingerprint>,
        built: Built,
    ) -> Arc<Self> {
        let (alive_tx, alive_rx) = async_channel::bounded(1);
        let built = Arc::new(built);
        tracing::info!(
            serial = %built.leaf().serial_hex(),
            subject = %built.leaf().subject,
            "tls config loaded"
        );
        Arc::new(Self {
            config: ArcSwap::new(built.config().clone()),
            pending: ArcSwapOption::empty(),
            tickets: AtomicU64::new(0),
            state: Mutex::new(State {
                materials: start.materials,
                template: start.template,
                source: start.source,
                detector,
                committed,
                min_ticket: 0,
                epoch: 0,
                applied_ticket: 0,
                current: built,
                generation: 1,
                applied_at: SystemTime::now(),
                last_reload_at: None,
                reloads_applied: 0,
                reloads_failed: 0,
                last_error: None,
                last_failure: None,
                detected: None,
            }),
            subscribers: Mutex::new(Vec::new()),
            deadlines: start.settings.handshake_timeout.map(Deadlines::new),
            settings: start.settings,
            _alive: alive_tx,
            alive: alive_rx,
        })
    }

    /// The config for a new handshake, after applying a pending one.
    pub(crate) fn config_for_accept(&self) -> Arc<ServerConfig> {
        if self.pending.load().is_some() {
            self.promote();
        }
        self.config.load_full()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing in the critical sections panics; if something did, the
        // state is still consistent field by field.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn status(&self) -> Status {
        let state = self.state();
        Status {
            generation: state.generation,
            applied_at: state.applied_at,
            last_reload_at: state.last_reload_at,
            reloads_applied: state.reloads_applied,
            reloads_failed: state.reloads_failed,
            last_error: state
                .last_error
                .as_ref()
                .map(|(message, _)| message.clone()),
            last_error_at: state.last_error.as_ref().map(|(_, at)| *at),
            leaf: state.current.leaf().clone(),
            materials: state.materials.clone(),
            files: state.current.files().to_vec(),
        }
    }

    pub(crate) fn current(&self) -> Arc<Built> {
        self.state().current.clone()
    }

    pub(crate) fn subscribe(&self) -> async_channel::Receiver<ReloadEvent> {
        let (tx, rx) = async_channel::bounded(256);
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|tx| !tx.is_closed());
        subscribers.push(tx);
        rx
    }

    fn emit(&self, event: ReloadEvent) {
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) | Err(async_channel::TrySendError::Full(_)) => true,
            Err(async_channel::TrySendError::Closed(_)) => false,
        });
    }

    /// One reloader tick: detect, and on a change build and apply.
    pub(crate) async fn tick(&self) {
        let (detector, committed, pending) = {
            let state = self.state();
            let pending = self
                .pending
                .load()
                .as_ref()
                .and_then(|p| p.fingerprint.clone());
            (state.detector.clone(), state.committed.clone(), pending)
        };
        let fingerprint = match settled_fingerprint(&*detector).await {
            Ok(fingerprint) => fingerprint,
            Err(error) => return self.record_failure(error.into(), None, false),
        };
        if committed.as_ref() == Some(&fingerprint) {
            // Back to what is served (a file that went missing came back as
            // it was): a new failure or change is news again.
            let mut state = self.state();
            state.last_failure = None;
            state.detected = None;
            drop(state);
            tracing::trace!("no change");
            return;
        }
        if pending.as_ref() == Some(&fingerprint) {
            return;
        }
        let news = {
            let mut state = self.state();
            if let Some(failure) = &mut state.last_failure {
                if failure.fingerprint.as_ref() == Some(&fingerprint)
                    && failure.at.elapsed() < self.settings.retry_interval
                {
                    tracing::trace!("files unchanged since the last failed build");
                    let first = !std::mem::replace(&mut failure.skip_reported, true);
                    drop(state);
                    if first {
                        self.emit(ReloadEvent::Skipped {
                            reason: SkipReason::KnownFailure,
                        });
                    }
                    return;
                }
            }
            let news = state.detected.as_ref() != Some(&fingerprint);
            state.detected = Some(fingerprint.clone());
            news
        };
        if news {
            let paths = match &committed {
                Some(committed) => fingerprint.changed_paths(committed),
                None => fingerprint.paths().map(Into::into).collect(),
            };
            log_detected(&paths);
            self.emit(ReloadEvent::Detected { paths });
        } else {
            tracing::debug!("retrying files that failed to build");
        }
        self.build_settled(&detector, fingerprint).await;
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
            match self
                .run(Some(fingerprint), None, false, Some(&**detector))
                .await
            {
                Landed::Done(_) => return,
                Landed::Moved(_) if attempt == SETTLE_ATTEMPTS => break,
                Landed::Moved(now) => {
                    tracing::debug!(
                        attempt,
                        "tls materials moved while they were read; building again once they settle"
                    );
                    Timer::after(pause).await;
                    pause *= 2;
                    fingerprint = match now {
                        Some(now) => now,
                        None => match settled_fingerprint(detector).await {
                            Ok(now) => now,
                            Err(error) => return self.record_failure(error.into(), None, false),
                        },
                    };
                }
            }
        }
        tracing::debug!("tls materials still moving; the next check tries again");
        self.emit(ReloadEvent::Skipped {
            reason: SkipReason::Unsettled,
        });
    }

    /// Builds from the materials in force (or `reconfigure`'s new ones) and
    /// applies the result unless a newer reload overtook it.
    pub(crate) async fn reload(
        &self,
        fingerprint: Option<Fingerprint>,
        reconfigure: Option<Reconfigure>,
        manual: bool,
    ) -> Result<Reloaded, ReloadError> {
        match self.run(fingerprint, reconfigure, manual, None).await {
            Landed::Done(result) => result,
            // Only a run with a detector to check against reports a move.
            Landed::Moved(_) => Err(ReloadError::Superseded),
        }
    }

    /// [`reload`](Self::reload); with `check`, the files are fingerprinted
    /// again once the build is done (after [`QUIET`] when it failed), and a
    /// build whose files moved is dropped (neither applied nor a failure)
    /// and reported as [`Landed::Moved`].
    async fn run(
        &self,
        fingerprint: Option<Fingerprint>,
        reconfigure: Option<Reconfigure>,
        manual: bool,
        check: Option<&dyn Detector>,
    ) -> Landed {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let (materials, template, previous, detector, epoch) = {
            let mut state = self.state();
            if manual {
                // Whatever started before this must not land after it.
                state.min_ticket = state.min_ticket.max(ticket);
            }
            let reconfigure = reconfigure.map(|change| match change {
                Reconfigure::Materials(materials) => (materials, state.template.clone()),
                Reconfigure::Template(template) => (state.materials.clone(), template),
            });
            match reconfigure {
                Some((materials, template)) => (
                    materials,
                    template,
                    state.current.clone(),
                    Some(state.source.clone()),
                    state.epoch,
                ),
                None => (
                    state.materials.clone(),
                    state.template.clone(),
                    state.current.clone(),
                    None,
                    state.epoch,
                ),
            }
        };
        // Made outside the lock: a user's factory may be slow, or ask for
        // the status, and `status()` and the accept path's promotion take
        // that lock.
        let detector = detector.map(|source| source.make(&materials, &template));
        let fingerprint = match (&detector, fingerprint, manual) {
            (_, Some(fingerprint), _) => Some(fingerprint),
            (Some(detector), None, _) => detector.fingerprint().await.ok(),
            (None, None, true) => {
                let detector = self.state().detector.clone();
                detector.fingerprint().await.ok()
            }
            (None, None, false) => None,
        };
        let built = tls_reload_build::build(&materials, &template, Some(previous)).await;
        if let Some(check) = check {
            if built.is_err() {
                // A pair written file by file fails to build between the
                // two writes: a failure counts only once the files have
                // stayed put a moment.
                Timer::after(QUIET).await;
            }
            let now = check.fingerprint().await.ok();
            if now != fingerprint {
                retire(built);
                return Landed::Moved(now);
            }
        }
        let built = match built {
            Ok(built) => Arc::new(built),
            Err(error) => {
                if self.is_stale(ticket, epoch) {
                    return Landed::Done(Err(ReloadError::Superseded));
                }
                let error = ReloadError::from(error);
                self.record_failure(error.clone(), fingerprint, manual);
                return Landed::Done(Err(error));
            }
        };
        let switch = detector.map(|detector| (materials, template, detector));
        Landed::Done(
            self.land(ticket, epoch, built, fingerprint, manual, switch)
                .await,
        )
    }

    /// Applies a good build unless a newer reload overtook it.
    async fn land(
        &self,
        ticket: u64,
        epoch: u64,
        built: Arc<Built>,
        fingerprint: Option<Fingerprint>,
        manual: bool,
        switch: Option<(Materials, Template, Arc<dyn Detector>)>,
    ) -> Result<Reloaded, ReloadError> {
        self.emit(ReloadEvent::Built {
            leaf: built.leaf().clone(),
            resumption: built.resumption(),
        });
        if let (false, Some(hook)) = (manual, &self.settings.before_background_apply) {
            hook().await;
        }
        if let Some((materials, template, detector)) = switch {
            // Switch and apply in one step: a background build from the old
            // materials (an older epoch) can then never land after it.
            let mut state = self.state();
            if ticket < state.min_ticket {
                return Err(ReloadError::Superseded);
            }
            state.materials = materials;
            state.template = template;
            state.detector = detector;
            state.epoch += 1;
            if let Some(stale) = self.pending.swap(None) {
                retire(stale);
            }
            let applied = Pending {
                ticket,
                epoch: state.epoch,
                built,
                fingerprint,
                manual,
            };
            return Ok(self.apply(state, &applied).into());
        }
        let mine = Arc::new(Pending {
            ticket,
            epoch,
            built,
            fingerprint,
            manual,
        });
        // Never replace a newer build waiting in the slot.
        self.pending.rcu(|waiting| match waiting {
            Some(waiting) if waiting.ticket > ticket => Some(waiting.clone()),
            _ => Some(mine.clone()),
        });
        match self.promote() {
            Some(reloaded) if reloaded.ticket == ticket => Ok(reloaded.into()),
            // Applied by a concurrent promote (which holds the lock while it
            // takes from the slot and applies, so it is done by now).
            _ => {
                let state = self.state();
                if state.applied_ticket == ticket {
                    Ok(Reloaded {
                        generation: state.generation,
                        leaf: mine.built.leaf().clone(),
                        resumption: mine.built.resumption(),
                    })
                } else {
                    Err(ReloadError::Superseded)
                }
            }
        }
    }

    fn is_stale(&self, ticket: u64, epoch: u64) -> bool {
        let state = self.state();
        ticket < state.min_ticket || ticket <= state.applied_ticket || epoch != state.epoch
    }

    /// Applies the pending config, if any and if no newer one was applied.
    fn promote(&self) -> Option<Applied> {
        // The lock is taken before the slot is emptied, so once a promote
        // returns, whatever it took has been applied or dropped.
        let state = self.state();
        let pending = self.pending.swap(None)?;
        if pending.ticket < state.min_ticket
            || pending.ticket <= state.applied_ticket
            || pending.epoch != state.epoch
        {
            drop(state);
            tracing::debug!(ticket = pending.ticket, "dropped a stale build");
            retire(pending);
            self.emit(ReloadEvent::Skipped {
                reason: SkipReason::Stale,
            });
            return None;
        }
        Some(self.apply(state, &pending))
    }

    /// Serves `applied` from now on; `state` is the held lock.
    fn apply(&self, mut state: MutexGuard<'_, State>, applied: &Pending) -> Applied {
        let old_config = self.config.swap(applied.built.config().clone());
        let now = SystemTime::now();
        let old_built = std::mem::replace(&mut state.current, applied.built.clone());
        state.applied_ticket = state.applied_ticket.max(applied.ticket);
        state.generation += 1;
        state.applied_at = now;
        state.last_reload_at = Some(now);
        state.reloads_applied += 1;
        state.last_failure = None;
        // Without a fingerprint (it could not be taken), nothing is known to
        // match the served files: the next check rebuilds.
        state.committed = applied.fingerprint.clone();
        let generation = state.generation;
        drop(state);
        retire((old_config, old_built));
        let leaf = applied.built.leaf();
        tracing::info!(
            generation,
            serial = %leaf.serial_hex(),
            subject = %leaf.subject,
            resumption = ?applied.built.resumption(),
            "tls reload applied"
        );
        self.emit(ReloadEvent::Applied {
            generation,
            leaf: leaf.clone(),
            manual: applied.manual,
        });
        Applied {
            ticket: applied.ticket,
            generation,
            built: applied.built.clone(),
        }
    }

    /// Records and reports a failure: once per distinct cause and files, or
    /// `always` for a manual reload, whose caller asked.
    fn record_failure(&self, error: ReloadError, fingerprint: Option<Fingerprint>, always: bool) {
        let message = error.to_string();
        let cause = error.cause();
        let mut state = self.state();
        let repeated = state
            .last_failure
            .as_ref()
            .is_some_and(|last| last.cause == cause && last.fingerprint == fingerprint);
        state.last_failure = Some(Failure {
            cause,
            fingerprint,
            at: Instant::now(),
            skip_reported: false,
        });
        if repeated && !always {
            drop(state);
            tracing::debug!(error = %message, "tls reload still failing");
            return;
        }
        state.reloads_failed += 1;
        state.last_error = Some((message.clone(), SystemTime::now()));
        drop(state);
        tracing::warn!(error = %message, "tls reload failed; keeping the last good config");
        self.emit(ReloadEvent::Failed { error });
    }
}

/// How a [`Shared::run`] ended.
enum Landed {
    /// Applied, refused or overtaken.
    Done(Result<Reloaded, ReloadError>),
    /// The files moved while they were read; their fingerprint now, if it
    /// could be taken.
    Moved(Option<Fingerprint>),
}

/// How many times a background build whose files moved under it starts
/// again before the files are left to the next check.
const SETTLE_ATTEMPTS: u32 = 5;
/// The pause before the first new start; it doubles each time (20, 40, 80,
/// 160 ms: about 300 ms in all).
const SETTLE_PAUSE: Duration = Duration::from_millis(20);

/// How long the files of a failed background build must stay unchanged
/// after it for the failure to count: a renewer writing the certificate,
/// then the key, is done well within it.
const QUIET: Duration = Duration::from_millis(50);

/// A fingerprint, asked again after a pause while it fails: a file missing
/// for a moment (deleted, then written again) is not yet a failure.
async fn settled_fingerprint(detector: &dyn Detector) -> Result<Fingerprint, DetectError> {
    let mut pause = SETTLE_PAUSE;
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
    }
    if more > 0 {
        tracing::debug!(?paths, "tls materials changed: every path");
    }
}

/// What [`Shared::apply`] applied.
pub(crate) struct Applied {
    ticket: u64,
    generation: u64,
    built: Arc<Built>,
}

impl From<Applied> for Reloaded {
    fn from(applied: Applied) -> Self {
        Self {
            generation: applied.generation,
            leaf: applied.built.leaf().clone(),
            resumption: applied.built.resumption(),
        }
    }
}

/// Drops `value` on the blocking pool: freeing a config with a large client
/// CA store takes a while, and when these are the last references it should
/// not happen on the executor.
fn retire<T: Send + 'static>(value: T) {
    blocking::unblock(move || drop(value)).detach();
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Copied out first: a user detector's `Debug` never runs under the lock.
        let (materials, source, generation, current) = {
            let state = self.state();
            let current = state.current.clone();
            (
                state.materials.clone(),
                state.source.clone(),
                state.generation,
                current,
            )
        };
        f.debug_struct("ReloadingAcceptor")
            .field("materials", &materials)
            .field("detector", &source)
            .field("generation", &generation)
            .field("serial", &current.leaf().serial_hex())
            .field("interval", &self.settings.interval)
            .finish_non_exhaustive()
    }
}
