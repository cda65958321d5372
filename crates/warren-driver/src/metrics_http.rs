//! The metrics endpoint: a minimal HTTP/1.1 responder for `GET /metrics` on a thread of its
//! own, away from the data path (see [`crate::metrics`] for what it serves).
//!
//! It is bounded in every direction an unfriendly client could push: at most
//! [`MAX_CONNECTIONS`] connections at once (more are accepted and closed at once), a
//! request head of at most [`MAX_REQUEST`] bytes, and [`CONNECTION_DEADLINE`] for a
//! connection's whole life (request, response, close). Every response closes the
//! connection. The format follows the scraper's `Accept` header: OpenMetrics when it asks
//! for `application/openmetrics-text` (what Prometheus prefers), the Prometheus text
//! format 0.0.4 otherwise (curl, older scrapers).
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tracing::{debug, warn};
use warren_core::Instant;
use warren_io::{Clock, Interest, Poller};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Longest request head (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a connection may take from accept to close.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// Connections accepted per wake-up.
const ACCEPTS_PER_WAKE: usize = 16;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The listening socket of `warren-metrics ADDR`, bound before privileges are dropped.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
}

impl MetricsListener {
    pub fn bind(addr: SocketAddr) -> io::Result<MetricsListener> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(MetricsListener { listener })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The running endpoint, seen from the thread that started it.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    stop: UnixStream,
    handle: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `registry` on `listener` from a new thread.
    pub fn start(
        listener: MetricsListener,
        registry: Registry,
        clock: Clock,
    ) -> io::Result<MetricsServer> {
        let (stop, stop_rx) = UnixStream::pair()?;
        stop_rx.set_nonblocking(true)?;
        let handle = std::thread::Builder::new()
            .name("warren-metrics".into())
            .spawn(move || serve(listener.listener, stop_rx, &registry, clock))?;
        Ok(MetricsServer {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it (connections in progress are closed).
    pub fn stop(mut self) {
        let _ = (&self.stop).write(&[1]);
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            warn!("the metrics thread panicked");
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Stage {
    /// Reading the request head.
    Reading,
    /// Writing the response from `sent` on.
    Writing,
    /// Response sent and our side shut down; waiting for the client to close, so that
    /// closing with unread input cannot turn into a reset that cuts the response.
    Draining,
    Done,
}

struct Conn {
    stream: TcpStream,
    head: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    stage: Stage,
    deadline: Instant,
}

fn serve(listener: TcpListener, stop: UnixStream, registry: &Registry, clock: Clock) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut poller = Poller::new();
    let t_listen = poller.add(listener.as_fd(), Interest::Readable);
    let t_stop = poller.add(stop.as_fd(), Interest::Readable);
    let fixed = poller.len();
    loop {
        poller.truncate(fixed);
        let tokens: Vec<_> = conns
            .iter()
            .map(|c| {
                let interest = if c.stage == Stage::Writing {
                    Interest::Writable
                } else {
                    Interest::Readable
                };
                poller.add(c.stream.as_fd(), interest)
            })
            .collect();
        let now = clock.now();
        let timeout = conns
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min();
        if let Err(e) = poller.wait(timeout) {
            warn!("metrics endpoint stopped: waiting for I/O: {e}");
            return;
        }
        if poller.is_readable(t_stop) {
            return;
        }
        let now = clock.now();
        for (c, t) in conns.iter_mut().zip(&tokens) {
            if poller.is_readable(*t) || poller.is_writable(*t) {
                c.step(registry);
            }
            if now >= c.deadline {
                c.stage = Stage::Done;
            }
        }
        conns.retain(|c| c.stage != Stage::Done);
        if poller.is_readable(t_listen) {
            for _ in 0..ACCEPTS_PER_WAKE {
                match listener.accept() {
                    Ok((stream, from)) => {
                        if conns.len() >= MAX_CONNECTIONS {
                            debug!(%from, "metrics: too many connections, closed");
                            continue;
                        }
                        if stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        conns.push(Conn {
                            stream,
                            head: Vec::new(),
                            out: Vec::new(),
                            sent: 0,
                            stage: Stage::Reading,
                            deadline: now + CONNECTION_DEADLINE,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!("metrics: accept failed: {e}");
                        break;
                    }
                }
            }
        }
    }
}

impl Conn {
    /// Moves the connection on as far as its socket allows.
    fn step(&mut self, registry: &Registry) {
        let mut buf = [0u8; 2048];
        loop {
            match self.stage {
                Stage::Reading => match self.stream.read(&mut buf) {
                    Ok(0) => self.stage = Stage::Done,
                    Ok(n) => {
                        let room = MAX_REQUEST - self.head.len();
                        self.head.extend_from_slice(&buf[..n.min(room)]);
                        if let Some(out) = respond(&self.head, n > room, registry) {
                            self.out = out;
                            self.stage = Stage::Writing;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => self.stage = Stage::Done,
                },
                Stage::Writing => match self.stream.write(&self.out[self.sent..]) {
                    Ok(n) => {
                        self.sent += n;
                        if self.sent >= self.out.len() {
                            let _ = self.stream.shutdown(Shutdown::Write);
                            self.stage = Stage::Draining;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => self.stage = Stage::Done,
                },
                Stage::Draining => match self.stream.read(&mut buf) {
                    Ok(0) => self.stage = Stage::Done,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => self.stage = Stage::Done,
                },
                Stage::Done => return,
            }
        }
    }
}

/// The response to a request head received so far, or `None` while it is incomplete.
/// `overflow`: the head went past [`MAX_REQUEST`].
fn respond(head: &[u8], overflow: bool, registry: &Registry) -> Option<Vec<u8>> {
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| head.windows(2).position(|w| w == b"\n\n"));
    let Some(end) = end else {
        return (overflow || head.len() >= MAX_REQUEST).then(|| {
            plain(
                431,
                "Request Header Fields Too Large",
                "request too large\n",
            )
        });
    };
    let Ok(text) = std::str::from_utf8(&head[..end]) else {
        return Some(plain(400, "Bad Request", "bad request\n"));
    };
    let mut lines = text.lines();
    let mut request = lines.next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target), Some(version)) =
        (request.next(), request.next(), request.next())
    else {
        return Some(plain(400, "Bad Request", "bad request\n"));
    };
    if !version.starts_with("HTTP/1.") {
        return Some(plain(505, "HTTP Version Not Supported", "HTTP/1.x only\n"));
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    if path != "/metrics" {
        return Some(plain(404, "Not Found", "not found: try /metrics\n"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut r = plain(405, "Method Not Allowed", "GET or HEAD only\n");
            // Insert `Allow` after the status line.
            let at = r.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
            r.splice(at..at, b"Allow: GET, HEAD\r\n".iter().copied());
            return Some(r);
        }
    };
    let openmetrics = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
        })
    });
    let mut body = String::new();
    let (encoded, content_type) = if openmetrics {
        (
            prometheus_client::encoding::text::encode(&mut body, registry),
            OPENMETRICS,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    if encoded.is_err() {
        return Some(plain(500, "Internal Server Error", "encoding failed\n"));
    }
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    Some(out)
}

fn plain(code: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    fn registry() -> Registry {
        let mut r = Registry::with_prefix("warren");
        let c: Counter = Counter::default();
        c.inc_by(3);
        r.register("things", "Things", c);
        r
    }

    fn text(r: Option<Vec<u8>>) -> String {
        String::from_utf8(r.expect("a response")).unwrap()
    }

    #[test]
    fn answers_get_metrics_in_the_format_asked_for() {
        let reg = registry();
        assert!(respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n", false, &reg).is_none());
        let r = text(respond(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            false,
            &reg,
        ));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("# TYPE warren_things_total counter\nwarren_things_total 3\n"));
        let r = text(respond(
            b"GET /metrics?x=1 HTTP/1.1\r\naccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
            false,
            &reg,
        ));
        assert!(r.contains(OPENMETRICS), "{r}");
        assert!(r.contains("# TYPE warren_things counter\nwarren_things_total 3\n"));
        assert!(r.ends_with("# EOF\n"), "{r}");
        let r = text(respond(b"HEAD /metrics HTTP/1.0\n\n", false, &reg));
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let len: usize = r
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(len > 0);
    }

    #[test]
    fn refuses_everything_else() {
        let reg = registry();
        let status = |req: &[u8], overflow| {
            let r = text(respond(req, overflow, &reg));
            r.split_whitespace().nth(1).unwrap().to_owned()
        };
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n", false), "404");
        assert_eq!(status(b"POST /metrics HTTP/1.1\r\n\r\n", false), "405");
        assert_eq!(status(b"GET /metrics\r\n\r\n", false), "400");
        assert_eq!(status(b"GET /metrics HTTP/2\r\n\r\n", false), "505");
        assert_eq!(status(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", false), "400");
        assert_eq!(status(&[b'a'; MAX_REQUEST], false), "431");
        assert_eq!(status(b"GET /metrics HTTP/1.1\r\nX: y", true), "431");
        let r = text(respond(b"PUT /metrics HTTP/1.1\r\n\r\n", false, &reg));
        assert!(r.contains("\r\nAllow: GET, HEAD\r\n"), "{r}");
    }

    #[test]
    fn serves_over_tcp_and_bounds_connections() {
        let clock = Clock::new().unwrap();
        let listener = MetricsListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = MetricsServer::start(listener, registry(), clock).unwrap();
        // Idle connections fill the table; one more is closed at once.
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut extra = TcpStream::connect(addr).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut buf = Vec::new();
        let _ = extra.read_to_end(&mut buf);
        assert!(buf.is_empty(), "a ninth connection was served");
        drop(idle);
        std::thread::sleep(Duration::from_millis(200));
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut r = String::new();
        c.read_to_string(&mut r).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK") && r.contains("warren_things_total 3"));
        server.stop();
    }
}
