//! Key method 2: the first TLS plaintext in each direction (fact sheet §5; OpenVPN
//! ssl.c:1962-2030 write_string/read_string, :2220 key_method_2_write, :2376
//! key_method_2_read).
//!
//! ```text
//! u32 0 | u8 key method (low 4 bits = 2) | [48] pre_master (client only)
//! [32] random1 | [32] random2 | str options | str username | str password | str peer_info
//! ```
//!
//! A `str` is a u16 length **including** the trailing NUL, then the bytes; the empty string
//! is `u16 0` and no bytes.

use std::fmt;

use crate::WireError;
use crate::cursor::Cursor;

/// KEY_METHOD_2: the only key method OpenVPN 2.6 accepts.
pub const KEY_METHOD_2: u8 = 2;
/// KEY_METHOD_MASK (ssl.h): the low bits of the key-method byte; the rest are flags.
pub const KEY_METHOD_MASK: u8 = 0x0F;
/// TLS_OPTIONS_LEN (ssl.h:69): the most bytes of the OCC options string, NUL included.
pub const TLS_OPTIONS_LEN: usize = 512;
/// USER_PASS_LEN (misc.h:65-70) of Debian's build (PKCS#11 enabled): the most bytes of a
/// username or password, NUL included. Longer ones earn `AUTH_FAILED`, not a protocol error,
/// so the codec does not enforce it; the engine does.
pub const USER_PASS_LEN: usize = 4096;
/// Size of the client's pre-master secret (used only by the legacy TLS1-PRF derivation).
pub const PRE_MASTER_LEN: usize = 48;
/// Size of each of the two random values.
pub const RANDOM_LEN: usize = 32;

/// A key-method-2 message.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMethod2 {
    /// Present exactly in the client's message.
    pub pre_master: Option<[u8; PRE_MASTER_LEN]>,
    pub random1: [u8; RANDOM_LEN],
    pub random2: [u8; RANDOM_LEN],
    /// The OCC options string (informational).
    pub options: String,
    /// Client: empty unless auth-user-pass or an auth-token. Server: empty.
    pub username: String,
    pub password: String,
    /// Client: `IV_*` lines (see [`crate::PeerInfo`]). Server: empty.
    pub peer_info: String,
}

impl fmt::Debug for KeyMethod2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMethod2")
            .field("pre_master", &self.pre_master.map(|_| "<redacted>"))
            .field("random1", &"<redacted>")
            .field("random2", &"<redacted>")
            .field("options", &self.options)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("peer_info", &self.peer_info)
            .finish()
    }
}

impl KeyMethod2 {
    /// Parses a message from the start of `data`; `from_client` selects whether a
    /// pre-master secret is present. Returns the message and the bytes it used: whatever
    /// follows (control messages, in a TLS stream that merged records) is the caller's.
    ///
    /// Like OpenVPN, the leading u32 and the key-method flag bits are not checked, and a
    /// string's last byte is taken as its NUL (the value stops at the first NUL). Unlike
    /// OpenVPN, all four strings must be present (every 2.x peer sends them), so
    /// [`WireError::Truncated`] reliably means "not all of it has arrived yet", and strings
    /// must be UTF-8 (no lossy mapping of passwords).
    pub fn parse(data: &[u8], from_client: bool) -> Result<(Self, usize), WireError> {
        let mut c = Cursor::new(data);
        // ssl.c key_method_2_read: "discard leading uint32".
        c.u32()?;
        let method = c.u8()?;
        if method & KEY_METHOD_MASK != KEY_METHOD_2 {
            return Err(WireError::BadKeyMethod(method));
        }
        let pre_master = if from_client { Some(c.array()?) } else { None };
        let random1 = c.array()?;
        let random2 = c.array()?;
        let options = read_string(&mut c, Some(TLS_OPTIONS_LEN))?;
        let username = read_string(&mut c, None)?;
        let password = read_string(&mut c, None)?;
        let peer_info = read_string(&mut c, None)?;
        let km = KeyMethod2 {
            pre_master,
            random1,
            random2,
            options,
            username,
            password,
            peer_info,
        };
        Ok((km, c.position()))
    }

