//! A lossy UDP relay: our own netem (this kernel has none), run as the traffic helper's
//! `relay` mode inside a test namespace.
//!
//! The relay listens on `LISTEN` (the address the VPN client is told to connect to) and
//! forwards every datagram to `UPSTREAM` (the VPN server) from a socket of its own; replies
//! from upstream go back to the last client address seen. In each direction, independently,
//! every datagram is, by a seeded RNG (splitmix64, so a run is reproducible for a given
//! arrival order):
//! * dropped with probability `DROP_PPM` / 10^6,
//! * else sent twice with probability `DUP_PPM` / 10^6,
//! * else held back with probability `REORDER_PPM` / 10^6: it is released right after the
//!   next datagram of that direction (which thus overtakes it) or, if none comes, after
//!   `HOLD_MS`. At most one datagram per direction is held (a bounded queue); while one is
//!   held, no second one is.
//!
//! The relay stops by itself after `LIFETIME_MS`, or as soon as the file `STOP_FILE`
//! exists; then it writes its counters to the result file (`key=value`, keys
//! `<dir>_<counter>` with dir `up` = client→server and `down` = server→client), prints
//! them on stderr, and exits. The test's `Proc` guard kills it by PID if it is still
//! running when the test ends.

use std::env;
use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::lab::Lab;
use super::netns::Netns;
use super::process::Proc;

/// Line the relay prints once both sockets are bound.
pub const RELAY_READY: &str = "helper: relay ready";

const ARG_PREFIX: &str = "WARREN_IT_";
/// Largest datagram the relay carries (UDP's own limit).
const MAX_DATAGRAM: usize = 65_536;
/// How often an idle direction checks whether it should stop.
const IDLE_TICK: Duration = Duration::from_millis(20);
/// Hard cap on the relay's lifetime, whatever the test asks for.
const MAX_LIFETIME: Duration = Duration::from_secs(600);

/// What a relay does to the datagrams of each direction, in parts per million.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    pub drop_ppm: u32,
    pub dup_ppm: u32,
    pub reorder_ppm: u32,
    /// How long a held-back datagram waits for the next one at most.
    pub hold: Duration,
}

impl Impairment {
    /// 5 % loss, 1 % duplicates, 3 % reordered.
    pub const LOSSY: Impairment = Impairment {
        drop_ppm: 50_000,
        dup_ppm: 10_000,
        reorder_ppm: 30_000,
        hold: Duration::from_millis(5),
    };

    /// `drop_percent` % loss, with the duplicates and reordering of [`Impairment::LOSSY`].
    pub fn with_loss_percent(drop_percent: u32) -> Impairment {
        assert!(drop_percent <= 100);
        Impairment {
            drop_ppm: drop_percent * 10_000,
            ..Impairment::LOSSY
        }
    }

    /// The relay's environment arguments (without the `WARREN_IT_` prefix).
    pub fn args(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DROP_PPM", self.drop_ppm.to_string()),
            ("DUP_PPM", self.dup_ppm.to_string()),
            ("REORDER_PPM", self.reorder_ppm.to_string()),
            ("HOLD_MS", self.hold.as_millis().to_string()),
        ]
    }
}

/// What happened to the datagrams of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirCounts {
    /// Datagrams received from the sender.
    pub received: u64,
    /// Datagrams sent on (duplicates count twice).
    pub forwarded: u64,
    pub dropped: u64,
    pub duplicated: u64,
    /// Datagrams held back...
    pub held: u64,
    /// ...of which a later datagram overtook (the rest were only delayed by `HOLD_MS`).
    pub reordered: u64,
    /// Server→client datagrams before any client was seen, or failed sends.
    pub undeliverable: u64,
}

impl DirCounts {
    const KEYS: [&'static str; 7] = [
        "received",
        "forwarded",
        "dropped",
        "duplicated",
        "held",
        "reordered",
        "undeliverable",
    ];

    fn values(&self) -> [u64; 7] {
        [
            self.received,
            self.forwarded,
            self.dropped,
            self.duplicated,
            self.held,
            self.reordered,
            self.undeliverable,
        ]
    }

