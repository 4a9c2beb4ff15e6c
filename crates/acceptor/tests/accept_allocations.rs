//! The accept path allocates what plain futures-rustls allocates, counted
//! with a counting global allocator (`allocation-counter`, per thread) while
//! the server side of full TLS 1.3 handshakes is polled, over an in-memory
//! pipe so that nothing else runs on the thread.
//!
//! A client that never speaks costs no allocation at all: rustls's
//! connection is made when the first bytes come.
//!
//! A handshake deadline allocates nothing per accept: only a new grain (a
//! shared timer, at most one per 250 ms) makes a few allocations, which the
//! test bounds by the number of grains the run spans.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tls_reload_acceptor::{ReloadingAcceptor, Template};
use tls_reload_testkit::{client_config, poll_once, provider, write_pair, Ca, Pipe, Silent};

/// Allocations a new grain may make (the grain, its timer's waker, its
/// slots and free list).
const PER_GRAIN: u64 = 6;
/// The longest grain.
const GRAIN: Duration = Duration::from_millis(250);
const ROUNDS: usize = 24;

/// A pair on disk and the acceptors the tests compare: ours with its
/// handshake timeout, ours without, and plain futures-rustls with the same
/// config.
struct Acceptors {
    dir: tempfile::TempDir,
    ca: Ca,
    ours: ReloadingAcceptor,
    untimed: ReloadingAcceptor,
    plain: futures_rustls::TlsAcceptor,
}

fn acceptors() -> Acceptors {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("allocations CA");
    let materials = write_pair(dir.path(), &ca.leaf(0x1001));
    let template = Template::new(provider());
    let ours = ReloadingAcceptor::builder(materials.clone())
        .template(template.clone())
        .build_blocking()
        .expect("acceptor");
    let untimed = ReloadingAcceptor::builder(materials)
        .template(template)
        .handshake_timeout(None)
        .build_blocking()
        .expect("acceptor");
    let plain = futures_rustls::TlsAcceptor::from(ours.config());
    Acceptors {
        dir,
        ca,
        ours,
        untimed,
        plain,
    }
}

#[test]
fn the_accept_path_allocates_what_plain_futures_rustls_allocates() {
    let Acceptors {
        dir: _dir,
        ca,
        ours,
        untimed,
        plain,
    } = acceptors();
    let client = client_config(&ca, None);

    let plain_accept = |io: Pipe| plain.accept(io);
    let ours_accept = |io: Pipe| ours.accept(io);
    let untimed_accept = |io: Pipe| untimed.accept(io);
    // Warm up: lazily made statics, the first grain, buffers that settle.
    for _ in 0..3 {
        handshake(&client, plain_accept);
        handshake(&client, ours_accept);
        handshake(&client, untimed_accept);
    }

    let started = Instant::now();
    let (mut plain_counts, mut ours_counts, mut untimed_counts) = (vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        plain_counts.push(handshake(&client, plain_accept));
        ours_counts.push(handshake(&client, ours_accept));
        untimed_counts.push(handshake(&client, untimed_accept));
    }
    let grains = (started.elapsed().as_nanos() / GRAIN.as_nanos()) as u64 + 1;

    let floor = *plain_counts.iter().min().expect("counts");
    assert!(floor > 0, "the counting allocator is not in use");
    assert!(
        plain_counts.iter().all(|&n| n == floor),
        "plain futures-rustls itself varies: {plain_counts:?}"
    );
    assert_eq!(
        untimed_counts,
        vec![floor; ROUNDS],
        "without a timeout, every accept allocates what plain does ({floor})"
    );
    let extra: u64 = ours_counts.iter().map(|&n| n.saturating_sub(floor)).sum();
    assert!(
        ours_counts.iter().all(|&n| n >= floor),
        "fewer than plain? {ours_counts:?}"
    );
    let above = ours_counts.iter().filter(|&&n| n > floor).count() as u64;
    assert!(
        above <= grains && extra <= PER_GRAIN * grains,
        "beyond plain's {floor} per handshake, {above} handshakes allocated {extra} more \
         over {grains} grain(s): {ours_counts:?}"
    );
}

#[test]
fn a_client_that_never_speaks_costs_no_allocation() {
    let Acceptors {
        dir,
        ours,
        untimed,
        plain,
        ca: _,
    } = acceptors();
    // Named pairs only: the ClientHello is read before the connection.
    let named = ReloadingAcceptor::without_default_pair()
        .template(Template::new(provider()))
        .cert_dir(dir.path())
        .handshake_timeout(None)
        .build_blocking()
        .expect("acceptor");
    // Accept, poll once (the client has not spoken), drop.
    let silent = |accept: &dyn Fn() -> u64| {
        accept(); // warm up: the first grain
        (0..ROUNDS).map(|_| accept()).collect::<Vec<_>>()
    };
    let plain_counts =
        silent(&|| allocation_counter::measure(|| poll_once(plain.accept(Silent))).count_total);
    let untimed_counts =
        silent(&|| allocation_counter::measure(|| poll_once(untimed.accept(Silent))).count_total);
    let named_counts =
        silent(&|| allocation_counter::measure(|| poll_once(named.accept(Silent))).count_total);
    let started = Instant::now();
    let ours_counts =
        silent(&|| allocation_counter::measure(|| poll_once(ours.accept(Silent))).count_total);
    let grains = (started.elapsed().as_nanos() / GRAIN.as_nanos()) as u64 + 1;
    assert!(
        plain_counts.iter().all(|&n| n > 0),
        "plain futures-rustls allocates its connection: {plain_counts:?}"
    );
    assert_eq!(untimed_counts, vec![0; ROUNDS], "without a timeout");
    assert_eq!(named_counts, vec![0; ROUNDS], "named pairs only");
    let extra: u64 = ours_counts.iter().sum();
    assert!(
        extra <= PER_GRAIN * grains,
        "{extra} allocations over {grains} grain(s): {ours_counts:?}"
    );
}

/// One full handshake against `accept`: the allocations made while the
/// server side is started, polled and dropped.
fn handshake<F, A>(client: &Arc<rustls::ClientConfig>, accept: F) -> u64
where
    F: Fn(Pipe) -> A,
    A: Future<Output = io::Result<futures_rustls::server::TlsStream<Pipe>>> + Unpin,
{
    let (client_end, server_end) = Pipe::pair();
    let name = ServerName::try_from("localhost").expect("name");
    let connect = futures_rustls::TlsConnector::from(client.clone()).connect(name, client_end);
    let mut count = 0;
    let mut server = None;
    count += allocation_counter::measure(|| server = Some(accept(server_end))).count_total;
    let mut server = server.expect("started");
    let mut served = None;
    let client = futures::executor::block_on(futures::future::join(
        connect,
        futures::future::poll_fn(|cx| {
            let mut poll = Poll::Pending;
            count +=
                allocation_counter::measure(|| poll = Pin::new(&mut server).poll(cx)).count_total;
            match poll {
                Poll::Ready(result) => {
                    served = Some(result);
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            }
        }),
    ))
    .0
    .expect("client handshake");
    let served = served.expect("served").expect("server handshake");
    count += allocation_counter::measure(|| drop((served, server))).count_total;
    drop(client);
    count
}
