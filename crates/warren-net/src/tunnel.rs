//! A client tunnel's network settings: planning (pure) and applying them as a diff.
use std::net::{IpAddr, Ipv4Addr};

use tracing::{debug, info, warn};

use crate::dns::{DnsBackend, DnsSpec};
use crate::ip::{Ipv4Net, NetError, PathInfo, RouteSpec, prefix_len};
use crate::state::NetState;

/// A route's network or gateway as OpenVPN's `route` directive names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Ip(Ipv4Addr),
    /// `vpn_gateway`: the pushed `route-gateway`.
    VpnGateway,
    /// `net_gateway`: the gateway the machine used before the tunnel.
    NetGateway,
    /// `remote_host`: the VPN server's own address.
    RemoteHost,
}

/// `route NETWORK NETMASK [GATEWAY [METRIC]]`, pushed or from the profile.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteRequest {
    pub network: Endpoint,
    pub netmask: Ipv4Addr,
    /// `None` (or `default`): through the VPN gateway.
    pub gateway: Option<Endpoint>,
    pub metric: Option<u32>,
}

/// `redirect-gateway` flags warren acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// `def1`: 0.0.0.0/1 and 128.0.0.0/1 rather than replacing the default route. warren
    /// always works this way (OpenVPN without `def1` deletes and re-adds the default route;
    /// the two /1 routes win over it without touching it, and nothing needs restoring).
    pub def1: bool,
    /// `local`: the server is on the local network, no host route to it.
    pub local: bool,
}

/// Everything the tunnel needs from the OS, merged from the profile and what the server
/// pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelSpec {
    /// The tun device.
    pub dev: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub mtu: u16,
    /// `route-gateway`.
    pub vpn_gateway: Option<Ipv4Addr>,
    /// The VPN server's underlay address (for the `redirect-gateway` host route).
    pub server: IpAddr,
    pub routes: Vec<RouteRequest>,
    pub redirect: Option<Redirect>,
    pub dns: DnsSpec,
}

/// The routes `spec` needs, in the order to add them, and notes about requests that
/// cannot be honoured. `net_path` is how the server was reached before the tunnel.
///
/// OpenVPN route.c `redirect_default_route_to_vpn`: the host route to the server through
/// the old gateway comes first, then 0.0.0.0/1 and 128.0.0.0/1 through the VPN gateway.
pub fn plan_routes(
    spec: &TunnelSpec,
    net_path: Option<&PathInfo>,
) -> Result<(Vec<RouteSpec>, Vec<String>), NetError> {
    let mut out: Vec<RouteSpec> = Vec::new();
    let mut notes = Vec::new();
    let tun_net = Ipv4Net::new(spec.address, spec.prefix);
    let server4 = match spec.server {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    let via_vpn = |dst: Ipv4Net, metric| RouteSpec {
        dst,
        via: spec.vpn_gateway,
        dev: Some(spec.dev.clone()),
        metric,
    };
    let push = |out: &mut Vec<RouteSpec>, r: RouteSpec| {
        if !out.contains(&r) {
            out.push(r);
        }
    };

    if let Some(rd) = &spec.redirect {
        if !rd.local {
            match (server4, net_path) {
                (Some(s), Some(p)) if p.dev != spec.dev => push(
                    &mut out,
                    RouteSpec { dst: Ipv4Net::host(s), via: p.gateway, dev: Some(p.dev.clone()), metric: None },
                ),
                (Some(s), _) => notes.push(format!(
                    "redirect-gateway: no route to the server {s} outside the tunnel is known; not adding a host route for it"
                )),
                (None, _) => {}
            }
        }
        push(
            &mut out,
            via_vpn(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 1), None),
        );
        push(
            &mut out,
            via_vpn(Ipv4Net::new(Ipv4Addr::new(128, 0, 0, 0), 1), None),
        );
    }

    for req in &spec.routes {
        let resolve = |e: &Endpoint| -> Option<Ipv4Addr> {
            match e {
                Endpoint::Ip(a) => Some(*a),
                Endpoint::VpnGateway => spec.vpn_gateway,
                Endpoint::NetGateway => net_path.and_then(|p| p.gateway),
                Endpoint::RemoteHost => server4,
            }
        };
        let prefix = prefix_len(req.netmask)?;
        let Some(network) = resolve(&req.network) else {
            notes.push(format!(
                "route {:?}/{prefix}: the network is not known here; skipped",
                req.network
            ));
            continue;
        };
        let dst = Ipv4Net::new(network, prefix);
        if dst.addr() != network {
            notes.push(format!(
                "route {network}/{prefix}: host bits set; using {dst}"
            ));
        }
        let route = match &req.gateway {
            None | Some(Endpoint::VpnGateway) => via_vpn(dst, req.metric),
            Some(Endpoint::NetGateway) => {
                match net_path {
                    Some(p) if p.dev != spec.dev => RouteSpec {
                        dst,
                        via: p.gateway,
                        dev: Some(p.dev.clone()),
                        metric: req.metric,
                    },
                    _ => {
                        notes.push(format!("route {dst} via net_gateway: the pre-tunnel gateway is not known; skipped"));
                        continue;
                    }
                }
            }
            Some(g) => match resolve(g) {
                Some(gw) if tun_net.contains(gw) => RouteSpec {
                    dst,
                    via: Some(gw),
                    dev: Some(spec.dev.clone()),
                    metric: req.metric,
                },
                Some(gw) => RouteSpec {
                    dst,
                    via: Some(gw),
                    dev: None,
                    metric: req.metric,
                },
                None => {
                    notes.push(format!(
                        "route {dst} via {g:?}: the gateway is not known; skipped"
                    ));
                    continue;
                }
            },
        };
        push(&mut out, route);
    }
    Ok((out, notes))
}

