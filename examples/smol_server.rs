//! Run with: cargo run --example smol_server -- --cert tls.crt --key tls.key [--listen 127.0.0.1:8443]
//! A smol TLS echo server whose certificate follows the files on disk: renew
//! them and new connections get the new certificate, open ones keep going.

#[path = "common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::process::ExitCode;

use futures::StreamExt;
use smol::Async;
use tls_reload::acceptor::tcp_connections;

fn main() -> ExitCode {
    common::init_logging();
    let args = match common::Args::from_env() {
        Ok(args) => args,
        Err(code) => return code,
    };
    smol::block_on(async {
        let acceptor = match args.acceptor().build().await {
            Ok(acceptor) => acceptor,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        };
        smol::spawn(acceptor.reloader()).detach();
        smol::spawn(common::report_reloads(acceptor.events())).detach();

        let listener = match Async::<TcpListener>::bind(args.listen) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("error: cannot listen on {}: {error}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        match listener.get_ref().local_addr() {
            Ok(addr) => common::say(format_args!("listening on {addr}")),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
        // TCP_NODELAY set on each connection; handshakes run as tasks of
        // their own, on as many threads as smol has (SMOL_THREADS).
        let mut incoming = acceptor
            .incoming(tcp_connections(&listener))
            .spawn_handshakes(|task| smol::spawn(task).detach())
            .peer_addr_with(|tcp| tcp.get_ref().peer_addr().ok());
        while let Some(tls) = incoming.next().await {
            match tls {
                Ok(tls) => smol::spawn(common::echo(tls)).detach(),
                Err(error) => common::accept_failed(error).await,
            }
        }
        ExitCode::SUCCESS
    })
}
