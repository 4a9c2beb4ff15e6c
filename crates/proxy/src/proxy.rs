//! The proxy proper: accept TCP under the connection limit, run the TLS
//! handshakes through the reloading acceptor, connect to the target and copy
//! both ways. One accept loop ([`Proxy::dispatch`]) takes every connection
//! and hands it to the worker with the fewest open connections; each worker
//! runs [`Proxy::serve`] on its own thread and executor, where the
//! connection's handshake and copy stay. The [`Proxy`] (acceptor, limit,
//! counters) is shared.
//!
//! The connection limit is a semaphore taken **before** `accept`: at the
//! limit the proxy stops accepting, so new connections wait in the listen
//! backlog (and connect, as far as the kernel is concerned) until an open
//! one ends. Nothing is accepted only to be closed at once.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures::ready;
use futures::stream::{self, Stream, StreamExt};
use smol::channel::{Receiver, Sender};
use smol::lock::{Semaphore, SemaphoreGuardArc};
use tls_reload_acceptor::rustls::pki_types::ServerName;
use tls_reload_acceptor::{
    LogLimit, ReloadingAcceptor, ReloadingConnector, TlsStream, DEFAULT_LOG_WINDOW,
    DEFAULT_MAX_HANDSHAKES,
};

use crate::access::{Allow, Denied};
use crate::args::{Args, Target};
use crate::busy;
use crate::copy::{self, copy_bidirectional};
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

    /// Accepts connections on `listener` until `stop` completes, each under
    /// a slot of the connection limit and holding a clone of `slots` (see
    /// [`Drain`]) until it ends, and hands each to the worker of `workers`
    /// with the fewest open connections; then closes the listener (its
    /// queued connections are refused) and the workers' queues.
    pub(crate) async fn dispatch(
        self: Arc<Self>,
        listener: Async<TcpListener>,
        workers: Vec<Worker>,
        slots: Sender<()>,
        stop: impl Future<Output = ()>,
    ) {
        let accept_loop = async {
            let mut next = 0;
            loop {
                match self.accept(&listener, &slots).await {
                    Ok(accepted) => {
                        let chosen = least_busy(&workers, next);
                        next = chosen + 1;
                        workers[chosen].hand(accepted);
                    }
                    Err(error) => accept_failed(error).await,
                }
            }
        };
        smol::future::or(accept_loop, stop).await;
    }

    /// Proxies the connections that [`dispatch`](Self::dispatch) hands to
    /// this worker (`incoming`), each in a task of the worker's tokio
    /// runtime (a current-thread runtime, with its own poller), until the
    /// accept loop ends.
    pub(crate) async fn serve(self: Arc<Self>, incoming: Receiver<Accepted>) {
        let connections: Pin<Box<dyn Stream<Item = io::Result<Tcp>> + Send>> =
            Box::pin(incoming.map(Accepted::into_tcp));
        match self.acceptor.clone() {
            Some(acceptor) => self.accept_tls(acceptor, connections).await,
            None => self.accept_plain(connections).await,
        }
    }

    /// Runs the TLS handshakes of `connections` and proxies each client.
    async fn accept_tls(
        self: &Arc<Self>,
        acceptor: ReloadingAcceptor,
        connections: Pin<Box<dyn Stream<Item = io::Result<Tcp>> + Send>>,
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
                Ok(tls) => {
                    tokio::spawn(self.clone().tls_client(tls));
                }
                Err(error) => accept_failed(error).await,
            }
        }
    }

    /// Proxies each of `connections` as it comes (a plaintext listener).
    async fn accept_plain(
        self: &Arc<Self>,
        mut connections: Pin<Box<dyn Stream<Item = io::Result<Tcp>> + Send>>,
    ) {
        while let Some(client) = connections.next().await {
            match client {
                Ok(mut tcp) => {
                    let proxy = self.clone();
                    let peer = tcp.peer;
                    tokio::spawn(async move { proxy.forward(&mut tcp, peer).await });
                }
                Err(error) => accept_failed(error).await,
            }
        }
    }

    /// The next connection on `listener`, once a slot is free.
    async fn accept(
        &self,
        listener: &Async<TcpListener>,
        slots: &Sender<()>,
    ) -> io::Result<Accepted> {
        loop {
            // A slot is taken once a connection waits: at the limit, the
            // connection stays in the backlog.
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
            nodelay(&io);
            self.counters.opened();
            return Ok(Accepted {
                io,
                peer,
                slot: Slot {
                    _permit: permit,
                    _open: slots.clone(),
                    counters: self.counters.clone(),
                    worker: None,
                },
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
        let within = tokio::time::timeout(left, handshake)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no TLS handshake with the target within {:?}",
                        self.connect_timeout
                    ),
                ))
            });
        match within {
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
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await;
}

