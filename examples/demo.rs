//! Run with: cargo run --release --example demo
//! A server rotates its certificate on disk the way a renewer does, while a
//! client stays connected: the story of one reload, told as it happens.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use rcgen::DnType;
use rustls::ClientConfig;
use smol::{Async, Timer};
use tls_reload::acceptor::{ReloadEvent, ReloadingAcceptor};
use tls_reload::build::LeafInfo;
use tls_reload_testkit::{
    new_key, resuming_client_config, served_leaf, tls_connect, write_in_place, write_pair, Ca,
    ClientStream, Leaf,
};

const INTERVAL: Duration = Duration::from_millis(100);

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    smol::block_on(demo())?;
    println!("\nDone in {:.1} s.", started.elapsed().as_secs_f64());
    Ok(())
}

async fn demo() -> anyhow::Result<()> {
    println!(
        "tls-reload demo: a server renews its certificate on disk while clients stay connected.\n"
    );

    // 1. A CA and two server certificates, as a renewer would produce them.
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("tls-reload demo CA");
    let (first, second) = (issue(&ca, "first", 0x1001), issue(&ca, "second", 0x2002));
    let materials = write_pair(dir.path(), &first);
    let (cert_path, key_path) = (materials.cert(), materials.key());
    println!(
        "1. Made a demo CA and two server certificates for localhost in {}",
        dir.path().display()
    );

    // 2. The server: build once (fails fast on bad files), then let the reloader run.
    let acceptor = ReloadingAcceptor::from_files(cert_path, key_path)
        .interval(INTERVAL)
        .build()
        .await?;
    let mut events = acceptor.events();
    smol::spawn(acceptor.reloader()).detach();
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    smol::spawn(serve(listener, acceptor.clone())).detach();
    println!(
        "2. Server listening on {addr} (smol), checking tls.crt and tls.key every {} ms",
        INTERVAL.as_millis()
    );

    // 3. A client that verifies the server against the demo CA.
    let client = resuming_client_config(&ca, None);
    let (mut client_a, leaf) = connect(&client, addr).await?;
    println!("3. Client A connected and verified the server against the demo CA. It was served:");
    print_leaf(&leaf);
    println!("   Client A keeps this connection open.");

    // 4. Renew like certbot or a cert-manager copy: the certificate first, the key a moment later.
    println!("4. Renewing: writing the new certificate to tls.crt (the key follows in 500 ms)...");
    write_in_place(cert_path, second.cert_pem());
    match next_event(&mut events, Duration::from_millis(500), |e| {
        matches!(e, ReloadEvent::Failed { .. })
    })
    .await
    {
        Some(ReloadEvent::Failed { error }) => {
            println!("   reloader: refused the half-renewed files: {error}");
            println!(
                "   (the old certificate keeps serving; nothing is committed, so it will retry)"
            );
        }
        _ => println!("   (the reloader did not look between the two writes this time)"),
    }
    println!("   Writing the new key to tls.key...");
    write_in_place(key_path, second.key_pem());
    match next_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, ReloadEvent::Applied { .. })
    })
    .await
    {
        Some(ReloadEvent::Applied {
            generation, leaf, ..
        }) => println!(
            "   reloader: applied generation {generation}, now serving serial {}",
            leaf.serial_hex()
        ),
        _ => bail!("the reload was not applied within 5 s"),
    }

    // 5. New connections get the new certificate.
    let (mut client_b, leaf) = connect(&client, addr).await?;
    println!("5. Client B connected and was served:");
    print_leaf(&leaf);
    client_b.close().await?;

    // 6. The old connection was never dropped.
    client_a.write_all(b"still here").await?;
    let mut echoed = [0u8; 10];
    client_a.read_exact(&mut echoed).await?;
    println!(
        "6. Client A, on the connection it opened before the reload, sent \"still here\" and got {:?} back.",
        String::from_utf8_lossy(&echoed)
    );
    client_a.close().await?;

    // 7. What a status page would show.
    let status = acceptor.status();
    println!(
        "7. Status: generation {}, {} reload(s) applied, {} failed",
        status.generation, status.reloads_applied, status.reloads_failed
    );
    if let Some(error) = &status.last_error {
        println!("   last error: {error}");
    }
    println!(
        "   serving serial {} until {}",
        status.leaf.serial_hex(),
        status.leaf.not_after_rfc3339()
    );
    Ok(())
}

/// Accepts TLS connections and echoes each one until EOF.
async fn serve(listener: Async<TcpListener>, acceptor: ReloadingAcceptor) {
    let connections = listener.incoming().map(|tcp| {
        let tcp = tcp?;
        tcp.get_ref().set_nodelay(true)?;
        Ok(tcp)
    });
    let mut incoming = acceptor
        .incoming(Box::pin(connections))
        .peer_addr_with(|tcp| tcp.get_ref().peer_addr().ok());
    while let Some(tls) = incoming.next().await {
        let Ok(tls) = tls else { continue };
        smol::spawn(async move {
            let (mut reader, mut writer) = tls.split();
            let _ = futures::io::copy(&mut reader, &mut writer).await;
            let _ = writer.close().await;
        })
        .detach();
    }
}

/// A handshake that verifies the server against the demo CA; returns the
/// connection and what the server presented.
async fn connect(
    client: &Arc<ClientConfig>,
    addr: SocketAddr,
) -> anyhow::Result<(ClientStream, LeafInfo)> {
    let tls = tls_connect(addr, client).await?;
    let leaf = LeafInfo::from_der(&served_leaf(&tls))?;
    Ok((tls, leaf))
}

fn print_leaf(leaf: &LeafInfo) {
    println!("     subject    {}", leaf.subject);
    println!("     serial     {}", leaf.serial_hex());
    println!("     not after  {}", leaf.not_after_rfc3339());
}

/// Waits up to `within` for an event that `wanted` accepts, skipping others.
async fn next_event(
    events: &mut tls_reload::acceptor::Events,
    within: Duration,
    wanted: impl Fn(&ReloadEvent) -> bool,
) -> Option<ReloadEvent> {
    let search = async {
        while let Some(event) = events.next().await {
            if wanted(&event) {
                return Some(event);
            }
        }
        None
    };
    futures::pin_mut!(search);
    match futures::future::select(search, Timer::after(within)).await {
        futures::future::Either::Left((event, _)) => event,
        futures::future::Either::Right(_) => None,
    }
}

/// A certificate for localhost with this serial, valid for 90 days from a
/// minute ago like an ACME certificate.
fn issue(ca: &Ca, name: &str, serial: u16) -> Leaf {
    ca.leaf_with(serial, new_key(), |params| {
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.distinguished_name.push(
            DnType::OrganizationName,
            format!("demo, {name} certificate"),
        );
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(90);
    })
}
