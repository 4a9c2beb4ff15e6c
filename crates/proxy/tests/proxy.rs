//! The proxy binary end to end: a TLS client, the proxy and an echo backend
//! over loopback, with certificates written to a temp dir.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{
    echo_backend, free_port, http, run_to_end, serve_echo, Client, Files, Proxy, EOF_MARK,
};
use tls_reload_testkit::{resuming_client_config, wait_until_blocking, Ca, DEADLINE};

#[test]
fn bytes_go_through_both_ways() {
    let ca = Ca::new("proxy test CA");
    let leaf = ca.leaf(0x1001);
    let files = Files::new(&ca, &leaf);
    let proxy = Proxy::start(&files, echo_backend(), &[]);
    let mut client = Client::connect(proxy.addr, &resuming_client_config(&ca, None)).unwrap();
    assert!(client.served_leaf(&leaf));
    assert_eq!(client.round_trip(b"hello").unwrap(), b"hello");
    // A megabyte in chunks bigger than a TLS record, each echoed whole.
    let chunk: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    for _ in 0..25 {
        assert!(client.round_trip(&chunk).unwrap() == chunk);
    }
}

#[test]
fn a_half_close_reaches_the_backend_and_the_reply_still_arrives() {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let proxy = Proxy::start(&files, echo_backend(), &[]);
    let mut client = Client::connect(proxy.addr, &resuming_client_config(&ca, None)).unwrap();
    client.tls.write_all(b"request").unwrap();
    client.finish_sending().unwrap();
    // The backend writes its EOF mark only after it saw the end of the
    // request, so the mark proves the half-close went through, and reading
    // to a clean end proves the proxy closed with close_notify.
    let reply = client.read_to_end().unwrap();
    assert_eq!(reply, [b"request".as_slice(), EOF_MARK].concat());
}

#[test]
fn a_backend_that_closes_first_gets_the_client_a_clean_close() {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let _ = stream.unwrap().write_all(b"bye");
        }
    });
    let proxy = Proxy::start(&files, target, &["--status", "127.0.0.1:0"]);
    let mut client = Client::connect(proxy.addr, &resuming_client_config(&ca, None)).unwrap();
    // Read to a clean end: the proxy passed the close on with close_notify.
    assert_eq!(client.read_to_end().unwrap(), b"bye");
    client.finish_sending().unwrap();
    let status = proxy.status.unwrap();
    assert!(wait_until_blocking(DEADLINE, || {
        let (_, _, body) = http(status, "GET", "/status");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        status["connections"]["active"] == 0
    }));
}

#[test]
fn a_backend_that_is_down_closes_the_client_and_the_proxy_goes_on() {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let target = free_port();
    let proxy = Proxy::start(&files, target, &["--status", "127.0.0.1:0"]);
    let config = resuming_client_config(&ca, None);

    let mut refused = Client::connect(proxy.addr, &config).unwrap();
    let reply = refused.read_to_end().unwrap();
    assert!(
        reply.is_empty(),
        "got {reply:?} from a backend that is down"
    );
    assert!(wait_until_blocking(DEADLINE, || proxy
        .stderr()
        .contains("cannot reach the target")));
    let (_, _, body) = http(proxy.status.unwrap(), "GET", "/status");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["connections"]["target_connect_failures"], 1);

    serve_echo(TcpListener::bind(target).unwrap());
    let mut served = Client::connect(proxy.addr, &config).unwrap();
    assert_eq!(served.round_trip(b"back up").unwrap(), b"back up");
}

#[test]
fn at_the_connection_limit_a_new_client_waits_until_one_closes() {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let proxy = Proxy::start(&files, echo_backend(), &["--max-connections", "2"]);
    let config = resuming_client_config(&ca, None);
    let mut first = Client::connect(proxy.addr, &config).unwrap();
    let mut second = Client::connect(proxy.addr, &config).unwrap();
    assert_eq!(first.round_trip(b"1").unwrap(), b"1");
    assert_eq!(second.round_trip(b"2").unwrap(), b"2");

    // The third connects (the backlog takes it) but is not accepted, so its
    // handshake gets no answer.
    let mut third = Client::start(proxy.addr, &config).unwrap();
    let waited = third.finish_handshake(Duration::from_millis(500));
    let error = waited.expect_err("a third connection was served over the limit");
    assert!(
        matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{error}"
    );
    assert!(proxy.stderr().contains("connection limit reached"));

    drop(first);
    third.finish_handshake(DEADLINE).unwrap();
    assert_eq!(third.round_trip(b"3").unwrap(), b"3");
    assert_eq!(second.round_trip(b"2 again").unwrap(), b"2 again");
}

