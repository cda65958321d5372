//! The certificate authority: generation, loading and issuing.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::algo::KeyAlgorithm;
use crate::cert::{CertInfo, CertKind, first_cert_der, info_of, inspect_der, nom_err};
use crate::error::PkiError;
use crate::name::{MAX_COMMON_NAME_LEN, NameError, validate_name};
use crate::revoke::Revoked;
use crate::serial::Serial;
use crate::time_util::{to_offset, to_unix};
use crate::{DEFAULT_CA_DAYS, DEFAULT_LEAF_DAYS};

/// How far into the past `notBefore` is set, so that a peer whose clock is a little behind
/// does not refuse a certificate issued a moment ago ("certificate is not yet valid").
const BACKDATE: Duration = Duration::from_secs(3600);

const DAY: u64 = 86_400;

/// A PEM private key. Zeroized on drop; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    /// Wraps PEM text (not checked here; [`Pki::from_pem`] checks the CA key).
    pub fn new(pem: String) -> Self {
        PrivateKeyPem(Zeroizing::new(pem))
    }

    /// The PEM text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// Parameters of a new CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaOptions {
    /// The CA's common name (1 to 64 bytes; any characters).
    pub common_name: String,
    /// The CA key type.
    pub algorithm: KeyAlgorithm,
    /// Lifetime in days.
    pub days: u32,
}

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions {
            common_name: "warren CA".to_owned(),
            algorithm: KeyAlgorithm::default(),
            days: DEFAULT_CA_DAYS,
        }
    }
}

/// Parameters of a new server or client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafOptions {
    /// The key type.
    pub algorithm: KeyAlgorithm,
    /// Lifetime in days (cut at the CA's own expiry).
    pub days: u32,
}

impl Default for LeafOptions {
    fn default() -> Self {
        LeafOptions {
            algorithm: KeyAlgorithm::default(),
            days: DEFAULT_LEAF_DAYS,
        }
    }
}

/// A freshly issued certificate with its private key.
#[derive(Clone, Debug)]
pub struct Issued {
    /// What the certificate says.
    pub info: CertInfo,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: PrivateKeyPem,
}

