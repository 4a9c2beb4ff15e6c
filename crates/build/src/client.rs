//! The client side: an optional identity (certificate chain and key) and
//! the trusted server roots, turned into a rustls [`ClientConfig`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use sha2::{Digest, Sha256};

use crate::config::{identity, step_aside, Identity};
use crate::files::{self, PemFile};
use crate::materials::Named;
use crate::template::default_provider;
use crate::{BuildError, CaInfo, LeafInfo, MaterialBytes, Resumption, DEFAULT_MAX_FILE_SIZE};

/// Where a TLS client's materials live on disk: an optional identity (a
/// certificate chain and its private key, for servers that ask for a
/// client certificate) and the roots it trusts to sign servers'
/// certificates (a PEM bundle and/or a directory of PEM files).
///
/// Without a roots file or directory, the client trusts the root store of
/// its [`ClientTemplate`]; with one, only what the files hold.
///
/// ```
/// use tls_reload_build::ClientMaterials;
/// let materials = ClientMaterials::new()
///     .with_identity("client.crt", "client.key")
///     .with_roots("ca.pem");
/// assert_eq!(materials.paths().len(), 3);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientMaterials {
    identity: Option<(PathBuf, PathBuf)>,
    key_passphrase_file: Option<PathBuf>,
    roots: Option<PathBuf>,
    roots_dir: Option<PathBuf>,
}

impl ClientMaterials {
    /// No identity, and the template's root store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Presents this certificate chain (leaf first) and private key, both
    /// PEM, to servers that ask for a client certificate.
    pub fn with_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Decrypts an encrypted PKCS#8 identity key with the passphrase in
    /// this file, read at every build, as
    /// [`Materials::with_key_passphrase_file`](crate::Materials::with_key_passphrase_file)
    /// does for a server.
    pub fn with_key_passphrase_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.key_passphrase_file = Some(file.into());
        self
    }

    /// Trusts every certificate of this PEM bundle to sign servers'
    /// certificates (and no longer the template's root store).
    pub fn with_roots(mut self, file: impl Into<PathBuf>) -> Self {
        self.roots = Some(file.into());
        self
    }

    /// Trusts every certificate of every file of this directory to sign
    /// servers' certificates (and no longer the template's root store).
    /// Names starting with `.` and subdirectories are skipped.
    pub fn with_roots_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.roots_dir = Some(dir.into());
        self
    }

    /// The identity's certificate chain and key files, if any.
    pub fn identity(&self) -> Option<(&Path, &Path)> {
        self.identity
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path()))
    }

    /// The key passphrase file, if any.
    pub fn key_passphrase_file(&self) -> Option<&Path> {
        self.key_passphrase_file.as_deref()
    }

    /// The roots file, if any.
    pub fn roots(&self) -> Option<&Path> {
        self.roots.as_deref()
    }

    /// The roots directory, if any.
    pub fn roots_dir(&self) -> Option<&Path> {
        self.roots_dir.as_deref()
    }

    /// Whether roots come from files rather than the template's store.
    pub fn has_root_files(&self) -> bool {
        self.roots.is_some() || self.roots_dir.is_some()
    }

    /// Everything to watch: the identity's certificate and key, the roots
    /// file, the roots directory, then the key passphrase file, when set.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let Some((cert, key)) = &self.identity {
            paths.extend([cert.clone(), key.clone()]);
        }
        paths.extend(self.roots.clone());
        paths.extend(self.roots_dir.clone());
        paths.extend(self.key_passphrase_file.clone());
        paths
    }
}

type Configure = Arc<dyn Fn(&mut ClientConfig) + Send + Sync>;

