//! Acceptor test support on top of `tls-reload-testkit` (re-exported here,
//! so `use common::*` brings both): echo servers around a
//! `ReloadingAcceptor`, its events as a log, a detector that counts the
//! reloader's checks, and the usual acceptor setup ([`Fixture`]).
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{self, RemoteHandle};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::stream::StreamExt;
use futures::FutureExt;
use rustls::ClientConfig;
use tls_reload_acceptor::{
    Builder, Detector, Events, Materials, ReloadEvent, ReloadingAcceptor, Strategy, Template,
    TestDetector,
};
use tls_reload_detect::Composite;
pub use tls_reload_testkit::*;

/// [`tls_reload_testkit::on_both_runtimes!`], callable as
/// `on_both_runtimes!` from every test file that has `mod common;`.
#[macro_export]
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {
        tls_reload_testkit::on_both_runtimes!($($name),*);
    };
}

// ---------------------------------------------------------------------------
// Servers around a ReloadingAcceptor

/// How a test server runs its handshakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// A task per accepted connection, each calling `accept`.
    SpawnPerConnection,
    /// One `ReloadingAcceptor::incoming` stream.
    Incoming,
    /// One `incoming` stream whose handshakes run as tasks of their own
    /// (`Incoming::spawn_handshakes`).
    SpawnedHandshakes,
}

/// An echo server; dropping it stops accepting (open connections go on).
pub struct Server {
    pub addr: SocketAddr,
    _accept_loop: RemoteHandle<()>,
}

/// Starts an echo server on `R` with `acceptor`, serving as `mode` says.
pub fn serve<R: Runtime>(acceptor: &ReloadingAcceptor, mode: Serve) -> io::Result<Server> {
    let (addr, mut connections) = listen::<R>()?;
    let acceptor = acceptor.clone();
    let accept_loop = async move {
        match mode {
            Serve::SpawnPerConnection => {
                while let Some(tcp) = connections.next().await {
                    let Ok(tcp) = tcp else { continue };
                    let acceptor = acceptor.clone();
                    spawn::<R, _>(async move {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            echo(tls).await;
                        }
                    })
                    .forget();
                }
            }
            Serve::Incoming | Serve::SpawnedHandshakes => {
                let mut incoming = acceptor.incoming(connections);
                if mode == Serve::SpawnedHandshakes {
                    incoming = incoming.spawn_handshakes(|task| R::spawn_detached(Box::pin(task)));
                }
                while let Some(tls) = incoming.next().await {
                    let Ok(tls) = tls else { continue };
                    spawn::<R, _>(echo(tls)).forget();
                }
            }
        }
    };
    Ok(Server {
        addr,
        _accept_loop: spawn::<R, _>(accept_loop),
    })
}

