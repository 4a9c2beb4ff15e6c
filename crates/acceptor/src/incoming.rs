use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::Timer;
use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use futures_rustls::server::TlsStream;
use rustls::PeerIncompatible;
use tracing::field;

use crate::log_limit::{LogLimit, Suppressed};
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
/// the others. A failed handshake is skipped and logged at `warn` with its
/// cause in words and, given [`peer_addr_with`](Incoming::peer_addr_with),
/// the peer's address; anyone can fail a handshake, so these warnings are
/// rate-limited (see [`warn_limit`](Incoming::warn_limit)). An error from
/// the connection stream itself (say, too many open files) is yielded, and
/// the stream goes on.
///
/// The handshakes are driven by the task that polls this stream, so their
/// CPU work runs on one thread at a time. That suits most servers; one that
/// needs more full handshakes per second than a core can do should spawn a
/// task per connection with [`ReloadingAcceptor::accept`] instead, which
/// applies the same handshake timeout.
pub struct Incoming<S, IO> {
    acceptor: ReloadingAcceptor,
    connections: Option<S>,
    handshakes: FuturesUnordered<Handshake<IO>>,
    max_handshakes: usize,
    failed: u64,
    peer_addr: fn(&IO) -> Option<SocketAddr>,
    warnings: LogLimit,
    /// Fires when `warnings` has a summary to give: (when, timer).
    summary_timer: Option<(Instant, Timer)>,
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
            peer_addr: unknown_peer,
            warnings: LogLimit::default(),
            summary_timer: None,
        }
    }

    /// Sets how many handshakes may run at once.
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.max(1);
        self
    }

    /// Names the peer of each connection in the warnings about failed
    /// handshakes (as `peer=ADDR`). `peer_addr` runs once per connection,
    /// when its handshake starts; a closure that captures nothing will do.
    ///
    /// ```no_run
    /// # use std::net::TcpListener;
    /// # use futures::StreamExt;
    /// # use smol::Async;
    /// # use tls_reload_acceptor::ReloadingAcceptor;
    /// # async fn serve(acceptor: ReloadingAcceptor, listener: Async<TcpListener>) {
    /// let mut incoming = acceptor
    ///     .incoming(Box::pin(listener.incoming()))
    ///     .peer_addr_with(|tcp| tcp.get_ref().peer_addr().ok());
    /// while let Some(tls) = incoming.next().await {
    ///     // ...
    /// }
    /// # }
    /// ```
    pub fn peer_addr_with(mut self, peer_addr: fn(&IO) -> Option<SocketAddr>) -> Self {
        self.peer_addr = peer_addr;
        self
    }

    /// Bounds the warnings about failed handshakes. Beyond the budget they
    /// are logged at `debug` only, and each window that held some back ends
    /// with one warning that counts them. Default: [`LogLimit::default`],
    /// at most 10 warnings per 10 s.
    pub fn warn_limit(mut self, limit: LogLimit) -> Self {
        self.finish_warnings();
        self.warnings = limit;
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

impl<S, IO> Incoming<S, IO> {
    fn handshake_failed(&mut self, error: &io::Error, peer: Option<SocketAddr>) {
        self.failed += 1;
        let admission = self.warnings.admit(Instant::now());
        if let Some(held) = admission.ended {
            warn_suppressed(held);
        }
        let peer = peer.map(field::display);
        let error = HandshakeError(error);
        if admission.log {
            tracing::warn!(peer, %error, "TLS handshake failed");
        } else {
            tracing::debug!(peer, %error, "TLS handshake failed (warning rate-limited)");
        }
        self.arm_summary();
    }

    /// Keeps the summary timer on the moment the limit has a summary due.
    fn arm_summary(&mut self) {
        let due = self.warnings.summary_due();
        match (due, &self.summary_timer) {
            (Some(due), Some((armed, _))) if *armed == due => {}
            (Some(due), _) => self.summary_timer = Some((due, Timer::at(due))),
            (None, _) => self.summary_timer = None,
        }
    }

    /// Logs the summary once its window has ended; registers for a wake-up
    /// until then.
    fn poll_summary(&mut self, cx: &mut Context<'_>) {
        while let Some((_, timer)) = self.summary_timer.as_mut() {
            if Pin::new(timer).poll(cx).is_pending() {
                return;
            }
            self.summary_timer = None;
            if let Some(held) = self.warnings.roll_over(Instant::now()) {
                warn_suppressed(held);
            }
            self.arm_summary();
        }
    }

    /// Logs what the limit still holds back, whether its window has ended
    /// or not.
    fn finish_warnings(&mut self) {
        self.summary_timer = None;
        if let Some(held) = self.warnings.finish(Instant::now()) {
            warn_suppressed(held);
        }
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
                    Poll::Ready(Some(Ok(io))) => {
                        let peer = (this.peer_addr)(&io);
                        this.handshakes.push(Handshake {
                            accept: this.acceptor.accept(io),
                            peer,
                        });
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                    Poll::Ready(None) => this.connections = None,
                    Poll::Pending => break,
                }
            }
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some((Ok(stream), _))) => return Poll::Ready(Some(Ok(stream))),
                Poll::Ready(Some((Err(error), peer))) => this.handshake_failed(&error, peer),
                Poll::Ready(None) if this.connections.is_none() => {
                    this.finish_warnings();
                    return Poll::Ready(None);
                }
                Poll::Ready(None) | Poll::Pending => {
                    this.poll_summary(cx);
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<S, IO> Drop for Incoming<S, IO> {
    fn drop(&mut self) {
        self.finish_warnings();
    }
}

impl<S, IO> fmt::Debug for Incoming<S, IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("handshakes_in_flight", &self.handshakes.len())
            .field("failed", &self.failed)
            .field("warn_limit", &self.warnings)
            .finish_non_exhaustive()
    }
}