/// Everything about the client config except the files: crypto provider,
/// protocol versions, ALPN, the root store used when no roots file is
/// given, and checks.
///
/// Cheap to clone; the same template is used for every reload.
#[derive(Clone)]
pub struct ClientTemplate {
    provider: Arc<CryptoProvider>,
    versions: Vec<&'static SupportedProtocolVersion>,
    alpn: Vec<Vec<u8>>,
    root_store: Option<Arc<RootCertStore>>,
    check_validity: bool,
    max_file_size: u64,
    configure: Vec<Configure>,
}

impl ClientTemplate {
    /// A template using this crypto provider, TLS 1.3 and 1.2, no ALPN, no
    /// root store (so the materials must name roots), the identity's
    /// validity checked, files capped at [`DEFAULT_MAX_FILE_SIZE`].
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self {
            provider,
            versions: rustls::DEFAULT_VERSIONS.to_vec(),
            alpn: Vec::new(),
            root_store: None,
            check_validity: true,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            configure: Vec::new(),
        }
    }

    /// A template using the process default provider if one is installed,
    /// else *ring* (feature `ring`), else aws-lc-rs (feature `aws-lc-rs`).
    ///
    /// Fails with [`BuildError::NoProvider`] when there is none of these.
    pub fn from_default_provider() -> Result<Self, BuildError> {
        default_provider().map(Self::new)
    }

    /// The crypto provider.
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// The protocol versions to offer (default: TLS 1.3 and TLS 1.2).
    pub fn protocol_versions(mut self, versions: &[&'static SupportedProtocolVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    /// The ALPN protocols to offer, most preferred first (default: none).
    pub fn alpn_protocols(mut self, protocols: Vec<Vec<u8>>) -> Self {
        self.alpn = protocols;
        self
    }

    /// The roots to trust when the materials name no roots file or
    /// directory (the platform's, or `webpki-roots`, say). Default: none.
    pub fn root_store(mut self, roots: impl Into<Arc<RootCertStore>>) -> Self {
        self.root_store = Some(roots.into());
        self
    }

    /// Whether to refuse an identity certificate that is expired or not
    /// yet valid (default: on).
    pub fn check_validity(mut self, on: bool) -> Self {
        self.check_validity = on;
        self
    }

    /// The largest file, in bytes, that a build reads (default: [`DEFAULT_MAX_FILE_SIZE`]).
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// The cap set by [`max_file_size`](ClientTemplate::max_file_size): a
    /// reloader watching these files should read no more.
    pub fn file_size_limit(&self) -> u64 {
        self.max_file_size
    }

    /// Adds a last-word tweak applied to every built config, after
    /// everything else, in the order added. A tweak that replaces
    /// `resumption` takes over session resumption, and its continuity
    /// across reloads.
    pub fn configure(mut self, f: impl Fn(&mut ClientConfig) + Send + Sync + 'static) -> Self {
        self.configure.push(Arc::new(f));
        self
    }
}

impl fmt::Debug for ClientTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTemplate")
            .field("provider", &self.provider)
            .field("protocol_versions", &self.versions)
            .field("alpn_protocols", &self.alpn)
            .field(
                "root_store",
                &self.root_store.as_ref().map(|roots| roots.len()),
            )
            .field("check_validity", &self.check_validity)
            .field("max_file_size", &self.max_file_size)
            .field(
                "configure",
                &self.configure.iter().map(|_| "<fn>").collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A built client config, with what a status page needs to know about it.
pub struct ClientBuilt {
    config: Arc<ClientConfig>,
    identity: Option<LeafInfo>,
    roots: Arc<[CaInfo]>,
    files: Vec<PathBuf>,
    resumption: Resumption,
    /// What sessions were made with: the identity and the trust.
    continuity: [u8; 32],
    /// Reused by the next build when the trust is the same.
    verifier: Arc<WebPkiServerVerifier>,
}

impl ClientBuilt {
    /// The config to hand to new connections.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The identity's leaf certificate, if the client has one.
    pub fn identity(&self) -> Option<&LeafInfo> {
        self.identity.as_ref()
    }

    /// Every root read from the roots file and directory, in the order
    /// read; empty when the template's root store is used.
    pub fn roots(&self) -> &[CaInfo] {
        &self.roots
    }

    /// The files that were read, in order: the identity's certificate and
    /// key, the roots file, each file of the roots directory, then the key
    /// passphrase file.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Whether sessions of the previous config still resume: only when
    /// neither the identity nor the trust changed.
    pub fn resumption(&self) -> Resumption {
        self.resumption
    }
}

impl fmt::Debug for ClientBuilt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config is left out: it holds the signing key.
        f.debug_struct("ClientBuilt")
            .field("identity", &self.identity)
            .field("roots", &self.roots.len())
            .field("files", &self.files)
            .field("resumption", &self.resumption)
            .field("alpn_protocols", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

/// Builds a client config from the files on the [`blocking`] thread pool,
/// so the async caller never blocks.
pub async fn build_client(
    materials: &ClientMaterials,
    template: &ClientTemplate,
    previous: Option<Arc<ClientBuilt>>,
) -> Result<ClientBuilt, BuildError> {
    let materials = materials.clone();
    let template = template.clone();
    blocking::unblock(move || build_client_blocking(&materials, &template, previous.as_deref()))
        .await
}

/// Builds a client config from the files, on the calling thread.
///
/// Every certificate of the identity chain must parse and the key must
/// match the leaf; every roots file must hold a usable root, and a roots
/// file that does not parse fails the build (trust is never dropped or
/// widened silently: the caller keeps the config it has). `previous` is
/// the build being used: when neither the identity nor the trust changed,
/// its session store is kept, so connections keep resuming; otherwise a
/// fresh one is made, so no session made with the old identity or under
/// the old trust resumes.
pub fn build_client_blocking(
    materials: &ClientMaterials,
    template: &ClientTemplate,
    previous: Option<&ClientBuilt>,
) -> Result<ClientBuilt, BuildError> {
    let limit = template.max_file_size;
    let read = |path: &Path| {
        files::read(path, limit).map(|bytes| Named {
            path: path.to_owned(),
            bytes,
        })
    };
    let mut digest = Sha256::new();
    let mut names = Vec::new();

    let presented = match &materials.identity {
        Some((cert, key)) => {
            let mut bytes = MaterialBytes::from_pair(read(cert)?, read(key)?);
            if let Some(file) = &materials.key_passphrase_file {
                bytes.key_passphrase = Some(read(file)?);
            }
            names.extend([cert.clone(), key.clone()]);
            let Identity {
                certified, leaf, ..
            } = identity(
                (&bytes.cert.path, &bytes.cert.bytes),
                Some((&bytes.key.path, &bytes.key.bytes)),
                bytes.passphrase(),
                &template.provider,
                template.check_validity,
            )?;
            digest.update(b"identity");
            digest_certs(&mut digest, &certified.cert);
            Some((Arc::new(certified), leaf))
        }
        None => {
            digest.update(b"no identity");
            None
        }
    };

    let (store, anchor, roots) = load_roots(materials, template, &read, &mut digest, &mut names)?;
    names.extend(
        materials
            .key_passphrase_file
            .clone()
            .filter(|_| presented.is_some()),
    );
    digest.update((Arc::as_ptr(&template.provider) as usize).to_be_bytes());
    let continuity: [u8; 32] = digest.finalize().into();

    // The same identity and trust as the build in use: its verifier, its
    // certificate resolver and its session store carry over (rustls
    // resumes a session only with the very verifier and resolver it was
    // made with); otherwise all three are new, and no session resumes.
    let previous = previous.filter(|p| p.continuity == continuity);
    let verifier = match previous {
        Some(previous) => previous.verifier.clone(),
        None => verifier(store, template, anchor)?,
    };
    let builder = ClientConfig::builder_with_provider(template.provider.clone())
        .with_protocol_versions(&template.versions)
        .map_err(|source| BuildError::ClientConfig { source })?
        .with_webpki_verifier(verifier.clone());
    let (mut config, leaf) = match presented {
        Some((certified, leaf)) => (
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified))),
            Some(leaf),
        ),
        None => (builder.with_no_client_auth(), None),
    };
    config.alpn_protocols = template.alpn.clone();
    let resumption = match previous {
        Some(previous) => {
            config.client_auth_cert_resolver = previous.config.client_auth_cert_resolver.clone();
            config.resumption = previous.config.resumption.clone();
            Resumption::Kept
        }
        None => Resumption::Fresh,
    };
    for configure in &template.configure {
        configure(&mut config);
    }
    tracing::debug!(
        identity = ?leaf.as_ref().map(LeafInfo::serial_hex),
        roots = roots.len(),
        ?resumption,
        "built client config"
    );
    Ok(ClientBuilt {
        config: Arc::new(config),
        identity: leaf,
        roots: roots.into(),
        files: names,
        resumption,
        continuity,
        verifier,
    })
}

