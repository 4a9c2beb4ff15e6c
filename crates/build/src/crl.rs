//! Client CAs and certificate revocation lists: what a status page shows of
//! them, and the checks a CRL passes before it is trusted (it parses as
//! rustls will parse it, and a client CA signed it).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::CertificateRevocationListDer;
use x509_parser::asn1_rs::{self, Any};
use x509_parser::certificate::X509Certificate;
use x509_parser::num_bigint::BigUint;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::leaf::{from_unix, serial_hex, Rfc3339};
use crate::{BuildError, CrlProblem};

/// What a status page shows about a trusted client CA.
///
/// `Debug` shows the serial in hex and the date in RFC 3339.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaInfo {
    /// The file it was read from (the bundle, or a file of the CA
    /// directory).
    pub path: PathBuf,
    /// The subject distinguished name, RFC 4514 style (`CN=clients, O=...`).
    pub subject: String,
    /// The serial number's magnitude, big-endian, without DER's leading zero
    /// (one `0` byte for a zero serial).
    pub serial: Vec<u8>,
    /// Start of the validity period.
    pub not_before: SystemTime,
    /// End of the validity period.
    pub not_after: SystemTime,
    /// SHA-256 of the certificate's DER encoding.
    pub sha256: [u8; 32],
}

impl CaInfo {
    /// The serial in lowercase hex, as [`LeafInfo::serial_hex`](crate::LeafInfo::serial_hex)
    /// prints it.
    pub fn serial_hex(&self) -> String {
        serial_hex(&self.serial)
    }

    /// The end of the validity period as RFC 3339 UTC, `2026-01-01T00:00:00Z`.
    pub fn not_after_rfc3339(&self) -> String {
        Rfc3339(self.not_after).to_string()
    }

    /// The certificate as a [`LeafInfo`](crate::LeafInfo) describes one
    /// (serial, subject, validity, fingerprint), for what reports on any
    /// certificate, such as expiry warnings.
    pub fn certificate(&self) -> crate::LeafInfo {
        crate::LeafInfo {
            serial: self.serial.clone(),
            subject: self.subject.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            sha256: self.sha256,
        }
    }

    pub(crate) fn from_x509(path: &Path, cert: &X509Certificate<'_>) -> Self {
        let leaf = crate::LeafInfo::from_x509(cert, cert.as_raw());
        Self {
            path: path.to_owned(),
            subject: leaf.subject,
            serial: leaf.serial,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            sha256: leaf.sha256,
        }
    }
}

impl fmt::Debug for CaInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaInfo")
            .field("path", &self.path)
            .field("subject", &self.subject)
            .field("serial", &format_args!("{}", self.serial_hex()))
            .field("not_after", &format_args!("{}", Rfc3339(self.not_after)))
            .finish()
    }
}

/// What a status page shows about a certificate revocation list in force.
///
/// `Debug` shows the dates in RFC 3339.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CrlInfo {
    /// The file it was read from.
    pub path: PathBuf,
    /// The line of its BEGIN marker in that file.
    pub line: usize,
    /// The issuer distinguished name, RFC 4514 style: the client CA that
    /// signed it.
    pub issuer: String,
    /// When it was issued (`thisUpdate`).
    pub this_update: SystemTime,
    /// When the next one is due (`nextUpdate`): past it the CRL is expired.
    /// Always present in a CRL rustls accepts.
    pub next_update: Option<SystemTime>,
    /// How many certificates it revokes.
    pub revoked: usize,
}

impl CrlInfo {
    /// Whether its `nextUpdate` has passed at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.next_update.is_some_and(|next| now >= next)
    }

    /// `thisUpdate` as RFC 3339 UTC, `2026-01-01T00:00:00Z`.
    pub fn this_update_rfc3339(&self) -> String {
        Rfc3339(self.this_update).to_string()
    }

    /// `nextUpdate` as RFC 3339 UTC, when there is one.
    pub fn next_update_rfc3339(&self) -> Option<String> {
        self.next_update.map(|at| Rfc3339(at).to_string())
    }
}

impl fmt::Debug for CrlInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrlInfo")
            .field("path", &self.path)
            .field("line", &self.line)
            .field("issuer", &self.issuer)
            .field(
                "this_update",
                &format_args!("{}", Rfc3339(self.this_update)),
            )
            .field(
                "next_update",
                &format_args!(
                    "{}",
                    self.next_update_rfc3339().as_deref().unwrap_or("none")
                ),
            )
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// What a CRL's signature is checked with: a client CA's name and public
/// key, in the encodings webpki compares.
pub(crate) struct Signer {
    /// The subject Name, RFC 4514 style.
    name: String,
    /// The subject Name, DER (tag included).
    subject: Vec<u8>,
    /// The contents of the key's AlgorithmIdentifier.
    key_algorithm: Vec<u8>,
    /// The subjectPublicKey bits.
    public_key: Vec<u8>,
}

impl Signer {
    pub(crate) fn of(cert: &X509Certificate<'_>) -> Option<Self> {
        let spki = cert.public_key();
        let (_, spki_seq) = <Any<'_> as asn1_rs::FromDer<'_>>::from_der(spki.raw).ok()?;
        let (_, algorithm) = <Any<'_> as asn1_rs::FromDer<'_>>::from_der(spki_seq.data).ok()?;
        Some(Self {
            name: cert.subject().to_string(),
            subject: cert.subject().as_raw().to_vec(),
            key_algorithm: algorithm.data.to_vec(),
            public_key: spki.subject_public_key.data.to_vec(),
        })
    }
}

