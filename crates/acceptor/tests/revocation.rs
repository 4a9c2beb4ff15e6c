//! CRLs through the reloader, over loopback handshakes: a new CRL refuses
//! the client it revokes once reloaded and no other; a CRL replaced by
//! garbage or by another CA's CRL fails the reload, naming the file, and
//! the old CRL stays in force. Every test runs on smol and on async-std.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{ensure, Result};
use common::*;
use futures::future::RemoteHandle;
use rustls::ClientConfig;
use tls_reload_acceptor::{ReloadingAcceptor, TestDetector};

on_both_runtimes!(
    a_new_crl_refuses_the_client_it_revokes_and_no_other,
    a_broken_or_foreign_crl_keeps_the_old_one,
);

/// An echo server requiring client certificates from `clients`, checked
/// against the CRL file `clients.crl`.
struct CrlServer {
    _dir: tempfile::TempDir,
    server_ca: Ca,
    clients: Ca,
    crl: PathBuf,
    acceptor: ReloadingAcceptor,
    server: Server,
    _reloader: RemoteHandle<()>,
}

impl CrlServer {
    async fn start<R: Runtime>(revoked: &[&Leaf], clients: Ca) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let server_ca = Ca::new("server CA");
        let materials = write_pair(dir.path(), &server_ca.leaf(0x1001));
        let bundle = write_new(dir.path(), "clients.pem", clients.pem());
        let crl = write_new(dir.path(), "clients.crl", clients.crl(revoked));
        let ticks = TestDetector::new();
        let acceptor = builder(materials, &ticks)
            .client_ca(&bundle)
            .crl(&crl)
            .build()
            .await?;
        let server = serve::<R>(&acceptor, Serve::SpawnPerConnection)?;
        let reloader = spawn::<R, _>(acceptor.reloader());
        Ok(Self {
            _dir: dir,
            server_ca,
            clients,
            crl,
            acceptor,
            server,
            _reloader: reloader,
        })
    }

    fn client(&self, leaf: &Leaf) -> Arc<ClientConfig> {
        client_config(&self.server_ca, Some(leaf))
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

/// Whether a client completes a handshake and an echo round trip (with
/// TLS 1.3 the server's refusal of a client certificate arrives after the
/// client's handshake).
async fn admitted(addr: SocketAddr, config: &Arc<ClientConfig>) -> bool {
    match connect(addr, config).await {
        Ok(mut stream) => echo_round_trip(&mut stream, b"ping").await.is_ok(),
        Err(_) => false,
    }
}

/// Waits until the last error holds `text`.
async fn wait_error(s: &CrlServer, text: &str) -> Result<String> {
    let failed = wait_until(DEADLINE, || async {
        s.acceptor
            .status()
            .last_error
            .is_some_and(|error| error.contains(text))
    })
    .await;
    let status = s.acceptor.status();
    ensure!(failed, "no error with {text:?}: {status:?}");
    Ok(status.last_error.unwrap_or_default())
}

async fn a_new_crl_refuses_the_client_it_revokes_and_no_other<R: Runtime>() -> Result<()> {
    let clients = Ca::new("clients");
    let (revoked, kept) = (clients.leaf(0x3a01), clients.leaf(0x3a02));
    let s = CrlServer::start::<R>(&[], clients).await?;
    let (revoked_client, kept_client) = (s.client(&revoked), s.client(&kept));
    ensure!(admitted(s.addr(), &revoked_client).await, "admitted before");
    ensure!(admitted(s.addr(), &kept_client).await);
    let crls = s.acceptor.current().crls().to_vec();
    assert_eq!((crls.len(), crls[0].revoked), (1, 0));

    write_atomic(&s.crl, s.clients.crl(&[&revoked]));
    let refused = wait_until(DEADLINE, || async {
        !admitted(s.addr(), &revoked_client).await
    })
    .await;
    ensure!(refused, "still admitted: {:?}", s.acceptor.status());
    ensure!(admitted(s.addr(), &kept_client).await, "the others are not");
    let status = s.acceptor.status();
    assert_eq!(status.generation, 2, "{status:?}");
    assert_eq!(s.acceptor.current().crls()[0].revoked, 1);
    assert!(status.files.contains(&s.crl), "{status:?}");
    Ok(())
}

async fn a_broken_or_foreign_crl_keeps_the_old_one<R: Runtime>() -> Result<()> {
    let clients = Ca::new("clients");
    let (revoked, kept, later) = (
        clients.leaf(0x3b01),
        clients.leaf(0x3b02),
        clients.leaf(0x3b03),
    );
    let s = CrlServer::start::<R>(&[&revoked], clients).await?;
    let (revoked_client, kept_client) = (s.client(&revoked), s.client(&kept));
    ensure!(!admitted(s.addr(), &revoked_client).await);
    ensure!(admitted(s.addr(), &kept_client).await);

    // Garbage under the CRL label: refused, naming the file; the old CRL
    // stays in force.
    write_atomic(
        &s.crl,
        "-----BEGIN X509 CRL-----\nAAECAwQFBgcICQ==\n-----END X509 CRL-----\n",
    );
    let error = wait_error(&s, "clients.crl: the CRL at line 1 is refused").await?;
    assert!(error.contains("not a well-formed X.509 CRL"), "{error}");
    ensure!(
        !admitted(s.addr(), &revoked_client).await,
        "the old CRL stays"
    );
    ensure!(admitted(s.addr(), &kept_client).await);

    // Another CA's CRL (revoking no one): refused too, so it cannot lift a
    // revocation.
    write_atomic(&s.crl, Ca::new("stranger").crl(&[]));
    wait_error(&s, "no configured client CA is named as its issuer").await?;
    ensure!(
        !admitted(s.addr(), &revoked_client).await,
        "the old CRL stays"
    );
    assert_eq!(s.acceptor.status().generation, 1);

    // Not PEM at all.
    write_atomic(&s.crl, "truncated");
    wait_error(&s, "clients.crl: not PEM").await?;
    ensure!(!admitted(s.addr(), &revoked_client).await);

    // A good CRL again applies.
    write_atomic(&s.crl, s.clients.crl(&[&revoked, &later]));
    let applied = wait_until(DEADLINE, || async { s.acceptor.status().generation == 2 }).await;
    ensure!(applied, "not applied: {:?}", s.acceptor.status());
    ensure!(!admitted(s.addr(), &s.client(&later)).await);
    ensure!(admitted(s.addr(), &kept_client).await);
    Ok(())
}
