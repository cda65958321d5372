//! The server side: masquerading VPN clients out of the server's uplink (`warren-nat on`,
//! `--full-tunnel`), and its exact undo.
//!
//! What is added, and nothing else:
//!
//! * one nftables table of warren's own, `inet warren-<tun>` (one per tun device, so two
//!   servers in one network namespace never share one), holding a `nat` chain on the
//!   `postrouting` hook (priority `srcnat`) with, for each VPN network and uplink,
//!   `ip saddr <VPN network> oifname <uplink> counter masquerade`, and the same with
//!   `ip6 saddr` for each IPv6 VPN network (the `inet` family holds both). Other tables are never read
//!   for anything but the name check, nor changed. The table is created with `nft create`, so
//!   a table of that name that is not warren's (or that a lost journal forgot) is refused,
//!   never adopted;
//! * forwarding on exactly the devices a forwarded packet comes in on: the tun (clients'
//!   packets) and each uplink (the replies). IPv4 forwarding is decided per *input*
//!   device (`net.ipv4.conf.<dev>.forwarding`, kernel route.c `IN_DEV_FORWARD`);
//!   `net.ipv4.ip_forward` is only the switch that sets every device's flag at once, and
//!   warren leaves it alone, so other interfaces keep not forwarding. IPv6 is different:
//!   `net.ipv6.conf.<dev>.forwarding` does not make a device forward (it only makes it act
//!   as a router, which stops it taking router advertisements); the kernel forwards IPv6
//!   when `net.ipv6.conf.all.forwarding` is 1 or, since Linux 6.17, when the input
//!   device's `force_forwarding` is (ip6_output.c `ip6_forward`). So with an IPv6 VPN
//!   network warren sets `net.ipv6.conf.<dev>.force_forwarding` on the same devices as
//!   for IPv4 where the kernel has it, and only on older kernels the global
//!   `net.ipv6.conf.all.forwarding` (as every OpenVPN howto does), with a warning about
//!   what that switch also does. A flag that is already 1 is not touched (nor recorded);
//!   one that warren set to 1 is put back to its previous value at exit, unless someone
//!   else changed it meanwhile, or a live warren server in the same namespace still needs
//!   it.
//!
//! Like the client's [`crate::NetState`], every change is written to a journal first
//! (`/run/warren/nat-<pid>.journal`: owner pid, its start time and network namespace, then
//! one line per change), so a server killed with SIGKILL is cleaned up by the next start:
//! [`recover_abandoned_nat`] deletes the stale table and restores the sysctls of dead
//! servers in this network namespace, before anything new is set up. [`Nat`] undoes its
//! changes in reverse order on [`Nat::restore`] and on `Drop` (error paths, panics).
//!
//! Tables go through the `nft` binary (the `nftables` crate's JSON interface, nftables
//! ≥ 0.9.3), sysctls through `/proc/sys/net`, which is per network namespace: the values
//! read and written are always those of the namespace the server runs in.
use std::borrow::Cow;
use std::fmt;
use std::fs;
use std::io;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Counter, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::ip::{Ipv4Net, Ipv6Net, NetError};
use crate::journal::{self, Owner, decode_journal, hex, unhex_text};
use crate::netlink::Rtnl;
use crate::nft::{Nft, NftFailure};
use crate::state::kernel_error;

const MAGIC: &str = "warren-nat-journal 1";
const PREFIX: &str = "nat-";
const SUFFIX: &str = ".journal";
/// The chain inside warren's table.
const CHAIN: &str = "postrouting";
/// nft's `srcnat` priority for the postrouting hook.
const SRCNAT_PRIORITY: i32 = 100;

