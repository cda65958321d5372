//! The environment of `>CLIENT:` notifications: the variables OpenVPN sets for a client
//! (ssl_verify.c `verify_cert_set_env`, `setenv_untrusted`, multi.c `multi_client_connect_setenv`,
//! `setenv_stats`, ssl.c peer info), built from what the engine reports.
use std::fmt::Write as _;
use std::net::SocketAddr;

use sha1::Digest as _;
use warren_wire::PeerInfo;
use x509_parser::prelude::{FromDer, X509Certificate};

/// One variable.
pub type Var = (String, String);

fn var(k: impl Into<String>, v: impl Into<String>) -> Var {
    (k.into(), v.into())
}

/// `aa:bb:cc`, lower case (OpenVPN buffer.c `format_hex_ex` with ":").
fn colon_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Short names OpenVPN (OpenSSL's `OBJ_nid2sn`) uses for subject fields.
fn field_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// Keeps a value on one `>CLIENT:ENV,` line.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

/// The depth-0 certificate variables: `tls_serial_hex_0`, `tls_serial_0`,
/// `tls_digest_sha256_0`, `tls_digest_0`, `tls_id_0`, `X509_0_<field>`. Empty for a
/// certificate that does not parse (the engine already verified it, so that does not
/// happen).
pub fn certificate(der: &[u8]) -> Vec<Var> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let tbs = &cert.tbs_certificate;
    let mut v = vec![
        var("tls_serial_hex_0", colon_hex(tbs.raw_serial())),
        var("tls_serial_0", tbs.serial.to_string()),
        var("tls_digest_sha256_0", colon_hex(&sha2::Sha256::digest(der))),
        var("tls_digest_0", colon_hex(&sha1::Sha1::digest(der))),
        var("tls_id_0", clean(&tbs.subject.to_string())),
    ];
    for attr in tbs.subject.iter_attributes() {
        if let (Some(name), Ok(value)) =
            (field_name(&attr.attr_type().to_id_string()), attr.as_str())
        {
            v.push(var(format!("X509_0_{name}"), clean(value)));
        }
    }
    v
}

/// The peer info lines (`IV_VER`, `IV_PLAT`, `IV_PROTO`, `IV_CIPHERS`, ...).
pub fn peer_info(info: &PeerInfo) -> Vec<Var> {
    let mut v = Vec::new();
    if let Some(x) = &info.version {
        v.push(var("IV_VER", clean(x)));
    }
    if let Some(x) = &info.platform {
        v.push(var("IV_PLAT", clean(x)));
    }
    if info.proto != 0 {
        v.push(var("IV_PROTO", info.proto.to_string()));
    }
    if !info.ciphers.is_empty() {
        v.push(var("IV_CIPHERS", clean(&info.ciphers.join(":"))));
    }
    if let Some(x) = info.ncp {
        v.push(var("IV_NCP", x.to_string()));
    }
    if let Some(x) = info.mtu {
        v.push(var("IV_MTU", x.to_string()));
    }
    for (k, x) in &info.other {
        // Only names OpenVPN passes on (ssl.c: IV_ and UV_ variables).
        if (k.starts_with("IV_") || k.starts_with("UV_"))
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            v.push(var(k.clone(), clean(x)));
        }
    }
    v
}

/// The client's address: `untrusted_ip`/`untrusted_port` before authentication,
/// `trusted_ip`/`trusted_port` after (IPv6: `untrusted_ip6`, `trusted_ip6`).
pub fn address(trusted: bool, addr: &SocketAddr) -> Vec<Var> {
    let prefix = if trusted { "trusted" } else { "untrusted" };
    let ip = addr.ip().to_canonical();
    let ip_name = if ip.is_ipv4() {
        format!("{prefix}_ip")
    } else {
        format!("{prefix}_ip6")
    };
    vec![
        var(ip_name, ip.to_string()),
        var(format!("{prefix}_port"), addr.port().to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_addresses() {
        assert_eq!(colon_hex(&[0x69, 0x9d, 0x00]), "69:9d:00");
        assert_eq!(
            address(false, &"198.18.1.2:51473".parse().expect("addr")),
            [
                var("untrusted_ip", "198.18.1.2"),
                var("untrusted_port", "51473")
            ]
        );
        assert_eq!(
            address(true, &"[::ffff:192.0.2.1]:5".parse().expect("addr"))[0],
            var("trusted_ip", "192.0.2.1")
        );
        assert_eq!(
            address(true, &"[2001:db8::1]:5".parse().expect("addr"))[0],
            var("trusted_ip6", "2001:db8::1")
        );
        let pi = PeerInfo::parse(
            "IV_VER=2.6.14\nIV_PROTO=990\nIV_CIPHERS=AES-256-GCM:AES-128-GCM\nIV_GUI_VER=x\nbad key=1\n",
        );
        let v = peer_info(&pi);
        assert!(v.contains(&var("IV_VER", "2.6.14")));
        assert!(v.contains(&var("IV_PROTO", "990")));
        assert!(v.contains(&var("IV_CIPHERS", "AES-256-GCM:AES-128-GCM")));
        assert!(v.contains(&var("IV_GUI_VER", "x")));
        assert!(!v.iter().any(|(k, _)| k.contains(' ')));
    }
}
