//! The route values warren-net takes, its errors, and running the system commands of the
//! DNS backends (`resolvectl`, `resolvconf`).
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use thiserror::Error;
use tracing::debug;

/// Errors of the OS side, each saying what to do where there is something to do.
#[derive(Debug, Error)]
pub enum NetError {
    #[error("`{command}`: permission denied: changing routes needs CAP_NET_ADMIN (run as root)")]
    NeedsCapNetAdmin { command: String },
    /// A netlink request the kernel refused; `op` is the `ip` command it stands for.
    #[error(
        "`{op}` (over netlink) failed: {source}{}",
        .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    Kernel {
        op: String,
        source: io::Error,
        detail: Option<String>,
    },
    #[error("there is no network device named {dev}")]
    NoDevice { dev: String },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("running `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("route {route} already exists (added by someone else?); not touching it")]
    RouteExists { route: String },
    #[error("address {address} already exists (added by someone else?); not touching it")]
    AddressExists { address: String },
    #[error("route {route}: the gateway is not of the destination's address family")]
    MixedFamilies { route: String },
    #[error(
        "IPv6 is disabled on {dev}: enable it (`sysctl net.ipv6.conf.all.disable_ipv6=0` and \
         `net.ipv6.conf.default.disable_ipv6=0`), or leave IPv6 out of the tunnel"
    )]
    Ipv6Disabled { dev: String },
    #[error("cannot parse the output of `{command}`: {output:?}")]
    Parse { command: String, output: String },
    #[error("netmask {0} is not contiguous")]
    BadNetmask(Ipv4Addr),
    #[error("{path}: {source}")]
    ResolvConf { path: PathBuf, source: io::Error },
    #[error(
        "{path} holds DNS settings written by an earlier warren client that ended without \
         restoring them, and no journal of the file it replaced is left in {journal_dir}{hint}; \
         put your own resolver configuration back into {path} and start again",
        path = path.display(),
        journal_dir = journal_dir.display()
    )]
    ResolvConfOrphaned {
        path: PathBuf,
        journal_dir: PathBuf,
        hint: String,
    },
}

/// An IPv4 network, `addr/prefix`, with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// The network containing `addr` with `prefix` bits (clamped to 32); host bits are
    /// cleared, as the kernel requires for a route destination.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
        let prefix = prefix.min(32);
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    pub fn host(addr: Ipv4Addr) -> Ipv4Net {
        Ipv4Net::new(addr, 32)
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        Ipv4Net::new(ip, self.prefix).addr == self.addr
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv6 network, `addr/prefix`, with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Net {
    addr: Ipv6Addr,
    prefix: u8,
}

impl Ipv6Net {
    /// The network containing `addr` with `prefix` bits (clamped to 128); host bits are
    /// cleared.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Ipv6Net {
        let prefix = prefix.min(128);
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(prefix))
        };
        Ipv6Net {
            addr: Ipv6Addr::from(u128::from(addr) & mask),
            prefix,
        }
    }

    pub fn host(addr: Ipv6Addr) -> Ipv6Net {
        Ipv6Net::new(addr, 128)
    }

    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        Ipv6Net::new(ip, self.prefix).addr == self.addr
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The two address families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `-4` or `-6`, as `ip` takes it.
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
}

/// An IPv4 or IPv6 network, with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpNet {
    V4(Ipv4Net),
    V6(Ipv6Net),
}

impl IpNet {
    /// The network containing `addr` with `prefix` bits (clamped to the family's width).
    pub fn new(addr: IpAddr, prefix: u8) -> IpNet {
        match addr {
            IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, prefix)),
            IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, prefix)),
        }
    }

    /// `addr/32` or `addr/128`.
    pub fn host(addr: IpAddr) -> IpNet {
        IpNet::new(addr, 128)
    }

    pub fn addr(&self) -> IpAddr {
        match self {
            IpNet::V4(n) => IpAddr::V4(n.addr()),
            IpNet::V6(n) => IpAddr::V6(n.addr()),
        }
    }

    pub fn prefix(&self) -> u8 {
        match self {
            IpNet::V4(n) => n.prefix(),
            IpNet::V6(n) => n.prefix(),
        }
    }

    pub fn family(&self) -> Family {
        match self {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// Whether `ip` is in this network (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (IpNet::V4(n), IpAddr::V4(a)) => n.contains(a),
            (IpNet::V6(n), IpAddr::V6(a)) => n.contains(a),
            _ => false,
        }
    }
}

