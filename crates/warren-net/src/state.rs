//! The journal of applied changes.
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use netlink_packet_route::route::RouteType;
use tracing::{debug, warn};

use crate::dns::{self, DnsBackend, DnsSpec, DnsUndo};
use crate::ip::{Family, IpNet, Ipv4Net, NetError, PathInfo, RouteSpec};
use crate::journal::{self, DEFAULT_JOURNAL_DIR, JournalFile};
use crate::netlink::{self, NlError, Rtnl};

/// One applied change, with what is needed to take it back.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    Route(RouteSpec),
    /// An address added to a device (`ip addr add ADDR/PREFIX dev DEV`).
    Address(DeviceAddress),
    Dns(DnsUndo),
}

/// An address on a device: `addr/prefix dev dev` (the host bits are the address).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeviceAddress {
    pub dev: String,
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for DeviceAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} dev {}", self.addr, self.prefix, self.dev)
    }
}

impl Change {
    pub(crate) fn describe(&self) -> String {
        match self {
            Change::Route(r) => format!("route {r}"),
            Change::Address(a) => format!("address {a}"),
            Change::Dns(u) => u.describe(),
        }
    }
}

/// Changes made to the system, undone in reverse order by [`NetState::restore`] or on drop.
///
/// Only what this value added is ever removed: a route or address that already existed is
/// reported ([`NetError::RouteExists`], [`NetError::AddressExists`]) and left out of the
/// journal.
///
/// The journal is also kept on disk (see [`NetState::new`]) and rewritten before each
/// change, so that when the process dies without undoing (a crash, `kill -9`), the next
/// run undoes it with [`crate::recover_abandoned`].
#[derive(Debug)]
pub struct NetState {
    journal: Vec<Change>,
    store: Option<JournalFile>,
}

impl Default for NetState {
    fn default() -> Self {
        NetState::new()
    }
}

impl NetState {
    /// A state journaled in [`DEFAULT_JOURNAL_DIR`] (`/run/warren/net-<pid>.journal`).
    pub fn new() -> NetState {
        NetState::with_journal_dir(Path::new(DEFAULT_JOURNAL_DIR))
    }

    /// A state journaled in `dir` (created at the first change). If the journal cannot be
    /// written, a warning is logged and changes are still made and undone by this process.
    pub fn with_journal_dir(dir: &Path) -> NetState {
        NetState {
            journal: Vec::new(),
            store: Some(JournalFile::for_this_process(dir)),
        }
    }

    /// A state whose journal lives in memory only (nothing is recovered after a crash).
    pub fn in_memory() -> NetState {
        NetState {
            journal: Vec::new(),
            store: None,
        }
    }

    /// The journal of a dead client, to undo it.
    pub(crate) fn adopt(file: JournalFile, changes: Vec<Change>) -> NetState {
        NetState {
            journal: changes,
            store: Some(file),
        }
    }

    /// Hands the journal over to a privileged helper that will undo what it lists once
    /// this process is gone (`warren client` with `user`/`group`): the file on disk is
    /// written one last time and then left alone (this process may no longer write it),
    /// and the DNS changes leave the in-memory journal, so this process does not try to
    /// undo them itself (it may no longer write resolv.conf). Routes and addresses stay:
    /// this process still removes them (with CAP_NET_ADMIN), and the helper finds them gone.
    pub fn hand_over(&mut self) {
        self.save();
        self.store = None;
        self.journal
            .retain(|c| matches!(c, Change::Route(_) | Change::Address(_)));
    }

    fn save(&mut self) {
        self.save_with(&[]);
    }

    /// Writes the journal, plus `extra` (newer changes), to disk.
    fn save_with(&mut self, extra: &[Change]) {
        if let Some(store) = self.store.as_mut() {
            if extra.is_empty() {
                store.save(&self.journal);
            } else {
                let mut all = self.journal.clone();
                all.extend_from_slice(extra);
                store.save(&all);
            }
        }
    }

    fn journal_dir(&self) -> PathBuf {
        self.store.as_ref().map_or_else(
            || PathBuf::from(DEFAULT_JOURNAL_DIR),
            |s| s.dir().to_path_buf(),
        )
    }

    /// Checks that the kernel's routing interface can be reached (a clear error early
    /// rather than at the first route). The name is historical: routes no longer go
    /// through the `ip` command.
    pub fn check_ip(&self) -> Result<(), NetError> {
        open("open a netlink route socket").map(drop)
    }

