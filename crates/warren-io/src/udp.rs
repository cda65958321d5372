//! The underlay UDP socket: binding the way OpenVPN does, buffer sizing, batch-shaped I/O.
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use thiserror::Error;
use tracing::{debug, warn};

/// Socket buffer size asked for when the config says nothing (each direction).
pub const DEFAULT_SOCKET_BUFFER: u32 = 4 << 20;

/// Address family choice (`proto udp`, `udp4`, `udp6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpFamily {
    /// `proto udp`: `[::]` accepting IPv4 too (v4-mapped), or IPv4 if `local` is IPv4 or
    /// the host has no IPv6.
    Any,
    /// `proto udp4`.
    V4,
    /// `proto udp6`: an IPv6 socket. Like OpenVPN without `bind-ipv6-only`
    /// (socket.c `socket_bind` sets IPV6_V6ONLY only for that option), an unspecified
    /// `[::]` bind also accepts IPv4 through v4-mapped addresses.
    V6,
}

/// What to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpBind {
    pub family: UdpFamily,
    /// `local ADDR`; `None` is the wildcard address.
    pub local: Option<IpAddr>,
    pub port: u16,
    /// `sndbuf`/`rcvbuf` in bytes: `None` asks for [`DEFAULT_SOCKET_BUFFER`], `Some(0)`
    /// leaves the kernel default (OpenVPN's meaning of 0).
    pub sndbuf: Option<u32>,
    pub rcvbuf: Option<u32>,
}

#[derive(Debug, Error)]
pub enum BindError {
    #[error("local address {local} is not an {family} address (proto {proto})")]
    FamilyMismatch {
        local: IpAddr,
        family: &'static str,
        proto: &'static str,
    },
    #[error("creating a UDP socket: {source}")]
    Create { source: io::Error },
    #[error("binding udp {addr}: address already in use (is another openvpn or warren running?)")]
    InUse { addr: SocketAddr, source: io::Error },
    #[error("binding udp {addr}: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)")]
    Permission { addr: SocketAddr, source: io::Error },
    #[error("binding udp {addr}: address not available on this host (check `local`)")]
    NotAvailable { addr: SocketAddr, source: io::Error },
    #[error("binding udp {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("setting {option} on the UDP socket: {source}")]
    Option {
        option: &'static str,
        source: io::Error,
    },
}

/// Where a received datagram came from and how long it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// The sender, with v4-mapped IPv6 addresses turned into plain IPv4.
    pub addr: SocketAddr,
    /// Bytes written to the buffer.
    pub len: usize,
    /// The datagram was longer than the buffer; the rest was discarded.
    pub truncated: bool,
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            len: 0,
            truncated: false,
        }
    }
}

/// A bound, non-blocking UDP socket.
#[derive(Debug)]
pub struct UdpSocket {
    sock: Socket,
    local: SocketAddr,
    /// An IPv6 socket that also carries IPv4 (as v4-mapped addresses).
    dual_stack: bool,
    is_v6: bool,
    rcvbuf: usize,
    sndbuf: usize,
}

impl UdpSocket {
    pub fn bind(b: &UdpBind) -> Result<UdpSocket, BindError> {
        bind_with(b, &mut |_| Ok(()))
    }

    /// The bound address (with the kernel-chosen port when `port` was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// An IPv6 wildcard socket that also carries IPv4.
    pub fn is_dual_stack(&self) -> bool {
        self.dual_stack
    }

    /// `(SO_RCVBUF, SO_SNDBUF)` as reported by the kernel (which doubles the request).
    pub fn buffer_sizes(&self) -> (usize, usize) {
        (self.rcvbuf, self.sndbuf)
    }

