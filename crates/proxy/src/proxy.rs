//! The proxy proper: accept TCP under the connection limit, run the TLS
//! handshakes through the reloading acceptor, connect to the target and copy
//! both ways. Each worker runs [`Proxy::serve`] on its own listening socket
//! and executor; the [`Proxy`] (acceptor, limit, counters) is shared.
//!
//! The connection limit, shared by the workers, is a semaphore taken
//! **before** `accept`: at the limit the proxy stops accepting, so new
//! connections wait in the listen backlog (and connect, as far as the
//! kernel is concerned) until an open one ends. Nothing is accepted only to
//! be closed at once. A worker takes a slot only once its socket has a
//! connection waiting, so workers waiting for connections hold no slot that
//! another's waiting connection needs.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures::future::{self, Either};
use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures::stream::{self, Stream, StreamExt};
use smol::channel::{Receiver, Sender};
use smol::lock::{Semaphore, SemaphoreGuardArc};
use smol::Executor;
use tls_reload_acceptor::rustls::pki_types::ServerName;
use tls_reload_acceptor::{
    LogLimit, ReloadingAcceptor, ReloadingConnector, TlsStream, DEFAULT_LOG_WINDOW,
    DEFAULT_MAX_HANDSHAKES,
};

use crate::access::{Allow, Denied};
use crate::args::{Args, Target};
use crate::copy::copy_bidirectional;
use crate::metrics::Counters;

/// How long the accept loop pauses after `accept` fails (say, out of file
/// descriptors), so that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Per-connection failures (target unreachable, client refused) logged
/// per second; the rest are counted in one line when the second ends.
const FAILURE_LOG_BUDGET: u32 = 10;

/// How long a client closed by the proxy (refused, idle) has to take its
/// `close_notify` before the socket is just closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the proxy needs to serve connections, shared by the workers.
#[derive(Debug)]
pub(crate) struct Proxy {
    /// Runs the handshakes with the newest good config; `None` for a
    /// plaintext listener.
    pub(crate) acceptor: Option<ReloadingAcceptor>,
    /// TLS towards the target, and the name sent and verified
    /// (`--target-tls`).
    pub(crate) connector: Option<(ReloadingConnector, ServerName<'static>)>,
    /// Where the plaintext goes.
    target: Target,
    /// The bound on connecting to the target.
    connect_timeout: Duration,
    /// The most client connections open at once.
    max_connections: usize,
    /// Slots of the connection limit, for all workers.
    limit: Arc<Semaphore>,
    /// Says when the limit is reached, one line per window then a count.
    at_limit: Arc<Mutex<LogLimit>>,
    /// The client identities allowed in.
    allow: Allow,
    /// How long a connection may be silent both ways, if bounded.
    idle_timeout: Option<Duration>,
    /// Per-connection failures logged, [`FAILURE_LOG_BUDGET`] a second.
    failures: Mutex<LogLimit>,
    /// Shared with the status page.
    pub(crate) counters: Arc<Counters>,
}

/// The connections open, across the workers; see [`Drain::wait`].
#[derive(Debug)]
pub(crate) struct Drain {
    open: Receiver<()>,
}

impl Drain {
    /// A drain, and the sender that each worker's [`Proxy::serve`] takes a
    /// clone of (dropped when the accepting stops).
    pub(crate) fn new() -> (Sender<()>, Self) {
        let (slots, open) = smol::channel::bounded(1);
        (slots, Self { open })
    }

    /// Waits until every connection accepted so far has closed.
    pub(crate) async fn wait(&self) {
        // Nothing is ever sent: `recv` fails once every slot's sender is gone.
        while self.open.recv().await.is_ok() {}
    }
}

impl Proxy {
    /// A proxy as `args` describe it.
    pub(crate) fn new(
        acceptor: Option<ReloadingAcceptor>,
        connector: Option<ReloadingConnector>,
        args: &Args,
        counters: Arc<Counters>,
    ) -> Self {
        let name = args.target_tls.as_ref().map(|tls| tls.name.clone());
        Self {
            acceptor,
            connector: connector.zip(name),
            target: args.target.clone(),
            connect_timeout: args.connect_timeout,
            max_connections: args.max_connections,
            limit: Arc::new(Semaphore::new(args.max_connections)),
            // Clients can hit the limit at will.
            at_limit: Arc::new(Mutex::new(LogLimit::new(1, DEFAULT_LOG_WINDOW))),
            allow: args.allow.clone(),
            idle_timeout: args.idle_timeout,
            failures: Mutex::new(LogLimit::new(FAILURE_LOG_BUDGET, Duration::from_secs(1))),
            counters,
        }
    }

