//! Certificate serial numbers.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Longest serial RFC 5280 §4.1.2.2 allows, in bytes.
pub const MAX_SERIAL_LEN: usize = 20;

/// A certificate serial number: the big-endian magnitude of the (positive) DER INTEGER, with
/// leading zero bytes removed, so the same certificate always gives the same value whether it
/// came from the certificate, a CRL or easy-rsa's `index.txt`.
///
/// Displayed as upper-case hex without separators (OpenSSL's `index.txt` form, e.g.
/// `2632DFD822572F351272CBA9A653D022`); parsed from hex with optional `:` separators and an
/// optional `0x` prefix.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

/// Why a serial number string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SerialParseError {
    #[error("empty serial number")]
    Empty,
    #[error("invalid character {0:?} in serial number (expected hex digits)")]
    BadChar(char),
    #[error("serial number longer than {MAX_SERIAL_LEN} bytes")]
    TooLong,
}

impl Serial {
    /// From big-endian bytes (leading zeros are dropped). An all-zero or empty input is the
    /// serial 0.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let mut v = bytes[start..].to_vec();
        if v.is_empty() {
            v.push(0);
        }
        Serial(v)
    }

    /// A fresh random 128-bit serial (RFC 5280 wants positive serials; the top bit is cleared,
    /// so 127 bits are random, well above the CA/B Forum's 64).
    pub fn random(rng: &mut dyn warren_core::Rng) -> Self {
        let mut b = [0u8; 16];
        rng.fill(&mut b);
        b[0] &= 0x7f;
        if b == [0u8; 16] {
            b[15] = 1;
        }
        Serial::from_bytes(&b)
    }

    /// The big-endian magnitude, without leading zeros (at least one byte).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

impl FromStr for Serial {
    type Err = SerialParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let s = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        let mut nibbles = Vec::with_capacity(s.len());
        for ch in s.chars() {
            if ch == ':' {
                continue;
            }
            let v = ch.to_digit(16).ok_or(SerialParseError::BadChar(ch))?;
            // to_digit(16) < 16: lossless.
            nibbles.push(v as u8);
        }
        if nibbles.is_empty() {
            return Err(SerialParseError::Empty);
        }
        if nibbles.len() % 2 == 1 {
            nibbles.insert(0, 0);
        }
        let bytes: Vec<u8> = nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
        let serial = Serial::from_bytes(&bytes);
        if serial.0.len() > MAX_SERIAL_LEN {
            return Err(SerialParseError::TooLong);
        }
        Ok(serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use warren_core::TestRng;

    #[test]
    fn canonical_forms() {
        let s: Serial = "0x00:0A".parse().expect("parse");
        assert_eq!(s.as_bytes(), &[0x0a]);
        assert_eq!(s.to_string(), "0A");
        assert_eq!("a".parse::<Serial>().expect("parse"), s);
        assert_eq!(Serial::from_bytes(&[0, 0, 0x0a]), s);
        assert_eq!(Serial::from_bytes(&[]).to_string(), "00");
        let easyrsa = "2632DFD822572F351272CBA9A653D022";
        assert_eq!(
            easyrsa.parse::<Serial>().expect("parse").to_string(),
            easyrsa
        );
        assert_eq!("".parse::<Serial>(), Err(SerialParseError::Empty));
        assert_eq!("12g".parse::<Serial>(), Err(SerialParseError::BadChar('g')));
        assert_eq!(
            "ff".repeat(21).parse::<Serial>(),
            Err(SerialParseError::TooLong)
        );
    }

    #[test]
    fn random_is_positive_and_distinct() {
        let mut rng = TestRng::seed(1);
        let a = Serial::random(&mut rng);
        let b = Serial::random(&mut rng);
        assert_ne!(a, b);
        assert!(a.as_bytes()[0] < 0x80);
        assert!(a.as_bytes().len() <= 16);
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..20)) {
            let s = Serial::from_bytes(&bytes);
            prop_assert_eq!(s.to_string().parse::<Serial>().expect("parse"), s);
        }
    }
}
