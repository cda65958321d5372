//! The single-threaded server loop: one `poll(2)` over the UDP socket, the tun device, the
//! signal descriptor and (with external authentication) the auth worker's wake socket,
//! driving a [`warren_openvpn::Server`].
//!
//! The loop is "control + data worker 0": the engine is the control side, and the data of
//! the peers this thread owns moves like on every worker ([`crate::workers`]): through a
//! [`Pump`] over this thread's [`Shard`] (a [`warren_openvpn::DataPlane`] replica), in
//! batches ([`crate::batch`]). Control datagrams in a UDP batch go to the engine, and the
//! data-state changes it publishes are applied to the replica (and posted to the workers)
//! at once, before the next datagram of the batch is opened.
//!
//! Signals, as OpenVPN's server handles them (multi.c `multi_process_signal`, sig.c):
//! SIGINT/SIGTERM shut down in order (`RESTART` to every client with explicit-exit-notify,
//! for at most `shutdown_grace`); SIGUSR2 writes the status report to the log; SIGUSR1 is a
//! soft restart: every client is told to reconnect (`RESTART`) and its session ends, while
//! the tun device, the socket, the address pool and the process stay and new connections
//! are accepted at once; SIGHUP reloads what a running server can apply without dropping
//! sessions ([`ServerLoopOptions::reload`], then an immediate re-check of the user database
//! by the auth worker, which ends revoked, disabled or expired users' sessions).
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use thiserror::Error;
use tracing::{debug, error, info, warn};
use warren_core::Instant;
use warren_io::{Clock, Interest, OffloadTun, Poller, Signal, Signals};
use warren_openvpn::{
    AuthDecision, ClientStatus, DataPlane, DisconnectReason, OverloadKind, Server, ServerEvent,
};

use crate::auth::{AuthRequest, AuthWorker, FromWorker};
use crate::batch::{self, DataPath, LoopStats, Out, Pump, UdpIo, Via};
use crate::management::{self, ClientIds, Management, ManagementOptions};
use crate::metrics::{Metrics, ThreadPublisher};
use crate::metrics_http::{MetricsListener, MetricsServer};
use crate::status::{self, StatusFile, StatusRow, StatusSnapshot, StatusVersion};
use crate::systemd::Systemd;
use crate::tcp::{TcpOptions, TcpServer};
use crate::workers::{Msg, PacketBatch, Shard, WorkerIo, Workers};
use std::os::fd::AsFd;

/// Datagrams or tun packets handled per wakeup and direction without batching.
pub const BATCH: usize = batch::PLAIN_BATCH;
/// Bound on `poll_transmit` drained in one go; the rest waits for the next turn.
const MAX_TRANSMITS_PER_TURN: usize = 4096;
/// Bound on events drained in one go.
const MAX_EVENTS_PER_TURN: usize = 4096;

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
    /// What SIGHUP re-reads besides the user database (`None`: only that).
    pub reload: Option<Reloader>,
    /// TCP listeners (`proto tcp-server`, `warren-listen tcp PORT`), served by this
    /// thread alongside the UDP socket (see [`crate::tcp`]).
    pub tcp: Option<TcpOptions>,
    /// Checked every [`Watcher::interval`] on this thread (today: the `crl-verify` file).
    pub watch: Option<Watcher>,
    /// The management interface (`management ...`), served by this thread.
    pub management: Option<ManagementOptions>,
    /// `warren-metrics ADDR`: the Prometheus endpoint's socket (see [`crate::metrics`]).
    pub metrics: Option<MetricsListener>,
    /// Started by systemd with `Type=notify` (see [`crate::systemd`]).
    pub systemd: Option<Systemd>,
    /// `learn-address` and `client-disconnect` (see [`crate::scripts`]).
    pub scripts: Option<crate::scripts::ScriptHooks>,
}

/// A periodic check of files a running server follows, such as the `crl-verify` CRL that
/// OpenVPN re-reads when it changes. Runs on the control thread between wakeups, never per
/// packet; it may replace the TLS configuration ([`Server::set_tls_config`]) and end
/// sessions ([`Server::kick_target`]), which go out on the same turn. It logs itself.
pub struct Watcher {
    /// How often [`Watcher::check`] runs (about a second for the CRL).
    pub interval: Duration,
    /// The check; gets the loop's `now`.
    pub check: WatchFn,
}

/// The function behind a [`Watcher`].
pub type WatchFn = Box<dyn FnMut(Instant, &mut Server) + Send>;

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// SIGHUP's reload of the configuration pieces a running server can apply without
/// dropping sessions (today the TLS configuration: a renewed certificate or key). Supplied
/// by the binary, which knows where the configuration came from. Returns one line per
/// thing reloaded, or why nothing could be (the current configuration then stays).
pub struct Reloader(pub ReloadFn);

