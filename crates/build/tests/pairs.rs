//! Named pairs: `STEM.crt` + `STEM.key` or `STEM.pem`, built into a
//! certified key with the DNS names of the certificate, refused in words
//! naming the file; and the directory layout they are found in.

mod common;

use std::path::PathBuf;

use common::template;
use tls_reload_build::{build_pair_blocking, pairs_in_dir, BuildError, PairFiles};
use tls_reload_testkit::{assert_no_pem_bytes, new_key, write_combined, write_leaf, write_new, Ca};

#[test]
fn a_pair_is_served_for_the_dns_names_of_its_certificate_not_its_file_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    let leaf = ca.named_leaf(
        0x1001,
        &["API.Example.com.", "*.api.example.com", "api.example.com"],
        new_key(),
    );
    let (cert, key) = write_leaf(dir.path(), "www", &leaf);
    let built =
        build_pair_blocking(&PairFiles::new("www", &cert, &key), &template()).expect("builds");
    assert_eq!(built.stem(), "www");
    // Lowercase, without a trailing dot, each once, in certificate order.
    assert_eq!(&built.names()[..], ["api.example.com", "*.api.example.com"]);
    assert_eq!(built.leaf().serial_hex(), "1001");
    assert_eq!(built.files(), [cert, key]);
    assert_eq!(
        built
            .certified_key()
            .end_entity_cert()
            .expect("leaf")
            .as_ref(),
        leaf.cert.der().as_ref()
    );
    let debug = format!("{built:?}");
    assert!(debug.contains("api.example.com"), "{debug}");
    assert_no_pem_bytes("Debug of a built pair", &debug, &leaf.key_pem());
}

#[test]
fn a_combined_pem_holds_the_chain_and_the_key_in_either_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    let leaf = ca.named_leaf(0x1002, &["a.example.com"], new_key());
    let pem = write_combined(dir.path(), "a", &leaf);
    let built = build_pair_blocking(&PairFiles::combined("a", &pem), &template()).expect("builds");
    assert_eq!(&built.names()[..], ["a.example.com"]);
    assert_eq!(built.files(), [pem]);

    let key_first = write_new(dir.path(), "b.pem", leaf.key_pem() + &leaf.cert_pem());
    let built =
        build_pair_blocking(&PairFiles::combined("b", &key_first), &template()).expect("builds");
    assert_eq!(built.leaf().serial_hex(), "1002");
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    let leaf = ca.named_leaf(0x1003, &["a.example.com"], new_key());
    let other = ca.named_leaf(0x1004, &["a.example.com"], new_key());
    let cert = write_new(dir.path(), "a.crt", leaf.cert_pem());
    let key = write_new(dir.path(), "a.key", other.key_pem());
    let err =
        build_pair_blocking(&PairFiles::new("a", &cert, &key), &template()).expect_err("mismatch");
    assert!(matches!(err, BuildError::KeyMismatch { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("a.key") && message.contains("a.crt"),
        "{message}"
    );
    assert!(
        message.contains("key does not match certificate"),
        "{message}"
    );

    let pem = write_new(dir.path(), "b.pem", leaf.cert_pem() + &other.key_pem());
    let err =
        build_pair_blocking(&PairFiles::combined("b", &pem), &template()).expect_err("mismatch");
    assert!(matches!(err, BuildError::KeyMismatch { .. }), "{err:?}");
    assert_eq!(err.path(), Some(pem.as_path()));
}

#[test]
fn a_certificate_without_a_dns_name_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    let leaf = ca.named_leaf(0x1005, &["127.0.0.1"], new_key());
    let pem = write_combined(dir.path(), "ip", &leaf);
    let err = build_pair_blocking(&PairFiles::combined("ip", &pem), &template())
        .expect_err("no DNS name");
    assert!(matches!(err, BuildError::NoDnsName { .. }), "{err:?}");
    assert!(err.to_string().contains("ip.pem"), "{err}");
}

#[test]
fn a_missing_or_broken_file_is_named_without_its_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    let leaf = ca.named_leaf(0x1006, &["a.example.com"], new_key());
    let cert = write_new(dir.path(), "a.crt", leaf.cert_pem());
    let missing = dir.path().join("a.key");
    let err = build_pair_blocking(&PairFiles::new("a", &cert, &missing), &template())
        .expect_err("no key");
    assert!(matches!(err, BuildError::Read { .. }), "{err:?}");
    assert_eq!(err.path(), Some(missing.as_path()));

    // A combined file whose key is cut short: refused, and neither the
    // message nor the Debug carries a byte of it.
    let key_pem = leaf.key_pem();
    let cut = &key_pem[..key_pem.len() - 40];
    let broken = leaf.cert_pem() + cut + "\n-----END PRIVATE KEY-----\n";
    let pem = write_new(dir.path(), "b.pem", &broken);
    let err =
        build_pair_blocking(&PairFiles::combined("b", &pem), &template()).expect_err("broken key");
    assert_eq!(err.path(), Some(pem.as_path()));
    assert_no_pem_bytes("the error", &format!("{err} | {err:?}"), &key_pem);

    // Reads are capped like every other build's.
    let big = write_new(dir.path(), "c.pem", vec![b'A'; 4096]);
    let err = build_pair_blocking(
        &PairFiles::combined("c", &big),
        &template().max_file_size(1024),
    )
    .expect_err("too large");
    assert!(matches!(err, BuildError::TooLarge { .. }), "{err:?}");
}

#[test]
fn a_directory_lists_its_pairs_by_stem_and_ignores_other_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for name in [
        "a.crt",
        "a.key", // a pair
        "b.pem", // a combined pair
        "c.crt", // half a pair (its key not written yet): listed
        "d.key", // the other half
        "e.crt",
        "e.key",
        "e.pem", // .crt/.key win over .pem
        "notes.txt",
        "README",
        ".f.pem", // ignored
    ] {
        write_new(d, name, "x");
    }
    std::fs::create_dir(d.join("g.pem")).expect("mkdir");
    let pairs = pairs_in_dir(d).expect("listed");
    let pair = |stem: &str| {
        PairFiles::new(
            stem,
            d.join(format!("{stem}.crt")),
            d.join(format!("{stem}.key")),
        )
    };
    assert_eq!(
        pairs,
        [
            pair("a"),
            PairFiles::combined("b", d.join("b.pem")),
            pair("c"),
            pair("d"),
            pair("e"),
        ]
    );
    assert_eq!(pairs[2].paths(), [d.join("c.crt"), d.join("c.key")]);

    let empty = tempfile::tempdir().expect("tempdir");
    assert_eq!(pairs_in_dir(empty.path()).expect("listed"), []);
    let gone: PathBuf = d.join("no such dir");
    let err = pairs_in_dir(&gone).expect_err("unreadable");
    assert_eq!(err.path(), Some(gone.as_path()));
}
