//! Client materials: an optional identity and the trusted roots, refused
//! precisely and fail closed, with resumption kept only while neither
//! changes.

use std::sync::Arc;

use rustls::RootCertStore;
use tls_reload_build::{
    build_client_blocking, BuildError, ClientMaterials, ClientTemplate, Resumption,
};
use tls_reload_testkit::{
    assert_no_pem_bytes, provider, write_atomic, write_ca_dir, write_leaf, write_new, Ca,
};

fn template() -> ClientTemplate {
    ClientTemplate::new(provider())
}

#[test]
fn an_identity_and_a_roots_bundle_build_and_describe_themselves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (servers, clients) = (Ca::new("servers"), Ca::new("clients"));
    let leaf = clients.leaf(0x1001);
    let (cert, key) = write_leaf(dir.path(), "client", &leaf);
    let roots = write_new(dir.path(), "roots.pem", servers.pem() + &clients.pem());
    let materials = ClientMaterials::new()
        .with_identity(&cert, &key)
        .with_roots(&roots);
    let built = build_client_blocking(&materials, &template(), None).expect("build");
    assert_eq!(
        built.identity().map(|l| l.serial_hex()),
        Some("1001".into())
    );
    assert_eq!(built.roots().len(), 2, "every certificate of the bundle");
    assert_eq!(built.files(), [cert.clone(), key.clone(), roots.clone()]);
    assert_eq!(built.resumption(), Resumption::Fresh);
    let shown = format!("{built:?} {materials:?} {:?}", template());
    assert_no_pem_bytes("a client build's Debug", &shown, &leaf.key_pem());
}

#[test]
fn a_key_that_does_not_match_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clients = Ca::new("clients");
    let (cert, _) = write_leaf(dir.path(), "client", &clients.leaf(0x1001));
    let (_, other_key) = write_leaf(dir.path(), "other", &clients.leaf(0x1002));
    let roots = write_new(dir.path(), "roots.pem", clients.pem());
    let materials = ClientMaterials::new()
        .with_identity(&cert, &other_key)
        .with_roots(&roots);
    let error = build_client_blocking(&materials, &template(), None).expect_err("mismatch");
    assert!(matches!(error, BuildError::KeyMismatch { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("other.key") && message.contains("client.crt"),
        "{message}"
    );
}

#[test]
fn roots_fail_closed_and_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let roots = write_new(dir.path(), "roots.pem", "not PEM at all");
    let error = build_client_blocking(
        &ClientMaterials::new().with_roots(&roots),
        &template(),
        None,
    )
    .expect_err("broken roots");
    assert!(matches!(error, BuildError::NotPem { .. }), "{error}");
    assert_eq!(error.path(), Some(roots.as_path()));

    // A broken roots file is not replaced by the template's store.
    let mut store = RootCertStore::empty();
    store.add(Ca::new("fallback").der()).expect("root");
    let with_store = template().root_store(store);
    assert!(build_client_blocking(
        &ClientMaterials::new().with_roots(&roots),
        &with_store,
        None
    )
    .is_err());

    let error = build_client_blocking(&ClientMaterials::new(), &template(), None)
        .expect_err("nothing trusted");
    assert!(matches!(error, BuildError::NoTrustedRoots), "{error}");
    let fallback = build_client_blocking(&ClientMaterials::new(), &with_store, None)
        .expect("the template's store");
    assert!(fallback.roots().is_empty());
    assert!(fallback.identity().is_none());
}

#[test]
fn a_roots_directory_trusts_every_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cas = write_ca_dir(&dir.path().join("cas"), 3);
    let built = build_client_blocking(
        &ClientMaterials::new().with_roots_dir(&cas),
        &template(),
        None,
    )
    .expect("build");
    assert_eq!(built.roots().len(), 3);
}

#[test]
fn resumption_is_kept_only_while_identity_and_roots_are_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (servers, clients) = (Ca::new("servers"), Ca::new("clients"));
    let (cert, key) = write_leaf(dir.path(), "client", &clients.leaf(0x1001));
    let roots = write_new(dir.path(), "roots.pem", servers.pem());
    let materials = ClientMaterials::new()
        .with_identity(&cert, &key)
        .with_roots(&roots);
    let template = template();
    let build = |previous| build_client_blocking(&materials, &template, previous).expect("build");

    let first = build(None);
    let same = build(Some(&first));
    assert_eq!(same.resumption(), Resumption::Kept);
    assert!(Arc::ptr_eq(
        &same.config().client_auth_cert_resolver,
        &first.config().client_auth_cert_resolver
    ));

    let rotated = clients.leaf(0x1002);
    write_atomic(&key, rotated.key_pem());
    write_atomic(&cert, rotated.cert_pem());
    let new_identity = build(Some(&same));
    assert_eq!(new_identity.resumption(), Resumption::Fresh);

    write_atomic(&roots, servers.pem() + &Ca::new("more").pem());
    let new_roots = build(Some(&new_identity));
    assert_eq!(new_roots.resumption(), Resumption::Fresh);
    assert_eq!(build(Some(&new_roots)).resumption(), Resumption::Kept);
}
