//! Run with: cargo run --release --example accept_instructions [-- KIND N]
//! Counts the instructions an accept start costs, with callgrind: plain
//! futures-rustls against `ReloadingAcceptor::accept`.
//!
//! Without arguments it runs itself under `valgrind --tool=callgrind` for
//! each KIND and two values of N, and prints a table: the difference of two
//! runs' instruction counts divided by the difference of their N is the
//! instructions per accept start, whatever the start-up cost. With `KIND N`
//! it is one such run: it starts N TLS handshakes of KIND over a stream
//! whose peer never speaks, polls each once (what an accept costs before the
//! ClientHello) and drops it. KIND: `plain` (futures-rustls's `TlsAcceptor`
//! with the same config), `ours` (`ReloadingAcceptor::accept` with its
//! handshake timeout) or `untimed` (without one).
//!
//! The `-full` kinds do N full TLS 1.3 handshakes instead, with a rustls
//! client, over an in-memory pipe on one thread: no socket, no reactor, so
//! the counts do not depend on timing, and the client's instructions, the
//! same for every kind, cancel out in the difference with `plain-full`.

use std::sync::Arc;

use anyhow::Context as _;
use futures::Future;
use rustls::pki_types::ServerName;
use tls_reload::acceptor::{ReloadingAcceptor, Template};
use tls_reload_testkit::{
    callgrind_per_item, client_config, poll_once, print_instruction_table, write_pair, Ca, Pipe,
    Silent,
};

const KINDS: [&str; 3] = ["plain", "ours", "untimed"];
const RUNS: [u64; 2] = [1000, 3000];
const FULL_KINDS: [&str; 3] = ["plain-full", "ours-full", "untimed-full"];
const FULL_RUNS: [u64; 2] = [50, 450];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(kind) = args.next() else {
        return table();
    };
    let n: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("instructions CA");
    let materials = write_pair(dir.path(), &ca.leaf(0x1001));
    let template = Template::new(Arc::new(rustls::crypto::ring::default_provider()));
    let ours = ReloadingAcceptor::builder(materials.clone())
        .template(template.clone())
        .build_blocking()?;
    let untimed = ReloadingAcceptor::builder(materials)
        .template(template)
        .handshake_timeout(None)
        .build_blocking()?;
    let plain = futures_rustls::TlsAcceptor::from(ours.config());
    let client = client_config(&ca, None);
    for _ in 0..n {
        match kind.as_str() {
            "plain" => poll_once(plain.accept(Silent)),
            "ours" => poll_once(ours.accept(Silent)),
            "untimed" => poll_once(untimed.accept(Silent)),
            "plain-full" => full(&client, plain.accept(server_end()))?,
            "ours-full" => full(&client, ours.accept(server_end()))?,
            "untimed-full" => full(&client, untimed.accept(server_end()))?,
            other => anyhow::bail!("unknown KIND {other:?}"),
        }
    }
    Ok(())
}

thread_local! {
    /// The client end of the pipe `server_end` made last.
    static CLIENT_END: std::cell::RefCell<Option<Pipe>> = const { std::cell::RefCell::new(None) };
}

/// A new pipe: its server end, the client end kept for `full`.
fn server_end() -> Pipe {
    let (client, server) = Pipe::pair();
    CLIENT_END.with(|end| *end.borrow_mut() = Some(client));
    server
}

/// Runs a full handshake: `server` against a rustls client.
fn full<A, S>(client: &Arc<rustls::ClientConfig>, server: A) -> anyhow::Result<()>
where
    A: Future<Output = std::io::Result<S>>,
{
    let end = CLIENT_END
        .with(|end| end.borrow_mut().take())
        .context("no client end")?;
    let name = ServerName::try_from("localhost")?;
    let connect = futures_rustls::TlsConnector::from(client.clone()).connect(name, end);
    let (client, server) = futures::executor::block_on(futures::future::join(connect, server));
    client?;
    server?;
    Ok(())
}

/// Runs each kind under callgrind twice and prints instructions per start
/// and per full handshake.
fn table() -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    print_instruction_table("accept start", &me, &KINDS, RUNS)?;
    println!();
    println!("| full handshake, client + server, in memory | instructions | minus plain-full |");
    println!("|---|---:|---:|");
    let mut plain = None;
    for kind in FULL_KINDS {
        let count = callgrind_per_item(&me, kind, FULL_RUNS)?;
        let base = *plain.get_or_insert(count);
        println!("| {kind} | {count:.0} | {:+.0} |", count - base);
    }
    Ok(())
}
