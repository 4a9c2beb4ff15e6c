//! Run with: cargo run --example async_std_server -- --cert tls.crt --key tls.key [--listen 127.0.0.1:8443]
//! The same reloading TLS echo server on async-std: the acceptor needs nothing
//! from the runtime but the `futures` IO traits.

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;

use async_std::net::TcpListener;
use futures::StreamExt;

fn main() -> ExitCode {
    common::init_logging();
    let args = match common::Args::from_env() {
        Ok(args) => args,
        Err(code) => return code,
    };
    async_std::task::block_on(async {
        let acceptor = match args.acceptor().build().await {
            Ok(acceptor) => acceptor,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        };
        async_std::task::spawn(acceptor.reloader());
        async_std::task::spawn(common::report_reloads(acceptor.events()));

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
        let connections = listener.incoming().map(|tcp| {
            let tcp = tcp?;
            tcp.set_nodelay(true)?;
            Ok(tcp)
        });
        // Each handshake runs as a task: full handshakes use every core.
        let mut incoming = acceptor
            .incoming(Box::pin(connections))
            .peer_addr_with(|tcp| tcp.peer_addr().ok())
            .spawn_handshakes(|task| {
                async_std::task::spawn(task);
            });
        while let Some(tls) = incoming.next().await {
            match tls {
                Ok(tls) => {
                    async_std::task::spawn(common::echo(tls));
                }
                Err(error) => common::accept_failed(error).await,
            }
        }
        ExitCode::SUCCESS
    })
}
