//! A group of `SO_REUSEPORT` UDP sockets on one address, with datagrams steered to a socket
//! by OpenVPN peer id, for a server that runs one data worker per socket.
//!
//! The kernel picks the socket of a reuseport group for each datagram; with a classic-BPF
//! program attached (`SO_ATTACH_REUSEPORT_CBPF`) the program's return value is the index of
//! the socket in the group. The one attached here (`steering_program`) returns
//!
//! * `peer_id % n` for a datagram that looks like `P_DATA_V2` (at least 4 bytes, first byte
//!   `>> 3 == 9`), the 24-bit big-endian peer id being bytes 1..4;
//! * `0` for everything else: control packets (a new client's `P_CONTROL_HARD_RESET_*`, TLS
//!   records, ACKs), `P_DATA_V1` (no peer id) and short or garbage datagrams.
//!
//! So every data packet of one peer lands on one socket (its worker keeps packet-id and
//! replay order) and the control plane reads socket 0. [`steered_index`] and
//! [`datagram_index`] are the same function in Rust, for the driver.
//!
//! Kernel facts this relies on (Linux 6.12, Debian's `linux-source-6.12` 6.12.117):
//!
//! * The program sees the UDP payload at offset 0: `reuseport_select_sock()` is called with
//!   `hdr_len = sizeof(struct udphdr)` (net/ipv4/udp.c:496 via `inet_lookup_reuseport()`,
//!   net/ipv4/inet_hashtables.c:363; net/ipv6/udp.c:235 via net/ipv6/inet6_hashtables.c:145)
//!   and `run_bpf_filter()` pulls that header before running the program
//!   (net/core/sock_reuseport.c:511-517). `BPF_LD|BPF_LEN` is then the payload length
//!   (net/core/filter.c:872-877 loads `skb->len`).
//! * A return value `>= num_socks` makes the kernel fall back to hashing
//!   (net/core/sock_reuseport.c:521-522 and :599-602). The program here never does that as
//!   long as all `n` sockets stay open; closing one shrinks the group and moves the last
//!   socket into its slot (net/core/sock_reuseport.c:142), so the group is meant to be
//!   dropped as a whole.
//! * The index is the order of `bind(2)`: each joining socket is appended
//!   (net/core/sock_reuseport.c:127), so `Vec` index `i` is group index `i`.
//! * An out-of-range `BPF_ABS` load ends the program with 0 (net/core/filter.c:549-551), so
//!   even without the explicit length check a short datagram would go to socket 0.
//! * `BPF_ALU|BPF_MOD|BPF_K` with `k == 0` is refused by the checker
//!   (net/core/filter.c:1089-1092); `n >= 2` here.
//!
//! One limit: with UDP GRO on (as [`crate::BatchUdp`] sets it, net/ipv4/udp.c:2825-2831) a
//! receiving device may coalesce datagrams of one sender address and port
//! (net/ipv4/udp_offload.c:579) before the socket lookup; the GRO step itself picks no
//! socket by program (its lookup passes no skb, net/ipv4/udp_offload.c:710-712), and the
//! later lookup of the coalesced buffer (net/ipv4/udp.c:2519) runs the program on the first
//! datagram only. A control packet can so ride behind a peer's data packets to that peer's
//! socket, or data packets behind a control packet to socket 0. The driver should check
//! each datagram with [`datagram_index`] and hand misdirected ones over. (The tests send one
//! datagram per `sendto` over loopback and see no coalescing.)
use std::io;
use std::os::fd::AsRawFd;

use socket2::Socket;
use thiserror::Error;
use warren_core::PeerId;

use crate::udp::{bind_with, setsockopt_int};
use crate::{BindError, UdpBind, UdpFamily, UdpSocket};

/// The most sockets [`bind_steered`] binds in one group.
pub const MAX_STEERED_SOCKETS: usize = 64;

