//! Issue 3, "warren client": what the client does to the machine and how it stays up.
//!
//! * `redirect-gateway def1` with pushed DNS: while up, traffic to an "internet" host that
//!   only the VPN server can reach goes through the tunnel; after SIGTERM the client
//!   namespace's routing table and its resolv.conf (a per-namespace file that `ip netns
//!   exec` bind-mounts, never the host's) are byte-for-byte what they were.
//! * The server is killed (SIGKILL) during a transfer and restarted: the same client
//!   process is back and passing traffic within 10 s of the restart, and the transfer
//!   completes with a matching SHA-256.
//! * A server certificate from another CA, or without EKU serverAuth under
//!   `remote-cert-tls server`, is refused with a clear message and never comes up.
//!
//! Each runs against the stock `openvpn` 2.6 server and `warren server`. Needs root.
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;

use std::fs;
use std::time::{Duration, Instant};

use client_common::{
    BgTransfer, RECONNECTED, UP, net_snapshot, prepare_client, spawn_client, start_client,
};
use common::lab::{Lab, MB, SERVER_PORT, SERVER_TUN_ADDR, ServerKind, Transfer, WARREN_BIN};
use common::netns::{Netns, link};
use common::process::{poll_until, tail};

const INTERNET_HOST: &str = "192.0.2.2";

mod cases {
    use super::*;

    pub fn redirect_gateway_and_exact_restore(kind: ServerKind) {
        let mut lab = Lab::p256("redirect", kind);
        // A third namespace, "the internet", reachable only from the server namespace, which
        // forwards; the internet host knows the way back to the VPN subnet only.
        let inet = Netns::new();
        link(
            &lab.server_ns,
            &inet,
            "192.0.2.1/24",
            &format!("{INTERNET_HOST}/24"),
        );
        inet.exec_ok(&["ip", "route", "add", "10.8.0.0/24", "via", "192.0.2.1"]);
        lab.server_ns.sysctl("net.ipv4.ip_forward", "1");
        let mut sc = lab.server_conf();
        sc.extra.push("push \"dhcp-option DNS 10.8.0.1\"".into());
        sc.extra
            .push("push \"dhcp-option DOMAIN vpn.example\"".into());
        lab.start_server(&sc);

        let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
        cc.extra.push("redirect-gateway def1".into());
        cc.extra.push("explicit-exit-notify".into());
        let p = prepare_client(&mut lab, cc);
        let srv = p.srv.clone();
        // The client namespace's own default route (its "ISP") is the server namespace.
        p.ns.exec_ok(&["ip", "route", "add", "default", "via", &srv]);
        let routes_before = net_snapshot(&p.ns);
        let resolv_before = p.etc.resolv_conf();
        // Without the tunnel the internet host does not answer (no route back).
        assert!(
            !p.ns.ping(INTERNET_HOST, 1, 1).success(),
            "the internet host must not be reachable outside the VPN"
        );

        let mut client = spawn_client(&lab, "client1", p, &[]);
        client.expect_up(&lab, client_common::UP_TIMEOUT);
        let get = client.ns.exec_ok(&["ip", "route", "get", INTERNET_HOST]);
        assert!(
            get.contains(&format!("dev {}", client.dev)),
            "not routed into the tunnel: {get}"
        );
        let table = client.ns.exec_ok(&["ip", "-4", "route"]);
        for want in [
            "0.0.0.0/1 via 10.8.0.1",
            "128.0.0.0/1 via 10.8.0.1",
            &format!("{srv} dev "),
        ] {
            assert!(table.contains(want), "missing `{want}`:\n{table}");
        }
        let out = client.ns.ping(INTERNET_HOST, 3, 2);
        assert!(
            out.success(),
            "ping {INTERNET_HOST} through the tunnel: {}{}",
            out.stdout,
            out.stderr
        );
        let resolv = String::from_utf8_lossy(&client.etc.resolv_conf()).into_owned();
        assert!(
            resolv.contains("nameserver 10.8.0.1") && resolv.contains("search vpn.example"),
            "{resolv}"
        );

        client.stop_cleanly();
        client.assert_restored(&routes_before, &resolv_before);
        assert!(!client.ns.ping(INTERNET_HOST, 1, 1).success());
        // explicit-exit-notify: the server learns at once that the client left.
        // openvpn 2.6.3 logs "Exit message received by peer", 2.6.14 "exit message received".
        let gone = match kind {
            ServerKind::Openvpn => "exit message received",
            ServerKind::Warren => "reason=exit-notify",
        };
        let seen = poll_until(Duration::from_secs(5), || {
            lab.server_log().to_lowercase().contains(gone).then_some(())
        });
        assert!(
            seen.is_some(),
            "server did not log `{gone}`:\n{}",
            tail(&lab.server_log(), 20)
        );
    }

