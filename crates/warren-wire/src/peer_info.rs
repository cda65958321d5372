//! Peer info: the `IV_*` lines a client sends in key method 2 (fact sheet §5; OpenVPN
//! ssl.c:2046 push_peer_info, ssl.h:71-108 for the IV_PROTO bits).

use std::fmt;

/// IV_PROTO bits (ssl.h:71-108). Announce only what is implemented: the server switches
/// behaviour on the bits alone (multi.c:1792).
pub mod iv_proto {
    /// Supports P_DATA_V2 and peer-id.
    pub const DATA_V2: u32 = 2;
    /// The server may push without waiting for PUSH_REQUEST.
    pub const REQUEST_PUSH: u32 = 4;
    /// Supports `key-derivation tls-ekm`.
    pub const TLS_KEY_EXPORT: u32 = 8;
    /// Understands `AUTH_PENDING,timeout N`.
    pub const AUTH_PENDING_KW: u32 = 16;
    /// P2P NCP; never in client/server mode.
    pub const NCP_P2P: u32 = 32;
    /// Understands the pushed `dns` option.
    pub const DNS_OPTION: u32 = 64;
    /// Understands the `EXIT` control message and `protocol-flags`.
    pub const CC_EXIT_NOTIFY: u32 = 128;
    /// Understands `AUTH_FAILED,TEMP`.
    pub const AUTH_FAIL_TEMP: u32 = 256;
    /// Dynamic tls-crypt for renegotiation.
    pub const DYN_TLS_CRYPT: u32 = 512;
}

/// Parsed peer info. Keys with their own field are taken from their first occurrence;
/// every other `K=V` line (and a repeated or unparsable known key) goes to `other`, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerInfo {
    /// `IV_VER`
    pub version: Option<String>,
    /// `IV_PLAT`
    pub platform: Option<String>,
    /// `IV_PROTO` bits ([`iv_proto`]); 0 when absent.
    pub proto: u32,
    /// `IV_CIPHERS`, split on `:`, items trimmed, empty items dropped; empty when absent.
    pub ciphers: Vec<String>,
    /// `IV_NCP`
    pub ncp: Option<u32>,
    /// `IV_MTU`
    pub mtu: Option<u32>,
    /// Every other line, as (key, value).
    pub other: Vec<(String, String)>,
}

impl PeerInfo {
    /// Parses `K=V` lines separated by `\n` (trailing `\r`s are dropped). Lines without
    /// `=` and empty lines are ignored. Never fails.
    pub fn parse(s: &str) -> Self {
        let mut pi = PeerInfo::default();
        let (mut seen_proto, mut seen_ciphers) = (false, false);
        for line in s.split('\n') {
            let line = line.trim_end_matches('\r');
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let taken = match k {
                "IV_VER" if pi.version.is_none() => {
                    pi.version = Some(v.to_owned());
                    true
                }
                "IV_PLAT" if pi.platform.is_none() => {
                    pi.platform = Some(v.to_owned());
                    true
                }
                "IV_PROTO" if !seen_proto => match v.parse() {
                    Ok(p) => {
                        pi.proto = p;
                        seen_proto = true;
                        true
                    }
                    Err(_) => false,
                },
                "IV_CIPHERS" if !seen_ciphers => {
                    pi.ciphers = v
                        .split(':')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect();
                    seen_ciphers = true;
                    true
                }
                "IV_NCP" if pi.ncp.is_none() => parse_into(v, &mut pi.ncp),
                "IV_MTU" if pi.mtu.is_none() => parse_into(v, &mut pi.mtu),
                _ => false,
            };
            if !taken {
                pi.other.push((k.to_owned(), v.to_owned()));
            }
        }
        pi
    }

    /// True when `IV_PROTO` has every bit of `bits`.
    pub fn has_proto(&self, bits: u32) -> bool {
        self.proto & bits == bits
    }

    fn other_has(&self, key: &str) -> bool {
        self.other.iter().any(|(k, _)| k == key)
    }

