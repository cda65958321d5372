//! Test harness for warren's integration tests: Linux network namespaces, veth links,
//! bounded processes, an easy-rsa-like test PKI, OpenVPN config writers and a small
//! traffic helper (TCP source/sink with SHA-256, UDP probe) that runs as a re-executed
//! copy of the test binary inside a namespace.
//!
//! Model: every test builds a [`lab::Lab`]: one server namespace and one namespace per
//! client, each client linked to the server by its own veth pair on 198.18.k.0/24. The
//! server (stock `openvpn` or `warren server`, [`lab::ServerKind`]) and the stock
//! `openvpn` clients run inside those namespaces and make their own tun devices there.
//! Nothing that sends traffic runs in the root namespace. Every name carries the test
//! process id and a counter, so tests can run in parallel, and every resource is a guard
//! that cleans up on `Drop`, also when the test panics. Every wait is bounded.
//!
//! Tests need root (namespaces, tun) and the `openvpn`, `iperf3`, `ip`, `ss`, `ping` and
//! `openssl` commands (see `.ci/run`).

// The harness is a driver, not a protocol crate: it reads the clock.
#![allow(clippy::disallowed_methods)]

pub mod conf;
pub mod flood;
pub mod helper;
pub mod lab;
pub mod netns;
pub mod pki;
pub mod process;
pub mod relay;
