//! A key mangled on its way to disk is refused at reload, and neither the
//! stdout line, the logs nor the unauthenticated `/status` and `/metrics`
//! pages carry a byte of it: only what is wrong and where, in words.

mod common;

use common::{echo_backend, http, run_to_end, Files, Proxy};
use tls_reload_testkit::{assert_no_pem_bytes, Ca};

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
    assert_no_pem_bytes("the stdout line", &failed, &key_pem);

    let (code, _, body) = http(status, "GET", "/status");
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(
        body.contains("flattened"),
        "the cause is in last_error: {json}"
    );
    assert_no_pem_bytes("/status", &body, &key_pem);
    let (_, _, metrics) = http(status, "GET", "/metrics");
    assert_no_pem_bytes("/metrics", &metrics, &key_pem);
    assert_no_pem_bytes("the logs", &proxy.stderr(), &key_pem);

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
    assert_no_pem_bytes("start-up", &format!("{stdout}{stderr}"), &key_pem);
}
