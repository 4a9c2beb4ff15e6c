//! Run with: cargo run --example hyper_https -- --cert tls.crt --key tls.key [--listen 127.0.0.1:8443]
//! An HTTPS server on hyper 1 and tokio whose certificate follows the files
//! on disk: renew them and the next connection gets the new certificate,
//! with no restart. Takes the example servers' flags; answers every request
//! with `hello over TLS` and prints the same reload lines.

#[path = "common/mod.rs"]
#[allow(dead_code)] // the echo: this server answers HTTP instead
mod common;

use std::convert::Infallible;
use std::process::ExitCode;

use futures::StreamExt;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(
        b"hello over TLS\n",
    ))))
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    let args = match common::Args::from_env() {
        Ok(args) => args,
        Err(code) => return code,
    };
    let acceptor = match args.acceptor().build().await {
        Ok(acceptor) => acceptor,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(acceptor.reloader());
    tokio::spawn(common::report_reloads(acceptor.events()));

    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => common::say(format_args!("listening on {addr}")),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    }
    let connections = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.and_then(|(tcp, _)| {
            tcp.set_nodelay(true)?;
            Ok(tcp.compat())
        });
        Some((accepted, listener))
    });
    // Handshakes run concurrently, bounded by the handshake timeout; failed
    // ones are logged with the peer, rate-limited.
    let mut incoming = acceptor
        .incoming(Box::pin(connections))
        .peer_addr_with(|tcp| tcp.get_ref().peer_addr().ok());
    while let Some(tls) = incoming.next().await {
        let tls = match tls {
            Ok(tls) => tls,
            Err(error) => {
                common::accept_failed(error).await;
                continue;
            }
        };
        tokio::spawn(async move {
            // The TLS stream speaks the `futures` traits: back to tokio's for hyper.
            let io = TokioIo::new(tls.compat());
            if let Err(error) = http1::Builder::new()
                .serve_connection(io, service_fn(hello))
                .await
            {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
    ExitCode::SUCCESS
}
