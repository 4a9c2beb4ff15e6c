//! Run with: cargo build --release -p tls-reload-proxy && cargo run --release -p tls-reload-proxy --example vs_stunnel -- [SECONDS]
//!
//! Compares `tls-reload-proxy` with `stunnel4` fronting the same in-process
//! backend, with the same certificate and key (ECDSA P-256), TLS 1.3 and
//! TLS_AES_128_GCM_SHA256 (the client offers nothing else): bulk throughput
//! through one connection and through 16, streamed (the backend sends, the
//! client reads) and echoed (the client writes 64 KiB and reads them back,
//! again and again), and new TLS connections per second (full handshakes,
//! no resumption, one byte each way, then close). Each measurement runs
//! SECONDS (default 3) against each proxy in turn, alternating, twice; the
//! table shows the better run, and each proxy's CPU time (user and system)
//! per GiB moved in the streamed rows and in the echoed rows (a GiB echoed
//! crosses the proxy both ways). Needs the release binary next to
//! this example and `stunnel4` on PATH. With `VS_STUNNEL_BASELINE=PATH`, the
//! proxy binary at PATH (an earlier build, say) runs too, as a third column
//! (several paths separated by `:`, one column each);
//! `VS_STUNNEL_ARGS="--threads 4"` adds flags to ours (not the baseline);
//! `VS_STUNNEL_ONLY="16 conn, echo"` runs only the rows whose name holds it,
//! and `VS_STUNNEL_ROUNDS=4` takes the best of 4 runs instead of 2.
//! `VS_STUNNEL_HAPROXY=1` adds `haproxy` (same certificate and cipher,
//! two threads, TCP mode) as a column before stunnel4's, and a last
//! column with our ratio to it. The load average is printed before and
//! after the table: the machine is shared, and a busy run says little.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use common::{client_config, connect, haproxy_config, stunnel_config, write_certificate};
use rustls::ClientConfig;

/// Concurrent clients opening connections in the connections/s test.
const HANDSHAKE_CLIENTS: usize = 8;
/// Connections in the second bulk test.
const BULK_CONNECTIONS: usize = 16;
/// Rounds of each measurement against each proxy, unless
/// `VS_STUNNEL_ROUNDS` says otherwise.
const ROUNDS: usize = 2;

