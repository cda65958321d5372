//! Errors of the PKI crate.

use crate::algo::KeyAlgorithm;
use crate::name::NameError;

/// What went wrong while generating, loading or inspecting certificates.
///
/// `what` fields name the input ("CA certificate", "certificate #2 of issued/alice.crt") so the
/// caller can print the error as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The key generator failed (should not happen with aws-lc-rs).
    #[error("cannot generate a {algorithm} key: {source}")]
    KeyGeneration {
        algorithm: KeyAlgorithm,
        source: rcgen::Error,
    },
    /// rcgen refused to build or sign a certificate or CRL.
    #[error("cannot sign the {what}: {source}")]
    Sign {
        what: &'static str,
        source: rcgen::Error,
    },
    /// The name is not usable as a common name.
    #[error("invalid name {name:?}: {source}")]
    BadName { name: String, source: NameError },
    /// Malformed PEM armour.
    #[error("{what}: malformed PEM: {source}")]
    Pem { what: String, source: pem::PemError },
    /// No block with the expected PEM label.
    #[error("{what}: no {label} block found")]
    NoPemBlock { what: String, label: &'static str },
    /// The DER inside the PEM is not an X.509 certificate.
    #[error("{what}: not a valid X.509 certificate: {source}")]
    BadCertificate {
        what: String,
        source: x509_parser::error::X509Error,
    },
    /// The DER inside the PEM is not an X.509 CRL.
    #[error("{what}: not a valid X.509 CRL: {source}")]
    BadCrl {
        what: String,
        source: x509_parser::error::X509Error,
    },
    /// The certificate has no subject common name.
    #[error("{what}: the certificate has no common name (CN)")]
    NoCommonName { what: String },
    /// The certificate to be used as CA is not a CA certificate.
    #[error("{what}: not a CA certificate (basicConstraints CA:TRUE is missing)")]
    NotCa { what: String },
    /// A private key is passphrase-protected.
    #[error(
        "{what}: the private key is encrypted; decrypt a copy with \
         `openssl pkey -in KEY -out KEY.plain` (it asks for the passphrase) and use that file; \
         warren protects keys with file permissions (0600) instead"
    )]
    EncryptedKey { what: String },
    /// A private key that aws-lc-rs cannot load.
    #[error(
        "{what}: unsupported or malformed private key ({source}); supported are RSA (2048 bits \
         or more), ECDSA P-256/P-384 and Ed25519 keys in PKCS#8, PKCS#1 or SEC1 PEM"
    )]
    BadKey { what: String, source: rcgen::Error },
    /// The private key does not belong to the certificate.
    #[error("{what}: the private key does not match the certificate")]
    KeyMismatch { what: String },
    /// The CA certificate has expired: anything it signs would be refused.
    #[error(
        "the CA certificate expired on {not_after} (Unix time); renew it with `warren pki renew --ca`"
    )]
    CaExpired { not_after: i64 },
    /// A CRL not signed by any CA of the `ca` file.
    #[error(
        "{what}: the CRL (issuer {issuer}) is not signed by a CA of the `ca` file; make it \
         with the CA that issues the client certificates (easy-rsa gen-crl, openssl ca -gencrl)"
    )]
    CrlIssuer { what: String, issuer: String },
    /// A certificate was not signed by this CA.
    #[error("{what}: not signed by this CA")]
    WrongIssuer { what: String },
    /// A validity of zero days.
    #[error("a certificate must be valid for at least one day")]
    ZeroDays,
}
