//! The zero-config server (`warren server` without `--config`) as the config
//! file it stands for.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ConfigError, Location, Warning};
use crate::lex::{Directive, Span, Spanned};
use crate::server::{ServerConfig, lower_server};
use crate::types::{Proto, UserAuth};

/// What the zero-config server is called in errors and in
/// [`ServerConfig::source`].
pub const ZERO_CONFIG_ORIGIN: &str = "warren server";

/// The choices of `warren server` without `--config`: the state directory's
/// files and the command-line options.
///
/// [`ZeroConfig::lower`] writes them as the directives of an equivalent
/// `server.conf` and lowers those like a file, so both ways in share every
/// default and every check. Beyond the options it sets what OpenVPN's sample
/// server.conf does: `topology subnet`, `keepalive 10 120`,
/// `explicit-exit-notify`, `verb 3`, and `remote-cert-tls client` unless
/// clients authenticate by password only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZeroConfig {
    /// The state directory (`warren-state-dir`), then its CA certificate,
    /// server certificate and key, and tls-crypt key.
    pub state_dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub tls_crypt: PathBuf,
    /// The options `--auth`, `--port`, `--proto`, `--listen`, `--network`
    /// (host bits are dropped with a warning), `--dev`, `--push`,
    /// `--client-to-client`, `--max-clients` (0 counts as 1) and `--status`
    /// (a version 2 file, rewritten every 60 seconds).
    pub auth: UserAuth,
    pub port: u16,
    pub proto: Proto,
    /// `--tcp PORT`: a TCP listener next to the UDP socket.
    pub tcp: Option<u16>,
    pub listen: Option<IpAddr>,
    pub network: (Ipv4Addr, u8),
    /// IPv6 inside the tunnel (`server-ipv6`): the CLI derives a unique local
    /// /64 from the state directory, so it stays the same across restarts.
    /// `None`: IPv4 only.
    pub network6: Option<(Ipv6Addr, u8)>,
    pub dev: String,
    pub push: Vec<String>,
    pub client_to_client: bool,
    pub max_clients: u32,
    pub status: Option<PathBuf>,
    /// `--full-tunnel`: push `redirect-gateway def1` (all the clients'
    /// traffic through the tunnel) and turn NAT on unless `nat` says off.
    pub full_tunnel: bool,
    /// `--dns ADDR`: pushed as `dhcp-option DNS` (`DNS6` for IPv6).
    pub dns: Vec<IpAddr>,
    /// `--nat on|off` (`warren-nat`); `None`: on with `full_tunnel`, else off.
    pub nat: Option<bool>,
    /// `--nat-uplink DEV`: the device to masquerade out of.
    pub nat_uplink: Option<String>,
    /// `--metrics ADDR` (`warren-metrics`): the Prometheus endpoint.
    pub metrics: Option<String>,
}

/// Builds directives that stand for command-line options: no line number, the
/// option in place of a file name.
struct Synth {
    out: Vec<Directive>,
    fixed: Arc<str>,
}

impl Synth {
    fn add(&mut self, from: Option<String>, name: &str, args: &[&str]) {
        let at = Span { line: 0, column: 0 };
        self.out.push(Directive {
            name: Spanned {
                value: name.to_owned(),
                span: at,
            },
            args: args
                .iter()
                .map(|a| Spanned {
                    value: (*a).to_owned(),
                    span: at,
                })
                .collect(),
            inline: None,
            line: 0,
            file: from.map_or_else(|| Arc::clone(&self.fixed), Arc::from),
        });
    }
}

fn flag_error(flag: String, directive: &str, value: &str, reason: &'static str) -> ConfigError {
    ConfigError::InvalidValue {
        location: Location {
            file: Arc::from(flag),
            line: None,
        },
        directive: directive.to_owned(),
        value: value.to_owned(),
        reason: Cow::Borrowed(reason),
    }
}

fn path_str<'a>(p: &'a Path, what: &str) -> Result<&'a str, ConfigError> {
    p.to_str().ok_or_else(|| {
        flag_error(
            what.to_owned(),
            what,
            &p.to_string_lossy(),
            "the path is not valid UTF-8",
        )
    })
}

