//! OpenVPN's `status` file, versions 1, 2 and 3.
//!
//! The layouts follow OpenVPN 2.6.14 multi.c `multi_print_status` column for column, so
//! existing tools (openvpn-monitor, PiVPN, VyOS scripts, openvpn-status parsers) read
//! warren's file unchanged. Rendering is pure; the driver writes the result atomically.
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use thiserror::Error;
use warren_core::PeerId;

/// Which layout (`status-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusVersion {
    /// Human-oriented sections: `OpenVPN CLIENT LIST`, `ROUTING TABLE`, `GLOBAL STATS`.
    V1,
    /// Tagged CSV lines (`HEADER`, `CLIENT_LIST`, ...).
    V2,
    /// As V2, tab-separated.
    V3,
}

impl StatusVersion {
    /// `status-version N`; OpenVPN accepts 1..=3.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            _ => None,
        }
    }
}

/// One client, already converted to what the file shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub common_name: String,
    pub real_addr: SocketAddr,
    pub vpn_ip: Option<Ipv4Addr>,
    /// The client's IPv6 tunnel address (the CLIENT_LIST's "Virtual IPv6 Address").
    pub vpn_ip6: Option<Ipv6Addr>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Unix seconds.
    pub connected_since: u64,
    /// Unix seconds of the last packet routed to this client's virtual address.
    pub last_ref: u64,
    pub username: Option<String>,
    /// OpenVPN's management client id (`cid`).
    pub client_id: u64,
    pub peer_id: PeerId,
    /// OpenVPN name of the data-channel cipher (`AES-256-GCM`), if negotiated.
    pub cipher: Option<String>,
}

/// Everything one status file shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSnapshot {
    /// `TITLE` line (OpenVPN: its version banner).
    pub title: String,
    /// Unix seconds at rendering.
    pub now: u64,
    pub clients: Vec<StatusRow>,
}

/// OpenVPN `tls_common_name(.., false)` / `tls_username(.., false)`: "UNDEF" when empty.
fn or_undef(s: Option<&str>) -> &str {
    match s {
        Some(s) if !s.is_empty() => s,
        _ => "UNDEF",
    }
}

/// mroute.c `mroute_addr_print`: IPv4 (and v4-mapped) as `a.b.c.d:port`; other IPv6
/// without the port ("v6addr:port" is too ambiguous, says the source).
fn real_addr(a: &SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(ip4) => format!("{}:{}", ip4, v6.port()),
            None => v6.ip().to_string(),
        },
    }
}

/// The ROUTING TABLE's entries: each client's IPv6 address, then its IPv4 address (the
/// order the stock server's lab output shows, openvpn-ops.md §2.2).
fn routes(clients: &[StatusRow]) -> impl Iterator<Item = (&StatusRow, IpAddr)> {
    clients.iter().flat_map(|c| {
        let v6 = c.vpn_ip6.map(|ip| (c, IpAddr::V6(ip)));
        let v4 = c.vpn_ip.map(|ip| (c, IpAddr::V4(ip)));
        v6.into_iter().chain(v4)
    })
}

