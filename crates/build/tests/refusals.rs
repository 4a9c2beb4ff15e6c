//! Every way a build refuses the materials: the variant, and the file named.

mod common;

use std::path::Path;

use common::{template, Fixture};
use tls_reload_build::{build_blocking, BuildError, Materials, Template};
use tls_reload_testkit::{write_leaf, write_new};

const JUNK_CERT: &str = "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n";
const JUNK_KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAECAwQ=\n-----END PRIVATE KEY-----\n";

fn refuse(materials: &Materials, template: &Template) -> BuildError {
    match build_blocking(materials, template, None) {
        Ok(built) => panic!("expected a refusal, built {built:?}"),
        Err(e) => e,
    }
}

fn assert_names(err: &BuildError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "{msg:?} does not name {}",
        path.display()
    );
    assert_eq!(err.path(), Some(path));
}

#[test]
fn missing_cert_names_path_and_os_reason() {
    let f = Fixture::new();
    let missing = f.dir.path().join("nope.crt");
    let err = refuse(&Materials::new(&missing, &f.key), &template());
    assert!(matches!(err, BuildError::Read { .. }), "{err:?}");
    assert_names(&err, &missing);
    assert!(
        err.to_string().contains("No such file or directory"),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn missing_key_names_path() {
    let f = Fixture::new();
    let missing = f.dir.path().join("nope.key");
    let err = refuse(&Materials::new(&f.cert, &missing), &template());
    assert!(matches!(err, BuildError::Read { .. }), "{err:?}");
    assert_names(&err, &missing);
}

#[test]
fn file_over_the_cap() {
    let f = Fixture::new();
    let err = refuse(
        &Materials::new(&f.cert, &f.key),
        &template().max_file_size(64),
    );
    assert!(
        matches!(err, BuildError::TooLarge { limit: 64, .. }),
        "{err:?}"
    );
    assert_names(&err, &f.cert);
}

#[test]
fn a_device_or_a_fifo_is_refused_without_being_read() {
    // /dev/zero never ends and opening a FIFO blocks until a writer comes:
    // neither may hang a build.
    let f = Fixture::new();
    let fifo = f.dir.path().join("tls.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    for path in [Path::new("/dev/zero"), fifo.as_path()] {
        let (tx, rx) = std::sync::mpsc::channel();
        let materials = Materials::new(path, &f.key);
        std::thread::spawn(move || {
            let _ = tx.send(refuse(&materials, &template()));
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("reading {} hung", path.display()));
        assert!(matches!(err, BuildError::NotRegularFile { .. }), "{err:?}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert_names(&err, path);
    }
}

#[test]
fn junk_that_is_not_pem() {
    let f = Fixture::new();
    let junk = write_new(f.dir.path(), "junk.crt", "hello, world\n");
    let err = refuse(&Materials::new(&junk, &f.key), &template());
    assert!(matches!(err, BuildError::NotPem { .. }), "{err:?}");
    assert_names(&err, &junk);
}

#[test]
fn malformed_pem() {
    let f = Fixture::new();
    let broken = write_new(
        f.dir.path(),
        "broken.key",
        "-----BEGIN PRIVATE KEY-----\nAAECAwQ=\n",
    );
    let err = refuse(&Materials::new(&f.cert, &broken), &template());
    assert!(matches!(err, BuildError::MalformedPem { .. }), "{err:?}");
    assert_names(&err, &broken);
}

#[test]
fn no_certificate_in_cert_file() {
    let f = Fixture::new();
    let key_only = write_new(
        f.dir.path(),
        "keyonly.crt",
        std::fs::read(&f.key).expect("read"),
    );
    let err = refuse(&Materials::new(&key_only, &f.key), &template());
    assert!(matches!(err, BuildError::NoCertificate { .. }), "{err:?}");
    assert_names(&err, &key_only);
}

#[test]
fn no_private_key_in_key_file() {
    let f = Fixture::new();
    let err = refuse(&Materials::new(&f.cert, &f.cert), &template());
    assert!(matches!(err, BuildError::NoPrivateKey { .. }), "{err:?}");
    assert_names(&err, &f.cert);
}

#[test]
fn unusable_private_key() {
    let f = Fixture::new();
    let junk = write_new(f.dir.path(), "junk.key", JUNK_KEY);
    let err = refuse(&Materials::new(&f.cert, &junk), &template());
    assert!(matches!(err, BuildError::BadPrivateKey { .. }), "{err:?}");
    assert_names(&err, &junk);
}

#[test]
fn leaf_that_is_not_x509() {
    let f = Fixture::new();
    let junk = write_new(f.dir.path(), "junk.crt", JUNK_CERT);
    let err = refuse(&Materials::new(&junk, &f.key), &template());
    assert!(matches!(err, BuildError::BadCertificate { .. }), "{err:?}");
    assert_names(&err, &junk);
}

#[test]
fn key_does_not_match_certificate() {
    let f = Fixture::new();
    let (_, other_key) = write_leaf(f.dir.path(), "other", &f.ca.localhost_leaf());
    let err = refuse(&Materials::new(&f.cert, &other_key), &template());
    assert!(matches!(err, BuildError::KeyMismatch { .. }), "{err:?}");
    assert_names(&err, &other_key);
    let msg = err.to_string();
    assert!(msg.contains("key does not match certificate"), "{msg}");
    assert!(msg.contains(&f.cert.display().to_string()), "{msg}");
}

#[test]
fn expired_certificate_gives_dates() {
    let f = Fixture::new();
    let (cert, key) = f.write_leaf_valid("old", (2019, 1, 1), (2020, 1, 2));

    let err = refuse(&Materials::new(&cert, &key), &template());
    assert!(matches!(err, BuildError::Expired { .. }), "{err:?}");
    assert_names(&err, &cert);
    let msg = err.to_string();
    assert!(
        msg.contains("certificate expired at 2020-01-02T00:00:00Z (now 20"),
        "{msg}"
    );

    let built = build_blocking(
        &Materials::new(&cert, &key),
        &template().check_validity(false),
        None,
    )
    .expect("validity check off");
    assert_eq!(
        built.leaf().not_after,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_923_200)
    );
}

#[test]
fn certificate_not_yet_valid() {
    let f = Fixture::new();
    let (cert, key) = f.write_leaf_valid("future", (2999, 1, 1), (3000, 1, 1));

    let err = refuse(&Materials::new(&cert, &key), &template());
    assert!(matches!(err, BuildError::NotYetValid { .. }), "{err:?}");
    assert_names(&err, &cert);
    let msg = err.to_string();
    assert!(msg.contains("certificate not yet valid"), "{msg}");
    assert!(msg.contains("2999-01-01T00:00:00Z"), "{msg}");
    build_blocking(
        &Materials::new(&cert, &key),
        &template().check_validity(false),
        None,
    )
    .expect("validity check off");
}

#[test]
fn ca_bundle_without_usable_certificate() {
    let f = Fixture::new();
    for (name, contents, found) in [("junk-ca.pem", JUNK_CERT, 1), ("key-ca.pem", JUNK_KEY, 0)] {
        let ca = write_new(f.dir.path(), name, contents);
        let err = refuse(
            &Materials::new(&f.cert, &f.key).with_client_ca(&ca),
            &template(),
        );
        assert!(
            matches!(err, BuildError::NoUsableCa { found: n, .. } if n == found),
            "{err:?}"
        );
        assert_names(&err, &ca);
    }
}

#[test]
fn ca_bundle_that_is_not_pem() {
    let f = Fixture::new();
    let ca = write_new(f.dir.path(), "ca.der", f.ca.der());
    let err = refuse(
        &Materials::new(&f.cert, &f.key).with_client_ca(&ca),
        &template(),
    );
    assert!(matches!(err, BuildError::NotPem { .. }), "{err:?}");
    assert_names(&err, &ca);
}

#[test]
fn empty_ca_directory() {
    let f = Fixture::new();
    let cas = f.dir.path().join("cas");
    std::fs::create_dir_all(cas.join("subdir")).expect("mkdir");
    write_new(&cas, ".hidden.pem", f.ca.pem());
    let err = refuse(
        &Materials::new(&f.cert, &f.key).with_client_ca_dir(&cas),
        &template(),
    );
    assert!(matches!(err, BuildError::EmptyCaDir { .. }), "{err:?}");
    assert_names(&err, &cas);
}

#[test]
fn missing_ca_directory() {
    let f = Fixture::new();
    let cas = f.dir.path().join("nope");
    let err = refuse(
        &Materials::new(&f.cert, &f.key).with_client_ca_dir(&cas),
        &template(),
    );
    assert!(matches!(err, BuildError::Read { .. }), "{err:?}");
    assert_names(&err, &cas);
}

#[test]
fn ca_directory_file_that_does_not_parse_is_named() {
    let f = Fixture::new();
    let cas = f.dir.path().join("cas");
    std::fs::create_dir(&cas).expect("mkdir");
    write_new(&cas, "a.pem", f.ca.pem());
    let junk = write_new(&cas, "b.txt", "not a certificate\n");
    let err = refuse(
        &Materials::new(&f.cert, &f.key).with_client_ca_dir(&cas),
        &template(),
    );
    assert!(matches!(err, BuildError::NotPem { .. }), "{err:?}");
    assert_names(&err, &junk);

    let no_cert = write_new(&cas, "b.txt", JUNK_KEY);
    let err = refuse(
        &Materials::new(&f.cert, &f.key).with_client_ca_dir(&cas),
        &template(),
    );
    assert!(matches!(err, BuildError::NoUsableCa { .. }), "{err:?}");
    assert_names(&err, &no_cert);
}

#[test]
fn dangling_symlink_in_ca_directory_is_skipped_like_the_detector_does() {
    // One rule with tls-reload-detect: a link that points nowhere names no
    // CA, so it is skipped (with a warning); trusting fewer CAs fails closed.
    let f = Fixture::new();
    let cas = f.dir.path().join("cas");
    std::fs::create_dir(&cas).expect("mkdir");
    let good = write_new(&cas, "a.pem", f.ca.pem());
    let link = cas.join("b.pem");
    std::os::unix::fs::symlink(f.dir.path().join("gone.pem"), &link).expect("symlink");
    let materials = Materials::new(&f.cert, &f.key).with_client_ca_dir(&cas);
    let built = build_blocking(&materials, &template(), None).expect("built without the link");
    assert_eq!(built.files(), [f.cert.clone(), f.key.clone(), good.clone()]);
    let listed = tls_reload_detect::dir_files(&cas).expect("list");
    assert_eq!(
        (listed.files, listed.dangling),
        (vec![good.clone()], vec![link.clone()])
    );

    // Only dangling links: no CA at all, which is refused, never mTLS off.
    std::fs::remove_file(&good).expect("rm");
    let err = refuse(&materials, &template());
    assert!(matches!(err, BuildError::EmptyCaDir { .. }), "{err:?}");
    assert_names(&err, &cas);
}

#[test]
fn protocol_versions_the_provider_cannot_serve() {
    let f = Fixture::new();
    let err = refuse(
        &Materials::new(&f.cert, &f.key),
        &template().protocol_versions(&[]),
    );
    assert!(matches!(err, BuildError::Config { .. }), "{err:?}");
    assert_eq!(err.path(), None);
}
