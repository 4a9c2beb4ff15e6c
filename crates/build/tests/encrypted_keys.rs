//! Encrypted PKCS#8 keys as `openssl pkcs8 -topk8` writes them (PBES2 with
//! PBKDF2 or scrypt), decrypted with a passphrase read from a file at every
//! build; a wrong passphrase, a legacy OpenSSL key and a missing
//! passphrase file are each named, and neither the passphrase nor the key
//! reaches a log line, an error or a `Debug` string.

mod common;

use std::path::{Path, PathBuf};

use common::{handshake, template, Fixture};
use tls_reload_build::{
    build_blocking, build_from_bytes, BuildError, KeyEncryptionProblem, MaterialBytes, Materials,
};
use tls_reload_testkit::{
    assert_no_pem_bytes, client_config, openssl, write_leaf, write_new, Captured,
};

const PASSPHRASE: &str = "correct horse battery staple";

/// Encrypts the PEM key `plain` (in `dir`) into `out` with `openssl pkcs8
/// -topk8` and the extra `scheme` arguments, the passphrase read from
/// `passphrase` (openssl reads its first line).
fn encrypt(dir: &Path, plain: &Path, out: &str, passphrase: &Path, scheme: &[&str]) -> PathBuf {
    let plain = plain.to_str().expect("utf-8 path");
    let pass = format!("file:{}", passphrase.display());
    let mut args = vec![
        "pkcs8", "-topk8", "-in", plain, "-out", out, "-passout", &pass,
    ];
    args.extend_from_slice(scheme);
    openssl(dir, &args);
    dir.join(out)
}

/// Whether a plain client (no client auth) completes a handshake.
fn serves(s: &Fixture, built: &tls_reload_build::Built) -> bool {
    handshake(built.config(), &client_config(&s.ca, None)).is_ok()
}

fn check_scheme(scheme: &[&str]) {
    let s = Fixture::new();
    // The passphrase as an editor or `echo` writes it: a trailing newline.
    let pass = write_new(s.dir.path(), "tls.pass", format!("{PASSPHRASE}\n"));
    let key = encrypt(s.dir.path(), &s.key, "tls.enc.key", &pass, scheme);
    let pem = std::fs::read_to_string(&key).expect("read");
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{pem}"
    );

    let materials = Materials::new(&s.cert, &key).with_key_passphrase_file(&pass);
    let built = build_blocking(&materials, &template(), None).expect("decrypts");
    assert!(serves(&s, &built));
    assert_eq!(built.files(), [s.cert.clone(), key, pass]);
}

#[test]
fn pbkdf2_aes_256_cbc_decrypts() {
    check_scheme(&["-v2", "aes-256-cbc"]);
}

#[test]
fn scrypt_decrypts() {
    check_scheme(&["-scrypt"]);
}

#[test]
fn pbkdf2_aes_128_cbc_with_crlf_passphrase_decrypts() {
    let s = Fixture::new();
    let pass = write_new(s.dir.path(), "tls.pass", format!("{PASSPHRASE}\n"));
    let key = encrypt(
        s.dir.path(),
        &s.key,
        "tls.enc.key",
        &pass,
        &["-v2", "aes-128-cbc"],
    );
    // Written on Windows, or by a tool that adds blank lines.
    write_new(s.dir.path(), "tls.pass", format!("{PASSPHRASE}\r\n\n"));
    let materials = Materials::new(&s.cert, &key).with_key_passphrase_file(&pass);
    assert!(serves(
        &s,
        &build_blocking(&materials, &template(), None).expect("build")
    ));
}

#[test]
fn a_wrong_passphrase_names_the_key_file_and_never_the_passphrase() {
    let s = Fixture::new();
    let pass = write_new(s.dir.path(), "tls.pass", PASSPHRASE);
    let key = encrypt(
        s.dir.path(),
        &s.key,
        "tls.enc.key",
        &pass,
        &["-v2", "aes-256-cbc"],
    );
    let wrong = "Tr0ub4dor&3 is not it";
    write_new(s.dir.path(), "tls.pass", wrong);
    let materials = Materials::new(&s.cert, &key).with_key_passphrase_file(&pass);
    // Many wrong passphrases: one in about 256 passes AES-CBC's padding
    // check, and must still be called wrong.
    for i in 0..300 {
        let attempt = format!("{wrong} {i}");
        write_new(s.dir.path(), "tls.pass", &attempt);
        let error = build_blocking(&materials, &template(), None).expect_err("wrong");
        assert!(
            matches!(&error, BuildError::WrongPassphrase { path, passphrase_file }
                if *path == key && *passphrase_file == pass),
            "{error:?}"
        );
        let text = format!("{error} {error:?}");
        assert!(!text.contains(&attempt), "{text}");
        assert!(!text.contains("Tr0ub4dor"), "{text}");
        if i == 0 {
            assert!(
                text.contains("tls.enc.key: the encrypted private key does not decrypt"),
                "{text}"
            );
            assert!(text.contains("wrong passphrase"), "{text}");
            assert_eq!(error.path(), Some(key.as_path()));
        }
    }
}

