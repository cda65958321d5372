//! The client endpoint: one control session with one server.
//!
//! # Call order
//!
//! Same contract as [`crate::Server`]: feed datagrams from the server with
//! [`Client::handle_datagram`] and tun packets with [`Client::encapsulate`]; after any input
//! and whenever [`Client::poll_timeout`] is reached (call [`Client::handle_timeout`] first),
//! drain [`Client::poll_transmit`] and [`Client::poll_event`], then re-arm the timer. `now`
//! must never go backwards.
//!
//! A `Client` is one connection attempt to one server address. Reconnecting (ping-restart,
//! `RESTART` from the server, trying the next `remote`) is the driver's job: it builds a new
//! `Client` and keeps the tun device and routes (`persist-tun`).
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use warren_core::Instant;
use warren_crypto::{CipherKind, DATA_HEADROOM, Role};
use warren_wire::{ControlPacket, Opcode};

use crate::ctx::{Ctx, CtxParams, SessionEvent, TlsFactory};
use crate::dataplane::{Payload, classify};
use crate::push::PushedConfig;
use crate::session::{ClientSide, Session};
use crate::types::{ClientDisconnect, DropReason, KeyDerivation, WrapConfig};

/// Everything the client engine needs; built by the CLI from a `.ovpn` profile.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub tls: Arc<rustls::ClientConfig>,
    pub wrap: WrapConfig,
    /// `data-ciphers`, announced in IV_CIPHERS; a pushed `cipher` must be one of them.
    pub data_ciphers: Vec<CipherKind>,
    /// `ping` / `ping-restart` from the profile; pushed values override them.
    pub ping: Option<Duration>,
    pub ping_restart: Option<Duration>,
    /// `reneg-sec` (None = off). OpenVPN's default is 3600 s.
    pub reneg: Option<Duration>,
    pub hand_window: Duration,
    pub tls_timeout: Duration,
    /// `Auto` offers tls-ekm (IV_PROTO bit 3); `ForcePrf` does not, so the server must fall
    /// back to the TLS1-PRF.
    pub key_derivation: KeyDerivation,
    /// `auth-user-pass`: sent in key-method 2 (and again on every renegotiation).
    pub credentials: Option<(String, String)>,
    /// `explicit-exit-notify`: tell the server when we leave.
    pub explicit_exit_notify: bool,
    pub tun_mtu: u16,
    /// `mssfix` (None disables clamping).
    pub mssfix: Option<u16>,
    /// `block-ipv6` in the profile (the server may push it too): IPv6 packets from the tun
    /// are answered with ICMPv6 "no route" ([`Client::drain_tun_replies`]), never sent.
    pub block_ipv6: bool,
    /// Unix time (seconds) at `Instant::ZERO`.
    pub unix_time_at_zero: u64,
}

/// Bytes of ICMPv6 replies held for the driver between two drains; beyond, blocked
/// packets are dropped without one.
const MAX_TUN_REPLIES: usize = 64 * 1024;

/// What became of a datagram from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientDatagram {
    /// A decrypted IP packet is in `buf[range]`: write it to the tun.
    Tun(Range<usize>),
    Consumed,
    Dropped(DropReason),
}

/// Lifecycle events.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The tunnel is up: apply `config` to the tun device (address, routes, DNS).
    Connected {
        /// Boxed: the pushed options are large next to the other events.
        config: Box<PushedConfig>,
        cipher: CipherKind,
        ekm: bool,
        server_cn: Option<String>,
    },
    Renegotiated {
        key_id: u8,
    },
    /// The session is over; the driver decides whether to reconnect.
    Disconnected {
        reason: ClientDisconnect,
    },
}

