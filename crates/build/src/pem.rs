//! PEM, split by our own line rules so that every refusal says what and
//! where in words: a parser's "offending line" can be a private key.
//!
//! Sections are found line by line (RFC 7468: text outside sections is
//! ignored); each body is then decoded by `rustls-pki-types`, whose base64
//! decoder runs in constant time for secret labels. No error built here
//! holds a byte of the input: only line numbers and labels from a fixed list.

use std::fmt;

use rustls::pki_types::pem::{PemObject, SectionKind};

/// A section's label, when it is one this crate knows. Printed in messages,
/// which is why an unknown label is never kept as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Label {
    /// `CERTIFICATE`
    Certificate,
    /// `PRIVATE KEY` (PKCS#8)
    PrivateKey,
    /// `RSA PRIVATE KEY` (PKCS#1)
    RsaPrivateKey,
    /// `EC PRIVATE KEY` (SEC1)
    EcPrivateKey,
    /// `ENCRYPTED PRIVATE KEY` (PKCS#8, encrypted with a passphrase)
    EncryptedPrivateKey,
    /// `PUBLIC KEY`
    PublicKey,
    /// `CERTIFICATE REQUEST`
    CertificateRequest,
    /// `X509 CRL`
    Crl,
    /// `TRUSTED CERTIFICATE` (OpenSSL's certificate with trust settings)
    TrustedCertificate,
    /// Any other label (its text is not kept).
    Other,
}

impl Label {
    const KNOWN: [(Label, &'static [u8]); 9] = [
        (Label::Certificate, b"CERTIFICATE"),
        (Label::PrivateKey, b"PRIVATE KEY"),
        (Label::RsaPrivateKey, b"RSA PRIVATE KEY"),
        (Label::EcPrivateKey, b"EC PRIVATE KEY"),
        (Label::EncryptedPrivateKey, b"ENCRYPTED PRIVATE KEY"),
        (Label::PublicKey, b"PUBLIC KEY"),
        (Label::CertificateRequest, b"CERTIFICATE REQUEST"),
        (Label::Crl, b"X509 CRL"),
        (Label::TrustedCertificate, b"TRUSTED CERTIFICATE"),
    ];

    fn from_bytes(label: &[u8]) -> Self {
        Self::KNOWN
            .iter()
            .find(|(_, text)| *text == label)
            .map_or(Self::Other, |(known, _)| *known)
    }

    fn text(self) -> Option<&'static str> {
        Self::KNOWN
            .iter()
            .find(|(known, _)| *known == self)
            .and_then(|(_, text)| std::str::from_utf8(text).ok())
    }

    /// Whether the section holds a private key.
    fn is_secret(self) -> bool {
        matches!(
            self,
            Self::PrivateKey | Self::RsaPrivateKey | Self::EcPrivateKey | Self::EncryptedPrivateKey
        )
    }

    fn kind(self) -> Option<SectionKind> {
        Some(match self {
            Self::Certificate => SectionKind::Certificate,
            Self::PrivateKey => SectionKind::PrivateKey,
            Self::RsaPrivateKey => SectionKind::RsaPrivateKey,
            Self::EcPrivateKey => SectionKind::EcPrivateKey,
            Self::PublicKey => SectionKind::PublicKey,
            Self::CertificateRequest => SectionKind::Csr,
            Self::Crl => SectionKind::Crl,
            Self::EncryptedPrivateKey | Self::TrustedCertificate | Self::Other => return None,
        })
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            Some(text) => f.write_str(text),
            None => f.write_str("an unrecognised label"),
        }
    }
}