/// Errors of the NAT setup and undo, each naming the fix where there is one.
#[derive(Debug, Error)]
pub enum NatError {
    #[error(
        "the `nft` command was not found: install the nftables package (warren's NAT needs it)"
    )]
    NftMissing,
    #[error("`nft` ({action}): permission denied: NAT needs CAP_NET_ADMIN (run as root)")]
    NeedsCapNetAdmin { action: String },
    #[error("`nft` failed ({action}): {detail}")]
    Nft { action: String, detail: String },
    #[error(
        "an nftables table `inet {name}` already exists and no warren journal says it is a \
         leftover; remove it (`nft delete table inet {name}`) if no warren server uses it, or \
         use another tun device name"
    )]
    TableExists { name: String },
    #[error("{}: {source}{hint}", path.display())]
    Sysctl {
        path: PathBuf,
        source: io::Error,
        hint: &'static str,
    },
    #[error(
        "no IPv4 default route, so the uplink to masquerade VPN clients out of is unknown: add a \
         default route, or name the uplink (`warren-nat on eth0`, `--nat-uplink eth0`)"
    )]
    NoUplink,
    #[error("starting the NAT undo helper (for after the privilege drop): {0}")]
    Helper(io::Error),
    #[error(
        "the NAT undo helper did not undo everything within {0:?}; what is left is in the \
         journal, and the next start removes it"
    )]
    HelperIncomplete(Duration),
    #[error(transparent)]
    Net(#[from] NetError),
}

/// The global IPv6 forwarding switch, for kernels without per-device `force_forwarding`.
const IPV6_ALL_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Whether this kernel forwards IPv6 per input device (`force_forwarding`, Linux 6.17).
fn ipv6_forwards_per_device() -> bool {
    Path::new("/proc/sys/net/ipv6/conf/all/force_forwarding").exists()
}

/// How long [`Nat::restore`] waits for a helper (see [`Nat::delegate_undo`]).
const HELPER_WAIT: Duration = Duration::from_secs(15);

/// What to masquerade: the VPN networks, the tun they come in on, the uplinks they leave by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatSpec {
    /// The server's tun device.
    pub tun: String,
    /// The devices traffic leaves by (see [`default_uplinks`]).
    pub uplinks: Vec<String>,
    /// The IPv4 VPN network(s).
    pub v4: Vec<Ipv4Net>,
    /// The IPv6 VPN network(s) (`server-ipv6`).
    pub v6: Vec<Ipv6Net>,
}

impl NatSpec {
    /// The name of warren's table for this tun: `warren-<tun>`.
    pub fn table_name(&self) -> String {
        format!("warren-{}", self.tun)
    }

    /// The sysctls that must read 1: forwarding on the tun and on every uplink, per
    /// address family in use (for IPv6 per device where this kernel can, see the module
    /// documentation).
    pub fn forwarding_sysctls(&self) -> Vec<PathBuf> {
        self.forwarding_sysctls_for(ipv6_forwards_per_device())
    }

    /// [`NatSpec::forwarding_sysctls`] for a kernel with (`per_device6`) or without
    /// `force_forwarding`.
    fn forwarding_sysctls_for(&self, per_device6: bool) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let devs = || std::iter::once(&self.tun).chain(&self.uplinks);
        let mut push = |p: PathBuf| {
            if !out.contains(&p) {
                out.push(p);
            }
        };
        if !self.v4.is_empty() {
            for dev in devs() {
                push(PathBuf::from(format!(
                    "/proc/sys/net/ipv4/conf/{dev}/forwarding"
                )));
            }
        }
        if !self.v6.is_empty() {
            if per_device6 {
                for dev in devs() {
                    push(PathBuf::from(format!(
                        "/proc/sys/net/ipv6/conf/{dev}/force_forwarding"
                    )));
                }
            } else {
                push(PathBuf::from(IPV6_ALL_FORWARDING));
            }
        }
        out
    }

    /// The nft batch that creates the table, its chain and the masquerade rules.
    pub fn ruleset(&self) -> Nftables<'static> {
        let table = self.table_name();
        let mut objs = vec![
            NfObject::CmdObject(NfCmd::Create(NfListObject::Table(Table {
                family: NfFamily::INet,
                name: Cow::Owned(table.clone()),
                handle: None,
            }))),
            NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(Chain {
                family: NfFamily::INet,
                table: Cow::Owned(table.clone()),
                name: Cow::Borrowed(CHAIN),
                _type: Some(NfChainType::NAT),
                hook: Some(NfHook::Postrouting),
                prio: Some(SRCNAT_PRIORITY),
                policy: Some(NfChainPolicy::Accept),
                ..Chain::default()
            }))),
        ];
        let sources = self
            .v4
            .iter()
            .map(|n| ("ip", n.addr().to_string(), n.prefix()))
            .chain(
                self.v6
                    .iter()
                    .map(|n| ("ip6", n.addr().to_string(), n.prefix())),
            );
        for (proto, addr, len) in sources {
            for up in &self.uplinks {
                let expr = vec![
                    Statement::Match(Match {
                        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
                            PayloadField {
                                protocol: Cow::Borrowed(proto),
                                field: Cow::Borrowed("saddr"),
                            },
                        ))),
                        right: Expression::Named(NamedExpression::Prefix(Prefix {
                            addr: Box::new(Expression::String(Cow::Owned(addr.clone()))),
                            len: u32::from(len),
                        })),
                        op: Operator::EQ,
                    }),
                    Statement::Match(Match {
                        left: Expression::Named(NamedExpression::Meta(Meta {
                            key: MetaKey::Oifname,
                        })),
                        right: Expression::String(Cow::Owned(up.clone())),
                        op: Operator::EQ,
                    }),
                    Statement::Counter(Counter::Anonymous(None)),
                    Statement::Masquerade(None),
                ];
                objs.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
                    family: NfFamily::INet,
                    table: Cow::Owned(table.clone()),
                    chain: Cow::Borrowed(CHAIN),
                    expr: Cow::Owned(expr),
                    handle: None,
                    index: None,
                    comment: Some(Cow::Owned(format!(
                        "warren: VPN clients of {} out of {up}",
                        self.tun
                    ))),
                }))));
            }
        }
        Nftables {
            objects: Cow::Owned(objs),
        }
    }
}

