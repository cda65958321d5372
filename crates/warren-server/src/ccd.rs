//! Per-client settings at connect time: `client-config-dir` files and the user database's
//! subnets and pushes (`warren user set NAME --subnet NET --push OPT`), turned into what the
//! engine grants a client ([`AuthGrant`]); and the kernel routes for users' subnets.
//!
//! OpenVPN reads `DIR/<common name>`, else `DIR/DEFAULT`, at every connection (edits apply
//! to the next connect); `ccd-exclusive` refuses a client without its own file (`DEFAULT`
//! does not count, openvpn-ops.md §6.1, §6.5). A file warren cannot use entirely (a bad
//! line) refuses the client, with the file and line in the log.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::IpNet;
use tracing::{info, warn};
use warren_core::{Instant, PeerId};
use warren_driver::{AuthRequest, Authenticator, Kick};
use warren_openvpn::{AuthDecision, AuthGrant, Iroute};
use warren_store::{Store, UserSite};

/// `client-config-dir DIR` [`ccd-exclusive`].
#[derive(Debug, Clone)]
pub struct CcdDir {
    pub dir: PathBuf,
    pub exclusive: bool,
}

impl CcdDir {
    pub fn from_config(cfg: &warren_config::ServerConfig) -> Option<CcdDir> {
        cfg.client_config_dir.as_ref().map(|dir| CcdDir {
            dir: dir.clone(),
            exclusive: cfg.ccd_exclusive,
        })
    }

    /// The options for `identity`: its file, else `DEFAULT` (unless exclusive), else none.
    /// `Err` is why the client is refused.
    pub fn lookup(&self, identity: &str) -> Result<Option<warren_config::ClientOptions>, String> {
        let own = warren_config::ccd_file_name(identity)
            .filter(|n| n != "DEFAULT" || !self.exclusive)
            .map(|n| self.dir.join(n));
        let mut candidates = Vec::new();
        candidates.extend(own);
        if !self.exclusive {
            candidates.push(self.dir.join("DEFAULT"));
        }
        for path in candidates {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(format!(
                        "client-config-dir file {} cannot be read: {e}",
                        path.display()
                    ));
                }
            }
            info!(
                "reading client specific options for {identity:?} from {}",
                path.display()
            );
            return warren_config::load_client_options(&path)
                .map(Some)
                .map_err(|e| format!("client-config-dir: {e}"));
        }
        if self.exclusive {
            return Err(format!(
                "ccd-exclusive: no file {:?} in the client-config-dir {}",
                warren_config::ccd_file_name(identity).unwrap_or_default(),
                self.dir.display()
            ));
        }
        Ok(None)
    }
}

/// Adds a client-config-dir file's options to `grant`; `Err` refuses the client.
pub fn apply_options(
    o: &warren_config::ClientOptions,
    grant: &mut AuthGrant,
) -> Result<(), String> {
    if o.disable {
        return Err("disabled in its client-config-dir file (`disable`)".into());
    }
    if let Some((ip, _mask)) = o.ifconfig_push {
        grant.fixed_ip = Some(ip);
    }
    if let Some(p) = o.ifconfig_ipv6_push {
        grant.fixed_ip6 = Some((p.addr, p.len));
    }
    if o.push_reset {
        grant.push_reset = true;
    }
    grant.push.extend(o.push.iter().cloned());
    grant.iroutes.extend(
        o.iroutes
            .iter()
            .filter_map(|&(net, len)| Iroute::v4(net, len)),
    );
    grant.iroutes.extend(
        o.iroutes_ipv6
            .iter()
            .filter_map(|p| Iroute::v6(p.addr, p.len)),
    );
    Ok(())
}

/// Adds a user's subnets and pushes to `grant`.
pub fn apply_site(site: &UserSite, grant: &mut AuthGrant) {
    grant.push.extend(site.push.iter().cloned());
    grant
        .iroutes
        .extend(site.subnets.iter().filter_map(|n| match n {
            IpNet::V4(n) => Iroute::v4(n.network(), n.prefix_len()),
            IpNet::V6(n) => Iroute::v6(n.network(), n.prefix_len()),
        }));
}

/// The [`Authenticator`] of a server with a client-config-dir and no user database: the
/// certificate (checked by TLS) is enough, the file adds the client's settings.
#[derive(Debug)]
pub struct CcdAuth {
    ccd: CcdDir,
}

impl CcdAuth {
    pub fn new(ccd: CcdDir) -> CcdAuth {
        info!(
            "client-config-dir {}{}",
            ccd.dir.display(),
            if ccd.exclusive {
                " (ccd-exclusive: clients without a file are refused)"
            } else {
                ""
            }
        );
        CcdAuth { ccd }
    }
}

impl Authenticator for CcdAuth {
    fn authenticate(&mut self, _now: Instant, req: AuthRequest) -> AuthDecision {
        let mut grant = AuthGrant::default();
        let result = self.ccd.lookup(&req.common_name).and_then(|o| match o {
            Some(o) => apply_options(&o, &mut grant),
            None => Ok(()),
        });
        match result {
            Ok(()) => AuthDecision::Accept(grant),
            Err(why) => {
                warn!(
                    "login refused user={:?} addr={}: {why}",
                    req.common_name, req.addr
                );
                AuthDecision::Reject { reason: None }
            }
        }
    }

