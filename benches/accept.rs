//! What `ReloadingAcceptor::accept` adds to a handshake, against plain
//! futures-rustls: starting the handshake future and polling it once (it
//! then waits for a ClientHello) over an in-memory stream. Everything the
//! reloading acceptor does per connection happens here: the pending check,
//! loading the config, and the handshake deadline.
#![allow(missing_docs)]

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use futures::io::{AsyncRead, AsyncWrite};
use futures::task::noop_waker_ref;
use futures::Future;
use rcgen::{CertificateParams, KeyPair};
use tls_reload::acceptor::{ReloadingAcceptor, Template};

/// A connection whose peer has not sent anything yet.
struct Silent;

impl AsyncRead for Silent {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Pending
    }
}

impl AsyncWrite for Silent {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn start_once<F: Future + Unpin>(mut handshake: F) {
    let mut cx = Context::from_waker(noop_waker_ref());
    let _ = Pin::new(&mut handshake).poll(&mut cx);
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    let template = Template::new(Arc::new(rustls::crypto::ring::default_provider()));

    let ours = ReloadingAcceptor::from_files(&cert_path, &key_path)
        .template(template.clone())
        .build_blocking()
        .expect("acceptor");
    let untimed = ReloadingAcceptor::from_files(&cert_path, &key_path)
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
