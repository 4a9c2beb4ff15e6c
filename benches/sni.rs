//! Many names behind one resolver: what 10,000 named pairs cost.
//!
//! Run with: `cargo bench --bench sni` (`-- --quick` for a shorter run).
//!
//! - start-up: listing a directory of 10,000 `STEM.pem` pairs, building
//!   each, and loading them into an `SniResolver` in one batch; the
//!   resident memory that adds, per pair;
//! - full handshake (rustls client and server over memory, the client
//!   asking for one pair's name), with 10,000 pairs against 1: rounds of
//!   each, interleaved, medians compared;
//! - replacing one pair in the 10,000: a renewal (same names, one slot
//!   store) against a change of names (the name index rebuilt, what a
//!   copy-the-table design would pay for every renewal).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tls_reload::acceptor::{
    build_pair_blocking, pairs_in_dir, BuiltPair, PairFiles, SniResolver, Template,
};
use tls_reload_testkit::{
    handshake_in_memory, new_key, provider, sni_client_config, write_combined, Ca,
};

const PAIRS: usize = 10_000;

fn main() -> anyhow::Result<()> {
    let quick = common::start();
    let ca = Ca::new("bench CA");
    let dir = tempfile::tempdir()?;
    let key = new_key();
    for i in 0..PAIRS {
        let name = format!("host{i:05}.example.com");
        let leaf = ca.named_leaf(
            0x1000 + (i % 0x7000) as u16,
            &[&name],
            tls_reload_testkit::key_copy(&key),
        );
        write_combined(dir.path(), &format!("host{i:05}"), &leaf);
    }
    let template = Template::new(provider());

    // Start-up: list, build, load.
    let rss_before = rss_bytes();
    let started = Instant::now();
    let pairs = pairs_in_dir(dir.path())?;
    let built: Vec<BuiltPair> = pairs
        .iter()
        .map(|pair| build_pair_blocking(pair, &template))
        .collect::<Result<_, _>>()?;
    let big = Arc::new(SniResolver::new());
    big.update(|batch| {
        for pair in built {
            batch.insert(pair);
        }
    });
    let startup = started.elapsed();
    let rss_after = rss_bytes();
    println!(
        "start-up, {PAIRS} pairs (list + build + load): {:.0} ms ({:.1} us per pair)",
        startup.as_secs_f64() * 1e3,
        startup.as_secs_f64() * 1e6 / PAIRS as f64
    );
    println!(
        "resident memory added: {:.1} MiB, {:.0} bytes per pair (certificate, key, names, index)",
        (rss_after.saturating_sub(rss_before)) as f64 / (1024.0 * 1024.0),
        rss_after.saturating_sub(rss_before) as f64 / PAIRS as f64
    );

    // One pair, asked for by the same name as in the big table.
    let asked = "host05000.example.com";
    let one = Arc::new(SniResolver::new());
    one.insert(&build_pair_blocking(
        &PairFiles::combined("host05000", dir.path().join("host05000.pem")),
        &template,
    )?);
    let client = sni_client_config(&ca, None);
    let (small_config, big_config) = (config(one), config(big.clone()));
    let rounds = 20 / quick as usize;
    let per_round = 200 / quick as usize;
    let (mut small, mut large) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so drift hits both.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for is_big in order {
            let server = if is_big { &big_config } else { &small_config };
            let started = Instant::now();
            for _ in 0..per_round {
                handshake_in_memory(server, &client, asked);
            }
            let each = started.elapsed().as_secs_f64() * 1e6 / per_round as f64;
            if is_big {
                large.push(each)
            } else {
                small.push(each)
            }
        }
    }
    let (small, large) = (common::median(small), common::median(large));
    println!(
        "full handshake over memory: 1 pair {small:.1} us, {PAIRS} pairs {large:.1} us: {:.3}x",
        large / small
    );

    // Replacing one pair in the big table.
    let renewal = build_pair_blocking(
        &PairFiles::combined("host05000", dir.path().join("host05000.pem")),
        &template,
    )?;
    let renamed_leaf = ca.named_leaf(0x1001, &["renamed.example.com"], new_key());
    let renamed_pem = write_combined(dir.path(), "renamed", &renamed_leaf);
    let mut renamed = None;
    let times = 200 / quick as usize;
    let store = time_each(times, || big.insert(&renewal));
    let rebuild = time_each(times / 10, || {
        // Alternately a new name and the old one: each insert rebuilds.
        let pair = match renamed.take() {
            None => {
                let pem = PairFiles::combined("host05000", &renamed_pem);
                build_pair_blocking(&pem, &template).expect("builds")
            }
            Some(()) => renewal.clone(),
        };
        if pair.names()[0] == "renamed.example.com" {
            renamed = Some(());
        }
        big.insert(&pair);
    });
    println!(
        "replace one pair of {PAIRS}: renewal (slot store) {:.2} us; names changed (index rebuilt) {:.2} ms: {:.0}x",
        store.as_secs_f64() * 1e6,
        rebuild.as_secs_f64() * 1e3,
        rebuild.as_secs_f64() / store.as_secs_f64()
    );
    assert!(big.serves(Some(asked)));
    drop(big);

    acceptor_part(&ca, dir.path(), quick)
}

