//! TCP MSS clamping (`mssfix`) for IPv4 and IPv6 packets crossing the tunnel.
//!
//! OpenVPN rewrites the MSS option of TCP SYN packets in both directions so that full-size
//! segments still fit in one UDP datagram after encapsulation (OpenVPN mss.c). The checksum is
//! updated incrementally (RFC 1624).

/// Clamps a TCP SYN of either family: `max_mss` is the IPv4 value (an inner IPv4 + TCP
/// header of 40 bytes); IPv6's header is 20 bytes longer, so its MSS is 20 lower (mss.c
/// `mss_fixup_ipv6`).
pub fn clamp(packet: &mut [u8], max_mss: u16) {
    match packet.first().map(|b| b >> 4) {
        Some(4) => clamp_ipv4(packet, max_mss),
        Some(6) => clamp_ipv6(packet, max_mss.saturating_sub(20)),
        _ => {}
    }
}

/// Lowers the MSS option of an IPv6 TCP SYN to `max_mss` if it is larger. As OpenVPN does,
/// only a whole packet whose first next header is TCP is looked at (no extension headers).
pub fn clamp_ipv6(packet: &mut [u8], max_mss: u16) {
    if packet.len() < 40 || packet[0] >> 4 != 6 || packet[6] != 6 {
        return;
    }
    // mss.c: the payload length must match what we hold.
    if usize::from(u16::from_be_bytes([packet[4], packet[5]])) + 40 != packet.len() {
        return;
    }
    clamp_tcp(&mut packet[40..], max_mss);
}

