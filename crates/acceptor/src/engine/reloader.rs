//! The reloader loop: one per handle, driving one engine or a set of them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::{self, BoxFuture, Either};
use tls_reload_detect::{Detection, EventWatch, Wake};

/// What one reloader drives: an [`Engine`](super::Engine), or a handle's
/// state that drives several. Dyn-compatible, so engines of different
/// kinds can be driven together.
pub(crate) trait Driven: Send + Sync + 'static {
    /// One check of everything driven: detect, and on a change build and
    /// apply. Returns whether the files were exactly those served.
    fn tick(&self) -> BoxFuture<'_, bool>;

    /// Reports served certificates entering their warning window or past
    /// their not-after.
    fn check_expiry(&self);

    /// Called before a [`tick`](Driven::tick) with the paths the events
    /// that woke it named, or `None` for a look at everything (the poll,
    /// lost events). A hint only: a check may look at less when it has
    /// one, and must look at everything without. Default: ignored.
    fn hint(&self, _changed: Option<&[PathBuf]>) {}

    /// Every path the checks read, for the event watch. May call a user
    /// detector: never under a lock.
    fn watched_paths(&self) -> Vec<PathBuf>;

    /// Shows how changes are detected in the status.
    fn set_detection(&self, detection: &Detection);

    /// Set while a reloader runs: a second one ends at once.
    fn reloader_flag(&self) -> &AtomicBool;
}

/// How a reloader waits between checks.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// The poll: a check at least this often.
    pub(crate) interval: Duration,
    /// Whether file-system events wake a check at once.
    pub(crate) events: bool,
    /// Makes every event watch fail to be added (a test hook).
    #[cfg(feature = "test-util")]
    pub(crate) event_failure: Option<String>,
}

impl Options {
    fn event_watch(&self) -> EventWatch {
        #[cfg(feature = "test-util")]
        if let Some(reason) = &self.event_failure {
            return EventWatch::failing(reason.clone());
        }
        if self.events {
            EventWatch::new()
        } else {
            EventWatch::off("events off")
        }
    }
}

/// The reloader of what `project` finds in `handle` (its engine, or a
/// set): checks at every interval and when events say a watched path
/// moved, until `alive` closes (every handle dropped) or `handle` is gone.
/// `what` names the handle in logs ("acceptor").
pub(crate) async fn run<H: Send + Sync + 'static>(
    handle: Weak<H>,
    project: for<'a> fn(&'a H) -> &'a dyn Driven,
    alive: async_channel::Receiver<()>,
    options: Options,
    what: &'static str,
) {
    let Some(strong) = handle.upgrade() else {
        return;
    };
    let Some(_claim) = Claim::take(&strong, project) else {
        tracing::warn!("a reloader is already running for this {what}; this one ends");
        return;
    };
    let mut events = rearm(project(&strong), options.event_watch()).await;
    project(&strong).check_expiry();
    drop(strong);
    loop {
        // The poll is re-armed after each check rather than on a fixed
        // beat, which would fire missed ticks back to back after a slow one.
        let wake = {
            let wake = events.wait(Instant::now() + options.interval);
            let stop = alive.recv();
            futures::pin_mut!(wake, stop);
            match future::select(wake, stop).await {
                Either::Left((wake, _)) => wake,
                Either::Right(_) => {
                    tracing::debug!("{what} dropped; reloader stops");
                    return;
                }
            }
        };
        let Some(strong) = handle.upgrade() else {
            return;
        };
        let driven = project(&strong);
        let changed = events.take_changed().filter(|_| wake == Wake::Event);
        driven.hint(changed.as_deref());
        let quiet = driven.tick().await;
        driven.check_expiry();
        // What the paths resolve to can only have moved if something did:
        // an idle poll costs what it costs without events.
        let moved = !quiet || wake == Wake::Event || !events.detection().is_events();
        if events.has_backend() && moved {
            events = rearm(driven, events).await;
        }
    }
}

/// Re-arms `events` on the paths `driven` reads now, off the executor, and
/// shows the result in the status.
async fn rearm(driven: &dyn Driven, mut events: EventWatch) -> EventWatch {
    let paths = driven.watched_paths();
    let events = blocking::unblock(move || {
        events.arm(&paths);
        events
    })
    .await;
    driven.set_detection(events.detection());
    events
}

/// Held by the running reloader; frees the place when it ends.
struct Claim<H> {
    handle: Weak<H>,
    project: for<'a> fn(&'a H) -> &'a dyn Driven,
}

impl<H> Claim<H> {
    /// Marks a reloader as running; `None` if one already is.
    fn take(handle: &Arc<H>, project: for<'a> fn(&'a H) -> &'a dyn Driven) -> Option<Self> {
        let claimed = project(handle)
            .reloader_flag()
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        claimed.then(|| Self {
            handle: Arc::downgrade(handle),
            project,
        })
    }
}

