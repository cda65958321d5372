//! The server's data channel, split off the control side.
//!
//! The [`Server`](crate::Server) owns every session, single-threaded, and publishes each
//! peer's data-channel state as [`DataChange`]s ([`Server::poll_data_change`]). Every
//! thread that moves data (the control thread too) keeps a [`DataPlane`], a replica fed
//! with those changes, and seals and opens without the control side; the control side
//! itself seals only its keepalive pings. The rules the data channel applies (sealing
//! with a shared counter, authenticate-then-replay-check, ping and OCC recognition, the
//! source check) are the functions below, which the client's single-peer path uses too.
//!
//! Both IP families travel the tunnel, told apart by the version nibble (openvpn-ops.md
//! §3.5). A client may send from its IPv4 and its IPv6 tunnel address only; IPv6 packets
//! from link-local addresses (its kernel's router solicitations) are dropped silently, as
//! OpenVPN drops them (§3.4). A peer's packets that pass the source check are then checked
//! against its identity's access rules ([`PeerData::access`], [`crate::access`]), whether
//! they go to the tun or to another client. Tun packets go to the peer that holds their destination;
//! IPv6 multicast (`ff00::/8`) goes to every peer, which the driver does with
//! [`DataPlane::is_multicast`] and [`DataPlane::seal_to`].
//!
//! A peer may also own client networks ([`Iroute`], `iroute` / `iroute-ipv6` in a
//! client-config-dir, or a user's subnets): tun packets for an address inside one go to
//! that peer (longest prefix wins; a tunnel address beats any network), and the peer may
//! send from addresses inside its own networks (openvpn-ops.md §3.4, §6.4). The networks
//! live in one small table per family, sorted longest prefix first, so a lookup is a hash
//! probe and then a scan that allocates nothing.
//!
//! * what is shared between the control side and every worker is immutable or atomic:
//!   the [`DataKeys`] (`Arc`), each key's send counter ([`TxCounter`], one `fetch_add` per
//!   packet, so ids stay unique whoever seals) and each peer's [`Activity`] (last packet
//!   in and out, byte counters: the control side's keepalive and ping-restart timers read
//!   them);
//! * what must stay sequential per peer lives with one owner: the replay windows. The
//!   driver routes every P_DATA_V2 datagram of a peer to one worker (by peer id), and that
//!   worker's [`DataPlane`] holds the windows; a datagram checked by one window is never
//!   seen by another, because the peer id is covered by the AEAD tag.
//! * what only the control side may decide comes back as a [`DataEvent`] (the peer moved
//!   to a new address, sent exit-notify, or spent its packet ids), which the driver hands to
//!   [`Server::handle_data_event`].
//!
//! Nothing here reads a clock or takes a lock; a driver moves the values between threads.
//!
//! [`Server::poll_data_change`]: crate::Server::poll_data_change
//! [`Server::handle_data_event`]: crate::Server::handle_data_event
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use warren_core::{Instant, KeyId, PeerId};
use warren_crypto::{DATA_HEADROOM, DataHeader, DataKeys, ReplayWindow};
use warren_wire::Opcode;

use crate::access::AccessRules;
use crate::types::{DatagramOutcome, DropReason, EncapOutcome};

/// Packet id at which a renegotiation is forced (packet_id.h PACKET_ID_WRAP_TRIGGER).
pub(crate) const PACKET_ID_WRAP_TRIGGER: u32 = 0xFF00_0000;

// The data channel's rules, shared by every path that moves data (the [`DataPlane`], the
// client, and the control side's pings and OCC messages).

/// Seals `buf[DATA_HEADROOM..DATA_HEADROOM + len]` in place with the next packet id of
/// `key` (CBC ciphers use up to `DATA_TAILROOM` bytes of `buf` after it). Returns the
/// datagram's range and whether the id passed the wrap trigger (renegotiate now), or
/// `None` when the key's ids are spent or `buf` lacks the cipher's tailroom.
pub(crate) fn seal_with(
    key_id: KeyId,
    keys: &DataKeys,
    tx: &TxCounter,
    peer_id: Option<PeerId>,
    buf: &mut [u8],
    len: usize,
) -> Option<(Range<usize>, bool)> {
    if buf.len() < DATA_HEADROOM + len + keys.tailroom() {
        return None;
    }
    let pid = tx.reserve(1)?;
    let peer_id = peer_id.map(PeerId::get);
    let range = keys.seal_in(DataHeader { key_id, peer_id }, pid, buf, len);
    Some((range, pid >= PACKET_ID_WRAP_TRIGGER))
}

/// Opens a data packet in place and then checks its packet id against `window`
/// (authenticate first, then the replay check: crypto.c openvpn_decrypt_aead).
pub(crate) fn open_with(
    keys: &DataKeys,
    window: &mut ReplayWindow,
    now: Instant,
    buf: &mut [u8],
) -> Result<Range<usize>, DropReason> {
    let (pid, range) = keys.open(buf).map_err(|_| DropReason::DecryptFailed)?;
    window
        .check_and_update(pid, 0, now)
        .map_err(|_| DropReason::Replay)?;
    Ok(range)
}

/// What an opened data packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payload {
    /// A keepalive ping: nothing for the tun.
    Ping,
    /// An OCC message; `exit` for OCC EXIT (explicit-exit-notify without cc-exit).
    Occ { exit: bool },
    /// A tunnelled packet.
    Packet,
}

/// Tells pings and OCC messages from tunnelled packets (forward.c process_incoming_link).
pub(crate) fn classify(payload: &[u8]) -> Payload {
    if warren_wire::is_ping(payload) {
        Payload::Ping
    } else if payload.starts_with(&warren_wire::OCC_MAGIC) {
        Payload::Occ {
            exit: matches!(
                warren_wire::parse_occ(payload),
                Some(warren_wire::OccMessage::Exit)
            ),
        }
    } else {
        Payload::Packet
    }
}

/// The source and destination of an IP packet, by its version nibble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// The addresses of an IPv4 or IPv6 packet, or `None` for anything else (or too short).
pub(crate) fn ip_addrs(pkt: &[u8]) -> Option<Addrs> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => Some(Addrs::V4(
            Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
            Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]),
        )),
        6 if pkt.len() >= 40 => {
            let src: [u8; 16] = pkt[8..24].try_into().ok()?;
            let dst: [u8; 16] = pkt[24..40].try_into().ok()?;
            Some(Addrs::V6(Ipv6Addr::from(src), Ipv6Addr::from(dst)))
        }
        _ => None,
    }
}

/// `fe80::/10`.
fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// A client network: packets for it go to the client that owns it, and that client may
/// send from addresses inside it (OpenVPN `iroute NET MASK` / `iroute-ipv6 P/B`).
///
/// The constructors clear host bits, so `network` is always the first address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Iroute {
    V4 { network: Ipv4Addr, len: u8 },
    V6 { network: Ipv6Addr, len: u8 },
}

impl Iroute {
    /// `addr/len` with host bits cleared; `None` when `len` > 32.
    pub fn v4(addr: Ipv4Addr, len: u8) -> Option<Iroute> {
        (len <= 32).then(|| Iroute::V4 {
            network: Ipv4Addr::from(u32::from(addr) & mask4(len)),
            len,
        })
    }

