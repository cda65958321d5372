//! Conversions from parsed OpenVPN directives (`warren-config`) to engine settings, shared by
//! `warren server` and `warren client`.
use crate::error::{Context, Error, Result};
use warren_config::{Material, TlsCryptV2};
use warren_crypto::{
    CipherKind, Digest, KeyDirection, StaticKey, TlsCryptV2ClientKey, TlsCryptV2ServerKey,
};
use warren_openvpn::{TlsCryptV2Settings, WrapConfig};
use zeroize::Zeroizing;

/// `tls-crypt` / `tls-auth`, the latter with the HMAC digest the config settled on.
pub fn wrap_config(
    tls_crypt: Option<&Material>,
    tls_auth: Option<&(Material, Option<u8>)>,
    digest_name: &str,
) -> Result<WrapConfig> {
    if let Some(m) = tls_crypt {
        let text = Zeroizing::new(m.load_for("tls-crypt")?);
        let key = StaticKey::parse(&text).context("`tls-crypt` key")?;
        return Ok(WrapConfig::TlsCrypt { key });
    }
    if let Some((m, dir)) = tls_auth {
        let text = Zeroizing::new(m.load_for("tls-auth")?);
        let key = StaticKey::parse(&text).context("`tls-auth` key")?;
        let digest =
            Digest::from_name(digest_name).ok_or_else(|| Error::Digest(digest_name.to_owned()))?;
        let direction = match dir {
            Some(d) => Some(KeyDirection::from_arg(*d).ok_or(Error::KeyDirection(*d))?),
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

/// A server's `tls-crypt-v2` (ops sheet §7): its key, and `others`, the wrapping of the
/// clients without tls-crypt-v2 (`tls-crypt` or `tls-auth` beside it, or none: refused).
pub fn tls_crypt_v2_server(v2: &TlsCryptV2, others: WrapConfig) -> Result<WrapConfig> {
    let loc = &v2.location;
    let text = Zeroizing::new(
        v2.key
            .load_for("tls-crypt-v2")
            .with_context(|| format!("{loc}: tls-crypt-v2"))?,
    );
    let key = TlsCryptV2ServerKey::parse(&text)
        .with_context(|| format!("{loc}: `tls-crypt-v2` needs the server key"))?;
    Ok(WrapConfig::TlsCryptV2Server(TlsCryptV2Settings {
        key,
        force_cookie: v2.force_cookie,
        max_age_days: v2.max_age_days,
        others: Box::new(others),
    }))
}

/// A client's `tls-crypt-v2`: its own key (Kc and the wrapped WKc).
pub fn tls_crypt_v2_client(v2: &TlsCryptV2) -> Result<WrapConfig> {
    let loc = &v2.location;
    let text = Zeroizing::new(
        v2.key
            .load_for("tls-crypt-v2")
            .with_context(|| format!("{loc}: tls-crypt-v2"))?,
    );
    let key = TlsCryptV2ClientKey::parse(&text)
        .with_context(|| format!("{loc}: `tls-crypt-v2` needs a client key"))?;
    Ok(WrapConfig::TlsCryptV2Client { key })
}

/// For log lines.
pub fn wrap_name(w: &WrapConfig) -> &'static str {
    match w {
        WrapConfig::None => "no tls-auth/tls-crypt",
        WrapConfig::TlsAuth { .. } => "tls-auth",
        WrapConfig::TlsCrypt { .. } => "tls-crypt",
        WrapConfig::TlsCryptV2Client { .. } => "tls-crypt-v2",
        WrapConfig::TlsCryptV2Server(v2) => match &*v2.others {
            WrapConfig::TlsAuth { .. } => "tls-crypt-v2 (and tls-auth for other clients)",
            WrapConfig::TlsCrypt { .. } => "tls-crypt-v2 (and tls-crypt for other clients)",
            _ => "tls-crypt-v2 (clients without it are refused)",
        },
    }
}

/// The `data-ciphers` names the config settled on (validated and defaulted there).
/// `auth` (the config's digest name) sets the HMAC of the legacy CBC ciphers.
pub fn data_ciphers(names: &[String], auth: Option<&str>) -> Result<Vec<CipherKind>> {
    names.iter().map(|n| cipher_with_auth(n, auth)).collect()
}

/// One cipher, with the `auth` HMAC digest if it is a CBC cipher (default SHA1).
pub fn cipher_with_auth(name: &str, auth: Option<&str>) -> Result<CipherKind> {
    let kind = cipher_kind(name)?;
    match auth {
        None => Ok(kind),
        Some(a) => Digest::from_name(a)
            .map(|d| kind.with_auth(d))
            .ok_or_else(|| Error::Cipher(format!("{name} with auth {a}"))),
    }
}

/// Whether any of the data-channel ciphers is a legacy CBC one (warned about at startup).
pub fn legacy_cbc(kinds: &[CipherKind], fallback: Option<CipherKind>) -> Option<CipherKind> {
    kinds.iter().copied().chain(fallback).find(|k| !k.is_aead())
}

pub fn cipher_kind(name: &str) -> Result<CipherKind> {
    CipherKind::from_name(name).ok_or_else(|| Error::Cipher(name.to_owned()))
}

pub fn key_derivation(p: warren_config::KeyDerivationPolicy) -> warren_openvpn::KeyDerivation {
    match p {
        warren_config::KeyDerivationPolicy::Auto => warren_openvpn::KeyDerivation::Auto,
        warren_config::KeyDerivationPolicy::Prf => warren_openvpn::KeyDerivation::ForcePrf,
    }
}

pub fn tls_version(v: warren_config::TlsVersion) -> warren_openvpn::tls::TlsVersion {
    match v {
        warren_config::TlsVersion::V1_2 => warren_openvpn::tls::TlsVersion::V1_2,
        warren_config::TlsVersion::V1_3 => warren_openvpn::tls::TlsVersion::V1_3,
    }
}

/// `tls-groups`, `tls-cipher` and `tls-ciphersuites` as the TLS layer takes them.
pub fn tls_algorithms(
    groups: Option<&[warren_config::TlsGroup]>,
    tls12: Option<&[warren_config::TlsCipherSuite]>,
    tls13: Option<&[warren_config::TlsCipherSuite]>,
) -> warren_openvpn::tls::TlsAlgorithms {
    use warren_config::TlsCipherSuite as C;
    use warren_openvpn::tls::{CipherSuite as S, KxGroup as G};
    let group = |g: &warren_config::TlsGroup| match g {
        warren_config::TlsGroup::X25519 => G::X25519,
        warren_config::TlsGroup::P256 => G::P256,
        warren_config::TlsGroup::P384 => G::P384,
    };
    let suite = |c: &C| match c {
        C::Tls13Aes256GcmSha384 => S::Tls13Aes256GcmSha384,
        C::Tls13Aes128GcmSha256 => S::Tls13Aes128GcmSha256,
        C::Tls13Chacha20Poly1305Sha256 => S::Tls13Chacha20Poly1305Sha256,
        C::EcdheEcdsaAes256GcmSha384 => S::EcdheEcdsaAes256GcmSha384,
        C::EcdheEcdsaAes128GcmSha256 => S::EcdheEcdsaAes128GcmSha256,
        C::EcdheEcdsaChacha20Poly1305Sha256 => S::EcdheEcdsaChacha20Poly1305Sha256,
        C::EcdheRsaAes256GcmSha384 => S::EcdheRsaAes256GcmSha384,
        C::EcdheRsaAes128GcmSha256 => S::EcdheRsaAes128GcmSha256,
        C::EcdheRsaChacha20Poly1305Sha256 => S::EcdheRsaChacha20Poly1305Sha256,
    };
    warren_openvpn::tls::TlsAlgorithms {
        kx_groups: groups.map(|l| l.iter().map(group).collect()),
        tls12_suites: tls12.map(|l| l.iter().map(suite).collect()),
        tls13_suites: tls13.map(|l| l.iter().map(suite).collect()),
    }
}

pub fn cert_role(r: warren_config::CertRole) -> warren_openvpn::tls::CertRole {
    match r {
        warren_config::CertRole::Client => warren_openvpn::tls::CertRole::Client,
        warren_config::CertRole::Server => warren_openvpn::tls::CertRole::Server,
    }
}

pub fn x509_match(t: warren_config::X509NameType) -> warren_openvpn::tls::X509NameMatch {
    match t {
        warren_config::X509NameType::Subject => warren_openvpn::tls::X509NameMatch::Subject,
        warren_config::X509NameType::Name => warren_openvpn::tls::X509NameMatch::Name,
        warren_config::X509NameType::NamePrefix => warren_openvpn::tls::X509NameMatch::NamePrefix,
    }
}
