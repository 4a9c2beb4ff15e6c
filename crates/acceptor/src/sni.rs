//! Many names behind one config: a certificate resolver over named pairs,
//! each of which can be replaced on its own.
//!
//! # Layout
//!
//! ```text
//!  handshake ──load──► index: ArcSwap<Index> ──one hash lookup──► [slot, ...] ──load──► CertifiedKey
//!                        exact:    name            → candidates      (per pair: ArcSwap)
//!                        wildcard: parent domain   → candidates
//!                      default: ArcSwapOption<CertifiedKey> (on a miss)
//! ```
//!
//! The index maps names to per-pair *slots*. Replacing a pair whose names
//! and key type stay the same (a renewal) stores the new key in its slot:
//! nothing else is touched, whatever the number of names. Adding or
//! removing a pair, or a renewal that changes its names or key type,
//! builds a new index from the pairs (under `pairs`, a lock handshakes
//! never take) and stores it. A handshake takes no lock: it loads the
//! index, looks the name up, loads the chosen slot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{SignatureAlgorithm, SignatureScheme};
use tls_reload_build::BuiltPair;

/// A [`ResolvesServerCert`] that picks a named pair by the server name a
/// client asks for (SNI), and whose pairs can be added, replaced and
/// removed while it serves.
///
/// - **Names** are the DNS names of each pair's certificate
///   ([`BuiltPair::names`]), compared case-insensitively, a trailing dot
///   ignored.
/// - **Resolution**: the exact name first; then a wildcard covering exactly
///   one left-most label (`*.example.com` serves `a.example.com`, not
///   `a.b.example.com` nor `example.com`); then the default pair, when one
///   is set. Without a default pair, no SNI or a name no pair claims
///   resolves to nothing: rustls then ends the handshake (with an
///   `access_denied` alert; the acceptor reads the ClientHello first and
///   sends `unrecognized_name` instead) and [`refused`](Self::refused)
///   counts it.
/// - **One name, several pairs**: a name may have pairs of different key
///   types (ECDSA and RSA, say): the client's signature schemes choose, the
///   first type the client can verify in the order ECDSA, Ed25519, RSA
///   (as HAProxy does with multi-cert bundles). Two pairs of the same key
///   type claiming a name: the one whose stem sorts first (byte order)
///   serves it, and a warning names both.
/// - **Cost**: a handshake does one hash lookup for an exact name (two
///   for a name only a wildcard covers) and takes no lock. Renewing a pair
///   stores into its own slot; adding or removing pairs rebuilds the name
///   index once per call (use [`update`](Self::update) to change many pairs
///   at once).
///
/// ```
/// use std::sync::Arc;
/// use tls_reload_acceptor::{build_pair_blocking, PairFiles, SniResolver, Template};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let key = rcgen::KeyPair::generate()?;
/// # let cert = rcgen::CertificateParams::new(vec!["api.example.com".into()])?.self_signed(&key)?;
/// # std::fs::write(dir.path().join("api.pem"), cert.pem() + &key.serialize_pem())?;
/// let template = Template::from_default_provider()?;
/// let resolver = Arc::new(SniResolver::new());
/// let pair = PairFiles::combined("api", dir.path().join("api.pem"));
/// resolver.insert(&build_pair_blocking(&pair, &template)?);
/// assert!(resolver.resolve_name(Some("API.example.com."), &[]).is_some());
/// assert!(resolver.resolve_name(Some("www.example.com"), &[]).is_none());
///
/// // In any rustls server config:
/// let config = rustls::ServerConfig::builder_with_provider(template.provider().clone())
///     .with_safe_default_protocol_versions()?
///     .with_no_client_auth()
///     .with_cert_resolver(resolver);
/// # drop(config);
/// # Ok(()) }
/// ```
pub struct SniResolver {
    index: ArcSwap<Index>,
    default: ArcSwapOption<CertifiedKey>,
    /// The pairs by stem. Writers only: handshakes never take it.
    pairs: Mutex<Pairs>,
    refused: AtomicU64,
}

/// The name index: names to the slots of the pairs that claim them,
/// preferred first. Rebuilt only when pairs come, go, or change names or
/// key type.
#[derive(Default)]
struct Index {
    exact: HashMap<Arc<str>, Candidates>,
    /// `*.example.com` is kept under `example.com`.
    wildcard: HashMap<Arc<str>, Candidates>,
}

/// The slots claiming one name, one per key type, preferred first.
type Candidates = Box<[Arc<Slot>]>;

/// One pair's served key: replaced in place by a renewal.
struct Slot {
    key: ArcSwap<CertifiedKey>,
}