/// The applied network side of one tun device, kept across reconnects.
#[derive(Debug)]
pub struct TunnelNet {
    state: NetState,
    backend: DnsBackend,
    dev: String,
    /// Address, prefix and MTU the device has now.
    device: (Ipv4Addr, u8, u16),
    /// The last known path to a server that does not go through the tunnel.
    net_path: Option<PathInfo>,
    current: Option<TunnelSpec>,
}

impl TunnelNet {
    /// For tun device `dev`, which was opened with this address, prefix and MTU.
    pub fn new(
        state: NetState,
        backend: DnsBackend,
        dev: &str,
        address: Ipv4Addr,
        prefix: u8,
        mtu: u16,
    ) -> TunnelNet {
        TunnelNet {
            state,
            backend,
            dev: dev.to_owned(),
            device: (address, prefix, mtu),
            net_path: None,
            current: None,
        }
    }

    pub fn dev(&self) -> &str {
        &self.dev
    }

    /// The routes in place now, in the order they were added.
    pub fn routes(&self) -> Vec<RouteSpec> {
        self.state.routes().cloned().collect()
    }

    /// Before connecting to `server`: learn how it is reached outside the tunnel and, when
    /// `redirect-gateway` routes already send everything into the tunnel (a reconnect with
    /// the tun kept), add a host route to it through the old path so the handshake is not
    /// sent into the tunnel it is trying to bring up. The next [`TunnelNet::apply`] keeps or
    /// removes that route as its plan says.
    pub fn prepare_remote(&mut self, server: IpAddr) -> Result<(), NetError> {
        let IpAddr::V4(s) = server else { return Ok(()) };
        let Some(path) = self.state.route_get(s)? else {
            return Ok(());
        };
        if path.dev != self.dev {
            self.net_path = Some(path);
            return Ok(());
        }
        let Some(old) = self.net_path.clone() else {
            warn!("the server {s} is routed into the tunnel and no other path is known");
            return Ok(());
        };
        let r = RouteSpec {
            dst: Ipv4Net::host(s),
            via: old.gateway,
            dev: Some(old.dev),
            metric: None,
        };
        debug!("pinning {r} outside the tunnel while reconnecting");
        match self.state.add_route(&r) {
            Ok(()) | Err(NetError::RouteExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Brings the system to `spec`: the first time everything, later only the difference
    /// from the last spec. Returns notes about what could not be honoured.
    pub fn apply(&mut self, spec: &TunnelSpec) -> Result<Vec<String>, NetError> {
        if self.current.as_ref() == Some(spec) {
            return Ok(Vec::new());
        }
        let (addr, prefix, mtu) = self.device;
        if (spec.address, spec.prefix) != (addr, prefix) {
            info!(
                "tun {} address changes from {addr}/{prefix} to {}/{}",
                self.dev, spec.address, spec.prefix
            );
            // Routes through the device go away with its old address: take them out of
            // the journal first; the plan below adds them again.
            self.state.remove_routes_on(&self.dev)?;
            self.state
                .set_address(&self.dev, spec.address, spec.prefix)?;
            self.device.0 = spec.address;
            self.device.1 = spec.prefix;
        }
        if spec.mtu != mtu {
            self.state.set_mtu(&self.dev, spec.mtu)?;
            self.device.2 = spec.mtu;
        }
        if self.net_path.is_none() {
            self.prepare_remote(spec.server)?;
        }
        let (planned, mut notes) = plan_routes(spec, self.net_path.as_ref())?;
        let stale: Vec<RouteSpec> = self
            .state
            .routes()
            .filter(|r| !planned.contains(r))
            .cloned()
            .collect();
        for r in stale.iter().rev() {
            self.state.remove_route(r)?;
        }
        let present: Vec<RouteSpec> = self.state.routes().cloned().collect();
        for r in planned.iter().filter(|r| !present.contains(r)) {
            match self.state.add_route(r) {
                Ok(()) => {}
                Err(e @ NetError::RouteExists { .. }) => notes.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        let full_tunnel = spec.redirect.is_some();
        let dns_changed = self
            .current
            .as_ref()
            .is_none_or(|c| c.dns != spec.dns || c.redirect.is_some() != full_tunnel);
        if dns_changed {
            if spec.dns.is_empty() {
                self.state.clear_dns()?;
            } else {
                self.state
                    .set_dns(&self.backend, &self.dev, &spec.dns, full_tunnel)?;
            }
        }
        self.current = Some(spec.clone());
        Ok(notes)
    }

    /// Undoes everything (also done on drop).
    pub fn restore(&mut self) -> Result<(), NetError> {
        self.current = None;
        self.state.restore()
    }

    /// See [`NetState::hand_over`].
    pub fn hand_over(&mut self) {
        self.state.hand_over();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn spec() -> TunnelSpec {
        TunnelSpec {
            dev: "tun0".into(),
            address: ip("10.8.0.2"),
            prefix: 24,
            mtu: 1500,
            vpn_gateway: Some(ip("10.8.0.1")),
            server: IpAddr::V4(ip("203.0.113.5")),
            routes: Vec::new(),
            redirect: None,
            dns: DnsSpec::default(),
        }
    }

    fn eth() -> PathInfo {
        PathInfo {
            gateway: Some(ip("192.168.1.1")),
            dev: "eth0".into(),
        }
    }

    fn strs(rs: &[RouteSpec]) -> Vec<String> {
        rs.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn redirect_def1_pins_the_server_first() {
        let mut s = spec();
        s.redirect = Some(Redirect {
            def1: true,
            local: false,
        });
        let (r, notes) = plan_routes(&s, Some(&eth())).expect("plan");
        assert_eq!(
            strs(&r),
            [
                "203.0.113.5/32 via 192.168.1.1 dev eth0",
                "0.0.0.0/1 via 10.8.0.1 dev tun0",
                "128.0.0.0/1 via 10.8.0.1 dev tun0"
            ]
        );
        assert!(notes.is_empty());
        // On-link server: host route without a gateway.
        let onlink = PathInfo {
            gateway: None,
            dev: "veth1".into(),
        };
        let (r, _) = plan_routes(&s, Some(&onlink)).expect("plan");
        assert_eq!(r[0].to_string(), "203.0.113.5/32 dev veth1");
        // `local`: no host route.
        s.redirect = Some(Redirect {
            def1: true,
            local: true,
        });
        let (r, _) = plan_routes(&s, Some(&eth())).expect("plan");
        assert_eq!(r.len(), 2);
        // Unknown path: a note, still redirected.
        s.redirect = Some(Redirect::default());
        let (r, notes) = plan_routes(&s, None).expect("plan");
        assert_eq!(r.len(), 2);
        assert_eq!(notes.len(), 1, "{notes:?}");
    }

    #[test]
    fn routes_by_gateway_kind() {
        let mut s = spec();
        s.routes = vec![
            RouteRequest {
                network: Endpoint::Ip(ip("192.0.2.0")),
                netmask: ip("255.255.255.0"),
                gateway: None,
                metric: None,
            },
            RouteRequest {
                network: Endpoint::Ip(ip("198.51.100.7")),
                netmask: ip("255.255.255.0"),
                gateway: Some(Endpoint::Ip(ip("10.8.0.9"))),
                metric: Some(7),
            },
            RouteRequest {
                network: Endpoint::Ip(ip("172.16.0.0")),
                netmask: ip("255.240.0.0"),
                gateway: Some(Endpoint::NetGateway),
                metric: None,
            },
            RouteRequest {
                network: Endpoint::RemoteHost,
                netmask: ip("255.255.255.255"),
                gateway: Some(Endpoint::NetGateway),
                metric: None,
            },
            RouteRequest {
                network: Endpoint::Ip(ip("192.0.2.0")),
                netmask: ip("255.255.255.0"),
                gateway: Some(Endpoint::VpnGateway),
                metric: None,
            },
        ];
        let (r, notes) = plan_routes(&s, Some(&eth())).expect("plan");
        assert_eq!(
            strs(&r),
            [
                "192.0.2.0/24 via 10.8.0.1 dev tun0",
                "198.51.100.0/24 via 10.8.0.9 dev tun0 metric 7",
                "172.16.0.0/12 via 192.168.1.1 dev eth0",
                "203.0.113.5/32 via 192.168.1.1 dev eth0",
            ]
        );
        assert_eq!(notes.len(), 1, "host bits note: {notes:?}");
        // No route-gateway pushed: routes go to the device.
        s.vpn_gateway = None;
        s.routes.truncate(1);
        let (r, _) = plan_routes(&s, None).expect("plan");
        assert_eq!(strs(&r), ["192.0.2.0/24 dev tun0"]);
        // net_gateway unknown: skipped with a note.
        s.routes = vec![RouteRequest {
            network: Endpoint::Ip(ip("1.0.0.0")),
            netmask: ip("255.0.0.0"),
            gateway: Some(Endpoint::NetGateway),
            metric: None,
        }];
        let (r, notes) = plan_routes(&s, None).expect("plan");
        assert!(r.is_empty());
        assert_eq!(notes.len(), 1);
        // A bad netmask is an error.
        s.routes[0].netmask = ip("255.0.255.0");
        assert!(plan_routes(&s, None).is_err());
    }
}
