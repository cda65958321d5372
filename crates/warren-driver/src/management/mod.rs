//! OpenVPN's management interface, version 5 (OpenVPN manage.c, doc/management-notes.txt;
//! `shared/docs/openvpn-ops.md` §1), served by the control loop.
//!
//! The model: the listener and the one connection OpenVPN serves at a time are
//! non-blocking descriptors the server loop polls next to its own. Every wake-up reads a
//! bounded amount of input, runs the complete command lines against the engine (which the
//! loop owns, so no lock and no copy of its state), and queues the replies and real-time
//! notifications in the connection's output buffer, which is written as far as the socket
//! takes it. The buffer is bounded ([`OUTPUT_LIMIT`]): a management client that stops
//! reading is disconnected when it fills, so it can never stall the tunnel or grow the
//! server's memory. Log lines come from any thread through a bounded cache ([`LogTap`])
//! that wakes the loop.
//!
//! What is sent follows stock OpenVPN 2.6.14 byte for byte where tools depend on it: CRLF
//! line ends, `ENTER PASSWORD:` without a line end, the banner, `SUCCESS:`/`ERROR:`
//! replies, `END` after multi-line replies, and `>CLIENT:` blocks closed by
//! `>CLIENT:ENV,END`, emitted atomically.
//!
//! With `management-client-auth` a connecting client waits (the engine's external
//! authentication) until the management client answers `client-auth`, `client-auth-nt` or
//! `client-deny` for its CID and KID; the push lines of a `client-auth` block are added to
//! that client's PUSH_REPLY.
pub(crate) mod env;
mod line;
mod log;

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tracing::{debug, info, warn};
use warren_core::{Instant, PeerId};
use warren_io::{Clock, Interest, MgmtConn, MgmtListener, Poller, Signal, Token};
use warren_openvpn::{AuthDecision, AuthGrant, KickTarget, Server};
use zeroize::Zeroizing;

pub use env::Var;
pub use line::tokenize;
pub use log::{LogFlag, LogLine, LogTap, VerbFn};

use crate::auth::AuthRequest;
use crate::metrics::Metrics;
use crate::status::{self, StatusVersion};

/// `MANAGEMENT_VERSION` (manage.h).
pub const MANAGEMENT_VERSION: u32 = 5;
/// The banner (manage.c `man_welcome`).
pub const BANNER: &str =
    ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info";
/// Most bytes queued for a management client; one that stops reading is disconnected
/// when its queue would grow beyond this.
pub const OUTPUT_LIMIT: usize = 1 << 20;
/// OpenVPN's command line buffer (manage.c: 1024 bytes); a longer line is dropped.
const LINE_LIMIT: usize = 1024;
/// Input read per wake-up, so a client sending without pause cannot hold the loop.
const READ_BUDGET: usize = 64 * 1024;
/// Wrong passwords before the connection is closed (manage.h
/// `MANAGEMENT_N_PASSWORD_RETRIES`).
const PASSWORD_RETRIES: u32 = 3;
/// Lines of a `client-auth` block accepted.
const MAX_BLOCK_LINES: usize = 256;
/// Log lines sent per wake-up (the rest follow on the next one).
const LOG_BATCH: usize = 1024;
/// OpenVPN's `verb` range.
const MAX_VERB: u8 = 11;

/// Everything the server gives the management interface at start.
pub struct ManagementOptions {
    pub listener: MgmtListener,
    /// The first line of the password file.
    pub password: Option<Zeroizing<String>>,
    /// `management-client-auth`.
    pub client_auth: bool,
    /// `management-hold`.
    pub hold: bool,
    /// `management-log-cache`: lines of log and state history kept.
    pub log_cache: usize,
    /// `management-client-user`, as a uid.
    pub allowed_uid: Option<u32>,
    /// `management-client-group`, as a gid.
    pub allowed_gid: Option<u32>,
    /// The log cache the logger fills.
    pub log: Option<LogTap>,
    /// What follows `OpenVPN Version: ` (`OpenVPN 2.6.14 warren-0.1.0 x86_64-pc-linux-gnu`).
    pub version: String,
    /// Variables of the server itself that every `>CLIENT:` environment ends with
    /// (`dev`, `ifconfig_local`, `verb`, `daemon_pid`, ...).
    pub daemon_env: Vec<Var>,
    /// The server's tunnel address (state lines).
    pub tun_ip: Ipv4Addr,
    /// The bound address of the server's socket when it is not the wildcard (state lines).
    pub local: Option<SocketAddr>,
    /// `status-version` (a bare `status` command uses it).
    pub status_version: StatusVersion,
    /// `verb` of the configuration (when there is no log cache to ask).
    pub verb: u8,
}

impl std::fmt::Debug for ManagementOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementOptions")
            .field("listener", &self.listener.local())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("client_auth", &self.client_auth)
            .field("hold", &self.hold)
            .finish_non_exhaustive()
    }
}

/// Management client ids (CID): a counter, one per client instance, never reused while
/// the process runs (OpenVPN multi.c `cid_counter`). They are also the status files'
/// "Client ID" column, so the loop keeps them with or without a management interface.
#[derive(Debug, Default)]
pub struct ClientIds {
    next: u64,
    by_peer: HashMap<PeerId, u64>,
}

impl ClientIds {
    /// A new CID for a new client in `peer`'s slot.
    pub fn assign(&mut self, peer: PeerId) -> u64 {
        let cid = self.next;
        self.next += 1;
        self.by_peer.insert(peer, cid);
        cid
    }

    /// The CID of `peer`, assigning one if it has none.
    pub fn get_or_assign(&mut self, peer: PeerId) -> u64 {
        match self.by_peer.get(&peer) {
            Some(c) => *c,
            None => self.assign(peer),
        }
    }

    pub fn get(&self, peer: PeerId) -> Option<u64> {
        self.by_peer.get(&peer).copied()
    }

    pub fn release(&mut self, peer: PeerId) {
        self.by_peer.remove(&peer);
    }