/// What is wrong with a file's PEM, in words. Never holds input bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PemProblem {
    /// A BEGIN line and its END line are on one line: the newlines were
    /// replaced (by spaces or a literal `\n`), as happens when a key passes
    /// through an environment variable or a one-line YAML value.
    Flattened,
    /// Text follows the BEGIN marker on its line: the body must start on the
    /// next line.
    TextAfterBegin,
    /// A line starts with `-----BEGIN ` but does not end with `-----`.
    BadBeginLine,
    /// The body runs into the END marker on one line.
    TextBeforeEnd,
    /// The END line's label is not the BEGIN line's.
    MismatchedEnd {
        /// The BEGIN line's label.
        label: Label,
    },
    /// A new BEGIN line comes before the section that began at `begin_line`
    /// ended.
    NestedBegin {
        /// Where the unfinished section began.
        begin_line: usize,
    },
    /// The file ends inside the section (a truncated file).
    MissingEnd {
        /// The section's label.
        label: Label,
    },
    /// A body line holds a character that is not base64.
    NotBase64,
    /// The body is not valid base64 as a whole (truncated or padded wrong).
    BadBase64 {
        /// The section's label.
        label: Label,
    },
    /// The section's body is empty.
    EmptyBody {
        /// The section's label.
        label: Label,
    },
    /// The section starts with an encryption header (`Proc-Type`, as
    /// `openssl rsa -aes256` writes): a key encrypted in OpenSSL's legacy
    /// PEM format, which is not supported. Convert it with
    /// `openssl pkcs8 -topk8 -v2 aes-256-cbc`.
    LegacyEncryption,
}

impl fmt::Display for PemProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flattened => f.write_str(
                "BEGIN and END markers on one line: the PEM was flattened \
                 (newlines replaced by spaces or a literal \\n); restore one base64 line per line",
            ),
            Self::TextAfterBegin => f.write_str(
                "text follows the BEGIN marker on its line; the body must start on the next line",
            ),
            Self::BadBeginLine => {
                f.write_str("a BEGIN line that does not end with five dashes")
            }
            Self::TextBeforeEnd => f.write_str(
                "the body runs into the END marker; the END marker must be on a line of its own",
            ),
            Self::MismatchedEnd { label } => {
                write!(f, "the END line does not match the BEGIN line of this {label} section")
            }
            Self::NestedBegin { begin_line } => write!(
                f,
                "a BEGIN line inside the section that began at line {begin_line} (its END line is missing)"
            ),
            Self::MissingEnd { label } => write!(
                f,
                "the {label} section that begins here has no END line (truncated file?)"
            ),
            Self::NotBase64 => f.write_str("a body line holds characters that are not base64"),
            Self::BadBase64 { label } => write!(
                f,
                "the body of this {label} section is not valid base64 (truncated or padded wrong)"
            ),
            Self::EmptyBody { label } => write!(f, "this {label} section has an empty body"),
            Self::LegacyEncryption => f.write_str(
                "this section is encrypted in OpenSSL's legacy PEM format (a Proc-Type header), \
                 which is not supported; convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`",
            ),
        }
    }
}

/// A PEM error: the problem and the 1-based line it was found at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PemError {
    pub(crate) line: usize,
    pub(crate) problem: PemProblem,
}

/// A section being read: its label, the label's text (compared with the END
/// line, never put in an error), its BEGIN line and its body lines.
type Open<'a> = (Label, &'a [u8], usize, Vec<&'a [u8]>);

/// One decoded section.
pub(crate) struct Section {
    pub(crate) label: Label,
    /// The 1-based line of its BEGIN marker.
    pub(crate) line: usize,
    pub(crate) der: Vec<u8>,
}

impl Section {
    /// The section as rustls's kind, when rustls knows the label.
    pub(crate) fn kind(&self) -> Option<SectionKind> {
        self.label.kind()
    }
}

impl fmt::Debug for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body may be a private key.
        f.debug_struct("Section")
            .field("label", &self.label)
            .field("line", &self.line)
            .field("len", &self.der.len())
            .finish()
    }
}

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

/// Whether `bytes` holds a BEGIN marker anywhere.
pub(crate) fn looks_like_pem(bytes: &[u8]) -> bool {
    find(bytes, BEGIN).is_some()
}

