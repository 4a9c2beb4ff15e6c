use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use rustls::pki_types::PrivateKeyDer;

use crate::crl::{self, CaInfo, CrlInfo, Signer};
use crate::error::CertProblem;
use crate::files::{self, CertSection, PemFile};
use crate::leaf::{dns_names, parse_x509, Rfc3339};
use crate::pem::Label;
use crate::template::builtin;
use crate::{BuildError, ClientAuth, LeafInfo, MaterialBytes, Materials, Template};

/// A built server config, with what a status page needs to know about it.
pub struct Built {
    config: Arc<ServerConfig>,
    certified: Option<Arc<CertifiedKey>>,
    leaf: LeafInfo,
    files: Vec<PathBuf>,
    resumption: Resumption,
    /// What sessions were authenticated under: client auth mode, CAs, tickets.
    continuity: [u8; 32],
    /// The client verifier and the provider it was built with, reused by the
    /// next build when the trust is byte for byte the same.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    ca_names_sent: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
    client_cas: Arc<[CaInfo]>,
    crls: Arc<[CrlInfo]>,
    crl_expired: bool,
}

/// Whether a build carried the previous config's resumption state over.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumption {
    /// The session storage (and ticketer) of the previous config are reused:
    /// clients resume across the reload. Only when the trust did not change.
    Kept,
    /// New session storage and ticketer: no earlier session resumes. The first
    /// build, and any build whose client CAs or client auth mode changed.
    Fresh,
}

impl Built {
    /// The config to hand to new connections.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// The chain and signing key the config serves, for a certificate
    /// resolver of your own (an SNI resolver's default pair, say); `None`
    /// for [`Materials::without_identity`].
    pub fn certified_key(&self) -> Option<&Arc<CertifiedKey>> {
        self.certified.as_ref()
    }

    /// The served leaf certificate.
    pub fn leaf(&self) -> &LeafInfo {
        &self.leaf
    }

    /// The files that were read, in order: certificate, key, CA file, each
    /// file of the CA directory, each CRL file, then the key passphrase
    /// file.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every trusted client CA, in the order read (CA file, then the CA
    /// directory's files); empty without client auth. A certificate of a
    /// CA file that is not usable as a trust anchor is not listed.
    pub fn client_cas(&self) -> &[CaInfo] {
        &self.client_cas
    }

    /// Every CRL in force, in the order read; empty without CRLs.
    pub fn crls(&self) -> &[CrlInfo] {
        &self.crls
    }

    /// Whether a CRL was past its `nextUpdate` when this build was made.
    /// Such a build is served only with
    /// [`Template::enforce_crl_expiry`](crate::Template::enforce_crl_expiry)
    /// off (the default), with a warning; rustls then keeps using the CRL.
    pub fn crl_expired(&self) -> bool {
        self.crl_expired
    }

    /// Whether resumption state was kept from the previous config.
    pub fn resumption(&self) -> Resumption {
        self.resumption
    }

    /// Whether the server names its client CAs when it asks for a client
    /// certificate. False without client auth, and when the names do not
    /// fit in a TLS CertificateRequest (about 1,950 CAs or more): they are
    /// then left out rather than break every handshake.
    pub fn sends_ca_names(&self) -> bool {
        self.ca_names_sent
    }
}

