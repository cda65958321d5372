//! Issue 5, "data plane": the batched, offloaded I/O of `warren server` and `warren client`
//! (tun `IFF_VNET_HDR` super-packets split and coalesced, UDP GRO/GSO), and the switch that
//! turns it off (`--no-offload` / `warren-offload off`), both ways.
//!
//! Each case runs once with offloads on (the default) and once off: warren client ↔ warren
//! server and stock `openvpn` client ↔ warren server, 64 MiB each way with a SHA-256 check,
//! then one iperf3 single stream (printed, only checked to be non-zero: timing is the
//! `bench/` script's job, not a test's). The loops' exit statistics show which path ran:
//! with offloads several packets per tun read and per UDP send, without exactly one.
//!
//! Needs root: network namespaces (see `common`).
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;

use std::time::Duration;

use client_common::connect_client as connect_warren_client;
use common::lab::{Lab, MB, SERVER_TUN_ADDR, ServerKind, Transfer};
use common::netns::Netns;
use common::process::{Proc, tail};

/// Bytes moved each way per case.
const BULK: u64 = 64 * MB;
/// The line both loops log once their tun and socket are open.
const DATA_PATH: &str = "data path:";

/// Starts `warren server` with the tests' server.conf, offloads on or off
/// (`warren-offload off`), `threads` data threads (`warren-workers`; `None`: the default,
/// one per core up to 4), and checks the data path it reports.
fn start_server(lab: &mut Lab, offload: bool, threads: Option<u16>) {
    let mut sc = lab.server_conf();
    if !offload {
        sc.extra.push("warren-offload off".into());
    }
    if let Some(n) = threads {
        sc.extra.push(format!("warren-workers {n}"));
    }
    lab.start_server(&sc);
    let line = lab
        .server()
        .wait_for_line(DATA_PATH, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("server did not report its data path: {e}"));
    check_data_path("server", &line, offload);
    let want = threads.map_or_else(
        || {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, 4)
        },
        usize::from,
    );
    assert!(
        line.contains(&format!("{want} data thread(s)")),
        "server: expected {want} data threads: {line}"
    );
}

fn check_data_path(who: &str, line: &str, offload: bool) {
    if offload {
        // This kernel (≥ 6.2) grants TSO and USO on tun and GRO/GSO on UDP.
        assert!(
            line.contains("tun offloads") && line.contains("GSO"),
            "{who}: {line}"
        );
    } else {
        assert!(
            line.contains("tun one packet per read/write")
                && line.contains("UDP one datagram per call"),
            "{who}: {line}"
        );
    }
}

