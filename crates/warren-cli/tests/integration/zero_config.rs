//! Issue 4: `warren server` with no config at all, on a state directory.
//!
//! * a fresh state directory: the server creates everything, `warren user add` + `warren
//!   profile export` make a profile that the stock `openvpn` client and `warren client` use
//!   unchanged, with a checked transfer;
//! * leases survive a server restart, fixed addresses are honoured;
//! * an easy-rsa PKI (Debian's `easy-rsa`) is imported and its clients connect; a certificate
//!   revoked in easy-rsa before the import is refused;
//! * a `server.conf` with `warren-state-dir` gets the same user checks, and the very same
//!   file still runs under stock `openvpn` (`ignore-unknown-option`);
//! * killing the server during its first run never leaves a state that fails to load.
//!
//! Needs root (network namespaces) and `openvpn`, `openssl`, `easy-rsa`.

#![allow(clippy::disallowed_methods)]

use crate::common;
use crate::state_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::conf::TlsWrap;
use common::lab::{CONNECTED, Lab, MB, ServerKind, Transfer, WARREN_BIN};
use common::pki::easyrsa_pki;
use common::process::poll_until;
use state_common::{
    SERVER_VPN_IP, Warren, ZeroServer, connect, expect_auth_failed, start_client, start_openvpn,
    write_profile,
};

