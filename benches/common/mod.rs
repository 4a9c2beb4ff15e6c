//! What the end-to-end benchmarks (`accept_overhead`, `reload_latency`,
//! `no_stall`, `idle_cost`) share: the `--quick` flag, a loopback server
//! that does the handshake and closes, client loops that time handshakes,
//! statistics, and this process's CPU time. Certificates, files and the
//! client come from `tls-reload-testkit`.
#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::io::AsyncWriteExt;
use rustls::ClientConfig;
use smol::Async;
use tempfile::TempDir;
use tls_reload::build::Materials;
use tls_reload_testkit::{client_config, tls_connect, write_pair, Ca};

/// How much shorter a run is: 4 with `--quick` (`cargo bench --bench NAME
/// -- --quick`), else 1. Prints the machine line first.
pub(crate) fn start() -> u32 {
    println!("machine: {} cores; {}", cores(), cpu_model());
    if std::env::args().any(|a| a == "--quick") {
        4
    } else {
        1
    }
}

/// A pair for `localhost` from a fresh CA in a temp dir, and a client that
/// trusts the CA and never resumes (every handshake is full).
pub(crate) struct Served {
    /// Holds the files; removed on drop.
    pub(crate) dir: TempDir,
    pub(crate) materials: Materials,
    pub(crate) client: Arc<ClientConfig>,
}

pub(crate) fn served() -> anyhow::Result<Served> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("bench CA");
    let materials = write_pair(dir.path(), &ca.leaf(0x1001));
    let client = client_config(&ca, None);
    Ok(Served {
        dir,
        materials,
        client,
    })
}

/// Accepts on a fresh loopback port; each connection does the handshake and
/// closes. The same code serves every variant.
pub(crate) fn spawn_server<F, Fut, S>(accept: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(Async<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<S>> + Send + 'static,
    S: futures::AsyncWrite + Unpin + Send + 'static,
{
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    let accept = Arc::new(accept);
    smol::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.get_ref().set_nodelay(true);
            let accept = accept.clone();
            smol::spawn(async move {
                if let Ok(mut tls) = accept(tcp).await {
                    let _ = tls.close().await;
                }
            })
            .detach();
        }
    })
    .detach();
    Ok(addr)
}

/// Handshakes per second of 4 clients for `window`, and this process's CPU
/// time (client and server together) per handshake.
pub(crate) async fn handshake_rate(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    window: Duration,
) -> anyhow::Result<(f64, Duration)> {
    let count = Arc::new(AtomicU64::new(0));
    let cpu = process_cpu();
    let end = Instant::now() + window;
    let clients = (0..4).map(|_| {
        let count = count.clone();
        async move {
            while Instant::now() < end {
                let mut tls = tls_connect(addr, client).await?;
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

/// One client's sequential handshakes for `window`, each one's duration.
pub(crate) async fn steady_latencies(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    window: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let end = Instant::now() + window;
    let mut latencies = Vec::new();
    while Instant::now() < end {
        let start = Instant::now();
        let mut tls = tls_connect(addr, client).await?;
        latencies.push(start.elapsed());
        let _ = tls.close().await;
    }
    Ok(latencies)
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The `p`th percentile (nearest rank) of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// User plus system CPU time of this process, from /proc (Linux).
pub(crate) fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 of stat (utime, stime) are the 12th and 13th after the ')'.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
