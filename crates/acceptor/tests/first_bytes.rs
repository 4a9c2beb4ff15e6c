//! `accept` makes rustls's connection when the client's first bytes come,
//! not at the accept. Over real loopback sockets, on smol and async-std,
//! with a rustls client on a thread of its own: a client that leaves
//! without a word, or speaks plaintext, fails the handshake at once and as
//! plain futures-rustls fails it (same error kind, same alert on the wire);
//! a ClientHello that comes in pieces, or is larger than the first read,
//! completes the handshake, with a default pair and with named pairs only
//! (where the ClientHello is read before the connection is made).
// `R` is the runtime `on_both_runtimes!` runs a test on, named or not.
#![allow(clippy::extra_unused_type_parameters)]

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::*;
use futures::channel::oneshot;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use rustls::pki_types::ServerName;
use tls_reload_acceptor::{ReloadingAcceptor, Template, TestDetector};

on_both_runtimes!(
    a_client_that_leaves_without_a_word_fails_at_once_as_with_plain,
    plaintext_gets_the_alert_plain_sends_and_fails_at_once,
    client_hellos_in_pieces_or_larger_than_the_first_read_complete,
);

/// Longer than any of these tests may wait: a handshake that ends on its
/// own ended before it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// What "at once" means here: far below the handshake timeout.
const AT_ONCE: Duration = Duration::from_secs(5);

struct Setup {
    _dir: tempfile::TempDir,
    ca: Ca,
    acceptor: ReloadingAcceptor,
}

async fn setup() -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("first bytes CA");
    let acceptor = builder(
        write_pair(dir.path(), &ca.leaf(0x1001)),
        &TestDetector::new(),
    )
    .handshake_timeout(HANDSHAKE_TIMEOUT)
    .build()
    .await?;
    Ok(Setup {
        _dir: dir,
        ca,
        acceptor,
    })
}

/// Runs `client` on a thread of its own; its result, when it is done.
fn on_thread<T: Send + 'static>(
    client: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> oneshot::Receiver<io::Result<T>> {
    let (done, result) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(client());
    });
    result
}

async fn joined<T>(result: oneshot::Receiver<io::Result<T>>) -> Result<T> {
    let result = timeout(DEADLINE, result.map(Ok)).await?;
    Ok(result.context("the client thread panicked")??)
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(DEADLINE))?;
    Ok(tcp)
}

/// How a server side fails against `client`: the error, and how long it
/// took from the accept.
async fn server_failure<R: Runtime, T: Send + 'static>(
    accept: impl FnOnce(BoxIo) -> BoxFuture<'static, io::Result<()>>,
    client: impl FnOnce(SocketAddr) -> io::Result<T> + Send + 'static,
) -> Result<(io::Error, Duration, T)> {
    let (addr, mut connections) = listen::<R>()?;
    let client = on_thread(move || client(addr));
    let io = timeout(
        DEADLINE,
        connections
            .next()
            .map(|next| next.unwrap_or(Ok(Box::new(Silent)))),
    )
    .await?;
    let started = Instant::now();
    let result = timeout(DEADLINE, accept(io)).await;
    let took = started.elapsed();
    let error = result.err().context("the handshake succeeded")?;
    Ok((error, took, joined(client).await?))
}

fn ours(acceptor: &ReloadingAcceptor) -> impl FnOnce(BoxIo) -> BoxFuture<'static, io::Result<()>> {
    let acceptor = acceptor.clone();
    move |io| async move { acceptor.accept(io).await.map(drop) }.boxed()
}

fn plain(acceptor: &ReloadingAcceptor) -> impl FnOnce(BoxIo) -> BoxFuture<'static, io::Result<()>> {
    let plain = futures_rustls::TlsAcceptor::from(acceptor.config());
    move |io| async move { plain.accept(io).await.map(drop) }.boxed()
}

async fn a_client_that_leaves_without_a_word_fails_at_once_as_with_plain<R: Runtime>() -> Result<()>
{
    let Setup { acceptor, .. } = setup().await?;
    let leave = |addr| connect(addr)?.shutdown(Shutdown::Both);
    let (error, took, ()) = server_failure::<R, _>(ours(&acceptor), leave).await?;
    let (plain_error, _, ()) = server_failure::<R, _>(plain(&acceptor), leave).await?;
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    assert_eq!(error.kind(), plain_error.kind(), "{error} / {plain_error}");
    ensure!(took < AT_ONCE, "failed after {took:?}");
    Ok(())
}

