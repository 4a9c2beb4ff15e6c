//! The status page: a tiny HTTP/1.1 server on its own listener.
//!
//! `GET /status` answers JSON, `GET /metrics` the OpenMetrics text format;
//! another path is a 404 and another method a 405. One request per
//! connection: the head is read (at most 8 KiB, else 431, within 2 s, else
//! 408), the answer always carries `Content-Length` and
//! `Connection: close` and must be written within 2 s, and the connection
//! is closed after at most 1 s of draining what the client still sends.
//!
//! Idle peers cannot starve a scrape. Connections are accepted without
//! waiting for anything, and at most [`MAX_CONNECTIONS`] are open at once.
//! When that many are open, the next one makes room by closing, without
//! an answer, the connection that has waited longest for its request head
//! or lingered longest after its answer (the two phases a silent or slow
//! client can drag out). A scrape sends its head right after it connects
//! and is then out of reach, so silent peers would have to open
//! [`MAX_CONNECTIONS`] connections in that moment to cut it off. Only a
//! connection whose answer is being written cannot be closed for room;
//! if all of them are, accepting waits for one to finish (2 s at most).
//! Closing for room is logged as one warning with counts per burst, at
//! most once every few seconds.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_io::{Async, Timer};
use futures::channel::oneshot;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use smol::channel::{self, Receiver, Sender};
use smol::lock::Semaphore;
use smol::Executor;
use tls_reload_acceptor::{ConnectorStatus, ReloadingAcceptor, ReloadingConnector, Status};

use crate::metrics::{openmetrics, status_json, Counters, Counts, OPENMETRICS_CONTENT_TYPE};

/// The most a request head may take.
const HEAD_LIMIT: usize = 8 * 1024;
/// The most one read takes from the socket.
const READ_CHUNK: usize = 1024;
/// How long a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the answer may take to write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long unread request bytes are drained after the answer, so closing
/// does not reset the connection before the client read the answer.
const LINGER: Duration = Duration::from_secs(1);
/// How many status connections are open at once, at most.
const MAX_CONNECTIONS: usize = 1024;
/// How long evictions are counted before the first warning about them.
const GATHER: Duration = Duration::from_secs(1);
/// The least time between two warnings about a full status page, besides
/// [`GATHER`].
const WARN_EVERY: Duration = Duration::from_secs(5);

/// What the status page reports on.
#[derive(Clone, Debug)]
pub(crate) struct Sources {
    /// The reload state and the served certificate, with a TLS listener.
    pub(crate) acceptor: Option<ReloadingAcceptor>,
    /// The client identity and roots towards the target, with
    /// `--target-tls`.
    pub(crate) connector: Option<ReloadingConnector>,
    /// The connection counts.
    pub(crate) counters: Arc<Counters>,
}

impl Sources {
    /// What the pages show, taken now.
    fn snapshot(&self) -> (Option<Status>, Option<ConnectorStatus>, Counts) {
        (
            self.acceptor.as_ref().map(ReloadingAcceptor::status),
            self.connector.as_ref().map(ReloadingConnector::status),
            self.counters.snapshot(),
        )
    }
}

/// Serves status requests on `listener` forever.
pub(crate) async fn serve(
    listener: Async<TcpListener>,
    sources: Sources,
    executor: Arc<Executor<'static>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let evictable = Arc::new(Evictable::default());
    let (full, reports) = channel::bounded(1);
    executor
        .spawn(warn_when_full(evictable.clone(), reports))
        .detach();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "status accept failed");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match slots.try_acquire_arc() {
            Some(slot) => slot,
            None => {
                // The evicted connection gives its slot back as soon as its
                // task sees the eviction.
                if evictable.evict_oldest() {
                    sources.counters.status_evicted();
                }
                note_full(&full);
                slots.acquire_arc().await
            }
        };
        let _ = stream.get_ref().set_nodelay(true);
        let ticket = evictable.enter();
        let sources = sources.clone();
        executor
            .spawn(async move {
                let _slot = slot;
                if let Err(error) = answer(stream, &sources, ticket).await {
                    tracing::debug!(%peer, %error, "status request failed");
                }
            })
            .detach();
        // A flood of connections must not keep this thread from running
        // the tasks it spawned and evicted.
        smol::future::yield_now().await;
    }
}

