//! Per-user access rules: which destinations a client's packets may reach.
//!
//! A rule names destinations: a CIDR (IPv4 or IPv6; a bare address is a host), optionally
//! a port or port range and a protocol:
//!
//! ```text
//! 10.0.0.0/24            192.168.1.10:443/tcp      10.1.0.0/16:5000-5100/udp
//! 10.2.0.5/icmp          fd00:1::/64:53/udp        [fd00::7]:22/tcp
//! ```
//!
//! A port without a protocol matches TCP and UDP; `icmp` is ICMP for IPv4 and ICMPv6 for
//! IPv6 and takes no port. An IPv6 address with a port and no prefix length goes in
//! brackets.
//!
//! An [`AccessList`] is the ordered list an identity gets (its user's rules, then the
//! rules of its groups in the order it joined them). The first rule that matches a
//! packet decides; when none matches, the default is deny if the list has any allow
//! rule, allow otherwise (a list of deny rules blocks those destinations only).
//!
//! [`AccessRules`] is the compiled form the data plane checks on every packet from the
//! client ([`AccessRules::allows`]): one flat array per IP family, no allocation per
//! packet. Non-first fragments carry no transport header: they are matched on address and
//! protocol only (a port rule of their protocol matches them), so the first fragment
//! decides the fate of the datagram.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

impl FromStr for Action {
    type Err = AccessRuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "allow" => Ok(Action::Allow),
            "deny" => Ok(Action::Deny),
            _ => Err(AccessRuleError {
                rule: s.to_owned(),
                problem: "the action is `allow` or `deny`",
            }),
        }
    }
}

/// The transport protocol a rule is limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP for IPv4, ICMPv6 for IPv6.
    Icmp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// IP protocol numbers (IANA).
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// One destination rule (without its action), as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccessRule {
    pub addr: IpAddr,
    /// Prefix length (32 or 128 for a host).
    pub prefix: u8,
    /// Inclusive port range.
    pub ports: Option<(u16, u16)>,
    pub proto: Option<Proto>,
}

/// Rule text that does not parse: names the rule and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad access rule {rule:?}: {problem}; expected CIDR[:PORT|:LO-HI][/tcp|/udp|/icmp], \
     e.g. 10.0.0.0/24, 192.168.1.10:443/tcp, 10.1.0.0/16:5000-5100/udp, [fd00::7]:22/tcp"
)]
pub struct AccessRuleError {
    pub rule: String,
    pub problem: &'static str,
}

impl FromStr for AccessRule {
    type Err = AccessRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |problem| AccessRuleError {
            rule: text.to_owned(),
            problem,
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(err("the rule is empty"));
        }
        // The protocol: a last `/` segment that is a word.
        let (s, proto) = match s.rsplit_once('/') {
            Some((head, tail)) if tail.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) => {
                let p = match tail.to_ascii_lowercase().as_str() {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    "icmp" | "icmp6" | "icmpv6" => Proto::Icmp,
                    _ => return Err(err("the protocol is tcp, udp or icmp")),
                };
                (head, Some(p))
            }
            _ => (s, None),
        };
        // The address (with its prefix) and the ports.
        let (addr_text, prefix_text, ports_text) = if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| err("a `[` without its `]`"))?;
            let ports = match after {
                "" => None,
                a => Some(
                    a.strip_prefix(':')
                        .ok_or_else(|| err("only `:PORT` may follow `]`"))?,
                ),
            };
            match inside.split_once('/') {
                Some((a, p)) => (a, Some(p), ports),
                None => (inside, None, ports),
            }
        } else if let Some((a, rest)) = s.split_once('/') {
            match rest.split_once(':') {
                Some((p, ports)) => (a, Some(p), Some(ports)),
                None => (a, Some(rest), None),
            }
        } else if s.parse::<IpAddr>().is_ok() {
            (s, None, None)
        } else {
            match s.rsplit_once(':') {
                Some((a, ports)) if !a.contains(':') => (a, None, Some(ports)),
                Some(_) => {
                    return Err(err(
                        "an IPv6 address with a port goes in brackets: [ADDR]:PORT",
                    ));
                }
                None => (s, None, None),
            }
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| err("the address is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| err("the prefix length is 0-32 for IPv4, 0-128 for IPv6"))?,
        };
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| err("a port is a number 0-65535"))
        };
        let ports = match ports_text {
            None => None,
            Some(p) => {
                let (lo, hi) = match p.split_once('-') {
                    Some((lo, hi)) => (port(lo)?, port(hi)?),
                    None => (port(p)?, port(p)?),
                };
                if lo > hi {
                    return Err(err("a port range is LO-HI with LO <= HI"));
                }
                Some((lo, hi))
            }
        };
        if ports.is_some() && proto == Some(Proto::Icmp) {
            return Err(err("icmp has no ports"));
        }
        // The network address: host bits cleared.
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask4(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask6(prefix))),
        };
        Ok(AccessRule {
            addr,
            prefix,
            ports,
            proto,
        })
    }
}

