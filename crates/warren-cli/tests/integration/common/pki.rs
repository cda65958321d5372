//! A throwaway test PKI made with the `openssl` CLI, with the certificate extensions of
//! easy-rsa 3.1's `x509-types` (ca, server, client), plus a tls-crypt/tls-auth key from
//! `openvpn --genkey secret`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{run_bounded, run_ok};

/// Debian's easy-rsa 3 script.
pub const EASYRSA: &str = "/usr/share/easy-rsa/easyrsa";

/// `easyrsa ARGS` in `dir`, in batch mode with the extra environment `env` (at most
/// 120 s); panics with its output when it fails.
pub fn easyrsa(dir: &Path, args: &[&str], env: &[(&str, &str)]) {
    assert!(
        Path::new(EASYRSA).exists(),
        "{EASYRSA} is missing: install Debian's easy-rsa package (apt-get install easy-rsa)"
    );
    let mut cmd = Command::new(EASYRSA);
    cmd.args(args)
        .current_dir(dir)
        .env("EASYRSA_BATCH", "1")
        .envs(env.iter().copied())
        .env_remove("EASYRSA_PKI");
    let out = run_bounded(&mut cmd, Duration::from_secs(120));
    assert!(
        out.success(),
        "easyrsa {args:?}:\n{}{}",
        out.stdout,
        out.stderr
    );
}

/// An easy-rsa PKI made in the new directory `er` (with the extra environment `env`): a
/// CA, `server`, the clients `alice` and `bob`, `bob` revoked, and a CRL.
pub fn easyrsa_pki(er: &Path, env: &[(&str, &str)]) {
    fs::create_dir(er).expect("mkdir");
    easyrsa(er, &["init-pki"], env);
    easyrsa(er, &["build-ca", "nopass"], env);
    easyrsa(er, &["build-server-full", "server", "nopass"], env);
    easyrsa(er, &["build-client-full", "alice", "nopass"], env);
    easyrsa(er, &["build-client-full", "bob", "nopass"], env);
    easyrsa(er, &["revoke", "bob"], env);
    easyrsa(er, &["gen-crl"], env);
}

/// Key algorithm of every key in a [`Pki`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Rsa2048,
    P256,
    Ed25519,
}

/// PEM encoding of the private keys of the server and the clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// `BEGIN PRIVATE KEY` (what easy-rsa 3 and `openssl genpkey` write).
    Pkcs8,
    /// `BEGIN RSA PRIVATE KEY` / `BEGIN EC PRIVATE KEY` (older easy-rsa, `openssl genrsa`
    /// of OpenSSL 1.x). Ed25519 has no such form and stays PKCS#8.
    Traditional,
}

/// A certificate and its key.
#[derive(Clone, Debug)]
pub struct CertKey {
    pub crt: PathBuf,
    pub key: PathBuf,
}

/// The files of a test PKI. All paths are absolute.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    /// EKU serverAuth, KU digitalSignature+keyEncipherment, SAN DNS:server.
    pub server: CertKey,
    /// EKU clientAuth, CN `client1`, `client2`, ...
    pub clients: Vec<CertKey>,
    /// A second, unrelated CA.
    pub other_ca: PathBuf,
    /// A client certificate (EKU clientAuth) issued by `other_ca`.
    pub other_client: CertKey,
    /// A server certificate issued by `ca` whose EKU lacks serverAuth (clientAuth only).
    pub server_no_server_auth: CertKey,
    /// `openvpn --genkey secret` (2048-bit static key), for tls-crypt and tls-auth.
    pub ta_key: PathBuf,
}

/// easy-rsa 3.1 `x509-types/{ca,server,client}` as OpenSSL extension sections.
const EXTENSIONS: &str = "\
[req]
distinguished_name = dn
[dn]
[v3ca]
basicConstraints = critical,CA:TRUE
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
[server_no_server_auth]
basicConstraints = CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer:always
extendedKeyUsage = clientAuth
keyUsage = digitalSignature,keyEncipherment
";

