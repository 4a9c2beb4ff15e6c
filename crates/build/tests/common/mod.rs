//! The build tests' own helpers, on top of `tls-reload-testkit`: a temp
//! dir with a valid pair, and a rustls handshake over memory.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::ClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::ServerConnection;
use rustls::{ClientConfig, Connection, HandshakeKind, ServerConfig};
use tls_reload_build::Template;
use tls_reload_testkit::{leaf_params, new_key, provider, resuming_client_config, write_leaf, Ca};

/// The template of these tests: the *ring* provider.
pub fn template() -> Template {
    Template::new(provider())
}

/// A temp dir holding a valid pair `tls.crt` / `tls.key` issued by `ca`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("server root");
        let (cert, key) = write_leaf(dir.path(), "tls", &ca.localhost_leaf());
        Self { dir, ca, cert, key }
    }

    /// Writes a pair `name.crt` / `name.key` valid between the two dates.
    pub fn write_leaf_valid(
        &self,
        name: &str,
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> (PathBuf, PathBuf) {
        let mut params = leaf_params();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let leaf = self.ca.sign(params, new_key());
        write_leaf(self.dir.path(), name, &leaf)
    }

    /// Whether a client trusting `ca`, with a certificate from `client_ca`
    /// (or none), completes a handshake with `config`.
    pub fn admits(&self, config: &Arc<ServerConfig>, client_ca: Option<&Ca>) -> bool {
        let leaf = client_ca.map(Ca::localhost_leaf);
        handshake(config, &resuming_client_config(&self.ca, leaf.as_ref())).is_ok()
    }
}

/// Runs a full TLS handshake between a client and a server over memory, and
/// returns whether the client did a full or a resumed handshake.
pub fn handshake(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> Result<HandshakeKind, rustls::Error> {
    let name = ServerName::try_from("localhost").expect("name");
    let mut client = Connection::from(ClientConnection::new(client.clone(), name)?);
    let mut server = Connection::from(ServerConnection::new(server.clone())?);
    // Shuttle until neither side has anything left to say (tickets come after the handshake).
    while transfer(&mut client, &mut server)? | transfer(&mut server, &mut client)? {}
    if client.is_handshaking() || server.is_handshaking() {
        return Err(rustls::Error::General("handshake stalled".into()));
    }
    client
        .handshake_kind()
        .ok_or_else(|| rustls::Error::General("no handshake kind".into()))
}

/// Asserts the kinds of successive handshakes of one client.
pub fn assert_handshakes(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    expected: &[HandshakeKind],
) {
    for (i, kind) in expected.iter().enumerate() {
        assert_eq!(
            handshake(server, client).expect("handshake"),
            *kind,
            "handshake {i}"
        );
    }
}

fn transfer(from: &mut Connection, to: &mut Connection) -> Result<bool, rustls::Error> {
    let io = |e: std::io::Error| rustls::Error::General(e.to_string());
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).map_err(io)?;
    }
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).map_err(io)?;
        to.process_new_packets()?;
    }
    Ok(!bytes.is_empty())
}
