//! Event loops that connect warren's sans-IO engines to the operating system.
//!
//! The model: one thread owns the engine, the tun device, the UDP socket and a signal
//! descriptor, and waits on all three with `poll(2)`, the timeout being the engine's next
//! timer (or the status-file timer). Each wakeup reads a bounded batch from each ready
//! descriptor into buffers allocated once at start (tun buffers keep
//! [`warren_openvpn::DATA_HEADROOM`] free in front so encapsulation happens in place), hands
//! them to the engine, writes the results, then runs due timers and drains the engine's
//! transmit queue and lifecycle events, in the order documented on
//! [`warren_openvpn::Server`]. I/O errors on the data path are counted, and warned about
//! at most once per ten seconds; only a broken descriptor stops the loop.
//!
//! The batches are those of the fast data plane (`batch`, `docs/dataplane.md`): tun
//! super-packets split into slots and sent with UDP GSO, UDP GRO buffers opened in place and
//! written to the tun as coalesced writes; with offloads off (`--no-offload`) the same code
//! moves one packet per system call.
//!
//! Every data thread runs the same pump (`batch::Pump`), generic over what opens and seals:
//! the client's engine, or a server thread's [`warren_openvpn::DataPlane`] replica fed with
//! the engine's published changes. The server moves data on several threads (`workers`,
//! `docs/dataplane.md`): the loop above is the control thread and data thread 0; each extra
//! data worker owns a tun queue and a UDP socket steered by peer id. A peer is owned by one
//! thread, which alone opens its datagrams (replay window) and seals its packets (packet
//! ids in order); tun packets read elsewhere are handed over in batches.
//!
//! OpenVPN over TCP (`tcp`): the server loop also accepts connections, each one a peer
//! known to the engine by its remote address; what the loops send goes, per destination,
//! to the UDP socket or framed into that connection's bounded queue (`batch::Out`). TCP
//! peers belong to the main thread. The client loop uses one connection instead of its
//! UDP socket for a `tcp-client` remote, first through an HTTP or SOCKS5 proxy when the
//! entry names one (`proxy`).
//!
//! The management interface (`management`) is served by the server loop too: its
//! listener and connection are polled with the loop's descriptors, its output is bounded.
#![forbid(unsafe_code)]

pub mod auth;
mod batch;
mod client_loop;
mod kill_switch;
pub mod management;
mod metrics;
mod metrics_http;
mod portshare;
mod proxy;
pub mod scripts;
mod server_loop;
pub mod status;
mod systemd;
mod tcp;
mod workers;

pub use auth::{
    AccessUpdate, AuthOptions, AuthRequest, AuthWorker, Authenticator, Kick, PasswordCheck, Step,
    Verified,
};
pub use batch::UdpIo;
pub use client_loop::{
    ClientLoopOptions, ClientScripts, DropAfterUp, NetOptions, PullAction, RemoteFamily,
    RemoteSpec, RetryPolicy, run_client,
};
pub use metrics_http::MetricsListener;
pub use portshare::PortShareOptions;
pub use proxy::{ProxyAuth, ProxyKind, ProxySpec};
pub use server_loop::{
    BATCH, DriverError, Reloader, ServerLoopOptions, StatusOptions, Watcher, run_server, snapshot,
};
pub use systemd::Systemd;
pub use tcp::TcpOptions;
pub use workers::WorkerIo;
