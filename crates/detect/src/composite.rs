use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::future::try_join_all;

use crate::{DetectError, Detector, Fingerprint, Strategy, DEFAULT_MAX_FILE_SIZE};

/// One fingerprint over many paths, each watched by its own detector.
///
/// Its fingerprint has a part per watched file (a directory contributes its
/// files), so a [`Change`](crate::Change) names exactly what moved. The
/// detectors run concurrently; the first error wins. When every one can take
/// its fingerprint on a blocking thread
/// ([`blocking_fingerprint`](Detector::blocking_fingerprint): the built-in
/// strategies can), they all take it in one trip to the blocking pool, one
/// after the other.
///
/// ```no_run
/// use tls_reload_detect::{Composite, Strategy};
/// let watched = Composite::from_paths(Strategy::Combined, ["tls.crt", "tls.key", "ca.d"]);
/// ```
#[derive(Default)]
pub struct Composite {
    members: Members,
    /// A member has no blocking way: every check goes through `fingerprint`.
    async_only: AtomicBool,
    /// The members' last fingerprints and the set's, made of them.
    last: Mutex<Option<(Vec<Fingerprint>, Fingerprint)>>,
}

/// Shared with the blocking pool for one check.
type Members = Arc<Vec<(PathBuf, Arc<dyn Detector>)>>;

impl Composite {
    /// An empty set; its fingerprint never changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every path watched with `strategy` and the default read cap.
    pub fn from_paths<P: Into<PathBuf>>(
        strategy: Strategy,
        paths: impl IntoIterator<Item = P>,
    ) -> Self {
        Self::from_paths_with_limit(strategy, paths, DEFAULT_MAX_FILE_SIZE)
    }

    /// Every path watched with `strategy`, reading at most `limit` bytes per
    /// file.
    pub fn from_paths_with_limit<P: Into<PathBuf>>(
        strategy: Strategy,
        paths: impl IntoIterator<Item = P>,
        limit: u64,
    ) -> Self {
        let mut set = Self::new();
        for path in paths {
            let path = path.into();
            set.push(path.clone(), strategy.detector_with_limit(path, limit));
        }
        set
    }

    /// Adds a detector. `path` names its part when the detector's own
    /// fingerprint has no parts (a custom or test detector).
    pub fn push(
        &mut self,
        path: impl Into<PathBuf>,
        detector: impl Detector + 'static,
    ) -> &mut Self {
        Arc::make_mut(&mut self.members).push((path.into(), Arc::new(detector)));
        *self.last.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        self
    }

    /// The paths given to [`push`](Composite::push), in order.
    pub fn paths(&self) -> impl Iterator<Item = &std::path::Path> + '_ {
        self.members.iter().map(|(path, _)| path.as_path())
    }

    /// How many detectors the set holds.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the set holds no detector.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl std::fmt::Debug for Composite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Composite")
            .field("members", &self.members)
            .finish()
    }
}

impl Composite {
    /// The set's fingerprint for its members' `parts`: the one it holds
    /// while every member handed back the fingerprint it gave last time.
    fn settle(&self, parts: Vec<Fingerprint>) -> Fingerprint {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((held, fingerprint)) = &*last {
            if held.iter().zip(&parts).all(|(held, now)| held.is_same(now)) {
                return fingerprint.clone();
            }
        }
        let fingerprint = Fingerprint::from_parts(
            self.members
                .iter()
                .map(|(path, _)| path.clone())
                .zip(parts.iter().cloned()),
        );
        *last = Some((parts, fingerprint.clone()));
        fingerprint
    }
}

/// Every member's fingerprint on this thread, in order; `None` as soon as
/// one has no blocking way.
fn members_blocking(members: &Members) -> Option<Result<Vec<Fingerprint>, DetectError>> {
    let mut parts = Vec::with_capacity(members.len());
    for (_, detector) in members.iter() {
        match detector.blocking_fingerprint()? {
            Ok(part) => parts.push(part),
            Err(error) => return Some(Err(error)),
        }
    }
    Some(Ok(parts))
}

#[async_trait]
impl Detector for Composite {
    async fn fingerprint(&self) -> Result<Fingerprint, DetectError> {
        if !self.async_only.load(Ordering::Relaxed) {
            let members = self.members.clone();
            match blocking::unblock(move || members_blocking(&members)).await {
                Some(parts) => return Ok(self.settle(parts?)),
                None => self.async_only.store(true, Ordering::Relaxed),
            }
        }
        let parts = try_join_all(
            self.members
                .iter()
                .map(|(_, detector)| detector.fingerprint()),
        )
        .await?;
        Ok(self.settle(parts))
    }

    fn blocking_fingerprint(&self) -> Option<Result<Fingerprint, DetectError>> {
        Some(members_blocking(&self.members)?.map(|parts| self.settle(parts)))
    }

    fn watched_paths(&self) -> Vec<PathBuf> {
        self.members
            .iter()
            .flat_map(|(_, detector)| detector.watched_paths())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Combined;

    /// A detector with no blocking way.
    #[derive(Debug)]
    struct AsyncOnly;

    #[async_trait]
    impl Detector for AsyncOnly {
        async fn fingerprint(&self) -> Result<Fingerprint, DetectError> {
            Ok(Fingerprint::of_bytes(b"async only"))
        }
    }

    #[test]
    fn built_in_members_take_one_trip_and_others_are_asked_their_way(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, "cert")?;
        std::fs::write(&key, "key")?;
        // No racy window: the fresh files are trusted at once.
        let trusted = |path: &PathBuf| Combined::new(path).racy_window(std::time::Duration::ZERO);
        let mut files = Composite::new();
        files.push(&cert, trusted(&cert)).push(&key, trusted(&key));
        let blocking = files.blocking_fingerprint().expect("built-ins block")?;
        let first = smol::block_on(files.fingerprint())?;
        assert!(!files.async_only.load(Ordering::Relaxed));
        assert_eq!(first, blocking);
        assert!(
            smol::block_on(files.fingerprint())?.is_same(&first),
            "nothing moved: the set's fingerprint is handed back"
        );

        let mut mixed = Composite::new();
        mixed
            .push(&cert, Combined::new(&cert))
            .push("custom", AsyncOnly);
        assert!(mixed.blocking_fingerprint().is_none());
        let taken = smol::block_on(mixed.fingerprint())?;
        assert!(mixed.async_only.load(Ordering::Relaxed));
        assert_eq!(taken.paths().count(), 2);
        assert_eq!(smol::block_on(mixed.fingerprint())?, taken);
        Ok(())
    }
}
