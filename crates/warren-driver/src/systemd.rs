//! The server under systemd (`Type=notify`, `WatchdogSec=`): `READY=1` once the loop is
//! about to serve (sockets bound, tun up, privileges dropped, workers running), `STATUS=`
//! with the number of connected clients when it changes, `WATCHDOG=1` at half the
//! watchdog interval from the control loop itself (so a stuck loop stops the pings and
//! systemd restarts it), `RELOADING=1` around SIGHUP and `STOPPING=1` at SIGTERM/SIGINT.
//! Without `$NOTIFY_SOCKET` none of this exists. The socket work is warren-io's
//! ([`Notifier`]).
use std::time::Duration;

use tracing::{debug, info, warn};
use warren_core::Instant;
use warren_io::Notifier;

/// The notifier and the watchdog schedule.
#[derive(Debug)]
pub struct Systemd {
    notifier: Notifier,
    /// Half of `$WATCHDOG_USEC`: how often to ping.
    ping_every: Option<Duration>,
    next_ping: Option<Instant>,
    /// Connected clients as last reported in `STATUS=`.
    reported: Option<usize>,
    /// A send failed (warned once).
    failing: bool,
}

impl Systemd {
    /// From `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`; `None` when not started by systemd
    /// with `Type=notify` (or when the socket is unusable, with a warning).
    pub fn from_env() -> Option<Systemd> {
        let notifier = match Notifier::from_env() {
            Ok(Some(n)) => n,
            Ok(None) => return None,
            Err(e) => {
                warn!("NOTIFY_SOCKET is set but unusable ({e}); not notifying systemd");
                return None;
            }
        };
        let ping_every = warren_io::watchdog_interval().map(|d| d / 2);
        Some(Systemd {
            notifier,
            ping_every,
            next_ping: None,
            reported: None,
            failing: false,
        })
    }

    fn send(&mut self, state: &str) {
        match self.notifier.notify(state) {
            Ok(()) => self.failing = false,
            Err(e) if self.failing => debug!("systemd notification failed: {e}"),
            Err(e) => {
                warn!(
                    "notifying systemd at {} failed: {e} (further failures at debug level)",
                    self.notifier.name()
                );
                self.failing = true;
            }
        }
    }

    /// The server is up: `READY=1` with the first status, and the watchdog starts.
    pub(crate) fn ready(&mut self, now: Instant, clients: usize) {
        self.reported = Some(clients);
        self.send(&format!("READY=1\nSTATUS={}", status(clients)));
        if let Some(every) = self.ping_every {
            info!(
                "systemd: ready; watchdog pings every {} ms",
                every.as_millis()
            );
            self.send("WATCHDOG=1");
            self.next_ping = Some(now + every);
        } else {
            info!("systemd: ready");
        }
    }

    /// Once per wake-up of the control loop: the watchdog ping when due, the status when
    /// the number of clients changed.
    pub(crate) fn tick(&mut self, now: Instant, clients: usize) {
        if let (Some(at), Some(every)) = (self.next_ping, self.ping_every)
            && now >= at
        {
            self.send("WATCHDOG=1");
            self.next_ping = Some(now + every);
        }
        if self.reported.is_some_and(|r| r != clients) {
            self.reported = Some(clients);
            self.send(&format!("STATUS={}", status(clients)));
        }
    }

    /// When the next watchdog ping is due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.next_ping
    }

    pub(crate) fn reloading(&mut self) {
        self.send("RELOADING=1\nSTATUS=reloading");
    }

    pub(crate) fn reloaded(&mut self, clients: usize) {
        self.reported = Some(clients);
        self.send(&format!("READY=1\nSTATUS={}", status(clients)));
    }

    pub(crate) fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=shutting down");
    }
}

fn status(clients: usize) -> String {
    match clients {
        1 => "serving, 1 client connected".to_owned(),
        n => format!("serving, {n} clients connected"),
    }
}
