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
