//! What clients see across reloads, over loopback: open connections live
//! on, busy clients never fail, mTLS trust follows the CA files, and silent
//! connections neither stall the accept loop nor linger. Every test runs on
//! smol and on async-std.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use common::*;
use tls_reload::acceptor::{ReloadEvent, TestDetector};

on_both_runtimes!(
    open_connection_keeps_working_across_a_reload,
    busy_clients_never_fail_while_the_pair_rotates,
    silent_connections_do_not_delay_a_client_with_incoming,
    silent_connections_do_not_delay_a_client_with_a_task_per_connection,
    appended_root_in_ca_bundle_admits_its_clients,
    new_file_in_ca_dir_admits_its_clients,
    broken_ca_file_keeps_the_old_trust,
);

async fn open_connection_keeps_working_across_a_reload<R: Runtime>() -> Result<()> {
    let f = Fixture::start::<R>(Serve::Incoming).await?;
    let mut open = connect(f.server.addr, &f.client).await?;
    echo_round_trip(&mut open, b"before").await?;

    let next = f.ca.leaf(0x2002);
    write_atomic(f.key(), next.key_pem());
    write_atomic(f.cert(), next.cert_pem());
    f.wait_serving(&next).await?;

    echo_round_trip(&mut open, b"after the reload").await?;
    assert_eq!(served_serial(&open), f.first.serial_hex());
    Ok(())
}