    /// `addr/len` with host bits cleared; `None` when `len` > 128.
    pub fn v6(addr: Ipv6Addr, len: u8) -> Option<Iroute> {
        (len <= 128).then(|| Iroute::V6 {
            network: Ipv6Addr::from(u128::from(addr) & mask6(len)),
            len,
        })
    }

    /// Whether the IPv4 address `a` is inside this network.
    pub fn contains_v4(&self, a: Ipv4Addr) -> bool {
        match *self {
            Iroute::V4 { network, len } => u32::from(a) & mask4(len) == u32::from(network),
            Iroute::V6 { .. } => false,
        }
    }

    /// Whether the IPv6 address `a` is inside this network.
    pub fn contains_v6(&self, a: Ipv6Addr) -> bool {
        match *self {
            Iroute::V6 { network, len } => u128::from(a) & mask6(len) == u128::from(network),
            Iroute::V4 { .. } => false,
        }
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        match *self {
            Iroute::V4 { len, .. } | Iroute::V6 { len, .. } => len,
        }
    }
}

impl std::fmt::Display for Iroute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Iroute::V4 { network, len } => write!(f, "{network}/{len}"),
            Iroute::V6 { network, len } => write!(f, "{network}/{len}"),
        }
    }
}

fn mask4(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

/// One family's client networks, longest prefix first: `(network, mask, len, peer)`.
#[derive(Debug)]
struct PrefixTable<T> {
    entries: Vec<(T, T, u8, PeerId)>,
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        PrefixTable {
            entries: Vec::new(),
        }
    }
}

impl<T: Copy + Eq + std::ops::BitAnd<Output = T>> PrefixTable<T> {
    fn insert(&mut self, network: T, mask: T, len: u8, peer: PeerId) {
        // A network another peer claims too: the newest claimant is found first (as a
        // client that re-learns a route in OpenVPN's vhash wins); the older one keeps its
        // entry and owns the network again when the newer one leaves.
        let at = self.entries.partition_point(|e| e.2 > len);
        self.entries.insert(at, (network, mask, len, peer));
    }

    fn remove_peer(&mut self, peer: PeerId) {
        self.entries.retain(|e| e.3 != peer);
    }

    /// The peer owning the longest prefix that holds `a`.
    fn lookup(&self, a: T) -> Option<PeerId> {
        self.entries.iter().find(|e| a & e.1 == e.0).map(|e| e.3)
    }
}

/// The send packet-id counter of one data key, shared by everything that seals with it.
///
/// Ids start at 1 (0 is never sent, packet_id.c) and end at `u32::MAX - 1`; a reservation
/// is one atomic add, so threads sealing for the same key never reuse an id (which is
/// what AES-GCM and ChaCha20-Poly1305 need: the packet id is the nonce).
#[derive(Debug)]
pub struct TxCounter {
    next: AtomicU64,
}

impl Default for TxCounter {
    fn default() -> Self {
        TxCounter::new()
    }
}

impl TxCounter {
    /// A fresh counter: the first id is 1.
    pub fn new() -> Self {
        TxCounter {
            next: AtomicU64::new(1),
        }
    }

    /// Reserves `n` consecutive ids and returns the first, or `None` when the id space is
    /// spent (the key must be renegotiated long before: see the wrap trigger).
    pub fn reserve(&self, n: u32) -> Option<u32> {
        let first = self.next.fetch_add(u64::from(n), Ordering::Relaxed);
        // The last id handed out is first + n - 1, which must stay below u32::MAX.
        if first + u64::from(n) > u64::from(u32::MAX) {
            return None;
        }
        u32::try_from(first).ok()
    }

    /// The next id that would be handed out (for tests and status).
    pub fn peek(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }
}

