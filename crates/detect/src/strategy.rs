use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::fs::{self, MetaKey, Target};
use crate::{DetectError, Detector, Fingerprint, DEFAULT_MAX_FILE_SIZE};

/// How long after a file's last modification its metadata is not trusted by
/// [`Combined`] (see [`Combined::racy_window`]).
pub const DEFAULT_RACY_WINDOW: Duration = Duration::from_secs(2);

/// SHA-256 of the bytes: sees every change of content, costs a read.
///
/// On a directory: its regular files (following symlinks; names starting
/// with `.` and subdirectories are skipped), sorted by name, each with the
/// hash of its bytes. Each file read is capped at
/// [`max_file_size`](ContentHash::max_file_size) bytes.
#[derive(Clone, Debug)]
pub struct ContentHash {
    path: Arc<Path>,
    limit: u64,
}

impl ContentHash {
    /// Watches `path`, a file or a directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into().into(),
            limit: DEFAULT_MAX_FILE_SIZE,
        }
    }

    /// Sets the per-file read cap; a larger file is a
    /// [`DetectError::TooLarge`].
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.limit = bytes;
        self
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the fingerprint on the current thread.
    pub fn fingerprint_blocking(&self) -> Result<Fingerprint, DetectError> {
        let path = &*self.path;
        match fs::target(path)? {
            Target::File(meta) => Ok(Fingerprint::from_parts([(
                path.to_path_buf(),
                Fingerprint::from_digest(fs::hash_file(path, &meta, self.limit)?),
            )])),
            Target::Dir(_) => {
                let listing = fs::listing(path)?;
                let mut parts = Vec::new();
                for (file, meta) in listing.files {
                    let Some(digest) =
                        fs::vanished_is_none(fs::hash_file(&file, &meta, self.limit))?
                    else {
                        continue;
                    };
                    parts.push((file, Fingerprint::from_digest(digest)));
                }
                Ok(Fingerprint::from_parts(
                    parts.into_iter().chain(dangling(listing.dangling)),
                ))
            }
        }
    }
}

/// Device, inode, size, mode, mtime and ctime in nanoseconds: one `stat`,
/// reads nothing.
///
/// On a directory: the directory's own metadata plus that of each regular
/// file in it (following symlinks; names starting with `.` and
/// subdirectories are skipped), since rewriting a file in place does not
/// move the directory's mtime.
///
/// It cannot see two writes of the same size within one timestamp tick, and
/// it reports a `touch` or a same-content rewrite as a change. [`Combined`]
/// fixes both.
///
/// A check compares the metadata it reads with what the previous check
/// read, and while nothing moved returns the previous fingerprint as it
/// is: an idle check hashes nothing.
#[derive(Clone)]
pub struct Metadata {
    path: Arc<Path>,
    last: Arc<Mutex<Option<Last>>>,
}

