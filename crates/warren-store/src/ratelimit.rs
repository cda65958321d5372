//! Failed-login throttling, per source address and per user name.
//!
//! Sans-IO: the caller passes `now` (a monotonic [`Instant`]) to every call. Each key has a
//! GCRA bucket that only *failures* fill: `burst` failures may come back to back, then one
//! more per `interval`. While a bucket is full, [`AuthRateLimiter::check`] says
//! [`RateDecision::Limited`] and the caller answers `AUTH_FAILED` **without checking the
//! password**, so a guesser learns nothing and spends nothing of ours. The user bucket is
//! emptied by a successful login of that user; the address bucket is not (one valid account
//! must not unlock guessing others from the same address).
//!
//! The per-address limit defaults to more failures than the per-user one, so a user behind a
//! shared NAT who mistypes does not lock out colleagues, while guessing one account from many
//! addresses is still slow. Memory is bounded: at most `max_tracked` keys per table; when full,
//! idle buckets are dropped first, then the least-filled.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use warren_core::Instant;

/// Limits. `interval` is the sustained rate (one failure per interval); `burst` how many
/// failures may come at once before that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per_address_burst: u32,
    pub per_address_interval: Duration,
    pub per_user_burst: u32,
    pub per_user_interval: Duration,
    /// Maximum number of addresses, and of user names, tracked at once.
    pub max_tracked: usize,
}

impl Default for RateLimitConfig {
    /// 5 failures per user, then one per 12 s (5 a minute); 20 per address, then one per 3 s.
    fn default() -> Self {
        RateLimitConfig {
            per_address_burst: 20,
            per_address_interval: Duration::from_secs(3),
            per_user_burst: 5,
            per_user_interval: Duration::from_secs(12),
            max_tracked: 65_536,
        }
    }
}

/// Which limit refused an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitedBy {
    Address,
    User,
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

    /// `Some(retry_after)` when the bucket of `key` is full at `now`.
    fn limited<Q>(&self, now: Instant, key: &Q) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let tat = *self.tat.get(key)?;
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
    by_user: Table<String>,
}

impl AuthRateLimiter {
    pub fn new(cfg: RateLimitConfig) -> Self {
        AuthRateLimiter {
            by_addr: Table::new(
                cfg.per_address_burst,
                cfg.per_address_interval,
                cfg.max_tracked,
            ),
            by_user: Table::new(cfg.per_user_burst, cfg.per_user_interval, cfg.max_tracked),
        }
    }

    /// May a login for `user` from `addr` be checked now? (`user` is `None` for certificate-only
    /// attempts.) Does not change any state.
    pub fn check(&self, now: Instant, addr: IpAddr, user: Option<&str>) -> RateDecision {
        if let Some(retry_after) = self.by_addr.limited(now, &addr) {
            return RateDecision::Limited {
                by: LimitedBy::Address,
                retry_after,
            };
        }
        if let Some(u) = user
            && let Some(retry_after) = self.by_user.limited(now, u)
        {
            return RateDecision::Limited {
                by: LimitedBy::User,
                retry_after,
            };
        }
        RateDecision::Allowed
    }

    /// Records a failed login (wrong password, unknown user, ...).
    pub fn record_failure(&mut self, now: Instant, addr: IpAddr, user: Option<&str>) {
        self.by_addr.fail(now, &addr);
        if let Some(u) = user {
            self.by_user.fail(now, &u.to_owned());
        }
    }

    /// Records a successful login: the user's failures are forgotten.
    pub fn record_success(&mut self, _now: Instant, _addr: IpAddr, user: Option<&str>) {
        if let Some(u) = user {
            self.by_user.forget(u);
        }
    }

    /// Drops buckets that have emptied (call now and then, e.g. once a minute).
    pub fn prune(&mut self, now: Instant) {
        self.by_addr.prune(now);
        self.by_user.prune(now);
    }

    /// Number of addresses and users tracked (for metrics and tests).
    pub fn tracked(&self) -> (usize, usize) {
        (self.by_addr.tat.len(), self.by_user.tat.len())
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
                by: LimitedBy::User,
                retry_after,
            } => assert!(retry_after <= Duration::from_secs(12), "{retry_after:?}"),
            other => panic!("{other:?}"),
        }
        // From another address too: the user is limited, not the address.
        assert!(!rl.check(t0, ip(2), Some("alice")).is_allowed());
        // Another user from the same address still gets in.
        assert!(rl.check(t0, ip(1), Some("bob")).is_allowed());
        // One interval later, one more attempt.
        let t1 = t0 + Duration::from_secs(12);
        assert!(rl.check(t1, ip(1), Some("alice")).is_allowed());
        rl.record_failure(t1, ip(1), Some("alice"));
        assert!(!rl.check(t1, ip(1), Some("alice")).is_allowed());
        // A success forgets the user's failures.
        rl.record_success(t1, ip(1), Some("alice"));
        assert!(rl.check(t1, ip(1), Some("alice")).is_allowed());
    }

    #[test]
    fn address_limit_and_cap() {
        let cfg = RateLimitConfig {
            per_address_burst: 3,
            per_address_interval: Duration::from_secs(10),
            per_user_burst: 100,
            per_user_interval: Duration::from_secs(1),
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
            rl.record_failure(t0, ip(n), None);
        }
        assert!(rl.tracked().0 <= 4);
        rl.prune(t0 + Duration::from_secs(1000));
        assert_eq!(rl.tracked(), (0, 0));
    }
}
