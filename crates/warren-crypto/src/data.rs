//! The data channel (fact sheet §6.1, §7.1, §7.2): the AEAD ciphers AES-128-GCM,
//! AES-256-GCM and ChaCha20-Poly1305, and the legacy AES-128-CBC / AES-256-CBC with an
//! `auth` HMAC, sealed and opened in place on caller buffers.
//!
//! ```text
//! P_DATA_V2:  [0x48|kid] [peer_id u24] [packet_id u32] [tag 16] [ciphertext]
//! P_DATA_V1:  [0x30|kid]               [packet_id u32] [tag 16] [ciphertext]
//! nonce = packet_id (4, BE) || implicit_iv (8)
//! AAD   = V2: the first 8 bytes; V1: only the 4-byte packet_id
//! ```
//!
//! CBC + HMAC (encrypt-then-MAC, crypto.c openvpn_encrypt_v1):
//!
//! ```text
//! [opcode(+peer-id)] [HMAC(md_len) over IV||ciphertext] [IV 16, random]
//! [ciphertext = AES-CBC(packet_id u32 || payload || PKCS#7 padding)]
//! ```
//!
//! The CBC packet is longer than the AEAD one: sealing moves the payload forward by
//! `md_len` bytes and pads it, so the caller's buffer needs [`DATA_TAILROOM`] bytes after
//! the plaintext ([`DataKeys::seal_in`]). Opening checks the HMAC (constant time) before it
//! decrypts or looks at the padding, so a bad padding can only follow a good HMAC: there is
//! no padding oracle.
//!
//! [`DataKeys`] is immutable and `Send + Sync`: packet-id assignment and the replay check
//! stay with the (single-owner) engine, the crypto may run on any core.
//!
//! Backend: ring with the default `aead-ring` feature, aws-lc-rs without it. The two have
//! the same in-place API; ring 0.17 has a VAES+AVX2 AES-GCM path that aws-lc-rs 1.19 lacks
//! and was 1.4–2.2× faster for AES-256-GCM at 1400 bytes on the project's CPU (AMD EPYC,
//! AVX2+VAES, no AVX-512; `benches/data.rs`, `docs/dataplane.md`); ChaCha20-Poly1305 was
//! even. On AVX-512 hosts aws-lc-rs may win: build with `--no-default-features` and compare.

use std::fmt;
use std::ops::Range;

#[cfg(not(feature = "aead-ring"))]
use aws_lc_rs::aead as backend;
#[cfg(feature = "aead-ring")]
use ring::aead as backend;

use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptingKey, DecryptionContext, EncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::hmac;
use backend::{AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use thiserror::Error;
use warren_core::KeyId;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::wrap::{Digest, Role};

/// Room `seal` needs in front of the plaintext: op(1) + peer-id(3) + packet-id(4) + tag(16).
pub const DATA_HEADROOM: usize = 24;
/// Room [`DataKeys::seal_in`] may need after the plaintext: a CBC packet is
/// `md_len` (≤ 64, SHA512) + padding (≤ 16) bytes longer than the AEAD layout.
pub const DATA_TAILROOM: usize = 80;
/// AES block and CBC IV length.
const CBC_BLOCK: usize = 16;
/// crypto_backend.h OPENVPN_AEAD_TAG_LENGTH.
pub const AEAD_TAG_LEN: usize = 16;
/// ssl_pkt.h P_DATA_V1.
pub const P_DATA_V1: u8 = 6;
/// ssl_pkt.h P_DATA_V2.
pub const P_DATA_V2: u8 = 9;
/// Implicit IV length: AEAD nonce (12) minus the packet id (4) (ssl.c key_ctx_update_implicit_iv).
const IMPLICIT_IV_LEN: usize = 8;
/// Offset of the tag in a sealed buffer, and length of the V2 header (= V2 AAD).
const V2_HEADER_LEN: usize = 8;
/// A V1 packet starts 3 bytes into a sealed buffer (it has no peer id).
const V1_START: usize = 3;

/// The 256-byte data-channel key material (`struct key2`): `keys[0]` (client→server) then
/// `keys[1]` (server→client), each `cipher[64] || hmac[64]` (fact sheet §6.1). Comes from
/// the TLS exporter (`EXPORTER-OpenVPN-datakeys`) or [`openvpn_prf_key2`](crate::openvpn_prf_key2).
///
/// Zeroized on drop; `Debug` never prints the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key2([u8; 256]);

impl Key2 {
    pub fn from_bytes(b: [u8; 256]) -> Self {
        Key2(b)
    }

    pub fn as_bytes(&self) -> &[u8; 256] {
        &self.0
    }

    /// For filling in place (e.g. from a TLS exporter) without a stack copy.
    pub fn as_mut_bytes(&mut self) -> &mut [u8; 256] {
        &mut self.0
    }

    /// XORs `other` into this key (dynamic tls-crypt, fact sheet §10.3:
    /// `EKM("EXPORTER-OpenVPN-dynamic-tls-crypt") XOR original key2`).
    pub fn xor_with(&mut self, other: &[u8; 256]) {
        for (a, b) in self.0.iter_mut().zip(other.iter()) {
            *a ^= *b;
        }
    }

    /// `keys[slot].cipher` (64 bytes). Panics if `slot > 1`.
    pub fn cipher(&self, slot: usize) -> &[u8] {
        assert!(slot < 2, "a key2 has two slots, got slot {slot}");
        &self.0[slot * 128..slot * 128 + 64]
    }

    /// `keys[slot].hmac` (64 bytes). Panics if `slot > 1`.
    pub fn hmac(&self, slot: usize) -> &[u8] {
        assert!(slot < 2, "a key2 has two slots, got slot {slot}");
        &self.0[slot * 128 + 64..(slot + 1) * 128]
    }
}

impl fmt::Debug for Key2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key2(<redacted>)")
    }
}