impl fmt::Debug for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config is left out: it holds the signing key.
        f.debug_struct("Built")
            .field("leaf", &self.leaf)
            .field("files", &self.files)
            .field("resumption", &self.resumption)
            .field("client_cas", &self.client_cas.len())
            .field("crls", &self.crls)
            .field("alpn_protocols", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

/// Builds a server config from the files, on the calling thread.
///
/// `previous` is the build being served: when the trust (client CAs, client
/// auth mode, session tickets setting) is unchanged, its session storage and
/// ticketer are reused so clients keep resuming across a certificate rotation.
pub fn build_blocking(
    materials: &Materials,
    template: &Template,
    previous: Option<&Built>,
) -> Result<Built, BuildError> {
    let bytes = MaterialBytes::read(materials, template.max_file_size)?;
    build_from_bytes(&bytes, template, previous)
}

/// Builds a server config from materials already read, on the calling
/// thread: the parsing and every check of [`build_blocking`], without the
/// file system.
pub fn build_from_bytes(
    bytes: &MaterialBytes,
    template: &Template,
    previous: Option<&Built>,
) -> Result<Built, BuildError> {
    let provider = &template.provider;
    // Without a certificate and key (trust only), the config resolves
    // nothing until its user gives it a resolver.
    let has_identity = !bytes.cert.path.as_os_str().is_empty();
    let (certified, leaf) = if has_identity {
        let Identity {
            certified, leaf, ..
        } = identity(
            (&bytes.cert.path, &bytes.cert.bytes),
            Some((&bytes.key.path, &bytes.key.bytes)),
            bytes.passphrase(),
            provider,
            template.check_validity,
        )?;
        (Some(Arc::new(certified)), leaf)
    } else {
        (None, LeafInfo::placeholder())
    };

    let trust = Trust::load(bytes, template, previous)?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&template.versions)
        .map_err(|source| BuildError::Config { source })?;
    let builder = match trust.verifier.clone() {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let resolver: Arc<dyn rustls::server::ResolvesServerCert> = match &certified {
        Some(certified) => Arc::new(SingleCertAndKey::from(certified.clone())),
        None => Arc::new(rustls::server::ResolvesServerCertUsingSni::new()),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = template.alpn.clone();

    let continuity = trust.digest;
    match previous.filter(|p| p.continuity == continuity) {
        Some(previous) => {
            config.session_storage = previous.config.session_storage.clone();
            config.ticketer = previous.config.ticketer.clone();
        }
        None if template.session_tickets => {
            config.ticketer =
                builtin::ticketer().map_err(|source| BuildError::Ticketer { source })?;
        }
        None => {}
    }
    for configure in &template.configure {
        configure(&mut config);
    }
    let resumption = match previous {
        Some(previous) if shares_resumption(&previous.config, &config) => Resumption::Kept,
        _ => Resumption::Fresh,
    };

    let files: Vec<PathBuf> = bytes.names().map(Path::to_owned).collect();
    tracing::debug!(
        serial = %leaf.serial_hex(),
        subject = %leaf.subject,
        files = files.len(),
        ?resumption,
        "built server config"
    );
    Ok(Built {
        config: Arc::new(config),
        certified,
        leaf,
        files,
        resumption,
        continuity,
        verifier: trust.verifier,
        ca_names_sent: trust.ca_names_sent,
        provider: provider.clone(),
        client_cas: trust.client_cas,
        crls: trust.crls,
        crl_expired: trust.crl_expired,
    })
}

/// A certificate chain and its key, checked against each other and the
/// clock: what a server (or a client with an identity) presents.
pub(crate) struct Identity {
    pub(crate) certified: CertifiedKey,
    pub(crate) leaf: LeafInfo,
    /// The leaf's DNS names (subject alternative names), normalised.
    pub(crate) names: Vec<String>,
}

/// Parses the chain of the certificate file and the private key of the key
/// file (of the certificate file itself, after its certificates, when
/// `None`: one PEM file holding both), each given as its name and bytes,
/// and checks that the key is the leaf's and, with `check_validity`, that
/// the leaf is within its validity period. A server's pair and a client's
/// identity alike.
pub(crate) fn identity(
    (cert_path, cert_bytes): (&Path, &[u8]),
    key: Option<(&Path, &[u8])>,
    passphrase: Option<(&[u8], &Path)>,
    provider: &rustls::crypto::CryptoProvider,
    check_validity: bool,
) -> Result<Identity, BuildError> {
    let mut cert_file = PemFile::parse(cert_path, cert_bytes)?;
    let chain = cert_file.certificates();
    if chain.is_empty() {
        return Err(BuildError::NoCertificate {
            path: cert_path.to_owned(),
            found: cert_file.labels(),
        });
    }
    let (leaf, names) = check_chain(cert_path, &chain)?;

    let key_file = match key {
        Some((path, bytes)) => PemFile::parse(path, bytes)?,
        None => cert_file,
    };
    let key_path = key_file.path;
    let key_der = key_file.into_private_key(passphrase)?;
    let label = match &key_der {
        PrivateKeyDer::Pkcs1(_) => Label::RsaPrivateKey,
        PrivateKeyDer::Sec1(_) => Label::EcPrivateKey,
        _ => Label::PrivateKey,
    };
    let key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| BuildError::BadPrivateKey {
            path: key_path.to_owned(),
            label,
        })?;
    let certified = CertifiedKey::new(chain.into_iter().map(|cert| cert.der).collect(), key);
    check_key_matches(&certified, cert_path, key_path)?;
    if check_validity {
        leaf.check_validity(cert_path, SystemTime::now())?;
    }
    Ok(Identity {
        certified,
        leaf,
        names,
    })
}

/// Parses every certificate of the chain (a broken intermediate fails
/// every handshake, so it is refused like a broken leaf), warns when one is
/// not named as the issuer of the one before it, and describes the leaf:
/// its summary and its DNS names.
fn check_chain(path: &Path, chain: &[CertSection]) -> Result<(LeafInfo, Vec<String>), BuildError> {
    let count = chain.len();
    let mut parsed = Vec::with_capacity(count);
    for (i, cert) in chain.iter().enumerate() {
        let x509 = parse_x509(&cert.der).map_err(|problem| BuildError::BadCertificate {
            path: path.to_owned(),
            index: i + 1,
            count,
            line: Some(cert.line),
            problem,
        })?;
        parsed.push(x509);
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            tracing::warn!(
                file = %path.display(),
                "certificate {} is not named as the issuer of certificate {}: \
                 the chain is out of order or holds an unrelated certificate; \
                 clients that do not search the chain may fail",
                i + 2,
                i + 1
            );
        }
    }
    Ok((
        LeafInfo::from_x509(&parsed[0], &chain[0].der),
        dns_names(&parsed[0]),
    ))
}

