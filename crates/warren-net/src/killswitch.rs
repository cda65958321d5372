//! The client's kill switch (`warren client --kill-switch`, `warren-kill-switch on`): while
//! the client runs, also while it reconnects, nothing leaves the machine outside the tunnel
//! but the tunnel's own packets to its server.
//!
//! One nftables table of warren's own, `inet warren-killswitch` (the `inet` family holds
//! IPv4 and IPv6), and nothing else:
//!
//! * chain `output` (hook `output`, priority `filter`, policy `drop`): accepted are packets
//!   to loopback (`oifname "lo"`), into the tun device once it exists, to each endpoint the
//!   client may connect to (`ip daddr A udp dport P`, per address, transport and port:
//!   every `remote` and `<connection>` entry, or its proxy, resolved before the switch goes
//!   on), DHCP and DHCPv6 requests (so the uplink keeps its address lease) and IPv6
//!   neighbour and router solicitations and neighbour advertisements (so the gateway to an
//!   IPv6 server stays reachable); everything else is counted and dropped. DNS is not
//!   special: a query that does not go into the tunnel (or to loopback, such as a local
//!   stub resolver, whose own queries out are filtered in turn) is dropped like any packet;
//! * chain `forward` (hook `forward`, policy `drop`): what this machine routes for others
//!   (containers, VMs) only into or out of the tunnel.
//!
//! A drop in any base chain is final in nftables, so no other table can let a packet past
//! the switch, and the switch never changes what other tables decide for packets it
//! accepts. Other tables are only looked at by name.
//!
//! Every change is one `nft` batch, which the kernel applies as one transaction: the table
//! is created whole; the tun device (known once the first connection is up) and new
//! addresses of a remote that re-resolved are put in by flushing the two chains and adding
//! their rules again in the same batch, so no packet ever sees a half-built switch. A table
//! left by a client that crashed is replaced in one batch too (`add`, `delete`, `create`),
//! so there is no moment without a switch.
//!
//! Like the NAT ([`crate::Nat`]), the table is journaled (`/run/warren/killswitch-<pid>.journal`,
//! written before the table is created) and removed on [`KillSwitch::release`] or drop,
//! that is whenever the client ends by itself. A client that crashed or was killed leaves
//! the switch on: nothing leaks because the VPN died. The next `warren client` removes it
//! (or replaces it with its own), and so does `warren client --kill-switch-off`
//! ([`kill_switch_off`]); the root helper of a client that dropped privileges only forgets
//! journals whose table that client removed itself ([`tidy_kill_switch_journals`]).
use std::borrow::Cow;
use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, SetItem};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Rule};
use nftables::stmt::{Counter, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::journal::{self, Owner, decode_journal, hex, unhex_text};
use crate::nft::{Nft, NftFailure, inet_table};

/// The table of the kill switch: `inet warren-killswitch`.
pub const KILL_SWITCH_TABLE: &str = "warren-killswitch";

const MAGIC: &str = "warren-killswitch-journal 1";
const PREFIX: &str = "killswitch-";
const SUFFIX: &str = ".journal";
const OUTPUT: &str = "output";
const FORWARD: &str = "forward";
/// nft's `filter` priority.
const FILTER_PRIORITY: i32 = 0;

/// Errors of the kill switch, each naming the fix where there is one.
#[derive(Debug, Error)]
pub enum KillSwitchError {
    #[error(
        "the `nft` command was not found: install the nftables package (the kill switch needs it)"
    )]
    NftMissing,
    #[error(
        "`nft` ({action}): permission denied: the kill switch needs CAP_NET_ADMIN (run as root)"
    )]
    NeedsCapNetAdmin { action: String },
    #[error("`nft` failed ({action}): {detail}")]
    Nft { action: String, detail: String },
    #[error(
        "warren client {pid} runs with the kill switch on in this network namespace; stop it \
         first (its kill switch goes with it)"
    )]
    InUse { pid: u32 },
}

fn nft_error(e: NftFailure, action: &str) -> KillSwitchError {
    match e {
        NftFailure::Missing => KillSwitchError::NftMissing,
        NftFailure::Permission => KillSwitchError::NeedsCapNetAdmin {
            action: action.to_owned(),
        },
        NftFailure::Failed(detail) => KillSwitchError::Nft {
            action: action.to_owned(),
            detail,
        },
    }
}

