//! Failed-login throttling, per source address and user, and per source address.
//!
//! Sans-IO: the caller passes `now` (a monotonic [`Instant`]) to every call. Each key has a
//! GCRA bucket that only *failures* fill: `burst` failures may come back to back, then one
//! more per `interval`. While a bucket is full, [`AuthRateLimiter::check`] says
//! [`RateDecision::Limited`] and the caller answers `AUTH_FAILED` **without checking the
//! password**, so a guesser learns nothing and spends nothing of ours.
//!
//! Two tables, both keyed by the source address, so failures from one address never refuse a
//! login from another:
//!
//! * per (address, user): guessing one account from one address. Emptied by a successful
//!   login of that user from that address.
//! * per address: spraying many names (or one common password over many accounts) from one
//!   address. Not emptied by a success (one valid account must not unlock guessing others).
//!   A user who logged in successfully from that address within [`RateLimitConfig::trusted_for`]
//!   is exempt from it (still bound by its own per-(address, user) bucket), so a guesser
//!   behind a shared NAT does not lock out colleagues who use it every day.
//!
//! There is deliberately no per-user table across addresses: it would let anyone who knows a
//! user name lock that user out from everywhere. Guessing one account from many addresses is
//! still bounded per address (and by argon2id's cost).
//!
//! Memory is bounded: at most `max_tracked` keys per table; when full, idle buckets are
//! dropped first, then the least-filled (the oldest trust).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use warren_core::Instant;

/// Limits. `interval` is the sustained rate (one failure per interval); `burst` how many
/// failures may come at once before that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Failures of one user from one address.
    pub per_user_burst: u32,
    pub per_user_interval: Duration,
    /// Failures from one address, whatever the user name.
    pub per_address_burst: u32,
    pub per_address_interval: Duration,
    /// How long a successful login exempts that user, from that address, from the
    /// per-address limit.
    pub trusted_for: Duration,
    /// Maximum number of keys tracked per table.
    pub max_tracked: usize,
}

impl Default for RateLimitConfig {
    /// Per (address, user) 5 failures, then one per 12 s; per address 20, then one per 3 s;
    /// a success exempts that (address, user) from the address limit for 7 days.
    fn default() -> Self {
        RateLimitConfig {
            per_user_burst: 5,
            per_user_interval: Duration::from_secs(12),
            per_address_burst: 20,
            per_address_interval: Duration::from_secs(3),
            trusted_for: Duration::from_secs(7 * 24 * 3600),
            max_tracked: 65_536,
        }
    }
}

impl std::fmt::Display for RateLimitConfig {
    /// The policy in one line, for the server's startup log and `warren user show`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "per user and source address {} failed logins, then 1 per {} s; per source address \
             {} failures, then 1 per {} s (a user who logged in from that address in the last {} \
             h is exempt); never across addresses",
            self.per_user_burst,
            self.per_user_interval.as_secs(),
            self.per_address_burst,
            self.per_address_interval.as_secs(),
            self.trusted_for.as_secs() / 3600
        )
    }
}

/// Which limit refused an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitedBy {
    /// Too many failures from this address (any user names).
    Address,
    /// Too many failures of this user from this address.
    UserAtAddress,
}

/// The answer of [`AuthRateLimiter::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Go on and check the credentials.
    Allowed,
    /// Refuse now; a new attempt can succeed after `retry_after`.
    Limited {
        by: LimitedBy,
        retry_after: Duration,
    },
}

impl RateDecision {
    pub fn is_allowed(self) -> bool {
        self == RateDecision::Allowed
    }
}

/// One GCRA table.
#[derive(Debug)]
struct Table<K> {
    /// Theoretical arrival time per key: the bucket is empty once `now >= tat`.
    tat: HashMap<K, Instant>,
    burst: u32,
    interval: Duration,
    max: usize,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new(burst: u32, interval: Duration, max: usize) -> Self {
        Table {
            tat: HashMap::new(),
            burst: burst.max(1),
            interval,
            max: max.max(1),
        }
    }

    fn window(&self) -> Duration {
        self.interval.saturating_mul(self.burst)
    }

