use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::leaf::Rfc3339;

/// Why a build refused the materials. The message names the file and the reason.
///
/// Some phrases are relied upon by tools that read these messages and stay
/// stable: `key does not match certificate`, `certificate expired`,
/// `certificate not yet valid`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file (or the CA directory) could not be opened or read.
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// A file is larger than [`Template::max_file_size`](crate::Template::max_file_size).
    #[error("{}: file is larger than the {cap}-byte cap", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap in bytes.
        cap: u64,
    },

    /// A file holds no `-----BEGIN` line at all.
    #[error("{}: not PEM (no -----BEGIN line)", .path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
    },

    /// A file has PEM sections that do not parse.
    #[error("{}: malformed PEM: {source}", .path.display())]
    MalformedPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser found.
        source: rustls::pki_types::pem::Error,
    },

    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{}: no certificate in file", .path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },

    /// The key file holds no private key section (PKCS#8, PKCS#1 or SEC1;
    /// encrypted keys are not supported).
    #[error("{}: no private key in file", .path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },

    /// The crypto provider cannot use the private key.
    #[error("{}: unusable private key: {source}", .path.display())]
    BadPrivateKey {
        /// The key file.
        path: PathBuf,
        /// Why the provider refused it.
        source: rustls::Error,
    },

    /// The leaf certificate does not parse as X.509.
    #[error("{}: cannot parse leaf certificate: {reason}", .path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What the parser reported.
        reason: String,
    },

    /// The private key is not the one the leaf certificate was issued for.
    #[error("{}: key does not match certificate in {}", .key.display(), .cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },

    /// The leaf certificate's not-after date has passed.
    #[error(
        "{}: certificate expired at {} (now {})",
        .path.display(), Rfc3339(*.not_after), Rfc3339(*.now)
    )]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// The leaf's not-after date.
        not_after: SystemTime,
        /// When the build checked.
        now: SystemTime,
    },

    /// The leaf certificate's not-before date is still to come.
    #[error(
        "{}: certificate not yet valid: valid from {} (now {})",
        .path.display(), Rfc3339(*.not_before), Rfc3339(*.now)
    )]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// The leaf's not-before date.
        not_before: SystemTime,
        /// When the build checked.
        now: SystemTime,
    },

    /// A client CA file holds no certificate usable as a trust anchor.
    #[error(
        "{}: no usable CA certificate ({found} found, none usable as a trust anchor)",
        .path.display()
    )]
    NoUsableCa {
        /// The CA file (the bundle, or a file of the CA directory).
        path: PathBuf,
        /// How many `CERTIFICATE` sections it holds.
        found: usize,
    },

    /// The client CA directory holds no file to read.
    #[error("{}: CA directory holds no certificate file", .path.display())]
    EmptyCaDir {
        /// The directory.
        path: PathBuf,
    },

    /// The client certificate verifier could not be built. The build fails
    /// rather than serve without client verification.
    #[error("{}: cannot build client certificate verifier: {source}", .path.display())]
    ClientVerifier {
        /// The CA file, or the CA directory when no file is set.
        path: PathBuf,
        /// Why rustls refused.
        source: rustls::server::VerifierBuilderError,
    },

    /// The server config could not be built from the template (for example
    /// protocol versions the provider does not support).
    #[error("cannot build server config: {source}")]
    Config {
        /// Why rustls refused.
        source: rustls::Error,
    },

    /// Session tickets were asked for and no ticketer could be made.
    #[error("cannot make a session ticketer: {source}")]
    Ticketer {
        /// Why.
        source: rustls::Error,
    },

    /// No process default crypto provider is installed and neither the `ring`
    /// nor the `aws-lc-rs` feature is enabled.
    #[error(
        "no crypto provider: install a process default or enable the `ring` or `aws-lc-rs` feature"
    )]
    NoProvider,
}

impl BuildError {
    /// The file (or directory) the error is about, if it is about one. For a
    /// key mismatch, the key file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Read { path, .. }
            | Self::TooLarge { path, .. }
            | Self::NotPem { path }
            | Self::MalformedPem { path, .. }
            | Self::NoCertificate { path }
            | Self::NoPrivateKey { path }
            | Self::BadPrivateKey { path, .. }
            | Self::BadCertificate { path, .. }
            | Self::Expired { path, .. }
            | Self::NotYetValid { path, .. }
            | Self::NoUsableCa { path, .. }
            | Self::EmptyCaDir { path }
            | Self::ClientVerifier { path, .. } => Some(path),
            Self::KeyMismatch { key, .. } => Some(key),
            Self::Config { .. } | Self::Ticketer { .. } | Self::NoProvider => None,
        }
    }
}
