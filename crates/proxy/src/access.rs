//! Access control on the client's identity: `--allow-cn`, `--allow-dns`
//! and `--allow-uri`, checked on the client's certificate (the leaf) once
//! the handshake has verified it against the client CAs.
//!
//! Without any list every client the CAs admit is allowed. With lists, a
//! client is allowed when its certificate has a subject common name in
//! `--allow-cn` (exact), a DNS name among its subject alternative names in
//! `--allow-dns` (ASCII case ignored, no wildcard matching) or a URI among
//! them in `--allow-uri` (exact, as SPIFFE IDs are compared). The lists
//! are fixed for the life of the process.

use std::fmt;

use tls_reload_acceptor::rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The identities allowed in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Allow {
    /// Subject common names.
    pub(crate) cns: Vec<String>,
    /// DNS names among the subject alternative names.
    pub(crate) dns: Vec<String>,
    /// URIs among the subject alternative names (SPIFFE IDs).
    pub(crate) uris: Vec<String>,
}

/// Why a client was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The client sent no certificate (client certificates optional).
    NoCertificate,
    /// Its certificate could not be parsed here (the handshake accepted it).
    Unparsable,
    /// Its certificate names no allowed identity.
    NotAllowed {
        /// Its subject, as `CN=..., O=...`.
        subject: String,
    },
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCertificate => f.write_str("no client certificate"),
            Self::Unparsable => f.write_str("the client certificate cannot be parsed"),
            Self::NotAllowed { .. } => {
                f.write_str("the client certificate names no allowed CN, DNS name or URI")
            }
        }
    }
}

impl Allow {
    /// Whether any list was given; without one every client is allowed.
    pub(crate) fn is_restricted(&self) -> bool {
        !(self.cns.is_empty() && self.dns.is_empty() && self.uris.is_empty())
    }

    /// Whether the client whose certificate chain is `chain` (leaf first)
    /// may go on.
    pub(crate) fn check(&self, chain: Option<&[CertificateDer<'_>]>) -> Result<(), Denied> {
        if !self.is_restricted() {
            return Ok(());
        }
        let leaf = chain.and_then(<[_]>::first).ok_or(Denied::NoCertificate)?;
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| Denied::Unparsable)?;
        if self.allows(&cert) {
            Ok(())
        } else {
            Err(Denied::NotAllowed {
                subject: cert.subject().to_string(),
            })
        }
    }

    fn allows(&self, cert: &X509Certificate<'_>) -> bool {
        let cn_allowed = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .any(|cn| self.cns.iter().any(|allowed| allowed == cn));
        if cn_allowed {
            return true;
        }
        let Ok(Some(names)) = cert.subject_alternative_name() else {
            return false;
        };
        names.value.general_names.iter().any(|name| match name {
            GeneralName::DNSName(dns) => self
                .dns
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(dns)),
            GeneralName::URI(uri) => self.uris.iter().any(|allowed| allowed == uri),
            _ => false,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn cert(cn: &str, sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "tests");
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn allow(cns: &[&str], dns: &[&str], uris: &[&str]) -> Allow {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Allow {
            cns: owned(cns),
            dns: owned(dns),
            uris: owned(uris),
        }
    }

    #[test]
    fn no_list_allows_everyone_even_without_a_certificate() {
        assert_eq!(Allow::default().check(None), Ok(()));
    }

    #[test]
    fn a_cn_dns_name_or_uri_on_a_list_lets_the_client_in() {
        let web = cert(
            "web",
            vec![
                SanType::DnsName("web.example.org".try_into().unwrap()),
                SanType::URI("spiffe://example.org/web".try_into().unwrap()),
            ],
        );
        let chain = Some(std::slice::from_ref(&web));
        assert_eq!(allow(&["web"], &[], &[]).check(chain), Ok(()));
        assert_eq!(allow(&[], &["WEB.example.org"], &[]).check(chain), Ok(()));
        assert_eq!(
            allow(&[], &[], &["spiffe://example.org/web"]).check(chain),
            Ok(())
        );
        assert_eq!(
            allow(&["db"], &[], &["spiffe://example.org/db"]).check(chain),
            Err(Denied::NotAllowed {
                subject: "CN=web, O=tests".into()
            })
        );
    }

    #[test]
    fn names_are_not_matched_across_kinds_or_loosely() {
        let web = cert(
            "web.example.org",
            vec![SanType::URI("spiffe://example.org/web".try_into().unwrap())],
        );
        let chain = Some(std::slice::from_ref(&web));
        // The CN is not a DNS name, the URI is compared whole.
        assert!(allow(&[], &["web.example.org"], &[]).check(chain).is_err());
        assert!(allow(&[], &[], &["spiffe://example.org/we"])
            .check(chain)
            .is_err());
        assert!(allow(&[], &[], &["SPIFFE://example.org/web"])
            .check(chain)
            .is_err());
        assert!(allow(&["WEB.example.org"], &[], &[]).check(chain).is_err());
    }

    #[test]
    fn with_a_list_a_client_without_a_certificate_is_refused() {
        let list = allow(&["web"], &[], &[]);
        assert_eq!(list.check(None), Err(Denied::NoCertificate));
        assert_eq!(list.check(Some(&[])), Err(Denied::NoCertificate));
        let junk = CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]);
        assert_eq!(
            list.check(Some(std::slice::from_ref(&junk))),
            Err(Denied::Unparsable)
        );
    }
}