    /// Accepts connections on `listener` and proxies them on `executor`
    /// until `stop` completes, then closes the listener (its queued
    /// connections are refused). Each connection holds a clone of `slots`
    /// (see [`Drain`]) until it ends.
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: Async<TcpListener>,
        executor: &Executor<'static>,
        slots: Sender<()>,
        stop: impl Future<Output = ()>,
    ) {
        let connections = self.clone().connections(listener, slots);
        let accept_loop = async {
            match self.acceptor.clone() {
                Some(acceptor) => self.accept_tls(acceptor, connections, executor).await,
                None => self.accept_plain(connections, executor).await,
            }
        };
        futures::pin_mut!(accept_loop, stop);
        if let Either::Left(((), stop)) = future::select(accept_loop, stop).await {
            // The listener's stream of connections never ends.
            stop.await;
        }
    }

    /// Runs the TLS handshakes of `connections` and proxies each client.
    async fn accept_tls(
        self: &Arc<Self>,
        acceptor: ReloadingAcceptor,
        connections: Pin<Box<dyn Stream<Item = io::Result<Tcp>> + Send>>,
        executor: &Executor<'static>,
    ) {
        let max_handshakes = self.max_connections.min(DEFAULT_MAX_HANDSHAKES);
        let mut incoming = acceptor
            .incoming(connections)
            .max_handshakes(max_handshakes)
            .peer_addr_with(|tcp| Some(tcp.peer));
        let counters = self.counters.clone();
        let mut failed = 0;
        // Polled whenever a handshake moves, not only when one succeeds.
        let mut clients = stream::poll_fn(move |cx| {
            let next = incoming.poll_next_unpin(cx);
            // This worker's count; the counters sum the workers'.
            let now = incoming.failed_handshakes();
            counters.handshakes_failed(now - failed);
            failed = now;
            next
        });
        while let Some(client) = clients.next().await {
            match client {
                Ok(tls) => executor.spawn(self.clone().tls_client(tls)).detach(),
                Err(error) => accept_failed(error).await,
            }
        }
    }

    /// Proxies each of `connections` as it comes (a plaintext listener).
    async fn accept_plain(
        self: &Arc<Self>,
        mut connections: Pin<Box<dyn Stream<Item = io::Result<Tcp>> + Send>>,
        executor: &Executor<'static>,
    ) {
        while let Some(client) = connections.next().await {
            match client {
                Ok(mut tcp) => {
                    let proxy = self.clone();
                    let peer = tcp.peer;
                    executor
                        .spawn(async move { proxy.forward(&mut tcp, peer).await })
                        .detach();
                }
                Err(error) => accept_failed(error).await,
            }
        }
    }

    /// The listener's connections, each holding a slot of the connection
    /// limit, taken once a connection waits and before `accept`.
    fn connections(
        self: Arc<Self>,
        listener: Async<TcpListener>,
        slots: Sender<()>,
    ) -> Pin<Box<dyn Stream<Item = io::Result<Tcp>> + Send>> {
        Box::pin(stream::unfold(listener, move |listener| {
            let (proxy, slots) = (self.clone(), slots.clone());
            async move {
                let accepted = proxy.accept(&listener, slots).await;
                Some((accepted, listener))
            }
        }))
    }

