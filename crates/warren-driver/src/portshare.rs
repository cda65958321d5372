//! `port-share HOST PORT` (`openvpn-ops.md` §5.2): a TCP connection whose first bytes are
//! not an OpenVPN client reset is relayed, byte for byte, to HOST:PORT.
//!
//! OpenVPN forks a proxy process and passes it the socket. warren keeps the relay in the
//! server loop instead: both sockets of a relayed connection are non-blocking and polled
//! with the OpenVPN connections, so a slow web client or backend costs only its own pair.
//! The TCP side already re-registers its descriptors before every wait; a relayed pair is
//! two more, and it needs no thread, lock or descriptor passing.
//!
//! Each direction has a bounded buffer ([`RELAY_BUFFER`]): while it is full, its source is
//! not read (back-pressure through TCP's own window). When either side closes (or fails),
//! what is buffered toward the other side is written if the socket takes it, and both are
//! closed. Relayed connections are limited in number.
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use tracing::{debug, info};
use warren_io::{Interest, Poller, TcpConn, Token};

/// Bytes buffered per direction of a relayed connection.
pub const RELAY_BUFFER: usize = 16 * 1024;
/// How long a new connection may take to send the first 3 bytes before it is decided
/// on what it sent (nothing, 1 or 2 bytes). An OpenVPN client sends its reset at once.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(3);

/// Where to relay, and how many relayed connections may exist at once.
#[derive(Debug, Clone)]
pub struct PortShareOptions {
    pub target: SocketAddr,
    pub max_connections: usize,
}

/// What the first bytes of a TCP connection say (OpenVPN ps.c `is_openvpn_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    OpenVpn,
    Foreign,
    /// Could still be OpenVPN: wait for more (at most [`SNIFF_TIMEOUT`]).
    NeedMore,
}

/// Decides on the first bytes of a stream: OpenVPN iff the u16 length and the opcode byte
/// are those of a P_CONTROL_HARD_RESET_CLIENT_V2 (length 14..=255, byte `0x38`) or V3
/// (length 336..1279, byte `0x50`). With 2 bytes, a length that fits either waits for the
/// third; `timed_out` decides with what there is, as OpenVPN does with 2 bytes (OpenVPN iff
/// the length is 14..=255); fewer than 2 bytes are foreign then.
pub fn sniff(first: &[u8], timed_out: bool) -> Sniff {
    let v2 = |len: u16| (14..=255).contains(&len);
    let v3 = |len: u16| (336..1279).contains(&len);
    match *first {
        [a, b, op, ..] => {
            let len = u16::from_be_bytes([a, b]);
            if (v2(len) && op == 0x38) || (v3(len) && op == 0x50) {
                Sniff::OpenVpn
            } else {
                Sniff::Foreign
            }
        }
        [a, b] => {
            let len = u16::from_be_bytes([a, b]);
            match (timed_out, v2(len), v3(len)) {
                (_, false, false) => Sniff::Foreign,
                (false, _, _) => Sniff::NeedMore,
                (true, true, _) => Sniff::OpenVpn,
                (true, false, true) => Sniff::Foreign,
            }
        }
        _ if timed_out => Sniff::Foreign,
        _ => Sniff::NeedMore,
    }
}

/// Counters of the relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortShareStats {
    /// Connections handed to the relay.
    pub relayed: u64,
    /// Foreign connections closed because the relay was at its limit, or the connection to
    /// the target could not be started.
    pub refused: u64,
    /// The target refused or never answered.
    pub connect_failed: u64,
    pub closed: u64,
}

/// One direction's bytes: read from one socket, waiting for the other.
struct Pipe {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source ended (EOF or error): nothing more is read.
    eof: bool,
}

impl Pipe {
    fn new(first: &[u8]) -> Pipe {
        let mut buf = vec![0; RELAY_BUFFER.max(first.len())].into_boxed_slice();
        buf[..first.len()].copy_from_slice(first);
        Pipe {
            buf,
            start: 0,
            end: first.len(),
            eof: false,
        }
    }

