//! Cost of one check of each detection strategy over 1 file and directories
//! of 1,000 and 10,000 files of 2 KiB, unchanged and just changed.
//!
//! Baseline in each group: a bare `std::fs::metadata` loop over the same
//! files, paths collected beforehand. Budget: an unchanged `Combined` or
//! `Metadata` check costs at most 1.15x the baseline. The files are left
//! alone for longer than `Combined`'s racy window before measuring, so the
//! unchanged case is the steady state of the real default.
//!
//! After criterion's groups, a table of ratios measured in interleaved
//! rounds (baseline, `Combined`, `Metadata`, one batch each, in turn; the
//! median of the rounds' ratios), which a shared, noisy machine moves far
//! less than criterion's one-after-the-other timings.
//! `cargo bench --bench detect -- --ratios` prints the table alone.

use std::cell::Cell;
use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion};
use tempfile::TempDir;
use tls_reload::detect::{
    Combined, ContentHash, DetectError, Detector, Fingerprint, Metadata, DEFAULT_RACY_WINDOW,
};

const SIZES: [usize; 3] = [1, 1_000, 10_000];
const FILE_SIZE: usize = 2 * 1024;

/// A watched path and the files under it.
struct Fixture {
    _dir: TempDir,
    watched: PathBuf,
    files: Vec<PathBuf>,
}

impl Fixture {
    /// One file, watched as a file; more, in a directory watched as one.
    fn new(count: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (watched, files) = if count == 1 {
            let file = dir.path().join("tls.crt");
            (file.clone(), vec![file])
        } else {
            let ca = dir.path().join("ca.d");
            fs::create_dir(&ca).expect("create dir");
            let files = (0..count)
                .map(|i| ca.join(format!("ca-{i:05}.pem")))
                .collect();
            (ca, files)
        };
        for (i, file) in files.iter().enumerate() {
            fs::write(file, contents(i, 0)).expect("write");
        }
        Self {
            _dir: dir,
            watched,
            files,
        }
    }
}

/// 2 KiB that differ per file and per `version`.
fn contents(file: usize, version: u64) -> Vec<u8> {
    format!("{file:08}{version:08}")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(FILE_SIZE)
        .collect()
}

type Check = Box<dyn Fn() -> Result<Fingerprint, DetectError>>;

/// Fresh detectors of each strategy, primed once.
fn strategies(path: &Path) -> [(&'static str, Check); 3] {
    let hash = ContentHash::new(path);
    let metadata = Metadata::new(path);
    let combined = Combined::new(path);
    let checks: [(&str, Check); 3] = [
        ("hash", Box::new(move || hash.fingerprint_blocking())),
        (
            "metadata",
            Box::new(move || metadata.fingerprint_blocking()),
        ),
        (
            "combined",
            Box::new(move || combined.fingerprint_blocking()),
        ),
    ];
    for (_, check) in &checks {
        check().expect("prime");
    }
    checks
}

fn baseline(group: &mut BenchmarkGroup<'_, WallTime>, files: &[PathBuf]) {
    group.bench_function("metadata loop (baseline)", |b| {
        b.iter(|| {
            for file in files {
                black_box(fs::metadata(black_box(file)).expect("stat"));
            }
        })
    });
}

fn unchanged(group: &mut BenchmarkGroup<'_, WallTime>, path: &Path) {
    for (name, check) in strategies(path) {
        group.bench_function(format!("{name}/unchanged"), |b| {
            b.iter(|| black_box(check().expect("check")))
        });
    }
}

/// One file rewritten with other bytes of the same size before each check.
fn changed(group: &mut BenchmarkGroup<'_, WallTime>, path: &Path, file: &Path) {
    let version = Cell::new(0);
    for (name, check) in strategies(path) {
        group.bench_function(format!("{name}/changed"), |b| {
            b.iter_batched(
                || {
                    version.set(version.get() + 1);
                    fs::write(file, contents(0, version.get())).expect("rewrite");
                },
                |()| black_box(check().expect("check")),
                BatchSize::PerIteration,
            )
        });
    }
}

/// The same check through the async trait: a hop to the blocking pool.
fn unchanged_async(group: &mut BenchmarkGroup<'_, WallTime>, path: &Path) {
    let combined = Combined::new(path);
    smol::block_on(combined.fingerprint()).expect("prime");
    group.bench_function("combined/unchanged/async", |b| {
        b.iter(|| black_box(smol::block_on(combined.fingerprint()).expect("check")))
    });
}

fn checks(c: &mut Criterion) {
    let fixtures = SIZES.map(Fixture::new);
    // Past the racy window, `Combined` trusts the metadata: the steady state.
    std::thread::sleep(DEFAULT_RACY_WINDOW + Duration::from_millis(500));

    for fixture in &fixtures {
        let count = fixture.files.len();
        let mut group = c.benchmark_group(format!("check/{count} files"));
        baseline(&mut group, &fixture.files);
        unchanged(&mut group, &fixture.watched);
        if count == 1 {
            unchanged_async(&mut group, &fixture.watched);
        }
        // Last: a rewritten file stays untrusted for the racy window.
        changed(&mut group, &fixture.watched, &fixture.files[0]);
        group.finish();
    }
}

/// Unchanged checks against the baseline, in interleaved rounds.
fn ratios() {
    let fixtures = SIZES.map(Fixture::new);
    std::thread::sleep(DEFAULT_RACY_WINDOW + Duration::from_millis(500));
    println!("\nunchanged check vs bare metadata loop, median of 15 interleaved rounds (budget: <= 1.15x)");
    println!("| files | bare `metadata` loop | `Combined` | `Metadata` |");
    println!("|---:|---:|---:|---:|");
    for fixture in &fixtures {
        let count = fixture.files.len();
        let combined = Combined::new(&fixture.watched);
        let metadata = Metadata::new(&fixture.watched);
        combined.fingerprint_blocking().expect("prime");
        metadata.fingerprint_blocking().expect("prime");
        // About 20 ms per batch.
        let batch = (20_000 / count).max(1);
        let time = |f: &dyn Fn()| {
            let start = Instant::now();
            for _ in 0..batch {
                f();
            }
            start.elapsed().as_secs_f64() / batch as f64
        };
        let base = || {
            for file in &fixture.files {
                black_box(fs::metadata(black_box(file)).expect("stat"));
            }
        };
        let comb = || {
            black_box(combined.fingerprint_blocking().expect("check"));
        };
        let meta = || {
            black_box(metadata.fingerprint_blocking().expect("check"));
        };
        let (mut bases, mut combs, mut metas) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..16 {
            let (b, c, m) = (time(&base), time(&comb), time(&meta));
            if round > 0 {
                bases.push(b);
                combs.push(c / b);
                metas.push(m / b);
            }
        }
        println!(
            "| {count} | {} | {:.2}x | {:.2}x |",
            human(median(bases)),
            median(combs),
            median(metas)
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn human(secs: f64) -> String {
    if secs < 1e-3 {
        format!("{:.2} µs", secs * 1e6)
    } else {
        format!("{:.2} ms", secs * 1e3)
    }
}

fn main() {
    if std::env::args().any(|a| a == "--ratios") {
        ratios();
        return;
    }
    // By hand rather than `criterion_group!`, whose `pub fn` has no docs.
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    checks(&mut criterion);
    criterion.final_summary();
    ratios();
}
