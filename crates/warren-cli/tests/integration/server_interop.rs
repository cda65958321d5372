//! Issue 2, "warren server: stock OpenVPN 2.6 clients connect and carry traffic".
//!
//! Every case runs twice: `openvpn_server::<case>` against the stock `openvpn` server
//! (validates the test and proves the `server.conf` syntax is shared) and
//! `warren_server::<case>` against `warren server --config server.conf` with the very same
//! file. The clients are always the stock Debian `openvpn` 2.6 client.
//!
//! Needs root: each test builds network namespaces (see `common`).

// The harness is a driver: it reads the clock.
#![allow(clippy::disallowed_methods)]

use crate::common;

use std::fs;
use std::time::Duration;

use common::conf::TlsWrap;
use common::lab::{
    CONNECTED, Client, Lab, MB, SERVER_PORT, SERVER_TUN_ADDR, ServerKind, Transfer, push_reply,
};
use common::netns::ping_ok;
use common::pki::{KeyFormat, KeyType};
use common::process::poll_until;

/// A plain (no tls-auth/tls-crypt) `P_CONTROL_HARD_RESET_CLIENT_V2`: opcode 7, key id 0,
/// session id, empty ACK array, message id 0 (openvpn-protocol.md §1).
const PLAIN_HARD_RESET: [u8; 14] = [
    0x38, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x00, 0x00, 0x00, 0x00, 0x00,
];

fn log_has(client: &Client, pat: &str) -> bool {
    client.log().lines().any(|l| l.contains(pat))
}

mod cases {
    use super::*;

