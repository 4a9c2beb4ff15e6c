//! Scenes on disk, detectors of every strategy, and waits with deadlines.

use std::fmt;
use std::fs;
use std::future::Future;
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use tls_reload_detect::{Combined, ContentHash, DetectError, Detector, Fingerprint, Metadata};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long any wait in these tests may take before it is a failure.
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);

/// Two contents of the same length, so only timestamps, the inode or the
/// bytes can tell them apart.
pub(crate) const OLD: &[u8] = b"-----BEGIN CERTIFICATE-----\nold\n";
pub(crate) const NEW: &[u8] = b"-----BEGIN CERTIFICATE-----\nnew\n";

/// The detectors under test: the three strategies, plus `Combined` with no
/// racy window, which trusts fresh metadata at once (the steady state of a
/// file older than the window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Hash,
    Metadata,
    Combined,
    CombinedTrusted,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [
        Kind::Hash,
        Kind::Metadata,
        Kind::Combined,
        Kind::CombinedTrusted,
    ];
}

/// How a fingerprint is taken: on this thread, or through the async
/// [`Detector`] trait (which hops to the blocking pool).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Blocking,
    Async,
}

/// One detector of a [`Kind`], checked in a [`Mode`].
#[derive(Debug)]
pub(crate) struct Probe {
    detector: AnyDetector,
    mode: Mode,
}

#[derive(Debug)]
enum AnyDetector {
    Hash(ContentHash),
    Metadata(Metadata),
    Combined(Combined),
}

impl Probe {
    pub(crate) fn new(kind: Kind, mode: Mode, path: &Path) -> Self {
        let detector = match kind {
            Kind::Hash => AnyDetector::Hash(ContentHash::new(path)),
            Kind::Metadata => AnyDetector::Metadata(Metadata::new(path)),
            Kind::Combined => AnyDetector::Combined(Combined::new(path)),
            Kind::CombinedTrusted => {
                AnyDetector::Combined(Combined::new(path).racy_window(Duration::ZERO))
            }
        };
        Self { detector, mode }
    }

    pub(crate) fn fingerprint(&self) -> Result<Fingerprint, DetectError> {
        match (self.mode, &self.detector) {
            (Mode::Blocking, AnyDetector::Hash(d)) => d.fingerprint_blocking(),
            (Mode::Blocking, AnyDetector::Metadata(d)) => d.fingerprint_blocking(),
            (Mode::Blocking, AnyDetector::Combined(d)) => d.fingerprint_blocking(),
            (Mode::Async, AnyDetector::Hash(d)) => smol::block_on(d.fingerprint()),
            (Mode::Async, AnyDetector::Metadata(d)) => smol::block_on(d.fingerprint()),
            (Mode::Async, AnyDetector::Combined(d)) => smol::block_on(d.fingerprint()),
        }
    }
}

/// What a check after an event reports, compared with the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Change,
    NoChange,
    /// `DetectError::NotFound` naming the watched path.
    NotFound,
}

impl Outcome {
    pub(crate) fn of(
        before: &Fingerprint,
        after: Result<Fingerprint, DetectError>,
        watched: &Path,
    ) -> Result<Self, String> {
        match after {
            Ok(after) if after == *before => Ok(Self::NoChange),
            Ok(_) => Ok(Self::Change),
            Err(error) => not_found(&error, watched).map(|()| Self::NotFound),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Change => "change",
            Self::NoChange => "no change",
            Self::NotFound => "error (not found)",
        })
    }
}

/// `Ok` when `error` is `NotFound` for `path` and its message names it.
pub(crate) fn not_found(error: &DetectError, path: &Path) -> Result<(), String> {
    let names_path = error.to_string().contains(&path.display().to_string());
    match error {
        DetectError::NotFound { path: p } if p == path && names_path => Ok(()),
        other => Err(format!(
            "expected NotFound for {}, got {other:?}: {other}",
            path.display()
        )),
    }
}

/// Waits until the file system hands out timestamps later than any it handed
/// out before the call, so the next write to a watched file moves its mtime
/// and ctime even where the timestamp tick is coarse (a jiffy, or 2 s on
/// FAT). Probes a file outside every watched directory.
pub(crate) fn next_tick() -> io::Result<()> {
    let mut probe = tempfile::tempfile()?;
    let stamp = |file: &mut fs::File| -> io::Result<SystemTime> {
        file.write_all(b".")?;
        file.metadata()?.modified()
    };
    let first = stamp(&mut probe)?;
    let start = Instant::now();
    while stamp(&mut probe)? <= first {
        assert!(
            start.elapsed() < DEADLINE,
            "the file system clock did not move for {DEADLINE:?}"
        );
        std::thread::yield_now();
    }
    Ok(())
}

/// Runs a command that must succeed.
pub(crate) fn run(program: &str, args: &[&Path]) -> io::Result<()> {
    let status = Command::new(program).args(args).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{program} {args:?}: {status}")))
    }
}

/// Points the symlink `link` at `target` atomically (new link, then rename).
pub(crate) fn retarget(link: &Path, target: &Path) -> io::Result<()> {
    let mut tmp = link.as_os_str().to_owned();
    tmp.push(".tmp");
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, link)
}

/// Runs `future` to completion, failing the test after [`DEADLINE`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    let timeout = async {
        async_io::Timer::after(DEADLINE).await;
        panic!("timed out after {DEADLINE:?} waiting for {what}");
    };
    smol::future::or(future, timeout).await
}

/// `smol::block_on` for a test body that returns a [`TestResult`].
pub(crate) fn block_on(body: impl Future<Output = TestResult>) -> TestResult {
    smol::block_on(body)
}
