//! The client's proxy handshakes: HTTP `CONNECT` (`http-proxy`) and SOCKS5 `CONNECT`
//! (`socks-proxy`), as stock OpenVPN 2.6 sends them (proxy.c, socks.c; openvpn-ops.md
//! §5.3–5.4).
//!
//! [`Handshake`] is sans-IO: it says what to send ([`Handshake::to_send`]) and takes
//! what the proxy answered ([`Handshake::received`]), into a buffer of its own bounded at
//! [`MAX_REPLY`] bytes. The client's TCP link ([`crate::tcp::TcpLink`]) drives it on the
//! non-blocking socket before any OpenVPN frame leaves, and bounds it in time.
//!
//! * HTTP: `CONNECT host:port HTTP/1.0`, the custom headers, `Host: host` (without the
//!   port; left out when a custom header is `Host`), `User-Agent` with `AGENT`,
//!   `Proxy-Authorization: Basic base64(user:pass)` with credentials, an empty line. The
//!   host is the `remote` as written: the proxy resolves it. Success is status 200 in the
//!   first line; any other status fails at once (the proxy's own words are logged). After a
//!   200 the headers are read up to the empty line and the OpenVPN session starts at once:
//!   stock OpenVPN instead waits for more header lines until 2 s pass without one, but the
//!   server never sends first, so the empty line is the end. Bytes after it are kept as
//!   the start of the server's stream.
//! * SOCKS5: the greeting offers one method, `05 01 00` (none) or `05 01 02` (RFC 1929
//!   username/password, `01 ulen user plen pass`); then `CONNECT` with ATYP 3 (a domain
//!   name, even for an address literal): `05 01 00 03 len host port`. The reply's status
//!   must be 0; its bound address is skipped.
use std::fmt;

use thiserror::Error;
use zeroize::Zeroize;

/// The most a proxy's reply (HTTP status line and headers, or the SOCKS messages) may
/// take; a longer one fails the attempt.
pub const MAX_REPLY: usize = 8 * 1024;

/// A proxy's username and password. `Debug` does not print the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAuth {
    pub user: String,
    pub pass: String,
}

impl fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyAuth")
            .field("user", &self.user)
            .field("pass", &"<redacted>")
            .finish()
    }
}

/// Which proxy protocol, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyKind {
    /// `http-proxy`.
    Http {
        /// `http-proxy-option VERSION`: `1.0` or `1.1`.
        version: &'static str,
        /// `http-proxy-option AGENT`.
        agent: Option<String>,
        /// `http-proxy-option CUSTOM-HEADER NAME [CONTENT]`, in order.
        headers: Vec<(String, Option<String>)>,
        /// Basic authentication.
        auth: Option<ProxyAuth>,
    },
    /// `socks-proxy`.
    Socks5 {
        /// RFC 1929 username/password.
        auth: Option<ProxyAuth>,
    },
}

/// The proxy of a connection entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub host: String,
    pub port: u16,
    pub kind: ProxyKind,
}

impl ProxySpec {
    /// `HTTP proxy` or `SOCKS proxy`, for log lines.
    pub fn name(&self) -> &'static str {
        match self.kind {
            ProxyKind::Http { .. } => "HTTP proxy",
            ProxyKind::Socks5 { .. } => "SOCKS proxy",
        }
    }
}

