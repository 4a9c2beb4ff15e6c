//! Key formats, algorithms, chains, and what a build reports about the leaf.

mod common;

use std::process::Command;

use common::{handshake, template};
use rcgen::{KeyPair, SerialNumber};
use sha2::{Digest, Sha256};
use tls_reload_build::{build, build_blocking, BuildError, Built, Materials, Resumption};
use tls_reload_testkit::{
    leaf_params, openssl, openssl_self_signed, resuming_client_config, write_leaf, write_new, Ca,
};

#[test]
fn pkcs8_ecdsa_p256_serves_a_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("root");
    let (cert, key) = write_leaf(dir.path(), "tls", &ca.localhost_leaf());
    assert!(std::fs::read_to_string(&key)
        .expect("read")
        .contains("BEGIN PRIVATE KEY"));
    let built = build_blocking(&Materials::new(&cert, &key), &template(), None).expect("build");
    handshake(built.config(), &resuming_client_config(&ca, None)).expect("handshake");
}

#[test]
fn pkcs8_ed25519_serves_a_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("root");
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let leaf = ca.sign(leaf_params(), key);
    let (cert, key) = write_leaf(dir.path(), "tls", &leaf);
    let built = build_blocking(&Materials::new(&cert, &key), &template(), None).expect("build");
    handshake(built.config(), &resuming_client_config(&ca, None)).expect("handshake");
}

#[test]
fn rsa_pkcs1_and_pkcs8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    openssl(d, &["genrsa", "-traditional", "-out", "rsa1.key", "2048"]);
    openssl(
        d,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "rsa1.key", "-out", "rsa8.key",
        ],
    );
    openssl_self_signed(d, "rsa1.key", "rsa.crt");
    let pkcs1 = std::fs::read_to_string(d.join("rsa1.key")).expect("read");
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"), "{pkcs1}");

    for key in ["rsa1.key", "rsa8.key"] {
        let built = build_blocking(
            &Materials::new(d.join("rsa.crt"), d.join(key)),
            &template(),
            None,
        )
        .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(built.leaf().subject, "CN=localhost");
    }

    openssl(d, &["genrsa", "-traditional", "-out", "other.key", "2048"]);
    let err = build_blocking(
        &Materials::new(d.join("rsa.crt"), d.join("other.key")),
        &template(),
        None,
    )
    .expect_err("mismatched RSA pair");
    assert!(matches!(err, BuildError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn sec1_ec_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.key",
        ],
    );
    openssl_self_signed(d, "ec.key", "ec.crt");
    let sec1 = std::fs::read_to_string(d.join("ec.key")).expect("read");
    assert!(sec1.contains("BEGIN EC PRIVATE KEY"), "{sec1}");
    build_blocking(
        &Materials::new(d.join("ec.crt"), d.join("ec.key")),
        &template(),
        None,
    )
    .expect("build");
}

#[test]
fn chain_with_an_intermediate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Ca::new("root");
    let intermediate = root.intermediate("intermediate");
    let leaf = intermediate.localhost_leaf();
    let cert = write_new(
        dir.path(),
        "chain.crt",
        leaf.cert.pem() + &intermediate.pem(),
    );
    let key = write_new(dir.path(), "tls.key", leaf.key_pem());
    let built = build_blocking(&Materials::new(&cert, &key), &template(), None).expect("build");
    // The client knows only the root: the intermediate must be served.
    handshake(built.config(), &resuming_client_config(&root, None)).expect("handshake");

    let leaf_only = write_new(dir.path(), "leaf.crt", leaf.cert.pem());
    let built =
        build_blocking(&Materials::new(&leaf_only, &key), &template(), None).expect("build");
    handshake(built.config(), &resuming_client_config(&root, None)).expect_err("no intermediate");
}

#[test]
fn cert_and_key_in_one_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = Ca::new("root").localhost_leaf();
    let both = write_new(dir.path(), "tls.pem", leaf.cert.pem() + &leaf.key_pem());
    build_blocking(&Materials::new(&both, &both), &template(), None).expect("build");
}

