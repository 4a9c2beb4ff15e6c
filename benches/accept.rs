//! What `ReloadingAcceptor::accept` adds to a handshake, against plain
//! futures-rustls: starting the handshake future and polling it once over
//! an in-memory stream whose client has not spoken (the handshake then
//! waits for a ClientHello), then dropping it. Everything the reloading
//! acceptor does per connection happens here: the pending check, loading
//! the config, and the handshake deadline. Ours makes rustls's connection
//! only when the client's first bytes come, so this start costs it no
//! connection, where plain futures-rustls makes one at the accept.
//!
//! The second table starts handshakes whose client has spoken, in
//! plaintext (an HTTP request to the TLS port): both make the connection,
//! hand it the bytes, fail and write the alert. That is ours's path from
//! the first bytes on, with nothing heavier in it (a real ClientHello
//! would bring the key exchange and the signature, some hundred
//! microseconds that would drown the difference).
//!
//! After criterion's group, the differences measured in interleaved rounds
//! (a batch of each kind in turn; the median of the rounds' differences),
//! which a shared, noisy machine moves far less than criterion's
//! one-after-the-other timings: 300 rounds of 2,000 starts by default
//! (`ACCEPT_ROUNDS` and `ACCEPT_BATCH` set others), short enough that a
//! round the scheduler interrupts is one of many. Budget: ours within 25 ns
//! of plain.
//!
//! Plain futures-rustls has no handshake timeout; the usual way to give it
//! one, an async-io `Timer` raced against the handshake, is measured too,
//! so that the price of ours can be set against what a timeout costs
//! otherwise.
//! `cargo bench --bench accept -- --diff` prints the tables alone.
#![allow(missing_docs)]

use std::pin::Pin;
use std::task::Context;
use std::time::{Duration, Instant};

use criterion::Criterion;
use futures::future::select;
use futures::task::noop_waker_ref;
use futures::Future;
use tls_reload::acceptor::{ReloadingAcceptor, Template, DEFAULT_HANDSHAKE_TIMEOUT};
use tls_reload_testkit::{provider, write_pair, Ca, Silent};

/// A client that has said an HTTP request, to a TLS port: read once, then
/// nothing more; what is written to it is taken.
struct Plaintext {
    said: bool,
}

const HTTP: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

impl futures::io::AsyncRead for Plaintext {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.said {
            return std::task::Poll::Pending;
        }
        self.said = true;
        let n = HTTP.len().min(buf.len());
        buf[..n].copy_from_slice(&HTTP[..n]);
        std::task::Poll::Ready(Ok(n))
    }
}