/// Why a proxy handshake failed. The attempt then fails like a TCP connect failure.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("it refused the credentials (`{0}`); check the `http-proxy` credentials file")]
    HttpAuthRefused(String),
    #[error(
        "it requires authentication (`{0}`); name a credentials file: `http-proxy HOST PORT AUTHFILE basic`"
    )]
    HttpAuthRequired(String),
    #[error("it refused the CONNECT: `{0}`")]
    HttpStatus(String),
    #[error("its answer is not HTTP: `{0}`")]
    HttpGarbage(String),
    #[error("its reply is longer than {MAX_REPLY} bytes")]
    TooLong,
    #[error("not a SOCKS5 proxy (it answered version {0})")]
    SocksVersion(u8),
    #[error(
        "it accepts none of the offered methods ({0}); {hint}",
        hint = if *.0 == "no authentication" {
            "it may want a username and password: `socks-proxy HOST PORT AUTHFILE`"
        } else {
            "it may not support username/password authentication"
        }
    )]
    SocksNoMethod(&'static str),
    #[error("it chose method {0}, which was not offered")]
    SocksMethod(u8),
    #[error(
        "it refused the username and password (status {0}); check the `socks-proxy` credentials file"
    )]
    SocksAuthRefused(u8),
    #[error("it could not connect to the server: {what} (reply {0})", what = socks_reply(*.0))]
    SocksReply(u8),
    #[error("its reply has an unknown address type {0}")]
    SocksAddressType(u8),
    #[error("the server name `{0}` is longer than SOCKS5 allows (255 bytes)")]
    SocksHostTooLong(String),
    #[error("the SOCKS username or password is longer than RFC 1929 allows (255 bytes)")]
    SocksCredentialsTooLong,
    #[error("it closed the connection {0}")]
    Closed(&'static str),
}

/// RFC 1928 §6 reply codes.
fn socks_reply(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The request is out; waiting for the status line, then the empty line.
    HttpReply,
    /// The greeting is out; waiting for the chosen method.
    SocksMethod,
    /// The RFC 1929 request is out; waiting for its status.
    SocksAuth,
    /// The CONNECT is out; waiting for the reply.
    SocksReply,
    /// Connected through; [`Handshake::lookahead`] holds what followed the reply.
    Done,
}

/// What a [`Handshake::received`] call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Waiting for more of the reply (and maybe sending [`Handshake::to_send`] first).
    More,
    /// The tunnel through the proxy is open.
    Done,
}

