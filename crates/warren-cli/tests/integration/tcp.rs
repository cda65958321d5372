//! Issue 11, OpenVPN over TCP: `proto tcp-server` / `tcp-client` against the stock Debian
//! `openvpn` 2.6, and one warren server serving UDP and TCP at once.
//!
//! * stock client (`proto tcp-client`) → warren server (`proto tcp-server`): tls-crypt
//!   and tls-auth, ping both ways, SHA-256-checked transfers both ways, status file;
//! * `warren client` over TCP → stock server (`proto tcp-server`), and → warren's;
//! * one warren server with `proto udp` and `warren-listen tcp PORT`: a stock UDP client
//!   and a stock TCP client at once, distinct addresses, both ping;
//! * zero-config `warren server --tcp PORT`: users from the state directory connect over
//!   UDP and TCP with exported profiles (`warren profile export --proto tcp`);
//! * a connection that sends a bad length prefix, or nothing at all, is closed and does
//!   not disturb a working client.
//!
//! Needs root: network namespaces (see `common`).
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;
use crate::state_common;

use std::fs;
use std::time::Duration;

use common::conf::{ClientConf, TlsWrap};
use common::lab::{Lab, MB, SERVER_PORT, SERVER_TUN_ADDR, ServerKind, Transfer};
use common::netns::ping_ok;
use common::process::poll_until;

