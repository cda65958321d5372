use std::fmt;

/// An OpenVPN control-channel session id: 8 random bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SessionId(pub [u8; 8]);

impl SessionId {
    pub const LEN: usize = 8;

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    /// A fresh random, non-zero session id.
    pub fn random(rng: &mut dyn super::Rng) -> Self {
        loop {
            let mut b = [0u8; 8];
            rng.fill(&mut b);
            if b != [0; 8] {
                return SessionId(b);
            }
        }
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The 3-bit key id carried in every packet's first byte (0 for the first TLS session,
/// then cycling 1..=7, never 0 again: OpenVPN ssl.c key_state_init).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, PartialOrd, Ord)]
pub struct KeyId(u8);

impl KeyId {
    pub const ZERO: KeyId = KeyId(0);

    /// `None` when `v` does not fit in 3 bits.
    pub const fn new(v: u8) -> Option<Self> {
        if v < 8 { Some(KeyId(v)) } else { None }
    }

    /// The low 3 bits of `v`.
    pub const fn from_low_bits(v: u8) -> Self {
        KeyId(v & 7)
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    /// The key id of the next renegotiation: 0,1..7,1..7 (ssl.c key_state_soft_reset).
    pub const fn next(self) -> Self {
        let n = (self.0 + 1) & 7;
        if n == 0 { KeyId(1) } else { KeyId(n) }
    }
}

/// The 24-bit peer id the server assigns and pushes (`peer-id N`), carried in `P_DATA_V2`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, PartialOrd, Ord)]
pub struct PeerId(u32);

impl PeerId {
    /// OpenVPN's MAX_PEER_ID: "no peer id" on the wire.
    pub const UNDEFINED_WIRE: u32 = 0x00FF_FFFF;

    pub const fn new(v: u32) -> Option<Self> {
        if v < Self::UNDEFINED_WIRE {
            Some(PeerId(v))
        } else {
            None
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

/// The number, as OpenVPN logs it and pushes it (`peer-id 3`).
impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<PeerId> for u32 {
    fn from(id: PeerId) -> u32 {
        id.0
    }
}

/// A data-channel packet id (32 bit, starts at 1, never wraps).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, PartialOrd, Ord)]
pub struct PacketId(pub u32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_cycle_skips_zero() {
        let mut k = KeyId::ZERO;
        let mut seen = Vec::new();
        for _ in 0..9 {
            k = k.next();
            seen.push(k.get());
        }
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6, 7, 1, 2]);
        assert_eq!(KeyId::new(8), None);
    }
}