/// One proxy handshake (see the module documentation).
pub struct Handshake {
    state: State,
    out: Vec<u8>,
    out_off: usize,
    inbuf: Vec<u8>,
    in_len: usize,
    /// Bytes of `inbuf` already consumed by earlier steps (SOCKS).
    in_off: usize,
    /// Credentials sent (HTTP 407 then means "refused").
    sent_auth: bool,
    /// SOCKS: the method offered, and what to send after it.
    socks_method: u8,
    socks_auth: Option<Vec<u8>>,
    socks_connect: Vec<u8>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("state", &self.state)
            .field("pending", &(self.out.len() - self.out_off))
            .field("received", &self.in_len)
            .finish_non_exhaustive()
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        // The requests carry the proxy password.
        self.out.zeroize();
        if let Some(a) = &mut self.socks_auth {
            a.zeroize();
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), for `Proxy-Authorization: Basic`.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A proxy's line for a log: printable ASCII, at most 120 characters.
fn printable(bytes: &[u8]) -> String {
    let mut s: String = bytes
        .iter()
        .take(120)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    if bytes.len() > 120 {
        s.push_str("...");
    }
    s
}

impl Handshake {
    /// Starts a handshake through `proxy` to the OpenVPN server `host`:`port` (the
    /// `remote` as written; the proxy resolves it).
    pub fn new(proxy: &ProxySpec, host: &str, port: u16) -> Result<Handshake, ProxyError> {
        let mut h = Handshake {
            state: State::HttpReply,
            out: Vec::with_capacity(256),
            out_off: 0,
            inbuf: vec![0; MAX_REPLY],
            in_len: 0,
            in_off: 0,
            sent_auth: false,
            socks_method: 0,
            socks_auth: None,
            socks_connect: Vec::new(),
        };
        match &proxy.kind {
            ProxyKind::Http {
                version,
                agent,
                headers,
                auth,
            } => {
                // OpenVPN proxy.c establish_http_proxy_passthru / add_proxy_headers.
                let mut req = format!("CONNECT {host}:{port} HTTP/{version}\r\n");
                let mut host_sent = false;
                for (name, content) in headers {
                    match content {
                        Some(c) => {
                            host_sent |= name.eq_ignore_ascii_case("Host");
                            req.push_str(&format!("{name}: {c}\r\n"));
                        }
                        None => {
                            host_sent |= name
                                .get(..5)
                                .is_some_and(|p| p.eq_ignore_ascii_case("Host:"));
                            req.push_str(&format!("{name}\r\n"));
                        }
                    }
                }
                if !host_sent {
                    req.push_str(&format!("Host: {host}\r\n"));
                }
                if let Some(a) = agent {
                    req.push_str(&format!("User-Agent: {a}\r\n"));
                }
                if let Some(a) = auth {
                    let mut pair = format!("{}:{}", a.user, a.pass);
                    req.push_str(&format!(
                        "Proxy-Authorization: Basic {}\r\n",
                        base64(pair.as_bytes())
                    ));
                    pair.zeroize();
                    h.sent_auth = true;
                }
                req.push_str("\r\n");
                h.out.extend_from_slice(req.as_bytes());
                req.zeroize();
            }
            ProxyKind::Socks5 { auth } => {
                // OpenVPN socks.c socks_handshake / establish_socks_proxy_passthru.
                let Ok(len) = u8::try_from(host.len()) else {
                    return Err(ProxyError::SocksHostTooLong(host.to_owned()));
                };
                h.state = State::SocksMethod;
                h.socks_method = if auth.is_some() { 2 } else { 0 };
                h.out.extend_from_slice(&[5, 1, h.socks_method]);
                if let Some(a) = auth {
                    let (Ok(ul), Ok(pl)) = (u8::try_from(a.user.len()), u8::try_from(a.pass.len()))
                    else {
                        return Err(ProxyError::SocksCredentialsTooLong);
                    };
                    let mut m = vec![1, ul];
                    m.extend_from_slice(a.user.as_bytes());
                    m.push(pl);
                    m.extend_from_slice(a.pass.as_bytes());
                    h.socks_auth = Some(m);
                }
                h.socks_connect = vec![5, 1, 0, 3, len];
                h.socks_connect.extend_from_slice(host.as_bytes());
                h.socks_connect.extend_from_slice(&port.to_be_bytes());
            }
        }
        Ok(h)
    }

    /// Bytes to write to the proxy now (empty while waiting for its answer).
    pub fn to_send(&self) -> &[u8] {
        &self.out[self.out_off..]
    }

    /// `n` bytes of [`Handshake::to_send`] were written.
    pub fn sent(&mut self, n: usize) {
        self.out_off = (self.out_off + n).min(self.out.len());
        if self.out_off == self.out.len() {
            self.out.zeroize();
            self.out.clear();
            self.out_off = 0;
        }
    }

    /// Where to read the proxy's next bytes: empty once [`MAX_REPLY`] bytes are buffered
    /// (then [`Handshake::received`] reports [`ProxyError::TooLong`]).
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.inbuf[self.in_len..]
    }

    /// `n` bytes were read into [`Handshake::spare`] (0: the proxy closed the connection).
    pub fn received(&mut self, n: usize) -> Result<Progress, ProxyError> {
        if n == 0 {
            return Err(ProxyError::Closed(match self.state {
                State::HttpReply => "before answering the CONNECT",
                State::SocksMethod => "after the greeting",
                State::SocksAuth => "after the username and password",
                State::SocksReply => "after the CONNECT",
                State::Done => "",
            }));
        }
        self.in_len = (self.in_len + n).min(self.inbuf.len());
        loop {
            let progress = match self.state {
                State::HttpReply => self.http_reply()?,
                State::SocksMethod | State::SocksAuth | State::SocksReply => self.socks_step()?,
                State::Done => return Ok(Progress::Done),
            };
            match progress {
                Step::Wait => break,
                Step::Again => {}
            }
        }
        if self.state == State::Done {
            return Ok(Progress::Done);
        }
        if self.in_len == self.inbuf.len() {
            return Err(ProxyError::TooLong);
        }
        Ok(Progress::More)
    }