/// The devices of the IPv4 default routes of the main table (`ip -4 route show default`),
/// in order, without repeats (a multipath route gives each next hop's); empty when there
/// is none.
pub fn default_uplinks() -> Result<Vec<String>, NatError> {
    default_devs(false)
}

/// The devices of the IPv6 default routes of the main table (`ip -6 route show default`),
/// like [`default_uplinks`]. A server masquerading both families puts the union of both
/// lists in [`NatSpec::uplinks`].
pub fn default_uplinks_v6() -> Result<Vec<String>, NatError> {
    default_devs(true)
}

fn default_devs(v6: bool) -> Result<Vec<String>, NatError> {
    let op = format!("ip {} route show default", if v6 { "-6" } else { "-4" });
    let mut nl = Rtnl::open().map_err(|e| kernel_error(op.clone(), e))?;
    let routes = nl.routes(v6).map_err(|e| kernel_error(op.clone(), e))?;
    let mut indexes: Vec<u32> = Vec::new();
    for r in routes.iter().filter(|r| r.prefix == 0) {
        for &i in &r.oifs {
            if !indexes.contains(&i) {
                indexes.push(i);
            }
        }
    }
    let mut devs = Vec::new();
    for i in indexes {
        // A device that went away meanwhile is no uplink.
        if let Some(name) = nl.link_name(i).map_err(|e| kernel_error(op.clone(), e))? {
            devs.push(name);
        }
    }
    Ok(devs)
}

/// One change made for NAT, with what is needed to take it back.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NatChange {
    /// `inet <name>` was (or may have been) created.
    Table { name: String },
    /// `path` read `prev` and was (or may have been) set to `written`.
    Sysctl {
        path: PathBuf,
        prev: String,
        written: String,
    },
}

impl fmt::Display for NatChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatChange::Table { name } => write!(f, "nftables table inet {name}"),
            NatChange::Sysctl { path, prev, .. } => {
                write!(f, "{} back to {prev}", sysctl_name(path))
            }
        }
    }
}

/// `/proc/sys/net/ipv4/conf/eth0/forwarding` → `net.ipv4.conf.eth0.forwarding`.
fn sysctl_name(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.strip_prefix("/proc/sys/").unwrap_or(&s).replace('/', ".")
}

