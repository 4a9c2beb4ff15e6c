//! The workers' listening sockets: one per worker, all bound to the same
//! address with `SO_REUSEPORT`, so that the kernel spreads new connections
//! over the workers and each is accepted, handshaken and copied on the
//! thread whose socket took it.
//!
//! `SO_REUSEPORT` hashes a connection's addresses and ports to pick the
//! socket: the spread is even over many connections, uneven over a few
//! (two connections land on the same worker half the time with two
//! workers). Linux lets only sockets of the same user join the group.

use std::io;
use std::net::{SocketAddr, TcpListener};

use rustix::net::{self, sockopt, AddressFamily, SocketFlags, SocketType};

/// How many connections may wait in each socket's accept queue; the kernel
/// caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 1024;

/// `count` listening sockets on `addr` sharing its port; with port 0 the
/// first picks a free port and the others join it. One socket is bound as
/// `TcpListener::bind` would bind it.
pub(crate) fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    if count <= 1 {
        return Ok(vec![TcpListener::bind(addr)?]);
    }
    let first = reuseport(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(reuseport(addr)?);
    }
    Ok(listeners)
}

/// `count` handles on one listening socket passed in (socket activation):
/// the workers share its accept queue, each woken when it has a connection
/// and one of them taking it.
pub(crate) fn share(listener: TcpListener, count: usize) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    for _ in 1..count {
        listeners.push(listener.try_clone()?);
    }
    listeners.push(listener);
    Ok(listeners)
}

/// A listening socket on `addr` with `SO_REUSEADDR` (as std sets it) and
/// `SO_REUSEPORT`.
fn reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let socket = net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    sockopt::set_socket_reuseport(&socket, true)?;
    net::bind(&socket, &addr)?;
    net::listen(&socket, BACKLOG)?;
    Ok(TcpListener::from(socket))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn the_sockets_share_one_port_and_each_takes_connections() {
        let listeners = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        for listener in &listeners {
            assert_eq!(listener.local_addr().unwrap(), addr);
            listener.set_nonblocking(true).unwrap();
        }
        // Connections from many source ports reach every socket (each
        // misses all 64 with a chance of (2/3)^64).
        let clients: Vec<_> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut accepted = vec![0; listeners.len()];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while accepted.iter().sum::<usize>() < clients.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "accepted {accepted:?}"
            );
            for (listener, count) in listeners.iter().zip(&mut accepted) {
                *count += std::iter::from_fn(|| listener.accept().ok()).count();
            }
        }
        assert!(!accepted.contains(&0), "a socket took none: {accepted:?}");
    }

    #[test]
    fn one_socket_is_a_plain_listener() {
        let listeners = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        // Without SO_REUSEPORT a second socket cannot take the port.
        assert!(reuseport(addr).is_err());
    }
}