    /// After [`Progress::Done`]: the bytes that followed the proxy's reply (the start of
    /// the server's stream; normally none).
    pub fn lookahead(&self) -> &[u8] {
        if self.state == State::Done {
            &self.inbuf[self.in_off..self.in_len]
        } else {
            &[]
        }
    }

    fn http_reply(&mut self) -> Result<Step, ProxyError> {
        let buf = &self.inbuf[..self.in_len];
        let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
            return Ok(Step::Wait);
        };
        let line = buf[..eol].strip_suffix(b"\r").unwrap_or(&buf[..eol]);
        let text = printable(line);
        // OpenVPN: sscanf(buf, "%*s %d", &status).
        let mut words = text.split_ascii_whitespace();
        let proto = words.next().unwrap_or("");
        let status = words.next().and_then(|w| w.parse::<u16>().ok());
        if !proto.starts_with("HTTP/") {
            return Err(ProxyError::HttpGarbage(text));
        }
        match status {
            Some(200) => {}
            // 407 is the proxy's "authentication required"; tinyproxy answers wrong
            // credentials with 401.
            Some(401 | 407) if self.sent_auth => return Err(ProxyError::HttpAuthRefused(text)),
            Some(401 | 407) => return Err(ProxyError::HttpAuthRequired(text)),
            Some(_) => return Err(ProxyError::HttpStatus(text)),
            None => return Err(ProxyError::HttpGarbage(text)),
        }
        // The headers end with an empty line (CRLF CRLF; a bare LF LF is accepted too).
        let mut start = eol + 1;
        while let Some(rel) = buf[start..].iter().position(|&b| b == b'\n') {
            let l = &buf[start..start + rel];
            start += rel + 1;
            if l.is_empty() || l == b"\r" {
                self.in_off = start;
                self.state = State::Done;
                return Ok(Step::Again);
            }
        }
        Ok(Step::Wait)
    }

    fn socks_step(&mut self) -> Result<Step, ProxyError> {
        let buf = &self.inbuf[self.in_off..self.in_len];
        match self.state {
            State::SocksMethod => {
                let Some(&[ver, method]) = buf.get(..2) else {
                    return Ok(Step::Wait);
                };
                if ver != 5 {
                    return Err(ProxyError::SocksVersion(ver));
                }
                if method == 0xff {
                    return Err(ProxyError::SocksNoMethod(if self.socks_method == 0 {
                        "no authentication"
                    } else {
                        "username/password"
                    }));
                }
                if method != self.socks_method {
                    return Err(ProxyError::SocksMethod(method));
                }
                self.in_off += 2;
                match self.socks_auth.take() {
                    Some(mut a) => {
                        self.out.extend_from_slice(&a);
                        a.zeroize();
                        self.state = State::SocksAuth;
                    }
                    None => self.send_connect(),
                }
                Ok(Step::Again)
            }
            State::SocksAuth => {
                // RFC 1929: VER 1, STATUS 0 = success. (Stock OpenVPN's check is looser.)
                let Some(&[_ver, status]) = buf.get(..2) else {
                    return Ok(Step::Wait);
                };
                if status != 0 {
                    return Err(ProxyError::SocksAuthRefused(status));
                }
                self.in_off += 2;
                self.send_connect();
                Ok(Step::Again)
            }
            State::SocksReply => {
                let Some(&[ver, rep]) = buf.get(..2) else {
                    return Ok(Step::Wait);
                };
                if ver != 5 {
                    return Err(ProxyError::SocksVersion(ver));
                }
                if rep != 0 {
                    return Err(ProxyError::SocksReply(rep));
                }
                // VER REP RSV ATYP BND.ADDR BND.PORT
                let Some(&[_, _, _, atyp, first]) = buf.get(..5) else {
                    return Ok(Step::Wait);
                };
                let alen = match atyp {
                    1 => 4,
                    3 => 1 + usize::from(first),
                    4 => 16,
                    other => return Err(ProxyError::SocksAddressType(other)),
                };
                let total = 4 + alen + 2;
                if buf.len() < total {
                    return Ok(Step::Wait);
                }
                self.in_off += total;
                self.state = State::Done;
                Ok(Step::Again)
            }
            State::HttpReply | State::Done => Ok(Step::Wait),
        }
    }

    fn send_connect(&mut self) {
        self.out.extend_from_slice(&self.socks_connect);
        self.state = State::SocksReply;
    }
}

