//! `set_materials` against a background reload that starts while it is
//! under way: the switch must win, and its result must say what happened.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::{
    client_config, fetch_serial, serve, spawn, write_atomic, write_pair, Ca, Runtime, Serve,
    DEADLINE,
};
use tls_reload_acceptor::{Detector, ReloadingAcceptor, Template, TestDetector};
use tls_reload_detect::{DetectError, Fingerprint};

/// A detector whose first fingerprint waits until the test opens the gate,
/// then tells the test it has passed.
#[derive(Debug)]
struct Gate {
    open: async_channel::Receiver<()>,
    entered: async_channel::Sender<()>,
}

#[async_trait]
impl Detector for Gate {
    async fn fingerprint(&self) -> Result<Fingerprint, DetectError> {
        let _ = self.entered.try_send(());
        let _ = self.open.recv().await;
        Ok(Fingerprint::of_bytes(b"gate"))
    }
}

async fn a_background_reload_during_set_materials_never_outlives_the_switch<R: Runtime>(
) -> anyhow::Result<()> {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let ca = Ca::new("CA");
    let (a1, a2, b) = (ca.leaf(0x1a01), ca.leaf(0x1a02), ca.leaf(0x1b01));
    let materials_a = write_pair(dir_a.path(), &a1);
    let materials_b = write_pair(dir_b.path(), &b);

    let ticks = TestDetector::new();
    let (open_tx, open_rx) = async_channel::unbounded();
    let (entered_tx, entered_rx) = async_channel::unbounded();
    let b_cert = materials_b.cert().to_owned();
    let a_ticks = ticks.clone();
    let acceptor = ReloadingAcceptor::builder(materials_a.clone())
        .template(Template::new(Arc::new(
            rustls::crypto::ring::default_provider(),
        )))
        .interval(std::time::Duration::from_millis(10))
        .detector_with(move |materials| -> Box<dyn Detector> {
            if materials.cert() == b_cert {
                Box::new(Gate {
                    open: open_rx.clone(),
                    entered: entered_tx.clone(),
                })
            } else {
                Box::new(a_ticks.clone())
            }
        })
        .build()
        .await?;
    let server = serve::<R>(&acceptor, Serve::SpawnPerConnection)?;
    let _reloader = spawn::<R, _>(acceptor.reloader());
    let client = client_config(&ca, None);

    // The switch takes its ticket, then waits in its detector.
    let switching = spawn::<R, _>({
        let acceptor = acceptor.clone();
        async move { acceptor.set_materials(materials_b).await }
    });
    common::timeout(DEADLINE, async {
        entered_rx.recv().await.map_err(std::io::Error::other)
    })
    .await?;

    // Meanwhile the old files change and the reloader applies them.
    write_atomic(materials_a.cert(), a2.cert_pem());
    write_atomic(materials_a.key(), a2.key_pem());
    ticks.trigger();
    let applied_a2 = common::wait_until(DEADLINE, || async {
        fetch_serial(server.addr, &client).await.ok().as_deref() == Some(a2.serial_hex().as_str())
    })
    .await;
    anyhow::ensure!(
        applied_a2,
        "the background reload of the old files was not applied"
    );

    // Now the switch goes on: it must apply and say so. (With the gate
    // closed, later checks of the new files pass straight through.)
    drop(open_tx);
    let reloaded = switching.await?;
    assert_eq!(reloaded.leaf.serial_hex(), b.serial_hex());
    assert_eq!(fetch_serial(server.addr, &client).await?, b.serial_hex());
    let status = acceptor.status();
    assert_eq!(status.materials.cert(), dir_b.path().join("tls.crt"));
    assert_eq!(status.leaf.serial_hex(), b.serial_hex());
    assert_eq!(status.generation, 3);

    // And nothing from the old files lands later: the reloader checks the
    // new ones now.
    write_atomic(materials_a.cert(), a1.cert_pem());
    write_atomic(materials_a.key(), a1.key_pem());
    ticks.trigger();
    for _ in 0..3 {
        common::timeout(DEADLINE, async {
            entered_rx.recv().await.map_err(std::io::Error::other)
        })
        .await?;
    }
    assert_eq!(fetch_serial(server.addr, &client).await?, b.serial_hex());
    assert_eq!(acceptor.status().generation, 3);
    Ok(())
}

on_both_runtimes!(a_background_reload_during_set_materials_never_outlives_the_switch);
