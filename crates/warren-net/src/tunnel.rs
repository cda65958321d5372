//! A client tunnel's network settings: planning (pure) and applying them as a diff.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracing::{debug, info, warn};

use crate::dns::{DnsBackend, DnsSpec};
use crate::ip::{IpNet, Ipv4Net, Ipv6Net, NetError, PathInfo, RouteSpec, prefix_len};
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
    /// `redirect-gateway` for IPv4 (`None` also with `!ipv4`).
    pub redirect: Option<Redirect>,
    pub dns: DnsSpec,
    /// IPv6 inside the tunnel, when the server pushed `ifconfig-ipv6`.
    pub ipv6: Option<TunnelSpec6>,
}

/// The IPv6 side of a tunnel (openvpn-ops.md §3.3): the tun's address, added without
/// duplicate address detection, and interface routes through the tun. On a tun device
/// gateways do not matter (OpenVPN adds `route-ipv6` routes as `via ::`), so there are
/// none here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelSpec6 {
    /// `ifconfig-ipv6 ADDRESS/PREFIX REMOTE`: the address and its prefix length.
    pub address: Ipv6Addr,
    pub prefix: u8,
    /// `route-ipv6` networks, pushed or from the profile.
    pub routes: Vec<Route6Request>,
    /// `redirect-gateway ipv6`: the four routes of [`plan_redirect_ipv6`]. `local` is
    /// honoured (no host route to the server); `def1` means nothing for IPv6.
    pub redirect: Option<Redirect>,
}

/// `route-ipv6 NETWORK/BITS [GATEWAY [METRIC]]`: through the tun (the gateway is not
/// used on a tun device).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route6Request {
    pub network: Ipv6Net,
    pub metric: Option<u32>,
}

/// The networks `redirect-gateway ipv6` sends into the tunnel: OpenVPN init.c adds these
/// four rather than `::/0` (openvpn-ops.md §0 fact 7): together they cover global unicast
/// (2000::/3, also as 2000::/4 + 3000::/4 to win over a default route learnt from router
/// advertisements), ULA and the rest of the low space, and leave out link-local and
/// multicast.
pub const REDIRECT_IPV6: [(Ipv6Addr, u8); 4] = [
    (Ipv6Addr::UNSPECIFIED, 3),
    (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 4),
    (Ipv6Addr::new(0x3000, 0, 0, 0, 0, 0, 0, 0), 4),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
];

/// A v4-mapped IPv6 address as the IPv4 address it is.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        IpAddr::V4(_) => a,
    }
}

/// The routes of `redirect-gateway ipv6` for tun `dev`, in the order to add them, and notes.
/// When the VPN server is reached over IPv6 (and not `local`), a host route to it through
/// the path it was reached by (`net_path`, from [`NetState::route_get`] before the tunnel)
/// comes first, so the tunnel's own packets do not go into the tunnel.
pub fn plan_redirect_ipv6(
    dev: &str,
    server: IpAddr,
    net_path: Option<&PathInfo>,
    local: bool,
) -> (Vec<RouteSpec>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    if let IpAddr::V6(s) = canonical(server)
        && !local
    {
        match net_path {
            Some(p) if p.dev != dev && p.gateway.is_none_or(|g| g.is_ipv6()) => {
                out.push(RouteSpec {
                    dst: IpNet::V6(Ipv6Net::host(s)),
                    via: p.gateway,
                    dev: Some(p.dev.clone()),
                    metric: None,
                });
            }
            _ => notes.push(format!(
                "redirect-gateway ipv6: no route to the server {s} outside the tunnel is known; not adding a host route for it"
            )),
        }
    }
    for (net, len) in REDIRECT_IPV6 {
        out.push(RouteSpec {
            dst: IpNet::V6(Ipv6Net::new(net, len)),
            via: None,
            dev: Some(dev.to_owned()),
            metric: None,
        });
    }
    (out, notes)
}

