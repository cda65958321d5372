//! Revocations and CRLs.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::cert::nom_err;
use crate::error::PkiError;
use crate::serial::Serial;
use crate::time_util::from_unix;

/// RFC 5280 §5.3.1 CRLReason. The names are OpenSSL's (`openssl ca -crl_reason`, easy-rsa
/// `revoke NAME REASON`, the `index.txt` revocation field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    RemoveFromCrl,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl RevocationReason {
    /// Every reason, in code order.
    pub const ALL: [RevocationReason; 10] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// OpenSSL's name (`keyCompromise`...).
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "CACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::CertificateHold => "certificateHold",
            RevocationReason::RemoveFromCrl => "removeFromCRL",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "AACompromise",
        }
    }

    /// The RFC 5280 code (7 is unused).
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
            RevocationReason::RemoveFromCrl => 8,
            RevocationReason::PrivilegeWithdrawn => 9,
            RevocationReason::AaCompromise => 10,
        }
    }

    /// From an RFC 5280 code.
    pub fn from_code(code: u8) -> Option<Self> {
        RevocationReason::ALL.into_iter().find(|r| r.code() == code)
    }

    pub(crate) fn to_rcgen(self) -> rcgen::RevocationReason {
        use rcgen::RevocationReason as R;
        match self {
            RevocationReason::Unspecified => R::Unspecified,
            RevocationReason::KeyCompromise => R::KeyCompromise,
            RevocationReason::CaCompromise => R::CaCompromise,
            RevocationReason::AffiliationChanged => R::AffiliationChanged,
            RevocationReason::Superseded => R::Superseded,
            RevocationReason::CessationOfOperation => R::CessationOfOperation,
            RevocationReason::CertificateHold => R::CertificateHold,
            RevocationReason::RemoveFromCrl => R::RemoveFromCrl,
            RevocationReason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
            RevocationReason::AaCompromise => R::AaCompromise,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown revocation reason name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown revocation reason {0:?}; use one of unspecified, keyCompromise, CACompromise, \
     affiliationChanged, superseded, cessationOfOperation, certificateHold, removeFromCRL, \
     privilegeWithdrawn, AACompromise"
)]
pub struct UnknownReason(pub String);

impl FromStr for RevocationReason {
    type Err = UnknownReason;

    /// Case-insensitive; `-`, `_` and spaces are ignored (`key-compromise` works).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = |x: &str| -> String {
            x.chars()
                .filter(|c| !matches!(c, '-' | '_' | ' '))
                .collect::<String>()
                .to_ascii_lowercase()
        };
        let want = norm(s);
        RevocationReason::ALL
            .into_iter()
            .find(|r| norm(r.as_str()) == want)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// The revoked certificate's serial.
    pub serial: Serial,
    /// When it was revoked.
    pub revoked_at: SystemTime,
    /// Why, when known.
    pub reason: Option<RevocationReason>,
}

fn crl_der(crl_pem: &str, what: &str) -> Result<Vec<u8>, PkiError> {
    let blocks = pem::parse_many(crl_pem).map_err(|source| PkiError::Pem {
        what: what.to_owned(),
        source,
    })?;
    blocks
        .into_iter()
        .find(|p| p.tag() == "X509 CRL")
        .map(|p| p.into_contents())
        .ok_or_else(|| PkiError::NoPemBlock {
            what: what.to_owned(),
            label: "X509 CRL",
        })
}

/// The revoked certificates listed in a PEM CRL (`-----BEGIN X509 CRL-----`). The signature is
/// not checked here (see [`crate::Pki::verify_crl`]).
pub fn parse_crl_pem(crl_pem: &str, what: &str) -> Result<Vec<Revoked>, PkiError> {
    let der = crl_der(crl_pem, what)?;
    let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| PkiError::BadCrl {
        what: what.to_owned(),
        source: nom_err(e),
    })?;
    Ok(crl
        .iter_revoked_certificates()
        .map(|r| Revoked {
            serial: Serial::from_bytes(r.raw_serial()),
            revoked_at: from_unix(r.revocation_date.timestamp()),
            reason: r
                .reason_code()
                .and_then(|(_, code)| RevocationReason::from_code(code.0)),
        })
        .collect())
}

/// A CRL file as OpenVPN's `crl-verify` reads it: every `X509 CRL` block in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlFile {
    /// Each CRL, DER, in file order.
    pub ders: Vec<Vec<u8>>,
    /// The certificates the CRLs list, all CRLs together.
    pub revoked: Vec<Revoked>,
}

/// Reads a `crl-verify` file: at least one `-----BEGIN X509 CRL-----` block, each a valid
/// CRL signed by one of the CA certificates in `ca_bundle_pem` (the `ca` file, which may hold
/// a chain). `what` names the file in errors.
pub fn load_crl_file(crl_pem: &str, ca_bundle_pem: &str, what: &str) -> Result<CrlFile, PkiError> {
    let blocks = pem::parse_many(crl_pem).map_err(|source| PkiError::Pem {
        what: what.to_owned(),
        source,
    })?;
    let cas = pem::parse_many(ca_bundle_pem).map_err(|source| PkiError::Pem {
        what: "ca".to_owned(),
        source,
    })?;
    let cas: Vec<Vec<u8>> = cas
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect();
    let mut file = CrlFile {
        ders: Vec::new(),
        revoked: Vec::new(),
    };
    for der in blocks
        .into_iter()
        .filter(|p| p.tag() == "X509 CRL")
        .map(|p| p.into_contents())
    {
        let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| PkiError::BadCrl {
            what: what.to_owned(),
            source: nom_err(e),
        })?;
        let signed = cas.iter().any(|ca| {
            X509Certificate::from_der(ca)
                .is_ok_and(|(_, ca)| crl.verify_signature(ca.public_key()).is_ok())
        });
        if !signed {
            return Err(PkiError::CrlIssuer {
                what: what.to_owned(),
                issuer: crl.issuer().to_string(),
            });
        }
        file.revoked
            .extend(crl.iter_revoked_certificates().map(|r| {
                Revoked {
                    serial: Serial::from_bytes(r.raw_serial()),
                    revoked_at: from_unix(r.revocation_date.timestamp()),
                    reason: r
                        .reason_code()
                        .and_then(|(_, code)| RevocationReason::from_code(code.0)),
                }
            }));
        file.ders.push(der);
    }
    if file.ders.is_empty() {
        return Err(PkiError::NoPemBlock {
            what: what.to_owned(),
            label: "X509 CRL",
        });
    }
    Ok(file)
}

pub(crate) fn verify_crl_signature(
    crl_pem: &str,
    ca_der: &[u8],
    what: &str,
) -> Result<(), PkiError> {
    let der = crl_der(crl_pem, what)?;
    let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| PkiError::BadCrl {
        what: what.to_owned(),
        source: nom_err(e),
    })?;
    let (_, ca) = X509Certificate::from_der(ca_der).map_err(|e| PkiError::BadCertificate {
        what: "CA certificate".to_owned(),
        source: nom_err(e),
    })?;
    crl.verify_signature(ca.public_key())
        .map_err(|_| PkiError::WrongIssuer {
            what: what.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names() {
        for r in RevocationReason::ALL {
            assert_eq!(r.as_str().parse::<RevocationReason>(), Ok(r));
            assert_eq!(RevocationReason::from_code(r.code()), Some(r));
        }
        assert_eq!(
            "key-compromise".parse::<RevocationReason>(),
            Ok(RevocationReason::KeyCompromise)
        );
        assert_eq!(RevocationReason::from_code(7), None);
        assert!("stolen".parse::<RevocationReason>().is_err());
    }
}
