//! Real-world PEM files: a PKI made by the `openssl` command line with easy-rsa 3.1 extensions
//! (the same as `tools/openvpn-lab/gen-pki.sh` + `ext.cnf`) loads and handshakes, and the
//! legacy inputs rustls cannot use give their clear errors. Skipped when `openssl` is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use warren_openvpn::tls::{
    self, CertRole, ClientTlsOptions, PemFile, ServerTlsOptions, TlsSetupError, TlsVersion,
};

/// easy-rsa 3.1 style extensions (tools/openvpn-lab/ext.cnf).
const EXT_CNF: &str = "\
[v3ca]
basicConstraints = CA:TRUE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always,issuer:always
keyUsage = cRLSign, keyCertSign
[server]
basicConstraints = CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer:always
extendedKeyUsage = serverAuth
keyUsage = digitalSignature,keyEncipherment
subjectAltName = DNS:server
[client]
basicConstraints = CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer:always
extendedKeyUsage = clientAuth
keyUsage = digitalSignature
";

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("warren-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `openssl args...` in `dir`; `false` if it failed.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// gen-pki.sh: RSA-2048 CA, server and client, keys as unencrypted PKCS#8.
fn gen_pki(dir: &TempDir) {
    std::fs::write(dir.path("ext.cnf"), EXT_CNF).unwrap();
    std::fs::write(
        dir.path("req.cnf"),
        format!("[req]\ndistinguished_name=dn\n[dn]\n{EXT_CNF}"),
    )
    .unwrap();
    assert!(openssl(
        &dir.0,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            "/CN=Test CA",
            "-extensions",
            "v3ca",
            "-config",
            "req.cnf",
        ]
    ));
    for n in ["server", "client"] {
        let key = format!("{n}.key");
        let csr = format!("{n}.csr");
        let crt = format!("{n}.crt");
        let subj = format!("/CN={n}");
        assert!(openssl(
            &dir.0,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                &subj
            ]
        ));
        sign(dir, &csr, &crt, Some(n), "-sha256");
    }
}

/// `openssl x509 -req` with the CA, optionally with an extensions section from ext.cnf.
fn sign(dir: &TempDir, csr: &str, crt: &str, ext: Option<&str>, digest: &str) -> bool {
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        crt,
        "-days",
        "825",
        digest,
    ];
    if let Some(ext) = ext {
        args.extend(["-extfile", "ext.cnf", "-extensions", ext]);
    }
    openssl(&dir.0, &args)
}

/// A new key from `genargs` plus a cert for it with the given extension section.
fn key_and_cert(dir: &TempDir, name: &str, genargs: &[&str], ext: Option<&str>) -> bool {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    let mut args = genargs.to_vec();
    args.extend(["-out", &key]);
    openssl(&dir.0, &args)
        && openssl(
            &dir.0,
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        )
        && sign(dir, &csr, &crt, ext, "-sha256")
}

fn pump(
    from: &mut rustls::ConnectionCommon<impl rustls::SideData>,
    to: &mut rustls::ConnectionCommon<impl rustls::SideData>,
) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
    let mut c = ClientConnection::new(client, tls::no_sni_server_name()).unwrap();
    let mut s = ServerConnection::new(server).unwrap();
    for _ in 0..20 {
        pump(&mut c, &mut s)?;
        pump(&mut s, &mut c)?;
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            return Ok((c, s));
        }
    }
    panic!("handshake did not finish");
}

fn sopts() -> ServerTlsOptions {
    ServerTlsOptions {
        remote_cert_tls: Some(CertRole::Client),
        ..Default::default()
    }
}

fn copts() -> ClientTlsOptions {
    ClientTlsOptions {
        remote_cert_tls: Some(CertRole::Server),
        ..Default::default()
    }
}

#[test]
fn openssl_easy_rsa_pki_loads_and_handshakes() {
    if !have_openssl() {
        eprintln!("skipped: no `openssl` binary");
        return;
    }
    let dir = TempDir::new("easyrsa");
    gen_pki(&dir);
    let (ca, scrt, skey, ccrt, ckey) = (
        dir.read("ca.crt"),
        dir.read("server.crt"),
        dir.read("server.key"),
        dir.read("client.crt"),
        dir.read("client.key"),
    );
    assert!(skey.contains("-----BEGIN PRIVATE KEY-----"));

    for v in [TlsVersion::V1_2, TlsVersion::V1_3] {
        let s = ServerTlsOptions {
            min_version: Some(v),
            max_version: Some(v),
            ..sopts()
        };
        let scfg = tls::server_config(&ca, &scrt, &skey, &s).unwrap();
        let ccfg = tls::client_config(&ca, Some(&ccrt), Some(&ckey), &copts()).unwrap();
        let (c, s) = handshake(ccfg, scfg).unwrap();
        assert_eq!(
            tls::peer_common_name(s.peer_certificates().unwrap()).as_deref(),
            Some("client")
        );
        assert_eq!(
            tls::peer_subject(c.peer_certificates().unwrap()).as_deref(),
            Some("CN=server")
        );
        let (mut a, mut b) = ([0u8; 256], [0u8; 256]);
        tls::export_key_material(&c, &mut a).unwrap();
        tls::export_key_material(&s, &mut b).unwrap();
        assert_eq!(a, b);
    }

    // The same RSA key as PKCS#1 ("BEGIN RSA PRIVATE KEY").
    if openssl(
        &dir.0,
        &[
            "rsa",
            "-in",
            "client.key",
            "-traditional",
            "-out",
            "client.rsa.key",
        ],
    ) {
        let pkcs1 = dir.read("client.rsa.key");
        assert!(pkcs1.contains("-----BEGIN RSA PRIVATE KEY-----"));
        let ccfg = tls::client_config(&ca, Some(&ccrt), Some(&pkcs1), &copts()).unwrap();
        handshake(
            ccfg,
            tls::server_config(&ca, &scrt, &skey, &sopts()).unwrap(),
        )
        .unwrap();
    }

    // Passphrase-protected key.
    assert!(openssl(
        &dir.0,
        &[
            "pkey",
            "-in",
            "client.key",
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            "client.enc.key"
        ]
    ));
    let err = tls::client_config(
        &ca,
        Some(&ccrt),
        Some(&dir.read("client.enc.key")),
        &copts(),
    )
    .unwrap_err();
    assert!(matches!(err, TlsSetupError::EncryptedKey), "{err:?}");
}