fn encode(owner: &Owner, changes: &[NatChange]) -> String {
    let mut s = format!("{MAGIC}\n{}\n", owner.line());
    for c in changes {
        match c {
            NatChange::Table { name } => {
                s.push_str(&format!("table inet {}\n", hex(name.as_bytes())))
            }
            NatChange::Sysctl {
                path,
                prev,
                written,
            } => s.push_str(&format!(
                "sysctl {} {} {}\n",
                hex(path.to_string_lossy().as_bytes()),
                hex(prev.as_bytes()),
                hex(written.as_bytes())
            )),
        }
    }
    s
}

fn decode(text: &str) -> Option<(Owner, Vec<NatChange>)> {
    decode_journal(text, MAGIC, |f| {
        Some(match f {
            ["table", "inet", name] => NatChange::Table {
                name: unhex_text(name)?,
            },
            ["sysctl", path, prev, written] => {
                let path = PathBuf::from(unhex_text(path)?);
                // Only forwarding flags under /proc/sys/net are ever written: a journal
                // cannot be used to write elsewhere.
                if !path.starts_with("/proc/sys/net/") || path.components().count() > 8 {
                    return None;
                }
                NatChange::Sysctl {
                    path,
                    prev: unhex_text(prev)?,
                    written: unhex_text(written)?,
                }
            }
            _ => return None,
        })
    })
}

/// The NAT journals in `dir`: (file, owner, changes), skipping what does not parse.
fn journals(dir: &Path) -> Vec<(PathBuf, Owner, Vec<NatChange>)> {
    crate::journal::read_journals(dir, PREFIX, "warren NAT journal", decode)
}

/// The NAT of one server: created by [`Nat::apply`], undone by [`Nat::restore`] or on drop.
#[derive(Debug)]
pub struct Nat {
    nft: Nft,
    dir: PathBuf,
    file: PathBuf,
    owner: Owner,
    changes: Vec<NatChange>,
    /// Set after the first failed journal write, so the warning is logged once.
    journal_failed: bool,
    /// The privileged process that undoes this NAT once our end of its stdin closes.
    helper: Option<Child>,
}

impl Nat {
    /// Sets up `spec`, journaled in `dir` (`/run/warren` normally). On an error, what was
    /// already added is undone before returning.
    pub fn apply(spec: &NatSpec, dir: &Path) -> Result<Nat, NatError> {
        let owner = Owner::current();
        let mut nat = Nat {
            nft: Nft::find(),
            dir: dir.to_path_buf(),
            file: dir.join(format!("{PREFIX}{}{SUFFIX}", owner.pid())),
            owner,
            changes: Vec::new(),
            journal_failed: false,
            helper: None,
        };
        let table = spec.table_name();
        if nat.table_exists(&table)? {
            return Err(NatError::TableExists { name: table });
        }
        // Journal first: if warren dies between the two, the next start deletes a table
        // that may exist; it never misses one that does.
        nat.changes.push(NatChange::Table {
            name: table.clone(),
        });
        nat.save();
        if let Err(e) = nat.nft.apply(&spec.ruleset()) {
            return Err(nft_error(e, "creating warren's NAT table"));
        }
        for path in spec.forwarding_sysctls() {
            let prev = read_sysctl(&path)?;
            if path == Path::new(IPV6_ALL_FORWARDING) && prev != "1" {
                warn!(
                    "this kernel has no per-device IPv6 forwarding (force_forwarding, Linux \
                     6.17): setting net.ipv6.conf.all.forwarding=1, which makes every interface \
                     forward IPv6 and stop taking router advertisements where accept_ra=1 (set \
                     accept_ra=2 on an uplink configured by SLAAC); put back at exit"
                );
            }
            if prev == "1" {
                debug!("{} is already 1", sysctl_name(&path));
                continue;
            }
            nat.changes.push(NatChange::Sysctl {
                path: path.clone(),
                prev,
                written: "1".into(),
            });
            nat.save();
            write_sysctl(&path, "1")?;
        }
        info!(
            "NAT on: {} masqueraded out of {} (nftables table inet {table}{})",
            spec.v4
                .iter()
                .map(ToString::to_string)
                .chain(spec.v6.iter().map(ToString::to_string))
                .collect::<Vec<_>>()
                .join(", "),
            spec.uplinks.join(", "),
            nat.changes
                .iter()
                .filter_map(|c| match c {
                    NatChange::Sysctl { path, .. } => Some(sysctl_name(path)),
                    NatChange::Table { .. } => None,
                })
                .fold(String::new(), |acc, s| acc + "; " + &s + "=1")
        );
        Ok(nat)
    }