    fn peer_of(&self, cid: u64) -> Option<PeerId> {
        self.by_peer
            .iter()
            .find_map(|(p, c)| (*c == cid).then_some(*p))
    }
}

/// What the loop must do for the management client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `signal SIGx`: handle it as if the process had received it.
    Signal(Signal),
}

/// What a command or an event may use of the server.
pub struct Ctx<'a> {
    pub server: &'a mut Server,
    pub now: Instant,
    pub clock: Clock,
    /// The status report's `TITLE`.
    pub title: &'a str,
    pub cids: &'a ClientIds,
    /// With `warren-metrics`: where the final authentication decisions are counted.
    pub(crate) metrics: Option<&'a Metrics>,
}

impl Ctx<'_> {
    /// The final decision about a login: counted, and handed to the engine.
    pub fn authorize(&mut self, peer: PeerId, decision: AuthDecision) {
        if let Some(m) = self.metrics {
            m.auth(matches!(decision, AuthDecision::Accept(_)));
        }
        self.server.authorize(self.now, peer, decision);
    }
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// A client waiting for `client-auth`/`client-deny`.
struct Pending {
    peer: PeerId,
    kid: u64,
    /// What the authenticator before the management client (the user database) granted.
    grant: AuthGrant,
}

/// A connected client's environment, kept for `>CLIENT:DISCONNECT`.
struct Established {
    cid: u64,
    since_unix: u64,
    env: Vec<Var>,
}

/// The connection to the management client.
struct Conn {
    io: MgmtConn,
    /// The line being read.
    line: Vec<u8>,
    /// The line overflowed: drop bytes up to the next newline.
    overflow: bool,
    out: VecDeque<u8>,
    authed: bool,
    password_tries: u32,
    /// A `client-auth` block being read: (cid, kid, lines).
    block: Option<(u64, u64, Vec<String>)>,
    state_on: bool,
    log_on: bool,
    echo_on: bool,
    /// The next log line to send with `log on`.
    log_seq: u64,
    /// `quit`, `exit`, an error or a full buffer: close after this turn.
    closing: Option<&'static str>,
}

impl Conn {
    /// Queues a line with its CRLF; marks the connection for closing when the queue is
    /// full.
    fn line(&mut self, s: &str) {
        if self.closing.is_some() {
            return;
        }
        if self.out.len() + s.len() + 2 > OUTPUT_LIMIT {
            self.closing = Some("its output queue is full (it stopped reading)");
            return;
        }
        self.out.extend(s.as_bytes());
        self.out.extend(b"\r\n");
    }

    fn raw(&mut self, s: &str) {
        if self.out.len() + s.len() <= OUTPUT_LIMIT {
            self.out.extend(s.as_bytes());
        }
    }
}

/// The management interface of one server.
pub struct Management {
    opts: ManagementOptions,
    conn: Option<Conn>,
    /// State history, oldest first (rendered without the `>STATE:` prefix).
    states: VecDeque<String>,
    hold_flag: bool,
    held: bool,
    bytecount: Option<Duration>,
    next_bytecount: Option<Instant>,
    /// By CID.
    pending: HashMap<u64, Pending>,
    /// Logins held back until the user database decided (then they go to the
    /// management client), by peer.
    deferred: HashMap<PeerId, AuthRequest>,
    established: HashMap<PeerId, Established>,
    next_kid: u64,
    /// Link bytes of clients that left (`load-stats` counts since start, as OpenVPN).
    gone_bytes: (u64, u64),
    actions: Vec<Action>,
    mute: u32,
    verb: u8,
    tokens: Tokens,
}

#[derive(Default)]
struct Tokens {
    listener: Option<Token>,
    conn: Option<Token>,
    wake: Option<Token>,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("listen", &self.opts.listener.local())
            .field("connected", &self.conn.is_some())
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl Management {
    pub fn new(opts: ManagementOptions) -> Management {
        if let Some(tap) = &opts.log {
            tap.set_capacity(opts.log_cache);
        }
        let hold = opts.hold;
        let verb = opts.verb;
        Management {
            opts,
            conn: None,
            states: VecDeque::new(),
            hold_flag: hold,
            held: hold,
            bytecount: None,
            next_bytecount: None,
            pending: HashMap::new(),
            deferred: HashMap::new(),
            established: HashMap::new(),
            next_kid: 1,
            gone_bytes: (0, 0),
            actions: Vec::new(),
            mute: 0,
            verb,
            tokens: Tokens::default(),
        }
    }

    /// Where it listens, for the log.
    pub fn describe(&self) -> String {
        match self.opts.listener.local_addr() {
            Some(a) => format!("management interface on tcp {a}"),
            None => format!(
                "management interface on unix socket {}",
                self.opts.listener.local()
            ),
        }
    }

    /// `management-client-auth`.
    pub fn client_auth_enabled(&self) -> bool {
        self.opts.client_auth
    }

    /// Whether the server waits for `hold release`.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Starts a hold (`management-hold` after a restart); `delay` is the `>HOLD:` number.
    pub fn hold_again(&mut self, delay: u32) {
        if self.hold_flag {
            self.held = true;
            info!("Need hold release from management interface, waiting...");
            self.realtime(&format!(">HOLD:Waiting for hold release:{delay}"));
        }
    }

    /// Actions from the last commands.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Adds the descriptors to watch: the listener while nobody is connected (OpenVPN
    /// serves one client; the next waits in the backlog), the connection (writable too
    /// while output is queued) and the log's wake-up.
    pub fn register(&mut self, poller: &mut Poller) {
        self.tokens = Tokens::default();
        match &self.conn {
            None => {
                self.tokens.listener = Some(poller.add(
                    std::os::fd::AsFd::as_fd(&self.opts.listener),
                    Interest::Readable,
                ));
            }
            Some(c) => {
                let interest = if c.out.is_empty() {
                    Interest::Readable
                } else {
                    Interest::Both
                };
                self.tokens.conn = Some(poller.add(std::os::fd::AsFd::as_fd(&c.io), interest));
            }
        }
        if let Some(tap) = &self.opts.log {
            self.tokens.wake = Some(poller.add(tap.wake_fd(), Interest::Readable));
        }
    }

    /// The bytecount timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_bytecount
    }

