//! A real client and server: `redis-cli --tls` through the proxy to a
//! plaintext `redis-server`, across a certificate rotation, with one
//! connection held open through it; and client mode: plaintext `redis-cli`
//! through the proxy to a `redis-server` that demands a client certificate
//! (mTLS), across rotations of the proxy's client certificate.
//!
//! Needs `redis-server` and `redis-cli` on PATH (Debian: `redis-server` and
//! `redis-tools`). Without them the test fails when `CI=true` and is skipped
//! otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{echo_backend, free_port, http, Client, Files, Proxy};
use tls_reload_testkit::{
    resuming_client_config, wait_until_blocking, write_atomic, write_new, Ca, DEADLINE,
};

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

#[test]
fn client_mode_reaches_a_redis_that_demands_client_certificates() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let servers = Ca::new("redis servers");
    let clients = Ca::new("redis clients");
    let strangers = Ca::new("not trusted by redis");
    let server = servers.localhost_leaf();
    let (server_cert, server_key) = (
        write_new(dir.path(), "redis.crt", server.cert_pem()),
        write_new(dir.path(), "redis.key", server.key_pem()),
    );
    let clients_ca = write_new(dir.path(), "clients.pem", clients.pem());
    let redis = Redis::start_tls(&server_cert, &server_key, &clients_ca);

    let roots = write_new(dir.path(), "servers.pem", servers.pem());
    let (cert, key) = (dir.path().join("proxy.crt"), dir.path().join("proxy.key"));
    let install = |leaf: &tls_reload_testkit::Leaf| {
        write_atomic(&key, leaf.key_pem());
        write_atomic(&cert, leaf.cert_pem());
    };
    let trusted = clients.leaf(0x3001);
    install(&trusted);
    let proxy = Proxy::spawn(
        Command::new(env!("CARGO_BIN_EXE_tls-reload-proxy"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--target",
                &redis.addr.to_string(),
            ])
            .args([
                "--target-tls",
                "--target-name",
                "localhost",
                "--interval",
                "100ms",
                "--status",
                "127.0.0.1:0",
            ])
            .arg("--target-ca")
            .arg(&roots)
            .arg("--target-cert")
            .arg(&cert)
            .arg("--target-key")
            .arg(&key)
            .env("RUST_LOG", "info"),
        true,
    );
    let cli = |args: &[&str]| plain_redis_cli(proxy.addr, args);
    assert_eq!(cli(&["SET", "mode", "client"]), Ok("OK".to_owned()));
    assert_eq!(cli(&["GET", "mode"]), Ok("client".to_owned()));
    let mut held = TcpStream::connect(proxy.addr).unwrap();
    held.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(plain_ping(&mut held), "+PONG\r\n");

    // A client certificate redis does not trust: new connections fail, the
    // open one keeps working.
    install(&strangers.leaf(0x3002));
    proxy.expect_line("target reload applied generation=2 serial=3002");
    assert!(
        cli(&["GET", "mode"]).is_err(),
        "redis let in an untrusted client"
    );
    assert_eq!(plain_ping(&mut held), "+PONG\r\n");

    // And back: new connections work again.
    install(&clients.leaf(0x3003));
    proxy.expect_line("target reload applied generation=3 serial=3003");
    assert_eq!(cli(&["GET", "mode"]), Ok("client".to_owned()));
    assert_eq!(plain_ping(&mut held), "+PONG\r\n");

    let status = proxy.status.unwrap();
    let (_, _, body) = http(status, "GET", "/status");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["target_tls"]["identity"]["serial"], "3003", "{body}");
    assert_eq!(json["target_tls"]["reloads_applied"], 2, "{body}");
    assert_eq!(json["leaf"], serde_json::Value::Null, "{body}");
    let (_, _, metrics) = http(status, "GET", "/metrics");
    assert!(
        metrics.contains("\ntls_reload_proxy_target_reloads_applied_total 2\n"),
        "{metrics}"
    );
}

#[test]
fn plaintext_on_both_sides_is_refused_at_start_up() {
    let (status, _, stderr) =
        common::run_to_end(&["--listen", "127.0.0.1:0", "--target", "127.0.0.1:1"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("plaintext on both sides"), "{stderr}");
    let target = echo_backend().to_string();
    let (status, _, stderr) = common::run_to_end(&[
        "--listen",
        "127.0.0.1:0",
        "--target",
        &target,
        "--target-tls",
    ]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--target-ca"), "{stderr}");
}

/// Sends a RESP `PING` over plain TCP.
fn plain_ping(stream: &mut TcpStream) -> String {
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut reply = [0; 7];
    stream.read_exact(&mut reply).unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// Runs one plaintext `redis-cli` command against the proxy: its trimmed
/// output, or what went wrong.
fn plain_redis_cli(proxy: SocketAddr, args: &[&str]) -> Result<String, String> {
    run_redis_cli(&mut Command::new("redis-cli"), proxy, args)
}

/// Runs `redis-cli` (with its TLS flags, if any) against `proxy`: the
/// trimmed output, or it and the error output when it failed.
fn run_redis_cli(
    command: &mut Command,
    proxy: SocketAddr,
    args: &[&str],
) -> Result<String, String> {
    let output = command
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
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let failed = stdout.is_empty() || stdout.contains("ERR") || stdout.contains("Error");
    if output.status.success() && !failed && !stderr.contains("SSL") {
        Ok(stdout)
    } else {
        Err(format!("{stdout} {stderr}"))
    }
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
    let mut command = Command::new("redis-cli");
    command
        .args(["--tls", "--sni", "localhost", "--cacert"])
        .arg(&files.ca);
    run_redis_cli(&mut command, proxy, args)
        .unwrap_or_else(|error| panic!("redis-cli {args:?}: {error}"))
}

/// A `redis-server` on a free loopback port, without persistence; killed
/// on drop.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    /// A plaintext `redis-server`.
    fn start() -> Self {
        let addr = free_port();
        Self::spawn(
            Command::new("redis-server").args(["--port", &addr.port().to_string()]),
            addr,
        )
    }

    /// A `redis-server` serving TLS only, with this certificate and key,
    /// that requires client certificates signed by `clients_ca`.
    fn start_tls(cert: &Path, key: &Path, clients_ca: &Path) -> Self {
        let addr = free_port();
        Self::spawn(
            Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &addr.port().to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(clients_ca)
                .args(["--tls-auth-clients", "yes"]),
            addr,
        )
    }

    /// Runs `command` on loopback without persistence, until `addr` takes
    /// connections.
    fn spawn(command: &mut Command, addr: SocketAddr) -> Self {
        let child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
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
