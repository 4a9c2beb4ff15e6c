use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future;
use futures::io::{AsyncRead, AsyncWrite};
use futures::{FutureExt, Stream};
use futures_rustls::server::TlsStream;
use rustls::ServerConfig;
use tls_reload_build::{BuildError, Built, LeafInfo, Materials, Resumption, Template};
use tls_reload_detect::{Detector, Strategy};

use crate::deadline::{timed_out, Deadline, Deadlines};
use crate::engine::{self, reloader, Reconfigure, Start, Subscribers};
use crate::named::{NamedStart, PairSources};
use crate::server::{ServerKind, Shared};
use crate::source::DetectorSource;
use crate::{Events, ExpiryWindow, Incoming, PairFiles, ReloadError, SniResolver, Status};

/// How often the reloader checks the files unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a TLS handshake may take unless told otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often files that failed to build are rebuilt while they stay the
/// same (a certificate that is not yet valid becomes valid with time).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// A TLS acceptor whose certificate, key and trusted client CAs follow the
/// files on disk.
///
/// Shaped like futures-rustls's `TlsAcceptor`: a cheap [`Clone`] handle whose
/// [`accept`](ReloadingAcceptor::accept) wraps any
/// `futures::io::AsyncRead + AsyncWrite + Unpin` stream. Each accept loads
/// the current `Arc<ServerConfig>` once (an atomic load; no lock) and hands
/// it to futures-rustls; a reload stores the new config the moment it is
/// built, so the next accept gets it and open connections keep theirs.
///
/// Reloads come from the [`reloader`](ReloadingAcceptor::reloader), a future
/// you spawn on any executor, or from
/// [`reload_now`](ReloadingAcceptor::reload_now). A failed reload keeps the
/// last good config.
#[derive(Clone)]
pub struct ReloadingAcceptor {
    shared: Arc<Shared>,
}

impl ReloadingAcceptor {
    /// Starts configuring an acceptor for these materials.
    pub fn builder(materials: Materials) -> Builder {
        Builder {
            materials,
            template: None,
            source: DetectorSource::Strategy(Strategy::default()),
            settings: default_settings(),
            options: default_options(),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            pairs: PairSources::default(),
        }
    }

    /// Starts configuring an acceptor with no default pair: every
    /// certificate is a named pair, given by
    /// [`cert_dir`](Builder::cert_dir) or [`pair`](Builder::pair) (at least
    /// one must build at start-up). Client CAs and CRLs may be set as
    /// usual. A client that sends no SNI, or a name no pair claims, is
    /// refused with the `unrecognized_name` alert and counted in
    /// [`Status::unrecognized_names`]; to tell, the accept path reads the
    /// ClientHello before it hands the connection to rustls (only in this
    /// mode).
    pub fn without_default_pair() -> Builder {
        Self::builder(Materials::without_identity())
    }

    /// Starts configuring an acceptor for a certificate chain and a private
    /// key in PEM files.
    pub fn from_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Builder {
        Self::builder(Materials::new(cert, key))
    }

