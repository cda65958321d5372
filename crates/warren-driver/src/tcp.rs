//! OpenVPN over TCP in the server loop (fact sheet §9, `openvpn-ops.md` §5).
//!
//! The model: each accepted connection is one peer, known to the engine by the
//! connection's remote address (as a UDP peer is by its source address), and announced
//! with [`warren_openvpn::Server::stream_opened`] so the engine creates its session
//! without the UDP cookie exchange. Packets travel as frames with a u16 length prefix:
//!
//! * reading: every readable connection is drained (a bounded number of reads per
//!   wake-up) into its [`FrameBuf`]; all complete frames of a read are opened in place by
//!   the loop's [`DataPath`] (control frames to the engine, data frames to the plane) and
//!   their plaintext goes to the tun in one batch;
//! * writing: what the engine and the data path send to a connection's peer (the
//!   [`Streams`] side of [`crate::batch::Out`]) is framed into the connection's write
//!   queue, and each queue leaves in one `write` per wake-up (all its frames coalesced).
//!   A queue is bounded: data frames beyond [`QUEUE_SOFT`] bytes are dropped (OpenVPN's
//!   `tcp-queue-limit`: the tunnelled TCP backs off), and a peer whose queue reaches
//!   [`QUEUE_HARD`] or that accepts no byte for [`STALL`] is disconnected. Nothing ever
//!   blocks the loop, so a peer that stops reading costs only its own connection.
//!
//! Connections are limited in total and per source address, and one that has not
//! completed a handshake within the hand-window is closed.
//!
//! With `port-share`, a new connection is first sniffed: one whose first bytes are not
//! an OpenVPN client reset leaves the engine and goes to the relay
//! ([`crate::portshare`]), polled in the same loop.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::os::fd::AsFd;
use std::time::Duration;

use tracing::{debug, info, warn};
use warren_core::Instant;
use warren_io::{Interest, OffloadTun, Poller, TcpConn, TcpListener, Token};
use warren_openvpn::DataPlane;
use warren_wire::FrameBuf;

use crate::batch::{DataPath, Pump, Streams};
use crate::portshare::{PortShare, PortShareOptions, SNIFF_TIMEOUT, Sniff, sniff};
use crate::proxy::{Handshake, Progress};

/// Bytes queued for one connection beyond which its data frames are dropped.
pub const QUEUE_SOFT: usize = 256 * 1024;
/// Bytes queued for one connection at which it is disconnected (a peer that stopped
/// reading: control frames and pings still pile up).
pub const QUEUE_HARD: usize = QUEUE_SOFT + 64 * 1024;
/// A connection with bytes queued that accepts none for this long is disconnected.
pub const STALL: Duration = Duration::from_secs(30);
/// How long a connection whose session ended may take to receive its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Receive buffer per connection (many frames per read).
const RECV_BUFFER: usize = 32 * 1024;
/// Reads per connection and wake-up (the other descriptors get their turn).
const MAX_READS_PER_WAKE: usize = 8;
/// Connections accepted per listener and wake-up.
const MAX_ACCEPTS_PER_WAKE: usize = 64;
/// After `accept` fails for lack of resources (EMFILE...), the listeners rest this long
/// (the pending connection keeps them readable: waiting on them would spin).
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);

/// The TCP side of a server, opened before privileges are dropped.
#[derive(Debug)]
pub struct TcpOptions {
    pub listeners: Vec<TcpListener>,
    /// Connections at once, handshaking ones included.
    pub max_connections: usize,
    /// Connections at once from one source address.
    pub max_per_source: usize,
    /// A connection without a completed handshake after this long is closed.
    pub hand_window: Duration,
    /// The largest packet a peer may send in one frame.
    pub max_frame: usize,
    /// `port-share HOST PORT`: where non-OpenVPN connections are relayed.
    pub port_share: Option<PortShareOptions>,
}

/// Counters of the TCP side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpStats {
    pub accepted: u64,
    /// Refused by a limit, or because a UDP session lives at the same address.
    pub refused: u64,
    pub closed: u64,
    /// Closed for a bad length prefix.
    pub bad_frames: u64,
    /// Data frames dropped because the peer's queue was above [`QUEUE_SOFT`].
    pub queue_dropped: u64,
    /// Peers disconnected because they stopped reading.
    pub stalled: u64,
    /// Closed because a data packet failed authentication or the replay check.
    pub auth_failed: u64,
    pub write_calls: u64,
    /// Handed to the port-share relay (not OpenVPN).
    pub port_shared: u64,
}

struct Conn {
    io: TcpConn,
    rx: FrameBuf,
    /// Frames waiting for the socket, from `tx_off` on.
    tx: Vec<u8>,
    tx_off: usize,
    /// Tells this connection's timer entries from an earlier one's at the same address.
    generation: u64,
    /// The engine reported the session connected: the hand-window no longer applies.
    connected: bool,
    /// When the hand-window ends.
    hand_deadline: Instant,
    /// `port-share`: the first bytes have not told yet whether this is OpenVPN.
    sniffing: bool,
    /// The session ended: close once the queue is written (or after [`CLOSE_GRACE`]).
    closing: bool,
    /// When the socket last took bytes (or the queue last became non-empty).
    last_progress: Instant,
    /// The queue became non-empty since the last write: the stall clock restarts.
    fresh: bool,
    /// Listed in [`TcpServer::dirty`].
    dirty: bool,
}

