//! Offload and batching tests, each inside a network namespace it creates and deletes.
//!
//! * A real TCP stream through an [`OffloadTun`] whose far side is a userspace "reflector":
//!   it reads super-packets with `recv_batch` (checking that the split packets carry valid
//!   checksums), rewrites the addresses so that the stream comes back to a listener on the
//!   same host, and writes them with `send_batch` (coalescing). Run with offloads on and off.
//! * A UDP GSO send from a kernel socket into the tun, split by `recv_batch`.
//! * [`BatchUdp`]: 20 × 1200 bytes with one GSO send, received (GRO) as 20 datagrams.
//!
//! Safety rules as in `netns.rs`: addresses from 198.18.0.0/15 and loopback only, every
//! wait bounded, the namespace deleted by a `Drop` guard.
use std::io::{self, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use warren_io::{
    BatchMeta, BatchUdp, GRO_BUFFER, Interest, OffloadMode, OffloadTun, OffloadTunConfig, Poller,
    TUN_RECV_BATCH, TunConfig, UdpBind, UdpFamily,
};

use crate::common;
use common::{Deadline, Netns, run};

/// Internet checksum over `data` starting from `sum` (not complemented).
fn csum(data: &[u8], mut sum: u64) -> u16 {
    for c in data.chunks(2) {
        sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum >> 16) + (sum & 0xffff);
    }
    sum as u16
}

