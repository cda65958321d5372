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
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use warren_net::{
    DnsBackend, DnsSpec, Endpoint, NetState, Redirect, RouteRequest, TunnelNet, TunnelSpec,
};

const MODE: &str = "WARREN_NET_HELPER";
const HELPER: &str = "netns::net_helper_process";
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
        ipv6: None,
    }
}

/// Where the crash tests keep their journals (set by the outer test).
const JOURNAL_ENV: &str = "WARREN_NET_JOURNAL_DIR";

fn helper(mode: &str) {
    match mode {
        "apply-and-hang" => return apply_and_hang(),
        "recover-then-run" => return recover_then_run(),
        _ => {}
    }
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

fn journal_dir() -> PathBuf {
    PathBuf::from(std::env::var(JOURNAL_ENV).expect("journal dir"))
}

/// The first run: applies routes and DNS with an on-disk journal, says so with a marker
/// file holding its pid, then waits to be killed with SIGKILL (bounded: exits after a
/// minute, without undoing anything, if nobody kills it).
fn apply_and_hang() {
    let resolv = fs::read_to_string("/etc/resolv.conf").expect("read resolv.conf");
    assert_eq!(resolv, ORIGINAL_RESOLV, "not our resolv.conf");
    let dir = journal_dir();
    let backend = DnsBackend::File(PathBuf::from("/etc/resolv.conf"));
    let mut net = TunnelNet::new(
        NetState::with_journal_dir(&dir),
        backend,
        TUN,
        ip("10.8.0.2"),
        24,
        1500,
    );
    net.prepare_remote(IpAddr::V4(ip("203.0.113.10")))
        .expect("prepare");
    net.apply(&spec()).expect("apply");
    fs::write(dir.join("applied"), std::process::id().to_string()).expect("marker");
    std::thread::sleep(Duration::from_secs(60));
    // Not killed: still leave without undoing, like a crash.
    std::mem::forget(net);
    std::process::exit(3);
}

/// The next run: finds the dead run's journal and undoes it before applying anything, then
/// works normally (apply and restore).
fn recover_then_run() {
    let resolv = fs::read("/etc/resolv.conf").expect("read resolv.conf");
    assert!(
        resolv.starts_with(b"# Generated by warren for wnt0"),
        "the killed run's resolv.conf should still be in place: {}",
        String::from_utf8_lossy(&resolv)
    );
    let dir = journal_dir();
    let dead: u32 = fs::read_to_string(dir.join("applied"))
        .expect("marker")
        .parse()
        .expect("pid");
    let rec = warren_net::recover_abandoned_in(&dir).expect("recover");
    assert_eq!(rec.pids, vec![dead]);
    assert!(
        rec.undone.iter().any(|u| u.contains("resolv.conf"))
            && rec.undone.iter().any(|u| u.contains("0.0.0.0/1")),
        "{rec:?}"
    );
    assert_eq!(
        fs::read_to_string("/etc/resolv.conf").expect("read"),
        ORIGINAL_RESOLV,
        "the original DNS is back before anything new is applied"
    );
    let routes = sh(&["ip", "-4", "route"]);
    for gone in [
        "0.0.0.0/1",
        "128.0.0.0/1",
        "203.0.113.10",
        "192.0.2.0/24",
        "172.16.0.0/12",
    ] {
        assert!(!routes.contains(gone), "`{gone}` left in:\n{routes}");
    }
    // Running again finds nothing more to do.
    assert!(
        warren_net::recover_abandoned_in(&dir)
            .expect("recover")
            .is_empty()
    );

    // This run now applies the same settings (no "route exists", the real original is kept)
    // and exits cleanly.
    let backend = DnsBackend::File(PathBuf::from("/etc/resolv.conf"));
    let mut net = TunnelNet::new(
        NetState::with_journal_dir(&dir),
        backend,
        TUN,
        ip("10.8.0.2"),
        24,
        1500,
    );
    net.prepare_remote(IpAddr::V4(ip("203.0.113.10")))
        .expect("prepare");
    let notes = net.apply(&spec()).expect("apply after recovery");
    assert!(notes.is_empty(), "{notes:?}");
    let journal = dir.join(format!("net-{}.journal", std::process::id()));
    assert!(journal.exists(), "journal written before the changes");
    net.restore().expect("restore");
    assert!(!journal.exists(), "journal removed after a clean restore");
    assert_eq!(
        fs::read_to_string("/etc/resolv.conf").expect("read"),
        ORIGINAL_RESOLV
    );
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
        self.run_helper_with(mode, None);
    }

    fn spawn_helper(&self, mode: &str, journal: Option<&std::path::Path>) -> std::process::Child {
        let exe = format!("/proc/{}/exe", std::process::id());
        let mut cmd = Command::new("ip");
        if let Some(dir) = journal {
            cmd.env(JOURNAL_ENV, dir);
        }
        cmd.args([
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
        .expect("spawn helper")
    }

    /// Runs a helper to its end (bounded), with the journal directory passed down if given.
    fn run_helper_with(&self, mode: &str, journal: Option<&std::path::Path>) {
        let mut child = self.spawn_helper(mode, journal);
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

/// A temporary directory for one test's journals; removed on drop.
/// A fresh directory under the temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "warren-net-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Waits (at most 60 s) until the helper `child` has written `marker` after applying;
/// panics, naming it `what`, when it ends first or takes longer (then it is killed).
pub fn wait_for_marker(child: &mut Child, marker: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        if let Some(st) = child.try_wait().expect("wait") {
            panic!("{what} ended before applying: {st}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not apply in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_run_killed_with_sigkill_is_undone_by_the_next_run() {
    let Some(ns) = Ns::new() else {
        eprintln!("skipping: cannot create a network namespace (not root?)");
        return;
    };
    let dir = TempDir::new("crash");
    let before = ns.snapshot();

    // First run: apply, then SIGKILL (no destructor, no signal handler runs).
    let mut child = ns.spawn_helper("apply-and-hang", Some(&dir.0));
    let marker = dir.0.join("applied");
    wait_for_marker(&mut child, &marker, "first run");
    // `ip netns exec` execs the program: the child is the helper itself.
    let pid: u32 = fs::read_to_string(&marker)
        .expect("marker")
        .parse()
        .expect("pid");
    assert_eq!(pid, child.id());
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "{status}");

    // What the dead run left behind: its routes, its resolv.conf, its journal.
    let left = ns.snapshot();
    assert_ne!(
        left.0, before.0,
        "the killed run's routes should still be there"
    );
    assert!(
        left.2.starts_with(b"# Generated by warren for wnt0"),
        "{}",
        String::from_utf8_lossy(&left.2)
    );
    assert!(dir.0.join(format!("net-{pid}.journal")).exists());

    // The next run recovers first, then applies and exits cleanly.
    ns.run_helper_with("recover-then-run", Some(&dir.0));
    let after = ns.snapshot();
    assert_eq!(after.0, before.0, "routing table not restored");
    assert_eq!(after.1, before.1, "addresses differ");
    assert_eq!(after.2, before.2, "resolv.conf not restored byte for byte");
    let journals: Vec<_> = fs::read_dir(&dir.0)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".journal") || n.ends_with(".tmp"))
        .collect();
    assert!(journals.is_empty(), "journals left: {journals:?}");
}

#[test]
fn journal_of_a_deleted_namespace_is_dropped_without_touching_this_one() {
    let Some(ns) = Ns::new() else {
        eprintln!("skipping: cannot create a network namespace (not root?)");
        return;
    };
    let dir = TempDir::new("gone");
    let mut child = ns.spawn_helper("apply-and-hang", Some(&dir.0));
    let marker = dir.0.join("applied");
    wait_for_marker(&mut child, &marker, "first run");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let pid: u32 = fs::read_to_string(&marker)
        .expect("marker")
        .parse()
        .expect("pid");
    let journal = dir.0.join(format!("net-{pid}.journal"));
    assert!(journal.exists());

    // Recovery from this (the test's) namespace while the dead client's namespace still
    // exists: not ours, left alone.
    let here = sh(&["ip", "-4", "route", "show", "table", "all"]);
    let rec = warren_net::recover_abandoned_in(&dir.0).expect("recover");
    assert!(rec.is_empty(), "{rec:?}");
    assert!(journal.exists());

    // Once that namespace is gone, its journal is only clutter and is removed; nothing
    // here changes.
    drop(ns);
    let rec = warren_net::recover_abandoned_in(&dir.0).expect("recover");
    assert!(rec.is_empty(), "{rec:?}");
    assert!(!journal.exists(), "journal of a deleted namespace kept");
    assert_eq!(sh(&["ip", "-4", "route", "show", "table", "all"]), here);
}
