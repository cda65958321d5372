//! OpenVPN "Static key V1" files: the 256-byte keys behind `tls-auth`, `tls-crypt` and
//! `--secret` (fact sheet §1.7).
//!
//! The file is hex between two armour lines (not base64). The 256 bytes are two
//! `struct key { cipher[64]; hmac[64]; }` back to back (OpenVPN crypto.h `struct key2`).

use std::fmt;

use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// OpenVPN crypto.c:1162 `static_key_head`.
pub const STATIC_KEY_HEADER: &str = "-----BEGIN OpenVPN Static key V1-----";
/// OpenVPN crypto.c:1163 `static_key_foot`.
pub const STATIC_KEY_FOOTER: &str = "-----END OpenVPN Static key V1-----";

/// Length of a static key: `struct key2` = 2 × (64 cipher + 64 hmac).
pub const STATIC_KEY_LEN: usize = 256;
/// Length of one `struct key` slot (cipher + hmac).
const SLOT_LEN: usize = 128;
/// Length of the cipher half and of the hmac half of a slot.
const HALF_LEN: usize = 64;

/// Why a static key file could not be read. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StaticKeyError {
    #[error("no `{STATIC_KEY_HEADER}` line found")]
    MissingHeader,
    #[error("no `{STATIC_KEY_FOOTER}` line after the key data")]
    MissingFooter,
    /// A line inside the block starts with `-` but is not the footer.
    #[error("line {line}: malformed footer line")]
    BadFooter { line: usize },
    /// A character that is neither a hex digit nor white space inside the block
    /// (fatal in OpenVPN too, crypto.c read_key_file).
    #[error("line {line}: invalid character {ch:?} in key data")]
    InvalidChar { line: usize, ch: char },
    /// An odd number of hex digits.
    #[error("key data has an odd number of hex digits")]
    OddDigits,
    /// The block does not hold exactly 256 bytes.
    #[error("key data is {found} bytes, expected {STATIC_KEY_LEN}")]
    WrongLength { found: usize },
}

/// A 256-byte OpenVPN static key (`struct key2`): `keys[0] = cipher[64] || hmac[64]`,
/// `keys[1] = cipher[64] || hmac[64]`.
///
/// Zeroized on drop; `Debug` never prints the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StaticKey([u8; STATIC_KEY_LEN]);

impl StaticKey {
    pub fn from_bytes(b: [u8; STATIC_KEY_LEN]) -> Self {
        StaticKey(b)
    }

    pub fn as_bytes(&self) -> &[u8; STATIC_KEY_LEN] {
        &self.0
    }

    /// Parses the text of a static key file (or an inline `<tls-crypt>` block).
    ///
    /// Like OpenVPN's crypto.c read_key_file: text before the header line is ignored,
    /// white space (including `\r`) inside the block is ignored, any other non-hex
    /// character is an error, and text after the footer is ignored. Unlike OpenVPN we
    /// require exactly 256 bytes (OpenVPN silently accepts a 128-byte single key and
    /// ignores extra digits) and an even number of digits.
    pub fn parse(text: &str) -> Result<Self, StaticKeyError> {
        let mut lines = text.lines().enumerate();
        // Find the header line. OpenVPN matches it at the start of a line; we also
        // tolerate surrounding white space (indented inline blocks).
        loop {
            match lines.next() {
                None => return Err(StaticKeyError::MissingHeader),
                Some((_, l)) if l.trim() == STATIC_KEY_HEADER => break,
                Some(_) => {}
            }
        }

        let mut out = Zeroizing::new([0u8; STATIC_KEY_LEN]);
        let mut count = 0usize; // bytes decoded (may exceed 256: then WrongLength)
        let mut high: Option<u8> = None; // pending high nibble
        for (idx, line) in lines {
            let line_no = idx + 1;
            let trimmed = line.trim();
            if trimmed.starts_with('-') {
                if trimmed != STATIC_KEY_FOOTER {
                    return Err(StaticKeyError::BadFooter { line: line_no });
                }
                if high.is_some() {
                    return Err(StaticKeyError::OddDigits);
                }
                if count != STATIC_KEY_LEN {
                    return Err(StaticKeyError::WrongLength { found: count });
                }
                return Ok(StaticKey(*out));
            }
            for ch in line.chars() {
                if ch.is_whitespace() {
                    continue;
                }
                let Some(v) = ch.to_digit(16) else {
                    return Err(StaticKeyError::InvalidChar { line: line_no, ch });
                };
                // `to_digit(16)` is < 16, so this cast is lossless.
                let v = v as u8;
                match high.take() {
                    None => high = Some(v),
                    Some(h) => {
                        if let Some(slot) = out.get_mut(count) {
                            *slot = (h << 4) | v;
                        }
                        count += 1;
                    }
                }
            }
        }
        Err(StaticKeyError::MissingFooter)
    }