/// The data-channel ciphers: the AEAD ones OpenVPN 2.6 negotiates, and the legacy CBC
/// ones with their `auth` digest (the HMAC; `auth` defaults to SHA1 as in OpenVPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherKind {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
    /// Legacy AES-128-CBC + HMAC(`auth`).
    Aes128Cbc(Digest),
    /// Legacy AES-256-CBC + HMAC(`auth`).
    Aes256Cbc(Digest),
}

impl CipherKind {
    /// OpenVPN names, case-insensitive: `AES-128-GCM`, `AES-256-GCM`, `CHACHA20-POLY1305`,
    /// `AES-128-CBC`, `AES-256-CBC` (CBC with the default `auth SHA1`; see
    /// [`CipherKind::with_auth`]).
    pub fn from_name(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("AES-128-GCM") {
            Some(CipherKind::Aes128Gcm)
        } else if s.eq_ignore_ascii_case("AES-256-GCM") {
            Some(CipherKind::Aes256Gcm)
        } else if s.eq_ignore_ascii_case("CHACHA20-POLY1305") {
            Some(CipherKind::ChaCha20Poly1305)
        } else if s.eq_ignore_ascii_case("AES-128-CBC") {
            Some(CipherKind::Aes128Cbc(Digest::Sha1))
        } else if s.eq_ignore_ascii_case("AES-256-CBC") {
            Some(CipherKind::Aes256Cbc(Digest::Sha1))
        } else {
            None
        }
    }

    /// The canonical OpenVPN spelling (what goes into `IV_CIPHERS` and `cipher`).
    pub fn name(self) -> &'static str {
        match self {
            CipherKind::Aes128Gcm => "AES-128-GCM",
            CipherKind::Aes256Gcm => "AES-256-GCM",
            CipherKind::ChaCha20Poly1305 => "CHACHA20-POLY1305",
            CipherKind::Aes128Cbc(_) => "AES-128-CBC",
            CipherKind::Aes256Cbc(_) => "AES-256-CBC",
        }
    }

    /// The same cipher with HMAC digest `auth` (only CBC ciphers use one; AEAD ciphers are
    /// returned unchanged, as OpenVPN ignores `auth` for them).
    pub fn with_auth(self, auth: Digest) -> Self {
        match self {
            CipherKind::Aes128Cbc(_) => CipherKind::Aes128Cbc(auth),
            CipherKind::Aes256Cbc(_) => CipherKind::Aes256Cbc(auth),
            aead => aead,
        }
    }

    /// The HMAC digest of a CBC cipher; `None` for AEAD ciphers.
    pub fn auth(self) -> Option<Digest> {
        match self {
            CipherKind::Aes128Cbc(d) | CipherKind::Aes256Cbc(d) => Some(d),
            _ => None,
        }
    }

    /// AEAD (the modern ciphers) or legacy CBC + HMAC.
    pub fn is_aead(self) -> bool {
        self.auth().is_none()
    }

    /// Key length in bytes: the first `key_len` bytes of `keys[d].cipher` are used.
    pub fn key_len(self) -> usize {
        match self {
            CipherKind::Aes128Gcm | CipherKind::Aes128Cbc(_) => 16,
            CipherKind::Aes256Gcm | CipherKind::ChaCha20Poly1305 | CipherKind::Aes256Cbc(_) => 32,
        }
    }

    fn algorithm(self) -> &'static backend::Algorithm {
        match self {
            CipherKind::Aes128Gcm => &AES_128_GCM,
            CipherKind::Aes256Gcm => &AES_256_GCM,
            CipherKind::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            CipherKind::Aes128Cbc(_) | CipherKind::Aes256Cbc(_) => {
                unreachable!("invariant: CBC ciphers have no AEAD algorithm")
            }
        }
    }
}

fn hmac_algorithm(d: Digest) -> hmac::Algorithm {
    match d {
        Digest::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        Digest::Sha256 => hmac::HMAC_SHA256,
        Digest::Sha384 => hmac::HMAC_SHA384,
        Digest::Sha512 => hmac::HMAC_SHA512,
    }
}

/// Which data opcode to emit: `peer_id: Some(n)` → P_DATA_V2 with the 24-bit peer id `n`
/// (`n < 2^24`; OpenVPN's "no peer id" is 0xFFFFFF), `None` → P_DATA_V1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataHeader {
    pub key_id: KeyId,
    pub peer_id: Option<u32>,
}

impl DataHeader {
    /// Reads the opcode, key id and (V2) peer id of a data packet, so the caller can pick
    /// the [`DataKeys`] (by key id) and the peer (by peer id) before opening it.
    pub fn parse(packet: &[u8]) -> Result<Self, OpenError> {
        let first = *packet.first().ok_or(OpenError::TooShort)?;
        let key_id = KeyId::from_low_bits(first);
        match first >> 3 {
            P_DATA_V1 => Ok(DataHeader {
                key_id,
                peer_id: None,
            }),
            P_DATA_V2 => match packet.get(1..4) {
                Some(&[a, b, c]) => Ok(DataHeader {
                    key_id,
                    peer_id: Some(u32::from_be_bytes([0, a, b, c])),
                }),
                _ => Err(OpenError::TooShort),
            },
            _ => Err(OpenError::BadOpcode),
        }
    }
}

/// Why a data packet did not open. Count and drop (in TCP mode OpenVPN restarts the
/// connection, §9; that is the engine's call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OpenError {
    #[error("data packet too short")]
    TooShort,
    #[error("not a P_DATA_V1/V2 packet")]
    BadOpcode,
    #[error("data packet failed authentication")]
    DecryptFailed,
    /// CBC only, and only after a good HMAC: the peer has the key but sent bad padding.
    #[error("data packet has bad CBC padding")]
    BadPadding,
}

/// The data-channel keys of one key id, one direction each way.
pub struct DataKeys {
    kind: CipherKind,
    keys: Keys,
}

// The AEAD keys stay inline (the hot path, no indirection); CBC is boxed.
#[allow(clippy::large_enum_variant)]
enum Keys {
    Aead {
        seal_key: LessSafeKey,
        open_key: LessSafeKey,
        seal_iv: ImplicitIv,
        open_iv: ImplicitIv,
    },
    /// Boxed: the HMAC contexts make it three times the AEAD variant (one allocation per
    /// key id, none per packet).
    Cbc(Box<CbcKeys>),
}

