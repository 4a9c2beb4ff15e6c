use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures::Stream;
use tls_reload_build::{CaInfo, ClientMaterials, CrlInfo, LeafInfo, Materials, Resumption};
use tls_reload_detect::Detection;

use crate::{CertKind, ReloadError};

/// A snapshot of the reload state, for a status page or a health check.
///
/// Returned by [`ReloadingAcceptor::status`](crate::ReloadingAcceptor::status).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Status {
    /// How many configs have been applied, the start-up one included (it is
    /// generation 1).
    pub generation: u64,
    /// When the config now served was applied.
    pub applied_at: SystemTime,
    /// When the last reload (not the start-up load) was applied, if any.
    pub last_reload_at: Option<SystemTime>,
    /// Reloads applied since start-up.
    pub reloads_applied: u64,
    /// Reload failures since start-up. A failure that repeats with the same
    /// cause on the same files counts once.
    pub reloads_failed: u64,
    /// The message of the last failure, if any (it stays after a later
    /// success; compare `last_error_at` with `applied_at`).
    pub last_error: Option<String>,
    /// When the last failure happened.
    pub last_error_at: Option<SystemTime>,
    /// The certificate now served: serial, subject, validity, fingerprint.
    pub leaf: LeafInfo,
    /// The material paths in force.
    pub materials: Materials,
    /// The files read for the config now served.
    pub files: Vec<PathBuf>,
    /// How changes are detected: file-system events (with the poll as the
    /// backstop), or poll only and why (events off, no backend on this
    /// platform, a watch that could not be added, no reloader running).
    pub detection: Detection,
    /// Every client CA now trusted (mTLS), with its not-after: expiry
    /// warnings cover them like the leaf.
    pub client_cas: Vec<CaInfo>,
    /// The certificate revocation lists in force, with their `nextUpdate`.
    pub crls: Vec<CrlInfo>,
    /// The named pairs (SNI), by stem: served ones and ones that never
    /// built. Empty without named pairs.
    pub pairs: Vec<PairStatus>,
    /// Handshakes refused because no pair served the name asked for and
    /// there is no default pair.
    pub unrecognized_names: u64,
}

/// One named pair in [`Status::pairs`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PairStatus {
    /// The pair's stem (its files are `STEM.crt` and `STEM.key`, or
    /// `STEM.pem`).
    pub stem: String,
    /// The DNS names it is served for; empty while it has never built.
    pub names: Vec<String>,
    /// The certificate served for it; `None` while it has never built.
    pub leaf: Option<LeafInfo>,
    /// Its files.
    pub files: Vec<PathBuf>,
    /// Its last failure, if any (it stays after a later success; a pair
    /// that has never built shows why here).
    pub last_error: Option<String>,
    /// How many versions of it have been applied, the first included.
    pub generation: u64,
}

/// Why a check did not lead to a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// A build that finished after a newer one was applied (or after a manual
    /// reload or reconfiguration began) was dropped.
    Stale,
    /// The files are those of a build that failed moments ago; it is retried
    /// after the retry interval or as soon as anything moves.
    KnownFailure,
    /// The files kept changing while they were read (a renewer still
    /// writing): no build of them is applied or counted as failed; the next
    /// check tries again.
    Unsettled,
}

