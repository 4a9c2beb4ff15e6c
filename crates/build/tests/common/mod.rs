//! Shared helpers: an rcgen PKI, files in a temp dir, openssl keys, and an
//! in-memory rustls handshake.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::client::ClientConnection;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::ServerConnection;
use rustls::{ClientConfig, Connection, HandshakeKind, RootCertStore, ServerConfig};
use tls_reload_build::Template;

pub type Error = Box<dyn std::error::Error>;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn template() -> Template {
    Template::new(provider())
}

/// A certificate authority made with rcgen.
pub struct Ca {
    pub cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM.
pub struct Leaf {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

pub fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let params = ca_params(name);
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A CA from given params and key (many CAs can share one key).
    pub fn from_parts(params: CertificateParams, key: KeyPair) -> Self {
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    pub fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let params = ca_params(name);
        let cert = params.signed_by(&key, &self.issuer).expect("intermediate");
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `localhost` with an ECDSA P-256 key.
    pub fn leaf(&self) -> Leaf {
        self.leaf_with(KeyPair::generate().expect("key"), leaf_params())
    }

    pub fn leaf_with(&self, key: KeyPair, params: CertificateParams) -> Leaf {
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        Leaf { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

pub fn leaf_params() -> CertificateParams {
    let mut params = CertificateParams::new(vec!["localhost".into()]).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
}

impl Leaf {
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.der().clone()]
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.serialize_der().into())
    }
}

/// A temp dir holding a valid pair `tls.crt` / `tls.key` issued by `ca`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("server root");
        let (cert, key) = write_leaf(dir.path(), "tls", &ca.leaf());
        Self { dir, ca, cert, key }
    }

    /// Writes a pair `name.crt` / `name.key` valid between the two dates.
    pub fn write_leaf_valid(
        &self,
        name: &str,
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> (PathBuf, PathBuf) {
        let mut params = leaf_params();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let leaf = self.ca.leaf_with(KeyPair::generate().expect("key"), params);
        write_leaf(self.dir.path(), name, &leaf)
    }

    /// Whether a client trusting `ca`, with a certificate from `client_ca`
    /// (or none), completes a handshake with `config`.
    pub fn admits(&self, config: &Arc<ServerConfig>, client_ca: Option<&Ca>) -> bool {
        let leaf = client_ca.map(Ca::leaf);
        handshake(config, &client_config(&self.ca, leaf.as_ref())).is_ok()
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

/// Writes a leaf's certificate and key as `name.crt` and `name.key`.
pub fn write_leaf(dir: &Path, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
    (
        write(dir, &format!("{name}.crt"), leaf.cert.pem()),
        write(dir, &format!("{name}.key"), leaf.key_pem()),
    )
}

/// Runs openssl in `dir`, panicking with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client config trusting `root`, with an optional client certificate.
pub fn client_config(root: &Ca, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root.der()).expect("root");
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(leaf.chain_der(), leaf.key_der())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Runs a full TLS handshake between a client and a server over memory, and
/// returns whether the client did a full or a resumed handshake.
pub fn handshake(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> Result<HandshakeKind, rustls::Error> {
    let name = ServerName::try_from("localhost").expect("name");
    let mut client = Connection::from(ClientConnection::new(client.clone(), name)?);
    let mut server = Connection::from(ServerConnection::new(server.clone())?);
    // Shuttle until neither side has anything left to say (tickets come after the handshake).
    while transfer(&mut client, &mut server)? | transfer(&mut server, &mut client)? {}
    if client.is_handshaking() || server.is_handshaking() {
        return Err(rustls::Error::General("handshake stalled".into()));
    }
    client
        .handshake_kind()
        .ok_or_else(|| rustls::Error::General("no handshake kind".into()))
}

/// Asserts the kinds of successive handshakes of one client.
pub fn assert_handshakes(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    expected: &[HandshakeKind],
) {
    for (i, kind) in expected.iter().enumerate() {
        assert_eq!(
            handshake(server, client).expect("handshake"),
            *kind,
            "handshake {i}"
        );
    }
}

fn transfer(from: &mut Connection, to: &mut Connection) -> Result<bool, rustls::Error> {
    let io = |e: std::io::Error| rustls::Error::General(e.to_string());
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).map_err(io)?;
    }
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).map_err(io)?;
        to.process_new_packets()?;
    }
    Ok(!bytes.is_empty())
}
