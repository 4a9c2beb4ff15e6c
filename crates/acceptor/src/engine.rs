//! The reload engine: one instance per set of files that reload together.
//!
//! An [`Engine`] follows one set of materials and builds them into what its
//! [`Kind`] says: a server's certificate, key and client CAs into the
//! acceptor's `ServerConfig` ([`ServerKind`](crate::server::ServerKind)); a
//! client's identity and roots into the connector's `ClientConfig`
//! ([`ClientKind`](crate::connector::ClientKind)); one named pair into a
//! `CertifiedKey` ([`PairKind`](crate::named::PairKind)). Everything below
//! is the same for every kind; the kind supplies the build, what the hot
//! path loads, the paths to watch and the events.
//!
//! One [reloader](reloader::run) drives one [`Driven`]: an engine, or a
//! handle's state that drives several (the acceptor's: its default engine,
//! then each named pair's), each with its own detector, fingerprint,
//! tickets and last failure, so a change to one rebuilds that one only.
//!
//! # The state machine
//!
//! Four callers start a reload: the reloader's tick (background), and
//! `reload_now`, `set_materials` and `set_template` (manual). Each is a
//! *request* that goes through the same steps and ends in [`Engine::land`],
//! the one place a build is applied:
//!
//! ```text
//!  request ──lock: ticket t = seq + 1, snapshot materials, template, served build──┐
//!                                                                                  │
//!  ┌─────────────── building (blocking pool; no lock held) ◄───────────────────────┘
//!  │        background only: fingerprint the files again when the build is done
//!  ├── moved ───────► dropped (neither applied nor a failure); the tick starts
//!  │                  again once the files settle, 5 times at most
//!  ├── failed ──────► stale? dropped : reported once per cause and files
//!  └── built ─── land: lock, t below its floor? ──yes──► stale: dropped
//!                                               └─no───► applied: stored for the
//!                                                        hot path, fingerprint
//!                                                        committed
//! ```
//!
//! **One ordering mechanism**: the ticket, a sequence number taken when a
//! request starts. Two floors of that sequence say what may still land. A
//! manual request that starts raises both to its ticket: nothing that began
//! before it lands after it. A result that lands raises the background floor
//! past its ticket: an older background build never replaces a newer one.
//! A reconfiguration that lands raises the background floor past every
//! ticket issued: a background build of the old paths never lands after the
//! switch. A manual result is stale only if a newer manual request started,
//! so a switch wins over background reloads of the old files that landed
//! while it was built. Tickets are per engine: instances driven by one
//! reloader never order each other.
//!
//! **Locks.** `state` guards the materials, template, detector source, the
//! [`Watcher`] (committed fingerprint, last change seen, last failure), the
//! ticket sequence and floors, the served build and the counters of the
//! status. It is held for a few lines at a time: never across an
//! `.await`, never around user code (a detector factory, a user detector's
//! `Debug`), IO or a build. [`Subscribers`] guards the event senders; it
//! may be shared by several engines (one stream for a set).
//!
//! **Wake-ups.** The reloader checks at every interval and, when
//! file-system events say a watched path moved, at once (an
//! [`EventWatch`](tls_reload_detect::EventWatch) it owns, armed on the paths of everything it drives and
//! re-armed after every check). Events only wake a check; the fingerprint
//! decides.
//!
//! **The hot path takes no lock.** It loads `served`, an [`ArcSwap`], once
//! per use ([`Engine::load`]). A good build is stored there by the request
//! that built it, under the state lock so that stores happen in landing
//! order. There is no pending slot between the two: an `ArcSwap` store is
//! already atomic between accepts (an accept loads once, so a handshake
//! never sees half of a reload), no accept waits for a build, and an idle
//! server reports an applied reload at once. A slot would only defer the
//! store to the next accept, and make that accept do the applying.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use futures::FutureExt;
use tls_reload_build::{BuildError, LeafInfo};
use tls_reload_detect::{Detection, Fingerprint, Watcher};

