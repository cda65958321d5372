//! Server config lowering: every directive's happy path and errors, with the
//! exact line numbers the admin will see.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use warren_config::{
    CertRole, ConfigError, DevType, KeyDerivationPolicy, Material, Proto, ServerConfig, StateDir,
    TlsVersion, Topology, UserAuth, VerifyClientCert, Warning, load_server_config,
    server_config_from_str,
};

const BASE: &str =
    "ca ca.crt\ncert server.crt\nkey server.key\nserver 10.8.0.0 255.255.255.0\ntopology subnet\n";
/// Line number of the first line appended after BASE.
const NEXT: u32 = 6;

fn base_dir() -> &'static Path {
    Path::new("/nonexistent-warren-config-dir")
}

fn lower(text: &str) -> Result<(ServerConfig, Vec<Warning>), ConfigError> {
    server_config_from_str(text, "s.conf", base_dir())
}

fn ok(extra: &str) -> (ServerConfig, Vec<Warning>) {
    let text = format!("{BASE}{extra}\n");
    match lower(&text) {
        Ok(r) => r,
        Err(e) => panic!("`{extra}` should be accepted: {e}"),
    }
}

fn cfg(extra: &str) -> ServerConfig {
    ok(extra).0
}

/// Lowers BASE + `extra` and expects an error on line NEXT whose message
/// contains `needle`.
fn err(extra: &str, needle: &str) -> ConfigError {
    err_line(extra, NEXT, needle)
}

