//! Connect overhead: full mTLS handshakes (TLS 1.3, ECDSA P-256, a client
//! certificate required) per second over loopback, a plain futures-rustls
//! `TlsConnector` against `ReloadingConnector` (reloader idle, and
//! checking every 10 ms), both with the same client config (built by
//! `build_client_blocking`, resumption off), in interleaved rounds. Prints
//! a table; ratios are against the plain baseline of the same run.
//!
//! `cargo bench --bench connect_overhead [-- --quick]`

mod common;

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{median, process_cpu, spawn_server};
use futures::future::join_all;
use futures::io::AsyncWriteExt;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use smol::Async;
use tls_reload::acceptor::{ClientMaterials, ClientTemplate, ReloadingConnector};
use tls_reload::build::build_client_blocking;
use tls_reload_testkit::{provider, write_leaf, write_new, Ca};

fn main() -> anyhow::Result<()> {
    let scale = common::start();
    smol::block_on(connect_overhead(scale))
}

async fn connect_overhead(scale: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (servers, clients) = (Ca::new("bench servers"), Ca::new("bench clients"));
    let server_leaf = servers.localhost_leaf();
    let mut client_roots = RootCertStore::empty();
    client_roots.add(clients.der())?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider()).build()?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(server_leaf.chain_der(), server_leaf.key_der())?;
    let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(server));
    let addr = spawn_server(move |tcp| acceptor.accept(tcp))?;

    let (cert, key) = write_leaf(dir.path(), "client", &clients.leaf(0x1001));
    let roots = write_new(dir.path(), "roots.pem", servers.pem());
    let materials = ClientMaterials::new()
        .with_identity(&cert, &key)
        .with_roots(&roots);
    let template = ClientTemplate::new(provider()).configure(|config| {
        config.resumption = Resumption::disabled();
    });
    let plain = futures_rustls::TlsConnector::from(
        build_client_blocking(&materials, &template, None)?
            .config()
            .clone(),
    );
    let idle = ReloadingConnector::builder(materials.clone())
        .template(template.clone())
        .build()
        .await?;
    smol::spawn(idle.reloader()).detach();
    let busy = ReloadingConnector::builder(materials)
        .template(template)
        .interval(Duration::from_millis(10))
        .build()
        .await?;
    smol::spawn(busy.reloader()).detach();

    let name = ServerName::try_from("localhost")?;
    let variants: [(&str, Connector); 3] = [
        ("plain futures-rustls TlsConnector", {
            let name = name.clone();
            Arc::new(move |tcp| Box::pin(plain.connect(name.clone(), tcp)))
        }),
        ("ours, reloader idle (1 s)", {
            let name = name.clone();
            Arc::new(move |tcp| Box::pin(idle.connect(name.clone(), tcp)))
        }),
        ("ours, reloader checking every 10 ms", {
            let name = name.clone();
            Arc::new(move |tcp| Box::pin(busy.connect(name.clone(), tcp)))
        }),
    ];

    let rounds = 10 / scale.min(5) as usize;
    let window = Duration::from_millis(1000 / u64::from(scale));
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut cpu: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        for i in 0..variants.len() {
            let which = (i + round) % variants.len();
            let (rate, per) = connect_rate(addr, &variants[which].1, window).await?;
            rates[which].push(rate);
            cpu[which].push(per.as_secs_f64() * 1e6);
        }
    }
    println!("\nconnect overhead: full mTLS handshakes/s over loopback (TLS 1.3, ECDSA P-256, client certificate), 4 clients, {rounds} interleaved rounds of {} ms", window.as_millis());
    println!("   | client                              | median handshakes/s | vs plain | median of round ratios | CPU us/handshake | vs plain |");
    println!("   |-------------------------------------|--------------------:|---------:|-----------------------:|-----------------:|---------:|");
    let plain = median(rates[0].clone());
    let plain_cpu = median(cpu[0].clone());
    for (i, (name, _)) in variants.iter().enumerate() {
        let rate = median(rates[i].clone());
        let ratios = rates[i].iter().zip(&rates[0]).map(|(r, p)| r / p).collect();
        let per = median(cpu[i].clone());
        println!(
            "   | {name:<35} | {rate:>19.0} | {:>8.3} | {:>22.3} | {per:>16.0} | {:>8.3} |",
            rate / plain,
            median(ratios),
            per / plain_cpu
        );
    }
    println!("   (CPU: this process, client and server together, 10 ms clock ticks; budget: ours >= 0.98x of plain in handshakes/s)");
    Ok(())
}

type Stream = futures_rustls::client::TlsStream<Async<TcpStream>>;
type Connecting = std::pin::Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;
type Connector = Arc<dyn Fn(Async<TcpStream>) -> Connecting + Send + Sync>;

/// Handshakes per second of 4 clients for `window` through `connect`, and
/// this process's CPU time per handshake.
async fn connect_rate(
    addr: SocketAddr,
    connect: &Connector,
    window: Duration,
) -> anyhow::Result<(f64, Duration)> {
    let count = Arc::new(AtomicU64::new(0));
    let cpu = process_cpu();
    let end = Instant::now() + window;
    let clients = (0..4).map(|_| {
        let (count, connect) = (count.clone(), connect.clone());
        async move {
            while Instant::now() < end {
                let tcp = Async::<TcpStream>::connect(addr).await?;
                tcp.get_ref().set_nodelay(true)?;
                let mut tls = connect(tcp).await?;
                count.fetch_add(1, Ordering::Relaxed);
                let _ = tls.close().await;
            }
            anyhow::Ok(())
        }
    });
    for result in join_all(clients).await {
        result?;
    }
    let count = count.load(Ordering::Relaxed);
    let cpu = process_cpu().saturating_sub(cpu) / u32::try_from(count.max(1))?;
    Ok((count as f64 / window.as_secs_f64(), cpu))
}
