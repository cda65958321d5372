//! Issue 12: NAT built in (`--full-tunnel`, `warren-nat on`).
//!
//! Three namespaces: a stock `openvpn` client, the warren server, and an "internet" behind
//! the server's uplink (a veth on 192.0.2.0/24 that has no route back to the VPN network).
//! The client, told `redirect-gateway def1`, reaches the internet through the tunnel, and
//! the far end sees the server's uplink address as the source. The server namespace's
//! nftables ruleset and forwarding sysctls are byte for byte what they were before, after a
//! SIGTERM and after a `kill -9` followed by a new start and a SIGTERM; a split-tunnel
//! server adds no table at all.
//!
//! Needs root (network namespaces), `openvpn`, `nft` (nftables) and `ping`.

#![allow(clippy::disallowed_methods)]

use crate::common;
use crate::state_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::lab::{CONNECTED, Lab, ServerKind, Transfer};
use common::netns::{Netns, link, unique_name};
use common::process::{Proc, poll_until};
use state_common::{PORT, Warren, ZeroServer, start_openvpn, write_profile};

/// The server's uplink address and the far end's, on the "internet" link.
const UPLINK_ADDR: &str = "192.0.2.1";
const FAR_ADDR: &str = "192.0.2.2";
const JOURNAL_DIR: &str = "/run/warren";

/// The "internet": a namespace behind the server's uplink, with no route to 10.8.0.0/24,
/// counting the echo requests it receives by source. The server namespace's default route
/// points at it. Returns (namespace, uplink device in the server namespace).
fn internet(lab: &Lab) -> (Netns, String) {
    let inet = Netns::new();
    let (uplink, _) = link(
        &lab.server_ns,
        &inet,
        &format!("{UPLINK_ADDR}/24"),
        &format!("{FAR_ADDR}/24"),
    );
    lab.server_ns
        .exec_ok(&["ip", "route", "add", "default", "via", FAR_ADDR]);
    let rules = lab.dir().join("count.nft");
    fs::write(
        &rules,
        "table ip count {\n\
         \tchain input {\n\
         \t\ttype filter hook input priority 0; policy accept;\n\
         \t\tip saddr 192.0.2.1 icmp type echo-request counter\n\
         \t\tip saddr 10.8.0.0/24 counter\n\
         \t}\n\
         }\n",
    )
    .expect("write nft file");
    inet.exec_ok(&["nft", "-f", rules.to_str().expect("utf8")]);
    (inet, uplink)
}

/// Packets counted by the far end's rule matching `what` (`ip saddr 192.0.2.1`, ...).
fn far_count(inet: &Netns, what: &str) -> u64 {
    let out = inet.exec_ok(&["nft", "list", "table", "ip", "count"]);
    let line = out
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no rule {what} in\n{out}"));
    let toks: Vec<&str> = line.split_whitespace().collect();
    let i = toks
        .iter()
        .position(|t| *t == "packets")
        .unwrap_or_else(|| panic!("no counter in {line}"));
    toks[i + 1].parse().expect("packet count")
}

/// What must be the same before and after a server: the whole nftables ruleset and every
/// forwarding sysctl of the server namespace (read from inside it).
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    ruleset: String,
    forwarding: String,
}

fn snapshot(ns: &Netns) -> Snapshot {
    Snapshot {
        ruleset: ns.exec_ok(&["nft", "list", "ruleset"]),
        forwarding: ns.exec_ok(&[
            "sh",
            "-c",
            "grep -H . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding \
             /proc/sys/net/ipv6/conf/*/forwarding",
        ]),
    }
}

fn sysctl(ns: &Netns, path: &str) -> String {
    ns.exec_ok(&["cat", path]).trim().to_owned()
}

fn forwarding(ns: &Netns, dev: &str) -> String {
    sysctl(ns, &format!("/proc/sys/net/ipv4/conf/{dev}/forwarding"))
}

fn journal(pid: u32) -> PathBuf {
    Path::new(JOURNAL_DIR).join(format!("nat-{pid}.journal"))
}

