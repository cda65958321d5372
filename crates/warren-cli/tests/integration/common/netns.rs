//! Network namespaces and veth links with unique names, deleted on `Drop`.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::process::{CmdOutput, Proc, run_bounded, run_ok};

/// Prefix of every namespace this harness makes: `wr<pid>s<n>`.
const NS_PREFIX: &str = "wr";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// A unique name `<prefix><pid><sep><n>`; panics if it is longer than 15 bytes (the
/// interface name limit), which cannot happen for a 3-byte prefix, a 7-digit PID and
/// n < 10000.
pub fn unique_name(prefix: &str, sep: char) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}{sep}{n}", std::process::id());
    assert!(name.len() <= 15, "name {name} too long for an interface");
    name
}

/// Deletes namespaces left behind by earlier test processes that died without cleaning up
/// (SIGKILL). Only names of our own pattern whose PID no longer exists are touched; no
/// process is signalled.
fn sweep_stale() {
    let out = run_bounded(
        Command::new("ip").args(["netns", "list"]),
        Duration::from_secs(10),
    );
    for line in out.stdout.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('s') else {
            continue;
        };
        if pid.is_empty()
            || !pid.bytes().all(|b| b.is_ascii_digit())
            || n.is_empty()
            || !n.bytes().all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if !Path::new("/proc").join(pid).exists() {
            let _ = run_bounded(
                Command::new("ip").args(["netns", "del", name]),
                Duration::from_secs(10),
            );
        }
    }
}