#[test]
fn a_rotation_serves_new_clients_the_new_certificate_and_keeps_open_ones() {
    let ca = Ca::new("proxy test CA");
    let old = ca.leaf(0x1001);
    let files = Files::new(&ca, &old);
    let proxy = Proxy::start(&files, echo_backend(), &["--interval", "100ms"]);
    let config = resuming_client_config(&ca, None);
    let mut open = Client::connect(proxy.addr, &config).unwrap();
    assert!(open.served_leaf(&old));

    let new = ca.leaf_for_key(0x1002, &old.key);
    files.install(&new);
    proxy.expect_line("reload applied generation=2 serial=1002");

    let fresh = Client::connect(proxy.addr, &config).unwrap();
    assert!(fresh.served_leaf(&new));
    assert_eq!(open.round_trip(b"still here").unwrap(), b"still here");
}

#[test]
fn sighup_reloads_at_once_whatever_the_interval() {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    // Events off: only the signal can explain a reload within the hour.
    let proxy = Proxy::start(
        &files,
        echo_backend(),
        &["--interval", "1h", "--events", "off"],
    );
    let new = ca.leaf(0x1002);
    files.install(&new);
    proxy.signal("HUP");
    proxy.expect_line("reload applied generation=2 serial=1002");
    let client = Client::connect(proxy.addr, &resuming_client_config(&ca, None)).unwrap();
    assert!(client.served_leaf(&new));
    assert!(wait_until_blocking(DEADLINE, || proxy
        .stderr()
        .contains("SIGHUP: reload applied")));

    // A broken file: the failure is reported and the last good one stays.
    std::fs::write(&files.key, "not a key").unwrap();
    proxy.signal("HUP");
    let failed = proxy.expect_line("reload failed: ");
    assert!(failed.contains("tls.key"), "{failed}");
    assert!(wait_until_blocking(DEADLINE, || proxy
        .stderr()
        .contains("SIGHUP: reload failed")));
    let client = Client::connect(proxy.addr, &resuming_client_config(&ca, None)).unwrap();
    assert!(client.served_leaf(&new));
}

