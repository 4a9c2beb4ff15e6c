use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use futures_rustls::server::TlsStream;

use crate::{Accept, ReloadingAcceptor};

/// How many handshakes [`Incoming`] runs at once unless told otherwise.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;

/// TLS streams from a stream of connections, from
/// [`ReloadingAcceptor::incoming`].
///
/// Handshakes run concurrently (up to
/// [`max_handshakes`](Incoming::max_handshakes) at once, after which new
/// connections wait in the listener's backlog), each bounded by the
/// acceptor's handshake timeout, so a silent or slow client never holds up
/// the others. A failed handshake is logged with `tracing` and skipped; an
/// error from the connection stream itself (say, too many open files) is
/// yielded, and the stream goes on.
///
/// The handshakes are driven by the task that polls this stream, so their
/// CPU work runs on one thread at a time. That suits most servers; one that
/// needs more full handshakes per second than a core can do should spawn a
/// task per connection with [`ReloadingAcceptor::accept`] instead, which
/// applies the same handshake timeout.
pub struct Incoming<S, IO> {
    acceptor: ReloadingAcceptor,
    connections: Option<S>,
    handshakes: FuturesUnordered<Accept<IO>>,
    max_handshakes: usize,
    failed: u64,
}

impl<S, IO> Incoming<S, IO>
where
    S: Stream<Item = io::Result<IO>> + Unpin,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    pub(crate) fn new(acceptor: ReloadingAcceptor, connections: S) -> Self {
        Self {
            acceptor,
            connections: Some(connections),
            handshakes: FuturesUnordered::new(),
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            failed: 0,
        }
    }

    /// Sets how many handshakes may run at once.
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.max(1);
        self
    }

    /// How many handshakes failed or timed out so far.
    pub fn failed_handshakes(&self) -> u64 {
        self.failed
    }

    /// How many handshakes are running now.
    pub fn handshakes_in_flight(&self) -> usize {
        self.handshakes.len()
    }
}

impl<S, IO> Stream for Incoming<S, IO>
where
    S: Stream<Item = io::Result<IO>> + Unpin,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    type Item = io::Result<TlsStream<IO>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            while this.handshakes.len() < this.max_handshakes {
                let Some(connections) = this.connections.as_mut() else {
                    break;
                };
                match connections.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(io))) => this.handshakes.push(this.acceptor.accept(io)),
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                    Poll::Ready(None) => this.connections = None,
                    Poll::Pending => break,
                }
            }
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(stream))) => return Poll::Ready(Some(Ok(stream))),
                Poll::Ready(Some(Err(error))) => {
                    this.failed += 1;
                    tracing::warn!(%error, "TLS handshake failed");
                }
                Poll::Ready(None) if this.connections.is_none() => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S, IO> fmt::Debug for Incoming<S, IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("handshakes_in_flight", &self.handshakes.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}
