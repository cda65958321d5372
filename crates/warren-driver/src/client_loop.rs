//! The single-threaded client loop: one `poll(2)` over the UDP socket of the current
//! connection attempt, the tun device (once the first connection is up) and the signal
//! descriptor, driving one [`warren_openvpn::Client`] per attempt.
//!
//! Lifecycle: resolve the current `remote` (again at every attempt), open a socket, start
//! an engine. On `Connected`, open the tun device the first time (with the pushed address
//! and MTU) and apply routes and DNS through [`warren_net::TunnelNet`]; later connections
//! re-apply only what changed. On `Disconnected` (ping-restart, `RESTART`, TLS errors, no
//! answer) drop the engine and its socket, keep the tun device and its routes
//! (`persist-tun`, always on in warren), and try the next remote after a capped
//! exponential backoff. `AUTH_FAILED` and `HALT` end the loop with an error. SIGINT/SIGTERM
//! close the session (explicit-exit-notify) for at most `exit_grace`, then the network is
//! restored and the loop returns. SIGUSR1 and SIGHUP are OpenVPN's soft restart with
//! `persist-tun`: the session is closed the same way, and a new one with the same remote
//! starts at once, keeping the tun device, its routes and DNS until the new push re-applies
//! them. SIGUSR2 writes the statistics to the log.
//!
//! Data moves in batches, as in the server loop ([`crate::batch`]): UDP GRO buffers opened
//! in place and written to the tun with one coalescing `send_batch`, tun super-packets split
//! into slots, sealed in place and sent with UDP GSO; `offload: false` (`--no-offload`)
//! moves one packet per system call.
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;
use tracing::{debug, error, info, trace, warn};
use warren_core::Instant;
use warren_io::{
    Clock, Interest, OffloadMode, OffloadTun, OffloadTunConfig, OsRng, Poller, Signal, Signals,
    TunConfig, UdpBind, UdpFamily,
};
use warren_net::{
    DnsBackend, DnsSpec, Endpoint, Ipv6Net, KillSwitchError, NetError, NetState, Redirect,
    Route6Request, RouteRequest, TunnelNet, TunnelSpec, TunnelSpec6,
};
use warren_openvpn::{
    Client, ClientConfig, ClientDatagram, ClientDisconnect, ClientEvent, ClientSetupError,
    DataPlane, DropReason, PushedConfig,
};

use crate::batch::{self, DataPath, LoopStats, Out, Pump, Streams, UdpIo, Via};
use crate::kill_switch::Guard;
use crate::proxy::{Handshake, ProxySpec};
use crate::tcp::TcpLink;

const MAX_TRANSMITS_PER_TURN: usize = 1024;
/// How long the TCP connect to a proxy and its handshake may take when the entry has no
/// `server-poll-timeout` (`0`); otherwise that timeout bounds them, as in OpenVPN.
const PROXY_TIMEOUT: Duration = Duration::from_secs(30);

/// Address family of a `remote` (`proto udp|udp4|udp6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteFamily {
    Any,
    V4,
    V6,
}

/// One connection entry: a `remote HOST PORT [PROTO]` line or a `<connection>` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    pub host: String,
    pub port: u16,
    pub family: RemoteFamily,
    /// `tcp-client`: OpenVPN over TCP (u16 length-prefixed frames) instead of UDP.
    pub tcp: bool,
    /// `server-poll-timeout` (`connect-timeout`): an attempt that has heard nothing from
    /// the server after this long moves on to the next entry at once. `None`: only the
    /// engine's `hand-window` ends a silent attempt.
    pub poll_timeout: Option<Duration>,
    /// `connect-retry N MAX`: the pause after a failed attempt on this entry, and the cap
    /// of its backoff.
    pub retry: Duration,
    pub retry_max: Duration,
    /// Local UDP port to bind: 0 with `nobind`.
    pub lport: u16,
    /// `explicit-exit-notify` on this entry (UDP only).
    pub explicit_exit_notify: bool,
    /// `http-proxy` / `socks-proxy` (TCP only): the connection goes to the proxy, which
    /// is asked for `host`:`port`; `host` is not resolved here.
    pub proxy: Option<ProxySpec>,
}

impl RemoteSpec {
    /// A plain entry with OpenVPN's `connect-retry` defaults and warren's 10 s
    /// `server-poll-timeout`.
    pub fn new(host: impl Into<String>, port: u16, family: RemoteFamily, tcp: bool) -> Self {
        RemoteSpec {
            host: host.into(),
            port,
            family,
            tcp,
            poll_timeout: Some(Duration::from_secs(10)),
            retry: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            lport: 0,
            explicit_exit_notify: false,
            proxy: None,
        }
    }

    /// The pause before the next attempt after `failures` consecutive unsuccessful
    /// attempts (1 after a session that was up) on `remotes` entries, this one the last
    /// that failed. OpenVPN init.c `socket_restart_pause`: `connect-retry` seconds, doubled
    /// for every round beyond the fifth over all entries, capped at `connect-retry`'s MAX.
    pub fn pause(&self, failures: u32, remotes: usize) -> Duration {
        let rounds = failures / u32::try_from(remotes.max(1)).unwrap_or(u32::MAX);
        let backoff = rounds.saturating_sub(4);
        let base = if backoff > 0 {
            self.retry
                .max(Duration::from_secs(1))
                .saturating_mul(1u32 << backoff.min(15))
        } else {
            self.retry
        };
        base.min(self.retry_max)
    }

    fn proto_name(&self) -> &'static str {
        match (&self.proxy, self.tcp) {
            (Some(p), _) => p.name(),
            (None, true) => "tcp",
            (None, false) => "udp",
        }
    }
}

/// `pull-filter` actions (OpenVPN options.c `apply_pull_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullAction {
    Accept,
    Ignore,
    Reject,
}

/// What the profile says about the network side, merged with what the server pushes.
#[derive(Debug, Clone, Default)]
pub struct NetOptions {
    /// `route-nopull`: ignore pushed routes, `redirect-gateway` and `dhcp-option`s.
    pub route_nopull: bool,
    pub pull_filters: Vec<(PullAction, String)>,
    /// `route` lines of the profile.
    pub routes: Vec<RouteRequest>,
    /// `redirect-gateway` flags of the profile (a pushed one replaces it).
    pub redirect: Option<Vec<String>>,
    /// `dhcp-option DNS|DOMAIN` of the profile (pushed ones are appended).
    pub dns: DnsSpec,
    pub dns_backend: DnsBackend,
    /// `ifconfig-ipv6 ADDR/BITS REMOTE` of the profile (a pushed one replaces it).
    pub ifconfig_ipv6: Option<(Ipv6Addr, u8)>,
    /// `route-ipv6` lines of the profile.
    pub routes_ipv6: Vec<(Ipv6Net, Option<u32>)>,
}

/// Reconnection limits besides each entry's own timing ([`RemoteSpec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryPolicy {
    /// `connect-retry-max N`: give up after N unsuccessful attempts per entry in a row.
    /// `None` retries forever.
    pub max_rounds: Option<u32>,
    /// `resolv-retry N`: give up when names have failed to resolve for this long. `None`
    /// (`resolv-retry infinite`, the default) retries forever.
    pub resolve_for: Option<Duration>,
}

/// Everything besides the engine config.
#[derive(Debug)]
pub struct ClientLoopOptions {
    pub clock: Clock,
    /// Created on the main thread before any other thread (see [`Signals::new`]).
    pub signals: Signals,
    /// Tried in order, round robin; after a session that was up ends, from the first one
    /// again. Never empty.
    pub remotes: Vec<RemoteSpec>,
    /// `local` address to bind, if any.
    pub local: Option<IpAddr>,
    pub sndbuf: Option<u32>,
    pub rcvbuf: Option<u32>,
    /// `dev` (`tun` lets the kernel choose).
    pub dev: String,
    /// `tun-mtu` until the server pushes one.
    pub tun_mtu: u16,
    pub net: NetOptions,
    pub retry: RetryPolicy,
    /// How long to deliver explicit-exit-notify after SIGINT/SIGTERM (about 1 s).
    pub exit_grace: Duration,
    /// Tun offloads and batched UDP (GRO/GSO); `false` (`--no-offload`) moves one packet
    /// per system call.
    pub offload: bool,
    /// `user`/`group`: once the first connection is up, become this user (see
    /// [`DropAfterUp`]).
    pub drop_after_up: Option<DropAfterUp>,
    /// `--kill-switch` / `warren-kill-switch on`: from before the first attempt until the
    /// loop ends, nothing leaves outside the tunnel but its packets to the servers (see
    /// [`crate::kill_switch`]).
    pub kill_switch: bool,
    /// `up`, `route-up` and `down` (see [`ClientScripts`]).
    pub scripts: Option<ClientScripts>,
}

