//! The TLS 1.0 PRF and OpenVPN's legacy key-method-2 data-key derivation (fact sheet §6.3),
//! for peers that do not negotiate `key-derivation tls-ekm`.
//!
//! `PRF(secret, seed) = P_MD5(S1, seed) XOR P_SHA1(S2, seed)` (RFC 2246 §5), where S1 and
//! S2 are the first and last `ceil(len/2)` bytes of the secret. OpenVPN passes the label
//! as the start of the seed (ssl.c openvpn_PRF). aws-lc-rs has no MD5, so this uses the
//! RustCrypto hmac, md-5 and sha1 crates.

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha1::Sha1;
use zeroize::{Zeroize, Zeroizing};

use crate::data::Key2;

/// ssl.c KEY_EXPANSION_ID " master secret".
const MASTER_LABEL: &[u8] = b"OpenVPN master secret";
/// ssl.c KEY_EXPANSION_ID " key expansion".
const EXPANSION_LABEL: &[u8] = b"OpenVPN key expansion";

/// TLS 1.0 PRF (RFC 2246 §5): fills `out` with `P_MD5(S1, seed) XOR P_SHA1(S2, seed)`.
/// `seed` must already contain the label.
pub fn tls1_prf(secret: &[u8], seed: &[u8], out: &mut [u8]) {
    let half = secret.len().div_ceil(2);
    let s1 = &secret[..half];
    let s2 = &secret[secret.len() - half..];
    out.fill(0);
    p_hash_xor::<Hmac<Md5>>(s1, seed, out);
    p_hash_xor::<Hmac<Sha1>>(s2, seed, out);
}

/// XORs `P_hash(secret, seed)` into `out` (RFC 2246 §5):
/// `A(0) = seed, A(i) = HMAC(secret, A(i-1))`, output `HMAC(secret, A(i) || seed)` ...
fn p_hash_xor<M: Mac + KeyInit + Clone>(secret: &[u8], seed: &[u8], out: &mut [u8]) {
    let keyed =
        <M as KeyInit>::new_from_slice(secret).expect("invariant: HMAC accepts keys of any length");
    // A(1)
    let mut mac = keyed.clone();
    mac.update(seed);
    let mut a = Zeroizing::new(mac.finalize().into_bytes().to_vec());
    for chunk in out.chunks_mut(a.len()) {
        let mut mac = keyed.clone();
        mac.update(&a);
        mac.update(seed);
        let mut block = mac.finalize().into_bytes();
        for (o, b) in chunk.iter_mut().zip(block.iter()) {
            *o ^= *b;
        }
        block.as_mut_slice().zeroize();
        // A(i+1)
        let mut mac = keyed.clone();
        mac.update(&a);
        let mut next = mac.finalize().into_bytes();
        a.copy_from_slice(&next);
        next.as_mut_slice().zeroize();
    }
}

/// OpenVPN's legacy data-key derivation (ssl.c generate_key_expansion_openvpn_prf):
///
/// ```text
/// master[48] = PRF(pre_master, "OpenVPN master secret" || client.random1 || server.random1)
/// key2[256]  = PRF(master, "OpenVPN key expansion" || client.random2 || server.random2
///                          || client_sid || server_sid)
/// ```
pub fn openvpn_prf_key2(
    pre_master: &[u8; 48],
    client_random1: &[u8; 32],
    server_random1: &[u8; 32],
    client_random2: &[u8; 32],
    server_random2: &[u8; 32],
    client_sid: &[u8; 8],
    server_sid: &[u8; 8],
) -> Key2 {
    let mut seed = Zeroizing::new([0u8; EXPANSION_LABEL.len() + 32 + 32 + 8 + 8]);
    let n = MASTER_LABEL.len();
    seed[..n].copy_from_slice(MASTER_LABEL);
    seed[n..n + 32].copy_from_slice(client_random1);
    seed[n + 32..n + 64].copy_from_slice(server_random1);
    let mut master = Zeroizing::new([0u8; 48]);
    tls1_prf(pre_master, &seed[..n + 64], &mut master[..]);

    let n = EXPANSION_LABEL.len();
    seed[..n].copy_from_slice(EXPANSION_LABEL);
    seed[n..n + 32].copy_from_slice(client_random2);
    seed[n + 32..n + 64].copy_from_slice(server_random2);
    seed[n + 64..n + 72].copy_from_slice(client_sid);
    seed[n + 72..n + 80].copy_from_slice(server_sid);
    let mut key2 = Key2::from_bytes([0u8; 256]);
    tls1_prf(&master[..], &seed[..], key2.as_mut_bytes());
    key2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenVPN's own self-test (crypto.c check_tls_prf_working).
    #[test]
    fn openvpn_self_test_vector() {
        let mut out = [0u8; 8];
        tls1_prf(b"tls1-prf-test-secret", b"tls1-prf-test", &mut out);
        assert_eq!(out, [0x71, 0x44, 0xfe, 0x25, 0x40, 0x73, 0x75, 0x95]);
    }

    /// Longer outputs and an odd-length secret (S1/S2 overlap by one byte), checked with
    /// `openssl kdf -keylen 100 -kdfopt digest:MD5-SHA1 -kdfopt hexsecret:.. -kdfopt hexseed:.. TLS1-PRF`.
    #[test]
    fn openssl_vectors() {
        let mut out = [0u8; 100];
        tls1_prf(b"tls1-prf-test-secret", b"tls1-prf-test", &mut out);
        assert_eq!(hex::encode(out), OPENSSL_EVEN);
        tls1_prf(b"odd-secret!", b"label and seed", &mut out);
        assert_eq!(hex::encode(out), OPENSSL_ODD);
        // Prefixes are consistent.
        let mut short = [0u8; 37];
        tls1_prf(b"odd-secret!", b"label and seed", &mut short);
        assert_eq!(short[..], out[..37]);
    }

    const OPENSSL_EVEN: &str = "7144fe2540737595022f7f8ea48c43bf662693887df5c28fef0cff5afdda06c773594ddb2678f2546f21f4c60c2083a5f581c669373eb25addb72b63a0e53b88b4fb69436b789ab84a44d4cf6fbbfd2f2ff0ffad7e0383a8ca99f3b96221fc17051a442e";
    const OPENSSL_ODD: &str = "8f27a39e83150cd8ede1b3d08eed66abb95ecc94f56a8560baf352cf976e0d80d6fd848bd82484413128d1cf9934adbff0f53715676392ffeb64049c88d0b5c38d5e66426e429987bfa886b5a06a4ef690bc1af218b429d8017955142417614622b680ee";

    #[test]
    fn key2_derivation_matches_manual_composition() {
        let pre = [7u8; 48];
        let (cr1, sr1, cr2, sr2) = ([1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]);
        let (csid, ssid) = ([5u8; 8], [6u8; 8]);
        let k = openvpn_prf_key2(&pre, &cr1, &sr1, &cr2, &sr2, &csid, &ssid);
        let mut seed = b"OpenVPN master secret".to_vec();
        seed.extend_from_slice(&cr1);
        seed.extend_from_slice(&sr1);
        let mut master = [0u8; 48];
        tls1_prf(&pre, &seed, &mut master);
        let mut seed = b"OpenVPN key expansion".to_vec();
        for p in [&cr2[..], &sr2, &csid, &ssid] {
            seed.extend_from_slice(p);
        }
        let mut expect = [0u8; 256];
        tls1_prf(&master, &seed, &mut expect);
        assert_eq!(k.as_bytes(), &expect);
    }
}
