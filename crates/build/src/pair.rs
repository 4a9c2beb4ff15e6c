//! Named pairs: one certificate chain and its key, served for the DNS names
//! the certificate carries (SNI), and the directory layout they come in.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::config::{identity, Identity};
use crate::files::{from_detect, read};
use crate::{BuildError, LeafInfo, Template};

/// The files of one named pair: `STEM.crt` and `STEM.key`, or one
/// `STEM.pem` holding the chain and the key.
///
/// The stem names the pair in logs, events and status; the names it is
/// served for come from its certificate, never from the file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairFiles {
    stem: String,
    cert: PathBuf,
    /// `None`: the certificate file holds the key too.
    key: Option<PathBuf>,
}

impl PairFiles {
    /// A pair of a certificate chain file and a key file.
    pub fn new(stem: impl Into<String>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            stem: stem.into(),
            cert: cert.into(),
            key: Some(key.into()),
        }
    }

    /// A pair held in one PEM file: the chain (leaf first), then the key
    /// (the key may also come first: sections are told apart by label).
    pub fn combined(stem: impl Into<String>, pem: impl Into<PathBuf>) -> Self {
        Self {
            stem: stem.into(),
            cert: pem.into(),
            key: None,
        }
    }

    /// The pair's name in logs, events and status.
    pub fn stem(&self) -> &str {
        &self.stem
    }

    /// The certificate chain file (for a combined pair, its one file).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// The key file (for a combined pair, the certificate file).
    pub fn key(&self) -> &Path {
        self.key.as_deref().unwrap_or(&self.cert)
    }

    /// Whether the chain and the key are in one file.
    pub fn is_combined(&self) -> bool {
        self.key.is_none()
    }

    /// The files to watch: the certificate, then the key when apart.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone()];
        paths.extend(self.key.clone());
        paths
    }
}

/// A named pair, built: the certified key to serve, the names it answers
/// for, and what a status page shows.
///
/// `Debug` shows the stem, names, leaf and files, never the key.
#[derive(Clone)]
pub struct BuiltPair {
    stem: String,
    certified: Arc<CertifiedKey>,
    leaf: LeafInfo,
    names: Arc<[String]>,
    files: Vec<PathBuf>,
}

impl BuiltPair {
    /// The pair's stem.
    pub fn stem(&self) -> &str {
        &self.stem
    }

