//! What the proxy's benchmark examples (`vs_stunnel`, `idle_memory`) share:
//! the certificate they serve and the TLS client they measure with.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A self-signed ECDSA P-256 certificate for `localhost`, written as PEM,
/// and both in one file for HAProxy.
pub(crate) fn write_certificate(
    dir: &Path,
) -> anyhow::Result<(PathBuf, PathBuf, CertificateDer<'static>)> {
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".into()])?.self_signed(&key)?;
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    std::fs::write(
        dir.join("haproxy.pem"),
        format!("{}{}", cert.pem(), key.serialize_pem()),
    )?;
    Ok((cert_path, key_path, cert.der().clone()))
}

/// TLS 1.3 with TLS_AES_128_GCM_SHA256 only, trusting `root`, without
/// resumption (every connection is a full handshake).
pub(crate) fn client_config(root: CertificateDer<'static>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let mut roots = RootCertStore::empty();
    roots.add(root)?;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Writes `stunnel.conf` in `dir` for stunnel4 on `addr` in front of
/// `backend` (TLS 1.3, TLS_AES_128_GCM_SHA256 only) and returns its path.
pub(crate) fn stunnel_config(
    dir: &Path,
    addr: SocketAddr,
    backend: SocketAddr,
    cert: &Path,
    key: &Path,
) -> std::io::Result<PathBuf> {
    let config = dir.join("stunnel.conf");
    std::fs::write(
        &config,
        format!(
            "foreground = yes\npid =\ndebug = err\noutput = {}\n\n[bench]\naccept = {addr}\n\
             connect = {backend}\ncert = {}\nkey = {}\nsslVersionMin = TLSv1.3\n\
             ciphersuites = TLS_AES_128_GCM_SHA256\n",
            dir.join("stunnel.log").display(),
            cert.display(),
            key.display(),
        ),
    )?;
    Ok(config)
}

/// Writes `haproxy.cfg` in `dir` for HAProxy on `addr` in front of
/// `backend` in TCP mode with `threads` threads and at most `maxconn`
/// connections, serving `haproxy.pem` (TLS 1.3, TLS_AES_128_GCM_SHA256
/// only), and returns its path.
pub(crate) fn haproxy_config(
    dir: &Path,
    addr: SocketAddr,
    backend: SocketAddr,
    threads: usize,
    maxconn: usize,
) -> std::io::Result<PathBuf> {
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn {maxconn}\n  nbthread {threads}\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
             frontend bench\n  bind {addr} ssl crt {} ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256\n  default_backend echo\n\
             backend echo\n  server echo {backend}\n",
            dir.join("haproxy.pem").display(),
        ),
    )?;
    Ok(config)
}

pub(crate) type Tls = StreamOwned<ClientConnection, TcpStream>;

pub(crate) fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> anyhow::Result<Tls> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = ClientConnection::new(config.clone(), ServerName::try_from("localhost")?)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}