fn pseudo(p: &[u8], proto: u8, l4_len: usize) -> u64 {
    let mut s = 0u64;
    for c in p[12..20].chunks(2) {
        s += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    s + u64::from(proto) + l4_len as u64
}

/// IPv4 header and L4 (TCP/UDP) checksums both valid.
fn checksums_ok(p: &[u8]) -> bool {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    csum(&p[..ihl], 0) == 0xffff && csum(&p[ihl..], pseudo(p, p[9], p.len() - ihl)) == 0xffff
}

fn fix_checksums(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    p[10..12].copy_from_slice(&[0, 0]);
    let c = !csum(&p[..ihl], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let off = ihl + if p[9] == 6 { 16 } else { 6 };
    p[off..off + 2].copy_from_slice(&[0, 0]);
    let c = !csum(&p[ihl..], pseudo(p, p[9], p.len() - ihl));
    p[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
/// The client connects to V1; the listener sees the client as V2.
const V1: Ipv4Addr = Ipv4Addr::new(198, 18, 21, 1);
const V2: Ipv4Addr = Ipv4Addr::new(198, 18, 21, 2);
/// Headroom left in front of every packet, as the VPN will (P_DATA_V2 header + tag).
const HEADROOM: usize = 24;

#[derive(Debug, Default)]
struct ReflectStats {
    reads: usize,
    packets: usize,
    largest_read: usize,
    writes: usize,
    written: usize,
}

/// Moves 8 MiB over TCP through the reflector and checks every byte.
fn tcp_through_reflector(mode: OffloadMode) -> (ReflectStats, bool, bool) {
    let mut tun = open_tun("tun", mode, false);
    let offload = tun.offload();
    run("ip", &["route", "add", "198.18.21.0/24", "dev", tun.name()]);
    let listener = TcpListener::bind((LOCAL, 5201)).expect("listen");
    const TOTAL: usize = 8 << 20;
    let pattern = |i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let server = std::thread::spawn(move || {
        let (mut s, from) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        assert_eq!(from.ip(), V2);
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0usize;
        let mut ok = true;
        while got < TOTAL {
            let n = s.read(&mut buf).expect("server read");
            assert!(n > 0, "stream ended after {got} bytes");
            ok &= buf[..n]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(got + i));
            got += n;
        }
        s.write_all(b"ok").expect("reply");
        d2.store(true, Ordering::Relaxed);
        ok
    });
    let client = std::thread::spawn(move || {
        let mut c =
            TcpStream::connect_timeout(&SocketAddr::from((V1, 5201)), Duration::from_secs(10))
                .expect("connect through the reflector");
        c.set_write_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
        c.write_all(&data).expect("client write");
        let mut r = [0u8; 2];
        c.read_exact(&mut r).expect("reply");
        r == *b"ok"
    });

    let mut stats = ReflectStats::default();
    let mut bufs = vec![vec![0u8; HEADROOM + 1500]; TUN_RECV_BATCH];
    let mut sizes = vec![0usize; TUN_RECV_BATCH];
    let mut poller = Poller::new();
    let t = poller.add(tun.as_fd(), Interest::Readable);
    let deadline = Deadline::after(Duration::from_secs(40));
    while !done.load(Ordering::Relaxed) || !client.is_finished() {
        assert!(!deadline.passed(), "transfer did not finish: {stats:?}");
        poller.wait(Some(Duration::from_millis(50))).expect("poll");
        if !poller.is_readable(t) {
            continue;
        }
        for _ in 0..64 {
            let n = match tun.recv_batch(&mut bufs, &mut sizes, HEADROOM) {
                Ok(n) => n,
                Err(warren_io::TunBatchError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    break;
                }
                Err(e) => panic!("recv_batch: {e}"),
            };
            stats.reads += 1;
            stats.largest_read = stats.largest_read.max(n);
            let mut out: Vec<&[u8]> = Vec::with_capacity(n);
            for (b, &len) in bufs[..n].iter_mut().zip(&sizes[..n]) {
                let p = &mut b[HEADROOM..HEADROOM + len];
                // Only the IPv4 TCP test stream; the kernel also sends IPv6 noise.
                if len < 40 || p[0] >> 4 != 4 || p[9] != 6 {
                    continue;
                }
                stats.packets += 1;
                assert!(checksums_ok(p), "split packet with a bad checksum");
                let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
                let new_src = if dst == V1 { V2 } else { V1 };
                p[12..16].copy_from_slice(&new_src.octets());
                p[16..20].copy_from_slice(&LOCAL.octets());
                fix_checksums(p);
                out.push(p);
            }
            let s = tun.send_batch(&out).expect("send_batch");
            assert_eq!(s.dropped, 0, "kernel refused reflected packets");
            stats.writes += s.writes;
            stats.written += s.packets;
        }
    }
    let server_ok = server.join().expect("server thread");
    let client_ok = client.join().expect("client thread");
    assert!(server_ok, "data corrupted on the way");
    assert!(client_ok, "no reply");
    (stats, offload.tcp, tun.coalescing())
}

/// A tun on LOCAL/24 (MTU 1500) named `name`, with `offload` and `multi_queue`.
fn open_tun(name: &str, offload: OffloadMode, multi_queue: bool) -> OffloadTun {
    OffloadTun::open(&OffloadTunConfig {
        tun: TunConfig {
            name: name.into(),
            address: LOCAL,
            prefix: 24,
            mtu: 1500,
        },
        offload,
        multi_queue,
    })
    .expect("open tun")
}

#[test]
fn tcp_stream_through_offload_tun() {
    let ns = Netns::new("tso");
    let (stats, tcp, coalescing) = ns.run(Duration::from_secs(60), || {
        tcp_through_reflector(OffloadMode::Auto)
    });
    eprintln!("offload on: {stats:?}");
    if !tcp {
        eprintln!("this kernel refused TUNSETOFFLOAD: only the fallback path was tested");
        return;
    }
    assert!(coalescing, "coalescing was turned off by a refused write");
    assert!(
        stats.largest_read > 1,
        "no super-packet was split: {stats:?}"
    );
    assert!(
        stats.writes < stats.written,
        "nothing was coalesced: {stats:?}"
    );
}

#[test]
fn tcp_stream_through_plain_tun() {
    let ns = Netns::new("plain");
    let (stats, tcp, coalescing) = ns.run(Duration::from_secs(60), || {
        tcp_through_reflector(OffloadMode::Off)
    });
    eprintln!("offload off: {stats:?}");
    assert!(!tcp && !coalescing);
    assert_eq!(stats.largest_read, 1);
    assert_eq!(stats.writes, stats.written);
}

/// One GSO send of 8 × 1000 bytes from a kernel socket into the tun comes out of
/// `recv_batch` as 8 packets of 1028 bytes with valid checksums (in one read with USO).
#[test]
fn udp_gso_into_tun_is_split() {
    let ns = Netns::new("uso");
    ns.run(Duration::from_secs(20), || {
        let mut tun = open_tun("wof%d", OffloadMode::Auto, true);
        assert!(tun.name().starts_with("wof"));
        // A second queue opens (every queue needs a reader in a real driver).
        let q2 = tun.open_queue().expect("second queue");
        assert_eq!(q2.offload(), tun.offload());
        drop(q2);
        let sock = BatchUdp::bind(&UdpBind {
            family: UdpFamily::V4,
            local: Some(LOCAL.into()),
            port: 0,
            sndbuf: None,
            rcvbuf: None,
        })
        .expect("bind");
        let payload: Vec<u8> = (0..8000u32).map(|i| (i % 251) as u8).collect();
        let dst = SocketAddr::from((Ipv4Addr::new(198, 18, 20, 9), 9999));
        assert_eq!(sock.send_gso(dst, None, &payload, 1000).expect("send"), 8);

        let mut bufs = vec![vec![0u8; HEADROOM + 1500]; TUN_RECV_BATCH];
        let mut sizes = vec![0usize; TUN_RECV_BATCH];
        let mut poller = Poller::new();
        let t = poller.add(tun.as_fd(), Interest::Readable);
        let deadline = Deadline::after(Duration::from_secs(5));
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut reads_with_data = 0;
        while got.len() < 8 {
            assert!(!deadline.passed(), "only {} datagrams arrived", got.len());
            poller.wait(Some(Duration::from_millis(100))).expect("poll");
            if !poller.is_readable(t) {
                continue;
            }
            let n = match tun.recv_batch(&mut bufs, &mut sizes, HEADROOM) {
                Ok(n) => n,
                Err(warren_io::TunBatchError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    continue;
                }
                Err(e) => panic!("recv_batch: {e}"),
            };
            let mut any = false;
            for (b, &len) in bufs[..n].iter().zip(&sizes[..n]) {
                let p = &b[HEADROOM..HEADROOM + len];
                if len >= 28 && p[0] >> 4 == 4 && p[9] == 17 && p[16..20] == [198, 18, 20, 9] {
                    assert!(checksums_ok(p), "bad checksum after the split");
                    got.push(p[28..].to_vec());
                    any = true;
                }
            }
            reads_with_data += usize::from(any);
        }
        assert_eq!(got.len(), 8);
        assert!(got.iter().all(|d| d.len() == 1000));
        assert_eq!(got.concat(), payload);
        if tun.offload().udp {
            assert_eq!(reads_with_data, 1, "USO on: one super-packet expected");
        }
    });
}

/// Ten same-size UDP datagrams of one flow written with `send_batch` become one USO write
/// (when the kernel has USO) and reach a kernel socket as ten datagrams, in order.
#[test]
fn udp_packets_coalesced_into_tun_reach_a_socket() {
    let ns = Netns::new("uro");
    ns.run(Duration::from_secs(20), || {
        let mut tun = open_tun("tun", OffloadMode::Auto, false);
        let sock = std::net::UdpSocket::bind((LOCAL, 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let port = sock.local_addr().expect("addr").port();
        let packets: Vec<Vec<u8>> = (0..10u8)
            .map(|i| {
                let mut p = vec![0u8; 28 + 1000];
                p[0] = 0x45;
                p[2..4].copy_from_slice(&(1028u16).to_be_bytes());
                p[4] = i;
                p[6] = 0x40;
                p[8] = 64;
                p[9] = 17;
                p[12..16].copy_from_slice(&[198, 18, 20, 5]);
                p[16..20].copy_from_slice(&LOCAL.octets());
                p[20..22].copy_from_slice(&4000u16.to_be_bytes());
                p[22..24].copy_from_slice(&port.to_be_bytes());
                p[24..26].copy_from_slice(&(1008u16).to_be_bytes());
                p[28..].fill(i);
                fix_checksums(&mut p);
                p
            })
            .collect();
        let s = tun.send_batch(&packets).expect("send_batch");
        assert_eq!((s.packets, s.dropped), (10, 0));
        if tun.offload().udp {
            assert_eq!(s.writes, 1, "USO on: one coalesced write expected");
        }
        let mut buf = [0u8; 2000];
        for i in 0..10u8 {
            let (n, from) = sock.recv_from(&mut buf).expect("datagram");
            assert_eq!(from, SocketAddr::from(([198, 18, 20, 5], 4000)));
            assert_eq!(n, 1000);
            assert!(
                buf[..n].iter().all(|&b| b == i),
                "datagram {i} out of order"
            );
        }
    });
}

/// 20 × 1200 bytes in one GSO send arrive as 20 datagrams (in few GRO buffers), and the
/// socket keeps the kernel's path-MTU setting (quinn-udp's PROBE is undone).
#[test]
fn batch_udp_gso_and_gro_on_loopback() {
    let ns = Netns::new("gso");
    ns.run(Duration::from_secs(20), || {
        let bind = UdpBind {
            family: UdpFamily::V4,
            local: Some(Ipv4Addr::LOCALHOST.into()),
            port: 0,
            sndbuf: None,
            rcvbuf: None,
        };
        let plain = warren_io::UdpSocket::bind(&bind).expect("bind");
        let before = mtu_discover(&plain);
        let rx = BatchUdp::new(plain).expect("batch");
        assert_eq!(
            mtu_discover(rx.socket()),
            before,
            "IP_MTU_DISCOVER restored"
        );
        let tx = BatchUdp::bind(&bind).expect("bind tx");
        eprintln!(
            "gro_segments={} max_gso_segments={}",
            rx.gro_segments(),
            tx.max_gso_segments()
        );
        let data: Vec<u8> = (0..20 * 1200u32)
            .map(|i| (i / 1200) as u8 ^ (i % 7) as u8)
            .collect();
        assert_eq!(
            tx.send_gso(rx.local_addr(), None, &data, 1200)
                .expect("send_gso"),
            20
        );
        // A shorter last segment is allowed.
        assert_eq!(
            tx.send_gso(rx.local_addr(), None, &[9u8; 1300], 1200)
                .expect("send"),
            2
        );

        let mut storage = vec![vec![0u8; GRO_BUFFER]; 4];
        let mut metas = [BatchMeta::default(); 4];
        let mut datagrams: Vec<Vec<u8>> = Vec::new();
        let mut buffers = 0;
        let mut poller = Poller::new();
        let t = poller.add(rx.as_fd(), Interest::Readable);
        let deadline = Deadline::after(Duration::from_secs(5));
        while datagrams.len() < 22 {
            assert!(!deadline.passed(), "only {} datagrams", datagrams.len());
            poller.wait(Some(Duration::from_millis(100))).expect("poll");
            let _ = poller.is_readable(t);
            let mut slices: Vec<IoSliceMut<'_>> =
                storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let n = match rx.recv_batch(&mut slices, &mut metas) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("recv_batch: {e}"),
            };
            drop(slices);
            for (m, b) in metas[..n].iter().zip(&storage) {
                assert_eq!(m.addr, tx.local_addr());
                assert_eq!(m.dst_ip, Some(Ipv4Addr::LOCALHOST.into()), "pktinfo");
                buffers += 1;
                datagrams.extend(m.datagrams(b).map(<[u8]>::to_vec));
            }
        }
        assert_eq!(datagrams.len(), 22);
        assert_eq!(datagrams[..20].concat(), data);
        assert!(datagrams[..20].iter().all(|d| d.len() == 1200));
        assert_eq!(datagrams[20].len(), 1200);
        assert_eq!(datagrams[21].len(), 100);
        if rx.gro_segments() > 1 && tx.max_gso_segments() > 1 {
            assert!(buffers < 22, "GRO on but every datagram came alone");
        }
    });
}

fn mtu_discover(s: &warren_io::UdpSocket) -> i32 {
    let mut v: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: open descriptor, `v` is a live c_int and `len` its size.
    let rc = unsafe {
        libc::getsockopt(
            s.as_fd().as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
    v
}
