//! Run with: cargo run --release --example bench_reload [-- --quick] [--part 1|2|3|4]
//! Measures what reloading costs a server: accept overhead against plain
//! futures-rustls, reload latency, handshake latency while a big reload
//! builds, and the reloader's idle CPU. Prints a table; ratios are against a
//! baseline measured in the same run, since the machine may be noisy.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::join_all;
use futures::io::AsyncWriteExt;
use futures::StreamExt;
use futures_rustls::{TlsAcceptor, TlsConnector};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use smol::{Async, Timer};
use tls_reload::acceptor::{ClientAuth, ReloadEvent, ReloadingAcceptor, Template};
use tls_reload::detect::{Composite, Detector, Strategy, TestDetector};

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 4 } else { 1 };
    smol::block_on(run(scale))
}

async fn run(scale: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new()?;
    let first = ca.issue(1)?;
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    first.write(&cert, &key)?;
    let connector = ca.connector()?;
    println!("machine: {} cores; {}", cores(), cpu_model());

    // `--part N` runs one part only.
    let only: Option<u32> = std::env::args()
        .skip_while(|a| a != "--part")
        .nth(1)
        .and_then(|n| n.parse().ok());
    let run = |part: u32| only.is_none_or(|only| only == part);
    if run(1) {
        accept_overhead(&cert, &key, &connector, scale).await?;
    }
    if run(2) {
        reload_latency(&ca, dir.path(), &connector, scale).await?;
    }
    if run(3) {
        no_stall(&cert, &key, dir.path(), &connector, scale).await?;
    }
    if run(4) {
        idle_cost(&cert, &key, dir.path()).await?;
    }
    Ok(())
}