    /// The value of a key kept in [`Self::other`] (first occurrence).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.other
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_into(v: &str, slot: &mut Option<u32>) -> bool {
    match v.parse() {
        Ok(n) => {
            *slot = Some(n);
            true
        }
        Err(_) => false,
    }
}

/// `K=V\n` lines: IV_VER, IV_PLAT, IV_MTU, IV_NCP, IV_CIPHERS, IV_PROTO (each only when
/// set; IV_PROTO when non-zero), then `other` in order. Parsing the output gives back an
/// equal value.
impl fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v) = &self.version {
            writeln!(f, "IV_VER={v}")?;
        }
        if let Some(v) = &self.platform {
            writeln!(f, "IV_PLAT={v}")?;
        }
        if let Some(v) = self.mtu {
            writeln!(f, "IV_MTU={v}")?;
        }
        if let Some(v) = self.ncp {
            writeln!(f, "IV_NCP={v}")?;
        }
        // Also written when empty/zero if `other` repeats the key, so that parsing the
        // output gives back the same value (the first occurrence wins).
        if !self.ciphers.is_empty() || self.other_has("IV_CIPHERS") {
            writeln!(f, "IV_CIPHERS={}", self.ciphers.join(":"))?;
        }
        if self.proto != 0 || self.other_has("IV_PROTO") {
            writeln!(f, "IV_PROTO={}", self.proto)?;
        }
        for (k, v) in &self.other {
            writeln!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STOCK: &str = "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\nIV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n";

    #[test]
    fn stock_client() {
        let pi = PeerInfo::parse(STOCK);
        assert_eq!(pi.version.as_deref(), Some("2.6.14"));
        assert_eq!(pi.platform.as_deref(), Some("linux"));
        assert_eq!(pi.proto, 990);
        assert_eq!(
            990,
            iv_proto::DATA_V2
                | iv_proto::REQUEST_PUSH
                | iv_proto::TLS_KEY_EXPORT
                | iv_proto::AUTH_PENDING_KW
                | iv_proto::DNS_OPTION
                | iv_proto::CC_EXIT_NOTIFY
                | iv_proto::AUTH_FAIL_TEMP
                | iv_proto::DYN_TLS_CRYPT
        );
        assert!(pi.has_proto(iv_proto::TLS_KEY_EXPORT | iv_proto::DATA_V2));
        assert!(!pi.has_proto(iv_proto::NCP_P2P));
        assert_eq!(
            pi.ciphers,
            ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]
        );
        assert_eq!((pi.ncp, pi.mtu), (Some(2), Some(1600)));
        assert_eq!(pi.get("IV_TCPNL"), Some("1"));
        assert_eq!(pi.other.len(), 4);
        assert_eq!(PeerInfo::parse(&pi.to_string()), pi);
    }

    #[test]
    fn reparse_keeps_first_occurrence() {
        for s in [
            "IV_PROTO=0\nIV_PROTO=5\n",
            "IV_CIPHERS=\nIV_CIPHERS=X\n",
            // Found by the peer_info fuzz target: a `\r` before trailing colons.
            "IV_CIPHERS=E::I::x\r::\n",
            "IV_VER=a\r\r\n",
        ] {
            let pi = PeerInfo::parse(s);
            assert_eq!(PeerInfo::parse(&pi.to_string()), pi, "{s:?}");
        }
    }

    #[test]
    fn odd_input() {
        let pi = PeerInfo::parse("junk\n\nIV_PROTO=abc\nIV_PROTO=6\nIV_MTU=1\nIV_MTU=2\r\n=x\n");
        assert_eq!(pi.proto, 6);
        assert_eq!(pi.mtu, Some(1));
        assert_eq!(
            pi.other,
            vec![
                ("IV_PROTO".into(), "abc".into()),
                ("IV_MTU".into(), "2".into()),
                ("".into(), "x".into())
            ]
        );
        assert_eq!(PeerInfo::parse(""), PeerInfo::default());
        assert_eq!(PeerInfo::default().to_string(), "");
    }

    fn val() -> impl Strategy<Value = String> {
        prop::string::string_regex("[A-Za-z0-9._ -]{0,12}").expect("regex")
    }

    proptest! {
        #[test]
        fn round_trip(
            version in prop::option::of(val()),
            platform in prop::option::of(val()),
            proto in any::<u32>(),
            ciphers in prop::collection::vec(prop::string::string_regex("[A-Z0-9-]{1,12}").expect("re"), 0..4),
            ncp in prop::option::of(any::<u32>()),
            mtu in prop::option::of(any::<u32>()),
            other in prop::collection::vec((prop::string::string_regex("UV_[A-Z]{1,6}").expect("re"), val()), 0..4),
        ) {
            let pi = PeerInfo { version, platform, proto, ciphers, ncp, mtu, other };
            prop_assert_eq!(PeerInfo::parse(&pi.to_string()), pi);
        }

        #[test]
        fn parse_is_stable(s in "([A-Z_]{0,8}=?[0-9a-z:=\r]{0,8}\n?){0,12}") {
            let pi = PeerInfo::parse(&s);
            prop_assert_eq!(PeerInfo::parse(&pi.to_string()), pi);
        }
    }
}
