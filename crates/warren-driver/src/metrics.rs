//! Prometheus metrics of a running server (issue 14), served by [`crate::metrics_http`] on
//! an address the admin opts into (`warren-metrics ADDR`, `--metrics ADDR`).
//!
//! The model: nothing on the data path knows about Prometheus. Every data thread keeps its
//! plain [`LoopStats`] as before and, at most once per [`PUBLISH_EVERY`] (checked once per
//! wake-up, never per packet), copies them into its [`ThreadCounters`]: relaxed atomic
//! stores, no lock, no allocation. The control thread publishes what the engine knows
//! (sessions, drops on the control path, admission refusals) the same way, and counts the
//! lifecycle events it already handles (handshake failures by kind, authentication
//! results, disconnects, the handshake-duration histogram). The HTTP thread reads all of
//! it at scrape time through a [`Collector`]; a scrape never waits for a data thread, and
//! a data thread never waits for a scrape.
//!
//! Names follow the Prometheus conventions: the `warren_` prefix, the unit in the name
//! (`_bytes_total`, `_seconds`), and labels for what varies within a family
//! (`thread`, `direction`, `reason`, `result`, `state`). Directions are the server's: on
//! the link (the OpenVPN packets on the UDP socket and TCP connections) `rx` is from the
//! clients; on the tun `rx` is read from the device (traffic to the clients) and `tx` is
//! written to it (traffic from the clients).
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use warren_core::Instant;
use warren_openvpn::{
    DisconnectReason, DropReason, HandshakeFailure, Server, ServerCounters, ServerEvent,
};

use crate::batch::LoopStats;
use crate::tcp::TcpStats;

/// How often a thread copies its counters for the scraper (at most).
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// I/O drops that have no [`DropReason`]: (label, counter in [`LoopStats`] or [`TcpStats`]).
const IO_DROPS: [&str; 7] = [
    "udp_truncated",
    "udp_send_buffer_full",
    "udp_send_error",
    "tun_read_bad",
    "tun_write_error",
    "tcp_queue_full",
    "tcp_bad_frame",
];

/// [`DisconnectReason::label`] values, in the order of [`EngineCounters::disconnects`].
const DISCONNECT_REASONS: [&str; 10] = [
    "exit_notify",
    "ping_timeout",
    "handshake_timeout",
    "tls_error",
    "replaced",
    "shutdown",
    "auth_failed",
    "kicked",
    "overloaded",
    "connection_closed",
];

/// Handshake duration buckets: 5 ms to about 20 s, doubling.
const HANDSHAKE_BUCKETS: (f64, f64, u16) = (0.005, 2.0, 13);

fn counters<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// One data thread's counters, as it last published them.
#[derive(Debug)]
pub(crate) struct ThreadCounters {
    link_rx_packets: AtomicU64,
    link_rx_bytes: AtomicU64,
    link_tx_packets: AtomicU64,
    link_tx_bytes: AtomicU64,
    tun_rx_packets: AtomicU64,
    tun_rx_bytes: AtomicU64,
    tun_tx_packets: AtomicU64,
    tun_tx_bytes: AtomicU64,
    handed_off: AtomicU64,
    busy_ns: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// The first five of [`IO_DROPS`] (the TCP ones are the control thread's).
    io_dropped: [AtomicU64; 5],
}

impl ThreadCounters {
    fn new() -> ThreadCounters {
        ThreadCounters {
            link_rx_packets: AtomicU64::new(0),
            link_rx_bytes: AtomicU64::new(0),
            link_tx_packets: AtomicU64::new(0),
            link_tx_bytes: AtomicU64::new(0),
            tun_rx_packets: AtomicU64::new(0),
            tun_rx_bytes: AtomicU64::new(0),
            tun_tx_packets: AtomicU64::new(0),
            tun_tx_bytes: AtomicU64::new(0),
            handed_off: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            dropped: counters(),
            io_dropped: counters(),
        }
    }