/// One peer's traffic clock and counters, written by whichever thread moves its packets.
///
/// Relaxed atomics: the readers (timers, status) need an approximately current value,
/// never a consistent snapshot of several fields.
#[derive(Debug)]
pub struct Activity {
    last_rx: AtomicU64,
    last_tx: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Activity {
    /// No traffic yet; both clocks at `now`.
    pub fn new(now: Instant) -> Self {
        Activity {
            last_rx: AtomicU64::new(now.as_nanos()),
            last_tx: AtomicU64::new(now.as_nanos()),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    /// A packet from the peer was accepted (`bytes` of plaintext; 0 for control).
    pub fn received(&self, now: Instant, bytes: u64) {
        self.last_rx.fetch_max(now.as_nanos(), Ordering::Relaxed);
        if bytes > 0 {
            self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// A packet went to the peer (`bytes` of plaintext; 0 for control).
    pub fn sent(&self, now: Instant, bytes: u64) {
        self.last_tx.fetch_max(now.as_nanos(), Ordering::Relaxed);
        if bytes > 0 {
            self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub fn last_received(&self) -> Instant {
        Instant::from_nanos(self.last_rx.load(Ordering::Relaxed))
    }

    pub fn last_sent(&self) -> Instant {
        Instant::from_nanos(self.last_tx.load(Ordering::Relaxed))
    }

    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }
}

/// One data key as a worker sees it.
#[derive(Clone)]
pub struct DataKeyRef {
    pub key_id: KeyId,
    pub keys: Arc<DataKeys>,
    pub tx: Arc<TxCounter>,
}

impl std::fmt::Debug for DataKeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeyRef")
            .field("key_id", &self.key_id)
            .field("cipher", &self.keys.kind())
            .finish_non_exhaustive()
    }
}

impl DataKeyRef {
    fn same(&self, other: &DataKeyRef) -> bool {
        Arc::ptr_eq(&self.keys, &other.keys)
    }
}

/// What a worker needs to move one peer's data, as published by the control side.
#[derive(Debug, Clone)]
pub struct PeerData {
    pub peer_id: PeerId,
    /// Tells a session apart from an earlier one that had the same peer id.
    pub generation: u64,
    pub addr: SocketAddr,
    pub vpn_ip: Option<Ipv4Addr>,
    /// The peer's IPv6 tunnel address, when the tunnel carries IPv6.
    pub vpn_ip6: Option<Ipv6Addr>,
    /// The client networks this peer owns (`iroute`, `iroute-ipv6`, a user's subnets).
    pub iroutes: Vec<Iroute>,
    /// Send P_DATA_V2 with the peer id (the client announced support), else P_DATA_V1.
    pub data_v2: bool,
    /// The peer is on a TCP connection (`Server::stream_opened`): its packets come only
    /// from that connection (nothing from another address is opened, nothing floats),
    /// and the thread that reads the connection opens and seals all of them.
    pub stream: bool,
    /// The key to seal with (the newest active one), if any.
    pub send: Option<DataKeyRef>,
    /// Every key a packet may arrive on (new, current, lame duck).
    pub recv: Vec<DataKeyRef>,
    pub activity: Arc<Activity>,
    /// The identity's access rules, checked on every packet from the peer (`None`:
    /// everything allowed). Replaced by an update when the rules change.
    pub access: Option<Arc<AccessRules>>,
}

/// A change of the published data state, in the order it happened.
#[derive(Debug, Clone)]
pub enum DataChange {
    Update(PeerData),
    Remove { peer_id: PeerId, generation: u64 },
}

/// What a worker saw that only the control side may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEvent {
    /// An authenticated packet came from a new address (float, mudp.c:188).
    Float {
        peer_id: PeerId,
        generation: u64,
        addr: SocketAddr,
    },
    /// The peer sent OCC EXIT (explicit-exit-notify).
    ExitNotify { peer_id: PeerId, generation: u64 },
    /// The send key passed the wrap trigger: renegotiate now.
    KeyExhausted { peer_id: PeerId, generation: u64 },
}

/// Routing and filtering rules the workers apply like the server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPlaneConfig {
    pub client_to_client: bool,
    /// MSS clamp (`mssfix`) applied to TCP SYNs in both directions.
    pub mss: Option<u16>,
    /// `block-ipv6` on the server: IPv6 packets from clients are answered with ICMPv6 "no
    /// route" ([`DatagramOutcome::Reply`]) instead of delivered.
    pub block_ipv6: Option<BlockIpv6>,
}

/// How `block-ipv6` answers (OpenVPN forward.c `ipv6_send_icmp_unreachable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockIpv6 {
    /// The answer's source: the `ifconfig-ipv6` remote, else `fe80::7`.
    pub from: Ipv6Addr,
    /// The answer is at most this long (and 1328 bytes).
    pub tun_mtu: u16,
}

struct RecvKey {
    key: DataKeyRef,
    window: ReplayWindow,
}

struct PlanePeer {
    data: PeerData,
    recv: Vec<RecvKey>,
    /// The address a float was reported for, until the control side answers.
    float_reported: Option<SocketAddr>,
    exhausted_reported: bool,
    exit_reported: bool,
}

/// One data thread's replica of the server's data state: seals tun packets for any peer
/// and opens the data datagrams of the peers routed to it.
///
/// Feed it with [`apply`](Self::apply) before handling packets that may depend on a
/// change (drain the control side's queue first on every wake-up), then call
/// [`open`](Self::open) / [`seal`](Self::seal), then hand [`poll_event`](Self::poll_event)'s
/// events to the control side.
///
/// ```
/// use warren_openvpn::dataplane::{DataPlane, DataPlaneConfig};
/// use warren_openvpn::{DatagramOutcome, DropReason};
/// let mut plane = DataPlane::new(DataPlaneConfig {
///     client_to_client: false, mss: None, block_ipv6: None,
/// });
/// // No peer published yet: a P_DATA_V2 datagram for peer 5 is dropped.
/// let mut dgram = [0x48, 0, 0, 5, 0, 0, 0, 1];
/// let from = "192.0.2.7:1194".parse().unwrap();
/// assert_eq!(plane.open(warren_core::Instant::ZERO, from, &mut dgram),
///            DatagramOutcome::Dropped(DropReason::NoSession));
/// ```
pub struct DataPlane {
    config: DataPlaneConfig,
    peers: Vec<Option<PlanePeer>>,
    by_vpn_ip: HashMap<Ipv4Addr, PeerId>,
    by_vpn_ip6: HashMap<Ipv6Addr, PeerId>,
    /// The peers' client networks ([`Iroute`]), longest prefix first.
    routes4: PrefixTable<u32>,
    routes6: PrefixTable<u128>,
    /// For P_DATA_V1 and the undefined peer id (clients without a peer id).
    by_addr: HashMap<SocketAddr, PeerId>,
    events: VecDeque<DataEvent>,
    dropped: u64,
    /// The last [`DatagramOutcome::Reply`]'s packet.
    reply: Vec<u8>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("config", &self.config)
            .field("peers", &self.by_vpn_ip.len())
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    pub fn new(config: DataPlaneConfig) -> Self {
        DataPlane {
            config,
            peers: Vec::new(),
            by_vpn_ip: HashMap::new(),
            by_vpn_ip6: HashMap::new(),
            routes4: PrefixTable::default(),
            routes6: PrefixTable::default(),
            by_addr: HashMap::new(),
            events: VecDeque::new(),
            dropped: 0,
            reply: Vec::new(),
        }
    }

    /// The answer of the last [`DatagramOutcome::Reply`] (an IP packet), until the next
    /// datagram is opened.
    pub fn reply(&self) -> &[u8] {
        &self.reply
    }

    /// Packets dropped so far (any reason).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Peers currently known.
    pub fn peer_count(&self) -> usize {
        self.peers.iter().filter(|p| p.is_some()).count()
    }

    /// Applies one published change. Replay windows of keys that are still there survive
    /// an update; a new session (another generation) starts from scratch.
    pub fn apply(&mut self, change: DataChange) {
        match change {
            DataChange::Remove {
                peer_id,
                generation,
            } => {
                let idx = peer_id.get() as usize;
                if self
                    .peers
                    .get(idx)
                    .and_then(Option::as_ref)
                    .is_some_and(|p| p.data.generation == generation)
                    && let Some(p) = self.peers[idx].take()
                {
                    self.unindex(&p.data);
                }
            }
            DataChange::Update(data) => {
                let idx = data.peer_id.get() as usize;
                if self.peers.len() <= idx {
                    self.peers.resize_with(idx + 1, || None);
                }
                let old = self.peers[idx].take();
                let (mut old_recv, float_reported, exhausted_reported, exit_reported) = match old {
                    Some(o) => {
                        self.unindex(&o.data);
                        if o.data.generation == data.generation {
                            let same_send = match (&o.data.send, &data.send) {
                                (Some(a), Some(b)) => a.same(b),
                                _ => false,
                            };
                            let float = o.float_reported.filter(|a| *a != data.addr);
                            (
                                o.recv,
                                float,
                                o.exhausted_reported && same_send,
                                o.exit_reported,
                            )
                        } else {
                            (Vec::new(), None, false, false)
                        }
                    }
                    None => (Vec::new(), None, false, false),
                };
                let recv = data
                    .recv
                    .iter()
                    .map(|k| {
                        let window = old_recv
                            .iter()
                            .position(|o| o.key.same(k))
                            .map(|i| old_recv.swap_remove(i).window)
                            .unwrap_or_default();
                        RecvKey {
                            key: k.clone(),
                            window,
                        }
                    })
                    .collect();
                if let Some(ip) = data.vpn_ip {
                    self.by_vpn_ip.insert(ip, data.peer_id);
                }
                if let Some(ip) = data.vpn_ip6 {
                    self.by_vpn_ip6.insert(ip, data.peer_id);
                }
                for r in &data.iroutes {
                    match *r {
                        Iroute::V4 { network, len } => {
                            self.routes4
                                .insert(u32::from(network), mask4(len), len, data.peer_id)
                        }
                        Iroute::V6 { network, len } => {
                            self.routes6
                                .insert(u128::from(network), mask6(len), len, data.peer_id)
                        }
                    }
                }
                self.by_addr.insert(data.addr, data.peer_id);
                self.peers[idx] = Some(PlanePeer {
                    data,
                    recv,
                    float_reported,
                    exhausted_reported,
                    exit_reported,
                });
            }
        }
    }

