//! Named pairs behind one acceptor, over loopback with real rustls clients
//! asking for different names: a directory whose pairs are added,
//! replaced, broken and removed while the acceptor serves; resumption
//! across one pair's reload; mTLS with a directory of pairs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::{ClientConfig, HandshakeKind};
use tls_reload_acceptor::{ReloadEvent, ReloadingAcceptor, Template};

/// A CA, a default pair and a directory of named pairs, served by an
/// acceptor with events on and a short interval.
struct Sni {
    dir: tempfile::TempDir,
    ca: Ca,
    acceptor: ReloadingAcceptor,
    log: EventLog,
    server: Server,
    client: Arc<ClientConfig>,
}

const INTERVAL: Duration = Duration::from_millis(50);

impl Sni {
    async fn start(pairs: &[(&str, u16, &[&str])]) -> Self {
        Self::start_with(pairs, |builder| builder).await
    }

    async fn start_with(
        pairs: &[(&str, u16, &[&str])],
        tweak: impl FnOnce(tls_reload_acceptor::Builder) -> tls_reload_acceptor::Builder,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("SNI CA");
        let default = ca.named_leaf(0x1000, &["default.test"], new_key());
        let materials = write_pair(dir.path(), &default);
        let pairs_dir = dir.path().join("pairs");
        std::fs::create_dir(&pairs_dir).expect("mkdir");
        for (stem, serial, names) in pairs {
            write_combined(&pairs_dir, stem, &ca.named_leaf(*serial, names, new_key()));
        }
        let builder = ReloadingAcceptor::builder(materials)
            .template(Template::new(provider()))
            .cert_dir(&pairs_dir)
            .interval(INTERVAL);
        let acceptor = tweak(builder).build().await.expect("starts");
        smol::spawn(acceptor.reloader()).detach();
        let log = EventLog::new(&acceptor);
        let server = serve::<Smol>(&acceptor, Serve::SpawnPerConnection).expect("serve");
        let client = sni_client_config(&ca, None);
        Self {
            dir,
            ca,
            acceptor,
            log,
            server,
            client,
        }
    }

    fn pairs_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("pairs")
    }

    /// The serial served to a client asking for `name`.
    async fn served(&self, name: &str) -> std::io::Result<String> {
        let mut stream = tls_connect_to(self.server.addr, &self.client, name, true).await?;
        echo_round_trip(&mut stream, b"ping").await?;
        Ok(served_serial(&stream))
    }

    /// Waits until a client asking for `name` gets `serial`.
    async fn wait_served(&self, name: &str, serial: &str) {
        let served = wait_until(DEADLINE, || async {
            self.served(name).await.ok().as_deref() == Some(serial)
        })
        .await;
        assert!(served, "{name} never served {serial}: {:?}", self.log.all());
    }

    /// Waits for an event that matches.
    async fn wait_event(&self, what: &str, matches: impl Fn(&ReloadEvent) -> bool) -> ReloadEvent {
        let mut found = None;
        wait_until(DEADLINE, || {
            found = self.log.all().into_iter().find(|event| matches(event));
            let done = found.is_some();
            async move { done }
        })
        .await;
        found.unwrap_or_else(|| panic!("no {what} event: {:?}", self.log.all()))
    }

    fn write(&self, stem: &str, serial: u16, names: &[&str]) -> Leaf {
        let leaf = self.ca.named_leaf(serial, names, new_key());
        write_atomic(
            &self.pairs_dir().join(format!("{stem}.pem")),
            leaf.cert_pem() + &leaf.key_pem(),
        );
        leaf
    }
}

fn applied(stem: &'static str, serial: &'static str) -> impl Fn(&ReloadEvent) -> bool {
    move |event| {
        matches!(event, ReloadEvent::PairApplied { stem: s, leaf, .. }
            if s == stem && leaf.serial_hex() == serial)
    }
}

