//! Steered `SO_REUSEPORT` groups ([`bind_steered`]), each test inside a network namespace it
//! creates and deletes.
//!
//! Datagrams shaped like OpenVPN packets are sent from a client socket to the group, and
//! each must arrive on exactly the socket [`datagram_index`] names.
//!
//! Safety rules as in `netns.rs`: loopback addresses only, every wait bounded, the
//! namespace deleted by a `Drop` guard, also when the test panics.
use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use warren_core::PeerId;
use warren_io::{
    BatchMeta, BatchUdp, BindError, GRO_BUFFER, Interest, Poller, SteerError, UdpBind, UdpFamily,
    UdpSocket, bind_steered, datagram_index, steered_index,
};

use crate::common;
use common::{Deadline, Netns, run};

fn bind_spec(family: UdpFamily, local: Option<IpAddr>, port: u16) -> UdpBind {
    UdpBind {
        family,
        local,
        port,
        sndbuf: None,
        rcvbuf: None,
    }
}

/// The test datagrams: P_DATA_V2 for peers 0..30 (all key ids), a few large peer ids,
/// control packets, P_DATA_V1 and short ones. Every datagram is different, so that each
/// can be found again on arrival.
fn datagrams() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (seq, peer) in (0u32..30)
        .chain([0x12_3456, 0xff_fffe, 0xff_ffff])
        .enumerate()
    {
        let [_, a, b, c] = peer.to_be_bytes();
        let kid = (seq % 8) as u8;
        // opcode/kid, peer id, packet id, then a tag standing in for the ciphertext.
        let mut d = vec![0x48 | kid, a, b, c];
        d.extend_from_slice(&(seq as u32 + 1).to_be_bytes());
        d.extend_from_slice(&[0xd0; 16]);
        out.push(d);
    }
    // P_CONTROL_HARD_RESET_CLIENT_V2 (0x38) with a session id and packet id.
    out.push(vec![0x38, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0]);
    // P_CONTROL_V1 (0x20 | kid 1), P_ACK_V1 (0x28), P_CONTROL_HARD_RESET_CLIENT_V3 (0x50),
    // P_CONTROL_WKC_V1 (0x58): bytes 1..4 would name peer 2 if they were read.
    out.push(vec![0x21, 0, 0, 2, 9, 9, 9, 9]);
    out.push(vec![0x28, 0, 0, 2, 1]);
    out.push(vec![0x50, 0, 0, 2, 7, 7]);
    out.push(vec![0x58, 0, 0, 2, 6, 6, 6]);
    // P_DATA_V1 (0x30): no peer id, however bytes 1..4 look.
    out.push(vec![0x30, 0, 0, 1, 0, 0, 0, 1, 0xaa]);
    // Short and garbage datagrams.
    out.push(vec![0x48, 0x01]);
    out.push(vec![0x48, 0, 1]);
    out.push(vec![0x49]);
    out.push(vec![]);
    out.push(vec![0xff; 40]);
    out
}

