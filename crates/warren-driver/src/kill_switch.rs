//! The client's kill switch, driver side ([`warren_net::KillSwitch`] is the table itself).
//!
//! The switch lets no DNS out but through the tunnel, so the loop cannot look a server's
//! name up while it reconnects. Every connection entry (its proxy, when it has one) is
//! therefore resolved once, before the switch goes on, to all its addresses of the entry's
//! family; the switch lets out exactly those (per address, transport and port), and while
//! it is on the loop connects to them without asking DNS again (OpenVPN's
//! `persist-remote-ip`, with every address). Once a connection is up, the names are looked
//! up again in the background, through the tunnel's DNS; a name whose addresses changed
//! has its endpoints replaced in one transaction, always keeping the endpoint of the
//! connection that is up.
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, TryRecvError};

use tracing::{debug, info, warn};
use warren_net::{KillSwitch, KillSwitchError, KillSwitchSpec, Transport, TunnelEndpoint};

use crate::client_loop::{ClientLoopError, RemoteFamily, RemoteSpec, pick};

/// The answer of a background lookup: the new addresses of targets, by index.
type Lookups = Vec<(usize, Vec<IpAddr>)>;

/// The most addresses kept for one name.
const MAX_ADDRESSES: usize = 16;

/// One place the loop connects to: a server, or the proxy in front of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    transport: Transport,
    family: RemoteFamily,
    addrs: Vec<IpAddr>,
}

impl Target {
    fn of(remote: &RemoteSpec) -> Target {
        let (host, port) = match &remote.proxy {
            Some(p) => (p.host.clone(), p.port),
            None => (remote.host.clone(), remote.port),
        };
        Target {
            host,
            port,
            transport: if remote.tcp {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            family: remote.family,
            addrs: Vec::new(),
        }
    }

    fn same_place(&self, other: &Target) -> bool {
        (&self.host, self.port, self.transport, self.family)
            == (&other.host, other.port, other.transport, other.family)
    }

    fn is_name(&self) -> bool {
        self.host.parse::<IpAddr>().is_err()
    }
}

/// All addresses of `host` of `family`, in the resolver's order, without repeats.
fn lookup(host: &str, port: u16, family: RemoteFamily) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for a in (host, port).to_socket_addrs().map_err(|e| e.to_string())? {
        let fits = match family {
            RemoteFamily::Any => true,
            RemoteFamily::V4 => a.is_ipv4(),
            RemoteFamily::V6 => a.is_ipv6(),
        };
        if fits && !out.contains(&a.ip()) && out.len() < MAX_ADDRESSES {
            out.push(a.ip());
        }
    }
    if out.is_empty() {
        return Err("no address of the requested family".to_owned());
    }
    Ok(out)
}

/// What the switch lets out: every address of every target (on its port and transport),
/// the connection that is up, and the tun device.
fn spec_for(
    targets: &[Target],
    tun: Option<&str>,
    current: Option<TunnelEndpoint>,
) -> KillSwitchSpec {
    let mut endpoints: Vec<TunnelEndpoint> = targets
        .iter()
        .flat_map(|t| {
            t.addrs.iter().map(|&addr| TunnelEndpoint {
                addr,
                port: t.port,
                transport: t.transport,
            })
        })
        .collect();
    endpoints.extend(current);
    KillSwitchSpec {
        tun: tun.map(str::to_owned),
        endpoints,
    }
    .normalized()
}

/// The kill switch of a running client and what it lets out.
#[derive(Debug)]
pub(crate) struct Guard {
    switch: KillSwitch,
    targets: Vec<Target>,
    tun: Option<String>,
    /// The endpoint of the connection that is up.
    current: Option<TunnelEndpoint>,
    /// A background lookup of the names, under way.
    refresh: Option<Receiver<Lookups>>,
}

impl Guard {
    /// Resolves every entry of `remotes` and turns the switch on (journaled in `dir`).
    /// Entries whose names do not resolve cannot be used while the switch is on (a
    /// warning each); if none resolves, the switch is not turned on and this fails.
    pub(crate) fn engage(remotes: &[RemoteSpec], dir: &Path) -> Result<Guard, ClientLoopError> {
        let mut targets: Vec<Target> = Vec::new();
        let mut failed = Vec::new();
        for r in remotes {
            let mut t = Target::of(r);
            if targets.iter().any(|x| x.same_place(&t)) {
                continue;
            }
            match lookup(&t.host, t.port, t.family) {
                Ok(addrs) => t.addrs = addrs,
                Err(e) => {
                    warn!(
                        "kill switch: cannot resolve `{}` ({e}); this connection cannot be used \
                         while the switch is on",
                        t.host
                    );
                    failed.push(t.host.clone());
                }
            }
            targets.push(t);
        }
        if targets.iter().all(|t| t.addrs.is_empty()) {
            return Err(ClientLoopError::KillSwitchResolve {
                hosts: failed.join(", "),
            });
        }
        let switch = KillSwitch::engage(&spec_for(&targets, None, None), dir)
            .map_err(ClientLoopError::KillSwitch)?;
        Ok(Guard {
            switch,
            targets,
            tun: None,
            current: None,
            refresh: None,
        })
    }

    /// What the switch should let out now.
    fn spec(&self) -> KillSwitchSpec {
        spec_for(&self.targets, self.tun.as_deref(), self.current)
    }

