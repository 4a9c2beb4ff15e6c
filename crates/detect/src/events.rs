//! File-system events that wake a check early; the poll stays the backstop.
//!
//! An event never decides anything: it makes the caller take a fingerprint
//! now instead of at the next tick, and the fingerprint says whether
//! anything changed. So a missed, duplicated or unrelated event costs at
//! most one check, and a watch that cannot be set costs only latency.
//!
//! What is watched, for each path: the directory that holds it (only the
//! names that matter there wake a check), the directory of every symlink
//! hop on the way to the file (`tls.crt -> ..data/tls.crt`, `..data ->
//! ..2026_11_28_...`), and for a watched directory every entry in it. A
//! directory that does not exist (deleted, or not created yet) is watched
//! through its nearest existing ancestor until it comes back. The caller
//! re-arms after every check ([`EventWatch::arm`]), since a swap changes
//! which directories matter.
//!
//! On Linux the backend is inotify, through `rustix`, with its descriptor
//! registered with `async-io`: no thread per watcher, nothing tied to a
//! runtime. Elsewhere there is no backend and detection is poll only, as
//! [`EventWatch::detection`] says.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures::future::{self, Either};

/// How detection works right now, for a status page.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Detection {
    /// File-system events wake a check; the poll stays as the backstop.
    Events {
        /// How many directories are watched.
        watches: usize,
    },
    /// Only the poll at the interval: events are off, unavailable on this
    /// platform, or a watch could not be set (and is tried again after
    /// every check).
    PollOnly {
        /// Why, in words.
        reason: String,
    },
}

impl Detection {
    /// Whether events wake checks.
    pub fn is_events(&self) -> bool {
        matches!(self, Self::Events { .. })
    }
}

impl fmt::Display for Detection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Events { watches } => write!(f, "events ({watches} directories watched)"),
            Self::PollOnly { reason } => write!(f, "poll only: {reason}"),
        }
    }
}

/// Why [`EventWatch::wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wake {
    /// The poll interval came round.
    Poll,
    /// A burst of relevant events settled.
    Event,
}

/// How long a burst of events must be quiet before the check: long enough
/// to take a renewer's writes of certificate, key and CA in one check.
pub const EVENT_DEBOUNCE: Duration = Duration::from_millis(3);
/// The longest a steady stream of events postpones the check.
pub const EVENT_CAP: Duration = Duration::from_millis(25);

/// The names in a watched directory that wake a check.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Names {
    /// Every entry (a watched directory's own contents).
    All,
    /// Only these.
    Some(HashSet<OsString>),
}

impl Names {
    fn add(&mut self, name: Option<OsString>) {
        match (self, name) {
            (Self::All, _) => {}
            (this, None) => *this = Self::All,
            (Self::Some(names), Some(name)) => {
                names.insert(name);
            }
        }
    }

    fn matches(&self, name: Option<&std::ffi::OsStr>) -> bool {
        match (self, name) {
            (Self::All, _) | (_, None) => true,
            (Self::Some(names), Some(name)) => names.contains(name),
        }
    }
}

/// Watches what can change what a set of paths resolves to, and wakes a
/// check when it moves.
///
/// An event never decides anything: it makes the caller take a fingerprint
/// now instead of at the next tick, and the fingerprint says whether
/// anything changed, so a missed, duplicated or unrelated event costs at
/// most one check. Watched, for each path: the directory that holds it
/// (only the names that matter there wake a check), the directory of every
/// symlink hop (`tls.crt -> ..data/tls.crt`, `..data -> ..2026_...`), every
/// entry of a watched directory, and the nearest existing ancestor of a
/// directory that is gone, until it comes back. Re-arm after every check.
/// On Linux the backend is inotify (no thread, nothing tied to a runtime);
/// elsewhere detection is poll only, as [`detection`](Self::detection) says.
///
/// ```no_run
/// use std::time::{Duration, Instant};
/// use tls_reload_detect::{EventWatch, Wake};
/// # smol::block_on(async {
/// let paths = ["tls.crt".into(), "tls.key".into()];
/// let mut events = EventWatch::new();
/// events.arm(&paths);
/// println!("detection: {}", events.detection());
/// loop {
///     let wake = events.wait(Instant::now() + Duration::from_secs(10)).await;
///     // ... take a fingerprint and act on a change ...
///     events.arm(&paths); // a swap may have changed which directories matter
///     # let _ = wake; break;
/// }
/// # });
/// ```
pub struct EventWatch {
    backend: Backend,
    /// Each watched directory (canonical) and the names that matter in it.
    dirs: BTreeMap<PathBuf, Names>,
    detection: Detection,
}