/// OpenVPN `P_DATA_V2` opcode, the top 5 bits of the first byte (ssl_pkt.h:48, :37-39).
const P_DATA_V2: u32 = 9;
/// OpenVPN opcode shift (ssl_pkt.h `P_OPCODE_SHIFT`).
const OPCODE_SHIFT: u32 = 3;
/// The peer id is 24 bits (OpenVPN `MAX_PEER_ID` 0xFFFFFF, openvpn.h:549).
const PEER_ID_MASK: u32 = 0x00FF_FFFF;
/// Opcode byte + 3-byte peer id: the least a datagram needs to be steered.
const STEER_MIN_LEN: usize = 4;

/// Binding a steered socket group.
#[derive(Debug, Error)]
pub enum SteerError {
    #[error("a steered UDP socket group has 1 to {MAX_STEERED_SOCKETS} sockets, not {0}")]
    Count(usize),
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The kernel refused `SO_REUSEPORT` or the steering program: run one data socket
    /// (unsteered sockets would break per-peer packet order).
    #[error("the kernel refused {option} on the UDP socket ({source}); use one data socket")]
    Unsupported {
        option: &'static str,
        source: io::Error,
    },
    #[error("the UDP socket group did not get one port (first socket bound to {first})")]
    Port { first: std::net::SocketAddr },
}

/// Binds `n` (1..=[`MAX_STEERED_SOCKETS`]) UDP sockets on the address of `b` with
/// `SO_REUSEPORT` and attaches the peer-id steering program; socket `i` of the result
/// receives the datagrams whose [`datagram_index`] is `i`.
///
/// Every socket is set up like [`UdpSocket::bind`] (buffers, dual stack, non-blocking) and
/// works with [`crate::BatchUdp::new`]. `n == 1` is a plain [`UdpSocket::bind`] (no
/// `SO_REUSEPORT`, no program). Port 0 works: the first socket gets an ephemeral port and
/// the others bind to it.
///
/// Who can join: Linux adds a socket to a reuseport group only if it has `SO_REUSEPORT`
/// and was created under the same (effective, filesystem) user id as the group
/// (`uid_eq()` on `sock_i_uid()` in net/ipv4/udp.c:158-160 and :222; the owner is the
/// creator's fsuid, net/socket.c:624, net/core/sock.c:2746). Bound before
/// [`crate::drop_privileges`], the sockets belong to root, and a process running as the
/// unprivileged `user` cannot join them. The first socket has its program
/// attached before `bind(2)`, which makes the kernel treat every socket already on the port
/// as a conflict (net/ipv4/udp.c:159, `!sk->sk_reuseport_cb`): the group never joins a
/// group someone else made, and port 0 never picks a port another group of ours uses.
/// Only a process of the same user that binds with `SO_REUSEPORT` after us could join
/// ours, and a process of the same user can do worse anyway.
///
/// Keep the sockets together: closing one shrinks the group and reorders it.
///
/// # Errors
/// [`SteerError::Count`] for `n` out of range, [`SteerError::Bind`] as from
/// [`UdpSocket::bind`], [`SteerError::Unsupported`] when the kernel refuses `SO_REUSEPORT`
/// or the program (fall back to one socket).
pub fn bind_steered(b: &UdpBind, n: usize) -> Result<Vec<UdpSocket>, SteerError> {
    if n == 0 || n > MAX_STEERED_SOCKETS {
        return Err(SteerError::Count(n));
    }
    if n == 1 {
        return Ok(vec![UdpSocket::bind(b)?]);
    }
    // n <= 64 was checked above.
    let modulus = u32::try_from(n).map_err(|_| SteerError::Count(n))?;
    let program = steering_program(modulus);
    let first = bind_with(b, &mut |sock: &Socket| {
        set_reuseport(sock)?;
        attach_reuseport_cbpf(sock, &program).map_err(|source| SteerError::Unsupported {
            option: "SO_ATTACH_REUSEPORT_CBPF",
            source,
        })
    })?;
    let local = first.local_addr();
    if local.port() == 0 {
        return Err(SteerError::Port { first: local });
    }
    // The rest bind to exactly what the first one got (the family it fell back to, the
    // kernel-chosen port); the kernel adds each to the first one's group with its program.
    let rest = UdpBind {
        family: if local.is_ipv6() {
            UdpFamily::V6
        } else {
            UdpFamily::V4
        },
        local: Some(local.ip()),
        port: local.port(),
        ..b.clone()
    };
    let mut group = Vec::with_capacity(n);
    group.push(first);
    for _ in 1..n {
        let sock = bind_with(&rest, &mut |sock: &Socket| set_reuseport(sock))?;
        if sock.local_addr() != local {
            return Err(SteerError::Port { first: local });
        }
        group.push(sock);
    }
    Ok(group)
}