    fn pending(&self) -> usize {
        self.end - self.start
    }

    fn room(&self) -> bool {
        !self.eof && self.end < self.buf.len()
    }

    /// Reads from `from` while there is room; [`Pipe::eof`] once the source ended.
    fn fill(&mut self, from: &TcpConn) {
        while self.room() {
            match from.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if warren_io::is_would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.eof = true,
            }
        }
    }

    /// Writes what is buffered to `to`. Returns false when `to` failed.
    fn drain(&mut self, to: &TcpConn) -> bool {
        while self.pending() > 0 {
            match to.write(&self.buf[self.start..self.end]) {
                Ok(0) => return false,
                Ok(n) => self.start += n,
                Err(e) if warren_io::is_would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.end == self.buf.len() {
            // Full up to the end with a written prefix: make room to read again.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        true
    }
}

struct Relay {
    from: SocketAddr,
    client: TcpConn,
    target: TcpConn,
    /// The connection to the target is up.
    connected: bool,
    /// Client to target (starts with the bytes the sniffing read).
    up: Pipe,
    /// Target to client.
    down: Pipe,
    tokens: (Option<Token>, Option<Token>),
}

impl Relay {
    fn interest(read: bool, write: bool) -> Option<Interest> {
        match (read, write) {
            (true, true) => Some(Interest::Both),
            (true, false) => Some(Interest::Readable),
            (false, true) => Some(Interest::Writable),
            (false, false) => None,
        }
    }

    fn register(&mut self, poller: &mut Poller) {
        let client = Self::interest(self.up.room(), self.down.pending() > 0);
        let target = if self.connected {
            Self::interest(self.down.room(), self.up.pending() > 0)
        } else {
            Some(Interest::Writable)
        };
        self.tokens = (
            client.map(|i| poller.add(self.client.as_fd(), i)),
            target.map(|i| poller.add(self.target.as_fd(), i)),
        );
    }

    /// Moves what it can. `Err` names why the relay ends.
    fn on_ready(&mut self, poller: &Poller) -> Result<(), &'static str> {
        let ready =
            |t: Option<Token>| t.is_some_and(|t| poller.is_readable(t) || poller.is_writable(t));
        let (client_ready, target_ready) = (ready(self.tokens.0), ready(self.tokens.1));
        if !self.connected {
            if !target_ready {
                return Ok(());
            }
            match self.target.take_error() {
                Ok(None) => self.connected = true,
                Ok(Some(_)) | Err(_) => return Err("connect failed"),
            }
        }
        // Both directions are tried whenever either side is ready: cheap (a would-block
        // read or write) and it moves bytes freed by the other side's progress.
        if !(client_ready || target_ready) {
            return Ok(());
        }
        self.up.fill(&self.client);
        self.down.fill(&self.target);
        if !self.up.drain(&self.target) {
            return Err("target write failed");
        }
        if !self.down.drain(&self.client) {
            return Err("client write failed");
        }
        // A side that ended closes both once what it sent is delivered.
        if self.up.eof && self.up.pending() == 0 {
            return Err("client closed");
        }
        if self.down.eof && self.down.pending() == 0 {
            return Err("target closed");
        }
        Ok(())
    }
}

/// The relayed connections of a server.
pub(crate) struct PortShare {
    target: SocketAddr,
    max: usize,
    relays: Vec<Relay>,
    pub stats: PortShareStats,
}

impl PortShare {
    pub fn new(o: PortShareOptions) -> PortShare {
        PortShare {
            target: o.target,
            max: o.max_connections.max(1),
            relays: Vec::new(),
            stats: PortShareStats::default(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.relays.len()
    }

    /// Takes over a connection whose first bytes (`first`, already read) are not
    /// OpenVPN: connects to the target (non-blocking) and sends them first.
    pub fn start(&mut self, client: TcpConn, from: SocketAddr, first: &[u8]) {
        if self.relays.len() >= self.max {
            self.stats.refused += 1;
            // Counted, not logged above debug: anyone can open connections.
            debug!(%from, "port-share: non-OpenVPN connection closed (relay limit reached)");
            return;
        }
        let target = match TcpConn::connect(self.target, None) {
            Ok(t) => t,
            Err(e) => {
                self.stats.refused += 1;
                info!(%from, "port-share: connecting to {}: {e}", self.target);
                return;
            }
        };
        self.stats.relayed += 1;
        info!(%from, target = %self.target, "Non-OpenVPN client protocol detected: relayed");
        self.relays.push(Relay {
            from,
            client,
            target,
            connected: false,
            up: Pipe::new(first),
            down: Pipe::new(&[]),
            tokens: (None, None),
        });
    }

    pub fn register(&mut self, poller: &mut Poller) {
        for r in &mut self.relays {
            r.register(poller);
        }
    }

    pub fn io_ready(&mut self, poller: &Poller) {
        let mut i = 0;
        while i < self.relays.len() {
            match self.relays[i].on_ready(poller) {
                Ok(()) => i += 1,
                Err(why) => {
                    let r = self.relays.swap_remove(i);
                    if why == "connect failed" {
                        self.stats.connect_failed += 1;
                        info!(from = %r.from, "port-share: {} did not accept the connection", self.target);
                    } else {
                        debug!(from = %r.from, why, "port-share: relay closed");
                    }
                    self.stats.closed += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
    use warren_io::{TcpBind, UdpFamily};

    fn front() -> warren_io::TcpListener {
        warren_io::TcpListener::bind(&TcpBind {
            family: UdpFamily::V4,
            local: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port: 0,
        })
        .expect("bind")
    }

    fn accept(l: &warren_io::TcpListener) -> (TcpConn, SocketAddr) {
        let mut p = Poller::new();
        p.add(l.as_fd(), Interest::Readable);
        p.wait(Some(Duration::from_secs(5))).expect("poll");
        l.accept().expect("accept")
    }

    #[test]
    fn sniff_follows_openvpn() {
        // Plain, tls-auth and tls-crypt resets; a v3 reset with a wrapped client key.
        for len in [14u16, 42, 54, 86, 255] {
            let [a, b] = len.to_be_bytes();
            assert_eq!(sniff(&[a, b, 0x38], false), Sniff::OpenVpn, "{len}");
            assert_eq!(sniff(&[a, b], false), Sniff::NeedMore, "{len}");
            assert_eq!(sniff(&[a, b], true), Sniff::OpenVpn, "{len}");
            assert_eq!(sniff(&[a, b, 0x50], false), Sniff::Foreign, "{len}");
        }
        for len in [336u16, 353, 1278] {
            let [a, b] = len.to_be_bytes();
            assert_eq!(sniff(&[a, b, 0x50, 0], false), Sniff::OpenVpn, "{len}");
            assert_eq!(sniff(&[a, b], false), Sniff::NeedMore, "{len}");
            assert_eq!(sniff(&[a, b], true), Sniff::Foreign, "{len}");
            assert_eq!(sniff(&[a, b, 0x38], false), Sniff::Foreign, "{len}");
        }
        for len in [0u16, 13, 256, 335, 1279] {
            let [a, b] = len.to_be_bytes();
            assert_eq!(sniff(&[a, b, 0x38], false), Sniff::Foreign, "{len}");
            assert_eq!(sniff(&[a, b], false), Sniff::Foreign, "{len}");
        }
        // TLS ClientHello, HTTP, SSH.
        assert_eq!(sniff(&[0x16, 0x03, 0x01], false), Sniff::Foreign);
        assert_eq!(sniff(b"GET / HTTP/1.0", false), Sniff::Foreign);
        assert_eq!(sniff(b"SSH-2.0", false), Sniff::Foreign);
        assert_eq!(sniff(&[0x00], false), Sniff::NeedMore);
        assert_eq!(sniff(&[], false), Sniff::NeedMore);
        assert_eq!(sniff(&[0x00], true), Sniff::Foreign);
        assert_eq!(sniff(&[], true), Sniff::Foreign);
    }

    fn spin(ps: &mut PortShare, until: impl Fn(&PortShare) -> bool) {
        // At most 10 s of 50 ms waits.
        for round in 0.. {
            if until(ps) {
                return;
            }
            assert!(round < 200, "relay made no progress");
            let mut p = Poller::new();
            ps.register(&mut p);
            p.wait(Some(Duration::from_millis(50))).expect("poll");
            ps.io_ready(&p);
        }
    }

    /// A relayed pair: the first bytes arrive first, then both directions, with more
    /// than a buffer's worth each way; one side closing closes the other.
    #[test]
    fn relays_both_ways_and_closes_both() {
        let backend = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let front = front();
        let mut ps = PortShare::new(PortShareOptions {
            target: backend.local_addr().expect("addr"),
            max_connections: 1,
        });
        let mut user = TcpStream::connect(front.local_addr()).expect("connect");
        let (client, from) = accept(&front);
        ps.start(client, from, b"GET ");
        assert_eq!(ps.len(), 1);
        // The limit: a second one is closed.
        let _other = TcpStream::connect(front.local_addr()).expect("connect");
        let (a2, f2) = accept(&front);
        ps.start(a2, f2, b"x");
        assert_eq!((ps.len(), ps.stats.refused), (1, 1));

        let (mut back, _) = backend.accept().expect("backend accept");
        back.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        user.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let big: Vec<u8> = (0..5 * RELAY_BUFFER).map(|i| (i % 251) as u8).collect();
        // Up: the user's bytes follow the sniffed ones; read on a thread while the relay
        // spins (the buffers are smaller than the transfer).
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 4 + 5 * RELAY_BUFFER];
            back.read_exact(&mut got).expect("backend reads");
            back.write_all(&got[4..]).expect("backend answers");
            (back, got)
        });
        let writer = {
            let mut u = user.try_clone().expect("clone");
            let big = big.clone();
            std::thread::spawn(move || u.write_all(&big).expect("user writes"))
        };
        let echo = std::thread::spawn(move || {
            let mut echo = vec![0u8; 5 * RELAY_BUFFER];
            user.read_exact(&mut echo).expect("user reads the answer");
            (user, echo)
        });
        spin(&mut ps, |_| reader.is_finished() && echo.is_finished());
        writer.join().expect("writer");
        let (back, got) = reader.join().expect("reader");
        assert_eq!(&got[..4], b"GET ");
        assert_eq!(&got[4..], &big[..]);
        let (mut user, echo) = echo.join().expect("echo");
        assert_eq!(echo, big);
        // The backend closes: the user's side is closed too.
        drop(back);
        spin(&mut ps, |ps| ps.len() == 0);
        let mut b = [0u8; 1];
        assert_eq!(user.read(&mut b).expect("eof"), 0);
        assert_eq!(ps.stats.closed, 1);
    }

    #[test]
    fn a_refused_target_closes_the_client() {
        let gone = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let target = gone.local_addr().expect("addr");
        drop(gone);
        let front = front();
        let mut ps = PortShare::new(PortShareOptions {
            target,
            max_connections: 4,
        });
        let mut user = TcpStream::connect(front.local_addr()).expect("connect");
        let (a, f) = accept(&front);
        ps.start(a, f, b"\x16\x03\x01");
        spin(&mut ps, |ps| ps.len() == 0);
        assert_eq!(ps.stats.connect_failed, 1);
        user.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut b = [0u8; 1];
        assert!(matches!(user.read(&mut b), Ok(0) | Err(_)));
    }
}
