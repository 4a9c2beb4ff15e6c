//! What a failed handshake writes to the log, over real loopback sockets:
//! the peer's address, the cause in words, and no more warnings than the
//! rate limit allows however many bad clients come, with a summary that
//! counts the ones held back.
//!
//! Each test captures its own thread's tracing output (`set_default`), and
//! drives the server and its clients on that thread.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use common::{provider, timeout, wait_until, write_pair, Ca, Captured, DEADLINE};
use futures::future::{self, Either};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::{Future, StreamExt};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use smol::Async;
use tls_reload_acceptor::{LogLimit, ReloadingAcceptor, Template};
use tracing::subscriber::DefaultGuard;

/// What these tests read from captured logs.
trait CapturedExt: Sized {
    /// Captures every event of this thread, formatted as the example
    /// servers do, until the guard is dropped.
    fn start() -> (Self, DefaultGuard);
    fn failure_warnings(&self) -> Vec<String>;
    fn summaries(&self) -> Vec<u64>;
}

impl CapturedExt for Captured {
    fn start() -> (Self, DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// The `warn` lines about one failed handshake each.
    fn failure_warnings(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.contains(" WARN ") && line.contains("TLS handshake failed"))
            .collect()
    }

    /// The counts of the summary lines.
    fn summaries(&self) -> Vec<u64> {
        self.lines()
            .iter()
            .filter(|line| line.contains(" WARN "))
            .filter_map(|line| {
                let (_, rest) = line.split_once("suppressed ")?;
                let (count, rest) = rest.split_once(' ')?;
                rest.starts_with("TLS handshake failure warnings in the last ")
                    .then(|| count.parse().ok())?
            })
            .collect()
    }
}

/// An acceptor serving a fresh leaf, with `template`.
fn acceptor(template: Template) -> anyhow::Result<(tempfile::TempDir, Ca, ReloadingAcceptor)> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("handshake logs CA");
    let materials = write_pair(dir.path(), &ca.leaf(0x1e01));
    let acceptor = ReloadingAcceptor::builder(materials)
        .template(template)
        .handshake_timeout(DEADLINE)
        .build_blocking()?;
    Ok((dir, ca, acceptor))
}

/// Serves `acceptor`'s `Incoming` on `listener` (with the peer and `limit`)
/// while `test` runs, on this thread; `failed` follows the count of failed
/// handshakes. The `Incoming` is dropped when `test` ends.
async fn serving<T>(
    acceptor: &ReloadingAcceptor,
    listener: &Async<TcpListener>,
    limit: LogLimit,
    failed: &Mutex<u64>,
    test: impl Future<Output = T>,
) -> T {
    let mut incoming = acceptor
        .incoming(Box::pin(listener.incoming()))
        .peer_addr_with(|tcp| tcp.get_ref().peer_addr().ok())
        .warn_limit(limit);
    let server = async {
        loop {
            let next = future::poll_fn(|cx| {
                let next = incoming.poll_next_unpin(cx);
                *failed.lock().expect("lock") = incoming.failed_handshakes();
                next
            })
            .await;
            match next {
                Some(Ok(tls)) => drop(tls),
                Some(Err(error)) => panic!("the listener failed: {error}"),
                None => return,
            }
        }
    };
    futures::pin_mut!(server, test);
    match future::select(server, test).await {
        Either::Right((done, _)) => done,
        Either::Left(((), _)) => panic!("the listener ended"),
    }
}

/// Connects, sends an HTTP request instead of a ClientHello, and waits for
/// the server to close; returns the client's address.
async fn garbage_client(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    timeout(DEADLINE, async {
        let mut tcp = Async::<TcpStream>::connect(addr).await?;
        let me = tcp.get_ref().local_addr()?;
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut rest = Vec::new();
        // The server's alert, then EOF (or a reset): either way, done.
        let _ = tcp.read_to_end(&mut rest).await;
        Ok(me)
    })
    .await
    .context("garbage client")
}

/// Sends 200 garbage connections, 8 at a time; returns the clients'
/// addresses.
async fn flood(addr: SocketAddr) -> anyhow::Result<HashSet<SocketAddr>> {
    let clients: Vec<anyhow::Result<SocketAddr>> = futures::stream::iter(0..200)
        .map(|_| garbage_client(addr))
        .buffer_unordered(8)
        .collect()
        .await;
    clients.into_iter().collect()
}

