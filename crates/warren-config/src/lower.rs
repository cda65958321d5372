//! Shared lowering machinery: the directive loop with OpenVPN's
//! `ignore-unknown-option` / `setenv opt` rules, argument helpers, and the
//! directives that server and client configs share.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use crate::directives::{self, Disposition, Side};
use crate::error::{ConfigError, Location, Warning};
use crate::lex::{Directive, Spanned};
use crate::material::{Material, resolve_path};
use crate::tlsnames;
use crate::types::{
    CertRole, DevType, Ipv6Prefix, KeyDerivationPolicy, RouteIpv6, TlsCipherSuite, TlsCryptV2,
    TlsGroup, TlsVersion, X509NameType,
};

/// The AEAD data-channel ciphers warren implements, in OpenVPN 2.6's default
/// `data-ciphers` order (options.c init_options: "AES-256-GCM:AES-128-GCM",
/// plus CHACHA20-POLY1305 when the library has it).
pub const SUPPORTED_DATA_CIPHERS: [&str; 3] = ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"];
/// Legacy CBC data ciphers (HMAC from `auth`), accepted with a warning for old peers.
pub const LEGACY_CBC_CIPHERS: [&str; 2] = ["AES-256-CBC", "AES-128-CBC"];

/// One directive as the lowering code sees it: for `setenv opt NAME ...` the
/// name and arguments are those after `setenv opt`.
pub(crate) struct View<'a> {
    pub name: &'a str,
    pub args: &'a [Spanned<String>],
    pub inline: Option<&'a str>,
    pub loc: Location,
}

impl View<'_> {
    pub fn arg(&self, i: usize) -> &str {
        self.args.get(i).map_or("", |a| a.value.as_str())
    }

    /// Checks the parameter count, and that no inline block was given.
    pub fn expect(
        &self,
        min: usize,
        max: usize,
        expected: &'static str,
    ) -> Result<(), ConfigError> {
        if self.inline.is_some() {
            return Err(ConfigError::InlineNotAllowed {
                location: self.loc.clone(),
                directive: self.name.to_owned(),
            });
        }
        if self.args.len() < min || self.args.len() > max {
            return Err(ConfigError::ArgCount {
                location: self.loc.clone(),
                directive: self.name.to_owned(),
                expected,
                found: self.args.len(),
            });
        }
        Ok(())
    }

    pub fn invalid(&self, i: usize, reason: impl Into<Cow<'static, str>>) -> ConfigError {
        ConfigError::InvalidValue {
            location: self.loc.clone(),
            directive: self.name.to_owned(),
            value: self.arg(i).to_owned(),
            reason: reason.into(),
        }
    }

    /// A non-negative decimal integer. OpenVPN uses `atoi`, which turns
    /// garbage into 0; warren refuses it.
    pub fn u32_at(&self, i: usize) -> Result<u32, ConfigError> {
        let s = self.arg(i);
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.invalid(i, "expected a non-negative whole number"));
        }
        s.parse::<u32>()
            .map_err(|_| self.invalid(i, "number too large"))
    }

    pub fn u16_at(&self, i: usize) -> Result<u16, ConfigError> {
        let v = self.u32_at(i)?;
        u16::try_from(v).map_err(|_| self.invalid(i, "must be at most 65535"))
    }

    pub fn port_at(&self, i: usize) -> Result<u16, ConfigError> {
        let v = self.u32_at(i)?;
        match u16::try_from(v) {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(self.invalid(i, "a port must be between 1 and 65535")),
        }
    }

    pub fn ipv4_at(&self, i: usize) -> Result<Ipv4Addr, ConfigError> {
        self.arg(i)
            .parse()
            .map_err(|_| self.invalid(i, "expected a dotted-quad IPv4 address"))
    }

    pub fn ipv6_at(&self, i: usize) -> Result<Ipv6Addr, ConfigError> {
        self.arg(i)
            .parse()
            .map_err(|_| self.invalid(i, "expected an IPv6 address"))
    }

    /// `ADDR/BITS` with BITS in `bits`; a missing `/BITS` means /64, as in
    /// OpenVPN's `get_ipv6_addr`.
    pub fn ipv6_prefix_at(
        &self,
        i: usize,
        bits: std::ops::RangeInclusive<u8>,
    ) -> Result<Ipv6Prefix, ConfigError> {
        let (addr, len) = self.arg(i).split_once('/').unwrap_or((self.arg(i), "64"));
        let addr = addr
            .parse::<Ipv6Addr>()
            .map_err(|_| self.invalid(i, "expected ADDRESS/BITS with an IPv6 address"))?;
        let len = len
            .parse::<u8>()
            .ok()
            .filter(|l| bits.contains(l))
            .ok_or_else(|| {
                self.invalid(
                    i,
                    format!(
                        "the prefix length must be between /{} and /{}",
                        bits.start(),
                        bits.end()
                    ),
                )
            })?;
        Ok(Ipv6Prefix { addr, len })
    }

    /// `route-ipv6 NETWORK/BITS [GATEWAY [METRIC]]` (OpenVPN options.c), on either side.
    pub fn route_ipv6(&self) -> Result<RouteIpv6, ConfigError> {
        self.expect(1, 3, "1 to 3 parameters (network/bits, gateway, metric)")?;
        let p = self.ipv6_prefix_at(0, 0..=128)?;
        let network = Ipv6Prefix {
            addr: p.network(),
            len: p.len,
        };
        if network.addr != p.addr {
            return Err(self.invalid(0, format!("host bits are set; did you mean {network}?")));
        }
        let gateway = match self.args.get(1).map(|a| a.value.as_str()) {
            None | Some("default") => None,
            Some(_) => Some(self.ipv6_at(1)?),
        };
        let metric = match self.args.get(2).map(|a| a.value.as_str()) {
            None | Some("default") => None,
            Some(_) => Some(self.u32_at(2)?),
        };
        Ok(RouteIpv6 {
            network,
            gateway,
            metric,
        })
    }

    /// `ifconfig-ipv6 ADDR/BITS REMOTE` (OpenVPN options.c: BITS from 64 to 124).
    pub fn ifconfig_ipv6(&self) -> Result<(Ipv6Prefix, Ipv6Addr), ConfigError> {
        self.expect(
            2,
            2,
            "2 parameters (this end's address/bits and the remote address)",
        )?;
        Ok((self.ipv6_prefix_at(0, 64..=124)?, self.ipv6_at(1)?))
    }

    /// A file path or an inline block. `extra` more parameters may follow
    /// the path (tls-auth's direction).
    pub fn material(&self, base_dir: &Path, extra: usize) -> Result<Material, ConfigError> {
        if let Some(body) = self.inline {
            if body.trim().is_empty() {
                return Err(ConfigError::InvalidValue {
                    location: self.loc.clone(),
                    directive: self.name.to_owned(),
                    value: String::new(),
                    reason: "the inline block is empty".into(),
                });
            }
            return Ok(Material::Inline(body.to_owned()));
        }
        let expected = if extra == 0 {
            "1 parameter (a file) or an inline block"
        } else {
            "1 or 2 parameters (a file and a key direction) or an inline block"
        };
        self.expect(1, 1 + extra, expected)?;
        if self.arg(0).is_empty() {
            return Err(self.invalid(0, "empty file name"));
        }
        Ok(Material::File(resolve_path(self.arg(0), base_dir)))
    }
}

