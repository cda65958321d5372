//! Issue 12: the client's kill switch, and the pushed DNS options.
//!
//! * `warren client --kill-switch` against the stock `openvpn` server (UDP): traffic
//!   through the tunnel flows; probes from the client namespace to a host outside the
//!   tunnel (ICMP, UDP, a DNS-port datagram; IPv4 and IPv6), sent all through a server
//!   kill and restart, reach that host 0 times (counted there by nftables); the pushed
//!   `dhcp-option DOMAIN`, `DOMAIN-SEARCH`, `DNS`, `DNS6` are in the namespace's resolv.conf
//!   (`block-outside-dns` is accepted); after a clean exit `nft list ruleset`, the routing
//!   table and resolv.conf are byte for byte what they were.
//! * A client killed with SIGKILL leaves the switch on (nothing leaks); the next client with
//!   the switch replaces it in one transaction, `warren client --kill-switch-off` removes
//!   it (and the killed client's DNS), and a client started without the switch removes a
//!   leftover before it starts.
//! * With `user nobody`: the unprivileged client still removes its switch at a clean exit
//!   and the root helper forgets its journal; after SIGKILL the helper leaves the switch on.
//!
//! Needs root (network namespaces), `nft` and `openvpn`.
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use client_common::{RECONNECTED, UP, UP_TIMEOUT, net_snapshot, prepare_client, spawn_client};
use common::lab::{Lab, SERVER_PORT, SERVER_TUN_ADDR, ServerKind, WARREN_BIN, nobody_group};
use common::netns::{Netns, link};
use common::process::{Proc, poll_until, run_ok, tail};

/// The client's end and the far end of the link to the host outside the tunnel.
const NEAR4: &str = "198.19.7.1";
const FAR4: &str = "198.19.7.2";
const NEAR6: &str = "2001:db8:7::1";
const FAR6: &str = "2001:db8:7::2";
/// The line `warren client` logs once the switch is on.
const SWITCH_ON: &str = "kill switch on:";

fn ruleset(ns: &Netns) -> String {
    ns.exec_ok(&["nft", "list", "ruleset"])
}

/// One round of probes from the client namespace to the outside host: ICMP echo and UDP
/// (port 9999 and the DNS port) over IPv4, ICMPv6 echo and UDP over IPv6, at once (a ping
/// whose send fails waits out its -W second). Errors (the switch makes sends fail with
/// EPERM) are ignored; each round prints `round` and waits for its pings.
fn probe_round() -> String {
    format!(
        "ping -n -c1 -W1 {FAR4} >/dev/null 2>&1 & ping -6 -n -c1 -W1 {FAR6} >/dev/null 2>&1 & \
         echo probe 2>/dev/null >/dev/udp/{FAR4}/9999; echo probe 2>/dev/null >/dev/udp/{FAR4}/53; \
         echo probe 2>/dev/null >/dev/udp/{FAR6}/9999; wait; echo round"
    )
}

/// A namespace outside the tunnel, linked straight to the client namespace (not routed
/// into the tunnel), counting in nftables every probe it receives from the client.
struct Outside {
    ns: Netns,
}

/// The counters, in this order.
const COUNTERS: [&str; 5] = ["icmp", "udp", "dns", "icmpv6", "udp6"];

