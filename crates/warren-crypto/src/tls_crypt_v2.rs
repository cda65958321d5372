//! tls-crypt-v2: per-client tls-crypt keys, each wrapped by the server key so that the
//! server needs no per-client state (fact sheet §1.8; ops sheet §7; OpenVPN tls_crypt.c,
//! doc/tls-crypt-v2.txt).
//!
//! ```text
//! server key file:  PEM "OpenVPN tls-crypt-v2 server key" = struct key (cipher[64] || hmac[64])
//!                   Ke = cipher[0..32], Ka = hmac[0..32]
//! client key file:  PEM "OpenVPN tls-crypt-v2 client key" = Kc (256, a tls-crypt key2) || WKc
//! WKc            =  T (32) || AES-256-CTR(Ke, IV = T[0..16], Kc || metadata) || len (u16 BE)
//! T              =  HMAC-SHA256(Ka, len || Kc || metadata)     len = total WKc length
//! metadata       =  type (1) || data: 0x00 USER (any bytes), 0x01 TIMESTAMP (u64 BE Unix time)
//! ```
//!
//! The client uses Kc as its tls-crypt key (client direction) and appends WKc, outside the
//! encryption, to its `P_CONTROL_HARD_RESET_CLIENT_V3` and `P_CONTROL_WKC_V1` packets. The
//! server reads WKc from the tail of such a packet ([`split_wkc`]), unwraps it with its key
//! ([`TlsCryptV2Server::unwrap_client_key`]) and then checks the rest of the packet with Kc.
//! Nothing here keeps state: a wrong server key or a forged WKc is an error for the caller
//! to count and drop.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::static_key::{STATIC_KEY_LEN, StaticKey};
use crate::wrap::{CryptKeys, HEAD_LEN, TLS_CRYPT_TAG_LEN};

/// PEM name of the server key (tls_crypt.c tls_crypt_v2_srv_pem_name).
pub const TLS_CRYPT_V2_SERVER_PEM_NAME: &str = "OpenVPN tls-crypt-v2 server key";
/// PEM name of a client key (tls_crypt.c tls_crypt_v2_cli_pem_name).
pub const TLS_CRYPT_V2_CLIENT_PEM_NAME: &str = "OpenVPN tls-crypt-v2 client key";
/// The server key: one `struct key`, `cipher[64] || hmac[64]`.
pub const TLS_CRYPT_V2_SERVER_KEY_LEN: usize = 128;
/// tls_crypt.h TLS_CRYPT_V2_MAX_WKC_LEN.
pub const TLS_CRYPT_V2_MAX_WKC_LEN: usize = 1024;
/// The length field at the end of WKc.
const LEN_FIELD: usize = 2;
/// tls_crypt.h TLS_CRYPT_V2_MAX_METADATA_LEN: what is left of the largest WKc after the
/// tag, Kc and the length (734 bytes, the type byte included).
pub const TLS_CRYPT_V2_MAX_METADATA_LEN: usize =
    TLS_CRYPT_V2_MAX_WKC_LEN - (TLS_CRYPT_TAG_LEN + STATIC_KEY_LEN + LEN_FIELD);
/// The shortest WKc that can hold Kc (no metadata at all).
const MIN_WKC_LEN: usize = TLS_CRYPT_TAG_LEN + STATIC_KEY_LEN + LEN_FIELD;
/// tls_crypt.h TLS_CRYPT_METADATA_TYPE_USER / _TIMESTAMP.
pub const METADATA_TYPE_USER: u8 = 0x00;
pub const METADATA_TYPE_TIMESTAMP: u8 = 0x01;

/// What a client key's WKc says about the client, as the server unwraps it.
#[derive(Clone, PartialEq, Eq)]
pub enum Metadata {
    /// Type 0x00: the bytes given at generation (`--genkey tls-crypt-v2-client FILE
    /// BASE64`), for the admin's own use (a serial number, a user name).
    User(Vec<u8>),
    /// Type 0x01, OpenVPN's default: when the key was made, in Unix seconds.
    Timestamp(u64),
    /// Anything else, as written (type byte first): another type, a TIMESTAMP that is not
    /// 8 bytes long, or no metadata at all. OpenVPN accepts these too.
    Other(Vec<u8>),
}

impl Metadata {
    /// Reads metadata bytes (type byte first).
    pub fn parse(bytes: &[u8]) -> Metadata {
        match bytes.split_first() {
            Some((&METADATA_TYPE_USER, data)) => Metadata::User(data.to_vec()),
            Some((&METADATA_TYPE_TIMESTAMP, data)) => match <[u8; 8]>::try_from(data) {
                Ok(t) => Metadata::Timestamp(u64::from_be_bytes(t)),
                Err(_) => Metadata::Other(bytes.to_vec()),
            },
            _ => Metadata::Other(bytes.to_vec()),
        }
    }

    /// USER metadata from the base64 text OpenVPN's `--genkey tls-crypt-v2-client FILE
    /// BASE64` takes (tls_crypt.c tls_crypt_v2_write_client_key_file).
    pub fn user_from_base64(text: &str) -> Result<Metadata, TlsCryptV2KeyError> {
        let data = BASE64
            .decode(text.trim())
            .map_err(|_| TlsCryptV2KeyError::MetadataBase64)?;
        let m = Metadata::User(data);
        m.check_len()?;
        Ok(m)
    }