/// Whether a parsing step should run again (its state changed) or wait for bytes.
enum Step {
    Again,
    Wait,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(auth: Option<(&str, &str)>, agent: Option<&str>) -> ProxySpec {
        ProxySpec {
            host: "192.0.2.8".into(),
            port: 3128,
            kind: ProxyKind::Http {
                version: "1.0",
                agent: agent.map(str::to_owned),
                headers: vec![],
                auth: auth.map(|(u, p)| ProxyAuth {
                    user: u.into(),
                    pass: p.into(),
                }),
            },
        }
    }

    fn socks(auth: Option<(&str, &str)>) -> ProxySpec {
        ProxySpec {
            host: "192.0.2.8".into(),
            port: 1080,
            kind: ProxyKind::Socks5 {
                auth: auth.map(|(u, p)| ProxyAuth {
                    user: u.into(),
                    pass: p.into(),
                }),
            },
        }
    }

    /// Feeds `bytes` in pieces of `step`.
    fn feed(h: &mut Handshake, bytes: &[u8], step: usize) -> Result<Progress, ProxyError> {
        let mut last = Progress::More;
        for chunk in bytes.chunks(step.max(1)) {
            let spare = h.spare();
            spare[..chunk.len()].copy_from_slice(chunk);
            last = h.received(chunk.len())?;
        }
        Ok(last)
    }