#[test]
fn fresh_state_stock_client_and_warren_client() {
    let mut lab = Lab::p256("zero-fresh", ServerKind::Warren);
    let state = lab.dir().join("state");
    let w = Warren::new(&state);

    let server = ZeroServer::start(&lab, &state, &[]);
    let log = server.log();
    assert!(log.contains("warren: first run, created:"), "{log}");
    assert!(log.contains("CA \"warren CA "), "{log}");
    let next = format!("warren user add NAME --state-dir {}", state.display());
    assert!(
        log.contains(&next),
        "the first run names the next commands:\n{log}"
    );
    assert!(log.contains("profile export NAME"), "{log}");
    assert!(state.join("pki/ca.crt").exists() && state.join("tls-crypt.key").exists());

    // The stock client with the exported profile, unchanged but for the tun name.
    w.add_user("alice", &[]);
    let alice = connect(&mut lab, &server, &w, "alice", "alice", None, &[]);
    assert_eq!(alice.addr(), "10.8.0.2");
    let r = lab.transfer(
        &alice.ns,
        &lab.server_ns,
        SERVER_VPN_IP,
        &Transfer::bytes(4 * MB),
    );
    r.assert_intact();
    assert!(
        server.log().contains("login accepted user=\"alice\""),
        "{}",
        server.log()
    );

    // The very same profile file, byte for byte, works too (its session replaces the
    // first one: no duplicate-cn).
    drop(alice);
    let (ns, srv, _) = lab.new_peer_ns();
    let raw = lab.dir().join("alice-raw.ovpn");
    fs::write(&raw, w.export("alice", &srv, &[])).expect("write");
    let mut p = start_openvpn(&lab, &ns, "alice-raw", &raw);
    p.wait_for_line(CONNECTED, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\nserver:\n{}", server.log()));

    drop(p);
    // `warren client` with the same profile.
    let (ns, srv, _) = lab.new_peer_ns();
    let (prof, _) = write_profile(&lab, "alice-warren", &w.export("alice", &srv, &[]), None);
    let mut wc = crate::client_common::spawn_profile(&lab, &ns, "alice-warren", &prof, &[]);
    match wc.wait_for_line("warren client up:", Duration::from_secs(20)) {
        Ok(_) => {
            let r = lab.transfer(&ns, &lab.server_ns, SERVER_VPN_IP, &Transfer::bytes(4 * MB));
            r.assert_intact();
        }
        Err(e) => panic!("warren client did not come up with the exported profile: {e}"),
    }
    drop(wc);

    // A second run reuses the state and says nothing about creating it.
    server.stop();
    let ca = fs::read_to_string(state.join("pki/ca.crt")).expect("ca");
    let again = ZeroServer::start(&lab, &state, &[]);
    assert!(!again.log().contains("first run"), "{}", again.log());
    assert_eq!(
        fs::read_to_string(state.join("pki/ca.crt")).expect("ca"),
        ca
    );
}

#[test]
fn leases_survive_restarts_and_fixed_addresses_hold() {
    let mut lab = Lab::p256("zero-lease", ServerKind::Warren);
    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    let server = ZeroServer::start(&lab, &state, &[]);
    w.add_user("alice", &[]);
    w.add_user("bob", &[]);
    w.add_user("carol", &["--fixed-ip", "10.8.0.50"]);

    let a = connect(&mut lab, &server, &w, "alice1", "alice", None, &[]);
    let b = connect(&mut lab, &server, &w, "bob1", "bob", None, &[]);
    assert_eq!((a.addr(), b.addr()), ("10.8.0.2", "10.8.0.3"));
    drop(a);
    drop(b);
    server.stop();

    // After a restart, bob comes first: he still gets .3 (the pool alone would give .2).
    let server = ZeroServer::start(&lab, &state, &[]);
    let b = connect(&mut lab, &server, &w, "bob2", "bob", None, &[]);
    assert_eq!(b.addr(), "10.8.0.3");
    let c = connect(&mut lab, &server, &w, "carol2", "carol", None, &[]);
    assert_eq!(c.addr(), "10.8.0.50", "fixed address");
    let a = connect(&mut lab, &server, &w, "alice2", "alice", None, &[]);
    assert_eq!(a.addr(), "10.8.0.2");
    // A newcomer gets an address nobody has or had.
    w.add_user("dave", &[]);
    let d = connect(&mut lab, &server, &w, "dave2", "dave", None, &[]);
    assert_eq!(d.addr(), "10.8.0.4");
    let leases = w.ok(&["user", "show", "alice", "--json"]).stdout;
    assert!(leases.contains("10.8.0.2"), "{leases}");
    // The fixed address works through the tunnel.
    let out = c.ns.ping(SERVER_VPN_IP, 2, 2);
    assert!(out.success(), "{}", out.stdout);
}

/// The only file in `dir`.
fn only_file(dir: &Path, ext: &str) -> PathBuf {
    let files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn imported_easy_rsa_clients_connect_and_revoked_ones_do_not() {
    let mut lab = Lab::p256("zero-easyrsa", ServerKind::Warren);
    let er = lab.dir().join("easyrsa");
    easyrsa_pki(
        &er,
        &[("EASYRSA_ALGO", "ec"), ("EASYRSA_CURVE", "prime256v1")],
    );

    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    w.ok(&["pki", "import", er.to_str().expect("utf8")]);
    let server = ZeroServer::start(&lab, &state, &[]);

    // alice with her easy-rsa files (not a warren profile).
    let pki = er.join("pki");
    let mut conf = lab.client_conf(&lab.pki.clients[0]);
    conf.ca = pki.join("ca.crt");
    conf.cert = pki.join("issued/alice.crt");
    conf.key = pki.join("private/alice.key");
    conf.ta_key = state.join("tls-crypt.key");
    conf.wrap = TlsWrap::Crypt;
    let mut alice = lab.start_client("alice", conf.clone());
    alice
        .wait_connected(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\nserver:\n{}", server.log()));
    let r = lab.transfer(
        &alice.ns,
        &lab.server_ns,
        SERVER_VPN_IP,
        &Transfer::bytes(2 * MB),
    );
    r.assert_intact();

    // bob's certificate was revoked in easy-rsa before the import.
    conf.cert = only_file(&pki.join("revoked/certs_by_serial"), "crt");
    conf.key = only_file(&pki.join("revoked/private_by_serial"), "key");
    conf.dev = common::netns::unique_name("tun", 'c');
    let mut bob = lab.start_client("bob", conf);
    expect_auth_failed(&mut bob.proc, Duration::from_secs(20));
    assert!(
        server.log().contains("login refused user=\"bob\"") && server.log().contains("is revoked"),
        "{}",
        server.log()
    );
}

#[test]
fn server_conf_with_a_state_dir_checks_users_and_stays_openvpn_compatible() {
    let mut lab = Lab::p256("zero-conf", ServerKind::Warren);
    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    w.ok(&["pki", "init"]);
    w.add_user("alice", &[]);
    w.add_user("bob", &[]);
    w.ok(&["user", "disable", "bob"]);

    let mut conf = lab.server_conf();
    conf.ca = state.join("pki/ca.crt");
    conf.cert = state.join("pki/server.crt");
    conf.key = state.join("pki/server.key");
    conf.ta_key = state.join("tls-crypt.key");
    conf.wrap = TlsWrap::Crypt;
    conf.extra = vec![
        "ignore-unknown-option warren-state-dir warren-auth".into(),
        format!("warren-state-dir {}", state.display()),
        "warren-auth cert".into(),
    ];
    lab.start_server(&conf);

    let (ns, srv, _) = lab.new_peer_ns();
    let (p, dev) = write_profile(&lab, "alice", &w.export("alice", &srv, &[]), None);
    let mut a = start_openvpn(&lab, &ns, "alice", &p);
    a.wait_for_line(CONNECTED, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\nserver:\n{}", lab.server_log()));
    let ip = poll_until(Duration::from_secs(5), || ns.ipv4_addr(&dev)).expect("address");
    assert_eq!(ip, "10.8.0.2");
    drop(a);
    drop(ns);

    let mut b = start_client(&mut lab, &w, "bob", "bob", None, &[]);
    expect_auth_failed(&mut b.proc, Duration::from_secs(20));
    assert!(
        lab.server_log().contains("user disabled"),
        "{}",
        lab.server_log()
    );

    // The same server.conf under stock openvpn: the warren lines are skipped.
    let mut olab = Lab::p256("zero-conf-ovpn", ServerKind::Openvpn);
    let mut oconf = conf.clone();
    oconf.status = Some(olab.dir().join("status.txt"));
    olab.start_server(&oconf);
    let (ns, srv, _) = olab.new_peer_ns();
    let (p, _) = write_profile(&olab, "alice-ovpn", &w.export("alice", &srv, &[]), None);
    let mut a = start_openvpn(&olab, &ns, "alice-ovpn", &p);
    a.wait_for_line(CONNECTED, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\nopenvpn server:\n{}", olab.server_log()));
}

#[test]
fn killed_first_run_never_breaks_the_state() {
    // The server is killed at random moments of its first run (RSA key generation makes it
    // long enough to hit every step); after each kill the state loads, or nothing usable
    // was made yet and the next run completes it.
    let lab = Lab::p256("zero-crash", ServerKind::Warren);
    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    let mut seed = 0x5eed_u64;
    let mut killed = 0;
    let mut spans = Vec::new();
    for i in 0..12 {
        let dev = common::netns::unique_name("tun", 'k');
        let log = lab.dir().join(format!("crash{i}.log"));
        let t0 = Instant::now();
        let mut p = lab.server_ns.spawn_env(
            "warren server",
            &[
                WARREN_BIN,
                "server",
                "--state-dir",
                state.to_str().expect("utf8"),
                "--algo",
                "rsa2048",
                "--dev",
                &dev,
                "--port",
                "1194",
            ],
            &[],
            lab.dir(),
            &log,
        );
        // xorshift: a kill time between 0 and 1.5 s.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = Duration::from_millis(seed % 1500);
        std::thread::sleep(at);
        if p.is_running() {
            p.kill();
            killed += 1;
        }
        spans.push(t0.elapsed());
        if state.join("pki/ca.crt").exists() {
            let out = w.run(&["user", "list", "--json"], None);
            assert!(
                out.success(),
                "the state does not load after kill {i} at {at:?}:\n{}",
                out.stderr
            );
        }
    }
    assert!(killed >= 3, "only {killed} runs were killed");
    // Finally a run to completion works and uses what is there.
    let server = ZeroServer::start(&lab, &state, &[]);
    drop(server);
    w.add_user("zed", &[]);
    w.ok(&["profile", "export", "zed", "--remote", "192.0.2.1"]);
}

/// Issue 10, bad values: a VPN network that overlaps a network the server host is on is
/// refused at startup, naming the interface, before any tun device or port is set up.
#[test]
fn vpn_network_overlapping_the_host_is_refused() {
    let mut lab = Lab::p256("zero-overlap", ServerKind::Warren);
    // The server namespace gets 198.18.1.1/24 on the veth towards this peer.
    let (_peer, server_addr, _) = lab.new_peer_ns();
    let state = lab.dir().join("state");
    let server = ZeroServer::spawn(&lab, &state, &["--network", "198.18.0.0/16"], &[]);
    let mut proc = server.proc;
    let status = poll_until(Duration::from_secs(60), || proc.exited())
        .unwrap_or_else(|| panic!("still running after 60 s:\n{}", proc.log_tail(20)));
    assert!(!status.success(), "the server must refuse to start");
    let out = proc.log();
    assert!(
        out.contains("the VPN network 198.18.0.0/16 overlaps")
            && out.contains(&format!("{server_addr}/24")),
        "{out}"
    );
    assert!(
        !lab.server_ns.udp_port_bound(state_common::PORT),
        "nothing is left listening"
    );
    // A network the host is not on starts.
    let server = ZeroServer::start(&lab, &state, &["--network", "10.77.0.0/24"]);
    server.stop();
}
