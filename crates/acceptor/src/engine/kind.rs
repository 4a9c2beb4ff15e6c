//! What an engine builds: the one thing that differs between its users.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tls_reload_build::{BuildError, LeafInfo, Resumption};

use crate::{CertKind, ReloadError, SkipReason};

/// What an [`Engine`](super::Engine) builds, how, and what it tells about it.
///
/// The engine (tickets, floors, settling, failure reporting, status
/// counters, expiry checks) is the same for every kind; a kind supplies
/// the materials and template types, the build, what the hot path loads
/// out of a build, the paths to watch, and the events. A kind is a value,
/// cheap to clone (it goes to the blocking pool with every build), so an
/// instance may carry what tells it apart (a named pair's name, say).
///
/// Kinds: the acceptor's server config ([`ServerKind`](crate::server::ServerKind)),
/// the connector's client config ([`ClientKind`](crate::connector::ClientKind)),
/// a named pair's certified key ([`PairKind`](crate::named::PairKind)).
pub(crate) trait Kind: Clone + Send + Sync + 'static {
    /// Where the materials live: paths, read at every build.
    type Materials: Clone + fmt::Debug + Send + Sync + 'static;
    /// Everything but the files (provider, versions, checks).
    type Template: Clone + Send + Sync + 'static;
    /// One build, with what status and events say of it.
    type Built: Send + Sync + 'static;
    /// What the hot path loads out of a build: one `ArcSwap` load per use.
    type Served: Send + Sync + 'static;
    /// What [`subscribers`](super::Subscribers) receive.
    type Event: Clone + Send + 'static;

    /// Reads and checks the materials. Blocking: the engine runs it on the
    /// blocking pool (on the caller's thread for a blocking start-up).
    /// `previous` is the build being served, for resumption continuity.
    fn build(
        &self,
        materials: &Self::Materials,
        template: &Self::Template,
        previous: Option<&Self::Built>,
    ) -> Result<Self::Built, BuildError>;

    /// What new handshakes use from now on.
    fn served(&self, built: &Self::Built) -> Arc<Self::Served>;

    /// Every path a build of `materials` reads, for the built-in detectors.
    fn paths(&self, materials: &Self::Materials) -> Vec<PathBuf>;

    /// The most bytes a build reads of one file: a detector reads no more.
    fn file_size_limit(&self, template: &Self::Template) -> u64;

    /// The certificate a build presents, for the logs; `None` for a client
    /// without an identity.
    fn leaf<'a>(&self, built: &'a Self::Built) -> Option<&'a LeafInfo>;

    /// Whether sessions from before the build resume on it.
    fn resumption(&self, built: &Self::Built) -> Resumption;

    /// The certificates whose expiry is watched while `built` is served.
    fn expiring(&self, built: &Self::Built) -> Vec<(CertKind, LeafInfo)>;

    /// The event that tells subscribers of `happening`.
    fn event(&self, happening: Happening<'_, Self::Built>) -> Self::Event;
}

/// What an engine tells its subscribers, before a [`Kind`] words it.
#[derive(Debug)]
pub(crate) enum Happening<'a, B> {
    /// The watched files differ from the ones served.
    Detected { paths: Vec<PathBuf> },
    /// A build is done and about to land.
    Built { built: &'a B },
    /// A build is served from now on.
    Applied {
        generation: u64,
        built: &'a B,
        manual: bool,
    },
    /// A reload failed; the last good build stays.
    Failed { error: ReloadError },
    /// A check did not lead to a build, or a build did not land.
    Skipped { reason: SkipReason },
    /// A served certificate entered its warning window.
    ExpiresSoon {
        kind: CertKind,
        certificate: LeafInfo,
    },
    /// A served certificate is past its not-after.
    Expired {
        kind: CertKind,
        certificate: LeafInfo,
    },
}
