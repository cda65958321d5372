//! Conversions from parsed OpenVPN directives (`warren-config`) to engine settings, shared by
//! `warren server` and `warren client`.
use anyhow::{Context, Result, anyhow};
use warren_config::Material;
use warren_crypto::{CipherKind, Digest, KeyDirection, StaticKey};
use warren_openvpn::WrapConfig;

/// `tls-crypt` / `tls-auth` (with `auth` for the HMAC digest, SHA1 by default as in OpenVPN).
pub fn wrap_config(
    tls_crypt: Option<&Material>,
    tls_auth: Option<&(Material, Option<u8>)>,
    auth: Option<&str>,
) -> Result<WrapConfig> {
    if let Some(m) = tls_crypt {
        let text = m.load_for("tls-crypt")?;
        let key = StaticKey::parse(&text).context("`tls-crypt` key")?;
        return Ok(WrapConfig::TlsCrypt { key });
    }
    if let Some((m, dir)) = tls_auth {
        let text = m.load_for("tls-auth")?;
        let key = StaticKey::parse(&text).context("`tls-auth` key")?;
        let name = auth.unwrap_or("SHA1");
        let digest = Digest::from_name(name).ok_or_else(|| {
            anyhow!("`auth {name}`: unsupported digest (use SHA1, SHA256 or SHA512)")
        })?;
        let direction = match dir {
            Some(d) => Some(
                KeyDirection::from_arg(*d)
                    .ok_or_else(|| anyhow!("tls-auth key direction {d}: expected 0 or 1"))?,
            ),
            None => None,
        };
        return Ok(WrapConfig::TlsAuth {
            key,
            digest,
            direction,
        });
    }
    Ok(WrapConfig::None)
}

/// For log lines.
pub fn wrap_name(w: &WrapConfig) -> &'static str {
    match w {
        WrapConfig::None => "no tls-auth/tls-crypt",
        WrapConfig::TlsAuth { .. } => "tls-auth",
        WrapConfig::TlsCrypt { .. } => "tls-crypt",
    }
}

/// `data-ciphers` (OpenVPN 2.6's default list when empty), de-duplicated, in order.
pub fn data_ciphers(list: &[String]) -> Result<Vec<CipherKind>> {
    let defaults = ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"];
    let names: Vec<&str> = if list.is_empty() {
        defaults.to_vec()
    } else {
        list.iter().map(String::as_str).collect()
    };
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let k = CipherKind::from_name(n).ok_or_else(|| {
            anyhow!("`data-ciphers`: {n} is not supported (use AES-256-GCM, AES-128-GCM, CHACHA20-POLY1305)")
        })?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

pub fn tls_version(v: warren_config::TlsVersion) -> warren_openvpn::tls::TlsVersion {
    match v {
        warren_config::TlsVersion::V1_2 => warren_openvpn::tls::TlsVersion::V1_2,
        warren_config::TlsVersion::V1_3 => warren_openvpn::tls::TlsVersion::V1_3,
    }
}

pub fn cert_role(r: warren_config::CertRole) -> warren_openvpn::tls::CertRole {
    match r {
        warren_config::CertRole::Client => warren_openvpn::tls::CertRole::Client,
        warren_config::CertRole::Server => warren_openvpn::tls::CertRole::Server,
    }
}
