//! Time to build a server config from files: an ECDSA P-256 pair, an RSA-2048
//! pair, and a pair plus a client CA directory of 100 and 1,000 certificates.
//!
//! Baselines in the same groups: reading the same files, and rustls building a
//! config from DER already in memory (what every build has to pay anyway).
// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tls_reload::build::{build_blocking, Materials, Template};
use tls_reload_testkit::{openssl, openssl_self_signed, provider, write_ca_dir, write_leaf, Ca};

fn ecdsa_pair(dir: &Path) -> Materials {
    let (cert, key) = write_leaf(dir, "ecdsa", &Ca::new("bench CA").leaf(0x1001));
    Materials::new(cert, key)
}

fn rsa_pair(dir: &Path) -> Materials {
    openssl(dir, &["genrsa", "-out", "rsa.key", "2048"]);
    openssl_self_signed(dir, "rsa.key", "rsa.crt");
    Materials::new(dir.join("rsa.crt"), dir.join("rsa.key"))
}

/// rustls alone, from DER already parsed: the floor under any build.
fn from_memory(materials: &Materials) -> impl Fn() -> ServerConfig {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(materials.cert())
        .expect("open")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(materials.key()).expect("key");
    move || {
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .expect("config")
    }
}

fn read_files(paths: &[PathBuf]) -> usize {
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("read").len())
        .sum()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = Template::new(provider());
    let pairs = [
        ("ecdsa_p256", ecdsa_pair(dir.path())),
        ("rsa_2048", rsa_pair(dir.path())),
    ];

    let mut group = c.benchmark_group("build/pair");
    for (name, materials) in &pairs {
        group.bench_function(BenchmarkId::new("build_blocking", name), |b| {
            b.iter(|| build_blocking(black_box(materials), &template, None).expect("build"))
        });
        let rustls_only = from_memory(materials);
        group.bench_function(BenchmarkId::new("baseline_rustls_from_der", name), |b| {
            b.iter(&rustls_only)
        });
        let paths = materials.paths();
        group.bench_function(BenchmarkId::new("baseline_read_files", name), |b| {
            b.iter(|| read_files(black_box(&paths)))
        });
    }
    group.finish();

    let (_, ecdsa) = &pairs[0];
    let mut group = c.benchmark_group("build/ca_dir");
    for count in [100, 1_000] {
        let cas = write_ca_dir(&dir.path().join(format!("cas-{count}")), count);
        let materials = ecdsa.clone().with_client_ca_dir(&cas);
        group.bench_function(BenchmarkId::new("build_blocking", count), |b| {
            b.iter(|| build_blocking(black_box(&materials), &template, None).expect("build"))
        });
        // A reload after a certificate rotation: the CA files are unchanged,
        // so the served verifier is reused.
        let served = build_blocking(&materials, &template, None).expect("build");
        group.bench_function(BenchmarkId::new("rebuild_same_cas", count), |b| {
            b.iter(|| {
                build_blocking(black_box(&materials), &template, Some(&served)).expect("build")
            })
        });
        let paths: Vec<PathBuf> = std::fs::read_dir(&cas)
            .expect("list")
            .map(|e| e.expect("entry").path())
            .chain(ecdsa.paths())
            .collect();
        group.bench_function(BenchmarkId::new("baseline_read_files", count), |b| {
            b.iter(|| read_files(black_box(&paths)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
