use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::{Async, Timer};
use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use futures::task::AtomicWaker;
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
/// By default the handshakes are driven by the task that polls this stream,
/// so their CPU work runs on one thread at a time. That suits most servers;
/// one that needs more full handshakes per second than a core can do hands
/// its executor's `spawn` to [`spawn_handshakes`](Incoming::spawn_handshakes),
/// and each handshake runs as a task of its own, on any thread, while this
/// stream still yields the TLS streams, bounds how many run at once and logs
/// the failures.
pub struct Incoming<S, IO> {
    acceptor: ReloadingAcceptor,
    connections: Option<S>,
    handshakes: FuturesUnordered<Handshake<IO>>,
    /// Set by `spawn_handshakes`: handshakes run as tasks.
    spawner: Option<Spawner<IO>>,
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
            spawner: None,
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

    /// Runs each handshake as a task of its own: `spawn` is handed the
    /// task's future and starts it on any executor (`smol::spawn(task).detach()`,
    /// `async_std::task::spawn(task)`, a thread pool's `spawn`...). Full
    /// handshakes then use as many cores as the executor has threads; this
    /// stream yields the TLS streams as they finish, in that order, and still
    /// bounds how many run at once, applies the handshake timeout and logs the
    /// failures.
    ///
    /// ```no_run
    /// # use std::net::TcpListener;
    /// # use futures::StreamExt;
    /// # use smol::Async;
    /// # use tls_reload_acceptor::{tcp_connections, ReloadingAcceptor};
    /// # async fn serve(acceptor: ReloadingAcceptor, listener: Async<TcpListener>) {
    /// let mut incoming = acceptor
    ///     .incoming(tcp_connections(&listener))
    ///     .spawn_handshakes(|task| smol::spawn(task).detach());
    /// while let Some(tls) = incoming.next().await {
    ///     // ...
    /// }
    /// # }
    /// ```
    ///
    /// A task whose stream is dropped before it finishes closes its
    /// connection when it does; dropping the task closes it at once.
    pub fn spawn_handshakes(
        mut self,
        spawn: impl FnMut(HandshakeTask<IO>) + Send + Sync + 'static,
    ) -> Self {
        self.spawner = Some(Spawner {
            spawn: Box::new(spawn),
            finished: Arc::new(Finished {
                queue: Mutex::new(VecDeque::new()),
                waker: AtomicWaker::new(),
                closed: AtomicBool::new(false),
            }),
            running: 0,
        });
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

    /// How many handshakes are running now (spawned ones included, until
    /// this stream takes their result).
    pub fn handshakes_in_flight(&self) -> usize {
        self.handshakes.len() + self.spawner.as_ref().map_or(0, |spawner| spawner.running)
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
            if let Some((result, peer)) = this.spawner.as_mut().and_then(|s| s.poll_finished(cx)) {
                match result {
                    Ok(stream) => return Poll::Ready(Some(Ok(stream))),
                    Err(error) => {
                        this.handshake_failed(&error, peer);
                        continue;
                    }
                }
            }
            while this.handshakes_in_flight() < this.max_handshakes {
                let Some(connections) = this.connections.as_mut() else {
                    break;
                };
                match connections.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(io))) => {
                        let handshake = Handshake {
                            peer: (this.peer_addr)(&io),
                            accept: this.acceptor.accept(io),
                        };
                        match this.spawner.as_mut() {
                            Some(spawner) => spawner.spawn(handshake),
                            None => this.handshakes.push(handshake),
                        }
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                    Poll::Ready(None) => this.connections = None,
                    Poll::Pending => break,
                }
            }
            // A spawned handshake that finishes from now on wakes this task:
            // `poll_finished` registered it before looking.
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some((Ok(stream), _))) => return Poll::Ready(Some(Ok(stream))),
                Poll::Ready(Some((Err(error), peer))) => this.handshake_failed(&error, peer),
                Poll::Ready(None)
                    if this.connections.is_none() && this.handshakes_in_flight() == 0 =>
                {
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
        if let Some(spawner) = &self.spawner {
            spawner.finished.close();
        }
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

/// Where spawned handshakes go, and how many run.
struct Spawner<IO> {
    spawn: Box<dyn FnMut(HandshakeTask<IO>) + Send + Sync>,
    finished: Arc<Finished<IO>>,
    /// Spawned, and not yet taken from `finished`.
    running: usize,
}

impl<IO> Spawner<IO> {
    fn spawn(&mut self, handshake: Handshake<IO>) {
        self.running += 1;
        (self.spawn)(HandshakeTask {
            handshake: Some(handshake),
            finished: self.finished.clone(),
        });
    }

    /// A finished handshake, if any; else the task is woken when one is.
    fn poll_finished(&mut self, cx: &mut Context<'_>) -> Option<Outcome<IO>> {
        self.finished.waker.register(cx.waker());
        let outcome = self.finished.lock().pop_front()?;
        self.running -= 1;
        Some(outcome)
    }
}

/// A handshake's result, with the peer it is for.
type Outcome<IO> = (io::Result<TlsStream<IO>>, Option<SocketAddr>);

/// Spawned handshakes that finished, waiting for [`Incoming`] to take them.
struct Finished<IO> {
    /// Held for a push or a pop; a queue's capacity is reused.
    queue: Mutex<VecDeque<Outcome<IO>>>,
    /// The task polling the `Incoming`.
    waker: AtomicWaker,
    /// The `Incoming` is gone: results are dropped, which closes them.
    closed: AtomicBool,
}

impl<IO> Finished<IO> {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Outcome<IO>>> {
        // Nothing panics while it is held.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, outcome: Outcome<IO>) {
        let (refused, was_empty) = {
            let mut queue = self.lock();
            let was_empty = queue.is_empty();
            if self.closed.load(Ordering::Acquire) {
                (Some(outcome), was_empty)
            } else {
                queue.push_back(outcome);
                (None, was_empty)
            }
        };
        // Dropped (the connection closed) outside the lock.
        drop(refused);
        // The stream sleeps only after finding the queue empty, so only the
        // push that ends an empty queue needs to wake it: under load, the
        // results that pile up behind it cost no wake-up each.
        if was_empty {
            self.waker.wake();
        }
    }

    fn close(&self) {
        let queue = {
            let mut queue = self.lock();
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut *queue)
        };
        drop(queue);
    }
}

