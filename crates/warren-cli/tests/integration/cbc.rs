//! Issue 13, legacy data channel: AES-256-CBC / AES-128-CBC with an `auth` HMAC, warren
//! server against the stock `openvpn` 2.6 client (and the stock server, to validate the
//! test), ping and a checked transfer both ways.
//!
//! Needs root: each test builds network namespaces (see `common`).

// The harness is a driver: it reads the clock.
#![allow(clippy::disallowed_methods)]

use crate::common;

use common::lab::{Lab, MB, ServerKind};

fn log_has(log: &str, pat: &str) -> bool {
    log.lines().any(|l| l.contains(pat))
}

/// `data-ciphers <cipher>` and `auth <auth>` on both sides (NCP picks CBC).
fn cbc_ncp(kind: ServerKind, cipher: &str, auth: &str) {
    let mut lab = Lab::new(&format!("cbc-{}", cipher.to_lowercase()), kind);
    let mut sc = lab.server_conf();
    sc.data_ciphers = Some(cipher.to_string());
    sc.extra.push(format!("auth {auth}"));
    lab.start_server(&sc);
    let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
    cc.data_ciphers = Some(cipher.to_string());
    cc.extra.push(format!("auth {auth}"));
    let client = lab.connect_client("client1", cc);
    let want = format!("Data Channel: cipher '{cipher}'");
    assert!(log_has(&client.log(), &want), "client log lacks {want:?}");
    lab.check_tunnel(&client.ns, client.addr(), 4 * MB, 4 * MB);
}

macro_rules! both {
    ($($name:ident => |$k:ident| $body:expr;)*) => {
        mod openvpn_server {
            use super::*;
            $( #[test] fn $name() { let $k = ServerKind::Openvpn; $body } )*
        }
        mod warren_server {
            use super::*;
            $( #[test] fn $name() { let $k = ServerKind::Warren; $body } )*
        }
    };
}

both! {
    aes_256_cbc_sha256 => |k| cbc_ncp(k, "AES-256-CBC", "SHA256");
    aes_128_cbc_sha1 => |k| cbc_ncp(k, "AES-128-CBC", "SHA1");
}
