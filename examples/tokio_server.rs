//! Run with: cargo run --example tokio_server -- --cert tls.crt --key tls.key [--listen 127.0.0.1:8443]
//! The same reloading TLS echo server on tokio: tokio-util's compat layer
//! turns tokio's sockets into the `futures` IO traits the acceptor speaks,
//! and the reloader is spawned like any other task.

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_util::compat::TokioAsyncReadCompatExt;

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
    // Each handshake runs as a task: full handshakes use every core.
    let mut incoming = acceptor
        .incoming(Box::pin(connections))
        .peer_addr_with(|tcp| tcp.get_ref().peer_addr().ok())
        .spawn_handshakes(|task| {
            tokio::spawn(task);
        });
    while let Some(tls) = incoming.next().await {
        match tls {
            Ok(tls) => {
                tokio::spawn(common::echo(tls));
            }
            Err(error) => common::accept_failed(error).await,
        }
    }
    ExitCode::SUCCESS
}