enum Backend {
    #[cfg(target_os = "linux")]
    Inotify(inotify::Inotify),
    Off,
}

impl EventWatch {
    /// An event watch on this platform's backend (inotify on Linux);
    /// poll only where there is none or it cannot start. Watches nothing
    /// until [`arm`](Self::arm).
    pub fn new() -> Self {
        #[cfg(target_os = "linux")]
        match inotify::Inotify::new() {
            Ok(inotify) => {
                Self::with_backend(Backend::Inotify(inotify), Detection::Events { watches: 0 })
            }
            Err(reason) => Self::off(reason),
        }
        #[cfg(not(target_os = "linux"))]
        Self::off("no file-system event backend on this platform")
    }

    /// Poll only, for `reason` (`--events off`, say).
    pub fn off(reason: impl Into<String>) -> Self {
        Self::with_backend(
            Backend::Off,
            Detection::PollOnly {
                reason: reason.into(),
            },
        )
    }

    /// An event watch whose every watch fails to be added with `reason`,
    /// to test the fall back to polling (feature `test-util`).
    #[cfg(feature = "test-util")]
    pub fn failing(reason: impl Into<String>) -> Self {
        #[cfg(target_os = "linux")]
        match inotify::Inotify::failing(reason.into()) {
            Ok(inotify) => {
                Self::with_backend(Backend::Inotify(inotify), Detection::Events { watches: 0 })
            }
            Err(reason) => Self::off(reason),
        }
        #[cfg(not(target_os = "linux"))]
        Self::off(reason)
    }

    fn with_backend(backend: Backend, detection: Detection) -> Self {
        Self {
            backend,
            dirs: BTreeMap::new(),
            detection,
        }
    }

    /// How detection works now.
    pub fn detection(&self) -> &Detection {
        &self.detection
    }

    /// Whether there is an event backend to arm (false when events are off
    /// or this platform has none: [`arm`](Self::arm) then does nothing).
    pub fn has_backend(&self) -> bool {
        !matches!(self.backend, Backend::Off)
    }

    /// Watches what can change what `paths` resolve to, dropping watches
    /// that no longer matter. Call it after every check: a symlink swap or
    /// a directory that came back changes the set. A watch that cannot be
    /// added (the inotify watch limit, too many open files) makes detection
    /// poll only, with the reason, until a later `arm` succeeds. Does a few
    /// `lstat` and `readlink` calls per path: call it off the executor when
    /// the file system may be slow.
    pub fn arm(&mut self, paths: &[PathBuf]) {
        let wanted = targets(paths);
        let detection = match &mut self.backend {
            Backend::Off => return,
            _ if wanted.is_empty() => Detection::PollOnly {
                reason: "the detector names no path to watch".into(),
            },
            #[cfg(target_os = "linux")]
            Backend::Inotify(inotify) => match inotify.set(&wanted) {
                Ok(()) => Detection::Events {
                    watches: wanted.len(),
                },
                Err(reason) => Detection::PollOnly { reason },
            },
        };
        self.dirs = wanted;
        if detection != self.detection {
            match &detection {
                Detection::PollOnly { reason } => tracing::warn!(
                    %reason,
                    "file-system events unavailable; checking at the poll interval only"
                ),
                Detection::Events { watches } if !self.detection.is_events() => {
                    tracing::info!(watches, "file-system events wake the checks again");
                }
                Detection::Events { .. } => {}
            }
            self.detection = detection;
        }
    }

