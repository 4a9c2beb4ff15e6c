//! The example servers' command line and output lines are a contract used by
//! other tools: these tests run the real binaries (smol, async-std and
//! tokio) and talk to them over loopback; and the hyper HTTPS example
//! answers a request, rotates, and answers with the new certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use futures::io::{AsyncReadExt, AsyncWriteExt};
use tls_reload::acceptor::Materials;
use tls_reload_testkit::{
    client_config, connect, fetch_serial, openssl, run_within, served_serial, timeout,
    write_atomic, write_pair, Ca, Leaf, Process, DEADLINE,
};

const SERVERS: [&str; 3] = ["smol_server", "async_std_server", "tokio_server"];

/// The example binary, built next to this test by `cargo test`; built on
/// demand when only this test target was asked for.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .status()
            .expect("cargo build");
        assert!(status.success(), "cargo build --example {name}");
    }
    path
}

/// A running example server, its stdout read line by line.
struct Server {
    process: Process,
    addr: SocketAddr,
}

impl Server {
    /// Starts `name` serving `materials` (`--cert`, `--key`), with more flags.
    fn over(name: &str, materials: &Materials, extra: &[&str]) -> Self {
        let pair = [
            "--cert",
            path_str(materials.cert()),
            "--key",
            path_str(materials.key()),
        ];
        Self::start(name, &[&pair[..], extra].concat())
    }

    fn start(name: &str, args: &[&str]) -> Self {
        let listen = [args, &["--listen", "127.0.0.1:0"]].concat();
        let process = spawn(name, &listen);
        let line = process.expect_line("listening on ");
        let addr: SocketAddr = line["listening on ".len()..]
            .parse()
            .unwrap_or_else(|e| panic!("{name}: bad listening line {line:?}: {e}"));
        assert_ne!(addr.port(), 0, "the real port is printed");
        Self { process, addr }
    }
}

