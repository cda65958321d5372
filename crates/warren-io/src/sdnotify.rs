//! systemd's service notification protocol (sd_notify(3)): newline-separated `KEY=VALUE`
//! assignments (`READY=1`, `STATUS=...`, `WATCHDOG=1`, `STOPPING=1`) sent as one datagram
//! to the `AF_UNIX` socket named by `$NOTIFY_SOCKET`, a path or, with a leading `@`, an
//! abstract-namespace name.
//!
//! The socket is connected when the [`Notifier`] is made, so a process that later gives up
//! root (or loses sight of the path) keeps its channel to the service manager: a connected
//! datagram socket is not checked against the path's permissions again.
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    /// `$NOTIFY_SOCKET` as given, for messages.
    name: String,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, or `None` when it is unset or empty (not
    /// started by systemd with `Type=notify`).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => {
                let v = v.into_string().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not UTF-8")
                })?;
                Notifier::connect(&v).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Connects to `name`: an absolute path, or `@NAME` for the abstract namespace.
    pub fn connect(name: &str) -> io::Result<Notifier> {
        let addr = if let Some(abs) = name.strip_prefix('@') {
            SocketAddr::from_abstract_name(abs.as_bytes())?
        } else if name.starts_with('/') {
            SocketAddr::from_pathname(name)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET={name}: expected a path or @name (vsock is not supported)"),
            ));
        };
        let sock = UnixDatagram::unbound()?;
        sock.connect_addr(&addr)?;
        sock.set_nonblocking(true)?;
        Ok(Notifier {
            sock,
            name: name.to_owned(),
        })
    }

    /// Sends `state` (one or more `KEY=VALUE` lines). Never blocks: a full queue at the
    /// service manager drops the message (`WouldBlock`).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.sock.send(state.as_bytes()).map(|_| ())
    }

    /// `$NOTIFY_SOCKET` as given.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The watchdog interval systemd expects pings within (`$WATCHDOG_USEC`, when
/// `$WATCHDOG_PID` is unset or this process), or `None` without a watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_from(&usec, pid.as_deref(), std::process::id())
}

fn watchdog_from(usec: &str, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(p) = pid
        && p.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    match usec.trim().parse::<u64>() {
        Ok(0) | Err(_) => None,
        Ok(us) => Some(Duration::from_micros(us)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_sockets_receive() {
        let dir = std::env::temp_dir().join(format!("warren-sdnotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier::connect(path.to_str().unwrap()).unwrap();
        n.notify("READY=1\nSTATUS=up").unwrap();
        let mut buf = [0u8; 64];
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1\nSTATUS=up");
        let _ = std::fs::remove_dir_all(&dir);

        let name = format!("warren-sdnotify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier::connect(&format!("@{name}")).unwrap();
        n.notify("WATCHDOG=1").unwrap();
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"WATCHDOG=1");

        assert!(Notifier::connect("relative/path").is_err());
        assert!(Notifier::connect("/nonexistent-warren/notify").is_err());
    }

    #[test]
    fn watchdog_interval_follows_the_pid() {
        assert_eq!(
            watchdog_from("3000000", None, 7),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            watchdog_from("3000000", Some("7"), 7),
            Some(Duration::from_secs(3))
        );
        assert_eq!(watchdog_from("3000000", Some("8"), 7), None);
        assert_eq!(watchdog_from("0", None, 7), None);
        assert_eq!(watchdog_from("soon", None, 7), None);
    }
}
