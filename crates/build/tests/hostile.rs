//! Materials an attacker or a careless operator could write: every one is
//! refused in words (never with the file's bytes), or built into a config
//! whose handshakes work.

mod common;

use common::{handshake, template, Fixture};
use rcgen::KeyPair;
use tls_reload_build::{
    build_blocking, build_from_bytes, BuildError, CertProblem, Label, MaterialBytes, Materials,
    PemProblem,
};
use tls_reload_testkit::{assert_no_pem_bytes, ca_params, resuming_client_config, write_new, Ca};

/// Asserts that neither the message nor the `Debug` of `err` carries any
/// part of `pem`'s body, as text or as a list of byte values.
fn assert_no_bytes_of(err: &BuildError, pem: &str) {
    let shown = format!("{err} | {err:?} | {:?}", std::error::Error::source(err));
    assert_no_pem_bytes("the error", &shown, pem);
}

#[test]
fn malformed_keys_of_every_shape_are_refused_without_their_bytes() {
    let f = Fixture::new();
    let key_pem = std::fs::read_to_string(&f.key).expect("key");
    let body: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let joined = body.join("");
    let shapes: Vec<(&str, String, PemProblem, usize)> = vec![
        (
            "flattened with spaces",
            key_pem.replace('\n', " "),
            PemProblem::Flattened,
            1,
        ),
        (
            "flattened with a literal \\n",
            key_pem.replace('\n', "\\n"),
            PemProblem::Flattened,
            1,
        ),
        (
            "BEGIN glued to the body",
            format!("-----BEGIN PRIVATE KEY-----{joined}\n-----END PRIVATE KEY-----\n"),
            PemProblem::TextAfterBegin,
            1,
        ),
        (
            "body glued to END",
            format!("-----BEGIN PRIVATE KEY-----\n{joined}-----END PRIVATE KEY-----\n"),
            PemProblem::TextBeforeEnd,
            2,
        ),
        (
            "truncated base64",
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                &joined[..joined.len() - 3]
            ),
            PemProblem::BadBase64 {
                label: Label::PrivateKey,
            },
            1,
        ),
        (
            "cut off before END",
            format!("-----BEGIN PRIVATE KEY-----\n{joined}\n"),
            PemProblem::MissingEnd {
                label: Label::PrivateKey,
            },
            1,
        ),
        (
            "mismatched END label",
            format!("-----BEGIN PRIVATE KEY-----\n{joined}\n-----END EC PRIVATE KEY-----\n"),
            PemProblem::MismatchedEnd {
                label: Label::PrivateKey,
            },
            3,
        ),
    ];
    for (shape, text, problem, line) in shapes {
        let path = write_new(f.dir.path(), "bad.key", &text);
        let err =
            build_blocking(&Materials::new(&f.cert, &path), &template(), None).expect_err(shape);
        match &err {
            BuildError::MalformedPem {
                path: p,
                line: l,
                problem: got,
            } => {
                assert_eq!((p, *got, *l), (&path, problem, line), "{shape}: {err}");
            }
            other => panic!("{shape}: {other}"),
        }
        assert!(err.to_string().contains(&format!("line {line}")), "{err}");
        assert_no_bytes_of(&err, &key_pem);
    }

    // A key under the wrong label is not a key: say what the file holds.
    let wrong = write_new(
        f.dir.path(),
        "wrong.key",
        key_pem.replace("PRIVATE KEY", "CERTIFICATE"),
    );
    let err = build_blocking(&Materials::new(&f.cert, &wrong), &template(), None)
        .expect_err("wrong label");
    assert!(matches!(err, BuildError::NoPrivateKey { .. }), "{err:?}");
    assert!(err.to_string().contains("it holds CERTIFICATE"), "{err}");
    assert_no_bytes_of(&err, &key_pem);

    // An unknown label is named as such, never by its text.
    let odd = write_new(
        f.dir.path(),
        "odd.key",
        key_pem.replace("PRIVATE KEY", "SECRET STUFF"),
    );
    let err = build_blocking(&Materials::new(&f.cert, &odd), &template(), None)
        .expect_err("unknown label");
    assert!(err.to_string().contains("an unrecognised label"), "{err}");
    assert!(!err.to_string().contains("SECRET"), "{err}");

    // A key whose DER is garbage reaches the provider, which refuses it.
    let garbage = write_new(
        f.dir.path(),
        "garbage.key",
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            &joined[8..joined.len() - 8].replace('=', "A")
        ),
    );
    if let Err(err) = build_blocking(&Materials::new(&f.cert, &garbage), &template(), None) {
        assert_no_bytes_of(&err, &key_pem);
    }
}