    /// Accepts, reads and runs commands, sends queued output and new log lines.
    pub fn ready(&mut self, poller: &Poller, ctx: &mut Ctx<'_>) {
        if self.tokens.wake.is_some_and(|t| poller.is_readable(t))
            && let Some(tap) = &self.opts.log
        {
            tap.clear_wake();
        }
        if self.tokens.listener.is_some_and(|t| poller.is_readable(t)) {
            self.accept(ctx);
        }
        if self.tokens.conn.is_some_and(|t| poller.is_readable(t)) {
            self.read(ctx);
        }
        self.after();
    }

    /// Sends new log lines and the bytecount notifications that are due, writes what is
    /// queued and closes a connection that asked for it or failed.
    pub fn after(&mut self) {
        self.forward_log();
        self.flush();
        let Some(c) = &self.conn else { return };
        if let Some(why) = c.closing {
            if why == "its output queue is full (it stopped reading)" {
                warn!("MANAGEMENT: client disconnected: {why}");
            } else {
                info!("MANAGEMENT: Client disconnected");
            }
            debug!(reason = why, "management connection closed");
            self.conn = None;
            // OpenVPN manage.c man_reset_client_socket: bytecount stops with the client.
            self.bytecount = None;
            self.next_bytecount = None;
        }
    }

