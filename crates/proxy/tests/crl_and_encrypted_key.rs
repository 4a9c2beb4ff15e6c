//! The proxy's `--crl` and `--key-passphrase-file`: an encrypted key is
//! served with its passphrase file; a client a CRL revokes is refused and
//! the others are not; a new CRL applies at the next reload, and one no
//! client CA signed is reported and leaves the old one in force.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{echo_backend, Client, Files, Proxy};
use rustls::ClientConfig;
use tls_reload_testkit::{client_config, openssl, write_atomic, write_new, Ca, Leaf};

const PASSPHRASE: &str = "proxy passphrase: quartz lantern";

/// Whether a client completes a handshake and a round trip through the
/// proxy (a refused client certificate shows on the first read).
fn admitted(addr: std::net::SocketAddr, config: &Arc<ClientConfig>) -> bool {
    Client::connect(addr, config)
        .and_then(|mut client| client.round_trip(b"ping"))
        .is_ok_and(|reply| reply == b"ping")
}

/// Replaces `files.key` with itself encrypted by `openssl pkcs8 -topk8
/// -scrypt` under the passphrase in `pass`.
fn encrypt_key(files: &Files, pass: &Path) {
    let pass_arg = format!("file:{}", pass.display());
    openssl(
        files.dir.path(),
        &[
            "pkcs8", "-topk8", "-scrypt", "-in", "tls.key", "-out", "tls.enc", "-passout",
            &pass_arg,
        ],
    );
    std::fs::rename(files.dir.path().join("tls.enc"), &files.key).expect("rename");
}

#[test]
fn crls_and_an_encrypted_key_through_the_proxy() {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let pass = write_new(files.dir.path(), "tls.pass", format!("{PASSPHRASE}\n"));
    encrypt_key(&files, &pass);
    let clients = Ca::new("clients");
    let (revoked, kept, later) = (
        clients.leaf(0x5a01),
        clients.leaf(0x5a02),
        clients.leaf(0x5a03),
    );
    let bundle = write_new(files.dir.path(), "clients.pem", clients.pem());
    let crl = write_new(files.dir.path(), "clients.crl", clients.crl(&[&revoked]));
    let proxy = Proxy::start(
        &files,
        echo_backend(),
        &[
            "--interval",
            "1h",
            "--key-passphrase-file",
            pass.to_str().expect("utf-8"),
            "--client-ca",
            bundle.to_str().expect("utf-8"),
            "--crl",
            crl.to_str().expect("utf-8"),
        ],
    );
    let client = |leaf: &Leaf| client_config(&ca, Some(leaf));
    assert!(admitted(proxy.addr, &client(&kept)), "{}", proxy.stderr());
    assert!(!admitted(proxy.addr, &client(&revoked)));
    assert!(!admitted(proxy.addr, &client_config(&ca, None)));

    // A CRL of a CA the proxy does not trust: reported, the old one stays.
    write_atomic(&crl, Ca::new("stranger").crl(&[]));
    proxy.signal("HUP");
    let failed = proxy.expect_line("reload failed: ");
    assert!(
        failed.contains("clients.crl: the CRL at line 1 is refused"),
        "{failed}"
    );
    assert!(
        !admitted(proxy.addr, &client(&revoked)),
        "the old CRL stays"
    );

    // A new CRL of the client CA: applied.
    write_atomic(&crl, clients.crl(&[&revoked, &later]));
    proxy.signal("HUP");
    proxy.expect_line("reload applied generation=2 serial=1001");
    assert!(!admitted(proxy.addr, &client(&later)));
    assert!(admitted(proxy.addr, &client(&kept)));

    // A wrong passphrase: reported naming the key file, never the
    // passphrase; the key in memory stays.
    write_atomic(&pass, "wrong-quokka-77\n");
    proxy.signal("HUP");
    let failed = proxy.expect_line("reload failed: ");
    assert!(
        failed.contains("tls.key: the encrypted private key does not decrypt"),
        "{failed}"
    );
    assert!(!failed.contains("quokka"), "{failed}");
    assert!(admitted(proxy.addr, &client(&kept)));
    let everything = format!("{:?}\n{}", proxy.seen(), proxy.stderr());
    for secret in [PASSPHRASE, "quartz", "lantern", "quokka"] {
        assert!(
            !everything.contains(secret),
            "{secret:?} leaked: {everything}"
        );
    }
}