/// The socket index a `P_DATA_V2` datagram of `peer` lands on in a group of `n`
/// (0 when `n <= 1`).
pub fn steered_index(peer: PeerId, n: usize) -> usize {
    steer(peer.get(), n)
}

/// The socket index the steering program gives `datagram` (a UDP payload) in a group of
/// `n` (0 when `n <= 1`): what the kernel does, for checking each datagram of a GRO buffer.
pub fn datagram_index(datagram: &[u8], n: usize) -> usize {
    match datagram {
        [op, a, b, c, ..] if u32::from(*op) >> OPCODE_SHIFT == P_DATA_V2 => {
            steer(u32::from_be_bytes([0, *a, *b, *c]), n)
        }
        _ => 0,
    }
}

fn steer(peer_id: u32, n: usize) -> usize {
    match u32::try_from(n) {
        Ok(0 | 1) => 0,
        // A u32 remainder below n fits in usize.
        Ok(m) => ((peer_id & PEER_ID_MASK) % m) as usize,
        // More sockets than peer ids: the id itself.
        Err(_) => (peer_id & PEER_ID_MASK) as usize,
    }
}

/// Number of instructions of [`steering_program`].
const PROGRAM_LEN: usize = 10;

const fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The classic-BPF reuseport program for a group of `n` (>= 1) sockets. Offsets are from
/// the first byte of the UDP payload; word loads are big-endian (net/core/filter.c:296).
fn steering_program(n: u32) -> [libc::sock_filter; PROGRAM_LEN] {
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_LEN,
        BPF_MOD, BPF_RET, BPF_RSH, BPF_W,
    };
    // Jump offsets count instructions after the jump: both failures go to the last one.
    [
        // 0: A = payload length
        stmt(BPF_LD | BPF_W | BPF_LEN, 0),
        // 1: if A >= 4 goto 2 else goto 9
        jump(BPF_JMP | BPF_JGE | BPF_K, STEER_MIN_LEN as u32, 0, 7),
        // 2: A = payload[0]
        stmt(BPF_LD | BPF_B | BPF_ABS, 0),
        // 3: A >>= 3 (the opcode)
        stmt(BPF_ALU | BPF_RSH | BPF_K, OPCODE_SHIFT),
        // 4: if A == P_DATA_V2 goto 5 else goto 9
        jump(BPF_JMP | BPF_JEQ | BPF_K, P_DATA_V2, 0, 4),
        // 5: A = payload[0..4] as big-endian u32
        stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        // 6: A &= 0xFFFFFF (the peer id)
        stmt(BPF_ALU | BPF_AND | BPF_K, PEER_ID_MASK),
        // 7: A %= n
        stmt(BPF_ALU | BPF_MOD | BPF_K, n),
        // 8: return A
        stmt(BPF_RET | BPF_A, 0),
        // 9: return 0
        stmt(BPF_RET | BPF_K, 0),
    ]
}

fn set_reuseport(sock: &Socket) -> Result<(), SteerError> {
    setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1).map_err(|source| {
        SteerError::Unsupported {
            option: "SO_REUSEPORT",
            source,
        }
    })
}

