//! IPv6 on a tun device: its address and the routes into it.
//!
//! These changes need no journal: they belong to the tun device and go away with it when
//! the process that opened it ends. They run the same `ip` command as the rest of this
//! crate (`ip -6 addr add`, `ip -6 route add`), each logged at debug.
use std::net::Ipv6Addr;

use crate::ip::{self, NetError};
use crate::nat::Ipv6Net;

/// Gives tun `dev` the IPv6 address `addr/prefix` (the server's `ifconfig-ipv6`, or a
/// client's pushed address), as OpenVPN's `ip -6 addr add ADDR/BITS dev DEV` does. A tun
/// is `IFF_NOARP`, so the address is usable at once (no duplicate address detection).
pub fn add_tun_address6(dev: &str, addr: Ipv6Addr, prefix: u8) -> Result<(), NetError> {
    ip::run(&ip::ip_binary(), &address_args(dev, addr, prefix))?;
    Ok(())
}

/// Routes `net` into tun `dev` (OpenVPN `route-ipv6` on a tun: `NET/BITS via :: dev DEV`,
/// no gateway), with `metric` if given.
pub fn add_tun_route6(dev: &str, net: Ipv6Net, metric: Option<u32>) -> Result<(), NetError> {
    match ip::run(&ip::ip_binary(), &route_args(dev, net, metric)) {
        Ok(_) => Ok(()),
        Err(NetError::Command { stderr, .. }) if stderr.contains("File exists") => {
            Err(NetError::RouteExists {
                route: format!("{}/{} dev {dev}", net.addr, net.prefix),
            })
        }
        Err(e) => Err(e),
    }
}

/// The IPv6 side of a client tunnel: the tun's address and the routes into it (the pushed
/// `ifconfig-ipv6`, `route-ipv6` and `redirect-gateway ipv6`, merged with the profile).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunIpv6Spec {
    pub address: Option<(Ipv6Addr, u8)>,
    /// Destinations with their metrics, in the order to add them.
    pub routes: Vec<(Ipv6Net, Option<u32>)>,
}

/// What [`TunIpv6::apply`] did to one tun, so that a reconnect changes only what differs.
/// Nothing needs undoing at exit: the address and routes go away with the device.
#[derive(Debug)]
pub struct TunIpv6 {
    dev: String,
    current: TunIpv6Spec,
}

impl TunIpv6 {
    /// For tun `dev`, which has no IPv6 address or route of warren's yet.
    pub fn new(dev: &str) -> TunIpv6 {
        TunIpv6 {
            dev: dev.to_owned(),
            current: TunIpv6Spec::default(),
        }
    }

    /// Brings the tun to `spec`: the address first (routes through a device need none, but
    /// the kernel picks the source from it), then stale routes out and new ones in.
    /// Returns notes about routes that could not be added.
    pub fn apply(&mut self, spec: &TunIpv6Spec) -> Result<Vec<String>, NetError> {
        let mut notes = Vec::new();
        if spec.address != self.current.address {
            if let Some((a, p)) = self.current.address.take() {
                // Routes through the device stay; only the address changes.
                if let Err(e) = ip::run(&ip::ip_binary(), &del(address_args(&self.dev, a, p))) {
                    notes.push(format!("removing the old IPv6 address {a}/{p}: {e}"));
                }
            }
            if let Some((a, p)) = spec.address {
                add_tun_address6(&self.dev, a, p)?;
            }
            self.current.address = spec.address;
        }
        let stale: Vec<_> = self
            .current
            .routes
            .iter()
            .filter(|r| !spec.routes.contains(r))
            .copied()
            .collect();
        for (net, metric) in stale {
            if let Err(e) = ip::run(&ip::ip_binary(), &del(route_args(&self.dev, net, metric))) {
                notes.push(format!(
                    "removing the IPv6 route {}/{}: {e}",
                    net.addr, net.prefix
                ));
            }
            self.current.routes.retain(|r| *r != (net, metric));
        }
        for &(net, metric) in &spec.routes {
            if self.current.routes.contains(&(net, metric)) {
                continue;
            }
            match add_tun_route6(&self.dev, net, metric) {
                Ok(()) => self.current.routes.push((net, metric)),
                Err(e @ NetError::RouteExists { .. }) => notes.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        Ok(notes)
    }
}

/// `add` arguments turned into `del` ones.
fn del(mut args: Vec<String>) -> Vec<String> {
    if let Some(verb) = args.get_mut(2) {
        *verb = "del".to_owned();
    }
    args
}

fn address_args(dev: &str, addr: Ipv6Addr, prefix: u8) -> Vec<String> {
    ["-6", "addr", "add", &format!("{addr}/{prefix}"), "dev", dev]
        .map(str::to_owned)
        .to_vec()
}

fn route_args(dev: &str, net: Ipv6Net, metric: Option<u32>) -> Vec<String> {
    let mut a: Vec<String> = [
        "-6",
        "route",
        "add",
        &format!("{}/{}", net.addr, net.prefix),
    ]
    .map(str::to_owned)
    .to_vec();
    a.extend(["dev".to_owned(), dev.to_owned()]);
    if let Some(m) = metric {
        a.extend(["metric".to_owned(), m.to_string()]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_what_an_admin_would_type() {
        let a = address_args("tun0", "fd00:8::1".parse().expect("ip"), 64);
        assert_eq!(a.join(" "), "-6 addr add fd00:8::1/64 dev tun0");
        let net = Ipv6Net {
            addr: "fd00:77::".parse().expect("ip"),
            prefix: 64,
        };
        assert_eq!(
            route_args("tun0", net, None).join(" "),
            "-6 route add fd00:77::/64 dev tun0"
        );
        assert_eq!(
            route_args("tun0", net, Some(5)).join(" "),
            "-6 route add fd00:77::/64 dev tun0 metric 5"
        );
        assert_eq!(
            del(route_args("tun0", net, None)).join(" "),
            "-6 route del fd00:77::/64 dev tun0"
        );
    }
}
