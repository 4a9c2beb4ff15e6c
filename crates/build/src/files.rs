//! Reading the materials: capped reads, PEM sections, CA files and directories.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use crate::BuildError;

/// The PEM sections of one file, and the file they came from.
pub(crate) struct PemFile {
    pub(crate) path: PathBuf,
    sections: Vec<(SectionKind, Vec<u8>)>,
}

impl PemFile {
    /// Reads `path` once, at most `cap` bytes, and splits it into PEM sections.
    pub(crate) fn read(path: &Path, cap: u64) -> Result<Self, BuildError> {
        let bytes = read_capped(path, cap)?;
        if !bytes.windows(10).any(|w| w == b"-----BEGIN") {
            return Err(BuildError::NotPem {
                path: path.to_owned(),
            });
        }
        let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|source| BuildError::MalformedPem {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            path: path.to_owned(),
            sections,
        })
    }

    /// Every `CERTIFICATE` section, in file order.
    pub(crate) fn certificates(&self) -> Vec<CertificateDer<'static>> {
        self.sections
            .iter()
            .filter(|(kind, _)| *kind == SectionKind::Certificate)
            .map(|(_, der)| CertificateDer::from(der.clone()))
            .collect()
    }

    /// The first private key section: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub(crate) fn into_private_key(self) -> Option<PrivateKeyDer<'static>> {
        self.sections
            .into_iter()
            .find_map(|(kind, der)| match kind {
                SectionKind::PrivateKey => Some(PrivateKeyDer::Pkcs8(der.into())),
                SectionKind::RsaPrivateKey => Some(PrivateKeyDer::Pkcs1(der.into())),
                SectionKind::EcPrivateKey => Some(PrivateKeyDer::Sec1(der.into())),
                _ => None,
            })
    }
}

/// Reads a whole file, refusing one over `cap` bytes, including one that grows
/// past the cap while it is read.
fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, BuildError> {
    let read_err = |source| BuildError::Read {
        path: path.to_owned(),
        source,
    };
    let too_large = || BuildError::TooLarge {
        path: path.to_owned(),
        cap,
    };
    // Opening a FIFO or a device could block or never end: only regular
    // files (after symlinks) are read.
    if !fs::metadata(path).map_err(read_err)?.is_file() {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let file = File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    if len > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The files of a CA directory to read: every regular file, following
/// symlinks, skipping names that start with `.` and subdirectories, sorted.
pub(crate) fn ca_dir_files(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Read { path, source }
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        // A dangling symlink is an error: it names a CA that cannot be read.
        if fs::metadata(&path).map_err(read_err(&path))?.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(BuildError::EmptyCaDir {
            path: dir.to_owned(),
        });
    }
    files.sort();
    Ok(files)
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
