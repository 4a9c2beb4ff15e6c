//! A rustls client over loopback that reports the served leaf.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use async_io::Async;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pki::{Ca, Leaf};
use crate::wait::{timeout, DEADLINE};

/// The client side of a TLS connection over loopback.
pub type ClientStream = futures_rustls::client::TlsStream<Async<TcpStream>>;

/// The *ring* crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting `root`, with a client certificate if given.
///
/// Session resumption is off: a resumed session carries the certificate of
/// the session's first handshake (the server keeps its session store across
/// a certificate rotation), so the peer certificate would not tell which
/// certificate the server serves now. See [`resuming_client_config`].
pub fn client_config(root: &Ca, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut config = resuming_client_config(root, client);
    Arc::make_mut(&mut config).resumption = rustls::client::Resumption::disabled();
    config
}

/// [`client_config`] with rustls's default client session cache.
pub fn resuming_client_config(root: &Ca, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root.der()).expect("root");
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    Arc::new(match client {
        Some(leaf) => builder
            .with_client_auth_cert(leaf.chain_der(), leaf.key_der())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    })
}

/// Connects to `addr` and completes a TLS handshake for `localhost`, with
/// no deadline (for benchmarks; tests use [`connect`]).
pub async fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<ClientStream> {
    let tcp = Async::<TcpStream>::connect(addr).await?;
    tcp.get_ref().set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("name");
    futures_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
}

/// [`tls_connect`] within [`DEADLINE`].
pub async fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<ClientStream> {
    timeout(DEADLINE, tls_connect(addr, config)).await
}

/// The leaf certificate the server presented.
pub fn served_leaf(stream: &ClientStream) -> CertificateDer<'static> {
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// The served leaf's serial in lowercase hex (see [`der_serial_hex`]).
pub fn served_serial(stream: &ClientStream) -> String {
    der_serial_hex(&served_leaf(stream)).expect("a parsable served certificate")
}

/// The serial of a DER certificate, in lowercase hex without leading zero
/// bytes (`00` for zero), as `LeafInfo::serial_hex` and the example
/// servers print it; `None` when it does not parse.
pub fn der_serial_hex(der: &[u8]) -> Option<String> {
    let (_, certificate) = X509Certificate::from_der(der).ok()?;
    let raw = certificate.raw_serial();
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    let hex: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
    Some(if hex.is_empty() { "00".into() } else { hex })
}

/// Writes `message` and reads it back from an echo server, within
/// [`DEADLINE`]. With TLS 1.3 this is what tells a client that the server
/// refused its certificate (the alert comes after the client's handshake).
pub async fn echo_round_trip<IO>(stream: &mut IO, message: &[u8]) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    timeout(DEADLINE, async {
        stream.write_all(message).await?;
        stream.flush().await?;
        let mut back = vec![0; message.len()];
        stream.read_exact(&mut back).await?;
        if back != message {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
        }
        Ok(())
    })
    .await
}

/// A handshake and an echo round trip; returns the served leaf's serial.
pub async fn fetch_serial(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<String> {
    let mut stream = connect(addr, config).await?;
    echo_round_trip(&mut stream, b"ping").await?;
    Ok(served_serial(&stream))
}