/// The transport of a tunnel endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Where the tunnel's own packets may go: a server (or the proxy in front of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelEndpoint {
    pub addr: IpAddr,
    pub port: u16,
    pub transport: Transport,
}

impl fmt::Display for TunnelEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}/{}", self.port, self.transport.name()),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{}", self.port, self.transport.name()),
        }
    }
}

/// What the kill switch lets out besides loopback (and DHCP and IPv6 neighbour discovery).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KillSwitchSpec {
    /// The tun device, once it exists.
    pub tun: Option<String>,
    /// The endpoints the client may connect to.
    pub endpoints: Vec<TunnelEndpoint>,
}

impl KillSwitchSpec {
    /// The same, with the endpoints sorted and without repeats (so equal sets compare
    /// equal).
    pub fn normalized(&self) -> KillSwitchSpec {
        let mut endpoints = self.endpoints.clone();
        endpoints.sort();
        endpoints.dedup();
        KillSwitchSpec {
            tun: self.tun.clone(),
            endpoints,
        }
    }

    /// The batch that creates the table with its two chains and their rules. With
    /// `replace`, a table of that name that exists is deleted in the same transaction.
    pub fn ruleset(&self, replace: bool) -> Nftables<'static> {
        let table = inet_table(KILL_SWITCH_TABLE);
        let mut objs = Vec::new();
        if replace {
            // `add` is a no-op on an existing table and makes the `delete` safe if it went
            // away meanwhile; all three are one transaction.
            objs.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Table(
                table.clone(),
            ))));
            objs.push(NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(
                table.clone(),
            ))));
        }
        objs.push(NfObject::CmdObject(NfCmd::Create(NfListObject::Table(
            table,
        ))));
        for (name, hook) in [(OUTPUT, NfHook::Output), (FORWARD, NfHook::Forward)] {
            objs.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(
                Chain {
                    family: NfFamily::INet,
                    table: Cow::Borrowed(KILL_SWITCH_TABLE),
                    name: Cow::Borrowed(name),
                    _type: Some(NfChainType::Filter),
                    hook: Some(hook),
                    prio: Some(FILTER_PRIORITY),
                    policy: Some(NfChainPolicy::Drop),
                    ..Chain::default()
                },
            ))));
        }
        objs.extend(self.rules());
        Nftables {
            objects: Cow::Owned(objs),
        }
    }

    /// The batch that replaces the rules of both chains with this spec's, atomically.
    pub fn update(&self) -> Nftables<'static> {
        let mut objs = Vec::new();
        for name in [OUTPUT, FORWARD] {
            objs.push(NfObject::CmdObject(NfCmd::Flush(FlushObject::Chain(
                Chain {
                    family: NfFamily::INet,
                    table: Cow::Borrowed(KILL_SWITCH_TABLE),
                    name: Cow::Borrowed(name),
                    ..Chain::default()
                },
            ))));
        }
        objs.extend(self.rules());
        Nftables {
            objects: Cow::Owned(objs),
        }
    }

    /// The rules of both chains, in order.
    fn rules(&self) -> Vec<NfObject<'static>> {
        let s = self.normalized();
        let mut out = Vec::new();
        let mut rule = |chain: &'static str, mut expr: Vec<Statement<'static>>, verdict, what| {
            expr.push(verdict);
            out.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
                family: NfFamily::INet,
                table: Cow::Borrowed(KILL_SWITCH_TABLE),
                chain: Cow::Borrowed(chain),
                expr: Cow::Owned(expr),
                handle: None,
                index: None,
                comment: Some(Cow::Owned(format!("warren kill switch: {what}"))),
            }))));
        };
        let accept = || Statement::Accept(None);
        rule(
            OUTPUT,
            vec![meta(MetaKey::Oifname, "lo")],
            accept(),
            "loopback".into(),
        );
        if let Some(tun) = &s.tun {
            rule(
                OUTPUT,
                vec![meta(MetaKey::Oifname, tun)],
                accept(),
                "into the tunnel".into(),
            );
        }
        for e in &s.endpoints {
            let (family, addr) = match e.addr {
                IpAddr::V4(a) => ("ip", a.to_string()),
                IpAddr::V6(a) => ("ip6", a.to_string()),
            };
            rule(
                OUTPUT,
                vec![
                    payload(family, "daddr", Expression::String(Cow::Owned(addr))),
                    payload(
                        e.transport.name(),
                        "dport",
                        Expression::Number(u32::from(e.port)),
                    ),
                ],
                accept(),
                format!("the VPN server {e}"),
            );
        }
        rule(
            OUTPUT,
            vec![
                payload("udp", "sport", Expression::Number(68)),
                payload("udp", "dport", Expression::Number(67)),
            ],
            accept(),
            "DHCP".into(),
        );
        rule(
            OUTPUT,
            vec![
                payload("udp", "sport", Expression::Number(546)),
                payload("udp", "dport", Expression::Number(547)),
            ],
            accept(),
            "DHCPv6".into(),
        );
        rule(
            OUTPUT,
            vec![payload(
                "icmpv6",
                "type",
                Expression::Named(NamedExpression::Set(
                    [
                        "nd-router-solicit",
                        "nd-neighbor-solicit",
                        "nd-neighbor-advert",
                    ]
                    .into_iter()
                    .map(|t| SetItem::Element(Expression::String(Cow::Borrowed(t))))
                    .collect(),
                )),
            )],
            accept(),
            "IPv6 neighbour discovery".into(),
        );
        // Counted, so `nft list table inet warren-killswitch` shows what was held back.
        let counter = || vec![Statement::Counter(Counter::Anonymous(None))];
        rule(
            OUTPUT,
            counter(),
            Statement::Drop(None),
            "everything else".into(),
        );
        if let Some(tun) = &s.tun {
            rule(
                FORWARD,
                vec![meta(MetaKey::Oifname, tun)],
                accept(),
                "forwarded into the tunnel".into(),
            );
            rule(
                FORWARD,
                vec![meta(MetaKey::Iifname, tun)],
                accept(),
                "forwarded out of the tunnel".into(),
            );
        }
        rule(
            FORWARD,
            counter(),
            Statement::Drop(None),
            "everything else forwarded".into(),
        );
        out
    }

    fn describe(&self) -> String {
        let s = self.normalized();
        let mut parts: Vec<String> = s.endpoints.iter().map(ToString::to_string).collect();
        if let Some(t) = &s.tun {
            parts.insert(0, format!("tun {t}"));
        }
        parts.join(", ")
    }
}

