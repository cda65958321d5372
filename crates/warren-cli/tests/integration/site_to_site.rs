//! Issue 12: site-to-site (client-config-dir `iroute`, server `route`, and the user
//! database's `warren user set NAME --subnet`).
//!
//! Namespaces: the warren server with a LAN behind it (192.168.100.0/24, host .2), and
//! clients that each have a LAN behind them (192.168.101.0/24 behind site A, 192.168.102.0/24
//! behind site B, host .2 in each). The LAN hosts know nothing of the VPN: their default
//! route is their gateway (the server, or the client), which forwards. The tests ping
//! between the LAN hosts: server LAN <-> site A both ways, and site A <-> site B through
//! the server (the server's kernel routes the packet back into the tun, and warren's data
//! plane hands it to the client that owns the network).
//!
//! Needs root (network namespaces), `openvpn` and `ping`.

#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;
use crate::state_common;

use std::fs;
use std::time::Duration;

use common::lab::{Client, Lab, ServerKind, push_reply};
use common::netns::{Netns, link};
use common::pki::{KeyFormat, KeyType};
use state_common::{Warren, ZeroServer};

const SERVER_LAN: &str = "192.168.100";
const SITE_A_LAN: &str = "192.168.101";
const SITE_B_LAN: &str = "192.168.102";

fn lab(test: &str) -> Lab {
    Lab::with_pki(test, ServerKind::Warren, KeyType::P256, KeyFormat::Pkcs8)
}

/// A LAN namespace behind `gw` (`PREFIX.1` on the gateway, the host `PREFIX.2` with its
/// default route through it); the gateway forwards.
fn lan_behind(gw: &Netns, prefix: &str) -> Netns {
    let host = Netns::new();
    link(
        gw,
        &host,
        &format!("{prefix}.1/24"),
        &format!("{prefix}.2/24"),
    );
    host.exec_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        &format!("{prefix}.1"),
    ]);
    gw.sysctl("net.ipv4.ip_forward", "1");
    host
}

/// Pings `dst` from `from` (3 echoes, bounded) and panics with `logs` on failure.
/// Pings each destination from its namespace, in order; `what` names the pair.
fn assert_pings(pairs: &[(&Netns, &str, &str)], logs: &dyn Fn() -> String) {
    for (from, what, dst) in pairs {
        let out = from.ping(dst, 3, 2);
        assert!(
            out.success(),
            "{what}: ping {dst} failed:\n{}{}\n{}",
            out.stdout,
            out.stderr,
            logs()
        );
    }
}

/// The server config for two sites: the sites' networks in the server's kernel (`route`)
/// and in their ccd files (`iroute`), every LAN pushed to every client.
fn two_site_server(lab: &mut Lab, extra: &[&str]) {
    let ccd = lab.dir().join("ccd");
    fs::create_dir_all(&ccd).expect("ccd dir");
    fs::write(
        ccd.join("client1"),
        format!("# site A\niroute {SITE_A_LAN}.0 255.255.255.0\n"),
    )
    .expect("ccd file");
    fs::write(
        ccd.join("client2"),
        format!("iroute {SITE_B_LAN}.0 255.255.255.0\n"),
    )
    .expect("ccd file");
    // A file warren cannot use entirely refuses its client.
    fs::write(
        ccd.join("client3"),
        "push \"route 10.99.0.0 255.255.0.0\"\niroute 192.168.103.1 255.255.255.0\n",
    )
    .expect("ccd file");
    let mut conf = lab.server_conf();
    conf.extra = vec![
        format!("client-config-dir {}", ccd.display()),
        format!("route {SITE_A_LAN}.0 255.255.255.0"),
        format!("route {SITE_B_LAN}.0 255.255.255.0"),
        format!("push \"route {SERVER_LAN}.0 255.255.255.0\""),
        format!("push \"route {SITE_A_LAN}.0 255.255.255.0\""),
        format!("push \"route {SITE_B_LAN}.0 255.255.255.0\""),
    ];
    conf.extra.extend(extra.iter().map(|s| s.to_string()));
    lab.start_server(&conf);
}

/// Site A with a LAN and the stock client; returns (client, LAN host).
fn stock_site(lab: &mut Lab, name: &str, cert: usize, lan: &str) -> (Client, Netns) {
    let conf = lab.client_conf(&lab.pki.clients[cert].clone());
    let c = lab.connect_client(name, conf);
    let host = lan_behind(&c.ns, lan);
    (c, host)
}