    /// Copies a thread's counters (relaxed stores: the scraper wants recent values, not a
    /// consistent snapshot of all of them).
    pub fn publish(&self, s: &LoopStats, busy: Duration) {
        self.link_rx_packets
            .store(s.udp_received + s.tcp_received, Relaxed);
        self.link_rx_bytes.store(s.link_rx_bytes, Relaxed);
        self.link_tx_packets
            .store(s.udp_sent + s.tcp_framed, Relaxed);
        self.link_tx_bytes.store(s.link_tx_bytes, Relaxed);
        self.tun_rx_packets.store(s.tun_read, Relaxed);
        self.tun_rx_bytes.store(s.tun_read_bytes, Relaxed);
        self.tun_tx_packets.store(s.tun_written, Relaxed);
        self.tun_tx_bytes.store(s.tun_written_bytes, Relaxed);
        self.handed_off.store(s.handed_off, Relaxed);
        self.busy_ns
            .store(u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        for (a, v) in self.dropped.iter().zip(s.dropped) {
            a.store(v, Relaxed);
        }
        let io = [
            s.udp_truncated,
            s.udp_send_would_block,
            s.udp_send_errors,
            s.tun_read_bad,
            s.tun_write_errors,
        ];
        for (a, v) in self.io_dropped.iter().zip(io) {
            a.store(v, Relaxed);
        }
    }
}

/// A data thread's side: its counters, when to publish next, and how long it has worked.
#[derive(Debug)]
pub(crate) struct ThreadPublisher {
    counters: Arc<Shared>,
    index: usize,
    next: Instant,
    busy: Duration,
}

impl ThreadPublisher {
    /// Adds the time of one wake-up's work (`from` the end of the wait to `to`).
    pub fn worked(&mut self, from: Instant, to: Instant) {
        self.busy += to.saturating_duration_since(from);
    }

    /// Publishes `stats` when [`PUBLISH_EVERY`] has passed since the last time.
    pub fn maybe_publish(&mut self, now: Instant, stats: &LoopStats) {
        if now >= self.next {
            self.publish(now, stats);
        }
    }

    /// Publishes `stats` now.
    pub fn publish(&mut self, now: Instant, stats: &LoopStats) {
        if let Some(t) = self.counters.threads.get(self.index) {
            t.publish(stats, self.busy);
        }
        self.next = now + PUBLISH_EVERY;
    }
}

/// What the control thread knows about the engine and its lifecycle events.
#[derive(Debug)]
struct EngineCounters {
    connected: AtomicU64,
    handshaking: AtomicU64,
    handshakes_started: AtomicU64,
    handshakes_completed: AtomicU64,
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    /// Accepted, rejected.
    auth: [AtomicU64; 2],
    disconnects: [AtomicU64; DISCONNECT_REASONS.len()],
    /// Max clients, half-open per source, half-open evicted.
    admission: [AtomicU64; 3],
    control_dropped: [AtomicU64; DropReason::ALL.len()],
    /// Accepted, refused.
    tcp_connections: [AtomicU64; 2],
    /// The last two of [`IO_DROPS`].
    tcp_dropped: [AtomicU64; 2],
}

/// Everything the scraper reads.
#[derive(Debug)]
struct Shared {
    threads: Box<[ThreadCounters]>,
    engine: EngineCounters,
}

/// The control thread's handle on the metrics: publishes the engine's state, counts its
/// events, and hands each data thread its [`ThreadPublisher`].
#[derive(Debug)]
pub(crate) struct Metrics {
    shared: Arc<Shared>,
    handshake_duration: Histogram,
    next_engine: Instant,
}

impl Metrics {
    /// Counters for `threads` data threads (the control thread is thread 0), and the
    /// registry the HTTP thread encodes.
    pub fn new(threads: usize, now: Instant) -> (Metrics, Registry) {
        let shared = Arc::new(Shared {
            threads: (0..threads.max(1)).map(|_| ThreadCounters::new()).collect(),
            engine: EngineCounters {
                connected: AtomicU64::new(0),
                handshaking: AtomicU64::new(0),
                handshakes_started: AtomicU64::new(0),
                handshakes_completed: AtomicU64::new(0),
                handshake_failures: counters(),
                auth: counters(),
                disconnects: counters(),
                admission: counters(),
                control_dropped: counters(),
                tcp_connections: counters(),
                tcp_dropped: counters(),
            },
        });
        let (start, factor, n) = HANDSHAKE_BUCKETS;
        let handshake_duration = Histogram::new(exponential_buckets(start, factor, n));
        let mut registry = Registry::with_prefix("warren");
        registry.register_collector(Box::new(Scrape(Arc::clone(&shared))));
        registry.register_with_unit(
            "handshake_duration",
            "Time from a session's creation (the client's first packet after the address check) to its connection: TLS handshake, key exchange and authentication",
            Unit::Seconds,
            handshake_duration.clone(),
        );
        let m = Metrics {
            shared,
            handshake_duration,
            next_engine: now,
        };
        (m, registry)
    }