    /// Starts a TLS handshake on `io` with the newest good config.
    ///
    /// The handshake fails with [`io::ErrorKind::TimedOut`] after the
    /// [handshake timeout](Builder::handshake_timeout), and with
    /// [`io::ErrorKind::InvalidData`] on a TLS error.
    ///
    /// Until the client's first bytes come, the handshake holds the stream,
    /// the config and its deadline, and nothing of rustls: the connection
    /// (some 6,000 instructions to make, three allocations, a 4 KiB buffer
    /// zeroed) is made when there is something to give it. A connection
    /// that never speaks, such as a TCP health check, costs no allocation
    /// (with the default handshake timeout, none beyond a shared timer's
    /// every few hundred milliseconds). From its first bytes on, the
    /// handshake is futures-rustls's, with its errors and alerts.
    pub fn accept<IO>(&self, io: IO) -> Accept<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let timeout = self.shared.deadlines.as_ref().and_then(Deadlines::start);
        if let Some(table) = self.shared.refuses_unknown_names() {
            return self.hello(io, table, timeout);
        }
        Accept {
            timeout,
            handshake: Handshake::Waiting(Waiting {
                io: Some(io),
                then: Then::Direct(self.shared.engine.serving().acceptor.clone()),
            }),
        }
    }

    /// Named pairs and no default pair: the ClientHello is read first.
    #[cold]
    #[inline(never)]
    fn hello<IO>(&self, io: IO, table: &Arc<SniResolver>, timeout: Option<Deadline>) -> Accept<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        Accept {
            handshake: Handshake::Waiting(Waiting {
                io: Some(io),
                then: Then::Hello(self.shared.engine.serving().config.clone(), table.clone()),
            }),
            timeout,
        }
    }

    /// Wraps a stream of incoming connections into a stream of TLS streams,
    /// with the handshakes running concurrently, each bounded by the
    /// handshake timeout. See [`Incoming`].
    pub fn incoming<S, IO>(&self, connections: S) -> Incoming<S, IO>
    where
        S: Stream<Item = io::Result<IO>> + Unpin,
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        Incoming::new(self.clone(), connections)
    }

    /// The future that watches the files and reloads on a change. Spawn it
    /// on any executor; it ends when every handle to this acceptor is
    /// dropped.
    ///
    /// One reloader runs per acceptor: one spawned while another runs ends
    /// at once, with a warning (two would only check the same files twice).
    /// Once the running one is dropped, a new one may take its place.
    ///
    /// Every [interval](Builder::interval) it asks the detector; on a change
    /// it builds the new config on the blocking pool and applies it. The
    /// fingerprint of the files is committed only once their config is
    /// applied, so a failed build is retried as soon as anything moves.
    pub fn reloader(&self) -> Reloader {
        let shared = Arc::downgrade(&self.shared);
        let alive = self.shared.lifeline.watch();
        let options = self.shared.options.clone();
        Reloader::new(reloader::run(
            shared,
            Shared::driven,
            alive,
            options,
            "acceptor",
        ))
    }

    /// Reads and builds the materials now and applies the result, or returns
    /// why not (like Valkey's `CONFIG SET`). A background build that began
    /// before this call is never applied after it.
    ///
    /// With named pairs ([`Builder::cert_dir`], [`Builder::pair`]), every
    /// served pair is rebuilt from its files too, after the default pair;
    /// the result is the default pair's, and a pair that fails keeps its
    /// last good version and reports the failure in its events and in
    /// [`Status::pairs`](crate::Status::pairs). Pairs that appeared in a
    /// directory, or whose files are gone, are added or dropped by the
    /// reloader's next check.
    pub async fn reload_now(&self) -> Result<Reloaded, ReloadError> {
        let result = self.reload(None).await;
        if let Some(named) = &self.shared.named {
            named.reload_pairs().await;
        }
        result
    }

    /// Switches to other material paths, building them first: on error,
    /// nothing changes and the error is returned. The reloader watches the
    /// new paths from then on.
    pub async fn set_materials(&self, materials: Materials) -> Result<Reloaded, ReloadError> {
        self.reload(Some(Reconfigure::Materials(materials))).await
    }

    /// Switches to another template (provider, protocol versions, ALPN,
    /// client auth), building it first: on error, nothing changes.
    pub async fn set_template(&self, template: Template) -> Result<Reloaded, ReloadError> {
        self.reload(Some(Reconfigure::Template(template))).await
    }

    async fn reload(
        &self,
        change: Option<Reconfigure<ServerKind>>,
    ) -> Result<Reloaded, ReloadError> {
        let applied = self.shared.engine.reload(change).await?;
        let built = &applied.built;
        Ok(Reloaded {
            generation: applied.generation,
            leaf: built.leaf().clone(),
            resumption: built.resumption(),
        })
    }

    /// The config new handshakes get now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.shared.config()
    }

    /// The build now served, with its leaf certificate's details.
    pub fn current(&self) -> Arc<Built> {
        self.shared.engine.current()
    }

    /// A snapshot of the reload state.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// Subscribes to what the reloader does from now on.
    pub fn events(&self) -> Events {
        Events {
            inner: Box::pin(self.shared.engine.subscribers().subscribe()),
        }
    }
}

impl fmt::Debug for ReloadingAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

/// Configures a [`ReloadingAcceptor`]; [`build`](Builder::build) loads the
/// first config.
#[must_use = "a builder does nothing until built"]
pub struct Builder {
    materials: Materials,
    template: Option<Template>,
    source: DetectorSource<Materials>,
    settings: engine::Settings,
    options: reloader::Options,
    handshake_timeout: Option<Duration>,
    pairs: PairSources,
}

