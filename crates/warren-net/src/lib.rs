//! The OS side of a client tunnel on Linux: what `warren client` does to the machine, and
//! how it undoes it exactly.
//!
//! The model is a **journal**. [`NetState`] performs each change (a route added, the DNS
//! configuration replaced) and records how to undo it; [`NetState::restore`] undoes the
//! recorded changes in reverse order, and so does `Drop`, so a panic, an early `?` or the
//! end of `main` still leaves the routing table and `/etc/resolv.conf` as they were. The
//! journal is kept on disk too (`/run/warren/net-<pid>.journal`, rewritten before each
//! change), so what a client killed with SIGKILL left behind is undone by the next run:
//! [`recover_abandoned`], called before anything new is applied, puts back the routes and
//! the original DNS configuration of dead clients in this network namespace, and a
//! resolv.conf that warren itself wrote is never mistaken for the original. On top
//! of it, [`TunnelNet`] turns a [`TunnelSpec`] (the tun address, the VPN gateway, routes,
//! `redirect-gateway`, DNS: what the server pushed merged with the profile) into changes,
//! and on a reconnect re-applies only what differs from the last spec (`persist-tun`).
//! Planning is pure ([`plan_routes`]) and unit-tested; only `NetState` touches the system.
//!
//! Routes go through the `ip` command (iproute2) rather than rtnetlink. A client changes
//! routes a handful of times per connection, never on the data path, so a process spawn
//! costs nothing that matters, while `ip` keeps the client free of an async runtime and of a
//! netlink encoding layer, and every change it makes is the very command an admin would
//! type to inspect or repeat it (each one is logged at debug). iproute2 is present wherever
//! OpenVPN runs. Failures are turned into the fix where there is one (`EPERM` → needs
//! `CAP_NET_ADMIN`, `ip` missing → install iproute2).
//!
//! DNS goes (outside a network namespace of its own; inside one, always to its own
//! `/etc/resolv.conf`), in this order of preference, through systemd-resolved (`resolvectl dns|domain`
//! on the tun link, reverted with `resolvectl revert`) when it manages `/etc/resolv.conf`,
//! through `resolvconf` when installed, or by rewriting `/etc/resolv.conf` in place (so a
//! bind-mounted file, as `ip netns exec` makes, works too) after keeping its bytes, which
//! are written back on restore unless someone else changed the file meanwhile.
//!
//! The server's side lives here too: [`Nat`] masquerades VPN clients out of the uplink
//! (an nftables table of warren's own plus per-device forwarding), journaled the same way
//! (`/run/warren/nat-<pid>.journal`) and undone by [`recover_abandoned_nat`] after a crash.
#![forbid(unsafe_code)]

mod dns;
mod ip;
mod journal;
mod nat;
mod state;
mod tunnel;
mod v6;

pub use dns::{DnsBackend, DnsSpec, system_nameservers};
pub use ip::{Ipv4Net, NetError, PathInfo, RouteSpec, prefix_len};
pub use journal::{DEFAULT_JOURNAL_DIR, Recovery, recover_abandoned, recover_abandoned_in};
pub use nat::{
    Ipv6Net, Nat, NatError, NatSpec, default_uplinks, recover_abandoned_nat,
    recover_abandoned_nat_in, undo_when_stdin_closes,
};
pub use state::NetState;
pub use tunnel::{Endpoint, Redirect, RouteRequest, TunnelNet, TunnelSpec, plan_routes};
pub use v6::{TunIpv6, TunIpv6Spec, add_tun_address6, add_tun_route6};
