//! The UDP server's stateless HMAC cookie (fact sheet §3.1): the server's session id in
//! its HARD_RESET_SERVER_V2 reply is a keyed hash of the time slot, the client address and
//! the client's session id, so the server keeps no state until the client proves it can
//! receive at that address.
//!
//! The cookie is private to the server (the client treats the server SID as opaque), so
//! only its properties matter, not byte equality with OpenVPN's mudp.c calculate_session_id_hmac.

use std::fmt;
use std::net::SocketAddr;

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;
use warren_core::{Duration, Instant, SessionId};

/// How many slots back a cookie stays valid: the current slot and the 2 previous ones
/// (ssl_pkt.c check_session_hmac_and_pkt_id in v2.6.22: `offset` -2..=0; vanilla 2.6.14
/// also accepted one future slot).
pub const COOKIE_SLOTS_ACCEPTED: u32 = 3;

/// A per-process random HMAC-SHA256 key for server cookies.
#[derive(Clone)]
pub struct CookieKey {
    key: hmac::Key,
}

impl fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieKey(<redacted>)")
    }
}

impl CookieKey {
    pub fn new(rng: &mut dyn warren_core::Rng) -> Self {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        rng.fill(&mut k[..]);
        CookieKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &k[..]),
        }
    }

    /// The cookie time slot for `now`: `now / ((hand_window + 1) / 2)` in whole seconds
    /// (ssl_pkt.c calculate_session_id_hmac: 30 s slots with the default 60 s hand-window).
    pub fn time_slot(now: Instant, hand_window: Duration) -> u32 {
        let width = hand_window.as_secs().saturating_add(1) / 2;
        // Truncation is fine: the slot is only compared with nearby slots.
        (now.as_secs() / width.max(1)) as u32
    }

    /// HMAC-SHA256(key, u32 time_slot || ip octets || port || client_sid) truncated to 8
    /// bytes; never all-zero (an all-zero result, probability 2^-64, becomes `..01`).
    ///
    /// The driver should pass canonical addresses (an IPv4-mapped IPv6 address and the
    /// plain IPv4 address give different cookies).
    pub fn compute(&self, time_slot: u32, addr: &SocketAddr, client_sid: &SessionId) -> SessionId {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&time_slot.to_be_bytes());
        match addr {
            SocketAddr::V4(a) => ctx.update(&a.ip().octets()),
            SocketAddr::V6(a) => ctx.update(&a.ip().octets()),
        }
        ctx.update(&addr.port().to_be_bytes());
        ctx.update(&client_sid.0);
        let tag = ctx.sign();
        let mut out = [0u8; 8];
        out.copy_from_slice(&tag.as_ref()[..8]);
        if out == [0u8; 8] {
            out[7] = 1;
        }
        SessionId(out)
    }

    /// Whether `cookie` is the cookie of `addr`/`client_sid` for `current_slot` or one of
    /// the 2 previous slots (constant-time per comparison).
    pub fn verify(
        &self,
        current_slot: u32,
        addr: &SocketAddr,
        client_sid: &SessionId,
        cookie: &SessionId,
    ) -> bool {
        let mut ok = subtle::Choice::from(0);
        for back in 0..COOKIE_SLOTS_ACCEPTED {
            let slot = current_slot.wrapping_sub(back);
            ok |= self.compute(slot, addr, client_sid).0.ct_eq(&cookie.0);
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::TestRng;

    #[test]
    fn deterministic_and_bound_to_inputs() {
        let k = CookieKey::new(&mut TestRng::seed(1));
        let a: SocketAddr = "192.0.2.1:1194".parse().expect("addr");
        let b: SocketAddr = "192.0.2.1:1195".parse().expect("addr");
        let c: SocketAddr = "[2001:db8::1]:1194".parse().expect("addr");
        let sid = SessionId([1, 2, 3, 4, 5, 6, 7, 8]);
        let x = k.compute(10, &a, &sid);
        assert_eq!(x, k.compute(10, &a, &sid));
        assert!(!x.is_zero());
        assert_ne!(x, k.compute(11, &a, &sid));
        assert_ne!(x, k.compute(10, &b, &sid));
        assert_ne!(x, k.compute(10, &c, &sid));
        assert_ne!(x, k.compute(10, &a, &SessionId([1, 2, 3, 4, 5, 6, 7, 9])));
        let other = CookieKey::new(&mut TestRng::seed(2));
        assert_ne!(x, other.compute(10, &a, &sid));
        assert_eq!(format!("{k:?}"), "CookieKey(<redacted>)");
    }

    #[test]
    fn verify_accepts_three_slots() {
        let k = CookieKey::new(&mut TestRng::seed(3));
        let a: SocketAddr = "198.51.100.7:40000".parse().expect("addr");
        let sid = SessionId([9; 8]);
        let cookie = k.compute(100, &a, &sid);
        assert!(!k.verify(99, &a, &sid, &cookie));
        assert!(k.verify(100, &a, &sid, &cookie));
        assert!(k.verify(101, &a, &sid, &cookie));
        assert!(k.verify(102, &a, &sid, &cookie));
        assert!(!k.verify(103, &a, &sid, &cookie));
        let b: SocketAddr = "198.51.100.8:40000".parse().expect("addr");
        assert!(!k.verify(100, &b, &sid, &cookie));
    }

    #[test]
    fn time_slots() {
        let hw = Duration::from_secs(60);
        assert_eq!(CookieKey::time_slot(Instant::from_secs(0), hw), 0);
        assert_eq!(CookieKey::time_slot(Instant::from_secs(29), hw), 0);
        assert_eq!(CookieKey::time_slot(Instant::from_secs(30), hw), 1);
        assert_eq!(CookieKey::time_slot(Instant::from_secs(95), hw), 3);
        assert_eq!(
            CookieKey::time_slot(Instant::from_secs(5), Duration::ZERO),
            5
        );
    }
}
