//! Client proxies: `http-proxy`, `http-proxy-option`, `http-proxy-user-pass` and
//! `socks-proxy`, as OpenVPN 2.6 reads them (options.c "http-proxy", "socks-proxy",
//! options_postprocess_verify_ce; proxy.c, socks.c; openvpn-ops.md §5.3–5.4).
//!
//! * Per connection entry, like `proto`: written before the first `<connection>` block
//!   they are the default of every entry, inside a block they override it.
//! * `http-proxy HOST PORT [AUTHFILE|stdin [basic|none]]`: an AUTHFILE (a username line
//!   and a password line) or `stdin` means Basic authentication (OpenVPN's default method
//!   when a file is given). `auto`, `auto-nct` and `ntlm`/`ntlm2` are refused: warren
//!   speaks Basic only, and says what to write instead.
//! * `http-proxy-user-pass FILE` or an inline `<http-proxy-user-pass>` block replaces the
//!   AUTHFILE of every HTTP proxy (OpenVPN `auth_file_up`); top level only, as in
//!   OpenVPN.
//! * `http-proxy-option VERSION 1.0|1.1 | AGENT STRING | CUSTOM-HEADER NAME [CONTENT]`
//!   (`EXT1`/`EXT2` are old names of `CUSTOM-HEADER`; at most 10 headers).
//! * `socks-proxy HOST [PORT [AUTHFILE|stdin]]`, PORT 1080 by default; with AUTHFILE the
//!   RFC 1929 username/password method.
//! * Both need `proto tcp-client` here: OpenVPN refuses `http-proxy` over UDP, and
//!   warren does not implement SOCKS UDP ASSOCIATE.

use crate::error::{ConfigError, Location};
use crate::lower::{Lowerer, View};
use crate::material::{Material, resolve_path};
use crate::types::ClientProto;

/// OpenVPN proxy.h `MAX_CUSTOM_HTTP_HEADER`.
pub const MAX_CUSTOM_HEADERS: usize = 10;
/// `socks-proxy`'s default port (OpenVPN options.c).
pub const DEFAULT_SOCKS_PORT: u16 = 1080;

/// The proxy of one connection entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Proxy {
    /// `http-proxy`: an HTTP `CONNECT` tunnel.
    Http(HttpProxy),
    /// `socks-proxy`: a SOCKS5 `CONNECT`.
    Socks(SocksProxy),
}

impl Proxy {
    /// The proxy's host and port.
    pub fn address(&self) -> (&str, u16) {
        match self {
            Proxy::Http(h) => (&h.host, h.port),
            Proxy::Socks(s) => (&s.host, s.port),
        }
    }
}

/// Where a proxy's username and password come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProxyCredentials {
    /// A file (or an inline `<http-proxy-user-pass>` block): the username on the first
    /// line, the password on the second.
    Material(Material),
    /// `stdin`: asked on the terminal at start.
    Prompt,
}

/// `http-proxy-option VERSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpVersion {
    /// `HTTP/1.0`, OpenVPN's default.
    #[default]
    V1_0,
    /// `HTTP/1.1`.
    V1_1,
}

impl HttpVersion {
    /// As written after `HTTP/` in the request line.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::V1_0 => "1.0",
            HttpVersion::V1_1 => "1.1",
        }
    }
}

/// `http-proxy` with its `http-proxy-option`s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpProxy {
    /// Proxy host name or address.
    pub host: String,
    /// Proxy port.
    pub port: u16,
    /// `Some`: send `Proxy-Authorization: Basic` with these credentials.
    pub basic_auth: Option<ProxyCredentials>,
    /// `http-proxy-option VERSION`.
    pub version: HttpVersion,
    /// `http-proxy-option AGENT`: a `User-Agent` header.
    pub agent: Option<String>,
    /// `http-proxy-option CUSTOM-HEADER NAME [CONTENT]` in order; without CONTENT, NAME is
    /// the whole header line (OpenVPN proxy.c add_proxy_headers).
    pub custom_headers: Vec<(String, Option<String>)>,
}

/// `socks-proxy`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocksProxy {
    /// Proxy host name or address.
    pub host: String,
    /// Proxy port (1080 unless given).
    pub port: u16,
    /// `Some`: RFC 1929 username/password authentication.
    pub credentials: Option<ProxyCredentials>,
}

