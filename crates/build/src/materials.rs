use std::path::{Path, PathBuf};

/// Where the TLS materials live on disk.
///
/// The certificate file holds the leaf first, then any intermediates; the key
/// file holds its private key. With a client CA bundle and/or a client CA
/// directory, the built config requires (or, per [`ClientAuth`], requests)
/// client certificates issued by those CAs.
///
/// [`ClientAuth`]: crate::ClientAuth
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Materials {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_ca_dir: Option<PathBuf>,
}

impl Materials {
    /// Materials made of a certificate chain file and a private key file, both PEM.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            client_ca_dir: None,
        }
    }

    /// Trusts every certificate in this PEM bundle to issue client certificates (mTLS).
    pub fn with_client_ca(mut self, file: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(file.into());
        self
    }

    /// Trusts every certificate in every file of this directory to issue client
    /// certificates (mTLS). Names starting with `.` and subdirectories are skipped.
    pub fn with_client_ca_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.client_ca_dir = Some(dir.into());
        self
    }

    /// The certificate chain file.
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// The private key file.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// The client CA bundle file, if any.
    pub fn client_ca(&self) -> Option<&Path> {
        self.client_ca.as_deref()
    }

    /// The client CA directory, if any.
    pub fn client_ca_dir(&self) -> Option<&Path> {
        self.client_ca_dir.as_deref()
    }

    /// Everything to watch: the certificate, the key, then the CA file and the
    /// CA directory when set.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.client_ca.clone());
        paths.extend(self.client_ca_dir.clone());
        paths
    }

    /// Whether client certificates are verified (a CA file or directory is set).
    pub fn has_client_auth(&self) -> bool {
        self.client_ca.is_some() || self.client_ca_dir.is_some()
    }
}

/// The bytes of a set of materials, each with the name errors call it by:
/// what a build parses.
///
/// [`MaterialBytes::read`] reads [`Materials`] from disk (each file once,
/// capped, by the rule `tls-reload-detect` follows); [`MaterialBytes::new`]
/// takes bytes you already hold (from a secret store, say). Either way
/// [`build_from_bytes`](crate::build_from_bytes) turns them into a config.
///
/// `Debug` shows the names and sizes, never the bytes, and the key's bytes
/// are overwritten when the value is dropped.
///
/// ```
/// use tls_reload_build::{build_from_bytes, MaterialBytes, Template};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let key = rcgen::KeyPair::generate()?;
/// # let cert = rcgen::CertificateParams::new(vec!["localhost".into()])?.self_signed(&key)?;
/// # let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
/// let bytes = MaterialBytes::new("vault:tls.crt", cert_pem, "vault:tls.key", key_pem);
/// let built = build_from_bytes(&bytes, &Template::from_default_provider()?, None)?;
/// assert_eq!(built.files()[0], std::path::Path::new("vault:tls.crt"));
/// # Ok(()) }
/// ```
pub struct MaterialBytes {
    pub(crate) cert: Named,
    pub(crate) key: Named,
    pub(crate) client_cas: Vec<Named>,
    /// The CA file or directory a verifier error is about.
    pub(crate) client_ca_anchor: Option<PathBuf>,
}

/// One file's bytes and its name.
pub(crate) struct Named {
    pub(crate) path: PathBuf,
    pub(crate) bytes: Vec<u8>,
}

impl MaterialBytes {
    /// A certificate chain and a private key, both PEM, with the names
    /// (paths, or any label) that errors and [`Built::files`](crate::Built::files)
    /// use for them.
    pub fn new(
        cert_name: impl Into<PathBuf>,
        cert: impl Into<Vec<u8>>,
        key_name: impl Into<PathBuf>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            cert: Named {
                path: cert_name.into(),
                bytes: cert.into(),
            },
            key: Named {
                path: key_name.into(),
                bytes: key.into(),
            },
            client_cas: Vec::new(),
            client_ca_anchor: None,
        }
    }

    /// Trusts every certificate of this PEM bundle to issue client
    /// certificates (mTLS). May be given several times.
    pub fn with_client_ca(mut self, name: impl Into<PathBuf>, bundle: impl Into<Vec<u8>>) -> Self {
        let path = name.into();
        self.client_ca_anchor.get_or_insert_with(|| path.clone());
        self.client_cas.push(Named {
            path,
            bytes: bundle.into(),
        });
        self
    }

    /// Reads `materials` from disk: each file once, at most `limit` bytes,
    /// regular files only; a CA directory by the rule of
    /// [`tls_reload_detect::dir_files`] (dangling symlinks skipped with a
    /// warning; an empty directory is an error).
    pub fn read(materials: &Materials, limit: u64) -> Result<Self, crate::BuildError> {
        let read = |path: &Path| {
            crate::files::read(path, limit).map(|bytes| Named {
                path: path.to_owned(),
                bytes,
            })
        };
        let cert = read(materials.cert())?;
        let key = read(materials.key())?;
        let mut client_cas = Vec::new();
        if let Some(file) = materials.client_ca() {
            client_cas.push(read(file)?);
        }
        if let Some(dir) = materials.client_ca_dir() {
            for (i, file) in crate::files::ca_dir_files(dir)?.iter().enumerate() {
                crate::config::step_aside(i);
                client_cas.push(read(file)?);
            }
        }
        Ok(Self {
            cert,
            key,
            client_cas,
            client_ca_anchor: materials
                .client_ca()
                .or(materials.client_ca_dir())
                .map(Into::into),
        })
    }

    /// The names, in order: certificate, key, then each client CA file.
    pub fn names(&self) -> impl Iterator<Item = &Path> + '_ {
        [&self.cert, &self.key]
            .into_iter()
            .chain(&self.client_cas)
            .map(|named| named.path.as_path())
    }
}

impl Drop for MaterialBytes {
    fn drop(&mut self) {
        self.key.bytes.iter_mut().for_each(|b| *b = 0);
    }
}

impl std::fmt::Debug for MaterialBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<(&Path, usize)> = [&self.cert, &self.key]
            .into_iter()
            .chain(&self.client_cas)
            .map(|named| (named.path.as_path(), named.bytes.len()))
            .collect();
        f.debug_struct("MaterialBytes")
            .field("sizes", &sizes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lists_everything_in_order() {
        let m = Materials::new("c.pem", "k.pem");
        assert_eq!(m.paths(), [PathBuf::from("c.pem"), "k.pem".into()]);
        assert!(!m.has_client_auth());
        let m = m.with_client_ca_dir("cas").with_client_ca("ca.pem");
        assert_eq!(
            m.paths(),
            [
                PathBuf::from("c.pem"),
                "k.pem".into(),
                "ca.pem".into(),
                "cas".into()
            ]
        );
        assert!(m.has_client_auth());
        assert_eq!(m.client_ca(), Some(Path::new("ca.pem")));
        assert_eq!(m.client_ca_dir(), Some(Path::new("cas")));
    }
}