impl Metadata {
    /// Watches `path`, a file or a directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into().into(),
            last: Arc::default(),
        }
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the fingerprint on the current thread.
    pub fn fingerprint_blocking(&self) -> Result<Fingerprint, DetectError> {
        let path = &*self.path;
        let target = fs::target(path)?;
        let mut last = lock(&self.last);
        if let Some(held) = last.as_ref().filter(|last| last.holds(&target)) {
            return Ok(held.fingerprint.clone());
        }
        let leaf = |key: MetaKey| Fingerprint::from_digest(key.digest());
        let taken = match target {
            Target::File(meta) => {
                let key = MetaKey::new(&meta);
                Last {
                    own: key,
                    seen: None,
                    trusted: true,
                    fingerprint: Fingerprint::from_parts([(path.to_path_buf(), leaf(key))]),
                }
            }
            Target::Dir(meta) => {
                let own = MetaKey::new(&meta);
                let now = SystemTime::now();
                let listing = fs::listing_unsorted(path)?;
                let seen = fs::Seen::new(&meta, &listing, now, DEFAULT_RACY_WINDOW);
                if let Some(held) = last.as_mut().filter(|held| held.stands(&seen, true)) {
                    return Ok(held.relisted(seen));
                }
                let fs::Listing {
                    mut files,
                    mut dangling,
                    ..
                } = listing;
                fs::sort_by_path(&mut files);
                dangling.sort_unstable_by(|a, b| fs::path_bytes(a).cmp(fs::path_bytes(b)));
                let entries = files
                    .iter()
                    .map(|(file, meta)| (file.clone(), leaf(MetaKey::new(meta))));
                let fingerprint = Fingerprint::from_parts(
                    std::iter::once((path.to_path_buf(), leaf(own)))
                        .chain(entries)
                        .chain(self::dangling(dangling)),
                );
                Last {
                    own,
                    seen: Some(seen),
                    trusted: true,
                    fingerprint,
                }
            }
        };
        let fingerprint = taken.fingerprint.clone();
        *last = Some(taken);
        Ok(fingerprint)
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

/// Metadata first, content hash only when the metadata moved: the default.
///
/// Its fingerprints are those of [`ContentHash`], so a `touch` or a rewrite
/// with the same bytes is not a change, yet an idle check costs one `stat`
/// per file: it compares the metadata it reads with what the previous check
/// read, and while nothing moved returns the previous fingerprint as it is,
/// with nothing hashed. Metadata younger than the
/// [racy window](Combined::racy_window) is not trusted, so two writes within
/// one timestamp tick are still seen.
#[derive(Clone)]
pub struct Combined {
    hash: ContentHash,
    window: Duration,
    cache: Arc<Mutex<Cache>>,
}

#[derive(Default)]
struct Cache {
    /// The digest of each file last listed, reused while its metadata holds.
    files: HashMap<PathBuf, Known>,
    /// The last fingerprint, returned as it is while nothing moved.
    last: Option<Last>,
}

#[derive(Clone, Copy)]
struct Known {
    meta: MetaKey,
    digest: [u8; 32],
    trusted: bool,
}

/// A fingerprint and what it was taken from, for the next check to compare
/// with.
struct Last {
    /// The watched path's own metadata: a file's, or a directory's.
    own: MetaKey,
    /// A directory's listing; `None` for a file.
    seen: Option<fs::Seen>,
    /// Every file's metadata was past the racy window when it was hashed.
    trusted: bool,
    fingerprint: Fingerprint,
}

impl Last {
    /// Whether `target` (the watched path now) still holds what this was
    /// taken from, by its metadata alone, and it could all be trusted.
    fn holds(&self, target: &Target) -> bool {
        self.trusted
            && match (target, &self.seen) {
                (Target::File(meta), None) => self.own == MetaKey::new(meta),
                (Target::Dir(meta), Some(seen)) => seen.holds(meta),
                _ => false,
            }
    }

    /// Whether a directory listed again as `seen` has the files this was
    /// taken from (`own_dir`: and the same metadata of its own), so this
    /// fingerprint stands.
    fn stands(&self, seen: &fs::Seen, own_dir: bool) -> bool {
        self.trusted
            && (!own_dir || self.own == seen.dir())
            && self
                .seen
                .as_ref()
                .is_some_and(|last| last.same_entries(seen))
    }

    /// Keeps `seen` for the next check; this fingerprint stands.
    fn relisted(&mut self, seen: fs::Seen) -> Fingerprint {
        self.seen = Some(seen);
        self.fingerprint.clone()
    }
}

/// Locks a detector's memory of its last check. A poisoned lock only means a
/// panic elsewhere mid-update; the memory is a hint, so start it afresh.
fn lock<T: Default>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| {
        let mut guard = poisoned.into_inner();
        *guard = T::default();
        guard
    })
}

