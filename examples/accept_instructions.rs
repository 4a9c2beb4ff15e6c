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

use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::task::Context;

use anyhow::Context as _;
use futures::task::noop_waker_ref;
use futures::Future;
use tls_reload::acceptor::{ReloadingAcceptor, Template};
use tls_reload_testkit::{write_pair, Ca, Silent};

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
            "plain" => start_once(plain.accept(Silent)),
            "ours" => start_once(ours.accept(Silent)),
            "untimed" => start_once(untimed.accept(Silent)),
            other => anyhow::bail!("KIND is plain, ours or untimed, not {other:?}"),
        }
    }
    Ok(())
}

/// Polls a handshake once: it sends nothing and waits for the ClientHello.
fn start_once<F: Future + Unpin>(mut handshake: F) {
    let mut cx = Context::from_waker(noop_waker_ref());
    let _ = Pin::new(&mut handshake).poll(&mut cx);
}

/// Runs each kind under callgrind twice and prints instructions per start.
fn table() -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let mut per_start = Vec::new();
    for kind in KINDS {
        let mut counts = Vec::new();
        for n in RUNS {
            counts.push(instructions(&me, &[kind, &n.to_string()])?);
        }
        per_start.push((counts[1] - counts[0]) as f64 / (RUNS[1] - RUNS[0]) as f64);
    }
    println!("| accept start | instructions | vs plain |");
    println!("|---|---:|---:|");
    for (kind, count) in KINDS.iter().zip(&per_start) {
        println!("| {kind} | {count:.0} | {:.3}x |", count / per_start[0]);
    }
    Ok(())
}

/// The instructions callgrind counts for one run of `program args`.
pub fn instructions(program: &std::path::Path, args: &[&str]) -> anyhow::Result<u64> {
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(program)
        .args(args)
        .output()
        .context("running valgrind (is it installed?)")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(output.status.success(), "valgrind failed: {stderr}");
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|count| count.trim().parse().ok())
        .with_context(|| format!("no instruction count in valgrind's output: {stderr}"))
}