    /// Forgets a peer's VPN address and transport address (unless another peer has them).
    fn unindex(&mut self, data: &PeerData) {
        if let Some(ip) = data.vpn_ip
            && self.by_vpn_ip.get(&ip) == Some(&data.peer_id)
        {
            self.by_vpn_ip.remove(&ip);
        }
        if let Some(ip) = data.vpn_ip6
            && self.by_vpn_ip6.get(&ip) == Some(&data.peer_id)
        {
            self.by_vpn_ip6.remove(&ip);
        }
        if self.by_addr.get(&data.addr) == Some(&data.peer_id) {
            self.by_addr.remove(&data.addr);
        }
        if !data.iroutes.is_empty() {
            self.routes4.remove_peer(data.peer_id);
            self.routes6.remove_peer(data.peer_id);
        }
    }

    /// Whether `a`'s source routes back to `peer_id` (multi.c: the source is looked up
    /// like a destination and must be this client): inside its networks, and not an
    /// address another client holds or a longer network another client owns.
    fn owns_source(&self, peer_id: PeerId, a: &Addrs) -> bool {
        match *a {
            Addrs::V4(src, _) => self.lookup_v4(src) == Some(peer_id),
            Addrs::V6(src, _) => self.lookup_v6(src) == Some(peer_id),
        }
    }

    /// The peer for IPv4 destination `dst`: the one with that tunnel address, else the
    /// owner of the longest client network holding it.
    fn lookup_v4(&self, dst: Ipv4Addr) -> Option<PeerId> {
        match self.by_vpn_ip.get(&dst) {
            Some(&p) => Some(p),
            None => self.routes4.lookup(u32::from(dst)),
        }
    }

    /// [`Self::lookup_v4`] for IPv6.
    fn lookup_v6(&self, dst: Ipv6Addr) -> Option<PeerId> {
        match self.by_vpn_ip6.get(&dst) {
            Some(&p) => Some(p),
            None => self.routes6.lookup(u128::from(dst)),
        }
    }

    /// The next event for the control side.
    pub fn poll_event(&mut self) -> Option<DataEvent> {
        self.events.pop_front()
    }

    /// The peer a tun packet (an IP packet at `pkt`) is routed to, without sealing it.
    /// A multi-core driver uses it to give the packet to the worker that seals for that
    /// peer, so that one peer's packet ids go out in order. Multicast routes to no single
    /// peer (see [`DataPlane::is_multicast`]).
    pub fn route(&self, pkt: &[u8]) -> Option<PeerId> {
        match ip_addrs(pkt)? {
            Addrs::V4(_, dst) => self.lookup_v4(dst),
            Addrs::V6(_, dst) => self.lookup_v6(dst),
        }
    }

    /// Whether a tun packet goes to every peer: IPv6 multicast (`ff00::/8`), which
    /// OpenVPN's server sends to every client (multi.c `multi_bcast`). Seal one copy per
    /// peer of [`DataPlane::peers`] with [`DataPlane::seal_to`].
    pub fn is_multicast(pkt: &[u8]) -> bool {
        matches!(ip_addrs(pkt), Some(Addrs::V6(_, dst)) if dst.is_multicast())
    }

    /// Every peer known, in peer-id order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerData> {
        self.peers.iter().flatten().map(|p| &p.data)
    }

    /// A peer's published state.
    pub fn peer(&self, peer_id: PeerId) -> Option<&PeerData> {
        self.peers
            .get(peer_id.get() as usize)
            .and_then(Option::as_ref)
            .map(|p| &p.data)
    }

    fn drop_packet(&mut self, reason: DropReason) -> DatagramOutcome {
        self.dropped += 1;
        DatagramOutcome::Dropped(reason)
    }