/// Status fields come from certificates and peers: keep a hostile CN from forging lines
/// or columns (OpenVPN restricts CN characters at verification time; we sanitise here).
fn clean(s: &str, sep: char) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == sep || c == ',' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Renders the file. `time` formats Unix seconds the way OpenVPN's `time_string` does
/// (local time, `YYYY-MM-DD HH:MM:SS`); it is a parameter so tests can pin it.
pub fn render(
    version: StatusVersion,
    snap: &StatusSnapshot,
    time: &dyn Fn(u64) -> String,
) -> String {
    let mut out = String::with_capacity(256 + 160 * snap.clients.len());
    // `write!` into a String cannot fail; the results are folded into this one flag.
    let mut ok = true;
    match version {
        StatusVersion::V1 => {
            // multi.c multi_print_status, "Status file version 1".
            out.push_str("OpenVPN CLIENT LIST\n");
            ok &= writeln!(out, "Updated,{}", time(snap.now)).is_ok();
            out.push_str("Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since\n");
            for c in &snap.clients {
                ok &= writeln!(
                    out,
                    "{},{},{},{},{}",
                    clean(or_undef(Some(&c.common_name)), ','),
                    real_addr(&c.real_addr),
                    c.bytes_received,
                    c.bytes_sent,
                    time(c.connected_since)
                )
                .is_ok();
            }
            out.push_str("ROUTING TABLE\n");
            out.push_str("Virtual Address,Common Name,Real Address,Last Ref\n");
            for (c, ip) in routes(&snap.clients) {
                ok &= writeln!(
                    out,
                    "{},{},{},{}",
                    ip,
                    clean(or_undef(Some(&c.common_name)), ','),
                    real_addr(&c.real_addr),
                    time(c.last_ref)
                )
                .is_ok();
            }
            out.push_str("GLOBAL STATS\n");
            // Server mode always has the bcast/mcast buffer (multi.c multi_init); warren
            // queues none.
            out.push_str("Max bcast/mcast queue length,0\n");
            out.push_str("END\n");
        }
        StatusVersion::V2 | StatusVersion::V3 => {
            let s = if version == StatusVersion::V3 {
                '\t'
            } else {
                ','
            };
            ok &= writeln!(out, "TITLE{s}{}", clean(&snap.title, s)).is_ok();
            ok &= writeln!(out, "TIME{s}{}{s}{}", time(snap.now), snap.now).is_ok();
            let client_cols = [
                "Common Name",
                "Real Address",
                "Virtual Address",
                "Virtual IPv6 Address",
                "Bytes Received",
                "Bytes Sent",
                "Connected Since",
                "Connected Since (time_t)",
                "Username",
                "Client ID",
                "Peer ID",
                "Data Channel Cipher",
            ];
            ok &= write!(out, "HEADER{s}CLIENT_LIST").is_ok();
            for col in client_cols {
                ok &= write!(out, "{s}{col}").is_ok();
            }
            out.push('\n');
            for c in &snap.clients {
                let vip = c.vpn_ip.map(|ip| ip.to_string()).unwrap_or_default();
                let vip6 = c.vpn_ip6.map(|ip| ip.to_string()).unwrap_or_default();
                ok &= writeln!(
                    out,
                    "CLIENT_LIST{s}{}{s}{}{s}{}{s}{}{s}{}{s}{}{s}{}{s}{}{s}{}{s}{}{s}{}{s}{}",
                    clean(or_undef(Some(&c.common_name)), s),
                    real_addr(&c.real_addr),
                    vip,
                    vip6,
                    c.bytes_received,
                    c.bytes_sent,
                    time(c.connected_since),
                    c.connected_since,
                    clean(or_undef(c.username.as_deref()), s),
                    c.client_id,
                    c.peer_id,
                    // ssl_ncp.c translate_cipher_name_to_openvpn of an unset cipher: "none".
                    c.cipher.as_deref().unwrap_or("none"),
                )
                .is_ok();
            }
            ok &= writeln!(
                out,
                "HEADER{s}ROUTING_TABLE{s}Virtual Address{s}Common Name{s}Real Address{s}Last Ref{s}Last Ref (time_t)"
            )
            .is_ok();
            for (c, ip) in routes(&snap.clients) {
                ok &= writeln!(
                    out,
                    "ROUTING_TABLE{s}{}{s}{}{s}{}{s}{}{s}{}",
                    ip,
                    clean(or_undef(Some(&c.common_name)), s),
                    real_addr(&c.real_addr),
                    time(c.last_ref),
                    c.last_ref
                )
                .is_ok();
            }
            ok &= writeln!(out, "GLOBAL_STATS{s}Max bcast/mcast queue length{s}0").is_ok();
            ok &= writeln!(out, "GLOBAL_STATS{s}dco_enabled{s}0").is_ok();
            out.push_str("END\n");
        }
    }
    debug_assert!(ok, "formatting into a String cannot fail");
    out
}

#[derive(Debug, Error)]
#[error("writing status file {path}: {source}")]
pub struct StatusWriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The status file, opened at startup (before privileges are dropped) and rewritten on
/// every update.
///
/// Each update is written atomically (a temporary file beside it, then `rename(2)`), so a
/// reader never sees half a file. When the directory is not writable for the process (after
/// `user nobody`, or a root-owned file in a sticky directory), it falls back to OpenVPN's
/// way: truncate and rewrite in place through the descriptor opened at startup.
#[derive(Debug)]
pub struct StatusFile {
    path: PathBuf,
    /// Opened before the privilege drop; used only in place mode.
    held: std::fs::File,
    in_place: bool,
    /// An atomic replace worked: `held` now names the replaced inode, so falling back to
    /// it would write into a file nobody sees.
    replaced: bool,
}

