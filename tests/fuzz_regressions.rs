//! The `example_args` and `first_bytes` fuzz targets' checks, on stable:
//! every seed and saved crash input (`fuzz/seeds/<target>/`,
//! `fuzz/regressions/<target>/`) goes through the example servers' argument
//! parser (`Args::parse` in `examples/common/mod.rs`, included here as the
//! examples include it) and the fuzz target's own checks
//! (`fuzz/checks/example_args.rs`), or through `ReloadingAcceptor::accept`
//! as a client's first bytes (`fuzz/checks/acceptor.rs`).

use std::path::Path;

#[allow(dead_code)]
#[path = "../examples/common/mod.rs"]
mod common;

#[path = "../fuzz/checks/args_input.rs"]
mod args_input;

#[path = "../fuzz/checks/example_args.rs"]
mod checks;

#[path = "../fuzz/checks/replay.rs"]
mod replay;

#[path = "../fuzz/checks/acceptor.rs"]
mod acceptor_checks;

#[test]
fn first_bytes_seeds_and_regressions() {
    let n = replay::replay(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz"),
        "first_bytes",
        acceptor_checks::first_bytes,
    );
    assert!(n >= 10, "only {n} first_bytes inputs");
}

#[test]
fn example_args_seeds_and_regressions() {
    let n = replay::replay(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz"),
        "example_args",
        checks::example_args,
    );
    assert!(n >= 3, "only {n} example_args inputs");
}

/// `--help` answers without printing or exiting inside the parser (the
/// example binaries print the usage and exit 0 around it), and wins only
/// when it comes before a refused argument.
#[test]
fn help_is_returned_not_acted_on() {
    let parse = |line: &str| common::Args::parse(line.split(' ').map(str::to_owned));
    assert!(matches!(parse("--help"), Ok(None)));
    assert!(matches!(parse("--cert c -h --bogus"), Ok(None)));
    assert!(matches!(parse("--interval-ms 0 --help"), Ok(None)));
    assert!(parse("--bogus --help").is_err());
    let args = parse("--cert c --key k --listen 127.0.0.1:0")
        .expect("parses")
        .expect("not help");
    assert_eq!(args.cert.as_deref(), Some(Path::new("c")));
}

/// Inputs whose addresses would be looked up in DNS are skipped by the
/// check (and so by the fuzzer).
#[test]
fn host_names_are_not_looked_up() {
    use args_input::{any_would_resolve, would_resolve};
    assert!(would_resolve("example.com:443"));
    assert!(!would_resolve("127.0.0.1:443") && !would_resolve("[::1]:0"));
    assert!(!would_resolve("no-port") && !would_resolve("host:notaport"));
    let args = |line: &str| line.split(' ').map(str::to_owned).collect::<Vec<_>>();
    assert!(any_would_resolve(&args("--listen=localhost:80")));
    assert!(any_would_resolve(&args("--cert c --listen localhost:80")));
    assert!(any_would_resolve(&args("--listen --listen=127.0.0.1:80")));
    assert!(!any_would_resolve(&args("--listen=127.0.0.1:80 --cert=c")));
    assert!(!any_would_resolve(&args("--cert=c --listen=127.0.0.1:80")));
}
