//! The `watch` stream on a real timer.

use std::fs;
use std::time::Duration;

use async_trait::async_trait;
use futures::channel::mpsc;
use futures::future::{self, Either};
use futures::StreamExt;
use tls_reload_detect::{
    watch, Change, Composite, DetectError, Detector, Fingerprint, Strategy, Watch,
};

use crate::support::{block_on, not_found, within, TestResult, NEW, OLD};

/// Reports each finished check, so a test knows when the stream has taken
/// its baseline and can count ticks.
#[derive(Debug)]
struct Reporting<D> {
    inner: D,
    checked: mpsc::UnboundedSender<()>,
}

#[async_trait]
impl<D: Detector> Detector for Reporting<D> {
    async fn fingerprint(&self) -> Result<Fingerprint, DetectError> {
        let result = self.inner.fingerprint().await;
        let _ = self.checked.unbounded_send(());
        result
    }
}

enum Event {
    Item(Result<Change, DetectError>),
    Checked,
}

/// Polls the stream until it yields or a check finishes, whichever first.
async fn next_event(stream: &mut Watch, checked: &mut mpsc::UnboundedReceiver<()>) -> Event {
    let event = future::select(stream.next(), checked.next());
    match within("the watch stream", event).await {
        Either::Left((item, _)) => Event::Item(item.expect("the stream never ends")),
        Either::Right((tick, _)) => {
            tick.expect("the detector lives in the stream");
            Event::Checked
        }
    }
}

/// Polls the stream until it yields, letting checks pass.
async fn next_item(
    stream: &mut Watch,
    checked: &mut mpsc::UnboundedReceiver<()>,
) -> Result<Change, DetectError> {
    loop {
        if let Event::Item(item) = next_event(stream, checked).await {
            return item;
        }
    }
}

#[test]
fn the_stream_yields_changes_and_each_error_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    fs::write(&cert, OLD)?;
    fs::write(&key, OLD)?;
    let (tx, mut checked) = mpsc::unbounded();
    let detector = Reporting {
        inner: Composite::from_paths(Strategy::Combined, [&cert, &key]),
        checked: tx,
    };
    let mut stream = watch(detector, Duration::from_millis(20));

    block_on(async {
        // The baseline is taken at the first poll and yields nothing.
        match next_event(&mut stream, &mut checked).await {
            Event::Checked => {}
            Event::Item(item) => panic!("before any change: {item:?}"),
        }

        fs::write(&key, NEW)?;
        let change = next_item(&mut stream, &mut checked).await?;
        assert_eq!(change.paths(), std::slice::from_ref(&key));

        fs::remove_file(&cert)?;
        let error = next_item(&mut stream, &mut checked)
            .await
            .expect_err("cert deleted");
        not_found(&error, &cert)?;
        for tick in 0..10 {
            if let Event::Item(item) = next_event(&mut stream, &mut checked).await {
                panic!("still missing, tick {tick}: {item:?}, reported again");
            }
        }

        fs::write(&cert, NEW)?;
        let change = next_item(&mut stream, &mut checked).await?;
        assert_eq!(change.paths(), std::slice::from_ref(&cert));
        Ok(())
    })
}
