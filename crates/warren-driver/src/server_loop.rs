//! The single-threaded server loop: one `poll(2)` over the UDP socket, the tun device, the
//! signal descriptor and (with external authentication) the auth worker's wake socket,
//! driving a [`warren_openvpn::Server`].
//!
//! Data moves in batches ([`crate::batch`]): a wake-up reads a whole UDP batch (GRO
//! buffers), opens every datagram in place and writes the plaintext to the tun with one
//! coalescing `send_batch`; and reads tun super-packets split into slots, seals each slot
//! in place and sends every client's datagrams with UDP GSO. With offloads off the same
//! code moves one packet per system call.
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tracing::{debug, error, info, trace, warn};
use warren_core::Instant;
use warren_io::{Clock, Interest, OffloadTun, Poller, Signal, Signals};
use warren_openvpn::{
    AuthDecision, ClientStatus, DATA_HEADROOM, DatagramOutcome, DisconnectReason, EncapOutcome,
    Server, ServerEvent,
};

use crate::auth::{AuthRequest, AuthWorker, FromWorker};
use crate::batch::{self, TAILROOM, TunRx, TunTx, TxQueue, TxSummary, UdpIo, UdpRx};
use crate::status::{self, StatusFile, StatusRow, StatusSnapshot, StatusVersion};
use crate::workers::{self, FromWorker as WorkerMsg, WorkerIo, Workers};
use std::os::fd::AsFd;

/// Datagrams or tun packets handled per wakeup and direction without batching.
pub const BATCH: usize = batch::PLAIN_BATCH;
/// Bound on `poll_transmit` drained in one go; the rest waits for the next turn.
const MAX_TRANSMITS_PER_TURN: usize = 4096;
/// Bound on events drained in one go.
const MAX_EVENTS_PER_TURN: usize = 4096;
/// At most one warning per this interval for each kind of I/O error.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// `status FILE N` and `status-version`.
#[derive(Debug)]
pub struct StatusOptions {
    /// Opened before privileges are dropped ([`StatusFile::open`]).
    pub file: StatusFile,
    pub interval: Duration,
    pub version: StatusVersion,
}

/// Everything besides the engine, the tun device and the socket.
#[derive(Debug)]
pub struct ServerLoopOptions {
    pub clock: Clock,
    /// Created on the main thread before any other thread (see [`Signals::new`]).
    pub signals: Signals,
    pub status: Option<StatusOptions>,
    /// How long to keep running after SIGINT/SIGTERM so `RESTART` notifications and their
    /// acknowledgements get through (OpenVPN waits about 2 s with explicit-exit-notify).
    pub shutdown_grace: Duration,
    /// `TITLE` of the status file.
    pub title: String,
    /// The authentication worker, required when the engine runs with `external_auth`
    /// (without it every `AuthRequest` is refused).
    pub auth: Option<AuthWorker>,
    /// Extra data workers (tun queue + steered socket each; see [`crate::workers`]). Empty:
    /// the loop moves all data itself.
    pub workers: Vec<WorkerIo>,
}

