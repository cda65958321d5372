//! Issue 10, failure 3: half-open handshakes must not lock everyone out.
//!
//! The attack: anyone holding the tls-crypt key (every profile holder) completes the
//! stateless cookie exchange from thousands of ports of one address and then stalls. Before
//! the admission limits, 3000 such handshakes made 1023 sessions, filled `max-clients`,
//! took the server from 11 to 28 MB and kept everyone out for a hand-window. Here a
//! flooder (`common::flood`, warren's own client engine sending exactly a client's first
//! two packets, tls-crypt-wrapped) does that from one namespace against a real
//! `warren server`; then a stock `openvpn` client from another namespace must connect
//! within seconds, the server must log the per-source refusal once, and its memory must
//! stay flat.
//!
//! Needs root: network namespaces (see `common`).
#![allow(clippy::disallowed_methods)]

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::lab::{Lab, SERVER_PORT, SERVER_TUN_ADDR, ServerKind};
use common::process::rss_kib;

/// Stalled handshakes the flooder makes, all from one address.
const FLOOD: u64 = 3000;
/// The server's default `warren-max-half-open-per-source`.
const PER_SOURCE: u64 = 16;
/// A stock client connects in about a second on this link; the flood must not change that.
const CONNECT_BOUND: Duration = Duration::from_secs(10);
/// Growth of the server's resident memory the flood may cause. 16 stalled sessions cost
/// well under 1 MB; the 1023 sessions of the unbounded server cost 17 MB.
const RSS_GROWTH_BOUND_KB: u64 = 4 * 1024;

fn read_kv(path: &Path) -> BTreeMap<String, u64> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
        .collect()
}

#[test]
fn stalled_handshake_flood_from_one_address_does_not_lock_out_a_stock_client() {
    let mut lab = Lab::p256("handshake_flood", ServerKind::Warren);
    let sc = lab.server_conf();
    lab.start_server(&sc);
    let pid = lab.server().pid();
    let rss_before = rss_kib(pid).expect("VmRSS");

    let (flood_ns, server_addr, _) = lab.new_peer_ns();
    let (mut flooder, result) = lab.helper(
        &flood_ns,
        "flood",
        "flood",
        &[
            ("SERVER", format!("{server_addr}:{SERVER_PORT}")),
            ("CA", lab.pki.ca.display().to_string()),
            ("TA_KEY", lab.pki.ta_key.display().to_string()),
            ("COUNT", FLOOD.to_string()),
            ("BATCH", "250".into()),
            ("DEADLINE_MS", "60000".into()),
        ],
    );
    let st = flooder.wait_exit(Duration::from_secs(90));
    if !st.is_some_and(|s| s.success()) {
        panic!("flooder failed ({st:?}):\n{}", flooder.log_tail(20));
    }
    let r = read_kv(&result);
    eprintln!("flood: {r:?}");
    assert_eq!(r["resets"], FLOOD, "{r:?}");
    // Every reset got its cookie (the stateless reply is not limited per source), and
    // nearly every fake client sent the packet that creates a session.
    assert!(r["completed"] >= FLOOD * 95 / 100, "{r:?}");
    lab.assert_server_running();
    let rss_flooded = rss_kib(pid).expect("VmRSS");

    // A stock client from elsewhere, while the flood's sessions still stall (hand-window
    // 60 s).
    let started = Instant::now();
    let cc = lab.client_conf(&lab.pki.clients[0]);
    let mut client = lab.start_client("client1", cc);
    if let Err(e) = client.wait_connected(CONNECT_BOUND) {
        panic!(
            "stock client did not connect within {CONNECT_BOUND:?} after the flood: {e}\nserver log:\n{}",
            lab.server().log_tail(40)
        );
    }
    let took = started.elapsed();
    eprintln!("stock client connected {took:?} after the flood");
    client.ns.exec_ok(&[
        "ping",
        "-n",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        SERVER_TUN_ADDR,
    ]);

    // The refusals were logged once (rate-limited: one line per 10 s), naming the limit.
    let log = lab.server_log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("unfinished handshakes"))
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    assert!(
        refusals[0].contains(&format!("{PER_SOURCE} unfinished handshakes")),
        "{}",
        refusals[0]
    );
    assert!(
        !log.contains("maximum number of clients"),
        "max-clients was never reached"
    );
    let rss_after = rss_kib(pid).expect("VmRSS");
    eprintln!(
        "server RSS: {rss_before} kB before, {rss_flooded} kB flooded, {rss_after} kB with the client"
    );
    assert!(
        rss_flooded.saturating_sub(rss_before) < RSS_GROWTH_BOUND_KB,
        "the flood grew the server from {rss_before} kB to {rss_flooded} kB"
    );
    lab.assert_server_running();
}

/// The line both servers log when `max-clients` refuses a new client (OpenVPN multi.c).
const MAX_CLIENTS_LINE: &str =
    "MULTI: new incoming connection would exceed maximum number of clients (1)";
/// How long the refused client is watched. Below the 10 s between two of warren's reports.
const REFUSED_FOR: Duration = Duration::from_secs(7);

/// `max-clients 1`, two stock clients: the second gets nothing after the cookie exchange
/// (on UDP OpenVPN sends the refused client nothing) and the server logs OpenVPN's line;
/// warren once for all the client's retries, OpenVPN once per retry.
fn max_clients_refusal(kind: ServerKind) {
    let mut lab = Lab::p256("max_clients", kind);
    let mut sc = lab.server_conf();
    sc.extra.push("max-clients 1".into());
    lab.start_server(&sc);
    let cc = lab.client_conf(&lab.pki.clients[0]);
    let _first = lab.connect_client("client1", cc);
    let cc = lab.client_conf(&lab.pki.clients[1]);
    let mut second = lab.start_client("client2", cc);
    if let Err(e) = lab
        .server()
        .wait_for_line(MAX_CLIENTS_LINE, Duration::from_secs(20))
    {
        panic!(
            "{} server did not refuse the second client: {e}",
            kind.label()
        );
    }
    let refused_at = Instant::now();
    assert!(
        second
            .proc
            .wait_for_line(common::lab::CONNECTED, REFUSED_FOR)
            .is_err(),
        "the second client connected beyond max-clients"
    );
    let log = second.log();
    for told in ["AUTH_FAILED", "Peer Connection Initiated", "RESTART"] {
        assert!(!log.contains(told), "the refused client saw {told}:\n{log}");
    }
    let lines = lab
        .server_log()
        .lines()
        .filter(|l| l.contains(MAX_CLIENTS_LINE))
        .count();
    assert!(refused_at.elapsed() < Duration::from_secs(10));
    eprintln!(
        "{}: {lines} refusal line(s) while the client retried for {REFUSED_FOR:?}",
        kind.label()
    );
    match kind {
        ServerKind::Warren => assert_eq!(lines, 1, "rate-limited to one line per 10 s"),
        ServerKind::Openvpn => assert!(lines >= 1),
    }
    lab.assert_server_running();
}

#[test]
fn warren_server_max_clients_refusal() {
    max_clients_refusal(ServerKind::Warren);
}

#[test]
fn openvpn_server_max_clients_refusal() {
    max_clients_refusal(ServerKind::Openvpn);
}
