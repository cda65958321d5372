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
    }
}
