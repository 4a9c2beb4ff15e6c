//! Blocking file system helpers shared by the strategies.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::DetectError;

/// What a watched path turned out to be, following symlinks.
pub(crate) enum Target {
    File(fs::Metadata),
    Dir(fs::Metadata),
}

pub(crate) fn target(path: &Path) -> Result<Target, DetectError> {
    let meta = fs::metadata(path).map_err(|e| DetectError::io(path, e))?;
    if meta.is_file() {
        Ok(Target::File(meta))
    } else if meta.is_dir() {
        Ok(Target::Dir(meta))
    } else {
        Err(DetectError::NotRegularFile {
            path: path.to_path_buf(),
        })
    }
}

/// What a directory holds, as every strategy and `tls-reload-build` see it.
pub(crate) struct Listing {
    /// The regular files, following symlinks, with their metadata.
    pub(crate) files: Vec<(PathBuf, fs::Metadata)>,
    /// Symlinks whose target does not exist.
    pub(crate) dangling: Vec<PathBuf>,
    /// Other entries that are not hidden: subdirectories, symlinks to them,
    /// sockets...
    pub(crate) others: Vec<PathBuf>,
}

/// The regular files of a directory, following symlinks, sorted by name,
/// and its dangling symlinks, sorted too.
///
/// Names starting with `.` and subdirectories are skipped, and so is an
/// entry that vanishes between the listing and its `stat` (it is simply not
/// there any more; the next check sees the new state).
pub(crate) fn listing(dir: &Path) -> Result<Listing, DetectError> {
    let mut listing = listing_unsorted(dir)?;
    sort_by_path(&mut listing.files);
    listing
        .dangling
        .sort_unstable_by(|a, b| path_bytes(a).cmp(path_bytes(b)));
    Ok(listing)
}

/// [`listing`] in the order the directory lists them, which stays the
/// same while the directory does: comparing two listings needs no sort.
pub(crate) fn listing_unsorted(dir: &Path) -> Result<Listing, DetectError> {
    let mut files = Vec::new();
    let mut dangling = Vec::new();
    let mut others = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DetectError::io(dir, e))? {
        let entry = entry.map_err(|e| DetectError::io(dir, e))?;
        let path = entry.path();
        let hidden = path
            .file_name()
            .is_some_and(|name| name.as_encoded_bytes().starts_with(b"."));
        if hidden {
            continue;
        }
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => files.push((path, meta)),
            Ok(_) => others.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Gone since the listing, or a symlink that points nowhere:
                // only the second is still there to report.
                if fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_symlink()) {
                    dangling.push(path);
                }
            }
            Err(e) => return Err(DetectError::io(&path, e)),
        }
    }
    Ok(Listing {
        files,
        dangling,
        others,
    })
}

/// What a directory held at a check, kept by a detector for the next one,
/// so that an idle check of a directory is one `stat` of it and one of each
/// entry, with nothing listed, sorted, hashed or copied.
///
/// Creating, removing or renaming an entry moves a directory's mtime and
/// ctime, so while its metadata holds, its names do; only what they point
/// to can have moved, which the entries' own `stat`s (following symlinks)
/// tell. A directory changed so recently that a second change could land in
/// the same timestamp tick (the racy window, as for [`MetaKey::is_racy`]) is
/// listed again at every check until it is older.
pub(crate) struct Seen {
    dir: MetaKey,
    /// The directory was past the racy window when it was listed.
    trusted: bool,
    /// The regular files, in listing order, with their metadata.
    files: Vec<(PathBuf, MetaKey)>,
    dangling: Vec<PathBuf>,
    /// Entries that are neither (a subdirectory, a symlink to one): a
    /// symlink's target can become a regular file without the directory
    /// moving.
    others: Vec<PathBuf>,
}

impl Seen {
    /// What `listing` (from [`listing_unsorted`], not reordered since) holds,
    /// for a directory with metadata `dir`, listed at or after `now`.
    pub(crate) fn new(
        dir: &fs::Metadata,
        listing: &Listing,
        now: SystemTime,
        window: Duration,
    ) -> Self {
        let dir = MetaKey::new(dir);
        Self {
            dir,
            trusted: !dir.is_racy(now, window),
            files: listing
                .files
                .iter()
                .map(|(path, meta)| (path.clone(), MetaKey::new(meta)))
                .collect(),
            dangling: listing.dangling.clone(),
            others: listing.others.clone(),
        }
    }