    /// The next connection on `listener`, once a slot is free.
    async fn accept(&self, listener: &Async<TcpListener>, slots: Sender<()>) -> io::Result<Tcp> {
        loop {
            listener.readable().await?;
            let permit = match self.limit.try_acquire_arc() {
                Some(permit) => permit,
                None => {
                    self.warn_at_limit();
                    self.limit.acquire_arc().await
                }
            };
            let (io, peer) = match listener.get_ref().accept() {
                Ok(accepted) => accepted,
                // Woken for nothing, or the connection went: wait again,
                // giving the slot back.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            };
            let io = Async::new(io)?;
            nodelay(&io);
            self.counters.opened();
            return Ok(Tcp {
                io,
                peer,
                slot: Some(Slot {
                    _permit: permit,
                    _open: slots,
                    counters: self.counters.clone(),
                }),
            });
        }
    }

    /// Says that the connection limit is reached, within the log's budget.
    fn warn_at_limit(&self) {
        let now = Instant::now();
        let mut log = self.at_limit.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = log.roll_over(now) {
            tracing::warn!(
                times = held.count,
                over = ?held.over,
                "connection limit reached more times than logged"
            );
        }
        if log.admit(now).log {
            tracing::warn!(
                max = self.max_connections,
                "connection limit reached; new connections wait in the backlog"
            );
        } else {
            tracing::debug!(max = self.max_connections, "connection limit reached");
        }
    }

    /// Proxies one client whose handshake is done, if the allow lists let
    /// it in.
    async fn tls_client(self: Arc<Self>, mut client: TlsStream<Tcp>) {
        let peer = client.get_ref().0.peer;
        if let Err(denied) = self.allow.check(client.get_ref().1.peer_certificates()) {
            self.counters.client_denied();
            if self.admit_failure_log() {
                match &denied {
                    Denied::NotAllowed { subject } => {
                        tracing::warn!(%peer, ?subject, "client refused: {denied}");
                    }
                    _ => tracing::warn!(%peer, "client refused: {denied}"),
                }
            }
            close_within(&mut client).await;
            return;
        }
        self.forward(&mut client, peer).await;
    }

    /// Connects to the target (over TLS with `--target-tls`) and copies
    /// both ways between it and `client`.
    ///
    /// The streams are borrowed and the TLS branch is boxed: a connection's
    /// task is allocated at its largest state, and every idle connection
    /// pays for it (the TLS branch inline, with the client's stream moved
    /// down each call, took 8 kB more per connection).
    async fn forward<C>(&self, client: &mut C, peer: SocketAddr)
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let started = Instant::now();
        let mut tcp = match connect(&self.target, self.connect_timeout).await {
            Ok(tcp) => tcp,
            Err(error) => return self.unreachable(client, peer, &error).await,
        };
        match &self.connector {
            None => self.copy(client, &mut tcp, peer).await,
            Some((connector, name)) => {
                let left = self.connect_timeout.saturating_sub(started.elapsed());
                let over_tls = self.forward_tls(connector, name, left, client, tcp, peer);
                Box::pin(over_tls).await;
            }
        }
    }

    /// [`forward`](Self::forward)'s TLS branch: the handshake with the
    /// target within `left`, then the copy.
    async fn forward_tls<C>(
        &self,
        connector: &ReloadingConnector,
        name: &ServerName<'static>,
        left: Duration,
        client: &mut C,
        tcp: Tcp,
        peer: SocketAddr,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = async {
            connector.connect(name.clone(), tcp).await.map_err(|error| {
                io::Error::new(error.kind(), format!("TLS to the target: {error}"))
            })
        };
        let timed_out = async {
            Timer::after(left).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no TLS handshake with the target within {:?}",
                    self.connect_timeout
                ),
            ))
        };
        match smol::future::or(handshake, timed_out).await {
            Ok(mut tls) => self.copy(client, &mut tls, peer).await,
            Err(error) => self.unreachable(client, peer, &error).await,
        }
    }

    /// Counts and logs a target that could not be reached, and closes the
    /// client.
    async fn unreachable<C>(&self, client: &mut C, peer: SocketAddr, error: &io::Error)
    where
        C: AsyncWrite + Unpin,
    {
        self.counters.target_connect_failed();
        if self.admit_failure_log() {
            tracing::warn!(%peer, target = %self.target, %error, "cannot reach the target; closing the client");
        }
        close_within(client).await;
    }

    /// Copies both ways between `client` and `target` until both ended.
    async fn copy<C, T>(&self, client: &mut C, target: &mut T, peer: SocketAddr)
    where
        C: AsyncRead + AsyncWrite + Unpin,
        T: AsyncRead + AsyncWrite + Unpin,
    {
        match copy_bidirectional(client, target, self.idle_timeout).await {
            Ok(copied) => tracing::debug!(
                %peer,
                to_target = copied.forward,
                to_client = copied.backward,
                "connection closed"
            ),
            Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                self.counters.idle_timed_out();
                tracing::debug!(%peer, %error, "closing an idle connection");
                close_within(client).await;
            }
            Err(error) => tracing::debug!(%peer, %error, "connection ended with an error"),
        }
    }

    /// Whether to log one more per-connection failure now; says first how
    /// many the last window held back, if it just ended.
    fn admit_failure_log(&self) -> bool {
        let now = Instant::now();
        let mut log = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let admission = log.admit(now);
        if let Some(held) = admission.ended {
            tracing::warn!(
                times = held.count,
                over = ?held.over,
                "more connection failures than logged"
            );
        }
        admission.log
    }
}

