//! The journal of applied changes.
use std::net::Ipv4Addr;
use std::path::PathBuf;

use tracing::{debug, warn};

use crate::dns::{self, DnsBackend, DnsSpec, DnsUndo};
use crate::ip::{self, Ipv4Net, NetError, PathInfo, RouteSpec};

/// One applied change, with what is needed to take it back.
#[derive(Debug)]
enum Change {
    Route(RouteSpec),
    Dns(DnsUndo),
}

/// Changes made to the system, undone in reverse order by [`NetState::restore`] or on drop.
///
/// Only what this value added is ever removed: a route that already existed is reported
/// ([`NetError::RouteExists`]) and left out of the journal.
#[derive(Debug)]
pub struct NetState {
    ip: PathBuf,
    journal: Vec<Change>,
}

impl Default for NetState {
    fn default() -> Self {
        NetState::new()
    }
}

impl NetState {
    pub fn new() -> NetState {
        NetState {
            ip: ip::ip_binary(),
            journal: Vec::new(),
        }
    }

    fn ip(&self, args: &[&str]) -> Result<String, NetError> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        ip::run(&self.ip, &args)
    }

    /// Checks that `ip` can be run (a clear error early rather than at the first route).
    pub fn check_ip(&self) -> Result<(), NetError> {
        self.ip(&["-V"]).map(|_| ())
    }

    /// Where the kernel sends packets for `dst` now (`ip -4 route get`); `None` when it has
    /// no usable route.
    pub fn route_get(&self, dst: Ipv4Addr) -> Result<Option<PathInfo>, NetError> {
        match self.ip(&["-4", "route", "get", &dst.to_string()]) {
            Ok(out) => Ok(ip::parse_route_get(&out)),
            Err(NetError::Command { stderr, .. }) if stderr.contains("unreachable") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds a route and journals it.
    pub fn add_route(&mut self, r: &RouteSpec) -> Result<(), NetError> {
        let mut args = vec!["-4".to_owned(), "route".to_owned(), "add".to_owned()];
        args.extend(r.args());
        match ip::run(&self.ip, &args) {
            Ok(_) => {
                self.journal.push(Change::Route(r.clone()));
                Ok(())
            }
            Err(NetError::Command { stderr, .. }) if stderr.contains("File exists") => {
                Err(NetError::RouteExists {
                    route: r.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Removes a route this state added (no-op for any other route).
    pub fn remove_route(&mut self, r: &RouteSpec) -> Result<(), NetError> {
        let Some(i) = self
            .journal
            .iter()
            .rposition(|c| matches!(c, Change::Route(x) if x == r))
        else {
            return Ok(());
        };
        self.journal.remove(i);
        self.delete_route(r)
    }

    fn delete_route(&self, r: &RouteSpec) -> Result<(), NetError> {
        let mut args = vec!["-4".to_owned(), "route".to_owned(), "del".to_owned()];
        args.extend(r.args());
        match ip::run(&self.ip, &args) {
            Ok(_) => Ok(()),
            // Gone already, typically with its tun device.
            Err(NetError::Command { stderr, .. })
                if stderr.contains("No such process") || stderr.contains("Cannot find device") =>
            {
                debug!("route {r} was already gone");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Removes every route of this state that goes through `dev` (they are re-added by the
    /// caller; the kernel drops such routes when the device's address changes).
    pub fn remove_routes_on(&mut self, dev: &str) -> Result<(), NetError> {
        let on_dev: Vec<RouteSpec> = self
            .routes()
            .filter(|r| r.dev.as_deref() == Some(dev))
            .cloned()
            .collect();
        for r in on_dev.iter().rev() {
            self.remove_route(r)?;
        }
        Ok(())
    }

    /// The routes this state added, oldest first.
    pub fn routes(&self) -> impl Iterator<Item = &RouteSpec> {
        self.journal.iter().filter_map(|c| match c {
            Change::Route(r) => Some(r),
            Change::Dns(_) => None,
        })
    }

    /// Points the resolver at `spec` for tun `dev`, replacing an earlier DNS change of this
    /// state. `full_tunnel`: all queries should go to these servers.
    pub fn set_dns(
        &mut self,
        backend: &DnsBackend,
        dev: &str,
        spec: &DnsSpec,
        full_tunnel: bool,
    ) -> Result<(), NetError> {
        self.clear_dns()?;
        let undo = dns::apply(backend, dev, spec, full_tunnel)?;
        debug!("DNS set through {}", undo.describe());
        self.journal.push(Change::Dns(undo));
        Ok(())
    }

    /// Takes back the DNS change, if any.
    pub fn clear_dns(&mut self) -> Result<(), NetError> {
        let Some(i) = self
            .journal
            .iter()
            .rposition(|c| matches!(c, Change::Dns(_)))
        else {
            return Ok(());
        };
        match self.journal.remove(i) {
            Change::Dns(u) => dns::undo(u),
            Change::Route(_) => Ok(()),
        }
    }

    pub fn has_dns(&self) -> bool {
        self.journal.iter().any(|c| matches!(c, Change::Dns(_)))
    }

    /// Replaces the IPv4 address of a device this program owns (a tun device); not
    /// journaled, the device goes away with the program.
    pub fn set_address(&self, dev: &str, net: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        self.ip(&["-4", "addr", "flush", "dev", dev])?;
        let cidr = format!("{net}/{}", Ipv4Net::new(net, prefix).prefix());
        self.ip(&["-4", "addr", "add", &cidr, "dev", dev])?;
        self.ip(&["link", "set", "dev", dev, "up"]).map(|_| ())
    }

    /// Sets a device's MTU (not journaled; see [`NetState::set_address`]).
    pub fn set_mtu(&self, dev: &str, mtu: u16) -> Result<(), NetError> {
        self.ip(&["link", "set", "dev", dev, "mtu", &mtu.to_string()])
            .map(|_| ())
    }

    pub fn is_empty(&self) -> bool {
        self.journal.is_empty()
    }

    /// Undoes every change, newest first. Carries on past failures (each is logged) and
    /// returns the first one.
    pub fn restore(&mut self) -> Result<(), NetError> {
        let mut first = None;
        while let Some(c) = self.journal.pop() {
            let (what, r) = match c {
                Change::Route(route) => {
                    let r = self.delete_route(&route);
                    (format!("route {route}"), r)
                }
                Change::Dns(u) => {
                    let what = u.describe();
                    (what, dns::undo(u))
                }
            };
            match r {
                Ok(()) => debug!("restored {what}"),
                Err(e) => {
                    warn!("could not restore {what}: {e}");
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for NetState {
    fn drop(&mut self) {
        if !self.journal.is_empty() {
            // Errors were logged one by one.
            let _ = self.restore();
        }
    }
}
