//! The crate's shared vocabulary: configuration enums, what became of a packet, why a
//! packet was dropped and why a session ended. Every other module imports from here; this
//! module imports nothing of the crate.
use std::net::SocketAddr;
use std::ops::Range;

use warren_core::PeerId;
use warren_crypto::{Digest, KeyDirection, StaticKey, TlsCryptV2ClientKey, TlsCryptV2ServerKey};

/// Bytes the driver must leave free in front of a tun packet sealed in place:
/// opcode/key-id (1) + peer-id (3) + packet-id (4) + AEAD tag (16).
pub const DATA_HEADROOM: usize = 24;

/// How control packets are wrapped (`tls-auth`, `tls-crypt`, `tls-crypt-v2`, or neither).
#[derive(Clone, Debug)]
pub enum WrapConfig {
    None,
    TlsAuth {
        key: StaticKey,
        digest: Digest,
        direction: Option<KeyDirection>,
    },
    TlsCrypt {
        key: StaticKey,
    },
    /// A client's `tls-crypt-v2 FILE`: its packets are tls-crypt with the client key Kc;
    /// the wrapped key WKc goes with the `P_CONTROL_HARD_RESET_CLIENT_V3` reset and, when
    /// the server asks (early negotiation), with the first packet after it.
    TlsCryptV2Client {
        key: TlsCryptV2ClientKey,
    },
    /// A server's `tls-crypt-v2 FILE`: every client brings its own key, wrapped by this
    /// one (ops sheet §7).
    TlsCryptV2Server(TlsCryptV2Settings),
}

/// A server's tls-crypt-v2 settings.
#[derive(Clone, Debug)]
pub struct TlsCryptV2Settings {
    /// The server key: it unwraps each client's key from its packets.
    pub key: TlsCryptV2ServerKey,
    /// `tls-crypt-v2 FILE force-cookie`: ignore the V3 resets of clients without early
    /// negotiation (OpenVPN 2.5 and older). Otherwise (`allow-noncookie`, OpenVPN's
    /// default) such a reset creates a session at once, as on TCP, since those clients
    /// cannot send their key again with the cookie.
    pub force_cookie: bool,
    /// `tls-crypt-v2-max-age DAYS`: refuse client keys made longer ago than this, or
    /// without a timestamp (OpenVPN 2.7 tls_crypt.c tls_crypt_v2_check_client_key_age).
    pub max_age_days: Option<u32>,
    /// How clients without tls-crypt-v2 (`P_CONTROL_HARD_RESET_CLIENT_V2`) are wrapped:
    /// the `tls-crypt` or `tls-auth` configured beside `tls-crypt-v2`. `WrapConfig::None`
    /// (or another tls-crypt-v2 setting) refuses them, as OpenVPN does: beside tls-crypt-v2
    /// it requires *some* wrapping (ssl_pkt.c read_control_auth).
    pub others: Box<WrapConfig>,
}

/// How data-channel keys are derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyDerivation {
    /// RFC 5705 exporter (`tls-ekm`) when the client offers it, the TLS1-PRF otherwise.
    #[default]
    Auto,
    /// Always the legacy TLS1-PRF, even for clients that offer tls-ekm.
    ForcePrf,
}

/// What became of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramOutcome {
    /// A decrypted IP packet is in `buf[range]`: write it to the tun device.
    Tun(Range<usize>),
    /// A decrypted IP packet for another client (`client-to-client`): copy it to
    /// `DATA_HEADROOM` of a buffer and pass it to `DataPlane::seal`.
    ClientToClient(Range<usize>),
    /// Control traffic, a ping or similar: nothing for the tun. Drain `poll_transmit`.
    Consumed,
    /// The packet was answered instead (`block-ipv6`: ICMPv6 "no route"): seal
    /// `DataPlane::reply` for `peer_id` with `DataPlane::seal_to`.
    Reply { peer_id: PeerId },
    /// Counted and dropped.
    Dropped(DropReason),
}

/// What became of a tun packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncapOutcome {
    /// Send `buf[range]` to `dst`.
    Send {
        dst: SocketAddr,
        range: Range<usize>,
    },
    Dropped(DropReason),
}

/// Why a packet was dropped. Counted, never logged above `trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    Malformed,
    UnknownOpcode,
    WrapAuthFailed,
    Replay,
    BadCookie,
    NoSession,
    NoKey,
    DecryptFailed,
    /// A tunnelled packet that is neither IPv4 nor IPv6 (version nibble), or too short.
    NotIp,
    NoRoute,
    TooManyClients,
    /// A tunnelled packet whose source is not the client's VPN address.
    BadSource,
    /// An IPv6 packet from a client with a link-local source (`fe80::/10`, e.g. the
    /// router solicitations its kernel sends on the tun): dropped silently, as OpenVPN
    /// does (multi.c).
    LinkLocalSource,
    /// `block-ipv6`: an IPv6 packet answered with ICMPv6 "no route" instead of sent.
    Ipv6Blocked,
    /// Control packets we do not speak or were not configured for (tls-crypt-v2 packets
    /// without `tls-crypt-v2`, tls-crypt-v1/tls-auth packets with only `tls-crypt-v2`).
    Unsupported,
    /// A tls-crypt-v2 packet whose wrapped client key does not unwrap with the server key.
    BadClientKey,
    /// A tls-crypt-v2 client key refused by policy (`tls-crypt-v2-max-age`).
    ClientKeyRefused,
    /// The queue of stateless replies is full (a flood of resets).
    Overloaded,
    /// The source already holds its share of half-open sessions
    /// (`warren-max-half-open-per-source`).
    TooManyHandshakes,
    /// A packet from a client to a destination its access rules refuse
    /// ([`crate::access`]).
    AccessDenied,
}