impl std::ops::Deref for Server {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

/// Starts any example with these arguments, reading its stdout.
fn spawn(name: &str, args: &[&str]) -> Process {
    Process::spawn(
        Command::new(example(name))
            .args(args)
            .env("RUST_LOG", "warn"),
    )
}

fn run_to_exit(name: &str, args: &[&str]) -> Output {
    run_within(
        Command::new(example(name))
            .args(args)
            .args(["--listen", "127.0.0.1:0"]),
        DEADLINE,
    )
}

/// Writes `leaf` over the pair (key first, then certificate) and expects
/// the server's first applied reload to serve it as generation 2.
fn rotate_expecting_generation_2(
    server: &Server,
    materials: &Materials,
    leaf: &Leaf,
    context: &str,
) {
    write_atomic(materials.key(), leaf.key_pem());
    write_atomic(materials.cert(), leaf.cert_pem());
    let applied = server.expect_line("reload applied ");
    assert_eq!(
        applied,
        format!("reload applied generation=2 serial={}", leaf.serial_hex()),
        "{context}"
    );
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[test]
fn rotation_prints_applied_and_failed_lines_and_serves_the_new_certificate() {
    for name in SERVERS {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("example CA");
        let (first, second) = (ca.leaf(0x1101), ca.leaf(0x1202));
        let materials = write_pair(dir.path(), &first);
        let server = Server::over(name, &materials, &["--interval-ms", "20"]);
        let config = client_config(&ca, None);

        let served = smol::block_on(fetch_serial(server.addr, &config)).expect("first handshake");
        assert_eq!(served, first.serial_hex(), "{name}");
        assert!(
            server.drain().is_empty(),
            "{name}: the start-up load prints nothing: {:?}",
            server.seen()
        );

        // Key first, then the certificate: the reloader may see a mismatch in between.
        rotate_expecting_generation_2(&server, &materials, &second, name);
        let served =
            smol::block_on(fetch_serial(server.addr, &config)).expect("handshake after rotation");
        assert_eq!(served, second.serial_hex(), "{name}");

        // Garbage over the certificate: one failure line naming the file; the old pair keeps serving.
        write_atomic(materials.cert(), "not a certificate");
        let failed = server.expect_line("reload failed: ");
        assert!(
            failed.contains(path_str(materials.cert())),
            "{name}: {failed}"
        );
        let served =
            smol::block_on(fetch_serial(server.addr, &config)).expect("handshake on bad material");
        assert_eq!(served, second.serial_hex(), "{name}");

        // A missing key is a detection error, reported the same way.
        std::fs::remove_file(materials.key()).expect("remove key");
        let failed = server.expect_line("reload failed: ");
        assert!(
            failed.contains(path_str(materials.key())),
            "{name}: {failed}"
        );

        // Good material again: applied.
        let third = ca.leaf(0x1303);
        write_atomic(materials.key(), third.key_pem());
        write_atomic(materials.cert(), third.cert_pem());
        let applied = server.expect_line("reload applied ");
        assert!(
            applied.ends_with(&format!("serial={}", third.serial_hex())),
            "{name}: {applied}"
        );
        assert!(
            applied.starts_with("reload applied generation=3 "),
            "{name}: {applied}"
        );
    }
}

#[test]
fn client_ca_and_client_ca_dir_require_a_client_certificate() {
    for name in SERVERS {
        for flag in ["--client-ca", "--client-ca-dir"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (ca, clients) = (Ca::new("server CA"), Ca::new("client CA"));
            let materials = write_pair(dir.path(), &ca.leaf(0x1401));
            let trust = if flag == "--client-ca" {
                dir.path().join("clients.pem")
            } else {
                let cas = dir.path().join("clients.d");
                std::fs::create_dir(&cas).expect("mkdir");
                cas
            };
            let bundle = if flag == "--client-ca" {
                trust.clone()
            } else {
                trust.join("client-ca.pem")
            };
            std::fs::write(&bundle, clients.pem()).expect("write CA");
            let server = Server::start(
                name,
                &[
                    "--cert",
                    path_str(materials.cert()),
                    "--key",
                    path_str(materials.key()),
                    flag,
                    path_str(&trust),
                ],
            );
            let anonymous = client_config(&ca, None);
            assert!(
                smol::block_on(fetch_serial(server.addr, &anonymous)).is_err(),
                "{name} {flag}: a client without a certificate is refused"
            );
            let stranger = Ca::new("stranger").leaf(0x1403);
            assert!(
                smol::block_on(fetch_serial(
                    server.addr,
                    &client_config(&ca, Some(&stranger))
                ))
                .is_err(),
                "{name} {flag}: a client of another CA is refused"
            );
            let client = clients.leaf(0x1402);
            let authenticated = client_config(&ca, Some(&client));
            smol::block_on(fetch_serial(server.addr, &authenticated))
                .unwrap_or_else(|e| panic!("{name} {flag}: a client of the CA is admitted: {e}"));
        }
    }
}

#[test]
fn crl_and_key_passphrase_file_flags() {
    for name in SERVERS {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, clients) = (Ca::new("server CA"), Ca::new("client CA"));
        let materials = write_pair(dir.path(), &ca.leaf(0x1601));
        let pass = dir.path().join("tls.pass");
        std::fs::write(&pass, "example passphrase\n").expect("write passphrase");
        let pass_arg = format!("file:{}", pass.display());
        openssl(
            dir.path(),
            &[
                "pkcs8", "-topk8", "-scrypt", "-in", "tls.key", "-out", "tls.enc", "-passout",
                &pass_arg,
            ],
        );
        std::fs::rename(dir.path().join("tls.enc"), materials.key()).expect("rename");
        let bundle = dir.path().join("clients.pem");
        std::fs::write(&bundle, clients.pem()).expect("write CA");
        let (revoked, kept) = (clients.leaf(0x1602), clients.leaf(0x1603));
        let crl = dir.path().join("clients.crl");
        std::fs::write(&crl, clients.crl(&[&revoked])).expect("write CRL");
        let server = Server::over(
            name,
            &materials,
            &[
                "--key-passphrase-file",
                path_str(&pass),
                "--client-ca",
                path_str(&bundle),
                "--crl",
                path_str(&crl),
                "--interval-ms",
                "50",
            ],
        );
        let fetch = |leaf: &Leaf| {
            smol::block_on(fetch_serial(server.addr, &client_config(&ca, Some(leaf))))
        };
        fetch(&kept).unwrap_or_else(|e| panic!("{name}: a client of the CA is admitted: {e}"));
        assert!(
            fetch(&revoked).is_err(),
            "{name}: the revoked client is refused"
        );

        write_atomic(&crl, clients.crl(&[&revoked, &kept]));
        let applied = server.expect_line("reload applied ");
        assert!(
            applied.starts_with("reload applied generation=2 "),
            "{name}: {applied}"
        );
        assert!(fetch(&kept).is_err(), "{name}: revoked by the new CRL");
    }
}

#[test]
fn a_bad_first_load_exits_non_zero_naming_the_file_and_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    let good = ca.leaf(0x1501);
    let materials = write_pair(dir.path(), &good);
    let (cert, key) = (path_str(materials.cert()), path_str(materials.key()));
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, ca.leaf(0x1502).key_pem()).expect("write");
    let expired = dir.path().join("expired.crt");
    std::fs::write(&expired, ca.expired_leaf(0x1503, &good.key).cert_pem()).expect("write");
    let missing = dir.path().join("missing.key");

    let cases: [(&[&str], &str, &str); 3] = [
        (
            &["--cert", cert, "--key", path_str(&missing)],
            path_str(&missing),
            "No such file",
        ),
        (
            &["--cert", cert, "--key", path_str(&other_key)],
            path_str(&other_key),
            "key does not match certificate",
        ),
        (
            &["--cert", path_str(&expired), "--key", key],
            path_str(&expired),
            "certificate expired",
        ),
    ];
    for name in SERVERS {
        for (args, file, reason) in cases {
            let output = run_to_exit(name, args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{name} {args:?} must fail");
            assert!(
                stderr.contains(file) && stderr.contains(reason),
                "{name} {args:?}: {stderr}"
            );
            assert!(
                !String::from_utf8_lossy(&output.stdout).contains("listening on"),
                "{name} {args:?} must not listen"
            );
        }
    }
}