#[test]
fn names_resolve_to_their_pairs_and_anything_else_to_the_default() {
    smol::block_on(async {
        let sni = Sni::start(&[
            ("a", 0x1001, &["a.example.com"]),
            ("wild", 0x1002, &["*.example.com"]),
        ])
        .await;
        assert_eq!(sni.served("a.example.com").await.expect("a"), "1001");
        assert_eq!(sni.served("x.example.com").await.expect("wild"), "1002");
        // Two labels, the apex, an unknown name, no SNI: the default pair.
        let default_client = sni_client_config(&sni.ca, None);
        for name in ["default.test"] {
            let stream = tls_connect_to(sni.server.addr, &default_client, name, true)
                .await
                .expect("default");
            assert_eq!(served_serial(&stream), "1000");
            let stream = tls_connect_to(sni.server.addr, &default_client, name, false)
                .await
                .expect("no SNI");
            assert_eq!(served_serial(&stream), "1000");
        }
        // (the default's certificate does not name these, so the client
        // refuses it: the server served the default, not a pair)
        for name in ["a.b.example.com", "example.com", "other.test"] {
            let err = sni
                .served(name)
                .await
                .expect_err("default for another name");
            assert!(err.to_string().contains("default.test"), "{name}: {err}");
        }

        let status = sni.acceptor.status();
        let stems: Vec<&str> = status.pairs.iter().map(|p| p.stem.as_str()).collect();
        assert_eq!(stems, ["a", "wild"]);
        assert_eq!(status.pairs[0].names, ["a.example.com"]);
        assert_eq!(
            status.pairs[0].leaf.as_ref().map(|l| l.serial_hex()),
            Some("1001".into())
        );
        assert_eq!(status.pairs[0].last_error, None);
        // No start-up event.
        assert!(sni.log.all().is_empty(), "{:?}", sni.log.all());
    });
}

#[test]
fn a_directory_adds_replaces_breaks_and_removes_pairs_one_by_one() {
    smol::block_on(async {
        let sni = Sni::start(&[
            ("a", 0x1001, &["a.example.com"]),
            ("b", 0x1002, &["b.example.com"]),
        ])
        .await;

        // Added.
        sni.write("c", 0x1003, &["c.example.com"]);
        sni.wait_event("added", applied("c", "1003")).await;
        sni.wait_served("c.example.com", "1003").await;
        assert_eq!(
            ReloadEvent::PairApplied {
                stem: "c".into(),
                generation: 1,
                leaf: tls_reload_acceptor::LeafInfo::from_der(
                    sni.ca
                        .named_leaf(0x1003, &["c.example.com"], new_key())
                        .cert
                        .der()
                )
                .expect("leaf"),
            }
            .to_string(),
            "reload applied name=c serial=1003"
        );

        // Replaced by a rename.
        sni.write("a", 0x1011, &["a.example.com"]);
        sni.wait_event("renamed", applied("a", "1011")).await;
        sni.wait_served("a.example.com", "1011").await;
        // Replaced in place.
        let leaf = sni.ca.named_leaf(0x1021, &["a.example.com"], new_key());
        write_in_place(
            &sni.pairs_dir().join("a.pem"),
            leaf.cert_pem() + &leaf.key_pem(),
        );
        sni.wait_served("a.example.com", "1021").await;

        // Broken: a key of another certificate. The message names the
        // file; the old version keeps serving; the others keep updating.
        let other = new_key();
        write_atomic(
            &sni.pairs_dir().join("a.pem"),
            leaf.cert_pem() + &other.serialize_pem(),
        );
        let failed = sni
            .wait_event(
                "failed",
                |e| matches!(e, ReloadEvent::PairFailed { stem, .. } if stem == "a"),
            )
            .await;
        let line = failed.to_string();
        assert!(line.starts_with("reload failed: "), "{line}");
        assert!(line.contains("a.pem"), "{line}");
        sni.write("b", 0x1012, &["b.example.com"]);
        sni.wait_served("b.example.com", "1012").await;
        assert_eq!(sni.served("a.example.com").await.expect("a"), "1021");
        let status = sni.acceptor.status();
        let a = status.pairs.iter().find(|p| p.stem == "a").expect("a");
        assert!(
            a.last_error.as_deref().unwrap_or("").contains("a.pem"),
            "{a:?}"
        );

        // Removed: dropped once confirmed; the name falls to the default.
        std::fs::remove_file(sni.pairs_dir().join("c.pem")).expect("rm");
        let removed = sni
            .wait_event(
                "removed",
                |e| matches!(e, ReloadEvent::PairRemoved { stem } if stem == "c"),
            )
            .await;
        assert_eq!(removed.to_string(), "reload removed name=c");
        let err = sni.served("c.example.com").await.expect_err("gone");
        assert!(err.to_string().contains("default.test"), "{err}");
        assert!(sni.acceptor.status().pairs.iter().all(|p| p.stem != "c"));
    });
}

