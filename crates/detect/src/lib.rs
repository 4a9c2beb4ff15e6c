//! Change detectors for files and directories, usable on their own.
//!
//! Something else renews your certificates (cert-manager, Vault agent,
//! certbot, a SPIFFE helper) and you need to know when the files changed:
//! reliably, across atomic renames, symlink swaps and Kubernetes secret
//! volumes, without reading megabytes every second and without blocking your
//! executor. This crate takes a [`Fingerprint`] of what a [`Detector`]
//! watches; a change is a fingerprint that differs from the one you last
//! **committed** (see [`Watcher`]).
//!
//! A poll that follows symlinks is the reliable base: it sees an atomic
//! rename, a retargeted symlink and a bind mount alike, which is where
//! event-only watchers have lost updates. File-system events
//! ([`EventWatch`], inotify on Linux) make it fast: they wake a check at
//! once, and the fingerprint decides; the poll stays as the backstop
//! ([`watch`] uses both, [`poll`] the poll alone).
//!
//! # Strategies
//!
//! - [`ContentHash`]: SHA-256 of the bytes. Catches everything, costs a read.
//! - [`Metadata`]: device, inode, size, mode, mtime and ctime in nanoseconds.
//!   One `stat` per file; `touch` counts as a change.
//! - [`Combined`] (the default): metadata first, hash only when metadata
//!   moved, so a `touch` or a same-content rewrite is not a change and an idle
//!   check costs one `stat` per file.
//!
//! Each works on a file or a directory. In a directory, the regular files
//! are watched (following symlinks); names starting with `.` (Kubernetes
//! keeps `..data` and its timestamped folders there) and subdirectories are
//! skipped. A symlink that points nowhere is no file to read, but it is part
//! of the fingerprint, so its appearance and its repair are both changes.
//! `tls-reload-build` lists directories and reads files by the same rule
//! ([`dir_files`], [`read_file`]), so what a detector watches is what a
//! build reads. [`Composite`] joins many paths into one fingerprint and names the
//! paths that moved.
//!
//! What each one reports, as asserted by this crate's tests on real files:
//!
//! | event                                          | `ContentHash` | `Metadata`   | `Combined` |
//! |------------------------------------------------|---------------|--------------|------------|
//! | in-place rewrite with new content              | change        | change       | change     |
//! | atomic rename of a new file over it            | change        | change       | change     |
//! | rewrite with the same content                  | no change     | change       | no change  |
//! | `touch`                                        | no change     | change       | no change  |
//! | `cp -p` of new content with the old mtime      | change        | change       | change     |
//! | delete                                         | error         | error        | error      |
//! | recreate with the same content after a delete  | no change     | change       | no change  |
//! | symlink retargeted                             | change        | change       | change     |
//! | Kubernetes `..data` swap                       | change        | change       | change     |
//! | Kubernetes `..data` swap, directory watched    | change        | change       | change     |
//! | directory: entry added                         | change        | change       | change     |
//! | directory: entry removed                       | change        | change       | change     |
//! | directory: entry rewritten in place            | change        | change       | change     |
//! | directory: dangling symlink added              | change        | change       | change     |
//! | directory: dangling symlink's target created   | change        | change       | change     |
//! | directory: `.hidden` entry added               | no change     | change³      | no change  |
//! | two writes of the same size in one mtime tick  | change        | no change¹   | change²    |
//!
//! ¹ Neither size nor timestamps moved: only reading the bytes can tell.
//! ² Metadata younger than [`Combined::racy_window`] is not trusted, so the
//! file is hashed again (git's answer to the same "racy clean" problem).
//! ³ The directory's own metadata moved; the entry itself is not watched.
//!
//! # Costs and limits
//!
//! File IO runs on the [`blocking`] thread pool, so a slow network file
//! system never blocks an async caller; each strategy also has a
//! `fingerprint_blocking` method for callers already on a thread. Reads are
//! capped per file ([`DEFAULT_MAX_FILE_SIZE`], configurable): a path pointed
//! at a huge file by mistake is an error that names it, not a huge read.
//!
//! # Example
//!
//! ```
//! use tls_reload_detect::{Combined, Watcher};
//! # smol::block_on(async {
//! let dir = tempfile::tempdir()?;
//! let cert = dir.path().join("tls.crt");
//! std::fs::write(&cert, "first")?;
//!
//! let mut watcher = Watcher::new(Combined::new(&cert));
//! watcher.prime().await?; // the baseline
//! assert!(watcher.check().await?.is_none());
//!
//! std::fs::write(&cert, "second")?;
//! let change = watcher.check().await?.expect("a change");
//! assert_eq!(change.paths(), [cert.clone()]);
//! watcher.commit(change.into_fingerprint()); // acted on it
//! assert!(watcher.check().await?.is_none());
//! # Ok::<_, Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

