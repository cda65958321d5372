//! In-memory TLS handshakes between `tls::client_config` and `tls::server_config` with test
//! PKIs made by rcgen: OpenVPN's certificate rules, versions, key export and setup errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, RsaKeySize, date_time_ymd,
};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use warren_openvpn::tls::{
    self, CertRejection, CertRole, ClientCertMode, ClientTlsOptions, ServerTlsOptions,
    TlsSetupError, TlsVersion, X509NameMatch,
};

// ---------------------------------------------------------------------------------------------
// Test PKI
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    Rsa,
    P256,
    Ed25519,
}

fn keypair(alg: Alg) -> KeyPair {
    match alg {
        Alg::Rsa => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap(),
        Alg::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        Alg::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
    }
}

/// A CA that can issue certificates.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    /// Self-signed root, easy-rsa style: CA:TRUE, KU keyCertSign+cRLSign, no EKU.
    fn root(alg: Alg, cn: &str) -> Ca {
        let key = keypair(alg);
        let params = ca_params(cn);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// An intermediate CA signed by `self`.
    fn intermediate(&self, alg: Alg, cn: &str) -> Ca {
        let key = keypair(alg);
        let params = ca_params(cn);
        let pem = params.signed_by(&key, &self.issuer()).unwrap().pem();
        Ca { params, key, pem }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    fn issue(&self, alg: Alg, spec: Leaf) -> Issued {
        let key = keypair(alg);
        let mut params = CertificateParams::new(spec.sans.clone()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in &spec.subject {
            params.distinguished_name.push(ty.clone(), value.clone());
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = spec.key_usages.clone();
        params.extended_key_usages = spec.ekus.clone();
        params.use_authority_key_identifier_extension = true;
        if spec.expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        if let Some(((fy, fm, fd), (ty, tm, td))) = spec.validity {
            params.not_before = date_time_ymd(fy, fm, fd);
            params.not_after = date_time_ymd(ty, tm, td);
        }
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A date: year, month, day.
type Ymd = (i32, u8, u8);

/// What to put in a leaf certificate.
#[derive(Clone)]
struct Leaf {
    subject: Vec<(DnType, String)>,
    sans: Vec<String>,
    key_usages: Vec<KeyUsagePurpose>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
    expired: bool,
    /// Explicit notBefore and notAfter, both at 00:00:00 UTC.
    validity: Option<(Ymd, Ymd)>,
}

impl Leaf {
    /// easy-rsa server profile: EKU serverAuth, KU digitalSignature+keyEncipherment, SAN DNS:cn.
    fn server(cn: &str) -> Leaf {
        Leaf {
            subject: vec![(DnType::CommonName, cn.to_owned())],
            sans: vec![cn.to_owned()],
            key_usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
            expired: false,
            validity: None,
        }
    }

    /// easy-rsa client profile: EKU clientAuth, KU digitalSignature, no SAN.
    fn client(cn: &str) -> Leaf {
        Leaf {
            subject: vec![(DnType::CommonName, cn.to_owned())],
            sans: vec![],
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
            expired: false,
            validity: None,
        }
    }

    fn ekus(mut self, ekus: Vec<ExtendedKeyUsagePurpose>) -> Leaf {
        self.ekus = ekus;
        self
    }

    fn key_usages(mut self, kus: Vec<KeyUsagePurpose>) -> Leaf {
        self.key_usages = kus;
        self
    }

    fn subject(mut self, subject: Vec<(DnType, &str)>) -> Leaf {
        self.subject = subject
            .into_iter()
            .map(|(t, v)| (t, v.to_owned()))
            .collect();
        self
    }

    fn expired(mut self) -> Leaf {
        self.expired = true;
        self
    }

    fn valid(mut self, from: Ymd, to: Ymd) -> Leaf {
        self.validity = Some((from, to));
        self
    }
}

struct Issued {
    cert_pem: String,
    key_pem: String,
}

/// A CA with a server and a client certificate, easy-rsa style.
struct Pki {
    ca: Ca,
    server: Issued,
    client: Issued,
}

impl Pki {
    fn new(alg: Alg) -> Pki {
        let ca = Ca::root(alg, "Test CA");
        let server = ca.issue(alg, Leaf::server("server"));
        let client = ca.issue(alg, Leaf::client("client"));
        Pki { ca, server, client }
    }
}

/// RSA key generation is slow in debug builds: share one RSA PKI between tests.
fn rsa_pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::new(Alg::Rsa))
}

/// Most rule tests use ECDSA P-256 (fast to generate).
fn ec_pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::new(Alg::P256))
}

fn server_opts() -> ServerTlsOptions {
    ServerTlsOptions {
        remote_cert_tls: Some(CertRole::Client),
        ..Default::default()
    }
}

fn client_opts() -> ClientTlsOptions {
    ClientTlsOptions {
        remote_cert_tls: Some(CertRole::Server),
        ..Default::default()
    }
}

fn server_cfg(pki: &Pki, opts: &ServerTlsOptions) -> Arc<ServerConfig> {
    tls::server_config(&pki.ca.pem, &pki.server.cert_pem, &pki.server.key_pem, opts).unwrap()
}

fn client_cfg_with(ca_pem: &str, client: &Issued, opts: &ClientTlsOptions) -> Arc<ClientConfig> {
    tls::client_config(ca_pem, Some(&client.cert_pem), Some(&client.key_pem), opts).unwrap()
}

fn client_cfg(pki: &Pki, opts: &ClientTlsOptions) -> Arc<ClientConfig> {
    client_cfg_with(&pki.ca.pem, &pki.client, opts)
}

// ---------------------------------------------------------------------------------------------
// In-memory handshake over byte buffers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

#[derive(Debug)]
struct Failure {
    side: Side,
    error: rustls::Error,
}

/// Moves every pending TLS record from `from` to `to`; `Err` if `to` rejects them.
fn pump(
    from: &mut rustls::ConnectionCommon<impl rustls::SideData>,
    to: &mut rustls::ConnectionCommon<impl rustls::SideData>,
) -> Result<usize, rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets()?;
    }
    Ok(buf.len())
}

fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> Result<(ClientConnection, ServerConnection), Failure> {
    let mut c = ClientConnection::new(client, tls::no_sni_server_name()).unwrap();
    let mut s = ServerConnection::new(server).unwrap();
    for _ in 0..20 {
        let to_server = pump(&mut c, &mut s).map_err(|error| Failure {
            side: Side::Server,
            error,
        });
        if let Err(f) = to_server {
            // Deliver the server's alert so the client fails too, as on the wire.
            let _ = pump(&mut s, &mut c);
            return Err(f);
        }
        let to_client = pump(&mut s, &mut c).map_err(|error| Failure {
            side: Side::Client,
            error,
        });
        if let Err(f) = to_client {
            let _ = pump(&mut c, &mut s);
            return Err(f);
        }
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            return Ok((c, s));
        }
    }
    panic!("handshake did not finish");
}

fn expect_rejection(
    result: Result<(ClientConnection, ServerConnection), Failure>,
    side: Side,
) -> rustls::Error {
    match result {
        Ok(_) => panic!("handshake unexpectedly succeeded"),
        Err(f) => {
            assert_eq!(f.side, side, "wrong side failed: {:?}", f.error);
            f.error
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Successful handshakes
// ---------------------------------------------------------------------------------------------

fn full_handshake(pki: &Pki, version: TlsVersion) {
    let sopts = ServerTlsOptions {
        min_version: Some(version),
        max_version: Some(version),
        ..server_opts()
    };
    let (c, s) = handshake(client_cfg(pki, &client_opts()), server_cfg(pki, &sopts)).unwrap();

    let expected = match version {
        TlsVersion::V1_2 => rustls::ProtocolVersion::TLSv1_2,
        TlsVersion::V1_3 => rustls::ProtocolVersion::TLSv1_3,
    };
    assert_eq!(c.protocol_version(), Some(expected));
    assert_eq!(s.protocol_version(), Some(expected));
    assert_eq!(c.alpn_protocol(), None);

    // X25519 is offered first among the classical groups; TLS 1.2 cannot use the hybrid.
    let group = c.negotiated_key_exchange_group().unwrap().name();
    match version {
        TlsVersion::V1_2 => assert_eq!(group, rustls::NamedGroup::X25519),
        TlsVersion::V1_3 => assert!(
            group == rustls::NamedGroup::X25519 || group == rustls::NamedGroup::X25519MLKEM768,
            "{group:?}"
        ),
    }

    // No SNI reached the server.
    assert_eq!(s.server_name(), None);

    // Identities.
    assert_eq!(
        tls::peer_common_name(s.peer_certificates().unwrap()).as_deref(),
        Some("client")
    );
    assert_eq!(
        tls::peer_common_name(c.peer_certificates().unwrap()).as_deref(),
        Some("server")
    );
    assert_eq!(
        tls::peer_subject(c.peer_certificates().unwrap()).as_deref(),
        Some("CN=server")
    );

    // Data-channel key material matches on both ends.
    let mut ck = [0u8; 256];
    let mut sk = [0u8; 256];
    tls::export_key_material(&c, &mut ck).unwrap();
    tls::export_key_material(&s, &mut sk).unwrap();
    assert_eq!(ck, sk);
    assert_ne!(ck, [0u8; 256]);
    // The same through the `rustls::Connection` enum, which the engine stores.
    let (c, s) = (rustls::Connection::Client(c), rustls::Connection::Server(s));
    let mut ek = [0u8; 256];
    tls::export_key_material(&s, &mut ek).unwrap();
    assert_eq!(ek, ck);
    tls::export_key_material(&c, &mut ek).unwrap();
    assert_eq!(ek, ck);
}

#[test]
fn rsa_2048_tls12_and_tls13() {
    full_handshake(rsa_pki(), TlsVersion::V1_2);
    full_handshake(rsa_pki(), TlsVersion::V1_3);
}

#[test]
fn ecdsa_p256_tls12_and_tls13() {
    full_handshake(ec_pki(), TlsVersion::V1_2);
    full_handshake(ec_pki(), TlsVersion::V1_3);
}

#[test]
fn ed25519_tls12_and_tls13() {
    let pki = Pki::new(Alg::Ed25519);
    full_handshake(&pki, TlsVersion::V1_2);
    full_handshake(&pki, TlsVersion::V1_3);
}

#[test]
fn default_versions_negotiate_tls13_without_tickets() {
    let pki = ec_pki();
    let (c, s) = handshake(
        client_cfg(pki, &client_opts()),
        server_cfg(pki, &server_opts()),
    )
    .unwrap();
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    // Each key state is a brand-new session: no tickets sent, nothing resumed.
    assert_eq!(c.tls13_tickets_received(), 0);
    assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Full));
    let ccfg = client_cfg(pki, &client_opts());
    let scfg = server_cfg(pki, &server_opts());
    for _ in 0..2 {
        let (c, s) = handshake(ccfg.clone(), scfg.clone()).unwrap();
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Full));
        assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Full));
    }
}

#[test]
fn each_session_exports_different_keys() {
    let pki = ec_pki();
    let (c1, _) = handshake(
        client_cfg(pki, &client_opts()),
        server_cfg(pki, &server_opts()),
    )
    .unwrap();
    let (c2, _) = handshake(
        client_cfg(pki, &client_opts()),
        server_cfg(pki, &server_opts()),
    )
    .unwrap();
    let mut k1 = [0u8; 256];
    let mut k2 = [0u8; 256];
    tls::export_key_material(&c1, &mut k1).unwrap();
    tls::export_key_material(&c2, &mut k2).unwrap();
    assert_ne!(k1, k2);
}

#[test]
fn export_before_handshake_fails() {
    let pki = ec_pki();
    let c =
        ClientConnection::new(client_cfg(pki, &client_opts()), tls::no_sni_server_name()).unwrap();
    let mut out = [0u8; 256];
    assert!(tls::export_key_material(&c, &mut out).is_err());
}

