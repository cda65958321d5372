//! Issue 11, client part: `<connection>` profiles and automatic UDP → TCP fallback.
//!
//! A zero-config `warren server --tcp 1443` serves UDP 1194 and TCP 1443; the user's
//! profile comes from `warren profile export --fallback-tcp 1443` (UDP blocks first, then
//! TCP, `server-poll-timeout 10`). In the client's namespace an nftables rule drops every
//! UDP datagram to port 1194, as a network that blocks UDP would:
//!
//! * `warren client` gives up on UDP after the poll timeout and comes up over TCP within
//!   that timeout plus a bound; ping works. With the rule gone and the server restarted,
//!   the client starts again from the first connection and is back on UDP;
//! * the stock `openvpn` 2.6 client with the very same profile falls back to TCP too.
//!
//! Needs root: network namespaces and nftables (see `common`).
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;
use crate::state_common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::lab::{Client, Lab, ServerKind};
use common::netns::{Netns, ping_ok};
use state_common::{PORT, SERVER_VPN_IP, Warren, ZeroServer};

const TCP_PORT: u16 = 1443;
/// The profile's `server-poll-timeout` (`FALLBACK_POLL_TIMEOUT` in profile.rs).
const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the TCP attempt may take once UDP is given up (handshake, push, tun).
const TCP_BOUND: Duration = Duration::from_secs(15);

/// Drops every UDP datagram the namespace sends to `port` (nftables table `warren_fb`,
/// gone with the namespace).
fn block_udp(ns: &Netns, port: u16) {
    ns.exec_ok(&["nft", "add", "table", "inet", "warren_fb"]);
    ns.exec_ok(&[
        "nft",
        "add chain inet warren_fb out { type filter hook output priority 0 ; policy accept ; }",
    ]);
    ns.exec_ok(&[
        "nft",
        "add",
        "rule",
        "inet",
        "warren_fb",
        "out",
        "udp",
        "dport",
        port.to_string().as_str(),
        "counter",
        "drop",
    ]);
}

fn unblock_udp(ns: &Netns) {
    ns.exec_ok(&["nft", "delete", "table", "inet", "warren_fb"]);
}

/// The packets the drop rule has dropped so far.
fn dropped(ns: &Netns) -> u64 {
    let out = ns.exec_ok(&["nft", "list", "table", "inet", "warren_fb"]);
    out.split("packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The zero-config server with a TCP listener and one user, `alice`.
fn server(lab: &Lab) -> (Warren, ZeroServer) {
    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    let server = ZeroServer::start(lab, &state, &["--tcp", &TCP_PORT.to_string()]);
    assert!(lab.server_ns.tcp_port_bound(TCP_PORT), "{}", server.log());
    w.add_user("alice", &[]);
    (w, server)
}

/// `warren profile export alice --remote SRV --fallback-tcp 1443`, written for `name`.
fn fallback_profile(lab: &Lab, w: &Warren, name: &str, srv: &str) -> (std::path::PathBuf, String) {
    let text = w.export("alice", srv, &["--fallback-tcp", &TCP_PORT.to_string()]);
    assert!(
        text.contains(&format!(
            "<connection>\nremote {srv} {PORT} udp\n</connection>\n<connection>\nremote {srv} {TCP_PORT} tcp-client\n</connection>"
        )),
        "{text}"
    );
    state_common::write_profile(lab, name, &text, None)
}

#[test]
fn warren_client_falls_back_to_tcp_and_back_to_udp() {
    let mut lab = Lab::p256("fb-warren", ServerKind::Warren);
    let (w, server) = server(&lab);
    let (ns, srv, _cli) = lab.new_peer_ns();
    let _etc = client_common::NsEtc::new(&ns);
    let (profile, dev) = fallback_profile(&lab, &w, "alice", &srv);
    block_udp(&ns, PORT);

    let started = Instant::now();
    let mut client = client_common::spawn_profile(&lab, &ns, "alice-warren", &profile, &[]);
    let up = client
        .wait_for_line(client_common::UP, POLL_TIMEOUT + TCP_BOUND)
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    let took = started.elapsed();
    assert!(
        up.contains(&format!("via server {srv}:{TCP_PORT}")),
        "not over TCP: {up}"
    );
    assert!(
        took >= POLL_TIMEOUT - Duration::from_secs(1),
        "up after {took:?}, before the poll timeout: UDP was not tried first"
    );
    let text = client.log();
    assert!(
        text.contains(&format!(
            "no answer from {srv}:{PORT} within 10 s (server-poll-timeout)"
        )),
        "{text}"
    );
    assert!(
        dropped(&ns) > 0,
        "the UDP attempt never reached the drop rule"
    );
    assert!(
        common::netns::Netns::ipv4_addr(&ns, &dev).is_some(),
        "no address on {dev}"
    );
    ping_ok(&ns, SERVER_VPN_IP, "client -> server over TCP");

    // UDP works again; the server restarts. The TCP session ends, and the client starts
    // again from the first connection: UDP.
    unblock_udp(&ns);
    server.stop();
    let state = lab.dir().join("state");
    let server = ZeroServer::start(&lab, &state, &["--tcp", &TCP_PORT.to_string()]);
    let again = client
        .wait_for_line(client_common::RECONNECTED, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    assert!(
        again.contains(&format!("via server {srv}:{PORT}")),
        "not back on UDP: {again}"
    );
    ping_ok(&ns, SERVER_VPN_IP, "client -> server over UDP again");
    client.terminate(Duration::from_secs(5));
    assert!(
        client.exited().is_some_and(|s| s.success()),
        "{}",
        client.log_tail(20)
    );
    server.stop();
}

#[test]
fn stock_client_falls_back_to_tcp_with_the_same_profile() {
    let mut lab = Lab::p256("fb-stock", ServerKind::Warren);
    let (w, server) = server(&lab);
    let (ns, srv, cli) = lab.new_peer_ns();
    let (profile, dev) = fallback_profile(&lab, &w, "alice", &srv);
    block_udp(&ns, PORT);

    let started = Instant::now();
    let proc = state_common::start_openvpn(&lab, &ns, "alice-stock", Path::new(&profile));
    let mut client = Client {
        proc,
        ns,
        name: "alice-stock".into(),
        dev,
        server_underlay: srv.clone(),
        client_underlay: cli,
        tun_addr: None,
    };
    if let Err(e) = client.wait_connected(POLL_TIMEOUT + TCP_BOUND) {
        panic!("{e}\nserver log:\n{}", server.log());
    }
    let took = started.elapsed();
    let log = client.log();
    assert!(log.contains("Server poll timeout, restarting"), "{log}");
    assert!(log.contains("TCP connection established"), "{log}");
    assert!(
        took >= POLL_TIMEOUT - Duration::from_secs(1),
        "connected after {took:?}: UDP was not tried first\n{log}"
    );
    assert!(
        dropped(&client.ns) > 0,
        "the UDP attempt never reached the drop rule"
    );
    ping_ok(&client.ns, SERVER_VPN_IP, "stock client -> server over TCP");
    let slog = server.log();
    assert!(slog.contains("login accepted user=\"alice\""), "{slog}");
    server.stop();
}