/// Wakes [`warn_when_full`]; a wake-up already pending is enough.
fn note_full(full: &Sender<()>) {
    let _ = full.try_send(());
}

/// Logs a warning with the counts when the page was found full: a second
/// after the first time, so that a burst makes one line, then at most once
/// every [`WARN_EVERY`].
async fn warn_when_full(evictable: Arc<Evictable>, reports: Receiver<()>) {
    while reports.recv().await.is_ok() {
        Timer::after(GATHER).await;
        let (evicted, waited) = evictable.take_counts();
        tracing::warn!(
            evicted,
            waited,
            max = MAX_CONNECTIONS,
            "status page full: evicted connections idle the longest (closed unanswered), \
             or waited for an answer to be written, since the last such warning"
        );
        Timer::after(WARN_EVERY).await;
    }
}

/// The connections that may be closed to make room, oldest first: those
/// waiting for their request head and those lingering after their answer.
#[derive(Debug, Default)]
struct Evictable(Mutex<Queue>);

#[derive(Debug, Default)]
struct Queue {
    /// The next ticket's id; ids only grow, so `entries` is sorted by id.
    next_id: u64,
    /// Each evictable connection's id and the sender whose drop evicts it.
    entries: VecDeque<(u64, oneshot::Sender<()>)>,
    /// Connections evicted since the last warning.
    evicted: u64,
    /// Times the page was full with nothing to evict, since the last warning.
    waited: u64,
}

/// A connection's place in [`Evictable`]; it leaves when dropped.
#[derive(Debug)]
struct Ticket {
    id: u64,
    evictable: Arc<Evictable>,
    /// Resolves when the connection is evicted.
    evicted: oneshot::Receiver<()>,
}

impl Evictable {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ticket for a connection that may be evicted from now on, the
    /// youngest.
    fn enter(self: &Arc<Self>) -> Ticket {
        let (evict, evicted) = oneshot::channel();
        let mut queue = self.lock();
        let id = queue.next_id;
        queue.next_id += 1;
        queue.entries.push_back((id, evict));
        Ticket {
            id,
            evictable: self.clone(),
            evicted,
        }
    }

    /// Evicts the oldest evictable connection; `false` if there is none.
    fn evict_oldest(&self) -> bool {
        let oldest = {
            let mut queue = self.lock();
            let oldest = queue.entries.pop_front();
            match oldest {
                Some(_) => queue.evicted += 1,
                None => queue.waited += 1,
            }
            oldest
        };
        // Dropping the sender, out of the lock, wakes the connection.
        oldest.is_some()
    }

    fn leave(&self, id: u64) {
        let entry = {
            let mut queue = self.lock();
            let at = queue.entries.binary_search_by_key(&id, |(id, _)| *id);
            at.ok().and_then(|at| queue.entries.remove(at))
        };
        drop(entry);
    }

    /// The counts since the last call: evicted, waited.
    fn take_counts(&self) -> (u64, u64) {
        let mut queue = self.lock();
        (
            std::mem::take(&mut queue.evicted),
            std::mem::take(&mut queue.waited),
        )
    }
}

impl Ticket {
    /// Resolves when this connection is evicted.
    async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.evictable.leave(self.id);
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Status,
    Metrics,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    TooLarge,
    Timeout,
}

impl Route {
    /// The status code of the answer.
    pub(crate) fn code(self) -> u16 {
        match self {
            Self::Status | Self::Metrics => 200,
            Self::BadRequest => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Timeout => 408,
            Self::TooLarge => 431,
        }
    }
}