    /// The bytecount timer fired: one `>BYTECOUNT_CLI` per connected client.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let (Some(every), Some(at)) = (self.bytecount, self.next_bytecount) else {
            return;
        };
        if ctx.now < at {
            return;
        }
        self.next_bytecount = Some(ctx.now + every);
        let mut clients = ctx.server.clients();
        clients.sort_by_key(|c| c.peer_id);
        for c in clients {
            if let Some(cid) = ctx.cids.get(c.peer_id) {
                self.realtime(&format!(
                    ">BYTECOUNT_CLI:{cid},{},{}",
                    c.bytes_received, c.bytes_sent
                ));
            }
        }
        self.after();
    }

    fn accept(&mut self, ctx: &mut Ctx<'_>) {
        let io = match self.opts.listener.accept() {
            Ok(Some(io)) => io,
            Ok(None) => return,
            Err(e) => {
                warn!("MANAGEMENT: accept failed: {e}");
                return;
            }
        };
        if let Some(cred) = io.peer_cred() {
            let user_ok = self.opts.allowed_uid.is_none_or(|u| u == cred.uid);
            let group_ok = self.opts.allowed_gid.is_none_or(|g| g == cred.gid);
            if !(user_ok && group_ok) {
                // manage.c man_verify_unix_peer_uid_gid.
                warn!(
                    "MANAGEMENT: UNIX socket peer uid={} gid={} refused (management-client-user/-group)",
                    cred.uid, cred.gid
                );
                return;
            }
        }
        info!("MANAGEMENT: Client connected from {}", io.peer());
        let log_seq = self.opts.log.as_ref().map_or(0, LogTap::next_seq);
        let mut c = Conn {
            io,
            line: Vec::new(),
            overflow: false,
            out: VecDeque::new(),
            authed: self.opts.password.is_none(),
            password_tries: 0,
            block: None,
            state_on: false,
            log_on: false,
            echo_on: false,
            log_seq,
            closing: None,
        };
        if c.authed {
            c.line(BANNER);
            if self.held {
                c.line(">HOLD:Waiting for hold release:0");
            }
        } else {
            c.raw("ENTER PASSWORD:");
        }
        self.conn = Some(c);
        // Anything the client already sent.
        self.read(ctx);
    }

    fn read(&mut self, ctx: &mut Ctx<'_>) {
        let mut budget = READ_BUDGET;
        let mut buf = [0u8; 4096];
        while budget > 0 {
            let Some(c) = self.conn.as_mut() else { return };
            if c.closing.is_some() {
                return;
            }
            let n = match c.io.read(&mut buf) {
                Ok(0) => {
                    c.closing = Some("it closed the connection");
                    return;
                }
                Ok(n) => n,
                Err(e) if warren_io::is_would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.closing = Some("reading failed");
                    return;
                }
            };
            budget = budget.saturating_sub(n);
            for &b in &buf[..n] {
                let Some(c) = self.conn.as_mut() else { return };
                if b == b'\n' {
                    let line = std::mem::take(&mut c.line);
                    let overflow = std::mem::take(&mut c.overflow);
                    if !overflow {
                        let text = String::from_utf8_lossy(&line).into_owned();
                        self.on_line(&text, ctx);
                    }
                } else if b == 0 || (b.is_ascii_control() && b != b'\t') {
                    // manage.c man_read: NUL and non-printable characters are dropped
                    // (so `\r` of a CRLF disappears).
                } else if c.line.len() >= LINE_LIMIT {
                    c.line.clear();
                    c.overflow = true;
                } else {
                    c.line.push(b);
                }
            }
        }
    }

    /// One complete input line.
    fn on_line(&mut self, text: &str, ctx: &mut Ctx<'_>) {
        let Some(c) = self.conn.as_mut() else { return };
        if c.closing.is_some() {
            return;
        }
        if !c.authed {
            let ok = self
                .opts
                .password
                .as_ref()
                .is_some_and(|p| constant_time_eq(p.as_bytes(), text.as_bytes()));
            if ok {
                c.authed = true;
                c.line("SUCCESS: password is correct");
                c.line(BANNER);
                if self.held {
                    c.line(">HOLD:Waiting for hold release:0");
                }
            } else {
                c.password_tries += 1;
                warn!("MANAGEMENT: client provided an incorrect password");
                if c.password_tries >= PASSWORD_RETRIES {
                    c.closing = Some("too many wrong passwords");
                } else {
                    // OpenVPN mutes "ERROR: bad password" while a password is needed.
                    c.raw("ENTER PASSWORD:");
                }
            }
            return;
        }
        if let Some((cid, kid, lines)) = c.block.as_mut() {
            if text == "END" {
                let (cid, kid, lines) = (*cid, *kid, std::mem::take(lines));
                c.block = None;
                let reply = self.client_auth(cid, kid, &lines, ctx);
                self.reply(&reply);
            } else if lines.len() < MAX_BLOCK_LINES {
                lines.push(text.to_owned());
            }
            return;
        }
        let p = tokenize(text);
        if p.is_empty() {
            return;
        }
        debug!("MANAGEMENT: CMD '{}'", text.trim());
        self.command(&p, ctx);
    }

    /// Queues reply lines.
    fn reply(&mut self, lines: &str) {
        if let Some(c) = self.conn.as_mut() {
            for l in lines.lines() {
                c.line(l);
            }
        }
    }

    /// Queues a real-time line for an authenticated client (none: it is dropped, as in
    /// OpenVPN).
    fn realtime(&mut self, line: &str) {
        if let Some(c) = self.conn.as_mut()
            && c.authed
        {
            c.line(line);
        }
    }

    fn command(&mut self, p: &[String], ctx: &mut Ctx<'_>) {
        let arg = |i: usize| p.get(i).map(String::as_str);
        let name = p[0].as_str();
        let r = match name {
            "help" => help(&self.opts.version),
            "version" => match arg(1) {
                // Sets the client's version; no output (manage.c man_query_version).
                Some(_) => return,
                None => format!(
                    "OpenVPN Version: {}\nManagement Version: {MANAGEMENT_VERSION}\nEND",
                    self.opts.version
                ),
            },
            "pid" => format!("SUCCESS: pid={}", std::process::id()),
            "load-stats" => {
                let clients = ctx.server.clients();
                let bin: u64 = clients.iter().map(|c| c.bytes_received).sum();
                let bout: u64 = clients.iter().map(|c| c.bytes_sent).sum();
                format!(
                    "SUCCESS: nclients={},bytesin={},bytesout={}",
                    clients.len(),
                    bin + self.gone_bytes.0,
                    bout + self.gone_bytes.1
                )
            }
            "nclients" => format!("SUCCESS: nclients={}", ctx.server.clients().len()),
            "status" => {
                let version = match arg(1) {
                    None => Some(self.opts.status_version),
                    Some(n) => n.parse().ok().and_then(StatusVersion::from_number),
                };
                match version {
                    Some(v) => status_text(v, ctx),
                    None => "ERROR: bad status format version number".into(),
                }
            }
            "state" | "log" | "echo" => {
                let mut out = String::new();
                match (arg(1), arg(2)) {
                    (None, _) => self.history(name, "1", &mut out),
                    (Some(a), b) => {
                        self.history(name, a, &mut out);
                        if let Some(b) = b {
                            self.history(name, b, &mut out);
                        }
                    }
                }
                out
            }
            "bytecount" => match need(p, 1, false) {
                Err(e) => e,
                Ok(()) => {
                    let n: u64 = p[1].parse().unwrap_or(0);
                    if n == 0 {
                        self.bytecount = None;
                        self.next_bytecount = None;
                    } else {
                        self.bytecount = Some(Duration::from_secs(n));
                        self.next_bytecount = Some(ctx.now + Duration::from_secs(n));
                    }
                    "SUCCESS: bytecount interval changed".into()
                }
            },
            "hold" => match arg(1) {
                None => format!("SUCCESS: hold={}", u8::from(self.hold_flag)),
                Some("on") => {
                    self.hold_flag = true;
                    "SUCCESS: hold flag set to ON".into()
                }
                Some("off") => {
                    self.hold_flag = false;
                    "SUCCESS: hold flag set to OFF".into()
                }
                Some("release") => {
                    if self.held {
                        self.held = false;
                        info!("MANAGEMENT: hold released");
                    }
                    "SUCCESS: hold release succeeded".into()
                }
                Some(_) => "ERROR: bad hold command parameter".into(),
            },
            "signal" => match need(p, 1, false) {
                Err(e) => e,
                Ok(()) => match parse_signal(&p[1]) {
                    Some(sig) => {
                        self.actions.push(Action::Signal(sig));
                        format!("SUCCESS: signal {} thrown", sig.name())
                    }
                    None => format!("ERROR: signal '{}' is not a known signal type", p[1]),
                },
            },
            "verb" => match arg(1) {
                None => format!("SUCCESS: verb={}", self.verb),
                Some(v) => match v.parse::<u8>() {
                    Ok(n) if n <= MAX_VERB => {
                        let changed = self.opts.log.as_ref().is_some_and(|t| t.change_verb(n));
                        if changed {
                            self.verb = n;
                            "SUCCESS: verb level changed".into()
                        } else {
                            "ERROR: the log level cannot be changed in this process".into()
                        }
                    }
                    _ => "ERROR: verb level is out of range".into(),
                },
            },
            "mute" => match arg(1) {
                None => format!("SUCCESS: mute={}", self.mute),
                Some(v) => match v.parse::<u32>() {
                    Ok(n) => {
                        self.mute = n;
                        if let Some(t) = &self.opts.log {
                            t.set_mute(n);
                        }
                        "SUCCESS: mute level changed".into()
                    }
                    Err(_) => "ERROR: mute level is out of range".into(),
                },
            },
            "kill" => match need(p, 1, false) {
                Err(e) => e,
                Ok(()) => kill(&p[1], ctx),
            },
            "client-kill" => match need(p, 1, true) {
                Err(e) => e,
                Ok(()) => match p[1].parse::<u64>() {
                    Err(_) => "ERROR: cannot parse CID".into(),
                    Ok(cid) => {
                        let msg = arg(2).unwrap_or("RESTART");
                        let n = ctx.cids.peer_of(cid).map_or(0, |peer| {
                            ctx.server
                                .kick_target(ctx.now, &KickTarget::Peer(peer), msg)
                        });
                        if n > 0 {
                            info!("MANAGEMENT: client-kill CID {cid}: sent {msg}, session ended");
                            "SUCCESS: client-kill command succeeded".into()
                        } else {
                            "ERROR: client-kill command failed".into()
                        }
                    }
                },
            },
            "client-auth" | "client-auth-nt" => match need(p, 2, false) {
                Err(e) => e,
                Ok(()) => match parse_ids(&p[1], &p[2]) {
                    Err(e) => e,
                    Ok((cid, kid)) if name == "client-auth" => {
                        if let Some(c) = self.conn.as_mut() {
                            c.block = Some((cid, kid, Vec::new()));
                        }
                        return;
                    }
                    Ok((cid, kid)) => self.client_auth(cid, kid, &[], ctx),
                },
            },
            "client-deny" => match need(p, 3, true) {
                Err(e) => e,
                Ok(()) => match parse_ids(&p[1], &p[2]) {
                    Err(e) => e,
                    Ok((cid, kid)) => self.client_deny(cid, kid, &p[3], arg(4), ctx),
                },
            },
            "client-pending-auth" => match need(p, 4, false) {
                Err(e) => e,
                Ok(()) => "ERROR: client-pending-auth is not supported by warren (no \
                           AUTH_PENDING); answer with client-auth or client-deny"
                    .into(),
            },
            "test" => match need(p, 1, false) {
                Err(e) => e,
                Ok(()) => {
                    let n: usize = p[1].parse().unwrap_or(0);
                    if let Some(c) = self.conn.as_mut() {
                        for i in 0..n {
                            c.line(&format!(
                                "[{i}] The purpose of this command is to generate large amounts of output."
                            ));
                            if c.closing.is_some() {
                                break;
                            }
                        }
                    }
                    return;
                }
            },
            "exit" | "quit" => {
                if let Some(c) = self.conn.as_mut() {
                    c.closing = Some("it quit");
                }
                return;
            }
            _ => "ERROR: unknown command, enter 'help' for more options".into(),
        };
        self.reply(&r);
    }

    /// `state`/`log`/`echo` with one parameter (manage.c `man_history`).
    fn history(&mut self, kind: &str, parm: &str, out: &mut String) {
        let on = match parm {
            "on" => Some(true),
            "off" => Some(false),
            _ => None,
        };
        if let Some(on) = on {
            if let Some(c) = self.conn.as_mut() {
                match kind {
                    "state" => c.state_on = on,
                    "log" => {
                        c.log_on = on;
                        if on {
                            c.log_seq = self.opts.log.as_ref().map_or(0, LogTap::next_seq);
                        }
                    }
                    _ => c.echo_on = on,
                }
            }
            let _ = writeln!(
                out,
                "SUCCESS: real-time {kind} notification set to {}",
                if on { "ON" } else { "OFF" }
            );
            return;
        }
        let n = match parm {
            "all" => None,
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    let _ = writeln!(out, "ERROR: {kind} parameter must be 'on', 'off', or 'all'");
                    return;
                }
            },
        };
        match kind {
            "state" => {
                let skip = n.map_or(0, |n| self.states.len().saturating_sub(n));
                for s in self.states.iter().skip(skip) {
                    let _ = writeln!(out, "{s}");
                }
            }
            "log" => {
                for l in self
                    .opts
                    .log
                    .as_ref()
                    .map(|t| t.last(n))
                    .unwrap_or_default()
                {
                    let _ = writeln!(out, "{}", l.render());
                }
            }
            // warren has no `echo` messages (the directive is ignored).
            _ => {}
        }
        out.push_str("END\n");
    }

    /// Sends log lines appended since the last turn to a client with `log on`.
    fn forward_log(&mut self) {
        let (Some(tap), Some(c)) = (&self.opts.log, self.conn.as_mut()) else {
            return;
        };
        if !c.authed || !c.log_on || c.closing.is_some() {
            return;
        }
        let lines = tap.since(c.log_seq, LOG_BATCH);
        if let Some(last) = lines.last() {
            c.log_seq = last.seq + 1;
        }
        for l in lines {
            c.line(&format!(">LOG:{}", l.render()));
        }
        if c.log_seq < tap.next_seq() {
            // More than one batch: come back at once.
            tap.push_wake();
        }
    }

    /// Writes queued output as far as the socket takes it.
    fn flush(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        while !c.out.is_empty() {
            let (a, _) = c.out.as_slices();
            match c.io.write(a) {
                Ok(0) => {
                    c.closing = Some("writing failed");
                    return;
                }
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if warren_io::is_would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.out.clear();
                    c.closing.get_or_insert("writing failed");
                    return;
                }
            }
        }
    }

    /// Best-effort write of what is queued, at exit.
    pub fn shutdown(&mut self) {
        self.flush();
    }

    /// A state change (manage.c `management_set_state`): kept in the history, sent as
    /// `>STATE:` to a client with `state on`.
    pub fn set_state(&mut self, unix: u64, name: &str, desc: &str, tun_ip: bool, local: bool) {
        let tun = if tun_ip {
            self.opts.tun_ip.to_string()
        } else {
            String::new()
        };
        let (lip, lport) = match (local, self.opts.local) {
            (true, Some(a)) => (a.ip().to_string(), a.port().to_string()),
            _ => (String::new(), String::new()),
        };
        let line = format!("{unix},{name},{desc},{tun},,,{lip},{lport}");
        if self.states.len() >= self.opts.log_cache.max(1) {
            self.states.pop_front();
        }
        self.states.push_back(line.clone());
        if let Some(c) = self.conn.as_mut()
            && c.authed
            && c.state_on
        {
            c.line(&format!(">STATE:{line}"));
        }
    }

    // ---- client events ----

    fn new_kid(&mut self) -> u64 {
        let k = self.next_kid;
        self.next_kid += 1;
        k
    }

    /// `>CLIENT:` head line, env lines, `>CLIENT:ENV,END`, as one unit.
    fn client_block(&mut self, head: &str, env: &[Var]) {
        let Some(c) = self.conn.as_mut() else { return };
        if !c.authed {
            return;
        }
        let size: usize = head.len()
            + env
                .iter()
                .map(|(k, v)| k.len() + v.len() + 16)
                .sum::<usize>()
            + 20;
        if c.out.len() + size > OUTPUT_LIMIT {
            c.closing = Some("its output queue is full (it stopped reading)");
            return;
        }
        c.line(head);
        for (k, v) in env {
            c.line(&format!(">CLIENT:ENV,{k}={v}"));
        }
        c.line(">CLIENT:ENV,END");
    }

    /// A login waits for the user database first; [`Management::database_decided`] brings
    /// it back.
    pub fn defer(&mut self, info: AuthRequest) {
        self.deferred.insert(info.peer_id, info);
    }

    /// The user database decided about a login: the acceptance of a deferred one goes on
    /// to the management client (its grant is kept); any other decision is final.
    pub fn database_decided(&mut self, peer: PeerId, decision: AuthDecision, ctx: &mut Ctx<'_>) {
        match (self.deferred.remove(&peer), decision) {
            (Some(info), AuthDecision::Accept(grant)) => self.client_connect(info, grant, ctx),
            (_, decision) => ctx.authorize(peer, decision),
        }
    }

    /// `>CLIENT:CONNECT,CID,KID` for a login the management client must decide.
    pub fn client_connect(&mut self, info: AuthRequest, grant: AuthGrant, ctx: &mut Ctx<'_>) {
        let peer = info.peer_id;
        let Some(cid) = ctx.cids.get(peer) else {
            ctx.authorize(peer, AuthDecision::Reject { reason: None });
            return;
        };
        if info.username.as_deref().is_none_or(str::is_empty) && info.password.is_none() {
            // ssl.c key_method_2_read: with management-client-auth a client must send a
            // username and password (there is no `auth-user-pass-optional` in warren).
            warn!(
                "TLS Error: Auth Username/Password was not provided by peer (cn={} addr={}): \
                 refused; with management-client-auth clients need auth-user-pass",
                info.common_name, info.addr
            );
            ctx.authorize(peer, AuthDecision::Reject { reason: None });
            return;
        }
        let kid = self.new_kid();
        let mut env = vec![(
            "n_clients".to_owned(),
            ctx.server.clients().len().to_string(),
        )];
        if let Some(p) = &info.password {
            env.push(("password".into(), p.as_str().replace(['\r', '\n'], "")));
        }
        env.extend(env::address(false, &info.addr));
        env.push(("common_name".into(), info.common_name.clone()));
        if let Some(u) = &info.username {
            env.push(("username".into(), u.clone()));
        }
        if let Some(pi) = ctx.server.peer_info(peer) {
            env.extend(env::peer_info(pi));
        }
        if let Some(der) = &info.certificate {
            env.extend(env::certificate(der));
        }
        env.extend(self.opts.daemon_env.iter().cloned());
        env.push(("script_context".into(), "init".into()));
        let authed = self.conn.as_ref().is_some_and(|c| c.authed);
        if !authed {
            warn!(
                "MANAGEMENT: no management client to decide about cn={} (CID {cid}): the \
                 client waits until its hand-window ends",
                info.common_name
            );
        }
        self.pending.insert(cid, Pending { peer, kid, grant });
        self.client_block(&format!(">CLIENT:CONNECT,{cid},{kid}"), &env);
    }

    fn take_pending(&mut self, cid: u64, kid: u64, ctx: &Ctx<'_>) -> Option<Pending> {
        let p = self.pending.get(&cid)?;
        if p.kid != kid || ctx.cids.get(p.peer) != Some(cid) {
            return None;
        }
        self.pending.remove(&cid)
    }

    /// `client-auth CID KID` + block, or `client-auth-nt` (empty block).
    fn client_auth(&mut self, cid: u64, kid: u64, lines: &[String], ctx: &mut Ctx<'_>) -> String {
        const FAILED: &str = "ERROR: client-auth command failed";
        let mut extra = Vec::new();
        let mut fixed_ip = None;
        for l in lines {
            match client_auth_line(l) {
                Ok(None) => {}
                Ok(Some(BlockLine::Push(o))) => extra.push(o),
                Ok(Some(BlockLine::IfconfigPush(ip))) => fixed_ip = Some(ip),
                Err(why) => {
                    warn!("MANAGEMENT: client-auth CID {cid}: {why}: {l:?}");
                    return FAILED.into();
                }
            }
        }
        let Some(p) = self.take_pending(cid, kid, ctx) else {
            return FAILED.into();
        };
        let mut grant = p.grant;
        grant.push.extend(extra);
        if fixed_ip.is_some() {
            grant.fixed_ip = fixed_ip;
        }
        info!("MANAGEMENT: client-auth CID {cid} KID {kid}: accepted");
        ctx.authorize(p.peer, AuthDecision::Accept(grant));
        "SUCCESS: client-auth command succeeded".into()
    }

    fn client_deny(
        &mut self,
        cid: u64,
        kid: u64,
        reason: &str,
        client_reason: Option<&str>,
        ctx: &mut Ctx<'_>,
    ) -> String {
        let Some(p) = self.take_pending(cid, kid, ctx) else {
            return "ERROR: client-deny command failed".into();
        };
        info!("MANAGEMENT: client-deny CID {cid} KID {kid}: {reason}");
        ctx.authorize(
            p.peer,
            AuthDecision::Reject {
                reason: client_reason.map(str::to_owned),
            },
        );
        "SUCCESS: client-deny command succeeded".into()
    }

    /// A client is connected: `>CLIENT:ADDRESS` (with client-auth) and
    /// `>CLIENT:ESTABLISHED` with its environment.
    pub fn client_established(
        &mut self,
        peer: PeerId,
        cid: u64,
        vpn_ip: Ipv4Addr,
        ctx: &mut Ctx<'_>,
    ) {
        let unix = ctx.clock.unix_now();
        let Some(client) = ctx.server.client(peer) else {
            return;
        };
        let mut env = vec![(
            "n_clients".to_owned(),
            ctx.server.clients().len().to_string(),
        )];
        let netmask = ctx.server.netmask();
        env.push(("ifconfig_pool_netmask".into(), netmask.to_string()));
        env.push(("ifconfig_pool_remote_ip".into(), vpn_ip.to_string()));
        env.push(("time_unix".into(), unix.to_string()));
        env.push(("time_ascii".into(), warren_io::format_local_time(unix)));
        env.extend(env::address(true, &client.real_addr));
        env.push(("common_name".into(), client.common_name.clone()));
        if let Some(u) = &client.username {
            env.push(("username".into(), u.clone()));
        }
        if let Some(pi) = ctx.server.peer_info(peer) {
            env.extend(env::peer_info(pi));
        }
        if let Some(der) = ctx.server.peer_certificate(peer) {
            env.extend(env::certificate(der.as_ref()));
        }
        env.extend(self.opts.daemon_env.iter().cloned());
        env.push(("script_context".into(), "init".into()));
        if self.opts.client_auth {
            self.realtime(&format!(">CLIENT:ADDRESS,{cid},{vpn_ip},1"));
        }
        self.client_block(&format!(">CLIENT:ESTABLISHED,{cid}"), &env);
        self.established.insert(
            peer,
            Established {
                cid,
                since_unix: unix,
                env,
            },
        );
    }

    /// A client left: with client-auth, `>CLIENT:DISCONNECT` with its environment (empty
    /// for one that never connected).
    pub fn client_gone(&mut self, peer: PeerId, cid: Option<u64>, bytes: (u64, u64), unix: u64) {
        self.gone_bytes.0 += bytes.0;
        self.gone_bytes.1 += bytes.1;
        self.deferred.remove(&peer);
        if let Some(cid) = cid {
            self.pending.remove(&cid);
        }
        let est = self.established.remove(&peer);
        if !self.opts.client_auth {
            return;
        }
        match est {
            Some(e) => {
                let mut env = vec![
                    (
                        "time_duration".to_owned(),
                        unix.saturating_sub(e.since_unix).to_string(),
                    ),
                    ("bytes_sent".to_owned(), bytes.1.to_string()),
                    ("bytes_received".to_owned(), bytes.0.to_string()),
                ];
                env.extend(e.env.into_iter().filter(|(k, _)| k != "script_context"));
                env.push(("script_context".into(), "init".into()));
                self.client_block(&format!(">CLIENT:DISCONNECT,{}", e.cid), &env);
            }
            None => {
                if let Some(cid) = cid {
                    self.client_block(&format!(">CLIENT:DISCONNECT,{cid}"), &[]);
                }
            }
        }
    }
}

