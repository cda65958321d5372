//! Certificate names the way OpenVPN (built with OpenSSL) sees them: the common name used as
//! the peer's identity and the one-line subject compared by `verify-x509-name ... subject`.

use std::fmt::Write as _;

use x509_parser::asn1_rs::{Any, Class};
use x509_parser::x509::X509Name;

use super::MAX_COMMON_NAME_LEN;

/// Why no usable common name could be extracted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum CnError {
    /// The subject has no CN attribute.
    Missing,
    /// The CN (as UTF-8) is longer than OpenVPN's limit.
    TooLong(usize),
    /// The CN is not a string type, not valid in its encoding, or contains NUL.
    Undecodable,
}

const OID_CN: &str = "2.5.4.3";

/// The leaf's common name as OpenVPN derives it (`ssl_verify_openssl.c:extract_x509_field_ssl`):
/// the **last** CN attribute, converted to UTF-8 (`ASN1_STRING_to_UTF8`), at most 64 bytes,
/// then control characters replaced by `_` (`ssl_verify.c:string_mod_remap_name`).
pub(super) fn common_name(name: &X509Name<'_>) -> Result<String, CnError> {
    let attr = name
        .iter_attributes()
        .filter(|a| a.attr_type().to_id_string() == OID_CN)
        .last()
        .ok_or(CnError::Missing)?;
    let cn = decode_string(attr.attr_value()).ok_or(CnError::Undecodable)?;
    // OpenSSL hands OpenVPN a C string; an embedded NUL would silently truncate the name
    // there. Refuse such names rather than reproduce that.
    if cn.contains('\0') {
        return Err(CnError::Undecodable);
    }
    if cn.len() > MAX_COMMON_NAME_LEN {
        return Err(CnError::TooLong(cn.len()));
    }
    Ok(remap_name(&cn))
}

/// The subject as OpenVPN prints it: `X509_NAME_print_ex` with `XN_FLAG_SEP_CPLUS_SPC |
/// XN_FLAG_FN_SN | ASN1_STRFLGS_UTF8_CONVERT | ASN1_STRFLGS_ESC_CTRL`
/// (`ssl_verify_openssl.c:x509_get_subject`), then `string_mod_remap_name` and leading `-`
/// replaced by `_` (`ssl_verify.c:verify_cert`).
///
/// RDNs are joined with `", "` in certificate order, multi-valued RDNs with `" + "`, each
/// attribute as `SN=value` using OpenSSL's short names (unknown types print as dotted OIDs),
/// and control characters in values as `\XX`.
pub(super) fn openvpn_subject(name: &X509Name<'_>) -> Option<String> {
    let mut out = String::new();
    for (i, rdn) in name.iter_rdn().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            let oid = attr.attr_type().to_id_string();
            out.push_str(short_name(&oid).unwrap_or(&oid));
            out.push('=');
            let value = decode_for_print(attr.attr_value())?;
            for c in value.chars() {
                if (c as u32) < 0x20 || c == '\u{7f}' {
                    // ASN1_STRFLGS_ESC_CTRL (crypto/asn1/a_strex.c do_esc_char).
                    let _ = write!(out, "\\{:02X}", c as u32);
                } else {
                    out.push(c);
                }
            }
        }
    }
    let mut out = remap_name(&out);
    // OpenVPN buffer.c string_replace_leading(subject, '-', '_').
    let leading = out.bytes().take_while(|b| *b == b'-').count();
    out.replace_range(..leading, &"_".repeat(leading));
    Some(out)
}

/// OpenVPN `string_mod(str, CC_PRINT, CC_CRLF, '_')`: bytes below 32 and DEL become `_`
/// (bytes of multi-byte UTF-8 are >= 128 and stay).
pub(crate) fn remap_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if (c as u32) < 0x20 || c == '\u{7f}' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// ASN.1 universal string tags, numbered as in X.680.
mod tag {
    pub const UTF8: u32 = 12;
    pub const NUMERIC: u32 = 18;
    pub const PRINTABLE: u32 = 19;
    pub const T61: u32 = 20;
    pub const IA5: u32 = 22;
    pub const UTC_TIME: u32 = 23;
    pub const GENERALIZED_TIME: u32 = 24;
    pub const VISIBLE: u32 = 26;
    pub const UNIVERSAL: u32 = 28;
    pub const BMP: u32 = 30;
}

