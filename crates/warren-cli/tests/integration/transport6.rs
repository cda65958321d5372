//! Issue 11, the transport gaps: an IPv6 underlay and roaming (`float`).
//!
//! * IPv6 underlay (2001:db8:K::/64 documentation addresses on the veth link, next to the
//!   usual 198.18.K.0/24): the stock client with `proto udp6` / `tcp6-client` to a warren
//!   server with `proto udp6` / `tcp6-server`; a dual-stack `proto udp` / `tcp-server`
//!   server taking an IPv4 and an IPv6 client at once; `warren client` over IPv6 (UDP and
//!   TCP) to the stock server and to warren's;
//! * roaming over UDP: the client namespace's address changes mid-session (the old one is
//!   deleted, a new one added) and the session continues without a new handshake, for
//!   the stock client against warren (the server floats the peer on an authenticated
//!   P_DATA_V2, openvpn-ops.md) and for `warren client` against both servers.
//!
//! Needs root (network namespaces) and `openvpn`, `ping`, `ip`, `ss`.

#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;

use std::fs;
use std::time::Duration;

use client_common::{NsEtc, Prepared, WarrenClient};
use common::conf::ClientConf;
use common::lab::{CONNECT_TIMEOUT, Client, Lab, MB, SERVER_TUN_ADDR, ServerKind};
use common::netns::{Netns, ping_ok};
use common::process::{poll_until, tail};

/// A client namespace linked to the server namespace with IPv4 (198.18.K.0/24) and IPv6
/// (2001:db8:K::/64) on the same veth pair.
struct Peer {
    ns: Netns,
    /// The veth end in the client namespace.
    dev: String,
    k: u32,
    srv4: String,
    cli4: String,
    srv6: String,
    cli6: String,
}

/// The name of the interface in `ns` that carries the IPv4 address `addr`.
fn dev_with_addr(ns: &Netns, addr: &str) -> String {
    let out = ns.exec_ok(&["ip", "-o", "-4", "addr", "show", "to", addr]);
    out.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no interface with {addr} in {}: {out}", ns.name()))
        .to_owned()
}

fn peer(lab: &mut Lab) -> Peer {
    let (ns, srv4, cli4) = lab.new_peer_ns();
    let k: u32 = srv4
        .split('.')
        .nth(2)
        .and_then(|o| o.parse().ok())
        .expect("198.18.K.1");
    let srv6 = format!("2001:db8:{k}::1");
    let cli6 = format!("2001:db8:{k}::2");
    let srv_dev = dev_with_addr(&lab.server_ns, &srv4);
    let dev = dev_with_addr(&ns, &cli4);
    // nodad: usable at once, no duplicate address detection delay.
    lab.server_ns.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{srv6}/64"),
        "dev",
        &srv_dev,
        "nodad",
    ]);
    ns.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{cli6}/64"),
        "dev",
        &dev,
        "nodad",
    ]);
    ping_ok(&ns, &srv6, "IPv6 underlay");
    Peer {
        ns,
        dev,
        k,
        srv4,
        cli4,
        srv6,
        cli6,
    }
}

/// Starts the stock client with `conf` (remote `remote`) in the peer's namespace and waits
/// until it is connected.
fn stock_client(lab: &mut Lab, name: &str, p: Peer, mut conf: ClientConf, v6: bool) -> Client {
    let (srv, cli) = if v6 {
        (p.srv6.clone(), p.cli6.clone())
    } else {
        (p.srv4.clone(), p.cli4.clone())
    };
    conf.remote.0 = srv.clone();
    let path = lab.dir().join(format!("{name}.conf"));
    conf.write(&path);
    let log = lab.dir().join(format!("{name}.log"));
    let conf_s = path.to_str().expect("UTF-8 path").to_owned();
    let dir = lab.dir().to_path_buf();
    let proc =
        p.ns.spawn_env(name, &["openvpn", "--config", &conf_s], &[], &dir, &log);
    let mut c = Client {
        proc,
        ns: p.ns,
        name: name.to_owned(),
        dev: conf.dev.clone(),
        server_underlay: srv,
        client_underlay: cli,
        tun_addr: None,
    };
    if let Err(e) = c.wait_connected(CONNECT_TIMEOUT) {
        panic!(
            "client {name} did not connect to the {} server: {e}\nserver log:\n{}",
            lab.kind.label(),
            tail(&lab.server_log(), 40)
        );
    }
    c
}

