//! Run with: cargo run --release --example demo
//! A server rotates its certificate on disk the way a renewer does, while a
//! client stays connected: the story of one reload, told as it happens.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use futures_rustls::TlsConnector;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;
use smol::{Async, Timer};
use tls_reload::acceptor::{ReloadEvent, ReloadingAcceptor};
use tls_reload::build::LeafInfo;

const INTERVAL: Duration = Duration::from_millis(100);

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    smol::block_on(demo())?;
    println!("\nDone in {:.1} s.", started.elapsed().as_secs_f64());
    Ok(())
}

async fn demo() -> anyhow::Result<()> {
    println!(
        "tls-reload demo: a server renews its certificate on disk while clients stay connected.\n"
    );

    // 1. A CA and two server certificates, as a renewer would produce them.
    let dir = tempfile::tempdir()?;
    let ca = DemoCa::new()?;
    let (first_cert, first_key) = ca.issue("first", 0x1001)?;
    let (second_cert, second_key) = ca.issue("second", 0x2002)?;
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, &first_cert)?;
    std::fs::write(&key_path, &first_key)?;
    println!(
        "1. Made a demo CA and two server certificates for localhost in {}",
        dir.path().display()
    );

    // 2. The server: build once (fails fast on bad files), then let the reloader run.
    let acceptor = ReloadingAcceptor::from_files(&cert_path, &key_path)
        .interval(INTERVAL)
        .build()
        .await?;
    let mut events = acceptor.events();
    smol::spawn(acceptor.reloader()).detach();
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    smol::spawn(serve(listener, acceptor.clone())).detach();
    println!(
        "2. Server listening on {addr} (smol), checking tls.crt and tls.key every {} ms",
        INTERVAL.as_millis()
    );

    // 3. A client that verifies the server against the demo CA.
    let connector = ca.connector()?;
    let (mut client_a, leaf) = connect(&connector, addr).await?;
    println!("3. Client A connected and verified the server against the demo CA. It was served:");
    print_leaf(&leaf);
    println!("   Client A keeps this connection open.");

    // 4. Renew like certbot or a cert-manager copy: the certificate first, the key a moment later.
    println!("4. Renewing: writing the new certificate to tls.crt (the key follows in 500 ms)...");
    write_in_place(&cert_path, &second_cert)?;
    match next_event(&mut events, Duration::from_millis(500), |e| {
        matches!(e, ReloadEvent::Failed { .. })
    })
    .await
    {
        Some(ReloadEvent::Failed { error }) => {
            println!("   reloader: refused the half-renewed files: {error}");
            println!(
                "   (the old certificate keeps serving; nothing is committed, so it will retry)"
            );
        }
        _ => println!("   (the reloader did not look between the two writes this time)"),
    }
    println!("   Writing the new key to tls.key...");
    write_in_place(&key_path, &second_key)?;
    match next_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, ReloadEvent::Applied { .. })
    })
    .await
    {
        Some(ReloadEvent::Applied {
            generation, leaf, ..
        }) => println!(
            "   reloader: applied generation {generation}, now serving serial {}",
            leaf.serial_hex()
        ),
        _ => bail!("the reload was not applied within 5 s"),
    }

    // 5. New connections get the new certificate.
    let (mut client_b, leaf) = connect(&connector, addr).await?;
    println!("5. Client B connected and was served:");
    print_leaf(&leaf);
    client_b.close().await?;

    // 6. The old connection was never dropped.
    client_a.write_all(b"still here").await?;
    let mut echoed = [0u8; 10];
    client_a.read_exact(&mut echoed).await?;
    println!(
        "6. Client A, on the connection it opened before the reload, sent \"still here\" and got {:?} back.",
        String::from_utf8_lossy(&echoed)
    );
    client_a.close().await?;

    // 7. What a status page would show.
    let status = acceptor.status();
    println!(
        "7. Status: generation {}, {} reload(s) applied, {} failed",
        status.generation, status.reloads_applied, status.reloads_failed
    );
    if let Some(error) = &status.last_error {
        println!("   last error: {error}");
    }
    println!(
        "   serving serial {} until {}",
        status.leaf.serial_hex(),
        status.leaf.not_after_rfc3339()
    );
    Ok(())
}

/// Accepts TLS connections and echoes each one until EOF.
async fn serve(listener: Async<TcpListener>, acceptor: ReloadingAcceptor) {
    let connections = listener.incoming().map(|tcp| {
        let tcp = tcp?;
        tcp.get_ref().set_nodelay(true)?;
        Ok(tcp)
    });
    let mut incoming = acceptor
        .incoming(Box::pin(connections))
        .peer_addr_with(|tcp| tcp.get_ref().peer_addr().ok());
    while let Some(tls) = incoming.next().await {
        let Ok(tls) = tls else { continue };
        smol::spawn(async move {
            let (mut reader, mut writer) = tls.split();
            let _ = futures::io::copy(&mut reader, &mut writer).await;
            let _ = writer.close().await;
        })
        .detach();
    }
}

async fn connect(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
) -> anyhow::Result<(
    futures_rustls::client::TlsStream<Async<std::net::TcpStream>>,
    LeafInfo,
)> {
    let tcp = Async::<std::net::TcpStream>::connect(addr).await?;
    tcp.get_ref().set_nodelay(true)?;
    let tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("no server certificate")?;
    let leaf = LeafInfo::from_der(der)?;
    Ok((tls, leaf))
}

fn print_leaf(leaf: &LeafInfo) {
    println!("     subject    {}", leaf.subject);
    println!("     serial     {}", leaf.serial_hex());
    println!("     not after  {}", leaf.not_after_rfc3339());
}

/// Waits up to `within` for an event that `wanted` accepts, skipping others.
async fn next_event(
    events: &mut tls_reload::acceptor::Events,
    within: Duration,
    wanted: impl Fn(&ReloadEvent) -> bool,
) -> Option<ReloadEvent> {
    let search = async {
        while let Some(event) = events.next().await {
            if wanted(&event) {
                return Some(event);
            }
        }
        None
    };
    futures::pin_mut!(search);
    match futures::future::select(search, Timer::after(within)).await {
        futures::future::Either::Left((event, _)) => event,
        futures::future::Either::Right(_) => None,
    }
}

/// Rewrites a file in place, as `cp` does.
fn write_in_place(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

struct DemoCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl DemoCa {
    fn new() -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tls-reload demo CA");
        let cert = params.self_signed(&key)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        })
    }

    /// A certificate for localhost with this serial, and its key, in PEM.
    fn issue(&self, name: &str, serial: u64) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.distinguished_name.push(
            DnType::OrganizationName,
            format!("demo, {name} certificate"),
        );
        params.serial_number = Some(SerialNumber::from(serial));
        // Valid for 90 days from a minute ago, like an ACME certificate.
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(90);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn connector(&self) -> anyhow::Result<TlsConnector> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    }
}
