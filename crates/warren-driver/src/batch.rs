//! Batched packet I/O shared by the server and client loops (issue 5, `docs/dataplane.md`).
//!
//! The model: every wake-up moves whole batches, on buffers allocated once.
//!
//! * UDP → tun: one receive call fills [`UdpRx`] (with [`UdpIo::Batch`]: `recvmmsg` into
//!   32 GRO buffers of 64 KiB, each holding up to 64 datagrams of one sender; without:
//!   up to [`PLAIN_BATCH`] single datagrams). The loop opens every datagram in place and
//!   queues the plaintext ranges in [`TunTx`], which hands them all to one
//!   [`OffloadTun::send_batch`] (TCP/UDP flows coalesced into GSO writes, zero-copy).
//! * tun → UDP: [`TunRx`] reads super-packets (or single packets) split into slots with
//!   [`DATA_HEADROOM`] free in front; the loop seals each slot in place and queues it in
//!   [`TxQueue`], which sends every destination's datagrams in read order, runs of equal
//!   size as one UDP GSO send (copied back to back into one 64 KiB buffer: one memcpy, an
//!   order of magnitude cheaper than the cipher), the rest one by one.
//!
//! With offloads off (`--no-offload`) the same code runs on a plain tun (one packet per
//! read and write) and a plain UDP socket (one datagram per system call): today's path,
//! kept for kernels and networks where the offloads misbehave, and tested.
//!
//! [`Pump`] is the one loop body every data thread runs (the server's control thread, its
//! data workers, the client), generic over the [`DataPath`] that opens and seals: a server
//! thread's `DataPlane` replica, or the client's engine.
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use tracing::{trace, warn};
use warren_core::{Instant, PeerId};
use warren_io::{
    BatchMeta, BatchUdp, BatchUdpError, BindError, GRO_BUFFER, OffloadTun, RecvMeta, SendSummary,
    TUN_RECV_BATCH, TunBatchError, UDP_RECV_BATCH, UdpBind, UdpSocket,
};
use warren_openvpn::{DATA_HEADROOM, DropReason};

/// What a [`Pump`] opens datagrams and seals tun packets with.
pub(crate) trait DataPath {
    /// Opens `dgram` (from `from`; `stream`: it arrived on the TCP connection of `from`,
    /// which the server tells apart from UDP datagrams claiming the same address) in place
    /// and returns the plaintext range to write to the tun, if any. Everything else
    /// (control, pings, relayed or forwarded datagrams) is the path's to handle; it counts
    /// what it drops in `stats`.
    fn open(
        &mut self,
        now: Instant,
        from: SocketAddr,
        stream: bool,
        dgram: &mut [u8],
        stats: &mut LoopStats,
    ) -> Option<Range<usize>>;

    /// Seals the packet at `buf[DATA_HEADROOM..DATA_HEADROOM + len]` in place and returns
    /// where to send `buf[range]`, if anywhere (the path may hand the packet to another
    /// thread instead, when it comes from this thread's tun: see [`Via`]).
    fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        via: Via,
        stats: &mut LoopStats,
    ) -> Option<(SocketAddr, Range<usize>)>;
}

/// How a tun packet reached [`DataPath::seal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// Read from this thread's tun: the path may hand it (or copies of it) to the threads
    /// that seal for its peers.
    Tun,
    /// Handed to this thread (by another thread, or client-to-client): seal it for the peer
    /// its destination routes to.
    Handed,
    /// Handed to this thread for this peer (one copy of a multicast packet): seal it for
    /// that peer.
    Peer(PeerId),
}

/// Peers on TCP connections: what is sent to them is framed into their connection's
/// write queue instead of the UDP socket (see `tcp.rs`).
pub(crate) trait Streams {
    /// Queues `dgram` for `to` and returns `true` when `to` is a connection's peer (the
    /// datagram may still be dropped by the queue's limits, and is counted there);
    /// `false` when it is not (UDP's).
    fn send(&mut self, to: SocketAddr, dgram: &[u8]) -> bool;
}

/// Where a loop's outgoing datagrams go: its UDP socket, if it has one, and its TCP
/// connections, if any (the transport is chosen per destination).
pub(crate) struct Out<'a> {
    pub udp: Option<&'a UdpIo>,
    pub streams: Option<&'a mut dyn Streams>,
}

