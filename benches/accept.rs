//! What `ReloadingAcceptor::accept` adds to a handshake, against plain
//! futures-rustls: starting the handshake future and polling it once (it
//! then waits for a ClientHello) over an in-memory stream. Everything the
//! reloading acceptor does per connection happens here: the pending check,
//! loading the config, and the handshake deadline.
#![allow(missing_docs)]

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use futures::task::noop_waker_ref;
use futures::Future;
use tls_reload::acceptor::{ReloadingAcceptor, Template};
use tls_reload_testkit::{provider, write_pair, Ca, Silent};

fn start_once<F: Future + Unpin>(mut handshake: F) {
    let mut cx = Context::from_waker(noop_waker_ref());
    let _ = Pin::new(&mut handshake).poll(&mut cx);
}

fn bench(c: &mut Criterion) {
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

    let mut group = c.benchmark_group("accept/start");
    group.bench_function("plain futures-rustls", |b| {
        b.iter(|| start_once(plain.accept(Silent)))
    });
    group.bench_function("ours", |b| b.iter(|| start_once(ours.accept(Silent))));
    group.bench_function("ours, no handshake timeout", |b| {
        b.iter(|| start_once(untimed.accept(Silent)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