impl Outside {
    fn new(lab: &Lab, client: &Netns) -> Outside {
        let ns = Netns::new();
        let (near, far) = link(client, &ns, &format!("{NEAR4}/24"), &format!("{FAR4}/24"));
        for (n, dev, a) in [(client, &near, NEAR6), (&ns, &far, FAR6)] {
            run_ok(&[
                "ip",
                "-n",
                n.name(),
                "-6",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
        let rules = format!(
            "table inet count {{\n chain pre {{\n  type filter hook prerouting priority -300; policy accept;\n\
             ip saddr {NEAR4} icmp type echo-request counter comment \"icmp\"\n\
             ip saddr {NEAR4} udp dport 9999 counter comment \"udp\"\n\
             ip saddr {NEAR4} udp dport 53 counter comment \"dns\"\n\
             ip6 saddr {NEAR6} icmpv6 type echo-request counter comment \"icmpv6\"\n\
             ip6 saddr {NEAR6} udp dport 9999 counter comment \"udp6\"\n }}\n}}\n"
        );
        let file = lab.dir().join("count.nft");
        fs::write(&file, rules).expect("write count.nft");
        ns.exec_ok(&["nft", "-f", file.to_str().expect("UTF-8")]);
        Outside { ns }
    }

    /// The packet counters, in [`COUNTERS`] order.
    fn counts(&self) -> Vec<u64> {
        let text = self.ns.exec_ok(&["nft", "list", "table", "inet", "count"]);
        COUNTERS
            .iter()
            .map(|c| {
                let line = text
                    .lines()
                    .find(|l| l.contains(&format!("comment \"{c}\"")))
                    .unwrap_or_else(|| panic!("no counter {c}:\n{text}"));
                let n = line
                    .split_whitespace()
                    .skip_while(|w| *w != "packets")
                    .nth(1)
                    .unwrap_or_else(|| panic!("no packet count: {line}"));
                n.parse().unwrap_or_else(|e| panic!("{n}: {e}"))
            })
            .collect()
    }

    /// Runs `rounds` rounds of probes from `from` and waits for them.
    fn probe(&self, from: &Netns, rounds: u32) {
        let script = format!(
            "for i in $(seq 1 {rounds}); do {}; sleep 0.1; done",
            probe_round()
        );
        from.exec(
            &["bash", "-c", &script],
            Duration::from_secs(u64::from(rounds) * 4 + 10),
        );
    }

    /// Every kind of probe gets through (at most 10 s of tries): the control that shows the
    /// probes and counters work, and that the switch is off.
    fn assert_reachable(&self, from: &Netns) {
        let before = self.counts();
        let ok = poll_until(Duration::from_secs(10), || {
            self.probe(from, 1);
            let now = self.counts();
            now.iter().zip(&before).all(|(n, b)| n > b).then_some(())
        });
        assert!(
            ok.is_some(),
            "the outside host is not reachable: {:?} -> {:?} ({COUNTERS:?})",
            before,
            self.counts()
        );
    }
}

/// Probes sent in the background until stopped (at most 60 s).
struct Probe {
    proc: Proc,
}

impl Probe {
    fn start(lab: &Lab, from: &Netns, name: &str) -> Probe {
        let script = format!(
            "end=$((SECONDS+60)); while [ $SECONDS -lt $end ]; do {}; sleep 0.1; done",
            probe_round()
        );
        let log = lab.dir().join(format!("{name}.log"));
        Probe {
            proc: from.spawn(name, &["bash", "-c", &script], &log),
        }
    }

    /// Stops it; returns how many rounds it sent.
    fn stop(mut self) -> usize {
        self.proc.kill();
        self.proc.log().lines().filter(|l| *l == "round").count()
    }
}

fn wait_up(p: &mut Proc, lab: &Lab) {
    if let Err(e) = p.wait_for_line(UP, UP_TIMEOUT) {
        panic!("{e}\nserver log:\n{}", tail(&lab.server_log(), 30));
    }
}

/// `warren client --kill-switch-off` in `ns`: (success, output).
fn kill_switch_off(ns: &Netns) -> (bool, String) {
    let out = ns.exec(
        &[WARREN_BIN, "client", "--kill-switch-off"],
        Duration::from_secs(30),
    );
    (out.success(), format!("{}{}", out.stdout, out.stderr))
}

fn journal_of(pid: u32) -> PathBuf {
    PathBuf::from(format!("/run/warren/killswitch-{pid}.journal"))
}

fn ping_tunnel(ns: &Netns) {
    let ok = poll_until(Duration::from_secs(10), || {
        ns.ping(SERVER_TUN_ADDR, 1, 1).success().then_some(())
    });
    assert!(ok.is_some(), "no traffic through the tunnel");
}

#[test]
fn kill_switch_holds_through_a_server_restart_and_goes_on_exit() {
    let mut lab = Lab::p256("ks-restart", ServerKind::Openvpn);
    let mut sc = lab.server_conf();
    // Pushes ping 1 / ping-restart 5: the client notices the dead server within 5 s.
    sc.extra.push("keepalive 1 5".into());
    for o in [
        "dhcp-option DOMAIN vpn.example",
        "dhcp-option DOMAIN-SEARCH corp.example",
        "dhcp-option DNS 10.8.0.1",
        "dhcp-option DNS6 fd00:8::1",
        "block-outside-dns",
    ] {
        sc.extra.push(format!("push \"{o}\""));
    }
    lab.start_server(&sc);
    let cc = lab.client_conf(&lab.pki.clients[0].clone());
    let p = prepare_client(&mut lab, cc);
    let outside = Outside::new(&lab, &p.ns);
    let rules_before = ruleset(&p.ns);
    let routes_before = net_snapshot(&p.ns);
    let resolv_before = p.etc.resolv_conf();
    outside.assert_reachable(&p.ns);

    let mut client = spawn_client(&lab, "client1", p, &["--kill-switch"]);
    client
        .proc
        .wait_for_line(SWITCH_ON, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let base = outside.counts();
    client.expect_up(&lab, UP_TIMEOUT);
    let rules = ruleset(&client.ns);
    for want in [
        "table inet warren-killswitch".to_owned(),
        format!("oifname \"{}\" accept", client.dev),
        format!(
            "ip daddr {} udp dport {SERVER_PORT} accept",
            client.server_underlay
        ),
        "policy drop".to_owned(),
    ] {
        assert!(rules.contains(&want), "missing `{want}`:\n{rules}");
    }
    ping_tunnel(&client.ns);

    // The pushed DNS options.
    let resolv = String::from_utf8_lossy(&client.etc.resolv_conf()).into_owned();
    for want in [
        "search vpn.example corp.example\n",
        "nameserver 10.8.0.1\n",
        "nameserver fd00:8::1\n",
    ] {
        assert!(resolv.contains(want), "missing `{want}`:\n{resolv}");
    }

    // A live client's switch is not for --kill-switch-off to remove.
    let (ok, out) = kill_switch_off(&client.ns);
    assert!(!ok, "{out}");
    assert!(out.contains("runs with the kill switch on"), "{out}");
    assert!(ruleset(&client.ns).contains("warren-killswitch"));

    // Probes all through a server restart.
    let probe = Probe::start(&lab, &client.ns, "probe");
    std::thread::sleep(Duration::from_secs(1));
    lab.server().kill();
    std::thread::sleep(Duration::from_secs(2));
    let conf = lab.dir().join("server.conf");
    let conf = conf.to_str().expect("UTF-8").to_owned();
    let dir = lab.dir().to_path_buf();
    let mut server2 = lab.server_ns.spawn_env(
        "server2",
        &["openvpn", "--config", &conf],
        &[],
        &dir,
        &dir.join("server2.log"),
    );
    if let Err(e) = client
        .proc
        .wait_for_line(RECONNECTED, Duration::from_secs(30))
    {
        panic!("{e}\nrestarted server log:\n{}", server2.log_tail(30));
    }
    ping_tunnel(&client.ns);
    assert!(server2.is_running(), "{}", server2.log_tail(20));
    std::thread::sleep(Duration::from_secs(1));
    let rounds = probe.stop();
    assert!(rounds >= 5, "the probe ran only {rounds} rounds");
    assert_eq!(
        outside.counts(),
        base,
        "probes got past the kill switch ({COUNTERS:?}); client log:\n{}",
        client.proc.log_tail(30)
    );
    assert!(client.proc.is_running());

    // A clean exit takes the switch off, exactly.
    client.stop_cleanly();
    assert_eq!(
        ruleset(&client.ns),
        rules_before,
        "nft ruleset not restored"
    );
    assert_eq!(net_snapshot(&client.ns), routes_before);
    assert_eq!(client.etc.resolv_conf(), resolv_before);
    assert!(!journal_of(client.proc.pid()).exists());
    outside.assert_reachable(&client.ns);
}

#[test]
fn a_killed_client_leaves_the_switch_on_until_removed() {
    let mut lab = Lab::p256("ks-killed", ServerKind::Openvpn);
    let mut sc = lab.server_conf();
    sc.extra.push("push \"dhcp-option DNS 10.8.0.1\"".into());
    lab.start_server(&sc);
    let mut plain = lab.client_conf(&lab.pki.clients[0].clone());
    let mut cc = plain.clone();
    cc.extra.push("warren-kill-switch on".into());
    let p = prepare_client(&mut lab, cc);
    plain.remote.0 = p.srv.clone();
    let outside = Outside::new(&lab, &p.ns);
    let rules_before = ruleset(&p.ns);
    let resolv_before = p.etc.resolv_conf();
    outside.assert_reachable(&p.ns);
    let plain_profile = lab.dir().join("plain.ovpn");
    plain.write(&plain_profile);

    // A: the profile's directive; killed.
    let mut a = spawn_client(&lab, "client-a", p, &[]);
    a.expect_up(&lab, UP_TIMEOUT);
    let ns = &a.ns;
    a.proc.kill();
    let base = outside.counts();
    assert!(ruleset(ns).contains("table inet warren-killswitch"));
    outside.probe(ns, 5);
    assert_eq!(outside.counts(), base, "a dead client's switch must hold");
    assert!(journal_of(a.proc.pid()).exists());

    // B: replaces A's switch in one transaction; killed too.
    let mut b = client_common::spawn_profile(&lab, ns, "client-b", &a.profile, &["--kill-switch"]);
    wait_up(&mut b, &lab);
    let log = b.log();
    assert!(
        log.contains(&format!(
            "replaced the kill switch that warren client {} left on",
            a.proc.pid()
        )),
        "{}",
        tail(&log, 30)
    );
    assert!(!journal_of(a.proc.pid()).exists());
    assert_eq!(
        ruleset(ns).matches("table inet warren-killswitch").count(),
        1
    );
    b.kill();
    assert!(journal_of(b.pid()).exists());

    // --kill-switch-off: the switch and the killed client's DNS go.
    let (ok, out) = kill_switch_off(ns);
    assert!(ok, "{out}");
    assert!(out.contains("kill switch off"), "{out}");
    assert_eq!(ruleset(ns), rules_before, "nft ruleset not restored");
    assert_eq!(a.etc.resolv_conf(), resolv_before);
    assert!(!journal_of(b.pid()).exists());
    outside.assert_reachable(ns);
    let (ok, out) = kill_switch_off(ns);
    assert!(ok && out.contains("no kill switch was on"), "{out}");

    // C leaves a switch behind; D, without the switch, removes it as it starts.
    let mut c = client_common::spawn_profile(&lab, ns, "client-c", &a.profile, &[]);
    wait_up(&mut c, &lab);
    c.kill();
    assert!(ruleset(ns).contains("warren-killswitch"));
    let mut d = client_common::spawn_profile(&lab, ns, "client-d", &plain_profile, &[]);
    wait_up(&mut d, &lab);
    assert!(
        d.log()
            .contains("removed the kill switch an earlier warren client left on"),
        "{}",
        d.log_tail(30)
    );
    assert_eq!(ruleset(ns), rules_before);
    d.terminate(Duration::from_secs(5));
    assert!(
        d.exited().is_some_and(|s| s.success()),
        "{}",
        d.log_tail(20)
    );
    assert_eq!(ruleset(ns), rules_before);
    assert_eq!(a.etc.resolv_conf(), resolv_before);
}

#[test]
fn kill_switch_with_a_privilege_drop() {
    let mut lab = Lab::p256("ks-user", ServerKind::Openvpn);
    let mut sc = lab.server_conf();
    sc.extra.push("push \"dhcp-option DNS 10.8.0.1\"".into());
    lab.start_server(&sc);
    let group = nobody_group();
    let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
    cc.extra.push("user nobody".into());
    cc.extra.push(format!("group {group}"));
    let p = prepare_client(&mut lab, cc);
    let rules_before = ruleset(&p.ns);
    let resolv_before = p.etc.resolv_conf();
    let dropped = format!("dropped privileges to nobody:{group}, keeping CAP_NET_ADMIN");

    // A clean exit: the unprivileged client removes its table; the root helper the journal.
    let mut c = spawn_client(&lab, "client-term", p, &["--kill-switch"]);
    c.expect_up(&lab, UP_TIMEOUT);
    c.proc
        .wait_for_line(&dropped, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    ping_tunnel(&c.ns);
    c.stop_cleanly();
    assert_eq!(ruleset(&c.ns), rules_before, "nft ruleset not restored");
    let gone = poll_until(Duration::from_secs(10), || {
        (!journal_of(c.proc.pid()).exists()).then_some(())
    });
    assert!(gone.is_some(), "the helper left the journal");
    let log = c.log();
    assert!(!log.contains("still on"), "{}", tail(&log, 20));
    let restored = poll_until(Duration::from_secs(10), || {
        (c.etc.resolv_conf() == resolv_before).then_some(())
    });
    assert!(restored.is_some(), "resolv.conf not restored");

    // SIGKILL: the helper puts DNS back but leaves the switch on.
    let ns = &c.ns;
    let mut k =
        client_common::spawn_profile(&lab, ns, "client-kill", &c.profile, &["--kill-switch"]);
    wait_up(&mut k, &lab);
    k.wait_for_line(&dropped, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    k.kill();
    let reported = poll_until(Duration::from_secs(10), || {
        k.log().contains("ended: undid").then_some(())
    });
    assert!(reported.is_some(), "{}", k.log_tail(20));
    assert_eq!(c.etc.resolv_conf(), resolv_before);
    assert!(ruleset(ns).contains("table inet warren-killswitch"));
    assert!(journal_of(k.pid()).exists());
    let (ok, out) = kill_switch_off(ns);
    assert!(ok, "{out}");
    assert_eq!(ruleset(ns), rules_before);
}
