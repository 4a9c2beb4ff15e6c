//! Test support for the proxy binary, on top of `tls-reload-testkit`: the
//! CA, cert and key files in a temp dir, the binary started with its
//! stdout lines read under a deadline, an echo backend on a thread, a
//! blocking rustls client and a tiny HTTP GET.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tls_reload_testkit::{run_within, write_atomic, Ca, Leaf, Process, DEADLINE};

// ---------------------------------------------------------------------------
// Files

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
        write_atomic(&files.ca, ca.pem());
        files.install(leaf);
        files
    }

    /// Replaces the key, then the certificate, each by an atomic rename.
    pub fn install(&self, leaf: &Leaf) {
        write_atomic(&self.key, leaf.key_pem());
        write_atomic(&self.cert, leaf.cert_pem());
    }
}

// ---------------------------------------------------------------------------
// The proxy process

/// The proxy binary, running; killed on drop. Derefs to its [`Process`]
/// (`expect_line`, `stderr`, `wait_exit`, ...).
pub struct Proxy {
    process: Process,
    /// Where it accepts TLS.
    pub addr: SocketAddr,
    /// Where its status page listens, with `--status`.
    pub status: Option<SocketAddr>,
}

impl Proxy {
    /// Starts the proxy for `files` in front of `target`, with more flags,
    /// and waits for its `listening on` (and `status on`) lines.
    pub fn start(files: &Files, target: SocketAddr, extra: &[&str]) -> Self {
        Self::start_with(files, target, extra, |_| {})
    }

    /// As [`start`](Self::start), with `tweak` adjusting the command
    /// (environment, say) before it runs.
    pub fn start_with(
        files: &Files,
        target: SocketAddr,
        extra: &[&str],
        tweak: impl FnOnce(&mut Command),
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tls-reload-proxy"));
        command
            .args(["--listen", "127.0.0.1:0", "--target", &target.to_string()])
            .arg("--cert")
            .arg(&files.cert)
            .arg("--key")
            .arg(&files.key)
            .args(extra)
            .env("RUST_LOG", "info");
        tweak(&mut command);
        Self::spawn(&mut command, extra.contains(&"--status"))
    }

    /// Runs `command` (the proxy, or a program that execs it) and waits for
    /// its `listening on` line, and its `status on` line if `status`.
    pub fn spawn(command: &mut Command, status: bool) -> Self {
        Self::from_process(Process::spawn(command), status)
    }

    /// The proxy that `process` runs or will run, once it printed its
    /// `listening on` line (and `status on`, if `status`).
    pub fn from_process(process: Process, status: bool) -> Self {
        let addr = expect_addr(&process, "listening on ");
        let status = status.then(|| expect_addr(&process, "status on "));
        Self {
            process,
            addr,
            status,
        }
    }

    /// Sends a signal with `kill -SIGNAL pid`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.process.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }
}

impl std::ops::Deref for Proxy {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Proxy {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

fn expect_addr(process: &Process, prefix: &str) -> SocketAddr {
    let line = process.expect_line(prefix);
    line[prefix.len()..].parse().unwrap()
}

/// Runs the binary with these arguments to its end (within [`DEADLINE`]):
/// status, stdout, stderr.
pub fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    let output = run_within(
        Command::new(env!("CARGO_BIN_EXE_tls-reload-proxy")).args(args),
        DEADLINE,
    );
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
