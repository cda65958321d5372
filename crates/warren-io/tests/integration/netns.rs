//! Traffic tests, each inside a network namespace it creates and deletes.
//!
//! Safety rules: nothing but namespace setup runs in the root namespace; addresses come
//! from 198.18.0.0/15 and loopback; every wait is bounded; the namespace is deleted by a
//! `Drop` guard, also when the test panics.
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use warren_io::{
    Interest, OffloadMode, OffloadTun, OffloadTunConfig, Poller, RecvMeta, TunBatchError,
    TunConfig, UdpBind, UdpFamily, UdpSocket,
};

use crate::common;
use common::{Deadline, Netns};

/// Waits (bounded) for `sock` to deliver one datagram.
fn recv_one(sock: &UdpSocket, buf: &mut [u8], limit: Duration) -> RecvMeta {
    let mut p = Poller::new();
    let t = p.add(sock.as_fd(), Interest::Readable);
    let deadline = Deadline::after(limit);
    while !deadline.passed() {
        match sock.recv_from(buf) {
            Ok(m) => return m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                p.wait(Some(Duration::from_millis(100))).expect("poll");
                let _ready = p.is_readable(t);
            }
            Err(e) => panic!("recv_from: {e}"),
        }
    }
    panic!("no datagram within {limit:?}");
}

