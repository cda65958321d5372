//! Issue 12: per-user access rules in the data plane.
//!
//! A zero-config warren server with NAT (`--full-tunnel`) in front of an "internet"
//! namespace with two hosts (192.0.2.2 and 192.0.2.3), and the stock `openvpn` client. The
//! far end counts what arrives per destination, so a refused packet is one that never got
//! there. The user may reach 192.0.2.2 on TCP ports 5000-5999 only: a TCP transfer there
//! passes byte for byte, a ping to the same host and one to the other host do not. Then
//! `warren user set` on the state directory changes the rules of the connected client, and
//! the new rules hold within a second, without a reconnection. IPv6 (to the server's own
//! tunnel address) is checked by the same rules.
//!
//! Needs root (network namespaces), `openvpn`, `nft` (nftables) and `ping`.

#![allow(clippy::disallowed_methods)]

use crate::common;
use crate::state_common;

use std::fs;
use std::time::Duration;

use common::lab::{CONNECTED, Lab, ServerKind, Transfer};
use common::netns::{Netns, link};
use common::pki::{KeyFormat, KeyType};
use common::process::poll_until;
use state_common::{Warren, ZeroServer, start_openvpn, write_profile};

const UPLINK_ADDR: &str = "192.0.2.1";
const HOST_A: &str = "192.0.2.2";
const HOST_B: &str = "192.0.2.3";

/// The "internet" behind the server's uplink: one namespace holding both hosts, counting
/// the echo requests each receives.
fn internet(lab: &Lab) -> Netns {
    let inet = Netns::new();
    let (_, far) = link(
        &lab.server_ns,
        &inet,
        &format!("{UPLINK_ADDR}/24"),
        &format!("{HOST_A}/24"),
    );
    inet.exec_ok(&["ip", "addr", "add", &format!("{HOST_B}/24"), "dev", &far]);
    lab.server_ns
        .exec_ok(&["ip", "route", "add", "default", "via", HOST_A]);
    let rules = lab.dir().join("count.nft");
    fs::write(
        &rules,
        format!(
            "table ip count {{\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority 0; policy accept;\n\
             \t\tip daddr {HOST_A} icmp type echo-request counter\n\
             \t\tip daddr {HOST_B} icmp type echo-request counter\n\
             \t}}\n\
             }}\n"
        ),
    )
    .expect("write nft file");
    inet.exec_ok(&["nft", "-f", rules.to_str().expect("utf8")]);
    inet
}

/// The server's global IPv6 tunnel address (the zero-config server's own ULA /64).
fn server_ipv6(lab: &Lab, dev: &str) -> String {
    poll_until(Duration::from_secs(5), || {
        let out = lab.server_ns.exec(
            &[
                "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global",
            ],
            Duration::from_secs(10),
        );
        let mut it = out.stdout.split_whitespace();
        while let Some(tok) = it.next() {
            if tok == "inet6" {
                return it
                    .next()
                    .and_then(|a| a.split('/').next())
                    .map(String::from);
            }
        }
        None
    })
    .expect("the server's tun has a global IPv6 address")
}

/// One ICMPv6 echo from `ns` to `dst`, answered within a second.
fn ping6(ns: &Netns, dst: &str) -> bool {
    ns.exec(
        &["ping", "-6", "-n", "-c", "1", "-W", "1", dst],
        Duration::from_secs(10),
    )
    .success()
}

/// Echo requests the far end received for `dst`.
fn pings_at(inet: &Netns, dst: &str) -> u64 {
    let out = inet.exec_ok(&["nft", "list", "table", "ip", "count"]);
    let line = out
        .lines()
        .find(|l| l.contains(&format!("ip daddr {dst} ")))
        .unwrap_or_else(|| panic!("no rule for {dst} in\n{out}"));
    let toks: Vec<&str> = line.split_whitespace().collect();
    let i = toks
        .iter()
        .position(|t| *t == "packets")
        .unwrap_or_else(|| panic!("no counter in {line}"));
    toks[i + 1].parse().expect("packet count")
}

