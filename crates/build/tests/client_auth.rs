//! mTLS: CA bundles, CA directories, client auth modes, failing closed.

mod common;

use std::path::Path;

use common::{template, Fixture};
use tls_reload_build::{build_blocking, Built, ClientAuth, Materials, Resumption, Template};
use tls_reload_testkit::{write_new, Ca};

fn build(materials: &Materials, template: &Template, previous: Option<&Built>) -> Built {
    build_blocking(materials, template, previous).expect("build")
}

#[test]
fn bundle_trusts_every_root_not_just_the_first() {
    let s = Fixture::new();
    let (first, second, stranger) = (Ca::new("first"), Ca::new("second"), Ca::new("stranger"));
    let bundle = write_new(s.dir.path(), "ca.pem", first.pem() + &second.pem());
    let materials = Materials::new(&s.cert, &s.key).with_client_ca(&bundle);
    let built = build(&materials, &template(), None);

    assert!(s.admits(built.config(), Some(&second)));
    assert!(s.admits(built.config(), Some(&first)));
    assert!(!s.admits(built.config(), Some(&stranger)));
    assert!(!s.admits(built.config(), None), "client auth is required");
    assert_eq!(built.files(), [s.cert.clone(), s.key.clone(), bundle]);
}

#[test]
fn optional_client_auth_admits_anonymous_but_not_strangers() {
    let s = Fixture::new();
    let ca = Ca::new("clients");
    let bundle = write_new(s.dir.path(), "ca.pem", ca.pem());
    let materials = Materials::new(&s.cert, &s.key).with_client_ca(&bundle);
    let built = build(
        &materials,
        &template().client_auth(ClientAuth::Optional),
        None,
    );
    assert!(s.admits(built.config(), None));
    assert!(s.admits(built.config(), Some(&ca)));
    assert!(!s.admits(built.config(), Some(&Ca::new("stranger"))));
}

#[test]
fn without_client_cas_no_certificate_is_asked_for() {
    let s = Fixture::new();
    let built = build(
        &Materials::new(&s.cert, &s.key),
        &template().client_auth(ClientAuth::Required),
        None,
    );
    assert!(s.admits(built.config(), None));
}

#[test]
fn bundle_with_some_unusable_certificates_keeps_the_good_ones() {
    let s = Fixture::new();
    let ca = Ca::new("clients");
    let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n";
    let bundle = write_new(s.dir.path(), "ca.pem", junk.to_owned() + &ca.pem());
    let materials = Materials::new(&s.cert, &s.key).with_client_ca(&bundle);
    let built = build(&materials, &template(), None);
    assert!(s.admits(built.config(), Some(&ca)));
}

fn ca_dir(root: &Path) -> std::path::PathBuf {
    let cas = root.join("cas");
    std::fs::create_dir(&cas).expect("mkdir");
    cas
}

#[test]
fn ca_directory_follows_added_and_rewritten_files() {
    let s = Fixture::new();
    let (a, b, c) = (Ca::new("a"), Ca::new("b"), Ca::new("c"));
    let cas = ca_dir(s.dir.path());
    let a_file = write_new(&cas, "a.pem", a.pem());
    let materials = Materials::new(&s.cert, &s.key).with_client_ca_dir(&cas);

    let first = build(&materials, &template(), None);
    assert!(s.admits(first.config(), Some(&a)));
    assert!(!s.admits(first.config(), Some(&b)));

    // Adding a file trusts its CA.
    let b_file = write_new(&cas, "b.pem", b.pem());
    let second = build(&materials, &template(), Some(&first));
    assert!(s.admits(second.config(), Some(&a)));
    assert!(s.admits(second.config(), Some(&b)));
    assert_eq!(second.resumption(), Resumption::Fresh);
    assert_eq!(
        second.files(),
        [s.cert.clone(), s.key.clone(), a_file.clone(), b_file]
    );

    // Rewriting a file in place replaces its CA.
    write_new(&cas, "a.pem", c.pem());
    let third = build(&materials, &template(), Some(&second));
    assert!(!s.admits(third.config(), Some(&a)));
    assert!(s.admits(third.config(), Some(&c)));
    assert_eq!(third.resumption(), Resumption::Fresh);

    // Nothing changed: the trust is the same.
    let fourth = build(&materials, &template(), Some(&third));
    assert_eq!(fourth.resumption(), Resumption::Kept);
}

