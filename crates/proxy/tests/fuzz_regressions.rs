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

/// The seeds at the page's 8 KiB head limit are answered as the limit
/// says: a head that ends within it is routed, one whose blank line
/// straddles it or that has none is too large.
#[test]
fn the_head_limit_seeds_route_as_documented() {
    let route = |name: &str| {
        let bytes =
            std::fs::read(fuzz_dir().join("seeds/status_request").join(name)).expect("seed");
        tls_reload_proxy::fuzzing::parse_status_request(&bytes).route
    };
    assert_eq!(route("ends-at-limit"), "Status");
    assert_eq!(route("straddles-limit"), "TooLarge");
    assert_eq!(route("too-large"), "TooLarge");
    assert_eq!(route("post"), "MethodNotAllowed");
}