impl Conn {
    /// Lists the connection for the next [`TcpServer::flush`] (once).
    fn mark(&mut self, addr: SocketAddr, dirty: &mut Vec<SocketAddr>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(addr);
        }
    }
}

impl Conn {
    fn pending(&self) -> usize {
        self.tx.len() - self.tx_off
    }
}

/// Why a connection was closed (debug log).
#[derive(Debug, Clone, Copy)]
enum Why {
    Eof,
    ReadError,
    WriteError,
    BadFrame,
    HandWindow,
    Ended,
    QueueFull,
    Stalled,
    DataAuthFailed,
}

/// The server's listeners and connections.
pub(crate) struct TcpServer {
    listeners: Vec<TcpListener>,
    conns: HashMap<SocketAddr, Conn>,
    per_source: HashMap<IpAddr, usize>,
    timers: BinaryHeap<Reverse<(Instant, SocketAddr, u64)>>,
    next_generation: u64,
    /// Connections with bytes queued since the last [`TcpServer::flush`].
    dirty: Vec<SocketAddr>,
    /// Connections closed here that the engine has not been told about.
    closed: Vec<SocketAddr>,
    /// Connections registered with the poller in the last [`TcpServer::register`].
    polled: Vec<(Token, SocketAddr)>,
    listener_tokens: Vec<Token>,
    /// Accepting rests until then (see [`ACCEPT_PAUSE`]).
    accept_paused_until: Option<Instant>,
    frames: Vec<Range<usize>>,
    max_connections: usize,
    max_per_source: usize,
    hand_window: Duration,
    max_frame: usize,
    port_share: Option<PortShare>,
    pub stats: TcpStats,
}

