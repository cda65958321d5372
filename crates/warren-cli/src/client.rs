//! `warren client`: from an ordinary `.ovpn` profile to a running client loop.
//!
//! The order matters: the signal descriptor first (before any thread exists), then the
//! profile, logging, credentials (asked on the terminal before connecting), the engine and
//! network plans, and the loop, which opens the tun device once the server has pushed its
//! address and restores the network however it ends.
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tracing::{info, warn};
use warren_config::KeyDerivationPolicy;
use warren_config::{ClientProto, Proxy, ProxyCredentials, PullFilterAction};
use warren_driver::{
    ClientLoopOptions, NetOptions, ProxyAuth, ProxyKind, ProxySpec, PullAction, RemoteFamily,
    RemoteSpec, RetryPolicy,
};
use warren_io::{Clock, Signals};
use warren_net::{DnsBackend, DnsSpec, Endpoint, RouteRequest};
use warren_openvpn::tls::ClientTlsOptions;
use warren_openvpn::{ClientConfig, KeyDerivation};

use crate::logging;
use warren_server::convert::{
    cert_role, data_ciphers, key_derivation, tls_algorithms, tls_crypt_v2_client, tls_version,
    wrap_config, wrap_name, x509_match,
};

/// How long explicit-exit-notify gets after SIGINT/SIGTERM.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Command-line switches of `warren client`.
#[derive(Debug, Clone, Default)]
pub struct ClientFlags {
    /// `--no-tls-ekm`: do not offer the RFC 5705 exporter; the server must fall back to the
    /// TLS1-PRF key exchange.
    pub no_tls_ekm: bool,
    /// `--no-offload`: one packet per system call (no tun offloads, no UDP GRO/GSO).
    pub no_offload: bool,
    /// `--kill-switch`: nothing leaves outside the tunnel while the client runs.
    pub kill_switch: bool,
    pub verbose: u8,
    pub quiet: u8,
}

pub fn run(profile: &Path, flags: &ClientFlags) -> Result<()> {
    // Before anything can spawn a thread: the mask is inherited.
    let signals = Signals::new().context("setting up signal handling")?;

    // Profile errors already read "alice.ovpn:12: ..."; no extra context in front.
    let (cfg, warnings) = warren_config::load_client_config(profile).map_err(anyhow::Error::new)?;
    logging::init(logging::adjust(
        logging::level_for_verb(cfg.verb),
        flags.verbose,
        flags.quiet,
    ));
    for w in &warnings {
        warn!("{w}");
    }
    // First, before any change: undo the routes and DNS a killed earlier client left behind.
    if let Err(e) = warren_net::recover_abandoned() {
        warn!("could not undo everything an earlier warren client left behind: {e}");
    }
    let kill_switch = flags.kill_switch || cfg.kill_switch;
    // A kill switch a killed client left on goes now; with the switch on, the loop
    // replaces it with its own in one transaction instead (no moment without one).
    if !kill_switch {
        match warren_net::recover_abandoned_kill_switch() {
            Ok(r) if r.removed => {
                info!("removed the kill switch an earlier warren client left on");
            }
            Ok(_) => {}
            Err(e) => warn!("could not remove the kill switch an earlier client left on: {e}"),
        }
    }

    let clock = Clock::new().context("reading the system clocks")?;
    let credentials = credentials(&cfg)?;
    let proxy_auths = proxy_credentials(&cfg)?;
    let plan = Plan::from_config(
        &cfg,
        flags,
        clock.unix_time_at_zero(),
        credentials,
        &proxy_auths,
    )?;
    for note in &plan.notes {
        warn!("{note}");
    }
    let (offload, offload_off) = crate::server_args::offload_choice(flags.no_offload, cfg.offload);
    if let Some(why) = offload_off {
        info!("offloads off ({why}): one packet per system call");
    }
    let opts = ClientLoopOptions {
        clock,
        signals,
        remotes: plan.remotes,
        local: plan.local,
        sndbuf: cfg.sndbuf,
        rcvbuf: cfg.rcvbuf,
        dev: cfg.dev.clone(),
        tun_mtu: plan.engine.tun_mtu,
        net: plan.net,
        retry: plan.retry,
        exit_grace: EXIT_GRACE,
        offload,
        drop_after_up: drop_after_up(&cfg),
        kill_switch,
        scripts: client_scripts(&cfg, profile, clock.unix_now()),
    };
    info!(
        "warren client {}: {} remote(s), {}, data ciphers {}{}",
        env!("CARGO_PKG_VERSION"),
        opts.remotes.len(),
        wrap_name(&plan.engine.wrap),
        plan.engine
            .data_ciphers
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(":"),
        if plan.engine.key_derivation == KeyDerivation::ForcePrf {
            ", tls-ekm not offered"
        } else {
            ""
        },
    );
    warren_driver::run_client(plan.engine, opts).map_err(|e| anyhow!(e))?;
    Ok(())
}