impl fmt::Display for AccessRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A host is written without its prefix length (an IPv6 host with a port in
        // brackets), so that the text parses back to the same rule.
        match (self.addr, self.ports) {
            (IpAddr::V6(a), Some(_)) if self.prefix == 128 => write!(f, "[{a}]")?,
            (IpAddr::V6(a), None) if self.prefix == 128 => write!(f, "{a}")?,
            (IpAddr::V4(a), _) if self.prefix == 32 => write!(f, "{a}")?,
            (a, _) => write!(f, "{a}/{}", self.prefix)?,
        }
        match self.ports {
            Some((lo, hi)) if lo == hi => write!(f, ":{lo}")?,
            Some((lo, hi)) => write!(f, ":{lo}-{hi}")?,
            None => {}
        }
        if let Some(p) = self.proto {
            write!(f, "/{}", p.as_str())?;
        }
        Ok(())
    }
}

/// One entry of an identity's ordered list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccessEntry {
    pub action: Action,
    pub rule: AccessRule,
}

impl fmt::Display for AccessEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action.as_str(), self.rule)
    }
}

/// An identity's rules in order (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AccessList(pub Vec<AccessEntry>);

impl AccessList {
    /// The default when no rule matches: deny when any rule allows.
    pub fn default_action(&self) -> Action {
        if self.0.iter().any(|e| e.action == Action::Allow) {
            Action::Deny
        } else {
            Action::Allow
        }
    }

    /// The compiled form, or `None` for an empty list (everything allowed, nothing to
    /// check).
    pub fn compile(&self) -> Option<AccessRules> {
        if self.0.is_empty() {
            return None;
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for e in &self.0 {
            let r = &e.rule;
            let allow = e.action == Action::Allow;
            let (lo, hi) = r.ports.unwrap_or((0, u16::MAX));
            let ports = r.ports.is_some();
            match r.addr {
                IpAddr::V4(a) => v4.push(Rule4 {
                    net: u32::from(a),
                    mask: mask4(r.prefix),
                    proto: proto_number(r.proto, false),
                    ports,
                    lo,
                    hi,
                    allow,
                }),
                IpAddr::V6(a) => v6.push(Rule6 {
                    net: u128::from(a),
                    mask: mask6(r.prefix),
                    proto: proto_number(r.proto, true),
                    ports,
                    lo,
                    hi,
                    allow,
                }),
            }
        }
        Some(AccessRules {
            v4: v4.into_boxed_slice(),
            v6: v6.into_boxed_slice(),
            default_allow: self.default_action() == Action::Allow,
            source: self.clone(),
        })
    }
}

fn proto_number(p: Option<Proto>, v6: bool) -> Option<u8> {
    p.map(|p| match p {
        Proto::Tcp => IPPROTO_TCP,
        Proto::Udp => IPPROTO_UDP,
        Proto::Icmp if v6 => IPPROTO_ICMPV6,
        Proto::Icmp => IPPROTO_ICMP,
    })
}

fn mask4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule4 {
    net: u32,
    mask: u32,
    proto: Option<u8>,
    ports: bool,
    lo: u16,
    hi: u16,
    allow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule6 {
    net: u128,
    mask: u128,
    proto: Option<u8>,
    ports: bool,
    lo: u16,
    hi: u16,
    allow: bool,
}

/// What a packet offers the rules: its transport protocol and destination port.
#[derive(Debug, Clone, Copy)]
struct L4 {
    proto: Option<u8>,
    /// The destination port of a TCP or UDP first fragment.
    port: Option<u16>,
    /// A non-first fragment: ports are not known and not checked.
    later_fragment: bool,
}

impl L4 {
    /// No transport header where a rule could read it: an IPv6 header chain that is too
    /// long, cut short or of a kind not walked, or a TCP/UDP first fragment too short to
    /// hold the ports. Refused whatever the rules say, so that a deny rule naming a
    /// protocol or a port cannot be walked around (RFC 7112 requires the whole chain in
    /// the first fragment).
    fn opaque(&self) -> bool {
        match self.proto {
            None => true,
            Some(IPPROTO_TCP | IPPROTO_UDP) => !self.later_fragment && self.port.is_none(),
            Some(_) => false,
        }
    }

    /// Whether a rule's protocol and ports admit this packet.
    fn fits(&self, proto: Option<u8>, ports: bool, lo: u16, hi: u16) -> bool {
        if let Some(want) = proto
            && self.proto != Some(want)
        {
            return false;
        }
        if !ports {
            return true;
        }
        if !matches!(self.proto, Some(IPPROTO_TCP | IPPROTO_UDP)) {
            return false;
        }
        if self.later_fragment {
            return true;
        }
        self.port.is_some_and(|p| lo <= p && p <= hi)
    }
}

/// A compiled [`AccessList`]: what the data plane checks (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRules {
    v4: Box<[Rule4]>,
    v6: Box<[Rule6]>,
    default_allow: bool,
    source: AccessList,
}

impl AccessRules {
    /// The list this was compiled from.
    pub fn list(&self) -> &AccessList {
        &self.source
    }