/// A stock client profile that connects over TCP.
fn tcp_client(lab: &Lab, i: usize, wrap: &TlsWrap) -> ClientConf {
    let mut cc = lab.client_conf(&lab.pki.clients[i].clone());
    cc.wrap = wrap.clone();
    cc.extra.push("proto tcp-client".into());
    cc
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

/// Stock client over TCP to a warren `proto tcp-server` with `wrap`: ping both ways,
/// SHA-256-checked transfers both ways, listed in the status file with its TCP address.
fn stock_client_to_warren(name: &str, wrap: TlsWrap) {
    let mut lab = Lab::p256(name, ServerKind::Warren);
    let mut sc = lab.server_conf();
    sc.wrap = wrap.clone();
    sc.extra.push("proto tcp-server".into());
    sc.extra.push("tcp-nodelay".into());
    lab.start_server(&sc);
    assert!(
        !lab.server_ns.udp_port_bound(SERVER_PORT),
        "a TCP-only server must not listen on UDP"
    );
    let cc = tcp_client(&lab, 0, &wrap);
    let client = lab.connect_client("client1", cc);
    assert!(
        client.log().contains("TCP connection established"),
        "the stock client did not use TCP:\n{}",
        common::process::tail(&client.log(), 30)
    );
    let conns = lab.tcp_connections();
    assert!(
        conns.contains(&client.client_underlay),
        "no TCP connection from {}: {conns}",
        client.client_underlay
    );
    // tcp-nodelay: pushed, and applied by the stock client (openvpn-ops.md §5.1).
    assert!(
        client
            .log()
            .contains("Socket flags: TCP_NODELAY=1 succeeded"),
        "{}",
        common::process::tail(&client.log(), 30)
    );
    lab.check_tunnel(&client.ns, client.addr(), 8 * MB, 4 * MB);
    status_lists(&lab, &[&client.client_underlay, client.addr()]);
    lab.assert_server_running();
}

#[test]
fn stock_client_tcp_tls_crypt() {
    stock_client_to_warren("tcp-crypt", TlsWrap::Crypt);
}

#[test]
fn stock_client_tcp_tls_auth() {
    stock_client_to_warren(
        "tcp-auth",
        TlsWrap::Auth {
            inline_direction: true,
            auth: None,
        },
    );
}

/// `warren client` with `proto tcp-client` to a `proto tcp-server` server: ping both ways,
/// transfers both ways with SHA-256, clean exit.
fn warren_client_tcp(kind: ServerKind) {
    let mut lab = Lab::p256("wclient-tcp", kind);
    let mut sc = lab.server_conf();
    sc.extra.push("proto tcp-server".into());
    lab.start_server(&sc);
    let cc = tcp_client(&lab, 0, &TlsWrap::Crypt);
    let mut client = client_common::connect_client(&mut lab, "client1", cc, &[]);
    assert!(
        client.log().contains("over TCP"),
        "{}",
        common::process::tail(&client.log(), 20)
    );
    let conns = lab.tcp_connections();
    assert!(
        conns.contains(&client.client_underlay),
        "no TCP connection from {}: {conns}",
        client.client_underlay
    );
    lab.check_tunnel(&client.ns, client.addr(), 8 * MB, 4 * MB);
    client.stop_cleanly();
    lab.assert_server_running();
}

#[test]
fn warren_client_tcp_to_stock_server() {
    warren_client_tcp(ServerKind::Openvpn);
}

#[test]
fn warren_client_tcp_to_warren_server() {
    warren_client_tcp(ServerKind::Warren);
}

/// One warren process, `proto udp` plus `warren-listen tcp PORT`: a stock UDP client and a
/// stock TCP client at once share the pool (distinct addresses) and the status list.
#[test]
fn udp_and_tcp_in_one_server() {
    let mut lab = Lab::p256("udp-tcp", ServerKind::Warren);
    let mut sc = lab.server_conf();
    sc.extra.push(format!("warren-listen tcp {SERVER_PORT}"));
    // Two data threads: the UDP peer's data may move on either, the TCP peer's on the
    // main thread only (tun packets read by the worker are handed over).
    sc.extra.push("warren-workers 2".into());
    lab.start_server(&sc);
    let bound = poll_until(Duration::from_secs(5), || {
        (lab.server_ns.udp_port_bound(SERVER_PORT) && lab.server_ns.tcp_port_bound(SERVER_PORT))
            .then_some(())
    });
    assert!(
        bound.is_some(),
        "UDP and TCP port {SERVER_PORT} not both bound"
    );
    let udp_cc = lab.client_conf(&lab.pki.clients[0].clone());
    let udp_client = lab.connect_client("client-udp", udp_cc);
    let tcp_cc = tcp_client(&lab, 1, &TlsWrap::Crypt);
    let tcp_client = lab.connect_client("client-tcp", tcp_cc);
    assert!(tcp_client.log().contains("TCP connection established"));
    assert!(!udp_client.log().contains("TCP connection established"));
    assert_ne!(
        udp_client.addr(),
        tcp_client.addr(),
        "addresses must differ"
    );
    for c in [&udp_client, &tcp_client] {
        lab.check_tunnel(&c.ns, c.addr(), 4 * MB, 4 * MB);
    }
    let log = lab.server_log();
    assert!(
        log.contains("2 data thread(s)"),
        "{}",
        common::process::tail(&log, 20)
    );
    status_lists(
        &lab,
        &[
            &udp_client.client_underlay,
            &tcp_client.client_underlay,
            udp_client.addr(),
            tcp_client.addr(),
        ],
    );
    lab.assert_server_running();
}

/// Garbage on one connection and a silent one do not disturb a connected TCP client: the
/// bad length prefix closes its connection at once, the silent one is closed after the
/// hand-window.
#[test]
fn bad_and_silent_connections_are_closed() {
    let mut lab = Lab::p256("tcp-abuse", ServerKind::Warren);
    let mut sc = lab.server_conf();
    sc.extra.push("proto tcp-server".into());
    sc.extra.push("hand-window 5".into());
    lab.start_server(&sc);
    let cc = tcp_client(&lab, 0, &TlsWrap::Crypt);
    let client = lab.connect_client("client1", cc);
    let srv = client.server_underlay.clone();
    // A length of 65535 is above any packet: refused, connection closed by the server.
    // bash's /dev/tcp keeps the test free of extra tools; every wait is bounded.
    let script = format!(
        "exec 3<>/dev/tcp/{srv}/{SERVER_PORT}; printf '\\377\\377garbage' >&3; \
         timeout 5 cat <&3 >/dev/null; echo closed=$?"
    );
    let out = client
        .ns
        .exec(&["bash", "-c", &script], Duration::from_secs(15));
    assert!(
        out.stdout.contains("closed=0"),
        "the server did not close a connection with a bad length: {}{}",
        out.stdout,
        out.stderr
    );
    // A silent connection is closed after the hand-window (5 s).
    let script = format!(
        "exec 3<>/dev/tcp/{srv}/{SERVER_PORT}; timeout 15 cat <&3 >/dev/null; echo closed=$?"
    );
    let out = client
        .ns
        .exec(&["bash", "-c", &script], Duration::from_secs(25));
    assert!(
        out.stdout.contains("closed=0"),
        "a silent connection was not closed within 15 s: {}{}",
        out.stdout,
        out.stderr
    );
    ping_ok(&client.ns, SERVER_TUN_ADDR, "client -> server");
    let log = lab.server_log();
    assert!(
        log.contains("no handshake within the hand-window"),
        "{}",
        common::process::tail(&log, 30)
    );
    lab.assert_server_running();
}

/// Zero-config `warren server --tcp PORT`: one user over UDP, one over TCP with a profile
/// exported with `--proto tcp --port PORT`, both authenticated by the state's database.
#[test]
fn zero_config_tcp_listener() {
    let mut lab = Lab::p256("zero-tcp", ServerKind::Warren);
    let state = lab.dir().join("state");
    let w = state_common::Warren::new(&state);
    let server = state_common::ZeroServer::start(&lab, &state, &["--tcp", "1443"]);
    assert!(lab.server_ns.tcp_port_bound(1443), "{}", server.log());
    w.add_user("alice", &[]);
    w.add_user("bob", &[]);
    let alice = state_common::connect(&mut lab, &server, &w, "alice", "alice", None, &[]);
    let bob = state_common::connect(
        &mut lab,
        &server,
        &w,
        "bob",
        "bob",
        None,
        &["--proto", "tcp", "--port", "1443"],
    );
    assert!(bob.log().contains("TCP connection established"));
    assert!(!alice.log().contains("TCP connection established"));
    assert_ne!(alice.addr(), bob.addr());
    for c in [&alice, &bob] {
        ping_ok(
            &c.ns,
            state_common::SERVER_VPN_IP,
            &format!("{} -> server", c.name),
        );
    }
    lab.transfer(
        &bob.ns,
        &lab.server_ns,
        state_common::SERVER_VPN_IP,
        &Transfer::bytes(2 * MB),
    )
    .assert_intact();
    let log = server.log();
    assert!(log.contains("login accepted user=\"bob\""), "{log}");
    assert!(
        log.contains("tcp "),
        "the start-up line names the TCP listener:\n{log}"
    );
}

/// `remote` lines with different protocols are tried in order: a TCP remote where nothing
/// listens is refused at once, and the next one, over UDP, comes up.
#[test]
fn warren_client_tries_remotes_with_their_protocols() {
    let mut lab = Lab::p256("remotes", ServerKind::Warren);
    let sc = lab.server_conf();
    lab.start_server(&sc);
    let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
    cc.remote.1 = SERVER_PORT + 1;
    cc.extra.push("proto tcp-client".into());
    let mut p = client_common::prepare_client(&mut lab, cc);
    p.conf
        .extra
        .push(format!("remote {} {SERVER_PORT} udp", p.srv));
    let mut client = client_common::spawn_client(&lab, "client1", p, &[]);
    if let Err(e) = client.wait_up(Duration::from_secs(30)) {
        panic!("{e}\nclient log:\n{}", client.proc.log_tail(30));
    }
    let log = client.log();
    assert!(
        log.contains(&format!(
            "TCP connect to {}:{}",
            client.server_underlay,
            SERVER_PORT + 1
        )),
        "the TCP remote was not tried first:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "via server {}:{SERVER_PORT}",
            client.server_underlay
        )),
        "{log}"
    );
    ping_ok(&client.ns, SERVER_TUN_ADDR, "client -> server");
    assert!(client.stop(Duration::from_secs(5)));
}