/// A network namespace, deleted when dropped. Loopback is up.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new() -> Netns {
        SWEEP.call_once(sweep_stale);
        let name = unique_name(NS_PREFIX, 's');
        let out = run_bounded(
            Command::new("ip").args(["netns", "add", &name]),
            Duration::from_secs(20),
        );
        if !out.success() {
            panic!(
                "`ip netns add {name}` failed ({:?}): {}\n\
                 The integration tests create network namespaces and tun devices: run them \
                 as root (see README.md).",
                out.status, out.stderr
            );
        }
        let ns = Netns { name };
        run_ok(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <ns> argv...` as a `Command` (not started).
    pub fn command<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]);
        c.args(argv);
        c
    }

    /// Runs a command in the namespace with a time limit.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S], timeout: Duration) -> CmdOutput {
        run_bounded(&mut self.command(argv), timeout)
    }

    /// Runs a command in the namespace (20 s limit) and panics if it fails.
    pub fn exec_ok<S: AsRef<OsStr>>(&self, argv: &[S]) -> String {
        let out = self.exec(argv, Duration::from_secs(20));
        if !out.success() {
            panic!(
                "`{}` failed ({:?}):\nstdout: {}\nstderr: {}",
                out.command, out.status, out.stdout, out.stderr
            );
        }
        out.stdout
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// `ip netns exec <ns> setpriv --pdeathsig KILL -- argv...`: both wrappers exec, so the
    /// process keeps the PID the guard knows, and the kernel kills it if the thread that
    /// started it dies without cleaning up (a test binary killed by a CI timeout).
    fn background_command<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.name,
            "setpriv",
            "--pdeathsig",
            "KILL",
            "--",
        ]);
        c.args(argv);
        c
    }

    /// Starts a background process in the namespace (see `background_command`).
    pub fn spawn<S: AsRef<OsStr>>(&self, name: &str, argv: &[S], log: &Path) -> Proc {
        Proc::spawn(name, &mut self.background_command(argv), log)
    }

    /// Like [`Netns::spawn`] with extra environment variables and a working directory.
    pub fn spawn_env<S: AsRef<OsStr>>(
        &self,
        name: &str,
        argv: &[S],
        env: &[(&str, String)],
        cwd: &Path,
        log: &Path,
    ) -> Proc {
        let mut c = self.background_command(argv);
        c.current_dir(cwd);
        for (k, v) in env {
            c.env(k, v);
        }
        Proc::spawn(name, &mut c, log)
    }

    /// The IPv4 address (without prefix length) of `dev`, if it has one.
    pub fn ipv4_addr(&self, dev: &str) -> Option<String> {
        self.first_addr(&["ip", "-4", "-o", "addr", "show", "dev", dev], "inet")
    }

    /// The global IPv6 address (without prefix length) of `dev`, if it has one.
    pub fn ipv6_addr(&self, dev: &str) -> Option<String> {
        let argv = [
            "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global",
        ];
        self.first_addr(&argv, "inet6")
    }

    /// The address after the first `family` token of `ip -o addr` output
    /// ("5: tun0    inet 10.8.0.2/24 scope global tun0 ...").
    fn first_addr(&self, argv: &[&str], family: &str) -> Option<String> {
        let out = self.exec(argv, Duration::from_secs(10));
        if !out.success() {
            return None;
        }
        let mut it = out.stdout.split_whitespace();
        while let Some(tok) = it.next() {
            if tok == family {
                return it
                    .next()
                    .and_then(|a| a.split('/').next())
                    .map(String::from);
            }
        }
        None
    }

    /// Whether some socket in this namespace listens on UDP `port`.
    pub fn udp_port_bound(&self, port: u16) -> bool {
        let out = self.exec(
            &[
                "ss",
                "-H",
                "-l",
                "-n",
                "-u",
                "sport",
                "=",
                &format!(":{port}"),
            ],
            Duration::from_secs(10),
        );
        out.success() && !out.stdout.trim().is_empty()
    }

    /// Whether some socket in this namespace listens on TCP `port`.
    pub fn tcp_port_bound(&self, port: u16) -> bool {
        let out = self.exec(
            &[
                "ss",
                "-H",
                "-l",
                "-n",
                "-t",
                "sport",
                "=",
                &format!(":{port}"),
            ],
            Duration::from_secs(10),
        );
        out.success() && !out.stdout.trim().is_empty()
    }

    /// `ping -c count -W wait dst` from this namespace (succeeds if any reply came back).
    pub fn ping(&self, dst: &str, count: u32, wait_s: u32) -> CmdOutput {
        self.exec(
            &[
                "ping",
                "-n",
                "-c",
                &count.to_string(),
                "-W",
                &wait_s.to_string(),
                dst,
            ],
            Duration::from_secs(u64::from(count) * u64::from(wait_s) + 10),
        )
    }
}

/// Pings `to` from `from` (3 echoes, 2 s each); panics with ping's output if none came back.
pub fn ping_ok(from: &Netns, to: &str, what: &str) {
    let out = from.ping(to, 3, 2);
    assert!(
        out.success(),
        "ping {what} ({to}) failed:\n{}{}",
        out.stdout,
        out.stderr
    );
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Interfaces in the namespace (veth ends, tun devices whose processes are gone)
        // go away with it; a veth's peer in another namespace is deleted with it.
        let out = run_bounded(
            Command::new("ip").args(["netns", "del", &self.name]),
            Duration::from_secs(20),
        );
        if !out.success() {
            eprintln!(
                "warning: could not delete netns {}: {}",
                self.name, out.stderr
            );
        }
    }
}

/// A veth pair between `a` and `b`, created directly inside the two namespaces, with
/// `addr_a`/`addr_b` in CIDR form (e.g. `198.18.1.1/24`). Both ends are up. Returns the
/// interface names (a side, b side). The pair is removed with either namespace.
pub fn link(a: &Netns, b: &Netns, addr_a: &str, addr_b: &str) -> (String, String) {
    let if_a = unique_name("wv", 'a');
    let if_b = unique_name("wv", 'b');
    run_ok(&[
        "ip",
        "link",
        "add",
        &if_a,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &if_b,
        "netns",
        b.name(),
    ]);
    run_ok(&["ip", "-n", a.name(), "addr", "add", addr_a, "dev", &if_a]);
    run_ok(&["ip", "-n", b.name(), "addr", "add", addr_b, "dev", &if_b]);
    run_ok(&["ip", "-n", a.name(), "link", "set", &if_a, "up"]);
    run_ok(&["ip", "-n", b.name(), "link", "set", &if_b, "up"]);
    (if_a, if_b)
}
