//! `--allow-cn`, `--allow-dns` and `--allow-uri` let in only the clients
//! their certificates name, refusing the others after the handshake (logged
//! with the subject, counted in `/metrics`); `--idle-timeout` closes a
//! connection silent both ways, and only such a one.

mod common;

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::{echo_backend, http, Client, Files, Proxy};
use rcgen::{DnType, SanType};
use tls_reload_testkit::{client_config, new_key, write_new, Ca, Leaf};

/// A client leaf of `ca` with subject CN `cn` and these alternative names.
fn client_leaf(ca: &Ca, serial: u16, cn: &str, sans: Vec<SanType>) -> Leaf {
    ca.leaf_with(serial, new_key(), |params| {
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
    })
}

fn metric(status: std::net::SocketAddr, name: &str) -> u64 {
    let (_, _, body) = http(status, "GET", "/metrics");
    let line = body
        .lines()
        .find(|line| line.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"));
    line[name.len() + 1..].parse().expect("a number")
}

#[test]
fn only_clients_named_by_an_allow_list_get_through() {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let clients = Ca::new("clients");
    let bundle = write_new(files.dir.path(), "clients.pem", clients.pem());
    let proxy = Proxy::start(
        &files,
        echo_backend(),
        &[
            "--status",
            "127.0.0.1:0",
            "--client-ca",
            bundle.to_str().expect("utf-8"),
            "--allow-cn",
            "web",
            "--allow-dns",
            "db.example.org",
            "--allow-uri",
            "spiffe://example.org/api",
            "--allow-uri",
            "spiffe://example.org/jobs",
        ],
    );
    let status = proxy.status.expect("status");
    let allowed = [
        client_leaf(&clients, 0x2001, "web", vec![]),
        client_leaf(
            &clients,
            0x2002,
            "database",
            vec![SanType::DnsName("DB.example.org".try_into().expect("dns"))],
        ),
        client_leaf(
            &clients,
            0x2003,
            "api",
            vec![SanType::URI(
                "spiffe://example.org/api".try_into().expect("uri"),
            )],
        ),
    ];
    for leaf in &allowed {
        let mut client =
            Client::connect(proxy.addr, &client_config(&ca, Some(leaf))).expect("connect");
        assert_eq!(client.round_trip(b"hello").expect("echo"), b"hello");
    }
    assert_eq!(metric(status, "tls_reload_proxy_clients_denied_total"), 0);

    let refused = [
        client_leaf(
            &clients,
            0x2004,
            "intruder",
            vec![
                SanType::DnsName("web".try_into().expect("dns")),
                SanType::URI("spiffe://example.org/apis".try_into().expect("uri")),
            ],
        ),
        client_leaf(&clients, 0x2005, "Web", vec![]),
    ];
    for leaf in &refused {
        // The handshake succeeds (the CA admits it); then the proxy closes.
        let mut client =
            Client::connect(proxy.addr, &client_config(&ca, Some(leaf))).expect("connect");
        let _ = client
            .tls
            .write_all(b"hello")
            .and_then(|()| client.tls.flush());
        let mut reply = Vec::new();
        let _ = client.tls.read_to_end(&mut reply);
        assert!(reply.is_empty(), "a refused client got {reply:?}");
    }
    assert_eq!(metric(status, "tls_reload_proxy_clients_denied_total"), 2);
    let start = Instant::now();
    while !proxy.stderr().contains("CN=intruder") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no refusal logged with the subject:\n{}",
            proxy.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(proxy.stderr().contains("client refused"));
}

#[test]
fn an_allow_list_without_client_cas_is_refused_at_start_up() {
    let (status, _, stderr) = common::run_to_end(&[
        "--listen",
        "127.0.0.1:0",
        "--target",
        "127.0.0.1:1",
        "--cert",
        "c",
        "--key",
        "k",
        "--allow-uri",
        "spiffe://example.org/web",
    ]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--client-ca"), "{stderr}");
}

#[test]
fn the_idle_timeout_closes_silent_connections_only() {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let idle = Duration::from_millis(500);
    let proxy = Proxy::start(
        &files,
        echo_backend(),
        &["--status", "127.0.0.1:0", "--idle-timeout", "500ms"],
    );
    let config = client_config(&ca, None);

    // Talking every 150 ms for 1.5 s keeps a connection open.
    let mut talker = Client::connect(proxy.addr, &config).expect("connect");
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(talker.round_trip(b"tick").expect("open"), b"tick");
        thread::sleep(Duration::from_millis(150));
    }

    drop(talker);

    // A silent one is closed after the timeout, not before.
    let mut silent = Client::connect(proxy.addr, &config).expect("connect");
    assert_eq!(silent.round_trip(b"once").expect("echo"), b"once");
    let quiet_since = Instant::now();
    let mut rest = Vec::new();
    let _ = silent.tls.read_to_end(&mut rest);
    let waited = quiet_since.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        waited >= idle - Duration::from_millis(50),
        "closed after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    let status = proxy.status.expect("status");
    assert_eq!(metric(status, "tls_reload_proxy_idle_timeouts_total"), 1);
}
