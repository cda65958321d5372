//! `warren server`: from `server.conf` to a running loop.
//!
//! The order matters: the signal descriptor first (before any thread exists), then the
//! config, logging, the engine, the privileged resources (tun, socket), the privilege drop,
//! and finally the loop.
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tracing::{info, warn};
use warren_crypto::{CipherKind, Digest, KeyDirection, StaticKey};
use warren_io::{Clock, OsRng, Signals, Tun, TunConfig, UdpBind, UdpFamily, UdpSocket};
use warren_openvpn::tls::{ClientCertMode, ServerTlsOptions};
use warren_openvpn::{KeyDerivation, Server, ServerConfig, WrapConfig};

use crate::logging;

/// OpenVPN 2.6 defaults for what `server.conf` leaves out.
const DEFAULT_RENEG_SEC: u32 = 3600;
const DEFAULT_HAND_WINDOW: u32 = 60;
const DEFAULT_TLS_TIMEOUT: u32 = 2;
const DEFAULT_MAX_CLIENTS: u32 = 1024;
const DEFAULT_TUN_MTU: u16 = 1500;
/// `status FILE` without a period: OpenVPN rewrites it every 60 s.
const DEFAULT_STATUS_SECS: u32 = 60;
/// How long the loop keeps running after SIGTERM to deliver exit notifications.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub fn run(config_path: &Path, verbose: u8, quiet: u8) -> Result<()> {
    // Before anything can spawn a thread: the mask is inherited.
    let signals = Signals::new().context("setting up signal handling")?;

    // Config errors already read "server.conf:12: ..."; no extra context in front.
    let (cfg, warnings) =
        warren_config::load_server_config(config_path).map_err(anyhow::Error::new)?;

    logging::init(logging::adjust(
        logging::level_for_verb(cfg.verb),
        verbose,
        quiet,
    ));
    for w in &warnings {
        warn!("{w}");
    }

    let clock = Clock::new().context("reading the system clocks")?;
    let plan = Plan::from_config(&cfg, clock.unix_time_at_zero())?;
    for note in &plan.notes {
        info!("{note}");
    }

    let rng = OsRng::new().context("the kernel random generator (getrandom) is unavailable")?;
    let server = Server::new(plan.engine.clone(), Box::new(rng));
    let tun_addr = server.tun_address();
    let tun = Tun::open(&TunConfig {
        name: plan.dev.clone(),
        address: tun_addr,
        prefix: plan.prefix,
        mtu: plan.engine.tun_mtu,
    })
    .with_context(|| format!("opening tun device `{}`", plan.dev))?;
    let socket = UdpSocket::bind(&plan.bind).context("opening the UDP socket")?;

    // Opened before the privilege drop, like OpenVPN, so `user nobody` can still update it.
    let status = match &cfg.status {
        Some((path, secs)) => Some(warren_driver::StatusOptions {
            file: warren_driver::status::StatusFile::open(path)
                .context("opening the `status` file")?,
            interval: Duration::from_secs(u64::from(if *secs == 0 {
                DEFAULT_STATUS_SECS
            } else {
                *secs
            })),
            version: warren_driver::status::StatusVersion::from_number(cfg.status_version)
                .ok_or_else(|| {
                    anyhow!(
                        "status-version {} is not supported (use 1, 2 or 3)",
                        cfg.status_version
                    )
                })?,
        }),
        None => None,
    };

    if cfg.user.is_some() || cfg.group.is_some() {
        let (uid, gid) = warren_io::drop_privileges(cfg.user.as_deref(), cfg.group.as_deref())
            .context("dropping privileges (`user`/`group`)")?;
        info!("dropped privileges to uid {uid}, gid {gid}");
    }

    info!(
        "warren server listening on udp {}, tun {} {}/{}, {} clients max, {}, ciphers {}",
        socket.local_addr(),
        tun.name(),
        tun_addr,
        plan.prefix,
        plan.engine.max_clients,
        wrap_name(&plan.engine.wrap),
        plan.engine
            .data_ciphers
            .iter()
            .map(|c| warren_driver::cipher_name(*c))
            .collect::<Vec<_>>()
            .join(":"),
    );

    let opts = warren_driver::ServerLoopOptions {
        clock,
        signals,
        status,
        shutdown_grace: SHUTDOWN_GRACE,
        title: format!(
            "warren {} {}-linux",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH
        ),
    };
    warren_driver::run_server(server, tun, socket, opts).context("server loop")?;
    Ok(())
}