    pub fn server_killed_and_restarted(kind: ServerKind) {
        let mut lab = Lab::p256("restart", kind);
        let mut sc = lab.server_conf();
        // Pushes ping 1 / ping-restart 5: the client notices a dead server within 5 s.
        sc.extra.push("keepalive 1 5".into());
        lab.start_server(&sc);
        let cc = lab.client_conf(&lab.pki.clients[0].clone());
        let mut client = start_client(&mut lab, "client1", cc, &[]);
        client.expect_up(&lab, client_common::UP_TIMEOUT);
        let addr = client.addr().to_owned();
        let xfer = BgTransfer::start(
            lab.dir(),
            "restart",
            &client.ns,
            &lab.server_ns,
            (SERVER_TUN_ADDR, 5100),
            &Transfer::timed(Duration::from_secs(20), MB),
        );
        std::thread::sleep(Duration::from_secs(4));
        lab.server().kill();
        std::thread::sleep(Duration::from_secs(2));

        // The same server.conf, a new process in the same namespace.
        let conf = lab.dir().join("server.conf");
        let conf = conf.to_str().expect("UTF-8").to_owned();
        let argv: Vec<&str> = match kind {
            ServerKind::Openvpn => vec!["openvpn", "--config", &conf],
            ServerKind::Warren => vec![WARREN_BIN, "server", "--config", &conf],
        };
        let dir = lab.dir().to_path_buf();
        let mut server2 =
            lab.server_ns
                .spawn_env("server2", &argv, &[], &dir, &dir.join("server2.log"));
        let ns = &lab.server_ns;
        let bound = poll_until(Duration::from_secs(15), || {
            ns.udp_port_bound(SERVER_PORT).then_some(())
        });
        assert!(
            bound.is_some(),
            "restarted server did not bind:\n{}",
            server2.log_tail(30)
        );
        let restarted = Instant::now();
        if let Err(e) = client
            .proc
            .wait_for_line(RECONNECTED, Duration::from_secs(15))
        {
            panic!("{e}\nrestarted server log:\n{}", server2.log_tail(30));
        }
        let ok = poll_until(Duration::from_secs(10), || {
            client
                .ns
                .ping(SERVER_TUN_ADDR, 1, 1)
                .success()
                .then_some(())
        });
        let took = restarted.elapsed();
        assert!(
            ok.is_some(),
            "no traffic after reconnecting:\n{}",
            client.proc.log_tail(30)
        );
        assert!(
            took < Duration::from_secs(10),
            "back only {took:?} after the restart"
        );
        assert_eq!(
            client.ns.ipv4_addr(&client.dev).as_deref(),
            Some(addr.as_str()),
            "tun address changed"
        );
        assert!(
            client.proc.is_running(),
            "the client process must not have restarted"
        );
        assert_eq!(client.count(UP), 1, "one `up` line, then `reconnected`");

        let r = xfer.finish();
        r.assert_intact();
        assert!(
            server2.is_running(),
            "restarted server died:\n{}",
            server2.log_tail(30)
        );
    }

    /// The client trusts another CA than the one that issued the server certificate.
    pub fn server_from_another_ca_refused(kind: ServerKind) {
        let mut lab = Lab::p256("other-ca", kind);
        let sc = lab.server_conf();
        lab.start_server(&sc);
        let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
        cc.ca = lab.pki.other_ca.clone();
        expect_refused(&mut lab, cc, &[]);
    }