/// How `http-proxy`'s third parameter names the credentials.
#[derive(Debug, Clone)]
enum HttpAuth {
    None,
    /// Basic with a file, `stdin`, or `""` (only with `http-proxy-user-pass`).
    Basic(Option<ProxyCredentials>),
}

#[derive(Debug, Clone)]
struct PendingHttp {
    host: String,
    port: u16,
    auth: HttpAuth,
    loc: Location,
}

/// The proxy directives seen in one scope (the top level, or a block starting from a copy
/// of the top level's).
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyState {
    http: Option<PendingHttp>,
    version: HttpVersion,
    agent: Option<String>,
    headers: Vec<(String, Option<String>)>,
    /// The first `http-proxy-option` line, for the error when `http-proxy` is missing.
    option_loc: Option<Location>,
    socks: Option<(SocksProxy, Location)>,
}

/// Per-connection proxy directives (also allowed in a `<connection>` block).
pub(crate) const PROXY_DIRECTIVES: &[&str] = &[
    "http-proxy",
    "http-proxy-option",
    "http-proxy-retry",
    "http-proxy-timeout",
    "socks-proxy",
    "socks-proxy-retry",
];

fn credentials(v: &View<'_>, i: usize, base_dir: &std::path::Path) -> Option<ProxyCredentials> {
    match v.arg(i) {
        "" => None,
        "stdin" => Some(ProxyCredentials::Prompt),
        f => Some(ProxyCredentials::Material(Material::File(resolve_path(
            f, base_dir,
        )))),
    }
}