    /// Whether the client may send `pkt` (an IP packet from its tun): its destination,
    /// protocol and port against the rules, first match wins. Anything that is neither
    /// IPv4 nor IPv6 is refused (the data plane drops it before asking).
    pub fn allows(&self, pkt: &[u8]) -> bool {
        match pkt.first().map(|b| b >> 4) {
            Some(4) if pkt.len() >= 20 => {
                let dst = u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]]);
                let l4 = l4_v4(pkt);
                if l4.opaque() {
                    return false;
                }
                self.v4
                    .iter()
                    .find(|r| dst & r.mask == r.net && l4.fits(r.proto, r.ports, r.lo, r.hi))
                    .map_or(self.default_allow, |r| r.allow)
            }
            Some(6) if pkt.len() >= 40 => {
                let mut d = [0u8; 16];
                d.copy_from_slice(&pkt[24..40]);
                let dst = u128::from_be_bytes(d);
                let l4 = l4_v6(pkt);
                if l4.opaque() {
                    return false;
                }
                self.v6
                    .iter()
                    .find(|r| dst & r.mask == r.net && l4.fits(r.proto, r.ports, r.lo, r.hi))
                    .map_or(self.default_allow, |r| r.allow)
            }
            _ => false,
        }
    }
}

/// The destination port at `off` of a TCP or UDP header (both start with the ports).
fn dst_port(pkt: &[u8], proto: u8, off: usize) -> Option<u16> {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let b = pkt.get(off + 2..off + 4)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn l4_v4(pkt: &[u8]) -> L4 {
    let proto = pkt[9];
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    // RFC 791: fragment offset, the low 13 bits of bytes 6-7.
    let offset = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff;
    if offset != 0 {
        return L4 {
            proto: Some(proto),
            port: None,
            later_fragment: true,
        };
    }
    L4 {
        proto: Some(proto),
        port: (ihl >= 20).then(|| dst_port(pkt, proto, ihl)).flatten(),
        later_fragment: false,
    }
}

/// Extension headers walked at most (a longer chain is refused, see [`L4::opaque`]).
const MAX_EXT_HEADERS: usize = 8;

fn l4_v6(pkt: &[u8]) -> L4 {
    let mut next = pkt[6];
    let mut off = 40;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options (RFC 8200 §4): length in 8-byte
            // units, not counting the first 8.
            0 | 43 | 60 => {
                let Some(h) = pkt.get(off..off + 2) else {
                    break;
                };
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            // Authentication header (RFC 4302 §2.2): length in 4-byte units, minus 2.
            51 => {
                let Some(h) = pkt.get(off..off + 2) else {
                    break;
                };
                next = h[0];
                off += (usize::from(h[1]) + 2) * 4;
            }
            // Fragment (RFC 8200 §4.5): 8 bytes, offset in the high 13 bits of bytes 2-3.
            44 => {
                let Some(h) = pkt.get(off..off + 8) else {
                    break;
                };
                next = h[0];
                off += 8;
                if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                    return L4 {
                        proto: Some(next),
                        port: None,
                        later_fragment: true,
                    };
                }
            }
            proto => {
                return L4 {
                    proto: Some(proto),
                    port: dst_port(pkt, proto, off),
                    later_fragment: false,
                };
            }
        }
    }
    L4 {
        proto: None,
        port: None,
        later_fragment: false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rule(s: &str) -> AccessRule {
        s.parse().unwrap()
    }

    fn list(entries: &[(&str, &str)]) -> AccessRules {
        AccessList(
            entries
                .iter()
                .map(|(a, r)| AccessEntry {
                    action: a.parse().unwrap(),
                    rule: rule(r),
                })
                .collect(),
        )
        .compile()
        .unwrap()
    }

    fn v4(dst: [u8; 4], proto: u8, port: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 8, 0, 2]);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&port.to_be_bytes());
        p
    }

    fn v6(dst: &str, proto: u8, port: u16) -> Vec<u8> {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[6] = proto;
        p[8..24].copy_from_slice(&"fd00:8::1000".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        p[40..42].copy_from_slice(&40000u16.to_be_bytes());
        p[42..44].copy_from_slice(&port.to_be_bytes());
        p
    }

    #[test]
    fn parses_every_form() {
        let r = rule("10.0.0.7/24");
        assert_eq!((r.addr, r.prefix), ("10.0.0.0".parse().unwrap(), 24));
        assert_eq!((r.ports, r.proto), (None, None));
        let r = rule("192.168.1.10:443/tcp");
        assert_eq!(r.prefix, 32);
        assert_eq!((r.ports, r.proto), (Some((443, 443)), Some(Proto::Tcp)));
        let r = rule("10.1.0.0/16:5000-5100/UDP");
        assert_eq!((r.ports, r.proto), (Some((5000, 5100)), Some(Proto::Udp)));
        assert_eq!(rule("10.2.0.5/icmp").proto, Some(Proto::Icmp));
        let r = rule("fd00:1::/64:53/udp");
        assert_eq!((r.prefix, r.ports), (64, Some((53, 53))));
        let r = rule("[fd00::7]:22/tcp");
        assert_eq!((r.prefix, r.ports), (128, Some((22, 22))));
        assert_eq!(rule("fd00::7").prefix, 128);
        assert_eq!(rule("0.0.0.0/0").prefix, 0);
        // Display round-trips.
        for s in [
            "10.0.0.0/24",
            "192.168.1.10:443/tcp",
            "fd00::7",
            "fd00::7/icmp",
            "10.1.0.0/16:5000-5100/udp",
            "fd00:1::/64:53/udp",
            "[fd00::7]:22/tcp",
            "10.2.0.5/icmp",
            "10.2.0.5",
        ] {
            assert_eq!(rule(s).to_string(), s);
            assert_eq!(rule(&rule(s).to_string()), rule(s));
        }
    }

    #[test]
    fn bad_rules_name_the_rule_and_the_form() {
        for (s, why) in [
            ("", "empty"),
            ("10.0.0.0/33", "prefix"),
            ("10.0.0/24", "address"),
            ("10.0.0.1:70000", "port"),
            ("10.0.0.1:90-80/tcp", "LO <= HI"),
            ("10.0.0.1/sctp", "protocol"),
            ("10.0.0.1:22/icmp", "no ports"),
            ("fd00::1/64:x", "port"),
            ("[fd00::1", "`]`"),
            ("host.example", "address"),
        ] {
            let e = s.parse::<AccessRule>().unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(why), "{s}: {msg}");
            assert!(msg.contains(&format!("{s:?}")), "{msg}");
            assert!(msg.contains("expected CIDR"), "{msg}");
        }
    }

    #[test]
    fn first_match_wins_and_allow_rules_make_the_default_deny() {
        let r = list(&[("deny", "10.0.0.5"), ("allow", "10.0.0.0/24")]);
        assert!(!r.allows(&v4([10, 0, 0, 5], 17, 53)));
        assert!(r.allows(&v4([10, 0, 0, 6], 17, 53)));
        assert!(!r.allows(&v4([10, 0, 1, 6], 17, 53)), "default deny");
        // The other order: the allow comes first and wins.
        let r = list(&[("allow", "10.0.0.0/24"), ("deny", "10.0.0.5")]);
        assert!(r.allows(&v4([10, 0, 0, 5], 17, 53)));
        // Only deny rules: the default is allow.
        let r = list(&[("deny", "10.0.0.0/24")]);
        assert!(!r.allows(&v4([10, 0, 0, 5], 6, 80)));
        assert!(r.allows(&v4([10, 0, 1, 5], 6, 80)));
        assert!(AccessList::default().compile().is_none());
        // Not IP.
        assert!(!r.allows(&[0x50; 40]));
        assert!(!r.allows(&[]));
    }

    #[test]
    fn ports_and_protocols() {
        let r = list(&[
            ("allow", "192.168.1.10:443/tcp"),
            ("allow", "10.1.0.0/16:5000-5100"),
        ]);
        assert!(r.allows(&v4([192, 168, 1, 10], 6, 443)));
        assert!(!r.allows(&v4([192, 168, 1, 10], 17, 443)), "udp");
        assert!(!r.allows(&v4([192, 168, 1, 10], 6, 444)));
        assert!(!r.allows(&v4([192, 168, 1, 11], 6, 443)));
        for (port, ok) in [
            (4999, false),
            (5000, true),
            (5050, true),
            (5100, true),
            (5101, false),
        ] {
            assert_eq!(r.allows(&v4([10, 1, 2, 3], 6, port)), ok, "tcp {port}");
            assert_eq!(r.allows(&v4([10, 1, 2, 3], 17, port)), ok, "udp {port}");
        }
        assert!(!r.allows(&v4([10, 1, 2, 3], 1, 5000)), "icmp has no port");
        let r = list(&[("allow", "10.2.0.0/16/icmp")]);
        assert!(r.allows(&v4([10, 2, 0, 1], 1, 0)));
        assert!(!r.allows(&v4([10, 2, 0, 1], 6, 0)));
        // An IHL of 24 (options): the port is after them.
        let mut p = v4([192, 168, 1, 10], 6, 0);
        p[0] = 0x46;
        p[26..28].copy_from_slice(&443u16.to_be_bytes());
        let r = list(&[("allow", "192.168.1.10:443/tcp")]);
        assert!(r.allows(&p));
        // Truncated before the ports: a port rule cannot match.
        assert!(!r.allows(&v4([192, 168, 1, 10], 6, 443)[..22]));
    }

    #[test]
    fn later_fragments_match_on_address_and_protocol() {
        let r = list(&[("allow", "192.168.1.10:443/tcp")]);
        let mut frag = v4([192, 168, 1, 10], 6, 9999);
        frag[6..8].copy_from_slice(&0x00b9u16.to_be_bytes());
        assert!(r.allows(&frag), "offset != 0: ports not checked");
        frag[9] = 17;
        assert!(!r.allows(&frag), "but the protocol is");
        // A first fragment (MF set, offset 0) is checked in full.
        let mut first = v4([192, 168, 1, 10], 6, 9999);
        first[6] = 0x20;
        assert!(!r.allows(&first));
    }

    #[test]
    fn ipv6_with_extension_headers_and_fragments() {
        let r = list(&[
            ("deny", "fd00:1::5"),
            ("allow", "fd00:1::/64:53/udp"),
            ("allow", "[fd00:2::7]:22/tcp"),
            ("allow", "fd00:3::/48/icmp"),
            ("allow", "10.0.0.0/8"),
        ]);
        assert!(r.allows(&v6("fd00:1::9", 17, 53)));
        assert!(!r.allows(&v6("fd00:1::5", 17, 53)), "first match: deny");
        assert!(!r.allows(&v6("fd00:1::9", 17, 54)));
        assert!(!r.allows(&v6("fd00:1:0:1::9", 17, 53)), "outside the /64");
        assert!(r.allows(&v6("fd00:2::7", 6, 22)));
        assert!(!r.allows(&v6("fd00:2::8", 6, 22)));
        assert!(r.allows(&v6("fd00:3:0:5::1", 58, 0)), "icmpv6");
        assert!(
            !r.allows(&v6("fd00:3::1", 1, 0)),
            "protocol 1 is not ICMPv6"
        );
        assert!(
            !r.allows(&v6("::ffff:10.0.0.1", 17, 53)),
            "v4 rules never match v6"
        );
        // Hop-by-hop options (8 bytes) before UDP.
        let mut p = v6("fd00:1::9", 0, 0);
        p[40] = 17;
        p[41] = 0;
        p[50..52].copy_from_slice(&53u16.to_be_bytes());
        p.truncate(56);
        assert!(r.allows(&p));
        // A fragment header: first fragment checked in full, later ones on address.
        let mut p = v6("fd00:1::9", 44, 0);
        p[40] = 17;
        p[50..52].copy_from_slice(&54u16.to_be_bytes());
        assert!(!r.allows(&p), "first fragment to port 54");
        p[42..44].copy_from_slice(&(185u16 << 3).to_be_bytes());
        assert!(r.allows(&p), "later fragment of a UDP datagram to the /64");
    }

    #[test]
    fn no_way_around_a_port_rule_without_a_transport_header() {
        // Only a deny rule: the default is allow.
        let r = list(&[("deny", "[fd00::5]:22/tcp"), ("deny", "10.0.0.5:22/tcp")]);
        assert!(!r.allows(&v6("fd00::5", 6, 22)));
        assert!(r.allows(&v6("fd00::5", 6, 80)));
        // Nine empty destination-options headers, then TCP to port 22: past the walk.
        let mut p = v6("fd00::5", 60, 0);
        p.truncate(40);
        for i in 0..9 {
            p.extend_from_slice(&[if i < 8 { 60 } else { 6 }, 0, 0, 0, 0, 0, 0, 0]);
        }
        p.extend_from_slice(&[0x9c, 0x40, 0, 22, 0, 0, 0, 0]);
        assert!(!r.allows(&p), "an unwalked chain is refused");
        // A chain cut short, and an AH header walked to the TCP header behind it.
        assert!(!r.allows(&v6("fd00::5", 60, 0)[..41]));
        let mut p = v6("fd00::5", 51, 0);
        p.truncate(40);
        p.extend_from_slice(&[
            6, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        p.extend_from_slice(&[0x9c, 0x40, 0, 22]);
        assert!(!r.allows(&p), "TCP to 22 behind AH is denied");
        p[66..68].copy_from_slice(&80u16.to_be_bytes());
        assert!(r.allows(&p), "TCP to 80 behind AH is allowed");
        // An IPv4 first fragment too short to hold the TCP ports.
        let mut p = v4([10, 0, 0, 5], 6, 22);
        p.truncate(22);
        p[6] = 0x20; // more fragments, offset 0
        assert!(!r.allows(&p), "a tiny first fragment is refused");
    }

    #[test]
    fn a_hundred_rules_compile_flat() {
        let mut entries: Vec<AccessEntry> = (0..100u8)
            .map(|i| AccessEntry {
                action: Action::Deny,
                rule: rule(&format!("172.16.{i}.0/24:1-1024/tcp")),
            })
            .collect();
        entries.push(AccessEntry {
            action: Action::Allow,
            rule: rule("0.0.0.0/0"),
        });
        let r = AccessList(entries).compile().unwrap();
        assert_eq!(r.v4.len(), 101);
        assert!(r.allows(&v4([10, 8, 0, 1], 17, 5201)));
        assert!(!r.allows(&v4([172, 16, 99, 1], 6, 80)));
    }
}