    /// The file format `openvpn --genkey secret` writes (crypto.c write_key_file):
    /// a three-line comment header, the armour lines, 16 bytes per line in lowercase hex.
    ///
    /// The returned `String` holds the key: the caller should zeroize it when done
    /// (it is allocated once at its final size, so no partial copies are left behind).
    pub fn to_pem(&self) -> String {
        const COMMENT: &str = "#\n# 2048 bit OpenVPN static key\n#\n";
        let len = COMMENT.len()
            + STATIC_KEY_HEADER.len()
            + 1
            + (STATIC_KEY_LEN / 16) * 33
            + STATIC_KEY_FOOTER.len()
            + 1;
        let mut s = String::with_capacity(len);
        s.push_str(COMMENT);
        s.push_str(STATIC_KEY_HEADER);
        s.push('\n');
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for line in self.0.chunks(16) {
            for b in line {
                s.push(char::from(HEX[usize::from(b >> 4)]));
                s.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
            s.push('\n');
        }
        s.push_str(STATIC_KEY_FOOTER);
        s.push('\n');
        debug_assert_eq!(s.len(), len);
        s
    }

    /// A fresh random key (what `openvpn --genkey secret` does).
    pub fn generate(rng: &mut dyn warren_core::Rng) -> Self {
        let mut k = StaticKey([0u8; STATIC_KEY_LEN]);
        rng.fill(&mut k.0);
        k
    }

    /// `keys[slot].cipher`, 64 bytes.
    ///
    /// # Panics
    /// If `slot > 1` (a programming error: a key2 has two slots).
    pub fn cipher(&self, slot: usize) -> &[u8] {
        assert!(slot < 2, "a static key has two slots, got slot {slot}");
        &self.0[slot * SLOT_LEN..slot * SLOT_LEN + HALF_LEN]
    }

    /// `keys[slot].hmac`, 64 bytes.
    ///
    /// # Panics
    /// If `slot > 1` (a programming error: a key2 has two slots).
    pub fn hmac(&self, slot: usize) -> &[u8] {
        assert!(slot < 2, "a static key has two slots, got slot {slot}");
        &self.0[slot * SLOT_LEN + HALF_LEN..(slot + 1) * SLOT_LEN]
    }
}

/// Constant-time comparison.
impl PartialEq for StaticKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for StaticKey {}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticKey(<redacted>)")
    }
}

/// `key-direction 0|1` / the direction argument of `tls-auth FILE 0|1` / `secret FILE 0|1`.
///
/// OpenVPN crypto.c key_direction_state_init: `Normal` (0) sends with `keys[0]` and
/// receives with `keys[1]`; `Inverse` (1) the reverse. No direction at all means `keys[0]`
/// both ways, which is why APIs take `Option<KeyDirection>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyDirection {
    Normal,
    Inverse,
}

impl KeyDirection {
    /// `0` → `Normal`, `1` → `Inverse`, anything else → `None`.
    pub fn from_arg(v: u8) -> Option<Self> {
        match v {
            0 => Some(KeyDirection::Normal),
            1 => Some(KeyDirection::Inverse),
            _ => None,
        }
    }

    /// The config argument (`0` or `1`).
    pub fn as_arg(self) -> u8 {
        match self {
            KeyDirection::Normal => 0,
            KeyDirection::Inverse => 1,
        }
    }

    /// Key slot used for sending (crypto.c key_direction_state_init `out_key`).
    pub fn out_slot(self) -> usize {
        match self {
            KeyDirection::Normal => 0,
            KeyDirection::Inverse => 1,
        }
    }