#[derive(Default)]
struct Pairs {
    by_stem: BTreeMap<Arc<str>, Pair>,
    /// The names claimed by two pairs of one key type at the last rebuild,
    /// so each conflict is warned about once.
    conflicts: HashSet<(Arc<str>, KeyType)>,
}

struct Pair {
    slot: Arc<Slot>,
    names: Arc<[String]>,
    key_type: KeyType,
}

/// A key type, in the order a name's candidates are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum KeyType {
    Ecdsa,
    Ed25519,
    Rsa,
    Other,
}

impl KeyType {
    fn of(key: &CertifiedKey) -> Self {
        Self::of_algorithm(key.key.algorithm())
    }

    fn of_algorithm(algorithm: SignatureAlgorithm) -> Self {
        match algorithm {
            SignatureAlgorithm::ECDSA => Self::Ecdsa,
            SignatureAlgorithm::ED25519 => Self::Ed25519,
            SignatureAlgorithm::RSA => Self::Rsa,
            _ => Self::Other,
        }
    }

    /// Whether a client offering `schemes` can verify this type's
    /// signatures.
    fn offered(self, schemes: &[SignatureScheme]) -> bool {
        use SignatureScheme as S;
        schemes.iter().any(|scheme| {
            let of = match scheme {
                S::ECDSA_NISTP256_SHA256 | S::ECDSA_NISTP384_SHA384 | S::ECDSA_NISTP521_SHA512 => {
                    Self::Ecdsa
                }
                S::ED25519 => Self::Ed25519,
                S::RSA_PKCS1_SHA256
                | S::RSA_PKCS1_SHA384
                | S::RSA_PKCS1_SHA512
                | S::RSA_PSS_SHA256
                | S::RSA_PSS_SHA384
                | S::RSA_PSS_SHA512 => Self::Rsa,
                _ => Self::Other,
            };
            of == self
        })
    }
}

/// Changes to many pairs, applied by [`SniResolver::update`] with one
/// rebuild of the name index.
#[derive(Debug, Default)]
pub struct SniBatch {
    ops: Vec<Op>,
}

#[derive(Debug)]
enum Op {
    Insert(BuiltPair),
    Remove(String),
}

impl SniBatch {
    /// Adds the pair, or replaces the pair of the same stem.
    pub fn insert(&mut self, pair: BuiltPair) -> &mut Self {
        self.ops.push(Op::Insert(pair));
        self
    }

    /// Removes the pair of this stem, if there is one.
    pub fn remove(&mut self, stem: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Remove(stem.into()));
        self
    }
}

impl SniResolver {
    /// A resolver with no pair and no default pair: it resolves nothing
    /// until pairs are inserted.
    pub fn new() -> Self {
        Self {
            index: ArcSwap::from_pointee(Index::default()),
            default: ArcSwapOption::empty(),
            pairs: Mutex::new(Pairs::default()),
            refused: AtomicU64::new(0),
        }
    }

    /// Serves `key` to clients that send no SNI or a name no pair claims
    /// (`None`: refuse them).
    pub fn set_default(&self, key: Option<Arc<CertifiedKey>>) {
        self.default.store(key);
    }

    /// Whether a default pair is set.
    pub fn has_default(&self) -> bool {
        self.default.load().is_some()
    }

    /// Adds the pair, or replaces the pair of the same stem. A renewal
    /// with the same names and key type only swaps the pair's key; any
    /// other change rebuilds the name index.
    pub fn insert(&self, pair: &BuiltPair) {
        let mut batch = SniBatch::default();
        batch.insert(pair.clone());
        self.apply(batch);
    }

    /// Removes the pair of this stem; whether there was one.
    pub fn remove(&self, stem: &str) -> bool {
        let mut batch = SniBatch::default();
        batch.remove(stem);
        self.apply(batch)
    }

    /// Applies many changes with at most one rebuild of the name index:
    /// what a start-up load or a directory change uses.
    ///
    /// ```
    /// # use tls_reload_acceptor::SniResolver;
    /// # let (resolver, built) = (SniResolver::new(), Vec::new());
    /// resolver.update(|batch| {
    ///     for pair in built {
    ///         batch.insert(pair);
    ///     }
    ///     batch.remove("retired");
    /// });
    /// ```
    pub fn update(&self, f: impl FnOnce(&mut SniBatch)) {
        let mut batch = SniBatch::default();
        f(&mut batch);
        self.apply(batch);
    }

    /// The stems of the pairs, sorted.
    pub fn stems(&self) -> Vec<String> {
        self.with_pairs(|pairs| pairs.by_stem.keys().map(|stem| stem.to_string()).collect())
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.with_pairs(|pairs| pairs.by_stem.len())
    }

