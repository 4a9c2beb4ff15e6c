//! The reloading connector against a plain rustls server that requires
//! client certificates, over loopback: the identity and the roots follow
//! the files, a broken renewal keeps the last good config, and resumption
//! never carries an old identity.

mod common;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;
use futures::future::RemoteHandle;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::StreamExt;
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::{HandshakeKind, RootCertStore, ServerConfig};
use tls_reload_acceptor::{
    CertKind, ClientMaterials, ClientTemplate, ClientTlsStream, ConnectorEvent, ExpiryWindow,
    ReloadingConnector, Resumption,
};

use common::*;

/// A rustls server that requires a client certificate signed by
/// `client_ca`, writes the serial of the certificate it was shown (in
/// hex, then a newline), then echoes.
struct MtlsServer {
    addr: SocketAddr,
    _accept_loop: RemoteHandle<()>,
}

fn mtls_server(leaf: &Leaf, client_ca: &Ca) -> MtlsServer {
    let mut roots = RootCertStore::empty();
    roots.add(client_ca.der()).expect("client CA");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .expect("verifier");
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(leaf.chain_der(), leaf.key_der())
        .expect("server config");
    let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(config));
    let (addr, mut connections) = listen::<Smol>().expect("listen");
    let accept_loop = async move {
        while let Some(tcp) = connections.next().await {
            let Ok(tcp) = tcp else { continue };
            let acceptor = acceptor.clone();
            smol::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let shown = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|der| der_serial_hex(der))
                    .unwrap_or_default();
                if tls
                    .write_all(format!("{shown}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tls.flush().await;
                let (reader, mut writer) = futures::io::AsyncReadExt::split(tls);
                let _ = futures::io::copy(reader, &mut writer).await;
            })
            .detach();
        }
    };
    MtlsServer {
        addr,
        _accept_loop: spawn::<Smol, ()>(accept_loop),
    }
}

/// Connects through `connector` and reads the serial the server was
/// shown; an error if the handshake fails or the server refuses the
/// client's certificate (TLS 1.3 says so after the client's handshake).
async fn shown_serial(
    connector: &ReloadingConnector,
    addr: SocketAddr,
) -> io::Result<(String, ClientTlsStream<Async<TcpStream>>)> {
    timeout(DEADLINE, async {
        let tcp = Async::<TcpStream>::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await?;
        let line = read_line(&mut tls).await?;
        Ok((line, tls))
    })
    .await
}

async fn read_line<IO: AsyncRead + Unpin>(io: &mut IO) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0];
    loop {
        if io.read(&mut byte).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            return String::from_utf8(line).map_err(|_| io::ErrorKind::InvalidData.into());
        }
        line.push(byte[0]);
    }
}

async fn ping<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO) -> io::Result<()> {
    echo_round_trip(io, b"ping").await
}

/// Client files in a temp dir: an identity and a roots file.
struct ClientFiles {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    roots: PathBuf,
}

impl ClientFiles {
    fn new(identity: &Leaf, roots: &[&Ca]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = write_leaf(dir.path(), "client", identity);
        let roots = write_new(dir.path(), "roots.pem", pems(roots));
        Self {
            _dir: dir,
            cert,
            key,
            roots,
        }
    }

    fn materials(&self) -> ClientMaterials {
        ClientMaterials::new()
            .with_identity(&self.cert, &self.key)
            .with_roots(&self.roots)
    }

    /// Replaces the identity as a renewer does: the key, then the
    /// certificate, each atomically.
    fn rotate(&self, identity: &Leaf) {
        write_atomic(&self.key, identity.key_pem());
        write_atomic(&self.cert, identity.cert_pem());
    }
}

fn pems(cas: &[&Ca]) -> String {
    cas.iter().map(|ca| ca.pem()).collect()
}

fn template() -> ClientTemplate {
    ClientTemplate::new(provider())
}

async fn connector(materials: ClientMaterials) -> anyhow::Result<ReloadingConnector> {
    let connector = ReloadingConnector::builder(materials)
        .template(template())
        .interval(Duration::from_millis(20))
        .build()
        .await?;
    smol::spawn(connector.reloader()).detach();
    Ok(connector)
}

async fn wait_for_generation(connector: &ReloadingConnector, generation: u64) -> bool {
    wait_until(DEADLINE, || async {
        connector.status().generation >= generation
    })
    .await
}

