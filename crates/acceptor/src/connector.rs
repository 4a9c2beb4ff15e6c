//! The connector: the engine over a client config (outbound mTLS).

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tls_reload_build::{
    BuildError, ClientBuilt, ClientMaterials, ClientTemplate, LeafInfo, Resumption,
};
use tls_reload_detect::{Detector, Strategy};

use crate::acceptor::{default_options, default_settings, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::deadline::{timed_out, Deadline, Deadlines};
use crate::engine::reloader::{self, Lifeline, Options};
use crate::engine::{self, Driven, Engine, Happening, Kind, Reconfigure, Start, Subscribers};
use crate::source::DetectorSource;
use crate::start;
use crate::{
    CertKind, ConnectorEvent, ConnectorStatus, Events, ExpiryWindow, ReloadError, Reloader,
};

/// A TLS connector whose client identity (certificate chain and key) and
/// trusted server roots follow the files on disk: outbound mTLS that
/// survives certificate rotation.
///
/// A handshake that does not finish within the
/// [handshake timeout](ConnectorBuilder::handshake_timeout) (default 10 s)
/// fails with [`io::ErrorKind::TimedOut`]: a peer that takes the TCP
/// connection and never answers cannot hold a connect forever.
///
/// Shaped like futures-rustls's `TlsConnector`: a cheap [`Clone`] handle
/// whose [`connect`](ReloadingConnector::connect) wraps any
/// `futures::io::AsyncRead + AsyncWrite + Unpin` stream. Each connect loads
/// the current `Arc<ClientConfig>` once (an atomic load; no lock); a
/// reload stores the new config the moment it is built, so the next
/// connection presents the new identity and checks against the new roots,
/// while connections already open keep theirs.
///
/// The same engine as [`ReloadingAcceptor`](crate::ReloadingAcceptor)'s
/// drives it: the [`reloader`](ReloadingConnector::reloader) you spawn,
/// [`reload_now`](ReloadingConnector::reload_now), the same refusals (a key
/// that does not match, an expired identity, a roots file with no usable
/// root), and a failed reload keeps the last good config. When the
/// identity or the roots change, the client's session cache starts empty,
/// so no session made with the old identity, or verified under the old
/// roots, is resumed.
///
/// ```no_run
/// use std::net::TcpStream;
/// use smol::Async;
/// use tls_reload_acceptor::rustls::pki_types::ServerName;
/// use tls_reload_acceptor::{ClientMaterials, ReloadingConnector};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// smol::block_on(async {
///     let materials = ClientMaterials::new()
///         .with_identity("client.crt", "client.key")
///         .with_roots("ca.pem");
///     let connector = ReloadingConnector::builder(materials).build().await?;
///     smol::spawn(connector.reloader()).detach(); // ends when the connector is dropped
///     let tcp = Async::<TcpStream>::connect(([127, 0, 0, 1], 8443)).await?;
///     let name = ServerName::try_from("localhost")?;
///     let tls = connector.connect(name, tcp).await?; // the newest good identity and roots
///     # drop(tls);
///     Ok(())
/// })
/// # }
/// ```
#[derive(Clone)]
pub struct ReloadingConnector {
    shared: Arc<Shared>,
}

impl ReloadingConnector {
    /// Starts configuring a connector for these materials.
    pub fn builder(materials: ClientMaterials) -> ConnectorBuilder {
        ConnectorBuilder {
            materials,
            template: None,
            source: DetectorSource::Strategy(Strategy::default()),
            settings: default_settings(),
            options: default_options(),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }

    /// Starts a TLS handshake on `io` for `server_name`, with the newest
    /// good identity and roots.
    ///
    /// The handshake fails with [`io::ErrorKind::TimedOut`] after the
    /// [handshake timeout](ConnectorBuilder::handshake_timeout), and with
    /// [`io::ErrorKind::InvalidData`] on a TLS error.
    pub fn connect<IO>(&self, server_name: ServerName<'static>, io: IO) -> Connect<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let timeout = self.shared.deadlines.as_ref().and_then(Deadlines::start);
        Connect {
            timeout,
            handshake: start::connect(&self.shared.engine.serving().connector, server_name, io),
        }
    }

    /// The future that watches the files and reloads on a change. Spawn it
    /// on any executor; it ends when every handle to this connector is
    /// dropped. One runs per connector, as for an acceptor
    /// ([`ReloadingAcceptor::reloader`](crate::ReloadingAcceptor::reloader)).
    pub fn reloader(&self) -> Reloader {
        let shared = Arc::downgrade(&self.shared);
        let alive = self.shared.lifeline.watch();
        let options = self.shared.options.clone();
        Reloader::new(reloader::run(
            shared,
            Shared::driven,
            alive,
            options,
            "connector",
        ))
    }

    /// Reads and builds the materials now and applies the result, or
    /// returns why not. A background build that began before this call is
    /// never applied after it.
    pub async fn reload_now(&self) -> Result<ConnectorReloaded, ReloadError> {
        self.reload(None).await
    }

    /// Switches to other material paths, building them first: on error,
    /// nothing changes and the error is returned. The reloader watches the
    /// new paths from then on.
    pub async fn set_materials(
        &self,
        materials: ClientMaterials,
    ) -> Result<ConnectorReloaded, ReloadError> {
        self.reload(Some(Reconfigure::Materials(materials))).await
    }

    /// Switches to another template, building it first: on error, nothing
    /// changes.
    pub async fn set_template(
        &self,
        template: ClientTemplate,
    ) -> Result<ConnectorReloaded, ReloadError> {
        self.reload(Some(Reconfigure::Template(template))).await
    }

    async fn reload(
        &self,
        change: Option<Reconfigure<ClientKind>>,
    ) -> Result<ConnectorReloaded, ReloadError> {
        let applied = self.shared.engine.reload(change).await?;
        Ok(ConnectorReloaded {
            generation: applied.generation,
            identity: applied.built.identity().cloned(),
            resumption: applied.built.resumption(),
        })
    }

    /// The config new connections get now.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.shared.engine.serving().config.clone()
    }

    /// The build now in use, with its identity and roots.
    pub fn current(&self) -> Arc<ClientBuilt> {
        self.shared.engine.current()
    }

    /// A snapshot of the reload state.
    pub fn status(&self) -> ConnectorStatus {
        let snapshot = self.shared.engine.snapshot();
        let current = &snapshot.current;
        ConnectorStatus {
            generation: snapshot.generation,
            applied_at: snapshot.applied_at,
            last_reload_at: snapshot.last_reload_at,
            reloads_applied: snapshot.reloads_applied,
            reloads_failed: snapshot.reloads_failed,
            last_error_at: snapshot.last_error.as_ref().map(|(_, at)| *at),
            last_error: snapshot.last_error.map(|(message, _)| message),
            identity: current.identity().cloned(),
            roots: current.roots().to_vec(),
            materials: snapshot.materials,
            files: current.files().to_vec(),
            detection: snapshot.detection,
        }
    }

    /// Subscribes to what the reloader does from now on.
    pub fn events(&self) -> Events<ConnectorEvent> {
        Events {
            inner: Box::pin(self.shared.engine.subscribers().subscribe()),
        }
    }
}

impl fmt::Debug for ReloadingConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Copied out first: a user detector's `Debug` never runs under the lock.
        let snapshot = self.shared.engine.snapshot();
        f.debug_struct("ReloadingConnector")
            .field("materials", &snapshot.materials)
            .field("detector", &snapshot.source)
            .field("generation", &snapshot.generation)
            .field(
                "identity",
                &snapshot.current.identity().map(LeafInfo::serial_hex),
            )
            .field("interval", &self.shared.options.interval)
            .finish_non_exhaustive()
    }
}