impl std::fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpServer")
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl TcpServer {
    pub fn new(o: TcpOptions) -> TcpServer {
        TcpServer {
            listeners: o.listeners,
            conns: HashMap::new(),
            per_source: HashMap::new(),
            timers: BinaryHeap::new(),
            next_generation: 0,
            dirty: Vec::new(),
            closed: Vec::new(),
            polled: Vec::new(),
            listener_tokens: Vec::new(),
            accept_paused_until: None,
            frames: Vec::with_capacity(RECV_BUFFER / 16),
            max_connections: o.max_connections.max(1),
            max_per_source: o.max_per_source.max(1),
            hand_window: o.hand_window,
            max_frame: o.max_frame,
            port_share: o.port_share.map(PortShare::new),
            stats: TcpStats::default(),
        }
    }

    /// Adds the listeners and every connection to `poller` (after its fixed descriptors;
    /// call [`Poller::truncate`] back to them before each wait). A connection with bytes
    /// queued also waits for writability.
    pub fn register(&mut self, poller: &mut Poller) {
        self.listener_tokens.clear();
        if self.accept_paused_until.is_none() {
            for l in &self.listeners {
                self.listener_tokens
                    .push(poller.add(l.as_fd(), Interest::Readable));
            }
        }
        self.polled.clear();
        for (addr, c) in &self.conns {
            let interest = if c.pending() > 0 {
                Interest::Both
            } else {
                Interest::Readable
            };
            self.polled
                .push((poller.add(c.io.as_fd(), interest), *addr));
        }
        if let Some(ps) = &mut self.port_share {
            ps.register(poller);
        }
    }

    /// Accepts pending connections within the limits. `admit` asks the engine (false: a
    /// UDP session has that address; the connection is refused).
    pub fn accept_ready(
        &mut self,
        now: Instant,
        poller: &Poller,
        mut admit: impl FnMut(SocketAddr) -> bool,
    ) {
        for i in 0..self.listeners.len() {
            if !self
                .listener_tokens
                .get(i)
                .is_some_and(|t| poller.is_readable(*t))
            {
                continue;
            }
            for _ in 0..MAX_ACCEPTS_PER_WAKE {
                let (io, addr) = match self.listeners[i].accept() {
                    Ok(c) => c,
                    Err(e) if warren_io::is_would_block(&e) => break,
                    Err(e) if warren_io::TcpListener::is_connection_error(&e) => {
                        // That connection is gone; the next one may be fine.
                        continue;
                    }
                    Err(e) => {
                        // Out of descriptors or memory: rest, or the loop would spin on
                        // the still-readable listener.
                        warn!("accepting TCP connections: {e}; pausing for {ACCEPT_PAUSE:?}");
                        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                        return;
                    }
                };
                let from_source = self.per_source.get(&addr.ip()).copied().unwrap_or(0);
                if self.conns.len() >= self.max_connections
                    || from_source >= self.max_per_source
                    || self.conns.contains_key(&addr)
                    || !admit(addr)
                {
                    self.stats.refused += 1;
                    debug!(%addr, "TCP connection refused (connection limits)");
                    continue;
                }
                self.stats.accepted += 1;
                debug!(%addr, "TCP connection accepted");
                *self.per_source.entry(addr.ip()).or_insert(0) += 1;
                self.next_generation += 1;
                let generation = self.next_generation;
                self.conns.insert(
                    addr,
                    Conn {
                        io,
                        rx: FrameBuf::new(RECV_BUFFER, self.max_frame),
                        tx: Vec::new(),
                        tx_off: 0,
                        generation,
                        connected: false,
                        hand_deadline: now + self.hand_window,
                        sniffing: self.port_share.is_some(),
                        closing: false,
                        last_progress: now,
                        fresh: false,
                        dirty: false,
                    },
                );
                self.timers
                    .push(Reverse((now + self.hand_window, addr, generation)));
                if self.port_share.is_some() {
                    self.timers
                        .push(Reverse((now + SNIFF_TIMEOUT, addr, generation)));
                }
            }
        }
    }

    /// Reads every readable connection and opens its frames with `path`, then writes to
    /// every writable one.
    pub fn io_ready<P: DataPath>(
        &mut self,
        now: Instant,
        poller: &Poller,
        pump: &mut Pump,
        mut tun: Option<&mut OffloadTun>,
        path: &mut P,
    ) {
        let polled = std::mem::take(&mut self.polled);
        for &(token, addr) in &polled {
            if poller.is_readable(token) {
                self.read_conn(now, addr, pump, tun.as_deref_mut(), path);
            }
            if poller.is_writable(token) && self.conns.contains_key(&addr) {
                self.write_conn(now, addr);
            }
        }
        self.polled = polled;
        if let Some(ps) = &mut self.port_share {
            ps.io_ready(poller);
        }
    }

    fn read_conn<P: DataPath>(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        pump: &mut Pump,
        mut tun: Option<&mut OffloadTun>,
        path: &mut P,
    ) {
        for _ in 0..MAX_READS_PER_WAKE {
            let Some(c) = self.conns.get_mut(&addr) else {
                return;
            };
            let spare = c.rx.spare();
            let room = spare.len();
            let n = match c.io.read(spare) {
                Ok(0) => return self.close(addr, Why::Eof),
                Ok(n) => n,
                Err(e) if warren_io::is_would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(addr, Why::ReadError),
            };
            c.rx.commit(n);
            if c.sniffing {
                // Nothing was taken out as a frame yet: the bytes read start at 0.
                match sniff(&c.rx.bytes()[..c.rx.buffered()], false) {
                    Sniff::NeedMore => continue,
                    Sniff::Foreign => return self.share(addr),
                    Sniff::OpenVpn => c.sniffing = false,
                }
            }
            self.frames.clear();
            let bad = loop {
                match c.rx.next_frame() {
                    Ok(Some(r)) => self.frames.push(r),
                    Ok(None) => break false,
                    Err(_) => break true,
                }
            };
            // The frames before a bad length are still the peer's packets.
            let auth_failed = pump.open_frames(
                now,
                addr,
                c.rx.bytes_mut(),
                &self.frames,
                tun.as_deref_mut(),
                path,
            );
            if auth_failed {
                self.stats.auth_failed += 1;
                return self.close(addr, Why::DataAuthFailed);
            }
            if bad {
                self.stats.bad_frames += 1;
                return self.close(addr, Why::BadFrame);
            }
            if n < room {
                // A short read: the socket is drained.
                return;
            }
        }
    }

    fn write_conn(&mut self, now: Instant, addr: SocketAddr) {
        let Some(c) = self.conns.get_mut(&addr) else {
            return;
        };
        let mut progress = std::mem::take(&mut c.fresh);
        while c.pending() > 0 {
            self.stats.write_calls += 1;
            match c.io.write(&c.tx[c.tx_off..]) {
                Ok(0) => return self.close(addr, Why::WriteError),
                Ok(n) => {
                    c.tx_off += n;
                    progress = true;
                }
                Err(e) if warren_io::is_would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(addr, Why::WriteError),
            }
        }
        if progress {
            c.last_progress = now;
        }
        if c.pending() == 0 {
            c.tx.clear();
            c.tx_off = 0;
            if c.closing {
                self.close(addr, Why::Ended);
            }
        } else if now.saturating_duration_since(c.last_progress) >= STALL {
            self.stats.stalled += 1;
            self.close(addr, Why::Stalled);
        }
    }

    /// Writes what was queued since the last call (one `write` per connection, all its
    /// frames together).
    pub fn flush(&mut self, now: Instant) {
        let dirty = std::mem::take(&mut self.dirty);
        for &addr in &dirty {
            if let Some(c) = self.conns.get_mut(&addr) {
                c.dirty = false;
            }
            self.write_conn(now, addr);
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// The engine connected `addr`'s session: the hand-window no longer applies.
    pub fn on_connected(&mut self, addr: SocketAddr) {
        if let Some(c) = self.conns.get_mut(&addr) {
            c.connected = true;
        }
    }

    /// The engine ended `addr`'s session: close the connection once its queue is out.
    pub fn on_session_ended(&mut self, now: Instant, addr: SocketAddr) {
        let Some(c) = self.conns.get_mut(&addr) else {
            return;
        };
        c.closing = true;
        if c.pending() == 0 {
            self.close(addr, Why::Ended);
        } else {
            let g = c.generation;
            self.timers.push(Reverse((now + CLOSE_GRACE, addr, g)));
            c.mark(addr, &mut self.dirty);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _, _))| *t);
        timer.into_iter().chain(self.accept_paused_until).min()
    }

    /// Closes connections whose hand-window or closing grace is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
        }
        while let Some(Reverse((t, addr, g))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.conns.get_mut(&addr).filter(|c| c.generation == g) else {
                continue;
            };
            if c.closing {
                self.close(addr, Why::Ended);
            } else if c.sniffing {
                // Silent, or 1-2 bytes: decide on what there is (OpenVPN with 2 bytes).
                match sniff(&c.rx.bytes()[..c.rx.buffered()], true) {
                    Sniff::OpenVpn => c.sniffing = false,
                    _ => self.share(addr),
                }
            } else if !c.connected && now >= c.hand_deadline {
                self.close(addr, Why::HandWindow);
            }
        }
    }

    /// Connections closed since the last call: tell the engine
    /// ([`warren_openvpn::Server::stream_closed`]).
    pub fn take_closed(&mut self) -> std::vec::Drain<'_, SocketAddr> {
        self.closed.drain(..)
    }

    /// Takes `addr` out of the connections: the engine is told, the limits freed.
    fn remove(&mut self, addr: SocketAddr) -> Option<Conn> {
        let conn = self.conns.remove(&addr)?;
        if let Some(n) = self.per_source.get_mut(&addr.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&addr.ip());
            }
        }
        self.closed.push(addr);
        Some(conn)
    }

    /// Hands a connection that is not OpenVPN to the port-share relay, with the bytes
    /// already read.
    fn share(&mut self, addr: SocketAddr) {
        let Some(c) = self.remove(addr) else {
            return;
        };
        let Some(ps) = &mut self.port_share else {
            return;
        };
        self.stats.port_shared += 1;
        ps.start(c.io, addr, &c.rx.bytes()[..c.rx.buffered()]);
    }

    fn close(&mut self, addr: SocketAddr, why: Why) {
        if self.remove(addr).is_none() {
            return;
        }
        self.stats.closed += 1;
        match why {
            Why::Eof | Why::Ended => debug!(%addr, ?why, "TCP connection closed"),
            Why::HandWindow => {
                info!(%addr, "TCP connection closed: no handshake within the hand-window")
            }
            Why::QueueFull | Why::Stalled => {
                info!(%addr, "TCP connection closed: the peer stopped reading")
            }
            _ => debug!(%addr, ?why, "TCP connection closed"),
        }
    }
}

