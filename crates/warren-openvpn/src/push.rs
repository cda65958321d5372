//! Pushed options: a (reassembled) PUSH_REPLY parsed the way a 2.6 client applies it.
use std::net::{Ipv4Addr, Ipv6Addr};

use warren_core::PeerId;
use warren_crypto::CipherKind;

/// A route pushed or configured: `route NETWORK NETMASK [GATEWAY] [METRIC]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedRoute {
    pub network: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub metric: Option<u32>,
}

/// A pushed or configured `route-ipv6 NETWORK/BITS [GATEWAY] [METRIC]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedRouteIpv6 {
    pub network: Ipv6Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv6Addr>,
    pub metric: Option<u32>,
}

/// `ADDR/BITS` (OpenVPN: a missing /BITS is /64).
fn ipv6_prefix(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (a, b) = s.split_once('/').unwrap_or((s, "64"));
    let bits = b.parse::<u8>().ok().filter(|b| *b <= 128)?;
    Some((a.parse().ok()?, bits))
}

/// What the server pushed, parsed (push.c / options.c semantics for a 2.6 client).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushedConfig {
    /// `ifconfig ADDR NETMASK` (topology subnet).
    pub ifconfig: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `ifconfig-ipv6 ADDR/BITS REMOTE`: this client's IPv6 address, its prefix length
    /// and the server's tunnel address.
    pub ifconfig_ipv6: Option<(Ipv6Addr, u8, Ipv6Addr)>,
    /// `route-ipv6` options in order.
    pub routes_ipv6: Vec<PushedRouteIpv6>,
    /// `block-ipv6` (pushable: OPT_P_ROUTE).
    pub block_ipv6: bool,
    pub route_gateway: Option<Ipv4Addr>,
    pub topology_subnet: bool,
    pub routes: Vec<PushedRoute>,
    /// `redirect-gateway` flags, e.g. `["def1", "bypass-dhcp"]`; None when not pushed.
    pub redirect_gateway: Option<Vec<String>>,
    /// `dhcp-option DNS x` and `DNS6 x`, and the addresses of `dns server N address ...`.
    pub dns_servers: Vec<std::net::IpAddr>,
    /// `dhcp-option DOMAIN d` (first), `dhcp-option DOMAIN-SEARCH d`, `dns search-domains
    /// d...`: domains to search and to resolve through the tunnel's servers.
    pub search_domains: Vec<String>,
    /// `dns server N resolve-domains d...`: domains only to resolve through the tunnel's
    /// servers (split DNS), not to search.
    pub dns_resolve_domains: Vec<String>,
    pub tun_mtu: Option<u16>,
    pub ping: Option<u32>,
    pub ping_restart: Option<u32>,
    pub peer_id: Option<PeerId>,
    pub cipher: Option<CipherKind>,
    /// `protocol-flags ... tls-ekm` or `key-derivation tls-ekm`.
    pub tls_ekm: bool,
    /// `protocol-flags cc-exit`.
    pub cc_exit: bool,
    /// Every option as received, in order (after `push-continuation` assembly).
    pub raw: Vec<String>,
}

