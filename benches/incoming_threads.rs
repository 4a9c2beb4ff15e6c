//! `incoming` on many cores: full TLS 1.3 handshakes per second over
//! loopback with `Incoming` driving every handshake in its one task, against
//! `Incoming::spawn_handshakes` on an executor of 1 and of 2 threads, in
//! interleaved rounds. Ratios are against the one-task `Incoming` of the
//! same run.
//!
//! The clients run on 2 threads of their own, 8 connections at a time, and
//! skip verifying the server (no chain or signature check), so that a
//! handshake costs the client less than the server. Twice: with an ECDSA
//! P-256 server key, where the clients still take a third of the CPU, so
//! that on a 2-core machine 2 server threads cannot reach 2x; and with an
//! RSA-4096 one, whose signature costs the server some twenty times the
//! client's share, so that the server's threads bound the rate and 2 of
//! them can come close to 2x. The table also gives the
//! rate per busy server core (handshakes/s over the server threads' CPU
//! seconds per second): flat from 1 to 2 threads, it shows the threads do
//! not serialise on shared state, and the rate follows the cores they get.
//!
//! `cargo bench --bench incoming_threads [-- --quick]`

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{median, process_cpu};
use futures::{AsyncWriteExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use smol::{Async, Executor};
use tls_reload::acceptor::{tcp_connections, ReloadingAcceptor, Template};
use tls_reload::build::Materials;
use tls_reload_testkit::{openssl, openssl_self_signed, provider, tls_connect};

const CLIENTS: usize = 8;

fn main() -> anyhow::Result<()> {
    let scale = common::start();
    let common::Served { dir, materials, .. } = common::served()?;
    // RSA-4096: signing costs the server some twenty times what the
    // unverifying client spends, so the server's threads bound the rate
    // even on 2 cores shared with the clients.
    openssl(dir.path(), &["genrsa", "-out", "rsa.key", "4096"]);
    openssl_self_signed(dir.path(), "rsa.key", "rsa.crt");
    let rsa = Materials::new(dir.path().join("rsa.crt"), dir.path().join("rsa.key"));
    let clients = executor(2, "client");
    let client = unverified_client();
    for (key, materials) in [("ECDSA P-256", materials), ("RSA-4096", rsa)] {
        let acceptor = ReloadingAcceptor::builder(materials)
            .template(Template::new(provider()))
            .build_blocking()?;
        compare(&acceptor, key, &clients, &client, scale)?;
    }
    Ok(())
}

/// Handshakes/s of `incoming` in one task and spawned on 1 and 2 threads,
/// in interleaved rounds.
fn compare(
    acceptor: &ReloadingAcceptor,
    key: &str,
    clients: &Arc<Executor<'static>>,
    client: &Arc<ClientConfig>,
    scale: u32,
) -> anyhow::Result<()> {
    let servers = [
        (
            "incoming, one task (2 executor threads)",
            serve(acceptor, 2, false)?,
        ),
        (
            "spawn_handshakes, 1 executor thread",
            serve(acceptor, 1, true)?,
        ),
        (
            "spawn_handshakes, 2 executor threads",
            serve(acceptor, 2, true)?,
        ),
    ];
    let rounds = 8 / scale.min(4) as usize;
    let window = Duration::from_millis(1500 / u64::from(scale));
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut cpu: [Vec<f64>; 3] = Default::default();
    let mut server_cpu: [Vec<f64>; 3] = Default::default();
    let mut cores: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        for i in 0..servers.len() {
            let which = (i + round) % servers.len();
            let server_before = threads_cpu("server");
            let (rate, per, count) = rate(clients, servers[which].1, client, window)?;
            let server = threads_cpu("server").saturating_sub(server_before);
            rates[which].push(rate);
            cpu[which].push(per.as_secs_f64() * 1e6);
            server_cpu[which].push(server.as_secs_f64() * 1e6 / count.max(1) as f64);
            cores[which].push(server.as_secs_f64() / window.as_secs_f64());
        }
    }
    println!(
        "\nincoming on many cores: full TLS 1.3 handshakes/s over loopback, {CLIENTS} clients on 2 threads of their own, {key}, {rounds} interleaved rounds of {} ms",
        window.as_millis()
    );
    println!("| server | median handshakes/s | median of round ratios | server CPU µs/handshake | server cores busy | handshakes/s per busy server core | process CPU µs/handshake |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, (name, _)) in servers.iter().enumerate() {
        let ratios = rates[i].iter().zip(&rates[0]).map(|(r, p)| r / p).collect();
        let per_core = rates[i]
            .iter()
            .zip(&cores[i])
            .map(|(rate, cores)| rate / cores.max(0.01))
            .collect();
        println!(
            "| {name} | {:.0} | {:.2}x | {:.0} | {:.2} | {:.0} | {:.0} |",
            median(rates[i].clone()),
            median(ratios),
            median(server_cpu[i].clone()),
            median(cores[i].clone()),
            median(per_core),
            median(cpu[i].clone())
        );
    }
    println!("(server CPU: the server executors' threads, from /proc, 10 ms ticks; the machine is shared with other work. Handshakes per busy server core staying flat from 1 to 2 threads means the threads do not wait for each other: the rate then follows the cores the server gets)");
    Ok(())
}