/// Builds a server config from the files on the [`blocking`] thread pool, so
/// the async caller never blocks.
pub async fn build(
    materials: &Materials,
    template: &Template,
    previous: Option<Arc<Built>>,
) -> Result<Built, BuildError> {
    let materials = materials.clone();
    let template = template.clone();
    blocking::unblock(move || build_blocking(&materials, &template, previous.as_deref())).await
}

fn check_key_matches(certified: &CertifiedKey, cert: &Path, key: &Path) -> Result<(), BuildError> {
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(BuildError::KeyMismatch {
                key: key.to_owned(),
                cert: cert.to_owned(),
            })
        }
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            tracing::debug!(
                key = %key.display(),
                "the provider's signing key exposes no public key; key/certificate match not checked"
            );
            Ok(())
        }
        Err(_) => Err(BuildError::BadCertificate {
            path: cert.to_owned(),
            index: 1,
            count: certified.cert.len(),
            line: None,
            problem: CertProblem::BadPublicKey,
        }),
    }
}

/// Whether a client holding a session from `previous` may resume on `next`.
fn shares_resumption(previous: &ServerConfig, next: &ServerConfig) -> bool {
    Arc::ptr_eq(&previous.session_storage, &next.session_storage)
        || (next.ticketer.enabled() && Arc::ptr_eq(&previous.ticketer, &next.ticketer))
}

/// The client verifier, and a digest of everything sessions are authenticated under.
struct Trust {
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    digest: [u8; 32],
    /// Whether the CertificateRequest names the CAs.
    ca_names_sent: bool,
    client_cas: Arc<[CaInfo]>,
    crls: Arc<[CrlInfo]>,
    /// Whether a CRL is past its nextUpdate (served: expiry not enforced).
    crl_expired: bool,
}

