//! Data workers: the multi-core server data plane (`docs/dataplane.md`, "Threads").
//!
//! The server loop stays the control thread and also moves data for the peers it owns,
//! exactly like a worker: every data thread runs the same [`Pump`] over its own [`Shard`]
//! (a [`DataPlane`] replica and the packets it hands to other threads); the control
//! thread's shard also gives control datagrams to the engine. Each extra worker owns one queue of the multi-queue tun device, one UDP socket of a
//! `SO_REUSEPORT` group whose steering program routes every P_DATA_V2 datagram by peer id
//! ([`warren_io::steered_index`]), and one [`DataPlane`] replica of the engine's data state.
//!
//! Ownership keeps each peer's packets in order without a lock on the data path:
//!
//! * a peer's datagrams all land on its owner's socket (steered by peer id, which is
//!   stable across address changes), and only the owner's replay windows see them;
//! * only the owner seals for a peer. A tun packet read on another thread's queue (the
//!   kernel picks the queue per flow; flows a worker wrote come back to its queue, see tun.c
//!   `tun_flow_update`/`tun_automq_select_queue`) is handed to the owner in a batch, so
//!   one peer's packet ids go out in the order they were assigned. Peers without P_DATA_V2
//!   (and everything else that is not P_DATA_V2 with a defined peer id: control packets,
//!   P_DATA_V1) belong to the control thread (index 0), as the steering program sends
//!   them to socket 0.
//!
//! The control thread publishes changes (new keys, float, removal) to every worker before it
//! sends anything that could make a peer use them; a worker applies its queue before it
//! reads packets. Workers send back what only the engine may decide ([`DataEvent`]s) and the
//! datagrams that are not theirs.
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, trace, warn};
use warren_core::{Instant, PeerId};
use warren_io::{Clock, Interest, OffloadTun, Poller};
use warren_openvpn::{
    DATA_HEADROOM, DataChange, DataEvent, DataPlane, DataPlaneConfig, DatagramOutcome, DropReason,
    EncapOutcome,
};

use crate::batch::{DataPath, LoopStats, Out, Pump, UdpIo, Via};
use crate::metrics::{Metrics, ThreadPublisher};

/// Longest pause of a worker's `poll` (it also wakes on every message).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Datagrams a worker forwards to the control thread per wake-up (the rest is dropped:
/// a flood of undecodable datagrams must not become a flood of copies).
const MAX_FORWARD_PER_WAKE: usize = 256;

/// The tun queue and UDP socket of one extra data worker, opened before privileges are
/// dropped.
#[derive(Debug)]
pub struct WorkerIo {
    pub tun: OffloadTun,
    pub udp: UdpIo,
}

/// Which thread seals and opens for a peer: `steered_index(peer_id, n)` for P_DATA_V2
/// peers, the control thread (0) for the rest.
pub(crate) fn owner(peer_id: PeerId, data_v2: bool, threads: usize) -> usize {
    if data_v2 && threads > 1 {
        warren_io::steered_index(peer_id, threads)
    } else {
        0
    }
}

/// Tun packets on their way to the thread that seals for their peer:
/// `[peer: u32 BE][len: u16 BE][packet]` back to back, one allocation per batch. The peer
/// is a peer id for a copy of a multicast packet, or [`ROUTED`] for a packet sealed for the
/// peer its destination routes to.
#[derive(Debug, Default)]
pub(crate) struct PacketBatch(Vec<u8>);

/// A batch entry routed by its destination (peer ids stop below 0x00FF_FFFF).
const ROUTED: u32 = u32::MAX;

impl PacketBatch {
    /// A packet for the peer its destination routes to.
    pub fn push(&mut self, pkt: &[u8]) {
        self.push_entry(ROUTED, pkt);
    }

    /// A packet for `peer_id`, whatever its destination.
    pub fn push_to(&mut self, peer_id: PeerId, pkt: &[u8]) {
        self.push_entry(peer_id.get(), pkt);
    }