/// A certificate authority: a CA certificate and its private key.
pub struct Pki {
    cert_pem: String,
    key_pem: PrivateKeyPem,
    info: CertInfo,
    /// DER SubjectPublicKeyInfo of the CA, to check signatures of certificates and CRLs.
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Generates a new self-signed CA: `basicConstraints=critical,CA:TRUE`,
    /// `keyUsage=critical,keyCertSign,cRLSign`, a subject key identifier, no EKU (easy-rsa's
    /// `x509-types/ca`), a random 128-bit serial, valid from `now` (minus one hour of slack)
    /// for `opts.days` days.
    pub fn generate(
        opts: &CaOptions,
        now: SystemTime,
        rng: &mut dyn warren_core::Rng,
    ) -> Result<Pki, PkiError> {
        let cn = &opts.common_name;
        if cn.is_empty() || cn.len() > MAX_COMMON_NAME_LEN {
            return Err(PkiError::BadName {
                name: cn.clone(),
                source: if cn.is_empty() {
                    NameError::Empty
                } else {
                    NameError::TooLong { len: cn.len() }
                },
            });
        }
        if opts.days == 0 {
            return Err(PkiError::ZeroDays);
        }
        let key = opts.algorithm.generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, cn.as_str());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(SerialNumber::from_slice(Serial::random(rng).as_bytes()));
        params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(now));
        params.not_after = to_offset(now + Duration::from_secs(u64::from(opts.days) * DAY));
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key).map_err(|source| PkiError::Sign {
            what: "CA certificate",
            source,
        })?;
        let key_pem = PrivateKeyPem::new(key.serialize_pem());
        Pki::from_pem(&cert.pem(), key_pem.as_str())
    }

    /// Loads a CA from its certificate and private key (PKCS#8, PKCS#1 or SEC1 PEM). Checks
    /// that the certificate is a CA and that the key belongs to it. Encrypted keys are refused
    /// with instructions.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Pki, PkiError> {
        const WHAT: &str = "CA certificate";
        let der = first_cert_der(cert_pem, WHAT)?;
        let (_, x509) = X509Certificate::from_der(&der).map_err(|e| PkiError::BadCertificate {
            what: WHAT.to_owned(),
            source: nom_err(e),
        })?;
        let info = info_of(&x509, WHAT)?;
        if info.kind != CertKind::Ca {
            return Err(PkiError::NotCa {
                what: WHAT.to_owned(),
            });
        }
        let key = load_key(key_pem, "CA key")?;
        if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
            return Err(PkiError::KeyMismatch {
                what: "CA key".to_owned(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key).map_err(|source| {
            PkiError::Sign {
                what: "CA certificate",
                source,
            }
        })?;
        // Normalise the stored PEM to the one certificate we use.
        let cert_pem = crate::cert::cert_pem_of(der.clone());
        Ok(Pki {
            cert_pem,
            key_pem: PrivateKeyPem::new(key_pem.to_owned()),
            info,
            cert_der: der,
            issuer,
        })
    }

    /// The CA certificate, PEM (one block).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM, as loaded or generated.
    pub fn key_pem(&self) -> &PrivateKeyPem {
        &self.key_pem
    }

    /// What the CA certificate says.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Issues a server certificate for `name` (easy-rsa `x509-types/server`):
    /// `basicConstraints=critical,CA:FALSE`, `extendedKeyUsage=serverAuth`, `keyUsage`
    /// digitalSignature plus keyEncipherment (RSA) or keyAgreement (ECDSA), and a
    /// `subjectAltName` of `DNS:<name>` (`IP:<name>` when the name is an IPv4 address), as
    /// easy-rsa 3.1 adds by default.
    pub fn issue_server(
        &self,
        name: &str,
        opts: &LeafOptions,
        now: SystemTime,
        rng: &mut dyn warren_core::Rng,
    ) -> Result<Issued, PkiError> {
        self.issue(CertKind::Server, name, opts, now, rng)
    }

    /// Issues a client certificate whose CN is `name` (easy-rsa `x509-types/client`):
    /// `basicConstraints=critical,CA:FALSE`, `extendedKeyUsage=clientAuth`,
    /// `keyUsage=critical,digitalSignature`.
    pub fn issue_client(
        &self,
        name: &str,
        opts: &LeafOptions,
        now: SystemTime,
        rng: &mut dyn warren_core::Rng,
    ) -> Result<Issued, PkiError> {
        self.issue(CertKind::Client, name, opts, now, rng)
    }

    /// Issues a server or client certificate (`kind` must not be [`CertKind::Ca`]; a CA kind
    /// issues a client certificate).
    pub fn issue(
        &self,
        kind: CertKind,
        name: &str,
        opts: &LeafOptions,
        now: SystemTime,
        rng: &mut dyn warren_core::Rng,
    ) -> Result<Issued, PkiError> {
        validate_name(name).map_err(|source| PkiError::BadName {
            name: name.to_owned(),
            source,
        })?;
        if opts.days == 0 {
            return Err(PkiError::ZeroDays);
        }
        if now > self.info.not_after {
            return Err(PkiError::CaExpired {
                not_after: to_unix(self.info.not_after),
            });
        }
        let key = opts.algorithm.generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(Serial::random(rng).as_bytes()));
        params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(now));
        let not_after =
            (now + Duration::from_secs(u64::from(opts.days) * DAY)).min(self.info.not_after);
        params.not_after = to_offset(not_after);
        match kind {
            CertKind::Server => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.key_usages = match opts.algorithm {
                    a if a.is_rsa() => vec![
                        KeyUsagePurpose::DigitalSignature,
                        KeyUsagePurpose::KeyEncipherment,
                    ],
                    KeyAlgorithm::Ed25519 => vec![KeyUsagePurpose::DigitalSignature],
                    _ => vec![
                        KeyUsagePurpose::DigitalSignature,
                        KeyUsagePurpose::KeyAgreement,
                    ],
                };
                // easy-rsa 3.1 easyrsa:1335-1350: default SAN DNS:<CN>, or IP:<CN>.
                params.subject_alt_names = vec![match name.parse::<Ipv4Addr>() {
                    Ok(ip) => SanType::IpAddress(ip.into()),
                    Err(_) => {
                        SanType::DnsName(name.try_into().map_err(|source| PkiError::Sign {
                            what: "server certificate",
                            source,
                        })?)
                    }
                }];
            }
            CertKind::Client | CertKind::Ca => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            }
        }
        let what = match kind {
            CertKind::Server => "server certificate",
            _ => "client certificate",
        };
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Sign { what, source })?;
        let info = inspect_der(cert.der(), what)?;
        Ok(Issued {
            info,
            cert_pem: cert.pem(),
            key_pem: PrivateKeyPem::new(key.serialize_pem()),
        })
    }

    /// Checks that `cert_pem` (its first certificate) was signed by this CA and returns what it
    /// says.
    pub fn verify_issued(&self, cert_pem: &str, what: &str) -> Result<CertInfo, PkiError> {
        let der = first_cert_der(cert_pem, what)?;
        let (_, x509) = X509Certificate::from_der(&der).map_err(|e| PkiError::BadCertificate {
            what: what.to_owned(),
            source: nom_err(e),
        })?;
        let (_, ca) =
            X509Certificate::from_der(&self.cert_der).map_err(|e| PkiError::BadCertificate {
                what: "CA certificate".to_owned(),
                source: nom_err(e),
            })?;
        x509.verify_signature(Some(ca.public_key()))
            .map_err(|_| PkiError::WrongIssuer {
                what: what.to_owned(),
            })?;
        info_of(&x509, what)
    }

    /// Checks that a CRL (PEM) was signed by this CA.
    pub fn verify_crl(&self, crl_pem: &str, what: &str) -> Result<(), PkiError> {
        crate::revoke::verify_crl_signature(crl_pem, &self.cert_der, what)
    }

    /// Signs a CRL (v2, with authority key identifier and CRL number) listing `revoked`,
    /// issued at `now` with `nextUpdate` `days` later (OpenVPN's `crl-verify` ignores
    /// `nextUpdate`; OpenSSL-based peers checking CRLs themselves do not).
    pub fn crl_pem(
        &self,
        revoked: &[Revoked],
        crl_number: u64,
        now: SystemTime,
        days: u32,
    ) -> Result<String, PkiError> {
        if days == 0 {
            return Err(PkiError::ZeroDays);
        }
        let params = CertificateRevocationListParams {
            this_update: to_offset(now),
            next_update: to_offset(now + Duration::from_secs(u64::from(days) * DAY)),
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(r.serial.as_bytes()),
                    revocation_time: to_offset(r.revoked_at),
                    reason_code: r.reason.map(|r| r.to_rcgen()),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|source| PkiError::Sign {
                what: "CRL",
                source,
            })?;
        crl.pem().map_err(|source| PkiError::Sign {
            what: "CRL",
            source,
        })
    }
}

