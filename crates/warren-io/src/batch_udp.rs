//! The underlay UDP socket in batches: `recvmmsg(2)` with UDP GRO on receive, UDP GSO
//! (`UDP_SEGMENT`) on send, `IP_PKTINFO`/`IPV6_PKTINFO` both ways, through quinn-udp's
//! `UdpSocketState`.
//!
//! The socket is bound by [`UdpSocket::bind`] (OpenVPN's `proto`/`local`/`port`
//! rules, `sndbuf`/`rcvbuf` with sensible defaults) and then handed to [`BatchUdp`], which
//! switches on what quinn-udp switches on, and undoes what a VPN must not have:
//!
//! * quinn-udp sets `IP_MTU_DISCOVER = IP_PMTUDISC_PROBE` (and `IPV6_DONTFRAG`), i.e. DF on
//!   every datagram and `EMSGSIZE` above the interface MTU. OpenVPN leaves the system
//!   default (`mtu-disc` unset), under which an outer datagram larger than the path MTU is
//!   fragmented; a tunnel with `tun-mtu 1500` over a 1500-byte link depends on that for
//!   everything `mssfix` does not clamp. The previous values are put back.
//! * `SO_TIMESTAMPNS` (turned on by quinn-udp) is turned off: nothing here reads it.
//!
//! Receive: one call fills up to 32 buffers ([`UDP_RECV_BATCH`]); with GRO a buffer may hold
//! many datagrams of one sender, back to back, each `stride` bytes but the last
//! ([`BatchMeta::datagrams`]). Give each buffer [`GRO_BUFFER`] bytes so that nothing is cut.
//!
//! Send: [`BatchUdp::send_gso`] sends same-size datagrams (the last may be shorter) to one
//! destination in as few `sendmsg(2)` calls as the kernel allows, falling back to one
//! datagram per call when GSO is unavailable or refused.
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use quinn_udp::{Transmit, UdpSockRef, UdpSocketState};
use thiserror::Error;

use crate::udp::{normalize, setsockopt_int};
use crate::{BindError, UdpBind, UdpSocket};

/// Buffers one receive call fills at most (quinn-udp's recvmmsg batch).
pub const UDP_RECV_BATCH: usize = quinn_udp::BATCH_SIZE;
/// Size of one receive buffer when GRO is on: 64 datagrams (UDP_GRO_CNT_MAX) are at most
/// 64 KiB together (the kernel caps a GRO packet at 64 KiB).
pub const GRO_BUFFER: usize = 65535;

/// Setting up batched I/O on a bound socket.
#[derive(Debug, Error)]
pub enum BatchUdpError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("enabling batched UDP (GRO/GSO/pktinfo) on the socket: {0}")]
    Setup(io::Error),
}

/// Where one receive buffer's datagrams came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// The sender, v4-mapped IPv6 turned into plain IPv4.
    pub addr: SocketAddr,
    /// Bytes in the buffer (all datagrams together).
    pub len: usize,
    /// Length of each datagram but the last (= `len` without GRO).
    pub stride: usize,
    /// The local address the datagrams were sent to (pktinfo), normalised like `addr`:
    /// the source to answer from on a multi-homed host.
    pub dst_ip: Option<IpAddr>,
}

impl Default for BatchMeta {
    fn default() -> Self {
        BatchMeta {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
            stride: 0,
            dst_ip: None,
        }
    }
}

impl BatchMeta {
    /// The datagrams in `buf` (the buffer this meta describes).
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> std::slice::Chunks<'a, u8> {
        let len = self.len.min(buf.len());
        buf[..len].chunks(self.stride.max(1))
    }

    /// The byte ranges of the datagrams, for opening them in place one by one.
    pub fn ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        let (len, stride) = (self.len, self.stride.max(1));
        (0..len)
            .step_by(stride)
            .map(move |s| s..(s + stride).min(len))
    }
}

