//! `management ...` of a server.conf as the driver's [`ManagementOptions`]: the socket
//! bound (before privileges are dropped, like OpenVPN), the password read, the
//! `management-client-user`/`-group` names resolved, and the variables of the server that
//! every `>CLIENT:` environment carries.
use std::net::{SocketAddr, ToSocketAddrs};

use tracing::warn;
use warren_config::{ManagementConfig, ManagementListen};
use warren_driver::management::{LogTap, ManagementOptions, Var};
use warren_driver::status::StatusVersion;
use warren_io::MgmtListener;
use zeroize::Zeroizing;

use crate::error::{Context, Error, Result};

/// The OpenVPN release whose management interface and outputs warren follows; tools
/// parse it from `version` (openvpn-monitor needs `2.x.y`, auth daemons management 5).
pub const OPENVPN_COMPAT: &str = "2.6.14";

/// `OpenVPN 2.6.14 warren-0.1.0 x86_64-pc-linux-gnu`: what `version` and `help` show.
pub fn version_line() -> String {
    format!(
        "OpenVPN {OPENVPN_COMPAT} warren-{} {}-pc-linux-gnu",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

/// What the management interface needs to know about the running server.
#[derive(Debug)]
pub struct ServerFacts<'a> {
    pub cfg: &'a warren_config::ServerConfig,
    pub dev: &'a str,
    pub tun_ip: std::net::Ipv4Addr,
    pub netmask: std::net::Ipv4Addr,
    pub tun_mtu: u16,
    /// The UDP socket's (or TCP listener's) bound address.
    pub local: Option<SocketAddr>,
    pub start_unix: u64,
    pub status_version: StatusVersion,
    pub log: Option<LogTap>,
}

/// Binds the management socket and gathers its settings. Call before the privilege drop.
pub fn options(m: &ManagementConfig, facts: ServerFacts<'_>) -> Result<ManagementOptions> {
    let listener = match &m.listen {
        ManagementListen::Tcp { host, port } => {
            let addr = (host.as_str(), *port)
                .to_socket_addrs()
                .with_context(|| format!("management: resolving {host}"))?
                .next()
                .ok_or_else(|| Error::ManagementAddress(format!("{host} {port}")))?;
            if m.password_file.is_none() {
                // OpenVPN's own warning (manage.c), word for word.
                warn!(
                    "WARNING: Using --management on a TCP port WITHOUT passwords is STRONGLY discouraged and considered insecure"
                );
            }
            MgmtListener::bind_tcp(addr).context("opening the management interface")?
        }
        ManagementListen::Unix(path) => {
            MgmtListener::bind_unix(path).context("opening the management interface")?
        }
    };
    let password = match &m.password_file {
        None => None,
        Some(path) => {
            let text = Zeroizing::new(std::fs::read_to_string(path).with_context(|| {
                format!("reading the management password file {}", path.display())
            })?);
            let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
            if first.is_empty() {
                return Err(Error::ManagementPassword(path.clone()));
            }
            Some(Zeroizing::new(first.to_owned()))
        }
    };
    let allowed_uid = match &m.client_user {
        None => None,
        Some(u) => Some(
            warren_io::user_id(u).ok_or_else(|| Error::ManagementAccount {
                kind: "user",
                name: u.clone(),
            })?,
        ),
    };
    let allowed_gid = match &m.client_group {
        None => None,
        Some(g) => Some(
            warren_io::group_id(g).ok_or_else(|| Error::ManagementAccount {
                kind: "group",
                name: g.clone(),
            })?,
        ),
    };
    let daemon_env = daemon_env(&facts);
    let cfg = facts.cfg;
    Ok(ManagementOptions {
        listener,
        password,
        client_auth: m.client_auth,
        hold: m.hold,
        log_cache: usize::try_from(m.log_cache).unwrap_or(usize::MAX),
        allowed_uid,
        allowed_gid,
        log: facts.log,
        version: version_line(),
        daemon_env,
        tun_ip: facts.tun_ip,
        local: facts.local.filter(|a| !a.ip().is_unspecified()),
        status_version: facts.status_version,
        verb: cfg.verb,
    })
}

/// The variables of the server itself that every client environment (management
/// `>CLIENT:` blocks, scripts) ends with: OpenVPN's `es` after start-up (`dev`,
/// `ifconfig_local`, `config`, `daemon`, `verb`, `local_port_1`, ...).
pub fn daemon_env(facts: &ServerFacts<'_>) -> Vec<Var> {
    let cfg = facts.cfg;
    let proto = if cfg.proto.is_tcp() {
        "tcp-server"
    } else {
        "udp"
    };
    let mut daemon_env: Vec<Var> = vec![
        ("remote_port_1".into(), cfg.port.to_string()),
        ("local_port_1".into(), cfg.port.to_string()),
    ];
    if let Some(l) = &cfg.local {
        daemon_env.push(("local_1".into(), l.clone()));
    }
    daemon_env.extend([
        ("proto_1".to_owned(), proto.to_owned()),
        ("daemon_pid".into(), std::process::id().to_string()),
        ("daemon_start_time".into(), facts.start_unix.to_string()),
        ("daemon_log_redirect".into(), "0".into()),
        ("daemon".into(), "0".into()),
        ("verb".into(), cfg.verb.to_string()),
        ("config".into(), cfg.source.display().to_string()),
        ("ifconfig_local".into(), facts.tun_ip.to_string()),
        ("ifconfig_netmask".into(), facts.netmask.to_string()),
        ("tun_mtu".into(), facts.tun_mtu.to_string()),
        ("dev".into(), facts.dev.to_owned()),
        ("dev_type".into(), "tun".into()),
        ("redirect_gateway".into(), "0".into()),
    ]);
    // options.c "setenv NAME VALUE": in every script's environment.
    for (k, v) in &cfg.scripts.setenv {
        daemon_env.retain(|(n, _)| n != k);
        daemon_env.push((k.clone(), v.clone()));
    }
    daemon_env
}
