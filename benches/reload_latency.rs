//! Reload latency of the poll alone (events off): from a new ECDSA pair on
//! disk, swapped in like a Kubernetes secret volume (one rename of
//! `..data`), to the first handshake that serves it. Prints p50, p99 and
//! max.
//!
//! `cargo bench --bench reload_latency [-- --quick]`

mod common;

use std::time::{Duration, Instant};

use common::{ms, percentile};
use smol::Timer;
use tls_reload::acceptor::ReloadingAcceptor;
use tls_reload_testkit::{client_config, served_leaf, tls_connect, Ca, Leaf, SecretVolume};

fn main() -> anyhow::Result<()> {
    let scale = common::start();
    smol::block_on(reload_latency(scale))
}

async fn reload_latency(scale: u32) -> anyhow::Result<()> {
    let interval = Duration::from_millis(50);
    let rotations = 50 / scale as usize;
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("bench CA");
    let client = client_config(&ca, None);
    let leaves: Vec<Leaf> = (0..=rotations as u16)
        .map(|i| ca.leaf(0x1000 + i))
        .collect();
    // A Kubernetes-style volume: the pair changes in one atomic rename.
    let mut volume = SecretVolume::new(dir.path(), &leaves[0]);
    // Events off: this measures the poll, the backstop (`benches/events.rs`
    // measures the event path).
    let acceptor = ReloadingAcceptor::builder(volume.materials())
        .interval(interval)
        .events(false)
        .build()
        .await?;
    smol::spawn(acceptor.reloader()).detach();
    let addr = common::spawn_server(move |tcp| acceptor.accept(tcp))?;

    let mut latencies = Vec::new();
    for (i, leaf) in leaves.iter().enumerate().skip(1) {
        volume.swap(leaf);
        let on_disk = Instant::now();
        let deadline = on_disk + Duration::from_secs(5);
        loop {
            let served = served_leaf(&tls_connect(addr, &client).await?);
            if served.as_ref() == leaf.cert.der().as_ref() {
                latencies.push(on_disk.elapsed());
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "rotation {i} not served within 5 s"
            );
        }
        // Let the tick phase drift relative to the next write.
        Timer::after(Duration::from_millis(
            37 * i as u64 % interval.as_millis() as u64,
        ))
        .await;
    }
    latencies.sort();
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    println!("\n2. reload latency: new ECDSA pair on disk (atomic ..data swap) -> first handshake serving it, interval {} ms, {} rotations", interval.as_millis(), latencies.len());
    println!(
        "   p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (budget: p99 <= {} ms)",
        ms(p50),
        ms(p99),
        ms(latencies[latencies.len() - 1]),
        interval.as_millis() + 25
    );
    Ok(())
}