#[test]
fn stock_clients_connect_two_sites_and_the_server_lan() {
    let mut lab = lab("s2s-stock");
    let server_lan = lan_behind(&lab.server_ns, SERVER_LAN);
    two_site_server(&mut lab, &[]);
    let (a, lan_a) = stock_site(&mut lab, "site-a", 0, SITE_A_LAN);
    let (b, lan_b) = stock_site(&mut lab, "site-b", 1, SITE_B_LAN);

    // Each site is pushed the other LANs but not its own (openvpn-ops.md §6.4).
    let (ra, rb) = (push_reply(&a.log()), push_reply(&b.log()));
    assert!(
        !ra.contains(&format!("route {SITE_A_LAN}.0"))
            && ra.contains(&format!("route {SITE_B_LAN}.0"))
            && ra.contains(&format!("route {SERVER_LAN}.0")),
        "{ra}"
    );
    assert!(
        !rb.contains(&format!("route {SITE_B_LAN}.0"))
            && rb.contains(&format!("route {SITE_A_LAN}.0")),
        "{rb}"
    );
    let route = lab
        .server_ns
        .exec_ok(&["ip", "route", "show", &format!("{SITE_A_LAN}.0/24")]);
    assert!(route.contains("dev tun"), "server route: {route}");

    let logs = || {
        format!(
            "server:\n{}\nsite A:\n{}\nsite B:\n{}",
            lab.server_log(),
            a.proc.log_tail(20),
            b.proc.log_tail(20)
        )
    };
    // The server's LAN and site A, both ways; then site to site, both ways.
    assert_pings(
        &[
            (&lan_a, "site A -> server LAN", &format!("{SERVER_LAN}.2")),
            (
                &server_lan,
                "server LAN -> site A",
                &format!("{SITE_A_LAN}.2"),
            ),
            (&lan_b, "site B -> server LAN", &format!("{SERVER_LAN}.2")),
            (&lan_a, "site A -> site B", &format!("{SITE_B_LAN}.2")),
            (&lan_b, "site B -> site A", &format!("{SITE_A_LAN}.2")),
        ],
        &logs,
    );

    // A bad line in a client's file: refused, and the log names the file and line.
    let conf = lab.client_conf(&lab.pki.clients[2].clone());
    let mut bad = lab.start_client("bad-ccd", conf);
    if let Err(e) = bad
        .proc
        .wait_for_line(state_common::AUTH_FAILED, Duration::from_secs(20))
    {
        panic!(
            "the client with a bad ccd file got in: {e}\nserver:\n{}",
            lab.server_log()
        );
    }
    let server_log = lab.server_log();
    assert!(
        server_log.contains("ccd/client3:2"),
        "the refusal names the file and line:\n{server_log}"
    );
    lab.assert_server_running();
}

#[test]
fn warren_client_as_a_site() {
    let mut lab = lab("s2s-warren-client");
    let server_lan = lan_behind(&lab.server_ns, SERVER_LAN);
    two_site_server(&mut lab, &[]);
    // Site A runs `warren client`; site B the stock client.
    let conf = lab.client_conf(&lab.pki.clients[0].clone());
    let a = client_common::connect_client(&mut lab, "site-a", conf, &[]);
    let lan_a = lan_behind(&a.ns, SITE_A_LAN);
    let (b, lan_b) = stock_site(&mut lab, "site-b", 1, SITE_B_LAN);
    // warren client installed the pushed routes to the server LAN and site B.
    for net in [SERVER_LAN, SITE_B_LAN] {
        let r =
            a.ns.exec_ok(&["ip", "route", "show", &format!("{net}.0/24")]);
        assert!(r.contains(&a.dev), "route {net}.0/24 on site A: {r:?}");
    }
    let logs = || {
        format!(
            "server:\n{}\nsite A:\n{}\nsite B:\n{}",
            lab.server_log(),
            a.proc.log_tail(20),
            b.proc.log_tail(20)
        )
    };
    assert_pings(
        &[
            (&lan_a, "site A -> server LAN", &format!("{SERVER_LAN}.2")),
            (
                &server_lan,
                "server LAN -> site A",
                &format!("{SITE_A_LAN}.2"),
            ),
            (&lan_a, "site A -> site B", &format!("{SITE_B_LAN}.2")),
            (&lan_b, "site B -> site A", &format!("{SITE_A_LAN}.2")),
        ],
        &logs,
    );
}