#[test]
fn application_data_flows_after_handshake() {
    use std::io::{Read, Write};
    let pki = ec_pki();
    let (mut c, mut s) = handshake(
        client_cfg(pki, &client_opts()),
        server_cfg(pki, &server_opts()),
    )
    .unwrap();
    c.writer().write_all(b"key method 2").unwrap();
    pump(&mut c, &mut s).unwrap();
    let mut got = [0u8; 12];
    s.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"key method 2");
}

#[test]
fn server_name_is_not_checked() {
    // The server cert's SAN is DNS:server; the client connects with an IP name and no SNI,
    // and a server cert without any SAN works as well (older easy-rsa).
    let pki = ec_pki();
    let mut leaf = Leaf::server("vpn.example.org");
    leaf.sans.clear();
    let server = pki.ca.issue(Alg::P256, leaf);
    let scfg = tls::server_config(
        &pki.ca.pem,
        &server.cert_pem,
        &server.key_pem,
        &server_opts(),
    )
    .unwrap();
    let (c, _) = handshake(client_cfg(pki, &client_opts()), scfg).unwrap();
    assert_eq!(
        tls::peer_common_name(c.peer_certificates().unwrap()).as_deref(),
        Some("vpn.example.org")
    );
}

#[test]
fn cert_chain_with_intermediate() {
    let root = Ca::root(Alg::P256, "Root CA");
    let sub = root.intermediate(Alg::P256, "Sub CA");
    let server = sub.issue(Alg::P256, Leaf::server("server"));
    let client = sub.issue(Alg::P256, Leaf::client("client"));
    // cert files carry leaf + intermediate; the ca file only the root.
    let server_chain = format!("{}{}", server.cert_pem, sub.pem);
    let client_chain = Issued {
        cert_pem: format!("{}{}", client.cert_pem, sub.pem),
        key_pem: client.key_pem.clone(),
    };
    let scfg =
        tls::server_config(&root.pem, &server_chain, &server.key_pem, &server_opts()).unwrap();
    let ccfg = client_cfg_with(&root.pem, &client_chain, &client_opts());
    let (c, s) = handshake(ccfg, scfg).unwrap();
    assert_eq!(c.peer_certificates().unwrap().len(), 2);
    assert_eq!(
        tls::peer_common_name(s.peer_certificates().unwrap()).as_deref(),
        Some("client")
    );

    // Without the intermediate the chain does not verify.
    let ccfg = client_cfg_with(&root.pem, &client, &client_opts());
    let scfg =
        tls::server_config(&root.pem, &server_chain, &server.key_pem, &server_opts()).unwrap();
    let err = expect_rejection(handshake(ccfg, scfg), Side::Server);
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );
}

#[test]
fn mixed_key_types() {
    // RSA CA and server, ECDSA client, as in PKIs migrated step by step.
    let ca = Ca::root(Alg::P256, "Mixed CA");
    let server = rsa_pki().ca.issue(Alg::P256, Leaf::server("server"));
    let client = ca.issue(Alg::Ed25519, Leaf::client("client"));
    let both = format!("{}{}", rsa_pki().ca.pem, ca.pem);
    let scfg =
        tls::server_config(&both, &server.cert_pem, &server.key_pem, &server_opts()).unwrap();
    let ccfg = client_cfg_with(&both, &client, &client_opts());
    handshake(ccfg, scfg).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------------------------

#[test]
fn client_cert_from_another_ca_is_refused() {
    let pki = ec_pki();
    let other = Ca::root(Alg::P256, "Other CA");
    let client = other.issue(Alg::P256, Leaf::client("mallory"));
    let ccfg = client_cfg_with(&pki.ca.pem, &client, &client_opts());
    let err = expect_rejection(
        handshake(ccfg, server_cfg(pki, &server_opts())),
        Side::Server,
    );
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );
    assert!(
        tls::describe_tls_error(&err).starts_with("certificate rejected: "),
        "{}",
        tls::describe_tls_error(&err)
    );
}

#[test]
fn client_cert_without_eku_needs_remote_cert_tls() {
    let pki = ec_pki();
    let client = pki.ca.issue(Alg::P256, Leaf::client("noeku").ekus(vec![]));
    // With remote-cert-tls client: refused.
    let ccfg = client_cfg_with(&pki.ca.pem, &client, &client_opts());
    let err = expect_rejection(
        handshake(ccfg.clone(), server_cfg(pki, &server_opts())),
        Side::Server,
    );
    assert_eq!(
        tls::certificate_rejection(&err),
        Some(&CertRejection::MissingExtendedKeyUsage {
            role: CertRole::Client
        })
    );
    let text = tls::describe_tls_error(&err);
    assert!(
        text.starts_with("certificate rejected: ") && text.contains("clientAuth"),
        "{text}"
    );

    // Without remote-cert-tls: accepted, as by OpenVPN (EKU is only required if present).
    let lax = ServerTlsOptions {
        remote_cert_tls: None,
        ..server_opts()
    };
    handshake(ccfg, server_cfg(pki, &lax)).unwrap();
}

#[test]
fn client_cert_with_server_eku_is_refused() {
    let pki = ec_pki();
    let client = pki.ca.issue(
        Alg::P256,
        Leaf::client("wrongeku").ekus(vec![ExtendedKeyUsagePurpose::ServerAuth]),
    );
    let ccfg = client_cfg_with(&pki.ca.pem, &client, &client_opts());
    // webpki already refuses an EKU without clientAuth, whatever remote-cert-tls says.
    let lax = ServerTlsOptions {
        remote_cert_tls: None,
        ..server_opts()
    };
    let err = expect_rejection(handshake(ccfg, server_cfg(pki, &lax)), Side::Server);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::InvalidPurposeContext { .. }
            )
        ),
        "{err:?}"
    );
}

#[test]
fn client_cert_without_key_usage_is_refused_with_remote_cert_tls() {
    let pki = ec_pki();
    let client = pki
        .ca
        .issue(Alg::P256, Leaf::client("noku").key_usages(vec![]));
    let ccfg = client_cfg_with(&pki.ca.pem, &client, &client_opts());
    let err = expect_rejection(
        handshake(ccfg, server_cfg(pki, &server_opts())),
        Side::Server,
    );
    assert_eq!(
        tls::certificate_rejection(&err),
        Some(&CertRejection::MissingKeyUsage {
            role: CertRole::Client
        })
    );
}