#[test]
fn a_rotated_client_certificate_is_presented_on_the_next_connection() -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async {
        let (servers, clients) = (Ca::new("servers"), Ca::new("clients"));
        let server = mtls_server(&servers.localhost_leaf(), &clients);
        let (first, second) = (clients.leaf(0x1001), clients.leaf(0x1002));
        let files = ClientFiles::new(&first, &[&servers]);
        let connector = connector(files.materials()).await?;
        let mut events = connector.events();

        let (shown, mut open) = shown_serial(&connector, server.addr).await?;
        assert_eq!(shown, "1001");
        files.rotate(&second);
        assert!(
            wait_for_generation(&connector, 2).await,
            "the new identity applied"
        );
        let (shown, _) = shown_serial(&connector, server.addr).await?;
        assert_eq!(
            shown, "1002",
            "the next connection presents the new identity"
        );
        ping(&mut open).await?;
        assert_eq!(
            connector.status().identity.map(|leaf| leaf.serial_hex()),
            Some("1002".into())
        );
        let shown = format!(
            "{connector:?} {:?} {:?}",
            connector.current(),
            connector.status()
        );
        assert_no_pem_bytes("the connector's Debug", &shown, &second.key_pem());

        let applied = timeout(DEADLINE, async {
            while let Some(event) = events.next().await {
                if let ConnectorEvent::Applied { identity, .. } = &event {
                    return Ok(identity.clone());
                }
            }
            Err(io::ErrorKind::UnexpectedEof.into())
        })
        .await?;
        assert_eq!(applied.map(|leaf| leaf.serial_hex()), Some("1002".into()));
        Ok(())
    })
}

#[test]
fn an_untrusted_client_certificate_fails_new_connections_while_open_ones_go_on(
) -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async {
        let (servers, clients, strangers) =
            (Ca::new("servers"), Ca::new("clients"), Ca::new("strangers"));
        let server = mtls_server(&servers.localhost_leaf(), &clients);
        let files = ClientFiles::new(&clients.leaf(0x1001), &[&servers]);
        let connector = connector(files.materials()).await?;

        let (_, mut open) = shown_serial(&connector, server.addr).await?;
        files.rotate(&strangers.leaf(0x2001));
        assert!(wait_for_generation(&connector, 2).await);
        let refused = shown_serial(&connector, server.addr).await;
        assert!(
            refused.is_err(),
            "a certificate the server does not trust is refused"
        );
        ping(&mut open).await?;
        Ok(())
    })
}

#[test]
fn a_broken_identity_file_keeps_the_last_good_identity() -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async {
        let (servers, clients) = (Ca::new("servers"), Ca::new("clients"));
        let server = mtls_server(&servers.localhost_leaf(), &clients);
        let good = clients.leaf(0x1001);
        let files = ClientFiles::new(&good, &[&servers]);
        let connector = connector(files.materials()).await?;

        write_atomic(&files.cert, "-----BEGIN CERTIFICATE-----\nbroken\n");
        let failed = wait_until(DEADLINE, || async {
            connector.status().reloads_failed >= 1
        })
        .await;
        assert!(failed, "the broken file is reported");
        let status = connector.status();
        let message = status.last_error.expect("an error");
        assert!(
            message.contains(&files.cert.display().to_string()),
            "{message}"
        );
        assert_eq!(status.generation, 1);
        let (shown, _) = shown_serial(&connector, server.addr).await?;
        assert_eq!(shown, "1001", "the last good identity is still presented");

        // A key that does not match is refused the same way, naming the key.
        write_atomic(&files.cert, good.cert_pem());
        write_atomic(&files.key, clients.leaf(0x1002).key_pem());
        let error = connector.reload_now().await.expect_err("mismatched key");
        assert!(
            error.to_string().contains("key does not match certificate"),
            "{error}"
        );
        let (shown, _) = shown_serial(&connector, server.addr).await?;
        assert_eq!(shown, "1001");
        Ok(())
    })
}

#[test]
fn rotating_the_roots_makes_a_server_with_a_new_chain_acceptable() -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async {
        let (old_ca, new_ca, clients) = (Ca::new("old"), Ca::new("new"), Ca::new("clients"));
        let old_server = mtls_server(&old_ca.localhost_leaf(), &clients);
        let new_server = mtls_server(&new_ca.localhost_leaf(), &clients);
        let files = ClientFiles::new(&clients.leaf(0x1001), &[&old_ca]);
        let connector = connector(files.materials()).await?;

        assert!(shown_serial(&connector, old_server.addr).await.is_ok());
        assert!(
            shown_serial(&connector, new_server.addr).await.is_err(),
            "a server of an untrusted CA is refused"
        );

        // A broken roots file fails closed: the old trust stays, neither
        // widened nor dropped.
        write_atomic(&files.roots, "not a bundle");
        assert!(
            wait_until(DEADLINE, || async {
                connector.status().reloads_failed >= 1
            })
            .await
        );
        assert!(shown_serial(&connector, old_server.addr).await.is_ok());
        assert!(shown_serial(&connector, new_server.addr).await.is_err());
        let message = connector.status().last_error.expect("an error");
        assert!(message.contains("roots.pem"), "{message}");

        write_atomic(&files.roots, pems(&[&old_ca, &new_ca]));
        assert!(wait_for_generation(&connector, 2).await);
        assert_eq!(connector.status().roots.len(), 2);
        assert!(shown_serial(&connector, new_server.addr).await.is_ok());
        assert!(shown_serial(&connector, old_server.addr).await.is_ok());

        write_atomic(&files.roots, new_ca.pem());
        assert!(wait_for_generation(&connector, 3).await);
        assert!(
            shown_serial(&connector, old_server.addr).await.is_err(),
            "a root taken out is no longer trusted"
        );
        Ok(())
    })
}