    /// The paths the relevant events seen since the last call named (a
    /// watched directory joined with the entry's name), and forgets them:
    /// a hint of what moved, for a check that would rather not look at
    /// everything. `None` when that is not known: events were lost, a
    /// watch went away, too many names came at once, or there is no
    /// backend. A path is named as the event gave it (under the canonical
    /// directory), and a check must still look: an event only says where.
    pub fn take_changed(&mut self) -> Option<Vec<PathBuf>> {
        match &mut self.backend {
            #[cfg(target_os = "linux")]
            Backend::Inotify(inotify) => inotify.take_changed(),
            _ => None,
        }
    }

    /// Waits for a relevant event. Never returns in poll-only mode.
    pub async fn changed(&mut self) {
        match &mut self.backend {
            #[cfg(target_os = "linux")]
            Backend::Inotify(inotify) if self.detection.is_events() => {
                inotify.changed(&self.dirs).await;
            }
            _ => future::pending().await,
        }
    }

    /// Waits until `poll_at` ([`Wake::Poll`]) or until a burst of relevant
    /// events settles ([`Wake::Event`]): [`EVENT_DEBOUNCE`] after its last
    /// event, or [`EVENT_CAP`] after its first, whichever comes first.
    pub async fn wait(&mut self, poll_at: Instant) -> Wake {
        {
            let changed = self.changed();
            futures::pin_mut!(changed);
            if let Either::Left(_) = future::select(Timer::at(poll_at), changed).await {
                return Wake::Poll;
            }
        }
        let cap = Instant::now() + EVENT_CAP;
        loop {
            let quiet = (Instant::now() + EVENT_DEBOUNCE).min(cap);
            let changed = self.changed();
            futures::pin_mut!(changed);
            if let Either::Left(_) = future::select(Timer::at(quiet), changed).await {
                return Wake::Event;
            }
            if Instant::now() >= cap {
                return Wake::Event;
            }
        }
    }
}

