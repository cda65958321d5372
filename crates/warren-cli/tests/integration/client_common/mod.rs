//! Helpers for the `warren client` tests, on top of `common` (the server-side harness):
//! a `warren client` in its own namespace with its own resolv.conf, and TCP transfers that
//! run in the background while the test does something else (kill the server).
//!
//! Every client namespace gets `/etc/netns/<ns>/resolv.conf`, which `ip netns exec`
//! bind-mounts over `/etc/resolv.conf`, so a client that applies DNS never touches the
//! host's file. The file and its directory are removed on drop.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::conf::ClientConf;
use crate::common::helper::SINK_READY;
use crate::common::lab::{Lab, Transfer, TransferReport, WARREN_BIN, read_kv, spawn_helper};
use crate::common::netns::Netns;
use crate::common::process::{Proc, poll_until};

/// The line `warren client` prints once the tunnel is up (then "reconnected").
pub const UP: &str = "warren client up:";
pub const RECONNECTED: &str = "warren client reconnected:";
pub const UP_TIMEOUT: Duration = Duration::from_secs(20);

/// The resolv.conf every client namespace starts with.
pub const NS_RESOLV_CONF: &str =
    "# resolv.conf of a warren test namespace\nnameserver 192.0.2.53\nsearch lan.example\n";

/// `/etc/netns/<ns>/` with a resolv.conf, removed on drop.
#[derive(Debug)]
pub struct NsEtc {
    dir: PathBuf,
}

impl NsEtc {
    pub fn new(ns: &Netns) -> NsEtc {
        let dir = Path::new("/etc/netns").join(ns.name());
        fs::create_dir_all(&dir).expect("create /etc/netns/<ns>");
        fs::write(dir.join("resolv.conf"), NS_RESOLV_CONF).expect("write resolv.conf");
        NsEtc { dir }
    }

    pub fn resolv_conf(&self) -> Vec<u8> {
        fs::read(self.dir.join("resolv.conf")).expect("read resolv.conf")
    }
}

impl Drop for NsEtc {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A `warren client` in its own namespace. Field order is drop order: the process first,
/// then the namespace, then its /etc/netns entry.
#[derive(Debug)]
pub struct WarrenClient {
    pub proc: Proc,
    pub ns: Netns,
    pub etc: NsEtc,
    pub name: String,
    pub dev: String,
    pub profile: PathBuf,
    pub server_underlay: String,
    pub client_underlay: String,
    pub tun_addr: Option<String>,
}

impl WarrenClient {
    /// Waits for the "up" line and the tun address.
    pub fn wait_up(&mut self, timeout: Duration) -> Result<String, String> {
        let line = self.proc.wait_for_line(UP, timeout)?;
        let addr = poll_until(Duration::from_secs(5), || self.ns.ipv4_addr(&self.dev))
            .ok_or_else(|| format!("{}: no IPv4 address on {}\n{line}", self.name, self.dev))?;
        self.tun_addr = Some(addr.clone());
        Ok(line)
    }

    /// Like [`WarrenClient::wait_up`], but panics with the tail of the server log.
    pub fn expect_up(&mut self, lab: &Lab, timeout: Duration) -> String {
        self.wait_up(timeout).unwrap_or_else(|e| {
            panic!(
                "{e}\n{} server log:\n{}",
                lab.kind.label(),
                crate::common::process::tail(&lab.server_log(), 40)
            )
        })
    }

