//! rustls configurations for the OpenVPN control channel, with OpenVPN's certificate rules.
//!
//! OpenVPN runs an ordinary TLS session inside its reliability layer; every key state (key_id)
//! is a brand-new session, the OpenVPN client is always the TLS client, and nothing is resumed.
//! What differs from web TLS is certificate checking (fact sheet §4.2, OpenVPN
//! `ssl_verify.c:verify_cert`, `ssl_verify_openssl.c`):
//!
//! * the peer chain must verify against the `ca` bundle, but **no host name or SAN is ever
//!   checked** and no SNI is sent ([`no_sni_server_name`]);
//! * the leaf must carry a common name of at most 64 bytes (`TLS_USERNAME_LEN`); that CN is the
//!   peer's identity for logs, `ccd` and duplicate-cn ([`peer_common_name`]);
//! * `remote-cert-tls client|server` requires the KeyUsage extension to be present and the
//!   ExtendedKeyUsage to contain clientAuth/serverAuth (webpki alone treats EKU as "required if
//!   present", see `crates.md` §5);
//! * `verify-x509-name` compares the subject string as OpenVPN prints it, or the CN.
//!
//! The configurations use the ring provider explicitly (never a process-wide default),
//! disable session tickets, session caches and resumption, and offer no ALPN. The TLS key
//! material for the data channel comes from [`export_key_material`] (`key-derivation tls-ekm`,
//! fact sheet §6.2).
//!
//! Verification failures surface as `rustls::Error::InvalidCertificate`; OpenVPN-specific
//! rejections carry a [`CertRejection`] (see [`certificate_rejection`]), and
//! [`describe_tls_error`] renders either kind as one readable log line ("certificate rejected:
//! …").
//!
//! Certificate validity periods (notBefore/notAfter) are checked against the configuration's
//! time provider. [`server_config`] and [`client_config`] use rustls' wall clock (its
//! default time provider), as OpenSSL does in stock OpenVPN; that is what the driver runs
//! with. [`server_config_with_time`] and [`client_config_with_time`] take any
//! [`TimeProvider`], such as a [`ManualClock`] that a simulation moves along with its fake
//! `now`, so expiry can be tested without waiting for it. This crate never reads a clock
//! itself.

mod load;
mod name;
pub(crate) use name::remap_name;
mod verify;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::time_provider::DefaultTimeProvider;
use rustls::{
    ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection,
    SupportedProtocolVersion,
};

pub use rustls::time_provider::TimeProvider;
pub use verify::CertRejection;
use warren_core::Instant;

/// The RFC 5705 exporter label OpenVPN uses for `key-derivation tls-ekm`
/// (OpenVPN `ssl.c:1565`, `ssl_openssl.c:161`).
pub const EKM_LABEL: &[u8] = b"EXPORTER-OpenVPN-datakeys";

/// Length of the exported data-channel key material (`struct key2`: 2 × (cipher 64 + hmac 64)).
pub const KEY_MATERIAL_LEN: usize = 256;

/// Longest common name OpenVPN accepts (`ssl_verify.h` `TLS_USERNAME_LEN`), in UTF-8 bytes.
pub const MAX_COMMON_NAME_LEN: usize = 64;

/// A TLS protocol version (`tls-version-min` / `tls-version-max`). rustls has nothing older
/// than TLS 1.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

/// The role a peer certificate must be issued for (`remote-cert-tls client|server`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertRole {
    /// EKU `TLS Web Client Authentication` (1.3.6.1.5.5.7.3.2).
    Client,
    /// EKU `TLS Web Server Authentication` (1.3.6.1.5.5.7.3.1).
    Server,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertRole::Client => "clientAuth",
            CertRole::Server => "serverAuth",
        })
    }
}

/// Whether the server asks for and requires a client certificate (`verify-client-cert`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClientCertMode {
    /// `verify-client-cert require` (the default): a client without a valid certificate is
    /// refused during the handshake.
    #[default]
    Require,
    /// `verify-client-cert optional`: a certificate is requested and verified if sent.
    Optional,
    /// `verify-client-cert none`: no certificate is requested (password-only users).
    None,
}

