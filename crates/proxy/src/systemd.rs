//! systemd: readiness notifications (`sd_notify`, when `NOTIFY_SOCKET` is
//! set) and socket activation (`LISTEN_FDS`).
//!
//! A notification is one datagram of `KEY=VALUE` lines to the socket named
//! by `NOTIFY_SOCKET` (a path, or an abstract name after `@`); that is
//! short enough to write here. Taking over the descriptors of socket
//! activation needs `from_raw_fd`, which is unsafe: the `listenfd` crate
//! does it, checking `LISTEN_PID` and that each descriptor is a TCP socket.

use std::io;
use std::net::TcpListener;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The listening sockets systemd passed, in order.
#[derive(Debug, Default)]
pub(crate) struct Activation {
    /// The first: the TLS listener.
    pub(crate) listen: Option<TcpListener>,
    /// The second: the status page's.
    pub(crate) status: Option<TcpListener>,
}

/// Takes the sockets of socket activation, if any. Call it before any
/// thread starts: it removes `LISTEN_FDS` and `LISTEN_PID` from the
/// environment, so that children do not take them for theirs.
pub(crate) fn activation() -> io::Result<Activation> {
    let mut fds = listenfd::ListenFd::from_env();
    let listen = fds.take_tcp_listener(0)?;
    let status = fds.take_tcp_listener(1)?;
    Ok(Activation { listen, status })
}

/// Where systemd listens for notifications.
#[derive(Debug)]
pub(crate) struct Notify {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notify {
    /// The notification socket named by `NOTIFY_SOCKET`, if it is set.
    pub(crate) fn from_env() -> Option<Self> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let opened = (|| {
            let addr = match name.as_encoded_bytes().strip_prefix(b"@") {
                Some(abstract_name) => {
                    use std::os::linux::net::SocketAddrExt;
                    SocketAddr::from_abstract_name(abstract_name)?
                }
                None => SocketAddr::from_pathname(&name)?,
            };
            Ok::<_, io::Error>(Self {
                socket: UnixDatagram::unbound()?,
                addr,
            })
        })();
        match opened {
            Ok(notify) => Some(notify),
            Err(error) => {
                tracing::warn!(?name, %error, "NOTIFY_SOCKET cannot be used; not notifying systemd");
                None
            }
        }
    }

    /// Ready to serve (at start-up, and after a reload).
    pub(crate) fn ready(&self) {
        self.send("READY=1");
    }

    /// A reload asked for with SIGHUP is starting.
    pub(crate) fn reloading(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let micros = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        // systemd wants the time of the request with RELOADING=1.
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={micros}"));
    }

    /// Stopping after SIGTERM or SIGINT.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, state: &str) {
        if let Err(error) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::warn!(%error, state, "cannot notify systemd");
        }
    }
}