impl Builder {
    /// Serves the pairs of this directory by SNI, besides the default pair
    /// (the materials): `STEM.crt` with `STEM.key`, or `STEM.pem` holding
    /// the chain and the key; other files are ignored. May be given
    /// several times.
    ///
    /// Each pair answers for the DNS names of its certificate (not its file
    /// name) and reloads on its own: a change to one rebuilds that one, a
    /// broken one keeps its last good version while the others update. A
    /// pair that appears is served once it builds; a pair whose files are
    /// gone is dropped once that is confirmed (after the
    /// [interval](Builder::interval), at least a second), so a pair between
    /// the two renames of an update never flaps. A client asking for no
    /// name, or a name no pair claims, gets the default pair. Session
    /// resumption is kept across any pair's reload and reset when the
    /// trust (client CAs, CRLs) changes, as for the default pair. See
    /// [`SniResolver`](crate::SniResolver) for the resolution rules.
    ///
    /// At start-up a directory that cannot be listed is an error; a pair
    /// that does not build is reported (tracing, [`Status::pairs`]) and the
    /// others are served.
    pub fn cert_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pairs.dirs.push(dir.into());
        self
    }

    /// Serves this named pair by SNI, besides the default pair; it reloads
    /// on its own and is never dropped. See [`cert_dir`](Builder::cert_dir).
    pub fn pair(mut self, pair: PairFiles) -> Self {
        self.pairs.pairs.push(pair);
        self
    }

    /// Requires client certificates signed by a CA in this PEM bundle (every
    /// certificate in it is trusted). Combine with
    /// [`client_ca_dir`](Builder::client_ca_dir) if you like.
    pub fn client_ca(mut self, file: impl Into<PathBuf>) -> Self {
        self.materials = self.materials.with_client_ca(file);
        self
    }

    /// Requires client certificates signed by a CA in one of this directory's
    /// files.
    pub fn client_ca_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.materials = self.materials.with_client_ca_dir(dir);
        self
    }

    /// Refuses client certificates revoked by a CRL of this PEM file (one or
    /// more `X509 CRL` sections); may be given several times. See
    /// [`Materials::with_crl`]: each CRL must be signed by a client CA, and
    /// one that is not, or does not parse, fails the reload.
    pub fn crl(mut self, file: impl Into<PathBuf>) -> Self {
        self.materials = self.materials.with_crl(file);
        self
    }

    /// Decrypts an encrypted PKCS#8 key with the passphrase in this file,
    /// read at every reload. See [`Materials::with_key_passphrase_file`].
    pub fn key_passphrase_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.materials = self.materials.with_key_passphrase_file(file);
        self
    }

    /// Everything but the files: crypto provider, protocol versions, ALPN,
    /// client auth mode. Default: [`Template::from_default_provider`].
    pub fn template(mut self, template: Template) -> Self {
        self.template = Some(template);
        self
    }

    /// How often the reloader checks the files. Default 1 s; at least 1 ms.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.options.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Whether file-system events (inotify on Linux) wake a check at once,
    /// with the [interval](Builder::interval) as the backstop. Default on.
    /// Off, or where events are unavailable, the files are checked at the
    /// interval only; [`Status::detection`](crate::Status::detection) says
    /// which and why.
    pub fn events(mut self, on: bool) -> Self {
        self.options.events = on;
        self
    }

    /// When a served certificate (the leaf, or a client CA) is reported as
    /// expiring soon: a [`ReloadEvent::ExpiresSoon`](crate::ReloadEvent::ExpiresSoon)
    /// and a warning, once per certificate per crossing; past its
    /// not-after while still served, a `ReloadEvent::Expired` and an error,
    /// then at most hourly. Checked by the reloader at every interval,
    /// whether or not a file changed. Default: the last third of the
    /// certificate's lifetime.
    pub fn expiry_warning(mut self, window: ExpiryWindow) -> Self {
        self.settings.expiry_window = window;
        self
    }

    /// Makes every event watch fail to be added with `reason`, to test the
    /// fall back to polling (feature `test-util`).
    #[cfg(feature = "test-util")]
    pub fn fail_event_watches(mut self, reason: impl Into<String>) -> Self {
        self.options.event_failure = Some(reason.into());
        self
    }

    /// How often files that failed to build are rebuilt while they stay
    /// unchanged. Default 30 s.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.settings.retry_interval = interval;
        self
    }

    /// Bounds every handshake; `None` lets a handshake wait forever.
    /// Default 10 s.
    ///
    /// A handshake times out after at least this long and at most a
    /// thirty-second of it more (never more than 250 ms more), plus however
    /// late the reactor runs its timers: handshakes starting close together
    /// share one timer, so a busy server does not wake the timer thread for
    /// every connection, and starting one reads no clock.
    pub fn handshake_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.handshake_timeout = timeout.into();
        self
    }

    /// Watches the material paths with a built-in strategy. Default
    /// [`Strategy::Combined`].
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.source = DetectorSource::Strategy(strategy);
        self
    }

    /// Uses this detector whatever the paths (the `test-util` feature's
    /// `TestDetector` makes reloads deterministic in tests).
    pub fn detector(mut self, detector: impl Detector + 'static) -> Self {
        self.source = DetectorSource::Fixed(Arc::new(detector));
        self
    }

    /// Makes the detector from the materials, anew when they change.
    pub fn detector_with(
        mut self,
        factory: impl Fn(&Materials) -> Box<dyn Detector> + Send + Sync + 'static,
    ) -> Self {
        self.source = DetectorSource::Factory(Arc::new(factory));
        self
    }

    /// Awaits `hook` after every successful background build, before the
    /// result lands. A test hook (feature `test-util`): it lets a test hold
    /// a build in flight while a manual reload overtakes it.
    #[cfg(feature = "test-util")]
    pub fn before_background_apply<F>(
        mut self,
        hook: impl Fn() -> F + Send + Sync + 'static,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.settings.before_background_apply = Some(Arc::new(move || hook().boxed()));
        self
    }

    /// Builds the first config on the blocking pool: a failure names the file
    /// and the reason.
    pub async fn build(self) -> Result<ReloadingAcceptor, BuildError> {
        let (start, named, options, deadlines) = self.into_start()?;
        Ok(ReloadingAcceptor {
            shared: Shared::start(start, named, options, deadlines).await?,
        })
    }

    /// Builds the first config on the current thread.
    pub fn build_blocking(self) -> Result<ReloadingAcceptor, BuildError> {
        let (start, named, options, deadlines) = self.into_start()?;
        Ok(ReloadingAcceptor {
            shared: Shared::start_blocking(start, named, options, deadlines)?,
        })
    }

    #[allow(clippy::type_complexity)]
    fn into_start(
        self,
    ) -> Result<
        (
            Start<ServerKind>,
            Option<NamedStart>,
            reloader::Options,
            Option<Deadlines>,
        ),
        BuildError,
    > {
        let template = match self.template {
            Some(template) => template,
            None => Template::from_default_provider()?,
        };
        let subscribers = Subscribers::new();
        let named = (!self.pairs.is_empty()).then(|| NamedStart {
            table: Arc::new(SniResolver::new()),
            sources: self.pairs,
            template: template.clone(),
            strategy: match &self.source {
                DetectorSource::Strategy(strategy) => *strategy,
                _ => Strategy::default(),
            },
            settings: self.settings.clone(),
            subscribers: subscribers.clone(),
            interval: self.options.interval,
            require_pairs: !self.materials.has_identity(),
        });
        if named.is_none() && !self.materials.has_identity() {
            return Err(BuildError::NoPairs {
                dirs: Vec::new(),
                first_error: None,
            });
        }
        let start = Start {
            kind: ServerKind {
                sni: named.as_ref().map(|named| named.table.clone()),
            },
            materials: self.materials,
            template,
            source: self.source,
            settings: self.settings,
            subscribers,
        };
        let deadlines = self.handshake_timeout.map(Deadlines::new);
        Ok((start, named, self.options, deadlines))
    }
}