impl Signer {
    /// The CA's subject, RFC 4514 style.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether `crl` is this CA's (by name: the signature was checked).
    pub(crate) fn issued(&self, crl: &CrlInfo) -> bool {
        crl.issuer == self.name
    }
}

/// A CRL that passed every check.
pub(crate) struct CheckedCrl {
    pub(crate) der: CertificateRevocationListDer<'static>,
    pub(crate) info: CrlInfo,
    /// What it covers: its issuer and issuing distribution point, as
    /// webpki matches them. Of two CRLs with one scope webpki uses the
    /// first it holds, whatever their dates.
    scope: (Vec<u8>, Option<Vec<u8>>),
    /// Its CRL number, to order CRLs issued at the same time.
    number: Option<BigUint>,
}

impl CheckedCrl {
    /// Whether `self` and `other` cover the same certificates.
    pub(crate) fn same_scope(&self, other: &Self) -> bool {
        self.scope == other.scope
    }

    /// Whether `self` was issued after `other` (later thisUpdate, then a
    /// higher CRL number), as OpenSSL picks the newest of a scope.
    pub(crate) fn newer_than(&self, other: &Self) -> bool {
        (self.info.this_update, &self.number) > (other.info.this_update, &other.number)
    }
}

/// Checks one CRL, the section at `line` of `path`: rustls can use it, and
/// one of `signers` signed it with an algorithm of `algorithms`.
pub(crate) fn check(
    path: &Path,
    line: usize,
    der: Vec<u8>,
    signers: &[Signer],
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<CheckedCrl, BuildError> {
    let refuse = |problem| BuildError::BadCrl {
        path: path.to_owned(),
        line,
        problem,
    };
    // As rustls will parse it when the verifier is built, so that a refusal
    // names this file and line.
    let parsed: webpki::CertRevocationList<'_> = webpki::BorrowedCertRevocationList::from_der(&der)
        .and_then(|crl| crl.to_owned())
        .map_err(|error| refuse(webpki_problem(&error)))?
        .into();
    let scope = (
        parsed.issuer().to_vec(),
        parsed.issuing_distribution_point().map(<[u8]>::to_vec),
    );
    let (rest, crl) =
        CertificateRevocationList::from_der(&der).map_err(|_| refuse(CrlProblem::Malformed))?;
    if !rest.is_empty() {
        return Err(refuse(CrlProblem::Malformed));
    }
    verify_signature(&crl, signers, algorithms).map_err(refuse)?;
    let info = CrlInfo {
        path: path.to_owned(),
        line,
        issuer: crl.issuer().to_string(),
        this_update: from_unix(crl.last_update().timestamp()),
        next_update: crl.next_update().map(|at| from_unix(at.timestamp())),
        revoked: crl.iter_revoked_certificates().count(),
    };
    let number = crl.crl_number().cloned();
    Ok(CheckedCrl {
        der: CertificateRevocationListDer::from(der),
        info,
        scope,
        number,
    })
}

/// Verifies the CRL's signature with the key of a signer named as its
/// issuer, as webpki verifies it at handshakes: the algorithm whose key and
/// signature identifiers are the CA key's and the CRL's.
fn verify_signature(
    crl: &CertificateRevocationList<'_>,
    signers: &[Signer],
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<(), CrlProblem> {
    let issuer = crl.issuer().as_raw();
    let mut named = signers
        .iter()
        .filter(|signer| signer.subject == issuer)
        .peekable();
    if named.peek().is_none() {
        return Err(CrlProblem::UnknownIssuer);
    }
    let signature_algorithm = signature_algorithm(crl.as_raw()).ok_or(CrlProblem::Malformed)?;
    let message = crl.tbs_cert_list.as_ref();
    let signature = crl.signature_value.data.as_ref();
    let mut supported = false;
    for signer in named {
        for algorithm in algorithms.all.iter().filter(|algorithm| {
            algorithm.signature_alg_id().as_ref() == signature_algorithm
                && algorithm.public_key_alg_id().as_ref() == signer.key_algorithm.as_slice()
        }) {
            supported = true;
            if algorithm
                .verify_signature(&signer.public_key, message, signature)
                .is_ok()
            {
                return Ok(());
            }
        }
    }
    Err(if supported {
        CrlProblem::BadSignature
    } else {
        CrlProblem::UnsupportedSignatureAlgorithm
    })
}

/// The contents of a CertificateList's signatureAlgorithm, from its DER.
fn signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    let (_, list) = <Any<'_> as asn1_rs::FromDer<'_>>::from_der(der).ok()?;
    let (rest, _tbs) = <Any<'_> as asn1_rs::FromDer<'_>>::from_der(list.data).ok()?;
    let (_, algorithm) = <Any<'_> as asn1_rs::FromDer<'_>>::from_der(rest).ok()?;
    Some(algorithm.data)
}

/// webpki's refusal of a CRL, in this crate's words.
fn webpki_problem(error: &webpki::Error) -> CrlProblem {
    use webpki::Error as E;
    match error {
        E::UnsupportedCrlVersion
        | E::UnsupportedDeltaCrl
        | E::UnsupportedIndirectCrl
        | E::UnsupportedCriticalExtension
        | E::UnsupportedRevocationReason
        | E::UnsupportedRevocationReasonsPartitioning
        | E::UnsupportedCrlIssuingDistributionPoint => CrlProblem::Unsupported,
        _ => CrlProblem::Malformed,
    }
}