fn wrap_name(w: &WrapConfig) -> &'static str {
    match w {
        WrapConfig::None => "no tls-auth/tls-crypt",
        WrapConfig::TlsAuth { .. } => "tls-auth",
        WrapConfig::TlsCrypt { .. } => "tls-crypt",
    }
}

/// Everything derived from the config before any OS resource is touched.
#[derive(Debug)]
struct Plan {
    engine: ServerConfig,
    dev: String,
    prefix: u8,
    bind: UdpBind,
    /// Informational lines about ignored or translated directives.
    notes: Vec<String>,
}

impl Plan {
    fn from_config(cfg: &warren_config::ServerConfig, unix_time_at_zero: u64) -> Result<Plan> {
        let mut notes = Vec::new();
        if let Some(dh) = &cfg.dh {
            let what = dh
                .path()
                .map_or_else(|| "<dh> block".to_owned(), |p| p.display().to_string());
            notes.push(format!(
                "ignoring dh {what}: warren uses ECDHE key exchange only"
            ));
        }
        let bind = udp_bind(
            cfg.proto,
            cfg.local.as_deref(),
            cfg.port,
            cfg.sndbuf,
            cfg.rcvbuf,
        )?;

        let ca = cfg.ca.load().context("reading `ca`")?;
        let cert = cfg.cert.load().context("reading `cert`")?;
        let key = cfg.key.load().context("reading `key`")?;
        let tls_opts = ServerTlsOptions {
            min_version: cfg.tls_version_min.map(tls_version),
            max_version: cfg.tls_version_max.map(tls_version),
            remote_cert_tls: cfg.remote_cert_tls.map(cert_role),
            client_cert: client_cert_mode(cfg.verify_client_cert),
        };
        let tls = warren_openvpn::tls::server_config(&ca, &cert, &key, &tls_opts)
            .context("setting up TLS from `ca`, `cert` and `key`")?;

        let wrap = wrap_config(cfg)?;
        let ka = keepalive(cfg.keepalive, cfg.ping, cfg.ping_restart)?;
        let (data_ciphers, fallback, cipher_note) = ciphers(
            &cfg.data_ciphers,
            cfg.data_ciphers_fallback.as_deref(),
            cfg.cipher.as_deref(),
        )?;
        notes.extend(cipher_note);
        let (network, netmask) = cfg.server;
        let prefix = prefix_len(netmask)?;
        if prefix > 30 {
            bail!(
                "`server {network} {netmask}`: the network is too small for a server and a client (at most /30)"
            );
        }

        let engine = ServerConfig {
            tls,
            wrap,
            network,
            netmask,
            push: cfg.push.clone(),
            ping: ka.ping,
            ping_restart: ka.ping_restart,
            push_ping: ka.push_ping,
            push_ping_restart: ka.push_ping_restart,
            data_ciphers,
            data_ciphers_fallback: fallback,
            reneg: reneg(cfg.reneg_sec),
            hand_window: Duration::from_secs(u64::from(
                cfg.hand_window.unwrap_or(DEFAULT_HAND_WINDOW),
            )),
            tls_timeout: Duration::from_secs(u64::from(
                cfg.tls_timeout.unwrap_or(DEFAULT_TLS_TIMEOUT),
            )),
            client_to_client: cfg.client_to_client,
            duplicate_cn: cfg.duplicate_cn,
            max_clients: usize::try_from(cfg.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS))
                .unwrap_or(usize::MAX),
            explicit_exit_notify: cfg.explicit_exit_notify.is_some_and(|n| n > 0),
            tun_mtu: cfg.tun_mtu.unwrap_or(DEFAULT_TUN_MTU),
            mssfix: mssfix(cfg.mssfix, cfg.tun_mtu.unwrap_or(DEFAULT_TUN_MTU)),
            key_derivation: match cfg.key_derivation {
                warren_config::KeyDerivationPolicy::Auto => KeyDerivation::Auto,
                warren_config::KeyDerivationPolicy::Prf => KeyDerivation::ForcePrf,
            },
            external_auth: false,
            unix_time_at_zero,
        };
        Ok(Plan {
            engine,
            dev: cfg.dev.clone(),
            prefix,
            bind,
            notes,
        })
    }
}