    fn push_entry(&mut self, peer: u32, pkt: &[u8]) {
        if let Ok(len) = u16::try_from(pkt.len()) {
            self.0.extend_from_slice(&peer.to_be_bytes());
            self.0.extend_from_slice(&len.to_be_bytes());
            self.0.extend_from_slice(pkt);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries: the peer they are for (`None`: routed by destination) and the packet.
    pub fn iter(&self) -> impl Iterator<Item = (Option<PeerId>, &[u8])> {
        let mut rest = self.0.as_slice();
        std::iter::from_fn(move || {
            let (peer, tail) = rest.split_first_chunk::<4>()?;
            let (len, tail) = tail.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*len));
            let pkt = tail.get(..len)?;
            rest = &tail[len..];
            let peer = u32::from_be_bytes(*peer);
            Some((PeerId::new(peer), pkt))
        })
    }
}

/// Between data threads (thread 0 is the control thread).
#[derive(Debug)]
pub(crate) enum Msg {
    /// A data-state change, to every worker.
    Change(DataChange),
    /// Tun packets for the receiver's peers, to seal.
    Packets(PacketBatch),
    /// A datagram that is the receiver's: a P_DATA_V2 datagram of one of its peers that
    /// arrived on another socket (UDP GRO merges a sender's datagrams before the steering
    /// program runs, which then sees only the first: net/ipv4/udp_offload.c, udp.c), or,
    /// for the control thread, anything else.
    Datagram {
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// What only the engine may decide, to the control thread.
    Event(DataEvent),
    /// A worker stopped on a fatal error (its tun queue broke), to the control thread.
    Failed(String),
    Stop,
}

/// The thread a datagram belongs to: its steered socket for P_DATA_V2 of a defined peer,
/// the control thread (0) for everything else.
pub(crate) fn datagram_owner(dgram: &[u8], threads: usize) -> usize {
    if threads > 1 && DataPlane::wants(dgram) {
        warren_io::datagram_index(dgram, threads)
    } else {
        0
    }
}

/// One data thread's share of the server's data path: its [`DataPlane`] replica and what
/// it passes to other threads.
#[derive(Debug)]
pub(crate) struct Shard {
    /// This thread (0: the control thread).
    index: usize,
    threads: usize,
    pub plane: DataPlane,
    /// Tun packets for each thread to seal (index = thread; this thread's own entry holds
    /// client-to-client packets it seals after the batch).
    pub outgoing: Vec<PacketBatch>,
    /// Datagrams of other threads' peers (UDP GRO merged them behind one of ours):
    /// (owner, source, bytes).
    pub forward: Vec<(usize, SocketAddr, Vec<u8>)>,
}

impl Shard {
    pub fn new(index: usize, threads: usize, config: DataPlaneConfig) -> Shard {
        Shard {
            index,
            threads,
            plane: DataPlane::new(config),
            outgoing: (0..threads).map(|_| PacketBatch::default()).collect(),
            forward: Vec::new(),
        }
    }

    /// Opens a datagram (`stream`: a TCP frame) of one of this thread's peers with the
    /// plane, passing anything else that is this thread's (control packets) to `control`;
    /// other threads' datagrams are queued in [`Shard::forward`].
    pub fn open(
        &mut self,
        now: Instant,
        from: SocketAddr,
        stream: bool,
        dgram: &mut [u8],
        stats: &mut LoopStats,
        control: impl FnOnce(&mut DataPlane, &mut [u8]) -> DatagramOutcome,
    ) -> Option<Range<usize>> {
        let mut dest = datagram_owner(dgram, self.threads);
        if dest != 0 && self.is_stream_peer(dgram) {
            // The peer id of a TCP peer: only the control thread opens it (its replay
            // windows are the ones that count).
            dest = 0;
        }
        if dest != self.index {
            if self.forward.len() < MAX_FORWARD_PER_WAKE {
                // Its owner counts it as received ([`Pump::open_one`]), not this thread.
                if stream {
                    stats.tcp_received -= 1;
                } else {
                    stats.udp_received -= 1;
                }
                stats.link_rx_bytes -= dgram.len() as u64;
                self.forward.push((dest, from, dgram.to_vec()));
            } else {
                stats.drop_for(DropReason::Overloaded);
            }
            return None;
        }
        let data = DataPlane::is_data(dgram);
        let outcome = if data {
            self.plane.open(now, from, dgram)
        } else {
            control(&mut self.plane, dgram)
        };
        match outcome {
            DatagramOutcome::Tun(range) => Some(range),
            DatagramOutcome::ClientToClient(range) => {
                // Sealed by the owner of the destination peer (maybe this thread, after
                // the batch).
                let owner = dgram
                    .get(range)
                    .and_then(|pkt| Some((pkt, self.owner_of(pkt)?.1)));
                match owner {
                    Some((pkt, o)) => self.outgoing[o].push(pkt),
                    None => stats.drop_for(DropReason::NoRoute),
                }
                None
            }
            DatagramOutcome::Reply { peer_id } => {
                // Sealed by the owner of the sender, like client-to-client.
                match self.plane.peer(peer_id) {
                    Some(p) => {
                        let o = owner(peer_id, p.data_v2 && !p.stream, self.threads);
                        self.outgoing[o].push_to(peer_id, self.plane.reply());
                    }
                    None => stats.engine_dropped += 1,
                }
                None
            }
            DatagramOutcome::Consumed => None,
            DatagramOutcome::Dropped(reason) => {
                if data {
                    stats.drop_for(reason);
                } else {
                    // The engine counted it (`Server::counters`).
                    stats.engine_dropped += 1;
                }
                if matches!(reason, DropReason::DecryptFailed | DropReason::Replay) && data {
                    stats.data_auth_failed += 1;
                }
                trace!(%from, ?reason, "datagram dropped");
                None
            }
        }
    }

