//! Control-channel wrapping: none, `tls-auth` (HMAC) and `tls-crypt` (AES-256-CTR +
//! HMAC-SHA256 SIV) (fact sheet §1.3–§1.6).
//!
//! Every control packet starts with `head` = `opcode|key_id` (1) + the sender's session id
//! (8). The wrap fields follow, then `body`: the ACK block, the msg id and the payload,
//! which this module treats as opaque bytes.
//!
//! ```text
//! none:      head(9) | body
//! tls-auth:  head(9) | HMAC(md_len) | id(4) | time(4) | body
//! tls-crypt: head(9) | id(4) | time(4) | tag(32) | AES-256-CTR(body)
//! ```
//!
//! A [`ControlWrap`] holds immutable keys only. The send counter ([`ReplayStamp`]) is the
//! caller's, and so is the receive [`ReplayWindow`](crate::ReplayWindow): `unwrap`
//! authenticates and decrypts, the caller then runs the replay check (OpenVPN does it in
//! that order too, tls_crypt.c tls_crypt_unwrap).

use std::fmt;

use aws_lc_rs::cipher::{AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::static_key::{KeyDirection, STATIC_KEY_LEN, StaticKey};

/// `opcode|key_id` + own session id.
pub const HEAD_LEN: usize = 9;
/// Long-form packet id: `u32 id || u32 time` (packet_id.c packet_id_write, long form).
pub const STAMP_LEN: usize = 8;
/// tls_crypt.h TLS_CRYPT_TAG_SIZE.
pub const TLS_CRYPT_TAG_LEN: usize = 32;
/// tls-crypt overhead over a plain packet: stamp + tag.
pub const TLS_CRYPT_OVERHEAD: usize = STAMP_LEN + TLS_CRYPT_TAG_LEN;
/// tls_crypt.h TLS_CRYPT_OFF_CT: where the ciphertext starts.
const TLS_CRYPT_OFF_CT: usize = HEAD_LEN + TLS_CRYPT_OVERHEAD;
/// tls-crypt uses the first 32 bytes of a 64-byte cipher slot as the AES-256 key, and the
/// first 32 bytes of the hmac slot as the HMAC-SHA256 key (tls_crypt.c tls_crypt_kt).
const TLS_CRYPT_KEY_LEN: usize = 32;

/// The `--auth` digest of `tls-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digest {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    /// OpenSSL digest names as OpenVPN accepts them in `auth`, case-insensitive:
    /// `SHA1`/`SHA-1`, `SHA256`/`SHA-256`/`SHA2-256`, and the same for 384 and 512.
    pub fn from_name(s: &str) -> Option<Self> {
        let n = s.trim().to_ascii_uppercase();
        match n.as_str() {
            "SHA1" | "SHA-1" => Some(Digest::Sha1),
            "SHA256" | "SHA-256" | "SHA2-256" => Some(Digest::Sha256),
            "SHA384" | "SHA-384" | "SHA2-384" => Some(Digest::Sha384),
            "SHA512" | "SHA-512" | "SHA2-512" => Some(Digest::Sha512),
            _ => None,
        }
    }

    /// Output length in bytes (`md_len`), which is also the HMAC key length OpenVPN uses.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        match self {
            Digest::Sha1 => 20,
            Digest::Sha256 => 32,
            Digest::Sha384 => 48,
            Digest::Sha512 => 64,
        }
    }

    /// The canonical OpenVPN spelling (`SHA1`, `SHA256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha1 => "SHA1",
            Digest::Sha256 => "SHA256",
            Digest::Sha384 => "SHA384",
            Digest::Sha512 => "SHA512",
        }
    }

    fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            Digest::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => hmac::HMAC_SHA256,
            Digest::Sha384 => hmac::HMAC_SHA384,
            Digest::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// Which end of the tunnel we are (`client` / `tls-client` vs `server` / `tls-server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    /// tls_crypt.c tls_crypt_init_key and ssl.c:1530: the server is KEY_DIRECTION_NORMAL
    /// for tls-crypt, the client INVERSE.
    fn tls_crypt_direction(self) -> KeyDirection {
        match self {
            Role::Server => KeyDirection::Normal,
            Role::Client => KeyDirection::Inverse,
        }
    }
}

/// The long-form wrap packet id carried by tls-auth and tls-crypt packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReplayStamp {
    pub id: u32,
    pub time: u32,
}