/// `ASN1_STRING_to_UTF8`: string types by their width (OpenSSL `a_strex.c` `tag2nbyte`);
/// one-byte types are read as Latin-1. `None` for non-string types and bad encodings.
fn decode_string(any: &Any<'_>) -> Option<String> {
    if any.class() != Class::Universal {
        return None;
    }
    let data = any.data;
    match any.tag().0 {
        tag::UTF8 => std::str::from_utf8(data).ok().map(str::to_owned),
        tag::NUMERIC
        | tag::PRINTABLE
        | tag::T61
        | tag::IA5
        | tag::UTC_TIME
        | tag::GENERALIZED_TIME
        | tag::VISIBLE => Some(data.iter().map(|b| char::from(*b)).collect()),
        tag::UNIVERSAL => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        tag::BMP => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            data.chunks_exact(2)
                .map(|c| char::from_u32(u32::from(u16::from_be_bytes([c[0], c[1]]))))
                .collect()
        }
        _ => None,
    }
}

/// Like [`decode_string`], but as `X509_NAME_print_ex` without `DUMP_UNKNOWN`: values of
/// other types print their content bytes one per character.
fn decode_for_print(any: &Any<'_>) -> Option<String> {
    if any.class() == Class::Universal
        && matches!(any.tag().0, tag::UTF8 | tag::UNIVERSAL | tag::BMP)
    {
        return decode_string(any);
    }
    Some(any.data.iter().map(|b| char::from(*b)).collect())
}

