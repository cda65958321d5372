//! Peer certificate verifiers with OpenVPN's rules: webpki chain verification against `ca`
//! with no name check, then the leaf checks of OpenVPN `ssl_verify.c:verify_cert` (CN,
//! `remote-cert-tls`, `verify-x509-name`).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::name::{self, CnError};
use super::{CertRole, MAX_COMMON_NAME_LEN, X509NameMatch};

/// Why a peer certificate that chains to the CA was still refused by an OpenVPN rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertRejection {
    /// The leaf could not be parsed for the OpenVPN checks.
    #[error("the peer certificate could not be parsed")]
    Unparseable,
    /// No CN in the subject (OpenVPN: "could not extract CN from X509 subject string").
    #[error("the peer certificate has no common name (CN) in its subject")]
    NoCommonName,
    /// The CN exceeds OpenVPN's 64-byte limit.
    #[error(
        "the peer certificate's common name is {len} bytes long; OpenVPN allows at most {max}",
        max = MAX_COMMON_NAME_LEN
    )]
    CommonNameTooLong {
        /// Length in UTF-8 bytes.
        len: usize,
    },
    /// The CN is not a decodable string or contains NUL.
    #[error("the peer certificate's common name is not a valid string")]
    CommonNameInvalid,
    /// `remote-cert-tls` needs the KeyUsage extension (`x509_verify_cert_ku`).
    #[error(
        "the peer certificate has no key usage extension, which remote-cert-tls {role} requires"
    )]
    MissingKeyUsage {
        /// The required role.
        role: CertRole,
    },
    /// The KeyUsage extension forbids signing, which every TLS handshake rustls does needs.
    #[error("the peer certificate's key usage does not include digitalSignature")]
    KeyUsageWithoutDigitalSignature,
    /// `remote-cert-tls` needs an EKU with the role's purpose (`x509_verify_cert_eku`).
    #[error(
        "the peer certificate's extended key usage does not include {role} \
         (remote-cert-tls {role_name} requires it)",
        role_name = role_name(*role)
    )]
    MissingExtendedKeyUsage {
        /// The required role.
        role: CertRole,
    },
    /// `verify-x509-name` did not match (`ssl_verify.c:394`).
    #[error(
        "verify-x509-name mismatch: the peer is {actual:?}, expected {}{expected:?}",
        match kind { X509NameMatch::NamePrefix => "a name starting with ", _ => "" }
    )]
    X509NameMismatch {
        /// The configured name.
        expected: String,
        /// The peer's subject or CN, as compared.
        actual: String,
        /// The comparison used.
        kind: X509NameMatch,
    },
    /// The certificate is listed in the `crl-verify` CRL (OpenVPN: "CRL CHECK FAILED").
    #[error("certificate serial {serial} is revoked (crl-verify {crl})")]
    Revoked {
        /// The serial, upper-case hex as easy-rsa and `warren pki list` print it.
        serial: String,
        /// The CRL's source.
        crl: String,
    },
    /// A certificate of the chain has no CRL from its issuer among the `crl-verify` CRLs
    /// (OpenSSL with `X509_V_FLAG_CRL_CHECK_ALL`: "unable to get certificate CRL").
    #[error(
        "no CRL from the issuer of certificate serial {serial} (or one of its CAs) in crl-verify \
         {crl}; every CA of the chain needs its CRL there"
    )]
    NoCrl {
        /// The leaf's serial, upper-case hex.
        serial: String,
        /// The CRL's source.
        crl: String,
    },
}

fn role_name(role: CertRole) -> &'static str {
    match role {
        CertRole::Client => "client",
        CertRole::Server => "server",
    }
}

fn reject(reason: CertRejection) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
}

/// The OpenVPN checks on the peer leaf, after the chain has verified
/// (OpenVPN `ssl_verify.c:verify_cert` at depth 0, `verify_peer_cert`).
#[derive(Clone, Debug, Default)]
struct LeafPolicy {
    remote_cert_tls: Option<CertRole>,
    verify_x509_name: Option<(String, X509NameMatch)>,
}

