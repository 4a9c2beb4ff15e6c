//! Accept overhead: full TLS 1.3 handshakes per second over loopback, plain
//! futures-rustls against `ReloadingAcceptor` (reloader idle, reloader
//! checking every 10 ms, no handshake timeout), in interleaved rounds.
//! Prints a table; ratios are against the plain baseline of the same run.
//!
//! `cargo bench --bench accept_overhead [-- --quick]`

mod common;

use std::time::Duration;

use common::{handshake_rate, median, spawn_server};
use futures_rustls::TlsAcceptor;
use tls_reload::acceptor::{ReloadingAcceptor, Template};
use tls_reload::build::build_blocking;

fn main() -> anyhow::Result<()> {
    let scale = common::start();
    smol::block_on(accept_overhead(scale))
}

async fn accept_overhead(scale: u32) -> anyhow::Result<()> {
    let common::Served {
        dir: _dir,
        materials,
        client,
    } = common::served()?;
    let (cert, key) = (materials.cert(), materials.key());

    let built = build_blocking(&materials, &Template::from_default_provider()?, None)?;
    let plain = TlsAcceptor::from(built.config().clone());
    let idle = ReloadingAcceptor::from_files(cert, key).build().await?;
    smol::spawn(idle.reloader()).detach();
    let busy = ReloadingAcceptor::from_files(cert, key)
        .interval(Duration::from_millis(10))
        .build()
        .await?;
    smol::spawn(busy.reloader()).detach();
    let untimed = ReloadingAcceptor::from_files(cert, key)
        .handshake_timeout(None)
        .build()
        .await?;
    smol::spawn(untimed.reloader()).detach();

    let servers = [
        (
            "plain futures-rustls TlsAcceptor",
            spawn_server(move |tcp| plain.accept(tcp))?,
        ),
        (
            "ours, reloader idle (1 s)",
            spawn_server(move |tcp| idle.accept(tcp))?,
        ),
        (
            "ours, reloader checking every 10 ms",
            spawn_server(move |tcp| busy.accept(tcp))?,
        ),
        (
            "ours, no handshake timeout",
            spawn_server(move |tcp| untimed.accept(tcp))?,
        ),
    ];

    let rounds = 10 / scale.min(5) as usize;
    let window = Duration::from_millis(1000 / u64::from(scale));
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut cpu: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        // Rotate the order so no variant always runs first.
        for i in 0..servers.len() {
            let which = (i + round) % servers.len();
            let (rate, per) = handshake_rate(servers[which].1, &client, window).await?;
            rates[which].push(rate);
            cpu[which].push(per.as_secs_f64() * 1e6);
        }
    }
    println!("\n1. accept overhead: full TLS 1.3 handshakes/s over loopback, 4 clients, ECDSA P-256, {rounds} interleaved rounds of {} ms", window.as_millis());
    println!("   | server                              | median handshakes/s | vs plain | median of round ratios | CPU us/handshake | vs plain |");
    println!("   |-------------------------------------|--------------------:|---------:|-----------------------:|-----------------:|---------:|");
    let plain = median(rates[0].clone());
    let plain_cpu = median(cpu[0].clone());
    for (i, (name, _)) in servers.iter().enumerate() {
        let rate = median(rates[i].clone());
        let ratios = rates[i].iter().zip(&rates[0]).map(|(r, p)| r / p).collect();
        let per = median(cpu[i].clone());
        println!(
            "   | {name:<35} | {rate:>19.0} | {:>8.3} | {:>22.3} | {per:>16.0} | {:>8.3} |",
            rate / plain,
            median(ratios),
            per / plain_cpu
        );
    }
    println!("   (CPU: this process, client and server together, 10 ms clock ticks; budget: ours >= 0.98x of plain in handshakes/s)");
    Ok(())
}