/// Writes an HTTP request to a TLS port and returns what comes back
/// until the server closes.
fn http(addr: SocketAddr) -> io::Result<Vec<u8>> {
    let mut tcp = connect(addr)?;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer)?;
    Ok(answer)
}

async fn plaintext_gets_the_alert_plain_sends_and_fails_at_once<R: Runtime>() -> Result<()> {
    let Setup { acceptor, .. } = setup().await?;
    // The server side's connection goes with its future: the client reads
    // to the end.
    let (error, took, answer) = server_failure::<R, _>(ours(&acceptor), http).await?;
    let (plain_error, _, plain_answer) = server_failure::<R, _>(plain(&acceptor), http).await?;
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    assert_eq!(error.kind(), plain_error.kind(), "{error} / {plain_error}");
    ensure!(took < AT_ONCE, "failed after {took:?}");
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "an alert record: {answer:02x?}"
    );
    assert_eq!(answer, plain_answer, "the alert plain futures-rustls sends");
    Ok(())
}

/// A full handshake whose ClientHello is written in two parts, `split`
/// bytes first and the rest 50 ms later (whole without `split`), then an
/// echoed "ping"; the ClientHello's size.
fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    split: Option<usize>,
) -> io::Result<usize> {
    let mut tcp = connect(addr)?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let mut client = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello)?;
    }
    let (first, rest) = hello.split_at(split.unwrap_or(hello.len()).min(hello.len()));
    tcp.write_all(first)?;
    if !rest.is_empty() {
        std::thread::sleep(Duration::from_millis(50));
        tcp.write_all(rest)?;
    }
    let mut stream = rustls::Stream::new(&mut client, &mut tcp);
    stream.write_all(b"ping")?;
    let mut echoed = [0; 4];
    stream.read_exact(&mut echoed)?;
    if &echoed != b"ping" {
        return Err(io::Error::other(format!("echoed {echoed:?}")));
    }
    Ok(hello.len())
}

async fn client_hellos_in_pieces_or_larger_than_the_first_read_complete<R: Runtime>() -> Result<()>
{
    let Setup { acceptor, ca, _dir } = setup().await?;
    client_hellos_complete::<R>(&acceptor, &ca)
        .await
        .context("with a default pair")?;
    // Named pairs only: the ClientHello is read before the connection.
    let named = tempfile::tempdir()?;
    write_combined(
        named.path(),
        "local",
        &ca.named_leaf(0x1002, &["localhost"], new_key()),
    );
    let acceptor = ReloadingAcceptor::without_default_pair()
        .template(Template::new(provider()))
        .cert_dir(named.path())
        .handshake_timeout(HANDSHAKE_TIMEOUT)
        .build()
        .await?;
    client_hellos_complete::<R>(&acceptor, &ca)
        .await
        .context("with named pairs only")
}

async fn client_hellos_complete<R: Runtime>(acceptor: &ReloadingAcceptor, ca: &Ca) -> Result<()> {
    let (addr, mut connections) = listen::<R>()?;
    let serving = acceptor.clone();
    R::spawn_detached(
        async move {
            while let Some(Ok(io)) = connections.next().await {
                let accept = serving.accept(io);
                R::spawn_detached(
                    async move {
                        if let Ok(stream) = accept.await {
                            echo(stream).await;
                        }
                    }
                    .boxed(),
                );
            }
        }
        .boxed(),
    );
    let usual = client_config(ca, None);
    // Forty long ALPN names make a ClientHello of about 5 kB, more than
    // the first read takes (a server without ALPN ignores them).
    let mut large = (*usual).clone();
    large.alpn_protocols = (0..40)
        .map(|i| format!("protocol-{i:02}-{}", "x".repeat(100)).into_bytes())
        .collect();
    let large = Arc::new(large);
    // Eighty of 250 bytes: some 20 kB, more than one record holds.
    let mut huge = (*usual).clone();
    huge.alpn_protocols = (0..80)
        .map(|i| format!("protocol-{i:02}-{}", "x".repeat(238)).into_bytes())
        .collect();
    let huge = Arc::new(huge);
    for (config, at_least, split) in [
        (&usual, 0, None),
        (&usual, 0, Some(1)),
        (&usual, 0, Some(5)),
        (&usual, 0, Some(100)),
        (&large, 4096, None),
        (&large, 4096, Some(3000)),
        (&huge, 16 * 1024 + 5, None),
    ] {
        let config = config.clone();
        let size = joined(on_thread(move || handshake(addr, config, split)))
            .await
            .with_context(|| format!("a ClientHello of {at_least}+ bytes split at {split:?}"))?;
        ensure!(size > at_least, "the ClientHello is {size} bytes");
    }
    Ok(())
}
