//! Issue 10 (failure 4) and 14: signals handled as OpenVPN handles them.
//!
//! * `warren server` with stock `openvpn` clients: SIGUSR2 writes the client list to the
//!   log and the server keeps running; SIGHUP keeps sessions up (no reconnect, ping still
//!   works) and a user revoked before it is kicked; SIGUSR1 tells every client to reconnect
//!   (the stock client logs the pushed reset and comes back, ping works again) while the
//!   server process stays; SIGTERM sends the exit notification and the server exits 0.
//! * `warren client` against the stock `openvpn` server: SIGUSR2 logs the statistics;
//!   SIGUSR1 and SIGHUP reconnect (the server sees new connections), ping works, the pushed
//!   DNS stays in place; SIGTERM exits 0 with routes and resolv.conf byte for byte as before.
//! * `warren client` killed with SIGKILL while it holds pushed DNS and routes: the next
//!   `warren client` in the same namespace first puts the original resolv.conf back.
//!
//! Every process is started by the test in its own namespace and signalled by PID; every
//! wait is bounded. Needs root and `openvpn`.
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;
use crate::state_common;

use std::process::Command;
use std::time::Duration;

use client_common::{NS_RESOLV_CONF, RECONNECTED, UP, net_snapshot, prepare_client, spawn_client};
use common::lab::{CONNECTED, Client, Lab, SERVER_TUN_ADDR, ServerKind};
use common::process::{Proc, poll_until, run_bounded, tail};
use state_common::{
    PUSHED_RESET, SERVER_VPN_IP, Warren, ZeroServer, connect, expect_auth_failed_after,
};

/// Sends `sig` (`USR1`, `HUP`, ...) to a process this test started, by PID. The process
/// must still run: an unreaped child's PID cannot have been reused.
fn signal(p: &mut Proc, sig: &str) {
    assert!(
        p.is_running(),
        "{} exited before SIG{sig}:\n{}",
        p.name(),
        p.log_tail(30)
    );
    let out = run_bounded(
        Command::new("kill")
            .arg("-s")
            .arg(sig)
            .arg(p.pid().to_string()),
        Duration::from_secs(5),
    );
    assert!(out.success(), "kill -s {sig}: {}", out.stderr);
}

/// Number of lines of `log` containing `pat`.
fn count(log: &str, pat: &str) -> usize {
    log.lines().filter(|l| l.contains(pat)).count()
}

/// Waits until `log()` has at least `n` lines containing `pat`.
fn wait_count(what: &str, log: impl Fn() -> String, pat: &str, n: usize, limit: Duration) {
    if poll_until(limit, || (count(&log(), pat) >= n).then_some(())).is_none() {
        panic!(
            "{what}: fewer than {n} lines with {pat:?} after {limit:?}:\n{}",
            tail(&log(), 40)
        );
    }
}

