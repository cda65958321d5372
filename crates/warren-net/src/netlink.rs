//! rtnetlink, synchronously: the requests warren-net makes to the kernel's routing tables,
//! addresses and links, in either address family.
//!
//! Built on netlink-packet-route (the message types) and the plain blocking
//! `netlink_sys::Socket`, not on rtnetlink's async handle: a client changes routes a handful
//! of times per connection, never on the data path, from a synchronous event loop; a tokio
//! runtime and netlink-proto's connection task would add a thread of machinery and about
//! twenty crates for what is here one `sendto` and one or two `recvfrom`s. The socket is
//! opened per operation ([`Rtnl::open`]), in the network namespace and with the
//! credentials the process has at that moment (the kernel checks `CAP_NET_ADMIN` against
//! both the opener and the sender), never kept across a privilege drop, and closed on exec.
//! Every wait for an answer is bounded ([`ANSWER_WAIT`]).
//!
//! Requests mirror what iproute2 sends for the equivalent command (table main, protocol
//! `boot`, scope `link` for an IPv4 route without a gateway, `NLM_F_CREATE | NLM_F_EXCL`
//! on additions), so the routes and addresses warren makes look exactly like those an
//! admin would make with `ip`; each request is logged at debug as that `ip` command.
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tracing::debug;

/// How long to wait for each answer. The kernel answers a routing request within the
/// `sendto` call, so this only bounds a wait that should never happen.
pub(crate) const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// At most this many datagrams are read for one request (a dump of a full routing table
/// on a router is a few hundred).
const MAX_DATAGRAMS: usize = 1 << 16;

/// `NLMSGERR_ATTR_MSG`: the extended ack's human-readable message.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLM_F_ACK_TLVS` in the header of an `NLMSG_ERROR`.
const NLM_F_ACK_TLVS: u16 = 0x200;

/// A failed netlink request: the error number and, when the kernel gave one (extended
/// ack), its message ("Nexthop device is not up").
#[derive(Debug)]
pub(crate) struct NlError {
    pub(crate) source: io::Error,
    pub(crate) detail: Option<String>,
}

impl NlError {
    pub(crate) fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

impl From<io::Error> for NlError {
    fn from(source: io::Error) -> NlError {
        NlError {
            source,
            detail: None,
        }
    }
}

fn invalid(what: impl std::fmt::Display) -> NlError {
    NlError::from(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("undecodable netlink answer: {what}"),
    ))
}

/// The address family of `a`, as netlink spells it.
fn family(a: IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn max_prefix(a: IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `-4` or `-6`, for the `ip` command a request is logged as.
fn ip_flag(a: IpAddr) -> &'static str {
    match a {
        IpAddr::V4(_) => "-4",
        IpAddr::V6(_) => "-6",
    }
}

/// A route as the request for adding or deleting it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// The destination network (host bits clear).
    pub(crate) dst: IpAddr,
    pub(crate) prefix: u8,
    pub(crate) via: Option<IpAddr>,
    /// The output device's index.
    pub(crate) oif: Option<u32>,
    pub(crate) metric: Option<u32>,
}

/// A route of the main table as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListedRoute {
    pub(crate) dst: IpAddr,
    pub(crate) prefix: u8,
    pub(crate) kind: RouteType,
    pub(crate) via: Option<IpAddr>,
    /// Output devices: one, or each next hop's of a multipath route.
    pub(crate) oifs: Vec<u32>,
    pub(crate) metric: Option<u32>,
}

/// An address of a device as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListedAddress {
    pub(crate) addr: IpAddr,
    pub(crate) prefix: u8,
    pub(crate) index: u32,
}

/// The kernel's answer to a route lookup (`ip route get`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lookup {
    pub(crate) kind: RouteType,
    pub(crate) gateway: Option<IpAddr>,
    pub(crate) oif: Option<u32>,
}

