//! Lowering into [`ServerConfig`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::directives::Side;
use crate::error::{ConfigError, Location, Warning};
use crate::lex::{Directive, parse_str};
use crate::lower::{COMMON_DIRECTIVES, Common, Lowerer, View};
use crate::management::{MANAGEMENT_DIRECTIVES, ManagementConfig, ManagementState};
use crate::material::{Material, resolve_path};
use crate::read_config_text;
use crate::scripts::{SERVER_SCRIPT_DIRECTIVES, ScriptState, Scripts};
use crate::settings::defaults;
use crate::types::{
    CertRole, DevType, Ipv6Prefix, KeyDerivationPolicy, NatConfig, Proto, RouteIpv6, StateDir,
    TlsCipherSuite, TlsCryptV2, TlsGroup, TlsVersion, Topology, UserAuth, VerifyClientCert,
    X509NameType,
};

/// A server config, lowered from OpenVPN directives.
///
/// Optional settings are `None` when absent, so the engine applies its own
/// defaults (OpenVPN's defaults are noted on each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `port` / `lport`, the last one wins as in OpenVPN. Default 1194.
    pub port: u16,
    /// `proto`. Default `udp`.
    pub proto: Proto,
    /// `warren-listen tcp PORT` (repeatable): TCP listeners served next to the `proto`
    /// socket by the same process (same users, pool and status).
    pub tcp_listen: Vec<u16>,
    /// `warren-access IDENTITY allow|deny RULE` (repeatable, in order): the access rules
    /// of clients with that common name (or user name), checked by the data plane.
    pub access: Vec<AccessDirective>,
    /// `local`: address or host to bind.
    pub local: Option<String>,
    /// `dev`. Default `tun`; a bare `tun` means "the first free tunN".
    pub dev: String,
    /// `dev-type`, or derived from `dev`.
    pub dev_type: DevType,
    /// `ca`.
    pub ca: Material,
    /// `cert`.
    pub cert: Material,
    /// `key`.
    pub key: Material,
    /// `dh`; `None` for `dh none` or absent (warren uses ECDHE only).
    pub dh: Option<Material>,
    /// `tls-crypt`.
    pub tls_crypt: Option<Material>,
    /// `tls-auth` with its key direction (from `tls-auth FILE DIR` or
    /// `key-direction`; `None` is bidirectional).
    pub tls_auth: Option<(Material, Option<u8>)>,
    /// `tls-crypt-v2` (with `tls-crypt-v2-max-age`): clients with their own
    /// wrapped keys, beside the `tls-crypt` or `tls-auth` clients if one of
    /// those is set too.
    pub tls_crypt_v2: Option<TlsCryptV2>,
    /// `auth`, normalised (`SHA256`...). Used for tls-auth's HMAC.
    pub auth: Option<String>,
    /// `server NETWORK NETMASK`.
    pub server: (Ipv4Addr, Ipv4Addr),
    /// `topology`; without a `topology` line `net30`, as OpenVPN 2.6.
    pub topology: Topology,
    /// `server-ipv6 PREFIX/BITS` (64..=124): IPv6 inside the tunnel, expanded by
    /// [`ServerConfig::ipv6`] as OpenVPN's helper does.
    pub server_ipv6: Option<Ipv6Prefix>,
    /// `ifconfig-ipv6 ADDR/BITS REMOTE`: the server tun's IPv6 address (without
    /// `server-ipv6`).
    pub ifconfig_ipv6: Option<(Ipv6Prefix, Ipv6Addr)>,
    /// `ifconfig-ipv6-pool ADDR/BITS`: the first client address and the pool's bits
    /// (without `server-ipv6`; needs `ifconfig-ipv6`).
    pub ifconfig_ipv6_pool: Option<Ipv6Prefix>,
    /// `route-ipv6 NETWORK/BITS [GATEWAY [METRIC]]`: kernel routes into the server's tun.
    pub route_ipv6: Vec<RouteIpv6>,
    /// `block-ipv6`: IPv6 packets from clients are answered with ICMPv6 "no route"
    /// ([`ServerConfig::block_ipv6_from`]).
    pub block_ipv6: bool,
    /// `route NETWORK [NETMASK [GATEWAY [METRIC]]]`: kernel routes into the server's tun
    /// (for client networks, `iroute` in a client-config-dir).
    pub routes: Vec<ServerRoute>,
    /// `client-config-dir DIR`: per-client option files ([`crate::ClientOptions`]), read
    /// when each client connects.
    pub client_config_dir: Option<PathBuf>,
    /// `ccd-exclusive`: refuse clients without their own file in `client_config_dir`.
    pub ccd_exclusive: bool,
    /// `push "..."` contents, unquoted, in order.
    pub push: Vec<String>,
    /// `keepalive INTERVAL TIMEOUT`.
    pub keepalive: Option<(u32, u32)>,
    /// `ping`.
    pub ping: Option<u32>,
    /// `ping-restart`.
    pub ping_restart: Option<u32>,
    /// `data-ciphers`, upper case. Default AES-256-GCM, AES-128-GCM,
    /// CHACHA20-POLY1305.
    pub data_ciphers: Vec<String>,
    /// `data-ciphers-fallback`, upper case.
    pub data_ciphers_fallback: Option<String>,
    /// `cipher`, upper case.
    pub cipher: Option<String>,
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
    /// `reneg-sec` (OpenVPN default 3600).
    pub reneg_sec: Option<u32>,
    /// `hand-window` (OpenVPN default 60).
    pub hand_window: Option<u32>,
    /// `tls-timeout` (OpenVPN default 2).
    pub tls_timeout: Option<u32>,
    /// `client-to-client`.
    pub client_to_client: bool,
    /// `duplicate-cn`.
    pub duplicate_cn: bool,
    /// `max-clients`.
    pub max_clients: Option<u32>,
    /// `warren-max-half-open N`: sessions still in the handshake, in all.
    pub max_half_open: Option<u32>,
    /// `warren-max-half-open-per-source N`: the same from one IPv4 address
    /// or IPv6 /64.
    pub max_half_open_per_source: Option<u32>,
    /// `explicit-exit-notify [N]`; the bare directive is 1.
    pub explicit_exit_notify: Option<u32>,
    /// `remote-cert-tls`.
    pub remote_cert_tls: Option<CertRole>,
    /// `verify-x509-name NAME [TYPE]`: only clients whose certificate matches.
    pub verify_x509_name: Option<(String, X509NameType)>,
    /// `crl-verify FILE` (or an inline `<crl-verify>` block): client certificates listed
    /// in this CRL are refused; a file is re-read when it changes. The location names the
    /// line for errors about the CRL's contents.
    pub crl_verify: Option<(Material, Location)>,
    /// `crl-verify DIR dir`: a client certificate is refused when DIR holds a file named
    /// after its serial number in decimal (looked at in every handshake, as OpenVPN does).
    /// Replaces `crl_verify` (the last `crl-verify` line wins).
    pub crl_verify_dir: Option<(PathBuf, Location)>,
    /// `verify-client-cert`. Always `Require` after lowering for now.
    pub verify_client_cert: VerifyClientCert,
    /// `persist-key`.
    pub persist_key: bool,
    /// `persist-tun`.
    pub persist_tun: bool,
    /// `user`.
    pub user: Option<String>,
    /// `group`.
    pub group: Option<String>,
    /// `verb`, capped at 11. Default 1.
    pub verb: u8,
    /// `status FILE [SECONDS]`; seconds default to 60.
    pub status: Option<(PathBuf, u32)>,
    /// `status-version` 1 to 3. Default 1.
    pub status_version: u8,
    /// `tun-mtu`.
    pub tun_mtu: Option<u16>,
    /// `mssfix N`; `None` for absent or the bare directive (default clamp).
    pub mssfix: Option<u16>,
    /// `sndbuf`.
    pub sndbuf: Option<u32>,
    /// `rcvbuf`.
    pub rcvbuf: Option<u32>,
    /// `warren-key-derivation auto|prf`. Default `auto`.
    pub key_derivation: KeyDerivationPolicy,
    /// `warren-offload on|off`: tun offloads and batched UDP (GRO/GSO). Default on.
    pub offload: bool,
    /// `warren-workers N|auto`: threads moving data (`None`: auto, one per core up to 4).
    pub workers: Option<u16>,
    /// `warren-state-dir DIR` and `warren-auth MODE`: users, revocations and
    /// leases from warren's state (`None`: certificates only).
    pub state: Option<StateDir>,
    /// `warren-nat on [UPLINK]`: masquerade the VPN network out of the uplink
    /// (`None`: `warren-nat off`, the default).
    pub nat: Option<NatConfig>,
    /// `port-share HOST PORT`: TCP connections that do not start with an OpenVPN
    /// client reset are relayed to HOST:PORT (HOST is resolved to IPv4, as OpenVPN does).
    pub port_share: Option<(String, u16)>,
    /// `management ...` and its modifiers (`None`: no management interface).
    pub management: Option<ManagementConfig>,
    /// `warren-metrics ADDR[:PORT]`: serve Prometheus metrics over HTTP on ADDR (port
    /// [`defaults::METRICS_PORT`] unless given). `None`: no metrics endpoint, the default.
    ///
    /// [`defaults::METRICS_PORT`]: crate::defaults::METRICS_PORT
    pub metrics: Option<SocketAddr>,
    /// `script-security`, `up`, `down`, `route-up`, `client-connect`, `client-disconnect`,
    /// `learn-address`, `auth-user-pass-verify` and `warren-script-timeout`.
    pub scripts: Scripts,
    /// The config file, or the origin name.
    pub source: PathBuf,
}

