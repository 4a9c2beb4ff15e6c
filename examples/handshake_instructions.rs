//! Run with: cargo run --release --example handshake_instructions [-- N1 N2]
//! Counts the instructions a TLS server spends per full handshake, with
//! callgrind: plain futures-rustls against `ReloadingAcceptor`, each serving
//! over loopback on smol.
//!
//! It runs itself as the server under `valgrind --tool=callgrind` for each
//! KIND, once for N1 and once for N2 connections (default 100 and 300),
//! while it makes the connections itself, outside valgrind, one after the
//! other (ECDSA P-256, TLS 1.3; the server drops each stream after the
//! handshake). The difference of the two runs' instruction counts divided by
//! N2 - N1 is the server's instructions per handshake, whatever its start-up
//! cost. KIND:
//!
//! - `plain`: futures-rustls's `TlsAcceptor`, a task per connection;
//! - `accept`: `ReloadingAcceptor::accept`, a task per connection, no
//!   reloader: the accept path alone;
//! - `accept-untimed`: the same without a handshake timeout;
//! - `accept+reloader`: `accept` with the reloader running (every 1 s, the
//!   default, events on);
//! - `accept+reloader-100ms`: the reloader checking every 100 ms;
//! - `plain-unordered`: futures-rustls's `TlsAcceptor` driven in one task
//!   (`buffer_unordered`), the plain counterpart of `incoming`;
//! - `incoming`: `ReloadingAcceptor::incoming`, one task, no reloader;
//! - `spawned`: `incoming` with `spawn_handshakes(smol::spawn)`, no
//!   reloader.
//!
//! Connections come from `tcp_connections` in every kind. What a reloader
//! costs while idle is per second, not per handshake: the slower a run under
//! valgrind, the more of it lands in the count.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use futures::{AsyncReadExt, StreamExt};
use smol::Async;
use tls_reload::acceptor::{tcp_connections, ReloadingAcceptor, Template};
use tls_reload_testkit::{client_config, provider, tls_connect, write_pair, Ca};

const KINDS: [&str; 8] = [
    "plain",
    "accept",
    "accept-untimed",
    "accept+reloader",
    "accept+reloader-100ms",
    "plain-unordered",
    "incoming",
    "spawned",
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [kind, n, cert, key] => serve(kind, n.parse()?, Path::new(cert), Path::new(key)),
        [n1, n2] => table(n1.parse()?, n2.parse()?),
        [] => table(100, 300),
        _ => anyhow::bail!("usage: handshake_instructions [N1 N2]"),
    }
}

/// The server: prints its port, serves `n` handshakes of `kind`, exits.
fn serve(kind: &str, n: usize, cert: &Path, key: &Path) -> anyhow::Result<()> {
    smol::block_on(async {
        let template = Template::new(provider());
        let acceptor = ReloadingAcceptor::from_files(cert, key)
            .template(template)
            .interval(if kind == "accept+reloader-100ms" {
                Duration::from_millis(100)
            } else {
                tls_reload::acceptor::DEFAULT_INTERVAL
            })
            .handshake_timeout(if kind == "accept-untimed" {
                None
            } else {
                Some(tls_reload::acceptor::DEFAULT_HANDSHAKE_TIMEOUT)
            })
            .build()
            .await?;
        let plain = futures_rustls::TlsAcceptor::from(acceptor.config());
        if kind.contains("reloader") {
            smol::spawn(acceptor.reloader()).detach();
        }
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
        println!("port {}", listener.get_ref().local_addr()?.port());
        let (done, finished) = async_channel::unbounded::<()>();
        match kind {
            "plain" | "accept" | "accept-untimed" | "accept+reloader" | "accept+reloader-100ms" => {
                let mut connections = tcp_connections(&listener);
                for _ in 0..n {
                    let tcp = connections.next().await.context("listener")??;
                    let (plain, acceptor, done) = (plain.clone(), acceptor.clone(), done.clone());
                    let plain_kind = kind == "plain";
                    smol::spawn(async move {
                        if plain_kind {
                            drop(plain.accept(tcp).await);
                        } else {
                            drop(acceptor.accept(tcp).await);
                        }
                        let _ = done.send(()).await;
                    })
                    .detach();
                }
                for _ in 0..n {
                    finished.recv().await?;
                }
            }
            "plain-unordered" => {
                let mut handshakes = tcp_connections(&listener)
                    .map(|tcp| {
                        let plain = plain.clone();
                        async move { plain.accept(tcp?).await }
                    })
                    .buffer_unordered(tls_reload::acceptor::DEFAULT_MAX_HANDSHAKES);
                for _ in 0..n {
                    drop(handshakes.next().await.context("connections")??);
                }
            }
            "incoming" | "spawned" => {
                let mut incoming = acceptor.incoming(tcp_connections(&listener));
                if kind == "spawned" {
                    incoming = incoming.spawn_handshakes(|task| smol::spawn(task).detach());
                }
                for _ in 0..n {
                    drop(incoming.next().await.context("connections")??);
                }
            }
            other => anyhow::bail!("unknown KIND {other:?}"),
        }
        Ok(())
    })
}

/// Runs each kind under callgrind for `n1` and `n2` handshakes.
fn table(n1: usize, n2: usize) -> anyhow::Result<()> {
    anyhow::ensure!(n2 > n1, "N2 must be larger than N1");
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("instructions CA");
    let materials = write_pair(dir.path(), &ca.leaf(0x1001));
    let client = client_config(&ca, None);
    let me = std::env::current_exe()?;
    let mut rows = Vec::new();
    for kind in KINDS {
        let mut counts = Vec::new();
        for n in [n1, n2] {
            counts.push(run(
                &me,
                kind,
                n,
                materials.cert(),
                materials.key(),
                &client,
            )?);
        }
        rows.push((kind, (counts[1] - counts[0]) as f64 / (n2 - n1) as f64));
    }
    println!("| server | instructions per handshake | vs plain | difference |");
    println!("|---|---:|---:|---:|");
    let plain = rows[0].1;
    for (kind, count) in rows {
        println!(
            "| {kind} | {count:.0} | {:.4}x | {:+.0} |",
            count / plain,
            count - plain
        );
    }
    Ok(())
}

/// One server run under callgrind, `n` handshakes made against it.
fn run(
    me: &PathBuf,
    kind: &str,
    n: usize,
    cert: &Path,
    key: &Path,
    client: &std::sync::Arc<rustls::ClientConfig>,
) -> anyhow::Result<u64> {
    let mut child = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(me)
        .arg(kind)
        .arg(n.to_string())
        .arg(cert)
        .arg(key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running valgrind (is it installed?)")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let port: u16 = line
        .trim()
        .strip_prefix("port ")
        .and_then(|port| port.parse().ok())
        .with_context(|| format!("no port from the server: {line:?}"))?;
    smol::block_on(async {
        for _ in 0..n {
            let mut tls = tls_connect(([127, 0, 0, 1], port).into(), client).await?;
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest).await;
        }
        anyhow::Ok(())
    })?;
    let output = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(output.status.success(), "the server failed: {stderr}");
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|count| count.trim().parse().ok())
        .with_context(|| format!("no instruction count in valgrind's output: {stderr}"))
}