/// The client engine. See the module docs for the call order.
pub struct Client {
    ctx: Ctx,
    session: Session<ClientSide>,
    server: SocketAddr,
    body: Vec<u8>,
    events: VecDeque<ClientEvent>,
    /// Datagrams queued outside the session's own flow (OCC EXIT).
    extra_out: VecDeque<Vec<u8>>,
    mss: Option<u16>,
    closed: bool,
    /// `block-ipv6` (configured or pushed), the source of its ICMPv6 replies (the pushed
    /// `ifconfig-ipv6` remote, else `fe80::7`), and the replies not yet drained:
    /// `[len: u16 BE][packet]` back to back.
    block_ipv6: bool,
    icmp6_from: Ipv6Addr,
    tun_replies: Vec<u8>,
    tun_mtu: u16,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// Data-channel overhead of a P_DATA_V2 AEAD packet: header 8 + tag 16.
const DATA_OVERHEAD: u16 = 24;

impl Client {
    /// Starts a connection attempt to `server` (sends the hard reset at once).
    pub fn new(
        config: ClientConfig,
        server: SocketAddr,
        rng: Box<dyn warren_core::Rng + Send>,
        now: Instant,
    ) -> Result<Self, ClientSetupError> {
        // The stock client's OCC string (options.c options_string), so a stock server sees
        // what it expects.
        let occ = format!(
            "V4,dev-type tun,link-mtu {},tun-mtu {},proto UDPv4,auth [null-digest],keysize 0,key-method 2,tls-client",
            u32::from(config.tun_mtu) + u32::from(DATA_OVERHEAD) + 1,
            config.tun_mtu
        );
        let mut ctx = Ctx::new(
            CtxParams {
                role: Role::Client,
                tls: TlsFactory::Client(config.tls.clone()),
                tls_timeout: config.tls_timeout,
                hand_window: config.hand_window,
                ping: config.ping,
                ping_restart: config.ping_restart,
                reneg: config.reneg,
                key_derivation: config.key_derivation,
                data_ciphers: config.data_ciphers.clone(),
                data_ciphers_fallback: None,
                unix_time_at_zero: config.unix_time_at_zero,
                occ,
            },
            &config.wrap,
            rng,
        );
        let session = Session::client_new(
            &mut ctx,
            now,
            server,
            config.credentials.clone(),
            config.explicit_exit_notify,
            config.tun_mtu,
        )
        .map_err(ClientSetupError::Tls)?;
        let mss = config
            .mssfix
            .map(|m| m.saturating_sub(28 + DATA_OVERHEAD + 40));
        Ok(Client {
            ctx,
            session,
            server,
            body: Vec::with_capacity(2048),
            events: VecDeque::new(),
            extra_out: VecDeque::new(),
            mss,
            closed: false,
            block_ipv6: config.block_ipv6,
            icmp6_from: crate::icmp6::FALLBACK_SOURCE,
            tun_replies: Vec::new(),
            tun_mtu: config.tun_mtu,
        })
    }

    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> ClientDatagram {
        if from != self.server {
            return self.drop(DropReason::NoSession);
        }
        let Some(&first) = buf.first() else {
            return self.drop(DropReason::Malformed);
        };
        let (raw, key_id) = warren_wire::split_op_byte(first);
        let outcome = match Opcode::from_u8(raw) {
            Some(Opcode::DataV1) | Some(Opcode::DataV2) => {
                match self.session.open_data(now, key_id, buf) {
                    Ok(range) => {
                        let payload = &mut buf[range.clone()];
                        if classify(payload) != Payload::Packet {
                            ClientDatagram::Consumed
                        } else {
                            if let Some(mss) = self.mss {
                                crate::mss::clamp(payload, mss);
                            }
                            ClientDatagram::Tun(range)
                        }
                    }
                    Err(reason) => self.drop(reason),
                }
            }
            Some(op) if op.is_control() => self.handle_control(now, buf),
            _ => self.drop(DropReason::UnknownOpcode),
        };
        self.after_input();
        outcome
    }

    fn drop(&mut self, reason: DropReason) -> ClientDatagram {
        self.ctx.count(reason);
        ClientDatagram::Dropped(reason)
    }

    fn handle_control(&mut self, now: Instant, buf: &[u8]) -> ClientDatagram {
        if warren_wire::parse_control_head(buf).is_err() {
            return self.drop(DropReason::Malformed);
        }
        let stamp = match self.session.wrap.unwrap(buf, &mut self.body) {
            Ok(s) => s,
            Err(_) => return self.drop(DropReason::WrapAuthFailed),
        };
        let mut head = [0u8; 9];
        head.copy_from_slice(&buf[..9]);
        let body = std::mem::take(&mut self.body);
        let outcome = match ControlPacket::parse(&head, &body) {
            Ok(pkt) => {
                self.session.on_control(&mut self.ctx, now, stamp, &pkt);
                ClientDatagram::Consumed
            }
            Err(_) => self.drop(DropReason::Malformed),
        };
        self.body = body;
        outcome
    }

    fn after_input(&mut self) {
        while let Some(e) = self.ctx.events.pop_front() {
            match e {
                SessionEvent::Renegotiated { key_id, .. } => {
                    self.events.push_back(ClientEvent::Renegotiated { key_id })
                }
                SessionEvent::HandshakeFailed { reason, .. } => {
                    tracing::warn!("connection to server failed: {reason}")
                }
            }
        }
        let c = &mut self.session.side;
        if c.just_connected {
            c.just_connected = false;
            if let (Some(config), Some(cipher)) = (c.pushed.clone(), self.session.cipher) {
                self.block_ipv6 |= config.block_ipv6;
                if let Some((_, _, remote)) = config.ifconfig_ipv6 {
                    self.icmp6_from = remote;
                }
                self.events.push_back(ClientEvent::Connected {
                    config: Box::new(config),
                    cipher,
                    ekm: self.session.ekm,
                    server_cn: c.server_cn.clone(),
                });
            }
        }
        if !self.closed
            && let Some(reason) = self.session.state.end().cloned()
        {
            self.closed = true;
            self.events.push_back(ClientEvent::Disconnected { reason });
        }
    }