fn meta(key: MetaKey, value: &str) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta { key })),
        right: Expression::String(Cow::Owned(value.to_owned())),
        op: Operator::EQ,
    })
}

fn payload(
    protocol: &'static str,
    field: &'static str,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: Cow::Borrowed(protocol),
                field: Cow::Borrowed(field),
            },
        ))),
        right,
        op: Operator::EQ,
    })
}

// ---------------------------------------------------------------------------------------------
// The journal: `warren-killswitch-journal 1`, the owner line, `table inet <hex name>`
// ---------------------------------------------------------------------------------------------

fn encode(owner: &Owner, table: &str) -> String {
    format!(
        "{MAGIC}\n{}\ntable inet {}\n",
        owner.line(),
        hex(table.as_bytes())
    )
}

fn decode(text: &str) -> Option<(Owner, Vec<String>)> {
    decode_journal(text, MAGIC, |f| {
        let ["table", "inet", name] = f else {
            return None;
        };
        let name = unhex_text(name)?;
        // Only warren's own tables: a journal cannot be used to delete another.
        (name == KILL_SWITCH_TABLE).then_some(name)
    })
}

fn journals(dir: &Path) -> Vec<(PathBuf, Owner, Vec<String>)> {
    journal::read_journals(dir, PREFIX, "warren kill switch journal", decode)
}

/// The kill switch of this client: on from [`KillSwitch::engage`] until
/// [`KillSwitch::release`] or drop.
#[derive(Debug)]
pub struct KillSwitch {
    nft: Nft,
    dir: PathBuf,
    file: PathBuf,
    owner: Owner,
    spec: KillSwitchSpec,
    /// The table is (or may be) in place.
    on: bool,
    /// The journal is no longer written (see [`KillSwitch::hand_over`]).
    handed_over: bool,
    /// Set after the first failed journal write, so the warning is logged once.
    journal_failed: bool,
}

