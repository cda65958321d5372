//! Client profile lowering.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use warren_config::{
    CertRole, ClientConfig, ClientProto, ConfigError, Material, PullFilterAction, Remote,
    ResolvRetry, Route, Warning, X509NameType, client_config_from_str, load_client_config,
};

const BASE: &str =
    "client\nremote vpn.example.org\nca ca.crt\ncert c.crt\nkey c.key\nremote-cert-tls server\n";
const NEXT: u32 = 7;

fn lower(text: &str) -> Result<(ClientConfig, Vec<Warning>), ConfigError> {
    client_config_from_str(text, "c.ovpn", Path::new("/nonexistent-warren-config-dir"))
}

fn ok(extra: &str) -> (ClientConfig, Vec<Warning>) {
    match lower(&format!("{BASE}{extra}\n")) {
        Ok(r) => r,
        Err(e) => panic!("`{extra}` should be accepted: {e}"),
    }
}

fn cfg(extra: &str) -> ClientConfig {
    ok(extra).0
}

fn err_line(extra: &str, line: u32, needle: &str) -> ConfigError {
    let e = match lower(&format!("{BASE}{extra}\n")) {
        Ok(_) => panic!("`{extra}` should be refused"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert_eq!(e.location().and_then(|l| l.line), Some(line), "{msg}");
    assert!(
        msg.contains(needle),
        "`{extra}`: expected {needle:?} in: {msg}"
    );
    e
}

fn err(extra: &str, needle: &str) -> ConfigError {
    err_line(extra, NEXT, needle)
}

#[test]
fn defaults() {
    let (c, w) = lower(BASE).expect("base");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        c.remotes,
        [Remote {
            host: "vpn.example.org".into(),
            port: 1194,
            proto: ClientProto::Udp,
            entry: Default::default(),
            proxy: None,
        }]
    );
    assert_eq!(c.proto, ClientProto::Udp);
    assert_eq!(c.dev, "tun");
    assert_eq!(c.cert, Some(Material::File("c.crt".into())));
    assert_eq!(c.remote_cert_tls, Some(CertRole::Server));
    assert_eq!(c.verb, 1);
    assert_eq!(c.auth_user_pass, None);
    assert_eq!(
        c.data_ciphers,
        ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]
    );
}

#[test]
fn remotes_take_port_and_proto_defaults() {
    let c = cfg(
        "port 443\nproto tcp\nremote backup.example.org 1195 udp\nremote third.example.org 8443",
    );
    assert_eq!(c.proto, ClientProto::TcpClient);
    let got: Vec<_> = c
        .remotes
        .iter()
        .map(|r| (r.host.as_str(), r.port, r.proto))
        .collect();
    assert_eq!(
        got,
        [
            ("vpn.example.org", 443, ClientProto::TcpClient),
            ("backup.example.org", 1195, ClientProto::Udp),
            ("third.example.org", 8443, ClientProto::TcpClient),
        ]
    );
    assert_eq!(cfg("rport 2000").remotes[0].port, 2000);
    let c = cfg("port 3000\nrport 2000");
    assert_eq!((c.remotes[0].port, c.lport), (2000, Some(3000)));
    let (c, w) = ok("lport 4000\nnobind");
    assert_eq!((c.remotes[0].port, c.lport), (1194, Some(4000)));
    assert!(w.iter().any(|w| w.directive == "nobind"), "{w:?}");
    assert!(cfg("remote-random").remote_random);
    err("remote h 0", "between 1 and 65535");
    err(
        "remote h 1194 sctp",
        "expected udp, udp4, udp6 or tcp-client",
    );
    err("remote h 1194 tcp-server", "tcp-client");
    err("remote", "takes 1 to 3 parameters");
    err("proto tcp-server", "tcp-client");
    assert_eq!(
        cfg("remote h 1194 tcp4").remotes.last().map(|r| r.proto),
        Some(ClientProto::Tcp4Client)
    );
    assert_eq!(
        cfg("remote h 1194 tcp6-client")
            .remotes
            .last()
            .map(|r| r.proto),
        Some(ClientProto::Tcp6Client)
    );
}

