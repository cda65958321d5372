//! The server's login policy over the state store: certificates, users, passwords, rate
//! limits, revocation and address leases.
//!
//! [`StoreAuth`] is the [`Authenticator`] the driver runs on its worker thread (never on the
//! packet loop). For every new client it checks, in this order:
//!
//! 1. the client certificate, when there is one: its serial is not revoked in the store (the
//!    signature and validity dates were checked by TLS already);
//! 2. the identity: the certificate's common name, or in `password` mode the user name; in
//!    the certificate modes a user name sent next to the certificate must be that name;
//! 3. the user: exists, enabled, not expired; and the password, when the mode or the user
//!    asks for one (argon2id). Password checks go through an [`AuthRateLimiter`] first: an
//!    address, or a user at an address, over its failure budget is refused without looking
//!    at the password. Failures from one address never refuse a login from another (the
//!    policy is logged once at startup).
//!
//! The address pool has one owner here: every client's address is decided below and the
//! engine takes it ([`warren_openvpn::pool`]). An accepted client gets its user's fixed
//! address, else the address it had last time (the lease, kept across restarts), else the
//! lowest pool address nobody holds, is leased to, or has as a fixed address, else the
//! lowest one nobody holds (a lease of someone away); and its user's extra routes pushed.
//! Addresses held by the identity's other sessions count as free without `duplicate-cn`
//! (the new session replaces them). With every address held, the login is refused with
//! `AUTH_FAILED,no free address in the pool`. When the store's revision
//! moves (any write, from any process, e.g. `warren pki revoke` or `warren user disable`)
//! and every 30 s regardless, the connected identities are checked again, and those that
//! would now be refused are kicked with `RESTART`, so the client reconnects and meets the
//! refusal (`AUTH_FAILED`).
//!
//! Other refusals answer a plain `AUTH_FAILED` (no reason on the wire, so a guesser learns
//! nothing); the reason is logged at warn with the address and the user.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tracing::{error, info, warn};
use warren_core::{Instant, PeerId};
use warren_driver::{
    AccessUpdate, AuthRequest, Authenticator, Kick, PasswordCheck, Step, Verified,
};
use warren_openvpn::access::AccessList;
use warren_openvpn::pool::Pool;
use warren_openvpn::{AuthDecision, AuthGrant, KickTarget};
use warren_pki::Serial;
use warren_store::{
    AuthOutcome, AuthRateLimiter, LimitedBy, RateDecision, RateLimitConfig, Store, password,
};

use warren_config::UserAuth;

use crate::state::wall_now;

/// One line for the startup log: what `warren-auth` (`--auth`) asks of clients.
pub fn describe(mode: UserAuth) -> &'static str {
    match mode {
        UserAuth::Cert => "client certificate; plus the password for users that have one",
        UserAuth::CertPassword => "client certificate and password",
        UserAuth::Password => "user name and password (no client certificate)",
    }
}

/// How often connected identities are checked even when the store did not change (user and
/// certificate expiry happen without a write).
const FULL_RECHECK: Duration = Duration::from_secs(30);
/// At most one warning per this interval for database errors during rechecks.
const DB_WARN_EVERY: Duration = Duration::from_secs(30);
/// What a kicked client is told: reconnect (and meet the refusal). OpenVPN push.c
/// `server_pushed_signal`: `RESTART` makes the client restart like SIGUSR1.
const KICK_MESSAGE: &str = "RESTART";

/// Why a client with a free pool address still gets none: what `AUTH_FAILED` says (the
/// client passed authentication, so this is no secret).
const POOL_EXHAUSTED: &str = "no free address in the pool";

/// A client this authenticator let in (or is letting in).
#[derive(Debug, Clone)]
struct Peer {
    identity: String,
    serial: Option<Serial>,
    cert_not_after: Option<SystemTime>,
    /// The address it was given.
    ip: Ipv4Addr,
    kicked: bool,
    /// The access rules its session has (compared with the database's on every change).
    access: AccessList,
}

/// The store-backed login policy (see the module docs).
pub struct StoreAuth {
    store: Arc<dyn Store>,
    mode: UserAuth,
    pool: Pool,
    /// `duplicate-cn`: an identity's sessions stay side by side (else a new one replaces).
    duplicate_cn: bool,
    limiter: AuthRateLimiter,
    peers: HashMap<PeerId, Peer>,
    /// Logins whose password check runs on the pool, by ticket.
    pending: HashMap<u64, (LoginMeta, PendingLogin)>,
    /// Password checks running per address, and per (address, user).
    in_flight: HashMap<IpAddr, u32>,
    in_flight_user: HashMap<(IpAddr, String), u32>,
    /// The revision the connected identities were last checked at.
    checked_revision: Option<u64>,
    next_full_check: Option<Instant>,
    last_db_warning: Option<Instant>,
    /// `client-config-dir`: per-client files read at each login.
    ccd: Option<crate::ccd::CcdDir>,
    /// The kernel routes for the users' subnets, synced when the store changes.
    subnet_routes: Option<crate::ccd::SubnetRoutes>,
    /// Identities whose rules changed at the last re-check, for `access_updates`.
    access_changed: Vec<AccessUpdate>,
}

impl std::fmt::Debug for StoreAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreAuth")
            .field("mode", &self.mode)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

/// Why a login was refused: the log text.
struct Refusal(String);