impl<'a> Out<'a> {
    /// UDP only.
    pub fn udp(udp: &'a UdpIo) -> Out<'a> {
        Out {
            udp: Some(udp),
            streams: None,
        }
    }

    /// Sends one datagram, to its connection when `dst` is a TCP peer.
    fn send_one(&mut self, dgram: &[u8], dst: SocketAddr, sum: &mut TxSummary) {
        if let Some(st) = self.streams.as_deref_mut()
            && st.send(dst, dgram)
        {
            sum.framed += 1;
            sum.bytes += dgram.len() as u64;
            return;
        }
        match self.udp {
            Some(udp) => send_one(udp, dgram, dst, sum),
            None => sum.errors += 1,
        }
    }
}

/// I/O counters of a loop (the engine counts protocol drops itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopStats {
    pub udp_received: u64,
    /// Frames read from TCP connections.
    pub tcp_received: u64,
    pub udp_truncated: u64,
    pub udp_recv_errors: u64,
    /// Receive system calls that returned data (datagrams per call = the batching).
    pub udp_recv_calls: u64,
    pub udp_sent: u64,
    /// Send system calls (with GSO one carries many datagrams).
    pub udp_send_calls: u64,
    /// `EAGAIN` on send: the socket buffer was full; the datagram was dropped.
    pub udp_send_would_block: u64,
    pub udp_send_errors: u64,
    pub tun_read: u64,
    /// Tun read system calls that returned a packet or super-packet.
    pub tun_read_calls: u64,
    /// Super-packets the split refused (dropped; TCP retransmits).
    pub tun_read_bad: u64,
    pub tun_written: u64,
    /// Tun write system calls (a coalesced write carries many packets).
    pub tun_write_calls: u64,
    /// Not told apart by batched writes any more (counted in `tun_write_errors`); always 0.
    pub tun_write_would_block: u64,
    /// Packets the tun refused (full queue or error), dropped.
    pub tun_write_errors: u64,
    pub engine_dropped: u64,
    /// Tun packets read on one thread's queue and sealed by the thread that owns their peer.
    pub handed_off: u64,
    /// Tun packets dropped while no session was up (client).
    pub dropped_while_down: u64,
    /// Datagrams handed to TCP connections' write queues.
    pub tcp_framed: u64,
    /// Data packets that failed authentication or the replay check (fatal for a TCP
    /// connection: fact sheet §9).
    pub data_auth_failed: u64,
    /// Bytes of the OpenVPN packets received (UDP datagrams, TCP frames).
    pub link_rx_bytes: u64,
    /// Bytes of the OpenVPN packets sent (UDP datagrams, frames queued on TCP connections).
    pub link_tx_bytes: u64,
    /// Bytes of the packets read from the tun.
    pub tun_read_bytes: u64,
    /// Bytes of the packets written to the tun.
    pub tun_written_bytes: u64,
    /// Packets this thread's data path dropped, by reason (index [`DropReason::index`]);
    /// what the server engine drops it counts itself.
    pub dropped: [u64; DropReason::ALL.len()],
}

impl LoopStats {
    /// Adds another thread's counters.
    pub fn add(&mut self, o: &LoopStats) {
        self.udp_received += o.udp_received;
        self.tcp_received += o.tcp_received;
        self.udp_truncated += o.udp_truncated;
        self.udp_recv_errors += o.udp_recv_errors;
        self.udp_recv_calls += o.udp_recv_calls;
        self.udp_sent += o.udp_sent;
        self.udp_send_calls += o.udp_send_calls;
        self.udp_send_would_block += o.udp_send_would_block;
        self.udp_send_errors += o.udp_send_errors;
        self.tun_read += o.tun_read;
        self.tun_read_calls += o.tun_read_calls;
        self.tun_read_bad += o.tun_read_bad;
        self.tun_written += o.tun_written;
        self.tun_write_calls += o.tun_write_calls;
        self.tun_write_would_block += o.tun_write_would_block;
        self.tun_write_errors += o.tun_write_errors;
        self.engine_dropped += o.engine_dropped;
        self.handed_off += o.handed_off;
        self.dropped_while_down += o.dropped_while_down;
        self.tcp_framed += o.tcp_framed;
        self.data_auth_failed += o.data_auth_failed;
        self.link_rx_bytes += o.link_rx_bytes;
        self.link_tx_bytes += o.link_tx_bytes;
        self.tun_read_bytes += o.tun_read_bytes;
        self.tun_written_bytes += o.tun_written_bytes;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
            *a += b;
        }
    }

    /// Counts a packet the data path dropped for `reason`.
    pub(crate) fn drop_for(&mut self, reason: DropReason) {
        self.engine_dropped += 1;
        self.dropped[reason.index()] += 1;
    }
}

/// At most one warning per this interval for each kind of I/O error.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A warning that is printed at most once per [`WARN_EVERY`], with a count of the rest.
#[derive(Debug, Default)]
pub(crate) struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Warns (rate-limited) when `loud`, else traces (a client's errors are routine while
    /// it reconnects).
    fn report(&mut self, loud: bool, now: Instant, what: std::fmt::Arguments<'_>) {
        if !loud {
            trace!("{what}");
        } else if let Some(suppressed) = self.hit(now) {
            warn!("{what} ({suppressed} more since the last warning)");
        }
    }
}

/// One data thread's buffers and counters: UDP batch → open → tun, and tun → seal → UDP.
#[derive(Debug)]
pub(crate) struct Pump {
    /// UDP receive buffers (GRO-sized when batched), opened in place.
    udp_rx: UdpRx,
    /// Plaintext ranges of `udp_rx` waiting for the tun.
    tun_tx: TunTx,
    /// Tun slots with `DATA_HEADROOM` free in front, sealed in place.
    tun_rx: TunRx,
    /// Sealed datagrams of `tun_rx` waiting for the socket.
    udp_tx: TxQueue,
    pub stats: LoopStats,
    /// Warn about I/O errors (rate-limited); otherwise trace them.
    loud: bool,
    warn_send: RateLimited,
    warn_tun_write: RateLimited,
    warn_recv: RateLimited,
}

impl Pump {
    pub fn new(loud: bool) -> Pump {
        Pump {
            udp_rx: UdpRx::default(),
            tun_tx: TunTx::default(),
            tun_rx: TunRx::default(),
            udp_tx: TxQueue::default(),
            stats: LoopStats::default(),
            loud,
            warn_send: RateLimited::default(),
            warn_tun_write: RateLimited::default(),
            warn_recv: RateLimited::default(),
        }
    }

