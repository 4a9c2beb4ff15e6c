//! The status page: a tiny HTTP/1.1 server on its own listener.
//!
//! `GET /status` answers JSON, `GET /metrics` the Prometheus text format;
//! another path is a 404 and another method a 405. One request per
//! connection: the head is read (at most 8 KiB, within 5 s), the answer
//! always carries `Content-Length` and `Connection: close`, and the
//! connection is closed.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use async_io::{Async, Timer};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use smol::lock::Semaphore;
use smol::Executor;
use tls_reload_acceptor::ReloadingAcceptor;

use crate::metrics::{prometheus, status_json, Counters};

/// The most a request head may take.
const HEAD_LIMIT: usize = 8 * 1024;
/// How long a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long unread request bytes are drained after the answer, so closing
/// does not reset the connection before the client read the answer.
const LINGER: Duration = Duration::from_secs(1);
/// How many requests are served at once; more wait in the backlog.
const MAX_REQUESTS: usize = 32;

/// What the status page reports on.
#[derive(Clone, Debug)]
pub(crate) struct Sources {
    /// The reload state and the served certificate.
    pub(crate) acceptor: ReloadingAcceptor,
    /// The connection counts.
    pub(crate) counters: Arc<Counters>,
}

/// Serves status requests on `listener` forever.
pub(crate) async fn serve(
    listener: Async<TcpListener>,
    sources: Sources,
    executor: Arc<Executor<'static>>,
) {
    let limit = Arc::new(Semaphore::new(MAX_REQUESTS));
    loop {
        let permit = limit.acquire_arc().await;
        match listener.accept().await {
            Ok((stream, peer)) => {
                let sources = sources.clone();
                executor
                    .spawn(async move {
                        let _permit = permit;
                        if let Err(error) = answer(stream, &sources).await {
                            tracing::debug!(%peer, %error, "status request failed");
                        }
                    })
                    .detach();
            }
            Err(error) => {
                tracing::warn!(%error, "status accept failed");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Status,
    Metrics,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    TooLarge,
    Timeout,
}

/// An answer, ready to be written.
#[derive(Debug)]
struct Response {
    code: u16,
    content_type: &'static str,
    body: String,
}

async fn answer(mut stream: Async<TcpStream>, sources: &Sources) -> io::Result<()> {
    let read = async { Some(read_head(&mut stream).await) };
    let timeout = async {
        Timer::after(HEAD_TIMEOUT).await;
        None
    };
    let route = match smol::future::or(read, timeout).await {
        Some(Ok(Some(head))) => route(&head),
        Some(Ok(None)) => Route::TooLarge,
        Some(Err(error)) => return Err(error),
        None => Route::Timeout,
    };
    stream
        .write_all(&respond(route, sources).to_bytes())
        .await?;
    stream.get_ref().shutdown(Shutdown::Write)?;
    let mut sink = [0; 1024];
    let linger = async { while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
    smol::future::or(linger, async {
        Timer::after(LINGER).await;
    })
    .await;
    Ok(())
}

/// Reads up to the blank line that ends a request head; `None` if it does
/// not come within [`HEAD_LIMIT`] bytes.
async fn read_head(stream: &mut Async<TcpStream>) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end_of_head(&head) {
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() >= HEAD_LIMIT {
            return Ok(None);
        }
    }
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
    let text = |code, body: &str| Response {
        code,
        content_type: "text/plain; charset=utf-8",
        body: format!("{body}\n"),
    };
    match route {
        Route::Status => Response {
            code: 200,
            content_type: "application/json",
            body: status_json(&sources.acceptor.status(), &sources.counters.snapshot()).to_string(),
        },
        Route::Metrics => Response {
            code: 200,
            content_type: "text/plain; version=0.0.4",
            body: prometheus(&sources.acceptor.status(), &sources.counters.snapshot()),
        },
        Route::BadRequest => text(400, "bad request"),
        Route::NotFound => text(404, "not found: try /status or /metrics"),
        Route::MethodNotAllowed => text(405, "method not allowed: use GET"),
        Route::TooLarge => text(431, "request head too large"),
        Route::Timeout => text(408, "request timeout"),
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