    /// The peer a tun packet routes to and the thread that seals for it.
    /// A P_DATA_V2 datagram whose peer id is a TCP peer's.
    fn is_stream_peer(&self, dgram: &[u8]) -> bool {
        let [_, a, b, c, ..] = *dgram else {
            return false;
        };
        PeerId::new(u32::from_be_bytes([0, a, b, c]))
            .and_then(|id| self.plane.peer(id))
            .is_some_and(|p| p.stream)
    }

    fn owner_of(&self, pkt: &[u8]) -> Option<(PeerId, usize)> {
        let peer_id = self.plane.route(pkt)?;
        let p = self.plane.peer(peer_id)?;
        // A TCP peer belongs to the control thread, which reads and writes its connection.
        Some((
            peer_id,
            owner(peer_id, p.data_v2 && !p.stream, self.threads),
        ))
    }

    /// Seals a tun packet for its peer, or hands it to the thread that owns the peer
    /// (one route lookup either way). A multicast packet read from the tun is copied to
    /// every peer (multi.c `multi_bcast`), each copy handed to its owner, this thread's own
    /// sealed after the batch.
    pub fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        via: Via,
        stats: &mut LoopStats,
    ) -> Option<(SocketAddr, Range<usize>)> {
        if let Via::Peer(peer_id) = via {
            return match self.plane.seal_to(now, peer_id, buf, len) {
                EncapOutcome::Send { dst, range } => Some((dst, range)),
                EncapOutcome::Dropped(reason) => {
                    stats.engine_dropped += 1;
                    trace!(?reason, "tun packet dropped");
                    None
                }
            };
        }
        let pkt = buf.get(DATA_HEADROOM..DATA_HEADROOM + len)?;
        if via == Via::Tun && DataPlane::is_multicast(pkt) {
            for p in self.plane.peers() {
                let o = owner(p.peer_id, p.data_v2 && !p.stream, self.threads);
                self.outgoing[o].push_to(p.peer_id, pkt);
            }
            return None;
        }
        let route = self.owner_of(pkt);
        let outcome = match route {
            Some((_, o)) if o != self.index && via == Via::Tun => {
                stats.handed_off += 1;
                self.outgoing[o].push(pkt);
                return None;
            }
            Some((peer_id, _)) => self.plane.seal_to(now, peer_id, buf, len),
            None => EncapOutcome::Dropped(DropReason::NoRoute),
        };
        match outcome {
            EncapOutcome::Send { dst, range } => Some((dst, range)),
            EncapOutcome::Dropped(reason) => {
                stats.drop_for(reason);
                trace!(?reason, "tun packet dropped");
                None
            }
        }
    }

