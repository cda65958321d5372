//! Issue 13, drop-in configs: the `server.conf` and client `.ovpn` that popular install
//! scripts generate (see `tests/corpus/README.md`), run as they are in both roles:
//!
//! * `<generator>_warren_server`: `warren server --config their-server.conf`, the stock
//!   `openvpn` client with their client profile;
//! * `<generator>_warren_client`: the stock `openvpn` server with their server.conf,
//!   `warren client their-client.ovpn`.
//!
//! Each case brings the tunnel up and pings both ways. The PKI is made the way the scripts
//! make it, with Debian's easy-rsa, in the test directory; only paths (status, management
//! socket) and addresses are rewritten, and for the warren server the directives it still
//! refuses (if any) are first asserted to be refused at their line, then commented out.
//! `crl-verify crl.pem` is run as generated (with easy-rsa's `gen-crl` CRL).
//!
//! `corpus_files_lower` needs no root: it lowers the stored files with warren-config.
//! The others need root: network namespaces (see `common`).
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::lab::{
    CONNECT_TIMEOUT, Client, Lab, SERVER_PORT, SERVER_TUN_ADDR, ServerKind, WARREN_BIN,
};
use common::netns::ping_ok;
use common::pki::easyrsa;
use common::pki::{KeyFormat, KeyType};
use common::process::run_bounded;

/// One generator of the corpus.
struct Generator {
    /// Directory under `tests/corpus/`.
    dir: &'static str,
    /// The server certificate's name (easy-rsa file name base and CN).
    server_name: &'static str,
    /// easy-rsa `EASYRSA_ALGO ec` with `EASYRSA_CURVE prime256v1`, else RSA 2048.
    ec: bool,
    /// The tls-crypt key file the server.conf names.
    tls_key: &'static str,
    /// `tls_key` is a tls-crypt-v2 server key (`openvpn --genkey tls-crypt-v2-server`), and
    /// the profile holds a client key made from it (`@tls-crypt-v2-client.key@`).
    tls_crypt_v2: bool,
    /// Easy-RSA 3.2 wrote the tls-crypt key (`gen-tls-crypt-key`), with its label line.
    easyrsa_tls_key: bool,
    /// The profile is `grep -v '^#'` of what was pasted together (Nyr).
    strip_comments: bool,
    /// Directives warren refuses in their server.conf, in file order (the first is the one
    /// reported); empty when warren runs it unmodified. Their `crl-verify crl.pem` (the
    /// easy-rsa `gen-crl` CRL) is honoured and stays in.
    refused: &'static [&'static str],
    /// What the stock OpenVPN logs about the peer's certificate.
    peer_cert: &'static str,
    /// The data cipher their files negotiate.
    data_cipher: &'static str,
    /// The OpenSSL name of the TLS 1.2 suite their `tls-cipher` leaves, if they set one.
    tls12_suite: Option<&'static str>,
    /// What `warren server` must log about their server.conf.
    server_warnings: &'static [&'static str],
}

const ANGRISTAN: Generator = Generator {
    dir: "angristan",
    server_name: "server_Ab3dE5gH7jK9mN1p",
    ec: true,
    tls_key: "tls-crypt.key",
    tls_crypt_v2: false,
    easyrsa_tls_key: false,
    strip_comments: false,
    refused: &[],
    peer_cert: "peer certificate: 256 bits ECprime256v1",
    data_cipher: "AES-128-GCM",
    tls12_suite: Some("ECDHE-ECDSA-AES128-GCM-SHA256"),
    server_warnings: &["secp521r1", "ifconfig-pool-persist"],
};

/// angristan's default, `--tls-sig crypt-v2`: the same files but for the control-channel
/// key (a tls-crypt-v2 server key, and a client key per profile).
const ANGRISTAN_CRYPT_V2: Generator = Generator {
    dir: "angristan-crypt-v2",
    tls_key: "tls-crypt-v2.key",
    tls_crypt_v2: true,
    server_warnings: &[
        "secp521r1",
        "ifconfig-pool-persist",
        "tls-crypt-v2 (clients without it are refused)",
    ],
    ..ANGRISTAN
};

