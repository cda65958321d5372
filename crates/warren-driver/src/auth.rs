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
//! Password checks run in parallel: [`Authenticator::begin`] does the quick part on the
//! worker thread (certificate, database lookups, rate limits) and either decides at once
//! (certificate-only users never wait behind a password) or returns a [`PasswordCheck`],
//! the argon2id part, which a pool of [`AuthOptions::verify_threads`] threads runs;
//! [`Authenticator::finish`] then decides on the worker thread. At most
//! [`AuthOptions::max_queued`] checks wait for a pool thread; beyond that a login is refused
//! at once ([`Verified::Busy`]) rather than queued without bound, and the loop never blocks:
//! handing over a request is a channel send.
//!
//! Stale answers: peer ids are slots the engine reuses. Each request carries a ticket; the
//! loop remembers the ticket per peer id until the decision arrives or the peer disconnects,
//! and drops a decision whose ticket is no longer current, so an answer about a client that
//! left can never admit the next client in the same slot.
//!
//! Failure is closed: if the worker thread dies, the loop stops with
//! [`crate::DriverError::AuthWorker`] rather than letting anyone in.
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use warren_core::{Instant, PeerId};
use warren_io::Clock;
use warren_openvpn::{AuthDecision, KickTarget, ServerEvent};
use zeroize::Zeroizing;

/// One login to decide: [`warren_openvpn::ServerEvent::AuthRequest`] in owned form, for
/// the auth worker and the management interface.
#[derive(Clone)]
pub struct AuthRequest {
    /// The engine's peer id (a slot; reused after the client leaves).
    pub peer_id: PeerId,
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
    /// The client's peer info as script variables (`IV_VER`, `IV_PLAT`, ...; ssl.c
    /// `output_peer_info_env`), added by the loop from [`warren_openvpn::Server::peer_info`].
    pub peer_info: Vec<(String, String)>,
}

impl TryFrom<ServerEvent> for AuthRequest {
    /// Any other event, given back.
    type Error = ServerEvent;

    fn try_from(ev: ServerEvent) -> Result<Self, ServerEvent> {
        match ev {
            ServerEvent::AuthRequest {
                peer_id,
                addr,
                common_name,
                certificate,
                username,
                password,
            } => Ok(Self {
                peer_id,
                addr,
                common_name,
                certificate: certificate.map(|c| c.as_ref().to_vec()),
                username,
                password: password.map(|p| p.into_inner()),
                peer_info: Vec::new(),
            }),
            other => Err(other),
        }
    }
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

/// New access rules for every live session of `identity` (a user's or group's rules
/// changed in the database): pushed to every data-plane replica without reconnecting.
#[derive(Debug, Clone)]
pub struct AccessUpdate {
    pub identity: String,
    /// `None`: no rules any more (everything allowed).
    pub rules: Option<Arc<warren_openvpn::access::AccessRules>>,
}

/// A password check for the verification pool: CPU work only (argon2id), sharing nothing
/// with the authenticator. Returns `true` when the password matched.
pub struct PasswordCheck(Box<dyn FnOnce() -> bool + Send>);

impl PasswordCheck {
    pub fn new(check: impl FnOnce() -> bool + Send + 'static) -> PasswordCheck {
        PasswordCheck(Box::new(check))
    }

    /// Runs the check on the calling thread.
    pub fn run(self) -> bool {
        (self.0)()
    }
}

impl fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordCheck")
    }
}

/// What [`Authenticator::begin`] made of a request.
#[derive(Debug)]
pub enum Step {
    /// Decided without a password check (certificate-only users, early refusals).
    Done(AuthDecision),
    /// Run this on the pool, then [`Authenticator::finish`] decides.
    Verify(PasswordCheck),
}

/// The outcome of a [`Step::Verify`] check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    Match,
    NoMatch,
    /// Not checked: [`AuthOptions::max_queued`] checks were already waiting.
    Busy,
}