/// The routes `spec` needs, in the order to add them, and notes about requests that
/// cannot be honoured. `net_path` is how the server was reached before the tunnel.
///
/// OpenVPN route.c `redirect_default_route_to_vpn`: the host route to the server through
/// the old gateway comes first, then 0.0.0.0/1 and 128.0.0.0/1 through the VPN gateway.
/// IPv6 routes follow the IPv4 ones: `redirect-gateway ipv6` ([`plan_redirect_ipv6`]),
/// then `route-ipv6` networks through the tun.
pub fn plan_routes(
    spec: &TunnelSpec,
    net_path: Option<&PathInfo>,
) -> Result<(Vec<RouteSpec>, Vec<String>), NetError> {
    let mut out: Vec<RouteSpec> = Vec::new();
    let mut notes = Vec::new();
    let tun_net = Ipv4Net::new(spec.address, spec.prefix);
    let server4 = match canonical(spec.server) {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    };
    // The path to an IPv4 server is the IPv4 path out (for `net_gateway` too).
    let path4 = net_path.filter(|p| server4.is_some() && p.gateway.is_none_or(|g| g.is_ipv4()));
    let gateway4 = |p: &PathInfo| match p.gateway {
        Some(IpAddr::V4(g)) => Some(g),
        _ => None,
    };
    let via_vpn = |dst: Ipv4Net, metric| RouteSpec {
        dst: dst.into(),
        via: spec.vpn_gateway.map(IpAddr::V4),
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
            match (server4, path4) {
                (Some(s), Some(p)) if p.dev != spec.dev => push(
                    &mut out,
                    RouteSpec { dst: Ipv4Net::host(s).into(), via: p.gateway, dev: Some(p.dev.clone()), metric: None },
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
                Endpoint::NetGateway => path4.and_then(gateway4),
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
                match path4 {
                    Some(p) if p.dev != spec.dev => RouteSpec {
                        dst: dst.into(),
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
                    dst: dst.into(),
                    via: Some(IpAddr::V4(gw)),
                    dev: Some(spec.dev.clone()),
                    metric: req.metric,
                },
                Some(gw) => RouteSpec {
                    dst: dst.into(),
                    via: Some(IpAddr::V4(gw)),
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

    if let Some(v6) = &spec.ipv6 {
        if let Some(rd) = &v6.redirect {
            let (routes, n) = plan_redirect_ipv6(&spec.dev, spec.server, net_path, rd.local);
            notes.extend(n);
            for r in routes {
                push(&mut out, r);
            }
        }
        for req in &v6.routes {
            push(
                &mut out,
                RouteSpec {
                    dst: IpNet::V6(req.network),
                    via: None,
                    dev: Some(spec.dev.clone()),
                    metric: req.metric,
                },
            );
        }
    }
    Ok((out, notes))
}

/// The smallest MTU IPv6 allows on a link (RFC 8200 §5); below it Linux disables IPv6 on
/// the device.
const MIN_IPV6_MTU: u16 = 1280;

/// The applied network side of one tun device, kept across reconnects.
#[derive(Debug)]
pub struct TunnelNet {
    state: NetState,
    backend: DnsBackend,
    dev: String,
    /// Address, prefix and MTU the device has now.
    device: (Ipv4Addr, u8, u16),
    /// The IPv6 address and prefix this added to the device (journaled).
    device6: Option<(Ipv6Addr, u8)>,
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
            device6: None,
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
        let s = canonical(server);
        let Some(path) = self.state.route_get(s)? else {
            return Ok(());
        };
        if path.dev != self.dev {
            self.net_path = Some(path);
            return Ok(());
        }
        // Only a path of the server's own family can be pinned.
        let Some(old) = self
            .net_path
            .clone()
            .filter(|p| p.gateway.is_none_or(|g| g.is_ipv4() == s.is_ipv4()))
        else {
            warn!("the server {s} is routed into the tunnel and no other path is known");
            return Ok(());
        };
        let r = RouteSpec {
            dst: IpNet::host(s),
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
        let mut notes = Vec::new();
        let mut spec6 = spec.ipv6.as_ref();
        if spec6.is_some() && spec.mtu < MIN_IPV6_MTU {
            notes.push(format!(
                "tun-mtu {} is below IPv6's minimum of {MIN_IPV6_MTU}: the kernel turns IPv6 off \
                 on {}; IPv6 is left out of the tunnel",
                spec.mtu, self.dev
            ));
            spec6 = None;
        }
        let want6 = spec6.map(|v| (v.address, v.prefix.min(128)));
        if want6 != self.device6 {
            if let Some((a, p)) = self.device6.take() {
                self.state.remove_address(&self.dev, IpAddr::V6(a), p)?;
            }
            if let Some((a, p)) = want6 {
                info!("tun {} IPv6 address {a}/{p}", self.dev);
                match self.state.add_address(&self.dev, IpAddr::V6(a), p, true) {
                    Ok(()) => {}
                    Err(e @ NetError::AddressExists { .. }) => notes.push(e.to_string()),
                    Err(e) => return Err(e),
                }
                self.device6 = Some((a, p));
            }
        }
        if self.net_path.is_none() {
            self.prepare_remote(spec.server)?;
        }
        let planned = if spec6.is_none() && spec.ipv6.is_some() {
            let mut without6 = spec.clone();
            without6.ipv6 = None;
            plan_routes(&without6, self.net_path.as_ref())
        } else {
            plan_routes(spec, self.net_path.as_ref())
        };
        let (planned, plan_notes) = planned?;
        notes.extend(plan_notes);
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
        let full_tunnel = spec.redirect.is_some() || spec6.is_some_and(|v| v.redirect.is_some());
        let was_full = |c: &TunnelSpec| {
            c.redirect.is_some() || c.ipv6.as_ref().is_some_and(|v| v.redirect.is_some())
        };
        let dns_changed = self
            .current
            .as_ref()
            .is_none_or(|c| c.dns != spec.dns || was_full(c) != full_tunnel);
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
        self.device6 = None;
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
            ipv6: None,
        }
    }

    fn eth() -> PathInfo {
        PathInfo {
            gateway: Some(IpAddr::V4(ip("192.168.1.1"))),
            dev: "eth0".into(),
        }
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().expect("ip6")
    }

    fn spec6() -> TunnelSpec6 {
        TunnelSpec6 {
            address: ip6("fd00:8::1000"),
            prefix: 64,
            routes: Vec::new(),
            redirect: None,
        }
    }

    #[test]
    fn redirect_ipv6_is_four_routes_after_the_server_host_route() {
        let eth6 = PathInfo {
            gateway: Some(IpAddr::V6(ip6("fe80::1"))),
            dev: "eth0".into(),
        };
        let server = IpAddr::V6(ip6("2001:db8::5"));
        let (r, notes) = plan_redirect_ipv6("tun0", server, Some(&eth6), false);
        assert_eq!(
            strs(&r),
            [
                "2001:db8::5/128 via fe80::1 dev eth0",
                "::/3 dev tun0",
                "2000::/4 dev tun0",
                "3000::/4 dev tun0",
                "fc00::/7 dev tun0",
            ]
        );
        assert!(notes.is_empty());
        // `local`, or a server reached over IPv4: no host route.
        assert_eq!(
            plan_redirect_ipv6("tun0", server, Some(&eth6), true)
                .0
                .len(),
            4
        );
        let v4 = IpAddr::V4(ip("203.0.113.5"));
        let (r, notes) = plan_redirect_ipv6("tun0", v4, Some(&eth()), false);
        assert_eq!(r.len(), 4);
        assert!(notes.is_empty());
        // A v4-mapped server address is an IPv4 server.
        let mapped = IpAddr::V6(ip("203.0.113.5").to_ipv6_mapped());
        assert_eq!(plan_redirect_ipv6("tun0", mapped, None, false).0.len(), 4);
        // IPv6 server without a known path: a note, still redirected.
        let (r, notes) = plan_redirect_ipv6("tun0", server, None, false);
        assert_eq!(r.len(), 4);
        assert_eq!(notes.len(), 1, "{notes:?}");
        // A path into the tunnel itself is no path.
        let into_tun = PathInfo {
            gateway: None,
            dev: "tun0".into(),
        };
        assert_eq!(
            plan_redirect_ipv6("tun0", server, Some(&into_tun), false)
                .1
                .len(),
            1
        );
        // On-link server: host route without a gateway.
        let onlink = PathInfo {
            gateway: None,
            dev: "veth1".into(),
        };
        let (r, _) = plan_redirect_ipv6("tun0", server, Some(&onlink), false);
        assert_eq!(r[0].to_string(), "2001:db8::5/128 dev veth1");
    }

    #[test]
    fn dual_stack_plan() {
        // `redirect-gateway def1 ipv6` to an IPv6 server, with a pushed route-ipv6.
        let mut s = spec();
        s.server = IpAddr::V6(ip6("2001:db8::5"));
        s.redirect = Some(Redirect {
            def1: true,
            local: false,
        });
        let mut v6 = spec6();
        v6.redirect = Some(Redirect::default());
        v6.routes.push(Route6Request {
            network: Ipv6Net::new(ip6("fd00:99::"), 64),
            metric: Some(5),
        });
        // Also in the redirect: kept once.
        v6.routes.push(Route6Request {
            network: Ipv6Net::new(ip6("fc00::"), 7),
            metric: None,
        });
        s.ipv6 = Some(v6);
        let eth6 = PathInfo {
            gateway: Some(IpAddr::V6(ip6("fe80::1"))),
            dev: "eth0".into(),
        };
        // `net_gateway` (IPv4) is not known from an IPv6 server's path.
        s.routes.push(RouteRequest {
            network: Endpoint::Ip(ip("172.16.0.0")),
            netmask: ip("255.240.0.0"),
            gateway: Some(Endpoint::NetGateway),
            metric: None,
        });
        let (r, notes) = plan_routes(&s, Some(&eth6)).expect("plan");
        assert_eq!(
            strs(&r),
            [
                "0.0.0.0/1 via 10.8.0.1 dev tun0",
                "128.0.0.0/1 via 10.8.0.1 dev tun0",
                "2001:db8::5/128 via fe80::1 dev eth0",
                "::/3 dev tun0",
                "2000::/4 dev tun0",
                "3000::/4 dev tun0",
                "fc00::/7 dev tun0",
                "fd00:99::/64 dev tun0 metric 5",
            ]
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("net_gateway"), "{notes:?}");
        // `redirect-gateway ipv6 !ipv4` to an IPv4 server: the IPv4 side is untouched, and
        // the IPv4 host route is not needed.
        s.redirect = None;
        s.server = IpAddr::V4(ip("203.0.113.5"));
        s.routes.clear();
        let (r, notes) = plan_routes(&s, Some(&eth())).expect("plan");
        assert_eq!(r.len(), 5, "{:?}", strs(&r));
        assert!(r.iter().all(|r| r.family() == crate::Family::V6));
        assert!(notes.is_empty(), "{notes:?}");
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
