//! Streams for driving an acceptor without a network.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures::io::{AsyncRead, AsyncWrite};

/// A connection whose peer never sends anything: reads stay pending,
/// writes are swallowed.
#[derive(Debug)]
pub struct Silent;

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

/// One end of an in-memory duplex pipe, for a client and a server on one
/// thread (no socket, no reactor). Room is reserved up front, so writing to
/// it does not allocate: what a test counts is what the TLS code does.
#[derive(Debug)]
pub struct Pipe {
    incoming: Rc<RefCell<Half>>,
    outgoing: Rc<RefCell<Half>>,
}

/// One direction of a [`Pipe`].
#[derive(Debug)]
struct Half {
    bytes: VecDeque<u8>,
    reader: Option<Waker>,
}

impl Pipe {
    /// Two connected ends.
    pub fn pair() -> (Pipe, Pipe) {
        let half = || {
            Rc::new(RefCell::new(Half {
                bytes: VecDeque::with_capacity(64 * 1024),
                reader: None,
            }))
        };
        let (a, b) = (half(), half());
        (
            Pipe {
                incoming: a.clone(),
                outgoing: b.clone(),
            },
            Pipe {
                incoming: b,
                outgoing: a,
            },
        )
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut half = self.incoming.borrow_mut();
        if half.bytes.is_empty() {
            match &mut half.reader {
                Some(waker) => waker.clone_from(cx.waker()),
                None => half.reader = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let n = buf.len().min(half.bytes.len());
        for (to, from) in buf.iter_mut().zip(half.bytes.drain(..n)) {
            *to = from;
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut half = self.outgoing.borrow_mut();
        half.bytes.extend(buf);
        if let Some(waker) = &half.reader {
            waker.wake_by_ref();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