impl Streams for TcpServer {
    fn send(&mut self, to: SocketAddr, dgram: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(&to) else {
            return false;
        };
        if c.closing && !DataPlane::is_data(dgram) {
            // The session's last control packets (AUTH_FAILED, RESTART) still go out.
        } else if c.closing {
            return true;
        }
        let pending = c.pending();
        let Ok(len) = u16::try_from(dgram.len()) else {
            return true;
        };
        if pending + 2 + dgram.len() > QUEUE_HARD {
            self.stats.stalled += 1;
            self.close(to, Why::QueueFull);
            return true;
        }
        if pending >= QUEUE_SOFT && DataPlane::is_data(dgram) {
            self.stats.queue_dropped += 1;
            // Try the socket again this turn: that is where a peer that stopped reading
            // is found out (no progress for STALL).
            c.mark(to, &mut self.dirty);
            return true;
        }
        c.mark(to, &mut self.dirty);
        if pending == 0 {
            c.tx.clear();
            c.tx_off = 0;
            c.fresh = true;
        } else if c.tx_off >= QUEUE_SOFT / 2 {
            c.tx.drain(..c.tx_off);
            c.tx_off = 0;
        }
        c.tx.extend_from_slice(&len.to_be_bytes());
        c.tx.extend_from_slice(dgram);
        true
    }
}

/// A client's connection to its server (`proto tcp-client`): the same framing and
/// bounded queue as a server connection, for one peer.
///
/// Through a proxy (`http-proxy`, `socks-proxy`), `peer` is the proxy: once connected,
/// the link first runs the proxy's [`Handshake`] (bounded by a deadline), and only then
/// sends the frames queued meanwhile; what followed the proxy's reply is read as the start
/// of the server's stream.
pub(crate) struct TcpLink {
    io: TcpConn,
    peer: SocketAddr,
    /// What `peer` is, for messages: the address, or `HTTP proxy ADDR`.
    label: String,
    proxy: Option<ProxyPhase>,
    /// The TCP handshake finished (the socket became writable without an error).
    established: bool,
    rx: FrameBuf,
    tx: Vec<u8>,
    tx_off: usize,
    frames: Vec<Range<usize>>,
    /// Why the connection is unusable (the attempt fails).
    failed: Option<String>,
    pub queue_dropped: u64,
}

/// A proxy handshake under way.
struct ProxyPhase {
    handshake: Handshake,
    /// The handshake (with the TCP connect to the proxy) must be done by then.
    deadline: Instant,
    timeout: Duration,
    /// The server, as the proxy is asked for it (`host:port`).
    target: String,
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLink")
            .field("peer", &self.peer)
            .field("established", &self.established)
            .finish_non_exhaustive()
    }
}