fn tls_version(v: warren_config::TlsVersion) -> warren_openvpn::tls::TlsVersion {
    match v {
        warren_config::TlsVersion::V1_2 => warren_openvpn::tls::TlsVersion::V1_2,
        warren_config::TlsVersion::V1_3 => warren_openvpn::tls::TlsVersion::V1_3,
    }
}

fn cert_role(r: warren_config::CertRole) -> warren_openvpn::tls::CertRole {
    match r {
        warren_config::CertRole::Client => warren_openvpn::tls::CertRole::Client,
        warren_config::CertRole::Server => warren_openvpn::tls::CertRole::Server,
    }
}

fn client_cert_mode(v: warren_config::VerifyClientCert) -> ClientCertMode {
    match v {
        warren_config::VerifyClientCert::None => ClientCertMode::None,
        warren_config::VerifyClientCert::Optional => ClientCertMode::Optional,
        warren_config::VerifyClientCert::Require => ClientCertMode::Require,
    }
}

/// `tls-crypt` / `tls-auth` (with `auth` for the HMAC digest, SHA1 by default as in OpenVPN).
fn wrap_config(cfg: &warren_config::ServerConfig) -> Result<WrapConfig> {
    if let Some(m) = &cfg.tls_crypt {
        let text = m.load().context("reading `tls-crypt`")?;
        let key = StaticKey::parse(&text).context("`tls-crypt` key")?;
        return Ok(WrapConfig::TlsCrypt { key });
    }
    if let Some((m, dir)) = &cfg.tls_auth {
        let text = m.load().context("reading `tls-auth`")?;
        let key = StaticKey::parse(&text).context("`tls-auth` key")?;
        let name = cfg.auth.as_deref().unwrap_or("SHA1");
        let digest = Digest::from_name(name).ok_or_else(|| {
            anyhow!("`auth {name}`: unsupported digest (use SHA1, SHA256 or SHA512)")
        })?;
        let direction = match dir {
            Some(d) => Some(
                KeyDirection::from_arg(*d)
                    .ok_or_else(|| anyhow!("tls-auth key direction {d}: expected 0 or 1"))?,
            ),
            None => None,
        };
        return Ok(WrapConfig::TlsAuth {
            key,
            digest,
            direction,
        });
    }
    Ok(WrapConfig::None)
}

/// The server's own ping timers and the pushed ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Keepalive {
    ping: Option<Duration>,
    ping_restart: Option<Duration>,
    push_ping: Option<u32>,
    push_ping_restart: Option<u32>,
}

/// OpenVPN helper.c `helper_keepalive`, server mode: `keepalive a b` sets the server's ping
/// to a and its ping-restart to 2b, and pushes `ping a` and `ping-restart b`. Explicit
/// `ping`/`ping-restart` (OpenVPN rejects them next to keepalive; the config loader does
/// too) set the server's own timers only.
fn keepalive(
    ka: Option<(u32, u32)>,
    ping: Option<u32>,
    ping_restart: Option<u32>,
) -> Result<Keepalive> {
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    let mut out = Keepalive::default();
    if let Some((a, b)) = ka {
        if a == 0 || b == 0 {
            bail!("`keepalive {a} {b}`: parameters must be > 0");
        }
        if u64::from(a) * 2 > u64::from(b) {
            bail!(
                "`keepalive {a} {b}`: the restart timeout must be at least twice the ping interval (recommended: keepalive 10 60)"
            );
        }
        out.ping = Some(secs(a));
        out.ping_restart = Some(secs(b).saturating_mul(2));
        out.push_ping = Some(a);
        out.push_ping_restart = Some(b);
    }
    if let Some(p) = ping {
        out.ping = (p > 0).then(|| secs(p));
    }
    if let Some(r) = ping_restart {
        out.ping_restart = (r > 0).then(|| secs(r));
    }
    Ok(out)
}

/// OpenVPN mtu.h MSSFIX_DEFAULT: encapsulated packets of at most 1492 bytes.
const MSSFIX_DEFAULT: u16 = 1492;