/// The server dies: the client sees its TCP connection close at once, reconnects to the
/// restarted server (same tun address) and carries traffic again.
#[test]
fn warren_client_reconnects_over_tcp_after_a_server_restart() {
    let mut lab = Lab::p256("tcp-restart", ServerKind::Warren);
    let mut sc = lab.server_conf();
    sc.extra.push("proto tcp-server".into());
    lab.start_server(&sc);
    let cc = tcp_client(&lab, 0, &TlsWrap::Crypt);
    let mut client = client_common::connect_client(&mut lab, "client1", cc, &[]);
    let addr = client.addr().to_owned();
    lab.server().kill();
    let conf = lab.dir().join("server.conf");
    let conf = conf.to_str().expect("UTF-8").to_owned();
    let dir = lab.dir().to_path_buf();
    let mut server2 = lab.server_ns.spawn_env(
        "server2",
        &[common::lab::WARREN_BIN, "server", "--config", &conf],
        &[],
        &dir,
        &dir.join("server2.log"),
    );
    let bound = poll_until(Duration::from_secs(15), || {
        lab.server_ns.tcp_port_bound(SERVER_PORT).then_some(())
    });
    assert!(bound.is_some(), "{}", server2.log_tail(30));
    if let Err(e) = client
        .proc
        .wait_for_line(client_common::RECONNECTED, Duration::from_secs(20))
    {
        panic!(
            "{e}\nclient:\n{}\nserver:\n{}",
            client.proc.log_tail(30),
            server2.log_tail(30)
        );
    }
    assert!(
        client.log().contains("closed the TCP connection"),
        "{}",
        client.proc.log_tail(30)
    );
    let ok = poll_until(Duration::from_secs(10), || {
        client
            .ns
            .ping(SERVER_TUN_ADDR, 1, 1)
            .success()
            .then_some(())
    });
    assert!(ok.is_some(), "no traffic after reconnecting");
    assert_eq!(
        client.ns.ipv4_addr(&client.dev).as_deref(),
        Some(addr.as_str())
    );
    assert!(client.stop(Duration::from_secs(5)));
    server2.terminate(Duration::from_secs(5));
}