#[test]
fn resumption_does_not_carry_an_old_identity() -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async {
        let (servers, clients) = (Ca::new("servers"), Ca::new("clients"));
        let server = mtls_server(&servers.localhost_leaf(), &clients);
        let files = ClientFiles::new(&clients.leaf(0x1001), &[&servers]);
        let connector = connector(files.materials()).await?;
        let kind = |tls: &ClientTlsStream<Async<TcpStream>>| tls.get_ref().1.handshake_kind();

        let (shown, first) = shown_serial(&connector, server.addr).await?;
        assert_eq!(
            (shown.as_str(), kind(&first)),
            ("1001", Some(HandshakeKind::Full))
        );
        let (shown, again) = shown_serial(&connector, server.addr).await?;
        assert_eq!(
            (shown.as_str(), kind(&again)),
            ("1001", Some(HandshakeKind::Resumed)),
            "without a change, sessions resume"
        );

        // The roots file rewritten with the same roots: nothing that
        // sessions depend on changed, so they still resume.
        write_atomic(&files.roots, format!("{}\n", servers.pem()));
        let reloaded = connector.reload_now().await?;
        assert_eq!(reloaded.resumption, Resumption::Kept);
        let (_, kept) = shown_serial(&connector, server.addr).await?;
        assert_eq!(kind(&kept), Some(HandshakeKind::Resumed));

        files.rotate(&clients.leaf(0x1002));
        let reloaded = connector.reload_now().await?;
        assert_eq!(reloaded.resumption, Resumption::Fresh);
        let (shown, after) = shown_serial(&connector, server.addr).await?;
        assert_eq!(
            (shown.as_str(), kind(&after)),
            ("1002", Some(HandshakeKind::Full)),
            "a new identity makes a full handshake"
        );
        Ok(())
    })
}

#[test]
fn no_roots_at_all_is_refused_and_a_caller_store_is_the_fallback() -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async {
        let (servers, clients) = (Ca::new("servers"), Ca::new("clients"));
        let server = mtls_server(&servers.localhost_leaf(), &clients);
        let dir = tempfile::tempdir()?;
        let (cert, key) = write_leaf(dir.path(), "client", &clients.leaf(0x1001));
        let materials = ClientMaterials::new().with_identity(&cert, &key);

        let refused = ReloadingConnector::builder(materials.clone())
            .template(template())
            .build()
            .await;
        let error = refused.expect_err("no roots");
        assert!(error.to_string().contains("no trusted roots"), "{error}");

        let mut store = RootCertStore::empty();
        store.add(servers.der())?;
        let connector = ReloadingConnector::builder(materials)
            .template(template().root_store(store))
            .build()
            .await?;
        let (shown, _) = shown_serial(&connector, server.addr).await?;
        assert_eq!(shown, "1001");
        assert!(connector.status().roots.is_empty());
        Ok(())
    })
}

#[test]
fn a_connector_without_identity_reloads_its_roots() -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async {
        let servers = Ca::new("servers");
        let dir = tempfile::tempdir()?;
        let roots = write_new(dir.path(), "roots.pem", servers.pem());
        let connector = connector(ClientMaterials::new().with_roots(&roots)).await?;
        assert!(connector.status().identity.is_none());
        let applied = connector.reload_now().await?;
        assert!(applied.identity.is_none());
        let debug = format!("{connector:?} {:?}", connector.current());
        assert!(debug.contains("roots.pem"), "{debug}");
        Ok(())
    })
}

/// A reload error for a missing file names it.
#[test]
fn errors_name_the_file() -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("nowhere.pem");
        let error = ReloadingConnector::builder(ClientMaterials::new().with_roots(&missing))
            .template(template())
            .build()
            .await
            .expect_err("missing roots");
        assert!(error.to_string().contains("nowhere.pem"), "{error}");
        Ok(())
    })
}

