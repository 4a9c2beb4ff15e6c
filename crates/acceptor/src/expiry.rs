//! Expiry warnings that follow the certificates actually served.
//!
//! Checked by the reloader at every tick, whether or not a file changed, so
//! a renewer that silently stopped is noticed, and a clock that jumped is
//! noticed at the next tick. Each certificate (by its SHA-256) is reported
//! once when it enters its warning window, and, once past its not-after
//! while still served, at most hourly.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use tls_reload_build::LeafInfo;

/// How often a certificate still served after its not-after is reported
/// again.
pub(crate) const EXPIRED_REPEAT: Duration = Duration::from_secs(3600);

/// Which certificate an expiry event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertKind {
    /// The leaf certificate presented: an acceptor's served certificate,
    /// or a connector's client identity.
    Leaf,
    /// A client CA certificate (mTLS trust).
    ClientCa,
    /// A root a connector trusts to sign servers' certificates.
    Root,
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Leaf => "certificate",
            Self::ClientCa => "client CA certificate",
            Self::Root => "root CA certificate",
        })
    }
}

/// When a certificate's warning window opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExpiryWindow {
    /// The last third of its lifetime (cert-manager renews at two thirds,
    /// so a certificate in its last third was not renewed when it should
    /// have been). The default.
    #[default]
    LastThird,
    /// This long before its not-after.
    Before(Duration),
}

impl ExpiryWindow {
    /// When the window of `cert` opens.
    fn opens(self, cert: &LeafInfo) -> SystemTime {
        let before = match self {
            Self::LastThird => {
                cert.not_after
                    .duration_since(cert.not_before)
                    .unwrap_or_default()
                    / 3
            }
            Self::Before(before) => before,
        };
        cert.not_after
            .checked_sub(before)
            .unwrap_or(cert.not_before)
    }
}

/// What was last reported of each certificate, by SHA-256.
#[derive(Debug, Default)]
pub(crate) struct Expiry {
    window: ExpiryWindow,
    stages: HashMap<[u8; 32], Stage>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Fine,
    Warned,
    Expired { reported: Instant },
}

/// An expiry to report.
#[derive(Clone, Debug)]
pub(crate) struct Due {
    pub(crate) kind: CertKind,
    pub(crate) cert: LeafInfo,
    pub(crate) expired: bool,
}

impl Expiry {
    pub(crate) fn new(window: ExpiryWindow) -> Self {
        Self {
            window,
            stages: HashMap::new(),
        }
    }

    /// What to report of `certs` (the ones served now) at `now`; forgets
    /// certificates no longer served.
    pub(crate) fn check(
        &mut self,
        certs: &[(CertKind, &LeafInfo)],
        now: SystemTime,
        clock: Instant,
    ) -> Vec<Due> {
        self.stages
            .retain(|sha, _| certs.iter().any(|(_, cert)| cert.sha256 == *sha));
        let mut due = Vec::new();
        for (kind, cert) in certs {
            let stage = self.stages.entry(cert.sha256).or_insert(Stage::Fine);
            let next = if now > cert.not_after {
                match *stage {
                    Stage::Expired { reported }
                        if clock.duration_since(reported) < EXPIRED_REPEAT =>
                    {
                        continue;
                    }
                    _ => Stage::Expired { reported: clock },
                }
            } else if now >= self.window.opens(cert) {
                if *stage != Stage::Fine {
                    continue;
                }
                Stage::Warned
            } else {
                // Back before the window (the clock was set back): a later
                // crossing is news again.
                *stage = Stage::Fine;
                continue;
            };
            *stage = next;
            due.push(Due {
                kind: *kind,
                cert: (*cert).clone(),
                expired: matches!(next, Stage::Expired { .. }),
            });
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(byte: u8, not_before: u64, not_after: u64) -> LeafInfo {
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        LeafInfo {
            serial: vec![byte],
            subject: "CN=x".into(),
            not_before: at(not_before),
            not_after: at(not_after),
            sha256: [byte; 32],
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn one_warning_per_crossing_and_hourly_once_expired() {
        let leaf = cert(1, 0, 3000);
        let mut expiry = Expiry::new(ExpiryWindow::LastThird);
        let clock = Instant::now();
        let check = |expiry: &mut Expiry, secs, after: u64| {
            expiry
                .check(
                    &[(CertKind::Leaf, &leaf)],
                    at(secs),
                    clock + Duration::from_secs(after),
                )
                .iter()
                .map(|due| due.expired)
                .collect::<Vec<_>>()
        };
        assert_eq!(check(&mut expiry, 1999, 0), Vec::<bool>::new());
        assert_eq!(
            check(&mut expiry, 2000, 0),
            [false],
            "the window opens at two thirds"
        );
        assert_eq!(
            check(&mut expiry, 2500, 0),
            Vec::<bool>::new(),
            "once per crossing"
        );
        assert_eq!(check(&mut expiry, 3001, 0), [true]);
        assert_eq!(check(&mut expiry, 3100, 100), Vec::<bool>::new());
        assert_eq!(
            check(&mut expiry, 6700, 3700),
            [true],
            "again after an hour"
        );
        // The clock set back before the window, then forward again.
        assert_eq!(check(&mut expiry, 100, 3800), Vec::<bool>::new());
        assert_eq!(check(&mut expiry, 2100, 3900), [false]);
    }

    #[test]
    fn a_fixed_window_and_certificates_no_longer_served_are_forgotten() {
        let (old, new) = (cert(1, 0, 1000), cert(2, 0, 1000));
        let mut expiry = Expiry::new(ExpiryWindow::Before(Duration::from_secs(100)));
        let clock = Instant::now();
        assert!(expiry
            .check(&[(CertKind::Leaf, &old)], at(899), clock)
            .is_empty());
        assert_eq!(
            expiry
                .check(&[(CertKind::Leaf, &old)], at(900), clock)
                .len(),
            1
        );
        let due = expiry.check(&[(CertKind::ClientCa, &new)], at(950), clock);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].kind, CertKind::ClientCa);
        assert_eq!(expiry.stages.len(), 1, "the old one is forgotten");
    }
}
