//! The journal on disk: what a client changed, written before each change, so that the
//! next run can undo what a crashed (or `kill -9`ed) run left behind.
//!
//! One file per [`NetState`] (normally one per client process), `<dir>/net-<pid>.journal`,
//! then `net-<pid>-<n>.journal` for further states of the same process (`/run/warren` by default: a
//! tmpfs, so a reboot, which undoes everything anyway, also forgets the journals). The file
//! names its owner (pid and the kernel's start time of that pid, so a reused pid is told
//! apart) and its network namespace, then lists the changes oldest first, one per line. It
//! is replaced atomically (written to a temporary file, synced, renamed) before each change
//! and after each undo, so at any moment it lists at least everything that may be in place.
//!
//! [`recover_abandoned_in`] undoes the journals of owners that are gone, in this network
//! namespace only: routes are per namespace, and a client in another namespace (or one
//! still running) is never touched.
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, info, warn};

use crate::dns::DnsUndo;
use crate::ip::{IpNet, NetError, RouteSpec};
use crate::state::{Change, DeviceAddress, NetState};

/// Where `warren client` keeps its journals unless told otherwise.
pub const DEFAULT_JOURNAL_DIR: &str = "/run/warren";

const MAGIC: &str = "warren-net-journal 1";
const PREFIX: &str = "net-";
const SUFFIX: &str = ".journal";

/// Who wrote a journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot when the process started.
    start: u64,
    /// `/proc/self/ns/net` as a link target, e.g. `net:[4026531840]`.
    netns: String,
}

impl Owner {
    pub(crate) fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: start_time(pid).unwrap_or(0),
            netns: current_netns(),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn netns(&self) -> &str {
        &self.netns
    }

    /// The `owner PID START NETNS` line of a journal (without the newline).
    pub(crate) fn line(&self) -> String {
        format!("owner {} {} {}", self.pid, self.start, self.netns)
    }

    /// Parses [`Owner::line`].
    pub(crate) fn parse_line(line: &str) -> Option<Owner> {
        let mut o = line.split(' ');
        if o.next()? != "owner" {
            return None;
        }
        Some(Owner {
            pid: o.next()?.parse().ok()?,
            start: o.next()?.parse().ok()?,
            netns: o.next()?.to_owned(),
        })
    }

    /// The process that wrote the journal still runs (same pid, same start time, and not a
    /// zombie waiting to be reaped: that one will change nothing any more).
    pub(crate) fn alive(&self) -> bool {
        stat_of(self.pid).is_some_and(|(state, s)| s == self.start && !matches!(state, 'Z' | 'X'))
    }
}

