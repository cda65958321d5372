//! Traffic helpers that run as a second copy of the test binary inside a namespace.
//!
//! The test binary is started again with `--exact <HELPER_TEST> --nocapture` and the
//! environment variable [`MODE_VAR`]; the helper test calls [`helper_main`], which does the
//! job, writes `key=value` lines to the result file and exits the process. Without the
//! variable `helper_main` returns at once, so the helper test passes as a no-op.
//!
//! Modes:
//! * `sink`: accepts one TCP connection, reads to EOF, hashes with SHA-256, records the
//!   longest pause between two reads (a stall detector).
//! * `source`: connects, sends a pseudo-random stream (a fixed byte count, or for a fixed
//!   time at a fixed rate), hashes what it sent.
//! * `udp-probe`: sends a datagram a few times and counts the replies.
//! * `relay`: a lossy UDP relay (drops, duplicates, reorders; see `relay`).
//! * `flood`: stalled handshakes from many ports of one address (see `flood`).

use std::env;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Name of the `#[test]` function that calls [`helper_main`] (at the test crate root).
pub const HELPER_TEST: &str = "traffic_helper_process";
pub const MODE_VAR: &str = "WARREN_IT_HELPER";
const ARG_PREFIX: &str = "WARREN_IT_";

/// Line the sink prints once it listens.
pub const SINK_READY: &str = "helper: sink listening";

fn arg(name: &str) -> Result<String, String> {
    env::var(format!("{ARG_PREFIX}{name}")).map_err(|_| format!("missing {ARG_PREFIX}{name}"))
}

fn arg_u64(name: &str) -> Result<u64, String> {
    arg(name)?
        .parse()
        .map_err(|e| format!("{ARG_PREFIX}{name}: {e}"))
}

fn opt_u64(name: &str) -> Result<Option<u64>, String> {
    match env::var(format!("{ARG_PREFIX}{name}")) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map(Some)
            .map_err(|e| format!("{ARG_PREFIX}{name}: {e}")),
        _ => Ok(None),
    }
}

/// Entry point of the helper process; returns immediately in a normal test run.
pub fn helper_main() {
    let Ok(mode) = env::var(MODE_VAR) else {
        return;
    };
    let r = match mode.as_str() {
        "sink" => sink(),
        "source" => source(),
        "udp-probe" => udp_probe(),
        "relay" => super::relay::relay_main(),
        "flood" => super::flood::flood_main(),
        other => Err(format!("unknown helper mode {other}")),
    };
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("helper {mode} failed: {e}");
            std::process::exit(2);
        }
    }
}

/// splitmix64: a fast deterministic byte stream, enough for "random" payload.
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

fn write_result(lines: &[(&str, String)]) -> Result<(), String> {
    let path = arg("RESULT")?;
    let mut s = String::new();
    for (k, v) in lines {
        s.push_str(k);
        s.push('=');
        s.push_str(v);
        s.push('\n');
    }
    fs::write(&path, s).map_err(|e| format!("write {path}: {e}"))
}

fn sink() -> Result<(), String> {
    let listen: SocketAddr = arg("LISTEN")?.parse().map_err(|e| format!("LISTEN: {e}"))?;
    let deadline = Instant::now() + Duration::from_millis(arg_u64("DEADLINE_MS")?);
    let listener = TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("nonblocking: {e}"))?;
    eprintln!("{SINK_READY} on {listen}");
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err("no connection before the deadline".into());
                }
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    conn.set_nonblocking(false).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut last = start;
    let mut max_gap = Duration::ZERO;
    let mut hasher = Sha256::new();
    let mut bytes: u64 = 0;
    let mut buf = vec![0u8; 128 * 1024];
    let mut complete = false;
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => {
                complete = true;
                break;
            }
            Ok(n) => {
                let now = Instant::now();
                if bytes > 0 {
                    max_gap = max_gap.max(now - last);
                }
                last = now;
                bytes += n as u64;
                hasher.update(&buf[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {bytes} bytes: {e}")),
        }
    }
    write_result(&[
        ("bytes", bytes.to_string()),
        ("sha256", hex::encode(hasher.finalize())),
        ("max_gap_ms", max_gap.as_millis().to_string()),
        ("elapsed_ms", (last - start).as_millis().to_string()),
        ("complete", complete.to_string()),
    ])
}