/// A connector reload that was applied.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectorReloaded {
    /// The generation now in use.
    pub generation: u64,
    /// The identity now presented, if any.
    pub identity: Option<LeafInfo>,
    /// Whether sessions from before the reload still resume.
    pub resumption: Resumption,
}

/// The future of a TLS handshake, from [`ReloadingConnector::connect`]:
/// the client's TLS stream, or why not.
#[must_use = "futures do nothing unless polled"]
pub struct Connect<IO> {
    handshake: futures_rustls::Connect<IO>,
    timeout: Option<Deadline>,
}

impl<IO> Future for Connect<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    type Output = io::Result<TlsStream<IO>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(result) = Pin::new(&mut self.handshake).poll(cx) {
            return Poll::Ready(result);
        }
        timed_out(&mut self.timeout, cx).map(Err)
    }
}

impl<IO> fmt::Debug for Connect<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect").finish_non_exhaustive()
    }
}

/// Configures a [`ReloadingConnector`]; [`build`](ConnectorBuilder::build)
/// loads the first config.
#[must_use = "a builder does nothing until built"]
pub struct ConnectorBuilder {
    materials: ClientMaterials,
    template: Option<ClientTemplate>,
    source: DetectorSource<ClientMaterials>,
    settings: engine::Settings,
    options: Options,
    handshake_timeout: Option<Duration>,
}

