//! [`warren_core::Rng`] over the kernel's `getrandom(2)`.
use std::io;

/// The operating system's CSPRNG (`getrandom(2)`, blocking only until the pool is
/// initialised at boot).
#[derive(Debug, Clone, Copy)]
pub struct OsRng {
    _private: (),
}

impl OsRng {
    /// Checks once that the system call works, so a later [`warren_core::Rng::fill`] cannot
    /// fail for want of it (it would panic: a VPN without randomness must not run).
    pub fn new() -> io::Result<Self> {
        let mut probe = [0u8; 16];
        getrandom(&mut probe)?;
        Ok(OsRng { _private: () })
    }
}

fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid writable region of `rest.len()` bytes for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // n >= 0 here and at most rest.len().
        done += n.unsigned_abs();
    }
    Ok(())
}

impl warren_core::Rng for OsRng {
    fn fill(&mut self, buf: &mut [u8]) {
        if let Err(e) = getrandom(buf) {
            panic!("invariant: getrandom(2) works after OsRng::new probed it: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::Rng;

    #[test]
    fn fills_large_buffers_with_varied_bytes() {
        let mut r = OsRng::new().expect("getrandom");
        let mut a = vec![0u8; 100_000];
        let mut b = vec![0u8; 100_000];
        r.fill(&mut a);
        r.fill(&mut b);
        assert_ne!(a, b);
        assert!(a.iter().filter(|&&x| x == 0).count() < 1_000);
    }
}
