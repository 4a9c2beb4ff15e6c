//! Event-driven detection on real files and real inotify: with a poll
//! interval of an hour, only events can explain a reload within seconds.
//! Each way certificates are renewed is served within a bounded wait; an
//! unrelated file's churn causes no reload; a watch that cannot be added
//! falls back to the poll and says so.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_io::Timer;
use common::*;
use tls_reload_acceptor::{Detection, Materials, ReloadingAcceptor, Template};

/// Longer than any test: a reload within it came from an event.
const HOUR: Duration = Duration::from_secs(3600);

/// An acceptor over `materials` checking every `interval` (events on), its
/// reloader running, an echo server and its event log.
struct Served {
    acceptor: ReloadingAcceptor,
    events: EventLog,
    server: Server,
    _reloader: futures::future::RemoteHandle<()>,
}

async fn serve_events(materials: Materials, interval: Duration) -> anyhow::Result<Served> {
    serve_with(
        ReloadingAcceptor::builder(materials)
            .template(Template::new(provider()))
            .interval(interval),
    )
    .await
}

async fn serve_with(builder: tls_reload_acceptor::Builder) -> anyhow::Result<Served> {
    let acceptor = builder.build().await?;
    let events = EventLog::new(&acceptor);
    let server = serve::<Smol>(&acceptor, Serve::SpawnPerConnection)?;
    let reloader = spawn::<Smol, _>(acceptor.reloader());
    // The reloader arms its watches before its first wait.
    let armed = wait_until(DEADLINE, || async {
        acceptor.status().detection
            != Detection::PollOnly {
                reason: "no reloader is running".into(),
            }
    })
    .await;
    anyhow::ensure!(armed, "the reloader never started");
    Ok(Served {
        acceptor,
        events,
        server,
        _reloader: reloader,
    })
}

impl Served {
    /// Waits until `client` gets `serial` from a fresh handshake.
    async fn serving(
        &self,
        client: &Arc<rustls::ClientConfig>,
        serial: &str,
    ) -> anyhow::Result<()> {
        let ok = wait_until(DEADLINE, || async {
            fetch_serial(self.server.addr, client).await.ok().as_deref() == Some(serial)
        })
        .await;
        anyhow::ensure!(ok, "not serving {serial}: {:?}", self.acceptor.status());
        Ok(())
    }

    /// Waits until `client` completes a handshake (mTLS).
    async fn admits(&self, client: &Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
        let ok = wait_until(DEADLINE, || async {
            fetch_serial(self.server.addr, client).await.is_ok()
        })
        .await;
        anyhow::ensure!(ok, "client never admitted: {:?}", self.acceptor.status());
        Ok(())
    }
}

fn events_on(served: &Served) {
    let detection = served.acceptor.status().detection;
    assert!(detection.is_events(), "{detection}");
}

#[test]
fn every_way_of_renewing_a_pair_is_seen_by_events_alone() -> anyhow::Result<()> {
    Smol::block_on(async {
        let dir = tempfile::tempdir()?;
        let ca = Ca::new("events CA");
        let first = ca.leaf(0x8001);
        let materials = write_pair(dir.path(), &first);
        let served = serve_events(materials.clone(), HOUR).await?;
        events_on(&served);
        let client = client_config(&ca, None);
        served.serving(&client, &first.serial_hex()).await?;

        // An atomic rename of a new pair.
        let renamed = ca.leaf(0x8002);
        write_atomic(materials.key(), renamed.key_pem());
        write_atomic(materials.cert(), renamed.cert_pem());
        served.serving(&client, &renamed.serial_hex()).await?;

        // The certificate rewritten in place (same key).
        let in_place = ca.leaf_for_key(0x8003, &renamed.key_copy());
        write_in_place(materials.cert(), in_place.cert_pem());
        served.serving(&client, &in_place.serial_hex()).await?;

        // `cp -p` of a new certificate that kept the old mtime.
        let copied = ca.leaf_for_key(0x8004, &renamed.key_copy());
        let source = dir.path().join("new.crt");
        std::fs::write(&source, copied.cert_pem())?;
        run(
            "touch",
            &[
                "-r".as_ref(),
                materials.cert().as_os_str(),
                source.as_os_str(),
            ],
        )?;
        run(
            "cp",
            &[
                "-p".as_ref(),
                source.as_os_str(),
                materials.cert().as_os_str(),
            ],
        )?;
        served.serving(&client, &copied.serial_hex()).await?;

        assert_eq!(served.events.failures(), 0, "{:#?}", served.events.all());
        Ok(())
    })
}