/// State shared by the whole lowering of one file.
pub(crate) struct Lowerer<'a> {
    pub file: Arc<str>,
    pub base_dir: &'a Path,
    pub warnings: Vec<Warning>,
    /// Names from `ignore-unknown-option` lines seen so far.
    ignore_unknown: Vec<String>,
    /// `setenv FORWARD_COMPATIBLE 1` seen.
    forward_compatible: bool,
    /// `setenv NAME VALUE` variables for scripts, in file order (a later one replaces an
    /// earlier one of the same name).
    pub setenv: Vec<(String, String)>,
}

impl<'a> Lowerer<'a> {
    /// Whether an `ignore-unknown-option` line before this point names `name`.
    pub fn ignores(&self, name: &str) -> bool {
        self.ignore_unknown.iter().any(|n| n == name)
    }

    pub fn new(file: Arc<str>, base_dir: &'a Path) -> Self {
        Lowerer {
            file,
            base_dir,
            warnings: Vec::new(),
            ignore_unknown: Vec::new(),
            forward_compatible: false,
            setenv: Vec::new(),
        }
    }

    pub fn warn(&mut self, loc: &Location, directive: &str, message: impl Into<Cow<'static, str>>) {
        self.warnings.push(Warning {
            location: loc.clone(),
            directive: directive.to_owned(),
            message: message.into(),
        });
    }

    pub fn file_location(&self) -> Location {
        Location {
            file: Arc::clone(&self.file),
            line: None,
        }
    }

