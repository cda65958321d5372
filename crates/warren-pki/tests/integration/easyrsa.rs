//! Import of a PKI made by Debian's `easy-rsa` package (`apt-get install easy-rsa`).

#![allow(clippy::disallowed_methods)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use warren_core::TestRng;
use warren_pki::easyrsa::{ImportError, ImportOptions, import};
use warren_pki::{CertKind, LeafOptions, PkiError};

const EASYRSA: &str = "/usr/share/easy-rsa/easyrsa";

fn easyrsa(dir: &Path, args: &[&str]) {
    assert!(
        Path::new(EASYRSA).exists(),
        "{EASYRSA} is missing: install Debian's easy-rsa package (apt-get install easy-rsa)"
    );
    let out = Command::new(EASYRSA)
        .args(args)
        .current_dir(dir)
        .env("EASYRSA_BATCH", "1")
        .env_remove("EASYRSA_PKI")
        .env_remove("EASYRSA")
        .output()
        .expect("run easyrsa");
    assert!(
        out.status.success(),
        "easyrsa {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `init-pki; build-ca nopass; build-server-full server nopass; build-client-full alice|bob
/// nopass; revoke bob; gen-crl`.
fn build_pki(dir: &Path) {
    easyrsa(dir, &["init-pki"]);
    easyrsa(dir, &["build-ca", "nopass"]);
    easyrsa(dir, &["build-server-full", "server", "nopass"]);
    easyrsa(dir, &["build-client-full", "alice", "nopass"]);
    easyrsa(dir, &["build-client-full", "bob", "nopass"]);
    easyrsa(dir, &["revoke", "bob"]);
    easyrsa(dir, &["gen-crl"]);
}

#[test]
fn imports_easyrsa_pki_with_revocations() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build_pki(tmp.path());

    // Both the parent directory and pki/ itself are accepted.
    let pki = import(tmp.path(), &ImportOptions::default()).expect("import");
    assert_eq!(pki.dir, tmp.path().join("pki"));
    assert!(pki.warnings.is_empty(), "{:?}", pki.warnings);
    assert_eq!(pki.ca.info().common_name, "Easy-RSA CA");
    assert_eq!(pki.ca.info().kind, CertKind::Ca);

    let names: Vec<(&str, CertKind)> = pki
        .certs
        .iter()
        .map(|c| (c.info.common_name.as_str(), c.info.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("alice", CertKind::Client),
            ("bob", CertKind::Client),
            ("server", CertKind::Server)
        ]
    );
    for c in &pki.certs {
        assert!(c.key_pem.is_some(), "key of {} found", c.info.common_name);
    }
    let alice = &pki.certs[0];
    let bob = &pki.certs[1];
    assert!(
        pki.revocation(&alice.info.serial).is_none(),
        "alice is valid"
    );
    let r = pki.revocation(&bob.info.serial).expect("bob is revoked");
    assert_eq!(r.common_name.as_deref(), Some("bob"));
    assert_eq!(pki.revoked.len(), 1);
    assert!(r.revoked.revoked_at <= SystemTime::now());

    // The imported CA keeps issuing.
    let mut rng = TestRng::seed(5);
    let carol = pki
        .ca
        .issue_client(
            "carol",
            &LeafOptions::default(),
            SystemTime::now(),
            &mut rng,
        )
        .expect("issue with the easy-rsa CA");
    fs::write(tmp.path().join("carol.crt"), &carol.cert_pem).expect("write");
    let out = Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            "pki/ca.crt",
            "-purpose",
            "sslclient",
            "carol.crt",
        ])
        .current_dir(tmp.path())
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // And its CRL lists bob.
    let crl = pki
        .ca
        .crl_pem(
            &pki.revoked
                .iter()
                .map(|r| r.revoked.clone())
                .collect::<Vec<_>>(),
            2,
            SystemTime::now(),
            30,
        )
        .expect("crl");
    pki.ca.verify_crl(&crl, "crl").expect("signature");

    let again = import(&tmp.path().join("pki"), &ImportOptions::default()).expect("import pki/");
    assert_eq!(again.certs.len(), 3);
}

#[test]
fn encrypted_ca_key_is_explained() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build_pki(tmp.path());
    let key = tmp.path().join("pki/private/ca.key");
    let plain = tmp.path().join("ca.plain.key");
    fs::copy(&key, &plain).expect("copy");
    let out = Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes256",
            "-passout",
            "pass:secret",
            "-in",
        ])
        .arg(&plain)
        .arg("-out")
        .arg(&key)
        .output()
        .expect("openssl");
    assert!(out.status.success());

    let e = import(tmp.path(), &ImportOptions::default()).expect_err("encrypted");
    match &e {
        ImportError::Ca {
            path,
            source: PkiError::EncryptedKey { .. },
        } => assert_eq!(path, &key),
        other => panic!("unexpected {other}"),
    }
    assert!(e.to_string().contains("openssl pkey"), "{e}");

    let ok = import(
        tmp.path(),
        &ImportOptions {
            ca_key: Some(plain),
        },
    )
    .expect("import with --ca-key");
    assert_eq!(ok.certs.len(), 3);

    fs::remove_file(&key).expect("rm");
    assert!(matches!(
        import(tmp.path(), &ImportOptions::default()),
        Err(ImportError::CaKeyMissing { .. })
    ));
    assert!(matches!(
        import(&tmp.path().join("nope"), &ImportOptions::default()),
        Err(ImportError::NotEasyRsa { .. })
    ));
}