    /// The directory's own metadata when it was listed.
    pub(crate) fn dir(&self) -> MetaKey {
        self.dir
    }

    /// Whether the directory, with metadata `dir` now, still holds what was
    /// seen: its metadata holds and is trusted, and each entry's `stat` says
    /// what it said. `false` means "list it again", not "changed".
    pub(crate) fn holds(&self, dir: &fs::Metadata) -> bool {
        self.trusted
            && self.dir == MetaKey::new(dir)
            && self.files.iter().all(|(path, key)| {
                fs::metadata(path).is_ok_and(|meta| meta.is_file() && MetaKey::new(&meta) == *key)
            })
            && self.dangling.iter().all(|path| {
                fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            })
            && self
                .others
                .iter()
                .all(|path| fs::metadata(path).is_ok_and(|meta| !meta.is_file()))
    }

    /// Whether `other` lists the same files with the same metadata and the
    /// same dangling symlinks, in the same order.
    pub(crate) fn same_entries(&self, other: &Seen) -> bool {
        self.dangling == other.dangling
            && self.files.len() == other.files.len()
            && self
                .files
                .iter()
                .zip(&other.files)
                .all(|((a, ka), (b, kb))| ka == kb && a.as_os_str() == b.as_os_str())
    }
}

/// The fingerprint part of a dangling symlink in a watched directory: its
/// appearance and its repair are both changes.
pub(crate) const DANGLING: [u8; 32] = *b"tls-reload-detect dangling link\0";

/// Reads a whole file by the rule the detectors follow: only a regular file
/// (after following symlinks; a FIFO, socket or device is refused before it
/// is opened, since opening or reading it could block or never end), and at
/// most `limit` bytes: [`DetectError::TooLarge`] beyond, even for a file
/// that grows while it is read.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("tls.crt");
/// std::fs::write(&path, "0123456789")?;
/// assert_eq!(tls_reload_detect::read_file(&path, 10)?, b"0123456789");
/// assert!(tls_reload_detect::read_file(&path, 9).is_err());
/// # Ok(()) }
/// ```
pub fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, DetectError> {
    let meta = fs::metadata(path).map_err(|e| DetectError::io(path, e))?;
    if !meta.is_file() {
        return Err(DetectError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    open_capped(path, &meta, limit)?
        .read_to_end(&mut bytes)
        .map_err(|e| DetectError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, bytes.len() as u64, limit));
    }
    Ok(bytes)
}

/// Opens a file for a read of at most `limit` bytes. The reader yields one
/// byte past the limit, which tells a file that grew since `meta` was taken.
fn open_capped(
    path: &Path,
    meta: &fs::Metadata,
    limit: u64,
) -> Result<std::io::Take<File>, DetectError> {
    if meta.len() > limit {
        return Err(too_large(path, meta.len(), limit));
    }
    let file = File::open(path).map_err(|e| DetectError::io(path, e))?;
    Ok(file.take(limit.saturating_add(1)))
}

fn too_large(path: &Path, size: u64, limit: u64) -> DetectError {
    DetectError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit,
    }
}

/// Sorts entries of one directory by name. Their paths share the directory
/// prefix and a name holds no separator, so comparing the bytes gives the
/// order of [`Path`]'s `Ord` without parsing components.
pub(crate) fn sort_by_path<T>(files: &mut [(PathBuf, T)]) {
    files.sort_unstable_by(|a, b| path_bytes(&a.0).cmp(path_bytes(&b.0)));
}

/// The bytes [`sort_by_path`] orders by.
pub(crate) fn path_bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_encoded_bytes()
}

