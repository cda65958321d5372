//! The OpenVPN protocol engine, sans-IO.
//!
//! This crate owns no socket, clock, thread or lock. A driver feeds it datagrams, tun packets
//! and the current time, and drains what it wants sent. The model follows OpenVPN 2.6
//! (`../shared/docs/openvpn-protocol.md` has the byte-level facts with source citations):
//!
//! * [`reliable`]: the control channel's reliability layer (msg-ids, ACK lists, windows of
//!   6/12, retransmission with backoff), one per key state.
//! * [`tls`]: rustls configurations with OpenVPN's certificate rules (no hostnames, EKU checks
//!   for `remote-cert-tls`, the leaf CN as identity).
//! * `session` (private): one peer's control session: the key states (current, lame duck),
//!   key-method 2, push, keepalive and renegotiation timers, and its data-channel keys.
//! * [`dataplane`]: the data channel split off the control side for multi-core drivers:
//!   published per-peer state ([`PeerData`]), a per-worker [`DataPlane`] replica that seals
//!   and opens with its own replay windows, shared atomic packet-id counters and activity.
//! * [`server`]: the UDP server endpoint: stateless HMAC-cookie handshake, demultiplexing by
//!   peer-id and address, and routing tun packets to peers.
//! * [`access`]: per-user access rules, compiled per session and checked by the data plane.
//! * [`pool`]: the client address pool, and who decides which client gets which address.
//!
//! Data-channel keys ([`warren_crypto::DataKeys`]) are immutable and `Send + Sync` so that a
//! multi-core driver can seal and open on any thread while packet-id assignment and replay
//! checks stay sequential per peer.
#![forbid(unsafe_code)]

pub mod access;
pub mod client;
mod ctx;
pub mod dataplane;
pub mod icmp6;
mod keystate;
mod mss;
pub mod pool;
mod push;
pub mod reliable;
pub mod server;
mod session;
pub mod tls;
mod types;

pub use client::{Client, ClientConfig, ClientDatagram, ClientEvent, ClientSetupError};
pub use dataplane::{
    Activity, BlockIpv6, DataChange, DataEvent, DataKeyRef, DataPlane, DataPlaneConfig, Iroute,
    PeerData, TxCounter,
};
pub use push::{PushedConfig, PushedRoute, PushedRouteIpv6};
pub use server::{
    AuthDecision, AuthGrant, ClientStatus, HalfOpenLimits, KickTarget, OverloadKind, Password,
    Server, ServerConfig, ServerCounters, ServerEvent, TunnelIpv6,
};
pub use types::{
    ClientDisconnect, DATA_HEADROOM, DatagramOutcome, DisconnectReason, DropReason, EncapOutcome,
    HandshakeFailure, KeyDerivation, TlsCryptV2Settings, WrapConfig,
};

/// `docs/architecture.md`: its example of the engine's call order is compiled and run as a
/// doctest, so the page cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/architecture.md")]
struct ArchitectureDoc;