/// The client key file of a tls-crypt-v2 generator's profile.
const TLS_CRYPT_V2_CLIENT_KEY: &str = "tls-crypt-v2-client.key";

const NYR: Generator = Generator {
    dir: "nyr",
    server_name: "server",
    ec: false,
    tls_key: "tc.key",
    tls_crypt_v2: false,
    easyrsa_tls_key: true,
    strip_comments: true,
    refused: &[],
    peer_cert: "peer certificate: 2048 bits RSA",
    data_cipher: "AES-256-GCM",
    tls12_suite: None,
    server_warnings: &["DH parameters are not used", "ifconfig-pool-persist"],
};

fn corpus(g: &Generator, file: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(g.dir)
        .join(file);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The generator's PKI in `<dir>/easy-rsa/pki`, and the server's files copied into `dir`
/// the way the script copies them into /etc/openvpn/server.
fn make_pki(g: &Generator, dir: &Path) -> PathBuf {
    let er = dir.join("easy-rsa");
    fs::create_dir_all(&er).expect("mkdir easy-rsa");
    easyrsa(&er, &["init-pki"], &[]);
    if g.ec {
        // angristan writes `set_var EASYRSA_ALGO ec` / `set_var EASYRSA_CURVE prime256v1`
        // to `vars`; easy-rsa 3.1 wants it in the PKI directory.
        fs::write(
            er.join("pki/vars"),
            "set_var EASYRSA_ALGO ec\nset_var EASYRSA_CURVE prime256v1\n",
        )
        .expect("vars");
    }
    easyrsa(&er, &["build-ca", "nopass"], &[]);
    easyrsa(&er, &["build-server-full", g.server_name, "nopass"], &[]);
    easyrsa(&er, &["build-client-full", "client", "nopass"], &[]);
    easyrsa(&er, &["gen-crl"], &[]);
    let pki = er.join("pki");
    if g.tls_crypt_v2 {
        // openvpn-install.sh: the server key at install time, a client key per profile.
        let server = dir.join(g.tls_key);
        let client = dir.join(TLS_CRYPT_V2_CLIENT_KEY);
        let server_s = server.to_str().expect("utf8");
        for argv in [
            vec!["--genkey", "tls-crypt-v2-server", server_s],
            vec![
                "--tls-crypt-v2",
                server_s,
                "--genkey",
                "tls-crypt-v2-client",
                client.to_str().expect("utf8"),
            ],
        ] {
            let out = run_bounded(Command::new("openvpn").args(&argv), Duration::from_secs(20));
            assert!(out.success(), "openvpn {argv:?}: {}", out.stderr);
        }
    }
    let tls = pki.join("private/easyrsa-tls.key");
    let raw = dir.join("genkey.tmp");
    let out = run_bounded(
        Command::new("openvpn").args(["--genkey", "secret", raw.to_str().expect("utf8")]),
        Duration::from_secs(20),
    );
    assert!(out.success(), "openvpn --genkey: {}", out.stderr);
    let key = fs::read_to_string(&raw).expect("genkey");
    // Easy-RSA 3.2 tls_key_gen: a label line, then the key.
    let label = if g.easyrsa_tls_key {
        "# Easy-RSA TLS-CRYPT Key\n"
    } else {
        ""
    };
    fs::write(&tls, format!("{label}{key}")).expect("tls key");
    let copy = |from: PathBuf, to: &str| {
        fs::copy(&from, dir.join(to)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    };
    copy(pki.join("ca.crt"), "ca.crt");
    copy(
        pki.join(format!("issued/{}.crt", g.server_name)),
        &format!("{}.crt", g.server_name),
    );
    copy(
        pki.join(format!("private/{}.key", g.server_name)),
        &format!("{}.key", g.server_name),
    );
    copy(pki.join("crl.pem"), "crl.pem");
    if !g.tls_crypt_v2 {
        copy(tls, g.tls_key);
    }
    pki
}

/// The PEM block of a certificate file (easy-rsa 3.1 writes a text dump before it; the
/// scripts cut it with `awk '/BEGIN/,/END CERTIFICATE/'`).
fn pem_part(text: &str) -> &str {
    let start = text.find("-----BEGIN").expect("PEM block");
    text[start..].trim_end()
}

/// The client profile: their file with each `@path@` line replaced by that PKI file.
fn client_profile(g: &Generator, pki: &Path, dir: &Path, server_addr: &str) -> String {
    let mut out = String::new();
    for line in corpus(g, "client.ovpn").lines() {
        if let Some(rel) = line.strip_prefix('@').and_then(|l| l.strip_suffix('@')) {
            let path = if rel == g.tls_key || rel == TLS_CRYPT_V2_CLIENT_KEY {
                dir.join(rel)
            } else {
                pki.join(rel)
            };
            let text =
                fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if rel.starts_with("issued/") {
                out.push_str(pem_part(&text));
            } else {
                out.push_str(text.trim_end());
            }
        } else if let Some(rest) = line.strip_prefix("remote ") {
            // Only the address changes.
            let port = rest.split_whitespace().nth(1).unwrap_or("1194");
            out.push_str(&format!("remote {server_addr} {port}"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if g.strip_comments {
        out = out
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
    }
    out
}

/// Their server.conf with the absolute paths moved into `dir`, `local` set to the server's
/// test address, and the directives in `comment_out` commented out.
fn server_conf(g: &Generator, dir: &Path, local: &str, comment_out: &[&str]) -> String {
    let d = dir.display();
    let mut out = String::new();
    for line in corpus(g, "server.conf").lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let line = match name {
            _ if comment_out.contains(&name) => format!("# refused by warren: {line}"),
            "local" => format!("local {local}"),
            "status" => format!("status {d}/status.log"),
            "management" => format!("management {d}/management.sock unix"),
            _ => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The PKI, and the extra files their server expects in its directory.
fn setup(g: &Generator, lab: &Lab) -> PathBuf {
    let dir = lab.dir();
    let pki = make_pki(g, dir);
    fs::create_dir_all(dir.join("ccd")).expect("ccd");
    if g.dir == "nyr" {
        fs::write(dir.join("dh.pem"), corpus(g, "dh.pem")).expect("dh.pem");
    }
    pki
}

/// `warren server` stopped at `first`, naming its line in their server.conf.
fn assert_refused(out: common::process::CmdOutput, g: &Generator, first: &str, conf: &Path) {
    assert!(
        !out.success(),
        "warren accepted {}:\n{}",
        conf.display(),
        out.stderr
    );
    let line = corpus(g, "server.conf")
        .lines()
        .position(|l| l.starts_with(&format!("{first} ")))
        .expect("refused directive in the corpus file")
        + 1;
    let want = format!("server.conf:{line}: ");
    assert!(
        out.stderr.contains(&want) && out.stderr.contains(first),
        "expected the refusal of `{first}` at {want}:\n{}",
        out.stderr
    );
}

fn warren_server(g: &Generator) {
    let mut lab = Lab::with_pki(
        &format!("corpus-{}", g.dir),
        ServerKind::Warren,
        KeyType::P256,
        KeyFormat::Pkcs8,
    );
    let pki = setup(g, &lab);
    let (ns, srv, cli) = lab.new_peer_ns();
    let dir = lab.dir().to_path_buf();

    // As generated: refused at the first directive warren cannot honour, with its line.
    let conf = dir.join("server.conf");
    fs::write(&conf, server_conf(g, &dir, &srv, &[])).expect("write server.conf");
    if let Some(first) = g.refused.first() {
        assert_refused(
            lab.server_ns.exec(
                &[
                    WARREN_BIN,
                    "server",
                    "--config",
                    conf.to_str().expect("utf8"),
                ],
                Duration::from_secs(20),
            ),
            g,
            first,
            &conf,
        );
    }
    assert!(
        corpus(g, "server.conf").contains("\ncrl-verify crl.pem\n"),
        "their server.conf has crl-verify"
    );

    // Without the refused directives it runs, with the stock client on their profile.
    fs::write(&conf, server_conf(g, &dir, &srv, g.refused)).expect("write server.conf");
    lab.start_server_file(&conf, SERVER_PORT);
    let profile = dir.join("client.ovpn");
    fs::write(&profile, client_profile(g, &pki, &dir, &srv)).expect("write profile");
    let log = dir.join("client.log");
    let proc = ns.spawn_env(
        "client",
        &["openvpn", "--config", profile.to_str().expect("utf8")],
        &[],
        &dir,
        &log,
    );
    let mut client = Client {
        proc,
        ns,
        name: "client".into(),
        // `dev tun`: the first free tunN of the client's own namespace.
        dev: "tun0".into(),
        server_underlay: srv,
        client_underlay: cli,
        tun_addr: None,
    };
    if let Err(e) = client.wait_connected(CONNECT_TIMEOUT) {
        panic!(
            "stock client did not connect to warren with {}'s files: {e}\nserver log:\n{}",
            g.dir,
            common::process::tail(&lab.server_log(), 40)
        );
    }
    lab.check_tunnel(&client.ns, client.addr(), 0, 0);
    lab.assert_server_running();
    // The stock client saw the generator's key type, and warren said what it skipped.
    let clog = client.log();
    assert!(
        clog.contains(g.peer_cert),
        "client log lacks {:?}:\n{clog}",
        g.peer_cert
    );
    let want = format!("Data Channel: cipher '{}'", g.data_cipher);
    assert!(clog.contains(&want), "client log lacks {want:?}:\n{clog}");
    let slog = lab.server_log();
    assert!(
        slog.contains("0 revoked certificate(s); client certificates are checked against it"),
        "warren did not load their crl.pem:\n{slog}"
    );
    for w in g.server_warnings {
        assert!(slog.contains(w), "warren server log lacks {w:?}:\n{slog}");
    }

    // Their TLS 1.2 suite list, negotiated when the stock client is held to TLS 1.2 (a
    // command-line option; their profile stays as it is).
    if let Some(suite) = g.tls12_suite {
        client.proc.terminate(Duration::from_secs(5));
        let (ns, srv, cli) = lab.new_peer_ns();
        let profile = dir.join("client12.ovpn");
        fs::write(&profile, client_profile(g, &pki, &dir, &srv)).expect("write profile");
        let log = dir.join("client12.log");
        let argv = [
            "openvpn",
            "--config",
            profile.to_str().expect("utf8"),
            "--tls-version-max",
            "1.2",
        ];
        let proc = ns.spawn_env("client12", &argv, &[], &dir, &log);
        let mut client = Client {
            proc,
            ns,
            name: "client12".into(),
            dev: "tun0".into(),
            server_underlay: srv,
            client_underlay: cli,
            tun_addr: None,
        };
        if let Err(e) = client.wait_connected(CONNECT_TIMEOUT) {
            panic!(
                "TLS 1.2 client did not connect: {e}\nserver log:\n{}",
                common::process::tail(&lab.server_log(), 40)
            );
        }
        let want = format!("Control Channel: TLSv1.2, cipher TLSv1.2 {suite}");
        let clog = client.log();
        assert!(clog.contains(&want), "client log lacks {want:?}:\n{clog}");
        ping_ok(&client.ns, SERVER_TUN_ADDR, "TLS 1.2 client -> server");
    }
}

fn warren_client(g: &Generator) {
    let mut lab = Lab::with_pki(
        &format!("corpus-{}", g.dir),
        ServerKind::Openvpn,
        KeyType::P256,
        KeyFormat::Pkcs8,
    );
    let pki = setup(g, &lab);
    let (ns, srv, cli) = lab.new_peer_ns();
    let dir = lab.dir().to_path_buf();
    let conf = dir.join("server.conf");
    fs::write(&conf, server_conf(g, &dir, &srv, &[])).expect("write server.conf");
    lab.start_server_file(&conf, SERVER_PORT);

    let etc = client_common::NsEtc::new(&ns);
    let profile = dir.join("client.ovpn");
    fs::write(&profile, client_profile(g, &pki, &dir, &srv)).expect("write profile");
    let proc = client_common::spawn_profile(&lab, &ns, "client", &profile, &[]);
    let mut client = client_common::WarrenClient {
        proc,
        ns,
        etc,
        name: "client".into(),
        dev: "tun0".into(),
        profile,
        server_underlay: srv,
        client_underlay: cli,
        tun_addr: None,
    };
    let up = client.wait_up(client_common::UP_TIMEOUT);
    if let Err(e) = &up {
        panic!(
            "warren client did not come up with {}'s profile: {e}\nserver log:\n{}",
            g.dir,
            common::process::tail(&lab.server_log(), 40)
        );
    }
    lab.check_tunnel(&client.ns, client.addr(), 0, 0);
    lab.assert_server_running();
    let up = up.unwrap_or_default();
    assert!(up.contains(&format!("cipher {}", g.data_cipher)), "{up}");
    // The stock server saw the generator's key type from warren's client certificate.
    let slog = lab.server_log();
    assert!(
        slog.contains(g.peer_cert),
        "server log lacks {:?}:\n{slog}",
        g.peer_cert
    );
    assert!(
        client.stop(Duration::from_secs(10)),
        "warren client did not exit cleanly"
    );
}

#[test]
fn angristan_warren_server() {
    warren_server(&ANGRISTAN);
}

#[test]
fn angristan_warren_client() {
    warren_client(&ANGRISTAN);
}

#[test]
fn angristan_crypt_v2_warren_server() {
    warren_server(&ANGRISTAN_CRYPT_V2);
}

#[test]
fn angristan_crypt_v2_warren_client() {
    warren_client(&ANGRISTAN_CRYPT_V2);
}

#[test]
fn nyr_warren_server() {
    warren_server(&NYR);
}

#[test]
fn nyr_warren_client() {
    warren_client(&NYR);
}

/// The stored files lower (without root and without a PKI): the clients as they are, the
/// servers up to the listed refusals, with the TLS settings they ask for.
#[test]
fn corpus_files_lower() {
    use warren_config::{TlsCipherSuite as S, TlsGroup};
    let base = Path::new("/nonexistent");
    for g in [&ANGRISTAN, &ANGRISTAN_CRYPT_V2, &NYR] {
        let text = corpus(g, "server.conf");
        let lowered = warren_config::server_config_from_str(&text, "server.conf", base);
        match g.refused.first() {
            Some(first) => {
                let msg = lowered.expect_err("refused as generated").to_string();
                assert!(msg.contains(first), "{}: {msg}", g.dir);
            }
            None => {
                lowered.unwrap_or_else(|e| panic!("{}: {e}", g.dir));
            }
        }
        let kept: String = text
            .lines()
            .filter(|l| !g.refused.iter().any(|r| l.starts_with(&format!("{r} "))))
            .map(|l| format!("{l}\n"))
            .collect();
        let (s, _) = warren_config::server_config_from_str(&kept, "server.conf", base)
            .unwrap_or_else(|e| panic!("{}: {e}", g.dir));
        // Their `crl-verify crl.pem` is taken as it is.
        assert!(
            matches!(&s.crl_verify, Some((warren_config::Material::File(p), _)) if p.ends_with("crl.pem")),
            "{}: {:?}",
            g.dir,
            s.crl_verify
        );
        let (c, _) =
            warren_config::client_config_from_str(&corpus(g, "client.ovpn"), "client.ovpn", base)
                .unwrap_or_else(|e| panic!("{}: {e}", g.dir));
        assert_eq!(s.tls_crypt_v2.is_some(), g.tls_crypt_v2, "{}", g.dir);
        assert_eq!(c.tls_crypt_v2.is_some(), g.tls_crypt_v2, "{}", g.dir);
        assert_eq!(s.tls_crypt.is_some(), !g.tls_crypt_v2, "{}", g.dir);
        if g.dir.starts_with("angristan") {
            let groups = Some(vec![TlsGroup::X25519, TlsGroup::P256, TlsGroup::P384]);
            assert_eq!(s.tls_groups, groups);
            assert_eq!(s.tls_cipher, Some(vec![S::EcdheEcdsaAes128GcmSha256]));
            assert_eq!(c.tls_cipher, s.tls_cipher);
            assert_eq!(c.tls_ciphersuites.as_ref().map(Vec::len), Some(3));
            assert_eq!(s.data_ciphers, ["AES-128-GCM"]);
            assert_eq!(s.user.as_deref(), Some("nobody"));
        } else {
            assert!(s.dh.is_some());
            assert_eq!(c.auth.as_deref(), Some("SHA512"));
        }
    }
}
