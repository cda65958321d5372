//! Data workers: the multi-core server data plane (`docs/dataplane.md`, "Threads").
//!
//! The server loop stays the control thread and also moves data for the peers it owns.
//! Each extra worker owns one queue of the multi-queue tun device, one UDP socket of a
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
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, trace, warn};
use warren_core::Instant;
use warren_io::{Clock, Interest, OffloadTun, Poller};
use warren_openvpn::{
    DATA_HEADROOM, DataChange, DataEvent, DataPlane, DataPlaneConfig, DatagramOutcome, EncapOutcome,
};

use crate::batch::{TunRx, TunTx, TxQueue, UdpIo, UdpRx};
use crate::server_loop::LoopStats;

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
pub(crate) fn owner(peer_id: u32, data_v2: bool, threads: usize) -> usize {
    match warren_core::PeerId::new(peer_id) {
        Some(p) if data_v2 && threads > 1 => warren_io::steered_index(p, threads),
        _ => 0,
    }
}

/// Tun packets on their way to the thread that seals for their peer: `[len: u16 BE][packet]`
/// back to back, one allocation per batch.
#[derive(Debug, Default)]
pub(crate) struct PacketBatch(Vec<u8>);

impl PacketBatch {
    pub fn push(&mut self, pkt: &[u8]) {
        if let Ok(len) = u16::try_from(pkt.len()) {
            self.0.extend_from_slice(&len.to_be_bytes());
            self.0.extend_from_slice(pkt);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.0.as_slice();
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*len));
            let pkt = tail.get(..len)?;
            rest = &tail[len..];
            Some(pkt)
        })
    }
}

/// To a worker.
#[derive(Debug)]
pub(crate) enum ToWorker {
    Change(DataChange),
    Packets(PacketBatch),
    /// A P_DATA_V2 datagram of one of this worker's peers that arrived on another socket
    /// (UDP GRO merges a sender's datagrams before the steering program runs, which then
    /// sees only the first: net/ipv4/udp_offload.c, udp.c).
    Datagram {
        from: SocketAddr,
        bytes: Vec<u8>,
    },
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

/// From a worker to the control thread.
#[derive(Debug)]
pub(crate) enum FromWorker {
    Event(DataEvent),
    /// A datagram that is not P_DATA_V2 of a known peer: the engine's to handle.
    Datagram {
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Tun packets for peers the control thread seals for.
    Packets(PacketBatch),
    /// The worker stopped on a fatal error (its tun queue broke).
    Failed(String),
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
    /// Index 1.. (the control thread is 0).
    mailboxes: Vec<Mailbox<ToWorker>>,
    handles: Vec<JoinHandle<LoopStats>>,
    /// The control thread's inbox.
    pub inbox: Inbox<FromWorker>,
    /// Handoffs being collected for each thread (index 0 unused).
    outgoing: Vec<PacketBatch>,
    /// Threads that were given datagrams since the last flush (to wake).
    forwarded: Vec<bool>,
}

impl Workers {
    /// Starts one thread per [`WorkerIo`]. Thread `i + 1` gets `ios[i]`.
    pub fn start(ios: Vec<WorkerIo>, config: DataPlaneConfig, clock: Clock) -> io::Result<Workers> {
        let threads = ios.len() + 1;
        let (to_control, inbox) = mailbox::<FromWorker>()?;
        let mut mailboxes = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..ios.len() {
            let (m, i) = mailbox::<ToWorker>()?;
            mailboxes.push(m);
            inboxes.push(i);
        }
        let mut handles = Vec::new();
        for (k, (io, inbox)) in ios.into_iter().zip(inboxes).enumerate() {
            let index = k + 1;
            let peers = mailboxes
                .iter()
                .map(Mailbox::try_clone)
                .collect::<io::Result<Vec<_>>>()?;
            let control = to_control.try_clone()?;
            let worker = Worker::new(index, threads, io, config, inbox, control, peers);
            let handle = std::thread::Builder::new()
                .name(format!("warren-data-{index}"))
                .spawn(move || worker.run(clock))?;
            handles.push(handle);
        }
        Ok(Workers {
            mailboxes,
            handles,
            inbox,
            outgoing: (0..threads).map(|_| PacketBatch::default()).collect(),
            forwarded: vec![false; threads],
        })
    }

    /// Threads moving data, the control thread included.
    pub fn threads(&self) -> usize {
        self.mailboxes.len() + 1
    }

