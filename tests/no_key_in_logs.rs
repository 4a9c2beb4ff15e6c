//! Private keys never reach a log line or a `Debug` string, whatever the
//! reload does. Every event at `trace` level is captured, across a good
//! start, a refused key, a failed manual reload and a good rotation.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{write_atomic, write_pair, Ca};
use tls_reload::acceptor::{ReloadingAcceptor, Template};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The base64 lines of a PEM body, long enough not to appear by chance.
fn secret_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
        .map(str::to_owned)
        .collect()
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

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone())?;
    assert!(
        logs.contains("key does not match certificate"),
        "the failures were logged: {logs}"
    );
    assert!(
        logs.contains("tls reload applied"),
        "the reload was logged: {logs}"
    );
    let everything = format!("{logs}\n{}", shown.join("\n"));
    for leaf in [&first, &second, &other] {
        for line in secret_lines(&leaf.key_pem()) {
            assert!(!everything.contains(&line), "key bytes leaked: {line}");
        }
    }
    Ok(())
}