/// One `NETLINK_ROUTE` socket, for one operation.
#[derive(Debug)]
pub(crate) struct Rtnl {
    // Never cloned: `netlink_sys::Socket` derives `Clone` over its raw descriptor, and
    // both copies would close it.
    sock: Socket,
    seq: u32,
}

impl Rtnl {
    /// Opens a socket (in the calling thread's network namespace).
    pub(crate) fn open() -> Result<Rtnl, NlError> {
        let sock = Socket::new(NETLINK_ROUTE)?;
        socket2::SockRef::from(&sock).set_read_timeout(Some(ANSWER_WAIT))?;
        // Extended acks carry the kernel's reason for an error; capped acks leave out the
        // echo of the request. Both are optional (older kernels): ignore a refusal.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        Ok(Rtnl { sock, seq: 0 })
    }

    /// Sends `msg` and collects the answers up to the acknowledgement (or the end of a
    /// dump). `flags` beyond `NLM_F_REQUEST | NLM_F_ACK`: `NLM_F_DUMP`, `NLM_F_CREATE`, ...
    fn talk(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send_to(&buf, &SocketAddr::new(0, 0), 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        for _ in 0..MAX_DATAGRAMS {
            let (data, from) = self.sock.recv_from_full().map_err(|e| {
                if e.kind() == io::ErrorKind::WouldBlock {
                    NlError::from(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel within {ANSWER_WAIT:?}"),
                    ))
                } else {
                    NlError::from(e)
                }
            })?;
            if from.port_number() != 0 {
                // Not from the kernel.
                continue;
            }
            let mut off = 0;
            while off < data.len() {
                let rest = &data[off..];
                let len = NetlinkBuffer::new_checked(rest).map_err(invalid)?.length() as usize;
                let Some(one) = rest.get(..len) else {
                    return Err(invalid("truncated message"));
                };
                off += len.next_multiple_of(4);
                let m = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(one) {
                    Ok(m) => m,
                    // One entry of a dump that this library cannot read (an attribute
                    // it does not know in a way it cannot skip): not one of ours.
                    Err(e) if dump => {
                        debug!("netlink: skipping an undecodable dump entry: {e}");
                        continue;
                    }
                    Err(e) => return Err(invalid(e)),
                };
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        let Some(code) = e.code else {
                            return Ok(out);
                        };
                        return Err(NlError {
                            source: io::Error::from_raw_os_error(code.get().saturating_abs()),
                            detail: ext_ack_message(m.header.flags, &e.header),
                        });
                    }
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
        }
        Err(invalid("no end of answer"))
    }

