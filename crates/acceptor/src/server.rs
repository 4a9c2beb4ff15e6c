//! The acceptor's end of the engine: what it builds (a `ServerConfig`), and
//! the state behind every acceptor handle.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use tls_reload_build::{BuildError, Built, LeafInfo, Materials, Resumption, Template};

use crate::deadline::Deadlines;
use crate::engine::reloader::{Lifeline, Options};
use crate::engine::{Driven, Engine, Happening, Kind, Start};
use crate::{CertKind, ReloadEvent, Status};

/// The acceptor's kind: a server config from a certificate, a key and the
/// client CAs ([`tls_reload_build::build_blocking`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ServerKind;

impl Kind for ServerKind {
    type Materials = Materials;
    type Template = Template;
    type Built = Built;
    type Served = ServerConfig;
    type Event = ReloadEvent;

    fn build(
        &self,
        materials: &Materials,
        template: &Template,
        previous: Option<&Built>,
    ) -> Result<Built, BuildError> {
        tls_reload_build::build_blocking(materials, template, previous)
    }

    fn served(&self, built: &Built) -> Arc<ServerConfig> {
        built.config().clone()
    }

    fn paths(&self, materials: &Materials) -> Vec<PathBuf> {
        materials.paths()
    }

    fn file_size_limit(&self, template: &Template) -> u64 {
        template.file_size_limit()
    }

    fn leaf<'a>(&self, built: &'a Built) -> Option<&'a LeafInfo> {
        Some(built.leaf())
    }

    fn resumption(&self, built: &Built) -> Resumption {
        built.resumption()
    }

    fn expiring(&self, built: &Built) -> Vec<(CertKind, LeafInfo)> {
        std::iter::once((CertKind::Leaf, built.leaf().clone()))
            .chain(
                built
                    .client_cas()
                    .iter()
                    .map(|ca| (CertKind::ClientCa, ca.certificate())),
            )
            .collect()
    }

    fn event(&self, happening: Happening<'_, Built>) -> ReloadEvent {
        match happening {
            Happening::Detected { paths } => ReloadEvent::Detected { paths },
            Happening::Built { built } => ReloadEvent::Built {
                leaf: built.leaf().clone(),
                resumption: built.resumption(),
            },
            Happening::Applied {
                generation,
                built,
                manual,
            } => ReloadEvent::Applied {
                generation,
                leaf: built.leaf().clone(),
                manual,
            },
            Happening::Failed { error } => ReloadEvent::Failed { error },
            Happening::Skipped { reason } => ReloadEvent::Skipped { reason },
            Happening::ExpiresSoon { kind, certificate } => {
                ReloadEvent::ExpiresSoon { kind, certificate }
            }
            Happening::Expired { kind, certificate } => ReloadEvent::Expired { kind, certificate },
        }
    }
}

/// The state behind every acceptor handle: the engine, the handshake
/// deadlines, and what ends the reloader.
pub(crate) struct Shared {
    pub(crate) engine: Engine<ServerKind>,
    /// Handshake deadlines, when handshakes have a timeout.
    pub(crate) deadlines: Option<Deadlines>,
    /// How the reloader waits.
    pub(crate) options: Options,
    /// Ends the reloader when the last handle is dropped.
    pub(crate) lifeline: Lifeline,
}

impl Shared {
    /// Builds the first config, failing fast.
    pub(crate) async fn start(
        start: Start<ServerKind>,
        options: Options,
        deadlines: Option<Deadlines>,
    ) -> Result<Arc<Self>, BuildError> {
        let engine = Engine::start(start).await?;
        Ok(Self::new(engine, options, deadlines))
    }

    /// Builds the first config on the current thread, failing fast.
    pub(crate) fn start_blocking(
        start: Start<ServerKind>,
        options: Options,
        deadlines: Option<Deadlines>,
    ) -> Result<Arc<Self>, BuildError> {
        let engine = Engine::start_blocking(start)?;
        Ok(Self::new(engine, options, deadlines))
    }

    fn new(
        engine: Engine<ServerKind>,
        options: Options,
        deadlines: Option<Deadlines>,
    ) -> Arc<Self> {
        Arc::new(Self {
            engine,
            deadlines,
            options,
            lifeline: Lifeline::new(),
        })
    }

    /// What the reloader drives: the engine.
    pub(crate) fn driven(&self) -> &dyn Driven {
        &self.engine
    }

    /// The config for a new handshake: one atomic load, no lock.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.engine.load()
    }

    pub(crate) fn status(&self) -> Status {
        let snapshot = self.engine.snapshot();
        let current = &snapshot.current;
        Status {
            generation: snapshot.generation,
            applied_at: snapshot.applied_at,
            last_reload_at: snapshot.last_reload_at,
            reloads_applied: snapshot.reloads_applied,
            reloads_failed: snapshot.reloads_failed,
            last_error_at: snapshot.last_error.as_ref().map(|(_, at)| *at),
            last_error: snapshot.last_error.map(|(message, _)| message),
            leaf: current.leaf().clone(),
            materials: snapshot.materials,
            files: current.files().to_vec(),
            detection: snapshot.detection,
            client_cas: current.client_cas().to_vec(),
            crls: current.crls().to_vec(),
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Copied out first: a user detector's `Debug` never runs under the lock.
        let snapshot = self.engine.snapshot();
        f.debug_struct("ReloadingAcceptor")
            .field("materials", &snapshot.materials)
            .field("detector", &snapshot.source)
            .field("generation", &snapshot.generation)
            .field("serial", &snapshot.current.leaf().serial_hex())
            .field("interval", &self.options.interval)
            .finish_non_exhaustive()
    }
}
