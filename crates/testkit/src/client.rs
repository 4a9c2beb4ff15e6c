//! A rustls client over loopback that reports the served leaf.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use async_io::Async;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ServerConnection;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
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

/// A client config trusting `root`, without resumption, whose handshakes
/// offer only `schemes` as the signature schemes it verifies, when given
/// (an RSA-only or an ECDSA-only client, say).
pub fn sni_client_config(root: &Ca, schemes: Option<&[SignatureScheme]>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root.der()).expect("root");
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .expect("verifier");
    let verifier = OnlySchemes {
        schemes: schemes.map_or_else(|| webpki.supported_verify_schemes(), <[_]>::to_vec),
        inner: webpki,
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The webpki verifier, offering fewer signature schemes.
#[derive(Debug)]
struct OnlySchemes {
    inner: Arc<WebPkiServerVerifier>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for OnlySchemes {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Connects to `addr` and completes a TLS handshake verifying the server
/// as `name`, sending `name` as SNI when `sni` is true and no SNI
/// otherwise, within [`DEADLINE`].
pub async fn tls_connect_to(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
    sni: bool,
) -> io::Result<ClientStream> {
    let mut config = config.clone();
    if !sni {
        Arc::make_mut(&mut config).enable_sni = false;
    }
    let name = ServerName::try_from(name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    timeout(DEADLINE, async {
        let tcp = Async::<TcpStream>::connect(addr).await?;
        tcp.get_ref().set_nodelay(true)?;
        futures_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    })
    .await
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

/// One full handshake between a client asking for `name` and a server,
/// over memory (no socket, no executor): what benchmarks count.
#[inline(never)]
pub fn handshake_in_memory(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>, name: &str) {
    let name = ServerName::try_from(name.to_owned()).expect("name");
    let mut client = ClientConnection::new(client.clone(), name).expect("client");
    let mut server = ServerConnection::new(server.clone()).expect("server");
    let mut buf = Vec::with_capacity(8192);
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        server.read_tls(&mut &buf[..]).expect("server read");
        server.process_new_packets().expect("server handshake");
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        client.read_tls(&mut &buf[..]).expect("client read");
        client.process_new_packets().expect("client handshake");
    }
}
