//! `/status` and `/metrics` report the trust in force: each client CA's
//! not-after and each CRL's `nextUpdate`, beside the served leaf's.

mod common;

use common::{echo_backend, http, Files, Proxy};
use tls_reload_testkit::{write_new, Ca};

#[test]
fn client_cas_and_crls_are_in_status_and_metrics() {
    let (_files, proxy) = trusting(&Ca::new("clients"));
    let status = proxy.status.expect("status");
    let (code, _, body) = http(status, "GET", "/status");
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let ca_json = &json["client_cas"][0];
    assert_eq!(ca_json["subject"], "CN=clients", "{body}");
    let serial = ca_json["serial"].as_str().expect("serial").to_owned();
    let ca_not_after = ca_json["not_after"].as_i64().expect("not_after");
    let crl_json = &json["crls"][0];
    assert_eq!(crl_json["issuer"], "CN=clients", "{body}");
    let next_update = crl_json["next_update"].as_i64().expect("next_update");

    let (_, _, metrics) = http(status, "GET", "/metrics");
    let leaf = format!(
        "tls_reload_certificate_not_after_seconds{{kind=\"leaf\",serial=\"1001\"}} {}\n",
        json["leaf"]["not_after"].as_i64().expect("leaf not_after")
    );
    let client_ca = format!(
        "tls_reload_certificate_not_after_seconds{{kind=\"client_ca\",serial=\"{serial}\"}} {ca_not_after}\n"
    );
    let crl_line =
        format!("tls_reload_crl_next_update_seconds{{issuer=\"CN=clients\"}} {next_update}\n");
    for line in [leaf, client_ca, crl_line] {
        assert!(metrics.contains(&line), "{line}in:\n{metrics}");
    }
}

/// A CRL issuer is text from a file; in a label value prometheus-client
/// escapes its backslashes, double quotes and newlines, so the page stays
/// parseable whatever the name.
#[test]
fn label_values_from_certificates_are_escaped() {
    let (_files, proxy) = trusting(&Ca::new("say \"hi\" \\ then\nbreak"));
    let status = proxy.status.expect("status");
    let (_, _, body) = http(status, "GET", "/status");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let issuer = json["crls"][0]["issuer"].as_str().expect("issuer");
    for special in ['"', '\\', '\n'] {
        assert!(issuer.contains(special), "{special:?} not in {issuer:?}");
    }
    let escaped = issuer
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    let (_, _, metrics) = http(status, "GET", "/metrics");
    let line = format!("\ntls_reload_crl_next_update_seconds{{issuer=\"{escaped}\"}} ");
    assert!(metrics.contains(&line), "{line:?} not in:\n{metrics}");
    // No raw newline inside a sample: every line is a comment or a sample.
    for sample in metrics.lines() {
        assert!(
            sample.starts_with("# ") || sample.starts_with("tls_reload_"),
            "{sample:?} in:\n{metrics}"
        );
    }
}

/// A proxy (leaf serial 1001) with a status page, trusting `clients` and
/// their empty CRL.
fn trusting(clients: &Ca) -> (Files, Proxy) {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let bundle = write_new(files.dir.path(), "clients.pem", clients.pem());
    let crl = write_new(files.dir.path(), "clients.crl", clients.crl(&[]));
    let proxy = Proxy::start(
        &files,
        echo_backend(),
        &[
            "--status",
            "127.0.0.1:0",
            "--client-ca",
            bundle.to_str().expect("utf-8"),
            "--crl",
            crl.to_str().expect("utf-8"),
        ],
    );
    (files, proxy)
}
