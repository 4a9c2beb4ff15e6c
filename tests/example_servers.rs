//! The example servers' command line and output lines are a contract used by
//! other tools: these tests run the real binaries (smol and async-std) and
//! talk to them over loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{client_config, fetch_serial, write_atomic, write_pair, Ca, DEADLINE};

const SERVERS: [&str; 2] = ["smol_server", "async_std_server"];

/// The example binary, built next to this test by `cargo test`; built on
/// demand when only this test target was asked for.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .status()
            .expect("cargo build");
        assert!(status.success(), "cargo build --example {name}");
    }
    path
}

/// A running example server and its stdout, line by line.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    addr: SocketAddr,
}

impl Server {
    fn start(name: &str, args: &[&str]) -> Self {
        let mut child = Command::new(example(name))
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            lines,
            seen: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = server.expect_line("listening on ");
        server.addr = line["listening on ".len()..]
            .parse()
            .unwrap_or_else(|e| panic!("{name}: bad listening line {line:?}: {e}"));
        assert_ne!(server.addr.port(), 0, "the real port is printed");
        server
    }

    /// The next stdout line starting with `prefix`, skipping others, within
    /// the deadline.
    fn expect_line(&mut self, prefix: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line starting with {prefix:?} within {DEADLINE:?}; saw {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Lines printed so far without waiting.
    fn drain(&mut self) -> Vec<String> {
        let fresh: Vec<String> = self.lines.try_iter().collect();
        self.seen.extend(fresh.iter().cloned());
        fresh
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_to_exit(name: &str, args: &[&str]) -> Output {
    let mut child = Command::new(example(name))
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let end = Instant::now() + DEADLINE;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("{name} {args:?} did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[test]
fn rotation_prints_applied_and_failed_lines_and_serves_the_new_certificate() {
    for name in SERVERS {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("example CA");
        let (first, second) = (ca.leaf(0x1101), ca.leaf(0x1202));
        let materials = write_pair(dir.path(), &first);
        let (cert, key) = (path_str(materials.cert()), path_str(materials.key()));
        let mut server =
            Server::start(name, &["--cert", cert, "--key", key, "--interval-ms", "20"]);
        let config = client_config(&ca, None);

        let served = smol::block_on(fetch_serial(server.addr, &config)).expect("first handshake");
        assert_eq!(served, first.serial_hex(), "{name}");
        assert!(
            server.drain().is_empty(),
            "{name}: the start-up load prints nothing: {:?}",
            server.seen
        );

        // Key first, then the certificate: the reloader may see a mismatch in between.
        write_atomic(materials.key(), second.key_pem());
        write_atomic(materials.cert(), second.cert_pem());
        let applied = server.expect_line("reload applied ");
        assert_eq!(
            applied,
            format!("reload applied generation=2 serial={}", second.serial_hex()),
            "{name}"
        );
        let served =
            smol::block_on(fetch_serial(server.addr, &config)).expect("handshake after rotation");
        assert_eq!(served, second.serial_hex(), "{name}");

        // Garbage over the certificate: one failure line naming the file; the old pair keeps serving.
        write_atomic(materials.cert(), "not a certificate");
        let failed = server.expect_line("reload failed: ");
        assert!(failed.contains(cert), "{name}: {failed}");
        let served =
            smol::block_on(fetch_serial(server.addr, &config)).expect("handshake on bad material");
        assert_eq!(served, second.serial_hex(), "{name}");

        // A missing key is a detection error, reported the same way.
        std::fs::remove_file(materials.key()).expect("remove key");
        let failed = server.expect_line("reload failed: ");
        assert!(failed.contains(key), "{name}: {failed}");

        // Good material again: applied.
        let third = ca.leaf(0x1303);
        write_atomic(materials.key(), third.key_pem());
        write_atomic(materials.cert(), third.cert_pem());
        let applied = server.expect_line("reload applied ");
        assert!(
            applied.ends_with(&format!("serial={}", third.serial_hex())),
            "{name}: {applied}"
        );
        assert!(
            applied.starts_with("reload applied generation=3 "),
            "{name}: {applied}"
        );
    }
}

#[test]
fn client_ca_requires_a_client_certificate() {
    for name in SERVERS {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, clients) = (Ca::new("server CA"), Ca::new("client CA"));
        let materials = write_pair(dir.path(), &ca.leaf(0x1401));
        let bundle = dir.path().join("clients.pem");
        std::fs::write(&bundle, clients.pem()).expect("write CA");
        let server = Server::start(
            name,
            &[
                "--cert",
                path_str(materials.cert()),
                "--key",
                path_str(materials.key()),
                "--client-ca",
                path_str(&bundle),
            ],
        );
        let anonymous = client_config(&ca, None);
        assert!(
            smol::block_on(fetch_serial(server.addr, &anonymous)).is_err(),
            "{name}: a client without a certificate is refused"
        );
        let client = clients.leaf(0x1402);
        let authenticated = client_config(&ca, Some(&client));
        smol::block_on(fetch_serial(server.addr, &authenticated))
            .expect("a client of the CA is admitted");
    }
}

#[test]
fn a_bad_first_load_exits_non_zero_naming_the_file_and_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    let good = ca.leaf(0x1501);
    let materials = write_pair(dir.path(), &good);
    let (cert, key) = (path_str(materials.cert()), path_str(materials.key()));
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, ca.leaf(0x1502).key_pem()).expect("write");
    let expired = dir.path().join("expired.crt");
    std::fs::write(&expired, ca.expired_leaf(0x1503, &good.key).cert_pem()).expect("write");
    let missing = dir.path().join("missing.key");

    let cases: [(&[&str], &str, &str); 3] = [
        (
            &["--cert", cert, "--key", path_str(&missing)],
            path_str(&missing),
            "No such file",
        ),
        (
            &["--cert", cert, "--key", path_str(&other_key)],
            path_str(&other_key),
            "key does not match certificate",
        ),
        (
            &["--cert", path_str(&expired), "--key", key],
            path_str(&expired),
            "certificate expired",
        ),
    ];
    for name in SERVERS {
        for (args, file, reason) in cases {
            let output = run_to_exit(name, args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{name} {args:?} must fail");
            assert!(
                stderr.contains(file) && stderr.contains(reason),
                "{name} {args:?}: {stderr}"
            );
            assert!(
                !String::from_utf8_lossy(&output.stdout).contains("listening on"),
                "{name} {args:?} must not listen"
            );
        }
    }
}

#[test]
fn bad_arguments_exit_with_usage() {
    for name in SERVERS {
        for args in [
            &["--key", "k"][..],
            &["--cert", "c", "--key", "k", "--detector", "inotify"],
            &["--bogus"],
        ] {
            let output = run_to_exit(name, args);
            assert_eq!(output.status.code(), Some(2), "{name} {args:?}");
            assert!(
                String::from_utf8_lossy(&output.stderr).contains("usage:"),
                "{name} {args:?}"
            );
        }
    }
}

#[test]
fn every_detector_and_the_handshake_timeout_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    let first = ca.leaf(0x1601);
    let materials = write_pair(dir.path(), &first);
    let config = client_config(&ca, None);
    for (name, detector) in [
        ("smol_server", "hash"),
        ("async_std_server", "metadata"),
        ("smol_server", "combined"),
    ] {
        let server = Server::start(
            name,
            &[
                "--cert",
                path_str(materials.cert()),
                "--key",
                path_str(materials.key()),
                "--detector",
                detector,
                "--handshake-timeout-ms",
                "500",
            ],
        );
        let served = smol::block_on(fetch_serial(server.addr, &config)).expect("handshake");
        assert_eq!(served, first.serial_hex(), "{name} --detector {detector}");
    }
}