mod kind;
pub(crate) mod reloader;
mod request;

pub(crate) use kind::{Happening, Kind};
pub(crate) use reloader::Driven;
use request::Order;

use crate::error::Cause;
use crate::expiry::{Due, Expiry};
use crate::source::DetectorSource;
use crate::ExpiryWindow;

/// What a reconfiguration changes; the other half is taken as it stands
/// when the reconfiguration takes its ticket.
#[derive(Debug)]
pub(crate) enum Reconfigure<K: Kind> {
    Materials(K::Materials),
    Template(K::Template),
}

/// How one engine reloads.
#[derive(Clone)]
pub(crate) struct Settings {
    /// How often files that failed to build are rebuilt while unchanged.
    pub(crate) retry_interval: Duration,
    /// When a served certificate is reported as expiring soon.
    pub(crate) expiry_window: ExpiryWindow,
    /// Awaited between a background build and its landing (a test hook).
    #[cfg(feature = "test-util")]
    pub(crate) before_background_apply: Option<Hook>,
}

/// See [`Builder::before_background_apply`](crate::Builder::before_background_apply).
#[cfg(feature = "test-util")]
pub(crate) type Hook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Everything an engine starts from.
pub(crate) struct Start<K: Kind> {
    pub(crate) kind: K,
    pub(crate) materials: K::Materials,
    pub(crate) template: K::Template,
    pub(crate) source: DetectorSource<K::Materials>,
    pub(crate) settings: Settings,
    /// Where its events go; shared by the engines of a set.
    pub(crate) subscribers: Arc<Subscribers<K::Event>>,
}

/// One set of materials that reload together, and what was built of them.
pub(crate) struct Engine<K: Kind> {
    kind: K,
    /// What the hot path uses: loaded once per use, the only thing it
    /// touches.
    served: ArcSwap<K::Served>,
    state: Mutex<State<K>>,
    subscribers: Arc<Subscribers<K::Event>>,
    settings: Settings,
    /// Set while a reloader drives this engine alone: a second one ends at
    /// once.
    reloader_running: AtomicBool,
}

struct State<K: Kind> {
    materials: K::Materials,
    template: K::Template,
    source: DetectorSource<K::Materials>,
    /// The detector, the committed fingerprint (of the files the served
    /// build was built from), the last change seen and the last failure.
    watcher: Watcher,
    order: Order,
    current: Arc<K::Built>,
    generation: u64,
    applied_at: SystemTime,
    last_reload_at: Option<SystemTime>,
    reloads_applied: u64,
    reloads_failed: u64,
    last_error: Option<(String, SystemTime)>,
    /// The cause and files of the last failure reported: a repeat is
    /// reported once.
    last_failure: Option<(Cause, Option<Fingerprint>)>,
    /// Whether a skip of the files that failed was reported already.
    skip_reported: bool,
    /// How the reloader detects changes: events, or poll only and why.
    detection: Detection,
    /// What was reported of the served certificates' expiry.
    expiry: Expiry,
}

/// A copy of an engine's state, for a status page or `Debug`.
pub(crate) struct Snapshot<K: Kind> {
    pub(crate) generation: u64,
    pub(crate) applied_at: SystemTime,
    pub(crate) last_reload_at: Option<SystemTime>,
    pub(crate) reloads_applied: u64,
    pub(crate) reloads_failed: u64,
    /// The last failure's message and when it happened.
    pub(crate) last_error: Option<(String, SystemTime)>,
    pub(crate) materials: K::Materials,
    pub(crate) source: DetectorSource<K::Materials>,
    pub(crate) current: Arc<K::Built>,
    pub(crate) detection: Detection,
}