/// A `client-auth` block line warren applies.
enum BlockLine {
    Push(String),
    IfconfigPush(Ipv4Addr),
}

/// One line of a `client-auth` block (client-connect directives, OpenVPN multi.c
/// `multi_client_connect_mda`): `push "..."` and `ifconfig-push IP MASK`; blank lines and
/// comments are skipped; anything else is refused (silently dropping it would give the
/// client other settings than the management client meant).
fn client_auth_line(l: &str) -> Result<Option<BlockLine>, &'static str> {
    let t = l.trim();
    if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
        return Ok(None);
    }
    let p = tokenize(t);
    match p.first().map(String::as_str) {
        Some("push") if p.len() == 2 => {
            let o = p[1].trim();
            if o.is_empty() || o.len() > 255 {
                return Err("a pushed option must have 1 to 255 characters");
            }
            let first = o.split_ascii_whitespace().next().unwrap_or("");
            if matches!(first, "comp-lzo" | "compress") {
                return Err("compression is refused");
            }
            Ok(Some(BlockLine::Push(o.to_owned())))
        }
        Some("push") => Err("`push` takes one quoted option"),
        Some("ifconfig-push") if p.len() == 3 => p[1]
            .parse()
            .map(|ip| Some(BlockLine::IfconfigPush(ip)))
            .map_err(|_| "`ifconfig-push` needs an IPv4 address"),
        Some(_) => Err(
            "only `push \"...\"` and `ifconfig-push IP MASK` are supported in a client-auth block",
        ),
        None => Ok(None),
    }
}

