//! Event-driven detection, measured:
//!
//! 1. latency from a rotation written to disk to the first handshake that
//!    serves it, events on, poll interval 10 s, for three ways of writing:
//!    the kubelet's `..data` swap, write-then-rename of the key then the
//!    certificate, and the certificate then the key rewritten in place;
//! 2. idle CPU with events on against polling alone, at the same interval;
//! 3. a storm of writes to an unrelated file beside the pair: the server's
//!    CPU, and how many reloads it caused (none is right).
//!
//! CPU is this process's CPU clock (every thread, nanoseconds); the storm's
//! writer is another process.
//!
//! `cargo bench --bench events [-- --quick]`

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ms, percentile};
use futures::StreamExt;
use smol::Timer;
use tls_reload::acceptor::{Materials, ReloadEvent, ReloadingAcceptor};
use tls_reload_testkit::{
    client_config, served_leaf, tls_connect, write_atomic, write_in_place, write_pair, Ca, Leaf,
    SecretVolume,
};

const INTERVAL: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--storm-writer") {
        return storm_writer(Path::new(&args[i + 1]), args[i + 2].parse()?);
    }
    let scale = common::start();
    smol::block_on(async {
        latency(scale).await?;
        idle(scale).await?;
        storm(scale).await
    })
}

/// How a rotation is written.
#[derive(Clone, Copy, Debug)]
enum Pattern {
    DataSwap,
    WriteThenRename,
    InPlace,
}

async fn latency(scale: u32) -> anyhow::Result<()> {
    println!(
        "\n1. events: rotation written -> first handshake serving it, poll interval {} s",
        INTERVAL.as_secs()
    );
    let rotations = 50 / scale as usize;
    for pattern in [
        Pattern::DataSwap,
        Pattern::WriteThenRename,
        Pattern::InPlace,
    ] {
        let mut latencies = rotate(pattern, rotations).await?;
        latencies.sort();
        println!(
            "   {:<16} {} rotations: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (budget: p99 <= 20 ms, goal < 10 ms)",
            format!("{pattern:?}"),
            latencies.len(),
            ms(percentile(&latencies, 50.0)),
            ms(percentile(&latencies, 99.0)),
            ms(latencies[latencies.len() - 1]),
        );
    }
    Ok(())
}

async fn rotate(pattern: Pattern, rotations: usize) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("events bench CA");
    let client = client_config(&ca, None);
    let leaves: Vec<Leaf> = (0..=rotations as u16)
        .map(|i| ca.leaf(0x2000 + i))
        .collect();
    let mut volume = None;
    let materials = match pattern {
        Pattern::DataSwap => {
            let secret = SecretVolume::new(dir.path(), &leaves[0]);
            let materials = secret.materials();
            volume = Some(secret);
            materials
        }
        Pattern::WriteThenRename | Pattern::InPlace => write_pair(dir.path(), &leaves[0]),
    };
    let (acceptor, addr) = serve(materials.clone()).await?;
    let mut events = acceptor.events();
    let mut latencies = Vec::with_capacity(rotations);
    for leaf in &leaves[1..] {
        match (pattern, volume.as_mut()) {
            (Pattern::DataSwap, Some(volume)) => volume.swap(leaf),
            (Pattern::WriteThenRename, _) | (Pattern::DataSwap, None) => {
                write_atomic(materials.key(), leaf.key_pem());
                write_atomic(materials.cert(), leaf.cert_pem());
            }
            (Pattern::InPlace, _) => {
                write_in_place(materials.cert(), leaf.cert_pem());
                write_in_place(materials.key(), leaf.key_pem());
            }
        }
        let written = Instant::now();
        let want = leaf.serial_hex();
        wait_applied(&mut events, &want).await?;
        let served = served_leaf(&tls_connect(addr, &client).await?);
        anyhow::ensure!(
            served.as_ref() == leaf.cert.der().as_ref(),
            "applied {want} but served another certificate"
        );
        latencies.push(written.elapsed());
        // Apart, like real renewals: each is a rotation of its own.
        Timer::after(Duration::from_millis(60)).await;
    }
    Ok(latencies)
}

/// An acceptor with events on at [`INTERVAL`], its reloader running and
/// watching, and a server.
async fn serve(materials: Materials) -> anyhow::Result<(ReloadingAcceptor, std::net::SocketAddr)> {
    let acceptor = ReloadingAcceptor::builder(materials)
        .interval(INTERVAL)
        .build()
        .await?;
    smol::spawn(acceptor.reloader()).detach();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !acceptor.status().detection.is_events() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no events: {}",
            acceptor.status().detection
        );
        Timer::after(Duration::from_millis(5)).await;
    }
    let serving = acceptor.clone();
    let addr = common::spawn_server(move |tcp| serving.accept(tcp))?;
    Ok((acceptor, addr))
}

