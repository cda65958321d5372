//! `user` / `group`: give up root after the privileged setup (tun, bind).
use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;

use thiserror::Error;

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
}

/// Switches to `group` (supplementary groups reduced to it) and then to `user`.
///
/// With only `user`, the user's primary group is used as the group (so no root group
/// membership survives); with only `group`, the user id is kept. Both `None` is a no-op.
/// Returns the `(uid, gid)` now in effect.
pub fn drop_privileges(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<(u32, u32), PrivilegeError> {
    if user.is_none() && group.is_none() {
        // SAFETY: getuid/getgid cannot fail and have no preconditions.
        return Ok(unsafe { (libc::getuid(), libc::getgid()) });
    }
    let pw = user.map(lookup_user).transpose()?;
    let gid = match group {
        Some(g) => Some(lookup_group(g)?),
        None => pw.map(|(_, gid)| gid),
    };
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
    // SAFETY: getuid/getgid cannot fail and have no preconditions.
    Ok(unsafe { (libc::getuid(), libc::getgid()) })
}

/// `(uid, primary gid)` of a user name, or a numeric id.
fn lookup_user(name: &str) -> Result<(u32, u32), PrivilegeError> {
    let c = CString::new(name).map_err(|_| PrivilegeError::BadName(name.to_owned()))?;
    let mut buf = vec![0u8; 1024];
    loop {
        let mut pwd = MaybeUninit::<libc::passwd>::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call: `c` is NUL-terminated, `pwd` is a
        // writable passwd, `buf` a writable buffer of `buf.len()` bytes, `result` writable.
        let rc = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                pwd.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(PrivilegeError::Lookup {
                name: name.to_owned(),
                source: io::Error::from_raw_os_error(rc),
            });
        }
        if result.is_null() {
            return Err(PrivilegeError::UnknownUser(name.to_owned()));
        }
        // SAFETY: on success with a non-null result, getpwnam_r filled `pwd`.
        let pwd = unsafe { pwd.assume_init() };
        return Ok((pwd.pw_uid, pwd.pw_gid));
    }
}

fn lookup_group(name: &str) -> Result<u32, PrivilegeError> {
    let c = CString::new(name).map_err(|_| PrivilegeError::BadName(name.to_owned()))?;
    let mut buf = vec![0u8; 1024];
    loop {
        let mut grp = MaybeUninit::<libc::group>::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in lookup_user, every pointer is valid and writable for the call.
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                grp.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(PrivilegeError::Lookup {
                name: name.to_owned(),
                source: io::Error::from_raw_os_error(rc),
            });
        }
        if result.is_null() {
            return Err(PrivilegeError::UnknownGroup(name.to_owned()));
        }
        // SAFETY: on success with a non-null result, getgrnam_r filled `grp`.
        let grp = unsafe { grp.assume_init() };
        return Ok(grp.gr_gid);
    }
}

/// The name of the user running this process, for log lines (`None` if unknown).
pub fn current_user_name() -> Option<String> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut buf = vec![0u8; 4096];
    let mut pwd = MaybeUninit::<libc::passwd>::zeroed();
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid and writable for the call.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            pwd.as_mut_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: filled on success; pw_name points into `buf`, NUL-terminated, alive here.
    let name = unsafe { CStr::from_ptr(pwd.assume_init().pw_name) };
    Some(name.to_string_lossy().into_owned())
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
    }

    #[test]
    fn none_is_a_noop() {
        let (uid, gid) = drop_privileges(None, None).expect("noop");
        // SAFETY: getuid/getgid cannot fail.
        assert_eq!((uid, gid), unsafe { (libc::getuid(), libc::getgid()) });
    }

    /// Runs only as the child of `drops_in_a_child_process` (setuid affects the whole
    /// process, so it must not run inside the shared test harness process).
    #[test]
    fn child_entry_drop_to_nobody() {
        if std::env::var_os("WARREN_IO_PRIV_CHILD").is_none() {
            return;
        }
        match drop_privileges(Some("nobody"), None) {
            Ok((uid, _)) => {
                assert_ne!(uid, 0);
                // SAFETY: geteuid/setuid have no memory preconditions.
                assert_eq!(unsafe { libc::geteuid() }, uid);
                // SAFETY: as above; after the drop, regaining root must be refused.
                assert_ne!(unsafe { libc::setuid(0) }, 0, "root regained after drop");
            }
            // Not root: nothing to check beyond a clean error.
            Err(PrivilegeError::SetGroups { .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }

    #[test]
    fn drops_in_a_child_process() {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = std::process::Command::new(exe)
            .args([
                "--exact",
                "privs::tests::child_entry_drop_to_nobody",
                "--test-threads=1",
            ])
            .env("WARREN_IO_PRIV_CHILD", "1")
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
        assert!(status.success(), "child failed: {status}");
    }
}
