//! Issue 13, `crl-verify FILE` on a warren server, against stock `openvpn` clients: the CRL
//! is made and updated with `openssl ca -revoke` / `-gencrl`, as the install scripts do with
//! easy-rsa. A CRL of another CA stops the server at startup, naming the line. With two
//! clients connected, rewriting the CRL with one of them revoked ends that client's session
//! within about a second (the server looks at the file every second), its reconnection is
//! refused at the handshake with the serial in the log, and the other client's tunnel stays
//! up. A broken CRL written later is refused and the last good one stays.
//!
//!
//! `crl-verify DIR dir` on a warren server: a stock client whose serial (decimal) names a
//! file in DIR is refused at the handshake, another connects; with the file gone, the first
//! connects too (the directory is looked at in every handshake).
//!
//! Client side: `warren client` with `crl-verify` against the stock `openvpn` server. A CRL
//! of another CA stops the client at startup, naming the profile's line; a CRL listing the
//! server's certificate makes the client refuse the server at every attempt, with the
//! serial in its log, and it never comes up; a CRL listing only another certificate lets
//! it connect and ping.
//!
//! Needs root (network namespaces), `openvpn` and `openssl`.
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::lab::{Lab, SERVER_TUN_ADDR, ServerKind, WARREN_BIN, nobody_group};
use common::netns::ping_ok;
use common::process::{poll_until, run_ok, tail};

/// From the CRL write to the server's log line (checks every second).
const KICK_LIMIT: Duration = Duration::from_secs(2);
const PUSHED_RESET: &str = "Connection reset command was pushed by server";

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A minimal `openssl ca` setup over the lab's CA (`name` is `ca` or `other-ca`).
fn openssl_ca(pki: &Path, name: &str) -> PathBuf {
    let dir = pki.join(format!("{name}-db"));
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("index.txt"), "").expect("index");
    fs::write(dir.join("crlnumber"), "01\n").expect("crlnumber");
    let cnf = dir.join("ca.cnf");
    fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = CA_default\n[CA_default]\ndatabase = {db}/index.txt\n\
             crlnumber = {db}/crlnumber\ncertificate = {pki}/{name}.crt\n\
             private_key = {pki}/{name}.key\ndefault_md = sha256\ndefault_crl_days = 180\n",
            db = s(&dir),
            pki = s(pki),
        ),
    )
    .expect("ca.cnf");
    cnf
}

/// `openssl ca -gencrl`, returns the PEM.
fn gencrl(cnf: &Path, out: &Path) -> String {
    run_ok(&[
        "openssl",
        "ca",
        "-config",
        s(cnf),
        "-gencrl",
        "-out",
        s(out),
    ]);
    fs::read_to_string(out).expect("crl")
}

fn serial_hex(crt: &Path) -> String {
    let out = run_ok(&["openssl", "x509", "-noout", "-serial", "-in", s(crt)]);
    let hex = out
        .trim()
        .strip_prefix("serial=")
        .expect("serial=")
        .to_owned();
    // warren prints the DER magnitude without leading zero bytes, upper case.
    let trimmed = hex.trim_start_matches("00");
    trimmed.to_uppercase()
}