impl ZeroConfig {
    /// The server config these choices stand for, and warnings for the admin.
    pub fn lower(&self) -> Result<(ServerConfig, Vec<Warning>), ConfigError> {
        let mut s = Synth {
            out: Vec::new(),
            fixed: Arc::from(ZERO_CONFIG_ORIGIN),
        };
        let mut warnings = Vec::new();

        let port = self.port.to_string();
        s.add(Some(format!("--port {port}")), "port", &[&port]);
        let proto = match self.proto {
            Proto::Udp => "udp",
            Proto::Udp4 => "udp4",
            Proto::Udp6 => "udp6",
            Proto::TcpServer => "tcp-server",
            Proto::Tcp4Server => "tcp4-server",
            Proto::Tcp6Server => "tcp6-server",
        };
        s.add(Some(format!("--proto {proto}")), "proto", &[proto]);
        if let Some(p) = self.tcp {
            let p = p.to_string();
            s.add(Some(format!("--tcp {p}")), "warren-listen", &["tcp", &p]);
        }
        if let Some(ip) = self.listen {
            let ip = ip.to_string();
            s.add(Some(format!("--listen {ip}")), "local", &[&ip]);
        }
        s.add(Some(format!("--dev {}", self.dev)), "dev", &[&self.dev]);
        s.add(None, "dev-type", &["tun"]);

        let (addr, prefix) = self.network;
        let flag = format!("--network {addr}/{prefix}");
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0);
        let net = Ipv4Addr::from(u32::from(addr) & mask);
        if net != addr {
            warnings.push(Warning {
                location: Location {
                    file: Arc::from(flag.as_str()),
                    line: None,
                },
                directive: "server".into(),
                message: format!("using the network {net}/{prefix}").into(),
            });
        }
        let (net, mask) = (net.to_string(), Ipv4Addr::from(mask).to_string());
        s.add(Some(flag), "server", &[&net, &mask]);
        if let Some((addr, len)) = self.network6 {
            let p = format!("{addr}/{len}");
            let from = format!("--state-dir {} (IPv6 prefix)", self.state_dir.display());
            s.add(Some(from), "server-ipv6", &[&p]);
        }
        s.add(None, "topology", &["subnet"]);

        for p in &self.push {
            // Options travel comma-separated in PUSH_REPLY (OpenVPN push.c),
            // so one cannot hold a comma.
            let flag = format!("--push {p:?}");
            if p.contains(',') || p.chars().any(char::is_control) || p.contains('"') {
                return Err(flag_error(
                    flag,
                    "push",
                    p,
                    "an option cannot contain commas, quotes or control characters",
                ));
            }
            s.add(Some(flag), "push", &[p]);
        }
        if self.full_tunnel {
            // What OpenVPN's sample server.conf suggests for "all traffic through
            // the VPN": def1 overrides the default route without deleting it.
            s.add(
                Some("--full-tunnel".into()),
                "push",
                &["redirect-gateway def1"],
            );
        }
        for ip in &self.dns {
            let (opt, flag) = match ip {
                IpAddr::V4(_) => (format!("dhcp-option DNS {ip}"), format!("--dns {ip}")),
                IpAddr::V6(_) => (format!("dhcp-option DNS6 {ip}"), format!("--dns {ip}")),
            };
            s.add(Some(flag), "push", &[&opt]);
        }
        let nat = self.nat.unwrap_or(self.full_tunnel);
        let nat_flag = match self.nat {
            Some(true) => "--nat on",
            Some(false) => "--nat off",
            None => "--full-tunnel",
        };
        match (nat, &self.nat_uplink) {
            (true, None) => s.add(Some(nat_flag.into()), "warren-nat", &["on"]),
            (true, Some(dev)) => s.add(
                Some(format!("--nat-uplink {dev}")),
                "warren-nat",
                &["on", dev],
            ),
            (false, Some(dev)) => {
                return Err(flag_error(
                    format!("--nat-uplink {dev}"),
                    "warren-nat",
                    dev,
                    "NAT is off: add --nat on (or --full-tunnel)",
                ));
            }
            (false, None) if self.nat.is_some() => {
                s.add(Some(nat_flag.into()), "warren-nat", &["off"]);
            }
            (false, None) => {}
        }
        if self.client_to_client {
            s.add(Some("--client-to-client".into()), "client-to-client", &[]);
        }
        if let Some(addr) = &self.metrics {
            s.add(Some(format!("--metrics {addr}")), "warren-metrics", &[addr]);
        }
        let max = self.max_clients.clamp(1, 0x00FF_FFFE).to_string();
        s.add(Some(format!("--max-clients {max}")), "max-clients", &[&max]);
        if let Some(path) = &self.status {
            let p = path_str(path, "--status")?;
            s.add(Some(format!("--status {p}")), "status", &[p, "60"]);
            s.add(None, "status-version", &["2"]);
        }
        s.add(None, "keepalive", &["10", "120"]);
        s.add(None, "explicit-exit-notify", &[]);
        s.add(None, "verb", &["3"]);

