//! Starting futures-rustls client handshakes without copying their state
//! twice.
//!
//! A handshake's state (rustls's connection) is about 1.2 kB. Built inside
//! [`Connect`](crate::Connect), it was copied twice on its way there: once
//! out of futures-rustls's `Result`, once from the compiler's temporary
//! into the caller's future, because the compiler may build a value in its
//! final place only when the call that makes it cannot unwind (else a panic
//! would leave that place half written). The `extern "C"` function below
//! cannot unwind: a panic in it aborts. Nothing in it panics: it clones an
//! `Arc` and lets rustls allocate its connection, whose constructor returns
//! its errors. So the state is built where it stays, as with futures-rustls
//! alone (136 instructions fewer per start). The server side makes its
//! connection later, when the client's first bytes come (see
//! `acceptor.rs`'s `Waiting`).

use futures::io::{AsyncRead, AsyncWrite};
use rustls::pki_types::ServerName;

/// [`futures_rustls::TlsConnector::connect`], unable to unwind.
#[inline(never)]
#[allow(improper_ctypes_definitions)] // Called from Rust only.
pub(crate) extern "C" fn connect<IO>(
    connector: &futures_rustls::TlsConnector,
    server_name: ServerName<'static>,
    io: IO,
) -> futures_rustls::Connect<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    connector.connect(server_name, io)
}
