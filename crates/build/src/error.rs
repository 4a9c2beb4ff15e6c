use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::leaf::Rfc3339;
use crate::pem::{Label, PemProblem};

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
    #[error("{}: file is over the size limit of {limit} bytes", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },

    /// A path is not a regular file (after following symlinks): a
    /// directory, FIFO, socket or device, which is never opened, since
    /// reading it could block or never end.
    #[error("{}: not a regular file", .path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
    },

    /// A file holds no `-----BEGIN` line at all.
    #[error("{}: not PEM (no -----BEGIN line)", .path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
    },

    /// A file's PEM does not parse. The message says what is wrong and
    /// where, in words: never the offending bytes, which may be a key.
    #[error("{}: malformed PEM at line {line}: {problem}", .path.display())]
    MalformedPem {
        /// The file.
        path: PathBuf,
        /// The 1-based line where the problem was found (for a section's
        /// body, the line of its BEGIN marker).
        line: usize,
        /// What is wrong.
        problem: PemProblem,
    },

    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{}: no certificate in file ({})", .path.display(), Found(.found))]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// The labels of the sections it holds, in order.
        found: Vec<Label>,
    },

    /// The key file holds no private key section (PKCS#8, PKCS#1 or SEC1).
    #[error("{}: no private key in file ({})", .path.display(), Found(.found))]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
        /// The labels of the sections it holds, in order.
        found: Vec<Label>,
    },

    /// The key file holds an encrypted private key and no passphrase file
    /// is configured
    /// ([`Materials::with_key_passphrase_file`](crate::Materials::with_key_passphrase_file)).
    #[error(
        "{}: the private key is encrypted (ENCRYPTED PRIVATE KEY) and no key passphrase file \
         is configured; configure one to decrypt it",
        .path.display()
    )]
    EncryptedKey {
        /// The key file.
        path: PathBuf,
    },

    /// The encrypted private key does not decrypt with the passphrase: the
    /// passphrase is wrong (or the key is corrupt). The message names the
    /// two files, never the passphrase.
    #[error(
        "{}: the encrypted private key does not decrypt with the passphrase in {}: \
         wrong passphrase (or a corrupt key)",
        .path.display(), .passphrase_file.display()
    )]
    WrongPassphrase {
        /// The key file.
        path: PathBuf,
        /// The passphrase file.
        passphrase_file: PathBuf,
    },

    /// The encrypted private key cannot be decrypted whatever the
    /// passphrase: it does not parse, uses a scheme other than PBES2 with
    /// PBKDF2 or scrypt and AES-CBC, or asks for more work than a build
    /// allows.
    #[error("{}: cannot decrypt the private key: {problem}", .path.display())]
    BadEncryptedKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        problem: KeyEncryptionProblem,
    },

    /// The key file holds a key encrypted in OpenSSL's legacy PEM format
    /// (a `Proc-Type` header, as `openssl rsa -aes256` writes), which is
    /// not supported: convert it to an encrypted PKCS#8 key.
    #[error(
        "{}: the private key at line {line} is encrypted in OpenSSL's legacy PEM format \
         (a Proc-Type header), which is not supported; convert it with \
         `openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD.key -out NEW.key` \
         and configure its passphrase file",
        .path.display()
    )]
    LegacyEncryptedKey {
        /// The key file.
        path: PathBuf,
        /// The line of the section's BEGIN marker.
        line: usize,
    },

    /// The key passphrase file is empty (or holds only newlines).
    #[error("{}: the key passphrase file is empty", .path.display())]
    EmptyPassphrase {
        /// The passphrase file.
        path: PathBuf,
    },

    /// The private key does not parse, or the crypto provider does not
    /// support its algorithm.
    #[error(
        "{}: the {label} key does not parse, or the crypto provider does not support its algorithm",
        .path.display()
    )]
    BadPrivateKey {
        /// The key file.
        path: PathBuf,
        /// Its PEM label (the key format).
        label: Label,
    },

    /// A certificate of the chain does not parse as X.509. Every
    /// certificate of the chain is parsed, not only the leaf: a client
    /// given a broken intermediate fails every handshake.
    #[error(
        "{}: certificate {index} of {count}{} does not parse as X.509: {problem}",
        .path.display(), AtLine(*.line)
    )]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// Its 1-based position in the file (1 is the leaf).
        index: usize,
        /// How many certificates the file holds.
        count: usize,
        /// The line of its BEGIN marker, when read from PEM.
        line: Option<usize>,
        /// What is wrong.
        problem: CertProblem,
    },

    /// The private key is not the one the leaf certificate was issued for.
    #[error("{}: key does not match certificate in {}", .key.display(), .cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },

    /// A named pair's leaf certificate names no DNS name in its subject
    /// alternative names, so no server name selects it (the common name
    /// is not used).
    #[error(
        "{}: the certificate has no DNS name in its subject alternative names: \
         a named pair is served for those names only",
        .path.display()
    )]
    NoDnsName {
        /// The certificate file.
        path: PathBuf,
    },

    /// No named pair could be served from these directories: they hold
    /// none (`STEM.crt` with `STEM.key`, or `STEM.pem`), or none of them
    /// builds. Only an error when there is no default pair either.
    #[error(
        "{}: no named pair to serve ({})",
        DisplayPaths(.dirs),
        .first_error.as_deref().unwrap_or("no STEM.crt + STEM.key or STEM.pem in it")
    )]
    NoPairs {
        /// The directories.
        dirs: Vec<PathBuf>,
        /// Why the first pair did not build, if one was found.
        first_error: Option<String>,
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

    /// A CRL file holds no `X509 CRL` section.
    #[error("{}: no CRL in file ({})", .path.display(), Found(.found))]
    NoCrl {
        /// The CRL file.
        path: PathBuf,
        /// The labels of the sections it holds, in order.
        found: Vec<Label>,
    },

    /// A CRL is refused: it does not parse, uses what rustls does not
    /// support, or no client CA signed it. The trust being served stays.
    #[error("{}: the CRL at line {line} is refused: {problem}", .path.display())]
    BadCrl {
        /// The CRL file.
        path: PathBuf,
        /// The line of its BEGIN marker.
        line: usize,
        /// What is wrong.
        problem: CrlProblem,
    },

    /// A CRL's `nextUpdate` has passed and
    /// [`Template::enforce_crl_expiry`](crate::Template::enforce_crl_expiry)
    /// is on.
    #[error(
        "{}: the CRL at line {line} expired: its nextUpdate was {} (now {}); \
         expired CRLs are refused (CRL expiry is enforced)",
        .path.display(), Rfc3339(*.next_update), Rfc3339(*.now)
    )]
    CrlExpired {
        /// The CRL file.
        path: PathBuf,
        /// The line of its BEGIN marker.
        line: usize,
        /// Its `nextUpdate`.
        next_update: SystemTime,
        /// When the build checked.
        now: SystemTime,
    },

    /// CRLs are configured without client CAs: a CRL needs a trust to
    /// apply to.
    #[error(
        "{}: a CRL is configured but no client CA: CRLs apply to client certificates, \
         configure the client CAs that signed them",
        .path.display()
    )]
    CrlWithoutClientCa {
        /// The first CRL file.
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

    /// A client config could not be built from the template (for example
    /// protocol versions the provider does not support).
    #[error("cannot build client config: {source}")]
    ClientConfig {
        /// Why rustls refused.
        source: rustls::Error,
    },

    /// A client has nothing to trust: no roots file, no roots directory
    /// and no root store in its template. Refused rather than connect
    /// to servers it cannot verify.
    #[error(
        "no trusted roots: configure a roots file or directory, or give the template a root store"
    )]
    NoTrustedRoots,

    /// The server certificate verifier could not be built from the roots.
    #[error("{}: cannot verify servers with these roots: {source}", RootsName(.path.as_deref()))]
    ServerVerifier {
        /// The roots file, or the roots directory when no file is set;
        /// `None` for the template's root store.
        path: Option<PathBuf>,
        /// Why rustls refused.
        source: rustls::client::VerifierBuilderError,
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
            | Self::NotRegularFile { path }
            | Self::NotPem { path }
            | Self::MalformedPem { path, .. }
            | Self::NoCertificate { path, .. }
            | Self::NoPrivateKey { path, .. }
            | Self::EncryptedKey { path }
            | Self::WrongPassphrase { path, .. }
            | Self::BadEncryptedKey { path, .. }
            | Self::LegacyEncryptedKey { path, .. }
            | Self::EmptyPassphrase { path }
            | Self::NoCrl { path, .. }
            | Self::BadCrl { path, .. }
            | Self::CrlExpired { path, .. }
            | Self::CrlWithoutClientCa { path }
            | Self::BadPrivateKey { path, .. }
            | Self::BadCertificate { path, .. }
            | Self::Expired { path, .. }
            | Self::NotYetValid { path, .. }
            | Self::NoUsableCa { path, .. }
            | Self::EmptyCaDir { path }
            | Self::NoDnsName { path }
            | Self::ClientVerifier { path, .. } => Some(path),
            Self::KeyMismatch { key, .. } => Some(key),
            Self::ServerVerifier { path, .. } => path.as_deref(),
            Self::NoPairs { dirs, .. } => dirs.first().map(PathBuf::as_path),
            Self::Config { .. }
            | Self::ClientConfig { .. }
            | Self::NoTrustedRoots
            | Self::Ticketer { .. }
            | Self::NoProvider => None,
        }
    }
}