/// How `verify-x509-name` compares the server certificate (OpenVPN `ssl_verify.c:370-396`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum X509NameMatch {
    /// `subject` (the default): the whole subject as OpenVPN prints it, e.g.
    /// `C=DE, O=Example, CN=server`.
    #[default]
    Subject,
    /// `name`: the common name equals the given string.
    Name,
    /// `name-prefix`: the common name starts with the given string.
    NamePrefix,
}

/// A key-exchange group (`tls-groups`, `ecdh-curve`): the ones ring implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KxGroup {
    /// X25519.
    X25519,
    /// secp256r1 (OpenSSL: prime256v1).
    P256,
    /// secp384r1.
    P384,
}

impl KxGroup {
    fn named(self) -> rustls::NamedGroup {
        match self {
            KxGroup::X25519 => rustls::NamedGroup::X25519,
            KxGroup::P256 => rustls::NamedGroup::secp256r1,
            KxGroup::P384 => rustls::NamedGroup::secp384r1,
        }
    }
}

/// A cipher suite (`tls-cipher` for TLS 1.2, `tls-ciphersuites` for TLS 1.3): the ECDHE/AEAD
/// ones rustls implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// TLS 1.3 TLS_AES_256_GCM_SHA384.
    Tls13Aes256GcmSha384,
    /// TLS 1.3 TLS_AES_128_GCM_SHA256.
    Tls13Aes128GcmSha256,
    /// TLS 1.3 TLS_CHACHA20_POLY1305_SHA256.
    Tls13Chacha20Poly1305Sha256,
    /// TLS 1.2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384.
    EcdheEcdsaAes256GcmSha384,
    /// TLS 1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256.
    EcdheEcdsaAes128GcmSha256,
    /// TLS 1.2 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256.
    EcdheEcdsaChacha20Poly1305Sha256,
    /// TLS 1.2 TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384.
    EcdheRsaAes256GcmSha384,
    /// TLS 1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256.
    EcdheRsaAes128GcmSha256,
    /// TLS 1.2 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256.
    EcdheRsaChacha20Poly1305Sha256,
}

impl CipherSuite {
    fn id(self) -> rustls::CipherSuite {
        use rustls::CipherSuite as C;
        match self {
            CipherSuite::Tls13Aes256GcmSha384 => C::TLS13_AES_256_GCM_SHA384,
            CipherSuite::Tls13Aes128GcmSha256 => C::TLS13_AES_128_GCM_SHA256,
            CipherSuite::Tls13Chacha20Poly1305Sha256 => C::TLS13_CHACHA20_POLY1305_SHA256,
            CipherSuite::EcdheEcdsaAes256GcmSha384 => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            CipherSuite::EcdheEcdsaAes128GcmSha256 => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::EcdheEcdsaChacha20Poly1305Sha256 => {
                C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            }
            CipherSuite::EcdheRsaAes256GcmSha384 => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            CipherSuite::EcdheRsaAes128GcmSha256 => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::EcdheRsaChacha20Poly1305Sha256 => {
                C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            }
        }
    }
}

/// What the crypto provider offers: `None` everywhere is ring's full set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsAlgorithms {
    /// `tls-groups` / `ecdh-curve`, in preference order; `None`: X25519, P-256, P-384.
    pub kx_groups: Option<Vec<KxGroup>>,
    /// `tls-cipher`: the TLS 1.2 suites in preference order; `None`: all six ECDHE/AEAD ones.
    pub tls12_suites: Option<Vec<CipherSuite>>,
    /// `tls-ciphersuites`: the TLS 1.3 suites in preference order; `None`: all three.
    pub tls13_suites: Option<Vec<CipherSuite>>,
}

/// Server-side TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerTlsOptions {
    /// `tls-version-min`; `None` means TLS 1.2 (OpenVPN's default).
    pub min_version: Option<TlsVersion>,
    /// `tls-version-max`; `None` means the newest rustls supports (TLS 1.3).
    pub max_version: Option<TlsVersion>,
    /// `remote-cert-tls`; normally `Some(CertRole::Client)`.
    pub remote_cert_tls: Option<CertRole>,
    /// `verify-client-cert`.
    pub client_cert: ClientCertMode,
    /// `verify-x509-name <name> <type>`: the client certificate must match.
    pub verify_x509_name: Option<(String, X509NameMatch)>,
    /// `tls-groups`, `tls-cipher`, `tls-ciphersuites`.
    pub algorithms: TlsAlgorithms,
    /// `crl-verify`: client certificates these CRLs list are refused at the handshake.
    pub crl: Option<CrlCheck>,
    /// `crl-verify DIR dir`: asked about each client certificate that passed every other
    /// check.
    pub revoked_serial: Option<SerialCheck>,
}