    /// Sizes the UDP buffers for a socket and the tun slots for a tun MTU.
    pub fn fit(&mut self, batched: bool, mtu: u16) {
        self.udp_rx.fit(batched, mtu);
        self.tun_rx.fit(mtu);
    }

    /// Sizes the tun slots only (no socket yet).
    pub fn fit_tun(&mut self, mtu: u16) {
        self.tun_rx.fit(mtu);
    }

    /// One UDP batch: every datagram opened in place by `path`, the plaintext written to
    /// `tun` with one `send_batch` (dropped when there is no tun yet).
    pub fn udp_to_tun<P: DataPath>(
        &mut self,
        now: Instant,
        udp: &UdpIo,
        tun: Option<&mut OffloadTun>,
        path: &mut P,
    ) {
        let got = match self.udp_rx.recv(udp) {
            Ok(b) => b,
            Err(e) => {
                // A client sees ICMP errors (port unreachable) here; its timers decide.
                self.stats.udp_recv_errors += 1;
                self.warn_recv
                    .report(self.loud, now, format_args!("UDP receive error: {e}"));
                return;
            }
        };
        if got.filled == 0 {
            return;
        }
        self.stats.udp_recv_calls += 1;
        // Longer than any packet we send or accept: not ours to decode.
        self.stats.udp_truncated += got.truncated as u64;
        self.stats.udp_received += got.truncated as u64;
        for i in 0..got.filled {
            let (meta, base, buf) = self.udp_rx.buffer_mut(i);
            for r in meta.ranges() {
                self.stats.udp_received += 1;
                self.stats.link_rx_bytes += r.len() as u64;
                let Some(dgram) = buf.get_mut(r.clone()) else {
                    continue;
                };
                let Some(range) = path.open(now, meta.addr, false, dgram, &mut self.stats) else {
                    continue;
                };
                if range.end <= dgram.len() {
                    let at = base + r.start;
                    self.tun_tx.push(at + range.start..at + range.end);
                } else {
                    debug_assert!(false, "opened range outside the datagram");
                }
            }
        }
        let Some(tun) = tun else {
            self.tun_tx.clear();
            return;
        };
        if self.tun_tx.is_empty() {
            return;
        }
        let result = self.tun_tx.flush(tun, self.udp_rx.region());
        self.account_tun(now, tun, result);
    }