/// Receives on every socket until `want` datagrams arrived in total (bounded), then waits a
/// little longer for strays. Returns (socket index, datagram) pairs.
fn receive_all(socks: &[UdpSocket], want: usize, limit: Duration) -> Vec<(usize, Vec<u8>)> {
    let mut poller = Poller::new();
    let tokens: Vec<_> = socks
        .iter()
        .map(|s| poller.add(s.as_fd(), Interest::Readable))
        .collect();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Deadline::after(limit);
    let mut grace: Option<Deadline> = None;
    loop {
        let mut any = false;
        for (i, s) in socks.iter().enumerate() {
            loop {
                match s.recv_from(&mut buf) {
                    Ok(m) => {
                        assert!(!m.truncated);
                        got.push((i, buf[..m.len].to_vec()));
                        any = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("recv_from on socket {i}: {e}"),
                }
            }
        }
        if got.len() >= want && grace.is_none() {
            grace = Some(Deadline::after(Duration::from_millis(200)));
        }
        if grace.as_ref().is_some_and(|g| g.passed()) || deadline.passed() {
            return got;
        }
        if !any {
            poller.wait(Some(Duration::from_millis(50))).expect("poll");
            let _ = tokens.iter().any(|t| poller.is_readable(*t));
        }
    }
}

/// Sends every test datagram to `to` from `client` and checks where each one landed.
fn check_steering(group: &[UdpSocket], client: &UdpSocket, to: SocketAddr) {
    let n = group.len();
    let sent = datagrams();
    for d in &sent {
        assert_eq!(client.send_to(d, to).expect("send"), d.len());
    }
    let got = receive_all(group, sent.len(), Duration::from_secs(10));
    let mut landed: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (i, d) in got {
        landed.entry(d).or_default().push(i);
    }
    let mut per_socket = vec![0usize; n];
    for d in &sent {
        let want = datagram_index(d, n);
        assert!(want < n);
        match landed.remove(d) {
            Some(at) => assert_eq!(at, vec![want], "datagram {d:02x?} landed on {at:?}"),
            None => panic!("datagram {d:02x?} never arrived (expected on socket {want})"),
        }
        per_socket[want] += 1;
    }
    assert!(landed.is_empty(), "unexpected datagrams: {landed:?}");
    // The test set reaches every socket of the group.
    assert!(
        per_socket.iter().all(|&c| c > 0),
        "per socket: {per_socket:?}"
    );
}

#[test]
fn steers_by_peer_id_on_ipv4() {
    let ns = Netns::new("steer4");
    ns.run(Duration::from_secs(30), || {
        let group = bind_steered(
            &bind_spec(UdpFamily::V4, Some(Ipv4Addr::LOCALHOST.into()), 0),
            3,
        )
        .expect("bind_steered");
        assert_eq!(group.len(), 3);
        let addr = group[0].local_addr();
        assert_ne!(addr.port(), 0, "ephemeral port resolved");
        for s in &group {
            assert_eq!(s.local_addr(), addr, "one address for the whole group");
        }
        let client = UdpSocket::bind(&bind_spec(
            UdpFamily::V4,
            Some(Ipv4Addr::LOCALHOST.into()),
            0,
        ))
        .expect("client");
        check_steering(&group, &client, addr);

        // A peer id's packets keep to one socket, also after the client floats to a new
        // address and port.
        let peer = PeerId::new(17).expect("peer id");
        let moved = UdpSocket::bind(&bind_spec(
            UdpFamily::V4,
            Some(Ipv4Addr::new(127, 0, 0, 2).into()),
            0,
        ))
        .expect("second client");
        for c in [&client, &moved] {
            c.send_to(&[0x48, 0, 0, 17, 0, 0, 0, 9], addr)
                .expect("send");
        }
        let got = receive_all(&group, 2, Duration::from_secs(10));
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(i, _)| *i == steered_index(peer, 3)));
    });
}

