//! warren's built-in certificate authority.
//!
//! The model is a small, offline CA in the spirit of easy-rsa, with the certificate profiles
//! stock OpenVPN 2.6 expects (fact sheet §4.2/§4.3, easy-rsa 3.1 `x509-types`):
//!
//! * a [`Pki`] is one CA certificate and its private key, loaded from PEM or freshly generated
//!   ([`Pki::generate`]); it issues server and client certificates ([`Pki::issue_server`],
//!   [`Pki::issue_client`]) and signs CRLs ([`Pki::crl_pem`]);
//! * certificates are described by [`CertInfo`] (serial, CN, role, validity), parsed back
//!   from PEM with x509-parser ([`inspect_pem`]), so what a listing shows is what is in the
//!   certificate, not what we believe we wrote;
//! * [`easyrsa::import`] reads an existing easy-rsa `pki/` directory (CA, issued certificates,
//!   keys and revocations from `index.txt` and `crl.pem`).
//!
//! Nothing here touches the clock, the disk (except [`easyrsa::import`], which only reads) or a
//! global RNG: wall time comes in as `now: SystemTime`, serial numbers come from the caller's
//! [`warren_core::Rng`]. Key generation itself uses aws-lc-rs' system RNG (through rcgen);
//! RSA generation can take seconds (RSA-4096), see [`KeyAlgorithm::is_slow`]. Persistence
//! (0600 files, atomic writes, the database) is the caller's business.
#![forbid(unsafe_code)]

mod algo;
mod ca;
mod cert;
pub mod easyrsa;
mod error;
mod name;
mod revoke;
mod serial;
mod time_util;

pub use algo::{KeyAlgorithm, UnknownAlgorithm};
pub use ca::{CaOptions, Issued, LeafOptions, Pki, PrivateKeyPem, check_key_pair};
pub use cert::{CertInfo, CertKind, UnknownCertKind, inspect_der, inspect_pem};
pub use error::PkiError;
pub use name::{MAX_COMMON_NAME_LEN, NameError, validate_name};
pub use revoke::{CrlFile, RevocationReason, Revoked, UnknownReason, load_crl_file, parse_crl_pem};
pub use serial::{Serial, SerialParseError};
pub use time_util::{from_unix, to_unix};

/// Default lifetime of a CA certificate: 10 years (easy-rsa `EASYRSA_CA_EXPIRE` 3650).
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Default lifetime of a server or client certificate: 825 days (easy-rsa
/// `EASYRSA_CERT_EXPIRE`, and the CA/Browser Forum's former maximum).
pub const DEFAULT_LEAF_DAYS: u32 = 825;
/// Default time until a CRL's `nextUpdate`: 180 days (easy-rsa `EASYRSA_CRL_DAYS`).
pub const DEFAULT_CRL_DAYS: u32 = 180;