    /// The index of the device named `name`; `None` when there is none.
    pub(crate) fn link_index(&mut self, name: &str) -> Result<Option<u32>, NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.talk(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|a| match a {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The name of the device with index `index`; `None` when there is none.
    pub(crate) fn link_name(&mut self, index: u32) -> Result<Option<String>, NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.talk(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|a| match a {
                RouteNetlinkMessage::NewLink(l) => {
                    l.attributes.into_iter().find_map(|at| match at {
                        LinkAttribute::IfName(n) => Some(n),
                        _ => None,
                    })
                }
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Brings a device up and/or sets its MTU (`ip link set dev D [up] [mtu M]`).
    pub(crate) fn link_set(
        &mut self,
        index: u32,
        up: bool,
        mtu: Option<u32>,
    ) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if up {
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
        }
        if let Some(m) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(m));
        }
        self.talk(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    /// Where the kernel would send a packet for `dst` (`ip route get DST`).
    pub(crate) fn route_get(&mut self, dst: IpAddr) -> Result<Lookup, NlError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst);
        msg.header.destination_prefix_length = max_prefix(dst);
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        let answers = self.talk(RouteNetlinkMessage::GetRoute(msg), 0)?;
        let route = answers
            .into_iter()
            .find_map(|a| match a {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .ok_or_else(|| invalid("no route in the answer to a route lookup"))?;
        let mut out = Lookup {
            kind: route.header.kind,
            gateway: None,
            oif: None,
        };
        for at in route.attributes {
            match at {
                RouteAttribute::Gateway(g) => out.gateway = route_ip(&g),
                RouteAttribute::Oif(i) => out.oif = Some(i),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Adds a route to the main table (`ip route add`); fails with `EEXIST` when it is
    /// there already.
    pub(crate) fn route_add(&mut self, r: &Route) -> Result<(), NlError> {
        let mut msg = route_message(r);
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        // iproute2: IPv6 routes are always universe; an IPv4 route without a gateway is
        // on-link.
        msg.header.scope = match (r.dst, r.via) {
            (IpAddr::V4(_), None) => RouteScope::Link,
            _ => RouteScope::Universe,
        };
        self.talk(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Deletes a route of the main table (`ip route del`): the kernel matches the given
    /// fields and ignores the rest (any metric when none is given).
    pub(crate) fn route_del(&mut self, r: &Route) -> Result<(), NlError> {
        let mut msg = route_message(r);
        msg.header.scope = match r.dst {
            IpAddr::V4(_) => RouteScope::NoWhere,
            IpAddr::V6(_) => RouteScope::Universe,
        };
        self.talk(RouteNetlinkMessage::DelRoute(msg), 0).map(drop)
    }

    /// The routes of the main table of `v6`'s family (`ip route show table main`), in the
    /// kernel's order, without the cache.
    pub(crate) fn routes(&mut self, v6: bool) -> Result<Vec<ListedRoute>, NlError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let answers = self.talk(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for a in answers {
            let RouteNetlinkMessage::NewRoute(r) = a else {
                continue;
            };
            if r.header.flags.contains(RouteFlags::Cloned) {
                continue;
            }
            let mut table = u32::from(r.header.table);
            let mut dst = None;
            let mut via = None;
            let mut oifs = Vec::new();
            let mut metric = None;
            for at in r.attributes {
                match at {
                    RouteAttribute::Table(t) => table = t,
                    RouteAttribute::Destination(d) => dst = route_ip(&d),
                    RouteAttribute::Gateway(g) => via = route_ip(&g),
                    RouteAttribute::Oif(i) => oifs.push(i),
                    RouteAttribute::Priority(p) => metric = Some(p),
                    RouteAttribute::MultiPath(hops) => {
                        oifs.extend(hops.iter().map(|h| h.interface_index));
                    }
                    _ => {}
                }
            }
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            let dst = dst.unwrap_or(if v6 {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            });
            out.push(ListedRoute {
                dst,
                prefix: r.header.destination_prefix_length,
                kind: r.header.kind,
                via,
                oifs,
                metric,
            });
        }
        Ok(out)
    }

    /// The addresses of `v6`'s family, of device `index` or of all devices (`ip addr`).
    pub(crate) fn addresses(
        &mut self,
        v6: bool,
        index: Option<u32>,
    ) -> Result<Vec<ListedAddress>, NlError> {
        let mut msg = AddressMessage::default();
        msg.header.family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let answers = self.talk(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for a in answers {
            let RouteNetlinkMessage::NewAddress(m) = a else {
                continue;
            };
            if index.is_some_and(|i| i != m.header.index) {
                continue;
            }
            // IFA_LOCAL is the device's own address; IFA_ADDRESS the peer's on a
            // point-to-point link, else the same. IPv6 only sends IFA_ADDRESS.
            let mut local = None;
            let mut address = None;
            for at in m.attributes {
                match at {
                    AddressAttribute::Local(l) => local = Some(l),
                    AddressAttribute::Address(l) => address = Some(l),
                    _ => {}
                }
            }
            if let Some(addr) = local.or(address) {
                out.push(ListedAddress {
                    addr,
                    prefix: m.header.prefix_len,
                    index: m.header.index,
                });
            }
        }
        Ok(out)
    }

    /// Adds an address to device `index` (`ip addr add A/P dev D [nodad]`).
    pub(crate) fn addr_add(
        &mut self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
        nodad: bool,
    ) -> Result<(), NlError> {
        let mut msg = address_message(index, addr, prefix);
        if nodad {
            msg.header.flags = AddressHeaderFlags::Nodad;
        }
        // iproute2's default scope: host for 127/8, else global.
        if matches!(addr, IpAddr::V4(a) if a.is_loopback()) {
            msg.header.scope = AddressScope::Host;
        }
        self.talk(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Deletes an address of device `index` (`ip addr del A/P dev D`).
    pub(crate) fn addr_del(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<(), NlError> {
        let msg = address_message(index, addr, prefix);
        self.talk(RouteNetlinkMessage::DelAddress(msg), 0).map(drop)
    }
}

fn address_message(index: u32, addr: IpAddr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family(addr);
    msg.header.prefix_len = prefix.min(max_prefix(addr));
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(addr));
    msg.attributes.push(AddressAttribute::Address(addr));
    msg
}

fn route_message(r: &Route) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(r.dst);
    msg.header.destination_prefix_length = r.prefix.min(max_prefix(r.dst));
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    if r.prefix > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(r.dst)));
    }
    if let Some(g) = r.via {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    if let Some(i) = r.oif {
        msg.attributes.push(RouteAttribute::Oif(i));
    }
    if let Some(m) = r.metric {
        msg.attributes.push(RouteAttribute::Priority(m));
    }
    msg
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The text of the extended ack (`NLMSGERR_ATTR_MSG`) in an error's payload after the
/// error code: the echoed request (only its header when capped), then attributes.
fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = payload.get(..4)?;
        u32::from_ne_bytes(len.try_into().ok()?) as usize
    };
    let mut tlvs = payload.get(echoed.next_multiple_of(4)..)?;
    while tlvs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([tlvs[0], tlvs[1]]));
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            let s = String::from_utf8_lossy(&text[..end]).trim().to_owned();
            return (!s.is_empty()).then_some(s);
        }
        tlvs = tlvs.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

/// The `ip` command an address request stands for, for logs.
pub(crate) fn addr_command(verb: &str, addr: IpAddr, prefix: u8, dev: &str, nodad: bool) -> String {
    format!(
        "ip {} addr {verb} {addr}/{prefix} dev {dev}{}",
        ip_flag(addr),
        if nodad { " nodad" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_ack_text() {
        // Capped: 16 bytes of echoed header, then one NLMSGERR_ATTR_MSG attribute.
        let mut p = vec![0u8; 16];
        let msg = b"Nexthop device is not up\0";
        let len = u16::try_from(4 + msg.len()).expect("len");
        p.extend_from_slice(&len.to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(msg);
        assert_eq!(
            ext_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &p).as_deref(),
            Some("Nexthop device is not up")
        );
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &p), None);
        assert_eq!(
            ext_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &p[..10]),
            None
        );
        // A bad attribute length ends the search.
        let mut bad = p.clone();
        bad[16] = 200;
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &bad), None);
    }

    #[test]
    fn requests_look_like_iproute2s() {
        let r = Route {
            dst: "0.0.0.0".parse().expect("ip"),
            prefix: 1,
            via: Some("10.8.0.1".parse().expect("ip")),
            oif: Some(7),
            metric: Some(5),
        };
        let m = route_message(&r);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(m.header.destination_prefix_length, 1);
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(m.attributes.contains(&RouteAttribute::Priority(5)));
        let v6 = Route {
            dst: "::".parse().expect("ip"),
            prefix: 0,
            via: None,
            oif: Some(3),
            metric: None,
        };
        // A default route carries no destination attribute.
        assert!(
            !route_message(&v6)
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
        assert_eq!(
            addr_command("add", "fd00::2".parse().expect("ip"), 64, "tun0", true),
            "ip -6 addr add fd00::2/64 dev tun0 nodad"
        );
    }
}
