//! Test support for the proxy binary: an rcgen PKI written to a temp dir,
//! the binary started with its stdout lines read under a deadline, an echo
//! backend on a thread, a blocking rustls client and a tiny HTTP GET.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Certificates and files

/// A certificate authority made with rcgen.
pub struct Ca {
    pub cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate for `localhost` and its key.
pub struct Leaf {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
    pub serial: u16,
}

impl Ca {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "proxy test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `localhost` with this serial (keep it in `0x1000..0x8000`
    /// so its hex is four digits) and a fresh ECDSA P-256 key.
    pub fn leaf(&self, serial: u16) -> Leaf {
        self.leaf_for_key(serial, KeyPair::generate().unwrap())
    }

    /// A leaf with this serial for an existing key, so that rotating to it
    /// changes only the certificate file.
    pub fn leaf_for_key(&self, serial: u16, key: KeyPair) -> Leaf {
        assert!((0x1000..0x8000).contains(&serial));
        let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("localhost {serial:04x}"));
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert, key, serial }
    }

    /// A client config trusting only this CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

impl Leaf {
    /// The serial as the proxy prints it.
    pub fn serial_hex(&self) -> String {
        format!("{:04x}", self.serial)
    }

    /// The same key, for [`Ca::leaf_for_key`].
    pub fn key_copy(&self) -> KeyPair {
        KeyPair::from_pem(&self.key.serialize_pem()).unwrap()
    }
}

/// The CA, cert and key files in a temp dir.
pub struct Files {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Files {
    pub fn new(ca: &Ca, leaf: &Leaf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = Self {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            dir,
        };
        write_atomic(&files.ca, ca.cert.pem());
        files.install(leaf);
        files
    }

    /// Replaces the key, then the certificate, each by an atomic rename.
    pub fn install(&self, leaf: &Leaf) {
        write_atomic(&self.key, leaf.key.serialize_pem());
        write_atomic(&self.cert, leaf.cert.pem());
    }
}

fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------------------
// The proxy process

/// The proxy binary, running; killed on drop.
pub struct Proxy {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Where it accepts TLS.
    pub addr: SocketAddr,
    /// Where its status page listens, with `--status`.
    pub status: Option<SocketAddr>,
}

impl Proxy {
    /// Starts the proxy for `files` in front of `target`, with more flags,
    /// and waits for its `listening on` (and `status on`) lines.
    pub fn start(files: &Files, target: SocketAddr, extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tls-reload-proxy"));
        command
            .args(["--listen", "127.0.0.1:0", "--target", &target.to_string()])
            .arg("--cert")
            .arg(&files.cert)
            .arg("--key")
            .arg(&files.key)
            .args(extra);
        let mut proxy = Self::spawn(command);
        proxy.addr = proxy.expect_addr("listening on ");
        if extra.contains(&"--status") {
            proxy.status = Some(proxy.expect_addr("status on "));
        }
        proxy
    }

    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        Self {
            child,
            lines,
            stderr,
            addr: ([0, 0, 0, 0], 0).into(),
            status: None,
        }
    }

    /// The first stdout line starting with `prefix`, skipping others;
    /// fails after [`DEADLINE`].
    pub fn expect_line(&self, prefix: &str) -> String {
        let end = Instant::now() + DEADLINE;
        let mut skipped = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => skipped.push(line),
                Err(_) => panic!(
                    "no stdout line {prefix:?} within {DEADLINE:?}; skipped {skipped:?}\nstderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    fn expect_addr(&self, prefix: &str) -> SocketAddr {
        let line = self.expect_line(prefix);
        line[prefix.len()..].parse().unwrap()
    }

    /// What the proxy logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal with `kill -SIGNAL pid`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit, up to `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with these arguments to its end: status, stdout, stderr.
pub fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tls-reload-proxy"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------
// The backend

/// What the echo backend appends once its client stopped sending.
pub const EOF_MARK: &[u8] = b"<eof>";

/// An echo backend on a loopback port: each connection gets back what it
/// sends and, once it has finished sending, [`EOF_MARK`]; then the
/// backend closes.
pub fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    serve_echo(listener);
    addr
}

/// Serves echo on `listener` on a thread, a thread per connection.
pub fn serve_echo(listener: TcpListener) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            thread::spawn(move || {
                let mut buf = [0; 16 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                let _ = stream.write_all(EOF_MARK);
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
}

/// A loopback port that nothing listens on (bound, then closed).
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------
// The TLS client

/// A blocking TLS client for `localhost`.
pub struct Client {
    pub tls: StreamOwned<ClientConnection, TcpStream>,
}

impl Client {
    /// Connects and completes the handshake within [`DEADLINE`].
    pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<Self> {
        let mut client = Self::start(addr, config)?;
        client.finish_handshake(DEADLINE)?;
        Ok(client)
    }

    /// Connects over TCP and creates the TLS session, without handshaking.
    pub fn start(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<Self> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(DEADLINE))?;
        tcp.set_write_timeout(Some(DEADLINE))?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        Ok(Self {
            tls: StreamOwned::new(conn, tcp),
        })
    }

    /// Drives the handshake, waiting at most `timeout` for each read.
    pub fn finish_handshake(&mut self, timeout: Duration) -> io::Result<()> {
        self.tls.sock.set_read_timeout(Some(timeout))?;
        let result = (|| {
            while self.tls.conn.is_handshaking() {
                self.tls.conn.complete_io(&mut self.tls.sock)?;
            }
            Ok(())
        })();
        self.tls.sock.set_read_timeout(Some(DEADLINE))?;
        result
    }

    /// The leaf the proxy served.
    pub fn served(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// Whether the proxy served `leaf`.
    pub fn served_leaf(&self, leaf: &Leaf) -> bool {
        self.served() == leaf.cert.der().as_ref()
    }

    /// Sends `message` and reads back as many bytes (the backend echoes).
    pub fn round_trip(&mut self, message: &[u8]) -> io::Result<Vec<u8>> {
        self.exchange(message, message.len())
    }

    /// Sends `message` and reads a reply of `reply_len` bytes.
    pub fn exchange(&mut self, message: &[u8], reply_len: usize) -> io::Result<Vec<u8>> {
        self.tls.write_all(message)?;
        self.tls.flush()?;
        let mut reply = vec![0; reply_len];
        self.tls.read_exact(&mut reply)?;
        Ok(reply)
    }

    /// Says it has finished sending: `close_notify`, then a TCP half-close.
    pub fn finish_sending(&mut self) -> io::Result<()> {
        self.tls.conn.send_close_notify();
        self.tls.flush()?;
        self.tls.sock.shutdown(Shutdown::Write)
    }

    /// Reads until the proxy closes (with `close_notify`, or it is an error).
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        self.tls.read_to_end(&mut all)?;
        Ok(all)
    }
}

// ---------------------------------------------------------------------------
// The status page

/// A `METHOD path` request to the status page: the status code, the head
/// and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head.to_owned(), body.to_owned())
}

/// Polls `condition` until it holds or [`DEADLINE`] passes.
pub fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    condition()
}
