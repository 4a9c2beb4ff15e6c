use std::path::{Path, PathBuf};

use zeroize::Zeroize;

/// Where the TLS materials live on disk.
///
/// The certificate file holds the leaf first, then any intermediates; the key
/// file holds its private key, which may be an encrypted PKCS#8 key
/// decrypted with a passphrase read from a file. With a client CA bundle
/// and/or a client CA directory, the built config requires (or, per
/// [`ClientAuth`], requests) client certificates issued by those CAs, and
/// CRL files, when given, revoke some of them.
///
/// [`ClientAuth`]: crate::ClientAuth
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Materials {
    cert: PathBuf,
    key: PathBuf,
    /// False: no certificate and key (see [`Materials::without_identity`]).
    identity: bool,
    client_ca: Option<PathBuf>,
    client_ca_dir: Option<PathBuf>,
    crls: Vec<PathBuf>,
    key_passphrase_file: Option<PathBuf>,
}

impl Materials {
    /// Materials made of a certificate chain file and a private key file, both PEM.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            identity: true,
            client_ca: None,
            client_ca_dir: None,
            crls: Vec::new(),
            key_passphrase_file: None,
        }
    }

    /// Materials without a certificate and key of their own: only the
    /// trust (client CAs, CRLs), for a server whose certificates all come
    /// from its own resolver (named pairs chosen by SNI, say). The built
    /// config resolves no certificate until you give it a resolver;
    /// [`Built::leaf`](crate::Built::leaf) is then an empty placeholder
    /// (serial `00`, the epoch as its dates) and
    /// [`Built::certified_key`](crate::Built::certified_key) is `None`.
    pub fn without_identity() -> Self {
        Self {
            identity: false,
            ..Self::new("", "")
        }
    }

    /// Whether there is a certificate and key (see
    /// [`without_identity`](Materials::without_identity)).
    pub fn has_identity(&self) -> bool {
        self.identity
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

    /// Checks client certificates against the certificate revocation lists
    /// of this PEM file (`X509 CRL` sections, one or more). May be given
    /// several times.
    ///
    /// Every CRL must be signed by one of the client CAs, so CRLs need a
    /// client CA file or directory: a CRL that does not parse, or that no
    /// client CA signed, fails the build (the config being served keeps
    /// its trust). Once CRLs are configured, a client certificate whose
    /// revocation status no CRL gives is refused (rustls's default), so
    /// give a CRL for every client CA. Whether a CRL past its `nextUpdate`
    /// is refused is [`Template::enforce_crl_expiry`](crate::Template::enforce_crl_expiry).
    pub fn with_crl(mut self, file: impl Into<PathBuf>) -> Self {
        self.crls.push(file.into());
        self
    }

    /// Decrypts an `ENCRYPTED PRIVATE KEY` (PKCS#8, PBES2 with PBKDF2 or
    /// scrypt and AES-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` or
    /// `-scrypt` writes it) with the passphrase in this file.
    ///
    /// The file is read at every build, so the passphrase may rotate with
    /// the key; trailing newlines are not part of the passphrase. Neither
    /// the passphrase nor the decrypted key is logged or shown by `Debug`,
    /// and both are overwritten once used.
    pub fn with_key_passphrase_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.key_passphrase_file = Some(file.into());
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

    /// The CRL files, in the order given.
    pub fn crls(&self) -> &[PathBuf] {
        &self.crls
    }

    /// The key passphrase file, if any.
    pub fn key_passphrase_file(&self) -> Option<&Path> {
        self.key_passphrase_file.as_deref()
    }

    /// Everything to watch: the certificate, the key (when there are), then
    /// the CA file, the CA directory, each CRL file and the key passphrase
    /// file when set.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if self.identity {
            paths.extend([self.cert.clone(), self.key.clone()]);
        }
        paths.extend(self.client_ca.clone());
        paths.extend(self.client_ca_dir.clone());
        paths.extend(self.crls.iter().cloned());
        paths.extend(self.key_passphrase_file.clone());
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
/// `Debug` shows the names and sizes, never the bytes (nor the size of the
/// passphrase), and the bytes of the key and of the passphrase are
/// overwritten when the value is dropped.
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
    pub(crate) crls: Vec<Named>,
    /// As read: trailing newlines are stripped when it is used.
    pub(crate) key_passphrase: Option<Named>,
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
            crls: Vec::new(),
            key_passphrase: None,
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

    /// Checks client certificates against the CRLs of this PEM file (one
    /// or more `X509 CRL` sections), as [`Materials::with_crl`] does. May
    /// be given several times.
    pub fn with_crl(mut self, name: impl Into<PathBuf>, pem: impl Into<Vec<u8>>) -> Self {
        self.crls.push(Named {
            path: name.into(),
            bytes: pem.into(),
        });
        self
    }

    /// Decrypts an encrypted private key with this passphrase (trailing
    /// newlines are stripped), as [`Materials::with_key_passphrase_file`]
    /// does; `name` is what errors call its file. The bytes are
    /// overwritten when the value is dropped.
    pub fn with_key_passphrase(
        mut self,
        name: impl Into<PathBuf>,
        passphrase: impl Into<Vec<u8>>,
    ) -> Self {
        if let Some(mut old) = self.key_passphrase.take() {
            old.bytes.zeroize();
        }
        self.key_passphrase = Some(Named {
            path: name.into(),
            bytes: passphrase.into(),
        });
        self
    }

    /// A certificate chain and a private key already read.
    pub(crate) fn from_pair(cert: Named, key: Named) -> Self {
        Self {
            cert,
            key,
            client_cas: Vec::new(),
            client_ca_anchor: None,
            crls: Vec::new(),
            key_passphrase: None,
        }
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
        let (cert, key) = if materials.has_identity() {
            (read(materials.cert())?, read(materials.key())?)
        } else {
            let none = || Named {
                path: PathBuf::new(),
                bytes: Vec::new(),
            };
            (none(), none())
        };
        // From here on the key is held by `bytes`, which wipes it on drop,
        // whatever fails next.
        let mut bytes = Self {
            cert,
            key,
            client_cas: Vec::new(),
            client_ca_anchor: materials
                .client_ca()
                .or(materials.client_ca_dir())
                .map(Into::into),
            crls: Vec::new(),
            key_passphrase: None,
        };
        if let Some(file) = materials.key_passphrase_file() {
            bytes.key_passphrase = Some(read(file)?);
        }
        if let Some(file) = materials.client_ca() {
            bytes.client_cas.push(read(file)?);
        }
        if let Some(dir) = materials.client_ca_dir() {
            for (i, file) in crate::files::ca_dir_files(dir)?.iter().enumerate() {
                crate::config::step_aside(i);
                bytes.client_cas.push(read(file)?);
            }
        }
        for file in materials.crls() {
            bytes.crls.push(read(file)?);
        }
        Ok(bytes)
    }

    /// The names, in order: certificate, key, each client CA file, each
    /// CRL file, then the key passphrase file when there is one.
    pub fn names(&self) -> impl Iterator<Item = &Path> + '_ {
        [&self.cert, &self.key]
            .into_iter()
            .filter(|named| !named.path.as_os_str().is_empty())
            .chain(&self.client_cas)
            .chain(&self.crls)
            .chain(&self.key_passphrase)
            .map(|named| named.path.as_path())
    }

    /// The passphrase without its trailing newlines, and its file's name.
    pub(crate) fn passphrase(&self) -> Option<(&[u8], &Path)> {
        self.key_passphrase.as_ref().map(|named| {
            let end = named
                .bytes
                .iter()
                .rposition(|&b| b != b'\n' && b != b'\r')
                .map_or(0, |i| i + 1);
            (&named.bytes[..end], named.path.as_path())
        })
    }
}