/// The acceptor with the 10,000 pairs as a `--cert-dir`: its start-up, and
/// the time from replacing one pair to the first handshake that serves it
/// (events on, default interval), against the same with one pair.
fn acceptor_part(ca: &Ca, dir: &std::path::Path, quick: u32) -> anyhow::Result<()> {
    use tls_reload::acceptor::ReloadingAcceptor;
    use tls_reload_testkit::{served_serial, tls_connect_to, write_atomic};

    let small_dir = tempfile::tempdir()?;
    std::fs::copy(
        dir.join("host05000.pem"),
        small_dir.path().join("host05000.pem"),
    )?;
    let default = tempfile::tempdir()?;
    let materials = tls_reload_testkit::write_pair(default.path(), &ca.leaf(0x1000));
    let client = sni_client_config(ca, None);
    let asked = "host05000.example.com";
    let rounds = 40 / quick as usize;
    for (label, pairs_dir) in [("1 pair", small_dir.path()), ("10000 pairs", dir)] {
        let rss_before = rss_bytes();
        let started = Instant::now();
        let acceptor = smol::block_on(
            ReloadingAcceptor::builder(materials.clone())
                .template(Template::new(provider()))
                .cert_dir(pairs_dir)
                .build(),
        )?;
        let startup = started.elapsed();
        let pairs = acceptor.status().pairs.len().max(1);
        let per_pair = rss_bytes().saturating_sub(rss_before) as f64 / pairs as f64;
        smol::spawn(acceptor.reloader()).detach();
        let serving = acceptor.clone();
        let addr = common::spawn_server(move |tcp| serving.accept(tcp))?;
        let mut latencies = Vec::with_capacity(rounds);
        for round in 0..rounds {
            // Let the reloader's event watch re-arm after the last change.
            std::thread::sleep(Duration::from_millis(50));
            let serial = 0x2000 + round as u16;
            let leaf = ca.named_leaf(serial, &[asked], new_key());
            let pem = leaf.cert_pem() + &leaf.key_pem();
            let want = format!("{serial:04x}");
            let started = Instant::now();
            write_atomic(&pairs_dir.join("host05000.pem"), pem);
            loop {
                let served = smol::block_on(async {
                    let stream = tls_connect_to(addr, &client, asked, true).await?;
                    Ok::<_, std::io::Error>(served_serial(&stream))
                })?;
                if served == want {
                    break;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    anyhow::bail!("{label}: pair never served");
                }
            }
            latencies.push(started.elapsed());
        }
        latencies.sort();
        println!(
            "acceptor, {label}: start-up {:.0} ms, {per_pair:.0} bytes resident per pair (engine included); replace one pair -> first handshake serving it (events on): p50 {:.1} ms, p99 {:.1} ms ({rounds} rounds)",
            startup.as_secs_f64() * 1e3,
            common::ms(common::percentile(&latencies, 50.0)),
            common::ms(common::percentile(&latencies, 99.0)),
        );
    }
    Ok(())
}

fn config(resolver: Arc<SniResolver>) -> Arc<ServerConfig> {
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_cert_resolver(resolver),
    )
}

/// The mean time of `f` over `times` calls.
fn time_each(times: usize, mut f: impl FnMut()) -> Duration {
    let started = Instant::now();
    for _ in 0..times {
        f();
    }
    started.elapsed() / times.max(1) as u32
}

/// This process's resident set, from /proc (Linux); 0 elsewhere.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