#[test]
fn key_usage_without_digital_signature_is_refused() {
    let pki = ec_pki();
    let client = pki.ca.issue(
        Alg::P256,
        Leaf::client("kuenc").key_usages(vec![KeyUsagePurpose::KeyEncipherment]),
    );
    let ccfg = client_cfg_with(&pki.ca.pem, &client, &client_opts());
    let err = expect_rejection(
        handshake(ccfg, server_cfg(pki, &server_opts())),
        Side::Server,
    );
    assert_eq!(
        tls::certificate_rejection(&err),
        Some(&CertRejection::KeyUsageWithoutDigitalSignature)
    );
}

#[test]
fn server_cert_without_server_auth_is_refused_by_client() {
    let pki = ec_pki();
    // A client certificate used as server certificate: EKU clientAuth only.
    let wrong = pki.ca.issue(Alg::P256, Leaf::client("server"));
    let scfg =
        tls::server_config(&pki.ca.pem, &wrong.cert_pem, &wrong.key_pem, &server_opts()).unwrap();
    let err = expect_rejection(
        handshake(client_cfg(pki, &client_opts()), scfg),
        Side::Client,
    );
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::InvalidPurposeContext { .. }
            )
        ),
        "{err:?}"
    );

    // No EKU at all: only remote-cert-tls server refuses it.
    let noeku = pki.ca.issue(Alg::P256, Leaf::server("server").ekus(vec![]));
    let scfg =
        tls::server_config(&pki.ca.pem, &noeku.cert_pem, &noeku.key_pem, &server_opts()).unwrap();
    let err = expect_rejection(
        handshake(client_cfg(pki, &client_opts()), scfg.clone()),
        Side::Client,
    );
    assert_eq!(
        tls::certificate_rejection(&err),
        Some(&CertRejection::MissingExtendedKeyUsage {
            role: CertRole::Server
        })
    );
    let lax = ClientTlsOptions {
        remote_cert_tls: None,
        ..client_opts()
    };
    handshake(client_cfg(pki, &lax), scfg).unwrap();
}

#[test]
fn expired_client_cert_is_refused() {
    let pki = ec_pki();
    let client = pki.ca.issue(Alg::P256, Leaf::client("old").expired());
    let ccfg = client_cfg_with(&pki.ca.pem, &client, &client_opts());
    let err = expect_rejection(
        handshake(ccfg, server_cfg(pki, &server_opts())),
        Side::Server,
    );
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })
        ),
        "{err:?}"
    );
    assert!(tls::describe_tls_error(&err).contains("expired"));
}

#[test]
fn expired_server_cert_is_refused() {
    let pki = ec_pki();
    let server = pki.ca.issue(Alg::P256, Leaf::server("server").expired());
    let scfg = tls::server_config(
        &pki.ca.pem,
        &server.cert_pem,
        &server.key_pem,
        &server_opts(),
    )
    .unwrap();
    let err = expect_rejection(
        handshake(client_cfg(pki, &client_opts()), scfg),
        Side::Client,
    );
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Validity periods judged at an injected (fake) time
// ---------------------------------------------------------------------------------------------

/// 2030-01-01T00:00:00Z and 2031-01-01T00:00:00Z: the validity of the certificates below.
const VALID_FROM: u64 = 1_893_456_000;
const VALID_UNTIL: u64 = 1_924_992_000;
const DAY: u64 = 86_400;

/// The fake times each test tries, with what the verifier must say at each.
fn fake_times() -> [(u64, Option<&'static str>); 5] {
    [
        (VALID_FROM - DAY, Some("not yet valid")),
        (VALID_FROM, None),
        (VALID_FROM + 180 * DAY, None),
        (VALID_UNTIL, None),
        (VALID_UNTIL + DAY, Some("expired")),
    ]
}

/// Checks a validity error against the expectation `what` at fake time `now`: the right
/// rustls variant, carrying the fake time (so the injected clock was used, not the wall
/// clock) and the certificate's bound.
fn assert_validity_error(err: &rustls::Error, what: &str, now: u64) {
    match (what, err) {
        (
            "expired",
            rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext {
                time,
                not_after,
            }),
        ) => {
            assert_eq!(time.as_secs(), now);
            assert_eq!(not_after.as_secs(), VALID_UNTIL);
        }
        (
            "not yet valid",
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidYetContext {
                time,
                not_before,
            }),
        ) => {
            assert_eq!(time.as_secs(), now);
            assert_eq!(not_before.as_secs(), VALID_FROM);
        }
        _ => panic!("expected {what} at {now}, got {err:?}"),
    }
    let line = tls::describe_tls_error(err);
    let word = if what == "expired" {
        "certificate expired"
    } else {
        "certificate not valid yet"
    };
    assert!(line.starts_with("certificate rejected: "), "{line}");
    assert!(line.contains(word), "{line}");
    assert!(line.contains(&now.to_string()), "{line}");
}

#[test]
fn client_cert_validity_is_checked_at_the_servers_injected_time() {
    let pki = ec_pki();
    let client = pki.ca.issue(
        Alg::P256,
        Leaf::client("dated").valid((2030, 1, 1), (2031, 1, 1)),
    );
    let clock = Arc::new(tls::ManualClock::new(0));
    let scfg = tls::server_config_with_time(
        &pki.ca.pem,
        &pki.server.cert_pem,
        &pki.server.key_pem,
        &server_opts(),
        clock.clone(),
    )
    .unwrap();
    // The client judges the server's certificate (valid 1975-4096) at the same fake time.
    for (now, expect) in fake_times() {
        clock.set(now);
        for version in [TlsVersion::V1_2, TlsVersion::V1_3] {
            let copts = ClientTlsOptions {
                min_version: Some(version),
                max_version: Some(version),
                ..client_opts()
            };
            let ccfg = tls::client_config_with_time(
                &pki.ca.pem,
                Some(&client.cert_pem),
                Some(&client.key_pem),
                &copts,
                clock.clone(),
            )
            .unwrap();
            let result = handshake(ccfg, scfg.clone());
            match expect {
                None => {
                    let (_, s) = result.unwrap_or_else(|f| panic!("at {now}: {f:?}"));
                    assert_eq!(
                        tls::peer_common_name(s.peer_certificates().unwrap()).as_deref(),
                        Some("dated")
                    );
                }
                Some(what) => {
                    let err = expect_rejection(result, Side::Server);
                    assert_validity_error(&err, what, now);
                }
            }
        }
    }
}