/// Starts `warren client` with `conf` in the peer's namespace and waits until it is up.
fn warren_client(
    lab: &mut Lab,
    name: &str,
    p: Peer,
    mut conf: ClientConf,
    v6: bool,
) -> WarrenClient {
    let (srv, cli) = if v6 {
        (p.srv6.clone(), p.cli6.clone())
    } else {
        (p.srv4.clone(), p.cli4.clone())
    };
    conf.remote.0 = srv.clone();
    let etc = NsEtc::new(&p.ns);
    let prepared = Prepared {
        ns: p.ns,
        etc,
        conf,
        srv,
        cli,
    };
    let mut c = client_common::spawn_client(lab, name, prepared, &[]);
    c.expect_up(lab, client_common::UP_TIMEOUT);
    c
}

/// The status file lists every `want` string (within 5 s).
fn status_lists(lab: &Lab, want: &[&str]) {
    let status = lab.dir().join("status.txt");
    let found = poll_until(Duration::from_secs(5), || {
        let text = fs::read_to_string(&status).ok()?;
        want.iter().all(|w| text.contains(w)).then_some(())
    });
    assert!(
        found.is_some(),
        "status file does not list {want:?}:\n{}",
        fs::read_to_string(&status).unwrap_or_else(|e| e.to_string())
    );
}

/// A server of `kind` with the extra `server` lines; one client per `(proto line, v6)`
/// over the underlay of that family. Each client pings both ways and moves 2 MB up and
/// 1 MB down, SHA-256-checked.
fn stock_clients(name: &str, kind: ServerKind, server: &[&str], clients: &[(&str, bool)]) {
    let mut lab = Lab::p256(name, kind);
    let mut sc = lab.server_conf();
    sc.extra.extend(server.iter().map(|s| s.to_string()));
    lab.start_server(&sc);
    let mut conns = Vec::new();
    for (i, (proto, v6)) in clients.iter().enumerate() {
        let p = peer(&mut lab);
        let mut cc = lab.client_conf(&lab.pki.clients[i].clone());
        cc.extra.push(format!("proto {proto}"));
        let c = stock_client(&mut lab, &format!("client{i}"), p, cc, *v6);
        conns.push(c);
    }
    for c in &conns {
        lab.check_tunnel(&c.ns, c.addr(), 2 * MB, MB);
    }
    if kind == ServerKind::Warren {
        let mut want: Vec<&str> = conns.iter().map(|c| c.client_underlay.as_str()).collect();
        want.extend(conns.iter().map(|c| c.addr()));
        status_lists(&lab, &want);
    }
    lab.assert_server_running();
}

mod cases {
    use super::*;

    pub fn stock_client_udp6(kind: ServerKind) {
        stock_clients("udp6", kind, &["proto udp6"], &[("udp6", true)]);
    }

    pub fn stock_client_tcp6(kind: ServerKind) {
        stock_clients(
            "tcp6",
            kind,
            &["proto tcp6-server"],
            &[("tcp6-client", true)],
        );
    }

    /// `proto udp6` without `local`: one dual-stack socket takes an IPv4 client (v4-mapped)
    /// and an IPv6 client (openvpn-ops.md §3.6).
    pub fn dual_stack_udp6(kind: ServerKind) {
        stock_clients(
            "udp6-dual",
            kind,
            &["proto udp6"],
            &[("udp", false), ("udp6", true)],
        );
    }

    /// `proto tcp6-server`: one dual-stack listener takes an IPv4 and an IPv6 client.
    pub fn dual_stack_tcp6(kind: ServerKind) {
        stock_clients(
            "tcp6-dual",
            kind,
            &["proto tcp6-server"],
            &[("tcp-client", false), ("tcp6-client", true)],
        );
    }

    /// `warren client` over the IPv6 underlay with `proto` (server `server_proto`).
    fn warren_client6(kind: ServerKind, server_proto: &str, proto: &str) {
        let mut lab = Lab::p256(&format!("w{proto}"), kind);
        let mut sc = lab.server_conf();
        sc.extra.push(format!("proto {server_proto}"));
        lab.start_server(&sc);
        let p = peer(&mut lab);
        let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
        cc.extra.push(format!("proto {proto}"));
        let mut c = warren_client(&mut lab, "wclient", p, cc, true);
        lab.check_tunnel(&c.ns, c.addr(), 2 * MB, MB);
        c.stop_cleanly();
        lab.assert_server_running();
    }

    pub fn warren_client_udp6(kind: ServerKind) {
        warren_client6(kind, "udp6", "udp6");
    }

    pub fn warren_client_tcp6(kind: ServerKind) {
        warren_client6(kind, "tcp6-server", "tcp6-client");
    }

    /// `warren client` with plain `proto udp` and an IPv6 remote address.
    pub fn warren_client_udp_v6_remote(kind: ServerKind) {
        warren_client6(kind, "udp6", "udp");
    }

    /// Moves the peer's IPv4 address from 198.18.K.2 to 198.18.K.3 (on the same link).
    fn move_address(ns: &Netns, dev: &str, k: u32) -> String {
        let new = format!("198.18.{k}.3");
        ns.exec_ok(&["ip", "addr", "del", &format!("198.18.{k}.2/24"), "dev", dev]);
        ns.exec_ok(&["ip", "addr", "add", &format!("{new}/24"), "dev", dev]);
        new
    }

