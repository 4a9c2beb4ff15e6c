//! One reloader per acceptor: of two spawned together, one ends at once;
//! once the running one is dropped, a new one takes over.

mod common;

use std::time::Duration;

use common::*;
use tls_reload_acceptor::TestDetector;

async fn a_second_reloader_ends_at_once_and_a_later_one_takes_over<R: Runtime>(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("reloader CA");
    let materials = write_pair(dir.path(), &ca.leaf(0x7001));
    let trigger = TestDetector::new();
    let acceptor = builder(materials, &TestDetector::new())
        .detector(trigger.clone())
        .build()
        .await?;
    let events = EventLog::new(&acceptor);

    // Whichever starts first runs; the other ends at once.
    let (one, two) = (
        spawn::<R, _>(acceptor.reloader()),
        spawn::<R, _>(acceptor.reloader()),
    );
    let first = timeout(DEADLINE, async {
        match futures::future::select(one, two).await {
            futures::future::Either::Left(((), running))
            | futures::future::Either::Right(((), running)) => Ok(running),
        }
    })
    .await?;

    // The running one still reloads, once per change.
    let applied = |n: usize| {
        let events = &events;
        async move { wait_until(DEADLINE, || async { events.applied() >= n }).await }
    };
    trigger.trigger();
    anyhow::ensure!(applied(1).await, "the first reloader stopped");
    let checks = trigger.checks();
    async_io::Timer::after(Duration::from_millis(100)).await;
    // One reloader at a 20 ms interval: about 5 checks in 100 ms, not 10.
    let per_100ms = trigger.checks() - checks;
    assert!(
        per_100ms <= 7,
        "{per_100ms} checks in 100 ms: two reloaders ran"
    );

    drop(first);
    // The first one stops at its next poll; the status says when it has.
    let stopped = wait_until(DEADLINE, || async {
        acceptor.status().detection.to_string() == "poll only: no reloader is running"
    })
    .await;
    anyhow::ensure!(stopped, "the first reloader did not stop");
    let third = spawn::<R, _>(acceptor.reloader());
    trigger.trigger();
    anyhow::ensure!(applied(2).await, "no reloader took over");
    drop(third);
    Ok(())
}

on_both_runtimes!(a_second_reloader_ends_at_once_and_a_later_one_takes_over);
