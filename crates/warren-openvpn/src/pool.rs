//! The client address pool (OpenVPN's `ifconfig-pool`, pool.c) in `topology subnet`: the
//! network's `.2` up to the address before the broadcast; `.1` is the server's. A pool
//! address is also known by its index (`.2` is 0), which names the client's IPv6 address
//! too (the IPv6 pool's base plus the same index, as OpenVPN pairs them).
//!
//! One owner decides which client gets which address. With an authenticator that keeps a
//! lease table (warren-server's `StoreAuth`, over the state's database), that is the
//! authenticator: its [`AuthGrant::fixed_ip`](crate::AuthGrant::fixed_ip) names the
//! address, and the engine only takes it and records who holds it ([`Held`]). Otherwise the
//! engine gives the lowest address nobody holds. Both use [`Pool`] for what the pool is.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The addresses of a VPN network that clients may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    first: u32,
    last: u32,
}

impl Pool {
    /// The pool of `network`/`netmask` (empty when the network has no room for a client).
    pub fn new(network: Ipv4Addr, netmask: Ipv4Addr) -> Pool {
        let net = u32::from(network) & u32::from(netmask);
        let broadcast = net | !u32::from(netmask);
        Pool {
            first: net.saturating_add(2),
            last: broadcast.saturating_sub(1),
        }
    }

    /// The index of `ip`, when it is a pool address.
    pub fn index_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let v = u32::from(ip);
        (self.first..=self.last)
            .contains(&v)
            .then(|| v - self.first)
    }

    /// The address with this index, when the pool has one.
    pub fn address(&self, index: u32) -> Option<Ipv4Addr> {
        let v = self.first.checked_add(index)?;
        (v <= self.last).then(|| Ipv4Addr::from(v))
    }

    /// Whether `ip` is a pool address.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.index_of(ip).is_some()
    }

    /// Every pool address, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        (self.first..=self.last).map(Ipv4Addr::from)
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}",
            Ipv4Addr::from(self.first),
            Ipv4Addr::from(self.last)
        )
    }
}

/// Which pool addresses are held, by index: the engine's record of who holds what.
#[derive(Debug, Clone)]
pub struct Held {
    pool: Pool,
    held: BTreeSet<u32>,
}

impl Held {
    pub fn new(pool: Pool) -> Held {
        Held {
            pool,
            held: BTreeSet::new(),
        }
    }

    /// Takes `ip` for a client when it is a pool address nobody holds; returns its index.
    pub fn take(&mut self, ip: Ipv4Addr) -> Option<u32> {
        let index = self.pool.index_of(ip)?;
        self.held.insert(index).then_some(index)
    }

    /// Takes the lowest address nobody holds; returns its index.
    pub fn take_lowest(&mut self) -> Option<u32> {
        let mut index = 0;
        for &used in &self.held {
            if used != index {
                break;
            }
            index += 1;
        }
        self.pool.address(index)?;
        self.held.insert(index);
        Some(index)
    }

    /// Gives `ip` back.
    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(index) = self.pool.index_of(ip) {
            self.held.remove(&index);
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_indices_and_lowest_free() {
        let ip = |d: u8| Ipv4Addr::new(10, 8, 0, d);
        let pool = Pool::new(ip(0), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(
            (pool.index_of(ip(2)), pool.index_of(ip(254))),
            (Some(0), Some(252))
        );
        for outside in [ip(0), ip(1), ip(255), Ipv4Addr::new(10, 8, 1, 2)] {
            assert!(!pool.contains(outside), "{outside}");
        }
        assert_eq!((pool.address(3), pool.address(253)), (Some(ip(5)), None));
        assert_eq!(pool.iter().count(), 253);

        let mut held = Held::new(pool);
        assert_eq!(held.take(ip(3)), Some(1));
        assert_eq!(held.take(ip(3)), None, "held already");
        assert_eq!(held.take(ip(1)), None, "the server's");
        assert_eq!(held.take_lowest(), Some(0));
        assert_eq!(held.take_lowest(), Some(2));
        held.release(ip(3));
        assert_eq!(held.take_lowest(), Some(1));

        // A /30 has one client address; a /31 none.
        let mask = |p: u32| Ipv4Addr::from(u32::MAX << (32 - p));
        let mut small = Held::new(Pool::new(ip(4), mask(30)));
        assert_eq!(
            small.take_lowest().and_then(|i| small.pool().address(i)),
            Some(ip(6))
        );
        assert_eq!(small.take_lowest(), None);
        assert_eq!(Pool::new(ip(4), mask(31)).iter().count(), 0);
    }
}
