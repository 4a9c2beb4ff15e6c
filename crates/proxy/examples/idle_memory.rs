//! Run with: cargo build --release -p tls-reload-proxy --bins --examples && cargo run --release -p tls-reload-proxy --example idle_memory -- [N]...
//!
//! Resident memory per idle TLS connection: for each N (default 1000, 4000
//! and 9900), a fresh server takes N connections that each complete a
//! handshake (TLS 1.3, TLS_AES_128_GCM_SHA256, ECDSA P-256, no
//! resumption), send one byte, read its echo back from the backend and then
//! stay open and silent. The server's resident set (`VmRSS`) is read before
//! the first and after the last (once it stopped moving), and the growth is
//! divided by N. Servers: `tls-reload-proxy` (the release binary next to
//! this example), `stunnel4` and `haproxy` when they are on PATH, and the
//! `smol_server` example (TLS and echo only, no target: what the acceptor
//! alone costs) when its release build is there. The backend, an echo
//! server, runs in this process.
//!
//! Every connection costs the proxies two descriptors, this process one
//! (the client) and the backend, a child process, one; the descriptor limit
//! is raised with `prlimit` first when it can be (the hard limit, or more
//! as root with CAP_SYS_RESOURCE), and N that do not fit are skipped with a
//! note. Under a hard limit of 20,000, N = 9,900 is the largest that fits.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use common::{client_config, connect, haproxy_config, stunnel_config, write_certificate, Tls};
use rustls::ClientConfig;
use smol::Async;

/// Connections opened and closed before the first reading, so that
/// one-time allocations (the first handshake's, thread arenas) are not
/// counted per connection.
const WARM_UP: usize = 200;

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--backend") {
        return serve_backend();
    }
    let counts: Vec<usize> = match std::env::args().skip(1).collect::<Vec<_>>() {
        args if args.is_empty() => vec![1000, 4000, 9900],
        args => args
            .iter()
            .map(|n| n.parse().context("N must be a whole number"))
            .collect::<anyhow::Result<_>>()?,
    };
    let most = counts.iter().copied().max().unwrap_or(0);
    let limit = raise_fd_limit(2 * most + 100);
    let dir = tempfile::tempdir()?;
    let (cert, key, root) = write_certificate(dir.path())?;
    let (_backend, backend) = start_backend()?;
    let config = client_config(root)?;
    let kinds = available_servers();
    println!(
        "resident memory growth per idle TLS connection (kB of VmRSS = KiB); descriptor limit {limit}"
    );
    print!("{:>7}", "N");
    for kind in &kinds {
        print!(" {:>18}", kind.name());
    }
    println!();
    for &n in &counts {
        print!("{n:>7}");
        io::stdout().flush()?;
        for kind in &kinds {
            if 2 * n + 50 > limit {
                print!(" {:>18}", "(fd limit)");
                continue;
            }
            let server = Server::start(*kind, dir.path(), &cert, &key, backend, limit)?;
            let cell = match per_connection(&server, &config, n) {
                Ok(kb) => format!("{kb:.1}"),
                Err(error) => {
                    eprintln!("\n{} at {n}: {error:#}", kind.name());
                    "failed".into()
                }
            };
            print!(" {cell:>18}");
            io::stdout().flush()?;
        }
        println!();
    }
    Ok(())
}

/// Raises this process's descriptor limit (children inherit it) to at least
/// `wanted` when the hard limit allows it or `prlimit` can lift it; returns
/// the soft limit in force.
fn raise_fd_limit(wanted: usize) -> usize {
    let pid = std::process::id().to_string();
    let limit = |which: &str| -> Option<usize> {
        let out = Command::new("prlimit")
            .args(["--pid", &pid, "--nofile", "--noheadings", "--output", which])
            .output()
            .ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    let hard_now = limit("HARD").unwrap_or(0);
    let hard = hard_now.max(wanted);
    let raised = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={wanted}:{hard}")])
        .status();
    if !matches!(raised, Ok(status) if status.success()) {
        eprintln!("cannot raise the descriptor limit to {wanted} (the hard limit is lower and lifting it needs CAP_SYS_RESOURCE)");
        let _ = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={hard_now}:")])
            .status();
    }
    limit("SOFT").unwrap_or(1024)
}

/// kB of resident memory the server grew by per connection, with `n` idle
/// connections open.
fn per_connection(server: &Server, config: &Arc<ClientConfig>, n: usize) -> anyhow::Result<f64> {
    for _ in 0..WARM_UP {
        drop(ping(server.addr, config)?);
    }
    let before = settled_rss(server.pid())?;
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        open.push(ping(server.addr, config).with_context(|| format!("connection {i}"))?);
    }
    let after = settled_rss(server.pid())?;
    drop(open);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// A connection that completed its handshake and one byte's round trip.
fn ping(addr: SocketAddr, config: &Arc<ClientConfig>) -> anyhow::Result<Tls> {
    let mut tls = connect(addr, config)?;
    tls.write_all(b"P")?;
    let mut echo = [0];
    tls.read_exact(&mut echo)?;
    if echo != *b"P" {
        bail!("the echo came back as {echo:?}");
    }
    Ok(tls)
}

/// VmRSS in kB once two readings 300 ms apart agree within 1 %.
fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    let mut last = rss(pid)?;
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(300));
        let now = rss(pid)?;
        if now.abs_diff(last) * 100 <= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// The echo backend: this example again, with `--backend`, in a process of