#[test]
fn ca_directory_skips_hidden_files_and_subdirectories_and_follows_symlinks() {
    let s = Fixture::new();
    let (hidden, nested, linked) = (Ca::new("hidden"), Ca::new("nested"), Ca::new("linked"));
    let cas = ca_dir(s.dir.path());
    write_new(&cas, ".hidden.pem", hidden.pem());
    std::fs::create_dir(cas.join("sub")).expect("mkdir");
    write_new(&cas.join("sub"), "nested.pem", nested.pem());
    let target = write_new(s.dir.path(), "linked.pem", linked.pem());
    std::os::unix::fs::symlink(&target, cas.join("linked.pem")).expect("symlink");

    let materials = Materials::new(&s.cert, &s.key).with_client_ca_dir(&cas);
    let built = build(&materials, &template(), None);
    assert!(s.admits(built.config(), Some(&linked)));
    assert!(!s.admits(built.config(), Some(&hidden)));
    assert!(!s.admits(built.config(), Some(&nested)));
    assert_eq!(built.files().len(), 3);
}

#[test]
fn ca_file_and_directory_together() {
    let s = Fixture::new();
    let (in_file, in_dir) = (Ca::new("file"), Ca::new("dir"));
    let bundle = write_new(s.dir.path(), "ca.pem", in_file.pem());
    let cas = ca_dir(s.dir.path());
    write_new(&cas, "dir.pem", in_dir.pem());
    let materials = Materials::new(&s.cert, &s.key)
        .with_client_ca(&bundle)
        .with_client_ca_dir(&cas);
    let built = build(&materials, &template(), None);
    assert!(s.admits(built.config(), Some(&in_file)));
    assert!(s.admits(built.config(), Some(&in_dir)));
}

#[test]
fn fails_closed_when_the_trust_cannot_be_built() {
    // Each broken trust is an error: never a config that skips client verification.
    let s = Fixture::new();
    let cas = ca_dir(s.dir.path());
    let unusable = write_new(
        s.dir.path(),
        "ca.pem",
        "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
    );
    let cases = [
        Materials::new(&s.cert, &s.key).with_client_ca(&unusable),
        Materials::new(&s.cert, &s.key).with_client_ca(s.dir.path().join("missing.pem")),
        Materials::new(&s.cert, &s.key).with_client_ca_dir(&cas),
        Materials::new(&s.cert, &s.key).with_client_ca_dir(s.dir.path().join("missing")),
    ];
    for materials in &cases {
        for mode in [ClientAuth::Required, ClientAuth::Optional] {
            let result = build_blocking(materials, &template().client_auth(mode), None);
            assert!(result.is_err(), "{materials:?} {mode:?} built a config");
        }
    }
}

#[test]
fn an_unusable_ca_added_next_to_unchanged_ones_is_still_refused() {
    // The verifier of the build being served is reused only when the CA
    // files hold exactly what they held: a new file must still be checked.
    let s = Fixture::new();
    let a = Ca::new("a");
    let cas = ca_dir(s.dir.path());
    write_new(&cas, "a.pem", a.pem());
    let materials = Materials::new(&s.cert, &s.key).with_client_ca_dir(&cas);
    let first = build(&materials, &template(), None);

    let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n";
    let bad = write_new(&cas, "b.pem", junk);
    let err = build_blocking(&materials, &template(), Some(&first)).expect_err("refused");
    assert!(
        matches!(err, tls_reload_build::BuildError::NoUsableCa { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );

    // Back to the checked files: the reused trust still admits a's clients
    // and refuses others.
    std::fs::remove_file(&bad).expect("remove");
    let again = build(&materials, &template(), Some(&first));
    assert_eq!(again.resumption(), Resumption::Kept);
    assert!(s.admits(again.config(), Some(&a)));
    assert!(!s.admits(again.config(), Some(&Ca::new("stranger"))));
    assert!(!s.admits(again.config(), None));
}
