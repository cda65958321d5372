//! External authentication off the data path: a worker thread that decides logins and
//! watches for revocations, talking to the server loop over channels.
//!
//! The model: with [`warren_openvpn::ServerConfig::external_auth`] the engine parks every new
//! client after key-method 2 and emits [`ServerEvent::AuthRequest`]. The loop must not decide
//! there: a password check costs ~30 ms of CPU (argon2id) and the user database does disk
//! I/O. So the loop hands each request to an [`Authenticator`] running on its own thread
//! ([`AuthWorker::spawn`]) and goes on moving packets. The worker answers through a channel
//! and writes one byte to a socket pair the loop polls; the loop then calls
//! [`Server::authorize`](warren_openvpn::Server::authorize). The worker also calls
//! [`Authenticator::recheck`] every [`AuthOptions::recheck_every`]; the identities it
//! returns are ended with [`Server::kick`](warren_openvpn::Server::kick), which is how
//! `warren pki revoke` or `warren user disable` in another process reach a running server
//! within a second.
//!
//! Stale answers: peer ids are slots the engine reuses. Each request carries a ticket; the
//! loop remembers the ticket per peer id until the decision arrives or the peer disconnects,
//! and drops a decision whose ticket is no longer current, so an answer about a client that
//! left can never admit the next client in the same slot.
//!
//! Failure is closed: if the worker thread dies, the loop stops with
//! [`crate::DriverError::AuthWorker`] rather than letting anyone in.
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use warren_core::Instant;
use warren_io::Clock;
use warren_openvpn::{AuthDecision, KickTarget};
use zeroize::Zeroizing;

/// One login to decide: [`warren_openvpn::ServerEvent::AuthRequest`] in owned form.
pub struct AuthRequest {
    /// The engine's peer id (a slot; reused after the client leaves).
    pub peer_id: u32,
    /// The client's address.
    pub addr: SocketAddr,
    /// The certificate's common name, or the user name when there is no certificate.
    pub common_name: String,
    /// The client's verified leaf certificate (DER), when it presented one.
    pub certificate: Option<Vec<u8>>,
    /// `auth-user-pass` user name.
    pub username: Option<String>,
    /// `auth-user-pass` password (wiped from memory when dropped).
    pub password: Option<Zeroizing<String>>,
}

impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("peer_id", &self.peer_id)
            .field("addr", &self.addr)
            .field("common_name", &self.common_name)
            .field("certificate", &self.certificate.as_ref().map(Vec::len))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// End the live sessions `target` names, sending `message` (`RESTART,...` or `HALT,...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    /// Whose sessions, for the log line.
    pub identity: String,
    /// All of the identity's sessions, or only those of one certificate.
    pub target: KickTarget,
    pub message: String,
    /// Why, for the log line.
    pub reason: String,
}

/// The login policy. Runs on the worker thread: it may block (password hashing, database),
/// but every call delays the next decision, so it should not block for long.
pub trait Authenticator: Send + 'static {
    /// Decides one login.
    fn authenticate(&mut self, now: Instant, request: AuthRequest) -> AuthDecision;
    /// A client the authenticator accepted got its address.
    fn connected(&mut self, now: Instant, peer_id: u32, identity: &str, vpn_ip: Ipv4Addr);
    /// A client (accepted or still waiting) left.
    fn disconnected(&mut self, now: Instant, peer_id: u32);
    /// Called about every [`AuthOptions::recheck_every`]: identities whose sessions must end
    /// now (revoked, disabled, deleted, expired).
    fn recheck(&mut self, now: Instant) -> Vec<Kick>;
}

/// Worker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthOptions {
    /// How often [`Authenticator::recheck`] runs.
    pub recheck_every: Duration,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            recheck_every: Duration::from_millis(250),
        }
    }
}

/// Loop → worker.
enum ToWorker {
    Request {
        ticket: u64,
        request: AuthRequest,
    },
    Connected {
        peer_id: u32,
        identity: String,
        vpn_ip: Ipv4Addr,
    },
    Disconnected {
        peer_id: u32,
    },
}

/// Worker → loop.
#[derive(Debug)]
pub(crate) enum FromWorker {
    Decision {
        ticket: u64,
        peer_id: u32,
        decision: AuthDecision,
    },
    Kick(Kick),
}

/// The loop's end of a running authentication worker.
pub struct AuthWorker {
    to: Sender<ToWorker>,
    from: Receiver<FromWorker>,
    /// Readable when the worker has sent something.
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
    /// Decisions not yet answered: peer id → ticket.
    pending: std::collections::HashMap<u32, u64>,
    next_ticket: u64,
}

impl fmt::Debug for AuthWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthWorker")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// The worker thread is gone (it panicked): nothing can be authorised any more.
#[derive(Debug)]
pub(crate) struct WorkerGone;