impl ProxyState {
    /// Takes the directives of [`PROXY_DIRECTIVES`]; `Ok(false)` for anything else.
    pub fn apply(&mut self, lw: &mut Lowerer<'_>, v: &View<'_>) -> Result<bool, ConfigError> {
        match v.name {
            "http-proxy" => self.http_proxy(lw, v)?,
            "http-proxy-option" => self.http_option(v)?,
            "socks-proxy" => {
                v.expect(1, 3, "1 to 3 parameters (host, port, credentials file)")?;
                if v.arg(0).is_empty() {
                    return Err(v.invalid(0, "empty host name"));
                }
                let port = if v.args.len() >= 2 {
                    v.port_at(1)?
                } else {
                    DEFAULT_SOCKS_PORT
                };
                let credentials = credentials(v, 2, lw.base_dir);
                self.socks = Some((
                    SocksProxy {
                        host: v.arg(0).to_owned(),
                        port,
                        credentials,
                    },
                    v.loc.clone(),
                ));
            }
            "http-proxy-retry" | "socks-proxy-retry" => {
                v.expect(0, 0, "no parameters")?;
                // OpenVPN 2.4+ prints a deprecation warning and does nothing.
                lw.warn(
                    &v.loc,
                    v.name,
                    "ignored (deprecated since OpenVPN 2.4): a proxy failure moves on to the \
                     next connection like any other failure; use `connect-retry-max` to limit \
                     the attempts",
                );
            }
            "http-proxy-timeout" => {
                v.expect(1, 1, "1 parameter (seconds)")?;
                v.u32_at(0)?;
                lw.warn(
                    &v.loc,
                    v.name,
                    "ignored (deprecated since OpenVPN 2.4): the proxy handshake is bounded by \
                     `server-poll-timeout` (`connect-timeout`)",
                );
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn http_proxy(&mut self, lw: &Lowerer<'_>, v: &View<'_>) -> Result<(), ConfigError> {
        v.expect(
            2,
            4,
            "2 to 4 parameters (host, port, credentials file or `stdin`, `basic`)",
        )?;
        if v.arg(0).is_empty() {
            return Err(v.invalid(0, "empty host name"));
        }
        let port = v.port_at(1)?;
        let unsupported = |name: String, reason| ConfigError::Unsupported {
            location: v.loc.clone(),
            name,
            reason,
        };
        match v.arg(2) {
            "auto" => {
                return Err(unsupported(
                    "http-proxy ... auto".into(),
                    "automatic detection of the proxy's authentication method is not \
                     supported; warren speaks Basic authentication: write \
                     `http-proxy HOST PORT AUTHFILE basic` (AUTHFILE: username and password on \
                     two lines), or `http-proxy HOST PORT stdin basic` to be asked at start, or \
                     leave the third parameter out when the proxy needs no password",
                ));
            }
            "auto-nct" => {
                return Err(unsupported(
                    "http-proxy ... auto-nct".into(),
                    "`auto-nct` allows only NTLM and Digest authentication, which warren does \
                     not speak; if the proxy accepts Basic authentication (best over a trusted \
                     network), write `http-proxy HOST PORT AUTHFILE basic`",
                ));
            }
            _ => {}
        }
        let auth = match v.args.get(3).map(|a| a.value.as_str()) {
            None | Some("basic") if v.args.len() >= 3 => {
                HttpAuth::Basic(credentials(v, 2, lw.base_dir))
            }
            None => HttpAuth::None,
            Some("none") => HttpAuth::None,
            Some("ntlm" | "ntlm2") => {
                return Err(unsupported(
                    format!("http-proxy ... {}", v.arg(3)),
                    "NTLM proxy authentication is not supported (OpenVPN 2.6 deprecates NTLM \
                     v1 too); if the proxy also accepts Basic authentication, write `basic` \
                     instead",
                ));
            }
            Some(_) => {
                return Err(v.invalid(
                    3,
                    "expected `basic` (or `none`); warren speaks Basic proxy authentication only",
                ));
            }
        };
        self.http = Some(PendingHttp {
            host: v.arg(0).to_owned(),
            port,
            auth,
            loc: v.loc.clone(),
        });
        Ok(())
    }

    fn http_option(&mut self, v: &View<'_>) -> Result<(), ConfigError> {
        v.expect(
            2,
            3,
            "2 or 3 parameters (VERSION 1.0|1.1, AGENT string, or CUSTOM-HEADER name content)",
        )?;
        match v.arg(0) {
            "VERSION" => {
                v.expect(2, 2, "2 parameters (VERSION and 1.0 or 1.1)")?;
                self.version = match v.arg(1) {
                    "1.0" => HttpVersion::V1_0,
                    "1.1" => HttpVersion::V1_1,
                    _ => return Err(v.invalid(1, "expected 1.0 or 1.1")),
                };
            }
            "AGENT" => {
                v.expect(2, 2, "2 parameters (AGENT and the User-Agent string)")?;
                self.agent = Some(v.arg(1).to_owned());
            }
            "CUSTOM-HEADER" | "EXT1" | "EXT2" => {
                if self.headers.len() >= MAX_CUSTOM_HEADERS {
                    return Err(v.invalid(0, "at most 10 custom headers (OpenVPN's limit too)"));
                }
                if v.arg(1).is_empty() {
                    return Err(v.invalid(1, "empty header name"));
                }
                let content = v.args.get(2).map(|a| a.value.clone());
                self.headers.push((v.arg(1).to_owned(), content));
            }
            _ => {
                return Err(v.invalid(0, "expected VERSION, AGENT or CUSTOM-HEADER"));
            }
        }
        self.option_loc.get_or_insert_with(|| v.loc.clone());
        Ok(())
    }

    /// The proxy of an entry with transport `proto`, checked as OpenVPN's
    /// options_postprocess_verify_ce does.
    pub fn finish(&self, proto: ClientProto) -> Result<Option<Proxy>, ConfigError> {
        if let (Some(h), Some((_, socks_loc))) = (&self.http, &self.socks) {
            let location = match (h.loc.line, socks_loc.line) {
                (Some(a), Some(b)) if a > b => h.loc.clone(),
                _ => socks_loc.clone(),
            };
            return Err(ConfigError::Conflict {
                location,
                message: "`http-proxy` and `socks-proxy` cannot be used together for one \
                          connection (OpenVPN refuses it too); keep one"
                    .into(),
            });
        }
        if let Some(h) = &self.http {
            if !proto.is_tcp() {
                return Err(ConfigError::Conflict {
                    location: h.loc.clone(),
                    message: "`http-proxy` needs TCP: add `proto tcp-client` (or give the \
                              `remote` the `tcp-client` protocol); OpenVPN refuses an HTTP \
                              proxy with UDP too"
                        .into(),
                });
            }
            return Ok(Some(Proxy::Http(HttpProxy {
                host: h.host.clone(),
                port: h.port,
                basic_auth: match &h.auth {
                    HttpAuth::None => None,
                    // `""`: a placeholder the caller replaces with `http-proxy-user-pass`
                    // or refuses (see `needs_user_pass`).
                    HttpAuth::Basic(c) => Some(c.clone().unwrap_or(ProxyCredentials::Prompt)),
                },
                version: self.version,
                agent: self.agent.clone(),
                custom_headers: self.headers.clone(),
            })));
        }
        if let Some(loc) = &self.option_loc {
            return Err(ConfigError::Conflict {
                location: loc.clone(),
                message: "`http-proxy-option` without `http-proxy` for the same connection; add \
                          `http-proxy HOST PORT` (OpenVPN refuses this too)"
                    .into(),
            });
        }
        if let Some((s, loc)) = &self.socks {
            if !proto.is_tcp() {
                return Err(ConfigError::Unsupported {
                    location: loc.clone(),
                    name: "socks-proxy".into(),
                    reason: "a SOCKS proxy over UDP (UDP ASSOCIATE) is not supported; use \
                             `proto tcp-client` with the SOCKS proxy (the server needs a TCP \
                             listener), or an `http-proxy`",
                });
            }
            return Ok(Some(Proxy::Socks(s.clone())));
        }
        Ok(None)
    }

    /// `http-proxy HOST PORT "" basic` names no file: only `http-proxy-user-pass` can
    /// supply it.
    pub fn needs_user_pass(&self) -> Option<&Location> {
        match &self.http {
            Some(PendingHttp {
                auth: HttpAuth::Basic(None),
                loc,
                ..
            }) => Some(loc),
            _ => None,
        }
    }
}

/// `http-proxy-user-pass FILE` or `<http-proxy-user-pass>`.
pub(crate) fn user_pass(lw: &Lowerer<'_>, v: &View<'_>) -> Result<Material, ConfigError> {
    v.material(lw.base_dir, 0)
}

/// Applies `http-proxy-user-pass` to every HTTP proxy with Basic authentication. Returns
/// whether any took it.
pub(crate) fn apply_user_pass(proxies: &mut [&mut Option<Proxy>], up: &Material) -> bool {
    let mut used = false;
    for p in proxies.iter_mut() {
        if let Some(Proxy::Http(h)) = p.as_mut()
            && h.basic_auth.is_some()
        {
            h.basic_auth = Some(ProxyCredentials::Material(up.clone()));
            used = true;
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::{ClientConfig, Warning, client_config_from_str};

    const HEAD: &str = "client\nca /nonexistent/ca.crt\nauth-user-pass\nremote-cert-tls server\n";

    fn load(body: &str) -> Result<(ClientConfig, Vec<Warning>), ConfigError> {
        client_config_from_str(&format!("{HEAD}{body}"), "c.ovpn", Path::new("/tmp"))
    }

    fn proxies(body: &str) -> Vec<Option<Proxy>> {
        let (cfg, w) = load(body).expect("loads");
        assert!(w.is_empty(), "{w:?}");
        cfg.remotes.into_iter().map(|r| r.proxy).collect()
    }

    fn err(body: &str) -> String {
        load(body).expect_err("must be refused").to_string()
    }

    fn file(p: &str) -> Option<ProxyCredentials> {
        Some(ProxyCredentials::Material(Material::File(PathBuf::from(p))))
    }

    #[test]
    fn http_proxy_forms() {
        let p = proxies(
            "proto tcp-client\nremote vpn.example 443\nhttp-proxy proxy.example 3128\n\
             http-proxy-option AGENT warren-lab/1.0\nhttp-proxy-option VERSION 1.1\n\
             http-proxy-option CUSTOM-HEADER X-A \"b c\"\nhttp-proxy-option EXT1 \"X-Whole: v\"\n",
        );
        assert_eq!(
            p,
            [Some(Proxy::Http(HttpProxy {
                host: "proxy.example".into(),
                port: 3128,
                basic_auth: None,
                version: HttpVersion::V1_1,
                agent: Some("warren-lab/1.0".into()),
                custom_headers: vec![
                    ("X-A".into(), Some("b c".into())),
                    ("X-Whole: v".into(), None)
                ],
            }))]
        );
        let basic = |body: &str| match &proxies(body)[0] {
            Some(Proxy::Http(h)) => h.basic_auth.clone(),
            other => panic!("{other:?}"),
        };
        let tcp = "proto tcp-client\nremote vpn.example 443\n";
        assert_eq!(
            basic(&format!("{tcp}http-proxy p 8080 /etc/px.auth\n")),
            file("/etc/px.auth")
        );
        assert_eq!(
            basic(&format!("{tcp}http-proxy p 8080 /etc/px.auth basic\n")),
            file("/etc/px.auth")
        );
        assert_eq!(
            basic(&format!("{tcp}http-proxy p 8080 stdin\n")),
            Some(ProxyCredentials::Prompt)
        );
        assert_eq!(
            basic(&format!("{tcp}http-proxy p 8080 /etc/px.auth none\n")),
            None
        );
        // The inline block replaces the file, wherever it is written.
        assert_eq!(
            basic(&format!(
                "{tcp}http-proxy p 8080 \"\" basic\n<http-proxy-user-pass>\nu\npw\n</http-proxy-user-pass>\n"
            )),
            Some(ProxyCredentials::Material(Material::Inline(
                "u\npw\n".into()
            )))
        );
        assert_eq!(
            basic(&format!(
                "<http-proxy-user-pass>\nu\npw\n</http-proxy-user-pass>\n{tcp}http-proxy p 8080 /x basic\n"
            )),
            Some(ProxyCredentials::Material(Material::Inline(
                "u\npw\n".into()
            )))
        );
    }

    #[test]
    fn socks_proxy_forms() {
        let p = proxies(
            "remote vpn.example 443 tcp\nremote vpn2.example 443 tcp4\nsocks-proxy 192.0.2.9\n",
        );
        let want = Some(Proxy::Socks(SocksProxy {
            host: "192.0.2.9".into(),
            port: 1080,
            credentials: None,
        }));
        assert_eq!(p, [want.clone(), want]);
        let p = proxies("proto tcp\nremote vpn.example\nsocks-proxy s.example 9050 /etc/s.auth\n");
        assert_eq!(
            p,
            [Some(Proxy::Socks(SocksProxy {
                host: "s.example".into(),
                port: 9050,
                credentials: file("/etc/s.auth"),
            }))]
        );
        assert_eq!(p[0].as_ref().map(Proxy::address), Some(("s.example", 9050)));
    }

    #[test]
    fn per_connection_in_blocks() {
        // The third block inherits the top-level proxy with UDP: refused, as OpenVPN does.
        let e = err("proto tcp-client\nhttp-proxy top.example 3128\n\
             <connection>\nremote one.example 443\n</connection>\n\
             <connection>\nremote three.example 1194 udp\n</connection>\n");
        assert!(
            e.starts_with("c.ovpn:6:") && e.contains("`http-proxy` needs TCP"),
            "{e}"
        );
        let p = proxies(
            "proto tcp-client\nhttp-proxy top.example 3128\nhttp-proxy-option AGENT a\n\
             <connection>\nremote one.example 443\n</connection>\n\
             <connection>\nremote two.example 443\nhttp-proxy other.example 8080\n</connection>\n",
        );
        let hosts: Vec<_> = p.iter().map(|p| p.as_ref().map(Proxy::address)).collect();
        assert_eq!(
            hosts,
            [Some(("top.example", 3128)), Some(("other.example", 8080))]
        );
        // A SOCKS proxy in a block whose defaults have an HTTP proxy: both, refused.
        let e = err("proto tcp-client\nhttp-proxy top.example 3128\n\
             <connection>\nremote one.example 443\nsocks-proxy s.example\n</connection>\n");
        assert!(
            e.starts_with("c.ovpn:9:") && e.contains("cannot be used together"),
            "{e}"
        );
        // The block's option keeps the inherited agent.
        let p = proxies(
            "proto tcp-client\nhttp-proxy-option AGENT a\n\
             <connection>\nremote one.example 443\nhttp-proxy p 1\nhttp-proxy-option VERSION 1.1\n</connection>\n",
        );
        match &p[0] {
            Some(Proxy::Http(h)) => {
                assert_eq!(h.agent.as_deref(), Some("a"));
                assert_eq!(h.version, HttpVersion::V1_1);
            }
            other => panic!("{other:?}"),
        }
        // After the first block, a top-level proxy reaches no entry (as in OpenVPN).
        let (cfg, w) = load(
            "proto tcp-client\n<connection>\nremote one.example 443\n</connection>\n\
             http-proxy late.example 3128\n",
        )
        .expect("loads");
        assert_eq!(cfg.remotes[0].proxy, None);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].directive, "http-proxy");
    }

    #[test]
    fn refusals_name_the_line_and_the_fix() {
        let tcp = "proto tcp-client\nremote vpn.example 443\n";
        let e = err(&format!("{tcp}http-proxy p 8080 auto\n"));
        assert!(
            e.starts_with("c.ovpn:7: `http-proxy ... auto` is not supported")
                && e.contains("AUTHFILE basic"),
            "{e}"
        );
        let e = err(&format!("{tcp}http-proxy p 8080 auto-nct\n"));
        assert!(e.starts_with("c.ovpn:7:") && e.contains("NTLM"), "{e}");
        let e = err(&format!("{tcp}http-proxy p 8080 /f ntlm2\n"));
        assert!(
            e.starts_with("c.ovpn:7: `http-proxy ... ntlm2`") && e.contains("`basic`"),
            "{e}"
        );
        let e = err(&format!("{tcp}http-proxy p 8080 /f digest\n"));
        assert!(e.contains("expected `basic`"), "{e}");
        let e = err(&format!("{tcp}http-proxy p\n"));
        assert!(e.contains("2 to 4 parameters"), "{e}");
        let e = err(&format!("{tcp}http-proxy p 0\n"));
        assert!(e.contains("between 1 and 65535"), "{e}");
        let e = err("remote vpn.example 1194\nhttp-proxy p 8080\n");
        assert!(
            e.starts_with("c.ovpn:6:") && e.contains("proto tcp-client"),
            "{e}"
        );
        let e = err("remote vpn.example 1194\nsocks-proxy s\n");
        assert!(
            e.starts_with("c.ovpn:6: `socks-proxy`") && e.contains("UDP ASSOCIATE"),
            "{e}"
        );
        let e = err(&format!("{tcp}http-proxy-option AGENT x\n"));
        assert!(
            e.starts_with("c.ovpn:7:") && e.contains("without `http-proxy`"),
            "{e}"
        );
        let e = err(&format!(
            "{tcp}http-proxy p 1\nhttp-proxy-option VERSION 2\n"
        ));
        assert!(e.contains("1.0 or 1.1"), "{e}");
        let e = err(&format!(
            "{tcp}http-proxy p 1\nhttp-proxy-option COOKIE x\n"
        ));
        assert!(e.contains("VERSION, AGENT or CUSTOM-HEADER"), "{e}");
        let many: String = (0..11)
            .map(|i| format!("http-proxy-option CUSTOM-HEADER X-{i} v\n"))
            .collect();
        let e = err(&format!("{tcp}http-proxy p 1\n{many}"));
        assert!(
            e.starts_with("c.ovpn:18:") && e.contains("at most 10"),
            "{e}"
        );
        let e = err(&format!("{tcp}http-proxy p 8080 \"\" basic\n"));
        assert!(
            e.starts_with("c.ovpn:7:") && e.contains("<http-proxy-user-pass>"),
            "{e}"
        );
        let e = err(&format!("{tcp}http-proxy p 1\nsocks-proxy s\n"));
        assert!(
            e.starts_with("c.ovpn:8:") && e.contains("cannot be used together"),
            "{e}"
        );
        // Top level only, as in OpenVPN.
        let e = err(
            "proto tcp-client\n<connection>\nremote a\nhttp-proxy-user-pass /f\n</connection>\n",
        );
        assert!(e.starts_with("c.ovpn:8:"), "{e}");
        let e = err(&format!("{tcp}http-proxy-override p 1\n"));
        assert!(e.contains("`http-proxy HOST PORT`"), "{e}");
    }

    #[test]
    fn deprecated_and_unused_lines_warn() {
        let (cfg, w) = load(
            "proto tcp-client\nremote vpn.example 443\nhttp-proxy p 3128\nhttp-proxy-retry\n\
             http-proxy-timeout 5\n<http-proxy-user-pass>\nu\np\n</http-proxy-user-pass>\n",
        )
        .expect("loads");
        let names: Vec<_> = w.iter().map(|w| w.directive.as_str()).collect();
        assert_eq!(
            names,
            [
                "http-proxy-retry",
                "http-proxy-timeout",
                "http-proxy-user-pass"
            ]
        );
        assert!(w[2].message.contains("no effect"), "{}", w[2].message);
        match &cfg.remotes[0].proxy {
            Some(Proxy::Http(h)) => assert_eq!(h.basic_auth, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_of_inline_credentials_is_redacted() {
        let (cfg, _) = load(
            "proto tcp-client\nremote vpn.example 443\nhttp-proxy p 3128 \"\" basic\n\
             <http-proxy-user-pass>\nalice\nhunter2\n</http-proxy-user-pass>\n",
        )
        .expect("loads");
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }
}