#[test]
fn a_non_utf8_argument_is_a_usage_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    for name in SERVERS {
        let output = run_within(
            Command::new(example(name))
                .args(["--cert", "c", "--key", "k", "--detector"])
                .arg(std::ffi::OsStr::from_bytes(b"hash\xff")),
            DEADLINE,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("usage:"), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

#[test]
fn bad_arguments_exit_with_usage() {
    for name in SERVERS {
        for args in [
            &["--key", "k"][..],
            &["--cert", "c", "--key", "k", "--detector", "inotify"],
            &["--cert", "c", "--key", "k", "--events", "maybe"],
            &["--bogus"],
        ] {
            let output = run_to_exit(name, args);
            assert_eq!(output.status.code(), Some(2), "{name} {args:?}");
            assert!(
                String::from_utf8_lossy(&output.stderr).contains("usage:"),
                "{name} {args:?}"
            );
        }
    }
}

#[test]
fn the_detector_flag_decides_whether_a_touch_is_a_change() {
    // Under `metadata` a touch is a change (the same certificate is applied
    // again); under `hash` and `combined` it is not, so the first reload
    // applied is the real rotation that follows.
    for (name, detector, touch_reloads) in [
        ("smol_server", "metadata", true),
        ("async_std_server", "combined", false),
        ("smol_server", "hash", false),
        ("tokio_server", "metadata", true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("CA");
        let (first, second) = (ca.leaf(0x1601), ca.leaf(0x1602));
        let materials = write_pair(dir.path(), &first);
        let server = Server::over(
            name,
            &materials,
            &["--detector", detector, "--interval-ms", "20"],
        );
        // Let the file's timestamp move on, so the touch changes it.
        std::thread::sleep(Duration::from_millis(20));
        let touched = Command::new("touch")
            .arg(materials.cert())
            .status()
            .expect("touch");
        assert!(touched.success());
        if touch_reloads {
            let applied = server.expect_line("reload applied ");
            assert_eq!(
                applied,
                format!("reload applied generation=2 serial={}", first.serial_hex()),
                "{name} --detector {detector}"
            );
            continue;
        }
        // Ten ticks for the touch to be (not) noticed, then a real rotation:
        // the first reload applied must be that one.
        std::thread::sleep(Duration::from_millis(200));
        let context =
            format!("{name} --detector {detector}: the touch must not have applied a reload");
        rotate_expecting_generation_2(&server, &materials, &second, &context);
    }
}

#[test]
fn a_silent_client_is_cut_off_after_the_handshake_timeout() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    let materials = write_pair(dir.path(), &ca.leaf(0x1701));
    for name in SERVERS {
        let server = Server::over(name, &materials, &["--handshake-timeout-ms", "300"]);
        let mut silent = std::net::TcpStream::connect(server.addr).expect("connect");
        silent
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let read = silent.read(&mut buf);
        let waited = started.elapsed();
        assert!(
            matches!(read, Ok(0))
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut),
            "{name}: the server closes the silent connection: {read:?}"
        );
        assert!(
            waited >= Duration::from_millis(250),
            "{name}: closed too early: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(5),
            "{name}: closed too late: {waited:?}"
        );
    }
}

#[test]
fn watch_files_prints_a_line_per_change_and_per_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tls.crt");
    let cas = dir.path().join("ca.d");
    std::fs::create_dir(&cas).expect("mkdir");
    std::fs::write(&file, "one").expect("write");
    std::fs::write(cas.join("a.pem"), "a").expect("write");
    let watch = spawn(
        "watch_files",
        &["--interval-ms", "20", path_str(&file), path_str(&cas)],
    );
    // Give it time to take its baseline, then change things one by one.
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&file, "two").expect("write");
    assert_eq!(
        watch.expect_line("changed: "),
        format!("changed: {}", file.display())
    );
    let added = cas.join("b.pem");
    std::fs::write(&added, "b").expect("write");
    assert_eq!(
        watch.expect_line("changed: "),
        format!("changed: {}", added.display())
    );
    std::fs::remove_file(&file).expect("remove");
    let error = watch.expect_line("error: ");
    assert!(
        error.contains(path_str(&file)) && error.contains("not found"),
        "{error}"
    );
    std::fs::write(&file, "three").expect("write");
    assert_eq!(
        watch.expect_line("changed: "),
        format!("changed: {}", file.display())
    );
    assert!(
        !watch
            .seen()
            .iter()
            .any(|line| line.starts_with("error: ") && line != &error),
        "one error line for the missing file: {:?}",
        watch.seen()
    );

    for args in [
        &[][..],
        &["--detector", "inotify", "x"],
        &["--interval-ms", "0", "x"],
        &["--events", "maybe", "x"],
    ] {
        let output = Command::new(example("watch_files"))
            .args(args)
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "watch_files {args:?}");
    }
}