#[test]
fn rules_limit_destinations_and_live_changes_apply_without_reconnecting() {
    let mut lab = Lab::with_pki(
        "access",
        ServerKind::Warren,
        KeyType::P256,
        KeyFormat::Pkcs8,
    );
    let inet = internet(&lab);
    let (ns, srv, _) = lab.new_peer_ns();
    ns.exec_ok(&["ip", "route", "add", "default", "via", &srv]);

    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    let mut server = ZeroServer::start(&lab, &state, &["--full-tunnel"]);
    server.wait_for("NAT on:", Duration::from_secs(10));
    w.add_user("alice", &[]);
    // Bad rule text is refused, naming the rule and the form.
    let bad = w.run(&["user", "set", "alice", "--allow", "192.0.2.0/33"], None);
    assert!(!bad.success());
    assert!(
        bad.stderr.contains("\"192.0.2.0/33\"") && bad.stderr.contains("expected CIDR"),
        "{}",
        bad.stderr
    );
    w.ok(&[
        "user",
        "set",
        "alice",
        "--allow",
        &format!("{HOST_A}:5000-5999/tcp"),
    ]);

    let (profile, _) = write_profile(&lab, "alice", &w.export("alice", &srv, &[]), None);
    let mut client = start_openvpn(&lab, &ns, "alice", &profile);
    if let Err(e) = client.wait_for_line(CONNECTED, Duration::from_secs(20)) {
        panic!("client did not connect: {e}\nserver:\n{}", server.log());
    }

    // Allowed: TCP to host A's ports, every byte checked.
    lab.transfer(&ns, &inet, HOST_A, &Transfer::bytes(256 * 1024))
        .assert_intact();
    // Refused: ICMP to host A (not TCP), anything to host B (default deny), and IPv6 to
    // the server (the rules allow no IPv6 destination).
    let srv6 = server_ipv6(&lab, &server.dev);
    assert!(!ping6(&ns, &srv6), "IPv6 refused by the default");
    assert!(!ns.ping(HOST_A, 2, 1).success());
    assert!(!ns.ping(HOST_B, 2, 1).success());
    assert_eq!(pings_at(&inet, HOST_A), 0, "no echo request reached host A");
    assert_eq!(pings_at(&inet, HOST_B), 0, "no echo request reached host B");

    // A live change: host B's ICMP too, appended after the first rule.
    w.ok(&["user", "set", "alice", "--allow", &format!("{HOST_B}/icmp")]);
    std::thread::sleep(Duration::from_secs(1));
    let ping = ns.ping(HOST_B, 2, 1);
    assert!(
        ping.success(),
        "the new rule holds within a second:\n{}\nserver:\n{}",
        ping.stdout,
        common::process::tail(&server.log(), 30)
    );
    assert!(pings_at(&inet, HOST_B) >= 2);
    assert!(!ns.ping(HOST_A, 1, 1).success(), "host A still refused");
    assert_eq!(pings_at(&inet, HOST_A), 0);

    // Through a group, and with only deny rules (the default becomes allow): host A is
    // refused by the group's rule, host B passes by default.
    w.ok(&["group", "add", "lab"]);
    w.ok(&["group", "set", "lab", "--deny", HOST_A]);
    w.ok(&["user", "set", "alice", "--clear-access", "--group", "lab"]);
    std::thread::sleep(Duration::from_secs(1));
    let b_before = pings_at(&inet, HOST_B);
    assert!(ns.ping(HOST_B, 2, 1).success());
    assert!(pings_at(&inet, HOST_B) >= b_before + 2);
    assert!(!ns.ping(HOST_A, 2, 1).success());
    assert_eq!(pings_at(&inet, HOST_A), 0);
    assert!(ping6(&ns, &srv6), "IPv6 passes by default now");

    // Out of the group, one IPv6 rule: ICMPv6 to the server refused, the rest allowed.
    let rule6 = format!("{srv6}/icmp");
    w.ok(&["user", "set", "alice", "--clear-groups", "--deny", &rule6]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!ping6(&ns, &srv6), "the IPv6 deny rule holds");
    assert!(ns.ping(HOST_A, 2, 1).success());
    assert!(pings_at(&inet, HOST_A) >= 2);

    // All on one connection: the client connected once and the server logged one login.
    let log = client.log();
    assert_eq!(log.matches(CONNECTED).count(), 1, "no reconnection:\n{log}");
    let slog = server.log();
    assert_eq!(slog.matches("login accepted").count(), 1, "{slog}");
    assert!(
        slog.contains("access rules of alice changed"),
        "the server says what it applied:\n{slog}"
    );
    drop(client);
    server.stop();
}