struct CbcKeys {
    enc: EncryptingKey,
    dec: DecryptingKey,
    seal_mac: hmac::Key,
    open_mac: hmac::Key,
    md_len: usize,
}

#[derive(Zeroize, ZeroizeOnDrop)]
struct ImplicitIv([u8; IMPLICIT_IV_LEN]);

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeys")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl DataKeys {
    /// Client encrypts with `keys[0]` and decrypts with `keys[1]`; the server the reverse
    /// (ssl.c:1530: client KEY_DIRECTION_NORMAL, server INVERSE). AEAD implicit IV = first
    /// 8 bytes of the same direction's hmac half (ssl.c key_ctx_update_implicit_iv); CBC
    /// HMAC key = first `md_len` bytes of it (fact sheet §6.1).
    pub fn new(kind: CipherKind, key2: &Key2, role: Role) -> Self {
        let (seal_slot, open_slot) = match role {
            Role::Client => (0, 1),
            Role::Server => (1, 0),
        };
        let keys = match kind.auth() {
            None => {
                let make = |slot: usize| {
                    let key =
                        UnboundKey::new(kind.algorithm(), &key2.cipher(slot)[..kind.key_len()])
                            .expect("invariant: key_len matches the AEAD algorithm");
                    let mut iv = ImplicitIv([0u8; IMPLICIT_IV_LEN]);
                    iv.0.copy_from_slice(&key2.hmac(slot)[..IMPLICIT_IV_LEN]);
                    (LessSafeKey::new(key), iv)
                };
                let (seal_key, seal_iv) = make(seal_slot);
                let (open_key, open_iv) = make(open_slot);
                Keys::Aead {
                    seal_key,
                    open_key,
                    seal_iv,
                    open_iv,
                }
            }
            Some(digest) => {
                let alg = if kind.key_len() == 16 {
                    &AES_128
                } else {
                    &AES_256
                };
                let cipher = |slot: usize| {
                    UnboundCipherKey::new(alg, &key2.cipher(slot)[..kind.key_len()])
                        .expect("invariant: key_len matches the AES algorithm")
                };
                let md_len = digest.len();
                let mac = |slot: usize| {
                    hmac::Key::new(hmac_algorithm(digest), &key2.hmac(slot)[..md_len])
                };
                Keys::Cbc(Box::new(CbcKeys {
                    enc: EncryptingKey::cbc(cipher(seal_slot))
                        .expect("invariant: AES keys make CBC keys"),
                    dec: DecryptingKey::cbc(cipher(open_slot))
                        .expect("invariant: AES keys make CBC keys"),
                    seal_mac: mac(seal_slot),
                    open_mac: mac(open_slot),
                    md_len,
                }))
            }
        };
        DataKeys { kind, keys }
    }

    pub fn kind(&self) -> CipherKind {
        self.kind
    }

    /// `buf[DATA_HEADROOM..]` holds the plaintext (the whole rest of `buf`). Seals it in
    /// place and writes the header and tag in front; returns the range of `buf` that is
    /// the finished packet (`0..` for V2, `3..` for V1). No allocation.
    ///
    /// # Panics
    /// If `buf` is shorter than [`DATA_HEADROOM`], a V2 peer id does not fit in 24 bits,
    /// or the cipher is CBC (which needs room after the plaintext: use
    /// [`DataKeys::seal_in`]). Programming errors, not input.
    pub fn seal(&self, header: DataHeader, packet_id: u32, buf: &mut [u8]) -> Range<usize> {
        assert!(
            buf.len() >= DATA_HEADROOM,
            "seal needs {DATA_HEADROOM} bytes of headroom"
        );
        let len = buf.len() - DATA_HEADROOM;
        self.seal_in(header, packet_id, buf, len)
    }

    /// Seals the plaintext `buf[DATA_HEADROOM..DATA_HEADROOM + len]` in place; `buf` may
    /// go on after it, and must for CBC ciphers: [`DATA_TAILROOM`] bytes suffice for any
    /// cipher ([`DataKeys::tailroom`] is the exact need). Returns the range of `buf` that
    /// is the finished packet (starting at 0 for V2, 3 for V1). No allocation.
    ///
    /// # Panics
    /// If `buf` lacks the headroom or tailroom, or a V2 peer id does not fit in 24 bits
    /// (programming errors, not input).
    pub fn seal_in(
        &self,
        header: DataHeader,
        packet_id: u32,
        buf: &mut [u8],
        len: usize,
    ) -> Range<usize> {
        assert!(
            buf.len() >= DATA_HEADROOM + len + self.tailroom(),
            "seal needs {DATA_HEADROOM} bytes of headroom and {} of tailroom",
            self.tailroom()
        );
        let start = write_header(header, buf);
        match &self.keys {
            Keys::Aead {
                seal_key, seal_iv, ..
            } => {
                let buf = &mut buf[..DATA_HEADROOM + len];
                let pid = packet_id.to_be_bytes();
                let (head, plaintext) = buf.split_at_mut(DATA_HEADROOM);
                // The header is in head[..8] so that the tag lands at head[8..24] in both
                // formats: V2 = op | peer(3) | pid(4), V1 = (unused 3) | op | pid(4).
                head[4..8].copy_from_slice(&pid);
                let aad_range = if start == 0 {
                    0..V2_HEADER_LEN
                } else {
                    4..V2_HEADER_LEN
                };
                let mut aad = [0u8; V2_HEADER_LEN];
                let aad_len = aad_range.len();
                aad[..aad_len].copy_from_slice(&head[aad_range]);
                let tag = seal_key
                    .seal_in_place_separate_tag(
                        nonce(&pid, seal_iv),
                        Aad::from(&aad[..aad_len]),
                        plaintext,
                    )
                    .expect("invariant: AEAD seal of a datagram-sized buffer cannot fail");
                head[V2_HEADER_LEN..DATA_HEADROOM].copy_from_slice(tag.as_ref());
                start..buf.len()
            }
            Keys::Cbc(k) => {
                let CbcKeys {
                    enc,
                    seal_mac,
                    md_len,
                    ..
                } = &**k;
                let ct_end = cbc_prepare(buf, *md_len, packet_id, len);
                let iv_start = 4 + md_len;
                let ct_start = iv_start + CBC_BLOCK;
                let ctx = enc
                    .encrypt(&mut buf[ct_start..ct_end])
                    .expect("invariant: CBC of whole blocks with a fresh IV cannot fail");
                let iv: &[u8] = (&ctx)
                    .try_into()
                    .expect("invariant: AES-CBC returns a 16-byte IV");
                buf[iv_start..ct_start].copy_from_slice(iv);
                cbc_mac(seal_mac, buf, *md_len, ct_end);
                start..ct_end
            }
        }
    }

    /// Bytes [`DataKeys::seal_in`] needs after the plaintext: 0 for AEAD, `md_len + 16`
    /// for CBC (at most [`DATA_TAILROOM`]).
    pub fn tailroom(&self) -> usize {
        match &self.keys {
            Keys::Aead { .. } => 0,
            Keys::Cbc(k) => k.md_len + CBC_BLOCK,
        }
    }

    /// Parses a P_DATA_V1/V2 packet (the caller already chose this `DataKeys` by key id)
    /// and opens it in place. Returns the packet id, for the caller's replay check (done
    /// after the open, crypto.c openvpn_decrypt_aead/openvpn_decrypt_v1), and the
    /// plaintext range within `packet`. On error `packet` may have been overwritten.
    ///
    /// AEAD: the right AAD per format. CBC: the HMAC is checked (constant time) before
    /// anything is decrypted, then the PKCS#7 padding. Like OpenVPN ("missing payload"),
    /// an empty payload is refused.
    pub fn open(&self, packet: &mut [u8]) -> Result<(u32, Range<usize>), OpenError> {
        let first = *packet.first().ok_or(OpenError::TooShort)?;
        // Where the header ends: the packet id (AEAD) or the HMAC (CBC) starts there.
        let (aad_start, pid_start) = match first >> 3 {
            P_DATA_V2 => (0, 4),
            P_DATA_V1 => (1, 1),
            _ => return Err(OpenError::BadOpcode),
        };
        match &self.keys {
            Keys::Aead {
                open_key, open_iv, ..
            } => {
                // The AAD is [aad_start, pid_end).
                let pid_end = pid_start + 4;
                let ct_start = pid_end + AEAD_TAG_LEN;
                if packet.len() <= ct_start {
                    return Err(OpenError::TooShort);
                }
                let (head, ciphertext) = packet.split_at_mut(ct_start);
                let mut pid = [0u8; 4];
                pid.copy_from_slice(&head[pid_start..pid_end]);
                let tag = &head[pid_end..ct_start];
                let aad = &head[aad_start..pid_end];
                open_separate_tag(open_key, nonce(&pid, open_iv), aad, tag, ciphertext)?;
                Ok((u32::from_be_bytes(pid), ct_start..packet.len()))
            }
            Keys::Cbc(k) => {
                let CbcKeys {
                    dec,
                    open_mac,
                    md_len,
                    ..
                } = &**k;
                let iv_start = pid_start + md_len;
                let ct_start = iv_start + CBC_BLOCK;
                // At least one block: packet id + padding.
                if packet.len() < ct_start + CBC_BLOCK {
                    return Err(OpenError::TooShort);
                }
                hmac::verify(open_mac, &packet[iv_start..], &packet[pid_start..iv_start])
                    .map_err(|_| OpenError::DecryptFailed)?;
                if !(packet.len() - ct_start).is_multiple_of(CBC_BLOCK) {
                    // Authentic but not whole blocks: the peer's bug, not an attacker's.
                    return Err(OpenError::BadPadding);
                }
                let mut iv = [0u8; CBC_BLOCK];
                iv.copy_from_slice(&packet[iv_start..ct_start]);
                let plain = dec
                    .decrypt(&mut packet[ct_start..], DecryptionContext::Iv128(iv.into()))
                    .map_err(|_| OpenError::BadPadding)?;
                let pad = usize::from(*plain.last().ok_or(OpenError::TooShort)?);
                let n = plain.len();
                if pad == 0
                    || pad > CBC_BLOCK
                    || plain[n - pad..].iter().any(|&b| usize::from(b) != pad)
                {
                    return Err(OpenError::BadPadding);
                }
                // pid(4) + at least one payload byte.
                if n - pad <= 4 {
                    return Err(OpenError::TooShort);
                }
                let mut pid = [0u8; 4];
                pid.copy_from_slice(&plain[..4]);
                Ok((u32::from_be_bytes(pid), ct_start + 4..ct_start + n - pad))
            }
        }
    }
}