/// The question [`SerialCheck`] asks: is this serial (big-endian magnitude) revoked?
pub type IsRevoked = dyn Fn(&[u8]) -> bool + Send + Sync;

/// `crl-verify DIR dir`: a question about a client certificate's serial number, asked in
/// every handshake after the chain verified (OpenVPN `ssl_verify.c:verify_check_crl_dir`).
/// The answer comes from the caller (it looks for a file, which this crate never does).
#[derive(Clone)]
pub struct SerialCheck {
    /// Whether the serial (the big-endian magnitude, as [`peer_serial`] gives it) is
    /// revoked.
    pub is_revoked: Arc<IsRevoked>,
    /// What to name in the rejection (the directory).
    pub source: String,
}

impl fmt::Debug for SerialCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialCheck")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl PartialEq for SerialCheck {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.is_revoked, &other.is_revoked) && self.source == other.source
    }
}

impl Eq for SerialCheck {}

/// `crl-verify`: certificate revocation lists for the client certificates' chain, enforced by
/// webpki during the handshake (OpenVPN `tls_ctx_reload_crl`: `X509_V_FLAG_CRL_CHECK |
/// X509_V_FLAG_CRL_CHECK_ALL`, so every certificate of the chain needs a CRL from its
/// issuer). `nextUpdate` is not enforced, as in OpenVPN. The caller checks beforehand that
/// each CRL is signed by a CA of the `ca` bundle; webpki checks it again per handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrlCheck {
    /// The CRLs, DER (`-----BEGIN X509 CRL-----` blocks decoded).
    pub crls: Vec<Vec<u8>>,
    /// Where they came from (the file name), for the log line of a refused certificate.
    pub source: String,
}

/// Client-side TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTlsOptions {
    /// `tls-version-min`; `None` means TLS 1.2 (OpenVPN's default).
    pub min_version: Option<TlsVersion>,
    /// `tls-version-max`; `None` means the newest rustls supports (TLS 1.3).
    pub max_version: Option<TlsVersion>,
    /// `remote-cert-tls`; normally `Some(CertRole::Server)`.
    pub remote_cert_tls: Option<CertRole>,
    /// `verify-x509-name <name> <type>`.
    pub verify_x509_name: Option<(String, X509NameMatch)>,
    /// `tls-groups`, `tls-cipher`, `tls-ciphersuites`.
    pub algorithms: TlsAlgorithms,
    /// `crl-verify`: a server certificate these CRLs list is refused at the handshake
    /// (with the same rules as on the server side, see [`CrlCheck`]).
    pub crl: Option<CrlCheck>,
}

/// Which configured PEM input a setup error is about (named after the OpenVPN directive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PemFile {
    /// `ca`: the trusted CA bundle.
    Ca,
    /// `cert`: our own certificate (leaf first, then intermediates).
    Cert,
    /// `key`: our own private key.
    Key,
}

impl fmt::Display for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PemFile::Ca => "ca",
            PemFile::Cert => "cert",
            PemFile::Key => "key",
        })
    }
}