/// Parses the options of a (reassembled) PUSH_REPLY the way a 2.6 client applies them
/// (options.c, push.c). Unknown options are kept in `raw` only.
pub(crate) fn parse_pushed(options: &[String]) -> PushedConfig {
    let mut p = PushedConfig {
        raw: options.to_vec(),
        ..PushedConfig::default()
    };
    let ip = |s: Option<&&str>| s.and_then(|s| s.parse::<Ipv4Addr>().ok());
    // `DOMAIN` is the connection's own domain: searched first (as OpenVPN's resolv.conf
    // scripts write it), before `DOMAIN-SEARCH` and `dns search-domains`.
    let mut more_domains = Vec::new();
    for opt in options {
        let t: Vec<&str> = opt.split_whitespace().collect();
        match t.first().copied() {
            Some("ifconfig") => {
                if let (Some(a), Some(m)) = (ip(t.get(1)), ip(t.get(2))) {
                    p.ifconfig = Some((a, m));
                }
            }
            Some("ifconfig-ipv6") => {
                // options.c: BITS from 64 to 124, a valid remote.
                if let (Some((a, bits)), Some(r)) = (
                    t.get(1).and_then(|s| ipv6_prefix(s)),
                    t.get(2).and_then(|s| s.parse::<Ipv6Addr>().ok()),
                ) && (64..=124).contains(&bits)
                {
                    p.ifconfig_ipv6 = Some((a, bits, r));
                }
            }
            Some("route-ipv6") => {
                if let Some((network, prefix)) = t.get(1).and_then(|s| ipv6_prefix(s)) {
                    p.routes_ipv6.push(PushedRouteIpv6 {
                        network,
                        prefix,
                        gateway: t.get(2).and_then(|g| g.parse().ok()),
                        metric: t.get(3).and_then(|m| m.parse().ok()),
                    });
                }
            }
            Some("block-ipv6") => p.block_ipv6 = true,
            // options.c: a no-op for 2.6 clients, accepted silently when pulled.
            Some("tun-ipv6") => {}
            Some("route-gateway") => p.route_gateway = ip(t.get(1)),
            Some("topology") => p.topology_subnet = t.get(1) == Some(&"subnet"),
            Some("route") => {
                if let (Some(network), Some(netmask)) =
                    (ip(t.get(1)), ip(t.get(2)).or(Some(Ipv4Addr::BROADCAST)))
                {
                    p.routes.push(PushedRoute {
                        network,
                        netmask,
                        gateway: ip(t.get(3)),
                        metric: t.get(4).and_then(|m| m.parse().ok()),
                    });
                }
            }
            Some("redirect-gateway") => {
                p.redirect_gateway = Some(t[1..].iter().map(|s| s.to_string()).collect())
            }
            Some("dhcp-option") => match (
                t.get(1).map(|s| s.to_ascii_uppercase()).as_deref(),
                t.get(2),
            ) {
                (Some("DNS"), Some(a)) | (Some("DNS6"), Some(a)) => {
                    if let Ok(a) = a.parse() {
                        p.dns_servers.push(a);
                    }
                }
                (Some("DOMAIN"), Some(d)) => p.search_domains.push(d.to_string()),
                (Some("DOMAIN-SEARCH"), Some(d)) => more_domains.push(d.to_string()),
                // NTP, WINS, NBT, proxy settings: Windows DHCP options, nothing to do on
                // Linux.
                _ => {}
            },
            Some("dns") => match (t.get(1).copied(), t.get(3).copied()) {
                (Some("server"), Some("address")) => {
                    // `ADDR`, `ADDR:PORT` or `[ADDR6]:PORT`: a server on another port than
                    // 53 cannot be named in resolv.conf, and is left out.
                    p.dns_servers.extend(t[4..].iter().filter_map(|a| {
                        a.parse::<std::net::IpAddr>().ok().or_else(|| {
                            a.parse::<std::net::SocketAddr>()
                                .ok()
                                .filter(|s| s.port() == 53)
                                .map(|s| s.ip())
                        })
                    }));
                }
                (Some("server"), Some("resolve-domains")) => p
                    .dns_resolve_domains
                    .extend(t[4..].iter().map(|s| s.to_string())),
                (Some("search-domains"), _) => {
                    more_domains.extend(t[2..].iter().map(|s| s.to_string()))
                }
                _ => {}
            },
            Some("tun-mtu") => p.tun_mtu = t.get(1).and_then(|v| v.parse().ok()),
            Some("ping") => p.ping = t.get(1).and_then(|v| v.parse().ok()),
            Some("ping-restart") => p.ping_restart = t.get(1).and_then(|v| v.parse().ok()),
            Some("peer-id") => {
                p.peer_id = t.get(1).and_then(|v| v.parse().ok()).and_then(PeerId::new)
            }
            Some("cipher") => p.cipher = t.get(1).and_then(|c| CipherKind::from_name(c)),
            Some("protocol-flags") => {
                p.tls_ekm |= t.contains(&"tls-ekm");
                p.cc_exit |= t.contains(&"cc-exit");
            }
            Some("key-derivation") => p.tls_ekm |= t.get(1) == Some(&"tls-ekm"),
            _ => {}
        }
    }
    p.search_domains.extend(more_domains);
    dedup_in_order(&mut p.dns_servers);
    dedup_in_order(&mut p.search_domains);
    dedup_in_order(&mut p.dns_resolve_domains);
    p
}