/// Lowers the MSS option of an IPv4 TCP SYN to `max_mss` if it is larger. Anything that is not
/// a well-formed IPv4 TCP SYN is left alone.
pub fn clamp_ipv4(packet: &mut [u8], max_mss: u16) {
    let Some(&vihl) = packet.first() else { return };
    if vihl >> 4 != 4 || packet.len() < 20 {
        return;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    // Protocol TCP, not a fragment (fragment offset 0 and MF clear).
    if packet[9] != 6 || ihl < 20 || (u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff) != 0 {
        return;
    }
    let Some(tcp) = packet.get_mut(ihl..) else {
        return;
    };
    clamp_tcp(tcp, max_mss);
}

/// The MSS option of a TCP SYN (`tcp`: the TCP header and what follows), family-independent
/// as mss.c `mss_fixup_dowork` is. The TCP checksum's pseudo-header holds no MSS, so the
/// incremental update is the same for both families.
fn clamp_tcp(tcp: &mut [u8], max_mss: u16) {
    if tcp.len() < 20 {
        return;
    }
    const SYN: u8 = 0x02;
    if tcp[13] & SYN == 0 {
        return;
    }
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    if data_offset < 20 || data_offset > tcp.len() {
        return;
    }
    let mut i = 20;
    while i < data_offset {
        match tcp[i] {
            0 => break,  // end of options
            1 => i += 1, // no-op
            kind => {
                let Some(&len) = tcp.get(i + 1) else { return };
                let len = usize::from(len);
                if len < 2 || i + len > data_offset {
                    return;
                }
                if kind == 2 && len == 4 {
                    let mss = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                    if mss > max_mss {
                        tcp[i + 2..i + 4].copy_from_slice(&max_mss.to_be_bytes());
                        let sum = u16::from_be_bytes([tcp[16], tcp[17]]);
                        let new = checksum_adjust(sum, mss, max_mss);
                        tcp[16..18].copy_from_slice(&new.to_be_bytes());
                    }
                    return;
                }
                i += len;
            }
        }
    }
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
fn checksum_adjust(sum: u16, old: u16, new: u16) -> u16 {
    let mut acc = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::Ipv6Addr;

    use super::*;

    fn csum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            acc += u32::from(w);
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// A TCP SYN (port 1234 to 80) with an MSS option and a valid checksum, over IPv4
    /// or IPv6.
    fn syn(v6: bool, mss: u16) -> Vec<u8> {
        let ip = if v6 { 40 } else { 20 };
        let mut p = vec![0u8; ip + 24];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&24u16.to_be_bytes());
            p[6] = 6;
            p[7] = 64;
            p[8..24].copy_from_slice(&Ipv6Addr::new(0xfd00, 8, 0, 0, 0, 0, 0, 0x1000).octets());
            p[24..40].copy_from_slice(&Ipv6Addr::new(0xfd00, 8, 0, 0, 0, 0, 0, 1).octets());
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&44u16.to_be_bytes());
            p[8] = 64;
            p[9] = 6;
            p[12..16].copy_from_slice(&[10, 8, 0, 2]);
            p[16..20].copy_from_slice(&[10, 8, 0, 1]);
        }
        let t = &mut p[ip..];
        t[0..2].copy_from_slice(&1234u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = 6 << 4;
        t[13] = 0x02;
        t[20] = 2;
        t[21] = 4;
        t[22..24].copy_from_slice(&mss.to_be_bytes());
        let c = tcp_checksum(&p);
        p[ip + 16..ip + 18].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The length of the (option-less) IP header.
    fn ip_len(p: &[u8]) -> usize {
        if p[0] >> 4 == 6 { 40 } else { 20 }
    }

    /// The MSS option's value.
    fn mss_of(p: &[u8]) -> u16 {
        let ip = ip_len(p);
        u16::from_be_bytes([p[ip + 22], p[ip + 23]])
    }

    /// The TCP checksum over the pseudo header (IPv6's layout; IPv4's 16-bit words sum
    /// the same), with the checksum field as it is in `pkt`.
    fn tcp_checksum(pkt: &[u8]) -> u16 {
        let ip = ip_len(pkt);
        let addrs = if ip == 40 { 8..40 } else { 12..20 };
        let tcp = &pkt[ip..];
        let mut pseudo = pkt[addrs].to_vec();
        pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
        pseudo.extend_from_slice(tcp);
        csum(&pseudo)
    }

    /// Whether the stored TCP checksum is valid.
    fn checksum_valid(pkt: &[u8]) -> bool {
        let ip = ip_len(pkt);
        let mut p = pkt.to_vec();
        let stored = u16::from_be_bytes([p[ip + 16], p[ip + 17]]);
        p[ip + 16..ip + 18].fill(0);
        stored == tcp_checksum(&p)
    }

    #[test]
    fn clamps_and_keeps_checksum_valid() {
        let mut p = syn(false, 1460);
        clamp_ipv4(&mut p, 1360);
        assert_eq!(mss_of(&p), 1360);
        assert!(checksum_valid(&p));
    }

    #[test]
    fn leaves_small_mss_and_non_syn_alone() {
        let mut p = syn(false, 1200);
        let orig = p.clone();
        clamp_ipv4(&mut p, 1360);
        assert_eq!(p, orig);
        let mut q = syn(false, 1460);
        q[33] = 0x10; // ACK only
        let orig = q.clone();
        clamp_ipv4(&mut q, 1360);
        assert_eq!(q, orig);
    }

    #[test]
    fn ipv6_syns_are_clamped_20_lower() {
        let mut p = syn(true, 1440);
        clamp(&mut p, 1360);
        assert_eq!(mss_of(&p), 1340, "IPv4 value minus 20");
        assert!(checksum_valid(&p));
        // An IPv4 SYN through the same entry point: the IPv4 value.
        let mut q = syn(false, 1460);
        clamp(&mut q, 1360);
        assert_eq!(mss_of(&q), 1360);
        // A truncated packet (payload length disagrees) and a small MSS are left alone.
        let mut r = syn(true, 1440);
        r.push(0);
        let orig = r.clone();
        clamp(&mut r, 1360);
        assert_eq!(r, orig);
        let mut r = syn(true, 1200);
        let orig = r.clone();
        clamp(&mut r, 1360);
        assert_eq!(r, orig);
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut rng = warren_core::TestRng::seed(1);
        for n in 0..2000 {
            let mut p = vec![0u8; (n % 80) as usize];
            warren_core::Rng::fill(&mut rng, &mut p);
            if let Some(b) = p.first_mut() {
                *b = 0x45;
            }
            if p.len() > 9 {
                p[9] = 6;
            }
            clamp_ipv4(&mut p, 1300);
            if let Some(b) = p.first_mut() {
                *b = 0x60;
            }
            if p.len() > 6 {
                p[6] = 6;
            }
            if p.len() >= 40 {
                let l = (p.len() - 40) as u16;
                p[4..6].copy_from_slice(&l.to_be_bytes());
            }
            clamp(&mut p, 1300);
        }
    }
}