/// A server `route` line: an IPv4 network routed into the tun (the gateway OpenVPN
/// computes does not matter on a tun, openvpn-ops.md §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerRoute {
    pub network: Ipv4Addr,
    pub len: u8,
    pub metric: Option<u32>,
}

impl std::fmt::Display for ServerRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// One `warren-access` line: the rule's text is the engine's to parse (the server reports
/// a bad one with this location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessDirective {
    pub identity: String,
    /// `allow` or `deny`.
    pub allow: bool,
    pub rule: String,
    pub location: Location,
}

/// Directives [`ServerConfig`] lowering takes (besides `setenv` and
/// `ignore-unknown-option`).
pub(crate) const SERVER_DIRECTIVES: &[&str] = &[
    "proto",
    "mode",
    "tls-server",
    "server",
    "topology",
    "push",
    "dh",
    "client-to-client",
    "duplicate-cn",
    "max-clients",
    "verify-client-cert",
    "user",
    "group",
    "status",
    "status-version",
    "crl-verify",
    "warren-workers",
    "warren-listen",
    "warren-access",
    "tcp-nodelay",
    "warren-state-dir",
    "warren-auth",
    "warren-max-half-open",
    "warren-max-half-open-per-source",
    "warren-nat",
    "warren-metrics",
    "port-share",
    "server-ipv6",
    "ifconfig-ipv6-pool",
    "block-ipv6",
    "tls-crypt-v2-max-age",
    "route",
    "client-config-dir",
    "ccd-exclusive",
];

/// Reads and lowers a server config file. Relative paths inside resolve
/// against the current directory, then the file's directory.
pub fn load_server_config(path: &Path) -> Result<(ServerConfig, Vec<Warning>), ConfigError> {
    let text = read_config_text(path)?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    server_config_from_str(&text, &path.display().to_string(), base)
}

/// Lowers server config text. `origin` names it in errors; `base_dir` is the
/// fallback directory for relative paths.
pub fn server_config_from_str(
    text: &str,
    origin: &str,
    base_dir: &Path,
) -> Result<(ServerConfig, Vec<Warning>), ConfigError> {
    let directives = parse_str(text, origin)?;
    lower_server(&directives, origin, base_dir)
}