/// IPv4 header checksum (RFC 791), header given with its checksum field zero.
fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP packet with UDP checksum 0 (allowed for IPv4).
fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 only")
    };
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0]);
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&s.ip().octets());
    p.extend_from_slice(&d.ip().octets());
    let c = ip_checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&s.port().to_be_bytes());
    p.extend_from_slice(&d.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

#[test]
fn tun_carries_udp_both_ways() {
    let ns = Netns::new("tun");
    ns.run(Duration::from_secs(20), || {
        let local = Ipv4Addr::new(198, 18, 10, 1);
        let remote = SocketAddr::from((Ipv4Addr::new(198, 18, 10, 2), 9999));
        // Offloads off: one bare IP packet per read and per write.
        let mut tun = OffloadTun::open(&OffloadTunConfig {
            tun: TunConfig {
                name: "tun".into(),
                address: local,
                prefix: 24,
                mtu: 1400,
            },
            offload: OffloadMode::Off,
            multi_queue: false,
        })
        .expect("open tun");
        assert!(!tun.offload().enabled());
        assert!(
            tun.name().starts_with("tun"),
            "kernel-picked name: {}",
            tun.name()
        );
        assert_eq!(tun.mtu(), 1400);
        let out = Command::new("ip")
            .args(["-o", "addr", "show", "dev", tun.name()])
            .output()
            .expect("ip addr");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("198.18.10.1/24"),
            "address on {}: {text}",
            tun.name()
        );

        let sock = UdpSocket::bind(&UdpBind {
            family: UdpFamily::V4,
            local: Some(local.into()),
            port: 0,
            sndbuf: None,
            rcvbuf: None,
        })
        .expect("bind");
        assert_eq!(sock.send_to(b"hello warren", remote).expect("send"), 12);

        // The kernel routes 198.18.10.0/24 through the tun: read the IP packet back.
        let mut p = Poller::new();
        let t = p.add(tun.as_fd(), Interest::Readable);
        let mut bufs = [[0u8; 2000]];
        let mut sizes = [0usize];
        let deadline = Deadline::after(Duration::from_secs(5));
        let mut found = None;
        let mut seen = 0;
        while found.is_none() && !deadline.passed() && seen < 100 {
            p.wait(Some(Duration::from_millis(200))).expect("poll");
            if !p.is_readable(t) {
                continue;
            }
            loop {
                match tun.recv_batch(&mut bufs, &mut sizes, 0) {
                    Ok(got) => {
                        assert_eq!(got, 1, "one packet per read without offloads");
                        seen += 1;
                        let n = sizes[0];
                        let pkt = &bufs[0][..n];
                        // Skip anything else the kernel sends (IPv6 router solicitations...).
                        if n >= 28
                            && pkt[0] >> 4 == 4
                            && pkt[9] == 17
                            && pkt[16..20] == [198, 18, 10, 2]
                        {
                            found = Some(pkt.to_vec());
                            break;
                        }
                    }
                    Err(TunBatchError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("tun recv: {e}"),
                }
            }
        }
        let pkt = found.expect("UDP packet on the tun within 5 s");
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        assert_eq!(pkt[12..16], local.octets());
        assert_eq!(u16::from_be_bytes([pkt[ihl + 2], pkt[ihl + 3]]), 9999);
        let sport = u16::from_be_bytes([pkt[ihl], pkt[ihl + 1]]);
        assert_eq!(sport, sock.local_addr().port());
        assert_eq!(&pkt[ihl + 8..], b"hello warren");

        // And the other way: a packet written to the tun reaches the socket.
        let reply = udp_packet(remote, sock.local_addr(), b"hello back");
        let sent = tun.send_batch(&[&reply]).expect("tun send");
        assert_eq!((sent.packets, sent.writes, sent.dropped), (1, 1, 0));
        let mut rbuf = [0u8; 100];
        let m = recv_one(&sock, &mut rbuf, Duration::from_secs(5));
        assert_eq!(m.addr, remote);
        assert_eq!(&rbuf[..m.len], b"hello back");
    });
}

#[test]
fn udp_batch_and_truncation_on_loopback() {
    let ns = Netns::new("udp");
    ns.run(Duration::from_secs(20), || {
        let b = UdpBind {
            family: UdpFamily::V4,
            local: Some(Ipv4Addr::LOCALHOST.into()),
            port: 0,
            sndbuf: Some(0),
            rcvbuf: None,
        };
        let a = UdpSocket::bind(&b).expect("bind a");
        let c = UdpSocket::bind(&b).expect("bind c");
        assert!(!a.is_dual_stack());
        assert!(a.buffer_sizes().0 > 0);
        let mut bufs = vec![vec![0u8; 64]; 8];
        let mut metas = vec![RecvMeta::default(); 8];
        assert_eq!(a.recv_batch(&mut bufs, &mut metas).expect("empty"), 0);
        for i in 0..3u8 {
            assert_eq!(c.send_to(&[i; 10], a.local_addr()).expect("send"), 10);
        }
        c.send_to(&[9u8; 100], a.local_addr()).expect("send big");
        let mut got = 0;
        for _ in 0..200 {
            got += a
                .recv_batch(&mut bufs[got..], &mut metas[got..])
                .expect("recv");
            if got == 4 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got, 4);
        for (i, m) in metas[..3].iter().enumerate() {
            assert_eq!(m.addr, c.local_addr());
            assert_eq!(m.len, 10);
            assert!(!m.truncated);
            assert_eq!(bufs[i][..10], [i as u8; 10]);
        }
        assert_eq!(metas[3].len, 64);
        assert!(metas[3].truncated);
        let e = a
            .send_to(b"x", "[2001:db8::1]:1".parse().expect("addr"))
            .expect_err("v6 on a v4 socket");
        assert_eq!(e.raw_os_error(), Some(libc::EAFNOSUPPORT));
    });
}

#[test]
fn dual_stack_socket_speaks_plain_ipv4() {
    let ns = Netns::new("dual");
    ns.run(Duration::from_secs(20), || {
        let s = UdpSocket::bind(&UdpBind {
            family: UdpFamily::Any,
            local: None,
            port: 0,
            sndbuf: None,
            rcvbuf: None,
        })
        .expect("bind [::]");
        if !s.local_addr().is_ipv6() {
            eprintln!("no IPv6 on this host: dual-stack test skipped");
            return;
        }
        assert!(s.is_dual_stack());
        let peer = UdpSocket::bind(&UdpBind {
            family: UdpFamily::V4,
            local: Some(Ipv4Addr::LOCALHOST.into()),
            port: 0,
            sndbuf: None,
            rcvbuf: None,
        })
        .expect("peer");
        peer.send_to(
            b"ping",
            SocketAddr::from((Ipv4Addr::LOCALHOST, s.local_addr().port())),
        )
        .expect("send");
        let mut buf = [0u8; 16];
        let m = recv_one(&s, &mut buf, Duration::from_secs(5));
        assert_eq!(
            m.addr,
            peer.local_addr(),
            "v4-mapped sender normalised to IPv4"
        );
        assert_eq!(&buf[..m.len], b"ping");
        s.send_to(b"pong", m.addr)
            .expect("send to an IPv4 address from [::]");
        let m = recv_one(&peer, &mut buf, Duration::from_secs(5));
        assert_eq!(&buf[..m.len], b"pong");
    });
}
