//! Issued certificates are what stock OpenVPN (OpenSSL) and warren's rustls configs expect.
//!
//! Uses the `openssl` CLI (`openssl verify -purpose sslserver|sslclient`, `-crl_check`).

// The tests compare against the wall clock, as rustls and openssl do.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warren_core::TestRng;
use warren_openvpn::tls::{self, CertRole, ClientTlsOptions, ServerTlsOptions};
use warren_pki::{
    CaOptions, CertKind, KeyAlgorithm, LeafOptions, Pki, PkiError, RevocationReason, Revoked,
    inspect_pem, parse_crl_pem,
};

/// The real time: rustls checks validity against the wall clock.
fn now() -> SystemTime {
    SystemTime::now()
}

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ca(alg: KeyAlgorithm, rng: &mut TestRng) -> Pki {
    let opts = CaOptions {
        common_name: "warren test CA".into(),
        algorithm: alg,
        days: 3650,
    };
    Pki::generate(&opts, now(), rng).expect("generate CA")
}

/// Drives a rustls handshake in memory until both sides are done.
fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Result<Option<String>, rustls::Error> {
    let mut s = rustls::ServerConnection::new(server)?;
    let mut c = rustls::ClientConnection::new(client, tls::no_sni_server_name())?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("client write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("server read");
            s.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("server write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).expect("client read");
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(s.peer_certificates().and_then(tls::peer_common_name));
        }
    }
    panic!("handshake did not finish");
}