/// `up`, `route-up` and `down` with the client's own variables (OpenVPN's `es` of a
/// client: init.c, options.c, socket.c `setenv_link_socket`), or `None` without scripts.
fn client_scripts(
    cfg: &warren_config::ClientConfig,
    profile: &Path,
    start_unix: u64,
) -> Option<warren_driver::ClientScripts> {
    let s = &cfg.scripts;
    if s.up.is_none() && s.route_up.is_none() && s.down.is_none() {
        return None;
    }
    let mut env = vec![
        ("config".to_owned(), profile.display().to_string()),
        ("daemon".into(), "0".into()),
        ("daemon_log_redirect".into(), "0".into()),
        ("daemon_pid".into(), std::process::id().to_string()),
        ("daemon_start_time".into(), start_unix.to_string()),
        ("verb".into(), cfg.verb.to_string()),
        ("script_context".into(), "init".into()),
        ("dev_type".into(), "tun".into()),
    ];
    for (i, r) in cfg.remotes.iter().enumerate() {
        env.push((format!("remote_{}", i + 1), r.host.clone()));
        env.push((format!("remote_port_{}", i + 1), r.port.to_string()));
        use warren_config::ClientProto as P;
        let proto = match r.proto {
            P::Udp | P::Udp4 | P::Udp6 => "udp",
            P::TcpClient | P::Tcp4Client | P::Tcp6Client => "tcp-client",
        };
        env.push((format!("proto_{}", i + 1), proto.to_owned()));
    }
    Some(warren_driver::ClientScripts {
        up: s.up.as_ref().map(|c| c.argv.clone()),
        route_up: s.route_up.as_ref().map(|c| c.argv.clone()),
        down: s.down.as_ref().map(|c| c.argv.clone()),
        timeout: s.timeout,
        env,
    })
}

/// `user`/`group` in the profile: the drop once the tunnel is up, with the restore helper
/// started just before it.
///
/// The design (OpenVPN's problem too: as `nobody` it cannot undo its routes or DNS, hence
/// `persist-tun` and the `down-root` plugin): the client keeps CAP_NET_ADMIN, also for the
/// `ip` commands it runs, so it still changes routes on reconnections and removes them at
/// exit. Putting back resolv.conf (or running `resolvectl`/`resolvconf`) and writing the
/// journal in /run/warren need root; so before the switch a copy of `warren` is started as a
/// root helper holding the read end of a pipe. When the client ends, however it ends (even
/// `kill -9`), the pipe closes and the helper undoes the client's journal, frozen at the
/// switch: the DNS change and any route still there.
fn drop_after_up(cfg: &warren_config::ClientConfig) -> Option<warren_driver::DropAfterUp> {
    if cfg.user.is_none() && cfg.group.is_none() {
        return None;
    }
    Some(warren_driver::DropAfterUp {
        user: cfg.user.clone(),
        group: cfg.group.clone(),
        prepare: Box::new(start_restore_helper),
    })
}