fn ping_ok(c: &Client, to: &str, what: &str) {
    // A few tries: right after a reconnect the first echo may be lost.
    let ok = poll_until(Duration::from_secs(10), || {
        c.ns.ping(to, 1, 1).success().then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: {} cannot ping {to}:\n{}",
        c.name,
        c.proc.log_tail(20)
    );
}

#[test]
fn warren_server_signals_with_stock_clients() {
    let mut lab = Lab::p256("sig-server", ServerKind::Warren);
    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    let mut server = ZeroServer::start(&lab, &state, &[]);
    for u in ["alice", "bob", "carol"] {
        w.add_user(u, &[]);
    }
    let alice = connect(&mut lab, &server, &w, "alice", "alice", None, &[]);
    let bob = connect(&mut lab, &server, &w, "bob", "bob", None, &[]);
    let mut carol = connect(&mut lab, &server, &w, "carol", "carol", None, &[]);
    ping_ok(&alice, SERVER_VPN_IP, "before the signals");

    // SIGUSR2: the status report (one line per client) in the log; the server stays.
    signal(&mut server.proc, "USR2");
    server.wait_for("status totals", Duration::from_secs(10));
    let log = server.log();
    let report = &log[log.find("SIGUSR2 received").expect("SIGUSR2 line")..];
    for (user, c) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        let row = format!("{user},{}:", c.client_underlay);
        assert!(
            report.contains(&row),
            "no status row `{row}...` after SIGUSR2:\n{}",
            tail(&log, 30)
        );
    }
    assert!(server.proc.is_running(), "the server died on SIGUSR2");

    // SIGHUP: a reload, not a shutdown; sessions stay up. carol is revoked first and must
    // be gone after it; alice and bob never reconnect.
    w.ok(&["pki", "revoke", "carol"]);
    signal(&mut server.proc, "HUP");
    server.wait_for("SIGHUP handled", Duration::from_secs(10));
    let log = server.log();
    assert!(
        log.contains("reloaded: TLS configuration") && log.contains("user database re-read"),
        "the log must say what was reloaded:\n{}",
        tail(&log, 30)
    );
    server.wait_for("session(s) of carol:", Duration::from_secs(5));
    carol
        .proc
        .wait_for_line(PUSHED_RESET, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    expect_auth_failed_after(&mut carol.proc, PUSHED_RESET, Duration::from_secs(30));
    for c in [&alice, &bob] {
        ping_ok(c, SERVER_VPN_IP, "after SIGHUP");
        assert_eq!(
            c.count(CONNECTED),
            1,
            "{} reconnected after SIGHUP:\n{}",
            c.name,
            c.proc.log_tail(20)
        );
        assert_eq!(c.count(PUSHED_RESET), 0, "{} was kicked by SIGHUP", c.name);
    }
    assert!(server.proc.is_running(), "the server died on SIGHUP");

    // SIGUSR1: every client is told to reconnect and does; the server process stays.
    let mut alice = alice;
    let mut bob = bob;
    signal(&mut server.proc, "USR1");
    server.wait_for("SIGUSR1[soft,", Duration::from_secs(5));
    for c in [&mut alice, &mut bob] {
        let name = c.name.clone();
        let log = || c.log();
        wait_count(&name, log, PUSHED_RESET, 1, Duration::from_secs(10));
        wait_count(&name, || c.log(), CONNECTED, 2, Duration::from_secs(30));
        ping_ok(c, SERVER_VPN_IP, "after SIGUSR1");
    }
    assert!(
        server
            .log()
            .contains("soft restart: 2 session(s) ended (RESTART sent)"),
        "{}",
        tail(&server.log(), 30)
    );
    assert!(server.proc.is_running(), "the server died on SIGUSR1");

    // SIGTERM: the clients get the exit notification (RESTART); the server exits 0.
    signal(&mut server.proc, "TERM");
    let st = server.proc.wait_exit(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "server exit status {st:?}:\n{}",
        tail(&server.log(), 20)
    );
    assert!(
        server
            .log()
            .contains("SIGTERM[hard,] received, server exiting")
    );
    for c in [&alice, &bob] {
        let name = c.name.clone();
        wait_count(&name, || c.log(), PUSHED_RESET, 2, Duration::from_secs(5));
    }
}

#[test]
fn warren_client_signals_against_stock_server() {
    let mut lab = Lab::p256("sig-client", ServerKind::Openvpn);
    let mut sc = lab.server_conf();
    sc.extra.push("push \"dhcp-option DNS 10.8.0.1\"".into());
    sc.extra
        .push("push \"dhcp-option DOMAIN vpn.example\"".into());
    sc.extra
        .push("push \"route 192.0.2.0 255.255.255.0\"".into());
    lab.start_server(&sc);
    let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
    cc.extra.push("explicit-exit-notify".into());
    let p = prepare_client(&mut lab, cc);
    let routes_before = net_snapshot(&p.ns);
    let resolv_before = p.etc.resolv_conf();
    let mut client = spawn_client(&lab, "client1", p, &[]);
    client.expect_up(&lab, client_common::UP_TIMEOUT);
    let pushed_dns = |c: &client_common::WarrenClient| {
        let r = String::from_utf8_lossy(&c.etc.resolv_conf()).into_owned();
        r.contains("nameserver 10.8.0.1") && r.contains("vpn.example")
    };
    assert!(pushed_dns(&client), "pushed DNS not applied");
    let server_conns = |lab: &Lab| count(&lab.server_log(), "Peer Connection Initiated");
    assert_eq!(server_conns(&lab), 1);

    // SIGUSR2: statistics in the log.
    signal(&mut client.proc, "USR2");
    let line = client
        .proc
        .wait_for_line("SIGUSR2 received", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        line.contains(&format!("connected to server {}:", client.server_underlay))
            && line.contains("tunnel bytes in"),
        "{line}"
    );
    client
        .proc
        .wait_for_line("statistics since start", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));

    // SIGUSR1, then SIGHUP: a new session each time, same process, tun and DNS kept.
    for (sig, n) in [("USR1", 1), ("HUP", 2)] {
        signal(&mut client.proc, sig);
        let name = format!("SIG{sig}");
        wait_count(
            &name,
            || client.log(),
            &format!("SIG{sig}[soft,signal] received, process restarting"),
            1,
            Duration::from_secs(5),
        );
        wait_count(
            &name,
            || client.log(),
            RECONNECTED,
            n,
            Duration::from_secs(30),
        );
        wait_count(
            &name,
            || lab.server_log(),
            "Peer Connection Initiated",
            n + 1,
            Duration::from_secs(5),
        );
        let out = client.ns.ping(SERVER_TUN_ADDR, 3, 2);
        assert!(
            out.success(),
            "no traffic after {name}: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(pushed_dns(&client), "pushed DNS lost after {name}");
        let table = client.ns.exec_ok(&["ip", "-4", "route"]);
        assert!(
            table.contains(&format!("192.0.2.0/24 via 10.8.0.1 dev {}", client.dev)),
            "pushed route lost after {name}:\n{table}"
        );
        assert!(client.proc.is_running());
    }
    assert_eq!(client.count(UP), 1, "one `up` line, then `reconnected`");

    // SIGTERM: exit 0, everything as before.
    client.stop_cleanly();
    client.assert_restored(&routes_before, &resolv_before);
    assert_eq!(resolv_before, NS_RESOLV_CONF.as_bytes());
    let seen = poll_until(Duration::from_secs(5), || {
        lab.server_log()
            .to_lowercase()
            .contains("exit message received")
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "no exit notification at the server:\n{}",
        tail(&lab.server_log(), 20)
    );
}

#[test]
fn killed_client_is_cleaned_up_by_the_next_run() {
    let mut lab = Lab::p256("sig-kill9", ServerKind::Openvpn);
    let mut sc = lab.server_conf();
    sc.extra.push("push \"dhcp-option DNS 10.8.0.1\"".into());
    sc.extra
        .push("push \"route 192.0.2.0 255.255.255.0\"".into());
    lab.start_server(&sc);
    let cc = lab.client_conf(&lab.pki.clients[0].clone());
    let p = prepare_client(&mut lab, cc);
    let routes_before = net_snapshot(&p.ns);
    let resolv_before = p.etc.resolv_conf();
    let mut client = spawn_client(&lab, "client1", p, &[]);
    client.expect_up(&lab, client_common::UP_TIMEOUT);
    let killed_pid = client.proc.pid();
    client.proc.kill();
    // Nothing ran at exit: warren's resolv.conf is still there.
    let left = String::from_utf8_lossy(&client.etc.resolv_conf()).into_owned();
    assert!(
        left.contains("nameserver 10.8.0.1"),
        "expected the killed client's DNS to be left behind:\n{left}"
    );

    // The next run undoes what the killed one left before it changes anything. It cannot
    // reach a server (nothing listens on this port), so nothing new is applied afterwards.
    let profile = client.profile.to_str().expect("UTF-8").to_owned();
    let dead_profile = lab.dir().join("dead.ovpn");
    let text = std::fs::read_to_string(&profile).expect("profile");
    let text = text.replace(
        &format!("remote {} 1194", client.server_underlay),
        &format!("remote {} 1195", client.server_underlay),
    );
    assert!(text.contains(" 1195"), "profile rewrite failed:\n{text}");
    std::fs::write(&dead_profile, text).expect("write profile");
    let mut second = client_common::spawn_profile(&lab, &client.ns, "client2", &dead_profile, &[]);
    let line = second
        .wait_for_line("that ended without cleaning up", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(line.contains(&killed_pid.to_string()), "{line}");
    second
        .wait_for_line("connecting to", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        client.etc.resolv_conf(),
        resolv_before,
        "the original resolv.conf was not put back first"
    );
    assert_eq!(
        net_snapshot(&client.ns),
        routes_before,
        "the killed client's routes were not removed"
    );
    second.terminate(Duration::from_secs(5));
    assert!(
        second.exited().is_some_and(|s| s.success()),
        "{}",
        second.log_tail(20)
    );
}

/// A `server.conf` server (no user database): SIGUSR2 uses the config's `status-version`,
/// SIGHUP re-reads the TLS files named in the config and keeps the session.
#[test]
fn config_file_server_status_and_reload() {
    let mut lab = Lab::p256("sig-conf", ServerKind::Warren);
    let mut sc = lab.server_conf();
    sc.extra.push("status-version 2".into());
    lab.start_server(&sc);
    let cc = lab.client_conf(&lab.pki.clients[0].clone());
    let client = lab.connect_client("client1", cc);

    signal(lab.server(), "USR2");
    wait_count(
        "SIGUSR2",
        || lab.server_log(),
        "status totals",
        1,
        Duration::from_secs(10),
    );
    let log = lab.server_log();
    assert!(
        log.contains(&format!("CLIENT_LIST,client1,{}:", client.client_underlay)),
        "no version-2 CLIENT_LIST row:\n{}",
        tail(&log, 30)
    );

    signal(lab.server(), "HUP");
    wait_count(
        "SIGHUP",
        || lab.server_log(),
        "SIGHUP handled: 1 client(s) connected",
        1,
        Duration::from_secs(10),
    );
    let log = lab.server_log();
    let conf = lab.dir().join("server.conf");
    assert!(
        log.contains(&format!(
            "reloaded: TLS configuration (ca, cert, key) from {}",
            conf.display()
        )) && log.contains("no user database to re-read"),
        "{}",
        tail(&log, 20)
    );
    ping_ok(&client, SERVER_TUN_ADDR, "after SIGHUP");
    assert_eq!(client.count(CONNECTED), 1, "the client reconnected");
    lab.assert_server_running();
}
