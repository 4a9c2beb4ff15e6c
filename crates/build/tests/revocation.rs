//! Certificate revocation lists: a revoked client is refused and the others
//! are not, a CRL that does not parse or that no client CA signed is refused
//! naming its file, expiry is a policy, and a CRL change resets resumption.
//! Real rustls handshakes over memory.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{assert_handshakes, handshake, template, Fixture};
use rustls::HandshakeKind;
use tls_reload_build::{
    build_blocking, BuildError, Built, CrlProblem, MaterialBytes, Materials, Resumption, Template,
};
use tls_reload_testkit::{
    ca_params, client_config, new_key, resuming_client_config, write_new, Ca, Leaf,
};

fn build(materials: &Materials, template: &Template, previous: Option<&Built>) -> Built {
    build_blocking(materials, template, previous).expect("build")
}

fn refusal(materials: &Materials, template: &Template) -> BuildError {
    build_blocking(materials, template, None).expect_err("refused")
}

/// Whether a client holding `leaf` completes a handshake.
fn admits(s: &Fixture, built: &Built, leaf: &Leaf) -> bool {
    handshake(built.config(), &client_config(&s.ca, Some(leaf))).is_ok()
}

/// A fixture trusting `clients` for client certificates, and its CA file.
fn with_clients(s: &Fixture, clients: &Ca) -> (Materials, PathBuf) {
    let bundle = write_new(s.dir.path(), "clients.pem", clients.pem());
    (
        Materials::new(&s.cert, &s.key).with_client_ca(&bundle),
        bundle,
    )
}

/// Asserts that `text` holds no 12-character run of the PEM's body lines.
fn assert_no_pem_bytes(text: &str, pem: &str) {
    for line in pem.lines().filter(|line| !line.starts_with("-----")) {
        for window in line.as_bytes().windows(12) {
            let window = String::from_utf8_lossy(window);
            assert!(!text.contains(&*window), "input bytes {window} in: {text}");
        }
    }
}

#[test]
fn a_revoked_client_is_refused_and_the_others_are_not() {
    let s = Fixture::new();
    let clients = Ca::new("clients");
    let (revoked, kept) = (clients.leaf(0x1a01), clients.leaf(0x1a02));
    let (materials, bundle) = with_clients(&s, &clients);
    let before = build(&materials, &template(), None);
    assert!(admits(&s, &before, &revoked) && admits(&s, &before, &kept));
    assert!(before.crls().is_empty());

    let crl = write_new(s.dir.path(), "clients.crl", clients.crl(&[&revoked]));
    let materials = materials.with_crl(&crl);
    let after = build(&materials, &template(), Some(&before));
    assert!(
        !admits(&s, &after, &revoked),
        "the revoked client is refused"
    );
    assert!(admits(&s, &after, &kept), "the others are not");
    assert!(!admits(&s, &after, &Ca::new("stranger").leaf(0x1a03)));
    assert_eq!(after.resumption(), Resumption::Fresh);
    assert_eq!(
        after.files(),
        [s.cert.clone(), s.key.clone(), bundle.clone(), crl.clone()]
    );

    // What a status page shows.
    let [info] = after.crls() else {
        panic!("one CRL: {:?}", after.crls())
    };
    assert_eq!(info.path, crl);
    assert_eq!(info.line, 1);
    assert_eq!(info.issuer, "CN=clients");
    assert_eq!(info.revoked, 1);
    assert_eq!(info.this_update_rfc3339(), "2020-01-01T00:00:00Z");
    assert_eq!(
        info.next_update_rfc3339().as_deref(),
        Some("2099-01-01T00:00:00Z")
    );
    assert!(!info.is_expired_at(SystemTime::now()));
    assert!(!after.crl_expired());
    let [ca] = after.client_cas() else {
        panic!("one client CA: {:?}", after.client_cas())
    };
    assert_eq!(
        (ca.path.as_path(), ca.subject.as_str()),
        (bundle.as_path(), "CN=clients")
    );
    let debug = format!("{after:?}");
    assert!(
        debug.contains("CN=clients") && debug.contains("2099-01-01T00:00:00Z"),
        "{debug}"
    );
}