impl TcpLink {
    /// Starts connecting (non-blocking); frames queued meanwhile go out once connected.
    pub fn connect(
        peer: SocketAddr,
        local: Option<IpAddr>,
        max_frame: usize,
    ) -> io::Result<TcpLink> {
        Ok(TcpLink {
            io: TcpConn::connect(peer, local)?,
            peer,
            label: peer.to_string(),
            proxy: None,
            established: false,
            rx: FrameBuf::new(RECV_BUFFER, max_frame),
            tx: Vec::new(),
            tx_off: 0,
            frames: Vec::with_capacity(RECV_BUFFER / 16),
            failed: None,
            queue_dropped: 0,
        })
    }

    /// Goes through a proxy (`peer` is the proxy, `name` says which kind): `handshake`
    /// runs first and must end within `timeout` from `now`.
    pub fn via_proxy(
        mut self,
        name: &str,
        handshake: Handshake,
        now: Instant,
        timeout: Duration,
        target: String,
    ) -> TcpLink {
        self.label = format!("{name} {}", self.peer);
        self.proxy = Some(ProxyPhase {
            handshake,
            deadline: now + timeout,
            timeout,
            target,
        });
        self
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.io.local_addr()
    }

    /// What to wait for: writability while connecting or while bytes are queued.
    pub fn interest(&self) -> Interest {
        let queued = match &self.proxy {
            Some(p) => !p.handshake.to_send().is_empty(),
            None => self.tx_off < self.tx.len(),
        };
        if !self.established || queued {
            Interest::Both
        } else {
            Interest::Readable
        }
    }

    /// When the proxy handshake times out, while it runs.
    pub fn deadline(&self) -> Option<Instant> {
        self.proxy.as_ref().map(|p| p.deadline)
    }

    /// Fails the link if the proxy handshake is past its deadline.
    pub fn check_deadline(&mut self, now: Instant) {
        if self.failed.is_some() {
            return;
        }
        if let Some(p) = &self.proxy
            && now >= p.deadline
        {
            let secs = p.timeout.as_secs();
            self.failed = Some(if self.established {
                format!(
                    "{}: no complete answer to the CONNECT to {} within {secs} s",
                    self.label, p.target
                )
            } else {
                format!("TCP connect to {} timed out after {secs} s", self.label)
            });
        }
    }

    pub fn register(&self, poller: &mut Poller) -> Token {
        poller.add(self.io.as_fd(), self.interest())
    }

    /// The connection failed or ended (the attempt is over).
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Handles readiness: completes the connect, reads and opens frames (plaintext to the
    /// tun in one batch per read), writes the queue.
    pub fn on_ready<P: DataPath>(
        &mut self,
        now: Instant,
        poller: &Poller,
        token: Token,
        pump: &mut Pump,
        mut tun: Option<&mut OffloadTun>,
        path: &mut P,
    ) {
        if self.failed.is_some() {
            return;
        }
        let (readable, writable) = (poller.is_readable(token), poller.is_writable(token));
        if !self.established {
            if !(readable || writable) {
                return;
            }
            match self.io.take_error() {
                Ok(None) => self.established = true,
                Ok(Some(e)) | Err(e) => {
                    self.failed = Some(format!("TCP connect to {} failed: {e}", self.label));
                    return;
                }
            }
        }
        if self.proxy.is_some() {
            if !self.drive_proxy() {
                return;
            }
            // Through: what followed the proxy's reply is the server's.
            if self.rx.buffered() > 0 && !self.open_buffered(now, pump, tun.as_deref_mut(), path) {
                return;
            }
        }
        if readable {
            for _ in 0..MAX_READS_PER_WAKE {
                let spare = self.rx.spare();
                let room = spare.len();
                let n = match self.io.read(spare) {
                    Ok(0) => {
                        self.failed = Some(format!("{} closed the TCP connection", self.label));
                        return;
                    }
                    Ok(n) => n,
                    Err(e) if warren_io::is_would_block(&e) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.failed = Some(format!("TCP connection to {}: {e}", self.peer));
                        return;
                    }
                };
                self.rx.commit(n);
                if !self.open_buffered(now, pump, tun.as_deref_mut(), path) {
                    return;
                }
                if n < room {
                    break;
                }
            }
        }
        self.flush();
    }

