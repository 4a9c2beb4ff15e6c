//! `tls-reload-proxy`: a TLS-terminating TCP proxy whose certificate, key and
//! client CAs follow the files on disk, so renewing them (cert-manager,
//! certbot, Vault agent) never needs a restart.
//!
//! Run `tls-reload-proxy --help` for the flags. The code is in the library
//! (`src/lib.rs`); this only hands it the command line.
#![forbid(unsafe_code)]

use std::process::ExitCode;

/// jemalloc rather than glibc's malloc: see the `tikv-jemallocator` line
/// of Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // `args_os`: a non-UTF-8 argument is a usage error (exit 2), not a panic.
    tls_reload_proxy::run(std::env::args_os().skip(1))
}
