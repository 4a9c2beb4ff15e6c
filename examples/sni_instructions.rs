//! Run with: cargo build --release --example sni_instructions, then
//! `valgrind --tool=callgrind --toggle-collect='*handshake_in_memory*' target/release/examples/sni_instructions PAIRS N`
//! for PAIRS 1 and 10000.
//!
//! Loads PAIRS named pairs (`hostNNNNN.example.com`, one `STEM.pem` each)
//! into an `SniResolver`, then runs N full handshakes over memory with a
//! rustls client asking for one of the names, in `handshake_in_memory`, so that
//! callgrind counts the instructions of the handshakes alone: their number
//! divided by N is the instructions per full handshake, which the machine's
//! load does not move (the `sni` bench times the same thing).

use std::sync::Arc;

use rustls::ServerConfig;
use tls_reload::acceptor::{build_pair_blocking, pairs_in_dir, SniResolver, Template};
use tls_reload_testkit::{
    handshake_in_memory, key_copy, new_key, provider, sni_client_config, write_combined, Ca,
};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let pairs: usize = args.next().map_or(Ok(1), |n| n.parse())?;
    let n: usize = args.next().map_or(Ok(100), |n| n.parse())?;
    let ca = Ca::new("instructions CA");
    let dir = tempfile::tempdir()?;
    let key = new_key();
    // The asked name is in both tables.
    let asked = 5000 % pairs.max(1);
    for i in 0..pairs {
        let name = format!("host{i:05}.example.com");
        let leaf = ca.named_leaf(0x1001, &[&name], key_copy(&key));
        write_combined(dir.path(), &format!("host{i:05}"), &leaf);
    }
    let template = Template::new(provider());
    let resolver = Arc::new(SniResolver::new());
    let built = pairs_in_dir(dir.path())?
        .iter()
        .map(|pair| build_pair_blocking(pair, &template))
        .collect::<Result<Vec<_>, _>>()?;
    resolver.update(|batch| {
        for pair in built {
            batch.insert(pair);
        }
    });
    let server = Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone()),
    );
    let client = sni_client_config(&ca, None);
    let name = format!("host{asked:05}.example.com");
    for _ in 0..n {
        handshake_in_memory(&server, &client, &name);
    }
    println!("{pairs} pairs, {n} handshakes for {name}");
    Ok(())
}