impl KillSwitch {
    /// Turns the kill switch on with `spec`, journaled in `dir` (`/run/warren` normally).
    /// A switch left by a client that is gone is replaced in the same transaction; one of
    /// a client that still runs in this network namespace is refused
    /// ([`KillSwitchError::InUse`]).
    pub fn engage(spec: &KillSwitchSpec, dir: &Path) -> Result<KillSwitch, KillSwitchError> {
        let owner = Owner::current();
        let mut stale = Vec::new();
        for (file, o, _) in journals(dir) {
            if o.netns() != owner.netns() || o == owner {
                continue;
            }
            if o.alive() {
                return Err(KillSwitchError::InUse { pid: o.pid() });
            }
            stale.push((file, o.pid()));
        }
        let nft = Nft::find();
        let exists = nft
            .inet_table_exists(KILL_SWITCH_TABLE)
            .map_err(|e| nft_error(e, "listing tables"))?;
        let spec = spec.normalized();
        let mut ks = KillSwitch {
            nft,
            dir: dir.to_path_buf(),
            file: dir.join(format!("{PREFIX}{}{SUFFIX}", owner.pid())),
            owner,
            spec,
            on: true,
            handed_over: false,
            journal_failed: false,
        };
        // Journal first: if warren dies between the two, the next start deletes a table
        // that may exist; it never misses one that does.
        ks.save();
        if let Err(e) = ks.nft.apply(&ks.spec.ruleset(exists)) {
            // One transaction: nothing was changed.
            ks.on = false;
            ks.remove_journal();
            return Err(nft_error(e, "creating the kill switch table"));
        }
        if exists {
            match stale.iter().map(|(_, p)| p.to_string()).collect::<Vec<_>>() {
                pids if pids.is_empty() => warn!(
                    "a table inet {KILL_SWITCH_TABLE} was already there, with no warren journal; \
                     replaced it"
                ),
                pids => info!(
                    "replaced the kill switch that warren client {} left on",
                    pids.join(", ")
                ),
            }
        }
        for (file, _) in &stale {
            let _ = fs::remove_file(file);
        }
        info!(
            "kill switch on: nothing leaves outside the tunnel but loopback and the VPN \
             server ({}) (nftables table inet {KILL_SWITCH_TABLE})",
            ks.spec.describe()
        );
        Ok(ks)
    }

    /// What the switch lets out now.
    pub fn spec(&self) -> &KillSwitchSpec {
        &self.spec
    }

    /// Brings the rules to `spec` in one transaction (no-op when nothing changed). On an
    /// error the old rules stay: the switch never opens because an update failed.
    pub fn update(&mut self, spec: &KillSwitchSpec) -> Result<(), KillSwitchError> {
        let spec = spec.normalized();
        if spec == self.spec || !self.on {
            return Ok(());
        }
        self.nft
            .apply(&spec.update())
            .map_err(|e| nft_error(e, "updating the kill switch"))?;
        debug!("kill switch now lets out: {}", spec.describe());
        self.spec = spec;
        Ok(())
    }

    /// For a client about to drop its privileges (`user`): the journal was written as root
    /// and is left as it is (the client could not remove it any more). The client still
    /// updates and removes the table (its `nft` children keep CAP_NET_ADMIN); the root
    /// helper forgets the journal once the table is gone
    /// ([`tidy_kill_switch_journals`]), and leaves a table that is still there after a
    /// crash for the next start.
    pub fn hand_over(&mut self) {
        self.handed_over = true;
    }

    /// Turns the kill switch off: deletes the table, then the journal. On an error the
    /// switch stays on and the journal says so (the next start, or `warren client
    /// --kill-switch-off`, removes it).
    pub fn release(&mut self) -> Result<(), KillSwitchError> {
        if !self.on {
            return Ok(());
        }
        self.nft
            .delete_inet_table(KILL_SWITCH_TABLE)
            .map_err(|e| nft_error(e, "deleting the kill switch table"))?;
        self.on = false;
        self.remove_journal();
        info!("kill switch off");
        Ok(())
    }

