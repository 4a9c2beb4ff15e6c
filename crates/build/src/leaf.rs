use std::fmt::{self, Write as _};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::{BuildError, CertProblem};

/// What a status page shows about the served leaf certificate.
///
/// `Debug` shows the serial and fingerprint in hex and the dates in RFC 3339.
#[derive(Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The serial number's magnitude, big-endian, without DER's leading zero
    /// (one `0` byte for a zero serial).
    pub serial: Vec<u8>,
    /// The subject distinguished name, RFC 4514 style (`CN=example.com, O=...`).
    pub subject: String,
    /// Start of the validity period.
    pub not_before: SystemTime,
    /// End of the validity period.
    pub not_after: SystemTime,
    /// SHA-256 of the certificate's DER encoding.
    pub sha256: [u8; 32],
}

impl LeafInfo {
    /// The serial in lowercase hex, two digits per byte, without leading zero
    /// bytes, as `openssl x509 -serial` prints it (lowercased); `00` for zero.
    pub fn serial_hex(&self) -> String {
        serial_hex(&self.serial)
    }

    /// The SHA-256 fingerprint in lowercase hex, without separators.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    /// Describes a DER certificate, such as one a peer presented.
    ///
    /// ```
    /// # let key = rcgen::KeyPair::generate().unwrap();
    /// # let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    /// let leaf = tls_reload_build::LeafInfo::from_der(cert.der()).unwrap();
    /// assert_eq!(leaf.subject, "CN=rcgen self signed cert");
    /// ```
    pub fn from_der(der: &[u8]) -> Result<Self, BuildError> {
        let cert = parse_x509(der).map_err(|problem| BuildError::BadCertificate {
            path: Path::new("<DER certificate>").to_owned(),
            index: 1,
            count: 1,
            line: None,
            problem,
        })?;
        Ok(Self::from_x509(&cert, der))
    }

    /// What a build without a certificate shows
    /// ([`Materials::without_identity`](crate::Materials::without_identity)):
    /// serial `00`, no subject, the epoch as both dates, zero fingerprint.
    pub fn placeholder() -> Self {
        Self {
            serial: vec![0],
            subject: String::new(),
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH,
            sha256: [0; 32],
        }
    }

    /// Whether this is the [`placeholder`](LeafInfo::placeholder) of a
    /// build without a certificate.
    pub fn is_placeholder(&self) -> bool {
        self.sha256 == [0; 32] && self.subject.is_empty()
    }

    /// The start of the validity period as RFC 3339 UTC, `2026-01-01T00:00:00Z`.
    pub fn not_before_rfc3339(&self) -> String {
        Rfc3339(self.not_before).to_string()
    }

    /// The end of the validity period as RFC 3339 UTC, `2026-01-01T00:00:00Z`.
    pub fn not_after_rfc3339(&self) -> String {
        Rfc3339(self.not_after).to_string()
    }

    /// Describes a parsed certificate whose DER is `der`.
    pub(crate) fn from_x509(cert: &X509Certificate<'_>, der: &[u8]) -> Self {
        let validity = cert.validity();
        Self {
            serial: serial_magnitude(cert.raw_serial()),
            subject: cert.subject().to_string(),
            not_before: from_unix(validity.not_before.timestamp()),
            not_after: from_unix(validity.not_after.timestamp()),
            sha256: Sha256::digest(der).into(),
        }
    }

    /// Refuses a leaf outside its validity period at `now`.
    pub(crate) fn check_validity(&self, path: &Path, now: SystemTime) -> Result<(), BuildError> {
        if now > self.not_after {
            return Err(BuildError::Expired {
                path: path.to_owned(),
                not_after: self.not_after,
                now,
            });
        }
        if now < self.not_before {
            return Err(BuildError::NotYetValid {
                path: path.to_owned(),
                not_before: self.not_before,
                now,
            });
        }
        Ok(())
    }
}

/// Parses one certificate's DER, saying what is wrong in words: a
/// parser's own message is not passed on.
pub(crate) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, CertProblem> {
    use x509_parser::error::X509Error;
    use x509_parser::nom::{self, error::ErrorKind};
    let (rest, cert) = X509Certificate::from_der(der).map_err(|error| match error {
        nom::Err::Incomplete(_)
        | nom::Err::Error(X509Error::NomError(ErrorKind::Eof))
        | nom::Err::Failure(X509Error::NomError(ErrorKind::Eof)) => CertProblem::Truncated,
        nom::Err::Error(X509Error::Der(der)) | nom::Err::Failure(X509Error::Der(der))
            if matches!(der, x509_parser::der_parser::error::BerError::Incomplete(_)) =>
        {
            CertProblem::Truncated
        }
        _ => CertProblem::Malformed,
    })?;
    if !rest.is_empty() {
        return Err(CertProblem::TrailingData);
    }
    Ok(cert)
}

