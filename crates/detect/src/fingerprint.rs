use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

/// An opaque summary of what a [`Detector`](crate::Detector) watches.
///
/// Two fingerprints are equal when the watched state is the same as far as
/// the detector can tell. Cloning is cheap (a digest copy or a reference
/// count), and `Debug` prints only a short prefix of the digest.
///
/// Fingerprints of paths keep one part per file they cover, so
/// [`changed_paths`](Fingerprint::changed_paths) can name what moved. Their
/// digest is computed when first asked for, not when they are made:
/// comparing two of them compares their parts (nothing at all for two
/// clones of one fingerprint, which is what the built-in detectors hand out
/// while nothing moved), so an idle check hashes nothing.
#[derive(Clone)]
pub struct Fingerprint(Repr);

#[derive(Clone)]
enum Repr {
    Leaf([u8; 32]),
    Set(Arc<SetRepr>),
}

struct SetRepr {
    /// Computed from `parts` when first asked for.
    digest: OnceLock<[u8; 32]>,
    parts: Vec<(PathBuf, Fingerprint)>,
}

impl SetRepr {
    fn digest(&self) -> &[u8; 32] {
        self.digest.get_or_init(|| {
            let mut hasher = Sha256::new();
            hasher.update(b"tls-reload-detect set\0");
            for (path, part) in &self.parts {
                let bytes = path.as_os_str().as_encoded_bytes();
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
                hasher.update(part.digest());
            }
            hasher.finalize().into()
        })
    }
}

impl Fingerprint {
    /// A fingerprint from a digest computed elsewhere (for custom detectors).
    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(Repr::Leaf(digest))
    }

    /// A fingerprint of arbitrary bytes: their SHA-256.
    ///
    /// ```
    /// use tls_reload_detect::Fingerprint;
    /// assert_eq!(Fingerprint::of_bytes(b"a"), Fingerprint::of_bytes(b"a"));
    /// assert_ne!(Fingerprint::of_bytes(b"a"), Fingerprint::of_bytes(b"b"));
    /// ```
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self::from_digest(Sha256::digest(bytes).into())
    }

    /// A fingerprint made of one part per path. Its digest covers the paths,
    /// their order and their parts; a part that is itself made of parts is
    /// flattened into this one. Nothing is hashed until
    /// [`digest`](Fingerprint::digest) is asked for.
    pub fn from_parts(parts: impl IntoIterator<Item = (PathBuf, Fingerprint)>) -> Self {
        let mut flat = Vec::new();
        for (path, part) in parts {
            match part.0 {
                Repr::Leaf(_) => flat.push((path, part)),
                Repr::Set(set) => flat.extend(set.parts.iter().cloned()),
            }
        }
        Self(Repr::Set(Arc::new(SetRepr {
            digest: OnceLock::new(),
            parts: flat,
        })))
    }

    /// The 32-byte digest: equal fingerprints have equal digests. For a
    /// fingerprint made of parts, computed on the first call.
    pub fn digest(&self) -> &[u8; 32] {
        match &self.0 {
            Repr::Leaf(digest) => digest,
            Repr::Set(set) => set.digest(),
        }
    }

    /// Whether `self` and `other` are clones of one fingerprint: a pointer
    /// comparison, for a caller that keeps what it handed out last.
    pub(crate) fn is_same(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Set(a), Repr::Set(b)) => Arc::ptr_eq(a, b),
            (Repr::Leaf(a), Repr::Leaf(b)) => a == b,
            _ => false,
        }
    }

    /// The per-path parts, in order; empty for a fingerprint built from a
    /// digest or bytes.
    pub fn parts(&self) -> &[(PathBuf, Fingerprint)] {
        match &self.0 {
            Repr::Leaf(_) => &[],
            Repr::Set(set) => &set.parts,
        }
    }

    /// The paths whose part differs between `previous` and `self`: changed,
    /// added or removed, in the order they appear (current parts first).
    ///
    /// Empty when the fingerprints are equal, or when neither has parts.
    pub fn changed_paths(&self, previous: &Fingerprint) -> Vec<PathBuf> {
        if self == previous {
            return Vec::new();
        }
        let before: HashMap<&Path, &Fingerprint> = previous
            .parts()
            .iter()
            .map(|(path, part)| (path.as_path(), part))
            .collect();
        let mut seen = HashMap::with_capacity(self.parts().len());
        let mut changed = Vec::new();
        for (path, part) in self.parts() {
            seen.insert(path.as_path(), ());
            if before.get(path.as_path()) != Some(&part) {
                changed.push(path.clone());
            }
        }
        for (path, _) in previous.parts() {
            if !seen.contains_key(path.as_path()) {
                changed.push(path.clone());
            }
        }
        changed
    }

    /// Every path this fingerprint has a part for.
    pub fn paths(&self) -> impl Iterator<Item = &Path> + '_ {
        self.parts().iter().map(|(path, _)| path.as_path())
    }
}