/// Starts `warren client --internal-restore-after PID` as root; it lives until this process
/// is gone.
fn start_restore_helper() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "client",
            "--internal-restore-after",
            &std::process::id().to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        // Its own process group: a Ctrl-C meant for the client does not end it first.
        .process_group(0)
        .spawn()?;
    let Some(pipe) = child.stdin.take() else {
        return Err(std::io::Error::other("the restore helper has no stdin"));
    };
    // Held open until this process exits: its closing is the helper's signal.
    std::mem::forget(pipe);
    info!(
        "restore helper {} (root) will put back DNS and routes when this client ends",
        child.id()
    );
    Ok(())
}

/// The restore helper (see [`drop_after_up`]): waits until client `pid` is gone, then
/// undoes what its journal lists.
pub fn restore_helper(pid: u32, verbose: u8, quiet: u8) -> Result<()> {
    use std::io::Read;
    // SIGINT/SIGTERM/SIGHUP blocked (never read): a stop meant for the client does not end
    // the helper before its work.
    let _signals = Signals::new().context("setting up signal handling")?;
    logging::init(logging::adjust(logging::level_for_verb(3), verbose, quiet));
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // The pipe closes as the client exits; wait until the kernel agrees it is gone (a
    // zombie counts as gone). 600 turns of 50 ms at most.
    for _ in 0..600 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next());
        if matches!(state, None | Some("Z" | "X")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = warren_net::recover_abandoned()
        .with_context(|| format!("undoing the network changes of warren client {pid}"))?;
    if !r.is_empty() {
        info!("warren client {pid} ended: undid {}", r.undone.join(", "));
    }
    // Its kill switch: the journal goes if the client removed the table itself (a clean
    // exit); a switch still on after a crash stays on (for `--kill-switch-off`).
    warren_net::tidy_kill_switch_journals()
        .with_context(|| format!("tidying the kill switch journal of warren client {pid}"))?;
    Ok(())
}

/// `warren client --kill-switch-off`: removes the kill switch, routes and DNS settings a
/// client in this network namespace left behind when it was killed or crashed.
pub fn kill_switch_off(verbose: u8, quiet: u8) -> Result<()> {
    logging::init(logging::adjust(logging::level_for_verb(3), verbose, quiet));
    let r = warren_net::recover_abandoned()
        .context("undoing the routes and DNS settings of clients that are gone")?;
    if !r.is_empty() {
        info!("undid {}", r.undone.join(", "));
    }
    let k = warren_net::kill_switch_off().context("removing the kill switch")?;
    if k.removed {
        info!(
            "kill switch off (nftables table inet {} removed)",
            warren_net::KILL_SWITCH_TABLE
        );
    } else {
        info!("no kill switch was on");
    }
    Ok(())
}

/// `auth-user-pass [FILE]`: line 1 the username, line 2 the password; without a file, asked
/// on the terminal (the password without echo).
fn credentials(cfg: &warren_config::ClientConfig) -> Result<Option<(String, String)>> {
    match &cfg.auth_user_pass {
        None => Ok(None),
        Some(Some(m)) => {
            let text = m
                .load_for("auth-user-pass")
                .context("reading the `auth-user-pass` file")?;
            let mut lines = text.lines();
            let user = lines.next().unwrap_or("").trim_end_matches('\r').to_owned();
            let pass = lines.next().unwrap_or("").trim_end_matches('\r').to_owned();
            if user.is_empty() {
                bail!("`auth-user-pass` file: the first line must be the username");
            }
            if pass.is_empty() {
                // OpenVPN asks for the password when the file holds only the username.
                let pass = ask("Enter Auth Password: ", false)?;
                return Ok(Some((user, pass)));
            }
            Ok(Some((user, pass)))
        }
        Some(None) => {
            let user = ask("Enter Auth Username: ", true)?;
            let pass = ask("Enter Auth Password: ", false)?;
            Ok(Some((user, pass)))
        }
    }
}

/// The usernames and passwords of the profile's proxies, each source read (or asked for)
/// once.
#[derive(Debug, Default)]
struct ProxyAuths(Vec<(ProxyCredentials, ProxyAuth)>);