    /// What is in place, oldest first, as text ("nftables table inet warren-tun0", ...).
    pub fn describe(&self) -> Vec<String> {
        self.changes.iter().map(ToString::to_string).collect()
    }

    /// Hands the undo to `helper`, started now, while this process still has
    /// CAP_NET_ADMIN: for a server about to drop its privileges (`user`), which could not
    /// delete the table or reset the sysctls itself (and `nft`, a child, would not inherit
    /// a capability kept across the drop). The helper must run [`undo_when_stdin_closes`]
    /// with this process's pid; it waits on a pipe that closes when this process ends (also
    /// on SIGKILL) or calls [`Nat::restore`], and then undoes the journal. It runs in a
    /// process group of its own, so a Ctrl-C meant for the server does not stop it first
    /// (warren's helper also blocks SIGTERM, for a stop that signals a whole cgroup).
    pub fn delegate_undo(&mut self, mut helper: Command) -> Result<(), NatError> {
        use std::os::unix::process::CommandExt;
        let child = helper
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(NatError::Helper)?;
        debug!("NAT undo helper started, pid {}", child.id());
        self.helper = Some(child);
        Ok(())
    }

    /// Undoes every change, newest first. What fails stays in the journal (for the next
    /// start), and the first failure is returned. With a helper ([`Nat::delegate_undo`]),
    /// the helper does it and this waits for it (at most 15 s).
    pub fn restore(&mut self) -> Result<(), NatError> {
        if let Some(mut child) = self.helper.take() {
            // EOF on the helper's stdin: its signal to undo.
            drop(child.stdin.take());
            // Bounded by a count of short sleeps (no clock here).
            let step = Duration::from_millis(20);
            for _ in 0..HELPER_WAIT.as_millis() / step.as_millis() {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(step);
            }
            self.changes.clear();
            return if self.file.exists() {
                Err(NatError::HelperIncomplete(HELPER_WAIT))
            } else {
                Ok(())
            };
        }
        let mut first = None;
        let mut kept = Vec::new();
        while let Some(c) = self.changes.pop() {
            match self.undo(&c) {
                Ok(()) => debug!("undone: {c}"),
                Err(e) => {
                    warn!("could not undo {c}: {e}");
                    first.get_or_insert(e);
                    kept.push(c);
                }
            }
            // The journal lists what may still be in place: the rest, and the failures.
            let mut left = self.changes.clone();
            left.extend(kept.iter().rev().cloned());
            self.save_list(&left);
        }
        kept.reverse();
        self.changes = kept;
        first.map_or(Ok(()), Err)
    }

    fn undo(&self, c: &NatChange) -> Result<(), NatError> {
        match c {
            NatChange::Table { name } => self.delete_table(name),
            NatChange::Sysctl {
                path,
                prev,
                written,
            } => {
                if let Some(pid) = self.still_needed_by(path) {
                    info!(
                        "leaving {}=1: warren server {pid} in this network namespace still uses it",
                        sysctl_name(path)
                    );
                    return Ok(());
                }
                let now = match fs::read_to_string(path) {
                    Ok(s) => s.trim().to_owned(),
                    // The device is gone (the tun closed): its settings went with it.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(source) => {
                        return Err(NatError::Sysctl {
                            path: path.clone(),
                            source,
                            hint: "",
                        });
                    }
                };
                if &now != written {
                    warn!(
                        "{} is {now}, not the {written} warren set: changed by someone else, \
                         left alone",
                        sysctl_name(path)
                    );
                    return Ok(());
                }
                match write_sysctl(path, prev) {
                    Err(NatError::Sysctl { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        Ok(())
                    }
                    r => r,
                }
            }
        }
    }

