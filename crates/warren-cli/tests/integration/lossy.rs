//! Issue 10, "Tests and benchmarks": the tunnel over a bad path.
//!
//! The client does not reach the server directly: it is told to connect to a lossy UDP
//! relay (`common::relay`, our own netem: this kernel has none) that runs in the server
//! namespace on a second port and forwards to the server over loopback. In both directions
//! the relay drops 5 % of the datagrams, duplicates 1 % and reorders 3 %, with a seeded RNG,
//! and counts what it did; each transfer test moves 20 MiB through the tunnel each way with
//! a SHA-256 check and then asserts that the relay really dropped, duplicated and reordered
//! datagrams both ways. The handshake tests raise the loss to 30 % and check that the
//! connection still comes up within a bounded time (the control channel's retransmissions)
//! and then carries a ping. Each kind of test also runs stock client against stock server,
//! which validates the test itself.
//!
//! Needs root: network namespaces (see `common`).
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client_common::{WarrenClient, prepare_client, spawn_client};
use common::conf::ClientConf;
use common::lab::{Client, Lab, MB, SERVER_PORT, SERVER_TUN_ADDR, ServerKind, Transfer};
use common::netns::Netns;
use common::relay::{Impairment, Relay, RelaySpec};

/// Bytes moved through every lossy tunnel.
const TRANSFER_BYTES: u64 = 20 * MB;
/// The relay's port in the server namespace (the server itself is on `SERVER_PORT`).
const RELAY_PORT: u16 = 11_940;
/// The relay stops by itself after this, whatever happens to the test.
const RELAY_LIFETIME: Duration = Duration::from_secs(240);
/// How long a connection through 5 % loss may take to come up. The control channel
/// retransmits after about 2 s and backs off, so a few lost packets cost seconds.
const LOSSY_CONNECT: Duration = Duration::from_secs(60);
/// How long a connection through 30 % loss in both directions may take: well past one
/// `hand-window` (60 s), so a handshake that had to start over once still passes, but
/// finite, so one that cannot complete fails.
const HANDSHAKE_BOUND: Duration = Duration::from_secs(100);

/// Starts the server and a relay in front of it, in the server namespace.
fn start_server_and_relay(lab: &mut Lab, imp: Impairment, seed: u64) -> Relay {
    let sc = lab.server_conf();
    lab.start_server(&sc);
    let upstream = SocketAddr::from(([127, 0, 0, 1], SERVER_PORT));
    let spec = RelaySpec {
        port: RELAY_PORT,
        upstream,
        imp,
        seed,
        lifetime: RELAY_LIFETIME,
    };
    Relay::start(lab, &lab.server_ns, "relay", &spec)
}

fn client_conf(lab: &Lab) -> ClientConf {
    lab.client_conf(&lab.pki.clients[0].clone())
}

/// A stock `openvpn` client through the relay; waits until it is connected.
fn stock_client(lab: &mut Lab, relay: &Relay, bound: Duration) -> (Client, Duration) {
    let cc = client_conf(lab);
    let start = Instant::now();
    let mut c = lab.start_client_via("client1", cc, Some(relay.port));
    if let Err(e) = c.wait_connected(bound) {
        panic!(
            "stock client did not connect to the {} server through the relay within \
             {bound:?}: {e}\nserver log tail:\n{}",
            lab.kind.label(),
            common::process::tail(&lab.server_log(), 40)
        );
    }
    (c, start.elapsed())
}

/// A `warren client` through the relay; waits until it is up.
fn warren_client(lab: &mut Lab, relay: &Relay, bound: Duration) -> (WarrenClient, Duration) {
    let cc = client_conf(lab);
    let mut p = prepare_client(lab, cc);
    p.conf.remote.1 = relay.port;
    let start = Instant::now();
    let mut c = spawn_client(lab, "client1", p, &[]);
    if let Err(e) = c.wait_up(bound) {
        panic!(
            "warren client did not come up against the {} server through the relay within \
             {bound:?}: {e}\nserver log tail:\n{}",
            lab.kind.label(),
            common::process::tail(&lab.server_log(), 40)
        );
    }
    (c, start.elapsed())
}

/// `count` pings 0.2 s apart; passes if any reply came back.
fn ping_some(from: &Netns, to: &str, count: u32, what: &str) {
    if let Err(e) = try_ping(from, to, count, what) {
        panic!("{e}");
    }
}

fn try_ping(from: &Netns, to: &str, count: u32, what: &str) -> Result<(), String> {
    let out = from.exec(
        &[
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            to,
        ],
        Duration::from_secs(u64::from(count) / 5 + 15),
    );
    if out.success() {
        Ok(())
    } else {
        Err(format!(
            "ping {what} ({to}) through the lossy relay failed:\n{}{}",
            out.stdout, out.stderr
        ))
    }
}

/// Pings, moves [`TRANSFER_BYTES`] from the client to the server and as much back, each
/// with a SHA-256 check, stops the relay and checks it impaired both directions.
fn lossy_transfer(lab: &mut Lab, client_ns: &Netns, client_addr: &str, relay: Relay, what: &str) {
    ping_some(client_ns, SERVER_TUN_ADDR, 20, "client -> server");
    let mut spec = Transfer::bytes(TRANSFER_BYTES);
    spec.timeout = Duration::from_secs(90);
    let directions = [
        ("upload", client_ns, &lab.server_ns, SERVER_TUN_ADDR),
        ("download", &lab.server_ns, client_ns, client_addr),
    ];
    for (dir, from, to, to_addr) in directions {
        let r = lab.transfer(from, to, to_addr, &spec);
        r.assert_intact();
        eprintln!(
            "{what}: {dir} of {} bytes through the lossy relay in {:?} ({:.1} Mbit/s), \
             longest pause {:?}",
            r.recv_bytes,
            r.elapsed,
            r.mbit_per_s(),
            r.max_gap
        );
    }
    lab.assert_server_running();
    let counts = relay.stop();
    eprintln!("{what}: relay counts {counts:?}");
    counts.up.assert_impaired("client -> server");
    counts.down.assert_impaired("server -> client");
}