/// A directory entry that was listed but is gone when opened (a renewer's
/// temporary file, say) is simply not there: `None`, not an error.
pub(crate) fn vanished_is_none<T>(
    result: Result<T, DetectError>,
) -> Result<Option<T>, DetectError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(DetectError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// SHA-256 of a file's bytes, reading at most `limit` bytes.
pub(crate) fn hash_file(
    path: &Path,
    meta: &fs::Metadata,
    limit: u64,
) -> Result<[u8; 32], DetectError> {
    let mut reader = open_capped(path, meta, limit)?;
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DetectError::io(path, e)),
        };
        total += n as u64;
        if total > limit {
            return Err(too_large(path, total, limit));
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// The metadata fields that change when a file is replaced or rewritten.
///
/// ctime cannot be set from user space, so `cp -p` or `touch -r`, which put
/// an old mtime back, still move it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MetaKey {
    dev: u64,
    ino: u64,
    len: u64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl MetaKey {
    #[cfg(unix)]
    pub(crate) fn new(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mode: meta.mode(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    #[cfg(not(unix))]
    pub(crate) fn new(meta: &fs::Metadata) -> Self {
        let since_epoch = |t: std::io::Result<SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or((0, 0), |d| {
                    (d.as_secs() as i64, i64::from(d.subsec_nanos()))
                })
        };
        Self {
            dev: 0,
            ino: 0,
            len: meta.len(),
            mode: u32::from(meta.permissions().readonly()),
            mtime: since_epoch(meta.modified()),
            ctime: since_epoch(meta.created()),
        }
    }

    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"tls-reload-detect meta\0");
        for word in [self.dev, self.ino, self.len, u64::from(self.mode)] {
            hasher.update(word.to_le_bytes());
        }
        for (secs, nanos) in [self.mtime, self.ctime] {
            hasher.update(secs.to_le_bytes());
            hasher.update(nanos.to_le_bytes());
        }
        hasher.finalize().into()
    }

    /// Whether a file with this metadata may still change without its
    /// metadata changing: it was modified so recently that a second write in
    /// the same timestamp tick would leave mtime and ctime as they are. This
    /// is git's "racy clean" problem, solved the same way: do not trust
    /// metadata that is younger than `window`.
    pub(crate) fn is_racy(&self, now: SystemTime, window: Duration) -> bool {
        let newest = self.mtime.max(self.ctime);
        let Ok(now) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return true;
        };
        let newest = Duration::new(
            u64::try_from(newest.0).unwrap_or(0),
            u32::try_from(newest.1).unwrap_or(0),
        );
        newest + window > now
    }
}

/// What a directory of materials holds, by the one rule every detector and
/// `tls-reload-build` follow. See [`dir_files`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirFiles {
    /// The regular files (after following symlinks), sorted by name.
    pub files: Vec<PathBuf>,
    /// Symlinks whose target does not exist, sorted by name.
    pub dangling: Vec<PathBuf>,
}

/// The files of a directory, by the rule the detectors follow: every regular
/// file, following symlinks, sorted by name; names starting with `.` (the
/// `..data` and timestamped folders of a Kubernetes volume) and
/// subdirectories are skipped.
///
/// A symlink that points nowhere is not a file to read: it is listed apart
/// in [`DirFiles::dangling`], so a caller can warn about it, and it is part
/// of a detector's fingerprint, so its appearance and its repair are both
/// changes. An entry that vanishes while the directory is listed is skipped.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("b.pem"), "b")?;
/// std::fs::write(dir.path().join("a.pem"), "a")?;
/// std::fs::write(dir.path().join(".hidden"), "h")?;
/// # #[cfg(unix)]
/// std::os::unix::fs::symlink(dir.path().join("gone.pem"), dir.path().join("c.pem"))?;
/// let listed = tls_reload_detect::dir_files(dir.path())?;
/// assert_eq!(listed.files, [dir.path().join("a.pem"), dir.path().join("b.pem")]);
/// # #[cfg(unix)]
/// assert_eq!(listed.dangling, [dir.path().join("c.pem")]);
/// # Ok(()) }
/// ```
pub fn dir_files(dir: &Path) -> Result<DirFiles, DetectError> {
    let listing = listing(dir)?;
    Ok(DirFiles {
        files: listing.files.into_iter().map(|(path, _)| path).collect(),
        dangling: listing.dangling,
    })
}