/// An answer, ready to be written.
#[derive(Debug)]
struct Response {
    code: u16,
    content_type: &'static str,
    body: String,
}

/// What became of the wait for a request head.
enum Head {
    Read(io::Result<Route>),
    TimedOut,
    Evicted,
}

async fn answer(
    mut stream: Async<TcpStream>,
    sources: &Sources,
    mut ticket: Ticket,
) -> io::Result<()> {
    let head = {
        let read = async { Head::Read(read_head(&mut stream).await) };
        let timeout = async {
            Timer::after(HEAD_TIMEOUT).await;
            Head::TimedOut
        };
        let evicted = async {
            ticket.evicted().await;
            Head::Evicted
        };
        smol::future::or(read, smol::future::or(timeout, evicted)).await
    };
    // Not evictable while the answer is written.
    let evictable = ticket.evictable.clone();
    drop(ticket);
    let route = match head {
        Head::Read(Ok(route)) => route,
        Head::Read(Err(error)) => return Err(error),
        Head::TimedOut => Route::Timeout,
        Head::Evicted => return Ok(()),
    };
    let response = respond(route, sources).to_bytes();
    let write = async { Some(stream.write_all(&response).await) };
    let timeout = async {
        Timer::after(WRITE_TIMEOUT).await;
        None
    };
    match smol::future::or(write, timeout).await {
        Some(written) => written?,
        None => return Err(io::ErrorKind::TimedOut.into()),
    }
    stream.get_ref().shutdown(Shutdown::Write)?;
    // Evictable again: the answer is out, this is only politeness.
    let mut ticket = evictable.enter();
    let mut sink = [0; 1024];
    let linger = async { while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
    let timeout = async {
        Timer::after(LINGER).await;
    };
    let evicted = ticket.evicted();
    smol::future::or(linger, smol::future::or(timeout, evicted)).await;
    Ok(())
}

/// Reads until the request head is complete or too large: its route.
async fn read_head(stream: &mut Async<TcpStream>) -> io::Result<Route> {
    let mut head = HeadReader::default();
    let mut chunk = [0; READ_CHUNK];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(route) = head.push(&chunk[..n]) {
            return Ok(route);
        }
    }
}

/// The bytes of a request head as they come in.
#[derive(Debug, Default)]
struct HeadReader {
    received: Vec<u8>,
}

impl HeadReader {
    /// Adds bytes just read: the route once the head is complete (up to
    /// the blank line that ends it), [`Route::TooLarge`] once
    /// [`HEAD_LIMIT`] bytes came without one, `None` until then.
    fn push(&mut self, bytes: &[u8]) -> Option<Route> {
        self.received.extend_from_slice(bytes);
        if let Some(end) = find_end_of_head(&self.received) {
            return Some(route(&self.received[..end]));
        }
        (self.received.len() >= HEAD_LIMIT).then_some(Route::TooLarge)
    }
}

/// What the page makes of `bytes` arriving in reads of at most
/// [`READ_CHUNK`] bytes: the route, or `None` if the head is incomplete
/// (then the client would get a 408 after [`HEAD_TIMEOUT`]).
pub(crate) fn route_received(bytes: &[u8]) -> Option<Route> {
    let mut head = HeadReader::default();
    bytes.chunks(READ_CHUNK).find_map(|chunk| head.push(chunk))
}

fn find_end_of_head(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    [crlf, lf].into_iter().flatten().min()
}

/// Routes a request by its request line (`METHOD TARGET HTTP/1.x`).
fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match path {
        "/status" => Route::Status,
        "/metrics" => Route::Metrics,
        _ => Route::NotFound,
    }
}

