use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use crate::files::{self, PemFile};
use crate::template::builtin;
use crate::{BuildError, ClientAuth, LeafInfo, Materials, Template};

/// A built server config, with what a status page needs to know about it.
pub struct Built {
    config: Arc<ServerConfig>,
    leaf: LeafInfo,
    files: Vec<PathBuf>,
    resumption: Resumption,
    /// What sessions were authenticated under: client auth mode, CAs, tickets.
    continuity: [u8; 32],
    /// The client verifier and the provider it was built with, reused by the
    /// next build when the trust is byte for byte the same.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
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

    /// The served leaf certificate.
    pub fn leaf(&self) -> &LeafInfo {
        &self.leaf
    }

    /// The files that were read, in order: certificate, key, CA file, then each
    /// file of the CA directory.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Whether resumption state was kept from the previous config.
    pub fn resumption(&self) -> Resumption {
        self.resumption
    }
}

impl fmt::Debug for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config is left out: it holds the signing key.
        f.debug_struct("Built")
            .field("leaf", &self.leaf)
            .field("files", &self.files)
            .field("resumption", &self.resumption)
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
    let cap = template.max_file_size;
    let provider = &template.provider;

    let cert_file = PemFile::read(materials.cert(), cap)?;
    let chain = cert_file.certificates();
    let leaf = match chain.first() {
        Some(der) => LeafInfo::parse(materials.cert(), der)?,
        None => {
            return Err(BuildError::NoCertificate {
                path: materials.cert().to_owned(),
            })
        }
    };

    let key_file = PemFile::read(materials.key(), cap)?;
    let key_der = key_file
        .into_private_key()
        .ok_or_else(|| BuildError::NoPrivateKey {
            path: materials.key().to_owned(),
        })?;
    let key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| BuildError::BadPrivateKey {
            path: materials.key().to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, key);
    check_key_matches(&certified, materials)?;
    if template.check_validity {
        leaf.check_validity(materials.cert(), SystemTime::now())?;
    }

    let mut files = vec![materials.cert().to_owned(), materials.key().to_owned()];
    let trust = Trust::load(materials, template, previous, &mut files)?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&template.versions)
        .map_err(|source| BuildError::Config { source })?;
    let builder = match trust.verifier.clone() {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
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

    tracing::debug!(
        serial = %leaf.serial_hex(),
        subject = %leaf.subject,
        files = files.len(),
        ?resumption,
        "built server config"
    );
    Ok(Built {
        config: Arc::new(config),
        leaf,
        files,
        resumption,
        continuity,
        verifier: trust.verifier,
        provider: provider.clone(),
    })
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

fn check_key_matches(certified: &CertifiedKey, materials: &Materials) -> Result<(), BuildError> {
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(BuildError::KeyMismatch {
                key: materials.key().to_owned(),
                cert: materials.cert().to_owned(),
            })
        }
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            tracing::debug!(
                key = %materials.key().display(),
                "the provider's signing key exposes no public key; key/certificate match not checked"
            );
            Ok(())
        }
        Err(other) => Err(BuildError::BadCertificate {
            path: materials.cert().to_owned(),
            reason: other.to_string(),
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
}

impl Trust {
    fn load(
        materials: &Materials,
        template: &Template,
        previous: Option<&Built>,
        files: &mut Vec<PathBuf>,
    ) -> Result<Self, BuildError> {
        let mut digest = Sha256::new();
        digest.update([u8::from(template.session_tickets)]);

        let Some(anchor_path) = materials.client_ca().or(materials.client_ca_dir()) else {
            digest.update(b"no client auth");
            return Ok(Self {
                verifier: None,
                digest: digest.finalize().into(),
            });
        };
        let mut ca_files = Vec::new();
        if let Some(file) = materials.client_ca() {
            ca_files.push(file.to_owned());
        }
        if let Some(dir) = materials.client_ca_dir() {
            ca_files.extend(files::ca_dir_files(dir)?);
        }

        digest.update(match template.client_auth {
            ClientAuth::Required => b"client auth required",
            ClientAuth::Optional => b"client auth optional",
        });
        let mut loaded = Vec::with_capacity(ca_files.len());
        for (i, path) in ca_files.into_iter().enumerate() {
            step_aside(i);
            let file = PemFile::read(&path, template.max_file_size)?;
            // Each file's path and certificate count delimit its part, so an
            // equal digest means every file holds exactly what it held.
            let certs = file.certificates();
            let name = path.as_os_str().as_encoded_bytes();
            digest.update((name.len() as u64).to_be_bytes());
            digest.update(name);
            digest.update((certs.len() as u64).to_be_bytes());
            for cert in &certs {
                digest.update((cert.len() as u64).to_be_bytes());
                digest.update(cert);
            }
            files.push(path);
            loaded.push((file.path, certs));
        }
        let digest: [u8; 32] = digest.finalize().into();

        // The same CA bytes as the build being served, which checked them:
        // reuse its verifier rather than parse every root again (with a
        // large CA directory that is most of a build).
        let reusable = previous
            .filter(|p| p.continuity == digest && Arc::ptr_eq(&p.provider, &template.provider))
            .and_then(|p| p.verifier.clone());
        if let Some(verifier) = reusable {
            return Ok(Self {
                verifier: Some(verifier),
                digest,
            });
        }

        let mut roots = RootCertStore::empty();
        for (i, (path, certs)) in loaded.into_iter().enumerate() {
            step_aside(i);
            files::add_ca_certs(&path, certs, &mut roots)?;
        }

        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), template.provider.clone());
        let builder = match template.client_auth {
            ClientAuth::Required => builder,
            ClientAuth::Optional => builder.allow_unauthenticated(),
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
        })
    }
}

/// Yields the thread every few CA files. A large CA directory is a long
/// burst of work on a thread the scheduler favours as freshly woken; stepping
/// aside now and then keeps it from holding up the handshakes that share its
/// core (measured: `examples/bench_reload.rs`, part 3).
fn step_aside(file_index: usize) {
    if file_index % 8 == 7 {
        std::thread::yield_now();
    }
}