impl From<Ipv4Net> for IpNet {
    fn from(n: Ipv4Net) -> IpNet {
        IpNet::V4(n)
    }
}

impl From<Ipv6Net> for IpNet {
    fn from(n: Ipv6Net) -> IpNet {
        IpNet::V6(n)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpNet::V4(n) => n.fmt(f),
            IpNet::V6(n) => n.fmt(f),
        }
    }
}

/// A contiguous netmask's prefix length (`255.255.255.0` → 24).
pub fn prefix_len(mask: Ipv4Addr) -> Result<u8, NetError> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(NetError::BadNetmask(mask));
    }
    Ok(u8::try_from(ones).unwrap_or(32))
}

/// One route in the main table, IPv4 or IPv6, as `ip -4|-6 route add DST [via GW] [dev DEV]
/// [metric M]` would add it. `via` is of `dst`'s family (the kernel refuses anything else).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    pub metric: Option<u32>,
}

impl RouteSpec {
    pub fn family(&self) -> Family {
        self.dst.family()
    }

    /// The arguments after `ip -4|-6 route add|del`.
    pub(crate) fn args(&self) -> Vec<String> {
        let mut a = vec![self.dst.to_string()];
        if let Some(g) = self.via {
            a.push("via".into());
            a.push(g.to_string());
        }
        if let Some(d) = &self.dev {
            a.push("dev".into());
            a.push(d.clone());
        }
        if let Some(m) = self.metric {
            a.push("metric".into());
            a.push(m.to_string());
        }
        a
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.args().join(" "))
    }
}

/// Where the kernel sends packets for an address (as `ip route get` tells).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// The next hop (of the address's family, an IPv6 one often link-local), `None` when
    /// the address is on-link.
    pub gateway: Option<IpAddr>,
    pub dev: String,
}

/// Runs a system command to completion and returns its stdout, mapping failures.
pub(crate) fn run(program: &std::path::Path, args: &[String]) -> Result<String, NetError> {
    let command = format!(
        "{} {}",
        program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        ),
        args.join(" ")
    );
    debug!("running `{command}`");
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    Err(classify(command, stderr))
}