/// Splits `bytes` into decoded PEM sections, in file order.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Section>, PemError> {
    let mut sections = Vec::new();
    let mut open: Option<Open<'_>> = None;
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        let line = trim_end(raw);
        let err = |problem| PemError {
            line: number,
            problem,
        };
        match open.take() {
            None => {
                let Some(rest) = line.strip_prefix(BEGIN) else {
                    continue; // explanatory text outside a section
                };
                let text = begin_label(rest).map_err(err)?;
                open = Some((Label::from_bytes(text), text, number, Vec::new()));
            }
            Some((label, text, begin_line, mut body)) => {
                if let Some(rest) = line.strip_prefix(END) {
                    if rest.strip_suffix(DASHES) != Some(text) {
                        return Err(err(PemProblem::MismatchedEnd { label }));
                    }
                    let der = decode(label, &body).map_err(|problem| PemError {
                        line: begin_line,
                        problem,
                    })?;
                    sections.push(Section {
                        label,
                        line: begin_line,
                        der,
                    });
                } else if line.starts_with(BEGIN) {
                    return Err(err(PemProblem::NestedBegin { begin_line }));
                } else if find(line, END).is_some() {
                    return Err(err(PemProblem::TextBeforeEnd));
                } else if body.is_empty() && is_encryption_header(line) {
                    return Err(PemError {
                        line: begin_line,
                        problem: PemProblem::LegacyEncryption,
                    });
                } else if !line
                    .iter()
                    .all(|&b| is_base64(b) || b == b' ' || b == b'\t')
                {
                    return Err(err(PemProblem::NotBase64));
                } else {
                    body.push(line);
                    open = Some((label, text, begin_line, body));
                }
            }
        }
    }
    if let Some((label, _, begin_line, _)) = open {
        return Err(PemError {
            line: begin_line,
            problem: PemProblem::MissingEnd { label },
        });
    }
    Ok(sections)
}

/// The label text of a BEGIN line, given what follows `-----BEGIN `.
fn begin_label(rest: &[u8]) -> Result<&[u8], PemProblem> {
    if let Some(label) = rest.strip_suffix(DASHES) {
        if find(label, DASHES).is_none() {
            return Ok(label);
        }
    }
    if find(rest, END).is_some() {
        Err(PemProblem::Flattened)
    } else if find(rest, DASHES).is_some() {
        Err(PemProblem::TextAfterBegin)
    } else {
        Err(PemProblem::BadBeginLine)
    }
}

/// Decodes a body with rustls-pki-types (constant time for private keys).
fn decode(label: Label, body: &[&[u8]]) -> Result<Vec<u8>, PemProblem> {
    if body
        .iter()
        .all(|line| line.iter().all(u8::is_ascii_whitespace))
    {
        return Err(PemProblem::EmptyBody { label });
    }
    // Rebuilt under a label pki-types decodes the same way: secret labels
    // as a private key (constant-time base64), the others as a certificate.
    let (begin, end): (&[u8], &[u8]) = if label.is_secret() {
        (
            b"-----BEGIN PRIVATE KEY-----\n",
            b"-----END PRIVATE KEY-----\n",
        )
    } else {
        (
            b"-----BEGIN CERTIFICATE-----\n",
            b"-----END CERTIFICATE-----\n",
        )
    };
    let mut pem = Vec::with_capacity(
        begin.len() + end.len() + body.iter().map(|l| l.len() + 1).sum::<usize>(),
    );
    pem.extend_from_slice(begin);
    for line in body {
        pem.extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
        pem.push(b'\n');
    }
    pem.extend_from_slice(end);
    let decoded = <(SectionKind, Vec<u8>)>::from_pem_slice(&pem);
    // The rebuilt copy may hold a key: overwrite it before it is freed.
    pem.iter_mut().for_each(|b| *b = 0);
    match decoded {
        Ok((_, der)) if !der.is_empty() => Ok(der),
        _ => Err(PemProblem::BadBase64 { label }),
    }
}