impl Combined {
    /// Watches `path`, a file or a directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            hash: ContentHash::new(path),
            window: DEFAULT_RACY_WINDOW,
            cache: Arc::default(),
        }
    }

    /// Sets the per-file read cap; a larger file is a
    /// [`DetectError::TooLarge`].
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.hash = self.hash.max_file_size(bytes);
        self
    }

    /// Metadata of a file modified less than `window` ago is not trusted:
    /// the file is hashed again at the next check. Default
    /// [`DEFAULT_RACY_WINDOW`]; it covers timestamp granularity (up to 2 s on
    /// FAT) and small clock differences with a network file system.
    pub fn racy_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        self.hash.path()
    }

    /// Takes the fingerprint on the current thread.
    pub fn fingerprint_blocking(&self) -> Result<Fingerprint, DetectError> {
        let path = self.path();
        let target = fs::target(path)?;
        let mut cache = lock(&self.cache);
        let cache = &mut *cache;
        if let Some(last) = cache.last.as_ref().filter(|last| last.holds(&target)) {
            return Ok(last.fingerprint.clone());
        }
        // Something moved: the clock is read once, before any file is read
        // (metadata is trusted only if it was already old then).
        let mut now = None;
        let taken = match target {
            Target::File(meta) => {
                let known = self.file_digest(&mut cache.files, path, &meta, &mut now)?;
                cache.files.retain(|file, _| file == path);
                Last {
                    own: known.meta,
                    seen: None,
                    trusted: known.trusted,
                    fingerprint: Fingerprint::from_parts([(
                        path.to_path_buf(),
                        Fingerprint::from_digest(known.digest),
                    )]),
                }
            }
            Target::Dir(meta) => {
                let listed_at = *now.get_or_insert_with(SystemTime::now);
                let listing = fs::listing_unsorted(path)?;
                let seen = fs::Seen::new(&meta, &listing, listed_at, self.window);
                // The directory moved (a hidden entry, say), its files did not.
                let held = cache.last.as_mut();
                if let Some(last) = held.filter(|last| last.stands(&seen, false)) {
                    return Ok(last.relisted(seen));
                }
                let fs::Listing {
                    mut files,
                    mut dangling,
                    ..
                } = listing;
                fs::sort_by_path(&mut files);
                let mut parts = Vec::with_capacity(files.len());
                let mut trusted = true;
                for (file, meta) in &files {
                    let found = self.file_digest(&mut cache.files, file, meta, &mut now);
                    let Some(known) = fs::vanished_is_none(found)? else {
                        // The listing still has it: the next check starts over.
                        trusted = false;
                        continue;
                    };
                    trusted &= known.trusted;
                    parts.push((file.clone(), Fingerprint::from_digest(known.digest)));
                }
                cache.files.retain(|known, _| {
                    parts
                        .binary_search_by(|(file, _)| {
                            fs::path_bytes(file).cmp(fs::path_bytes(known))
                        })
                        .is_ok()
                });
                dangling.sort_unstable_by(|a, b| fs::path_bytes(a).cmp(fs::path_bytes(b)));
                Last {
                    own: MetaKey::new(&meta),
                    seen: Some(seen),
                    trusted,
                    fingerprint: Fingerprint::from_parts(
                        parts.into_iter().chain(self::dangling(dangling)),
                    ),
                }
            }
        };
        let fingerprint = taken.fingerprint.clone();
        cache.last = Some(taken);
        Ok(fingerprint)
    }

    /// The file's digest: the known one while its metadata holds and is
    /// trusted, else read again. `now` is read from the clock the first
    /// time a file is read.
    fn file_digest(
        &self,
        files: &mut HashMap<PathBuf, Known>,
        path: &Path,
        meta: &std::fs::Metadata,
        now: &mut Option<SystemTime>,
    ) -> Result<Known, DetectError> {
        let key = MetaKey::new(meta);
        if let Some(known) = files.get(path) {
            if known.trusted && known.meta == key {
                return Ok(*known);
            }
        }
        let now = *now.get_or_insert_with(SystemTime::now);
        let known = Known {
            meta: key,
            digest: fs::hash_file(path, meta, self.hash.limit)?,
            trusted: !key.is_racy(now, self.window),
        };
        files.insert(path.to_path_buf(), known);
        Ok(known)
    }
}

impl fmt::Debug for Combined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Combined")
            .field("path", &self.path())
            .field("max_file_size", &self.hash.limit)
            .field("racy_window", &self.window)
            .finish_non_exhaustive()
    }
}

/// The fingerprint parts of a directory's dangling symlinks.
fn dangling(links: Vec<PathBuf>) -> impl Iterator<Item = (PathBuf, Fingerprint)> {
    links
        .into_iter()
        .map(|link| (link, Fingerprint::from_digest(fs::DANGLING)))
}