    /// The chain and signing key, for a certificate resolver.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &LeafInfo {
        &self.leaf
    }

    /// The DNS names of the leaf's subject alternative names, lowercase,
    /// without a trailing dot, in certificate order; a wildcard is
    /// `*.example.com`. Never empty.
    pub fn names(&self) -> &Arc<[String]> {
        &self.names
    }

    /// The files read: the certificate file, then the key file when apart.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl fmt::Debug for BuiltPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltPair")
            .field("stem", &self.stem)
            .field("names", &self.names)
            .field("leaf", &self.leaf)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Builds a named pair on the calling thread: each file read once (capped
/// at the template's [`max_file_size`](Template::max_file_size), regular
/// files only), every certificate of the chain parsed, the key checked
/// against the leaf and the leaf against the clock (by the template's
/// policy), exactly as [`build_blocking`](crate::build_blocking) does for
/// the default pair. The pair must name at least one DNS name in its
/// subject alternative names.
///
/// ```
/// use tls_reload_build::{build_pair_blocking, PairFiles, Template};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let key = rcgen::KeyPair::generate()?;
/// # let cert = rcgen::CertificateParams::new(vec!["api.example.com".into()])?.self_signed(&key)?;
/// # let pem = dir.path().join("api.pem");
/// # std::fs::write(&pem, cert.pem() + &key.serialize_pem())?;
/// let pair = PairFiles::combined("api", pem);
/// let built = build_pair_blocking(&pair, &Template::from_default_provider()?)?;
/// assert_eq!(&built.names()[..], ["api.example.com"]);
/// # Ok(()) }
/// ```
pub fn build_pair_blocking(pair: &PairFiles, template: &Template) -> Result<BuiltPair, BuildError> {
    let cert_bytes = read(&pair.cert, template.max_file_size)?;
    let key_bytes = match &pair.key {
        Some(path) => Some(zeroize::Zeroizing::new(read(path, template.max_file_size)?)),
        None => None,
    };
    // A combined file holds the key: wiped once parsed, like a key file.
    let cert_bytes = zeroize::Zeroizing::new(cert_bytes);
    let Identity {
        certified,
        leaf,
        names,
    } = identity(
        (&pair.cert, &cert_bytes),
        pair.key
            .as_deref()
            .zip(key_bytes.as_deref().map(Vec::as_slice)),
        None,
        &template.provider,
        template.check_validity,
    )?;
    if names.is_empty() {
        return Err(BuildError::NoDnsName {
            path: pair.cert.clone(),
        });
    }
    tracing::debug!(
        pair = %pair.stem,
        serial = %leaf.serial_hex(),
        names = names.len(),
        "built named pair"
    );
    Ok(BuiltPair {
        stem: pair.stem.clone(),
        certified: Arc::new(certified),
        leaf,
        names: names.into(),
        files: pair.paths(),
    })
}

/// Builds a named pair on the [`blocking`] thread pool, so the async
/// caller never blocks. See [`build_pair_blocking`].
pub async fn build_pair(pair: &PairFiles, template: &Template) -> Result<BuiltPair, BuildError> {
    let pair = pair.clone();
    let template = template.clone();
    blocking::unblock(move || build_pair_blocking(&pair, &template)).await
}

/// The pairs of a directory, sorted by stem: `STEM.crt` with `STEM.key`,
/// and `STEM.pem` holding both.
///
/// The directory is listed by the rule the detectors follow
/// ([`tls_reload_detect::dir_files`]: regular files after symlinks, names
/// starting with `.` and subdirectories skipped). Any other file is
/// ignored, with a debug log. A pair with one of its two files missing is
/// listed all the same, so that building it names the missing file (it
/// may be between the two renames of an update); a dangling symlink counts
/// as the file it names. When `STEM.crt` or `STEM.key` exists beside
/// `STEM.pem`, the `.crt`/`.key` pair is used and `STEM.pem` is ignored
/// with a warning. A stem that is not UTF-8 is ignored with a debug log.
///
/// An empty directory yields no pair; a directory that cannot be listed is
/// an error naming it.
pub fn pairs_in_dir(dir: &Path) -> Result<Vec<PairFiles>, BuildError> {
    #[derive(Default)]
    struct Found {
        crt: bool,
        key: bool,
        pem: bool,
    }
    let listed = tls_reload_detect::dir_files(dir).map_err(from_detect)?;
    let mut stems: BTreeMap<String, Found> = BTreeMap::new();
    for path in listed.files.iter().chain(&listed.dangling) {
        let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
            tracing::debug!(file = %path.display(), "not a pair's file (no extension): ignored");
            continue;
        };
        let Some(stem) = stem.to_str().filter(|stem| !stem.is_empty()) else {
            tracing::debug!(file = %path.display(), "a pair's stem must be UTF-8: ignored");
            continue;
        };
        let found: fn(&mut Found) = match ext.to_str() {
            Some("crt") => |found: &mut Found| found.crt = true,
            Some("key") => |found: &mut Found| found.key = true,
            Some("pem") => |found: &mut Found| found.pem = true,
            _ => {
                tracing::debug!(
                    file = %path.display(),
                    "not a pair's file (STEM.crt, STEM.key or STEM.pem): ignored"
                );
                continue;
            }
        };
        found(stems.entry(stem.to_owned()).or_default());
    }
    let pairs = stems
        .into_iter()
        .map(|(stem, found)| {
            if found.crt || found.key {
                if found.pem {
                    tracing::warn!(
                        dir = %dir.display(),
                        pair = %stem,
                        "both STEM.crt/STEM.key and STEM.pem: the .crt/.key pair is used, \
                         the .pem file is ignored"
                    );
                }
                let cert = dir.join(format!("{stem}.crt"));
                let key = dir.join(format!("{stem}.key"));
                PairFiles::new(stem, cert, key)
            } else {
                let pem = dir.join(format!("{stem}.pem"));
                PairFiles::combined(stem, pem)
            }
        })
        .collect();
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_files_paths() {
        let apart = PairFiles::new("a", "d/a.crt", "d/a.key");
        assert_eq!(apart.paths(), [PathBuf::from("d/a.crt"), "d/a.key".into()]);
        assert_eq!(apart.key(), Path::new("d/a.key"));
        assert!(!apart.is_combined());
        let one = PairFiles::combined("b", "d/b.pem");
        assert_eq!(one.paths(), [PathBuf::from("d/b.pem")]);
        assert_eq!(one.key(), Path::new("d/b.pem"));
        assert!(one.is_combined());
    }
}
