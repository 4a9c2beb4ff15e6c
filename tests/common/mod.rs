//! Shared test support: an rcgen PKI with chosen serials, file writes (in
//! place, atomic, Kubernetes-style), a rustls client over loopback that
//! reports the served leaf, deadlines, and the two runtimes (smol and
//! async-std) behind one trait so a test body runs on both.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures::future::{self, BoxFuture, Either, RemoteHandle};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::stream::{BoxStream, StreamExt};
use futures::FutureExt;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tls_reload::acceptor::{
    Builder, Detector, Events, Materials, ReloadEvent, ReloadingAcceptor, Strategy, Template,
    TestDetector,
};
use tls_reload::detect::Composite;

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Certificates

/// A certificate authority made with rcgen.
pub struct Ca {
    pub cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, with the serial it was given.
pub struct Leaf {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
    pub serial: u16,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `localhost` with a fresh ECDSA P-256 key and this serial.
    pub fn leaf(&self, serial: u16) -> Leaf {
        self.leaf_with(serial, KeyPair::generate().expect("key"), |_| {})
    }

    /// A leaf for `localhost` for an existing key (say, the one being
    /// served), so that only the certificate file needs to change.
    pub fn leaf_for_key(&self, serial: u16, key: &KeyPair) -> Leaf {
        let key = KeyPair::from_pem(&key.serialize_pem()).expect("key copy");
        self.leaf_with(serial, key, |_| {})
    }

    /// A leaf whose validity ended in 2021.
    pub fn expired_leaf(&self, serial: u16, key: &KeyPair) -> Leaf {
        let key = KeyPair::from_pem(&key.serialize_pem()).expect("key copy");
        self.leaf_with(serial, key, |params| {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        })
    }

    /// A leaf with this serial; `tweak` adjusts the parameters.
    pub fn leaf_with(
        &self,
        serial: u16,
        key: KeyPair,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".into()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("localhost {serial:04x}"));
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        tweak(&mut params);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        Leaf { cert, key, serial }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

impl Leaf {
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The serial as the acceptor reports it (`LeafInfo::serial_hex`).
    pub fn serial_hex(&self) -> String {
        serial_hex(self.serial)
    }

    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.der().clone()]
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.serialize_der().into())
    }
}

/// A serial as lowercase hex without leading zero bytes, as
/// `LeafInfo::serial_hex` prints it. Test serials keep the top byte in
/// `0x10..0x80`, so this is always four digits.
pub fn serial_hex(serial: u16) -> String {
    assert!(
        (0x1000..0x8000).contains(&serial),
        "keep test serials in 0x1000..0x8000"
    );
    format!("{serial:04x}")
}

/// The serial of a DER certificate, in lowercase hex without leading zero
/// bytes (as `LeafInfo::serial_hex` and the example servers print it).
pub fn der_serial_hex(der: &[u8]) -> Option<String> {
    let (_, certificate, _) = der_tlv(der)?;
    let (_, tbs, _) = der_tlv(certificate)?;
    let (mut tag, mut value, rest) = der_tlv(tbs)?;
    if tag == 0xa0 {
        // The explicit version comes first in a v3 certificate.
        (tag, value, _) = der_tlv(rest)?;
    }
    if tag != 0x02 {
        return None;
    }
    let start = value.iter().position(|&b| b != 0).unwrap_or(value.len());
    let hex: String = value[start..].iter().map(|b| format!("{b:02x}")).collect();
    Some(if hex.is_empty() { "00".into() } else { hex })
}

/// One DER tag-length-value: (tag, value, what follows).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| len << 8 | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

// ---------------------------------------------------------------------------
// Files