    /// Where the kernel sends packets for `dst` now (`ip route get`), IPv4 or IPv6; `None`
    /// when it has no usable route.
    pub fn route_get(&self, dst: impl Into<IpAddr>) -> Result<Option<PathInfo>, NetError> {
        let dst = dst.into();
        let op = || format!("ip {} route get {dst}", Family::of(dst).flag());
        let mut nl = open(&op())?;
        let found = match nl.route_get(dst) {
            Ok(l) => l,
            // No route, or one that refuses: unreachable, prohibit, blackhole.
            Err(e)
                if matches!(
                    e.errno(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL)
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(kernel_error(op(), e)),
        };
        // Local, broadcast, multicast: not a path out of this machine either.
        if found.kind != RouteType::Unicast {
            return Ok(None);
        }
        let Some(oif) = found.oif else {
            return Ok(None);
        };
        let Some(dev) = nl.link_name(oif).map_err(|e| kernel_error(op(), e))? else {
            return Ok(None);
        };
        // An IPv4 route through an IPv6 next hop (RTA_VIA) is not one warren can pin.
        let gateway = found.gateway.filter(|g| Family::of(*g) == Family::of(dst));
        Ok(Some(PathInfo { gateway, dev }))
    }

    /// Journals a route, then adds it.
    pub fn add_route(&mut self, r: &RouteSpec) -> Result<(), NetError> {
        // Write-ahead: on disk before it exists. A crash before the kernel answers leaves
        // an entry whose delete finds nothing, or finds a route that someone else added in
        // that instant; the first is harmless and the second very unlikely.
        self.journal.push(Change::Route(r.clone()));
        self.save();
        let added = add_route(r);
        if added.is_err() {
            self.journal.pop();
            self.save();
        }
        added
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
        delete_route(r)?;
        self.journal.remove(i);
        self.save();
        Ok(())
    }

    /// Removes every IPv4 route of this state that goes through `dev` (they are re-added by
    /// the caller; the kernel drops such routes when the device's IPv4 address changes).
    /// IPv6 routes through a tun do not depend on its addresses and stay.
    pub fn remove_routes_on(&mut self, dev: &str) -> Result<(), NetError> {
        let on_dev: Vec<RouteSpec> = self
            .routes()
            .filter(|r| r.dev.as_deref() == Some(dev) && r.family() == Family::V4)
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
            _ => None,
        })
    }

    /// The addresses this state added, oldest first.
    pub fn addresses(&self) -> impl Iterator<Item = &DeviceAddress> {
        self.journal.iter().filter_map(|c| match c {
            Change::Address(a) => Some(a),
            _ => None,
        })
    }

    /// Journals an address, then adds it to `dev` (`ip addr add ADDR/PREFIX dev DEV
    /// [nodad]`). `nodad`: usable at once, without IPv6 duplicate address detection (what
    /// OpenVPN does on a tun, where no other node can hold the address). An address `dev`
    /// has already is reported ([`NetError::AddressExists`]) and not journaled.
    pub fn add_address(
        &mut self,
        dev: &str,
        addr: IpAddr,
        prefix: u8,
        nodad: bool,
    ) -> Result<(), NetError> {
        let a = DeviceAddress {
            dev: dev.to_owned(),
            addr,
            prefix: prefix.min(IpNet::host(addr).prefix()),
        };
        self.journal.push(Change::Address(a.clone()));
        self.save();
        let added = add_address(&a, nodad);
        if added.is_err() {
            self.journal.pop();
            self.save();
        }
        added
    }

    /// Removes an address this state added (no-op for any other).
    pub fn remove_address(&mut self, dev: &str, addr: IpAddr, prefix: u8) -> Result<(), NetError> {
        let Some(i) = self.journal.iter().rposition(|c| {
            matches!(c, Change::Address(a)
                if a.dev == dev && a.addr == addr && a.prefix == prefix.min(IpNet::host(addr).prefix()))
        }) else {
            return Ok(());
        };
        if let Change::Address(a) = &self.journal[i] {
            delete_address(a)?;
        }
        self.journal.remove(i);
        self.save();
        Ok(())
    }

    /// The addresses of `family` that device `dev` has now, as the kernel lists them
    /// (`ip addr show dev DEV`), whoever added them.
    pub fn device_addresses(
        &self,
        dev: &str,
        family: Family,
    ) -> Result<Vec<DeviceAddress>, NetError> {
        let op = format!("ip {} addr show dev {dev}", family.flag());
        let mut nl = open(&op)?;
        let index = device_index(&mut nl, dev, &op)?;
        let listed = nl
            .addresses(family == Family::V6, Some(index))
            .map_err(|e| kernel_error(op, e))?;
        Ok(listed
            .into_iter()
            .map(|a| DeviceAddress {
                dev: dev.to_owned(),
                addr: a.addr,
                prefix: a.prefix,
            })
            .collect())
    }

    /// The unicast routes of `family` in the main table now, as the kernel lists them
    /// (`ip route show table main`), whoever added them; `metric` is the kernel's (IPv6
    /// routes always have one).
    pub fn main_routes(&self, family: Family) -> Result<Vec<RouteSpec>, NetError> {
        let op = format!("ip {} route show table main", family.flag());
        let mut nl = open(&op)?;
        let listed = nl
            .routes(family == Family::V6)
            .map_err(|e| kernel_error(op.clone(), e))?;
        let mut out = Vec::new();
        for r in listed.into_iter().filter(|r| r.kind == RouteType::Unicast) {
            let dev = match r.oifs.first() {
                Some(&i) => nl.link_name(i).map_err(|e| kernel_error(op.clone(), e))?,
                None => None,
            };
            out.push(RouteSpec {
                dst: IpNet::new(r.dst, r.prefix),
                via: r.via,
                dev,
                metric: r.metric,
            });
        }
        Ok(out)
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
        let undo = dns::prepare(backend, dev, spec)?;
        if let DnsUndo::File { path, original, .. } = &undo
            && dns::is_generated(original)
            && !journal::live_writer_of(&self.journal_dir(), path, original)
        {
            // Taking this for the original would "restore" warren's own file on exit and
            // lose the user's DNS for good.
            dns::discard(&undo);
            let copies = dns::saved_copies(path);
            return Err(NetError::ResolvConfOrphaned {
                path: path.clone(),
                journal_dir: self.journal_dir(),
                hint: if copies.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (copies saved by earlier clients: {})",
                        copies
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            });
        }
        self.journal.push(Change::Dns(undo.clone()));
        self.save();
        if let Err(e) = dns::perform(&undo, spec, full_tunnel) {
            // Take back whatever part of it was made.
            if let Err(e2) = dns::undo(&undo) {
                warn!("could not take back the failed DNS change: {e2}");
            }
            self.journal.pop();
            self.save();
            return Err(e);
        }
        debug!("DNS set through {}", undo.describe());
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
        if let Change::Dns(u) = &self.journal[i] {
            dns::undo(u)?;
        }
        self.journal.remove(i);
        self.save();
        Ok(())
    }

    pub fn has_dns(&self) -> bool {
        self.journal.iter().any(|c| matches!(c, Change::Dns(_)))
    }

    /// Replaces the IPv4 address of a device this program owns (a tun device); not
    /// journaled, the device goes away with the program.
    pub fn set_address(&self, dev: &str, net: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        let prefix = Ipv4Net::new(net, prefix).prefix();
        let op = format!("ip -4 addr replace {net}/{prefix} dev {dev}");
        let mut nl = open(&op)?;
        let index = device_index(&mut nl, dev, &op)?;
        // `ip -4 addr flush dev DEV`, then `ip -4 addr add NET/PREFIX dev DEV`.
        debug!("netlink: ip -4 addr flush dev {dev}");
        let old = nl
            .addresses(false, Some(index))
            .map_err(|e| kernel_error(op.clone(), e))?;
        for a in old {
            match nl.addr_del(index, a.addr, a.prefix) {
                // A secondary address goes with its primary.
                Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {}
                r => r.map_err(|e| kernel_error(op.clone(), e))?,
            }
        }
        debug!(
            "netlink: {}",
            netlink::addr_command("add", IpAddr::V4(net), prefix, dev, false)
        );
        nl.addr_add(index, IpAddr::V4(net), prefix, false)
            .map_err(|e| kernel_error(op.clone(), e))?;
        debug!("netlink: ip link set dev {dev} up");
        nl.link_set(index, true, None)
            .map_err(|e| kernel_error(op, e))
    }

    /// Sets a device's MTU (not journaled; see [`NetState::set_address`]).
    pub fn set_mtu(&self, dev: &str, mtu: u16) -> Result<(), NetError> {
        let op = format!("ip link set dev {dev} mtu {mtu}");
        debug!("netlink: {op}");
        let mut nl = open(&op)?;
        let index = device_index(&mut nl, dev, &op)?;
        nl.link_set(index, false, Some(u32::from(mtu)))
            .map_err(|e| kernel_error(op, e))
    }

    pub fn is_empty(&self) -> bool {
        self.journal.is_empty()
    }

    /// Undoes every change, newest first. Carries on past failures (each is logged) and
    /// returns the first one; the changes that could not be undone stay in the on-disk
    /// journal for the next run's [`crate::recover_abandoned`].
    pub fn restore(&mut self) -> Result<(), NetError> {
        let mut first = None;
        // Newest first; written back oldest first.
        let mut failed: Vec<Change> = Vec::new();
        while let Some(c) = self.journal.pop() {
            let what = c.describe();
            let r = match &c {
                Change::Route(route) => delete_route(route),
                Change::Address(a) => delete_address(a),
                Change::Dns(u) => dns::undo(u),
            };
            match r {
                Ok(()) => debug!("restored {what}"),
                Err(e) => {
                    warn!("could not restore {what}: {e}");
                    failed.push(c);
                    first.get_or_insert(e);
                }
            }
            let kept: Vec<Change> = failed.iter().rev().cloned().collect();
            self.save_with(&kept);
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

/// Opens a netlink socket for `op` (the `ip` command it stands for, for the error).
fn open(op: &str) -> Result<Rtnl, NetError> {
    Rtnl::open().map_err(|e| kernel_error(op.to_owned(), e))
}

/// A failed netlink request as the error that names the fix.
pub(crate) fn kernel_error(op: String, e: NlError) -> NetError {
    match e.errno() {
        Some(libc::EPERM) => NetError::NeedsCapNetAdmin { command: op },
        _ => NetError::Kernel {
            op,
            source: e.source,
            detail: e.detail,
        },
    }
}

/// The index of device `dev`, or [`NetError::NoDevice`].
fn device_index(nl: &mut Rtnl, dev: &str, op: &str) -> Result<u32, NetError> {
    nl.link_index(dev)
        .map_err(|e| kernel_error(op.to_owned(), e))?
        .ok_or_else(|| NetError::NoDevice {
            dev: dev.to_owned(),
        })
}

/// A route spec as a netlink request, with its device resolved; `None` when the device
/// does not exist.
fn request(nl: &mut Rtnl, r: &RouteSpec, op: &str) -> Result<Option<netlink::Route>, NetError> {
    let oif = match &r.dev {
        Some(d) => match nl
            .link_index(d)
            .map_err(|e| kernel_error(op.to_owned(), e))?
        {
            Some(i) => Some(i),
            None => return Ok(None),
        },
        None => None,
    };
    if r.via.is_some_and(|g| Family::of(g) != r.family()) {
        return Err(NetError::MixedFamilies {
            route: r.to_string(),
        });
    }
    Ok(Some(netlink::Route {
        dst: r.dst.addr(),
        prefix: r.dst.prefix(),
        via: r.via,
        oif,
        metric: r.metric,
    }))
}

/// `ip route add` for `r`.
fn add_route(r: &RouteSpec) -> Result<(), NetError> {
    let op = format!("ip {} route add {r}", r.family().flag());
    debug!("netlink: {op}");
    let mut nl = open(&op)?;
    let Some(req) = request(&mut nl, r, &op)? else {
        return Err(NetError::NoDevice {
            dev: r.dev.clone().unwrap_or_default(),
        });
    };
    match nl.route_add(&req) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(libc::EEXIST) => Err(NetError::RouteExists {
            route: r.to_string(),
        }),
        Err(e) => Err(kernel_error(op, e)),
    }
}

/// `ip route del` for `r`; a route that is gone already (typically with its tun device)
/// is no error.
fn delete_route(r: &RouteSpec) -> Result<(), NetError> {
    let op = format!("ip {} route del {r}", r.family().flag());
    debug!("netlink: {op}");
    let mut nl = open(&op)?;
    let Some(req) = request(&mut nl, r, &op)? else {
        debug!("route {r} was already gone (no device)");
        return Ok(());
    };
    match nl.route_del(&req) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.errno(), Some(libc::ESRCH | libc::ENODEV)) => {
            debug!("route {r} was already gone");
            Ok(())
        }
        Err(e) => Err(kernel_error(op, e)),
    }
}

