//! The reloader over real files and loopback handshakes: rotations converge,
//! bad material never replaces a good config, and nothing is applied for
//! nothing. Every test runs on smol and on async-std.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Result};
use common::*;
use tls_reload_acceptor::ReloadEvent;

on_both_runtimes!(
    rotation_of_cert_then_key_in_place_converges,
    mismatched_pair_keeps_the_old_cert_until_the_key_lands,
    same_content_rewrite_applies_nothing,
    bad_material_keeps_serving_and_recovers,
    kubernetes_data_swap_is_picked_up,
    events_and_status_follow_a_rotation,
);

async fn rotation_of_cert_then_key_in_place_converges<R: Runtime>() -> Result<()> {
    let f = Fixture::start::<R>(Serve::SpawnPerConnection).await?;
    assert_eq!(f.served().await?, f.first.serial_hex());
    let next = f.ca.leaf(0x2002);

    write_in_place(f.cert(), next.cert_pem());
    // The key stays old: once the files have held still for a moment, the
    // mismatch is reported (once), and the old pair keeps serving.
    let tried = wait_until(DEADLINE, || async {
        f.acceptor.status().reloads_failed >= 1
    })
    .await;
    let status = f.acceptor.status();
    ensure!(tried, "the half-written pair was never tried: {status:?}");
    f.wait_ticks(5).await?;
    assert_eq!(f.served().await?, f.first.serial_hex());
    assert_eq!(status.generation, 1);

    write_in_place(f.key(), next.key_pem());
    f.wait_serving(&next).await?;
    let status = f.acceptor.status();
    assert_eq!(status.leaf.serial_hex(), next.serial_hex());
    assert!(status.generation >= 2, "{status:?}");
    Ok(())
}

async fn mismatched_pair_keeps_the_old_cert_until_the_key_lands<R: Runtime>() -> Result<()> {
    let f = Fixture::start::<R>(Serve::Incoming).await?;
    let next = f.ca.leaf(0x2002);

    write_atomic(f.cert(), next.cert_pem());
    let refused = wait_until(DEADLINE, || async {
        f.acceptor
            .status()
            .last_error
            .is_some_and(|e| e.contains("key does not match certificate"))
    })
    .await;
    ensure!(refused, "no mismatch reported: {:?}", f.acceptor.status());
    for _ in 0..5 {
        assert_eq!(f.served().await?, f.first.serial_hex());
        f.wait_ticks(1).await?;
    }
    let status = f.acceptor.status();
    assert_eq!(status.generation, 1);
    assert_eq!(
        status.reloads_failed, 1,
        "a standing mismatch is reported once"
    );
    assert_eq!(f.events.failures(), 1);

    write_atomic(f.key(), next.key_pem());
    f.wait_serving(&next).await?;
    let status = f.acceptor.status();
    assert_eq!(status.generation, 2);
    assert_eq!(status.reloads_applied, 1);
    Ok(())
}

async fn same_content_rewrite_applies_nothing<R: Runtime>() -> Result<()> {
    let f = Fixture::start::<R>(Serve::SpawnPerConnection).await?;

    // In place (same inode, new mtime) and by rename (new inode).
    write_in_place(f.cert(), f.first.cert_pem());
    write_in_place(f.key(), f.first.key_pem());
    f.wait_ticks(5).await?;
    write_atomic(f.cert(), f.first.cert_pem());
    write_atomic(f.key(), f.first.key_pem());
    f.wait_ticks(10).await?;

    let status = f.acceptor.status();
    assert_eq!(status.generation, 1, "{status:?}");
    assert_eq!(status.reloads_applied, 0);
    assert_eq!(status.reloads_failed, 0);
    assert_eq!(f.events.all().len(), 0, "{:?}", f.events.all());
    assert_eq!(f.served().await?, f.first.serial_hex());

    // The same reloader does see a real change.
    let next = f.ca.leaf_for_key(0x2002, &f.first.key);
    write_atomic(f.cert(), next.cert_pem());
    f.wait_serving(&next).await?;
    assert_eq!(f.acceptor.status().generation, 2);
    Ok(())
}

async fn bad_material_keeps_serving_and_recovers<R: Runtime>() -> Result<()> {
    let f = Fixture::start::<R>(Serve::Incoming).await?;
    let cert = f.cert().to_owned();
    let good = f.first.cert_pem();
    let truncated = &good[..good.len() / 2];
    type Breaker<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let expired = f.ca.expired_leaf(0x1fff, &f.first.key);
    let breakers: Vec<Breaker<'_>> = vec![
        (
            "garbage",
            Box::new(|| write_atomic(&cert, "not a certificate at all\n")),
            "",
        ),
        (
            "truncated PEM",
            // Atomically: an in-place write passes through an empty file,
            // a second broken state that is rightly reported on its own.
            Box::new(|| write_atomic(&cert, truncated)),
            "",
        ),
        // Truncation in place: the one in-place write with no in-between.
        ("empty file", Box::new(|| write_in_place(&cert, "")), ""),
        (
            "deleted file",
            Box::new(|| std::fs::remove_file(&cert).expect("rm")),
            "not found",
        ),
        (
            "expired certificate",
            Box::new(|| write_atomic(&cert, expired.cert_pem())),
            "expired",
        ),
    ];

    let mut serving = f.first.serial_hex();
    for (round, (what, breaker, reason)) in breakers.into_iter().enumerate() {
        let failures = f.events.failures();
        breaker();
        let reported = wait_until(DEADLINE, || async { f.events.failures() > failures }).await;
        ensure!(
            reported,
            "{what}: no failure reported; {:?}",
            f.acceptor.status()
        );
        // Several ticks on the same broken files: still one report, still
        // the last good certificate.
        f.wait_ticks(6).await?;
        assert_eq!(
            f.events.failures(),
            failures + 1,
            "{what}: reported more than once"
        );
        assert_eq!(
            f.served().await?,
            serving,
            "{what}: stopped serving the old cert"
        );
        let error = f.acceptor.status().last_error.unwrap_or_default();
        ensure!(
            error.contains(&*cert.to_string_lossy()),
            "{what}: {error:?} names no file"
        );
        ensure!(error.contains(reason), "{what}: {error:?} lacks {reason:?}");

        let next = f.ca.leaf_for_key(0x2000 + round as u16, &f.first.key);
        write_atomic(&cert, next.cert_pem());
        f.wait_serving(&next).await?;
        serving = next.serial_hex();
    }
    let status = f.acceptor.status();
    assert_eq!(status.reloads_applied, 5);
    assert_eq!(status.reloads_failed, 5);
    Ok(())
}