async fn busy_clients_never_fail_while_the_pair_rotates<R: Runtime>() -> Result<()> {
    let f = Fixture::start::<R>(Serve::SpawnPerConnection).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, config) = (f.server.addr, f.client.clone());
            let (stop, seen) = (stop.clone(), seen.clone());
            spawn::<R, _>(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    match fetch_serial(addr, &config).await {
                        Ok(serial) => {
                            ok += 1;
                            seen.lock().expect("seen").insert(serial);
                        }
                        Err(error) => failed.push(error.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    let mut last = None;
    for n in 1..=10u16 {
        let next = f.ca.leaf(0x2000 + n);
        // Two renames: between them the pair does not match.
        write_atomic(f.cert(), next.cert_pem());
        write_atomic(f.key(), next.key_pem());
        let applied = wait_until(DEADLINE, || async {
            f.acceptor.status().leaf.serial_hex() == next.serial_hex()
        })
        .await;
        ensure!(
            applied,
            "rotation {n} not applied: {:?}",
            f.acceptor.status()
        );
        last = Some(next);
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let (ok, failed) = client.await;
        ensure!(failed.is_empty(), "failed handshakes: {failed:?}");
        ensure!(ok > 0, "a client never completed a handshake");
    }
    let last = last.expect("rotated");
    assert_eq!(f.served().await?, last.serial_hex());
    assert_eq!(f.acceptor.status().generation, 11);
    let seen = seen.lock().expect("seen").len();
    ensure!(
        seen >= 2,
        "the clients saw {seen} serial(s): the rotation went unseen"
    );
    Ok(())
}

async fn silent_connections_do_not_delay_a_client_with_incoming<R: Runtime>() -> Result<()> {
    silent_connections_do_not_delay_a_client::<R>(Serve::Incoming).await
}

async fn silent_connections_do_not_delay_a_client_with_a_task_per_connection<R: Runtime>(
) -> Result<()> {
    silent_connections_do_not_delay_a_client::<R>(Serve::SpawnPerConnection).await
}

async fn silent_connections_do_not_delay_a_client<R: Runtime>(mode: Serve) -> Result<()> {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1500);
    let f = Fixture::start_with::<R>(mode, |b| b.handshake_timeout(HANDSHAKE_TIMEOUT)).await?;
    let connected = Instant::now();
    let silent: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(f.server.addr))
        .collect::<Result<_, _>>()?;

    // Queued behind the 50 in the listener's backlog, yet served at once.
    assert_eq!(f.served().await?, f.first.serial_hex());
    let served_after = connected.elapsed();
    ensure!(
        served_after < HANDSHAKE_TIMEOUT,
        "the client waited {served_after:?}, as long as the silent ones"
    );
    for socket in &silent {
        socket.set_nonblocking(true)?;
        let still_open =
            matches!((&*socket).read(&mut [0; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
        ensure!(
            still_open,
            "a silent connection was closed before its timeout"
        );
    }

    // Then the server closes each one when its handshake times out.
    let closed_after = blocking::unblock(move || -> std::io::Result<Duration> {
        for socket in silent {
            socket.set_nonblocking(false)?;
            socket.set_read_timeout(Some(DEADLINE))?;
            match (&socket).read(&mut [0; 1]) {
                Ok(0) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                other => panic!("a silent connection was not closed: {other:?}"),
            }
        }
        Ok(connected.elapsed())
    })
    .await?;
    ensure!(
        closed_after >= HANDSHAKE_TIMEOUT,
        "closed after {closed_after:?}"
    );
    ensure!(
        closed_after < HANDSHAKE_TIMEOUT + Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
    // And the loop still serves.
    assert_eq!(f.served().await?, f.first.serial_hex());
    Ok(())
}

/// A server CA and leaf, and two client roots with a client each.
struct Pki {
    dir: tempfile::TempDir,
    server_ca: Ca,
    root_a: Ca,
    root_b: Ca,
    client_a: Leaf,
    client_b: Leaf,
}

impl Pki {
    fn new() -> Result<Self> {
        let root_a = Ca::new("client root A");
        let root_b = Ca::new("client root B");
        Ok(Self {
            dir: tempfile::tempdir()?,
            server_ca: Ca::new("test server CA"),
            client_a: root_a.leaf(0x4001),
            client_b: root_b.leaf(0x5001),
            root_a,
            root_b,
        })
    }

    /// A client config trusting the server CA, presenting `client`'s
    /// certificate if given.
    fn client(&self, client: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
        client_config(&self.server_ca, client)
    }
}

/// Whether a client gets through a handshake and an echo round trip.
async fn admitted(addr: std::net::SocketAddr, config: &Arc<rustls::ClientConfig>) -> bool {
    fetch_serial(addr, config).await.is_ok()
}

async fn appended_root_in_ca_bundle_admits_its_clients<R: Runtime>() -> Result<()> {
    let pki = Pki::new()?;
    let bundle = write_new(pki.dir.path(), "clients.pem", pki.root_a.pem());
    let (a, b, none) = (
        pki.client(Some(&pki.client_a)),
        pki.client(Some(&pki.client_b)),
        pki.client(None),
    );
    let leaf = pki.server_ca.leaf(0x1001);
    let ticks = TestDetector::new();
    let acceptor = builder(write_pair(pki.dir.path(), &leaf), &ticks)
        .client_ca(&bundle)
        .build()
        .await?;
    let server = serve::<R>(&acceptor, Serve::Incoming)?;
    let _reloader = spawn::<R, _>(acceptor.reloader());
    ensure!(admitted(server.addr, &a).await, "client A refused");
    ensure!(
        !admitted(server.addr, &b).await,
        "client B admitted before its root is"
    );
    ensure!(
        !admitted(server.addr, &none).await,
        "a client without a certificate admitted"
    );

    // Append, in place, the way a CA rotation adds its new root.
    let mut file = std::fs::OpenOptions::new().append(true).open(&bundle)?;
    std::io::Write::write_all(&mut file, pki.root_b.pem().as_bytes())?;
    drop(file);
    ensure!(
        wait_until(DEADLINE, || admitted(server.addr, &b)).await,
        "client B still refused: {:?}",
        acceptor.status()
    );
    ensure!(
        admitted(server.addr, &a).await,
        "client A refused after the append"
    );
    ensure!(
        !admitted(server.addr, &none).await,
        "a client without a certificate admitted"
    );
    Ok(())
}

async fn new_file_in_ca_dir_admits_its_clients<R: Runtime>() -> Result<()> {
    let pki = Pki::new()?;
    let ca_dir = pki.dir.path().join("client-cas");
    std::fs::create_dir(&ca_dir)?;
    write_new(&ca_dir, "a.pem", pki.root_a.pem());
    let (a, b) = (
        pki.client(Some(&pki.client_a)),
        pki.client(Some(&pki.client_b)),
    );
    let leaf = pki.server_ca.leaf(0x1001);
    let ticks = TestDetector::new();
    let acceptor = builder(write_pair(pki.dir.path(), &leaf), &ticks)
        .client_ca_dir(&ca_dir)
        .build()
        .await?;
    let server = serve::<R>(&acceptor, Serve::SpawnPerConnection)?;
    let _reloader = spawn::<R, _>(acceptor.reloader());
    ensure!(admitted(server.addr, &a).await, "client A refused");
    ensure!(
        !admitted(server.addr, &b).await,
        "client B admitted before its root is"
    );

    write_atomic(&ca_dir.join("b.pem"), pki.root_b.pem());
    ensure!(
        wait_until(DEADLINE, || admitted(server.addr, &b)).await,
        "client B still refused: {:?}",
        acceptor.status()
    );
    ensure!(
        admitted(server.addr, &a).await,
        "client A refused after the new file"
    );
    ensure!(
        !admitted(server.addr, &pki.client(None)).await,
        "a client without a certificate admitted"
    );
    Ok(())
}

async fn broken_ca_file_keeps_the_old_trust<R: Runtime>() -> Result<()> {
    let pki = Pki::new()?;
    let bundle = write_new(pki.dir.path(), "clients.pem", pki.root_a.pem());
    let (a, b, none) = (
        pki.client(Some(&pki.client_a)),
        pki.client(Some(&pki.client_b)),
        pki.client(None),
    );
    let leaf = pki.server_ca.leaf(0x1001);
    let ticks = TestDetector::new();
    let acceptor = builder(write_pair(pki.dir.path(), &leaf), &ticks)
        .client_ca(&bundle)
        .build()
        .await?;
    let events = EventLog::new(&acceptor);
    let server = serve::<R>(&acceptor, Serve::Incoming)?;
    let _reloader = spawn::<R, _>(acceptor.reloader());

    write_in_place(&bundle, "-----BEGIN GARBAGE-----\nnot base64 at all\n");
    ensure!(
        wait_until(DEADLINE, || async { events.failures() == 1 }).await,
        "the broken bundle was not refused: {:?}",
        acceptor.status()
    );
    let error = acceptor.status().last_error.unwrap_or_default();
    ensure!(
        error.contains(&*bundle.to_string_lossy()),
        "{error:?} names no file"
    );
    for _ in 0..3 {
        ensure!(
            !admitted(server.addr, &none).await,
            "a client without a certificate admitted"
        );
        ensure!(
            !admitted(server.addr, &b).await,
            "an untrusted client admitted"
        );
        ensure!(
            admitted(server.addr, &a).await,
            "the old trust stopped working"
        );
        ensure!(wait_ticks(&ticks, 2).await, "the reloader stopped");
    }
    assert_eq!(acceptor.status().generation, 1);
    assert!(!events
        .all()
        .iter()
        .any(|e| matches!(e, ReloadEvent::Applied { .. })));
    Ok(())
}