impl ProxyAuths {
    fn get(&self, c: &ProxyCredentials) -> Option<ProxyAuth> {
        self.0.iter().find(|(k, _)| k == c).map(|(_, a)| a.clone())
    }
}

/// Reads every proxy credentials file of the profile, and asks on the terminal for
/// `stdin` (OpenVPN's prompts: "Enter HTTP Proxy Username:"). A file holds the username
/// on its first line and the password on the second; without a second line the password
/// is asked for, as OpenVPN does.
fn proxy_credentials(cfg: &warren_config::ClientConfig) -> Result<ProxyAuths> {
    let mut out = ProxyAuths::default();
    for r in &cfg.remotes {
        let (source, directive, kind) = match &r.proxy {
            Some(Proxy::Http(h)) => (h.basic_auth.as_ref(), "http-proxy", "HTTP Proxy"),
            Some(Proxy::Socks(s)) => (s.credentials.as_ref(), "socks-proxy", "SOCKS Proxy"),
            None => continue,
        };
        let Some(source) = source else { continue };
        if out.get(source).is_some() {
            continue;
        }
        let ask_for = |what: &str, echo| {
            warren_io::prompt_tty(&format!("Enter {kind} {what}: "), echo).with_context(|| {
                format!(
                    "the `{directive}` credentials are asked on the terminal, and there is none; \
                     write the username and password on two lines of a file and name it in \
                     `{directive}`"
                )
            })
        };
        let auth = match source {
            ProxyCredentials::Prompt => ProxyAuth {
                user: ask_for("Username", true)?,
                pass: ask_for("Password", false)?,
            },
            ProxyCredentials::Material(m) => {
                let text = m
                    .load_for(directive)
                    .with_context(|| format!("reading the `{directive}` credentials"))?;
                let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
                let user = lines.next().unwrap_or("").to_owned();
                if user.is_empty() {
                    bail!(
                        "`{directive}` credentials{}: the first line must be the username",
                        m.path()
                            .map(|p| format!(" file {}", p.display()))
                            .unwrap_or_default()
                    );
                }
                let pass = match lines.next() {
                    Some(p) => p.to_owned(),
                    None => ask_for("Password", false)?,
                };
                ProxyAuth { user, pass }
            }
        };
        out.0.push((source.clone(), auth));
    }
    Ok(out)
}

fn ask(prompt: &str, echo: bool) -> Result<String> {
    warren_io::prompt_tty(prompt, echo).context(
        "`auth-user-pass` without a file asks on the terminal, and there is none; \
         write the username and password on two lines of a file and use `auth-user-pass FILE`",
    )
}

/// Everything derived from the profile before any OS resource is touched.
struct Plan {
    engine: ClientConfig,
    remotes: Vec<RemoteSpec>,
    local: Option<IpAddr>,
    net: NetOptions,
    retry: RetryPolicy,
    notes: Vec<String>,
}

impl std::fmt::Debug for Plan {
    // The engine config holds the TLS private key and the auth-user-pass password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("engine", &"<redacted>")
            .field("remotes", &self.remotes)
            .field("local", &self.local)
            .field("net", &self.net)
            .field("retry", &self.retry)
            .field("notes", &self.notes)
            .finish()
    }
}