pub(crate) fn current_netns() -> String {
    fs::read_link("/proc/self/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn start_time(pid: u32) -> Option<u64> {
    stat_of(pid).map(|(_, start)| start)
}

/// Fields 3 (state) and 22 (start time) of `/proc/<pid>/stat`.
fn stat_of(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// The journal file of one [`NetState`].
#[derive(Debug)]
pub(crate) struct JournalFile {
    dir: PathBuf,
    path: PathBuf,
    owner: Owner,
    /// Set after the first failed write, so the warning is logged once.
    failed: bool,
}

impl JournalFile {
    /// A journal of this process in `dir`, of its own (nothing is written until the
    /// first change).
    pub(crate) fn for_this_process(dir: &Path) -> JournalFile {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let owner = Owner::current();
        let name = match SEQ.fetch_add(1, Ordering::Relaxed) {
            0 => format!("{PREFIX}{}{SUFFIX}", owner.pid),
            n => format!("{PREFIX}{}-{n}{SUFFIX}", owner.pid),
        };
        JournalFile {
            dir: dir.to_path_buf(),
            path: dir.join(name),
            owner,
            failed: false,
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the file with `changes` (deletes it when there are none). A failure is
    /// logged, not returned: the change is still made and undone by this process; only the
    /// recovery after a crash is lost.
    pub(crate) fn save(&mut self, changes: &[Change]) {
        let r = if changes.is_empty() {
            match fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            self.write(&encode(&self.owner, changes))
        };
        match r {
            Ok(()) => self.failed = false,
            Err(e) if !self.failed => {
                self.failed = true;
                warn!(
                    "cannot write the network journal {}: {e}; if warren is killed, its routes \
                     and DNS settings will not be undone by the next run",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }

    fn write(&self, text: &str) -> std::io::Result<()> {
        let tmp = self
            .dir
            .join(format!(".{PREFIX}{}{SUFFIX}.tmp", self.owner.pid));
        write_atomic(&self.dir, &tmp, &self.path, text)
    }
}

/// Replaces `path` (in `dir`, created if missing) with `text` through `tmp`: written,
/// synced, renamed, so a reader sees the old or the new file, never a part.
pub(crate) fn write_atomic(dir: &Path, tmp: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut f = fs::File::create(tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)?;
    // The rename itself is durable once the directory is synced (best effort: /run is
    // a tmpfs, where this is a no-op).
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Encoding: one line per item, fields separated by spaces; byte strings and paths in hex
// ---------------------------------------------------------------------------------------------

pub(crate) fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".to_owned();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// [`unhex`] of UTF-8 text.
pub(crate) fn unhex_text(s: &str) -> Option<String> {
    String::from_utf8(unhex(s)?).ok()
}

fn hex_path(p: &Path) -> String {
    hex(p.as_os_str().as_encoded_bytes())
}

fn unhex_path(s: &str) -> Option<PathBuf> {
    unhex_text(s).map(PathBuf::from)
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_owned(), T::to_string)
}

fn encode(owner: &Owner, changes: &[Change]) -> String {
    let mut s = format!("{MAGIC}\n{}\n", owner.line());
    for c in changes {
        match c {
            Change::Route(r) => s.push_str(&format!(
                "route {} {} {} {} {}\n",
                r.dst.addr(),
                r.dst.prefix(),
                opt(&r.via),
                r.dev
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |d| hex(d.as_bytes())),
                opt(&r.metric)
            )),
            Change::Address(a) => s.push_str(&format!(
                "address {} {} {}\n",
                a.addr,
                a.prefix,
                hex(a.dev.as_bytes())
            )),
            Change::Dns(DnsUndo::Resolved { dev }) => {
                s.push_str(&format!("dns-resolved {}\n", hex(dev.as_bytes())));
            }
            Change::Dns(DnsUndo::Resolvconf { record }) => {
                s.push_str(&format!("dns-resolvconf {}\n", hex(record.as_bytes())));
            }
            Change::Dns(DnsUndo::File {
                path,
                original,
                written,
                backup,
            }) => s.push_str(&format!(
                "dns-file {} {} {} {}\n",
                hex_path(path),
                hex(original),
                hex(written),
                backup.as_deref().map_or_else(|| "-".to_owned(), hex_path)
            )),
        }
    }
    s
}

/// A journal's text: `magic`, the owner line, then one item a line, its fields separated
/// by spaces. A line `item` refuses spoils the whole journal.
pub(crate) fn decode_journal<T>(
    text: &str,
    magic: &str,
    mut item: impl FnMut(&[&str]) -> Option<T>,
) -> Option<(Owner, Vec<T>)> {
    let mut lines = text.lines();
    if lines.next()? != magic {
        return None;
    }
    let owner = Owner::parse_line(lines.next()?)?;
    let items = lines
        .map(|line| item(&line.split(' ').collect::<Vec<_>>()))
        .collect::<Option<Vec<T>>>()?;
    Some((owner, items))
}

fn decode(text: &str) -> Option<(Owner, Vec<Change>)> {
    decode_journal(text, MAGIC, |f| {
        Some(match f {
            ["route", addr, prefix, via, dev, metric] => Change::Route(RouteSpec {
                dst: IpNet::new(addr.parse::<IpAddr>().ok()?, prefix.parse().ok()?),
                via: if *via == "-" {
                    None
                } else {
                    Some(via.parse().ok()?)
                },
                dev: if *dev == "-" {
                    None
                } else {
                    Some(unhex_text(dev)?)
                },
                metric: if *metric == "-" {
                    None
                } else {
                    Some(metric.parse().ok()?)
                },
            }),
            ["address", addr, prefix, dev] => Change::Address(DeviceAddress {
                addr: addr.parse().ok()?,
                prefix: prefix.parse().ok()?,
                dev: unhex_text(dev)?,
            }),
            ["dns-resolved", dev] => Change::Dns(DnsUndo::Resolved {
                dev: unhex_text(dev)?,
            }),
            ["dns-resolvconf", record] => Change::Dns(DnsUndo::Resolvconf {
                record: unhex_text(record)?,
            }),
            ["dns-file", path, original, written, backup] => Change::Dns(DnsUndo::File {
                path: unhex_path(path)?,
                original: unhex(original)?,
                written: unhex(written)?,
                backup: if *backup == "-" {
                    None
                } else {
                    Some(unhex_path(backup)?)
                },
            }),
            _ => return None,
        })
    })
}

/// The journals in `dir` with their owners, skipping what does not parse.
fn journals(dir: &Path) -> Vec<(PathBuf, Owner, Vec<Change>)> {
    read_journals(dir, PREFIX, "warren network journal", decode)
}

/// The files `PREFIX*.journal` in `dir`, decoded, in name order; one that does not decode
/// is skipped with a warning naming `what` it should have been. Shared by the client's
/// network journal and the server's NAT journal.
pub(crate) fn read_journals<C>(
    dir: &Path,
    prefix: &str,
    what: &str,
    decode: impl Fn(&str) -> Option<(Owner, Vec<C>)>,
) -> Vec<(PathBuf, Owner, Vec<C>)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(prefix) && name.ends_with(SUFFIX)) {
            continue;
        }
        let path = e.path();
        match fs::read_to_string(&path).ok().as_deref().and_then(&decode) {
            Some((owner, changes)) => out.push((path, owner, changes)),
            None => warn!("{}: not a readable {what}; ignored", path.display()),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether a running warren client in this network namespace wrote `bytes` into `path`
/// (two clients stacked on one resolv.conf), as opposed to a leftover of a dead one.
pub(crate) fn live_writer_of(dir: &Path, path: &Path, bytes: &[u8]) -> bool {
    let netns = current_netns();
    journals(dir).into_iter().any(|(_, owner, changes)| {
        owner.netns == netns
            && owner.alive()
            && changes.iter().any(|c| {
                matches!(c, Change::Dns(DnsUndo::File { path: p, written, .. })
                    if p == path && written == bytes)
            })
    })
}

/// Whether the network namespace `id` (`net:[inode]`) is gone: no process is in it and no
/// `ip netns` name pins it. `false` when that cannot be told (not root, so other users'
/// processes cannot be looked at).
pub(crate) fn netns_gone(id: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(inode) = id
        .strip_prefix("net:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return false;
    };
    if let Ok(names) = fs::read_dir("/run/netns") {
        for n in names.flatten() {
            if fs::metadata(n.path()).is_ok_and(|m| m.ino() == inode) {
                return false;
            }
        }
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    for p in procs.flatten() {
        let name = p.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        match fs::read_link(p.path().join("ns/net")) {
            Ok(link) if link.to_string_lossy() == id => return false,
            Ok(_) => {}
            // Exited meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Root that still cannot look is looking at a process outside its user
            // namespace (a container's pid 1 seen from inside), which no client here
            // created a namespace for; anyone else cannot be sure.
            Err(_) if is_root() => {}
            Err(_) => return false,
        }
    }
    true
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// What [`recover_abandoned_in`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The dead clients whose changes were undone, by pid.
    pub pids: Vec<u32>,
    /// What was undone, newest first per client ("route …", "/etc/resolv.conf", …).
    pub undone: Vec<String>,
}

impl Recovery {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }
}

/// [`recover_abandoned_in`] on [`DEFAULT_JOURNAL_DIR`]: what `warren client` calls first.
pub fn recover_abandoned() -> Result<Recovery, NetError> {
    recover_abandoned_in(Path::new(DEFAULT_JOURNAL_DIR))
}

/// Undoes what earlier clients in this network namespace changed and did not undo because
/// they died (crash, `kill -9`, power cut of the process): routes are deleted and the
/// original DNS configuration is put back, byte for byte, newest change first. Run it
/// before applying anything new. Clients that still run and clients of other namespaces
/// are left alone. A journal whose undo failed in part keeps the failed entries (for a
/// later run with the needed privileges), and the first failure is returned. Journals of
/// dead clients whose network namespace no longer exists are removed.
pub fn recover_abandoned_in(dir: &Path) -> Result<Recovery, NetError> {
    let netns = current_netns();
    let mut out = Recovery::default();
    let mut first = None;
    for (path, owner, changes) in journals(dir) {
        if owner.alive() {
            continue;
        }
        if owner.netns != netns {
            if netns_gone(&owner.netns) {
                // Its routes went with the namespace, and its resolv.conf was that
                // namespace's own: nothing is left to undo, only the files to remove.
                debug!(
                    "journal {} belongs to a network namespace that no longer exists; removed",
                    path.display()
                );
                for c in &changes {
                    if let Change::Dns(u) = c {
                        crate::dns::discard(u);
                    }
                }
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        info!(
            "undoing the network changes of warren client {} that ended without cleaning up",
            owner.pid
        );
        out.pids.push(owner.pid);
        out.undone
            .extend(changes.iter().rev().map(Change::describe));
        let file = JournalFile {
            dir: dir.to_path_buf(),
            path: path.clone(),
            owner: owner.clone(),
            failed: false,
        };
        let mut state = NetState::adopt(file, changes);
        if let Err(e) = state.restore() {
            warn!(
                "could not undo everything of client {}; what is left is kept in {}",
                owner.pid,
                path.display()
            );
            first.get_or_insert(e);
        }
        // Nothing left: the journal file is gone; else it keeps the rest for next time.
        debug!("journal {} recovered", path.display());
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let _ = fs::remove_file(dir.join(format!(".{name}.tmp")));
    }
    first.map_or(Ok(out), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips() {
        let owner = Owner {
            pid: 42,
            start: 12345,
            netns: "net:[4026531840]".into(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let changes = vec![
            Change::Route(RouteSpec {
                dst: IpNet::new(ip("203.0.113.10"), 32),
                via: Some(ip("198.18.0.1")),
                dev: Some("eth 0".into()),
                metric: None,
            }),
            Change::Route(RouteSpec {
                dst: IpNet::new(ip("0.0.0.0"), 1),
                via: None,
                dev: None,
                metric: Some(9),
            }),
            Change::Route(RouteSpec {
                dst: IpNet::new(ip("2001:db8::7"), 128),
                via: Some(ip("fe80::1")),
                dev: Some("eth0".into()),
                metric: None,
            }),
            Change::Route(RouteSpec {
                dst: IpNet::new(ip("fc00::"), 7),
                via: None,
                dev: Some("tun0".into()),
                metric: Some(1024),
            }),
            Change::Address(DeviceAddress {
                dev: "tun0".into(),
                addr: ip("fd00:8::1000"),
                prefix: 64,
            }),
            Change::Dns(DnsUndo::Resolved { dev: "tun0".into() }),
            Change::Dns(DnsUndo::Resolvconf {
                record: "tun0.warren".into(),
            }),
            Change::Dns(DnsUndo::File {
                path: "/etc/resolv.conf".into(),
                original: b"nameserver 192.0.2.1\n# no newline".to_vec(),
                written: Vec::new(),
                backup: Some("/run/warren/x y.backup".into()),
            }),
        ];
        let text = encode(&owner, &changes);
        let (o, c) = decode(&text).expect("decodes");
        assert_eq!(o, owner);
        assert_eq!(encode(&o, &c), text);
        assert_eq!(c.len(), changes.len());
        assert_eq!(
            c.iter().map(Change::describe).collect::<Vec<_>>()[..5],
            [
                "route 203.0.113.10/32 via 198.18.0.1 dev eth 0",
                "route 0.0.0.0/1 metric 9",
                "route 2001:db8::7/128 via fe80::1 dev eth0",
                "route fc00::/7 dev tun0 metric 1024",
                "address fd00:8::1000/64 dev tun0",
            ]
        );
        // A journal of the IPv4-only format reads the same.
        let old = format!(
            "{MAGIC}\n{}\nroute 10.1.0.0 16 10.8.0.1 74756e30 -\n",
            owner.line()
        );
        let (_, c) = decode(&old).expect("decodes");
        assert_eq!(c[0].describe(), "route 10.1.0.0/16 via 10.8.0.1 dev tun0");
        assert!(decode("something else\n").is_none());
        assert!(decode(&text.replace("route 0.0.0.0", "route x")).is_none());
    }

    #[test]
    fn hex_codec() {
        assert_eq!(unhex(&hex(b"\x00\xffab")), Some(b"\x00\xffab".to_vec()));
        assert_eq!(unhex(&hex(b"")), Some(Vec::new()));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn namespaces_that_exist_are_not_gone() {
        assert!(!netns_gone(&current_netns()));
        assert!(!netns_gone("garbage"));
    }

    #[test]
    fn our_own_process_is_alive() {
        let me = Owner::current();
        assert!(me.alive());
        assert!(!me.netns.is_empty());
        let other = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(!other.alive(), "same pid, other start time: a reused pid");
    }
}
