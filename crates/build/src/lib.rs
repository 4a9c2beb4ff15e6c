//! TLS materials on disk, turned into a rustls [`ServerConfig`] that is safe to
//! serve, or a precise error. Never half a config.
//!
//! A server that rotates its certificate must re-read the certificate chain,
//! the private key and, for mTLS, the client CAs, and must not start serving a
//! pair that does not match, a certificate that has expired, or a config that
//! silently stopped verifying clients. This crate does that reading and
//! checking, off the async executor (on [`blocking`]'s thread pool), and
//! returns the config with what a status page needs: the leaf's serial,
//! subject, validity and fingerprint.
//!
//! - Each file is read once, with a size cap, and parsed as PEM. Keys may be
//!   PKCS#8, PKCS#1 (RSA) or SEC1 (EC); certificates RSA, ECDSA or Ed25519,
//!   with intermediates after the leaf.
//! - The key is checked against the leaf certificate explicitly, and the leaf's
//!   validity period against the clock (a policy, on by default).
//! - A client CA bundle is every certificate in the file; a CA directory is
//!   every file in it, in sorted order. When client CAs are configured and the
//!   verifier cannot be built, the build fails: it never yields a config without
//!   client verification.
//! - Given the config being served, a build whose trust is unchanged reuses its
//!   session storage and ticketer, so clients keep resuming across a
//!   certificate rotation; a build whose client CAs changed starts fresh, so no
//!   session authenticated under the old trust resumes under the new one.
//! - The crypto provider comes from the [`Template`]; [`ServerConfig::builder`]
//!   (which panics without a single process default provider) is never called.
//!
//! # Example
//!
//! ```
//! use tls_reload_build::{build, Materials, Resumption, Template};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let key = rcgen::KeyPair::generate()?;
//! # let cert = rcgen::CertificateParams::new(vec!["localhost".into()])?.self_signed(&key)?;
//! # std::fs::write(dir.path().join("tls.crt"), cert.pem())?;
//! # std::fs::write(dir.path().join("tls.key"), key.serialize_pem())?;
//! # std::env::set_current_dir(dir.path())?;
//!
//! let materials = Materials::new("tls.crt", "tls.key");
//! let template = Template::from_default_provider()?.alpn_protocols(vec![b"h2".to_vec()]);
//!
//! let built = smol::block_on(build(&materials, &template, None))?;
//! println!("serving {} until {:?}", built.leaf().serial_hex(), built.leaf().not_after);
//! let config: std::sync::Arc<rustls::ServerConfig> = built.config().clone();
//! # drop(config);
//!
//! // Later, after the files changed: pass the served build to keep resumption.
//! let served = std::sync::Arc::new(built);
//! let next = smol::block_on(build(&materials, &template, Some(served)))?;
//! assert_eq!(next.resumption(), Resumption::Kept);
//! # Ok(())
//! # }
//! ```
//!
//! [`ServerConfig`]: rustls::ServerConfig
//! [`ServerConfig::builder`]: rustls::ServerConfig::builder
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub use rustls;

mod config;
mod error;
mod files;
mod leaf;
mod materials;
mod template;

pub use config::{build, build_blocking, Built, Resumption};
pub use error::BuildError;
pub use leaf::LeafInfo;
pub use materials::Materials;
pub use template::{ClientAuth, Template};

/// How many bytes a build reads from one file at most: 1 MiB, the same cap
/// as the detectors'.
pub use tls_reload_detect::DEFAULT_MAX_FILE_SIZE;
