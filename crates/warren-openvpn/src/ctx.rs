//! What every session of one endpoint shares: configuration that does not vary per peer,
//! the control-channel wrap keys, randomness, counters and the events sessions raise.
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use warren_core::{Instant, PeerId, Rng};
use warren_crypto::{CipherKind, ControlWrap, Role};

use crate::reliable::ReliableConfig;
use crate::types::{DropReason, HandshakeFailure, KeyDerivation, WrapConfig};

/// Largest control packet we send, IP and UDP headers included (OpenVPN `tls-mtu` 1250).
pub(crate) const TLS_MTU: usize = 1250;

/// Makes the TLS connection of each new key state; OpenVPN's client is always the TLS client.
#[derive(Clone, Debug)]
pub(crate) enum TlsFactory {
    Server(Arc<rustls::ServerConfig>),
    Client(Arc<rustls::ClientConfig>),
}

impl TlsFactory {
    pub fn connect(&self) -> Result<rustls::Connection, rustls::Error> {
        Ok(match self {
            TlsFactory::Server(cfg) => {
                rustls::Connection::Server(rustls::ServerConnection::new(cfg.clone())?)
            }
            TlsFactory::Client(cfg) => rustls::Connection::Client(rustls::ClientConnection::new(
                cfg.clone(),
                crate::tls::no_sni_server_name(),
            )?),
        })
    }
}

/// Session-level happenings the endpoint turns into its own events.
#[derive(Debug, Clone)]
pub(crate) enum SessionEvent {
    HandshakeFailed {
        addr: SocketAddr,
        reason: String,
        kind: HandshakeFailure,
    },
    /// A key after the first is ready (`peer_id`: the server's, or the pushed one).
    Renegotiated { peer_id: Option<PeerId>, key_id: u8 },
}

pub(crate) struct Ctx {
    pub role: Role,
    pub tls: TlsFactory,
    pub wrap: ControlWrap,
    pub rng: Box<dyn Rng + Send>,
    pub reliable: ReliableConfig,
    /// Largest TLS payload per control packet.
    pub max_payload: usize,
    pub hand_window: Duration,
    /// Defaults; a client's pushed values override them per session.
    pub ping: Option<Duration>,
    pub ping_restart: Option<Duration>,
    pub reneg: Option<Duration>,
    pub key_derivation: KeyDerivation,
    pub data_ciphers: Vec<CipherKind>,
    pub data_ciphers_fallback: Option<CipherKind>,
    pub unix_time_at_zero: u64,
    pub occ: String,
    pub dropped: HashMap<DropReason, u64>,
    pub events: VecDeque<SessionEvent>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The parts of [`Ctx`] that come from configuration.
pub(crate) struct CtxParams {
    pub role: Role,
    pub tls: TlsFactory,
    pub tls_timeout: Duration,
    pub hand_window: Duration,
    pub ping: Option<Duration>,
    pub ping_restart: Option<Duration>,
    pub reneg: Option<Duration>,
    pub key_derivation: KeyDerivation,
    pub data_ciphers: Vec<CipherKind>,
    pub data_ciphers_fallback: Option<CipherKind>,
    pub unix_time_at_zero: u64,
    pub occ: String,
}

impl Ctx {
    pub fn new(p: CtxParams, wrap: &WrapConfig, rng: Box<dyn Rng + Send>) -> Self {
        let wrap = match wrap {
            WrapConfig::None => ControlWrap::none(),
            WrapConfig::TlsAuth {
                key,
                digest,
                direction,
            } => ControlWrap::tls_auth(key, *digest, *direction),
            WrapConfig::TlsCrypt { key } => ControlWrap::tls_crypt(key, p.role),
        };
        // ssl.c:347: payload = tls-mtu - IPv6/UDP header - opcode/sid - ack block (4 acks +
        // peer sid) - msg id - wrap overhead (plus tls-crypt's slack).
        let overhead = 48 + 1 + 8 + (1 + 4 * 4 + 8) + 4 + wrap.overhead() + 16;
        Ctx {
            role: p.role,
            tls: p.tls,
            wrap,
            rng,
            reliable: ReliableConfig {
                send_window: 6,
                recv_window: 12,
                initial_timeout: p.tls_timeout,
            },
            max_payload: TLS_MTU - overhead,
            hand_window: p.hand_window,
            ping: p.ping,
            ping_restart: p.ping_restart,
            reneg: p.reneg,
            key_derivation: p.key_derivation,
            data_ciphers: p.data_ciphers,
            data_ciphers_fallback: p.data_ciphers_fallback,
            unix_time_at_zero: p.unix_time_at_zero,
            occ: p.occ,
            dropped: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    pub fn count(&mut self, reason: DropReason) {
        *self.dropped.entry(reason).or_insert(0) += 1;
    }

    pub fn unix_now(&self, now: Instant) -> u32 {
        (self.unix_time_at_zero + now.as_secs()) as u32
    }

    pub fn handshake_failed(&mut self, addr: SocketAddr, reason: String, kind: HandshakeFailure) {
        self.events
            .push_back(SessionEvent::HandshakeFailed { addr, reason, kind });
    }
}