/// An executor run by `threads` threads of its own, named `name`.
fn executor(threads: usize, name: &str) -> Arc<Executor<'static>> {
    let executor = Arc::new(Executor::new());
    for _ in 0..threads {
        let executor = executor.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || smol::block_on(executor.run(futures::future::pending::<()>())))
            .expect("thread");
    }
    executor
}

/// User plus system CPU time of this process's threads named `name`, from
/// /proc (Linux).
fn threads_cpu(name: &str) -> Duration {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with(&format!("({name}")) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(11) + field(12);
    }
    Duration::from_millis(ticks * 10)
}

/// A server on its own executor of `threads` threads: `incoming`, with
/// its handshakes spawned on that executor if `spawned`.
fn serve(
    acceptor: &ReloadingAcceptor,
    threads: usize,
    spawned: bool,
) -> anyhow::Result<std::net::SocketAddr> {
    let executor = executor(threads, "server");
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    let acceptor = acceptor.clone();
    let tasks = executor.clone();
    executor
        .spawn(async move {
            let mut incoming = acceptor.incoming(tcp_connections(&listener));
            if spawned {
                let tasks = tasks.clone();
                incoming = incoming.spawn_handshakes(move |task| tasks.spawn(task).detach());
            }
            while let Some(tls) = incoming.next().await {
                if let Ok(mut tls) = tls {
                    tasks
                        .spawn(async move {
                            let _ = tls.close().await;
                        })
                        .detach();
                }
            }
        })
        .detach();
    Ok(addr)
}

/// Handshakes per second of the clients against `addr` for `window`, and
/// this process's CPU time per handshake.
fn rate(
    clients: &Arc<Executor<'static>>,
    addr: std::net::SocketAddr,
    config: &Arc<ClientConfig>,
    window: Duration,
) -> anyhow::Result<(f64, Duration, u64)> {
    let count = Arc::new(AtomicU64::new(0));
    let cpu = process_cpu();
    let end = Instant::now() + window;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (count, config) = (count.clone(), config.clone());
            clients.spawn(async move {
                while Instant::now() < end {
                    let mut tls = tls_connect(addr, &config).await?;
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = tls.close().await;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        smol::block_on(task)?;
    }
    let count = count.load(Ordering::Relaxed);
    let cpu = process_cpu().saturating_sub(cpu) / u32::try_from(count.max(1))?;
    Ok((count as f64 / window.as_secs_f64(), cpu, count))
}

/// A client that takes any server certificate and signature: benchmark
/// only, so the clients cost little next to the server.
fn unverified_client() -> Arc<ClientConfig> {
    let provider = provider();
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified(schemes)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

#[derive(Debug)]
struct Unverified(Vec<SignatureScheme>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}