    /// Opens a data datagram in place (authenticate, then the replay check, as crypto.c
    /// openvpn_decrypt_aead does) and applies the server's rules to the plaintext: pings
    /// and OCC are consumed, the source must be the peer's VPN address, TCP SYNs are
    /// clamped, packets for another client are returned as
    /// [`DatagramOutcome::ClientToClient`] when client-to-client is on.
    ///
    /// P_DATA_V2 finds its peer by peer id; P_DATA_V1 and the undefined peer id (clients
    /// without one) by source address. A steered driver gives every datagram of a peer to
    /// one plane (see [`DataPlane::wants`]), so that one replay window sees them all.
    pub fn open(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8]) -> DatagramOutcome {
        let header = match DataHeader::parse(buf) {
            Ok(h) => h,
            Err(_) => return self.drop_packet(DropReason::Malformed),
        };
        let peer_id = match header.peer_id.and_then(PeerId::new) {
            Some(id) => id,
            None => match self.by_addr.get(&from) {
                Some(&id) => id,
                None => return self.drop_packet(DropReason::NoSession),
            },
        };
        let Some(p) = self
            .peers
            .get_mut(peer_id.get() as usize)
            .and_then(Option::as_mut)
        else {
            return self.drop_packet(DropReason::NoSession);
        };
        if p.data.stream && from != p.data.addr {
            // OpenVPN mtcp.c: a TCP instance only reads its own connection. Checked before
            // the replay window sees the packet.
            return self.drop_packet(DropReason::NoSession);
        }
        // Float (mudp.c:188) is refused when another session lives at that address. Checked
        // before opening, so a refused copy never advances the replay window (which would
        // make the genuine copy from the peer's own address look like a replay).
        if from != p.data.addr && self.by_addr.get(&from).is_some_and(|&o| o != peer_id) {
            return self.drop_packet(DropReason::NoSession);
        }
        let Some(rk) = p.recv.iter_mut().find(|k| k.key.key_id == header.key_id) else {
            return self.drop_packet(DropReason::NoKey);
        };
        let range = match open_with(&rk.key.keys, &mut rk.window, now, buf) {
            Ok(r) => r,
            Err(reason) => return self.drop_packet(reason),
        };
        p.data.activity.received(now, range.len() as u64);
        if from != p.data.addr && p.float_reported != Some(from) {
            p.float_reported = Some(from);
            self.events.push_back(DataEvent::Float {
                peer_id,
                generation: p.data.generation,
                addr: from,
            });
        }
        let (vpn_ip, vpn_ip6) = (p.data.vpn_ip, p.data.vpn_ip6);
        let generation = p.data.generation;
        let payload = &mut buf[range.clone()];
        match classify(payload) {
            Payload::Ping => return DatagramOutcome::Consumed,
            Payload::Occ { exit } => {
                if exit && !p.exit_reported {
                    p.exit_reported = true;
                    self.events.push_back(DataEvent::ExitNotify {
                        peer_id,
                        generation,
                    });
                }
                return DatagramOutcome::Consumed;
            }
            Payload::Packet => {}
        }
        if let Some(block) = self.config.block_ipv6
            && crate::icmp6::is_ipv6(payload)
        {
            // forward.c process_ip_header: answered over the link, never delivered.
            self.reply.resize(1280 + 48, 0);
            return match crate::icmp6::no_route_reply(
                payload,
                block.from,
                block.tun_mtu,
                &mut self.reply,
            ) {
                Some(n) => {
                    self.reply.truncate(n);
                    self.dropped += 1;
                    DatagramOutcome::Reply { peer_id }
                }
                None => self.drop_packet(DropReason::Ipv6Blocked),
            };
        }
        // multi.c: "bad source address from client": no spoofing of other addresses.
        // The source must be the peer's tunnel address or inside one of its networks.
        let other = match ip_addrs(payload) {
            None => return self.drop_packet(DropReason::NotIp),
            Some(a @ Addrs::V4(src, dst)) => {
                if Some(src) != vpn_ip && !self.owns_source(peer_id, &a) {
                    return self.drop_packet(DropReason::BadSource);
                }
                self.lookup_v4(dst)
            }
            Some(a @ Addrs::V6(src, dst)) => {
                if Some(src) != vpn_ip6 && !self.owns_source(peer_id, &a) {
                    return self.drop_packet(if is_link_local(src) {
                        DropReason::LinkLocalSource
                    } else {
                        DropReason::BadSource
                    });
                }
                self.lookup_v6(dst)
            }
        };
        let to_other = other.is_some_and(|o| o != peer_id);
        // The identity's access rules, for the tun and for other clients alike.
        if let Some(rules) = self.peers[peer_id.get() as usize]
            .as_ref()
            .and_then(|p| p.data.access.as_deref())
            && !rules.allows(payload)
        {
            return self.drop_packet(DropReason::AccessDenied);
        }
        if let Some(mss) = self.config.mss {
            crate::mss::clamp(payload, mss);
        }
        if self.config.client_to_client && to_other {
            return DatagramOutcome::ClientToClient(range);
        }
        DatagramOutcome::Tun(range)
    }

    /// Whether a datagram is data (P_DATA_V1 or V2) for [`DataPlane::open`], rather than
    /// control for [`Server::handle_datagram`](crate::Server::handle_datagram).
    pub fn is_data(dgram: &[u8]) -> bool {
        let op = dgram.first().map(|b| b >> 3);
        op == Some(Opcode::DataV2 as u8) || op == Some(Opcode::DataV1 as u8)
    }

    /// Whether a datagram may be steered to a data worker by its peer id: P_DATA_V2 with a
    /// defined peer id. Everything else (control packets, P_DATA_V1, the undefined peer
    /// id) belongs to the control thread (its engine, or its plane for P_DATA_V1).
    pub fn wants(dgram: &[u8]) -> bool {
        matches!(DataHeader::parse(dgram), Ok(DataHeader { peer_id: Some(id), .. }) if PeerId::new(id).is_some())
    }

    /// Seals `buf[DATA_HEADROOM..DATA_HEADROOM + len]`, an IP packet read from the tun, in
    /// place for the peer its destination routes to (multicast, which goes to every peer,
    /// is the caller's to copy: see [`DataPlane::is_multicast`]).
    pub fn seal(&mut self, now: Instant, buf: &mut [u8], len: usize) -> EncapOutcome {
        let route = buf
            .get(DATA_HEADROOM..DATA_HEADROOM + len)
            .filter(|_| len >= 20)
            .map(|pkt| ip_addrs(pkt).map(|_| self.route(pkt)));
        match route {
            None => self.drop_seal(DropReason::Malformed),
            Some(None) => self.drop_seal(DropReason::NotIp),
            Some(Some(None)) => self.drop_seal(DropReason::NoRoute),
            Some(Some(Some(peer_id))) => self.seal_to(now, peer_id, buf, len),
        }
    }

    /// Like [`DataPlane::seal`] for a peer already found with [`DataPlane::route`].
    pub fn seal_to(
        &mut self,
        now: Instant,
        peer_id: PeerId,
        buf: &mut [u8],
        len: usize,
    ) -> EncapOutcome {
        let end = DATA_HEADROOM + len;
        let Some(pkt) = buf.get_mut(DATA_HEADROOM..end) else {
            return self.drop_seal(DropReason::Malformed);
        };
        if let Some(mss) = self.config.mss {
            crate::mss::clamp(pkt, mss);
        }
        let Some(p) = self
            .peers
            .get_mut(peer_id.get() as usize)
            .and_then(Option::as_mut)
        else {
            return self.drop_seal(DropReason::NoRoute);
        };
        let Some(key) = &p.data.send else {
            return self.drop_seal(DropReason::NoKey);
        };
        let peer = p.data.data_v2.then_some(p.data.peer_id);
        let Some((range, past_trigger)) = seal_with(key.key_id, &key.keys, &key.tx, peer, buf, len)
        else {
            return self.drop_seal(DropReason::NoKey);
        };
        if past_trigger && !p.exhausted_reported {
            p.exhausted_reported = true;
            self.events.push_back(DataEvent::KeyExhausted {
                peer_id,
                generation: p.data.generation,
            });
        }
        p.data.activity.sent(now, len as u64);
        EncapOutcome::Send {
            dst: p.data.addr,
            range,
        }
    }

    fn drop_seal(&mut self, reason: DropReason) -> EncapOutcome {
        self.dropped += 1;
        EncapOutcome::Dropped(reason)
    }
}

/// What the control side last published for a session, to tell whether it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub generation: u64,
    pub addr: SocketAddr,
    pub vpn_ip: Option<Ipv4Addr>,
    pub vpn_ip6: Option<Ipv6Addr>,
    pub iroutes: Vec<Iroute>,
    pub data_v2: bool,
    pub stream: bool,
    /// Identity (pointer) and key id of the send key and of each receive key.
    pub send: Option<(usize, KeyId)>,
    pub recv: Vec<(usize, KeyId)>,
    /// Identity (pointer) of the access rules.
    pub access: Option<usize>,
}