/// Why a TLS configuration could not be built. Messages name the file (`ca`, `cert`, `key`)
/// and say what to do; the caller adds the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The PEM text is malformed (for example a BEGIN line without its END line).
    #[error("{file} file: malformed PEM: {source}")]
    Pem {
        /// Which input.
        file: PemFile,
        /// The PEM parser's complaint.
        source: rustls::pki_types::pem::Error,
    },
    /// No `-----BEGIN CERTIFICATE-----` block was found.
    #[error("{file} file: no certificate found (expected a -----BEGIN CERTIFICATE----- block)")]
    NoCertificate {
        /// Which input.
        file: PemFile,
    },
    /// No private key block was found.
    #[error(
        "key file: no private key found (expected -----BEGIN PRIVATE KEY-----, \
         -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)"
    )]
    NoPrivateKey,
    /// The key is passphrase-protected.
    #[error(
        "key file: encrypted private keys are not supported; decrypt with \
         `openssl pkey -in key -out key.plain` and protect the file with permissions instead"
    )]
    EncryptedKey,
    /// A certificate could not be parsed as X.509.
    #[error("{file} file: certificate #{index} is not valid X.509: {source}")]
    BadCertificate {
        /// Which input.
        file: PemFile,
        /// 1-based position in the file.
        index: usize,
        /// The parser's complaint.
        source: x509_parser::error::X509Error,
    },
    /// A CA certificate was refused as a trust anchor.
    #[error("ca file: certificate #{index} cannot be used as a trust anchor: {source}")]
    BadTrustAnchor {
        /// 1-based position in the file.
        index: usize,
        /// rustls' complaint.
        source: rustls::Error,
    },
    /// Our certificate is X.509 version 1, which webpki (and therefore every warren peer)
    /// rejects.
    #[error(
        "{file} file: certificate #{index} is X.509 v1 (it has no extensions); rustls/webpki \
         reject v1 certificates, reissue it as v3 (easy-rsa, or `openssl x509 -req` with \
         `-extfile`)"
    )]
    CertificateV1 {
        /// Which input.
        file: PemFile,
        /// 1-based position in the file.
        index: usize,
    },
    /// An RSA key below 2048 bits.
    #[error(
        "{file} file: certificate #{index} has a {bits}-bit RSA key; RSA keys shorter than 2048 \
         bits are not supported by rustls, reissue it with at least 2048 bits"
    )]
    RsaKeyTooSmall {
        /// Which input.
        file: PemFile,
        /// 1-based position in the file.
        index: usize,
        /// The modulus size.
        bits: usize,
    },
    /// The key could not be loaded by the crypto provider.
    #[error(
        "key file: unsupported or malformed private key ({source}); supported are RSA (2048 bits \
         or more), ECDSA P-256/P-384 and Ed25519 keys in PKCS#8, PKCS#1 or SEC1 PEM"
    )]
    UnsupportedKey {
        /// rustls' complaint.
        source: rustls::Error,
    },
    /// The key is not the one the certificate was issued for.
    #[error(
        "the private key does not match the certificate (key file and cert file belong to \
         different certificates)"
    )]
    KeyMismatch,
    /// A client certificate was given without its key.
    #[error("a client certificate was given without its private key (set both `cert` and `key`)")]
    CertWithoutKey,
    /// A client key was given without its certificate.
    #[error("a private key was given without its certificate (set both `cert` and `key`)")]
    KeyWithoutCert,
    /// `tls-version-min` is above `tls-version-max`.
    #[error("tls-version-min {min} is higher than tls-version-max {max}")]
    VersionRange {
        /// Configured minimum.
        min: TlsVersion,
        /// Configured maximum.
        max: TlsVersion,
    },
    /// The client-certificate verifier could not be built.
    #[error("ca file: cannot build the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A `crl-verify` CRL was refused by webpki.
    #[error("crl-verify {source_name}: the CRL cannot be used: {error}")]
    Crl {
        /// The CRL's source, as given in [`CrlCheck::source`].
        source_name: String,
        /// webpki's complaint.
        error: rustls::server::VerifierBuilderError,
    },
    /// The chosen suites leave nothing for an allowed TLS version (for example
    /// `tls-version-min 1.3` with a `tls-ciphersuites` list that matched nothing).
    #[error("no cipher suite is left for TLS {0}; check tls-cipher / tls-ciphersuites")]
    NoSuites(TlsVersion),
    /// rustls refused the combination of settings.
    #[error("TLS configuration rejected by rustls: {0}")]
    Rustls(rustls::Error),
}

/// A [`TimeProvider`] that reports the time it was last set to, in whole seconds since the
/// Unix epoch, and never reads a clock: for simulations and tests that run the engines on a
/// fake clock and want certificate validity judged at that fake time.
///
/// Share it as `Arc<ManualClock>` between the configuration (pass it to
/// [`server_config_with_time`] / [`client_config_with_time`]) and the code that advances the
/// simulation, which calls [`ManualClock::set_at`] with the same `now` it gives the engines.
#[derive(Debug)]
pub struct ManualClock {
    unix_secs: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `unix_secs` until it is set again.
    pub fn new(unix_secs: u64) -> ManualClock {
        ManualClock {
            unix_secs: AtomicU64::new(unix_secs),
        }
    }

    /// Sets the wall time to `unix_secs`.
    pub fn set(&self, unix_secs: u64) {
        self.unix_secs.store(unix_secs, Ordering::Relaxed);
    }

