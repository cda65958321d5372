//! The zero-config server's IPv6 network: a unique local /64 (RFC 4193) of its own.
//!
//! The prefix is `fdXX:XXXX:XXXX::/64`, its 40-bit global id taken from a hash of a random
//! install id kept in the state directory (`install-id`, created once), so every
//! installation gets its own network (two VPNs a client joins do not collide, which RFC 4193
//! §3.2 asks for) and the network stays the same across restarts: exported profiles need no
//! change, since the server pushes the addresses.
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv6Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use warren_core::Rng;

/// The install id's file in the state directory.
fn id_path(state_dir: &Path) -> PathBuf {
    state_dir.join("install-id")
}

/// Makes sure the state directory holds an install id (16 random bytes, hex), creating the
/// directory (mode 0700) and the id if needed. Two servers starting at once agree: the id
/// is written to a temporary file and linked into place, which fails if another got there
/// first, and then that one is used.
pub fn ensure_install_id(state_dir: &Path) -> Result<()> {
    let path = id_path(state_dir);
    if path.exists() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let mut id = [0u8; 16];
    warren_io::OsRng::new()
        .context("the kernel random generator (getrandom) is unavailable")?
        .fill(&mut id);
    let text: String = id.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n";
    let tmp = state_dir.join(format!(".install-id.tmp{}", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        match fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result.with_context(|| format!("writing {}", path.display()))
}

/// The /64 for this state directory, if it has an install id and this host has IPv6.
pub fn zero_config_prefix(state_dir: &Path) -> Option<(Ipv6Addr, u8)> {
    if !host_has_ipv6() {
        return None;
    }
    let id = fs::read_to_string(id_path(state_dir)).ok()?;
    let id = id.trim();
    if id.len() < 16 {
        return None;
    }
    Some((prefix_from_id(id), 64))
}

/// `fd` + the first 40 bits of SHA-256("warren ULA" || id) + subnet id 0.
fn prefix_from_id(id: &str) -> Ipv6Addr {
    let h = Sha256::new()
        .chain_update(b"warren ULA\0")
        .chain_update(id.as_bytes())
        .finalize();
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[1..6].copy_from_slice(&h[..5]);
    Ipv6Addr::from(a)
}

/// Whether new devices get IPv6 here (not booted with `ipv6.disable=1`, not
/// `net.ipv6.conf.default.disable_ipv6 = 1`).
fn host_has_ipv6() -> bool {
    fs::read_to_string("/proc/sys/net/ipv6/conf/default/disable_ipv6")
        .is_ok_and(|v| v.trim() == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_a_stable_unique_local_slash_64() {
        let a = prefix_from_id("00112233445566778899aabbccddeeff");
        assert_eq!(a, prefix_from_id("00112233445566778899aabbccddeeff"));
        assert_ne!(a, prefix_from_id("00112233445566778899aabbccddeefe"));
        let s = a.segments();
        assert_eq!(s[0] >> 8, 0xfd, "fd00::/8: locally assigned ULA");
        assert_eq!(&s[3..], &[0; 5], "subnet id 0, host part 0");
    }

    #[test]
    fn the_install_id_is_created_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("state");
        ensure_install_id(&dir).expect("create");
        let first = fs::read_to_string(id_path(&dir)).expect("id");
        assert_eq!(first.trim().len(), 32);
        ensure_install_id(&dir).expect("again");
        assert_eq!(fs::read_to_string(id_path(&dir)).expect("id"), first);
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, ["install-id"]);
        if host_has_ipv6() {
            let (p, len) = zero_config_prefix(&dir).expect("prefix");
            assert_eq!((p, len), (prefix_from_id(first.trim()), 64));
        }
        assert_eq!(zero_config_prefix(tmp.path()), None, "no id, no prefix");
    }
}