#[derive(Debug, Error)]
pub enum DriverError {
    #[error("waiting for I/O: {0}")]
    Poll(#[source] io::Error),
    #[error("reading the signal descriptor: {0}")]
    Signal(#[source] io::Error),
    #[error("reading from tun device {name}: {source}")]
    TunRead { name: String, source: io::Error },
    /// The authentication thread died (a bug): nobody could be let in any more, so the
    /// server stops rather than run without it.
    #[error("the authentication worker stopped unexpectedly")]
    AuthWorker,
    #[error("starting the data workers: {0}")]
    StartWorkers(#[source] io::Error),
    #[error("data worker failed: {0}")]
    Worker(String),
}

/// I/O counters of the loop (the engine counts protocol drops itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopStats {
    pub udp_received: u64,
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
}

impl LoopStats {
    /// Adds another thread's counters.
    pub fn add(&mut self, o: &LoopStats) {
        self.udp_received += o.udp_received;
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
    }
}

/// A warning that is printed at most once per [`WARN_EVERY`], with a count of the rest.
#[derive(Debug, Default)]
struct RateLimited {
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
}

struct Loop {
    server: Server,
    tun: OffloadTun,
    udp: UdpIo,
    opts: ServerLoopOptions,
    stats: LoopStats,
    /// UDP receive buffers (GRO-sized when batched), opened in place.
    udp_rx: UdpRx,
    /// Plaintext ranges of `udp_rx` waiting for the tun.
    tun_tx: TunTx,
    /// Tun slots with `DATA_HEADROOM` free in front, sealed in place.
    tun_rx: TunRx,
    /// Sealed datagrams of `tun_rx` waiting for the socket.
    udp_tx: TxQueue,
    /// Scratch for client-to-client re-encapsulation.
    c2c_buf: Vec<u8>,
    /// Scratch for `poll_transmit`.
    tx_buf: Vec<u8>,
    warn_send: RateLimited,
    warn_tun_write: RateLimited,
    warn_recv: RateLimited,
    next_status: Option<Instant>,
    /// The last status write failed (warned once, until it works again).
    status_failing: bool,
    shutdown_deadline: Option<Instant>,
    /// Set when a message to the auth worker could not be delivered.
    auth_gone: bool,
    /// Scratch for messages from the auth worker.
    auth_msgs: Vec<FromWorker>,
    /// The extra data workers, if any.
    workers: Option<Workers>,
    /// A worker failed; the loop stops with this.
    worker_failed: Option<String>,
}

/// Runs the server until SIGINT/SIGTERM/SIGHUP (then shuts down in order) or a fatal I/O
/// error. Writes the status file every interval and once at exit.
///
/// The tun device and the socket decide how data moves: an [`OffloadTun`] with offloads
/// and a batched [`UdpIo`] give the fast path, a plain device and socket (`--no-offload`)
/// one packet per system call.
pub fn run_server(
    mut server: Server,
    mut tun: OffloadTun,
    udp: UdpIo,
    mut opts: ServerLoopOptions,
) -> Result<LoopStats, DriverError> {
    // Everything the loops write to the tun just passed the AEAD open (warren's data
    // channel has no non-AEAD cipher): no need to verify checksums before coalescing.
    tun.set_trust_checksums(true);
    let mut ios = std::mem::take(&mut opts.workers);
    for io in &mut ios {
        io.tun.set_trust_checksums(true);
    }
    let workers = if ios.is_empty() {
        None
    } else {
        let config = server.enable_data_plane();
        Some(Workers::start(ios, config, opts.clock).map_err(DriverError::StartWorkers)?)
    };
    let mtu = tun.mtu();
    let m = usize::from(mtu);
    let udp_len = (m + 512).max(2048);
    let tun_len = DATA_HEADROOM + m + TAILROOM;
    let now = opts.clock.now();
    let next_status = opts.status.as_ref().map(|s| now + s.interval);
    let mut udp_rx = UdpRx::default();
    udp_rx.fit(udp.is_batched(), mtu);
    let mut tun_rx = TunRx::default();
    tun_rx.fit(mtu);
    info!(
        "data path: {}; {}; {} data thread(s)",
        batch::describe_tun(&tun),
        udp.describe(),
        workers.as_ref().map_or(1, Workers::threads)
    );
    let mut l = Loop {
        server,
        tun,
        udp,
        opts,
        stats: LoopStats::default(),
        udp_rx,
        tun_tx: TunTx::default(),
        tun_rx,
        udp_tx: TxQueue::default(),
        c2c_buf: vec![0u8; tun_len.max(DATA_HEADROOM + udp_len)],
        tx_buf: Vec::with_capacity(udp_len),
        warn_send: RateLimited::default(),
        warn_tun_write: RateLimited::default(),
        warn_recv: RateLimited::default(),
        next_status,
        status_failing: false,
        shutdown_deadline: None,
        auth_gone: false,
        auth_msgs: Vec::new(),
        workers,
        worker_failed: None,
    };
    let result = l.run();
    if let Some(w) = l.workers.take() {
        w.stop(&mut l.stats);
    }
    if let Some(auth) = l.opts.auth.take() {
        auth.stop(Duration::from_secs(1));
    }
    l.write_status();
    let s = &l.stats;
    info!(
        udp_received = s.udp_received,
        udp_recv_calls = s.udp_recv_calls,
        udp_sent = s.udp_sent,
        udp_send_calls = s.udp_send_calls,
        udp_send_errors = s.udp_send_errors,
        udp_send_would_block = s.udp_send_would_block,
        tun_read = s.tun_read,
        tun_read_calls = s.tun_read_calls,
        tun_read_bad = s.tun_read_bad,
        tun_written = s.tun_written,
        tun_write_calls = s.tun_write_calls,
        tun_write_errors = s.tun_write_errors,
        engine_dropped = s.engine_dropped,
        handed_off = s.handed_off,
        "server stopped"
    );
    result.map(|()| l.stats)
}

impl Loop {
    fn run(&mut self) -> Result<(), DriverError> {
        let mut poller = Poller::new();
        let t_udp = poller.add(std::os::fd::AsFd::as_fd(&self.udp), Interest::Readable);
        let t_tun = poller.add(std::os::fd::AsFd::as_fd(&self.tun), Interest::Readable);
        let t_sig = poller.add(
            std::os::fd::AsFd::as_fd(&self.opts.signals),
            Interest::Readable,
        );
        let t_auth = self
            .opts
            .auth
            .as_ref()
            .map(|a| poller.add(a.wake_fd(), Interest::Readable));
        let t_workers = self
            .workers
            .as_ref()
            .map(|w| poller.add(w.inbox.wake.as_fd(), Interest::Readable));
        // Anything the engine queued at start (nothing today) goes out before the first wait.
        let now = self.opts.clock.now();
        self.after_input(now);
        loop {
            let now = self.opts.clock.now();
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            poller.wait(timeout).map_err(DriverError::Poll)?;
            let now = self.opts.clock.now();

            if poller.is_readable(t_sig) {
                while let Some(sig) = self.opts.signals.read().map_err(DriverError::Signal)? {
                    if self.on_signal(now, sig) {
                        return Ok(());
                    }
                }
            }
            if poller.is_readable(t_udp) {
                self.read_udp(now);
            }
            if poller.is_readable(t_tun) {
                self.read_tun(now)?;
            }
            if t_auth.is_some_and(|t| poller.is_readable(t)) {
                self.on_auth_messages(now);
            }
            if t_workers.is_some_and(|t| poller.is_readable(t)) {
                self.on_worker_messages(now);
            }
            self.after_input(now);
            if self.auth_gone {
                return Err(DriverError::AuthWorker);
            }
            if let Some(why) = self.worker_failed.take() {
                return Err(DriverError::Worker(why));
            }

            if let Some(at) = self.next_status
                && now >= at
            {
                self.write_status();
                let interval = self
                    .opts
                    .status
                    .as_ref()
                    .map_or(Duration::from_secs(60), |s| s.interval);
                self.next_status = Some(now + interval);
            }
            if let Some(deadline) = self.shutdown_deadline {
                if now >= deadline {
                    debug!("shutdown grace period over");
                    return Ok(());
                }
                if self.server.clients().is_empty() {
                    debug!("all clients gone; stopping early");
                    return Ok(());
                }
            }
        }
    }

    /// The earliest of the engine's timer, the status timer and the shutdown deadline.
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.server.poll_timeout(),
            self.next_status,
            self.shutdown_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Returns `true` when the loop must stop now.
    fn on_signal(&mut self, now: Instant, sig: Signal) -> bool {
        if self.shutdown_deadline.is_some() {
            info!("received {} again during shutdown: exiting now", sig.name());
            return true;
        }
        match sig {
            Signal::Hangup => {
                info!("received SIGHUP: reloading is not supported yet, shutting down")
            }
            _ => info!("received {}: shutting down", sig.name()),
        }
        self.server.shutdown(now);
        self.shutdown_deadline = Some(now + self.opts.shutdown_grace);
        false
    }

    /// One UDP batch: every datagram opened in place, the plaintext written to the tun
    /// with one `send_batch`.
    fn read_udp(&mut self, now: Instant) {
        let got = match self.udp_rx.recv(&self.udp) {
            Ok(b) => b,
            Err(e) => {
                self.stats.udp_recv_errors += 1;
                if let Some(suppressed) = self.warn_recv.hit(now) {
                    warn!("UDP receive error: {e} ({suppressed} more since the last warning)");
                }
                return;
            }
        };
        if got.filled == 0 {
            return;
        }
        self.stats.udp_recv_calls += 1;
        // Longer than any packet this server sends or accepts: not ours to decode.
        self.stats.udp_truncated += got.truncated as u64;
        self.stats.udp_received += got.truncated as u64;
        for i in 0..got.filled {
            let (meta, base, buf) = self.udp_rx.buffer_mut(i);
            for r in meta.ranges() {
                self.stats.udp_received += 1;
                let Some(dgram) = buf.get_mut(r.clone()) else {
                    continue;
                };
                if let Some(w) = self.workers.as_mut() {
                    // A worker's peer whose datagram GRO merged behind one of ours.
                    let dest = workers::datagram_owner(dgram, w.threads());
                    if dest != 0 {
                        w.forward_datagram(dest, meta.addr, dgram.to_vec());
                        continue;
                    }
                }
                match self.server.handle_datagram(now, meta.addr, dgram) {
                    DatagramOutcome::Tun(range) if range.end <= dgram.len() => {
                        let at = base + r.start;
                        self.tun_tx.push(at + range.start..at + range.end);
                    }
                    DatagramOutcome::ClientToClient(range) if range.end <= dgram.len() => {
                        let pkt = &dgram[range.clone()];
                        if let Some(w) = self.workers.as_mut()
                            && let Some((peer_id, v2)) = self.server.route(pkt)
                        {
                            let o = workers::owner(peer_id, v2, w.threads());
                            if o != 0 {
                                w.hand_off(o, pkt);
                                continue;
                            }
                        }
                        relay_c2c(
                            &mut self.server,
                            &mut self.c2c_buf,
                            &dgram[range],
                            &self.udp,
                            &mut self.stats,
                            &mut self.warn_send,
                            now,
                        );
                    }
                    DatagramOutcome::Tun(_) | DatagramOutcome::ClientToClient(_) => {
                        debug_assert!(false, "engine returned a range outside the datagram");
                    }
                    DatagramOutcome::Consumed => {}
                    DatagramOutcome::Dropped(reason) => {
                        self.stats.engine_dropped += 1;
                        trace!(from = %meta.addr, ?reason, "datagram dropped");
                    }
                }
            }
        }
        self.flush_tun(now);
    }

    /// Writes the queued plaintext packets to the tun.
    fn flush_tun(&mut self, now: Instant) {
        if self.tun_tx.is_empty() {
            return;
        }
        match self.tun_tx.flush(&mut self.tun, self.udp_rx.region()) {
            Ok(sum) => {
                self.stats.tun_written += sum.packets as u64;
                self.stats.tun_write_calls += sum.writes as u64;
                self.stats.tun_write_errors += sum.dropped as u64;
            }
            Err(e) => {
                self.stats.tun_write_errors += 1;
                if let Some(suppressed) = self.warn_tun_write.hit(now) {
                    warn!(
                        "writing to tun {} failed: {e} ({suppressed} more since the last warning)",
                        self.tun.name()
                    );
                }
            }
        }
    }

    /// Reads the tun (super-packets split into slots), seals every packet in place and
    /// sends each client's datagrams in read order (GSO for equal-size runs).
    fn read_tun(&mut self, now: Instant) -> Result<(), DriverError> {
        let c = self
            .tun_rx
            .read(&mut self.tun)
            .map_err(|source| DriverError::TunRead {
                name: self.tun.name().to_owned(),
                source,
            })?;
        self.stats.tun_read += c.packets as u64;
        self.stats.tun_read_calls += c.calls as u64;
        self.stats.tun_read_bad += c.bad as u64;
        for i in 0..c.packets {
            let len = self.tun_rx.sizes[i];
            if let Some(w) = self.workers.as_mut()
                && let Some(pkt) = self.tun_rx.slots[i].get(DATA_HEADROOM..DATA_HEADROOM + len)
                && let Some((peer_id, v2)) = self.server.route(pkt)
            {
                let o = workers::owner(peer_id, v2, w.threads());
                if o != 0 {
                    self.stats.handed_off += 1;
                    w.hand_off(o, pkt);
                    continue;
                }
            }
            match self.server.encapsulate(now, &mut self.tun_rx.slots[i], len) {
                EncapOutcome::Send { dst, range } => self.udp_tx.push(dst, i, range),
                EncapOutcome::Dropped(reason) => {
                    self.stats.engine_dropped += 1;
                    trace!(?reason, "tun packet dropped");
                }
            }
        }
        let sum = self.udp_tx.flush(&self.udp, &self.tun_rx.slots);
        account_tx(&mut self.stats, &mut self.warn_send, now, sum);
        Ok(())
    }

    /// Timers, then the data-state changes for the workers, then everything the engine
    /// wants sent, then its events.
    fn after_input(&mut self, now: Instant) {
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        // Before anything is sent that could make a peer use a new key or address.
        self.publish_changes();
        self.flush_transmits(now);
        self.publish_changes();
        if let Some(w) = self.workers.as_mut() {
            w.flush_handoffs();
        }
        for _ in 0..MAX_EVENTS_PER_TURN {
            let Some(ev) = self.server.poll_event() else {
                break;
            };
            log_event(&ev);
            self.forward_to_auth(now, ev);
        }
        if self.opts.auth.is_none() {
            // A refusal queued by `forward_to_auth` goes out now, not at the next wakeup.
            self.flush_transmits(now);
        }
    }

    /// Sends the engine's data-state changes to every worker.
    fn publish_changes(&mut self) {
        let Some(w) = self.workers.as_ref() else {
            return;
        };
        let mut any = false;
        while let Some(c) = self.server.poll_data_change() {
            w.publish(&c);
            any = true;
        }
        if any {
            w.wake_all();
        }
    }

    /// Events, stray datagrams and handed-off tun packets from the workers.
    fn on_worker_messages(&mut self, now: Instant) {
        let Some(w) = self.workers.as_ref() else {
            return;
        };
        w.inbox.clear_wake();
        let mut msgs = Vec::new();
        while let Ok(m) = w.inbox.rx.try_recv() {
            msgs.push(m);
            if msgs.len() >= MAX_EVENTS_PER_TURN {
                break;
            }
        }
        for m in msgs {
            match m {
                WorkerMsg::Event(e) => self.server.handle_data_event(now, e),
                WorkerMsg::Datagram { from, mut bytes } => {
                    self.stats.udp_received += 1;
                    match self.server.handle_datagram(now, from, &mut bytes) {
                        DatagramOutcome::Tun(range) => {
                            if let Some(p) = bytes.get(range) {
                                self.write_tun_one(now, p);
                            }
                        }
                        DatagramOutcome::ClientToClient(range) => {
                            if let Some(p) = bytes.get(range) {
                                self.seal_and_send(now, p);
                            }
                        }
                        DatagramOutcome::Consumed => {}
                        DatagramOutcome::Dropped(_) => self.stats.engine_dropped += 1,
                    }
                }
                WorkerMsg::Packets(batch) => {
                    for p in batch.iter() {
                        self.seal_and_send(now, p);
                    }
                }
                WorkerMsg::Failed(why) => {
                    error!("{why}");
                    self.worker_failed = Some(why);
                }
            }
        }
    }

    /// A packet for the control thread's own peers (handed off, or client-to-client).
    fn seal_and_send(&mut self, now: Instant, pkt: &[u8]) {
        relay_c2c(
            &mut self.server,
            &mut self.c2c_buf,
            pkt,
            &self.udp,
            &mut self.stats,
            &mut self.warn_send,
            now,
        );
    }

    fn write_tun_one(&mut self, now: Instant, pkt: &[u8]) {
        match self.tun.send_batch(&[pkt]) {
            Ok(sum) => {
                self.stats.tun_written += sum.packets as u64;
                self.stats.tun_write_calls += sum.writes as u64;
                self.stats.tun_write_errors += sum.dropped as u64;
            }
            Err(e) => {
                self.stats.tun_write_errors += 1;
                if let Some(suppressed) = self.warn_tun_write.hit(now) {
                    warn!(
                        "writing to tun {} failed: {e} ({suppressed} more since the last warning)",
                        self.tun.name()
                    );
                }
            }
        }
    }

    fn flush_transmits(&mut self, now: Instant) {
        for _ in 0..MAX_TRANSMITS_PER_TURN {
            let Some(dst) = self.server.poll_transmit(now, &mut self.tx_buf) else {
                break;
            };
            send_udp(
                &self.udp,
                &self.tx_buf,
                dst,
                &mut self.stats,
                &mut self.warn_send,
                now,
            );
        }
    }

    /// Lifecycle events the auth worker needs: requests, addresses given, departures.
    fn forward_to_auth(&mut self, now: Instant, ev: ServerEvent) {
        let Some(auth) = self.opts.auth.as_mut() else {
            if let ServerEvent::AuthRequest { peer_id, .. } = ev {
                warn!("refusing client peer_id={peer_id}: no authentication worker");
                self.server
                    .authorize(now, peer_id, AuthDecision::Reject { reason: None });
            }
            return;
        };
        let sent = match ev {
            ServerEvent::AuthRequest {
                peer_id,
                addr,
                common_name,
                certificate,
                username,
                password,
            } => auth.request(AuthRequest {
                peer_id,
                addr,
                common_name,
                certificate: certificate.map(|c| c.as_ref().to_vec()),
                username,
                password: password.map(|p| p.into_inner()),
            }),
            ServerEvent::Connected {
                peer_id,
                common_name,
                vpn_ip,
                ..
            } => auth.connected(peer_id, &common_name, vpn_ip),
            ServerEvent::Disconnected { peer_id, .. } => auth.disconnected(peer_id),
            _ => Ok(()),
        };
        if sent.is_err() {
            error!("the authentication worker is gone; stopping");
            self.auth_gone = true;
        }
    }

    /// Decisions and kicks from the auth worker.
    fn on_auth_messages(&mut self, now: Instant) {
        let Some(auth) = self.opts.auth.as_mut() else {
            return;
        };
        let mut msgs = std::mem::take(&mut self.auth_msgs);
        if auth.drain(&mut msgs).is_err() {
            error!("the authentication worker is gone; stopping");
            self.auth_gone = true;
        }
        for m in msgs.drain(..) {
            match m {
                FromWorker::Decision {
                    peer_id, decision, ..
                } => self.server.authorize(now, peer_id, decision),
                FromWorker::Kick(k) => {
                    let n = self.server.kick(now, &k.identity, &k.message);
                    if n > 0 {
                        info!(
                            "ended {n} session(s) of {}: {} (sent {})",
                            k.identity, k.reason, k.message
                        );
                    }
                }
            }
        }
        self.auth_msgs = msgs;
    }

    fn write_status(&mut self) {
        let Some(st) = &mut self.opts.status else {
            return;
        };
        let clock = self.opts.clock;
        let snap = snapshot(
            &self.opts.title,
            clock.unix_now(),
            clock.unix_time_at_zero(),
            &self.server.clients(),
        );
        let text = status::render(st.version, &snap, &warren_io::format_local_time);
        match st.file.write(&text) {
            Ok(()) if self.status_failing => {
                info!("status file {} written again", st.file.path().display());
                self.status_failing = false;
            }
            Ok(()) => {}
            Err(e) if self.status_failing => debug!("{e}"),
            Err(e) => {
                warn!("{e} (further failures are logged at debug level)");
                self.status_failing = true;
            }
        }
    }
}

/// Seals a client-to-client packet (copied to `DATA_HEADROOM` of `c2c_buf`) and sends it.
fn relay_c2c(
    server: &mut Server,
    c2c_buf: &mut [u8],
    pkt: &[u8],
    udp: &UdpIo,
    stats: &mut LoopStats,
    limiter: &mut RateLimited,
    now: Instant,
) {
    let len = pkt.len();
    let Some(dst) = c2c_buf.get_mut(DATA_HEADROOM..DATA_HEADROOM + len) else {
        stats.engine_dropped += 1;
        return;
    };
    dst.copy_from_slice(pkt);
    match server.encapsulate(now, c2c_buf, len) {
        EncapOutcome::Send { dst, range } => match c2c_buf.get(range) {
            Some(dgram) => send_udp(udp, dgram, dst, stats, limiter, now),
            None => debug_assert!(false, "engine returned a range outside the buffer"),
        },
        EncapOutcome::Dropped(reason) => {
            stats.engine_dropped += 1;
            trace!(?reason, "client-to-client packet dropped");
        }
    }
}

/// Counts what a [`TxQueue::flush`] did and warns (rate-limited) about a hard error.
fn account_tx(stats: &mut LoopStats, limiter: &mut RateLimited, now: Instant, sum: TxSummary) {
    stats.udp_sent += sum.sent;
    stats.udp_send_calls += sum.calls;
    stats.udp_send_would_block += sum.would_block;
    stats.udp_send_errors += sum.errors;
    if let Some((dst, e)) = sum.first_error
        && let Some(suppressed) = limiter.hit(now)
    {
        warn!(
            "UDP send to {dst} failed: {e} ({suppressed} more send errors since the last warning)"
        );
    }
}

fn send_udp(
    socket: &UdpIo,
    dgram: &[u8],
    dst: SocketAddr,
    stats: &mut LoopStats,
    limiter: &mut RateLimited,
    now: Instant,
) {
    stats.udp_send_calls += 1;
    match socket.send_to(dgram, dst) {
        Ok(_) => stats.udp_sent += 1,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => stats.udp_send_would_block += 1,
        Err(e) => {
            stats.udp_send_errors += 1;
            if let Some(suppressed) = limiter.hit(now) {
                warn!(
                    "UDP send to {dst} failed: {e} ({suppressed} more send errors since the last warning)"
                );
            }
        }
    }
}

/// Lifecycle lines: the only place addresses and names are logged at info.
fn log_event(ev: &ServerEvent) {
    match ev {
        ServerEvent::Connected {
            peer_id,
            common_name,
            addr,
            vpn_ip,
            cipher,
            ekm,
        } => {
            info!(
                "client connected cn={common_name} addr={addr} vpn_ip={vpn_ip} cipher={} peer_id={peer_id} key_derivation={}",
                crate::cipher_name(*cipher),
                if *ekm { "tls-ekm" } else { "tls1-prf" }
            );
        }
        ServerEvent::Renegotiated { peer_id, key_id } => {
            debug!("client renegotiated peer_id={peer_id} key_id={key_id}");
        }
        ServerEvent::Disconnected {
            peer_id,
            common_name,
            addr,
            reason,
        } => {
            info!(
                "client disconnected cn={common_name} addr={addr} peer_id={peer_id} reason={}",
                disconnect_reason(reason)
            );
        }
        // The auth worker already logged why (at warn, with the user).
        ServerEvent::AuthRejected { addr, .. } => {
            debug!("client refused addr={addr}: AUTH_FAILED sent");
        }
        ServerEvent::HandshakeFailed { addr, reason } => {
            warn!("handshake failed addr={addr} reason={reason}");
        }
        ServerEvent::AuthRequest {
            peer_id,
            addr,
            common_name,
            ..
        } => {
            debug!("authorising cn={common_name} addr={addr} peer_id={peer_id}");
        }
        other => debug!("server event: {other:?}"),
    }
}

fn disconnect_reason(r: &DisconnectReason) -> String {
    match r {
        DisconnectReason::ExitNotify => "exit-notify".into(),
        DisconnectReason::PingTimeout => "ping-restart".into(),
        DisconnectReason::HandshakeTimeout => "handshake-timeout".into(),
        DisconnectReason::TlsError(e) => format!("tls-error ({e})"),
        DisconnectReason::Replaced => "replaced".into(),
        DisconnectReason::Shutdown => "server-shutdown".into(),
        DisconnectReason::AuthFailed => "auth-failed".into(),
        DisconnectReason::Kicked => "kicked".into(),
        other => format!("{other:?}"),
    }
}

/// The engine's client list in status-file terms.
pub fn snapshot(
    title: &str,
    now_unix: u64,
    unix_time_at_zero: u64,
    clients: &[ClientStatus],
) -> StatusSnapshot {
    let to_unix = |t: Instant| unix_time_at_zero.saturating_add(t.as_secs());
    let mut rows: Vec<StatusRow> = clients
        .iter()
        .map(|c| StatusRow {
            common_name: c.common_name.clone(),
            real_addr: c.real_addr,
            vpn_ip: c.vpn_ip,
            bytes_received: c.bytes_received,
            bytes_sent: c.bytes_sent,
            connected_since: to_unix(c.connected_since),
            last_ref: to_unix(c.last_activity),
            username: c.username.clone(),
            client_id: u64::from(c.peer_id),
            peer_id: c.peer_id,
            cipher: c.cipher.map(|k| crate::cipher_name(k).to_owned()),
        })
        .collect();
    rows.sort_by_key(|r| r.peer_id);
    StatusSnapshot {
        title: title.to_owned(),
        now: now_unix,
        clients: rows,
    }
}
