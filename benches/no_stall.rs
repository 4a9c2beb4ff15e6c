//! No stall: a steady client's handshake latency while reloads that rebuild
//! a 1,000-file CA directory run in the background, against the same
//! without reloads, and against a plain CPU hog as a control: on a small
//! machine the build competes for a core with the client and the server.
//! Prints a table; ratios are against "no reloads" in the same run.
//!
//! `cargo bench --bench no_stall [-- --quick]`

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{median, ms, percentile, steady_latencies};
use futures::StreamExt;
use smol::Timer;
use tls_reload::acceptor::{ClientAuth, ReloadEvent, ReloadingAcceptor, Template};
use tls_reload::detect::TestDetector;
use tls_reload_testkit::{ca_pem, write_ca_dir};

fn main() -> anyhow::Result<()> {
    let scale = common::start();
    smol::block_on(no_stall(scale))
}

async fn no_stall(scale: u32) -> anyhow::Result<()> {
    let common::Served {
        dir,
        materials,
        client,
    } = common::served()?;
    let ca_dir = write_ca_dir(&dir.path().join("clients.d"), 1000);
    // Rewriting this file between reloads makes each one rebuild the trust.
    let flip = [ca_pem("flip A"), ca_pem("flip B")];
    let trigger = TestDetector::new();
    let acceptor = ReloadingAcceptor::from_files(materials.cert(), materials.key())
        .client_ca_dir(&ca_dir)
        .template(Template::from_default_provider()?.client_auth(ClientAuth::Optional))
        .detector(trigger.clone())
        .interval(Duration::from_millis(5))
        .build()
        .await?;
    smol::spawn(acceptor.reloader()).detach();
    let status = acceptor.clone();
    let addr = common::spawn_server(move |tcp| acceptor.accept(tcp))?;

    let window = Duration::from_millis(1500 / u64::from(scale));
    let rounds = 8 / scale.min(2) as usize;
    let names = [
        "no reloads",
        "CPU hog thread",
        "reload every 250 ms",
        "reloads back to back",
    ];
    let mut samples: [Vec<Duration>; 4] = Default::default();
    // Each round's p99 per condition, to compare within a round.
    let mut round_p99: [Vec<Duration>; 4] = Default::default();
    let mut reloads = [0u64; 4];
    for _ in 0..rounds {
        for (which, sample) in samples.iter_mut().enumerate() {
            let running = Arc::new(AtomicBool::new(true));
            let hog = (which == 1).then(|| {
                let running = running.clone();
                std::thread::spawn(move || {
                    while running.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            });
            let pace = match which {
                2 => Some(Duration::from_millis(250)),
                3 => Some(Duration::from_millis(1)),
                _ => None,
            };
            let pump = pace.map(|pace| {
                let (running, trigger, flip, ca_dir) = (
                    running.clone(),
                    trigger.clone(),
                    flip.clone(),
                    ca_dir.clone(),
                );
                let mut events = status.events();
                smol::spawn(async move {
                    let mut n = 0usize;
                    while running.load(Ordering::Relaxed) {
                        let _ = std::fs::write(ca_dir.join("flip.pem"), &flip[n % 2]);
                        n += 1;
                        trigger.trigger();
                        // One build at a time: wait for it to land, then pace.
                        while let Some(event) = events.next().await {
                            if matches!(
                                event,
                                ReloadEvent::Applied { .. } | ReloadEvent::Failed { .. }
                            ) {
                                break;
                            }
                        }
                        Timer::after(pace).await;
                    }
                })
            });
            let before = status.status().reloads_applied;
            let mut latencies = steady_latencies(addr, &client, window).await?;
            latencies.sort();
            round_p99[which].push(percentile(&latencies, 99.0));
            sample.extend(latencies);
            running.store(false, Ordering::Relaxed);
            if let Some(pump) = pump {
                pump.await;
            }
            if let Some(hog) = hog {
                let _ = hog.join();
            }
            reloads[which] += status.status().reloads_applied - before;
        }
    }
    for sample in &mut samples {
        sample.sort();
    }
    let base = percentile(&samples[0], 99.0);
    println!(
        "\n3. no stall: one client's sequential handshakes, {rounds} x {} ms per condition, interleaved; each reload rebuilds a 1,000-file client CA directory",
        window.as_millis()
    );
    println!(
        "   | condition            | reloads | handshakes | p50 ms | p99 ms | p99 vs no reloads | median of round ratios |"
    );
    println!(
        "   |----------------------|--------:|-----------:|-------:|-------:|------------------:|-----------------------:|"
    );
    for (i, name) in names.iter().enumerate() {
        let p99 = percentile(&samples[i], 99.0);
        let ratios: Vec<f64> = round_p99[i]
            .iter()
            .zip(&round_p99[0])
            .map(|(p, base)| p.as_secs_f64() / base.as_secs_f64())
            .collect();
        println!(
            "   | {name:<20} | {:>7} | {:>10} | {:>6.2} | {:>6.2} | {:>16.2}x | {:>21.2}x |",
            reloads[i],
            samples[i].len(),
            ms(percentile(&samples[i], 50.0)),
            ms(p99),
            p99.as_secs_f64() / base.as_secs_f64(),
            median(ratios)
        );
    }
    println!("   (budget: p99 while a reload builds <= 1.2x of no reloads)");
    Ok(())
}
