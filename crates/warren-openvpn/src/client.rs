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
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use warren_core::Instant;
use warren_crypto::CipherKind;

use crate::server::{DropReason, KeyDerivation, WrapConfig};

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
    /// Unix time (seconds) at `Instant::ZERO`.
    pub unix_time_at_zero: u64,
}

/// A route pushed or configured: `route NETWORK NETMASK [GATEWAY] [METRIC]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedRoute {
    pub network: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub metric: Option<u32>,
}

/// What the server pushed, parsed (push.c / options.c semantics for a 2.6 client).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushedConfig {
    /// `ifconfig ADDR NETMASK` (topology subnet).
    pub ifconfig: Option<(Ipv4Addr, Ipv4Addr)>,
    pub route_gateway: Option<Ipv4Addr>,
    pub topology_subnet: bool,
    pub routes: Vec<PushedRoute>,
    /// `redirect-gateway` flags, e.g. `["def1", "bypass-dhcp"]`; None when not pushed.
    pub redirect_gateway: Option<Vec<String>>,
    /// `dhcp-option DNS x` and `dhcp-option DOMAIN d` (and `dns server ...` mapped to them).
    pub dns_servers: Vec<std::net::IpAddr>,
    pub search_domains: Vec<String>,
    pub tun_mtu: Option<u16>,
    pub ping: Option<u32>,
    pub ping_restart: Option<u32>,
    pub peer_id: Option<u32>,
    pub cipher: Option<CipherKind>,
    /// `protocol-flags ... tls-ekm` or `key-derivation tls-ekm`.
    pub tls_ekm: bool,
    /// `protocol-flags cc-exit`.
    pub cc_exit: bool,
    /// Every option as received, in order (after `push-continuation` assembly).
    pub raw: Vec<String>,
}

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
    Connected { config: PushedConfig, cipher: CipherKind, ekm: bool, server_cn: Option<String> },
    Renegotiated { key_id: u8 },
    /// The session is over; the driver decides whether to reconnect.
    Disconnected { reason: ClientDisconnect },
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientDisconnect {
    /// `AUTH_FAILED[,reason]`: do not retry with the same credentials.
    AuthFailed(String),
    /// `RESTART` from the server, or its EXIT: reconnect.
    Restart(String),
    /// `HALT`: stop, do not reconnect.
    Halt(String),
    PingTimeout,
    HandshakeTimeout,
    TlsError(String),
    /// We closed it ([`Client::close`]).
    Closed,
}

/// The client engine. See the module docs for the call order.
pub struct Client {
    _todo: (),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Starts a connection attempt to `server` (sends the hard reset at once).
    pub fn new(_config: ClientConfig, _server: SocketAddr, _rng: Box<dyn warren_core::Rng + Send>, _now: Instant) -> Self {
        todo!()
    }

    pub fn server_addr(&self) -> SocketAddr {
        todo!()
    }

    pub fn handle_datagram(&mut self, _now: Instant, _from: SocketAddr, _buf: &mut [u8]) -> ClientDatagram {
        todo!()
    }

    /// `buf[DATA_HEADROOM..DATA_HEADROOM + len]` holds an IP packet read from the tun. On
    /// success the packet to send to [`Client::server_addr`] is `buf[range]`.
    pub fn encapsulate(&mut self, _now: Instant, _buf: &mut [u8], _len: usize) -> Result<Range<usize>, DropReason> {
        todo!()
    }

    pub fn poll_transmit(&mut self, _now: Instant, _out: &mut Vec<u8>) -> Option<SocketAddr> {
        todo!()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    pub fn handle_timeout(&mut self, _now: Instant) {
        todo!()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        todo!()
    }

    /// True once connected (keys installed and pushed config applied).
    pub fn is_connected(&self) -> bool {
        todo!()
    }

    /// True when the session is over (after a `Disconnected` event).
    pub fn is_closed(&self) -> bool {
        todo!()
    }

    /// Leave: with explicit-exit-notify, queue `EXIT` (cc-exit) or OCC EXIT packets to the
    /// server; the session then reports `Disconnected { reason: Closed }` once flushed
    /// (bounded: drive it for at most about a second).
    pub fn close(&mut self, _now: Instant) {
        todo!()
    }

    /// Data-plane statistics: (bytes received from the tunnel, bytes sent into it).
    pub fn traffic(&self) -> (u64, u64) {
        todo!()
    }
}
