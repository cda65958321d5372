//! Issue 13, tls-crypt-v2 in both roles against the stock Debian `openvpn` 2.6.
//!
//! * Server: stock `openvpn` clients with tls-crypt-v2 keys (one made by `openvpn --genkey`,
//!   one by `warren pki genkey` from the same stock server key) and a tls-crypt client, all
//!   at once, against `warren server --config` with `tls-crypt ta.key` and `tls-crypt-v2
//!   srv.key` (and, to validate the test, against the stock server with the same file).
//! * Client: `warren client` with `tls-crypt-v2` against the stock server with keys made by
//!   `warren pki genkey` (stock openvpn loads warren's server key and unwraps warren's client
//!   key), and against `warren server` with keys made by `openvpn --genkey` (warren loads
//!   OpenVPN's client key).
//! * A client key wrapped by another server key gets no tunnel; the server keeps running.
//! * Over TCP: `warren client` to the stock server, the stock client to warren server.
//!
//! Needs root: network namespaces (see `common`).
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::conf::TlsWrap;
use common::lab::{Lab, MB, SERVER_TUN_ADDR, ServerKind, Transfer, WARREN_BIN};
use common::netns::ping_ok;
use common::process::run_ok;

fn p(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Who makes the key files.
#[derive(Clone, Copy, Debug)]
enum Maker {
    Openvpn,
    Warren,
}

/// A tls-crypt-v2 server key at `dir/name` (key generation only: no traffic).
fn server_key(maker: Maker, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    match maker {
        Maker::Openvpn => run_ok(&["openvpn", "--genkey", "tls-crypt-v2-server", p(&path)]),
        Maker::Warren => run_ok(&[WARREN_BIN, "pki", "genkey", "tls-crypt-v2-server", p(&path)]),
    };
    path
}

/// A client key at `dir/name` wrapped by `server`, with USER metadata `meta` (base64) or
/// OpenVPN's default timestamp.
fn client_key(maker: Maker, server: &Path, dir: &Path, name: &str, meta: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    let mut argv: Vec<&str> = match maker {
        Maker::Openvpn => vec![
            "openvpn",
            "--tls-crypt-v2",
            p(server),
            "--genkey",
            "tls-crypt-v2-client",
            p(&path),
        ],
        Maker::Warren => vec![
            WARREN_BIN,
            "pki",
            "genkey",
            "tls-crypt-v2-client",
            p(&path),
            "--server-key",
            p(server),
        ],
    };
    if let Some(m) = meta {
        if matches!(maker, Maker::Warren) {
            argv.push("--metadata");
        }
        argv.push(m);
    }
    run_ok(&argv);
    path
}

/// Stock clients: two with tls-crypt-v2 (keys by openvpn and by warren, both wrapped by a
/// server key from `openvpn --genkey`) and one with tls-crypt, connected at once to a server
/// that has both `tls-crypt` and `tls-crypt-v2`.
fn stock_clients(kind: ServerKind) {
    let mut lab = Lab::p256("tcv2-stock-clients", kind);
    let dir = lab.dir().to_path_buf();
    let srv = server_key(Maker::Openvpn, &dir, "v2-server.key");
    let by_openvpn = client_key(Maker::Openvpn, &srv, &dir, "v2-client1.key", None);
    // "serial=2" in base64.
    let by_warren = client_key(
        Maker::Warren,
        &srv,
        &dir,
        "v2-client2.key",
        Some("c2VyaWFsPTI="),
    );

    let mut sc = lab.server_conf();
    sc.wrap = TlsWrap::Crypt;
    sc.extra.push(format!("tls-crypt-v2 {}", p(&srv)));
    lab.start_server(&sc);

    let clients = lab.pki.clients.clone();
    let v2_conf = |i: usize, key: &Path| {
        let mut cc = lab.client_conf(&clients[i]);
        cc.wrap = TlsWrap::None;
        cc.extra.push(format!("tls-crypt-v2 {}", p(key)));
        cc
    };
    let c1 = v2_conf(0, &by_openvpn);
    let c2 = v2_conf(1, &by_warren);
    let c3 = lab.client_conf(&clients[2]);
    let a = lab.connect_client("client1", c1);
    let b = lab.connect_client("client2", c2);
    let c = lab.connect_client("client3", c3);
    for (client, what) in [
        (&a, "v2 (openvpn key)"),
        (&b, "v2 (warren key)"),
        (&c, "tls-crypt"),
    ] {
        ping_ok(
            &client.ns,
            SERVER_TUN_ADDR,
            &format!("{what} client -> server"),
        );
        ping_ok(
            &lab.server_ns,
            client.addr(),
            &format!("server -> {what} client"),
        );
    }
    lab.transfer(
        &a.ns,
        &lab.server_ns,
        SERVER_TUN_ADDR,
        &Transfer::bytes(2 * 1024 * 1024),
    )
    .assert_intact();
    let log = lab.server_log();
    let saw = match kind {
        // The stock server saw tls-crypt-v2 for the v2 clients (validates the test).
        ServerKind::Openvpn => vec!["Control Channel: using tls-crypt-v2 key"],
        // warren unwrapped both keys and their metadata (logged at verb 4).
        ServerKind::Warren => vec![
            "tls-crypt-v2 (and tls-crypt for other clients)",
            "tls-crypt-v2 client key: created at Unix time",
            "tls-crypt-v2 client key: user data \"serial=2\"",
        ],
    };
    for line in saw {
        assert!(
            log.contains(line),
            "`{line}` not in the server log:\n{}",
            common::process::tail(&log, 30)
        );
    }
    lab.assert_server_running();
}

/// `warren client` with tls-crypt-v2. Against the stock server the keys are warren's; against
/// warren server they are OpenVPN's.
fn warren_client(kind: ServerKind) {
    let mut lab = Lab::p256("tcv2-warren-client", kind);
    let dir = lab.dir().to_path_buf();
    let maker = match kind {
        ServerKind::Openvpn => Maker::Warren,
        ServerKind::Warren => Maker::Openvpn,
    };
    let srv = server_key(maker, &dir, "v2-server.key");
    let key = client_key(maker, &srv, &dir, "v2-client.key", Some("dXNlcj1hbGljZQ=="));

    let mut sc = lab.server_conf();
    sc.wrap = TlsWrap::None;
    sc.extra.push(format!("tls-crypt-v2 {}", p(&srv)));
    lab.start_server(&sc);
    let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
    cc.wrap = TlsWrap::None;
    cc.extra.push(format!("tls-crypt-v2 {}", p(&key)));
    let mut client = client_common::connect_client(&mut lab, "client1", cc, &[]);
    lab.check_tunnel(&client.ns, client.addr(), 0, MB);
    if kind == ServerKind::Openvpn {
        let log = lab.server_log();
        assert!(
            log.contains("Control Channel: using tls-crypt-v2 key"),
            "{}",
            common::process::tail(&log, 30)
        );
    }
    client.stop_cleanly();
    lab.assert_server_running();
}

/// A stock client whose key another server key wrapped: no tunnel, the server lives on, and
/// a good client still connects.
fn foreign_key(kind: ServerKind) {
    let mut lab = Lab::p256("tcv2-foreign-key", kind);
    let dir = lab.dir().to_path_buf();
    let srv = server_key(Maker::Openvpn, &dir, "v2-server.key");
    let other = server_key(Maker::Openvpn, &dir, "v2-other-server.key");
    let good = client_key(Maker::Openvpn, &srv, &dir, "v2-good.key", None);
    let bad = client_key(Maker::Openvpn, &other, &dir, "v2-bad.key", None);
    let mut sc = lab.server_conf();
    sc.wrap = TlsWrap::None;
    sc.extra.push(format!("tls-crypt-v2 {}", p(&srv)));
    lab.start_server(&sc);
    let clients = lab.pki.clients.clone();
    let conf = |i: usize, key: &Path| {
        let mut cc = lab.client_conf(&clients[i]);
        cc.wrap = TlsWrap::None;
        cc.extra.push(format!("tls-crypt-v2 {}", p(key)));
        cc
    };
    let bad_conf = conf(1, &bad);
    let good_conf = conf(0, &good);
    let mut intruder = lab.start_client("intruder", bad_conf);
    assert!(
        intruder.wait_connected(Duration::from_secs(8)).is_err(),
        "a client key of another server got a tunnel"
    );
    assert_eq!(
        intruder.count("Initial packet from"),
        0,
        "the server answered"
    );
    lab.assert_server_running();
    let ok = lab.connect_client("client1", good_conf);
    ping_ok(&ok.ns, SERVER_TUN_ADDR, "client -> server");
}

/// Over TCP (no cookie: the V3 reset creates the session, no early negotiation): `warren
/// client` to the stock server, and the stock client to warren server.
fn over_tcp(kind: ServerKind) {
    let mut lab = Lab::p256("tcv2-tcp", kind);
    let dir = lab.dir().to_path_buf();
    let srv = server_key(Maker::Openvpn, &dir, "v2-server.key");
    let key = client_key(Maker::Openvpn, &srv, &dir, "v2-client.key", None);
    let mut sc = lab.server_conf();
    sc.wrap = TlsWrap::None;
    sc.extra.push("proto tcp-server".into());
    sc.extra.push(format!("tls-crypt-v2 {}", p(&srv)));
    lab.start_server(&sc);
    let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
    cc.wrap = TlsWrap::None;
    cc.extra.push("proto tcp-client".into());
    cc.extra.push(format!("tls-crypt-v2 {}", p(&key)));
    match kind {
        ServerKind::Openvpn => {
            let client = client_common::connect_client(&mut lab, "client1", cc, &[]);
            lab.check_tunnel(&client.ns, client.addr(), 0, 0);
        }
        ServerKind::Warren => {
            let client = lab.connect_client("client1", cc);
            lab.check_tunnel(&client.ns, client.addr(), 0, 0);
        }
    }
    lab.assert_server_running();
}

/// `warren pki genkey` checks (no network): OpenVPN's file formats, never over an existing
/// file, a client key needs the server key, metadata must be base64; OpenVPN's own syntax
/// (`--tls-crypt-v2 FILE`, metadata as a second argument) works too.
#[test]
fn genkey_formats_and_refusals() {
    let dir = common::lab::TestDir::new("tcv2-genkey");
    let d = dir.path();
    let srv = server_key(Maker::Warren, d, "srv.key");
    let text = std::fs::read_to_string(&srv).expect("server key");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(lines[0], "-----BEGIN OpenVPN tls-crypt-v2 server key-----");
    assert_eq!(lines[4], "-----END OpenVPN tls-crypt-v2 server key-----");
    assert_eq!(lines[1].len(), 64);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&srv).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // A client key as OpenVPN's syntax asks for it: 555 bytes of base64 in 14 lines.
    let cli = d.join("cli.key");
    run_ok(&[
        WARREN_BIN,
        "pki",
        "genkey",
        "tls-crypt-v2-client",
        p(&cli),
        "--tls-crypt-v2",
        p(&srv),
    ]);
    let text = std::fs::read_to_string(&cli).expect("client key");
    assert_eq!(text.lines().count(), 14, "{text}");
    // Stock openvpn loads warren's server key to make a client key of its own.
    client_key(Maker::Openvpn, &srv, d, "by-openvpn.key", None);
    let run = |args: &[&str]| {
        let mut argv = vec![WARREN_BIN, "pki", "genkey"];
        argv.extend_from_slice(args);
        common::process::run_bounded(
            std::process::Command::new(argv[0]).args(&argv[1..]),
            Duration::from_secs(20),
        )
    };
    let out = run(&["tls-crypt-v2-server", p(&srv)]);
    assert!(
        !out.success() && out.stderr.contains("exists"),
        "{}",
        out.stderr
    );
    let other = d.join("x.key");
    let out = run(&["tls-crypt-v2-client", p(&other)]);
    assert!(
        !out.success() && out.stderr.contains("--server-key"),
        "{}",
        out.stderr
    );
    let out = run(&["tls-crypt-v2-client", p(&other), "--server-key", p(&cli)]);
    assert!(
        !out.success() && out.stderr.contains("not a tls-crypt-v2 server key"),
        "{}",
        out.stderr
    );
    let out = run(&[
        "tls-crypt-v2-client",
        p(&other),
        "--server-key",
        p(&srv),
        "--metadata",
        "%%%",
    ]);
    assert!(
        !out.success() && out.stderr.contains("base64"),
        "{}",
        out.stderr
    );
    assert!(!other.exists());
    // Printed without a file, as `openvpn --genkey` does.
    let out = run(&["tls-crypt"]);
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stdout.contains("-----BEGIN OpenVPN Static key V1-----"));
}

mod openvpn_server {
    use super::*;

    #[test]
    fn stock_clients_with_tls_crypt_v2_and_tls_crypt() {
        stock_clients(ServerKind::Openvpn);
    }

    #[test]
    fn warren_client_with_warren_keys() {
        warren_client(ServerKind::Openvpn);
    }

    #[test]
    fn client_key_of_another_server_is_dropped() {
        foreign_key(ServerKind::Openvpn);
    }

    #[test]
    fn warren_client_over_tcp() {
        over_tcp(ServerKind::Openvpn);
    }
}

mod warren_server {
    use super::*;

    #[test]
    fn stock_clients_with_tls_crypt_v2_and_tls_crypt() {
        stock_clients(ServerKind::Warren);
    }

    #[test]
    fn warren_client_with_openvpn_keys() {
        warren_client(ServerKind::Warren);
    }

    #[test]
    fn client_key_of_another_server_is_dropped() {
        foreign_key(ServerKind::Warren);
    }

    #[test]
    fn stock_client_over_tcp() {
        over_tcp(ServerKind::Warren);
    }
}
