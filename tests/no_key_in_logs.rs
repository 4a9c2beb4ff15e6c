//! Private keys never reach a log line, a status field or a `Debug` string,
//! whatever the reload does. Every event at `trace` level is captured,
//! across a good start, a refused key, keys mangled every usual way (at
//! reload and at start-up), a failed manual reload and a good rotation: of
//! an acceptor's key, and of a connector's client identity.

use std::sync::Arc;

use tls_reload::acceptor::{
    ClientMaterials, ClientTemplate, ReloadingAcceptor, ReloadingConnector, Template,
};
use tls_reload_testkit::{
    assert_no_pem_bytes, write_atomic, write_leaf, write_new, write_pair, Ca, Captured, Leaf,
};

/// A PEM key mangled the ways keys get mangled: flattened onto one line
/// (spaces, a literal `\n`), BEGIN glued to the body, base64 cut short, the
/// wrong label.
fn malformed(key_pem: &str) -> Vec<(&'static str, String)> {
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    vec![
        ("flattened", key_pem.replace('\n', " ")),
        ("literal \\n", key_pem.replace('\n', "\\n")),
        (
            "BEGIN glued to the body",
            format!("-----BEGIN PRIVATE KEY-----{body}\n-----END PRIVATE KEY-----\n"),
        ),
        (
            "truncated base64",
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                &body[..body.len() - 3]
            ),
        ),
        ("wrong label", key_pem.replace("PRIVATE KEY", "CERTIFICATE")),
    ]
}

#[test]
fn no_private_key_bytes_in_logs_or_debug_output() -> anyhow::Result<()> {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let dir = tempfile::tempdir()?;
    let ca = Ca::new("CA");
    let (first, second, other) = (ca.leaf(0x1c01), ca.leaf(0x1c02), ca.leaf(0x1c03));
    let materials = write_pair(dir.path(), &first);
    let mut shown = Vec::new();
    smol::block_on(async {
        let acceptor = ReloadingAcceptor::builder(materials.clone())
            .template(Template::new(Arc::new(
                rustls::crypto::ring::default_provider(),
            )))
            .build()
            .await?;
        shown.push(format!(
            "{acceptor:?} {:?} {:?}",
            acceptor.current(),
            acceptor.status()
        ));
        // A key that does not match: refused, and the error is logged.
        write_atomic(materials.key(), other.key_pem());
        let refused = acceptor.reload_now().await.expect_err("mismatch");
        shown.push(format!("{refused} {refused:?}"));
        // Garbage that looks like a key.
        write_atomic(
            materials.key(),
            "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n",
        );
        let refused = acceptor.reload_now().await.expect_err("garbage");
        shown.push(format!("{refused} {refused:?}"));
        // The real key, mangled every way a key gets mangled on its way
        // through an environment variable, a YAML value or a copy.
        for (shape, mangled) in malformed(&first.key_pem()) {
            write_atomic(materials.key(), &mangled);
            let refused = acceptor.reload_now().await.expect_err(shape);
            shown.push(format!("{refused} {refused:?} {:?}", acceptor.status()));
            // At start-up too.
            let failed = ReloadingAcceptor::builder(materials.clone())
                .template(Template::new(Arc::new(
                    rustls::crypto::ring::default_provider(),
                )))
                .build()
                .await
                .expect_err(shape);
            shown.push(format!("{failed} {failed:?}"));
        }
        // A good rotation.
        write_atomic(materials.key(), second.key_pem());
        write_atomic(materials.cert(), second.cert_pem());
        let applied = acceptor.reload_now().await?;
        shown.push(format!(
            "{applied:?} {acceptor:?} {:?} {:?}",
            acceptor.current(),
            acceptor.status()
        ));
        anyhow::Ok(())
    })?;
    let clients = [ca.leaf(0x1c11), ca.leaf(0x1c12), ca.leaf(0x1c13)];
    smol::block_on(connector_reloads(dir.path(), &ca, &clients, &mut shown))?;

    let logs = String::from_utf8(captured.bytes())?;
    assert!(
        logs.contains("key does not match certificate"),
        "the failures were logged: {logs}"
    );
    assert!(
        logs.contains("tls reload applied"),
        "the reload was logged: {logs}"
    );
    assert!(
        logs.contains("malformed PEM at line 1: BEGIN and END markers on one line"),
        "a flattened key is named as such: {logs}"
    );
    let everything = format!("{logs}\n{}", shown.join("\n"));
    for leaf in [&first, &second, &other].into_iter().chain(&clients) {
        assert_no_pem_bytes("the logs and Debug output", &everything, &leaf.key_pem());
    }
    Ok(())
}

/// The same for a connector's client identity: a good start, a refused
/// key, mangled keys at reload and at start-up, a good rotation.
async fn connector_reloads(
    dir: &std::path::Path,
    ca: &Ca,
    [first, second, other]: &[Leaf; 3],
    shown: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (cert, key) = write_leaf(dir, "client", first);
    let roots = write_new(dir, "roots.pem", ca.pem());
    let materials = ClientMaterials::new()
        .with_identity(&cert, &key)
        .with_roots(&roots);
    let template = ClientTemplate::new(Arc::new(rustls::crypto::ring::default_provider()));
    let build = || {
        ReloadingConnector::builder(materials.clone())
            .template(template.clone())
            .build()
    };
    let connector = build().await?;
    shown.push(format!(
        "{connector:?} {:?} {:?}",
        connector.current(),
        connector.status()
    ));
    write_atomic(&key, other.key_pem());
    let refused = connector.reload_now().await.expect_err("mismatch");
    shown.push(format!("{refused} {refused:?}"));
    for (shape, mangled) in malformed(&first.key_pem()) {
        write_atomic(&key, &mangled);
        let refused = connector.reload_now().await.expect_err(shape);
        shown.push(format!("{refused} {refused:?} {:?}", connector.status()));
        let failed = build().await.expect_err(shape);
        shown.push(format!("{failed} {failed:?}"));
    }
    write_atomic(&key, second.key_pem());
    write_atomic(&cert, second.cert_pem());
    let applied = connector.reload_now().await?;
    shown.push(format!(
        "{applied:?} {connector:?} {:?} {:?}",
        connector.current(),
        connector.status()
    ));
    Ok(())
}
