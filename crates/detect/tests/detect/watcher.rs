//! The committed-fingerprint model, composites, and the test detector.

use std::fs;
use std::path::{Path, PathBuf};

use tls_reload_detect::{Composite, DetectError, Detector, Strategy, TestDetector, Watcher};

use crate::support::{block_on, next_tick, not_found, TestResult, NEW, OLD};

const STRATEGIES: [Strategy; 3] = [
    Strategy::ContentHash,
    Strategy::Metadata,
    Strategy::Combined,
];

/// Checks and returns the paths of the change, committing it.
async fn commit_change(watcher: &mut Watcher) -> Result<Vec<PathBuf>, DetectError> {
    let change = watcher.check().await?.expect("a change");
    let paths = change.paths().to_vec();
    watcher.commit(change.into_fingerprint());
    Ok(paths)
}

#[test]
fn a_failure_commits_nothing_and_the_change_after_it_is_seen() -> TestResult {
    for strategy in STRATEGIES {
        let dir = tempfile::tempdir()?;
        let cert = dir.path().join("tls.crt");
        fs::write(&cert, OLD)?;
        block_on(async {
            let mut watcher = Watcher::new(strategy.detector(&cert));
            let first = watcher.check().await?.expect("nothing committed yet");
            assert!(first.previous().is_none());
            assert_eq!(first.paths(), std::slice::from_ref(&cert));
            assert!(watcher.committed().is_none(), "check commits nothing");
            watcher.commit(first.fingerprint().clone());
            assert!(watcher.check().await?.is_none(), "{strategy}");
            let committed = watcher.committed().cloned();

            fs::remove_file(&cert)?;
            not_found(&watcher.check().await.expect_err("deleted"), &cert)?;
            assert_eq!(watcher.committed(), committed.as_ref(), "{strategy}");

            next_tick()?;
            fs::write(&cert, NEW)?;
            let change = watcher.check().await?.expect("new content");
            assert_eq!(change.previous(), committed.as_ref(), "{strategy}");
            assert_eq!(change.paths(), std::slice::from_ref(&cert));
            Ok(())
        })?;
    }
    Ok(())
}

/// cert, key, a CA bundle and a CA directory of two files.
struct Material {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    ca_dir: PathBuf,
}

impl Material {
    fn new() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = |name: &str| dir.path().join(name);
        let (cert, key, ca, ca_dir) = (
            path("tls.crt"),
            path("tls.key"),
            path("ca.pem"),
            path("ca.d"),
        );
        fs::create_dir(&ca_dir)?;
        for file in [
            &cert,
            &key,
            &ca,
            &ca_dir.join("a.pem"),
            &ca_dir.join("b.pem"),
        ] {
            fs::write(file, OLD)?;
        }
        Ok(Self {
            _dir: dir,
            cert,
            key,
            ca,
            ca_dir,
        })
    }

    fn watcher(&self, strategy: Strategy) -> Watcher {
        Watcher::new(Composite::from_paths(
            strategy,
            [&self.cert, &self.key, &self.ca, &self.ca_dir],
        ))
    }
}

#[test]
fn a_composite_names_exactly_the_files_that_moved() -> TestResult {
    for strategy in STRATEGIES {
        let m = Material::new()?;
        let in_dir = m.ca_dir.join("a.pem");
        block_on(async {
            let mut watcher = m.watcher(strategy);
            watcher.prime().await?;
            let moves: [&[&Path]; 5] = [
                &[&m.cert],
                &[&m.key],
                &[&m.ca],
                &[&in_dir],
                &[&m.cert, &m.key],
            ];
            for moved in moves {
                for contents in [NEW, OLD] {
                    next_tick()?;
                    for file in moved {
                        fs::write(file, contents)?;
                    }
                    assert_eq!(commit_change(&mut watcher).await?, moved, "{strategy}");
                }
            }

            // The directory's own metadata is part of a Metadata fingerprint.
            let listing = |file: PathBuf| match strategy {
                Strategy::Metadata => vec![m.ca_dir.clone(), file],
                _ => vec![file],
            };
            next_tick()?;
            fs::write(m.ca_dir.join("c.pem"), OLD)?;
            let added = commit_change(&mut watcher).await?;
            assert_eq!(added, listing(m.ca_dir.join("c.pem")), "{strategy}");
            next_tick()?;
            fs::remove_file(m.ca_dir.join("b.pem"))?;
            let removed = commit_change(&mut watcher).await?;
            assert_eq!(removed, listing(m.ca_dir.join("b.pem")), "{strategy}");
            assert!(watcher.check().await?.is_none());
            Ok(())
        })?;
    }
    Ok(())
}

#[test]
fn a_composite_fails_with_the_missing_member() -> TestResult {
    let m = Material::new()?;
    block_on(async {
        let mut watcher = m.watcher(Strategy::Combined);
        watcher.prime().await?;
        let committed = watcher.committed().cloned();
        fs::remove_file(&m.key)?;
        not_found(&watcher.check().await.expect_err("key gone"), &m.key)?;
        assert_eq!(watcher.committed(), committed.as_ref());
        fs::write(&m.key, NEW)?;
        assert_eq!(
            commit_change(&mut watcher).await?,
            std::slice::from_ref(&m.key)
        );
        Ok(())
    })
}

#[test]
fn the_test_detector_changes_and_fails_on_demand() -> TestResult {
    block_on(async {
        let detector = TestDetector::new();
        let mut watcher = Watcher::new(detector.clone());
        watcher.prime().await?;
        assert!(watcher.check().await?.is_none());

        detector.trigger();
        let change = watcher.check().await?.expect("triggered");
        assert!(
            change.paths().is_empty(),
            "a bare test detector has no paths"
        );
        watcher.commit(change.into_fingerprint());
        assert!(watcher.check().await?.is_none());

        detector.fail("disk on fire");
        let error = watcher.check().await.expect_err("failing");
        assert!(
            matches!(&error, DetectError::Injected { reason } if reason == "disk on fire"),
            "{error:?}"
        );
        assert!(error.to_string().contains("disk on fire"), "{error}");
        assert_eq!(error.path(), None);
        detector.trigger();
        assert!(
            watcher.check().await.is_err(),
            "failing wins over a trigger"
        );

        detector.succeed();
        assert!(
            watcher.check().await?.is_some(),
            "the trigger is seen after"
        );
        assert_eq!(detector.checks(), 7);

        // In a composite, the test detector's part is named by its path.
        let mut set = Composite::new();
        set.push("tls.crt", detector.clone());
        set.push("tls.key", TestDetector::new());
        let mut watcher = Watcher::new(set);
        watcher.prime().await?;
        detector.trigger();
        assert_eq!(
            commit_change(&mut watcher).await?,
            [PathBuf::from("tls.crt")]
        );
        Ok(())
    })
}

#[test]
fn detectors_work_boxed_and_shared() -> TestResult {
    let detector = TestDetector::new();
    let boxed: Box<dyn Detector> = Box::new(detector.clone());
    let shared = std::sync::Arc::new(boxed);
    block_on(async {
        let before = shared.fingerprint().await?;
        detector.trigger();
        assert_ne!(shared.fingerprint().await?, before);
        Ok(())
    })
}
