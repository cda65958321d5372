//! TCP sockets for OpenVPN over TCP (`proto tcp-server` / `tcp-client`): a non-blocking
//! listener that binds the way the UDP socket does, and non-blocking streams with
//! `TCP_NODELAY` (OpenVPN `tcp-nodelay`; warren always sets it: every frame is a whole
//! packet, and Nagle would only add latency to the tunnel's own ACKs).
//!
//! Framing (the u16 length prefix) is not this module's business: it moves bytes.
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use thiserror::Error;
use tracing::warn;

use crate::udp::{UdpFamily, normalize};

/// Pending connections the kernel queues for `accept` (OpenVPN socket.c uses 32).
const LISTEN_BACKLOG: i32 = 128;

/// What to bind a listener to (`proto tcp-server`, `local`, `port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpBind {
    /// `Any`: `[::]` accepting IPv4 too, or IPv4 when `local` is IPv4 or the host has no
    /// IPv6 (as for UDP).
    pub family: UdpFamily,
    pub local: Option<IpAddr>,
    pub port: u16,
}

#[derive(Debug, Error)]
pub enum TcpBindError {
    #[error("local address {local} is not an {family} address")]
    FamilyMismatch { local: IpAddr, family: &'static str },
    #[error("creating a TCP socket: {0}")]
    Create(#[source] io::Error),
    #[error("binding tcp {addr}: address already in use (is another openvpn or warren running?)")]
    InUse { addr: SocketAddr, source: io::Error },
    #[error("binding tcp {addr}: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)")]
    Permission { addr: SocketAddr, source: io::Error },
    #[error("binding tcp {addr}: address not available on this host (check `local`)")]
    NotAvailable { addr: SocketAddr, source: io::Error },
    #[error("binding tcp {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("setting up the TCP listener on {addr}: {source}")]
    Setup { addr: SocketAddr, source: io::Error },
}

/// A listening, non-blocking TCP socket.
#[derive(Debug)]
pub struct TcpListener {
    sock: Socket,
    local: SocketAddr,
}

impl TcpListener {
    pub fn bind(b: &TcpBind) -> Result<TcpListener, TcpBindError> {
        let (addr, v6only) = crate::udp::bind_target(b.family, b.local, b.port)
            .map_err(|(local, family)| TcpBindError::FamilyMismatch { local, family })?;
        let sock = match Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)) {
            Ok(s) => s,
            Err(e)
                if b.family == UdpFamily::Any
                    && b.local.is_none()
                    && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
            {
                warn!("IPv6 is not available on this host; listening on TCP over IPv4 only");
                return TcpListener::bind(&TcpBind {
                    family: UdpFamily::V4,
                    ..b.clone()
                });
            }
            Err(e) => return Err(TcpBindError::Create(e)),
        };
        let setup = |source| TcpBindError::Setup { addr, source };
        if let Some(only) = v6only {
            sock.set_only_v6(only).map_err(setup)?;
        }
        // A restarted server can bind while old connections sit in TIME_WAIT (OpenVPN
        // socket.c sets SO_REUSEADDR on its TCP listener too).
        sock.set_reuse_address(true).map_err(setup)?;
        sock.set_nonblocking(true).map_err(setup)?;
        sock.bind(&SockAddr::from(addr))
            .map_err(|source| match source.raw_os_error() {
                Some(libc::EADDRINUSE) => TcpBindError::InUse { addr, source },
                Some(libc::EACCES) | Some(libc::EPERM) => TcpBindError::Permission { addr, source },
                Some(libc::EADDRNOTAVAIL) => TcpBindError::NotAvailable { addr, source },
                _ => TcpBindError::Bind { addr, source },
            })?;
        sock.listen(LISTEN_BACKLOG).map_err(setup)?;
        let local = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(addr);
        Ok(TcpListener { sock, local })
    }