/// Lowers parsed (or synthesized) server directives.
pub(crate) fn lower_server(
    directives: &[Directive],
    origin: &str,
    base_dir: &Path,
) -> Result<(ServerConfig, Vec<Warning>), ConfigError> {
    let mut lw = Lowerer::new(Arc::from(origin), base_dir);
    let mut c = Common::default();
    let mut s = ServerState::default();
    let mut mgmt = ManagementState::default();
    let mut scripts = ScriptState::default();
    let supported: Vec<&'static str> = SERVER_DIRECTIVES
        .iter()
        .chain(MANAGEMENT_DIRECTIVES)
        .chain(SERVER_SCRIPT_DIRECTIVES)
        .chain(COMMON_DIRECTIVES)
        .copied()
        .collect();

    lw.run(directives, Side::Server, &supported, |lw, v| {
        if c.apply(lw, v)? || mgmt.apply(v)? || scripts.apply(v, SERVER_SCRIPT_DIRECTIVES, lw)? {
            return Ok(true);
        }
        s.apply(lw, v)
    })?;
    let management = mgmt.finish()?;
    let mut scripts = scripts.finish()?;
    scripts.setenv = std::mem::take(&mut lw.setenv);
    c.check()?;
    c.notes(&mut lw);

    let file = Arc::clone(&lw.file);
    let missing = |directive, why| ConfigError::Missing {
        file: Arc::clone(&file),
        directive,
        why,
    };
    let server = s.server.ok_or_else(|| {
        missing(
            "server",
            "warren needs `server NETWORK NETMASK` (for example `server 10.8.0.0 255.255.255.0`) to \
             assign client addresses",
        )
    })?;
    let ca =
        c.ca.clone()
            .ok_or_else(|| missing("ca", "the CA that signed client certificates"))?;
    let cert = c
        .cert
        .clone()
        .ok_or_else(|| missing("cert", "the server's certificate"))?;
    let key = c
        .key
        .clone()
        .ok_or_else(|| missing("key", "the server certificate's private key"))?;
    let (dev, dev_type) = c.device(&lw)?;

    if let Some(loc) = &s.verify_client_cert_loc
        && s.verify_client_cert != VerifyClientCert::Require
    {
        // OpenVPN options.c: "--verify-client-cert none|optional must be
        // used with --management-client-auth, an --auth-user-pass-verify
        // script, or plugin"; warren has none of them yet.
        return Err(ConfigError::Unsupported {
            location: loc.clone(),
            name: "verify-client-cert".into(),
            reason: "`none`/`optional` need a username/password check, which warren does not have yet; \
                         without one any client could connect",
        });
    }
    if let Some((Some(_), loc)) = &s.dh {
        lw.warn(
            loc,
            "dh",
            "DH parameters are not used: warren negotiates ECDHE only; `dh none` says so explicitly",
        );
    }
    if let (Some(loc), None) = (&s.ccd_exclusive, &s.client_config_dir) {
        return Err(ConfigError::Conflict {
            location: loc.clone(),
            message: "`ccd-exclusive` needs `client-config-dir DIR` (the files clients must have)"
                .into(),
        });
    }
    let state = match (s.state_dir, s.auth) {
        (Some(dir), auth) => Some(StateDir {
            dir,
            auth: auth.map(|(a, _)| a).unwrap_or_default(),
        }),
        (None, Some((_, loc))) => {
            return Err(ConfigError::Conflict {
                location: loc,
                message: "`warren-auth` needs `warren-state-dir DIR` (the users to check against)"
                    .into(),
            });
        }
        (None, None) => None,
    };
    let proto = s.proto.unwrap_or_default();
    if proto.is_tcp()
        && s.tcp_listen.is_empty()
        && let Some((_, loc)) = &c.explicit_exit_notify
    {
        lw.warn(
            loc,
            "explicit-exit-notify",
            "has no effect over TCP (OpenVPN ignores it too)",
        );
    }

    if let Some((_, loc)) = &s.port_share
        && !proto.is_tcp()
        && s.tcp_listen.is_empty()
    {
        // OpenVPN options.c: "--port-share only works in TCP server mode".
        return Err(ConfigError::Conflict {
            location: loc.clone(),
            message: "`port-share` shares a TCP port: add `proto tcp-server` (or `warren-listen \
                      tcp PORT` next to UDP)"
                .into(),
        });
    }

    // OpenVPN helper.c helper_client_server, options.c: `server-ipv6` stands for
    // `ifconfig-ipv6` and `ifconfig-ipv6-pool`, and a pool needs the server's own address.
    let conflict = |location: &Location, message: &'static str| ConfigError::Conflict {
        location: location.clone(),
        message: message.into(),
    };
    if s.server_ipv6.is_some() {
        if let Some((_, loc)) = &s.ifconfig_ipv6_pool {
            return Err(conflict(
                loc,
                "`server-ipv6` already defines the IPv6 pool (prefix + 0x1000); remove \
                 `ifconfig-ipv6-pool`",
            ));
        }
        if let Some((_, loc)) = &c.ifconfig_ipv6 {
            return Err(conflict(
                loc,
                "`server-ipv6` already gives the server its IPv6 address (prefix + 1); remove \
                 `ifconfig-ipv6`",
            ));
        }
    }
    if let Some((_, loc)) = &s.ifconfig_ipv6_pool
        && c.ifconfig_ipv6.is_none()
    {
        return Err(conflict(
            loc,
            "`ifconfig-ipv6-pool` needs `ifconfig-ipv6 ADDR/BITS REMOTE` (the server's own \
             address); or use `server-ipv6 PREFIX/BITS`, which sets both",
        ));
    }
    let first_route = c
        .route_ipv6
        .first()
        .map(|r| ("route-ipv6", r.network.to_string()))
        .or_else(|| s.routes.first().map(|r| ("route", r.to_string())));
    if let Some((name, net)) = first_route
        && s.client_config_dir.is_none()
        && state.is_none()
    {
        let loc = lw.file_location();
        lw.warn(
            &loc,
            name,
            format!(
                "{net} is routed into the tun, but no client owns it: give a client the network \
                 with `iroute`/`iroute-ipv6` in a `client-config-dir` file (or `warren user set \
                 NAME --subnet` with a state directory); until then its packets are dropped"
            ),
        );
    }
    if let (Some((_, loc)), Some(m)) = (&s.client_config_dir, &management)
        && m.client_auth
    {
        return Err(ConfigError::Conflict {
            location: loc.clone(),
            message: "`client-config-dir` together with `management-client-auth` is not \
                      supported yet; use one of them"
                .into(),
        });
    }
    if let (Some(loc), Some(_)) = (
        &s.block_ipv6,
        s.ifconfig_ipv6_pool.as_ref().or(s.server_ipv6.as_ref()),
    ) {
        lw.warn(
            loc,
            "block-ipv6",
            "every IPv6 packet from a client is answered with \"no route\", so the clients' \
             IPv6 addresses from the pool carry nothing to the server",
        );
    }
    let ipv6_loc = s
        .server_ipv6
        .as_ref()
        .or(s.ifconfig_ipv6_pool.as_ref())
        .map(|(_, l)| l.clone());

    let tls_crypt_v2 = match (c.tls_crypt_v2.clone(), s.tls_crypt_v2_max_age) {
        (Some(v2), max_age) => Some(TlsCryptV2 {
            max_age_days: max_age.map(|(d, _)| d),
            ..v2
        }),
        (None, Some((_, loc))) => {
            return Err(ConfigError::Conflict {
                location: loc,
                message: "`tls-crypt-v2-max-age` needs `tls-crypt-v2 FILE` (the server key)".into(),
            });
        }
        (None, None) => None,
    };
    let data_ciphers = c.data_ciphers();
    let tls_groups = c.groups();
    let tls_auth = c.tls_auth();
    let cfg = ServerConfig {
        port: c.local_port.unwrap_or(defaults::PORT),
        proto,
        tcp_listen: s.tcp_listen,
        access: s.access,
        local: c.local.clone(),
        dev,
        dev_type,
        ca,
        cert,
        key,
        dh: s.dh.and_then(|(m, _)| m),
        tls_crypt: c.tls_crypt.as_ref().map(|(m, _)| m.clone()),
        tls_auth,
        tls_crypt_v2,
        auth: c.auth.as_ref().map(|(a, _)| a.clone()),
        server,
        topology: s.topology.unwrap_or(Topology::Net30),
        server_ipv6: s.server_ipv6.map(|(p, _)| p),
        ifconfig_ipv6: c.ifconfig_ipv6.as_ref().map(|(i, _)| *i),
        ifconfig_ipv6_pool: s.ifconfig_ipv6_pool.map(|(p, _)| p),
        route_ipv6: c.route_ipv6.clone(),
        block_ipv6: s.block_ipv6.is_some(),
        routes: s.routes,
        client_config_dir: s.client_config_dir.map(|(d, _)| d),
        ccd_exclusive: s.ccd_exclusive.is_some(),
        push: {
            let mut push = s.push;
            if s.tcp_nodelay {
                // helper.c helper_tcp_nodelay: the server pushes it to its clients (warren's
                // own TCP sockets always have TCP_NODELAY).
                push.push("socket-flags TCP_NODELAY".to_owned());
            }
            push
        },
        keepalive: c.keepalive.map(|(k, _)| k),
        ping: c.ping.map(|(p, _)| p),
        ping_restart: c.ping_restart.map(|(p, _)| p),
        data_ciphers,
        data_ciphers_fallback: c.data_ciphers_fallback.clone(),
        cipher: c.cipher.clone(),
        tls_version_min: c.tls_version_min.map(|(v, _)| v),
        tls_version_max: c.tls_version_max,
        tls_groups,
        tls_cipher: c.tls_cipher.clone(),
        tls_ciphersuites: c.tls_ciphersuites.clone(),
        reneg_sec: c.reneg_sec,
        hand_window: c.hand_window,
        tls_timeout: c.tls_timeout,
        client_to_client: s.client_to_client,
        duplicate_cn: s.duplicate_cn,
        max_clients: s.max_clients,
        max_half_open: s.max_half_open,
        max_half_open_per_source: s.max_half_open_per_source,
        explicit_exit_notify: c.explicit_exit_notify.map(|(n, _)| n),
        remote_cert_tls: c.remote_cert_tls,
        verify_x509_name: c.verify_x509_name.clone(),
        crl_verify: s.crl_verify,
        crl_verify_dir: s.crl_verify_dir,
        verify_client_cert: s.verify_client_cert,
        persist_key: c.persist_key,
        persist_tun: c.persist_tun,
        user: s.user,
        group: s.group,
        verb: c.verb.unwrap_or(1),
        status: s.status,
        status_version: s.status_version.unwrap_or(1),
        tun_mtu: c.tun_mtu,
        mssfix: c.mssfix,
        sndbuf: c.sndbuf,
        rcvbuf: c.rcvbuf,
        key_derivation: c.key_derivation,
        offload: c.offload.unwrap_or(true),
        workers: s.workers,
        state,
        nat: s.nat,
        port_share: s.port_share.map(|(target, _)| target),
        management,
        metrics: s.metrics,
        scripts,
        source: PathBuf::from(origin),
    };
    if let (Some(v6), Some(loc)) = (cfg.ipv6(), ipv6_loc) {
        // OpenVPN pool.c ifconfig_pool_init: one index serves both families, so the
        // smaller pool limits the clients.
        let v4 = cfg.pool_size();
        let size6 = v6.pool_size();
        if size6 < v4 {
            lw.warn(
                &loc,
                if cfg.server_ipv6.is_some() {
                    "server-ipv6"
                } else {
                    "ifconfig-ipv6-pool"
                },
                format!(
                    "the IPv4 pool has {v4} addresses, the IPv6 pool {size6}: only {size6} clients \
                     can connect (OpenVPN warns about this too); use a larger IPv6 prefix"
                ),
            );
        }
    }
    Ok((cfg, lw.warnings))
}

