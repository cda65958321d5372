//! The signals the driver reacts to as a readable descriptor (`signalfd(2)`), for the
//! poll loop: SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2, as OpenVPN handles them (sig.c).
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A signal the driver reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (systemd stop, `kill`).
    Terminate,
    /// SIGHUP (OpenVPN: hard restart; the warren server reloads, the client reconnects).
    Hangup,
    /// SIGUSR1 (OpenVPN: soft restart, keeping the tun device).
    User1,
    /// SIGUSR2 (OpenVPN: write the status / statistics to the log).
    User2,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
            Signal::User1 => "SIGUSR1",
            Signal::User2 => "SIGUSR2",
        }
    }
}

/// SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2, blocked for normal delivery and read from a non-blocking
/// `signalfd` instead.
///
/// [`Signals::new`] blocks the signals in the **calling thread**; threads spawned later
/// inherit the mask. Create it on the main thread before spawning any thread, or another
/// thread may receive a signal with its default action (terminate). The mask is left in
/// place when this value is dropped.
#[derive(Debug)]
pub struct Signals {
    fd: OwnedFd,
}

const SIGNALS: [libc::c_int; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

impl Signals {
    pub fn new() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; `set` is valid for writes.
        if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: initialised by sigemptyset just above.
        let mut set = unsafe { set.assume_init() };
        for sig in SIGNALS {
            // SAFETY: `set` is an initialised sigset_t and `sig` a valid signal number.
            if unsafe { libc::sigaddset(&mut set, sig) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is initialised; a null old-set pointer is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: -1 asks for a new descriptor; `set` is initialised; the flags are valid.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: signalfd returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Signals { fd })
    }

    /// The next pending signal, or `None` when there is none.
    pub fn read(&self) -> io::Result<Option<Signal>> {
        loop {
            let mut info = MaybeUninit::<libc::signalfd_siginfo>::zeroed();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: `info` is valid for `size` bytes of writes and lives across the call.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if n.unsigned_abs() != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "short read from signalfd",
                ));
            }
            // SAFETY: the kernel wrote a whole signalfd_siginfo (checked size above), and the
            // struct was zeroed first, so every byte is initialised either way.
            let info = unsafe { info.assume_init() };
            let signo = libc::c_int::try_from(info.ssi_signo).unwrap_or(0);
            let sig = match signo {
                libc::SIGINT => Signal::Interrupt,
                libc::SIGTERM => Signal::Terminate,
                libc::SIGHUP => Signal::Hangup,
                libc::SIGUSR1 => Signal::User1,
                libc::SIGUSR2 => Signal::User2,
                // Not in our mask; cannot happen, ignore rather than fail.
                _ => continue,
            };
            return Ok(Some(sig));
        }
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_signal_is_read_from_the_fd() {
        // A dedicated thread: the mask is per thread, and raise() targets the caller.
        let h = std::thread::spawn(|| {
            let s = Signals::new().expect("signalfd");
            assert_eq!(s.read().expect("read"), None);
            // SAFETY: raising a signal that this thread blocks only makes it pending.
            assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
            assert_eq!(s.read().expect("read"), Some(Signal::Hangup));
            assert_eq!(s.read().expect("read"), None);
            // SAFETY: as above; both are blocked, so they stay pending until read.
            assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
            // SAFETY: as above.
            assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
            let mut got = [s.read().expect("read"), s.read().expect("read")];
            got.sort_by_key(|g| g.map(Signal::name));
            assert_eq!(got, [Some(Signal::User1), Some(Signal::User2)]);
            assert_eq!(s.read().expect("read"), None);
        });
        h.join().expect("thread");
    }
}
