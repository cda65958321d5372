//! The crate's shared vocabulary: configuration enums, what became of a packet, why a
//! packet was dropped and why a session ended. Every other module imports from here; this
//! module imports nothing of the crate.
use std::net::SocketAddr;
use std::ops::Range;

use warren_crypto::{Digest, KeyDirection, StaticKey};

/// Bytes the driver must leave free in front of a tun packet sealed in place:
/// opcode/key-id (1) + peer-id (3) + packet-id (4) + AEAD tag (16).
pub const DATA_HEADROOM: usize = 24;

/// How control packets are wrapped (`tls-auth`, `tls-crypt`, or neither).
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
    NotIpv4,
    NoRoute,
    TooManyClients,
    /// A tunnelled packet whose source is not the client's VPN address.
    BadSource,
    /// tls-crypt-v2 and other control packets we do not speak.
    Unsupported,
    /// The queue of stateless replies is full (a flood of resets).
    Overloaded,
    /// The source already holds its share of half-open sessions
    /// (`warren-max-half-open-per-source`).
    TooManyHandshakes,
}

impl DropReason {
    /// Every reason, in declaration order (for per-reason counter arrays and metrics).
    pub const ALL: [DropReason; 15] = [
        DropReason::Malformed,
        DropReason::UnknownOpcode,
        DropReason::WrapAuthFailed,
        DropReason::Replay,
        DropReason::BadCookie,
        DropReason::NoSession,
        DropReason::NoKey,
        DropReason::DecryptFailed,
        DropReason::NotIpv4,
        DropReason::NoRoute,
        DropReason::TooManyClients,
        DropReason::BadSource,
        DropReason::Unsupported,
        DropReason::Overloaded,
        DropReason::TooManyHandshakes,
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
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::NoRoute => "no_route",
            DropReason::TooManyClients => "too_many_clients",
            DropReason::BadSource => "bad_source",
            DropReason::Unsupported => "unsupported",
            DropReason::Overloaded => "overloaded",
            DropReason::TooManyHandshakes => "too_many_handshakes",
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