/// A roots file or directory, or the template's root store.
struct RootsName<'a>(Option<&'a Path>);

impl fmt::Display for RootsName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}", path.display()),
            None => f.write_str("the template's root store"),
        }
    }
}

/// Why a certificate does not parse, in words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertProblem {
    /// The DER ends before the certificate does.
    Truncated,
    /// Bytes follow the certificate's DER.
    TrailingData,
    /// The DER is not an X.509 certificate.
    Malformed,
    /// The certificate's public key cannot be read.
    BadPublicKey,
}

impl fmt::Display for CertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "the DER is truncated",
            Self::TrailingData => "data follows the certificate's DER",
            Self::Malformed => "the DER is not a well-formed X.509 certificate",
            Self::BadPublicKey => "its public key cannot be read",
        })
    }
}

/// Why an encrypted private key cannot be decrypted whatever the
/// passphrase, in words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyEncryptionProblem {
    /// The DER is not a PKCS#8 `EncryptedPrivateKeyInfo`.
    Malformed,
    /// The encryption scheme is not PBES2 with PBKDF2 (HMAC-SHA-2) or
    /// scrypt, and AES-CBC: PBES1, PKCS#12 schemes and DES are not
    /// supported.
    UnsupportedScheme,
    /// The key derivation asks for more than a build allows: scrypt over
    /// 256 MiB of memory work (128 * r * N * p), or PBKDF2 over 10,000,000
    /// iterations. `openssl pkcs8` writes far less.
    TooCostly,
}