    /// Posts what this thread collected for others (a worker's plane events, forwarded
    /// datagrams, handoffs) to `mailboxes` (index = thread) and wakes whoever got some.
    pub fn flush(&mut self, mailboxes: &[Mailbox<Msg>]) {
        // Bit i: thread i got something (at most 4 threads; more are woken anyway).
        let mut woken = 0u64;
        let bit = |i: usize| 1u64.checked_shl(i as u32).unwrap_or(u64::MAX);
        let mut post = |to: usize, m: Msg| {
            if let Some(mb) = mailboxes.get(to) {
                mb.post(m);
                woken |= bit(to);
            }
        };
        if self.index != 0 {
            while let Some(e) = self.plane.poll_event() {
                post(0, Msg::Event(e));
            }
        }
        for (dest, from, bytes) in self.forward.drain(..) {
            post(dest, Msg::Datagram { from, bytes });
        }
        for (i, batch) in self.outgoing.iter_mut().enumerate() {
            if i != self.index && !batch.is_empty() {
                post(i, Msg::Packets(std::mem::take(batch)));
            }
        }
        for (i, m) in mailboxes.iter().enumerate() {
            if woken & bit(i) != 0 {
                m.wake();
            }
        }
    }

    /// Takes the client-to-client packets this thread seals itself.
    pub fn take_own(&mut self) -> PacketBatch {
        std::mem::take(&mut self.outgoing[self.index])
    }

    /// Gives back the (sealed) batch [`Shard::take_own`] took, to reuse its allocation.
    pub fn put_own(&mut self, mut own: PacketBatch) {
        own.0.clear();
        let slot = &mut self.outgoing[self.index];
        if slot.is_empty() {
            *slot = own;
        }
    }
}

/// A worker's shard has no engine: every datagram that is its own is data.
impl DataPath for Shard {
    fn open(
        &mut self,
        now: Instant,
        from: SocketAddr,
        stream: bool,
        dgram: &mut [u8],
        stats: &mut LoopStats,
    ) -> Option<Range<usize>> {
        Shard::open(self, now, from, stream, dgram, stats, |_, _| {
            DatagramOutcome::Dropped(DropReason::UnknownOpcode)
        })
    }

    fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        via: Via,
        stats: &mut LoopStats,
    ) -> Option<(SocketAddr, Range<usize>)> {
        Shard::seal(self, now, buf, len, via, stats)
    }
}

/// A channel plus a socket pair to wake the receiver's `poll`.
#[derive(Debug)]
pub(crate) struct Mailbox<T> {
    tx: Sender<T>,
    wake: UnixStream,
}

/// The receiving end of a [`Mailbox`].
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    pub rx: Receiver<T>,
    pub wake: UnixStream,
}

pub(crate) fn mailbox<T>() -> io::Result<(Mailbox<T>, Inbox<T>)> {
    let (tx, rx) = mpsc::channel();
    let (a, b) = UnixStream::pair()?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((Mailbox { tx, wake: a }, Inbox { rx, wake: b }))
}

impl<T> Mailbox<T> {
    /// Queues without waking (call [`Mailbox::wake`] once per batch of messages).
    pub fn post(&self, m: T) -> bool {
        self.tx.send(m).is_ok()
    }

    pub fn try_clone(&self) -> io::Result<Mailbox<T>> {
        Ok(Mailbox {
            tx: self.tx.clone(),
            wake: self.wake.try_clone()?,
        })
    }

    /// A full wake socket already means "wake up": `WouldBlock` is fine.
    pub fn wake(&self) {
        let _ = (&self.wake).write(&[1]);
    }
}