/// Whether `line` is RFC 1421's `Proc-Type: 4,ENCRYPTED` header, which
/// OpenSSL's legacy encrypted keys start with.
fn is_encryption_header(line: &[u8]) -> bool {
    line.strip_prefix(b"Proc-Type:")
        .is_some_and(|value| find(value, b"ENCRYPTED").is_some())
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

fn trim_end(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &line[..end]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_BODY: &str = "MC4CAQAwBQYDK2VwBCIEIDd1ZWxhc3RpY2l0eWlzZm9yYWxsdGhldGltZQ==";

    fn problem(pem: &str) -> PemError {
        match parse(pem.as_bytes()) {
            Ok(sections) => panic!("parsed {} sections", sections.len()),
            Err(error) => error,
        }
    }

    #[test]
    fn good_sections_decode_in_order_with_their_lines() {
        let pem = format!(
            "explanatory text\r\n-----BEGIN PRIVATE KEY-----\r\n{KEY_BODY}\r\n-----END PRIVATE KEY-----\r\n\
             -----BEGIN FOO-----\nAAAA\n-----END FOO-----\n"
        );
        let sections = parse(pem.as_bytes()).expect("parses");
        assert_eq!(sections.len(), 2);
        assert_eq!(
            (sections[0].label, sections[0].line),
            (Label::PrivateKey, 2)
        );
        assert_eq!(sections[0].der.len(), 43);
        assert_eq!((sections[1].label, sections[1].line), (Label::Other, 5));
    }

    #[test]
    fn each_malformed_shape_is_named_with_its_line() {
        let flat = format!("-----BEGIN PRIVATE KEY----- {KEY_BODY} -----END PRIVATE KEY-----");
        assert_eq!(problem(&flat).problem, PemProblem::Flattened);
        let literal =
            format!("-----BEGIN PRIVATE KEY-----\\n{KEY_BODY}\\n-----END PRIVATE KEY-----\\n");
        assert_eq!(problem(&literal).problem, PemProblem::Flattened);
        let glued = format!("-----BEGIN PRIVATE KEY-----{KEY_BODY}\n-----END PRIVATE KEY-----\n");
        assert_eq!(problem(&glued).problem, PemProblem::TextAfterBegin);
        let glued_end =
            format!("-----BEGIN PRIVATE KEY-----\n{KEY_BODY}-----END PRIVATE KEY-----\n");
        let error = problem(&glued_end);
        assert_eq!((error.line, error.problem), (2, PemProblem::TextBeforeEnd));
        let truncated = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            &KEY_BODY[..29]
        );
        let error = problem(&truncated);
        assert_eq!(
            error.problem,
            PemProblem::BadBase64 {
                label: Label::PrivateKey
            }
        );
        let unterminated = format!("\n-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n");
        let error = problem(&unterminated);
        assert_eq!(
            (error.line, error.problem),
            (
                2,
                PemProblem::MissingEnd {
                    label: Label::PrivateKey
                }
            )
        );
        let wrong_end =
            format!("-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----\n");
        assert_eq!(
            problem(&wrong_end).problem,
            PemProblem::MismatchedEnd {
                label: Label::PrivateKey
            }
        );
        let nested =
            format!("-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----BEGIN PRIVATE KEY-----\n");
        assert_eq!(
            problem(&nested).problem,
            PemProblem::NestedBegin { begin_line: 1 }
        );
        let junk = "-----BEGIN PRIVATE KEY-----\nnot base64 at all!\n-----END PRIVATE KEY-----\n";
        assert_eq!(problem(junk).problem, PemProblem::NotBase64);
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                      DEK-Info: AES-256-CBC,0123456789ABCDEF0123456789ABCDEF\n\n\
                      AAAA\n-----END RSA PRIVATE KEY-----\n";
        let error = problem(legacy);
        assert_eq!(
            (error.line, error.problem),
            (1, PemProblem::LegacyEncryption)
        );
        let empty = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
        assert_eq!(
            problem(empty).problem,
            PemProblem::EmptyBody {
                label: Label::Certificate
            }
        );
    }

    #[test]
    fn messages_hold_no_input_bytes() {
        let flat = format!("-----BEGIN PRIVATE KEY----- {KEY_BODY} -----END PRIVATE KEY-----");
        let error = problem(&flat);
        let text = format!("{} {:?}", error.problem, error);
        assert!(!text.contains(&KEY_BODY[..16]), "{text}");
        assert!(!text.contains("80, 82"), "{text}");
    }
}