#[test]
fn without_a_passphrase_file_an_encrypted_key_says_to_configure_one() {
    let s = Fixture::new();
    let pass = write_new(s.dir.path(), "tls.pass", PASSPHRASE);
    let key = encrypt(s.dir.path(), &s.key, "tls.enc.key", &pass, &["-scrypt"]);
    let error = build_blocking(&Materials::new(&s.cert, &key), &template(), None)
        .expect_err("no passphrase");
    assert!(
        matches!(error, BuildError::EncryptedKey { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("no key passphrase file is configured"),
        "{error}"
    );

    // Configured but missing: the file is named like any other.
    let materials =
        Materials::new(&s.cert, &key).with_key_passphrase_file(s.dir.path().join("gone"));
    let error = build_blocking(&materials, &template(), None).expect_err("missing");
    assert!(matches!(error, BuildError::Read { .. }), "{error:?}");
    // Empty (a file caught mid-write): named as such.
    write_new(s.dir.path(), "tls.pass", "\n");
    let materials = Materials::new(&s.cert, &key).with_key_passphrase_file(&pass);
    let error = build_blocking(&materials, &template(), None).expect_err("empty");
    assert!(
        matches!(&error, BuildError::EmptyPassphrase { path } if *path == pass),
        "{error:?}"
    );
}

#[test]
fn a_passphrase_for_a_plain_key_is_not_needed_but_harmless() {
    let s = Fixture::new();
    let pass = write_new(s.dir.path(), "tls.pass", PASSPHRASE);
    let materials = Materials::new(&s.cert, &s.key).with_key_passphrase_file(&pass);
    assert!(serves(
        &s,
        &build_blocking(&materials, &template(), None).expect("build")
    ));
}

#[test]
fn key_and_passphrase_rotate_together() {
    let s = Fixture::new();
    let pass = write_new(s.dir.path(), "tls.pass", "first passphrase\n");
    let key = encrypt(s.dir.path(), &s.key, "tls.enc.key", &pass, &["-scrypt"]);
    let materials = Materials::new(&s.cert, &key).with_key_passphrase_file(&pass);
    let first = build_blocking(&materials, &template(), None).expect("first");

    // A new pair, its key under a new passphrase, in the same files.
    let leaf = s.ca.leaf(0x2a01);
    let (_, plain) = write_leaf(s.dir.path(), "next", &leaf);
    let next_pass = write_new(s.dir.path(), "next.pass", "second passphrase\n");
    let next_key = encrypt(
        s.dir.path(),
        &plain,
        "next.enc.key",
        &next_pass,
        &["-v2", "aes-256-cbc"],
    );
    std::fs::write(&s.cert, leaf.cert_pem()).expect("cert");
    std::fs::copy(&next_key, &key).expect("key");
    // The key alone: the old passphrase does not open it.
    let error = build_blocking(&materials, &template(), Some(&first)).expect_err("old pass");
    assert!(
        matches!(error, BuildError::WrongPassphrase { .. }),
        "{error:?}"
    );
    // And the passphrase: the rotation applies.
    std::fs::copy(&next_pass, &pass).expect("pass");
    let second = build_blocking(&materials, &template(), Some(&first)).expect("second");
    assert_eq!(second.leaf().serial_hex(), leaf.serial_hex());
    assert!(serves(&s, &second));
}

#[test]
fn a_legacy_openssl_encrypted_key_says_to_convert_it() {
    let s = Fixture::new();
    let pass = write_new(s.dir.path(), "tls.pass", PASSPHRASE);
    // `openssl ec -aes256` (and `openssl rsa -aes256 -traditional`)
    // writes the key in the legacy format with a Proc-Type header.
    openssl(
        s.dir.path(),
        &[
            "ec",
            "-aes256",
            "-in",
            "tls.key",
            "-out",
            "legacy.key",
            "-passout",
            &format!("pass:{PASSPHRASE}"),
        ],
    );
    let key = s.dir.path().join("legacy.key");
    let pem = std::fs::read_to_string(&key).expect("read");
    assert!(pem.contains("Proc-Type: 4,ENCRYPTED"), "{pem}");
    let materials = Materials::new(&s.cert, &key).with_key_passphrase_file(&pass);
    let error = build_blocking(&materials, &template(), None).expect_err("legacy");
    assert!(
        matches!(&error, BuildError::LegacyEncryptedKey { path, line: 1 } if *path == key),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("openssl pkcs8 -topk8"), "{text}");
    assert!(text.contains("legacy PEM format"), "{text}");
    assert!(!text.contains("DEK-Info"), "{text}");
}

#[test]
fn a_scheme_other_than_pbes2_with_aes_is_named() {
    let s = Fixture::new();
    let pass = write_new(s.dir.path(), "tls.pass", PASSPHRASE);
    for (scheme, args) in [
        ("PBES2 with 3DES", &["-v2", "des3"][..]),
        ("PKCS#12 PBE", &["-v1", "PBE-SHA1-3DES"][..]),
    ] {
        let key = encrypt(s.dir.path(), &s.key, "tls.enc.key", &pass, args);
        let materials = Materials::new(&s.cert, &key).with_key_passphrase_file(&pass);
        let error = build_blocking(&materials, &template(), None).expect_err(scheme);
        assert!(
            matches!(
                error,
                BuildError::BadEncryptedKey {
                    problem: KeyEncryptionProblem::UnsupportedScheme,
                    ..
                }
            ),
            "{scheme}: {error:?}"
        );
        assert!(error.to_string().contains("not supported"), "{error}");
    }
    // Not an EncryptedPrivateKeyInfo at all.
    let junk =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAECAwQF\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let key = write_new(s.dir.path(), "junk.key", junk);
    let materials = Materials::new(&s.cert, &key).with_key_passphrase_file(&pass);
    let error = build_blocking(&materials, &template(), None).expect_err("junk");
    assert!(
        matches!(
            error,
            BuildError::BadEncryptedKey {
                problem: KeyEncryptionProblem::Malformed,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn encrypted_keys_build_from_bytes_and_debug_shows_no_passphrase() {
    let s = Fixture::new();
    let pass = write_new(s.dir.path(), "tls.pass", PASSPHRASE);
    let key = encrypt(s.dir.path(), &s.key, "tls.enc.key", &pass, &["-scrypt"]);
    let bytes = MaterialBytes::new(
        "vault:crt",
        std::fs::read(&s.cert).expect("cert"),
        "vault:key",
        std::fs::read(&key).expect("key"),
    )
    .with_key_passphrase("vault:pass", format!("{PASSPHRASE}\n"));
    let built = build_from_bytes(&bytes, &template(), None).expect("build");
    assert!(serves(&s, &built));
    let debug = format!("{bytes:?}");
    assert!(debug.contains("vault:pass"), "{debug}");
    assert!(!debug.contains("correct horse"), "{debug}");
    // Not even its length.
    assert!(!debug.contains(&PASSPHRASE.len().to_string()), "{debug}");
}

#[test]
fn neither_passphrase_nor_key_reaches_a_log_line_an_error_or_debug() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let s = Fixture::new();
    let plain_pem = std::fs::read_to_string(&s.key).expect("key");
    let pass = write_new(s.dir.path(), "tls.pass", format!("{PASSPHRASE}\n"));
    let key = encrypt(s.dir.path(), &s.key, "tls.enc.key", &pass, &["-scrypt"]);
    let materials = Materials::new(&s.cert, &key).with_key_passphrase_file(&pass);
    let wrong = "not the passphrase at all";

    let mut shown = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let built = build_blocking(&materials, &template(), None).expect("build");
        shown.push(format!("{built:?} {materials:?} {:?}", template()));
        let read = MaterialBytes::read(&materials, 1 << 20).expect("read");
        shown.push(format!("{read:?}"));
        // A passphrase for a plain key: warned about, not shown.
        let plain = Materials::new(&s.cert, &s.key).with_key_passphrase_file(&pass);
        build_blocking(&plain, &template(), Some(&built)).expect("plain");
        // A wrong passphrase.
        write_new(s.dir.path(), "tls.pass", wrong);
        let error = build_blocking(&materials, &template(), Some(&built)).expect_err("wrong");
        shown.push(format!("{error} {error:?}"));
        tracing::warn!(%error, "reload failed");
        // The key, broken, with the right passphrase.
        write_new(s.dir.path(), "tls.pass", PASSPHRASE);
        let pem = std::fs::read_to_string(&key).expect("read");
        let broken = pem.replacen('M', "A", 3);
        write_new(s.dir.path(), "tls.enc.key", &broken);
        let error = build_blocking(&materials, &template(), Some(&built)).expect_err("broken");
        shown.push(format!("{error} {error:?}"));
        tracing::warn!(%error, "reload failed");
    });

    let logs = String::from_utf8(captured.bytes()).expect("utf-8 logs");
    assert!(
        logs.contains("a key passphrase file is configured but the private key is not encrypted"),
        "{logs}"
    );
    let everything = format!("{logs}\n{}", shown.join("\n"));
    for secret in [PASSPHRASE, "correct horse", "battery staple", wrong] {
        assert!(!everything.contains(secret), "passphrase leaked: {secret}");
    }
    assert_no_pem_bytes("the logs, errors and Debug output", &everything, &plain_pem);
}
