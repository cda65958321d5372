//! Opcodes and the opcode/key-id byte (OpenVPN ssl_pkt.h:37-65).

use warren_core::KeyId;

/// An OpenVPN packet opcode: the high 5 bits of every packet's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Opcode {
    /// Key method 1 client reset; rejected by OpenVPN 2.6.
    ControlHardResetClientV1 = 1,
    /// Key method 1 server reset; rejected by OpenVPN 2.6.
    ControlHardResetServerV1 = 2,
    /// Starts a renegotiation: msg-id 0 of the new key state.
    ControlSoftResetV1 = 3,
    /// TLS ciphertext.
    ControlV1 = 4,
    /// Acknowledgements only: no msg-id, no payload, never acked itself.
    AckV1 = 5,
    /// Data packet without peer-id.
    DataV1 = 6,
    ControlHardResetClientV2 = 7,
    ControlHardResetServerV2 = 8,
    /// Data packet with a 24-bit peer-id.
    DataV2 = 9,
    /// tls-crypt-v2 client reset (WKc appended after the wrapped packet).
    ControlHardResetClientV3 = 10,
    /// CONTROL_V1 with the tls-crypt-v2 WKc appended (early negotiation, fact sheet §3.3).
    ControlWkcV1 = 11,
}

impl Opcode {
    /// `None` for values OpenVPN does not define (0 and 12..=31).
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Opcode::ControlHardResetClientV1,
            2 => Opcode::ControlHardResetServerV1,
            3 => Opcode::ControlSoftResetV1,
            4 => Opcode::ControlV1,
            5 => Opcode::AckV1,
            6 => Opcode::DataV1,
            7 => Opcode::ControlHardResetClientV2,
            8 => Opcode::ControlHardResetServerV2,
            9 => Opcode::DataV2,
            10 => Opcode::ControlHardResetClientV3,
            11 => Opcode::ControlWkcV1,
            _ => return None,
        })
    }

    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Every opcode but the two data opcodes (the control channel, ACKs included).
    pub const fn is_control(self) -> bool {
        !self.is_data()
    }

    pub const fn is_data(self) -> bool {
        matches!(self, Opcode::DataV1 | Opcode::DataV2)
    }

    /// The hard resets that open a session (key-id 0, msg-id 0), any version.
    pub const fn is_hard_reset(self) -> bool {
        matches!(
            self,
            Opcode::ControlHardResetClientV1
                | Opcode::ControlHardResetServerV1
                | Opcode::ControlHardResetClientV2
                | Opcode::ControlHardResetServerV2
                | Opcode::ControlHardResetClientV3
        )
    }

    /// Control packets that carry a msg-id (all control opcodes except `P_ACK_V1`).
    pub const fn has_msg_id(self) -> bool {
        self.is_control() && !matches!(self, Opcode::AckV1)
    }
}

/// The first byte of every packet: `opcode << 3 | key_id` (ssl_pkt.h:37-39).
pub const fn op_byte(op: Opcode, key_id: KeyId) -> u8 {
    (op as u8) << 3 | key_id.get()
}

/// Splits a first byte into its raw 5-bit opcode and its key id.
pub const fn split_op_byte(b: u8) -> (u8, KeyId) {
    (b >> 3, KeyId::from_low_bits(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bytes() {
        // Fact sheet §0.
        assert_eq!(op_byte(Opcode::ControlHardResetClientV2, KeyId::ZERO), 0x38);
        assert_eq!(op_byte(Opcode::ControlHardResetServerV2, KeyId::ZERO), 0x40);
        assert_eq!(op_byte(Opcode::DataV2, KeyId::ZERO), 0x48);
        assert_eq!(
            op_byte(Opcode::ControlV1, KeyId::new(3).unwrap_or_default()),
            0x23
        );
        assert_eq!(split_op_byte(0x49), (9, KeyId::new(1).unwrap_or_default()));
        assert_eq!(split_op_byte(0x50), (10, KeyId::ZERO));
    }

    #[test]
    fn every_byte_round_trips() {
        for b in 0..=255u8 {
            let (raw, kid) = split_op_byte(b);
            match Opcode::from_u8(raw) {
                Some(op) => {
                    assert_eq!(op.as_u8(), raw);
                    assert_eq!(op_byte(op, kid), b);
                    assert_ne!(op.is_control(), op.is_data());
                }
                None => assert!(raw == 0 || raw >= 12),
            }
        }
    }
}