use async_trait::async_trait;

mod composite;
mod error;
mod events;
mod fingerprint;
mod fs;
mod strategy;
#[cfg(feature = "test-util")]
mod testing;
mod watcher;

pub use composite::Composite;
pub use error::DetectError;
pub use events::{Detection, EventWatch, Wake, EVENT_CAP, EVENT_DEBOUNCE};
pub use fingerprint::{Change, Fingerprint};
pub use fs::{dir_files, read_file, DirFiles};
pub use strategy::{
    Combined, ContentHash, Metadata, ParseStrategyError, Strategy, DEFAULT_RACY_WINDOW,
};
#[cfg(feature = "test-util")]
pub use testing::TestDetector;
pub use watcher::{poll, watch, watch_with, Watch, Watcher};

/// How many bytes a strategy reads from one file at most: 1 MiB.
///
/// Certificates, keys and CA bundles are a few KiB; a larger file is almost
/// always a wrong path.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Takes a fingerprint of what it watches.
///
/// Dyn-compatible (`Box<dyn Detector>` works), so tests and users can plug in
/// their own (the `test-util` feature has `TestDetector`, driven by
/// hand). Implementations do their IO off the
/// async executor (the built-in ones use [`blocking::unblock`]).
#[async_trait]
pub trait Detector: Send + Sync + std::fmt::Debug {
    /// The current fingerprint, or why it could not be taken.
    async fn fingerprint(&self) -> Result<Fingerprint, DetectError>;

    /// The fingerprint taken on the current thread, blocking it, for a
    /// caller already on a blocking thread: a [`Composite`] takes all its
    /// members' in one trip to the blocking pool this way. `None` (the
    /// default) when this detector has no such way; it is then asked through
    /// [`fingerprint`](Detector::fingerprint). Never call it on an async
    /// executor's thread.
    fn blocking_fingerprint(&self) -> Option<Result<Fingerprint, DetectError>> {
        None
    }

    /// The files and directories it reads, for an [`EventWatch`] to wake
    /// checks when they move. Empty (the default) for a detector that reads
    /// no path: it is then checked at the poll interval only.
    fn watched_paths(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
}

#[async_trait]
impl<D: Detector + ?Sized> Detector for Box<D> {
    async fn fingerprint(&self) -> Result<Fingerprint, DetectError> {
        (**self).fingerprint().await
    }

    fn blocking_fingerprint(&self) -> Option<Result<Fingerprint, DetectError>> {
        (**self).blocking_fingerprint()
    }

    fn watched_paths(&self) -> Vec<std::path::PathBuf> {
        (**self).watched_paths()
    }
}

#[async_trait]
impl<D: Detector + ?Sized> Detector for std::sync::Arc<D> {
    async fn fingerprint(&self) -> Result<Fingerprint, DetectError> {
        (**self).fingerprint().await
    }

    fn blocking_fingerprint(&self) -> Option<Result<Fingerprint, DetectError>> {
        (**self).blocking_fingerprint()
    }

    fn watched_paths(&self) -> Vec<std::path::PathBuf> {
        (**self).watched_paths()
    }
}