/// The DNS names of a certificate's subject alternative names, as a
/// server name is compared with them: lowercase, without a trailing dot,
/// each once, in certificate order. The common name is not used (RFC 6125;
/// browsers dropped it). IP addresses and other kinds of name are left out:
/// SNI carries DNS names only. A name holding anything but letters,
/// digits, `-`, `_`, `.` and `*` is left out too: no client asks for it,
/// and it is not echoed into logs and status pages.
pub(crate) fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    let mut seen = std::collections::HashSet::new();
    let mut names: Vec<String> = Vec::new();
    for name in &san.value.general_names {
        let GeneralName::DNSName(dns) = name else {
            continue;
        };
        let name = normalize_dns_name(dns);
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*'));
        if plain && !name.is_empty() && seen.insert(name.clone()) {
            names.push(name);
        }
    }
    names
}

/// A DNS name as names are compared: ASCII lowercase, a trailing dot dropped.
pub(crate) fn normalize_dns_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl fmt::Debug for LeafInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafInfo")
            .field("serial", &format_args!("{}", self.serial_hex()))
            .field("subject", &self.subject)
            .field("not_before", &format_args!("{}", Rfc3339(self.not_before)))
            .field("not_after", &format_args!("{}", Rfc3339(self.not_after)))
            .field("sha256", &format_args!("{}", self.sha256_hex()))
            .finish()
    }
}

/// A DER serial's magnitude, big-endian, without leading zero bytes (one
/// `0` byte for zero).
pub(crate) fn serial_magnitude(raw: &[u8]) -> Vec<u8> {
    let mut serial: Vec<u8> = raw.iter().copied().skip_while(|&b| b == 0).collect();
    if serial.is_empty() {
        serial.push(0);
    }
    serial
}

/// A serial in lowercase hex without leading zero bytes; `00` for zero.
pub(crate) fn serial_hex(serial: &[u8]) -> String {
    match serial.iter().position(|&b| b != 0) {
        Some(start) => hex(&serial[start..]),
        None => "00".to_owned(),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

pub(crate) fn from_unix(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// Displays a time as RFC 3339 UTC with whole seconds: `2025-01-01T00:00:00Z`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rfc3339(pub(crate) SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use time::format_description::well_known::Rfc3339 as Format;
        // Whole seconds, rounded towards the past (0.5 s before the epoch
        // is 23:59:59).
        let secs: i64 = match self.0.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_secs().try_into().unwrap_or(i64::MAX),
            Err(before) => {
                let d = before.duration();
                let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                -whole - i64::from(d.subsec_nanos() > 0)
            }
        };
        let text = time::OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|at| at.format(&Format).ok());
        match text {
            Some(text) => f.write_str(&text),
            // Outside years 0 to 9999: not RFC 3339, still a time.
            None => write!(f, "{secs} seconds since the epoch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> String {
        Rfc3339(from_unix(secs)).to_string()
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(at(951_825_600), "2000-02-29T12:00:00Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(at(-1), "1969-12-31T23:59:59Z");
        assert_eq!(
            Rfc3339(UNIX_EPOCH - Duration::from_millis(500)).to_string(),
            "1969-12-31T23:59:59Z"
        );
        // Past year 9999 (a hand-made LeafInfo): still words, no panic.
        assert_eq!(at(400_000_000_000), "400000000000 seconds since the epoch");
    }

    #[test]
    fn serial_hex_strips_padding() {
        let mut leaf = LeafInfo {
            serial: vec![0, 0x8a, 0x01],
            subject: String::new(),
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH,
            sha256: [0xab; 32],
        };
        assert_eq!(leaf.serial_hex(), "8a01");
        leaf.serial = vec![0];
        assert_eq!(leaf.serial_hex(), "00");
        leaf.serial = vec![];
        assert_eq!(leaf.serial_hex(), "00");
        assert_eq!(leaf.sha256_hex(), "ab".repeat(32));
    }
}
