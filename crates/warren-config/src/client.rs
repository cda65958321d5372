//! Lowering into [`ClientConfig`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::connection::{self, EntryOptions, Timing};
use crate::directives::Side;
use crate::error::{ConfigError, Location, Warning};
use crate::lex::parse_str;
use crate::lower::{COMMON_DIRECTIVES, Common, Lowerer, View};
use crate::material::Material;
use crate::proxy::{self, ProxyState};
use crate::read_config_text;
use crate::scripts::{CLIENT_SCRIPT_DIRECTIVES, ScriptState, Scripts};
use crate::settings::defaults;
use crate::types::{
    CertRole, ClientProto, DevType, Ipv6Prefix, KeyDerivationPolicy, PullFilterAction, Remote,
    ResolvRetry, Route, RouteIpv6, TlsCipherSuite, TlsCryptV2, TlsGroup, TlsVersion, X509NameType,
};

/// A client config (an ordinary `.ovpn` profile), lowered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The connection entries in order: one per `<connection>` block or, in a
    /// file without blocks, one per `remote` line, with `port`/`rport`, `proto`
    /// and the other per-connection defaults applied. Never empty.
    pub remotes: Vec<Remote>,
    /// `remote-random`.
    pub remote_random: bool,
    /// `connect-retry-max N`: give up after N unsuccessful rounds over all
    /// entries; `None` retries forever.
    pub connect_retry_max: Option<u32>,
    /// `proto`. Default `udp`.
    pub proto: ClientProto,
    /// `local`.
    pub local: Option<String>,
    /// `lport` (or `port`): local port to bind when not `nobind`.
    pub lport: Option<u16>,
    /// `nobind`.
    pub nobind: bool,
    /// `dev`. Default `tun`.
    pub dev: String,
    /// `dev-type`, or derived from `dev`.
    pub dev_type: DevType,
    /// `ca`.
    pub ca: Material,
    /// `cert`; `None` with username/password only.
    pub cert: Option<Material>,
    /// `key`; present exactly when `cert` is.
    pub key: Option<Material>,
    /// `tls-crypt`.
    pub tls_crypt: Option<Material>,
    /// `tls-auth` with its key direction.
    pub tls_auth: Option<(Material, Option<u8>)>,
    /// `tls-crypt-v2`: the client's own key (Kc and its wrapped form).
    pub tls_crypt_v2: Option<TlsCryptV2>,
    /// `auth`, normalised.
    pub auth: Option<String>,
    /// `remote-cert-tls`.
    pub remote_cert_tls: Option<CertRole>,
    /// `verify-x509-name NAME [TYPE]`.
    pub verify_x509_name: Option<(String, X509NameType)>,
    /// `crl-verify FILE` (or an inline `<crl-verify>` block): the server's certificate is
    /// refused if this CRL lists it. The location names the line for errors about the CRL.
    pub crl_verify: Option<(Material, Location)>,
    /// `data-ciphers`, upper case, defaulted.
    pub data_ciphers: Vec<String>,
    /// `data-ciphers-fallback`.
    pub data_ciphers_fallback: Option<String>,
    /// `cipher`.
    pub cipher: Option<String>,
    /// `auth-user-pass`: `Some(None)` prompts, `Some(Some(m))` reads a
    /// username line and a password line from `m`.
    pub auth_user_pass: Option<Option<Material>>,
    /// `redirect-gateway FLAGS…` (the last one wins).
    pub redirect_gateway: Option<Vec<String>>,
    /// `user`: run as this user once the tunnel is up (keeping CAP_NET_ADMIN).
    pub user: Option<String>,
    /// `group`: run with this group once the tunnel is up.
    pub group: Option<String>,
    /// `route-nopull`.
    pub route_nopull: bool,
    /// `pull-filter` lines in order.
    pub pull_filters: Vec<(PullFilterAction, String)>,
    /// `route` lines in order.
    pub routes: Vec<Route>,
    /// `ifconfig-ipv6 ADDR/BITS REMOTE`: a static IPv6 tunnel address (a pushed
    /// `ifconfig-ipv6` replaces it).
    pub ifconfig_ipv6: Option<(Ipv6Prefix, std::net::Ipv6Addr)>,
    /// `route-ipv6` lines in order.
    pub route_ipv6: Vec<RouteIpv6>,
    /// `block-ipv6`: IPv6 packets read from the tun are answered with ICMPv6 "no
    /// route" and not sent (also when pushed).
    pub block_ipv6: bool,
    /// `dhcp-option TYPE [VALUE]` lines; the value is empty when absent.
    pub dhcp_options: Vec<(String, String)>,
    /// `keepalive`.
    pub keepalive: Option<(u32, u32)>,
    /// `ping`.
    pub ping: Option<u32>,
    /// `ping-restart`.
    pub ping_restart: Option<u32>,
    /// `resolv-retry`.
    pub resolv_retry: Option<ResolvRetry>,
    /// `persist-key`.
    pub persist_key: bool,
    /// `persist-tun`.
    pub persist_tun: bool,
    /// `reneg-sec`.
    pub reneg_sec: Option<u32>,
    /// `hand-window`.
    pub hand_window: Option<u32>,
    /// `tls-timeout`.
    pub tls_timeout: Option<u32>,
    /// `verb`, capped at 11. Default 1.
    pub verb: u8,
    /// `mute-replay-warnings`.
    pub mute_replay_warnings: bool,
    /// `explicit-exit-notify [N]`.
    pub explicit_exit_notify: Option<u32>,
    /// `tls-version-min`.
    pub tls_version_min: Option<TlsVersion>,
    /// `tls-version-max`.
    pub tls_version_max: Option<TlsVersion>,
    /// `tls-groups` (or `ecdh-curve`): the key-exchange groups in order;
    /// `None` for warren's defaults (X25519, P-256, P-384).
    pub tls_groups: Option<Vec<TlsGroup>>,
    /// `tls-cipher`: the TLS 1.2 suites in order; `None` for all warren has.
    pub tls_cipher: Option<Vec<TlsCipherSuite>>,
    /// `tls-ciphersuites`: the TLS 1.3 suites in order; `None` for all warren has.
    pub tls_ciphersuites: Option<Vec<TlsCipherSuite>>,
    /// `tun-mtu`.
    pub tun_mtu: Option<u16>,
    /// `mssfix N`.
    pub mssfix: Option<u16>,
    /// `sndbuf`.
    pub sndbuf: Option<u32>,
    /// `rcvbuf`.
    pub rcvbuf: Option<u32>,
    /// `warren-key-derivation`.
    pub key_derivation: KeyDerivationPolicy,
    /// `warren-offload on|off`: tun offloads and batched UDP (GRO/GSO). Default on.
    pub offload: bool,
    /// `warren-kill-switch on|off`: while the client runs, nothing leaves the machine
    /// outside the tunnel but the tunnel's own packets to its servers. Default off
    /// (`warren client --kill-switch` turns it on too).
    pub kill_switch: bool,
    /// `script-security`, `up`, `down`, `route-up` and `warren-script-timeout`.
    pub scripts: Scripts,
    /// The config file, or the origin name.
    pub source: PathBuf,
}