/// `key=N` from the last log line containing `marker`.
fn stat(log: &str, marker: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .rfind(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no `{marker}` line in:\n{}", tail(log, 20)));
    let want = format!("{key}=");
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(want.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in `{line}`"))
}

/// Packets per system call on the tun (reads) and on the socket (sends) from a loop's exit
/// line: above 1 with offloads, exactly 1 without.
fn check_batching(who: &str, proc: &Proc, marker: &str, offload: bool) {
    let log = proc.log();
    let per = |n: &str, calls: &str| {
        let (n, c) = (stat(&log, marker, n), stat(&log, marker, calls));
        assert!(n > 1000 && c > 0, "{who}: {n} over {c} calls");
        n as f64 / c as f64
    };
    let tun = per("tun_read", "tun_read_calls");
    let udp = per("udp_sent", "udp_send_calls");
    let tun_w = per("tun_written", "tun_write_calls");
    eprintln!(
        "{who} (offload {offload}): {tun:.1} packets per tun read, {tun_w:.1} per tun write, {udp:.1} datagrams per UDP send"
    );
    if offload {
        assert!(tun > 2.0, "{who}: {tun:.2} packets per tun read");
        assert!(tun_w > 2.0, "{who}: {tun_w:.2} packets per tun write");
        assert!(udp > 2.0, "{who}: {udp:.2} datagrams per UDP send");
    } else {
        assert!(
            (tun - 1.0).abs() < 1e-9,
            "{who}: {tun} packets per tun read"
        );
        assert!((tun_w - 1.0).abs() < 1e-9, "{who}: {tun_w} per tun write");
        assert!((udp - 1.0).abs() < 1e-9, "{who}: {udp} datagrams per send");
    }
}

/// 64 MiB each way with SHA-256, then one iperf3 stream client → server.
fn bulk_both_ways(lab: &Lab, client_ns: &Netns, client_addr: &str, label: &str) {
    let mut spec = Transfer::bytes(BULK);
    spec.timeout = Duration::from_secs(120);
    let up = lab.transfer(client_ns, &lab.server_ns, SERVER_TUN_ADDR, &spec);
    up.assert_intact();
    let down = lab.transfer(&lab.server_ns, client_ns, client_addr, &spec);
    down.assert_intact();
    let iperf = lab
        .iperf(client_ns, &lab.server_ns, SERVER_TUN_ADDR, 3, 1)
        .unwrap_or_else(|e| panic!("{label}: iperf3: {e}"));
    eprintln!(
        "{label}: {BULK} bytes up {:.0} Mbit/s, down {:.0} Mbit/s; iperf3 1 stream {iperf:.0} Mbit/s",
        up.mbit_per_s(),
        down.mbit_per_s()
    );
    assert!(iperf > 0.0, "{label}: iperf3 moved nothing");
}

fn warren_pair(offload: bool, threads: Option<u16>) {
    let tag = match threads {
        Some(n) => format!("{}-t{n}", if offload { "on" } else { "off" }),
        None => (if offload { "on" } else { "off" }).to_owned(),
    };
    let mut lab = Lab::p256(&format!("offload-ww-{tag}"), ServerKind::Warren);
    start_server(&mut lab, offload, threads);
    let cc = lab.client_conf(&lab.pki.clients[0].clone());
    let args: &[&str] = if offload { &[] } else { &["--no-offload"] };
    let mut client = connect_warren_client(&mut lab, "client1", cc, args);
    let line = client
        .proc
        .wait_for_line(DATA_PATH, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("client did not report its data path: {e}"));
    check_data_path("client", &line, offload);
    let addr = client.addr().to_owned();

    let out = client.ns.ping(SERVER_TUN_ADDR, 3, 2);
    assert!(out.success(), "ping: {}{}", out.stdout, out.stderr);
    bulk_both_ways(
        &lab,
        &client.ns,
        &addr,
        &format!("warren-warren offload {tag}"),
    );

    lab.assert_server_running();
    client.stop_cleanly();
    check_batching("client", &client.proc, "client stopped", offload);
    lab.server().terminate(Duration::from_secs(5));
    check_batching("server", lab.server(), "server stopped", offload);
    let handed = stat(&lab.server().log(), "server stopped", "handed_off");
    eprintln!("server ({tag}): {handed} tun packets handed to the thread owning their peer");
}

fn openvpn_client(offload: bool) {
    let tag = if offload { "on" } else { "off" };
    let mut lab = Lab::p256(&format!("offload-ow-{tag}"), ServerKind::Warren);
    start_server(&mut lab, offload, None);
    let cc = lab.client_conf(&lab.pki.clients[0].clone());
    let mut client = lab.connect_client("client1", cc);
    let addr = client.addr().to_owned();

    let out = client.ns.ping(SERVER_TUN_ADDR, 3, 2);
    assert!(out.success(), "ping: {}{}", out.stdout, out.stderr);
    bulk_both_ways(
        &lab,
        &client.ns,
        &addr,
        &format!("openvpn-warren offload {tag}"),
    );

    lab.assert_server_running();
    client.proc.terminate(Duration::from_secs(5));
    lab.server().terminate(Duration::from_secs(5));
    check_batching("server", lab.server(), "server stopped", offload);
}

#[test]
fn warren_client_warren_server_offload_on() {
    warren_pair(true, None);
}

#[test]
fn warren_client_warren_server_offload_off() {
    warren_pair(false, None);
}

/// Everything on the main thread (`warren-workers 1`): the single-threaded loop.
#[test]
fn warren_client_warren_server_one_data_thread() {
    warren_pair(true, Some(1));
}

/// More data threads than cores: the peer (id 0) belongs to the main thread, the three
/// workers read their tun queues and hand its packets over.
#[test]
fn warren_client_warren_server_four_data_threads() {
    warren_pair(true, Some(4));
}

#[test]
fn openvpn_client_warren_server_offload_on() {
    openvpn_client(true);
}

#[test]
fn openvpn_client_warren_server_offload_off() {
    openvpn_client(false);
}
