//! Reading the materials: capped reads and directory listings by the rule
//! `tls-reload-detect` follows, then PEM sections.

use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use tls_reload_detect::DetectError;

use crate::pem::{self, Label, Section};
use crate::BuildError;

/// The PEM sections of one file, and the file they came from.
pub(crate) struct PemFile<'a> {
    pub(crate) path: &'a Path,
    sections: Vec<Section>,
}

/// A certificate section: its DER and the line its BEGIN marker is on.
pub(crate) struct CertSection {
    pub(crate) der: CertificateDer<'static>,
    pub(crate) line: usize,
}

impl<'a> PemFile<'a> {
    /// Splits `bytes`, read from `path`, into PEM sections.
    pub(crate) fn parse(path: &'a Path, bytes: &[u8]) -> Result<Self, BuildError> {
        if !pem::looks_like_pem(bytes) {
            return Err(BuildError::NotPem {
                path: path.to_owned(),
            });
        }
        let sections = pem::parse(bytes).map_err(|error| BuildError::MalformedPem {
            path: path.to_owned(),
            line: error.line,
            problem: error.problem,
        })?;
        Ok(Self { path, sections })
    }

    /// Every `CERTIFICATE` section, in file order.
    pub(crate) fn certificates(&mut self) -> Vec<CertSection> {
        let (certs, rest) = std::mem::take(&mut self.sections)
            .into_iter()
            .partition(|section| section.label == Label::Certificate);
        self.sections = rest;
        certs
            .into_iter()
            .map(|section: Section| CertSection {
                der: CertificateDer::from(section.der),
                line: section.line,
            })
            .collect()
    }

    /// The labels of the sections left, in file order, for a message.
    pub(crate) fn labels(&self) -> Vec<Label> {
        self.sections.iter().map(|section| section.label).collect()
    }

    /// The first private key section: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub(crate) fn into_private_key(self) -> Result<PrivateKeyDer<'static>, BuildError> {
        let path = self.path.to_owned();
        let found = self.labels();
        for section in self.sections {
            use rustls::pki_types::pem::SectionKind;
            let key = match section.kind() {
                Some(SectionKind::PrivateKey) => PrivateKeyDer::Pkcs8(section.der.into()),
                Some(SectionKind::RsaPrivateKey) => PrivateKeyDer::Pkcs1(section.der.into()),
                Some(SectionKind::EcPrivateKey) => PrivateKeyDer::Sec1(section.der.into()),
                _ => continue,
            };
            return Ok(key);
        }
        if found.contains(&Label::EncryptedPrivateKey) {
            return Err(BuildError::EncryptedKey { path });
        }
        Err(BuildError::NoPrivateKey { path, found })
    }
}

/// Reads a file by `tls-reload-detect`'s rule: a regular file, at most
/// `limit` bytes.
pub(crate) fn read(path: &Path, limit: u64) -> Result<Vec<u8>, BuildError> {
    tls_reload_detect::read_file(path, limit).map_err(from_detect)
}

/// The certificate files of a CA directory, by `tls-reload-detect`'s rule:
/// every regular file after symlinks, sorted, skipping names that start
/// with `.` and subdirectories. A dangling symlink names no certificate: it
/// is skipped with a warning (trusting fewer CAs fails closed).
pub(crate) fn ca_dir_files(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let listed = tls_reload_detect::dir_files(dir).map_err(from_detect)?;
    if !listed.dangling.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            count = listed.dangling.len(),
            first = %listed.dangling[0].display(),
            "skipped dangling symlinks in the client CA directory"
        );
    }
    if listed.files.is_empty() {
        return Err(BuildError::EmptyCaDir {
            path: dir.to_owned(),
        });
    }
    Ok(listed.files)
}

/// The same fault worded the same whether the detector or the build met it.
fn from_detect(error: DetectError) -> BuildError {
    match error {
        DetectError::NotFound { path } => BuildError::Read {
            path,
            source: io::Error::new(io::ErrorKind::NotFound, "No such file or directory"),
        },
        DetectError::Io { path, source } => BuildError::Read { path, source },
        DetectError::TooLarge { path, limit, .. } => BuildError::TooLarge { path, limit },
        DetectError::Unsupported { path } => BuildError::NotRegularFile { path },
        other => BuildError::Read {
            path: other.path().map(Path::to_owned).unwrap_or_default(),
            source: io::Error::other(other.to_string()),
        },
    }
}

/// Adds the certificates read from the CA file `path` to `roots`. Fails when
/// none of them is usable as a trust anchor.
pub(crate) fn add_ca_certs(
    path: &Path,
    certs: Vec<CertificateDer<'static>>,
    roots: &mut RootCertStore,
) -> Result<(), BuildError> {
    let found = certs.len();
    let (valid, invalid) = roots.add_parsable_certificates(certs);
    if valid == 0 {
        return Err(BuildError::NoUsableCa {
            path: path.to_owned(),
            found,
        });
    }
    if invalid > 0 {
        tracing::warn!(
            file = %path.display(),
            ignored = invalid,
            used = valid,
            "ignored client CA certificates that are not usable as trust anchors"
        );
    }
    Ok(())
}