/// Directives [`ClientConfig`] lowering takes besides the shared ones.
pub(crate) const CLIENT_DIRECTIVES: &[&str] = &[
    "client",
    "pull",
    "tls-client",
    "proto",
    "remote",
    "remote-random",
    "rport",
    "nobind",
    "auth-user-pass",
    "redirect-gateway",
    "route-nopull",
    "pull-filter",
    "crl-verify",
    "route",
    "dhcp-option",
    "resolv-retry",
    "mute-replay-warnings",
    "user",
    "group",
    "block-ipv6",
    "http-proxy",
    "http-proxy-option",
    "http-proxy-retry",
    "http-proxy-timeout",
    "http-proxy-user-pass",
    "socks-proxy",
    "socks-proxy-retry",
    "warren-kill-switch",
];

/// Reads and lowers a client config (`.ovpn`/`.conf`) file.
pub fn load_client_config(path: &Path) -> Result<(ClientConfig, Vec<Warning>), ConfigError> {
    let text = read_config_text(path)?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    client_config_from_str(&text, &path.display().to_string(), base)
}

/// Lowers client config text. `origin` names it in errors; `base_dir` is the
/// fallback directory for relative paths.
pub fn client_config_from_str(
    text: &str,
    origin: &str,
    base_dir: &Path,
) -> Result<(ClientConfig, Vec<Warning>), ConfigError> {
    let directives = parse_str(text, origin)?;
    let mut lw = Lowerer::new(Arc::from(origin), base_dir);
    let mut c = Common::default();
    let mut s = ClientState::default();
    let mut timing = Timing::default();
    let mut proxies = ProxyState::default();
    // `http-proxy-user-pass`, and the `http-proxy HOST PORT "" basic` lines that need it.
    let mut proxy_user_pass: Option<(Material, Location)> = None;
    let mut needs_user_pass: Vec<Location> = Vec::new();
    let mut blocks: Vec<Remote> = Vec::new();
    let mut connect_retry_max = None;
    let mut scripts = ScriptState::default();
    let supported: Vec<&'static str> = CLIENT_DIRECTIVES
        .iter()
        .chain(CLIENT_SCRIPT_DIRECTIVES)
        .chain(COMMON_DIRECTIVES)
        .chain(connection::CONNECTION_DIRECTIVES)
        .copied()
        .collect();

    lw.run(&directives, Side::Client, &supported, |lw, v| {
        match v.name {
            "connection" => {
                if v.inline.is_none() {
                    return Err(v.invalid(
                        0,
                        "write a <connection> ... </connection> block with one `remote` inside",
                    ));
                }
                let (entry, needs) =
                    lower_block(lw, v, (&c, &s, &timing, &proxies), &mut connect_retry_max)?;
                needs_user_pass.extend(needs);
                blocks.push(entry);
                return Ok(true);
            }
            "http-proxy-user-pass" => {
                proxy_user_pass = Some((proxy::user_pass(lw, v)?, v.loc.clone()));
                return Ok(true);
            }
            "connect-retry-max" => {
                connect_retry_max = Some(connection::connect_retry_max(v)?);
                return Ok(true);
            }
            name if !blocks.is_empty() && connection::ENTRY_DIRECTIVES.contains(&name) => {
                lw.warn(
                    &v.loc,
                    v.name,
                    "ignored: it comes after a <connection> block and applies to no connection \
                     (OpenVPN ignores it too); move it before the first block",
                );
                return Ok(true);
            }
            _ => {}
        }
        if scripts.apply(v, CLIENT_SCRIPT_DIRECTIVES, lw)? {
            return Ok(true);
        }
        if timing.apply(v)? {
            return Ok(true);
        }
        if proxies.apply(lw, v)? {
            return Ok(true);
        }
        if c.apply(lw, v)? {
            return Ok(true);
        }
        if v.name == "rport" {
            // OpenVPN options.c "rport": the remote port only.
            v.expect(1, 1, "1 parameter (a port)")?;
            c.remote_port = Some(v.port_at(0)?);
            return Ok(true);
        }
        s.apply(lw, v)
    })?;
    c.check()?;
    c.notes(&mut lw);
    if let Some(v2) = &c.tls_crypt_v2 {
        // OpenVPN options.c:3042: "--tls-crypt-v2, --tls-auth and --tls-crypt are mutually
        // exclusive in client mode".
        if c.tls_crypt.is_some() || c.tls_auth.is_some() {
            return Err(ConfigError::Conflict {
                location: v2.location.clone(),
                message: "a client uses one of `tls-crypt-v2`, `tls-crypt` and `tls-auth`; keep \
                          `tls-crypt-v2`"
                    .into(),
            });
        }
        if v2.force_cookie {
            lw.warn(
                &v2.location,
                "tls-crypt-v2",
                "`force-cookie` only means something to a server; a client ignores it",
            );
        }
    }

    let file = Arc::clone(&lw.file);
    let missing = |directive, why| ConfigError::Missing {
        file: Arc::clone(&file),
        directive,
        why,
    };
    // OpenVPN options.c "client": the same as `pull` plus `tls-client`.
    match (s.pull, s.tls_client) {
        (true, true) => {}
        (false, true) => {
            return Err(missing(
                "client",
                "`tls-client` without `pull` is point-to-point mode, which warren does not support; \
                 use `client`",
            ));
        }
        _ => {
            return Err(missing(
                "client",
                "a client config needs `client` (or `pull` and `tls-client`)",
            ));
        }
    }
    if s.remotes.is_empty() && blocks.is_empty() {
        return Err(missing(
            "remote",
            "the server to connect to, e.g. `remote vpn.example.org 1194`",
        ));
    }
    let ca =
        c.ca.clone()
            .ok_or_else(|| missing("ca", "the CA that signed the server's certificate"))?;
    match (&c.cert, &c.key) {
        (Some(_), None) => {
            return Err(missing(
                "key",
                "`cert` is set, so its private key is needed",
            ));
        }
        (None, Some(_)) => {
            return Err(missing(
                "cert",
                "`key` is set, so its certificate is needed",
            ));
        }
        (None, None) if s.auth_user_pass.is_none() => {
            return Err(missing(
                "cert",
                "the client needs a certificate and key, or `auth-user-pass`",
            ));
        }
        _ => {}
    }
    let (dev, dev_type) = c.device(&lw)?;
    let proto = s.proto.unwrap_or_default();
    let default_port = c.remote_port.unwrap_or(defaults::PORT);
    let remotes = if blocks.is_empty() {
        let entry = EntryOptions {
            connect_timeout: timing.connect_timeout,
            connect_retry: timing.connect_retry,
            explicit_exit_notify: c.explicit_exit_notify.as_ref().map(|(n, _)| *n),
            nobind: s.nobind,
            lport: c.local_port,
            block_line: None,
        };
        if let Some(loc) = proxies.needs_user_pass() {
            needs_user_pass.push(loc.clone());
        }
        s.remotes
            .iter()
            .map(|r| {
                let proto = r.proto.unwrap_or(proto);
                Ok(Remote {
                    host: r.host.clone(),
                    port: r.port.unwrap_or(default_port),
                    proto,
                    entry,
                    proxy: proxies.finish(proto)?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?
    } else {
        for r in &s.remotes {
            lw.warn(
                &r.loc,
                "remote",
                "ignored: the <connection> blocks list the servers (OpenVPN ignores `remote` \
                 lines outside them too)",
            );
        }
        blocks
    };
    let mut remotes = remotes;
    match (&proxy_user_pass, needs_user_pass.first()) {
        (Some((up, loc)), _) => {
            let mut all: Vec<_> = remotes.iter_mut().map(|r| &mut r.proxy).collect();
            if !proxy::apply_user_pass(&mut all, up) {
                lw.warn(
                    loc,
                    "http-proxy-user-pass",
                    "has no effect: no `http-proxy` uses Basic authentication; write \
                     `http-proxy HOST PORT \"\" basic` to use these credentials",
                );
            }
        }
        (None, Some(loc)) => {
            return Err(ConfigError::InvalidValue {
                location: loc.clone(),
                directive: "http-proxy".into(),
                value: String::new(),
                reason: "an empty credentials file needs an inline <http-proxy-user-pass> \
                         block (username and password on two lines), or name the file here"
                    .into(),
            });
        }
        (None, None) => {}
    }

    let whole = lw.file_location();
    match c.remote_cert_tls {
        None if c.verify_x509_name.is_none() => lw.warn(
            &whole,
            "remote-cert-tls",
            "the server certificate's role is not checked: any certificate from the same CA, including \
             another client's, could impersonate the server; add `remote-cert-tls server`",
        ),
        Some(CertRole::Client) => lw.warn(
            &whole,
            "remote-cert-tls",
            "`remote-cert-tls client` in a client config requires the server to hold a client \
             certificate; you probably want `remote-cert-tls server`",
        ),
        _ => {}
    }
    if let Some((_, loc)) = &c.explicit_exit_notify
        && remotes.iter().all(|r| r.proto.is_tcp())
    {
        lw.warn(
            loc,
            "explicit-exit-notify",
            "has no effect over TCP (OpenVPN ignores it too)",
        );
    }
    if c.lport_seen
        && s.nobind
        && let Some(loc) = &s.nobind_loc
    {
        lw.warn(loc, "nobind", "`lport` is ignored because of `nobind`");
    }

    let data_ciphers = c.data_ciphers();
    let tls_groups = c.groups();
    let tls_auth = c.tls_auth();
    let cfg = ClientConfig {
        remotes,
        remote_random: s.remote_random,
        connect_retry_max,
        proto,
        local: c.local.clone(),
        lport: c.local_port,
        nobind: s.nobind,
        dev,
        dev_type,
        ca,
        cert: c.cert.clone(),
        key: c.key.clone(),
        tls_crypt: c.tls_crypt.as_ref().map(|(m, _)| m.clone()),
        tls_auth,
        tls_crypt_v2: c.tls_crypt_v2.clone(),
        auth: c.auth.as_ref().map(|(a, _)| a.clone()),
        remote_cert_tls: c.remote_cert_tls,
        verify_x509_name: c.verify_x509_name.clone(),
        crl_verify: s.crl_verify,
        data_ciphers,
        data_ciphers_fallback: c.data_ciphers_fallback.clone(),
        cipher: c.cipher.clone(),
        auth_user_pass: s.auth_user_pass,
        redirect_gateway: s.redirect_gateway,
        route_nopull: s.route_nopull,
        user: s.user,
        group: s.group,
        pull_filters: s.pull_filters,
        routes: s.routes,
        ifconfig_ipv6: c.ifconfig_ipv6.as_ref().map(|(i, _)| *i),
        route_ipv6: c.route_ipv6.clone(),
        block_ipv6: s.block_ipv6,
        dhcp_options: s.dhcp_options,
        keepalive: c.keepalive.map(|(k, _)| k),
        ping: c.ping.map(|(p, _)| p),
        ping_restart: c.ping_restart.map(|(p, _)| p),
        resolv_retry: s.resolv_retry,
        persist_key: c.persist_key,
        persist_tun: c.persist_tun,
        reneg_sec: c.reneg_sec,
        hand_window: c.hand_window,
        tls_timeout: c.tls_timeout,
        verb: c.verb.unwrap_or(1),
        mute_replay_warnings: s.mute_replay_warnings,
        explicit_exit_notify: c.explicit_exit_notify.map(|(n, _)| n),
        tls_version_min: c.tls_version_min.map(|(v, _)| v),
        tls_version_max: c.tls_version_max,
        tls_groups,
        tls_cipher: c.tls_cipher.clone(),
        tls_ciphersuites: c.tls_ciphersuites.clone(),
        tun_mtu: c.tun_mtu,
        mssfix: c.mssfix,
        sndbuf: c.sndbuf,
        rcvbuf: c.rcvbuf,
        key_derivation: c.key_derivation,
        offload: c.offload.unwrap_or(true),
        kill_switch: s.kill_switch,
        scripts: scripts.finish()?,
        source: PathBuf::from(origin),
    };
    for (name, _) in std::mem::take(&mut lw.setenv) {
        let loc = lw.file_location();
        lw.warn(
            &loc,
            "setenv",
            format!(
                "ignored: `{name}` would only be passed to scripts, and `warren client` does \
                 not pass `setenv` variables to its scripts yet"
            ),
        );
    }
    Ok((cfg, lw.warnings))
}

struct PendingRemote {
    host: String,
    port: Option<u16>,
    proto: Option<ClientProto>,
    loc: Location,
}

/// One `<connection>` block: an entry that starts from the per-connection directives
/// seen so far (`defaults`), see [`connection`].
/// Also returns the block's `http-proxy HOST PORT "" basic` line, which needs
/// `http-proxy-user-pass`.
fn lower_block(
    lw: &mut Lowerer<'_>,
    v: &View<'_>,
    defaults: (&Common, &ClientState, &Timing, &ProxyState),
    connect_retry_max: &mut Option<u32>,
) -> Result<(Remote, Option<Location>), ConfigError> {
    let (c, s, t, p) = defaults;
    let mut bc = Common {
        remote_port: c.remote_port,
        local_port: c.local_port,
        lport_seen: c.lport_seen,
        explicit_exit_notify: c.explicit_exit_notify.clone(),
        ..Common::default()
    };
    let mut bs = ClientState {
        proto: s.proto,
        nobind: s.nobind,
        ..ClientState::default()
    };
    let mut bt = t.clone();
    let mut bp = p.clone();
    for d in &connection::block_directives(v)? {
        let view = View {
            name: &d.name.value,
            args: &d.args,
            inline: None,
            loc: d.location(),
        };
        let taken = match view.name {
            "remote" | "proto" | "nobind" => bs.apply(lw, &view)?,
            "port" | "lport" | "explicit-exit-notify" => bc.apply(lw, &view)?,
            "rport" => {
                view.expect(1, 1, "1 parameter (a port)")?;
                bc.remote_port = Some(view.port_at(0)?);
                true
            }
            "connect-retry" | "connect-timeout" | "server-poll-timeout" => bt.apply(&view)?,
            name if proxy::PROXY_DIRECTIVES.contains(&name) => bp.apply(lw, &view)?,
            "connect-retry-max" => {
                // Global in OpenVPN even inside a block.
                *connect_retry_max = Some(connection::connect_retry_max(&view)?);
                true
            }
            "float" => {
                view.expect(0, 0, "no parameters")?;
                lw.warn(
                    &view.loc,
                    "float",
                    "ignored: warren follows authenticated server address changes",
                );
                true
            }
            _ => false,
        };
        if !taken {
            return Err(connection::refuse_in_block(&view));
        }
    }
    let mut remotes = bs.remotes.into_iter();
    let (Some(r), None) = (remotes.next(), remotes.next()) else {
        return Err(ConfigError::InvalidValue {
            location: v.loc.clone(),
            directive: "connection".into(),
            value: String::new(),
            reason: "a <connection> block needs exactly one `remote` line; write one block per \
                     server"
                .into(),
        });
    };
    let proto = r.proto.or(bs.proto).unwrap_or_default();
    let remote = Remote {
        host: r.host,
        port: r
            .port
            .or(bc.remote_port)
            .unwrap_or(crate::settings::defaults::PORT),
        proto,
        proxy: bp.finish(proto)?,
        entry: EntryOptions {
            connect_timeout: bt.connect_timeout,
            connect_retry: bt.connect_retry,
            explicit_exit_notify: bc.explicit_exit_notify.map(|(n, _)| n),
            nobind: bs.nobind,
            lport: bc.local_port,
            block_line: v.loc.line,
        },
    };
    Ok((remote, bp.needs_user_pass().cloned()))
}

#[derive(Default)]
struct ClientState {
    pull: bool,
    tls_client: bool,
    proto: Option<ClientProto>,
    remotes: Vec<PendingRemote>,
    remote_random: bool,
    nobind: bool,
    nobind_loc: Option<Location>,
    auth_user_pass: Option<Option<Material>>,
    redirect_gateway: Option<Vec<String>>,
    route_nopull: bool,
    user: Option<String>,
    group: Option<String>,
    pull_filters: Vec<(PullFilterAction, String)>,
    routes: Vec<Route>,
    dhcp_options: Vec<(String, String)>,
    resolv_retry: Option<ResolvRetry>,
    mute_replay_warnings: bool,
    crl_verify: Option<(Material, Location)>,
    block_ipv6: bool,
    kill_switch: bool,
}

/// OpenVPN socket.c proto_names, client side: `tcp` means tcp-client.
fn client_proto(v: &View<'_>, i: usize) -> Result<ClientProto, ConfigError> {
    match v.arg(i) {
        "udp" => Ok(ClientProto::Udp),
        "udp4" => Ok(ClientProto::Udp4),
        "udp6" => Ok(ClientProto::Udp6),
        "tcp" | "tcp-client" => Ok(ClientProto::TcpClient),
        "tcp4" | "tcp4-client" => Ok(ClientProto::Tcp4Client),
        "tcp6" | "tcp6-client" => Ok(ClientProto::Tcp6Client),
        "tcp-server" | "tcp4-server" | "tcp6-server" => {
            Err(v.invalid(i, "a client connects with `tcp-client` (or `udp`)"))
        }
        _ => Err(v.invalid(i, "expected udp, udp4, udp6 or tcp-client")),
    }
}

const REDIRECT_FLAGS: &[&str] = &[
    "local",
    "autolocal",
    "def1",
    "bypass-dhcp",
    "bypass-dns",
    "block-local",
    "ipv6",
    "!ipv4",
];

impl ClientState {
    fn apply(&mut self, lw: &mut Lowerer<'_>, v: &View<'_>) -> Result<bool, ConfigError> {
        match v.name {
            "client" => {
                v.expect(0, 0, "no parameters")?;
                self.pull = true;
                self.tls_client = true;
            }
            "pull" => {
                v.expect(0, 0, "no parameters")?;
                self.pull = true;
            }
            "crl-verify" => match crate::server::crl_verify(v, lw.base_dir)? {
                (crate::server::CrlVerify::File(m), loc) => self.crl_verify = Some((m, loc)),
                (crate::server::CrlVerify::Dir(_), location) => {
                    return Err(ConfigError::Unsupported {
                        location,
                        name: "crl-verify DIR dir".into(),
                        reason: "the directory form is supported on servers only; on a \
                                     client use a CRL file (`crl-verify crl.pem`)",
                    });
                }
            },
            "tls-client" => {
                v.expect(0, 0, "no parameters")?;
                self.tls_client = true;
            }
            "proto" => {
                v.expect(1, 1, "1 parameter (udp, udp4, udp6 or tcp-client)")?;
                self.proto = Some(client_proto(v, 0)?);
            }
            "remote" => {
                v.expect(1, 3, "1 to 3 parameters (host, port, proto)")?;
                if v.arg(0).is_empty() {
                    return Err(v.invalid(0, "empty host name"));
                }
                let port = if v.args.len() >= 2 {
                    Some(v.port_at(1)?)
                } else {
                    None
                };
                let proto = if v.args.len() == 3 {
                    Some(client_proto(v, 2)?)
                } else {
                    None
                };
                self.remotes.push(PendingRemote {
                    host: v.arg(0).to_owned(),
                    port,
                    proto,
                    loc: v.loc.clone(),
                });
            }
            "remote-random" => {
                v.expect(0, 0, "no parameters")?;
                self.remote_random = true;
            }
            "warren-kill-switch" => {
                // Done by the driver through warren-net: an nftables table of warren's own.
                v.expect(1, 1, "1 parameter (on or off)")?;
                self.kill_switch = match v.arg(0) {
                    "on" => true,
                    "off" => false,
                    _ => return Err(v.invalid(0, "expected `on` or `off`")),
                };
            }
            "user" => {
                v.expect(1, 1, "1 parameter (a user name)")?;
                self.user = Some(v.arg(0).to_owned());
            }
            "group" => {
                v.expect(1, 1, "1 parameter (a group name)")?;
                self.group = Some(v.arg(0).to_owned());
            }
            "nobind" => {
                v.expect(0, 0, "no parameters")?;
                self.nobind = true;
                self.nobind_loc = Some(v.loc.clone());
            }
            "auth-user-pass" => {
                self.auth_user_pass = Some(if v.inline.is_some() {
                    Some(v.material(lw.base_dir, 0)?)
                } else {
                    v.expect(0, 1, "0 or 1 parameters (a credentials file)")?;
                    if v.args.is_empty() {
                        None
                    } else {
                        Some(v.material(lw.base_dir, 0)?)
                    }
                });
            }
            "redirect-gateway" => {
                v.expect(0, REDIRECT_FLAGS.len(), "0 or more flags")?;
                for (i, a) in v.args.iter().enumerate() {
                    if !REDIRECT_FLAGS.contains(&a.value.as_str()) {
                        return Err(v.invalid(
                            i,
                            "expected local, autolocal, def1, bypass-dhcp, bypass-dns, block-local, \
                             ipv6 or !ipv4",
                        ));
                    }
                }
                if self.redirect_gateway.is_some() {
                    lw.warn(&v.loc, v.name, "repeated: only this last one is used");
                }
                self.redirect_gateway = Some(v.args.iter().map(|a| a.value.clone()).collect());
            }
            "route-nopull" => {
                v.expect(0, 0, "no parameters")?;
                self.route_nopull = true;
            }
            "pull-filter" => {
                v.expect(
                    2,
                    2,
                    "2 parameters (accept, ignore or reject, then the text)",
                )?;
                let action = match v.arg(0) {
                    "accept" => PullFilterAction::Accept,
                    "ignore" => PullFilterAction::Ignore,
                    "reject" => PullFilterAction::Reject,
                    _ => return Err(v.invalid(0, "expected accept, ignore or reject")),
                };
                self.pull_filters.push((action, v.arg(1).to_owned()));
            }
            "route" => {
                v.expect(
                    1,
                    4,
                    "1 to 4 parameters (network, netmask, gateway, metric)",
                )?;
                if v.arg(0).is_empty() {
                    return Err(v.invalid(0, "empty network"));
                }
                let netmask = match v.args.get(1).map(|a| a.value.as_str()) {
                    None | Some("default") => None,
                    Some(_) => Some(v.ipv4_at(1)?),
                };
                let gateway = match v.args.get(2).map(|a| a.value.as_str()) {
                    None | Some("default") => None,
                    Some(g) => Some(g.to_owned()),
                };
                let metric = match v.args.get(3).map(|a| a.value.as_str()) {
                    None | Some("default") => None,
                    Some(_) => Some(v.u32_at(3)?),
                };
                self.routes.push(Route {
                    network: v.arg(0).to_owned(),
                    netmask,
                    gateway,
                    metric,
                });
            }
            "dhcp-option" => {
                v.expect(1, 2, "1 or 2 parameters (a type and a value)")?;
                self.dhcp_options
                    .push((v.arg(0).to_owned(), v.arg(1).to_owned()));
            }
            "resolv-retry" => {
                v.expect(1, 1, "1 parameter (seconds or infinite)")?;
                self.resolv_retry = Some(if v.arg(0) == "infinite" {
                    ResolvRetry::Infinite
                } else {
                    ResolvRetry::Seconds(v.u32_at(0)?)
                });
            }
            "mute-replay-warnings" => {
                v.expect(0, 0, "no parameters")?;
                self.mute_replay_warnings = true;
            }
            "block-ipv6" => {
                v.expect(0, 0, "no parameters")?;
                self.block_ipv6 = true;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}
