//! `--events on|off`: with events on (the default) a rotation is applied at
//! once whatever `--interval` says, and `/status` says how changes are
//! detected.

mod common;

use common::{echo_backend, http, run_to_end, Files, Proxy};
use tls_reload_testkit::{wait_until_blocking, Ca, DEADLINE};

fn detection(status: std::net::SocketAddr) -> String {
    let (code, _, body) = http(status, "GET", "/status");
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    json["detection"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn with_events_a_rotation_is_applied_long_before_the_interval() {
    let ca = Ca::new("events CA");
    let (first, second) = (ca.leaf(0x9001), ca.leaf(0x9002));
    let files = Files::new(&ca, &first);
    let proxy = Proxy::start(
        &files,
        echo_backend(),
        &["--interval", "1h", "--status", "127.0.0.1:0"],
    );
    let status = proxy.status.expect("status");
    let armed = wait_until_blocking(DEADLINE, || detection(status).starts_with("events ("));
    assert!(armed, "{}", detection(status));
    files.install(&second);
    assert_eq!(
        proxy.expect_line("reload applied "),
        format!("reload applied generation=2 serial={}", second.serial_hex())
    );
    let (_, _, metrics) = http(status, "GET", "/metrics");
    assert!(
        metrics.contains("tls_reload_detection_events 1"),
        "{metrics}"
    );
}

#[test]
fn with_events_off_the_status_says_poll_only() {
    let ca = Ca::new("events CA");
    let files = Files::new(&ca, &ca.leaf(0x9101));
    let proxy = Proxy::start(
        &files,
        echo_backend(),
        &["--events", "off", "--status", "127.0.0.1:0"],
    );
    let status = proxy.status.expect("status");
    let polling = wait_until_blocking(DEADLINE, || detection(status) == "poll only: events off");
    assert!(polling, "{}", detection(status));
    let (_, _, metrics) = http(status, "GET", "/metrics");
    assert!(
        metrics.contains("tls_reload_detection_events 0"),
        "{metrics}"
    );

    let (exit, _, stderr) = run_to_end(&[
        "--listen",
        "127.0.0.1:0",
        "--target",
        "127.0.0.1:9",
        "--cert",
        "c",
        "--key",
        "k",
        "--events",
        "maybe",
    ]);
    assert_eq!(exit.code(), Some(2));
    assert!(stderr.contains("--events: expected on or off"), "{stderr}");
}