impl Drop for MaterialBytes {
    fn drop(&mut self) {
        self.key.bytes.zeroize();
        if let Some(passphrase) = &mut self.key_passphrase {
            passphrase.bytes.zeroize();
        }
    }
}

impl std::fmt::Debug for MaterialBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<(&Path, usize)> = [&self.cert, &self.key]
            .into_iter()
            .chain(&self.client_cas)
            .chain(&self.crls)
            .map(|named| (named.path.as_path(), named.bytes.len()))
            .collect();
        f.debug_struct("MaterialBytes")
            .field("sizes", &sizes)
            // Its name only: not even its length.
            .field(
                "key_passphrase",
                &self.key_passphrase.as_ref().map(|named| &named.path),
            )
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
        let m = m
            .with_key_passphrase_file("pass")
            .with_crl("a.crl")
            .with_client_ca_dir("cas")
            .with_client_ca("ca.pem")
            .with_crl("b.crl");
        assert_eq!(
            m.paths(),
            [
                PathBuf::from("c.pem"),
                "k.pem".into(),
                "ca.pem".into(),
                "cas".into(),
                "a.crl".into(),
                "b.crl".into(),
                "pass".into(),
            ]
        );
        assert_eq!(m.crls(), [PathBuf::from("a.crl"), "b.crl".into()]);
        assert_eq!(m.key_passphrase_file(), Some(Path::new("pass")));
        assert!(m.has_client_auth());
        assert_eq!(m.client_ca(), Some(Path::new("ca.pem")));
        assert_eq!(m.client_ca_dir(), Some(Path::new("cas")));
    }

    #[test]
    fn the_passphrase_loses_its_trailing_newlines_only() {
        let bytes = MaterialBytes::new("c", "", "k", "");
        assert!(bytes.passphrase().is_none());
        for (written, used) in [
            (&b"s3cret w0rd\n"[..], &b"s3cret w0rd"[..]),
            (b"s3cret w0rd\r\n\n", b"s3cret w0rd"),
            (b" s3cret w0rd ", b" s3cret w0rd "),
            (b"\n\n", b""),
        ] {
            let bytes = MaterialBytes::new("c", "", "k", "").with_key_passphrase("p", written);
            assert_eq!(bytes.passphrase(), Some((used, Path::new("p"))));
            let debug = format!("{bytes:?}");
            assert!(!debug.contains("s3cret"), "{debug}");
        }
    }
}