impl Trust {
    fn load(
        bytes: &MaterialBytes,
        template: &Template,
        previous: Option<&Built>,
    ) -> Result<Self, BuildError> {
        let mut digest = Sha256::new();
        digest.update([u8::from(template.session_tickets)]);

        let Some(anchor_path) = bytes.client_ca_anchor.as_deref() else {
            if let Some(crl) = bytes.crls.first() {
                return Err(BuildError::CrlWithoutClientCa {
                    path: crl.path.clone(),
                });
            }
            digest.update(b"no client auth");
            return Ok(Self {
                verifier: None,
                digest: digest.finalize().into(),
                ca_names_sent: false,
                client_cas: Arc::new([]),
                crls: Arc::new([]),
                crl_expired: false,
            });
        };
        digest.update(match template.client_auth {
            ClientAuth::Required => b"client auth required",
            ClientAuth::Optional => b"client auth optional",
        });
        let mut loaded = Vec::with_capacity(bytes.client_cas.len());
        for (i, file) in bytes.client_cas.iter().enumerate() {
            step_aside(i);
            let path = file.path.as_path();
            let certs: Vec<_> = PemFile::parse(path, &file.bytes)?
                .certificates()
                .into_iter()
                .map(|cert| cert.der)
                .collect();
            // Each file's path and certificate count delimit its part, so an
            // equal digest means every file holds exactly what it held.
            digest_part(&mut digest, path, certs.len());
            for cert in &certs {
                digest.update((cert.len() as u64).to_be_bytes());
                digest.update(cert);
            }
            loaded.push((path, certs));
        }
        // The CRLs are part of the trust, and so is whether their expiry
        // is enforced: a change to either resets resumption.
        if !bytes.crls.is_empty() {
            digest.update(b"crls");
            digest.update([u8::from(template.enforce_crl_expiry)]);
            for file in &bytes.crls {
                digest_part(&mut digest, &file.path, file.bytes.len());
                digest.update(&file.bytes);
            }
        }
        let digest: [u8; 32] = digest.finalize().into();

        // The same CA and CRL bytes as the build being served, which checked
        // them: reuse its verifier rather than parse every root again (with
        // a large CA directory that is most of a build). Only the CRLs'
        // expiry is checked again: time has passed.
        let reusable = previous
            .filter(|p| p.continuity == digest && Arc::ptr_eq(&p.provider, &template.provider))
            .and_then(|p| p.verifier.clone().map(|v| (v, p)));
        if let Some((verifier, previous)) = reusable {
            let crl_expired = check_crl_expiry(&previous.crls, template)?;
            return Ok(Self {
                verifier: Some(verifier),
                digest,
                ca_names_sent: previous.ca_names_sent,
                client_cas: previous.client_cas.clone(),
                crls: previous.crls.clone(),
                crl_expired,
            });
        }

        let mut roots = RootCertStore::empty();
        let mut client_cas = Vec::new();
        let mut signers = Vec::new();
        for (i, (path, certs)) in loaded.into_iter().enumerate() {
            step_aside(i);
            files::add_ca_certs(path, certs, &mut roots, |cert| {
                client_cas.push(CaInfo::from_x509(path, cert));
                if !bytes.crls.is_empty() {
                    signers.extend(Signer::of(cert));
                }
            })?;
        }
        let ca_names_sent = ca_names_fit(&roots, anchor_path);

        let mut in_force: Vec<crl::CheckedCrl> = Vec::new();
        for file in &bytes.crls {
            let path = file.path.as_path();
            for (der, line) in PemFile::parse(path, &file.bytes)?.crls()? {
                let checked = crl::check(
                    path,
                    line,
                    der,
                    &signers,
                    &template.provider.signature_verification_algorithms,
                )?;
                keep_newest(&mut in_force, checked);
            }
        }
        let (crl_ders, crls): (Vec<_>, Vec<_>) = in_force
            .into_iter()
            .map(|checked| (checked.der, checked.info))
            .unzip();
        let crl_expired = check_crl_expiry(&crls, template)?;
        if !crls.is_empty() {
            warn_uncovered(&signers, &crls);
        }

        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), template.provider.clone());
        let builder = if ca_names_sent {
            builder
        } else {
            builder.clear_root_hint_subjects()
        };
        let builder = match template.client_auth {
            ClientAuth::Required => builder,
            ClientAuth::Optional => builder.allow_unauthenticated(),
        };
        let builder = match (crl_ders.is_empty(), template.enforce_crl_expiry) {
            (true, _) => builder,
            (false, false) => builder.with_crls(crl_ders),
            (false, true) => builder.with_crls(crl_ders).enforce_revocation_expiration(),
        };
        let verifier = builder
            .build()
            .map_err(|source| BuildError::ClientVerifier {
                path: anchor_path.to_owned(),
                source,
            })?;
        Ok(Self {
            verifier: Some(verifier),
            digest,
            ca_names_sent,
            client_cas: client_cas.into(),
            crls: crls.into(),
            crl_expired,
        })
    }
}

/// Feeds a file's name and a count (of certificates, or bytes) into a
/// trust digest, so that each file's part is delimited.
fn digest_part(digest: &mut Sha256, path: &Path, count: usize) {
    let name = path.as_os_str().as_encoded_bytes();
    digest.update((name.len() as u64).to_be_bytes());
    digest.update(name);
    digest.update((count as u64).to_be_bytes());
}