fn unknown_peer<IO>(_: &IO) -> Option<SocketAddr> {
    None
}

fn warn_suppressed(held: Suppressed) {
    tracing::warn!(
        suppressed = held.count,
        "suppressed {} TLS handshake failure warnings in the last {:?}",
        held.count,
        held.over
    );
}

/// A handshake, with the peer it is for.
struct Handshake<IO> {
    accept: Accept<IO>,
    peer: Option<SocketAddr>,
}

impl<IO> Future for Handshake<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    type Output = (io::Result<TlsStream<IO>>, Option<SocketAddr>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let peer = self.peer;
        Pin::new(&mut self.accept)
            .poll(cx)
            .map(|result| (result, peer))
    }
}

/// Why a handshake failed, in words: the cause where rustls tells it, else
/// rustls's (or the OS's) own message. Nothing the peer sent is quoted
/// beyond what that message holds.
struct HandshakeError<'a>(&'a io::Error);

impl fmt::Display for HandshakeError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = self.0;
        match error.kind() {
            io::ErrorKind::TimedOut => return f.write_str("handshake timed out"),
            io::ErrorKind::UnexpectedEof => {
                return f.write_str("the client closed the connection during the handshake")
            }
            _ => {}
        }
        // futures-rustls reports a TLS error as `InvalidData` wrapping it.
        let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return error.fmt(f);
        };
        match tls_cause(tls) {
            Some(words) => write!(f, "{words} ({tls})"),
            None => tls.fmt(f),
        }
    }
}

/// What a TLS error means, for the errors whose `Display` does not say.
fn tls_cause(error: &rustls::Error) -> Option<&'static str> {
    let rustls::Error::PeerIncompatible(why) = error else {
        return match error {
            rustls::Error::InvalidMessage(_) => Some("the client does not speak TLS, or not well"),
            _ => None,
        };
    };
    Some(match why {
        // Checked before the version: a TLS 1.0/1.1 hello has no
        // signature_algorithms extension (it is new in TLS 1.2).
        PeerIncompatible::SignatureAlgorithmsExtensionRequired => {
            "the client offers no signature algorithms: most likely an old protocol version \
             (TLS 1.0/1.1 clients fail this way)"
        }
        PeerIncompatible::Tls12NotOffered => {
            "the client offers no protocol version we accept (TLS 1.1 or older)"
        }
        PeerIncompatible::SupportedVersionsExtensionRequired => {
            "the client offers no protocol version we accept (TLS 1.2 at most, and only TLS 1.3 \
             is enabled here)"
        }
        PeerIncompatible::Tls12NotOfferedOrEnabled => {
            "the client offers no protocol version we accept (none of its versions is enabled \
             here)"
        }
        PeerIncompatible::Tls13RequiredForQuic => {
            "the client offers no protocol version we accept (QUIC needs TLS 1.3)"
        }
        PeerIncompatible::NoCipherSuitesInCommon => "the client offers no cipher suite we accept",
        PeerIncompatible::NoSignatureSchemesInCommon => {
            "the client accepts no signature scheme our certificate can make"
        }
        PeerIncompatible::NoKxGroupsInCommon => "the client offers no key exchange group we accept",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(error: io::Error) -> String {
        HandshakeError(&error).to_string()
    }

    fn tls(error: impl Into<rustls::Error>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error.into())
    }

    #[test]
    fn version_causes_say_protocol_version() {
        for why in [
            PeerIncompatible::SignatureAlgorithmsExtensionRequired,
            PeerIncompatible::SupportedVersionsExtensionRequired,
            PeerIncompatible::Tls12NotOffered,
            PeerIncompatible::Tls12NotOfferedOrEnabled,
            PeerIncompatible::Tls13RequiredForQuic,
        ] {
            let name = format!("{why:?}");
            let text = described(tls(why));
            assert!(text.contains("protocol version"), "{text}");
            assert!(text.contains(&name), "rustls's own words stay: {text}");
        }
        assert!(
            described(tls(PeerIncompatible::SignatureAlgorithmsExtensionRequired))
                .contains("TLS 1.0/1.1")
        );
    }

    #[test]
    fn timeouts_and_other_errors() {
        let timed_out = io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out");
        assert_eq!(described(timed_out), "handshake timed out");
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(
            described(reset),
            io::Error::from(io::ErrorKind::ConnectionReset).to_string()
        );
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA);
        assert_eq!(described(tls(alert.clone())), alert.to_string());
        let other = io::Error::new(io::ErrorKind::InvalidData, "not rustls");
        assert_eq!(described(other), "not rustls");
    }
}