/// `mssfix`. OpenVPN options.c (options_postprocess_mutate_ce): absent or bare `mssfix`
/// clamps to 1492-byte encapsulated packets when `tun-mtu` is the default 1500; with
/// another tun-mtu OpenVPN only clamps to the tun size, which the tun MTU already
/// enforces for the kernel's own MSS choice, so warren leaves it off. `mssfix 0` disables.
fn mssfix(configured: Option<u16>, tun_mtu: u16) -> Option<u16> {
    match configured {
        Some(0) => None,
        Some(n) => Some(n),
        None if tun_mtu == DEFAULT_TUN_MTU => Some(MSSFIX_DEFAULT),
        None => None,
    }
}

/// `reneg-sec` (default 3600; 0 disables).
fn reneg(v: Option<u32>) -> Option<Duration> {
    match v.unwrap_or(DEFAULT_RENEG_SEC) {
        0 => None,
        s => Some(Duration::from_secs(u64::from(s))),
    }
}

/// A contiguous netmask's prefix length.
fn prefix_len(mask: Ipv4Addr) -> Result<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) != 0 {
        bail!("netmask {mask} is not contiguous");
    }
    Ok(u8::try_from(ones).unwrap_or(32))
}

/// `proto`, `local`, `port`, `sndbuf`, `rcvbuf` as a socket plan.
fn udp_bind(
    proto: warren_config::Proto,
    local: Option<&str>,
    port: u16,
    sndbuf: Option<u32>,
    rcvbuf: Option<u32>,
) -> Result<UdpBind> {
    let family = match proto {
        warren_config::Proto::Udp => UdpFamily::Any,
        warren_config::Proto::Udp4 => UdpFamily::V4,
        warren_config::Proto::Udp6 => UdpFamily::V6,
        warren_config::Proto::TcpServer => {
            bail!("`proto tcp-server`: TCP is not supported yet; use `proto udp`")
        }
    };
    let local = match local {
        None => None,
        Some(s) => Some(resolve_local(s, family)?),
    };
    Ok(UdpBind {
        family,
        local,
        port,
        sndbuf,
        rcvbuf,
    })
}

/// `local` is an address or a host name (resolved once, like OpenVPN at startup).
fn resolve_local(s: &str, family: UdpFamily) -> Result<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip);
    }
    let addrs = (s, 0u16)
        .to_socket_addrs()
        .with_context(|| format!("resolving `local {s}`"))?;
    addrs
        .map(|a| a.ip())
        .find(|ip| match family {
            UdpFamily::V4 => ip.is_ipv4(),
            UdpFamily::V6 => ip.is_ipv6(),
            UdpFamily::Any => true,
        })
        .ok_or_else(|| anyhow!("`local {s}`: no address of the right family"))
}