/// Removes repeats, keeping the first of each.
fn dedup_in_order<T: PartialEq + Clone>(v: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(v.len());
    v.retain(|x| {
        let new = !seen.contains(x);
        if new {
            seen.push(x.clone());
        }
        new
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stock_push_reply() {
        let msg = "PUSH_REPLY,route-gateway 10.199.0.1,topology subnet,ping 10,ping-restart 120,route 192.168.50.0 255.255.255.0,redirect-gateway def1 bypass-dhcp,dhcp-option DNS 10.199.0.1,dhcp-option DOMAIN corp.example,ifconfig 10.199.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500";
        let reply = warren_wire::parse_push_reply(msg).expect("push reply");
        let p = parse_pushed(&reply.options);
        assert_eq!(
            p.ifconfig,
            Some((
                Ipv4Addr::new(10, 199, 0, 2),
                Ipv4Addr::new(255, 255, 255, 0)
            ))
        );
        assert_eq!(p.route_gateway, Some(Ipv4Addr::new(10, 199, 0, 1)));
        assert!(p.topology_subnet);
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.routes[0].network, Ipv4Addr::new(192, 168, 50, 0));
        assert_eq!(
            p.redirect_gateway.as_deref(),
            Some(&["def1".to_string(), "bypass-dhcp".to_string()][..])
        );
        assert_eq!(
            p.dns_servers,
            vec![std::net::IpAddr::V4(Ipv4Addr::new(10, 199, 0, 1))]
        );
        assert_eq!(p.search_domains, vec!["corp.example".to_string()]);
        assert_eq!(
            (p.ping, p.ping_restart, p.peer_id, p.tun_mtu),
            (Some(10), Some(120), PeerId::new(0), Some(1500))
        );
        assert_eq!(p.cipher, Some(CipherKind::Aes256Gcm));
        assert!(p.tls_ekm && p.cc_exit);
        assert_eq!((p.ifconfig_ipv6, p.routes_ipv6.len()), (None, 0));
    }

    #[test]
    fn parses_a_dual_stack_push_reply() {
        // openvpn-ops.md §3.2, the stock 2.6.14 server's reply.
        let msg = "PUSH_REPLY,route-ipv6 fd00:99::/64,redirect-gateway ipv6 !ipv4,tun-ipv6,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 120,echo hello-from-ccd,ifconfig-ipv6 fd00:8::1000/64 fd00:8::1,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500";
        let reply = warren_wire::parse_push_reply(msg).expect("push reply");
        let p = parse_pushed(&reply.options);
        let a = |s: &str| s.parse::<Ipv6Addr>().expect("ip");
        assert_eq!(
            p.ifconfig_ipv6,
            Some((a("fd00:8::1000"), 64, a("fd00:8::1")))
        );
        assert_eq!(
            p.routes_ipv6,
            [PushedRouteIpv6 {
                network: a("fd00:99::"),
                prefix: 64,
                gateway: None,
                metric: None
            }]
        );
        assert_eq!(
            p.redirect_gateway,
            Some(vec!["ipv6".to_string(), "!ipv4".to_string()])
        );
        assert!(p.ifconfig.is_some() && !p.block_ipv6);
        let p = parse_pushed(&[
            "block-ipv6".into(),
            "ifconfig-ipv6 fd00::2/48 fd00::1".into(),
        ]);
        assert!(p.block_ipv6);
        assert_eq!(
            p.ifconfig_ipv6, None,
            "/48 is refused as OpenVPN refuses it"
        );
    }

    #[test]
    fn dns_options_of_both_kinds() {
        let opts: Vec<String> = [
            "dhcp-option DOMAIN-SEARCH corp.example",
            "dhcp-option DNS6 fd00:8::1",
            "dhcp-option domain vpn.example",
            "dhcp-option DNS 10.8.0.1",
            "block-outside-dns",
            "dhcp-option WINS 10.8.0.9",
            "dns search-domains a.example corp.example",
            "dns server 0 address 10.8.0.1 [fd00:8::53]:53 10.8.0.2:5353",
            "dns server 0 resolve-domains internal.example",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let p = parse_pushed(&opts);
        assert_eq!(
            p.dns_servers,
            ["fd00:8::1", "10.8.0.1", "fd00:8::53"]
                .map(|a| a.parse::<std::net::IpAddr>().expect("ip"))
        );
        // DOMAIN first, repeats once.
        assert_eq!(
            p.search_domains,
            ["vpn.example", "corp.example", "a.example"]
        );
        assert_eq!(p.dns_resolve_domains, ["internal.example"]);
    }
}
