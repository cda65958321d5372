//! Early-negotiation TLVs in the payload of a msg-id-0 hard reset (fact sheet §3.3; OpenVPN
//! ssl.c:2702 parse_early_negotiation_tlvs, ssl_pkt.h:329-338).

use crate::WireError;
use crate::cursor::Cursor;

/// TLV_TYPE_EARLY_NEG_FLAGS: value is a u16 of flags.
pub const TLV_TYPE_EARLY_NEG_FLAGS: u16 = 0x0001;
/// EARLY_NEG_FLAG_RESEND_WKC: the server asks a tls-crypt-v2 client to send its WKc again
/// in P_CONTROL_WKC_V1.
pub const EARLY_NEG_FLAG_RESEND_WKC: u16 = 0x0001;
/// The marker a tls-crypt-v2 client with early-negotiation support puts in the high byte of
/// its wrap packet id (ssl_pkt.h:329-330).
pub const EARLY_NEG_START: u32 = 0x0f00_0000;
pub const EARLY_NEG_MASK: u32 = 0xff00_0000;

/// Parses `u16 type | u16 len | value` records until the end. A record cut short (header
/// or value) is an error, as in OpenVPN, which aborts the session on malformed TLVs.
pub fn parse_tlvs(data: &[u8]) -> Result<Vec<(u16, &[u8])>, WireError> {
    let mut c = Cursor::new(data);
    let mut out = Vec::new();
    while c.remaining() > 0 {
        let t = c.u16()?;
        let len = c.u16()?;
        out.push((t, c.take(usize::from(len))?));
    }
    Ok(out)
}

/// Appends one TLV. Fails if `value` is longer than 65535 bytes.
pub fn write_tlv(t: u16, value: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    let len = u16::try_from(value.len()).map_err(|_| WireError::StringTooLong {
        len: value.len(),
        max: 0xFFFF,
    })?;
    out.extend_from_slice(&t.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// The early-negotiation flags in a reset payload, as OpenVPN reads them: `Ok(0)` when
/// absent; an error for malformed TLVs or a flags TLV whose length is not 2. Unknown types
/// are skipped.
pub fn early_neg_flags(data: &[u8]) -> Result<u16, WireError> {
    let mut flags = 0;
    for (t, v) in parse_tlvs(data)? {
        if t == TLV_TYPE_EARLY_NEG_FLAGS {
            let v: [u8; 2] = v
                .try_into()
                .map_err(|_| WireError::TrailingBytes(v.len()))?;
            flags |= u16::from_be_bytes(v);
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lab_resend_wkc() {
        let lab = [0x00, 0x01, 0x00, 0x02, 0x00, 0x01];
        assert_eq!(parse_tlvs(&lab).expect("tlv"), vec![(1u16, &[0u8, 1][..])]);
        assert_eq!(early_neg_flags(&lab), Ok(EARLY_NEG_FLAG_RESEND_WKC));
        let mut out = Vec::new();
        write_tlv(
            TLV_TYPE_EARLY_NEG_FLAGS,
            &EARLY_NEG_FLAG_RESEND_WKC.to_be_bytes(),
            &mut out,
        )
        .expect("w");
        assert_eq!(out, lab);
        assert_eq!(parse_tlvs(&[]).expect("empty"), vec![]);
        assert_eq!(early_neg_flags(&[]), Ok(0));
    }

    #[test]
    fn malformed() {
        assert_eq!(parse_tlvs(&[0, 1, 0]), Err(WireError::Truncated));
        assert_eq!(parse_tlvs(&[0, 1, 0, 3, 0, 0]), Err(WireError::Truncated));
        assert_eq!(
            early_neg_flags(&[0, 1, 0, 1, 0]),
            Err(WireError::TrailingBytes(1))
        );
        // Unknown types are skipped.
        assert_eq!(early_neg_flags(&[0, 9, 0, 1, 7]), Ok(0));
    }

    proptest! {
        #[test]
        fn round_trip(tlvs in prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 0..20)), 0..6)) {
            let mut out = Vec::new();
            for (t, v) in &tlvs {
                write_tlv(*t, v, &mut out).expect("w");
            }
            let back: Vec<(u16, Vec<u8>)> = parse_tlvs(&out).expect("p").into_iter().map(|(t, v)| (t, v.to_vec())).collect();
            prop_assert_eq!(back, tlvs);
        }

        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_tlvs(&data);
            let _ = early_neg_flags(&data);
        }
    }
}