/// `a == b` without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// manage.c `man_need`: `ERROR: the 'kill' command requires 1 parameter`.
fn need(p: &[String], n: usize, at_least: bool) -> Result<(), String> {
    if p.len() > n {
        return Ok(());
    }
    Err(format!(
        "ERROR: the '{}' command requires {}{n} parameter{}",
        p[0],
        if at_least { "at least " } else { "" },
        if n == 1 { "" } else { "s" }
    ))
}

fn parse_ids(cid: &str, kid: &str) -> Result<(u64, u64), String> {
    let cid = cid
        .parse()
        .map_err(|_| "ERROR: cannot parse CID".to_owned())?;
    let kid = kid
        .parse()
        .map_err(|_| "ERROR: cannot parse KID".to_owned())?;
    Ok((cid, kid))
}

/// sig.c `parse_signal`.
fn parse_signal(s: &str) -> Option<Signal> {
    Some(match s {
        "SIGINT" => Signal::Interrupt,
        "SIGTERM" => Signal::Terminate,
        "SIGHUP" => Signal::Hangup,
        "SIGUSR1" => Signal::User1,
        "SIGUSR2" => Signal::User2,
        _ => return None,
    })
}

/// `kill CN` or `kill IP:port` (multi.c `management_callback_kill_by_cn`/`_addr`).
/// Unlike OpenVPN, which closes the session silently (the client notices at
/// ping-restart), warren tells the client `RESTART` first, so it reconnects at once.
fn kill(target: &str, ctx: &mut Ctx<'_>) -> String {
    let parts: Vec<&str> = target.split(':').collect();
    if parts.len() == 2 {
        let Ok(ip) = parts[0].parse::<Ipv4Addr>() else {
            return format!("ERROR: error parsing IP address: {}", parts[0]);
        };
        let port = match parts[1].parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) => p as u16,
            _ => return format!("ERROR: port number is out of range: {}", parts[1]),
        };
        let want = SocketAddr::from((ip, port));
        let peers: Vec<PeerId> = ctx
            .server
            .clients()
            .into_iter()
            .filter(|c| {
                c.real_addr == want
                    || matches!(c.real_addr, SocketAddr::V6(v6)
                        if v6.ip().to_ipv4_mapped() == Some(ip) && v6.port() == port)
            })
            .map(|c| c.peer_id)
            .collect();
        let mut n = 0;
        for p in peers {
            n += ctx
                .server
                .kick_target(ctx.now, &KickTarget::Peer(p), "RESTART");
        }
        if n > 0 {
            info!("MANAGEMENT: kill {target}: {n} session(s) ended");
            format!("SUCCESS: {n} client(s) at address {ip}:{port} killed")
        } else {
            format!("ERROR: client at address {ip}:{port} not found")
        }
    } else {
        let n = ctx.server.kick(ctx.now, target, "RESTART");
        if n > 0 {
            info!("MANAGEMENT: kill {target}: {n} session(s) ended");
            format!("SUCCESS: common name '{target}' found, {n} client(s) killed")
        } else {
            format!("ERROR: common name '{target}' not found")
        }
    }
}