#[test]
fn server_cert_validity_is_checked_at_the_clients_injected_time() {
    let pki = ec_pki();
    let server = pki.ca.issue(
        Alg::P256,
        Leaf::server("dated-server").valid((2030, 1, 1), (2031, 1, 1)),
    );
    let clock = Arc::new(tls::ManualClock::new(0));
    for (now, expect) in fake_times() {
        clock.set(now);
        let scfg = tls::server_config_with_time(
            &pki.ca.pem,
            &server.cert_pem,
            &server.key_pem,
            &server_opts(),
            clock.clone(),
        )
        .unwrap();
        for version in [TlsVersion::V1_2, TlsVersion::V1_3] {
            let copts = ClientTlsOptions {
                min_version: Some(version),
                max_version: Some(version),
                ..client_opts()
            };
            let ccfg = tls::client_config_with_time(
                &pki.ca.pem,
                Some(&pki.client.cert_pem),
                Some(&pki.client.key_pem),
                &copts,
                clock.clone(),
            )
            .unwrap();
            let result = handshake(ccfg, scfg.clone());
            match expect {
                None => {
                    let (c, _) = result.unwrap_or_else(|f| panic!("at {now}: {f:?}"));
                    assert_eq!(
                        tls::peer_common_name(c.peer_certificates().unwrap()).as_deref(),
                        Some("dated-server")
                    );
                }
                Some(what) => {
                    let err = expect_rejection(result, Side::Client);
                    assert_validity_error(&err, what, now);
                }
            }
        }
    }
}

#[test]
fn wall_clock_configs_judge_validity_at_the_real_time() {
    // The production constructors keep using the wall clock: a certificate valid only from
    // 2095 is refused today, and the same one is accepted through an injected 2095 clock.
    const Y2095: u64 = 3_944_678_400;
    let pki = ec_pki();
    let client = pki.ca.issue(
        Alg::P256,
        Leaf::client("future").valid((2095, 1, 1), (2096, 1, 1)),
    );
    let ccfg = client_cfg_with(&pki.ca.pem, &client, &client_opts());
    let err = expect_rejection(
        handshake(ccfg.clone(), server_cfg(pki, &server_opts())),
        Side::Server,
    );
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidYetContext { .. })
        ),
        "{err:?}"
    );
    let in_2095: Arc<dyn tls::TimeProvider> = Arc::new(tls::ManualClock::new(Y2095 + 10 * DAY));
    let scfg = tls::server_config_with_time(
        &pki.ca.pem,
        &pki.server.cert_pem,
        &pki.server.key_pem,
        &server_opts(),
        in_2095,
    )
    .unwrap();
    handshake(ccfg, scfg).unwrap();
}

#[test]
fn server_cert_from_another_ca_is_refused() {
    let pki = ec_pki();
    let other = Ca::root(Alg::P256, "Other CA");
    let server = other.issue(Alg::P256, Leaf::server("server"));
    let scfg = tls::server_config(
        &pki.ca.pem,
        &server.cert_pem,
        &server.key_pem,
        &server_opts(),
    )
    .unwrap();
    let err = expect_rejection(
        handshake(client_cfg(pki, &client_opts()), scfg),
        Side::Client,
    );
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );
}

#[test]
fn verify_x509_name() {
    let pki = ec_pki();
    let server = pki.ca.issue(
        Alg::P256,
        Leaf::server("vpn-1").subject(vec![
            (DnType::CountryName, "DE"),
            (DnType::OrganizationName, "Example"),
            (DnType::CommonName, "vpn-1"),
        ]),
    );
    let scfg = tls::server_config(
        &pki.ca.pem,
        &server.cert_pem,
        &server.key_pem,
        &server_opts(),
    )
    .unwrap();
    let with = |name: &str, kind| ClientTlsOptions {
        verify_x509_name: Some((name.to_owned(), kind)),
        ..client_opts()
    };

    for ok in [
        with("C=DE, O=Example, CN=vpn-1", X509NameMatch::Subject),
        with("vpn-1", X509NameMatch::Name),
        with("vpn-", X509NameMatch::NamePrefix),
    ] {
        handshake(client_cfg(pki, &ok), scfg.clone()).unwrap();
    }
    for (bad, kind, actual) in [
        (
            with("CN=vpn-1", X509NameMatch::Subject),
            X509NameMatch::Subject,
            "C=DE, O=Example, CN=vpn-1",
        ),
        (
            with("vpn-2", X509NameMatch::Name),
            X509NameMatch::Name,
            "vpn-1",
        ),
        (
            with("vpn-1x", X509NameMatch::NamePrefix),
            X509NameMatch::NamePrefix,
            "vpn-1",
        ),
        (
            with("vpn", X509NameMatch::Name),
            X509NameMatch::Name,
            "vpn-1",
        ),
    ] {
        let expected = bad.verify_x509_name.clone().unwrap().0;
        let err = expect_rejection(handshake(client_cfg(pki, &bad), scfg.clone()), Side::Client);
        assert_eq!(
            tls::certificate_rejection(&err),
            Some(&CertRejection::X509NameMismatch {
                expected,
                actual: actual.to_owned(),
                kind
            })
        );
    }
}