impl<H> Drop for Claim<H> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.upgrade() {
            let driven = (self.project)(&handle);
            driven.set_detection(&no_reloader());
            driven.reloader_flag().store(false, Ordering::Release);
        }
    }
}

/// What ends a handle's reloader: the receiving end closes when the last
/// handle (which holds the sender, never sent on) is dropped, even while
/// the reloader holds the handle's state for a check.
#[derive(Debug)]
pub(crate) struct Lifeline {
    _alive: async_channel::Sender<()>,
    alive: async_channel::Receiver<()>,
}

impl Lifeline {
    pub(crate) fn new() -> Self {
        let (alive_tx, alive_rx) = async_channel::bounded(1);
        Self {
            _alive: alive_tx,
            alive: alive_rx,
        }
    }

    /// Closes when the last handle is dropped.
    pub(crate) fn watch(&self) -> async_channel::Receiver<()> {
        self.alive.clone()
    }
}

/// The detection a status shows while no reloader runs.
pub(crate) fn no_reloader() -> Detection {
    Detection::PollOnly {
        reason: "no reloader is running".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tls_reload_build::{BuildError, LeafInfo, Resumption};
    use tls_reload_detect::Strategy;

    use super::Driven;
    use crate::engine::{Engine, Happening, Kind, Settings, Start, Subscribers};
    use crate::source::DetectorSource;
    use crate::{CertKind, ExpiryWindow};

    /// A kind that builds a file's text, counting its builds.
    #[derive(Clone, Default)]
    struct Text {
        builds: Arc<AtomicUsize>,
    }

    impl Kind for Text {
        type Materials = PathBuf;
        type Template = ();
        type Built = String;
        type Served = String;
        type Event = String;

        fn build(&self, path: &PathBuf, _: &(), _: Option<&String>) -> Result<String, BuildError> {
            self.builds.fetch_add(1, Ordering::SeqCst);
            std::fs::read_to_string(path).map_err(|source| BuildError::Read {
                path: path.clone(),
                source,
            })
        }

        fn served(&self, built: &String) -> Arc<String> {
            Arc::new(built.clone())
        }

        fn paths(&self, path: &PathBuf) -> Vec<PathBuf> {
            vec![path.clone()]
        }

        fn file_size_limit(&self, _: &()) -> u64 {
            1024
        }

        fn leaf<'a>(&self, _: &'a String) -> Option<&'a LeafInfo> {
            None
        }

        fn resumption(&self, _: &String) -> Resumption {
            Resumption::Fresh
        }

        fn expiring(&self, _: &String) -> Vec<(CertKind, LeafInfo)> {
            Vec::new()
        }

        fn event(&self, happening: Happening<'_, String>) -> String {
            match happening {
                Happening::Applied { built, .. } => format!("applied {built}"),
                other => format!("{other:?}"),
            }
        }
    }

    fn engine(path: &Path, subscribers: &Arc<Subscribers<String>>) -> (Arc<Engine<Text>>, Text) {
        let kind = Text::default();
        let start = Start {
            kind: kind.clone(),
            materials: path.to_owned(),
            template: (),
            source: DetectorSource::Strategy(Strategy::ContentHash),
            settings: Settings {
                retry_interval: std::time::Duration::from_secs(30),
                expiry_window: ExpiryWindow::default(),
                #[cfg(feature = "test-util")]
                before_background_apply: None,
            },
            subscribers: subscribers.clone(),
        };
        let engine = Engine::start_blocking(start).expect("first build");
        (Arc::new(engine), kind)
    }

    #[test]
    fn engines_driven_together_rebuild_only_the_one_whose_files_moved() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a_path, b_path) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a_path, "a1").expect("write");
        std::fs::write(&b_path, "b1").expect("write");
        let subscribers = Subscribers::new();
        let events = subscribers.subscribe();
        let (a, a_kind) = engine(&a_path, &subscribers);
        let (b, b_kind) = engine(&b_path, &subscribers);
        let engines: [Arc<dyn Driven>; 2] = [a.clone(), b.clone()];
        let tick = || {
            smol::block_on(async {
                let mut quiet = true;
                for engine in &engines {
                    quiet &= engine.tick().await;
                }
                quiet
            })
        };
        assert_eq!(a.watched_paths(), std::slice::from_ref(&a_path));

        assert!(tick(), "nothing moved");
        std::fs::write(&a_path, "a2").expect("write");
        assert!(!tick());
        assert_eq!(**a.serving(), "a2");
        assert_eq!(**b.serving(), "b1");
        assert_eq!(a_kind.builds.load(Ordering::SeqCst), 2);
        assert_eq!(b_kind.builds.load(Ordering::SeqCst), 1, "b was not rebuilt");
        assert_eq!((a.snapshot().generation, b.snapshot().generation), (2, 1));
        let seen: Vec<String> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert!(seen.contains(&"applied a2".to_owned()), "{seen:?}");
    }
}
