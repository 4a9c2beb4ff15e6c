//! The acceptor's behaviour on a tokio runtime: tokio's listener through
//! tokio-util's compat layer, the reloader and every connection spawned as
//! tokio tasks. Rotation, bad material, mTLS and a stale background build,
//! as the smol and async-std tests of `tls-reload-acceptor` check them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tls_reload::acceptor::{
    Materials, ReloadEvent, ReloadingAcceptor, SkipReason, Template, TestDetector,
};
use tls_reload_testkit::{
    client_config, connect, echo_round_trip, fetch_serial, provider, timeout, wait_until,
    write_atomic, write_pair, Ca, DEADLINE,
};
use tokio::net::TcpListener;
use tokio_util::compat::TokioAsyncReadCompatExt;

const INTERVAL: Duration = Duration::from_millis(20);

/// An echo server on tokio around `acceptor`; the accept loop ends with
/// the test's runtime.
async fn serve(acceptor: &ReloadingAcceptor) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = acceptor.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp.compat()).await else {
                    return;
                };
                let (reader, mut writer) = futures::io::AsyncReadExt::split(tls);
                let _ = futures::io::copy(reader, &mut writer).await;
            });
        }
    });
    Ok(addr)
}

async fn acceptor(materials: Materials) -> anyhow::Result<ReloadingAcceptor> {
    let acceptor = ReloadingAcceptor::builder(materials)
        .template(Template::new(provider()))
        .interval(INTERVAL)
        .build()
        .await?;
    tokio::spawn(acceptor.reloader());
    Ok(acceptor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_serves_the_new_certificate_and_open_connections_go_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("tokio CA");
    let (first, second) = (ca.leaf(0x1001), ca.leaf(0x1002));
    let materials = write_pair(dir.path(), &first);
    let acceptor = acceptor(materials.clone()).await?;
    let addr = serve(&acceptor).await?;
    let client = client_config(&ca, None);

    assert_eq!(fetch_serial(addr, &client).await?, first.serial_hex());
    let mut open = connect(addr, &client).await?;
    write_atomic(materials.key(), second.key_pem());
    write_atomic(materials.cert(), second.cert_pem());
    let applied = wait_until(DEADLINE, || async { acceptor.status().generation == 2 }).await;
    assert!(applied, "the rotation is applied: {:?}", acceptor.status());
    assert_eq!(fetch_serial(addr, &client).await?, second.serial_hex());
    echo_round_trip(&mut open, b"still here").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_material_is_reported_and_the_last_good_config_keeps_serving() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("tokio CA");
    let first = ca.leaf(0x1101);
    let materials = write_pair(dir.path(), &first);
    let acceptor = acceptor(materials.clone()).await?;
    let mut events = acceptor.events();
    let addr = serve(&acceptor).await?;

    write_atomic(materials.cert(), "not a certificate");
    let failed = timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            if let ReloadEvent::Failed { error } = event {
                return Ok(error.to_string());
            }
        }
        Err(std::io::ErrorKind::UnexpectedEof.into())
    })
    .await?;
    assert!(
        failed.contains(&materials.cert().display().to_string()),
        "{failed}"
    );
    let status = acceptor.status();
    assert_eq!((status.generation, status.reloads_failed), (1, 1));
    let client = client_config(&ca, None);
    assert_eq!(fetch_serial(addr, &client).await?, first.serial_hex());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_admits_clients_of_the_ca_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca, clients) = (Ca::new("tokio CA"), Ca::new("tokio clients"));
    let materials = write_pair(dir.path(), &ca.leaf(0x1201));
    let bundle = dir.path().join("clients.pem");
    std::fs::write(&bundle, clients.pem())?;
    let acceptor = acceptor(materials.with_client_ca(&bundle)).await?;
    let addr = serve(&acceptor).await?;

    let anonymous = client_config(&ca, None);
    assert!(fetch_serial(addr, &anonymous).await.is_err());
    let stranger = Ca::new("stranger").leaf(0x1202);
    assert!(fetch_serial(addr, &client_config(&ca, Some(&stranger)))
        .await
        .is_err());
    let member = clients.leaf(0x1203);
    fetch_serial(addr, &client_config(&ca, Some(&member))).await?;
    Ok(())
}

/// A background build held between its build and its landing while
/// `reload_now` applies newer files: released, it is dropped as stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_background_build_is_not_applied_after_a_manual_reload() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("tokio CA");
    let first = ca.leaf(0x1301);
    let materials = write_pair(dir.path(), &first);
    let detector = TestDetector::new();
    let (started_tx, started_rx) = async_channel::unbounded::<()>();
    let (release_tx, release_rx) = async_channel::unbounded::<()>();
    let acceptor = ReloadingAcceptor::builder(materials.clone())
        .template(Template::new(provider()))
        .interval(INTERVAL)
        .detector(detector.clone())
        .before_background_apply(move || {
            let (started, release) = (started_tx.clone(), release_rx.clone());
            async move {
                let _ = started.send(()).await;
                let _ = release.recv().await;
            }
        })
        .build()
        .await?;
    let mut events = acceptor.events();
    tokio::spawn(acceptor.reloader());
    let addr = serve(&acceptor).await?;

    let stale = ca.leaf_for_key(0x1302, &first.key);
    write_atomic(materials.cert(), stale.cert_pem());
    detector.trigger();
    timeout(DEADLINE, async {
        started_rx.recv().await.map_err(std::io::Error::other)
    })
    .await?;
    let manual = ca.leaf_for_key(0x1303, &first.key);
    write_atomic(materials.cert(), manual.cert_pem());
    let reloaded = acceptor.reload_now().await?;
    assert_eq!(
        (reloaded.generation, reloaded.leaf.serial_hex()),
        (2, manual.serial_hex())
    );
    release_tx.send(()).await?;
    let skipped = timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            if matches!(
                event,
                ReloadEvent::Skipped {
                    reason: SkipReason::Stale
                }
            ) {
                return Ok(());
            }
        }
        Err(std::io::ErrorKind::UnexpectedEof.into())
    })
    .await;
    assert!(skipped.is_ok(), "the held build is dropped as stale");
    assert_eq!(acceptor.status().generation, 2);
    let client: Arc<_> = client_config(&ca, None);
    assert_eq!(fetch_serial(addr, &client).await?, manual.serial_hex());
    Ok(())
}