    /// The bytes as they go into WKc (type byte first).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Metadata::User(d) => {
                let mut v = Vec::with_capacity(1 + d.len());
                v.push(METADATA_TYPE_USER);
                v.extend_from_slice(d);
                v
            }
            Metadata::Timestamp(t) => {
                let mut v = Vec::with_capacity(9);
                v.push(METADATA_TYPE_TIMESTAMP);
                v.extend_from_slice(&t.to_be_bytes());
                v
            }
            Metadata::Other(b) => b.clone(),
        }
    }

    /// The type byte (`None` for empty metadata): what `tls-crypt-v2-verify` scripts get
    /// as `metadata_type`.
    pub fn type_byte(&self) -> Option<u8> {
        match self {
            Metadata::User(_) => Some(METADATA_TYPE_USER),
            Metadata::Timestamp(_) => Some(METADATA_TYPE_TIMESTAMP),
            Metadata::Other(b) => b.first().copied(),
        }
    }

    /// The creation time of a TIMESTAMP key.
    pub fn timestamp(&self) -> Option<u64> {
        match self {
            Metadata::Timestamp(t) => Some(*t),
            _ => None,
        }
    }

    fn check_len(&self) -> Result<(), TlsCryptV2KeyError> {
        let len = self.to_bytes().len();
        if len > TLS_CRYPT_V2_MAX_METADATA_LEN {
            return Err(TlsCryptV2KeyError::MetadataTooLong {
                len,
                max: TLS_CRYPT_V2_MAX_METADATA_LEN,
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metadata::User(d) => write!(f, "User({:?})", String::from_utf8_lossy(d)),
            Metadata::Timestamp(t) => write!(f, "Timestamp({t})"),
            Metadata::Other(b) => write!(f, "Other({} bytes)", b.len()),
        }
    }
}

impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metadata::User(d) => write!(f, "user data {:?}", String::from_utf8_lossy(d)),
            Metadata::Timestamp(t) => write!(f, "created at Unix time {t}"),
            Metadata::Other(b) => match b.first() {
                Some(t) => write!(f, "type {t} ({} bytes)", b.len() - 1),
                None => f.write_str("none"),
            },
        }
    }
}

/// Why a tls-crypt-v2 key file could not be read or made. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlsCryptV2KeyError {
    #[error("no `-----BEGIN {expected}-----` line found")]
    MissingHeader { expected: &'static str },
    /// OpenVPN reads the first PEM block only, and its name must match.
    #[error("the first PEM block is `{found}`, expected `{expected}`")]
    WrongName {
        found: String,
        expected: &'static str,
    },
    #[error("no `-----END {expected}-----` line after the key data")]
    MissingFooter { expected: &'static str },
    #[error("the key data is not valid base64")]
    Base64,
    #[error("the key is {found} bytes, expected {expected}")]
    WrongLength {
        found: usize,
        expected: &'static str,
    },
    /// The part after Kc is not a wrapped key (its length field disagrees).
    #[error("the wrapped client key (WKc) is malformed: {0}")]
    BadWkc(WkcError),
    #[error("the metadata is not valid base64")]
    MetadataBase64,
    #[error("the metadata is {len} bytes with its type byte, at most {max} fit in a client key")]
    MetadataTooLong { len: usize, max: usize },
}

/// Why the WKc of a packet (or a client key) was refused. Count and drop; never log above
/// `trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WkcError {
    #[error("shorter than its length field says")]
    TooShort,
    #[error("longer than {TLS_CRYPT_V2_MAX_WKC_LEN} bytes")]
    TooLong,
    #[error("authentication tag mismatch (wrong server key, or forged)")]
    BadTag,
}

/// The 128-byte tls-crypt-v2 server key. Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TlsCryptV2ServerKey([u8; TLS_CRYPT_V2_SERVER_KEY_LEN]);

impl TlsCryptV2ServerKey {
    pub fn from_bytes(b: [u8; TLS_CRYPT_V2_SERVER_KEY_LEN]) -> Self {
        TlsCryptV2ServerKey(b)
    }

    pub fn as_bytes(&self) -> &[u8; TLS_CRYPT_V2_SERVER_KEY_LEN] {
        &self.0
    }

    /// A fresh random key (`openvpn --genkey tls-crypt-v2-server`).
    pub fn generate(rng: &mut dyn warren_core::Rng) -> Self {
        let mut k = TlsCryptV2ServerKey([0u8; TLS_CRYPT_V2_SERVER_KEY_LEN]);
        rng.fill(&mut k.0);
        k
    }

    /// Reads a server key file (or an inline `<tls-crypt-v2>` block) as OpenVPN does.
    pub fn parse(text: &str) -> Result<Self, TlsCryptV2KeyError> {
        let bytes = pem_decode(text, TLS_CRYPT_V2_SERVER_PEM_NAME)?;
        let arr: [u8; TLS_CRYPT_V2_SERVER_KEY_LEN] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| TlsCryptV2KeyError::WrongLength {
                    found: bytes.len(),
                    expected: "128",
                })?;
        Ok(TlsCryptV2ServerKey(arr))
    }

    /// The file `openvpn --genkey tls-crypt-v2-server` writes. The `String` holds the key:
    /// zeroize it when done.
    pub fn to_pem(&self) -> String {
        pem_encode(TLS_CRYPT_V2_SERVER_PEM_NAME, &self.0)
    }

    /// The keys that wrap and unwrap client keys.
    pub fn wrapper(&self) -> TlsCryptV2Server {
        TlsCryptV2Server {
            keys: CryptKeys::from_key(&self.0),
        }
    }
}

impl PartialEq for TlsCryptV2ServerKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TlsCryptV2ServerKey {}

impl fmt::Debug for TlsCryptV2ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsCryptV2ServerKey(<redacted>)")
    }
}

/// The server key ready to wrap and unwrap client keys (AES-256-CTR + HMAC-SHA256 keys,
/// set up once). Immutable, `Send + Sync`.
#[derive(Clone)]
pub struct TlsCryptV2Server {
    keys: CryptKeys,
}

impl fmt::Debug for TlsCryptV2Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsCryptV2Server(<redacted>)")
    }
}

