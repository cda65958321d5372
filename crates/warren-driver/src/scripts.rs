//! User scripts on the server, off the packet loop: `auth-user-pass-verify` and
//! `client-connect` decide logins, `learn-address` and `client-disconnect` follow clients,
//! each with the environment OpenVPN gives it (ssl_verify.c `verify_user_pass_script`,
//! multi.c `multi_client_connect_call_script`, `learn_address_script`,
//! `multi_client_disconnect_script`; openvpn-ops.md §2).
//!
//! The model:
//! * Logins: [`ScriptAuth`] is an [`Authenticator`] for the auth worker ([`crate::auth`]).
//!   Its [`Authenticator::begin`] builds the environment on the worker thread and hands the
//!   script runs to the verification pool as a [`PasswordCheck`], so a slow script delays
//!   only its own client and the packet loop never waits. The pool thread runs
//!   `auth-user-pass-verify` (exit 0 accepts), then `client-connect` with the path of an
//!   empty file as `$1` (exit 0 accepts, and the file is then read back for `push`,
//!   `push-reset`, `ifconfig-push` and `disable`). [`Authenticator::finish`] turns what the
//!   pool found into the decision. The address pool is owned here (as warren-server's
//!   `StoreAuth` owns it), so `client-connect` sees the address the client will get in
//!   `ifconfig_pool_remote_ip`.
//! * Lifecycle: [`ScriptHooks`] gets the loop's `Connected`/`Disconnected` events and queues
//!   `learn-address add|delete` and `client-disconnect` (with `bytes_received`,
//!   `bytes_sent`, `time_duration`) for one thread of its own, which runs them in order.
//!
//! Every run is bounded by the configured timeout ([`warren_io::run_script`] kills a script
//! that hangs); a timeout counts as failure. The loop does not wait for the lifecycle
//! thread except at exit, where [`ScriptHooks::finish`] lets the queued scripts (the
//! `client-disconnect` of every client the shutdown ended) run.
use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{info, warn};
use warren_core::{Instant, PeerId};
use warren_io::{Clock, ScriptStatus, run_script};
use warren_openvpn::pool::Pool;
use warren_openvpn::{AuthDecision, AuthGrant, Server, ServerEvent};

use crate::auth::{AuthRequest, Authenticator, Kick, PasswordCheck, Step, Verified};
use crate::management::env;

/// One environment variable.
pub type Var = (String, String);

/// A login's per-client options, given by the server application (this crate reads no
/// configs). Both use the client-config-dir syntax; `Err` refuses the client and says why.
pub trait ClientOptions: Send + Sync {
    /// The `client-config-dir` file of `common_name`, applied before `client-connect` runs
    /// (OpenVPN's order); without a client-config-dir, nothing.
    fn config_dir(&self, common_name: &str, grant: &mut AuthGrant) -> Result<(), String>;
    /// The file a `client-connect` script wrote (`text`; `origin` names it in messages).
    fn connect_file(&self, text: &str, origin: &str, grant: &mut AuthGrant) -> Result<(), String>;
}

/// Shared by the login threads.
pub type ParseFn = Arc<dyn ClientOptions>;

/// The server's scripts (each a program and its own arguments).
#[derive(Clone)]
pub struct ServerScripts {
    pub client_connect: Option<Vec<String>>,
    pub client_disconnect: Option<Vec<String>>,
    pub learn_address: Option<Vec<String>>,
    /// The command and `true` for via-file, `false` for via-env.
    pub auth_user_pass_verify: Option<(Vec<String>, bool)>,
    /// `script-security` (3 lets `password` into a via-env environment).
    pub security: u8,
    pub timeout: Duration,
    /// Variables of the server itself that every script environment ends with (`dev`,
    /// `ifconfig_local`, `config`, `daemon`, `verb`, ...).
    pub daemon_env: Vec<Var>,
    /// Where the credential and client-connect files go (`tmp-dir`; default `/tmp`).
    pub tmp_dir: PathBuf,
    /// The netmask the clients get (`ifconfig_pool_netmask`).
    pub netmask: Ipv4Addr,
    /// How long a deferred `auth-user-pass-verify` (exit 2) may take to write its
    /// `auth_control_file` (`hand-window`: the client waits no longer).
    pub deferred_limit: Duration,
}

impl fmt::Debug for ServerScripts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerScripts")
            .field("client_connect", &self.client_connect)
            .field("client_disconnect", &self.client_disconnect)
            .field("learn_address", &self.learn_address)
            .field(
                "auth_user_pass_verify",
                &self.auth_user_pass_verify.as_ref().map(|(c, _)| c),
            )
            .field("security", &self.security)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Runs `argv` + `args` and logs a failure in OpenVPN's words.