    /// A live warren server in this network namespace (not this one) whose journal lists
    /// `path`: its forwarding must stay on.
    fn still_needed_by(&self, path: &Path) -> Option<u32> {
        let netns = journal::current_netns();
        journals(&self.dir)
            .into_iter()
            .find_map(|(file, owner, changes)| {
                (file != self.file
                    && owner.netns() == netns
                    && owner.alive()
                    && changes
                        .iter()
                        .any(|c| matches!(c, NatChange::Sysctl { path: p, .. } if p == path)))
                .then(|| owner.pid())
            })
    }

    fn table_exists(&self, name: &str) -> Result<bool, NatError> {
        self.nft
            .inet_table_exists(name)
            .map_err(|e| nft_error(e, "listing tables"))
    }

    /// Never created (died before `nft` ran) or deleted by hand: nothing to undo.
    fn delete_table(&self, name: &str) -> Result<(), NatError> {
        self.nft
            .delete_inet_table(name)
            .map_err(|e| nft_error(e, "deleting warren's NAT table"))
    }

    fn save(&mut self) {
        let list = self.changes.clone();
        self.save_list(&list);
    }

    fn save_list(&mut self, changes: &[NatChange]) {
        let r = if changes.is_empty() {
            match fs::remove_file(&self.file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            let tmp = self
                .dir
                .join(format!(".{PREFIX}{}{SUFFIX}.tmp", self.owner.pid()));
            journal::write_atomic(&self.dir, &tmp, &self.file, &encode(&self.owner, changes))
        };
        match r {
            Ok(()) => self.journal_failed = false,
            Err(e) if !self.journal_failed => {
                self.journal_failed = true;
                warn!(
                    "cannot write the NAT journal {}: {e}; if warren is killed, its NAT table \
                     and forwarding settings will not be undone by the next start",
                    self.file.display()
                );
            }
            Err(_) => {}
        }
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        if !self.changes.is_empty()
            && let Err(e) = self.restore()
        {
            warn!(
                "NAT not fully undone ({e}); the rest is in {} for the next start",
                self.file.display()
            );
        }
    }
}

/// The helper's side of [`Nat::delegate_undo`]: waits until stdin reaches end of file
/// (the server ended or restored), then undoes the NAT journal of server `pid` in `dir`,
/// in this network namespace. Returns what was undone.
pub fn undo_when_stdin_closes(pid: u32, dir: &Path) -> Result<Vec<String>, NatError> {
    let mut sink = [0u8; 64];
    let mut stdin = io::stdin().lock();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let file = dir.join(format!("{PREFIX}{pid}{SUFFIX}"));
    let Some((owner, changes)) = fs::read_to_string(&file).ok().as_deref().and_then(decode) else {
        // Nothing journaled (or already undone).
        return Ok(Vec::new());
    };
    if owner.pid() != pid || owner.netns() != journal::current_netns() {
        return Ok(Vec::new());
    }
    let undone = changes.iter().rev().map(ToString::to_string).collect();
    let mut nat = Nat {
        nft: Nft::find(),
        dir: dir.to_path_buf(),
        file,
        owner,
        changes,
        journal_failed: false,
        helper: None,
    };
    let r = nat.restore();
    nat.changes.clear();
    r.map(|()| undone)
}

/// [`recover_abandoned_nat_in`] on `/run/warren`.
pub fn recover_abandoned_nat() -> Result<Vec<String>, NatError> {
    recover_abandoned_nat_in(Path::new(journal::DEFAULT_JOURNAL_DIR))
}

/// Undoes the NAT of warren servers in this network namespace that died without undoing
/// it (crash, `kill -9`): their tables are deleted and the forwarding flags they set put
/// back. Run it before setting anything up. Live servers and other namespaces are left
/// alone; journals of namespaces that no longer exist are removed. Returns what was undone.
pub fn recover_abandoned_nat_in(dir: &Path) -> Result<Vec<String>, NatError> {
    let netns = journal::current_netns();
    let mut undone = Vec::new();
    let mut first = None;
    for (file, owner, changes) in journals(dir) {
        if owner.alive() {
            continue;
        }
        if owner.netns() != netns {
            if journal::netns_gone(owner.netns()) {
                // Its table and sysctls went with the namespace.
                debug!(
                    "NAT journal {} belongs to a network namespace that no longer exists; removed",
                    file.display()
                );
                let _ = fs::remove_file(&file);
            }
            continue;
        }
        info!(
            "undoing the NAT of warren server {} that ended without cleaning up",
            owner.pid()
        );
        undone.extend(changes.iter().rev().map(ToString::to_string));
        let mut nat = Nat {
            nft: Nft::find(),
            dir: dir.to_path_buf(),
            file: file.clone(),
            owner,
            changes,
            journal_failed: false,
            helper: None,
        };
        if let Err(e) = nat.restore() {
            first.get_or_insert(e);
        }
        // What could not be undone stays in the file; keep it out of `Drop`.
        nat.changes.clear();
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let _ = fs::remove_file(dir.join(format!(".{name}.tmp")));
    }
    first.map_or(Ok(undone), Err)
}

fn read_sysctl(path: &Path) -> Result<String, NatError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| NatError::Sysctl {
            path: path.to_path_buf(),
            hint: if source.kind() == io::ErrorKind::NotFound {
                " (no such device in this network namespace?)"
            } else {
                ""
            },
            source,
        })
}