fn peer_of(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("peer=")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn a_flood_of_bad_clients_gives_the_budget_of_warnings_with_peers_and_a_summary(
) -> anyhow::Result<()> {
    let (captured, _guard) = Captured::start();
    let (_dir, _ca, acceptor) = acceptor(Template::new(provider()))?;
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    // An hour: the whole flood falls in one window, whatever the machine's
    // speed, so the counts are exact.
    let limit = LogLimit::new(10, Duration::from_secs(3600));
    let failed = Mutex::new(0);
    let clients = smol::block_on(serving(&acceptor, &listener, limit, &failed, async {
        let clients = flood(addr).await?;
        ensure!(
            wait_until(DEADLINE, || future::ready(
                *failed.lock().expect("lock") == 200
            ))
            .await,
            "{} failed handshakes of 200",
            failed.lock().expect("lock")
        );
        anyhow::Ok(clients)
    }))?;

    let warnings = captured.failure_warnings();
    ensure!(
        warnings.len() == 10,
        "{} warnings: {warnings:#?}",
        warnings.len()
    );
    for line in &warnings {
        let peer = peer_of(line).with_context(|| format!("no peer in {line:?}"))?;
        ensure!(
            clients.contains(&peer),
            "{peer} is no client of ours: {line}"
        );
        ensure!(
            line.contains("does not speak TLS"),
            "the cause in words: {line}"
        );
        ensure!(
            !line.contains("GET") && !line.contains("Host"),
            "peer bytes: {line}"
        );
    }
    // The rest went to debug, with their peers too.
    let debug: Vec<_> = captured
        .lines()
        .into_iter()
        .filter(|line| line.contains("DEBUG") && line.contains("TLS handshake failed"))
        .collect();
    ensure!(debug.len() == 190, "{} debug lines", debug.len());
    ensure!(debug.iter().all(|line| peer_of(line).is_some()));
    // Dropping the `Incoming` closed the window early, with its summary.
    ensure!(
        captured.summaries() == [190],
        "summaries {:?} in {:#?}",
        captured.summaries(),
        captured.lines()
    );
    Ok(())
}

#[test]
fn the_summary_comes_when_the_window_rolls_over() -> anyhow::Result<()> {
    const BUDGET: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(1);
    let (captured, _guard) = Captured::start();
    let (_dir, _ca, acceptor) = acceptor(Template::new(provider()))?;
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    let failed = Mutex::new(0);
    let started = Instant::now();
    let elapsed = smol::block_on(serving(
        &acceptor,
        &listener,
        LogLimit::new(BUDGET, WINDOW),
        &failed,
        async {
            flood(addr).await?;
            ensure!(
                wait_until(DEADLINE, || future::ready(
                    *failed.lock().expect("lock") == 200
                ))
                .await,
                "{} failed handshakes of 200",
                failed.lock().expect("lock")
            );
            let elapsed = started.elapsed();
            // The `Incoming` lives on: its timer brings the last summary
            // once the last window ends, with no further connection.
            let accounted = || {
                let suppressed: u64 = captured.summaries().iter().sum();
                captured.failure_warnings().len() as u64 + suppressed
            };
            ensure!(
                wait_until(WINDOW + DEADLINE, || future::ready(accounted() == 200)).await,
                "{} of 200 failures logged or summarised: {:#?}",
                accounted(),
                captured.lines()
            );
            anyhow::Ok(elapsed)
        },
    ))?;

    let warnings = captured.failure_warnings();
    // Windows do not overlap and each lasts WINDOW, so the flood spans at
    // most this many (one, on any machine that sends 200 loopback
    // connections within a second).
    let windows = elapsed.as_millis() / WINDOW.as_millis() + 1;
    ensure!(
        warnings.len() as u128 <= u128::from(BUDGET) * windows,
        "{} warnings in {elapsed:?}",
        warnings.len()
    );
    ensure!(warnings.iter().all(|line| peer_of(line).is_some()));
    let summaries = captured.summaries();
    ensure!(!summaries.is_empty() && summaries.iter().all(|&n| n > 0));
    ensure!(
        captured
            .lines()
            .iter()
            .any(|line| line.contains("TLS handshake failure warnings in the last 1s")),
        "a summary for a whole window: {:#?}",
        captured.lines()
    );
    Ok(())
}

/// A TLS 1.0 ClientHello as an old client sends it: one cipher suite, no
/// extensions (signature_algorithms came with TLS 1.2).
const TLS10_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0x2f, // handshake record, TLS 1.0, 47 bytes
    0x01, 0x00, 0x00, 0x2b, // ClientHello, 43 bytes
    0x03, 0x01, // client_version TLS 1.0
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, // random
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,   //
    0x00, // no session id
    0x00, 0x04, 0x00, 0x2f, 0x00, 0x35, // TLS_RSA_WITH_AES_{128,256}_CBC_SHA
    0x01, 0x00, // null compression
];

#[test]
fn clients_without_an_acceptable_version_are_logged_as_such() -> anyhow::Result<()> {
    let (captured, _guard) = Captured::start();
    let template = Template::new(provider()).protocol_versions(&[&rustls::version::TLS13]);
    let (_dir, ca, acceptor) = acceptor(template)?;
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.der())?;
    let tls12_only = Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let failed = Mutex::new(0);
    let (modern, old) = smol::block_on(serving(
        &acceptor,
        &listener,
        LogLimit::default(),
        &failed,
        async {
            // A rustls client limited to TLS 1.2, against TLS 1.3 only.
            let tcp = Async::<TcpStream>::connect(addr).await?;
            let modern = tcp.get_ref().local_addr()?;
            let name = ServerName::try_from("localhost")?;
            let refused = timeout(
                DEADLINE,
                futures_rustls::TlsConnector::from(tls12_only).connect(name, tcp),
            )
            .await;
            ensure!(refused.is_err(), "a TLS 1.2 client got through");
            // An old client's hello, byte for byte.
            let old = timeout(DEADLINE, async {
                let mut tcp = Async::<TcpStream>::connect(addr).await?;
                let me = tcp.get_ref().local_addr()?;
                tcp.write_all(TLS10_CLIENT_HELLO).await?;
                let _ = tcp.read_to_end(&mut Vec::new()).await;
                Ok(me)
            })
            .await?;
            ensure!(
                wait_until(DEADLINE, || future::ready(
                    *failed.lock().expect("lock") == 2
                ))
                .await,
                "{} failed handshakes of 2",
                failed.lock().expect("lock")
            );
            anyhow::Ok((modern, old))
        },
    ))?;

    let warnings = captured.failure_warnings();
    ensure!(warnings.len() == 2, "{warnings:#?}");
    for (client, what) in [(modern, "protocol version"), (old, "TLS 1.0/1.1")] {
        let line = warnings
            .iter()
            .find(|line| peer_of(line) == Some(client))
            .with_context(|| format!("no warning for {client}: {warnings:#?}"))?;
        ensure!(line.contains("protocol version"), "{line}");
        ensure!(line.contains(what), "{line}");
    }
    Ok(())
}