impl TlsCryptV2Server {
    /// WKc for Kc and `metadata` (tls_crypt.c tls_crypt_v2_wrap_client_key).
    pub fn wrap_client_key(
        &self,
        kc: &StaticKey,
        metadata: &Metadata,
    ) -> Result<Vec<u8>, TlsCryptV2KeyError> {
        metadata.check_len()?;
        let meta = Zeroizing::new(metadata.to_bytes());
        let total = MIN_WKC_LEN + meta.len();
        // Checked above: total <= TLS_CRYPT_V2_MAX_WKC_LEN < 65536.
        let len = (total as u16).to_be_bytes();
        let mut plain = Zeroizing::new(Vec::with_capacity(STATIC_KEY_LEN + meta.len()));
        plain.extend_from_slice(kc.as_bytes());
        plain.extend_from_slice(&meta);
        let tag = self.keys.tag(&len, &plain);
        let tag = tag.as_ref();
        let mut wkc = Vec::with_capacity(total);
        wkc.extend_from_slice(tag);
        wkc.extend_from_slice(&plain);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&tag[..16]);
        self.keys.ctr(&iv, &mut wkc[TLS_CRYPT_TAG_LEN..]);
        wkc.extend_from_slice(&len);
        Ok(wkc)
    }

    /// Kc and the metadata from WKc (tls_crypt.c tls_crypt_v2_unwrap_client_key): the
    /// length field must equal the length of `wkc`, the tag must match (constant-time
    /// compare) and the plaintext must hold Kc.
    pub fn unwrap_client_key(&self, wkc: &[u8]) -> Result<(StaticKey, Metadata), WkcError> {
        if wkc.len() > TLS_CRYPT_V2_MAX_WKC_LEN {
            return Err(WkcError::TooLong);
        }
        if wkc.len() < MIN_WKC_LEN || wkc_len_field(wkc) != Some(wkc.len()) {
            return Err(WkcError::TooShort);
        }
        let (tag, rest) = wkc.split_at(TLS_CRYPT_TAG_LEN);
        let (ct, len) = rest.split_at(rest.len() - LEN_FIELD);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&tag[..16]);
        let mut plain = Zeroizing::new(ct.to_vec());
        self.keys.ctr(&iv, &mut plain);
        let expect = self.keys.tag(len, &plain);
        if !bool::from(expect.as_ref().ct_eq(tag)) {
            return Err(WkcError::BadTag);
        }
        let mut kc = Zeroizing::new([0u8; STATIC_KEY_LEN]);
        kc.copy_from_slice(&plain[..STATIC_KEY_LEN]);
        Ok((
            StaticKey::from_bytes(*kc),
            Metadata::parse(&plain[STATIC_KEY_LEN..]),
        ))
    }
}

/// The u16 length at the end of WKc.
fn wkc_len_field(b: &[u8]) -> Option<usize> {
    let n = b.len();
    let l = b.get(n.checked_sub(LEN_FIELD)?..)?;
    Some(usize::from(u16::from_be_bytes([l[0], l[1]])))
}

/// Splits a `P_CONTROL_HARD_RESET_CLIENT_V3` or `P_CONTROL_WKC_V1` packet into the
/// tls-crypt packet and the WKc appended to it: WKc is the last `len` bytes, `len` read from
/// the last 2 bytes (ssl_pkt.c read_control_auth, tls_crypt.c
/// tls_crypt_v2_extract_client_key). Fails if the packet cannot hold that much after its
/// 9-byte head; the WKc itself is checked by [`TlsCryptV2Server::unwrap_client_key`].
pub fn split_wkc(packet: &[u8]) -> Result<(&[u8], &[u8]), WkcError> {
    let len = wkc_len_field(packet).ok_or(WkcError::TooShort)?;
    if len > TLS_CRYPT_V2_MAX_WKC_LEN {
        return Err(WkcError::TooLong);
    }
    if len < MIN_WKC_LEN || packet.len() < HEAD_LEN + len {
        return Err(WkcError::TooShort);
    }
    Ok(packet.split_at(packet.len() - len))
}

/// A tls-crypt-v2 client key: Kc, the client's tls-crypt key, and WKc, the same key wrapped
/// by the server key (opaque to the client). Zeroized on drop; `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsCryptV2ClientKey {
    kc: StaticKey,
    wkc: Vec<u8>,
}

impl Drop for TlsCryptV2ClientKey {
    fn drop(&mut self) {
        // Kc zeroizes itself; WKc is ciphertext, but holds the metadata's length.
        self.wkc.zeroize();
    }
}

impl fmt::Debug for TlsCryptV2ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TlsCryptV2ClientKey(<redacted>, WKc {} bytes)",
            self.wkc.len()
        )
    }
}

impl TlsCryptV2ClientKey {
    /// A fresh client key wrapped by `server` (`openvpn --tls-crypt-v2 SERVER_KEY --genkey
    /// tls-crypt-v2-client FILE [BASE64]`; the default metadata is
    /// `Metadata::Timestamp(now)`).
    pub fn generate(
        server: &TlsCryptV2ServerKey,
        metadata: &Metadata,
        rng: &mut dyn warren_core::Rng,
    ) -> Result<Self, TlsCryptV2KeyError> {
        let kc = StaticKey::generate(rng);
        let wkc = server.wrapper().wrap_client_key(&kc, metadata)?;
        Ok(TlsCryptV2ClientKey { kc, wkc })
    }