/// `data-ciphers` and the fallback (`data-ciphers-fallback`, else `cipher`). A fallback
/// warren cannot do (CBC ciphers) is dropped with a note rather than refusing old configs.
fn ciphers(
    list: &[String],
    fallback: Option<&str>,
    cipher: Option<&str>,
) -> Result<(Vec<CipherKind>, Option<CipherKind>, Option<String>)> {
    let defaults = ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"];
    let names: Vec<&str> = if list.is_empty() {
        defaults.to_vec()
    } else {
        list.iter().map(String::as_str).collect()
    };
    let mut kinds = Vec::with_capacity(names.len());
    for n in names {
        let k = CipherKind::from_name(n)
            .ok_or_else(|| anyhow!("`data-ciphers`: {n} is not supported (use AES-256-GCM, AES-128-GCM, CHACHA20-POLY1305)"))?;
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let mut note = None;
    let fb = match fallback.or(cipher) {
        None => None,
        Some(n) => match CipherKind::from_name(n) {
            Some(k) => Some(k),
            None if fallback.is_some() => bail!(
                "`data-ciphers-fallback {n}`: not supported (use an AEAD cipher such as AES-256-GCM)"
            ),
            None => {
                note = Some(format!(
                    "ignoring cipher {n}: warren has no CBC data channel; clients that cannot negotiate data-ciphers (OpenVPN < 2.4) will be refused"
                ));
                None
            }
        },
    };
    Ok((kinds, fb, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_follows_openvpn_helper() {
        let k = keepalive(Some((10, 120)), None, None).expect("ok");
        assert_eq!(k.ping, Some(Duration::from_secs(10)));
        assert_eq!(k.ping_restart, Some(Duration::from_secs(240)));
        assert_eq!(k.push_ping, Some(10));
        assert_eq!(k.push_ping_restart, Some(120));
        assert!(keepalive(Some((10, 15)), None, None).is_err());
        assert!(keepalive(Some((0, 15)), None, None).is_err());
        assert!(keepalive(Some((10, 20)), None, None).is_ok());
    }

    #[test]
    fn explicit_ping_overrides_own_timers_only() {
        let k = keepalive(Some((10, 60)), Some(5), Some(30)).expect("ok");
        assert_eq!(k.ping, Some(Duration::from_secs(5)));
        assert_eq!(k.ping_restart, Some(Duration::from_secs(30)));
        assert_eq!((k.push_ping, k.push_ping_restart), (Some(10), Some(60)));
        let k = keepalive(None, Some(7), None).expect("ok");
        assert_eq!(
            k,
            Keepalive {
                ping: Some(Duration::from_secs(7)),
                ..Keepalive::default()
            }
        );
        assert_eq!(
            keepalive(None, None, None).expect("ok"),
            Keepalive::default()
        );
    }

    #[test]
    fn mssfix_defaults() {
        assert_eq!(mssfix(None, 1500), Some(1492));
        assert_eq!(mssfix(None, 1400), None);
        assert_eq!(mssfix(Some(0), 1500), None);
        assert_eq!(mssfix(Some(1400), 1500), Some(1400));
    }

    #[test]
    fn reneg_defaults() {
        assert_eq!(reneg(None), Some(Duration::from_secs(3600)));
        assert_eq!(reneg(Some(0)), None);
        assert_eq!(reneg(Some(60)), Some(Duration::from_secs(60)));
    }

    #[test]
    fn netmasks() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)).expect("ok"), 24);
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 0, 0)).expect("ok"), 16);
        assert_eq!(
            prefix_len(Ipv4Addr::new(255, 255, 255, 255)).expect("ok"),
            32
        );
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)).expect("ok"), 0);
        assert!(prefix_len(Ipv4Addr::new(255, 0, 255, 0)).is_err());
    }

    #[test]
    fn socket_plans() {
        use warren_config::Proto;
        let b = udp_bind(Proto::Udp, None, 1194, None, Some(0)).expect("ok");
        assert_eq!(
            b,
            UdpBind {
                family: UdpFamily::Any,
                local: None,
                port: 1194,
                sndbuf: None,
                rcvbuf: Some(0)
            }
        );
        let b = udp_bind(Proto::Udp4, Some("192.0.2.1"), 1194, None, None).expect("ok");
        assert_eq!(b.local, Some("192.0.2.1".parse().expect("ip")));
        assert_eq!(b.family, UdpFamily::V4);
        let b = udp_bind(Proto::Udp6, Some("::1"), 1, None, None).expect("ok");
        assert_eq!(b.family, UdpFamily::V6);
        let e = udp_bind(Proto::TcpServer, None, 1194, None, None).expect_err("tcp");
        assert!(e.to_string().contains("TCP is not supported yet"), "{e}");
        assert_eq!(
            resolve_local("localhost", UdpFamily::V4).expect("resolves"),
            IpAddr::from(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn cipher_lists() {
        let (k, fb, note) = ciphers(&[], None, None).expect("defaults");
        assert_eq!(k.len(), 3);
        assert_eq!(warren_driver::cipher_name(k[0]), "AES-256-GCM");
        assert_eq!((fb, note), (None, None));
        let (k, fb, _) = ciphers(
            &["CHACHA20-POLY1305".into(), "AES-128-GCM".into()],
            Some("AES-256-GCM"),
            None,
        )
        .expect("ok");
        assert_eq!(
            k.iter()
                .map(|c| warren_driver::cipher_name(*c))
                .collect::<Vec<_>>(),
            ["CHACHA20-POLY1305", "AES-128-GCM"]
        );
        assert_eq!(fb.map(warren_driver::cipher_name), Some("AES-256-GCM"));
        let (_, fb, note) =
            ciphers(&[], None, Some("AES-256-CBC")).expect("old configs still load");
        assert_eq!(fb, None);
        assert!(note.expect("note").contains("ignoring cipher AES-256-CBC"));
        assert!(ciphers(&[], Some("BF-CBC"), None).is_err());
        assert!(ciphers(&["DES".into()], None, None).is_err());
    }
}