/// A bound, non-blocking UDP socket with batched receive and segmented send.
#[derive(Debug)]
pub struct BatchUdp {
    sock: UdpSocket,
    state: UdpSocketState,
}

impl BatchUdp {
    /// Binds like [`UdpSocket::bind`] and turns batching on.
    pub fn bind(b: &UdpBind) -> Result<BatchUdp, BatchUdpError> {
        BatchUdp::new(UdpSocket::bind(b)?).map_err(BatchUdpError::Setup)
    }

    /// Turns batching on for an already bound socket.
    pub fn new(sock: UdpSocket) -> io::Result<BatchUdp> {
        let is_v6 = sock.local_addr().is_ipv6();
        // Saved before quinn-udp changes them, restored after (see the module doc).
        let saved = [
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
            (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG),
        ]
        .map(|(level, opt)| {
            if level == libc::IPPROTO_IPV6 && !is_v6 {
                return None;
            }
            getsockopt_int(&sock, level, opt)
                .ok()
                .map(|v| (level, opt, v))
        });
        let state = UdpSocketState::new(UdpSockRef::from(&sock))?;
        for (level, opt, v) in saved.into_iter().flatten() {
            setsockopt_int(&sock, level, opt, v)?;
        }
        // Best effort: only costs a control message per datagram if it stays on.
        let _ = setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0);
        Ok(BatchUdp { sock, state })
    }

    /// The plain socket (address, buffer sizes, single-datagram calls).
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr()
    }

    /// Datagrams one receive buffer may hold (64 with UDP GRO, else 1).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Datagrams one send may carry (64 with UDP GSO, 1 without or after a refusal).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Receives into up to [`UDP_RECV_BATCH`] buffers in one `recvmmsg(2)`; returns how many
    /// were filled (`metas[i]` describes `bufs[i]`). `WouldBlock` when nothing is queued.
    ///
    /// A datagram longer than its buffer is cut (the kernel does not say so through
    /// recvmmsg here); size buffers for the largest datagram ([`GRO_BUFFER`] with GRO).
    pub fn recv_batch(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        metas: &mut [BatchMeta],
    ) -> io::Result<usize> {
        let n = bufs.len().min(metas.len()).min(UDP_RECV_BATCH);
        if n == 0 {
            return Ok(0);
        }
        let mut raw = [quinn_udp::RecvMeta::default(); UDP_RECV_BATCH];
        let got = self
            .state
            .recv(UdpSockRef::from(&self.sock), &mut bufs[..n], &mut raw[..n])?;
        for (m, r) in metas.iter_mut().zip(&raw[..got]) {
            *m = BatchMeta {
                addr: normalize(r.addr),
                len: r.len,
                stride: if r.stride == 0 { r.len } else { r.stride },
                dst_ip: r.dst_ip.map(|ip| ip.to_canonical()),
            };
        }
        Ok(got)
    }

    /// Sends `segments` as datagrams of `segment_size` bytes (the last may be shorter) to
    /// `dst`, from `src_ip` if given (pktinfo; `None` lets the routing table choose).
    /// Returns how many datagrams went out: fewer than all only when the socket buffer
    /// filled up on the way (send the rest when writable). `WouldBlock` if none did.
    ///
    /// # Panics
    /// If `segment_size` is 0 (a caller bug).
    pub fn send_gso(
        &self,
        dst: SocketAddr,
        src_ip: Option<IpAddr>,
        segments: &[u8],
        segment_size: usize,
    ) -> io::Result<usize> {
        assert!(segment_size > 0, "send_gso needs a segment size");
        let (dst, src_ip) = self.target(dst, src_ip)?;
        let mut sent = 0;
        let mut rest = segments;
        while !rest.is_empty() {
            let max = self.state.max_gso_segments().max(1);
            let take = rest.len().min(max.saturating_mul(segment_size));
            let chunk = &rest[..take];
            let count = take.div_ceil(segment_size);
            let result = self.send_one(dst, src_ip, chunk, segment_size);
            match result {
                Ok(()) => {
                    sent += count;
                    rest = &rest[take..];
                }
                // A GSO send the kernel will not take (segment above the path MTU: EINVAL
                // or EMSGSIZE; a device without GSO: EIO): this chunk one by one, so that
                // the kernel may fragment like the single-datagram path does.
                Err(e)
                    if count > 1
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL) | Some(libc::EMSGSIZE) | Some(libc::EIO)
                        ) =>
                {
                    for d in chunk.chunks(segment_size) {
                        match self.send_one(dst, src_ip, d, segment_size) {
                            Ok(()) => sent += 1,
                            Err(e) if sent == 0 => return Err(e),
                            Err(_) => return Ok(sent),
                        }
                    }
                    rest = &rest[take..];
                }
                Err(e) if sent == 0 => return Err(e),
                Err(_) => return Ok(sent),
            }
        }
        Ok(sent)
    }

    fn send_one(
        &self,
        dst: SocketAddr,
        src_ip: Option<IpAddr>,
        contents: &[u8],
        segment_size: usize,
    ) -> io::Result<()> {
        let t = Transmit {
            destination: dst,
            ecn: None,
            contents,
            segment_size: (contents.len() > segment_size).then_some(segment_size),
            src_ip,
        };
        self.state.try_send(UdpSockRef::from(&self.sock), &t)
    }

    /// The destination and source as this socket's family needs them: IPv4 as v4-mapped
    /// IPv6 on a dual-stack socket, v4-mapped back to IPv4 on an IPv4 socket.
    fn target(
        &self,
        dst: SocketAddr,
        src: Option<IpAddr>,
    ) -> io::Result<(SocketAddr, Option<IpAddr>)> {
        let is_v6 = self.sock.local_addr().is_ipv6();
        let dst = match (is_v6, dst) {
            (true, SocketAddr::V4(v4)) if self.sock.is_dual_stack() => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            (true, SocketAddr::V4(_)) => {
                return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
            }
            (false, SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
                Some(ip4) => SocketAddr::from((ip4, v6.port())),
                None => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
            },
            _ => dst,
        };
        // An IPv4 source goes out as IP_PKTINFO also on a dual-stack socket (the kernel
        // sends v4-mapped destinations through the IPv4 path, which reads IP cmsgs).
        Ok((dst, src.map(|ip| ip.to_canonical())))
    }
}