    /// Reads a client key file (or an inline `<tls-crypt-v2>` block) as OpenVPN does, and
    /// checks that the part after Kc looks like a WKc (the client cannot check more: only
    /// the server can unwrap it).
    pub fn parse(text: &str) -> Result<Self, TlsCryptV2KeyError> {
        let bytes = pem_decode(text, TLS_CRYPT_V2_CLIENT_PEM_NAME)?;
        if bytes.len() < STATIC_KEY_LEN + MIN_WKC_LEN
            || bytes.len() > STATIC_KEY_LEN + TLS_CRYPT_V2_MAX_WKC_LEN
        {
            return Err(TlsCryptV2KeyError::WrongLength {
                found: bytes.len(),
                expected: "256 + a wrapped key of 290 to 1024",
            });
        }
        let (kc, wkc) = bytes.split_at(STATIC_KEY_LEN);
        if wkc_len_field(wkc) != Some(wkc.len()) {
            return Err(TlsCryptV2KeyError::BadWkc(WkcError::TooShort));
        }
        let mut arr = Zeroizing::new([0u8; STATIC_KEY_LEN]);
        arr.copy_from_slice(kc);
        Ok(TlsCryptV2ClientKey {
            kc: StaticKey::from_bytes(*arr),
            wkc: wkc.to_vec(),
        })
    }

    /// The file OpenVPN writes: PEM of `Kc || WKc`. The `String` holds the key: zeroize it
    /// when done.
    pub fn to_pem(&self) -> String {
        let mut all = Zeroizing::new(Vec::with_capacity(STATIC_KEY_LEN + self.wkc.len()));
        all.extend_from_slice(self.kc.as_bytes());
        all.extend_from_slice(&self.wkc);
        pem_encode(TLS_CRYPT_V2_CLIENT_PEM_NAME, &all)
    }

    /// Kc, used as a tls-crypt key with the client's direction.
    pub fn kc(&self) -> &StaticKey {
        &self.kc
    }

    /// WKc, appended to the V3 reset and to `P_CONTROL_WKC_V1`.
    pub fn wkc(&self) -> &[u8] {
        &self.wkc
    }
}

/// OpenSSL's PEM_write_bio with an empty header: armour lines and base64 in lines of 64.
fn pem_encode(name: &str, data: &[u8]) -> String {
    let b64 = Zeroizing::new(BASE64.encode(data));
    let mut s = String::with_capacity(b64.len() + b64.len() / 64 + 2 * name.len() + 40);
    s.push_str("-----BEGIN ");
    s.push_str(name);
    s.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END ");
    s.push_str(name);
    s.push_str("-----\n");
    s
}

