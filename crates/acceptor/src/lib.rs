//! A TLS acceptor that follows its certificate files, for any async runtime.
//!
//! Certificates are renewed on disk by something else (cert-manager, Vault
//! agent, certbot, a SPIFFE helper). [`ReloadingAcceptor`] notices, builds
//! the new `rustls` config on a blocking thread, and hands it to the next
//! handshake: no restart, no dropped connection, and a broken renewal never
//! replaces a good config. It is the idea of Valkey's
//! `tls-auto-reload-interval`, as a library.
//!
//! It speaks the `futures` IO traits, with timers from `async-io`, so it
//! plugs into smol, async-std, or a thread running `block_on`; no tokio.
//!
//! ```no_run
//! use std::net::TcpListener;
//! use std::time::Duration;
//! use smol::{io, Async};
//! use tls_reload_acceptor::ReloadingAcceptor;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let acceptor = ReloadingAcceptor::from_files("tls.crt", "tls.key")
//!         .interval(Duration::from_secs(5))
//!         .build() // reads and checks the files now: fails with the file and the reason
//!         .await?;
//!     smol::spawn(acceptor.reloader()).detach(); // ends when the acceptor is dropped
//!     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 8443))?;
//!     loop {
//!         let (tcp, _) = listener.accept().await?;
//!         tcp.get_ref().set_nodelay(true)?;
//!         let acceptor = acceptor.clone();
//!         smol::spawn(async move {
//!             let tls = acceptor.accept(tcp).await?; // the newest good config
//!             let (reader, mut writer) = io::split(tls);
//!             io::copy(reader, &mut writer).await
//!         })
//!         .detach();
//!     }
//! })
//! # }
//! ```
//!
//! # How a reload goes
//!
//! 1. Every interval the [reloader](ReloadingAcceptor::reloader) takes a
//!    fingerprint of the files (by default [`Strategy::Combined`]: one
//!    `stat` per file, a hash only when metadata moved).
//! 2. If it differs from the fingerprint of the files being served, the new
//!    config is built on the blocking pool (`tls_reload_build`), which refuses
//!    anything inconsistent: a key that does not match the certificate, an
//!    expired certificate, a CA file with no certificate.
//! 3. If the files moved while they were read (a renewer mid-write, a
//!    `..data` swap between two reads), the build is dropped, neither applied
//!    nor a failure, and starts again once they settle.
//! 4. A good build is applied: stored atomically for the next accept; open
//!    connections keep their config. Only then is the fingerprint committed,
//!    so a failed build (the certificate written, the key not yet) is
//!    retried as soon as anything moves, and the last good config keeps
//!    serving meanwhile.
//!
//! `reload_now`, `set_materials` and `set_template` go through the same
//! steps; a background build that began before one of them is never applied
//! after it. The accept path loads the config with an atomic load and never
//! waits for a build; the only lock a handshake touches is its deadline
//! grain's, held for a few lines to leave its waker and take it back.
//! rustls's connection is made when the client's first bytes come, so a
//! connection that never speaks (a TCP health check, a port scan) costs
//! none of rustls's work and no allocation (its deadline shares a timer
//! made every few hundred milliseconds).
//!
//! A failure is reported once per cause and set of files, through `tracing`,
//! [`status`](ReloadingAcceptor::status) and
//! [`events`](ReloadingAcceptor::events).
//!
//! # The client side
//!
//! [`ReloadingConnector`] is the same engine for outbound connections: a
//! client identity (for servers that require client certificates) and the
//! trusted server roots follow their files, with the same refusals, status
//! and events; a new identity or new roots start a fresh session cache.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod acceptor;
mod connector;
mod deadline;
mod engine;
mod error;
mod expiry;
mod incoming;
mod log_limit;
mod named;
mod server;
mod sni;
mod source;
mod start;
mod status;

pub use acceptor::{
    Accept, Builder, Reloaded, Reloader, ReloadingAcceptor, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_INTERVAL, DEFAULT_RETRY_INTERVAL,
};
pub use connector::{Connect, ConnectorBuilder, ConnectorReloaded, ReloadingConnector};
pub use error::ReloadError;
pub use expiry::{CertKind, ExpiryWindow};
pub use incoming::{
    tcp_connections, HandshakeTask, Incoming, TcpConnections, DEFAULT_MAX_HANDSHAKES,
};
pub use log_limit::{Admission, LogLimit, Suppressed, DEFAULT_LOG_BUDGET, DEFAULT_LOG_WINDOW};
pub use sni::{SniBatch, SniResolver};
pub use status::{
    ConnectorEvent, ConnectorStatus, Events, PairStatus, ReloadEvent, SkipReason, Status,
};

pub use futures_rustls::client::TlsStream as ClientTlsStream;
pub use futures_rustls::server::TlsStream;
pub use rustls;
pub use tls_reload_build::{
    build_pair, build_pair_blocking, pairs_in_dir, BuildError, Built, BuiltPair, CaInfo,
    ClientAuth, ClientBuilt, ClientMaterials, ClientTemplate, CrlInfo, LeafInfo, Materials,
    PairFiles, Resumption, Template,
};
/// A detector driven by hand, for tests (feature `test-util`).
#[cfg(feature = "test-util")]
pub use tls_reload_detect::TestDetector;
pub use tls_reload_detect::{Detection, Detector, Strategy};