impl Default for EventWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EventWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventWatch")
            .field("detection", &self.detection)
            .field("dirs", &self.dirs.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The directories to watch for `paths`, each with the names that matter.
fn targets(paths: &[PathBuf]) -> BTreeMap<PathBuf, Names> {
    let mut out = BTreeMap::new();
    for path in paths {
        let Ok(path) = std::path::absolute(path) else {
            continue;
        };
        hops(&normalize(&path), &mut out, 0);
        if path.is_dir() {
            watch(&path, None, &mut out);
        }
    }
    out
}

/// The most symlink hops followed, as the kernel's own limit.
const MAX_HOPS: usize = 40;

/// Watches `path`'s name in its directory, the symlinks among its
/// ancestors, and, when it is a symlink, where it leads.
fn hops(path: &Path, out: &mut BTreeMap<PathBuf, Names>, depth: usize) {
    if depth > MAX_HOPS {
        return;
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    watch(parent, Some(name.to_owned()), out);
    for ancestor in parent.ancestors() {
        if is_symlink(ancestor) {
            hops(ancestor, out, depth + 1);
            break; // the recursion covers the ancestors above it
        }
    }
    if let Ok(target) = std::fs::read_link(path) {
        hops(&normalize(&parent.join(target)), out, depth + 1);
    }
}

/// Adds `name` in `dir` (every name when `None`); a directory that does not
/// exist is watched through its nearest existing ancestor, for the name
/// that leads back to it.
fn watch(dir: &Path, name: Option<OsString>, out: &mut BTreeMap<PathBuf, Names>) {
    let (mut dir, mut name) = (dir.to_path_buf(), name);
    while !dir.is_dir() {
        let Some(parent) = dir.parent().map(Path::to_path_buf) else {
            return;
        };
        name = dir.file_name().map(ToOwned::to_owned);
        dir = parent;
    }
    // Two paths to one directory (through a symlink) share one watch.
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    out.entry(dir)
        .or_insert_with(|| Names::Some(HashSet::new()))
        .add(name);
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink())
}

/// `a/./b/../c` as `a/c`, without touching the file system (a symlink's
/// target is relative to the link's directory, taken literally).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(target_os = "linux")]
mod inotify {
    //! inotify through rustix, its descriptor registered with async-io.

    use std::collections::BTreeMap;
    use std::mem::MaybeUninit;
    use std::os::fd::OwnedFd;
    use std::path::PathBuf;

    use async_io::Async;
    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
    use rustix::io::Errno;

    use super::Names;

    pub(super) struct Inotify {
        fd: Async<OwnedFd>,
        /// The watch descriptor of each watched directory.
        watches: BTreeMap<PathBuf, i32>,
        /// Makes every add fail with this reason (a test hook).
        fail_with: Option<String>,
        /// Why reading events stopped working, if it did: the poll then
        /// carries on alone, and the status says so.
        broken: Option<String>,
        /// The paths relevant events named since the last
        /// [`take_changed`](Self::take_changed); `None` once that is not
        /// known (events lost, a watch gone, too many).
        changed: Option<Vec<PathBuf>>,
    }

    /// The most changed paths kept for a hint: past it, "everything".
    const CHANGED_CAP: usize = 1024;

    /// What moves a name: created, deleted, renamed, written and closed,
    /// attributes changed; and the directory itself deleted or moved.
    /// Not `MODIFY`: a writer's every `write` would wake a check of a file
    /// still half written, and its `CLOSE_WRITE` comes when it is whole (a
    /// writer that never closes is seen by the poll).
    const FLAGS: WatchFlags = WatchFlags::CREATE
        .union(WatchFlags::DELETE)
        .union(WatchFlags::MOVED_FROM)
        .union(WatchFlags::MOVED_TO)
        .union(WatchFlags::CLOSE_WRITE)
        .union(WatchFlags::ATTRIB)
        .union(WatchFlags::DELETE_SELF)
        .union(WatchFlags::MOVE_SELF)
        .union(WatchFlags::ONLYDIR);

    impl Inotify {
        pub(super) fn new() -> Result<Self, String> {
            let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
                .map_err(|e| format!("cannot start inotify: {e}"))?;
            let fd = Async::new(fd).map_err(|e| format!("cannot register inotify: {e}"))?;
            Ok(Self {
                fd,
                watches: BTreeMap::new(),
                fail_with: None,
                changed: Some(Vec::new()),
                broken: None,
            })
        }

        #[cfg(feature = "test-util")]
        pub(super) fn failing(reason: String) -> Result<Self, String> {
            let mut inotify = Self::new()?;
            inotify.fail_with = Some(reason);
            Ok(inotify)
        }

        /// Watches exactly the directories of `wanted`. On a failure every
        /// watch is dropped (the poll takes over) and the reason returned.
        pub(super) fn set(&mut self, wanted: &BTreeMap<PathBuf, Names>) -> Result<(), String> {
            if let Some(reason) = &self.broken {
                return Err(reason.clone());
            }
            let stale: Vec<PathBuf> = self
                .watches
                .keys()
                .filter(|dir| !wanted.contains_key(*dir))
                .cloned()
                .collect();
            for dir in stale {
                if let Some(wd) = self.watches.remove(&dir) {
                    // Gone already when its directory was deleted: fine.
                    let _ = inotify::remove_watch(self.fd.get_ref(), wd);
                }
            }
            for dir in wanted.keys() {
                if self.watches.contains_key(dir) {
                    continue;
                }
                match self.add(dir) {
                    Ok(wd) => {
                        self.watches.insert(dir.clone(), wd);
                    }
                    Err(reason) => {
                        self.clear();
                        return Err(reason);
                    }
                }
            }
            Ok(())
        }

        fn add(&self, dir: &std::path::Path) -> Result<i32, String> {
            if let Some(reason) = &self.fail_with {
                return Err(format!("{}: {reason}", dir.display()));
            }
            inotify::add_watch(self.fd.get_ref(), dir, FLAGS).map_err(|errno| {
                let why = match errno {
                    Errno::NOSPC => {
                        "the inotify watch limit is reached (fs.inotify.max_user_watches)"
                            .to_owned()
                    }
                    Errno::MFILE => {
                        "too many inotify instances or open files (fs.inotify.max_user_instances)"
                            .to_owned()
                    }
                    other => other.to_string(),
                };
                format!("cannot watch {}: {why}", dir.display())
            })
        }

        fn clear(&mut self) {
            for (_, wd) in std::mem::take(&mut self.watches) {
                let _ = inotify::remove_watch(self.fd.get_ref(), wd);
            }
        }

        /// See [`EventWatch::take_changed`].
        pub(super) fn take_changed(&mut self) -> Option<Vec<PathBuf>> {
            self.changed.replace(Vec::new())
        }

        /// Waits until an event concerns a name that matters in `dirs`.
        pub(super) async fn changed(&mut self, dirs: &BTreeMap<PathBuf, Names>) {
            let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
            loop {
                if self.broken.is_some() {
                    return std::future::pending().await;
                }
                if let Err(error) = self.fd.readable().await {
                    self.broken = Some(format!("cannot wait for inotify events: {error}"));
                    // One check now, which re-arms and reports poll only.
                    return;
                }
                if self.drain(dirs, &mut buf) {
                    return;
                }
            }
        }

        /// Reads every event queued; whether one of them matters.
        fn drain(&mut self, dirs: &BTreeMap<PathBuf, Names>, buf: &mut [MaybeUninit<u8>]) -> bool {
            let mut relevant = false;
            let mut reader = inotify::Reader::new(self.fd.get_ref(), buf);
            loop {
                let event = match reader.next() {
                    Ok(event) => event,
                    Err(Errno::WOULDBLOCK) => return relevant,
                    Err(Errno::INTR) => continue,
                    Err(error) => {
                        // Not a state to spin in: the poll carries on alone.
                        self.broken = Some(format!("cannot read inotify events: {error}"));
                        return true;
                    }
                };
                let flags = event.events();
                if flags.intersects(ReadFlags::QUEUE_OVERFLOW | ReadFlags::IGNORED) {
                    // Events were lost, or a watch is gone: look now, at
                    // everything.
                    relevant = true;
                    self.changed = None;
                    continue;
                }
                let dir = self
                    .watches
                    .iter()
                    .find(|(_, wd)| **wd == event.wd())
                    .map(|(dir, _)| dir);
                let matters = dir.and_then(|dir| dirs.get(dir)).is_none_or(|names| {
                    let name = event
                        .file_name()
                        .map(|name| std::os::unix::ffi::OsStrExt::from_bytes(name.to_bytes()));
                    names.matches(name)
                });
                if matters {
                    relevant = true;
                    let path = dir.zip(event.file_name()).map(|(dir, name)| {
                        dir.join(
                            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                                name.to_bytes(),
                            ),
                        )
                    });
                    match (&mut self.changed, path) {
                        (Some(changed), Some(path)) if changed.len() < CHANGED_CAP => {
                            changed.push(path);
                        }
                        // Unknown, or too many: everything.
                        _ => self.changed = None,
                    }
                } else {
                    tracing::trace!("event on an unrelated name");
                }
            }
        }
    }

    impl Drop for Inotify {
        fn drop(&mut self) {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubernetes_volume_watches_every_hop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        std::fs::create_dir(root.join("..2026_01")).expect("mkdir");
        std::fs::write(root.join("..2026_01/tls.crt"), "x").expect("write");
        std::os::unix::fs::symlink("..2026_01", root.join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/tls.crt", root.join("tls.crt")).expect("symlink");
        let watched = targets(&[root.join("tls.crt")]);
        let names = |dir: &Path| match watched.get(dir) {
            Some(Names::Some(names)) => {
                let mut names: Vec<_> = names.iter().cloned().collect();
                names.sort();
                names
            }
            other => panic!("{}: {other:?}", dir.display()),
        };
        assert_eq!(
            names(&root),
            ["..2026_01", "..data", "tls.crt"].map(OsString::from)
        );
        assert_eq!(names(&root.join("..2026_01")), [OsString::from("tls.crt")]);
        assert_eq!(watched.len(), 2, "{watched:?}");
    }

    #[test]
    fn a_missing_directory_is_watched_through_its_nearest_ancestor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let watched = targets(&[root.join("secret/tls.crt")]);
        assert_eq!(
            watched.get(&root),
            Some(&Names::Some(HashSet::from([OsString::from("secret")])))
        );
        let ca_dir = root.join("cas");
        std::fs::create_dir(&ca_dir).expect("mkdir");
        let watched = targets(std::slice::from_ref(&ca_dir));
        assert_eq!(watched.get(&ca_dir), Some(&Names::All));
    }
}