/// 30 % loss in both directions, and the dup/reorder rates of the lossy tests.
fn very_lossy() -> Impairment {
    Impairment::with_loss_percent(30)
}

/// After a handshake through heavy loss: a ping, and the relay did drop packets both
/// ways (so the handshake really had to retransmit).
fn after_lossy_handshake(lab: &mut Lab, client_ns: &Netns, relay: Relay, took: Duration) {
    eprintln!("connected through 30 % loss after {took:?}");
    let ping = try_ping(client_ns, SERVER_TUN_ADDR, 20, "client -> server");
    lab.assert_server_running();
    let counts = relay.stop();
    eprintln!("relay counts {counts:?}");
    if let Err(e) = ping {
        panic!("{e}\nrelay counts: {counts:?}");
    }
    assert!(
        counts.up.dropped > 0 && counts.down.dropped > 0,
        "the relay dropped nothing in one direction: {counts:?}"
    );
}

#[test]
fn stock_client_warren_server_lossy_transfer() {
    let mut lab = Lab::p256("lossy-stock-warren", ServerKind::Warren);
    let relay = start_server_and_relay(&mut lab, Impairment::LOSSY, 0x1055_0001);
    let (client, took) = stock_client(&mut lab, &relay, LOSSY_CONNECT);
    eprintln!("stock client connected through the lossy relay after {took:?}");
    lossy_transfer(
        &mut lab,
        &client.ns,
        client.addr(),
        relay,
        "stock client, warren server",
    );
}

#[test]
fn warren_client_warren_server_lossy_transfer() {
    let mut lab = Lab::p256("lossy-warren-warren", ServerKind::Warren);
    let relay = start_server_and_relay(&mut lab, Impairment::LOSSY, 0x1055_0002);
    let (client, took) = warren_client(&mut lab, &relay, LOSSY_CONNECT);
    eprintln!("warren client connected through the lossy relay after {took:?}");
    lossy_transfer(
        &mut lab,
        &client.ns,
        client.addr(),
        relay,
        "warren client, warren server",
    );
}

#[test]
fn warren_client_stock_server_lossy_transfer() {
    let mut lab = Lab::p256("lossy-warren-stock", ServerKind::Openvpn);
    let relay = start_server_and_relay(&mut lab, Impairment::LOSSY, 0x1055_0003);
    let (client, took) = warren_client(&mut lab, &relay, LOSSY_CONNECT);
    eprintln!("warren client connected through the lossy relay after {took:?}");
    lossy_transfer(
        &mut lab,
        &client.ns,
        client.addr(),
        relay,
        "warren client, stock server",
    );
}

#[test]
fn stock_client_warren_server_handshake_30pct_loss() {
    let mut lab = Lab::p256("loss30-stock-warren", ServerKind::Warren);
    let relay = start_server_and_relay(&mut lab, very_lossy(), 0x1055_0004);
    let (client, took) = stock_client(&mut lab, &relay, HANDSHAKE_BOUND);
    after_lossy_handshake(&mut lab, &client.ns, relay, took);
}

#[test]
fn warren_client_warren_server_handshake_30pct_loss() {
    let mut lab = Lab::p256("loss30-warren-warren", ServerKind::Warren);
    let relay = start_server_and_relay(&mut lab, very_lossy(), 0x1055_0006);
    let (client, took) = warren_client(&mut lab, &relay, HANDSHAKE_BOUND);
    after_lossy_handshake(&mut lab, &client.ns, relay, took);
}

#[test]
fn warren_client_stock_server_handshake_30pct_loss() {
    let mut lab = Lab::p256("loss30-warren-stock", ServerKind::Openvpn);
    let relay = start_server_and_relay(&mut lab, very_lossy(), 0x1055_0005);
    let (client, took) = warren_client(&mut lab, &relay, HANDSHAKE_BOUND);
    after_lossy_handshake(&mut lab, &client.ns, relay, took);
}

/// Validates the transfer test itself: stock client and stock server.
#[test]
fn stock_client_stock_server_lossy_transfer() {
    let mut lab = Lab::p256("lossy-stock-stock", ServerKind::Openvpn);
    let relay = start_server_and_relay(&mut lab, Impairment::LOSSY, 0x1055_0007);
    let (client, took) = stock_client(&mut lab, &relay, LOSSY_CONNECT);
    eprintln!("stock client connected through the lossy relay after {took:?}");
    lossy_transfer(
        &mut lab,
        &client.ns,
        client.addr(),
        relay,
        "stock client, stock server",
    );
}

/// Validates the 30 % test itself: stock client and stock server.
#[test]
fn stock_client_stock_server_handshake_30pct_loss() {
    let mut lab = Lab::p256("loss30-stock-stock", ServerKind::Openvpn);
    let relay = start_server_and_relay(&mut lab, very_lossy(), 0x1055_0004);
    let (client, took) = stock_client(&mut lab, &relay, HANDSHAKE_BOUND);
    after_lossy_handshake(&mut lab, &client.ns, relay, took);
}