    fn connected(&mut self, _now: Instant, _peer_id: PeerId, _identity: &str, _ip: Ipv4Addr) {}

    fn disconnected(&mut self, _now: Instant, _peer_id: PeerId) {}

    fn recheck(&mut self, _now: Instant) -> Vec<Kick> {
        Vec::new()
    }
}

/// The kernel routes into the tun for the users' subnets, kept in step with the database
/// (on every change of its revision): what a server `route` line does for a
/// client-config-dir `iroute`.
#[derive(Debug)]
pub struct SubnetRoutes {
    dev: String,
    net: warren_net::NetState,
    installed: BTreeSet<IpNet>,
}

impl SubnetRoutes {
    pub fn new(dev: &str) -> SubnetRoutes {
        SubnetRoutes {
            dev: dev.to_owned(),
            net: warren_net::NetState::in_memory(),
            installed: BTreeSet::new(),
        }
    }

    fn spec(&self, n: &IpNet) -> warren_net::RouteSpec {
        warren_net::RouteSpec {
            dst: match n {
                IpNet::V4(n) => {
                    warren_net::IpNet::V4(warren_net::Ipv4Net::new(n.network(), n.prefix_len()))
                }
                IpNet::V6(n) => {
                    warren_net::IpNet::V6(warren_net::Ipv6Net::new(n.network(), n.prefix_len()))
                }
            },
            via: None,
            dev: Some(self.dev.clone()),
            metric: None,
        }
    }

    /// Adds the routes of subnets new in the database and removes those gone.
    pub fn sync(&mut self, store: &dyn Store) {
        let want: BTreeSet<IpNet> = match store.user_sites() {
            Ok(sites) => sites.into_iter().flat_map(|(_, s)| s.subnets).collect(),
            Err(e) => {
                warn!("cannot read the users' subnets: {e}");
                return;
            }
        };
        for gone in self
            .installed
            .difference(&want)
            .cloned()
            .collect::<Vec<_>>()
        {
            let spec = self.spec(&gone);
            match self.net.remove_route(&spec) {
                Ok(()) => info!("route {gone} dev {} removed (no user has it now)", self.dev),
                Err(e) => warn!("removing route {gone} dev {}: {e}", self.dev),
            }
            self.installed.remove(&gone);
        }
        for new in want
            .difference(&self.installed)
            .cloned()
            .collect::<Vec<_>>()
        {
            let spec = self.spec(&new);
            match self.net.add_route(&spec) {
                Ok(()) => info!("route {new} dev {} added (a user's subnet)", self.dev),
                Err(e @ warren_net::NetError::RouteExists { .. }) => {
                    warn!("user subnet {new}: {e}")
                }
                Err(e) => {
                    warn!("user subnet {new}: adding its route into {}: {e}", self.dev);
                    continue;
                }
            }
            self.installed.insert(new);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn files_default_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("site-a"),
            "iroute 192.168.77.0 255.255.255.0\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("DEFAULT"),
            "push \"route 10.1.0.0 255.255.0.0\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bad"),
            "push-reset\niroute 192.168.1.1 255.255.255.0\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("off"), "disable\n").unwrap();
        let ccd = CcdDir {
            dir: dir.path().to_path_buf(),
            exclusive: false,
        };
        let a = ccd.lookup("site-a").unwrap().unwrap();
        assert_eq!(a.iroutes, [(Ipv4Addr::new(192, 168, 77, 0), 24)]);
        let other = ccd.lookup("laptop").unwrap().unwrap();
        assert_eq!(other.push, ["route 10.1.0.0 255.255.0.0"]);
        let e = ccd.lookup("bad").unwrap_err();
        assert!(e.contains("/bad:2"), "{e}");
        let mut g = AuthGrant::default();
        assert!(apply_options(&ccd.lookup("off").unwrap().unwrap(), &mut g).is_err());
        let mut g = AuthGrant::default();
        apply_options(&a, &mut g).unwrap();
        assert_eq!(g.iroutes.len(), 1);

        let ex = CcdDir {
            exclusive: true,
            ..ccd.clone()
        };
        assert!(ex.lookup("site-a").unwrap().is_some());
        assert!(ex.lookup("laptop").unwrap_err().contains("ccd-exclusive"));
        assert!(ex.lookup("DEFAULT").is_err(), "DEFAULT does not count");
        let none = CcdDir {
            dir: dir.path().join("missing"),
            exclusive: false,
        };
        assert_eq!(none.lookup("x").unwrap(), None);
    }

    #[test]
    fn user_sites_become_iroutes_and_pushes() {
        let mut g = AuthGrant::default();
        apply_site(
            &UserSite {
                subnets: vec![
                    "192.168.50.0/24".parse().unwrap(),
                    "fd00:50::/64".parse().unwrap(),
                ],
                push: vec!["route 10.20.0.0 255.255.0.0".into()],
            },
            &mut g,
        );
        assert_eq!(
            g.iroutes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            ["192.168.50.0/24", "fd00:50::/64"]
        );
        assert_eq!(g.push, ["route 10.20.0.0 255.255.0.0"]);
    }
}