impl LeafPolicy {
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), CertRejection> {
        let (_, cert) =
            X509Certificate::from_der(leaf.as_ref()).map_err(|_| CertRejection::Unparseable)?;

        // ssl_verify.c:620-640: the username field (CN) must be present and fit 64 bytes.
        let cn = name::common_name(cert.subject()).map_err(|e| match e {
            CnError::Missing => CertRejection::NoCommonName,
            CnError::TooLong(len) => CertRejection::CommonNameTooLong { len },
            CnError::Undecodable => CertRejection::CommonNameInvalid,
        })?;

        // Every handshake rustls completes has the peer sign with this key; OpenSSL's TLS
        // purpose checks likewise refuse a KeyUsage without a usable bit (v3_purp.c ku_reject).
        let key_usage = cert.key_usage().map_err(|_| CertRejection::Unparseable)?;
        if let Some(ku) = &key_usage
            && !ku.value.digital_signature()
        {
            return Err(CertRejection::KeyUsageWithoutDigitalSignature);
        }

        // options.c:7510-7535: remote-cert-tls = remote-cert-ku (KU present, value left to the TLS
        // library) + remote-cert-eku "TLS Web {Client,Server} Authentication".
        if let Some(role) = self.remote_cert_tls {
            if key_usage.is_none() {
                return Err(CertRejection::MissingKeyUsage { role });
            }
            let eku = cert
                .extended_key_usage()
                .map_err(|_| CertRejection::Unparseable)?;
            let ok = eku.is_some_and(|e| match role {
                CertRole::Client => e.value.client_auth,
                CertRole::Server => e.value.server_auth,
            });
            if !ok {
                return Err(CertRejection::MissingExtendedKeyUsage { role });
            }
        }

        // ssl_verify.c:370-396.
        if let Some((expected, kind)) = &self.verify_x509_name {
            let (actual, ok) = match kind {
                X509NameMatch::Subject => {
                    let subject = name::openvpn_subject(cert.subject()).unwrap_or_default();
                    let ok = subject == *expected;
                    (subject, ok)
                }
                X509NameMatch::Name => {
                    let ok = cn == *expected;
                    (cn, ok)
                }
                X509NameMatch::NamePrefix => {
                    let ok = cn.starts_with(expected.as_str());
                    (cn, ok)
                }
            };
            if !ok {
                return Err(CertRejection::X509NameMismatch {
                    expected: expected.clone(),
                    actual,
                    kind: *kind,
                });
            }
        }
        Ok(())
    }
}

/// Server side: rustls' webpki client verifier for the chain (EKU clientAuth if present, on
/// every certificate), then OpenVPN's leaf checks.
pub(super) struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    policy: LeafPolicy,
    /// The `crl-verify` source given to `inner`, for the rejection message.
    crl: Option<String>,
    /// `crl-verify DIR dir`.
    revoked_serial: Option<super::SerialCheck>,
}

impl ClientVerifier {
    pub(super) fn new(
        inner: Arc<dyn ClientCertVerifier>,
        remote_cert_tls: Option<CertRole>,
        verify_x509_name: Option<(String, X509NameMatch)>,
        crl: Option<String>,
        revoked_serial: Option<super::SerialCheck>,
    ) -> Self {
        Self {
            inner,
            crl,
            revoked_serial,
            policy: LeafPolicy {
                remote_cert_tls,
                verify_x509_name,
            },
        }
    }
}

impl ClientVerifier {
    /// webpki's revocation errors, reworded with the serial and the CRL's source.
    fn revocation_error(&self, leaf: &CertificateDer<'_>, e: rustls::Error) -> rustls::Error {
        revocation_error(self.crl.as_deref(), leaf, e)
    }
}

