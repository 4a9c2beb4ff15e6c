//! Named pairs behind one acceptor: one engine per pair, driven by the
//! acceptor's reloader, and the directories they come from.
//!
//! ```text
//!  tick ──► stat every served pair's files, in one trip to the blocking pool
//!       ──► tick the engines whose files moved, or that are not settled:
//!           each has its own fingerprint, build, settle rules, last error;
//!           an applied build is stored into the pair's SNI slot (a pair
//!           whose files are all gone is left to the rescan: no failure)
//!       ──► rescan the directories whose own metadata moved
//!            ├─ new stem ───────► start an engine (blocking pool); built: served, `PairApplied`
//!            │                    broken: kept aside, `PairFailed`, retried when its files move
//!            ├─ stem gone ──────► missing since now; not ticked
//!            │   still gone after the confirmation time: dropped, `PairRemoved`
//!            └─ stem back ──────► no longer missing (a remove-and-re-add never flaps)
//! ```
//!
//! `state` guards the members; it is never held across an `.await` (the
//! members are copied out, ticked, and the results put back).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustls::sign::CertifiedKey;
use tls_reload_build::{
    build_pair_blocking, pairs_in_dir, BuildError, BuiltPair, LeafInfo, PairFiles, Resumption,
    Template,
};
use tls_reload_detect::{Detection, Detector, Fingerprint, Strategy};

use crate::engine::{self, Driven, Engine, Happening, Kind, Start, Subscribers};
use crate::source::DetectorSource;
use crate::status::PairStatus;
use crate::{CertKind, ReloadError, ReloadEvent, SniResolver};

/// How long a pair's files must stay gone before it is dropped, at least:
/// a pair between the two renames of an update, or removed and written
/// again, is not dropped.
pub(crate) const REMOVAL_CONFIRMATION: Duration = Duration::from_secs(1);

/// How often the pairs' certificates are checked for expiry, at most.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// The kind of a named pair's engine: a certified key for the SNI table.
#[derive(Clone)]
pub(crate) struct PairKind {
    stem: Arc<str>,
    table: Arc<SniResolver>,
    /// Off while a batch of new pairs is loaded: their first versions go
    /// into the table together, with one rebuild of the name index.
    live: Arc<AtomicBool>,
}

impl Kind for PairKind {
    type Materials = PairFiles;
    type Template = Template;
    type Built = BuiltPair;
    type Served = CertifiedKey;
    type Event = ReloadEvent;

    fn build(
        &self,
        materials: &PairFiles,
        template: &Template,
        _previous: Option<&BuiltPair>,
    ) -> Result<BuiltPair, BuildError> {
        build_pair_blocking(materials, template)
    }

    fn served(&self, built: &BuiltPair) -> Arc<CertifiedKey> {
        // Called where the engine applies a build, in landing order: the
        // pair's slot follows its engine.
        if self.live.load(Ordering::Acquire) {
            self.table.insert(built);
        }
        built.certified_key().clone()
    }

    fn paths(&self, materials: &PairFiles) -> Vec<PathBuf> {
        materials.paths()
    }

    fn file_size_limit(&self, template: &Template) -> u64 {
        template.file_size_limit()
    }

    fn leaf<'a>(&self, built: &'a BuiltPair) -> Option<&'a LeafInfo> {
        Some(built.leaf())
    }

    fn resumption(&self, _built: &BuiltPair) -> Resumption {
        // Sessions live in the acceptor's config, which a pair's reload
        // does not touch.
        Resumption::Kept
    }

    fn expiring(&self, built: &BuiltPair) -> Vec<(CertKind, LeafInfo)> {
        vec![(CertKind::Leaf, built.leaf().clone())]
    }

    fn event(&self, happening: Happening<'_, BuiltPair>) -> ReloadEvent {
        let stem = self.stem.to_string();
        let event = match happening {
            Happening::Applied {
                generation, built, ..
            } => {
                return ReloadEvent::PairApplied {
                    stem,
                    generation,
                    leaf: built.leaf().clone(),
                }
            }
            Happening::Failed { error } => return ReloadEvent::PairFailed { stem, error },
            Happening::Detected { paths } => ReloadEvent::Detected { paths },
            Happening::Built { built } => ReloadEvent::Built {
                leaf: built.leaf().clone(),
                resumption: Resumption::Kept,
            },
            Happening::Skipped { reason } => ReloadEvent::Skipped { reason },
            Happening::ExpiresSoon { kind, certificate } => {
                ReloadEvent::ExpiresSoon { kind, certificate }
            }
            Happening::Expired { kind, certificate } => ReloadEvent::Expired { kind, certificate },
        };
        ReloadEvent::Pair {
            stem,
            event: Box::new(event),
        }
    }
}

