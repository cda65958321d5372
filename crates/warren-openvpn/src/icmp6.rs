//! ICMPv6 "destination unreachable, no route" for `block-ipv6`.
//!
//! OpenVPN forward.c `ipv6_send_icmp_unreachable`: the reply keeps the offending packet's
//! version, traffic class and flow label, goes from the `ifconfig-ipv6` remote (else
//! `fe80::7`) to the packet's source, and carries as much of the packet as fits in 1280
//! bytes and the tun MTU (RFC 4443 §3.1). The checksum covers the IPv6 pseudo-header.
use std::net::Ipv6Addr;

/// IPv6 header plus ICMPv6 header.
const HEADERS: usize = 40 + 8;
/// RFC 4443 §2.4 (c): an error message fits in the minimum IPv6 MTU.
const MAX_ICMPV6_LEN: usize = 1280;
/// ICMPv6 type 1 (destination unreachable), code 0 (no route to destination).
const DESTINATION_UNREACHABLE: u8 = 1;
const NO_ROUTE: u8 = 0;
/// ICMPv6's next-header value.
const IPPROTO_ICMPV6: u8 = 58;

/// The address OpenVPN answers from when it has no `ifconfig-ipv6` remote.
pub const FALLBACK_SOURCE: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 7);

/// Whether `pkt` is an IPv6 packet (by its version nibble, as the data channel tells
/// the families apart).
pub fn is_ipv6(pkt: &[u8]) -> bool {
    pkt.first().is_some_and(|b| b >> 4 == 6)
}

/// Writes the ICMPv6 no-route reply to the IPv6 packet `pkt` into `out` and returns its
/// length, or `None` when `pkt` is not an IPv6 packet, must not be answered (RFC 4443
/// §2.4 (e): a multicast destination, or an unspecified or multicast source), or `out` is
/// too small. The reply is at most `min(1280, tun_mtu)` bytes.
pub fn no_route_reply(pkt: &[u8], from: Ipv6Addr, tun_mtu: u16, out: &mut [u8]) -> Option<usize> {
    if pkt.len() < 40 || !is_ipv6(pkt) {
        return None;
    }
    let src: [u8; 16] = pkt[8..24].try_into().ok()?;
    let dst = &pkt[24..40];
    let src_addr = Ipv6Addr::from(src);
    if dst[0] == 0xff || src_addr.is_unspecified() || src[0] == 0xff {
        return None;
    }
    // forward.c: max_payload_size = min(1280, tun_mtu - 48).
    let room = MAX_ICMPV6_LEN.min(usize::from(tun_mtu).saturating_sub(HEADERS));
    let payload = pkt.len().min(room);
    let total = HEADERS + payload;
    let out = out.get_mut(..total)?;
    let icmp_len = u16::try_from(8 + payload).ok()?;
    // Version, traffic class and flow label of the offending packet.
    out[0..4].copy_from_slice(&pkt[0..4]);
    out[4..6].copy_from_slice(&icmp_len.to_be_bytes());
    out[6] = IPPROTO_ICMPV6;
    // forward.c copies the input header, hop limit included.
    out[7] = pkt[7];
    out[8..24].copy_from_slice(&from.octets());
    out[24..40].copy_from_slice(&src);
    out[40] = DESTINATION_UNREACHABLE;
    out[41] = NO_ROUTE;
    out[42..48].fill(0);
    out[48..].copy_from_slice(&pkt[..payload]);
    let sum = checksum(&from.octets(), &src, IPPROTO_ICMPV6, &out[40..]);
    out[42..44].copy_from_slice(&sum.to_be_bytes());
    Some(total)
}

/// The Internet checksum of an upper-layer message over the IPv6 pseudo-header
/// (RFC 8200 §8.1).
fn checksum(src: &[u8; 16], dst: &[u8; 16], next: u8, body: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut add = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            acc += u64::from(u16::from_be_bytes([*last, 0]));
        }
    };
    add(src);
    add(dst);
    add(&(body.len() as u32).to_be_bytes());
    add(&[0, 0, 0, next]);
    add(body);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An IPv6/UDP packet of `len` bytes from `src` to `dst`.
    fn udp6(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x6a; // version 6, traffic class 0xa_
        p[1] = 0xbc;
        p[2] = 0x12;
        p[3] = 0x34;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = 17;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    /// RFC 1071 one's-complement sum over the pseudo-header, written out independently of
    /// `checksum`: a correct message sums to 0xffff.
    fn sums_to_ones(src: &[u8], dst: &[u8], msg: &[u8]) -> bool {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(src);
        pseudo.extend_from_slice(dst);
        pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(msg);
        if pseudo.len() % 2 == 1 {
            pseudo.push(0);
        }
        let mut s: u32 = 0;
        for w in pseudo.chunks(2) {
            s += u32::from(w[0]) << 8 | u32::from(w[1]);
            s = (s & 0xffff) + (s >> 16);
        }
        s == 0xffff
    }

    #[test]
    fn reply_follows_openvpn_and_its_checksum_is_valid() {
        let client: Ipv6Addr = "fd00:8::1000".parse().unwrap();
        let far: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let remote: Ipv6Addr = "fd00:8::1".parse().unwrap();
        for len in [40, 41, 100, 1231, 1500] {
            let pkt = udp6(client, far, len);
            let mut out = [0u8; 2000];
            let n = no_route_reply(&pkt, remote, 1500, &mut out).expect("reply");
            let r = &out[..n];
            let payload = len.min(1280);
            assert_eq!(n, 48 + payload, "len {len}");
            assert_eq!(&r[0..4], &pkt[0..4], "version, class, flow label kept");
            assert_eq!(u16::from_be_bytes([r[4], r[5]]) as usize, 8 + payload);
            assert_eq!((r[6], r[7]), (58, 64));
            assert_eq!(&r[8..24], &remote.octets());
            assert_eq!(&r[24..40], &client.octets());
            assert_eq!((r[40], r[41], &r[44..48]), (1, 0, &[0u8; 4][..]));
            assert_eq!(&r[48..], &pkt[..payload]);
            assert!(sums_to_ones(&r[8..24], &r[24..40], &r[40..]), "len {len}");
        }
    }

    #[test]
    fn reply_fits_the_tun_mtu_and_skips_what_rfc_4443_forbids() {
        let a: Ipv6Addr = "fd00:8::1000".parse().unwrap();
        let b: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut out = [0u8; 2000];
        let n = no_route_reply(&udp6(a, b, 1400), FALLBACK_SOURCE, 1300, &mut out).unwrap();
        assert_eq!(n, 1300);
        assert_eq!(&out[8..24], &FALLBACK_SOURCE.octets());
        assert!(sums_to_ones(&out[8..24], &out[24..40], &out[40..n]));
        let mcast: Ipv6Addr = "ff02::2".parse().unwrap();
        assert_eq!(no_route_reply(&udp6(a, mcast, 60), b, 1500, &mut out), None);
        assert_eq!(
            no_route_reply(&udp6(Ipv6Addr::UNSPECIFIED, b, 60), b, 1500, &mut out),
            None
        );
        let mut v4 = udp6(a, b, 60);
        v4[0] = 0x45;
        assert_eq!(no_route_reply(&v4, b, 1500, &mut out), None);
        assert_eq!(
            no_route_reply(&udp6(a, b, 60)[..39], b, 1500, &mut out),
            None
        );
        assert_eq!(
            no_route_reply(&udp6(a, b, 60), b, 1500, &mut out[..100]),
            None
        );
    }
}