/// Connects to the target within `timeout`, trying each address the host
/// name resolves to.
async fn connect(target: &Target, timeout: Duration) -> io::Result<Tcp> {
    let attempt = async {
        let addrs = match target {
            Target::Addr(addr) => vec![*addr],
            Target::Host(host) => tokio::net::lookup_host(host.as_str()).await?.collect(),
        };
        let mut last_error = None;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(io) => return Ok((io, addr)),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("the host name has no address")))
    };
    let (io, peer) = tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection after {timeout:?}"),
            ))
        })?;
    if let Err(error) = io.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    Ok(Tcp {
        io,
        peer,
        slot: None,
        ahead: None,
    })
}

fn nodelay(io: &TcpStream) {
    if let Err(error) = io.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
}

/// A TCP stream whose `close` shuts down its write half (a half-close the
/// peer sees as EOF), holding a slot of the connection limit if it is a
/// client's.
pub(crate) struct Tcp {
    io: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Option<Slot>,
    /// Bytes read from the socket ahead of a small read; see
    /// [`Tcp::poll_read`](AsyncRead::poll_read).
    ahead: Option<Ahead>,
}

/// A buffer from the worker's copy pool with `buf[start..end]` not read
/// yet.
struct Ahead {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// Reads asking for less than this are served from a read-ahead buffer.
const SMALL_READ: usize = copy::BUFFER_SIZE / 4;

/// A client's place under the connection limit, given back on drop.
struct Slot {
    _permit: SemaphoreGuardArc,
    /// Keeps [`Drain::wait`] waiting.
    _open: Sender<()>,
    counters: Arc<Counters>,
    /// The open connections of the worker that has it.
    worker: Option<Arc<AtomicUsize>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.closed();
        if let Some(open) = &self.worker {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection [`Proxy::dispatch`] accepted, on its way to a worker.
pub(crate) struct Accepted {
    io: TcpStream,
    peer: SocketAddr,
    slot: Slot,
}

impl Accepted {
    /// The connection, registered with the poller of the worker's runtime
    /// (so called on the worker's thread).
    fn into_tcp(self) -> io::Result<Tcp> {
        if let Some(open) = &self.slot.worker {
            busy::on_worker(open);
        }
        self.io.set_nonblocking(true)?;
        Ok(Tcp {
            io: tokio::net::TcpStream::from_std(self.io)?,
            peer: self.peer,
            slot: Some(self.slot),
            ahead: None,
        })
    }
}

/// A worker as the accept loop sees it: where its connections go, and how
/// many it has open.
#[derive(Debug)]
pub(crate) struct Worker {
    queue: Sender<Accepted>,
    open: Arc<AtomicUsize>,
}

impl Worker {
    /// A worker, and the receiving end of its queue for
    /// [`Proxy::serve`].
    pub(crate) fn new() -> (Self, Receiver<Accepted>) {
        let (queue, incoming) = smol::channel::unbounded();
        let open = Arc::default();
        (Self { queue, open }, incoming)
    }

    /// Gives `accepted` to this worker, counting it among its open ones
    /// until it closes.
    fn hand(&self, mut accepted: Accepted) {
        self.open.fetch_add(1, Ordering::Relaxed);
        accepted.slot.worker = Some(self.open.clone());
        // The workers outlive the accept loop; if one has gone, its
        // connection is closed (and its slot given back) here.
        if self.queue.try_send(accepted).is_err() {
            tracing::warn!("a worker has gone; closing its new connection");
        }
    }
}

/// The worker with the fewest open connections, the first from `from`
/// (wrapping) among equals, so that equals take turns.
fn least_busy(workers: &[Worker], from: usize) -> usize {
    let count = workers.len();
    (0..count)
        .map(|k| (from + k) % count)
        .min_by_key(|&i| workers[i].open.load(Ordering::Relaxed))
        .unwrap_or(0)
}

impl fmt::Debug for Tcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tcp")
            .field("peer", &self.peer)
            .field("client", &self.slot.is_some())
            .finish()
    }
}

/// futures-io over tokio's stream, by hand rather than through
/// tokio-util's `Compat`, which does not pass vectored writes on: rustls
/// writes several records with one `writev`, which would become one
/// `send` per record.
impl AsyncRead for Tcp {
    /// A read for [`SMALL_READ`] bytes or more goes to the socket. A smaller
    /// one is served from a buffer filled with what the socket holds, up to
    /// 64 KiB: rustls reads TLS at most 4 KiB at a time, which took four or
    /// five `recv` calls per 16 KiB record, where one call now takes
    /// several records. The buffer comes from the worker's copy pool and
    /// goes back once read (or when the socket has nothing), so an idle
    /// connection holds none.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.ahead.is_none() {
            if buf.len() >= SMALL_READ {
                return poll_read_socket(&mut this.io, cx, buf);
            }
            let mut ahead = copy::take_buffer();
            match poll_read_socket(&mut this.io, cx, &mut ahead) {
                Poll::Ready(Ok(read @ 1..)) => {
                    this.ahead = Some(Ahead {
                        buf: ahead,
                        start: 0,
                        end: read,
                    });
                }
                other => {
                    copy::give_back(ahead);
                    return other;
                }
            }
        }
        let Some(ahead) = &mut this.ahead else {
            return Poll::Ready(Ok(0));
        };
        let n = buf.len().min(ahead.end - ahead.start);
        buf[..n].copy_from_slice(&ahead.buf[ahead.start..ahead.start + n]);
        ahead.start += n;
        if ahead.start == ahead.end {
            if let Some(drained) = this.ahead.take() {
                copy::give_back(drained.buf);
            }
        }
        Poll::Ready(Ok(n))
    }
}