/// Writes the opcode (and V2 peer id) into `buf[..4]` so that the packet id (AEAD) or the
/// HMAC (CBC) follows at offset 4 in both formats; returns where the packet starts
/// (0 for V2, 3 for V1).
fn write_header(header: DataHeader, buf: &mut [u8]) -> usize {
    match header.peer_id {
        Some(peer) => {
            assert!(
                peer <= 0x00FF_FFFF,
                "peer id {peer:#x} does not fit in 24 bits"
            );
            let p = peer.to_be_bytes();
            buf[0] = (P_DATA_V2 << 3) | header.key_id.get();
            buf[1..4].copy_from_slice(&p[1..4]);
            0
        }
        None => {
            buf[V1_START] = (P_DATA_V1 << 3) | header.key_id.get();
            V1_START
        }
    }
}

/// CBC layout in a sealed buffer: `[hdr 4][hmac md_len][iv 16][pid 4 | payload | pad]`.
/// Moves the payload (at `DATA_HEADROOM`) to its place after the packet id, writes the id
/// and the PKCS#7 padding; returns the end of the ciphertext.
fn cbc_prepare(buf: &mut [u8], md_len: usize, packet_id: u32, len: usize) -> usize {
    let ct_start = 4 + md_len + CBC_BLOCK;
    let pt_start = ct_start + 4;
    buf.copy_within(DATA_HEADROOM..DATA_HEADROOM + len, pt_start);
    buf[ct_start..pt_start].copy_from_slice(&packet_id.to_be_bytes());
    let body = 4 + len;
    let pad = CBC_BLOCK - body % CBC_BLOCK;
    let ct_end = ct_start + body + pad;
    buf[pt_start + len..ct_end].fill(pad as u8);
    ct_end
}