fn err_line(extra: &str, line: u32, needle: &str) -> ConfigError {
    let text = format!("{BASE}{extra}\n");
    let e = match lower(&text) {
        Ok(_) => panic!("`{extra}` should be refused"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert_eq!(
        e.location().and_then(|l| l.line),
        Some(line),
        "wrong line for `{extra}`: {msg}"
    );
    assert!(msg.starts_with(&format!("s.conf:{line}: ")), "{msg}");
    assert!(
        msg.contains(needle),
        "`{extra}`: expected {needle:?} in: {msg}"
    );
    e
}

fn warned(ws: &[Warning], directive: &str) -> bool {
    ws.iter().any(|w| w.directive == directive)
}

#[test]
fn defaults() {
    let (c, w) = lower(BASE).expect("base config");
    assert_eq!(c.port, 1194);
    assert_eq!(c.proto, Proto::Udp);
    assert_eq!(c.local, None);
    assert_eq!(c.dev, "tun");
    assert_eq!(c.dev_type, DevType::Tun);
    assert_eq!(c.ca, Material::File(PathBuf::from("ca.crt")));
    assert_eq!(c.cert, Material::File(PathBuf::from("server.crt")));
    assert_eq!(c.key, Material::File(PathBuf::from("server.key")));
    assert_eq!(c.dh, None);
    assert_eq!(c.tls_crypt, None);
    assert_eq!(c.tls_auth, None);
    assert_eq!(
        c.server,
        (Ipv4Addr::new(10, 8, 0, 0), Ipv4Addr::new(255, 255, 255, 0))
    );
    assert_eq!(c.topology, Topology::Subnet);
    assert_eq!(
        c.data_ciphers,
        ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]
    );
    assert_eq!(c.verify_client_cert, VerifyClientCert::Require);
    assert_eq!(c.verb, 1);
    assert_eq!(c.status_version, 1);
    assert_eq!(c.key_derivation, KeyDerivationPolicy::Auto);
    assert_eq!(c.source, PathBuf::from("s.conf"));
    assert!(!c.client_to_client && !c.duplicate_cn && !c.persist_key && !c.persist_tun);
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn required_directives() {
    for (drop, directive) in [(0, "ca"), (1, "cert"), (2, "key"), (3, "server")] {
        let text: String = BASE
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != drop)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let e = lower(&text).expect_err("missing directive");
        match &e {
            ConfigError::Missing { directive: d, .. } => assert_eq!(*d, directive),
            other => panic!("{other}"),
        }
        assert!(
            e.to_string()
                .starts_with(&format!("s.conf: missing `{directive}`")),
            "{e}"
        );
    }
}

#[test]
fn topology() {
    // No `topology` line: OpenVPN 2.6's net30, without a warning.
    let text = BASE.replace("topology subnet\n", "");
    let (c, w) = lower(&text).expect("no topology");
    assert_eq!(c.topology, Topology::Net30);
    assert!(!w.iter().any(|w| w.directive == "topology"), "{w:?}");
    for (line, t) in [("net30", Topology::Net30), ("p2p", Topology::P2p)] {
        let (c, _) =
            lower(&BASE.replace("topology subnet", &format!("topology {line}"))).expect(line);
        assert_eq!(c.topology, t);
    }
    err("topology star", "expected subnet, net30 or p2p");
    err("topology", "takes 1 parameter");
}

#[test]
fn port_proto_local_lport() {
    assert_eq!(cfg("port 11940").port, 11940);
    assert_eq!(cfg("lport 5000").port, 5000);
    assert_eq!(cfg("lport 5000\nport 6000").port, 6000);
    assert_eq!(cfg("port 6000\nlport 5000").port, 5000);
    err("port 0", "between 1 and 65535");
    err("port 65536", "between 1 and 65535");
    err("port abc", "\"abc\"");
    err("port -1", "non-negative");
    err("port 1 2", "takes 1 parameter (a port), found 2");
    err("lport 70000", "between 1 and 65535");

    assert_eq!(cfg("proto udp").proto, Proto::Udp);
    assert_eq!(cfg("proto udp4").proto, Proto::Udp4);
    assert_eq!(cfg("proto udp6").proto, Proto::Udp6);
    assert_eq!(cfg("proto tcp-server").proto, Proto::TcpServer);
    assert_eq!(cfg("proto tcp").proto, Proto::TcpServer);
    err("proto tcp-client", "tcp-server");
    assert_eq!(cfg("proto tcp6").proto, Proto::Tcp6Server);
    assert_eq!(cfg("proto tcp4-server").proto, Proto::Tcp4Server);
    assert!(cfg("proto tcp").proto.is_tcp());
    assert!(cfg("proto udp").tcp_listen.is_empty());
    // One process, UDP and TCP: `warren-listen tcp PORT` next to `proto udp`.
    let c = cfg("proto udp\nwarren-listen tcp 443\nwarren-listen tcp 1194");
    assert_eq!((c.proto, c.tcp_listen), (Proto::Udp, vec![443, 1194]));
    err("warren-listen udp 1195", "proto udp");
    err("warren-listen tcp 0", "port from 1 to 65535");
    err_line(
        "warren-listen tcp 443\nwarren-listen tcp 443",
        NEXT + 1,
        "already listed",
    );
    err("warren-listen tcp", "2 parameters");
    // tcp-nodelay is pushed to the clients, as OpenVPN's helper does.
    let c = cfg("proto tcp-server\ntcp-nodelay");
    assert_eq!(
        c.push.last().map(String::as_str),
        Some("socket-flags TCP_NODELAY")
    );
    err("proto sctp", "expected udp, udp4, udp6 or tcp-server");

    assert_eq!(cfg("local 127.0.0.1").local.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        cfg("local vpn.example.org").local.as_deref(),
        Some("vpn.example.org")
    );
    err("local", "takes 1 parameter");
}

#[test]
fn dev_and_dev_type() {
    assert_eq!(cfg("dev tunsrv").dev, "tunsrv");
    let c = cfg("dev vpn0\ndev-type tun");
    assert_eq!((c.dev.as_str(), c.dev_type), ("vpn0", DevType::Tun));
    err("dev-type tap", "dev-type tap is not supported yet");
    err("dev tap0", "dev-type tap is not supported yet");
    err("dev vpn0", "add `dev-type tun`");
    err("dev-type tunnel", "expected `tun`");
    err("dev averyveryverylongname", "1 to 15 characters");
}

#[test]
fn materials_files_and_inline() {
    let inline = "<ca>\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n</ca>";
    let text = BASE.replace("ca ca.crt\n", "") + inline + "\n";
    let (c, _) = lower(&text).expect("inline ca");
    assert_eq!(
        c.ca,
        Material::Inline("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into())
    );
    assert_eq!(
        c.ca.load().expect("inline"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    );

    let c = cfg("<key>\nK\n</key>\n<cert>\nC\n</cert>");
    assert_eq!(c.key, Material::Inline("K\n".into()));
    assert_eq!(c.cert, Material::Inline("C\n".into()));
    err(
        "ca",
        "takes 1 parameter (a file) or an inline block, found 0",
    );
    err("ca a b", "found 2");
    err("<ca>\n</ca>", "the inline block is empty");
    err(
        "<push>\nx\n</push>",
        "cannot be given as an inline <push> block",
    );
    err(
        "<verb>\n3\n</verb>",
        "cannot be given as an inline <verb> block",
    );
    // Unterminated block: the error is on the <tag> line.
    let e = err_line(
        "verb 3\n<tls-crypt>\nabc",
        NEXT + 1,
        "has no closing </tls-crypt>",
    );
    assert!(matches!(e, ConfigError::Syntax { .. }));
}

#[test]
fn material_paths_resolve_against_config_dir() {
    let dir = std::env::temp_dir().join(format!("warren-config-srv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("warren-test-only-here.crt"), "PEM").expect("write");
    let text = BASE.replace("ca.crt", "warren-test-only-here.crt");
    let (c, _) = server_config_from_str(&text, "x.conf", &dir).expect("lowers");
    assert_eq!(c.ca, Material::File(dir.join("warren-test-only-here.crt")));
    assert_eq!(c.ca.load_for("ca").expect("reads"), "PEM");
    // Not found anywhere: kept as written, and loading names directive + path.
    let e = c.cert.load_for("cert").expect_err("missing");
    let s = e.to_string();
    assert!(s.contains("`cert` file server.crt"), "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dh() {
    assert_eq!(cfg("dh none").dh, None);
    let (c, w) = ok("dh dh2048.pem");
    assert_eq!(c.dh, Some(Material::File("dh2048.pem".into())));
    assert!(warned(&w, "dh"));
    assert_eq!(w[0].location.line, Some(NEXT));
    err("dh", "takes 1 parameter");
}

#[test]
fn tls_crypt_and_tls_auth() {
    assert_eq!(
        cfg("tls-crypt ta.key").tls_crypt,
        Some(Material::File("ta.key".into()))
    );
    assert_eq!(
        cfg("<tls-crypt>\nKEY\n</tls-crypt>").tls_crypt,
        Some(Material::Inline("KEY\n".into()))
    );
    err("tls-crypt ta.key 0", "found 2");

    assert_eq!(
        cfg("tls-auth ta.key 0").tls_auth,
        Some((Material::File("ta.key".into()), Some(0)))
    );
    assert_eq!(
        cfg("tls-auth ta.key").tls_auth,
        Some((Material::File("ta.key".into()), None))
    );
    assert_eq!(
        cfg("key-direction 1\n<tls-auth>\nK\n</tls-auth>").tls_auth,
        Some((Material::Inline("K\n".into()), Some(1)))
    );
    // key-direction after tls-auth still applies, and the last one wins.
    assert_eq!(
        cfg("tls-auth ta.key 0\nkey-direction 1")
            .tls_auth
            .and_then(|t| t.1),
        Some(1)
    );
    assert_eq!(
        cfg("key-direction 1\ntls-auth ta.key 0")
            .tls_auth
            .and_then(|t| t.1),
        Some(0)
    );
    err("tls-auth ta.key 2", "a key direction is 0 or 1");
    err("tls-auth ta.key 0 1", "found 3");
    err("key-direction bidirectional", "a key direction is 0 or 1");
    err_line(
        "tls-crypt ta.key\ntls-auth ta.key 0",
        NEXT + 1,
        "cannot be combined",
    );
}

#[test]
fn auth_digest() {
    assert_eq!(cfg("auth SHA256").auth.as_deref(), Some("SHA256"));
    assert_eq!(cfg("auth sha512").auth.as_deref(), Some("SHA512"));
    assert_eq!(cfg("auth SHA1").auth.as_deref(), Some("SHA1"));
    assert_eq!(cfg("auth sha-384").auth.as_deref(), Some("SHA384"));
    err("auth MD5", "\"MD5\": expected SHA1");
    err("auth none", "disable packet authentication");
}

#[test]
fn tls_groups_and_ecdh_curve() {
    use warren_config::TlsGroup::{P256, P384, X25519};
    assert_eq!(cfg("").tls_groups, None);
    // angristan/openvpn-install's default: secp521r1 is skipped with a warning.
    let (c, w) = ok("tls-groups X25519:prime256v1:secp384r1:secp521r1");
    assert_eq!(c.tls_groups, Some(vec![X25519, P256, P384]));
    assert!(w.iter().any(|w| w.directive == "tls-groups"
        && w.location.line == Some(NEXT)
        && w.message.contains("secp521r1")));
    assert_eq!(
        cfg("tls-groups secp384r1:x25519:P-256:secp256r1").tls_groups,
        Some(vec![P384, X25519, P256])
    );
    // OpenSSL 3.3's optional marker.
    assert_eq!(
        cfg("tls-groups ?frodo:X25519").tls_groups,
        Some(vec![X25519])
    );
    err(
        "tls-groups X25519:curve9999",
        "unknown group `curve9999`; warren offers X25519",
    );
    err("tls-groups secp521r1:x448", "no usable group left");
    err("tls-groups X25519::P-256", "empty group name");
    err("tls-groups", "takes 1 parameter");
    // ecdh-curve picks one; tls-groups wins over it wherever it stands.
    assert_eq!(cfg("ecdh-curve prime256v1").tls_groups, Some(vec![P256]));
    assert_eq!(
        cfg("tls-groups X25519\necdh-curve secp384r1").tls_groups,
        Some(vec![X25519])
    );
    // A curve rustls lacks leaves the defaults, with a warning (OpenSSL 3 ignores it too).
    let (c, w) = ok("ecdh-curve secp521r1");
    assert_eq!(c.tls_groups, None);
    assert!(warned(&w, "ecdh-curve"));
    err("ecdh-curve sect571k1", "unknown curve");
}

#[test]
fn tls_cipher_lists() {
    use warren_config::TlsCipherSuite as S;
    let c = cfg("");
    assert_eq!((c.tls_cipher, c.tls_ciphersuites), (None, None));
    assert_eq!(
        cfg("tls-cipher TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256").tls_cipher,
        Some(vec![S::EcdheEcdsaAes128GcmSha256])
    );
    // OpenSSL's own names too; CBC and DHE suites are skipped with a warning.
    let (c, w) = ok(
        "tls-cipher TLS-DHE-RSA-WITH-AES-256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
         TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256:TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
    );
    assert_eq!(
        c.tls_cipher,
        Some(vec![
            S::EcdheRsaAes256GcmSha384,
            S::EcdheRsaChacha20Poly1305Sha256
        ])
    );
    let w = w
        .iter()
        .find(|w| w.directive == "tls-cipher")
        .expect("warning");
    assert!(
        w.message.contains("TLS-DHE-RSA-WITH-AES-256-GCM-SHA384")
            && w.message.contains("AES-128-CBC"),
        "{w}"
    );
    err(
        "tls-cipher TLS-DHE-RSA-WITH-AES-256-CBC-SHA",
        "no suite in the list is available",
    );
    err("tls-cipher DEFAULT:!EXP", "OpenSSL cipher-string syntax");
    err("tls-cipher a b", "takes 1 parameter");

    assert_eq!(
        cfg("tls-ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256")
            .tls_ciphersuites,
        Some(vec![
            S::Tls13Aes256GcmSha384,
            S::Tls13Aes128GcmSha256,
            S::Tls13Chacha20Poly1305Sha256
        ])
    );
    // OpenVPN accepts `-` for `_`; CCM suites are skipped.
    let (c, w) = ok("tls-ciphersuites TLS-AES-128-CCM-SHA256:TLS-CHACHA20-POLY1305-SHA256");
    assert_eq!(
        c.tls_ciphersuites,
        Some(vec![S::Tls13Chacha20Poly1305Sha256])
    );
    assert!(warned(&w, "tls-ciphersuites"));
    err(
        "tls-ciphersuites TLS_AES_128_CCM_8_SHA256",
        "no usable suite left",
    );
    err("tls-ciphersuites TLS_RC4_SHA", "unknown TLS 1.3 suite");
}

#[test]
fn verify_x509_name_on_the_server() {
    use warren_config::X509NameType;
    assert_eq!(cfg("").verify_x509_name, None);
    assert_eq!(
        cfg("verify-x509-name client1 name").verify_x509_name,
        Some(("client1".into(), X509NameType::Name))
    );
    assert_eq!(
        cfg("verify-x509-name \"C=DE, CN=alice\"").verify_x509_name,
        Some(("C=DE, CN=alice".into(), X509NameType::Subject))
    );
    assert_eq!(
        cfg("verify-x509-name team- name-prefix").verify_x509_name,
        Some(("team-".into(), X509NameType::NamePrefix))
    );
    err(
        "verify-x509-name alice cn",
        "expected subject, name or name-prefix",
    );
    err("verify-x509-name", "takes 1 or 2 parameters");
}

#[test]
fn ns_cert_type_and_remote_cert_tls() {
    let (c, w) = ok("ns-cert-type client");
    assert_eq!(c.remote_cert_tls, Some(CertRole::Client));
    let w = w
        .iter()
        .find(|w| w.directive == "ns-cert-type")
        .expect("warning");
    assert!(
        w.message.contains("deprecated") && w.message.contains("remote-cert-tls client"),
        "{w}"
    );
    assert_eq!(
        cfg("remote-cert-tls client").remote_cert_tls,
        Some(CertRole::Client)
    );
    err("ns-cert-type both", "expected `client` or `server`");
    err("remote-cert-tls peer", "expected `client` or `server`");
}

#[test]
fn everyday_directives() {
    // What the popular install scripts write, each accepted on its own.
    for d in [
        "auth-nocache",
        "resolv-retry infinite",
        "push-peer-info",
        "mute 20",
        "mute-replay-warnings",
        "persist-key",
        "persist-tun",
        "txqueuelen 1000",
        "hash-size 256 256",
        "status-version 2",
        "tls-server",
        "sndbuf 393216",
        "rcvbuf 393216",
        "replay-window 64 15",
        "ncp-ciphers AES-128-GCM",
        "setenv opt block-outside-dns",
        "setenv FOO bar",
    ] {
        ok(d);
    }
    let c = cfg("ncp-ciphers AES-256-GCM:AES-128-GCM\nsndbuf 0\nrcvbuf 524288\nstatus-version 3");
    assert_eq!(c.data_ciphers, ["AES-256-GCM", "AES-128-GCM"]);
    assert_eq!(
        (c.sndbuf, c.rcvbuf, c.status_version),
        (Some(0), Some(524288), 3)
    );
    // `auth` only matters with tls-auth: otherwise a note says so.
    let (_, w) = ok("auth SHA256\ntls-crypt tc.key");
    assert!(warned(&w, "auth"));
    let (_, w) = ok("auth SHA256\ntls-auth ta.key 0");
    assert!(!warned(&w, "auth"));
    // replay-window: OpenVPN's bounds; another size is accepted with a note.
    let (_, w) = ok("replay-window 512 60");
    assert!(warned(&w, "replay-window"));
    assert!(!warned(&ok("replay-window 64").1, "replay-window"));
    err("replay-window 70000", "at most 65536");
    err("replay-window 64 601", "at most 600");
    err("replay-window many", "non-negative whole number");
}

#[test]
fn server_network_validation() {
    let c = cfg("server 10.199.0.0 255.255.0.0");
    assert_eq!(
        c.server,
        (Ipv4Addr::new(10, 199, 0, 0), Ipv4Addr::new(255, 255, 0, 0))
    );
    assert_eq!(
        cfg("server 192.168.7.8 255.255.255.248").server.1,
        Ipv4Addr::new(255, 255, 255, 248)
    );
    err("server 10.8.0.1 255.255.255.0", "did you mean 10.8.0.0?");
    err("server 10.8.0.0 255.0.255.0", "not contiguous");
    err("server 10.0.0.0 255.0.0.0", "/8 is not allowed");
    err("server 10.8.0.0 255.255.255.252", "/30 is not allowed");
    err(
        "server 10.8.0 255.255.255.0",
        "\"10.8.0\": expected a dotted-quad",
    );
    err("server 10.8.0.0", "takes 2 parameters");
    err(
        "server 10.8.0.0 255.255.255.0 nopool",
        "`nopool` is not supported yet",
    );
    err("server 10.8.0.0 255.255.255.0 foo", "nopool");
}

#[test]
fn push() {
    let c = cfg(
        "push \"route 192.168.1.0 255.255.255.0\"\npush 'dhcp-option DNS 10.8.0.1'\npush redirect-gateway",
    );
    assert_eq!(
        c.push,
        [
            "route 192.168.1.0 255.255.255.0",
            "dhcp-option DNS 10.8.0.1",
            "redirect-gateway"
        ]
    );
    err("push", "takes 1 parameter");
    err("push route 10.0.0.0 255.0.0.0", "found 3");
    err("push \"\"", "nothing to push");
    err("push \"comp-lzo no\"", "compression is refused");
    err("push \"route", "no closing quotation");
}

#[test]
fn keepalive_ping() {
    assert_eq!(cfg("keepalive 10 120").keepalive, Some((10, 120)));
    assert_eq!(cfg("keepalive 10 20").keepalive, Some((10, 20)));
    err("keepalive 10 15", "at least twice");
    err("keepalive 0 120", "greater than 0");
    err("keepalive 10", "takes 2 parameters");
    let c = cfg("ping 10\nping-restart 60");
    assert_eq!((c.ping, c.ping_restart), (Some(10), Some(60)));
    err("ping x", "\"x\"");
    err_line("keepalive 10 60\nping 5", NEXT, "conflicts with `ping`");
}

#[test]
fn ciphers() {
    assert_eq!(
        cfg("data-ciphers AES-256-GCM").data_ciphers,
        ["AES-256-GCM"]
    );
    assert_eq!(
        cfg("data-ciphers chacha20-poly1305:aes-128-gcm").data_ciphers,
        ["CHACHA20-POLY1305", "AES-128-GCM"]
    );
    assert_eq!(cfg("ncp-ciphers AES-128-GCM").data_ciphers, ["AES-128-GCM"]);
    let (c, w) = ok("data-ciphers AES-256-GCM:?BF-CBC");
    assert_eq!(c.data_ciphers, ["AES-256-GCM"]);
    assert!(warned(&w, "data-ciphers"));
    err("data-ciphers AES-256-GCM:BF-CBC", "only the AEAD ciphers");
    // Legacy CBC: accepted (old peers), always with a warning.
    let (c, w) = ok("data-ciphers AES-256-GCM:aes-256-cbc:AES-128-CBC\nauth SHA256");
    assert_eq!(
        c.data_ciphers,
        ["AES-256-GCM", "AES-256-CBC", "AES-128-CBC"]
    );
    assert_eq!(c.auth.as_deref(), Some("SHA256"));
    assert!(w.iter().any(|w| w.message.contains("legacy CBC")));
    let (c, w) = ok("cipher AES-128-CBC\ndata-ciphers-fallback AES-128-CBC");
    assert_eq!(c.data_ciphers_fallback.as_deref(), Some("AES-128-CBC"));
    assert!(w.iter().any(|w| w.message.contains("legacy CBC")));
    err("data-ciphers AES-256-GCM::AES-128-GCM", "empty cipher name");
    err("data-ciphers ?BF-CBC", "no supported cipher left");
    assert_eq!(
        cfg("data-ciphers-fallback aes-128-gcm")
            .data_ciphers_fallback
            .as_deref(),
        Some("AES-128-GCM")
    );
    err("data-ciphers-fallback BF-CBC", "only the AEAD ciphers");
    assert_eq!(
        cfg("cipher AES-256-GCM").cipher.as_deref(),
        Some("AES-256-GCM")
    );
    err("cipher BF-CBC", "\"BF-CBC\"");
    err("cipher none", "would disable encryption");
}

#[test]
fn tls_versions() {
    let c = cfg("tls-version-min 1.2\ntls-version-max 1.3");
    assert_eq!(
        (c.tls_version_min, c.tls_version_max),
        (Some(TlsVersion::V1_2), Some(TlsVersion::V1_3))
    );
    assert_eq!(
        cfg("tls-version-min 1.2 or-highest").tls_version_min,
        Some(TlsVersion::V1_2)
    );
    assert_eq!(
        cfg("tls-version-min 1.4 or-highest").tls_version_min,
        Some(TlsVersion::V1_3)
    );
    err("tls-version-min 1.0", "TLS 1.0 and 1.1 are not supported");
    err(
        "tls-version-min 1.1 or-highest",
        "TLS 1.0 and 1.1 are not supported",
    );
    err("tls-version-min 1.2 foo", "or-highest");
    err("tls-version-max 1.1", "not supported");
    err("tls-version-max 1.3 or-highest", "found 2");
    err_line(
        "tls-version-max 1.2\ntls-version-min 1.3",
        NEXT + 1,
        "higher than",
    );
}

#[test]
fn timers() {
    let c = cfg("reneg-sec 600\nhand-window 30\ntls-timeout 5");
    assert_eq!(
        (c.reneg_sec, c.hand_window, c.tls_timeout),
        (Some(600), Some(30), Some(5))
    );
    assert_eq!(cfg("reneg-sec 0").reneg_sec, Some(0));
    let (c, w) = ok("reneg-sec 3600 1800");
    assert_eq!(c.reneg_sec, Some(3600));
    assert!(warned(&w, "reneg-sec"));
    err("hand-window 0", "greater than 0");
    err("tls-timeout 2s", "\"2s\"");
    err("reneg-sec 99999999999", "too large");
}

#[test]
fn flags_and_limits() {
    let c = cfg("client-to-client\nduplicate-cn\npersist-key\npersist-tun\nmax-clients 100");
    assert!(c.client_to_client && c.duplicate_cn && c.persist_key && c.persist_tun);
    assert_eq!(c.max_clients, Some(100));
    err("client-to-client yes", "takes no parameters, found 1");
    err("max-clients 0", "between 1 and");
    err("max-clients 16777215", "between 1 and");
    assert_eq!(cfg("explicit-exit-notify").explicit_exit_notify, Some(1));
    assert_eq!(cfg("explicit-exit-notify 3").explicit_exit_notify, Some(3));
    err("explicit-exit-notify 1 2", "found 2");
    let (_, w) = ok("proto tcp-server\nexplicit-exit-notify 1");
    assert!(warned(&w, "explicit-exit-notify"));
}

#[test]
fn cert_checks() {
    assert_eq!(
        cfg("remote-cert-tls client").remote_cert_tls,
        Some(CertRole::Client)
    );
    assert_eq!(
        cfg("remote-cert-tls server").remote_cert_tls,
        Some(CertRole::Server)
    );
    err("remote-cert-tls both", "expected `client` or `server`");
    assert_eq!(
        cfg("verify-client-cert require").verify_client_cert,
        VerifyClientCert::Require
    );
    assert_eq!(
        cfg("verify-client-cert").verify_client_cert,
        VerifyClientCert::Require
    );
    err("verify-client-cert none", "username/password check");
    err("verify-client-cert optional", "username/password check");
    err(
        "verify-client-cert maybe",
        "expected none, optional or require",
    );
}

#[test]
fn process_and_logging() {
    let c = cfg(
        "user nobody\ngroup nogroup\nverb 4\nstatus /run/warren/status.log 30\nstatus-version 3",
    );
    assert_eq!(c.user.as_deref(), Some("nobody"));
    assert_eq!(c.group.as_deref(), Some("nogroup"));
    assert_eq!(c.verb, 4);
    assert_eq!(
        c.status,
        Some((PathBuf::from("/run/warren/status.log"), 30))
    );
    assert_eq!(c.status_version, 3);
    assert_eq!(
        cfg("status openvpn-status.log").status,
        Some((PathBuf::from("openvpn-status.log"), 60))
    );
    assert_eq!(cfg("verb 15").verb, 11);
    err("verb loud", "\"loud\"");
    err("status-version 4", "expected 1, 2 or 3");
    err("status", "takes 1 or 2 parameters");
    err("user", "takes 1 parameter");
}

#[test]
fn mtu_and_buffers() {
    let c = cfg("tun-mtu 1400\nmssfix 1360\nsndbuf 393216\nrcvbuf 393216");
    assert_eq!(
        (c.tun_mtu, c.mssfix, c.sndbuf, c.rcvbuf),
        (Some(1400), Some(1360), Some(393216), Some(393216))
    );
    assert_eq!(cfg("mssfix").mssfix, None);
    assert_eq!(cfg("mssfix 0").mssfix, Some(0));
    let (_, w) = ok("mssfix 1400 mtu");
    assert!(warned(&w, "mssfix"));
    err("mssfix 1400 foo", "expected `mtu` or `fixed`");
    err("tun-mtu 100", "at least 576");
    err("tun-mtu 70000", "at most 65535");
}

#[test]
fn mode_and_tls_server() {
    cfg("mode server\ntls-server");
    err("mode p2p", "point-to-point mode is not supported");
    err("tls-server yes", "takes no parameters");
}

#[test]
fn key_derivation_extension() {
    let (c, w) = ok("warren-key-derivation prf");
    assert_eq!(c.key_derivation, KeyDerivationPolicy::Prf);
    assert!(warned(&w, "warren-key-derivation"));
    assert_eq!(
        cfg("warren-key-derivation auto").key_derivation,
        KeyDerivationPolicy::Auto
    );
    err("warren-key-derivation ekm", "expected `auto` or `prf`");
    // The sharing recipe: OpenVPN ignores it, warren still honours it.
    let (c, w) = ok("ignore-unknown-option warren-key-derivation\nwarren-key-derivation prf");
    assert_eq!(c.key_derivation, KeyDerivationPolicy::Prf);
    assert_eq!(w.len(), 1);
}

#[test]
fn offload_extension() {
    assert!(cfg("").offload);
    assert!(!cfg("warren-offload off").offload);
    assert!(cfg("warren-offload off\nwarren-offload on").offload);
    err("warren-offload no", "expected `on` or `off`");
    err("warren-offload", "1 parameter");
    // Shared with openvpn: skipped there, honoured here.
    assert!(!cfg("ignore-unknown-option warren-offload\nwarren-offload off").offload);
    let e = err("warren-ofload off", "unknown directive");
    assert!(e.to_string().contains("warren-offload"), "{e}");
}

#[test]
fn workers_extension() {
    assert_eq!(cfg("").workers, None);
    assert_eq!(cfg("warren-workers 3").workers, Some(3));
    assert_eq!(cfg("warren-workers 3\nwarren-workers auto").workers, None);
    assert_eq!(cfg("warren-workers 64").workers, Some(64));
    err("warren-workers 0", "from 1 to 64");
    err("warren-workers 65", "from 1 to 64");
    err("warren-workers many", "non-negative whole number");
    err("warren-workers", "1 parameter");
    let e = err("warren-worker 2", "unknown directive");
    assert!(e.to_string().contains("warren-workers"), "{e}");
}

#[test]
fn half_open_limits_extension() {
    // Defaults: 16 per source, max(64, max-clients) in all.
    let c = cfg("");
    assert_eq!((c.max_half_open, c.max_half_open_per_source), (None, None));
    assert_eq!((c.half_open_per_source(), c.half_open_limit()), (16, 1024));
    assert_eq!(cfg("max-clients 10").half_open_limit(), 64);
    assert_eq!(cfg("max-clients 5000").half_open_limit(), 5000);
    let c = cfg("warren-max-half-open 200\nwarren-max-half-open-per-source 4");
    assert_eq!(
        (c.max_half_open, c.max_half_open_per_source),
        (Some(200), Some(4))
    );
    assert_eq!((c.half_open_per_source(), c.half_open_limit()), (4, 200));
    // The per-source limit never exceeds the total.
    assert_eq!(cfg("warren-max-half-open 8").half_open_per_source(), 8);
    err("warren-max-half-open 0", "between 1 and 16777214");
    err(
        "warren-max-half-open-per-source 0",
        "between 1 and 16777214",
    );
    err("warren-max-half-open lots", "non-negative whole number");
    err("warren-max-half-open-per-source", "1 parameter");
    let e = err("warren-max-half-opne 10", "unknown directive");
    assert!(e.to_string().contains("warren-max-half-open"), "{e}");
}

#[test]
fn unknown_directives_and_did_you_mean() {
    let e = err(
        "keepalvie 10 60",
        "unknown directive `keepalvie`; did you mean `keepalive`?",
    );
    assert!(matches!(
        e,
        ConfigError::UnknownDirective {
            suggestion: Some("keepalive"),
            ..
        }
    ));
    err("tls-crpyt ta.key", "did you mean `tls-crypt`?");
    err("Port 1194", "did you mean `port`?");
    err(
        "--explicit-exit-notfy",
        "did you mean `explicit-exit-notify`?",
    );
    let e = err("frobnicate 1", "unknown directive `frobnicate`");
    assert!(e.to_string().ends_with("`frobnicate`"), "{e}");
}

#[test]
fn allow_listed_directives_warn() {
    let lines = [
        "mute 20",
        "mute-replay-warnings",
        "ifconfig-pool-persist ipp.txt",
        "log /var/log/openvpn.log",
        "log-append /var/log/openvpn.log",
        "daemon",
        "fast-io",
        "tun-mtu-extra 32",
        "writepid /run/openvpn.pid",
        "float",
    ];
    for (i, l) in lines.iter().enumerate() {
        let (_, w) = ok(l);
        let name = l.split(' ').next().unwrap_or_default();
        assert_eq!(w.len(), 1, "{l}: {w:?}");
        assert_eq!(w[0].directive, name);
        assert_eq!(w[0].location.line, Some(NEXT), "{i}");
        assert!(w[0].message.starts_with("ignored: "), "{}", w[0]);
        assert!(
            w[0].to_string()
                .starts_with(&format!("s.conf:{NEXT}: `{name}`: ignored"))
        );
    }
    let (_, w) = ok("ifconfig-pool-persist ipp.txt");
    assert!(w[0].message.contains("not persisted"));
}

#[test]
fn refused_directives() {
    err("comp-lzo no", "compression is refused");
    err("compress lz4-v2", "compression is refused");
    err("allow-compression yes", "compression is refused");
    cfg("allow-compression no");
    err(
        "management-client 127.0.0.1 7505",
        "connecting out to a management client is not supported",
    );
    err(
        "management-hold",
        "the management interface, which is not enabled",
    );
    err("secret static.key", "static-key mode");
    err(
        "auth-user-pass-verify /bin/check via-file",
        "add `script-security 2`",
    );
    err("tls-crypt-v2-verify /bin/check", "runs no script");
    err("remote vpn.example.org", "client directive");
    err("client", "client directive");
    err(
        "iroute-ipv6 fd00:77::/64",
        "belong in a client-config-dir file",
    );
    err(
        "ifconfig-push 10.8.0.5 255.255.255.0",
        "belong in a client-config-dir file",
    );
    err(
        "up /etc/openvpn/up.sh",
        "cannot run with script-security 1 (the default)",
    );
    err("tls-verify /bin/check", "does not run this script hook");
    err("tls-cipher DEFAULT", "OpenSSL cipher-string syntax");
    err("tls-cert-profile suiteb", "security levels");
    // An OpenVPN directive with no specific entry.
    err("single-session", "not implemented yet");
}

#[test]
fn ignore_unknown_option_rules() {
    // Covers later lines only, as in OpenVPN.
    err_line(
        "frobnicate\nignore-unknown-option frobnicate",
        NEXT,
        "unknown directive",
    );
    let (_, w) = ok("ignore-unknown-option frobnicate --inactive\nfrobnicate 1 2\ninactive 3600");
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(w[0].location.line, Some(NEXT + 1));
    assert!(w[0].message.contains("ignore-unknown-option"), "{}", w[0]);
    assert_eq!(w[1].directive, "inactive");
    // Non-strict refusals (TLS certificate profiles) can be skipped on purpose.
    let (_, w) = ok("ignore-unknown-option tls-cert-profile\ntls-cert-profile preferred");
    assert_eq!((w.len(), w[0].location.line), (1, Some(NEXT + 1)), "{w:?}");
    // Several names on one line, and a directive warren knows is still taken.
    let (c, w) = ok(
        "ignore-unknown-option block-outside-dns tls-cert-profile data-ciphers\n\
         block-outside-dns\ntls-cert-profile legacy\ndata-ciphers AES-128-GCM",
    );
    assert_eq!(c.data_ciphers, ["AES-128-GCM"]);
    assert_eq!(w.len(), 2, "{w:?}");
    // Strict refusals stay errors.
    err_line(
        "ignore-unknown-option comp-lzo\ncomp-lzo no",
        NEXT + 1,
        "compression is refused",
    );
    err_line(
        "ignore-unknown-option crl-verify\ncrl-verify crl.pem file",
        NEXT + 1,
        "only second parameter is `dir`",
    );
    // A known directive with a bad value is still an error.
    err_line(
        "ignore-unknown-option port\nport 0",
        NEXT + 1,
        "between 1 and 65535",
    );
    err(
        "ignore-unknown-option",
        "takes 1 or more directive names, found 0",
    );
}

#[test]
fn setenv_rules() {
    let (_, w) =
        ok("setenv opt block-outside-dns\nsetenv opt frobnicate 1\nsetenv opt ipchange /bin/true");
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[1].message.contains("setenv opt"), "{}", w[1]);
    // setenv opt on a known directive applies it.
    assert_eq!(cfg("setenv opt verb 5").verb, 5);
    err("setenv opt port 0", "between 1 and 65535");
    err("setenv opt secret x.key", "static-key mode");
    err("setenv opt", "a directive after `setenv opt`");
    // setenv NAME VALUE: for the scripts (a later one replaces an earlier one).
    let (c, w) = ok("setenv FOO bar\nsetenv EMPTY\nsetenv FOO baz");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        c.scripts.setenv,
        [
            ("EMPTY".into(), String::new()),
            ("FOO".into(), "baz".into())
        ]
    );
    err("setenv GENERIC_CONFIG 1", "generic configuration");
    let (_, w) = ok("setenv FORWARD_COMPATIBLE 1\nfrobnicate\ninactive 3600");
    assert_eq!(w.len(), 2, "{w:?}");
    err_line(
        "setenv FORWARD_COMPATIBLE 1\nsecret x.key",
        NEXT + 1,
        "static-key",
    );
}

#[test]
fn comments_quotes_crlf_and_doubledash_in_a_config() {
    let text = "# comment\r\n; comment\r\n--ca \"my ca.crt\"\r\ncert 'server.crt' # trailing\r\nkey server\\ key.pem\r\n\
                server 10.8.0.0 255.255.255.0\r\ntopology subnet\r\n";
    let (c, w) = lower(text).expect("parses");
    assert_eq!(c.ca, Material::File("my ca.crt".into()));
    assert_eq!(c.cert, Material::File("server.crt".into()));
    assert_eq!(c.key, Material::File("server key.pem".into()));
    assert!(w.is_empty());
    let e = lower("ca ca.crt\ncert c:\\x.crt\n").expect_err("bad backslash");
    assert!(e.to_string().starts_with("s.conf:2: bad backslash"), "{e}");
}

#[test]
fn debug_does_not_print_inline_keys() {
    let c = cfg("<key>\n-----BEGIN PRIVATE KEY-----\nSECRET\n</key>");
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("SECRET"), "{dbg}");
}

#[test]
fn fact_sheet_12_1_server_conf() {
    // openvpn-protocol.md §12.1, verbatim (comments included).
    let text = r#"port 1194
proto udp
dev tun
topology subnet
server 10.8.0.0 255.255.255.0          # pushes route-gateway 10.8.0.1, topology subnet
ca ca.crt
cert server.crt
key server.key
dh none                                # ECDHE only
tls-crypt ta.key                       # openvpn --genkey secret ta.key
data-ciphers AES-256-GCM               # default is AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305
keepalive 10 120                       # pushes ping 10, ping-restart 120
explicit-exit-notify 1
remote-cert-tls client                 # optional, EKU clientAuth check
verb 4
"#;
    let (c, w) =
        server_config_from_str(text, "server.conf", base_dir()).expect("fact sheet config");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.port, 1194);
    assert_eq!(c.proto, Proto::Udp);
    assert_eq!(c.dev, "tun");
    assert_eq!(
        c.server,
        (Ipv4Addr::new(10, 8, 0, 0), Ipv4Addr::new(255, 255, 255, 0))
    );
    assert_eq!(c.dh, None);
    assert_eq!(c.tls_crypt, Some(Material::File("ta.key".into())));
    assert_eq!(c.data_ciphers, ["AES-256-GCM"]);
    assert_eq!(c.keepalive, Some((10, 120)));
    assert_eq!(c.explicit_exit_notify, Some(1));
    assert_eq!(c.remote_cert_tls, Some(CertRole::Client));
    assert_eq!(c.verb, 4);
}

#[test]
fn openvpn_lab_server_conf() {
    let path = Path::new("/work/shared/tools/openvpn-lab/server.conf");
    if !path.exists() {
        eprintln!("skipping: {} not present", path.display());
        return;
    }
    let (c, w) = load_server_config(path).expect("lab server.conf");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.port, 11940);
    assert_eq!(c.local.as_deref(), Some("127.0.0.1"));
    assert_eq!(c.dev, "tunsrv");
    assert_eq!(
        c.server,
        (
            Ipv4Addr::new(10, 199, 0, 0),
            Ipv4Addr::new(255, 255, 255, 0)
        )
    );
    assert_eq!(c.verb, 9);
    assert_eq!(c.source, path);
}

#[test]
fn example_server_conf() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/server.conf");
    let (c, w) = load_server_config(&path).expect("examples/server.conf");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.port, 1194);
    assert_eq!(c.proto, Proto::Udp);
    assert_eq!(c.dev, "tun");
    assert_eq!(
        c.server,
        (Ipv4Addr::new(10, 8, 0, 0), Ipv4Addr::new(255, 255, 255, 0))
    );
    assert_eq!(c.topology, Topology::Subnet);
    assert_eq!(c.keepalive, Some((10, 120)));
    assert_eq!(c.explicit_exit_notify, Some(1));
    assert_eq!(c.push, ["dhcp-option DNS 10.8.0.1"]);
    assert_eq!(c.dh, None);
    for (m, name) in [
        (&c.ca, "ca.crt"),
        (&c.cert, "server.crt"),
        (&c.key, "server.key"),
    ] {
        assert!(m.path().is_some_and(|p| p.ends_with(name)), "{m:?}");
    }
    assert!(
        c.tls_crypt
            .as_ref()
            .and_then(Material::path)
            .is_some_and(|p| p.ends_with("ta.key"))
    );
}