#[test]
fn client_without_cert() {
    let pki = ec_pki();
    let anon = tls::client_config(&pki.ca.pem, None, None, &client_opts()).unwrap();

    // verify-client-cert require (default).
    let err = expect_rejection(
        handshake(anon.clone(), server_cfg(pki, &server_opts())),
        Side::Server,
    );
    assert_eq!(err, rustls::Error::NoCertificatesPresented);
    assert!(tls::describe_tls_error(&err).contains("no certificate"));

    // optional: accepted without a certificate, and a sent certificate is still verified.
    let optional = ServerTlsOptions {
        client_cert: ClientCertMode::Optional,
        ..server_opts()
    };
    let (_, s) = handshake(anon.clone(), server_cfg(pki, &optional)).unwrap();
    assert!(s.peer_certificates().is_none());
    let (_, s) = handshake(client_cfg(pki, &client_opts()), server_cfg(pki, &optional)).unwrap();
    assert_eq!(
        tls::peer_common_name(s.peer_certificates().unwrap()).as_deref(),
        Some("client")
    );
    let other = Ca::root(Alg::P256, "Other CA").issue(Alg::P256, Leaf::client("x"));
    let err = expect_rejection(
        handshake(
            client_cfg_with(&pki.ca.pem, &other, &client_opts()),
            server_cfg(pki, &optional),
        ),
        Side::Server,
    );
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );

    // none: no certificate is requested.
    let none = ServerTlsOptions {
        client_cert: ClientCertMode::None,
        ..server_opts()
    };
    let (_, s) = handshake(client_cfg(pki, &client_opts()), server_cfg(pki, &none)).unwrap();
    assert!(s.peer_certificates().is_none());
}

#[test]
fn common_name_rules() {
    let pki = ec_pki();
    let long = "x".repeat(65);
    let cases: [(Leaf, CertRejection); 2] = [
        (
            Leaf::client("").subject(vec![(DnType::OrganizationName, "No CN Inc")]),
            CertRejection::NoCommonName,
        ),
        (
            Leaf::client(&long),
            CertRejection::CommonNameTooLong { len: 65 },
        ),
    ];
    for (leaf, why) in cases {
        let client = pki.ca.issue(Alg::P256, leaf);
        let ccfg = client_cfg_with(&pki.ca.pem, &client, &client_opts());
        let err = expect_rejection(
            handshake(ccfg, server_cfg(pki, &server_opts())),
            Side::Server,
        );
        assert_eq!(tls::certificate_rejection(&err), Some(&why));
    }
    // Exactly 64 bytes is fine.
    let client = pki.ca.issue(Alg::P256, Leaf::client(&"y".repeat(64)));
    let (_, s) = handshake(
        client_cfg_with(&pki.ca.pem, &client, &client_opts()),
        server_cfg(pki, &server_opts()),
    )
    .unwrap();
    assert_eq!(
        tls::peer_common_name(s.peer_certificates().unwrap()),
        Some("y".repeat(64))
    );
}

#[test]
fn version_mismatch_fails() {
    let pki = ec_pki();
    let s12 = ServerTlsOptions {
        max_version: Some(TlsVersion::V1_2),
        ..server_opts()
    };
    let c13 = ClientTlsOptions {
        min_version: Some(TlsVersion::V1_3),
        ..client_opts()
    };
    let result = handshake(client_cfg(pki, &c13), server_cfg(pki, &s12));
    assert!(result.is_err());
    // And a TLS 1.2-only client still meets a default server on 1.2.
    let c12 = ClientTlsOptions {
        max_version: Some(TlsVersion::V1_2),
        ..client_opts()
    };
    let (c, _) = handshake(client_cfg(pki, &c12), server_cfg(pki, &server_opts())).unwrap();
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
}

// ---------------------------------------------------------------------------------------------
// Setup errors
// ---------------------------------------------------------------------------------------------

fn setup_err(r: Result<Arc<ServerConfig>, TlsSetupError>) -> TlsSetupError {
    match r {
        Ok(_) => panic!("config unexpectedly built"),
        Err(e) => e,
    }
}