/// `ip addr add` for `a`.
fn add_address(a: &DeviceAddress, nodad: bool) -> Result<(), NetError> {
    let op = netlink::addr_command("add", a.addr, a.prefix, &a.dev, nodad);
    debug!("netlink: {op}");
    let mut nl = open(&op)?;
    let index = device_index(&mut nl, &a.dev, &op)?;
    match nl.addr_add(index, a.addr, a.prefix, nodad) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(libc::EEXIST) => Err(NetError::AddressExists {
            address: a.to_string(),
        }),
        // The kernel's answer when IPv6 is off on the device (or everywhere).
        Err(e) if e.errno() == Some(libc::EACCES) && a.addr.is_ipv6() => {
            Err(NetError::Ipv6Disabled { dev: a.dev.clone() })
        }
        Err(e) => Err(kernel_error(op, e)),
    }
}

/// `ip addr del` for `a`; an address that is gone already (with its device, or removed by
/// hand) is no error.
fn delete_address(a: &DeviceAddress) -> Result<(), NetError> {
    let op = netlink::addr_command("del", a.addr, a.prefix, &a.dev, false);
    debug!("netlink: {op}");
    let mut nl = open(&op)?;
    let Some(index) = nl
        .link_index(&a.dev)
        .map_err(|e| kernel_error(op.clone(), e))?
    else {
        debug!("address {a} was already gone (no device)");
        return Ok(());
    };
    match nl.addr_del(index, a.addr, a.prefix) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.errno(), Some(libc::EADDRNOTAVAIL | libc::ENODEV)) => {
            debug!("address {a} was already gone");
            Ok(())
        }
        Err(e) => Err(kernel_error(op, e)),
    }
}
