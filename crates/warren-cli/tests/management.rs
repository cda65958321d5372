//! Issue 14: OpenVPN's management interface (version 5) on `warren server`.
//!
//! * `differential`: the same command script against the stock `openvpn` server and
//!   against `warren server`, both with a stock client connected, compared by shape
//!   (times, ids, byte counts and addresses normalised).
//! * `go_openvpn_mgmt`: a real third-party client, Debian's
//!   `golang-github-apparentlymart-go-openvpn-mgmt-dev`, built offline in the test, reads
//!   the state and the pid, turns on byte counts and sees a client's connect (answering it
//!   with `client-auth-nt`) and disconnect, against both servers.
//! * `client_auth`: with `management-client-auth` a management client accepts one stock
//!   client with an extra pushed route and denies another, which sees `AUTH_FAILED`.
//! * `stuck_client`: a management client that never reads while log lines flood does not
//!   stall the tunnel; it is disconnected when its output buffer is full.
//!
//! The management socket is a unix socket in the test directory (the file system is
//! shared with the server's namespace) except for the Go client, which runs inside the
//! server namespace and connects to 127.0.0.1 there. Every wait is bounded. Needs root,
//! `openvpn` and (for the Go test) `golang-go` with the library package.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::lab::{Lab, SERVER_TUN_ADDR, ServerKind, WARREN_BIN};
use common::process::{poll_until, run_bounded};

/// Not a test: the traffic helper process (see `common::helper`). A no-op in a normal run.
#[test]
fn traffic_helper_process() {
    common::helper::helper_main();
}

/// How long one reply may take.
const REPLY: Duration = Duration::from_secs(10);

/// A line-oriented management client over a unix socket. Real-time lines (`>...`) are
/// collected in `events`; replies are returned by [`Mgmt::cmd`].
struct Mgmt {
    r: BufReader<UnixStream>,
    w: UnixStream,
    events: Vec<String>,
    /// Everything received, for failure messages.
    transcript: String,
}

impl Mgmt {
    /// Connects (retrying while the socket does not exist yet) and reads the banner.
    fn connect(path: &Path) -> Mgmt {
        let s = poll_until(Duration::from_secs(15), || UnixStream::connect(path).ok())
            .unwrap_or_else(|| panic!("no management socket at {}", path.display()));
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let w = s.try_clone().expect("clone");
        let mut m = Mgmt {
            r: BufReader::new(s),
            w,
            events: Vec::new(),
            transcript: String::new(),
        };
        let banner = m.line(REPLY).expect("banner");
        assert_eq!(
            banner, ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info",
            "banner"
        );
        m
    }

    /// The next line (without CRLF; panics if it does not end in CRLF), or `None` at the
    /// deadline or EOF.
    fn line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = Vec::new();
        loop {
            match self.r.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) if buf.ends_with(b"\n") => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        self.transcript.push_str(&text);
        assert!(
            text.ends_with("\r\n"),
            "management line without CRLF: {text:?}"
        );
        Some(text.trim_end_matches("\r\n").to_owned())
    }

    fn send(&mut self, line: &str) {
        self.w
            .write_all(format!("{line}\n").as_bytes())
            .expect("write command");
    }

    /// Sends `line` and returns the reply: one `SUCCESS:`/`ERROR:` line, or the lines up to
    /// and including `END`. Real-time lines in between go to `events`.
    fn cmd(&mut self, line: &str) -> Vec<String> {
        self.send(line);
        self.reply(line)
    }

    fn reply(&mut self, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        let deadline = Instant::now() + REPLY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(l) = self.line(left) else {
                panic!(
                    "no complete reply to {what:?} (got {out:?}); transcript:\n{}",
                    self.transcript
                );
            };
            if l.starts_with('>') {
                self.events.push(l);
                continue;
            }
            let single = out.is_empty() && (l.starts_with("SUCCESS:") || l.starts_with("ERROR:"));
            let end = l == "END";
            out.push(l);
            if single || end {
                return out;
            }
        }
    }

    /// Waits for a real-time line starting with `prefix` (already collected ones count);
    /// returns it and removes it and everything before it from `events`.
    fn wait_event(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(|e| e.starts_with(prefix)) {
                let e = self.events[i].clone();
                self.events.drain(..=i);
                return Some(e);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.line(left.min(Duration::from_millis(500))) {
                Some(l) if l.starts_with('>') => self.events.push(l),
                Some(l) => panic!("unexpected reply line {l:?}"),
                None => {}
            }
        }
    }

    /// The `>CLIENT:ENV,...` lines after the last event taken, up to `>CLIENT:ENV,END`, as
    /// name=value pairs.
    fn env_block(&mut self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        loop {
            let e = self
                .wait_event(">CLIENT:ENV,", REPLY)
                .expect("ENV lines up to >CLIENT:ENV,END");
            let body = &e[">CLIENT:ENV,".len()..];
            if body == "END" {
                return env;
            }
            let (k, v) = body.split_once('=').unwrap_or((body, ""));
            env.push((k.to_owned(), v.to_owned()));
        }
    }
}

#[test]
fn probe_stock() {
    let mut lab = Lab::new("mgmt-probe", ServerKind::Openvpn);
    let sock = lab.dir().join("mgmt.sock");
    let mut conf = lab.server_conf();
    conf.extra.push(format!("management {} unix", sock.display()));
    lab.start_server(&conf);
    let cert = lab.pki.clients[0].clone();
    let cc = lab.client_conf(&cert);
    let _c = lab.connect_client("c1", cc);
    let mut m = Mgmt::connect(&sock);
    let mut out = String::new();
    for c in [
        "version", "help", "pid", "state", "state all", "load-stats", "status", "status 2", "status 3", "status 4",
        "hold", "verb", "mute", "echo all", "log 3", "kill nobody", "kill 1.2.3.4:5", "kill 1.2.3.4:99999", "kill x:y",
        "client-kill 99", "client-kill x", "client-auth 0 1\nEND", "client-deny 0 1 x", "client-pending-auth 0 1 x 30",
        "bytecount 1", "nonsense", "kill", "client-deny 1",
    ] {
        let r = m.cmd(c);
        out.push_str(&format!("=== {c}\n{}\n", r.join("\n")));
    }
    std::fs::write("/tmp/probe-stock.txt", &out).ok();
    std::thread::sleep(Duration::from_millis(2500));
    let r = m.cmd("bytecount 0");
    eprintln!("=== bytecount 0\n{}\nEVENTS {:?}", r.join("\n"), m.events);
    let r = m.cmd("client-kill 0");
    eprintln!("=== client-kill 0\n{}", r.join("\n"));
    let r = m.cmd("signal SIGTERM");
    eprintln!("=== signal SIGTERM\n{}", r.join("\n"));
    std::thread::sleep(Duration::from_millis(500));
    while let Some(l) = m.line(Duration::from_millis(500)) { eprintln!("after: {l}"); }
    eprintln!("mode {:o}", std::fs::metadata(&sock).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions())).unwrap_or(0));
}