/// HMAC over IV || ciphertext, written in front of the IV.
fn cbc_mac(key: &hmac::Key, buf: &mut [u8], md_len: usize, ct_end: usize) {
    let tag = hmac::sign(key, &buf[4 + md_len..ct_end]);
    buf[4..4 + md_len].copy_from_slice(tag.as_ref());
}

/// The one call whose shape differs between the backends.
#[cfg(not(feature = "aead-ring"))]
#[inline]
fn open_separate_tag(
    key: &LessSafeKey,
    nonce: Nonce,
    aad: &[u8],
    tag: &[u8],
    ciphertext: &mut [u8],
) -> Result<(), OpenError> {
    key.open_in_place_separate_tag(nonce, Aad::from(aad), tag, ciphertext)
        .map(|_| ())
        .map_err(|_| OpenError::DecryptFailed)
}

#[cfg(feature = "aead-ring")]
#[inline]
fn open_separate_tag(
    key: &LessSafeKey,
    nonce: Nonce,
    aad: &[u8],
    tag: &[u8],
    ciphertext: &mut [u8],
) -> Result<(), OpenError> {
    let tag = backend::Tag::try_from(tag).map_err(|_| OpenError::DecryptFailed)?;
    key.open_in_place_separate_tag(nonce, Aad::from(aad), tag, ciphertext, 0..)
        .map(|_| ())
        .map_err(|_| OpenError::DecryptFailed)
}

