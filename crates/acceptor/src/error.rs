use std::mem::{discriminant, Discriminant};
use std::path::PathBuf;
use std::sync::Arc;

use tls_reload_build::BuildError;
use tls_reload_detect::DetectError;

/// Why a reload did not apply. The last good config keeps serving.
///
/// Cheap to clone (the causes are shared), so the same error can go to the
/// caller of [`reload_now`](crate::ReloadingAcceptor::reload_now) and to
/// every [`events`](crate::ReloadingAcceptor::events) subscriber.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The materials could not be built into a config (a file is missing,
    /// malformed, expired, or the key does not match the certificate).
    #[error(transparent)]
    Build(Arc<BuildError>),
    /// The watched files could not be fingerprinted (a path went missing or
    /// became unreadable).
    #[error(transparent)]
    Detect(Arc<DetectError>),
    /// A newer manual reload or reconfiguration started while this one was
    /// building, so this result was dropped rather than applied after it.
    #[error("superseded by a newer reload")]
    Superseded,
}

impl From<BuildError> for ReloadError {
    fn from(error: BuildError) -> Self {
        Self::Build(Arc::new(error))
    }
}

impl From<DetectError> for ReloadError {
    fn from(error: DetectError) -> Self {
        Self::Detect(Arc::new(error))
    }
}

/// What makes two failures the same for reporting: the kind of error and
/// the file it names. Not the whole message, which may carry the time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    Build(Discriminant<BuildError>, Option<PathBuf>),
    Detect(Discriminant<DetectError>, Option<PathBuf>),
    Superseded,
}

impl ReloadError {
    pub(crate) fn cause(&self) -> Cause {
        match self {
            Self::Build(error) => {
                Cause::Build(discriminant(&**error), error.path().map(Into::into))
            }
            Self::Detect(error) => {
                Cause::Detect(discriminant(&**error), error.path().map(Into::into))
            }
            Self::Superseded => Cause::Superseded,
        }
    }
}
