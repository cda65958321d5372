//! warren-net over netlink, both address families, against the real kernel.
//!
//! * Addresses and routes of IPv4 and IPv6 added inside a test namespace are read back
//!   through netlink (`NetState::device_addresses`, `main_routes`, `route_get`), look as
//!   iproute2 would have made them (protocol `boot`, the same scopes), `nodad` skips
//!   duplicate address detection, and `restore` leaves routes and addresses byte for byte
//!   as they were.
//! * A dual-stack tunnel (`redirect-gateway def1 ipv6` to an IPv6 server, `route-ipv6`,
//!   `ifconfig-ipv6`) applied by a run that is then killed with SIGKILL is undone by the
//!   next run from the journal it left behind.
//! * The server's NAT masquerades IPv6 VPN traffic too and turns on IPv6 forwarding per
//!   device (`force_forwarding`) only for the tun and the uplink, and puts it all back.
//!
//! The warren-net calls run in a copy of this test binary started inside the namespace
//! (`net6_helper_process`); the outer test sets up and inspects with `ip`. Needs root.
#![allow(clippy::disallowed_methods)]

use crate::common;

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::netns::{Netns, link, unique_name};
use common::process::{Proc, poll_until, tail};
use warren_net::{
    DnsBackend, DnsSpec, Family, IpNet, Ipv4Net, Ipv6Net, Nat, NatSpec, NetError, NetState,
    PathInfo, Redirect, Route6Request, RouteSpec, TunnelNet, TunnelSpec, TunnelSpec6,
};

const HELPER: &str = "net6::net6_helper_process";
const MODE: &str = "WARREN_NET6_HELPER";
const DIR: &str = "WARREN_NET6_DIR";
const TUN: &str = "WARREN_NET6_TUN";
const UP: &str = "WARREN_NET6_UP";

/// The uplink's gateways in the client namespace (on the veth's own subnets).
const GW4: &str = "198.18.0.1";
const GW6: &str = "2001:db8:1::1";
/// The VPN server, reached over IPv6 through the uplink.
const SERVER6: &str = "2001:db8:ff::10";