/// The login policy. Runs on the worker thread, except the [`PasswordCheck`]s it hands out,
/// which run on the pool: every call delays the next decision, so it should not block for
/// long.
pub trait Authenticator: Send + 'static {
    /// Decides one login, on the calling thread, password check included.
    fn authenticate(&mut self, now: Instant, request: AuthRequest) -> AuthDecision;
    /// Decides one login, or returns the password check to run on the pool. `ticket` comes
    /// back in the [`Authenticator::finish`] call. The default decides at once with
    /// [`Authenticator::authenticate`].
    fn begin(&mut self, now: Instant, ticket: u64, request: AuthRequest) -> Step {
        let _ = ticket;
        Step::Done(self.authenticate(now, request))
    }
    /// Decides the login of `ticket` once its check ended. `live` is false when the client
    /// left meanwhile: the decision is dropped, only bookkeeping (rate limits) counts.
    fn finish(
        &mut self,
        now: Instant,
        ticket: u64,
        verified: Verified,
        live: bool,
    ) -> AuthDecision {
        let _ = (now, ticket, verified, live);
        AuthDecision::Reject { reason: None }
    }
    /// Like [`Authenticator::finish`], but may hand out one more check for the pool (the
    /// same `ticket` comes back in another `finish_step`): a login decided in stages, such
    /// as the user database and then `auth-user-pass-verify`/`client-connect` scripts. The
    /// default is [`Authenticator::finish`].
    fn finish_step(&mut self, now: Instant, ticket: u64, verified: Verified, live: bool) -> Step {
        Step::Done(self.finish(now, ticket, verified, live))
    }
    /// A client the authenticator accepted got its address.
    fn connected(&mut self, now: Instant, peer_id: PeerId, identity: &str, vpn_ip: Ipv4Addr);
    /// A client (accepted or still waiting) left.
    fn disconnected(&mut self, now: Instant, peer_id: PeerId);
    /// Called about every [`AuthOptions::recheck_every`]: identities whose sessions must end
    /// now (revoked, disabled, deleted, expired).
    fn recheck(&mut self, now: Instant) -> Vec<Kick>;
    /// SIGHUP: re-read everything and check every connected identity now, whether or not
    /// anything seems to have changed. The default is a [`Authenticator::recheck`].
    fn reload(&mut self, now: Instant) -> Vec<Kick> {
        self.recheck(now)
    }
    /// Called right after every [`Authenticator::recheck`] and [`Authenticator::reload`]:
    /// identities whose access rules changed. The default: none.
    fn access_updates(&mut self, now: Instant) -> Vec<AccessUpdate> {
        let _ = now;
        Vec::new()
    }
}

/// Worker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthOptions {
    /// How often [`Authenticator::recheck`] runs.
    pub recheck_every: Duration,
    /// Threads running password checks (each argon2id check holds about 19 MiB).
    pub verify_threads: usize,
    /// Password checks that may wait for a thread; more are refused at once.
    pub max_queued: usize,
}

/// Most verification threads chosen automatically.
const MAX_AUTO_VERIFY_THREADS: usize = 8;

impl Default for AuthOptions {
    /// One verification thread per core (at most 8), 256 checks waiting.
    fn default() -> Self {
        AuthOptions {
            recheck_every: Duration::from_millis(250),
            verify_threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, MAX_AUTO_VERIFY_THREADS),
            max_queued: 256,
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
        peer_id: PeerId,
        identity: String,
        vpn_ip: Ipv4Addr,
    },
    Disconnected {
        peer_id: PeerId,
    },
    /// SIGHUP: [`Authenticator::reload`] now.
    Reload,
    /// From a pool thread: a check ended.
    Verified {
        ticket: u64,
        matched: bool,
    },
    /// The loop is done (the pool threads hold senders too, so the channel alone never
    /// closes while they live).
    Stop,
}

/// Worker → pool.
struct Job {
    ticket: u64,
    check: PasswordCheck,
}

/// Worker → loop.
#[derive(Debug)]
pub(crate) enum FromWorker {
    Decision {
        ticket: u64,
        peer_id: PeerId,
        decision: AuthDecision,
    },
    Kick(Kick),
    Access(AccessUpdate),
}

/// The loop's end of a running authentication worker.
pub struct AuthWorker {
    to: Sender<ToWorker>,
    from: Receiver<FromWorker>,
    /// Readable when the worker has sent something.
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
    /// Decisions not yet answered: peer id → ticket.
    pending: std::collections::HashMap<PeerId, u64>,
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
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for i in 0..opts.verify_threads.max(1) {
            let results = to.clone();
            let job_rx = job_rx.clone();
            std::thread::Builder::new()
                .name(format!("warren-verify-{i}"))
                .spawn(move || verifier(&job_rx, &results))?;
        }
        let thread = std::thread::Builder::new()
            .name("warren-auth".into())
            .spawn(move || {
                let mut w = Worker {
                    auth: authenticator,
                    clock,
                    opts,
                    tx,
                    wake: wake_tx,
                    jobs,
                    queue: VecDeque::new(),
                    running: 0,
                    checks: HashMap::new(),
                    by_peer: HashMap::new(),
                };
                w.run(&rx);
            })?;
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
        peer_id: PeerId,
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

