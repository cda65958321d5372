//! Reading certificates back: what a listing shows comes from the certificate itself.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::algo::KeyAlgorithm;
use crate::error::PkiError;
use crate::serial::Serial;
use crate::time_util::from_unix;

/// The role of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CertKind {
    /// A CA certificate (`basicConstraints CA:TRUE`).
    Ca,
    /// A server certificate: EKU serverAuth without clientAuth.
    Server,
    /// A client certificate: EKU clientAuth, or no EKU at all (stock OpenVPN servers without
    /// `remote-cert-tls client` accept those too).
    Client,
}

impl CertKind {
    /// `ca`, `server` or `client` (the database and CLI spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Ca => "ca",
            CertKind::Server => "server",
            CertKind::Client => "client",
        }
    }
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CertKind {
    type Err = UnknownCertKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ca" => Ok(CertKind::Ca),
            "server" => Ok(CertKind::Server),
            "client" => Ok(CertKind::Client),
            _ => Err(UnknownCertKind(s.to_owned())),
        }
    }
}

/// A certificate kind other than `ca`, `server`, `client`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown certificate kind {0:?} (expected ca, server or client)")]
pub struct UnknownCertKind(pub String);

/// What warren needs to know about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number.
    pub serial: Serial,
    /// The subject's common name (the first CN if there are several).
    pub common_name: String,
    /// The subject as a one-line string (`CN=alice`; RFC 4514-like, as x509-parser prints it).
    pub subject: String,
    /// The issuer as a one-line string.
    pub issuer: String,
    /// The role.
    pub kind: CertKind,
    /// EKU contains serverAuth.
    pub server_auth: bool,
    /// EKU contains clientAuth.
    pub client_auth: bool,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The key type, when it is one warren can generate.
    pub key_algorithm: Option<KeyAlgorithm>,
    /// A short description of the key (`ECDSA P-256`, `RSA 2048`, `RSA 1024`, `Ed25519`...).
    pub key_description: String,
    /// The X.509 version is 3 (v1 certificates are refused by rustls/webpki).
    pub is_v3: bool,
}

impl CertInfo {
    /// `true` when `now` is inside the validity period.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Parses the first `CERTIFICATE` block of `pem_text`. `what` names the input in errors.
pub fn inspect_pem(pem_text: &str, what: &str) -> Result<CertInfo, PkiError> {
    let der = first_cert_der(pem_text, what)?;
    inspect_der(&der, what)
}

/// Parses a DER certificate.
pub fn inspect_der(der: &[u8], what: &str) -> Result<CertInfo, PkiError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::BadCertificate {
        what: what.to_owned(),
        source: nom_err(e),
    })?;
    info_of(&cert, what)
}

/// The DER of the first `CERTIFICATE` block in `pem_text`.
pub(crate) fn first_cert_der(pem_text: &str, what: &str) -> Result<Vec<u8>, PkiError> {
    let blocks = pem::parse_many(pem_text).map_err(|source| PkiError::Pem {
        what: what.to_owned(),
        source,
    })?;
    blocks
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .ok_or_else(|| PkiError::NoPemBlock {
            what: what.to_owned(),
            label: "CERTIFICATE",
        })
}

/// PEM armour for a DER certificate, with `\n` line endings (the `pem` crate defaults to
/// `\r\n`).
pub(crate) fn cert_pem_of(der: Vec<u8>) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

pub(crate) fn nom_err(
    e: x509_parser::nom::Err<x509_parser::error::X509Error>,
) -> x509_parser::error::X509Error {
    match e {
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
        x509_parser::nom::Err::Incomplete(_) => x509_parser::error::X509Error::InvalidCertificate,
    }
}

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";
const OID_SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
const OID_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

pub(crate) fn info_of(cert: &X509Certificate<'_>, what: &str) -> Result<CertInfo, PkiError> {
    let bad = |source| PkiError::BadCertificate {
        what: what.to_owned(),
        source,
    };
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| PkiError::NoCommonName {
            what: what.to_owned(),
        })?;
    let is_ca = cert
        .basic_constraints()
        .map_err(bad)?
        .is_some_and(|bc| bc.value.ca);
    let (server_auth, client_auth) = match cert.extended_key_usage().map_err(bad)? {
        Some(eku) => {
            let e = eku.value;
            let other = |oid: &str| e.other.iter().any(|o| o.to_id_string() == oid);
            (
                e.server_auth || other(OID_SERVER_AUTH),
                e.client_auth || other(OID_CLIENT_AUTH),
            )
        }
        None => (false, false),
    };
    let kind = if is_ca {
        CertKind::Ca
    } else if server_auth && !client_auth {
        CertKind::Server
    } else {
        CertKind::Client
    };
    let (key_algorithm, key_description) = describe_key(cert);
    Ok(CertInfo {
        serial: Serial::from_bytes(cert.raw_serial()),
        common_name,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        kind,
        server_auth,
        client_auth,
        not_before: from_unix(cert.validity().not_before.timestamp()),
        not_after: from_unix(cert.validity().not_after.timestamp()),
        key_algorithm,
        key_description,
        is_v3: cert.version().0 >= 2,
    })
}

fn describe_key(cert: &X509Certificate<'_>) -> (Option<KeyAlgorithm>, String) {
    let spki = cert.public_key();
    let alg_oid = spki.algorithm.algorithm.to_id_string();
    if alg_oid == OID_ED25519 {
        return (Some(KeyAlgorithm::Ed25519), "Ed25519".to_owned());
    }
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            let alg = match bits {
                2048 => Some(KeyAlgorithm::Rsa2048),
                3072 => Some(KeyAlgorithm::Rsa3072),
                4096 => Some(KeyAlgorithm::Rsa4096),
                _ => None,
            };
            (alg, format!("RSA {bits}"))
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => (Some(KeyAlgorithm::EcdsaP256), "ECDSA P-256".to_owned()),
                Some(OID_P384) => (Some(KeyAlgorithm::EcdsaP384), "ECDSA P-384".to_owned()),
                Some(other) => (None, format!("ECDSA ({other})")),
                None => (None, "ECDSA".to_owned()),
            }
        }
        _ => (None, format!("unknown key type {alg_oid}")),
    }
}