#[test]
fn reload_now_rebuilds_every_named_pair_too() {
    smol::block_on(async {
        // No check before an hour and no events: only reload_now can see
        // the new files.
        let sni = Sni::start_with(
            &[
                ("a", 0x1101, &["a.example.com"]),
                ("b", 0x1102, &["b.example.com"]),
            ],
            |builder| builder.interval(Duration::from_secs(3600)).events(false),
        )
        .await;
        sni.write("a", 0x1111, &["a.example.com"]);
        // b's new files do not build: it keeps its last good version.
        std::fs::write(sni.pairs_dir().join("b.pem"), "not a pair").expect("write");
        assert_eq!(sni.served("a.example.com").await.expect("a"), "1101");

        let reloaded = sni.acceptor.reload_now().await.expect("the default pair");
        assert_eq!(reloaded.leaf.serial_hex(), "1000");
        assert_eq!(sni.served("a.example.com").await.expect("a"), "1111");
        assert_eq!(sni.served("b.example.com").await.expect("b"), "1102");
        let status = sni.acceptor.status();
        let b = status
            .pairs
            .iter()
            .find(|pair| pair.stem == "b")
            .expect("b listed");
        let error = b.last_error.as_deref().expect("b's failure");
        assert!(error.contains("b.pem"), "{error}");
        assert!(
            sni.log.all().iter().any(|event| matches!(
                event,
                ReloadEvent::PairFailed { stem, .. } if stem == "b"
            )),
            "{:?}",
            sni.log.all()
        );
    })
}

#[test]
fn a_pair_removed_and_written_again_within_an_interval_never_flaps() {
    smol::block_on(async {
        let sni = Sni::start(&[("d", 0x1001, &["d.example.com"])]).await;
        let path = sni.pairs_dir().join("d.pem");
        let leaf = sni.ca.named_leaf(0x1002, &["d.example.com"], new_key());
        std::fs::remove_file(&path).expect("rm");
        write_in_place(&path, leaf.cert_pem() + &leaf.key_pem());
        sni.wait_served("d.example.com", "1002").await;
        // Well past the confirmation time: still there, never removed,
        // never failed.
        async_io::Timer::after(Duration::from_millis(1500)).await;
        assert_eq!(sni.served("d.example.com").await.expect("d"), "1002");
        let events = sni.log.all();
        assert!(
            !events.iter().any(|e| matches!(
                e,
                ReloadEvent::PairRemoved { .. } | ReloadEvent::PairFailed { .. }
            )),
            "{events:?}"
        );
    });
}

#[test]
fn a_broken_pair_at_start_up_is_reported_and_the_others_are_served() {
    smol::block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("CA");
        write_combined(
            dir.path(),
            "good",
            &ca.named_leaf(0x1001, &["good.test"], new_key()),
        );
        write_new(
            dir.path(),
            "bad.pem",
            ca.named_leaf(0x1002, &["bad.test"], new_key()).cert_pem(),
        );
        let acceptor = ReloadingAcceptor::builder(write_pair(dir.path(), &ca.leaf(0x1000)))
            .template(Template::new(provider()))
            .cert_dir(dir.path())
            .build()
            .await
            .expect("a broken pair among good ones is not a start-up error");
        let status = acceptor.status();
        let bad = status
            .pairs
            .iter()
            .find(|p| p.stem == "bad")
            .expect("bad listed");
        assert!(bad.leaf.is_none());
        assert!(
            bad.last_error.as_deref().unwrap_or("").contains("bad.pem"),
            "{bad:?}"
        );
        assert!(status
            .pairs
            .iter()
            .any(|p| p.stem == "good" && p.leaf.is_some()));
        // `tls.crt`/`tls.key` of the default pair sit in the same directory:
        // they are a pair too (the directory layout), and build.
        assert!(status.pairs.iter().any(|p| p.stem == "tls"));
        let unreadable = ReloadingAcceptor::builder(write_pair(dir.path(), &ca.leaf(0x1000)))
            .template(Template::new(provider()))
            .cert_dir(dir.path().join("missing"))
            .build()
            .await
            .expect_err("an unreadable directory");
        assert!(unreadable.to_string().contains("missing"), "{unreadable}");
    });
}

