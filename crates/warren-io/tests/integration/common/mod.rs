//! Shared by the namespace tests: a bounded deadline, a namespace guard entered on a
//! dedicated thread, and a checked command runner.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use warren_io::Clock;

/// A time limit on the driver's clock (the workspace bans `std::time::Instant::now`).
pub struct Deadline {
    clock: Clock,
    at: warren_core::Instant,
}

impl Deadline {
    pub fn after(d: Duration) -> Deadline {
        let clock = Clock::new().expect("clock");
        Deadline {
            at: clock.now() + d,
            clock,
        }
    }

    pub fn passed(&self) -> bool {
        self.clock.now() >= self.at
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A namespace named after this process, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "wio-{}-{}-{}",
            tag,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a fresh thread that has entered the namespace; fails the test if it
    /// does not finish within `limit`.
    pub fn run<T: Send + 'static>(
        &self,
        limit: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let path = format!("/run/netns/{}", self.name);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns file");
            // SAFETY: setns with an open namespace descriptor and CLONE_NEWNET only changes
            // this thread's network namespace; the descriptor stays open across the call.
            let rc = unsafe { libc::setns(file.as_fd().as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            // The send fails only if the test already gave up waiting.
            if tx.send(f()).is_err() {
                eprintln!("netns thread finished after the deadline");
            }
        });
        match rx.recv_timeout(limit) {
            Ok(v) => v,
            Err(e) => panic!("netns thread did not finish within {limit:?} ({e})"),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also removes the tun devices created inside it.
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
        {
            Ok(st) if st.success() => {}
            Ok(st) => eprintln!("ip netns del {} exited with {st}", self.name),
            Err(e) => eprintln!("ip netns del {}: {e}", self.name),
        }
    }
}

pub fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(st.success(), "{cmd} {args:?} failed: {st}");
}
