//! The server endpoint: many clients on one UDP socket.
//!
//! # Call order
//!
//! The server is the control side; data moves through [`DataPlane`](crate::DataPlane)
//! replicas (one per data thread, see [`crate::dataplane`]). The driver owns the UDP
//! socket and the tun device. It gives every data datagram ([`DataPlane::is_data`]) to a
//! plane's [`DataPlane::open`] and every other datagram to [`Server::handle_datagram`];
//! every packet read from the tun to [`DataPlane::seal`]. After any input to the engine,
//! and whenever [`Server::poll_timeout`] is reached (then [`Server::handle_timeout`]
//! first), it applies [`Server::poll_data_change`] to its planes, drains
//! [`Server::poll_transmit`] until `None` (and the data changes again), then
//! [`Server::poll_event`] until `None`, hands the planes' events to
//! [`Server::handle_data_event`], and re-arms its timer with [`Server::poll_timeout`].
//! `now` must never go backwards.
//!
//! # Admission
//!
//! A client's hard reset gets a stateless reply whose session id is a cookie (mudp.c); only
//! its next packet, which returns the cookie, creates a session. That proves the address,
//! not the client: anyone holding the tls-crypt or tls-auth key, or anyone at all without
//! one, gets this far and may then stall for the hand-window. So a new session is admitted
//! in this order:
//!
//! 1. `max_clients` clients connected: refused in silence, as OpenVPN refuses on UDP
//!    ([`OverloadKind::MaxClients`]).
//! 2. Its source (IPv4 address or IPv6 /64) holds [`HalfOpenLimits::per_source`] half-open
//!    sessions: refused ([`OverloadKind::HalfOpenPerSource`]).
//! 3. [`HalfOpenLimits::total`] half-open sessions exist: the oldest is evicted
//!    ([`OverloadKind::HalfOpenEvicted`]), so a flood cannot keep anyone out for long.
//!
//! A session stops being half-open when it connects (after key-method 2 and, with
//! `external_auth`, the driver's decision); if `max_clients` filled up meanwhile, it is
//! dropped then. An evicted session that awaited a decision ends with
//! [`ServerEvent::Disconnected`], so the driver drops the stale request. Every refusal and eviction is counted in
//! [`ServerCounters`] and reported as a rate-limited [`ServerEvent::Overload`].
//!
//! # tls-crypt-v2
//!
//! A tls-crypt-v2 client brings its own tls-crypt key, wrapped by the server key (WKc),
//! at the tail of its `P_CONTROL_HARD_RESET_CLIENT_V3` and, asked by the stateless reply
//! (early negotiation, RESEND_WKC), of the `P_CONTROL_WKC_V1` that returns the cookie
//! (ops sheet §7.3). The server unwraps WKc for each such packet and forgets it again;
//! only the session created by the cookie check keeps the key ([`crate::WrapConfig`]).
//! The admission above is the same for every wrapping.
//!
//! [`DataPlane::is_data`]: crate::DataPlane::is_data
//! [`DataPlane::open`]: crate::DataPlane::open
//! [`DataPlane::seal`]: crate::DataPlane::seal
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use warren_core::{Instant, KeyId, PeerId, Rng, SessionId};
use warren_crypto::{CipherKind, ControlWrap, CookieKey, Metadata, ReplayStamp, Role};
use warren_wire::{AckBlock, ControlPacket, Opcode};

use crate::access::AccessRules;
use crate::ctx::{Ctx, CtxParams, SessionEvent, TlsFactory};
use crate::dataplane::{DataChange, DataEvent, DataPlaneConfig, Published};
use crate::pool::{Held, Pool, Topology};
use crate::session::{ServerSide, Session, SessionError, Stage};
use crate::types::{
    DatagramOutcome, DisconnectReason, DropReason, HandshakeFailure, KeyDerivation, WrapConfig,
};

/// Everything the server engine needs; built by the CLI from `server.conf`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub tls: Arc<rustls::ServerConfig>,
    pub wrap: WrapConfig,
    /// `server NETWORK NETMASK`: the server takes `.1`, clients get `.2` upwards.
    pub network: Ipv4Addr,
    pub netmask: Ipv4Addr,
    /// `topology`: how the pool hands out addresses and what `ifconfig` is pushed.
    pub topology: Topology,
    /// IPv6 inside the tunnel (`server-ipv6`, or `ifconfig-ipv6` with a pool); `None`:
    /// IPv4 only.
    pub ipv6: Option<TunnelIpv6>,
    /// `block-ipv6`: IPv6 packets from clients are answered with ICMPv6 "no route" from
    /// this address (the `ifconfig-ipv6` remote, else `fe80::7`) instead of delivered.
    pub block_ipv6: Option<Ipv6Addr>,
    /// User `push "..."` options, in order, without quotes.
    pub push: Vec<String>,
    /// Server's own ping interval and ping-restart timeout (`keepalive a b` gives a and 2b).
    pub ping: Option<Duration>,
    pub ping_restart: Option<Duration>,
    /// Pushed `ping` / `ping-restart` (`keepalive a b` pushes a and b).
    pub push_ping: Option<u32>,
    pub push_ping_restart: Option<u32>,
    /// `data-ciphers`, in preference order.
    pub data_ciphers: Vec<CipherKind>,
    /// `data-ciphers-fallback` (or `cipher`): for clients that send no IV_CIPHERS.
    pub data_ciphers_fallback: Option<CipherKind>,
    /// `reneg-sec` (None = 0 = off).
    pub reneg: Option<Duration>,
    /// `hand-window` (60 s) and `tls-timeout` (2 s).
    pub hand_window: Duration,
    pub tls_timeout: Duration,
    pub client_to_client: bool,
    pub duplicate_cn: bool,
    /// `max-clients`: connected clients. A new session beyond it is refused as OpenVPN
    /// refuses it (see the module docs, "Admission").
    pub max_clients: usize,
    /// Bounds on sessions still in the handshake, apart from `max_clients`.
    pub half_open: HalfOpenLimits,
    /// `explicit-exit-notify`: tell clients RESTART on shutdown.
    pub explicit_exit_notify: bool,
    pub tun_mtu: u16,
    /// `mssfix`: clamp TCP MSS so encapsulated packets fit in this many bytes (UDP payload
    /// plus IP/UDP headers). None disables clamping.
    pub mssfix: Option<u16>,
    pub key_derivation: KeyDerivation,
    /// Ask the driver to authorise every new client ([`ServerEvent::AuthRequest`], answered
    /// with [`Server::authorize`]) before it gets an address: passwords, revocation lists,
    /// user records, fixed addresses. Without it, a valid certificate is enough.
    pub external_auth: bool,
    /// Unix time (seconds) at `Instant::ZERO`; used for wrap replay timestamps and cookies.
    pub unix_time_at_zero: u64,
}

/// IPv6 inside the tunnel, as warren-config's `ServerIpv6` resolves it (openvpn-ops.md §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelIpv6 {
    /// The server tun's address: pushed to every client as its remote (push.c).
    pub local: Ipv6Addr,
    /// The prefix length pushed with each client's address (`ifconfig-ipv6`'s bits).
    pub netbits: u8,
    /// The first client address and how many addresses the pool holds. A client's IPv6
    /// address is this base plus the index of its IPv4 address in the IPv4 pool (pool.c:
    /// one index for both families), so the smaller pool limits the clients. `None`: the
    /// server has an IPv6 address, clients get none.
    pub pool: Option<(Ipv6Addr, u32)>,
    /// Push `tun-ipv6` before the generated options, as `server-ipv6` does (helper.c).
    pub push_tun_ipv6: bool,
}

/// Bounds on half-open sessions: sessions that proved their address with the cookie but are
/// not connected yet (TLS handshake, key-method 2, authentication). Anyone holding the tls-crypt or tls-auth
/// key (every profile holder), or anyone at all without one, can open such a session and
/// stall it for the hand-window; these bounds keep that from filling `max-clients` or
/// memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalfOpenLimits {
    /// Half-open sessions from one source: one IPv4 address, or one IPv6 /64 (what a single
    /// host or site usually holds), whatever the ports. A new session beyond it is refused.
    /// (`warren-max-half-open-per-source`; warren-config holds the defaults.)
    pub per_source: usize,
    /// Half-open sessions in all. A new session beyond it evicts the oldest half-open one.
    /// (`warren-max-half-open`.)
    pub total: usize,
}

/// What a rate-limited [`ServerEvent::Overload`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverloadKind {
    /// A new client was refused because `max-clients` clients are connected. Nothing is
    /// sent to it, as OpenVPN sends nothing (it retries when its handshake times out).
    MaxClients,
    /// A new session was refused: its source holds the per-source number of half-open
    /// sessions already.
    HalfOpenPerSource,
    /// The oldest half-open session was dropped to admit a new one (the total half-open
    /// limit was reached).
    HalfOpenEvicted,
}

