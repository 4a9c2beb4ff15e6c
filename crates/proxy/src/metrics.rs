//! Connection counters, and the `/status` JSON and `/metrics` Prometheus
//! text made from them and the acceptor's [`Status`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// The `/metrics` page in the Prometheus text format, version 0.0.4: the
/// listener's reloads (with a TLS listener), the connection counts and the
/// target side's reloads (with `--target-tls`).
pub(crate) fn prometheus(
    status: Option<&Status>,
    target: Option<&ConnectorStatus>,
    counts: &Counts,
) -> String {
    let mut out = String::new();
    if let Some(status) = status {
        let metrics: [(&str, &str, &str, i128); 4] = [
            (
                "tls_reload_reloads_applied_total",
                "counter",
                "Certificate reloads applied since start-up.",
                status.reloads_applied.into(),
            ),
            (
                "tls_reload_reloads_failed_total",
                "counter",
                "Certificate reloads that failed (the last good certificate kept serving).",
                status.reloads_failed.into(),
            ),
            (
                "tls_reload_last_reload_success_timestamp_seconds",
                "gauge",
                "Unix time the certificate now served was loaded.",
                unix_seconds(status.applied_at).into(),
            ),
            (
                "tls_reload_detection_events",
                "gauge",
                "1 when file-system events wake the checks, 0 when they poll only (see /status).",
                i128::from(status.detection.is_events()),
            ),
        ];
        write_metrics(&mut out, &metrics);
    }
    let metrics: [(&str, &str, &str, i128); 7] = [
        (
            "tls_reload_connections_active",
            "gauge",
            "Client connections open now, handshakes included.",
            counts.active.into(),
        ),
        (
            "tls_reload_connections_total",
            "counter",
            "Client connections accepted since start-up.",
            counts.total.into(),
        ),
        (
            "tls_reload_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
            counts.handshake_failures.into(),
        ),
        (
            "tls_reload_target_connect_failures_total",
            "counter",
            "Connections to the target that failed or timed out.",
            counts.target_connect_failures.into(),
        ),
        (
            "tls_reload_proxy_clients_denied_total",
            "counter",
            "Clients closed after their handshake because no --allow-cn, --allow-dns or --allow-uri named them.",
            counts.clients_denied.into(),
        ),
        (
            "tls_reload_proxy_idle_timeouts_total",
            "counter",
            "Connections closed after --idle-timeout of silence both ways.",
            counts.idle_timeouts.into(),
        ),
        (
            "tls_reload_proxy_status_evictions_total",
            "counter",
            "Status page connections closed unanswered to make room when the page was full.",
            counts.status_evictions.into(),
        ),
    ];
    write_metrics(&mut out, &metrics);
    if let Some(target) = target {
        let metrics: [(&str, &str, &str, i128); 3] = [
            (
                "tls_reload_proxy_target_reloads_applied_total",
                "counter",
                "Reloads of the client identity and roots used towards the target (--target-tls) applied since start-up.",
                target.reloads_applied.into(),
            ),
            (
                "tls_reload_proxy_target_reloads_failed_total",
                "counter",
                "Reloads of the client identity and roots used towards the target that failed (the last good ones kept).",
                target.reloads_failed.into(),
            ),
            (
                "tls_reload_proxy_target_identity_not_after_seconds",
                "gauge",
                "Unix time the client certificate presented to the target expires (0 without one).",
                target
                    .identity
                    .as_ref()
                    .map_or(0, |leaf| unix_seconds(leaf.not_after))
                    .into(),
            ),
        ];
        write_metrics(&mut out, &metrics);
    }
    if let Some(status) = status {
        certificate_metrics(&mut out, status);
    }
    out
}

/// Unlabelled metrics: name, type, help and value.
fn write_metrics(out: &mut String, metrics: &[(&str, &str, &str, i128)]) {
    for (name, kind, help, value) in metrics {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
}

/// The not-after of the served leaf and of every client CA, and the
/// `nextUpdate` of every CRL in force, as labelled gauges.
fn certificate_metrics(out: &mut String, status: &Status) {
    let name = "tls_reload_certificate_not_after_seconds";
    let _ = write!(
        out,
        "# HELP {name} Unix time a served certificate expires (kind: leaf or client_ca).\n# TYPE {name} gauge\n"
    );
    let certs = std::iter::once(("leaf", status.leaf.serial_hex(), status.leaf.not_after)).chain(
        status
            .client_cas
            .iter()
            .map(|ca| ("client_ca", ca.serial_hex(), ca.not_after)),
    );
    for (kind, serial, not_after) in certs {
        let _ = writeln!(
            out,
            "{name}{{kind=\"{kind}\",serial=\"{serial}\"}} {}",
            unix_seconds(not_after)
        );
    }
    let name = "tls_reload_crl_next_update_seconds";
    let _ = write!(
        out,
        "# HELP {name} Unix time a CRL in force is due to be replaced (its nextUpdate).\n# TYPE {name} gauge\n"
    );
    for crl in &status.crls {
        if let Some(next) = crl.next_update {
            let _ = writeln!(
                out,
                "{name}{{issuer=\"{}\"}} {}",
                label_value(&crl.issuer),
                unix_seconds(next)
            );
        }
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
    fn label_values_are_escaped() {
        assert_eq!(
            label_value("CN=a\\b, O=\"q\"\n"),
            "CN=a\\\\b, O=\\\"q\\\"\\n"
        );
    }

    #[test]
    fn unix_seconds_on_both_sides_of_the_epoch() {
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_millis(1500)), 1);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(2)), -2);
    }
}
