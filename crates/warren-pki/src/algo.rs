//! Key algorithms a warren CA can generate.

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, RsaKeySize, SignatureAlgorithm};

use crate::error::PkiError;

/// The key type of a generated certificate. ECDSA P-256 is the default: fast to generate, small,
/// and accepted by every OpenVPN 2.4+ peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048 bits, SHA-256 signatures (easy-rsa's default).
    Rsa2048,
    /// RSA 3072 bits.
    Rsa3072,
    /// RSA 4096 bits (generation takes seconds).
    Rsa4096,
    /// Ed25519 (OpenVPN 2.6 with OpenSSL 3 accepts it; older clients may not).
    Ed25519,
}

impl KeyAlgorithm {
    /// Every algorithm, in the order the CLI lists them.
    pub const ALL: [KeyAlgorithm; 6] = [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
        KeyAlgorithm::Ed25519,
    ];

    /// The name used on the command line and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Rsa2048 => "rsa2048",
            KeyAlgorithm::Rsa3072 => "rsa3072",
            KeyAlgorithm::Rsa4096 => "rsa4096",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// `true` when generating a key may take long enough to deserve a progress indicator
    /// (RSA: tens of milliseconds to several seconds).
    pub fn is_slow(self) -> bool {
        matches!(
            self,
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096
        )
    }

    /// `true` for RSA keys (which get `keyEncipherment`, as in easy-rsa's server profile).
    pub fn is_rsa(self) -> bool {
        self.is_slow()
    }

    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                &rcgen::PKCS_RSA_SHA256
            }
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// Generates a key pair (aws-lc-rs' system RNG).
    pub(crate) fn generate(self) -> Result<KeyPair, PkiError> {
        let alg = self.signature_algorithm();
        let size = match self {
            KeyAlgorithm::Rsa2048 => Some(RsaKeySize::_2048),
            KeyAlgorithm::Rsa3072 => Some(RsaKeySize::_3072),
            KeyAlgorithm::Rsa4096 => Some(RsaKeySize::_4096),
            _ => None,
        };
        let kp = match size {
            Some(size) => KeyPair::generate_rsa_for(alg, size),
            None => KeyPair::generate_for(alg),
        };
        kp.map_err(|source| PkiError::KeyGeneration {
            algorithm: self,
            source,
        })
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown algorithm name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown key algorithm {0:?}; choose one of ecdsa-p256, ecdsa-p384, rsa2048, rsa3072, rsa4096, ed25519"
)]
pub struct UnknownAlgorithm(pub String);

impl FromStr for KeyAlgorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .collect::<String>()
            .to_ascii_lowercase();
        Ok(match norm.as_str() {
            "ecdsap256" | "ecdsa" | "ec" | "p256" | "prime256v1" | "secp256r1" => {
                KeyAlgorithm::EcdsaP256
            }
            "ecdsap384" | "p384" | "secp384r1" => KeyAlgorithm::EcdsaP384,
            "rsa2048" | "rsa" => KeyAlgorithm::Rsa2048,
            "rsa3072" => KeyAlgorithm::Rsa3072,
            "rsa4096" => KeyAlgorithm::Rsa4096,
            "ed25519" | "eddsa" => KeyAlgorithm::Ed25519,
            _ => return Err(UnknownAlgorithm(s.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in KeyAlgorithm::ALL {
            assert_eq!(a.as_str().parse::<KeyAlgorithm>(), Ok(a));
        }
        assert_eq!(
            "RSA_4096".parse::<KeyAlgorithm>(),
            Ok(KeyAlgorithm::Rsa4096)
        );
        assert!("dsa".parse::<KeyAlgorithm>().is_err());
    }
}