/// A password from key-method 2. Its `Debug` never shows it; the buffer is wiped on drop.
#[derive(Clone)]
pub struct Password(zeroize::Zeroizing<String>);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> zeroize::Zeroizing<String> {
        self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The driver's answer to [`ServerEvent::AuthRequest`].
#[derive(Debug, Clone)]
pub enum AuthDecision {
    Accept(AuthGrant),
    /// Sends `AUTH_FAILED` (with `reason` when given, as OpenVPN's `client-deny` does) and
    /// ends the session.
    Reject {
        reason: Option<String>,
    },
}

/// Which sessions [`Server::kick`] ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KickTarget {
    /// Every session with this identity (the certificate's common name, or the identity
    /// [`AuthGrant::identity`] gave it).
    Identity(String),
    /// The sessions whose client certificate has this serial number (big-endian; leading
    /// zero bytes are ignored).
    CertSerial(Vec<u8>),
    /// The session of this peer id (the management interface's `client-kill`).
    Peer(PeerId),
}

/// What an accepted client gets beyond the server's defaults.
#[derive(Debug, Clone, Default)]
pub struct AuthGrant {
    /// Replaces the identity (common name) used for logs, status and duplicate-cn.
    pub identity: Option<String>,
    /// The client's address, from an authenticator that owns the pool (see
    /// [`crate::pool`]): a pool address nobody holds, or the client is refused as when the
    /// pool is exhausted. `None`: the lowest free address.
    pub fixed_ip: Option<Ipv4Addr>,
    /// Extra options pushed to this client (e.g. `route 10.1.0.0 255.255.0.0`), after the
    /// server's own (a client-config-dir's `push` lines, a user's pushes).
    pub push: Vec<String>,
    /// `push-reset`: the server config's `push` lines are not sent to this client (the
    /// options the server generates, `route-gateway`, `topology`, `ping`, stay).
    pub push_reset: bool,
    /// `ifconfig-ipv6-push ADDR/BITS`: this client's IPv6 address and the bits pushed with
    /// it, instead of the IPv6 pool's (only when the tunnel carries IPv6).
    pub fixed_ip6: Option<(Ipv6Addr, u8)>,
    /// The client's networks (`iroute`, `iroute-ipv6`, a user's subnets): packets for them
    /// go to this client and it may send from them. A server `push "route ..."` (or
    /// `route-ipv6`) for exactly one of them is not pushed to this client (openvpn-ops.md
    /// §6.4), so a site does not route its own network into the tunnel.
    pub iroutes: Vec<crate::dataplane::Iroute>,
    /// The identity's access rules ([`crate::access`]); `None`: the rules
    /// [`Server::set_static_access`] gives the identity, if any, else everything allowed.
    pub access: Option<Arc<AccessRules>>,
}

/// Whether `opt` is `route NET [MASK]` or `route-ipv6 P/B` (no gateway) naming exactly one
/// of `iroutes` (OpenVPN multi.c `remove_iroutes_from_push_route_list`).
fn pushes_own_iroute(opt: &str, iroutes: &[crate::dataplane::Iroute]) -> bool {
    use crate::dataplane::Iroute;
    if iroutes.is_empty() {
        return false;
    }
    let t: Vec<&str> = opt.split_ascii_whitespace().collect();
    let net = match t.as_slice() {
        ["route", net] | ["route", net, "255.255.255.255"] => {
            net.parse::<Ipv4Addr>().ok().and_then(|n| {
                Iroute::v4(n, 32).filter(|r| {
                    *r == Iroute::V4 {
                        network: n,
                        len: 32,
                    }
                })
            })
        }
        ["route", net, mask] => match (net.parse::<Ipv4Addr>(), mask.parse::<Ipv4Addr>()) {
            (Ok(n), Ok(m)) => {
                let len = u32::from(m).leading_ones() as u8;
                (u32::from(m).checked_shl(u32::from(len)).unwrap_or(0) == 0)
                    .then(|| Iroute::v4(n, len))
                    .flatten()
                    .filter(|r| *r == Iroute::V4 { network: n, len })
            }
            _ => None,
        },
        ["route-ipv6", p] => p.split_once('/').and_then(|(a, b)| {
            let (a, len) = (a.parse::<Ipv6Addr>().ok()?, b.parse::<u8>().ok()?);
            Iroute::v6(a, len).filter(|r| *r == Iroute::V6 { network: a, len })
        }),
        _ => None,
    };
    net.is_some_and(|n| iroutes.contains(&n))
}

#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServerEvent {
    /// With `external_auth`: decide with [`Server::authorize`] within the hand-window.
    AuthRequest {
        peer_id: PeerId,
        addr: SocketAddr,
        /// The certificate's common name, or the username when there is no certificate.
        common_name: String,
        /// The client's verified leaf certificate (DER), if it presented one: check its
        /// serial against revocations.
        certificate: Option<rustls::pki_types::CertificateDer<'static>>,
        username: Option<String>,
        password: Option<Password>,
    },
    /// [`Server::authorize`] refused a client (`AUTH_FAILED` was sent).
    AuthRejected {
        peer_id: PeerId,
        addr: SocketAddr,
    },
    Connected {
        peer_id: PeerId,
        common_name: String,
        addr: SocketAddr,
        vpn_ip: Ipv4Addr,
        /// The client's IPv6 tunnel address, when the tunnel carries IPv6.
        vpn_ip6: Option<Ipv6Addr>,
        cipher: CipherKind,
        ekm: bool,
        /// From the session's creation (the client's first packet after the address check)
        /// to this event: TLS, key exchange and authentication.
        handshake: Duration,
    },
    Renegotiated {
        peer_id: PeerId,
        key_id: u8,
    },
    Disconnected {
        peer_id: PeerId,
        common_name: String,
        addr: SocketAddr,
        reason: DisconnectReason,
        /// Link bytes from and to this client over the session's life (status counters).
        bytes_received: u64,
        bytes_sent: u64,
    },
    HandshakeFailed {
        addr: SocketAddr,
        reason: String,
        /// What kind of failure `reason` describes.
        kind: HandshakeFailure,
    },
    /// New sessions were refused, or half-open ones evicted, to protect the server. An
    /// attacker controls how often this happens, so it is rate-limited: at most one per
    /// kind per [`Server::OVERLOAD_REPORT_INTERVAL`], `suppressed` counting the same events
    /// since the previous report. [`ServerCounters`] counts every one.
    Overload {
        kind: OverloadKind,
        /// The source of the latest such event.
        addr: SocketAddr,
        /// The limit that was reached.
        limit: usize,
        suppressed: u64,
    },
    /// The session of a TCP peer ended (for any reason but [`Server::stream_closed`]):
    /// close its connection once what is queued for it has been written.
    StreamEnded {
        addr: SocketAddr,
    },
}

/// One connected client, for `status` files.
#[derive(Debug, Clone)]
pub struct ClientStatus {
    pub peer_id: PeerId,
    pub common_name: String,
    pub real_addr: SocketAddr,
    pub vpn_ip: Option<Ipv4Addr>,
    pub vpn_ip6: Option<Ipv6Addr>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub connected_since: Instant,
    /// When the last authenticated packet arrived from this client.
    pub last_activity: Instant,
    pub username: Option<String>,
    pub cipher: Option<CipherKind>,
}

/// Drop and event counters.
#[derive(Debug, Clone, Default)]
pub struct ServerCounters {
    pub dropped: std::collections::HashMap<DropReason, u64>,
    pub handshakes: u64,
    /// New clients refused because `max-clients` were connected.
    pub max_clients_refused: u64,
    /// New sessions refused by the per-source half-open limit.
    pub half_open_refused: u64,
    /// Half-open sessions evicted by the total half-open limit.
    pub half_open_evicted: u64,
}

/// One rate-limited report: when the next may go out, and how many were held back.
#[derive(Debug, Default)]
struct ReportLimiter {
    next: Option<Instant>,
    suppressed: u64,
}

impl ReportLimiter {
    /// Whether to report now; if so, how many were held back since the last report.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|t| now < t) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + Server::OVERLOAD_REPORT_INTERVAL);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Where a half-open session comes from, for the per-source limit: an IPv4 address, or
/// the /64 of an IPv6 address (a single host or LAN usually has a whole /64, so counting
/// single IPv6 addresses would let one host open sessions without bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
}