/// The engine settings every handle starts from.
pub(crate) fn default_settings() -> engine::Settings {
    engine::Settings {
        retry_interval: DEFAULT_RETRY_INTERVAL,
        expiry_window: ExpiryWindow::default(),
        #[cfg(feature = "test-util")]
        before_background_apply: None,
    }
}

/// The reloader options every handle starts from.
pub(crate) fn default_options() -> reloader::Options {
    reloader::Options {
        interval: DEFAULT_INTERVAL,
        events: true,
        #[cfg(feature = "test-util")]
        event_failure: None,
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("materials", &self.materials)
            .field("detector", &self.source)
            .field("interval", &self.options.interval)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("pairs", &self.pairs)
            .finish_non_exhaustive()
    }
}

/// The future of a TLS handshake, from [`ReloadingAcceptor::accept`].
#[must_use = "futures do nothing unless polled"]
pub struct Accept<IO> {
    handshake: Handshake<IO>,
    timeout: Option<Deadline>,
}

// The large variant is the usual path: boxing it would cost every accept
// an allocation, to spare the rare one a few bytes.
#[allow(clippy::large_enum_variant)]
enum Handshake<IO> {
    /// The usual path, until the client's first bytes come: no rustls
    /// state yet.
    Waiting(Waiting<IO>),
    /// The usual path, once the client has spoken: futures-rustls.
    Direct(futures_rustls::Accept<IO>),
    /// Named pairs and no default pair: the ClientHello is read first, so
    /// that a name no pair serves is refused with `unrecognized_name`
    /// (rustls itself would send `access_denied`).
    Hello(Box<Hello<IO>>),
}

