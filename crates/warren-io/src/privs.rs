//! `user` / `group`: give up root after the privileged setup (tun, bind), keeping only
//! `CAP_NET_ADMIN` when asked, like OpenVPN run with `user`/`group` but without losing the
//! ability to change routes.
//!
//! The sequence ([`drop_privileges`]): look the names up (while `/etc` is still readable),
//! set `PR_SET_KEEPCAPS` so the permitted set survives `setuid`, drop every other capability
//! from the bounding set (so no later `execve`, not even of a setuid-root binary, can get
//! them back), `setgroups` + `setgid` + `setuid`, then `capset` the effective and permitted
//! sets down to `CAP_NET_ADMIN` alone (inheritable and ambient empty) and clear
//! `PR_SET_KEEPCAPS` again.
//!
//! Threads: glibc applies `setuid`/`setgid` to every thread of the process, but capability
//! sets and `PR_SET_KEEPCAPS` are per thread. Other threads that exist at the drop lose all
//! their capabilities (they had no `PR_SET_KEEPCAPS`) but keep a full bounding set; threads
//! started after the drop inherit the caller's reduced sets. Drop before spawning threads.
use std::io;

use nix::unistd::{Gid, Group, Uid, User};
use thiserror::Error;

/// `CAP_NET_ADMIN` (linux/capability.h): routes, addresses, links, tun devices.
pub const CAP_NET_ADMIN: u32 = 12;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// linux/capability.h `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// linux/capability.h `struct __user_cap_data_struct` (one of two for version 3).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    #[error("group {0:?} does not exist")]
    UnknownGroup(String),
    #[error("{0:?} contains a NUL byte")]
    BadName(String),
    #[error("looking up {name:?}: {source}")]
    Lookup { name: String, source: io::Error },
    #[error("setgroups([{gid}]): {source} (dropping privileges needs to start as root)")]
    SetGroups { gid: u32, source: io::Error },
    #[error("setgid({gid}): {source}")]
    SetGid { gid: u32, source: io::Error },
    #[error("setuid({uid}): {source}")]
    SetUid { uid: u32, source: io::Error },
    #[error("prctl(PR_SET_KEEPCAPS): {0}")]
    KeepCaps(io::Error),
    #[error("capset (keeping CAP_NET_ADMIN after the user change): {0}")]
    Capset(io::Error),
    #[error("prctl(PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN) (needs Linux 4.3): {0}")]
    Ambient(io::Error),
}

/// What [`drop_privileges`] left in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub uid: u32,
    pub gid: u32,
    /// The effective capability set afterwards (bit `n` = capability `n`).
    pub effective_caps: u64,
}

impl Dropped {
    /// `CAP_NET_ADMIN` is still effective.
    pub fn has_net_admin(&self) -> bool {
        self.effective_caps & (1 << CAP_NET_ADMIN) != 0
    }
}

/// What survives a switch away from root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepCaps {
    /// Nothing: every capability is gone.
    Nothing,
    /// `CAP_NET_ADMIN` in the effective and permitted sets (routes, tun, kicks); programs
    /// this process runs get nothing.
    NetAdmin,
    /// `CAP_NET_ADMIN` also in the inheritable and ambient sets, so the programs this
    /// process runs (`ip route ...`) have it too. For the client, which changes routes
    /// through iproute2.
    NetAdminForChildren,
}

