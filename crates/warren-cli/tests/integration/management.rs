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

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::conf::ServerConf;
use common::lab::{Lab, SERVER_TUN_ADDR, ServerKind};
use common::process::{poll_until, rss_kib, run_bounded};

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

/// The management socket of a lab (in its test directory).
fn socket(lab: &Lab) -> PathBuf {
    lab.dir().join("mgmt.sock")
}

/// The default server config with a management unix socket and `extra` lines.
fn mgmt_conf(lab: &Lab, extra: &[&str]) -> ServerConf {
    let mut conf = lab.server_conf();
    conf.extra
        .push(format!("management {} unix", socket(lab).display()));
    conf.extra.extend(extra.iter().map(|l| (*l).to_owned()));
    conf
}

/// A client config that also sends a user name and password (`auth-user-pass`), which
/// `management-client-auth` requires.
fn client_with_password(lab: &Lab, index: usize, user: &str) -> common::conf::ClientConf {
    let pass = lab.dir().join(format!("{user}.pass"));
    std::fs::write(&pass, format!("{user}\nsecret-{user}\n")).expect("write auth file");
    let mut cc = lab.client_conf(&lab.pki.clients[index]);
    cc.extra.push(format!("auth-user-pass {}", pass.display()));
    cc
}

/// Replaces every run of digits with `0`, so times, ids, counters, ports and addresses
/// compare by shape.
fn shape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut digits = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push('0');
            }
            digits = true;
        } else {
            out.push(c);
            digits = false;
        }
    }
    out
}

/// What the differential script saw from one server.
#[derive(Debug, Default)]
struct Transcript {
    version: Vec<String>,
    help_first: String,
    help_last: String,
    pid: String,
    state: Vec<String>,
    state_all: Vec<String>,
    load_stats: String,
    /// `status 2` and `status 3` without TITLE/TIME (their values are the server's own).
    status: Vec<Vec<String>>,
    status_v1: Vec<String>,
    /// Replies compared by shape.
    replies: Vec<(String, Vec<String>)>,
    bytecount: String,
    log_line: String,
    client_kill: Vec<String>,
    sigterm: Vec<String>,
    exited: bool,
}

/// Runs the same command script against `kind` with one stock client connected.
fn differential_run(kind: ServerKind) -> Transcript {
    let mut lab = Lab::new("mgmt-diff", kind);
    let conf = mgmt_conf(&lab, &[]);
    lab.start_server(&conf);
    let cc = lab.client_conf(&lab.pki.clients[0]);
    let mut client = lab.connect_client("c1", cc);
    // Traffic, so the counters have something to count.
    assert!(client.ns.ping(SERVER_TUN_ADDR, 3, 2).success());
    let mut m = Mgmt::connect(&socket(&lab));
    let mut t = Transcript {
        version: m.cmd("version"),
        ..Transcript::default()
    };
    let help = m.cmd("help");
    t.help_first = help.first().cloned().unwrap_or_default();
    t.help_last = help.last().cloned().unwrap_or_default();
    t.pid = m.cmd("pid").join("");
    t.state = m.cmd("state");
    t.state_all = m.cmd("state all");
    t.load_stats = m.cmd("load-stats").join("");
    t.status_v1 = m.cmd("status 1");
    for v in ["status 2", "status 3"] {
        let lines: Vec<String> = m
            .cmd(v)
            .into_iter()
            .filter(|l| !l.starts_with("TITLE") && !l.starts_with("TIME"))
            .collect();
        t.status.push(lines);
    }
    for c in [
        "status 4",
        "hold",
        "mute",
        "echo all",
        "state on",
        "state off",
        "log on",
        "log off",
        "kill nobody",
        "kill 198.18.1.2:1",
        "kill 1.2.3.4:99999",
        "kill x:y",
        "kill",
        "client-kill 99",
        "client-kill x",
        "client-kill",
        "client-deny 1",
        "signal SIGFOO",
        "nonsense",
    ] {
        let r = m.cmd(c);
        t.replies.push((c.to_owned(), r));
    }
    // Real-time log: the next command's log line (verb 4 logs every command).
    let r = m.cmd("log on");
    t.replies.push(("log on".into(), r));
    let r = m.cmd("pid");
    t.replies.push(("pid".into(), r));
    t.log_line = m
        .wait_event(">LOG:", Duration::from_secs(5))
        .unwrap_or_default();
    let r = m.cmd("log off");
    t.replies.push(("log off".into(), r));
    let r = m.cmd("bytecount 1");
    t.replies.push(("bytecount 1".into(), r));
    t.bytecount = m
        .wait_event(">BYTECOUNT_CLI:", Duration::from_secs(5))
        .unwrap_or_default();
    t.replies.push(("bytecount 0".into(), m.cmd("bytecount 0")));
    // The stock client is told to reconnect (RESTART) and comes back.
    t.client_kill = m.cmd("client-kill 0");
    client
        .proc
        .wait_for_line("server-pushed-connection-reset", Duration::from_secs(15))
        .unwrap_or_else(|e| {
            panic!(
                "{}: client-kill did not reach the client: {e}",
                kind.label()
            )
        });
    t.sigterm = m.cmd("signal SIGTERM");
    t.exited = lab.server().wait_exit(Duration::from_secs(15)).is_some();
    drop(m);
    t
}

