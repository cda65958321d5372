//! What every session of one endpoint shares: configuration that does not vary per peer,
//! the control-channel wrap keys, randomness, counters and the events sessions raise.
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use warren_core::{Instant, PeerId, Rng};
use warren_crypto::{CipherKind, ControlWrap, Role, TLS_CRYPT_OVERHEAD, TlsCryptV2Server};

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

/// A server's tls-crypt-v2 key and policy (`WrapConfig::TlsCryptV2Server`).
#[derive(Debug)]
pub(crate) struct TlsCryptV2Policy {
    pub server: TlsCryptV2Server,
    pub force_cookie: bool,
    pub max_age_days: Option<u32>,
}

pub(crate) struct Ctx {
    pub role: Role,
    pub tls: TlsFactory,
    /// The wrap of sessions that bring no key of their own (every session but a
    /// tls-crypt-v2 server's). `None`: a server with only tls-crypt-v2, which refuses
    /// other clients.
    pub wrap: Option<Arc<ControlWrap>>,
    /// A tls-crypt-v2 client's wrapped key (WKc), appended to its V3 reset and WKC_V1.
    pub wkc: Option<Arc<[u8]>>,
    /// A tls-crypt-v2 server's key and policy.
    pub tls_crypt_v2: Option<TlsCryptV2Policy>,
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
        let mut wkc = None;
        let mut tls_crypt_v2 = None;
        let wrap = match wrap {
            WrapConfig::TlsCryptV2Server(v2) => {
                tls_crypt_v2 = Some(TlsCryptV2Policy {
                    server: v2.key.wrapper(),
                    force_cookie: v2.force_cookie,
                    max_age_days: v2.max_age_days,
                });
                match &*v2.others {
                    // tls-crypt-v2 beside nothing (or beside itself): others are refused.
                    WrapConfig::None
                    | WrapConfig::TlsCryptV2Server(_)
                    | WrapConfig::TlsCryptV2Client { .. } => None,
                    other => Some(plain_wrap(other, p.role)),
                }
            }
            WrapConfig::TlsCryptV2Client { key } => {
                wkc = Some(Arc::from(key.wkc()));
                Some(ControlWrap::tls_crypt(key.kc(), p.role))
            }
            other => Some(plain_wrap(other, p.role)),
        };
        // ssl.c:347: payload = tls-mtu - IPv6/UDP header - opcode/sid - ack block (4 acks +
        // peer sid) - msg id - wrap overhead (plus tls-crypt's slack). A tls-crypt-v2
        // server's own sessions use tls-crypt whatever the other clients use.
        let mut wrap_overhead = wrap.as_ref().map_or(0, ControlWrap::overhead);
        if tls_crypt_v2.is_some() {
            wrap_overhead = wrap_overhead.max(TLS_CRYPT_OVERHEAD);
        }
        let overhead = 48 + 1 + 8 + (1 + 4 * 4 + 8) + 4 + wrap_overhead + 16;
        Ctx {
            role: p.role,
            tls: p.tls,
            wrap: wrap.map(Arc::new),
            wkc,
            tls_crypt_v2,
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

/// none, tls-auth or tls-crypt (the tls-crypt-v2 settings are taken apart by the caller).
fn plain_wrap(wrap: &WrapConfig, role: Role) -> ControlWrap {
    match wrap {
        WrapConfig::TlsAuth {
            key,
            digest,
            direction,
        } => ControlWrap::tls_auth(key, *digest, *direction),
        WrapConfig::TlsCrypt { key } => ControlWrap::tls_crypt(key, role),
        WrapConfig::TlsCryptV2Client { key } => ControlWrap::tls_crypt(key.kc(), role),
        WrapConfig::None | WrapConfig::TlsCryptV2Server(_) => ControlWrap::none(),
    }
}