fn main() -> anyhow::Result<()> {
    let seconds: u64 = match std::env::args().nth(1) {
        Some(text) => text.parse().context("SECONDS must be a whole number")?,
        None => 3,
    };
    let run_for = Duration::from_secs(seconds);
    let rounds = match std::env::var("VS_STUNNEL_ROUNDS") {
        Ok(text) => text
            .parse()
            .context("VS_STUNNEL_ROUNDS must be a whole number")?,
        Err(_) => ROUNDS,
    };
    let dir = tempfile::tempdir()?;
    let (cert, key, root) = write_certificate(dir.path())?;
    let backend = start_backend()?;

    let mut servers = vec![Server::ours(dir.path(), &cert, &key, backend, None)?];
    if let Some(baselines) = std::env::var_os("VS_STUNNEL_BASELINE") {
        for (n, baseline) in std::env::split_paths(&baselines).enumerate() {
            servers.push(Server::ours(
                dir.path(),
                &cert,
                &key,
                backend,
                Some((n, &baseline)),
            )?);
        }
    }
    let haproxy = std::env::var_os("VS_STUNNEL_HAPROXY").is_some_and(|v| v != "0");
    if haproxy {
        servers.push(Server::haproxy(dir.path(), backend)?);
    }
    servers.push(Server::stunnel(dir.path(), &cert, &key, backend)?);
    let config = client_config(root)?;
    for server in &servers {
        let (suite, group) = negotiated(server.addr, &config)?;
        println!("{:<17} negotiates {suite} with {group}", server.name);
    }
    println!(
        "{} s per run, best of {rounds} alternating runs; {} CPUs shared by clients, proxies and backend\n",
        seconds,
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("load average before: {}\n", load_average());

    type Measure = fn(SocketAddr, &Arc<ClientConfig>, Duration) -> anyhow::Result<f64>;
    // The CPU row a measurement counts in: 0 streamed, 1 echoed, or none.
    let measurements: [(&str, &str, Option<usize>, Measure); 5] = [
        (
            "bulk, 1 conn, stream",
            "MB/s",
            Some(0),
            |addr, config, run_for| bulk(addr, config, 1, Bulk::Stream, run_for),
        ),
        (
            "bulk, 16 conn, stream",
            "MB/s",
            Some(0),
            |addr, config, run_for| bulk(addr, config, BULK_CONNECTIONS, Bulk::Stream, run_for),
        ),
        (
            "bulk, 1 conn, echo",
            "MB/s",
            Some(1),
            |addr, config, run_for| bulk(addr, config, 1, Bulk::Echo, run_for),
        ),
        (
            "bulk, 16 conn, echo",
            "MB/s",
            Some(1),
            |addr, config, run_for| bulk(addr, config, BULK_CONNECTIONS, Bulk::Echo, run_for),
        ),
        ("new connections", "conn/s", None, handshakes),
    ];
    let stunnel = servers.len() - 1;
    // HAProxy's column, just before stunnel4's.
    let haproxy = haproxy.then(|| stunnel - 1);
    print!("{:<22}", "measurement");
    for server in &servers {
        print!(" {:>18}", server.name);
    }
    print!(" {:>13}", "ours/stunnel");
    if haproxy.is_some() {
        print!(" {:>13}", "ours/haproxy");
    }
    println!();
    // CPU seconds and bytes of the streamed and the echoed rows, per server.
    let mut used = [
        vec![(0f64, 0f64); servers.len()],
        vec![(0f64, 0f64); servers.len()],
    ];
    let only = std::env::var("VS_STUNNEL_ONLY").unwrap_or_default();
    for (name, unit, cpu_row, measure) in measurements {
        if !name.contains(&only) {
            continue;
        }
        let mut best = vec![0f64; servers.len()];
        for _ in 0..rounds {
            for (i, server) in servers.iter().enumerate() {
                let cpu = cpu_seconds(server.child.id())?;
                let start = Instant::now();
                let rate = measure(server.addr, &config, run_for)?;
                if let Some(row) = cpu_row {
                    let cpu = cpu_seconds(server.child.id())? - cpu;
                    // MB/s over the counted part; the CPU covers the
                    // fill-up too, so this slightly overstates CPU per GiB.
                    used[row][i].0 += cpu;
                    used[row][i].1 += rate * 1e6 * start.elapsed().as_secs_f64();
                }
                best[i] = best[i].max(rate);
            }
        }
        print!("{name:<22}");
        for rate in &best {
            print!(" {rate:>11.0} {unit:<6}");
        }
        print!(" {:>13.2}", best[0] / best[stunnel]);
        if let Some(haproxy) = haproxy {
            print!(" {:>13.2}", best[0] / best[haproxy]);
        }
        println!();
    }
    for (what, used) in ["streamed", "echoed"].iter().zip(&used) {
        if used[0].1 == 0.0 {
            continue;
        }
        print!("{:<22}", format!("CPU s per GiB {what}"));
        for (cpu, bytes) in used {
            print!(" {:>18.2}", cpu / (bytes / (1u64 << 30) as f64));
        }
        print!(
            " {:>13.2}",
            (used[0].0 / used[0].1) / (used[stunnel].0 / used[stunnel].1)
        );
        if let Some(haproxy) = haproxy {
            print!(
                " {:>13.2}",
                (used[0].0 / used[0].1) / (used[haproxy].0 / used[haproxy].1)
            );
        }
        println!();
    }
    println!("\nload average after: {}", load_average());
    Ok(())
}

/// The first three fields of /proc/loadavg (1, 5 and 15 minutes).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

/// The backend: after a first byte `D` it sends zeros until the client
/// goes; after `E` it echoes what comes until the client goes; after any
/// other byte it answers one byte and closes.
fn start_backend() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve_backend(stream));
        }
    });
    Ok(addr)
}

fn serve_backend(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut first = [0];
    if stream.read_exact(&mut first).is_err() {
        return;
    }
    if first[0] == b'D' {
        let zeros = vec![0; 256 * 1024];
        while stream.write_all(&zeros).is_ok() {}
    } else if first[0] == b'E' {
        let mut buf = vec![0; 256 * 1024];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            if stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    } else {
        let _ = stream.write_all(b"!");
        let _ = stream.read(&mut first);
    }
}

/// A proxy under test, killed on drop.
struct Server {
    name: String,
    addr: SocketAddr,
    child: Child,
}

impl Server {
    /// Our proxy: the release binary next to this example, or `binary`.
    fn ours(
        dir: &Path,
        cert: &Path,
        key: &Path,
        backend: SocketAddr,
        baseline: Option<(usize, &Path)>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let name = match baseline {
            Some((0, _)) => "baseline".to_owned(),
            Some((n, _)) => format!("baseline{}", n + 1),
            None => "tls-reload-proxy".to_owned(),
        };
        let binary = match baseline {
            Some((_, binary)) => binary.to_path_buf(),
            None => exe
                .parent()
                .and_then(Path::parent)
                .map(|release| release.join("tls-reload-proxy"))
                .context("no directory above the example")?,
        };
        if !binary.exists() {
            bail!(
                "{} is missing: run `cargo build --release -p tls-reload-proxy` first",
                binary.display()
            );
        }
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let mut child = Command::new(&binary)
            .args(["--listen", "127.0.0.1:0", "--target", &backend.to_string()])
            .args(extra_args(baseline.is_some()))
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?
            .parse()?;
        Ok(Self { name, addr, child })
    }