    fn from_kv(m: &std::collections::BTreeMap<String, String>, dir: &str) -> DirCounts {
        let g = |k: &str| -> u64 {
            m.get(&format!("{dir}_{k}"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        DirCounts {
            received: g("received"),
            forwarded: g("forwarded"),
            dropped: g("dropped"),
            duplicated: g("duplicated"),
            held: g("held"),
            reordered: g("reordered"),
            undeliverable: g("undeliverable"),
        }
    }

    /// Panics unless this direction saw at least one drop, duplicate and reordering.
    pub fn assert_impaired(&self, dir: &str) {
        assert!(
            self.dropped > 0 && self.duplicated > 0 && self.reordered > 0,
            "the relay did not impair the {dir} direction: {self:?}"
        );
    }
}

/// The relay's final counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayCounts {
    /// Client → server.
    pub up: DirCounts,
    /// Server → client.
    pub down: DirCounts,
}

impl RelayCounts {
    /// Parses the relay's result file.
    pub fn read(path: &Path) -> Result<RelayCounts, String> {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("read relay result {}: {e}", path.display()))?;
        let m = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(RelayCounts {
            up: DirCounts::from_kv(&m, "up"),
            down: DirCounts::from_kv(&m, "down"),
        })
    }
}

/// splitmix64, enough for impairment decisions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..1_000_000 (the modulo bias is far below what matters here).
    fn ppm(&mut self) -> u32 {
        (self.next() % 1_000_000) as u32
    }
}

fn arg(name: &str) -> Result<String, String> {
    env::var(format!("{ARG_PREFIX}{name}")).map_err(|_| format!("missing {ARG_PREFIX}{name}"))
}

fn arg_u64(name: &str) -> Result<u64, String> {
    arg(name)?
        .parse()
        .map_err(|e| format!("{ARG_PREFIX}{name}: {e}"))
}

fn arg_ppm(name: &str) -> Result<u32, String> {
    let v = arg_u64(name)?;
    u32::try_from(v)
        .ok()
        .filter(|v| *v <= 1_000_000)
        .ok_or_else(|| format!("{ARG_PREFIX}{name}={v} is not a ppm value"))
}

/// Where a direction sends what it forwards.
enum Dest {
    /// Always the same address (upstream).
    Fixed(SocketAddr),
    /// The last client address the other direction saw.
    Client(Arc<Mutex<Option<SocketAddr>>>),
}

/// The first datagrams of each direction are logged one by one (opcode, size, fate).
const TRACE_FIRST: u64 = 200;

/// One direction of the relay: receive on `rx`, impair, send on `tx`.
struct Direction {
    name: &'static str,
    start: Instant,
    rx: UdpSocket,
    tx: UdpSocket,
    dest: Dest,
    /// Set by the client→server direction: the client's address.
    learn: Option<Arc<Mutex<Option<SocketAddr>>>>,
    imp: Impairment,
    rng: Rng,
    counts: DirCounts,
    /// The held-back datagram (at most one: the bounded queue) and when it is due.
    held: Vec<u8>,
    held_due: Option<Instant>,
}

impl Direction {
    fn dest(&self) -> Option<SocketAddr> {
        match &self.dest {
            Dest::Fixed(a) => Some(*a),
            Dest::Client(c) => *c.lock().expect("client address lock"),
        }
    }

    fn send(&mut self, buf: &[u8]) {
        let Some(to) = self.dest() else {
            self.counts.undeliverable += 1;
            return;
        };
        match self.tx.send_to(buf, to) {
            Ok(_) => self.counts.forwarded += 1,
            // A full socket buffer or an ICMP error from an earlier send: the datagram is
            // lost, as it would be on a real path.
            Err(_) => self.counts.undeliverable += 1,
        }
    }

    fn release_held(&mut self) {
        if self.held_due.take().is_some() {
            let held = std::mem::take(&mut self.held);
            self.send(&held);
            self.held = held;
        }
    }