/// Logs a failed `accept` and pauses, so that an error that repeats (out of
/// descriptors, say) does not spin the loop.
async fn accept_failed(error: io::Error) {
    tracing::warn!(%error, "accept failed");
    Timer::after(ACCEPT_ERROR_PAUSE).await;
}

/// Closes `client` (for TLS `close_notify`, then the write half), giving up
/// after [`CLOSE_TIMEOUT`] if it does not take it.
async fn close_within<C: AsyncWrite + Unpin>(client: &mut C) {
    let closing = async {
        let _ = client.close().await;
    };
    let given_up = async {
        Timer::after(CLOSE_TIMEOUT).await;
    };
    smol::future::or(closing, given_up).await;
}

/// Connects to the target within `timeout`, trying each address the host
/// name resolves to.
async fn connect(target: &Target, timeout: Duration) -> io::Result<Tcp> {
    let attempt = async {
        let addrs = match target {
            Target::Addr(addr) => vec![*addr],
            Target::Host(host) => smol::net::resolve(host.as_str()).await?,
        };
        let mut last_error = None;
        for addr in addrs {
            match Async::<TcpStream>::connect(addr).await {
                Ok(io) => return Ok((io, addr)),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("the host name has no address")))
    };
    let timed_out = async {
        Timer::after(timeout).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection after {timeout:?}"),
        ))
    };
    let (io, peer) = smol::future::or(attempt, timed_out).await?;
    nodelay(&io);
    Ok(Tcp {
        io,
        peer,
        slot: None,
    })
}

fn nodelay(io: &Async<TcpStream>) {
    if let Err(error) = io.get_ref().set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
}

/// A TCP stream whose `close` shuts down its write half (a half-close the
/// peer sees as EOF), holding a slot of the connection limit if it is a
/// client's.
pub(crate) struct Tcp {
    io: Async<TcpStream>,
    peer: SocketAddr,
    slot: Option<Slot>,
}

/// A client's place under the connection limit, given back on drop.
struct Slot {
    _permit: SemaphoreGuardArc,
    /// Keeps [`Drain::wait`] waiting.
    _open: Sender<()>,
    counters: Arc<Counters>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.closed();
    }
}

impl fmt::Debug for Tcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tcp")
            .field("peer", &self.peer)
            .field("client", &self.slot.is_some())
            .finish()
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Shuts down the write half; `Async<TcpStream>`'s own close only
    /// flushes.
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match self.io.get_ref().shutdown(Shutdown::Write) {
            Err(error) if error.kind() != io::ErrorKind::NotConnected => Err(error),
            _ => Ok(()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::args::{parse, Command};

    /// Every idle connection's task is allocated at its largest state, so
    /// its size is memory per idle connection. Client mode once added 8 kB
    /// to it (an inline TLS target stream and copies of the client stream).
    #[test]
    fn the_copy_part_of_a_connection_task_stays_small() {
        let line = "--listen 127.0.0.1:0 --target 127.0.0.1:1 --cert c --key k";
        let Ok(Command::Run(args)) = parse(line.split(' ')) else {
            panic!("{line} does not parse");
        };
        let proxy = Proxy::new(None, None, &args, Arc::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut client = Tcp {
            peer: stream.peer_addr().unwrap(),
            io: Async::new(stream).unwrap(),
            slot: None,
        };
        let peer = client.peer;
        let forward = proxy.forward(&mut client, peer);
        let size = std::mem::size_of_val(&forward);
        // 1,000 bytes: a rustls connection (about 1.2 kB) inline would not fit.
        assert!(size < 1_000, "the forward future takes {size} bytes");
    }
}