    fn save(&mut self) {
        if self.handed_over {
            return;
        }
        let tmp = self
            .dir
            .join(format!(".{PREFIX}{}{SUFFIX}.tmp", self.owner.pid()));
        let text = encode(&self.owner, KILL_SWITCH_TABLE);
        match journal::write_atomic(&self.dir, &tmp, &self.file, &text) {
            Ok(()) => self.journal_failed = false,
            Err(e) if !self.journal_failed => {
                self.journal_failed = true;
                warn!(
                    "cannot write the kill switch journal {}: {e}; if warren is killed, remove \
                     the switch with `nft delete table inet {KILL_SWITCH_TABLE}`",
                    self.file.display()
                );
            }
            Err(_) => {}
        }
    }

    fn remove_journal(&mut self) {
        match fs::remove_file(&self.file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // After the privilege drop: the root helper removes it.
            Err(e) if self.handed_over => debug!("{}: {e}", self.file.display()),
            Err(e) => warn!("cannot remove {}: {e}", self.file.display()),
        }
    }
}

impl Drop for KillSwitch {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            warn!(
                "the kill switch is still on ({e}); remove it with `warren client --kill-switch-off`"
            );
        }
    }
}

/// What a recovery of the kill switch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KillSwitchRecovery {
    /// The dead clients whose journals were dealt with, by pid.
    pub pids: Vec<u32>,
    /// The table was deleted.
    pub removed: bool,
}

/// Who calls a recovery, which decides what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The root helper of a client that dropped privileges: forget the journals of gone
    /// clients whose table is gone (they removed it); never delete a table.
    Tidy,
    /// A `warren client` starting without the switch: delete the table a gone client's
    /// journal claims (and no live one does).
    Abandoned,
    /// `warren client --kill-switch-off`: delete the table unless a live client claims it,
    /// journal or not.
    Off,
}

/// What to do, from what was found: (delete the table, forget the dead journals).
fn decide(mode: Mode, live: bool, dead: bool, exists: bool) -> (bool, bool) {
    if live {
        // The table is the live client's; the dead journals claim nothing more.
        return (false, true);
    }
    let delete = exists
        && match mode {
            Mode::Tidy => false,
            Mode::Abandoned => dead,
            Mode::Off => true,
        };
    (delete, delete || !exists)
}

