//! The host's IPv4 interface addresses (`getifaddrs(3)`), to refuse a VPN network that
//! overlaps one the server is already on.
use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;

/// One IPv4 address of a local interface, with its prefix length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub interface: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Every IPv4 address configured on this network namespace's interfaces (loopback
/// included).
pub fn ipv4_interface_addrs() -> io::Result<Vec<InterfaceAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success getifaddrs stores a list that we
    // free with freeifaddrs below, on every path.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr of the list.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family != libc::AF_INET {
            continue;
        }
        // SAFETY: for AF_INET the address (and a non-null netmask) are sockaddr_in.
        let addr = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let prefix = if ifa.ifa_netmask.is_null() {
            32
        } else {
            // SAFETY: as above, the netmask of an AF_INET entry is a sockaddr_in.
            let mask = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
            u32::from_be(mask.sin_addr.s_addr).count_ones() as u8
        };
        // SAFETY: `ifa_name` is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
        out.push(InterfaceAddr {
            interface: name.to_string_lossy().into_owned(),
            addr: Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            prefix,
        });
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        let addrs = ipv4_interface_addrs().expect("getifaddrs");
        // Any namespace whose loopback is up has 127.0.0.1/8; one whose loopback is down
        // may list nothing, which must still not fail.
        for a in &addrs {
            assert!(a.prefix <= 32);
            assert!(!a.interface.is_empty());
        }
        if let Some(lo) = addrs.iter().find(|a| a.addr == Ipv4Addr::LOCALHOST) {
            assert_eq!(lo.prefix, 8);
        }
    }
}