async fn kubernetes_data_swap_is_picked_up<R: Runtime>() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("test server CA");
    let first = ca.leaf(0x1001);
    let mut volume = SecretVolume::new(dir.path(), &first);
    let ticks = tls_reload_acceptor::TestDetector::new();
    let acceptor = builder(volume.materials(), &ticks).build().await?;
    let server = serve::<R>(&acceptor, Serve::SpawnPerConnection)?;
    let _reloader = spawn::<R, _>(acceptor.reloader());
    let client = client_config(&ca, None);
    assert_eq!(
        fetch_serial(server.addr, &client).await?,
        first.serial_hex()
    );

    for serial in [0x2002, 0x3003] {
        let next = ca.leaf(serial);
        volume.swap(&next);
        let picked = wait_until(DEADLINE, || async {
            fetch_serial(server.addr, &client).await.ok() == Some(next.serial_hex())
        })
        .await;
        ensure!(picked, "swap to {serial:x} missed: {:?}", acceptor.status());
    }
    // Both files switch at once: never a mismatched pair.
    assert_eq!(acceptor.status().reloads_failed, 0);
    Ok(())
}

async fn events_and_status_follow_a_rotation<R: Runtime>() -> Result<()> {
    let f = Fixture::start::<R>(Serve::SpawnPerConnection).await?;
    let start = f.acceptor.status();
    assert_eq!(start.generation, 1);
    assert_eq!((start.reloads_applied, start.reloads_failed), (0, 0));
    assert_eq!(start.last_error, None);
    assert_eq!(start.last_reload_at, None);
    assert_eq!(start.leaf.serial_hex(), f.first.serial_hex());

    // 2040-01-01T00:00:00Z
    let not_after = UNIX_EPOCH + Duration::from_secs(2_208_988_800);
    let next = f.ca.leaf_with(0x2002, f.first.key_copy(), |params| {
        // Not in the last third of its lifetime (no expiry warning).
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    });
    let before = SystemTime::now();
    write_atomic(f.cert(), next.cert_pem());
    f.wait_serving(&next).await?;

    let events = f.events.all();
    let [ReloadEvent::Detected { paths }, ReloadEvent::Built { leaf: built, .. }, ReloadEvent::Applied {
        generation,
        leaf: applied,
        manual,
    }] = events.as_slice()
    else {
        anyhow::bail!("expected Detected, Built, Applied; got {events:?}");
    };
    assert_eq!(paths, &[f.cert().to_owned()]);
    assert_eq!(built.serial_hex(), next.serial_hex());
    assert_eq!(applied, built);
    assert_eq!((*generation, *manual), (2, false));

    let status = f.acceptor.status();
    assert_eq!(status.generation, 2);
    assert_eq!((status.reloads_applied, status.reloads_failed), (1, 0));
    assert_eq!(status.last_error, None);
    assert_eq!(status.leaf.serial_hex(), next.serial_hex());
    assert_eq!(status.leaf.not_after, not_after);
    assert!(status.applied_at >= before && status.last_reload_at == Some(status.applied_at));

    write_atomic(f.cert(), "garbage");
    // The status is updated before the event is sent: wait for the event.
    let failed = wait_until(DEADLINE, || async { f.events.failures() == 1 }).await;
    ensure!(failed, "{:?}", f.acceptor.status());
    let status = f.acceptor.status();
    assert_eq!(status.generation, 2);
    assert_eq!(status.leaf.serial_hex(), next.serial_hex());
    let error = status.last_error.expect("an error");
    assert!(error.contains(&*f.cert().to_string_lossy()), "{error}");
    assert!(status.last_error_at.expect("when") >= status.applied_at);
    assert_eq!(status.reloads_failed, 1);
    let events = f.events.all();
    let [ReloadEvent::Detected { .. }, ReloadEvent::Failed { error: reported }] = &events[3..5]
    else {
        anyhow::bail!("expected Detected, Failed after the rotation: {events:?}");
    };
    assert_eq!(reported.to_string(), error);

    let third = f.ca.leaf_for_key(0x3003, &f.first.key);
    write_atomic(f.cert(), third.cert_pem());
    f.wait_serving(&third).await?;
    let status = f.acceptor.status();
    assert_eq!(status.generation, 3);
    assert_eq!((status.reloads_applied, status.reloads_failed), (2, 1));
    assert_eq!(
        status.last_error.as_deref(),
        Some(error.as_str()),
        "the last error stays"
    );
    assert!(status.last_error_at.expect("when") <= status.applied_at);
    Ok(())
}