#[test]
fn encrypted_keys_are_named_as_such() {
    let f = Fixture::new();
    let key_pem = std::fs::read_to_string(&f.key).expect("key");
    let encrypted = write_new(
        f.dir.path(),
        "enc.key",
        key_pem.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
    );
    let err = build_blocking(&Materials::new(&f.cert, &encrypted), &template(), None)
        .expect_err("encrypted");
    assert!(matches!(err, BuildError::EncryptedKey { .. }), "{err:?}");
}

/// A certificate's DER, edited by `edit`, as a PEM `CERTIFICATE` section.
fn reencode(der: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut der = der.to_vec();
    edit(&mut der);
    let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der), lf)
}

#[test]
fn a_chain_with_a_broken_intermediate_is_refused_naming_its_position() {
    let f = Fixture::new();
    let intermediate = f.ca.intermediate("intermediate");
    let leaf = intermediate.localhost_leaf();
    let key = write_new(f.dir.path(), "chain.key", leaf.key_pem());
    let good_chain = format!("{}{}{}", leaf.cert.pem(), intermediate.pem(), f.ca.pem());
    let cert = write_new(f.dir.path(), "chain.crt", &good_chain);
    let built =
        build_blocking(&Materials::new(&cert, &key), &template(), None).expect("good chain");
    let client = resuming_client_config(&f.ca, None);
    handshake(built.config(), &client).expect("the good chain serves");

    let cases = [
        (
            "truncated DER",
            reencode(intermediate.der().as_ref(), |der| {
                der.truncate(der.len() - 20)
            }),
            CertProblem::Truncated,
        ),
        (
            "trailing data",
            reencode(intermediate.der().as_ref(), |der| {
                der.extend_from_slice(&[0, 0])
            }),
            CertProblem::TrailingData,
        ),
        (
            "not a certificate",
            reencode(intermediate.der().as_ref(), |der| der[4..].fill(0x41)),
            CertProblem::Malformed,
        ),
    ];
    let leaf_lines = leaf.cert.pem().lines().count();
    for (what, broken, problem) in cases {
        let chain = format!("{}{}{}", leaf.cert.pem(), broken, f.ca.pem());
        let cert = write_new(f.dir.path(), "chain.crt", &chain);
        let err = build_blocking(&Materials::new(&cert, &key), &template(), None).expect_err(what);
        match &err {
            BuildError::BadCertificate {
                index,
                count,
                line,
                problem: got,
                ..
            } => assert_eq!(
                (*index, *count, *line, *got),
                (2, 3, Some(leaf_lines + 1), problem),
                "{what}: {err}"
            ),
            other => panic!("{what}: {other:?}"),
        }
        assert!(
            err.to_string()
                .contains(&format!("certificate 2 of 3 (line {})", leaf_lines + 1)),
            "{err}"
        );
        assert_no_bytes_of(&err, &broken);
    }
}

#[test]
fn five_thousand_client_cas_leave_out_the_ca_names_and_handshakes_work() {
    // Above about 1,950 CAs the names overflow the 64 KiB a
    // CertificateRequest can carry: sent anyway, every mTLS handshake
    // fails. They are left out instead.
    let f = Fixture::new();
    let key_pem = KeyPair::generate().expect("key").serialize_pem();
    let name = |i: usize| format!("tls-reload test client CA number {i:05}");
    let mut bundle = String::new();
    for i in 0..5_000 {
        let key = KeyPair::from_pem(&key_pem).expect("key");
        bundle.push_str(&ca_params(&name(i)).self_signed(&key).expect("CA").pem());
    }
    let issuing = Ca::from_parts(
        ca_params(&name(4_321)),
        KeyPair::from_pem(&key_pem).expect("key"),
    );
    let client_leaf = issuing.localhost_leaf();

    let cert = std::fs::read(&f.cert).expect("cert");
    let key = std::fs::read(&f.key).expect("key");
    let many = MaterialBytes::new(&f.cert, cert.clone(), &f.key, key.clone())
        .with_client_ca("many.pem", bundle);
    let built = build_from_bytes(&many, &template(), None).expect("5,000 CAs build");
    assert!(!built.sends_ca_names());
    let client = resuming_client_config(&f.ca, Some(&client_leaf));
    handshake(built.config(), &client).expect("mTLS with 5,000 CAs");
    let stranger = resuming_client_config(&f.ca, Some(&Ca::new("stranger").localhost_leaf()));
    assert!(
        handshake(built.config(), &stranger).is_err(),
        "still fails closed"
    );

    // A few CAs are still named.
    let few =
        MaterialBytes::new(&f.cert, cert, &f.key, key).with_client_ca("few.pem", issuing.pem());
    let built = build_from_bytes(&few, &template(), None).expect("one CA");
    assert!(built.sends_ca_names());
    handshake(built.config(), &client).expect("mTLS with one CA");
}