impl<K: Kind> Engine<K> {
    /// Builds the first version on the blocking pool, failing fast.
    pub(crate) async fn start(start: Start<K>) -> Result<Self, BuildError> {
        let detector = start
            .source
            .make(&start.kind, &start.materials, &start.template);
        // Fingerprint before reading: a change in between costs one more
        // reload later, never a missed one.
        let committed = match detector.fingerprint().await {
            Ok(fingerprint) => Some(fingerprint),
            Err(error) => {
                tracing::debug!(%error, "no fingerprint at start-up; the first check will rebuild");
                None
            }
        };
        let (kind, materials, template) = (
            start.kind.clone(),
            start.materials.clone(),
            start.template.clone(),
        );
        let built = blocking::unblock(move || kind.build(&materials, &template, None)).await?;
        Ok(Self::new(
            start,
            Watcher::with_committed(detector, committed),
            built,
        ))
    }

    /// Builds the first version on the current thread, failing fast.
    pub(crate) fn start_blocking(start: Start<K>) -> Result<Self, BuildError> {
        let detector = start
            .source
            .make(&start.kind, &start.materials, &start.template);
        let committed = futures::executor::block_on(detector.fingerprint()).ok();
        let built = start.kind.build(&start.materials, &start.template, None)?;
        Ok(Self::new(
            start,
            Watcher::with_committed(detector, committed),
            built,
        ))
    }

    fn new(start: Start<K>, watcher: Watcher, built: K::Built) -> Self {
        let built = Arc::new(built);
        match start.kind.leaf(&built) {
            Some(leaf) => tracing::info!(
                serial = %leaf.serial_hex(),
                subject = %leaf.subject,
                "tls config loaded"
            ),
            None => tracing::info!("tls config loaded"),
        }
        Self {
            served: ArcSwap::new(start.kind.served(&built)),
            state: Mutex::new(State {
                materials: start.materials,
                template: start.template,
                source: start.source,
                watcher,
                order: Order::default(),
                current: built,
                generation: 1,
                applied_at: SystemTime::now(),
                last_reload_at: None,
                reloads_applied: 0,
                reloads_failed: 0,
                last_error: None,
                last_failure: None,
                skip_reported: false,
                detection: reloader::no_reloader(),
                expiry: Expiry::new(start.settings.expiry_window),
            }),
            kind: start.kind,
            subscribers: start.subscribers,
            settings: start.settings,
            reloader_running: AtomicBool::new(false),
        }
    }

    /// What the hot path uses now, borrowed: one atomic load, no lock and
    /// no reference count touched (hold it briefly: a store waits for no
    /// guard, but the old value lives until the guard goes).
    pub(crate) fn serving(&self) -> arc_swap::Guard<Arc<K::Served>> {
        self.served.load()
    }

    /// Where this engine's events go.
    pub(crate) fn subscribers(&self) -> &Arc<Subscribers<K::Event>> {
        &self.subscribers
    }

    fn state(&self) -> MutexGuard<'_, State<K>> {
        // Nothing in the critical sections panics; if something did, the
        // state is still consistent field by field.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the state, for a status page.
    pub(crate) fn snapshot(&self) -> Snapshot<K> {
        let state = self.state();
        Snapshot {
            generation: state.generation,
            applied_at: state.applied_at,
            last_reload_at: state.last_reload_at,
            reloads_applied: state.reloads_applied,
            reloads_failed: state.reloads_failed,
            last_error: state.last_error.clone(),
            materials: state.materials.clone(),
            source: state.source.clone(),
            current: state.current.clone(),
            detection: state.detection.clone(),
        }
    }

    /// The build now served.
    pub(crate) fn current(&self) -> Arc<K::Built> {
        self.state().current.clone()
    }

    /// Every path the detector reads now. Calls a user detector's method:
    /// never under a lock.
    pub(crate) fn watched_paths(&self) -> Vec<PathBuf> {
        let detector = self.state().watcher.detector().clone();
        detector.watched_paths()
    }

    /// Shows how the reloader detects changes in the status.
    pub(crate) fn set_detection(&self, detection: &Detection) {
        self.state().detection = detection.clone();
    }