/// Rewrites `path` in place (same inode: truncate, then write).
pub fn write_in_place(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Replaces `path` atomically: writes a temporary file beside it, then
/// renames it over `path`, so a reader sees the old file or the new one.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) {
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_new(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    write_in_place(&path, contents);
    path
}

/// Writes a leaf as `dir/tls.crt` and `dir/tls.key`, returning the materials.
pub fn write_pair(dir: &Path, leaf: &Leaf) -> Materials {
    let cert = write_new(dir, "tls.crt", leaf.cert_pem());
    let key = write_new(dir, "tls.key", leaf.key_pem());
    Materials::new(cert, key)
}

/// A directory laid out like a Kubernetes secret volume:
/// `..TS/tls.crt,tls.key`, `..data -> ..TS`, `tls.crt -> ..data/tls.crt`,
/// `tls.key -> ..data/tls.key`.
pub struct SecretVolume {
    pub dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    pub fn new(dir: &Path, leaf: &Leaf) -> Self {
        let mut volume = Self {
            dir: dir.to_owned(),
            version: 0,
        };
        let first = volume.write_version(leaf);
        symlink(&first, &dir.join("..data"));
        symlink(Path::new("..data/tls.crt"), &dir.join("tls.crt"));
        symlink(Path::new("..data/tls.key"), &dir.join("tls.key"));
        volume
    }

    pub fn materials(&self) -> Materials {
        Materials::new(self.dir.join("tls.crt"), self.dir.join("tls.key"))
    }

    /// Swaps in a new version the way the kubelet does: a new timestamped
    /// directory, a `..data_tmp` symlink to it, renamed over `..data`.
    pub fn swap(&mut self, leaf: &Leaf) {
        let old = std::fs::read_link(self.dir.join("..data")).expect("..data");
        let new = self.write_version(leaf);
        let tmp = self.dir.join("..data_tmp");
        symlink(&new, &tmp);
        std::fs::rename(&tmp, self.dir.join("..data")).expect("rename ..data_tmp");
        std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old version");
    }

    fn write_version(&mut self, leaf: &Leaf) -> PathBuf {
        self.version += 1;
        let name = PathBuf::from(format!(
            "..2025_01_01_00_00_{:02}.{}",
            self.version,
            100 + self.version
        ));
        let dir = self.dir.join(&name);
        std::fs::create_dir(&dir).expect("version dir");
        write_new(&dir, "tls.crt", leaf.cert_pem());
        write_new(&dir, "tls.key", leaf.key_pem());
        name
    }
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", link.display(), target.display()));
}

// ---------------------------------------------------------------------------
// Waiting

/// Polls `condition` every 10 ms until it holds (true) or `deadline` passes
/// (false). Never sleeps longer than it must.
pub async fn wait_until<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        Timer::after(Duration::from_millis(10)).await;
    }
}

/// [`wait_until`] for a plain thread: polls every 10 ms.
pub fn wait_until_blocking(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `future`, or a `TimedOut` error after `limit`.
pub async fn timeout<T>(
    limit: Duration,
    future: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    futures::pin_mut!(future);
    match future::select(future, Timer::after(limit)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
    }
}

// ---------------------------------------------------------------------------
// Client

/// The client side of a TLS connection over loopback.
pub type ClientStream = futures_rustls::client::TlsStream<Async<TcpStream>>;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting `root`, with a client certificate if given.
///
/// Session resumption is off: a resumed session carries the certificate of
/// the session's first handshake (the server keeps its session store across
/// a certificate rotation), so the peer certificate would not tell which
/// certificate the server serves now. See [`resuming_client_config`].
pub fn client_config(root: &Ca, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut config = resuming_client_config(root, client);
    Arc::make_mut(&mut config).resumption = rustls::client::Resumption::disabled();
    config
}

/// [`client_config`] with rustls's default client session cache.
pub fn resuming_client_config(root: &Ca, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root.der()).expect("root");
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    Arc::new(match client {
        Some(leaf) => builder
            .with_client_auth_cert(leaf.chain_der(), leaf.key_der())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    })
}

/// Connects to `addr` and completes a TLS handshake for `localhost`, within
/// [`DEADLINE`].
pub async fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<ClientStream> {
    timeout(DEADLINE, async {
        let tcp = Async::<TcpStream>::connect(addr).await?;
        tcp.get_ref().set_nodelay(true)?;
        let name = ServerName::try_from("localhost").expect("name");
        futures_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
    })
    .await
}

/// The leaf certificate the server presented.
pub fn served_leaf(stream: &ClientStream) -> CertificateDer<'static> {
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// The served leaf's serial in lowercase hex.
pub fn served_serial(stream: &ClientStream) -> String {
    der_serial_hex(&served_leaf(stream)).expect("a parsable served certificate")
}

/// Writes `message` and reads it back from an echo server, within
/// [`DEADLINE`]. With TLS 1.3 this is what tells a client that the server
/// refused its certificate (the alert comes after the client's handshake).
pub async fn echo_round_trip<IO>(stream: &mut IO, message: &[u8]) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    timeout(DEADLINE, async {
        stream.write_all(message).await?;
        stream.flush().await?;
        let mut back = vec![0; message.len()];
        stream.read_exact(&mut back).await?;
        if back != message {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
        }
        Ok(())
    })
    .await
}