impl AuthWorker {
    /// Starts the worker thread. Call after [`warren_io::Signals::new`] (threads inherit the
    /// blocked signal mask).
    pub fn spawn(
        authenticator: Box<dyn Authenticator>,
        clock: Clock,
        opts: AuthOptions,
    ) -> io::Result<AuthWorker> {
        let (wake, wake_tx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let (to, rx) = mpsc::channel();
        let (tx, from) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("warren-auth".into())
            .spawn(move || worker(authenticator, clock, opts, rx, tx, wake_tx))?;
        Ok(AuthWorker {
            to,
            from,
            wake,
            thread: Some(thread),
            pending: std::collections::HashMap::new(),
            next_ticket: 0,
        })
    }

    /// The descriptor to poll for readability.
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Hands an `AuthRequest` to the worker.
    pub(crate) fn request(&mut self, request: AuthRequest) -> Result<(), WorkerGone> {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.pending.insert(request.peer_id, ticket);
        self.to
            .send(ToWorker::Request { ticket, request })
            .map_err(|_| WorkerGone)
    }

    pub(crate) fn connected(
        &mut self,
        peer_id: u32,
        identity: &str,
        vpn_ip: Ipv4Addr,
    ) -> Result<(), WorkerGone> {
        self.to
            .send(ToWorker::Connected {
                peer_id,
                identity: identity.to_owned(),
                vpn_ip,
            })
            .map_err(|_| WorkerGone)
    }

    pub(crate) fn disconnected(&mut self, peer_id: u32) -> Result<(), WorkerGone> {
        self.pending.remove(&peer_id);
        self.to
            .send(ToWorker::Disconnected { peer_id })
            .map_err(|_| WorkerGone)
    }

    /// Empties the wake socket and returns what the worker sent, dropping stale decisions.
    pub(crate) fn drain(&mut self, out: &mut Vec<FromWorker>) -> Result<(), WorkerGone> {
        let mut buf = [0u8; 64];
        loop {
            match (&self.wake).read(&mut buf) {
                // The worker's end closed: the thread is gone.
                Ok(0) => return Err(WorkerGone),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        loop {
            match self.from.try_recv() {
                Ok(FromWorker::Decision {
                    ticket,
                    peer_id,
                    decision,
                }) => {
                    if self.pending.get(&peer_id) == Some(&ticket) {
                        self.pending.remove(&peer_id);
                        out.push(FromWorker::Decision {
                            ticket,
                            peer_id,
                            decision,
                        });
                    }
                }
                Ok(k @ FromWorker::Kick(_)) => out.push(k),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(WorkerGone),
            }
        }
    }

    /// Stops the worker: closes its queue and waits up to `grace` for the thread to finish
    /// what it was doing (a database write); after that it is left to end with the process.
    pub(crate) fn stop(mut self, grace: Duration) {
        let (dead_tx, _) = mpsc::channel();
        // Dropping the sender ends the worker's receive loop.
        drop(std::mem::replace(&mut self.to, dead_tx));
        if let Some(t) = self.thread.take() {
            let step = Duration::from_millis(10);
            let mut waited = Duration::ZERO;
            while !t.is_finished() && waited < grace {
                std::thread::sleep(step);
                waited += step;
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn worker(
    mut auth: Box<dyn Authenticator>,
    clock: Clock,
    opts: AuthOptions,
    rx: Receiver<ToWorker>,
    tx: Sender<FromWorker>,
    mut wake: UnixStream,
) {
    let mut next_recheck = clock.now() + opts.recheck_every;
    // A full socket buffer means a wake-up is pending already; any other error means the
    // loop is gone, which the channel send reports too.
    let send = |msg: FromWorker, wake: &mut UnixStream| -> bool {
        if tx.send(msg).is_err() {
            return false;
        }
        let _ = wake.write(&[1]);
        true
    };
    loop {
        let now = clock.now();
        let wait = next_recheck.saturating_duration_since(now);
        match rx.recv_timeout(wait) {
            Ok(ToWorker::Request { ticket, request }) => {
                let peer_id = request.peer_id;
                let decision = auth.authenticate(clock.now(), request);
                let msg = FromWorker::Decision {
                    ticket,
                    peer_id,
                    decision,
                };
                if !send(msg, &mut wake) {
                    return;
                }
            }
            Ok(ToWorker::Connected {
                peer_id,
                identity,
                vpn_ip,
            }) => auth.connected(clock.now(), peer_id, &identity, vpn_ip),
            Ok(ToWorker::Disconnected { peer_id }) => auth.disconnected(clock.now(), peer_id),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = clock.now();
        if now >= next_recheck {
            for k in auth.recheck(now) {
                if !send(FromWorker::Kick(k), &mut wake) {
                    return;
                }
            }
            next_recheck = now + opts.recheck_every;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Log {
        events: Vec<String>,
        kick_next: Option<String>,
    }

    struct Fake(Arc<Mutex<Log>>);

    impl Authenticator for Fake {
        fn authenticate(&mut self, _now: Instant, r: AuthRequest) -> AuthDecision {
            let mut l = self.0.lock().expect("lock");
            l.events
                .push(format!("auth {} {}", r.peer_id, r.common_name));
            if r.password.as_deref().map(String::as_str) == Some("good") {
                AuthDecision::Accept(Default::default())
            } else {
                AuthDecision::Reject { reason: None }
            }
        }
        fn connected(&mut self, _now: Instant, peer_id: u32, identity: &str, ip: Ipv4Addr) {
            let mut l = self.0.lock().expect("lock");
            l.events.push(format!("up {peer_id} {identity} {ip}"));
        }
        fn disconnected(&mut self, _now: Instant, peer_id: u32) {
            let mut l = self.0.lock().expect("lock");
            l.events.push(format!("down {peer_id}"));
        }
        fn recheck(&mut self, _now: Instant) -> Vec<Kick> {
            let mut l = self.0.lock().expect("lock");
            l.kick_next
                .take()
                .map(|identity| Kick {
                    target: KickTarget::Identity(identity.clone()),
                    identity,
                    message: "RESTART".into(),
                    reason: "test".into(),
                })
                .into_iter()
                .collect()
        }
    }

    fn req(peer_id: u32, name: &str, pw: &str) -> AuthRequest {
        AuthRequest {
            peer_id,
            addr: "192.0.2.1:1194".parse().expect("addr"),
            common_name: name.into(),
            certificate: None,
            username: Some(name.into()),
            password: Some(Zeroizing::new(pw.into())),
        }
    }

    fn wait_for(w: &mut AuthWorker, n: usize) -> Vec<FromWorker> {
        let mut out = Vec::new();
        for _ in 0..400 {
            w.drain(&mut out).expect("worker alive");
            if out.len() >= n {
                return out;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("only {} messages: {out:?}", out.len());
    }

    #[test]
    fn decisions_come_back_and_stale_ones_are_dropped() {
        let log = Arc::new(Mutex::new(Log::default()));
        let clock = Clock::new().expect("clock");
        let mut w = AuthWorker::spawn(
            Box::new(Fake(log.clone())),
            clock,
            AuthOptions {
                recheck_every: Duration::from_millis(20),
            },
        )
        .expect("spawn");
        // Peer 3 asks, leaves, and a new client takes slot 3: only the second answer counts.
        w.request(req(3, "alice", "good")).expect("send");
        w.disconnected(3).expect("send");
        w.request(req(3, "mallory", "bad")).expect("send");
        w.request(req(4, "bob", "good")).expect("send");
        let out = wait_for(&mut w, 2);
        std::thread::sleep(Duration::from_millis(30));
        let mut more = Vec::new();
        w.drain(&mut more).expect("alive");
        let decisions: Vec<(u32, bool)> = out
            .iter()
            .chain(&more)
            .filter_map(|m| match m {
                FromWorker::Decision {
                    peer_id, decision, ..
                } => Some((*peer_id, matches!(decision, AuthDecision::Accept(_)))),
                FromWorker::Kick(_) => None,
            })
            .collect();
        assert_eq!(decisions, [(3, false), (4, true)]);

        w.connected(4, "bob", Ipv4Addr::new(10, 8, 0, 2))
            .expect("send");
        log.lock().expect("lock").kick_next = Some("bob".into());
        let out = wait_for(&mut w, 1);
        assert!(
            matches!(&out[0], FromWorker::Kick(k) if k.identity == "bob"),
            "{out:?}"
        );
        let events = log.lock().expect("lock").events.clone();
        assert_eq!(
            events,
            [
                "auth 3 alice",
                "down 3",
                "auth 3 mallory",
                "auth 4 bob",
                "up 4 bob 10.8.0.2"
            ]
        );
        w.stop(Duration::from_secs(2));
    }

    #[test]
    fn a_dead_worker_is_reported() {
        struct Panics;
        impl Authenticator for Panics {
            fn authenticate(&mut self, _: Instant, _: AuthRequest) -> AuthDecision {
                panic!("test: the authenticator panics");
            }
            fn connected(&mut self, _: Instant, _: u32, _: &str, _: Ipv4Addr) {}
            fn disconnected(&mut self, _: Instant, _: u32) {}
            fn recheck(&mut self, _: Instant) -> Vec<Kick> {
                Vec::new()
            }
        }
        let clock = Clock::new().expect("clock");
        let mut w =
            AuthWorker::spawn(Box::new(Panics), clock, AuthOptions::default()).expect("spawn");
        w.request(req(1, "x", "y")).expect("send");
        let mut out = Vec::new();
        let mut gone = false;
        for _ in 0..400 {
            if w.drain(&mut out).is_err() {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(gone && out.is_empty());
    }
}