    /// Sends one change to every worker (without waking them: see [`Workers::wake_all`]).
    pub fn publish(&self, change: &DataChange) {
        for m in &self.mailboxes {
            m.post(ToWorker::Change(change.clone()));
        }
    }

    pub fn wake_all(&self) {
        for m in &self.mailboxes {
            m.wake();
        }
    }

    /// Gives a datagram to the worker that owns its peer (`owner` ≥ 1).
    pub fn forward_datagram(&mut self, owner: usize, from: SocketAddr, bytes: Vec<u8>) {
        if let Some(m) = owner.checked_sub(1).and_then(|i| self.mailboxes.get(i)) {
            m.post(ToWorker::Datagram { from, bytes });
            self.forwarded[owner] = true;
        }
    }

    /// Queues a tun packet for thread `owner` (≥ 1).
    pub fn hand_off(&mut self, owner: usize, pkt: &[u8]) {
        if let Some(b) = self.outgoing.get_mut(owner) {
            b.push(pkt);
        }
    }

    /// Sends the collected handoffs and wakes whoever got something.
    pub fn flush_handoffs(&mut self) {
        for (i, batch) in self.outgoing.iter_mut().enumerate().skip(1) {
            let packets = !batch.is_empty();
            let datagrams = std::mem::take(&mut self.forwarded[i]);
            if !packets && !datagrams {
                continue;
            }
            if let Some(m) = self.mailboxes.get(i - 1) {
                if packets {
                    m.post(ToWorker::Packets(std::mem::take(batch)));
                }
                m.wake();
            }
        }
    }