fn write_sysctl(path: &Path, value: &str) -> Result<(), NatError> {
    debug!("sysctl {}={value}", sysctl_name(path));
    fs::write(path, format!("{value}\n")).map_err(|source| NatError::Sysctl {
        path: path.to_path_buf(),
        hint: if source.kind() == io::ErrorKind::PermissionDenied {
            " (changing forwarding needs CAP_NET_ADMIN: run as root)"
        } else {
            ""
        },
        source,
    })
}

/// An `nft` failure in the words of NAT.
fn nft_error(e: impl Into<NftFailure>, action: &str) -> NatError {
    match e.into() {
        NftFailure::Missing => NatError::NftMissing,
        NftFailure::Permission => NatError::NeedsCapNetAdmin {
            action: action.to_owned(),
        },
        NftFailure::Failed(detail) => NatError::Nft {
            action: action.to_owned(),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use nftables::helper::NftablesError;

    use super::*;

    fn spec() -> NatSpec {
        NatSpec {
            tun: "tun0".into(),
            uplinks: vec!["eth0".into()],
            v4: vec![Ipv4Net::new(Ipv4Addr::new(10, 8, 0, 0), 24)],
            v6: Vec::new(),
        }
    }

    #[test]
    fn ruleset_is_one_table_with_a_masquerade_rule() {
        let j = serde_json::to_value(spec().ruleset()).expect("json");
        let want = serde_json::json!({"nftables": [
            {"create": {"table": {"family": "inet", "name": "warren-tun0"}}},
            {"add": {"chain": {"family": "inet", "table": "warren-tun0", "name": "postrouting",
                "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}},
            {"add": {"rule": {"family": "inet", "table": "warren-tun0", "chain": "postrouting",
                "expr": [
                    {"match": {"left": {"payload": {"protocol": "ip", "field": "saddr"}},
                        "right": {"prefix": {"addr": "10.8.0.0", "len": 24}}, "op": "=="}},
                    {"match": {"left": {"meta": {"key": "oifname"}}, "right": "eth0", "op": "=="}},
                    {"counter": null},
                    {"masquerade": null}
                ],
                "comment": "warren: VPN clients of tun0 out of eth0"}}}
        ]});
        assert_eq!(j, want, "{j}");
    }

    #[test]
    fn ipv6_adds_a_rule_and_its_forwarding() {
        let mut s = spec();
        s.uplinks.push("eth1".into());
        assert_eq!(s.forwarding_sysctls_for(true).len(), 3);
        s.v6.push(Ipv6Net::new("fd00:8::".parse().expect("v6"), 64));
        let j = serde_json::to_string(&s.ruleset()).expect("json");
        assert_eq!(j.matches("\"masquerade\"").count(), 4, "{j}");
        assert!(j.contains("\"protocol\":\"ip6\""), "{j}");
        assert!(j.contains("\"addr\":\"fd00:8::\",\"len\":64"), "{j}");
        // Per input device, like IPv4, where the kernel has force_forwarding ...
        let paths = s.forwarding_sysctls_for(true);
        assert_eq!(paths.len(), 6);
        assert!(paths.contains(&PathBuf::from(
            "/proc/sys/net/ipv6/conf/eth1/force_forwarding"
        )));
        assert!(paths.contains(&PathBuf::from(
            "/proc/sys/net/ipv6/conf/tun0/force_forwarding"
        )));
        assert!(
            !paths
                .iter()
                .any(|p| p.ends_with("ipv6/conf/eth1/forwarding"))
        );
        assert_eq!(
            sysctl_name(&paths[0]),
            "net.ipv4.conf.tun0.forwarding".to_owned()
        );
        // ... else the one global switch.
        let paths = s.forwarding_sysctls_for(false);
        assert_eq!(paths.len(), 4);
        assert_eq!(paths[3], PathBuf::from(IPV6_ALL_FORWARDING));
        // An IPv6-only server touches no IPv4 flag.
        s.v4.clear();
        assert!(
            s.forwarding_sysctls_for(true)
                .iter()
                .all(|p| p.starts_with("/proc/sys/net/ipv6"))
        );
        // Every path passes the journal's own check.
        for p in s
            .forwarding_sysctls_for(true)
            .iter()
            .chain(&s.forwarding_sysctls_for(false))
        {
            let c = NatChange::Sysctl {
                path: p.clone(),
                prev: "0".into(),
                written: "1".into(),
            };
            let (_, back) =
                decode(&encode(&Owner::current(), std::slice::from_ref(&c))).expect("decodes");
            assert_eq!(back, vec![c]);
        }
    }

    #[test]
    fn journal_round_trips() {
        let owner = Owner::current();
        let changes = vec![
            NatChange::Table {
                name: "warren-tun 0".into(),
            },
            NatChange::Sysctl {
                path: "/proc/sys/net/ipv4/conf/tun0/forwarding".into(),
                prev: "0".into(),
                written: "1".into(),
            },
        ];
        let text = encode(&owner, &changes);
        let (o, c) = decode(&text).expect("decodes");
        assert_eq!((o, c), (owner.clone(), changes));
        assert!(decode("warren-net-journal 1\n").is_none());
        // A journal cannot aim a write outside /proc/sys/net.
        let evil = format!(
            "{MAGIC}\n{}\nsysctl {} 30 31\n",
            owner.line(),
            hex(b"/etc/passwd")
        );
        assert!(decode(&evil).is_none());
    }

    #[test]
    fn recovery_skips_live_owners_and_other_namespaces() {
        let dir = std::env::temp_dir().join(format!("warren-nat-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let me = Owner::current();
        // Ours, alive: untouched.
        let live = dir.join("nat-1.journal");
        fs::write(
            &live,
            encode(
                &me,
                &[NatChange::Table {
                    name: "warren-x".into(),
                }],
            ),
        )
        .expect("write");
        // A dead owner in a namespace that does not exist: the file is removed, nothing run.
        let gone = Owner::parse_line("owner 4194304 1 net:[1]").expect("owner");
        let dead = dir.join("nat-2.journal");
        fs::write(
            &dead,
            encode(
                &gone,
                &[NatChange::Table {
                    name: "warren-y".into(),
                }],
            ),
        )
        .expect("write");
        let undone = recover_abandoned_nat_in(&dir).expect("nothing to run");
        assert!(undone.is_empty(), "{undone:?}");
        assert!(live.exists());
        // Whether a namespace is gone can only be told by one who sees every process.
        if fs::read_link("/proc/1/ns/net").is_ok() {
            assert!(!dead.exists());
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_fix() {
        let e = nft_error(
            NftablesError::NftFailed {
                program: "nft".into(),
                hint: String::new(),
                stdout: String::new(),
                stderr: "Error: Could not process rule: Operation not permitted".into(),
            },
            "x",
        );
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let e = nft_error(
            NftablesError::NftExecution {
                program: "nft".into(),
                inner: io::Error::from(io::ErrorKind::NotFound),
            },
            "x",
        );
        assert!(
            e.to_string().contains("install the nftables package"),
            "{e}"
        );
        assert!(
            NatError::NoUplink
                .to_string()
                .contains("warren-nat on eth0")
        );
    }
}