#[test]
fn client_pull_tls_client() {
    let text = BASE.replace("client\n", "pull\ntls-client\n");
    lower(&text).expect("pull + tls-client");
    let e = lower(&BASE.replace("client\n", "tls-client\n")).expect_err("p2p");
    assert!(e.to_string().contains("point-to-point"), "{e}");
    let e = lower(&BASE.replace("client\n", "")).expect_err("no client");
    assert!(
        matches!(
            e,
            ConfigError::Missing {
                directive: "client",
                ..
            }
        ),
        "{e}"
    );
    let e = lower(&BASE.replace("remote vpn.example.org\n", "")).expect_err("no remote");
    assert!(
        matches!(
            e,
            ConfigError::Missing {
                directive: "remote",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn credentials() {
    let text = BASE.replace("cert c.crt\nkey c.key\n", "auth-user-pass\n");
    let (c, _) = lower(&text).expect("password only");
    assert_eq!((c.cert, c.key, c.auth_user_pass), (None, None, Some(None)));
    assert_eq!(
        cfg("auth-user-pass creds.txt").auth_user_pass,
        Some(Some(Material::File("creds.txt".into())))
    );
    assert_eq!(
        cfg("<auth-user-pass>\nalice\nhunter2\n</auth-user-pass>").auth_user_pass,
        Some(Some(Material::Inline("alice\nhunter2\n".into())))
    );
    let e = lower(&BASE.replace("key c.key\n", "")).expect_err("cert without key");
    assert!(
        matches!(
            e,
            ConfigError::Missing {
                directive: "key",
                ..
            }
        ),
        "{e}"
    );
    let e = lower(&BASE.replace("cert c.crt\nkey c.key\n", "")).expect_err("nothing");
    assert!(
        matches!(
            e,
            ConfigError::Missing {
                directive: "cert",
                ..
            }
        ),
        "{e}"
    );
    err("auth-user-pass a b", "takes 0 or 1 parameters");
}

#[test]
fn server_identity_checks() {
    let text = BASE.replace("remote-cert-tls server\n", "");
    let (_, w) = lower(&text).expect("no check");
    assert!(
        w.iter()
            .any(|w| w.directive == "remote-cert-tls" && w.message.contains("impersonate")),
        "{w:?}"
    );
    let (c, w) = lower(&(text + "verify-x509-name server name\n")).expect("x509 name");
    assert!(w.is_empty());
    assert_eq!(
        c.verify_x509_name,
        Some(("server".into(), X509NameType::Name))
    );
    assert_eq!(
        cfg("verify-x509-name 'C=DE, CN=vpn'").verify_x509_name,
        Some(("C=DE, CN=vpn".into(), X509NameType::Subject))
    );
    assert_eq!(
        cfg("verify-x509-name vpn- name-prefix")
            .verify_x509_name
            .map(|v| v.1),
        Some(X509NameType::NamePrefix)
    );
    err(
        "verify-x509-name x cn",
        "expected subject, name or name-prefix",
    );
}

#[test]
fn routing_and_dns() {
    let c = cfg(
        "redirect-gateway def1 bypass-dhcp\nroute-nopull\nroute 192.168.1.0 255.255.255.0\n\
         route 10.0.0.0 255.0.0.0 vpn_gateway 5\nroute host.example.org\ndhcp-option DNS 10.8.0.1\n\
         dhcp-option DISABLE-NBT\npull-filter ignore \"route \"\npull-filter accept redirect",
    );
    assert_eq!(
        c.redirect_gateway,
        Some(vec!["def1".into(), "bypass-dhcp".into()])
    );
    assert!(c.route_nopull);
    assert_eq!(
        c.routes,
        [
            Route {
                network: "192.168.1.0".into(),
                netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
                gateway: None,
                metric: None
            },
            Route {
                network: "10.0.0.0".into(),
                netmask: Some(Ipv4Addr::new(255, 0, 0, 0)),
                gateway: Some("vpn_gateway".into()),
                metric: Some(5)
            },
            Route {
                network: "host.example.org".into(),
                netmask: None,
                gateway: None,
                metric: None
            },
        ]
    );
    assert_eq!(
        c.dhcp_options,
        [
            ("DNS".into(), "10.8.0.1".into()),
            ("DISABLE-NBT".into(), String::new())
        ]
    );
    assert_eq!(
        c.pull_filters,
        [
            (PullFilterAction::Ignore, "route ".into()),
            (PullFilterAction::Accept, "redirect".into())
        ]
    );
    assert_eq!(cfg("redirect-gateway").redirect_gateway, Some(vec![]));
    err("redirect-gateway everything", "expected local, autolocal");
    err("route 10.0.0.0 255.0.0", "dotted-quad");
    err("route 10.0.0.0 255.0.0.0 default x", "\"x\"");
    err(
        "pull-filter drop route",
        "expected accept, ignore or reject",
    );
    err("redirect-private def1", "outside the tunnel");
    err("http-proxy proxy 8080", "`http-proxy` needs TCP");
}

#[test]
fn offload_extension() {
    assert!(cfg("").offload);
    assert!(!cfg("warren-offload off").offload);
    err("warren-offload maybe", "expected `on` or `off`");
}

#[test]
fn kill_switch_extension() {
    assert!(!cfg("").kill_switch);
    assert!(cfg("warren-kill-switch on").kill_switch);
    assert!(!cfg("warren-kill-switch on\nwarren-kill-switch off").kill_switch);
    err("warren-kill-switch yes", "expected `on` or `off`");
    err("warren-kill-switch", "1 parameter");
}

#[test]
fn misc_client_directives() {
    let c = cfg(
        "nobind\nresolv-retry infinite\npersist-key\npersist-tun\nmute-replay-warnings\nverb 3\n\
                 explicit-exit-notify 2\nreneg-sec 0\ntls-version-min 1.3",
    );
    assert!(c.nobind && c.persist_key && c.persist_tun && c.mute_replay_warnings);
    assert_eq!(c.resolv_retry, Some(ResolvRetry::Infinite));
    assert_eq!(c.verb, 3);
    assert_eq!(c.explicit_exit_notify, Some(2));
    assert_eq!(c.reneg_sec, Some(0));
    assert_eq!(
        cfg("resolv-retry 30").resolv_retry,
        Some(ResolvRetry::Seconds(30))
    );
    err("resolv-retry forever", "\"forever\"");
    err("nobind 1", "takes no parameters");
}

/// Issue 10: the client drops privileges after the tunnel is up.
#[test]
fn user_and_group() {
    let (c, w) = ok("user nobody\ngroup nogroup");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.user.as_deref(), Some("nobody"));
    assert_eq!(c.group.as_deref(), Some("nogroup"));
    let (c, _) = ok("");
    assert_eq!((c.user, c.group), (None, None));
    err("user", "1 parameter");
}

#[test]
fn harmless_client_directives_warn() {
    for l in ["mute 10", "auth-nocache", "float"] {
        let (_, w) = ok(l);
        assert_eq!(w.len(), 1, "{l}: {w:?}");
        assert_eq!(w[0].location.line, Some(NEXT));
        assert!(w[0].message.starts_with("ignored"), "{}", w[0]);
    }
}

#[test]
fn server_directives_refused_in_client() {
    err("server 10.8.0.0 255.255.255.0", "server directive");
    err("push \"route 1.2.3.0 255.255.255.0\"", "server directive");
    err("duplicate-cn", "server directive");
    err(
        "up /etc/openvpn/update-resolv-conf",
        "add `script-security 2`",
    );
    err(
        "client-connect /bin/cc\nscript-security 2",
        "server directive",
    );
    let c = cfg("script-security 2\nup /bin/up\ndown /bin/down\nroute-up /bin/ru");
    assert!(c.scripts.up.is_some() && c.scripts.down.is_some() && c.scripts.route_up.is_some());
    // The documented escape hatch for scripts.
    let (_, w) = ok(
        "ignore-unknown-option up down\nup /etc/openvpn/update-resolv-conf\ndown /etc/openvpn/update-resolv-conf",
    );
    assert_eq!(w.len(), 2);
    // Windows-only, commonly wrapped in `setenv opt`.
    let (_, w) = ok("setenv opt block-outside-dns");
    assert_eq!(w.len(), 1);
    err("remot vpn2.example.org", "did you mean `remote`?");
}

#[test]
fn fact_sheet_12_2_client_conf() {
    let text = r#"client                                  # = pull + tls-client
dev tun
proto udp
remote <server> 1194
nobind
ca ca.crt
cert client.crt
key client.key
remote-cert-tls server
tls-crypt ta.key
explicit-exit-notify 1
verb 4
"#;
    let (c, w) = lower(text).expect("fact sheet client");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.remotes[0].host, "<server>");
    assert_eq!(c.remotes[0].port, 1194);
    assert!(c.nobind);
    assert_eq!(c.tls_crypt, Some(Material::File("ta.key".into())));
    assert_eq!(c.verb, 4);
}

#[test]
fn openvpn_lab_client_conf() {
    let path = Path::new("/work/shared/tools/openvpn-lab/client.conf");
    if !path.exists() {
        return;
    }
    let (c, w) = load_client_config(path).expect("lab client.conf");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.remotes[0].host, "127.0.0.1");
    assert_eq!(c.remotes[0].port, 11941);
    assert_eq!(c.dev, "tuncli");
    assert_eq!(c.reneg_sec, Some(15));
}

#[test]
fn inline_profile() {
    let text = "client\nremote vpn.example.org 1194 udp\nkey-direction 1\n<ca>\nCA\n</ca>\n<cert>\nCERT\n</cert>\n\
                <key>\nKEY\n</key>\n<tls-auth>\nTA\n</tls-auth>\nremote-cert-tls server\nauth SHA256\n";
    let (c, _) = lower(text).expect("inline profile");
    assert_eq!(c.ca, Material::Inline("CA\n".into()));
    assert_eq!(c.tls_auth, Some((Material::Inline("TA\n".into()), Some(1))));
    assert_eq!(c.auth.as_deref(), Some("SHA256"));
}

proptest::proptest! {
    #[test]
    fn client_lowering_never_panics(s in "\\PC*") {
        let _ = lower(&s);
    }
}

#[test]
fn server_extensions_are_refused() {
    for d in [
        "warren-state-dir /x",
        "warren-auth cert",
        "warren-workers 2",
        "warren-max-half-open 100",
        "warren-max-half-open-per-source 4",
    ] {
        err(d, "this is a server directive");
        // Skipped on purpose, like any not-implemented directive.
        let name = d.split(' ').next().expect("name");
        let (_, w) = ok(&format!("ignore-unknown-option {name}\n{d}"));
        assert!(w.iter().any(|w| w.directive == name), "{w:?}");
    }
}

#[test]
fn debug_redacts_credentials_and_keys() {
    let text = BASE.replace("key c.key\n", "")
        + "<key>\nSECRETKEYBYTES\n</key>\n<auth-user-pass>\nalice\nhunter2pass\n</auth-user-pass>\n\
           <tls-auth>\nSTATICKEYBYTES\n</tls-auth>\nkey-direction 1\n";
    let (c, _) = lower(&text).expect("inline secrets");
    let dbg = format!("{c:?}");
    for secret in ["SECRETKEYBYTES", "hunter2pass", "alice", "STATICKEYBYTES"] {
        assert!(!dbg.contains(secret), "{secret} in {dbg}");
    }
}

#[test]
fn tls_knobs_in_a_client_profile() {
    use warren_config::TlsCipherSuite as S;
    use warren_config::TlsGroup::{P256, P384, X25519};
    // angristan/openvpn-install's client template (ECDSA defaults).
    let (c, w) = ok("tls-client\n\
         tls-version-min 1.2\n\
         tls-cipher TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256\n\
         tls-ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256\n\
         tls-groups X25519:prime256v1:secp384r1:secp521r1\n\
         verify-x509-name server_abc name\n\
         auth SHA256\n\
         auth-nocache\n\
         ignore-unknown-option block-outside-dns\n\
         setenv opt block-outside-dns");
    assert_eq!(c.tls_cipher, Some(vec![S::EcdheEcdsaAes128GcmSha256]));
    assert_eq!(
        c.tls_ciphersuites.as_ref().map(Vec::len),
        Some(3),
        "{:?}",
        c.tls_ciphersuites
    );
    assert_eq!(c.tls_groups, Some(vec![X25519, P256, P384]));
    assert_eq!(
        c.verify_x509_name,
        Some(("server_abc".into(), X509NameType::Name))
    );
    assert!(w.iter().any(|w| w.directive == "tls-groups"
        && w.location.line == Some(NEXT + 4)
        && w.message.contains("secp521r1")));
    assert_eq!(cfg("ecdh-curve secp384r1").tls_groups, Some(vec![P384]));
    err("tls-groups brainpool", "unknown group");
    err_line(
        "tls-version-min 1.2\ntls-cipher TLS-RSA-WITH-AES-128-CBC-SHA",
        NEXT + 1,
        "no suite in the list is available",
    );
    err(
        "tls-ciphersuites TLS_AES_128_CCM_8_SHA256",
        "no usable suite left",
    );
}

#[test]
fn deprecated_and_everyday_client_directives() {
    // ns-cert-type server: the same check as remote-cert-tls server, with a warning.
    let (c, w) = lower(
        "client\nremote vpn.example.org\nca ca.crt\ncert c.crt\nkey c.key\nns-cert-type server\n",
    )
    .expect("ns-cert-type");
    assert_eq!(c.remote_cert_tls, Some(CertRole::Server));
    assert!(w.iter().any(|w| w.directive == "ns-cert-type"
        && w.location.line == Some(6)
        && w.message.contains("deprecated")));
    err("ns-cert-type", "takes 1 parameter");
    let (c, w) = ok("resolv-retry infinite\n\
         push-peer-info\n\
         mute 20\n\
         mute-replay-warnings\n\
         persist-key\n\
         persist-tun\n\
         ncp-ciphers AES-128-GCM:AES-256-GCM\n\
         sndbuf 0\n\
         rcvbuf 0\n\
         txqueuelen 1000\n\
         status-version 2\n\
         replay-window 64 15\n\
         hash-size 256 256\n\
         setenv CLIENT_CERT 0\n\
         ignore-unknown-option a b c\n\
         a\nb 1\nc 2 3");
    assert_eq!(c.resolv_retry, Some(ResolvRetry::Infinite));
    assert_eq!(c.data_ciphers, ["AES-128-GCM", "AES-256-GCM"]);
    assert_eq!((c.sndbuf, c.rcvbuf), (Some(0), Some(0)));
    assert!(c.mute_replay_warnings && c.persist_key && c.persist_tun);
    assert!(w.iter().all(|w| w.directive != "replay-window"), "{w:?}");
    // Bad values name their line.
    err_line(
        "persist-key\nmute-replay-warnings 1",
        NEXT + 1,
        "mute-replay-warnings",
    );
    err("replay-window -1", "non-negative whole number");
    err("ncp-ciphers BF-CBC", "not supported");
    // `dh` (file, none or inline) is ignored by a client, with a warning, as in OpenVPN.
    for d in [
        "dh dh.pem",
        "dh none",
        "<dh>\n-----BEGIN DH PARAMETERS-----\n</dh>",
    ] {
        let (_, w) = ok(d);
        assert!(
            w.iter()
                .any(|w| w.directive == "dh" && w.location.line == Some(NEXT)),
            "{d}: {w:?}"
        );
    }
}

#[test]
fn crl_verify() {
    assert_eq!(cfg("").crl_verify, None);
    let c = cfg("crl-verify crl.pem");
    let (m, loc) = c.crl_verify.expect("crl-verify");
    assert_eq!(m, Material::File(PathBuf::from("crl.pem")));
    assert_eq!(loc.line, Some(NEXT));
    assert_eq!(&*loc.file, "c.ovpn");
    // The last one wins, as in OpenVPN.
    let c = cfg("crl-verify a.pem\ncrl-verify /etc/openvpn/crl.pem");
    assert_eq!(
        c.crl_verify.map(|(m, l)| (m, l.line)),
        Some((
            Material::File(PathBuf::from("/etc/openvpn/crl.pem")),
            Some(NEXT + 1)
        ))
    );
    let c =
        cfg("<crl-verify>\n-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n</crl-verify>");
    assert!(
        matches!(&c.crl_verify, Some((Material::Inline(t), _)) if t.contains("BEGIN X509 CRL")),
        "{:?}",
        c.crl_verify
    );
    // The directory form is refused with the line and the way out, strictly (an ignored
    // check would accept a revoked server).
    let e = err("crl-verify /etc/openvpn/crl dir", "servers only");
    assert!(e.to_string().contains("crl-verify crl.pem"), "{e}");
    err("crl-verify crl.pem file", "only second parameter is `dir`");
    err("crl-verify", "1 or 2 parameters");
}

#[test]
fn ipv6_client_directives() {
    let c = cfg("");
    assert!(!c.block_ipv6 && c.ifconfig_ipv6.is_none() && c.route_ipv6.is_empty());
    let c = cfg(
        "block-ipv6\nifconfig-ipv6 fd00:8::99/64 fd00:8::1\nroute-ipv6 fd00:99::/64\nredirect-gateway ipv6 !ipv4",
    );
    assert!(c.block_ipv6);
    let (p, remote) = c.ifconfig_ipv6.expect("ifconfig-ipv6");
    assert_eq!(
        (p.to_string(), remote.to_string()),
        ("fd00:8::99/64".into(), "fd00:8::1".into())
    );
    assert_eq!(c.route_ipv6[0].network.to_string(), "fd00:99::/64");
    assert_eq!(
        c.redirect_gateway,
        Some(vec!["ipv6".to_string(), "!ipv4".to_string()])
    );
    err("block-ipv6 yes", "no parameters");
    err(
        "ifconfig-ipv6 fd00:8::99 fd00:8::1/64",
        "expected an IPv6 address",
    );
    err("route-ipv6 fd00:99::/64 fd00::1 x", "whole number");
    err("server-ipv6 fd00:8::/64", "server directive");
}

#[test]
fn tls_crypt_v2() {
    let (c, w) = ok("tls-crypt-v2 client-v2.key");
    assert!(w.is_empty(), "{w:?}");
    let v2 = c.tls_crypt_v2.expect("tls-crypt-v2");
    assert_eq!(v2.key, Material::File(PathBuf::from("client-v2.key")));
    assert_eq!(v2.location.line, Some(NEXT));
    let c = cfg(
        "<tls-crypt-v2>\n-----BEGIN OpenVPN tls-crypt-v2 client key-----\nAAAA\n</tls-crypt-v2>",
    );
    assert!(matches!(
        c.tls_crypt_v2.expect("v2").key,
        Material::Inline(_)
    ));
    // One wrapping per client (OpenVPN options.c: mutually exclusive in client mode).
    err(
        "tls-crypt-v2 c.key\ntls-crypt ta.key",
        "keep `tls-crypt-v2`",
    );
    err_line(
        "tls-auth ta.key 1\ntls-crypt-v2 c.key",
        NEXT + 1,
        "one of `tls-crypt-v2`",
    );
    let (_, w) = ok("tls-crypt-v2 c.key force-cookie");
    assert!(w.iter().any(|w| w.directive == "tls-crypt-v2"), "{w:?}");
    err("tls-crypt-v2-max-age 3", "server directive");
    err("tls-crypt-v2-verify /bin/true", "server directive");
    err_line(
        "<connection>\nremote a.example.org\ntls-crypt-v2 c.key\n</connection>",
        NEXT + 2,
        "per-connection `tls-crypt-v2`",
    );
}
