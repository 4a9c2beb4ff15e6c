//! Idle cost: wall and CPU time of one `Combined` check of a cert, a key
//! and a 100-file CA directory through the blocking pool, and what that
//! costs per hour at a 1 s interval.
//!
//! `cargo bench --bench idle_cost`

mod common;

use std::time::{Duration, Instant};

use common::process_cpu;
use smol::Timer;
use tls_reload::detect::{Composite, Detector, Strategy};
use tls_reload_testkit::write_ca_dir;

fn main() -> anyhow::Result<()> {
    common::start();
    smol::block_on(idle_cost())
}

async fn idle_cost() -> anyhow::Result<()> {
    let common::Served { dir, materials, .. } = common::served()?;
    let ca_dir = write_ca_dir(&dir.path().join("idle.d"), 100);
    // Past the racy window, so the steady state is measured.
    Timer::after(Duration::from_millis(2100)).await;
    let detector = Composite::from_paths(
        Strategy::Combined,
        [
            materials.cert().to_path_buf(),
            materials.key().to_path_buf(),
            ca_dir,
        ],
    );
    detector.fingerprint().await?;
    let checks = 2000u32;
    let cpu_before = process_cpu();
    let wall = Instant::now();
    for _ in 0..checks {
        detector.fingerprint().await?;
    }
    let wall = wall.elapsed() / checks;
    let cpu = process_cpu().saturating_sub(cpu_before) / checks;
    println!("\n4. idle cost: Combined check of cert + key + 100-file CA dir (through the blocking pool)");
    println!(
        "   {:.1} us wall and {:.1} us CPU per check; at a 1 s interval: {:.2} s of CPU per hour ({:.4}% of a core)",
        wall.as_secs_f64() * 1e6,
        cpu.as_secs_f64() * 1e6,
        cpu.as_secs_f64() * 3600.0,
        cpu.as_secs_f64() * 100.0
    );
    Ok(())
}