impl Source {
    fn of(addr: &SocketAddr) -> Source {
        match addr.ip() {
            std::net::IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// The half-open sessions: per slot its source and generation (`None` once admitted or
/// removed), counts per source, and the creation order for eviction (entries of sessions
/// that left the half-open state are skipped, and compacted away when they pile up).
#[derive(Debug, Default)]
struct HalfOpen {
    by_slot: Vec<Option<(Source, u64)>>,
    per_source: HashMap<Source, usize>,
    order: VecDeque<(usize, u64)>,
    count: usize,
}

impl HalfOpen {
    fn insert(&mut self, slot: usize, generation: u64, source: Source) {
        if self.by_slot.len() <= slot {
            self.by_slot.resize(slot + 1, None);
        }
        debug_assert!(
            self.by_slot[slot].is_none(),
            "slot {slot} reused while half-open"
        );
        self.by_slot[slot] = Some((source, generation));
        *self.per_source.entry(source).or_insert(0) += 1;
        self.order.push_back((slot, generation));
        self.count += 1;
        // Stale entries stay until they reach the front; keep the queue within about twice
        // the live count so long-lived half-open sessions cannot make it grow without bound.
        if self.order.len() > 2 * self.count + 64 {
            let by_slot = &self.by_slot;
            self.order
                .retain(|&(s, g)| by_slot[s].is_some_and(|(_, live)| live == g));
        }
    }

    /// The session in `slot` is no longer half-open (admitted or removed).
    fn remove(&mut self, slot: usize) {
        let Some((source, _)) = self.by_slot.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
        self.count -= 1;
    }

    fn is_half_open(&self, slot: usize) -> bool {
        self.by_slot.get(slot).is_some_and(Option::is_some)
    }

    fn count_from(&self, source: Source) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }

    /// The slot of the oldest session that is still half-open, taken off the queue.
    fn pop_oldest(&mut self) -> Option<usize> {
        while let Some((slot, generation)) = self.order.pop_front() {
            if self
                .by_slot
                .get(slot)
                .is_some_and(|e| e.is_some_and(|(_, g)| g == generation))
            {
                return Some(slot);
            }
        }
        None
    }
}

/// Upper bound on queued stateless replies (cookie resets); beyond it resets are dropped.
const MAX_STATELESS_QUEUE: usize = 1024;

/// The early-negotiation TLV a stateless reset carries for a tls-crypt-v2 client:
/// flags = RESEND_WKC (fact sheet §3.3, ssl_pkt.c tls_reset_standalone).
const RESEND_WKC_TLV: [u8; 6] = [0x00, 0x01, 0x00, 0x02, 0x00, 0x01];

/// A control packet that passed its wrap, with what the server learnt on the way.
struct Authenticated {
    opcode: Opcode,
    key_id: KeyId,
    sid: SessionId,
    stamp: Option<ReplayStamp>,
    /// The session it belongs to (same address, same session id).
    slot: Option<usize>,
    /// The wrap that authenticated it: a new session keeps it.
    wrap: Arc<ControlWrap>,
    /// A tls-crypt-v2 client's key metadata, when its wrapped key was unwrapped.
    client_key: Option<Metadata>,
}

/// The server engine. See the module docs for the call order.
pub struct Server {
    ctx: Ctx,
    config: ServerConfig,
    events: VecDeque<ServerEvent>,
    counters: ServerCounters,
    /// Index = peer id.
    sessions: Vec<Option<Session<ServerSide>>>,
    generations: Vec<u64>,
    live: usize,
    by_addr: HashMap<SocketAddr, usize>,
    /// Peers on TCP connections (see [`Server::stream_opened`]).
    streams: HashSet<SocketAddr>,
    /// Who holds which pool address.
    pool: Held,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    dirty: VecDeque<usize>,
    dirty_flag: Vec<bool>,
    stateless_out: VecDeque<(SocketAddr, Vec<u8>)>,
    cookie: CookieKey,
    body: Vec<u8>,
    server_ip: Ipv4Addr,
    mss: Option<u16>,
    /// Set by [`Server::shutdown`]: no new sessions from then on.
    shutting_down: bool,
    /// Admission: half-open sessions and the rate limiters of overload reports
    /// (max-clients, per-source refusals, evictions).
    half_open: HalfOpen,
    reports: [ReportLimiter; 3],
    /// Data-state changes not yet taken by the driver, and what was last published per
    /// slot.
    data_changes: VecDeque<DataChange>,
    published: Vec<Option<Published>>,
    /// `warren-access` rules by identity ([`Server::set_static_access`]).
    static_access: HashMap<String, Arc<AccessRules>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("clients", &self.live)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// How often each kind of [`ServerEvent::Overload`] is reported at most.
    pub const OVERLOAD_REPORT_INTERVAL: Duration = Duration::from_secs(10);

    pub fn new(config: ServerConfig, mut rng: Box<dyn Rng + Send>) -> Self {
        let cookie = CookieKey::new(rng.as_mut());
        let network = u32::from(config.network) & u32::from(config.netmask);
        let server_ip = Ipv4Addr::from(network + 1);
        let mss = config
            .mssfix
            .map(|m| m.saturating_sub(28 + DATA_OVERHEAD as u16 + 40));
        let occ = format!(
            "V4,dev-type tun,link-mtu {},tun-mtu {},proto UDPv4,auth [null-digest],keysize 0,key-method 2,tls-server",
            config.tun_mtu as usize + DATA_OVERHEAD + 1,
            config.tun_mtu
        );
        let ctx = Ctx::new(
            CtxParams {
                role: Role::Server,
                tls: TlsFactory::Server(config.tls.clone()),
                tls_timeout: config.tls_timeout,
                hand_window: config.hand_window,
                ping: config.ping,
                ping_restart: config.ping_restart,
                reneg: config.reneg,
                key_derivation: config.key_derivation,
                data_ciphers: config.data_ciphers.clone(),
                data_ciphers_fallback: config.data_ciphers_fallback,
                unix_time_at_zero: config.unix_time_at_zero,
                occ,
            },
            &config.wrap,
            rng,
        );
        let max = config.max_clients.max(1);
        let pool = Held::new(Pool::with_topology(
            config.network,
            config.netmask,
            config.topology,
        ));
        Server {
            ctx,
            config,
            events: VecDeque::new(),
            counters: ServerCounters::default(),
            sessions: Vec::new(),
            generations: Vec::new(),
            live: 0,
            by_addr: HashMap::new(),
            streams: HashSet::new(),
            pool,
            timers: BinaryHeap::new(),
            dirty: VecDeque::new(),
            dirty_flag: Vec::with_capacity(max),
            stateless_out: VecDeque::new(),
            cookie,
            body: Vec::with_capacity(2048),
            server_ip,
            mss,
            shutting_down: false,
            half_open: HalfOpen::default(),
            reports: Default::default(),
            data_changes: VecDeque::new(),
            published: Vec::new(),
            static_access: HashMap::new(),
        }
    }

    /// The server's own tun address (`.1` of the pool).
    pub fn tun_address(&self) -> Ipv4Addr {
        self.server_ip
    }

    /// Number of sessions (connected or handshaking).
    pub fn session_count(&self) -> usize {
        self.live
    }

    /// Number of half-open sessions (not connected yet: handshake or authentication).
    pub fn half_open_count(&self) -> usize {
        self.half_open.count
    }

    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> DatagramOutcome {
        let Some(&first) = buf.first() else {
            return self.drop(DropReason::Malformed);
        };
        let (raw, _) = warren_wire::split_op_byte(first);
        match Opcode::from_u8(raw) {
            // The data plane's (DataPlane::open), which the driver gives them to.
            Some(Opcode::DataV2) | Some(Opcode::DataV1) => self.drop(DropReason::NoSession),
            Some(op) if op.is_control() => self.handle_control(now, from, buf),
            _ => self.drop(DropReason::UnknownOpcode),
        }
    }

    fn drop(&mut self, reason: DropReason) -> DatagramOutcome {
        self.ctx.count(reason);
        DatagramOutcome::Dropped(reason)
    }

    fn handle_control(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> DatagramOutcome {
        let Ok((opcode, key_id, sid)) = warren_wire::parse_control_head(buf) else {
            return self.drop(DropReason::Malformed);
        };
        // The session the packet belongs to, if any: its key authenticates the packet.
        let slot = self.by_addr.get(&from).copied().filter(|&slot| {
            self.sessions[slot]
                .as_ref()
                .is_some_and(|s| s.remote_sid == Some(sid))
        });
        let session_wrap = slot
            .and_then(|slot| self.sessions[slot].as_ref())
            .map(|s| s.wrap.clone());
        let mut client_key = None;
        let (packet, wrap) = if matches!(
            opcode,
            Opcode::ControlHardResetClientV3 | Opcode::ControlWkcV1
        ) {
            // tls-crypt-v2 (ops sheet §7.3): the client's wrapped key rides at the tail.
            let Some(v2) = &self.ctx.tls_crypt_v2 else {
                return self.drop(DropReason::Unsupported);
            };
            let Ok((packet, wkc)) = warren_crypto::split_wkc(buf) else {
                return self.drop(DropReason::BadClientKey);
            };
            match session_wrap {
                // A session has its key already: WKc (of a retransmitted WKC_V1) is ignored
                // (tls_crypt.c "control channel security already setup").
                Some(w) => (packet, w),
                // Stateless: unwrapped for this packet only, kept once a session exists.
                None => match v2.server.unwrap_client_key(wkc) {
                    Ok((kc, metadata)) => {
                        client_key = Some(metadata);
                        (packet, Arc::new(ControlWrap::tls_crypt(&kc, Role::Server)))
                    }
                    Err(_) => return self.drop(DropReason::BadClientKey),
                },
            }
        } else {
            match session_wrap.or_else(|| self.ctx.wrap.clone()) {
                Some(w) => (&buf[..], w),
                // Only tls-crypt-v2 is configured: OpenVPN requires some wrapping beside it.
                None => return self.drop(DropReason::Unsupported),
            }
        };
        // Authenticate before anything else; no state is touched for unauthenticated input.
        let stamp = match wrap.unwrap(packet, &mut self.body) {
            Ok(s) => s,
            Err(_) => return self.drop(DropReason::WrapAuthFailed),
        };
        let mut head = [0u8; 9];
        head.copy_from_slice(&packet[..9]);
        let body = std::mem::take(&mut self.body);
        let outcome = match ControlPacket::parse(&head, &body) {
            Ok(mut pkt) => {
                // Without its key, a WKC_V1 is a CONTROL_V1 (tls_crypt.c).
                if pkt.opcode == Opcode::ControlWkcV1 {
                    pkt.opcode = Opcode::ControlV1;
                }
                let auth = Authenticated {
                    opcode,
                    key_id,
                    sid,
                    stamp,
                    slot,
                    wrap,
                    client_key,
                };
                self.dispatch_control(now, from, auth, &pkt)
            }
            Err(_) => self.drop(DropReason::Malformed),
        };
        self.body = body;
        outcome
    }

    fn dispatch_control(
        &mut self,
        now: Instant,
        from: SocketAddr,
        auth: Authenticated,
        pkt: &ControlPacket<'_>,
    ) -> DatagramOutcome {
        if auth.sid.is_zero() {
            return self.drop(DropReason::Malformed);
        }
        if let Some(slot) = auth.slot {
            if let Some(s) = self.sessions[slot].as_mut() {
                s.on_control(&mut self.ctx, now, auth.stamp, pkt);
            }
            self.after_session_input(now, slot);
            return DatagramOutcome::Consumed;
        }
        // A different session id from a known address: the client restarted. It goes
        // through the cookie exchange like a new client; the old session is replaced only
        // once the new one proves its address.
        if self.streams.contains(&from) {
            return self.stream_reset(now, from, auth, pkt);
        }
        let key_zero = auth.key_id == KeyId::ZERO;
        match auth.opcode {
            _ if self.shutting_down => self.drop(DropReason::Overloaded),
            Opcode::ControlHardResetClientV2 if key_zero => {
                if pkt.msg_id != Some(0) {
                    return self.drop(DropReason::Malformed);
                }
                self.send_cookie_reset(now, from, auth.sid, &auth.wrap, false);
                DatagramOutcome::Consumed
            }
            Opcode::ControlHardResetClientV3 if key_zero => {
                if pkt.msg_id != Some(0) {
                    return self.drop(DropReason::Malformed);
                }
                // mudp.c do_pre_decrypt_check: a client that starts its wrap packet ids at
                // EARLY_NEG_START sends its key again with the cookie, so the reply keeps
                // no state either; it asks for the key with the RESEND_WKC flag.
                let early_neg = auth.stamp.is_some_and(|st| {
                    st.id & warren_wire::EARLY_NEG_MASK == warren_wire::EARLY_NEG_START
                });
                if early_neg {
                    self.send_cookie_reset(now, from, auth.sid, &auth.wrap, true);
                    return DatagramOutcome::Consumed;
                }
                if self
                    .ctx
                    .tls_crypt_v2
                    .as_ref()
                    .is_some_and(|v2| v2.force_cookie)
                {
                    return self.drop(DropReason::Unsupported);
                }
                // allow-noncookie: an older client cannot send its key again, so its reset
                // creates the session at once, as on TCP.
                self.session_from_reset(now, from, auth, pkt)
            }
            Opcode::ControlV1 | Opcode::AckV1 | Opcode::ControlWkcV1 if key_zero => {
                let Some(cookie) = self.check_cookie(now, from, auth.sid, pkt) else {
                    return self.drop(DropReason::BadCookie);
                };
                if let Err(reason) = self.check_client_key(now, auth.client_key.as_ref()) {
                    return self.drop(reason);
                }
                if let Some(&old) = self.by_addr.get(&from) {
                    self.remove_session(old, DisconnectReason::Replaced);
                }
                if let Err(reason) = self.admit(now, from) {
                    return self.drop(reason);
                }
                let Some(slot) = self.create_session(
                    now,
                    from,
                    Some(cookie),
                    auth.sid,
                    auth.wrap,
                    auth.client_key,
                ) else {
                    return self.drop(DropReason::TooManyClients);
                };
                if let Some(s) = self.sessions[slot].as_mut() {
                    s.on_control(&mut self.ctx, now, auth.stamp, pkt);
                }
                self.after_session_input(now, slot);
                DatagramOutcome::Consumed
            }
            _ => self.drop(DropReason::NoSession),
        }
    }

    /// A control packet from a TCP peer without a session (fact sheet §9, OpenVPN
    /// mtcp.c): no cookie; the client's hard reset (V2, or V3 with its tls-crypt-v2 key)
    /// creates the session at once, anything else is dropped. One connection carries one
    /// session: a second reset with another session id while one lives is dropped (a
    /// restarting stock client reconnects).
    fn stream_reset(
        &mut self,
        now: Instant,
        from: SocketAddr,
        auth: Authenticated,
        pkt: &ControlPacket<'_>,
    ) -> DatagramOutcome {
        if self.shutting_down {
            return self.drop(DropReason::Overloaded);
        }
        if !matches!(
            auth.opcode,
            Opcode::ControlHardResetClientV2 | Opcode::ControlHardResetClientV3
        ) || auth.key_id != KeyId::ZERO
            || self.by_addr.contains_key(&from)
        {
            return self.drop(DropReason::NoSession);
        }
        self.session_from_reset(now, from, auth, pkt)
    }

    /// A session created by the client's hard reset itself, without the cookie exchange
    /// (TCP; tls-crypt-v2 clients without early negotiation).
    fn session_from_reset(
        &mut self,
        now: Instant,
        from: SocketAddr,
        auth: Authenticated,
        pkt: &ControlPacket<'_>,
    ) -> DatagramOutcome {
        if pkt.msg_id != Some(0) {
            return self.drop(DropReason::Malformed);
        }
        if let Err(reason) = self.check_client_key(now, auth.client_key.as_ref()) {
            return self.drop(reason);
        }
        // A UDP client that restarted (TCP connections hold one session each).
        if let Some(&old) = self.by_addr.get(&from) {
            self.remove_session(old, DisconnectReason::Replaced);
        }
        // The same admission as the cookie path: max-clients, then the half-open bounds.
        if let Err(reason) = self.admit(now, from) {
            return self.drop(reason);
        }
        let Some(slot) = self.create_session(now, from, None, auth.sid, auth.wrap, auth.client_key)
        else {
            return self.drop(DropReason::TooManyClients);
        };
        if let Some(s) = self.sessions[slot].as_mut() {
            // The reset again, through the session: its wrap packet-id starts the replay
            // window (the msg-id is a duplicate by now, only acknowledged).
            s.on_control(&mut self.ctx, now, auth.stamp, pkt);
        }
        self.after_session_input(now, slot);
        DatagramOutcome::Consumed
    }

    /// tls-crypt-v2 key policy, checked when a session is created (OpenVPN runs it with
    /// the verify script there, not in the stateless reply): `tls-crypt-v2-max-age`.
    fn check_client_key(&self, now: Instant, key: Option<&Metadata>) -> Result<(), DropReason> {
        let (Some(v2), Some(key)) = (&self.ctx.tls_crypt_v2, key) else {
            return Ok(());
        };
        if let Some(days) = v2.max_age_days {
            // OpenVPN 2.7 tls_crypt_v2_check_client_key_age: no timestamp, or older than
            // the limit, is refused; a timestamp in the future is not.
            let unix_now = self.config.unix_time_at_zero + now.as_secs();
            let fresh = key
                .timestamp()
                .is_some_and(|t| unix_now.saturating_sub(t) <= u64::from(days) * 86_400);
            if !fresh {
                return Err(DropReason::ClientKeyRefused);
            }
        }
        Ok(())
    }

    /// The driver accepted a TCP connection from `addr`: control packets from there create
    /// sessions without the cookie exchange, and its session never floats. Returns `false`
    /// (refuse the connection) when a UDP session already lives at the same address.
    pub fn stream_opened(&mut self, addr: SocketAddr) -> bool {
        if self.by_addr.contains_key(&addr) && !self.streams.contains(&addr) {
            return false;
        }
        self.streams.insert(addr);
        true
    }

    /// The TCP connection from `addr` ended: its session (if any) ends with it.
    pub fn stream_closed(&mut self, _now: Instant, addr: SocketAddr) {
        if !self.streams.remove(&addr) {
            return;
        }
        if let Some(&slot) = self.by_addr.get(&addr) {
            self.remove_session(slot, DisconnectReason::ConnectionClosed);
        }
    }

    /// Whether `addr` is a TCP peer's.
    pub fn is_stream(&self, addr: &SocketAddr) -> bool {
        self.streams.contains(addr)
    }

    fn time_slot(&self, now: Instant) -> u32 {
        // mudp.c / ssl_pkt.c: slots of (hand-window + 1) / 2 seconds.
        let width = self.config.hand_window.as_secs().div_ceil(2);
        self.ctx.unix_now(now) / (width.max(1) as u32)
    }

    /// The stateless reply to a client's hard reset (mudp.c:42): our session id is the cookie.
    /// `wrap` is the client's (a tls-crypt-v2 client's own key); `resend_wkc` asks a
    /// tls-crypt-v2 client for its wrapped key again (ssl_pkt.c tls_reset_standalone).
    fn send_cookie_reset(
        &mut self,
        now: Instant,
        to: SocketAddr,
        client_sid: SessionId,
        wrap: &ControlWrap,
        resend_wkc: bool,
    ) {
        if self.stateless_out.len() >= MAX_STATELESS_QUEUE {
            self.ctx.count(DropReason::Overloaded);
            return;
        }
        let cookie = self.cookie.compute(self.time_slot(now), &to, &client_sid);
        let pkt = ControlPacket {
            opcode: Opcode::ControlHardResetServerV2,
            key_id: KeyId::ZERO,
            session_id: cookie,
            acks: AckBlock {
                ids: vec![0],
                remote_session: Some(client_sid),
            },
            msg_id: Some(0),
            payload: if resend_wkc { &RESEND_WKC_TLV } else { &[] },
        };
        let mut body = Vec::with_capacity(32);
        pkt.write_body(&mut body);
        let mut out = Vec::with_capacity(128);
        let stamp = ReplayStamp {
            id: 1,
            time: self.ctx.unix_now(now),
        };
        wrap.wrap(&pkt.head(), stamp, &body, &mut out);
        self.stateless_out.push_back((to, out));
    }

    /// ssl_pkt.c check_session_hmac_and_pkt_id (2.6 with the CVE-2025-13086 fix): the
    /// packet must ACK our reset with a cookie from the current or two previous slots, ack
    /// only ids <= 1, and carry msg-id <= 1.
    fn check_cookie(
        &self,
        now: Instant,
        from: SocketAddr,
        sid: SessionId,
        pkt: &ControlPacket<'_>,
    ) -> Option<SessionId> {
        let claimed = pkt.acks.remote_session?;
        if pkt.acks.ids.is_empty()
            || pkt.acks.ids.iter().any(|&id| id > 1)
            || pkt.msg_id.is_some_and(|m| m > 1)
        {
            return None;
        }
        let slot = self.time_slot(now);
        (0..3u32)
            .filter_map(|back| slot.checked_sub(back))
            .map(|s| self.cookie.compute(s, &from, &sid))
            .find(|c| *c == claimed)
    }

    /// Sessions that are no longer half-open: connected clients (and ones closing after
    /// that). `max-clients` bounds these.
    fn admitted(&self) -> usize {
        self.live - self.half_open.count
    }

    /// Whether a session that just proved its address may be created (mudp.c
    /// handle_connection_attempt, multi.c multi_create_instance): `max-clients`, then the
    /// half-open limits, which evict the oldest half-open session when the total is reached.
    fn admit(&mut self, now: Instant, from: SocketAddr) -> Result<(), DropReason> {
        if self.admitted() >= self.config.max_clients {
            // multi.c multi_create_instance: OpenVPN logs "MULTI: new incoming connection
            // would exceed maximum number of clients (%d)" and closes the new instance. On
            // UDP nothing goes to the client (it got the stateless cookie reset, and then
            // silence): it retransmits and, without an answer, restarts when its
            // hand-window ends. We do the same: a silent drop.
            self.counters.max_clients_refused += 1;
            self.report(now, OverloadKind::MaxClients, from, self.config.max_clients);
            return Err(DropReason::TooManyClients);
        }
        let total = self.config.half_open.total.max(1);
        let per_source = self.config.half_open.per_source.clamp(1, total);
        if self.half_open.count_from(Source::of(&from)) >= per_source {
            // Refuse rather than evict: evicting would let one source churn through the
            // sessions of everyone else. The refused client retransmits (tls-timeout) and
            // gets in once one of its source's handshakes ends.
            self.counters.half_open_refused += 1;
            self.report(now, OverloadKind::HalfOpenPerSource, from, per_source);
            return Err(DropReason::TooManyHandshakes);
        }
        while self.half_open.count >= total {
            let Some(victim) = self.half_open.pop_oldest() else {
                break;
            };
            let addr = self.sessions[victim].as_ref().map_or(from, |s| s.addr);
            self.remove_session(victim, DisconnectReason::Overloaded);
            self.counters.half_open_evicted += 1;
            self.report(now, OverloadKind::HalfOpenEvicted, addr, total);
        }
        Ok(())
    }

    /// A rate-limited [`ServerEvent::Overload`].
    fn report(&mut self, now: Instant, kind: OverloadKind, addr: SocketAddr, limit: usize) {
        let limiter = &mut self.reports[kind as usize];
        if let Some(suppressed) = limiter.allow(now) {
            self.events.push_back(ServerEvent::Overload {
                kind,
                addr,
                limit,
                suppressed,
            });
        }
    }

    fn create_session(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        cookie: Option<SessionId>,
        client_sid: SessionId,
        wrap: Arc<ControlWrap>,
        client_key: Option<Metadata>,
    ) -> Option<usize> {
        let tls = match rustls::ServerConnection::new(self.config.tls.clone()) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("cannot create a TLS session: {e}");
                return None;
            }
        };
        let slot = match self.sessions.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                // Peer ids are 24 bit; the last one means "none".
                if self.sessions.len() >= PeerId::UNDEFINED_WIRE as usize {
                    return None;
                }
                self.sessions.push(None);
                self.generations.push(0);
                self.dirty_flag.push(false);
                self.sessions.len() - 1
            }
        };
        self.generations[slot] += 1;
        let tls = rustls::Connection::Server(tls);
        let peer_id = PeerId::new(slot as u32).expect("slots stay below the undefined peer id");
        let generation = self.generations[slot];
        let session = match cookie {
            Some(cookie) => Session::server_from_cookie(
                &mut self.ctx,
                now,
                peer_id,
                generation,
                addr,
                cookie,
                client_sid,
                tls,
                wrap,
            ),
            None => Session::server_stateful(
                &mut self.ctx,
                now,
                peer_id,
                generation,
                addr,
                client_sid,
                tls,
                wrap,
            ),
        };
        if let Some(key) = &client_key {
            // What `tls-crypt-v2-verify` scripts would see (not supported yet).
            tracing::debug!(peer_id = peer_id.get(), %addr, "tls-crypt-v2 client key: {key}");
        }
        self.sessions[slot] = Some(session);
        self.by_addr.insert(addr, slot);
        self.half_open
            .insert(slot, self.generations[slot], Source::of(&addr));
        self.live += 1;
        self.counters.handshakes += 1;
        Some(slot)
    }

    /// After a session handled input: connect it if key-method 2 finished, remove it if it
    /// died, queue it for transmission and re-arm its timer.
    fn after_session_input(&mut self, now: Instant, slot: usize) {
        if self.sessions[slot]
            .as_ref()
            .is_some_and(|s| s.state.is(Stage::PendingConnect))
        {
            if self.config.external_auth {
                self.request_auth(slot);
            } else {
                self.finish_connect(now, slot, AuthGrant::default());
            }
        }
        if let Some(end) = self.sessions[slot]
            .as_ref()
            .and_then(|s| s.state.end().cloned())
        {
            self.remove_session(slot, end);
            return;
        }
        self.refresh_data(slot);
        self.mark_dirty(slot);
        self.schedule(slot);
    }

    /// Publishes the session's data state if it changed.
    fn refresh_data(&mut self, slot: usize) {
        let Some(s) = self.sessions.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let mut data = s.peer_data();
        data.stream = self.streams.contains(&data.addr);
        let summary = Published::of(&data);
        if self.published.len() <= slot {
            self.published.resize(slot + 1, None);
        }
        if self.published[slot].as_ref() != Some(&summary) {
            self.published[slot] = Some(summary);
            self.data_changes.push_back(DataChange::Update(data));
        }
    }

    /// The rules the data planes apply (see [`crate::dataplane`]). The engine publishes
    /// every session's data-channel state as [`DataChange`]s: drain
    /// [`Server::poll_data_change`] into every [`DataPlane`](crate::DataPlane) after every
    /// call that takes input, before any datagram that may depend on it is opened and
    /// before sending what [`Server::poll_transmit`] gives.
    pub fn data_plane_config(&self) -> DataPlaneConfig {
        DataPlaneConfig {
            client_to_client: self.config.client_to_client,
            mss: self.mss,
            block_ipv6: self
                .config
                .block_ipv6
                .map(|from| crate::dataplane::BlockIpv6 {
                    from,
                    tun_mtu: self.config.tun_mtu,
                }),
        }
    }

    /// The next change of the published data state, in order.
    pub fn poll_data_change(&mut self) -> Option<DataChange> {
        self.data_changes.pop_front()
    }

    /// What a data worker reported. Stale events (an earlier session of the same peer id)
    /// are ignored.
    pub fn handle_data_event(&mut self, now: Instant, event: DataEvent) {
        let (peer_id, generation) = match &event {
            DataEvent::Float {
                peer_id,
                generation,
                ..
            }
            | DataEvent::ExitNotify {
                peer_id,
                generation,
            }
            | DataEvent::KeyExhausted {
                peer_id,
                generation,
            } => (peer_id.get() as usize, *generation),
        };
        if self
            .sessions
            .get(peer_id)
            .and_then(Option::as_ref)
            .is_none_or(|s| s.side.generation != generation)
        {
            return;
        }
        match event {
            DataEvent::Float { addr, .. } => {
                self.float(peer_id, addr);
                self.refresh_data(peer_id);
            }
            DataEvent::ExitNotify { .. } => {
                self.remove_session(peer_id, DisconnectReason::ExitNotify)
            }
            DataEvent::KeyExhausted { .. } => {
                if let Some(s) = self.sessions[peer_id].as_mut() {
                    s.force_renegotiation(now);
                }
                self.schedule(peer_id);
            }
        }
    }

    /// Float (mudp.c:188): an authenticated packet with a valid peer-id from a new address
    /// moves the session there, unless another session owns that address. Returns whether
    /// the session now lives at `from`.
    fn float(&mut self, slot: usize, from: SocketAddr) -> bool {
        let Some(s) = self.sessions[slot].as_mut() else {
            return false;
        };
        if s.addr == from {
            return true;
        }
        // A TCP session is its connection; nothing floats onto or off one.
        if self.by_addr.contains_key(&from)
            || self.streams.contains(&from)
            || self.streams.contains(&s.addr)
        {
            return false;
        }
        tracing::info!(peer_id = %s.side.peer_id, old = %s.addr, new = %from, "client floated to a new address");
        self.by_addr.remove(&s.addr);
        self.by_addr.insert(from, slot);
        s.addr = from;
        true
    }

    fn mark_dirty(&mut self, slot: usize) {
        if !self.dirty_flag[slot] {
            self.dirty_flag[slot] = true;
            self.dirty.push_back(slot);
        }
    }

    fn schedule(&mut self, slot: usize) {
        let Some(s) = self.sessions[slot].as_mut() else {
            return;
        };
        let Some(t) = s.next_timeout() else { return };
        if s.side.scheduled.is_none_or(|old| t < old) {
            s.side.scheduled = Some(t);
            self.timers.push(Reverse((t, slot, s.side.generation)));
        }
    }

    /// Key-method 2 of the first key is done: enforce duplicate-cn, allocate the address,
    /// build the push reply (push.c:613 order) and announce the client.
    fn request_auth(&mut self, slot: usize) {
        let Some(s) = self.sessions[slot].as_mut() else {
            return;
        };
        s.state.auth_requested();
        let password = s
            .side
            .pending_password
            .take()
            .filter(|p| !p.is_empty())
            .map(|p| Password(zeroize::Zeroizing::new(p)));
        self.events.push_back(ServerEvent::AuthRequest {
            peer_id: s.side.peer_id,
            addr: s.addr,
            common_name: s.side.common_name.clone().unwrap_or_default(),
            certificate: s
                .keys
                .iter()
                .find_map(|k| k.peer_certificates().and_then(|c| c.first().cloned())),
            username: s.side.username.clone(),
            password,
        });
    }

    /// Answers an [`ServerEvent::AuthRequest`]. Unknown or already-decided peer ids are
    /// ignored (the client may have gone meanwhile).
    pub fn authorize(&mut self, now: Instant, peer_id: PeerId, decision: AuthDecision) {
        let slot = peer_id.get() as usize;
        let Some(s) = self.sessions.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if !s.state.auth_answered() {
            return;
        }
        match decision {
            AuthDecision::Accept(grant) => self.finish_connect(now, slot, grant),
            AuthDecision::Reject { reason } => {
                s.fail(&mut self.ctx, now, SessionError::Refused(reason));
                self.events.push_back(ServerEvent::AuthRejected {
                    peer_id: s.side.peer_id,
                    addr: s.addr,
                });
            }
        }
        self.mark_dirty(slot);
        self.schedule(slot);
    }

    /// Ends every connected session whose identity matches, sending `message` (e.g.
    /// `RESTART` or `HALT,...`) first. Returns how many were ended.
    pub fn kick(&mut self, now: Instant, identity: &str, message: &str) -> usize {
        self.kick_target(now, &KickTarget::Identity(identity.to_owned()), message)
    }

    /// Ends every session `target` names, sending `message` (e.g. `RESTART` or
    /// `HALT,...`) first. Returns how many were ended. Used for revocation: a revoked
    /// certificate ends only the sessions of that certificate (others may share its common
    /// name under `duplicate-cn`); a disabled or deleted user ends all of the identity's.
    pub fn kick_target(&mut self, now: Instant, target: &KickTarget, message: &str) -> usize {
        let mut n = 0;
        for slot in 0..self.sessions.len() {
            let Some(s) = self.sessions[slot].as_mut() else {
                continue;
            };
            let hit = match target {
                KickTarget::Identity(id) => s.side.common_name.as_deref() == Some(id.as_str()),
                KickTarget::CertSerial(serial) => {
                    let start = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
                    s.side.cert_serial.as_deref() == Some(&serial[start..])
                }
                KickTarget::Peer(p) => s.side.peer_id == *p,
            };
            if !hit || s.state.is_closing() {
                continue;
            }
            s.send_control_message(&mut self.ctx, now, message);
            s.close(now, DisconnectReason::Kicked);
            n += 1;
            self.mark_dirty(slot);
            self.schedule(slot);
        }
        n
    }

    /// Replaces the access rules of every session of `identity` (`None`: the static rules
    /// of [`Server::set_static_access`] for it, if any, else everything allowed); the data
    /// planes get them with the next [`Server::poll_data_change`]. Returns how many
    /// sessions changed.
    pub fn set_access(&mut self, identity: &str, rules: Option<Arc<AccessRules>>) -> usize {
        let rules = rules.or_else(|| self.static_access.get(identity).cloned());
        let mut n = 0;
        for slot in 0..self.sessions.len() {
            let Some(s) = self.sessions[slot].as_mut() else {
                continue;
            };
            if s.side.common_name.as_deref() != Some(identity) || s.state.is_closing() {
                continue;
            }
            s.side.access = rules.clone();
            n += 1;
            self.refresh_data(slot);
        }
        n
    }

    /// Access rules by identity for clients whose [`AuthGrant`] brings none (the
    /// `warren-access` directive of a configuration file); they apply from the next
    /// connection.
    pub fn set_static_access(&mut self, rules: HashMap<String, Arc<AccessRules>>) {
        self.static_access = rules;
    }

    /// Replaces the TLS configuration for new handshakes and renegotiations (a new CRL, a
    /// renewed server certificate). Sessions already up keep their current keys.
    pub fn set_tls_config(&mut self, tls: Arc<rustls::ServerConfig>) {
        self.ctx.tls = TlsFactory::Server(tls.clone());
        self.config.tls = tls;
    }

    /// The session in `slot` is authenticated and about to connect: it leaves the half-open
    /// set and counts against max-clients. Admission checked max-clients when the session
    /// was created, but other half-open sessions may have connected since; then this one is
    /// dropped (silently, as at admission; OpenVPN never gets here, it counts handshaking
    /// instances against max-clients) and `false` returned.
    fn leave_half_open(&mut self, now: Instant, slot: usize) -> bool {
        if !self.half_open.is_half_open(slot) {
            return true;
        }
        self.half_open.remove(slot);
        if self.admitted() <= self.config.max_clients {
            return true;
        }
        self.counters.max_clients_refused += 1;
        if let Some(addr) = self.sessions[slot].as_ref().map(|s| s.addr) {
            self.report(now, OverloadKind::MaxClients, addr, self.config.max_clients);
        }
        self.remove_session(slot, DisconnectReason::Overloaded);
        false
    }

    fn finish_connect(&mut self, now: Instant, slot: usize, grant: AuthGrant) {
        if !self.leave_half_open(now, slot) {
            return;
        }
        if let Some(identity) = grant.identity.clone()
            && let Some(s) = self.sessions[slot].as_mut()
        {
            s.side.common_name = Some(identity);
        }
        let Some(cn) = self.sessions[slot]
            .as_ref()
            .and_then(|s| s.side.common_name.clone())
        else {
            return;
        };
        let access = grant
            .access
            .clone()
            .or_else(|| self.static_access.get(&cn).cloned());
        if let Some(s) = self.sessions[slot].as_mut() {
            s.side.access = access;
        }
        if !self.config.duplicate_cn {
            let dups: Vec<usize> = self
                .sessions
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    *i != slot
                        && s.as_ref().is_some_and(|s| {
                            s.state.is_connected() && s.side.common_name.as_deref() == Some(&cn)
                        })
                })
                .map(|(i, _)| i)
                .collect();
            for d in dups {
                tracing::info!(cn = %cn, "new connection with the same common name replaces the old one (no duplicate-cn)");
                self.remove_session(d, DisconnectReason::Replaced);
            }
        }
        let index = match grant.fixed_ip {
            Some(ip) => self.pool.take(ip),
            None => self.pool.take_lowest(),
        };
        // pool.c: one index names both addresses; an IPv6 pool too small for it leaves the
        // client without any (the smaller pool limits the clients).
        let v6_pool = self.config.ipv6.and_then(|v| v.pool);
        let addrs = index.and_then(|i| {
            let ip = self.pool.pool().address(i)?;
            match v6_pool {
                None => Some((ip, None)),
                Some((base, size)) => ipv6_at(base, size, i).map(|a| (ip, Some(a))),
            }
        });
        let Some((ip, ip6)) = addrs else {
            if let Some(ip) = index.and_then(|i| self.pool.pool().address(i)) {
                self.pool.release(ip);
            }
            tracing::warn!(cn = %cn, given = ?grant.fixed_ip, "address pool exhausted");
            if let Some(s) = self.sessions[slot].as_mut() {
                s.fail(&mut self.ctx, now, SessionError::PoolExhausted);
            }
            return;
        };
        let cfg = &self.config;
        // openvpn-ops.md §0.6, §3.2: the config's own pushes first, then what the helpers
        // (`server-ipv6`, `server`, `keepalive`) added, then the per-client pushes, then the
        // per-client options.
        let mut opts = Vec::new();
        if !grant.push_reset {
            opts.extend(
                cfg.push
                    .iter()
                    .filter(|o| !pushes_own_iroute(o, &grant.iroutes))
                    .cloned(),
            );
        }
        if cfg.ipv6.is_some_and(|v| v.push_tun_ipv6) {
            opts.push("tun-ipv6".to_string());
        }
        // helper.c, the `server` macro: subnet pushes the server as the route gateway;
        // net30 and p2p push a route to the whole network with client-to-client, else
        // net30 a host route to the server (the client's peer is not the server there).
        match cfg.topology {
            Topology::Subnet => opts.push(format!("route-gateway {}", self.server_ip)),
            Topology::Net30 | Topology::P2p if cfg.client_to_client => {
                let net = Ipv4Addr::from(u32::from(cfg.network) & u32::from(cfg.netmask));
                opts.push(format!("route {net} {}", cfg.netmask));
            }
            Topology::Net30 => opts.push(format!("route {}", self.server_ip)),
            Topology::P2p => {}
        }
        opts.push(format!("topology {}", cfg.topology.name()));
        if let Some(p) = cfg.push_ping {
            opts.push(format!("ping {p}"));
        }
        if let Some(p) = cfg.push_ping_restart {
            opts.push(format!("ping-restart {p}"));
        }
        opts.extend(
            grant
                .push
                .iter()
                .filter(|o| !pushes_own_iroute(o, &grant.iroutes))
                .cloned(),
        );
        // `ifconfig-ipv6-push` replaces the pool's IPv6 address (multi.c).
        let (ip6, netbits6) = match (grant.fixed_ip6, cfg.ipv6) {
            (Some((a, bits)), Some(_)) => (Some(a), bits),
            (_, v6) => (ip6, v6.map(|v| v.netbits).unwrap_or(64)),
        };
        if let (Some(ip6), Some(v6)) = (ip6, cfg.ipv6) {
            // push.c prepare_push_reply: the server's own address is the remote.
            opts.push(format!("ifconfig-ipv6 {ip6}/{netbits6} {}", v6.local));
        }
        // push.c: `ifconfig ADDR NETMASK` in subnet, `ifconfig LOCAL REMOTE` in net30/p2p.
        let second = self.pool.pool().peer_of(ip).unwrap_or(cfg.netmask);
        opts.push(format!("ifconfig {ip} {second}"));
        let s = self.sessions[slot].as_mut().expect("slot checked above");
        if let Some(peer_id) = s.data_v2 {
            opts.push(format!("peer-id {peer_id}"));
        }
        let cipher = s
            .cipher
            .expect("cipher is negotiated before the session reaches PendingConnect");
        opts.push(format!("cipher {}", cipher.name()));
        match (s.cc_exit, s.ekm) {
            (true, true) => opts.push("protocol-flags cc-exit tls-ekm".into()),
            (true, false) => opts.push("protocol-flags cc-exit".into()),
            (false, true) => opts.push("key-derivation tls-ekm".into()),
            (false, false) => {}
        }
        if s.side.peer_info.as_ref().is_some_and(|i| i.mtu.is_some()) {
            opts.push(format!("tun-mtu {}", cfg.tun_mtu));
        }
        s.side.vpn_ip = Some(ip);
        s.side.vpn_ip6 = ip6;
        s.side.iroutes = grant.iroutes;
        // Until now `connected_since` is when the session was created.
        let handshake = now.saturating_duration_since(s.connected_since);
        s.connected_since = now;
        let event = ServerEvent::Connected {
            peer_id: s.side.peer_id,
            common_name: cn,
            addr: s.addr,
            vpn_ip: ip,
            vpn_ip6: ip6,
            cipher,
            ekm: s.ekm,
            handshake,
        };
        s.set_push_reply(&mut self.ctx, now, opts);
        self.events.push_back(event);
    }

    fn remove_session(&mut self, slot: usize, reason: DisconnectReason) {
        let Some(s) = self.sessions[slot].take() else {
            return;
        };
        self.live -= 1;
        self.half_open.remove(slot);
        if self
            .published
            .get_mut(slot)
            .and_then(Option::take)
            .is_some()
        {
            self.data_changes.push_back(DataChange::Remove {
                peer_id: s.side.peer_id,
                generation: s.side.generation,
            });
        }
        if self.by_addr.get(&s.addr) == Some(&slot) {
            self.by_addr.remove(&s.addr);
        }
        if let Some(ip) = s.side.vpn_ip {
            self.pool.release(ip);
        }
        if self.streams.contains(&s.addr) {
            self.events
                .push_back(ServerEvent::StreamEnded { addr: s.addr });
        }
        if s.state.announced() {
            self.events.push_back(ServerEvent::Disconnected {
                peer_id: s.side.peer_id,
                common_name: s.side.common_name.clone().unwrap_or_default(),
                addr: s.addr,
                reason,
                bytes_received: s.activity.bytes_in(),
                bytes_sent: s.activity.bytes_out(),
            });
        }
    }

    /// Writes the next datagram to send into `out` (cleared first).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<SocketAddr> {
        if let Some((to, pkt)) = self.stateless_out.pop_front() {
            out.clear();
            out.extend_from_slice(&pkt);
            return Some(to);
        }
        while let Some(&slot) = self.dirty.front() {
            if let Some(s) = self.sessions[slot].as_mut() {
                out.clear();
                if s.poll_transmit(&mut self.ctx, now, out) {
                    return Some(s.addr);
                }
            }
            self.dirty.pop_front();
            self.dirty_flag[slot] = false;
            // Sending may have activated a key (all our control data acknowledged).
            self.refresh_data(slot);
            self.schedule(slot);
        }
        None
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        // Collect what is due first: a session's handling may re-arm a deadline that is
        // already due (a retransmission that poll_transmit will send), which must not be
        // handled again in this call.
        let mut due = Vec::new();
        while let Some(Reverse((t, slot, generation))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.sessions.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if s.side.generation != generation {
                continue;
            }
            if s.side.scheduled == Some(t) {
                s.side.scheduled = None;
            }
            if !due.contains(&slot) {
                due.push(slot);
            }
        }
        for slot in due {
            if let Some(s) = self.sessions[slot].as_mut() {
                s.handle_timeout(&mut self.ctx, now);
                self.after_session_input(now, slot);
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        while let Some(e) = self.ctx.events.pop_front() {
            self.events.push_back(match e {
                SessionEvent::HandshakeFailed { addr, reason, kind } => {
                    ServerEvent::HandshakeFailed { addr, reason, kind }
                }
                SessionEvent::Renegotiated {
                    peer_id: Some(peer_id),
                    key_id,
                } => ServerEvent::Renegotiated { peer_id, key_id },
                // Every server session has a peer id.
                SessionEvent::Renegotiated { peer_id: None, .. } => continue,
            });
        }
        self.events.pop_front()
    }

    pub fn clients(&self) -> Vec<ClientStatus> {
        self.sessions
            .iter()
            .flatten()
            .filter(|s| s.state.is_connected())
            .map(client_status)
            .collect()
    }

    /// One connected client (`None`: no connected session has this peer id).
    pub fn client(&self, peer_id: PeerId) -> Option<ClientStatus> {
        self.sessions
            .get(peer_id.get() as usize)
            .and_then(Option::as_ref)
            .filter(|s| s.side.peer_id == peer_id && s.state.is_connected())
            .map(client_status)
    }

    /// The verified leaf certificate a session's client presented, while the session lives.
    pub fn peer_certificate(
        &self,
        peer_id: PeerId,
    ) -> Option<rustls::pki_types::CertificateDer<'static>> {
        let s = self
            .sessions
            .get(peer_id.get() as usize)
            .and_then(Option::as_ref)
            .filter(|s| s.side.peer_id == peer_id)?;
        s.keys
            .iter()
            .find_map(|k| k.peer_certificates().and_then(|c| c.first().cloned()))
    }

    /// The netmask of the client address pool (`server NETWORK NETMASK`).
    pub fn netmask(&self) -> Ipv4Addr {
        self.config.netmask
    }

    /// The peer info (`IV_*`) a session's client sent in key-method 2, while the session
    /// lives (the management interface's `>CLIENT:` environment).
    pub fn peer_info(&self, peer_id: PeerId) -> Option<&warren_wire::PeerInfo> {
        self.sessions
            .get(peer_id.get() as usize)
            .and_then(Option::as_ref)
            .filter(|s| s.side.peer_id == peer_id)
            .and_then(|s| s.side.peer_info.as_ref())
    }

    pub fn counters(&self) -> ServerCounters {
        ServerCounters {
            dropped: self.ctx.dropped.clone(),
            handshakes: self.counters.handshakes,
            max_clients_refused: self.counters.max_clients_refused,
            half_open_refused: self.counters.half_open_refused,
            half_open_evicted: self.counters.half_open_evicted,
        }
    }

    /// Begin an orderly shutdown: with explicit-exit-notify, queue `RESTART` to every client.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        if !self.config.explicit_exit_notify {
            return;
        }
        for slot in 0..self.sessions.len() {
            if let Some(s) = self.sessions[slot].as_mut()
                && s.state.is_connected()
            {
                // multi.c: with explicit-exit-notify the server tells clients to reconnect.
                s.send_control_message(&mut self.ctx, now, "RESTART");
                self.mark_dirty(slot);
            }
        }
    }
}

