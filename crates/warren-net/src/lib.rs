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
//! Planning is pure ([`plan_routes`], [`plan_redirect_ipv6`]) and unit-tested; only
//! `NetState` touches the system.
//!
//! Routes and addresses are of either family ([`IpNet`], [`RouteSpec`], [`DeviceAddress`]):
//! the IPv6 side of a tunnel ([`TunnelSpec6`]) is its tun address (added with `nodad`,
//! journaled, so a persistent tun gets it taken off again), `route-ipv6` interface routes
//! through the tun, and `redirect-gateway ipv6`'s four routes after a host route to an
//! IPv6 server through its original gateway (openvpn-ops.md §3.3). The IPv4 address of
//! the tun is replaced in place and not journaled (the device goes with the program).
//!
//! Routes, addresses and links go to the kernel over rtnetlink (`netlink.rs`: the
//! netlink-packet-route messages on a plain blocking netlink socket, opened per operation),
//! not through the `ip` command: no process spawn, no output parsing, the kernel's own
//! error numbers (and extended-ack messages), and the capability checked is the one this
//! process holds (a client that dropped privileges keeping `CAP_NET_ADMIN` still removes
//! its routes without passing the capability on to a child). Each request is built as
//! iproute2 builds the equivalent command (table main, protocol `boot`, the same scope
//! rules), so what warren adds is what an admin would have added, and each is logged at
//! debug as that `ip` command, to inspect or repeat it. Failures are turned into the fix
//! where there is one (`EPERM` → needs `CAP_NET_ADMIN`).
//!
//! This crate, not warren-io, holds the netlink code: warren-io is the driver's I/O (tun,
//! sockets, poll, clock, signals, privileges) and the only crate with `unsafe`; host
//! configuration (routes, addresses, nftables, sysctls, resolv.conf) is warren-net's, and
//! its netlink socket comes from netlink-sys's safe API, so this crate stays
//! `forbid(unsafe_code)`.
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
//!
//! The client's kill switch is the same kind of thing: [`KillSwitch`], one nftables table
//! of warren's own (`inet warren-killswitch`) that drops everything leaving outside the
//! tunnel but the tunnel's own packets to its server, journaled
//! (`/run/warren/killswitch-<pid>.journal`). Unlike routes and NAT it is *not* undone after
//! a crash by the client's own helper: a client that died leaves it on, and the next
//! client start or `warren client --kill-switch-off` ([`kill_switch_off`]) removes it.
#![forbid(unsafe_code)]

mod dns;
mod ip;
mod journal;
mod killswitch;
mod nat;
mod netlink;
mod nft;
mod state;
mod tunnel;

pub use dns::{DnsBackend, DnsSpec, system_nameservers};
pub use ip::{Family, IpNet, Ipv4Net, Ipv6Net, NetError, PathInfo, RouteSpec, prefix_len};
pub use journal::{DEFAULT_JOURNAL_DIR, Recovery, recover_abandoned, recover_abandoned_in};
pub use killswitch::{
    KILL_SWITCH_TABLE, KillSwitch, KillSwitchError, KillSwitchRecovery, KillSwitchSpec, Transport,
    TunnelEndpoint, kill_switch_off, kill_switch_off_in, recover_abandoned_kill_switch,
    recover_abandoned_kill_switch_in, tidy_kill_switch_journals,
};
pub use nat::{
    Nat, NatError, NatSpec, default_uplinks, default_uplinks_v6, recover_abandoned_nat,
    recover_abandoned_nat_in, undo_when_stdin_closes,
};
pub use state::{DeviceAddress, NetState};
pub use tunnel::{
    Endpoint, REDIRECT_IPV6, Redirect, Route6Request, RouteRequest, TunnelNet, TunnelSpec,
    TunnelSpec6, plan_redirect_ipv6, plan_routes,
};
