//! Advisory whole-file locks (`flock(2)`), for the state directory's lock file: held by an
//! open file, released when it is closed or the process dies (so a killed process never
//! leaves a stale lock behind). Safe wrappers; the one `unsafe` call is here.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock(2) only reads the descriptor number and the operation flags; `file`
        // keeps the descriptor open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes an exclusive lock on `file`, waiting for other holders.
pub fn lock_exclusive(file: &File) -> io::Result<()> {
    flock(file, libc::LOCK_EX)
}

/// Takes a shared lock on `file` (many readers, no exclusive holder), waiting if needed.
pub fn lock_shared(file: &File) -> io::Result<()> {
    flock(file, libc::LOCK_SH)
}

/// Takes an exclusive lock on `file` if nobody holds one: `Ok(false)` when it is held.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_until_closed() {
        let dir = std::env::temp_dir().join(format!("warren-io-flock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("lock");
        let a = File::create(&path).expect("create");
        let b = File::open(&path).expect("open");
        assert!(try_lock_exclusive(&a).expect("lock a"));
        // flock locks belong to the open file: a second open of the same file is excluded.
        assert!(!try_lock_exclusive(&b).expect("try b"));
        drop(a);
        assert!(try_lock_exclusive(&b).expect("lock b after a closed"));
        drop(b);
        let c = File::open(&path).expect("open");
        lock_shared(&c).expect("shared");
        let d = File::open(&path).expect("open");
        lock_shared(&d).expect("shared twice");
        assert!(!try_lock_exclusive(&File::open(&path).expect("open")).expect("try"));
        drop((c, d));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
