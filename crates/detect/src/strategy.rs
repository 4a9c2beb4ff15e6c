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
#[derive(Clone, Debug)]
pub struct Metadata {
    path: Arc<Path>,
}

impl Metadata {
    /// Watches `path`, a file or a directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into().into(),
        }
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the fingerprint on the current thread.
    pub fn fingerprint_blocking(&self) -> Result<Fingerprint, DetectError> {
        let path = &*self.path;
        let leaf = |meta: &std::fs::Metadata| Fingerprint::from_digest(MetaKey::new(meta).digest());
        match fs::target(path)? {
            Target::File(meta) => Ok(Fingerprint::from_parts([(path.to_path_buf(), leaf(&meta))])),
            Target::Dir(meta) => {
                let own = (path.to_path_buf(), leaf(&meta));
                let listing = fs::listing(path)?;
                let entries = listing
                    .files
                    .iter()
                    .map(|(file, meta)| (file.clone(), leaf(meta)));
                Ok(Fingerprint::from_parts(
                    std::iter::once(own)
                        .chain(entries)
                        .chain(dangling(listing.dangling)),
                ))
            }
        }
    }
}

/// Metadata first, content hash only when the metadata moved: the default.
///
/// Its fingerprints are those of [`ContentHash`], so a `touch` or a rewrite
/// with the same bytes is not a change, yet an idle check costs one `stat`
/// per file. Metadata younger than the [racy window](Combined::racy_window)
/// is not trusted, so two writes within one timestamp tick are still seen.
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

/// A fingerprint and the listing it was taken from, in the order the
/// directory gave it (a file is a listing of one).
struct Last {
    dir: bool,
    listing: Vec<(PathBuf, MetaKey)>,
    /// The dangling symlinks, in listing order.
    dangling: Vec<PathBuf>,
    /// Every file's metadata was past the racy window when it was hashed.
    trusted: bool,
    fingerprint: Fingerprint,
}

impl Last {
    /// Whether `current`, listed the same way, has exactly this listing's
    /// paths and metadata, and it could all be trusted.
    fn holds<'a>(
        &self,
        dir: bool,
        current: impl ExactSizeIterator<Item = (&'a Path, &'a std::fs::Metadata)>,
    ) -> bool {
        self.trusted
            && self.dir == dir
            && self.listing.len() == current.len()
            && self
                .listing
                .iter()
                .zip(current)
                .all(|((path, key), (now, meta))| path == now && *key == MetaKey::new(meta))
    }
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
        // Before any stat: metadata is trusted only if it was already old
        // when it was taken.
        let now = SystemTime::now();
        let path = self.path();
        // A poisoned lock only means a panic elsewhere mid-update; the cache
        // is a hint, so start it afresh.
        let mut cache = match self.cache.lock() {
            Ok(cache) => cache,
            Err(poisoned) => {
                let mut cache = poisoned.into_inner();
                *cache = Cache::default();
                cache
            }
        };
        let cache = &mut *cache;
        match fs::target(path)? {
            Target::File(meta) => {
                if let Some(last) = &cache.last {
                    if last.holds(false, std::iter::once((path, &meta))) {
                        return Ok(last.fingerprint.clone());
                    }
                }
                let known = self.file_digest(&mut cache.files, path, &meta, now)?;
                cache.files.retain(|file, _| file == path);
                let fingerprint = Fingerprint::from_parts([(
                    path.to_path_buf(),
                    Fingerprint::from_digest(known.digest),
                )]);
                cache.last = Some(Last {
                    dir: false,
                    listing: vec![(path.to_path_buf(), known.meta)],
                    dangling: Vec::new(),
                    trusted: known.trusted,
                    fingerprint: fingerprint.clone(),
                });
                Ok(fingerprint)
            }
            Target::Dir(_) => {
                // The idle path: one listing and one stat per file, compared
                // in listing order, with no sort, hash or copy.
                let fs::Listing {
                    mut files,
                    mut dangling,
                } = fs::listing_unsorted(path)?;
                if let Some(last) = &cache.last {
                    if last.dangling == dangling
                        && last.holds(
                            true,
                            files.iter().map(|(file, meta)| (file.as_path(), meta)),
                        )
                    {
                        return Ok(last.fingerprint.clone());
                    }
                }
                let listing: Vec<(PathBuf, MetaKey)> = files
                    .iter()
                    .map(|(file, meta)| (file.clone(), MetaKey::new(meta)))
                    .collect();
                fs::sort_by_path(&mut files);
                let mut parts = Vec::with_capacity(files.len());
                let mut trusted = true;
                for (file, meta) in &files {
                    let found = self.file_digest(&mut cache.files, file, meta, now);
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
                let listed_dangling = dangling.clone();
                dangling.sort_unstable_by(|a, b| fs::path_bytes(a).cmp(fs::path_bytes(b)));
                let fingerprint =
                    Fingerprint::from_parts(parts.into_iter().chain(self::dangling(dangling)));
                cache.last = Some(Last {
                    dir: true,
                    listing,
                    dangling: listed_dangling,
                    trusted,
                    fingerprint: fingerprint.clone(),
                });
                Ok(fingerprint)
            }
        }
    }

    /// The file's digest: the known one while its metadata holds and is
    /// trusted, else read again.
    fn file_digest(
        &self,
        files: &mut HashMap<PathBuf, Known>,
        path: &Path,
        meta: &std::fs::Metadata,
        now: SystemTime,
    ) -> Result<Known, DetectError> {
        let key = MetaKey::new(meta);
        if let Some(known) = files.get(path) {
            if known.trusted && known.meta == key {
                return Ok(*known);
            }
        }
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