    pub(crate) fn disconnected(&mut self, peer_id: PeerId) -> Result<(), WorkerGone> {
        self.pending.remove(&peer_id);
        self.to
            .send(ToWorker::Disconnected { peer_id })
            .map_err(|_| WorkerGone)
    }

    /// SIGHUP: the worker re-reads the user database and checks every connected identity
    /// now ([`Authenticator::reload`]); the kicks come back as usual.
    pub(crate) fn reload(&mut self) -> Result<(), WorkerGone> {
        self.to.send(ToWorker::Reload).map_err(|_| WorkerGone)
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
                Ok(k @ (FromWorker::Kick(_) | FromWorker::Access(_))) => out.push(k),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(WorkerGone),
            }
        }
    }

    /// Stops the worker: closes its queue and waits up to `grace` for the thread to finish
    /// what it was doing (a database write); after that it is left to end with the process.
    pub(crate) fn stop(mut self, grace: Duration) {
        let _ = self.to.send(ToWorker::Stop);
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

impl Drop for AuthWorker {
    fn drop(&mut self) {
        // Ends the worker (and with it the pool) when the loop goes without `stop`.
        let _ = self.to.send(ToWorker::Stop);
    }
}

/// A pool thread: runs checks until the worker drops the job queue.
fn verifier(jobs: &Mutex<Receiver<Job>>, results: &Sender<ToWorker>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(Job { ticket, check }) = job else {
            return;
        };
        // A check that panics is a failed check, never a pool that shrinks.
        let matched =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check.run())).unwrap_or(false);
        if results
            .send(ToWorker::Verified { ticket, matched })
            .is_err()
        {
            return;
        }
    }
}

/// The worker thread's state.
struct Worker {
    auth: Box<dyn Authenticator>,
    clock: Clock,
    opts: AuthOptions,
    tx: Sender<FromWorker>,
    wake: UnixStream,
    jobs: Sender<Job>,
    /// Checks waiting for a pool thread.
    queue: VecDeque<Job>,
    /// Checks handed to the pool and not yet back (never more than the pool's threads).
    running: usize,
    /// Every check queued or running: ticket → (peer id, client still there).
    checks: HashMap<u64, (PeerId, bool)>,
    /// The peer's outstanding check.
    by_peer: HashMap<PeerId, u64>,
}

impl Worker {
    fn run(&mut self, rx: &Receiver<ToWorker>) {
        let mut next_recheck = self.clock.now() + self.opts.recheck_every;
        loop {
            let now = self.clock.now();
            let wait = next_recheck.saturating_duration_since(now);
            let alive = match rx.recv_timeout(wait) {
                Ok(ToWorker::Request { ticket, request }) => self.request(ticket, request),
                Ok(ToWorker::Verified { ticket, matched }) => {
                    self.running = self.running.saturating_sub(1);
                    let v = if matched {
                        Verified::Match
                    } else {
                        Verified::NoMatch
                    };
                    self.finish(ticket, v)
                }
                Ok(ToWorker::Connected {
                    peer_id,
                    identity,
                    vpn_ip,
                }) => {
                    self.auth
                        .connected(self.clock.now(), peer_id, &identity, vpn_ip);
                    true
                }
                Ok(ToWorker::Reload) => {
                    let now = self.clock.now();
                    let kicks = self.auth.reload(now);
                    self.send_checked(now, kicks)
                }
                Ok(ToWorker::Disconnected { peer_id }) => {
                    if let Some(t) = self.by_peer.remove(&peer_id)
                        && let Some(c) = self.checks.get_mut(&t)
                    {
                        c.1 = false;
                    }
                    self.auth.disconnected(self.clock.now(), peer_id);
                    true
                }
                Err(RecvTimeoutError::Timeout) => true,
                Ok(ToWorker::Stop) | Err(RecvTimeoutError::Disconnected) => false,
            };
            if !alive || !self.dispatch() {
                return;
            }
            let now = self.clock.now();
            if now >= next_recheck {
                let kicks = self.auth.recheck(now);
                if !self.send_checked(now, kicks) {
                    return;
                }
                next_recheck = now + self.opts.recheck_every;
            }
        }
    }