#[test]
fn a_file_may_hold_several_crls_and_each_ca_needs_one() {
    let s = Fixture::new();
    let (a, b) = (Ca::new("a"), Ca::new("b"));
    let (a_revoked, a_kept, b_client) = (a.leaf(0x1b01), a.leaf(0x1b02), b.leaf(0x1b03));
    let bundle = write_new(s.dir.path(), "cas.pem", a.pem() + &b.pem());
    let materials = Materials::new(&s.cert, &s.key).with_client_ca(&bundle);

    // A CRL for `a` only: `b`'s clients have no revocation status and are
    // refused (rustls's default, and OpenSSL's).
    let only_a = write_new(s.dir.path(), "a.crl", a.crl(&[&a_revoked]));
    let built = build(&materials.clone().with_crl(&only_a), &template(), None);
    assert!(admits(&s, &built, &a_kept));
    assert!(!admits(&s, &built, &a_revoked));
    assert!(!admits(&s, &built, &b_client), "no CRL covers b's client");

    // Both CRLs in one file.
    let both = write_new(s.dir.path(), "both.crl", a.crl(&[&a_revoked]) + &b.crl(&[]));
    let built = build(&materials.with_crl(&both), &template(), None);
    assert!(admits(&s, &built, &a_kept));
    assert!(admits(&s, &built, &b_client));
    assert!(!admits(&s, &built, &a_revoked));
    let lines: Vec<_> = built
        .crls()
        .iter()
        .map(|c| (c.issuer.as_str(), c.revoked))
        .collect();
    assert_eq!(lines, [("CN=a", 1), ("CN=b", 0)]);
    assert!(built.crls()[1].line > 1, "the second CRL's own line");
    let subjects: Vec<_> = built
        .client_cas()
        .iter()
        .map(|c| c.subject.as_str())
        .collect();
    assert_eq!(subjects, ["CN=a", "CN=b"]);
}

#[test]
fn of_two_crls_of_one_ca_the_newest_applies_whatever_the_order() {
    let s = Fixture::new();
    let clients = Ca::new("clients");
    let (first, second, kept) = (
        clients.leaf(0x1c01),
        clients.leaf(0x1c02),
        clients.leaf(0x1c03),
    );
    let (materials, _) = with_clients(&s, &clients);
    let date = rcgen::date_time_ymd;
    let old = write_new(s.dir.path(), "old.crl", clients.crl(&[&first]));
    let new = write_new(
        s.dir.path(),
        "new.crl",
        clients.crl_dated(&[&first, &second], date(2021, 1, 1), date(2099, 1, 1)),
    );
    for (a, b) in [(&old, &new), (&new, &old)] {
        let built = build(
            &materials.clone().with_crl(a).with_crl(b),
            &template(),
            None,
        );
        assert!(!admits(&s, &built, &first));
        assert!(!admits(&s, &built, &second), "the newest CRL applies");
        assert!(admits(&s, &built, &kept));
        let in_force: Vec<_> = built.crls().iter().map(|crl| &crl.path).collect();
        assert_eq!(in_force, [&new], "only the newest is in force");
    }
    // An older CRL appended after the newer one in one file: the same.
    let both = write_new(
        s.dir.path(),
        "both.crl",
        std::fs::read_to_string(&new).expect("read") + &clients.crl(&[]),
    );
    let built = build(&materials.with_crl(&both), &template(), None);
    assert!(!admits(&s, &built, &second));
    assert_eq!(built.crls().len(), 1);
    assert_eq!(built.crls()[0].line, 1);
}