/// The client's scripts, run as OpenVPN runs them (init.c `do_open_tun`, `do_route`,
/// `do_close_tun`): `up` once the tun device has its address (a failure stops the client),
/// `route-up` after the routes of each connection, `down` when the tun device goes.
#[derive(Debug, Clone, Default)]
pub struct ClientScripts {
    pub up: Option<Vec<String>>,
    pub route_up: Option<Vec<String>>,
    pub down: Option<Vec<String>>,
    pub timeout: Duration,
    /// The client's own variables (`config`, `daemon`, `verb`, `remote_1`, ...).
    pub env: Vec<crate::scripts::Var>,
}

/// `user`/`group` for the client. Like OpenVPN, the client drops privileges once the
/// tunnel is first up (tun open, routes and DNS applied). It keeps CAP_NET_ADMIN, also for
/// the `ip` commands it runs, so it still changes and removes routes on reconnections and
/// at exit. What it can no longer do as that user (put back resolv.conf, write its journal
/// under /run/warren) is handed to `prepare`, which runs as root just before the switch
/// and starts a helper that undoes the journal once the client is gone (OpenVPN's
/// `down-root` plugin plays this part there).
pub struct DropAfterUp {
    pub user: Option<String>,
    pub group: Option<String>,
    pub prepare: Box<dyn FnOnce() -> io::Result<()> + Send>,
}

impl std::fmt::Debug for DropAfterUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropAfterUp")
            .field("user", &self.user)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Error)]