    /// The publisher of data thread `index` (0: the control thread).
    pub fn thread(&self, index: usize, now: Instant) -> ThreadPublisher {
        ThreadPublisher {
            counters: Arc::clone(&self.shared),
            index,
            next: now,
            busy: Duration::ZERO,
        }
    }

    /// Whether the engine's state is due to be published again.
    pub fn engine_due(&self, now: Instant) -> bool {
        now >= self.next_engine
    }

    /// When [`Metrics::publish_engine`] wants to run next.
    pub fn next_deadline(&self) -> Instant {
        self.next_engine
    }

    /// Publishes what the engine counts (sessions, control-path drops, admission) and the
    /// TCP listener's counters.
    pub fn publish_engine(&mut self, now: Instant, server: &Server, tcp: Option<&TcpStats>) {
        let e = &self.shared.engine;
        self.sessions(server);
        let c: ServerCounters = server.counters();
        e.handshakes_started.store(c.handshakes, Relaxed);
        for (a, r) in e.control_dropped.iter().zip(DropReason::ALL) {
            a.store(c.dropped.get(&r).copied().unwrap_or(0), Relaxed);
        }
        let admission = [
            c.max_clients_refused,
            c.half_open_refused,
            c.half_open_evicted,
        ];
        for (a, v) in e.admission.iter().zip(admission) {
            a.store(v, Relaxed);
        }
        if let Some(t) = tcp {
            e.tcp_connections[0].store(t.accepted, Relaxed);
            e.tcp_connections[1].store(t.refused, Relaxed);
            e.tcp_dropped[0].store(t.queue_dropped, Relaxed);
            e.tcp_dropped[1].store(t.bad_frames, Relaxed);
        }
        self.next_engine = now + PUBLISH_EVERY;
    }

    /// The session gauges (cheap: two counts the engine keeps).
    pub fn sessions(&self, server: &Server) {
        let e = &self.shared.engine;
        let half_open = server.half_open_count() as u64;
        let all = server.session_count() as u64;
        e.connected.store(all.saturating_sub(half_open), Relaxed);
        e.handshaking.store(half_open, Relaxed);
    }

    /// A client connected after a handshake of `took`.
    pub fn connected(&self, took: Duration) {
        self.shared
            .engine
            .handshakes_completed
            .fetch_add(1, Relaxed);
        self.handshake_duration.observe(took.as_secs_f64());
    }

    pub fn handshake_failed(&self, kind: HandshakeFailure) {
        if let Some(i) = HandshakeFailure::ALL.iter().position(|k| *k == kind) {
            self.shared.engine.handshake_failures[i].fetch_add(1, Relaxed);
        }
    }