#[test]
fn set_materials_switches_identity_or_keeps_the_old_one() -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async {
        let (servers, clients) = (Ca::new("servers"), Ca::new("clients"));
        let server = mtls_server(&servers.localhost_leaf(), &clients);
        let files = ClientFiles::new(&clients.leaf(0x1001), &[&servers]);
        let connector = connector(files.materials()).await?;

        let other = ClientFiles::new(&clients.leaf(0x1002), &[&servers]);
        let switched = connector.set_materials(other.materials()).await?;
        assert_eq!(switched.generation, 2);
        assert_eq!(connector.status().materials, other.materials());
        let (shown, _) = shown_serial(&connector, server.addr).await?;
        assert_eq!(shown, "1002");

        // A switch to files that do not build changes nothing.
        let broken = ClientMaterials::new()
            .with_identity(&other.cert, &files.key)
            .with_roots(&other.roots);
        let error = connector.set_materials(broken).await.expect_err("mismatch");
        assert!(
            error.to_string().contains("key does not match certificate"),
            "{error}"
        );
        assert_eq!(connector.status().materials, other.materials());
        let (shown, _) = shown_serial(&connector, server.addr).await?;
        assert_eq!(shown, "1002");

        // The reloader follows the new paths.
        other.rotate(&clients.leaf(0x1003));
        assert!(wait_for_generation(&connector, 3).await);
        let (shown, _) = shown_serial(&connector, server.addr).await?;
        assert_eq!(shown, "1003");
        Ok(())
    })
}

#[test]
fn the_identity_and_the_roots_are_watched_for_expiry() -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async {
        let (servers, clients) = (Ca::new("servers"), Ca::new("clients"));
        let identity = clients.leaf(0x1001);
        let files = ClientFiles::new(&identity, &[&servers]);
        // rcgen's certificates run to the year 4096: a window of 5,000 years
        // holds both from the start.
        let connector = ReloadingConnector::builder(files.materials())
            .template(template())
            .interval(Duration::from_millis(20))
            .expiry_warning(ExpiryWindow::Before(Duration::from_secs(
                5_000 * 365 * 86_400,
            )))
            .build()
            .await?;
        let mut events = connector.events();
        smol::spawn(connector.reloader()).detach();
        let mut warned = Vec::new();
        timeout(DEADLINE, async {
            while warned.len() < 2 {
                match events.next().await {
                    Some(ConnectorEvent::ExpiresSoon { kind, certificate }) => warned.push((
                        kind,
                        certificate.serial_hex(),
                        event_line(kind, &certificate),
                    )),
                    Some(_) => {}
                    None => return Err(io::ErrorKind::UnexpectedEof.into()),
                }
            }
            Ok(())
        })
        .await?;
        warned.sort_by_key(|(kind, ..)| *kind == CertKind::Root);
        assert_eq!(warned[0].0, CertKind::Leaf);
        assert_eq!(warned[0].1, "1001");
        assert_eq!(warned[1].0, CertKind::Root);
        assert!(
            warned[1]
                .2
                .starts_with("root CA certificate expires soon: serial="),
            "{}",
            warned[1].2
        );
        Ok(())
    })
}

fn event_line(kind: CertKind, certificate: &tls_reload_acceptor::LeafInfo) -> String {
    ConnectorEvent::ExpiresSoon {
        kind,
        certificate: certificate.clone(),
    }
    .to_string()
}

#[test]
fn a_peer_that_never_answers_times_the_handshake_out() -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async {
        let servers = Ca::new("servers");
        let files = ClientFiles::new(&Ca::new("clients").leaf(0x1001), &[&servers]);
        // Takes TCP connections and never says a word.
        let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0))?;
        let addr = listener.get_ref().local_addr()?;
        let _silent = smol::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let name = ServerName::try_from("localhost")?;

        let timed = ReloadingConnector::builder(files.materials())
            .template(template())
            .handshake_timeout(Duration::from_millis(300))
            .build()
            .await?;
        let started = std::time::Instant::now();
        let tcp = Async::<TcpStream>::connect(addr).await?;
        let error = timeout(DEADLINE, timed.connect(name.clone(), tcp))
            .await
            .expect_err("the peer never answers");
        let waited = started.elapsed();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert_eq!(
            error.to_string(),
            "TLS handshake timed out",
            "the connector's own"
        );
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        // The timeout plus a grain (10 ms here) and the clock's tick, with
        // room for a busy machine.
        assert!(waited < Duration::from_millis(300 + 1_500), "{waited:?}");

        // Without a timeout it waits on.
        let untimed = ReloadingConnector::builder(files.materials())
            .template(template())
            .handshake_timeout(None)
            .build()
            .await?;
        let tcp = Async::<TcpStream>::connect(addr).await?;
        let still = timeout(Duration::from_millis(600), untimed.connect(name, tcp))
            .await
            .expect_err("still waiting");
        assert_eq!(
            still.to_string(),
            "timed out",
            "the test's own timer ended it, not the connector"
        );
        Ok(())
    })
}
