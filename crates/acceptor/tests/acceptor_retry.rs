//! Files that failed to build are retried while they stay the same: a
//! certificate that is not yet valid becomes valid with time, and nothing on
//! disk moves to say so.

mod common;

use std::time::{Duration, Instant};

use common::{write_atomic, Fixture, Runtime, Serve};

async fn a_not_yet_valid_certificate_is_served_once_valid_without_a_file_change<R: Runtime>(
) -> anyhow::Result<()> {
    let f = Fixture::start_with::<R>(Serve::SpawnPerConnection, |builder| {
        builder.retry_interval(Duration::from_millis(200))
    })
    .await?;
    // Valid from two seconds from now (certificate times have whole seconds).
    let valid_from = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    // Same key, so only the certificate file changes.
    let key = f.first.key_copy();
    let future = f.ca.leaf_with(0x1777, key, |params| {
        params.not_before = valid_from;
    });
    write_atomic(f.cert(), future.cert_pem());
    let written = Instant::now();

    f.wait_serving(&future).await?;
    assert!(
        written.elapsed() >= Duration::from_millis(900),
        "served before it was valid: {:?}",
        written.elapsed()
    );
    let status = f.acceptor.status();
    assert_eq!(status.generation, 2);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("certificate not yet valid")),
        "{status:?}"
    );
    // Retried every 200 ms, reported once.
    assert_eq!(f.events.failures(), 1, "{:?}", f.events.all());
    Ok(())
}

on_both_runtimes!(a_not_yet_valid_certificate_is_served_once_valid_without_a_file_change);
