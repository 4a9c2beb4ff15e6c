//! Manual control of a reloading acceptor: `reload_now`, `set_materials`,
//! the generation guard against stale background builds, and the reloader's
//! lifetime. Every test runs on smol and on async-std.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::*;
use futures::{FutureExt, StreamExt};
use tls_reload_acceptor::{
    Materials, ReloadError, ReloadEvent, ReloadingAcceptor, SkipReason, Template, TestDetector,
};

on_both_runtimes!(
    background_build_is_not_applied_after_a_manual_reload,
    background_build_is_not_applied_after_a_path_change,
    reloader_ends_when_every_handle_is_dropped,
    reload_now_returns_the_error_or_applies,
    set_materials_switches_or_keeps_the_old,
);

/// What overtakes the background build.
#[derive(Clone, Copy, Debug)]
enum Overtake {
    ReloadNow,
    SetMaterials,
}

async fn background_build_is_not_applied_after_a_manual_reload<R: Runtime>() -> Result<()> {
    stale_background_build_is_not_applied::<R>(Overtake::ReloadNow).await
}

async fn background_build_is_not_applied_after_a_path_change<R: Runtime>() -> Result<()> {
    stale_background_build_is_not_applied::<R>(Overtake::SetMaterials).await
}

/// A background build of B is held between its build and its apply while a
/// manual reload (or a path change) applies C; once released, B must be
/// dropped as stale, not served over C.
async fn stale_background_build_is_not_applied<R: Runtime>(overtake: Overtake) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("test server CA");
    let first = ca.leaf(0x1001);
    let materials = write_pair(dir.path(), &first);
    let detector = TestDetector::new();
    let (started_tx, started_rx) = smol::channel::unbounded::<()>();
    let (release_tx, release_rx) = smol::channel::unbounded::<()>();
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
    let events = EventLog::new(&acceptor);
    let server = serve::<R>(&acceptor, Serve::SpawnPerConnection)?;
    let client = client_config(&ca, None);
    let _reloader = spawn::<R, _>(acceptor.reloader());

    let stale = ca.leaf_for_key(0x2002, &first.key);
    write_atomic(materials.cert(), stale.cert_pem());
    detector.trigger();
    timeout(DEADLINE, async {
        started_rx.recv().await.map_err(std::io::Error::other)
    })
    .await
    .context("the background build never started")?;
    let built_stale = events.count(
        |e| matches!(e, ReloadEvent::Built { leaf, .. } if leaf.serial_hex() == stale.serial_hex()),
    );
    assert_eq!(
        built_stale,
        1,
        "the held build is not B: {:?}",
        events.all()
    );
    assert_eq!(acceptor.status().generation, 1);

    let manual = ca.leaf_for_key(0x3003, &first.key);
    let reloaded = match overtake {
        Overtake::ReloadNow => {
            write_atomic(materials.cert(), manual.cert_pem());
            acceptor.reload_now().await?
        }
        Overtake::SetMaterials => {
            let other = dir.path().join("other");
            std::fs::create_dir(&other)?;
            acceptor.set_materials(write_pair(&other, &manual)).await?
        }
    };
    assert_eq!(reloaded.generation, 2);
    assert_eq!(reloaded.leaf.serial_hex(), manual.serial_hex());

    release_tx.send(()).await?;
    let dropped = wait_until(DEADLINE, || async {
        events.count(|e| {
            matches!(
                e,
                ReloadEvent::Skipped {
                    reason: SkipReason::Stale
                }
            )
        }) == 1
    })
    .await;
    ensure!(
        dropped,
        "the stale build was not dropped: {:?}",
        events.all()
    );
    ensure!(wait_ticks(&detector, 3).await, "the reloader stopped");

    assert_eq!(
        fetch_serial(server.addr, &client).await?,
        manual.serial_hex()
    );
    let status = acceptor.status();
    assert_eq!(status.generation, 2, "{status:?}");
    assert_eq!(status.leaf.serial_hex(), manual.serial_hex());
    assert_eq!((status.reloads_applied, status.reloads_failed), (1, 0));
    let applied: Vec<_> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ReloadEvent::Applied { leaf, manual, .. } => Some((leaf.serial_hex(), manual)),
            _ => None,
        })
        .collect();
    assert_eq!(applied, [(manual.serial_hex(), true)]);
    Ok(())
}

async fn reloader_ends_when_every_handle_is_dropped<R: Runtime>() -> Result<()> {
    // A long interval too: the reloader must not wait for its next tick.
    for interval in [INTERVAL, Duration::from_secs(3600)] {
        let dir = tempfile::tempdir()?;
        let leaf = Ca::new("test server CA").leaf(0x1001);
        let detector = TestDetector::new();
        let acceptor = ReloadingAcceptor::builder(write_pair(dir.path(), &leaf))
            .template(Template::new(provider()))
            .interval(interval)
            .detector(detector.clone())
            .build()
            .await?;
        let clone = acceptor.clone();
        let events = acceptor.events();
        let mut reloader = spawn::<R, _>(acceptor.reloader());

        drop(acceptor);
        if interval == INTERVAL {
            ensure!(
                wait_ticks(&detector, 3).await,
                "the reloader is not ticking"
            );
        }
        ensure!(
            (&mut reloader).now_or_never().is_none(),
            "the reloader ended while a handle was alive"
        );

        drop(clone);
        let dropped = Instant::now();
        timeout(Duration::from_secs(2), reloader.map(Ok))
            .await
            .context("the reloader outlived the acceptor")?;
        let ended = timeout(Duration::from_secs(2), events.collect::<Vec<_>>().map(Ok))
            .await
            .context("the events stream outlived the acceptor")?;
        assert!(ended.is_empty(), "{ended:?}");
        ensure!(dropped.elapsed() < Duration::from_secs(2));
    }
    Ok(())
}