    /// Ping both ways, 50 MiB up and 16 MiB down with SHA-256, iperf3, status file.
    pub fn ping_transfer_and_status(kind: ServerKind) {
        let mut lab = Lab::new("basic", kind);
        let sc = lab.server_conf();
        lab.start_server(&sc);
        let cc = lab.client_conf(&lab.pki.clients[0].clone());
        let client = lab.connect_client("client1", cc);
        lab.check_tunnel(&client.ns, client.addr(), 50 * MB, 0);
        // Download direction.
        let r = lab.transfer(
            &lab.server_ns,
            &client.ns,
            client.addr(),
            &Transfer::bytes(16 * MB),
        );
        r.assert_intact();
        // Throughput (printed; only a sanity floor is asserted).
        let mbit = lab.iperf(&client.ns, &lab.server_ns, SERVER_TUN_ADDR, 3, 1);
        let mbit = mbit.unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "{} server: iperf3 client->server {mbit:.0} Mbit/s",
            kind.label()
        );
        assert!(mbit > 1.0, "throughput {mbit} Mbit/s");
        // The status file lists the connected client (CN, real address, tunnel address).
        let status = sc.status.clone().expect("status configured");
        let want = [
            client.name.clone(),
            client.client_underlay.clone(),
            client.addr().to_string(),
        ];
        let found = poll_until(Duration::from_secs(5), || {
            let text = fs::read_to_string(&status).ok()?;
            want.iter().all(|w| text.contains(w.as_str())).then_some(())
        });
        assert!(
            found.is_some(),
            "status file {} does not list {want:?}:\n{}",
            status.display(),
            fs::read_to_string(&status).unwrap_or_else(|e| e.to_string())
        );
        lab.assert_server_running();
    }

    /// Three clients at once get distinct addresses; with client-to-client they reach each
    /// other although the server namespace does not forward (ip_forward=0).
    pub fn three_clients_client_to_client(kind: ServerKind) {
        let mut lab = Lab::new("c2c-on", kind);
        let mut sc = lab.server_conf();
        sc.client_to_client = true;
        lab.start_server(&sc);
        let certs = lab.pki.clients.clone();
        let mut clients = Vec::new();
        for (i, cert) in certs.iter().enumerate() {
            let cc = lab.client_conf(cert);
            clients.push(lab.start_client(&format!("client{}", i + 1), cc));
        }
        for c in &mut clients {
            if let Err(e) = c.wait_connected(common::lab::CONNECT_TIMEOUT) {
                panic!("{e}\nserver log:\n{}", lab.server().log_tail(40));
            }
        }
        let mut addrs: Vec<&str> = clients.iter().map(|c| c.addr()).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 3, "addresses are not distinct: {addrs:?}");
        assert!(!addrs.contains(&SERVER_TUN_ADDR));
        for c in &clients {
            ping_ok(&c.ns, SERVER_TUN_ADDR, &format!("{} -> server", c.name));
        }
        ping_ok(&clients[0].ns, clients[1].addr(), "client1 -> client2");
        ping_ok(&clients[2].ns, clients[0].addr(), "client3 -> client1");
        let r = lab.transfer(
            &clients[0].ns,
            &clients[1].ns,
            clients[1].addr(),
            &Transfer::bytes(8 * MB),
        );
        r.assert_intact();
        lab.assert_server_running();
    }

    /// Without client-to-client, client packets for another client go to the server's tun,
    /// where the kernel (ip_forward=0) drops them.
    pub fn client_to_client_disabled(kind: ServerKind) {
        let mut lab = Lab::new("c2c-off", kind);
        let sc = lab.server_conf();
        lab.start_server(&sc);
        let c1cert = lab.pki.clients[0].clone();
        let c2cert = lab.pki.clients[1].clone();
        let cc = lab.client_conf(&c1cert);
        let c1 = lab.connect_client("client1", cc);
        let cc = lab.client_conf(&c2cert);
        let c2 = lab.connect_client("client2", cc);
        assert_ne!(c1.addr(), c2.addr());
        ping_ok(&c1.ns, SERVER_TUN_ADDR, "client1 -> server");
        ping_ok(&c2.ns, SERVER_TUN_ADDR, "client2 -> server");
        let out = c1.ns.ping(c2.addr(), 3, 1);
        assert!(
            !out.success(),
            "client1 reached client2 without client-to-client:\n{}",
            out.stdout
        );
        lab.assert_server_running();
    }

    /// One data cipher on both sides; the client log names the negotiated cipher.
    pub fn data_cipher(kind: ServerKind, cipher: &str) {
        let mut lab = Lab::new(&format!("cipher-{}", cipher.to_lowercase()), kind);
        let mut sc = lab.server_conf();
        sc.data_ciphers = Some(cipher.to_string());
        lab.start_server(&sc);
        let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
        cc.data_ciphers = Some(cipher.to_string());
        let client = lab.connect_client("client1", cc);
        let want = format!("Data Channel: cipher '{cipher}'");
        assert!(log_has(&client, &want), "client log lacks {want:?}");
        lab.check_tunnel(&client.ns, client.addr(), 8 * MB, 0);
    }

    /// A wrapping mode on both sides. Also checks that an unwrapped reset gets a reply only
    /// when the server uses no wrapping.
    pub fn tls_wrap(kind: ServerKind, wrap: TlsWrap, tag: &str) {
        let mut lab = Lab::new(tag, kind);
        let mut sc = lab.server_conf();
        sc.wrap = wrap.clone();
        lab.start_server(&sc);
        let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
        cc.wrap = wrap.clone();
        let client = lab.connect_client("client1", cc);
        lab.check_tunnel(&client.ns, client.addr(), 8 * MB, 0);
        let (probe_ns, srv, _) = lab.new_peer_ns();
        let r = lab.udp_probe(
            &probe_ns,
            &srv,
            SERVER_PORT,
            &PLAIN_HARD_RESET,
            2,
            Duration::from_secs(3),
        );
        if wrap == TlsWrap::None {
            assert!(r.replies > 0, "no reply to a plain reset: {r:?}");
            // P_CONTROL_HARD_RESET_SERVER_V2, key id 0.
            assert!(r.first_reply_hex.starts_with("40"), "{r:?}");
        } else {
            assert_eq!(r.replies, 0, "unauthenticated reset got a reply: {r:?}");
        }
        lab.assert_server_running();
    }

    /// `tls-version-max` on the client; the client log names the TLS version used.
    pub fn tls_version(kind: ServerKind, max: &str, expect: &str) {
        let mut lab = Lab::new(&format!("tls{}", max.replace('.', "")), kind);
        let sc = lab.server_conf();
        lab.start_server(&sc);
        let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
        cc.tls_version_max = Some(max.to_string());
        let client = lab.connect_client("client1", cc);
        let want = format!("Control Channel: {expect}");
        assert!(log_has(&client, &want), "client log lacks {want:?}");
        lab.check_tunnel(&client.ns, client.addr(), 8 * MB, 0);
    }

    /// Default key derivation: TLS-EKM is pushed.
    pub fn key_derivation_ekm(kind: ServerKind) {
        let mut lab = Lab::new("ekm", kind);
        let sc = lab.server_conf();
        lab.start_server(&sc);
        let cc = lab.client_conf(&lab.pki.clients[0].clone());
        let client = lab.connect_client("client1", cc);
        let push = push_reply(&client.log());
        // 2.6 clients get `protocol-flags ... tls-ekm ...`; older ones `key-derivation tls-ekm`.
        assert!(push.contains("tls-ekm"), "PUSH_REPLY: {push}");
        lab.check_tunnel(&client.ns, client.addr(), 8 * MB, 0);
    }

    /// `warren-key-derivation prf` forces the TLS1-PRF derivation on warren; openvpn ignores
    /// the directive (ignore-unknown-option) and runs normally.
    pub fn key_derivation_prf_forced(kind: ServerKind) {
        let mut lab = Lab::new("prf", kind);
        let mut sc = lab.server_conf();
        sc.extra
            .push("ignore-unknown-option warren-key-derivation".into());
        sc.extra.push("warren-key-derivation prf".into());
        lab.start_server(&sc);
        let cc = lab.client_conf(&lab.pki.clients[0].clone());
        let client = lab.connect_client("client1", cc);
        let push = push_reply(&client.log());
        assert!(push.contains("PUSH_REPLY"), "no PUSH_REPLY in client log");
        if kind == ServerKind::Warren {
            assert!(
                !push.contains("tls-ekm"),
                "warren pushed tls-ekm despite `warren-key-derivation prf`: {push}"
            );
        }
        lab.check_tunnel(&client.ns, client.addr(), 8 * MB, 0);
    }

    /// `reneg-sec 10` on the client or the server during a 30 s paced transfer: at least two
    /// renegotiations, no stall, data intact.
    pub fn renegotiation(kind: ServerKind, on_server: bool) {
        let side = if on_server { "server" } else { "client" };
        let mut lab = Lab::new(&format!("reneg-{side}"), kind);
        let mut sc = lab.server_conf();
        if on_server {
            sc.reneg_sec = Some(10);
        }
        lab.start_server(&sc);
        let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
        if !on_server {
            cc.reneg_sec = Some(10);
        }
        let client = lab.connect_client("client1", cc);
        ping_ok(&client.ns, SERVER_TUN_ADDR, "client -> server");
        let r = lab.transfer(
            &client.ns,
            &lab.server_ns,
            SERVER_TUN_ADDR,
            &Transfer::timed(Duration::from_secs(30), 1024 * 1024),
        );
        r.assert_intact();
        assert!(
            r.max_gap < Duration::from_secs(5),
            "transfer stalled for {:?}",
            r.max_gap
        );
        let handshakes = client.count("Control Channel: TLS");
        assert!(
            handshakes >= 3,
            "expected >= 2 renegotiations in 30 s, the client saw {handshakes} handshakes"
        );
        ping_ok(&client.ns, SERVER_TUN_ADDR, "client -> server after rekeys");
        lab.assert_server_running();
    }

    /// A client certificate from another CA is refused; the server keeps serving others.
    pub fn foreign_ca_client_refused(kind: ServerKind) {
        let mut lab = Lab::new("foreign-ca", kind);
        let sc = lab.server_conf();
        lab.start_server(&sc);
        let good = lab.pki.clients[0].clone();
        let cc = lab.client_conf(&good);
        let client1 = lab.connect_client("client1", cc);
        let bad_cert = lab.pki.other_client.clone();
        let mut cc = lab.client_conf(&bad_cert);
        // The stock server's "unknown CA" alert is not delivered reliably (it drops the
        // session at once), so the client may only notice at the end of its hand-window.
        cc.extra.push("hand-window 10".into());
        let mut bad = lab.start_client("foreign", cc);
        let r = bad.proc.wait_for_any(
            &["TLS Error", "TLS_ERROR", "AUTH_FAILED", CONNECTED],
            Duration::from_secs(25),
        );
        match r {
            Ok((i, line)) => assert!(i < 3, "foreign client connected: {line}"),
            Err(e) => panic!("foreign client saw no TLS error: {e}"),
        }
        assert!(!log_has(&bad, CONNECTED), "foreign client connected");
        drop(bad);
        ping_ok(
            &client1.ns,
            SERVER_TUN_ADDR,
            "client1 -> server after refusal",
        );
        let c2 = lab.pki.clients[1].clone();
        let cc = lab.client_conf(&c2);
        let client2 = lab.connect_client("client2", cc);
        lab.check_tunnel(&client2.ns, client2.addr(), 4 * MB, 0);
        lab.assert_server_running();
    }

    /// Without the tls-crypt key a client gets no reply at all: the stock client never logs
    /// the server's first packet, and a raw unwrapped reset gets no datagram back.
    pub fn client_without_tls_crypt_key(kind: ServerKind) {
        let mut lab = Lab::new("no-key", kind);
        let sc = lab.server_conf();
        lab.start_server(&sc);
        let cc = lab.client_conf(&lab.pki.clients[0].clone());
        let client1 = lab.connect_client("client1", cc);
        // The good client logged the server's first packet: the check below is meaningful.
        assert!(log_has(&client1, "Initial packet from"));
        let mut cc = lab.client_conf(&lab.pki.clients[1].clone());
        cc.wrap = TlsWrap::None;
        let mut nokey = lab.start_client("nokey", cc);
        let (probe_ns, srv, _) = lab.new_peer_ns();
        let r = lab.udp_probe(
            &probe_ns,
            &srv,
            SERVER_PORT,
            &PLAIN_HARD_RESET,
            3,
            Duration::from_secs(4),
        );
        assert_eq!(r.replies, 0, "unauthenticated reset got a reply: {r:?}");
        let seen = nokey
            .proc
            .wait_for_any(&["Initial packet from", CONNECTED], Duration::from_secs(4));
        assert!(
            seen.is_err(),
            "client without the key got a reply: {seen:?}"
        );
        assert!(nokey.proc.is_running(), "stock client gave up unexpectedly");
        drop(nokey);
        ping_ok(&client1.ns, SERVER_TUN_ADDR, "client1 -> server");
        lab.assert_server_running();
    }

    /// Server and client keys of one algorithm and PEM format.
    pub fn key_type(kind: ServerKind, key_type: KeyType, format: KeyFormat, tag: &str) {
        let mut lab = Lab::with_pki(tag, kind, key_type, format);
        let sc = lab.server_conf();
        lab.start_server(&sc);
        let cc = lab.client_conf(&lab.pki.clients[0].clone());
        let client = lab.connect_client("client1", cc);
        lab.check_tunnel(&client.ns, client.addr(), 4 * MB, 0);
    }
}