#[test]
fn sessions_resume_across_one_pairs_reload() {
    smol::block_on(async {
        let sni = Sni::start(&[
            ("a", 0x1001, &["a.example.com"]),
            ("b", 0x1002, &["b.example.com"]),
        ])
        .await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(sni.ca.der()).expect("root");
        let resuming = Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let kind = |name: &'static str| {
            let resuming = resuming.clone();
            let addr = sni.server.addr;
            async move {
                let mut stream = tls_connect_to(addr, &resuming, name, true)
                    .await
                    .expect("connect");
                echo_round_trip(&mut stream, b"ping").await.expect("echo");
                stream.get_ref().1.handshake_kind()
            }
        };
        assert_eq!(kind("a.example.com").await, Some(HandshakeKind::Full));
        assert_eq!(kind("a.example.com").await, Some(HandshakeKind::Resumed));
        // Another pair reloads; then the resumed pair itself reloads.
        sni.write("b", 0x1012, &["b.example.com"]);
        sni.wait_served("b.example.com", "1012").await;
        assert_eq!(kind("a.example.com").await, Some(HandshakeKind::Resumed));
        sni.write("a", 0x1011, &["a.example.com"]);
        sni.wait_served("a.example.com", "1011").await;
        assert_eq!(kind("a.example.com").await, Some(HandshakeKind::Resumed));
    });
}

#[test]
fn mtls_applies_to_every_pair_of_a_directory() {
    smol::block_on(async {
        let clients = Ca::new("client CA");
        let ca_dir = tempfile::tempdir().expect("tempdir");
        let ca_file = write_new(ca_dir.path(), "clients.pem", clients.pem());
        let sni = Sni::start_with(&[("a", 0x1001, &["a.example.com"])], |builder| {
            builder.client_ca(&ca_file)
        })
        .await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(sni.ca.der()).expect("root");
        let leaf = clients.localhost_leaf();
        let with_cert = Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_client_auth_cert(leaf.chain_der(), leaf.key_der())
                .expect("client cert"),
        );
        let mut stream = tls_connect_to(sni.server.addr, &with_cert, "a.example.com", true)
            .await
            .expect("with a client certificate");
        echo_round_trip(&mut stream, b"ping").await.expect("echo");
        assert_eq!(served_serial(&stream), "1001");
        // Without one: refused (TLS 1.3 tells at the first read).
        let refused = async {
            let mut stream =
                tls_connect_to(sni.server.addr, &sni.client, "a.example.com", true).await?;
            echo_round_trip(&mut stream, b"ping").await
        };
        refused.await.expect_err("no client certificate");
    });
}

#[test]
fn without_a_default_pair_unknown_names_are_refused_with_unrecognized_name() {
    smol::block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("CA");
        write_combined(
            dir.path(),
            "a",
            &ca.named_leaf(0x1001, &["a.example.com"], new_key()),
        );
        write_combined(
            dir.path(),
            "wild",
            &ca.named_leaf(0x1002, &["*.example.com"], new_key()),
        );
        let acceptor = ReloadingAcceptor::without_default_pair()
            .template(Template::new(provider()))
            .cert_dir(dir.path())
            .build()
            .await
            .expect("starts");
        let server = serve::<Smol>(&acceptor, Serve::SpawnPerConnection).expect("serve");
        let client = sni_client_config(&ca, None);
        let served = |name: &'static str, sni: bool| {
            let client = client.clone();
            async move {
                let mut stream = tls_connect_to(server.addr, &client, name, sni).await?;
                echo_round_trip(&mut stream, b"ping").await?;
                Ok::<_, std::io::Error>(served_serial(&stream))
            }
        };
        assert_eq!(served("a.example.com", true).await.expect("a"), "1001");
        assert_eq!(served("b.example.com", true).await.expect("wild"), "1002");
        for (name, sni) in [
            ("a.b.example.com", true),
            ("other.test", true),
            ("a.example.com", false),
        ] {
            let err = served(name, sni).await.expect_err("refused");
            assert!(
                err.to_string().contains("UnrecognisedName"),
                "{name}: {err}"
            );
        }
        let status = acceptor.status();
        assert_eq!(status.unrecognized_names, 3);
        assert!(status.leaf.is_placeholder());
        assert_eq!(status.pairs.len(), 2);

        // Start-up errors: an empty directory, an unreadable one.
        let empty = tempfile::tempdir().expect("tempdir");
        for bad in [empty.path().to_owned(), dir.path().join("missing")] {
            let err = ReloadingAcceptor::without_default_pair()
                .template(Template::new(provider()))
                .cert_dir(&bad)
                .build()
                .await
                .expect_err("nothing to serve");
            assert!(err.to_string().contains(&*bad.to_string_lossy()), "{err}");
        }
        // Only broken pairs: an error naming the first one's file.
        let broken = tempfile::tempdir().expect("tempdir");
        write_new(
            broken.path(),
            "x.pem",
            ca.named_leaf(0x1003, &["x.test"], new_key()).cert_pem(),
        );
        let err = ReloadingAcceptor::without_default_pair()
            .template(Template::new(provider()))
            .cert_dir(broken.path())
            .build()
            .await
            .expect_err("no pair builds");
        assert!(err.to_string().contains("x.pem"), "{err}");
    });
}

