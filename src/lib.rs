#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

/// Change detectors for files and directories: [`tls_reload_detect`].
pub use tls_reload_detect as detect;

/// TLS materials into rustls server configs: [`tls_reload_build`].
pub use tls_reload_build as build;

/// The reloading TLS acceptor: [`tls_reload_acceptor`].
pub use tls_reload_acceptor as acceptor;
