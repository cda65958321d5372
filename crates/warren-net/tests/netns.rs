//! warren-net against the real kernel, inside a network namespace of its own.
//!
//! The test process creates a namespace with a tun device (persistent, no process behind
//! it), a veth pair standing in for the uplink with a default route, and its own
//! `/etc/netns/<ns>/resolv.conf`, which `ip netns exec` bind-mounts over `/etc/resolv.conf`
//! so the host's file is never touched. The work runs in a copy of this test binary started
//! with `ip netns exec` (the helper test below), so every `ip` command warren-net spawns
//! runs in the namespace. Afterwards `ip route` and resolv.conf must be byte-identical to
//! what they were before. Needs root; skipped with a message otherwise.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use warren_net::{
    DnsBackend, DnsSpec, Endpoint, NetState, Redirect, RouteRequest, TunnelNet, TunnelSpec,
};

const MODE: &str = "WARREN_NET_HELPER";
const HELPER: &str = "net_helper_process";
const TUN: &str = "wnt0";
const ORIGINAL_RESOLV: &str =
    "# test resolv.conf\nnameserver 192.0.2.53\nsearch lan.example\noptions edns0\n";

static N: AtomicU32 = AtomicU32::new(0);

/// Not a test: the part that runs inside the namespace (a no-op in a normal run).
#[test]
fn net_helper_process() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    helper(&mode);
    std::process::exit(0);
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn spec() -> TunnelSpec {
    TunnelSpec {
        dev: TUN.into(),
        address: ip("10.8.0.2"),
        prefix: 24,
        mtu: 1500,
        vpn_gateway: Some(ip("10.8.0.1")),
        server: IpAddr::V4(ip("203.0.113.10")),
        routes: vec![
            RouteRequest {
                network: Endpoint::Ip(ip("192.0.2.0")),
                netmask: ip("255.255.255.0"),
                gateway: None,
                metric: None,
            },
            RouteRequest {
                network: Endpoint::Ip(ip("172.16.0.0")),
                netmask: ip("255.240.0.0"),
                gateway: Some(Endpoint::NetGateway),
                metric: Some(9),
            },
        ],
        redirect: Some(Redirect {
            def1: true,
            local: false,
        }),
        dns: DnsSpec {
            servers: vec!["10.8.0.1".parse().expect("ip")],
            domains: vec!["vpn.example".into()],
        },
    }
}

fn helper(mode: &str) {
    // The bind mount must be in place: never write a resolv.conf that is not our own.
    let resolv = fs::read_to_string("/etc/resolv.conf").expect("read resolv.conf");
    assert_eq!(
        resolv, ORIGINAL_RESOLV,
        "not running under `ip netns exec` with our resolv.conf"
    );
    let backend = DnsBackend::File(PathBuf::from("/etc/resolv.conf"));
    let mut net = TunnelNet::new(NetState::new(), backend, TUN, ip("10.8.0.2"), 24, 1500);
    net.prepare_remote(IpAddr::V4(ip("203.0.113.10")))
        .expect("prepare");
    let notes = net.apply(&spec()).expect("apply");
    assert!(notes.is_empty(), "{notes:?}");
    let routes = sh(&["ip", "-4", "route"]);
    for want in [
        "0.0.0.0/1 via 10.8.0.1 dev wnt0",
        "128.0.0.0/1 via 10.8.0.1 dev wnt0",
        "203.0.113.10 via 198.18.0.1 dev wnu0",
        "192.0.2.0/24 via 10.8.0.1 dev wnt0",
        "172.16.0.0/12 via 198.18.0.1 dev wnu0 metric 9",
    ] {
        assert!(routes.contains(want), "missing `{want}` in:\n{routes}");
    }
    let get = sh(&["ip", "-4", "route", "get", "8.8.8.8"]);
    assert!(get.contains("dev wnt0"), "{get}");
    let resolv = fs::read_to_string("/etc/resolv.conf").expect("read");
    assert!(
        resolv.contains("nameserver 10.8.0.1\n") && resolv.contains("search vpn.example\n"),
        "{resolv}"
    );

    // A reconnect to another server with other pushed routes and DNS: only the difference.
    let mut s2 = spec();
    s2.server = IpAddr::V4(ip("203.0.113.20"));
    net.prepare_remote(s2.server)
        .expect("prepare while redirected");
    let pinned = sh(&["ip", "-4", "route"]);
    assert!(
        pinned.contains("203.0.113.20 via 198.18.0.1 dev wnu0"),
        "new server not pinned:\n{pinned}"
    );
    s2.routes.remove(0);
    s2.dns.servers = vec!["10.8.0.53".parse().expect("ip")];
    s2.address = ip("10.8.0.3");
    net.apply(&s2).expect("re-apply");
    let routes = sh(&["ip", "-4", "route"]);
    assert!(!routes.contains("192.0.2.0/24"), "{routes}");
    assert!(!routes.contains("203.0.113.10"), "{routes}");
    assert!(routes.contains("203.0.113.20 via 198.18.0.1"), "{routes}");
    assert!(
        routes.contains("0.0.0.0/1 via 10.8.0.1 dev wnt0"),
        "{routes}"
    );
    let addrs = sh(&["ip", "-4", "-o", "addr", "show", "dev", TUN]);
    assert!(addrs.contains("10.8.0.3/24"), "{addrs}");
    let resolv = fs::read_to_string("/etc/resolv.conf").expect("read");
    assert!(resolv.contains("nameserver 10.8.0.53\n"), "{resolv}");
    // And back to the first address, so the outer test can compare the tables exactly.
    let mut s3 = s2.clone();
    s3.address = ip("10.8.0.2");
    net.apply(&s3).expect("re-apply");

    match mode {
        "restore" => net.restore().expect("restore"),
        "drop" => drop(net),
        "panic" => {
            // Unwinding drops `net`, which restores; the outer test checks the result.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let _keep = net;
                panic!("deliberate panic with the tunnel applied");
            }));
            assert!(r.is_err());
        }
        other => panic!("unknown mode {other}"),
    }
}