impl ReplayStamp {
    pub fn to_bytes(self) -> [u8; STAMP_LEN] {
        let mut b = [0u8; STAMP_LEN];
        b[..4].copy_from_slice(&self.id.to_be_bytes());
        b[4..].copy_from_slice(&self.time.to_be_bytes());
        b
    }

    pub fn from_bytes(b: [u8; STAMP_LEN]) -> Self {
        let [a0, a1, a2, a3, t0, t1, t2, t3] = b;
        ReplayStamp {
            id: u32::from_be_bytes([a0, a1, a2, a3]),
            time: u32::from_be_bytes([t0, t1, t2, t3]),
        }
    }
}

/// Why a control packet failed to unwrap. Count and drop; never log above `trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WrapError {
    #[error("control packet too short for its wrapping")]
    TooShort,
    #[error("tls-auth HMAC mismatch")]
    BadHmac,
    #[error("tls-crypt authentication tag mismatch")]
    BadTag,
}

/// One direction of tls-crypt: AES-256-CTR key Ke and HMAC-SHA256 key Ka. (Also the
/// tls-crypt-v2 server key, which wraps client keys the same way.)
#[derive(Clone)]
pub(crate) struct CryptKeys {
    cipher: Zeroizing<[u8; TLS_CRYPT_KEY_LEN]>,
    auth: hmac::Key,
}

impl CryptKeys {
    fn from_slot(key2: &[u8; STATIC_KEY_LEN], slot: usize) -> Self {
        // struct key2 layout: keys[slot] = cipher[64] || hmac[64].
        let base = slot * 128;
        Self::from_key(&key2[base..base + 128])
    }

    /// From one `struct key` (`cipher[64] || hmac[64]`): Ke = `cipher[0..32]`, Ka =
    /// `hmac[0..32]` (tls_crypt.c tls_crypt_kt: AES-256-CTR and HMAC-SHA256 keys).
    ///
    /// # Panics
    /// If `key` is shorter than 96 bytes (a programming error: callers pass 128).
    pub(crate) fn from_key(key: &[u8]) -> Self {
        let mut cipher = Zeroizing::new([0u8; TLS_CRYPT_KEY_LEN]);
        cipher.copy_from_slice(&key[..TLS_CRYPT_KEY_LEN]);
        let auth = hmac::Key::new(hmac::HMAC_SHA256, &key[64..64 + TLS_CRYPT_KEY_LEN]);
        CryptKeys { cipher, auth }
    }

    /// tag = HMAC-SHA256(Ka, header(17) || plaintext) (tls_crypt.c tls_crypt_wrap).
    pub(crate) fn tag(&self, header: &[u8], plaintext: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.auth);
        ctx.update(header);
        ctx.update(plaintext);
        ctx.sign()
    }

    /// AES-256-CTR with the whole 16-byte IV as the initial counter block, incremented
    /// as a 128-bit big-endian number (OpenSSL EVP aes-256-ctr semantics). Encryption and
    /// decryption are the same operation.
    pub(crate) fn ctr(&self, iv: &[u8; 16], data: &mut [u8]) {
        if data.is_empty() {
            return;
        }
        let key = UnboundCipherKey::new(&AES_256, &self.cipher[..])
            .expect("invariant: a 32-byte key is valid for AES-256");
        let key = EncryptingKey::ctr(key).expect("invariant: AES-256 supports CTR mode");
        key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
            .expect("invariant: AES-256-CTR with a 128-bit IV cannot fail");
    }
}

#[derive(Clone)]
enum Mode {
    None,
    Auth {
        digest: Digest,
        send: hmac::Key,
        recv: hmac::Key,
    },
    Crypt {
        send: CryptKeys,
        recv: CryptKeys,
    },
}

/// The control-channel wrapping of one TLS session: immutable keys, no counters.
#[derive(Clone)]
pub struct ControlWrap {
    mode: Mode,
}

impl fmt::Debug for ControlWrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mode {
            Mode::None => f.write_str("ControlWrap::None"),
            Mode::Auth { digest, .. } => write!(
                f,
                "ControlWrap::TlsAuth({}, <keys redacted>)",
                digest.name()
            ),
            Mode::Crypt { .. } => f.write_str("ControlWrap::TlsCrypt(<keys redacted>)"),
        }
    }
}

impl ControlWrap {
    /// No wrapping: `head | body` on the wire.
    pub fn none() -> Self {
        ControlWrap { mode: Mode::None }
    }