/// The identity, its session record, what it is granted, and how it proved itself.
type Granted = (String, Peer, AuthGrant, &'static str);

/// What [`StoreAuth::begin_login`] made of a request.
enum Begun {
    Done(Granted),
    Verify(PendingLogin, PasswordCheck),
}

/// Whose password a pool check compares.
#[derive(Debug, Clone, Copy)]
enum PasswordTarget {
    /// The user's hash.
    Hash,
    /// A dummy (the user has no password): refused whatever the check says.
    NoPassword,
    /// A dummy (no such user): refused whatever the check says.
    UnknownUser,
}

/// A login waiting for its password check.
struct PendingLogin {
    identity: String,
    cert: Option<(Serial, SystemTime)>,
    ip: IpAddr,
    target: PasswordTarget,
}

/// What the log lines of a login need.
struct LoginMeta {
    peer_id: PeerId,
    addr: std::net::SocketAddr,
    who: String,
}

impl StoreAuth {
    pub fn new(
        store: Arc<dyn Store>,
        mode: UserAuth,
        pool: Pool,
        duplicate_cn: bool,
        limits: RateLimitConfig,
    ) -> StoreAuth {
        info!("login rate limits: {limits}");
        StoreAuth {
            store,
            mode,
            pool,
            duplicate_cn,
            limiter: AuthRateLimiter::new(limits),
            peers: HashMap::new(),
            pending: HashMap::new(),
            in_flight: HashMap::new(),
            in_flight_user: HashMap::new(),
            checked_revision: None,
            next_full_check: None,
            last_db_warning: None,
            ccd: None,
            subnet_routes: None,
            access_changed: Vec::new(),
        }
    }

    /// Also applies `client-config-dir` files (after the user's own settings; the file's
    /// `ifconfig-push` beats the user's fixed address).
    pub fn with_ccd(mut self, ccd: Option<crate::ccd::CcdDir>) -> StoreAuth {
        self.ccd = ccd;
        self
    }

    /// Routes the users' subnets into `dev` (added now, then kept in step with the store).
    pub fn with_subnet_routes(mut self, dev: &str) -> StoreAuth {
        let mut r = crate::ccd::SubnetRoutes::new(dev);
        r.sync(&*self.store);
        self.subnet_routes = Some(r);
        self
    }

    /// The quick part of a login, on the worker thread: certificate, identity, user, rate
    /// limits. Decides at once unless a password must be checked; then returns the check
    /// for the pool and what [`StoreAuth::finish_login`] needs.
    fn begin_login(&mut self, now: Instant, req: &AuthRequest) -> Result<Begun, Refusal> {
        let wall = wall_now();
        let db = |e: warren_store::StoreError| {
            error!("user database error while authorising: {e}");
            Refusal(format!("database error ({e})"))
        };

        // 1. The certificate (TLS verified the chain and the dates already).
        let cert = match &req.certificate {
            Some(der) => Some(
                warren_pki::inspect_der(der, "client certificate")
                    .map_err(|e| Refusal(format!("unreadable client certificate: {e}")))?,
            ),
            None if self.mode != UserAuth::Password => {
                return Err(Refusal("no client certificate".into()));
            }
            None => None,
        };
        if let Some(c) = &cert {
            if self.store.is_revoked(&c.serial).map_err(db)? {
                return Err(Refusal(format!("certificate {} is revoked", c.serial)));
            }
            if !c.is_valid_at(wall) {
                return Err(Refusal(format!(
                    "certificate {} has expired (or is not valid yet)",
                    c.serial
                )));
            }
        }
        let cert = cert.map(|c| (c.serial, c.not_after));

        // 2. The identity.
        let identity = match self.mode {
            UserAuth::Password => match req.username.as_deref() {
                Some(u) if !u.is_empty() => u.to_owned(),
                _ => return Err(Refusal("no user name (auth-user-pass)".into())),
            },
            UserAuth::Cert | UserAuth::CertPassword => {
                if let Some(u) = req.username.as_deref()
                    && !u.is_empty()
                    && u != req.common_name
                {
                    return Err(Refusal(format!(
                        "user name {u:?} differs from the certificate's name {:?}",
                        req.common_name
                    )));
                }
                req.common_name.clone()
            }
        };

        // 3. The user, and the password when one is needed.
        let user = self.store.user(&identity).map_err(db)?;
        let needs_password = match self.mode {
            UserAuth::CertPassword | UserAuth::Password => true,
            UserAuth::Cert => user.as_ref().is_some_and(|u| u.password_hash.is_some()),
        };
        if !needs_password {
            let outcome = self.store.check_user(&identity, wall).map_err(db)?;
            if !outcome.is_accepted() {
                return Err(Refusal(outcome.reason().to_owned()));
            }
            return self.grant(identity, cert, "certificate").map(Begun::Done);
        }
        let Some(password) = req.password.clone() else {
            return Err(Refusal(
                "a password is required but the client sent none (add auth-user-pass to its profile)"
                    .into(),
            ));
        };
        let ip = req.addr.ip();
        // Checks still running count as failures, so parallel guesses cannot overrun the
        // limits.
        let pending = (
            self.in_flight.get(&ip).copied().unwrap_or(0),
            self.in_flight_user
                .get(&(ip, identity.clone()))
                .copied()
                .unwrap_or(0),
        );
        if let RateDecision::Limited { by, retry_after } =
            self.limiter
                .check_pending(now, ip, Some(&identity), pending)
        {
            let by = match by {
                LimitedBy::Address => "from this address",
                LimitedBy::UserAtAddress => "for this user from this address",
            };
            return Err(Refusal(format!(
                "too many failed logins {by}; password not checked (retry in {} s)",
                retry_after.as_secs().max(1)
            )));
        }
        // Unknown users and users without a password cost the same time as a wrong password
        // (warren_store::Store::verify_password).
        let (target, hash) = match user.map(|u| u.password_hash) {
            Some(Some(hash)) => (PasswordTarget::Hash, Some(hash)),
            Some(None) => (PasswordTarget::NoPassword, None),
            None => (PasswordTarget::UnknownUser, None),
        };
        let check = PasswordCheck::new(move || match hash {
            Some(h) => password::verify(&h, &password),
            None => {
                password::verify_dummy(&password);
                false
            }
        });
        *self.in_flight.entry(ip).or_insert(0) += 1;
        *self
            .in_flight_user
            .entry((ip, identity.clone()))
            .or_insert(0) += 1;
        Ok(Begun::Verify(
            PendingLogin {
                identity,
                cert,
                ip,
                target,
            },
            check,
        ))
    }

    /// The rest of a login whose password check ended.
    fn finish_login(
        &mut self,
        now: Instant,
        p: PendingLogin,
        verified: Verified,
    ) -> Result<Granted, Refusal> {
        release(&mut self.in_flight, &p.ip);
        release(&mut self.in_flight_user, &(p.ip, p.identity.clone()));
        let wall = wall_now();
        let db = |e: warren_store::StoreError| {
            error!("user database error while authorising: {e}");
            Refusal(format!("database error ({e})"))
        };
        let outcome = match (verified, p.target) {
            (Verified::Busy, _) => {
                return Err(Refusal(
                    "too many password checks waiting (server busy); password not checked".into(),
                ));
            }
            (_, PasswordTarget::UnknownUser) => AuthOutcome::UnknownUser,
            (_, PasswordTarget::NoPassword) => AuthOutcome::NoPassword,
            (Verified::NoMatch, PasswordTarget::Hash) => AuthOutcome::WrongPassword,
            // As in Store::verify_password: disabled or expired only once the password
            // matched (the state is read again: it may have changed during the check).
            (Verified::Match, PasswordTarget::Hash) => {
                match self.store.check_user(&p.identity, wall).map_err(db)? {
                    AuthOutcome::UnknownUser => AuthOutcome::UnknownUser,
                    o => o,
                }
            }
        };
        match outcome {
            AuthOutcome::Accepted => {
                self.limiter.record_success(now, p.ip, Some(&p.identity));
            }
            AuthOutcome::WrongPassword | AuthOutcome::UnknownUser | AuthOutcome::NoPassword => {
                self.limiter.record_failure(now, p.ip, Some(&p.identity));
            }
            AuthOutcome::Disabled | AuthOutcome::Expired => {}
        }
        if !outcome.is_accepted() {
            return Err(Refusal(outcome.reason().to_owned()));
        }
        let method = if p.cert.is_some() {
            "certificate and password"
        } else {
            "password"
        };
        self.grant(p.identity, p.cert, method)
    }

    /// An accepted login: its address, routes and session record.
    fn grant(
        &mut self,
        identity: String,
        cert: Option<(Serial, SystemTime)>,
        method: &'static str,
    ) -> Result<Granted, Refusal> {
        let db = |e: warren_store::StoreError| {
            error!("user database error while authorising: {e}");
            Refusal(format!("database error ({e})"))
        };
        let user = self
            .store
            .user(&identity)
            .map_err(db)?
            .ok_or_else(|| Refusal(AuthOutcome::UnknownUser.reason().to_owned()))?;
        let options = match &self.ccd {
            Some(ccd) => ccd.lookup(&identity).map_err(Refusal)?,
            None => None,
        };
        let fixed = options
            .as_ref()
            .and_then(|o| o.ifconfig_push.map(|(ip, _)| ip))
            .or(user.fixed_ip);
        let ip = self
            .choose_address(&identity, fixed)
            .map_err(db)?
            .ok_or_else(|| Refusal(POOL_EXHAUSTED.to_owned()))?;
        let site = self.store.user_site(&identity).map_err(db)?;
        let mut push = Vec::new();
        for r in &user.routes {
            match r {
                IpNet::V4(n) => push.push(format!("route {} {}", n.network(), n.netmask())),
                IpNet::V6(n) => warn!(
                    "route {n} of user {identity:?} is not pushed: warren's tunnels carry IPv4 only"
                ),
            }
        }
        let (serial, cert_not_after) = match cert {
            Some((s, t)) => (Some(s), Some(t)),
            None => (None, None),
        };
        let access = crate::access::list_of(
            &identity,
            &self.store.effective_access(&identity).map_err(db)?,
        );
        let peer = Peer {
            identity: identity.clone(),
            serial,
            cert_not_after,
            ip,
            kicked: false,
            access: access.clone(),
        };
        let grant = AuthGrant {
            identity: Some(identity.clone()),
            fixed_ip: Some(ip),
            push,
            access: crate::access::compile(&access),
            ..Default::default()
        };
        let mut grant = grant;
        crate::ccd::apply_site(&site, &mut grant);
        if let Some(o) = &options {
            crate::ccd::apply_options(o, &mut grant).map_err(Refusal)?;
            // The address was chosen above (and is the pool's owner's to give).
            grant.fixed_ip = Some(ip);
        }
        Ok((identity, peer, grant, method))
    }

    /// Logs the result of a login and records the accepted peer.
    fn conclude(&mut self, req: &LoginMeta, result: Result<Granted, Refusal>) -> AuthDecision {
        match result {
            Ok((identity, peer, grant, method)) => {
                info!(
                    "login accepted user={identity:?} addr={} ({method})",
                    req.addr
                );
                self.peers.insert(req.peer_id, peer);
                AuthDecision::Accept(grant)
            }
            Err(Refusal(why)) => {
                warn!("login refused user={:?} addr={}: {why}", req.who, req.addr);
                let reason = (why == POOL_EXHAUSTED).then_some(why);
                AuthDecision::Reject { reason }
            }
        }
    }

    fn meta(&self, req: &AuthRequest) -> LoginMeta {
        let who = match (self.mode, req.username.as_deref()) {
            (UserAuth::Password, Some(u)) => u,
            (UserAuth::Password, None) => "",
            _ => req.common_name.as_str(),
        };
        LoginMeta {
            peer_id: req.peer_id,
            addr: req.addr,
            who: who.to_owned(),
        }
    }

    /// The address for `identity` (see the module docs); `None`: every one is held.
    fn choose_address(
        &self,
        identity: &str,
        fixed: Option<Ipv4Addr>,
    ) -> Result<Option<Ipv4Addr>, warren_store::StoreError> {
        // Addresses of other connected (or connecting) sessions.
        let in_use: HashSet<Ipv4Addr> = self
            .peers
            .values()
            .filter(|p| self.duplicate_cn || p.identity != identity)
            .map(|p| p.ip)
            .collect();
        if let Some(ip) = fixed {
            if !self.pool.contains(ip) {
                warn!(
                    "fixed address {ip} of user {identity:?} is outside the pool {}; using the pool",
                    self.pool
                );
            } else if !in_use.contains(&ip) {
                return Ok(Some(ip));
            }
        }
        let fixed_elsewhere: HashSet<Ipv4Addr> = self
            .store
            .users()?
            .into_iter()
            .filter(|u| u.name != identity)
            .filter_map(|u| u.fixed_ip)
            .collect();
        if let Some(lease) = self.store.lease_for(identity)?
            && self.pool.contains(lease.ip)
            && !in_use.contains(&lease.ip)
            && !fixed_elsewhere.contains(&lease.ip)
        {
            return Ok(Some(lease.ip));
        }
        let leased: HashSet<Ipv4Addr> = self.store.leases()?.into_iter().map(|l| l.ip).collect();
        let unclaimed = self
            .pool
            .iter()
            .find(|a| !in_use.contains(a) && !leased.contains(a) && !fixed_elsewhere.contains(a));
        Ok(unclaimed.or_else(|| self.pool.iter().find(|a| !in_use.contains(a))))
    }

    /// Why a connected peer must go now, and which of the identity's sessions go with it:
    /// all of them when the user is refused, only this certificate's when the certificate
    /// is (others of the same name may use other certificates, under `duplicate-cn`).
    /// The user first: `warren user del` also revokes the certificates, and "user deleted"
    /// is the better reason then.
    fn still_allowed(
        &self,
        p: &Peer,
        wall: SystemTime,
    ) -> Result<Option<(KickTarget, String)>, warren_store::StoreError> {
        let everyone = || KickTarget::Identity(p.identity.clone());
        match self.store.check_user(&p.identity, wall)? {
            AuthOutcome::Accepted => {}
            AuthOutcome::UnknownUser => return Ok(Some((everyone(), "user deleted".into()))),
            other => return Ok(Some((everyone(), other.reason().to_owned()))),
        }
        let Some(s) = &p.serial else {
            return Ok(None);
        };
        let this_cert = || KickTarget::CertSerial(s.as_bytes().to_vec());
        if self.store.is_revoked(s)? {
            return Ok(Some((this_cert(), format!("certificate {s} revoked"))));
        }
        if p.cert_not_after.is_some_and(|t| wall > t) {
            return Ok(Some((this_cert(), format!("certificate {s} expired"))));
        }
        Ok(None)
    }

    /// Compares every connected identity's rules with the database's and queues an
    /// [`AccessUpdate`] for each that changed.
    fn recheck_access(&mut self) -> Result<(), warren_store::StoreError> {
        let identities: HashSet<String> = self
            .peers
            .values()
            .filter(|p| !p.kicked)
            .map(|p| p.identity.clone())
            .collect();
        for identity in identities {
            let list = crate::access::list_of(&identity, &self.store.effective_access(&identity)?);
            let mut changed = false;
            for p in self.peers.values_mut().filter(|p| p.identity == identity) {
                if p.access != list {
                    p.access = list.clone();
                    changed = true;
                }
            }
            if changed {
                info!(
                    "access rules of {identity:?} changed: {} rule(s) now",
                    list.0.len()
                );
                self.access_changed.push(AccessUpdate {
                    identity,
                    rules: crate::access::compile(&list),
                });
            }
        }
        Ok(())
    }

    fn db_warning(&mut self, now: Instant, e: &warren_store::StoreError) {
        if self
            .last_db_warning
            .is_none_or(|t| now.saturating_duration_since(t) >= DB_WARN_EVERY)
        {
            warn!("cannot re-check connected users: {e}");
            self.last_db_warning = Some(now);
        }
    }
}

impl Authenticator for StoreAuth {
    fn authenticate(&mut self, now: Instant, req: AuthRequest) -> AuthDecision {
        let meta = self.meta(&req);
        let result = match self.begin_login(now, &req) {
            Ok(Begun::Done(g)) => Ok(g),
            Ok(Begun::Verify(pending, check)) => {
                let v = if check.run() {
                    Verified::Match
                } else {
                    Verified::NoMatch
                };
                self.finish_login(now, pending, v)
            }
            Err(r) => Err(r),
        };
        self.conclude(&meta, result)
    }

    fn begin(&mut self, now: Instant, ticket: u64, req: AuthRequest) -> Step {
        let meta = self.meta(&req);
        let result = match self.begin_login(now, &req) {
            Ok(Begun::Done(g)) => Ok(g),
            Ok(Begun::Verify(pending, check)) => {
                self.pending.insert(ticket, (meta, pending));
                return Step::Verify(check);
            }
            Err(r) => Err(r),
        };
        Step::Done(self.conclude(&meta, result))
    }

    fn finish(
        &mut self,
        now: Instant,
        ticket: u64,
        verified: Verified,
        live: bool,
    ) -> AuthDecision {
        let Some((meta, pending)) = self.pending.remove(&ticket) else {
            return AuthDecision::Reject { reason: None };
        };
        let result = self.finish_login(now, pending, verified);
        if !live {
            // The client left during the check: rate limits counted, nothing else.
            return AuthDecision::Reject { reason: None };
        }
        self.conclude(&meta, result)
    }

    fn connected(&mut self, _now: Instant, peer_id: PeerId, identity: &str, vpn_ip: Ipv4Addr) {
        if let Some(p) = self.peers.get_mut(&peer_id) {
            p.ip = vpn_ip;
        }
        // Our own write moves the revision; do not take it for someone else's change.
        let before = self.store.revision().ok();
        if let Err(e) = self.store.record_lease(identity, vpn_ip, wall_now()) {
            warn!("cannot record the address lease of {identity:?} ({vpn_ip}): {e}");
            return;
        }
        let after = self.store.revision().ok();
        if let (Some(b), Some(a)) = (before, after)
            && self.checked_revision == Some(b)
            && a == b + 1
        {
            self.checked_revision = Some(a);
        }
    }

    fn disconnected(&mut self, _now: Instant, peer_id: PeerId) {
        self.peers.remove(&peer_id);
    }

    fn recheck(&mut self, now: Instant) -> Vec<Kick> {
        let full = self.next_full_check.is_none_or(|t| now >= t);
        let revision = match self.store.revision() {
            Ok(r) => r,
            Err(e) => {
                self.db_warning(now, &e);
                return Vec::new();
            }
        };
        if !full && self.checked_revision == Some(revision) {
            return Vec::new();
        }
        if self.checked_revision != Some(revision)
            && let Some(r) = &mut self.subnet_routes
        {
            r.sync(&*self.store);
        }
        if full {
            self.next_full_check = Some(now + FULL_RECHECK);
            self.limiter.prune(now);
        }
        let wall = wall_now();
        let mut gone: Vec<(String, KickTarget, String)> = Vec::new();
        let mut failed = None;
        let covered = |gone: &[(String, KickTarget, String)], p: &Peer| {
            gone.iter().any(|(_, t, _)| kicks(t, p))
        };
        for p in self.peers.values().filter(|p| !p.kicked) {
            if covered(&gone, p) {
                continue;
            }
            match self.still_allowed(p, wall) {
                Ok(Some((target, reason))) => gone.push((p.identity.clone(), target, reason)),
                Ok(None) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            // Try again at the next tick.
            self.db_warning(now, &e);
            return Vec::new();
        }
        self.checked_revision = Some(revision);
        for p in self.peers.values_mut() {
            if covered(&gone, p) {
                p.kicked = true;
            }
        }
        if let Err(e) = self.recheck_access() {
            self.db_warning(now, &e);
            // Look again at the next tick.
            self.checked_revision = None;
        }
        gone.into_iter()
            .map(|(identity, target, reason)| Kick {
                identity,
                target,
                message: KICK_MESSAGE.to_owned(),
                reason,
            })
            .collect()
    }

    fn access_updates(&mut self, _now: Instant) -> Vec<AccessUpdate> {
        std::mem::take(&mut self.access_changed)
    }

    fn reload(&mut self, now: Instant) -> Vec<Kick> {
        // A full check, as if the store had changed and the 30 s had passed.
        self.next_full_check = None;
        self.checked_revision = None;
        let kicks = self.recheck(now);
        info!(
            "user database re-read: {} session(s) checked, {} user(s) to disconnect",
            self.peers.len(),
            kicks.len()
        );
        kicks
    }
}

/// One running check fewer for `key`.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Whether a kick of `target` ends `p`'s session (as [`warren_openvpn::Server::kick`]
/// matches it).
fn kicks(target: &KickTarget, p: &Peer) -> bool {
    match target {
        KickTarget::Identity(id) => *id == p.identity,
        KickTarget::Peer(_) => false,
        KickTarget::CertSerial(s) => p
            .serial
            .as_ref()
            .is_some_and(|own| own.as_bytes() == s.as_slice()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_io::OsRng;
    use warren_pki::{CaOptions, LeafOptions, Pki, RevocationReason};
    use warren_store::{CertRecord, NewUser, SqliteStore, UserChange, password};
    use zeroize::Zeroizing;

    struct World {
        store: Arc<SqliteStore>,
        pki: Pki,
        rng: OsRng,
        t: Instant,
    }

    impl World {
        fn new() -> World {
            let mut rng = OsRng::new().expect("rng");
            let pki = Pki::generate(&CaOptions::default(), wall_now(), &mut rng).expect("ca");
            World {
                store: Arc::new(SqliteStore::open_in_memory().expect("db")),
                pki,
                rng,
                t: Instant::from_secs(100),
            }
        }

        /// Adds a user with a certificate (and a password); returns the certificate DER.
        fn user(&mut self, name: &str, pw: Option<&str>) -> Vec<u8> {
            let issued = self
                .pki
                .issue_client(name, &LeafOptions::default(), wall_now(), &mut self.rng)
                .expect("issue");
            let mut u = NewUser::named(name);
            u.password_hash = pw.map(|p| password::hash(p, &mut self.rng).expect("hash"));
            self.store
                .add_user(&u, Some(&CertRecord::from_issued(&issued)), wall_now())
                .expect("add");
            der(&issued.cert_pem)
        }

        /// Another certificate for an existing user (a second device); returns its DER.
        fn another_cert(&mut self, name: &str) -> Vec<u8> {
            let issued = self
                .pki
                .issue_client(name, &LeafOptions::default(), wall_now(), &mut self.rng)
                .expect("issue");
            self.store
                .add_cert(&CertRecord::from_issued(&issued))
                .expect("add cert");
            der(&issued.cert_pem)
        }

        fn auth(&self, mode: UserAuth) -> StoreAuth {
            StoreAuth::new(
                self.store.clone(),
                mode,
                Pool::new(Ipv4Addr::new(10, 8, 0, 0), Ipv4Addr::new(255, 255, 255, 0)),
                false,
                RateLimitConfig::default(),
            )
        }
    }

    fn der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("PEM certificate")
            .to_vec()
    }

    fn pid(v: u32) -> PeerId {
        PeerId::new(v).expect("peer id")
    }

    fn req(
        peer: u32,
        cn: &str,
        cert: Option<Vec<u8>>,
        user: Option<&str>,
        pw: Option<&str>,
    ) -> AuthRequest {
        AuthRequest {
            peer_id: pid(peer),
            addr: "192.0.2.7:40000".parse().expect("addr"),
            common_name: cn.into(),
            certificate: cert,
            username: user.map(str::to_owned),
            password: pw.map(|p| Zeroizing::new(p.to_owned())),
            peer_info: Vec::new(),
        }
    }

    fn accepted(d: &AuthDecision) -> Option<&AuthGrant> {
        match d {
            AuthDecision::Accept(g) => Some(g),
            AuthDecision::Reject { .. } => None,
        }
    }

    #[test]
    fn modes() {
        let mut w = World::new();
        let alice = w.user("alice", None);
        let bob = w.user("bob", Some("pw-bob"));
        let t = w.t;

        let mut a = w.auth(UserAuth::Cert);
        assert!(
            accepted(&a.authenticate(t, req(1, "alice", Some(alice.clone()), None, None)))
                .is_some()
        );
        // bob has a password: required in cert mode too.
        assert!(
            accepted(&a.authenticate(t, req(2, "bob", Some(bob.clone()), None, None))).is_none()
        );
        assert!(
            accepted(&a.authenticate(
                t,
                req(3, "bob", Some(bob.clone()), Some("bob"), Some("nope"))
            ))
            .is_none()
        );
        assert!(
            accepted(&a.authenticate(
                t,
                req(4, "bob", Some(bob.clone()), Some("bob"), Some("pw-bob"))
            ))
            .is_some()
        );
        // A user name that is not the certificate's.
        assert!(
            accepted(&a.authenticate(
                t,
                req(5, "bob", Some(bob.clone()), Some("alice"), Some("pw-bob"))
            ))
            .is_none()
        );
        // No certificate in a certificate mode.
        assert!(
            accepted(&a.authenticate(t, req(6, "bob", None, Some("bob"), Some("pw-bob"))))
                .is_none()
        );

        let mut a = w.auth(UserAuth::CertPassword);
        assert!(
            accepted(&a.authenticate(
                t,
                req(1, "alice", Some(alice.clone()), Some("alice"), Some("x"))
            ))
            .is_none()
        );
        assert!(
            accepted(&a.authenticate(
                t,
                req(2, "bob", Some(bob.clone()), Some("bob"), Some("pw-bob"))
            ))
            .is_some()
        );

        let mut a = w.auth(UserAuth::Password);
        assert!(
            accepted(&a.authenticate(t, req(1, "bob", None, Some("bob"), Some("pw-bob"))))
                .is_some()
        );
        assert!(
            accepted(&a.authenticate(t, req(2, "nobody", None, Some("nobody"), Some("pw-bob"))))
                .is_none()
        );
        assert!(
            accepted(&a.authenticate(t, req(3, "alice", None, Some("alice"), Some("")))).is_none()
        );
        assert!(accepted(&a.authenticate(t, req(4, "", None, None, None))).is_none());
    }

    #[test]
    fn rate_limit_holds_but_spares_other_users() {
        let mut w = World::new();
        w.user("bob", Some("right"));
        w.user("carol", Some("carols"));
        let mut a = w.auth(UserAuth::Password);
        let t = w.t;
        for i in 0..5 {
            assert!(
                accepted(&a.authenticate(t, req(i, "bob", None, Some("bob"), Some("wrong"))))
                    .is_none()
            );
        }
        // Limited now: even the right password is refused without being checked.
        assert!(
            accepted(&a.authenticate(t, req(9, "bob", None, Some("bob"), Some("right")))).is_none()
        );
        // Another user from the same address gets in.
        assert!(
            accepted(&a.authenticate(t, req(10, "carol", None, Some("carol"), Some("carols"))))
                .is_some()
        );
        // After the interval, bob again.
        let later = t + Duration::from_secs(13);
        assert!(
            accepted(&a.authenticate(later, req(11, "bob", None, Some("bob"), Some("right"))))
                .is_some()
        );
    }

    /// A stranger guessing bob's password (or spraying user names) from one address must not
    /// lock bob out when he logs in from another address.
    #[test]
    fn a_stranger_cannot_lock_out_a_user_elsewhere() {
        let mut w = World::new();
        w.user("bob", Some("right"));
        let mut a = w.auth(UserAuth::Password);
        let t = w.t;
        let from = |r: AuthRequest, addr: &str| AuthRequest {
            addr: addr.parse().expect("addr"),
            ..r
        };
        for i in 0..10 {
            assert!(
                accepted(&a.authenticate(t, req(i, "bob", None, Some("bob"), Some("wrong"))))
                    .is_none()
            );
        }
        for i in 0..30 {
            let name = format!("nobody{i}");
            assert!(
                accepted(&a.authenticate(t, req(20 + i, &name, None, Some(&name), Some("x"))))
                    .is_none()
            );
        }
        // From the guesser's address bob is refused unchecked...
        assert!(
            accepted(&a.authenticate(t, req(60, "bob", None, Some("bob"), Some("right"))))
                .is_none()
        );
        // ...but from a clean address his right password gets him in at once.
        let r = from(
            req(61, "bob", None, Some("bob"), Some("right")),
            "198.51.100.9:5000",
        );
        assert!(accepted(&a.authenticate(t, r)).is_some());
    }

    #[test]
    fn addresses_leases_and_routes() {
        let mut w = World::new();
        let alice = w.user("alice", None);
        let bob = w.user("bob", None);
        let carol = w.user("carol", None);
        w.store
            .update_user(
                "carol",
                &UserChange {
                    fixed_ip: Some(Some(Ipv4Addr::new(10, 8, 0, 2))),
                    routes: Some(vec![
                        "192.168.5.0/24".parse().expect("net"),
                        "fd00::/64".parse().expect("net"),
                    ]),
                    ..Default::default()
                },
            )
            .expect("update");
        let t = w.t;
        let mut a = w.auth(UserAuth::Cert);
        // .2 is carol's fixed address even while she is away.
        let g = a.authenticate(t, req(1, "alice", Some(alice.clone()), None, None));
        assert_eq!(
            accepted(&g).and_then(|g| g.fixed_ip),
            Some(Ipv4Addr::new(10, 8, 0, 3))
        );
        a.connected(t, pid(1), "alice", Ipv4Addr::new(10, 8, 0, 3));
        let g = a.authenticate(t, req(2, "bob", Some(bob.clone()), None, None));
        assert_eq!(
            accepted(&g).and_then(|g| g.fixed_ip),
            Some(Ipv4Addr::new(10, 8, 0, 4))
        );
        a.connected(t, pid(2), "bob", Ipv4Addr::new(10, 8, 0, 4));
        let g = a.authenticate(t, req(3, "carol", Some(carol.clone()), None, None));
        let g = accepted(&g).expect("carol").clone();
        assert_eq!(g.fixed_ip, Some(Ipv4Addr::new(10, 8, 0, 2)));
        assert_eq!(g.push, ["route 192.168.5.0 255.255.255.0"]);
        assert_eq!(g.identity.as_deref(), Some("carol"));
        a.disconnected(t, pid(1));
        a.disconnected(t, pid(2));
        // A new authenticator (a server restart): bob first still gets his lease back.
        let mut a = w.auth(UserAuth::Cert);
        let g = a.authenticate(t, req(1, "bob", Some(bob), None, None));
        assert_eq!(
            accepted(&g).and_then(|g| g.fixed_ip),
            Some(Ipv4Addr::new(10, 8, 0, 4))
        );
        let g = a.authenticate(t, req(2, "alice", Some(alice), None, None));
        assert_eq!(
            accepted(&g).and_then(|g| g.fixed_ip),
            Some(Ipv4Addr::new(10, 8, 0, 3))
        );
    }

    /// The lease table owns the pool (issue 9): a fixed address another session holds is not
    /// given twice, duplicate-cn keeps an identity's sessions apart (without it a new session
    /// takes the old one's address, which it replaces), a lease of someone away is reused only
    /// when nothing else is left, and a full pool refuses with the reason on the wire.
    #[test]
    fn the_lease_table_owns_the_pool() {
        let mut w = World::new();
        let [a, b, c, e] = ["a", "b", "c", "e"].map(|n| w.user(n, None));
        let ip = |d: u8| Ipv4Addr::new(10, 8, 0, d);
        w.store.record_lease("d", ip(2), wall_now()).expect("lease");
        let t = w.t;
        // .2 to .6.
        let pool = Pool::new(ip(0), Ipv4Addr::new(255, 255, 255, 248));
        let auth = |dup| {
            StoreAuth::new(
                w.store.clone(),
                UserAuth::Cert,
                pool,
                dup,
                RateLimitConfig::default(),
            )
        };
        let mut x = auth(true);
        let login = |x: &mut StoreAuth, peer: u32, n: &str, cert: &[u8]| {
            let d = x.authenticate(t, req(peer, n, Some(cert.to_vec()), None, None));
            let got = accepted(&d).and_then(|g| g.fixed_ip);
            if let Some(v) = got {
                x.connected(t, pid(peer), n, v);
            }
            (got, d)
        };
        assert_eq!(
            login(&mut x, 1, "a", &a).0,
            Some(ip(3)),
            "d's lease skipped"
        );
        let fixed_b = UserChange {
            fixed_ip: Some(Some(ip(3))),
            ..Default::default()
        };
        w.store.update_user("b", &fixed_b).expect("fixed");
        assert_eq!(
            login(&mut x, 2, "b", &b).0,
            Some(ip(4)),
            "b's fixed .3 is held"
        );
        assert_eq!(login(&mut x, 3, "a", &a).0, Some(ip(5)), "duplicate-cn");
        assert_eq!(login(&mut x, 4, "c", &c).0, Some(ip(6)));
        assert_eq!(
            login(&mut x, 5, "e", &e).0,
            Some(ip(2)),
            "d's lease, d away"
        );
        match login(&mut x, 6, "c", &c).1 {
            AuthDecision::Reject { reason } => {
                assert_eq!(reason.as_deref(), Some("no free address in the pool"))
            }
            other => panic!("a full pool accepted: {other:?}"),
        }
        x.disconnected(t, pid(1));
        assert_eq!(
            login(&mut x, 7, "b", &b).0,
            Some(ip(3)),
            "b's fixed, free again"
        );
        // Without duplicate-cn a's new session replaces the old one, address and all.
        let mut x = auth(false);
        assert_eq!(login(&mut x, 1, "a", &a).0, Some(ip(5)), "a's lease");
        assert_eq!(login(&mut x, 2, "a", &a).0, Some(ip(5)));
    }

    /// Rules at login travel in the grant; a change in the database reaches the
    /// connected identity at the next re-check, once.
    #[test]
    fn access_rules_in_the_grant_and_live_updates() {
        use warren_store::{AccessOwner, AccessRecord};
        let mut w = World::new();
        let alice = w.user("alice", None);
        let bob = w.user("bob", None);
        let owner = AccessOwner::User("alice".into());
        let allow = |r: &str| AccessRecord {
            allow: true,
            rule: r.into(),
        };
        w.store
            .set_access_rules(&owner, false, &[allow("10.0.0.1:22/tcp")])
            .expect("rules");
        let t = w.t;
        let mut a = w.auth(UserAuth::Cert);
        let d = a.authenticate(t, req(0, "alice", Some(alice), None, None));
        let g = accepted(&d).expect("accepted");
        let rules = g.access.as_ref().expect("alice has rules");
        assert_eq!(rules.list().0.len(), 1);
        a.connected(t, pid(0), "alice", Ipv4Addr::new(10, 8, 0, 10));
        let d = a.authenticate(t, req(1, "bob", Some(bob), None, None));
        let g = accepted(&d).expect("accepted");
        assert!(g.access.is_none(), "no rules: nothing to check");
        a.connected(t, pid(1), "bob", Ipv4Addr::new(10, 8, 0, 11));
        assert!(a.recheck(t).is_empty());
        assert!(a.access_updates(t).is_empty(), "nothing changed");
        // A group joined: its rules come after alice's own.
        w.store.add_group("ops").expect("group");
        w.store
            .set_access_rules(
                &AccessOwner::Group("ops".into()),
                false,
                &[allow("fd00::/64")],
            )
            .expect("group rules");
        w.store
            .set_user_groups("alice", false, &["ops".into()])
            .expect("join");
        let t = t + Duration::from_millis(250);
        assert!(a.recheck(t).is_empty());
        let u = a.access_updates(t);
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!(u[0].identity, "alice");
        let l = u[0].rules.as_ref().expect("rules").list();
        assert_eq!(
            l.0.iter().map(|e| e.rule.to_string()).collect::<Vec<_>>(),
            ["10.0.0.1:22/tcp", "fd00::/64"]
        );
        assert!(a.recheck(t + Duration::from_millis(250)).is_empty());
        assert!(a.access_updates(t).is_empty(), "reported once");
        // Cleared: everything allowed again.
        w.store.set_access_rules(&owner, true, &[]).expect("clear");
        w.store.set_user_groups("alice", true, &[]).expect("leave");
        assert!(a.recheck(t + Duration::from_millis(500)).is_empty());
        let u = a.access_updates(t);
        assert_eq!(u.len(), 1);
        assert!(u[0].rules.is_none());
    }

    #[test]
    fn revocation_and_disable_kick() {
        let mut w = World::new();
        let alice = w.user("alice", None);
        let bob = w.user("bob", None);
        let carol = w.user("carol", None);
        let t = w.t;
        let mut a = w.auth(UserAuth::Cert);
        for (i, (n, c)) in [("alice", &alice), ("bob", &bob), ("carol", &carol)]
            .iter()
            .enumerate()
        {
            let peer = i as u32;
            assert!(
                accepted(&a.authenticate(t, req(peer, n, Some((*c).clone()), None, None)))
                    .is_some()
            );
            a.connected(t, pid(peer), n, Ipv4Addr::new(10, 8, 0, 10 + peer as u8));
        }
        assert!(a.recheck(t).is_empty());
        assert!(a.recheck(t + Duration::from_millis(250)).is_empty());
        let serial = warren_pki::inspect_der(&alice, "x").expect("der").serial;
        w.store
            .revoke(&serial, wall_now(), Some(RevocationReason::KeyCompromise))
            .expect("revoke");
        w.store
            .update_user(
                "bob",
                &UserChange {
                    enabled: Some(false),
                    ..Default::default()
                },
            )
            .expect("disable");
        let mut kicks = a.recheck(t + Duration::from_millis(500));
        kicks.sort_by(|x, y| x.identity.cmp(&y.identity));
        assert_eq!(kicks.len(), 2, "{kicks:?}");
        assert_eq!(kicks[0].identity, "alice");
        assert!(kicks[0].reason.contains("revoked"));
        assert_eq!(kicks[1].identity, "bob");
        assert_eq!(kicks[1].reason, "user disabled");
        assert_eq!(kicks[0].message, "RESTART");
        // The revocation ends alice's certificate, the disable every session of bob.
        assert_eq!(
            kicks[0].target,
            KickTarget::CertSerial(serial.as_bytes().to_vec())
        );
        assert_eq!(kicks[1].target, KickTarget::Identity("bob".into()));
        // Not again; and refused from now on.
        assert!(a.recheck(t + Duration::from_millis(750)).is_empty());
        assert!(accepted(&a.authenticate(t, req(7, "alice", Some(alice), None, None))).is_none());
        assert!(accepted(&a.authenticate(t, req(8, "bob", Some(bob), None, None))).is_none());
        // Deleting carol kicks her too.
        w.store.delete_user("carol", wall_now()).expect("del");
        let kicks = a.recheck(t + Duration::from_secs(1));
        assert_eq!(
            kicks
                .iter()
                .map(|k| k.identity.as_str())
                .collect::<Vec<_>>(),
            ["carol"]
        );
    }

    /// Issue 10: one user, two certificates, two sessions (duplicate-cn). Revoking one
    /// certificate kicks that certificate's session only; the other stays until its own
    /// certificate is revoked.
    #[test]
    fn revoking_one_of_two_certificates_kicks_one_session() {
        let mut w = World::new();
        let laptop = w.user("alice", None);
        let phone = w.another_cert("alice");
        let t = w.t;
        let mut a = w.auth(UserAuth::Cert);
        for (peer, c) in [(1u32, &laptop), (2, &phone)] {
            assert!(
                accepted(&a.authenticate(t, req(peer, "alice", Some(c.clone()), None, None)))
                    .is_some()
            );
            a.connected(
                t,
                pid(peer),
                "alice",
                Ipv4Addr::new(10, 8, 0, 10 + peer as u8),
            );
        }
        assert!(a.recheck(t).is_empty());
        let serial = |d: &[u8]| warren_pki::inspect_der(d, "x").expect("der").serial;
        w.store
            .revoke(&serial(&phone), wall_now(), None)
            .expect("revoke");
        let kicks = a.recheck(t + Duration::from_millis(500));
        assert_eq!(kicks.len(), 1, "{kicks:?}");
        assert_eq!(
            kicks[0].target,
            KickTarget::CertSerial(serial(&phone).as_bytes().to_vec())
        );
        assert_eq!(kicks[0].identity, "alice");
        // The laptop's session is not marked: its own revocation still kicks it.
        assert!(a.recheck(t + Duration::from_millis(750)).is_empty());
        w.store
            .revoke(&serial(&laptop), wall_now(), None)
            .expect("revoke");
        let kicks = a.recheck(t + Duration::from_secs(1));
        assert_eq!(kicks.len(), 1, "{kicks:?}");
        assert_eq!(
            kicks[0].target,
            KickTarget::CertSerial(serial(&laptop).as_bytes().to_vec())
        );
    }

    /// Issue 10: through the worker's pool path (`begin` + a check + `finish`), a
    /// certificate-only login never waits for a check, password logins decide once their
    /// check ends, checks still running count against the rate limit (so parallel guesses
    /// cannot overrun it), and a check whose client left records nothing but the limit.
    #[test]
    fn pool_path_decides_like_the_inline_one() {
        let mut w = World::new();
        let alice = w.user("alice", None);
        let bob = w.user("bob", Some("right"));
        let t = w.t;
        let mut a = w.auth(UserAuth::Cert);
        match a.begin(t, 1, req(1, "alice", Some(alice), None, None)) {
            Step::Done(d) => assert!(accepted(&d).is_some()),
            Step::Verify(_) => panic!("a certificate-only login went to the pool"),
        }
        // bob has a password: pool. Five wrong guesses at once fill his burst; the sixth
        // is refused before any of them ended.
        let mut checks = Vec::new();
        for i in 0..5u64 {
            match a.begin(
                t,
                10 + i,
                req(10 + i as u32, "bob", Some(bob.clone()), None, Some("wrong")),
            ) {
                Step::Verify(c) => checks.push((10 + i, c)),
                Step::Done(d) => panic!("guess {i} decided at once: {d:?}"),
            }
        }
        match a.begin(
            t,
            20,
            req(20, "bob", Some(bob.clone()), None, Some("right")),
        ) {
            Step::Done(d) => assert!(accepted(&d).is_none()),
            Step::Verify(_) => panic!("a sixth parallel guess was let through"),
        }
        // The guesses end: wrong; one of them "left" meanwhile (not recorded as a peer).
        for (ticket, c) in checks {
            let v = if c.run() {
                Verified::Match
            } else {
                Verified::NoMatch
            };
            assert_eq!(v, Verified::NoMatch);
            let live = ticket != 14;
            assert!(accepted(&a.finish(t, ticket, v, live)).is_none());
        }
        assert!(a.in_flight.is_empty() && a.in_flight_user.is_empty());
        // Busy: refused without a check and without counting a failure.
        let later = t + Duration::from_secs(13);
        let Step::Verify(_) = a.begin(
            later,
            30,
            req(30, "bob", Some(bob.clone()), None, Some("right")),
        ) else {
            panic!("expected a check");
        };
        assert!(accepted(&a.finish(later, 30, Verified::Busy, true)).is_none());
        let Step::Verify(c) = a.begin(later, 31, req(31, "bob", Some(bob), None, Some("right")))
        else {
            panic!("expected a check");
        };
        assert!(c.run());
        let g = a.finish(later, 31, Verified::Match, true);
        assert_eq!(
            accepted(&g).and_then(|g| g.identity.as_deref()),
            Some("bob")
        );
        assert!(a.peers.contains_key(&pid(31)) && !a.peers.contains_key(&pid(14)));
    }

    /// SIGHUP's reload checks every session at once, also for what changes with time alone
    /// (an expiry), which the periodic recheck only sees at its next full pass (30 s).
    #[test]
    fn reload_checks_expiry_at_once() {
        let mut w = World::new();
        let issued = w
            .pki
            .issue_client("dave", &LeafOptions::default(), wall_now(), &mut w.rng)
            .expect("issue");
        let mut u = NewUser::named("dave");
        let expires = wall_now() + Duration::from_secs(2);
        u.expires_at = Some(expires);
        w.store
            .add_user(&u, Some(&CertRecord::from_issued(&issued)), wall_now())
            .expect("add");
        let cert = der(&issued.cert_pem);
        let t = w.t;
        let mut a = w.auth(UserAuth::Cert);
        assert!(accepted(&a.authenticate(t, req(1, "dave", Some(cert), None, None))).is_some());
        a.connected(t, pid(1), "dave", Ipv4Addr::new(10, 8, 0, 9));
        assert!(a.recheck(t).is_empty());
        // Until dave has expired (bounded: the expiry is 2 s away).
        for _ in 0..60 {
            if wall_now() > expires {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(wall_now() > expires);
        // Nothing was written and the next full pass is 30 s away: not seen yet.
        assert!(a.recheck(t + Duration::from_millis(250)).is_empty());
        let kicks = a.reload(t + Duration::from_millis(500));
        assert_eq!(kicks.len(), 1, "{kicks:?}");
        assert_eq!(kicks[0].identity, "dave");
        assert_eq!(kicks[0].message, "RESTART");
        // Once only.
        assert!(a.reload(t + Duration::from_millis(750)).is_empty());
    }
}
