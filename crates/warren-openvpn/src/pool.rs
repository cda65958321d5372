//! The client address pool (OpenVPN's `ifconfig-pool`, pool.c, as helper.c's `server`
//! macro lays it out); `.1` is always the server's:
//!
//! * `topology subnet`: the network's `.2` up to the address before the broadcast.
//! * `topology net30`: /30 blocks from `.4` to the broadcast minus 4 (a /29: to the
//!   broadcast); the client of a block has its `.2`, its virtual peer the `.1` (block
//!   `.4`: client `.6`, peer `.5`). A /24 holds 62 clients.
//! * `topology p2p`: one address per client from `.4` to the broadcast minus 4, its peer
//!   the server's `.1`.
//!
//! A pool address is also known by its index (the first client address is 0), which names
//! the client's IPv6 address too (the IPv6 pool's base plus the same index, as OpenVPN
//! pairs them).
//!
//! One owner decides which client gets which address. With an authenticator that keeps a
//! lease table (warren-server's `StoreAuth`, over the state's database), that is the
//! authenticator: its [`AuthGrant::fixed_ip`](crate::AuthGrant::fixed_ip) names the
//! address, and the engine only takes it and records who holds it ([`Held`]). Otherwise the
//! engine gives the lowest address nobody holds. Both use [`Pool`] for what the pool is.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// How the tunnel's addresses are laid out (`topology`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    #[default]
    Subnet,
    Net30,
    P2p,
}

impl Topology {
    /// The name OpenVPN pushes (`topology NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Topology::Subnet => "subnet",
            Topology::Net30 => "net30",
            Topology::P2p => "p2p",
        }
    }
}

/// The addresses of a VPN network that clients may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// The first block's first address.
    base: u32,
    /// How many clients the pool holds.
    count: u32,
    topology: Topology,
    /// The server's own address (`.1`).
    server: u32,
}

impl Pool {
    /// The `topology subnet` pool of `network`/`netmask` (empty when the network has no
    /// room for a client).
    pub fn new(network: Ipv4Addr, netmask: Ipv4Addr) -> Pool {
        Pool::with_topology(network, netmask, Topology::Subnet)
    }

    /// The pool of `network`/`netmask` in `topology` (helper.c's `server` macro).
    pub fn with_topology(network: Ipv4Addr, netmask: Ipv4Addr, topology: Topology) -> Pool {
        let net = u32::from(network) & u32::from(netmask);
        let broadcast = net | !u32::from(netmask);
        let server = net.saturating_add(1);
        let (base, last) = match topology {
            Topology::Subnet => (net.saturating_add(2), broadcast.saturating_sub(1)),
            // A /29 has no room for the reserve at the end.
            Topology::Net30 | Topology::P2p => {
                let reserve = if broadcast - net == 7 { 0 } else { 4 };
                (net.saturating_add(4), broadcast.saturating_sub(reserve))
            }
        };
        let span = if last >= base { last - base + 1 } else { 0 };
        let count = match topology {
            Topology::Net30 => span / 4,
            Topology::Subnet | Topology::P2p => span,
        };
        Pool {
            base,
            count,
            topology,
            server,
        }
    }

    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// How many clients the pool holds.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The index of `ip`, when it is a pool address.
    pub fn index_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip).checked_sub(self.base)?;
        let index = match self.topology {
            Topology::Net30 => (off % 4 == 2).then_some(off / 4)?,
            Topology::Subnet | Topology::P2p => off,
        };
        (index < self.count).then_some(index)
    }

    /// The address with this index, when the pool has one.
    pub fn address(&self, index: u32) -> Option<Ipv4Addr> {
        if index >= self.count {
            return None;
        }
        Some(Ipv4Addr::from(match self.topology {
            Topology::Net30 => self.base + index * 4 + 2,
            Topology::Subnet | Topology::P2p => self.base + index,
        }))
    }

    /// The second address the client's `ifconfig` names for pool address `ip`: in net30
    /// its /30's virtual peer (`ip - 1`), in p2p the server's address; in subnet `None`
    /// (the netmask goes there).
    pub fn peer_of(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        match self.topology {
            Topology::Subnet => None,
            Topology::Net30 => Some(Ipv4Addr::from(u32::from(ip).wrapping_sub(1))),
            Topology::P2p => Some(Ipv4Addr::from(self.server)),
        }
    }

    /// Whether `ip` is a pool address.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.index_of(ip).is_some()
    }

    /// Every pool address, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        let pool = *self;
        (0..self.count).filter_map(move |i| pool.address(i))
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (
            self.address(0),
            self.count.checked_sub(1).and_then(|i| self.address(i)),
        ) {
            (Some(a), Some(b)) => write!(f, "{a}-{b}"),
            _ => write!(f, "(empty)"),
        }
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

    /// helper.c's `server 10.8.0.0 255.255.255.0` in net30 and p2p: `ifconfig-pool
    /// 10.8.0.4 10.8.0.251`; the stock 2.6 server gave its first clients 10.8.0.6 (peer
    /// .5) and 10.8.0.10 in net30, 10.8.0.4 (peer .1) in p2p.
    #[test]
    fn net30_and_p2p_pools() {
        let ip = |d: u8| Ipv4Addr::new(10, 8, 0, d);
        let mask24 = Ipv4Addr::new(255, 255, 255, 0);
        let net30 = Pool::with_topology(ip(0), mask24, Topology::Net30);
        assert_eq!(net30.len(), 62, "pool / 4");
        assert_eq!(
            (net30.address(0), net30.address(1), net30.address(61)),
            (Some(ip(6)), Some(ip(10)), Some(ip(250)))
        );
        assert_eq!(net30.address(62), None);
        assert_eq!(net30.peer_of(ip(6)), Some(ip(5)));
        assert_eq!(
            (net30.index_of(ip(10)), net30.index_of(ip(250))),
            (Some(1), Some(61))
        );
        for outside in [ip(1), ip(2), ip(5), ip(7), ip(9), ip(254)] {
            assert!(!net30.contains(outside), "{outside}");
        }
        assert_eq!(net30.to_string(), "10.8.0.6-10.8.0.250");
        let mut held = Held::new(net30);
        assert_eq!(held.take_lowest(), Some(0));
        assert_eq!(held.take(ip(14)), Some(2));
        assert_eq!(held.take_lowest(), Some(1));
        assert_eq!(held.take(ip(13)), None, "a peer address");

        let p2p = Pool::with_topology(ip(0), mask24, Topology::P2p);
        assert_eq!(p2p.len(), 248);
        assert_eq!(
            (p2p.address(0), p2p.address(247)),
            (Some(ip(4)), Some(ip(251)))
        );
        assert_eq!(p2p.peer_of(ip(9)), Some(ip(1)));
        assert!(!p2p.contains(ip(2)) && !p2p.contains(ip(252)));
        assert_eq!(Pool::new(ip(0), mask24).peer_of(ip(2)), None);

        // A /29 (the smallest `server` net): one /30 block, no reserve at the end.
        let mask29 = Ipv4Addr::new(255, 255, 255, 248);
        let small = Pool::with_topology(ip(8), mask29, Topology::Net30);
        assert_eq!((small.len(), small.address(0)), (1, Some(ip(14))));
        assert_eq!(Pool::with_topology(ip(8), mask29, Topology::P2p).len(), 4);
    }
}