/// One `#[test]` per case and server kind: `openvpn_server::<case>`, `warren_server::<case>`.
macro_rules! both_kinds {
    ($($name:ident => |$k:ident| $body:expr;)*) => {
        mod openvpn_server {
            #[allow(unused_imports)]
            use super::*;
            $( #[test] fn $name() { let $k = ServerKind::Openvpn; $body } )*
        }
        mod warren_server {
            #[allow(unused_imports)]
            use super::*;
            $( #[test] fn $name() { let $k = ServerKind::Warren; $body } )*
        }
    };
}

both_kinds! {
    ping_both_ways_50mb_sha256_iperf_status_file => |k| cases::ping_transfer_and_status(k);
    three_clients_distinct_addresses_client_to_client => |k| cases::three_clients_client_to_client(k);
    client_to_client_disabled_is_not_relayed => |k| cases::client_to_client_disabled(k);
    cipher_aes_256_gcm => |k| cases::data_cipher(k, "AES-256-GCM");
    cipher_aes_128_gcm => |k| cases::data_cipher(k, "AES-128-GCM");
    cipher_chacha20_poly1305 => |k| cases::data_cipher(k, "CHACHA20-POLY1305");
    wrap_tls_crypt => |k| cases::tls_wrap(k, TlsWrap::Crypt, "tls-crypt");
    wrap_tls_auth_key_direction => |k| cases::tls_wrap(
        k, TlsWrap::Auth { inline_direction: false, auth: None }, "tls-auth");
    wrap_tls_auth_sha256 => |k| cases::tls_wrap(
        k, TlsWrap::Auth { inline_direction: true, auth: Some("SHA256") }, "tls-auth-sha256");
    wrap_none => |k| cases::tls_wrap(k, TlsWrap::None, "no-wrap");
    tls_1_2 => |k| cases::tls_version(k, "1.2", "TLSv1.2");
    tls_1_3 => |k| cases::tls_version(k, "1.3", "TLSv1.3");
    key_derivation_tls_ekm => |k| cases::key_derivation_ekm(k);
    key_derivation_prf_forced => |k| cases::key_derivation_prf_forced(k);
    reneg_sec_10_on_client_during_30s_transfer => |k| cases::renegotiation(k, false);
    reneg_sec_10_on_server_during_30s_transfer => |k| cases::renegotiation(k, true);
    client_from_other_ca_refused_server_keeps_serving => |k| cases::foreign_ca_client_refused(k);
    client_without_tls_crypt_key_gets_no_reply => |k| cases::client_without_tls_crypt_key(k);
    keys_rsa_pkcs1 => |k| cases::key_type(k, KeyType::Rsa2048, KeyFormat::Traditional, "rsa-pkcs1");
    keys_ecdsa_p256_sec1 => |k| cases::key_type(k, KeyType::P256, KeyFormat::Traditional, "p256-sec1");
    keys_ecdsa_p256_pkcs8 => |k| cases::key_type(k, KeyType::P256, KeyFormat::Pkcs8, "p256");
    keys_ed25519 => |k| cases::key_type(k, KeyType::Ed25519, KeyFormat::Pkcs8, "ed25519");
}