fn respond(route: Route, sources: &Sources) -> Response {
    let code = route.code();
    let text = |body: &str| Response {
        code,
        content_type: "text/plain; charset=utf-8",
        body: format!("{body}\n"),
    };
    match route {
        Route::Status => Response {
            code,
            content_type: "application/json",
            body: {
                let (listener, target, counts) = sources.snapshot();
                status_json(listener.as_ref(), target.as_ref(), &counts).to_string()
            },
        },
        Route::Metrics => Response {
            code,
            content_type: OPENMETRICS_CONTENT_TYPE,
            body: {
                let (listener, target, counts) = sources.snapshot();
                openmetrics(listener, target, counts)
            },
        },
        Route::BadRequest => text("bad request"),
        Route::NotFound => text("not found: try /status or /metrics"),
        Route::MethodNotAllowed => text("method not allowed: use GET"),
        Route::TooLarge => text("request head too large"),
        Route::Timeout => text("request timeout"),
    }
}

impl Response {
    fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.code {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            _ => "",
        };
        let allow = if self.code == 405 {
            "Allow: GET\r\n"
        } else {
            ""
        };
        let mut bytes = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.code,
            self.content_type,
            self.body.len(),
        )
        .into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let cases: [(&[u8], Route); 12] = [
            (b"GET /status HTTP/1.1\r\nHost: x", Route::Status),
            (b"GET /metrics HTTP/1.0", Route::Metrics),
            (b"GET /metrics?name[]=x HTTP/1.1\nHost: x", Route::Metrics),
            (b"GET / HTTP/1.1", Route::NotFound),
            (b"GET /status/ HTTP/1.1", Route::NotFound),
            (b"POST /status HTTP/1.1", Route::MethodNotAllowed),
            (b"HEAD /metrics HTTP/1.1", Route::MethodNotAllowed),
            (b"GET /status", Route::BadRequest),
            (b"GET  /status HTTP/1.1", Route::BadRequest),
            (b"GET /status HTTP/2", Route::BadRequest),
            (b"GET status HTTP/1.1", Route::BadRequest),
            (b"\xff /status HTTP/1.1", Route::BadRequest),
        ];
        for (head, expected) in cases {
            assert_eq!(route(head), expected, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(
            find_end_of_head(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"),
            Some(20)
        );
        assert_eq!(find_end_of_head(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_end_of_head(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn a_head_is_routed_once_complete_or_too_large() {
        let mut head = HeadReader::default();
        assert_eq!(head.push(b"GET /metrics HT"), None);
        assert_eq!(head.push(b"TP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head.push(b"\r\nextra"), Some(Route::Metrics));

        let mut head = HeadReader::default();
        let header = [b'a'; READ_CHUNK];
        for _ in 1..HEAD_LIMIT / READ_CHUNK {
            assert_eq!(head.push(&header), None);
        }
        assert_eq!(head.push(&header), Some(Route::TooLarge));
    }

    #[test]
    fn eviction_takes_the_oldest_connection_still_evictable() {
        use futures::FutureExt;

        let evictable = Arc::new(Evictable::default());
        let mut first = evictable.enter();
        let second = evictable.enter();
        let mut third = evictable.enter();
        drop(second);
        assert!(evictable.evict_oldest());
        assert_eq!(first.evicted().now_or_never(), Some(()));
        assert_eq!(third.evicted().now_or_never(), None);
        assert!(evictable.evict_oldest());
        assert_eq!(third.evicted().now_or_never(), Some(()));
        assert!(!evictable.evict_oldest());
        assert_eq!(evictable.take_counts(), (2, 1));
        assert_eq!(evictable.take_counts(), (0, 0));
        drop((first, third));
        assert!(evictable.lock().entries.is_empty());
    }

    #[test]
    fn answers_carry_their_length_and_close() {
        let response = Response {
            code: 405,
            content_type: "text/plain",
            body: "no\n".into(),
        };
        assert_eq!(
            String::from_utf8(response.to_bytes()).ok().as_deref(),
            Some(
                "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\n\
                 Content-Length: 3\r\nAllow: GET\r\nConnection: close\r\n\r\nno\n"
            )
        );
    }
}