impl ConnectorBuilder {
    /// Everything but the files: crypto provider, protocol versions, ALPN,
    /// the root store used when the materials name no roots. Default:
    /// [`ClientTemplate::from_default_provider`], which has no root store,
    /// so the materials must then name roots.
    pub fn template(mut self, template: ClientTemplate) -> Self {
        self.template = Some(template);
        self
    }

    /// How often the reloader checks the files. Default 1 s; at least 1 ms.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.options.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long a handshake may take before it fails with
    /// [`io::ErrorKind::TimedOut`]; `None` for no limit. Default 10 s
    /// ([`DEFAULT_HANDSHAKE_TIMEOUT`](crate::DEFAULT_HANDSHAKE_TIMEOUT)).
    /// The deadline passes between the timeout and the timeout plus a
    /// thirty-second of it (at most 250 ms), plus however late the reactor
    /// runs its timers: handshakes share timers.
    pub fn handshake_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.handshake_timeout = timeout.into();
        self
    }

    /// Whether file-system events wake a check at once, with the interval
    /// as the backstop. Default on.
    pub fn events(mut self, on: bool) -> Self {
        self.options.events = on;
        self
    }

    /// When the identity or a root is reported as expiring soon. Default:
    /// the last third of the certificate's lifetime.
    pub fn expiry_warning(mut self, window: ExpiryWindow) -> Self {
        self.settings.expiry_window = window;
        self
    }

    /// How often files that failed to build are rebuilt while they stay
    /// unchanged. Default 30 s.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.settings.retry_interval = interval;
        self
    }

    /// Watches the material paths with a built-in strategy. Default
    /// [`Strategy::Combined`].
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.source = DetectorSource::Strategy(strategy);
        self
    }

    /// Uses this detector whatever the paths.
    pub fn detector(mut self, detector: impl Detector + 'static) -> Self {
        self.source = DetectorSource::Fixed(Arc::new(detector));
        self
    }

    /// Makes the detector from the materials, anew when they change.
    pub fn detector_with(
        mut self,
        factory: impl Fn(&ClientMaterials) -> Box<dyn Detector> + Send + Sync + 'static,
    ) -> Self {
        self.source = DetectorSource::Factory(Arc::new(factory));
        self
    }

    /// Builds the first config on the blocking pool: a failure names the
    /// file and the reason.
    pub async fn build(self) -> Result<ReloadingConnector, BuildError> {
        let deadlines = self.handshake_timeout.map(Deadlines::new);
        let (start, options) = self.into_start()?;
        let engine = Engine::start(start).await?;
        Ok(ReloadingConnector {
            shared: Shared::new(engine, options, deadlines),
        })
    }

    /// Builds the first config on the current thread.
    pub fn build_blocking(self) -> Result<ReloadingConnector, BuildError> {
        let deadlines = self.handshake_timeout.map(Deadlines::new);
        let (start, options) = self.into_start()?;
        let engine = Engine::start_blocking(start)?;
        Ok(ReloadingConnector {
            shared: Shared::new(engine, options, deadlines),
        })
    }

    fn into_start(self) -> Result<(Start<ClientKind>, Options), BuildError> {
        let template = match self.template {
            Some(template) => template,
            None => ClientTemplate::from_default_provider()?,
        };
        let start = Start {
            kind: ClientKind,
            materials: self.materials,
            template,
            source: self.source,
            settings: self.settings,
            subscribers: Subscribers::new(),
        };
        Ok((start, self.options))
    }
}