impl DropReason {
    /// Every reason, in declaration order (for per-reason counter arrays and metrics).
    pub const ALL: [DropReason; 20] = [
        DropReason::Malformed,
        DropReason::UnknownOpcode,
        DropReason::WrapAuthFailed,
        DropReason::Replay,
        DropReason::BadCookie,
        DropReason::NoSession,
        DropReason::NoKey,
        DropReason::DecryptFailed,
        DropReason::NotIp,
        DropReason::NoRoute,
        DropReason::TooManyClients,
        DropReason::BadSource,
        DropReason::LinkLocalSource,
        DropReason::Ipv6Blocked,
        DropReason::Unsupported,
        DropReason::BadClientKey,
        DropReason::ClientKeyRefused,
        DropReason::Overloaded,
        DropReason::TooManyHandshakes,
        DropReason::AccessDenied,
    ];

    /// The position of this reason in [`DropReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name (a metrics label value).
    pub const fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownOpcode => "unknown_opcode",
            DropReason::WrapAuthFailed => "wrap_auth_failed",
            DropReason::Replay => "replay",
            DropReason::BadCookie => "bad_cookie",
            DropReason::NoSession => "no_session",
            DropReason::NoKey => "no_key",
            DropReason::DecryptFailed => "decrypt_failed",
            DropReason::NotIp => "not_ip",
            DropReason::NoRoute => "no_route",
            DropReason::TooManyClients => "too_many_clients",
            DropReason::BadSource => "bad_source",
            DropReason::LinkLocalSource => "link_local_source",
            DropReason::Ipv6Blocked => "ipv6_blocked",
            DropReason::Unsupported => "unsupported",
            DropReason::BadClientKey => "bad_client_key",
            DropReason::ClientKeyRefused => "client_key_refused",
            DropReason::Overloaded => "overloaded",
            DropReason::TooManyHandshakes => "too_many_handshakes",
            DropReason::AccessDenied => "access_denied",
        }
    }
}

/// Why a handshake failed before the client was identified and connected, in a few
/// kinds an operator acts on differently (the event's text has the details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// The client's certificate was refused (unknown CA, expired, revoked, wrong usage,
    /// no common name) or it presented none.
    Certificate,
    /// Any other TLS failure (version or cipher-suite mismatch, an alert, bad records).
    Tls,
    /// No data-channel cipher both sides allow.
    Cipher,
    /// The handshake did not finish within hand-window.
    Timeout,
    /// Key-method 2 or other control-channel protocol errors.
    Protocol,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 5] = [
        HandshakeFailure::Certificate,
        HandshakeFailure::Tls,
        HandshakeFailure::Cipher,
        HandshakeFailure::Timeout,
        HandshakeFailure::Protocol,
    ];

    /// A stable snake_case name (a metrics label value).
    pub const fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Certificate => "certificate",
            HandshakeFailure::Tls => "tls",
            HandshakeFailure::Cipher => "cipher",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Protocol => "protocol",
        }
    }
}

/// Why the server ended a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    ExitNotify,
    PingTimeout,
    HandshakeTimeout,
    TlsError(String),
    Replaced,
    Shutdown,
    AuthFailed,
    /// Ended by `Server::kick` (revocation, user disabled).
    Kicked,
    /// Dropped by the server's admission limits before it connected: evicted as the oldest
    /// half-open session, or refused by `max-clients` after its handshake.
    Overloaded,
    /// The client's TCP connection ended (`Server::stream_closed`).
    ConnectionClosed,
}

impl DisconnectReason {
    /// A stable snake_case name without the details (a metrics label value).
    pub fn label(&self) -> &'static str {
        match self {
            DisconnectReason::ExitNotify => "exit_notify",
            DisconnectReason::PingTimeout => "ping_timeout",
            DisconnectReason::HandshakeTimeout => "handshake_timeout",
            DisconnectReason::TlsError(_) => "tls_error",
            DisconnectReason::Replaced => "replaced",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::AuthFailed => "auth_failed",
            DisconnectReason::Kicked => "kicked",
            DisconnectReason::Overloaded => "overloaded",
            DisconnectReason::ConnectionClosed => "connection_closed",
        }
    }
}

/// Why a client session ended.
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
    /// We closed it (`Client::close`).
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_are_listed_in_index_order_with_distinct_labels() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let mut labels: Vec<&str> = DropReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::ALL.len());
        let mut kinds: Vec<&str> = HandshakeFailure::ALL.iter().map(|k| k.label()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), HandshakeFailure::ALL.len());
    }
}