    /// Sends a re-check's kicks, then the access updates it found.
    /// Sends the kicks of a reload or re-check, then the access rules that changed.
    fn send_checked(&mut self, now: Instant, kicks: Vec<Kick>) -> bool {
        kicks.into_iter().all(|k| self.send(FromWorker::Kick(k)))
            && self
                .auth
                .access_updates(now)
                .into_iter()
                .all(|u| self.send(FromWorker::Access(u)))
    }

    /// A full socket buffer means a wake-up is pending already; any other error means the
    /// loop is gone, which the channel send reports too.
    fn send(&mut self, msg: FromWorker) -> bool {
        if self.tx.send(msg).is_err() {
            return false;
        }
        let _ = self.wake.write(&[1]);
        true
    }

    fn decide(&mut self, ticket: u64, peer_id: PeerId, decision: AuthDecision) -> bool {
        self.send(FromWorker::Decision {
            ticket,
            peer_id,
            decision,
        })
    }

    fn request(&mut self, ticket: u64, request: AuthRequest) -> bool {
        let peer_id = request.peer_id;
        match self.auth.begin(self.clock.now(), ticket, request) {
            Step::Done(decision) => self.decide(ticket, peer_id, decision),
            Step::Verify(check) => {
                self.checks.insert(ticket, (peer_id, true));
                if self.queue.len() >= self.opts.max_queued {
                    return self.finish(ticket, Verified::Busy);
                }
                self.by_peer.insert(peer_id, ticket);
                self.queue.push_back(Job { ticket, check });
                true
            }
        }
    }

    /// Hands waiting checks to idle pool threads; checks of clients that left are dropped.
    fn dispatch(&mut self) -> bool {
        while self.running < self.opts.verify_threads.max(1) {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            if self.checks.get(&job.ticket).is_some_and(|c| !c.1) {
                if !self.finish(job.ticket, Verified::Busy) {
                    return false;
                }
                continue;
            }
            if self.jobs.send(job).is_err() {
                // Every pool thread is gone: nothing more can be checked.
                return false;
            }
            self.running += 1;
        }
        true
    }