    /// `buf[DATA_HEADROOM..DATA_HEADROOM + len]` holds an IP packet read from the tun. On
    /// success the packet to send to [`Client::server_addr`] is `buf[range]`.
    pub fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Range<usize>, DropReason> {
        let end = DATA_HEADROOM + len;
        if buf.len() < end || len == 0 {
            self.ctx.count(DropReason::Malformed);
            return Err(DropReason::Malformed);
        }
        if self.block_ipv6 && crate::icmp6::is_ipv6(&buf[DATA_HEADROOM..end]) {
            // forward.c process_ip_header: answered locally, never sent.
            self.reply_no_route(DATA_HEADROOM..end, buf);
            self.ctx.count(DropReason::Ipv6Blocked);
            return Err(DropReason::Ipv6Blocked);
        }
        if let Some(mss) = self.mss {
            crate::mss::clamp(&mut buf[DATA_HEADROOM..end], mss);
        }
        match self.session.seal_data(now, buf, len) {
            Some(range) => Ok(range),
            None => {
                self.ctx.count(DropReason::NoKey);
                Err(DropReason::NoKey)
            }
        }
    }

    /// Queues the ICMPv6 no-route answer to the IPv6 packet at `buf[pkt]` for the tun.
    fn reply_no_route(&mut self, pkt: Range<usize>, buf: &[u8]) {
        let at = self.tun_replies.len();
        // The reply is at most the tun MTU and 1328 bytes.
        let room = 2 + usize::from(self.tun_mtu).min(1280 + 48);
        if at + room > MAX_TUN_REPLIES {
            return;
        }
        self.tun_replies.resize(at + room, 0);
        match crate::icmp6::no_route_reply(
            &buf[pkt],
            self.icmp6_from,
            self.tun_mtu,
            &mut self.tun_replies[at + 2..],
        ) {
            Some(n) => {
                self.tun_replies[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
                self.tun_replies.truncate(at + 2 + n);
            }
            None => self.tun_replies.truncate(at),
        }
    }

    /// Hands each ICMPv6 reply `block-ipv6` made since the last call to `write` (for the
    /// tun), in order, and forgets them.
    pub fn drain_tun_replies(&mut self, mut write: impl FnMut(&[u8])) {
        let mut rest = self.tun_replies.as_slice();
        while let Some((len, tail)) = rest.split_first_chunk::<2>() {
            let len = usize::from(u16::from_be_bytes(*len));
            let Some(pkt) = tail.get(..len) else { break };
            write(pkt);
            rest = &tail[len..];
        }
        self.tun_replies.clear();
    }

    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<SocketAddr> {
        if let Some(pkt) = self.extra_out.pop_front() {
            out.clear();
            out.extend_from_slice(&pkt);
            return Some(self.server);
        }
        out.clear();
        self.session
            .poll_transmit(&mut self.ctx, now, out)
            .then_some(self.server)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        self.session.next_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(&mut self.ctx, now);
        self.after_input();
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// True once connected (keys installed and pushed config received).
    pub fn is_connected(&self) -> bool {
        self.session.state.is_connected() && !self.closed
    }

    /// True when the session is over (after a `Disconnected` event).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Leave: with explicit-exit-notify, queue `EXIT` (cc-exit) or an OCC EXIT packet to the
    /// server; the session then reports `Disconnected { reason: Closed }` once flushed
    /// (within about two seconds at most; drive it with `handle_timeout`).
    pub fn close(&mut self, now: Instant) {
        let mut extra = Vec::new();
        self.session.client_exit(&mut self.ctx, now, &mut extra);
        self.extra_out.extend(extra);
        self.session.handle_timeout(&mut self.ctx, now);
        self.after_input();
    }

    /// Data-plane statistics: (bytes received from the tunnel, bytes sent into it).
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.session.activity.bytes_in(),
            self.session.activity.bytes_out(),
        )
    }

    /// Packets dropped, by reason.
    pub fn dropped(&self) -> &std::collections::HashMap<DropReason, u64> {
        &self.ctx.dropped
    }
}

/// Why a [`Client`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientSetupError {
    #[error("cannot start TLS: {0}")]
    Tls(rustls::Error),
}