/// nonce = packet_id (4, BE) || implicit IV (8) (crypto.c openvpn_encrypt_aead).
#[inline]
fn nonce(pid: &[u8; 4], iv: &ImplicitIv) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(pid);
    n[4..].copy_from_slice(&iv.0);
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use warren_core::{Rng, TestRng};

    const PING: [u8; 16] = [
        0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7,
        0x48,
    ];

    fn random_key2(seed: u64) -> Key2 {
        let mut b = [0u8; 256];
        TestRng::seed(seed).fill(&mut b);
        Key2::from_bytes(b)
    }

    const ALL: [CipherKind; 3] = [
        CipherKind::Aes128Gcm,
        CipherKind::Aes256Gcm,
        CipherKind::ChaCha20Poly1305,
    ];

    /// Fact sheet §7.1 [LAB] vector: C→S, kid 1, peer-id 0, pid 1, the ping magic.
    #[test]
    fn lab_vector_opens_as_server() {
        let mut b = [0u8; 256];
        b[..32].copy_from_slice(
            &hex::decode("f020933031a3292d44f862c4d446baf8755947bec58ee9e3b301c3958b7c6595")
                .expect("hex"),
        );
        b[64..72].copy_from_slice(&hex::decode("157afce1d5000f61").expect("hex"));
        let key2 = Key2::from_bytes(b);
        let server = DataKeys::new(CipherKind::Aes256Gcm, &key2, Role::Server);
        let wire = hex::decode(
            "49000000000000012f6933c8fd44d306fb5ce48aba14d84f8fddce67991dab0f71218b469c1ba5d6",
        )
        .expect("hex");
        assert_eq!(
            DataHeader::parse(&wire),
            Ok(DataHeader {
                key_id: KeyId::from_low_bits(1),
                peer_id: Some(0)
            })
        );
        let mut packet = wire.clone();
        let (pid, range) = server.open(&mut packet).expect("open");
        assert_eq!(pid, 1);
        assert_eq!(&packet[range], &PING);
        // The client seals the same bytes back.
        let client = DataKeys::new(CipherKind::Aes256Gcm, &key2, Role::Client);
        let mut buf = [0u8; DATA_HEADROOM + 16];
        buf[DATA_HEADROOM..].copy_from_slice(&PING);
        let header = DataHeader {
            key_id: KeyId::from_low_bits(1),
            peer_id: Some(0),
        };
        let range = client.seal(header, 1, &mut buf);
        assert_eq!(&buf[range], &wire[..]);
        // The client cannot open its own packet (other direction's key).
        let mut packet = wire.clone();
        assert_eq!(client.open(&mut packet), Err(OpenError::DecryptFailed));
    }

    fn seal_vec(keys: &DataKeys, header: DataHeader, pid: u32, plaintext: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; DATA_HEADROOM + plaintext.len()];
        buf[DATA_HEADROOM..].copy_from_slice(plaintext);
        let r = keys.seal(header, pid, &mut buf);
        buf[r].to_vec()
    }

    #[test]
    fn round_trips_all_ciphers_v1_v2() {
        let key2 = random_key2(9);
        for kind in ALL {
            let client = DataKeys::new(kind, &key2, Role::Client);
            let server = DataKeys::new(kind, &key2, Role::Server);
            assert_eq!(client.kind(), kind);
            for peer_id in [None, Some(0), Some(7), Some(0x00FF_FFFE)] {
                let header = DataHeader {
                    key_id: KeyId::from_low_bits(5),
                    peer_id,
                };
                let msg = b"an IP packet, more or less";
                let wire = seal_vec(&client, header, 42, msg);
                let overhead = if peer_id.is_some() { 24 } else { 21 };
                assert_eq!(wire.len(), msg.len() + overhead);
                assert_eq!(DataHeader::parse(&wire), Ok(header));
                if let Some(p) = peer_id {
                    assert_eq!(wire[0], 0x48 | 5);
                    assert_eq!(&wire[1..4], &p.to_be_bytes()[1..]);
                    assert_eq!(&wire[4..8], &42u32.to_be_bytes());
                } else {
                    assert_eq!(wire[0], 0x30 | 5);
                    assert_eq!(&wire[1..5], &42u32.to_be_bytes());
                }
                let mut p = wire.clone();
                let (pid, r) = server.open(&mut p).expect("open");
                assert_eq!(pid, 42);
                assert_eq!(&p[r], msg);
                // server → client too
                let wire = seal_vec(&server, header, 7, msg);
                let mut p = wire.clone();
                let (pid, r) = client.open(&mut p).expect("open s->c");
                assert_eq!((pid, &p[r]), (7, &msg[..]));
                // same direction fails
                let mut p = wire.clone();
                assert_eq!(server.open(&mut p), Err(OpenError::DecryptFailed));
            }
        }
    }

    #[test]
    fn aad_coverage() {
        let key2 = random_key2(10);
        for kind in ALL {
            let client = DataKeys::new(kind, &key2, Role::Client);
            let server = DataKeys::new(kind, &key2, Role::Server);
            // V2: every bit of the header, the tag and the ciphertext is authenticated.
            let wire = seal_vec(
                &client,
                DataHeader {
                    key_id: KeyId::ZERO,
                    peer_id: Some(3),
                },
                9,
                b"payload",
            );
            for bit in 0..wire.len() * 8 {
                let mut p = wire.clone();
                p[bit / 8] ^= 1 << (bit % 8);
                let opcode_changed = bit / 8 == 0 && (p[0] >> 3) != P_DATA_V2;
                let expect = if opcode_changed && (p[0] >> 3) != P_DATA_V1 {
                    Err(OpenError::BadOpcode)
                } else {
                    Err(OpenError::DecryptFailed)
                };
                assert_eq!(server.open(&mut p), expect, "{kind:?} bit {bit}");
            }
            // V1: the AAD is only the packet id; the opcode byte's key-id bits are not
            // authenticated (OpenVPN behaviour: the key id only selects the key).
            let wire = seal_vec(
                &client,
                DataHeader {
                    key_id: KeyId::ZERO,
                    peer_id: None,
                },
                9,
                b"payload",
            );
            let mut p = wire.clone();
            p[0] ^= 0x07; // key id 0 -> 7, still P_DATA_V1
            let (pid, r) = server.open(&mut p).expect("kid bits not in V1 AAD");
            assert_eq!((pid, &p[r]), (9, &b"payload"[..]));
            for bit in 8..wire.len() * 8 {
                let mut p = wire.clone();
                p[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    server.open(&mut p),
                    Err(OpenError::DecryptFailed),
                    "{kind:?} V1 bit {bit}"
                );
            }
            // V1 AAD is exactly the packet id: a V2 seal with the same pid does not verify
            // when relabelled as V1 (different AAD and layout).
            let v2 = seal_vec(
                &client,
                DataHeader {
                    key_id: KeyId::ZERO,
                    peer_id: Some(0),
                },
                9,
                b"payload",
            );
            let mut relabelled = v2[3..].to_vec();
            relabelled[0] = P_DATA_V1 << 3;
            assert_eq!(server.open(&mut relabelled), Err(OpenError::DecryptFailed));
        }
    }

    #[test]
    fn malformed_packets() {
        let server = DataKeys::new(CipherKind::Aes256Gcm, &random_key2(11), Role::Server);
        assert_eq!(server.open(&mut []), Err(OpenError::TooShort));
        assert_eq!(DataHeader::parse(&[]), Err(OpenError::TooShort));
        assert_eq!(DataHeader::parse(&[0x48, 0]), Err(OpenError::TooShort));
        for op in [0u8, 1, 4, 5, 7, 8, 10, 31] {
            assert_eq!(server.open(&mut [op << 3; 64]), Err(OpenError::BadOpcode));
            assert_eq!(DataHeader::parse(&[op << 3; 64]), Err(OpenError::BadOpcode));
        }
        // V2 needs 8 + 16 + at least 1 byte; V1 needs 5 + 16 + 1.
        for n in 1..=24 {
            let mut p = vec![0x48; n];
            assert_eq!(server.open(&mut p), Err(OpenError::TooShort), "v2 {n}");
        }
        for n in 1..=21 {
            let mut p = vec![0x30; n];
            assert_eq!(server.open(&mut p), Err(OpenError::TooShort), "v1 {n}");
        }
        assert_eq!(server.open(&mut [0x48; 25]), Err(OpenError::DecryptFailed));
        assert_eq!(server.open(&mut [0x30; 22]), Err(OpenError::DecryptFailed));
    }

    #[test]
    fn names_and_traits() {
        for k in ALL {
            assert_eq!(CipherKind::from_name(k.name()), Some(k));
            assert_eq!(CipherKind::from_name(&k.name().to_lowercase()), Some(k));
        }
        assert_eq!(
            CipherKind::from_name("aes-256-cbc"),
            Some(CipherKind::Aes256Cbc(Digest::Sha1))
        );
        assert_eq!(CipherKind::from_name("BF-CBC"), None);
        assert_eq!(
            CipherKind::Aes128Cbc(Digest::Sha1).with_auth(Digest::Sha512),
            CipherKind::Aes128Cbc(Digest::Sha512)
        );
        assert_eq!(
            CipherKind::Aes128Gcm.with_auth(Digest::Sha512),
            CipherKind::Aes128Gcm
        );
        assert!(CipherKind::Aes256Gcm.is_aead() && !CBC[0].is_aead());
        assert_eq!(CipherKind::Aes256Cbc(Digest::Sha256).key_len(), 32);
        assert_eq!(CipherKind::Aes128Gcm.key_len(), 16);
        assert_eq!(CipherKind::ChaCha20Poly1305.key_len(), 32);
        fn check<T: Send + Sync + 'static>() {}
        check::<DataKeys>();
        let k = random_key2(1);
        assert_eq!(format!("{k:?}"), "Key2(<redacted>)");
        assert!(
            !format!(
                "{:?}",
                DataKeys::new(CipherKind::Aes128Gcm, &k, Role::Client)
            )
            .contains("seal_iv")
        );
        let mut x = k.clone();
        x.xor_with(k.as_bytes());
        assert_eq!(x.as_bytes(), &[0u8; 256]);
    }

    const CBC: [CipherKind; 6] = [
        CipherKind::Aes256Cbc(Digest::Sha256),
        CipherKind::Aes128Cbc(Digest::Sha1),
        CipherKind::Aes256Cbc(Digest::Sha1),
        CipherKind::Aes128Cbc(Digest::Sha256),
        CipherKind::Aes256Cbc(Digest::Sha512),
        CipherKind::Aes128Cbc(Digest::Sha384),
    ];

    /// The key2 of the vectors below: byte i = i*37 + 11.
    fn kat_key2() -> Key2 {
        let mut b = [0u8; 256];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        Key2::from_bytes(b)
    }

    fn seal_cbc(keys: &DataKeys, header: DataHeader, pid: u32, plaintext: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; DATA_HEADROOM + plaintext.len() + DATA_TAILROOM];
        buf[DATA_HEADROOM..DATA_HEADROOM + plaintext.len()].copy_from_slice(plaintext);
        let r = keys.seal_in(header, pid, &mut buf, plaintext.len());
        buf[r].to_vec()
    }

    /// Known answers computed independently with the `openssl` CLI (`enc -aes-*-cbc
    /// -nopad`, `dgst -mac HMAC`) from the fact sheet §7.2 layout: keys[0] (client→server)
    /// cipher and hmac halves of [`kat_key2`], IV 00..0f, plaintext = pid || ping magic ||
    /// PKCS#7 padding.
    #[test]
    fn cbc_known_answers_open_as_server() {
        let key2 = kat_key2();
        let vectors = [
            (
                CipherKind::Aes256Cbc(Digest::Sha256),
                "48000007e6c330eebdcba74a148d087e0c0aae6c6bf760a1807632bd6cbebb443ba32cf2\
                 000102030405060708090a0b0c0d0e0fa7fb5c2b303c4939b53f66c40facd9c0510e7993\
                 a6a41f86ff4814fc3c2c99d9",
                DataHeader {
                    key_id: KeyId::ZERO,
                    peer_id: Some(7),
                },
                1,
            ),
            (
                CipherKind::Aes128Cbc(Digest::Sha1),
                "32f0ef8cf3ad88c902f926f6a402274370c1be94bc000102030405060708090a0b0c0d0e\
                 0f04d2175bd81a13bbfdbf8e07bb077e20f0931895326f5c650236d20a95a36f0a",
                DataHeader {
                    key_id: KeyId::from_low_bits(2),
                    peer_id: None,
                },
                5,
            ),
        ];
        for (kind, hexwire, header, want_pid) in vectors {
            let wire = hex::decode(hexwire.replace(' ', "")).expect("hex");
            assert_eq!(DataHeader::parse(&wire), Ok(header));
            let server = DataKeys::new(kind, &key2, Role::Server);
            let mut p = wire.clone();
            let (pid, r) = server.open(&mut p).expect("open");
            assert_eq!((pid, &p[r]), (want_pid, &PING[..]), "{kind:?}");
            // Wrong direction, wrong digest, wrong key size: all fail the HMAC.
            let client = DataKeys::new(kind, &key2, Role::Client);
            assert_eq!(
                client.open(&mut wire.clone()),
                Err(OpenError::DecryptFailed)
            );
            let other = match kind {
                CipherKind::Aes256Cbc(_) => CipherKind::Aes256Cbc(Digest::Sha512),
                _ => CipherKind::Aes128Cbc(Digest::Sha256),
            };
            let server = DataKeys::new(other, &key2, Role::Server);
            // (A longer digest may also find the packet too short.)
            assert!(matches!(
                server.open(&mut wire.clone()),
                Err(OpenError::DecryptFailed | OpenError::TooShort)
            ));
        }
    }

    #[test]
    fn cbc_round_trips_every_padding_length() {
        let key2 = random_key2(21);
        for kind in CBC {
            let client = DataKeys::new(kind, &key2, Role::Client);
            let server = DataKeys::new(kind, &key2, Role::Server);
            let md = kind.auth().expect("cbc").len();
            assert_eq!(client.tailroom(), md + 16);
            assert!(client.tailroom() <= DATA_TAILROOM);
            let mut ivs = std::collections::HashSet::new();
            for peer_id in [None, Some(0x00AB_CDEF)] {
                let header = DataHeader {
                    key_id: KeyId::from_low_bits(3),
                    peer_id,
                };
                for n in 1..=40usize {
                    let msg: Vec<u8> = (0..n as u8).collect();
                    let wire = seal_cbc(&client, header, n as u32, &msg);
                    let hdr = if peer_id.is_some() { 4 } else { 1 };
                    assert_eq!(wire.len(), hdr + md + 16 + (4 + n) / 16 * 16 + 16, "{n}");
                    assert_eq!(DataHeader::parse(&wire), Ok(header));
                    // Random IV: never repeats.
                    assert!(ivs.insert(wire[hdr + md..hdr + md + 16].to_vec()));
                    let mut p = wire.clone();
                    let (pid, r) = server.open(&mut p).expect("open");
                    assert_eq!((pid, &p[r]), (n as u32, &msg[..]), "{kind:?} {n}");
                    let wire = seal_cbc(&server, header, 9, &msg);
                    let mut p = wire.clone();
                    let (pid, r) = client.open(&mut p).expect("open s->c");
                    assert_eq!((pid, &p[r]), (9, &msg[..]));
                    assert_eq!(
                        server.open(&mut wire.clone()),
                        Err(OpenError::DecryptFailed)
                    );
                }
            }
        }
    }

    /// Every bit after the header is covered by the HMAC; the V2 header (op, key id, peer
    /// id) is not (fact sheet §7.2), like OpenVPN.
    #[test]
    fn cbc_tamper() {
        let key2 = random_key2(22);
        for kind in [CBC[0], CBC[1]] {
            let client = DataKeys::new(kind, &key2, Role::Client);
            let server = DataKeys::new(kind, &key2, Role::Server);
            let header = DataHeader {
                key_id: KeyId::ZERO,
                peer_id: Some(3),
            };
            let wire = seal_cbc(&client, header, 77, &[0x42; 40]);
            for bit in 32..wire.len() * 8 {
                let mut p = wire.clone();
                p[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    server.open(&mut p),
                    Err(OpenError::DecryptFailed),
                    "{kind:?} bit {bit}"
                );
            }
            let mut p = wire.clone();
            p[3] ^= 1; // peer id: not authenticated
            assert!(server.open(&mut p).is_ok());
            // Truncated or extended: the HMAC fails first (or it is too short for one).
            assert_eq!(
                server.open(&mut wire[..wire.len() - 1].to_vec()),
                Err(OpenError::DecryptFailed)
            );
            assert_eq!(
                server.open(&mut wire[..wire.len() - 16].to_vec()),
                Err(OpenError::DecryptFailed)
            );
            let mut longer = wire.clone();
            longer.extend_from_slice(&[0u8; 16]);
            assert_eq!(server.open(&mut longer), Err(OpenError::DecryptFailed));
        }
    }

    /// A packet with a good HMAC but bad padding (a buggy peer holding the key) is refused
    /// as BadPadding; without the HMAC key the padding is never looked at.
    #[test]
    fn cbc_bad_padding_after_good_hmac() {
        let key2 = random_key2(23);
        let kind = CipherKind::Aes256Cbc(Digest::Sha256);
        let server = DataKeys::new(kind, &key2, Role::Server);
        let forge = |plain: &[u8]| {
            let enc = EncryptingKey::cbc(
                UnboundCipherKey::new(&AES_256, &key2.cipher(0)[..32]).expect("key"),
            )
            .expect("cbc");
            let mac = hmac::Key::new(hmac::HMAC_SHA256, &key2.hmac(0)[..32]);
            let mut ct = plain.to_vec();
            let ctx = enc.encrypt(&mut ct).expect("enc");
            let iv: &[u8] = (&ctx).try_into().expect("iv");
            let mut body = iv.to_vec();
            body.extend_from_slice(&ct);
            let mut wire = vec![0x48, 0, 0, 0];
            wire.extend_from_slice(hmac::sign(&mac, &body).as_ref());
            wire.extend_from_slice(&body);
            wire
        };
        let mut good = [7u8; 16];
        good[..4].copy_from_slice(&1u32.to_be_bytes());
        good[4..9].copy_from_slice(b"hello");
        good[9..].fill(7);
        let (pid, r) = server.open(&mut forge(&good)).expect("forged good");
        assert_eq!(pid, 1);
        assert_eq!(r.len(), 5);
        for bad_pad in [0u8, 17, 255] {
            let mut b = good;
            b[15] = bad_pad;
            assert_eq!(server.open(&mut forge(&b)), Err(OpenError::BadPadding));
        }
        let mut b = good;
        b[10] = 6; // one padding byte differs
        assert_eq!(server.open(&mut forge(&b)), Err(OpenError::BadPadding));
        // Only the packet id and padding: no payload.
        let mut empty = [12u8; 16];
        empty[..4].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(server.open(&mut forge(&empty)), Err(OpenError::TooShort));
        // Too short for header + HMAC + IV + one block.
        for n in 0..4 + 32 + 32 {
            let mut p = vec![0x48; n];
            assert!(server.open(&mut p).is_err(), "{n}");
        }
    }

    proptest! {
        #[test]
        fn prop_cbc_round_trip(
            seed in any::<u64>(),
            kind in prop::sample::select(CBC.to_vec()),
            peer in prop::option::of(0u32..0x0100_0000),
            pid in any::<u32>(),
            plaintext in proptest::collection::vec(any::<u8>(), 1..1600),
        ) {
            let key2 = random_key2(seed);
            let client = DataKeys::new(kind, &key2, Role::Client);
            let server = DataKeys::new(kind, &key2, Role::Server);
            let header = DataHeader { key_id: KeyId::ZERO, peer_id: peer };
            let mut wire = seal_cbc(&client, header, pid, &plaintext);
            let (got_pid, r) = server.open(&mut wire).expect("open");
            prop_assert_eq!(got_pid, pid);
            prop_assert_eq!(&wire[r], &plaintext[..]);
        }

        #[test]
        fn prop_cbc_open_garbage_never_panics(mut packet in proptest::collection::vec(any::<u8>(), 0..200)) {
            let server = DataKeys::new(CBC[1], &random_key2(1), Role::Server);
            prop_assert!(server.open(&mut packet).is_err());
        }
    }

    proptest! {
        #[test]
        fn prop_seal_open_round_trip(
            seed in any::<u64>(),
            kind in prop::sample::select(ALL.to_vec()),
            kid in 0u8..8,
            peer in prop::option::of(0u32..0x0100_0000),
            pid in any::<u32>(),
            plaintext in proptest::collection::vec(any::<u8>(), 1..1600),
        ) {
            let key2 = random_key2(seed);
            let client = DataKeys::new(kind, &key2, Role::Client);
            let server = DataKeys::new(kind, &key2, Role::Server);
            let header = DataHeader { key_id: KeyId::from_low_bits(kid), peer_id: peer };
            let mut wire = seal_vec(&client, header, pid, &plaintext);
            prop_assert_eq!(DataHeader::parse(&wire), Ok(header));
            let (got_pid, r) = server.open(&mut wire).expect("open");
            prop_assert_eq!(got_pid, pid);
            prop_assert_eq!(&wire[r], &plaintext[..]);
        }

        #[test]
        fn prop_open_garbage_never_panics(mut packet in proptest::collection::vec(any::<u8>(), 0..100)) {
            let server = DataKeys::new(CipherKind::ChaCha20Poly1305, &random_key2(1), Role::Server);
            prop_assert!(server.open(&mut packet).is_err());
        }
    }
}