impl fmt::Display for KeyEncryptionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the DER is not a PKCS#8 encrypted private key",
            Self::UnsupportedScheme => {
                "its encryption scheme is not supported (PBES2 with PBKDF2 or scrypt, \
                 and AES-CBC, are: convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`)"
            }
            Self::TooCostly => {
                "its key derivation asks for more than a build allows \
                 (scrypt over 256 MiB of work, or PBKDF2 over 10,000,000 iterations)"
            }
        })
    }
}

/// Why a CRL is refused, in words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrlProblem {
    /// The DER is not a well-formed X.509 CRL.
    Malformed,
    /// The CRL uses what rustls does not support: a version other than 2,
    /// a delta or indirect CRL, an unknown critical extension, or no
    /// `nextUpdate`.
    Unsupported,
    /// No client CA is named as its issuer.
    UnknownIssuer,
    /// Its signature does not verify with the key of any client CA named as
    /// its issuer.
    BadSignature,
    /// It is signed with an algorithm the crypto provider does not verify.
    UnsupportedSignatureAlgorithm,
}

impl fmt::Display for CrlProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the DER is not a well-formed X.509 CRL",
            Self::Unsupported => {
                "it uses what rustls does not support (a CRL version other than 2, \
                 a delta or indirect CRL, an unknown critical extension, or no nextUpdate)"
            }
            Self::UnknownIssuer => "no configured client CA is named as its issuer",
            Self::BadSignature => {
                "its signature does not verify with the key of the client CA named as its issuer"
            }
            Self::UnsupportedSignatureAlgorithm => {
                "it is signed with an algorithm the crypto provider does not verify"
            }
        })
    }
}

/// ` (line N)` when there is a line.
struct AtLine(Option<usize>);

impl fmt::Display for AtLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " (line {line})"),
            None => Ok(()),
        }
    }
}

/// What a file holds, by label: `it holds CERTIFICATE, PRIVATE KEY`.
struct Found<'a>(&'a [Label]);

impl fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("it holds no PEM section");
        }
        f.write_str("it holds ")?;
        for (i, label) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{label}")?;
        }
        Ok(())
    }
}

/// Paths joined by `, `, for a message.
struct DisplayPaths<'a>(&'a [PathBuf]);

impl fmt::Display for DisplayPaths<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no certificate directory or named pair given");
        }
        for (i, path) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", path.display())?;
        }
        Ok(())
    }
}