    /// Opens every complete frame in the receive buffer; `false` when the link failed.
    fn open_buffered<P: DataPath>(
        &mut self,
        now: Instant,
        pump: &mut Pump,
        tun: Option<&mut OffloadTun>,
        path: &mut P,
    ) -> bool {
        self.frames.clear();
        let bad = loop {
            match self.rx.next_frame() {
                Ok(Some(r)) => self.frames.push(r),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        let peer = self.peer;
        if pump.open_frames(now, peer, self.rx.bytes_mut(), &self.frames, tun, path) {
            self.failed = Some(format!(
                "a data packet from {} failed authentication (fatal over TCP)",
                self.label
            ));
            return false;
        }
        if let Some(e) = bad {
            self.failed = Some(format!("TCP stream from {}: {e}", self.label));
            return false;
        }
        true
    }

    /// Runs the proxy handshake as far as the socket allows: writes the pending request,
    /// reads the proxy's answer. `true` once the tunnel through the proxy is open (the
    /// bytes after the reply are in `rx`); on failure `failed` says why.
    fn drive_proxy(&mut self) -> bool {
        let Some(p) = &mut self.proxy else {
            return true;
        };
        // Each round writes what the handshake has to say and reads one answer; a SOCKS
        // handshake has three rounds.
        for _ in 0..2 * MAX_READS_PER_WAKE {
            while !p.handshake.to_send().is_empty() {
                match self.io.write(p.handshake.to_send()) {
                    Ok(0) => {
                        self.failed = Some(format!("{}: write failed", self.label));
                        return false;
                    }
                    Ok(n) => p.handshake.sent(n),
                    Err(e) if warren_io::is_would_block(&e) => return false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.failed = Some(format!("{}: {e}", self.label));
                        return false;
                    }
                }
            }
            let n = match self.io.read(p.handshake.spare()) {
                Ok(n) => n,
                Err(e) if warren_io::is_would_block(&e) => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.failed = Some(format!("{}: {e}", self.label));
                    return false;
                }
            };
            match p.handshake.received(n) {
                Ok(Progress::More) => {}
                Ok(Progress::Done) => {
                    let ahead = p.handshake.lookahead();
                    let spare = self.rx.spare();
                    let k = ahead.len().min(spare.len());
                    spare[..k].copy_from_slice(&ahead[..k]);
                    self.rx.commit(k);
                    info!("{}: connected through to {}", self.label, p.target);
                    self.proxy = None;
                    return true;
                }
                Err(e) => {
                    self.failed = Some(format!("{} (CONNECT to {}): {e}", self.label, p.target));
                    return false;
                }
            }
        }
        false
    }

    /// Writes the queue (all frames in one `write` when the socket takes them).
    pub fn flush(&mut self) {
        if !self.established || self.failed.is_some() || self.proxy.is_some() {
            return;
        }
        while self.tx_off < self.tx.len() {
            match self.io.write(&self.tx[self.tx_off..]) {
                Ok(0) => {
                    self.failed = Some(format!("TCP connection to {}: write failed", self.peer));
                    return;
                }
                Ok(n) => self.tx_off += n,
                Err(e) if warren_io::is_would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.failed = Some(format!("TCP connection to {}: {e}", self.peer));
                    return;
                }
            }
        }
        self.tx.clear();
        self.tx_off = 0;
    }
}

impl Streams for TcpLink {
    fn send(&mut self, _to: SocketAddr, dgram: &[u8]) -> bool {
        let pending = self.tx.len() - self.tx_off;
        let Ok(len) = u16::try_from(dgram.len()) else {
            return true;
        };
        if pending + 2 + dgram.len() > QUEUE_HARD {
            self.failed
                .get_or_insert_with(|| format!("{} stopped reading", self.peer));
            return true;
        }
        if pending >= QUEUE_SOFT && DataPlane::is_data(dgram) {
            self.queue_dropped += 1;
            return true;
        }
        if self.tx_off >= QUEUE_SOFT / 2 {
            self.tx.drain(..self.tx_off);
            self.tx_off = 0;
        }
        self.tx.extend_from_slice(&len.to_be_bytes());
        self.tx.extend_from_slice(dgram);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpStream};
    use warren_io::{TcpBind, UdpFamily};

    fn server(max_connections: usize, max_per_source: usize) -> (TcpServer, SocketAddr) {
        let l = TcpListener::bind(&TcpBind {
            family: UdpFamily::V4,
            local: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port: 0,
        })
        .expect("bind");
        let addr = l.local_addr();
        let t = TcpServer::new(TcpOptions {
            listeners: vec![l],
            max_connections,
            max_per_source,
            hand_window: Duration::from_secs(60),
            max_frame: 2048,
            port_share: None,
        });
        (t, addr)
    }

    fn accept_all(t: &mut TcpServer, now: Instant) {
        let mut poller = Poller::new();
        t.register(&mut poller);
        poller.wait(Some(Duration::from_secs(5))).expect("poll");
        t.accept_ready(now, &poller, |_| true);
    }

    #[test]
    fn connection_limits_per_source_and_in_total() {
        let now = Instant::from_secs(100);
        let (mut t, addr) = server(10, 2);
        let _c: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        accept_all(&mut t, now);
        assert_eq!((t.conns.len(), t.stats.refused), (2, 1), "two per source");

        let (mut t, addr) = server(1, 5);
        let _c: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        accept_all(&mut t, now);
        assert_eq!((t.conns.len(), t.stats.refused), (1, 1), "one in total");
        // The engine refuses an address (a UDP session lives there): refused too.
        let (mut t, addr) = server(10, 10);
        let _c = TcpStream::connect(addr).expect("connect");
        let mut poller = Poller::new();
        t.register(&mut poller);
        poller.wait(Some(Duration::from_secs(5))).expect("poll");
        t.accept_ready(now, &poller, |_| false);
        assert_eq!((t.conns.len(), t.stats.refused), (0, 1));
    }