struct Hello<IO> {
    /// Taken when the handshake proper starts.
    io: Option<IO>,
    acceptor: rustls::server::Acceptor,
    /// The bytes read so far, handed to the connection once the name is
    /// known to be served.
    seen: Vec<u8>,
    config: Arc<ServerConfig>,
    table: Arc<SniResolver>,
    /// An alert being written (bytes, how many written), then the error.
    alert: Option<(Vec<u8>, usize, io::Error)>,
}

/// A handshake whose client has not spoken yet.
///
/// rustls's connection (about 1.2 kB in the future, three allocations, a
/// 4 KiB read buffer it zeroes) is made when the first bytes come, not at
/// the accept: a connection that never speaks (a TCP health check, a port
/// scan, a client that stalls before its ClientHello) costs the stream, the
/// config's `Arc` and the deadline, and nothing of rustls. The first bytes
/// are read into a buffer on the stack and handed to the connection.
struct Waiting<IO> {
    /// Taken when the client's first bytes come.
    io: Option<IO>,
    /// What the first bytes go to, with the config at the accept.
    then: Then,
}

/// Where a waiting handshake goes once its client has spoken.
enum Then {
    /// futures-rustls.
    Direct(futures_rustls::TlsAcceptor),
    /// The ClientHello read first (named pairs, no default pair).
    Hello(Arc<ServerConfig>, Arc<SniResolver>),
}

/// What the first read asks for. A ClientHello fits, post-quantum key
/// shares included (1.2 to 2 kB from today's browsers and TLS libraries);
/// the rest of a larger one takes one more read than futures-rustls, which
/// reads 4 KiB. The buffer is zeroed on every poll that waits: at 4 KiB,
/// glibc zeroes it with `rep stosb`, as fast here (`benches/accept`) but
/// counted by callgrind as 4,096 instructions, 2 KiB takes about 120.
const FIRST_READ: usize = 2048;