    /// `Some(retry_after)` when the bucket of `key` is full at `now`, or would be after
    /// `pending` more failures (checks still running count as failures until they end).
    fn limited<Q>(&self, now: Instant, key: &Q, pending: u32) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let recorded = self.tat.get(key).copied();
        if recorded.is_none() && pending == 0 {
            return None;
        }
        let base = recorded.unwrap_or(now).max(now);
        let tat = (base + self.interval.saturating_mul(pending)).min(now + self.window());
        // GCRA: one more failure would push tat to tat + interval; that must stay within
        // `burst * interval` of now. So the bucket is full when tat - now > window - interval.
        let ahead = tat.saturating_duration_since(now);
        let room = self.window().saturating_sub(self.interval);
        (ahead > room).then(|| ahead - room)
    }

    fn fail(&mut self, now: Instant, key: &K) {
        if !self.tat.contains_key(key) && self.tat.len() >= self.max {
            self.evict(now);
        }
        let tat = self.tat.get(key).copied().unwrap_or(now).max(now);
        // Never let a key run further ahead than one full window: a flood of failures while
        // limited does not extend the wait beyond one interval.
        let cap = now + self.window();
        self.tat.insert(key.clone(), (tat + self.interval).min(cap));
    }

    fn forget<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.tat.remove(key);
    }

    fn evict(&mut self, now: Instant) {
        self.tat.retain(|_, tat| *tat > now);
        if self.tat.len() >= self.max {
            // Still full of active buckets: drop the one that empties soonest.
            if let Some(k) = self
                .tat
                .iter()
                .min_by_key(|(_, tat)| **tat)
                .map(|(k, _)| k.clone())
            {
                self.tat.remove(&k);
            }
        }
    }

    fn prune(&mut self, now: Instant) {
        self.tat.retain(|_, tat| *tat > now);
    }
}

/// Failed-login throttling (see the module docs).
#[derive(Debug)]
pub struct AuthRateLimiter {
    by_addr: Table<IpAddr>,
    by_user_addr: Table<(IpAddr, String)>,
    /// (address, user) pairs that logged in successfully, until when they are exempt from the
    /// per-address limit.
    trusted: HashMap<(IpAddr, String), Instant>,
    cfg: RateLimitConfig,
}

