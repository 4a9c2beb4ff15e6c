//! The SNI resolver in a plain rustls server config, over loopback: rustls
//! clients asking for different names get the pair that claims the name.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use futures::AsyncReadExt;
use rustls::SignatureScheme;
use smol::Async;
use tls_reload_acceptor::{build_pair_blocking, BuiltPair, PairFiles, SniResolver, Template};
use tls_reload_testkit::{
    new_key, provider, rsa_key, served_serial, sni_client_config, tls_connect_to, write_combined,
    Ca, Leaf,
};

/// A server whose config resolves through `resolver`; each handshake is
/// followed by a read until the client closes.
fn serve(resolver: Arc<SniResolver>) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind");
    let addr = listener.get_ref().local_addr().expect("addr");
    smol::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            smol::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.read(&mut [0; 1]).await;
                }
            })
            .detach();
        }
    })
    .detach();
    addr
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            ca: Ca::new("CA"),
        }
    }

    /// A pair `stem` for `names` with this serial and key, built.
    fn pair_with(&self, stem: &str, serial: u16, names: &[&str], key: rcgen::KeyPair) -> BuiltPair {
        let leaf: Leaf = self.ca.named_leaf(serial, names, key);
        let pem = write_combined(self.dir.path(), stem, &leaf);
        build_pair_blocking(&PairFiles::combined(stem, pem), &template()).expect("builds")
    }

    fn pair(&self, stem: &str, serial: u16, names: &[&str]) -> BuiltPair {
        self.pair_with(stem, serial, names, new_key())
    }
}

fn template() -> Template {
    Template::new(provider())
}

/// The serial served to a client asking for `name` (no SNI when `sni` is
/// false; the certificate is then checked against `name` all the same), or
/// the handshake error.
fn ask(
    addr: SocketAddr,
    pki: &Pki,
    name: &str,
    sni: bool,
    schemes: Option<&[SignatureScheme]>,
) -> std::io::Result<String> {
    let config = sni_client_config(&pki.ca, schemes);
    smol::block_on(async {
        let stream = tls_connect_to(addr, &config, name, sni).await?;
        Ok(served_serial(&stream))
    })
}

#[test]
fn exact_names_then_a_one_label_wildcard_then_the_default() {
    let pki = Pki::new();
    let resolver = Arc::new(SniResolver::new());
    resolver.update(|batch| {
        batch
            .insert(pki.pair("api", 0x1001, &["api.example.com"]))
            .insert(pki.pair("wild", 0x1002, &["*.example.com"]))
            .insert(pki.pair("www", 0x1003, &["www.example.com", "example.com"]));
    });
    let addr = serve(resolver.clone());

    // The exact name wins over the wildcard that also covers it.
    assert_eq!(
        ask(addr, &pki, "api.example.com", true, None).expect("api"),
        "1001"
    );
    assert_eq!(
        ask(addr, &pki, "www.example.com", true, None).expect("www"),
        "1003"
    );
    assert_eq!(
        ask(addr, &pki, "example.com", true, None).expect("apex"),
        "1003"
    );
    // One label under the wildcard: covered.
    assert_eq!(
        ask(addr, &pki, "a.example.com", true, None).expect("one label"),
        "1002"
    );
    // Two labels, or the apex alone: not covered. No default: refused.
    let before = resolver.refused();
    ask(addr, &pki, "a.b.example.com", true, None).expect_err("two labels");
    ask(addr, &pki, "other.test", true, None).expect_err("unknown name");
    ask(addr, &pki, "api.example.com", false, None).expect_err("no SNI");
    assert_eq!(resolver.refused() - before, 3);

    // With a default pair, the same clients get it.
    let default = pki.pair(
        "default",
        0x1004,
        &["a.b.example.com", "other.test", "api.example.com"],
    );
    resolver.set_default(Some(default.certified_key().clone()));
    assert_eq!(
        ask(addr, &pki, "a.b.example.com", true, None).expect("default"),
        "1004"
    );
    assert_eq!(
        ask(addr, &pki, "other.test", true, None).expect("default"),
        "1004"
    );
    assert_eq!(
        ask(addr, &pki, "api.example.com", false, None).expect("no SNI"),
        "1004"
    );
    assert_eq!(resolver.refused() - before, 3);
}

