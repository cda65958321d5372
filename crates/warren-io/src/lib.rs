//! All of warren's Linux I/O, and the only crate of the project with `unsafe` code.
//!
//! The protocol engines are sans-IO; this crate is the other side: thin, synchronous,
//! non-blocking wrappers over the system calls a driver needs, each with typed errors that
//! say how to fix the common failures.
//!
//! * [`OffloadTun`]: a layer-3 tun device (`IFF_TUN | IFF_NO_PI`), addressed, sized and up,
//!   with `IFF_VNET_HDR` offloads when granted (TSO/USO super-packets split on read, TCP/UDP
//!   flows coalesced on write; one packet per call without them) and `IFF_MULTI_QUEUE`
//!   queues.
//! * [`BatchUdp`]: the underlay socket with `recvmmsg`, UDP GRO and GSO (quinn-udp).
//! * [`bind_steered`]: a `SO_REUSEPORT` group of UDP sockets whose classic-BPF program
//!   steers each OpenVPN P_DATA_V2 datagram to socket `peer id % n` (everything else to
//!   socket 0), for one data worker per socket.
//! * [`UdpSocket`]: the underlay socket (`proto udp`/`udp4`/`udp6`), with buffer sizing,
//!   a batch-shaped receive call and IPv4-mapped IPv6 addresses normalised to plain IPv4.
//! * [`TcpListener`], [`TcpConn`]: OpenVPN over TCP, non-blocking, `TCP_NODELAY`.
//! * [`MgmtListener`], [`MgmtConn`]: the management interface's TCP or unix socket.
//! * [`Poller`]: `poll(2)` over a handful of descriptors with a timeout.
//! * [`Clock`]: `CLOCK_BOOTTIME` as [`warren_core::Instant`] (suspended time counts, so a
//!   machine that slept does not keep stale keys), plus the Unix time of its origin.
//! * [`OsRng`]: [`warren_core::Rng`] over the `getrandom(2)` system call.
//! * [`Signals`]: SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 as a readable `signalfd`.
//! * [`drop_privileges`]: `user`/`group` after the privileged setup.
//! * [`flock`]: advisory file locks (the state directory's lock file).
//! * [`Notifier`]: systemd's `sd_notify` protocol over `$NOTIFY_SOCKET`.
//! * [`run_script`]: a user script (`up`, `client-connect`, ...) with its environment and a
//!   timeout.
//! * [`ipv4_interface_addrs`]: the host's IPv4 interface addresses (`getifaddrs`).
//!
//! Every `unsafe` block carries a `// SAFETY:` comment. The only OpenVPN knowledge here is
//! the opcode and peer-id position the steering program reads (four bytes, cited there).
#![cfg(target_os = "linux")]

mod clock;
pub mod flock;
mod ifaddrs;
mod mgmt;
mod poll;
mod privs;
mod rng;
mod script;
mod sdnotify;
mod signals;
mod tcp;
mod tun;
mod udp;

pub use clock::{Clock, format_local_time};
pub use ifaddrs::{InterfaceAddr, ipv4_interface_addrs};
pub use mgmt::{MgmtBindError, MgmtConn, MgmtListener, PeerCred};
pub use poll::{Interest, Poller, Token};
pub use privs::{
    CAP_NET_ADMIN, Dropped, KeepCaps, PrivilegeError, current_user_name, drop_privileges,
    effective_capabilities, group_exists, group_id, group_name, is_root, user_exists, user_id,
};
pub use rng::OsRng;
pub use script::{ScriptStatus, run_script};
pub use sdnotify::{Notifier, watchdog_interval};
pub use signals::{Signal, Signals};
pub use tcp::{TcpBind, TcpBindError, TcpConn, TcpListener};
pub use tun::{TunConfig, TunError};
pub use udp::{BindError, DEFAULT_SOCKET_BUFFER, RecvMeta, UdpBind, UdpFamily, UdpSocket};

/// `true` for the errors a non-blocking descriptor returns when it has nothing to give
/// or no room to take (`EAGAIN`/`EWOULDBLOCK`).
pub fn is_would_block(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
}

mod term;
pub use term::prompt_tty;

// The fast data plane (issue 5, docs/dataplane.md): offload tun and batched UDP.
mod batch_udp;
mod offload;
pub use batch_udp::{BatchMeta, BatchUdp, BatchUdpError, GRO_BUFFER, UDP_RECV_BATCH};
pub use offload::bench_support;
pub use offload::{
    MAX_COALESCE, MAX_SUPER_PACKET, OffloadMode, OffloadState, OffloadTun, OffloadTunConfig,
    SendSummary, TUN_RECV_BATCH, TunBatchError, VNET_HDR_LEN,
};

// Multi-core server data plane: SO_REUSEPORT sockets steered by OpenVPN peer id.
mod reuseport;
pub use reuseport::{MAX_STEERED_SOCKETS, SteerError, bind_steered, datagram_index, steered_index};
