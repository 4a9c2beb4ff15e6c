//! What the `first_bytes` fuzz target checks: whatever a client sends first
//! goes through `ReloadingAcceptor::accept`, which reads it before it makes
//! rustls's connection (or, with named pairs only, reads the ClientHello
//! itself). Included with `#[path]` by the fuzz target and by the stable
//! regression test `tests/fuzz_regressions.rs`.
//!
//! Input: a mode byte (bit 0: named pairs only; bit 1: the client closes
//! after its bytes), a chunk size (0: all at once), then the bytes, handed
//! to the handshake a chunk per read. Never a panic; the handshake fails,
//! or waits for more, and never completes (the fuzzer cannot finish a TLS
//! handshake); a client that closed makes it fail, not wait.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use tls_reload::acceptor::{PairFiles, ReloadingAcceptor, Template};

struct Acceptors {
    _dir: tempfile::TempDir,
    direct: ReloadingAcceptor,
    named: ReloadingAcceptor,
}

fn acceptors() -> &'static Acceptors {
    static ACCEPTORS: OnceLock<Acceptors> = OnceLock::new();
    ACCEPTORS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, include_bytes!("../fixtures/identity.crt")).expect("cert");
        std::fs::write(&key, include_bytes!("../fixtures/identity.key")).expect("key");
        let template = Template::new(Arc::new(rustls::crypto::ring::default_provider()));
        // No handshake timeout: nothing of a timer in the fuzzer.
        let direct = ReloadingAcceptor::from_files(&cert, &key)
            .template(template.clone())
            .handshake_timeout(None)
            .build_blocking()
            .expect("an acceptor with a default pair");
        let named = ReloadingAcceptor::without_default_pair()
            .template(template)
            .pair(PairFiles::new("identity", &cert, &key))
            .handshake_timeout(None)
            .build_blocking()
            .expect("an acceptor with named pairs only");
        Acceptors {
            _dir: dir,
            direct,
            named,
        }
    })
}

/// A client that says `bytes`, `chunk` at a time, then waits or closes;
/// what is written to it is taken.
struct Client<'a> {
    bytes: &'a [u8],
    chunk: usize,
    closes: bool,
}

impl AsyncRead for Client<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.bytes.is_empty() {
            return if self.closes {
                Poll::Ready(Ok(0))
            } else {
                Poll::Pending
            };
        }
        let n = self.bytes.len().min(self.chunk).min(buf.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Client<'_> {
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

/// The `first_bytes` target.
pub(crate) fn first_bytes(data: &[u8]) {
    let [mode, chunk, bytes @ ..] = data else {
        return;
    };
    let acceptors = acceptors();
    let acceptor = if mode & 1 == 0 {
        &acceptors.direct
    } else {
        &acceptors.named
    };
    let closes = mode & 2 != 0;
    let chunk = match *chunk {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let mut handshake = acceptor.accept(Client {
        bytes,
        chunk,
        closes,
    });
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    // Each poll takes at least a chunk until the bytes run out; a few more
    // polls show a handshake that waits keeps waiting.
    for _ in 0..bytes.len() / chunk.min(bytes.len()).max(1) + 4 {
        match Pin::new(&mut handshake).poll(&mut cx) {
            Poll::Ready(Ok(_)) => panic!("a handshake completed on fuzzed bytes"),
            Poll::Ready(Err(_)) => return,
            Poll::Pending => {}
        }
    }
    assert!(
        !closes,
        "a client that closed left the handshake waiting ({} bytes)",
        bytes.len()
    );
}
