//! Run with: cargo run --release --example connect_instructions [-- KIND N]
//! Counts the instructions a connect costs, with callgrind: plain
//! futures-rustls `TlsConnector` against `ReloadingConnector::connect`, with
//! the same client config (an identity, resumption off).
//!
//! Without arguments it runs itself under `valgrind --tool=callgrind` for
//! each KIND and two values of N, and prints two tables: the difference of
//! two runs' instruction counts divided by the difference of their N is the
//! instructions per connect, whatever the start-up cost. With `KIND N` it is
//! one such run. KIND:
//!
//! - `plain`, `ours`: N connect starts over a stream whose peer never
//!   speaks, each polled once (the client builds and writes its
//!   ClientHello), then dropped;
//! - `plain-handshake`, `ours-handshake`: N full mTLS handshakes, one after
//!   the other, over loopback against a futures-rustls server in the same
//!   process that requires a client certificate (TLS 1.3, ECDSA P-256); the
//!   count is client and server together, the server's share the same for
//!   both. No reloader runs: the connect path alone.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use futures::future::Either;
use futures::AsyncWriteExt;
use rustls::pki_types::ServerName;
use smol::Async;
use tls_reload::acceptor::{ClientMaterials, ClientTemplate, ClientTlsStream, ReloadingConnector};
use tls_reload_testkit::{poll_once, print_instruction_table, write_leaf, write_new, Ca, Silent};

const KINDS: [&str; 2] = ["plain", "ours"];
const RUNS: [u64; 2] = [300, 900];
const HANDSHAKE_KINDS: [&str; 2] = ["plain-handshake", "ours-handshake"];
const HANDSHAKE_RUNS: [u64; 2] = [50, 150];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(kind) = args.next() else {
        return table();
    };
    let n: usize = args.next().map_or(Ok(300), |n| n.parse())?;
    let dir = tempfile::tempdir()?;
    let (servers, clients) = (Ca::new("servers"), Ca::new("clients"));
    let (cert, key) = write_leaf(dir.path(), "client", &clients.leaf(0x1001));
    let roots = write_new(dir.path(), "roots.pem", servers.pem());
    let materials = ClientMaterials::new()
        .with_identity(&cert, &key)
        .with_roots(&roots);
    let template = ClientTemplate::new(Arc::new(rustls::crypto::ring::default_provider()))
        .configure(|config| config.resumption = rustls::client::Resumption::disabled());
    let ours = ReloadingConnector::builder(materials)
        .template(template)
        .build_blocking()?;
    let plain = futures_rustls::TlsConnector::from(ours.config());
    let name = ServerName::try_from("localhost")?;
    match kind.as_str() {
        "plain-handshake" | "ours-handshake" => {
            let server = mtls_server(&servers, &clients)?;
            return smol::block_on(handshakes(n, server, |tcp| match kind.as_str() {
                "plain-handshake" => Either::Left(plain.connect(name.clone(), tcp)),
                _ => Either::Right(ours.connect(name.clone(), tcp)),
            }));
        }
        "plain" | "ours" => {}
        other => {
            anyhow::bail!("KIND is plain, ours, plain-handshake or ours-handshake, not {other:?}")
        }
    }
    for _ in 0..n {
        match kind.as_str() {
            "plain" => poll_once(plain.connect(name.clone(), Silent)),
            _ => poll_once(ours.connect(name.clone(), Silent)),
        }
    }
    Ok(())
}

/// A futures-rustls server on a loopback port, requiring a client
/// certificate of `clients`; it reports each handshake it completes.
fn mtls_server(
    servers: &Ca,
    clients: &Ca,
) -> anyhow::Result<(SocketAddr, async_channel::Receiver<()>)> {
    let leaf = servers.localhost_leaf();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(clients.der())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(leaf.chain_der(), leaf.key_der())?;
    let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    let (done_tx, done_rx) = async_channel::unbounded();
    smol::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if acceptor.accept(tcp).await.is_ok() {
                let _ = done_tx.send(()).await;
            }
        }
    })
    .detach();
    Ok((addr, done_rx))
}

/// `n` full handshakes through `connect`, one after the other, each
/// waited for on the server's side too.
async fn handshakes<F>(
    n: usize,
    (addr, done): (SocketAddr, async_channel::Receiver<()>),
    connect: impl Fn(Async<TcpStream>) -> F,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = std::io::Result<ClientTlsStream<Async<TcpStream>>>>,
{
    for _ in 0..n {
        let tcp = Async::<TcpStream>::connect(addr).await?;
        tcp.get_ref().set_nodelay(true)?;
        let mut tls = connect(tcp).await?;
        tls.close().await?;
        done.recv().await?;
    }
    Ok(())
}

/// Runs each kind under callgrind twice and prints instructions per
/// connect start, then per full handshake.
fn table() -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    print_instruction_table("connect start", &me, &KINDS, RUNS)?;
    println!();
    print_instruction_table(
        "full mTLS handshake (client + server)",
        &me,
        &HANDSHAKE_KINDS,
        HANDSHAKE_RUNS,
    )
}