/// Adds `crl` to the CRLs in force, unless one of the same issuer and scope
/// is newer: webpki would use whichever of the two comes first, so an old
/// CRL left beside its successor would hide the latest revocations. The
/// newest is kept, as OpenSSL picks it, and the other is named in a warning.
fn keep_newest(in_force: &mut Vec<crl::CheckedCrl>, crl: crl::CheckedCrl) {
    let Some(kept) = in_force.iter_mut().find(|kept| kept.same_scope(&crl)) else {
        in_force.push(crl);
        return;
    };
    let older = if crl.newer_than(kept) {
        std::mem::replace(kept, crl)
    } else {
        crl
    };
    tracing::warn!(
        file = %older.info.path.display(),
        line = older.info.line,
        newer_file = %kept.info.path.display(),
        newer_line = kept.info.line,
        issuer = %kept.info.issuer,
        "a CRL is superseded by a newer one of the same issuer and scope; only the newer applies"
    );
}

/// Refuses a CRL past its nextUpdate when expiry is enforced; otherwise
/// warns, and says whether one is.
fn check_crl_expiry(crls: &[CrlInfo], template: &Template) -> Result<bool, BuildError> {
    let now = SystemTime::now();
    let mut expired = false;
    for crl in crls.iter().filter(|crl| crl.is_expired_at(now)) {
        let next_update = crl.next_update.unwrap_or(now);
        if template.enforce_crl_expiry {
            return Err(BuildError::CrlExpired {
                path: crl.path.clone(),
                line: crl.line,
                next_update,
                now,
            });
        }
        tracing::warn!(
            file = %crl.path.display(),
            line = crl.line,
            issuer = %crl.issuer,
            next_update = %Rfc3339(next_update),
            "the CRL is past its nextUpdate; still in force, since CRL expiry is not enforced"
        );
        expired = true;
    }
    Ok(expired)
}

/// Warns when a client CA has no CRL: with CRLs configured, rustls refuses a
/// client whose revocation status no CRL gives.
fn warn_uncovered(signers: &[Signer], crls: &[CrlInfo]) {
    let uncovered: Vec<&Signer> = signers
        .iter()
        .filter(|signer| !crls.iter().any(|crl| signer.issued(crl)))
        .collect();
    if let Some(first) = uncovered.first() {
        tracing::warn!(
            count = uncovered.len(),
            first = %first.name(),
            "client CAs without a CRL: with CRLs configured, their clients are refused \
             (revocation status unknown); give a CRL for every client CA"
        );
    }
}

/// The most bytes of CA names a CertificateRequest carries. The list has a
/// 16-bit length (64 KiB - 1), and in TLS 1.3 it shares the message's
/// 16-bit extensions block with the signature algorithms: 1 KiB is left for
/// those.
pub(crate) const MAX_CA_NAMES_BYTES: usize = 65_535 - 1024;

/// Whether the CA names of `roots` fit in a CertificateRequest. Above the
/// limit (about 1,950 typical CAs) the message cannot be encoded and every
/// mTLS handshake would fail, so the names are left out, with a warning:
/// clients then pick their certificate without the hint, which most do
/// anyway.
fn ca_names_fit(roots: &RootCertStore, anchor: &Path) -> bool {
    let bytes: usize = roots
        .subjects()
        .iter()
        .map(|dn| 2 + dn.as_ref().len())
        .sum();
    if bytes <= MAX_CA_NAMES_BYTES {
        return true;
    }
    tracing::warn!(
        client_ca = %anchor.display(),
        roots = roots.len(),
        ca_names_bytes = bytes,
        limit = MAX_CA_NAMES_BYTES,
        "the client CA names do not fit in a TLS CertificateRequest; \
         sending none (clients choose their certificate without the hint)"
    );
    false
}

/// Yields the thread every few CA files. A large CA directory is a long
/// burst of work on a thread the scheduler favours as freshly woken; stepping
/// aside now and then keeps it from holding up the handshakes that share its
/// core (measured: `benches/no_stall.rs`).
pub(crate) fn step_aside(file_index: usize) {
    if file_index % 8 == 7 {
        std::thread::yield_now();
    }
}
