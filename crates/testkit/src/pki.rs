//! An rcgen PKI: CAs, intermediates and `localhost` leaves with chosen
//! serials.

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

/// A certificate authority made with rcgen.
pub struct Ca {
    /// The CA's own (self-signed, or intermediate) certificate.
    pub cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A leaf certificate and its key.
pub struct Leaf {
    /// The certificate.
    pub cert: rcgen::Certificate,
    /// Its private key.
    pub key: KeyPair,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("serial", &self.serial_hex())
            .finish_non_exhaustive()
    }
}

/// The parameters of a CA named `name` (CN), allowed to sign certificates
/// and CRLs.
pub fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// The parameters of a leaf for `localhost` (SAN and CN `localhost`); rcgen
/// picks the serial from the key.
pub fn leaf_params() -> CertificateParams {
    let mut params = CertificateParams::new(vec!["localhost".into()]).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
}

/// A fresh ECDSA P-256 key.
pub fn new_key() -> KeyPair {
    KeyPair::generate().expect("key")
}

/// A fresh RSA 2048 key, made by openssl (*ring* makes no RSA keys).
pub fn rsa_key() -> KeyPair {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl genpkey failed");
    let pem = String::from_utf8(out.stdout).expect("PEM");
    KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).expect("RSA key")
}

/// A copy of `key` (rcgen keys are not `Clone`).
pub fn key_copy(key: &KeyPair) -> KeyPair {
    KeyPair::from_pem(&key.serialize_pem()).expect("key copy")
}

impl Ca {
    /// A self-signed CA named `name`, with a fresh key.
    pub fn new(name: &str) -> Self {
        Self::from_parts(ca_params(name), new_key())
    }

    /// A self-signed CA from given params and key (many CAs can share one
    /// key).
    pub fn from_parts(params: CertificateParams, key: KeyPair) -> Self {
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA named `name`, signed by this one.
    pub fn intermediate(&self, name: &str) -> Self {
        let key = new_key();
        let params = ca_params(name);
        let cert = params.signed_by(&key, &self.issuer).expect("intermediate");
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `localhost` with a fresh key and this serial; its CN is
    /// `localhost <serial>`. Keep test serials in `0x1000..0x8000` so their
    /// hex has four digits.
    pub fn leaf(&self, serial: u16) -> Leaf {
        self.leaf_with(serial, new_key(), |_| {})
    }

    /// A leaf with this serial for an existing key (say, the one being
    /// served), so that only the certificate file needs to change.
    pub fn leaf_for_key(&self, serial: u16, key: &KeyPair) -> Leaf {
        self.leaf_with(serial, key_copy(key), |_| {})
    }

    /// A leaf for an existing key whose validity ended in 2021.
    pub fn expired_leaf(&self, serial: u16, key: &KeyPair) -> Leaf {
        self.leaf_with(serial, key_copy(key), |params| {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        })
    }

    /// A leaf as [`leaf`](Ca::leaf) makes it, for `key`; `tweak` adjusts
    /// the parameters first.
    pub fn leaf_with(
        &self,
        serial: u16,
        key: KeyPair,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".into()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("localhost {serial:04x}"));
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        tweak(&mut params);
        self.sign(params, key)
    }

    /// A leaf from [`leaf_params`] (CN `localhost`, serial from the key)
    /// with a fresh key.
    pub fn localhost_leaf(&self) -> Leaf {
        self.sign(leaf_params(), new_key())
    }

    /// A leaf for these DNS names (subject alternative names; CN
    /// `NAME0 SERIAL`) with this serial, for `key`.
    pub fn named_leaf(&self, serial: u16, names: &[&str], key: KeyPair) -> Leaf {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        let first = names.first().map_or("no name", String::as_str);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{first} {serial:04x}"));
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        self.sign(params, key)
    }

    /// Signs `params` for `key`.
    pub fn sign(&self, params: CertificateParams, key: KeyPair) -> Leaf {
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        Leaf { cert, key }
    }

    /// A CRL of this CA revoking `revoked`, issued on 2020-01-01 and due
    /// again in 2099, in PEM.
    pub fn crl(&self, revoked: &[&Leaf]) -> String {
        self.crl_until(revoked, date_time_ymd(2099, 1, 1))
    }

    /// A CRL of this CA revoking `revoked`, issued on 2020-01-01, whose
    /// `nextUpdate` is `next_update` (in the past: an expired CRL), in PEM.
    pub fn crl_until(&self, revoked: &[&Leaf], next_update: OffsetDateTime) -> String {
        self.crl_dated(revoked, date_time_ymd(2020, 1, 1), next_update)
    }

    /// A CRL of this CA revoking `revoked`, issued at `this_update` and due
    /// again at `next_update`, in PEM.
    pub fn crl_dated(
        &self,
        revoked: &[&Leaf],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> String {
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(revoked.len() as u64 + 1),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|leaf| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&leaf.raw_serial()),
                    revocation_time: date_time_ymd(2020, 1, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("CRL")
            .pem()
            .expect("CRL PEM")
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate in DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

impl Leaf {
    /// The certificate in PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The key in PEM (PKCS#8).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A copy of the key, to issue another certificate for it.
    pub fn key_copy(&self) -> KeyPair {
        key_copy(&self.key)
    }

    /// The serial as `LeafInfo::serial_hex` and the example servers print
    /// it, read from the certificate.
    pub fn serial_hex(&self) -> String {
        crate::der_serial_hex(self.cert.der()).expect("an rcgen certificate parses")
    }

    /// The certificate's serial as DER holds it (a leading zero when the
    /// high bit is set), for a CRL entry.
    pub fn raw_serial(&self) -> Vec<u8> {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(self.cert.der())
            .expect("an rcgen certificate parses");
        cert.raw_serial().to_vec()
    }

    /// The chain, just this certificate, in DER.
    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.der().clone()]
    }

    /// The key in DER (PKCS#8).
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.serialize_der().into())
    }
}

/// A self-signed CA certificate named `name`, in PEM, its key thrown away:
/// something to trust, in a CA bundle or directory.
pub fn ca_pem(name: &str) -> String {
    Ca::new(name).pem()
}