impl PartialEq for Fingerprint {
    /// Clones of one fingerprint are equal at once; two sets compare their
    /// parts (paths and leaf digests), with no hashing; a set and a leaf
    /// compare digests.
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Leaf(a), Repr::Leaf(b)) => a == b,
            (Repr::Set(a), Repr::Set(b)) => {
                Arc::ptr_eq(a, b)
                    || match (a.digest.get(), b.digest.get()) {
                        (Some(a), Some(b)) => a == b,
                        // Paths by their bytes, as the digest covers them.
                        _ => {
                            a.parts.len() == b.parts.len()
                                && a.parts.iter().zip(&b.parts).all(|((pa, fa), (pb, fb))| {
                                    pa.as_os_str() == pb.as_os_str() && fa == fb
                                })
                        }
                    }
            }
            _ => self.digest() == other.digest(),
        }
    }
}

impl Eq for Fingerprint {}

impl Hash for Fingerprint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.digest().hash(state);
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(")?;
        for byte in &self.digest()[..6] {
            write!(f, "{byte:02x}")?;
        }
        if !self.parts().is_empty() {
            write!(f, ", {} paths", self.parts().len())?;
        }
        write!(f, ")")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.digest() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A fingerprint that differs from the committed one.
///
/// Returned by [`Watcher::check`](crate::Watcher::check) and yielded by
/// [`Watch`](crate::Watch). Act on it, then
/// [`commit`](crate::Watcher::commit) its fingerprint.
#[derive(Clone, Debug)]
pub struct Change {
    fingerprint: Fingerprint,
    previous: Option<Fingerprint>,
    paths: Vec<PathBuf>,
    news: bool,
}

impl Change {
    pub(crate) fn new(fingerprint: Fingerprint, previous: Option<Fingerprint>, news: bool) -> Self {
        let paths = match &previous {
            Some(previous) => fingerprint.changed_paths(previous),
            None => fingerprint.paths().map(Path::to_path_buf).collect(),
        };
        Self {
            fingerprint,
            previous,
            paths,
            news,
        }
    }

    /// Whether this change differs from the last one
    /// [`Watcher::observe`](crate::Watcher::observe) returned: false for the
    /// same uncommitted files seen again (a retry after a failure), so a
    /// caller reports a change once.
    pub fn is_news(&self) -> bool {
        self.news
    }

    /// The new fingerprint: commit this once the change has been acted on.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The committed fingerprint this change is relative to, if any.
    pub fn previous(&self) -> Option<&Fingerprint> {
        self.previous.as_ref()
    }

    /// The paths that changed, appeared or disappeared. When nothing was
    /// committed before, every path the fingerprint covers.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Takes the new fingerprint out of the change.
    pub fn into_fingerprint(self) -> Fingerprint {
        self.fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(parts: &[(&str, &[u8])]) -> Fingerprint {
        Fingerprint::from_parts(
            parts
                .iter()
                .map(|(p, b)| (PathBuf::from(p), Fingerprint::of_bytes(b))),
        )
    }

    #[test]
    fn changed_paths_names_changed_added_and_removed() {
        let before = set(&[("a", b"1"), ("b", b"1"), ("c", b"1")]);
        let after = set(&[("a", b"1"), ("b", b"2"), ("d", b"1")]);
        assert_eq!(
            after.changed_paths(&before),
            vec![PathBuf::from("b"), PathBuf::from("d"), PathBuf::from("c")]
        );
        assert!(after.changed_paths(&after.clone()).is_empty());
    }

    #[test]
    fn nested_sets_are_flattened() {
        let inner = set(&[("dir/x", b"1"), ("dir/y", b"2")]);
        let outer = Fingerprint::from_parts([
            (PathBuf::from("cert"), Fingerprint::of_bytes(b"c")),
            (PathBuf::from("dir"), inner),
        ]);
        let paths: Vec<_> = outer.paths().collect();
        assert_eq!(
            paths,
            [Path::new("cert"), Path::new("dir/x"), Path::new("dir/y")]
        );
    }

    #[test]
    fn sets_compare_by_their_parts_as_their_digests_do() {
        let a = set(&[("dir/a", b"1"), ("dir/b", b"2")]);
        let same = set(&[("dir/a", b"1"), ("dir/b", b"2")]);
        assert!(a.is_same(&a.clone()));
        assert!(!a.is_same(&same));
        assert_eq!(a, same, "compared by parts, no digest yet");
        assert_eq!(a.digest(), same.digest());
        // The digest covers the paths' bytes, and so does equality.
        let spelled = set(&[("dir//a", b"1"), ("dir/b", b"2")]);
        assert_ne!(a, spelled);
        assert_ne!(a.digest(), spelled.digest());
        assert_ne!(a, set(&[("dir/b", b"2"), ("dir/a", b"1")]), "order counts");
        // Once digests are known, they decide.
        let _ = (a.digest(), same.digest());
        assert_eq!(a, same);
    }

    #[test]
    fn debug_is_short() {
        let text = format!("{:?}", set(&[("a", b"1")]));
        assert!(text.len() < 40, "{text}");
        assert!(text.starts_with("Fingerprint("), "{text}");
    }
}
