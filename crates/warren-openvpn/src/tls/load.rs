//! Loading the `ca`, `cert` and `key` PEM inputs, with errors that say which file is wrong and
//! how to fix it. Problems rustls would only report at handshake time (X.509 v1, short RSA
//! keys) are caught here, at startup.

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate, X509Error};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::X509Version;

use super::{PemFile, TlsSetupError};

/// Smallest RSA modulus webpki verifies with and ring signs with.
const MIN_RSA_BITS: usize = 2048;

/// All `CERTIFICATE` blocks of `text`, in order.
fn certificates(text: &str, file: PemFile) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsSetupError::Pem { file, source })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate { file });
    }
    Ok(certs)
}

/// Parses one DER certificate with x509-parser, naming its position on failure.
fn parse(der: &CertificateDer<'_>, file: PemFile, index: usize) -> Result<(), TlsSetupError> {
    let cert = match X509Certificate::from_der(der.as_ref()) {
        Ok((_, cert)) => cert,
        Err(x509_parser::nom::Err::Error(source) | x509_parser::nom::Err::Failure(source)) => {
            return Err(TlsSetupError::BadCertificate {
                file,
                index,
                source,
            });
        }
        Err(x509_parser::nom::Err::Incomplete(_)) => {
            return Err(TlsSetupError::BadCertificate {
                file,
                index,
                source: X509Error::InvalidCertificate,
            });
        }
    };
    if let Some(bits) = rsa_bits(&cert)
        && bits < MIN_RSA_BITS
    {
        return Err(TlsSetupError::RsaKeyTooSmall { file, index, bits });
    }
    // webpki accepts v1 certificates only as trust anchors (rustls-webpki trust_anchor.rs).
    if file != PemFile::Ca && cert.version() == X509Version::V1 {
        return Err(TlsSetupError::CertificateV1 { file, index });
    }
    Ok(())
}

/// The modulus size of an RSA subject key, `None` for other key types.
fn rsa_bits(cert: &X509Certificate<'_>) -> Option<usize> {
    match cert.public_key().parsed().ok()? {
        PublicKey::RSA(rsa) => {
            let modulus = rsa.modulus;
            let first = modulus.iter().position(|b| *b != 0)?;
            let top = modulus[first];
            Some((modulus.len() - first) * 8 - top.leading_zeros() as usize)
        }
        _ => None,
    }
}

/// The `ca` bundle as rustls trust anchors. Every certificate in the file is trusted, as with
/// OpenVPN's `ca` (`ssl_openssl.c:tls_ctx_load_ca`).
pub(super) fn trust_anchors(ca_pem: &str) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for (i, der) in certificates(ca_pem, PemFile::Ca)?.into_iter().enumerate() {
        let index = i + 1;
        parse(&der, PemFile::Ca, index)?;
        roots
            .add(der)
            .map_err(|source| TlsSetupError::BadTrustAnchor { index, source })?;
    }
    Ok(roots)
}

/// Our certificate chain and private key, checked to belong together.
pub(super) fn certified_key(
    cert_pem: &str,
    key_pem: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsSetupError> {
    let chain = certificates(cert_pem, PemFile::Cert)?;
    for (i, der) in chain.iter().enumerate() {
        parse(der, PemFile::Cert, i + 1)?;
    }

    // Neither PKCS#8 "ENCRYPTED PRIVATE KEY" nor legacy "Proc-Type: 4,ENCRYPTED" blocks are
    // recognised by the PEM reader; say so instead of "no key found".
    if key_pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || key_pem.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(TlsSetupError::EncryptedKey);
    }
    let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => return Err(TlsSetupError::NoPrivateKey),
        Err(source) => {
            return Err(TlsSetupError::Pem {
                file: PemFile::Key,
                source,
            });
        }
    };
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsSetupError::UnsupportedKey { source })?;

    warm_up(signing_key.as_ref());
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key type cannot report its public key; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsSetupError::KeyMismatch)
        }
        Err(other) => Err(TlsSetupError::Rustls(other)),
    }
}

/// Signs a throwaway message once at startup. The crypto library initialises per-key state
/// (RSA blinding and Montgomery tables) lazily on the first signature; without this the
/// first client's handshake pays for it (tens of milliseconds measured for RSA-2048).
fn warm_up(key: &dyn rustls::sign::SigningKey) {
    use rustls::SignatureScheme::*;
    let offered = [
        ED25519,
        ECDSA_NISTP256_SHA256,
        ECDSA_NISTP384_SHA384,
        ECDSA_NISTP521_SHA512,
        RSA_PSS_SHA256,
        RSA_PKCS1_SHA256,
    ];
    if let Some(signer) = key.choose_scheme(&offered) {
        let _ = signer.sign(b"warren start-up signature");
    }
}