/// Renegotiation over TCP (started by warren, `reneg-sec 8`) during a paced transfer from
/// the stock client: every byte arrives and the connection is never replaced (a data
/// packet that failed to open would close it: fact sheet §9).
#[test]
fn renegotiation_over_tcp_keeps_the_connection() {
    let mut lab = Lab::p256("tcp-reneg", ServerKind::Warren);
    let mut sc = lab.server_conf();
    sc.extra.push("proto tcp-server".into());
    sc.reneg_sec = Some(8);
    lab.start_server(&sc);
    let cc = tcp_client(&lab, 0, &TlsWrap::Crypt);
    let client = lab.connect_client("client1", cc);
    let r = lab.transfer(
        &client.ns,
        &lab.server_ns,
        SERVER_TUN_ADDR,
        &Transfer::timed(Duration::from_secs(20), 2 * MB),
    );
    r.assert_intact();
    assert!(
        r.max_gap < Duration::from_secs(5),
        "the stream stalled for {:?} during renegotiation",
        r.max_gap
    );
    let log = lab.server_log();
    let renegs = log.matches("client renegotiated").count();
    assert!(
        renegs >= 2,
        "expected 2 renegotiations in 20 s, saw {renegs}"
    );
    assert_eq!(
        log.matches("TCP connection accepted").count(),
        1,
        "the connection was replaced:\n{}",
        common::process::tail(&log, 40)
    );
    ping_ok(&client.ns, SERVER_TUN_ADDR, "client -> server");
}