macro_rules! blocking_detector {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl Detector for $ty {
            async fn fingerprint(&self) -> Result<Fingerprint, DetectError> {
                let this = self.clone();
                blocking::unblock(move || this.fingerprint_blocking()).await
            }

            fn blocking_fingerprint(&self) -> Option<Result<Fingerprint, DetectError>> {
                Some(self.fingerprint_blocking())
            }

            fn watched_paths(&self) -> Vec<PathBuf> {
                vec![self.path().to_path_buf()]
            }
        }
    )*};
}

blocking_detector!(ContentHash, Metadata, Combined);

/// The built-in strategies by name, for configuration and command lines.
///
/// ```
/// use tls_reload_detect::Strategy;
/// let strategy: Strategy = "metadata".parse().unwrap();
/// assert_eq!(strategy, Strategy::Metadata);
/// assert_eq!(Strategy::default(), Strategy::Combined);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// [`ContentHash`]; parsed from `hash`.
    ContentHash,
    /// [`Metadata`]; parsed from `metadata`.
    Metadata,
    /// [`Combined`]; parsed from `combined`.
    #[default]
    Combined,
}

impl Strategy {
    /// A detector of this strategy for one path, with the default read cap.
    pub fn detector(self, path: impl Into<PathBuf>) -> Box<dyn Detector> {
        self.detector_with_limit(path, DEFAULT_MAX_FILE_SIZE)
    }

    /// A detector of this strategy for one path, reading at most `limit`
    /// bytes per file.
    pub fn detector_with_limit(self, path: impl Into<PathBuf>, limit: u64) -> Box<dyn Detector> {
        match self {
            Self::ContentHash => Box::new(ContentHash::new(path).max_file_size(limit)),
            Self::Metadata => Box::new(Metadata::new(path)),
            Self::Combined => Box::new(Combined::new(path).max_file_size(limit)),
        }
    }

    /// The name [`FromStr`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Self::ContentHash => "hash",
            Self::Metadata => "metadata",
            Self::Combined => "combined",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`Strategy`] from an unknown name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown detector {0:?}: expected hash, metadata or combined")]
pub struct ParseStrategyError(String);

impl FromStr for Strategy {
    type Err = ParseStrategyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hash" | "content-hash" => Ok(Self::ContentHash),
            "metadata" => Ok(Self::Metadata),
            "combined" => Ok(Self::Combined),
            other => Err(ParseStrategyError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(path: &Path) -> Combined {
        Combined::new(path).racy_window(Duration::ZERO)
    }

    #[test]
    fn an_unchanged_check_hands_back_the_fingerprint_it_holds() -> Result<(), DetectError> {
        let dir = tempfile::tempdir().map_err(|e| DetectError::io(Path::new("tmp"), e))?;
        let file = dir.path().join("tls.crt");
        let ca = dir.path().join("ca.d");
        std::fs::create_dir(&ca)
            .and_then(|()| std::fs::write(&file, "cert"))
            .and_then(|()| std::fs::write(ca.join("a.pem"), "a"))
            .map_err(|e| DetectError::io(&ca, e))?;
        for path in [&file, &ca] {
            let combined = trusted(path);
            let metadata = Metadata::new(path);
            let checks: [&dyn Fn() -> Result<Fingerprint, DetectError>; 2] =
                [&|| combined.fingerprint_blocking(), &|| {
                    metadata.fingerprint_blocking()
                }];
            for check in checks {
                let first = check()?;
                let again = check()?;
                // Not merely equal: the very fingerprint held, nothing rebuilt.
                assert!(again.is_same(&first), "{}", path.display());
            }
        }
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_directory_that_becomes_a_file_is_seen_while_its_directory_holds(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ca = dir.path().join("ca.d");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&ca)?;
        std::fs::create_dir(&elsewhere)?;
        std::fs::write(ca.join("a.pem"), "a")?;
        std::os::unix::fs::symlink(&elsewhere, ca.join("b.pem"))?;
        let combined = trusted(&ca);
        let before = combined.fingerprint_blocking()?;
        assert_eq!(
            before.paths().count(),
            1,
            "a link to a directory is no file"
        );
        // ca.d itself does not move: only where its link points.
        std::fs::remove_dir(&elsewhere)?;
        std::fs::write(&elsewhere, "b")?;
        let after = combined.fingerprint_blocking()?;
        assert_ne!(after, before);
        assert_eq!(after.changed_paths(&before), [ca.join("b.pem")]);
        Ok(())
    }
}