#[test]
fn key_that_does_not_match_the_cert() {
    let pki = ec_pki();
    let err = setup_err(tls::server_config(
        &pki.ca.pem,
        &pki.server.cert_pem,
        &pki.client.key_pem,
        &server_opts(),
    ));
    assert!(matches!(err, TlsSetupError::KeyMismatch), "{err:?}");
    assert!(
        err.to_string()
            .contains("the private key does not match the certificate")
    );

    let err = tls::client_config(
        &pki.ca.pem,
        Some(&pki.client.cert_pem),
        Some(&pki.server.key_pem),
        &client_opts(),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(matches!(err, TlsSetupError::KeyMismatch), "{err:?}");

    // A key of another type (RSA key, ECDSA cert).
    let err = setup_err(tls::server_config(
        &pki.ca.pem,
        &pki.server.cert_pem,
        &rsa_pki().server.key_pem,
        &server_opts(),
    ));
    assert!(matches!(err, TlsSetupError::KeyMismatch), "{err:?}");
}

#[test]
fn pem_input_errors() {
    let pki = ec_pki();
    let opts = server_opts();

    let err = setup_err(tls::server_config(
        &pki.ca.pem,
        &pki.server.key_pem,
        &pki.server.key_pem,
        &opts,
    ));
    assert!(
        matches!(
            err,
            TlsSetupError::NoCertificate {
                file: tls::PemFile::Cert
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("cert file: no certificate found"),
        "{err}"
    );

    let err = setup_err(tls::server_config(
        "",
        &pki.server.cert_pem,
        &pki.server.key_pem,
        &opts,
    ));
    assert!(
        matches!(
            err,
            TlsSetupError::NoCertificate {
                file: tls::PemFile::Ca
            }
        ),
        "{err:?}"
    );

    let err = setup_err(tls::server_config(
        &pki.ca.pem,
        &pki.server.cert_pem,
        &pki.server.cert_pem,
        &opts,
    ));
    assert!(matches!(err, TlsSetupError::NoPrivateKey), "{err:?}");

    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let err = setup_err(tls::server_config(
        &pki.ca.pem,
        &pki.server.cert_pem,
        encrypted,
        &opts,
    ));
    assert!(matches!(err, TlsSetupError::EncryptedKey), "{err:?}");
    assert!(
        err.to_string()
            .contains("encrypted private keys are not supported"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("openssl pkey -in key -out key.plain"),
        "{err}"
    );

    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    let err = setup_err(tls::server_config(
        &pki.ca.pem,
        &pki.server.cert_pem,
        legacy,
        &opts,
    ));
    assert!(matches!(err, TlsSetupError::EncryptedKey), "{err:?}");

    let truncated = &pki.server.cert_pem[..pki.server.cert_pem.len() - 30];
    let err = setup_err(tls::server_config(
        &pki.ca.pem,
        truncated,
        &pki.server.key_pem,
        &opts,
    ));
    assert!(
        matches!(
            err,
            TlsSetupError::Pem {
                file: tls::PemFile::Cert,
                ..
            }
        ),
        "{err:?}"
    );

    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let err = setup_err(tls::server_config(
        garbage,
        &pki.server.cert_pem,
        &pki.server.key_pem,
        &opts,
    ));
    assert!(
        matches!(
            err,
            TlsSetupError::BadCertificate {
                file: tls::PemFile::Ca,
                index: 1,
                ..
            }
        ),
        "{err:?}"
    );

    let garbage_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    let err = setup_err(tls::server_config(
        &pki.ca.pem,
        &pki.server.cert_pem,
        garbage_key,
        &opts,
    ));
    assert!(
        matches!(err, TlsSetupError::UnsupportedKey { .. }),
        "{err:?}"
    );

    let err = tls::client_config(
        &pki.ca.pem,
        Some(&pki.client.cert_pem),
        None,
        &client_opts(),
    )
    .unwrap_err();
    assert!(matches!(err, TlsSetupError::CertWithoutKey), "{err:?}");
    let err = tls::client_config(&pki.ca.pem, None, Some(&pki.client.key_pem), &client_opts())
        .unwrap_err();
    assert!(matches!(err, TlsSetupError::KeyWithoutCert), "{err:?}");

    let bad_range = ServerTlsOptions {
        min_version: Some(TlsVersion::V1_3),
        max_version: Some(TlsVersion::V1_2),
        ..server_opts()
    };
    let err = setup_err(tls::server_config(
        &pki.ca.pem,
        &pki.server.cert_pem,
        &pki.server.key_pem,
        &bad_range,
    ));
    assert_eq!(
        err.to_string(),
        "tls-version-min 1.3 is higher than tls-version-max 1.2"
    );
}

#[test]
fn pem_with_surrounding_text_loads() {
    // easy-rsa's issued certs start with the `openssl x509 -text` dump before the PEM block.
    let pki = ec_pki();
    let cert = format!(
        "Certificate:\n    Data:\n        Version: 3 (0x2)\n{}",
        pki.server.cert_pem
    );
    let key = format!("\n\n{}\n", pki.server.key_pem);
    tls::server_config(&pki.ca.pem, &cert, &key, &server_opts()).unwrap();
}

/// `tls-cipher`, `tls-ciphersuites` and `tls-groups` restrict what each side offers: the
/// chosen suite and group are the ones negotiated, and sides without a common one fail.
#[test]
fn chosen_suites_and_groups_are_negotiated() {
    use tls::{CipherSuite as S, KxGroup as G, TlsAlgorithms};
    let pki = ec_pki();
    // angristan/openvpn-install: one ECDSA TLS 1.2 suite; forced to TLS 1.2 here.
    let algs = TlsAlgorithms {
        kx_groups: Some(vec![G::P384]),
        tls12_suites: Some(vec![S::EcdheEcdsaAes128GcmSha256]),
        tls13_suites: None,
    };
    let s = server_cfg(
        pki,
        &ServerTlsOptions {
            algorithms: algs.clone(),
            max_version: Some(TlsVersion::V1_2),
            ..server_opts()
        },
    );
    let (c, _) = handshake(client_cfg(pki, &client_opts()), s.clone()).expect("handshake");
    assert_eq!(
        c.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
    assert_eq!(
        c.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::secp384r1)
    );
    // A client that only offers X25519 finds no common group.
    let x25519_only = ClientTlsOptions {
        algorithms: TlsAlgorithms {
            kx_groups: Some(vec![G::X25519]),
            ..TlsAlgorithms::default()
        },
        ..client_opts()
    };
    let e = expect_rejection(handshake(client_cfg(pki, &x25519_only), s), Side::Server);
    assert!(matches!(e, rustls::Error::PeerIncompatible(_)), "{e:?}");

    // TLS 1.3: the server's first choice among the client's suites wins.
    let s13 = server_cfg(
        pki,
        &ServerTlsOptions {
            algorithms: TlsAlgorithms {
                tls13_suites: Some(vec![S::Tls13Chacha20Poly1305Sha256]),
                ..TlsAlgorithms::default()
            },
            ..server_opts()
        },
    );
    let (c, _) = handshake(client_cfg(pki, &client_opts()), s13).expect("handshake");
    assert_eq!(
        c.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
    );
    // An RSA suite list with an ECDSA certificate and TLS 1.2 only cannot work.
    let rsa_only = ServerTlsOptions {
        algorithms: TlsAlgorithms {
            tls12_suites: Some(vec![S::EcdheRsaAes256GcmSha384]),
            ..TlsAlgorithms::default()
        },
        max_version: Some(TlsVersion::V1_2),
        ..server_opts()
    };
    let r = handshake(client_cfg(pki, &client_opts()), server_cfg(pki, &rsa_only));
    expect_rejection(r, Side::Server);
    // TLS 1.3 only with an empty TLS 1.3 list is a setup error.
    let none13 = ServerTlsOptions {
        algorithms: TlsAlgorithms {
            tls13_suites: Some(vec![]),
            ..TlsAlgorithms::default()
        },
        min_version: Some(TlsVersion::V1_3),
        ..server_opts()
    };
    let e = tls::server_config(
        &pki.ca.pem,
        &pki.server.cert_pem,
        &pki.server.key_pem,
        &none13,
    )
    .expect_err("no suite for TLS 1.3");
    assert!(
        e.to_string()
            .contains("no cipher suite is left for TLS 1.3"),
        "{e}"
    );
}

/// `verify-x509-name` in a server config restricts which client certificates get in.
#[test]
fn server_side_verify_x509_name() {
    let pki = ec_pki();
    let with = |name: &str, kind| ServerTlsOptions {
        verify_x509_name: Some((name.to_owned(), kind)),
        ..server_opts()
    };
    for ok in [
        with("client", X509NameMatch::Name),
        with("cli", X509NameMatch::NamePrefix),
    ] {
        handshake(client_cfg(pki, &client_opts()), server_cfg(pki, &ok)).unwrap();
    }
    let bad = with("alice", X509NameMatch::Name);
    let err = expect_rejection(
        handshake(client_cfg(pki, &client_opts()), server_cfg(pki, &bad)),
        Side::Server,
    );
    assert_eq!(
        tls::certificate_rejection(&err),
        Some(&CertRejection::X509NameMismatch {
            expected: "alice".into(),
            actual: "client".into(),
            kind: X509NameMatch::Name,
        }),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// crl-verify
// ---------------------------------------------------------------------------------------------

fn serial_of(cert_pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    tls::peer_serial(&[der]).unwrap()
}

/// A CRL (DER) signed by `ca` listing `serials`.
fn crl_der(ca: &Ca, serials: &[&[u8]]) -> Vec<u8> {
    let params = rcgen::CertificateRevocationListParams {
        this_update: date_time_ymd(2024, 1, 1),
        next_update: date_time_ymd(2024, 2, 1),
        crl_number: rcgen::SerialNumber::from_slice(&[1]),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(s),
                revocation_time: date_time_ymd(2024, 1, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params.signed_by(&ca.issuer()).unwrap().der().to_vec()
}

fn crl_opts(crls: Vec<Vec<u8>>) -> ServerTlsOptions {
    ServerTlsOptions {
        crl: Some(tls::CrlCheck {
            crls,
            source: "/etc/openvpn/crl.pem".into(),
        }),
        ..server_opts()
    }
}

#[test]
fn crl_verify_refuses_revoked_serials_only() {
    let pki = ec_pki();
    let other = pki.ca.issue(Alg::P256, Leaf::client("other"));
    let revoked = serial_of(&pki.client.cert_pem);
    let hex: String = revoked.iter().map(|b| format!("{b:02X}")).collect();

    // An empty CRL (nextUpdate long past: OpenVPN ignores it, so does warren) lets both in.
    let empty = server_cfg(pki, &crl_opts(vec![crl_der(&pki.ca, &[])]));
    handshake(client_cfg(pki, &client_opts()), empty.clone()).unwrap();

    let listed = server_cfg(pki, &crl_opts(vec![crl_der(&pki.ca, &[&revoked])]));
    let err = expect_rejection(
        handshake(client_cfg(pki, &client_opts()), listed.clone()),
        Side::Server,
    );
    assert_eq!(
        tls::certificate_rejection(&err),
        Some(&CertRejection::Revoked {
            serial: hex.clone(),
            crl: "/etc/openvpn/crl.pem".into()
        })
    );
    assert_eq!(
        tls::describe_tls_error(&err),
        format!(
            "certificate rejected: certificate serial {hex} is revoked (crl-verify /etc/openvpn/crl.pem)"
        )
    );
    // Another certificate of the same CA is not affected.
    handshake(client_cfg_with(&pki.ca.pem, &other, &client_opts()), listed).unwrap();
}

#[test]
fn crl_verify_needs_a_crl_from_the_issuer() {
    let pki = ec_pki();
    let stranger = Ca::root(Alg::P256, "Other CA");
    let cfg = server_cfg(pki, &crl_opts(vec![crl_der(&stranger, &[])]));
    let err = expect_rejection(
        handshake(client_cfg(pki, &client_opts()), cfg),
        Side::Server,
    );
    assert!(
        matches!(
            tls::certificate_rejection(&err),
            Some(CertRejection::NoCrl { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn crl_verify_garbage_is_a_setup_error() {
    let pki = ec_pki();
    let err = tls::server_config(
        &pki.ca.pem,
        &pki.server.cert_pem,
        &pki.server.key_pem,
        &crl_opts(vec![b"not a CRL".to_vec()]),
    )
    .unwrap_err();
    assert!(matches!(err, TlsSetupError::Crl { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("crl-verify /etc/openvpn/crl.pem: "),
        "{err}"
    );
}

fn client_crl_opts(crls: Vec<Vec<u8>>) -> ClientTlsOptions {
    ClientTlsOptions {
        crl: Some(tls::CrlCheck {
            crls,
            source: "crl.pem".into(),
        }),
        ..client_opts()
    }
}

#[test]
fn client_crl_verify_refuses_a_revoked_server() {
    let pki = ec_pki();
    let server_serial = serial_of(&pki.server.cert_pem);
    let client_serial = serial_of(&pki.client.cert_pem);
    let hex: String = server_serial.iter().map(|b| format!("{b:02X}")).collect();
    let scfg = server_cfg(pki, &server_opts());

    // A CRL that lists someone else: the server gets through.
    let others = client_crl_opts(vec![crl_der(&pki.ca, &[&client_serial])]);
    handshake(client_cfg(pki, &others), scfg.clone()).unwrap();

    // The server's own serial: the client refuses it.
    let listed = client_crl_opts(vec![crl_der(&pki.ca, &[&server_serial])]);
    let err = expect_rejection(
        handshake(client_cfg(pki, &listed), scfg.clone()),
        Side::Client,
    );
    assert_eq!(
        tls::describe_tls_error(&err),
        format!("certificate rejected: certificate serial {hex} is revoked (crl-verify crl.pem)")
    );

    // A CRL of another CA only: the server CA has no CRL, so the status is unknown: refused.
    let stranger = Ca::root(Alg::P256, "Other CA");
    let foreign = client_crl_opts(vec![crl_der(&stranger, &[])]);
    let err = expect_rejection(handshake(client_cfg(pki, &foreign), scfg), Side::Client);
    assert!(
        matches!(
            tls::certificate_rejection(&err),
            Some(CertRejection::NoCrl { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn client_crl_verify_garbage_is_a_setup_error() {
    let pki = ec_pki();
    let err = tls::client_config(
        &pki.ca.pem,
        Some(&pki.client.cert_pem),
        Some(&pki.client.key_pem),
        &client_crl_opts(vec![b"not a CRL".to_vec()]),
    )
    .unwrap_err();
    assert!(matches!(err, TlsSetupError::Crl { .. }), "{err:?}");
    assert!(err.to_string().starts_with("crl-verify crl.pem: "), "{err}");
}