    fn take(h: &mut Handshake) -> Vec<u8> {
        let v = h.to_send().to_vec();
        h.sent(v.len());
        v
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("alice:s3cret", "YWxpY2U6czNjcmV0"),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn http_request_is_stocks_byte_for_byte() {
        // openvpn-ops.md §5.3, lab capture with `http-proxy-option AGENT warren-lab/1.0`.
        let mut h =
            Handshake::new(&http(None, Some("warren-lab/1.0")), "10.100.1.1", 443).expect("new");
        assert_eq!(
            take(&mut h),
            b"CONNECT 10.100.1.1:443 HTTP/1.0\r\nHost: 10.100.1.1\r\nUser-Agent: warren-lab/1.0\r\n\r\n"
        );
        let mut h = Handshake::new(&http(Some(("alice", "s3cret")), None), "vpn.example", 1194)
            .expect("new");
        assert_eq!(
            take(&mut h),
            b"CONNECT vpn.example:1194 HTTP/1.0\r\nHost: vpn.example\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n"
        );
        // Custom headers come first; a custom Host replaces the default one.
        let spec = ProxySpec {
            kind: ProxyKind::Http {
                version: "1.1",
                agent: None,
                headers: vec![
                    ("X-A".into(), Some("b c".into())),
                    ("host: vpn.other".into(), None),
                ],
                auth: None,
            },
            ..http(None, None)
        };
        let mut h = Handshake::new(&spec, "vpn.example", 443).expect("new");
        assert_eq!(
            take(&mut h),
            b"CONNECT vpn.example:443 HTTP/1.1\r\nX-A: b c\r\nhost: vpn.other\r\n\r\n"
        );
    }

    #[test]
    fn http_200_then_headers_then_lookahead() {
        for step in [1, 3, 100] {
            let mut h = Handshake::new(&http(None, None), "vpn.example", 443).expect("new");
            take(&mut h);
            let reply = b"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n\x00\x0e\x38";
            let split = reply.len() - 3;
            assert_eq!(feed(&mut h, &reply[..split - 1], step), Ok(Progress::More));
            assert_eq!(feed(&mut h, &reply[split - 1..], step), Ok(Progress::Done));
            assert_eq!(h.lookahead(), b"\x00\x0e\x38", "step {step}");
        }
        // A bare LF LF ends the headers too.
        let mut h = Handshake::new(&http(None, None), "v", 1).expect("new");
        assert_eq!(feed(&mut h, b"HTTP/1.1 200 OK\n\n", 50), Ok(Progress::Done));
        assert!(h.lookahead().is_empty());
    }

    #[test]
    fn http_errors() {
        let run = |auth, reply: &[u8]| {
            let mut h = Handshake::new(&http(auth, None), "vpn.example", 443).expect("new");
            take(&mut h);
            feed(&mut h, reply, 7)
        };
        let e = run(
            None,
            b"HTTP/1.0 403 Access violation\r\nServer: tinyproxy/1.11.1\r\n",
        )
        .expect_err("403");
        assert_eq!(
            e,
            ProxyError::HttpStatus("HTTP/1.0 403 Access violation".into())
        );
        assert!(e.to_string().contains("refused the CONNECT"), "{e}");
        // Fails on the status line, without waiting for the headers.
        let e = run(None, b"HTTP/1.0 407 Proxy Authentication Required\r\n").expect_err("407");
        assert!(e.to_string().contains("AUTHFILE basic"), "{e}");
        let e = run(
            Some(("alice", "wrong")),
            b"HTTP/1.0 407 Proxy Authentication Required\r\n",
        )
        .expect_err("407");
        assert!(matches!(e, ProxyError::HttpAuthRefused(_)), "{e}");
        let e = run(Some(("alice", "wrong")), b"HTTP/1.0 401 Unauthorized\r\n").expect_err("401");
        assert!(matches!(e, ProxyError::HttpAuthRefused(_)), "{e}");
        let e = run(None, b"SSH-2.0-OpenSSH_9.2\r\n").expect_err("not http");
        assert!(matches!(e, ProxyError::HttpGarbage(_)), "{e}");
        let e = run(None, b"HTTP/1.0 abc\r\n").expect_err("no status");
        assert!(matches!(e, ProxyError::HttpGarbage(_)), "{e}");
        // Headers that never end are bounded.
        let mut long = b"HTTP/1.0 200 OK\r\n".to_vec();
        while long.len() < MAX_REPLY + 100 {
            long.extend_from_slice(b"X-Filler: yyyyyyyyyyyyyyyyyyyy\r\n");
        }
        let mut h = Handshake::new(&http(None, None), "v", 1).expect("new");
        let mut result = Ok(Progress::More);
        for chunk in long.chunks(1000) {
            let spare = h.spare();
            let n = chunk.len().min(spare.len());
            spare[..n].copy_from_slice(&chunk[..n]);
            result = h.received(n);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ProxyError::TooLong));
        let mut h = Handshake::new(&http(None, None), "v", 1).expect("new");
        assert!(matches!(h.received(0), Err(ProxyError::Closed(_))));
        // Control characters in the proxy's line are not logged as such.
        let e = run(None, b"HTTP/1.0 502 \x1b[31mBad\r\n").expect_err("502");
        assert_eq!(e, ProxyError::HttpStatus("HTTP/1.0 502 ?[31mBad".into()));
    }

