//! Where the reloader's detector comes from.

use std::fmt;
use std::sync::Arc;

use tls_reload_build::{Materials, Template};
use tls_reload_detect::{Composite, Detector, Strategy};

/// Makes a detector for a set of materials.
pub(crate) type DetectorFactory = dyn Fn(&Materials) -> Box<dyn Detector> + Send + Sync;

/// Where the reloader's detector comes from.
#[derive(Clone)]
pub(crate) enum DetectorSource {
    /// A built-in strategy over the material paths.
    Strategy(Strategy),
    /// One detector, whatever the paths.
    Fixed(Arc<dyn Detector>),
    /// A detector made from the materials, anew when they change.
    Factory(Arc<DetectorFactory>),
}

impl DetectorSource {
    /// The detector for `materials`. Runs a user's factory: never call it
    /// under a lock.
    pub(crate) fn make(&self, materials: &Materials, template: &Template) -> Arc<dyn Detector> {
        match self {
            Self::Strategy(strategy) => Arc::new(Composite::from_paths_with_limit(
                *strategy,
                materials.paths(),
                template.file_size_limit(),
            )),
            Self::Fixed(detector) => detector.clone(),
            Self::Factory(factory) => Arc::from(factory(materials)),
        }
    }
}

impl fmt::Debug for DetectorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Strategy(strategy) => write!(f, "{strategy}"),
            Self::Fixed(detector) => write!(f, "{detector:?}"),
            Self::Factory(_) => f.write_str("<factory>"),
        }
    }
}