    /// Opens one datagram another thread passed on and writes its plaintext to the tun.
    pub fn open_one<P: DataPath>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        dgram: &mut [u8],
        tun: &mut OffloadTun,
        path: &mut P,
    ) {
        self.stats.udp_received += 1;
        self.stats.link_rx_bytes += dgram.len() as u64;
        if let Some(range) = path.open(now, from, false, dgram, &mut self.stats)
            && let Some(pkt) = dgram.get(range)
        {
            let result = tun.send_batch(&[pkt]).map(|s| (s, pkt.len() as u64));
            self.account_tun(now, tun, result);
        }
    }

    /// Counts a tun write: its summary and the bytes of the packets it was given.
    fn account_tun(
        &mut self,
        now: Instant,
        tun: &OffloadTun,
        result: io::Result<(SendSummary, u64)>,
    ) {
        match result {
            Ok((sum, bytes)) => {
                // Refused packets (rare) are taken out at the batch's average size.
                let given = (sum.packets + sum.dropped).max(1) as u64;
                self.stats.tun_written_bytes += bytes * sum.packets as u64 / given;
                self.stats.tun_written += sum.packets as u64;
                self.stats.tun_write_calls += sum.writes as u64;
                self.stats.tun_write_errors += sum.dropped as u64;
            }
            Err(e) => {
                self.stats.tun_write_errors += 1;
                self.warn_tun_write.report(
                    self.loud,
                    now,
                    format_args!("writing to tun {} failed: {e}", tun.name()),
                );
            }
        }
    }

    /// Reads the tun (super-packets split into slots), seals every packet in place and
    /// sends each destination's datagrams in read order (GSO for equal-size runs). Only a
    /// broken device is an error.
    pub fn tun_to_udp<P: DataPath>(
        &mut self,
        now: Instant,
        tun: &mut OffloadTun,
        out: &mut Out<'_>,
        path: &mut P,
    ) -> io::Result<()> {
        let c = self.tun_rx.read(tun)?;
        self.stats.tun_read += c.packets as u64;
        self.stats.tun_read_calls += c.calls as u64;
        self.stats.tun_read_bad += c.bad as u64;
        for i in 0..c.packets {
            let len = self.tun_rx.sizes[i];
            self.stats.tun_read_bytes += len as u64;
            if let Some((dst, range)) = path.seal(
                now,
                &mut self.tun_rx.slots[i],
                len,
                Via::Tun,
                &mut self.stats,
            ) {
                self.udp_tx.push(dst, i, range);
            }
        }
        if out.udp.is_some() || out.streams.is_some() {
            self.flush_udp(now, out);
        } else {
            // No socket (a client between connections): the path sealed nothing.
            self.udp_tx.items.clear();
        }
        Ok(())
    }

    /// Seals packets handed to this thread (other threads' tun packets, client-to-client,
    /// multicast copies for one peer: `Some(peer id)`) in the tun slots and sends them.
    /// Call it after [`Pump::tun_to_udp`].
    pub fn seal_packets<'a, P: DataPath>(
        &mut self,
        now: Instant,
        pkts: impl IntoIterator<Item = (Option<PeerId>, &'a [u8])>,
        out: &mut Out<'_>,
        path: &mut P,
    ) {
        let mut n = 0;
        for (peer, pkt) in pkts {
            if n == self.tun_rx.slots.len() {
                self.flush_udp(now, out);
                n = 0;
            }
            let slot = &mut self.tun_rx.slots[n];
            let Some(room) = slot.get_mut(DATA_HEADROOM..DATA_HEADROOM + pkt.len()) else {
                self.stats.drop_for(DropReason::Malformed);
                continue;
            };
            room.copy_from_slice(pkt);
            let via = peer.map_or(Via::Handed, Via::Peer);
            if let Some((dst, range)) = path.seal(now, slot, pkt.len(), via, &mut self.stats) {
                self.udp_tx.push(dst, n, range);
                n += 1;
            }
        }
        self.flush_udp(now, out);
    }

    fn flush_udp(&mut self, now: Instant, out: &mut Out<'_>) {
        let sum = self.udp_tx.flush(out, &self.tun_rx.slots);
        self.account_tx(now, sum);
    }

    /// Sends one datagram (control packets, the engine's pings).
    pub fn send_one(&mut self, now: Instant, out: &mut Out<'_>, dgram: &[u8], dst: SocketAddr) {
        let mut sum = TxSummary::default();
        out.send_one(dgram, dst, &mut sum);
        self.account_tx(now, sum);
    }

    /// Opens the frames a TCP connection delivered (`frames`: ranges of `buf`) in place,
    /// in order, and writes the plaintext to `tun` in one `send_batch` (dropped when
    /// there is no tun yet). Returns whether a data packet failed authentication or the
    /// replay check, which ends a TCP connection (fact sheet §9: OpenVPN restarts it).
    pub fn open_frames<P: DataPath>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        frames: &[Range<usize>],
        tun: Option<&mut OffloadTun>,
        path: &mut P,
    ) -> bool {
        let failed_before = self.stats.data_auth_failed;
        for r in frames {
            self.stats.tcp_received += 1;
            self.stats.link_rx_bytes += r.len() as u64;
            let Some(dgram) = buf.get_mut(r.clone()) else {
                continue;
            };
            if let Some(range) = path.open(now, from, true, dgram, &mut self.stats)
                && range.end <= dgram.len()
            {
                self.tun_tx.push(r.start + range.start..r.start + range.end);
            }
        }
        let failed = self.stats.data_auth_failed != failed_before;
        let Some(tun) = tun else {
            self.tun_tx.clear();
            return failed;
        };
        if self.tun_tx.is_empty() {
            return failed;
        }
        let result = self.tun_tx.flush(tun, buf);
        self.account_tun(now, tun, result);
        failed
    }

    fn account_tx(&mut self, now: Instant, sum: TxSummary) {
        self.stats.udp_sent += sum.sent;
        self.stats.udp_send_calls += sum.calls;
        self.stats.udp_send_would_block += sum.would_block;
        self.stats.udp_send_errors += sum.errors;
        self.stats.tcp_framed += sum.framed;
        self.stats.link_tx_bytes += sum.bytes;
        if let Some((dst, e)) = sum.first_error {
            self.warn_send.report(
                self.loud,
                now,
                format_args!("UDP send to {dst} failed: {e}"),
            );
        }
    }
}

/// Datagrams per receive call, and tun packets per wake-up, without batching (the loops'
/// historical batch).
pub(crate) const PLAIN_BATCH: usize = 64;
/// Room after a tun packet for ciphers that append (CBC padding + HMAC).
pub(crate) const TAILROOM: usize = 128;
/// Tun slots: two full super-packet splits' worth, so that a wake-up can read several
/// super-packets (a read only starts while [`TUN_RECV_BATCH`] slots are free).
pub(crate) const TUN_SLOTS: usize = 2 * TUN_RECV_BATCH;
/// At most this many tun reads per wake-up (the other descriptors get their turn).
const MAX_TUN_READS: usize = PLAIN_BATCH;
/// Largest UDP GSO send, all segments together: the UDP length field is 16 bits (IPv4
/// leaves 65507 bytes of payload, IPv6 65527); rounded down.
const GSO_MAX_BYTES: usize = 65_000;
/// The kernel's limit of segments per GSO send (UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;

/// The underlay socket: batched (recvmmsg, UDP GRO and GSO) or one datagram per call.
#[derive(Debug)]
pub enum UdpIo {
    Plain(UdpSocket),
    Batch(BatchUdp),
}

impl UdpIo {
    /// Binds like [`UdpSocket::bind`]; with `batched`, turns on GRO/GSO, falling back to a
    /// plain socket (with a warning) when the kernel refuses.
    pub fn bind(b: &UdpBind, batched: bool) -> Result<UdpIo, BindError> {
        if !batched {
            return UdpSocket::bind(b).map(UdpIo::Plain);
        }
        match BatchUdp::bind(b) {
            Ok(u) => Ok(UdpIo::Batch(u)),
            Err(BatchUdpError::Bind(e)) => Err(e),
            Err(BatchUdpError::Setup(e)) => {
                warn!("batched UDP (GRO/GSO) unavailable: {e}; one datagram per system call");
                UdpSocket::bind(b).map(UdpIo::Plain)
            }
        }
    }

