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

use std::sync::Arc;

use tls_reload::acceptor::{ReloadingAcceptor, Template};
use tls_reload_testkit::{poll_once, print_instruction_table, write_pair, Ca, Silent};

const KINDS: [&str; 3] = ["plain", "ours", "untimed"];
const RUNS: [u64; 2] = [1000, 3000];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(kind) = args.next() else {
        return table();
    };
    let n: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let dir = tempfile::tempdir()?;
    let materials = write_pair(dir.path(), &Ca::new("instructions CA").leaf(0x1001));
    let template = Template::new(Arc::new(rustls::crypto::ring::default_provider()));
    let ours = ReloadingAcceptor::builder(materials.clone())
        .template(template.clone())
        .build_blocking()?;
    let untimed = ReloadingAcceptor::builder(materials)
        .template(template)
        .handshake_timeout(None)
        .build_blocking()?;
    let plain = futures_rustls::TlsAcceptor::from(ours.config());
    for _ in 0..n {
        match kind.as_str() {
            "plain" => poll_once(plain.accept(Silent)),
            "ours" => poll_once(ours.accept(Silent)),
            "untimed" => poll_once(untimed.accept(Silent)),
            other => anyhow::bail!("KIND is plain, ours or untimed, not {other:?}"),
        }
    }
    Ok(())
}

/// Runs each kind under callgrind twice and prints instructions per start.
fn table() -> anyhow::Result<()> {
    print_instruction_table("accept start", &std::env::current_exe()?, &KINDS, RUNS)
}