/// Where named pairs come from.
#[derive(Clone, Debug, Default)]
pub(crate) struct PairSources {
    /// Directories whose pairs come and go.
    pub(crate) dirs: Vec<PathBuf>,
    /// Pairs given one by one: never dropped.
    pub(crate) pairs: Vec<PairFiles>,
}

impl PairSources {
    pub(crate) fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.pairs.is_empty()
    }

    /// Every pair now, by stem (a pair given by hand wins over a
    /// directory's of the same stem), and the directories' metadata.
    fn list(&self) -> Result<(BTreeMap<String, PairFiles>, Vec<DirStamp>), BuildError> {
        let mut found = BTreeMap::new();
        let mut stamps = Vec::with_capacity(self.dirs.len());
        for dir in &self.dirs {
            stamps.push(DirStamp::of(dir));
            for pair in pairs_in_dir(dir)? {
                found.insert(pair.stem().to_owned(), pair);
            }
        }
        for pair in &self.pairs {
            found.insert(pair.stem().to_owned(), pair.clone());
        }
        Ok((found, stamps))
    }
}

/// A directory's own metadata: an entry added, removed or renamed moves
/// it; a file rewritten in place does not (its pair's engine sees that).
#[derive(Clone, Debug, PartialEq, Eq)]
struct DirStamp(Option<(u64, u64, i64, i64, i64, i64)>);