#[test]
fn kubernetes_swaps_deletes_and_retargeted_links_are_seen_by_events_alone() -> anyhow::Result<()> {
    Smol::block_on(async {
        let root = tempfile::tempdir()?;
        let ca = Ca::new("volume CA");
        let client = client_config(&ca, None);
        let secret = root.path().join("secret");
        std::fs::create_dir(&secret)?;
        let mut volume = SecretVolume::new(&secret, &ca.leaf(0x8101));
        let served = serve_events(volume.materials(), HOUR).await?;
        events_on(&served);

        // The kubelet's `..data` swap.
        let swapped = ca.leaf(0x8102);
        volume.swap(&swapped);
        served.serving(&client, &swapped.serial_hex()).await?;

        // The whole secret directory deleted, then made again.
        std::fs::remove_dir_all(&secret)?;
        Timer::after(Duration::from_millis(50)).await;
        std::fs::create_dir(&secret)?;
        let recreated = ca.leaf(0x8103);
        let _volume = SecretVolume::new(&secret, &recreated);
        served.serving(&client, &recreated.serial_hex()).await?;

        // Another pair whose links are retargeted.
        let links = root.path().join("links");
        std::fs::create_dir(&links)?;
        let (a, b) = (ca.leaf(0x8104), ca.leaf(0x8105));
        write_leaf(&links, "a", &a);
        write_leaf(&links, "b", &b);
        symlink(Path::new("a.crt"), &links.join("tls.crt"));
        symlink(Path::new("a.key"), &links.join("tls.key"));
        let linked = serve_events(
            Materials::new(links.join("tls.crt"), links.join("tls.key")),
            HOUR,
        )
        .await?;
        linked.serving(&client, &a.serial_hex()).await?;
        retarget(&links.join("tls.key"), "b.key")?;
        retarget(&links.join("tls.crt"), "b.crt")?;
        linked.serving(&client, &b.serial_hex()).await?;
        Ok(())
    })
}

#[test]
fn client_ca_directories_added_to_or_recreated_are_seen_by_events_alone() -> anyhow::Result<()> {
    Smol::block_on(async {
        let dir = tempfile::tempdir()?;
        let server_ca = Ca::new("server CA");
        let pair = write_pair(dir.path(), &server_ca.leaf(0x8201));
        let cas = dir.path().join("cas");
        std::fs::create_dir(&cas)?;
        let (alice, bob, carol) = (Ca::new("alice CA"), Ca::new("bob CA"), Ca::new("carol CA"));
        write_new(&cas, "alice.pem", alice.pem());
        let served = serve_events(pair.with_client_ca_dir(&cas), HOUR).await?;
        events_on(&served);
        let client = |ca: &Ca, serial| client_config(&server_ca, Some(&ca.leaf(serial)));
        served.admits(&client(&alice, 0x8211)).await?;

        // A file added to the directory.
        write_new(&cas, "bob.pem", bob.pem());
        served.admits(&client(&bob, 0x8212)).await?;

        // The directory deleted, then made again with another CA.
        std::fs::remove_dir_all(&cas)?;
        Timer::after(Duration::from_millis(50)).await;
        std::fs::create_dir(&cas)?;
        write_new(&cas, "carol.pem", carol.pem());
        served.admits(&client(&carol, 0x8213)).await?;
        // A failure while the directory was gone is allowed; none since.
        let refused = fetch_serial(served.server.addr, &client(&alice, 0x8214)).await;
        assert!(refused.is_err(), "alice's CA is no longer trusted");
        Ok(())
    })
}