/// What the reloader did, as seen by [`ReloadingAcceptor::events`](crate::ReloadingAcceptor::events).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ReloadEvent {
    /// The watched files differ from the ones served.
    Detected {
        /// The paths that moved.
        paths: Vec<PathBuf>,
    },
    /// A new config was built and is about to be applied.
    Built {
        /// The certificate it serves.
        leaf: LeafInfo,
        /// Whether sessions from the previous config still resume.
        resumption: Resumption,
    },
    /// New handshakes now use a new config.
    Applied {
        /// Its generation (see [`Status::generation`]).
        generation: u64,
        /// The certificate it serves.
        leaf: LeafInfo,
        /// Whether it came from [`reload_now`](crate::ReloadingAcceptor::reload_now)
        /// or a reconfiguration rather than the reloader.
        manual: bool,
    },
    /// A reload failed; the last good config keeps serving. Reported once per
    /// distinct cause and set of files.
    Failed {
        /// Why.
        error: ReloadError,
    },
    /// A check did not lead to a build, or a build was not applied.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
    /// A served certificate entered its warning window (see
    /// [`Builder::expiry_warning`](crate::Builder::expiry_warning)): renew
    /// it. Reported once per certificate per crossing.
    ExpiresSoon {
        /// The served leaf, or a client CA.
        kind: CertKind,
        /// The certificate.
        certificate: LeafInfo,
    },
    /// A certificate is past its not-after and still served: nothing valid
    /// replaced it. Reported at once, then at most hourly.
    Expired {
        /// The served leaf, or a client CA.
        kind: CertKind,
        /// The certificate.
        certificate: LeafInfo,
    },
    /// A named pair was added (after start-up) or replaced: new handshakes
    /// for its names get it.
    PairApplied {
        /// The pair's stem.
        stem: String,
        /// How many versions of the pair have been applied.
        generation: u64,
        /// The certificate it now serves.
        leaf: LeafInfo,
    },
    /// A named pair failed to build; it keeps serving its last good
    /// version, if it has one. Reported once per distinct cause and files.
    PairFailed {
        /// The pair's stem.
        stem: String,
        /// Why (the message names the file).
        error: ReloadError,
    },
    /// A named pair's files are gone (confirmed): it is no longer served.
    PairRemoved {
        /// The pair's stem.
        stem: String,
    },
    /// Another event of a named pair's reloads (detected, built, skipped,
    /// expiry).
    Pair {
        /// The pair's stem.
        stem: String,
        /// What happened.
        event: Box<ReloadEvent>,
    },
}

/// One line per event, as the example servers and the proxy print them
/// (named pairs: `reload applied name=STEM serial=0a1b`, `reload failed:
/// MESSAGE`, `reload removed name=STEM`; their other events end with
/// ` name=STEM`):
/// `reload applied generation=2 serial=0a1b`, `reload failed: MESSAGE`,
/// `reload detected: PATH, PATH`, `reload built serial=0a1b`,
/// `reload skipped: stale`, `certificate expires soon: serial=0a1b
/// not_after=2026-01-01T00:00:00Z`, `certificate expired: serial=0a1b
/// not_after=2026-01-01T00:00:00Z` (`client CA certificate ...` for a CA).
impl fmt::Display for ReloadEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Detected { paths } => write_detected(f, paths),
            Self::Built { leaf, .. } => write!(f, "reload built serial={}", leaf.serial_hex()),
            Self::Applied {
                generation, leaf, ..
            } => write!(
                f,
                "reload applied generation={generation} serial={}",
                leaf.serial_hex()
            ),
            Self::Failed { error } => write!(f, "reload failed: {error}"),
            Self::ExpiresSoon { kind, certificate } => {
                write_expiry(f, *kind, "expires soon", certificate)
            }
            Self::Expired { kind, certificate } => write_expiry(f, *kind, "expired", certificate),
            Self::Skipped { reason } => write_skipped(f, *reason),
            Self::PairApplied { stem, leaf, .. } => {
                write!(f, "reload applied name={stem} serial={}", leaf.serial_hex())
            }
            Self::PairFailed { error, .. } => write!(f, "reload failed: {error}"),
            Self::PairRemoved { stem } => write!(f, "reload removed name={stem}"),
            Self::Pair { stem, event } => write!(f, "{event} name={stem}"),
        }
    }
}

fn write_detected(f: &mut fmt::Formatter<'_>, paths: &[PathBuf]) -> fmt::Result {
    f.write_str("reload detected:")?;
    for (i, path) in paths.iter().enumerate() {
        let separator = if i == 0 { " " } else { ", " };
        write!(f, "{separator}{}", path.display())?;
    }
    Ok(())
}

fn write_expiry(
    f: &mut fmt::Formatter<'_>,
    kind: CertKind,
    what: &str,
    certificate: &LeafInfo,
) -> fmt::Result {
    write!(
        f,
        "{kind} {what}: serial={} not_after={}",
        certificate.serial_hex(),
        certificate.not_after_rfc3339()
    )
}

fn write_skipped(f: &mut fmt::Formatter<'_>, reason: SkipReason) -> fmt::Result {
    f.write_str(match reason {
        SkipReason::Stale => "reload skipped: stale",
        SkipReason::KnownFailure => "reload skipped: known failure",
        SkipReason::Unsettled => "reload skipped: files still changing",
    })
}