#[test]
fn user_database_subnets_with_the_zero_config_server() {
    let mut lab = lab("s2s-userdb");
    let server_lan = lan_behind(&lab.server_ns, SERVER_LAN);
    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    let mut server = ZeroServer::start(&lab, &state, &[]);
    w.add_user("office", &[]);
    let push = format!("route {SERVER_LAN}.0 255.255.255.0");
    w.ok(&[
        "user",
        "set",
        "office",
        "--subnet",
        &format!("{SITE_A_LAN}.0/24"),
        "--push",
        &push,
    ]);
    let shown = w.ok(&["user", "show", "office"]).stdout;
    assert!(
        shown.contains(&format!("{SITE_A_LAN}.0/24")) && shown.contains(&push),
        "{shown}"
    );
    // The running server routes the new subnet into its tun (it watches the database).
    server.wait_for(
        &format!("route {SITE_A_LAN}.0/24 dev {}", server.dev),
        Duration::from_secs(10),
    );
    let route = lab
        .server_ns
        .exec_ok(&["ip", "route", "show", &format!("{SITE_A_LAN}.0/24")]);
    assert!(route.contains(&server.dev), "server route: {route}");

    let c = state_common::connect(&mut lab, &server, &w, "office", "office", None, &[]);
    assert!(push_reply(&c.log()).contains(&push), "{}", c.log());
    let lan_a = lan_behind(&c.ns, SITE_A_LAN);
    let logs = || {
        format!(
            "server:\n{}\nclient:\n{}",
            server.log(),
            c.proc.log_tail(20)
        )
    };
    assert_pings(
        &[
            (
                &lan_a,
                "office LAN -> server LAN",
                &format!("{SERVER_LAN}.2"),
            ),
            (
                &server_lan,
                "server LAN -> office LAN",
                &format!("{SITE_A_LAN}.2"),
            ),
        ],
        &logs,
    );

    // Removing the subnet takes the kernel route away.
    w.ok(&["user", "set", "office", "--no-subnets"]);
    server.wait_for(
        &format!("route {SITE_A_LAN}.0/24 dev {} removed", server.dev),
        Duration::from_secs(10),
    );
    drop(c);
    server.stop();
}

/// Like [`lan_behind`], with IPv6 too: `P6::1/64` on the gateway, `P6::2/64` on the host.
fn dual_lan_behind(gw: &Netns, prefix: &str, p6: &str) -> Netns {
    let host = Netns::new();
    let (gw_dev, host_dev) = link(
        gw,
        &host,
        &format!("{prefix}.1/24"),
        &format!("{prefix}.2/24"),
    );
    gw.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{p6}::1/64"),
        "dev",
        &gw_dev,
        "nodad",
    ]);
    host.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{p6}::2/64"),
        "dev",
        &host_dev,
        "nodad",
    ]);
    host.exec_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        &format!("{prefix}.1"),
    ]);
    host.exec_ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        &format!("{p6}::1"),
    ]);
    gw.sysctl("net.ipv4.ip_forward", "1");
    gw.sysctl("net.ipv6.conf.all.forwarding", "1");
    host
}

#[test]
fn ipv6_site_with_iroute_ipv6() {
    let mut lab = lab("s2s-ipv6");
    let server_lan = dual_lan_behind(&lab.server_ns, SERVER_LAN, "fd00:100");
    let ccd = lab.dir().join("ccd");
    fs::create_dir_all(&ccd).expect("ccd dir");
    fs::write(ccd.join("client1"), "iroute-ipv6 fd00:101::/64\n").expect("ccd file");
    let mut conf = lab.server_conf();
    conf.extra = vec![
        "server-ipv6 fd00:8::/64".into(),
        format!("client-config-dir {}", ccd.display()),
        "route-ipv6 fd00:101::/64".into(),
        "push \"route-ipv6 fd00:100::/64\"".into(),
        "push \"route-ipv6 fd00:101::/64\"".into(),
    ];
    lab.start_server(&conf);
    let cconf = lab.client_conf(&lab.pki.clients[0].clone());
    let a = lab.connect_client("site-a", cconf);
    let lan_a = dual_lan_behind(&a.ns, SITE_A_LAN, "fd00:101");
    let reply = push_reply(&a.log());
    assert!(
        reply.contains("route-ipv6 fd00:100::/64") && !reply.contains("route-ipv6 fd00:101::/64"),
        "{reply}"
    );
    let logs = || {
        format!(
            "server:\n{}\nsite A:\n{}",
            lab.server_log(),
            a.proc.log_tail(20)
        )
    };
    assert_pings(
        &[
            (&lan_a, "site A -> server LAN (IPv6)", "fd00:100::2"),
            (&server_lan, "server LAN -> site A (IPv6)", "fd00:101::2"),
        ],
        &logs,
    );
}