#[derive(Default)]
struct ServerState {
    proto: Option<Proto>,
    /// `tls-crypt-v2-max-age DAYS`.
    tls_crypt_v2_max_age: Option<(u32, Location)>,
    server: Option<(Ipv4Addr, Ipv4Addr)>,
    topology: Option<Topology>,
    push: Vec<String>,
    /// `None` inside for `dh none`.
    dh: Option<(Option<Material>, Location)>,
    client_to_client: bool,
    duplicate_cn: bool,
    max_clients: Option<u32>,
    max_half_open: Option<u32>,
    max_half_open_per_source: Option<u32>,
    workers: Option<u16>,
    tcp_listen: Vec<u16>,
    access: Vec<AccessDirective>,
    tcp_nodelay: bool,
    nat: Option<NatConfig>,
    state_dir: Option<PathBuf>,
    auth: Option<(UserAuth, Location)>,
    verify_client_cert: VerifyClientCert,
    verify_client_cert_loc: Option<Location>,
    user: Option<String>,
    group: Option<String>,
    status: Option<(PathBuf, u32)>,
    status_version: Option<u8>,
    crl_verify: Option<(Material, Location)>,
    port_share: Option<((String, u16), Location)>,
    metrics: Option<SocketAddr>,
    crl_verify_dir: Option<(PathBuf, Location)>,
    server_ipv6: Option<(Ipv6Prefix, Location)>,
    ifconfig_ipv6_pool: Option<(Ipv6Prefix, Location)>,
    block_ipv6: Option<Location>,
    routes: Vec<ServerRoute>,
    client_config_dir: Option<(PathBuf, Location)>,
    ccd_exclusive: Option<Location>,
}