fn recover_in(dir: &Path, mode: Mode) -> Result<KillSwitchRecovery, KillSwitchError> {
    let me = Owner::current();
    let mut live = None;
    let mut dead = Vec::new();
    for (file, owner, _) in journals(dir) {
        if owner.netns() != me.netns() {
            if !owner.alive() && journal::netns_gone(owner.netns()) {
                // Its table went with the namespace.
                debug!(
                    "kill switch journal {} belongs to a network namespace that no longer \
                     exists; removed",
                    file.display()
                );
                let _ = fs::remove_file(&file);
            }
            continue;
        }
        if owner == me {
            continue;
        }
        if owner.alive() {
            live.get_or_insert(owner.pid());
        } else {
            dead.push((file, owner.pid()));
        }
    }
    if let (Some(pid), Mode::Off) = (live, mode) {
        return Err(KillSwitchError::InUse { pid });
    }
    if live.is_none() && dead.is_empty() && mode != Mode::Off {
        return Ok(KillSwitchRecovery::default());
    }
    let nft = Nft::find();
    let exists = nft
        .inet_table_exists(KILL_SWITCH_TABLE)
        .map_err(|e| nft_error(e, "listing tables"))?;
    let (delete, forget) = decide(mode, live.is_some(), !dead.is_empty(), exists);
    let pids: Vec<u32> = dead.iter().map(|(_, p)| *p).collect();
    if delete {
        if pids.is_empty() {
            info!("removing the kill switch (no warren journal names its client)");
        } else {
            info!(
                "removing the kill switch that warren client {} left on",
                pids.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        nft.delete_inet_table(KILL_SWITCH_TABLE)
            .map_err(|e| nft_error(e, "deleting the kill switch table"))?;
    }
    if forget {
        for (file, _) in &dead {
            let _ = fs::remove_file(file);
        }
    }
    Ok(KillSwitchRecovery {
        pids: if forget || delete { pids } else { Vec::new() },
        removed: delete,
    })
}

/// [`recover_abandoned_kill_switch_in`] on `/run/warren`: what `warren client` calls first
/// when it runs without the kill switch.
pub fn recover_abandoned_kill_switch() -> Result<KillSwitchRecovery, KillSwitchError> {
    recover_abandoned_kill_switch_in(Path::new(journal::DEFAULT_JOURNAL_DIR))
}

/// Removes the kill switch a client in this network namespace left on when it died (crash,
/// `kill -9`): a table a dead client's journal names, and no live client's. Journals of
/// namespaces that no longer exist are removed.
pub fn recover_abandoned_kill_switch_in(dir: &Path) -> Result<KillSwitchRecovery, KillSwitchError> {
    recover_in(dir, Mode::Abandoned)
}

/// `warren client --kill-switch-off`: removes the kill switch in this network namespace,
/// whichever client left it (also one whose journal was lost), unless a client that
/// still runs here has it on ([`KillSwitchError::InUse`]).
pub fn kill_switch_off() -> Result<KillSwitchRecovery, KillSwitchError> {
    kill_switch_off_in(Path::new(journal::DEFAULT_JOURNAL_DIR))
}

/// [`kill_switch_off`] with the journals in `dir`.
pub fn kill_switch_off_in(dir: &Path) -> Result<KillSwitchRecovery, KillSwitchError> {
    recover_in(dir, Mode::Off)
}

/// For the root helper of a client that dropped privileges, once that client is gone:
/// forgets its journal if it removed its table itself (a clean exit); a table still there
/// (a crash) stays on, for the next start or `--kill-switch-off`.
pub fn tidy_kill_switch_journals() -> Result<KillSwitchRecovery, KillSwitchError> {
    recover_in(Path::new(journal::DEFAULT_JOURNAL_DIR), Mode::Tidy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str, port: u16, transport: Transport) -> TunnelEndpoint {
        TunnelEndpoint {
            addr: addr.parse().expect("ip"),
            port,
            transport,
        }
    }

    #[test]
    fn ruleset_is_one_table_dropping_all_but_the_tunnel() {
        let spec = KillSwitchSpec {
            tun: None,
            endpoints: vec![
                ep("198.18.1.1", 1194, Transport::Udp),
                ep("2001:db8::5", 443, Transport::Tcp),
                ep("198.18.1.1", 1194, Transport::Udp),
            ],
        };
        let j = serde_json::to_value(spec.ruleset(false)).expect("json");
        let objs = j["nftables"].as_array().expect("array");
        assert_eq!(
            objs[0],
            serde_json::json!({"create": {"table": {"family": "inet", "name": "warren-killswitch"}}})
        );
        assert_eq!(
            objs[1],
            serde_json::json!({"add": {"chain": {"family": "inet", "table": "warren-killswitch",
                "name": "output", "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}}})
        );
        assert_eq!(objs[2]["add"]["chain"]["hook"], "forward");
        assert_eq!(objs[2]["add"]["chain"]["policy"], "drop");
        let rules: Vec<&serde_json::Value> = objs[3..].iter().map(|o| &o["add"]["rule"]).collect();
        assert_eq!(
            rules[0]["expr"],
            serde_json::json!([
                {"match": {"left": {"meta": {"key": "oifname"}}, "right": "lo", "op": "=="}},
                {"accept": null}
            ])
        );
        // The repeated endpoint is one rule; IPv6 and TCP get theirs.
        assert_eq!(
            rules[1]["expr"],
            serde_json::json!([
                {"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}},
                    "right": "198.18.1.1", "op": "=="}},
                {"match": {"left": {"payload": {"protocol": "udp", "field": "dport"}},
                    "right": 1194, "op": "=="}},
                {"accept": null}
            ])
        );
        assert_eq!(
            rules[2]["expr"][0]["match"]["left"]["payload"]["protocol"],
            "ip6"
        );
        assert_eq!(
            rules[2]["expr"][1]["match"]["left"]["payload"]["protocol"],
            "tcp"
        );
        assert_eq!(
            rules[2]["comment"],
            "warren kill switch: the VPN server [2001:db8::5]:443/tcp"
        );
        // DHCP, DHCPv6, neighbour discovery, then the counted drop.
        let out: Vec<_> = rules.iter().filter(|r| r["chain"] == "output").collect();
        assert_eq!(out.len(), 7, "{out:?}");
        assert_eq!(
            out[6]["expr"],
            serde_json::json!([{"counter": null}, {"drop": null}])
        );
        // No tun yet: nothing is forwarded.
        let fwd: Vec<_> = rules.iter().filter(|r| r["chain"] == "forward").collect();
        assert_eq!(fwd.len(), 1);
        // DNS is not let out anywhere but the tunnel and loopback.
        let text = j.to_string();
        assert!(!text.contains("\"right\":53"), "{text}");
    }

    #[test]
    fn the_tun_is_added_by_an_atomic_update() {
        let mut spec = KillSwitchSpec {
            tun: None,
            endpoints: vec![ep("198.18.1.1", 1194, Transport::Udp)],
        };
        spec.tun = Some("tun7".into());
        let j = serde_json::to_value(spec.update()).expect("json");
        let objs = j["nftables"].as_array().expect("array");
        // Both chains flushed first, then every rule again, in one batch.
        assert_eq!(objs[0]["flush"]["chain"]["name"], "output");
        assert_eq!(objs[1]["flush"]["chain"]["name"], "forward");
        assert!(objs[2..].iter().all(|o| o.get("add").is_some()));
        let text = j.to_string();
        assert_eq!(text.matches("\"right\":\"tun7\"").count(), 3, "{text}");
        assert!(text.contains("\"key\":\"iifname\""), "{text}");
        // Replacing a leftover: add + delete + create in the same batch.
        let j = serde_json::to_value(spec.ruleset(true)).expect("json");
        let objs = j["nftables"].as_array().expect("array");
        assert!(objs[0].get("add").is_some() && objs[1].get("delete").is_some());
        assert!(objs[2].get("create").is_some());
    }

    #[test]
    fn journal_round_trips_and_names_only_the_switch() {
        let owner = Owner::current();
        let text = encode(&owner, KILL_SWITCH_TABLE);
        assert_eq!(
            decode(&text),
            Some((owner.clone(), vec![KILL_SWITCH_TABLE.to_owned()]))
        );
        let other = format!(
            "{MAGIC}\n{}\ntable inet {}\n",
            owner.line(),
            "filter"
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert!(decode(&other).is_none());
        assert!(decode("warren-nat-journal 1\n").is_none());
    }

    #[test]
    fn recovery_decisions() {
        use Mode::*;
        // (mode, live, dead, exists) -> (delete, forget)
        // A live client's switch is never deleted; dead journals are forgotten.
        for m in [Tidy, Abandoned, Off] {
            assert_eq!(decide(m, true, true, true), (false, true));
        }
        // After a crash the switch stays for the helper, goes at the next start.
        assert_eq!(decide(Tidy, false, true, true), (false, false));
        assert_eq!(decide(Abandoned, false, true, true), (true, true));
        // A clean exit after the privilege drop: the table is gone, the journal goes.
        assert_eq!(decide(Tidy, false, true, false), (false, true));
        // A table no journal names: only `--kill-switch-off` removes it.
        assert_eq!(decide(Abandoned, false, false, true), (false, false));
        assert_eq!(decide(Off, false, false, true), (true, true));
        assert_eq!(decide(Off, false, false, false), (false, true));
    }

    #[test]
    fn recovery_without_journals_touches_nothing() {
        let dir = std::env::temp_dir().join(format!("warren-ks-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        // Ours (alive): skipped; no `nft` is run.
        fs::write(
            dir.join(format!("{PREFIX}{}{SUFFIX}", std::process::id())),
            encode(&Owner::current(), KILL_SWITCH_TABLE),
        )
        .expect("write");
        assert_eq!(
            recover_abandoned_kill_switch_in(&dir).expect("nothing to do"),
            KillSwitchRecovery::default()
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_fix() {
        assert!(
            nft_error(NftFailure::Permission, "x")
                .to_string()
                .contains("CAP_NET_ADMIN")
        );
        assert!(
            KillSwitchError::InUse { pid: 7 }
                .to_string()
                .contains("stop it first")
        );
    }
}