fn classify(command: String, stderr: String) -> NetError {
    let low = stderr.to_ascii_lowercase();
    if low.contains("operation not permitted") || low.contains("permission denied") {
        NetError::NeedsCapNetAdmin { command }
    } else {
        NetError::Command { command, stderr }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_clear_host_bits() {
        let n = Ipv4Net::new(Ipv4Addr::new(10, 8, 0, 7), 24);
        assert_eq!(n.to_string(), "10.8.0.0/24");
        assert!(n.contains(Ipv4Addr::new(10, 8, 0, 200)));
        assert!(!n.contains(Ipv4Addr::new(10, 8, 1, 1)));
        assert_eq!(
            Ipv4Net::new(Ipv4Addr::new(200, 1, 2, 3), 1).to_string(),
            "128.0.0.0/1"
        );
        assert_eq!(
            Ipv4Net::new(Ipv4Addr::new(1, 2, 3, 4), 0).to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(Ipv4Net::new(Ipv4Addr::new(1, 2, 3, 4), 40).prefix(), 32);
    }

    #[test]
    fn v6_nets_clear_host_bits() {
        let a: Ipv6Addr = "fd00:8::1000".parse().expect("ip");
        let n = Ipv6Net::new(a, 64);
        assert_eq!(n.to_string(), "fd00:8::/64");
        assert!(n.contains(a));
        assert!(!n.contains("fd00:9::1".parse().expect("ip")));
        assert_eq!(Ipv6Net::new(a, 200).prefix(), 128);
        assert_eq!(Ipv6Net::new(a, 0).to_string(), "::/0");
        assert_eq!(
            Ipv6Net::new("fcff:1::1".parse().expect("ip"), 7).to_string(),
            "fc00::/7"
        );
        let net = IpNet::new(IpAddr::V6(a), 64);
        assert!(net.contains(IpAddr::V6(a)));
        assert!(!net.contains(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(IpNet::host(IpAddr::V6(a)).prefix(), 128);
        assert_eq!(IpNet::host(IpAddr::V4(Ipv4Addr::LOCALHOST)).prefix(), 32);
        assert_eq!(
            IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 7)), 24).to_string(),
            "10.8.0.0/24"
        );
    }

    #[test]
    fn netmasks() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)).ok(), Some(24));
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)).ok(), Some(0));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 255)).ok(), Some(32));
        assert!(matches!(
            prefix_len(Ipv4Addr::new(255, 0, 255, 0)),
            Err(NetError::BadNetmask(_))
        ));
    }

    #[test]
    fn route_args() {
        let r = RouteSpec {
            dst: Ipv4Net::new(Ipv4Addr::new(0, 0, 0, 0), 1).into(),
            via: Some(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 1))),
            dev: Some("tun0".into()),
            metric: Some(5),
        };
        assert_eq!(r.to_string(), "0.0.0.0/1 via 10.8.0.1 dev tun0 metric 5");
        let r = RouteSpec {
            dst: Ipv4Net::host(Ipv4Addr::new(192, 0, 2, 1)).into(),
            via: None,
            dev: None,
            metric: None,
        };
        assert_eq!(r.to_string(), "192.0.2.1/32");
        let r = RouteSpec {
            dst: IpNet::new("2000::".parse().expect("ip"), 4),
            via: None,
            dev: Some("tun0".into()),
            metric: None,
        };
        assert_eq!(r.to_string(), "2000::/4 dev tun0");
        assert_eq!(r.family(), Family::V6);
    }

    #[test]
    fn errors_name_the_fix() {
        let e = classify(
            "ip -4 route add 0.0.0.0/1".into(),
            "RTNETLINK answers: Operation not permitted".into(),
        );
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let e = classify(
            "ip x".into(),
            "RTNETLINK answers: Network is unreachable".into(),
        );
        assert!(matches!(e, NetError::Command { .. }));
        let e = NetError::Kernel {
            op: "ip -4 route add 0.0.0.0/1 dev tun0".into(),
            source: io::Error::from_raw_os_error(100),
            detail: Some("Nexthop device is not up".into()),
        };
        assert!(
            e.to_string()
                .ends_with("failed: Network is down (os error 100): Nexthop device is not up"),
            "{e}"
        );
    }

    proptest::proptest! {
        #[test]
        fn prefix_of_any_contiguous_mask_round_trips(p in 0u8..=32) {
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - u32::from(p)) };
            proptest::prop_assert_eq!(prefix_len(Ipv4Addr::from(mask)).ok(), Some(p));
        }

        #[test]
        fn nets_contain_their_members(a in proptest::prelude::any::<u32>(), p in 0u8..=32) {
            let ip = Ipv4Addr::from(a);
            let n = Ipv4Net::new(ip, p);
            proptest::prop_assert!(n.contains(ip));
            proptest::prop_assert_eq!(Ipv4Net::new(n.addr(), p), n);
        }

        #[test]
        fn v6_nets_contain_their_members(a in proptest::prelude::any::<u128>(), p in 0u8..=128) {
            let ip = Ipv6Addr::from(a);
            let n = Ipv6Net::new(ip, p);
            proptest::prop_assert!(n.contains(ip));
            proptest::prop_assert_eq!(Ipv6Net::new(n.addr(), p), n);
            proptest::prop_assert_eq!(u128::from(n.addr()).count_ones() <= a.count_ones(), true);
        }
    }
}