/// its own (its descriptors do not count against ours); killed on drop.
fn start_backend() -> anyhow::Result<(Server, SocketAddr)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--backend")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr: SocketAddr = line.trim().parse().context("the backend's address")?;
    Ok((Server { addr, child }, addr))
}

/// `--backend`: echoes on a loopback port (printed first), many connections
/// on one executor, until killed.
fn serve_backend() -> anyhow::Result<()> {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    println!("{}", listener.get_ref().local_addr()?);
    smol::block_on(async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                smol::Timer::after(Duration::from_millis(10)).await;
                continue;
            };
            smol::spawn(async move {
                let stream = Arc::new(stream);
                let _ = smol::io::copy(&*stream, &mut &*stream).await;
            })
            .detach();
        }
    })
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Ours,
    Stunnel,
    Haproxy,
    SmolServer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "tls-reload-proxy",
            Self::Stunnel => "stunnel4",
            Self::Haproxy => "haproxy",
            Self::SmolServer => "smol_server (no target)",
        }
    }
}

fn available_servers() -> Vec<Kind> {
    let on_path = |program: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let mut kinds = vec![Kind::Ours];
    if on_path("stunnel4") {
        kinds.push(Kind::Stunnel);
    } else {
        eprintln!("stunnel4 is not on PATH: skipped (Debian package stunnel4)");
    }
    if on_path("haproxy") {
        kinds.push(Kind::Haproxy);
    } else {
        eprintln!("haproxy is not on PATH: skipped (Debian package haproxy)");
    }
    if release_dir().is_ok_and(|dir| dir.join("examples/smol_server").exists()) {
        kinds.push(Kind::SmolServer);
    } else {
        eprintln!("no release build of the smol_server example: skipped (cargo build --release --example smol_server)");
    }
    kinds
}

/// `target/release`, where this example and the proxy's binary are.
fn release_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("no directory above the example")
}

/// A server under test, killed on drop.
struct Server {
    addr: SocketAddr,
    child: Child,
}

impl Server {
    fn start(
        kind: Kind,
        dir: &Path,
        cert: &Path,
        key: &Path,
        backend: SocketAddr,
        fd_limit: usize,
    ) -> anyhow::Result<Self> {
        match kind {
            Kind::Ours => {
                let binary = release_dir()?.join("tls-reload-proxy");
                let mut command = Command::new(&binary);
                command
                    .args(["--listen", "127.0.0.1:0", "--target", &backend.to_string()])
                    .args(["--max-connections", "100000"]);
                Self::announcing(command, cert, key)
            }
            Kind::SmolServer => {
                let binary = release_dir()?.join("examples/smol_server");
                let mut command = Command::new(&binary);
                command.args(["--listen", "127.0.0.1:0"]);
                Self::announcing(command, cert, key)
            }
            Kind::Stunnel => {
                let addr = free_port()?;
                let config = stunnel_config(dir, addr, backend, cert, key)?;
                let mut command = Command::new("stunnel4");
                command.arg(&config);
                Self::listening(command, addr)
            }
            Kind::Haproxy => {
                let addr = free_port()?;
                // HAProxy wants two descriptors per connection.
                let config = haproxy_config(dir, addr, backend, 2, fd_limit / 2 - 50)?;
                let mut command = Command::new("haproxy");
                command.args(["-db", "-f"]).arg(&config);
                Self::listening(command, addr)
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ours: started with the certificate, ready once it prints the address.
    fn announcing(mut command: Command, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let mut child = command
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the server (build it in release first)")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?
            .parse()?;
        Ok(Self { addr, child })
    }

    /// Others: ready once `addr` takes a connection.
    fn listening(mut command: Command, addr: SocketAddr) -> anyhow::Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        let server = Self { addr, child };
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("{:?} did not listen on {addr}", command.get_program());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}