async fn wait_applied(
    events: &mut tls_reload::acceptor::Events,
    serial: &str,
) -> anyhow::Result<()> {
    let deadline = Timer::after(Duration::from_secs(5));
    futures::pin_mut!(deadline);
    loop {
        let next = events.next();
        futures::pin_mut!(next);
        match futures::future::select(next, &mut deadline).await {
            futures::future::Either::Left((Some(ReloadEvent::Applied { leaf, .. }), _))
                if leaf.serial_hex() == serial =>
            {
                return Ok(())
            }
            futures::future::Either::Left((Some(_), _)) => {}
            futures::future::Either::Left((None, _)) => anyhow::bail!("events ended"),
            futures::future::Either::Right(_) => anyhow::bail!("{serial} not applied within 5 s"),
        }
    }
}

/// Idle CPU over a stretch with no change, events on and off in turn over
/// a few rounds (the order alternates), at an interval short enough to
/// count many checks; per hour at [`INTERVAL`].
async fn idle(scale: u32) -> anyhow::Result<()> {
    let checks = 100 / scale;
    let rounds = if scale > 1 { 2 } else { 4 };
    let interval = Duration::from_millis(50);
    println!(
        "\n2. idle: {rounds} rounds of {checks} checks of an unchanged pair at {} ms, events on and off in turn (CPU of this process)",
        interval.as_millis()
    );
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for events in if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            let each = idle_check_cpu(events, interval, checks).await?;
            if events {
                on.push(each);
            } else {
                off.push(each);
            }
        }
    }
    let (on, off) = (common::median(on), common::median(off));
    for (name, each) in [("on", on), ("off", off)] {
        println!(
            "   events {name:<3}: median {:.1} us CPU per check; at a {} s interval {:.3} s of CPU per hour",
            each / 1e3,
            INTERVAL.as_secs(),
            each * (3600.0 / INTERVAL.as_secs_f64()) / 1e9,
        );
    }
    println!(
        "   ratio on/off: {:.2} (budget: at most the same, within noise)",
        on / off
    );
    Ok(())
}

/// CPU nanoseconds per idle check of one acceptor.
async fn idle_check_cpu(events: bool, interval: Duration, checks: u32) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("idle CA");
    let acceptor = ReloadingAcceptor::builder(write_pair(dir.path(), &ca.leaf(0x3001)))
        .interval(interval)
        .events(events)
        .build()
        .await?;
    smol::spawn(acceptor.reloader()).detach();
    // Past the racy window: the steady state is measured.
    Timer::after(Duration::from_millis(2100)).await;
    let before = process_cpu_ns();
    Timer::after(interval * checks).await;
    Ok((process_cpu_ns() - before) as f64 / f64::from(checks))
}

/// A writer process rewriting an unrelated file beside the pair 1,000
/// times a second; the server's CPU and reloads meanwhile.
async fn storm(scale: u32) -> anyhow::Result<()> {
    let seconds = 10 / scale;
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("storm CA");
    let materials = write_pair(dir.path(), &ca.leaf(0x4001));
    let (acceptor, _addr) = serve(materials).await?;
    Timer::after(Duration::from_millis(2100)).await;
    let noise: PathBuf = dir.path().join("access.log");
    let before = process_cpu_ns();
    let started = Instant::now();
    let status = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--storm-writer",
            &noise.display().to_string(),
            &seconds.to_string(),
        ])
        .status()?;
    anyhow::ensure!(status.success(), "the writer failed");
    let wall = started.elapsed();
    let cpu = Duration::from_nanos(process_cpu_ns() - before);
    let status = acceptor.status();
    println!(
        "\n3. storm: 1,000 writes/s to an unrelated file beside the pair for {seconds} s, events on"
    );
    println!(
        "   server CPU {:.2}% of one core, reloads {} (budget: <= 5%, zero reloads)",
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        status.generation - 1
    );
    Ok(())
}

/// The storm's writer: 1,000 rewrites a second of `path` for `seconds`.
fn storm_writer(path: &Path, seconds: u64) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::fs::write(path, format!("line {n}\n"))?;
        n += 1;
        let due = start + Duration::from_millis(n);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

/// This process's CPU time, every thread's (exited ones included), in
/// nanoseconds.
fn process_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}