fn run(name: &str, argv: &[String], args: &[String], env: &[Var], timeout: Duration) -> bool {
    let mut full = argv.to_vec();
    full.extend(args.iter().cloned());
    let status = run_script(&full, env, timeout);
    if !status.success() {
        match status {
            ScriptStatus::TimedOut => warn!(
                "WARNING: Failed running command ({name}): ran longer than {:?} and was killed",
                timeout
            ),
            s => warn!("WARNING: Failed running command ({name}): {s}"),
        }
        return false;
    }
    true
}

/// A file only we can read, created new in `dir` (OpenVPN platform_create_temp_file).
fn temp_file(dir: &Path, prefix: &str, contents: &[u8]) -> std::io::Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..16 {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut r = [0u8; 8];
        // Unpredictable names so another local user cannot pre-create them.
        warren_core::Rng::fill(
            &mut warren_io::OsRng::new().map_err(std::io::Error::other)?,
            &mut r,
        );
        let path = dir.join(format!(
            "openvpn_{prefix}_{}_{n}_{}.tmp",
            std::process::id(),
            hex(&r)
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                if let Err(e) = f.write_all(contents) {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary file name")))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Removes a temporary file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The environment of `auth-user-pass-verify` (before authentication: `untrusted_*`).
pub fn auth_env(s: &ServerScripts, req: &AuthRequest, via_file: bool) -> Vec<Var> {
    let mut e = Vec::new();
    e.extend(env::address(false, &req.addr));
    e.push(("common_name".into(), req.common_name.clone()));
    if let Some(u) = &req.username {
        e.push(("username".into(), u.clone()));
    }
    // env_set.c env_allowed: the password reaches scripts only with script-security 3.
    if !via_file
        && s.security >= 3
        && let Some(p) = &req.password
    {
        e.push(("password".into(), p.as_str().to_owned()));
    }
    if let Some(der) = &req.certificate {
        e.extend(env::certificate(der));
    }
    // ssl.c output_peer_info_env: IV_VER, IV_PLAT, ... of the client.
    e.extend(req.peer_info.iter().cloned());
    e.extend(s.daemon_env.iter().cloned());
    e.push(("script_context".into(), "init".into()));
    e.push(("script_type".into(), "user-pass-verify".into()));
    e
}

/// The environment of a connected client (`client-connect`, `learn-address add`,
/// `client-disconnect`): after authentication, so `trusted_*`.
#[allow(clippy::too_many_arguments)]
pub fn client_env(
    s: &ServerScripts,
    addr: &SocketAddr,
    common_name: &str,
    username: Option<&str>,
    certificate: Option<&[u8]>,
    vpn_ip: Option<Ipv4Addr>,
    time_unix: u64,
) -> Vec<Var> {
    let mut e = Vec::new();
    if let Some(ip) = vpn_ip {
        e.push(("ifconfig_pool_remote_ip".into(), ip.to_string()));
        e.push(("ifconfig_pool_netmask".into(), s.netmask.to_string()));
    }
    e.push(("time_unix".into(), time_unix.to_string()));
    e.push(("time_ascii".into(), warren_io::format_local_time(time_unix)));
    e.extend(env::address(true, addr));
    // The TLS stage's `untrusted_*` stay in OpenVPN's environment (ssl_verify.c
    // `setenv_untrusted`), so later scripts see both.
    e.extend(env::address(false, addr));
    e.push(("common_name".into(), common_name.to_owned()));
    if let Some(u) = username {
        e.push(("username".into(), u.to_owned()));
    }
    if let Some(der) = certificate {
        e.extend(env::certificate(der));
    }
    e.extend(s.daemon_env.iter().cloned());
    e.push(("script_context".into(), "init".into()));
    e
}

/// Waits (bounded by `limit`) for a deferred `auth-user-pass-verify` to write `1`
/// (accept) or `0` (refuse) into its control file; nothing in time refuses.
fn deferred_answer(path: &Path, limit: Duration) -> bool {
    const POLL: Duration = Duration::from_millis(100);
    // A count of polls, not the clock: the worker threads take no time readings.
    let polls = limit.as_millis() / POLL.as_millis() + 1;
    for i in 0..polls {
        match std::fs::read(path).ok().and_then(|b| b.first().copied()) {
            Some(b'1') => return true,
            Some(b'0') => return false,
            _ => {}
        }
        if i + 1 < polls {
            std::thread::sleep(POLL);
        }
    }
    warn!(
        "auth-user-pass-verify: no decision in {} within {limit:?}; refusing",
        path.display()
    );
    false
}

/// `e` with `script_type` (replaced if present).
fn with_type(mut e: Vec<Var>, t: &str) -> Vec<Var> {
    e.retain(|(k, _)| k != "script_type");
    e.push(("script_type".into(), t.into()));
    e
}

/// What the pool thread found for one login.
type Outcomes = Arc<Mutex<HashMap<u64, AuthDecision>>>;

/// The login half: an [`Authenticator`] that runs `auth-user-pass-verify` and
/// `client-connect`.
pub struct ScriptAuth {
    scripts: Arc<ServerScripts>,
    parse: ParseFn,
    clock: Clock,
    pool: Pool,
    /// Addresses of connected clients.
    held: HashMap<PeerId, Ipv4Addr>,
    /// Addresses promised to logins being decided: ticket → (peer, address).
    reserved: HashMap<u64, (PeerId, Ipv4Addr)>,
    outcomes: Outcomes,
}

impl fmt::Debug for ScriptAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptAuth")
            .field("scripts", &self.scripts)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl ScriptAuth {
    pub fn new(scripts: Arc<ServerScripts>, parse: ParseFn, clock: Clock, pool: Pool) -> Self {
        ScriptAuth {
            scripts,
            parse,
            clock,
            pool,
            held: HashMap::new(),
            reserved: HashMap::new(),
            outcomes: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The lowest pool address neither held nor promised.
    fn free_address(&self) -> Option<Ipv4Addr> {
        self.pool.iter().find(|a| {
            !self.held.values().any(|h| h == a) && !self.reserved.values().any(|(_, r)| r == a)
        })
    }
}

/// Runs the login scripts for one client; returns the decision.
fn decide(
    s: &ServerScripts,
    parse: &ParseFn,
    req: &AuthRequest,
    ip: Option<Ipv4Addr>,
    unix: u64,
) -> AuthDecision {
    let grant = AuthGrant {
        fixed_ip: ip,
        ..Default::default()
    };
    decide_on(s, parse, req, grant, true, unix)
}

/// Runs the login scripts for one client on top of `grant` (the address it will get and
/// what was decided before); `config_dir`: apply the client-config-dir file first (not
/// when the user database already did).
fn decide_on(
    s: &ServerScripts,
    parse: &ParseFn,
    req: &AuthRequest,
    mut grant: AuthGrant,
    config_dir: bool,
    unix: u64,
) -> AuthDecision {
    let refuse = AuthDecision::Reject { reason: None };
    if let Some((cmd, via_file)) = &s.auth_user_pass_verify {
        let mut env = auth_env(s, req, *via_file);
        // ssl_verify.c key_state_gen_auth_control_files: exit 2 defers the decision to a
        // later "1" or "0" in this file.
        let control = match temp_file(&s.tmp_dir, "acf", b"") {
            Ok(p) => TempFile(p),
            Err(e) => {
                warn!(
                    "TLS Auth Error: could not create auth_control_file in {}: {e}",
                    s.tmp_dir.display()
                );
                return refuse;
            }
        };
        env.push(("auth_control_file".into(), control.0.display().to_string()));
        let mut args = Vec::new();
        let mut _file = None;
        if *via_file {
            // ssl_verify.c: a temporary file of two lines, user name then password.
            let text = zeroize::Zeroizing::new(format!(
                "{}\n{}\n",
                req.username.as_deref().unwrap_or(""),
                req.password.as_ref().map_or("", |p| p.as_str())
            ));
            match temp_file(&s.tmp_dir, "up", text.as_bytes()) {
                Ok(p) => {
                    args.push(p.display().to_string());
                    _file = Some(TempFile(p));
                }
                Err(e) => {
                    warn!(
                        "TLS Auth Error: could not write username/password to a file in {}: {e}",
                        s.tmp_dir.display()
                    );
                    return refuse;
                }
            }
        }
        let mut full = cmd.to_vec();
        full.extend(args.iter().cloned());
        let accepted = match run_script(&full, &env, s.timeout) {
            ScriptStatus::Exited(0) => true,
            ScriptStatus::Exited(2) => {
                info!(
                    "auth-user-pass-verify deferred the decision for {} ({}): waiting up to \
                     {:?} for {}",
                    req.common_name,
                    req.addr,
                    s.deferred_limit,
                    control.0.display()
                );
                deferred_answer(&control.0, s.deferred_limit)
            }
            status => {
                warn!("WARNING: Failed running command (--auth-user-pass-verify): {status}");
                false
            }
        };
        if !accepted {
            info!(
                "TLS Auth Error: Auth Username/Password verification failed for peer \
                 (cn={} addr={})",
                req.common_name, req.addr
            );
            return refuse;
        }
    }
    let ip = grant.fixed_ip;
    if config_dir && let Err(e) = parse.config_dir(&req.common_name, &mut grant) {
        warn!("refusing {} ({}): {e}", req.common_name, req.addr);
        return refuse;
    }
    if let Some(cmd) = &s.client_connect {
        let mut env = client_env(
            s,
            &req.addr,
            &req.common_name,
            req.username.as_deref(),
            req.certificate.as_deref(),
            ip,
            unix,
        );
        env.extend(req.peer_info.iter().cloned());
        let env = with_type(env, "client-connect");
        let file = match temp_file(&s.tmp_dir, "cc", b"") {
            Ok(p) => TempFile(p),
            Err(e) => {
                warn!(
                    "client-connect for {}: could not create its file in {}: {e}",
                    req.common_name,
                    s.tmp_dir.display()
                );
                return refuse;
            }
        };
        let path = file.0.display().to_string();
        if !run(
            "--client-connect",
            cmd,
            std::slice::from_ref(&path),
            &env,
            s.timeout,
        ) {
            info!(
                "client-connect refused {} ({}): the script failed",
                req.common_name, req.addr
            );
            return refuse;
        }
        let text = match std::fs::read_to_string(&file.0) {
            Ok(t) => t,
            Err(e) => {
                warn!(
                    "client-connect for {}: cannot read {path}: {e}",
                    req.common_name
                );
                return refuse;
            }
        };
        // multi.c: a `disable` line refuses the client like a failed script.
        if let Err(e) = parse.connect_file(&text, &path, &mut grant) {
            info!(
                "client-connect for {}: refusing the client: {e}",
                req.common_name
            );
            return refuse;
        }
        info!("OPTIONS IMPORT: read client specific options from {path}");
    }
    AuthDecision::Accept(grant)
}

impl Authenticator for ScriptAuth {
    fn authenticate(&mut self, now: Instant, request: AuthRequest) -> AuthDecision {
        let ip = self.free_address();
        let _ = now;
        decide(
            &self.scripts,
            &self.parse,
            &request,
            ip,
            self.clock.unix_now(),
        )
    }

    fn begin(&mut self, _now: Instant, ticket: u64, request: AuthRequest) -> Step {
        let Some(ip) = self.free_address() else {
            warn!(
                "refusing {} ({}): no free address in the pool {}",
                request.common_name, request.addr, self.pool
            );
            return Step::Done(AuthDecision::Reject { reason: None });
        };
        self.reserved.insert(ticket, (request.peer_id, ip));
        let scripts = self.scripts.clone();
        let parse = self.parse.clone();
        let outcomes = self.outcomes.clone();
        let unix = self.clock.unix_now();
        Step::Verify(PasswordCheck::new(move || {
            let d = decide(&scripts, &parse, &request, Some(ip), unix);
            let ok = matches!(d, AuthDecision::Accept(_));
            if let Ok(mut m) = outcomes.lock() {
                m.insert(ticket, d);
            }
            ok
        }))
    }

    fn finish(
        &mut self,
        _now: Instant,
        ticket: u64,
        verified: Verified,
        live: bool,
    ) -> AuthDecision {
        self.reserved.remove(&ticket);
        let d = self
            .outcomes
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&ticket));
        match (verified, d, live) {
            (Verified::Match, Some(d), true) => d,
            (Verified::Busy, ..) => {
                warn!("refusing a login: too many scripts waiting to run");
                AuthDecision::Reject { reason: None }
            }
            _ => AuthDecision::Reject { reason: None },
        }
    }

    fn connected(&mut self, _now: Instant, peer_id: PeerId, _identity: &str, vpn_ip: Ipv4Addr) {
        self.held.insert(peer_id, vpn_ip);
    }

    fn disconnected(&mut self, _now: Instant, peer_id: PeerId) {
        self.held.remove(&peer_id);
        self.reserved.retain(|_, (p, _)| *p != peer_id);
    }

    fn recheck(&mut self, _now: Instant) -> Vec<Kick> {
        Vec::new()
    }
}

/// Where a login of [`Scripted`] is.
enum Stage {
    /// The user database is deciding (its password check is on the pool).
    Store,
    /// The store accepted; the scripts are running on the pool.
    Scripts,
}

/// The user database first, then the scripts: the store decides the password, the
/// certificate, revocation and the address (its lease table owns the pool, its
/// client-config-dir applies); then `auth-user-pass-verify` may still refuse, and the file
/// `client-connect` writes is applied on top of the store's grant. The scripts run on the
/// pool as a second stage ([`Authenticator::finish_step`]), never on the worker thread.
pub struct Scripted {
    inner: Box<dyn Authenticator>,
    scripts: Arc<ServerScripts>,
    parse: ParseFn,
    clock: Clock,
    /// Logins being decided: ticket → (stage, request).
    logins: HashMap<u64, (Stage, AuthRequest)>,
    outcomes: Outcomes,
}

impl fmt::Debug for Scripted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scripted")
            .field("scripts", &self.scripts)
            .field("logins", &self.logins.len())
            .finish_non_exhaustive()
    }
}

impl Scripted {
    pub fn new(
        inner: Box<dyn Authenticator>,
        scripts: Arc<ServerScripts>,
        parse: ParseFn,
        clock: Clock,
    ) -> Self {
        Scripted {
            inner,
            scripts,
            parse,
            clock,
            logins: HashMap::new(),
            outcomes: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// What follows the store's decision for `ticket`.
    fn after_store(&mut self, ticket: u64, step: Step) -> Step {
        match step {
            Step::Verify(check) => Step::Verify(check),
            Step::Done(AuthDecision::Accept(grant)) => {
                let Some((stage, request)) = self.logins.get_mut(&ticket) else {
                    return Step::Done(AuthDecision::Reject { reason: None });
                };
                *stage = Stage::Scripts;
                let request = request.clone();
                let scripts = self.scripts.clone();
                let parse = self.parse.clone();
                let outcomes = self.outcomes.clone();
                let unix = self.clock.unix_now();
                Step::Verify(PasswordCheck::new(move || {
                    let d = decide_on(&scripts, &parse, &request, grant, false, unix);
                    let ok = matches!(d, AuthDecision::Accept(_));
                    if let Ok(mut m) = outcomes.lock() {
                        m.insert(ticket, d);
                    }
                    ok
                }))
            }
            done @ Step::Done(_) => {
                self.logins.remove(&ticket);
                done
            }
        }
    }
}

impl Authenticator for Scripted {
    fn authenticate(&mut self, now: Instant, request: AuthRequest) -> AuthDecision {
        match self.inner.authenticate(now, request.clone()) {
            AuthDecision::Accept(grant) => decide_on(
                &self.scripts,
                &self.parse,
                &request,
                grant,
                false,
                self.clock.unix_now(),
            ),
            refused => refused,
        }
    }

    fn begin(&mut self, now: Instant, ticket: u64, request: AuthRequest) -> Step {
        self.logins.insert(ticket, (Stage::Store, request.clone()));
        let step = self.inner.begin(now, ticket, request);
        self.after_store(ticket, step)
    }

    fn finish_step(&mut self, now: Instant, ticket: u64, verified: Verified, live: bool) -> Step {
        match self.logins.get(&ticket).map(|(s, _)| s) {
            Some(Stage::Store) => {
                let step = self.inner.finish_step(now, ticket, verified, live);
                if live {
                    return self.after_store(ticket, step);
                }
                self.logins.remove(&ticket);
                // The client left: the store's bookkeeping is done, nothing more runs.
                Step::Done(AuthDecision::Reject { reason: None })
            }
            Some(Stage::Scripts) => {
                self.logins.remove(&ticket);
                let d = self
                    .outcomes
                    .lock()
                    .ok()
                    .and_then(|mut m| m.remove(&ticket));
                match (verified, d, live) {
                    (Verified::Match, Some(d), true) => Step::Done(d),
                    (Verified::Busy, ..) => {
                        warn!("refusing a login: too many scripts waiting to run");
                        Step::Done(AuthDecision::Reject { reason: None })
                    }
                    _ => Step::Done(AuthDecision::Reject { reason: None }),
                }
            }
            None => Step::Done(AuthDecision::Reject { reason: None }),
        }
    }

    fn connected(&mut self, now: Instant, peer_id: PeerId, identity: &str, vpn_ip: Ipv4Addr) {
        self.inner.connected(now, peer_id, identity, vpn_ip);
    }

    fn disconnected(&mut self, now: Instant, peer_id: PeerId) {
        self.inner.disconnected(now, peer_id);
    }

    fn recheck(&mut self, now: Instant) -> Vec<Kick> {
        self.inner.recheck(now)
    }

    fn reload(&mut self, now: Instant) -> Vec<Kick> {
        self.inner.reload(now)
    }

    fn access_updates(&mut self, now: Instant) -> Vec<crate::auth::AccessUpdate> {
        self.inner.access_updates(now)
    }
}

/// One queued lifecycle script run.
struct Job {
    name: &'static str,
    argv: Vec<String>,
    args: Vec<String>,
    env: Vec<Var>,
}

/// A connected client's environment, kept for its disconnect.
struct Live {
    env: Vec<Var>,
    vpn_ip: Ipv4Addr,
    since_unix: u64,
}

/// The lifecycle half: `learn-address` and `client-disconnect` on a thread of their own.
pub struct ScriptHooks {
    scripts: Arc<ServerScripts>,
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    live: HashMap<PeerId, Live>,
}

impl fmt::Debug for ScriptHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptHooks")
            .field("live", &self.live.len())
            .finish_non_exhaustive()
    }
}

impl ScriptHooks {
    /// `None` when neither `learn-address` nor `client-disconnect` is configured.
    pub fn spawn(scripts: Arc<ServerScripts>) -> std::io::Result<Option<ScriptHooks>> {
        if scripts.learn_address.is_none() && scripts.client_disconnect.is_none() {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let timeout = scripts.timeout;
        let thread = std::thread::Builder::new()
            .name("warren-scripts".into())
            .spawn(move || {
                while let Ok(j) = rx.recv() {
                    run(j.name, &j.argv, &j.args, &j.env, timeout);
                }
            })?;
        Ok(Some(ScriptHooks {
            scripts,
            jobs: Some(tx),
            thread: Some(thread),
            live: HashMap::new(),
        }))
    }

    fn queue(&self, job: Job) {
        if let Some(tx) = &self.jobs
            && tx.send(job).is_err()
        {
            warn!("the script thread is gone; a script was not run");
        }
    }

    /// A lifecycle event from the engine (call for every event; others are ignored).
    pub fn on_event(&mut self, ev: &ServerEvent, server: &Server, unix: u64) {
        match ev {
            ServerEvent::Connected {
                peer_id,
                common_name,
                addr,
                vpn_ip,
                ..
            } => {
                let username = server.client(*peer_id).and_then(|c| c.username);
                let cert = server.peer_certificate(*peer_id);
                let mut env = client_env(
                    &self.scripts,
                    addr,
                    common_name,
                    username.as_deref(),
                    cert.as_ref().map(|c| c.as_ref()),
                    Some(*vpn_ip),
                    unix,
                );
                // ssl.c output_peer_info_env: IV_VER, IV_PLAT, ... of the client.
                if let Some(pi) = server.peer_info(*peer_id) {
                    env.extend(env::peer_info(pi));
                }
                if let Some(cmd) = &self.scripts.learn_address {
                    // multi.c learn_address_script: "add ADDR CN" with the client's env.
                    self.queue(Job {
                        name: "--learn-address",
                        argv: cmd.clone(),
                        args: vec!["add".into(), vpn_ip.to_string(), common_name.clone()],
                        env: with_type(env.clone(), "learn-address"),
                    });
                }
                self.live.insert(
                    *peer_id,
                    Live {
                        env,
                        vpn_ip: *vpn_ip,
                        since_unix: unix,
                    },
                );
            }
            ServerEvent::Disconnected {
                peer_id,
                bytes_received,
                bytes_sent,
                ..
            } => {
                let Some(l) = self.live.remove(peer_id) else {
                    return;
                };
                if let Some(cmd) = &self.scripts.client_disconnect {
                    // multi.c multi_client_disconnect_setenv + setenv_stats.
                    let mut env = vec![
                        ("bytes_received".to_owned(), bytes_received.to_string()),
                        ("bytes_sent".to_owned(), bytes_sent.to_string()),
                        (
                            "time_duration".to_owned(),
                            unix.saturating_sub(l.since_unix).to_string(),
                        ),
                    ];
                    env.extend(l.env);
                    self.queue(Job {
                        name: "--client-disconnect",
                        argv: cmd.clone(),
                        args: Vec::new(),
                        env: with_type(env, "client-disconnect"),
                    });
                }
                if let Some(cmd) = &self.scripts.learn_address {
                    // multi.c: the route goes with no instance, so a bare environment.
                    self.queue(Job {
                        name: "--learn-address",
                        argv: cmd.clone(),
                        args: vec!["delete".into(), l.vpn_ip.to_string()],
                        env: vec![("script_type".into(), "learn-address".into())],
                    });
                }
            }
            _ => {}
        }
    }

    /// Lets the queued scripts run (each bounded by the timeout) and stops the thread.
    pub fn finish(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ScriptHooks {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The tunnel facts `up` and `down` get (init.c `run_up_down`).
#[derive(Debug, Clone)]
pub struct TunFacts {
    /// The device name (`dev`, and the first argument).
    pub dev: String,
    pub tun_mtu: u16,
    /// `ifconfig_local`.
    pub local: String,
    /// The netmask in `topology subnet` (or the remote end of a point-to-point tunnel).
    pub remote_or_netmask: String,
}

/// Runs `up`, `down` or another tunnel script as OpenVPN's `run_up_down` does: the
/// arguments `DEV TUN_MTU 0 LOCAL NETMASK|REMOTE init`, and `env` plus `script_context`,
/// `tun_mtu`, `dev`, `dev_type`, `script_type` (and `signal` for `down`). Returns whether it
/// exited 0 in time.
pub fn run_up_down(
    name: &str,
    cmd: &[String],
    script_type: &str,
    env: &[Var],
    tun: &TunFacts,
    signal: Option<&str>,
    timeout: Duration,
) -> bool {
    let mut e: Vec<Var> = env
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "script_context" | "tun_mtu" | "dev" | "dev_type" | "script_type" | "signal"
            )
        })
        .cloned()
        .collect();
    if let Some(s) = signal {
        e.push(("signal".into(), s.into()));
    }
    e.extend([
        ("script_context".to_owned(), "init".to_owned()),
        ("tun_mtu".into(), tun.tun_mtu.to_string()),
        ("dev".into(), tun.dev.clone()),
        ("dev_type".into(), "tun".into()),
        ("script_type".into(), script_type.into()),
    ]);
    let args = [
        tun.dev.clone(),
        tun.tun_mtu.to_string(),
        "0".into(),
        tun.local.clone(),
        tun.remote_or_netmask.clone(),
        "init".into(),
    ];
    let mut full = cmd.to_vec();
    full.extend(args);
    info!("{}", full.join(" "));
    run(name, &full, &[], &e, timeout)
}

/// Runs `route-up` (init.c `do_route`): no arguments, `script_type=route-up`.
pub fn run_route_up(cmd: &[String], env: &[Var], timeout: Duration) -> bool {
    run(
        "--route-up",
        cmd,
        &[],
        &with_type(env.to_vec(), "route-up"),
        timeout,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scripts() -> ServerScripts {
        ServerScripts {
            client_connect: None,
            client_disconnect: None,
            learn_address: None,
            auth_user_pass_verify: None,
            security: 2,
            timeout: Duration::from_secs(5),
            daemon_env: vec![("dev".into(), "tun0".into())],
            tmp_dir: std::env::temp_dir(),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            deferred_limit: Duration::from_secs(5),
        }
    }

    fn request() -> AuthRequest {
        AuthRequest {
            peer_id: PeerId::new(3).expect("peer id"),
            addr: "198.18.0.2:40000".parse().expect("addr"),
            common_name: "client1".into(),
            certificate: None,
            username: Some("alice".into()),
            password: Some(zeroize::Zeroizing::new("secret".into())),
            peer_info: vec![("IV_VER".into(), "2.6.14".into())],
        }
    }

    fn keys(e: &[Var]) -> Vec<&str> {
        e.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn auth_env_hides_the_password_below_level_3() {
        let mut s = scripts();
        let e = auth_env(&s, &request(), false);
        let k = keys(&e);
        for want in [
            "untrusted_ip",
            "untrusted_port",
            "common_name",
            "username",
            "dev",
            "script_type",
        ] {
            assert!(k.contains(&want), "{want} in {k:?}");
        }
        assert!(!k.contains(&"password"));
        assert!(e.contains(&("IV_VER".into(), "2.6.14".into())));
        assert!(e.contains(&("script_type".into(), "user-pass-verify".into())));
        s.security = 3;
        assert!(auth_env(&s, &request(), false).contains(&("password".into(), "secret".into())));
        // via-file never puts it in the environment.
        assert!(!keys(&auth_env(&s, &request(), true)).contains(&"password"));
    }

    #[test]
    fn client_env_is_trusted() {
        let s = scripts();
        let r = request();
        let e = client_env(
            &s,
            &r.addr,
            "client1",
            Some("alice"),
            None,
            Some(Ipv4Addr::new(10, 8, 0, 2)),
            1_796_280_933,
        );
        assert!(e.contains(&("trusted_ip".into(), "198.18.0.2".into())));
        assert!(e.contains(&("trusted_port".into(), "40000".into())));
        assert!(e.contains(&("ifconfig_pool_remote_ip".into(), "10.8.0.2".into())));
        assert!(e.contains(&("time_unix".into(), "1796280933".into())));
        assert!(keys(&e).contains(&"untrusted_ip"));
        let e = with_type(with_type(e, "a"), "client-connect");
        assert_eq!(keys(&e).iter().filter(|k| **k == "script_type").count(), 1);
    }

    fn sh(body: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), body.into(), "script".into()]
    }

    /// `push "…"`, `ifconfig-push ADDR …` and `disable`, enough for these tests (the real
    /// parser is warren-config's, given by warren-server).
    struct TestOptions;

    impl ClientOptions for TestOptions {
        fn config_dir(&self, _: &str, _: &mut AuthGrant) -> Result<(), String> {
            Ok(())
        }
        fn connect_file(&self, text: &str, _: &str, g: &mut AuthGrant) -> Result<(), String> {
            for l in text.lines() {
                match l.split_once(' ') {
                    Some(("push", v)) => g.push.push(v.trim_matches('"').into()),
                    Some(("ifconfig-push", v)) => {
                        g.fixed_ip = v.split(' ').next().and_then(|a| a.parse().ok());
                    }
                    _ if l == "disable" => return Err("disable".into()),
                    _ if l.is_empty() => {}
                    _ => return Err(format!("bad line {l}")),
                }
            }
            Ok(())
        }
    }

    fn parse_fn() -> ParseFn {
        Arc::new(TestOptions)
    }

    #[test]
    fn exit_codes_decide() {
        let mut s = scripts();
        let ip = Some(Ipv4Addr::new(10, 8, 0, 2));
        // via-file: $1 holds the user name and password.
        s.auth_user_pass_verify = Some((
            sh("test \"$(sed -n 2p \"$1\")\" = secret && test \"$script_type\" = user-pass-verify"),
            true,
        ));
        let accept = |d: &AuthDecision| matches!(d, AuthDecision::Accept(_));
        assert!(accept(&decide(&s, &parse_fn(), &request(), ip, 1)));
        let mut r = request();
        r.password = Some(zeroize::Zeroizing::new("wrong".into()));
        assert!(!accept(&decide(&s, &parse_fn(), &r, ip, 1)));

        // client-connect: exit 1 refuses; the file is read back on exit 0.
        s.auth_user_pass_verify = None;
        s.client_connect = Some(sh("exit 1"));
        assert!(!accept(&decide(&s, &parse_fn(), &request(), ip, 1)));
        s.client_connect = Some(sh("test \"$ifconfig_pool_remote_ip\" = 10.8.0.2 && \
             printf 'push \"route 192.0.2.0 255.255.255.0\"\\nifconfig-push 10.8.0.9 255.255.255.0\\n' > \"$1\""));
        match decide(&s, &parse_fn(), &request(), ip, 1) {
            AuthDecision::Accept(g) => {
                assert_eq!(g.push, ["route 192.0.2.0 255.255.255.0"]);
                assert_eq!(g.fixed_ip, Some(Ipv4Addr::new(10, 8, 0, 9)));
            }
            d => panic!("{d:?}"),
        }
        s.client_connect = Some(sh("echo disable > \"$1\""));
        assert!(!accept(&decide(&s, &parse_fn(), &request(), ip, 1)));
        s.client_connect = Some(sh("echo 'iroute x' > \"$1\""));
        assert!(!accept(&decide(&s, &parse_fn(), &request(), ip, 1)));
        // Exit 2 defers: the answer comes later in auth_control_file.
        s.client_connect = None;
        s.auth_user_pass_verify = Some((
            sh("(sleep 0.3; echo 1 > \"$auth_control_file\") & exit 2"),
            false,
        ));
        assert!(accept(&decide(&s, &parse_fn(), &request(), ip, 1)));
        s.auth_user_pass_verify = Some((
            sh("(sleep 0.3; echo 0 > \"$auth_control_file\") & exit 2"),
            false,
        ));
        assert!(!accept(&decide(&s, &parse_fn(), &request(), ip, 1)));
        // No answer within the limit refuses.
        s.deferred_limit = Duration::from_millis(300);
        s.auth_user_pass_verify = Some((sh("exit 2"), false));
        assert!(!accept(&decide(&s, &parse_fn(), &request(), ip, 1)));
        s.auth_user_pass_verify = None;
        // A hanging script is killed and refuses.
        s.timeout = Duration::from_millis(200);
        s.client_connect = Some(sh("sleep 30"));
        assert!(!accept(&decide(&s, &parse_fn(), &request(), ip, 1)));
    }
}