/// The trusted roots; the file or directory a verifier error is about;
/// what the files held.
type Roots<'m> = (Arc<RootCertStore>, Option<&'m PathBuf>, Vec<CaInfo>);

/// The trusted roots, from the roots files or else the template's store.
fn load_roots<'m>(
    materials: &'m ClientMaterials,
    template: &ClientTemplate,
    read: &dyn Fn(&Path) -> Result<Named, BuildError>,
    digest: &mut Sha256,
    names: &mut Vec<PathBuf>,
) -> Result<Roots<'m>, BuildError> {
    let anchor = materials.roots.as_ref().or(materials.roots_dir.as_ref());
    let Some(anchor) = anchor else {
        let Some(store) = &template.root_store else {
            return Err(BuildError::NoTrustedRoots);
        };
        // The same store, the same trust: by identity, not by content.
        digest.update(b"root store");
        digest.update((Arc::as_ptr(store) as usize).to_be_bytes());
        return Ok((store.clone(), None, Vec::new()));
    };
    let mut files = Vec::new();
    if let Some(file) = &materials.roots {
        files.push(read(file)?);
    }
    if let Some(dir) = &materials.roots_dir {
        for (i, file) in files::ca_dir_files(dir)?.iter().enumerate() {
            step_aside(i);
            files.push(read(file)?);
        }
    }
    digest.update(b"roots");
    let mut store = RootCertStore::empty();
    let mut infos = Vec::new();
    for (i, file) in files.iter().enumerate() {
        step_aside(i);
        let path = file.path.as_path();
        let certs: Vec<CertificateDer<'static>> = PemFile::parse(path, &file.bytes)?
            .certificates()
            .into_iter()
            .map(|cert| cert.der)
            .collect();
        let name = path.as_os_str().as_encoded_bytes();
        digest.update((name.len() as u64).to_be_bytes());
        digest.update(name);
        digest_certs(digest, &certs);
        files::add_ca_certs(path, certs, &mut store, |cert| {
            infos.push(CaInfo::from_x509(path, cert));
        })?;
        names.push(path.to_owned());
    }
    Ok((Arc::new(store), Some(anchor), infos))
}

fn verifier(
    roots: Arc<RootCertStore>,
    template: &ClientTemplate,
    anchor: Option<&PathBuf>,
) -> Result<Arc<WebPkiServerVerifier>, BuildError> {
    WebPkiServerVerifier::builder_with_provider(roots, template.provider.clone())
        .build()
        .map_err(|source| BuildError::ServerVerifier {
            path: anchor.cloned(),
            source,
        })
}

/// Feeds a list of certificates into a digest, each delimited.
fn digest_certs(digest: &mut Sha256, certs: &[CertificateDer<'_>]) {
    digest.update((certs.len() as u64).to_be_bytes());
    for cert in certs {
        digest.update((cert.len() as u64).to_be_bytes());
        digest.update(cert);
    }
}