/// Loads a private key for signing; refuses encrypted keys with instructions.
fn load_key(key_pem: &str, what: &str) -> Result<KeyPair, PkiError> {
    if key_pem.contains("ENCRYPTED PRIVATE KEY") || key_pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(PkiError::EncryptedKey {
            what: what.to_owned(),
        });
    }
    let blocks = pem::parse_many(key_pem).map_err(|source| PkiError::Pem {
        what: what.to_owned(),
        source,
    })?;
    let block = blocks
        .iter()
        .find(|p| p.tag().ends_with("PRIVATE KEY"))
        .ok_or_else(|| PkiError::NoPemBlock {
            what: what.to_owned(),
            label: "PRIVATE KEY",
        })?;
    KeyPair::try_from(block.contents()).map_err(|source| PkiError::BadKey {
        what: what.to_owned(),
        source,
    })
}

/// Checks that `key_pem` is a usable, unencrypted private key belonging to the first
/// certificate in `cert_pem`.
pub fn check_key_pair(cert_pem: &str, key_pem: &str, what: &str) -> Result<(), PkiError> {
    let der = first_cert_der(cert_pem, what)?;
    let (_, x509) = X509Certificate::from_der(&der).map_err(|e| PkiError::BadCertificate {
        what: what.to_owned(),
        source: nom_err(e),
    })?;
    let key = load_key(key_pem, what)?;
    if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
        return Err(PkiError::KeyMismatch {
            what: what.to_owned(),
        });
    }
    Ok(())
}