    /// Reports served certificates that entered their warning window or
    /// are past their not-after (see [`Expiry`]).
    pub(crate) fn check_expiry(&self) {
        let current = self.current();
        let certs = self.kind.expiring(&current);
        let certs: Vec<(crate::CertKind, &LeafInfo)> =
            certs.iter().map(|(kind, cert)| (*kind, cert)).collect();
        let due = self
            .state()
            .expiry
            .check(&certs, SystemTime::now(), Instant::now());
        for Due {
            kind,
            cert,
            expired,
        } in due
        {
            let (serial, not_after) = (cert.serial_hex(), cert.not_after_rfc3339());
            let happening = if expired {
                tracing::error!(%kind, %serial, %not_after, subject = %cert.subject, "certificate expired and still served: nothing valid replaced it");
                Happening::Expired {
                    kind,
                    certificate: cert,
                }
            } else {
                tracing::warn!(%kind, %serial, %not_after, subject = %cert.subject, "certificate expires soon: renew it");
                Happening::ExpiresSoon {
                    kind,
                    certificate: cert,
                }
            };
            self.emit(happening);
        }
    }

    fn emit(&self, happening: Happening<'_, K::Built>) {
        self.subscribers.emit(self.kind.event(happening));
    }
}

impl<K: Kind> Driven for Engine<K> {
    fn tick(&self) -> BoxFuture<'_, bool> {
        Engine::tick(self).boxed()
    }

    fn check_expiry(&self) {
        Engine::check_expiry(self);
    }

    fn watched_paths(&self) -> Vec<PathBuf> {
        Engine::watched_paths(self)
    }

    fn set_detection(&self, detection: &Detection) {
        Engine::set_detection(self, detection);
    }

    fn reloader_flag(&self) -> &AtomicBool {
        &self.reloader_running
    }
}

impl<K: Kind> fmt::Debug for Engine<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Copied out first: a user detector's `Debug` never runs under the lock.
        let snapshot = self.snapshot();
        let mut f = f.debug_struct("Engine");
        f.field("materials", &snapshot.materials)
            .field("detector", &snapshot.source)
            .field("generation", &snapshot.generation);
        if let Some(leaf) = self.kind.leaf(&snapshot.current) {
            f.field("serial", &leaf.serial_hex());
        }
        f.finish_non_exhaustive()
    }
}

/// The event senders of one engine, or of a set of engines that share one
/// stream.
pub(crate) struct Subscribers<E> {
    senders: Mutex<Vec<async_channel::Sender<E>>>,
}

/// How many events a subscriber that does not keep up may fall behind.
const EVENT_BUFFER: usize = 256;

impl<E: Clone> Subscribers<E> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            senders: Mutex::new(Vec::new()),
        })
    }

    fn senders(&self) -> MutexGuard<'_, Vec<async_channel::Sender<E>>> {
        self.senders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new subscriber, from now on.
    pub(crate) fn subscribe(&self) -> async_channel::Receiver<E> {
        let (tx, rx) = async_channel::bounded(EVENT_BUFFER);
        let mut senders = self.senders();
        senders.retain(|tx| !tx.is_closed());
        senders.push(tx);
        rx
    }

    /// Sends `event` to every subscriber that keeps up.
    pub(crate) fn emit(&self, event: E) {
        self.senders()
            .retain(|tx| match tx.try_send(event.clone()) {
                Ok(()) | Err(async_channel::TrySendError::Full(_)) => true,
                Err(async_channel::TrySendError::Closed(_)) => false,
            });
    }
}

impl<E> fmt::Debug for Subscribers<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscribers").finish_non_exhaustive()
    }
}

/// Drops `value` on the blocking pool: freeing a config with a large client
/// CA store takes a while, and when these are the last references it should
/// not happen on the executor.
fn retire<T: Send + 'static>(value: T) {
    blocking::unblock(move || drop(value)).detach();
}