    /// Appends the message.
    ///
    /// Strings stop at their first NUL (C semantics). Fails with
    /// [`WireError::StringTooLong`] when the options string exceeds [`TLS_OPTIONS_LEN`]
    /// with its NUL, or any string exceeds the u16 length field.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start = out.len();
        let r = self.write_inner(out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn write_inner(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        out.extend_from_slice(&0u32.to_be_bytes());
        out.push(KEY_METHOD_2);
        if let Some(pm) = &self.pre_master {
            out.extend_from_slice(pm);
        }
        out.extend_from_slice(&self.random1);
        out.extend_from_slice(&self.random2);
        write_string(out, &self.options, Some(TLS_OPTIONS_LEN))?;
        write_string(out, &self.username, None)?;
        write_string(out, &self.password, None)?;
        write_string(out, &self.peer_info, None)?;
        Ok(())
    }

    /// The number of bytes [`Self::write`] appends (strings cut at their first NUL).
    pub fn encoded_len(&self) -> usize {
        let s = |v: &str| {
            let n = c_str(v).len();
            if n == 0 { 2 } else { 2 + n + 1 }
        };
        4 + 1
            + if self.pre_master.is_some() {
                PRE_MASTER_LEN
            } else {
                0
            }
            + 2 * RANDOM_LEN
            + s(&self.options)
            + s(&self.username)
            + s(&self.password)
            + s(&self.peer_info)
    }
}

fn c_str(s: &str) -> &[u8] {
    let b = s.as_bytes();
    match b.iter().position(|&x| x == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// ssl.c write_string / write_empty_string.
fn write_string(out: &mut Vec<u8>, s: &str, max: Option<usize>) -> Result<(), WireError> {
    let b = c_str(s);
    if b.is_empty() {
        out.extend_from_slice(&0u16.to_be_bytes());
        return Ok(());
    }
    let len = b.len() + 1;
    let max = max
        .unwrap_or(usize::from(u16::MAX))
        .min(usize::from(u16::MAX));
    let len16 = u16::try_from(len)
        .ok()
        .filter(|_| len <= max)
        .ok_or(WireError::StringTooLong { len, max })?;
    out.extend_from_slice(&len16.to_be_bytes());
    out.extend_from_slice(b);
    out.push(0);
    Ok(())
}

/// ssl.c read_string: `len` counts the NUL; 0 is the empty string; the last byte is
/// overwritten with NUL, so the value is the bytes before the first NUL among `len - 1`.
fn read_string(c: &mut Cursor<'_>, max: Option<usize>) -> Result<String, WireError> {
    let len = usize::from(c.u16()?);
    if len == 0 {
        return Ok(String::new());
    }
    if let Some(max) = max
        && len > max
    {
        return Err(WireError::StringTooLong { len, max });
    }
    let raw = c.take(len)?;
    let raw = &raw[..len - 1];
    let raw = match raw.iter().position(|&x| x == 0) {
        Some(i) => &raw[..i],
        None => raw,
    };
    std::str::from_utf8(raw)
        .map(str::to_owned)
        .map_err(|_| WireError::BadString)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The stock 2.6.14 Linux client's message (fact sheet §5): 399 bytes.
    fn stock_client() -> KeyMethod2 {
        KeyMethod2 {
            pre_master: Some([0x11; 48]),
            random1: [0x22; 32],
            random2: [0x33; 32],
            options: "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-client".into(),
            username: String::new(),
            password: String::new(),
            peer_info: "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\nIV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n".into(),
        }
    }

    /// The stock server's message: 178 bytes.
    fn stock_server() -> KeyMethod2 {
        KeyMethod2 {
            pre_master: None,
            random1: [0x44; 32],
            random2: [0x55; 32],
            options: "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-server".into(),
            username: String::new(),
            password: String::new(),
            peer_info: String::new(),
        }
    }

    #[test]
    fn stock_sizes_and_round_trip() {
        for (km, from_client, size) in [(stock_client(), true, 399), (stock_server(), false, 178)] {
            let mut out = Vec::new();
            km.write(&mut out).expect("write");
            assert_eq!(out.len(), size);
            assert_eq!(km.encoded_len(), size);
            // A control message in the same read must be left for the caller.
            out.extend_from_slice(b"PUSH_REPLY,ping 10\0");
            let (back, used) = KeyMethod2::parse(&out, from_client).expect("parse");
            assert_eq!(used, size);
            assert_eq!(back, km);
        }
    }

    #[test]
    fn byte_layout() {
        let mut out = Vec::new();
        stock_server().write(&mut out).expect("write");
        assert_eq!(&out[..5], &[0, 0, 0, 0, 2]);
        // options length includes the NUL.
        let olen = u16::from_be_bytes([out[69], out[70]]) as usize;
        assert_eq!(olen, stock_server().options.len() + 1);
        assert_eq!(out[70 + olen], 0);
        // three empty strings.
        assert_eq!(&out[71 + olen..], &[0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn stock_quirks() {
        let mut out = Vec::new();
        stock_server().write(&mut out).expect("write");
        // Flag bits above the method and a non-zero leading u32 are ignored.
        out[0] = 0xFF;
        out[4] = 0x12;
        assert!(KeyMethod2::parse(&out, false).is_ok());
        out[4] = 0x01;
        assert_eq!(
            KeyMethod2::parse(&out, false),
            Err(WireError::BadKeyMethod(1))
        );
        // Truncated anywhere means "need more".
        out[4] = 0x02;
        for n in 0..out.len() {
            assert_eq!(
                KeyMethod2::parse(&out[..n], false),
                Err(WireError::Truncated),
                "n={n}"
            );
        }
        // The last byte of a string is its NUL whatever it holds; values stop at a NUL.
        let mut m = vec![0, 0, 0, 0, 2];
        m.extend_from_slice(&[0; 64]);
        m.extend_from_slice(&[0, 4, b'a', b'b', b'c', b'd']);
        m.extend_from_slice(&[0, 4, b'u', 0, b'x', 0]);
        m.extend_from_slice(&[0, 1, 0, 0, 0]);
        let (km, _) = KeyMethod2::parse(&m, false).expect("quirks");
        assert_eq!((km.options.as_str(), km.username.as_str()), ("abc", "u"));
    }

    #[test]
    fn rejects_long_options_and_bad_utf8() {
        let mut m = vec![0, 0, 0, 0, 2];
        m.extend_from_slice(&[0; 64]);
        m.extend_from_slice(&513u16.to_be_bytes());
        m.extend_from_slice(&[b'a'; 513]);
        assert_eq!(
            KeyMethod2::parse(&m, false),
            Err(WireError::StringTooLong {
                len: 513,
                max: TLS_OPTIONS_LEN
            })
        );
        let mut m = vec![0, 0, 0, 0, 2];
        m.extend_from_slice(&[0; 64]);
        m.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xfe, 0, 0, 0, 0, 0]);
        assert_eq!(KeyMethod2::parse(&m, false), Err(WireError::BadString));

        let mut km = stock_server();
        km.options = "x".repeat(512);
        let mut out = vec![9];
        assert_eq!(
            km.write(&mut out),
            Err(WireError::StringTooLong { len: 513, max: 512 })
        );
        assert_eq!(out, vec![9], "a failed write leaves the buffer as it was");
    }

    fn arb_str() -> impl Strategy<Value = String> {
        prop::string::string_regex("[^\\x00]{0,40}").expect("regex")
    }

    proptest! {
        #[test]
        fn round_trip(
            from_client in any::<bool>(),
            pm in any::<[u8; 48]>(),
            r1 in any::<[u8; 32]>(),
            r2 in any::<[u8; 32]>(),
            options in arb_str(),
            username in arb_str(),
            password in arb_str(),
            peer_info in arb_str(),
            tail in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            let km = KeyMethod2 {
                pre_master: from_client.then_some(pm),
                random1: r1, random2: r2, options, username, password, peer_info,
            };
            let mut out = Vec::new();
            km.write(&mut out).expect("write");
            prop_assert_eq!(out.len(), km.encoded_len());
            let n = out.len();
            out.extend_from_slice(&tail);
            let (back, used) = KeyMethod2::parse(&out, from_client).expect("parse");
            prop_assert_eq!(used, n);
            prop_assert_eq!(back, km);
        }

        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..300), fc in any::<bool>()) {
            let _ = KeyMethod2::parse(&data, fc);
        }
    }
}