/// Not a test: the part that runs inside the namespace (a no-op in a normal run).
#[test]
fn net6_helper_process() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let h = Helper {
        dir: PathBuf::from(env(DIR)),
        tun: env(TUN),
        up: env(UP),
    };
    match mode.as_str() {
        "readback" => h.readback(),
        "apply-and-hang" => h.apply_and_hang(),
        "recover-then-run" => h.recover_then_run(),
        "nat" => h.nat(),
        other => panic!("unknown mode {other}"),
    }
    std::process::exit(0);
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("ipv4")
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("ipv6")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn sh(argv: &[&str]) -> String {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn route(dst: &str, prefix: u8, via: Option<&str>, dev: &str, metric: Option<u32>) -> RouteSpec {
    RouteSpec {
        dst: IpNet::new(ip(dst), prefix),
        via: via.map(ip),
        dev: Some(dev.to_owned()),
        metric,
    }
}

/// Whether the kernel lists `r` (the kernel's metric is not compared unless `r` has one).
fn listed(st: &NetState, r: &RouteSpec) -> bool {
    st.main_routes(r.family())
        .expect("main routes")
        .iter()
        .any(|k| {
            k.dst == r.dst
                && k.via == r.via
                && k.dev == r.dev
                && (r.metric.is_none() || k.metric == r.metric)
        })
}

fn has_addr(st: &NetState, dev: &str, addr: &str, prefix: u8) -> bool {
    let a = ip(addr);
    st.device_addresses(dev, Family::of(a))
        .expect("addresses")
        .iter()
        .any(|d| d.addr == a && d.prefix == prefix && d.dev == dev)
}

/// The dual-stack tunnel of the crash test.
fn dual_stack_spec(tun: &str) -> TunnelSpec {
    TunnelSpec {
        dev: tun.to_owned(),
        address: v4("10.8.0.2"),
        prefix: 24,
        mtu: 1500,
        vpn_gateway: Some(v4("10.8.0.1")),
        server: ip(SERVER6),
        routes: Vec::new(),
        redirect: Some(Redirect {
            def1: true,
            local: false,
        }),
        dns: DnsSpec::default(),
        ipv6: Some(TunnelSpec6 {
            address: v6("fd00:8::1000"),
            prefix: 64,
            routes: vec![Route6Request {
                network: Ipv6Net::new(v6("fd00:99::"), 64),
                metric: None,
            }],
            redirect: Some(Redirect::default()),
        }),
    }
}

/// The routes [`dual_stack_spec`] must add.
fn dual_stack_routes(tun: &str, up: &str) -> Vec<RouteSpec> {
    vec![
        route("0.0.0.0", 1, Some("10.8.0.1"), tun, None),
        route("128.0.0.0", 1, Some("10.8.0.1"), tun, None),
        route(SERVER6, 128, Some(GW6), up, None),
        route("::", 3, None, tun, None),
        route("2000::", 4, None, tun, None),
        route("3000::", 4, None, tun, None),
        route("fc00::", 7, None, tun, None),
        route("fd00:99::", 64, None, tun, None),
    ]
}

struct Helper {
    dir: PathBuf,
    tun: String,
    up: String,
}

impl Helper {
    fn journal(&self) -> PathBuf {
        self.dir.join("journal")
    }

    fn readback(&self) {
        let (tun, up) = (self.tun.as_str(), self.up.as_str());
        let mut st = NetState::with_journal_dir(&self.journal());

        // IPv4: the tun's address replaced in place (not journaled).
        st.set_address(tun, v4("10.8.0.3"), 24).expect("set v4");
        let a4 = st.device_addresses(tun, Family::V4).expect("v4 addrs");
        assert_eq!(a4.len(), 1, "{a4:?}");
        assert_eq!((a4[0].addr, a4[0].prefix), (ip("10.8.0.3"), 24));

        // IPv6 on the tun, journaled; a second add is refused and not journaled.
        st.add_address(tun, ip("fd00:8::1000"), 64, true)
            .expect("add v6");
        assert!(has_addr(&st, tun, "fd00:8::1000", 64));
        assert!(matches!(
            st.add_address(tun, ip("fd00:8::1000"), 64, true),
            Err(NetError::AddressExists { .. })
        ));
        assert_eq!(st.addresses().count(), 1);

        // `nodad` on a device that runs duplicate address detection (the veth): usable
        // at once; without it the address starts tentative (DAD takes a second).
        st.add_address(up, ip("2001:db8:1::7"), 64, true)
            .expect("nodad");
        st.add_address(up, ip("2001:db8:1::8"), 64, false)
            .expect("dad");
        let shown = sh(&["ip", "-6", "-o", "addr", "show", "dev", up]);
        let line = |a: &str| {
            shown
                .lines()
                .find(|l| l.contains(a))
                .unwrap_or_else(|| panic!("{a} missing:\n{shown}"))
                .to_owned()
        };
        assert!(!line("2001:db8:1::7/64").contains("tentative"), "{shown}");
        assert!(line("2001:db8:1::8/64").contains("tentative"), "{shown}");

        // Routes of both families, read back through netlink.
        let routes = [
            route("192.0.2.0", 24, Some("10.8.0.1"), tun, None),
            route("198.51.100.0", 24, None, tun, Some(7)),
            route("203.0.113.10", 32, Some(GW4), up, None),
            route("fd00:99::", 64, None, tun, Some(5)),
            route(SERVER6, 128, Some(GW6), up, None),
            route("2001:db8:77::", 48, Some("fe80::1"), up, None),
        ];
        for r in &routes {
            st.add_route(r).unwrap_or_else(|e| panic!("add {r}: {e}"));
        }
        for r in &routes {
            assert!(listed(&st, r), "{r} not listed by the kernel");
        }
        assert_eq!(st.routes().count(), routes.len());
        // As iproute2 makes them: protocol boot; an IPv4 route without gateway on-link.
        let d4 = sh(&["ip", "-d", "-4", "route", "show", "198.51.100.0/24"]);
        assert!(d4.contains("proto boot scope link"), "{d4}");
        let d4 = sh(&["ip", "-d", "-4", "route", "show", "192.0.2.0/24"]);
        assert!(d4.contains("proto boot scope global"), "{d4}");
        let d6 = sh(&["ip", "-d", "-6", "route", "show", "fd00:99::/64"]);
        assert!(
            d6.contains(&format!(
                "fd00:99::/64 dev {tun} proto boot scope global metric 5"
            )),
            "{d6}"
        );
        assert!(matches!(
            st.add_route(&routes[4]),
            Err(NetError::RouteExists { .. })
        ));
        assert_eq!(st.routes().count(), routes.len());

        // Lookups in both families.
        let path = |a: &str| st.route_get(ip(a)).expect("route get");
        let p = |gw: Option<&str>, dev: &str| {
            Some(PathInfo {
                gateway: gw.map(ip),
                dev: dev.to_owned(),
            })
        };
        assert_eq!(path("2001:db8:77::1"), p(Some("fe80::1"), up));
        assert_eq!(path(SERVER6), p(Some(GW6), up));
        assert_eq!(path("fd00:99::5"), p(None, tun));
        assert_eq!(path(GW6), p(None, up));
        assert_eq!(path("192.0.2.9"), p(Some("10.8.0.1"), tun));
        assert_eq!(path("198.19.0.9"), p(Some(GW4), up));
        // No IPv6 default route here: no path.
        assert_eq!(path("2001:db8:dead::1"), None);
        // Local addresses are no path out.
        assert_eq!(path("10.8.0.3"), None);

        // One route removed, then everything restored.
        st.remove_route(&routes[3]).expect("remove");
        assert!(!listed(&st, &routes[3]));
        st.remove_address(up, ip("2001:db8:1::8"), 64)
            .expect("remove address");
        assert!(!has_addr(&st, up, "2001:db8:1::8", 64));
        st.set_address(tun, v4("10.8.0.2"), 24).expect("set v4");
        let journal = self
            .journal()
            .join(format!("net-{}.journal", std::process::id()));
        let text = fs::read_to_string(&journal).expect("journal written");
        assert!(
            text.contains(&format!("route {SERVER6} 128 {GW6} ")),
            "{text}"
        );
        assert!(text.contains("address fd00:8::1000 64 "), "{text}");
        st.restore().expect("restore");
        for r in &routes {
            assert!(!listed(&st, r), "{r} left behind");
        }
        assert!(!has_addr(&st, tun, "fd00:8::1000", 64));
        assert!(!has_addr(&st, up, "2001:db8:1::7", 64));
        assert!(!journal.exists(), "journal kept after a clean restore");
    }

    /// Applies the dual-stack tunnel with an on-disk journal, says so with a marker file
    /// holding its pid, then waits to be killed (bounded: exits without undoing after a
    /// minute, like a crash).
    fn apply_and_hang(&self) {
        let (tun, up) = (self.tun.as_str(), self.up.as_str());
        let mut net = TunnelNet::new(
            NetState::with_journal_dir(&self.journal()),
            DnsBackend::File(self.dir.join("resolv.conf")),
            tun,
            v4("10.8.0.2"),
            24,
            1500,
        );
        let spec = dual_stack_spec(tun);
        net.prepare_remote(spec.server).expect("prepare");
        let notes = net.apply(&spec).expect("apply");
        assert!(notes.is_empty(), "{notes:?}");
        let st = NetState::in_memory();
        for r in dual_stack_routes(tun, up) {
            assert!(listed(&st, &r), "{r} missing");
        }
        assert!(has_addr(&st, tun, "fd00:8::1000", 64));
        // Everything but the server goes into the tunnel, in both families.
        let dev_of = |a: &str| st.route_get(ip(a)).expect("get").map(|p| p.dev);
        assert_eq!(dev_of("2001:db8:ff::20").as_deref(), Some(tun));
        assert_eq!(dev_of("fd12::1").as_deref(), Some(tun));
        assert_eq!(dev_of("198.19.0.9").as_deref(), Some(tun));
        assert_eq!(dev_of(SERVER6).as_deref(), Some(up));
        fs::write(self.dir.join("applied"), std::process::id().to_string()).expect("marker");
        std::thread::sleep(Duration::from_secs(60));
        std::mem::forget(net);
        std::process::exit(3);
    }

    /// The next run: undoes the dead run's journal first, then applies and restores.
    fn recover_then_run(&self) {
        let (tun, up) = (self.tun.as_str(), self.up.as_str());
        let dead: u32 = fs::read_to_string(self.dir.join("applied"))
            .expect("marker")
            .parse()
            .expect("pid");
        let st = NetState::in_memory();
        assert!(
            listed(&st, &route("::", 3, None, tun, None)),
            "nothing left to recover?"
        );
        let rec = warren_net::recover_abandoned_in(&self.journal()).expect("recover");
        assert_eq!(rec.pids, vec![dead]);
        for want in [
            format!("route ::/3 dev {tun}"),
            format!("route fc00::/7 dev {tun}"),
            format!("route {SERVER6}/128 via {GW6} dev {up}"),
            format!("address fd00:8::1000/64 dev {tun}"),
            format!("route 0.0.0.0/1 via 10.8.0.1 dev {tun}"),
        ] {
            assert!(rec.undone.contains(&want), "{want} not in {:?}", rec.undone);
        }
        for r in dual_stack_routes(tun, up) {
            assert!(!listed(&st, &r), "{r} left behind");
        }
        assert!(!has_addr(&st, tun, "fd00:8::1000", 64));
        assert!(
            warren_net::recover_abandoned_in(&self.journal())
                .expect("recover")
                .is_empty()
        );
        // This run applies the same tunnel (no "exists") and exits cleanly.
        let mut net = TunnelNet::new(
            NetState::with_journal_dir(&self.journal()),
            DnsBackend::File(self.dir.join("resolv.conf")),
            tun,
            v4("10.8.0.2"),
            24,
            1500,
        );
        let spec = dual_stack_spec(tun);
        net.prepare_remote(spec.server).expect("prepare");
        let notes = net.apply(&spec).expect("apply after recovery");
        assert!(notes.is_empty(), "{notes:?}");
        net.restore().expect("restore");
        for r in dual_stack_routes(tun, up) {
            assert!(!listed(&st, &r), "{r} left behind");
        }
    }

    /// NAT for a tun (`self.tun`, here the server's end of a veth to the client) out of
    /// `self.up`, kept until the file `release` appears.
    fn nat(&self) {
        let spec = NatSpec {
            tun: self.tun.clone(),
            uplinks: vec![self.up.clone()],
            v4: vec![Ipv4Net::new(v4("10.8.0.0"), 24)],
            v6: vec![Ipv6Net::new(v6("fd00:8::"), 64)],
        };
        let uplinks6 = warren_net::default_uplinks_v6().expect("v6 uplinks");
        assert_eq!(uplinks6, vec![self.up.clone()]);
        let mut nat = Nat::apply(&spec, &self.journal()).expect("nat");
        fs::write(self.dir.join("applied"), "").expect("marker");
        let release = self.dir.join("release");
        let up = poll_until(Duration::from_secs(60), || release.exists().then_some(()));
        nat.restore().expect("restore");
        fs::write(self.dir.join("restored"), "").expect("marker");
        assert!(up.is_some(), "never released");
    }
}

/// A namespace for the client-side tests: a persistent tun (no process behind it) with
/// 10.8.0.2/24, and a veth "uplink" with 198.18.0.2/24 and 2001:db8:1::2/64 and default
/// routes of both families through its peer.
struct ClientNs {
    ns: Netns,
    tun: String,
    up: String,
    dir: tempfile::TempDir,
}

impl ClientNs {
    fn new() -> ClientNs {
        let ns = Netns::new();
        let tun = unique_name("wt", 't');
        let up = unique_name("wu", 'a');
        let peer = unique_name("wu", 'b');
        for cmd in [
            vec!["ip", "tuntap", "add", "dev", &tun, "mode", "tun"],
            vec!["ip", "addr", "add", "10.8.0.2/24", "dev", &tun],
            vec!["ip", "link", "set", &tun, "up"],
            vec![
                "ip", "link", "add", &up, "type", "veth", "peer", "name", &peer,
            ],
            vec!["ip", "addr", "add", "198.18.0.2/24", "dev", &up],
            vec![
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8:1::2/64",
                "dev",
                &up,
                "nodad",
            ],
            vec!["ip", "link", "set", &up, "up"],
            vec!["ip", "link", "set", &peer, "up"],
            vec!["ip", "route", "add", "default", "via", GW4, "dev", &up],
            vec![
                "ip", "-6", "route", "add", "default", "via", GW6, "dev", &up,
            ],
            // The first IPv6 address on a device makes the kernel add its multicast route
            // (`ff00::/8 dev TUN table local`), which stays until the device goes, as it
            // would after `ip -6 addr add` + `del`: make it part of the "before".
            vec![
                "ip",
                "-6",
                "addr",
                "add",
                "fd00:ffff::1/128",
                "dev",
                &tun,
                "nodad",
            ],
            vec!["ip", "-6", "addr", "del", "fd00:ffff::1/128", "dev", &tun],
        ] {
            ns.exec_ok(&cmd);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let c = ClientNs { ns, tun, up, dir };
        c.settle();
        c
    }

    /// Waits (bounded) until the veth's link-local addresses are past duplicate address
    /// detection, so that snapshots taken before and after compare equal.
    fn settle(&self) {
        let done = poll_until(Duration::from_secs(15), || {
            let a = self.ns.exec_ok(&["ip", "-6", "addr"]);
            (a.contains("fe80::") && !a.contains("tentative")).then_some(())
        });
        assert!(done.is_some(), "IPv6 DAD did not finish in the namespace");
    }

    /// Routes of both families (all tables) and every address: compared before and after.
    fn snapshot(&self) -> (String, String, String) {
        (
            self.ns
                .exec_ok(&["ip", "-4", "route", "show", "table", "all"]),
            self.ns
                .exec_ok(&["ip", "-6", "route", "show", "table", "all"]),
            self.ns.exec_ok(&["ip", "addr"]),
        )
    }

    fn helper(&self, mode: &str) -> Proc {
        helper_in(&self.ns, mode, self.dir.path(), &self.tun, &self.up)
    }
}

fn helper_in(ns: &Netns, mode: &str, dir: &Path, tun: &str, up: &str) -> Proc {
    let exe = std::env::current_exe().expect("test binary");
    let exe = exe.to_string_lossy().into_owned();
    ns.spawn_env(
        mode,
        &[&exe, "--exact", HELPER, "--nocapture", "--test-threads=1"],
        &[
            (MODE, mode.to_owned()),
            (DIR, dir.to_string_lossy().into_owned()),
            (TUN, tun.to_owned()),
            (UP, up.to_owned()),
        ],
        dir,
        &dir.join(format!("{mode}.log")),
    )
}

/// Runs a helper to its end (bounded) and asserts it succeeded.
fn run(mut p: Proc, what: &str) {
    let st = p.wait_exit(Duration::from_secs(90));
    assert!(
        st.is_some_and(|s| s.success()),
        "{what} failed ({st:?}):\n{}",
        tail(&p.log(), 40)
    );
}

fn wait_for(p: &mut Proc, file: &Path) {
    let ok = poll_until(Duration::from_secs(60), || {
        if file.exists() {
            Some(true)
        } else if p.exited().is_some() {
            Some(false)
        } else {
            None
        }
    });
    assert_eq!(
        ok,
        Some(true),
        "{} never wrote {}:\n{}",
        p.name(),
        file.display(),
        tail(&p.log(), 40)
    );
}

#[test]
fn addresses_and_routes_of_both_families_are_read_back_and_restored() {
    let c = ClientNs::new();
    // Without an IPv6 default route, so that an unrouted IPv6 address has no path.
    c.ns.exec_ok(&["ip", "-6", "route", "del", "default"]);
    let before = c.snapshot();
    run(c.helper("readback"), "readback");
    let after = c.snapshot();
    assert_eq!(after.0, before.0, "IPv4 routes not restored");
    assert_eq!(after.1, before.1, "IPv6 routes not restored");
    assert_eq!(after.2, before.2, "addresses not restored");
}

#[test]
fn ipv6_routes_and_address_of_a_killed_run_are_undone_by_the_next_run() {
    let c = ClientNs::new();
    let before = c.snapshot();
    let mut first = c.helper("apply-and-hang");
    let marker = c.dir.path().join("applied");
    wait_for(&mut first, &marker);
    let pid = first.pid();
    first.kill();
    assert!(
        first.exited().is_some_and(|s| !s.success()),
        "the first run should have died"
    );
    let left = c.snapshot();
    assert!(
        left.1.contains("::/3 dev"),
        "IPv6 redirect gone:\n{}",
        left.1
    );
    assert!(left.2.contains("fd00:8::1000/64"), "IPv6 address gone");
    let journal = c
        .dir
        .path()
        .join("journal")
        .join(format!("net-{pid}.journal"));
    let text = fs::read_to_string(&journal).expect("journal left behind");
    assert!(text.contains("route fc00:: 7 - "), "{text}");

    run(c.helper("recover-then-run"), "recover-then-run");
    let after = c.snapshot();
    assert_eq!(after.0, before.0, "IPv4 routes not restored");
    assert_eq!(after.1, before.1, "IPv6 routes not restored");
    assert_eq!(after.2, before.2, "addresses not restored");
    let journals: Vec<_> = fs::read_dir(c.dir.path().join("journal"))
        .expect("journal dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".journal") || n.ends_with(".tmp"))
        .collect();
    assert!(journals.is_empty(), "journals left: {journals:?}");
}

#[test]
fn nat_masquerades_ipv6_with_per_device_forwarding_and_puts_it_all_back() {
    // client --(10.8.0.0/24, fd00:8::/64: the "tun")-- server --(uplink)-- internet; the
    // internet has no route back to the VPN networks, so only masqueraded packets are
    // answered.
    let client = Netns::new();
    let server = Netns::new();
    let inet = Netns::new();
    let (c_if, s_tun) = link(&client, &server, "10.8.0.2/24", "10.8.0.1/24");
    let (s_up, i_if) = link(&server, &inet, "192.0.2.1/24", "192.0.2.2/24");
    for (ns, a, dev) in [
        (&client, "fd00:8::1000/64", &c_if),
        (&server, "fd00:8::1/64", &s_tun),
        (&server, "2001:db8:2::1/64", &s_up),
        (&inet, "2001:db8:2::2/64", &i_if),
    ] {
        ns.exec_ok(&["ip", "-6", "addr", "add", a, "dev", dev, "nodad"]);
    }
    client.exec_ok(&["ip", "route", "add", "default", "via", "10.8.0.1"]);
    client.exec_ok(&["ip", "-6", "route", "add", "default", "via", "fd00:8::1"]);
    server.exec_ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:2::2",
    ]);
    server.exec_ok(&["ip", "route", "add", "default", "via", "192.0.2.2"]);

    let sysctl = |key: &str| server.exec_ok(&["sysctl", "-n", key]).trim().to_owned();
    // Per-device IPv6 forwarding (Linux 6.17+), else warren falls back to the global flag.
    let per_device = Path::new("/proc/sys/net/ipv6/conf/all/force_forwarding").exists();
    let flags = |dev: &str| {
        let mut v = vec![
            format!("net.ipv4.conf.{dev}.forwarding"),
            format!("net.ipv6.conf.{dev}.forwarding"),
        ];
        if per_device {
            v.push(format!("net.ipv6.conf.{dev}.force_forwarding"));
        }
        v
    };
    let mut keys: Vec<String> = vec![
        "net.ipv4.ip_forward".into(),
        "net.ipv6.conf.all.forwarding".into(),
    ];
    keys.extend(flags(&s_tun));
    keys.extend(flags(&s_up));
    let state = || {
        (
            keys.iter()
                .map(|k| (k.clone(), sysctl(k)))
                .collect::<Vec<_>>(),
            server.exec_ok(&["nft", "list", "ruleset"]),
        )
    };
    let before = state();
    assert!(
        !client.ping("2001:db8:2::2", 1, 1).success(),
        "forwarded before NAT?"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut nat = helper_in(&server, "nat", dir.path(), &s_tun, &s_up);
    wait_for(&mut nat, &dir.path().join("applied"));
    let on = state();
    if per_device {
        for dev in [&s_tun, &s_up] {
            let k = format!("net.ipv6.conf.{dev}.force_forwarding");
            assert!(on.0.contains(&(k.clone(), "1".into())), "{k}: {:?}", on.0);
            // The router switch that would stop RAs on the uplink is left alone.
            let k = format!("net.ipv6.conf.{dev}.forwarding");
            assert!(on.0.contains(&(k.clone(), "0".into())), "{k}: {:?}", on.0);
        }
        assert!(
            on.0.contains(&("net.ipv6.conf.all.forwarding".into(), "0".into())),
            "{:?}",
            on.0
        );
    }
    assert!(on.1.contains("ip6 saddr fd00:8::/64"), "{}", on.1);
    let ping4 = client.ping("192.0.2.2", 2, 2);
    assert!(ping4.success(), "IPv4 through NAT: {}", ping4.stdout);
    let ping6 = client.ping("2001:db8:2::2", 2, 2);
    assert!(
        ping6.success(),
        "IPv6 through NAT: {}{}",
        ping6.stdout,
        ping6.stderr
    );
    // The IPv6 rule did the masquerading (the far end cannot answer fd00:8::/64 itself).
    let table = server.exec_ok(&["nft", "list", "table", "inet", &format!("warren-{s_tun}")]);
    let packets = table
        .lines()
        .find(|l| l.contains("ip6 saddr fd00:8::/64"))
        .and_then(|l| l.split("packets ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(packets.is_some_and(|n| n > 0), "{table}");

    fs::write(dir.path().join("release"), "").expect("release");
    run(nat, "nat");
    let after = state();
    assert_eq!(after.0, before.0, "forwarding flags not restored");
    assert_eq!(after.1, before.1, "nftables ruleset not restored");
    assert!(
        !client.ping("2001:db8:2::2", 1, 1).success(),
        "still forwarding after restore"
    );
}