    /// Receives one datagram into `buf`; `WouldBlock` when none is queued.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        // SAFETY: `&mut [u8]` and `&mut [MaybeUninit<u8>]` have the same layout, every
        // initialised byte is a valid MaybeUninit, and recvfrom only writes initialised
        // bytes into it, so the slice stays initialised when we look at it again.
        let ubuf = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        let (n, from) = self.sock.recv_from_with_flags(ubuf, libc::MSG_TRUNC)?;
        let addr = from.as_socket().map(normalize).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
        })?;
        Ok(RecvMeta {
            addr,
            len: n.min(buf.len()),
            truncated: n > buf.len(),
        })
    }

    /// Receives up to `min(bufs.len(), metas.len())` datagrams, stopping early when the
    /// queue is empty. Returns how many were received (0 when none was queued).
    ///
    /// An error after at least one datagram is held back: the datagrams received so far
    /// are returned and the error (if it persists) surfaces on the next call.
    pub fn recv_batch<B: AsMut<[u8]>>(
        &self,
        bufs: &mut [B],
        metas: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let mut n = 0;
        for (buf, meta) in bufs.iter_mut().zip(metas.iter_mut()) {
            match self.recv_from(buf.as_mut()) {
                Ok(m) => {
                    *meta = m;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    /// Sends one datagram. On a dual-stack socket an IPv4 `dst` is sent as v4-mapped IPv6.
    pub fn send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<usize> {
        let target = match (self.is_v6, dst) {
            (true, SocketAddr::V4(v4)) if self.dual_stack => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            (false, SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
                Some(ip4) => SocketAddr::from((ip4, v6.port())),
                None => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
            },
            (true, SocketAddr::V4(_)) => {
                return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
            }
            _ => dst,
        };
        self.sock.send_to(buf, &SockAddr::from(target))
    }
}

/// Where a socket of `family` (with the optional `local` address) binds, and its
/// `IPV6_V6ONLY` setting (`Some(false)`: a dual-stack IPv6 socket). Shared by UDP and TCP.
/// `Err((local, family))`: `local` is not an address of that family.
pub(crate) fn bind_target(
    family: UdpFamily,
    local: Option<IpAddr>,
    port: u16,
) -> Result<(SocketAddr, Option<bool>), (IpAddr, &'static str)> {
    Ok(match (family, local) {
        (UdpFamily::V4, None) => (SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), None),
        (UdpFamily::V4 | UdpFamily::Any, Some(ip @ IpAddr::V4(_))) => {
            (SocketAddr::new(ip, port), None)
        }
        (UdpFamily::V4, Some(ip)) => return Err((ip, "IPv4")),
        (UdpFamily::V6, Some(ip @ IpAddr::V4(_))) => return Err((ip, "IPv6")),
        (UdpFamily::Any | UdpFamily::V6, Some(ip @ IpAddr::V6(_))) => {
            (SocketAddr::new(ip, port), Some(false))
        }
        (UdpFamily::Any | UdpFamily::V6, None) => {
            (SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), Some(false))
        }
    })
}

/// Binds like [`UdpSocket::bind`] (same options, same errors), calling `before_bind` on
/// the socket once its options are set and just before `bind(2)`: the place for
/// `SO_REUSEPORT` and a reuseport program (`reuseport.rs`).
pub(crate) fn bind_with<E: From<BindError>>(
    b: &UdpBind,
    before_bind: &mut dyn FnMut(&Socket) -> Result<(), E>,
) -> Result<UdpSocket, E> {
    let (addr, v6only) = bind_target(b.family, b.local, b.port).map_err(|(local, family)| {
        BindError::FamilyMismatch {
            local,
            family,
            proto: if family == "IPv4" { "udp4" } else { "udp6" },
        }
    })?;
    let sock = match Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)) {
        Ok(s) => s,
        // `proto udp` on a host with IPv6 disabled: fall back to IPv4 like OpenVPN's
        // getaddrinfo(AF_UNSPEC) would.
        Err(e)
            if b.family == UdpFamily::Any
                && b.local.is_none()
                && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            warn!("IPv6 is not available on this host; listening on IPv4 only");
            let v4 = UdpBind {
                family: UdpFamily::V4,
                ..b.clone()
            };
            return bind_with(&v4, before_bind);
        }
        Err(source) => return Err(BindError::Create { source }.into()),
    };
    if let Some(only) = v6only {
        sock.set_only_v6(only).map_err(|source| BindError::Option {
            option: "IPV6_V6ONLY",
            source,
        })?;
    }
    sock.set_nonblocking(true)
        .map_err(|source| BindError::Option {
            option: "O_NONBLOCK",
            source,
        })?;
    let rcv = b.rcvbuf.unwrap_or(DEFAULT_SOCKET_BUFFER);
    let snd = b.sndbuf.unwrap_or(DEFAULT_SOCKET_BUFFER);
    if rcv > 0 {
        set_buffer(&sock, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, rcv).map_err(|source| {
            BindError::Option {
                option: "SO_RCVBUF",
                source,
            }
        })?;
    }
    if snd > 0 {
        set_buffer(&sock, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, snd).map_err(|source| {
            BindError::Option {
                option: "SO_SNDBUF",
                source,
            }
        })?;
    }
    before_bind(&sock)?;
    sock.bind(&SockAddr::from(addr))
        .map_err(|source| match source.raw_os_error() {
            Some(libc::EADDRINUSE) => BindError::InUse { addr, source },
            Some(libc::EACCES) | Some(libc::EPERM) => BindError::Permission { addr, source },
            Some(libc::EADDRNOTAVAIL) => BindError::NotAvailable { addr, source },
            _ => BindError::Bind { addr, source },
        })?;
    let local = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    let rcvbuf = sock.recv_buffer_size().unwrap_or(0);
    let sndbuf = sock.send_buffer_size().unwrap_or(0);
    debug!(
        requested_rcvbuf = rcv,
        requested_sndbuf = snd,
        rcvbuf,
        sndbuf,
        "UDP socket buffers granted by the kernel"
    );
    let is_v6 = local.is_ipv6();
    let dual_stack = is_v6 && v6only == Some(false) && local.ip().is_unspecified();
    Ok(UdpSocket {
        sock,
        local,
        dual_stack,
        is_v6,
        rcvbuf,
        sndbuf,
    })
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// v4-mapped IPv6 (`::ffff:a.b.c.d`) to plain IPv4, so one client has one address.
pub(crate) fn normalize(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Sets a socket buffer size, first with the `*FORCE` option (root may exceed
/// `net.core.[rw]mem_max`, as wireguard-go does), then with the plain one.
fn set_buffer(sock: &Socket, force: libc::c_int, plain: libc::c_int, size: u32) -> io::Result<()> {
    let val = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    if setsockopt_int(sock, libc::SOL_SOCKET, force, val).is_ok() {
        return Ok(());
    }
    setsockopt_int(sock, libc::SOL_SOCKET, plain, val)
}

pub(crate) fn setsockopt_int(
    sock: &impl AsFd,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: the socket descriptor is open for the call (borrowed from `sock`); the option
    // value points at a live c_int of `len` bytes.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_v4_mapped() {
        let m: SocketAddr = "[::ffff:192.0.2.7]:1194".parse().expect("addr");
        assert_eq!(
            normalize(m),
            "192.0.2.7:1194".parse::<SocketAddr>().expect("addr")
        );
        let v6: SocketAddr = "[2001:db8::1]:5".parse().expect("addr");
        assert_eq!(normalize(v6), v6);
    }

    #[test]
    fn family_mismatch_is_an_error() {
        let b = UdpBind {
            family: UdpFamily::V4,
            local: Some("::1".parse().expect("ip")),
            port: 0,
            sndbuf: None,
            rcvbuf: None,
        };
        assert!(matches!(
            UdpSocket::bind(&b),
            Err(BindError::FamilyMismatch { .. })
        ));
        let b = UdpBind {
            family: UdpFamily::V6,
            local: Some("127.0.0.1".parse().expect("ip")),
            port: 0,
            sndbuf: None,
            rcvbuf: None,
        };
        assert!(matches!(
            UdpSocket::bind(&b),
            Err(BindError::FamilyMismatch { .. })
        ));
    }
    // Traffic tests live in tests/netns.rs (inside a namespace of their own).
}
