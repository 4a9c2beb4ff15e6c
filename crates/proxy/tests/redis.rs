//! A real client and server: `redis-cli --tls` through the proxy to a
//! plaintext `redis-server`, across a certificate rotation, with one
//! connection held open through it.
//!
//! Needs `redis-server` and `redis-cli` on PATH (Debian: `redis-server` and
//! `redis-tools`). Without them the test fails when `CI=true` and is skipped
//! otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};

use common::{free_port, Client, Files, Proxy};
use tls_reload_testkit::{resuming_client_config, wait_until_blocking, Ca, DEADLINE};

#[test]
fn redis_cli_through_the_proxy_across_a_rotation() {
    if !tools_present() {
        return;
    }
    let redis = Redis::start();
    let ca = Ca::new("proxy test CA");
    let old = ca.leaf(0x1001);
    let files = Files::new(&ca, &old);
    let proxy = Proxy::start(&files, redis.addr, &["--interval", "100ms"]);
    let cli = |args: &[&str]| redis_cli(proxy.addr, &files, args);

    assert_eq!(cli(&["SET", "greeting", "before"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "before");
    let mut held = Client::connect(proxy.addr, &resuming_client_config(&ca, None)).unwrap();
    assert!(held.served_leaf(&old));
    assert_eq!(ping(&mut held), "+PONG\r\n");

    let new = ca.leaf_for_key(0x1002, &old.key);
    files.install(&new);
    proxy.expect_line("reload applied generation=2 serial=1002");

    assert_eq!(cli(&["GET", "greeting"]), "before");
    assert_eq!(cli(&["SET", "greeting", "after"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "after");
    let fresh = Client::connect(proxy.addr, &resuming_client_config(&ca, None)).unwrap();
    assert!(fresh.served_leaf(&new));
    assert_eq!(ping(&mut held), "+PONG\r\n");
}

/// Sends a RESP `PING` by hand.
fn ping(client: &mut Client) -> String {
    let reply = client.exchange(b"*1\r\n$4\r\nPING\r\n", 7).unwrap();
    String::from_utf8(reply).unwrap()
}

/// Whether redis is installed: a failure under CI, a skip elsewhere.
fn tools_present() -> bool {
    let missing: Vec<_> = ["redis-server", "redis-cli"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} not on PATH (Debian packages redis-server and redis-tools)",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true but {why}");
    }
    // Straight to stderr: libtest would capture `eprintln!`.
    let _ = writeln!(std::io::stderr(), "redis test skipped: {why}");
    false
}

/// Runs one `redis-cli --tls` command through the proxy, verifying the
/// server against the test CA; returns its trimmed output.
fn redis_cli(proxy: SocketAddr, files: &Files, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["--tls", "--sni", "localhost", "--cacert"])
        .arg(&files.ca)
        .args([
            "-h",
            &proxy.ip().to_string(),
            "-p",
            &proxy.port().to_string(),
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stdout.contains("ERR") && !stderr.contains("SSL"),
        "redis-cli {args:?}: {stdout} {stderr}"
    );
    stdout
}

/// A `redis-server` on a free loopback port, without persistence; killed
/// on drop.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    fn start() -> Self {
        let addr = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let redis = Self { child, addr };
        assert!(
            wait_until_blocking(DEADLINE, || TcpStream::connect(addr).is_ok()),
            "redis-server did not listen on {addr}"
        );
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