    fn finish(&mut self, ticket: u64, verified: Verified) -> bool {
        let Some((peer_id, live)) = self.checks.remove(&ticket) else {
            return true;
        };
        if self.by_peer.get(&peer_id) == Some(&ticket) {
            self.by_peer.remove(&peer_id);
        }
        match self
            .auth
            .finish_step(self.clock.now(), ticket, verified, live)
        {
            Step::Done(decision) => !live || self.decide(ticket, peer_id, decision),
            Step::Verify(check) => {
                // Another stage: queued like a new check (the client may be gone by then,
                // which `dispatch` notices).
                self.checks.insert(ticket, (peer_id, live));
                if live {
                    self.by_peer.insert(peer_id, ticket);
                }
                self.queue.push_back(Job { ticket, check });
                true
            }
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
        fn connected(&mut self, _now: Instant, peer_id: PeerId, identity: &str, ip: Ipv4Addr) {
            let mut l = self.0.lock().expect("lock");
            l.events.push(format!("up {peer_id} {identity} {ip}"));
        }
        fn disconnected(&mut self, _now: Instant, peer_id: PeerId) {
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

    fn req(peer: u32, name: &str, pw: &str) -> AuthRequest {
        AuthRequest {
            peer_id: pid(peer),
            addr: "192.0.2.1:1194".parse().expect("addr"),
            common_name: name.into(),
            certificate: None,
            username: Some(name.into()),
            password: Some(Zeroizing::new(pw.into())),
            peer_info: Vec::new(),
        }
    }

    fn pid(v: u32) -> PeerId {
        PeerId::new(v).expect("peer id")
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
                ..AuthOptions::default()
            },
        )
        .expect("spawn");
        // Peer 3 asks, leaves, and a new client takes slot 3: only the second answer counts.
        w.request(req(3, "alice", "good")).expect("send");
        w.disconnected(pid(3)).expect("send");
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
                } => Some((peer_id.get(), matches!(decision, AuthDecision::Accept(_)))),
                FromWorker::Kick(_) | FromWorker::Access(_) => None,
            })
            .collect();
        assert_eq!(decisions, [(3, false), (4, true)]);

        w.connected(pid(4), "bob", Ipv4Addr::new(10, 8, 0, 2))
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
    fn reload_checks_at_once() {
        let log = Arc::new(Mutex::new(Log::default()));
        let clock = Clock::new().expect("clock");
        // The periodic recheck is an hour away: only the reload can produce the kick.
        let mut w = AuthWorker::spawn(
            Box::new(Fake(log.clone())),
            clock,
            AuthOptions {
                recheck_every: Duration::from_secs(3600),
                ..AuthOptions::default()
            },
        )
        .expect("spawn");
        log.lock().expect("lock").kick_next = Some("carol".into());
        std::thread::sleep(Duration::from_millis(50));
        let mut none = Vec::new();
        w.drain(&mut none).expect("alive");
        assert!(none.is_empty(), "{none:?}");
        w.reload().expect("send");
        let out = wait_for(&mut w, 1);
        assert!(
            matches!(&out[0], FromWorker::Kick(k) if k.identity == "carol"),
            "{out:?}"
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
            fn connected(&mut self, _: Instant, _: PeerId, _: &str, _: Ipv4Addr) {}
            fn disconnected(&mut self, _: Instant, _: PeerId) {}
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

    /// Shared state of the slow fake verifier.
    #[derive(Default)]
    struct Gauge {
        running: std::sync::atomic::AtomicUsize,
        max: std::sync::atomic::AtomicUsize,
        /// Checks block until this is set (or for at most 10 s).
        open: std::sync::atomic::AtomicBool,
        /// Checks block until this many run at once, which opens the gate.
        until_running: std::sync::atomic::AtomicUsize,
    }

    /// Password logins go to the pool with a check that blocks (bounded) as `Gauge` says;
    /// logins without a password (certificate-only) are accepted at once.
    struct Pooled(Arc<Gauge>);

    impl Authenticator for Pooled {
        fn authenticate(&mut self, _: Instant, _: AuthRequest) -> AuthDecision {
            unreachable!("the worker uses begin/finish")
        }
        fn begin(&mut self, _: Instant, _: u64, r: AuthRequest) -> Step {
            use std::sync::atomic::Ordering::SeqCst;
            let Some(pw) = r.password else {
                return Step::Done(AuthDecision::Accept(Default::default()));
            };
            let g = self.0.clone();
            Step::Verify(PasswordCheck::new(move || {
                let n = g.running.fetch_add(1, SeqCst) + 1;
                g.max.fetch_max(n, SeqCst);
                // 1000 turns of 10 ms at most.
                for _ in 0..1000 {
                    if g.running.load(SeqCst) >= g.until_running.load(SeqCst) {
                        // Seen together: let everyone (later checks too) through.
                        g.open.store(true, SeqCst);
                    }
                    if g.open.load(SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                g.running.fetch_sub(1, SeqCst);
                pw.as_str() == "good"
            }))
        }
        fn finish(&mut self, _: Instant, _: u64, v: Verified, _live: bool) -> AuthDecision {
            match v {
                Verified::Match => AuthDecision::Accept(Default::default()),
                Verified::NoMatch => AuthDecision::Reject { reason: None },
                Verified::Busy => AuthDecision::Reject {
                    reason: Some("busy".into()),
                },
            }
        }
        fn connected(&mut self, _: Instant, _: PeerId, _: &str, _: Ipv4Addr) {}
        fn disconnected(&mut self, _: Instant, _: PeerId) {}
        fn recheck(&mut self, _: Instant) -> Vec<Kick> {
            Vec::new()
        }
    }

    fn decisions(out: &[FromWorker]) -> Vec<(u32, String)> {
        out.iter()
            .filter_map(|m| match m {
                FromWorker::Decision {
                    peer_id, decision, ..
                } => Some((
                    peer_id.get(),
                    match decision {
                        AuthDecision::Accept(_) => "accept".to_owned(),
                        AuthDecision::Reject { reason: None } => "reject".to_owned(),
                        AuthDecision::Reject { reason: Some(r) } => r.clone(),
                    },
                )),
                FromWorker::Kick(_) | FromWorker::Access(_) => None,
            })
            .collect()
    }

    /// Issue 10: password checks run on a pool, as many at once as it has threads (and
    /// never more), instead of one after the other.
    #[test]
    fn password_checks_run_in_parallel() {
        use std::sync::atomic::Ordering::SeqCst;
        let g = Arc::new(Gauge::default());
        g.until_running.store(4, SeqCst);
        let clock = Clock::new().expect("clock");
        let opts = AuthOptions {
            verify_threads: 4,
            max_queued: 64,
            ..AuthOptions::default()
        };
        let mut w = AuthWorker::spawn(Box::new(Pooled(g.clone())), clock, opts).expect("spawn");
        for peer in 0..8 {
            w.request(req(peer, "u", if peer % 2 == 0 { "good" } else { "bad" }))
                .expect("send");
        }
        // Bounded: each check waits at most 10 s for company.
        let mut out = Vec::new();
        for _ in 0..3000 {
            w.drain(&mut out).expect("alive");
            if out.len() >= 8 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut d = decisions(&out);
        d.sort();
        let want: Vec<(u32, String)> = (0..8)
            .map(|p| (p, if p % 2 == 0 { "accept" } else { "reject" }.to_owned()))
            .collect();
        assert_eq!(d, want);
        assert_eq!(g.max.load(SeqCst), 4, "checks at once");
        w.stop(Duration::from_secs(2));
    }

    /// A full queue refuses at once instead of blocking anyone; certificate-only logins are
    /// decided while every pool thread is busy; the queued checks finish once the pool frees.
    #[test]
    fn a_full_queue_refuses_and_certificates_pass_by() {
        use std::sync::atomic::Ordering::SeqCst;
        let g = Arc::new(Gauge::default());
        g.until_running.store(usize::MAX, SeqCst);
        let clock = Clock::new().expect("clock");
        let opts = AuthOptions {
            verify_threads: 1,
            max_queued: 2,
            ..AuthOptions::default()
        };
        let mut w = AuthWorker::spawn(Box::new(Pooled(g.clone())), clock, opts).expect("spawn");
        // One runs (blocked), two wait, two are refused.
        for peer in 0..5 {
            w.request(req(peer, "u", "good")).expect("send");
        }
        let mut cert_only = req(9, "carol", "");
        cert_only.password = None;
        w.request(cert_only).expect("send");
        let out = wait_for(&mut w, 3);
        let mut d = decisions(&out);
        d.sort();
        assert_eq!(
            d,
            [(3, "busy".into()), (4, "busy".into()), (9, "accept".into())],
            "while the pool is blocked"
        );
        assert!(!g.open.load(SeqCst), "decided before any check finished");
        g.open.store(true, SeqCst);
        let mut d = decisions(&wait_for(&mut w, 3));
        d.sort();
        assert_eq!(
            d,
            [
                (0, "accept".into()),
                (1, "accept".into()),
                (2, "accept".into())
            ]
        );
        assert_eq!(g.max.load(SeqCst), 1);
        w.stop(Duration::from_secs(2));
    }

    /// A check whose client left is not reported, and a queued one is not even run.
    #[test]
    fn checks_of_departed_clients_are_dropped() {
        use std::sync::atomic::Ordering::SeqCst;
        let g = Arc::new(Gauge::default());
        g.until_running.store(usize::MAX, SeqCst);
        let clock = Clock::new().expect("clock");
        let opts = AuthOptions {
            verify_threads: 1,
            max_queued: 8,
            ..AuthOptions::default()
        };
        let mut w = AuthWorker::spawn(Box::new(Pooled(g.clone())), clock, opts).expect("spawn");
        w.request(req(1, "a", "good")).expect("send");
        w.request(req(2, "b", "good")).expect("send");
        w.request(req(3, "c", "good")).expect("send");
        w.disconnected(pid(1)).expect("send");
        w.disconnected(pid(2)).expect("send");
        std::thread::sleep(Duration::from_millis(50));
        g.open.store(true, SeqCst);
        let out = wait_for(&mut w, 1);
        std::thread::sleep(Duration::from_millis(50));
        let mut more = Vec::new();
        w.drain(&mut more).expect("alive");
        let d: Vec<_> = decisions(&out)
            .into_iter()
            .chain(decisions(&more))
            .collect();
        assert_eq!(d, [(3, "accept".into())]);
        // Peer 1's check ran (it had started); peer 2's never did.
        assert_eq!(g.max.load(SeqCst), 1);
        w.stop(Duration::from_secs(2));
    }
}