    /// Wraps a socket bound elsewhere (one of a steered group); with `batched`, GRO/GSO.
    pub fn from_socket(sock: UdpSocket, batched: bool) -> io::Result<UdpIo> {
        if batched {
            BatchUdp::new(sock).map(UdpIo::Batch)
        } else {
            Ok(UdpIo::Plain(sock))
        }
    }

    /// The plain socket (address, single datagrams).
    pub fn socket(&self) -> &UdpSocket {
        match self {
            UdpIo::Plain(s) => s,
            UdpIo::Batch(b) => b.socket(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket().local_addr()
    }

    pub fn is_batched(&self) -> bool {
        matches!(self, UdpIo::Batch(_))
    }

    /// Datagrams one send may carry (1 without GSO).
    fn gso_segments(&self) -> usize {
        match self {
            UdpIo::Plain(_) => 1,
            UdpIo::Batch(b) => b.max_gso_segments().clamp(1, GSO_MAX_SEGMENTS),
        }
    }

    /// What the socket does, for the start-up log line.
    pub fn describe(&self) -> String {
        match self {
            UdpIo::Plain(_) => "UDP one datagram per call".to_owned(),
            UdpIo::Batch(b) => format!(
                "UDP recvmmsg, GRO {} and GSO {} datagrams per call",
                b.gro_segments(),
                b.max_gso_segments()
            ),
        }
    }

    /// Sends one datagram.
    pub(crate) fn send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<usize> {
        self.socket().send_to(buf, dst)
    }
}

impl AsFd for UdpIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket().as_fd()
    }
}

/// What a tun device does, for the start-up log line.
pub fn describe_tun(tun: &OffloadTun) -> String {
    let s = tun.offload();
    match (s.tcp, s.udp) {
        (false, _) => "tun one packet per read/write".to_owned(),
        (true, false) => "tun offloads TSO (TCP super-packets split and coalesced)".to_owned(),
        (true, true) => {
            "tun offloads TSO+USO (TCP and UDP super-packets split and coalesced)".to_owned()
        }
    }
}

/// What one [`UdpRx::recv`] got.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RxBatch {
    /// Buffers filled (each one or more datagrams of one sender).
    pub filled: usize,
    /// Datagrams longer than a buffer (plain sockets only), dropped.
    pub truncated: usize,
}

/// UDP receive buffers, one contiguous region cut into equal buffers.
#[derive(Debug, Default)]
pub(crate) struct UdpRx {
    region: Vec<u8>,
    buf_len: usize,
    metas: Vec<BatchMeta>,
    plain: Vec<RecvMeta>,
}

impl UdpRx {
    /// Sizes the buffers for `udp` and a tun MTU (reallocates only when they grow).
    pub fn fit(&mut self, batched: bool, mtu: u16) {
        let (count, len) = if batched {
            (UDP_RECV_BATCH, GRO_BUFFER)
        } else {
            // A datagram carries at most one tun packet plus OpenVPN's overhead (opcode,
            // peer-id, packet-id, tag or IV+HMAC, padding): 512 bytes is generous.
            (PLAIN_BATCH, (usize::from(mtu) + 512).max(2048))
        };
        if self.buf_len == len && self.region.len() == count * len {
            return;
        }
        self.region = vec![0u8; count * len];
        self.buf_len = len;
        self.metas = vec![BatchMeta::default(); count];
        self.plain = vec![RecvMeta::default(); count];
    }

    fn count(&self) -> usize {
        self.region.len().checked_div(self.buf_len).unwrap_or(0)
    }

