//! The reload engine: the state behind every acceptor handle.
//!
//! # The state machine
//!
//! Four callers start a reload: the reloader's tick (background), and
//! `reload_now`, `set_materials` and `set_template` (manual). Each is a
//! *request* that goes through the same steps and ends in [`Shared::land`],
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
//!                                               └─no───► applied: config stored,
//!                                                        fingerprint committed
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
//! while it was built.
//!
//! **Locks.** `state` guards the materials, template, detector source, the
//! [`Watcher`] (committed fingerprint, last change seen, last failure), the
//! ticket sequence and floors, the served build and the counters of
//! [`Status`]. It is held for a few lines at a time: never across an
//! `.await`, never around user code (a detector factory, a user detector's
//! `Debug`), IO or a build. `subscribers` guards the event senders.
//!
//! **Wake-ups.** The reloader checks at every interval and, when
//! file-system events say a watched path moved, at once (an
//! [`EventWatch`] it owns, re-armed after every check). Events only wake a
//! check; the fingerprint decides.
//!
//! **The accept path takes no lock.** It loads `config`, an [`ArcSwap`],
//! once per handshake. A good build is stored there by the request that
//! built it, under the state lock so that stores happen in landing order.
//! There is no pending slot between the two: an `ArcSwap` store is already
//! atomic between accepts (an accept loads once, so a handshake never sees
//! half of a reload), no accept waits for a build, and an idle server
//! reports an applied reload at once. A slot would only defer the store to
//! the next accept, and make that accept do the applying.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tls_reload_build::{BuildError, Built, CaInfo, LeafInfo, Materials, Template};
use tls_reload_detect::{Detection, EventWatch, Fingerprint, Watcher};

mod engine;

use engine::Order;

use crate::deadline::Deadlines;
use crate::error::Cause;
use crate::expiry::{Due, Expiry};
use crate::source::DetectorSource;
use crate::{CertKind, ExpiryWindow, ReloadEvent, Status};

/// What a reconfiguration changes; the other half is taken as it stands
/// when the reconfiguration takes its ticket.
#[derive(Debug)]
pub(crate) enum Reconfigure {
    Materials(Materials),
    Template(Template),
}

pub(crate) struct Settings {
    pub(crate) interval: Duration,
    pub(crate) retry_interval: Duration,
    pub(crate) handshake_timeout: Option<Duration>,
    /// Whether file-system events wake the reloader's checks.
    pub(crate) events: bool,
    /// When a served certificate is reported as expiring soon.
    pub(crate) expiry_window: ExpiryWindow,
    /// Makes every event watch fail to be added (a test hook).
    #[cfg(feature = "test-util")]
    pub(crate) event_failure: Option<String>,
    /// Awaited between a background build and its landing (a test hook).
    #[cfg(feature = "test-util")]
    pub(crate) before_background_apply: Option<Hook>,
}

/// See [`Builder::before_background_apply`](crate::Builder::before_background_apply).
#[cfg(feature = "test-util")]
pub(crate) type Hook = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

pub(crate) struct Shared {
    /// What new handshakes use: loaded once per accept, the only thing the
    /// accept path touches.
    config: ArcSwap<ServerConfig>,
    state: Mutex<State>,
    subscribers: Mutex<Vec<async_channel::Sender<ReloadEvent>>>,
    pub(crate) settings: Settings,
    /// Handshake deadlines, when handshakes have a timeout.
    pub(crate) deadlines: Option<Deadlines>,
    /// Set while a reloader runs: a second one ends at once.
    reloader_running: AtomicBool,
    /// Never sent on: dropped with the last handle, which ends the reloaders.
    _alive: async_channel::Sender<()>,
    pub(crate) alive: async_channel::Receiver<()>,
}

struct State {
    materials: Materials,
    template: Template,
    source: DetectorSource,
    /// The detector, the committed fingerprint (of the files the served
    /// config was built from), the last change seen and the last failure.
    watcher: Watcher,
    order: Order,
    current: Arc<Built>,
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

pub(crate) struct Start {
    pub(crate) materials: Materials,
    pub(crate) template: Template,
    pub(crate) source: DetectorSource,
    pub(crate) settings: Settings,
}

impl Shared {
    /// Builds the first config, failing fast.
    pub(crate) async fn start(start: Start) -> Result<Arc<Self>, BuildError> {
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
        Ok(Self::new(
            start,
            Watcher::with_committed(detector, committed),
            built,
        ))
    }