#[test]
fn steered_sockets_batch_on_dual_stack() {
    let ns = Netns::new("steer6");
    ns.run(Duration::from_secs(30), || {
        let group = bind_steered(&bind_spec(UdpFamily::Any, None, 0), 4).expect("bind_steered");
        let port = group[0].local_addr().port();
        if !group[0].local_addr().is_ipv6() {
            eprintln!("no IPv6 on this host: dual-stack steering test skipped");
            return;
        }
        assert!(group.iter().all(|s| s.is_dual_stack()));
        let v4 = UdpSocket::bind(&bind_spec(
            UdpFamily::V4,
            Some(Ipv4Addr::LOCALHOST.into()),
            0,
        ))
        .expect("v4 client");
        let v6 = UdpSocket::bind(&bind_spec(
            UdpFamily::V6,
            Some(Ipv6Addr::LOCALHOST.into()),
            0,
        ))
        .expect("v6 client");
        // Plain sockets first: IPv4 (v4-mapped) and IPv6 senders are steered alike.
        check_steering(&group, &v4, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        check_steering(&group, &v6, SocketAddr::from((Ipv6Addr::LOCALHOST, port)));

        // Then the same sockets as BatchUdp, as the data workers will hold them.
        let batch: Vec<BatchUdp> = group
            .into_iter()
            .map(|s| BatchUdp::new(s).expect("BatchUdp::new"))
            .collect();
        let mut expected = vec![0usize; batch.len()];
        for peer in 0u32..12 {
            let d = [0x48, 0, 0, peer as u8, 0, 0, 0, 1];
            v4.send_to(&d, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .expect("send");
            expected[datagram_index(&d, batch.len())] += 1;
        }
        let mut storage = vec![vec![0u8; GRO_BUFFER]; 4];
        let mut counts = vec![0usize; batch.len()];
        let deadline = Deadline::after(Duration::from_secs(10));
        while counts != expected && !deadline.passed() {
            for (i, b) in batch.iter().enumerate() {
                let mut bufs: Vec<IoSliceMut<'_>> =
                    storage.iter_mut().map(|v| IoSliceMut::new(v)).collect();
                let mut metas = [BatchMeta::default(); 4];
                match b.recv_batch(&mut bufs, &mut metas) {
                    Ok(k) => {
                        for (m, buf) in metas[..k].iter().zip(&bufs) {
                            for d in m.datagrams(buf) {
                                assert_eq!(datagram_index(d, batch.len()), i, "{d:02x?}");
                                assert_eq!(m.addr, v4.local_addr());
                                counts[i] += 1;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("recv_batch: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(counts, expected);
    });
}

#[test]
fn one_socket_is_a_plain_bind() {
    let ns = Netns::new("steer1");
    ns.run(Duration::from_secs(20), || {
        let spec = bind_spec(UdpFamily::V4, Some(Ipv4Addr::LOCALHOST.into()), 0);
        let group = bind_steered(&spec, 1).expect("bind_steered(1)");
        assert_eq!(group.len(), 1);
        let addr = group[0].local_addr();
        // No SO_REUSEPORT: nothing else binds the port, not even another steered group.
        let same = bind_spec(UdpFamily::V4, Some(addr.ip()), addr.port());
        assert!(matches!(
            bind_steered(&same, 2),
            Err(SteerError::Bind(BindError::InUse { .. }))
        ));
        let client =
            UdpSocket::bind(&bind_spec(UdpFamily::V4, Some(addr.ip()), 0)).expect("client");
        check_steering(&group, &client, addr);
    });
}

#[test]
fn a_group_cannot_be_joined_by_another_bind() {
    let ns = Netns::new("steerx");
    ns.run(Duration::from_secs(20), || {
        let spec = bind_spec(UdpFamily::V4, Some(Ipv4Addr::LOCALHOST.into()), 0);
        let group = bind_steered(&spec, 2).expect("bind_steered");
        let addr = group[0].local_addr();
        let same = bind_spec(UdpFamily::V4, Some(addr.ip()), addr.port());
        // A plain socket (no SO_REUSEPORT) and a second steered group (whose first socket
        // carries its program before bind) are both refused.
        assert!(matches!(
            UdpSocket::bind(&same),
            Err(BindError::InUse { .. })
        ));
        assert!(matches!(
            bind_steered(&same, 2),
            Err(SteerError::Bind(BindError::InUse { .. }))
        ));
        // The failed attempts left the group whole.
        let client = UdpSocket::bind(&spec).expect("client");
        check_steering(&group, &client, addr);
    });
}

/// With every ephemeral port held by a same-user `SO_REUSEPORT` socket, an unsteered
/// reuseport bind to port 0 would join one of them; `bind_steered` must not.
#[test]
fn ephemeral_port_never_joins_a_foreign_group() {
    let ns = Netns::new("steere");
    run(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_local_port_range=40000 40001",
        ],
    );
    ns.run(Duration::from_secs(20), || {
        let reuseport_socket = |port: u16| {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("socket");
            s.set_reuse_port(true).expect("SO_REUSEPORT");
            s.bind(&SockAddr::from(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                port,
            ))))
            .map(|()| s)
        };
        let _held: Vec<Socket> = [40000, 40001]
            .into_iter()
            .map(|p| reuseport_socket(p).expect("hold a port"))
            .collect();
        // The control: a plain reuseport socket on port 0 does share a held port.
        let joined = reuseport_socket(0).expect("unsteered reuseport bind to port 0");
        let port = joined
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port());
        assert!(matches!(port, Some(40000 | 40001)), "joined {port:?}");
        drop(joined);
        // A steered group refuses to share: no free ephemeral port is EADDRINUSE.
        let spec = bind_spec(UdpFamily::V4, Some(Ipv4Addr::LOCALHOST.into()), 0);
        match bind_steered(&spec, 2) {
            Err(SteerError::Bind(BindError::InUse { .. })) => {}
            Ok(g) => panic!("steered group bound to {}", g[0].local_addr()),
            Err(e) => panic!("unexpected error: {e}"),
        }
    });
}