impl DirStamp {
    fn of(dir: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self(std::fs::metadata(dir).ok().map(|m| {
            (
                m.dev(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        }))
    }
}

/// What the named pairs of an acceptor start from.
pub(crate) struct NamedStart {
    pub(crate) table: Arc<SniResolver>,
    pub(crate) sources: PairSources,
    pub(crate) template: Template,
    pub(crate) strategy: Strategy,
    pub(crate) settings: engine::Settings,
    pub(crate) subscribers: Arc<Subscribers<ReloadEvent>>,
    /// The reloader's interval: a removal is confirmed after it, at least.
    pub(crate) interval: Duration,
    /// No default pair: no pair at all is an error.
    pub(crate) require_pairs: bool,
}

/// A file's metadata, following symlinks: device, inode, size, mtime and
/// ctime (nanoseconds); `None` when it cannot be read. A write, a rename
/// over it or a symlink swap moves it; the pair's engine then looks with
/// its own detector.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp(Option<(u64, u64, u64, i64, i64, i64, i64)>);

impl FileStamp {
    fn of(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self(std::fs::metadata(path).ok().map(|m| {
            (
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        }))
    }
}

/// The stem of a directory entry's name (`a` for `a.pem`).
fn stem_of(name: &std::ffi::OsStr) -> Option<&str> {
    Path::new(name).file_stem()?.to_str()
}

/// The named pairs of an acceptor.
pub(crate) struct Named {
    table: Arc<SniResolver>,
    sources: PairSources,
    /// The directories as events name them (canonical).
    canonical_dirs: Vec<PathBuf>,
    template: Template,
    strategy: Strategy,
    settings: engine::Settings,
    subscribers: Arc<Subscribers<ReloadEvent>>,
    confirmation: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    members: BTreeMap<String, Member>,
    /// What each served pair's files looked like at the last check.
    file_stamps: HashMap<String, Vec<FileStamp>>,
    /// The served pairs whose last tick did not end settled: ticked again
    /// whether or not their files moved.
    unsettled: HashSet<String>,
    /// For the next check, the names of the entries of the pair
    /// directories the events named (see [`Named::hint`]); `None`: look at
    /// every pair.
    hint: Option<Vec<std::ffi::OsString>>,
    /// When the pairs' expiry was last checked.
    expiry_checked_at: Option<Instant>,
    /// The detection last shown to the pairs' engines.
    detection: Option<Detection>,
    /// The directories' metadata at the last scan.
    stamps: Vec<DirStamp>,
    /// Why the last scan failed, reported once.
    scan_error: Option<String>,
}

#[derive(Clone)]
enum Member {
    Serving {
        engine: Arc<Engine<PairKind>>,
        files: PairFiles,
        missing_since: Option<Instant>,
    },
    /// Never built: waits for its files to move.
    Broken {
        files: PairFiles,
        error: ReloadError,
        detector: Arc<dyn Detector>,
        fingerprint: Option<Fingerprint>,
        missing_since: Option<Instant>,
    },
}

impl Member {
    fn missing_since(&mut self) -> &mut Option<Instant> {
        match self {
            Self::Serving { missing_since, .. } | Self::Broken { missing_since, .. } => {
                missing_since
            }
        }
    }

    fn files(&self) -> &PairFiles {
        match self {
            Self::Serving { files, .. } | Self::Broken { files, .. } => files,
        }
    }
}

/// A first build of a pair: its engine, not yet live, or why not.
enum Started {
    Serving(Arc<Engine<PairKind>>, Arc<AtomicBool>),
    Broken(ReloadError, Arc<dyn Detector>, Option<Fingerprint>),
}

impl Named {
    /// Lists and builds every pair, on the calling thread. A directory that
    /// cannot be listed fails; a pair that does not build is reported and
    /// kept aside. With `require_pairs` (no default pair), no pair built
    /// at all fails too.
    pub(crate) fn load_blocking(start: NamedStart) -> Result<Self, BuildError> {
        let require_pairs = start.require_pairs;
        let canonical_dirs = start
            .sources
            .dirs
            .iter()
            .map(|dir| std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()))
            .collect();
        let named = Self {
            table: start.table,
            canonical_dirs,
            sources: start.sources,
            template: start.template,
            strategy: start.strategy,
            settings: start.settings,
            subscribers: start.subscribers,
            confirmation: start.interval.max(REMOVAL_CONFIRMATION),
            state: Mutex::new(State::default()),
        };
        let (found, stamps) = named.sources.list()?;
        let mut members = BTreeMap::new();
        let mut first_error = None;
        let mut live = Vec::new();
        for (stem, files) in found {
            match named.start_blocking(&stem, &files) {
                Started::Serving(engine, flag) => {
                    live.push((engine.clone(), flag));
                    members.insert(
                        stem,
                        Member::Serving {
                            engine,
                            files,
                            missing_since: None,
                        },
                    );
                }
                Started::Broken(error, detector, fingerprint) => {
                    tracing::warn!(pair = %stem, %error, "a named pair does not build; the others are served");
                    first_error.get_or_insert_with(|| error.to_string());
                    members.insert(
                        stem,
                        Member::Broken {
                            files,
                            error,
                            detector,
                            fingerprint,
                            missing_since: None,
                        },
                    );
                }
            }
        }
        if require_pairs && live.is_empty() {
            return Err(BuildError::NoPairs {
                dirs: named.sources.dirs.clone(),
                first_error,
            });
        }
        named.go_live(live);
        {
            let mut state = named.state();
            state.members = members;
            state.stamps = stamps;
        }
        Ok(named)
    }

    /// Starts a pair's engine, not yet live.
    fn start_blocking(&self, stem: &str, files: &PairFiles) -> Started {
        let live = Arc::new(AtomicBool::new(false));
        let start = Start {
            kind: PairKind {
                stem: stem.into(),
                table: self.table.clone(),
                live: live.clone(),
            },
            materials: files.clone(),
            template: self.template.clone(),
            source: DetectorSource::Strategy(self.strategy),
            settings: self.settings.clone(),
            subscribers: self.subscribers.clone(),
        };
        match Engine::start_blocking(start) {
            Ok(engine) => Started::Serving(Arc::new(engine), live),
            Err(error) => {
                let detector: Arc<dyn Detector> =
                    Arc::new(tls_reload_detect::Composite::from_paths_with_limit(
                        self.strategy,
                        files.paths(),
                        self.template.file_size_limit(),
                    ));
                let fingerprint = futures::executor::block_on(detector.fingerprint()).ok();
                Started::Broken(error.into(), detector, fingerprint)
            }
        }
    }

    /// Puts the first versions of started pairs into the table, with one
    /// rebuild of the name index, and lets their engines store from now on.
    fn go_live(&self, started: Vec<(Arc<Engine<PairKind>>, Arc<AtomicBool>)>) {
        if started.is_empty() {
            return;
        }
        self.table.update(|batch| {
            for (engine, _) in &started {
                batch.insert(BuiltPair::clone(&engine.current()));
            }
        });
        for (_, live) in started {
            live.store(true, Ordering::Release);
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One check: rescan the directories that moved, then tick every pair
    /// present. Returns whether nothing was to be done.
    /// What the events that woke the next check named (`None`: look at
    /// everything). With a hint, the check stats only the directory pairs
    /// named, the unsettled ones and the pairs given one by one, instead
    /// of every pair's files.
    pub(crate) fn hint(&self, changed: Option<&[PathBuf]>) {
        let names = changed.map(|paths| {
            paths
                .iter()
                .filter(|path| {
                    path.parent()
                        .is_some_and(|parent| self.canonical_dirs.iter().any(|dir| dir == parent))
                })
                .filter_map(|path| path.file_name().map(ToOwned::to_owned))
                .collect()
        });
        self.state().hint = names;
    }

    pub(crate) async fn tick(self: &Arc<Self>) -> bool {
        let mut quiet = true;
        let (hint, unsettled) = {
            let mut state = self.state();
            (state.hint.take(), state.unsettled.clone())
        };
        let looked_at = |stem: &str| {
            hint.as_ref()
                .is_none_or(|hint| hint.iter().any(|name| stem_of(name) == Some(stem)))
                || unsettled.contains(stem)
                || self.sources.pairs.iter().any(|pair| pair.stem() == stem)
        };
        // Only the members looked at are copied out (not 10,000 of them
        // for one event).
        let members: Vec<(String, Member)> = self
            .state()
            .members
            .iter()
            .filter(|(stem, member)| match member {
                Member::Serving { .. } => looked_at(stem),
                Member::Broken { .. } => true,
            })
            .map(|(stem, member)| (stem.clone(), member.clone()))
            .collect();
        // One look at every served pair's files, in one trip to the
        // blocking pool: only the engines whose files moved (or that are
        // not settled: a failure to retry, files still changing) are
        // ticked, so an idle check, or a change to one pair, does not cost
        // one fingerprint per pair.
        let looked: Vec<(String, Vec<PathBuf>)> = members
            .iter()
            .filter_map(|(stem, member)| match member {
                Member::Serving {
                    files,
                    missing_since: None,
                    ..
                } => Some((stem.clone(), files.paths())),
                _ => None,
            })
            .collect();
        let looked: HashMap<String, Vec<FileStamp>> = blocking::unblock(move || {
            looked
                .into_iter()
                .map(|(stem, paths)| (stem, paths.iter().map(|p| FileStamp::of(p)).collect()))
                .collect()
        })
        .await;
        for (stem, member) in members {
            match member {
                Member::Serving {
                    engine,
                    missing_since: None,
                    ..
                } => {
                    let stamps = looked.get(&stem).cloned().unwrap_or_default();
                    // Every file gone: maybe removed, which the rescan
                    // below confirms or not; not a failure to report.
                    let gone = stamps.iter().all(|stamp| stamp.0.is_none())
                        && !self.sources.pairs.iter().any(|pair| pair.stem() == stem);
                    let moved = {
                        let mut state = self.state();
                        let unsettled = state.unsettled.contains(&stem);
                        let moved = state.file_stamps.get(&stem) != Some(&stamps);
                        state.file_stamps.insert(stem.clone(), stamps);
                        moved || unsettled
                    };
                    if !moved || gone {
                        continue;
                    }
                    let settled = engine.tick().await;
                    let mut state = self.state();
                    if settled {
                        state.unsettled.remove(&stem);
                    } else {
                        state.unsettled.insert(stem);
                    }
                    quiet &= settled;
                }
                Member::Broken {
                    files,
                    detector,
                    fingerprint,
                    missing_since: None,
                    ..
                } => {
                    let now = detector.fingerprint().await.ok();
                    if now != fingerprint {
                        quiet = false;
                        self.add(vec![(stem, files)]).await;
                    }
                }
                _ => {}
            }
        }
        // After the pairs' own checks: a pair replaced by a rename (which
        // moves the directory) is served before the directory is listed.
        // When the events named only files of pairs that are still there
        // (and dot-files: a renewer's temporary file), which pairs exist
        // has not changed, and the directory is not listed again.
        let same_pairs = hint.as_ref().is_some_and(|names| {
            let state = self.state();
            names.iter().all(|name| {
                let Some(text) = name.to_str() else {
                    return false;
                };
                if text.starts_with('.') {
                    return true;
                }
                let Some(stem) = stem_of(name) else {
                    return false;
                };
                let present = looked
                    .get(stem)
                    .is_some_and(|stamps| stamps.iter().all(|stamp| stamp.0.is_some()));
                let its_file = state.members.get(stem).is_some_and(|member| {
                    member
                        .files()
                        .paths()
                        .iter()
                        .any(|path| path.file_name() == Some(name.as_os_str()))
                });
                present && its_file
            })
        });
        quiet &= self.rescan(same_pairs).await;
        quiet
    }

    /// Lists the directories if their metadata moved (or a pair is missing
    /// and waits for confirmation), and acts on what came and went.
    /// With `same_pairs`, the events said which entries moved and none
    /// adds or removes a pair: the directories' metadata is taken as seen.
    async fn rescan(self: &Arc<Self>, same_pairs: bool) -> bool {
        if self.sources.dirs.is_empty() {
            return true;
        }
        let stamps: Vec<DirStamp> = self.sources.dirs.iter().map(|d| DirStamp::of(d)).collect();
        let waiting = {
            let mut state = self.state();
            if same_pairs {
                state.stamps = stamps.clone();
            }
            let moved = stamps != state.stamps;
            let waiting = state
                .members
                .values_mut()
                .any(|member| member.missing_since().is_some());
            if !moved && !waiting {
                return true;
            }
            waiting
        };
        let sources = self.sources.clone();
        let listed = blocking::unblock(move || sources.list()).await;
        let (found, stamps) = match listed {
            Ok(listed) => listed,
            Err(error) => {
                let message = error.to_string();
                let mut state = self.state();
                if state.scan_error.as_deref() != Some(message.as_str()) {
                    state.scan_error = Some(message.clone());
                    drop(state);
                    tracing::warn!(error = %message, "cannot list a certificate directory; its pairs stay as they are");
                }
                return false;
            }
        };
        let now = Instant::now();
        let (new, removed) = {
            let mut state = self.state();
            state.scan_error = None;
            state.stamps = stamps;
            let mut removed = Vec::new();
            for (stem, member) in state.members.iter_mut() {
                let present = found.get(stem);
                let missing = member.missing_since();
                match (present, *missing) {
                    (Some(_), Some(_)) => *missing = None,
                    (None, None) => *missing = Some(now),
                    (None, Some(since)) if now.duration_since(since) >= self.confirmation => {
                        removed.push(stem.clone());
                    }
                    _ => {}
                }
            }
            for stem in &removed {
                state.members.remove(stem);
                state.file_stamps.remove(stem);
                state.unsettled.remove(stem);
            }
            let new: Vec<(String, PairFiles)> = found
                .into_iter()
                .filter(|(stem, files)| {
                    state
                        .members
                        .get(stem)
                        .is_none_or(|member| member.files() != files)
                })
                .collect();
            (new, removed)
        };
        if !removed.is_empty() {
            self.table.update(|batch| {
                for stem in &removed {
                    batch.remove(stem.as_str());
                }
            });
            for stem in removed {
                tracing::info!(pair = %stem, "named pair removed: its files are gone");
                self.subscribers.emit(ReloadEvent::PairRemoved { stem });
            }
        }
        let quiet = new.is_empty() && !waiting;
        if !new.is_empty() {
            self.add(new).await;
        }
        quiet
    }

    /// Starts the engines of pairs that appeared (or whose layout
    /// changed), on the blocking pool, and serves those that build.
    async fn add(self: &Arc<Self>, pairs: Vec<(String, PairFiles)>) {
        let this = self.clone();
        let started: Vec<(String, PairFiles, Started)> = blocking::unblock(move || {
            pairs
                .into_iter()
                .map(|(stem, files)| {
                    let started = this.start_blocking(&stem, &files);
                    (stem, files, started)
                })
                .collect()
        })
        .await;
        let mut live = Vec::new();
        let mut events = Vec::new();
        {
            let mut state = self.state();
            for (stem, files, started) in started {
                match started {
                    Started::Serving(engine, flag) => {
                        let current = engine.current();
                        events.push(ReloadEvent::PairApplied {
                            stem: stem.clone(),
                            generation: 1,
                            leaf: current.leaf().clone(),
                        });
                        live.push((engine.clone(), flag));
                        state.members.insert(
                            stem,
                            Member::Serving {
                                engine,
                                files,
                                missing_since: None,
                            },
                        );
                    }
                    Started::Broken(error, detector, fingerprint) => {
                        let repeated = matches!(
                            state.members.get(&stem),
                            Some(Member::Broken { error: old, .. }) if old.cause() == error.cause()
                        );
                        match state.members.get_mut(&stem) {
                            // A served pair whose layout changed and does
                            // not build: it keeps serving.
                            Some(Member::Serving { .. }) => {}
                            _ => {
                                state.members.insert(
                                    stem.clone(),
                                    Member::Broken {
                                        files,
                                        error: error.clone(),
                                        detector,
                                        fingerprint,
                                        missing_since: None,
                                    },
                                );
                            }
                        }
                        if !repeated {
                            tracing::warn!(pair = %stem, %error, "a named pair does not build");
                            events.push(ReloadEvent::PairFailed { stem, error });
                        }
                    }
                }
            }
        }
        self.go_live(live);
        for event in events {
            self.subscribers.emit(event);
        }
    }

    /// Expiry of every pair, at most once per [`EXPIRY_CHECK`]: it runs
    /// after every check, and with 10,000 pairs an event-driven burst of
    /// checks would spend more on it than on the checks (expiry moves in
    /// hours).
    pub(crate) fn check_expiry(&self) {
        {
            let mut state = self.state();
            let now = Instant::now();
            if state
                .expiry_checked_at
                .is_some_and(|at| now.duration_since(at) < EXPIRY_CHECK)
            {
                return;
            }
            state.expiry_checked_at = Some(now);
        }
        for engine in self.engines() {
            engine.check_expiry();
        }
    }

    /// The members now, copied out: nothing runs under the lock.
    fn members_now(&self) -> Vec<(String, Member)> {
        self.state()
            .members
            .iter()
            .map(|(stem, member)| (stem.clone(), member.clone()))
            .collect()
    }

    /// Rebuilds every served pair from its files now, one after the other:
    /// a manual reload of each pair's engine, so a pair whose files do not
    /// build keeps its last good version and reports the failure in its
    /// events and status. Pairs that appeared or whose files are gone are
    /// left to the reloader's next check, which adds or drops them.
    pub(crate) async fn reload_pairs(&self) {
        let engines: Vec<_> = self
            .state()
            .members
            .values()
            .filter_map(|member| match member {
                Member::Serving {
                    engine,
                    missing_since: None,
                    ..
                } => Some(engine.clone()),
                _ => None,
            })
            .collect();
        for engine in engines {
            // A failure is recorded and reported by the pair's engine.
            let _ = engine.reload(None).await;
        }
    }

    fn engines(&self) -> Vec<Arc<Engine<PairKind>>> {
        self.state()
            .members
            .values()
            .filter_map(|member| match member {
                Member::Serving { engine, .. } => Some(engine.clone()),
                Member::Broken { .. } => None,
            })
            .collect()
    }

    /// For the event watch: the directories (a watched directory's
    /// entries are watched: a pair written, renamed or removed in it wakes
    /// a check) and the files of the pairs given one by one. Not each
    /// directory pair's files: with 10,000 pairs, re-arming a watch on
    /// every one after every check would cost more than the check.
    pub(crate) fn watched_paths(&self) -> Vec<PathBuf> {
        let mut paths = self.sources.dirs.clone();
        for pair in &self.sources.pairs {
            paths.extend(pair.paths());
        }
        paths
    }

    pub(crate) fn set_detection(&self, detection: &Detection) {
        {
            // Re-armed after every event wake: only a change is handed to
            // 10,000 engines.
            let mut state = self.state();
            if state.detection.as_ref() == Some(detection) {
                return;
            }
            state.detection = Some(detection.clone());
        }
        for engine in self.engines() {
            Driven::set_detection(&*engine, detection);
        }
    }

    /// Each pair, by stem.
    pub(crate) fn status(&self) -> Vec<PairStatus> {
        self.members_now()
            .into_iter()
            .map(|(stem, member)| match member {
                Member::Serving { engine, files, .. } => {
                    let snapshot = engine.snapshot();
                    let current = snapshot.current;
                    PairStatus {
                        stem,
                        names: current.names().to_vec(),
                        leaf: Some(current.leaf().clone()),
                        files: files.paths(),
                        last_error: snapshot.last_error.map(|(message, _)| message),
                        generation: snapshot.generation,
                    }
                }
                Member::Broken { files, error, .. } => PairStatus {
                    stem,
                    names: Vec::new(),
                    leaf: None,
                    files: files.paths(),
                    last_error: Some(error.to_string()),
                    generation: 0,
                },
            })
            .collect()
    }

    pub(crate) fn table(&self) -> &Arc<SniResolver> {
        &self.table
    }
}

impl fmt::Debug for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Named")
            .field("sources", &self.sources)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}
