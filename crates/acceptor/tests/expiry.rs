//! Expiry warnings follow the certificate actually served, with no file
//! change: a short-lived certificate crosses into its warning window, then
//! past its not-after, while the test watches.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use tls_reload_acceptor::{CertKind, ExpiryWindow, ReloadEvent, ReloadingAcceptor, Template};

/// A leaf valid from 5 s ago to 5 s from now: its last third (the default
/// window) opens about 1.7 s from now.
fn short_lived(ca: &Ca, serial: u16) -> Leaf {
    let now = time::OffsetDateTime::now_utc();
    ca.leaf_with(serial, new_key(), |params| {
        params.not_before = now - time::Duration::seconds(5);
        params.not_after = now + time::Duration::seconds(5);
    })
}

#[test]
fn a_served_certificate_warns_once_when_its_window_opens_then_reports_its_expiry(
) -> anyhow::Result<()> {
    Smol::block_on(async {
        let dir = tempfile::tempdir()?;
        let ca = Ca::new("expiry CA");
        let leaf = short_lived(&ca, 0xe001);
        let acceptor = ReloadingAcceptor::builder(write_pair(dir.path(), &leaf))
            .template(Template::new(provider()))
            .interval(Duration::from_millis(50))
            .build()
            .await?;
        let mut events = acceptor.events();
        let started = Instant::now();
        let _reloader = spawn::<Smol, _>(acceptor.reloader());

        let mut seen = Vec::new();
        let deadline = Duration::from_secs(12);
        while !seen
            .iter()
            .any(|(_, e): &(Duration, ReloadEvent)| matches!(e, ReloadEvent::Expired { .. }))
        {
            let next = next_event(&mut events, deadline).await?;
            seen.push((started.elapsed(), next));
        }
        let soon: Vec<_> = seen
            .iter()
            .filter(|(_, e)| matches!(e, ReloadEvent::ExpiresSoon { .. }))
            .collect();
        assert_eq!(soon.len(), 1, "one warning per crossing: {seen:#?}");
        let (warned_at, warning) = soon[0];
        assert!(
            *warned_at >= Duration::from_millis(500),
            "warned at {warned_at:?}, before the window opened"
        );
        let ReloadEvent::ExpiresSoon { kind, certificate } = warning else {
            unreachable!()
        };
        assert_eq!(*kind, CertKind::Leaf);
        assert_eq!(certificate.serial_hex(), leaf.serial_hex());
        assert_eq!(
            warning.to_string(),
            format!(
                "certificate expires soon: serial={} not_after={}",
                leaf.serial_hex(),
                certificate.not_after_rfc3339()
            )
        );
        let (expired_at, expired) = seen.last().expect("an expiry");
        assert!(
            *expired_at >= Duration::from_secs(4),
            "expired at {expired_at:?}"
        );
        assert!(
            expired
                .to_string()
                .starts_with("certificate expired: serial="),
            "{expired}"
        );
        Ok(())
    })
}

#[test]
fn a_fixed_window_reports_a_certificate_already_inside_it_at_start() -> anyhow::Result<()> {
    Smol::block_on(async {
        let dir = tempfile::tempdir()?;
        let ca = Ca::new("expiry CA");
        // rcgen's default validity runs to the year 4096: a window of 5,000
        // years holds it from the start.
        let leaf = ca.leaf(0xe101);
        let acceptor = ReloadingAcceptor::builder(write_pair(dir.path(), &leaf))
            .template(Template::new(provider()))
            .interval(Duration::from_millis(20))
            .expiry_warning(ExpiryWindow::Before(Duration::from_secs(
                5_000 * 365 * 86_400,
            )))
            .build()
            .await?;
        let mut events = acceptor.events();
        let _reloader = spawn::<Smol, _>(acceptor.reloader());
        let first = next_event(&mut events, DEADLINE).await?;
        assert!(
            matches!(first, ReloadEvent::ExpiresSoon { .. }),
            "{first:?}"
        );
        // And only once, tick after tick.
        async_io::Timer::after(Duration::from_millis(200)).await;
        assert!(events.next().now_or_never_flat().is_none());
        Ok(())
    })
}

trait NowOrNever {
    fn now_or_never_flat(self) -> Option<ReloadEvent>;
}

impl<F: std::future::Future<Output = Option<ReloadEvent>>> NowOrNever for F {
    fn now_or_never_flat(self) -> Option<ReloadEvent> {
        futures::FutureExt::now_or_never(self).flatten()
    }
}

#[test]
fn a_client_ca_in_its_window_is_reported_as_a_client_ca() -> anyhow::Result<()> {
    Smol::block_on(async {
        let dir = tempfile::tempdir()?;
        let ca = Ca::new("server CA");
        // A client CA valid from 10 s ago to 5 s from now: already in its
        // last third at start.
        let now = time::OffsetDateTime::now_utc();
        let mut params = ca_params("short-lived clients");
        params.not_before = now - time::Duration::seconds(10);
        params.not_after = now + time::Duration::seconds(5);
        let clients = Ca::from_parts(params, new_key());
        let bundle = write_new(dir.path(), "clients.pem", clients.pem());
        let materials = write_pair(dir.path(), &ca.leaf(0xe201)).with_client_ca(&bundle);
        let acceptor = ReloadingAcceptor::builder(materials)
            .template(Template::new(provider()))
            .interval(Duration::from_millis(20))
            .build()
            .await?;
        let status = acceptor.status();
        assert_eq!(status.client_cas.len(), 1);
        assert_eq!(status.client_cas[0].subject, "CN=short-lived clients");
        let mut events = acceptor.events();
        let _reloader = spawn::<Smol, _>(acceptor.reloader());
        let first = next_event(&mut events, DEADLINE).await?;
        let ReloadEvent::ExpiresSoon { kind, certificate } = &first else {
            panic!("{first:?}");
        };
        assert_eq!(*kind, CertKind::ClientCa);
        assert_eq!(certificate.subject, "CN=short-lived clients");
        assert!(
            first
                .to_string()
                .starts_with("client CA certificate expires soon: serial="),
            "{first}"
        );
        Ok(())
    })
}

/// The next event, within `limit`.
async fn next_event(
    events: &mut tls_reload_acceptor::Events,
    limit: Duration,
) -> std::io::Result<ReloadEvent> {
    timeout(limit, async {
        events
            .next()
            .await
            .ok_or_else(|| std::io::Error::other("events ended"))
    })
    .await
}
