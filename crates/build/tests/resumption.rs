//! Session continuity: kept across a certificate rotation, dropped when the
//! trust changes. Shown with a real rustls client.

mod common;

use common::{assert_handshakes, template};
use rustls::HandshakeKind;
use tls_reload_build::{build_blocking, ClientAuth, Materials, Resumption, Template};
use tls_reload_testkit::{resuming_client_config, write_leaf, write_new, Ca};

fn rotation_keeps_resumption(template: Template) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("root");
    let (cert, key) = write_leaf(dir.path(), "tls", &ca.localhost_leaf());
    let materials = Materials::new(&cert, &key);
    let client = resuming_client_config(&ca, None);

    let first = build_blocking(&materials, &template, None).expect("build");
    assert_eq!(first.resumption(), Resumption::Fresh);
    assert_handshakes(
        first.config(),
        &client,
        &[HandshakeKind::Full, HandshakeKind::Resumed],
    );

    // A new certificate and key, same trust.
    write_leaf(dir.path(), "tls", &ca.localhost_leaf());
    let second = build_blocking(&materials, &template, Some(&first)).expect("build");
    assert_ne!(second.leaf().sha256, first.leaf().sha256);
    assert_eq!(second.resumption(), Resumption::Kept);
    assert_handshakes(second.config(), &client, &[HandshakeKind::Resumed]);
}

#[test]
fn kept_across_a_cert_only_rebuild_with_session_storage() {
    rotation_keeps_resumption(template());
}

#[test]
fn kept_across_a_cert_only_rebuild_with_session_tickets() {
    let template = template().session_tickets(true).configure(|config| {
        // Stateless tickets only: resumption must come from the kept ticketer.
        config.session_storage = std::sync::Arc::new(rustls::server::NoServerSessionStorage {});
    });
    rotation_keeps_resumption(template);
}

#[test]
fn kept_across_a_cert_only_rebuild_over_tls12() {
    rotation_keeps_resumption(template().protocol_versions(&[&rustls::version::TLS12]));
}

#[test]
fn session_tickets_use_a_ticketer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_leaf(dir.path(), "tls", &Ca::new("root").localhost_leaf());
    let materials = Materials::new(&cert, &key);
    let off = build_blocking(&materials, &template(), None).expect("build");
    assert!(!off.config().ticketer.enabled());
    let on =
        build_blocking(&materials, &template().session_tickets(true), Some(&off)).expect("build");
    assert!(on.config().ticketer.enabled());
    assert_eq!(on.resumption(), Resumption::Fresh, "tickets turned on");
}

#[test]
fn dropped_across_a_trust_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = Ca::new("server root");
    let (cert, key) = write_leaf(dir.path(), "tls", &server_ca.localhost_leaf());
    let (old_clients, new_clients) = (Ca::new("old clients"), Ca::new("new clients"));
    let bundle = write_new(dir.path(), "ca.pem", old_clients.pem());
    let materials = Materials::new(&cert, &key).with_client_ca(&bundle);
    let client = resuming_client_config(&server_ca, Some(&old_clients.localhost_leaf()));

    let first = build_blocking(&materials, &template(), None).expect("build");
    assert_handshakes(
        first.config(),
        &client,
        &[HandshakeKind::Full, HandshakeKind::Resumed],
    );

    // Same CA file contents: a cert-only rebuild still resumes under mTLS.
    let same = build_blocking(&materials, &template(), Some(&first)).expect("build");
    assert_eq!(same.resumption(), Resumption::Kept);
    assert_handshakes(same.config(), &client, &[HandshakeKind::Resumed]);

    // A new root appended: the old sessions must not resume.
    write_new(dir.path(), "ca.pem", old_clients.pem() + &new_clients.pem());
    let widened = build_blocking(&materials, &template(), Some(&same)).expect("build");
    assert_handshakes(widened.config(), &client, &[HandshakeKind::Full]);
    assert_eq!(widened.resumption(), Resumption::Fresh);

    // Client auth mode is part of the trust too.
    let optional = template().client_auth(ClientAuth::Optional);
    let relaxed = build_blocking(&materials, &optional, Some(&widened)).expect("build");
    assert_handshakes(relaxed.config(), &client, &[HandshakeKind::Full]);
    assert_eq!(relaxed.resumption(), Resumption::Fresh);

    // Dropping client auth altogether as well.
    let plain =
        build_blocking(&Materials::new(&cert, &key), &optional, Some(&relaxed)).expect("build");
    assert_eq!(plain.resumption(), Resumption::Fresh);
}

#[test]
fn async_build_keeps_resumption_from_an_arc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("root");
    let (cert, key) = write_leaf(dir.path(), "tls", &ca.localhost_leaf());
    let materials = Materials::new(&cert, &key);
    let template = template();
    smol::block_on(async {
        let first = std::sync::Arc::new(
            tls_reload_build::build(&materials, &template, None)
                .await
                .expect("build"),
        );
        let second = tls_reload_build::build(&materials, &template, Some(first.clone()))
            .await
            .expect("build");
        assert_eq!(second.resumption(), Resumption::Kept);
        assert!(std::sync::Arc::ptr_eq(
            &first.config().session_storage,
            &second.config().session_storage
        ));
    });
}