    /// Sets the wall time that corresponds to the engine time `now`, with the same mapping
    /// the engines use for their `unix_time_at_zero` setting (wall = anchor + whole seconds
    /// of `now`).
    pub fn set_at(&self, unix_time_at_zero: u64, now: Instant) {
        self.set(unix_time_at_zero.saturating_add(now.as_secs()));
    }

    /// The wall time it reads now, in seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.unix_secs.load(Ordering::Relaxed)
    }
}

impl TimeProvider for ManualClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            self.unix_secs(),
        )))
    }
}

/// rustls' wall clock (`SystemTime`, read by rustls at each handshake): the time provider of
/// [`server_config`] and [`client_config`], and what a production driver passes to the
/// `_with_time` constructors.
pub fn wall_clock() -> Arc<dyn TimeProvider> {
    Arc::new(DefaultTimeProvider)
}

/// The crypto provider every OpenVPN TLS configuration uses: ring, with its default suites
/// and key-exchange groups (X25519, P-256, P-384), or only the ones `algs` chooses, in its
/// order.
fn provider(algs: &TlsAlgorithms) -> Arc<CryptoProvider> {
    // ring, not aws-lc-rs: aws-lc seeds its random generator with CPU-jitter entropy on
    // first use, about 40 ms of CPU measured with perf (jent_read_entropy), which every
    // client paid before its first packet. ring reads getrandom(2) directly.
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(groups) = &algs.kx_groups {
        let all = std::mem::take(&mut p.kx_groups);
        p.kx_groups = groups
            .iter()
            .filter_map(|g| all.iter().find(|k| k.name() == g.named()).copied())
            .collect();
    }
    let all = std::mem::take(&mut p.cipher_suites);
    let pick =
        |list: &Option<Vec<CipherSuite>>, tls13: bool| -> Vec<rustls::SupportedCipherSuite> {
            let of_version = all
                .iter()
                .filter(move |s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)) == tls13);
            match list {
                None => of_version.copied().collect(),
                Some(list) => list
                    .iter()
                    .filter_map(|c| of_version.clone().find(|s| s.suite() == c.id()).copied())
                    .collect(),
            }
        };
    p.cipher_suites = pick(&algs.tls13_suites, true);
    p.cipher_suites.extend(pick(&algs.tls12_suites, false));
    Arc::new(p)
}

/// Checks that every allowed version keeps a suite and that a group is left.
fn check_algorithms(
    provider: &CryptoProvider,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<(), TlsSetupError> {
    for v in versions {
        let (ver, tls13) = if v.version == rustls::ProtocolVersion::TLSv1_3 {
            (TlsVersion::V1_3, true)
        } else {
            (TlsVersion::V1_2, false)
        };
        let any = provider
            .cipher_suites
            .iter()
            .any(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)) == tls13);
        if !any {
            return Err(TlsSetupError::NoSuites(ver));
        }
    }
    if provider.kx_groups.is_empty() {
        return Err(TlsSetupError::Rustls(rustls::Error::General(
            "no key-exchange group left (tls-groups)".into(),
        )));
    }
    Ok(())
}