    /// The server certificate is from the right CA but lacks EKU serverAuth.
    pub fn server_without_server_auth_refused(kind: ServerKind) {
        let mut lab = Lab::p256("no-eku", kind);
        let mut sc = lab.server_conf();
        sc.cert = lab.pki.server_no_server_auth.crt.clone();
        sc.key = lab.pki.server_no_server_auth.key.clone();
        lab.start_server(&sc);
        let cc = lab.client_conf(&lab.pki.clients[0].clone());
        expect_refused(&mut lab, cc, &["server authentication"]);
    }

    fn expect_refused(lab: &mut Lab, cc: common::conf::ClientConf, words: &[&str]) {
        let mut client = start_client(lab, "client1", cc, &[]);
        let line = client
            .proc
            .wait_for_line("certificate rejected", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", tail(&lab.server_log(), 30)));
        for w in words {
            assert!(line.contains(w), "the message should mention {w}: {line}");
        }
        assert_eq!(
            client.count(UP),
            0,
            "a refused server must never bring the tunnel up"
        );
        assert!(
            client.ns.ipv4_addr(&client.dev).is_none(),
            "no tun device for a refused server"
        );
        client.stop_cleanly();
        let _ = fs::metadata(client.profile.as_path());
    }
}

/// Several `remote` lines: a dead first remote (nobody listens on its port) is given up
/// after the connect timeout and the next one is used.
#[test]
fn next_remote_after_a_dead_one() {
    let mut lab = Lab::p256("failover", ServerKind::Warren);
    let sc = lab.server_conf();
    lab.start_server(&sc);
    let cc = lab.client_conf(&lab.pki.clients[0].clone());
    let mut p = prepare_client(&mut lab, cc);
    let srv = p.srv.clone();
    // ClientConf writes `remote {srv} 1194`; put a dead one in front.
    p.conf.remote.1 = SERVER_PORT + 1;
    p.conf.extra.push(format!("remote {srv} {SERVER_PORT}"));
    let mut client = spawn_client(&lab, "client1", p, &[]);
    client
        .wait_up(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let log = client.log();
    assert!(
        log.contains(&format!("no answer from {srv}:{}", SERVER_PORT + 1)),
        "{log}"
    );
    let up = client
        .proc
        .wait_for_line(UP, Duration::from_secs(1))
        .expect("up");
    assert!(
        up.contains(&format!("via server {srv}:{SERVER_PORT}")),
        "{up}"
    );
}

/// `auth-user-pass FILE` against a stock server whose password check fails: the client
/// exits with a clear AUTH_FAILED error instead of retrying forever, network restored.
#[test]
fn auth_failed_exits_with_a_clear_error() {
    let mut lab = Lab::p256("auth-failed", ServerKind::Openvpn);
    let mut sc = lab.server_conf();
    sc.extra.push("script-security 2".into());
    sc.extra
        .push("auth-user-pass-verify /bin/false via-file".into());
    lab.start_server(&sc);
    let creds = lab.dir().join("creds.txt");
    fs::write(&creds, "alice\nwrong-password\n").expect("write creds");
    let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
    cc.extra.push(format!("auth-user-pass {}", creds.display()));
    let mut client = start_client(&mut lab, "client1", cc, &[]);
    let st = client.proc.wait_exit(Duration::from_secs(30));
    let log = client.log();
    assert!(
        st.is_some_and(|s| !s.success()),
        "the client must exit with an error: {st:?}\n{log}"
    );
    assert!(log.contains("AUTH_FAILED"), "{log}");
    assert!(log.contains("error: "), "{log}");
    assert!(
        client.ns.ipv4_addr(&client.dev).is_none(),
        "tun left behind"
    );
}

against_both!(
    redirect_gateway_and_exact_restore,
    server_killed_and_restarted,
    server_from_another_ca_refused,
    server_without_server_auth_refused,
);