impl ServerState {
    fn apply(&mut self, lw: &mut Lowerer<'_>, v: &View<'_>) -> Result<bool, ConfigError> {
        match v.name {
            "tls-crypt-v2-max-age" => {
                // OpenVPN 2.7 options.c: days, 1 to INT_MAX.
                v.expect(1, 1, "1 parameter (days)")?;
                let days = v.u32_at(0)?;
                if days == 0 || days > i32::MAX as u32 {
                    return Err(v.invalid(0, "expected a number of days from 1"));
                }
                self.tls_crypt_v2_max_age = Some((days, v.loc.clone()));
            }
            "proto" => {
                v.expect(1, 1, "1 parameter (udp, udp4, udp6 or tcp-server)")?;
                // OpenVPN socket.c proto_names; in server mode `tcp` means
                // tcp-server (options.c options_postprocess_mutate_ce).
                self.proto = Some(match v.arg(0) {
                    "udp" => Proto::Udp,
                    "udp4" => Proto::Udp4,
                    "udp6" => Proto::Udp6,
                    "tcp" | "tcp-server" => Proto::TcpServer,
                    "tcp4" | "tcp4-server" => Proto::Tcp4Server,
                    "tcp6" | "tcp6-server" => Proto::Tcp6Server,
                    "tcp-client" | "tcp4-client" | "tcp6-client" => {
                        return Err(v.invalid(0, "a server listens with `tcp-server` (or `udp`)"));
                    }
                    _ => return Err(v.invalid(0, "expected udp, udp4, udp6 or tcp-server")),
                });
            }
            "mode" => {
                v.expect(1, 1, "1 parameter (server)")?;
                match v.arg(0) {
                    "server" => {}
                    "p2p" => {
                        return Err(v.invalid(
                            0,
                            "point-to-point mode is not supported; use `mode server` with `server`",
                        ));
                    }
                    _ => return Err(v.invalid(0, "expected `server`")),
                }
            }
            "tls-server" => v.expect(0, 0, "no parameters")?,
            "server" => {
                v.expect(2, 3, "2 parameters (network and netmask)")?;
                if v.args.len() == 3 {
                    return Err(if v.arg(2) == "nopool" {
                        v.invalid(
                            2,
                            "`nopool` is not supported yet; warren assigns addresses from the pool",
                        )
                    } else {
                        v.invalid(2, "the only flag OpenVPN knows here is `nopool`")
                    });
                }
                let net = v.ipv4_at(0)?;
                let mask = v.ipv4_at(1)?;
                check_server_net(v, net, mask)?;
                self.server = Some((net, mask));
            }
            "topology" => {
                v.expect(1, 1, "1 parameter (subnet, net30 or p2p)")?;
                self.topology = Some(match v.arg(0) {
                    "subnet" => Topology::Subnet,
                    "net30" => Topology::Net30,
                    "p2p" => Topology::P2p,
                    _ => return Err(v.invalid(0, "expected subnet, net30 or p2p")),
                });
            }
            "push" => {
                v.expect(1, 1, "1 parameter (the quoted option to push)")?;
                let opt = v.arg(0).trim();
                if opt.is_empty() {
                    return Err(v.invalid(0, "nothing to push"));
                }
                // One option of a PUSH_REPLY is at most 255 characters; a longer one is
                // lost on the client, so refuse it here.
                if opt.len() > 255 {
                    return Err(v.invalid(
                        0,
                        "an option longer than 255 characters is lost on the client",
                    ));
                }
                let first = opt.split_ascii_whitespace().next().unwrap_or("");
                if matches!(first, "comp-lzo" | "compress") {
                    return Err(ConfigError::Unsupported {
                        location: v.loc.clone(),
                        name: format!("push \"{first}\""),
                        reason: "compression is refused (VORACLE), and pushing it would make clients \
                                 expect a framing warren does not send",
                    });
                }
                self.push.push(v.arg(0).to_owned());
            }
            "dh" => {
                let m = if v.inline.is_none() && v.args.len() == 1 && v.arg(0) == "none" {
                    None
                } else {
                    Some(v.material(lw.base_dir, 0)?)
                };
                self.dh = Some((m, v.loc.clone()));
            }
            "client-to-client" => {
                v.expect(0, 0, "no parameters")?;
                self.client_to_client = true;
            }
            "duplicate-cn" => {
                v.expect(0, 0, "no parameters")?;
                self.duplicate_cn = true;
            }
            "tcp-nodelay" => {
                v.expect(0, 0, "no parameters")?;
                self.tcp_nodelay = true;
            }
            "warren-listen" => {
                // warren serves UDP and TCP from one process: `warren-listen tcp PORT`
                // adds a TCP listener (on `local`, like the main socket).
                v.expect(2, 2, "2 parameters (`tcp` and a port)")?;
                if v.arg(0) != "tcp" {
                    return Err(v.invalid(
                        0,
                        "expected `tcp` (the UDP socket is set with `proto udp` and `port`)",
                    ));
                }
                let port = v.u32_at(1)?;
                let port = u16::try_from(port)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| v.invalid(1, "expected a port from 1 to 65535"))?;
                if self.tcp_listen.contains(&port) {
                    return Err(v.invalid(1, "this TCP port is already listed"));
                }
                self.tcp_listen.push(port);
            }
            "warren-access" => {
                // Checked by the data plane: the rule text is parsed by the server.
                v.expect(3, 3, "3 parameters (a common name, allow or deny, a rule)")?;
                let allow = match v.arg(1) {
                    "allow" => true,
                    "deny" => false,
                    _ => return Err(v.invalid(1, "expected allow or deny")),
                };
                if v.arg(0).is_empty() {
                    return Err(v.invalid(0, "empty common name"));
                }
                self.access.push(AccessDirective {
                    identity: v.arg(0).to_owned(),
                    allow,
                    rule: v.arg(2).to_owned(),
                    location: v.loc.clone(),
                });
            }
            "warren-workers" => {
                // A driver choice: the main thread plus N-1 data workers.
                v.expect(1, 1, "1 parameter (a thread count or `auto`)")?;
                self.workers = match v.arg(0) {
                    "auto" => None,
                    _ => match v.u32_at(0)? {
                        n @ 1..=64 => Some(n as u16),
                        _ => {
                            return Err(
                                v.invalid(0, "expected `auto` or a thread count from 1 to 64")
                            );
                        }
                    },
                };
            }
            "warren-nat" => {
                // Done by the CLI through warren-net: an nftables table of warren's
                // own, removed at exit.
                v.expect(
                    1,
                    2,
                    "1 or 2 parameters (on or off, then optionally the uplink)",
                )?;
                self.nat = match (v.arg(0), v.args.len()) {
                    ("off", 1) => None,
                    ("off", _) => return Err(v.invalid(1, "`warren-nat off` takes no uplink")),
                    ("on", 1) => Some(NatConfig::default()),
                    ("on", _) => {
                        let dev = v.arg(1);
                        // The kernel's IFNAMSIZ: 15 bytes, no `/`, no white space.
                        if dev.is_empty()
                            || dev.len() > 15
                            || dev.contains('/')
                            || dev.chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            return Err(v.invalid(1, "not a network device name"));
                        }
                        Some(NatConfig {
                            uplink: Some(dev.to_owned()),
                        })
                    }
                    _ => return Err(v.invalid(0, "expected on or off")),
                };
            }
            "warren-state-dir" => {
                // Read by the CLI: users, revocations and leases from warren's state.
                v.expect(1, 1, "1 parameter (a directory)")?;
                if v.arg(0).is_empty() {
                    return Err(v.invalid(0, "empty directory name"));
                }
                self.state_dir = Some(resolve_path(v.arg(0), lw.base_dir));
            }
            "warren-auth" => {
                v.expect(1, 1, "1 parameter (cert, cert+password or password)")?;
                let auth = match v.arg(0) {
                    "cert" => UserAuth::Cert,
                    "cert+password" => UserAuth::CertPassword,
                    "password" => UserAuth::Password,
                    _ => return Err(v.invalid(0, "use cert, cert+password or password")),
                };
                self.auth = Some((auth, v.loc.clone()));
            }
            "max-clients" => {
                v.expect(1, 1, "1 parameter (a count)")?;
                let n = v.u32_at(0)?;
                // OpenVPN options.c: 1 .. MAX_PEER_ID (0xFFFFFF) exclusive.
                if n == 0 || n >= 0x00FF_FFFF {
                    return Err(v.invalid(0, "must be between 1 and 16777214"));
                }
                self.max_clients = Some(n);
            }
            "warren-max-half-open" | "warren-max-half-open-per-source" => {
                // Sessions that proved their address but have not finished the
                // handshake; the engine bounds them apart from max-clients.
                v.expect(1, 1, "1 parameter (a count)")?;
                let n = v.u32_at(0)?;
                if n == 0 || n >= 0x00FF_FFFF {
                    return Err(v.invalid(0, "must be between 1 and 16777214"));
                }
                if v.name == "warren-max-half-open" {
                    self.max_half_open = Some(n);
                } else {
                    self.max_half_open_per_source = Some(n);
                }
            }
            "verify-client-cert" => {
                v.expect(0, 1, "0 or 1 parameters (none, optional or require)")?;
                self.verify_client_cert = match v.args.first().map(|a| a.value.as_str()) {
                    None | Some("require") => VerifyClientCert::Require,
                    Some("optional") => VerifyClientCert::Optional,
                    Some("none") => VerifyClientCert::None,
                    Some(_) => return Err(v.invalid(0, "expected none, optional or require")),
                };
                self.verify_client_cert_loc = Some(v.loc.clone());
            }
            "user" => {
                v.expect(1, 1, "1 parameter (a user name)")?;
                self.user = Some(v.arg(0).to_owned());
            }
            "group" => {
                v.expect(1, 1, "1 parameter (a group name)")?;
                self.group = Some(v.arg(0).to_owned());
            }
            "status" => {
                v.expect(
                    1,
                    2,
                    "1 or 2 parameters (a file and an interval in seconds)",
                )?;
                if v.arg(0).is_empty() {
                    return Err(v.invalid(0, "empty file name"));
                }
                let secs = if v.args.len() == 2 {
                    v.u32_at(1)?
                } else {
                    defaults::STATUS_SECS
                };
                self.status = Some((PathBuf::from(v.arg(0)), secs));
            }
            "warren-metrics" => {
                // Served by the driver on a thread of its own (warren-driver metrics.rs).
                v.expect(
                    1,
                    1,
                    "1 parameter (an address and port, e.g. 127.0.0.1:9586)",
                )?;
                let arg = v.arg(0);
                let addr = match (arg.parse::<SocketAddr>(), arg.parse::<IpAddr>()) {
                    (Ok(a), _) => a,
                    (_, Ok(ip)) => SocketAddr::new(ip, defaults::METRICS_PORT),
                    _ => {
                        return Err(v.invalid(
                            0,
                            "expected ADDRESS:PORT or ADDRESS, e.g. 127.0.0.1:9586 (IPv6 in \
                             brackets: [::1]:9586)",
                        ));
                    }
                };
                if addr.port() == 0 {
                    return Err(v.invalid(0, "expected a port from 1 to 65535"));
                }
                if !addr.ip().is_loopback() {
                    lw.warn(
                        &v.loc,
                        "warren-metrics",
                        format!(
                            "metrics are served without authentication on {addr}: anyone who \
                             can reach it sees client counts and traffic; prefer a loopback \
                             address or firewall the port"
                        ),
                    );
                }
                self.metrics = Some(addr);
            }
            "port-share" => {
                // OpenVPN options.c: `port-share HOST PORT [DIR]`.
                v.expect(
                    2,
                    3,
                    "2 or 3 parameters (a host, a port, optionally a journal directory)",
                )?;
                if v.arg(0).is_empty() {
                    return Err(v.invalid(0, "empty host"));
                }
                let port = u16::try_from(v.u32_at(1)?)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| v.invalid(1, "expected a port from 1 to 65535"))?;
                if v.args.len() == 3 {
                    return Err(ConfigError::Unsupported {
                        location: v.loc.clone(),
                        name: "port-share HOST PORT DIR".into(),
                        reason: "the journal directory (the original client address for the \
                                 backend) is not supported yet; remove DIR",
                    });
                }
                self.port_share = Some(((v.arg(0).to_owned(), port), v.loc.clone()));
            }
            "crl-verify" => {
                // The last line wins, as in OpenVPN.
                match crl_verify(v, lw.base_dir)? {
                    (CrlVerify::File(m), loc) => {
                        self.crl_verify = Some((m, loc));
                        self.crl_verify_dir = None;
                    }
                    (CrlVerify::Dir(d), loc) => {
                        self.crl_verify_dir = Some((d, loc));
                        self.crl_verify = None;
                    }
                }
            }
            "server-ipv6" => {
                // OpenVPN options.c: `server-ipv6 PREFIX/BITS`, 64 <= BITS <= 124.
                v.expect(1, 1, "1 parameter (prefix/bits, e.g. fd00:8::/64)")?;
                let p = v.ipv6_prefix_at(0, 64..=124)?;
                if p.network() != p.addr {
                    return Err(v.invalid(
                        0,
                        format!(
                            "the prefix has host bits set; did you mean {}/{}?",
                            p.network(),
                            p.len
                        ),
                    ));
                }
                self.server_ipv6 = Some((p, v.loc.clone()));
            }
            "block-ipv6" => {
                v.expect(0, 0, "no parameters")?;
                self.block_ipv6 = Some(v.loc.clone());
            }
            "route" => {
                // OpenVPN options.c: `route NETWORK [NETMASK] [GATEWAY] [METRIC]`.
                v.expect(
                    1,
                    4,
                    "1 to 4 parameters (network, netmask, gateway, metric)",
                )?;
                let net = v.ipv4_at(0).map_err(|_| {
                    v.invalid(
                        0,
                        "a server route needs an IPv4 network (names and vpn_gateway are not \
                         supported here)",
                    )
                })?;
                let len = match v.args.get(1).map(|a| a.value.as_str()) {
                    None | Some("default") => 32,
                    Some(_) => crate::ccd::mask_len(v.ipv4_at(1)?).ok_or_else(|| {
                        v.invalid(1, "the netmask is not contiguous (like 255.255.255.0)")
                    })?,
                };
                let network = Ipv4Addr::from(
                    u32::from(net) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0),
                );
                if network != net {
                    return Err(v.invalid(
                        0,
                        format!("host bits are set for this netmask; did you mean {network}?"),
                    ));
                }
                let metric = match v.args.get(3).map(|a| a.value.as_str()) {
                    None | Some("default") => None,
                    Some(_) => Some(v.u32_at(3)?),
                };
                self.routes.push(ServerRoute {
                    network,
                    len,
                    metric,
                });
            }
            "client-config-dir" => {
                v.expect(1, 1, "1 parameter (a directory)")?;
                self.client_config_dir = Some((
                    crate::material::resolve_path(v.arg(0), lw.base_dir),
                    v.loc.clone(),
                ));
            }
            "ccd-exclusive" => {
                v.expect(0, 0, "no parameters")?;
                self.ccd_exclusive = Some(v.loc.clone());
            }
            "ifconfig-ipv6-pool" => {
                // OpenVPN options.c: `ifconfig-ipv6-pool ADDR/BITS`, 64 <= BITS <= 124;
                // ADDR is the first address handed out.
                v.expect(
                    1,
                    1,
                    "1 parameter (first address/bits, e.g. fd00:8::1000/64)",
                )?;
                self.ifconfig_ipv6_pool = Some((v.ipv6_prefix_at(0, 64..=124)?, v.loc.clone()));
            }
            "status-version" => {
                v.expect(1, 1, "1 parameter (1, 2 or 3)")?;
                self.status_version = Some(match v.arg(0) {
                    "1" => 1,
                    "2" => 2,
                    "3" => 3,
                    _ => return Err(v.invalid(0, "expected 1, 2 or 3")),
                });
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// OpenVPN helper.c helper_client_server: the netmask must be contiguous, the
/// network aligned to it, and for tun devices between /16 and /29.
fn check_server_net(v: &View<'_>, net: Ipv4Addr, mask: Ipv4Addr) -> Result<(), ConfigError> {
    let m = u32::from(mask);
    let prefix = m.leading_ones();
    if m.checked_shl(prefix).unwrap_or(0) != 0 {
        return Err(v.invalid(
            1,
            "the netmask is not contiguous (expected something like 255.255.255.0)",
        ));
    }
    if !(16..=29).contains(&prefix) {
        return Err(v.invalid(
            1,
            format!("a /{prefix} is not allowed: the server subnet must be between /16 and /29"),
        ));
    }
    let n = u32::from(net);
    if n & !m != 0 {
        return Err(v.invalid(
            0,
            format!(
                "the network is not aligned to the netmask {mask}; did you mean {}?",
                Ipv4Addr::from(n & m)
            ),
        ));
    }
    Ok(())
}

/// `crl-verify FILE [dir]` or an inline `<crl-verify>` block (OpenVPN options.c), on either
/// side: the CRL's source and the line that named it.
pub(crate) fn crl_verify(
    v: &View<'_>,
    base_dir: &Path,
) -> Result<(CrlVerify, Location), ConfigError> {
    if v.inline.is_none() {
        v.expect(
            1,
            2,
            "1 or 2 parameters (a CRL file, optionally followed by `dir`) or an inline \
 block",
        )?;
    }
    if v.inline.is_none() && v.args.len() == 2 {
        if v.arg(1) != "dir" {
            return Err(v.invalid(1, "the only second parameter is `dir`"));
        }
        if v.arg(0).is_empty() {
            return Err(v.invalid(0, "an empty directory name"));
        }
        return Ok((
            CrlVerify::Dir(resolve_path(v.arg(0), base_dir)),
            v.loc.clone(),
        ));
    }
    let m = v.material(base_dir, 0)?;
    Ok((CrlVerify::File(m), v.loc.clone()))
}

/// What a `crl-verify` line names.
pub(crate) enum CrlVerify {
    /// A CRL file or inline block.
    File(Material),
    /// `crl-verify DIR dir`: one file per revoked serial (decimal).
    Dir(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(extra: &str) -> Result<ServerConfig, ConfigError> {
        let text = format!(
            "ca a\ncert b\nkey c\nserver 10.8.0.0 255.255.255.0\ntopology subnet\n{extra}\n"
        );
        server_config_from_str(&text, "s.conf", Path::new(".")).map(|(c, _)| c)
    }

    #[test]
    fn warren_metrics() {
        assert_eq!(lower("").expect("ok").metrics, None);
        let addr = |s: &str| lower(s).expect("ok").metrics.expect("an address");
        assert_eq!(
            addr("warren-metrics 127.0.0.1:9100"),
            "127.0.0.1:9100".parse().expect("addr")
        );
        assert_eq!(
            addr("warren-metrics ::1"),
            "[::1]:9586".parse().expect("addr")
        );
        assert_eq!(
            addr("warren-metrics [::1]:1"),
            "[::1]:1".parse().expect("addr")
        );
        let text =
            "ca a\ncert b\nkey c\nserver 10.8.0.0 255.255.255.0\nwarren-metrics 0.0.0.0:9586\n";
        let (c, w) = server_config_from_str(text, "s.conf", Path::new(".")).expect("ok");
        assert_eq!(c.metrics, Some("0.0.0.0:9586".parse().expect("addr")));
        assert!(
            w.iter()
                .any(|w| w.to_string().contains("without authentication")),
            "{w:?}"
        );
        for bad in [
            "warren-metrics",
            "warren-metrics localhost:9586",
            "warren-metrics 127.0.0.1:0",
            "warren-metrics 127.0.0.1:9586 extra",
            "warren-metrics 127.0.0.1:70000",
        ] {
            let e = lower(bad).expect_err(bad).to_string();
            assert!(e.contains("warren-metrics"), "{bad}: {e}");
        }
    }

    #[test]
    fn warren_nat() {
        assert_eq!(lower("").expect("ok").nat, None);
        assert_eq!(lower("warren-nat off").expect("ok").nat, None);
        assert_eq!(
            lower("warren-nat on").expect("ok").nat,
            Some(NatConfig::default())
        );
        assert_eq!(
            lower("warren-nat on\nwarren-nat off").expect("ok").nat,
            None,
            "the last one wins"
        );
        let c = lower("warren-nat on eth0").expect("ok");
        assert_eq!(c.nat.and_then(|n| n.uplink).as_deref(), Some("eth0"));
        for bad in [
            "warren-nat",
            "warren-nat yes",
            "warren-nat off eth0",
            "warren-nat on a/b",
            "warren-nat on averyveryverylongname",
        ] {
            let e = lower(bad).expect_err(bad).to_string();
            assert!(e.contains("warren-nat"), "{bad}: {e}");
        }
    }
}