/// A namespace with the tun device, the uplink and resolv.conf; removed on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn new() -> Option<Ns> {
        let name = format!(
            "wn{}s{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let ns = Ns { name };
        let n = ns.name.as_str();
        fs::create_dir_all(format!("/etc/netns/{n}")).expect("mkdir /etc/netns");
        fs::write(format!("/etc/netns/{n}/resolv.conf"), ORIGINAL_RESOLV)
            .expect("write resolv.conf");
        for cmd in [
            vec!["ip", "-n", n, "link", "set", "lo", "up"],
            vec!["ip", "-n", n, "tuntap", "add", "dev", TUN, "mode", "tun"],
            vec!["ip", "-n", n, "addr", "add", "10.8.0.2/24", "dev", TUN],
            vec!["ip", "-n", n, "link", "set", TUN, "up"],
            vec![
                "ip", "-n", n, "link", "add", "wnu0", "type", "veth", "peer", "name", "wnu1",
            ],
            vec!["ip", "-n", n, "addr", "add", "198.18.0.2/24", "dev", "wnu0"],
            vec!["ip", "-n", n, "link", "set", "wnu0", "up"],
            vec!["ip", "-n", n, "link", "set", "wnu1", "up"],
            vec![
                "ip",
                "-n",
                n,
                "route",
                "add",
                "default",
                "via",
                "198.18.0.1",
                "dev",
                "wnu0",
            ],
        ] {
            sh(&cmd);
        }
        Some(ns)
    }

    fn snapshot(&self) -> (String, String, Vec<u8>) {
        (
            sh(&[
                "ip", "-n", &self.name, "-4", "route", "show", "table", "all",
            ]),
            sh(&["ip", "-n", &self.name, "-4", "addr"]),
            fs::read(format!("/etc/netns/{}/resolv.conf", self.name)).expect("read"),
        )
    }

    fn run_helper(&self, mode: &str) {
        let exe = format!("/proc/{}/exe", std::process::id());
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                &exe,
                "--exact",
                HELPER,
                "--nocapture",
                "--test-threads=1",
            ])
            .env(MODE, mode)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn helper");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("helper {mode} timed out");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "helper {mode} failed: {status}");
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

fn check_mode(mode: &str) {
    let Some(ns) = Ns::new() else {
        eprintln!("skipping: cannot create a network namespace (not root?)");
        return;
    };
    let before = ns.snapshot();
    ns.run_helper(mode);
    let after = ns.snapshot();
    assert_eq!(after.0, before.0, "routing table not restored ({mode})");
    assert_eq!(after.1, before.1, "addresses differ ({mode})");
    assert_eq!(
        after.2, before.2,
        "resolv.conf not restored byte for byte ({mode})"
    );
}

#[test]
fn apply_then_restore_gives_back_routes_and_resolv_conf() {
    check_mode("restore");
}

#[test]
fn drop_restores() {
    check_mode("drop");
}

#[test]
fn panic_restores() {
    check_mode("panic");
}