/// Switches to `group` (supplementary groups reduced to it) and then to `user`.
///
/// With only `user`, the user's primary group is used as the group (so no root group
/// membership survives); with only `group`, the user id (and its capabilities) is kept.
/// Both `None` is a no-op. `keep` says which capabilities survive a switch away from root
/// (see [`KeepCaps`]); the bounding set keeps only those, so no later `execve` can regain
/// the others.
pub fn drop_privileges(
    user: Option<&str>,
    group: Option<&str>,
    keep: KeepCaps,
) -> Result<Dropped, PrivilegeError> {
    if user.is_none() && group.is_none() {
        return Ok(current());
    }
    let pw = user.map(lookup_user).transpose()?;
    let gid = match group {
        Some(g) => Some(lookup_group(g)?),
        None => pw.map(|(_, gid)| gid),
    };
    // SAFETY: geteuid cannot fail and has no preconditions.
    let leaving_root = unsafe { libc::geteuid() } == 0 && pw.is_some_and(|(uid, _)| uid != 0);
    let children = keep == KeepCaps::NetAdminForChildren;
    let keep = keep != KeepCaps::Nothing && leaving_root;
    if keep {
        set_keepcaps(true)?;
        shrink_bounding_set(1 << CAP_NET_ADMIN);
    } else if leaving_root {
        shrink_bounding_set(0);
    }
    if let Some(gid) = gid {
        let groups = [gid];
        // SAFETY: `groups` is a valid array of one gid_t for the duration of the call.
        if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
            return Err(PrivilegeError::SetGroups {
                gid,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: setgid has no memory preconditions.
        if unsafe { libc::setgid(gid) } != 0 {
            return Err(PrivilegeError::SetGid {
                gid,
                source: io::Error::last_os_error(),
            });
        }
    }
    if let Some((uid, _)) = pw {
        // SAFETY: setuid has no memory preconditions.
        if unsafe { libc::setuid(uid) } != 0 {
            return Err(PrivilegeError::SetUid {
                uid,
                source: io::Error::last_os_error(),
            });
        }
    }
    if keep {
        let bits = 1u32 << CAP_NET_ADMIN;
        let data = [
            CapData {
                effective: bits,
                permitted: bits,
                inheritable: if children { bits } else { 0 },
            },
            CapData::default(),
        ];
        let header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        // SAFETY: `header` and `data` are valid, properly laid out (repr(C)) structures of
        // the sizes capset(2) reads for version 3 (one header, two data words).
        if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
            return Err(PrivilegeError::Capset(io::Error::last_os_error()));
        }
        set_keepcaps(false)?;
        // SAFETY: prctl with integer arguments has no memory preconditions.
        let _ = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
        };
        if children {
            // SAFETY: as above. The capability is permitted and inheritable (set above),
            // which PR_CAP_AMBIENT_RAISE requires.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    libc::c_ulong::from(CAP_NET_ADMIN),
                    0,
                    0,
                )
            };
            if rc != 0 {
                return Err(PrivilegeError::Ambient(io::Error::last_os_error()));
            }
        }
    }
    Ok(current())
}

fn set_keepcaps(on: bool) -> Result<(), PrivilegeError> {
    // SAFETY: prctl with integer arguments has no memory preconditions.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, libc::c_ulong::from(on), 0, 0, 0) } != 0 {
        return Err(PrivilegeError::KeepCaps(io::Error::last_os_error()));
    }
    Ok(())
}

/// Removes every capability not in `keep` from this thread's bounding set (best effort: it
/// needs CAP_SETPCAP, and the loop ends at the first capability the kernel does not know).
fn shrink_bounding_set(keep: u64) {
    for cap in 0..64u32 {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments has no memory preconditions.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
        {
            break;
        }
    }
}