impl AuthRateLimiter {
    pub fn new(cfg: RateLimitConfig) -> Self {
        AuthRateLimiter {
            by_addr: Table::new(
                cfg.per_address_burst,
                cfg.per_address_interval,
                cfg.max_tracked,
            ),
            by_user_addr: Table::new(cfg.per_user_burst, cfg.per_user_interval, cfg.max_tracked),
            trusted: HashMap::new(),
            cfg,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &RateLimitConfig {
        &self.cfg
    }

    /// May a login for `user` from `addr` be checked now? (`user` is `None` for certificate-only
    /// attempts.) Does not change any state.
    pub fn check(&self, now: Instant, addr: IpAddr, user: Option<&str>) -> RateDecision {
        self.check_pending(now, addr, user, (0, 0))
    }

    /// [`AuthRateLimiter::check`] for a server that runs several password checks at once:
    /// `pending` = (checks from `addr`, checks of `user` from `addr`) started but not yet
    /// recorded, each counted as a failure, so parallel guesses cannot overrun the limits.
    pub fn check_pending(
        &self,
        now: Instant,
        addr: IpAddr,
        user: Option<&str>,
        pending: (u32, u32),
    ) -> RateDecision {
        let key = user.map(|u| (addr, u.to_owned()));
        if let Some(k) = &key
            && let Some(retry_after) = self.by_user_addr.limited(now, k, pending.1)
        {
            return RateDecision::Limited {
                by: LimitedBy::UserAtAddress,
                retry_after,
            };
        }
        let trusted = key
            .as_ref()
            .and_then(|k| self.trusted.get(k))
            .is_some_and(|until| *until > now);
        if !trusted && let Some(retry_after) = self.by_addr.limited(now, &addr, pending.0) {
            return RateDecision::Limited {
                by: LimitedBy::Address,
                retry_after,
            };
        }
        RateDecision::Allowed
    }

    /// Records a failed login (wrong password, unknown user, ...).
    pub fn record_failure(&mut self, now: Instant, addr: IpAddr, user: Option<&str>) {
        self.by_addr.fail(now, &addr);
        if let Some(u) = user {
            self.by_user_addr.fail(now, &(addr, u.to_owned()));
        }
    }

    /// Records a successful login: the user's failures from that address are forgotten, and
    /// the pair is exempt from the per-address limit for [`RateLimitConfig::trusted_for`].
    pub fn record_success(&mut self, now: Instant, addr: IpAddr, user: Option<&str>) {
        let Some(u) = user else { return };
        let key = (addr, u.to_owned());
        self.by_user_addr.forget(&key);
        if !self.trusted.contains_key(&key) && self.trusted.len() >= self.cfg.max_tracked.max(1) {
            self.trusted.retain(|_, until| *until > now);
            if self.trusted.len() >= self.cfg.max_tracked.max(1)
                && let Some(k) = self
                    .trusted
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(k, _)| k.clone())
            {
                self.trusted.remove(&k);
            }
        }
        self.trusted.insert(key, now + self.cfg.trusted_for);
    }

    /// Drops buckets that have emptied and expired trust (call now and then, e.g. once a
    /// minute).
    pub fn prune(&mut self, now: Instant) {
        self.by_addr.prune(now);
        self.by_user_addr.prune(now);
        self.trusted.retain(|_, until| *until > now);
    }

    /// Number of addresses and (address, user) pairs tracked (for metrics and tests).
    pub fn tracked(&self) -> (usize, usize) {
        (self.by_addr.tat.len(), self.by_user_addr.tat.len())
    }
}

impl Default for AuthRateLimiter {
    fn default() -> Self {
        AuthRateLimiter::new(RateLimitConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    #[test]
    fn user_burst_then_one_per_interval() {
        let mut rl = AuthRateLimiter::default();
        let t0 = Instant::from_secs(1000);
        for i in 0..5 {
            assert!(
                rl.check(t0, ip(1), Some("alice")).is_allowed(),
                "attempt {i}"
            );
            rl.record_failure(t0, ip(1), Some("alice"));
        }
        match rl.check(t0, ip(1), Some("alice")) {
            RateDecision::Limited {
                by: LimitedBy::UserAtAddress,
                retry_after,
            } => assert!(retry_after <= Duration::from_secs(12), "{retry_after:?}"),
            other => panic!("{other:?}"),
        }
        // Another user from the same address still gets in.
        assert!(rl.check(t0, ip(1), Some("bob")).is_allowed());
        // One interval later, one more attempt.
        let t1 = t0 + Duration::from_secs(12);
        assert!(rl.check(t1, ip(1), Some("alice")).is_allowed());
        rl.record_failure(t1, ip(1), Some("alice"));
        assert!(!rl.check(t1, ip(1), Some("alice")).is_allowed());
        // A success forgets the user's failures from that address.
        rl.record_success(t1, ip(1), Some("alice"));
        assert!(rl.check(t1, ip(1), Some("alice")).is_allowed());
    }

    /// The old limiter refused alice from every address once one address had failed 5 times
    /// for her: a stranger could lock out a real user. Now a clean address is never refused.
    #[test]
    fn failures_elsewhere_never_refuse_a_clean_address() {
        let mut rl = AuthRateLimiter::default();
        let t0 = Instant::from_secs(1000);
        // Guessing alice from many addresses, and spraying names from one.
        for n in 1..=50 {
            for _ in 0..10 {
                rl.record_failure(t0, ip(n), Some("alice"));
            }
        }
        for i in 0..100 {
            rl.record_failure(t0, ip(60), Some(&format!("nobody{i}")));
        }
        assert!(!rl.check(t0, ip(1), Some("alice")).is_allowed());
        assert_eq!(
            rl.check(t0, ip(60), Some("bob")),
            RateDecision::Limited {
                by: LimitedBy::Address,
                retry_after: Duration::from_secs(3)
            }
        );
        // alice and bob from a clean address: allowed.
        for u in ["alice", "bob", "nobody1"] {
            assert!(rl.check(t0, ip(200), Some(u)).is_allowed(), "{u}");
        }
        assert!(rl.check(t0, ip(200), None).is_allowed());
    }

    /// A user who logged in from an address before is not locked out by a sprayer behind the
    /// same address (a shared NAT), but stays bound by its own per-(address, user) limit.
    #[test]
    fn a_known_user_behind_a_sprayed_address_gets_in() {
        let mut rl = AuthRateLimiter::default();
        let t0 = Instant::from_secs(1000);
        rl.record_success(t0, ip(7), Some("carol"));
        for i in 0..40 {
            rl.record_failure(t0, ip(7), Some(&format!("guess{i}")));
        }
        assert!(!rl.check(t0, ip(7), Some("dave")).is_allowed());
        assert!(rl.check(t0, ip(7), Some("carol")).is_allowed());
        // Guessing carol from there is still limited by her own bucket.
        for _ in 0..5 {
            rl.record_failure(t0, ip(7), Some("carol"));
        }
        assert_eq!(
            rl.check(t0, ip(7), Some("carol")),
            RateDecision::Limited {
                by: LimitedBy::UserAtAddress,
                retry_after: Duration::from_secs(12)
            }
        );
        // The trust is per address and expires.
        assert!(!rl.check(t0, ip(7), Some("dave")).is_allowed());
        let later = t0 + RateLimitConfig::default().trusted_for + Duration::from_secs(1);
        rl.record_success(later, ip(7), Some("carol"));
        rl.prune(later + RateLimitConfig::default().trusted_for + Duration::from_secs(1));
        assert_eq!(rl.trusted.len(), 0);
    }

    #[test]
    fn address_limit_and_cap() {
        let cfg = RateLimitConfig {
            per_address_burst: 3,
            per_address_interval: Duration::from_secs(10),
            per_user_burst: 100,
            per_user_interval: Duration::from_secs(1),
            trusted_for: Duration::from_secs(60),
            max_tracked: 4,
        };
        let mut rl = AuthRateLimiter::new(cfg);
        let t0 = Instant::from_secs(50);
        for i in 0..3 {
            rl.record_failure(t0, ip(9), Some(&format!("u{i}")));
        }
        assert_eq!(
            rl.check(t0, ip(9), Some("new")),
            RateDecision::Limited {
                by: LimitedBy::Address,
                retry_after: Duration::from_secs(10)
            }
        );
        assert!(
            !rl.check(t0 + Duration::from_secs(9), ip(9), None)
                .is_allowed()
        );
        assert!(
            rl.check(t0 + Duration::from_secs(10), ip(9), None)
                .is_allowed()
        );
        // Hammering while limited does not extend the wait past one interval.
        for _ in 0..1000 {
            rl.record_failure(t0, ip(9), None);
        }
        assert!(
            rl.check(t0 + Duration::from_secs(10), ip(9), None)
                .is_allowed()
        );
        // Bounded memory.
        for n in 0..50 {
            rl.record_failure(t0, ip(n), Some("x"));
            rl.record_success(t0, ip(n), Some(&format!("ok{n}")));
        }
        assert!(rl.tracked().0 <= 4 && rl.tracked().1 <= 4);
        assert!(rl.trusted.len() <= 4);
        rl.prune(t0 + Duration::from_secs(1000));
        assert_eq!(rl.tracked(), (0, 0));
        assert!(rl.trusted.is_empty());
    }

    #[test]
    fn policy_line() {
        let line = RateLimitConfig::default().to_string();
        assert!(line.contains("5 failed logins"), "{line}");
        assert!(line.contains("never across addresses"), "{line}");
    }

    /// Checks still running count as failures: five parallel guesses of one user fill the
    /// per-user burst, and one recorded failure leaves room for four pending.
    #[test]
    fn pending_checks_count_as_failures() {
        let mut rl = AuthRateLimiter::default();
        let t0 = Instant::from_secs(1000);
        let a = Some("alice");
        assert!(rl.check_pending(t0, ip(1), a, (4, 4)).is_allowed());
        assert!(matches!(
            rl.check_pending(t0, ip(1), a, (5, 5)),
            RateDecision::Limited {
                by: LimitedBy::UserAtAddress,
                ..
            }
        ));
        rl.record_failure(t0, ip(1), a);
        assert!(rl.check_pending(t0, ip(1), a, (3, 3)).is_allowed());
        assert!(!rl.check_pending(t0, ip(1), a, (4, 4)).is_allowed());
        // The address: 20 in flight over many names.
        assert!(rl.check_pending(t0, ip(2), None, (19, 0)).is_allowed());
        assert!(matches!(
            rl.check_pending(t0, ip(2), None, (20, 0)),
            RateDecision::Limited {
                by: LimitedBy::Address,
                ..
            }
        ));
        // Another address is untouched.
        assert!(rl.check_pending(t0, ip(3), a, (0, 0)).is_allowed());
    }
}