/// `setsockopt(SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF)`: the kernel copies and checks the
/// program (net/core/sock.c:1480-1485, net/core/filter.c:1516 and :1563-1581).
fn attach_reuseport_cbpf(
    sock: &Socket,
    program: &[libc::sock_filter; PROGRAM_LEN],
) -> io::Result<()> {
    let mut insns = *program;
    let fprog = libc::sock_fprog {
        len: PROGRAM_LEN as libc::c_ushort,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: the descriptor is open for the call (borrowed from `sock`); the option value
    // points at a live sock_fprog of the given size whose `filter` points at `len` live
    // instructions (`insns`, alive until the end of this function). The kernel only reads
    // them and copies them during the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
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
    use proptest::prelude::*;

    /// A classic-BPF interpreter for the instructions [`steering_program`] uses, with the
    /// kernel's meaning: loads are big-endian and an out-of-range load returns 0.
    fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        use libc::{
            BPF_A, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD,
            BPF_LEN, BPF_MOD, BPF_RET, BPF_RSH, BPF_W,
        };
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let k = i.k;
            let off = k as usize;
            match u32::from(i.code) {
                c if c == BPF_LD | BPF_W | BPF_LEN => a = pkt.len() as u32,
                c if c == BPF_LD | BPF_B | BPF_ABS => match pkt.get(off) {
                    Some(b) => a = u32::from(*b),
                    None => return 0,
                },
                c if c == BPF_LD | BPF_W | BPF_ABS => match pkt.get(off..off + 4) {
                    Some(w) => a = u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
                    None => return 0,
                },
                c if c == BPF_ALU | BPF_RSH | BPF_K => a >>= k,
                c if c == BPF_ALU | BPF_AND | BPF_K => a &= k,
                c if c == BPF_ALU | BPF_MOD | BPF_K => a %= k,
                c if c == BPF_JMP | BPF_JGE | BPF_K => {
                    pc += usize::from(if a >= k { i.jt } else { i.jf });
                }
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    pc += usize::from(if a == k { i.jt } else { i.jf });
                }
                c if c == BPF_RET | BPF_A => return a,
                c if c == BPF_RET | BPF_K => return k,
                c => panic!("instruction {c:#x} not modelled"),
            }
            pc += 1;
        }
    }

    fn bytes(p: &[libc::sock_filter]) -> Vec<(u16, u8, u8, u32)> {
        p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
    }

    #[test]
    fn program_bytes_for_three_sockets() {
        // As `tcpdump -dd` would print the program (code, jt, jf, k).
        let want = vec![
            (0x80, 0, 0, 0),
            (0x35, 0, 7, 4),
            (0x30, 0, 0, 0),
            (0x74, 0, 0, 3),
            (0x15, 0, 4, 9),
            (0x20, 0, 0, 0),
            (0x54, 0, 0, 0x00ff_ffff),
            (0x94, 0, 0, 3),
            (0x16, 0, 0, 0),
            (0x06, 0, 0, 0),
        ];
        assert_eq!(bytes(&steering_program(3)), want);
        // Every jump lands inside the program, and the last instruction returns.
        let p = steering_program(3);
        for (pc, i) in p.iter().enumerate() {
            if u32::from(i.code) & 0x07 == libc::BPF_JMP {
                assert!(pc + 1 + usize::from(i.jt.max(i.jf)) < PROGRAM_LEN);
            }
        }
        assert_eq!(
            u32::from(p[PROGRAM_LEN - 1].code),
            libc::BPF_RET | libc::BPF_K
        );
    }

    #[test]
    fn known_datagrams() {
        let n = 3;
        let prog = steering_program(3);
        let cases: &[(&[u8], usize)] = &[
            (&[0x48, 0, 0, 0, 0, 0, 0, 1], 0),
            (&[0x48, 0, 0, 1, 0, 0, 0, 1], 1),
            (&[0x49, 0, 0, 5], 2), // key id 1, peer 5
            (&[0x4f, 0x12, 0x34, 0x56], 0x123456 % 3),
            (&[0x48, 0xff, 0xff, 0xff], 0xff_ffff % 3),
            (&[0x38, 0, 0, 2, 9, 9, 9, 9], 0), // P_CONTROL_HARD_RESET_CLIENT_V2
            (&[0x20, 0, 0, 2, 9], 0),          // P_CONTROL_V1
            (&[0x28, 0, 0, 1], 0),             // P_ACK_V1
            (&[0x30, 0, 0, 2, 0, 0, 0, 1], 0), // P_DATA_V1
            (&[0x50, 0, 0, 2], 0),             // P_CONTROL_HARD_RESET_CLIENT_V3
            (&[0x48, 0, 1], 0),                // too short
            (&[0x48, 1], 0),
            (&[0x48], 0),
            (&[], 0),
        ];
        for (d, want) in cases {
            assert_eq!(datagram_index(d, n), *want, "{d:02x?}");
            assert_eq!(run(&prog, d) as usize, *want, "program on {d:02x?}");
        }
    }

    #[test]
    fn steered_index_is_peer_id_mod_n() {
        let p = |v| PeerId::new(v).expect("peer id");
        assert_eq!(steered_index(p(0), 3), 0);
        assert_eq!(steered_index(p(7), 3), 1);
        assert_eq!(steered_index(p(0x00ff_fffe), 64), 0x3e);
        assert_eq!(steered_index(p(42), 1), 0);
        assert_eq!(steered_index(p(42), 0), 0);
        for id in 0..200u32 {
            let d = [0x48, 0, (id >> 8) as u8, id as u8];
            assert_eq!(datagram_index(&d, 5), steered_index(p(id), 5));
        }
    }

    #[test]
    fn count_out_of_range_is_an_error() {
        let b = UdpBind {
            family: UdpFamily::V4,
            local: Some(std::net::Ipv4Addr::LOCALHOST.into()),
            port: 0,
            sndbuf: None,
            rcvbuf: None,
        };
        assert!(matches!(bind_steered(&b, 0), Err(SteerError::Count(0))));
        assert!(matches!(bind_steered(&b, 65), Err(SteerError::Count(65))));
    }

    #[test]
    fn kernel_checks_the_program() {
        // Unbound sockets only: nothing is bound or sent.
        let udp =
            || Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
        for n in [2, 3, 7, 64] {
            let s = udp();
            set_reuseport(&s).expect("SO_REUSEPORT");
            attach_reuseport_cbpf(&s, &steering_program(n)).expect("program accepted");
        }
        // Without SO_REUSEPORT the kernel refuses (net/core/sock_reuseport.c:691): the
        // error comes back as an io::Error, not a silent success.
        let e = attach_reuseport_cbpf(&udp(), &steering_program(3)).expect_err("refused");
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        // A modulus of 0 is refused by the checker (net/core/filter.c:1089-1092).
        let s = udp();
        set_reuseport(&s).expect("SO_REUSEPORT");
        let e = attach_reuseport_cbpf(&s, &steering_program(0)).expect_err("mod 0");
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    fn datagram() -> impl Strategy<Value = Vec<u8>> {
        let first = prop_oneof![Just(0x48u8), Just(0x4f), 0x48u8..0x50, any::<u8>()];
        (first, proptest::collection::vec(any::<u8>(), 0..12)).prop_map(|(f, mut rest)| {
            rest.insert(0, f);
            rest
        })
    }

    proptest! {
        #[test]
        fn program_matches_rust(d in datagram(), cut in 0usize..14, n in 2usize..=MAX_STEERED_SOCKETS) {
            let d = &d[..cut.min(d.len())];
            let prog = steering_program(n as u32);
            let got = run(&prog, d) as usize;
            prop_assert!(got < n, "index {} out of the group of {}", got, n);
            prop_assert_eq!(got, datagram_index(d, n));
        }
    }
}