impl StatusFile {
    /// Opens (creating it if needed) `path`. Like OpenVPN (status.c `status_open`, which
    /// fails hard), an unusable path is a startup error.
    pub fn open(path: &Path) -> Result<StatusFile, StatusWriteError> {
        let held = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| StatusWriteError {
                path: path.to_owned(),
                source,
            })?;
        Ok(StatusFile {
            path: path.to_owned(),
            held,
            in_place: false,
            replaced: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file's contents with `contents`.
    pub fn write(&mut self, contents: &str) -> Result<(), StatusWriteError> {
        if !self.in_place {
            match write_atomically(&self.path, contents) {
                Ok(()) => {
                    self.replaced = true;
                    return Ok(());
                }
                Err(e) if !self.replaced && e.source.kind() == io::ErrorKind::PermissionDenied => {
                    tracing::debug!(
                        "cannot replace {} atomically ({}); rewriting it in place from now on",
                        self.path.display(),
                        e.source
                    );
                    self.in_place = true;
                }
                Err(e) => return Err(e),
            }
        }
        self.rewrite_in_place(contents)
            .map_err(|source| StatusWriteError {
                path: self.path.clone(),
                source,
            })
    }

    fn rewrite_in_place(&mut self, contents: &str) -> io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        self.held.set_len(0)?;
        self.held.seek(SeekFrom::Start(0))?;
        self.held.write_all(contents.as_bytes())?;
        self.held.flush()
    }
}

/// Writes `contents` to `path` atomically: a temporary file beside it, fsync-free (status
/// files are advisory), then `rename(2)` over the old one, so readers never see half a file.
pub fn write_atomically(path: &Path, contents: &str) -> Result<(), StatusWriteError> {
    let err = |source| StatusWriteError {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| err(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    if let Err(e) = std::fs::write(&tmp, contents) {
        if let Err(rm) = std::fs::remove_file(&tmp) {
            tracing::trace!("removing {}: {rm}", tmp.display());
        }
        return Err(err(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        if let Err(rm) = std::fs::remove_file(&tmp) {
            tracing::trace!("removing {}: {rm}", tmp.display());
        }
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(t: u64) -> String {
        // Fixed, zone-free formatting for golden strings: seconds since 2024-01-01.
        let base = 1_704_067_200u64;
        let d = t.saturating_sub(base);
        format!(
            "2024-01-01 {:02}:{:02}:{:02}",
            d / 3600,
            (d / 60) % 60,
            d % 60
        )
    }

    fn snap() -> StatusSnapshot {
        StatusSnapshot {
            title: "warren 0.1.0 x86_64-linux".into(),
            now: 1_704_067_200 + 3600,
            clients: vec![
                StatusRow {
                    common_name: "alice".into(),
                    real_addr: "192.0.2.10:51234".parse().expect("addr"),
                    vpn_ip: Some(Ipv4Addr::new(10, 8, 0, 2)),
                    vpn_ip6: Some("fd00:8::1000".parse().expect("ip")),
                    bytes_received: 12345,
                    bytes_sent: 678,
                    connected_since: 1_704_067_200 + 60,
                    last_ref: 1_704_067_200 + 3599,
                    username: None,
                    client_id: 0,
                    peer_id: PeerId::new(0).expect("peer id"),
                    cipher: Some("AES-256-GCM".into()),
                },
                StatusRow {
                    common_name: "bob".into(),
                    real_addr: "[2001:db8::7]:1194".parse().expect("addr"),
                    vpn_ip: None,
                    vpn_ip6: None,
                    bytes_received: 0,
                    bytes_sent: 0,
                    connected_since: 1_704_067_200 + 120,
                    last_ref: 1_704_067_200 + 120,
                    username: Some("bob".into()),
                    client_id: 1,
                    peer_id: PeerId::new(1).expect("peer id"),
                    cipher: None,
                },
            ],
        }
    }

    #[test]
    fn version_1_golden() {
        let got = render(StatusVersion::V1, &snap(), &utc);
        let want = "\
OpenVPN CLIENT LIST
Updated,2024-01-01 01:00:00
Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since
alice,192.0.2.10:51234,12345,678,2024-01-01 00:01:00
bob,2001:db8::7,0,0,2024-01-01 00:02:00
ROUTING TABLE
Virtual Address,Common Name,Real Address,Last Ref
fd00:8::1000,alice,192.0.2.10:51234,2024-01-01 00:59:59
10.8.0.2,alice,192.0.2.10:51234,2024-01-01 00:59:59
GLOBAL STATS
Max bcast/mcast queue length,0
END
";
        assert_eq!(got, want);
    }

    #[test]
    fn version_2_golden() {
        let got = render(StatusVersion::V2, &snap(), &utc);
        let want = "\
TITLE,warren 0.1.0 x86_64-linux
TIME,2024-01-01 01:00:00,1704070800
HEADER,CLIENT_LIST,Common Name,Real Address,Virtual Address,Virtual IPv6 Address,Bytes Received,Bytes Sent,Connected Since,Connected Since (time_t),Username,Client ID,Peer ID,Data Channel Cipher
CLIENT_LIST,alice,192.0.2.10:51234,10.8.0.2,fd00:8::1000,12345,678,2024-01-01 00:01:00,1704067260,UNDEF,0,0,AES-256-GCM
CLIENT_LIST,bob,2001:db8::7,,,0,0,2024-01-01 00:02:00,1704067320,bob,1,1,none
HEADER,ROUTING_TABLE,Virtual Address,Common Name,Real Address,Last Ref,Last Ref (time_t)
ROUTING_TABLE,fd00:8::1000,alice,192.0.2.10:51234,2024-01-01 00:59:59,1704070799
ROUTING_TABLE,10.8.0.2,alice,192.0.2.10:51234,2024-01-01 00:59:59,1704070799
GLOBAL_STATS,Max bcast/mcast queue length,0
GLOBAL_STATS,dco_enabled,0
END
";
        assert_eq!(got, want);
    }

    #[test]
    fn version_3_is_version_2_with_tabs() {
        let v2 = render(StatusVersion::V2, &snap(), &utc);
        let v3 = render(StatusVersion::V3, &snap(), &utc);
        assert!(v3.starts_with(
            "TITLE\twarren 0.1.0 x86_64-linux\nTIME\t2024-01-01 01:00:00\t1704070800\n"
        ));
        // The fields contain no commas or tabs, so swapping separators maps one onto the other.
        assert_eq!(v3.replace('\t', ","), v2);
        assert!(
            v3.contains("CLIENT_LIST\talice\t192.0.2.10:51234\t10.8.0.2\tfd00:8::1000\t12345\t")
        );
    }

    #[test]
    fn empty_server_and_hostile_names() {
        let mut s = snap();
        s.clients.clear();
        let v1 = render(StatusVersion::V1, &s, &utc);
        assert!(v1.contains("Connected Since\nROUTING TABLE\nVirtual Address,Common Name,Real Address,Last Ref\nGLOBAL STATS"));
        let mut s = snap();
        s.clients[0].common_name = "evil\nCLIENT_LIST,x".into();
        s.clients[1].common_name = String::new();
        let v2 = render(StatusVersion::V2, &s, &utc);
        assert!(v2.contains("CLIENT_LIST,evil_CLIENT_LIST_x,"));
        assert!(v2.contains("CLIENT_LIST,UNDEF,2001:db8::7,"));
        assert_eq!(
            v2.lines().filter(|l| l.starts_with("CLIENT_LIST")).count(),
            2
        );
    }

    #[test]
    fn v4_mapped_real_address_shows_port() {
        let a: SocketAddr = "[::ffff:192.0.2.1]:1194".parse().expect("addr");
        assert_eq!(real_addr(&a), "192.0.2.1:1194");
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = std::env::temp_dir().join(format!("warren-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("status.log");
        write_atomically(&p, "one\n").expect("write 1");
        write_atomically(&p, "two\n").expect("write 2");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "two\n");
        let leftovers = std::fs::read_dir(&dir).expect("ls").count();
        assert_eq!(leftovers, 1, "temporary file left behind");
        let e = write_atomically(&dir.join("missing/dir/status"), "x").expect_err("no dir");
        assert!(e.to_string().contains("missing/dir/status"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn status_file_in_place_fallback() {
        let dir = std::env::temp_dir().join(format!("warren-status-ip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("status.log");
        let mut f = StatusFile::open(&p).expect("open");
        f.write("first version, long\n").expect("atomic");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "first version, long\n"
        );
        // In place mode writes through the descriptor opened at startup; re-open it, since
        // the atomic write above replaced the inode.
        let mut f = StatusFile::open(&p).expect("reopen");
        f.in_place = true;
        f.write("short\n").expect("in place");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "short\n",
            "old tail truncated"
        );
        assert_eq!(f.path(), p.as_path());
        assert!(StatusFile::open(&dir.join("no/such/dir/status")).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn versions() {
        assert_eq!(StatusVersion::from_number(1), Some(StatusVersion::V1));
        assert_eq!(StatusVersion::from_number(3), Some(StatusVersion::V3));
        assert_eq!(StatusVersion::from_number(0), None);
        assert_eq!(StatusVersion::from_number(4), None);
    }
}
