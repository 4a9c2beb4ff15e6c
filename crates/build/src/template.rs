use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ServerConfig, SupportedProtocolVersion};

use crate::{BuildError, DEFAULT_MAX_FILE_SIZE};

type Configure = Arc<dyn Fn(&mut ServerConfig) + Send + Sync>;

/// Everything about the server config except the files: crypto provider,
/// protocol versions, ALPN, client auth mode and checks.
///
/// Cheap to clone; the same template is used for every reload.
#[derive(Clone)]
pub struct Template {
    pub(crate) provider: Arc<CryptoProvider>,
    pub(crate) versions: Vec<&'static SupportedProtocolVersion>,
    pub(crate) alpn: Vec<Vec<u8>>,
    pub(crate) client_auth: ClientAuth,
    pub(crate) check_validity: bool,
    pub(crate) max_file_size: u64,
    pub(crate) session_tickets: bool,
    pub(crate) enforce_crl_expiry: bool,
    pub(crate) configure: Vec<Configure>,
}

/// Whether a client must present a certificate when the materials name client CAs.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// A client without a valid certificate is refused.
    #[default]
    Required,
    /// A client may connect without a certificate; one it presents must be valid.
    Optional,
}

impl Template {
    /// A template using this crypto provider, TLS 1.3 and 1.2, no ALPN, client
    /// certificates required (when the materials name client CAs), validity
    /// checked, files capped at [`DEFAULT_MAX_FILE_SIZE`], no session tickets.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self {
            provider,
            versions: rustls::DEFAULT_VERSIONS.to_vec(),
            alpn: Vec::new(),
            client_auth: ClientAuth::default(),
            check_validity: true,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            session_tickets: false,
            enforce_crl_expiry: false,
            configure: Vec::new(),
        }
    }

    /// A template using the process default provider if one is installed, else
    /// *ring* (feature `ring`), else aws-lc-rs (feature `aws-lc-rs`).
    ///
    /// Fails with [`BuildError::NoProvider`] when there is none of these.
    pub fn from_default_provider() -> Result<Self, BuildError> {
        default_provider().map(Self::new)
    }

    /// The crypto provider.
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// The protocol versions to offer (default: TLS 1.3 and TLS 1.2).
    pub fn protocol_versions(mut self, versions: &[&'static SupportedProtocolVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    /// The ALPN protocols to offer, most preferred first (default: none).
    pub fn alpn_protocols(mut self, protocols: Vec<Vec<u8>>) -> Self {
        self.alpn = protocols;
        self
    }

    /// Whether client certificates are required or optional (default: required).
    ///
    /// Applies only when the materials name client CAs; without them no client
    /// certificate is requested.
    pub fn client_auth(mut self, mode: ClientAuth) -> Self {
        self.client_auth = mode;
        self
    }

    /// Whether to refuse a leaf certificate that is expired or not yet valid
    /// (default: on).
    pub fn check_validity(mut self, on: bool) -> Self {
        self.check_validity = on;
        self
    }

    /// The largest file, in bytes, that a build reads (default: [`DEFAULT_MAX_FILE_SIZE`]).
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// The cap set by [`max_file_size`](Template::max_file_size): a reloader
    /// watching these files should read no more.
    pub fn file_size_limit(&self) -> u64 {
        self.max_file_size
    }

    /// Whether to issue stateless session tickets, encrypted with the ticketer of
    /// the enabled provider feature (`ring`, else `aws-lc-rs`). Default: off;
    /// stateful resumption through the session cache works either way.
    pub fn session_tickets(mut self, on: bool) -> Self {
        self.session_tickets = on;
        self
    }

    /// Whether a CRL past its `nextUpdate` is refused (default: off).
    ///
    /// Off, as rustls does by default, an expired CRL stays in force: the
    /// build succeeds with a warning and
    /// [`Built::crl_expired`](crate::Built::crl_expired) says so. On, a
    /// build refuses an expired CRL ([`BuildError::CrlExpired`]; the config
    /// being served stays), and handshakes check each CRL's `nextUpdate`
    /// too, so a client is refused once the CRL that covers it expires
    /// and until a fresh one is loaded. A change of this setting resets
    /// resumption, like a CRL change.
    pub fn enforce_crl_expiry(mut self, on: bool) -> Self {
        self.enforce_crl_expiry = on;
        self
    }

    /// The setting of [`enforce_crl_expiry`](Template::enforce_crl_expiry).
    pub fn enforces_crl_expiry(&self) -> bool {
        self.enforce_crl_expiry
    }

    /// Adds a last-word tweak applied to every built config, after everything
    /// else. Tweaks run in the order they were added.
    ///
    /// A tweak that replaces `session_storage` or `ticketer` takes over
    /// resumption continuity; [`Built::resumption`](crate::Built::resumption)
    /// reports what it ended up with.
    pub fn configure(mut self, f: impl Fn(&mut ServerConfig) + Send + Sync + 'static) -> Self {
        self.configure.push(Arc::new(f));
        self
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("provider", &self.provider)
            .field("protocol_versions", &self.versions)
            .field("alpn_protocols", &self.alpn)
            .field("client_auth", &self.client_auth)
            .field("check_validity", &self.check_validity)
            .field("max_file_size", &self.max_file_size)
            .field("session_tickets", &self.session_tickets)
            .field("enforce_crl_expiry", &self.enforce_crl_expiry)
            .field(
                "configure",
                &self.configure.iter().map(|_| "<fn>").collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The process default provider if one is installed, else *ring*
/// (feature `ring`), else aws-lc-rs (feature `aws-lc-rs`).
pub(crate) fn default_provider() -> Result<Arc<CryptoProvider>, BuildError> {
    CryptoProvider::get_default()
        .cloned()
        .or_else(|| builtin::provider().map(Arc::new))
        .ok_or(BuildError::NoProvider)
}

/// What the enabled provider features supply: *ring* first, then aws-lc-rs.
pub(crate) mod builtin {
    use std::sync::Arc;

    use rustls::crypto::CryptoProvider;
    use rustls::server::ProducesTickets;

    #[cfg(feature = "ring")]
    pub(crate) fn provider() -> Option<CryptoProvider> {
        Some(rustls::crypto::ring::default_provider())
    }

    #[cfg(feature = "ring")]
    pub(crate) fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
        rustls::crypto::ring::Ticketer::new()
    }

    #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
    pub(crate) fn provider() -> Option<CryptoProvider> {
        Some(rustls::crypto::aws_lc_rs::default_provider())
    }

    #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
    pub(crate) fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
        rustls::crypto::aws_lc_rs::Ticketer::new()
    }

    #[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
    pub(crate) fn provider() -> Option<CryptoProvider> {
        None
    }

    #[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
    pub(crate) fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
        Err(rustls::Error::General(
            "session tickets need the `ring` or `aws-lc-rs` feature".into(),
        ))
    }
}