/// The protocol versions allowed by `min`/`max` (OpenVPN `ssl_openssl.c:tls_ctx_set_tls_versions`).
fn protocol_versions(
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsSetupError> {
    let min = min.unwrap_or(TlsVersion::V1_2);
    let max = max.unwrap_or(TlsVersion::V1_3);
    if min > max {
        return Err(TlsSetupError::VersionRange { min, max });
    }
    let mut out = Vec::with_capacity(2);
    if min <= TlsVersion::V1_2 {
        out.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::V1_3 {
        out.push(&rustls::version::TLS13);
    }
    Ok(out)
}

/// Builds the rustls server configuration from the PEM CA bundle (`ca`), our certificate chain
/// (`cert`: leaf first, then any intermediates) and our private key (`key`: PKCS#1 RSA, PKCS#8
/// or SEC1 EC; RSA, ECDSA P-256/P-384 or Ed25519).
///
/// Client certificates are verified against `ca` with OpenVPN's rules (see the module docs).
/// Tickets, the session cache and ALPN are off; the server's cipher-suite order wins, as with
/// OpenVPN's `SSL_OP_CIPHER_SERVER_PREFERENCE` (`ssl_openssl.c:268-270`).
///
/// Certificate validity periods are checked against the wall clock ([`wall_clock`]); use
/// [`server_config_with_time`] to inject another time source.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    opts: &ServerTlsOptions,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    server_config_with_time(ca_pem, cert_pem, key_pem, opts, wall_clock())
}

/// [`server_config`] with the time source that client certificates' validity periods are
/// checked against (for example a [`ManualClock`] driven by a simulation's fake clock).
pub fn server_config_with_time(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    opts: &ServerTlsOptions,
    time: Arc<dyn TimeProvider>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = provider(&opts.algorithms);
    let roots = Arc::new(load::trust_anchors(ca_pem)?);
    let certified = load::certified_key(cert_pem, key_pem, &provider)?;
    let versions = protocol_versions(opts.min_version, opts.max_version)?;
    check_algorithms(&provider, &versions)?;

    let builder = ServerConfig::builder_with_details(provider.clone(), time)
        .with_protocol_versions(&versions)
        .map_err(TlsSetupError::Rustls)?;
    // OpenVPN ssl_openssl.c:315-356: SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT unless
    // `verify-client-cert none|optional`.
    let builder = match opts.client_cert {
        ClientCertMode::None => builder.with_no_client_auth(),
        mode => {
            let mut inner = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            if mode == ClientCertMode::Optional {
                inner = inner.allow_unauthenticated();
            }
            if let Some(crl) = &opts.crl {
                inner = inner.with_crls(
                    crl.crls
                        .iter()
                        .map(|d| rustls::pki_types::CertificateRevocationListDer::from(d.clone())),
                );
            }
            let inner = inner.build().map_err(|e| match (&opts.crl, e) {
                (Some(crl), e @ rustls::server::VerifierBuilderError::InvalidCrl(_)) => {
                    TlsSetupError::Crl {
                        source_name: crl.source.clone(),
                        error: e,
                    }
                }
                (_, e) => TlsSetupError::Verifier(e),
            })?;
            let verifier = verify::ClientVerifier::new(
                inner,
                opts.remote_cert_tls,
                opts.verify_x509_name.clone(),
                opts.crl.as_ref().map(|c| c.source.clone()),
                opts.revoked_serial.clone(),
            );
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    // OpenVPN ssl_openssl.c:268 SSL_OP_NO_TICKET, session cache off: each key_id is a new session.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.ignore_client_order = true;
    config.alpn_protocols.clear();
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// Builds the rustls client configuration. `cert_pem` and `key_pem` must be given together (or
/// both omitted, for password-only servers with `verify-client-cert none|optional`).
///
/// The server chain is verified against `ca` without any name check; `remote-cert-tls` and
/// `verify-x509-name` from `opts` are applied to the server's leaf. Pass
/// [`no_sni_server_name`] to `ClientConnection::new`.
///
/// Certificate validity periods are checked against the wall clock ([`wall_clock`]); use
/// [`client_config_with_time`] to inject another time source.
pub fn client_config(
    ca_pem: &str,
    cert_pem: Option<&str>,
    key_pem: Option<&str>,
    opts: &ClientTlsOptions,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    client_config_with_time(ca_pem, cert_pem, key_pem, opts, wall_clock())
}

/// [`client_config`] with the time source that the server certificate's validity period is
/// checked against (for example a [`ManualClock`] driven by a simulation's fake clock).
pub fn client_config_with_time(
    ca_pem: &str,
    cert_pem: Option<&str>,
    key_pem: Option<&str>,
    opts: &ClientTlsOptions,
    time: Arc<dyn TimeProvider>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = provider(&opts.algorithms);
    let roots = Arc::new(load::trust_anchors(ca_pem)?);
    let certified = match (cert_pem, key_pem) {
        (Some(cert), Some(key)) => Some(load::certified_key(cert, key, &provider)?),
        (Some(_), None) => return Err(TlsSetupError::CertWithoutKey),
        (None, Some(_)) => return Err(TlsSetupError::KeyWithoutCert),
        (None, None) => None,
    };
    let versions = protocol_versions(opts.min_version, opts.max_version)?;
    check_algorithms(&provider, &versions)?;

    let crl = match &opts.crl {
        None => None,
        Some(crl) => Some((client_crls(&roots, &provider, crl)?, crl.source.clone())),
    };
    let verifier = verify::ServerVerifier::new(
        roots,
        provider.clone(),
        opts.remote_cert_tls,
        opts.verify_x509_name.clone(),
        crl,
    );
    let builder = ClientConfig::builder_with_details(provider, time)
        .with_protocol_versions(&versions)
        .map_err(TlsSetupError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match certified {
        Some(certified) => builder
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified))),
        None => builder.with_no_client_auth(),
    };
    // Every OpenVPN key state is a fresh TLS session: no tickets, no resumption, no SNI.
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    config.enable_early_data = false;
    config.alpn_protocols.clear();
    Ok(Arc::new(config))
}

/// The client side's `crl-verify` CRLs, parsed. rustls' own server verifier checks them
/// first, so a CRL it refuses gives the same [`TlsSetupError::Crl`] as on the server side.
fn client_crls(
    roots: &Arc<rustls::RootCertStore>,
    provider: &Arc<CryptoProvider>,
    crl: &CrlCheck,
) -> Result<Vec<webpki::CertRevocationList<'static>>, TlsSetupError> {
    let ders = || {
        crl.crls
            .iter()
            .map(|d| rustls::pki_types::CertificateRevocationListDer::from(d.clone()))
    };
    rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(ders())
        .build()
        .map_err(|e| match e {
            e @ rustls::server::VerifierBuilderError::InvalidCrl(_) => TlsSetupError::Crl {
                source_name: crl.source.clone(),
                error: e,
            },
            e => TlsSetupError::Verifier(e),
        })?;
    Ok(crl
        .crls
        .iter()
        .map(|d| {
            webpki::OwnedCertRevocationList::from_der(d)
                .expect("a CRL rustls' verifier builder accepted parses with webpki")
                .into()
        })
        .collect())
}

/// The `ServerName` to pass to `rustls::ClientConnection::new`: an IP address name, so rustls
/// sends no SNI. Our verifier never compares it with anything.
pub fn no_sni_server_name() -> ServerName<'static> {
    ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into())
}