    /// One receive call; `filled == 0` when nothing was queued.
    pub fn recv(&mut self, udp: &UdpIo) -> io::Result<RxBatch> {
        let count = self.count();
        let mut out = RxBatch::default();
        match udp {
            UdpIo::Batch(b) => {
                let count = count.min(UDP_RECV_BATCH);
                let mut it = self.region.chunks_mut(self.buf_len.max(1));
                let mut slices: [IoSliceMut<'_>; UDP_RECV_BATCH] =
                    std::array::from_fn(|_| IoSliceMut::new(it.next().unwrap_or_default()));
                match b.recv_batch(&mut slices[..count], &mut self.metas) {
                    Ok(n) => out.filled = n,
                    Err(e) if is_transient(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            UdpIo::Plain(s) => {
                let count = count.min(PLAIN_BATCH);
                let mut it = self.region.chunks_mut(self.buf_len.max(1));
                let mut bufs: [&mut [u8]; PLAIN_BATCH] =
                    std::array::from_fn(|_| it.next().unwrap_or_default());
                let n = match s.recv_batch(&mut bufs[..count], &mut self.plain) {
                    Ok(n) => n,
                    Err(e) if is_transient(&e) => 0,
                    Err(e) => return Err(e),
                };
                for (m, p) in self.metas.iter_mut().zip(&self.plain[..n]) {
                    // A cut datagram is not ours to decode: an empty buffer, counted.
                    let len = if p.truncated { 0 } else { p.len };
                    out.truncated += usize::from(p.truncated);
                    *m = BatchMeta {
                        addr: p.addr,
                        len,
                        stride: len,
                        dst_ip: None,
                    };
                }
                out.filled = n;
            }
        }
        Ok(out)
    }

    /// Buffer `i` of the last receive: its meta, where it starts in [`UdpRx::region`], and
    /// its bytes (to be opened in place).
    pub fn buffer_mut(&mut self, i: usize) -> (BatchMeta, usize, &mut [u8]) {
        let meta = self.metas[i];
        let base = i * self.buf_len;
        let len = meta.len.min(self.buf_len);
        (meta, base, &mut self.region[base..base + len])
    }

    /// All buffers, for writing the opened packets out.
    pub fn region(&self) -> &[u8] {
        &self.region
    }
}

/// Counters of [`TunRx::read`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TunReadCounts {
    pub packets: usize,
    /// Read calls that returned a packet or super-packet.
    pub calls: usize,
    /// Super-packets the split refused (malformed, too many segments): dropped.
    pub bad: usize,
}

/// Tun receive slots, each with [`DATA_HEADROOM`] in front and [`TAILROOM`] behind.
#[derive(Debug, Default)]
pub(crate) struct TunRx {
    pub slots: Vec<Vec<u8>>,
    pub sizes: Vec<usize>,
}

impl TunRx {
    /// Slots for packets up to `mtu` bytes (reallocates only when the MTU grows).
    pub fn fit(&mut self, mtu: u16) {
        let len = DATA_HEADROOM + usize::from(mtu) + TAILROOM;
        if self.slots.len() == TUN_SLOTS && self.slots.first().is_some_and(|s| s.len() >= len) {
            return;
        }
        self.slots = vec![vec![0u8; len]; TUN_SLOTS];
        self.sizes = vec![0; TUN_SLOTS];
    }

    /// Reads until the device is empty, the slots are full or [`MAX_TUN_READS`] reads were
    /// made; packet `i` is at `slots[i][DATA_HEADROOM..DATA_HEADROOM + sizes[i]]`. Only a
    /// broken device is an error.
    pub fn read(&mut self, tun: &mut OffloadTun) -> io::Result<TunReadCounts> {
        // A super-packet needs up to TUN_RECV_BATCH slots; a plain read one.
        let per_read = if tun.offload().enabled() {
            TUN_RECV_BATCH
        } else {
            1
        };
        let mut c = TunReadCounts::default();
        let mut reads = 0;
        while c.packets + per_read <= self.slots.len() && reads < MAX_TUN_READS {
            reads += 1;
            let n = c.packets;
            match tun.recv_batch(&mut self.slots[n..], &mut self.sizes[n..], DATA_HEADROOM) {
                Ok(0) => break,
                Ok(k) => {
                    c.calls += 1;
                    c.packets += k;
                }
                Err(TunBatchError::Io(e)) if is_transient(&e) => break,
                Err(TunBatchError::Io(e)) => return Err(e),
                Err(e) => {
                    // The kernel's super-packet is gone; TCP will retransmit it.
                    c.calls += 1;
                    c.bad += 1;
                    trace!("tun super-packet dropped: {e}");
                }
            }
        }
        Ok(c)
    }
}

/// `EAGAIN` or `EINTR`: nothing to do now.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// A sealed datagram waiting in a tun slot.
#[derive(Debug, Clone)]
struct Sealed {
    dst: SocketAddr,
    slot: usize,
    range: Range<usize>,
}

/// What [`TxQueue::flush`] did.
#[derive(Debug, Default)]
pub(crate) struct TxSummary {
    pub sent: u64,
    /// Send calls made.
    pub calls: u64,
    /// Datagrams dropped because the socket buffer was full.
    pub would_block: u64,
    pub errors: u64,
    /// Datagrams handed to TCP connections instead.
    pub framed: u64,
    /// Bytes of the datagrams sent or framed.
    pub bytes: u64,
    /// The first hard error, for the (rate-limited) warning.
    pub first_error: Option<(SocketAddr, io::Error)>,
}

/// Sealed datagrams of one tun batch, sent per destination at [`TxQueue::flush`].
#[derive(Debug)]
pub(crate) struct TxQueue {
    items: Vec<Sealed>,
    done: Vec<bool>,
    /// Back-to-back datagrams of one GSO send.
    gso: Vec<u8>,
}

impl Default for TxQueue {
    fn default() -> TxQueue {
        TxQueue {
            items: Vec::with_capacity(TUN_SLOTS),
            done: Vec::with_capacity(TUN_SLOTS),
            gso: Vec::with_capacity(GSO_MAX_BYTES),
        }
    }
}

impl TxQueue {
    /// Queues the datagram sealed at `slots[slot][range]` for `dst`.
    pub fn push(&mut self, dst: SocketAddr, slot: usize, range: Range<usize>) {
        self.items.push(Sealed { dst, slot, range });
    }

    /// Sends everything queued (each destination's datagrams in queue order) and empties
    /// the queue.
    pub fn flush(&mut self, out: &mut Out<'_>, slots: &[Vec<u8>]) -> TxSummary {
        let mut sum = TxSummary::default();
        let n = self.items.len();
        if n == 0 {
            return sum;
        }
        self.done.clear();
        self.done.resize(n, false);
        // Datagrams of TCP peers go to their connections, in order, one frame each (the
        // connection coalesces its queue into one write).
        if let Some(st) = out.streams.as_deref_mut() {
            for i in 0..n {
                if self.done[i] {
                    continue;
                }
                let dst = self.items[i].dst;
                let mut first = true;
                for j in i..n {
                    if self.done[j] || self.items[j].dst != dst {
                        continue;
                    }
                    let it = &self.items[j];
                    let Some(dgram) = slots.get(it.slot).and_then(|s| s.get(it.range.clone()))
                    else {
                        self.done[j] = true;
                        continue;
                    };
                    if !st.send(dst, dgram) {
                        if first {
                            // Not a TCP peer: leave this destination to the UDP pass.
                            break;
                        }
                        debug_assert!(false, "a destination changed transport mid-batch");
                    }
                    first = false;
                    self.done[j] = true;
                    sum.framed += 1;
                    sum.bytes += dgram.len() as u64;
                }
            }
        }
        let Some(udp) = out.udp else {
            sum.errors += self.done.iter().filter(|d| !**d).count() as u64;
            self.items.clear();
            return sum;
        };
        let max_segs = udp.gso_segments();
        for i in 0..n {
            if self.done[i] {
                continue;
            }
            let dst = self.items[i].dst;
            // The run being built: `segs` datagrams of `seg` bytes (the last may be
            // shorter, which closes the run) back to back in `self.gso`.
            let mut segs = 0usize;
            let mut seg = 0usize;
            let mut closed = false;
            self.gso.clear();
            for j in i..n {
                if self.done[j] || self.items[j].dst != dst {
                    continue;
                }
                self.done[j] = true;
                let it = &self.items[j];
                let Some(dgram) = slots.get(it.slot).and_then(|s| s.get(it.range.clone())) else {
                    debug_assert!(false, "sealed range outside its slot");
                    continue;
                };
                if max_segs <= 1 {
                    send_one(udp, dgram, dst, &mut sum);
                    continue;
                }
                if segs > 0
                    && (closed
                        || dgram.len() > seg
                        || segs >= max_segs
                        || self.gso.len() + dgram.len() > GSO_MAX_BYTES)
                {
                    send_run(udp, &self.gso, seg, segs, dst, &mut sum);
                    self.gso.clear();
                    segs = 0;
                }
                if segs == 0 {
                    seg = dgram.len();
                }
                self.gso.extend_from_slice(dgram);
                segs += 1;
                closed = dgram.len() < seg;
            }
            if segs > 0 {
                send_run(udp, &self.gso, seg, segs, dst, &mut sum);
            }
        }
        self.items.clear();
        sum
    }
}

fn send_one(udp: &UdpIo, dgram: &[u8], dst: SocketAddr, sum: &mut TxSummary) {
    sum.calls += 1;
    match udp.send_to(dgram, dst) {
        Ok(_) => {
            sum.sent += 1;
            sum.bytes += dgram.len() as u64;
        }
        Err(e) if warren_io::is_would_block(&e) => sum.would_block += 1,
        Err(e) => {
            sum.errors += 1;
            sum.first_error.get_or_insert((dst, e));
        }
    }
}

/// Sends `segs` datagrams of `seg` bytes (the last may be shorter) lying in `buf`.
fn send_run(
    udp: &UdpIo,
    buf: &[u8],
    seg: usize,
    segs: usize,
    dst: SocketAddr,
    sum: &mut TxSummary,
) {
    let UdpIo::Batch(b) = udp else {
        for d in buf.chunks(seg.max(1)) {
            send_one(udp, d, dst, sum);
        }
        return;
    };
    if segs == 1 {
        send_one(udp, buf, dst, sum);
        return;
    }
    sum.calls += 1;
    let total = segs as u64;
    match b.send_gso(dst, None, buf, seg.max(1)) {
        Ok(k) => {
            let k = (k as u64).min(total);
            sum.sent += k;
            sum.bytes += if k == total {
                buf.len() as u64
            } else {
                k * seg as u64
            };
            sum.would_block += total - k;
        }
        Err(e) if warren_io::is_would_block(&e) => sum.would_block += total,
        Err(e) => {
            sum.errors += total;
            sum.first_error.get_or_insert((dst, e));
        }
    }
}

/// Plaintext packets of one UDP batch, written to the tun together.
#[derive(Debug)]
pub(crate) struct TunTx {
    /// Ranges in [`UdpRx::region`].
    ranges: Vec<Range<usize>>,
    /// The slice list handed to `send_batch`; kept empty between batches so that its
    /// allocation is reused (see [`recycle`]).
    scratch: Vec<&'static [u8]>,
}

/// Datagrams one UDP batch can hold: 32 GRO buffers of up to 64 datagrams.
const MAX_BATCH_DATAGRAMS: usize = UDP_RECV_BATCH * 64;

impl Default for TunTx {
    fn default() -> TunTx {
        TunTx {
            ranges: Vec::with_capacity(MAX_BATCH_DATAGRAMS),
            scratch: Vec::with_capacity(MAX_BATCH_DATAGRAMS),
        }
    }
}

impl TunTx {
    pub fn push(&mut self, range: Range<usize>) {
        self.ranges.push(range);
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Writes the queued packets (lying in `region`) with one `send_batch` and empties the
    /// queue; also returns the bytes it was given. `Err` only when the device failed.
    pub fn flush(&mut self, tun: &mut OffloadTun, region: &[u8]) -> io::Result<(SendSummary, u64)> {
        if self.ranges.is_empty() {
            return Ok((SendSummary::default(), 0));
        }
        let mut pkts: Vec<&[u8]> = recycle(std::mem::take(&mut self.scratch));
        pkts.extend(self.ranges.iter().filter_map(|r| region.get(r.clone())));
        self.ranges.clear();
        let bytes = pkts.iter().map(|p| p.len() as u64).sum();
        let result = tun.send_batch(&pkts).map(|s| (s, bytes));
        self.scratch = recycle(pkts);
        result
    }

    /// Drops the queued packets (no tun yet).
    pub fn clear(&mut self) -> usize {
        let n = self.ranges.len();
        self.ranges.clear();
        n
    }
}

/// An empty vector of slices with another lifetime, reusing the allocation (the standard
/// library collects `into_iter().map()` in place when the element layout is the same; if it
/// ever did not, this costs one allocation per batch, not per packet).
fn recycle<'b>(mut v: Vec<&[u8]>) -> Vec<&'b [u8]> {
    v.clear();
    v.into_iter().map(|_| -> &'b [u8] { &[] }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket as StdUdp;
    use std::time::Duration;
    use warren_io::UdpFamily;

    fn bind(batched: bool) -> UdpIo {
        UdpIo::bind(
            &UdpBind {
                family: UdpFamily::V4,
                local: Some("127.0.0.1".parse().expect("ip")),
                port: 0,
                sndbuf: None,
                rcvbuf: None,
            },
            batched,
        )
        .expect("bind")
    }

    fn recv_all(peer: &StdUdp, want: usize) -> Vec<Vec<u8>> {
        peer.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < want {
            match peer.recv(&mut buf) {
                Ok(n) => out.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        out
    }

    /// Datagrams for two destinations, sizes mixed: every destination gets its own in
    /// order, whatever runs the queue forms (with GSO and without).
    #[test]
    fn tx_queue_keeps_order_per_destination() {
        for batched in [true, false] {
            let udp = bind(batched);
            let a = StdUdp::bind("127.0.0.1:0").expect("a");
            let b = StdUdp::bind("127.0.0.1:0").expect("b");
            let (da, db) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
            let sizes = [1000usize, 1000, 1000, 700, 1000, 1000, 1200, 1200, 80, 1000];
            let mut slots = Vec::new();
            let mut q = TxQueue::default();
            let mut want_a = Vec::new();
            let mut want_b = Vec::new();
            for (i, &len) in sizes.iter().chain(sizes.iter()).enumerate() {
                let mut s = vec![0u8; DATA_HEADROOM + 1500];
                let d = &mut s[4..4 + len];
                d.fill(i as u8);
                let dst = if i % 3 == 0 { db } else { da };
                if dst == da {
                    want_a.push(d.to_vec());
                } else {
                    want_b.push(d.to_vec());
                }
                slots.push(s);
                q.push(dst, i, 4..4 + len);
            }
            let sum = q.flush(&mut Out::udp(&udp), &slots);
            assert_eq!(sum.sent as usize, sizes.len() * 2, "{sum:?}");
            assert_eq!(sum.errors, 0);
            if batched && udp.gso_segments() > 1 {
                assert!(sum.calls < sum.sent, "GSO used: {sum:?}");
            }
            assert_eq!(recv_all(&a, want_a.len()), want_a, "batched={batched}");
            assert_eq!(recv_all(&b, want_b.len()), want_b, "batched={batched}");
            // The queue is empty again.
            assert_eq!(q.flush(&mut Out::udp(&udp), &slots).sent, 0);
        }
    }

    #[test]
    fn udp_rx_receives_in_both_modes() {
        for batched in [true, false] {
            let udp = bind(batched);
            let mut rx = UdpRx::default();
            rx.fit(udp.is_batched(), 1500);
            assert_eq!(rx.recv(&udp).expect("empty").filled, 0);
            let peer = StdUdp::bind("127.0.0.1:0").expect("peer");
            let mut sent = Vec::new();
            for i in 0..5u8 {
                let d = vec![i; 300];
                peer.send_to(&d, udp.local_addr()).expect("send");
                sent.push(d);
            }
            let mut got = Vec::new();
            for _ in 0..100 {
                let b = rx.recv(&udp).expect("recv");
                for i in 0..b.filled {
                    let (meta, base, buf) = rx.buffer_mut(i);
                    assert_eq!(meta.addr, peer.local_addr().expect("addr"));
                    let ranges: Vec<_> = meta.ranges().collect();
                    let parts: Vec<Vec<u8>> =
                        ranges.iter().map(|r| buf[r.clone()].to_vec()).collect();
                    for (r, p) in ranges.iter().zip(parts) {
                        assert_eq!(&rx.region()[base + r.start..base + r.end], &p[..]);
                        got.push(p);
                    }
                }
                if got.len() == sent.len() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(got, sent, "batched={batched}");
        }
    }

    #[test]
    fn recycle_keeps_the_allocation_and_empties() {
        let v: Vec<&'static [u8]> = Vec::with_capacity(300);
        let data = vec![1u8, 2, 3];
        let mut w: Vec<&[u8]> = recycle(v);
        assert!(w.is_empty() && w.capacity() >= 300);
        w.push(&data);
        let back: Vec<&'static [u8]> = recycle(w);
        assert!(back.is_empty() && back.capacity() >= 300);
    }
}