#[test]
fn load_errors() {
    let e =
        load_server_config(Path::new("/nonexistent/warren/server.conf")).expect_err("missing file");
    assert!(
        e.to_string()
            .starts_with("cannot read config file /nonexistent/warren/server.conf"),
        "{e}"
    );

    let dir = std::env::temp_dir().join(format!("warren-config-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let p = dir.join("bad.conf");
    std::fs::write(&p, b"port 1194\nlocal \xff\xfe\n").expect("write");
    let e = load_server_config(&p).expect_err("not utf-8");
    assert_eq!(e.location().and_then(|l| l.line), Some(2), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

proptest::proptest! {
    #[test]
    fn lowering_never_panics(s in "\\PC*") {
        let _ = server_config_from_str(&s, "fuzz", base_dir());
    }

    #[test]
    fn lowering_never_panics_on_directive_soup(
        lines in proptest::collection::vec(
            (proptest::sample::select(vec![
                "port", "proto", "server", "push", "keepalive", "tls-auth", "data-ciphers",
                "tls-version-min", "verb", "status", "mssfix", "dev", "dev-type", "max-clients",
                "setenv", "ignore-unknown-option", "<ca>", "</ca>", "key-direction", "topology",
            ]), "[ 0-9a-z.:\"'\\\\-]{0,24}"),
            0..12,
        )
    ) {
        let text: String = lines.iter().map(|(d, a)| format!("{d} {a}\n")).collect();
        let _ = server_config_from_str(&(BASE.to_owned() + &text), "fuzz", base_dir());
    }
}

#[test]
fn state_dir_extension() {
    assert_eq!(cfg("").state, None);
    let c = cfg(
        "ignore-unknown-option warren-state-dir warren-auth\nwarren-state-dir /var/lib/warren # users\nwarren-auth cert+password",
    );
    assert_eq!(
        c.state,
        Some(StateDir {
            dir: PathBuf::from("/var/lib/warren"),
            auth: UserAuth::CertPassword
        })
    );
    assert_eq!(
        cfg("warren-state-dir /x").state.map(|s| s.auth),
        Some(UserAuth::Cert)
    );
    // Relative directories resolve like `ca`: the current directory, then the config's.
    let dir = std::env::temp_dir().join(format!("warren-config-state-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("st")).expect("mkdir");
    let (c, _) = server_config_from_str(&format!("{BASE}warren-state-dir st\n"), "s.conf", &dir)
        .expect("relative state dir");
    assert_eq!(c.state.map(|s| s.dir), Some(dir.join("st")));
    let _ = std::fs::remove_dir_all(&dir);

    err(
        "warren-auth passwd\nwarren-state-dir /x",
        "s.conf:6: `warren-auth`: invalid value \"passwd\": use cert, cert+password or password",
    );
    err(
        "warren-auth cert",
        "`warren-auth` needs `warren-state-dir DIR` (the users to check against)",
    );
    err_line(
        "port 1\nwarren-state-dir",
        NEXT + 1,
        "s.conf:7: `warren-state-dir` takes 1 parameter (a directory), found 0",
    );
    err("warren-state-dir a b", "takes 1 parameter");
    err("<warren-auth>\ncert\n</warren-auth>", "inline");
    let e = err("warren-stat-dir /x", "unknown directive");
    assert!(e.to_string().contains("warren-state-dir"), "{e}");
}

#[test]
fn debug_redacts_key_material() {
    let key = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKEYBYTESKEYBYTES\n-----END PRIVATE KEY-----";
    let tc = "-----BEGIN OpenVPN Static key V1-----\n0123456789abcdefSTATICKEY\n-----END OpenVPN Static key V1-----";
    let text = BASE.replace("key server.key\n", "")
        + &format!("<key>\n{key}\n</key>\n<tls-crypt>\n{tc}\n</tls-crypt>\n");
    let (c, _) = lower(&text).expect("inline keys");
    let dbg = format!("{c:?}");
    for secret in ["KEYBYTES", "PRIVATE", "STATICKEY", "0123456789abcdef"] {
        assert!(!dbg.contains(secret), "{secret} in {dbg}");
    }
    assert!(dbg.contains("Inline(<"), "{dbg}");
}

#[test]
fn crl_verify() {
    assert_eq!(cfg("").crl_verify, None);
    let c = cfg("crl-verify crl.pem");
    let (m, loc) = c.crl_verify.expect("crl-verify");
    assert_eq!(m, Material::File(PathBuf::from("crl.pem")));
    assert_eq!(loc.line, Some(NEXT));
    assert_eq!(&*loc.file, "s.conf");
    // The last one wins, as in OpenVPN.
    let c = cfg("crl-verify a.pem\ncrl-verify /etc/openvpn/crl.pem");
    assert_eq!(
        c.crl_verify.map(|(m, l)| (m, l.line)),
        Some((
            Material::File(PathBuf::from("/etc/openvpn/crl.pem")),
            Some(NEXT + 1)
        ))
    );
    // Inline blocks.
    let c =
        cfg("<crl-verify>\n-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n</crl-verify>");
    assert!(
        matches!(&c.crl_verify, Some((Material::Inline(t), _)) if t.contains("BEGIN X509 CRL")),
        "{:?}",
        c.crl_verify
    );
    // The directory form; the last line wins between the two forms.
    let c = cfg("crl-verify a.pem\ncrl-verify /etc/openvpn/crl dir");
    assert_eq!(c.crl_verify, None);
    let (d, loc) = c.crl_verify_dir.expect("crl-verify dir");
    assert_eq!(d, PathBuf::from("/etc/openvpn/crl"));
    assert_eq!(loc.line, Some(NEXT + 1));
    let c = cfg("crl-verify /etc/openvpn/crl dir\ncrl-verify a.pem");
    assert_eq!(c.crl_verify_dir, None);
    assert!(c.crl_verify.is_some());
    err("crl-verify crl.pem file", "only second parameter is `dir`");
    err("crl-verify", "1 or 2 parameters");
    err("crl-verify a b c", "1 or 2 parameters");
    err("crl-verify \"\"", "empty file name");
}

#[test]
fn port_share() {
    let c = cfg("proto tcp-server\nport-share 127.0.0.1 8443");
    assert_eq!(c.port_share, Some(("127.0.0.1".to_owned(), 8443)));
    let c = cfg("proto udp\nwarren-listen tcp 443\nport-share web.example 443");
    assert_eq!(c.port_share, Some(("web.example".to_owned(), 443)));
    assert_eq!(cfg("proto tcp-server").port_share, None);
    // OpenVPN: "--port-share only works in TCP server mode".
    err("port-share 127.0.0.1 8443", "proto tcp-server");
    err_line(
        "proto tcp-server\nport-share 127.0.0.1 8443 /var/lib/ps",
        NEXT + 1,
        "journal directory",
    );
    err_line(
        "proto tcp-server\nport-share 127.0.0.1 0",
        NEXT + 1,
        "port from 1 to 65535",
    );
    err_line(
        "proto tcp-server\nport-share 127.0.0.1",
        NEXT + 1,
        "2 or 3 parameters",
    );
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("IPv6 address")
}

#[test]
fn server_ipv6_expands_like_openvpn_helper() {
    // helper.c: server P+1, remote P+2, pool P+0x1000 below /112, P+2 from /112.
    let c = cfg("server-ipv6 fd00:8::/64");
    let x = c.ipv6().expect("IPv6");
    assert_eq!(
        (x.local.addr, x.local.len, x.remote),
        (v6("fd00:8::1"), 64, v6("fd00:8::2"))
    );
    assert!(x.push_tun_ipv6);
    assert_eq!(
        (x.pool_base(), x.pool_size()),
        (Some(v6("fd00:8::1000")), 65536)
    );
    let x = cfg("server-ipv6 fd00:12::/112").ipv6().expect("IPv6");
    assert_eq!(
        x.pool.map(|p| (p.addr, p.len)),
        Some((v6("fd00:12::2"), 112))
    );
    assert_eq!(
        (x.pool_base(), x.pool_size()),
        (Some(v6("fd00:12::2")), 65534)
    );
    let x = cfg("server-ipv6 fd00:12::10/124").ipv6().expect("IPv6");
    assert_eq!(
        (x.pool_base(), x.pool_size()),
        (Some(v6("fd00:12::12")), 14)
    );
    assert_eq!(cfg("").ipv6(), None, "IPv4 only by default");
    // Without /BITS OpenVPN takes /64.
    assert_eq!(
        cfg("server-ipv6 fd00:8::").server_ipv6.map(|p| p.len),
        Some(64)
    );
    // A smaller IPv6 pool limits the clients: warned, as OpenVPN does.
    let (_, w) = ok("server 10.9.0.0 255.255.0.0\nserver-ipv6 fd00:12::/120");
    assert!(warned(&w, "server-ipv6"), "{w:?}");
    let (_, w) = ok("server-ipv6 fd00:12::/120");
    assert!(!warned(&w, "server-ipv6"), "{w:?}");
}

#[test]
fn ifconfig_ipv6_and_its_pool() {
    let c = cfg("ifconfig-ipv6 fd00:9::1/64 fd00:9::2\nifconfig-ipv6-pool fd00:9::/64");
    let x = c.ipv6().expect("IPv6");
    assert_eq!((x.local.addr, x.local.len), (v6("fd00:9::1"), 64));
    assert!(!x.push_tun_ipv6, "only server-ipv6 pushes tun-ipv6");
    // pool.c: a pool starting at host part 0 starts at 1.
    assert_eq!(x.pool_base(), Some(v6("fd00:9::1")));
    let x = cfg("ifconfig-ipv6 fd00:9::1/64 fd00:9::2")
        .ipv6()
        .expect("IPv6");
    assert_eq!(x.pool, None, "an address for the server, none for clients");
    err(
        "ifconfig-ipv6-pool fd00:9::1000/64",
        "needs `ifconfig-ipv6 ADDR/BITS REMOTE`",
    );
    err_line(
        "server-ipv6 fd00:8::/64\nifconfig-ipv6-pool fd00:9::/64",
        NEXT + 1,
        "already defines the IPv6 pool",
    );
    err_line(
        "server-ipv6 fd00:8::/64\nifconfig-ipv6 fd00:8::1/64 fd00:8::2",
        NEXT + 1,
        "already gives the server its IPv6 address",
    );
    err("ifconfig-ipv6 fd00:9::1/64", "takes 2 parameters");
    err(
        "ifconfig-ipv6 fd00:9::1/48 fd00:9::2",
        "between /64 and /124",
    );
    err(
        "ifconfig-ipv6 fd00:9::1/64 10.0.0.1",
        "expected an IPv6 address",
    );
}

#[test]
fn server_ipv6_errors_name_the_line() {
    err("server-ipv6 fd00:8::/63", "between /64 and /124");
    err("server-ipv6 fd00:8::/125", "between /64 and /124");
    err("server-ipv6 fd00:8::1/64", "did you mean fd00:8::/64?");
    err("server-ipv6 10.8.0.0/24", "IPv6 address");
    err("server-ipv6", "takes 1 parameter");
    err("ifconfig-ipv6-pool fd00::/60", "between /64 and /124");
}

#[test]
fn client_config_dir_and_server_routes() {
    let (c, w) = ok(
        "route 192.168.77.0 255.255.255.0\nroute 10.9.9.9\nroute 172.16.0.0 255.240.0.0 default 7",
    );
    assert_eq!(
        c.routes
            .iter()
            .map(|r| (r.to_string(), r.metric))
            .collect::<Vec<_>>(),
        [
            ("192.168.77.0/24".to_string(), None),
            ("10.9.9.9/32".to_string(), None),
            ("172.16.0.0/12".to_string(), Some(7))
        ]
    );
    assert!(warned(&w, "route"), "no client owns the network: {w:?}");
    assert_eq!(
        (c.client_config_dir.as_ref(), c.ccd_exclusive),
        (None, false)
    );
    let (c, w) =
        ok("client-config-dir /etc/openvpn/ccd\nccd-exclusive\nroute 192.168.77.0 255.255.255.0");
    assert_eq!(
        c.client_config_dir.as_deref(),
        Some(std::path::Path::new("/etc/openvpn/ccd"))
    );
    assert!(c.ccd_exclusive);
    assert!(!warned(&w, "route"), "{w:?}");
    err(
        "route 192.168.77.1 255.255.255.0",
        "did you mean 192.168.77.0?",
    );
    err("route 192.168.77.0 255.0.255.0", "not contiguous");
    err("route vpn_gateway", "IPv4 network");
    err("ccd-exclusive", "needs `client-config-dir");
    err("client-config-dir", "takes 1 parameter");
}

#[test]
fn route_ipv6_on_a_server() {
    let (c, w) =
        ok("server-ipv6 fd00:8::/64\nroute-ipv6 fd00:77::/64\nroute-ipv6 2001:db8::/48 default 5");
    assert_eq!(c.route_ipv6.len(), 2);
    assert_eq!(c.route_ipv6[0].network.to_string(), "fd00:77::/64");
    assert_eq!(
        (c.route_ipv6[1].gateway, c.route_ipv6[1].metric),
        (None, Some(5))
    );
    assert!(
        warned(&w, "route-ipv6"),
        "client networks need iroute-ipv6: {w:?}"
    );
    err("route-ipv6 fd00:77::1/64", "did you mean fd00:77::/64?");
    err("route-ipv6 fd00:77::/129", "between /0 and /128");
    err("route-ipv6 fd00:77::/64 gw", "expected an IPv6 address");
    // block-ipv6: answers from fe80::7 without an IPv6 address, else from the remote.
    assert_eq!(cfg("").block_ipv6_from(), None);
    assert_eq!(cfg("block-ipv6").block_ipv6_from(), Some(v6("fe80::7")));
    let (c, w) = ok("server-ipv6 fd00:8::/64\nblock-ipv6");
    assert_eq!(c.block_ipv6_from(), Some(v6("fd00:8::2")));
    assert!(warned(&w, "block-ipv6"), "{w:?}");
    err("block-ipv6 now", "no parameters");
    // tun-ipv6 is accepted with a note, as OpenVPN 2.6 does.
    let (_, w) = ok("tun-ipv6");
    assert!(warned(&w, "tun-ipv6"), "{w:?}");
}

#[test]
fn tls_crypt_v2() {
    let c = cfg("tls-crypt-v2 v2.key");
    let v2 = c.tls_crypt_v2.expect("tls-crypt-v2");
    assert_eq!(v2.key, Material::File(PathBuf::from("v2.key")));
    assert_eq!(v2.location.line, Some(NEXT));
    assert!(!v2.force_cookie);
    assert_eq!(v2.max_age_days, None);
    assert!(c.tls_crypt.is_none());
    let v2 = cfg("tls-crypt-v2 v2.key force-cookie\ntls-crypt-v2-max-age 30")
        .tls_crypt_v2
        .expect("tls-crypt-v2");
    assert!(v2.force_cookie);
    assert_eq!(v2.max_age_days, Some(30));
    assert!(
        !cfg("tls-crypt-v2 v2.key allow-noncookie")
            .tls_crypt_v2
            .expect("v2")
            .force_cookie
    );
    // Beside tls-crypt or tls-auth (each client uses one of them).
    let c = cfg("tls-crypt ta.key\ntls-crypt-v2 v2.key");
    assert!(c.tls_crypt.is_some() && c.tls_crypt_v2.is_some());
    let c = cfg("tls-auth ta.key 0\ntls-crypt-v2 v2.key");
    assert!(c.tls_auth.is_some() && c.tls_crypt_v2.is_some());
    // Inline.
    let c = cfg(
        "<tls-crypt-v2>\n-----BEGIN OpenVPN tls-crypt-v2 server key-----\nAAAA\n</tls-crypt-v2>",
    );
    assert!(matches!(
        c.tls_crypt_v2.expect("v2").key,
        Material::Inline(ref s) if s.starts_with("-----BEGIN OpenVPN tls-crypt-v2 server key")
    ));
    err("tls-crypt-v2 v2.key sometimes", "force-cookie");
    err("tls-crypt-v2", "1 or 2 parameters");
    err("tls-crypt-v2-max-age 30", "needs `tls-crypt-v2");
    err_line(
        "tls-crypt-v2 v2.key\ntls-crypt-v2-max-age 0",
        NEXT + 1,
        "days from 1",
    );
    err(
        "tls-crypt-v2-verify /usr/local/bin/check-key",
        "tls-crypt-v2-max-age",
    );
    // Not skippable: dropping the check would let clients in that the admin refused.
    err_line(
        "ignore-unknown-option tls-crypt-v2-verify\ntls-crypt-v2-verify /bin/check",
        NEXT + 1,
        "runs no script",
    );
}

#[test]
fn scripts() {
    let c = cfg(
        "script-security 2\nup \"/etc/openvpn/up.sh a 'b c'\"\nclient-connect /bin/cc\n\
         client-disconnect /bin/cd\nlearn-address /bin/la\nauth-user-pass-verify /bin/check via-file\n\
         down /bin/down\nroute-up /bin/ru\nwarren-script-timeout 5",
    );
    let s = &c.scripts;
    assert_eq!(s.security, 2);
    assert_eq!(s.timeout, std::time::Duration::from_secs(5));
    assert_eq!(
        s.up.as_ref().map(|u| u.argv.clone()),
        Some(vec![
            "/etc/openvpn/up.sh".to_owned(),
            "a".into(),
            "b c".into()
        ])
    );
    assert_eq!(s.up.as_ref().and_then(|u| u.location.line), Some(NEXT + 1));
    assert_eq!(
        s.auth_user_pass_verify
            .as_ref()
            .map(|(c, via)| (c.argv[0].as_str(), *via)),
        Some(("/bin/check", warren_config::AuthVia::File))
    );
    assert!(s.client_connect.is_some() && s.client_disconnect.is_some());
    assert!(s.learn_address.is_some() && s.down.is_some() && s.route_up.is_some());
    assert!(s.decide_logins());
    assert_eq!(cfg("").scripts, warren_config::Scripts::default());
    // script-security below 2 refuses the script's own line, wherever the level is set.
    err_line(
        "client-connect /bin/cc\nscript-security 1",
        NEXT,
        "`client-connect` cannot run with script-security 1 (set in the config)",
    );
    err("learn-address /bin/la", "add `script-security 2`");
    err("script-security 4", "expected 0, 1, 2 or 3");
    err(
        "auth-user-pass-verify /bin/x via-pipe",
        "via-env or via-file",
    );
    err("up", "1 parameter");
    err("warren-script-timeout 0", "1 to 3600");
    // A file shared with stock OpenVPN names warren's own directive first.
    let c = cfg("ignore-unknown-option warren-script-timeout\nwarren-script-timeout 7");
    assert_eq!(c.scripts.timeout, std::time::Duration::from_secs(7));
    // The old escape hatch still skips a script on purpose.
    let (c, w) = ok("ignore-unknown-option up\nup /bin/up");
    assert!(c.scripts.up.is_none());
    assert_eq!(w.len(), 1, "{w:?}");
}

#[test]
fn warren_access_lines_keep_their_order_and_location() {
    let c = cfg("warren-access alice allow 10.0.0.0/24\nwarren-access alice deny 0.0.0.0/0");
    assert_eq!(c.access.len(), 2);
    assert_eq!(
        (
            c.access[0].identity.as_str(),
            c.access[0].allow,
            c.access[0].rule.as_str()
        ),
        ("alice", true, "10.0.0.0/24")
    );
    assert!(!c.access[1].allow);
    assert_eq!(c.access[0].location.line, Some(NEXT));
    err("warren-access alice permit 10.0.0.0/24", "allow or deny");
    err("warren-access alice allow", "3 parameters");
}
