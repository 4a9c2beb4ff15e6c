//! The acceptor's end of the engine: what it builds (a `ServerConfig`), and
//! the state behind every acceptor handle.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tls_reload_detect::Detection;

use rustls::ServerConfig;
use tls_reload_build::{BuildError, Built, LeafInfo, Materials, Resumption, Template};

use crate::deadline::Deadlines;
use crate::engine::reloader::{Lifeline, Options};
use crate::engine::{Driven, Engine, Happening, Kind, Start};
use crate::named::{Named, NamedStart};
use crate::{CertKind, ReloadEvent, SniResolver, Status};

/// The acceptor's kind: a server config from a certificate, a key and the
/// client CAs ([`tls_reload_build::build_blocking`]). With named pairs,
/// the config resolves through their SNI table, the built key as its
/// default.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServerKind {
    pub(crate) sni: Option<Arc<SniResolver>>,
}

impl Kind for ServerKind {
    type Materials = Materials;
    type Template = Template;
    type Built = Built;
    type Served = Serving;
    type Event = ReloadEvent;

    fn build(
        &self,
        materials: &Materials,
        template: &Template,
        previous: Option<&Built>,
    ) -> Result<Built, BuildError> {
        tls_reload_build::build_blocking(materials, template, previous)
    }

    fn served(&self, built: &Built) -> Arc<Serving> {
        let Some(sni) = &self.sni else {
            return Arc::new(Serving::new(built.config().clone()));
        };
        // Called where the engine applies a build: the default follows it.
        // The copy shares the build's session storage and ticketer.
        sni.set_default(built.certified_key().cloned());
        let mut config = ServerConfig::clone(built.config());
        config.cert_resolver = sni.clone();
        Arc::new(Serving::new(Arc::new(config)))
    }

    fn paths(&self, materials: &Materials) -> Vec<PathBuf> {
        materials.paths()
    }

    fn file_size_limit(&self, template: &Template) -> u64 {
        template.file_size_limit()
    }

    fn leaf<'a>(&self, built: &'a Built) -> Option<&'a LeafInfo> {
        Some(built.leaf()).filter(|leaf| !leaf.is_placeholder())
    }

    fn resumption(&self, built: &Built) -> Resumption {
        built.resumption()
    }

    fn expiring(&self, built: &Built) -> Vec<(CertKind, LeafInfo)> {
        let leaf = Some(built.leaf()).filter(|leaf| !leaf.is_placeholder());
        leaf.map(|leaf| (CertKind::Leaf, leaf.clone()))
            .into_iter()
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

/// What new handshakes start from: the config, and futures-rustls's
/// acceptor over it, so that starting a handshake clones the config's `Arc`
/// once, as futures-rustls alone does (not once more to make the acceptor).
pub(crate) struct Serving {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) acceptor: futures_rustls::TlsAcceptor,
}

impl Serving {
    fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            acceptor: futures_rustls::TlsAcceptor::from(config.clone()),
            config,
        }
    }
}

/// The state behind every acceptor handle: the engine, the handshake
/// deadlines, and what ends the reloader.
pub(crate) struct Shared {
    pub(crate) engine: Engine<ServerKind>,
    /// The named pairs (SNI), if any.
    pub(crate) named: Option<Arc<Named>>,
    /// The SNI table, when there is no default pair: the accept path then
    /// reads the ClientHello first and refuses unknown names itself.
    refuse_unknown: Option<Arc<SniResolver>>,
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
        named: Option<NamedStart>,
        options: Options,
        deadlines: Option<Deadlines>,
    ) -> Result<Arc<Self>, BuildError> {
        let engine = Engine::start(start).await?;
        let named = match named {
            Some(named) => Some(Arc::new(
                blocking::unblock(move || Named::load_blocking(named)).await?,
            )),
            None => None,
        };
        Ok(Self::new(engine, named, options, deadlines))
    }

    /// Builds the first config on the current thread, failing fast.
    pub(crate) fn start_blocking(
        start: Start<ServerKind>,
        named: Option<NamedStart>,
        options: Options,
        deadlines: Option<Deadlines>,
    ) -> Result<Arc<Self>, BuildError> {
        let engine = Engine::start_blocking(start)?;
        let named = named.map(Named::load_blocking).transpose()?.map(Arc::new);
        Ok(Self::new(engine, named, options, deadlines))
    }

    fn new(
        engine: Engine<ServerKind>,
        named: Option<Arc<Named>>,
        options: Options,
        deadlines: Option<Deadlines>,
    ) -> Arc<Self> {
        let refuse_unknown = match &named {
            Some(named) if !engine.snapshot().materials.has_identity() => {
                Some(named.table().clone())
            }
            _ => None,
        };
        Arc::new(Self {
            engine,
            named,
            refuse_unknown,
            deadlines,
            options,
            lifeline: Lifeline::new(),
        })
    }

    /// What the reloader drives: the engine, then the named pairs.
    pub(crate) fn driven(&self) -> &dyn Driven {
        self
    }

    /// The SNI table when unknown names are refused (no default pair).
    pub(crate) fn refuses_unknown_names(&self) -> Option<&Arc<SniResolver>> {
        self.refuse_unknown.as_ref()
    }

    /// The config for a new handshake: one atomic load, no lock.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.engine.serving().config.clone()
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
            pairs: self
                .named
                .as_ref()
                .map(|named| named.status())
                .unwrap_or_default(),
            unrecognized_names: self
                .named
                .as_ref()
                .map_or(0, |named| named.table().refused()),
        }
    }
}

impl Driven for Shared {
    fn tick(&self) -> BoxFuture<'_, bool> {
        async move {
            let quiet = Driven::tick(&self.engine).await;
            match &self.named {
                Some(named) => named.tick().await && quiet,
                None => quiet,
            }
        }
        .boxed()
    }

    fn check_expiry(&self) {
        self.engine.check_expiry();
        if let Some(named) = &self.named {
            named.check_expiry();
        }
    }

    fn hint(&self, changed: Option<&[PathBuf]>) {
        if let Some(named) = &self.named {
            named.hint(changed);
        }
    }

    fn watched_paths(&self) -> Vec<PathBuf> {
        let mut paths = self.engine.watched_paths();
        if let Some(named) = &self.named {
            paths.extend(named.watched_paths());
        }
        paths
    }

    fn set_detection(&self, detection: &Detection) {
        self.engine.set_detection(detection);
        if let Some(named) = &self.named {
            named.set_detection(detection);
        }
    }

    fn reloader_flag(&self) -> &AtomicBool {
        Driven::reloader_flag(&self.engine)
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