fn check_algorithm(alg: KeyAlgorithm, seed: u64) {
    let mut rng = TestRng::seed(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca(alg, &mut rng);
    let leaf = LeafOptions {
        algorithm: alg,
        days: 825,
    };
    let server = ca
        .issue_server("vpn.example.org", &leaf, now(), &mut rng)
        .expect("server");
    let client = ca
        .issue_client("alice", &leaf, now(), &mut rng)
        .expect("client");
    assert_eq!(ca.info().kind, CertKind::Ca);
    assert_eq!(ca.info().key_algorithm, Some(alg));
    assert_eq!(server.info.kind, CertKind::Server);
    assert_eq!(server.info.common_name, "vpn.example.org");
    assert_eq!(client.info.kind, CertKind::Client);
    assert_eq!(client.info.common_name, "alice");
    assert_eq!(client.info.key_algorithm, Some(alg));
    let days = client
        .info
        .not_after
        .duration_since(now())
        .expect("future")
        .as_secs();
    assert!(
        (825 * 86_400 - 10..=825 * 86_400).contains(&days),
        "825 days: {days}"
    );
    assert!(client.info.not_before < now());
    assert_ne!(server.info.serial, client.info.serial);
    assert!(
        client.info.serial.as_bytes().len() >= 14,
        "random 128-bit serial"
    );

    let d = dir.path();
    fs::write(d.join("ca.crt"), ca.cert_pem()).expect("write");
    fs::write(d.join("server.crt"), &server.cert_pem).expect("write");
    fs::write(d.join("client.crt"), &client.cert_pem).expect("write");
    assert!(
        server
            .key_pem
            .as_str()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert!(!ca.cert_pem().contains('\r') && !server.cert_pem.contains('\r'));

    // OpenSSL: chain, purpose (EKU/KU/basicConstraints as OpenVPN's OpenSSL checks them).
    // -attime: the certificates are valid from our fixed "now".
    let at = (now() + Duration::from_secs(86_400))
        .duration_since(UNIX_EPOCH)
        .expect("epoch")
        .as_secs()
        .to_string();
    for (file, purpose, ok) in [
        ("server.crt", "sslserver", true),
        ("client.crt", "sslclient", true),
        ("client.crt", "sslserver", false),
        ("server.crt", "sslclient", false),
    ] {
        let (success, out) = openssl(
            &[
                "verify", "-attime", &at, "-CAfile", "ca.crt", "-purpose", purpose, file,
            ],
            d,
        );
        assert_eq!(
            success, ok,
            "{alg}: openssl verify -purpose {purpose} {file}: {out}"
        );
    }
    let (_, text) = openssl(&["x509", "-in", "ca.crt", "-noout", "-text"], d);
    assert!(
        text.contains("X509v3 Basic Constraints: critical\n                CA:TRUE"),
        "{text}"
    );
    assert!(
        text.contains("X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign"),
        "{text}"
    );
    let (_, text) = openssl(&["x509", "-in", "server.crt", "-noout", "-text"], d);
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("DNS:vpn.example.org"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
    let (_, text) = openssl(&["x509", "-in", "client.crt", "-noout", "-text"], d);
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(
        text.contains("Subject: CN = alice") || text.contains("Subject: CN=alice"),
        "{text}"
    );

    // warren's own TLS setup (remote-cert-tls both ways) accepts them and completes a
    // handshake.
    let server_cfg = tls::server_config(
        ca.cert_pem(),
        &server.cert_pem,
        server.key_pem.as_str(),
        &ServerTlsOptions {
            remote_cert_tls: Some(CertRole::Client),
            ..Default::default()
        },
    )
    .expect("server_config");
    let client_cfg = tls::client_config(
        ca.cert_pem(),
        Some(&client.cert_pem),
        Some(client.key_pem.as_str()),
        &ClientTlsOptions {
            remote_cert_tls: Some(CertRole::Server),
            ..Default::default()
        },
    )
    .expect("client_config");
    let cn = handshake(server_cfg, client_cfg).expect("handshake");
    assert_eq!(cn.as_deref(), Some("alice"));

    // A client certificate is refused as a server certificate by remote-cert-tls server.
    let bad_server = tls::server_config(
        ca.cert_pem(),
        &client.cert_pem,
        client.key_pem.as_str(),
        &ServerTlsOptions::default(),
    )
    .expect("server_config with a client cert");
    let client_cfg = tls::client_config(
        ca.cert_pem(),
        Some(&client.cert_pem),
        Some(client.key_pem.as_str()),
        &ClientTlsOptions {
            remote_cert_tls: Some(CertRole::Server),
            ..Default::default()
        },
    )
    .expect("client_config");
    assert!(handshake(bad_server, client_cfg).is_err());

    // Reload from PEM: same CA.
    let again = Pki::from_pem(ca.cert_pem(), ca.key_pem().as_str()).expect("reload");
    assert_eq!(again.info(), ca.info());
    // Certificates issued by the reloaded CA chain to the same root.
    let more = again
        .issue_client("bob", &leaf, now(), &mut rng)
        .expect("client");
    fs::write(d.join("bob.crt"), &more.cert_pem).expect("write");
    let (ok, out) = openssl(
        &[
            "verify",
            "-attime",
            &at,
            "-CAfile",
            "ca.crt",
            "-purpose",
            "sslclient",
            "bob.crt",
        ],
        d,
    );
    assert!(ok, "{out}");
    assert!(ca.verify_issued(&more.cert_pem, "bob").is_ok());
}

#[test]
fn ecdsa_p256_pki() {
    check_algorithm(KeyAlgorithm::EcdsaP256, 1);
}

#[test]
fn ecdsa_p384_pki() {
    check_algorithm(KeyAlgorithm::EcdsaP384, 2);
}

#[test]
fn ed25519_pki() {
    check_algorithm(KeyAlgorithm::Ed25519, 3);
}

#[test]
fn rsa2048_pki() {
    check_algorithm(KeyAlgorithm::Rsa2048, 4);
}

#[test]
fn crl_is_accepted_by_openssl() {
    let mut rng = TestRng::seed(9);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = ca(KeyAlgorithm::EcdsaP256, &mut rng);
    let leaf = LeafOptions::default();
    let alice = ca
        .issue_client("alice", &leaf, now(), &mut rng)
        .expect("alice");
    let bob = ca.issue_client("bob", &leaf, now(), &mut rng).expect("bob");
    let revoked = vec![Revoked {
        serial: bob.info.serial.clone(),
        revoked_at: warren_pki::from_unix(warren_pki::to_unix(now()) + 60),
        reason: Some(RevocationReason::KeyCompromise),
    }];
    let crl = ca
        .crl_pem(&revoked, 7, now() + Duration::from_secs(120), 180)
        .expect("crl");
    assert!(crl.starts_with("-----BEGIN X509 CRL-----"));
    ca.verify_crl(&crl, "crl").expect("signed by the CA");
    assert_eq!(parse_crl_pem(&crl, "crl").expect("parse"), revoked);

    fs::write(d.join("ca.crt"), ca.cert_pem()).expect("write");
    fs::write(d.join("crl.pem"), &crl).expect("write");
    fs::write(d.join("alice.crt"), &alice.cert_pem).expect("write");
    fs::write(d.join("bob.crt"), &bob.cert_pem).expect("write");
    let at = (now() + Duration::from_secs(86_400))
        .duration_since(UNIX_EPOCH)
        .expect("epoch")
        .as_secs()
        .to_string();
    let verify = |f: &str| {
        openssl(
            &[
                "verify",
                "-attime",
                &at,
                "-crl_check",
                "-CRLfile",
                "crl.pem",
                "-CAfile",
                "ca.crt",
                f,
            ],
            d,
        )
    };
    let (ok, out) = verify("alice.crt");
    assert!(ok, "{out}");
    let (ok, out) = verify("bob.crt");
    assert!(!ok && out.contains("revoked"), "{out}");
    let (_, text) = openssl(&["crl", "-in", "crl.pem", "-noout", "-text"], d);
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(
        text.contains("X509v3 CRL Number: \n                7"),
        "{text}"
    );

    // An empty CRL is valid too.
    let empty = ca.crl_pem(&[], 1, now(), 30).expect("empty crl");
    assert!(parse_crl_pem(&empty, "crl").expect("parse").is_empty());
}

#[test]
fn loading_refuses_bad_inputs() {
    let mut rng = TestRng::seed(11);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca1 = ca(KeyAlgorithm::EcdsaP256, &mut rng);
    let ca2 = ca(KeyAlgorithm::EcdsaP256, &mut rng);
    let leaf = ca1
        .issue_client("alice", &LeafOptions::default(), now(), &mut rng)
        .expect("leaf");

    let e = Pki::from_pem(ca1.cert_pem(), ca2.key_pem().as_str()).expect_err("mismatch");
    assert!(matches!(e, PkiError::KeyMismatch { .. }), "{e}");
    let e = Pki::from_pem(&leaf.cert_pem, leaf.key_pem.as_str()).expect_err("not a CA");
    assert!(matches!(e, PkiError::NotCa { .. }), "{e}");
    let e = Pki::from_pem("garbage", ca1.key_pem().as_str()).expect_err("no cert");
    assert!(matches!(e, PkiError::NoPemBlock { .. }), "{e}");
    let e = Pki::from_pem(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ca1.key_pem().as_str(),
    )
    .expect_err("bad der");
    assert!(matches!(e, PkiError::BadCertificate { .. }), "{e}");
    let e = Pki::from_pem(ca1.cert_pem(), "").expect_err("no key");
    assert!(matches!(e, PkiError::NoPemBlock { .. }), "{e}");

    // An encrypted key (what `easyrsa build-ca` without nopass writes).
    fs::write(d.join("ca.key"), ca1.key_pem().as_str()).expect("write");
    let (ok, out) = openssl(
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "ca.key",
            "-out",
            "enc.key",
            "-v2",
            "aes256",
            "-passout",
            "pass:secret",
        ],
        d,
    );
    assert!(ok, "{out}");
    let enc = fs::read_to_string(d.join("enc.key")).expect("read");
    let e = Pki::from_pem(ca1.cert_pem(), &enc).expect_err("encrypted");
    assert!(matches!(e, PkiError::EncryptedKey { .. }), "{e}");
    assert!(e.to_string().contains("openssl pkey"), "{e}");

    // Traditional (SEC1) EC key form loads too.
    let (ok, out) = openssl(&["ec", "-in", "ca.key", "-out", "sec1.key"], d);
    assert!(ok, "{out}");
    let sec1 = fs::read_to_string(d.join("sec1.key")).expect("read");
    assert!(sec1.contains("BEGIN EC PRIVATE KEY"));
    Pki::from_pem(ca1.cert_pem(), &sec1).expect("SEC1 key");

    // Names are validated; a zero lifetime is refused; an expired CA cannot issue.
    let e = ca1
        .issue_client("a/b", &LeafOptions::default(), now(), &mut rng)
        .expect_err("bad name");
    assert!(matches!(e, PkiError::BadName { .. }), "{e}");
    let e = ca1
        .issue_client(
            "a",
            &LeafOptions {
                days: 0,
                ..Default::default()
            },
            now(),
            &mut rng,
        )
        .expect_err("zero days");
    assert!(matches!(e, PkiError::ZeroDays), "{e}");
    let late = now() + Duration::from_secs(3651 * 86_400);
    let e = ca1
        .issue_client("a", &LeafOptions::default(), late, &mut rng)
        .expect_err("expired CA");
    assert!(matches!(e, PkiError::CaExpired { .. }), "{e}");
    // Leaves never outlive the CA.
    let near_end = now() + Duration::from_secs(3600 * 86_400);
    let short = ca1
        .issue_client("a", &LeafOptions::default(), near_end, &mut rng)
        .expect("issue");
    assert_eq!(short.info.not_after, ca1.info().not_after);

    // A certificate from another CA is not ours.
    assert!(matches!(
        ca2.verify_issued(&leaf.cert_pem, "alice"),
        Err(PkiError::WrongIssuer { .. })
    ));
    // inspect_pem reads the same data as issuance returned.
    assert_eq!(
        inspect_pem(&leaf.cert_pem, "alice").expect("inspect"),
        leaf.info
    );
}

#[test]
fn crl_file_for_crl_verify() {
    let mut rng = TestRng::seed(21);
    let ca1 = ca(KeyAlgorithm::EcdsaP256, &mut rng);
    let ca2 = ca(KeyAlgorithm::EcdsaP256, &mut rng);
    let leaf = LeafOptions::default();
    let bob = ca1
        .issue_client("bob", &leaf, now(), &mut rng)
        .expect("bob");
    let revoked = vec![Revoked {
        serial: bob.info.serial.clone(),
        revoked_at: warren_pki::from_unix(warren_pki::to_unix(now())),
        reason: None,
    }];
    let crl1 = ca1.crl_pem(&revoked, 2, now(), 30).expect("crl");
    let crl2 = ca2.crl_pem(&[], 1, now(), 30).expect("crl");
    // A bundle of both CAs accepts both CRLs in one file.
    let bundle = format!("{}{}", ca1.cert_pem(), ca2.cert_pem());
    let f = warren_pki::load_crl_file(&format!("{crl1}{crl2}"), &bundle, "crl.pem").expect("ok");
    assert_eq!(f.ders.len(), 2);
    assert_eq!(f.revoked, revoked);
    // A CRL of another CA is refused, naming the file and its issuer.
    let e = warren_pki::load_crl_file(&crl2, ca1.cert_pem(), "crl.pem").expect_err("refused");
    assert!(
        matches!(e, PkiError::CrlIssuer { .. }) && e.to_string().starts_with("crl.pem: "),
        "{e}"
    );
    // No CRL at all, or garbage inside the armour.
    let e =
        warren_pki::load_crl_file(ca1.cert_pem(), ca1.cert_pem(), "crl.pem").expect_err("refused");
    assert!(e.to_string().contains("no X509 CRL block"), "{e}");
    let bad = "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
    let e = warren_pki::load_crl_file(bad, ca1.cert_pem(), "crl.pem").expect_err("refused");
    assert!(matches!(e, PkiError::BadCrl { .. }), "{e}");
}