#[test]
fn leaf_info_matches_openssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("root");
    let mut params = leaf_params();
    // High bit set: DER adds a leading zero that must not show.
    params.serial_number = Some(SerialNumber::from(vec![0x8a, 0x00, 0x01]));
    let leaf = ca.sign(params, KeyPair::generate().expect("key"));
    let (cert, key) = write_leaf(dir.path(), "tls", &leaf);

    let built = build_blocking(&Materials::new(&cert, &key), &template(), None).expect("build");
    let info = built.leaf();
    assert_eq!(info.serial, [0x8a, 0x00, 0x01]);
    assert_eq!(info.serial_hex(), "8a0001");
    assert_eq!(info.subject, "CN=localhost");
    assert_eq!(
        info.sha256,
        <[u8; 32]>::from(Sha256::digest(leaf.cert.der()))
    );
    assert!(info.not_before < info.not_after);

    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-serial",
            "-fingerprint",
            "-sha256",
            "-in",
        ])
        .arg(&cert)
        .output()
        .expect("openssl");
    let out = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.contains(&format!("serial={}", info.serial_hex())),
        "{out}"
    );
    let fingerprint = out
        .split('=')
        .next_back()
        .expect("=")
        .trim()
        .replace(':', "");
    assert_eq!(fingerprint, info.sha256_hex());

    assert_eq!(built.files(), [cert, key]);
    assert_eq!(built.resumption(), Resumption::Fresh);
}

#[test]
fn debug_output_holds_no_key_material() {
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = Ca::new("root").localhost_leaf();
    let (cert, key) = write_leaf(dir.path(), "tls", &leaf);
    let template = template().configure(|_| {});
    let built = build_blocking(&Materials::new(&cert, &key), &template, None).expect("build");
    let debug = format!("{built:?} {template:?}");
    let key_pem = leaf.key_pem();
    let body_line = key_pem.lines().nth(1).expect("base64 line");
    assert!(!debug.contains(body_line), "{debug}");
    assert!(!debug.contains(&format!("{:?}", &leaf.key.serialize_der()[..16])));
    assert!(debug.contains("<fn>"), "{debug}");
}

#[test]
fn async_build_runs_on_the_blocking_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("root");
    let (cert, key) = write_leaf(dir.path(), "tls", &ca.localhost_leaf());
    let materials = Materials::new(&cert, &key);
    let template = template().alpn_protocols(vec![b"h2".to_vec()]);
    let built = smol::block_on(build(&materials, &template, None)).expect("build");
    assert_eq!(built.config().alpn_protocols, [b"h2".to_vec()]);

    let err = smol::block_on(build(
        &Materials::new(&cert, dir.path().join("nope")),
        &template,
        None,
    ))
    .expect_err("missing key");
    assert!(matches!(err, BuildError::Read { .. }), "{err:?}");
}

#[test]
fn configure_has_the_last_word() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_leaf(dir.path(), "tls", &Ca::new("root").localhost_leaf());
    let template = template()
        .alpn_protocols(vec![b"h2".to_vec()])
        .configure(|c| c.alpn_protocols.push(b"http/1.1".to_vec()))
        .configure(|c| c.max_early_data_size = 7);
    let built = build_blocking(&Materials::new(&cert, &key), &template, None).expect("build");
    assert_eq!(
        built.config().alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert_eq!(built.config().max_early_data_size, 7);
}

#[test]
fn template_from_default_provider() {
    let template = tls_reload_build::Template::from_default_provider().expect("ring feature");
    assert!(!template.provider().cipher_suites.is_empty());
}

#[test]
fn built_and_the_async_build_can_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let materials = Materials::new("tls.crt", "tls.key");
    let template = template();
    send(&build(&materials, &template, None));
    send_sync(&materials);
    send_sync(&template);
    let _ = |built: Built| send_sync(&built);
}