    /// Pings `dst` from `ns` until one comes back (at most `limit`).
    fn ping_within(ns: &Netns, dst: &str, limit: Duration) -> bool {
        poll_until(limit, || ns.ping(dst, 1, 1).success().then_some(())).is_some()
    }

    /// The stock client's address changes mid-session: the session continues (no second
    /// handshake), the server's status shows the new address.
    pub fn stock_client_floats(kind: ServerKind) {
        let mut lab = Lab::p256("float", kind);
        let sc = lab.server_conf();
        lab.start_server(&sc);
        let p = peer(&mut lab);
        let (dev, k) = (p.dev.clone(), p.k);
        let cc = lab.client_conf(&lab.pki.clients[0].clone());
        let c = stock_client(&mut lab, "client0", p, cc, false);
        ping_ok(&c.ns, SERVER_TUN_ADDR, "before the move");
        let new = move_address(&c.ns, &dev, k);
        assert!(
            ping_within(&c.ns, SERVER_TUN_ADDR, Duration::from_secs(20)),
            "no traffic after the client's address moved to {new}\nclient:\n{}\nserver:\n{}",
            c.proc.log_tail(30),
            tail(&lab.server_log(), 30)
        );
        lab.check_tunnel(&c.ns, c.addr(), MB, MB);
        assert_eq!(
            c.count(common::lab::CONNECTED),
            1,
            "the client reconnected instead of floating:\n{}",
            c.proc.log_tail(30)
        );
        if kind == ServerKind::Warren {
            status_lists(&lab, &[&format!("{new}:"), c.addr()]);
            let log = lab.server_log();
            assert!(log.contains("floated"), "{}", tail(&log, 30));
        }
        lab.assert_server_running();
    }

    /// `warren client`'s own address changes mid-session: its tunnel keeps working.
    pub fn warren_client_roams(kind: ServerKind) {
        let mut lab = Lab::p256("wroam", kind);
        let sc = lab.server_conf();
        lab.start_server(&sc);
        let p = peer(&mut lab);
        let (dev, k) = (p.dev.clone(), p.k);
        let cc = lab.client_conf(&lab.pki.clients[0].clone());
        let mut c = warren_client(&mut lab, "wclient", p, cc, false);
        let addr = c.addr().to_owned();
        ping_ok(&c.ns, SERVER_TUN_ADDR, "before the move");
        let new = move_address(&c.ns, &dev, k);
        assert!(
            ping_within(&c.ns, SERVER_TUN_ADDR, Duration::from_secs(20)),
            "no traffic after the client's address moved to {new}\nclient:\n{}\nserver:\n{}",
            c.proc.log_tail(30),
            tail(&lab.server_log(), 30)
        );
        lab.check_tunnel(&c.ns, &addr, MB, MB);
        assert_eq!(
            c.ns.ipv4_addr(&c.dev).as_deref(),
            Some(addr.as_str()),
            "the tunnel address changed"
        );
        assert_eq!(
            c.count(client_common::RECONNECTED),
            0,
            "the client reconnected instead of roaming:\n{}",
            c.proc.log_tail(30)
        );
        if kind == ServerKind::Warren {
            status_lists(&lab, &[&format!("{new}:")]);
        }
        c.stop_cleanly();
        lab.assert_server_running();
    }
}

against_both!(
    stock_client_udp6,
    stock_client_tcp6,
    dual_stack_udp6,
    dual_stack_tcp6,
    warren_client_udp6,
    warren_client_tcp6,
    warren_client_udp_v6_remote,
    stock_client_floats,
    warren_client_roams,
);

/// warren's `proto udp` / `proto tcp-server` without `local` listen dual-stack (`[::]`
/// without IPV6_V6ONLY, warren-io `UdpFamily::Any`): an IPv4 and an IPv6 client on one
/// socket. The stock 2.6.14 server binds IPv4 only there ("UDPv4 link local (bound):
/// [AF_INET][undef]:1194"; an IPv6 client gets ECONNREFUSED), so these run against warren
/// only; `dual_stack_udp6` / `dual_stack_tcp6` are the stock-comparable cases.
#[test]
fn warren_proto_udp_is_dual_stack() {
    stock_clients(
        "udp-dual",
        ServerKind::Warren,
        &["proto udp"],
        &[("udp", false), ("udp6", true)],
    );
}

#[test]
fn warren_proto_tcp_server_is_dual_stack() {
    stock_clients(
        "tcp-dual",
        ServerKind::Warren,
        &["proto tcp-server"],
        &[("tcp-client", false), ("tcp6-client", true)],
    );
}