#[test]
fn the_events_flag_decides_whether_a_rotation_is_seen_before_the_interval() {
    // An hour between polls: with events on, a rotation is applied at once;
    // with events off, not within half a second.
    for (name, events) in [
        ("smol_server", "on"),
        ("async_std_server", "on"),
        ("tokio_server", "on"),
        ("smol_server", "off"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("CA");
        let (first, second) = (ca.leaf(0x1801), ca.leaf(0x1802));
        let materials = write_pair(dir.path(), &first);
        let server = Server::over(
            name,
            &materials,
            &["--interval-ms", "3600000", "--events", events],
        );
        // The reloader arms its watches as it starts.
        std::thread::sleep(Duration::from_millis(100));
        if events == "on" {
            rotate_expecting_generation_2(&server, &materials, &second, name);
            continue;
        }
        write_atomic(materials.key(), second.key_pem());
        write_atomic(materials.cert(), second.cert_pem());
        std::thread::sleep(Duration::from_millis(500));
        let lines = server.drain();
        assert!(
            !lines.iter().any(|line| line.starts_with("reload ")),
            "{name} --events off reloaded before the interval: {lines:?}"
        );
    }
}

#[test]
fn watch_files_with_events_reports_a_change_before_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tls.crt");
    std::fs::write(&file, "one").expect("write");
    let watch = spawn(
        "watch_files",
        &[
            "--interval-ms",
            "3600000",
            "--events",
            "on",
            path_str(&file),
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&file, "two").expect("write");
    assert_eq!(
        watch.expect_line("changed: "),
        format!("changed: {}", file.display())
    );
}

#[test]
fn the_servers_print_when_the_served_certificate_expires_soon_and_when_it_expired() {
    // Valid from 5 s ago to 5 s from now: the default window (the last
    // third) opens about 1.7 s after start, the expiry 5 s after.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    let now = time::OffsetDateTime::now_utc();
    let leaf = ca.leaf_with(0x1901, tls_reload_testkit::new_key(), |params| {
        params.not_before = now - time::Duration::seconds(5);
        params.not_after = now + time::Duration::seconds(5);
    });
    let materials = write_pair(dir.path(), &leaf);
    let server = Server::over("smol_server", &materials, &["--interval-ms", "50"]);
    let not_after = tls_reload::build::LeafInfo::from_der(leaf.cert.der())
        .expect("parse")
        .not_after_rfc3339();
    assert_eq!(
        server.expect_line("certificate expires soon: "),
        format!(
            "certificate expires soon: serial={} not_after={not_after}",
            leaf.serial_hex()
        )
    );
    assert_eq!(
        server.expect_line("certificate expired: "),
        format!(
            "certificate expired: serial={} not_after={not_after}",
            leaf.serial_hex()
        )
    );
}

#[test]
fn the_hyper_example_answers_https_and_rotates_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    let (first, second) = (ca.leaf(0x1a01), ca.leaf(0x1a02));
    let materials = write_pair(dir.path(), &first);
    let server = Server::over("hyper_https", &materials, &["--interval-ms", "20"]);
    let config = client_config(&ca, None);

    let (response, serial) = smol::block_on(https_get(server.addr, &config)).expect("GET");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("hello over TLS\n"), "{response}");
    assert_eq!(serial, first.serial_hex());

    rotate_expecting_generation_2(&server, &materials, &second, "hyper_https");
    let (response, serial) = smol::block_on(https_get(server.addr, &config)).expect("GET");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert_eq!(
        serial,
        second.serial_hex(),
        "the new certificate, no restart"
    );
}

