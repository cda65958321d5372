//! DNS servers and search domains for the tunnel: systemd-resolved, resolvconf, or
//! `/etc/resolv.conf` itself.
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tracing::{debug, warn};

use crate::ip::{NetError, run};

/// `dhcp-option DNS` and `dhcp-option DOMAIN` values, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsSpec {
    pub servers: Vec<IpAddr>,
    pub domains: Vec<String>,
}

impl DnsSpec {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.domains.is_empty()
    }
}

/// How DNS settings reach the resolver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DnsBackend {
    /// Decide when applying: systemd-resolved if it manages `/etc/resolv.conf`, else
    /// `resolvconf` if installed, else rewrite `/etc/resolv.conf`.
    #[default]
    Auto,
    /// `resolvectl dns|domain <tun>`; undone with `resolvectl revert <tun>`.
    Resolved,
    /// `resolvconf -a <tun>.warren`; undone with `resolvconf -d <tun>.warren`.
    Resolvconf,
    /// Rewrite this file in place; its bytes are written back on restore.
    File(PathBuf),
}

pub(crate) const RESOLV_CONF: &str = "/etc/resolv.conf";
const RESOLVED_SOCKET: &str = "/run/systemd/resolve/io.systemd.Resolve";
const BACKUP_DIR: &str = "/run/warren";

/// How to take a DNS change back.
#[derive(Debug)]
pub(crate) enum DnsUndo {
    Resolved {
        dev: String,
    },
    Resolvconf {
        record: String,
    },
    File {
        path: PathBuf,
        original: Vec<u8>,
        written: Vec<u8>,
        backup: Option<PathBuf>,
    },
}

impl DnsUndo {
    pub(crate) fn describe(&self) -> String {
        match self {
            DnsUndo::Resolved { dev } => format!("systemd-resolved settings of {dev}"),
            DnsUndo::Resolvconf { record } => format!("resolvconf record {record}"),
            DnsUndo::File { path, .. } => path.display().to_string(),
        }
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Whether systemd-resolved runs and `/etc/resolv.conf` points at it.
fn resolved_manages_resolv_conf() -> bool {
    if !Path::new(RESOLVED_SOCKET).exists() || find_binary("resolvectl").is_none() {
        return false;
    }
    if let Ok(target) = fs::read_link(RESOLV_CONF) {
        return target.to_string_lossy().contains("systemd/resolve");
    }
    fs::read_to_string(RESOLV_CONF)
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "nameserver 127.0.0.53"))
}

/// Whether this process runs in another network namespace than init (pid 1), as under
/// `ip netns exec`. systemd-resolved and resolvconf serve the initial namespace only (and
/// name links by index, which means another device there), so a namespaced client uses
/// its own `/etc/resolv.conf`, the file `ip netns exec` bind-mounts from
/// `/etc/netns/<ns>/resolv.conf`.
fn in_other_netns() -> bool {
    match (
        fs::read_link("/proc/self/ns/net"),
        fs::read_link("/proc/1/ns/net"),
    ) {
        (Ok(me), Ok(init)) => me != init,
        _ => false,
    }
}

/// The backend `Auto` stands for on this machine.
pub(crate) fn pick(backend: &DnsBackend) -> DnsBackend {
    match backend {
        DnsBackend::Auto if in_other_netns() => DnsBackend::File(PathBuf::from(RESOLV_CONF)),
        DnsBackend::Auto if resolved_manages_resolv_conf() => DnsBackend::Resolved,
        DnsBackend::Auto if find_binary("resolvconf").is_some() => DnsBackend::Resolvconf,
        DnsBackend::Auto => DnsBackend::File(PathBuf::from(RESOLV_CONF)),
        other => other.clone(),
    }
}