/// The function behind a [`Reloader`].
pub type ReloadFn = Box<dyn FnMut(&mut Server) -> Result<Vec<String>, String> + Send>;

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloader")
    }
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
    #[error("starting the metrics endpoint: {0}")]
    StartMetrics(#[source] io::Error),
}

struct Loop {
    /// The engine and this thread's share of the data path.
    ctl: Control,
    tun: OffloadTun,
    /// `None`: TCP only.
    udp: Option<UdpIo>,
    tcp: Option<TcpServer>,
    opts: ServerLoopOptions,
    /// This thread's batches and counters.
    pump: Pump,
    /// Scratch for `poll_transmit`.
    tx_buf: Vec<u8>,
    next_status: Option<Instant>,
    next_watch: Option<Instant>,
    /// The last status write failed (warned once, until it works again).
    status_failing: bool,
    shutdown_deadline: Option<Instant>,
    /// Set when a message to the auth worker could not be delivered.
    auth_gone: bool,
    /// Scratch for messages from the auth worker.
    auth_msgs: Vec<FromWorker>,
    /// A worker failed; the loop stops with this.
    worker_failed: Option<String>,
    /// The management interface, if configured.
    mgmt: Option<Management>,
    /// Management client ids (also the status "Client ID" column).
    cids: ClientIds,
    /// A soft restart happened this turn (the management hold and state lines follow).
    restarted: bool,
    /// With `warren-metrics`: the engine's and this thread's counters for the endpoint.
    metrics: Option<(Metrics, ThreadPublisher)>,
}

/// The control thread's data path: the engine, this thread's shard (control datagrams go
/// to the engine) and the workers the engine's changes are posted to.
struct Control {
    server: Server,
    shard: Shard,
    /// The extra data workers, if any.
    workers: Option<Workers>,
    /// Changes were posted to the workers since they were last woken.
    unwoken: bool,
}