/// The calling thread's effective capability set (bit `n` = capability `n`).
pub fn effective_capabilities() -> io::Result<u64> {
    let header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `header` is valid; `data` is writable room for the two words version 3
    // returns.
    if unsafe { libc::syscall(libc::SYS_capget, &header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

fn current() -> Dropped {
    // SAFETY: getuid/getgid cannot fail and have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    Dropped {
        uid,
        gid,
        effective_caps: effective_capabilities().unwrap_or(0),
    }
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a user of that name (or number) exists.
pub fn user_exists(name: &str) -> bool {
    lookup_user(name).is_ok()
}

/// Whether a group of that name (or number) exists.
pub fn group_exists(name: &str) -> bool {
    lookup_group(name).is_ok()
}

/// The uid of a user name (`management-client-user`).
pub fn user_id(name: &str) -> Option<u32> {
    lookup_user(name).ok().map(|(uid, _)| uid)
}

/// The gid of a group name (`management-client-group`).
pub fn group_id(name: &str) -> Option<u32> {
    lookup_group(name).ok()
}

/// `(uid, primary gid)` of a user name.
fn lookup_user(name: &str) -> Result<(u32, u32), PrivilegeError> {
    let u = lookup(name, User::from_name, PrivilegeError::UnknownUser)?;
    Ok((u.uid.as_raw(), u.gid.as_raw()))
}

fn lookup_group(name: &str) -> Result<u32, PrivilegeError> {
    let g = lookup(name, Group::from_name, PrivilegeError::UnknownGroup)?;
    Ok(g.gid.as_raw())
}

/// A passwd or group entry by name (nix grows the buffer as `getpwnam_r` asks).
fn lookup<T>(
    name: &str,
    by_name: fn(&str) -> nix::Result<Option<T>>,
    unknown: fn(String) -> PrivilegeError,
) -> Result<T, PrivilegeError> {
    if name.contains('\0') {
        return Err(PrivilegeError::BadName(name.to_owned()));
    }
    by_name(name)
        .map_err(|e| PrivilegeError::Lookup {
            name: name.to_owned(),
            source: e.into(),
        })?
        .ok_or_else(|| unknown(name.to_owned()))
}

/// The name of the user running this process, for log lines (`None` if unknown).
pub fn current_user_name() -> Option<String> {
    Some(User::from_uid(Uid::current()).ok()??.name)
}

/// The name of group `gid`, for log lines (`None` if unknown).
pub fn group_name(gid: u32) -> Option<String> {
    Some(Group::from_gid(Gid::from_raw(gid)).ok()??.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(lookup_user("root").expect("root exists").0, 0);
        assert_eq!(lookup_group("root").expect("root group"), 0);
        assert!(matches!(
            lookup_user("no-such-user-warren"),
            Err(PrivilegeError::UnknownUser(_))
        ));
        assert!(matches!(
            lookup_group("no-such-group-warren"),
            Err(PrivilegeError::UnknownGroup(_))
        ));
        assert!(matches!(
            lookup_user("a\0b"),
            Err(PrivilegeError::BadName(_))
        ));
        assert!(current_user_name().is_some());
        assert_eq!(group_name(0).as_deref(), Some("root"));
    }

    #[test]
    fn none_is_a_noop() {
        let d = drop_privileges(None, None, KeepCaps::NetAdmin).expect("noop");
        // SAFETY: getuid/getgid cannot fail.
        assert_eq!((d.uid, d.gid), unsafe { (libc::getuid(), libc::getgid()) });
    }

    /// Runs only as the child of `drops_in_a_child_process` (setuid affects the whole
    /// process, so it must not run inside the shared test harness process).
    /// `WARREN_IO_PRIV_CHILD` is `keep` (keep CAP_NET_ADMIN) or `none`.
    #[test]
    fn child_entry_drop_to_nobody() {
        let Some(mode) = std::env::var_os("WARREN_IO_PRIV_CHILD") else {
            return;
        };
        let (keep, how) = match mode.to_str() {
            Some("keep") => (true, KeepCaps::NetAdmin),
            Some("children") => (true, KeepCaps::NetAdminForChildren),
            _ => (false, KeepCaps::Nothing),
        };
        let children = how == KeepCaps::NetAdminForChildren;
        match drop_privileges(Some("nobody"), None, how) {
            Ok(d) => {
                assert_ne!(d.uid, 0);
                // SAFETY: geteuid/setuid have no memory preconditions.
                assert_eq!(unsafe { libc::geteuid() }, d.uid);
                let want = if keep { 1u64 << CAP_NET_ADMIN } else { 0 };
                assert_eq!(d.effective_caps, want, "effective set after the drop");
                assert_eq!(d.has_net_admin(), keep);
                let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
                let field = |name: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
                        .expect("field present")
                };
                assert_eq!(field("CapEff:"), want);
                assert_eq!(field("CapPrm:"), want);
                let inherited = if children { want } else { 0 };
                assert_eq!(field("CapInh:"), inherited);
                assert_eq!(field("CapAmb:"), inherited);
                assert_eq!(field("CapBnd:"), want, "bounding set");
                if children {
                    // A program it runs (no file capabilities) has CAP_NET_ADMIN too.
                    let out = std::process::Command::new("grep")
                        .args(["^CapEff:", "/proc/self/status"])
                        .output()
                        .expect("run grep");
                    let line = String::from_utf8_lossy(&out.stdout).into_owned();
                    assert!(line.trim().ends_with("0000000000001000"), "{line}");
                }
                // SAFETY: as above; after the drop, regaining root must be refused.
                assert_ne!(unsafe { libc::setuid(0) }, 0, "root regained after drop");
            }
            // Not root: nothing to check beyond a clean error.
            Err(PrivilegeError::SetGroups { .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }

    fn run_child(mode: &str) {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = std::process::Command::new(exe)
            .args([
                "--exact",
                "privs::tests::child_entry_drop_to_nobody",
                "--test-threads=1",
            ])
            .env("WARREN_IO_PRIV_CHILD", mode)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        // 3000 turns of 20 ms: at most about a minute.
        let mut turns = 0;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            turns += 1;
            if turns > 3000 {
                // Our own child, by PID.
                child.kill().expect("kill child");
                let _reaped = child.wait();
                panic!("child did not finish in 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(status.success(), "child ({mode}) failed: {status}");
    }

    #[test]
    fn drops_in_a_child_process() {
        run_child("none");
        run_child("keep");
        run_child("children");
    }
}