    pub fn addr(&self) -> &str {
        self.tun_addr.as_deref().expect("client is up")
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    pub fn count(&self, pat: &str) -> usize {
        self.log().lines().filter(|l| l.contains(pat)).count()
    }

    /// SIGTERM; returns whether it exited with status 0 within `grace`.
    pub fn stop(&mut self, grace: Duration) -> bool {
        self.proc.terminate(grace);
        self.proc.exited().is_some_and(|s| s.success())
    }

    /// SIGTERM; panics unless it exits with status 0 within 5 s.
    pub fn stop_cleanly(&mut self) {
        assert!(
            self.stop(Duration::from_secs(5)),
            "client did not exit cleanly:\n{}",
            self.proc.log_tail(20)
        );
    }

    /// Panics unless the namespace's routes and rules equal `routes` (a [`net_snapshot`])
    /// and its resolv.conf is `resolv` byte for byte.
    pub fn assert_restored(&self, routes: &str, resolv: &[u8]) {
        assert_eq!(net_snapshot(&self.ns), routes, "routing table not restored");
        assert_eq!(
            self.etc.resolv_conf(),
            resolv,
            "resolv.conf not restored byte for byte"
        );
    }
}

/// A client namespace linked to the server with its resolv.conf and profile, before
/// `warren client` starts (so the test can change the namespace or profile first).
#[derive(Debug)]
pub struct Prepared {
    pub ns: Netns,
    pub etc: NsEtc,
    pub conf: ClientConf,
    /// The server's underlay address as seen from this namespace.
    pub srv: String,
    pub cli: String,
}

/// A new client namespace linked to the server, with its resolv.conf; the profile's
/// remote points at the server.
pub fn prepare_client(lab: &mut Lab, mut conf: ClientConf) -> Prepared {
    let (ns, srv, cli) = lab.new_peer_ns();
    let etc = NsEtc::new(&ns);
    conf.remote.0 = srv.clone();
    Prepared {
        ns,
        etc,
        conf,
        srv,
        cli,
    }
}

/// `warren client PROFILE ARGS...` in namespace `ns`, working in the lab directory (log
/// `<name>.log`); does not wait.
pub fn spawn_profile(lab: &Lab, ns: &Netns, name: &str, profile: &Path, args: &[&str]) -> Proc {
    let mut argv: Vec<&str> = vec![WARREN_BIN, "client", profile.to_str().expect("UTF-8 path")];
    argv.extend_from_slice(args);
    let log = lab.dir().join(format!("{name}.log"));
    ns.spawn_env(name, &argv, &[], lab.dir(), &log)
}

/// Writes the profile and starts `warren client PROFILE ARGS...` in the namespace.
pub fn spawn_client(lab: &Lab, name: &str, p: Prepared, args: &[&str]) -> WarrenClient {
    let profile = lab.dir().join(format!("{name}.ovpn"));
    p.conf.write(&profile);
    let proc = spawn_profile(lab, &p.ns, name, &profile, args);
    WarrenClient {
        proc,
        ns: p.ns,
        etc: p.etc,
        name: name.to_owned(),
        dev: p.conf.dev.clone(),
        profile,
        server_underlay: p.srv,
        client_underlay: p.cli,
        tun_addr: None,
    }
}

/// Starts a `warren client` with `conf` (remote filled in) in a new namespace.
pub fn start_client(lab: &mut Lab, name: &str, conf: ClientConf, args: &[&str]) -> WarrenClient {
    let p = prepare_client(lab, conf);
    spawn_client(lab, name, p, args)
}

/// Starts a client and waits until it is up (panics with both logs otherwise).
pub fn connect_client(lab: &mut Lab, name: &str, conf: ClientConf, args: &[&str]) -> WarrenClient {
    let mut c = start_client(lab, name, conf, args);
    if let Err(e) = c.wait_up(UP_TIMEOUT) {
        panic!(
            "warren client {name} did not come up against the {} server: {e}\nserver log tail:\n{}",
            lab.kind.label(),
            crate::common::process::tail(&lab.server_log(), 40)
        );
    }
    c
}

/// A TCP transfer (the traffic helper's sink and source) running in the background.
#[derive(Debug)]
pub struct BgTransfer {
    sink: Proc,
    source: Proc,
    sink_result: PathBuf,
    source_result: PathBuf,
    limit: Duration,
}

impl BgTransfer {
    /// A paced transfer (`Transfer::timed`) from `from` to `to_addr:port` in `to`.
    pub fn start(
        dir: &Path,
        tag: &str,
        from: &Netns,
        to: &Netns,
        to_addr_port: (&str, u16),
        spec: &Transfer,
    ) -> BgTransfer {
        let (to_addr, port) = to_addr_port;
        let duration = spec.duration.expect("a timed transfer");
        let rate_bps = spec.rate_bps.expect("a paced transfer");
        let limit = duration + Duration::from_secs(40);
        let deadline_ms = limit.as_millis().to_string();
        let (mut sink, sink_result) = spawn_helper(
            dir,
            to,
            &format!("{tag}-sink"),
            "sink",
            &[
                ("LISTEN", format!("0.0.0.0:{port}")),
                ("DEADLINE_MS", deadline_ms.clone()),
            ],
        );
        if let Err(e) = sink.wait_for_line(SINK_READY, Duration::from_secs(15)) {
            panic!("transfer sink did not start: {e}");
        }
        let (source, source_result) = spawn_helper(
            dir,
            from,
            &format!("{tag}-source"),
            "source",
            &[
                ("CONNECT", format!("{to_addr}:{port}")),
                ("DEADLINE_MS", deadline_ms),
                ("SEED", "4242".into()),
                ("DURATION_MS", duration.as_millis().to_string()),
                ("RATE_BPS", rate_bps.to_string()),
            ],
        );
        BgTransfer {
            sink,
            source,
            sink_result,
            source_result,
            limit,
        }
    }

    /// Waits for both ends and reads their results (panics if a helper failed).
    pub fn finish(mut self) -> TransferReport {
        let src = self.source.wait_exit(self.limit + Duration::from_secs(10));
        let snk = self.sink.wait_exit(Duration::from_secs(20));
        if !src.is_some_and(|s| s.success()) {
            panic!(
                "transfer source failed ({src:?}):\n{}\nsink:\n{}",
                self.source.log_tail(20),
                self.sink.log_tail(20)
            );
        }
        if !snk.is_some_and(|s| s.success()) {
            panic!(
                "transfer sink failed ({snk:?}):\n{}",
                self.sink.log_tail(20)
            );
        }
        let s = read_kv(&self.source_result).unwrap_or_else(|e| panic!("{e}"));
        let r = read_kv(&self.sink_result).unwrap_or_else(|e| panic!("{e}"));
        let num = |m: &BTreeMap<String, String>, k: &str| {
            m.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        };
        TransferReport {
            sent_bytes: num(&s, "bytes"),
            sent_sha256: s.get("sha256").cloned().unwrap_or_default(),
            recv_bytes: num(&r, "bytes"),
            recv_sha256: r.get("sha256").cloned().unwrap_or_default(),
            max_gap: Duration::from_millis(num(&r, "max_gap_ms")),
            recv_complete: r.get("complete").is_some_and(|v| v == "true"),
            elapsed: Duration::from_millis(num(&r, "elapsed_ms")),
        }
    }
}

/// `ip route show table all` and `ip -4 addr` of a namespace, for before/after checks.
pub fn net_snapshot(ns: &Netns) -> String {
    let routes = ns.exec_ok(&["ip", "-4", "route", "show", "table", "all"]);
    let rules = ns.exec_ok(&["ip", "-4", "rule"]);
    format!("{routes}---\n{rules}")
}
