//! An encrypted key through the reloader, over loopback handshakes: served
//! with its passphrase file, a wrong passphrase fails the reload naming the
//! key file and keeps the old key, key and passphrase rotated together are
//! applied; and every log line (at `trace`), error, status and `Debug`
//! string is searched for the passphrases and the keys' bytes.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use common::*;
use tls_reload_acceptor::TestDetector;

const FIRST_PASSPHRASE: &str = "first: zebraquartz lanternmosaic";
const SECOND_PASSPHRASE: &str = "second: Tr0ub4dor&3 xylophonic";
const WRONG_PASSPHRASE: &str = "wrong: hunter2quokka";

/// `leaf`'s key encrypted by `openssl pkcs8 -topk8` with `scheme` under
/// `passphrase`, in PEM.
fn encrypted_key(dir: &Path, leaf: &Leaf, passphrase: &str, scheme: &[&str]) -> String {
    let plain = write_new(dir, "plain.key", leaf.key_pem());
    let pass = write_new(dir, "openssl.pass", passphrase);
    let pass_arg = format!("file:{}", pass.display());
    let mut args = vec![
        "pkcs8",
        "-topk8",
        "-in",
        "plain.key",
        "-out",
        "enc.key",
        "-passout",
        &pass_arg,
    ];
    args.extend_from_slice(scheme);
    openssl(dir, &args);
    let pem = std::fs::read_to_string(dir.join("enc.key")).expect("read");
    for file in [plain, pass, dir.join("enc.key")] {
        std::fs::remove_file(file).expect("remove");
    }
    pem
}

#[test]
fn encrypted_keys_reload_and_no_passphrase_or_key_is_ever_shown() -> Result<()> {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let dir = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let ca = Ca::new("server CA");
    let (first, second) = (ca.leaf(0x4a01), ca.leaf(0x4a02));
    let cert = write_new(dir.path(), "tls.crt", first.cert_pem());
    let key = write_new(
        dir.path(),
        "tls.key",
        encrypted_key(work.path(), &first, FIRST_PASSPHRASE, &["-scrypt"]),
    );
    let pass: PathBuf = write_new(dir.path(), "tls.pass", format!("{FIRST_PASSPHRASE}\n"));
    let client = client_config(&ca, None);

    let mut shown = Vec::new();
    smol::block_on(async {
        let ticks = TestDetector::new();
        let acceptor = builder(tls_reload_acceptor::Materials::new(&cert, &key), &ticks)
            .key_passphrase_file(&pass)
            .build()
            .await?;
        let events = EventLog::new(&acceptor);
        let server = serve::<Smol>(&acceptor, Serve::SpawnPerConnection)?;
        let _reloader = spawn::<Smol, _>(acceptor.reloader());
        assert_eq!(
            fetch_serial(server.addr, &client).await?,
            first.serial_hex()
        );
        shown.push(format!(
            "{acceptor:?} {:?} {:?}",
            acceptor.current(),
            acceptor.status()
        ));

        // A wrong passphrase: the reload fails naming the key file, the old
        // key is served.
        write_atomic(&pass, format!("{WRONG_PASSPHRASE}\n"));
        let failed = wait_until(DEADLINE, || async {
            acceptor
                .status()
                .last_error
                .is_some_and(|e| e.contains("does not decrypt with the passphrase"))
        })
        .await;
        let status = acceptor.status();
        ensure!(failed, "no failure: {status:?}");
        let error = status.last_error.clone().unwrap_or_default();
        ensure!(error.contains(&key.display().to_string()), "{error}");
        ensure!(error.contains(&pass.display().to_string()), "{error}");
        assert_eq!(
            fetch_serial(server.addr, &client).await?,
            first.serial_hex()
        );
        let refused = acceptor.reload_now().await.expect_err("wrong passphrase");
        shown.push(format!("{refused} {refused:?} {status:?}"));

        // The key rotates under a new passphrase: until the passphrase
        // follows, the old key is served; then the new pair is.
        write_atomic(
            &key,
            encrypted_key(
                work.path(),
                &second,
                SECOND_PASSPHRASE,
                &["-v2", "aes-256-cbc"],
            ),
        );
        write_atomic(&cert, second.cert_pem());
        ensure!(wait_ticks(&ticks, 5).await, "the reloader stopped");
        assert_eq!(
            fetch_serial(server.addr, &client).await?,
            first.serial_hex()
        );
        write_atomic(&pass, format!("{SECOND_PASSPHRASE}\n"));
        let rotated = wait_until(DEADLINE, || async {
            fetch_serial(server.addr, &client).await.ok() == Some(second.serial_hex())
        })
        .await;
        ensure!(rotated, "not rotated: {:?}", acceptor.status());
        shown.push(format!(
            "{acceptor:?} {:?} {:?} {:?}",
            acceptor.current(),
            acceptor.status(),
            events.all()
        ));
        anyhow::Ok(())
    })?;

    let logs = String::from_utf8(captured.bytes())?;
    ensure!(
        logs.contains("does not decrypt with the passphrase"),
        "the failure was logged: {logs}"
    );
    let everything = format!("{logs}\n{}", shown.join("\n"));
    for passphrase in [FIRST_PASSPHRASE, SECOND_PASSPHRASE, WRONG_PASSPHRASE] {
        // The whole passphrase, and each of its words past the label.
        for secret in std::iter::once(passphrase).chain(passphrase.split(' ').skip(1)) {
            ensure!(
                !everything.contains(secret),
                "passphrase leaked: {secret:?}"
            );
        }
    }
    for leaf in [&first, &second] {
        assert_no_pem_bytes("the logs and Debug output", &everything, &leaf.key_pem());
    }
    Ok(())
}
