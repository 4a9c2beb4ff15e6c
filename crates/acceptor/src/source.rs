//! Where the reloader's detector comes from.

use std::fmt;
use std::sync::Arc;

use tls_reload_detect::{Composite, Detector, Strategy};

use crate::engine::Kind;

/// Makes a detector for a set of materials.
pub(crate) type DetectorFactory<M> = dyn Fn(&M) -> Box<dyn Detector> + Send + Sync;

/// Where the reloader's detector comes from, for materials of type `M`.
pub(crate) enum DetectorSource<M> {
    /// A built-in strategy over the material paths.
    Strategy(Strategy),
    /// One detector, whatever the paths.
    Fixed(Arc<dyn Detector>),
    /// A detector made from the materials, anew when they change.
    Factory(Arc<DetectorFactory<M>>),
}

impl<M> DetectorSource<M> {
    /// The detector for `materials`. Runs a user's factory: never call it
    /// under a lock.
    pub(crate) fn make<K: Kind<Materials = M>>(
        &self,
        kind: &K,
        materials: &M,
        template: &K::Template,
    ) -> Arc<dyn Detector> {
        match self {
            Self::Strategy(strategy) => Arc::new(Composite::from_paths_with_limit(
                *strategy,
                kind.paths(materials),
                kind.file_size_limit(template),
            )),
            Self::Fixed(detector) => detector.clone(),
            Self::Factory(factory) => Arc::from(factory(materials)),
        }
    }
}

// Derived, it would ask `M: Clone`.
impl<M> Clone for DetectorSource<M> {
    fn clone(&self) -> Self {
        match self {
            Self::Strategy(strategy) => Self::Strategy(*strategy),
            Self::Fixed(detector) => Self::Fixed(detector.clone()),
            Self::Factory(factory) => Self::Factory(factory.clone()),
        }
    }
}

impl<M> fmt::Debug for DetectorSource<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Strategy(strategy) => write!(f, "{strategy}"),
            Self::Fixed(detector) => write!(f, "{detector:?}"),
            Self::Factory(_) => f.write_str("<factory>"),
        }
    }
}