    /// Key slot used for receiving (`in_key`).
    pub fn in_slot(self) -> usize {
        1 - self.out_slot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use warren_core::TestRng;

    pub(crate) const FACT_SHEET_KEY_HEX: &str = "fa4eaec302338a2e99055b6eee355a1899634d552ebc897dcddee7156d9228d49b899617e297f48bb0ed07ab42f937ee8616613218cea030c8e6a48451494ccf90bade77462c8dacaf92a61e735479e49e1f6d05b610af001ee59f355f62245aacbba7cfd2328a15c431b07e7cca568dbda01bd44af78c53ccc17eccf623d1c477ef2e702b31469e2be273f639dcc28c844ff6ffeb4967917ca335327dbaecf40328b40ccc2ce797e65870c613cab053055313f4b84cd6aba9f68271156d433ff0809fe3dc3822773ba9751fdb1fa7ca5e71aa9c6ea9aeb0a1d628f9688253e09957dd00f61ffb9baea54b48eda27e055ab61e8358111002b1c75f93764087bc";

    fn fact_key() -> StaticKey {
        let v = hex::decode(FACT_SHEET_KEY_HEX).expect("hex");
        StaticKey::from_bytes(v.try_into().expect("256"))
    }

    #[test]
    fn pem_round_trip_and_format() {
        let k = fact_key();
        let pem = k.to_pem();
        assert!(pem.starts_with(
            "#\n# 2048 bit OpenVPN static key\n#\n-----BEGIN OpenVPN Static key V1-----\nfa4eaec302338a2e99055b6eee355a18\n"
        ));
        assert!(pem.ends_with("87bc\n-----END OpenVPN Static key V1-----\n"));
        assert_eq!(pem.lines().count(), 3 + 1 + 16 + 1);
        assert_eq!(StaticKey::parse(&pem).expect("parse"), k);
    }

    #[test]
    fn parse_is_lenient_like_openvpn() {
        let k = fact_key();
        // preamble, CRLF, odd spacing, uppercase, trailing text after the footer
        let mut text = String::from(
            "some junk\r\n# comment -----\r\n  -----BEGIN OpenVPN Static key V1-----\r\n",
        );
        for chunk in FACT_SHEET_KEY_HEX.as_bytes().chunks(10) {
            let s = std::str::from_utf8(chunk).expect("ascii").to_uppercase();
            text.push_str(&s);
            text.push_str(" \t\r\n");
        }
        text.push_str("-----END OpenVPN Static key V1-----\r\ntrailing stuff");
        assert_eq!(StaticKey::parse(&text).expect("parse"), k);
    }

    #[test]
    fn parse_errors() {
        let pem = fact_key().to_pem();
        assert_eq!(
            StaticKey::parse("nothing here"),
            Err(StaticKeyError::MissingHeader)
        );
        let no_footer = pem.replace(STATIC_KEY_FOOTER, "");
        assert_eq!(
            StaticKey::parse(&no_footer),
            Err(StaticKeyError::MissingFooter)
        );
        let bad_char = pem.replacen("fa4e", "fx4e", 1);
        assert_eq!(
            StaticKey::parse(&bad_char),
            Err(StaticKeyError::InvalidChar { line: 5, ch: 'x' })
        );
        let short = pem.replacen("fa4eaec302338a2e99055b6eee355a18\n", "", 1);
        assert_eq!(
            StaticKey::parse(&short),
            Err(StaticKeyError::WrongLength { found: 240 })
        );
        let long = pem.replacen("fa4e", "fa4e0000", 1);
        assert_eq!(
            StaticKey::parse(&long),
            Err(StaticKeyError::WrongLength { found: 258 })
        );
        let odd = pem.replacen("fa4e", "fa4e0", 1);
        assert_eq!(StaticKey::parse(&odd), Err(StaticKeyError::OddDigits));
        let bad_footer = pem.replace(STATIC_KEY_FOOTER, "-----END something-----");
        assert_eq!(
            StaticKey::parse(&bad_footer),
            Err(StaticKeyError::BadFooter { line: 21 })
        );
        // The error never shows key bytes.
        let msg = match StaticKey::parse(&short) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("short key parsed"),
        };
        assert!(!msg.contains("fa4e"));
    }

    #[test]
    fn slots_and_debug() {
        let k = fact_key();
        assert_eq!(k.cipher(0), &k.as_bytes()[0..64]);
        assert_eq!(k.hmac(0), &k.as_bytes()[64..128]);
        assert_eq!(k.cipher(1), &k.as_bytes()[128..192]);
        assert_eq!(k.hmac(1), &k.as_bytes()[192..256]);
        assert_eq!(format!("{k:?}"), "StaticKey(<redacted>)");
        assert_eq!(KeyDirection::from_arg(0), Some(KeyDirection::Normal));
        assert_eq!(KeyDirection::from_arg(1), Some(KeyDirection::Inverse));
        assert_eq!(KeyDirection::from_arg(2), None);
        assert_eq!(KeyDirection::Inverse.out_slot(), 1);
        assert_eq!(KeyDirection::Inverse.in_slot(), 0);
    }

    #[test]
    fn generate_differs() {
        let mut rng = TestRng::seed(1);
        let a = StaticKey::generate(&mut rng);
        let b = StaticKey::generate(&mut rng);
        assert_ne!(a, b);
        assert_ne!(a.as_bytes(), &[0u8; 256]);
    }

    proptest! {
        #[test]
        fn prop_pem_round_trip(bytes in proptest::collection::vec(any::<u8>(), 256)) {
            let arr: [u8; 256] = bytes.try_into().expect("256");
            let k = StaticKey::from_bytes(arr);
            prop_assert_eq!(StaticKey::parse(&k.to_pem()).expect("parse"), k);
        }

        #[test]
        fn prop_parse_never_panics(s in "\\PC{0,600}") {
            let _ = StaticKey::parse(&s);
            let wrapped = format!("{STATIC_KEY_HEADER}\n{s}\n{STATIC_KEY_FOOTER}\n");
            let _ = StaticKey::parse(&wrapped);
        }
    }
}