    /// Runs `apply` on every directive, in order. `apply` returns `Ok(false)`
    /// for a directive it does not take; those go through the allow-lists,
    /// refusals and OpenVPN's ignore rules.
    pub fn run<F>(
        &mut self,
        directives: &[Directive],
        side: Side,
        supported: &[&'static str],
        mut apply: F,
    ) -> Result<(), ConfigError>
    where
        F: FnMut(&mut Self, &View<'_>) -> Result<bool, ConfigError>,
    {
        for d in directives {
            let loc = d.location();
            let mut via_setenv_opt = false;
            let view =
                if d.name.value == "setenv" && d.args.first().is_some_and(|a| a.value == "opt") {
                    // OpenVPN options.c add_option: "setenv opt X ..." is X, with
                    // an unknown X only a warning.
                    let Some(inner) = d.args.get(1) else {
                        return Err(ConfigError::ArgCount {
                            location: loc,
                            directive: "setenv opt".into(),
                            expected: "a directive after `setenv opt`",
                            found: 0,
                        });
                    };
                    via_setenv_opt = true;
                    View {
                        name: &inner.value,
                        args: &d.args[2..],
                        inline: None,
                        loc,
                    }
                } else {
                    View {
                        name: &d.name.value,
                        args: &d.args,
                        inline: d.inline.as_deref(),
                        loc,
                    }
                };

            match view.name {
                "setenv" if !via_setenv_opt => {
                    self.setenv(&view)?;
                    continue;
                }
                "ignore-unknown-option" => {
                    view.expect(1, usize::MAX, "1 or more directive names")?;
                    for a in view.args {
                        // OpenVPN also accepts "--name" here.
                        let n = a.value.strip_prefix("--").unwrap_or(&a.value);
                        self.ignore_unknown.push(n.to_owned());
                    }
                    continue;
                }
                _ => {}
            }

            if apply(self, &view)? {
                continue;
            }
            self.not_taken(&view, side, supported, via_setenv_opt)?;
        }
        Ok(())
    }

    fn setenv(&mut self, v: &View<'_>) -> Result<(), ConfigError> {
        v.expect(1, 2, "1 or 2 parameters")?;
        // OpenVPN options.c "setenv": FORWARD_COMPATIBLE=1 makes every later
        // unknown directive a warning; GENERIC_CONFIG refuses the file.
        match v.arg(0) {
            "FORWARD_COMPATIBLE" if v.arg(1) == "1" => self.forward_compatible = true,
            "GENERIC_CONFIG" => {
                return Err(v.invalid(
                    0,
                    "this is a generic configuration and cannot be used directly",
                ));
            }
            name => {
                // options.c "setenv": NAME VALUE goes into every script's environment
                // (VALUE may be absent: an empty variable).
                let value = v.arg(1).to_owned();
                self.setenv.retain(|(k, _)| k != name);
                self.setenv.push((name.to_owned(), value));
            }
        }
        Ok(())
    }

    fn not_taken(
        &mut self,
        v: &View<'_>,
        side: Side,
        supported: &[&'static str],
        via_setenv_opt: bool,
    ) -> Result<(), ConfigError> {
        let how = if via_setenv_opt {
            Some("setenv opt")
        } else if self.ignore_unknown.iter().any(|n| n == v.name) {
            Some("ignore-unknown-option")
        } else if self.forward_compatible {
            Some("setenv FORWARD_COMPATIBLE 1")
        } else {
            None
        };
        match directives::disposition(v.name, side) {
            Some(Disposition::Ignore(reason)) => {
                self.warn(&v.loc, v.name, format!("ignored: {reason}"));
                Ok(())
            }
            Some(Disposition::Refuse { reason, strict }) => match how {
                Some(how) if !strict => {
                    self.warn(
                        &v.loc,
                        v.name,
                        format!("ignored because of `{how}`: {reason}"),
                    );
                    Ok(())
                }
                _ => Err(ConfigError::Unsupported {
                    location: v.loc.clone(),
                    name: v.name.to_owned(),
                    reason,
                }),
            },
            None => match how {
                Some(how) => {
                    self.warn(
                        &v.loc,
                        v.name,
                        format!("unsupported directive ignored because of `{how}`"),
                    );
                    Ok(())
                }
                None if directives::is_openvpn_directive(v.name) => Err(ConfigError::Unsupported {
                    location: v.loc.clone(),
                    name: v.name.to_owned(),
                    reason: "not implemented yet; remove it, or add `ignore-unknown-option <name>` \
                             before it to skip it on purpose (OpenVPN itself is not affected by that line)",
                }),
                None => Err(ConfigError::UnknownDirective {
                    location: v.loc.clone(),
                    name: v.name.to_owned(),
                    suggestion: directives::did_you_mean(v.name, supported),
                }),
            },
        }
    }
}

/// Settings that server and client configs share, in the order they are
/// usually written. Each is `None`/default until its directive is seen;
/// the last occurrence wins, as in OpenVPN.
#[derive(Default)]
pub(crate) struct Common {
    /// Set by `port` and `lport`, last one wins (OpenVPN `ce.local_port`).
    pub local_port: Option<u16>,
    /// Set by `port` and (client) `rport`, last one wins (`ce.remote_port`).
    pub remote_port: Option<u16>,
    /// Whether `lport` itself was given (OpenVPN `ce.local_port_defined`).
    pub lport_seen: bool,
    pub local: Option<String>,
    pub dev: Option<(String, Location)>,
    pub dev_type: Option<(String, Location)>,
    pub ca: Option<Material>,
    pub cert: Option<Material>,
    pub key: Option<Material>,
    pub tls_crypt: Option<(Material, Location)>,
    pub tls_crypt_v2: Option<TlsCryptV2>,
    pub tls_auth: Option<(Material, Location)>,
    pub key_direction: Option<u8>,
    pub auth: Option<(String, Location)>,
    pub data_ciphers: Option<Vec<String>>,
    pub data_ciphers_fallback: Option<String>,
    pub cipher: Option<String>,
    pub tls_version_min: Option<(TlsVersion, Location)>,
    pub tls_version_max: Option<TlsVersion>,
    /// `tls-groups`.
    pub tls_groups: Option<Vec<TlsGroup>>,
    /// `ecdh-curve`; `None` inside for a curve rustls lacks.
    pub ecdh_curve: Option<Option<TlsGroup>>,
    /// `tls-cipher`: TLS 1.2 suites.
    pub tls_cipher: Option<Vec<TlsCipherSuite>>,
    /// `tls-ciphersuites`: TLS 1.3 suites.
    pub tls_ciphersuites: Option<Vec<TlsCipherSuite>>,
    pub reneg_sec: Option<u32>,
    pub hand_window: Option<u32>,
    pub tls_timeout: Option<u32>,
    pub keepalive: Option<((u32, u32), Location)>,
    pub ping: Option<(u32, Location)>,
    pub ping_restart: Option<(u32, Location)>,
    pub explicit_exit_notify: Option<(u32, Location)>,
    pub remote_cert_tls: Option<CertRole>,
    /// `verify-x509-name NAME [TYPE]`: the peer's name.
    pub verify_x509_name: Option<(String, X509NameType)>,
    pub persist_key: bool,
    pub persist_tun: bool,
    pub verb: Option<u8>,
    pub tun_mtu: Option<u16>,
    pub mssfix: Option<u16>,
    pub sndbuf: Option<u32>,
    pub rcvbuf: Option<u32>,
    pub key_derivation: KeyDerivationPolicy,
    /// `warren-offload on|off`.
    pub offload: Option<bool>,
    /// `ifconfig-ipv6 ADDR/BITS REMOTE`: this end's tunnel address (server: its tun
    /// device; client: a static address, a pushed one wins).
    pub ifconfig_ipv6: Option<((Ipv6Prefix, Ipv6Addr), Location)>,
    /// `route-ipv6` lines in order (they accumulate).
    pub route_ipv6: Vec<RouteIpv6>,
}

/// Names taken by [`Common::apply`].
pub(crate) const COMMON_DIRECTIVES: &[&str] = &[
    "port",
    "lport",
    "local",
    "dev",
    "dev-type",
    "ca",
    "cert",
    "key",
    "tls-crypt",
    "tls-crypt-v2",
    "tls-auth",
    "key-direction",
    "auth",
    "data-ciphers",
    "ncp-ciphers",
    "data-ciphers-fallback",
    "cipher",
    "tls-version-min",
    "tls-version-max",
    "tls-groups",
    "ecdh-curve",
    "tls-cipher",
    "tls-ciphersuites",
    "ns-cert-type",
    "replay-window",
    "reneg-sec",
    "hand-window",
    "tls-timeout",
    "keepalive",
    "ping",
    "ping-restart",
    "explicit-exit-notify",
    "remote-cert-tls",
    "verify-x509-name",
    "persist-key",
    "persist-tun",
    "verb",
    "tun-mtu",
    "mssfix",
    "sndbuf",
    "rcvbuf",
    "allow-compression",
    "warren-key-derivation",
    "warren-offload",
    "ifconfig-ipv6",
    "route-ipv6",
];

impl Common {
    /// Takes the shared directives; `Ok(false)` for anything else.
    pub fn apply(&mut self, lw: &mut Lowerer<'_>, v: &View<'_>) -> Result<bool, ConfigError> {
        match v.name {
            "port" => {
                v.expect(1, 1, "1 parameter (a port)")?;
                // OpenVPN options.c "port": sets both the local and remote port.
                let p = v.port_at(0)?;
                self.local_port = Some(p);
                self.remote_port = Some(p);
            }
            "lport" => {
                v.expect(1, 1, "1 parameter (a port)")?;
                self.local_port = Some(v.port_at(0)?);
                self.lport_seen = true;
            }
            "local" => {
                v.expect(1, 1, "1 parameter (a host name or address)")?;
                if v.arg(0).is_empty() {
                    return Err(v.invalid(0, "empty address"));
                }
                self.local = Some(v.arg(0).to_owned());
            }
            "dev" => {
                v.expect(1, 1, "1 parameter (a device name)")?;
                let name = v.arg(0);
                // Linux IFNAMSIZ is 16 including the NUL.
                if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\t']) {
                    return Err(v.invalid(
                        0,
                        "a device name has 1 to 15 characters and no '/' or spaces",
                    ));
                }
                self.dev = Some((name.to_owned(), v.loc.clone()));
            }
            "dev-type" => {
                v.expect(1, 1, "1 parameter (tun)")?;
                self.dev_type = Some((v.arg(0).to_owned(), v.loc.clone()));
            }
            "ca" => self.ca = Some(v.material(lw.base_dir, 0)?),
            "cert" => self.cert = Some(v.material(lw.base_dir, 0)?),
            "key" => self.key = Some(v.material(lw.base_dir, 0)?),
            "tls-crypt" => self.tls_crypt = Some((v.material(lw.base_dir, 0)?, v.loc.clone())),
            "tls-crypt-v2" => {
                // OpenVPN options.c "tls-crypt-v2": FILE, then (server) the cookie policy.
                let mut force_cookie = false;
                let key = if v.inline.is_some() {
                    v.material(lw.base_dir, 0)?
                } else {
                    v.expect(
                        1,
                        2,
                        "1 or 2 parameters (a file, and `force-cookie` or `allow-noncookie`) or an \
                         inline block",
                    )?;
                    match v.arg(1) {
                        "" | "allow-noncookie" => {}
                        "force-cookie" => force_cookie = true,
                        _ => {
                            return Err(
                                v.invalid(1, "expected `force-cookie` or `allow-noncookie`")
                            );
                        }
                    }
                    if v.arg(0).is_empty() {
                        return Err(v.invalid(0, "empty file name"));
                    }
                    Material::File(crate::material::resolve_path(v.arg(0), lw.base_dir))
                };
                self.tls_crypt_v2 = Some(TlsCryptV2 {
                    key,
                    location: v.loc.clone(),
                    force_cookie,
                    max_age_days: None,
                });
            }
            "tls-auth" => {
                let m = v.material(lw.base_dir, 1)?;
                // OpenVPN options.c "tls-auth": the optional second parameter
                // sets the same key direction as `key-direction`.
                if v.inline.is_none() && v.args.len() == 2 {
                    self.key_direction = Some(key_direction(v, 1)?);
                }
                self.tls_auth = Some((m, v.loc.clone()));
            }
            "key-direction" => {
                v.expect(1, 1, "1 parameter (0 or 1)")?;
                self.key_direction = Some(key_direction(v, 0)?);
            }
            "auth" => {
                v.expect(1, 1, "1 parameter (a digest name)")?;
                self.auth = Some((digest(v)?, v.loc.clone()));
            }
            "data-ciphers" | "ncp-ciphers" => {
                v.expect(1, 1, "1 parameter (a colon-separated cipher list)")?;
                let list = cipher_list(lw, v)?;
                self.data_ciphers = Some(list);
            }
            "data-ciphers-fallback" => {
                v.expect(1, 1, "1 parameter (a cipher name)")?;
                let c = aead_cipher(v, 0, v.arg(0))?;
                warn_cbc(lw, v, &c);
                self.data_ciphers_fallback = Some(c);
            }
            "cipher" => {
                v.expect(1, 1, "1 parameter (a cipher name)")?;
                let c = aead_cipher(v, 0, v.arg(0))?;
                warn_cbc(lw, v, &c);
                self.cipher = Some(c);
            }
            "tls-version-min" => {
                v.expect(
                    1,
                    2,
                    "1 parameter (1.2 or 1.3), optionally followed by `or-highest`",
                )?;
                let or_highest = match v.args.len() {
                    2 if v.arg(1) == "or-highest" => true,
                    2 => {
                        return Err(
                            v.invalid(1, "the only allowed second parameter is `or-highest`")
                        );
                    }
                    _ => false,
                };
                self.tls_version_min = Some((tls_version(v, or_highest)?, v.loc.clone()));
            }
            "tls-version-max" => {
                v.expect(1, 1, "1 parameter (1.2 or 1.3)")?;
                self.tls_version_max = Some(tls_version(v, false)?);
            }
            "tls-groups" => {
                v.expect(1, 1, "1 parameter (a colon-separated group list)")?;
                self.tls_groups = Some(tlsnames::GROUPS.list(lw, v)?);
            }
            "ecdh-curve" => {
                v.expect(1, 1, "1 parameter (a curve name)")?;
                self.ecdh_curve = Some(tlsnames::ecdh_curve(lw, v)?);
            }
            "tls-cipher" => {
                v.expect(1, 1, "1 parameter (a colon-separated TLS 1.2 cipher list)")?;
                self.tls_cipher = Some(tlsnames::tls_cipher(lw, v)?);
            }
            "tls-ciphersuites" => {
                v.expect(1, 1, "1 parameter (a colon-separated TLS 1.3 suite list)")?;
                self.tls_ciphersuites = Some(tlsnames::TLS13_SUITES.list(lw, v)?);
            }
            "ns-cert-type" => {
                // OpenVPN ssl_verify_openssl.c x509_verify_ns_cert_type checks the
                // certificate's purpose (the EKU where present); remote-cert-tls is
                // the same check made strict, which easy-rsa certificates pass.
                v.expect(1, 1, "1 parameter (client or server)")?;
                let role = match v.arg(0) {
                    "client" => CertRole::Client,
                    "server" => CertRole::Server,
                    _ => return Err(v.invalid(0, "expected `client` or `server`")),
                };
                lw.warn(
                    &v.loc,
                    v.name,
                    format!(
                        "deprecated (OpenVPN 2.4 and later); checked as `remote-cert-tls {}`, which \
                         requires the key usage and extended key usage for that role; write that instead",
                        v.arg(0)
                    ),
                );
                self.remote_cert_tls = Some(role);
            }
            "replay-window" => {
                v.expect(1, 2, "1 or 2 parameters (a window in packets, and seconds)")?;
                // OpenVPN packet_id.h MIN/MAX_SEQ_BACKTRACK and MIN/MAX_TIME_BACKTRACK.
                let n = v.u32_at(0)?;
                if n > 65536 {
                    return Err(v.invalid(0, "the window is at most 65536 packets"));
                }
                let t = if v.args.len() == 2 { v.u32_at(1)? } else { 15 };
                if t > 600 {
                    return Err(v.invalid(1, "the time window is at most 600 seconds"));
                }
                if (n, t) != (64, 15) {
                    lw.warn(
                        &v.loc,
                        v.name,
                        "warren's replay window is fixed at OpenVPN's default (64 packets, 15 s): \
                         packets reordered further are dropped as too old, replays are always refused",
                    );
                }
            }
            "reneg-sec" => {
                v.expect(1, 2, "1 or 2 parameters (seconds, and an optional minimum)")?;
                let secs = v.u32_at(0)?;
                if v.args.len() == 2 {
                    v.u32_at(1)?;
                    lw.warn(
                        &v.loc,
                        v.name,
                        "the second parameter (randomisation minimum) is ignored; renegotiation happens \
                         after the first",
                    );
                }
                self.reneg_sec = Some(secs);
            }
            "hand-window" => {
                v.expect(1, 1, "1 parameter (seconds)")?;
                self.hand_window = Some(nonzero(v, 0)?);
            }
            "tls-timeout" => {
                v.expect(1, 1, "1 parameter (seconds)")?;
                self.tls_timeout = Some(nonzero(v, 0)?);
            }
            "keepalive" => {
                v.expect(
                    2,
                    2,
                    "2 parameters (ping interval and restart timeout, in seconds)",
                )?;
                let (interval, timeout) = (v.u32_at(0)?, v.u32_at(1)?);
                // OpenVPN helper.c helper_keepalive sanity checks.
                if interval == 0 || timeout == 0 {
                    return Err(v.invalid(
                        if interval == 0 { 0 } else { 1 },
                        "keepalive parameters must be greater than 0",
                    ));
                }
                if u64::from(interval) * 2 > u64::from(timeout) {
                    return Err(v.invalid(
                        1,
                        "the restart timeout must be at least twice the ping interval (10 60 is a good choice)",
                    ));
                }
                self.keepalive = Some(((interval, timeout), v.loc.clone()));
            }
            "ping" => {
                v.expect(1, 1, "1 parameter (seconds)")?;
                self.ping = Some((v.u32_at(0)?, v.loc.clone()));
            }
            "ping-restart" => {
                v.expect(1, 1, "1 parameter (seconds)")?;
                self.ping_restart = Some((v.u32_at(0)?, v.loc.clone()));
            }
            "explicit-exit-notify" => {
                v.expect(0, 1, "0 or 1 parameters (a retry count)")?;
                // OpenVPN options.c: the bare directive means 1.
                let n = if v.args.is_empty() { 1 } else { v.u32_at(0)? };
                self.explicit_exit_notify = Some((n, v.loc.clone()));
            }
            "remote-cert-tls" => {
                v.expect(1, 1, "1 parameter (client or server)")?;
                self.remote_cert_tls = Some(match v.arg(0) {
                    "client" => CertRole::Client,
                    "server" => CertRole::Server,
                    _ => return Err(v.invalid(0, "expected `client` or `server`")),
                });
            }
            "verify-x509-name" => {
                v.expect(
                    1,
                    2,
                    "1 or 2 parameters (a name, and subject, name or name-prefix)",
                )?;
                if v.arg(0).is_empty() {
                    return Err(v.invalid(0, "empty name"));
                }
                let kind = match v.args.get(1).map(|a| a.value.as_str()) {
                    None | Some("subject") => X509NameType::Subject,
                    Some("name") => X509NameType::Name,
                    Some("name-prefix") => X509NameType::NamePrefix,
                    Some(_) => return Err(v.invalid(1, "expected subject, name or name-prefix")),
                };
                self.verify_x509_name = Some((v.arg(0).to_owned(), kind));
            }
            "persist-key" => {
                v.expect(0, 0, "no parameters")?;
                self.persist_key = true;
            }
            "persist-tun" => {
                v.expect(0, 0, "no parameters")?;
                self.persist_tun = true;
            }
            "verb" => {
                v.expect(1, 1, "1 parameter (0 to 11)")?;
                let n = v.u32_at(0)?;
                // OpenVPN accepts any number; 11 is already the most verbose.
                self.verb = Some(u8::try_from(n.min(11)).unwrap_or(11));
            }
            "tun-mtu" => {
                v.expect(
                    1,
                    2,
                    "1 or 2 parameters (MTU, and an optional MTU to report)",
                )?;
                let mtu = v.u16_at(0)?;
                if mtu < 576 {
                    return Err(v.invalid(0, "the tun MTU must be at least 576"));
                }
                if v.args.len() == 2 {
                    v.u16_at(1)?;
                    lw.warn(&v.loc, v.name, "the second parameter (OCC MTU) is ignored");
                }
                self.tun_mtu = Some(mtu);
            }
            "mssfix" => {
                v.expect(0, 2, "0 to 2 parameters (a size, then `mtu` or `fixed`)")?;
                if v.args.is_empty() {
                    self.mssfix = None; // OpenVPN's default clamping
                } else {
                    let n = v.u16_at(0)?;
                    if v.args.len() == 2 {
                        match v.arg(1) {
                            "mtu" | "fixed" => lw.warn(
                                &v.loc,
                                v.name,
                                "the `mtu`/`fixed` flag is not implemented; the size is used as the MSS \
                                 clamp target",
                            ),
                            _ => return Err(v.invalid(1, "expected `mtu` or `fixed`")),
                        }
                    }
                    self.mssfix = Some(n);
                }
            }
            "sndbuf" => {
                v.expect(1, 1, "1 parameter (bytes)")?;
                self.sndbuf = Some(v.u32_at(0)?);
            }
            "rcvbuf" => {
                v.expect(1, 1, "1 parameter (bytes)")?;
                self.rcvbuf = Some(v.u32_at(0)?);
            }
            "allow-compression" => {
                v.expect(1, 1, "1 parameter (no)")?;
                match v.arg(0) {
                    // Exactly what warren does anyway.
                    "no" => {}
                    "asym" | "yes" => {
                        return Err(ConfigError::Unsupported {
                            location: v.loc.clone(),
                            name: v.name.to_owned(),
                            reason: "compression is refused (VORACLE); only `allow-compression no` is accepted",
                        });
                    }
                    _ => return Err(v.invalid(0, "expected `no`, `asym` or `yes`")),
                }
            }
            "warren-key-derivation" => {
                v.expect(1, 1, "1 parameter (auto or prf)")?;
                self.key_derivation = match v.arg(0) {
                    "auto" => KeyDerivationPolicy::Auto,
                    "prf" => {
                        lw.warn(
                            &v.loc,
                            v.name,
                            "TLS-EKM is disabled: data-channel keys come from the legacy TLS1-PRF \
                             (MD5/SHA1) exchange; use this only for peers that lack EKM",
                        );
                        KeyDerivationPolicy::Prf
                    }
                    _ => return Err(v.invalid(0, "expected `auto` or `prf`")),
                };
            }
            "warren-offload" => {
                // A driver choice, not a protocol one: tun offloads and batched UDP
                // (`off` is the `--no-offload` switch, for kernels that misbehave).
                v.expect(1, 1, "1 parameter (on or off)")?;
                self.offload = match v.arg(0) {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => return Err(v.invalid(0, "expected `on` or `off`")),
                };
            }
            "ifconfig-ipv6" => self.ifconfig_ipv6 = Some((v.ifconfig_ipv6()?, v.loc.clone())),
            "route-ipv6" => self.route_ipv6.push(v.route_ipv6()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Cross-directive checks shared by both sides.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let (Some(_), Some((_, loc))) = (&self.tls_crypt, &self.tls_auth) {
            return Err(ConfigError::Conflict {
                location: loc.clone(),
                message: "`tls-auth` and `tls-crypt` cannot be combined; keep `tls-crypt`".into(),
            });
        }
        if let Some((_, loc)) = &self.keepalive {
            // OpenVPN helper.c helper_keepalive.
            if self.ping.is_some() || self.ping_restart.is_some() {
                return Err(ConfigError::Conflict {
                    location: loc.clone(),
                    message: "`keepalive` conflicts with `ping` and `ping-restart`; keep only `keepalive`".into(),
                });
            }
        }
        if let (Some((min, loc)), Some(max)) = (&self.tls_version_min, &self.tls_version_max)
            && min > max
        {
            return Err(ConfigError::Conflict {
                location: loc.clone(),
                message: "`tls-version-min` is higher than `tls-version-max`".into(),
            });
        }
        Ok(())
    }

    /// The device name and type. `dev` defaults to `tun` (any free tunN).
    pub fn device(&self, lw: &Lowerer<'_>) -> Result<(String, DevType), ConfigError> {
        let dev = self.dev.as_ref().map_or("tun", |(d, _)| d.as_str());
        let (kind, loc) = match &self.dev_type {
            Some((t, loc)) => (t.as_str(), loc.clone()),
            None => {
                // OpenVPN tun.c dev_type_enum: the name's prefix decides.
                let loc = self
                    .dev
                    .as_ref()
                    .map_or_else(|| lw.file_location(), |(_, l)| l.clone());
                let kind = if dev.starts_with("tun") {
                    "tun"
                } else if dev.starts_with("tap") {
                    "tap"
                } else if dev == "null" {
                    "null"
                } else {
                    return Err(ConfigError::InvalidValue {
                        location: loc,
                        directive: "dev".into(),
                        value: dev.to_owned(),
                        reason: "cannot tell the device type from this name; add `dev-type tun`"
                            .into(),
                    });
                };
                (kind, loc)
            }
        };
        match kind {
            "tun" => Ok((dev.to_owned(), DevType::Tun)),
            "tap" => Err(ConfigError::Unsupported {
                location: loc,
                name: "dev-type tap".into(),
                reason: "dev-type tap is not supported yet; use a tun device",
            }),
            other => Err(ConfigError::InvalidValue {
                location: loc,
                directive: "dev-type".into(),
                value: other.to_owned(),
                reason: "expected `tun`".into(),
            }),
        }
    }

    /// `tls-auth` with its direction: the last of `tls-auth FILE DIR` and
    /// `key-direction` wins (both set OpenVPN's `options->key_direction`).
    pub fn tls_auth(&self) -> Option<(Material, Option<u8>)> {
        self.tls_auth
            .as_ref()
            .map(|(m, _)| (m.clone(), self.key_direction))
    }

    /// The key-exchange groups: `tls-groups`, else `ecdh-curve`, else `None`
    /// (warren's defaults).
    pub fn groups(&self) -> Option<Vec<TlsGroup>> {
        self.tls_groups
            .clone()
            .or_else(|| self.ecdh_curve.flatten().map(|g| vec![g]))
    }

    /// Notes that need the whole file.
    pub fn notes(&self, lw: &mut Lowerer<'_>) {
        if let Some((_, loc)) = &self.auth
            && self.tls_auth.is_none()
        {
            lw.warn(
                loc,
                "auth",
                "has no effect here: it keys tls-auth's HMAC, and the AEAD data ciphers and \
                 tls-crypt bring their own authentication",
            );
        }
    }

    pub fn data_ciphers(&self) -> Vec<String> {
        self.data_ciphers.clone().unwrap_or_else(|| {
            SUPPORTED_DATA_CIPHERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        })
    }
}

fn nonzero(v: &View<'_>, i: usize) -> Result<u32, ConfigError> {
    match v.u32_at(i)? {
        0 => Err(v.invalid(i, "must be greater than 0")),
        n => Ok(n),
    }
}

/// OpenVPN crypto.c ascii2keydirection: "0" or "1".
fn key_direction(v: &View<'_>, i: usize) -> Result<u8, ConfigError> {
    match v.arg(i) {
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err(v.invalid(i, "a key direction is 0 or 1")),
    }
}

/// OpenVPN ssl.c tls_version_parse, limited to what rustls offers.
fn tls_version(v: &View<'_>, or_highest: bool) -> Result<TlsVersion, ConfigError> {
    match v.arg(0) {
        "1.2" => Ok(TlsVersion::V1_2),
        "1.3" => Ok(TlsVersion::V1_3),
        "1.0" | "1.1" => Err(v.invalid(0, "TLS 1.0 and 1.1 are not supported; the minimum is 1.2")),
        // An unknown version with or-highest means the highest available.
        _ if or_highest => Ok(TlsVersion::V1_3),
        _ => Err(v.invalid(0, "expected 1.2 or 1.3")),
    }
}

/// The `auth` digest, normalised to OpenSSL's upper-case name. Only the SHA-1
/// and SHA-2 families are accepted (this digest keys tls-auth's HMAC).
fn digest(v: &View<'_>) -> Result<String, ConfigError> {
    let upper = v.arg(0).to_ascii_uppercase();
    let canonical = match upper.as_str() {
        "SHA1" | "SHA-1" => "SHA1",
        "SHA224" | "SHA-224" | "SHA2-224" => "SHA224",
        "SHA256" | "SHA-256" | "SHA2-256" => "SHA256",
        "SHA384" | "SHA-384" | "SHA2-384" => "SHA384",
        "SHA512" | "SHA-512" | "SHA2-512" => "SHA512",
        "NONE" => return Err(v.invalid(0, "`auth none` would disable packet authentication")),
        _ => return Err(v.invalid(0, "expected SHA1, SHA224, SHA256, SHA384 or SHA512")),
    };
    Ok(canonical.to_owned())
}

/// CBC is legacy: warn, never refuse (old peers need it).
fn warn_cbc(lw: &mut Lowerer<'_>, v: &View<'_>, cipher: &str) {
    if LEGACY_CBC_CIPHERS.contains(&cipher) {
        lw.warn(
            &v.loc,
            v.name,
            format!(
                "`{cipher}` is a legacy CBC cipher (with an `auth` HMAC); it works with old \
                 peers but the AEAD ciphers (AES-256-GCM, CHACHA20-POLY1305) are faster and \
                 safer: move to them when the peers allow"
            ),
        );
    }
}

/// One data cipher name (AEAD, or legacy AES-CBC), normalised to upper case.
fn aead_cipher(v: &View<'_>, i: usize, name: &str) -> Result<String, ConfigError> {
    let upper = name.to_ascii_uppercase();
    if SUPPORTED_DATA_CIPHERS.contains(&upper.as_str())
        || LEGACY_CBC_CIPHERS.contains(&upper.as_str())
    {
        return Ok(upper);
    }
    let reason: Cow<'static, str> = if upper == "NONE" {
        "`none` would disable encryption".into()
    } else {
        format!(
            "`{name}` is not supported: only the AEAD ciphers AES-256-GCM, AES-128-GCM and \
             CHACHA20-POLY1305 are, and the legacy AES-256-CBC and AES-128-CBC (other CBC \
             ciphers such as BF-CBC are not implemented)"
        )
        .into()
    };
    Err(ConfigError::InvalidValue {
        location: v.loc.clone(),
        directive: v.name.to_owned(),
        value: v.arg(i).to_owned(),
        reason,
    })
}

/// `data-ciphers A:B:C`. OpenVPN 2.6 (ssl_ncp.c mutate_ncp_cipher_list)
/// skips names prefixed with `?` that the library lacks; warren does the same
/// with a warning.
fn cipher_list(lw: &mut Lowerer<'_>, v: &View<'_>) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for part in v.arg(0).split(':') {
        let (optional, name) = match part.strip_prefix('?') {
            Some(n) => (true, n),
            None => (false, part),
        };
        if name.is_empty() {
            return Err(v.invalid(0, "empty cipher name in the list"));
        }
        match aead_cipher(v, 0, name) {
            Ok(c) => {
                warn_cbc(lw, v, &c);
                if !out.contains(&c) {
                    out.push(c);
                }
            }
            Err(_) if optional => {
                lw.warn(
                    &v.loc,
                    v.name,
                    format!("optional cipher `{name}` is not supported and is skipped"),
                );
            }
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() {
        return Err(v.invalid(0, "no supported cipher left in the list"));
    }
    Ok(out)
}