fn client_status(s: &Session<ServerSide>) -> ClientStatus {
    ClientStatus {
        peer_id: s.side.peer_id,
        common_name: s.side.common_name.clone().unwrap_or_default(),
        real_addr: s.addr,
        vpn_ip: s.side.vpn_ip,
        vpn_ip6: s.side.vpn_ip6,
        bytes_received: s.activity.bytes_in(),
        bytes_sent: s.activity.bytes_out(),
        connected_since: s.connected_since,
        last_activity: s.activity.last_received(),
        username: s.side.username.clone(),
        cipher: s.cipher,
    }
}

/// Data-channel overhead of a P_DATA_V2 AEAD packet: header 8 + tag 16.
const DATA_OVERHEAD: usize = 24;

/// The IPv6 pool address with pool index `index` (the IPv6 pool holds `size` addresses
/// from `base`), if there is one: OpenVPN pool.c `add_in6_addr(base, index)`.
pub(crate) fn ipv6_at(base: Ipv6Addr, size: u32, index: u32) -> Option<Ipv6Addr> {
    (index < size).then(|| Ipv6Addr::from(u128::from(base).wrapping_add(u128::from(index))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_client_is_not_pushed_routes_to_its_own_networks() {
        use crate::dataplane::Iroute;
        let own = [
            Iroute::v4(Ipv4Addr::new(192, 168, 77, 0), 24).expect("net"),
            Iroute::v4(Ipv4Addr::new(10, 9, 9, 9), 32).expect("net"),
            Iroute::v6("fd00:77::".parse().expect("ip"), 64).expect("net"),
        ];
        for (opt, removed) in [
            ("route 192.168.77.0 255.255.255.0", true),
            ("route  192.168.77.0   255.255.255.0", true),
            ("route 10.9.9.9", true),
            ("route 10.9.9.9 255.255.255.255", true),
            ("route-ipv6 fd00:77::/64", true),
            // Only the exact network, and only without a gateway (OpenVPN multi.c).
            ("route 192.168.0.0 255.255.0.0", false),
            ("route 192.168.77.0 255.255.255.0 10.8.0.1", false),
            ("route-ipv6 fd00:77::/48", false),
            ("route-ipv6 fd00:77::/64 fd00:8::1", false),
            ("route 192.168.78.0 255.255.255.0", false),
            ("dhcp-option DNS 192.168.77.1", false),
        ] {
            assert_eq!(pushes_own_iroute(opt, &own), removed, "{opt}");
        }
        assert!(!pushes_own_iroute("route 192.168.77.0 255.255.255.0", &[]));
    }

    #[test]
    fn ipv6_addresses_follow_the_ipv4_pool_index() {
        // openvpn-ops.md §3.1: 10.8.0.2 <-> fd00:8::1000, 10.8.0.3 <-> fd00:8::1001.
        let pool = crate::pool::Pool::new(
            "10.8.0.0".parse().expect("ip"),
            "255.255.255.0".parse().expect("ip"),
        );
        let base: Ipv6Addr = "fd00:8::1000".parse().expect("ip");
        let v6 = |ip: &str, size| {
            let index = pool.index_of(ip.parse().expect("ip"))?;
            ipv6_at(base, size, index)
        };
        assert_eq!(
            v6("10.8.0.2", 65536),
            Some("fd00:8::1000".parse().expect("ip"))
        );
        assert_eq!(
            v6("10.8.0.3", 65536),
            Some("fd00:8::1001".parse().expect("ip"))
        );
        assert_eq!(
            v6("10.8.0.254", 65536),
            Some("fd00:8::10fc".parse().expect("ip"))
        );
        // The IPv6 pool is smaller: the index past its end has no address.
        assert_eq!(
            v6("10.8.0.15", 14),
            Some("fd00:8::100d".parse().expect("ip"))
        );
        assert_eq!(v6("10.8.0.16", 14), None);
        assert_eq!(v6("10.8.0.1", 65536), None, "the server's own address");
        // A carry into the upper 64 bits is an ordinary 128-bit addition.
        let top: Ipv6Addr = "fd00:8::ffff:ffff:ffff:ffff".parse().expect("ip");
        assert_eq!(
            ipv6_at(top, 2, 1),
            Some("fd00:8:0:1::".parse().expect("ip"))
        );
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(Source::of(&a("192.0.2.1:1")), Source::of(&a("192.0.2.1:2")));
        assert_ne!(Source::of(&a("192.0.2.1:1")), Source::of(&a("192.0.2.2:1")));
        // A v4-mapped address (dual-stack socket) is the IPv4 address.
        assert_eq!(
            Source::of(&a("[::ffff:192.0.2.1]:5")),
            Source::of(&a("192.0.2.1:6"))
        );
        assert_eq!(
            Source::of(&a("[2001:db8:1:2::1]:1")),
            Source::of(&a("[2001:db8:1:2:ffff::9]:2"))
        );
        assert_ne!(
            Source::of(&a("[2001:db8:1:2::1]:1")),
            Source::of(&a("[2001:db8:1:3::1]:1"))
        );
    }

    #[test]
    fn half_open_counts_per_source_and_evicts_oldest_first() {
        let x = Source::of(&a("192.0.2.1:1"));
        let y = Source::of(&a("192.0.2.2:1"));
        let mut h = HalfOpen::default();
        h.insert(0, 1, x);
        h.insert(1, 1, x);
        h.insert(2, 1, y);
        assert_eq!((h.count, h.count_from(x), h.count_from(y)), (3, 2, 1));
        // Slot 0 is admitted, then reused by a newer session: the old entry is stale.
        h.remove(0);
        h.insert(0, 2, y);
        assert_eq!(h.pop_oldest(), Some(1));
        h.remove(1);
        assert_eq!(h.pop_oldest(), Some(2));
        h.remove(2);
        assert_eq!(h.pop_oldest(), Some(0));
        h.remove(0);
        assert_eq!((h.count, h.count_from(x), h.count_from(y)), (0, 0, 0));
        assert_eq!(h.pop_oldest(), None);
        assert!(h.per_source.is_empty());
    }

    #[test]
    fn the_eviction_queue_stays_bounded() {
        let x = Source::of(&a("192.0.2.1:1"));
        let mut h = HalfOpen::default();
        // One session stays half-open for long while 100 000 others come and go.
        h.insert(0, 1, x);
        for g in 1..100_000u64 {
            h.insert(1, g, x);
            h.remove(1);
        }
        assert!(h.order.len() <= 2 * h.count + 65, "{}", h.order.len());
        assert_eq!(h.pop_oldest(), Some(0));
    }

    #[test]
    fn reports_are_rate_limited_with_a_count_of_the_rest() {
        let mut r = ReportLimiter::default();
        let t = Instant::from_secs(100);
        assert_eq!(r.allow(t), Some(0));
        for i in 1..=5 {
            assert_eq!(r.allow(t + Duration::from_secs(i)), None);
        }
        assert_eq!(r.allow(t + Server::OVERLOAD_REPORT_INTERVAL), Some(5));
        assert_eq!(r.allow(t + Server::OVERLOAD_REPORT_INTERVAL), None);
    }
}