#[test]
fn differential() {
    let stock = differential_run(ServerKind::Openvpn);
    let warren = differential_run(ServerKind::Warren);
    eprintln!("stock: {stock:#?}\nwarren: {warren:#?}");
    for t in [&stock, &warren] {
        // §1.6: exactly three lines, `OpenVPN 2.6.14 ...`, management version 5.
        assert_eq!(t.version.len(), 3, "{:?}", t.version);
        assert!(
            t.version[0].starts_with("OpenVPN Version: OpenVPN 2.6.14 "),
            "{:?}",
            t.version
        );
        assert_eq!(t.version[1], "Management Version: 5");
        assert_eq!(t.version[2], "END");
        assert!(
            t.help_first
                .starts_with("Management Interface for OpenVPN 2.6.14 ")
        );
        assert_eq!(t.help_last, "END");
        assert!(t.pid.starts_with("SUCCESS: pid="), "{}", t.pid);
        assert!(t.exited, "the server exits after `signal SIGTERM`");
    }
    assert!(
        warren.version[0].contains(" warren-"),
        "{:?}",
        warren.version
    );
    // state: the last line, 8 fields, CONNECTED,SUCCESS with the tunnel address.
    for t in [&stock, &warren] {
        assert_eq!(t.state.len(), 2, "{:?}", t.state);
        let f: Vec<&str> = t.state[0].split(',').collect();
        assert_eq!(f.len(), 8, "{:?}", t.state);
        assert_eq!(&f[1..4], ["CONNECTED", "SUCCESS", SERVER_TUN_ADDR]);
    }
    let shapes = |v: &[String]| v.iter().map(|l| shape(l)).collect::<Vec<_>>();
    assert_eq!(shapes(&warren.state_all), shapes(&stock.state_all));
    // load-stats: the same keys.
    let keys = |s: &str| {
        s.trim_start_matches("SUCCESS: ")
            .split(',')
            .map(|kv| kv.split('=').next().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&warren.load_stats),
        ["nclients", "bytesin", "bytesout"]
    );
    assert_eq!(keys(&warren.load_stats), keys(&stock.load_stats));
    assert!(warren.load_stats.starts_with("SUCCESS: nclients=1,"));
    // status 1: the same lines by shape.
    assert_eq!(shapes(&warren.status_v1), shapes(&stock.status_v1));
    // status 2/3: the same headers and global lines; CLIENT_LIST with as many fields.
    for (w, s) in warren.status.iter().zip(&stock.status) {
        let sep = if w.iter().any(|l| l.contains('\t')) {
            '\t'
        } else {
            ','
        };
        let fixed = |v: &[String]| {
            v.iter()
                .filter(|l| l.starts_with("HEADER") || l.starts_with("GLOBAL") || *l == "END")
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(fixed(w), fixed(s));
        let fields = |v: &[String]| {
            v.iter()
                .filter(|l| l.starts_with("CLIENT_LIST"))
                .map(|l| l.split(sep).count())
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(w), fields(s));
        assert_eq!(fields(w), [13]);
        assert_eq!(shapes(w), shapes(s), "status by shape");
    }
    // Errors and one-line replies: the same text, ids and numbers aside.
    for ((c, w), (_, s)) in warren.replies.iter().zip(&stock.replies) {
        assert_eq!(shapes(w), shapes(s), "reply to {c:?}");
    }
    assert_eq!(shape(&warren.bytecount), shape(&stock.bytecount));
    // The same form (stock may show the next command's line first).
    let form = |l: &str| shape(l).split('\'').next().unwrap_or("").to_owned();
    assert_eq!(form(&warren.log_line), form(&stock.log_line), "log line");
    assert_eq!(form(&warren.log_line), ">LOG:0,D,MANAGEMENT: CMD ");
    assert!(
        warren.log_line.ends_with(",D,MANAGEMENT: CMD 'pid'"),
        "{}",
        warren.log_line
    );
    assert!(
        warren.bytecount.starts_with(">BYTECOUNT_CLI:0,"),
        "{}",
        warren.bytecount
    );
    assert_eq!(
        warren.client_kill,
        ["SUCCESS: client-kill command succeeded"]
    );
    assert_eq!(warren.client_kill, stock.client_kill);
    assert_eq!(warren.sigterm, ["SUCCESS: signal SIGTERM thrown"]);
    assert_eq!(warren.sigterm, stock.sigterm);
}

/// `management-client-auth`: client1 is accepted with an extra pushed route, client2 is
/// denied and sees `AUTH_FAILED` with the client reason.
fn client_auth_run(kind: ServerKind) {
    let mut lab = Lab::new("mgmt-auth", kind);
    let conf = mgmt_conf(&lab, &["management-client-auth"]);
    lab.start_server(&conf);
    let mut m = Mgmt::connect(&socket(&lab));
    let label = kind.label();

    let c1 = client_with_password(&lab, 0, "alice");
    let mut client1 = lab.start_client("c1", c1);
    let connect = m
        .wait_event(">CLIENT:CONNECT,", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{label}: no >CLIENT:CONNECT; {}", m.transcript));
    let ids: Vec<&str> = connect[">CLIENT:CONNECT,".len()..].split(',').collect();
    assert_eq!(ids.len(), 2, "{connect}");
    let (cid, kid) = (ids[0].to_owned(), ids[1].to_owned());
    let env = m.env_block();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(
        env.first().map(|(k, _)| k.as_str()),
        Some("n_clients"),
        "{env:?}"
    );
    assert_eq!(get("common_name"), Some("client1"), "{label}: {env:?}");
    assert_eq!(get("username"), Some("alice"), "{label}: {env:?}");
    assert_eq!(get("password"), Some("secret-alice"), "{label}: {env:?}");
    assert_eq!(get("untrusted_ip"), Some(client1.client_underlay.as_str()));
    assert_eq!(get("X509_0_CN"), Some("client1"), "{label}: {env:?}");
    assert!(
        get("IV_VER").is_some() && get("tls_serial_0").is_some(),
        "{label}: {env:?}"
    );
    m.send(&format!("client-auth {cid} {kid}"));
    m.send("push \"route 10.66.0.0 255.255.0.0\"");
    let r = m.cmd("END");
    assert_eq!(r, ["SUCCESS: client-auth command succeeded"], "{label}");
    let addr = m
        .wait_event(&format!(">CLIENT:ADDRESS,{cid},"), Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{label}: no >CLIENT:ADDRESS; {}", m.transcript));
    assert!(addr.ends_with(",1"), "{addr}");
    m.wait_event(
        &format!(">CLIENT:ESTABLISHED,{cid}"),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|| panic!("{label}: no >CLIENT:ESTABLISHED; {}", m.transcript));
    let env = m.env_block();
    assert!(env.iter().all(|(k, _)| k != "password"), "{env:?}");
    assert!(
        env.iter()
            .any(|(k, v)| k == "ifconfig_pool_remote_ip" && v.starts_with("10.8.0."))
    );
    client1
        .wait_connected(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{label}: client1 did not connect: {e}"));
    let log = client1.log();
    let reply = log
        .lines()
        .find(|l| l.contains("PUSH_REPLY"))
        .unwrap_or_else(|| panic!("{label}: no PUSH_REPLY in the client log"));
    assert!(reply.contains("route 10.66.0.0 255.255.0.0"), "{reply}");
    let routes = client1.ns.exec_ok(&["ip", "-4", "route", "show"]);
    assert!(routes.contains("10.66.0.0/16"), "{label}: {routes}");
    assert!(
        client1.ns.ping(SERVER_TUN_ADDR, 3, 2).success(),
        "{label}: ping"
    );

    // Wrong KID, then the denial.
    let c2 = client_with_password(&lab, 1, "bob");
    let mut client2 = lab.start_client("c2", c2);
    let connect = m
        .wait_event(">CLIENT:CONNECT,", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{label}: no second >CLIENT:CONNECT; {}", m.transcript));
    let ids: Vec<String> = connect[">CLIENT:CONNECT,".len()..]
        .split(',')
        .map(str::to_owned)
        .collect();
    let env = m.env_block();
    assert!(
        env.iter()
            .any(|(k, v)| k == "common_name" && v == "client2")
    );
    assert_ne!(ids[0], cid, "a new CID");
    let bad = m.cmd(&format!("client-deny {} 999 wrong-kid", ids[0]));
    assert_eq!(bad, ["ERROR: client-deny command failed"]);
    let r = m.cmd(&format!(
        "client-deny {} {} \"bad password\" \"Sorry, no\"",
        ids[0], ids[1]
    ));
    assert_eq!(r, ["SUCCESS: client-deny command succeeded"]);
    client2
        .proc
        .wait_for_line("AUTH_FAILED", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{label}: client2 was not refused: {e}"));
    assert!(
        client2.log().contains("Sorry, no"),
        "{label}: client reason"
    );
    m.wait_event(
        &format!(">CLIENT:DISCONNECT,{}", ids[0]),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|| {
        panic!(
            "{label}: no DISCONNECT for the denied client; {}",
            m.transcript
        )
    });
    assert!(
        m.env_block().is_empty(),
        "{label}: a denied client's DISCONNECT has no env"
    );
    // client1 still works.
    assert!(
        client1.ns.ping(SERVER_TUN_ADDR, 2, 2).success(),
        "{label}: ping after"
    );
}

#[test]
fn client_auth() {
    client_auth_run(ServerKind::Openvpn);
    client_auth_run(ServerKind::Warren);
}

/// The Go library's source as Debian installs it (golang-github-apparentlymart-go-openvpn-mgmt-dev).
const GO_LIB: &str = "/usr/share/gocode/src/github.com/apparentlymart/go-openvpn-mgmt/openvpn";

/// Builds `tests/go/mgmtclient.go` offline against Debian's copy of the library
/// (GOPATH mode, no module proxy). `None` when `go` or the library is missing.
fn build_go_client(dir: &Path) -> Option<PathBuf> {
    let go_ok = run_bounded(Command::new("go").arg("version"), Duration::from_secs(20)).success();
    if !go_ok || !Path::new(GO_LIB).is_dir() {
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/mgmtclient.go");
    let out = dir.join("mgmtclient");
    let cache = dir.join("gocache");
    let r = run_bounded(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(&src)
            .env("GOPATH", "/usr/share/gocode")
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("GOCACHE", &cache)
            .env("HOME", dir),
        Duration::from_secs(300),
    );
    assert!(r.success(), "go build failed:\n{}\n{}", r.stdout, r.stderr);
    Some(out)
}

/// The third-party client against one server: it must see the state and pid, the
/// connect (answered with client-auth-nt), the byte count and the disconnect after its
/// `client-kill CID HALT`.
fn go_client_run(kind: ServerKind, prog: &Path) {
    let mut lab = Lab::new("mgmt-go", kind);
    let label = kind.label();
    let mut conf = lab.server_conf();
    conf.extra
        .extend(["management 127.0.0.1 7505", "management-client-auth"].map(str::to_owned));
    lab.start_server(&conf);
    let log = lab.dir().join("go.log");
    let mut go = lab.server_ns.spawn_env(
        "mgmtclient",
        &[prog.to_str().expect("UTF-8"), "127.0.0.1:7505"],
        &[],
        lab.dir(),
        &log,
    );
    go.wait_for_line("READY", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let cc = client_with_password(&lab, 0, "carol");
    let mut client = lab.start_client("c1", cc);
    let st = go.wait_exit(Duration::from_secs(60));
    let out = go.log();
    assert!(
        st.is_some_and(|s| s.success()),
        "{label}: Go client failed ({st:?}):\n{out}"
    );
    let server_pid = lab.server().pid();
    assert!(
        out.contains(&format!("PID {server_pid}\n")),
        "{label}: {out}"
    );
    assert!(
        out.contains(&format!("STATE CONNECTED SUCCESS {SERVER_TUN_ADDR}\n")),
        "{label}: {out}"
    );
    for want in [
        "CONNECT 0\n",
        "AUTH SUCCESS: client-auth command succeeded\n",
        "ESTABLISHED 0\n",
        "ENV common_name=client1\n",
        "BYTECOUNT 0\n",
        "KILL SUCCESS: client-kill command succeeded\n",
        "DISCONNECT 0\n",
    ] {
        assert!(out.contains(want), "{label}: no {want:?} in:\n{out}");
    }
    // HALT: the stock client stops.
    client
        .proc
        .wait_for_line("server-pushed-halt", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{label}: {e}"));
}

#[test]
fn go_openvpn_mgmt() {
    let dir = common::lab::TestDir::new("mgmt-go-build");
    let Some(prog) = build_go_client(dir.path()) else {
        // .ci/run installs golang-go and the library; a developer machine may lack them.
        eprintln!(
            "skipped: `go` or {GO_LIB} missing (apt-get install golang-go golang-github-apparentlymart-go-openvpn-mgmt-dev)"
        );
        return;
    };
    go_client_run(ServerKind::Openvpn, &prog);
    go_client_run(ServerKind::Warren, &prog);
}

/// A management client that turns on every notification, then floods the server with
/// commands (each logged, each answered) and never reads. The server disconnects it when
/// its output queue is full; meanwhile a stock client's ping through the tunnel keeps
/// getting answers and the server's memory stays bounded.
#[test]
fn stuck_client() {
    let mut lab = Lab::new("mgmt-stuck", ServerKind::Warren);
    // verb 4: every management command is logged (debug), so the flood is a log flood too.
    let conf = mgmt_conf(&lab, &["management-log-cache 1000"]);
    lab.start_server(&conf);
    let cc = lab.client_conf(&lab.pki.clients[0]);
    let client = lab.connect_client("c1", cc);
    let pid = lab.server().pid();
    let rss_before = rss_kib(pid).unwrap_or(0);

    let stuck = poll_until(Duration::from_secs(10), || {
        UnixStream::connect(socket(&lab)).ok()
    })
    .expect("connect");
    stuck
        .set_write_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    // Ping for 8 s while the flood runs.
    let ns_name = client.ns.name().to_owned();
    let pinger = std::thread::spawn(move || {
        run_bounded(
            Command::new("ip").args([
                "netns",
                "exec",
                &ns_name,
                "ping",
                "-n",
                "-c",
                "40",
                "-i",
                "0.2",
                "-W",
                "1",
                SERVER_TUN_ADDR,
            ]),
            Duration::from_secs(30),
        )
    });
    let mut w = &stuck;
    let _ = w.write_all(b"log on all\nstate on\nbytecount 1\n");
    let flood_until = Instant::now() + Duration::from_secs(6);
    let mut sent = 0u64;
    let mut refused = false;
    while Instant::now() < flood_until {
        match w.write_all(b"help\nstatus 3\nload-stats\n") {
            Ok(()) => sent += 1,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                // Disconnected by the server.
                refused = true;
                break;
            }
        }
    }
    let ping = pinger.join().expect("ping thread");
    let received = ping
        .stdout
        .lines()
        .find(|l| l.contains("received"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|f| f.split_whitespace().next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    let log = lab.server_log();
    assert!(
        log.contains("output queue is full"),
        "the stuck client was not disconnected (sent {sent} batches, refused={refused}):\n{}",
        common::process::tail(&log, 30)
    );
    assert!(received >= 38, "ping during the flood: {}", ping.stdout);
    let rss_after = rss_kib(pid).unwrap_or(0);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "server memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The interface serves the next client.
    drop(stuck);
    let mut m = Mgmt::connect(&socket(&lab));
    assert!(m.cmd("load-stats")[0].starts_with("SUCCESS: nclients=1,"));
    lab.assert_server_running();
}

/// Password prompt and `management-hold`: `ENTER PASSWORD:` without a line end, a wrong
/// password prompts again, the right one gives SUCCESS, the banner and `>HOLD:`; no client
/// gets in before `hold release`, one does after.
fn password_hold_run(kind: ServerKind) {
    let mut lab = Lab::new("mgmt-hold", kind);
    let label = kind.label();
    let pw = lab.dir().join("mgmt.pw");
    std::fs::write(&pw, "s3cret\n").expect("password file");
    let mut conf = lab.server_conf();
    conf.extra.push(format!(
        "management {} unix {}",
        socket(&lab).display(),
        pw.display()
    ));
    conf.extra.push("management-hold".into());
    // A held server may not have bound its port yet (stock binds after the release):
    // wait for the socket file instead.
    let path = lab.dir().join("server.conf");
    conf.write(&path);
    let argv_kind = kind;
    let log = lab.dir().join("server.log");
    let dir = lab.dir().to_path_buf();
    let conf_s = path.to_str().expect("UTF-8").to_owned();
    let argv: Vec<&str> = match argv_kind {
        ServerKind::Openvpn => vec!["openvpn", "--config", &conf_s],
        ServerKind::Warren => vec![common::lab::WARREN_BIN, "server", "--config", &conf_s],
    };
    let mut server = lab.server_ns.spawn_env(label, &argv, &[], &dir, &log);
    let s = poll_until(Duration::from_secs(15), || {
        UnixStream::connect(socket(&lab)).ok()
    })
    .unwrap_or_else(|| panic!("{label}: no management socket:\n{}", server.log_tail(20)));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    let mut prompt = [0u8; 15];
    std::io::Read::read_exact(&mut r, &mut prompt).expect("prompt");
    assert_eq!(&prompt, b"ENTER PASSWORD:", "{label}");
    w.write_all(b"wrong\n").expect("write");
    std::io::Read::read_exact(&mut r, &mut prompt).expect("prompt again");
    assert_eq!(
        &prompt, b"ENTER PASSWORD:",
        "{label}: a wrong password prompts again"
    );
    w.write_all(b"s3cret\n").expect("write");
    let mut line = String::new();
    let mut lines = Vec::new();
    for _ in 0..3 {
        line.clear();
        r.read_line(&mut line).expect("line");
        lines.push(line.clone());
    }
    assert_eq!(
        lines[0], "SUCCESS: password is correct\r\n",
        "{label}: {lines:?}"
    );
    assert_eq!(lines[1], format!("{BANNER}\r\n"), "{label}: {lines:?}");
    assert!(
        lines[2].starts_with(">HOLD:Waiting for hold release:"),
        "{label}: {lines:?}"
    );
    // Held: a client does not get in.
    let cc = lab.client_conf(&lab.pki.clients[0]);
    let mut client = lab.start_client("c1", cc);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        client.count("Initialization Sequence Completed"),
        0,
        "{label}: connected while held"
    );
    w.write_all(b"hold\n").expect("write");
    line.clear();
    r.read_line(&mut line).expect("hold reply");
    assert_eq!(line, "SUCCESS: hold=1\r\n", "{label}");
    w.write_all(b"hold release\n").expect("write");
    line.clear();
    r.read_line(&mut line).expect("release reply");
    assert_eq!(line, "SUCCESS: hold release succeeded\r\n", "{label}");
    client
        .wait_connected(Duration::from_secs(40))
        .unwrap_or_else(|e| panic!("{label}: no connection after the release: {e}"));
    server.terminate(Duration::from_secs(10));
}

const BANNER: &str = ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info";

#[test]
fn password_and_hold() {
    password_hold_run(ServerKind::Openvpn);
    password_hold_run(ServerKind::Warren);
}