pub enum ClientLoopError {
    #[error("the server refused the credentials (AUTH_FAILED{})", fmt_reason(.0))]
    AuthFailed(String),
    #[error("the server told the client to stop (HALT{})", fmt_reason(.0))]
    Halted(String),
    #[error("could not resolve `{host}` for {secs} s (resolv-retry {secs}): {last}")]
    Resolve {
        host: String,
        secs: u64,
        last: String,
    },
    #[error("no usable `remote`")]
    NoRemote,
    #[error("`{host}`: a proxy needs a TCP connection (`proto tcp-client`)")]
    ProxyNeedsTcp { host: String },
    #[error(
        "all {remotes} connection(s) failed {rounds} time(s) in a row (connect-retry-max {rounds}); giving up"
    )]
    RetryMax { remotes: usize, rounds: u32 },
    #[error("waiting for I/O: {0}")]
    Poll(#[source] io::Error),
    #[error("reading the signal descriptor: {0}")]
    Signal(#[source] io::Error),
    #[error("opening the UDP socket: {0}")]
    Bind(#[source] warren_io::BindError),
    #[error("the kernel random generator (getrandom) is unavailable: {0}")]
    Rng(#[source] io::Error),
    #[error("starting the connection: {0}")]
    Setup(#[source] ClientSetupError),
    #[error("opening tun device `{dev}`: {source}")]
    Tun {
        dev: String,
        source: warren_io::TunError,
    },
    #[error("reading from tun device {name}: {source}")]
    TunRead { name: String, source: io::Error },
    #[error("the `up` script failed; stopping as OpenVPN does")]
    UpScript,
    #[error("starting the restore helper for `user`/`group`: {0}")]
    RestoreHelper(#[source] io::Error),
    #[error("dropping privileges (`user`/`group`): {0}")]
    Privileges(#[source] warren_io::PrivilegeError),
    #[error("configuring the network: {0}")]
    Net(#[source] NetError),
    #[error("the kill switch: {0}")]
    KillSwitch(#[source] KillSwitchError),
    #[error(
        "the kill switch: no server resolves ({hosts}); the switch lets no DNS out but through \
         the tunnel, so the servers are looked up before it goes on: check the names, or use \
         addresses in `remote`"
    )]
    KillSwitchResolve { hosts: String },
}

fn fmt_reason(r: &str) -> String {
    if r.is_empty() {
        String::new()
    } else {
        format!(": {r}")
    }
}

/// Counters of the loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub connections: u64,
    /// The data path's I/O counters (as the server's).
    pub io: LoopStats,
}

/// Applies `route-nopull` and `pull-filter` to what the server pushed. Returns the
/// filtered config and notes; `Err(option)` when a `reject` filter matched (OpenVPN then
/// restarts the connection).
///
/// OpenVPN options.c `apply_pull_filter`: for each pushed option, the first filter whose
/// text is a prefix of the option decides. init.c `pull_permission_mask` (2.6): with
/// `route-nopull` the `OPT_P_ROUTE` and `OPT_P_DHCPDNS` classes (routes,
/// `redirect-gateway`, `dhcp-option`) are not accepted; `route-gateway` still is.
///
/// The protocol engine has already acted on options such as `ifconfig`, `ping` or
/// `cipher`; filtering those out only produces a note.
pub fn filter_pushed(
    cfg: &PushedConfig,
    route_nopull: bool,
    filters: &[(PullAction, String)],
) -> Result<(PushedConfig, Vec<String>), String> {
    let mut out = cfg.clone();
    let mut notes = Vec::new();
    if route_nopull {
        out.routes.clear();
        out.routes_ipv6.clear();
        out.redirect_gateway = None;
        out.dns_servers.clear();
        out.search_domains.clear();
        out.dns_resolve_domains.clear();
    }
    for opt in &cfg.raw {
        let action = filters
            .iter()
            .find(|(_, text)| opt.starts_with(text.as_str()))
            .map(|(a, _)| *a);
        match action {
            None | Some(PullAction::Accept) => {}
            Some(PullAction::Reject) => return Err(opt.clone()),
            Some(PullAction::Ignore) => {
                let t: Vec<&str> = opt.split_whitespace().collect();
                let ip = |i: usize| t.get(i).and_then(|s| s.parse::<Ipv4Addr>().ok());
                match t.first().copied() {
                    Some("route") => {
                        if let Some(net) = ip(1) {
                            let mask = ip(2).unwrap_or(Ipv4Addr::BROADCAST);
                            if let Some(i) = out.routes.iter().position(|r| r.network == net && r.netmask == mask) {
                                out.routes.remove(i);
                            }
                        }
                    }
                    Some("route-ipv6") => {
                        let net = t.get(1).copied().unwrap_or("");
                        out.routes_ipv6.retain(|r| {
                            format!("{}/{}", r.network, r.prefix) != net
                                && r.network.to_string() != net
                        });
                    }
                    Some("route-gateway") => out.route_gateway = None,
                    Some("redirect-gateway") => out.redirect_gateway = None,
                    Some("dhcp-option") => match (t.get(1).map(|s| s.to_ascii_uppercase()).as_deref(), t.get(2)) {
                        (Some("DNS" | "DNS6"), Some(a)) => {
                            if let Ok(a) = a.parse::<IpAddr>() {
                                out.dns_servers.retain(|x| *x != a);
                            }
                        }
                        (Some("DOMAIN" | "DOMAIN-SEARCH"), Some(d)) => out.search_domains.retain(|x| x != d),
                        _ => {}
                    },
                    _ => notes.push(format!(
                        "pull-filter ignore: `{opt}` is applied by the protocol engine and cannot be filtered out; only route, route-ipv6, route-gateway, redirect-gateway and dhcp-option are"
                    )),
                }
                debug!("pushed option removed by filter: {opt}");
            }
        }
    }
    Ok((out, notes))
}

/// `redirect-gateway` flags into what warren-net does for IPv4, with notes for the flags it
/// does not (`ipv6` is [`tunnel_spec6`]'s, `!ipv4` leaves IPv4 alone).
pub fn redirect_from_flags(flags: &[String]) -> (Option<Redirect>, Vec<String>) {
    let mut notes = Vec::new();
    if flags.iter().any(|f| f == "!ipv4") {
        return (None, notes);
    }
    let mut r = Redirect::default();
    for f in flags {
        match f.as_str() {
            "def1" => r.def1 = true,
            "local" => r.local = true,
            "autolocal" | "bypass-dhcp" | "ipv6" => {}
            other => notes.push(format!(
                "redirect-gateway {other}: not supported yet; ignored"
            )),
        }
    }
    if !r.def1 {
        notes.push("redirect-gateway without def1: warren adds 0.0.0.0/1 and 128.0.0.0/1 (as def1) rather than replacing the default route".to_owned());
    }
    (Some(r), notes)
}

/// The tunnel's IPv6 settings from the filtered push and the profile: the pushed
/// `ifconfig-ipv6` (else the profile's), the profile's and the pushed `route-ipv6`, and
/// `redirect-gateway ipv6` (warren-net plans its four routes). `None` without an address:
/// OpenVPN sets up no IPv6 routes on a tun without one either.
pub fn tunnel_spec6(pushed: &PushedConfig, net: &NetOptions) -> (Option<TunnelSpec6>, Vec<String>) {
    let mut notes = Vec::new();
    let flags = pushed.redirect_gateway.as_ref().or(net.redirect.as_ref());
    let redirect = flags
        .filter(|f| f.iter().any(|x| x == "ipv6"))
        .map(|f| Redirect {
            def1: false,
            local: f.iter().any(|x| x == "local"),
        });
    let mut routes: Vec<Route6Request> = Vec::new();
    let wanted = net.routes_ipv6.iter().copied().chain(
        pushed
            .routes_ipv6
            .iter()
            .map(|r| (Ipv6Net::new(r.network, r.prefix), r.metric)),
    );
    for (network, metric) in wanted {
        let r = Route6Request { network, metric };
        if !routes.contains(&r) {
            routes.push(r);
        }
    }
    let address = pushed
        .ifconfig_ipv6
        .map(|(a, p, _)| (a, p))
        .or(net.ifconfig_ipv6);
    let Some((address, prefix)) = address else {
        if !routes.is_empty() || redirect.is_some() {
            notes.push(
                "IPv6 routes without an IPv6 address on the tun (no `ifconfig-ipv6`): not added"
                    .to_owned(),
            );
        }
        return (None, notes);
    };
    let spec = TunnelSpec6 {
        address,
        prefix,
        routes,
        redirect,
    };
    (Some(spec), notes)
}

/// The tunnel's network settings from the filtered push and the profile.
pub fn tunnel_spec(
    dev: &str,
    pushed: &PushedConfig,
    net: &NetOptions,
    server: IpAddr,
    default_mtu: u16,
) -> Result<(TunnelSpec, Vec<String>), String> {
    let (address, second) = pushed
        .ifconfig
        .ok_or_else(|| "the server pushed no `ifconfig`".to_owned())?;
    // options.c / tun.c: in `topology subnet` the second address is the netmask; in net30
    // and p2p (also when no topology is pushed: the client's default is net30) it is the
    // remote end of a point-to-point link. A tun is a layer-3 device, so the local address
    // as a /32 with routes through the device reaches that remote as well.
    let prefix = if pushed.topology_subnet {
        warren_net::prefix_len(second).map_err(|e| format!("pushed ifconfig: {e}"))?
    } else {
        32
    };
    let mut notes = Vec::new();
    let mut routes = net.routes.clone();
    if !pushed.topology_subnet {
        // The point-to-point remote (`ip addr add LOCAL peer REMOTE` gives OpenVPN this
        // route; in p2p it is the server, reached through no pushed route).
        routes.insert(
            0,
            RouteRequest {
                network: Endpoint::Ip(second),
                netmask: Ipv4Addr::BROADCAST,
                gateway: None,
                metric: None,
            },
        );
    }
    routes.extend(pushed.routes.iter().map(|r| RouteRequest {
        network: Endpoint::Ip(r.network),
        netmask: r.netmask,
        gateway: r.gateway.map(Endpoint::Ip),
        metric: r.metric,
    }));
    let flags = pushed.redirect_gateway.as_ref().or(net.redirect.as_ref());
    let redirect = match flags {
        Some(f) => {
            let (r, n) = redirect_from_flags(f);
            notes.extend(n);
            r
        }
        None => None,
    };
    let (ipv6, n) = tunnel_spec6(pushed, net);
    notes.extend(n);
    let mut dns = net.dns.clone();
    for s in &pushed.dns_servers {
        if !dns.servers.contains(s) {
            dns.servers.push(*s);
        }
    }
    // `dns server N resolve-domains`: only resolved there (`~domain`, see DnsSpec).
    let route_only = pushed.dns_resolve_domains.iter().map(|d| format!("~{d}"));
    for d in pushed.search_domains.iter().cloned().chain(route_only) {
        if !dns.domains.contains(&d) {
            dns.domains.push(d);
        }
    }
    if pushed.raw.iter().any(|o| o.trim() == "block-outside-dns") {
        // OpenVPN's Windows client filters DNS outside the tunnel with WFP; on Linux the
        // kill switch (`--kill-switch`) does that.
        debug!("pushed block-outside-dns: Windows-only; ignored");
    }
    let spec = TunnelSpec {
        dev: dev.to_owned(),
        address,
        prefix,
        mtu: pushed.tun_mtu.unwrap_or(default_mtu),
        vpn_gateway: pushed.route_gateway,
        server,
        routes,
        redirect,
        dns,
        ipv6,
    };
    Ok((spec, notes))
}

/// The client's data path: the current attempt's engine, if any.
impl DataPath for Option<Attempt> {
    fn open(
        &mut self,
        now: Instant,
        from: SocketAddr,
        _stream: bool,
        dgram: &mut [u8],
        stats: &mut LoopStats,
    ) -> Option<Range<usize>> {
        let a = self.as_mut().filter(|a| a.server == from)?;
        a.heard = true;
        match a.client.handle_datagram(now, from, dgram) {
            ClientDatagram::Tun(range) => Some(range),
            ClientDatagram::Consumed => None,
            ClientDatagram::Dropped(reason) => {
                stats.engine_dropped += 1;
                if matches!(reason, DropReason::DecryptFailed | DropReason::Replay)
                    && DataPlane::is_data(dgram)
                {
                    stats.data_auth_failed += 1;
                }
                trace!(?reason, "datagram dropped");
                None
            }
        }
    }

    fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        _via: Via,
        stats: &mut LoopStats,
    ) -> Option<(SocketAddr, Range<usize>)> {
        let Some(a) = self.as_mut().filter(|a| a.connected) else {
            stats.dropped_while_down += 1;
            return None;
        };
        match a.client.encapsulate(now, buf, len) {
            Ok(range) => Some((a.server, range)),
            Err(reason) => {
                stats.engine_dropped += 1;
                trace!(?reason, "tun packet dropped");
                None
            }
        }
    }
}

/// One connection attempt: an engine (its socket is [`Loop::socket`]).
struct Attempt {
    client: Client,
    /// Where the socket connects: the server, or its proxy.
    server: SocketAddr,
    /// With a proxy: the server as the proxy was asked for it, and the proxy.
    via: Option<String>,
    started: Instant,
    /// The entry's `server-poll-timeout`.
    poll_timeout: Option<Duration>,
    heard: bool,
    connected: bool,
    /// When the session came up, for SIGUSR2's statistics.
    connected_at: Option<Instant>,
}

struct Loop {
    engine: ClientConfig,
    opts: ClientLoopOptions,
    stats: ClientStats,
    attempt: Option<Attempt>,
    /// The current attempt's socket (UDP remotes).
    socket: Option<UdpIo>,
    /// The current attempt's connection (TCP remotes).
    tcp: Option<TcpLink>,
    tun: Option<OffloadTun>,
    net: Option<TunnelNet>,
    /// The kill switch, when on.
    ks: Option<Guard>,
    remote_idx: usize,
    failures: u32,
    next_attempt_at: Option<Instant>,
    resolve_failing_since: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// SIGUSR1/SIGHUP: the session is being closed for a restart; a new attempt starts when
    /// it has closed or at this deadline.
    restart_deadline: Option<Instant>,
    /// The poller must be rebuilt (the socket or the tun changed).
    fds_changed: bool,
    /// The data path's buffers and counters.
    pump: Pump,
    tx_buf: Vec<u8>,
    mtu: u16,
    /// The "up" line was printed once; later connections print "reconnected".
    announced: bool,
    /// The tunnel variables of the `up` script, kept for `route-up` and `down`.
    up_env: Vec<crate::scripts::Var>,
    /// The tunnel `up` ran for (`down` gets the same arguments).
    up_tun: Option<crate::scripts::TunFacts>,
}

/// What a turn of the loop decided.
enum Flow {
    Continue,
    Exit,
}

/// Runs the client until SIGINT/SIGTERM (Ok), `AUTH_FAILED`/`HALT` or a fatal error. The
/// network is restored in every case before this returns.
pub fn run_client(
    engine: ClientConfig,
    opts: ClientLoopOptions,
) -> Result<ClientStats, ClientLoopError> {
    if opts.remotes.is_empty() {
        return Err(ClientLoopError::NoRemote);
    }
    if let Some(r) = opts.remotes.iter().find(|r| r.proxy.is_some() && !r.tcp) {
        return Err(ClientLoopError::ProxyNeedsTcp {
            host: r.host.clone(),
        });
    }
    let ks = if opts.kill_switch {
        Some(Guard::engage(
            &opts.remotes,
            Path::new(warren_net::DEFAULT_JOURNAL_DIR),
        )?)
    } else {
        None
    };
    let mtu = opts.tun_mtu;
    let mut l = Loop {
        engine,
        opts,
        stats: ClientStats::default(),
        attempt: None,
        socket: None,
        tcp: None,
        tun: None,
        net: None,
        ks,
        remote_idx: 0,
        failures: 0,
        next_attempt_at: None,
        resolve_failing_since: None,
        shutdown_deadline: None,
        restart_deadline: None,
        fds_changed: true,
        // A client's I/O errors are routine while it reconnects: traced, not warned.
        pump: Pump::new(false),
        tx_buf: Vec::with_capacity(2048),
        mtu: 0,
        announced: false,
        up_env: Vec::new(),
        up_tun: None,
    };
    l.size_buffers(mtu);
    let result = l.run();
    // Leave in order: the session is gone, then routes and DNS, then the tun device.
    l.end_attempt();
    if let Some(mut net) = l.net.take()
        && let Err(e) = net.restore()
    {
        warn!("restoring the network: {e}");
    }
    l.run_down(if result.is_ok() { "sigterm" } else { "error" });
    l.tun = None;
    // Last: until here nothing could leak.
    if let Some(ks) = l.ks.take()
        && let Err(e) = ks.release()
    {
        warn!(
            "the kill switch is still on ({e}); remove it with `warren client --kill-switch-off`"
        );
    }
    l.stats.io = l.pump.stats.clone();
    let s = &l.stats.io;
    info!(
        connections = l.stats.connections,
        udp_received = s.udp_received,
        udp_recv_calls = s.udp_recv_calls,
        udp_sent = s.udp_sent,
        udp_send_calls = s.udp_send_calls,
        tcp_received = s.tcp_received,
        tcp_framed = s.tcp_framed,
        tun_read = s.tun_read,
        tun_read_calls = s.tun_read_calls,
        tun_written = s.tun_written,
        tun_write_calls = s.tun_write_calls,
        engine_dropped = s.engine_dropped,
        "client stopped; network restored"
    );
    result.map(|()| l.stats)
}

/// OpenVPN's route variables (route.c `setenv_routes`): `route_vpn_gateway`,
/// `route_net_gateway`, and `route_network_N`/`route_netmask_N`/`route_gateway_N`
/// (`route_metric_N` when set) for the IPv4 routes into the tun.
fn route_env(spec: &TunnelSpec, installed: &[warren_net::RouteSpec]) -> Vec<crate::scripts::Var> {
    let mut e = Vec::new();
    if let Some(g) = spec.vpn_gateway {
        e.push(("route_vpn_gateway".to_owned(), g.to_string()));
    }
    let mut i = 0;
    for r in installed
        .iter()
        .filter(|r| r.dev.as_deref() == Some(spec.dev.as_str()))
    {
        let warren_net::IpNet::V4(n) = r.dst else {
            continue;
        };
        i += 1;
        let mask = std::net::Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(n.prefix()))
                .unwrap_or(0),
        );
        e.push((format!("route_network_{i}"), n.addr().to_string()));
        e.push((format!("route_netmask_{i}"), mask.to_string()));
        let gw = match r.via {
            Some(IpAddr::V4(g)) => g.to_string(),
            _ => spec.vpn_gateway.map(|g| g.to_string()).unwrap_or_default(),
        };
        e.push((format!("route_gateway_{i}"), gw));
        if let Some(m) = r.metric {
            e.push((format!("route_metric_{i}"), m.to_string()));
        }
    }
    e
}

impl Loop {
    /// `up`, once the new tun device has its address (init.c `do_open_tun`).
    fn run_up(
        &mut self,
        spec: &TunnelSpec,
        pushed: &PushedConfig,
        server: SocketAddr,
    ) -> Result<(), Fatal> {
        let Some(sc) = &self.opts.scripts else {
            return Ok(());
        };
        let netmask = std::net::Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(spec.prefix))
                .unwrap_or(0),
        );
        let mut env = sc.env.clone();
        env.push(("ifconfig_local".into(), spec.address.to_string()));
        env.push(("ifconfig_netmask".into(), netmask.to_string()));
        // socket.c setenv_trusted / ssl_verify.c setenv_untrusted: the server's address.
        env.extend(crate::management::env::address(true, &server));
        env.extend(crate::management::env::address(false, &server));
        if let Some(v6) = &spec.ipv6 {
            env.push(("ifconfig_ipv6_local".into(), v6.address.to_string()));
            env.push(("ifconfig_ipv6_netbits".into(), v6.prefix.to_string()));
        }
        // options.c: pushed dhcp-options reach scripts as foreign_option_N.
        let mut n = 0;
        for o in pushed.raw.iter().filter(|o| o.starts_with("dhcp-option ")) {
            n += 1;
            env.push((format!("foreign_option_{n}"), o.clone()));
        }
        let tun = crate::scripts::TunFacts {
            dev: spec.dev.clone(),
            tun_mtu: spec.mtu,
            local: spec.address.to_string(),
            remote_or_netmask: netmask.to_string(),
        };
        // init.c run_up_down: these stay in the environment of later scripts.
        env.push(("tun_mtu".into(), tun.tun_mtu.to_string()));
        env.push(("dev".into(), tun.dev.clone()));
        self.up_env = env;
        if let Some(cmd) = &sc.up
            && !crate::scripts::run_up_down(
                "--up/--down",
                cmd,
                "up",
                &self.up_env,
                &tun,
                None,
                sc.timeout,
            )
        {
            return Err(Fatal::Net(ClientLoopError::UpScript));
        }
        self.up_tun = Some(tun);
        Ok(())
    }

    /// `down`, as the tun device goes (init.c `do_close_tun`).
    fn run_down(&mut self, signal: &str) {
        let (Some(sc), Some(tun)) = (&self.opts.scripts, &self.up_tun) else {
            return;
        };
        if let Some(cmd) = &sc.down {
            let mut e = self.up_env.clone();
            e.extend(
                sc.env
                    .iter()
                    .filter(|(k, _)| k.starts_with("route_"))
                    .cloned(),
            );
            crate::scripts::run_up_down(
                "--up/--down",
                cmd,
                "down",
                &e,
                tun,
                Some(signal),
                sc.timeout,
            );
        }
    }

    fn size_buffers(&mut self, mtu: u16) {
        if mtu <= self.mtu {
            return;
        }
        self.mtu = mtu;
        match &self.socket {
            Some(s) => self.pump.fit(s.is_batched(), mtu),
            None => self.pump.fit_tun(mtu),
        }
    }

    fn run(&mut self) -> Result<(), ClientLoopError> {
        let mut poller = Poller::new();
        let mut t_sig = poller.add(self.opts.signals.as_fd(), Interest::Readable);
        let mut t_udp = None;
        let mut t_tun = None;
        let mut t_tcp = None;
        let now = self.opts.clock.now();
        self.next_attempt_at = Some(now);
        loop {
            let now = self.opts.clock.now();
            if self.attempt.is_none()
                && self.shutdown_deadline.is_none()
                && self.next_attempt_at.is_some_and(|t| now >= t)
            {
                self.next_attempt_at = None;
                self.start_attempt(now)?;
                self.after_input(now)?;
            }
            if self.fds_changed {
                self.fds_changed = false;
                poller = Poller::new();
                t_sig = poller.add(self.opts.signals.as_fd(), Interest::Readable);
                t_udp = self
                    .socket
                    .as_ref()
                    .map(|s| poller.add(s.as_fd(), Interest::Readable));
                t_tun = self
                    .tun
                    .as_ref()
                    .map(|t| poller.add(t.as_fd(), Interest::Readable));
                t_tcp = self.tcp.as_ref().map(|l| l.register(&mut poller));
            }
            if let (Some(t), Some(link)) = (t_tcp, &self.tcp) {
                poller.set_interest(t, link.interest());
            }
            if let Some(ks) = &mut self.ks {
                ks.poll();
            }
            let now = self.opts.clock.now();
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            poller.wait(timeout).map_err(ClientLoopError::Poll)?;
            let now = self.opts.clock.now();

            if poller.is_readable(t_sig) {
                while let Some(sig) = self.opts.signals.read().map_err(ClientLoopError::Signal)? {
                    if let Flow::Exit = self.on_signal(now, sig) {
                        return Ok(());
                    }
                }
            }
            if t_udp.is_some_and(|t| poller.is_readable(t)) {
                self.read_udp(now);
            }
            if let (Some(t), Some(link)) = (t_tcp, &mut self.tcp) {
                link.on_ready(
                    now,
                    &poller,
                    t,
                    &mut self.pump,
                    self.tun.as_mut(),
                    &mut self.attempt,
                );
            }
            if t_tun.is_some_and(|t| poller.is_readable(t)) {
                self.read_tun(now)?;
            }
            if let Flow::Exit = self.after_input(now)? {
                return Ok(());
            }
            if let Flow::Exit = self.check_tcp(now)? {
                return Ok(());
            }
            self.check_connect_timeout(now)?;
            if self.restart_deadline.is_some_and(|d| now >= d) {
                debug!("exit notification grace period over; restarting");
                self.restart_now(now);
            }
            if let Some(deadline) = self.shutdown_deadline {
                if now >= deadline {
                    debug!("exit notification grace period over");
                    return Ok(());
                }
                if self.attempt.is_none() {
                    return Ok(());
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let engine = self.attempt.as_ref().and_then(|a| a.client.poll_timeout());
        let connect = self
            .attempt
            .as_ref()
            .filter(|a| !a.heard && !a.connected)
            .and_then(|a| a.poll_timeout.map(|t| a.started + t));
        let next = if self.attempt.is_none() {
            self.next_attempt_at
        } else {
            None
        };
        let proxy = self.tcp.as_ref().and_then(TcpLink::deadline);
        [
            engine,
            connect,
            next,
            proxy,
            self.shutdown_deadline,
            self.restart_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_signal(&mut self, now: Instant, sig: Signal) -> Flow {
        match sig {
            Signal::User2 => {
                self.log_stats();
                return Flow::Continue;
            }
            Signal::User1 | Signal::Hangup if self.shutdown_deadline.is_none() => {
                self.soft_restart(now, sig);
                return Flow::Continue;
            }
            Signal::User1 | Signal::Hangup => {
                info!("received {} while exiting: ignored", sig.name());
                return Flow::Continue;
            }
            Signal::Interrupt | Signal::Terminate => {}
        }
        if self.shutdown_deadline.is_some() {
            info!("received {} again: exiting now", sig.name());
            return Flow::Exit;
        }
        // OpenVPN sig.c prints "SIGTERM[hard,] received, process exiting".
        info!("{}[hard,] received, process exiting", sig.name());
        match &mut self.attempt {
            Some(a) if a.connected => {
                a.client.close(now);
                self.shutdown_deadline = Some(now + self.opts.exit_grace);
                Flow::Continue
            }
            _ => Flow::Exit,
        }
    }

    /// SIGUSR1/SIGHUP: OpenVPN's soft restart with `persist-tun`. A session that is up is
    /// closed as at exit (explicit-exit-notify, so the server frees it at once), for at most
    /// `exit_grace`; then [`Loop::restart_now`]. The tun device, routes and DNS stay.
    fn soft_restart(&mut self, now: Instant, sig: Signal) {
        info!("{}[soft,signal] received, process restarting", sig.name());
        if self.restart_deadline.is_some() {
            debug!("a restart is already under way");
            return;
        }
        match &mut self.attempt {
            Some(a) if a.connected && !a.client.is_closed() => {
                a.client.close(now);
                self.restart_deadline = Some(now + self.opts.exit_grace);
            }
            _ => self.restart_now(now),
        }
    }

    /// Ends the current attempt (if any) and starts a new one with the same remote at once,
    /// without counting a failure.
    fn restart_now(&mut self, now: Instant) {
        self.restart_deadline = None;
        self.end_attempt();
        self.fds_changed = true;
        self.failures = 0;
        self.next_attempt_at = Some(now);
    }

    /// SIGUSR2: the current session and the counters to the log (OpenVPN prints its
    /// statistics there on SIGUSR2).
    fn log_stats(&self) {
        let clock = self.opts.clock;
        match &self.attempt {
            Some(a) if a.connected => {
                let (bytes_in, bytes_out) = a.client.traffic();
                let since = a.connected_at.map_or_else(String::new, |t| {
                    warren_io::format_local_time(
                        clock.unix_time_at_zero().saturating_add(t.as_secs()),
                    )
                });
                info!(
                    "SIGUSR2 received: connected to server {} since {since}; tunnel bytes in {bytes_in}, out {bytes_out}",
                    a.server
                );
            }
            Some(a) => info!(
                "SIGUSR2 received: connecting to server {} (not up yet)",
                a.server
            ),
            None => info!("SIGUSR2 received: not connected; waiting to reconnect"),
        }
        let s = &self.pump.stats;
        info!(
            connections = self.stats.connections,
            udp_received = s.udp_received,
            udp_sent = s.udp_sent,
            tun_read = s.tun_read,
            tun_written = s.tun_written,
            engine_dropped = s.engine_dropped,
            dropped_while_down = s.dropped_while_down,
            "statistics since start (packets)"
        );
    }

    /// Resolves the current remote, opens a socket and starts an engine. A name that does
    /// not resolve counts as a failed attempt.
    fn start_attempt(&mut self, now: Instant) -> Result<(), ClientLoopError> {
        let n = self.opts.remotes.len();
        let remote = self.opts.remotes[self.remote_idx % n].clone();
        // Through a proxy, the proxy's name is resolved here and the server's by the proxy.
        let (what, host, port) = match &remote.proxy {
            Some(p) => (p.name(), p.host.as_str(), p.port),
            None => ("remote", remote.host.as_str(), remote.port),
        };
        // With the kill switch, among the addresses it lets out (no DNS while reconnecting).
        let resolved = match &self.ks {
            Some(ks) => ks.address_for(&remote),
            None => resolve(host, port, remote.family),
        };
        let server = match resolved {
            Ok(a) => {
                self.resolve_failing_since = None;
                a
            }
            Err(e) => {
                let since = *self.resolve_failing_since.get_or_insert(now);
                if let Some(limit) = self.opts.retry.resolve_for
                    && now.saturating_duration_since(since) >= limit
                {
                    return Err(ClientLoopError::Resolve {
                        host: host.to_owned(),
                        secs: limit.as_secs(),
                        last: e,
                    });
                }
                warn!("cannot resolve {what} `{host}`: {e}");
                return self.fail_attempt(now, Next::Advance, true);
            }
        };
        if let Some(net) = &mut self.net
            && let Err(e) = net.prepare_remote(server.ip())
        {
            warn!(
                "keeping the route to {} outside the tunnel: {e}",
                server.ip()
            );
        }
        let family = if server.is_ipv4() {
            UdpFamily::V4
        } else {
            UdpFamily::V6
        };
        let local = match (self.opts.local, server) {
            (Some(ip @ IpAddr::V4(_)), SocketAddr::V4(_))
            | (Some(ip @ IpAddr::V6(_)), SocketAddr::V6(_)) => Some(ip),
            _ => None,
        };
        if remote.tcp {
            return self.start_tcp_attempt(now, &remote, server, local);
        }
        let socket = UdpIo::bind(
            &UdpBind {
                family,
                local,
                port: remote.lport,
                sndbuf: self.opts.sndbuf,
                rcvbuf: self.opts.rcvbuf,
            },
            self.opts.offload,
        )
        .map_err(ClientLoopError::Bind)?;
        self.pump.fit(socket.is_batched(), self.mtu);
        debug!("UDP socket: {}", socket.describe());
        self.begin_attempt(now, &remote, server, None)?;
        info!(
            "connecting to {server} ({}:{}) from {}",
            remote.host,
            remote.port,
            socket.local_addr()
        );
        self.socket = Some(socket);
        Ok(())
    }

    /// Starts the engine of an attempt whose socket or connection is open.
    /// explicit-exit-notify is UDP-only (fact sheet §9): over TCP the server sees the
    /// connection close instead.
    fn begin_attempt(
        &mut self,
        now: Instant,
        remote: &RemoteSpec,
        server: SocketAddr,
        via: Option<String>,
    ) -> Result<(), ClientLoopError> {
        let mut engine = self.engine.clone();
        engine.explicit_exit_notify = remote.explicit_exit_notify && !remote.tcp;
        let rng = OsRng::new().map_err(ClientLoopError::Rng)?;
        let client =
            Client::new(engine, server, Box::new(rng), now).map_err(ClientLoopError::Setup)?;
        self.attempt = Some(Attempt {
            client,
            server,
            via,
            started: now,
            poll_timeout: remote.poll_timeout,
            heard: false,
            connected: false,
            connected_at: None,
        });
        self.fds_changed = true;
        Ok(())
    }

    /// A TCP remote: connects without waiting (the engine's reset is queued and leaves
    /// once the connection is up).
    fn start_tcp_attempt(
        &mut self,
        now: Instant,
        remote: &RemoteSpec,
        server: SocketAddr,
        local: Option<IpAddr>,
    ) -> Result<(), ClientLoopError> {
        let max_frame = (usize::from(self.mtu.max(self.opts.tun_mtu)) + 512).max(2048);
        let mut link = match TcpLink::connect(server, local, max_frame) {
            Ok(l) => l,
            Err(e) => {
                match &remote.proxy {
                    Some(p) => warn!("TCP connect to {} {server} failed: {e}", p.name()),
                    None => warn!("TCP connect to {server} failed: {e}"),
                }
                return self.fail_attempt(now, Next::Advance, true);
            }
        };
        let target = format!("{}:{}", remote.host, remote.port);
        let mut via = None;
        if let Some(proxy) = &remote.proxy {
            let handshake = match Handshake::new(proxy, &remote.host, remote.port) {
                Ok(h) => h,
                Err(e) => {
                    warn!("{} {server}: {e}", proxy.name());
                    return self.fail_attempt(now, Next::Advance, true);
                }
            };
            // OpenVPN bounds the proxy handshake by the server-poll-timeout too.
            let timeout = remote.poll_timeout.unwrap_or(PROXY_TIMEOUT);
            link = link.via_proxy(proxy.name(), handshake, now, timeout, target.clone());
            via = Some(format!("{target} through {} {server}", proxy.name()));
        }
        self.pump.fit_tun(self.mtu);
        self.begin_attempt(now, remote, server, via.clone())?;
        let from = link
            .local_addr()
            .map_or_else(|| "an unbound socket".to_owned(), |a| a.to_string());
        match (&remote.proxy, &via) {
            (Some(p), Some(via)) if p.host.parse::<IpAddr>().is_err() => info!(
                "connecting to {via} ({}:{}) over TCP from {from}",
                p.host, p.port
            ),
            (Some(_), Some(via)) => info!("connecting to {via} over TCP from {from}"),
            _ => info!("connecting to {server} ({target}) over TCP from {from}"),
        }
        self.tcp = Some(link);
        Ok(())
    }

    /// A TCP connection that failed or ended ends the attempt (or the client, during
    /// shutdown); a session that was up starts again from the first entry.
    fn check_tcp(&mut self, now: Instant) -> Result<Flow, ClientLoopError> {
        if let Some(link) = &mut self.tcp {
            link.check_deadline(now);
        }
        let Some(why) = self
            .tcp
            .as_ref()
            .and_then(|l| l.failed())
            .map(str::to_owned)
        else {
            return Ok(Flow::Continue);
        };
        if self.shutdown_deadline.is_some() {
            debug!("{why}");
            self.end_attempt();
            return Ok(Flow::Exit);
        }
        let was_up = self.attempt.as_ref().is_some_and(|a| a.connected);
        if was_up {
            warn!("{why}: reconnecting");
            self.failures = 0;
            self.fail_attempt(now, Next::First, true)?;
        } else {
            warn!("{why}");
            self.fail_attempt(now, Next::Advance, true)?;
        }
        Ok(Flow::Continue)
    }

    /// Drops the current attempt's engine and socket.
    fn end_attempt(&mut self) {
        self.attempt = None;
        self.socket = None;
        self.tcp = None;
    }

    /// Ends the current attempt (if any) and schedules the next one on the entry `next`
    /// says, after the failed entry's `connect-retry` pause (`pause`) or at once. Gives up
    /// after `connect-retry-max` unsuccessful rounds.
    fn fail_attempt(
        &mut self,
        now: Instant,
        next: Next,
        pause: bool,
    ) -> Result<(), ClientLoopError> {
        self.end_attempt();
        self.fds_changed = true;
        self.failures = self.failures.saturating_add(1);
        let n = self.opts.remotes.len();
        if let Some(rounds) = self.opts.retry.max_rounds
            && u64::from(self.failures) >= u64::from(rounds) * n as u64
        {
            return Err(ClientLoopError::RetryMax { remotes: n, rounds });
        }
        let delay = if pause {
            self.opts.remotes[self.remote_idx % n].pause(self.failures, n)
        } else {
            Duration::ZERO
        };
        match next {
            Next::Same => {}
            Next::Advance => self.remote_idx = (self.remote_idx + 1) % n,
            Next::First => self.remote_idx = 0,
        }
        let r = &self.opts.remotes[self.remote_idx];
        info!(
            "next attempt in {} s: {}:{} ({})",
            delay.as_secs_f32(),
            r.host,
            r.port,
            r.proto_name()
        );
        self.next_attempt_at = Some(now + delay);
        Ok(())
    }

    /// OpenVPN `server-poll-timeout`: an attempt that has heard nothing from the server
    /// moves on to the next entry without a pause (forward.c check_server_poll_timeout).
    fn check_connect_timeout(&mut self, now: Instant) -> Result<(), ClientLoopError> {
        let Some(a) = &self.attempt else {
            return Ok(());
        };
        let Some(limit) = a.poll_timeout else {
            return Ok(());
        };
        if a.heard || a.connected || now < a.started + limit {
            return Ok(());
        }
        warn!(
            "no answer from {} within {} s (server-poll-timeout): trying the next connection",
            a.via.clone().unwrap_or_else(|| a.server.to_string()),
            limit.as_secs()
        );
        self.fail_attempt(now, Next::Advance, false)
    }

    /// One UDP batch: every datagram from the server opened in place, the plaintext
    /// written to the tun with one `send_batch`.
    fn read_udp(&mut self, now: Instant) {
        if let Some(udp) = &self.socket {
            self.pump
                .udp_to_tun(now, udp, self.tun.as_mut(), &mut self.attempt);
        }
    }

    /// Reads the tun (super-packets split into slots), seals every packet in place and
    /// sends them to the server in read order (GSO for equal-size runs).
    fn read_tun(&mut self, now: Instant) -> Result<(), ClientLoopError> {
        let Some(tun) = &mut self.tun else {
            return Ok(());
        };
        let mut out = Out {
            udp: self.socket.as_ref(),
            streams: self.tcp.as_mut().map(|l| l as &mut dyn Streams),
        };
        self.pump
            .tun_to_udp(now, tun, &mut out, &mut self.attempt)
            .map_err(|source| ClientLoopError::TunRead {
                name: tun.name().to_owned(),
                source,
            })?;
        // `block-ipv6`: the engine's ICMPv6 answers go back into the tun.
        if let Some(a) = &mut self.attempt {
            let stats = &mut self.pump.stats;
            a.client
                .drain_tun_replies(|pkt| match tun.send_batch(&[pkt]) {
                    Ok(sum) => stats.tun_written += sum.packets as u64,
                    Err(_) => stats.tun_write_errors += 1,
                });
        }
        Ok(())
    }

    /// Timers, transmissions, then lifecycle events.
    fn after_input(&mut self, now: Instant) -> Result<Flow, ClientLoopError> {
        let Some(a) = &mut self.attempt else {
            return Ok(Flow::Continue);
        };
        if self.socket.is_none() && self.tcp.is_none() {
            return Ok(Flow::Continue);
        }
        if a.client.poll_timeout().is_some_and(|t| t <= now) {
            a.client.handle_timeout(now);
        }
        let mut out = Out {
            udp: self.socket.as_ref(),
            streams: self.tcp.as_mut().map(|l| l as &mut dyn Streams),
        };
        for _ in 0..MAX_TRANSMITS_PER_TURN {
            let Some(dst) = a.client.poll_transmit(now, &mut self.tx_buf) else {
                break;
            };
            self.pump.send_one(now, &mut out, &self.tx_buf, dst);
        }
        if let Some(link) = &mut self.tcp {
            link.flush();
        }
        let mut events = Vec::new();
        while let Some(ev) = a.client.poll_event() {
            events.push(ev);
        }
        for ev in events {
            if let Flow::Exit = self.on_event(now, ev)? {
                return Ok(Flow::Exit);
            }
        }
        Ok(Flow::Continue)
    }

    fn on_event(&mut self, now: Instant, ev: ClientEvent) -> Result<Flow, ClientLoopError> {
        match ev {
            ClientEvent::Connected {
                config,
                cipher,
                ekm,
                server_cn,
            } => {
                let Some((server, via)) = self.attempt.as_ref().map(|a| (a.server, a.via.clone()))
                else {
                    return Ok(Flow::Continue);
                };
                let cn = server_cn.map(|c| format!(" (CN {c})")).unwrap_or_default();
                let peer = via.unwrap_or_else(|| server.to_string());
                match self.on_connected(&config, server, &peer, &cn) {
                    Ok(summary) => {
                        if let Some(a) = &mut self.attempt {
                            a.connected = true;
                            a.connected_at = Some(now);
                        }
                        self.failures = 0;
                        self.stats.connections += 1;
                        let kd = if ekm { "tls-ekm" } else { "tls1-prf" };
                        let verb = if self.announced { "reconnected" } else { "up" };
                        self.announced = true;
                        info!(
                            "warren client {verb}: {}, cipher {} ({kd})",
                            summary,
                            cipher.name()
                        );
                        if let Some(ks) = &mut self.ks {
                            ks.connected(server, self.tcp.is_some());
                        }
                        if let Some(d) = self.opts.drop_after_up.take() {
                            self.drop_privileges(d)?;
                        }
                    }
                    Err(Fatal::Net(e)) => return Err(e),
                    Err(Fatal::Retry(msg)) => {
                        error!("{msg}; reconnecting");
                        self.fail_attempt(now, Next::Same, true)?;
                    }
                }
            }
            ClientEvent::Renegotiated { key_id } => {
                debug!("renegotiated data channel keys (key id {key_id})")
            }
            ClientEvent::Disconnected { reason } => return self.on_disconnected(now, reason),
            other => debug!("client event: {other:?}"),
        }
        Ok(Flow::Continue)
    }

    /// `user`/`group` once the tunnel is up (see [`DropAfterUp`]).
    fn drop_privileges(&mut self, d: DropAfterUp) -> Result<(), ClientLoopError> {
        (d.prepare)().map_err(ClientLoopError::RestoreHelper)?;
        // The journal's last write, as root; from here the helper owns the DNS undo.
        if let Some(net) = &mut self.net {
            net.hand_over();
        }
        if let Some(ks) = &mut self.ks {
            ks.hand_over();
        }
        let done = warren_io::drop_privileges(
            d.user.as_deref(),
            d.group.as_deref(),
            warren_io::KeepCaps::NetAdminForChildren,
        )
        .map_err(ClientLoopError::Privileges)?;
        let who = format!(
            "{}:{}",
            d.user.unwrap_or_else(|| done.uid.to_string()),
            d.group.unwrap_or_else(|| {
                warren_io::group_name(done.gid).unwrap_or_else(|| done.gid.to_string())
            })
        );
        if done.has_net_admin() {
            info!("dropped privileges to {who}, keeping CAP_NET_ADMIN");
        } else {
            info!("dropped privileges to {who}");
        }
        Ok(())
    }

    /// Opens the tun device the first time and applies the network settings. Returns the
    /// summary for the "up" line. `server` is where the socket goes (the server, or its
    /// proxy: the route kept outside the tunnel), `peer` how to name the server.
    fn on_connected(
        &mut self,
        pushed: &PushedConfig,
        server: SocketAddr,
        peer: &str,
        cn: &str,
    ) -> Result<String, Fatal> {
        let (filtered, notes) = filter_pushed(
            pushed,
            self.opts.net.route_nopull,
            &self.opts.net.pull_filters,
        )
        .map_err(|opt| Fatal::Retry(format!("pushed option rejected by pull-filter: `{opt}`")))?;
        for n in notes {
            warn!("{n}");
        }
        let dev = self
            .tun
            .as_ref()
            .map_or(self.opts.dev.clone(), |t| t.name().to_owned());
        let (mut spec, notes) = tunnel_spec(
            &dev,
            &filtered,
            &self.opts.net,
            server.ip(),
            self.opts.tun_mtu,
        )
        .map_err(Fatal::Retry)?;
        for n in notes {
            warn!("{n}");
        }
        let mut newly_opened = false;
        if self.tun.is_none() {
            let mut tun = OffloadTun::open(&OffloadTunConfig {
                tun: TunConfig {
                    name: self.opts.dev.clone(),
                    address: spec.address,
                    prefix: spec.prefix,
                    mtu: spec.mtu,
                },
                offload: if self.opts.offload {
                    OffloadMode::Auto
                } else {
                    OffloadMode::Off
                },
                multi_queue: false,
            })
            .map_err(|source| {
                Fatal::Net(ClientLoopError::Tun {
                    dev: self.opts.dev.clone(),
                    source,
                })
            })?;
            // Everything written to this tun just passed the AEAD open: no need to
            // verify TCP/UDP checksums before coalescing (see `set_trust_checksums`).
            tun.set_trust_checksums(true);
            spec.dev = tun.name().to_owned();
            if let Some(ks) = &mut self.ks {
                ks.tun_opened(tun.name())
                    .map_err(|e| Fatal::Net(ClientLoopError::KillSwitch(e)))?;
            }
            self.net = Some(TunnelNet::new(
                NetState::new(),
                self.opts.net.dns_backend.clone(),
                tun.name(),
                spec.address,
                spec.prefix,
                spec.mtu,
            ));
            self.size_buffers(spec.mtu);
            info!(
                "data path: {}; {}",
                batch::describe_tun(&tun),
                match (&self.socket, &self.tcp) {
                    (Some(s), _) => s.describe(),
                    (None, Some(_)) => "TCP, one write per wake-up".to_owned(),
                    (None, None) => "no socket".to_owned(),
                }
            );
            self.tun = Some(tun);
            self.fds_changed = true;
            newly_opened = true;
        } else {
            self.size_buffers(spec.mtu);
        }
        let Some(net) = &mut self.net else {
            return Err(Fatal::Retry("internal: no network state".into()));
        };
        let notes = net
            .apply(&spec)
            .map_err(|e| Fatal::Net(ClientLoopError::Net(e)))?;
        for n in notes {
            warn!("{n}");
        }

        let installed = net.routes();
        let routes: Vec<String> = installed
            .iter()
            .filter(|r| r.dev.as_deref() == Some(spec.dev.as_str()))
            .map(|r| r.dst.to_string())
            .collect();
        if let Some(sc) = &mut self.opts.scripts {
            // route.c setenv_routes: route_* variables (OpenVPN sets them before `up`).
            let mut env = route_env(&spec, &installed);
            sc.env.retain(|(k, _)| !k.starts_with("route_"));
            sc.env.append(&mut env);
        }
        if newly_opened {
            // Unlike OpenVPN, after the routes: warren adds them with the address.
            self.run_up(&spec, &filtered, server)?;
        }
        if let Some(sc) = &self.opts.scripts
            && let Some(cmd) = &sc.route_up
        {
            let mut e = self.up_env.clone();
            e.extend(
                sc.env
                    .iter()
                    .filter(|(k, _)| k.starts_with("route_"))
                    .cloned(),
            );
            crate::scripts::run_route_up(cmd, &e, sc.timeout);
        }
        let mut s = format!(
            "{}/{}{} on {} via server {peer}{cn}, routes: {}",
            spec.address,
            spec.prefix,
            spec.ipv6
                .as_ref()
                .map(|v| format!(" {}/{}", v.address, v.prefix))
                .unwrap_or_default(),
            spec.dev,
            if routes.is_empty() {
                "none".to_owned()
            } else {
                routes.join(", ")
            }
        );
        if !spec.dns.servers.is_empty() {
            let d: Vec<String> = spec.dns.servers.iter().map(|x| x.to_string()).collect();
            s.push_str(&format!(", DNS {}", d.join(" ")));
        }
        Ok(s)
    }

    fn on_disconnected(
        &mut self,
        now: Instant,
        reason: ClientDisconnect,
    ) -> Result<Flow, ClientLoopError> {
        let was_up = self.attempt.as_ref().is_some_and(|a| a.connected);
        if self.shutdown_deadline.is_some() {
            debug!("session closed: {reason:?}");
            self.end_attempt();
            return Ok(Flow::Exit);
        }
        if self.restart_deadline.is_some() {
            debug!("session closed for the restart: {reason:?}");
            self.restart_now(now);
            return Ok(Flow::Continue);
        }
        let advance = match &reason {
            ClientDisconnect::AuthFailed(r) => return Err(ClientLoopError::AuthFailed(r.clone())),
            ClientDisconnect::Halt(r) => return Err(ClientLoopError::Halted(r.clone())),
            ClientDisconnect::Restart(r) => {
                info!("the server asked to reconnect (RESTART{})", fmt_reason(r));
                // push.c: `RESTART,[N]` means "try the next server".
                r.contains("[N]")
            }
            ClientDisconnect::PingTimeout => {
                warn!("no traffic from the server (ping-restart): reconnecting");
                true
            }
            ClientDisconnect::HandshakeTimeout => {
                warn!("TLS handshake did not complete within hand-window");
                true
            }
            ClientDisconnect::TlsError(e) => {
                error!("connection failed: TLS error: {e}");
                true
            }
            ClientDisconnect::Closed => true,
            other => {
                warn!("disconnected: {other:?}");
                true
            }
        };
        let next = if was_up {
            // A session that was up: reconnect after one `connect-retry` pause, from the
            // first entry, so that a profile whose first entry is UDP and a later one TCP
            // goes back to UDP once UDP works again.
            // `RESTART,[N]` still moves on to the next entry.
            self.failures = 0;
            if matches!(&reason, ClientDisconnect::Restart(r) if r.contains("[N]")) {
                Next::Advance
            } else {
                Next::First
            }
        } else if advance {
            Next::Advance
        } else {
            Next::Same
        };
        self.fail_attempt(now, next, true)?;
        Ok(Flow::Continue)
    }
}

/// Which entry the attempt after a failure uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Same,
    Advance,
    /// The first entry: after a session that was up.
    First,
}

/// Errors of `on_connected`: fatal ones end the loop, others retry.
enum Fatal {
    Net(ClientLoopError),
    Retry(String),
}

/// Resolves a remote (or its proxy) with the system resolver, honouring `udp4`/`udp6`.
fn resolve(host: &str, port: u16, family: RemoteFamily) -> Result<SocketAddr, String> {
    let addrs = (host, port).to_socket_addrs().map_err(|e| e.to_string())?;
    pick(addrs, family).ok_or_else(|| "no address of the requested family".to_owned())
}

/// The address to connect to among `addrs` (in the resolver's order) for `family`.
pub(crate) fn pick(
    addrs: impl IntoIterator<Item = SocketAddr>,
    family: RemoteFamily,
) -> Option<SocketAddr> {
    let mut fallback = None;
    for a in addrs {
        match (family, a) {
            (RemoteFamily::V4, SocketAddr::V4(_)) | (RemoteFamily::V6, SocketAddr::V6(_)) => {
                return Some(a);
            }
            // `udp`: OpenVPN 2.6 tries the addresses in getaddrinfo order; IPv4 first keeps
            // single-stack hosts working.
            (RemoteFamily::Any, SocketAddr::V4(_)) => return Some(a),
            (RemoteFamily::Any, SocketAddr::V6(_)) => {
                fallback.get_or_insert(a);
            }
            _ => {}
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_openvpn::PushedRoute;

    fn pushed() -> PushedConfig {
        let raw: Vec<String> = [
            "route-gateway 10.8.0.1",
            "topology subnet",
            "route 192.0.2.0 255.255.255.0",
            "route 198.51.100.0 255.255.255.0",
            "redirect-gateway def1",
            "dhcp-option DNS 10.8.0.1",
            "dhcp-option DOMAIN vpn.example",
            "ifconfig 10.8.0.2 255.255.255.0",
            "ping 10",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        PushedConfig {
            ifconfig: Some((Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(255, 255, 255, 0))),
            route_gateway: Some(Ipv4Addr::new(10, 8, 0, 1)),
            topology_subnet: true,
            routes: vec![
                PushedRoute {
                    network: Ipv4Addr::new(192, 0, 2, 0),
                    netmask: Ipv4Addr::new(255, 255, 255, 0),
                    gateway: None,
                    metric: None,
                },
                PushedRoute {
                    network: Ipv4Addr::new(198, 51, 100, 0),
                    netmask: Ipv4Addr::new(255, 255, 255, 0),
                    gateway: None,
                    metric: None,
                },
            ],
            redirect_gateway: Some(vec!["def1".into()]),
            dns_servers: vec!["10.8.0.1".parse().expect("ip")],
            search_domains: vec!["vpn.example".into()],
            ping: Some(10),
            raw,
            ..PushedConfig::default()
        }
    }

    #[test]
    fn route_nopull_keeps_ifconfig_and_route_gateway() {
        let (f, notes) = filter_pushed(&pushed(), true, &[]).expect("ok");
        assert!(
            f.routes.is_empty()
                && f.redirect_gateway.is_none()
                && f.dns_servers.is_empty()
                && f.search_domains.is_empty()
        );
        assert_eq!(f.route_gateway, Some(Ipv4Addr::new(10, 8, 0, 1)));
        assert!(f.ifconfig.is_some());
        assert!(notes.is_empty());
    }

    #[test]
    fn pull_filters_first_match_wins() {
        let filters = vec![
            (PullAction::Accept, "route 198.51.100.0".to_owned()),
            (PullAction::Ignore, "route ".to_owned()),
            (PullAction::Ignore, "redirect-gateway".to_owned()),
            (PullAction::Ignore, "dhcp-option DNS".to_owned()),
            (PullAction::Ignore, "ping".to_owned()),
        ];
        let (f, notes) = filter_pushed(&pushed(), false, &filters).expect("ok");
        assert_eq!(f.routes.len(), 1);
        assert_eq!(f.routes[0].network, Ipv4Addr::new(198, 51, 100, 0));
        assert!(f.redirect_gateway.is_none());
        assert!(f.dns_servers.is_empty());
        assert_eq!(f.search_domains, ["vpn.example"]);
        // `route-gateway` does not start with "route " (with the space): kept.
        assert!(f.route_gateway.is_some());
        assert_eq!(notes.len(), 1, "{notes:?}");
        let e = filter_pushed(
            &pushed(),
            false,
            &[(PullAction::Reject, "redirect-gateway".into())],
        )
        .expect_err("reject");
        assert_eq!(e, "redirect-gateway def1");
    }

    #[test]
    fn spec_merges_profile_and_push() {
        let mut net = NetOptions::default();
        net.dns.servers.push("192.0.2.53".parse().expect("ip"));
        net.dns.servers.push("10.8.0.1".parse().expect("ip"));
        net.redirect = Some(vec!["def1".into(), "bypass-dns".into()]);
        let mut p = pushed();
        p.redirect_gateway = None;
        p.dns_resolve_domains = vec!["corp.example".into()];
        let (s, notes) =
            tunnel_spec("tun7", &p, &net, "203.0.113.1".parse().expect("ip"), 1500).expect("spec");
        assert_eq!(
            (s.address, s.prefix, s.mtu),
            (Ipv4Addr::new(10, 8, 0, 2), 24, 1500)
        );
        assert_eq!(s.dns.servers.len(), 2);
        assert_eq!(s.dns.domains, ["vpn.example", "~corp.example"]);
        assert_eq!(
            s.redirect,
            Some(Redirect {
                def1: true,
                local: false
            })
        );
        assert_eq!(notes.len(), 1, "bypass-dns note: {notes:?}");
        assert_eq!(s.routes.len(), 2);
        p.ifconfig = None;
        assert!(tunnel_spec("tun7", &p, &net, "203.0.113.1".parse().expect("ip"), 1500).is_err());
    }

    #[test]
    fn ipv6_spec_from_push_and_profile() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().expect("ip");
        let r6 = |s: &str, prefix, metric| Route6Request {
            network: Ipv6Net::new(v6(s), prefix),
            metric,
        };
        let mut p = pushed();
        p.ifconfig_ipv6 = Some((v6("fd00:8::1000"), 64, v6("fd00:8::1")));
        p.routes_ipv6 = vec![warren_openvpn::PushedRouteIpv6 {
            network: v6("fd00:99::"),
            prefix: 64,
            gateway: None,
            metric: Some(7),
        }];
        p.redirect_gateway = Some(vec!["ipv6".into(), "!ipv4".into()]);
        let mut net = NetOptions {
            routes_ipv6: vec![(Ipv6Net::new(v6("fd00:77::"), 48), None)],
            ..NetOptions::default()
        };
        let (s, notes) = tunnel_spec6(&p, &net);
        assert!(notes.is_empty(), "{notes:?}");
        let s = s.expect("IPv6");
        assert_eq!((s.address, s.prefix), (v6("fd00:8::1000"), 64));
        // The profile's routes, then the pushed ones; redirect-gateway ipv6 for warren-net.
        assert_eq!(
            s.routes,
            [r6("fd00:77::", 48, None), r6("fd00:99::", 64, Some(7))]
        );
        assert_eq!(
            s.redirect,
            Some(Redirect {
                def1: false,
                local: false
            })
        );
        // `!ipv4` leaves IPv4 alone, without a note about IPv6.
        assert_eq!(
            redirect_from_flags(&["ipv6".into(), "!ipv4".into()]),
            (None, vec![])
        );
        let (r, n) = redirect_from_flags(&["def1".into(), "ipv6".into()]);
        assert!(r.is_some() && n.is_empty(), "{n:?}");
        // It reaches the tunnel spec.
        let (t, _) =
            tunnel_spec("tun7", &p, &net, "203.0.113.1".parse().expect("ip"), 1500).expect("spec");
        assert_eq!(t.ipv6, Some(s));
        // The profile's address when nothing is pushed; no address, no IPv6 (with a note).
        p.ifconfig_ipv6 = None;
        net.ifconfig_ipv6 = Some((v6("fd00:5::2"), 64));
        let (s, _) = tunnel_spec6(&p, &net);
        assert_eq!(s.map(|s| s.address), Some(v6("fd00:5::2")));
        net.ifconfig_ipv6 = None;
        let (s, notes) = tunnel_spec6(&p, &net);
        assert_eq!((s, notes.len()), (None, 1));
        // route-nopull and pull-filter take pushed IPv6 routes out.
        let mut p = pushed();
        p.routes_ipv6 = vec![warren_openvpn::PushedRouteIpv6 {
            network: v6("fd00:99::"),
            prefix: 64,
            gateway: None,
            metric: None,
        }];
        p.raw.push("route-ipv6 fd00:99::/64".into());
        let (f, _) = filter_pushed(&p, true, &[]).expect("filtered");
        assert!(f.routes_ipv6.is_empty());
        let ignore = [(PullAction::Ignore, "route-ipv6".to_owned())];
        let (f, notes) = filter_pushed(&p, false, &ignore).expect("filtered");
        assert!(f.routes_ipv6.is_empty() && notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn pause_follows_openvpn_connect_retry() {
        let r = RemoteSpec::new("192.0.2.1", 1194, RemoteFamily::Any, false);
        let s = |f, n| r.pause(f, n).as_secs();
        // One entry: 1 s for the first four failures, then doubling, capped at 300 s.
        assert_eq!(
            [1, 2, 3, 4, 5, 6, 7, 12, 13, 40, u32::MAX].map(|f| s(f, 1)),
            [1, 1, 1, 1, 2, 4, 8, 256, 300, 300, 300]
        );
        // Two entries: the backoff counts rounds over both.
        assert_eq!([9, 10, 11, 12].map(|f| s(f, 2)), [1, 2, 2, 4]);
        // `connect-retry 5 20`.
        let r = RemoteSpec {
            retry: Duration::from_secs(5),
            retry_max: Duration::from_secs(20),
            ..r
        };
        assert_eq!(
            [1, 5, 6, 7].map(|f| r.pause(f, 1).as_secs()),
            [5, 10, 20, 20]
        );
        // `connect-retry 0`: no pause until the backoff starts (then from 1 s).
        let r = RemoteSpec {
            retry: Duration::ZERO,
            ..r
        };
        assert_eq!([1, 4, 5].map(|f| r.pause(f, 1).as_secs()), [0, 0, 2]);
    }

    #[test]
    fn resolves_literals_by_family() {
        assert_eq!(
            resolve("127.0.0.1", 1194, RemoteFamily::Any).expect("ok"),
            "127.0.0.1:1194".parse::<SocketAddr>().expect("addr")
        );
        assert!(resolve("127.0.0.1", 1194, RemoteFamily::V6).is_err());
    }
}