/// The common name of the leaf certificate (the first in `certs`), as OpenVPN derives it for
/// `x509-username-field CN`: the last CN attribute of the subject, converted to UTF-8, with
/// control characters replaced by `_` (OpenVPN `ssl_verify.c:string_mod_remap_name`).
///
/// `None` if there is no certificate, it does not parse, it has no CN, or the CN is longer
/// than [`MAX_COMMON_NAME_LEN`] bytes (such peers are refused by the verifiers anyway).
pub fn peer_common_name(certs: &[CertificateDer<'_>]) -> Option<String> {
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    name::common_name(cert.subject()).ok()
}

/// The serial number of the leaf certificate (the first in `certs`): the big-endian
/// magnitude of the DER INTEGER with leading zero bytes removed (so equal to what a CRL or
/// the state store records). `None` if there is no certificate or it does not parse.
pub fn peer_serial(certs: &[CertificateDer<'_>]) -> Option<Vec<u8>> {
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let raw = cert.raw_serial();
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    Some(raw[start..].to_vec())
}

/// The subject of the leaf certificate as OpenVPN prints it (`ssl_verify_openssl.c:
/// x509_get_subject`, then `string_mod_remap_name`), e.g. `C=DE, O=Example, CN=alice`. This
/// is the string `verify-x509-name ... subject` compares, and what OpenVPN logs.
pub fn peer_subject(certs: &[CertificateDer<'_>]) -> Option<String> {
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    name::openvpn_subject(cert.subject())
}

/// A TLS connection that can run the RFC 5705 exporter: `rustls::ServerConnection`,
/// `rustls::ClientConnection` or the `rustls::Connection` enum.
pub trait KeyingMaterialExporter {
    /// Fills `out` from the exporter with `label` and `context`.
    fn export_into(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: Option<&[u8]>,
    ) -> Result<(), rustls::Error>;
}

impl KeyingMaterialExporter for ServerConnection {
    fn export_into(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: Option<&[u8]>,
    ) -> Result<(), rustls::Error> {
        self.export_keying_material(out, label, context).map(|_| ())
    }
}

impl KeyingMaterialExporter for ClientConnection {
    fn export_into(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: Option<&[u8]>,
    ) -> Result<(), rustls::Error> {
        self.export_keying_material(out, label, context).map(|_| ())
    }
}

impl KeyingMaterialExporter for Connection {
    fn export_into(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: Option<&[u8]>,
    ) -> Result<(), rustls::Error> {
        self.export_keying_material(out, label, context).map(|_| ())
    }
}

/// Exports the 256 bytes of OpenVPN data-channel key material from a finished handshake:
/// RFC 5705 exporter, label `EXPORTER-OpenVPN-datakeys`, **no** context (OpenSSL
/// `use_context=0`; fact sheet §6.2). Works for `ServerConnection`, `ClientConnection` and
/// `rustls::Connection`.
///
/// Fails with `HandshakeNotComplete` before the handshake is done.
pub fn export_key_material(
    conn: &impl KeyingMaterialExporter,
    out: &mut [u8; KEY_MATERIAL_LEN],
) -> Result<(), rustls::Error> {
    conn.export_into(&mut out[..], EKM_LABEL, None)
}

/// The OpenVPN-specific reason a peer certificate was refused, if `err` is one of ours.
pub fn certificate_rejection(err: &rustls::Error) -> Option<&CertRejection> {
    match err {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.downcast_ref::<CertRejection>()
        }
        _ => None,
    }
}

/// One readable line for a TLS failure, for logs such as "TLS error: …". Certificate
/// rejections read "certificate rejected: …".
pub fn describe_tls_error(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            format!("certificate rejected: {}", other.0)
        }
        rustls::Error::InvalidCertificate(cert) => format!("certificate rejected: {cert}"),
        rustls::Error::NoCertificatesPresented => {
            "certificate rejected: the peer sent no certificate".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ranges() {
        assert_eq!(protocol_versions(None, None).map(|v| v.len()).ok(), Some(2));
        let only12 = protocol_versions(None, Some(TlsVersion::V1_2)).ok();
        assert_eq!(
            only12.map(|v| v[0].version),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        let only13 = protocol_versions(Some(TlsVersion::V1_3), None).ok();
        assert_eq!(
            only13.map(|v| v[0].version),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert!(matches!(
            protocol_versions(Some(TlsVersion::V1_3), Some(TlsVersion::V1_2)),
            Err(TlsSetupError::VersionRange { .. })
        ));
    }

    #[test]
    fn provider_offers_x25519() {
        let p = provider(&TlsAlgorithms::default());
        assert!(
            p.kx_groups
                .iter()
                .any(|g| g.name() == rustls::NamedGroup::X25519)
        );
    }

    #[test]
    fn provider_keeps_only_the_chosen_algorithms_in_order() {
        let p = provider(&TlsAlgorithms {
            kx_groups: Some(vec![KxGroup::P384, KxGroup::X25519]),
            tls12_suites: Some(vec![CipherSuite::EcdheRsaAes256GcmSha384]),
            tls13_suites: Some(vec![
                CipherSuite::Tls13Chacha20Poly1305Sha256,
                CipherSuite::Tls13Aes128GcmSha256,
            ]),
        });
        let groups: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [rustls::NamedGroup::secp384r1, rustls::NamedGroup::X25519]
        );
        let suites: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            [
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ]
        );
        // The defaults: three TLS 1.3 and six TLS 1.2 suites, three groups.
        let d = provider(&TlsAlgorithms::default());
        assert_eq!((d.cipher_suites.len(), d.kx_groups.len()), (9, 3));
        // A TLS 1.3 list alone keeps every TLS 1.2 suite.
        let only13 = provider(&TlsAlgorithms {
            tls13_suites: Some(vec![CipherSuite::Tls13Aes256GcmSha384]),
            ..TlsAlgorithms::default()
        });
        assert_eq!(only13.cipher_suites.len(), 7);
        let v12 = protocol_versions(None, Some(TlsVersion::V1_2)).expect("versions");
        assert!(check_algorithms(&only13, &v12).is_ok());
    }

    #[test]
    fn manual_clock_reads_what_it_was_set_to() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.current_time().map(|t| t.as_secs()), Some(1_000));
        clock.set(2_000);
        assert_eq!(clock.current_time().map(|t| t.as_secs()), Some(2_000));
        clock.set_at(1_790_000_000, Instant::from_secs(42));
        assert_eq!(clock.unix_secs(), 1_790_000_042);
    }

    #[test]
    fn no_sni_name_is_an_ip() {
        assert!(matches!(no_sni_server_name(), ServerName::IpAddress(_)));
    }
}