    /// Whether there is no pair (a default pair is not counted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many handshakes resolved to nothing: no SNI or an unknown name,
    /// with no default pair.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// What a handshake for `server_name` offering `schemes` is served:
    /// by the rules above, without counting a refusal. The name is
    /// compared case-insensitively, a trailing dot ignored. An empty
    /// `schemes` takes a name's first candidate.
    pub fn resolve_name(
        &self,
        server_name: Option<&str>,
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let mut buf = [0u8; 256];
            if let Some(name) = normalize(name, &mut buf) {
                if let Some(key) = self.lookup(name, schemes) {
                    return Some(key);
                }
            }
        }
        self.default.load_full()
    }

    /// Whether `server_name` is claimed by a pair (exactly or by a
    /// wildcard) or falls back to a default pair: whether a handshake for
    /// it is served.
    pub fn serves(&self, server_name: Option<&str>) -> bool {
        self.resolve_name(server_name, &[]).is_some()
    }

    /// Counts a handshake refused for want of a certificate, by a caller
    /// that refused it before the resolver was asked (the acceptor, which
    /// sends `unrecognized_name`).
    pub(crate) fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn lookup(&self, name: &str, schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let index = self.index.load();
        if let Some(candidates) = index.exact.get(name) {
            return Some(choose(candidates, schemes));
        }
        let (_, parent) = name.split_once('.')?;
        let candidates = index.wildcard.get(parent)?;
        Some(choose(candidates, schemes))
    }

    fn with_pairs<T>(&self, f: impl FnOnce(&mut Pairs) -> T) -> T {
        f(&mut self.pairs.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Applies the changes; whether the name index was rebuilt.
    fn apply(&self, batch: SniBatch) -> bool {
        let warnings = self.with_pairs(|pairs| {
            let mut rebuild = false;
            for op in batch.ops {
                rebuild |= match op {
                    Op::Insert(built) => pairs.insert(built),
                    Op::Remove(stem) => pairs.by_stem.remove(stem.as_str()).is_some(),
                };
            }
            if !rebuild {
                return None;
            }
            let (index, warnings) = pairs.index();
            // Stored under the lock, so indexes are stored in the order
            // their changes were made.
            self.index.store(Arc::new(index));
            Some(warnings)
        });
        let rebuilt = warnings.is_some();
        for warning in warnings.into_iter().flatten() {
            warning.log();
        }
        rebuilt
    }
}

impl Pairs {
    /// Adds or replaces a pair; whether the name index must be rebuilt.
    fn insert(&mut self, built: BuiltPair) -> bool {
        let key = built.certified_key().clone();
        let key_type = KeyType::of(&key);
        if let Some(pair) = self.by_stem.get_mut(built.stem()) {
            if pair.names == *built.names() && pair.key_type == key_type {
                pair.slot.key.store(key);
                return false;
            }
        }
        // A new slot: the index being served keeps the old one, so the old
        // names keep the old key until the new index is stored.
        self.by_stem.insert(
            built.stem().into(),
            Pair {
                slot: Arc::new(Slot {
                    key: ArcSwap::new(key),
                }),
                names: built.names().clone(),
                key_type,
            },
        );
        true
    }

    /// The name index of the pairs, and the warnings to give once the
    /// lock is released.
    fn index(&mut self) -> (Index, Vec<Warning>) {
        // Stems in byte order (the map's), so the first claimant of a
        // name and key type is the one whose stem sorts first.
        let mut exact: Claims = HashMap::new();
        let mut wildcard: Claims = HashMap::new();
        let mut warnings = Vec::new();
        for (stem, pair) in &self.by_stem {
            for name in pair.names.iter() {
                let (table, key) = match name.strip_prefix("*.") {
                    Some(parent) if !parent.contains('*') && !parent.is_empty() => {
                        (&mut wildcard, parent)
                    }
                    _ if name.contains('*') => {
                        warnings.push(Warning::BadWildcard {
                            stem: stem.clone(),
                            name: name.as_str().into(),
                        });
                        continue;
                    }
                    _ => (&mut exact, name.as_str()),
                };
                table.entry(key.into()).or_default().push((
                    pair.key_type,
                    stem.clone(),
                    pair.slot.clone(),
                ));
            }
        }
        let mut conflicts = HashSet::new();
        let mut finish = |table: Claims, prefix: &str| {
            table
                .into_iter()
                .map(|(name, mut claims)| {
                    // Stable: among one key type, stem order stays.
                    claims.sort_by_key(|(key_type, _, _)| *key_type);
                    let mut candidates: Vec<Arc<Slot>> = Vec::with_capacity(1);
                    let mut kept: Option<(KeyType, Arc<str>)> = None;
                    for (key_type, stem, slot) in claims {
                        match &kept {
                            Some((kept_type, kept_stem)) if *kept_type == key_type => {
                                let conflict: Arc<str> = format!("{prefix}{name}").into();
                                if !self.conflicts.contains(&(conflict.clone(), key_type)) {
                                    warnings.push(Warning::Claimed {
                                        name: conflict.clone(),
                                        served_by: kept_stem.clone(),
                                        ignored: stem,
                                    });
                                }
                                conflicts.insert((conflict, key_type));
                            }
                            _ => {
                                candidates.push(slot);
                                kept = Some((key_type, stem));
                            }
                        }
                    }
                    (name, candidates.into_boxed_slice())
                })
                .collect::<HashMap<_, _>>()
        };
        let index = Index {
            exact: finish(exact, ""),
            wildcard: finish(wildcard, "*."),
        };
        self.conflicts = conflicts;
        (index, warnings)
    }
}

/// Each name with the pairs that claim it: key type, stem, slot.
type Claims = HashMap<Arc<str>, Vec<(KeyType, Arc<str>, Arc<Slot>)>>;

/// A warning found while the lock was held, given once it is released.
enum Warning {
    Claimed {
        name: Arc<str>,
        served_by: Arc<str>,
        ignored: Arc<str>,
    },
    BadWildcard {
        stem: Arc<str>,
        name: Arc<str>,
    },
}

impl Warning {
    fn log(self) {
        match self {
            Self::Claimed {
                name,
                served_by,
                ignored,
            } => tracing::warn!(
                %name,
                pair = %served_by,
                ignored_pair = %ignored,
                "two pairs of one key type claim a name: the pair whose stem sorts first serves it"
            ),
            Self::BadWildcard { stem, name } => tracing::warn!(
                pair = %stem,
                %name,
                "a wildcard name other than `*.` and a domain is not served"
            ),
        }
    }
}

/// The first candidate whose key type the client offers, else the first.
fn choose(candidates: &[Arc<Slot>], schemes: &[SignatureScheme]) -> Arc<CertifiedKey> {
    // An index entry has at least one candidate.
    let first = &candidates[0];
    if candidates.len() > 1 && !schemes.is_empty() {
        for slot in candidates {
            let key = slot.key.load();
            if KeyType::of(&key).offered(schemes) {
                return arc_swap::Guard::into_inner(key);
            }
        }
    }
    first.key.load_full()
}

/// `name` lowercase, without a trailing dot: as given when it already is
/// (rustls hands names over that way), else copied into `buf`. `None` for
/// a name too long to be a DNS name.
fn normalize<'a>(name: &'a str, buf: &'a mut [u8; 256]) -> Option<&'a str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(name);
    }
    let out = buf.get_mut(..name.len())?;
    out.copy_from_slice(name.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

impl Default for SniResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let key = self.resolve_name(client_hello.server_name(), client_hello.signature_schemes());
        if key.is_none() {
            self.count_refusal();
            tracing::debug!(
                server_name = client_hello.server_name().unwrap_or("(none)"),
                "no pair serves the server name and there is no default pair: handshake refused"
            );
        }
        key
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = self.index.load();
        f.debug_struct("SniResolver")
            .field("pairs", &self.len())
            .field("exact_names", &index.exact.len())
            .field("wildcard_names", &index.wildcard.len())
            .field("default", &self.has_default())
            .field("refused", &self.refused())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases_and_drops_a_trailing_dot_only_when_needed() {
        let mut buf = [0u8; 256];
        assert_eq!(normalize("a.example.com", &mut buf), Some("a.example.com"));
        let mut buf = [0u8; 256];
        assert_eq!(normalize("A.Example.COM.", &mut buf), Some("a.example.com"));
        let mut buf = [0u8; 256];
        assert_eq!(normalize("a.example.com.", &mut buf), Some("a.example.com"));
        let long = "A".repeat(300);
        let mut buf = [0u8; 256];
        assert_eq!(normalize(&long, &mut buf), None);
    }

    #[test]
    fn key_types_match_the_schemes_that_verify_them() {
        use SignatureScheme as S;
        assert!(KeyType::Ecdsa.offered(&[S::RSA_PSS_SHA256, S::ECDSA_NISTP256_SHA256]));
        assert!(!KeyType::Ecdsa.offered(&[S::RSA_PSS_SHA256, S::RSA_PKCS1_SHA256]));
        assert!(KeyType::Rsa.offered(&[S::RSA_PKCS1_SHA256]));
        assert!(!KeyType::Rsa.offered(&[S::ED25519]));
        assert!(KeyType::Ed25519.offered(&[S::ED25519]));
        assert!(KeyType::Ecdsa < KeyType::Rsa);
    }
}