impl Plan {
    fn from_config(
        cfg: &warren_config::ClientConfig,
        flags: &ClientFlags,
        unix_time_at_zero: u64,
        credentials: Option<(String, String)>,
        proxy_auths: &ProxyAuths,
    ) -> Result<Plan> {
        let (mut remotes, mut notes) = remotes(&cfg.remotes, proxy_auths);
        if remotes.is_empty() {
            bail!("no usable `remote`: warren connects over UDP only for now (`proto udp`)");
        }
        if cfg.remote_random {
            shuffle(&mut remotes)?;
        }

        let ca = cfg.ca.load_for("ca")?;
        let cert = cfg.cert.as_ref().map(|m| m.load_for("cert")).transpose()?;
        let key = cfg.key.as_ref().map(|m| m.load_for("key")).transpose()?;
        let tls_opts = ClientTlsOptions {
            min_version: cfg.tls_version_min.map(tls_version),
            max_version: cfg.tls_version_max.map(tls_version),
            remote_cert_tls: cfg.remote_cert_tls.map(cert_role),
            verify_x509_name: cfg
                .verify_x509_name
                .as_ref()
                .map(|(n, t)| (n.clone(), x509_match(*t))),
            algorithms: tls_algorithms(
                cfg.tls_groups.as_deref(),
                cfg.tls_cipher.as_deref(),
                cfg.tls_ciphersuites.as_deref(),
            ),
            crl: cfg
                .crl_verify
                .as_ref()
                .map(|(m, loc)| warren_server::crl::client_check(m, loc, &ca))
                .transpose()?,
        };
        let tls =
            warren_openvpn::tls::client_config(&ca, cert.as_deref(), key.as_deref(), &tls_opts)
                .context("setting up TLS from `ca`, `cert`, `key` and `crl-verify`")?;

        let s = cfg.session();
        let engine = ClientConfig {
            tls,
            // warren-config allows one of tls-crypt-v2, tls-crypt and tls-auth.
            wrap: match &cfg.tls_crypt_v2 {
                Some(v2) => tls_crypt_v2_client(v2)?,
                None => wrap_config(
                    cfg.tls_crypt.as_ref(),
                    cfg.tls_auth.as_ref(),
                    cfg.hmac_digest(),
                )?,
            },
            data_ciphers: data_ciphers(&cfg.data_ciphers, cfg.auth.as_deref())?,
            ping: s.ping,
            ping_restart: s.ping_restart,
            reneg: s.reneg,
            hand_window: s.hand_window,
            tls_timeout: s.tls_timeout,
            key_derivation: key_derivation(if flags.no_tls_ekm {
                KeyDerivationPolicy::Prf
            } else {
                cfg.key_derivation
            }),
            credentials,
            explicit_exit_notify: s.explicit_exit_notify,
            tun_mtu: s.tun_mtu,
            mssfix: s.mssfix,
            block_ipv6: cfg.block_ipv6,
            unix_time_at_zero,
        };

        let local = match &cfg.local {
            None => None,
            Some(s) => Some(
                resolve_ip(s)
                    .with_context(|| format!("resolving `local {s}`"))?
                    .into(),
            ),
        };

        let mut routes = Vec::new();
        for r in &cfg.routes {
            routes.push(route_request(r)?);
        }
        let mut dns = DnsSpec::default();
        for (kind, value) in &cfg.dhcp_options {
            match kind.to_ascii_uppercase().as_str() {
                k @ ("DNS" | "DNS6") => dns.servers.push(
                    value
                        .parse::<IpAddr>()
                        .map_err(|_| anyhow!("`dhcp-option {k} {value}`: not an IP address"))?,
                ),
                "DOMAIN" | "DOMAIN-SEARCH" => dns.domains.push(value.clone()),
                other => notes.push(format!(
                    "dhcp-option {other}: only DNS, DNS6, DOMAIN and DOMAIN-SEARCH are applied on \
                     Linux; ignored"
                )),
            }
        }
        let net = NetOptions {
            route_nopull: cfg.route_nopull,
            pull_filters: cfg
                .pull_filters
                .iter()
                .map(|(a, t)| (pull_action(*a), t.clone()))
                .collect(),
            routes,
            redirect: cfg.redirect_gateway.clone(),
            dns,
            dns_backend: DnsBackend::Auto,
            ifconfig_ipv6: cfg.ifconfig_ipv6.map(|(p, _)| (p.addr, p.len)),
            routes_ipv6: cfg
                .route_ipv6
                .iter()
                .map(|r| {
                    (
                        warren_net::Ipv6Net::new(r.network.addr, r.network.len),
                        r.metric,
                    )
                })
                .collect(),
        };
        let retry = RetryPolicy {
            max_rounds: cfg.connect_retry_max,
            resolve_for: cfg.resolve_for(),
        };
        Ok(Plan {
            engine,
            remotes,
            local,
            net,
            retry,
            notes,
        })
    }
}