/// An HTTP/1.1 GET over TLS: the whole response as text, and the serial of
/// the certificate served.
async fn https_get(
    addr: SocketAddr,
    config: &std::sync::Arc<rustls::ClientConfig>,
) -> std::io::Result<(String, String)> {
    let mut tls = connect(addr, config).await?;
    let serial = served_serial(&tls);
    let mut response = Vec::new();
    timeout(DEADLINE, async {
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        tls.flush().await?;
        tls.read_to_end(&mut response).await
    })
    .await?;
    Ok((String::from_utf8_lossy(&response).into_owned(), serial))
}

/// The served leaf's serial for a client asking for `name` (SNI), trusting
/// `ca`.
fn fetch_serial_for(addr: SocketAddr, ca: &Ca, name: &str) -> std::io::Result<String> {
    use tls_reload_testkit::{sni_client_config, tls_connect_to};
    let config = sni_client_config(ca, None);
    smol::block_on(async {
        let stream = tls_connect_to(addr, &config, name, true).await?;
        Ok(served_serial(&stream))
    })
}

#[test]
fn cert_dir_serves_named_pairs_and_prints_their_lines() {
    use tls_reload_testkit::{new_key, write_combined};
    for name in SERVERS {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("SNI CA");
        let pairs = dir.path().join("pairs");
        std::fs::create_dir(&pairs).expect("mkdir");
        write_combined(
            &pairs,
            "a",
            &ca.named_leaf(0x1801, &["a.example.com"], new_key()),
        );
        write_combined(
            &pairs,
            "b",
            &ca.named_leaf(0x1802, &["*.b.example.com"], new_key()),
        );
        // --cert-dir alone: no default pair.
        let server = Server::start(
            name,
            &["--cert-dir", path_str(&pairs), "--interval-ms", "20"],
        );
        let served = fetch_serial_for(server.addr, &ca, "a.example.com").expect("a");
        assert_eq!(served, "1801", "{name}");
        let served = fetch_serial_for(server.addr, &ca, "x.b.example.com").expect("b");
        assert_eq!(served, "1802", "{name}");
        let refused = fetch_serial_for(server.addr, &ca, "other.test").expect_err("unknown");
        assert!(
            refused.to_string().contains("UnrecognisedName"),
            "{name}: {refused}"
        );
        assert!(
            server.drain().is_empty(),
            "{name}: nothing at start-up: {:?}",
            server.seen()
        );

        // Added, replaced: `reload applied name=STEM serial=HEX`.
        let c = ca.named_leaf(0x1803, &["c.example.com"], new_key());
        write_atomic(&pairs.join("c.pem"), c.cert_pem() + &c.key_pem());
        assert_eq!(
            server.expect_line("reload applied "),
            "reload applied name=c serial=1803"
        );
        let a = ca.named_leaf(0x1811, &["a.example.com"], new_key());
        write_atomic(&pairs.join("a.pem"), a.cert_pem() + &a.key_pem());
        assert_eq!(
            server.expect_line("reload applied "),
            "reload applied name=a serial=1811"
        );
        assert_eq!(
            fetch_serial_for(server.addr, &ca, "a.example.com").expect("a"),
            "1811"
        );

        // Broken: `reload failed: MESSAGE` naming the file; still served.
        write_atomic(&pairs.join("b.pem"), "not a pair");
        let failed = server.expect_line("reload failed: ");
        assert!(
            failed.contains(path_str(&pairs.join("b.pem"))),
            "{name}: {failed}"
        );
        assert_eq!(
            fetch_serial_for(server.addr, &ca, "x.b.example.com").expect("b"),
            "1802"
        );

        // Removed: `reload removed name=STEM`.
        std::fs::remove_file(pairs.join("c.pem")).expect("rm");
        assert_eq!(
            server.expect_line("reload removed "),
            "reload removed name=c"
        );
    }
}

#[test]
fn cert_dir_alone_with_nothing_to_serve_is_a_start_up_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    for name in SERVERS {
        for bad in [dir.path(), missing.as_path()] {
            let out = run_to_exit(name, &["--cert-dir", path_str(bad)]);
            assert!(!out.status.success(), "{name} {}", bad.display());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(path_str(bad)), "{name}: {stderr}");
        }
        let out = run_to_exit(name, &["--cert", "c"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--key"),
            "{name}"
        );
    }
}