impl<IO: AsyncRead + AsyncWrite + Unpin> Handshake<IO> {
    /// From `Waiting` to `Direct` (or `Hello`, which reads the rest of the
    /// ClientHello) once the client's first bytes came; ready at once for
    /// any other state. Errors as futures-rustls gives them.
    #[inline(never)]
    fn poll_first_bytes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Handshake::Waiting(waiting) = self else {
            return Poll::Ready(Ok(()));
        };
        let Some(io) = waiting.io.as_mut() else {
            return Poll::Ready(Err(io::Error::other("polled after the handshake started")));
        };
        let mut first = [0u8; FIRST_READ];
        let n = match Pin::new(io).poll_read(cx, &mut first) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tls handshake eof",
                )));
            }
            Poll::Ready(Ok(n)) => n.min(FIRST_READ),
            // What futures-rustls takes for a pending read.
            Poll::Ready(Err(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                return Poll::Pending
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        };
        let Some(io) = waiting.io.take() else {
            return Poll::Ready(Err(io::Error::other("no stream")));
        };
        let first = &first[..n];
        let acceptor = match &waiting.then {
            Then::Direct(acceptor) => acceptor,
            Then::Hello(config, table) => {
                let mut hello = Box::new(Hello {
                    io: Some(io),
                    acceptor: rustls::server::Acceptor::default(),
                    seen: Vec::new(),
                    config: config.clone(),
                    table: table.clone(),
                    alert: None,
                });
                return match hello.took(first, cx) {
                    Some(HelloStep::Failed(error)) => Poll::Ready(Err(error)),
                    Some(HelloStep::Start(accept)) => {
                        *self = Handshake::Direct(accept);
                        Poll::Ready(Ok(()))
                    }
                    Some(HelloStep::Pending) | None => {
                        *self = Handshake::Hello(hello);
                        Poll::Ready(Ok(()))
                    }
                };
            }
        };
        let mut failed = None;
        let mut accept = start_with(acceptor, io, first, &mut failed);
        let Some(error) = failed else {
            *self = Handshake::Direct(accept);
            return Poll::Ready(Ok(()));
        };
        // As futures-rustls does on a TLS error: one last try to send the
        // alert rustls queued, without waiting on it.
        let _ = Pin::new(&mut accept).poll(cx);
        Poll::Ready(Err(error))
    }
}

/// A handshake of `acceptor`'s config on `io` whose first bytes, `first`,
/// came already: handed to the new connection as if rustls had read them.
/// A TLS error in them leaves its alert queued and is put in `failed`.
fn start_with<IO: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &futures_rustls::TlsAcceptor,
    io: IO,
    first: &[u8],
    failed: &mut Option<io::Error>,
) -> futures_rustls::Accept<IO> {
    acceptor.accept_with(io, |connection| {
        let mut rest = first;
        loop {
            // rustls buffers a record and a bit more before it must
            // process what it holds (a ClientHello of several records).
            while !rest.is_empty() && matches!(connection.read_tls(&mut rest), Ok(1..)) {}
            let left = rest.len();
            if let Err(error) = connection.process_new_packets() {
                *failed = Some(io::Error::new(io::ErrorKind::InvalidData, error));
                return;
            }
            if left == 0 {
                return;
            }
            if !matches!(connection.read_tls(&mut rest), Ok(1..)) {
                // Nothing taken after processing: never lose bytes, never
                // spin.
                *failed = Some(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the client's first bytes did not fit the connection's buffer",
                ));
                return;
            }
        }
    })
}

/// A fatal `unrecognized_name` alert record (RFC 6066, 3), in plaintext as
/// every alert before the handshake keys is.
const UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// The most a ClientHello may take before it is refused.
const MAX_HELLO: usize = 64 * 1024;

// Moved once, from the ClientHello read to the handshake.
#[allow(clippy::large_enum_variant)]
enum HelloStep<IO> {
    Pending,
    Start(futures_rustls::Accept<IO>),
    Failed(io::Error),
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Hello<IO> {
    fn poll(&mut self, cx: &mut Context<'_>) -> HelloStep<IO> {
        loop {
            let Some(io) = self.io.as_mut() else {
                return HelloStep::Failed(io::Error::other("polled after the handshake started"));
            };
            if let Some((bytes, written, _)) = &mut self.alert {
                while *written < bytes.len() {
                    match Pin::new(&mut *io).poll_write(cx, &bytes[*written..]) {
                        Poll::Pending => return HelloStep::Pending,
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                        Poll::Ready(Ok(n)) => *written += n,
                    }
                }
                if Pin::new(&mut *io).poll_flush(cx).is_pending() {
                    return HelloStep::Pending;
                }
                let error = self
                    .alert
                    .take()
                    .map_or_else(|| io::Error::other("alert sent"), |(_, _, error)| error);
                return HelloStep::Failed(error);
            }
            let mut buf = [0u8; 4096];
            let n = match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                Poll::Pending => return HelloStep::Pending,
                Poll::Ready(Err(error)) => return HelloStep::Failed(error),
                Poll::Ready(Ok(0)) => {
                    return HelloStep::Failed(io::ErrorKind::UnexpectedEof.into());
                }
                Poll::Ready(Ok(n)) => n.min(buf.len()),
            };
            if let Some(step) = self.took(&buf[..n], cx) {
                return step;
            }
        }
    }