    #[test]
    fn socks_without_auth_is_stocks_byte_for_byte() {
        for step in [1, 2, 64] {
            let mut h = Handshake::new(&socks(None), "10.100.1.1", 443).expect("new");
            assert_eq!(take(&mut h), [5, 1, 0]);
            assert_eq!(feed(&mut h, &[5, 0], step), Ok(Progress::More));
            // openvpn-ops.md §5.4, lab capture.
            assert_eq!(take(&mut h), b"\x05\x01\x00\x03\n10.100.1.1\x01\xbb");
            let reply = [5, 0, 0, 1, 198, 18, 1, 2, 0x9c, 0x40, 0xaa];
            assert_eq!(feed(&mut h, &reply, step), Ok(Progress::Done));
            assert_eq!(h.lookahead(), [0xaa]);
            assert!(h.to_send().is_empty());
        }
    }

    #[test]
    fn socks_with_auth_and_domain_reply() {
        let mut h = Handshake::new(&socks(Some(("bob", "pw"))), "vpn.example", 1194).expect("new");
        assert_eq!(take(&mut h), [5, 1, 2]);
        assert_eq!(feed(&mut h, &[5, 2], 1), Ok(Progress::More));
        assert_eq!(take(&mut h), b"\x01\x03bob\x02pw");
        assert_eq!(feed(&mut h, &[1, 0], 1), Ok(Progress::More));
        assert_eq!(take(&mut h), b"\x05\x01\x00\x03\x0bvpn.example\x04\xaa");
        let mut reply = vec![5, 0, 0, 3, 4];
        reply.extend_from_slice(b"host\x04\xaa");
        assert_eq!(feed(&mut h, &reply, 3), Ok(Progress::Done));
        assert!(h.lookahead().is_empty());
        // IPv6 bound address.
        let mut h = Handshake::new(&socks(None), "v", 1).expect("new");
        take(&mut h);
        let mut reply = vec![5, 0, 5, 0, 0, 4];
        reply.extend_from_slice(&[0; 16]);
        reply.extend_from_slice(&[0, 1]);
        assert_eq!(feed(&mut h, &reply, 5), Ok(Progress::Done));
    }

    #[test]
    fn socks_errors() {
        let run = |auth, replies: &[&[u8]]| {
            let mut h = Handshake::new(&socks(auth), "vpn.example", 1194).expect("new");
            let mut r = Ok(Progress::More);
            for rep in replies {
                take(&mut h);
                r = feed(&mut h, rep, 1);
                if r.is_err() {
                    break;
                }
            }
            Some(r)
        };
        let e = |r: Option<Result<Progress, ProxyError>>| r.expect("ran").expect_err("error");
        assert_eq!(e(run(None, &[&[4, 0]])), ProxyError::SocksVersion(4));
        let no = e(run(None, &[&[5, 0xff]]));
        assert!(no.to_string().contains("AUTHFILE"), "{no}");
        assert_eq!(e(run(None, &[&[5, 2]])), ProxyError::SocksMethod(2));
        assert_eq!(
            e(run(Some(("bob", "bad")), &[&[5, 2], &[1, 1]])),
            ProxyError::SocksAuthRefused(1)
        );
        let r = e(run(None, &[&[5, 0], &[5, 5, 0, 1]]));
        assert_eq!(r, ProxyError::SocksReply(5));
        assert!(r.to_string().contains("connection refused"), "{r}");
        assert_eq!(
            e(run(None, &[&[5, 0], &[5, 0, 0, 9, 0]])),
            ProxyError::SocksAddressType(9)
        );
        let long = "a".repeat(256);
        assert!(matches!(
            Handshake::new(&socks(None), &long, 1),
            Err(ProxyError::SocksHostTooLong(_))
        ));
        let long_user = "u".repeat(256);
        assert_eq!(
            Handshake::new(&socks(Some((&long_user, "p"))), "v", 1).map(|_| ()),
            Err(ProxyError::SocksCredentialsTooLong)
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let a = ProxyAuth {
            user: "alice".into(),
            pass: "hunter2".into(),
        };
        let s = format!("{:?} {:?}", a, http(Some(("alice", "hunter2")), None));
        assert!(!s.contains("hunter2"), "{s}");
    }
}