    /// `tls-auth` with `auth <digest>` and an optional `key-direction`.
    ///
    /// The HMAC key is `keys[slot].hmac[0..md_len]`. With a direction, `Normal` sends with
    /// `keys[0]` and receives with `keys[1]`, `Inverse` the reverse; with no direction `keys[0]`
    /// is used both ways (OpenVPN crypto.c key_direction_state_init, KEY_DIRECTION_BIDIRECTIONAL).
    pub fn tls_auth(key: &StaticKey, digest: Digest, direction: Option<KeyDirection>) -> Self {
        let (out_slot, in_slot) = match direction {
            Some(d) => (d.out_slot(), d.in_slot()),
            None => (0, 0),
        };
        let md = digest.len();
        let send = hmac::Key::new(digest.hmac_algorithm(), &key.hmac(out_slot)[..md]);
        let recv = hmac::Key::new(digest.hmac_algorithm(), &key.hmac(in_slot)[..md]);
        ControlWrap {
            mode: Mode::Auth { digest, send, recv },
        }
    }

    /// `tls-crypt` with a static key file. `key-direction` does not apply: the server
    /// sends with `keys[0]` and receives with `keys[1]`, the client the reverse
    /// (tls_crypt.c tls_crypt_init_key).
    pub fn tls_crypt(key: &StaticKey, role: Role) -> Self {
        Self::tls_crypt_from_bytes(key.as_bytes(), role)
    }

    /// Like [`ControlWrap::tls_crypt`] for raw key2 bytes (dynamic tls-crypt, §10.3, or a
    /// tls-crypt-v2 client key Kc).
    pub fn tls_crypt_from_bytes(key2: &[u8; STATIC_KEY_LEN], role: Role) -> Self {
        let d = role.tls_crypt_direction();
        ControlWrap {
            mode: Mode::Crypt {
                send: CryptKeys::from_slot(key2, d.out_slot()),
                recv: CryptKeys::from_slot(key2, d.in_slot()),
            },
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self.mode, Mode::None)
    }

    pub fn is_tls_crypt(&self) -> bool {
        matches!(self.mode, Mode::Crypt { .. })
    }

    /// The tls-auth digest, if this is tls-auth.
    pub fn digest(&self) -> Option<Digest> {
        match self.mode {
            Mode::Auth { digest, .. } => Some(digest),
            _ => None,
        }
    }

    /// Bytes added over a plain packet: 0, `md_len + 8` (tls-auth) or 40 (tls-crypt).
    pub fn overhead(&self) -> usize {
        match &self.mode {
            Mode::None => 0,
            Mode::Auth { digest, .. } => digest.len() + STAMP_LEN,
            Mode::Crypt { .. } => TLS_CRYPT_OVERHEAD,
        }
    }