/// OpenSSL's PEM_read_bio as OpenVPN uses it (crypto.c read_pem_key_file,
/// crypto_openssl.c crypto_pem_decode): lines before the first `-----BEGIN ` are skipped,
/// only that first block is read, and its name must be `name`. White space inside the
/// block is ignored (also `\r`); RFC 1421 header lines (`Name: value`) are skipped.
fn pem_decode(text: &str, name: &'static str) -> Result<Zeroizing<Vec<u8>>, TlsCryptV2KeyError> {
    let mut lines = text.lines();
    let found = loop {
        match lines.next() {
            None => return Err(TlsCryptV2KeyError::MissingHeader { expected: name }),
            Some(l) => {
                if let Some(rest) = l.trim_end().strip_prefix("-----BEGIN ") {
                    break rest.strip_suffix("-----").unwrap_or(rest);
                }
            }
        }
    };
    if found != name {
        return Err(TlsCryptV2KeyError::WrongName {
            found: found.chars().take(80).collect(),
            expected: name,
        });
    }
    let mut b64 = Zeroizing::new(String::with_capacity(text.len()));
    for l in lines {
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("-----END ") {
            if rest.strip_suffix("-----") != Some(name) {
                return Err(TlsCryptV2KeyError::MissingFooter { expected: name });
            }
            let bytes = BASE64
                .decode(b64.as_bytes())
                .map_err(|_| TlsCryptV2KeyError::Base64)?;
            return Ok(Zeroizing::new(bytes));
        }
        if l.contains(':') {
            // Proc-Type / DEK-Info style headers.
            continue;
        }
        b64.extend(l.chars().filter(|c| !c.is_whitespace()));
    }
    Err(TlsCryptV2KeyError::MissingFooter { expected: name })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrap::{ControlWrap, ReplayStamp, Role};
    use proptest::prelude::*;
    use warren_core::TestRng;

    /// openvpn-ops.md §7.5: throwaway lab keys from Debian's openvpn 2.6.14.
    const LAB_SERVER_KEY: &str = "-----BEGIN OpenVPN tls-crypt-v2 server key-----
YoN1JKo7O9mWcz2vvGSEI7NjtRT0JCdOxzbktig7Kd0wSz9VKUzTe4pz+FI31iKe
k3F5Ts7uxOAXRac8mD1TLct421DkXm8i8ABB9nui1Pcek6YFUAHbILnwl6dbABmF
xUrPyPf/qWq9gDENrVx0wEtbO52AnlCBqCpCOuBXo8Y=
-----END OpenVPN tls-crypt-v2 server key-----
";
    const LAB_CLIENT_KEY: &str = "-----BEGIN OpenVPN tls-crypt-v2 client key-----
TVs85oitjiH4iiJxwm4neqSWEqDbtLU9ZsrFX0k1Dwy09oGAdgVahVIWusKoeBL3
1+qkuCVqw1UeiCZ0SOYeOAdl03GdbQxoJHbtka3s2k/HurjxSqZVQrv6paBX0YXP
8wGeEdGDO45t3dkt+Qrqir3ON8SPUARfkEooyjeOFYMwUJNg2pDpSklYcA2jbf7P
4PC1iYuRjM65CedsxuBFT7IEyqDLcDrAlVBuafFaDG8EUQlKqvnbBySU/RjMIG0d
xrxvLfdvXMXHvSWdDeHbcO9vzeEDwri4/+NmdaAnRZbnOpdc96jiMmA1W9Ftzlpc
Q5frlPcz0DN62oT7yeig7zRM+Yc7K3lGDvb4xZZK3KA2ODJ01kE8PFPtGG0TxmLx
20IVqqmPQAOt0qeRVHmJVdIbEaHpm3jK5EnNzKJkfbK6mcorC+SAYb+XokxyeAK3
7XSL2Ops48bDzThTJjiYOQvWlmsuWKfClrdxZYvB6INLyBdBFkjBogog7PJsbm8/
6Bd3fLJwNSIi95aURQXefHi8LVMD/xiaZmwEoCgJ7yeqPugR2yNC9M1lLq3IvXFb
kZLOWLdBU3fj2q6OMwlSIL8RMoSQXcqhGqbVzX7imrUI3ydSLzxfUCOHtkpD25rz
cw2UCoo6SNIC+pfIkNyjukuF9VLNj824Wk/zfLODlC9wFz9odW+NoBPHvdpEYOn8
9fkzErxlyuIwahU13q6NW1IXYQ9JOPnvEJP2/AEu
-----END OpenVPN tls-crypt-v2 client key-----
";

    /// Debian's openvpn 2.6.14 client with [`LAB_CLIENT_KEY`] talking to the stock server
    /// with [`LAB_SERVER_KEY`] (captured on loopback in a namespace): its V3 reset, the
    /// server's stateless reply and its P_CONTROL_WKC_V1 (ClientHello + WKc).
    const STOCK_V3_RESET: &[&str] = &[
        "50d9d17dc524aa8d3a0f0000016b11a213ec85de89e1fdb4525ec37cfbb7728ab121c97523c6df388cf69fcc",
        "636fd3f800c9424b6b2d344cf9873b2b79460ef6f8c5964adca036383274d6413c3c53ed186d13c662f1db42",
        "15aaa98f4003add2a79154798955d21b11a1e99b78cae449cdcca2647db2ba99ca2b0be48061bf97a24c7278",
        "02b7ed748bd8ea6ce3c6c3cd3853263898390bd6966b2e58a7c296b771658bc1e8834bc817411648c1a20a20",
        "ecf26c6e6f3fe817777cb270352222f796944505de7c78bc2d5303ff189a666c04a02809ef27aa3ee811db23",
        "42f4cd652eadc8bd715b9192ce58b7415377e3daae8e33095220bf113284905dcaa11aa6d5cd7ee29ab508df",
        "27522f3c5f502387b64a43db9af3730d940a8a3a48d202fa97c890dca3ba4b85f552cd8fcdb85a4ff37cb383",
        "942f70173f68756f8da013c7bdda4460e9fcf5f93312bc65cae2306a1535deae8d5b5217610f4938f9ef1093",
        "f6fc012e",
    ];
    const STOCK_SERVER_RESET: &str = "4041e03c229235ec86000000016b11a21351f28e73c1efc267bf94c62df8ab346c044ef02c24e5edfacba7930e4b105ffc9d9c3660c89159ff19a9e9e1a0831d6d2cdf89f9b95dac";
    const STOCK_WKC_V1: &[&str] = &[
        "58d9d17dc524aa8d3a0f0000026b11a213d6228075c134ee915b01dfb9d9f6d0dc4d5adc1a616c26fa64ae99",
        "3c1e4153fa2e5ba13fb2e554aeba40a7f042eb45663f32cabdc849af38cf426c32002e232a87635e5fdb71c3",
        "0d19f02c32dcd465b76c0ea51d489ab35332f5bd4dcc080c89f6df3a0b5d2aa140397ffc8adcdf1bb11f7d92",
        "28ac2617e17296ae45f7edfcc98479e557e05dcaf644d083293d8648bc9b1bd10758fe1ff2bc38c348f100c0",
        "8d2356a59f5bebb0a3feafa20a42306d90578f7d120144225fdb0123e8fe8a8fe2e09ae2ccaa0c862eb5951d",
        "7d88f0fcf85352f0dae0535576083512847bcaf8656452bd249b33c0e783dd82e6552a47d29d4da9f6715084",
        "f6d5255973646b9cc35f5ea19a275d6187c07e782cd3397a4ddbf06081d522f6edf666fc8512d8914c212fd9",
        "5d75eaa0190fe418d95e7af8e468aa41c6137471edfc5b4c3137ee681e35f1a2dad068344cf9873b2b79460e",
        "f6f8c5964adca036383274d6413c3c53ed186d13c662f1db4215aaa98f4003add2a79154798955d21b11a1e9",
        "9b78cae449cdcca2647db2ba99ca2b0be48061bf97a24c727802b7ed748bd8ea6ce3c6c3cd3853263898390b",
        "d6966b2e58a7c296b771658bc1e8834bc817411648c1a20a20ecf26c6e6f3fe817777cb270352222f7969445",
        "05de7c78bc2d5303ff189a666c04a02809ef27aa3ee811db2342f4cd652eadc8bd715b9192ce58b7415377e3",
        "daae8e33095220bf113284905dcaa11aa6d5cd7ee29ab508df27522f3c5f502387b64a43db9af3730d940a8a",
        "3a48d202fa97c890dca3ba4b85f552cd8fcdb85a4ff37cb383942f70173f68756f8da013c7bdda4460e9fcf5",
        "f93312bc65cae2306a1535deae8d5b5217610f4938f9ef1093f6fc012e",
    ];

    /// Made by `openvpn --genkey tls-crypt-v2-server` / `--genkey tls-crypt-v2-client`
    /// (Debian 2.6.14) with the default TIMESTAMP metadata; throwaway.
    const STOCK_SERVER_KEY: &str = "-----BEGIN OpenVPN tls-crypt-v2 server key-----
tXvPEEUdhW5m5FPI/GFxVtFYkDO5ZePmxxpIKSs65khPcbFsebWPQ20xtprwHWo/
XtNRLriimOzV6bQEKQl8ogbDkXG2hpt3y2fiVkSBgqyQoRt3lcYmMPDbWEhmFca5
VqPn6O/shir3nj4ROpzBU/diXwqDSk3PQrNoeaYzKkQ=
-----END OpenVPN tls-crypt-v2 server key-----
";
    const STOCK_CLIENT_KEY: &str = "-----BEGIN OpenVPN tls-crypt-v2 client key-----
IGeF9Es667bI0k1CrxDS1O1EOC4LJfvT8wQZpOqRSEMQW4oZ9AiuiqHrCv8KHLPZ
HXLfsAxHUXa39jH08XSublSm6N1ANcFNoJlCnQ6UWlMu4YcT4NMt/rlJ0xRNQjYY
FwF1DUrraI7SLIGWE5Rwc0YCfxlZLqP+1+6Rudt5GoX1T3azEaTjU7ywkIruHDwG
VSd5GYDPQKseT86BmjkCqpWyKDW0oQlFahWZaRAEVUIhlzXkKR3FGShr20gumsjk
eKfRj807Ur6idCft/64dd7Rah6PVa4Avo7SO4GUY5EQ1X2sgM3S1v6zsjUvfJeFH
+S4KjvOAIhzHfNWOjYYPryib3KTBumzekmUHweyKqKJ3yWjH9O9QuyyQSgg29woB
qCaa7MXbibcJR6ll06MSehtgO5rPvoXINdkhsbSTVL7IsLsy5AHw/V5CmoPo99B4
uivhtUWMgH+p5kv9IdqDvKHE6v/hsDDIfDeKEKPFrcNWIyUfCKhOecd/7L+f0B/A
IqppeG95/o1ZEkv1alePUJgij7bKWIXkNWPKQhkX10cW3CYuV6h+MACfoM0mYCMT
SioLut9TWEcY07yrE801tznT5hj/GKRRG8z7FUJn9hVjajorgyUdhbywbCXxRUb+
V2pPh4FjVlwkBrrzhDWhKDy6V3vXKin396CMSSuWgyvq/guxtHq4/+ESu5KOKV/A
R+hbyuSMRChMAu1apCmMb9bvyfccyvgFOQEr
-----END OpenVPN tls-crypt-v2 client key-----
";

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }

    fn lab_server() -> TlsCryptV2ServerKey {
        TlsCryptV2ServerKey::parse(LAB_SERVER_KEY).expect("server key")
    }

    #[test]
    fn lab_keys_load_and_unwrap() {
        let server = lab_server();
        // Byte-exact round trip of OpenVPN's own files.
        assert_eq!(server.to_pem(), LAB_SERVER_KEY);
        let client = TlsCryptV2ClientKey::parse(LAB_CLIENT_KEY).expect("client key");
        assert_eq!(client.to_pem(), LAB_CLIENT_KEY);
        assert_eq!(client.wkc().len(), 302);
        assert_eq!(&client.wkc()[300..], &[0x01, 0x2e]);
        assert_eq!(&client.kc().as_bytes()[..8], &h("4d5b3ce688ad8e21")[..]);
        assert_eq!(&client.wkc()[..8], &h("344cf9873b2b7946")[..]);
        let (kc, meta) = server
            .wrapper()
            .unwrap_client_key(client.wkc())
            .expect("unwraps");
        assert_eq!(&kc, client.kc());
        assert_eq!(meta, Metadata::User(b"serial=1234".to_vec()));
        assert_eq!(meta.to_bytes(), h("0073657269616c3d31323334"));
        assert_eq!(meta.type_byte(), Some(0));
        // Wrapping Kc with the same metadata again gives OpenVPN's WKc (SIV: deterministic).
        let again = server.wrapper().wrap_client_key(&kc, &meta).expect("wraps");
        assert_eq!(again, client.wkc());
    }

    #[test]
    fn stock_client_packets_unwrap() {
        let server = lab_server().wrapper();
        let client = TlsCryptV2ClientKey::parse(LAB_CLIENT_KEY).expect("client key");
        let v3 = h(&STOCK_V3_RESET.concat());
        let (pkt, wkc) = split_wkc(&v3).expect("split");
        assert_eq!(wkc, client.wkc());
        assert_eq!(pkt.len(), 54);
        let (kc, meta) = server.unwrap_client_key(wkc).expect("unwrap");
        assert_eq!(meta, Metadata::User(b"serial=1234".to_vec()));
        let srv = ControlWrap::tls_crypt(&kc, Role::Server);
        let cli = ControlWrap::tls_crypt(&kc, Role::Client);
        let mut body = Vec::new();
        let stamp = srv
            .unwrap(pkt, &mut body)
            .expect("tls-crypt")
            .expect("stamp");
        // Early negotiation: the wrap packet id starts at 0x0f000000 (fact sheet §3.3).
        assert_eq!(stamp.id, 0x0f00_0001);
        assert_eq!(body, [0, 0, 0, 0, 0]);
        // The stock server's reply: acks msg-id 0 of the client's session, RESEND_WKC.
        let reply = h(STOCK_SERVER_RESET);
        assert_eq!(reply[0], 0x40);
        let stamp = cli
            .unwrap(&reply, &mut body)
            .expect("reply")
            .expect("stamp");
        assert_eq!(stamp.id, 1);
        assert_eq!(body[..5], [1, 0, 0, 0, 0]);
        assert_eq!(body[5..13], v3[1..9]);
        assert_eq!(body[13..], [0, 0, 0, 0, 0, 1, 0, 2, 0, 1]);
        // Then msg-id 1 as P_CONTROL_WKC_V1: ACK of the reply, ClientHello, WKc again.
        let wkc_v1 = h(&STOCK_WKC_V1.concat());
        assert_eq!(wkc_v1[0], 0x58);
        let (pkt, wkc) = split_wkc(&wkc_v1).expect("split");
        assert_eq!(wkc, client.wkc());
        let stamp = srv
            .unwrap(pkt, &mut body)
            .expect("tls-crypt")
            .expect("stamp");
        assert_eq!(stamp.id, 0x0f00_0002);
        assert_eq!(body[..5], [1, 0, 0, 0, 0]);
        assert_eq!(body[5..13], reply[1..9]);
        assert_eq!(body[13..17], [0, 0, 0, 1]);
        assert_eq!(body[17..19], [0x16, 0x03], "a TLS handshake record");
    }

    #[test]
    fn stock_timestamp_key_unwraps() {
        let server = TlsCryptV2ServerKey::parse(STOCK_SERVER_KEY).expect("server key");
        assert_eq!(server.to_pem(), STOCK_SERVER_KEY);
        let client = TlsCryptV2ClientKey::parse(STOCK_CLIENT_KEY).expect("client key");
        assert_eq!(client.to_pem(), STOCK_CLIENT_KEY);
        assert_eq!(client.wkc().len(), 299);
        let (kc, meta) = server
            .wrapper()
            .unwrap_client_key(client.wkc())
            .expect("unwraps");
        assert_eq!(&kc, client.kc());
        assert!(
            matches!(meta, Metadata::Timestamp(t) if t > 1_700_000_000),
            "{meta:?}"
        );
        assert_eq!(meta.type_byte(), Some(METADATA_TYPE_TIMESTAMP));
        // The lab key's client does not unwrap with this server key.
        let lab = TlsCryptV2ClientKey::parse(LAB_CLIENT_KEY).expect("client key");
        assert_eq!(
            server.wrapper().unwrap_client_key(lab.wkc()).map(|_| ()),
            Err(WkcError::BadTag)
        );
    }

    #[test]
    fn tampered_or_foreign_wkc_is_refused() {
        let server = lab_server().wrapper();
        let client = TlsCryptV2ClientKey::parse(LAB_CLIENT_KEY).expect("client key");
        let wkc = client.wkc();
        for bit in 0..(wkc.len() - 2) * 8 {
            let mut w = wkc.to_vec();
            w[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                server.unwrap_client_key(&w).map(|_| ()),
                Err(WkcError::BadTag),
                "bit {bit}"
            );
        }
        // A wrong length field.
        let mut w = wkc.to_vec();
        let n = w.len();
        w[n - 1] ^= 1;
        assert_eq!(
            server.unwrap_client_key(&w).map(|_| ()),
            Err(WkcError::TooShort)
        );
        // Another server key.
        let other = TlsCryptV2ServerKey::generate(&mut TestRng::seed(9)).wrapper();
        assert_eq!(
            other.unwrap_client_key(wkc).map(|_| ()),
            Err(WkcError::BadTag)
        );
        assert_eq!(
            server.unwrap_client_key(&[0u8; 1025]).map(|_| ()),
            Err(WkcError::TooLong)
        );
        assert_eq!(
            server.unwrap_client_key(&[]).map(|_| ()),
            Err(WkcError::TooShort)
        );
    }

    #[test]
    fn generated_keys_round_trip_with_default_timestamp() {
        let mut rng = TestRng::seed(3);
        let server = TlsCryptV2ServerKey::generate(&mut rng);
        let pem = server.to_pem();
        assert_eq!(pem.lines().count(), 5);
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        assert_eq!(TlsCryptV2ServerKey::parse(&pem).expect("parse"), server);
        let meta = Metadata::Timestamp(1_796_281_144);
        let client = TlsCryptV2ClientKey::generate(&server, &meta, &mut rng).expect("gen");
        // ops sheet §7.1: 555 bytes (Kc + a 299-byte WKc), 14 lines with the armour.
        assert_eq!(client.wkc().len(), 299);
        let pem = client.to_pem();
        assert_eq!(pem.lines().count(), 14);
        let back = TlsCryptV2ClientKey::parse(&pem).expect("parse");
        assert_eq!(back, client);
        let (kc, m) = server
            .wrapper()
            .unwrap_client_key(back.wkc())
            .expect("unwrap");
        assert_eq!(&kc, client.kc());
        assert_eq!(m, meta);
        assert_eq!(m.timestamp(), Some(1_796_281_144));
        assert_eq!(m.to_bytes(), h("01000000006b111338"));
        assert_eq!(
            format!("{client:?}"),
            "TlsCryptV2ClientKey(<redacted>, WKc 299 bytes)"
        );
        assert_eq!(format!("{server:?}"), "TlsCryptV2ServerKey(<redacted>)");
    }

    #[test]
    fn pem_reading_follows_openssl() {
        // Comments before the block, CRLF, trailing text.
        let text = format!(
            "# a comment\r\nsome words\r\n{}trailing\n",
            LAB_SERVER_KEY.replace('\n', "\r\n")
        );
        assert_eq!(
            TlsCryptV2ServerKey::parse(&text).expect("parse"),
            lab_server()
        );
        // The first block is the only one read.
        let two = format!("{LAB_CLIENT_KEY}{LAB_SERVER_KEY}");
        assert_eq!(
            TlsCryptV2ServerKey::parse(&two),
            Err(TlsCryptV2KeyError::WrongName {
                found: TLS_CRYPT_V2_CLIENT_PEM_NAME.into(),
                expected: TLS_CRYPT_V2_SERVER_PEM_NAME
            })
        );
        assert!(matches!(
            TlsCryptV2ClientKey::parse(LAB_SERVER_KEY),
            Err(TlsCryptV2KeyError::WrongName { .. })
        ));
        assert_eq!(
            TlsCryptV2ServerKey::parse("nothing"),
            Err(TlsCryptV2KeyError::MissingHeader {
                expected: TLS_CRYPT_V2_SERVER_PEM_NAME
            })
        );
        let cut = LAB_SERVER_KEY.replace("-----END OpenVPN tls-crypt-v2 server key-----\n", "");
        assert!(matches!(
            TlsCryptV2ServerKey::parse(&cut),
            Err(TlsCryptV2KeyError::MissingFooter { .. })
        ));
        let bad = LAB_SERVER_KEY.replacen("YoN1", "Y*N1", 1);
        assert_eq!(
            TlsCryptV2ServerKey::parse(&bad),
            Err(TlsCryptV2KeyError::Base64)
        );
        // A static key file is not a tls-crypt-v2 key.
        let sk = StaticKey::generate(&mut TestRng::seed(1)).to_pem();
        assert!(matches!(
            TlsCryptV2ServerKey::parse(&sk),
            Err(TlsCryptV2KeyError::WrongName { .. })
        ));
        // A client key whose WKc length disagrees.
        let mut bytes = BASE64
            .decode(
                LAB_CLIENT_KEY
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .expect("b64");
        let n = bytes.len();
        bytes[n - 1] ^= 4;
        let pem = pem_encode(TLS_CRYPT_V2_CLIENT_PEM_NAME, &bytes);
        assert_eq!(
            TlsCryptV2ClientKey::parse(&pem),
            Err(TlsCryptV2KeyError::BadWkc(WkcError::TooShort))
        );
        let short = pem_encode(TLS_CRYPT_V2_CLIENT_PEM_NAME, &bytes[..300]);
        assert!(matches!(
            TlsCryptV2ClientKey::parse(&short),
            Err(TlsCryptV2KeyError::WrongLength { found: 300, .. })
        ));
    }

    #[test]
    fn metadata_limits_and_base64() {
        let m = Metadata::user_from_base64("c2VyaWFsPTEyMzQ=").expect("b64");
        assert_eq!(m, Metadata::User(b"serial=1234".to_vec()));
        assert_eq!(m.to_string(), "user data \"serial=1234\"");
        assert_eq!(
            Metadata::user_from_base64("not base64!"),
            Err(TlsCryptV2KeyError::MetadataBase64)
        );
        let max = Metadata::User(vec![7; TLS_CRYPT_V2_MAX_METADATA_LEN - 1]);
        let server = lab_server();
        let mut rng = TestRng::seed(5);
        let k = TlsCryptV2ClientKey::generate(&server, &max, &mut rng).expect("max fits");
        assert_eq!(k.wkc().len(), TLS_CRYPT_V2_MAX_WKC_LEN);
        let (_, back) = server
            .wrapper()
            .unwrap_client_key(k.wkc())
            .expect("unwraps");
        assert_eq!(back, max);
        let over = Metadata::User(vec![7; TLS_CRYPT_V2_MAX_METADATA_LEN]);
        assert_eq!(
            TlsCryptV2ClientKey::generate(&server, &over, &mut rng),
            Err(TlsCryptV2KeyError::MetadataTooLong { len: 735, max: 734 })
        );
        assert_eq!(Metadata::parse(&[1, 2, 3]), Metadata::Other(vec![1, 2, 3]));
        assert_eq!(Metadata::parse(&[]), Metadata::Other(vec![]));
        assert_eq!(Metadata::parse(&[]).type_byte(), None);
        assert_eq!(Metadata::parse(&[9, 1]).to_string(), "type 9 (1 bytes)");
    }

    #[test]
    fn split_wkc_takes_the_tail() {
        let client = TlsCryptV2ClientKey::parse(LAB_CLIENT_KEY).expect("client key");
        let wrap = ControlWrap::tls_crypt(client.kc(), Role::Client);
        let mut pkt = Vec::new();
        let head = [0x50, 1, 2, 3, 4, 5, 6, 7, 8];
        let stamp = ReplayStamp {
            id: 0x0f00_0001,
            time: 5,
        };
        wrap.wrap(&head, stamp, &[0, 0, 0, 0, 0], &mut pkt);
        let inner = pkt.clone();
        pkt.extend_from_slice(client.wkc());
        let (p, w) = split_wkc(&pkt).expect("split");
        assert_eq!(p, &inner[..]);
        assert_eq!(w, client.wkc());
        let (kc, _) = lab_server().wrapper().unwrap_client_key(w).expect("unwrap");
        let server_wrap = ControlWrap::tls_crypt(&kc, Role::Server);
        let mut body = Vec::new();
        assert_eq!(server_wrap.unwrap(p, &mut body), Ok(Some(stamp)));
        // Too short for its length field, or a field beyond the maximum.
        assert_eq!(split_wkc(&pkt[pkt.len() - 310..]), Err(WkcError::TooShort));
        assert_eq!(split_wkc(&[0x50]), Err(WkcError::TooShort));
        assert_eq!(split_wkc(&[0u8; 2000][..]), Err(WkcError::TooShort));
        let mut big = vec![0u8; 2000];
        big[1998] = 0x04;
        big[1999] = 0x01;
        assert_eq!(split_wkc(&big), Err(WkcError::TooLong));
    }

    proptest! {
        #[test]
        fn prop_unwrap_garbage_never_panics(
            packet in proptest::collection::vec(any::<u8>(), 0..1400),
        ) {
            let server = lab_server().wrapper();
            if let Ok((_, w)) = split_wkc(&packet) {
                prop_assert!(server.unwrap_client_key(w).is_err());
            }
            prop_assert!(server.unwrap_client_key(&packet).is_err());
        }

        #[test]
        fn prop_wrap_round_trip(
            seed in any::<u64>(),
            data in proptest::collection::vec(any::<u8>(), 0..733),
        ) {
            let mut rng = TestRng::seed(seed);
            let server = TlsCryptV2ServerKey::generate(&mut rng);
            let meta = Metadata::User(data);
            let k = TlsCryptV2ClientKey::generate(&server, &meta, &mut rng).expect("fits");
            let back = TlsCryptV2ClientKey::parse(&k.to_pem()).expect("parse");
            prop_assert_eq!(&back, &k);
            let (kc, m) = server.wrapper().unwrap_client_key(back.wkc()).expect("unwrap");
            prop_assert_eq!(&kc, k.kc());
            prop_assert_eq!(m, meta);
        }
    }
}