        let from_state = |what| Some(format!("--state-dir {} ({what})", self.state_dir.display()));
        for (name, path) in [
            ("ca", &self.ca),
            ("cert", &self.cert),
            ("key", &self.key),
            ("tls-crypt", &self.tls_crypt),
        ] {
            s.add(from_state(name), name, &[path_str(path, "--state-dir")?]);
        }
        let dir = path_str(&self.state_dir, "--state-dir")?;
        s.add(from_state("users"), "warren-state-dir", &[dir]);
        let auth = self.auth.as_str();
        s.add(Some(format!("--auth {auth}")), "warren-auth", &[auth]);
        if self.auth != UserAuth::Password {
            s.add(
                Some(format!("--auth {auth}")),
                "remote-cert-tls",
                &["client"],
            );
        }

        let (cfg, more) = lower_server(&s.out, ZERO_CONFIG_ORIGIN, Path::new("."))?;
        warnings.extend(more);
        Ok((cfg, warnings))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::types::{NatConfig, StateDir, VerifyClientCert};
    use crate::{CertRole, Material, server_config_from_str};

    fn zero() -> ZeroConfig {
        let dir = PathBuf::from("/nonexistent-warren/state");
        ZeroConfig {
            ca: dir.join("pki/ca.crt"),
            cert: dir.join("pki/server.crt"),
            key: dir.join("pki/server.key"),
            tls_crypt: dir.join("tls-crypt.key"),
            state_dir: dir,
            auth: UserAuth::Cert,
            port: 1194,
            proto: Proto::Udp,
            tcp: None,
            listen: None,
            network: (Ipv4Addr::new(10, 8, 0, 0), 24),
            network6: None,
            dev: "tun".into(),
            push: Vec::new(),
            client_to_client: false,
            max_clients: 1024,
            status: None,
            full_tunnel: false,
            dns: Vec::new(),
            nat: None,
            nat_uplink: None,
            metrics: None,
        }
    }

    /// The file an admin would write for `zero()`.
    const EQUIVALENT: &str = "port 1194\nproto udp\ndev tun\ndev-type tun\n\
        server 10.8.0.0 255.255.255.0\ntopology subnet\nmax-clients 1024\nkeepalive 10 120\n\
        explicit-exit-notify\nverb 3\nca /nonexistent-warren/state/pki/ca.crt\n\
        cert /nonexistent-warren/state/pki/server.crt\nkey /nonexistent-warren/state/pki/server.key\n\
        tls-crypt /nonexistent-warren/state/tls-crypt.key\n\
        warren-state-dir /nonexistent-warren/state\nwarren-auth cert\nremote-cert-tls client\n";

    #[test]
    fn zero_config_is_the_equivalent_file() {
        let (z, w) = zero().lower().expect("zero-config");
        assert!(w.is_empty(), "{w:?}");
        let (f, w) =
            server_config_from_str(EQUIVALENT, ZERO_CONFIG_ORIGIN, Path::new(".")).expect("file");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(z, f);
        assert_eq!(z.session(), f.session());
    }

    #[test]
    fn zero_config_ipv6_is_server_ipv6() {
        let mut z = zero();
        z.network6 = Some(("fd12:3456:789a::".parse().expect("ip"), 64));
        let (c, w) = z.lower().expect("zero-config");
        assert!(w.is_empty(), "{w:?}");
        let text = EQUIVALENT.replace(
            "topology subnet\n",
            "server-ipv6 fd12:3456:789a::/64\ntopology subnet\n",
        );
        let (f, _) =
            server_config_from_str(&text, ZERO_CONFIG_ORIGIN, Path::new(".")).expect("file");
        assert_eq!(c, f);
        let v6 = c.ipv6().expect("IPv6");
        assert_eq!(v6.local.to_string(), "fd12:3456:789a::1/64");
    }

    #[test]
    fn zero_config_options() {
        let (c, _) = zero().lower().expect("zero-config");
        assert_eq!((c.verb, c.remote_cert_tls), (3, Some(CertRole::Client)));
        let tc = "/nonexistent-warren/state/tls-crypt.key";
        assert_eq!(c.tls_crypt, Some(Material::File(tc.into())));
        let state = StateDir {
            dir: "/nonexistent-warren/state".into(),
            auth: UserAuth::Cert,
        };
        assert_eq!(c.state, Some(state));
        let mut z = zero();
        z.auth = UserAuth::Password;
        z.status = Some("/run/w.status".into());
        z.client_to_client = true;
        z.max_clients = 0;
        z.listen = Some("192.0.2.1".parse().expect("ip"));
        z.proto = Proto::Udp4;
        let (c, _) = z.lower().expect("zero-config");
        assert_eq!(
            (c.remote_cert_tls, c.client_cert()),
            (None, VerifyClientCert::None)
        );
        let status = Some((Path::new("/run/w.status"), Duration::from_secs(60)));
        assert_eq!((c.status_file(), c.status_version), (status, 2));
        assert_eq!((c.client_to_client, c.client_limit()), (true, 1));
        assert_eq!(
            (c.local.as_deref(), c.proto),
            (Some("192.0.2.1"), Proto::Udp4)
        );
    }