    fn run(mut self, stop: &AtomicBool) -> DirCounts {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        self.held = Vec::with_capacity(MAX_DATAGRAM);
        while !stop.load(Ordering::Relaxed) {
            let wait = match self.held_due {
                Some(due) => {
                    let now = Instant::now();
                    if now >= due {
                        self.release_held();
                        continue;
                    }
                    (due - now).clamp(Duration::from_millis(1), IDLE_TICK)
                }
                None => IDLE_TICK,
            };
            if self.rx.set_read_timeout(Some(wait)).is_err() {
                break;
            }
            let (n, from) = match self.rx.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                // ECONNREFUSED and the like (an ICMP error for an earlier send): go on.
                Err(_) => continue,
            };
            if let Some(learn) = &self.learn {
                *learn.lock().expect("client address lock") = Some(from);
            }
            self.counts.received += 1;
            let r = self.rng.ppm();
            let (d, u, h) = (self.imp.drop_ppm, self.imp.dup_ppm, self.imp.reorder_ppm);
            let holding = self.held_due.is_some();
            let action = if r < d {
                "drop"
            } else if r < d.saturating_add(u) {
                "dup"
            } else if r < d.saturating_add(u).saturating_add(h) && !holding {
                "hold"
            } else {
                "pass"
            };
            if self.counts.received <= TRACE_FIRST {
                // The OpenVPN opcode and key id are the first byte (in the clear also with
                // tls-crypt): enough to tell which handshake packet was lost.
                let b = buf.first().copied().unwrap_or(0);
                eprintln!(
                    "relay {} #{} {:?} op={} key={} len={n} {action}",
                    self.name,
                    self.counts.received,
                    self.start.elapsed(),
                    b >> 3,
                    b & 7
                );
            }
            match action {
                "drop" => {
                    self.counts.dropped += 1;
                    continue;
                }
                "dup" => {
                    self.counts.duplicated += 1;
                    self.send(&buf[..n]);
                    self.send(&buf[..n]);
                }
                "hold" => {
                    self.counts.held += 1;
                    self.held.clear();
                    self.held.extend_from_slice(&buf[..n]);
                    self.held_due = Some(Instant::now() + self.imp.hold);
                    continue;
                }
                _ => self.send(&buf[..n]),
            }
            if holding {
                // This datagram overtook the held one, which goes right after it.
                self.counts.reordered += 1;
                self.release_held();
            }
        }
        self.release_held();
        self.counts
    }
}

