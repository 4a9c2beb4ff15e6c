//! The read cap, and errors that name the path.

use std::fs;
use std::path::Path;

use tls_reload_detect::{
    Combined, Composite, ContentHash, DetectError, Detector, Metadata, Strategy,
    DEFAULT_MAX_FILE_SIZE,
};

use crate::support::{block_on, not_found, run, TestResult};

/// `TooLarge` for `path` and `limit`, with both in the message.
fn assert_too_large(result: Result<impl std::fmt::Debug, DetectError>, path: &Path, limit: u64) {
    let error = result.expect_err("over the cap");
    let message = error.to_string();
    assert!(
        matches!(&error, DetectError::TooLarge { path: p, limit: l, size }
            if p == path && *l == limit && *size > limit),
        "{error:?}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(&limit.to_string()), "{message}");
    assert_eq!(error.path(), Some(path));
}

#[test]
fn a_file_over_the_cap_is_too_large() -> TestResult {
    let dir = tempfile::tempdir()?;
    let at_cap = dir.path().join("at-cap.pem");
    let over = dir.path().join("over.pem");
    fs::write(&at_cap, [b'x'; 16])?;
    fs::write(&over, [b'x'; 17])?;

    ContentHash::new(&at_cap)
        .max_file_size(16)
        .fingerprint_blocking()?;
    Combined::new(&at_cap)
        .max_file_size(16)
        .fingerprint_blocking()?;
    assert_too_large(
        ContentHash::new(&over)
            .max_file_size(16)
            .fingerprint_blocking(),
        &over,
        16,
    );
    assert_too_large(
        Combined::new(&over)
            .max_file_size(16)
            .fingerprint_blocking(),
        &over,
        16,
    );
    Ok(())
}

#[test]
fn the_default_cap_is_one_mebibyte_and_metadata_reads_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let big = dir.path().join("big.pem");
    fs::write(&big, vec![b'x'; DEFAULT_MAX_FILE_SIZE as usize + 1])?;
    block_on(async {
        for strategy in [Strategy::ContentHash, Strategy::Combined] {
            let result = strategy.detector(&big).fingerprint().await;
            assert_too_large(result, &big, DEFAULT_MAX_FILE_SIZE);
        }
        Strategy::Metadata.detector(&big).fingerprint().await?;
        Ok(())
    })
}

#[test]
fn a_file_over_the_cap_in_a_directory_is_too_large() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.d");
    fs::create_dir(&ca)?;
    fs::write(ca.join("a.pem"), [b'x'; 8])?;
    fs::write(ca.join("b.pem"), [b'x'; 64])?;
    let big = ca.join("b.pem");

    assert_too_large(
        ContentHash::new(&ca)
            .max_file_size(32)
            .fingerprint_blocking(),
        &big,
        32,
    );
    assert_too_large(
        Combined::new(&ca).max_file_size(32).fingerprint_blocking(),
        &big,
        32,
    );
    Metadata::new(&ca).fingerprint_blocking()?;
    let set = Composite::from_paths_with_limit(Strategy::Combined, [&ca], 32);
    assert_too_large(smol::block_on(set.fingerprint()), &big, 32);
    Ok(())
}

#[test]
fn a_missing_path_is_not_found_and_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing.pem");
    let dangling = dir.path().join("dangling.pem");
    std::os::unix::fs::symlink(&missing, &dangling)?;
    for strategy in [
        Strategy::ContentHash,
        Strategy::Metadata,
        Strategy::Combined,
    ] {
        for path in [&missing, &dangling] {
            let error =
                smol::block_on(strategy.detector(path).fingerprint()).expect_err("nothing there");
            not_found(&error, path)?;
        }
    }
    Ok(())
}

#[test]
fn a_fifo_is_unsupported_and_named_but_skipped_in_a_directory() -> TestResult {
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("fifo.pem");
    run("mkfifo", &[&fifo])?;
    fs::write(dir.path().join("tls.crt"), b"cert")?;
    for strategy in [
        Strategy::ContentHash,
        Strategy::Metadata,
        Strategy::Combined,
    ] {
        let error = smol::block_on(strategy.detector(&fifo).fingerprint()).expect_err("not a file");
        let message = error.to_string();
        assert!(
            matches!(&error, DetectError::NotRegularFile { path } if *path == fifo),
            "{error:?}"
        );
        assert!(message.contains(&fifo.display().to_string()), "{message}");

        // Reading it would block: a directory watch leaves it out.
        let fingerprint = smol::block_on(strategy.detector(dir.path()).fingerprint())?;
        assert!(fingerprint.paths().all(|path| path != fifo), "{strategy}");
    }
    Ok(())
}