/// An entry's proxy for the loop, with its credentials from `auths`.
fn proxy_spec(p: &Proxy, auths: &ProxyAuths) -> ProxySpec {
    let (host, port) = p.address();
    let kind = match p {
        Proxy::Http(h) => ProxyKind::Http {
            version: h.version.as_str(),
            agent: h.agent.clone(),
            headers: h.custom_headers.clone(),
            auth: h.basic_auth.as_ref().and_then(|c| auths.get(c)),
        },
        Proxy::Socks(s) => ProxyKind::Socks5 {
            auth: s.credentials.as_ref().and_then(|c| auths.get(c)),
        },
    };
    ProxySpec {
        host: host.to_owned(),
        port,
        kind,
    }
}

/// `remote` lines as the loop tries them, each with its own protocol.
fn remotes(
    list: &[warren_config::Remote],
    proxy_auths: &ProxyAuths,
) -> (Vec<RemoteSpec>, Vec<String>) {
    let mut out = Vec::new();
    let notes = Vec::new();
    for r in list {
        let family = match r.proto {
            ClientProto::Udp | ClientProto::TcpClient => RemoteFamily::Any,
            ClientProto::Udp4 | ClientProto::Tcp4Client => RemoteFamily::V4,
            ClientProto::Udp6 | ClientProto::Tcp6Client => RemoteFamily::V6,
        };
        let (retry, retry_max) = r.entry.connect_retry();
        out.push(RemoteSpec {
            host: r.host.clone(),
            port: r.port,
            family,
            tcp: r.proto.is_tcp(),
            poll_timeout: r.entry.server_poll_timeout(),
            retry,
            retry_max,
            lport: r.entry.bind_port(),
            explicit_exit_notify: r.entry.explicit_exit_notify.is_some_and(|n| n > 0),
            proxy: r.proxy.as_ref().map(|p| proxy_spec(p, proxy_auths)),
        });
    }
    (out, notes)
}

/// `remote-random`: a Fisher-Yates shuffle with the kernel's randomness.
fn shuffle(v: &mut [RemoteSpec]) -> Result<()> {
    use warren_core::Rng;
    let mut rng = warren_io::OsRng::new()
        .context("the kernel random generator (getrandom) is unavailable")?;
    for i in (1..v.len()).rev() {
        let j = usize::try_from(rng.next_u32()).unwrap_or(0) % (i + 1);
        v.swap(i, j);
    }
    Ok(())
}

fn pull_action(a: PullFilterAction) -> PullAction {
    match a {
        PullFilterAction::Accept => PullAction::Accept,
        PullFilterAction::Ignore => PullAction::Ignore,
        PullFilterAction::Reject => PullAction::Reject,
    }
}

/// An IPv4 literal or a host name (resolved once, at startup).
fn resolve_ip(s: &str) -> Result<Ipv4Addr> {
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    (s, 0u16)
        .to_socket_addrs()
        .with_context(|| format!("resolving `{s}`"))?
        .find_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| anyhow!("`{s}` has no IPv4 address"))
}

/// OpenVPN route.c: `vpn_gateway`, `net_gateway` and `remote_host` stand for addresses
/// known only once connected; anything else is an address or a name.
fn endpoint(s: &str) -> Result<Endpoint> {
    Ok(match s {
        "vpn_gateway" => Endpoint::VpnGateway,
        "net_gateway" => Endpoint::NetGateway,
        "remote_host" => Endpoint::RemoteHost,
        other => Endpoint::Ip(resolve_ip(other)?),
    })
}