impl fmt::Debug for ConnectorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorBuilder")
            .field("materials", &self.materials)
            .field("detector", &self.source)
            .field("interval", &self.options.interval)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// The connector's kind: a client config from an optional identity and
/// the trusted roots ([`tls_reload_build::build_client_blocking`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClientKind;

/// What new connections start from: the config, and futures-rustls's
/// connector over it, so that a connect clones the config's `Arc` once, as
/// futures-rustls alone does.
pub(crate) struct Connecting {
    config: Arc<ClientConfig>,
    connector: futures_rustls::TlsConnector,
}

impl Kind for ClientKind {
    type Materials = ClientMaterials;
    type Template = ClientTemplate;
    type Built = ClientBuilt;
    type Served = Connecting;
    type Event = ConnectorEvent;

    fn build(
        &self,
        materials: &ClientMaterials,
        template: &ClientTemplate,
        previous: Option<&ClientBuilt>,
    ) -> Result<ClientBuilt, BuildError> {
        tls_reload_build::build_client_blocking(materials, template, previous)
    }

    fn served(&self, built: &ClientBuilt) -> Arc<Connecting> {
        let config = built.config().clone();
        Arc::new(Connecting {
            connector: futures_rustls::TlsConnector::from(config.clone()),
            config,
        })
    }

    fn paths(&self, materials: &ClientMaterials) -> Vec<PathBuf> {
        materials.paths()
    }

    fn file_size_limit(&self, template: &ClientTemplate) -> u64 {
        template.file_size_limit()
    }

    fn leaf<'a>(&self, built: &'a ClientBuilt) -> Option<&'a LeafInfo> {
        built.identity()
    }

    fn resumption(&self, built: &ClientBuilt) -> Resumption {
        built.resumption()
    }

    fn expiring(&self, built: &ClientBuilt) -> Vec<(CertKind, LeafInfo)> {
        built
            .identity()
            .map(|leaf| (CertKind::Leaf, leaf.clone()))
            .into_iter()
            .chain(
                built
                    .roots()
                    .iter()
                    .map(|root| (CertKind::Root, root.certificate())),
            )
            .collect()
    }

    fn event(&self, happening: Happening<'_, ClientBuilt>) -> ConnectorEvent {
        match happening {
            Happening::Detected { paths } => ConnectorEvent::Detected { paths },
            Happening::Built { built } => ConnectorEvent::Built {
                identity: built.identity().cloned(),
                resumption: built.resumption(),
            },
            Happening::Applied {
                generation,
                built,
                manual,
            } => ConnectorEvent::Applied {
                generation,
                identity: built.identity().cloned(),
                manual,
            },
            Happening::Failed { error } => ConnectorEvent::Failed { error },
            Happening::Skipped { reason } => ConnectorEvent::Skipped { reason },
            Happening::ExpiresSoon { kind, certificate } => {
                ConnectorEvent::ExpiresSoon { kind, certificate }
            }
            Happening::Expired { kind, certificate } => {
                ConnectorEvent::Expired { kind, certificate }
            }
        }
    }
}

/// The state behind every connector handle.
struct Shared {
    engine: Engine<ClientKind>,
    options: Options,
    lifeline: Lifeline,
    /// Handshake deadlines, when handshakes have a timeout.
    deadlines: Option<Deadlines>,
}

impl Shared {
    fn new(
        engine: Engine<ClientKind>,
        options: Options,
        deadlines: Option<Deadlines>,
    ) -> Arc<Self> {
        Arc::new(Self {
            engine,
            options,
            lifeline: Lifeline::new(),
            deadlines,
        })
    }

    fn driven(&self) -> &dyn Driven {
        &self.engine
    }
}
