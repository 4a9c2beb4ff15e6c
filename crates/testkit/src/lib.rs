//! Test support for the tls-reload workspace, one copy for the tests,
//! examples and benchmarks of every crate: an rcgen PKI with chosen
//! serials ([`Ca`], [`Leaf`]), files written the way renewers write them
//! ([`write_atomic`], [`SecretVolume`], ...), deadlines ([`wait_until`],
//! [`DEADLINE`]), a loopback rustls client that reads the served serial
//! with x509-parser ([`fetch_serial`]), the two runtimes behind one trait
//! ([`Runtime`], [`on_both_runtimes!`]), captured logs and child
//! processes.
//!
//! Not published; helpers panic with a message instead of returning errors.

mod client;
mod files;
mod io;
mod logs;
mod pki;
mod process;
mod runtime;
mod wait;

pub use client::{
    client_config, connect, der_serial_hex, echo_round_trip, fetch_serial, provider,
    resuming_client_config, served_leaf, served_serial, tls_connect, ClientStream,
};
pub use files::{
    openssl, openssl_self_signed, symlink, write_atomic, write_ca_dir, write_in_place, write_leaf,
    write_new, write_pair, SecretVolume,
};
pub use io::Silent;
pub use logs::{init_tracing, Captured};
pub use pki::{ca_params, ca_pem, key_copy, leaf_params, new_key, Ca, Leaf};
pub use process::{run_within, Process};
pub use runtime::{listen, spawn, AsyncStd, BoxIo, Connections, Io, Runtime, Smol};
pub use wait::{timeout, wait_until, wait_until_blocking, DEADLINE};

#[doc(hidden)]
pub use anyhow;