/// Applies `spec` for tun device `dev`. With `full_tunnel` (redirect-gateway), resolved
/// sends every query to the tunnel's servers (`~.` routing domain).
pub(crate) fn apply(
    backend: &DnsBackend,
    dev: &str,
    spec: &DnsSpec,
    full_tunnel: bool,
) -> Result<DnsUndo, NetError> {
    match pick(backend) {
        DnsBackend::Resolved => {
            let bin = find_binary("resolvectl").unwrap_or_else(|| PathBuf::from("resolvectl"));
            let undo = DnsUndo::Resolved {
                dev: dev.to_owned(),
            };
            if !spec.servers.is_empty() {
                let mut a = vec!["dns".to_owned(), dev.to_owned()];
                a.extend(spec.servers.iter().map(|s| s.to_string()));
                run(&bin, &a)?;
            }
            let mut d = vec!["domain".to_owned(), dev.to_owned()];
            if full_tunnel {
                d.push("~.".to_owned());
            }
            d.extend(spec.domains.iter().cloned());
            if d.len() > 2 {
                run(&bin, &d)?;
            }
            Ok(undo)
        }
        DnsBackend::Resolvconf => {
            let bin = find_binary("resolvconf").unwrap_or_else(|| PathBuf::from("resolvconf"));
            let record = format!("{dev}.warren");
            let body = render_fragment(spec);
            let command = format!("resolvconf -a {record}");
            debug!("running `{command}`");
            let mut child = Command::new(&bin)
                .args(["-a", &record])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|source| NetError::Spawn {
                    command: command.clone(),
                    source,
                })?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(body.as_bytes())
                    .map_err(|source| NetError::Spawn {
                        command: command.clone(),
                        source,
                    })?;
            }
            let out = child.wait_with_output().map_err(|source| NetError::Spawn {
                command: command.clone(),
                source,
            })?;
            if !out.status.success() {
                return Err(NetError::Command {
                    command,
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            Ok(DnsUndo::Resolvconf { record })
        }
        DnsBackend::File(path) => apply_file(&path, dev, spec),
        DnsBackend::Auto => unreachable!("pick() never returns Auto"),
    }
}

fn apply_file(path: &Path, dev: &str, spec: &DnsSpec) -> Result<DnsUndo, NetError> {
    let err = |source| NetError::ResolvConf {
        path: path.to_path_buf(),
        source,
    };
    let original = fs::read(path).map_err(err)?;
    let rendered = render_resolv_conf(&String::from_utf8_lossy(&original), dev, spec).into_bytes();
    let backup = save_backup(path, dev, &original);
    write_in_place(path, &rendered).map_err(err)?;
    Ok(DnsUndo::File {
        path: path.to_path_buf(),
        original,
        written: rendered,
        backup,
    })
}

/// Keeps a copy of the original file on disk for recovery after a crash (best effort: the
/// restore itself uses the copy held in memory).
fn save_backup(path: &Path, dev: &str, original: &[u8]) -> Option<PathBuf> {
    let dir = Path::new(BACKUP_DIR);
    let name = path.file_name().map_or_else(
        || "resolv.conf".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let file = dir.join(format!("{name}.{dev}.{}.backup", std::process::id()));
    let r = fs::create_dir_all(dir).and_then(|()| fs::write(&file, original));
    match r {
        Ok(()) => Some(file),
        Err(e) => {
            warn!(
                "could not save a backup of {} to {}: {e} (the original is kept in memory)",
                path.display(),
                file.display()
            );
            None
        }
    }
}

/// Truncates and rewrites the file itself (no rename), so a bind-mounted or symlinked
/// resolv.conf is updated where it is.
fn write_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

pub(crate) fn undo(u: DnsUndo) -> Result<(), NetError> {
    match u {
        DnsUndo::Resolved { dev } => {
            let bin = find_binary("resolvectl").unwrap_or_else(|| PathBuf::from("resolvectl"));
            match run(&bin, &["revert".to_owned(), dev.clone()]) {
                Ok(_) => Ok(()),
                // The link is gone with the tun device: nothing left to revert.
                Err(NetError::Command { stderr, .. })
                    if stderr.contains("nterface") || stderr.contains("No such") =>
                {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        DnsUndo::Resolvconf { record } => {
            let bin = find_binary("resolvconf").unwrap_or_else(|| PathBuf::from("resolvconf"));
            run(&bin, &["-d".to_owned(), record, "-f".to_owned()]).map(|_| ())
        }
        DnsUndo::File {
            path,
            original,
            written,
            backup,
        } => {
            let err = |source| NetError::ResolvConf {
                path: path.clone(),
                source,
            };
            let current = fs::read(&path).map_err(err)?;
            if current != written {
                warn!(
                    "{} was changed by another program while warren ran; leaving it as it is{}",
                    path.display(),
                    backup
                        .as_ref()
                        .map(|b| format!(" (the original is in {})", b.display()))
                        .unwrap_or_default()
                );
                return Ok(());
            }
            write_in_place(&path, &original).map_err(err)?;
            if let Some(b) = backup {
                let _ = fs::remove_file(b);
            }
            Ok(())
        }
    }
}

/// The `resolvconf -a` input: nameserver and search lines only.
fn render_fragment(spec: &DnsSpec) -> String {
    let mut s = String::new();
    if !spec.domains.is_empty() {
        s.push_str(&format!("search {}\n", spec.domains.join(" ")));
    }
    for n in &spec.servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    s
}

/// The new `/etc/resolv.conf`: the tunnel's servers (glibc uses the first three) and
/// search domains; the original `options` lines are kept, and its `search`/`domain` lines
/// when the tunnel has no domains of its own.
pub(crate) fn render_resolv_conf(original: &str, dev: &str, spec: &DnsSpec) -> String {
    let mut s = format!(
        "# Generated by warren for {dev}; the previous file is restored when warren exits.\n"
    );
    let keyword = |l: &str| {
        l.split_whitespace()
            .next()
            .map(str::to_owned)
            .unwrap_or_default()
    };
    if spec.domains.is_empty() {
        for l in original
            .lines()
            .filter(|l| matches!(keyword(l).as_str(), "search" | "domain"))
        {
            s.push_str(l);
            s.push('\n');
        }
    } else {
        s.push_str(&format!("search {}\n", spec.domains.join(" ")));
    }
    if spec.servers.is_empty() {
        for l in original.lines().filter(|l| keyword(l) == "nameserver") {
            s.push_str(l);
            s.push('\n');
        }
    }
    for n in &spec.servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    for l in original.lines().filter(|l| keyword(l) == "options") {
        s.push_str(l);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(servers: &[&str], domains: &[&str]) -> DnsSpec {
        DnsSpec {
            servers: servers.iter().map(|s| s.parse().expect("ip")).collect(),
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    #[test]
    fn renders_tunnel_servers_and_keeps_options() {
        let orig =
            "# comment\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0 trust-ad\n";
        let out = render_resolv_conf(
            orig,
            "tun0",
            &spec(&["10.8.0.1", "10.8.0.2"], &["vpn.example"]),
        );
        assert_eq!(
            out,
            "# Generated by warren for tun0; the previous file is restored when warren exits.\n\
             search vpn.example\nnameserver 10.8.0.1\nnameserver 10.8.0.2\noptions edns0 trust-ad\n"
        );
        // No pushed domains: the original search line stays.
        let out = render_resolv_conf(orig, "tun0", &spec(&["10.8.0.1"], &[]));
        assert!(out.contains("search corp.example\n"), "{out}");
        assert!(!out.contains("192.0.2.53"), "{out}");
        // Only domains: the original servers stay.
        let out = render_resolv_conf(orig, "tun0", &spec(&[], &["a.example"]));
        assert!(out.contains("nameserver 192.0.2.53\n"), "{out}");
    }

    #[test]
    fn file_backend_restores_bytes_exactly() {
        let dir = std::env::temp_dir().join(format!("warren-net-dns-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("resolv.conf");
        let original = b"nameserver 192.0.2.1\n# no trailing newline".to_vec();
        fs::write(&path, &original).expect("write");
        let undo_rec = apply(
            &DnsBackend::File(path.clone()),
            "tunX",
            &spec(&["10.8.0.1"], &["x.example"]),
            true,
        )
        .expect("apply");
        let now = fs::read_to_string(&path).expect("read");
        assert!(now.contains("nameserver 10.8.0.1"), "{now}");
        undo(undo_rec).expect("undo");
        assert_eq!(fs::read(&path).expect("read"), original);

        // Changed by someone else meanwhile: left alone.
        let undo_rec = apply(
            &DnsBackend::File(path.clone()),
            "tunX",
            &spec(&["10.8.0.1"], &[]),
            false,
        )
        .expect("apply");
        fs::write(&path, b"nameserver 203.0.113.9\n").expect("write");
        let backup = match &undo_rec {
            DnsUndo::File { backup, .. } => backup.clone(),
            _ => None,
        };
        undo(undo_rec).expect("undo");
        assert_eq!(fs::read(&path).expect("read"), b"nameserver 203.0.113.9\n");
        // The on-disk backup is kept for the admin in that case; remove ours.
        if let Some(b) = backup {
            assert!(b.exists());
            let _ = fs::remove_file(b);
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn fragment_for_resolvconf() {
        assert_eq!(
            render_fragment(&spec(&["10.8.0.1"], &["a", "b"])),
            "search a b\nnameserver 10.8.0.1\n"
        );
    }
}