/// What a [`ReloadingConnector`](crate::ReloadingConnector)'s reloader did,
/// as seen by its [`events`](crate::ReloadingConnector::events): the
/// events of an acceptor, with the client's identity, which it may not
/// have, in place of the served leaf.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ConnectorEvent {
    /// The watched files differ from the ones in use.
    Detected {
        /// The paths that moved.
        paths: Vec<PathBuf>,
    },
    /// A new client config was built and is about to be applied.
    Built {
        /// The identity it presents, if any.
        identity: Option<LeafInfo>,
        /// Whether sessions from the previous config still resume (only
        /// when neither the identity nor the roots changed).
        resumption: Resumption,
    },
    /// New connections now use a new client config.
    Applied {
        /// Its generation (see [`ConnectorStatus::generation`]).
        generation: u64,
        /// The identity it presents, if any.
        identity: Option<LeafInfo>,
        /// Whether it came from
        /// [`reload_now`](crate::ReloadingConnector::reload_now) or a
        /// reconfiguration rather than the reloader.
        manual: bool,
    },
    /// A reload failed; the last good config stays in use. Reported once
    /// per distinct cause and set of files.
    Failed {
        /// Why.
        error: ReloadError,
    },
    /// A check did not lead to a build, or a build was not applied.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
    /// A certificate in use (the identity, or a trusted root) entered its
    /// warning window. Reported once per certificate per crossing.
    ExpiresSoon {
        /// The identity ([`CertKind::Leaf`]) or a root.
        kind: CertKind,
        /// The certificate.
        certificate: LeafInfo,
    },
    /// A certificate is past its not-after and still in use. Reported at
    /// once, then at most hourly.
    Expired {
        /// The identity ([`CertKind::Leaf`]) or a root.
        kind: CertKind,
        /// The certificate.
        certificate: LeafInfo,
    },
}

/// One line per event, as for an acceptor; `serial=` is left out when the
/// client has no identity: `reload applied generation=2 serial=0a1b`,
/// `reload applied generation=2`.
impl fmt::Display for ConnectorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let serial = |identity: &Option<LeafInfo>| match identity {
            Some(leaf) => format!(" serial={}", leaf.serial_hex()),
            None => String::new(),
        };
        match self {
            Self::Detected { paths } => write_detected(f, paths),
            Self::Built { identity, .. } => write!(f, "reload built{}", serial(identity)),
            Self::Applied {
                generation,
                identity,
                ..
            } => write!(
                f,
                "reload applied generation={generation}{}",
                serial(identity)
            ),
            Self::Failed { error } => write!(f, "reload failed: {error}"),
            Self::ExpiresSoon { kind, certificate } => {
                write_expiry(f, *kind, "expires soon", certificate)
            }
            Self::Expired { kind, certificate } => write_expiry(f, *kind, "expired", certificate),
            Self::Skipped { reason } => write_skipped(f, *reason),
        }
    }
}

/// A snapshot of a [`ReloadingConnector`](crate::ReloadingConnector)'s
/// reload state, for a status page or a health check.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectorStatus {
    /// How many configs have been applied, the start-up one included (it is
    /// generation 1).
    pub generation: u64,
    /// When the config now in use was applied.
    pub applied_at: SystemTime,
    /// When the last reload (not the start-up load) was applied, if any.
    pub last_reload_at: Option<SystemTime>,
    /// Reloads applied since start-up.
    pub reloads_applied: u64,
    /// Reload failures since start-up; a repeat of the same cause on the
    /// same files counts once.
    pub reloads_failed: u64,
    /// The message of the last failure, if any.
    pub last_error: Option<String>,
    /// When the last failure happened.
    pub last_error_at: Option<SystemTime>,
    /// The identity presented to servers that ask, if any.
    pub identity: Option<LeafInfo>,
    /// Every root read from the roots file and directory; empty when the
    /// template's root store is in use.
    pub roots: Vec<CaInfo>,
    /// The material paths in force.
    pub materials: ClientMaterials,
    /// The files read for the config now in use.
    pub files: Vec<PathBuf>,
    /// How changes are detected (see [`Status::detection`]).
    pub detection: Detection,
}

/// A stream of [`ReloadEvent`]s, from
/// [`ReloadingAcceptor::events`](crate::ReloadingAcceptor::events) (or of
/// [`ConnectorEvent`]s, from
/// [`ReloadingConnector::events`](crate::ReloadingConnector::events)).
///
/// It buffers a bounded number of events; a subscriber that does not keep up
/// misses the newest ones rather than growing memory. It ends when the
/// acceptor (or connector) is dropped.
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Events<E = ReloadEvent> {
    pub(crate) inner: Pin<Box<async_channel::Receiver<E>>>,
}

impl<E> Stream for Events<E> {
    type Item = E;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
