//! Issue 10 (hardening): servers give up root after their setup and keep only
//! CAP_NET_ADMIN, and still do their whole job: a stock client connects and pings, its
//! address lease is written, and a revocation (a `warren` command in another process) still
//! kicks it. Revoking one of two certificates that share a common name (`duplicate-cn`)
//! ends only that certificate's session. `warren client` with `user`/`group` drops once
//! the tunnel is up, keeping CAP_NET_ADMIN, and its routes and resolv.conf are put back
//! byte for byte when it stops, and even when it is killed (the root restore helper).
//!
//! Needs root (network namespaces) and `openvpn`.

#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;
use crate::state_common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::conf::TlsWrap;
use common::lab::{CONNECTED, Lab, ServerKind, nobody_group};
use common::netns::ping_ok;
use common::process::{poll_until, tail};
use state_common::{
    PUSHED_RESET, SERVER_VPN_IP, Warren, ZeroServer, connect, expect_auth_failed_after, lines_with,
    start_profile,
};

/// `CapEff` with CAP_NET_ADMIN (bit 12) alone, as /proc prints it.
const NET_ADMIN_ONLY: &str = "0000000000001000";

/// `Uid:`, `Gid:` (real, effective, saved, fs) and the capability sets of a process.
fn proc_status(pid: u32) -> (Vec<u32>, Vec<u32>, String, String, String) {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .trim()
            .to_owned()
    };
    let ids = |name: &str| -> Vec<u32> {
        field(name)
            .split_whitespace()
            .map(|v| v.parse().expect("id"))
            .collect()
    };
    (
        ids("Uid:"),
        ids("Gid:"),
        field("CapEff:"),
        field("CapPrm:"),
        field("CapBnd:"),
    )
}

/// The process runs as a user other than root, with CAP_NET_ADMIN and nothing else.
fn assert_unprivileged(pid: u32, log: &str) {
    let (uid, gid, eff, prm, bnd) = proc_status(pid);
    assert!(
        uid.iter().all(|u| *u != 0) && gid.iter().all(|g| *g != 0),
        "still root: Uid {uid:?} Gid {gid:?}\n{}",
        tail(log, 30)
    );
    assert_eq!(eff, NET_ADMIN_ONLY, "CapEff\n{}", tail(log, 30));
    assert_eq!(prm, NET_ADMIN_ONLY, "CapPrm");
    assert_eq!(bnd, NET_ADMIN_ONLY, "CapBnd");
}

#[test]
fn zero_config_server_drops_root_and_still_serves_and_kicks() {
    let mut lab = Lab::p256("privs-zero", ServerKind::Warren);
    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    let server = ZeroServer::start(&lab, &state, &[]);
    w.add_user("alice", &[]);
    w.add_user("bob", &[]);

    // Which user depends on the machine: `warren` when it exists, else nobody.
    let expect = if fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("warren:"))
    {
        "dropped privileges to warren:"
    } else {
        "dropped privileges to nobody:"
    };
    let log = server.log();
    assert!(log.contains(expect), "{}", tail(&log, 30));
    assert!(log.contains("keeping CAP_NET_ADMIN"), "{}", tail(&log, 30));
    assert_unprivileged(server.proc.pid(), &log);

    // A client connects after the drop: authorised from the database, its lease written
    // through the connection opened before the drop, traffic flows.
    let mut alice = connect(&mut lab, &server, &w, "alice", "alice", None, &[]);
    let bob = connect(&mut lab, &server, &w, "bob", "bob", None, &[]);
    ping_ok(&alice.ns, SERVER_VPN_IP, &alice.name);
    ping_ok(&bob.ns, SERVER_VPN_IP, &bob.name);
    let log = server.log();
    assert!(
        !log.contains("cannot record the address lease"),
        "{}",
        lines_with(&log, "lease")
    );
    let leases = w.ok(&["user", "show", "alice"]).stdout;
    assert!(leases.contains("10.8.0."), "no lease for alice:\n{leases}");

    // SIGHUP after the drop: the server stays up, reloads its TLS configuration (the key
    // files are root's: a root helper started before the drop reads them) and re-checks
    // the user database.
    let pid = server.proc.pid().to_string();
    let hup = common::process::run_bounded(
        std::process::Command::new("kill").args(["-s", "HUP", &pid]),
        Duration::from_secs(5),
    );
    assert!(hup.success(), "{}", hup.stderr);
    let rechecked = poll_until(Duration::from_secs(10), || {
        server.log().contains("user database re-read").then_some(())
    });
    assert!(rechecked.is_some(), "{}", tail(&server.log(), 30));
    let log = server.log();
    assert!(
        log.contains("reloaded: TLS configuration") && !log.contains("reload failed"),
        "{}",
        tail(&log, 30)
    );
    ping_ok(&alice.ns, SERVER_VPN_IP, &alice.name);

    // Revocation still reaches the unprivileged server and kicks alice, not bob.
    w.ok(&["pki", "revoke", "alice"]);
    let kicked = poll_until(Duration::from_secs(10), || {
        server
            .log()
            .contains("session(s) of alice: certificate")
            .then_some(())
    });
    assert!(kicked.is_some(), "{}", tail(&server.log(), 30));
    alice
        .proc
        .wait_for_line(PUSHED_RESET, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    expect_auth_failed_after(&mut alice.proc, PUSHED_RESET, Duration::from_secs(30));
    assert!(!bob.proc.log().contains(PUSHED_RESET), "bob was kicked");
    ping_ok(&bob.ns, SERVER_VPN_IP, &bob.name);
    // Still unprivileged, and still running.
    assert_unprivileged(server.proc.pid(), &server.log());
    server.stop();
}