impl futures::io::AsyncWrite for Plaintext {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_close(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn plaintext() -> Plaintext {
    Plaintext { said: false }
}

fn start_once<F: Future + Unpin>(mut handshake: F) {
    let mut cx = Context::from_waker(noop_waker_ref());
    let _ = Pin::new(&mut handshake).poll(&mut cx);
}

/// Plain futures-rustls raced against an async-io timer of ours's default
/// handshake timeout.
fn plain_with_timer(plain: &futures_rustls::TlsAcceptor) {
    start_once(select(
        plain.accept(Silent),
        async_io::Timer::after(DEFAULT_HANDSHAKE_TIMEOUT),
    ))
}

/// The three acceptors the bench compares.
struct Kinds {
    _dir: tempfile::TempDir,
    plain: futures_rustls::TlsAcceptor,
    ours: ReloadingAcceptor,
    untimed: ReloadingAcceptor,
}

fn kinds() -> Kinds {
    let dir = tempfile::tempdir().expect("tempdir");
    let materials = write_pair(dir.path(), &Ca::new("bench CA").leaf(0x1001));
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
    Kinds {
        _dir: dir,
        plain,
        ours,
        untimed,
    }
}

fn bench(c: &mut Criterion) {
    let Kinds {
        plain,
        ours,
        untimed,
        ..
    } = kinds();
    let mut group = c.benchmark_group("accept/start");
    group.bench_function("plain futures-rustls", |b| {
        b.iter(|| start_once(plain.accept(Silent)))
    });
    group.bench_function("ours", |b| b.iter(|| start_once(ours.accept(Silent))));
    group.bench_function("ours, no handshake timeout", |b| {
        b.iter(|| start_once(untimed.accept(Silent)))
    });
    group.bench_function("plain futures-rustls with an async-io Timer", |b| {
        b.iter(|| plain_with_timer(&plain))
    });
    group.finish();
    let mut group = c.benchmark_group("accept/plaintext");
    group.bench_function("plain futures-rustls", |b| {
        b.iter(|| start_once(plain.accept(plaintext())))
    });
    group.bench_function("ours", |b| b.iter(|| start_once(ours.accept(plaintext()))));
    group.finish();
}

/// Each kind's cost against plain, in interleaved rounds.
fn differences() {
    let kinds = kinds();
    let setting = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let (rounds, batch) = (
        setting("ACCEPT_ROUNDS", 301),
        setting("ACCEPT_BATCH", 2_000),
    );
    let time = |start: &dyn Fn()| {
        let begun = Instant::now();
        for _ in 0..batch {
            start();
        }
        begun.elapsed().as_secs_f64() * 1e9 / f64::from(batch)
    };
    let plain = || start_once(kinds.plain.accept(Silent));
    let ours = || start_once(kinds.ours.accept(Silent));
    let untimed = || start_once(kinds.untimed.accept(Silent));
    let timer = || plain_with_timer(&kinds.plain);
    let plain_spoken = || start_once(kinds.plain.accept(plaintext()));
    let ours_spoken = || start_once(kinds.ours.accept(plaintext()));
    let (mut base, mut timed, mut bare, mut timer_diffs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut spoken_base, mut spoken) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (p, o, u, t) = (time(&plain), time(&ours), time(&untimed), time(&timer));
        let (ps, os) = (time(&plain_spoken), time(&ours_spoken));
        if round > 0 {
            base.push(p);
            timed.push(o - p);
            bare.push(u - p);
            timer_diffs.push(t - p);
            spoken_base.push(ps);
            spoken.push(os - ps);
        }
    }
    println!(
        "\naccept start, median of {} interleaved rounds of {batch} (budget: ours within 25 ns of plain)",
        rounds - 1
    );
    println!("| accept start | ns | vs plain |");
    println!("|---|---:|---:|");
    let plain = median(base);
    println!("| plain futures-rustls | {plain:.0} | |");
    println!(
        "| ours | {:.0} | {:+.0} ns |",
        plain + median(timed.clone()),
        median(timed)
    );
    println!(
        "| ours, no handshake timeout | {:.0} | {:+.0} ns |",
        plain + median(bare.clone()),
        median(bare)
    );
    println!(
        "| plain futures-rustls with an async-io Timer ({DEFAULT_HANDSHAKE_TIMEOUT:?}) | {:.0} | {:+.0} ns |",
        plain + median(timer_diffs.clone()),
        median(timer_diffs)
    );
    println!(
        "\nfirst bytes in plaintext (connection made, bytes handed over, alert written), median of {} interleaved rounds of {batch}",
        rounds - 1
    );
    println!("| accept and a first poll that reads an HTTP request | ns | vs plain |");
    println!("|---|---:|---:|");
    let plain = median(spoken_base);
    println!("| plain futures-rustls | {plain:.0} | |");
    println!(
        "| ours | {:.0} | {:+.0} ns |",
        plain + median(spoken.clone()),
        median(spoken)
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What a handshake deadline is made of, alone on this machine: an
/// uncontended mutex lock and unlock (a deadline takes one at its first wait
/// and one at its end) and an `Arc` clone and drop (its grain's). The best
/// of five runs of two million each.
fn parts() {
    let time = |part: &mut dyn FnMut()| {
        const TIMES: u32 = 2_000_000;
        (0..5)
            .map(|_| {
                let begun = Instant::now();
                for _ in 0..TIMES {
                    part();
                }
                begun.elapsed().as_secs_f64() * 1e9 / f64::from(TIMES)
            })
            .fold(f64::MAX, f64::min)
    };
    let mutex = std::sync::Mutex::new(0u64);
    let grain = std::sync::Arc::new(0u64);
    let locked = time(&mut || {
        if let Ok(mut held) = mutex.lock() {
            *held += 1;
        }
    });
    let cloned = time(&mut || drop(std::hint::black_box(grain.clone())));
    println!("\nwhat a deadline is made of, alone (best of 5 runs of 2,000,000)");
    println!("| part | ns |");
    println!("|---|---:|");
    println!("| uncontended mutex lock and unlock | {locked:.1} |");
    println!("| `Arc` clone and drop | {cloned:.1} |");
}

fn main() {
    if std::env::args().any(|a| a == "--diff") {
        differences();
        parts();
        return;
    }
    // By hand rather than `criterion_group!`, whose `pub fn` has no docs.
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    differences();
}