#[test]
fn a_crl_that_does_not_parse_is_refused_naming_its_file_and_line() {
    let s = Fixture::new();
    let clients = Ca::new("clients");
    let (materials, _) = with_clients(&s, &clients);
    let garbage = "# rotated by hand\n-----BEGIN X509 CRL-----\nMIIBAjCBqAIBATAKBggqhkjOPQQDAjARMQ8wDQYDVQQDDAZjbGllbnRz\n-----END X509 CRL-----\n";
    let crl = write_new(s.dir.path(), "clients.crl", garbage);
    let error = refusal(&materials.clone().with_crl(&crl), &template());
    assert!(
        matches!(
            &error,
            BuildError::BadCrl { path, line: 2, problem: CrlProblem::Malformed } if *path == crl
        ),
        "{error:?}"
    );
    assert_eq!(error.path(), Some(crl.as_path()));
    let text = format!("{error} {error:?}");
    assert!(
        text.contains("clients.crl: the CRL at line 2 is refused"),
        "{text}"
    );
    assert_no_pem_bytes(&text, garbage);

    // Not PEM at all, PEM without a CRL, broken PEM: each named.
    write_new(s.dir.path(), "clients.crl", "garbage");
    let error = refusal(&materials.clone().with_crl(&crl), &template());
    assert!(matches!(error, BuildError::NotPem { .. }), "{error:?}");
    write_new(s.dir.path(), "clients.crl", clients.pem());
    let error = refusal(&materials.clone().with_crl(&crl), &template());
    assert!(matches!(error, BuildError::NoCrl { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("no CRL in file (it holds CERTIFICATE)"),
        "{error}"
    );
    let truncated: String = clients
        .crl(&[])
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    write_new(s.dir.path(), "clients.crl", &truncated);
    let error = refusal(&materials.clone().with_crl(&crl), &template());
    assert!(
        matches!(error, BuildError::MalformedPem { .. }),
        "{error:?}"
    );
    assert_no_pem_bytes(&format!("{error} {error:?}"), &truncated);

    // A CRL file that is missing fails like any other file.
    let error = refusal(
        &materials.with_crl(s.dir.path().join("gone.crl")),
        &template(),
    );
    assert!(matches!(error, BuildError::Read { .. }), "{error:?}");
}

#[test]
fn a_crl_no_client_ca_signed_is_refused() {
    let s = Fixture::new();
    let clients = Ca::new("clients");
    let (materials, _) = with_clients(&s, &clients);

    // Another CA's CRL.
    let stranger = Ca::new("stranger").crl(&[]);
    let crl = write_new(s.dir.path(), "clients.crl", &stranger);
    let error = refusal(&materials.clone().with_crl(&crl), &template());
    assert!(
        matches!(
            error,
            BuildError::BadCrl {
                problem: CrlProblem::UnknownIssuer,
                ..
            }
        ),
        "{error:?}"
    );
    let text = format!("{error} {error:?}");
    assert!(
        text.contains("no configured client CA is named as its issuer"),
        "{text}"
    );
    assert_no_pem_bytes(&text, &stranger);

    // A CA with the same name and another key: the name matches, the
    // signature does not.
    let impostor = Ca::from_parts(ca_params("clients"), new_key()).crl(&[]);
    write_new(s.dir.path(), "clients.crl", &impostor);
    let error = refusal(&materials.with_crl(&crl), &template());
    assert!(
        matches!(
            error,
            BuildError::BadCrl {
                problem: CrlProblem::BadSignature,
                ..
            }
        ),
        "{error:?}"
    );
    assert_no_pem_bytes(&format!("{error} {error:?}"), &impostor);
}

#[test]
fn a_crl_needs_client_cas() {
    let s = Fixture::new();
    let crl = write_new(s.dir.path(), "clients.crl", Ca::new("clients").crl(&[]));
    let error = refusal(&Materials::new(&s.cert, &s.key).with_crl(&crl), &template());
    assert!(
        matches!(&error, BuildError::CrlWithoutClientCa { path } if *path == crl),
        "{error:?}"
    );
    assert!(error.to_string().contains("no client CA"), "{error}");
}

#[test]
fn an_expired_crl_is_served_with_a_flag_unless_expiry_is_enforced() {
    let s = Fixture::new();
    let clients = Ca::new("clients");
    let (revoked, kept) = (clients.leaf(0x1d01), clients.leaf(0x1d02));
    let (materials, _) = with_clients(&s, &clients);
    let crl = write_new(
        s.dir.path(),
        "clients.crl",
        clients.crl_until(&[&revoked], rcgen::date_time_ymd(2021, 1, 1)),
    );
    let materials = materials.with_crl(&crl);

    // Default: rustls keeps using it; the build says it is expired.
    let built = build(&materials, &template(), None);
    assert!(built.crl_expired());
    assert!(built.crls()[0].is_expired_at(SystemTime::now()));
    assert!(!admits(&s, &built, &revoked));
    assert!(admits(&s, &built, &kept));

    // Enforced: refused at build, naming the file and the date.
    let enforcing = template().enforce_crl_expiry(true);
    assert!(enforcing.enforces_crl_expiry());
    let error = refusal(&materials, &enforcing);
    assert!(
        matches!(&error, BuildError::CrlExpired { path, line: 1, .. } if *path == crl),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("nextUpdate was 2021-01-01T00:00:00Z"),
        "{error}"
    );

    // A build reusing the served verifier checks expiry again: enforcement
    // does not lapse because the CA bytes did not change.
    write_new(s.dir.path(), "clients.crl", clients.crl(&[&revoked]));
    let served = build(&materials, &enforcing, None);
    assert!(!served.crl_expired());
    write_new(
        s.dir.path(),
        "clients.crl",
        clients.crl_until(&[&revoked], rcgen::date_time_ymd(2021, 1, 1)),
    );
    let error = build_blocking(&materials, &enforcing, Some(&served)).expect_err("expired");
    assert!(matches!(error, BuildError::CrlExpired { .. }), "{error:?}");
}

#[test]
fn enforced_expiry_is_checked_at_every_handshake() {
    let s = Fixture::new();
    let clients = Ca::new("clients");
    let client = clients.leaf(0x1e01);
    let (materials, _) = with_clients(&s, &clients);
    // Whole seconds: a CRL's times have no fraction.
    let due = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let crl = write_new(s.dir.path(), "clients.crl", clients.crl_until(&[], due));
    let materials = materials.with_crl(&crl);
    let enforced = build(&materials, &template().enforce_crl_expiry(true), None);
    let lenient = build(&materials, &template(), None);
    assert!(admits(&s, &enforced, &client));

    let next_update = enforced.crls()[0].next_update.expect("nextUpdate");
    while SystemTime::now() <= next_update + Duration::from_millis(200) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !admits(&s, &enforced, &client),
        "past nextUpdate the client is refused"
    );
    assert!(
        admits(&s, &lenient, &client),
        "not enforced: still admitted"
    );
}

#[test]
fn a_crl_change_resets_resumption_and_the_same_crl_keeps_it() {
    let s = Fixture::new();
    let clients = Ca::new("clients");
    let (client, other) = (clients.leaf(0x1f01), clients.leaf(0x1f02));
    let (materials, _) = with_clients(&s, &clients);
    let crl = write_new(s.dir.path(), "clients.crl", clients.crl(&[]));
    let materials = materials.with_crl(&crl);
    let resuming = resuming_client_config(&s.ca, Some(&client));

    let first = build(&materials, &template(), None);
    assert_handshakes(
        first.config(),
        &resuming,
        &[HandshakeKind::Full, HandshakeKind::Resumed],
    );
    // The same bytes: the trust is the same, sessions resume.
    let same = build(&materials, &template(), Some(&first));
    assert_eq!(same.resumption(), Resumption::Kept);
    assert_handshakes(same.config(), &resuming, &[HandshakeKind::Resumed]);

    // A new CRL (revoking someone else): no session outlives it.
    write_new(s.dir.path(), "clients.crl", clients.crl(&[&other]));
    let changed = build(&materials, &template(), Some(&same));
    assert_eq!(changed.resumption(), Resumption::Fresh);
    assert_handshakes(changed.config(), &resuming, &[HandshakeKind::Full]);

    // Turning enforcement on is a trust change too.
    let enforced = build(
        &materials,
        &template().enforce_crl_expiry(true),
        Some(&changed),
    );
    assert_eq!(enforced.resumption(), Resumption::Fresh);
}

#[test]
fn crls_build_from_bytes_too() {
    let clients = Ca::new("clients");
    let server = Ca::new("server");
    let (leaf, revoked, kept) = (
        server.localhost_leaf(),
        clients.leaf(0x1f11),
        clients.leaf(0x1f12),
    );
    let bytes = MaterialBytes::new("vault:crt", leaf.cert_pem(), "vault:key", leaf.key_pem())
        .with_client_ca("vault:ca", clients.pem())
        .with_crl("vault:crl", clients.crl(&[&revoked]));
    let built = tls_reload_build::build_from_bytes(&bytes, &template(), None).expect("build");
    assert_eq!(built.crls()[0].path, Path::new("vault:crl"));
    let admits =
        |leaf: &Leaf| handshake(built.config(), &client_config(&server, Some(leaf))).is_ok();
    assert!(admits(&kept));
    assert!(!admits(&revoked));
    assert!(format!("{bytes:?}").contains("vault:crl"));
}

#[test]
fn client_cas_lists_every_trust_anchor_with_its_file() {
    let s = Fixture::new();
    let (a, b, c) = (Ca::new("a"), Ca::new("b"), Ca::new("c"));
    let bundle = write_new(s.dir.path(), "bundle.pem", a.pem() + &b.pem());
    let dir = s.dir.path().join("cas");
    std::fs::create_dir(&dir).expect("mkdir");
    let c_file = write_new(&dir, "c.pem", c.pem());
    let materials = Materials::new(&s.cert, &s.key)
        .with_client_ca(&bundle)
        .with_client_ca_dir(&dir);
    let built = build(&materials, &template(), None);
    let listed: Vec<_> = built
        .client_cas()
        .iter()
        .map(|ca| (ca.subject.as_str(), ca.path.clone()))
        .collect();
    assert_eq!(
        listed,
        [
            ("CN=a", bundle.clone()),
            ("CN=b", bundle.clone()),
            ("CN=c", c_file)
        ]
    );
    let a_info = &built.client_cas()[0];
    assert_eq!(a_info.serial_hex().len() % 2, 0);
    assert!(a_info.not_after > SystemTime::now());
    assert!(format!("{a_info:?}").contains(&a_info.not_after_rfc3339()));
    // Kept as is when a rebuild reuses the served trust.
    let again = build(&materials, &template(), Some(&built));
    assert_eq!(again.client_cas(), built.client_cas());
    // None without client auth.
    let plain = build(&Materials::new(&s.cert, &s.key), &template(), None);
    assert!(plain.client_cas().is_empty() && plain.crls().is_empty());
}