/// OpenSSL's short name for common X.520/PKCS#9 attribute types (`crypto/objects/objects.txt`).
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.45" => "x500UniqueIdentifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.72" => "role",
        "2.5.4.97" => "organizationIdentifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.3.6.1.4.1.311.60.2.1.1" => "jurisdictionL",
        "1.3.6.1.4.1.311.60.2.1.2" => "jurisdictionST",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    /// DER of a Name from (oid bytes, tag, value) RDNs, each RDN single-valued.
    fn name_der(rdns: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            assert!(body.len() < 128);
            let mut v = vec![tag, body.len() as u8];
            v.extend_from_slice(body);
            v
        }
        let mut seq = Vec::new();
        for (oid, t, value) in rdns {
            let mut atv = tlv(0x06, oid);
            atv.extend(tlv(*t, value));
            seq.extend(tlv(0x31, &tlv(0x30, &atv)));
        }
        tlv(0x30, &seq)
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const C: &[u8] = &[0x55, 0x04, 0x06];
    const O: &[u8] = &[0x55, 0x04, 0x0a];

    fn with_name<R>(der: &[u8], f: impl FnOnce(&X509Name<'_>) -> R) -> R {
        let (_, name) = X509Name::from_der(der).expect("test name parses");
        f(&name)
    }

    #[test]
    fn subject_like_openssl() {
        let der = name_der(&[
            (C, 19, b"DE"),
            (O, 12, b"Example GmbH"),
            (CN, 12, b"server"),
        ]);
        with_name(&der, |n| {
            assert_eq!(
                openvpn_subject(n).as_deref(),
                Some("C=DE, O=Example GmbH, CN=server")
            );
            assert_eq!(common_name(n), Ok("server".to_owned()));
        });
    }

    #[test]
    fn last_cn_wins_and_control_chars() {
        let der = name_der(&[(CN, 12, b"first"), (CN, 12, b"a\tb")]);
        with_name(&der, |n| {
            assert_eq!(common_name(n), Ok("a_b".to_owned()));
            assert_eq!(openvpn_subject(n).as_deref(), Some("CN=first, CN=a\\09b"));
        });
    }

    #[test]
    fn cn_limits() {
        let long = [b'x'; 65];
        with_name(&name_der(&[(CN, 12, &long)]), |n| {
            assert_eq!(common_name(n), Err(CnError::TooLong(65)))
        });
        with_name(&name_der(&[(CN, 12, &long[..64])]), |n| {
            assert_eq!(common_name(n).map(|s| s.len()), Ok(64))
        });
        with_name(&name_der(&[(O, 12, b"org")]), |n| {
            assert_eq!(common_name(n), Err(CnError::Missing))
        });
        with_name(&name_der(&[(CN, 12, b"a\0b")]), |n| {
            assert_eq!(common_name(n), Err(CnError::Undecodable))
        });
        with_name(&name_der(&[(CN, 12, &[0xff, 0xfe])]), |n| {
            assert_eq!(common_name(n), Err(CnError::Undecodable))
        });
    }

    #[test]
    fn string_encodings() {
        // BMPString "hé", T61String Latin-1 "é", UniversalString "z".
        with_name(&name_der(&[(CN, 30, &[0, b'h', 0, 0xe9])]), |n| {
            assert_eq!(common_name(n), Ok("hé".to_owned()))
        });
        with_name(&name_der(&[(CN, 20, &[0xe9])]), |n| {
            assert_eq!(common_name(n), Ok("é".to_owned()))
        });
        with_name(&name_der(&[(CN, 28, &[0, 0, 0, b'z'])]), |n| {
            assert_eq!(common_name(n), Ok("z".to_owned()))
        });
        with_name(&name_der(&[(CN, 30, &[0, b'h', 0])]), |n| {
            assert_eq!(common_name(n), Err(CnError::Undecodable))
        });
    }

    proptest::proptest! {
        /// Any attribute type and content: no panic, and a CN result obeys the limits.
        #[test]
        fn arbitrary_values_never_panic(
            t in proptest::sample::select(vec![4u8, 12, 18, 19, 20, 22, 26, 28, 30, 0x80, 0xa0]),
            value in proptest::collection::vec(proptest::num::u8::ANY, 0..100),
        ) {
            let der = name_der(&[(O, 12, b"x"), (CN, t, &value)]);
            with_name(&der, |n| {
                if let Ok(cn) = common_name(n) {
                    proptest::prop_assert!(cn.len() <= MAX_COMMON_NAME_LEN);
                    let has_control = cn.chars().any(|c| (c as u32) < 0x20 || c == '\u{7f}');
                    proptest::prop_assert!(!has_control);
                }
                if let Some(subject) = openvpn_subject(n) {
                    proptest::prop_assert!(subject.starts_with("O=x, CN="));
                }
                Ok(())
            })?;
        }

        /// Printable names come back unchanged, as CN and inside the subject.
        #[test]
        fn printable_names_round_trip(cn in "[ -~]{1,64}") {
            let der = name_der(&[(CN, 12, cn.as_bytes())]);
            with_name(&der, |n| {
                proptest::prop_assert_eq!(common_name(n), Ok(cn.clone()));
                proptest::prop_assert_eq!(openvpn_subject(n), Some(format!("CN={cn}")));
                Ok(())
            })?;
        }
    }

    #[test]
    fn leading_dash_and_unknown_oid() {
        let unknown: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x01]; // 1.3.6.1.4.1.1
        let der = name_der(&[(CN, 12, b"--x"), (unknown, 12, b"v")]);
        with_name(&der, |n| {
            assert_eq!(
                openvpn_subject(n).as_deref(),
                Some("CN=--x, 1.3.6.1.4.1.1=v")
            );
        });
        let der = name_der(&[(unknown, 12, b"v")]);
        with_name(&der, |n| {
            assert_eq!(openvpn_subject(n).as_deref(), Some("1.3.6.1.4.1.1=v"))
        });
    }
}
