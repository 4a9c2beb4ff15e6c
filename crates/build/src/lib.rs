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
//! - Each file is read once, with a size cap, regular files only, by the
//!   rule of [`tls_reload_detect::read_file`]; a CA directory is listed by
//!   [`tls_reload_detect::dir_files`], so a build reads what the detectors
//!   watch. A dangling symlink in a CA directory names no CA: it is skipped
//!   with a warning (fewer trusted CAs fails closed; a directory left with
//!   none is refused).
//! - PEM is parsed line by line, and an error says what is wrong and where
//!   (file, line) in words: no error, log line or `Debug` output carries a
//!   byte of a material file, whatever the input. A key flattened onto one
//!   line (newlines turned into spaces or a literal `\n`) is named as such.
//! - Keys may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC), or an encrypted PKCS#8
//!   key (PBES2 with PBKDF2 or scrypt, AES-CBC) with a passphrase file read
//!   at every build ([`Materials::with_key_passphrase_file`]); neither the
//!   passphrase nor the decrypted key is logged or shown, and both are
//!   overwritten once used. Certificates may be RSA, ECDSA or Ed25519,
//!   with intermediates after the leaf. **Every** certificate of
//!   the chain must parse as X.509 (a broken intermediate fails every
//!   handshake, so it is refused, naming its position); a certificate not
//!   named as the issuer of the one before it only draws a warning, since
//!   clients search the chain and a server cannot know their roots.
//!   Signatures are not checked: that is the client's job, against its roots.
//! - The key is checked against the leaf certificate explicitly, and the leaf's
//!   validity period against the clock (a policy, on by default).
//! - A client CA bundle is every certificate in the file; a CA directory is
//!   every file in it, in sorted order. When client CAs are configured and the
//!   verifier cannot be built, the build fails: it never yields a config without
//!   client verification. When the CA names would not fit in a TLS
//!   CertificateRequest (64 KiB: about 1,950 typical CAs), they are left out
//!   of it with a warning ([`Built::sends_ca_names`]) rather than build a
//!   config whose every mTLS handshake fails; clients then pick their
//!   certificate without the hint.
//! - CRL files ([`Materials::with_crl`]) are part of the trust: each CRL is
//!   parsed as rustls parses it and must be signed by a client CA, or the
//!   build fails. Past its `nextUpdate` a CRL is served with a warning
//!   ([`Built::crl_expired`]) or, with [`Template::enforce_crl_expiry`],
//!   refused. [`Built::crls`] and [`Built::client_cas`] describe them for a
//!   status page.
//! - Given the config being served, a build whose trust is unchanged reuses its
//!   session storage and ticketer, so clients keep resuming across a
//!   certificate rotation; a build whose client CAs or CRLs changed starts
//!   fresh, so no
//!   session authenticated under the old trust resumes under the new one.
//! - The crypto provider comes from the [`Template`]; [`ServerConfig::builder`]
//!   (which panics without a single process default provider) is never called.
//! - Materials already in memory (from a secret store) build the same way
//!   through [`MaterialBytes`] and [`build_from_bytes`].
//! - The client side builds the same way: [`build_client`] turns
//!   [`ClientMaterials`] (an optional identity, checked like a server's
//!   pair, and trusted roots from a bundle and/or a directory, else the
//!   [`ClientTemplate`]'s root store) into a rustls `ClientConfig`. A roots
//!   file that does not parse fails the build; the client's session cache
//!   is kept only while neither the identity nor the roots changed.
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

mod client;
mod config;
mod crl;
mod encrypted;
mod error;
mod files;
mod leaf;
mod materials;
mod pair;
mod pem;
mod template;

pub use client::{
    build_client, build_client_blocking, ClientBuilt, ClientMaterials, ClientTemplate,
};
pub use config::{build, build_blocking, build_from_bytes, Built, Resumption};
pub use crl::{CaInfo, CrlInfo};
pub use error::{BuildError, CertProblem, CrlProblem, KeyEncryptionProblem};
pub use leaf::LeafInfo;
pub use materials::{MaterialBytes, Materials};
pub use pair::{build_pair, build_pair_blocking, pairs_in_dir, BuiltPair, PairFiles};
pub use pem::{Label, PemProblem};
pub use template::{ClientAuth, Template};

/// How many bytes a build reads from one file at most: 1 MiB, the same cap
/// as the detectors'.
pub use tls_reload_detect::DEFAULT_MAX_FILE_SIZE;
