//! warren's integration tests, in one test binary: every suite is a module here, so the
//! release build links one binary instead of one per suite, and the shared scaffolding
//! (`common`, `client_common`, `state_common`) is compiled once.
//!
//! Each suite builds its own network namespaces (see `common::netns`); run one suite with
//! `cargo test --release -p warren-cli --test integration -- SUITE::`.

mod cbc;
mod client_common;
mod common;
mod state_common;

/// A test per case against each server kind: `SUITE::openvpn_server::CASE` and
/// `SUITE::warren_server::CASE` call `SUITE::cases::CASE(kind)`.
macro_rules! against_both {
    ($($case:ident),* $(,)?) => {
        mod openvpn_server {
            $( #[test] fn $case() { super::cases::$case(super::ServerKind::Openvpn) } )*
        }
        mod warren_server {
            $( #[test] fn $case() { super::cases::$case(super::ServerKind::Warren) } )*
        }
    };
}

mod access;
mod auth_modes;
mod client_interop;
mod client_system;
mod corpus;
mod crl;
mod demo;
mod fallback;
mod handshake_flood;
mod ipv6;
mod killswitch;
mod lossy;
mod management;
mod metrics;
mod nat;
mod net6;
mod offload;
mod pki_cli;
mod pki_crash;
mod portshare;
mod privileges;
mod proxy;
mod revocation;
mod scripts;
mod server_interop;
mod signals;
mod site_to_site;
mod state_hardening;
mod systemd;
mod tcp;
mod tls_crypt_v2;
mod topology;
mod transport6;
mod zero_config;

/// Not a test: the traffic helper process that the suites start as a second copy of this
/// binary inside a namespace (see `common::helper`). A no-op in a normal run.
#[test]
fn traffic_helper_process() {
    common::helper::helper_main();
}