/// webpki's revocation errors, reworded with the serial and the CRL's source (`crl`: `None`
/// without `crl-verify`, then `e` is returned as it is).
fn revocation_error(
    crl: Option<&str>,
    leaf: &CertificateDer<'_>,
    e: rustls::Error,
) -> rustls::Error {
    let Some(crl) = crl else {
        return e;
    };
    let serial = || {
        super::peer_serial(std::slice::from_ref(leaf)).map_or_else(
            || "?".to_owned(),
            |s| s.iter().map(|b| format!("{b:02X}")).collect(),
        )
    };
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Revoked) => {
            reject(CertRejection::Revoked {
                serial: serial(),
                crl: crl.to_owned(),
            })
        }
        rustls::Error::InvalidCertificate(CertificateError::UnknownRevocationStatus) => {
            reject(CertRejection::NoCrl {
                serial: serial(),
                crl: crl.to_owned(),
            })
        }
        e => e,
    }
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // OpenVPN sends its CA names too (SSL_CTX_set_client_CA_list in tls_ctx_load_ca).
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| self.revocation_error(end_entity, e))?;
        self.policy.check(end_entity).map_err(reject)?;
        if let Some(check) = &self.revoked_serial {
            let serial = super::peer_serial(std::slice::from_ref(end_entity))
                .ok_or_else(|| reject(CertRejection::Unparseable))?;
            if (check.is_revoked)(&serial) {
                return Err(reject(CertRejection::Revoked {
                    serial: serial.iter().map(|b| format!("{b:02X}")).collect(),
                    crl: check.source.clone(),
                }));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Client side: webpki chain verification (EKU serverAuth if present) with **no** server name
/// check (OpenVPN never checks host names), then OpenVPN's leaf checks.
pub(super) struct ServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    policy: LeafPolicy,
    /// `crl-verify`: the CRLs (checked for every certificate of the chain, unknown status
    /// refused, `nextUpdate` ignored, as on the server side) and their source for messages.
    crl: Option<(Vec<webpki::CertRevocationList<'static>>, String)>,
}

impl ServerVerifier {
    pub(super) fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        remote_cert_tls: Option<CertRole>,
        verify_x509_name: Option<(String, X509NameMatch)>,
        crl: Option<(Vec<webpki::CertRevocationList<'static>>, String)>,
    ) -> Self {
        Self {
            roots,
            provider,
            crl,
            policy: LeafPolicy {
                remote_cert_tls,
                verify_x509_name,
            },
        }
    }
}

impl fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerVerifier")
            .field("roots", &self.roots.len())
            .field("policy", &self.policy)
            .field("crl", &self.crl.as_ref().map(|(_, source)| source))
            .finish_non_exhaustive()
    }
}

impl ServerVerifier {
    /// The chain verified again by webpki, now with the CRLs (rustls offers revocation only
    /// in its verifier that also checks the server name, which OpenVPN never does). The
    /// chain itself already verified, so what fails here is revocation.
    fn check_revocation(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        crls: &[webpki::CertRevocationList<'static>],
    ) -> Result<(), rustls::Error> {
        let refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
        let Ok(revocation) = webpki::RevocationOptionsBuilder::new(&refs) else {
            // No CRL at all (the file held none): nothing can be revoked.
            return Ok(());
        };
        let revocation = revocation
            .with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Deny)
            .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
            .build();
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        match cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            Some(revocation),
            None,
        ) {
            Ok(_) => Ok(()),
            Err(webpki::Error::CertRevoked) => {
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            Err(webpki::Error::UnknownRevocationStatus) => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownRevocationStatus,
            )),
            Err(e) => Err(rustls::Error::General(format!(
                "crl-verify: the server certificate's revocation status cannot be checked: {e}"
            ))),
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if let Some((crls, source)) = &self.crl {
            self.check_revocation(end_entity, intermediates, now, crls)
                .map_err(|e| revocation_error(Some(source), end_entity, e))?;
        }
        self.policy.check(end_entity).map_err(reject)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_messages() {
        let m = CertRejection::X509NameMismatch {
            expected: "vpn".into(),
            actual: "other".into(),
            kind: X509NameMatch::NamePrefix,
        };
        assert_eq!(
            m.to_string(),
            "verify-x509-name mismatch: the peer is \"other\", expected a name starting with \"vpn\""
        );
        let m = CertRejection::X509NameMismatch {
            expected: "CN=a".into(),
            actual: "CN=b".into(),
            kind: X509NameMatch::Subject,
        };
        assert_eq!(
            m.to_string(),
            "verify-x509-name mismatch: the peer is \"CN=b\", expected \"CN=a\""
        );
        assert_eq!(
            CertRejection::MissingExtendedKeyUsage {
                role: CertRole::Server
            }
            .to_string(),
            "the peer certificate's extended key usage does not include serverAuth \
             (remote-cert-tls server requires it)"
        );
        assert_eq!(
            CertRejection::CommonNameTooLong { len: 70 }.to_string(),
            "the peer certificate's common name is 70 bytes long; OpenVPN allows at most 64"
        );
        let err = reject(CertRejection::NoCommonName);
        assert_eq!(
            super::super::describe_tls_error(&err),
            "certificate rejected: the peer certificate has no common name (CN) in its subject"
        );
        assert_eq!(
            super::super::certificate_rejection(&err),
            Some(&CertRejection::NoCommonName)
        );
    }
}