#[test]
fn openssl_other_key_types() {
    if !have_openssl() {
        eprintln!("skipped: no `openssl` binary");
        return;
    }
    let dir = TempDir::new("keytypes");
    gen_pki(&dir);
    let ca = dir.read("ca.crt");
    let scfg = tls::server_config(
        &ca,
        &dir.read("server.crt"),
        &dir.read("server.key"),
        &sopts(),
    )
    .unwrap();

    let kinds: [(&str, &[&str], &str); 3] = [
        // SEC1 "BEGIN EC PRIVATE KEY".
        (
            "p256",
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
            "-----BEGIN EC PRIVATE KEY-----",
        ),
        (
            "p384",
            &["ecparam", "-name", "secp384r1", "-genkey", "-noout"],
            "-----BEGIN EC PRIVATE KEY-----",
        ),
        (
            "ed25519",
            &["genpkey", "-algorithm", "ed25519"],
            "-----BEGIN PRIVATE KEY-----",
        ),
    ];
    for (name, genargs, marker) in kinds {
        assert!(key_and_cert(&dir, name, genargs, Some("client")), "{name}");
        let key = dir.read(&format!("{name}.key"));
        assert!(key.contains(marker), "{name}: {key}");
        let ccfg = tls::client_config(
            &ca,
            Some(&dir.read(&format!("{name}.crt"))),
            Some(&key),
            &copts(),
        )
        .unwrap();
        let (_, s) = handshake(ccfg, scfg.clone()).unwrap();
        assert_eq!(
            tls::peer_common_name(s.peer_certificates().unwrap()).as_deref(),
            Some(name)
        );
    }
}

#[test]
fn openssl_legacy_inputs_give_clear_errors() {
    if !have_openssl() {
        eprintln!("skipped: no `openssl` binary");
        return;
    }
    let dir = TempDir::new("legacy");
    gen_pki(&dir);
    let ca = dir.read("ca.crt");

    // RSA-1024.
    assert!(key_and_cert(
        &dir,
        "small",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024"
        ],
        Some("client")
    ));
    let err = tls::client_config(
        &ca,
        Some(&dir.read("small.crt")),
        Some(&dir.read("small.key")),
        &copts(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TlsSetupError::RsaKeyTooSmall {
                file: PemFile::Cert,
                bits: 1024,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("RSA keys shorter than 2048 bits are not supported by rustls"),
        "{err}"
    );

    // `openssl x509 -req` without -extfile: v1 with OpenSSL 1.x, v3 without extensions with 3.x.
    assert!(key_and_cert(
        &dir,
        "plain",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256"
        ],
        None
    ));
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "plain.crt"])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let result = tls::client_config(
        &ca,
        Some(&dir.read("plain.crt")),
        Some(&dir.read("plain.key")),
        &copts(),
    );
    if text.contains("Version: 1 (0x0)") {
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                TlsSetupError::CertificateV1 {
                    file: PemFile::Cert,
                    index: 1
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("X.509 v1"));
    } else {
        // Loads; but without KU/EKU the server's remote-cert-tls client refuses it.
        let scfg = tls::server_config(
            &ca,
            &dir.read("server.crt"),
            &dir.read("server.key"),
            &sopts(),
        )
        .unwrap();
        let err = handshake(result.unwrap(), scfg).map(|_| ()).unwrap_err();
        assert!(
            tls::describe_tls_error(&err).contains("certificate"),
            "{err}"
        );
    }

    // SHA-1 signed client certificate: rustls refuses it at the handshake.
    if sign(&dir, "client.csr", "sha1.crt", Some("client"), "-sha1") {
        let scfg = tls::server_config(
            &ca,
            &dir.read("server.crt"),
            &dir.read("server.key"),
            &sopts(),
        )
        .unwrap();
        let ccfg = tls::client_config(
            &ca,
            Some(&dir.read("sha1.crt")),
            Some(&dir.read("client.key")),
            &copts(),
        )
        .unwrap();
        let err = handshake(ccfg, scfg).map(|_| ()).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnsupportedSignatureAlgorithmContext { .. }
                ) | rustls::Error::AlertReceived(_)
            ),
            "{err:?}"
        );
    }
}
