//! The `status_request` and `proxy_args` fuzz targets' checks, on stable:
//! every seed and saved crash input (`fuzz/seeds/<target>/`,
//! `fuzz/regressions/<target>/`) goes through the proxy's hidden fuzzing
//! entry points and the fuzz targets' own checks (`fuzz/checks/proxy.rs`).

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/checks/args_input.rs"]
mod args_input;

#[path = "../../../fuzz/checks/proxy.rs"]
mod checks;

#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn status_request_seeds_and_regressions() {
    let n = replay::replay(&fuzz_dir(), "status_request", checks::status_request);
    assert!(n >= 5, "only {n} status_request inputs");
}

#[test]
fn proxy_args_seeds_and_regressions() {
    let n = replay::replay(&fuzz_dir(), "proxy_args", checks::proxy_args);
    assert!(n >= 3, "only {n} proxy_args inputs");
}
