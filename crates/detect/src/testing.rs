use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::{DetectError, Detector, Fingerprint};

/// A detector driven by hand, for tests that want a reload *now* rather than
/// after a real file changed and a timer fired.
///
/// Clones share state: keep one clone in the test, give another to the code
/// under test.
///
/// ```
/// use tls_reload_detect::{Detector, TestDetector};
/// # smol::block_on(async {
/// let detector = TestDetector::new();
/// let before = detector.fingerprint().await.unwrap();
/// detector.trigger();
/// assert_ne!(detector.fingerprint().await.unwrap(), before);
/// detector.fail("disk on fire");
/// assert!(detector.fingerprint().await.is_err());
/// detector.succeed();
/// assert!(detector.fingerprint().await.is_ok());
/// # });
/// ```
#[derive(Clone, Debug, Default)]
pub struct TestDetector {
    state: Arc<TestState>,
}

#[derive(Debug, Default)]
struct TestState {
    version: AtomicU64,
    checks: AtomicU64,
    failure: Mutex<Option<String>>,
}

impl TestDetector {
    /// A detector whose fingerprint stays the same until
    /// [`trigger`](TestDetector::trigger).
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes the fingerprint: the next check sees a change.
    pub fn trigger(&self) {
        self.state.version.fetch_add(1, Ordering::SeqCst);
    }

    /// Makes every check fail with `reason` until
    /// [`succeed`](TestDetector::succeed).
    pub fn fail(&self, reason: impl Into<String>) {
        *self.failure() = Some(reason.into());
    }

    /// Ends a [`fail`](TestDetector::fail).
    pub fn succeed(&self) {
        *self.failure() = None;
    }

    /// How many fingerprints have been asked for.
    pub fn checks(&self) -> u64 {
        self.state.checks.load(Ordering::SeqCst)
    }

    fn failure(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.state
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Detector for TestDetector {
    async fn fingerprint(&self) -> Result<Fingerprint, DetectError> {
        self.state.checks.fetch_add(1, Ordering::SeqCst);
        if let Some(reason) = self.failure().clone() {
            return Err(DetectError::Injected { reason });
        }
        let version = self.state.version.load(Ordering::SeqCst);
        Ok(Fingerprint::of_bytes(&version.to_le_bytes()))
    }
}