    #[test]
    fn metrics_flag_is_the_warren_metrics_directive() {
        let mut z = zero();
        assert_eq!(z.lower().expect("ok").0.metrics, None);
        z.metrics = Some("127.0.0.1:9586".into());
        assert_eq!(
            z.lower().expect("ok").0.metrics,
            Some("127.0.0.1:9586".parse().expect("addr"))
        );
        z.metrics = Some("nowhere".into());
        let e = z.lower().expect_err("a bad address").to_string();
        assert!(e.starts_with("--metrics nowhere: "), "{e}");
    }

    #[test]
    fn full_tunnel_pushes_the_gateway_and_dns_and_turns_nat_on() {
        let (c, _) = zero().lower().expect("zero-config");
        assert_eq!((c.nat, c.push.len()), (None, 0), "split tunnel by default");
        let mut z = zero();
        z.full_tunnel = true;
        z.dns = vec![
            "192.0.2.53".parse().expect("ip"),
            "2001:db8::53".parse().expect("ip"),
        ];
        let (c, _) = z.lower().expect("zero-config");
        assert_eq!(
            c.push,
            [
                "redirect-gateway def1",
                "dhcp-option DNS 192.0.2.53",
                "dhcp-option DNS6 2001:db8::53"
            ]
        );
        assert_eq!(c.nat, Some(NatConfig::default()));
        // The same as the file an admin would write.
        let text = format!(
            "{EQUIVALENT}push \"redirect-gateway def1\"\npush \"dhcp-option DNS 192.0.2.53\"\n\
             push \"dhcp-option DNS6 2001:db8::53\"\nwarren-nat on\n"
        );
        let (f, _) =
            server_config_from_str(&text, ZERO_CONFIG_ORIGIN, Path::new(".")).expect("file");
        assert_eq!(c, f);

        z.nat = Some(false);
        let (c, _) = z.lower().expect("zero-config");
        assert_eq!(
            (c.nat, c.push.len()),
            (None, 3),
            "--nat off keeps the pushes"
        );
        z.nat_uplink = Some("eth1".into());
        let e = z.lower().expect_err("uplink without NAT").to_string();
        assert!(e.starts_with("--nat-uplink eth1: "), "{e}");
        let mut z = zero();
        z.nat = Some(true);
        z.nat_uplink = Some("eth1".into());
        let (c, _) = z.lower().expect("zero-config");
        let on = NatConfig {
            uplink: Some("eth1".into()),
        };
        assert_eq!((c.nat, c.push.len()), (Some(on), 0));
    }

    #[test]
    fn zero_config_errors_name_the_option() {
        let mut z = zero();
        z.network = (Ipv4Addr::new(10, 8, 0, 5), 24);
        let (c, w) = z.lower().expect("host bits are dropped");
        assert_eq!(c.server.0, Ipv4Addr::new(10, 8, 0, 0));
        assert_eq!(
            w[0].to_string(),
            "--network 10.8.0.5/24: `server`: using the network 10.8.0.0/24"
        );
        for (push, msg) in [
            (
                "",
                "--push \"\": `push`: invalid value \"\": nothing to push",
            ),
            ("  ", "nothing to push"),
            ("route a,b", "cannot contain commas"),
            ("x\ny", "cannot contain commas"),
            ("say \"hi\"", "cannot contain commas"),
        ] {
            let mut z = zero();
            z.push = vec![push.into()];
            let e = z.lower().expect_err(push).to_string();
            assert!(e.contains(msg), "{push:?}: {e}");
        }
        let mut z = zero();
        z.dev = "averyveryverylongname".into();
        let e = z.lower().expect_err("long name").to_string();
        assert!(
            e.starts_with("--dev averyveryverylongname: `dev`: invalid value"),
            "{e}"
        );
        let mut z = zero();
        z.network = (Ipv4Addr::new(10, 8, 0, 0), 30);
        let e = z.lower().expect_err("/30").to_string();
        assert!(e.starts_with("--network 10.8.0.0/30: `server`"), "{e}");
    }
}
