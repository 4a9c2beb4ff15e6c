//! Connection counters, and the `/status` JSON and `/metrics` OpenMetrics
//! text made from them and the acceptor's [`Status`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tls_reload_acceptor::{ConnectorStatus, Status};

/// Counts of client connections, shared by the accept loop, the connection
/// tasks and the status page.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    active: AtomicU64,
    total: AtomicU64,
    handshake_failures: AtomicU64,
    target_connect_failures: AtomicU64,
    clients_denied: AtomicU64,
    idle_timeouts: AtomicU64,
    status_evictions: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Client connections open now, in the handshake or proxied.
    pub(crate) active: u64,
    /// Client connections accepted since start-up.
    pub(crate) total: u64,
    /// TLS handshakes that failed or timed out.
    pub(crate) handshake_failures: u64,
    /// Connections to the target that failed or timed out.
    pub(crate) target_connect_failures: u64,
    /// Clients refused by `--allow-*` after their handshake.
    pub(crate) clients_denied: u64,
    /// Connections closed by `--idle-timeout`.
    pub(crate) idle_timeouts: u64,
    /// Status page connections closed unanswered to make room.
    pub(crate) status_evictions: u64,
}

impl Counters {
    /// A client connection was accepted.
    pub(crate) fn opened(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection was closed.
    pub(crate) fn closed(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// `failed` more TLS handshakes failed.
    pub(crate) fn handshakes_failed(&self, failed: u64) {
        if failed > 0 {
            self.handshake_failures.fetch_add(failed, Ordering::Relaxed);
        }
    }

    /// A connection to the target failed.
    pub(crate) fn target_connect_failed(&self) {
        self.target_connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A client was refused by the allow lists.
    pub(crate) fn client_denied(&self) {
        self.clients_denied.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed for being idle.
    pub(crate) fn idle_timed_out(&self) {
        self.idle_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A status page connection was closed unanswered to make room.
    pub(crate) fn status_evicted(&self) {
        self.status_evictions.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> Counts {
        Counts {
            active: self.active.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
            target_connect_failures: self.target_connect_failures.load(Ordering::Relaxed),
            clients_denied: self.clients_denied.load(Ordering::Relaxed),
            idle_timeouts: self.idle_timeouts.load(Ordering::Relaxed),
            status_evictions: self.status_evictions.load(Ordering::Relaxed),
        }
    }
}

/// The `/status` document: the reload state and the served certificate
/// (with a TLS listener), the connection counts, and the client identity
/// and roots used towards the target (with `--target-tls`, as
/// `target_tls`); times in unix seconds.
pub(crate) fn status_json(
    status: Option<&Status>,
    target: Option<&ConnectorStatus>,
    counts: &Counts,
) -> Value {
    let mut document = match status {
        Some(status) => listener_json(status),
        None => json!({}),
    };
    document["connections"] = json!({
        "active": counts.active,
        "total": counts.total,
        "handshake_failures": counts.handshake_failures,
        "target_connect_failures": counts.target_connect_failures,
        "clients_denied": counts.clients_denied,
        "idle_timeouts": counts.idle_timeouts,
    });
    if let Some(target) = target {
        document["target_tls"] = json!({
            "generation": target.generation,
            "applied_at": unix_seconds(target.applied_at),
            "last_reload_at": target.last_reload_at.map(unix_seconds),
            "reloads_applied": target.reloads_applied,
            "reloads_failed": target.reloads_failed,
            "last_error": target.last_error,
            "last_error_at": target.last_error_at.map(unix_seconds),
            "identity": target.identity.as_ref().map(|leaf| json!({
                "serial": leaf.serial_hex(),
                "subject": leaf.subject,
                "not_before": unix_seconds(leaf.not_before),
                "not_after": unix_seconds(leaf.not_after),
                "sha256": leaf.sha256_hex(),
            })),
            "roots": target.roots.iter().map(|ca| json!({
                "serial": ca.serial_hex(),
                "subject": ca.subject,
                "not_after": unix_seconds(ca.not_after),
            })).collect::<Vec<_>>(),
        });
    }
    document
}

/// The listener's part of `/status`.
fn listener_json(status: &Status) -> Value {
    let leaf = &status.leaf;
    json!({
        "generation": status.generation,
        "applied_at": unix_seconds(status.applied_at),
        "last_reload_at": status.last_reload_at.map(unix_seconds),
        "reloads_applied": status.reloads_applied,
        "reloads_failed": status.reloads_failed,
        "last_error": status.last_error,
        "last_error_at": status.last_error_at.map(unix_seconds),
        "detection": status.detection.to_string(),
        "client_cas": status.client_cas.iter().map(|ca| json!({
            "serial": ca.serial_hex(),
            "subject": ca.subject,
            "not_after": unix_seconds(ca.not_after),
            "file": ca.path.display().to_string(),
        })).collect::<Vec<_>>(),
        "crls": status.crls.iter().map(|crl| json!({
            "issuer": crl.issuer,
            "this_update": unix_seconds(crl.this_update),
            "next_update": crl.next_update.map(unix_seconds),
            "file": crl.path.display().to_string(),
        })).collect::<Vec<_>>(),
        "leaf": {
            "serial": leaf.serial_hex(),
            "subject": leaf.subject,
            "not_before": unix_seconds(leaf.not_before),
            "not_after": unix_seconds(leaf.not_after),
            "sha256": leaf.sha256_hex(),
        },
        "pairs": status.pairs.iter().map(|pair| json!({
            "stem": pair.stem,
            "names": pair.names,
            "serial": pair.leaf.as_ref().map(|leaf| leaf.serial_hex()),
            "not_after": pair.leaf.as_ref().map(|leaf| unix_seconds(leaf.not_after)),
            "files": pair.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "last_error": pair.last_error,
            "generation": pair.generation,
        })).collect::<Vec<_>>(),
        "unrecognized_names": status.unrecognized_names,
    })
}

/// The `/metrics` page in the OpenMetrics text format, encoded by
/// prometheus-client: the listener's reloads (with a TLS listener), the
/// connection counts and the target side's reloads (with `--target-tls`).
/// Counters are named without `_total`, which the encoder appends to their
/// samples (`# TYPE tls_reload_reloads_applied counter`, then
/// `tls_reload_reloads_applied_total 2`); the page ends with `# EOF`.
pub(crate) fn openmetrics(
    status: Option<Status>,
    target: Option<ConnectorStatus>,
    counts: Counts,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Page {
        status,
        target,
        counts,
    }));
    let mut out = String::new();
    // Writing to a String cannot fail, and every metric below encodes.
    let _ = encode(&mut out, &registry);
    out
}

/// The content type of [`openmetrics`]'s page.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One scrape's values, encoded by prometheus-client when the page is
/// written.
#[derive(Debug)]
struct Page {
    status: Option<Status>,
    target: Option<ConnectorStatus>,
    counts: Counts,
}

impl Collector for Page {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> fmt::Result {
        let out = &mut out;
        if let Some(status) = &self.status {
            counter(
                out,
                "tls_reload_reloads_applied",
                "Certificate reloads applied since start-up.",
                status.reloads_applied,
            )?;
            counter(
                out,
                "tls_reload_reloads_failed",
                "Certificate reloads that failed (the last good certificate kept serving).",
                status.reloads_failed,
            )?;
            gauge(
                out,
                "tls_reload_last_reload_success_timestamp_seconds",
                "Unix time the certificate now served was loaded.",
                unix_seconds(status.applied_at),
            )?;
            gauge(
                out,
                "tls_reload_detection_events",
                "1 when file-system events wake the checks, 0 when they poll only (see /status).",
                i64::from(status.detection.is_events()),
            )?;
        }
        let counts = &self.counts;
        gauge(
            out,
            "tls_reload_connections_active",
            "Client connections open now, handshakes included.",
            i64::try_from(counts.active).unwrap_or(i64::MAX),
        )?;
        counter(
            out,
            "tls_reload_connections",
            "Client connections accepted since start-up.",
            counts.total,
        )?;
        counter(
            out,
            "tls_reload_handshake_failures",
            "TLS handshakes that failed or timed out.",
            counts.handshake_failures,
        )?;
        counter(
            out,
            "tls_reload_target_connect_failures",
            "Connections to the target that failed or timed out.",
            counts.target_connect_failures,
        )?;
        counter(
            out,
            "tls_reload_proxy_clients_denied",
            "Clients closed after their handshake because no --allow-cn, --allow-dns or --allow-uri named them.",
            counts.clients_denied,
        )?;
        counter(
            out,
            "tls_reload_proxy_idle_timeouts",
            "Connections closed after --idle-timeout of silence both ways.",
            counts.idle_timeouts,
        )?;
        counter(
            out,
            "tls_reload_proxy_status_evictions",
            "Status page connections closed unanswered to make room when the page was full.",
            counts.status_evictions,
        )?;
        if let Some(target) = &self.target {
            counter(
                out,
                "tls_reload_proxy_target_reloads_applied",
                "Reloads of the client identity and roots used towards the target (--target-tls) applied since start-up.",
                target.reloads_applied,
            )?;
            counter(
                out,
                "tls_reload_proxy_target_reloads_failed",
                "Reloads of the client identity and roots used towards the target that failed (the last good ones kept).",
                target.reloads_failed,
            )?;
            gauge(
                out,
                "tls_reload_proxy_target_identity_not_after_seconds",
                "Unix time the client certificate presented to the target expires (0 without one).",
                target
                    .identity
                    .as_ref()
                    .map_or(0, |leaf| unix_seconds(leaf.not_after)),
            )?;
        }
        if let Some(status) = &self.status {
            certificate_metrics(out, status)?;
        }
        Ok(())
    }
}

/// An unlabelled counter; `name` without `_total`.
fn counter(out: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    out.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// An unlabelled gauge.
fn gauge(out: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64) -> fmt::Result {
    out.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// The not-after of the served leaf, of every client CA and of every named
/// pair's certificate, and the `nextUpdate` of every CRL in force, as
/// labelled gauges.
fn certificate_metrics(out: &mut DescriptorEncoder<'_>, status: &Status) -> fmt::Result {
    let mut not_after = out.encode_descriptor(
        "tls_reload_certificate_not_after_seconds",
        "Unix time a served certificate expires (kind: leaf or client_ca).",
        None,
        MetricType::Gauge,
    )?;
    let certs = std::iter::once(("leaf", status.leaf.serial_hex(), status.leaf.not_after)).chain(
        status
            .client_cas
            .iter()
            .map(|ca| ("client_ca", ca.serial_hex(), ca.not_after)),
    );
    for (kind, serial, expires) in certs {
        let labels = [("kind", kind), ("serial", serial.as_str())];
        not_after
            .encode_family(&labels)?
            .encode_gauge(&unix_seconds(expires))?;
    }
    // Named (SNI) pairs: one sample per pair that serves a certificate. A
    // pair that has never built has no line (its error is in /status).
    if status.pairs.iter().any(|pair| pair.leaf.is_some()) {
        let mut pairs = out.encode_descriptor(
            "tls_reload_pair_not_after_seconds",
            "Unix time the certificate a named (SNI) pair serves expires (pair: its file stem).",
            None,
            MetricType::Gauge,
        )?;
        for pair in &status.pairs {
            if let Some(leaf) = &pair.leaf {
                let serial = leaf.serial_hex();
                let labels = [("pair", pair.stem.as_str()), ("serial", serial.as_str())];
                pairs
                    .encode_family(&labels)?
                    .encode_gauge(&unix_seconds(leaf.not_after))?;
            }
        }
    }
    let mut next_update = out.encode_descriptor(
        "tls_reload_crl_next_update_seconds",
        "Unix time a CRL in force is due to be replaced (its nextUpdate).",
        None,
        MetricType::Gauge,
    )?;
    for crl in &status.crls {
        if let Some(next) = crl.next_update {
            let labels = [("issuer", crl.issuer.as_str())];
            next_update
                .encode_family(&labels)?
                .encode_gauge(&unix_seconds(next))?;
        }
    }
    Ok(())
}

/// Seconds since the unix epoch, negative before it.
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn counters_count() {
        let counters = Counters::default();
        counters.opened();
        counters.opened();
        counters.closed();
        counters.target_connect_failed();
        // Two workers' failures add up.
        counters.handshakes_failed(3);
        counters.handshakes_failed(2);
        assert_eq!(
            counters.snapshot(),
            Counts {
                active: 1,
                total: 2,
                handshake_failures: 5,
                target_connect_failures: 1,
                clients_denied: 0,
                idle_timeouts: 0,
                status_evictions: 0,
            }
        );
    }

    #[test]
    fn the_page_is_openmetrics_with_todays_sample_names() {
        let counts = Counts {
            active: 1,
            total: 2,
            handshake_failures: 3,
            target_connect_failures: 4,
            clients_denied: 5,
            idle_timeouts: 6,
            status_evictions: 7,
        };
        let page = openmetrics(None, None, counts);
        for line in [
            "# HELP tls_reload_connections_active Client connections open now, handshakes included.\n",
            "# TYPE tls_reload_connections_active gauge\ntls_reload_connections_active 1\n",
            "# TYPE tls_reload_connections counter\ntls_reload_connections_total 2\n",
            "\ntls_reload_handshake_failures_total 3\n",
            "\ntls_reload_target_connect_failures_total 4\n",
            "\ntls_reload_proxy_clients_denied_total 5\n",
            "\ntls_reload_proxy_idle_timeouts_total 6\n",
            "\ntls_reload_proxy_status_evictions_total 7\n",
        ] {
            assert!(page.contains(line), "{line:?} not in:\n{page}");
        }
        assert!(page.ends_with("\n# EOF\n"), "{page}");
        // Without a TLS listener or --target-tls, neither side's metrics.
        assert!(!page.contains("reloads"), "{page}");
        assert!(!page.contains("not_after"), "{page}");
    }

    #[test]
    fn unix_seconds_on_both_sides_of_the_epoch() {
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_millis(1500)), 1);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(2)), -2);
    }
}