    pub fn disconnected(&self, reason: &DisconnectReason) {
        if let Some(i) = DISCONNECT_REASONS.iter().position(|l| *l == reason.label()) {
            self.shared.engine.disconnects[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a lifecycle event of the engine (and refreshes the session gauges).
    pub fn on_event(&self, ev: &ServerEvent, server: &Server) {
        match ev {
            ServerEvent::Connected { handshake, .. } => self.connected(*handshake),
            ServerEvent::HandshakeFailed { kind, .. } => self.handshake_failed(*kind),
            ServerEvent::Disconnected { reason, .. } => self.disconnected(reason),
            _ => return,
        }
        self.sessions(server);
    }

    /// A final authentication decision ([`crate::management::Ctx::authorize`]: the user
    /// database's, the management client's, or a refusal without either).
    pub fn auth(&self, accepted: bool) {
        self.shared.engine.auth[usize::from(!accepted)].fetch_add(1, Relaxed);
    }
}

/// The scrape-time view of [`Shared`].
#[derive(Debug)]
struct Scrape(Arc<Shared>);

/// One counter family: its rows of (labels, value).
fn counter_family<S: EncodeLabelSet, V: EncodeCounterValue + Copy>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: &[(S, V)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family<S: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(S, i64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

fn gauge(a: &AtomicU64) -> i64 {
    i64::try_from(get(a)).unwrap_or(i64::MAX)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let s = &*self.0;
        let e = &s.engine;
        gauge_family(
            &mut enc,
            "build_info",
            "The running warren's version (always 1)",
            &[([("version", env!("CARGO_PKG_VERSION"))], 1)],
        )?;
        gauge_family(
            &mut enc,
            "sessions",
            "Client sessions: connected, or not (yet): in the handshake or authentication, or closing after a failure",
            &[
                ([("state", "connected")], gauge(&e.connected)),
                ([("state", "handshaking")], gauge(&e.handshaking)),
            ],
        )?;
        counter_family(
            &mut enc,
            "handshakes_started",
            "Sessions created after the client's address check (the cookie exchange on UDP)",
            None,
            &[(NoLabels, get(&e.handshakes_started))],
        )?;
        counter_family(
            &mut enc,
            "handshakes_completed",
            "Sessions that finished the handshake and authentication and were connected",
            None,
            &[(NoLabels, get(&e.handshakes_completed))],
        )?;
        let rows: Vec<_> = HandshakeFailure::ALL
            .iter()
            .zip(&e.handshake_failures)
            .map(|(k, a)| ([("reason", k.label())], get(a)))
            .collect();
        counter_family(
            &mut enc,
            "handshake_failures",
            "Handshakes that failed before the client was identified, by kind",
            None,
            &rows,
        )?;
        counter_family(
            &mut enc,
            "auth",
            "Authentication decisions of the user database",
            None,
            &[
                ([("result", "accepted")], get(&e.auth[0])),
                ([("result", "rejected")], get(&e.auth[1])),
            ],
        )?;
        let rows: Vec<_> = DISCONNECT_REASONS
            .iter()
            .zip(&e.disconnects)
            .map(|(r, a)| ([("reason", *r)], get(a)))
            .collect();
        counter_family(
            &mut enc,
            "disconnects",
            "Sessions ended, by reason",
            None,
            &rows,
        )?;
        counter_family(
            &mut enc,
            "admission_refused",
            "New sessions refused (max-clients, warren-max-half-open-per-source) or evicted (warren-max-half-open)",
            None,
            &[
                ([("reason", "max_clients")], get(&e.admission[0])),
                ([("reason", "half_open_per_source")], get(&e.admission[1])),
                ([("reason", "half_open_evicted")], get(&e.admission[2])),
            ],
        )?;
        counter_family(
            &mut enc,
            "tcp_connections",
            "TCP connections accepted, or refused by a limit",
            None,
            &[
                ([("result", "accepted")], get(&e.tcp_connections[0])),
                ([("result", "refused")], get(&e.tcp_connections[1])),
            ],
        )?;

        // Drops: the engine's (control path), every thread's data path, and I/O.
        let mut rows: Vec<([(&str, &str); 1], u64)> = DropReason::ALL
            .iter()
            .map(|r| {
                let i = r.index();
                let data: u64 = s.threads.iter().map(|t| get(&t.dropped[i])).sum();
                ([("reason", r.label())], get(&e.control_dropped[i]) + data)
            })
            .collect();
        for (i, label) in IO_DROPS.iter().enumerate() {
            let v = match i {
                0..=4 => s.threads.iter().map(|t| get(&t.io_dropped[i])).sum(),
                _ => get(&e.tcp_dropped[i - 5]),
            };
            rows.push(([("reason", *label)], v));
        }
        counter_family(
            &mut enc,
            "dropped_packets",
            "Packets dropped, by reason (never logged above trace: the sender controls the volume)",
            None,
            &rows,
        )?;

        // Per data thread.
        let per_dir = |f: &dyn Fn(&ThreadCounters) -> (u64, u64)| -> Vec<(ThreadDir, u64)> {
            let mut rows = Vec::with_capacity(2 * s.threads.len());
            for (i, t) in s.threads.iter().enumerate() {
                let (rx, tx) = f(t);
                rows.push((ThreadDir(i, "rx"), rx));
                rows.push((ThreadDir(i, "tx"), tx));
            }
            rows
        };
        counter_family(
            &mut enc,
            "link_packets",
            "OpenVPN packets on the UDP socket and TCP connections, per data thread (rx: from clients)",
            None,
            &per_dir(&|t| (get(&t.link_rx_packets), get(&t.link_tx_packets))),
        )?;
        counter_family(
            &mut enc,
            "link",
            "Bytes of the OpenVPN packets on the UDP socket and TCP connections, per data thread (rx: from clients)",
            Some(&Unit::Bytes),
            &per_dir(&|t| (get(&t.link_rx_bytes), get(&t.link_tx_bytes))),
        )?;
        counter_family(
            &mut enc,
            "tun_packets",
            "Packets read from (rx, to clients) and written to (tx, from clients) the tun device, per data thread",
            None,
            &per_dir(&|t| (get(&t.tun_rx_packets), get(&t.tun_tx_packets))),
        )?;
        counter_family(
            &mut enc,
            "tun",
            "Bytes read from (rx) and written to (tx) the tun device, per data thread",
            Some(&Unit::Bytes),
            &per_dir(&|t| (get(&t.tun_rx_bytes), get(&t.tun_tx_bytes))),
        )?;
        let rows: Vec<_> = s
            .threads
            .iter()
            .enumerate()
            .map(|(i, t)| ([("thread", i)], get(&t.handed_off)))
            .collect();
        counter_family(
            &mut enc,
            "handoff_packets",
            "Tun packets read by one data thread and handed to the thread that owns their peer",
            None,
            &rows,
        )?;
        let rows: Vec<_> = s
            .threads
            .iter()
            .enumerate()
            .map(|(i, t)| ([("thread", i)], get(&t.busy_ns) as f64 / 1e9))
            .collect();
        counter_family(
            &mut enc,
            "thread_busy",
            "Time each data thread spent working rather than waiting for I/O (thread 0 also runs the control side)",
            Some(&Unit::Seconds),
            &rows,
        )?;
        Ok(())
    }
}

/// No labels.
#[derive(Debug, Clone, Copy)]
struct NoLabels;

impl EncodeLabelSet for NoLabels {
    fn encode(&self, _: &mut prometheus_client::encoding::LabelSetEncoder<'_>) -> fmt::Result {
        Ok(())
    }
}

/// `thread` and `direction`.
#[derive(Debug, Clone, Copy)]
struct ThreadDir(usize, &'static str);

impl EncodeLabelSet for ThreadDir {
    fn encode(&self, enc: &mut prometheus_client::encoding::LabelSetEncoder<'_>) -> fmt::Result {
        [("thread", self.0)].encode(enc)?;
        [("direction", self.1)].encode(enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, sample: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn published_counters_and_events_appear_under_their_names() {
        let now = Instant::ZERO;
        let (m, registry) = Metrics::new(2, now);
        let mut t1 = m.thread(1, now);
        let mut s = LoopStats {
            udp_received: 10,
            link_rx_bytes: 12_345,
            tun_written: 9,
            tun_written_bytes: 11_000,
            udp_send_would_block: 2,
            ..LoopStats::default()
        };
        s.dropped[DropReason::Replay.index()] = 4;
        t1.worked(now, now + Duration::from_millis(1500));
        t1.publish(now, &s);
        // Not due yet: nothing changes.
        s.udp_received = 99;
        t1.maybe_publish(now + Duration::from_millis(10), &s);
        m.connected(Duration::from_millis(30));
        m.handshake_failed(HandshakeFailure::Certificate);
        m.disconnected(&DisconnectReason::TlsError("x".into()));
        m.auth(true);
        m.auth(false);
        m.auth(false);

        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("encodes");
        let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
        assert_eq!(
            v(r#"warren_link_packets_total{thread="1",direction="rx"}"#),
            10.0
        );
        assert_eq!(
            v(r#"warren_link_packets_total{thread="0",direction="rx"}"#),
            0.0
        );
        assert_eq!(
            v(r#"warren_link_bytes_total{thread="1",direction="rx"}"#),
            12345.0
        );
        assert_eq!(
            v(r#"warren_tun_bytes_total{thread="1",direction="tx"}"#),
            11000.0
        );
        assert_eq!(v(r#"warren_thread_busy_seconds_total{thread="1"}"#), 1.5);
        assert_eq!(v(r#"warren_dropped_packets_total{reason="replay"}"#), 4.0);
        assert_eq!(
            v(r#"warren_dropped_packets_total{reason="udp_send_buffer_full"}"#),
            2.0
        );
        assert_eq!(
            v(r#"warren_handshake_failures_total{reason="certificate"}"#),
            1.0
        );
        assert_eq!(v(r#"warren_handshake_failures_total{reason="tls"}"#), 0.0);
        assert_eq!(v(r#"warren_disconnects_total{reason="tls_error"}"#), 1.0);
        assert_eq!(v(r#"warren_auth_total{result="accepted"}"#), 1.0);
        assert_eq!(v(r#"warren_auth_total{result="rejected"}"#), 2.0);
        assert_eq!(v("warren_handshakes_completed_total"), 1.0);
        assert_eq!(v("warren_handshake_duration_seconds_count"), 1.0);
        assert_eq!(
            v(r#"warren_handshake_duration_seconds_bucket{le="0.04"}"#),
            1.0
        );
        assert_eq!(
            v(r#"warren_handshake_duration_seconds_bucket{le="0.02"}"#),
            0.0
        );
        assert!(text.contains("# TYPE warren_sessions gauge\n"), "{text}");
    }
}