/// Part 1: Full handshakes per second, plain futures-rustls against ours.
async fn accept_overhead(
    cert: &Path,
    key: &Path,
    connector: &TlsConnector,
    scale: u32,
) -> anyhow::Result<()> {
    let built = tls_reload::build::build_blocking(
        &tls_reload::build::Materials::new(cert, key),
        &Template::from_default_provider()?,
        None,
    )?;
    let plain = TlsAcceptor::from(built.config().clone());
    let idle = ReloadingAcceptor::from_files(cert, key).build().await?;
    smol::spawn(idle.reloader()).detach();
    let busy = ReloadingAcceptor::from_files(cert, key)
        .interval(Duration::from_millis(10))
        .build()
        .await?;
    smol::spawn(busy.reloader()).detach();
    let untimed = ReloadingAcceptor::from_files(cert, key)
        .handshake_timeout(None)
        .build()
        .await?;
    smol::spawn(untimed.reloader()).detach();

    let servers = [
        (
            "plain futures-rustls TlsAcceptor",
            spawn_server(move |tcp| plain.accept(tcp))?,
        ),
        (
            "ours, reloader idle (1 s)",
            spawn_server(move |tcp| idle.accept(tcp))?,
        ),
        (
            "ours, reloader checking every 10 ms",
            spawn_server(move |tcp| busy.accept(tcp))?,
        ),
        (
            "ours, no handshake timeout",
            spawn_server(move |tcp| untimed.accept(tcp))?,
        ),
    ];

    let rounds = 10 / scale.min(5) as usize;
    let window = Duration::from_millis(1000 / u64::from(scale));
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut cpu: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        // Rotate the order so no variant always runs first.
        for i in 0..servers.len() {
            let which = (i + round) % servers.len();
            let (rate, per) = handshake_rate(servers[which].1, connector, window).await?;
            rates[which].push(rate);
            cpu[which].push(per.as_secs_f64() * 1e6);
        }
    }
    println!("\n1. accept overhead: full TLS 1.3 handshakes/s over loopback, 4 clients, ECDSA P-256, {rounds} interleaved rounds of {} ms", window.as_millis());
    println!("   | server                              | median handshakes/s | vs plain | median of round ratios | CPU us/handshake | vs plain |");
    println!("   |-------------------------------------|--------------------:|---------:|-----------------------:|-----------------:|---------:|");
    let plain = median(rates[0].clone());
    let plain_cpu = median(cpu[0].clone());
    for (i, (name, _)) in servers.iter().enumerate() {
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

/// Part 2: From the new pair on disk to the first handshake that serves it.
async fn reload_latency(
    ca: &Ca,
    dir: &Path,
    connector: &TlsConnector,
    scale: u32,
) -> anyhow::Result<()> {
    let interval = Duration::from_millis(50);
    let rotations = 50 / scale as usize;
    // A Kubernetes-style volume: the pair changes in one atomic rename.
    let volume = dir.join("volume");
    std::fs::create_dir_all(&volume)?;
    let pairs: Vec<Pair> = (0..=rotations as u64)
        .map(|i| ca.issue(100 + i))
        .collect::<Result<_, _>>()?;
    swap_pair(&volume, 0, &pairs[0])?;
    let acceptor = ReloadingAcceptor::from_files(volume.join("tls.crt"), volume.join("tls.key"))
        .interval(interval)
        .build()
        .await?;
    smol::spawn(acceptor.reloader()).detach();
    let addr = spawn_server(move |tcp| acceptor.accept(tcp))?;

    let mut latencies = Vec::new();
    for (i, pair) in pairs.iter().enumerate().skip(1) {
        swap_pair(&volume, i, pair)?;
        let on_disk = Instant::now();
        let deadline = on_disk + Duration::from_secs(5);
        loop {
            let served = served_cert(addr, connector).await?;
            if served == pair.der {
                latencies.push(on_disk.elapsed());
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "rotation {i} not served within 5 s"
            );
        }
        // Let the tick phase drift relative to the next write.
        Timer::after(Duration::from_millis(
            37 * i as u64 % interval.as_millis() as u64,
        ))
        .await;
    }
    latencies.sort();
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    println!("\n2. reload latency: new ECDSA pair on disk (atomic ..data swap) -> first handshake serving it, interval {} ms, {} rotations", interval.as_millis(), latencies.len());
    println!(
        "   p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (budget: p99 <= {} ms)",
        ms(p50),
        ms(p99),
        ms(latencies[latencies.len() - 1]),
        interval.as_millis() + 25
    );
    Ok(())
}

/// Part 3: A steady client's handshake latency while reloads that rebuild a
/// 1,000-file CA directory run in the background, against the same without
/// reloads, and against a plain CPU hog as a control: on a small machine the
/// build competes for a core with the client and the server.
async fn no_stall(
    cert: &Path,
    key: &Path,
    dir: &Path,
    connector: &TlsConnector,
    scale: u32,
) -> anyhow::Result<()> {
    let ca_dir = dir.join("clients.d");
    write_ca_dir(&ca_dir, 1000)?;
    // Rewriting this file between reloads makes each one rebuild the trust.
    let flip = [ca_pem("flip A")?, ca_pem("flip B")?];
    let trigger = TestDetector::new();
    let acceptor = ReloadingAcceptor::from_files(cert, key)
        .client_ca_dir(&ca_dir)
        .template(Template::from_default_provider()?.client_auth(ClientAuth::Optional))
        .detector(trigger.clone())
        .interval(Duration::from_millis(5))
        .build()
        .await?;
    smol::spawn(acceptor.reloader()).detach();
    let status = acceptor.clone();
    let addr = spawn_server(move |tcp| acceptor.accept(tcp))?;

    let window = Duration::from_millis(1500 / u64::from(scale));
    let rounds = 8 / scale.min(2) as usize;
    let names = [
        "no reloads",
        "CPU hog thread",
        "reload every 250 ms",
        "reloads back to back",
    ];
    let mut samples: [Vec<Duration>; 4] = Default::default();
    // Each round's p99 per condition, to compare within a round.
    let mut round_p99: [Vec<Duration>; 4] = Default::default();
    let mut reloads = [0u64; 4];
    for _ in 0..rounds {
        for (which, sample) in samples.iter_mut().enumerate() {
            let running = Arc::new(AtomicBool::new(true));
            let hog = (which == 1).then(|| {
                let running = running.clone();
                std::thread::spawn(move || {
                    while running.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            });
            let pace = match which {
                2 => Some(Duration::from_millis(250)),
                3 => Some(Duration::from_millis(1)),
                _ => None,
            };
            let pump = pace.map(|pace| {
                let (running, trigger, flip, ca_dir) = (
                    running.clone(),
                    trigger.clone(),
                    flip.clone(),
                    ca_dir.clone(),
                );
                let mut events = status.events();
                smol::spawn(async move {
                    let mut n = 0usize;
                    while running.load(Ordering::Relaxed) {
                        let _ = std::fs::write(ca_dir.join("flip.pem"), &flip[n % 2]);
                        n += 1;
                        trigger.trigger();
                        // One build at a time: wait for it to land, then pace.
                        while let Some(event) = events.next().await {
                            if matches!(
                                event,
                                ReloadEvent::Applied { .. } | ReloadEvent::Failed { .. }
                            ) {
                                break;
                            }
                        }
                        Timer::after(pace).await;
                    }
                })
            });
            let before = status.status().reloads_applied;
            let mut latencies = steady_latencies(addr, connector, window).await?;
            latencies.sort();
            round_p99[which].push(percentile(&latencies, 99.0));
            sample.extend(latencies);
            running.store(false, Ordering::Relaxed);
            if let Some(pump) = pump {
                pump.await;
            }
            if let Some(hog) = hog {
                let _ = hog.join();
            }
            reloads[which] += status.status().reloads_applied - before;
        }
    }
    for sample in &mut samples {
        sample.sort();
    }
    let base = percentile(&samples[0], 99.0);
    println!(
        "\n3. no stall: one client's sequential handshakes, {rounds} x {} ms per condition, interleaved; each reload rebuilds a 1,000-file client CA directory",
        window.as_millis()
    );
    println!(
        "   | condition            | reloads | handshakes | p50 ms | p99 ms | p99 vs no reloads | median of round ratios |"
    );
    println!(
        "   |----------------------|--------:|-----------:|-------:|-------:|------------------:|-----------------------:|"
    );
    for (i, name) in names.iter().enumerate() {
        let p99 = percentile(&samples[i], 99.0);
        let ratios: Vec<f64> = round_p99[i]
            .iter()
            .zip(&round_p99[0])
            .map(|(p, base)| p.as_secs_f64() / base.as_secs_f64())
            .collect();
        println!(
            "   | {name:<20} | {:>7} | {:>10} | {:>6.2} | {:>6.2} | {:>16.2}x | {:>21.2}x |",
            reloads[i],
            samples[i].len(),
            ms(percentile(&samples[i], 50.0)),
            ms(p99),
            p99.as_secs_f64() / base.as_secs_f64(),
            median(ratios)
        );
    }
    println!("   (budget: p99 while a reload builds <= 1.2x of no reloads)");
    Ok(())
}

/// Part 4: CPU time of idle checks: cert, key and a 100-file CA directory.
async fn idle_cost(cert: &Path, key: &Path, dir: &Path) -> anyhow::Result<()> {
    let ca_dir = dir.join("idle.d");
    write_ca_dir(&ca_dir, 100)?;
    // Past the racy window, so the steady state is measured.
    Timer::after(Duration::from_millis(2100)).await;
    let detector = Composite::from_paths(
        Strategy::Combined,
        [cert.to_path_buf(), key.to_path_buf(), ca_dir],
    );
    detector.fingerprint().await?;
    let checks = 2000u32;
    let cpu_before = process_cpu();
    let wall = Instant::now();
    for _ in 0..checks {
        detector.fingerprint().await?;
    }
    let wall = wall.elapsed() / checks;
    let cpu = process_cpu().saturating_sub(cpu_before) / checks;
    println!("\n4. idle cost: Combined check of cert + key + 100-file CA dir (through the blocking pool)");
    println!(
        "   {:.1} us wall and {:.1} us CPU per check; at a 1 s interval: {:.2} s of CPU per hour ({:.4}% of a core)",
        wall.as_secs_f64() * 1e6,
        cpu.as_secs_f64() * 1e6,
        cpu.as_secs_f64() * 3600.0,
        cpu.as_secs_f64() * 100.0
    );
    Ok(())
}

/// Accepts on a fresh loopback port; each connection does the handshake and
/// closes. The same code serves every variant.
fn spawn_server<F, Fut, S>(accept: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(Async<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = std::io::Result<S>> + Send + 'static,
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

async fn connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> anyhow::Result<futures_rustls::client::TlsStream<Async<TcpStream>>> {
    let tcp = Async::<TcpStream>::connect(addr).await?;
    tcp.get_ref().set_nodelay(true)?;
    Ok(connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?)
}

async fn served_cert(addr: SocketAddr, connector: &TlsConnector) -> anyhow::Result<Vec<u8>> {
    let tls = connect(addr, connector).await?;
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .context("no certificate")?;
    Ok(chain.first().context("empty chain")?.to_vec())
}

/// Handshakes per second, and this process's CPU time (client and server
/// together) per handshake.
async fn handshake_rate(
    addr: SocketAddr,
    connector: &TlsConnector,
    window: Duration,
) -> anyhow::Result<(f64, Duration)> {
    let count = Arc::new(AtomicU64::new(0));
    let cpu = process_cpu();
    let end = Instant::now() + window;
    let clients = (0..4).map(|_| {
        let count = count.clone();
        async move {
            while Instant::now() < end {
                let mut tls = connect(addr, connector).await?;
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

async fn steady_latencies(
    addr: SocketAddr,
    connector: &TlsConnector,
    window: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let end = Instant::now() + window;
    let mut latencies = Vec::new();
    while Instant::now() < end {
        let start = Instant::now();
        let mut tls = connect(addr, connector).await?;
        latencies.push(start.elapsed());
        let _ = tls.close().await;
    }
    Ok(latencies)
}

/// Replaces the pair the way the kubelet does: a new timestamped directory,
/// then one rename of the `..data` symlink.
fn swap_pair(volume: &Path, generation: usize, pair: &Pair) -> anyhow::Result<()> {
    let data = volume.join(format!("..gen{generation}"));
    std::fs::create_dir_all(&data)?;
    pair.write(&data.join("tls.crt"), &data.join("tls.key"))?;
    let tmp = volume.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(data.file_name().context("name")?, &tmp)?;
    std::fs::rename(&tmp, volume.join("..data"))?;
    for name in ["tls.crt", "tls.key"] {
        let link = volume.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    Ok(())
}

/// A directory of `count` self-signed CA certificates, one per file.
fn write_ca_dir(dir: &Path, count: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..count {
        std::fs::write(
            dir.join(format!("ca-{i:04}.pem")),
            ca_pem(&format!("client CA {i}"))?,
        )?;
    }
    Ok(())
}

/// A self-signed CA certificate in PEM.
fn ca_pem(name: &str) -> anyhow::Result<String> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    Ok(params.self_signed(&key)?.pem())
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

struct Pair {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Pair {
    fn write(&self, cert: &Path, key: &Path) -> std::io::Result<()> {
        std::fs::write(cert, &self.cert)?;
        std::fs::write(key, &self.key)
    }
}

impl Ca {
    fn new() -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "bench CA");
        let pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    fn issue(&self, serial: u64) -> anyhow::Result<Pair> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }

    /// A client that trusts this CA and never resumes: every handshake is full.
    fn connector(&self) -> anyhow::Result<TlsConnector> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// User plus system CPU time of this process, from /proc (Linux).
fn process_cpu() -> Duration {
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