async fn reload_now_returns_the_error_or_applies<R: Runtime>() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("test server CA");
    let first = ca.leaf(0x1001);
    let materials = write_pair(dir.path(), &first);
    // No reloader runs: only the manual reloads count.
    let acceptor = builder(materials.clone(), &TestDetector::new())
        .build()
        .await?;
    let events = EventLog::new(&acceptor);
    let server = serve::<R>(&acceptor, Serve::Incoming)?;
    let client = client_config(&ca, None);

    write_atomic(materials.cert(), "garbage");
    for attempt in 1..=2 {
        let error = acceptor.reload_now().await.expect_err("garbage applied");
        assert_names(&error, materials.cert());
        assert!(matches!(error, ReloadError::Build(_)), "{error:?}");
        let status = acceptor.status();
        assert_eq!(status.generation, 1);
        // The caller asked: every manual failure counts.
        assert_eq!(status.reloads_failed, attempt);
        assert_eq!(status.last_error, Some(error.to_string()));
        assert_eq!(
            fetch_serial(server.addr, &client).await?,
            first.serial_hex()
        );
    }

    let next = ca.leaf(0x2002);
    write_atomic(materials.cert(), next.cert_pem());
    let error = acceptor.reload_now().await.expect_err("mismatch applied");
    ensure!(
        error.to_string().contains("key does not match certificate"),
        "{error}"
    );
    assert_names(&error, materials.key());

    write_atomic(materials.key(), next.key_pem());
    let reloaded = acceptor.reload_now().await?;
    assert_eq!(reloaded.generation, 2);
    assert_eq!(reloaded.leaf.serial_hex(), next.serial_hex());
    assert_eq!(fetch_serial(server.addr, &client).await?, next.serial_hex());
    let status = acceptor.status();
    assert_eq!(
        (
            status.generation,
            status.reloads_applied,
            status.reloads_failed
        ),
        (2, 1, 3)
    );
    assert!(matches!(
        events.all().last(),
        Some(ReloadEvent::Applied {
            generation: 2,
            manual: true,
            ..
        })
    ));
    Ok(())
}

async fn set_materials_switches_or_keeps_the_old<R: Runtime>() -> Result<()> {
    let f = Fixture::start::<R>(Serve::SpawnPerConnection).await?;
    let other = f.dir.path().join("other");
    std::fs::create_dir(&other)?;
    let switched = f.ca.leaf(0x2002);
    let new_materials = write_pair(&other, &switched);

    let reloaded = f.acceptor.set_materials(new_materials.clone()).await?;
    assert_eq!(reloaded.leaf.serial_hex(), switched.serial_hex());
    assert_eq!(f.served().await?, switched.serial_hex());
    assert_eq!(f.acceptor.status().materials, new_materials);

    let missing = Materials::new(f.dir.path().join("missing.crt"), other.join("tls.key"));
    let error = f
        .acceptor
        .set_materials(missing)
        .await
        .expect_err("missing applied");
    assert_names(&error, &f.dir.path().join("missing.crt"));

    let mismatched = Materials::new(f.cert(), other.join("tls.key"));
    let error = f
        .acceptor
        .set_materials(mismatched)
        .await
        .expect_err("mismatch applied");
    ensure!(
        error.to_string().contains("key does not match certificate"),
        "{error}"
    );

    assert_eq!(f.served().await?, switched.serial_hex());
    let status = f.acceptor.status();
    assert_eq!(
        status.materials, new_materials,
        "a refused switch changed the paths"
    );
    assert_eq!((status.generation, status.reloads_failed), (2, 2));

    // The reloader follows the new paths, and no longer the old ones.
    let next = f.ca.leaf_for_key(0x3003, &switched.key);
    write_atomic(new_materials.cert(), next.cert_pem());
    f.wait_serving(&next).await?;
    write_atomic(f.cert(), "garbage");
    f.wait_ticks(5).await?;
    let status = f.acceptor.status();
    assert_eq!(
        (status.generation, status.reloads_failed),
        (3, 2),
        "{status:?}"
    );
    assert_eq!(f.served().await?, next.serial_hex());
    Ok(())
}

fn assert_names(error: &ReloadError, path: &Path) {
    let message = error.to_string();
    assert!(
        message.contains(&*path.to_string_lossy()),
        "{message:?} does not name {}",
        path.display()
    );
}
