//! Readiness for a handful of descriptors: `ppoll(2)`, nanosecond timeouts.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Which readiness to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Readable,
    Writable,
    Both,
}

impl Interest {
    fn events(self) -> libc::c_short {
        match self {
            Interest::Readable => libc::POLLIN,
            Interest::Writable => libc::POLLOUT,
            Interest::Both => libc::POLLIN | libc::POLLOUT,
        }
    }
}

/// A registration handle returned by [`Poller::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(usize);

/// A fixed set of descriptors polled together.
///
/// The set is meant for a driver's few long-lived descriptors (socket, tun, signal fd):
/// `poll(2)` is cheaper than epoll for three descriptors and needs no kernel object.
/// The poller stores descriptor numbers, not ownership: the owner must keep each descriptor
/// open while it is registered (a closed one reports `POLLNVAL`, which [`Poller::wait`]
/// turns into an error rather than spinning).
#[derive(Debug, Default)]
pub struct Poller {
    fds: Vec<libc::pollfd>,
}

impl Poller {
    pub fn new() -> Self {
        Poller {
            fds: Vec::with_capacity(4),
        }
    }

    /// Registers `fd` for `interest`.
    pub fn add(&mut self, fd: BorrowedFd<'_>, interest: Interest) -> Token {
        self.fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events: interest.events(),
            revents: 0,
        });
        Token(self.fds.len() - 1)
    }

    /// Changes what a registered descriptor waits for (for example, add `Writable` while a
    /// send queue is backed up).
    pub fn set_interest(&mut self, token: Token, interest: Interest) {
        if let Some(p) = self.fds.get_mut(token.0) {
            p.events = interest.events();
        }
    }

    /// Descriptors registered.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Forgets every registration from the `len`-th on (their tokens become invalid), so a
    /// driver can keep its fixed descriptors first and re-add a changing set (TCP
    /// connections) before each wait.
    pub fn truncate(&mut self, len: usize) {
        self.fds.truncate(len);
    }

    /// Waits until a registered descriptor is ready or `timeout` passes (`None`: forever).
    /// Returns how many descriptors are ready (0 on timeout or when a signal interrupted
    /// the wait).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        for p in &mut self.fds {
            p.revents = 0;
        }
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(d.subsec_nanos()),
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        let nfds = libc::nfds_t::try_from(self.fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `self.fds` is a valid array of `nfds` pollfd structs that the kernel may
        // write `revents` into; `ts_ptr` is null or points at `ts`, alive across the call;
        // a null sigmask leaves the signal mask unchanged.
        let rc = unsafe { libc::ppoll(self.fds.as_mut_ptr(), nfds, ts_ptr, std::ptr::null()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        if let Some(bad) = self.fds.iter().find(|p| p.revents & libc::POLLNVAL != 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("poll: descriptor {} is not open", bad.fd),
            ));
        }
        Ok(usize::try_from(rc).unwrap_or(0))
    }

    /// Whether the last [`Poller::wait`] found `token` readable (or in error/hang-up, which
    /// a read then reports).
    pub fn is_readable(&self, token: Token) -> bool {
        self.fds
            .get(token.0)
            .is_some_and(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
    }

    /// Whether the last [`Poller::wait`] found `token` writable (or in error).
    pub fn is_writable(&self, token: Token) -> bool {
        self.fds
            .get(token.0)
            .is_some_and(|p| p.revents & (libc::POLLOUT | libc::POLLERR) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn times_out_then_sees_readable() {
        let (mut a, b) = UnixStream::pair().expect("socketpair");
        let mut p = Poller::new();
        let t = p.add(b.as_fd(), Interest::Readable);
        let clock = crate::Clock::new().expect("clock");
        let start = clock.now();
        assert_eq!(p.wait(Some(Duration::from_millis(20))).expect("poll"), 0);
        assert!(clock.now() - start >= Duration::from_millis(19));
        assert!(!p.is_readable(t));
        a.write_all(b"x").expect("write");
        assert_eq!(p.wait(Some(Duration::from_secs(5))).expect("poll"), 1);
        assert!(p.is_readable(t));
        p.set_interest(t, Interest::Writable);
        assert_eq!(p.wait(Some(Duration::ZERO)).expect("poll"), 1);
        assert!(p.is_writable(t));
    }
}