#[test]
fn names_are_compared_case_insensitively_without_a_trailing_dot() {
    let pki = Pki::new();
    let resolver = SniResolver::new();
    resolver.insert(&pki.pair("api", 0x1001, &["Api.Example.COM."]));
    resolver.insert(&pki.pair("wild", 0x1002, &["*.Wild.Example.com"]));
    for name in ["api.example.com", "API.EXAMPLE.COM", "api.example.com."] {
        assert!(resolver.serves(Some(name)), "{name}");
    }
    for name in ["a.wild.example.com", "A.WILD.example.com."] {
        assert!(resolver.serves(Some(name)), "{name}");
    }
    for name in ["wild.example.com", "a.b.wild.example.com", "", ".", "com"] {
        assert!(!resolver.serves(Some(name)), "{name}");
    }
    assert!(!resolver.serves(None));
    // A client sending upper case is served too (rustls lowercases it).
    // (webpki would refuse the odd SANs above, so a plain one.)
    resolver.insert(&pki.pair("plain", 0x1003, &["plain.example.com"]));
    let addr = serve(Arc::new(resolver));
    let served = ask(addr, &pki, "PLAIN.Example.com", true, None).expect("plain");
    assert_eq!(served, "1003");
}

#[test]
fn ecdsa_and_rsa_pairs_for_one_name_are_chosen_by_the_client_schemes() {
    let pki = Pki::new();
    let resolver = Arc::new(SniResolver::new());
    resolver.update(|batch| {
        // The RSA pair's stem sorts first: the key type decides, not the stem.
        batch
            .insert(pki.pair_with("a-rsa", 0x1001, &["both.example.com"], rsa_key()))
            .insert(pki.pair_with("b-ecdsa", 0x1002, &["both.example.com"], new_key()));
    });
    let addr = serve(resolver);
    let rsa_only = [
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ];
    let ecdsa_only = [SignatureScheme::ECDSA_NISTP256_SHA256];
    let name = "both.example.com";
    assert_eq!(
        ask(addr, &pki, name, true, Some(&rsa_only)).expect("rsa"),
        "1001"
    );
    assert_eq!(
        ask(addr, &pki, name, true, Some(&ecdsa_only)).expect("ecdsa"),
        "1002"
    );
    // A client that verifies both gets ECDSA.
    assert_eq!(ask(addr, &pki, name, true, None).expect("either"), "1002");
}

#[test]
fn two_pairs_of_one_key_type_claiming_a_name_serve_it_by_stem_order() {
    let pki = Pki::new();
    let resolver = Arc::new(SniResolver::new());
    resolver.update(|batch| {
        batch
            .insert(pki.pair("b", 0x1002, &["dup.example.com", "b.example.com"]))
            .insert(pki.pair("a", 0x1001, &["dup.example.com"]));
    });
    let addr = serve(resolver.clone());
    assert_eq!(
        ask(addr, &pki, "dup.example.com", true, None).expect("dup"),
        "1001"
    );
    assert_eq!(
        ask(addr, &pki, "b.example.com", true, None).expect("b"),
        "1002"
    );
    // Once "a" is gone, "b" serves the name.
    assert!(resolver.remove("a"));
    assert!(!resolver.remove("a"));
    assert_eq!(
        ask(addr, &pki, "dup.example.com", true, None).expect("dup"),
        "1002"
    );
}

#[test]
fn replacing_one_pair_serves_it_at_the_next_handshake_and_keeps_the_others() {
    let pki = Pki::new();
    let resolver = Arc::new(SniResolver::new());
    resolver.update(|batch| {
        batch
            .insert(pki.pair("a", 0x1001, &["a.example.com"]))
            .insert(pki.pair("b", 0x1002, &["b.example.com"]));
    });
    let addr = serve(resolver.clone());
    assert_eq!(
        ask(addr, &pki, "a.example.com", true, None).expect("a"),
        "1001"
    );

    // A renewal: same names, same key type.
    resolver.insert(&pki.pair("a", 0x1011, &["a.example.com"]));
    assert_eq!(
        ask(addr, &pki, "a.example.com", true, None).expect("a"),
        "1011"
    );
    assert_eq!(
        ask(addr, &pki, "b.example.com", true, None).expect("b"),
        "1002"
    );

    // A renewal that changes the names: the old name is no longer served.
    resolver.insert(&pki.pair("a", 0x1021, &["a2.example.com"]));
    assert_eq!(
        ask(addr, &pki, "a2.example.com", true, None).expect("a2"),
        "1021"
    );
    ask(addr, &pki, "a.example.com", true, None).expect_err("old name");
    // And a key type change (ECDSA to RSA) is served too.
    resolver.insert(&pki.pair_with("b", 0x1022, &["b.example.com"], rsa_key()));
    assert_eq!(
        ask(addr, &pki, "b.example.com", true, None).expect("b"),
        "1022"
    );
    assert_eq!(resolver.stems(), ["a", "b"]);
    assert_eq!(resolver.len(), 2);
}