/// Echoes what it reads until EOF or an error.
pub async fn echo(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The events of an acceptor, drained on demand into a log.
pub struct EventLog {
    events: Mutex<Events>,
    seen: Mutex<Vec<ReloadEvent>>,
}

impl EventLog {
    pub fn new(acceptor: &ReloadingAcceptor) -> Self {
        Self {
            events: Mutex::new(acceptor.events()),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Every event so far, in order.
    pub fn all(&self) -> Vec<ReloadEvent> {
        let mut events = self.events.lock().expect("events");
        let mut seen = self.seen.lock().expect("seen");
        while let Some(Some(event)) = events.next().now_or_never() {
            seen.push(event);
        }
        seen.clone()
    }

    /// How many events so far match.
    pub fn count(&self, matches: impl Fn(&ReloadEvent) -> bool) -> usize {
        self.all().iter().filter(|e| matches(e)).count()
    }

    pub fn failures(&self) -> usize {
        self.count(|e| matches!(e, ReloadEvent::Failed { .. }))
    }

    pub fn applied(&self) -> usize {
        self.count(|e| matches!(e, ReloadEvent::Applied { .. }))
    }
}

/// A detector factory for `Builder::detector_with`: the real combined
/// strategy over the material paths, plus `ticks`, which never changes but
/// counts the checks, so a test can wait for a number of reloader ticks.
pub fn combined_counting(
    ticks: &TestDetector,
) -> impl Fn(&Materials) -> Box<dyn Detector> + Send + Sync + 'static {
    let ticks = ticks.clone();
    move |materials| {
        let mut detector = Composite::from_paths(Strategy::Combined, materials.paths());
        detector.push("<tick counter>", ticks.clone());
        Box::new(detector)
    }
}

/// Waits until `ticks` has seen `n` more checks than now.
pub async fn wait_ticks(ticks: &TestDetector, n: u64) -> bool {
    let target = ticks.checks() + n;
    wait_until(DEADLINE, || future::ready(ticks.checks() >= target)).await
}

// ---------------------------------------------------------------------------
// The usual acceptor test setup

/// The reloader interval in tests: short, so reloads land fast.
pub const INTERVAL: Duration = Duration::from_millis(20);

/// A builder for `materials` with the *ring* provider, [`INTERVAL`], and the
/// combined detector counting its checks on `ticks`.
pub fn builder(materials: Materials, ticks: &TestDetector) -> Builder {
    ReloadingAcceptor::builder(materials)
        .template(Template::new(provider()))
        .interval(INTERVAL)
        .detector_with(combined_counting(ticks))
}

/// A temp dir holding `tls.crt` and `tls.key` for a first leaf, an acceptor
/// over them with its reloader running on `R`, an echo server, and a client
/// trusting the CA.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub first: Leaf,
    pub materials: Materials,
    pub ticks: TestDetector,
    pub acceptor: ReloadingAcceptor,
    pub events: EventLog,
    pub server: Server,
    pub client: Arc<ClientConfig>,
    pub reloader: RemoteHandle<()>,
}

impl Fixture {
    /// Serves leaf serial `0x1001`, handshakes run as `mode` says.
    pub async fn start<R: Runtime>(mode: Serve) -> anyhow::Result<Self> {
        Self::start_with::<R>(mode, |builder| builder).await
    }

    /// As [`start`](Fixture::start), with `configure` applied to the builder.
    pub async fn start_with<R: Runtime>(
        mode: Serve,
        configure: impl FnOnce(Builder) -> Builder,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = Ca::new("test server CA");
        let first = ca.leaf(0x1001);
        let materials = write_pair(dir.path(), &first);
        let ticks = TestDetector::new();
        let acceptor = configure(builder(materials.clone(), &ticks))
            .build()
            .await?;
        let events = EventLog::new(&acceptor);
        let server = serve::<R>(&acceptor, mode)?;
        let reloader = spawn::<R, _>(acceptor.reloader());
        let client = client_config(&ca, None);
        Ok(Self {
            dir,
            ca,
            first,
            materials,
            ticks,
            acceptor,
            events,
            server,
            client,
            reloader,
        })
    }

    pub fn cert(&self) -> &Path {
        self.materials.cert()
    }

    pub fn key(&self) -> &Path {
        self.materials.key()
    }

    /// The serial a fresh handshake (with an echo round trip) gets.
    pub async fn served(&self) -> io::Result<String> {
        fetch_serial(self.server.addr, &self.client).await
    }

    /// Waits until fresh handshakes get `leaf`'s serial.
    pub async fn wait_serving(&self, leaf: &Leaf) -> anyhow::Result<()> {
        let want = leaf.serial_hex();
        let ok = wait_until(DEADLINE, || async {
            self.served().await.ok().as_deref() == Some(want.as_str())
        })
        .await;
        anyhow::ensure!(
            ok,
            "still not serving {want} after {DEADLINE:?}: serving {:?}, status {:?}",
            self.served().await,
            self.acceptor.status()
        );
        Ok(())
    }

    /// Waits for `n` more reloader checks.
    pub async fn wait_ticks(&self, n: u64) -> anyhow::Result<()> {
        anyhow::ensure!(
            wait_ticks(&self.ticks, n).await,
            "the reloader stopped ticking"
        );
        Ok(())
    }
}