/// The `relay` mode of the traffic helper (see the module doc).
pub fn relay_main() -> Result<(), String> {
    let listen: SocketAddr = arg("LISTEN")?.parse().map_err(|e| format!("LISTEN: {e}"))?;
    let upstream: SocketAddr = arg("UPSTREAM")?
        .parse()
        .map_err(|e| format!("UPSTREAM: {e}"))?;
    let seed = arg_u64("SEED")?;
    let imp = Impairment {
        drop_ppm: arg_ppm("DROP_PPM")?,
        dup_ppm: arg_ppm("DUP_PPM")?,
        reorder_ppm: arg_ppm("REORDER_PPM")?,
        hold: Duration::from_millis(arg_u64("HOLD_MS")?.min(1000)),
    };
    let lifetime = Duration::from_millis(arg_u64("LIFETIME_MS")?).min(MAX_LIFETIME);
    let stop_file = arg("STOP_FILE")?;
    let result = arg("RESULT")?;

    let front = UdpSocket::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let back_addr: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let back = UdpSocket::bind(back_addr).map_err(|e| format!("bind {back_addr}: {e}"))?;
    let clone = |s: &UdpSocket| s.try_clone().map_err(|e| format!("dup socket: {e}"));
    let client = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let up = Direction {
        name: "up",
        start,
        rx: clone(&front)?,
        tx: clone(&back)?,
        dest: Dest::Fixed(upstream),
        learn: Some(client.clone()),
        imp,
        rng: Rng(seed),
        counts: DirCounts::default(),
        held: Vec::new(),
        held_due: None,
    };
    let down = Direction {
        name: "down",
        start,
        rx: back,
        tx: front,
        dest: Dest::Client(client),
        learn: None,
        imp,
        rng: Rng(seed ^ 0xD0D0_D0D0_5EED_5EED),
        counts: DirCounts::default(),
        held: Vec::new(),
        held_due: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |name: &str, d: Direction| {
        let stop = stop.clone();
        thread::Builder::new()
            .name(name.into())
            .spawn(move || d.run(&stop))
            .map_err(|e| format!("spawn {name}: {e}"))
    };
    let t_up = spawn("relay-up", up)?;
    let t_down = spawn("relay-down", down)?;
    eprintln!("{RELAY_READY} on {listen} -> {upstream} ({imp:?}, seed {seed})");

    let deadline = Instant::now() + lifetime;
    while Instant::now() < deadline && !Path::new(&stop_file).exists() {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let up = t_up.join().map_err(|_| "relay-up panicked")?;
    let down = t_down.join().map_err(|_| "relay-down panicked")?;

    let mut out = String::new();
    for (dir, c) in [("up", up), ("down", down)] {
        for (k, v) in DirCounts::KEYS.iter().zip(c.values()) {
            out.push_str(&format!("{dir}_{k}={v}\n"));
        }
    }
    eprint!("helper: relay counts\n{out}");
    // Write then rename, so a reader never sees half a file.
    let tmp = format!("{result}.tmp");
    fs::write(&tmp, &out).map_err(|e| format!("write {tmp}: {e}"))?;
    fs::rename(&tmp, &result).map_err(|e| format!("rename {tmp}: {e}"))?;
    Ok(())
}

/// Where a relay listens and forwards to, what it does to the traffic, and for how long.
#[derive(Clone, Debug)]
pub struct RelaySpec {
    /// The relay listens on `0.0.0.0:port` (clients send here).
    pub port: u16,
    /// The server the relay forwards to.
    pub upstream: SocketAddr,
    pub imp: Impairment,
    /// Seed of the impairment RNG (the server→client direction derives its own from it).
    pub seed: u64,
    /// The relay stops by itself after this (capped at 10 minutes).
    pub lifetime: Duration,
}

/// A running relay (the traffic helper in `relay` mode), killed by PID when dropped.
#[derive(Debug)]
pub struct Relay {
    proc: Proc,
    result: PathBuf,
    stop_file: PathBuf,
    /// Where clients should send to (the relay's listening port).
    pub port: u16,
}

impl Relay {
    /// Starts a relay named `name` in `ns`; returns once its sockets are bound (at most
    /// 15 s).
    pub fn start(lab: &Lab, ns: &Netns, name: &str, spec: &RelaySpec) -> Relay {
        let RelaySpec {
            port,
            upstream,
            imp,
            seed,
            lifetime,
        } = *spec;
        let stop_file = lab.dir().join(format!("{name}.stop"));
        let _ = fs::remove_file(&stop_file);
        let mut args = vec![
            ("LISTEN", format!("0.0.0.0:{port}")),
            ("UPSTREAM", upstream.to_string()),
            ("SEED", seed.to_string()),
            ("LIFETIME_MS", lifetime.as_millis().to_string()),
            (
                "STOP_FILE",
                stop_file.to_str().expect("UTF-8 path").to_string(),
            ),
        ];
        args.extend(imp.args());
        let (mut proc, result) = lab.helper(ns, name, "relay", &args);
        if let Err(e) = proc.wait_for_line(RELAY_READY, Duration::from_secs(15)) {
            panic!("relay {name} did not start: {e}");
        }
        Relay {
            proc,
            result,
            stop_file,
            port,
        }
    }

    /// Asks the relay to stop, waits for it (at most 10 s) and returns its counters.
    pub fn stop(mut self) -> RelayCounts {
        fs::write(&self.stop_file, b"stop\n").expect("write relay stop file");
        let st = self.proc.wait_exit(Duration::from_secs(10));
        if !st.is_some_and(|s| s.success()) {
            panic!(
                "relay {} did not stop cleanly ({st:?}):\n{}",
                self.proc.name(),
                self.proc.log_tail(20)
            );
        }
        let counts = RelayCounts::read(&self.result).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("relay {}: {counts:?}", self.proc.name());
        counts
    }
}