#[test]
fn crl_verify_kicks_revoked_clients_and_refuses_them() {
    let mut lab = Lab::p256("crl", ServerKind::Warren);
    let pki = lab.pki.dir.clone();
    let dir = lab.dir().to_path_buf();
    let crl = dir.join("crl.pem");
    let mut conf = lab.server_conf();
    conf.extra.push(format!("crl-verify {}", s(&crl)));
    let conf_path = dir.join("server.conf");
    conf.write(&conf_path);
    let line = fs::read_to_string(&conf_path)
        .expect("conf")
        .lines()
        .position(|l| l.starts_with("crl-verify "))
        .expect("crl-verify line")
        + 1;

    // A CRL of another CA: refused at startup, naming the line.
    let other = openssl_ca(&pki, "other-ca");
    gencrl(&other, &crl);
    let out = lab.server_ns.exec(
        &[WARREN_BIN, "server", "--config", s(&conf_path)],
        Duration::from_secs(20),
    );
    assert!(!out.success(), "warren accepted a foreign CRL");
    let want = format!("server.conf:{line}: crl-verify");
    assert!(
        out.stderr.contains(&want) && out.stderr.contains("not signed by a CA of the `ca` file"),
        "expected {want:?} and the reason:\n{}",
        out.stderr
    );
    // Not a CRL at all: refused the same way.
    fs::write(&crl, "garbage\n").expect("write");
    let out = lab.server_ns.exec(
        &[WARREN_BIN, "server", "--config", s(&conf_path)],
        Duration::from_secs(20),
    );
    assert!(
        !out.success() && out.stderr.contains(&want) && out.stderr.contains("X509 CRL"),
        "{}",
        out.stderr
    );

    // The CA's own (empty) CRL: both clients get in.
    let ca = openssl_ca(&pki, "ca");
    gencrl(&ca, &crl);
    lab.start_server_file(&conf_path, conf.port);
    let c1 = lab.pki.clients[0].clone();
    let c2 = lab.pki.clients[1].clone();
    let cc1 = lab.client_conf(&c1);
    let mut victim = lab.connect_client("client1", cc1);
    let cc2 = lab.client_conf(&c2);
    let keeper = lab.connect_client("client2", cc2);
    ping_ok(&victim.ns, SERVER_TUN_ADDR, "client1 -> server");
    ping_ok(&keeper.ns, SERVER_TUN_ADDR, "client2 -> server");

    // Revoke client1 the way the scripts do (revoke, gen-crl, copy over crl.pem).
    let serial = serial_hex(&c1.crt);
    run_ok(&["openssl", "ca", "-config", s(&ca), "-revoke", s(&c1.crt)]);
    let fresh = gencrl(&ca, &dir.join("crl.new"));
    fs::write(&crl, &fresh).expect("write crl");
    let t0 = Instant::now();
    let kicked = format!(
        "certificate serial {serial} is revoked (crl-verify {})",
        s(&crl)
    );
    poll_until(Duration::from_secs(10), || {
        lab.server_log().contains(&kicked).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the server did not end client1's session:\n{}",
            tail(&lab.server_log(), 40)
        )
    });
    let latency = t0.elapsed();
    eprintln!("session of the revoked certificate ended {latency:?} after the CRL was written");
    assert!(latency <= KICK_LIMIT, "ended only after {latency:?}");
    let slog = lab.server_log();
    assert!(
        slog.contains("re-read, 1 revoked certificate(s)"),
        "{}",
        tail(&slog, 40)
    );

    // client1 is told to reconnect, and its handshake is refused with the serial named.
    victim
        .proc
        .wait_for_line(PUSHED_RESET, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = format!("certificate rejected: {kicked}");
    poll_until(Duration::from_secs(30), || {
        lab.server_log().contains(&refused).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "client1's reconnection was not refused:\n{}\nclient1:\n{}",
            tail(&lab.server_log(), 40),
            victim.proc.log_tail(30)
        )
    });
    assert_eq!(
        victim.count(common::lab::CONNECTED),
        1,
        "client1 got back in:\n{}",
        victim.proc.log_tail(30)
    );

    // client2 never noticed.
    ping_ok(&keeper.ns, SERVER_TUN_ADDR, "client2 -> server");
    ping_ok(&lab.server_ns, keeper.addr(), "server -> client2");
    assert!(!keeper.log().contains(PUSHED_RESET), "client2 was kicked");

    // A broken CRL is refused with a warning; the last good one stays (client1 still out,
    // client2 still in).
    fs::write(
        &crl,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .expect("write");
    poll_until(Duration::from_secs(5), || {
        lab.server_log()
            .contains("the last good one stays")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no warning about the broken CRL:\n{}",
            tail(&lab.server_log(), 20)
        )
    });
    ping_ok(
        &keeper.ns,
        SERVER_TUN_ADDR,
        "client2 -> server after a broken CRL",
    );
    lab.assert_server_running();
    assert_eq!(victim.count(common::lab::CONNECTED), 1);
}

