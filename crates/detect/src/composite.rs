use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use futures::future::try_join_all;

use crate::{DetectError, Detector, Fingerprint, Strategy, DEFAULT_MAX_FILE_SIZE};

/// One fingerprint over many paths, each watched by its own detector.
///
/// Its fingerprint has a part per watched file (a directory contributes its
/// files), so a [`Change`](crate::Change) names exactly what moved. The
/// detectors run concurrently; the first error wins.
///
/// ```no_run
/// use tls_reload_detect::{Composite, Strategy};
/// let watched = Composite::from_paths(Strategy::Combined, ["tls.crt", "tls.key", "ca.d"]);
/// ```
#[derive(Default)]
pub struct Composite {
    members: Vec<(PathBuf, Box<dyn Detector>)>,
    /// The members' last fingerprints and the set's, made of them.
    last: Mutex<Option<(Vec<Fingerprint>, Fingerprint)>>,
}

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
        self.members.push((path.into(), Box::new(detector)));
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

#[async_trait]
impl Detector for Composite {
    async fn fingerprint(&self) -> Result<Fingerprint, DetectError> {
        let parts = try_join_all(
            self.members
                .iter()
                .map(|(_, detector)| detector.fingerprint()),
        )
        .await?;
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((held, fingerprint)) = &*last {
            if held.iter().zip(&parts).all(|(held, now)| held.is_same(now)) {
                return Ok(fingerprint.clone());
            }
        }
        let fingerprint = Fingerprint::from_parts(
            self.members
                .iter()
                .map(|(path, _)| path.clone())
                .zip(parts.iter().cloned()),
        );
        *last = Some((parts, fingerprint.clone()));
        Ok(fingerprint)
    }

    fn watched_paths(&self) -> Vec<PathBuf> {
        self.members
            .iter()
            .flat_map(|(_, detector)| detector.watched_paths())
            .collect()
    }
}