/// A handshake run as a task of its own: see
/// [`Incoming::spawn_handshakes`]. Its result goes to the [`Incoming`] that
/// spawned it.
#[must_use = "futures do nothing unless polled"]
pub struct HandshakeTask<IO> {
    /// `None` once finished.
    handshake: Option<Handshake<IO>>,
    finished: Arc<Finished<IO>>,
}

impl<IO> Future for HandshakeTask<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(handshake) = self.handshake.as_mut() else {
            return Poll::Ready(());
        };
        let outcome = std::task::ready!(Pin::new(handshake).poll(cx));
        self.handshake = None;
        self.finished.push(outcome);
        Poll::Ready(())
    }
}

impl<IO> fmt::Debug for HandshakeTask<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeTask")
            .field("finished", &self.handshake.is_none())
            .finish_non_exhaustive()
    }
}

impl<IO> Drop for HandshakeTask<IO> {
    fn drop(&mut self) {
        if self.handshake.take().is_some() {
            // Dropped unfinished (an executor shutting down): the stream
            // must not wait for it.
            self.finished.push((
                Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the handshake's task was dropped",
                )),
                None,
            ));
        }
    }
}

/// Connections accepted from a TCP listener, each with `TCP_NODELAY` set:
/// a stream for [`ReloadingAcceptor::incoming`], from [`tcp_connections`].
///
/// A hand-written `poll_next` over the listener's readiness: no future is
/// made per connection. An error of `accept` (say, too many open files) is
/// yielded, and the stream goes on.
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct TcpConnections<'a> {
    listener: &'a Async<TcpListener>,
}

/// The connections `listener` accepts, with `TCP_NODELAY` set (a TLS
/// handshake is a few small writes that must not wait for each other).
///
/// ```no_run
/// # use std::net::TcpListener;
/// # use futures::StreamExt;
/// # use smol::Async;
/// # use tls_reload_acceptor::{tcp_connections, ReloadingAcceptor};
/// # async fn serve(acceptor: ReloadingAcceptor) -> std::io::Result<()> {
/// let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 8443))?;
/// let mut incoming = acceptor.incoming(tcp_connections(&listener));
/// while let Some(tls) = incoming.next().await {
///     // ...
/// }
/// # Ok(()) }
/// ```
pub fn tcp_connections(listener: &Async<TcpListener>) -> TcpConnections<'_> {
    TcpConnections { listener }
}

impl Stream for TcpConnections<'_> {
    type Item = io::Result<Async<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.listener.get_ref().accept() {
                Ok((tcp, _)) => {
                    let tcp = tcp.set_nodelay(true).and_then(|()| Async::new(tcp));
                    return Poll::Ready(Some(tcp));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(error) = std::task::ready!(self.listener.poll_readable(cx)) {
                        return Poll::Ready(Some(Err(error)));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Poll::Ready(Some(Err(error))),
            }
        }
    }
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