#[test]
fn mtls_with_only_a_directory_of_pairs() {
    smol::block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("CA");
        let clients = Ca::new("client CA");
        let pairs = dir.path().join("pairs");
        std::fs::create_dir(&pairs).expect("mkdir");
        write_combined(
            &pairs,
            "a",
            &ca.named_leaf(0x1001, &["a.example.com"], new_key()),
        );
        let ca_file = write_new(dir.path(), "clients.pem", clients.pem());
        let acceptor = ReloadingAcceptor::without_default_pair()
            .template(Template::new(provider()))
            .cert_dir(&pairs)
            .client_ca(&ca_file)
            .build()
            .await
            .expect("starts");
        let server = serve::<Smol>(&acceptor, Serve::SpawnPerConnection).expect("serve");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der()).expect("root");
        let leaf = clients.localhost_leaf();
        let with_cert = Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_client_auth_cert(leaf.chain_der(), leaf.key_der())
                .expect("client cert"),
        );
        let mut stream = tls_connect_to(server.addr, &with_cert, "a.example.com", true)
            .await
            .expect("with a client certificate");
        echo_round_trip(&mut stream, b"ping").await.expect("echo");
        let without = sni_client_config(&ca, None);
        let refused = async {
            let mut stream = tls_connect_to(server.addr, &without, "a.example.com", true).await?;
            echo_round_trip(&mut stream, b"ping").await
        };
        refused.await.expect_err("no client certificate");
    });
}

#[test]
fn a_trust_change_resets_resumption_for_every_pair() {
    smol::block_on(async {
        let clients = Ca::new("client CA");
        let ca_dir = tempfile::tempdir().expect("tempdir");
        let ca_file = write_new(ca_dir.path(), "clients.pem", clients.pem());
        let sni = Sni::start_with(&[("a", 0x1001, &["a.example.com"])], |builder| {
            builder.client_ca(&ca_file)
        })
        .await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(sni.ca.der()).expect("root");
        let leaf = clients.localhost_leaf();
        let resuming = Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("versions")
                .with_root_certificates(roots)
                .with_client_auth_cert(leaf.chain_der(), leaf.key_der())
                .expect("client cert"),
        );
        let kind = || {
            let resuming = resuming.clone();
            let addr = sni.server.addr;
            async move {
                let mut stream = tls_connect_to(addr, &resuming, "a.example.com", true)
                    .await
                    .expect("connect");
                echo_round_trip(&mut stream, b"ping").await.expect("echo");
                stream.get_ref().1.handshake_kind()
            }
        };
        assert_eq!(kind().await, Some(HandshakeKind::Full));
        assert_eq!(kind().await, Some(HandshakeKind::Resumed));
        // The pair reloads: sessions still resume.
        sni.write("a", 0x1011, &["a.example.com"]);
        sni.wait_event("pair applied", applied("a", "1011")).await;
        assert_eq!(kind().await, Some(HandshakeKind::Resumed));
        // The trust changes (a second client CA): no session resumes.
        write_atomic(
            &ca_file,
            clients.pem() + &Ca::new("another client CA").pem(),
        );
        sni.wait_event("trust applied", |e| {
            matches!(e, ReloadEvent::Applied { .. })
        })
        .await;
        assert_eq!(kind().await, Some(HandshakeKind::Full));
        assert_eq!(kind().await, Some(HandshakeKind::Resumed));
    });
}
