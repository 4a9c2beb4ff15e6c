//! A key mangled on its way to disk is refused at reload, and neither the
//! stdout line, the logs nor the unauthenticated `/status` and `/metrics`
//! pages carry a byte of it: only what is wrong and where, in words.

mod common;

use common::{echo_backend, http, run_to_end, Files, Proxy};
use tls_reload_testkit::Ca;

/// The base64 of the key, cut in windows long enough not to appear by
/// chance.
fn secret_windows(key_pem: &str) -> Vec<String> {
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    body.as_bytes()
        .chunks(12)
        .filter(|w| w.len() == 12)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

fn assert_no_key(what: &str, text: &str, key_pem: &str) {
    for window in secret_windows(key_pem) {
        assert!(
            !text.contains(&window),
            "{what} leaks key bytes ({window}): {text}"
        );
    }
    let byte_list = text
        .split(|c: char| !(c.is_ascii_digit() || c == ',' || c == ' '))
        .find(|run| run.matches(',').count() >= 8);
    assert!(
        byte_list.is_none(),
        "{what} leaks a byte list: {byte_list:?}"
    );
}

#[test]
fn a_flattened_key_never_reaches_the_status_page_or_the_logs() {
    let ca = Ca::new("proxy test CA");
    let leaf = ca.leaf(0x5001);
    let key_pem = leaf.key.serialize_pem();
    let files = Files::new(&ca, &leaf);
    let proxy = Proxy::start(
        &files,
        echo_backend(),
        &["--status", "127.0.0.1:0", "--interval", "20ms"],
    );
    let status = proxy.status.expect("status");

    // The key as it comes out of an environment variable: one line.
    std::fs::write(&files.key, key_pem.replace('\n', " ")).expect("write");
    let failed = proxy.expect_line("reload failed: ");
    assert!(
        failed.contains("malformed PEM at line 1: BEGIN and END markers on one line"),
        "{failed}"
    );
    assert_no_key("the stdout line", &failed, &key_pem);

    let (code, _, body) = http(status, "GET", "/status");
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(
        body.contains("flattened"),
        "the cause is in last_error: {json}"
    );
    assert_no_key("/status", &body, &key_pem);
    let (_, _, metrics) = http(status, "GET", "/metrics");
    assert_no_key("/metrics", &metrics, &key_pem);
    assert_no_key("the logs", &proxy.stderr(), &key_pem);

    // At start-up the same words, on stderr.
    let (exit, stdout, stderr) = run_to_end(&[
        "--listen",
        "127.0.0.1:0",
        "--target",
        "127.0.0.1:9",
        "--cert",
        files.cert.to_str().expect("utf-8"),
        "--key",
        files.key.to_str().expect("utf-8"),
    ]);
    assert!(!exit.success());
    assert!(
        stderr.contains("BEGIN and END markers on one line"),
        "{stderr}"
    );
    assert_no_key("start-up", &format!("{stdout}{stderr}"), &key_pem);
}
