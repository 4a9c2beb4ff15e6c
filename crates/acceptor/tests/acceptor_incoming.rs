//! `Incoming` and `accept` over mock connections: listener errors pass
//! through, failed handshakes are counted and skipped, the concurrency bound
//! and the handshake timeout hold, and the stream ends when the connections
//! do. Every test runs on smol and on async-std.
// `R` is the runtime `on_both_runtimes!` runs a test on, named or not.
#![allow(clippy::extra_unused_type_parameters)]

mod common;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use common::*;
use futures::io::Cursor;
use futures::{FutureExt, StreamExt};
use tls_reload_acceptor::{ReloadingAcceptor, TestDetector};

on_both_runtimes!(
    incoming_passes_listener_errors_and_skips_failed_handshakes,
    incoming_bounds_concurrent_handshakes_and_times_them_out,
    spawned_handshakes_are_bounded_counted_and_timed_out,
    accept_times_out_a_silent_client,
);

async fn acceptor(handshake_timeout: Duration) -> Result<(tempfile::TempDir, ReloadingAcceptor)> {
    let dir = tempfile::tempdir()?;
    let leaf = Ca::new("test server CA").leaf(0x1001);
    let acceptor = builder(write_pair(dir.path(), &leaf), &TestDetector::new())
        .handshake_timeout(handshake_timeout)
        .build()
        .await?;
    Ok((dir, acceptor))
}

async fn incoming_passes_listener_errors_and_skips_failed_handshakes<R: Runtime>() -> Result<()> {
    let (_dir, acceptor) = acceptor(DEADLINE).await?;
    let connections = futures::stream::iter(vec![
        Ok(Cursor::new(b"GET / HTTP/1.1\r\n\r\n".to_vec())),
        Err(io::Error::other("too many open files")),
        Ok(Cursor::new(Vec::new())),
    ]);
    let mut incoming = acceptor.incoming(connections);
    let first = timeout(DEADLINE, incoming.next().map(Ok)).await?;
    let error = first.expect("an item").expect_err("a listener error");
    assert_eq!(error.to_string(), "too many open files");
    // The two handshakes fail (not TLS, then EOF), are skipped, and the
    // stream ends with the connections.
    let rest = timeout(DEADLINE, incoming.by_ref().collect::<Vec<_>>().map(Ok)).await?;
    assert!(rest.is_empty(), "{} more item(s)", rest.len());
    assert_eq!(incoming.failed_handshakes(), 2);
    assert_eq!(incoming.handshakes_in_flight(), 0);
    Ok(())
}

async fn incoming_bounds_concurrent_handshakes_and_times_them_out<R: Runtime>() -> Result<()> {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(200);
    let (_dir, acceptor) = acceptor(HANDSHAKE_TIMEOUT).await?;
    let connections = futures::stream::iter((0..5).map(|_| Ok(Silent)));
    let mut incoming = acceptor.incoming(connections).max_handshakes(2);
    let started = Instant::now();
    assert!(incoming.next().now_or_never().is_none());
    assert_eq!(
        incoming.handshakes_in_flight(),
        2,
        "the bound does not hold"
    );

    let rest = timeout(DEADLINE, incoming.by_ref().collect::<Vec<_>>().map(Ok)).await?;
    let elapsed = started.elapsed();
    assert!(rest.is_empty());
    assert_eq!(incoming.failed_handshakes(), 5);
    // Two at a time: three rounds of timeouts.
    ensure!(elapsed >= 3 * HANDSHAKE_TIMEOUT, "done after {elapsed:?}");
    ensure!(
        elapsed < 3 * HANDSHAKE_TIMEOUT + Duration::from_secs(3),
        "done after {elapsed:?}"
    );
    Ok(())
}

async fn accept_times_out_a_silent_client<R: Runtime>() -> Result<()> {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(100);
    let (_dir, acceptor) = acceptor(HANDSHAKE_TIMEOUT).await?;
    let started = Instant::now();
    let result = timeout(DEADLINE, acceptor.accept(Silent).map(Ok)).await?;
    let error = result.expect_err("a silent client completed a handshake");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    ensure!(
        started.elapsed() >= HANDSHAKE_TIMEOUT,
        "timed out after {:?}",
        started.elapsed()
    );
    Ok(())
}

async fn spawned_handshakes_are_bounded_counted_and_timed_out<R: Runtime>() -> Result<()> {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(200);
    let (_dir, acceptor) = acceptor(HANDSHAKE_TIMEOUT).await?;
    let spawned = Arc::new(AtomicUsize::new(0));
    let counter = spawned.clone();
    let connections = futures::stream::iter((0..5).map(|_| Ok(Silent)));
    let mut incoming = acceptor
        .incoming(connections)
        .max_handshakes(2)
        .spawn_handshakes(move |task| {
            counter.fetch_add(1, Ordering::SeqCst);
            R::spawn_detached(Box::pin(task));
        });
    let started = Instant::now();
    assert!(incoming.next().now_or_never().is_none());
    assert_eq!(
        incoming.handshakes_in_flight(),
        2,
        "the bound does not hold"
    );
    assert_eq!(
        spawned.load(Ordering::SeqCst),
        2,
        "each handshake is a task"
    );

    let rest = timeout(DEADLINE, incoming.by_ref().collect::<Vec<_>>().map(Ok)).await?;
    let elapsed = started.elapsed();
    assert!(rest.is_empty());
    assert_eq!(incoming.failed_handshakes(), 5);
    assert_eq!(incoming.handshakes_in_flight(), 0);
    assert_eq!(spawned.load(Ordering::SeqCst), 5);
    ensure!(elapsed >= 3 * HANDSHAKE_TIMEOUT, "done after {elapsed:?}");
    ensure!(
        elapsed < 3 * HANDSHAKE_TIMEOUT + Duration::from_secs(3),
        "done after {elapsed:?}"
    );
    Ok(())
}