    #[test]
    fn hand_window_closes_connections_without_a_session() {
        let now = Instant::from_secs(100);
        let (mut t, addr) = server(10, 10);
        let _c: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        accept_all(&mut t, now);
        let addrs: Vec<SocketAddr> = t.conns.keys().copied().collect();
        t.on_connected(addrs[0]);
        assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(60)));
        t.handle_timeout(now + Duration::from_secs(59));
        assert_eq!(t.conns.len(), 2);
        t.handle_timeout(now + Duration::from_secs(60));
        assert_eq!(t.take_closed().collect::<Vec<_>>(), vec![addrs[1]]);
        assert!(t.conns.contains_key(&addrs[0]), "connected: kept");
    }

    /// With port-share, a connection that sends nothing is handed to the relay after
    /// [`SNIFF_TIMEOUT`] (and the engine told it is gone); without, it waits for the
    /// hand-window, and the sniff timer never closes an OpenVPN connection.
    #[test]
    fn port_share_takes_silent_connections_after_the_sniff_timeout() {
        let now = Instant::from_secs(100);
        let backend = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let (mut t, addr) = server(10, 10);
        t.port_share = Some(PortShare::new(PortShareOptions {
            target: backend.local_addr().expect("addr"),
            max_connections: 4,
        }));
        let _c: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        accept_all(&mut t, now);
        assert_eq!(t.conns.len(), 2);
        let addrs: Vec<SocketAddr> = t.conns.keys().copied().collect();
        // One turned out to be OpenVPN (decided on its bytes in `read_conn`).
        t.conns.get_mut(&addrs[0]).expect("conn").sniffing = false;
        t.handle_timeout(now + (SNIFF_TIMEOUT - Duration::from_millis(1)));
        assert_eq!(t.conns.len(), 2);
        t.handle_timeout(now + SNIFF_TIMEOUT);
        assert_eq!(t.take_closed().collect::<Vec<_>>(), vec![addrs[1]]);
        assert_eq!(t.stats.port_shared, 1);
        assert!(t.conns.contains_key(&addrs[0]), "OpenVPN: kept");
        let (_relayed, _) = backend.accept().expect("the relay connected to the target");
        t.handle_timeout(now + Duration::from_secs(59));
        assert!(t.conns.contains_key(&addrs[0]), "still in its hand-window");
        t.handle_timeout(now + Duration::from_secs(60));
        assert!(t.conns.is_empty());
    }

    /// A peer that does not read: data beyond the soft limit is dropped, and when the queue
    /// reaches the hard limit the peer is disconnected; other peers are untouched.
    #[test]
    fn a_peer_that_stops_reading_is_dropped_alone() {
        let now = Instant::from_secs(100);
        let (mut t, addr) = server(10, 10);
        let _c: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        accept_all(&mut t, now);
        let addrs: Vec<SocketAddr> = t.conns.keys().copied().collect();
        let (slow, other) = (addrs[0], addrs[1]);
        let mut data = vec![0u8; 1000];
        data[0] = 0x48; // P_DATA_V2
        let mut control = vec![0u8; 1000];
        control[0] = 0x20; // P_CONTROL_V1
        // Queued without flushing: the socket never takes any of it.
        let mut queued = 0;
        while t.stats.queue_dropped == 0 {
            assert!(t.send(slow, &data));
            queued += 1;
            assert!(queued < 1000, "no soft limit");
        }
        assert_eq!(queued - 1, QUEUE_SOFT.div_ceil(1002));
        assert!(t.send(other, &data), "another peer still queues");
        assert!(t.conns[&other].pending() > 0);
        let mut n = 0;
        while t.conns.contains_key(&slow) {
            assert!(t.send(slow, &control));
            n += 1;
            assert!(n < 1000, "no hard limit");
        }
        assert_eq!(t.stats.stalled, 1);
        assert_eq!(t.take_closed().collect::<Vec<_>>(), vec![slow]);
        assert!(!t.send(slow, &data), "no longer a TCP peer");
        assert!(t.conns.contains_key(&other));
        // The other peer's frames leave in one write.
        t.flush(now);
        assert_eq!(t.conns[&other].pending(), 0);
        assert_eq!(t.stats.write_calls, 1);
    }

    /// Records the frames the link opens.
    #[derive(Default)]
    struct Frames(Vec<(SocketAddr, Vec<u8>)>);

    impl DataPath for Frames {
        fn open(
            &mut self,
            _now: Instant,
            from: SocketAddr,
            _stream: bool,
            dgram: &mut [u8],
            _stats: &mut crate::batch::LoopStats,
        ) -> Option<Range<usize>> {
            self.0.push((from, dgram.to_vec()));
            None
        }

        fn seal(
            &mut self,
            _now: Instant,
            _buf: &mut [u8],
            _len: usize,
            _via: crate::batch::Via,
            _stats: &mut crate::batch::LoopStats,
        ) -> Option<(SocketAddr, Range<usize>)> {
            None
        }
    }

    fn turn(link: &mut TcpLink, now: Instant, pump: &mut Pump, path: &mut Frames) {
        let mut poller = Poller::new();
        let t = link.register(&mut poller);
        poller.wait(Some(Duration::from_millis(200))).expect("poll");
        link.on_ready(now, &poller, t, pump, None, path);
    }

    /// Through an HTTP proxy: nothing but the CONNECT leaves before the proxy's 200; then
    /// the frames queued meanwhile go out, and a frame that arrived with the proxy's
    /// headers is opened.
    #[test]
    fn proxy_handshake_holds_frames_and_keeps_the_lookahead() {
        use crate::proxy::{ProxyKind, ProxySpec};
        use std::io::{Read, Write};
        let now = Instant::from_secs(100);
        let proxy = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let paddr = proxy.local_addr().expect("addr");
        let spec = ProxySpec {
            host: "127.0.0.1".into(),
            port: paddr.port(),
            kind: ProxyKind::Http {
                version: "1.0",
                agent: None,
                headers: vec![],
                auth: None,
            },
        };
        let hs = Handshake::new(&spec, "vpn.example", 443).expect("handshake");
        let mut link = TcpLink::connect(paddr, None, 2048)
            .expect("connect")
            .via_proxy(
                "HTTP proxy",
                hs,
                now,
                Duration::from_secs(5),
                "vpn.example:443".into(),
            );
        assert!(link.send(paddr, &[0x38, 1, 2, 3]), "queued");
        let (mut s, _) = proxy.accept().expect("accept");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let mut pump = Pump::new(false);
        let mut path = Frames::default();
        let want = b"CONNECT vpn.example:443 HTTP/1.0\r\nHost: vpn.example\r\n\r\n";
        let mut got = Vec::new();
        for _ in 0..50 {
            turn(&mut link, now, &mut pump, &mut path);
            link.flush();
            s.set_nonblocking(true).expect("nb");
            let mut buf = [0u8; 512];
            if let Ok(n) = s.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            s.set_nonblocking(false).expect("blocking");
            if got.len() >= want.len() {
                break;
            }
        }
        assert_eq!(got, want, "only the CONNECT before the answer");
        assert_eq!(link.deadline(), Some(now + Duration::from_secs(5)));
        // The answer, with the server's first frame right behind the headers.
        s.write_all(
            b"HTTP/1.0 200 Connection established\r\nProxy-agent: test\r\n\r\n\x00\x03\x40\x41\x42",
        )
        .expect("write");
        for _ in 0..50 {
            turn(&mut link, now, &mut pump, &mut path);
            if !path.0.is_empty() {
                break;
            }
        }
        assert!(link.failed().is_none(), "{:?}", link.failed());
        assert_eq!(link.deadline(), None, "through the proxy");
        assert_eq!(path.0, [(paddr, vec![0x40, 0x41, 0x42])]);
        // The frame queued before the answer leaves now.
        let mut frame = [0u8; 6];
        s.read_exact(&mut frame).expect("the queued frame");
        assert_eq!(frame, [0, 4, 0x38, 1, 2, 3]);
    }

    /// A proxy that accepts and never answers fails the link at the deadline.
    #[test]
    fn a_silent_proxy_fails_at_the_deadline() {
        use crate::proxy::{ProxyKind, ProxySpec};
        let now = Instant::from_secs(100);
        let proxy = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let paddr = proxy.local_addr().expect("addr");
        let spec = ProxySpec {
            host: "127.0.0.1".into(),
            port: paddr.port(),
            kind: ProxyKind::Socks5 { auth: None },
        };
        let hs = Handshake::new(&spec, "vpn.example", 443).expect("handshake");
        let mut link = TcpLink::connect(paddr, None, 2048)
            .expect("connect")
            .via_proxy(
                "SOCKS proxy",
                hs,
                now,
                Duration::from_secs(3),
                "vpn.example:443".into(),
            );
        let _s = proxy.accept().expect("accept");
        let mut pump = Pump::new(false);
        let mut path = Frames::default();
        turn(&mut link, now, &mut pump, &mut path);
        link.check_deadline(now + Duration::from_millis(2999));
        assert!(link.failed().is_none());
        link.check_deadline(now + Duration::from_secs(3));
        let why = link.failed().expect("failed");
        assert!(
            why.contains("SOCKS proxy 127.0.0.1:") && why.contains("within 3 s"),
            "{why}"
        );
    }

    /// A peer whose socket takes nothing for [`STALL`] while its queue holds data is
    /// disconnected at the next attempt to write to it.
    #[test]
    fn a_stalled_peer_is_dropped_after_the_stall_time() {
        let now = Instant::from_secs(100);
        let (mut t, addr) = server(10, 10);
        let _c = TcpStream::connect(addr).expect("connect");
        accept_all(&mut t, now);
        let peer = *t.conns.keys().next().expect("accepted");
        let mut data = vec![0u8; 1400];
        data[0] = 0x48;
        // Fill the kernel's buffers: the client never reads.
        let mut at = now;
        for _ in 0..100_000 {
            if t.conns[&peer].pending() > QUEUE_SOFT / 2 {
                break;
            }
            assert!(t.send(peer, &data));
            t.flush(at);
        }
        assert!(t.conns[&peer].pending() > 0, "the socket never filled up");
        at += STALL / 2;
        assert!(t.send(peer, &data));
        t.flush(at);
        assert!(t.conns.contains_key(&peer), "not stalled yet");
        at += STALL;
        assert!(t.send(peer, &data));
        t.flush(at);
        assert!(!t.conns.contains_key(&peer), "stalled: dropped");
        assert_eq!(t.stats.stalled, 1);
    }
}
