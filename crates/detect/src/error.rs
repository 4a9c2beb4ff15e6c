use std::io;
use std::path::{Path, PathBuf};

/// Why a fingerprint could not be taken.
///
/// Every variant that concerns a file names it, so the message alone tells an
/// operator which path to look at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectError {
    /// The path does not exist (or a symlink on the way to it dangles).
    #[error("{}: not found (no such file or directory)", path.display())]
    NotFound {
        /// The watched path.
        path: PathBuf,
    },
    /// The path exists but could not be read or inspected.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The file is larger than the read cap, so it was not read.
    #[error("{}: file is over the size limit of {limit} bytes (at least {size} bytes)", path.display())]
    TooLarge {
        /// The oversized file.
        path: PathBuf,
        /// Its size as far as it was seen (at least `limit + 1`).
        size: u64,
        /// The configured cap.
        limit: u64,
    },
    /// The path is neither a regular file nor a directory (a FIFO, a socket,
    /// a device): reading it could block or never end.
    #[error("{}: not a regular file", path.display())]
    NotRegularFile {
        /// The offending path.
        path: PathBuf,
    },
    /// A failure injected by [`TestDetector::fail`](crate::TestDetector::fail)
    /// (feature `test-util`).
    #[cfg(feature = "test-util")]
    #[error("injected failure: {reason}")]
    Injected {
        /// The reason given by the test.
        reason: String,
    },
}

impl DetectError {
    /// The path this error is about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::NotFound { path }
            | Self::Io { path, .. }
            | Self::TooLarge { path, .. }
            | Self::NotRegularFile { path } => Some(path),
            #[cfg(feature = "test-util")]
            Self::Injected { .. } => None,
        }
    }

    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            Self::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            Self::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}