/// With `user nobody` the server re-reads the CRL as nobody: a readable file works as
/// before; a file nobody cannot read gives one warning and the last good CRL stays in
/// force, until the file is readable again.
#[test]
fn crl_verify_after_the_privilege_drop() {
    use std::os::unix::fs::PermissionsExt;
    let mut lab = Lab::p256("crl-drop", ServerKind::Warren);
    let pki = lab.pki.dir.clone();
    let dir = lab.dir().to_path_buf();
    let crl = dir.join("crl.pem");
    let ca = openssl_ca(&pki, "ca");
    gencrl(&ca, &crl);
    fs::set_permissions(&crl, fs::Permissions::from_mode(0o644)).expect("chmod");
    let group = nobody_group();
    let mut conf = lab.server_conf();
    conf.extra = vec![
        format!("crl-verify {}", s(&crl)),
        "user nobody".into(),
        format!("group {group}"),
    ];
    lab.start_server(&conf);
    assert!(
        lab.server_log().contains("dropped privileges to nobody"),
        "{}",
        tail(&lab.server_log(), 20)
    );
    let c1 = lab.pki.clients[0].clone();
    let c2 = lab.pki.clients[1].clone();
    let cc1 = lab.client_conf(&c1);
    let mut first = lab.connect_client("client1", cc1);
    let cc2 = lab.client_conf(&c2);
    let mut second = lab.connect_client("client2", cc2);

    // Readable by nobody: client1's revocation ends its session.
    run_ok(&["openssl", "ca", "-config", s(&ca), "-revoke", s(&c1.crt)]);
    fs::write(&crl, gencrl(&ca, &dir.join("crl.new"))).expect("write crl");
    let kicked1 = format!("certificate serial {} is revoked", serial_hex(&c1.crt));
    poll_until(KICK_LIMIT + Duration::from_secs(3), || {
        lab.server_log().contains(&kicked1).then_some(())
    })
    .unwrap_or_else(|| panic!("client1 not kicked:\n{}", tail(&lab.server_log(), 30)));
    first
        .proc
        .wait_for_line(PUSHED_RESET, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));

    // Unreadable for nobody: client2's revocation cannot be seen; one warning, client2 stays.
    run_ok(&["openssl", "ca", "-config", s(&ca), "-revoke", s(&c2.crt)]);
    let next = gencrl(&ca, &dir.join("crl.new"));
    fs::set_permissions(&crl, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(&crl, &next).expect("write crl");
    let warning = "cannot read the file";
    poll_until(Duration::from_secs(5), || {
        lab.server_log().contains(warning).then_some(())
    })
    .unwrap_or_else(|| panic!("no warning:\n{}", tail(&lab.server_log(), 30)));
    std::thread::sleep(Duration::from_secs(3));
    let slog = lab.server_log();
    assert_eq!(
        slog.lines().filter(|l| l.contains(warning)).count(),
        1,
        "{}",
        tail(&slog, 30)
    );
    let kicked2 = format!("certificate serial {} is revoked", serial_hex(&c2.crt));
    assert!(!slog.contains(&kicked2), "{}", tail(&slog, 30));
    ping_ok(
        &second.ns,
        SERVER_TUN_ADDR,
        "client2 -> server with an unreadable CRL",
    );
    lab.assert_server_running();

    // Readable again: the CRL is read and client2's session ends.
    fs::set_permissions(&crl, fs::Permissions::from_mode(0o644)).expect("chmod");
    poll_until(KICK_LIMIT + Duration::from_secs(3), || {
        lab.server_log().contains(&kicked2).then_some(())
    })
    .unwrap_or_else(|| panic!("client2 not kicked:\n{}", tail(&lab.server_log(), 30)));
    second
        .proc
        .wait_for_line(PUSHED_RESET, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Client side, against the stock `openvpn` server (see the module docs).
#[test]
fn warren_client_crl_verify_refuses_a_revoked_server() {
    let mut lab = Lab::p256("crl-client", ServerKind::Openvpn);
    let pki = lab.pki.dir.clone();
    let dir = lab.dir().to_path_buf();
    let server_crt = lab.pki.server.crt.clone();
    let c1 = lab.pki.clients[0].clone();
    let c2 = lab.pki.clients[1].clone();

    // CRLs made the way the scripts make them: one listing client2 only, one listing the
    // server as well, one of another CA.
    let ca = openssl_ca(&pki, "ca");
    run_ok(&["openssl", "ca", "-config", s(&ca), "-revoke", s(&c2.crt)]);
    let crl_other = dir.join("crl-other.pem");
    gencrl(&ca, &crl_other);
    run_ok(&[
        "openssl",
        "ca",
        "-config",
        s(&ca),
        "-revoke",
        s(&server_crt),
    ]);
    let crl_server = dir.join("crl-server.pem");
    gencrl(&ca, &crl_server);
    let crl_foreign = dir.join("crl-foreign.pem");
    gencrl(&openssl_ca(&pki, "other-ca"), &crl_foreign);

    // A CRL of another CA: refused at startup, naming the profile's line.
    let mut cc = lab.client_conf(&c1);
    cc.remote.0 = "198.18.255.1".into();
    cc.extra.push(format!("crl-verify {}", s(&crl_foreign)));
    let profile = dir.join("foreign.ovpn");
    cc.write(&profile);
    let line = fs::read_to_string(&profile)
        .expect("profile")
        .lines()
        .position(|l| l.starts_with("crl-verify "))
        .expect("crl-verify line")
        + 1;
    let out = lab.server_ns.exec(
        &[WARREN_BIN, "client", s(&profile)],
        Duration::from_secs(20),
    );
    let want = format!("foreign.ovpn:{line}: crl-verify");
    assert!(
        !out.success()
            && out.stderr.contains(&want)
            && out.stderr.contains("not signed by a CA of the `ca` file"),
        "expected {want:?} and the reason:\n{}",
        out.stderr
    );

    lab.start_server(&lab.server_conf());

    // The server's certificate is revoked: refused at every attempt, never up.
    let mut cc = lab.client_conf(&c1);
    cc.extra.push(format!("crl-verify {}", s(&crl_server)));
    let mut refused = client_common::start_client(&mut lab, "revoked", cc, &[]);
    let want = format!(
        "certificate rejected: certificate serial {} is revoked (crl-verify {})",
        serial_hex(&server_crt),
        s(&crl_server)
    );
    refused
        .proc
        .wait_for_line(&want, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", tail(&lab.server_log(), 30)));
    // Long enough for a retry after the refusal.
    std::thread::sleep(Duration::from_secs(8));
    let log = refused.log();
    assert!(
        !log.contains(client_common::UP),
        "came up with a revoked server:\n{}",
        tail(&log, 30)
    );
    assert!(
        refused.ns.ipv4_addr(&refused.dev).is_none(),
        "the tun device has an address"
    );
    refused.stop(Duration::from_secs(5));

    // A CRL that lists another certificate only: connects and pings.
    let mut cc = lab.client_conf(&c1);
    cc.extra.push(format!("crl-verify {}", s(&crl_other)));
    let client = client_common::connect_client(&mut lab, "fine", cc, &[]);
    ping_ok(&client.ns, SERVER_TUN_ADDR, "client -> server");
    assert!(
        client
            .log()
            .contains("1 revoked certificate(s); the server's certificate is checked"),
        "{}",
        tail(&client.log(), 30)
    );
}

/// `crl-verify DIR dir` on a warren server, against stock clients (see the module docs).
#[test]
fn crl_verify_dir_refuses_listed_serials() {
    let mut lab = Lab::p256("crl-dir", ServerKind::Warren);
    let revoked_dir = lab.dir().join("revoked");
    fs::create_dir(&revoked_dir).expect("mkdir");
    let c1 = lab.pki.clients[0].clone();
    let c2 = lab.pki.clients[1].clone();
    let hex = serial_hex(&c1.crt);
    let decimal = u128::from_str_radix(&hex, 16)
        .expect("a serial of at most 16 bytes")
        .to_string();
    let marker = revoked_dir.join(&decimal);
    fs::write(&marker, "").expect("serial file");

    let mut conf = lab.server_conf();
    conf.extra
        .push(format!("crl-verify {} dir", s(&revoked_dir)));
    lab.start_server(&conf);

    let cc1 = lab.client_conf(&c1);
    let refused = lab.start_client("client1", cc1);
    let want = format!(
        "certificate rejected: certificate serial {hex} is revoked (crl-verify {} dir)",
        s(&revoked_dir)
    );
    poll_until(Duration::from_secs(30), || {
        lab.server_log().contains(&want).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "client1 was not refused:\n{}\nclient1:\n{}",
            tail(&lab.server_log(), 30),
            refused.proc.log_tail(30)
        )
    });
    let cc2 = lab.client_conf(&c2);
    let other = lab.connect_client("client2", cc2);
    ping_ok(&other.ns, SERVER_TUN_ADDR, "client2 -> server");
    assert_eq!(refused.count(common::lab::CONNECTED), 0, "client1 got in");
    drop(refused);

    // The file gone: client1's next handshake succeeds.
    fs::remove_file(&marker).expect("rm");
    let cc1 = lab.client_conf(&c1);
    let back = lab.connect_client("client1b", cc1);
    ping_ok(&back.ns, SERVER_TUN_ADDR, "client1 -> server");
    lab.assert_server_running();
}
