//! Reading the materials: capped reads and directory listings by the rule
//! `tls-reload-detect` follows, then PEM sections.

use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use tls_reload_detect::DetectError;
use x509_parser::certificate::X509Certificate;

use crate::leaf::parse_x509;
use crate::pem::{self, Label, PemProblem, Section};
use crate::{encrypted, BuildError};

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
        let sections = pem::parse(bytes).map_err(|error| match error.problem {
            PemProblem::LegacyEncryption => BuildError::LegacyEncryptedKey {
                path: path.to_owned(),
                line: error.line,
            },
            problem => BuildError::MalformedPem {
                path: path.to_owned(),
                line: error.line,
                problem,
            },
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

    /// The first private key section: PKCS#8, PKCS#1 (RSA) or SEC1 (EC),
    /// or, given a passphrase and the name of its file, an encrypted
    /// PKCS#8 key, decrypted.
    pub(crate) fn into_private_key(
        self,
        passphrase: Option<(&[u8], &Path)>,
    ) -> Result<PrivateKeyDer<'static>, BuildError> {
        let path = self.path.to_owned();
        let found = self.labels();
        for section in self.sections {
            use rustls::pki_types::pem::SectionKind;
            let key = match (section.kind(), passphrase) {
                (Some(SectionKind::PrivateKey), _) => PrivateKeyDer::Pkcs8(section.der.into()),
                (Some(SectionKind::RsaPrivateKey), _) => PrivateKeyDer::Pkcs1(section.der.into()),
                (Some(SectionKind::EcPrivateKey), _) => PrivateKeyDer::Sec1(section.der.into()),
                (None, Some((passphrase, file))) if section.label == Label::EncryptedPrivateKey => {
                    return encrypted::decrypt(&path, &section.der, passphrase, file);
                }
                _ => continue,
            };
            if let Some((_, file)) = passphrase {
                tracing::warn!(
                    key = %path.display(),
                    passphrase_file = %file.display(),
                    "a key passphrase file is configured but the private key is not encrypted"
                );
            }
            return Ok(key);
        }
        if found.contains(&Label::EncryptedPrivateKey) {
            return Err(BuildError::EncryptedKey { path });
        }
        Err(BuildError::NoPrivateKey { path, found })
    }

    /// Every `X509 CRL` section, in file order: its DER and its line.
    pub(crate) fn crls(self) -> Result<Vec<(Vec<u8>, usize)>, BuildError> {
        let found = self.labels();
        let crls: Vec<_> = self
            .sections
            .into_iter()
            .filter(|section| section.label == Label::Crl)
            .map(|section| (section.der, section.line))
            .collect();
        if crls.is_empty() {
            return Err(BuildError::NoCrl {
                path: self.path.to_owned(),
                found,
            });
        }
        Ok(crls)
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
            "skipped dangling symlinks in the CA directory"
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
pub(crate) fn from_detect(error: DetectError) -> BuildError {
    match error {
        DetectError::NotFound { path } => BuildError::Read {
            path,
            source: io::Error::new(io::ErrorKind::NotFound, "No such file or directory"),
        },
        DetectError::Io { path, source } => BuildError::Read { path, source },
        DetectError::TooLarge { path, limit, .. } => BuildError::TooLarge { path, limit },
        DetectError::NotRegularFile { path } => BuildError::NotRegularFile { path },
        other => BuildError::Read {
            path: other.path().map(Path::to_owned).unwrap_or_default(),
            source: io::Error::other(other.to_string()),
        },
    }
}

/// Adds the certificates read from the CA file `path` to `roots`, and shows
/// `added` each one added. Fails when none of them is usable as a trust
/// anchor.
pub(crate) fn add_ca_certs(
    path: &Path,
    certs: Vec<CertificateDer<'static>>,
    roots: &mut RootCertStore,
    mut added: impl FnMut(&X509Certificate<'_>),
) -> Result<(), BuildError> {
    let found = certs.len();
    let (mut valid, mut invalid) = (0, 0);
    for cert in certs {
        if roots.add(CertificateDer::from(cert.as_ref())).is_err() {
            invalid += 1;
            continue;
        }
        valid += 1;
        // webpki took it as a trust anchor; x509-parser describes it.
        if let Ok(x509) = parse_x509(&cert) {
            added(&x509);
        }
    }
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
            "ignored CA certificates that are not usable as trust anchors"
        );
    }
    Ok(())
}