/// One read from the socket. While the copy busy-polls, the read asks the
/// socket first: tokio's readiness is only brought up to date when the
/// worker parks, and would say that nothing came.
fn poll_read_socket(
    io: &mut tokio::net::TcpStream,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    if busy::polling() {
        match rustix::net::recv(&*io, &mut *buf, rustix::net::RecvFlags::empty()) {
            Ok((n, _)) => return Poll::Ready(Ok(n)),
            // Nothing yet (or a signal): tokio's read registers the waker.
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(error) => return Poll::Ready(Err(error.into())),
        }
    }
    let mut buf = tokio::io::ReadBuf::new(buf);
    ready!(tokio::io::AsyncRead::poll_read(Pin::new(io), cx, &mut buf))?;
    Poll::Ready(Ok(buf.filled().len()))
}

impl Drop for Tcp {
    fn drop(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            copy::give_back(ahead.buf);
        }
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.io), cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write_vectored(Pin::new(&mut self.io), cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket.
        Poll::Ready(Ok(()))
    }

    /// Shuts down the write half (a half-close the peer sees as EOF).
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(tokio::io::AsyncWrite::poll_shutdown(
            Pin::new(&mut self.io),
            cx
        )) {
            Err(error) if error.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(error)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::args::{parse, Command};

    /// SO_REUSEPORT put 12 or more of 16 connections on one of 2 workers
    /// in 8 % of trials; handing each to the least busy splits them 8/8,
    /// and a worker whose connections closed gets the next ones.
    #[test]
    fn connections_go_to_the_worker_with_the_fewest_open() {
        let workers: Vec<Worker> = (0..2).map(|_| Worker::new().0).collect();
        let mut next = 0;
        let mut hand = || {
            let chosen = least_busy(&workers, next);
            next = chosen + 1;
            workers[chosen].open.fetch_add(1, Ordering::Relaxed);
            chosen
        };
        let first: Vec<usize> = (0..16).map(|_| hand()).collect();
        assert_eq!(first.iter().filter(|&&w| w == 0).count(), 8, "{first:?}");
        workers[1].open.fetch_sub(5, Ordering::Relaxed);
        let after: Vec<usize> = (0..6).map(|_| hand()).collect();
        assert_eq!(after, [1, 1, 1, 1, 1, 0]);
    }

    /// Small reads come from one `recv` of what the socket holds, in order,
    /// and a drained connection holds no buffer.
    #[test]
    fn small_reads_are_served_ahead_and_the_buffer_goes_back() {
        use futures::io::AsyncReadExt;
        use std::io::Write;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, peer) = listener.accept().unwrap();
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        writer.write_all(&sent).unwrap();
        drop(writer);
        runtime.block_on(async {
            reader.set_nonblocking(true).unwrap();
            let mut tcp = Tcp {
                io: tokio::net::TcpStream::from_std(reader).unwrap(),
                peer,
                slot: None,
                ahead: None,
            };
            let mut received = Vec::new();
            let mut small = [0; 4096];
            loop {
                let n = tcp.read(&mut small).await.unwrap();
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&small[..n]);
                if received.len() == 4096 {
                    // The first read took more than it gave.
                    assert!(tcp.ahead.is_some());
                }
            }
            assert_eq!(received, sent);
            assert!(tcp.ahead.is_none());
        });
    }

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
        stream.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let mut client = Tcp {
            peer: stream.peer_addr().unwrap(),
            io: tokio::net::TcpStream::from_std(stream).unwrap(),
            slot: None,
            ahead: None,
        };
        let peer = client.peer;
        let forward = proxy.forward(&mut client, peer);
        let size = std::mem::size_of_val(&forward);
        // 1,000 bytes: a rustls connection (about 1.2 kB) inline would not fit.
        assert!(size < 1_000, "the forward future takes {size} bytes");
    }
}
