//! User code (a detector factory, a detector's `Debug`) never runs under a
//! lock that the accept path or `status()` takes: a factory may ask for the
//! status, or take its time, while handshakes go on.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{
    client_config, fetch_serial, serve, timeout, wait_until, write_pair, Ca, Runtime, Serve, Smol,
    DEADLINE, INTERVAL,
};
use tls_reload_acceptor::{ReloadingAcceptor, Strategy, Template};
use tls_reload_detect::Composite;

#[test]
fn a_detector_factory_may_ask_for_the_status_and_take_its_time() -> anyhow::Result<()> {
    Smol::block_on(async {
        let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let ca = Ca::new("user code CA");
        let (first, second) = (ca.leaf(0x6001), ca.leaf(0x6002));
        let (materials_a, materials_b) = (
            write_pair(dir_a.path(), &first),
            write_pair(dir_b.path(), &second),
        );
        let handle: Arc<OnceLock<ReloadingAcceptor>> = Arc::default();
        let in_factory = Arc::new(AtomicBool::new(false));
        let (factory_handle, factory_flag) = (handle.clone(), in_factory.clone());
        let acceptor = ReloadingAcceptor::builder(materials_a)
            .template(Template::new(common::provider()))
            .interval(INTERVAL)
            .detector_with(move |materials| {
                if let Some(acceptor) = factory_handle.get() {
                    factory_flag.store(true, Ordering::SeqCst);
                    // Deadlocked here when the factory ran under the state lock.
                    let _ = acceptor.status();
                    let _ = format!("{acceptor:?}");
                    std::thread::sleep(Duration::from_millis(200));
                    factory_flag.store(false, Ordering::SeqCst);
                }
                Box::new(Composite::from_paths(Strategy::Combined, materials.paths()))
            })
            .build()
            .await?;
        let _ = handle.set(acceptor.clone());
        let server = serve::<Smol>(&acceptor, Serve::SpawnPerConnection)?;
        let client = client_config(&ca, None);
        assert_eq!(
            fetch_serial(server.addr, &client).await?,
            first.serial_hex()
        );

        // On a thread of its own, so the factory's sleep blocks no executor.
        let switching = acceptor.clone();
        let (tx, rx) = async_channel::bounded(1);
        std::thread::spawn(move || {
            let _ = tx.send_blocking(smol::block_on(switching.set_materials(materials_b)));
        });
        let entered = wait_until(DEADLINE, || async { in_factory.load(Ordering::SeqCst) }).await;
        anyhow::ensure!(entered, "the factory never ran");
        // While the factory sleeps, handshakes and the status go on.
        let served = timeout(Duration::from_secs(2), fetch_serial(server.addr, &client)).await?;
        // Off the test thread: with the old lock it never returned.
        let asking = acceptor.clone();
        let status = timeout(Duration::from_secs(2), async {
            Ok(blocking::unblock(move || asking.status()).await)
        })
        .await?;
        assert!(
            in_factory.load(Ordering::SeqCst),
            "the handshake waited for the factory"
        );
        assert_eq!(served, first.serial_hex());
        assert_eq!(status.generation, 1);

        let switched = timeout(DEADLINE, async {
            rx.recv().await.map_err(std::io::Error::other)
        })
        .await??;
        assert_eq!(switched.generation, 2);
        assert_eq!(
            fetch_serial(server.addr, &client).await?,
            second.serial_hex()
        );
        Ok(())
    })
}