#[test]
fn status_and_metrics_report_reloads_and_connections() {
    let ca = Ca::new("proxy test CA");
    let old = ca.leaf(0x1001);
    let files = Files::new(&ca, &old);
    let proxy = Proxy::start(
        &files,
        echo_backend(),
        // Events off: the SIGHUP below is the only reload.
        &[
            "--status",
            "127.0.0.1:0",
            "--interval",
            "1h",
            "--events",
            "off",
        ],
    );
    let status_addr = proxy.status.unwrap();
    let config = resuming_client_config(&ca, None);
    let mut client = Client::connect(proxy.addr, &config).unwrap();
    assert_eq!(client.round_trip(b"x").unwrap(), b"x");
    let mut garbage = TcpStream::connect(proxy.addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();

    let status = || -> serde_json::Value {
        let (code, head, body) = http(status_addr, "GET", "/status");
        assert_eq!(code, 200);
        assert!(head.contains("Content-Type: application/json"), "{head}");
        assert!(head.contains("Connection: close"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        serde_json::from_str(&body).unwrap()
    };
    assert!(wait_until_blocking(DEADLINE, || {
        status()["connections"]["handshake_failures"] == 1
    }));
    let now = unix_now();
    let first = status();
    assert_eq!(first["generation"], 1);
    assert_eq!(first["reloads_applied"], 0);
    assert_eq!(first["reloads_failed"], 0);
    assert_eq!(first["last_error"], serde_json::Value::Null);
    assert_eq!(first["last_reload_at"], serde_json::Value::Null);
    assert!((now - 60..=now).contains(&first["applied_at"].as_i64().unwrap()));
    assert_eq!(first["leaf"]["serial"], "1001");
    assert_eq!(first["leaf"]["subject"], "CN=localhost 1001");
    assert!(first["leaf"]["not_after"].as_i64().unwrap() > now);
    assert!(first["leaf"]["not_before"].as_i64().unwrap() <= now);
    assert_eq!(first["leaf"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(first["connections"]["active"], 1);
    assert_eq!(first["connections"]["total"], 2);
    assert_eq!(first["connections"]["target_connect_failures"], 0);

    files.install(&ca.leaf(0x1002));
    proxy.signal("HUP");
    proxy.expect_line("reload applied generation=2 serial=1002");
    drop(client);
    assert!(wait_until_blocking(DEADLINE, || {
        status()["connections"]["active"] == 0
    }));
    let second = status();
    assert_eq!(second["generation"], 2);
    assert_eq!(second["reloads_applied"], 1);
    assert!(second["last_reload_at"].as_i64().is_some());
    assert_eq!(second["leaf"]["serial"], "1002");

    let (code, head, metrics) = http(status_addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(metrics.ends_with("\n# EOF\n"), "{metrics}");
    // OpenMetrics: a counter family is named without `_total`, its sample
    // with it.
    let expected = [
        ("tls_reload_reloads_applied", "_total", "counter", 1),
        ("tls_reload_reloads_failed", "_total", "counter", 0),
        (
            "tls_reload_last_reload_success_timestamp_seconds",
            "",
            "gauge",
            second["applied_at"].as_i64().unwrap(),
        ),
        ("tls_reload_connections_active", "", "gauge", 0),
        ("tls_reload_connections", "_total", "counter", 2),
        ("tls_reload_handshake_failures", "_total", "counter", 1),
        ("tls_reload_target_connect_failures", "_total", "counter", 0),
    ];
    for (name, suffix, kind, value) in expected {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "{name}:\n{metrics}"
        );
        assert!(
            metrics.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}:\n{metrics}"
        );
        assert!(
            metrics.contains(&format!("\n{name}{suffix} {value}\n")),
            "{name}:\n{metrics}"
        );
    }

    let not_after = format!(
        "\ntls_reload_certificate_not_after_seconds{{kind=\"leaf\",serial=\"1002\"}} {}\n",
        second["leaf"]["not_after"].as_i64().unwrap()
    );
    assert!(metrics.contains(&not_after), "{not_after}:\n{metrics}");
    assert!(
        metrics.contains("# TYPE tls_reload_crl_next_update_seconds gauge\n"),
        "{metrics}"
    );

    assert_eq!(http(status_addr, "GET", "/").0, 404);
    assert_eq!(http(status_addr, "GET", "/nope").0, 404);
    let (code, head, _) = http(status_addr, "POST", "/status");
    assert_eq!(code, 405);
    assert!(head.contains("Allow: GET"), "{head}");
}

#[test]
fn sigterm_refuses_new_connections_and_lets_open_ones_finish() {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let mut proxy = Proxy::start(&files, echo_backend(), &["--drain-timeout", "30s"]);
    let mut open = Client::connect(proxy.addr, &resuming_client_config(&ca, None)).unwrap();
    assert_eq!(open.round_trip(b"before").unwrap(), b"before");

    proxy.signal("TERM");
    assert!(
        wait_until_blocking(DEADLINE, || TcpStream::connect(proxy.addr).is_err()),
        "still accepting after SIGTERM"
    );
    assert_eq!(open.round_trip(b"during").unwrap(), b"during");
    assert!(proxy.wait_exit(Duration::from_millis(200)).is_none());

    open.finish_sending().unwrap();
    let rest = open.read_to_end().unwrap();
    assert_eq!(rest, EOF_MARK);
    let status = proxy.wait_exit(DEADLINE).expect("no exit after the drain");
    assert_eq!(status.code(), Some(0));
    assert!(proxy.stderr().contains("all connections closed"));
}

#[test]
fn the_drain_timeout_ends_connections_that_do_not_finish() {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let mut proxy = Proxy::start(&files, echo_backend(), &["--drain-timeout", "1s"]);
    let mut open = Client::connect(proxy.addr, &resuming_client_config(&ca, None)).unwrap();
    assert_eq!(open.round_trip(b"idle").unwrap(), b"idle");
    let start = Instant::now();
    proxy.signal("INT");
    let status = proxy
        .wait_exit(DEADLINE)
        .expect("no exit after the drain timeout");
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert_eq!(status.code(), Some(0));
    assert!(proxy.stderr().contains("drain timeout"));
}

#[test]
fn a_non_utf8_argument_is_a_usage_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let output = tls_reload_testkit::run_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_tls-reload-proxy"))
            .arg("--listen")
            .arg(std::ffi::OsStr::from_bytes(b"127.0.0.1:\xff")),
        DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("usage:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn help_bad_arguments_and_unreadable_files_have_their_exit_codes() {
    let (status, stdout, _) = run_to_end(&["--help"]);
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains("--max-connections N"), "{stdout}");

    let (status, stdout, stderr) = run_to_end(&["--listen", "127.0.0.1:0"]);
    assert_eq!(status.code(), Some(2));
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("--target is required") && stderr.contains("usage:"),
        "{stderr}"
    );

    let (status, _, stderr) = run_to_end(&[
        "--listen",
        "127.0.0.1:0",
        "--target",
        "127.0.0.1:1",
        "--cert",
        "c",
        "--key",
        "k",
        "--interval",
        "5",
    ]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("has no unit"), "{stderr}");

    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    std::fs::remove_file(&files.key).unwrap();
    let (status, stdout, stderr) = run_to_end(&[
        "--listen",
        "127.0.0.1:0",
        "--target",
        "127.0.0.1:1",
        "--cert",
        files.cert.to_str().unwrap(),
        "--key",
        files.key.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1));
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(stderr.contains("tls.key"), "{stderr}");
}

fn unix_now() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.unwrap().as_secs() as i64
}

#[test]
fn cert_dir_pairs_are_served_by_name_and_listed_in_status() {
    use tls_reload_testkit::{
        new_key, served_serial, sni_client_config, tls_connect_to, write_combined, write_new,
    };
    let ca = Ca::new("proxy SNI CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let pairs = tempfile::tempdir().unwrap();
    write_combined(
        pairs.path(),
        "api",
        &ca.named_leaf(0x1002, &["api.example.com"], new_key()),
    );
    write_new(pairs.path(), "bad.pem", "not a pair");
    let dir = pairs.path().to_str().unwrap().to_owned();
    let proxy = Proxy::start(
        &files,
        echo_backend(),
        &["--cert-dir", &dir, "--status", "127.0.0.1:0"],
    );
    let config = sni_client_config(&ca, None);
    let serial = smol::block_on(async {
        let stream = tls_connect_to(proxy.addr, &config, "api.example.com", true).await?;
        Ok::<_, std::io::Error>(served_serial(&stream))
    })
    .unwrap();
    assert_eq!(serial, "1002");
    let (code, _, body) = http(proxy.status.unwrap(), "GET", "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pairs = status["pairs"].as_array().expect("pairs").clone();
    assert_eq!(pairs.len(), 2, "{status}");
    assert_eq!(pairs[0]["stem"], "api");
    assert_eq!(pairs[0]["names"][0], "api.example.com");
    assert_eq!(pairs[0]["serial"], "1002");
    assert_eq!(pairs[1]["stem"], "bad");
    assert!(pairs[1]["serial"].is_null());
    assert!(
        pairs[1]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("bad.pem"),
        "{status}"
    );
    // /metrics: the served pair's expiry, none for the broken one.
    let (code, _, page) = http(proxy.status.unwrap(), "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        page.contains("# TYPE tls_reload_pair_not_after_seconds gauge"),
        "{page}"
    );
    let expiry = pairs[0]["not_after"].as_i64().expect("not_after");
    let line =
        format!("tls_reload_pair_not_after_seconds{{pair=\"api\",serial=\"1002\"}} {expiry}");
    assert!(page.lines().any(|l| l == line), "{line} in\n{page}");
    assert!(!page.contains("pair=\"bad\""), "{page}");
}
