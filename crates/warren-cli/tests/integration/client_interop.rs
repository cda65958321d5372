//! Issue 3, "warren client": the protocol matrix and renegotiation.
//!
//! Every case runs twice: `openvpn_server::<case>` against the stock Debian `openvpn` 2.6
//! server and `warren_server::<case>` against `warren server`, both with the same
//! `server.conf`; the client is always `warren client PROFILE.ovpn` in its own namespace.
//! The matrix covers each data cipher, tls-crypt / tls-auth (both key-direction forms) /
//! neither, TLS 1.2 and 1.3, and tls-ekm and the TLS1-PRF (`--no-tls-ekm`) in four
//! connections rather than all 36 combinations, each value at least once and each pair of
//! kinds in some case; every case pings both ways and moves data both ways with SHA-256.
//! Renegotiation runs during a 30 s paced transfer, initiated by the server
//! (`reneg-sec 10` in server.conf) and by the client (`reneg-sec 10` in the profile).
//!
//! Needs root: network namespaces (see `common`).
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;

use std::time::Duration;

use client_common::{UP, connect_client};
use common::conf::TlsWrap;
use common::lab::{Lab, MB, SERVER_TUN_ADDR, ServerKind, Transfer};

/// One point of the matrix.
struct Case {
    name: &'static str,
    cipher: &'static str,
    wrap: TlsWrap,
    tls: &'static str,
    ekm: bool,
}

fn run_case(kind: ServerKind, case: Case) {
    let mut lab = Lab::p256(case.name, kind);
    let mut sc = lab.server_conf();
    sc.wrap = case.wrap.clone();
    sc.data_ciphers = Some(case.cipher.to_owned());
    if case.tls == "1.2" {
        sc.tls_version_max = Some("1.2".into());
    } else {
        sc.tls_version_min = Some("1.3".into());
    }
    lab.start_server(&sc);
    let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
    cc.wrap = case.wrap.clone();
    cc.data_ciphers = Some(case.cipher.to_owned());
    if case.tls == "1.2" {
        cc.tls_version_max = Some("1.2".into());
    }
    let args: Vec<&str> = if case.ekm {
        vec![]
    } else {
        vec!["--no-tls-ekm"]
    };
    let mut client = connect_client(&mut lab, "client1", cc, &args);

    let up = client
        .proc
        .wait_for_line(UP, Duration::from_secs(1))
        .expect("up line");
    let kd = if case.ekm { "tls-ekm" } else { "tls1-prf" };
    assert!(
        up.contains(&format!("cipher {} ({kd})", case.cipher)),
        "{up}"
    );
    assert!(up.contains(client.addr()), "{up}");
    if kind == ServerKind::Openvpn {
        let log = lab.server_log();
        let want = format!("Control Channel: TLSv{}", case.tls);
        assert!(
            log.contains(&want),
            "stock server did not log `{want}`:\n{}",
            common::process::tail(&log, 30)
        );
    }

    lab.check_tunnel(&client.ns, client.addr(), 8 * MB, 4 * MB);

    // SIGTERM: explicit-exit-notify, network restored, exit status 0.
    client.stop_cleanly();
    lab.assert_server_running();
}

/// Renegotiation during a 30 s paced transfer, started by `by` ("server" or "client").
fn run_reneg(kind: ServerKind, by: &str) {
    let mut lab = Lab::p256(&format!("reneg-{by}"), kind);
    let mut sc = lab.server_conf();
    let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
    if by == "server" {
        sc.reneg_sec = Some(10);
    } else {
        cc.reneg_sec = Some(10);
    }
    lab.start_server(&sc);
    let client = connect_client(&mut lab, "client1", cc, &[]);
    // 30 s at 2 MB/s: 60 MB with a SHA-256 check; at least two key changes happen meanwhile.
    let r = lab.transfer(
        &client.ns,
        &lab.server_ns,
        SERVER_TUN_ADDR,
        &Transfer::timed(Duration::from_secs(30), 2 * MB),
    );
    r.assert_intact();
    assert!(
        r.max_gap < Duration::from_secs(5),
        "the stream stalled for {:?} during renegotiation",
        r.max_gap
    );
    let renegs = client.count("renegotiated data channel keys");
    assert!(
        renegs >= 2,
        "expected at least 2 renegotiations in 30 s, client saw {renegs}:\n{}",
        client.proc.log_tail(30)
    );
    let out = client.ns.ping(SERVER_TUN_ADDR, 2, 2);
    assert!(
        out.success(),
        "ping after renegotiation: {}{}",
        out.stdout,
        out.stderr
    );
    lab.assert_server_running();
}

mod cases {
    use super::*;

    pub fn aes256gcm_tls_crypt_tls13_ekm(kind: ServerKind) {
        run_case(
            kind,
            Case {
                name: "m1",
                cipher: "AES-256-GCM",
                wrap: TlsWrap::Crypt,
                tls: "1.3",
                ekm: true,
            },
        );
    }

    pub fn aes128gcm_tls_auth_tls12_prf(kind: ServerKind) {
        let wrap = TlsWrap::Auth {
            inline_direction: false,
            auth: Some("SHA256"),
        };
        run_case(
            kind,
            Case {
                name: "m2",
                cipher: "AES-128-GCM",
                wrap,
                tls: "1.2",
                ekm: false,
            },
        );
    }

    pub fn chacha20_no_wrap_tls12_ekm(kind: ServerKind) {
        run_case(
            kind,
            Case {
                name: "m3",
                cipher: "CHACHA20-POLY1305",
                wrap: TlsWrap::None,
                tls: "1.2",
                ekm: true,
            },
        );
    }

    pub fn aes256gcm_tls_auth_inline_tls13_prf(kind: ServerKind) {
        let wrap = TlsWrap::Auth {
            inline_direction: true,
            auth: None,
        };
        run_case(
            kind,
            Case {
                name: "m4",
                cipher: "AES-256-GCM",
                wrap,
                tls: "1.3",
                ekm: false,
            },
        );
    }

    pub fn chacha20_tls_crypt_tls13_prf(kind: ServerKind) {
        run_case(
            kind,
            Case {
                name: "m5",
                cipher: "CHACHA20-POLY1305",
                wrap: TlsWrap::Crypt,
                tls: "1.3",
                ekm: false,
            },
        );
    }

    pub fn renegotiation_by_server(kind: ServerKind) {
        run_reneg(kind, "server");
    }

    pub fn renegotiation_by_client(kind: ServerKind) {
        run_reneg(kind, "client");
    }
}

against_both!(
    aes256gcm_tls_crypt_tls13_ekm,
    aes128gcm_tls_auth_tls12_prf,
    chacha20_no_wrap_tls12_ekm,
    aes256gcm_tls_auth_inline_tls13_prf,
    chacha20_tls_crypt_tls13_prf,
    renegotiation_by_server,
    renegotiation_by_client,
);