    /// Clears `out` and writes the complete wire packet. `stamp` is ignored for `none`.
    pub fn wrap(&self, head: &[u8; HEAD_LEN], stamp: ReplayStamp, body: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(HEAD_LEN + self.overhead() + body.len());
        match &self.mode {
            Mode::None => {
                out.extend_from_slice(head);
                out.extend_from_slice(body);
            }
            Mode::Auth { send, .. } => {
                // ssl_pkt.c tls_wrap_control + crypto.c openvpn_encrypt_v1 (no cipher):
                // HMAC over `id || time || head || body`, then swap_hmac moves
                // `HMAC || id || time` behind `head`.
                let stamp = stamp.to_bytes();
                let mut ctx = hmac::Context::with_key(send);
                ctx.update(&stamp);
                ctx.update(head);
                ctx.update(body);
                let tag = ctx.sign();
                out.extend_from_slice(head);
                out.extend_from_slice(tag.as_ref());
                out.extend_from_slice(&stamp);
                out.extend_from_slice(body);
            }
            Mode::Crypt { send, .. } => {
                // tls_crypt.c tls_crypt_wrap.
                out.extend_from_slice(head);
                out.extend_from_slice(&stamp.to_bytes());
                let tag = send.tag(&out[..HEAD_LEN + STAMP_LEN], body);
                let tag = tag.as_ref();
                out.extend_from_slice(tag);
                out.extend_from_slice(body);
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&tag[..16]);
                send.ctr(&iv, &mut out[TLS_CRYPT_OFF_CT..]);
            }
        }
    }

    /// Authenticates (constant-time compare) and decrypts `packet`; clears `body` and
    /// writes the unwrapped rest (what came after head + wrap fields) into it. Returns the
    /// stamp (`None` for `none`). Does NOT do the replay check: the caller owns a
    /// [`ReplayWindow`](crate::ReplayWindow). On error `body` is left empty.
    pub fn unwrap(
        &self,
        packet: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<Option<ReplayStamp>, WrapError> {
        body.clear();
        match &self.mode {
            Mode::None => {
                let rest = packet.get(HEAD_LEN..).ok_or(WrapError::TooShort)?;
                body.extend_from_slice(rest);
                Ok(None)
            }
            Mode::Auth { digest, recv, .. } => {
                // ssl_pkt.c read_control_auth: swap_hmac back, then crypto.c
                // openvpn_decrypt_v1 checks the HMAC in constant time.
                let md = digest.len();
                let fields_end = HEAD_LEN + md + STAMP_LEN;
                if packet.len() < fields_end {
                    return Err(WrapError::TooShort);
                }
                let (head, rest) = packet.split_at(HEAD_LEN);
                let (tag, rest) = rest.split_at(md);
                let (stamp, rest) = rest.split_at(STAMP_LEN);
                let mut ctx = hmac::Context::with_key(recv);
                ctx.update(stamp);
                ctx.update(head);
                ctx.update(rest);
                let expect = ctx.sign();
                if !bool::from(expect.as_ref().ct_eq(tag)) {
                    return Err(WrapError::BadHmac);
                }
                body.extend_from_slice(rest);
                Ok(Some(read_stamp(stamp)))
            }
            Mode::Crypt { recv, .. } => {
                // tls_crypt.c tls_crypt_unwrap: decrypt, recompute the tag over
                // header || plaintext, constant-time compare.
                if packet.len() < TLS_CRYPT_OFF_CT {
                    return Err(WrapError::TooShort);
                }
                let (header, rest) = packet.split_at(HEAD_LEN + STAMP_LEN);
                let (tag, ct) = rest.split_at(TLS_CRYPT_TAG_LEN);
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&tag[..16]);
                body.extend_from_slice(ct);
                recv.ctr(&iv, body);
                let expect = recv.tag(header, body);
                if !bool::from(expect.as_ref().ct_eq(tag)) {
                    body.clear();
                    return Err(WrapError::BadTag);
                }
                Ok(Some(read_stamp(&header[HEAD_LEN..])))
            }
        }
    }
}

