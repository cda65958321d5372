//! Ping and OCC messages: plaintext of ordinary data packets that the receiver consumes
//! instead of writing to the tun device (fact sheet §7.3; OpenVPN ping.c:42, occ.c:55,
//! occ.c:230-435).

/// The keepalive ping payload (ping.c:42). A data packet whose plaintext is exactly this is
/// a ping.
pub const PING_MAGIC: [u8; 16] = [
    0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48,
];

/// The OCC prefix (occ.c:55). A data packet whose plaintext starts with it is an OCC
/// message, never tunnel traffic.
pub const OCC_MAGIC: [u8; 16] = [
    0x28, 0x7f, 0x34, 0x6b, 0xd4, 0xef, 0x7a, 0x81, 0x2d, 0x56, 0xb8, 0xd3, 0xaf, 0xc5, 0x45, 0x9c,
];

/// OCC message types (occ.h).
pub mod occ_type {
    pub const REQUEST: u8 = 0;
    pub const REPLY: u8 = 1;
    pub const MTU_LOAD_REQUEST: u8 = 2;
    pub const MTU_LOAD: u8 = 3;
    pub const MTU_REQUEST: u8 = 4;
    pub const MTU_REPLY: u8 = 5;
    pub const EXIT: u8 = 6;
}

/// True when `p` is exactly the ping magic (ping.h is_ping_msg).
pub fn is_ping(p: &[u8]) -> bool {
    p == PING_MAGIC
}

/// True when `p` starts with the OCC magic (occ.h is_occ_msg). Such a packet must be
/// dropped from the tunnel even if [`parse_occ`] finds no type byte.
pub fn is_occ(p: &[u8]) -> bool {
    p.starts_with(&OCC_MAGIC)
}

/// An OCC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OccMessage {
    Request,
    /// The peer's options string (up to its NUL, lossily decoded).
    Reply(String),
    /// The peer is going away (explicit-exit-notify without cc-exit).
    Exit,
    /// Any other type byte (the MTU tests, or unknown).
    Other(u8),
}

/// Parses an OCC message; `None` when `p` lacks the magic or the type byte.
pub fn parse_occ(p: &[u8]) -> Option<OccMessage> {
    let rest = p.strip_prefix(&OCC_MAGIC)?;
    let (&t, rest) = rest.split_first()?;
    Some(match t {
        occ_type::REQUEST => OccMessage::Request,
        occ_type::REPLY => {
            let s = rest
                .iter()
                .position(|&b| b == 0)
                .map_or(rest, |i| &rest[..i]);
            OccMessage::Reply(String::from_utf8_lossy(s).into_owned())
        }
        occ_type::EXIT => OccMessage::Exit,
        other => OccMessage::Other(other),
    })
}

/// Appends an OCC EXIT message (occ.c:340).
pub fn encode_occ_exit(out: &mut Vec<u8>) {
    out.extend_from_slice(&OCC_MAGIC);
    out.push(occ_type::EXIT);
}

/// Appends a ping.
pub fn encode_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(&PING_MAGIC);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ping_and_occ() {
        let mut p = Vec::new();
        encode_ping(&mut p);
        assert!(is_ping(&p));
        assert!(!is_ping(&p[..15]));
        p.push(0);
        assert!(!is_ping(&p));

        let mut e = Vec::new();
        encode_occ_exit(&mut e);
        assert_eq!(e.len(), 17);
        assert!(is_occ(&e));
        assert_eq!(parse_occ(&e), Some(OccMessage::Exit));
        assert_eq!(parse_occ(&OCC_MAGIC), None);
        assert!(is_occ(&OCC_MAGIC));
        let mut r = OCC_MAGIC.to_vec();
        r.push(occ_type::REPLY);
        r.extend_from_slice(b"V4,dev-type tun\0junk");
        assert_eq!(
            parse_occ(&r),
            Some(OccMessage::Reply("V4,dev-type tun".into()))
        );
        r[16] = 0;
        assert_eq!(parse_occ(&r), Some(OccMessage::Request));
        r[16] = 4;
        assert_eq!(parse_occ(&r), Some(OccMessage::Other(4)));
        assert_eq!(parse_occ(&PING_MAGIC), None);
    }

    proptest! {
        #[test]
        fn reply_round_trip(s in "[ -~]{0,100}") {
            let mut p = OCC_MAGIC.to_vec();
            p.push(occ_type::REPLY);
            p.extend_from_slice(s.as_bytes());
            p.push(0);
            prop_assert_eq!(parse_occ(&p), Some(OccMessage::Reply(s)));
        }

        #[test]
        fn never_panics(tail in prop::collection::vec(any::<u8>(), 0..40)) {
            let mut p = OCC_MAGIC.to_vec();
            p.extend_from_slice(&tail);
            let _ = parse_occ(&p);
            let _ = parse_occ(&tail);
            let _ = is_ping(&tail);
        }
    }
}