#[test]
fn full_tunnel_client_reaches_the_internet_masqueraded_and_all_is_undone() {
    let mut lab = Lab::p256("nat-full", ServerKind::Warren);
    let (inet, uplink) = internet(&lab);
    // The client's namespace (and its link to the server) before the snapshot, so the
    // snapshot covers the client's link too. Its default route (to the server) is what
    // redirect-gateway def1 overrides.
    let (ns, srv, _) = lab.new_peer_ns();
    ns.exec_ok(&["ip", "route", "add", "default", "via", &srv]);
    let before = snapshot(&lab.server_ns);
    assert!(!before.ruleset.contains("warren"), "{}", before.ruleset);
    assert_eq!(sysctl(&lab.server_ns, "/proc/sys/net/ipv4/ip_forward"), "0");

    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    let server = ZeroServer::start(&lab, &state, &["--full-tunnel", "--dns", "192.0.2.53"]);
    let mut server = server;
    server.wait_for(
        "NAT on: 10.8.0.0/24 masqueraded out of",
        Duration::from_secs(10),
    );
    let table = lab.server_ns.exec_ok(&[
        "nft",
        "list",
        "table",
        "inet",
        &format!("warren-{}", server.dev),
    ]);
    assert!(
        table.contains("ip saddr 10.8.0.0/24 oifname")
            && table.contains(&uplink)
            && table.contains("masquerade"),
        "{table}"
    );
    // Forwarding on the tun and the uplink only; the global switch stays off.
    assert_eq!(forwarding(&lab.server_ns, &server.dev), "1");
    assert_eq!(forwarding(&lab.server_ns, &uplink), "1");
    assert_eq!(forwarding(&lab.server_ns, "all"), "0");
    assert_eq!(sysctl(&lab.server_ns, "/proc/sys/net/ipv4/ip_forward"), "0");
    assert!(journal(server.proc.pid()).exists());

    // A stock client with the exported profile.
    w.add_user("alice", &[]);
    let (profile, dev) = write_profile(&lab, "alice", &w.export("alice", &srv, &[]), None);
    let mut client = start_openvpn(&lab, &ns, "alice", &profile);
    if let Err(e) = client.wait_for_line(CONNECTED, Duration::from_secs(20)) {
        panic!("client did not connect: {e}\nserver:\n{}", server.log());
    }
    let log = client.log();
    assert!(
        log.contains("redirect-gateway def1") && log.contains("dhcp-option DNS 192.0.2.53"),
        "pushed options:\n{log}"
    );
    let route = ns.exec_ok(&["ip", "route", "get", FAR_ADDR]);
    assert!(
        route.contains(&format!("dev {dev}")),
        "the internet is reached through the tunnel: {route}"
    );

    let ping = ns.ping(FAR_ADDR, 3, 2);
    assert!(
        ping.success(),
        "ping through NAT failed:\n{}{}\nserver:\n{}",
        ping.stdout,
        ping.stderr,
        server.log()
    );
    assert!(
        far_count(&inet, "ip saddr 192.0.2.1 icmp") >= 3,
        "the far end saw the uplink address"
    );
    assert_eq!(
        far_count(&inet, "ip saddr 10.8.0.0/24"),
        0,
        "no VPN address leaked"
    );
    // TCP too, every byte checked.
    lab.transfer(&ns, &inet, FAR_ADDR, &Transfer::bytes(1024 * 1024))
        .assert_intact();

    drop(client);
    let pid = server.proc.pid();
    server.stop();
    assert_eq!(
        snapshot(&lab.server_ns),
        before,
        "SIGTERM undoes everything"
    );
    assert!(!journal(pid).exists(), "the journal goes with the NAT");
}

/// `warren server --config` in the lab's server namespace, logging at `info`.
fn start_config_server(lab: &Lab, conf: &Path, tag: &str) -> Proc {
    lab.spawn_server_file(conf, PORT, tag, &[("RUST_LOG", "info".into())])
}