impl<T> Inbox<T> {
    /// Empties the wake socket (the messages are read from the channel).
    pub fn clear_wake(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// The running extra workers, seen from the control thread.
#[derive(Debug)]
pub(crate) struct Workers {
    /// Every thread's mailbox (index = thread; 0 is the control thread).
    pub mailboxes: Vec<Mailbox<Msg>>,
    handles: Vec<JoinHandle<LoopStats>>,
    /// The control thread's inbox.
    pub inbox: Inbox<Msg>,
}

impl Workers {
    /// Starts one thread per [`WorkerIo`]. Thread `i + 1` gets `ios[i]`, and publishes its
    /// counters to `metrics` when given.
    pub fn start(
        ios: Vec<WorkerIo>,
        config: DataPlaneConfig,
        clock: Clock,
        metrics: Option<&Metrics>,
    ) -> io::Result<Workers> {
        let threads = ios.len() + 1;
        let (mailboxes, mut inboxes): (Vec<_>, Vec<_>) = (0..threads)
            .map(|_| mailbox::<Msg>())
            .collect::<io::Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let mut handles = Vec::new();
        for (index, (io, inbox)) in (1..).zip(ios.into_iter().zip(inboxes.drain(1..))) {
            let all = mailboxes
                .iter()
                .map(Mailbox::try_clone)
                .collect::<io::Result<Vec<_>>>()?;
            let mut worker = Worker::new(index, threads, io, config, inbox, all);
            worker.publisher = metrics.map(|m| m.thread(index, clock.now()));
            let handle = std::thread::Builder::new()
                .name(format!("warren-data-{index}"))
                .spawn(move || worker.run(clock))?;
            handles.push(handle);
        }
        let inbox = inboxes.pop().expect("the control thread's inbox");
        Ok(Workers {
            mailboxes,
            handles,
            inbox,
        })
    }

    /// Threads moving data, the control thread included.
    pub fn threads(&self) -> usize {
        self.mailboxes.len()
    }

    /// Sends one change to every worker (without waking them: see [`Workers::wake_all`]).
    pub fn publish(&self, change: &DataChange) {
        for m in &self.mailboxes[1..] {
            m.post(Msg::Change(change.clone()));
        }
    }

    pub fn wake_all(&self) {
        for m in &self.mailboxes[1..] {
            m.wake();
        }
    }

    /// Stops every worker and adds their counters to `stats`.
    pub fn stop(self, stats: &mut LoopStats) {
        for m in &self.mailboxes[1..] {
            m.post(Msg::Stop);
            m.wake();
        }
        for h in self.handles {
            match h.join() {
                Ok(s) => stats.add(&s),
                Err(_) => warn!("a data worker panicked"),
            }
        }
    }
}

struct Worker {
    index: usize,
    shard: Shard,
    pump: Pump,
    tun: OffloadTun,
    udp: UdpIo,
    inbox: Inbox<Msg>,
    /// Every thread's mailbox (index = thread).
    mailboxes: Vec<Mailbox<Msg>>,
    /// Handoffs received, sealed after the tun batch.
    incoming: Vec<PacketBatch>,
    /// Datagrams of this worker's peers that arrived elsewhere.
    strays: Vec<(SocketAddr, Vec<u8>)>,
    /// Where its counters go for the metrics endpoint, if there is one.
    publisher: Option<ThreadPublisher>,
}

impl Worker {
    fn new(
        index: usize,
        threads: usize,
        io: WorkerIo,
        config: DataPlaneConfig,
        inbox: Inbox<Msg>,
        mailboxes: Vec<Mailbox<Msg>>,
    ) -> Worker {
        // Workers warn about I/O errors like the control thread (rate-limited).
        let mut pump = Pump::new(true);
        pump.fit(io.udp.is_batched(), io.tun.mtu());
        Worker {
            index,
            shard: Shard::new(index, threads, config),
            pump,
            tun: io.tun,
            udp: io.udp,
            inbox,
            mailboxes,
            incoming: Vec::new(),
            strays: Vec::new(),
            publisher: None,
        }
    }

    fn run(mut self, clock: Clock) -> LoopStats {
        debug!(worker = self.index, "data worker started");
        let mut poller = Poller::new();
        let t_udp = poller.add(self.udp.as_fd(), Interest::Readable);
        let t_tun = poller.add(self.tun.as_fd(), Interest::Readable);
        let t_wake = poller.add(self.inbox.wake.as_fd(), Interest::Readable);
        loop {
            if let Err(e) = poller.wait(Some(IDLE_WAIT)) {
                self.fail(format!("waiting for I/O: {e}"));
                break;
            }
            if poller.is_readable(t_wake) {
                self.inbox.clear_wake();
            }
            // Changes first: a datagram read below may already use a key published now.
            if !self.drain_inbox() {
                break;
            }
            let now = clock.now();
            // Datagrams other threads passed on, one by one (rare: see Msg::Datagram).
            for (from, mut bytes) in std::mem::take(&mut self.strays) {
                self.pump
                    .open_one(now, from, &mut bytes, &mut self.tun, &mut self.shard);
            }
            if poller.is_readable(t_udp) {
                self.pump
                    .udp_to_tun(now, &self.udp, Some(&mut self.tun), &mut self.shard);
            }
            if poller.is_readable(t_tun)
                && let Err(e) = self.pump.tun_to_udp(
                    now,
                    &mut self.tun,
                    &mut Out::udp(&self.udp),
                    &mut self.shard,
                )
            {
                self.fail(format!("reading from tun {}: {e}", self.tun.name()));
                break;
            }
            // Handoffs, and client-to-client packets this thread seals itself.
            let own = self.shard.take_own();
            if !own.is_empty() || !self.incoming.is_empty() {
                let pkts = self
                    .incoming
                    .iter()
                    .chain([&own])
                    .flat_map(PacketBatch::iter);
                self.pump
                    .seal_packets(now, pkts, &mut Out::udp(&self.udp), &mut self.shard);
                self.incoming.clear();
            }
            self.shard.put_own(own);
            // Events, handoffs and forwarded datagrams go out once per wake-up.
            self.shard.flush(&self.mailboxes);
            if let Some(p) = &mut self.publisher {
                let end = clock.now();
                p.worked(now, end);
                p.maybe_publish(end, &self.pump.stats);
            }
        }
        debug!(worker = self.index, "data worker stopped");
        self.pump.stats
    }

    fn fail(&mut self, why: String) {
        self.mailboxes[0].post(Msg::Failed(why));
        self.mailboxes[0].wake();
    }

    /// Applies changes, collects handoffs. `false` on Stop or when the control thread is gone.
    fn drain_inbox(&mut self) -> bool {
        loop {
            match self.inbox.rx.try_recv() {
                Ok(Msg::Change(c)) => self.shard.plane.apply(c),
                Ok(Msg::Packets(b)) => self.incoming.push(b),
                Ok(Msg::Datagram { from, bytes }) => self.strays.push((from, bytes)),
                Ok(Msg::Event(_) | Msg::Failed(_)) => {}
                Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_batches_round_trip() {
        let mut b = PacketBatch::default();
        assert!(b.is_empty());
        b.push(&[1, 2, 3]);
        b.push(&[]);
        b.push(&[9; 1500]);
        let seven = PeerId::new(7).expect("peer id");
        b.push_to(seven, &[4, 5]);
        let v: Vec<(Option<PeerId>, &[u8])> = b.iter().collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0], (None, &[1u8, 2, 3][..]));
        assert!(v[1].1.is_empty());
        assert_eq!(v[2].1.len(), 1500);
        assert_eq!(v[3], (Some(seven), &[4u8, 5][..]));
    }

    /// An IPv6 packet from the server's tun to `dst` (behind DATA_HEADROOM).
    fn ipv6_from_tun(dst: &str) -> Vec<u8> {
        let mut buf = vec![0u8; DATA_HEADROOM + 48];
        let p = &mut buf[DATA_HEADROOM..];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&8u16.to_be_bytes());
        p[6] = 17;
        p[7] = 1;
        p[8..24].copy_from_slice(
            &"fd00:8::1"
                .parse::<std::net::Ipv6Addr>()
                .expect("ip")
                .octets(),
        );
        p[24..40].copy_from_slice(&dst.parse::<std::net::Ipv6Addr>().expect("ip").octets());
        buf
    }

    fn peer(peer_id: u32, ip6: &str) -> warren_openvpn::PeerData {
        use std::sync::Arc;
        use warren_crypto::{CipherKind, DataKeys, Key2, Role};
        let key = warren_openvpn::DataKeyRef {
            key_id: warren_core::KeyId::ZERO,
            keys: Arc::new(DataKeys::new(
                CipherKind::Aes256Gcm,
                &Key2::from_bytes([7; 256]),
                Role::Server,
            )),
            tx: Arc::new(warren_openvpn::TxCounter::default()),
        };
        warren_openvpn::PeerData {
            peer_id: PeerId::new(peer_id).expect("peer id"),
            generation: 1,
            addr: SocketAddr::from(([192, 0, 2, peer_id as u8], 1194)),
            vpn_ip: None,
            vpn_ip6: Some(ip6.parse().expect("ip")),
            iroutes: Vec::new(),
            data_v2: true,
            stream: false,
            send: Some(key.clone()),
            recv: vec![key],
            activity: Arc::new(warren_openvpn::Activity::new(Instant::ZERO)),
            access: None,
        }
    }

    #[test]
    fn ipv6_multicast_from_the_tun_goes_to_every_peer() {
        let threads = 2;
        let mut shard = Shard::new(
            0,
            threads,
            DataPlaneConfig {
                client_to_client: false,
                mss: None,
                block_ipv6: None,
            },
        );
        let ids: Vec<u32> = (1..=6).collect();
        for &id in &ids {
            shard.plane.apply(DataChange::Update(peer(
                id,
                &format!("fd00:8::{:x}", 0x1000 + id),
            )));
        }
        let mut stats = LoopStats::default();
        let mut buf = ipv6_from_tun("ff02::1");
        assert_eq!(
            shard.seal(Instant::ZERO, &mut buf, 48, Via::Tun, &mut stats),
            None
        );
        // One copy per peer, each with its owner, each marked with its peer.
        let mut got: Vec<(usize, u32)> = Vec::new();
        for (t, batch) in shard.outgoing.iter().enumerate() {
            for (peer, pkt) in batch.iter() {
                assert_eq!(pkt, &buf[DATA_HEADROOM..]);
                let id = peer.expect("a copy for one peer");
                assert_eq!(t, owner(id, true, threads));
                got.push((t, id.get()));
            }
        }
        got.sort_by_key(|&(_, id)| id);
        assert_eq!(got.iter().map(|&(_, id)| id).collect::<Vec<_>>(), ids);
        // The owner seals a copy for its peer; a unicast packet still routes.
        let own = shard.take_own();
        for (peer, pkt) in own.iter() {
            let mut slot = vec![0u8; DATA_HEADROOM + pkt.len() + 64];
            slot[DATA_HEADROOM..DATA_HEADROOM + pkt.len()].copy_from_slice(pkt);
            let id = peer.expect("peer");
            let sent = shard.seal(
                Instant::ZERO,
                &mut slot,
                pkt.len(),
                Via::Peer(id),
                &mut stats,
            );
            assert_eq!(
                sent.map(|(dst, _)| dst),
                Some(SocketAddr::from(([192, 0, 2, id.get() as u8], 1194)))
            );
        }
        let id = own
            .iter()
            .next()
            .and_then(|(p, _)| p)
            .expect("one own copy at least");
        let mut buf = ipv6_from_tun(&format!("fd00:8::{:x}", 0x1000 + id.get()));
        assert!(
            shard
                .seal(Instant::ZERO, &mut buf, 48, Via::Tun, &mut stats)
                .is_some()
        );
    }

    /// A datagram of another thread's peer is passed on and counted as received by its
    /// owner only: the thread that read it takes its count back.
    #[test]
    fn a_passed_on_datagram_is_counted_by_its_owner_only() {
        let config = DataPlaneConfig {
            client_to_client: false,
            mss: None,
            block_ipv6: None,
        };
        let mut shard = Shard::new(0, 2, config);
        // P_DATA_V2, key id 0, peer id 1: thread 1's.
        let mut dgram = [0u8; 32];
        dgram[..4].copy_from_slice(&[0x48, 0, 0, 1]);
        assert_eq!(datagram_owner(&dgram, 2), 1);
        let mut stats = LoopStats {
            udp_received: 1,
            link_rx_bytes: 32,
            ..LoopStats::default()
        };
        let from = SocketAddr::from(([192, 0, 2, 1], 1194));
        let opened = shard.open(
            Instant::ZERO,
            from,
            false,
            &mut dgram,
            &mut stats,
            |_, _| DatagramOutcome::Consumed,
        );
        assert_eq!(opened, None);
        assert_eq!((stats.udp_received, stats.link_rx_bytes), (0, 0));
        assert_eq!(shard.forward.len(), 1);
    }

    #[test]
    fn owners_follow_the_steering_and_v1_peers_stay_on_the_control_thread() {
        for id in 0..100 {
            let p = PeerId::new(id).expect("a defined peer id");
            assert_eq!(owner(p, true, 3), warren_io::steered_index(p, 3));
            assert_eq!(owner(p, false, 3), 0);
            assert_eq!(owner(p, true, 1), 0);
        }
    }
}