/// The `<cert>` and `<key>` blocks of `profile` replaced by `cert` and `key`.
fn with_identity(profile: &str, cert: &str, key: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in profile.lines() {
        match line {
            "<cert>" => {
                out.push_str(&format!("<cert>\n{}\n</cert>\n", cert.trim_end()));
                skip = true;
            }
            "<key>" => {
                out.push_str(&format!("<key>\n{}\n</key>\n", key.trim_end()));
                skip = true;
            }
            "</cert>" | "</key>" => skip = false,
            _ if skip => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// A server.conf server with `user nobody`/`group nogroup` and `duplicate-cn`: it keeps
/// CAP_NET_ADMIN too, and revoking one of alice's two certificates (`pki revoke --serial`)
/// ends that session only.
#[test]
fn duplicate_cn_revocation_kicks_only_that_certificate() {
    let mut lab = Lab::p256("privs-dupcn", ServerKind::Warren);
    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    w.ok(&["pki", "init"]);
    w.add_user("alice", &[]);
    // The first certificate's profile, with the server address filled in later.
    let first = w.export("alice", "warren-placeholder.invalid", &[]);
    // A second certificate for alice (another device).
    let out_dir = lab.dir().join("second");
    let issued = w.ok(&[
        "pki",
        "issue",
        "client",
        "alice",
        "--out",
        out_dir.to_str().expect("UTF-8"),
    ]);
    let serial = issued
        .stderr
        .split("issued client certificate ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no serial in: {}", issued.stderr))
        .to_owned();
    let read = |p: &Path| fs::read_to_string(p).expect("read issued file");
    let second = with_identity(
        &first,
        &read(&out_dir.join("alice.crt")),
        &read(&out_dir.join("alice.key")),
    );
    assert_ne!(first, second);

    let group = nobody_group();
    let mut conf = lab.server_conf();
    conf.ca = state.join("pki/ca.crt");
    conf.cert = state.join("pki/server.crt");
    conf.key = state.join("pki/server.key");
    conf.ta_key = state.join("tls-crypt.key");
    conf.wrap = TlsWrap::Crypt;
    // `status FILE 1` in a directory the dropped server cannot write: updated in place
    // through the descriptor opened before the drop.
    let status = lab.dir().join("status.txt");
    conf.status = Some(status.clone());
    conf.extra = vec![
        "duplicate-cn".into(),
        "user nobody".into(),
        format!("group {group}"),
        format!("warren-state-dir {}", state.display()),
        "warren-auth cert".into(),
    ];
    lab.start_server(&conf);
    let pid = lab.server().pid();
    let log = lab.server_log();
    assert!(
        log.contains(&format!("dropped privileges to nobody:{group}"))
            && log.contains("keeping CAP_NET_ADMIN"),
        "{}",
        tail(&log, 30)
    );
    assert_unprivileged(pid, &log);

    let mut laptop = start_profile(&mut lab, "laptop", None, |srv| {
        first.replace("warren-placeholder.invalid", srv)
    });
    let mut phone = start_profile(&mut lab, "phone", None, |srv| {
        second.replace("warren-placeholder.invalid", srv)
    });
    for c in [&mut laptop, &mut phone] {
        if let Err(e) = c.wait_connected(Duration::from_secs(20)) {
            panic!("{e}\nserver:\n{}", tail(&lab.server_log(), 40));
        }
        ping_ok(&c.ns, SERVER_VPN_IP, &c.name);
    }
    assert_ne!(laptop.addr(), phone.addr());
    let listed = poll_until(Duration::from_secs(10), || {
        let text = fs::read_to_string(&status).unwrap_or_default();
        (text.contains(laptop.addr()) && text.contains(phone.addr())).then_some(text)
    });
    assert!(
        listed.is_some(),
        "status file after the drop:\n{}",
        fs::read_to_string(&status).unwrap_or_default()
    );

    w.ok(&["pki", "revoke", "--serial", &serial]);
    phone
        .proc
        .wait_for_line(PUSHED_RESET, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\nserver:\n{}", tail(&lab.server_log(), 30)));
    expect_auth_failed_after(&mut phone.proc, PUSHED_RESET, Duration::from_secs(30));
    let log = lab.server_log();
    assert!(
        log.contains("ended 1 session(s) of alice: certificate"),
        "{}",
        lines_with(&log, "session(s)")
    );
    // The laptop (same name, the other certificate) was left alone.
    assert!(
        !laptop.proc.log().contains(PUSHED_RESET),
        "the laptop was kicked too:\n{}",
        laptop.proc.log_tail(20)
    );
    ping_ok(&laptop.ns, SERVER_VPN_IP, &laptop.name);
    assert!(laptop.log().contains(CONNECTED));
    assert_unprivileged(pid, &lab.server_log());
}

/// The client's routes and the namespace's resolv.conf are back to `routes`/`resolv`
/// within 10 s (the restore helper works once the client is gone).
fn wait_restored(c: &client_common::WarrenClient, routes: &str, resolv: &[u8]) {
    let back = poll_until(Duration::from_secs(10), || {
        (client_common::net_snapshot(&c.ns) == routes && c.etc.resolv_conf() == resolv)
            .then_some(())
    });
    assert!(
        back.is_some(),
        "not restored:
routes now:
{}
wanted:
{routes}
resolv.conf now:
{}
client log:
{}",
        client_common::net_snapshot(&c.ns),
        String::from_utf8_lossy(&c.etc.resolv_conf()),
        c.proc.log_tail(30)
    );
}

/// `warren client` with `user nobody` against the stock server: up, then unprivileged with
/// CAP_NET_ADMIN (its `ip` commands too), traffic flows; after SIGTERM and after SIGKILL
/// alike the routing table and resolv.conf are exactly what they were.
#[test]
fn client_drops_after_up_and_the_network_is_restored() {
    use common::lab::SERVER_TUN_ADDR;
    let mut lab = Lab::p256("privs-client", ServerKind::Openvpn);
    let mut sc = lab.server_conf();
    sc.extra.push("push \"dhcp-option DNS 10.8.0.1\"".into());
    lab.start_server(&sc);
    let group = nobody_group();
    for (round, how) in ["SIGTERM", "SIGKILL"].into_iter().enumerate() {
        let mut cc = lab.client_conf(&lab.pki.clients[round].clone());
        cc.extra.push("redirect-gateway def1".into());
        cc.extra.push("user nobody".into());
        cc.extra.push(format!("group {group}"));
        let p = client_common::prepare_client(&mut lab, cc);
        let srv = p.srv.clone();
        p.ns.exec_ok(&["ip", "route", "add", "default", "via", &srv]);
        let routes = client_common::net_snapshot(&p.ns);
        let resolv = p.etc.resolv_conf();
        let mut c = client_common::spawn_client(&lab, &format!("client-{how}"), p, &[]);
        c.expect_up(&lab, client_common::UP_TIMEOUT);
        c.proc
            .wait_for_line(
                &format!("dropped privileges to nobody:{group}, keeping CAP_NET_ADMIN"),
                Duration::from_secs(10),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_unprivileged(c.proc.pid(), &c.log());
        let status = fs::read_to_string(format!("/proc/{}/status", c.proc.pid())).expect("status");
        assert!(
            status
                .lines()
                .any(|l| l == format!("CapAmb:\t{NET_ADMIN_ONLY}")),
            "ambient CAP_NET_ADMIN (for `ip`):\n{status}"
        );
        let out = c.ns.ping(SERVER_TUN_ADDR, 3, 2);
        assert!(out.success(), "ping: {}{}", out.stdout, out.stderr);
        let table = c.ns.exec_ok(&["ip", "-4", "route"]);
        assert!(table.contains("0.0.0.0/1 via 10.8.0.1"), "{table}");
        let now = String::from_utf8_lossy(&c.etc.resolv_conf()).into_owned();
        assert!(now.contains("nameserver 10.8.0.1"), "{now}");

        if how == "SIGTERM" {
            c.stop_cleanly();
        } else {
            c.proc.kill();
        }
        wait_restored(&c, &routes, &resolv);
        // The helper logs once it is done (just after the last file write).
        let reported = poll_until(Duration::from_secs(5), || {
            c.log().contains("ended: undid").then_some(())
        });
        let log = c.log();
        assert!(
            reported.is_some(),
            "the helper did not report:\n{}",
            tail(&log, 20)
        );
        assert!(
            !log.contains("cannot write the network journal"),
            "{}",
            tail(&log, 20)
        );
    }
}