    /// Takes `bytes` the client sent: the handshake once the ClientHello is
    /// whole and a pair serves its name, a failure, or `None` to go on
    /// (to read more, or to send the alert set).
    fn took(&mut self, bytes: &[u8], cx: &mut Context<'_>) -> Option<HelloStep<IO>> {
        if self.seen.len() + bytes.len() > MAX_HELLO {
            return Some(HelloStep::Failed(io::Error::new(
                io::ErrorKind::InvalidData,
                "ClientHello too large",
            )));
        }
        self.seen.extend_from_slice(bytes);
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.acceptor.read_tls(&mut rest) {
                Ok(0) => {
                    // rustls took nothing: never spin on it.
                    return Some(HelloStep::Failed(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "ClientHello not taken",
                    )));
                }
                Ok(_) => {}
                Err(error) => {
                    return Some(HelloStep::Failed(io::Error::new(
                        io::ErrorKind::InvalidData,
                        error,
                    )));
                }
            }
        }
        let accepted = match self.acceptor.accept() {
            Ok(None) => return None,
            Ok(Some(accepted)) => accepted,
            Err((error, alert)) => {
                let mut bytes = Vec::new();
                let mut alert = alert;
                let _ = alert.write_all(&mut bytes);
                let error = io::Error::new(io::ErrorKind::InvalidData, error);
                self.alert = Some((bytes, 0, error));
                return None;
            }
        };
        let hello = accepted.client_hello();
        let name = hello.server_name();
        if !self.table.serves(name) {
            self.table.count_refusal();
            tracing::debug!(
                server_name = name.unwrap_or("(none)"),
                "no pair serves the server name and there is no default pair: \
                 refused with unrecognized_name"
            );
            let error = io::Error::new(
                io::ErrorKind::InvalidData,
                "no certificate for the server name asked for (unrecognized_name)",
            );
            self.alert = Some((UNRECOGNIZED_NAME.to_vec(), 0, error));
            return None;
        }
        let Some(io) = self.io.take() else {
            return Some(HelloStep::Failed(io::Error::other("no stream")));
        };
        let seen = std::mem::take(&mut self.seen);
        let mut failed = None;
        let acceptor = futures_rustls::TlsAcceptor::from(self.config.clone());
        let mut accept = start_with(&acceptor, io, &seen, &mut failed);
        Some(match failed {
            None => HelloStep::Start(accept),
            Some(error) => {
                // One last try to send the alert, as on the direct path.
                let _ = Pin::new(&mut accept).poll(cx);
                HelloStep::Failed(error)
            }
        })
    }
}

impl<IO> Future for Accept<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    type Output = io::Result<TlsStream<IO>>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Handshake::Waiting(_) = &self.handshake {
            if let Poll::Ready(Err(error)) = self.handshake.poll_first_bytes(cx) {
                return Poll::Ready(Err(error));
            }
        }
        if let Handshake::Hello(hello) = &mut self.handshake {
            match hello.poll(cx) {
                HelloStep::Pending => {}
                HelloStep::Failed(error) => return Poll::Ready(Err(error)),
                HelloStep::Start(accept) => self.handshake = Handshake::Direct(accept),
            }
        }
        if let Handshake::Direct(handshake) = &mut self.handshake {
            if let Poll::Ready(result) = Pin::new(handshake).poll(cx) {
                return Poll::Ready(result);
            }
        }
        timed_out(&mut self.timeout, cx).map(Err)
    }
}

impl<IO> fmt::Debug for Accept<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accept").finish_non_exhaustive()
    }
}

/// The reloader loop, from [`ReloadingAcceptor::reloader`].
#[must_use = "the reloader does nothing unless spawned or awaited"]
pub struct Reloader {
    inner: future::BoxFuture<'static, ()>,
}

impl Reloader {
    pub(crate) fn new(inner: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            inner: inner.boxed(),
        }
    }
}

impl Future for Reloader {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.poll_unpin(cx)
    }
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

/// A reload that was applied.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Reloaded {
    /// The generation now served.
    pub generation: u64,
    /// The certificate now served.
    pub leaf: LeafInfo,
    /// Whether sessions from before the reload still resume.
    pub resumption: Resumption,
}