    /// Stops every worker and adds their counters to `stats`.
    pub fn stop(self, stats: &mut LoopStats) {
        for m in &self.mailboxes {
            m.post(ToWorker::Stop);
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
    threads: usize,
    plane: DataPlane,
    tun: OffloadTun,
    udp: UdpIo,
    udp_rx: UdpRx,
    tun_tx: TunTx,
    tun_rx: TunRx,
    udp_tx: TxQueue,
    inbox: Inbox<ToWorker>,
    control: Mailbox<FromWorker>,
    /// Mailboxes of threads 1.. (index i - 1), for handoffs.
    peers: Vec<Mailbox<ToWorker>>,
    /// Handoffs being collected per thread (index = thread).
    outgoing: Vec<PacketBatch>,
    /// Handoffs received, sealed after the tun batch.
    incoming: Vec<PacketBatch>,
    /// Datagrams of this worker's peers that arrived elsewhere.
    strays: Vec<(SocketAddr, Vec<u8>)>,
    stats: LoopStats,
    wake_control: bool,
}

impl Worker {
    fn new(
        index: usize,
        threads: usize,
        io: WorkerIo,
        config: DataPlaneConfig,
        inbox: Inbox<ToWorker>,
        control: Mailbox<FromWorker>,
        peers: Vec<Mailbox<ToWorker>>,
    ) -> Worker {
        let mtu = io.tun.mtu();
        let mut udp_rx = UdpRx::default();
        udp_rx.fit(io.udp.is_batched(), mtu);
        let mut tun_rx = TunRx::default();
        tun_rx.fit(mtu);
        Worker {
            index,
            threads,
            plane: DataPlane::new(config),
            tun: io.tun,
            udp: io.udp,
            udp_rx,
            tun_tx: TunTx::default(),
            tun_rx,
            udp_tx: TxQueue::default(),
            inbox,
            control,
            peers,
            outgoing: (0..threads).map(|_| PacketBatch::default()).collect(),
            incoming: Vec::new(),
            strays: Vec::new(),
            stats: LoopStats::default(),
            wake_control: false,
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
            self.open_strays(now);
            if poller.is_readable(t_udp) {
                self.read_udp(now);
            }
            if poller.is_readable(t_tun)
                && let Err(e) = self.read_tun(now)
            {
                self.fail(format!("reading from tun {}: {e}", self.tun.name()));
                break;
            }
            // Client-to-client packets this thread seals itself.
            let own = std::mem::take(&mut self.outgoing[self.index]);
            if !own.is_empty() {
                self.incoming.push(own);
            }
            self.seal_incoming(now);
            self.finish_turn();
        }
        debug!(worker = self.index, "data worker stopped");
        self.stats
    }

    fn fail(&mut self, why: String) {
        self.control.post(FromWorker::Failed(why));
        self.control.wake();
    }

    /// Applies changes, collects handoffs. `false` on Stop or when the control thread is gone.
    fn drain_inbox(&mut self) -> bool {
        loop {
            match self.inbox.rx.try_recv() {
                Ok(ToWorker::Change(c)) => self.plane.apply(c),
                Ok(ToWorker::Packets(b)) => self.incoming.push(b),
                Ok(ToWorker::Datagram { from, bytes }) => self.strays.push((from, bytes)),
                Ok(ToWorker::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn read_udp(&mut self, now: Instant) {
        let got = match self.udp_rx.recv(&self.udp) {
            Ok(b) => b,
            Err(e) => {
                self.stats.udp_recv_errors += 1;
                trace!(worker = self.index, "UDP receive error: {e}");
                return;
            }
        };
        if got.filled == 0 {
            return;
        }
        self.stats.udp_recv_calls += 1;
        self.stats.udp_truncated += got.truncated as u64;
        let mut forwarded = 0;
        for i in 0..got.filled {
            let (meta, base, buf) = self.udp_rx.buffer_mut(i);
            for r in meta.ranges() {
                self.stats.udp_received += 1;
                let Some(dgram) = buf.get_mut(r.clone()) else {
                    continue;
                };
                let dest = datagram_owner(dgram, self.threads);
                if dest != self.index {
                    // Not ours (GRO merged it behind a datagram that was): to its owner.
                    if forwarded < MAX_FORWARD_PER_WAKE {
                        forwarded += 1;
                        let bytes = dgram.to_vec();
                        if dest == 0 {
                            self.control.post(FromWorker::Datagram {
                                from: meta.addr,
                                bytes,
                            });
                            self.wake_control = true;
                        } else if let Some(m) = self.peers.get(dest - 1) {
                            m.post(ToWorker::Datagram {
                                from: meta.addr,
                                bytes,
                            });
                            m.wake();
                        }
                    } else {
                        self.stats.engine_dropped += 1;
                    }
                    continue;
                }
                match self.plane.open(now, meta.addr, dgram) {
                    DatagramOutcome::Tun(range) if range.end <= dgram.len() => {
                        let at = base + r.start;
                        self.tun_tx.push(at + range.start..at + range.end);
                    }
                    DatagramOutcome::ClientToClient(range) if range.end <= dgram.len() => {
                        // Sealed by the owner of the destination peer (maybe this
                        // thread, after the batch: see `run`).
                        let pkt = &dgram[range];
                        match self.plane.route(pkt).and_then(|p| self.plane.peer(p)) {
                            Some(p) => {
                                let o = owner(p.peer_id, p.data_v2, self.threads);
                                if let Some(b) = self.outgoing.get_mut(o) {
                                    b.push(pkt);
                                }
                            }
                            None => self.stats.engine_dropped += 1,
                        }
                    }
                    DatagramOutcome::Tun(_) | DatagramOutcome::ClientToClient(_) => {
                        debug_assert!(false, "data plane returned a range outside the datagram");
                    }
                    DatagramOutcome::Consumed => {}
                    DatagramOutcome::Dropped(reason) => {
                        self.stats.engine_dropped += 1;
                        trace!(from = %meta.addr, ?reason, "datagram dropped");
                    }
                }
            }
        }
        if !self.tun_tx.is_empty() {
            match self.tun_tx.flush(&mut self.tun, self.udp_rx.region()) {
                Ok(sum) => {
                    self.stats.tun_written += sum.packets as u64;
                    self.stats.tun_write_calls += sum.writes as u64;
                    self.stats.tun_write_errors += sum.dropped as u64;
                }
                Err(e) => {
                    self.stats.tun_write_errors += 1;
                    trace!(worker = self.index, "tun write failed: {e}");
                }
            }
        }
    }

    /// Opens the datagrams other threads passed on, one by one (rare: see
    /// [`ToWorker::Datagram`]).
    fn open_strays(&mut self, now: Instant) {
        for (from, mut bytes) in std::mem::take(&mut self.strays) {
            self.stats.udp_received += 1;
            match self.plane.open(now, from, &mut bytes) {
                DatagramOutcome::Tun(range) => {
                    if let Some(p) = bytes.get(range) {
                        match self.tun.send_batch(&[p]) {
                            Ok(sum) => {
                                self.stats.tun_written += sum.packets as u64;
                                self.stats.tun_write_calls += sum.writes as u64;
                                self.stats.tun_write_errors += sum.dropped as u64;
                            }
                            Err(_) => self.stats.tun_write_errors += 1,
                        }
                    }
                }
                DatagramOutcome::ClientToClient(range) => {
                    if let Some(pkt) = bytes.get(range)
                        && let Some(p) = self.plane.route(pkt).and_then(|p| self.plane.peer(p))
                    {
                        let o = owner(p.peer_id, p.data_v2, self.threads);
                        if let Some(b) = self.outgoing.get_mut(o) {
                            b.push(pkt);
                        }
                    }
                }
                DatagramOutcome::Consumed => {}
                DatagramOutcome::Dropped(_) => self.stats.engine_dropped += 1,
            }
        }
    }

    fn read_tun(&mut self, now: Instant) -> io::Result<()> {
        let c = self.tun_rx.read(&mut self.tun)?;
        self.stats.tun_read += c.packets as u64;
        self.stats.tun_read_calls += c.calls as u64;
        self.stats.tun_read_bad += c.bad as u64;
        for i in 0..c.packets {
            let len = self.tun_rx.sizes[i];
            let Some(pkt) = self.tun_rx.slots[i].get(DATA_HEADROOM..DATA_HEADROOM + len) else {
                continue;
            };
            let o = match self.plane.route(pkt).and_then(|p| self.plane.peer(p)) {
                Some(p) => owner(p.peer_id, p.data_v2, self.threads),
                None => {
                    self.stats.engine_dropped += 1;
                    continue;
                }
            };
            if o != self.index {
                self.stats.handed_off += 1;
                if let Some(b) = self.outgoing.get_mut(o) {
                    b.push(pkt);
                }
                continue;
            }
            match self.plane.seal(now, &mut self.tun_rx.slots[i], len) {
                EncapOutcome::Send { dst, range } => self.udp_tx.push(dst, i, range),
                EncapOutcome::Dropped(reason) => {
                    self.stats.engine_dropped += 1;
                    trace!(?reason, "tun packet dropped");
                }
            }
        }
        self.flush_udp();
        Ok(())
    }

    fn flush_udp(&mut self) {
        let sum = self.udp_tx.flush(&self.udp, &self.tun_rx.slots);
        self.stats.udp_sent += sum.sent;
        self.stats.udp_send_calls += sum.calls;
        self.stats.udp_send_would_block += sum.would_block;
        self.stats.udp_send_errors += sum.errors;
    }

    /// Seals the packets other threads handed over (the tun slots are free again).
    fn seal_incoming(&mut self, now: Instant) {
        if self.incoming.is_empty() {
            return;
        }
        let batches = std::mem::take(&mut self.incoming);
        let mut n = 0;
        for batch in &batches {
            for pkt in batch.iter() {
                if n == self.tun_rx.slots.len() {
                    self.flush_udp();
                    n = 0;
                }
                let slot = &mut self.tun_rx.slots[n];
                let Some(dst) = slot.get_mut(DATA_HEADROOM..DATA_HEADROOM + pkt.len()) else {
                    self.stats.engine_dropped += 1;
                    continue;
                };
                dst.copy_from_slice(pkt);
                match self.plane.seal(now, slot, pkt.len()) {
                    EncapOutcome::Send { dst, range } => {
                        self.udp_tx.push(dst, n, range);
                        n += 1;
                    }
                    EncapOutcome::Dropped(_) => self.stats.engine_dropped += 1,
                }
            }
        }
        self.flush_udp();
        self.incoming = batches;
        self.incoming.clear();
    }

    /// Events and handoffs go out once per wake-up.
    fn finish_turn(&mut self) {
        while let Some(e) = self.plane.poll_event() {
            self.control.post(FromWorker::Event(e));
            self.wake_control = true;
        }
        for (i, batch) in self.outgoing.iter_mut().enumerate() {
            if batch.is_empty() || i == self.index {
                continue;
            }
            let b = std::mem::take(batch);
            if i == 0 {
                self.control.post(FromWorker::Packets(b));
                self.wake_control = true;
            } else if let Some(m) = self.peers.get(i - 1) {
                m.post(ToWorker::Packets(b));
                m.wake();
            }
        }
        if std::mem::take(&mut self.wake_control) {
            self.control.wake();
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
        let v: Vec<&[u8]> = b.iter().collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], &[1, 2, 3]);
        assert!(v[1].is_empty());
        assert_eq!(v[2].len(), 1500);
    }

    #[test]
    fn owners_follow_the_steering_and_v1_peers_stay_on_the_control_thread() {
        for id in 0..100 {
            let p = warren_core::PeerId::new(id).expect("a defined peer id");
            assert_eq!(owner(id, true, 3), warren_io::steered_index(p, 3));
            assert_eq!(owner(id, false, 3), 0);
            assert_eq!(owner(id, true, 1), 0);
        }
    }
}