impl AsFd for BatchUdp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

fn getsockopt_int(sock: &UdpSocket, level: libc::c_int, opt: libc::c_int) -> io::Result<i32> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the descriptor is open (borrowed from `sock`); `val` is a live c_int and
    // `len` its size, which the kernel updates.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            level,
            opt,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(val)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gro_buffer_splits_by_stride() {
        let buf: Vec<u8> = (0..250u8).collect();
        let m = BatchMeta {
            addr: "192.0.2.1:1194".parse().expect("addr"),
            len: 250,
            stride: 100,
            dst_ip: None,
        };
        let d: Vec<&[u8]> = m.datagrams(&buf).collect();
        assert_eq!(d.len(), 3);
        assert_eq!(d[2], &buf[200..250]);
        let r: Vec<_> = m.ranges().collect();
        assert_eq!(r, vec![0..100, 100..200, 200..250]);
        // Without GRO: one datagram.
        let one = BatchMeta { stride: 250, ..m };
        assert_eq!(one.datagrams(&buf).count(), 1);
        assert_eq!(one.ranges().count(), 1);
        // Empty.
        assert_eq!(BatchMeta::default().ranges().count(), 0);
        assert_eq!(BatchMeta::default().datagrams(&buf).count(), 0);
    }

    #[test]
    fn v4_mapped_is_normalised() {
        let m: SocketAddr = "[::ffff:192.0.2.7]:1194".parse().expect("addr");
        assert_eq!(
            normalize(m),
            "192.0.2.7:1194".parse::<SocketAddr>().expect("addr")
        );
        let ip: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(ip.to_canonical(), ip);
    }
}