/// A handshake and an echo round trip; returns the served leaf's serial.
pub async fn fetch_serial(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<String> {
    let mut stream = connect(addr, config).await?;
    echo_round_trip(&mut stream, b"ping").await?;
    Ok(served_serial(&stream))
}

// ---------------------------------------------------------------------------
// Runtimes

/// A connection from a runtime's listener, boxed so test bodies need not
/// name the runtime's stream type.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// Accepted connections, `TCP_NODELAY` set.
pub type Connections = BoxStream<'static, io::Result<BoxIo>>;

/// What a test needs from an async runtime.
pub trait Runtime: 'static {
    const NAME: &'static str;
    /// The runtime's own TCP listener.
    type Listener: Send + Sync + 'static;
    fn block_on<T>(future: impl Future<Output = T>) -> T;
    fn spawn_detached(future: BoxFuture<'static, ()>);
    fn listener(listener: TcpListener) -> io::Result<Self::Listener>;
    /// The next connection, `TCP_NODELAY` set.
    fn accept(listener: &Self::Listener) -> BoxFuture<'_, io::Result<BoxIo>>;
}

pub struct Smol;

impl Runtime for Smol {
    const NAME: &'static str = "smol";
    type Listener = smol::net::TcpListener;

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        smol::block_on(future)
    }

    fn spawn_detached(future: BoxFuture<'static, ()>) {
        smol::spawn(future).detach();
    }

    fn listener(listener: TcpListener) -> io::Result<Self::Listener> {
        smol::net::TcpListener::try_from(listener)
    }

    fn accept(listener: &Self::Listener) -> BoxFuture<'_, io::Result<BoxIo>> {
        Box::pin(async move {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp) as BoxIo)
        })
    }
}

pub struct AsyncStd;

impl Runtime for AsyncStd {
    const NAME: &'static str = "async-std";
    type Listener = async_std::net::TcpListener;

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        async_std::task::block_on(future)
    }

    fn spawn_detached(future: BoxFuture<'static, ()>) {
        drop(async_std::task::spawn(future));
    }

    fn listener(listener: TcpListener) -> io::Result<Self::Listener> {
        Ok(async_std::net::TcpListener::from(listener))
    }

    fn accept(listener: &Self::Listener) -> BoxFuture<'_, io::Result<BoxIo>> {
        Box::pin(async move {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp) as BoxIo)
        })
    }
}

/// Spawns `future` on `R`; dropping the handle cancels it, awaiting it
/// gives its output.
pub fn spawn<R: Runtime, T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> RemoteHandle<T> {
    let (task, handle) = future.remote_handle();
    R::spawn_detached(task.boxed());
    handle
}

/// Binds a loopback listener on a free port.
pub fn listen<R: Runtime>() -> io::Result<(SocketAddr, Connections)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let connections = futures::stream::unfold(R::listener(listener)?, |listener| async move {
        let accepted = R::accept(&listener).await;
        Some((accepted, listener))
    });
    Ok((addr, connections.boxed()))
}

/// Defines, for each named `async fn NAME<R: Runtime>() -> anyhow::Result<()>`,
/// a test on smol (in `mod smol_runtime`) and one on async-std (in
/// `mod async_std_runtime`).
#[macro_export]
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {
        $crate::on_runtime!(smol_runtime, Smol, $($name),*);
        $crate::on_runtime!(async_std_runtime, AsyncStd, $($name),*);
    };
}

/// The half of [`on_both_runtimes`] for one runtime.
#[macro_export]
macro_rules! on_runtime {
    ($module:ident, $runtime:ident, $($name:ident),*) => {
        mod $module {
            $(
                #[test]
                fn $name() -> anyhow::Result<()> {
                    $crate::common::init_tracing();
                    <$crate::common::$runtime as $crate::common::Runtime>::block_on(
                        super::$name::<$crate::common::$runtime>(),
                    )
                }
            )*
        }
    };
}

/// Logs to the test's captured output; `RUST_LOG` filters (default: warn).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
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
            Serve::Incoming => {
                let mut incoming = acceptor.incoming(connections);
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
