//! Run with: cargo run --release --example connect_instructions [-- KIND N]
//! Counts the instructions a connect start costs, with callgrind: plain
//! futures-rustls `TlsConnector` against `ReloadingConnector::connect`.
//!
//! Without arguments it runs itself under `valgrind --tool=callgrind` for
//! each KIND and two values of N, and prints a table: the difference of two
//! runs' instruction counts divided by the difference of their N is the
//! instructions per connect start, whatever the start-up cost. With `KIND
//! N` it is one such run: it starts N TLS handshakes of KIND over a stream
//! whose peer never speaks, polls each once (the client builds and writes
//! its ClientHello) and drops it. KIND: `plain` (futures-rustls's
//! `TlsConnector` with the same client config) or `ours`
//! (`ReloadingConnector::connect`).

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tls_reload::acceptor::{ClientMaterials, ClientTemplate, ReloadingConnector};
use tls_reload_testkit::{poll_once, print_instruction_table, write_leaf, write_new, Ca, Silent};

const KINDS: [&str; 2] = ["plain", "ours"];
const RUNS: [u64; 2] = [300, 900];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(kind) = args.next() else {
        return table();
    };
    let n: usize = args.next().map_or(Ok(300), |n| n.parse())?;
    let dir = tempfile::tempdir()?;
    let (servers, clients) = (Ca::new("servers"), Ca::new("clients"));
    let (cert, key) = write_leaf(dir.path(), "client", &clients.leaf(0x1001));
    let roots = write_new(dir.path(), "roots.pem", servers.pem());
    let materials = ClientMaterials::new()
        .with_identity(&cert, &key)
        .with_roots(&roots);
    let template = ClientTemplate::new(Arc::new(rustls::crypto::ring::default_provider()))
        .configure(|config| config.resumption = rustls::client::Resumption::disabled());
    let ours = ReloadingConnector::builder(materials)
        .template(template)
        .build_blocking()?;
    let plain = futures_rustls::TlsConnector::from(ours.config());
    let name = ServerName::try_from("localhost")?;
    for _ in 0..n {
        match kind.as_str() {
            "plain" => poll_once(plain.connect(name.clone(), Silent)),
            "ours" => poll_once(ours.connect(name.clone(), Silent)),
            other => anyhow::bail!("KIND is plain or ours, not {other:?}"),
        }
    }
    Ok(())
}

/// Runs each kind under callgrind twice and prints instructions per start.
fn table() -> anyhow::Result<()> {
    print_instruction_table("connect start", &std::env::current_exe()?, &KINDS, RUNS)
}