#[test]
fn split_tunnel_adds_nothing_and_a_killed_servers_nat_is_removed_by_the_next_start() {
    let lab = Lab::p256("nat-kill", ServerKind::Warren);
    let (_inet, uplink) = internet(&lab);
    let before = snapshot(&lab.server_ns);

    let mut conf = lab.server_conf();
    conf.port = PORT;
    let dev = unique_name("tun", 's');
    conf.dev = dev.clone();
    let split = lab.dir().join("split.conf");
    conf.write(&split);

    // Without NAT (the default split tunnel), nothing is added.
    let mut p = start_config_server(&lab, &split, "split");
    assert_eq!(snapshot(&lab.server_ns).ruleset, before.ruleset);
    assert!(!journal(p.pid()).exists());
    p.terminate(Duration::from_secs(10));
    assert_eq!(snapshot(&lab.server_ns), before);

    // A server.conf with a full-tunnel push and `warren-nat on`, killed with SIGKILL.
    conf.extra = vec![
        "push \"redirect-gateway def1\"".into(),
        "warren-nat on".into(),
    ];
    let full = lab.dir().join("full.conf");
    conf.write(&full);
    let mut p = start_config_server(&lab, &full, "full1");
    p.wait_for_line("NAT on:", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let killed = p.pid();
    p.kill();
    let stale = lab.server_ns.exec_ok(&["nft", "list", "ruleset"]);
    assert!(
        stale.contains(&format!("table inet warren-{dev}")),
        "the killed server's table stays: {stale}"
    );
    assert_eq!(forwarding(&lab.server_ns, &uplink), "1");
    assert!(journal(killed).exists(), "and its journal");

    // The next start (same tun name, so the same table name) removes the leftovers first.
    let mut p = start_config_server(&lab, &full, "full2");
    p.wait_for_line("NAT on:", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let log = p.log();
    assert!(
        log.contains(&format!(
            "undoing the NAT of warren server {killed} that ended without cleaning up"
        )),
        "{log}"
    );
    assert!(!journal(killed).exists());
    let rules = lab.server_ns.exec_ok(&["nft", "list", "ruleset"]);
    assert_eq!(
        rules.matches("table inet warren-").count(),
        1,
        "one table, the new server's: {rules}"
    );
    let pid = p.pid();
    p.terminate(Duration::from_secs(10));
    assert_eq!(
        p.exited().map(|s| s.success()),
        Some(true),
        "{}",
        p.log_tail(20)
    );
    assert_eq!(snapshot(&lab.server_ns), before);
    assert!(!journal(pid).exists());
}

#[test]
fn after_a_privilege_drop_a_helper_undoes_the_nat_on_exit_and_on_sigkill() {
    let lab = Lab::p256("nat-user", ServerKind::Warren);
    let (_inet, _uplink) = internet(&lab);
    let before = snapshot(&lab.server_ns);

    let mut conf = lab.server_conf();
    conf.port = PORT;
    conf.extra = vec![
        "push \"redirect-gateway def1\"".into(),
        "warren-nat on".into(),
        "user nobody".into(),
        "group nogroup".into(),
    ];
    let path = lab.dir().join("user.conf");
    conf.write(&path);

    // SIGTERM: the server, now `nobody`, cannot undo anything itself; its helper does,
    // before the server exits.
    let mut p = start_config_server(&lab, &path, "user1");
    p.wait_for_line("dropped privileges", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(p.log().contains("NAT on:"), "{}", p.log_tail(20));
    let rules = lab.server_ns.exec_ok(&["nft", "list", "ruleset"]);
    assert!(rules.contains("table inet warren-"), "{rules}");
    let pid = p.pid();
    p.terminate(Duration::from_secs(20));
    assert_eq!(
        p.exited().map(|s| s.success()),
        Some(true),
        "{}",
        p.log_tail(20)
    );
    assert_eq!(snapshot(&lab.server_ns), before, "{}", p.log_tail(20));
    assert!(!journal(pid).exists());
    assert!(
        p.log()
            .contains("NAT helper: undone nftables table inet warren-"),
        "{}",
        p.log_tail(20)
    );

    // SIGKILL: the helper sees its pipe close and undoes the NAT right away.
    let mut p = start_config_server(&lab, &path, "user2");
    p.wait_for_line("dropped privileges", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = p.pid();
    p.kill();
    let undone = poll_until(Duration::from_secs(15), || {
        (snapshot(&lab.server_ns) == before).then_some(())
    });
    assert!(
        undone.is_some(),
        "the helper did not undo the NAT of the killed server:\n{}",
        p.log_tail(20)
    );
    assert!(
        poll_until(Duration::from_secs(5), || (!journal(pid).exists())
            .then_some(()))
        .is_some()
    );
}
