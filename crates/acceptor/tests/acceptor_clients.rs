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
use tls_reload_acceptor::TestDetector;

on_both_runtimes!(
    open_connection_keeps_working_across_a_reload,
    busy_clients_never_fail_while_the_pair_rotates,
    silent_connections_do_not_delay_a_client_with_incoming,
    silent_connections_do_not_delay_a_client_with_a_task_per_connection,
    silent_connections_do_not_delay_a_client_with_spawned_handshakes,
    busy_clients_never_fail_with_spawned_handshakes,
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
    busy_clients_never_fail::<R>(Serve::SpawnPerConnection).await
}

async fn busy_clients_never_fail_with_spawned_handshakes<R: Runtime>() -> Result<()> {
    busy_clients_never_fail::<R>(Serve::SpawnedHandshakes).await
}

async fn busy_clients_never_fail<R: Runtime>(mode: Serve) -> Result<()> {
    let f = Fixture::start::<R>(mode).await?;
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

async fn silent_connections_do_not_delay_a_client_with_spawned_handshakes<R: Runtime>() -> Result<()>
{
    silent_connections_do_not_delay_a_client::<R>(Serve::SpawnedHandshakes).await
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

/// Where the server finds its trusted client CAs.
#[derive(Clone, Copy, Debug)]
enum Trust {
    Bundle,
    Dir,
}

/// An mTLS echo server trusting client root A (in a bundle file or a CA
/// directory), and three clients: one of root A, one of root B, and one
/// without a certificate.
struct Mtls {
    _dir: tempfile::TempDir,
    /// The bundle file or the CA directory.
    trust: std::path::PathBuf,
    root_b: Ca,
    a: Arc<rustls::ClientConfig>,
    b: Arc<rustls::ClientConfig>,
    none: Arc<rustls::ClientConfig>,
    ticks: TestDetector,
    acceptor: tls_reload_acceptor::ReloadingAcceptor,
    events: EventLog,
    server: Server,
    _reloader: futures::future::RemoteHandle<()>,
}

impl Mtls {
    async fn start<R: Runtime>(trust: Trust, mode: Serve) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let server_ca = Ca::new("test server CA");
        let (root_a, root_b) = (Ca::new("client root A"), Ca::new("client root B"));
        let (client_a, client_b) = (root_a.leaf(0x4001), root_b.leaf(0x5001));
        let ticks = TestDetector::new();
        let builder = builder(write_pair(dir.path(), &server_ca.leaf(0x1001)), &ticks);
        let (builder, trust) = match trust {
            Trust::Bundle => {
                let bundle = write_new(dir.path(), "clients.pem", root_a.pem());
                (builder.client_ca(&bundle), bundle)
            }
            Trust::Dir => {
                let ca_dir = dir.path().join("client-cas");
                std::fs::create_dir(&ca_dir)?;
                write_new(&ca_dir, "a.pem", root_a.pem());
                (builder.client_ca_dir(&ca_dir), ca_dir)
            }
        };
        let acceptor = builder.build().await?;
        let events = EventLog::new(&acceptor);
        let server = serve::<R>(&acceptor, mode)?;
        let reloader = spawn::<R, _>(acceptor.reloader());
        Ok(Self {
            a: client_config(&server_ca, Some(&client_a)),
            b: client_config(&server_ca, Some(&client_b)),
            none: client_config(&server_ca, None),
            _dir: dir,
            trust,
            root_b,
            ticks,
            acceptor,
            events,
            server,
            _reloader: reloader,
        })
    }

    /// Whether a client gets through a handshake and an echo round trip.
    async fn admits(&self, client: &Arc<rustls::ClientConfig>) -> bool {
        fetch_serial(self.server.addr, client).await.is_ok()
    }

    /// Checks which clients get in: A, B and the one without a certificate.
    async fn expect(&self, a: bool, b: bool, when: &str) -> Result<()> {
        ensure!(
            self.admits(&self.a).await == a,
            "{when}: client A admitted: {}",
            !a
        );
        ensure!(
            self.admits(&self.b).await == b,
            "{when}: client B admitted: {}",
            !b
        );
        ensure!(
            !self.admits(&self.none).await,
            "{when}: a client without a certificate got in"
        );
        Ok(())
    }

    async fn wait_admits_b(&self) -> Result<()> {
        let admitted = wait_until(DEADLINE, || self.admits(&self.b)).await;
        ensure!(
            admitted,
            "client B still refused: {:?}",
            self.acceptor.status()
        );
        Ok(())
    }
}

async fn appended_root_in_ca_bundle_admits_its_clients<R: Runtime>() -> Result<()> {
    let mtls = Mtls::start::<R>(Trust::Bundle, Serve::Incoming).await?;
    mtls.expect(true, false, "before the append").await?;

    // Append, in place, the way a CA rotation adds its new root.
    let mut file = std::fs::OpenOptions::new().append(true).open(&mtls.trust)?;
    std::io::Write::write_all(&mut file, mtls.root_b.pem().as_bytes())?;
    drop(file);
    mtls.wait_admits_b().await?;
    mtls.expect(true, true, "after the append").await
}

async fn new_file_in_ca_dir_admits_its_clients<R: Runtime>() -> Result<()> {
    let mtls = Mtls::start::<R>(Trust::Dir, Serve::SpawnPerConnection).await?;
    mtls.expect(true, false, "before the new file").await?;

    write_atomic(&mtls.trust.join("b.pem"), mtls.root_b.pem());
    mtls.wait_admits_b().await?;
    mtls.expect(true, true, "after the new file").await
}

async fn broken_ca_file_keeps_the_old_trust<R: Runtime>() -> Result<()> {
    let mtls = Mtls::start::<R>(Trust::Bundle, Serve::Incoming).await?;
    let bundle = &mtls.trust;

    write_in_place(bundle, "-----BEGIN GARBAGE-----\nnot base64 at all\n");
    let refused = wait_until(DEADLINE, || async { mtls.events.failures() == 1 }).await;
    ensure!(
        refused,
        "the broken bundle was not refused: {:?}",
        mtls.acceptor.status()
    );
    let error = mtls.acceptor.status().last_error.unwrap_or_default();
    ensure!(
        error.contains(&*bundle.to_string_lossy()),
        "{error:?} names no file"
    );
    for _ in 0..3 {
        mtls.expect(true, false, "with the broken bundle").await?;
        ensure!(wait_ticks(&mtls.ticks, 2).await, "the reloader stopped");
    }
    assert_eq!(mtls.acceptor.status().generation, 1);
    assert_eq!(mtls.events.applied(), 0);
    Ok(())
}