impl Published {
    pub fn of(d: &PeerData) -> Self {
        let id = |k: &DataKeyRef| (Arc::as_ptr(&k.keys) as usize, k.key_id);
        Published {
            generation: d.generation,
            addr: d.addr,
            vpn_ip: d.vpn_ip,
            vpn_ip6: d.vpn_ip6,
            iroutes: d.iroutes.clone(),
            data_v2: d.data_v2,
            stream: d.stream,
            send: d.send.as_ref().map(id),
            recv: d.recv.iter().map(id).collect(),
            access: d.access.as_ref().map(|a| Arc::as_ptr(a) as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use warren_crypto::{CipherKind, Key2, Role};

    fn pid(v: u32) -> PeerId {
        PeerId::new(v).unwrap()
    }

    fn counter_at(next: u64) -> TxCounter {
        TxCounter {
            next: AtomicU64::new(next),
        }
    }

    #[test]
    fn packet_ids_start_at_one_and_end_before_u32_max() {
        let c = TxCounter::new();
        assert_eq!(c.reserve(1), Some(1));
        assert_eq!(c.reserve(64), Some(2));
        assert_eq!(c.reserve(1), Some(66));
        let c = counter_at(u64::from(u32::MAX) - 2);
        assert_eq!(c.reserve(1), Some(u32::MAX - 2));
        assert_eq!(c.reserve(1), Some(u32::MAX - 1));
        assert_eq!(c.reserve(1), None, "u32::MAX is never used");
        assert_eq!(c.reserve(1), None);
        let c = counter_at(u64::from(u32::MAX) - 2);
        assert_eq!(
            c.reserve(3),
            None,
            "a run that would reach u32::MAX is refused"
        );
    }

    fn peer(tx: TxCounter) -> PeerData {
        let keys = Arc::new(DataKeys::new(
            CipherKind::Aes256Gcm,
            &Key2::from_bytes([7; 256]),
            Role::Server,
        ));
        let key = DataKeyRef {
            key_id: KeyId::ZERO,
            keys,
            tx: Arc::new(tx),
        };
        PeerData {
            peer_id: pid(3),
            generation: 9,
            addr: SocketAddr::from(([192, 0, 2, 5], 1194)),
            vpn_ip: Some(Ipv4Addr::new(10, 8, 0, 6)),
            vpn_ip6: None,
            iroutes: Vec::new(),
            data_v2: true,
            stream: false,
            send: Some(key.clone()),
            recv: vec![key],
            activity: Arc::new(Activity::new(Instant::ZERO)),
            access: None,
        }
    }

    fn ipv4_to(dst: Ipv4Addr) -> Vec<u8> {
        let mut buf = vec![0u8; DATA_HEADROOM + 40];
        let p = &mut buf[DATA_HEADROOM..];
        p[0] = 0x45;
        p[3] = 40;
        p[9] = 17;
        p[16..20].copy_from_slice(&dst.octets());
        buf
    }

    #[test]
    fn the_wrap_trigger_is_reported_once() {
        let mut plane = DataPlane::new(DataPlaneConfig {
            client_to_client: false,
            mss: None,
            block_ipv6: None,
        });
        plane.apply(DataChange::Update(peer(counter_at(
            u64::from(PACKET_ID_WRAP_TRIGGER) - 1,
        ))));
        let now = Instant::from_secs(1);
        for _ in 0..3 {
            let mut buf = ipv4_to(Ipv4Addr::new(10, 8, 0, 6));
            assert!(matches!(
                plane.seal(now, &mut buf, 40),
                EncapOutcome::Send { .. }
            ));
        }
        assert_eq!(
            plane.poll_event(),
            Some(DataEvent::KeyExhausted {
                peer_id: pid(3),
                generation: 9
            })
        );
        assert_eq!(plane.poll_event(), None);
    }

    #[test]
    fn updates_keep_windows_and_removals_need_the_right_generation() {
        let mut plane = DataPlane::new(DataPlaneConfig {
            client_to_client: false,
            mss: None,
            block_ipv6: None,
        });
        let p = peer(TxCounter::new());
        plane.apply(DataChange::Update(p.clone()));
        assert_eq!(
            plane.route(&ipv4_to(Ipv4Addr::new(10, 8, 0, 6))[DATA_HEADROOM..]),
            Some(pid(3))
        );
        // A stale removal (an earlier session with the same peer id) changes nothing.
        plane.apply(DataChange::Remove {
            peer_id: pid(3),
            generation: 8,
        });
        assert_eq!(plane.peer_count(), 1);
        // A new address: the route follows, the old VPN address is gone.
        let mut moved = p.clone();
        moved.vpn_ip = Some(Ipv4Addr::new(10, 8, 0, 10));
        plane.apply(DataChange::Update(moved));
        assert_eq!(
            plane.route(&ipv4_to(Ipv4Addr::new(10, 8, 0, 6))[DATA_HEADROOM..]),
            None
        );
        assert_eq!(
            plane.route(&ipv4_to(Ipv4Addr::new(10, 8, 0, 10))[DATA_HEADROOM..]),
            Some(pid(3))
        );
        plane.apply(DataChange::Remove {
            peer_id: pid(3),
            generation: 9,
        });
        assert_eq!(plane.peer_count(), 0);
        assert_eq!(
            plane.route(&ipv4_to(Ipv4Addr::new(10, 8, 0, 10))[DATA_HEADROOM..]),
            None
        );
    }

    /// A datagram from the peer's client, to 10.8.0.1 from `src`.
    fn from_client(src: Ipv4Addr, peer_id: Option<u32>, pid: u32) -> Vec<u8> {
        let keys = DataKeys::new(
            CipherKind::Aes256Gcm,
            &Key2::from_bytes([7; 256]),
            Role::Client,
        );
        let mut buf = ipv4_to(Ipv4Addr::new(10, 8, 0, 1));
        buf[DATA_HEADROOM + 12..DATA_HEADROOM + 16].copy_from_slice(&src.octets());
        let header = DataHeader {
            key_id: KeyId::ZERO,
            peer_id,
        };
        let range = keys.seal(header, pid, &mut buf);
        buf[range].to_vec()
    }

    #[test]
    fn p_data_v1_is_found_by_address_and_no_float_onto_a_taken_address() {
        let mut plane = DataPlane::new(DataPlaneConfig {
            client_to_client: false,
            mss: None,
            block_ipv6: None,
        });
        let mut p = peer(TxCounter::new());
        p.data_v2 = false;
        plane.apply(DataChange::Update(p.clone()));
        let mut other = peer(TxCounter::new());
        other.peer_id = pid(4);
        other.addr = SocketAddr::from(([192, 0, 2, 9], 1194));
        other.vpn_ip = Some(Ipv4Addr::new(10, 8, 0, 7));
        plane.apply(DataChange::Update(other.clone()));
        let now = Instant::from_secs(1);
        let src = Ipv4Addr::new(10, 8, 0, 6);
        let mut v1 = from_client(src, None, 1);
        assert!(matches!(
            plane.open(now, p.addr, &mut v1.clone()),
            DatagramOutcome::Tun(_)
        ));
        assert_eq!(
            plane.open(now, SocketAddr::from(([192, 0, 2, 200], 1)), &mut v1),
            DatagramOutcome::Dropped(DropReason::NoSession),
            "P_DATA_V1 from an unknown address"
        );
        // Peer 3's packet from peer 4's address: authenticated, but not a float.
        let mut v2 = from_client(src, Some(3), 2);
        let genuine = v2.clone();
        assert_eq!(
            plane.open(now, other.addr, &mut v2),
            DatagramOutcome::Dropped(DropReason::NoSession)
        );
        assert_eq!(plane.poll_event(), None);
        // The refused copy did not touch the replay window: the genuine one still opens.
        assert!(matches!(
            plane.open(now, p.addr, &mut genuine.clone()),
            DatagramOutcome::Tun(_)
        ));
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// An IPv6/UDP packet (40 + 8 + 4 bytes) behind DATA_HEADROOM.
    fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let mut buf = vec![0u8; DATA_HEADROOM + 52];
        let p = &mut buf[DATA_HEADROOM..];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&12u16.to_be_bytes());
        p[6] = 17;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        buf
    }

    /// `pkt` (behind DATA_HEADROOM) sealed by peer 3's client.
    fn sealed_by_client(mut buf: Vec<u8>, pid: u32) -> Vec<u8> {
        let keys = DataKeys::new(
            CipherKind::Aes256Gcm,
            &Key2::from_bytes([7; 256]),
            Role::Client,
        );
        let header = DataHeader {
            key_id: KeyId::ZERO,
            peer_id: Some(3),
        };
        let range = keys.seal(header, pid, &mut buf);
        buf[range].to_vec()
    }

    fn dual_stack(peer_id: u32, v4: [u8; 4], ip6: &str) -> PeerData {
        let mut p = peer(TxCounter::new());
        p.peer_id = pid(peer_id);
        p.addr = SocketAddr::from(([192, 0, 2, peer_id as u8], 1194));
        p.vpn_ip = Some(Ipv4Addr::from(v4));
        p.vpn_ip6 = Some(v6(ip6));
        p
    }

    #[test]
    fn ipv6_routes_by_destination_and_checks_the_source() {
        let mut plane = DataPlane::new(DataPlaneConfig {
            client_to_client: true,
            mss: None,
            block_ipv6: None,
        });
        plane.apply(DataChange::Update(dual_stack(
            3,
            [10, 8, 0, 2],
            "fd00:8::1000",
        )));
        plane.apply(DataChange::Update(dual_stack(
            4,
            [10, 8, 0, 3],
            "fd00:8::1001",
        )));
        let server = v6("fd00:8::1");
        // Tun to client, by the IPv6 destination.
        let to = |d: &str| plane.route(&ipv6_packet(server, v6(d))[DATA_HEADROOM..]);
        assert_eq!(
            (to("fd00:8::1000"), to("fd00:8::1001")),
            (Some(pid(3)), Some(pid(4)))
        );
        assert_eq!(to("fd00:8::1002"), None);
        let mut buf = ipv6_packet(server, v6("fd00:8::1001"));
        assert!(matches!(
            plane.seal(Instant::ZERO, &mut buf, 52),
            EncapOutcome::Send { dst, .. } if dst == SocketAddr::from(([192, 0, 2, 4], 1194))
        ));
        // Multicast routes to nobody by itself: the driver copies it to every peer.
        let mcast = ipv6_packet(server, v6("ff02::1"));
        assert!(DataPlane::is_multicast(&mcast[DATA_HEADROOM..]));
        assert!(!DataPlane::is_multicast(
            &ipv4_to(Ipv4Addr::new(224, 0, 0, 1))[DATA_HEADROOM..]
        ));
        assert_eq!(plane.route(&mcast[DATA_HEADROOM..]), None);
        assert_eq!(
            plane.peers().map(|p| p.peer_id).collect::<Vec<_>>(),
            [pid(3), pid(4)]
        );

        let now = Instant::from_secs(1);
        let from = SocketAddr::from(([192, 0, 2, 3], 1194));
        // From the client's own /128: to the tun, or to the other client (client-to-client).
        let mut d = sealed_by_client(ipv6_packet(v6("fd00:8::1000"), server), 1);
        assert!(matches!(
            plane.open(now, from, &mut d),
            DatagramOutcome::Tun(_)
        ));
        let mut d = sealed_by_client(ipv6_packet(v6("fd00:8::1000"), v6("fd00:8::1001")), 2);
        assert!(matches!(
            plane.open(now, from, &mut d),
            DatagramOutcome::ClientToClient(_)
        ));
        // Anti-spoofing: another client's address, an address outside the pool, a
        // link-local source (silently, as OpenVPN), an IPv4 source that is not its own.
        for (src, pid, reason) in [
            ("fd00:8::1001", 3, DropReason::BadSource),
            ("2001:db8::1", 4, DropReason::BadSource),
            ("fe80::1234", 5, DropReason::LinkLocalSource),
            ("febf::1", 6, DropReason::LinkLocalSource),
        ] {
            let mut d = sealed_by_client(ipv6_packet(v6(src), server), pid);
            assert_eq!(
                plane.open(now, from, &mut d),
                DatagramOutcome::Dropped(reason),
                "{src}"
            );
        }
        // Neither IPv4 nor IPv6.
        let mut junk = ipv6_packet(v6("fd00:8::1000"), server);
        junk[DATA_HEADROOM] = 0x50;
        let mut d = sealed_by_client(junk, 7);
        assert_eq!(
            plane.open(now, from, &mut d),
            DatagramOutcome::Dropped(DropReason::NotIp)
        );
        // A peer without an IPv6 address (an IPv4-only server) sends no IPv6.
        let mut v4only = dual_stack(3, [10, 8, 0, 2], "fd00:8::1000");
        v4only.vpn_ip6 = None;
        plane.apply(DataChange::Update(v4only));
        let mut d = sealed_by_client(ipv6_packet(v6("fd00:8::1000"), server), 8);
        assert_eq!(
            plane.open(now, from, &mut d),
            DatagramOutcome::Dropped(DropReason::BadSource)
        );
        assert_eq!(
            plane.route(&ipv6_packet(server, v6("fd00:8::1000"))[DATA_HEADROOM..]),
            None,
            "its old IPv6 route is gone"
        );
    }

    fn net(s: &str) -> Iroute {
        let (a, l) = s.split_once('/').unwrap();
        let len = l.parse().unwrap();
        match a.parse::<std::net::IpAddr>().unwrap() {
            std::net::IpAddr::V4(a) => Iroute::v4(a, len).unwrap(),
            std::net::IpAddr::V6(a) => Iroute::v6(a, len).unwrap(),
        }
    }

    #[test]
    fn iroutes_clear_host_bits_and_contain() {
        assert_eq!(net("192.168.50.7/24").to_string(), "192.168.50.0/24");
        assert_eq!(net("fd00:77::1/64").to_string(), "fd00:77::/64");
        assert!(net("10.0.0.0/8").contains_v4(Ipv4Addr::new(10, 255, 1, 1)));
        assert!(!net("10.0.0.0/8").contains_v4(Ipv4Addr::new(11, 0, 0, 1)));
        assert!(net("0.0.0.0/0").contains_v4(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(net("1.2.3.4/32").contains_v4(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(!net("1.2.3.4/32").contains_v4(Ipv4Addr::new(1, 2, 3, 5)));
        assert!(net("fd00:77::/64").contains_v6(v6("fd00:77::abcd")));
        assert!(!net("fd00:77::/64").contains_v6(v6("fd00:78::1")));
        assert!(net("::/0").contains_v6(v6("2001:db8::1")));
        assert!(
            !net("10.0.0.0/8").contains_v6(v6("::a00:1")),
            "families never mix"
        );
        assert_eq!(Iroute::v4(Ipv4Addr::LOCALHOST, 33), None);
        assert_eq!(Iroute::v6(Ipv6Addr::LOCALHOST, 129), None);
    }

    fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut buf = ipv4_to(dst);
        buf[DATA_HEADROOM + 12..DATA_HEADROOM + 16].copy_from_slice(&src.octets());
        buf
    }

    #[test]
    fn client_networks_route_by_longest_prefix_and_pass_the_source_check() {
        let mut plane = DataPlane::new(DataPlaneConfig {
            client_to_client: true,
            mss: None,
            block_ipv6: None,
        });
        let mut a = dual_stack(3, [10, 8, 0, 2], "fd00:8::1000");
        a.iroutes = vec![net("192.168.0.0/16"), net("fd00:77::/32")];
        let mut b = dual_stack(4, [10, 8, 0, 3], "fd00:8::1001");
        b.iroutes = vec![net("192.168.50.0/24"), net("fd00:77:1::/64")];
        plane.apply(DataChange::Update(a.clone()));
        plane.apply(DataChange::Update(b.clone()));
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let to4 =
            |p: &DataPlane, d: &str| p.route(&ipv4_packet(ip("10.8.0.1"), ip(d))[DATA_HEADROOM..]);
        let to6 =
            |p: &DataPlane, d: &str| p.route(&ipv6_packet(v6("fd00:8::1"), v6(d))[DATA_HEADROOM..]);
        assert_eq!(to4(&plane, "192.168.1.1"), Some(pid(3)));
        assert_eq!(
            to4(&plane, "192.168.50.9"),
            Some(pid(4)),
            "the longer prefix wins"
        );
        assert_eq!(
            to4(&plane, "10.8.0.3"),
            Some(pid(4)),
            "tunnel addresses still route"
        );
        assert_eq!(to4(&plane, "172.16.0.1"), None);
        assert_eq!(to6(&plane, "fd00:77:2::1"), Some(pid(3)));
        assert_eq!(to6(&plane, "fd00:77:1::1"), Some(pid(4)));
        assert_eq!(to6(&plane, "fd00:78::1"), None);

        // Peer 3 sends from its networks: accepted, to the tun or to peer 4's network.
        let now = Instant::from_secs(1);
        let from = a.addr;
        let mut d = sealed_by_client(ipv4_packet(ip("192.168.7.7"), ip("10.8.0.1")), 1);
        assert!(matches!(
            plane.open(now, from, &mut d),
            DatagramOutcome::Tun(_)
        ));
        let mut d = sealed_by_client(ipv4_packet(ip("192.168.7.7"), ip("192.168.50.1")), 2);
        assert!(matches!(
            plane.open(now, from, &mut d),
            DatagramOutcome::ClientToClient(_)
        ));
        let mut d = sealed_by_client(ipv6_packet(v6("fd00:77:5::9"), v6("fd00:8::1")), 3);
        assert!(matches!(
            plane.open(now, from, &mut d),
            DatagramOutcome::Tun(_)
        ));
        // Anything outside them is still dropped.
        for (i, pkt) in [
            ipv4_packet(ip("172.16.0.1"), ip("10.8.0.1")),
            ipv4_packet(ip("10.8.0.3"), ip("10.8.0.1")),
            ipv6_packet(v6("fd00:78::1"), v6("fd00:8::1")),
            // Inside peer 3's /16 but in peer 4's longer /24: peer 4's, not peer 3's.
            ipv4_packet(ip("192.168.50.1"), ip("10.8.0.1")),
            ipv6_packet(v6("fd00:77:1::5"), v6("fd00:8::1")),
        ]
        .into_iter()
        .enumerate()
        {
            let mut d = sealed_by_client(pkt, 10 + i as u32);
            assert_eq!(
                plane.open(now, from, &mut d),
                DatagramOutcome::Dropped(DropReason::BadSource),
                "packet {i}"
            );
        }

        // Peer 4 leaves: its networks fall back to peer 3's shorter prefix.
        plane.apply(DataChange::Remove {
            peer_id: pid(4),
            generation: b.generation,
        });
        assert_eq!(to4(&plane, "192.168.50.9"), Some(pid(3)));
        assert_eq!(to6(&plane, "fd00:77:1::1"), Some(pid(3)));
        // Two claimants of one network: the newer is found first; when it leaves, the
        // older one owns it again.
        let mut c = dual_stack(5, [10, 8, 0, 4], "fd00:8::1002");
        c.iroutes = vec![net("192.168.0.0/16")];
        plane.apply(DataChange::Update(c.clone()));
        assert_eq!(to4(&plane, "192.168.1.1"), Some(pid(5)));
        plane.apply(DataChange::Remove {
            peer_id: pid(5),
            generation: c.generation,
        });
        assert_eq!(to4(&plane, "192.168.1.1"), Some(pid(3)));
        // Peer 3 loses its networks on an update: gone from the table.
        a.iroutes.clear();
        plane.apply(DataChange::Update(a));
        assert_eq!(to4(&plane, "192.168.1.1"), None);
        assert_eq!(to6(&plane, "fd00:77:2::1"), None);
    }

    #[test]
    fn access_rules_drop_packets_to_the_tun_and_to_other_clients() {
        use crate::access::{AccessEntry, AccessList, Action};
        let mut plane = DataPlane::new(DataPlaneConfig {
            client_to_client: true,
            mss: None,
            block_ipv6: None,
        });
        let rules = |entries: &[(Action, &str)]| {
            AccessList(
                entries
                    .iter()
                    .map(|(action, r)| AccessEntry {
                        action: *action,
                        rule: r.parse().unwrap(),
                    })
                    .collect(),
            )
            .compile()
            .map(Arc::new)
        };
        let mut p = dual_stack(3, [10, 8, 0, 2], "fd00:8::1000");
        p.access = rules(&[
            (Action::Allow, "fd00:8::1"),
            (Action::Allow, "10.8.0.1/32:53"),
        ]);
        plane.apply(DataChange::Update(p.clone()));
        plane.apply(DataChange::Update(dual_stack(
            4,
            [10, 8, 0, 3],
            "fd00:8::1001",
        )));
        let now = Instant::from_secs(1);
        let from = SocketAddr::from(([192, 0, 2, 3], 1194));
        let mine = v6("fd00:8::1000");
        let mut d = sealed_by_client(ipv6_packet(mine, v6("fd00:8::1")), 1);
        assert!(matches!(
            plane.open(now, from, &mut d),
            DatagramOutcome::Tun(_)
        ));
        let mut d = sealed_by_client(ipv6_packet(mine, v6("fd00:8::1001")), 2);
        assert_eq!(
            plane.open(now, from, &mut d),
            DatagramOutcome::Dropped(DropReason::AccessDenied),
            "client-to-client is checked too"
        );
        // IPv4 UDP to port 0 of 10.8.0.1: not port 53, refused by the default.
        let mut d = from_client(Ipv4Addr::new(10, 8, 0, 2), Some(3), 3);
        assert_eq!(
            plane.open(now, from, &mut d),
            DatagramOutcome::Dropped(DropReason::AccessDenied)
        );
        // New rules in an update apply to the next packet; the replay window survives.
        p.access = rules(&[(Action::Deny, "fd00:8::1")]);
        plane.apply(DataChange::Update(p.clone()));
        let mut d = sealed_by_client(ipv6_packet(mine, v6("fd00:8::1")), 4);
        assert_eq!(
            plane.open(now, from, &mut d),
            DatagramOutcome::Dropped(DropReason::AccessDenied)
        );
        let mut d = sealed_by_client(ipv6_packet(mine, v6("fd00:8::1001")), 5);
        assert!(matches!(
            plane.open(now, from, &mut d),
            DatagramOutcome::ClientToClient(_)
        ));
        p.access = None;
        plane.apply(DataChange::Update(p));
        let mut d = sealed_by_client(ipv6_packet(mine, v6("fd00:8::1")), 6);
        assert!(matches!(
            plane.open(now, from, &mut d),
            DatagramOutcome::Tun(_)
        ));
    }

    #[test]
    fn wants_only_p_data_v2_with_a_defined_peer_id() {
        assert!(DataPlane::is_data(&[0x48]) && DataPlane::is_data(&[0x30]));
        assert!(!DataPlane::is_data(&[0x20]) && !DataPlane::is_data(&[]));
        assert!(DataPlane::wants(&[0x48, 0, 0, 5, 1, 2]));
        assert!(
            !DataPlane::wants(&[0x48, 0xff, 0xff, 0xff, 1, 2]),
            "undefined peer id"
        );
        assert!(!DataPlane::wants(&[0x30, 0, 0, 5]), "P_DATA_V1");
        assert!(!DataPlane::wants(&[0x20, 0, 0, 5]), "P_CONTROL_V1");
        assert!(!DataPlane::wants(&[0x48, 0]), "short");
        assert!(!DataPlane::wants(&[]));
    }
}
