//! Issue 13, "Topology": `topology net30` (OpenVPN 2.6's default for a `server` config
//! without a `topology` line) and `topology p2p`, in both roles, against the stock
//! `openvpn` 2.6.
//!
//! * warren server net30 (no `topology` line) + two stock clients with client-to-client:
//!   each pings the server and the other client, and moves checked data both ways.
//! * warren server p2p + a stock client.
//! * the stock server net30 / p2p + `warren client`.
//!
//! Needs root: network namespaces (see `common`).
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;

use client_common::connect_client;
use common::lab::{Lab, MB, ServerKind};
use common::netns::ping_ok;

/// Writes the lab's default `server.conf` with `topology` replaced by `topology` (None:
/// no `topology` line, OpenVPN 2.6's net30) and starts the server.
fn start_server(lab: &mut Lab, topology: Option<&str>, client_to_client: bool) {
    let mut sc = lab.server_conf();
    sc.client_to_client = client_to_client;
    let line = topology
        .map(|t| format!("topology {t}\n"))
        .unwrap_or_default();
    let text = sc.render().replace("topology subnet\n", &line);
    let path = lab.dir().join("server.conf");
    std::fs::write(&path, text).expect("write server.conf");
    lab.start_server_file(&path, sc.port);
}

/// The `PUSH_REPLY` a stock client logged (verb 4).
fn push_reply(log: &str) -> String {
    log.lines()
        .find_map(|l| l.split("PUSH: Received control message: '").nth(1))
        .map(|s| s.trim_end_matches('\'').to_owned())
        .unwrap_or_else(|| panic!("no PUSH_REPLY in the client log:\n{log}"))
}

fn octet(addr: &str) -> u32 {
    addr.rsplit('.')
        .next()
        .and_then(|o| o.parse().ok())
        .expect("ipv4")
}

/// warren server, no `topology` line: net30. Two stock clients get a /30 each (.6 with
/// peer .5, then .10 with peer .9), reach the server at .1 and, with client-to-client,
/// each other.
#[test]
fn warren_server_net30_two_stock_clients() {
    let mut lab = Lab::p256("topo-net30", ServerKind::Warren);
    start_server(&mut lab, None, true);
    let c1 = lab.connect_client("client1", lab.client_conf(&lab.pki.clients[0].clone()));
    let c2 = lab.connect_client("client2", lab.client_conf(&lab.pki.clients[1].clone()));
    let reply = push_reply(&c1.log());
    assert!(
        reply.contains("route 10.8.0.0 255.255.255.0,topology net30,ping 10,ping-restart 60,")
            && reply.contains(",ifconfig 10.8.0.6 10.8.0.5,"),
        "{reply}"
    );
    assert!(!reply.contains("route-gateway"), "{reply}");
    assert!(push_reply(&c2.log()).contains(",ifconfig 10.8.0.10 10.8.0.9,"));
    for c in [&c1, &c2] {
        assert_eq!(octet(c.addr()) % 4, 2, "{}", c.addr());
        lab.check_tunnel(&c.ns, c.addr(), 2 * MB, MB);
    }
    ping_ok(&c1.ns, c2.addr(), "client1 -> client2");
    ping_ok(&c2.ns, c1.addr(), "client2 -> client1");
    lab.assert_server_running();
}

/// warren server, `topology p2p`: one address per client from .4, peer the server's .1.
#[test]
fn warren_server_p2p_stock_client() {
    let mut lab = Lab::p256("topo-p2p", ServerKind::Warren);
    start_server(&mut lab, Some("p2p"), false);
    let c1 = lab.connect_client("client1", lab.client_conf(&lab.pki.clients[0].clone()));
    let reply = push_reply(&c1.log());
    assert!(
        reply.contains("topology p2p,") && reply.contains(",ifconfig 10.8.0.4 10.8.0.1,"),
        "{reply}"
    );
    assert_eq!(c1.addr(), "10.8.0.4");
    lab.check_tunnel(&c1.ns, c1.addr(), 2 * MB, MB);
    lab.assert_server_running();
}

fn warren_client_against_stock(topology: Option<&str>, name: &str, want_addr: &str) {
    let mut lab = Lab::p256(name, ServerKind::Openvpn);
    start_server(&mut lab, topology, false);
    let cc = lab.client_conf(&lab.pki.clients[0].clone());
    let mut client = connect_client(&mut lab, "client1", cc, &[]);
    assert_eq!(client.addr(), want_addr);
    lab.check_tunnel(&client.ns, client.addr(), 2 * MB, MB);
    client.stop_cleanly();
    lab.assert_server_running();
}

/// The stock server without a `topology` line (net30) and `warren client`.
#[test]
fn stock_server_net30_warren_client() {
    warren_client_against_stock(None, "topo-net30-client", "10.8.0.6");
}

/// The stock server with `topology p2p` and `warren client`.
#[test]
fn stock_server_p2p_warren_client() {
    warren_client_against_stock(Some("p2p"), "topo-p2p-client", "10.8.0.4");
}

/// The stock server and a stock client: what OpenVPN 2.6 pushes in net30 and p2p (the
/// unit tests of warren-openvpn compare warren's replies with these).
#[test]
fn stock_push_replies() {
    for (topology, c2c) in [(None, false), (None, true), (Some("p2p"), false)] {
        let mut lab = Lab::p256("topo-stock", ServerKind::Openvpn);
        start_server(&mut lab, topology, c2c);
        let c1 = lab.connect_client("client1", lab.client_conf(&lab.pki.clients[0].clone()));
        eprintln!("{topology:?} c2c={c2c}: {}", push_reply(&c1.log()));
        lab.check_tunnel(&c1.ns, c1.addr(), 0, 0);
    }
}