#[test]
fn an_unrelated_file_churning_beside_the_pair_causes_no_reload() -> anyhow::Result<()> {
    Smol::block_on(async {
        let dir = tempfile::tempdir()?;
        let ca = Ca::new("churn CA");
        let materials = write_pair(dir.path(), &ca.leaf(0x8301));
        let served = serve_events(materials, HOUR).await?;
        events_on(&served);
        let noise = dir.path().join("access.log");
        for i in 0..500 {
            std::fs::write(&noise, format!("line {i}\n"))?;
            if i % 50 == 0 {
                Timer::after(Duration::from_millis(1)).await;
            }
        }
        Timer::after(Duration::from_millis(200)).await;
        let status = served.acceptor.status();
        assert_eq!(status.generation, 1, "{status:?}");
        assert!(served.events.all().is_empty(), "{:#?}", served.events.all());
        Ok(())
    })
}

#[test]
fn a_watch_that_cannot_be_added_falls_back_to_the_poll_and_says_so() -> anyhow::Result<()> {
    Smol::block_on(async {
        let dir = tempfile::tempdir()?;
        let ca = Ca::new("fallback CA");
        let materials = write_pair(dir.path(), &ca.leaf(0x8401));
        let served = serve_with(
            ReloadingAcceptor::builder(materials.clone())
                .template(Template::new(provider()))
                .interval(Duration::from_millis(300))
                .fail_event_watches("No space left on device (injected)"),
        )
        .await?;
        let detection = served.acceptor.status().detection;
        let Detection::PollOnly { reason } = &detection else {
            panic!("{detection}");
        };
        assert!(
            reason.contains("No space left on device (injected)"),
            "{reason}"
        );
        assert!(
            reason.contains(&dir.path().display().to_string()),
            "names the directory: {reason}"
        );

        let next = ca.leaf(0x8402);
        write_atomic(materials.key(), next.key_pem());
        write_atomic(materials.cert(), next.cert_pem());
        served
            .serving(&client_config(&ca, None), &next.serial_hex())
            .await?;
        Ok(())
    })
}

#[test]
fn a_ca_bundle_rewritten_in_slow_chunks_is_never_applied_truncated() -> anyhow::Result<()> {
    Smol::block_on(async {
        let dir = tempfile::tempdir()?;
        let server_ca = Ca::new("server CA");
        let pair = write_pair(dir.path(), &server_ca.leaf(0x8501));
        let cas: Vec<Ca> = (0..6).map(|i| Ca::new(&format!("client CA {i}"))).collect();
        let bundle = |n: usize| cas[..n].iter().map(Ca::pem).collect::<String>();
        let ca_file = write_new(dir.path(), "clients.pem", bundle(5));
        let served = serve_events(pair.with_client_ca(&ca_file), HOUR).await?;
        events_on(&served);
        // A client of the last CA of the old bundle: refused if a bundle
        // cut short were ever applied.
        let last = client_config(&server_ca, Some(&cas[4].leaf(0x8511)));
        let newest = client_config(&server_ca, Some(&cas[5].leaf(0x8512)));
        served.admits(&last).await?;

        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let prober = {
            let (refused, stop, last, addr) = (
                refused.clone(),
                stop.clone(),
                last.clone(),
                served.server.addr,
            );
            spawn::<Smol, _>(async move {
                while !stop.load(Ordering::Relaxed) {
                    if fetch_serial(addr, &last).await.is_err() {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        rewrite_slowly(&ca_file, bundle(6).as_bytes()).await?;
        served.admits(&newest).await?;
        stop.store(true, Ordering::Relaxed);
        prober.await;
        assert_eq!(
            refused.load(Ordering::Relaxed),
            0,
            "a truncated bundle was served"
        );
        assert_eq!(served.events.failures(), 0, "{:#?}", served.events.all());
        Ok(())
    })
}

/// Truncates `path`, then writes `contents` in chunks of 300 bytes (cutting
/// PEM sections anywhere) with a pause after each, as a slow renewer does.
async fn rewrite_slowly(path: &PathBuf, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    for chunk in contents.chunks(300) {
        file.write_all(chunk)?;
        file.flush()?;
        Timer::after(Duration::from_millis(15)).await;
    }
    Ok(())
}

fn retarget(link: &Path, target: &str) -> std::io::Result<()> {
    let tmp = link.with_extension("tmp-link");
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(tmp, link)
}

fn run(program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let status = std::process::Command::new(program).args(args).status()?;
    anyhow::ensure!(status.success(), "{program} failed");
    Ok(())
}