    /// The address to connect to for `remote` (or its proxy), among those the switch lets
    /// out, chosen as [`crate::client_loop`] chooses among resolved addresses.
    pub(crate) fn address_for(&self, remote: &RemoteSpec) -> Result<SocketAddr, String> {
        let want = Target::of(remote);
        let t = self
            .targets
            .iter()
            .find(|t| t.same_place(&want))
            .ok_or_else(|| "not resolved before the kill switch went on".to_owned())?;
        if t.addrs.is_empty() {
            return Err(
                "it did not resolve before the kill switch went on, and the switch lets no DNS \
                 out but through the tunnel"
                    .to_owned(),
            );
        }
        pick(
            t.addrs.iter().map(|&a| SocketAddr::new(a, t.port)),
            t.family,
        )
        .ok_or_else(|| "no address of the requested family".to_owned())
    }

    /// The tun device exists: traffic into it is let out.
    pub(crate) fn tun_opened(&mut self, dev: &str) -> Result<(), KillSwitchError> {
        self.tun = Some(dev.to_owned());
        self.switch.update(&self.spec())?;
        info!("kill switch: traffic through {dev} is let out");
        Ok(())
    }

    /// A connection to `server` is up: keep its endpoint, and look the names up again
    /// through the tunnel (in the background; [`Guard::poll`] takes the answer).
    pub(crate) fn connected(&mut self, server: SocketAddr, tcp: bool) {
        self.current = Some(TunnelEndpoint {
            addr: server.ip(),
            port: server.port(),
            transport: if tcp { Transport::Tcp } else { Transport::Udp },
        });
        if self.refresh.is_some() {
            return;
        }
        let names: Vec<(usize, String, u16, RemoteFamily)> = self
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_name())
            .map(|(i, t)| (i, t.host.clone(), t.port, t.family))
            .collect();
        if names.is_empty() {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("kill-switch-dns".into())
            .spawn(move || {
                let found: Lookups = names
                    .into_iter()
                    .filter_map(
                        |(i, host, port, family)| match lookup(&host, port, family) {
                            Ok(a) => Some((i, a)),
                            Err(e) => {
                                debug!("kill switch: `{host}` did not resolve again: {e}");
                                None
                            }
                        },
                    )
                    .collect();
                let _ = tx.send(found);
            });
        match spawned {
            Ok(_) => self.refresh = Some(rx),
            Err(e) => debug!("kill switch: no thread to look the names up again: {e}"),
        }
    }

    /// Takes the answer of the background lookup, if it came: names whose addresses
    /// changed get their new endpoints (one transaction); on an error the old ones stay.
    pub(crate) fn poll(&mut self) {
        let Some(rx) = &self.refresh else {
            return;
        };
        let found = match rx.try_recv() {
            Ok(found) => found,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => Vec::new(),
        };
        self.refresh = None;
        let mut changed = false;
        for (i, addrs) in found {
            let Some(t) = self.targets.get_mut(i) else {
                continue;
            };
            if t.addrs != addrs {
                info!(
                    "kill switch: `{}` now resolves to {}; its endpoints follow",
                    t.host,
                    addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                t.addrs = addrs;
                changed = true;
            }
        }
        if changed && let Err(e) = self.switch.update(&self.spec()) {
            warn!("kill switch: could not let the new addresses out ({e}); the old ones stay");
        }
    }

    /// See [`KillSwitch::hand_over`].
    pub(crate) fn hand_over(&mut self) {
        self.switch.hand_over();
    }

    /// Turns the switch off (a clean exit).
    pub(crate) fn release(mut self) -> Result<(), KillSwitchError> {
        self.switch.release()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_proxy_or_the_server() {
        let udp = RemoteSpec::new("192.0.2.1", 1194, RemoteFamily::Any, false);
        let t = Target::of(&udp);
        assert_eq!(
            (t.host.as_str(), t.port, t.transport),
            ("192.0.2.1", 1194, Transport::Udp)
        );
        assert!(!t.is_name());
        let mut tcp = RemoteSpec::new("vpn.example", 443, RemoteFamily::V6, true);
        tcp.proxy = Some(crate::ProxySpec {
            host: "192.0.2.8".into(),
            port: 3128,
            kind: crate::ProxyKind::Socks5 { auth: None },
        });
        let t = Target::of(&tcp);
        assert_eq!(
            (t.host.as_str(), t.port, t.transport),
            ("192.0.2.8", 3128, Transport::Tcp)
        );
        // Literals resolve without DNS, filtered by the entry's family.
        assert_eq!(
            lookup("192.0.2.1", 1194, RemoteFamily::Any).expect("v4"),
            ["192.0.2.1".parse::<IpAddr>().expect("ip")]
        );
        assert!(lookup("192.0.2.1", 1194, RemoteFamily::V6).is_err());
        let mut t = Target::of(&udp);
        t.addrs = vec![
            "192.0.2.1".parse().expect("ip"),
            "2001:db8::1".parse().expect("ip"),
        ];
        let current = TunnelEndpoint {
            addr: "198.18.0.9".parse().expect("ip"),
            port: 1194,
            transport: Transport::Udp,
        };
        let spec = spec_for(&[t], Some("tun3"), Some(current));
        let shown: Vec<String> = spec.endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "192.0.2.1:1194/udp",
                "198.18.0.9:1194/udp",
                "[2001:db8::1]:1194/udp"
            ]
        );
        assert_eq!(spec.tun.as_deref(), Some("tun3"));
    }
}
