//! Run with: cargo build --release --example accept_instructions, then
//! `valgrind --tool=callgrind target/release/examples/accept_instructions KIND N`
//! for KIND `plain` and `ours` and two values of N (say 1000 and 3000).
//!
//! Starts N TLS handshakes of one kind over a stream whose peer never
//! speaks, polling each once (what an accept costs before the ClientHello),
//! for callgrind to count instructions: the difference between the two N,
//! divided by their difference, is the instructions per accept start,
//! whatever the start-up cost. `plain` is futures-rustls's `TlsAcceptor`
//! with the same config, `ours` is `ReloadingAcceptor::accept` with its
//! handshake timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;

use futures::task::noop_waker_ref;
use futures::Future;
use tls_reload::acceptor::{ReloadingAcceptor, Template};
use tls_reload_testkit::{write_pair, Ca, Silent};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_default();
    let n: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let dir = tempfile::tempdir()?;
    let materials = write_pair(dir.path(), &Ca::new("instructions CA").leaf(0x1001));
    let template = Template::new(Arc::new(rustls::crypto::ring::default_provider()));
    let ours = ReloadingAcceptor::builder(materials)
        .template(template)
        .build_blocking()?;
    let plain = futures_rustls::TlsAcceptor::from(ours.config());
    for _ in 0..n {
        match kind.as_str() {
            "plain" => start_once(plain.accept(Silent)),
            "ours" => start_once(ours.accept(Silent)),
            other => anyhow::bail!("KIND is plain or ours, not {other:?}"),
        }
    }
    Ok(())
}

/// Polls a handshake once: it sends nothing and waits for the ClientHello.
fn start_once<F: Future + Unpin>(mut handshake: F) {
    let mut cx = Context::from_waker(noop_waker_ref());
    let _ = Pin::new(&mut handshake).poll(&mut cx);
}