fn route_request(r: &warren_config::Route) -> Result<RouteRequest> {
    let network = endpoint(&r.network).with_context(|| format!("`route {}`", r.network))?;
    let gateway = match &r.gateway {
        None => None,
        Some(g) => Some(endpoint(g).with_context(|| format!("`route {} ... {g}`", r.network))?),
    };
    Ok(RouteRequest {
        network,
        netmask: r.netmask.unwrap_or(Ipv4Addr::BROADCAST),
        gateway,
        metric: r.metric,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(extra: &str) -> warren_config::ClientConfig {
        let text = format!(
            "client\ndev tun\nproto udp\nremote 192.0.2.1 1194\nremote vpn.invalid 1195 udp4\nremote 192.0.2.3 443 tcp\nnobind\n\
             <ca>\n-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n</ca>\nauth-user-pass\nremote-cert-tls server\n{extra}"
        );
        let (cfg, _) = warren_config::client_config_from_str(&text, "t.ovpn", Path::new("."))
            .expect("profile parses");
        cfg
    }

    #[test]
    fn routes_and_endpoints() {
        let cfg = profile(
            "route 10.0.0.0 255.0.0.0\nroute 172.16.0.0 255.240.0.0 net_gateway 5\nroute remote_host 255.255.255.255 net_gateway\nroute 192.0.2.9\n",
        );
        let rs: Vec<RouteRequest> = cfg
            .routes
            .iter()
            .map(|r| route_request(r).expect("route"))
            .collect();
        assert_eq!(rs[0].network, Endpoint::Ip(Ipv4Addr::new(10, 0, 0, 0)));
        assert_eq!(rs[0].gateway, None);
        assert_eq!(rs[1].gateway, Some(Endpoint::NetGateway));
        assert_eq!(rs[1].metric, Some(5));
        assert_eq!(rs[2].network, Endpoint::RemoteHost);
        assert_eq!(rs[3].netmask, Ipv4Addr::BROADCAST);
    }

    #[test]
    fn cipher_lists() {
        assert_eq!(
            data_ciphers(&profile("").data_ciphers, None)
                .expect("ok")
                .len(),
            3
        );
        assert_eq!(
            data_ciphers(&["CHACHA20-POLY1305".into()], None).expect("ok"),
            vec![warren_crypto::CipherKind::from_name("CHACHA20-POLY1305").expect("known")]
        );
        assert!(data_ciphers(&["BF-CBC".into()], None).is_err());
    }

    #[test]
    fn remote_protocols() {
        let cfg = profile("remote 192.0.2.4 993 tcp6\n");
        let (r, notes) = remotes(&cfg.remotes, &ProxyAuths::default());
        let spec = RemoteSpec::new;
        assert_eq!(
            r,
            [
                spec("192.0.2.1", 1194, RemoteFamily::Any, false),
                spec("vpn.invalid", 1195, RemoteFamily::V4, false),
                spec("192.0.2.3", 443, RemoteFamily::Any, true),
                spec("192.0.2.4", 993, RemoteFamily::V6, true),
            ]
        );
        assert!(notes.is_empty(), "{notes:?}");

        // `<connection>` blocks carry their own timing, bind port and exit notification.
        let cfg = profile(
            "server-poll-timeout 3\n<connection>\nremote 192.0.2.7 1194 udp\nexplicit-exit-notify 2\n\
             </connection>\n<connection>\nremote 192.0.2.7 443 tcp\nconnect-retry 2 8\n\
             server-poll-timeout 0\n</connection>\nconnect-retry-max 4\n",
        );
        let (r, _) = remotes(&cfg.remotes, &ProxyAuths::default());
        let udp = RemoteSpec {
            poll_timeout: Some(Duration::from_secs(3)),
            explicit_exit_notify: true,
            ..RemoteSpec::new("192.0.2.7", 1194, RemoteFamily::Any, false)
        };
        let tcp = RemoteSpec {
            poll_timeout: None,
            retry: Duration::from_secs(2),
            retry_max: Duration::from_secs(8),
            ..RemoteSpec::new("192.0.2.7", 443, RemoteFamily::Any, true)
        };
        assert_eq!(r, [udp, tcp]);
        assert_eq!(cfg.connect_retry_max, Some(4));
    }

    #[test]
    fn proxies_with_their_credentials() {
        let tmp = tempfile::tempdir().expect("tmp");
        let http_auth = tmp.path().join("http.auth");
        std::fs::write(&http_auth, "alice\r\ns3cret\r\n").expect("write");
        let socks_auth = tmp.path().join("socks.auth");
        std::fs::write(&socks_auth, "bob\n\n").expect("write");
        let empty = tmp.path().join("empty.auth");
        std::fs::write(&empty, "\n").expect("write");
        let cfg = profile(&format!(
            "<connection>\nremote 192.0.2.7 443 tcp\nhttp-proxy 192.0.2.8 3128 {} basic\n\
             http-proxy-option AGENT a/1\n</connection>\n\
             <connection>\nremote vpn.example 443 tcp\nsocks-proxy 192.0.2.9 1080 {}\n</connection>\n\
             <connection>\nremote 192.0.2.7 443 tcp\nsocks-proxy 192.0.2.9\n</connection>\n",
            http_auth.display(),
            socks_auth.display()
        ));
        let auths = proxy_credentials(&cfg).expect("credentials");
        let (r, _) = remotes(&cfg.remotes, &auths);
        let proxies: Vec<_> = r.iter().map(|r| r.proxy.clone()).collect();
        assert_eq!(
            proxies,
            [
                Some(ProxySpec {
                    host: "192.0.2.8".into(),
                    port: 3128,
                    kind: ProxyKind::Http {
                        version: "1.0",
                        agent: Some("a/1".into()),
                        headers: vec![],
                        auth: Some(ProxyAuth {
                            user: "alice".into(),
                            pass: "s3cret".into()
                        }),
                    },
                }),
                Some(ProxySpec {
                    host: "192.0.2.9".into(),
                    port: 1080,
                    kind: ProxyKind::Socks5 {
                        // An empty second line is an empty password (no prompt).
                        auth: Some(ProxyAuth {
                            user: "bob".into(),
                            pass: String::new()
                        }),
                    },
                }),
                Some(ProxySpec {
                    host: "192.0.2.9".into(),
                    port: 1080,
                    kind: ProxyKind::Socks5 { auth: None },
                }),
            ]
        );
        assert_eq!(r[1].host, "vpn.example");
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");

        let cfg = profile(&format!(
            "<connection>\nremote 192.0.2.7 443 tcp\nsocks-proxy 192.0.2.9 1080 {}\n</connection>\n",
            empty.display()
        ));
        let e = proxy_credentials(&cfg).expect_err("no username");
        assert!(
            e.to_string().contains("first line must be the username"),
            "{e}"
        );
    }

    #[test]
    fn debug_redacts_credentials_and_keys() {
        let tmp = tempfile::tempdir().expect("tmp");
        let state = warren_server::state::ensure_state(&tmp.path().join("s"), &Default::default())
            .expect("state");
        let tc = state.tls_crypt.to_pem();
        let text = format!(
            "client\nremote 192.0.2.1\nremote-cert-tls server\nauth-user-pass\n<ca>\n{}\n</ca>\n<tls-crypt>\n{}\n</tls-crypt>\n",
            state.ca_pem.trim_end(),
            tc.trim_end()
        );
        let (cfg, _) = warren_config::client_config_from_str(&text, "t.ovpn", Path::new("."))
            .expect("profile parses");
        let creds = Some(("alice".to_owned(), "hunter2secret".to_owned()));
        let plan = Plan::from_config(
            &cfg,
            &ClientFlags::default(),
            0,
            creds,
            &ProxyAuths::default(),
        )
        .expect("plan");
        let dbg = format!("{plan:?} {cfg:?}");
        assert!(!dbg.contains("hunter2secret"), "{dbg}");
        for line in tc
            .lines()
            .filter(|l| l.len() > 8 && !l.starts_with(['-', '#']))
        {
            assert!(!dbg.contains(line), "{line} in {dbg}");
        }
        assert!(dbg.contains("192.0.2.1"), "{dbg}");
    }
}
