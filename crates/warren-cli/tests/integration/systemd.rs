//! Issue 14: warren under systemd, tested without systemd.
//!
//! * The units in `contrib/systemd/` pass `systemd-analyze verify` (with the binary path
//!   pointed at the one cargo built; skipped where systemd-analyze is missing), with no
//!   warning at all.
//! * `warren server` started with `NOTIFY_SOCKET` (a datagram socket this test binds) and
//!   `WATCHDOG_USEC` in a namespace: `READY=1` arrives once the server listens (its UDP port
//!   is bound by then), `WATCHDOG=1` keeps coming at half the interval, `STATUS=` follows
//!   the connected clients (a stock `openvpn` client connects), SIGHUP brings
//!   `RELOADING=1` then `READY=1`, and SIGTERM `STOPPING=1` before a clean exit. The
//!   zero-config server drops to an unprivileged user after connecting the socket, and the
//!   socket file is root's: notifications keep working after the drop.
//!
//! Every process runs in the test's namespaces and every wait is bounded. Needs root and
//! `openvpn`.
#![allow(clippy::disallowed_methods)]

use crate::common;
use crate::state_common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::lab::{Lab, ServerKind, WARREN_BIN};
use common::process::{run_bounded, tail};
use state_common::{PORT, Warren, ZeroServer, connect};

#[test]
fn units_pass_systemd_analyze_verify() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd");
    let names = ["warren.service", "warren-server@.service"];
    for n in names {
        let text = std::fs::read_to_string(units.join(n)).expect("unit file");
        assert!(text.contains("Type=notify"), "{n}: Type=notify");
        assert!(text.contains("WatchdogSec="), "{n}: WatchdogSec");
        assert!(
            text.contains("ExecStart=/usr/bin/warren server"),
            "{n}: ExecStart"
        );
    }
    let have = run_bounded(
        Command::new("systemd-analyze").arg("--version"),
        Duration::from_secs(20),
    );
    if !have.success() {
        eprintln!("systemd-analyze not available: unit verification skipped");
        return;
    }
    // The shipped files with only the binary's path changed (verify wants it to exist).
    let dir = std::env::temp_dir().join(format!("warren-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (n, as_name) in [
        ("warren.service", "warren.service"),
        ("warren-server@.service", "warren-server@.service"),
        ("warren-server@.service", "warren-server@test.service"),
    ] {
        let text = std::fs::read_to_string(units.join(n)).expect("unit file");
        std::fs::write(
            dir.join(as_name),
            text.replace("/usr/bin/warren", WARREN_BIN),
        )
        .expect("write unit");
    }
    let out = run_bounded(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.join("warren.service"))
            .arg(dir.join("warren-server@test.service")),
        Duration::from_secs(60),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.success() && out.stderr.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// The notifications received so far, in order.
struct Notifications {
    sock: UnixDatagram,
    got: Vec<String>,
}

impl Notifications {
    /// Waits (at most `limit`) for a datagram containing the line `want`; returns when it
    /// arrived. Everything received is kept.
    fn wait_for(&mut self, want: &str, limit: Duration, log: &dyn Fn() -> String) -> Instant {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let hit = msg.lines().any(|l| l == want);
                    self.got.push(msg);
                    if hit {
                        return Instant::now();
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("receiving notifications: {e}"),
            }
        }
        panic!(
            "no {want:?} within {limit:?}; received {:?}\nserver log:\n{}",
            self.got,
            tail(&log(), 30)
        );
    }

    fn count(&self, line: &str) -> usize {
        self.got
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }
}

fn kill(pid: u32, sig: &str) {
    let out = run_bounded(
        Command::new("kill").args(["-s", sig]).arg(pid.to_string()),
        Duration::from_secs(5),
    );
    assert!(out.success(), "kill -s {sig}: {}", out.stderr);
}

#[test]
fn notify_ready_watchdog_status_reload_and_stopping() {
    let mut lab = Lab::p256("sdnotify", ServerKind::Warren);
    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    let sock_path = lab.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut n = Notifications {
        sock,
        got: Vec::new(),
    };

    let env = [
        (
            "NOTIFY_SOCKET",
            sock_path.to_str().expect("UTF-8").to_string(),
        ),
        // Pings every 500 ms.
        ("WATCHDOG_USEC", "1000000".to_string()),
    ];
    let mut server = ZeroServer::spawn(&lab, &state, &[], &env);
    let log_path = lab.dir().join(format!("{}-server.log", server.dev));
    let server_log = move || std::fs::read_to_string(&log_path).unwrap_or_default();

    // READY=1 once the server listens (the first run makes its keys first).
    n.wait_for("READY=1", Duration::from_secs(60), &server_log);
    assert!(
        lab.server_ns.udp_port_bound(PORT),
        "READY=1 before UDP {PORT} was bound:\n{}",
        tail(&server_log(), 30)
    );
    assert!(
        n.got
            .iter()
            .any(|m| m.contains("STATUS=serving, 0 clients connected")),
        "{:?}",
        n.got
    );
    assert!(
        server.log().contains("dropped privileges to"),
        "the zero-config server should have dropped privileges:\n{}",
        tail(&server.log(), 30)
    );

    // The watchdog: at half of 1 s, so at least 4 pings in the next 3 s.
    let before = n.count("WATCHDOG=1");
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        n.wait_for("WATCHDOG=1", Duration::from_secs(2), &server_log);
    }
    let pings = n.count("WATCHDOG=1") - before;
    assert!(
        (4..=12).contains(&pings),
        "{pings} watchdog pings in 3 s with WATCHDOG_USEC=1000000: {:?}",
        n.got
    );

    // STATUS follows the clients.
    w.add_user("alice", &[]);
    let alice = connect(&mut lab, &server, &w, "alice", "alice", None, &[]);
    n.wait_for(
        "STATUS=serving, 1 client connected",
        Duration::from_secs(10),
        &server_log,
    );

    // SIGHUP: RELOADING=1, then READY=1 again; the client stays.
    let pid = server.proc.pid();
    kill(pid, "HUP");
    n.wait_for("RELOADING=1", Duration::from_secs(10), &server_log);
    n.wait_for("READY=1", Duration::from_secs(10), &server_log);
    assert!(server.proc.is_running(), "{}", tail(&server.log(), 30));

    // SIGTERM: STOPPING=1, and a clean exit.
    kill(pid, "TERM");
    n.wait_for("STOPPING=1", Duration::from_secs(10), &server_log);
    let st = server.proc.wait_exit(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "server exit {st:?}:\n{}",
        tail(&server.log(), 30)
    );
    drop(alice);
}