/// Opens a datagram (UDP) or a frame (TCP, `stream`) with this thread's shard; control
/// packets go to the engine.
impl DataPath for Control {
    fn open(
        &mut self,
        now: Instant,
        from: SocketAddr,
        stream: bool,
        dgram: &mut [u8],
        stats: &mut LoopStats,
    ) -> Option<Range<usize>> {
        let (server, workers, unwoken) =
            (&mut self.server, self.workers.as_ref(), &mut self.unwoken);
        self.shard
            .open(now, from, stream, dgram, stats, |plane, dgram| {
                if !stream && server.is_stream(&from) {
                    // A UDP control packet claiming a TCP peer's address: only its connection
                    // speaks for it.
                    return warren_openvpn::DatagramOutcome::Dropped(
                        warren_openvpn::DropReason::NoSession,
                    );
                }
                let outcome = server.handle_datagram(now, from, dgram);
                // A key the engine just installed may be used by the next datagram.
                *unwoken |= apply_changes(server, plane, workers);
                outcome
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
        self.shard.seal(now, buf, len, via, stats)
    }
}

/// Applies the engine's data-state changes to this thread's plane and posts them to the
/// workers (without waking them). Returns whether there were any.
fn apply_changes(server: &mut Server, plane: &mut DataPlane, workers: Option<&Workers>) -> bool {
    let mut any = false;
    while let Some(c) = server.poll_data_change() {
        if let Some(w) = workers {
            w.publish(&c);
        }
        plane.apply(c);
        any = true;
    }
    any
}

/// Runs the server until SIGINT/SIGTERM (then shuts down in order) or a fatal I/O error;
/// SIGUSR1, SIGUSR2 and SIGHUP are handled in place (see the module docs). Writes the
/// status file every interval and once at exit.
///
/// The tun device and the socket decide how data moves: an [`OffloadTun`] with offloads
/// and a batched [`UdpIo`] give the fast path, a plain device and socket (`--no-offload`)
/// one packet per system call.
pub fn run_server(
    server: Server,
    mut tun: OffloadTun,
    udp: Option<UdpIo>,
    mut opts: ServerLoopOptions,
) -> Result<LoopStats, DriverError> {
    // Everything the loops write to the tun just passed the AEAD open (warren's data
    // channel has no non-AEAD cipher): no need to verify checksums before coalescing.
    tun.set_trust_checksums(true);
    let mut ios = std::mem::take(&mut opts.workers);
    for io in &mut ios {
        io.tun.set_trust_checksums(true);
    }
    let config = server.data_plane_config();
    let start = opts.clock.now();
    let (metrics, http) = match opts.metrics.take() {
        Some(listener) => {
            let (m, registry) = Metrics::new(ios.len() + 1, start);
            let addr = listener.local_addr().ok();
            let http = MetricsServer::start(listener, registry, opts.clock)
                .map_err(DriverError::StartMetrics)?;
            if let Some(addr) = addr {
                info!("Prometheus metrics on http://{addr}/metrics");
            }
            let own = m.thread(0, start);
            (Some((m, own)), Some(http))
        }
        None => (None, None),
    };
    let workers = if ios.is_empty() {
        None
    } else {
        let m = metrics.as_ref().map(|(m, _)| m);
        Some(Workers::start(ios, config, opts.clock, m).map_err(DriverError::StartWorkers)?)
    };
    let threads = workers.as_ref().map_or(1, Workers::threads);
    let mtu = tun.mtu();
    let now = opts.clock.now();
    let next_status = opts.status.as_ref().map(|s| now + s.interval);
    let next_watch = opts.watch.as_ref().map(|w| now + w.interval);
    let mut pump = Pump::new(true);
    match &udp {
        Some(u) => pump.fit(u.is_batched(), mtu),
        None => pump.fit_tun(mtu),
    }
    let tcp = opts.tcp.take().map(TcpServer::new);
    let mgmt = opts.management.take().map(Management::new);
    if let Some(m) = &mgmt {
        info!("{}", m.describe());
    }
    info!(
        "data path: {}; {}{}; {} data thread(s)",
        batch::describe_tun(&tun),
        udp.as_ref()
            .map_or_else(|| "no UDP".to_owned(), UdpIo::describe),
        if tcp.is_some() { ", TCP" } else { "" },
        threads
    );
    let mut l = Loop {
        ctl: Control {
            server,
            shard: Shard::new(0, threads, config),
            workers,
            unwoken: false,
        },
        tun,
        udp,
        tcp,
        opts,
        pump,
        tx_buf: Vec::with_capacity((usize::from(mtu) + 512).max(2048)),
        next_status,
        next_watch,
        status_failing: false,
        shutdown_deadline: None,
        auth_gone: false,
        auth_msgs: Vec::new(),
        worker_failed: None,
        mgmt,
        cids: ClientIds::default(),
        restarted: false,
        metrics,
    };
    let result = l.run();
    if let Some(http) = http {
        http.stop();
    }
    if let Some(m) = l.mgmt.as_mut() {
        m.set_state(l.opts.clock.unix_now(), "EXITING", "SIGTERM", false, false);
        m.after();
        m.shutdown();
    }
    if let Some(w) = l.ctl.workers.take() {
        w.stop(&mut l.pump.stats);
    }
    if let Some(auth) = l.opts.auth.take() {
        auth.stop(Duration::from_secs(1));
    }
    l.write_status();
    let s = &l.pump.stats;
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
        tcp_received = s.tcp_received,
        tcp_framed = s.tcp_framed,
        "server stopped"
    );
    if let Some(t) = &l.tcp {
        let t = &t.stats;
        info!(
            accepted = t.accepted,
            refused = t.refused,
            closed = t.closed,
            bad_frames = t.bad_frames,
            queue_dropped = t.queue_dropped,
            stalled = t.stalled,
            auth_failed = t.auth_failed,
            write_calls = t.write_calls,
            "TCP connections"
        );
    }
    result.map(|()| l.pump.stats)
}

impl Loop {
    fn run(&mut self) -> Result<(), DriverError> {
        let mut poller = Poller::new();
        let t_udp = self
            .udp
            .as_ref()
            .map(|u| poller.add(std::os::fd::AsFd::as_fd(u), Interest::Readable));
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
            .ctl
            .workers
            .as_ref()
            .map(|w| poller.add(w.inbox.wake.as_fd(), Interest::Readable));
        // The TCP listeners and connections follow the fixed descriptors, re-registered
        // before every wait (connections come and go).
        let fixed = poller.len();
        // Anything the engine queued at start (nothing today) goes out before the first wait.
        let now = self.opts.clock.now();
        if self.hold()? {
            return Ok(());
        }
        self.announce_up();
        self.after_input(now);
        let clients = self.connected();
        if let Some(s) = &mut self.opts.systemd {
            s.ready(now, clients);
        }
        loop {
            let now = self.opts.clock.now();
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            poller.truncate(fixed);
            if let Some(tcp) = &mut self.tcp {
                tcp.register(&mut poller);
            }
            if let Some(m) = &mut self.mgmt {
                m.register(&mut poller);
            }
            poller.wait(timeout).map_err(DriverError::Poll)?;
            let now = self.opts.clock.now();
            if self.on_management(now, &poller)? {
                return Ok(());
            }

            if poller.is_readable(t_sig) {
                while let Some(sig) = self.opts.signals.read().map_err(DriverError::Signal)? {
                    if self.on_signal(now, sig) {
                        return Ok(());
                    }
                }
            }
            if std::mem::take(&mut self.restarted) {
                // RESTART to every client goes out before a hold.
                self.after_input(now);
                if self.hold()? {
                    return Ok(());
                }
                self.announce_up();
            }
            if let (Some(t), Some(udp)) = (t_udp, &self.udp)
                && poller.is_readable(t)
            {
                self.pump
                    .udp_to_tun(now, udp, Some(&mut self.tun), &mut self.ctl);
            }
            if let Some(tcp) = &mut self.tcp {
                let server = &mut self.ctl.server;
                tcp.accept_ready(now, &poller, |addr| server.stream_opened(addr));
                tcp.io_ready(
                    now,
                    &poller,
                    &mut self.pump,
                    Some(&mut self.tun),
                    &mut self.ctl,
                );
            }
            if poller.is_readable(t_tun) {
                let mut out = Out {
                    udp: self.udp.as_ref(),
                    streams: self.tcp.as_mut().map(|t| t as &mut dyn batch::Streams),
                };
                self.pump
                    .tun_to_udp(now, &mut self.tun, &mut out, &mut self.ctl)
                    .map_err(|source| DriverError::TunRead {
                        name: self.tun.name().to_owned(),
                        source,
                    })?;
            }
            if t_auth.is_some_and(|t| poller.is_readable(t)) {
                self.on_auth_messages(now);
            }
            if t_workers.is_some_and(|t| poller.is_readable(t)) {
                self.on_worker_messages(now);
            }
            // Client-to-client packets this thread seals itself.
            let own = self.ctl.shard.take_own();
            if !own.is_empty() {
                self.seal_packets(now, &own);
            }
            self.ctl.shard.put_own(own);
            if let Some(at) = self.next_watch
                && now >= at
                && let Some(w) = self.opts.watch.as_mut()
            {
                // Before `after_input`, so sessions it ends are told on this turn.
                (w.check)(now, &mut self.ctl.server);
                self.next_watch = Some(now + w.interval);
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
            self.publish_metrics(now);
            let clients = self.connected();
            if let Some(s) = &mut self.opts.systemd {
                s.tick(self.opts.clock.now(), clients);
            }
            if let Some(deadline) = self.shutdown_deadline {
                if now >= deadline {
                    debug!("shutdown grace period over");
                    return Ok(());
                }
                if self.ctl.server.clients().is_empty() {
                    debug!("all clients gone; stopping early");
                    return Ok(());
                }
            }
        }
    }

    /// The state lines of a server that is up (OpenVPN's server: CONNECTING, ASSIGN_IP,
    /// CONNECTED).
    fn announce_up(&mut self) {
        let Some(m) = self.mgmt.as_mut() else { return };
        let unix = self.opts.clock.unix_now();
        m.set_state(unix, "CONNECTING", "", false, false);
        m.set_state(unix, "ASSIGN_IP", "", true, false);
        m.set_state(unix, "CONNECTED", "SUCCESS", true, true);
        m.after();
    }

    /// `management-hold`: serves only the management interface and signals until `hold
    /// release` (datagrams wait in the socket). Returns `true` when a signal stops the
    /// server meanwhile.
    fn hold(&mut self) -> Result<bool, DriverError> {
        if !self.mgmt.as_ref().is_some_and(Management::is_held) {
            return Ok(false);
        }
        info!("Need hold release from management interface, waiting...");
        loop {
            let mut poller = Poller::new();
            let t_sig = poller.add(
                std::os::fd::AsFd::as_fd(&self.opts.signals),
                Interest::Readable,
            );
            if let Some(m) = self.mgmt.as_mut() {
                m.register(&mut poller);
            }
            let now = self.opts.clock.now();
            let timeout = self
                .mgmt
                .as_ref()
                .and_then(Management::next_deadline)
                .map(|d| d.saturating_duration_since(now));
            poller.wait(timeout).map_err(DriverError::Poll)?;
            let now = self.opts.clock.now();
            if poller.is_readable(t_sig) {
                while let Some(sig) = self.opts.signals.read().map_err(DriverError::Signal)? {
                    if matches!(sig, Signal::Interrupt | Signal::Terminate) {
                        info!("{}[hard,] received while held, server exiting", sig.name());
                        return Ok(true);
                    }
                    info!("received {} while held: ignored", sig.name());
                }
            }
            if self.on_management(now, &poller)? {
                return Ok(true);
            }
            if !self.mgmt.as_ref().is_some_and(Management::is_held) {
                info!("hold released: serving");
                return Ok(false);
            }
        }
    }

    /// The management interface's I/O, its timer and what its commands asked the loop to
    /// do. Returns `true` when the loop must stop now.
    fn on_management(&mut self, now: Instant, poller: &Poller) -> Result<bool, DriverError> {
        let (Some(m), mut ctx) = self.management(now) else {
            return Ok(false);
        };
        m.ready(poller, &mut ctx);
        if m.next_deadline().is_some_and(|t| t <= now) {
            m.handle_timeout(&mut ctx);
        }
        let actions = m.take_actions();
        for a in actions {
            match a {
                management::Action::Signal(sig) => {
                    if self.on_signal(now, sig) {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// The earliest of the engine's timer, the status timer and the shutdown deadline.
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.ctl.server.poll_timeout(),
            self.next_status,
            self.next_watch,
            self.shutdown_deadline,
            self.tcp.as_ref().and_then(TcpServer::next_deadline),
            self.mgmt.as_ref().and_then(Management::next_deadline),
            self.metrics.as_ref().map(|(m, _)| m.next_deadline()),
            self.opts.systemd.as_ref().and_then(Systemd::deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Returns `true` when the loop must stop now.
    fn on_signal(&mut self, now: Instant, sig: Signal) -> bool {
        let stop = matches!(sig, Signal::Interrupt | Signal::Terminate);
        if self.shutdown_deadline.is_some() {
            if stop {
                info!("received {} again during shutdown: exiting now", sig.name());
                return true;
            }
            if sig != Signal::User2 {
                info!("received {} during shutdown: ignored", sig.name());
                return false;
            }
        }
        match sig {
            Signal::Interrupt | Signal::Terminate => {
                // OpenVPN sig.c prints "SIGTERM[hard,] received, process exiting".
                info!("{}[hard,] received, server exiting", sig.name());
                if let Some(m) = self.mgmt.as_mut() {
                    m.set_state(
                        self.opts.clock.unix_now(),
                        "EXITING",
                        sig.name(),
                        false,
                        false,
                    );
                }
                if let Some(s) = &mut self.opts.systemd {
                    s.stopping();
                }
                self.ctl.server.shutdown(now);
                self.shutdown_deadline = Some(now + self.opts.shutdown_grace);
            }
            Signal::User2 => self.log_status(),
            Signal::User1 => {
                self.soft_restart(now);
                if let Some(m) = self.mgmt.as_mut() {
                    m.set_state(
                        self.opts.clock.unix_now(),
                        "RECONNECTING",
                        "SIGUSR1",
                        false,
                        false,
                    );
                    // manage.c: the hold flag holds the daemon again at every restart.
                    m.hold_again(1);
                }
                self.restarted = true;
            }
            Signal::Hangup => {
                if let Some(s) = &mut self.opts.systemd {
                    s.reloading();
                }
                self.reload();
                let clients = self.connected();
                if let Some(s) = &mut self.opts.systemd {
                    s.reloaded(clients);
                }
            }
        }
        false
    }

    /// SIGUSR2: the status report (the status file's client list) and the loop's counters
    /// to the log, as OpenVPN's multi.c `multi_process_signal` does.
    fn log_status(&mut self) {
        let clock = self.opts.clock;
        let clients = self.ctl.server.clients();
        let snap = snapshot(
            &self.opts.title,
            clock.unix_now(),
            clock.unix_time_at_zero(),
            &clients,
        );
        // OpenVPN uses `status-version` here too, 1 without a `status` line.
        let version = self
            .opts
            .status
            .as_ref()
            .map_or(StatusVersion::V1, |s| s.version);
        let snap = with_cids(snap, &self.cids);
        info!("SIGUSR2 received: status report follows");
        let text = status::render(version, &snap, &warren_io::format_local_time);
        for line in text.lines() {
            info!("{line}");
        }
        let c = self.ctl.server.counters();
        let s = &self.pump.stats;
        let dropped: u64 = c.dropped.values().sum();
        info!(
            clients = clients.len(),
            sessions = self.ctl.server.session_count(),
            handshakes = c.handshakes,
            engine_dropped_by_reason = dropped,
            udp_received = s.udp_received,
            udp_sent = s.udp_sent,
            udp_send_errors = s.udp_send_errors,
            tun_read = s.tun_read,
            tun_written = s.tun_written,
            tun_write_errors = s.tun_write_errors,
            engine_dropped = s.engine_dropped,
            handed_off = s.handed_off,
            "status totals (packet counters of the control thread)"
        );
    }

    /// SIGUSR1: every client is told to reconnect (`RESTART`, what explicit-exit-notify
    /// sends at shutdown) and its session ends; the tun device, the socket, the address
    /// pool and the process stay, and new connections are accepted at once.
    fn soft_restart(&mut self, now: Instant) {
        info!(
            "SIGUSR1[soft,signal] received, server restarting: telling every client to reconnect"
        );
        let mut names: Vec<String> = self
            .ctl
            .server
            .clients()
            .into_iter()
            .map(|c| c.common_name)
            .collect();
        names.sort();
        names.dedup();
        let mut ended = 0;
        for cn in &names {
            ended += self.ctl.server.kick(now, cn, "RESTART");
        }
        info!(
            "soft restart: {ended} session(s) ended (RESTART sent); tun {}, socket and address pool kept; accepting connections",
            self.tun.name()
        );
    }

    /// SIGHUP: reload what can change without dropping sessions; unlike OpenVPN's hard
    /// restart, connected clients stay.
    fn reload(&mut self) {
        info!("SIGHUP received: reloading (sessions stay up)");
        if let Some(r) = self.opts.reload.as_mut() {
            match (r.0)(&mut self.ctl.server) {
                Ok(lines) => {
                    for l in lines {
                        info!("reloaded: {l}");
                    }
                }
                Err(e) => warn!("reload failed, the current configuration stays: {e}"),
            }
        }
        match self.opts.auth.as_mut() {
            Some(auth) => {
                if auth.reload().is_err() {
                    error!("the authentication worker is gone; stopping");
                    self.auth_gone = true;
                } else {
                    info!(
                        "reloading: user database and revocations re-checked now; sessions of revoked, disabled or expired users end"
                    );
                }
            }
            None => info!("no user database to re-read (no `warren-state-dir`)"),
        }
        info!(
            "SIGHUP handled: {} client(s) connected",
            self.ctl.server.clients().len()
        );
    }

    /// Seals packets handed to this thread and sends them.
    fn seal_packets(&mut self, now: Instant, pkts: &PacketBatch) {
        let mut out = Out {
            udp: self.udp.as_ref(),
            streams: self.tcp.as_mut().map(|t| t as &mut dyn batch::Streams),
        };
        self.pump
            .seal_packets(now, pkts.iter(), &mut out, &mut self.ctl);
    }

    /// Timers, then the data-state changes for the workers, then everything the engine
    /// wants sent, then its events.
    fn after_input(&mut self, now: Instant) {
        self.tcp_timers(now);
        if self.ctl.server.poll_timeout().is_some_and(|t| t <= now) {
            self.ctl.server.handle_timeout(now);
        }
        // Before anything is sent that could make a peer use a new key or address.
        self.sync(now);
        self.flush_transmits(now);
        self.sync(now);
        let mailboxes = self.ctl.workers.as_ref().map_or(&[][..], |w| &w.mailboxes);
        self.ctl.shard.flush(mailboxes);
        for _ in 0..MAX_EVENTS_PER_TURN {
            let Some(ev) = self.ctl.server.poll_event() else {
                break;
            };
            log_event(&ev);
            if let Some((m, _)) = &self.metrics {
                m.on_event(&ev, &self.ctl.server);
            }
            self.tcp_event(now, &ev);
            if let Some(h) = self.opts.scripts.as_mut() {
                h.on_event(&ev, &self.ctl.server, self.opts.clock.unix_now());
            }
            self.forward_to_auth(now, ev);
        }
        if self.opts.auth.is_none() {
            // A refusal queued by `forward_to_auth` goes out now, not at the next wakeup.
            self.flush_transmits(now);
        }
        if let Some(tcp) = &mut self.tcp {
            tcp.flush(now);
        }
        self.tcp_closed(now);
        if let Some(m) = self.mgmt.as_mut() {
            m.after();
        }
    }

    /// Closes TCP connections whose hand-window or closing grace is over.
    fn tcp_timers(&mut self, now: Instant) {
        if let Some(tcp) = &mut self.tcp
            && tcp.next_deadline().is_some_and(|t| t <= now)
        {
            tcp.handle_timeout(now);
        }
        self.tcp_closed(now);
    }

    /// Tells the engine about TCP connections that ended (their sessions end with them).
    fn tcp_closed(&mut self, now: Instant) {
        let Some(tcp) = &mut self.tcp else {
            return;
        };
        let mut any = false;
        for addr in tcp.take_closed() {
            self.ctl.server.stream_closed(now, addr);
            any = true;
        }
        if any {
            self.sync(now);
        }
    }

    /// What the TCP side needs from the engine's lifecycle events.
    fn tcp_event(&mut self, now: Instant, ev: &ServerEvent) {
        let Some(tcp) = &mut self.tcp else {
            return;
        };
        match ev {
            ServerEvent::Connected { addr, .. } => tcp.on_connected(*addr),
            ServerEvent::StreamEnded { addr } => tcp.on_session_ended(now, *addr),
            _ => {}
        }
    }

    /// The plane's events to the engine, the engine's changes to the plane and the
    /// workers (woken once), until both are quiet.
    fn sync(&mut self, now: Instant) {
        loop {
            let workers = self.ctl.workers.as_ref();
            self.ctl.unwoken |=
                apply_changes(&mut self.ctl.server, &mut self.ctl.shard.plane, workers);
            let mut any = false;
            while let Some(e) = self.ctl.shard.plane.poll_event() {
                self.ctl.server.handle_data_event(now, e);
                any = true;
            }
            if !any {
                break;
            }
        }
        if let Some(w) = self.ctl.workers.as_ref()
            && std::mem::take(&mut self.ctl.unwoken)
        {
            w.wake_all();
        }
    }

    /// Events, stray datagrams and handed-off tun packets from the workers.
    fn on_worker_messages(&mut self, now: Instant) {
        let Some(w) = self.ctl.workers.as_ref() else {
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
                Msg::Event(e) => self.ctl.server.handle_data_event(now, e),
                Msg::Datagram { from, mut bytes } => {
                    self.pump
                        .open_one(now, from, &mut bytes, &mut self.tun, &mut self.ctl);
                }
                Msg::Packets(batch) => self.seal_packets(now, &batch),
                Msg::Failed(why) => {
                    error!("{why}");
                    self.worker_failed = Some(why);
                }
                Msg::Change(_) | Msg::Stop => {}
            }
        }
    }

    fn flush_transmits(&mut self, now: Instant) {
        for _ in 0..MAX_TRANSMITS_PER_TURN {
            let Some(dst) = self.ctl.server.poll_transmit(now, &mut self.tx_buf) else {
                break;
            };
            let mut out = Out {
                udp: self.udp.as_ref(),
                streams: self.tcp.as_mut().map(|t| t as &mut dyn batch::Streams),
            };
            self.pump.send_one(now, &mut out, &self.tx_buf, dst);
        }
    }

    /// The management interface (if configured) and what it may use of the server.
    fn management(&mut self, now: Instant) -> (Option<&mut Management>, management::Ctx<'_>) {
        let ctx = management::Ctx {
            server: &mut self.ctl.server,
            now,
            clock: self.opts.clock,
            title: &self.opts.title,
            cids: &self.cids,
            metrics: self.metrics.as_ref().map(|(m, _)| m),
        };
        (self.mgmt.as_mut(), ctx)
    }

    /// Lifecycle events for the management interface and the auth worker: logins to
    /// decide, addresses given, departures.
    fn forward_to_auth(&mut self, now: Instant, ev: ServerEvent) {
        let ev = match AuthRequest::try_from(ev) {
            Ok(mut req) => {
                if let Some(pi) = self.ctl.server.peer_info(req.peer_id) {
                    req.peer_info = management::env::peer_info(pi);
                }
                return self.authorise(now, req);
            }
            Err(ev) => ev,
        };
        self.management_event(now, &ev);
        let Some(auth) = self.opts.auth.as_mut() else {
            return;
        };
        let sent = match ev {
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

    /// A login: the user database (the auth worker) decides first, then, with
    /// management-client-auth, the management client; with neither it is refused.
    fn authorise(&mut self, now: Instant, req: AuthRequest) {
        let peer_id = req.peer_id;
        self.cids.assign(peer_id);
        let client_auth = self
            .mgmt
            .as_ref()
            .is_some_and(Management::client_auth_enabled);
        if let Some(auth) = self.opts.auth.as_mut() {
            if let Some(m) = self.mgmt.as_mut().filter(|_| client_auth) {
                m.defer(req.clone());
            }
            if auth.request(req).is_err() {
                error!("the authentication worker is gone; stopping");
                self.auth_gone = true;
            }
            return;
        }
        match self.management(now) {
            (Some(m), mut ctx) if client_auth => {
                m.client_connect(req, warren_openvpn::AuthGrant::default(), &mut ctx);
            }
            (_, mut ctx) => {
                warn!("refusing client peer_id={peer_id}: no authentication worker");
                ctx.authorize(peer_id, AuthDecision::Reject { reason: None });
            }
        }
    }

    /// Client ids and the management interface's view of the other lifecycle events.
    fn management_event(&mut self, now: Instant, ev: &ServerEvent) {
        let unix = self.opts.clock.unix_now();
        if let ServerEvent::Connected { peer_id, .. } = ev {
            self.cids.get_or_assign(*peer_id);
        }
        if let (Some(m), mut ctx) = self.management(now) {
            match ev {
                ServerEvent::Connected {
                    peer_id, vpn_ip, ..
                } => {
                    if let Some(cid) = ctx.cids.get(*peer_id) {
                        m.client_established(*peer_id, cid, *vpn_ip, &mut ctx);
                    }
                }
                ServerEvent::Disconnected {
                    peer_id,
                    bytes_received,
                    bytes_sent,
                    ..
                } => {
                    let bytes = (*bytes_received, *bytes_sent);
                    m.client_gone(*peer_id, ctx.cids.get(*peer_id), bytes, unix);
                }
                ServerEvent::AuthRejected { peer_id, .. } => {
                    m.client_gone(*peer_id, ctx.cids.get(*peer_id), (0, 0), unix);
                }
                _ => {}
            }
        }
        if let ServerEvent::Disconnected { peer_id, .. }
        | ServerEvent::AuthRejected { peer_id, .. } = ev
        {
            self.cids.release(*peer_id);
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
                } => {
                    // With management-client-auth, an acceptance goes on to the
                    // management client.
                    match self.management(now) {
                        (Some(m), mut ctx) => m.database_decided(peer_id, decision, &mut ctx),
                        (None, mut ctx) => ctx.authorize(peer_id, decision),
                    }
                }
                FromWorker::Access(u) => {
                    let n = self.ctl.server.set_access(&u.identity, u.rules);
                    if n > 0 {
                        info!(
                            "access rules of {} changed: applied to {n} live session(s)",
                            u.identity
                        );
                    }
                }
                FromWorker::Kick(k) => {
                    let n = self.ctl.server.kick_target(now, &k.target, &k.message);
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

    /// Clients connected now (sessions past the handshake and authentication).
    fn connected(&self) -> usize {
        let s = &self.ctl.server;
        s.session_count().saturating_sub(s.half_open_count())
    }

    /// With `warren-metrics`: adds this wake-up's work (from `woke`) to thread 0's busy
    /// time and publishes its counters and the engine's when they are due.
    fn publish_metrics(&mut self, woke: Instant) {
        let Some((m, own)) = &mut self.metrics else {
            return;
        };
        let end = self.opts.clock.now();
        own.worked(woke, end);
        own.maybe_publish(end, &self.pump.stats);
        if m.engine_due(end) {
            let tcp = self.tcp.as_ref().map(|t| &t.stats);
            m.publish_engine(end, &self.ctl.server, tcp);
        }
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
            &self.ctl.server.clients(),
        );
        let snap = with_cids(snap, &self.cids);
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

/// Lifecycle lines: the only place addresses and names are logged at info.
fn log_event(ev: &ServerEvent) {
    match ev {
        ServerEvent::Connected {
            peer_id,
            common_name,
            addr,
            vpn_ip,
            vpn_ip6,
            cipher,
            ekm,
            ..
        } => {
            let v6 = vpn_ip6
                .map(|ip| format!(" vpn_ip6={ip}"))
                .unwrap_or_default();
            info!(
                "client connected cn={common_name} addr={addr} vpn_ip={vpn_ip}{v6} cipher={} peer_id={peer_id} key_derivation={}",
                cipher.name(),
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
            ..
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
        ServerEvent::HandshakeFailed { addr, reason, .. } => {
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
        // Rate-limited by the engine (one per kind per 10 s, with the count held back).
        ServerEvent::Overload {
            kind,
            addr,
            limit,
            suppressed,
        } => {
            let more = match suppressed {
                0 => String::new(),
                n => format!(" ({n} more since the last report)"),
            };
            match kind {
                // OpenVPN multi.c's own words, so existing log watches keep working.
                OverloadKind::MaxClients => warn!(
                    "MULTI: new incoming connection would exceed maximum number of clients ({limit}) addr={addr}{more}"
                ),
                OverloadKind::HalfOpenPerSource => warn!(
                    "new connection refused addr={addr}: its address already has {limit} unfinished handshakes (warren-max-half-open-per-source){more}"
                ),
                OverloadKind::HalfOpenEvicted => warn!(
                    "dropped the oldest unfinished handshake addr={addr}: {limit} handshakes in progress (warren-max-half-open){more}"
                ),
                other => warn!("overload {other:?} addr={addr} limit={limit}{more}"),
            }
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
        DisconnectReason::ConnectionClosed => "connection-closed".into(),
        other => format!("{other:?}"),
    }
}

/// The management client ids as the status "Client ID" column.
fn with_cids(mut snap: StatusSnapshot, cids: &ClientIds) -> StatusSnapshot {
    for r in &mut snap.clients {
        if let Some(cid) = cids.get(r.peer_id) {
            r.client_id = cid;
        }
    }
    snap
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
            vpn_ip6: c.vpn_ip6,
            bytes_received: c.bytes_received,
            bytes_sent: c.bytes_sent,
            connected_since: to_unix(c.connected_since),
            last_ref: to_unix(c.last_activity),
            username: c.username.clone(),
            client_id: u64::from(c.peer_id.get()),
            peer_id: c.peer_id,
            cipher: c.cipher.map(|k| k.name().to_owned()),
        })
        .collect();
    rows.sort_by_key(|r| r.peer_id);
    StatusSnapshot {
        title: title.to_owned(),
        now: now_unix,
        clients: rows,
    }
}