    /// Builds the first config on the current thread, failing fast.
    pub(crate) fn start_blocking(start: Start) -> Result<Arc<Self>, BuildError> {
        let detector = start.source.make(&start.materials, &start.template);
        let committed = futures::executor::block_on(detector.fingerprint()).ok();
        let built = tls_reload_build::build_blocking(&start.materials, &start.template, None)?;
        Ok(Self::new(
            start,
            Watcher::with_committed(detector, committed),
            built,
        ))
    }

    fn new(start: Start, watcher: Watcher, built: Built) -> Arc<Self> {
        let (alive_tx, alive_rx) = async_channel::bounded(1);
        let built = Arc::new(built);
        tracing::info!(
            serial = %built.leaf().serial_hex(),
            subject = %built.leaf().subject,
            "tls config loaded"
        );
        Arc::new(Self {
            config: ArcSwap::new(built.config().clone()),
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
                detection: no_reloader(),
                expiry: Expiry::new(start.settings.expiry_window),
            }),
            subscribers: Mutex::new(Vec::new()),
            deadlines: start.settings.handshake_timeout.map(Deadlines::new),
            settings: start.settings,
            reloader_running: AtomicBool::new(false),
            _alive: alive_tx,
            alive: alive_rx,
        })
    }

    /// The config for a new handshake: one atomic load, no lock.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
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
            detection: state.detection.clone(),
            client_cas: state.current.client_cas().to_vec(),
            crls: state.current.crls().to_vec(),
        }
    }

    /// A new event watch for a reloader, as the settings say.
    pub(crate) fn event_watch(&self) -> EventWatch {
        #[cfg(feature = "test-util")]
        if let Some(reason) = &self.settings.event_failure {
            return EventWatch::failing(reason.clone());
        }
        if self.settings.events {
            EventWatch::new()
        } else {
            EventWatch::off("events off")
        }
    }

    /// Re-arms `events` on the paths the detector reads now, off the
    /// executor, and shows the result in the status.
    pub(crate) async fn rearm(&self, mut events: EventWatch) -> EventWatch {
        let detector = self.state().watcher.detector().clone();
        // A user detector's method: called outside the lock.
        let paths = detector.watched_paths();
        let events = blocking::unblock(move || {
            events.arm(&paths);
            events
        })
        .await;
        self.state().detection = events.detection().clone();
        events
    }

    /// Reports served certificates that entered their warning window or
    /// are past their not-after (see [`Expiry`]).
    pub(crate) fn check_expiry(&self) {
        let due = {
            let mut state = self.state();
            let current = state.current.clone();
            let cas: Vec<LeafInfo> = current
                .client_cas()
                .iter()
                .map(CaInfo::certificate)
                .collect();
            let certs: Vec<(CertKind, &LeafInfo)> =
                std::iter::once((CertKind::Leaf, current.leaf()))
                    .chain(cas.iter().map(|ca| (CertKind::ClientCa, ca)))
                    .collect();
            state
                .expiry
                .check(&certs, SystemTime::now(), Instant::now())
        };
        for Due {
            kind,
            cert,
            expired,
        } in due
        {
            let (serial, not_after) = (cert.serial_hex(), cert.not_after_rfc3339());
            let event = if expired {
                tracing::error!(%kind, %serial, %not_after, subject = %cert.subject, "certificate expired and still served: nothing valid replaced it");
                ReloadEvent::Expired {
                    kind,
                    certificate: cert,
                }
            } else {
                tracing::warn!(%kind, %serial, %not_after, subject = %cert.subject, "certificate expires soon: renew it");
                ReloadEvent::ExpiresSoon {
                    kind,
                    certificate: cert,
                }
            };
            self.emit(event);
        }
    }

    pub(crate) fn current(&self) -> Arc<Built> {
        self.state().current.clone()
    }

    /// Marks a reloader as running; `None` if one already is.
    pub(crate) fn claim_reloader(self: &Arc<Self>) -> Option<ReloaderClaim> {
        let claimed = self
            .reloader_running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        claimed.then(|| ReloaderClaim(Arc::downgrade(self)))
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

/// Held by the running reloader; frees the place when it ends.
pub(crate) struct ReloaderClaim(std::sync::Weak<Shared>);

impl Drop for ReloaderClaim {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.state().detection = no_reloader();
            shared.reloader_running.store(false, Ordering::Release);
        }
    }
}

fn no_reloader() -> Detection {
    Detection::PollOnly {
        reason: "no reloader is running".into(),
    }
}

/// Drops `value` on the blocking pool: freeing a config with a large client
/// CA store takes a while, and when these are the last references it should
/// not happen on the executor.
fn retire<T: Send + 'static>(value: T) {
    blocking::unblock(move || drop(value)).detach();
}