/// The status report in `version`, as the status file has it, CRLF-terminated by the
/// caller (the engine's clients with their CIDs).
fn status_text(version: StatusVersion, ctx: &mut Ctx<'_>) -> String {
    let mut snap = crate::snapshot(
        ctx.title,
        ctx.clock.unix_now(),
        ctx.clock.unix_time_at_zero(),
        &ctx.server.clients(),
    );
    for r in &mut snap.clients {
        if let Some(cid) = ctx.cids.get(r.peer_id) {
            r.client_id = cid;
        }
    }
    status::render(version, &snap, &warren_io::format_local_time)
}

/// The `help` reply: the commands warren's server answers, in OpenVPN's words.
fn help(version: &str) -> String {
    let mut s = format!("Management Interface for {version}\nCommands:\n");
    s.push_str(
        "bytecount n            : Show bytes in/out, update every n secs (0=off).\n\
         echo [on|off] [N|all]  : Like log, but only show messages in echo buffer.\n\
         exit|quit              : Close management session.\n\
         help                   : Print this message.\n\
         hold [on|off|release]  : Set/show hold flag to on/off state, or\n\
         \x20                        release current hold and start tunnel.\n\
         kill cn                : Kill the client instance(s) having common name cn.\n\
         kill IP:port           : Kill the client instance connecting from IP:port.\n\
         load-stats             : Show global server load stats.\n\
         log [on|off] [N|all]   : Turn on/off realtime log display\n\
         \x20                        + show last N lines or 'all' for entire history.\n\
         mute [n]               : Set log mute level to n, or show level if n is absent.\n\
         pid                    : Show process ID of the current OpenVPN process.\n\
         client-auth CID KID    : Authenticate client-id/key-id CID/KID (MULTILINE)\n\
         client-auth-nt CID KID : Authenticate client-id/key-id CID/KID\n\
         client-deny CID KID R [CR] : Deny auth client-id/key-id CID/KID with log reason\n\
         \x20                            text R and optional client reason text CR\n\
         client-kill CID [M]    : Kill client instance CID with message M (def=RESTART)\n\
         signal s               : Send signal s to daemon,\n\
         \x20                        s = SIGHUP|SIGTERM|SIGUSR1|SIGUSR2.\n\
         state [on|off] [N|all] : Like log, but show state history.\n\
         status [n]             : Show current daemon status info using format #n.\n\
         test n                 : Produce n lines of output for testing/debugging.\n\
         verb [n]               : Set log verbosity level to n, or show if n is absent.\n\
         version [n]            : Set client's version to n or show current version of daemon.\n\
         END",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_read_like_openvpn() {
        let p = |s: &str| tokenize(s);
        assert_eq!(
            need(&p("kill"), 1, false),
            Err("ERROR: the 'kill' command requires 1 parameter".into())
        );
        assert_eq!(
            need(&p("client-auth 1"), 2, false),
            Err("ERROR: the 'client-auth' command requires 2 parameters".into())
        );
        assert_eq!(
            need(&p("client-deny 1"), 3, true),
            Err("ERROR: the 'client-deny' command requires at least 3 parameters".into())
        );
        assert!(need(&p("kill x"), 1, false).is_ok());
        assert_eq!(parse_ids("1", "x"), Err("ERROR: cannot parse KID".into()));
        assert_eq!(parse_signal("SIGUSR1"), Some(Signal::User1));
        assert_eq!(parse_signal("SIGFOO"), None);
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }

    #[test]
    fn client_auth_block_lines() {
        assert!(matches!(
            client_auth_line(r#"push "route 10.66.0.0 255.255.0.0""#),
            Ok(Some(BlockLine::Push(o))) if o == "route 10.66.0.0 255.255.0.0"
        ));
        assert!(matches!(
            client_auth_line("ifconfig-push 10.8.0.50 255.255.255.0"),
            Ok(Some(BlockLine::IfconfigPush(ip))) if ip == Ipv4Addr::new(10, 8, 0, 50)
        ));
        assert!(matches!(client_auth_line("  # note"), Ok(None)));
        assert!(client_auth_line("iroute 10.0.0.0 255.0.0.0").is_err());
        assert!(client_auth_line(r#"push "comp-lzo no""#).is_err());
        assert!(client_auth_line("push").is_err());
    }

    #[test]
    fn help_ends_with_end() {
        let h = help("OpenVPN 2.6.14 warren-0");
        assert!(h.starts_with("Management Interface for OpenVPN 2.6.14 warren-0\nCommands:\n"));
        assert!(h.ends_with("\nEND"));
    }
}