/// `b` is exactly [`STAMP_LEN`] bytes (checked by the callers' length checks).
fn read_stamp(b: &[u8]) -> ReplayStamp {
    let mut a = [0u8; STAMP_LEN];
    a.copy_from_slice(&b[..STAMP_LEN]);
    ReplayStamp::from_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use warren_core::TestRng;

    const KEY_HEX: &str = "fa4eaec302338a2e99055b6eee355a1899634d552ebc897dcddee7156d9228d49b899617e297f48bb0ed07ab42f937ee8616613218cea030c8e6a48451494ccf90bade77462c8dacaf92a61e735479e49e1f6d05b610af001ee59f355f62245aacbba7cfd2328a15c431b07e7cca568dbda01bd44af78c53ccc17eccf623d1c477ef2e702b31469e2be273f639dcc28c844ff6ffeb4967917ca335327dbaecf40328b40ccc2ce797e65870c613cab053055313f4b84cd6aba9f68271156d433ff0809fe3dc3822773ba9751fdb1fa7ca5e71aa9c6ea9aeb0a1d628f9688253e09957dd00f61ffb9baea54b48eda27e055ab61e8358111002b1c75f93764087bc";
    const CLIENT_RESET: &str = "38306c9f7ce8bad2f1000000016b024a674a454a0f5708fe1995889a530eb015bb08d3b8ca577bdd59052d8cf474bceee8547e280ed1";
    const SERVER_RESET: &str = "40078fb7bd85396133000000016b024a6782e738599f3a7d78b4b1c5f51f564cfcb5aa9326b4f319cbed2bbf447e6753a9238bcad5bdc7ef34994d4c9b7a433af76b";

    fn fact_key() -> StaticKey {
        let v = hex::decode(KEY_HEX).expect("hex");
        StaticKey::from_bytes(v.try_into().expect("256"))
    }

    fn random_key(seed: u64) -> StaticKey {
        StaticKey::generate(&mut TestRng::seed(seed))
    }

    fn head_of(packet: &[u8]) -> [u8; 9] {
        packet[..9].try_into().expect("9")
    }

    #[test]
    fn tls_crypt_client_reset_vector() {
        let key = fact_key();
        let packet = hex::decode(CLIENT_RESET).expect("hex");
        assert_eq!(packet.len(), 54);
        let server = ControlWrap::tls_crypt(&key, Role::Server);
        let mut body = Vec::new();
        let stamp = server
            .unwrap(&packet, &mut body)
            .expect("unwrap")
            .expect("stamp");
        assert_eq!(
            stamp,
            ReplayStamp {
                id: 1,
                time: 0x6b02_4a67
            }
        );
        assert_eq!(body, hex::decode("0000000000").expect("hex"));
        // The client's own wrap does not accept it (wrong direction).
        let client = ControlWrap::tls_crypt(&key, Role::Client);
        assert_eq!(client.unwrap(&packet, &mut body), Err(WrapError::BadTag));
        assert!(body.is_empty());
        // Re-wrapping with the same stamp reproduces the exact bytes.
        let mut out = Vec::new();
        client.wrap(
            &head_of(&packet),
            stamp,
            &hex::decode("0000000000").expect("hex"),
            &mut out,
        );
        assert_eq!(out, packet);
    }

    #[test]
    fn tls_crypt_server_reset_vector() {
        let key = fact_key();
        let packet = hex::decode(SERVER_RESET).expect("hex");
        assert_eq!(packet.len(), 66);
        let client = ControlWrap::tls_crypt(&key, Role::Client);
        let mut body = Vec::new();
        let stamp = client
            .unwrap(&packet, &mut body)
            .expect("unwrap")
            .expect("stamp");
        assert_eq!(
            stamp,
            ReplayStamp {
                id: 1,
                time: 0x6b02_4a67
            }
        );
        let plain = hex::decode("0100000000306c9f7ce8bad2f100000000").expect("hex");
        assert_eq!(body, plain);
        let server = ControlWrap::tls_crypt_from_bytes(key.as_bytes(), Role::Server);
        let mut out = Vec::new();
        server.wrap(&head_of(&packet), stamp, &plain, &mut out);
        assert_eq!(out, packet);
        assert_eq!(out.len(), 9 + server.overhead() + plain.len());
    }

    #[test]
    fn tls_crypt_rejects_short_and_flipped() {
        let key = fact_key();
        let packet = hex::decode(SERVER_RESET).expect("hex");
        let client = ControlWrap::tls_crypt(&key, Role::Client);
        let mut body = Vec::new();
        for n in 0..49 {
            assert_eq!(
                client.unwrap(&packet[..n], &mut body),
                Err(WrapError::TooShort)
            );
        }
        for bit in 0..packet.len() * 8 {
            let mut p = packet.clone();
            p[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                client.unwrap(&p, &mut body),
                Err(WrapError::BadTag),
                "bit {bit}"
            );
            assert!(body.is_empty());
        }
        // Truncation and extension also fail.
        assert_eq!(
            client.unwrap(&packet[..65], &mut body),
            Err(WrapError::BadTag)
        );
        let mut longer = packet.clone();
        longer.push(0);
        assert_eq!(client.unwrap(&longer, &mut body), Err(WrapError::BadTag));
    }

    /// AES-256-CTR must carry across the whole 128-bit counter (OpenSSL semantics),
    /// not just the low 32 bits. Checked against single-block ECB encryptions.
    #[test]
    fn ctr_increments_full_128_bits() {
        use aws_lc_rs::cipher::EncryptingKey;
        let key2 = *fact_key().as_bytes();
        let keys = CryptKeys::from_slot(&key2, 0);
        let iv = [
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xfe,
        ];
        let mut data = [0u8; 64];
        keys.ctr(&iv, &mut data);
        let mut expect = [0u8; 64];
        let mut counter = u128::from_be_bytes(iv);
        let ecb =
            EncryptingKey::ecb(UnboundCipherKey::new(&AES_256, &keys.cipher[..]).expect("key"))
                .expect("ecb");
        for block in expect.chunks_mut(16) {
            block.copy_from_slice(&counter.to_be_bytes());
            ecb.less_safe_encrypt(block, EncryptionContext::None)
                .expect("ecb");
            counter = counter.wrapping_add(1);
        }
        assert_eq!(data, expect);
    }

    #[test]
    fn none_is_plain() {
        let w = ControlWrap::none();
        assert!(w.is_none());
        assert_eq!(w.overhead(), 0);
        let head = [0x38, 1, 2, 3, 4, 5, 6, 7, 8];
        let body = [0u8, 0, 0, 0, 0];
        let mut out = vec![9, 9];
        w.wrap(&head, ReplayStamp { id: 7, time: 7 }, &body, &mut out);
        assert_eq!(out.len(), 14); // fact sheet §1.3
        let mut got = Vec::new();
        assert_eq!(w.unwrap(&out, &mut got), Ok(None));
        assert_eq!(got, body);
        assert_eq!(w.unwrap(&out[..8], &mut got), Err(WrapError::TooShort));
    }

    fn auth_pair(key: &StaticKey, digest: Digest) -> (ControlWrap, ControlWrap) {
        // usual deployment: server `tls-auth ta.key 0`, client `tls-auth ta.key 1`
        (
            ControlWrap::tls_auth(key, digest, Some(KeyDirection::Inverse)),
            ControlWrap::tls_auth(key, digest, Some(KeyDirection::Normal)),
        )
    }

    #[test]
    fn tls_auth_layout_and_round_trip() {
        let key = random_key(3);
        for digest in [Digest::Sha1, Digest::Sha256, Digest::Sha384, Digest::Sha512] {
            let (client, server) = auth_pair(&key, digest);
            assert_eq!(client.overhead(), digest.len() + 8);
            let head = [0x38, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8];
            let body = [0u8, 0, 0, 0, 0];
            let stamp = ReplayStamp {
                id: 1,
                time: 0x6b02_4a67,
            };
            let mut out = Vec::new();
            client.wrap(&head, stamp, &body, &mut out);
            let md = digest.len();
            // HMAC right after the sid, then id, time, body.
            assert_eq!(out.len(), 14 + md + 8);
            if digest == Digest::Sha1 {
                assert_eq!(out.len(), 42); // fact sheet §1.4
            }
            assert_eq!(&out[..9], &head);
            assert_eq!(&out[9 + md..9 + md + 8], &stamp.to_bytes());
            assert_eq!(&out[9 + md + 8..], &body);
            // The HMAC is over id || time || head || body with keys[1].hmac (client sends).
            let mut msg = Vec::new();
            msg.extend_from_slice(&stamp.to_bytes());
            msg.extend_from_slice(&head);
            msg.extend_from_slice(&body);
            let k = hmac::Key::new(digest.hmac_algorithm(), &key.hmac(1)[..md]);
            assert_eq!(&out[9..9 + md], hmac::sign(&k, &msg).as_ref());

            let mut got = Vec::new();
            assert_eq!(server.unwrap(&out, &mut got), Ok(Some(stamp)));
            assert_eq!(got, body);
            // The sender cannot unwrap its own packet (other direction's key).
            assert_eq!(client.unwrap(&out, &mut got), Err(WrapError::BadHmac));
            // Server to client.
            let head2 = [0x40, 1, 2, 3, 4, 5, 6, 7, 8];
            let body2 = b"\x01\x00\x00\x00\x00\xa1\xa2\xa3\xa4\xa5\xa6\xa7\xa8\x00\x00\x00\x00";
            server.wrap(&head2, ReplayStamp { id: 2, time: 9 }, body2, &mut out);
            assert_eq!(
                client.unwrap(&out, &mut got),
                Ok(Some(ReplayStamp { id: 2, time: 9 }))
            );
            assert_eq!(got, body2);
            // Every flipped bit is rejected.
            for bit in 0..out.len() * 8 {
                let mut p = out.clone();
                p[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    client.unwrap(&p, &mut got),
                    Err(WrapError::BadHmac),
                    "{digest:?} bit {bit}"
                );
                assert!(got.is_empty());
            }
            for n in 0..9 + md + 8 {
                assert_eq!(client.unwrap(&out[..n], &mut got), Err(WrapError::TooShort));
            }
        }
    }

    /// Captured from Debian's `openvpn` 2.6.14 (`--client --tls-auth ta.key [dir] --auth X`)
    /// sending its HARD_RESET_CLIENT_V2 to a UDP listener; throwaway key.
    pub(crate) const LAB_TA_KEY: &str = "#
# 2048 bit OpenVPN static key
#
-----BEGIN OpenVPN Static key V1-----
8b714c4921b07c21d54f34f09c3879ba
9fe97bad9d446f7939d7b78442447f96
9e0cff5ff973510a90aa17ed010b8f2a
1e5045b8d36891108ce844538308f86c
efc79dc50ab593ce38441865c70bc31d
64032fbdfb978c56165adec4c454b42d
6a57b390c4b4dbda62b2d3a3406bd96b
c586f64f7b786b8f1cc40d2cef0075e9
577ba25a62551dde17a70d72985f5f8a
db6832f21bec27839067b927b5aae6d1
772a6efbc89cfb2d91cf2bb577df6bb2
30b1ad5eaa9e5d6bf4841bd7251ae92d
8c6dcfc13d07955da0ce94beb67986d2
8760bc1c9bc54916c86442af975f127e
a2911d581993a6e10d5cd5119806b867
7911c0fe0fe846c2fdef94a11c8244ff
-----END OpenVPN Static key V1-----
";

    #[test]
    fn tls_auth_vectors_from_openvpn_binary() {
        let key = StaticKey::parse(LAB_TA_KEY).expect("parse");
        // `openvpn --genkey secret` output is reproduced byte for byte.
        assert_eq!(key.to_pem(), LAB_TA_KEY);
        let cases = [
            // (digest, client direction, packet, stamp)
            (
                Digest::Sha256,
                Some(KeyDirection::Inverse),
                "385f0cc4eeeafff1c9e13e800b6600526aa498b50b44621c120acfbde18924aa2b403f963d6db75a17000000016b0258550000000000",
                ReplayStamp {
                    id: 1,
                    time: 0x6b02_5855,
                },
            ),
            (
                Digest::Sha1,
                None,
                "388bea807157fe43e97f2d04690070fa8b160b41c6e9f28d2ba7e781ce000000016b0258590000000000",
                ReplayStamp {
                    id: 1,
                    time: 0x6b02_5859,
                },
            ),
            (
                Digest::Sha512,
                Some(KeyDirection::Normal),
                "382878320135f4612d52fe6463762655407955e55144943bea4dcfca37e5225e518fc5d3bd1b6dca12c19c11e2778c16a9775a69e2499173bf21546d9fb030e5f0399e4d430206b0f5000000026b02585e0000000000",
                ReplayStamp {
                    id: 2,
                    time: 0x6b02_585e,
                },
            ),
        ];
        for (digest, client_dir, hex_packet, stamp) in cases {
            let packet = hex::decode(hex_packet).expect("hex");
            let server_dir = client_dir.map(|d| match d {
                KeyDirection::Normal => KeyDirection::Inverse,
                KeyDirection::Inverse => KeyDirection::Normal,
            });
            let server = ControlWrap::tls_auth(&key, digest, server_dir);
            let client = ControlWrap::tls_auth(&key, digest, client_dir);
            let mut body = Vec::new();
            assert_eq!(
                server.unwrap(&packet, &mut body),
                Ok(Some(stamp)),
                "{digest:?}"
            );
            assert_eq!(body, [0u8, 0, 0, 0, 0]);
            let mut out = Vec::new();
            client.wrap(&head_of(&packet), stamp, &body, &mut out);
            assert_eq!(out, packet, "{digest:?}");
            if digest == Digest::Sha1 {
                assert_eq!(packet.len(), 42);
            } else {
                // A peer with the same direction cannot read it.
                assert_eq!(client.unwrap(&packet, &mut body), Err(WrapError::BadHmac));
            }
        }
    }

    #[test]
    fn tls_auth_no_direction_uses_keys0_both_ways() {
        let key = random_key(4);
        let a = ControlWrap::tls_auth(&key, Digest::Sha256, None);
        let b = ControlWrap::tls_auth(&key, Digest::Sha256, None);
        let head = [0x38, 1, 1, 1, 1, 1, 1, 1, 1];
        let mut out = Vec::new();
        a.wrap(&head, ReplayStamp { id: 5, time: 6 }, b"hello", &mut out);
        let k = hmac::Key::new(hmac::HMAC_SHA256, &key.hmac(0)[..32]);
        let mut msg = ReplayStamp { id: 5, time: 6 }.to_bytes().to_vec();
        msg.extend_from_slice(&head);
        msg.extend_from_slice(b"hello");
        assert_eq!(&out[9..41], hmac::sign(&k, &msg).as_ref());
        let mut got = Vec::new();
        assert!(b.unwrap(&out, &mut got).is_ok());
        assert!(a.unwrap(&out, &mut got).is_ok());
        // A directional peer sending with keys[1] is rejected.
        let c = ControlWrap::tls_auth(&key, Digest::Sha256, Some(KeyDirection::Inverse));
        c.wrap(&head, ReplayStamp { id: 5, time: 6 }, b"hello", &mut out);
        assert_eq!(a.unwrap(&out, &mut got), Err(WrapError::BadHmac));
    }

    #[test]
    fn wrong_key_or_mode_fails() {
        let (client, _) = auth_pair(&random_key(5), Digest::Sha1);
        let (_, other_server) = auth_pair(&random_key(6), Digest::Sha1);
        let (_, sha256_server) = auth_pair(&random_key(5), Digest::Sha256);
        let mut out = Vec::new();
        client.wrap(
            &[0x38; 9],
            ReplayStamp { id: 1, time: 1 },
            &[0; 40],
            &mut out,
        );
        let mut got = Vec::new();
        assert_eq!(other_server.unwrap(&out, &mut got), Err(WrapError::BadHmac));
        assert_eq!(
            sha256_server.unwrap(&out, &mut got),
            Err(WrapError::BadHmac)
        );
        let tc_client = ControlWrap::tls_crypt(&random_key(5), Role::Client);
        let tc_server_other = ControlWrap::tls_crypt(&random_key(6), Role::Server);
        tc_client.wrap(
            &[0x38; 9],
            ReplayStamp { id: 1, time: 1 },
            &[0; 40],
            &mut out,
        );
        assert_eq!(
            tc_server_other.unwrap(&out, &mut got),
            Err(WrapError::BadTag)
        );
    }

    #[test]
    fn digest_names() {
        for (n, d) in [
            ("SHA1", Digest::Sha1),
            ("sha1", Digest::Sha1),
            ("SHA-1", Digest::Sha1),
            ("sha256", Digest::Sha256),
            ("SHA-256", Digest::Sha256),
            ("SHA2-256", Digest::Sha256),
            ("sha384", Digest::Sha384),
            ("Sha512", Digest::Sha512),
            ("sha-512", Digest::Sha512),
        ] {
            assert_eq!(Digest::from_name(n), Some(d), "{n}");
        }
        assert_eq!(Digest::from_name("MD5"), None);
        assert_eq!(Digest::from_name("none"), None);
        for d in [Digest::Sha1, Digest::Sha256, Digest::Sha384, Digest::Sha512] {
            assert_eq!(Digest::from_name(d.name()), Some(d));
            assert_eq!(
                hmac::sign(&hmac::Key::new(d.hmac_algorithm(), b"k"), b"m")
                    .as_ref()
                    .len(),
                d.len()
            );
        }
        assert_eq!(
            format!(
                "{:?}",
                ControlWrap::tls_auth(&random_key(1), Digest::Sha1, None)
            ),
            "ControlWrap::TlsAuth(SHA1, <keys redacted>)"
        );
    }

    #[test]
    fn control_wrap_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<ControlWrap>();
    }

    fn arb_wraps() -> impl Strategy<Value = (ControlWrap, ControlWrap)> {
        (any::<u64>(), 0usize..6).prop_map(|(seed, mode)| {
            let key = random_key(seed);
            match mode {
                0 => (ControlWrap::none(), ControlWrap::none()),
                1 => auth_pair(&key, Digest::Sha1),
                2 => auth_pair(&key, Digest::Sha256),
                3 => auth_pair(&key, Digest::Sha512),
                4 => (
                    ControlWrap::tls_auth(&key, Digest::Sha256, None),
                    ControlWrap::tls_auth(&key, Digest::Sha256, None),
                ),
                _ => (
                    ControlWrap::tls_crypt(&key, Role::Client),
                    ControlWrap::tls_crypt(&key, Role::Server),
                ),
            }
        })
    }

    proptest! {
        #[test]
        fn prop_wrap_round_trip(
            (client, server) in arb_wraps(),
            head in any::<[u8; 9]>(),
            id in any::<u32>(),
            time in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..1300),
        ) {
            let stamp = ReplayStamp { id, time };
            let expect_stamp = if client.is_none() { None } else { Some(stamp) };
            let mut out = Vec::new();
            let mut got = Vec::new();
            client.wrap(&head, stamp, &body, &mut out);
            prop_assert_eq!(out.len(), 9 + client.overhead() + body.len());
            prop_assert_eq!(&out[..9], &head[..]);
            prop_assert_eq!(server.unwrap(&out, &mut got), Ok(expect_stamp));
            prop_assert_eq!(&got, &body);
            server.wrap(&head, stamp, &body, &mut out);
            prop_assert_eq!(client.unwrap(&out, &mut got), Ok(expect_stamp));
            prop_assert_eq!(&got, &body);
        }

        #[test]
        fn prop_unwrap_garbage_never_panics(
            (client, server) in arb_wraps(),
            packet in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut got = Vec::new();
            let r = server.unwrap(&packet, &mut got);
            if server.is_none() {
                prop_assert_eq!(r.is_ok(), packet.len() >= 9);
            } else {
                prop_assert!(r.is_err());
                prop_assert!(got.is_empty());
            }
            let _ = client.unwrap(&packet, &mut got);
        }
    }
}