    /// The bound address (with the kernel-chosen port when `port` was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether an [`TcpListener::accept`] error concerns that one connection only (it was
    /// aborted before it was accepted), so the next may succeed; other errors (EMFILE,
    /// ENFILE, ENOBUFS, ENOMEM) leave the connection pending and the listener readable.
    pub fn is_connection_error(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::Interrupted
            || matches!(
                e.raw_os_error(),
                Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM)
            )
    }

    /// One pending connection, non-blocking and with `TCP_NODELAY`, and its peer address
    /// (v4-mapped IPv6 turned into IPv4); `WouldBlock` when none is pending.
    pub fn accept(&self) -> io::Result<(TcpConn, SocketAddr)> {
        let (sock, addr) = self.sock.accept()?;
        let peer = addr
            .as_socket()
            .map(normalize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP peer"))?;
        let conn = TcpConn::from_socket(sock)?;
        Ok((conn, peer))
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// A connected (or connecting) non-blocking TCP stream.
#[derive(Debug)]
pub struct TcpConn {
    sock: Socket,
}

impl TcpConn {
    fn from_socket(sock: Socket) -> io::Result<TcpConn> {
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        Ok(TcpConn { sock })
    }

    /// Starts connecting to `to` (from `local`, if given) without waiting: the stream
    /// becomes writable when the connection is up or failed; [`TcpConn::take_error`] then
    /// tells which.
    pub fn connect(to: SocketAddr, local: Option<IpAddr>) -> io::Result<TcpConn> {
        let sock = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
        if let Some(ip) = local {
            sock.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
        }
        let conn = TcpConn::from_socket(sock)?;
        match conn.sock.connect(&SockAddr::from(to)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(conn)
    }

    /// The pending socket error (`SO_ERROR`), e.g. a refused connection.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.take_error()
    }

    /// The local address, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.sock.local_addr().ok().and_then(|a| a.as_socket())
    }

    /// Reads what is available; `Ok(0)` is the end of the stream, `WouldBlock` means
    /// nothing is there yet.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.sock).read(buf)
    }

    /// Writes as much of `buf` as the socket takes; `WouldBlock` when it takes nothing.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.sock).write(buf)
    }
}

impl AsFd for TcpConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interest, Poller};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    #[test]
    fn listen_accept_connect_exchange() {
        let l = TcpListener::bind(&TcpBind {
            family: UdpFamily::V4,
            local: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port: 0,
        })
        .expect("bind");
        let c = TcpConn::connect(l.local_addr(), None).expect("connect");
        let mut p = Poller::new();
        let t = p.add(l.as_fd(), Interest::Readable);
        p.wait(Some(Duration::from_secs(5))).expect("poll");
        assert!(p.is_readable(t));
        let (s, peer) = l.accept().expect("accept");
        assert_eq!(Some(peer), c.local_addr());
        let mut p = Poller::new();
        let t = p.add(c.as_fd(), Interest::Writable);
        p.wait(Some(Duration::from_secs(5))).expect("poll");
        assert!(p.is_writable(t));
        assert!(c.take_error().expect("SO_ERROR").is_none());
        assert_eq!(c.write(b"hello").expect("write"), 5);
        let mut p = Poller::new();
        let t = p.add(s.as_fd(), Interest::Readable);
        p.wait(Some(Duration::from_secs(5))).expect("poll");
        assert!(p.is_readable(t));
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).expect("read"), 5);
        assert_eq!(&buf[..5], b"hello");
        let e = s.read(&mut buf).expect_err("nothing more");
        assert!(crate::is_would_block(&e));
        drop(c);
        p.wait(Some(Duration::from_secs(5))).expect("poll");
        assert_eq!(s.read(&mut buf).expect("eof"), 0);
    }

    #[test]
    fn refused_connection_reports_an_error() {
        // Bind, learn a free port, close: nothing listens there any more.
        let l = TcpListener::bind(&TcpBind {
            family: UdpFamily::V4,
            local: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port: 0,
        })
        .expect("bind");
        let addr = l.local_addr();
        drop(l);
        let c = TcpConn::connect(addr, None).expect("connect starts");
        let mut p = Poller::new();
        let t = p.add(c.as_fd(), Interest::Writable);
        p.wait(Some(Duration::from_secs(5))).expect("poll");
        assert!(p.is_writable(t));
        assert!(c.take_error().expect("SO_ERROR").is_some());
    }
}