impl KeyType {
    fn newkey_args(self) -> &'static [&'static str] {
        match self {
            KeyType::Rsa2048 => &["-newkey", "rsa:2048"],
            KeyType::P256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::Ed25519 => &["-newkey", "ed25519"],
        }
    }

    /// The `openssl` subcommand that rewrites a PKCS#8 key in the traditional format.
    fn traditional_cmd(self) -> Option<&'static [&'static str]> {
        match self {
            KeyType::Rsa2048 => Some(&["rsa", "-traditional"]),
            KeyType::P256 => Some(&["ec"]),
            KeyType::Ed25519 => None,
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

struct Gen<'a> {
    dir: &'a Path,
    ext: PathBuf,
    key_type: KeyType,
    serial: u32,
}

impl Gen<'_> {
    fn ca(&mut self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        let crt = self.dir.join(format!("{name}.crt"));
        let key = self.dir.join(format!("{name}.key"));
        let mut argv = vec!["openssl", "req", "-x509"];
        argv.extend_from_slice(self.key_type.newkey_args());
        let subj = format!("/CN={cn}");
        argv.extend_from_slice(&[
            "-nodes",
            "-keyout",
            s(&key),
            "-out",
            s(&crt),
            "-days",
            "3650",
            "-subj",
            &subj,
            "-config",
            s(&self.ext),
            "-extensions",
            "v3ca",
        ]);
        run_ok(&argv);
        (crt, key)
    }

    fn leaf(
        &mut self,
        name: &str,
        cn: &str,
        section: &str,
        ca: &(PathBuf, PathBuf),
        format: KeyFormat,
    ) -> CertKey {
        let crt = self.dir.join(format!("{name}.crt"));
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let subj = format!("/CN={cn}");
        let mut argv = vec!["openssl", "req", "-new"];
        argv.extend_from_slice(self.key_type.newkey_args());
        argv.extend_from_slice(&[
            "-nodes",
            "-keyout",
            s(&key),
            "-out",
            s(&csr),
            "-subj",
            &subj,
            "-config",
            s(&self.ext),
        ]);
        run_ok(&argv);
        self.serial += 1;
        let serial = format!("{}", 0x1000 + self.serial);
        // No explicit digest: OpenSSL 3 picks SHA-256 for RSA/ECDSA and none for Ed25519.
        run_ok(&[
            "openssl",
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&ca.0),
            "-CAkey",
            s(&ca.1),
            "-set_serial",
            &serial,
            "-out",
            s(&crt),
            "-days",
            "825",
            "-extfile",
            s(&self.ext),
            "-extensions",
            section,
        ]);
        let _ = fs::remove_file(&csr);
        if format == KeyFormat::Traditional
            && let Some(sub) = self.key_type.traditional_cmd()
        {
            let tmp = self.dir.join(format!("{name}.key.trad"));
            let mut argv = vec!["openssl"];
            argv.extend_from_slice(sub);
            argv.extend_from_slice(&["-in", s(&key), "-out", s(&tmp)]);
            run_ok(&argv);
            fs::rename(&tmp, &key).expect("rename key");
        }
        CertKey { crt, key }
    }
}

impl Pki {
    /// Makes a PKI in `dir` (created if missing).
    pub fn generate_with(
        dir: &Path,
        key_type: KeyType,
        format: KeyFormat,
        n_clients: usize,
    ) -> Pki {
        fs::create_dir_all(dir).expect("create pki dir");
        let dir = fs::canonicalize(dir).expect("canonical pki dir");
        let ext = dir.join("ext.cnf");
        fs::write(&ext, EXTENSIONS).expect("write ext.cnf");
        let mut g = Gen {
            dir: &dir,
            ext,
            key_type,
            serial: 0,
        };
        let ca = g.ca("ca", "warren test CA");
        let server = g.leaf("server", "server", "server", &ca, format);
        let clients = (1..=n_clients)
            .map(|i| {
                let name = format!("client{i}");
                g.leaf(&name, &name, "client", &ca, format)
            })
            .collect();
        let server_no_server_auth = g.leaf(
            "server-no-server-auth",
            "server",
            "server_no_server_auth",
            &ca,
            format,
        );
        let other = g.ca("other-ca", "other test CA");
        let other_client = g.leaf("other-client", "client-other", "client", &other, format);
        let ta_key = dir.join("ta.key");
        run_ok(&["openvpn", "--genkey", "secret", s(&ta_key)]);
        Pki {
            ca: ca.0,
            server,
            clients,
            other_ca: other.0,
            other_client,
            server_no_server_auth,
            ta_key,
            dir,
        }
    }
}