fn source() -> Result<(), String> {
    let to: SocketAddr = arg("CONNECT")?
        .parse()
        .map_err(|e| format!("CONNECT: {e}"))?;
    let deadline = Instant::now() + Duration::from_millis(arg_u64("DEADLINE_MS")?);
    let total = opt_u64("BYTES")?;
    let duration = opt_u64("DURATION_MS")?.map(Duration::from_millis);
    let rate = opt_u64("RATE_BPS")?;
    let seed = arg_u64("SEED")?;
    if total.is_none() && duration.is_none() {
        return Err("need BYTES or DURATION_MS".into());
    }
    let mut conn = loop {
        match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
            Ok(c) => break c,
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(format!("connect {to}: {e}"));
                }
                thread::sleep(Duration::from_millis(200));
            }
        }
    };
    conn.set_write_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut stream = Stream(seed);
    let mut hasher = Sha256::new();
    let mut sent: u64 = 0;
    let chunk = if rate.is_some() {
        16 * 1024
    } else {
        128 * 1024
    };
    let mut buf = vec![0u8; chunk];
    let start = Instant::now();
    'outer: loop {
        let want = match (total, duration) {
            (Some(t), _) if sent >= t => break,
            (_, Some(d)) if start.elapsed() >= d => break,
            (Some(t), _) => ((t - sent) as usize).min(chunk),
            _ => chunk,
        };
        if let Some(r) = rate {
            // Pace: do not run ahead of `rate` bytes per second.
            let due = Duration::from_secs_f64(sent as f64 / r as f64);
            let el = start.elapsed();
            if due > el {
                thread::sleep(due - el);
            }
        }
        stream.fill(&mut buf[..want]);
        let mut off = 0;
        while off < want {
            if Instant::now() >= deadline {
                break 'outer;
            }
            match conn.write(&buf[off..want]) {
                Ok(0) => return Err(format!("connection closed after {sent} bytes")),
                Ok(n) => off += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(format!("write after {sent} bytes: {e}")),
            }
        }
        hasher.update(&buf[..want]);
        sent += want as u64;
    }
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Write);
    write_result(&[
        ("bytes", sent.to_string()),
        ("sha256", hex::encode(hasher.finalize())),
        ("elapsed_ms", start.elapsed().as_millis().to_string()),
    ])
}

fn udp_probe() -> Result<(), String> {
    let to: SocketAddr = arg("CONNECT")?
        .parse()
        .map_err(|e| format!("CONNECT: {e}"))?;
    let payload = hex::decode(arg("PAYLOAD_HEX")?).map_err(|e| format!("PAYLOAD_HEX: {e}"))?;
    let sends = arg_u64("SENDS")?.clamp(1, 20);
    let wait = Duration::from_millis(arg_u64("WAIT_MS")?.min(60_000));
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let interval = wait / u32::try_from(sends).unwrap_or(1);
    let mut sent = 0u64;
    let mut replies = 0u64;
    let mut first = String::new();
    let mut buf = [0u8; 2048];
    while start.elapsed() < wait {
        if sent < sends && start.elapsed() >= interval * u32::try_from(sent).unwrap_or(0) {
            sock.send_to(&payload, to)
                .map_err(|e| format!("send: {e}"))?;
            sent += 1;
        }
        // Errors (timeouts; ECONNREFUSED from an ICMP port unreachable) count as no reply.
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if replies == 0 {
                first = hex::encode(&buf[..n]);
            }
            replies += 1;
        }
    }
    write_result(&[
        ("sent", sent.to_string()),
        ("replies", replies.to_string()),
        ("first_reply_hex", first),
    ])
}