    /// HAProxy 2.x in TCP mode, two threads (one per CPU here), with the
    /// certificate and key in one file (`haproxy.pem`).
    fn haproxy(dir: &Path, backend: SocketAddr) -> anyhow::Result<Self> {
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let threads = thread::available_parallelism().map_or(1, |n| n.get());
        let config = haproxy_config(dir, addr, backend, threads, 1_000)?;
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start haproxy (Debian package haproxy)")?;
        Self::listening("haproxy", child, addr)
    }

    /// A server started elsewhere, once it accepts on `addr`.
    fn listening(name: &str, child: Child, addr: SocketAddr) -> anyhow::Result<Self> {
        let server = Self {
            name: name.to_owned(),
            addr,
            child,
        };
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("{name} did not listen on {addr}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn stunnel(dir: &Path, cert: &Path, key: &Path, backend: SocketAddr) -> anyhow::Result<Self> {
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = stunnel_config(dir, addr, backend, cert, key)?;
        let child = Command::new("stunnel4")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start stunnel4 (Debian package stunnel4)")?;
        Self::listening("stunnel4", child, addr)
    }
}

/// More flags for our proxy (not the baseline) from `VS_STUNNEL_ARGS`,
/// split on spaces: `VS_STUNNEL_ARGS="--threads 4"`, say.
fn extra_args(baseline: bool) -> Vec<String> {
    match std::env::var("VS_STUNNEL_ARGS") {
        Ok(args) if !baseline => args.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn negotiated(addr: SocketAddr, config: &Arc<ClientConfig>) -> anyhow::Result<(String, String)> {
    let tls = connect(addr, config)?;
    let suite = tls.conn.negotiated_cipher_suite().context("no suite")?;
    let group = tls
        .conn
        .negotiated_key_exchange_group()
        .context("no group")?;
    Ok((
        format!("{:?}", suite.suite()),
        format!("{:?}", group.name()),
    ))
}

/// How the bulk clients move bytes.
#[derive(Clone, Copy)]
enum Bulk {
    /// The backend sends, the client reads.
    Stream,
    /// The client writes [`ECHO_CHUNK`] bytes and reads them back, again
    /// and again.
    Echo,
}

/// What an echoing client writes before reading it back.
const ECHO_CHUNK: usize = 64 * 1024;

/// MB/s received by `connections` clients at once.
fn bulk(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    connections: usize,
    how: Bulk,
    run_for: Duration,
) -> anyhow::Result<f64> {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..connections {
        let mut tls = connect(addr, config)?;
        tls.write_all(match how {
            Bulk::Stream => b"D",
            Bulk::Echo => b"E",
        })?;
        let (received, stop) = (received.clone(), stop.clone());
        clients.push(thread::spawn(move || -> anyhow::Result<()> {
            let mut buf = vec![0; 256 * 1024];
            let chunk = vec![7; ECHO_CHUNK];
            while !stop.load(Ordering::Relaxed) {
                match how {
                    Bulk::Stream => {
                        let n = tls.read(&mut buf)?;
                        if n == 0 {
                            bail!("the proxy closed a bulk connection");
                        }
                        received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Bulk::Echo => {
                        tls.write_all(&chunk)?;
                        tls.read_exact(&mut buf[..ECHO_CHUNK])?;
                        received.fetch_add(ECHO_CHUNK as u64, Ordering::Relaxed);
                    }
                }
            }
            Ok(())
        }));
    }
    // Let the pipes fill before counting.
    thread::sleep(Duration::from_millis(200));
    let start_bytes = received.load(Ordering::Relaxed);
    let start = Instant::now();
    thread::sleep(run_for);
    let bytes = received.load(Ordering::Relaxed) - start_bytes;
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
    }
    Ok(bytes as f64 / elapsed.as_secs_f64() / 1e6)
}

/// User and system CPU seconds `pid` has used so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no command in /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    // utime and stime, fields 14 and 15 of the line (11 and 12 here), in
    // clock ticks of 1/100 s (USER_HZ on Linux).
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Full TLS connections per second, each sending one byte through to the
/// backend and reading its answer.
fn handshakes(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    run_for: Duration,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let clients: Vec<_> = (0..HANDSHAKE_CLIENTS)
        .map(|_| {
            let (config, done) = (config.clone(), done.clone());
            thread::spawn(move || -> anyhow::Result<()> {
                while start.elapsed() < run_for {
                    let mut tls = connect(addr, &config)?;
                    tls.write_all(b"P")?;
                    let mut answer = [0];
                    tls.read_exact(&mut answer)?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}
