//! Control packets: the 9-byte head and the logical body (fact sheet §1.2; OpenVPN
//! ssl_pkt.c:121-197, reliable.c reliable_ack_parse / reliable_ack_write).
//!
//! The wire form of a control packet depends on the wrapping (none, tls-auth, tls-crypt,
//! tls-crypt-v2), but every wrapping keeps the first 9 bytes (opcode/key-id byte and the
//! sender's session id) in clear and in place, and after removing the wrap leaves the same
//! logical body:
//!
//! ```text
//! ack_count (1) | ack_msg_id[ack_count] (4 each) | peer_session_id (8, iff ack_count > 0)
//! msg_id (4, absent in P_ACK_V1) | payload (absent in P_ACK_V1)
//! ```
//!
//! So this module parses `head` and `body` separately; the crypto crate removes the wrap in
//! between.

use warren_core::{KeyId, SessionId};

use crate::cursor::Cursor;
use crate::{Opcode, WireError, op_byte, split_op_byte};

/// Length of the clear head of every control packet: opcode/key-id byte + session id.
pub const CONTROL_HEAD_LEN: usize = 1 + SessionId::LEN;

/// RELIABLE_ACK_SIZE (reliable.h:44): the most ACKs one packet may carry. OpenVPN rejects a
/// packet with more (reliable.c reliable_ack_parse).
pub const MAX_ACKS: usize = 8;

/// CONTROL_SEND_ACK_MAX (ssl.h:55): the most ACKs piggybacked on a packet that carries a
/// msg-id. A dedicated `P_ACK_V1` may carry [`MAX_ACKS`].
pub const MAX_PIGGYBACK_ACKS: usize = 4;

/// Reads the clear head of a control packet: opcode, key id and the sender's session id.
///
/// Fails on short input, unknown or data opcodes and an all-zero session id.
pub fn parse_control_head(packet: &[u8]) -> Result<(Opcode, KeyId, SessionId), WireError> {
    let mut c = Cursor::new(packet);
    let (op, kid) = parse_op(c.u8()?)?;
    let sid = SessionId(c.array()?);
    if sid.is_zero() {
        return Err(WireError::ZeroSessionId);
    }
    Ok((op, kid, sid))
}

fn parse_op(b: u8) -> Result<(Opcode, KeyId), WireError> {
    let (raw, kid) = split_op_byte(b);
    let op = Opcode::from_u8(raw).ok_or(WireError::BadOpcode(raw))?;
    if !op.is_control() {
        return Err(WireError::NotControl(op));
    }
    Ok((op, kid))
}

/// The ACK block of a control packet.
///
/// Invariants (checked by [`ControlPacket::parse`], expected by the writers): at most
/// [`MAX_ACKS`] ids, and `remote_session` is `Some` exactly when `ids` is non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckBlock {
    /// Acknowledged msg-ids, in the order the sender wrote them (newest first for OpenVPN's
    /// MRU list).
    pub ids: Vec<u32>,
    /// The session id of the peer whose packets are acknowledged. The receiver must check
    /// it equals its own session id (reliable.c reliable_ack_read).
    pub remote_session: Option<SessionId>,
}

impl AckBlock {
    /// No acknowledgements (`ack_count = 0`).
    pub const fn empty() -> Self {
        AckBlock {
            ids: Vec::new(),
            remote_session: None,
        }
    }

    /// Acknowledges `ids` (at most [`MAX_ACKS`] are kept) for the peer `remote_session`.
    /// An empty `ids` gives the empty block.
    pub fn new(remote_session: SessionId, ids: &[u32]) -> Self {
        let ids = &ids[..ids.len().min(MAX_ACKS)];
        if ids.is_empty() {
            return Self::empty();
        }
        AckBlock {
            ids: ids.to_vec(),
            remote_session: Some(remote_session),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Encoded size: 1, or 1 + 4n + 8.
    pub fn encoded_len(&self) -> usize {
        let n = self.ids.len().min(MAX_ACKS);
        if n == 0 {
            1
        } else {
            1 + 4 * n + SessionId::LEN
        }
    }

    fn parse(c: &mut Cursor<'_>) -> Result<Self, WireError> {
        let count = c.u8()?;
        if usize::from(count) > MAX_ACKS {
            return Err(WireError::TooManyAcks(count));
        }
        let mut ids = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            ids.push(c.u32()?);
        }
        let remote_session = if count > 0 {
            Some(SessionId(c.array()?))
        } else {
            None
        };
        Ok(AckBlock {
            ids,
            remote_session,
        })
    }

    /// Appends the block. Writes at most [`MAX_ACKS`] ids; an `ids` without a
    /// `remote_session` (a caller bug) writes a zero session id, which every peer rejects.
    pub fn write(&self, out: &mut Vec<u8>) {
        debug_assert!(
            self.ids.len() <= MAX_ACKS,
            "ack block with more than {MAX_ACKS} ids"
        );
        debug_assert_eq!(
            self.ids.is_empty(),
            self.remote_session.is_none(),
            "ack block invariant"
        );
        let ids = &self.ids[..self.ids.len().min(MAX_ACKS)];
        // The cast cannot truncate: ids.len() <= 8.
        out.push(ids.len() as u8);
        for id in ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
        if !ids.is_empty() {
            out.extend_from_slice(&self.remote_session.unwrap_or_default().0);
        }
    }
}

/// One control packet in logical form (before wrapping / after unwrapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPacket<'a> {
    pub opcode: Opcode,
    pub key_id: KeyId,
    /// The sender's session id.
    pub session_id: SessionId,
    pub acks: AckBlock,
    /// The reliability-layer id; `None` exactly for `P_ACK_V1`.
    pub msg_id: Option<u32>,
    /// TLS ciphertext, early-negotiation TLVs in a reset, or empty. Always empty for
    /// `P_ACK_V1`.
    pub payload: &'a [u8],
}

impl<'a> ControlPacket<'a> {
    /// Parses a control packet from its clear `head` (first 9 bytes) and its unwrapped
    /// `body` (starting at `ack_count`).
    pub fn parse(head: &[u8; CONTROL_HEAD_LEN], body: &'a [u8]) -> Result<Self, WireError> {
        let (opcode, key_id, session_id) = parse_control_head(head)?;
        let mut c = Cursor::new(body);
        let acks = AckBlock::parse(&mut c)?;
        let (msg_id, payload) = if opcode.has_msg_id() {
            (Some(c.u32()?), c.rest())
        } else {
            // P_ACK_V1: nothing may follow the ACK block.
            if c.remaining() != 0 {
                return Err(WireError::TrailingBytes(c.remaining()));
            }
            (None, &[][..])
        };
        Ok(ControlPacket {
            opcode,
            key_id,
            session_id,
            acks,
            msg_id,
            payload,
        })
    }

    /// Parses an unwrapped packet (no tls-auth / tls-crypt): head and body back to back.
    pub fn parse_plain(packet: &'a [u8]) -> Result<Self, WireError> {
        let head: &[u8; CONTROL_HEAD_LEN] = packet
            .get(..CONTROL_HEAD_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(WireError::Truncated)?;
        Self::parse(head, &packet[CONTROL_HEAD_LEN..])
    }

    /// The clear head: opcode/key-id byte and session id.
    pub fn head(&self) -> [u8; CONTROL_HEAD_LEN] {
        let mut h = [0u8; CONTROL_HEAD_LEN];
        h[0] = op_byte(self.opcode, self.key_id);
        h[1..].copy_from_slice(&self.session_id.0);
        h
    }

    /// Length of what [`Self::write_body`] appends.
    pub fn body_len(&self) -> usize {
        let msg = if self.opcode.has_msg_id() {
            4 + self.payload.len()
        } else {
            0
        };
        self.acks.encoded_len() + msg
    }

    /// Appends the body: ACK block, then (except for `P_ACK_V1`) msg-id and payload.
    ///
    /// The opcode decides the layout: a missing `msg_id` on a packet that needs one (a
    /// caller bug) is written as 0, and a `P_ACK_V1` never carries msg-id or payload.
    pub fn write_body(&self, out: &mut Vec<u8>) {
        debug_assert_eq!(
            self.opcode.has_msg_id(),
            self.msg_id.is_some(),
            "msg_id iff not P_ACK_V1"
        );
        self.acks.write(out);
        if self.opcode.has_msg_id() {
            out.extend_from_slice(&self.msg_id.unwrap_or(0).to_be_bytes());
            out.extend_from_slice(self.payload);
        }
    }

    /// Appends the whole unwrapped packet (head then body).
    pub fn write_plain(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head());
        self.write_body(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("test hex")
    }

    const CLIENT_SID: [u8; 8] = [0x30, 0x6c, 0x9f, 0x7c, 0xe8, 0xba, 0xd2, 0xf1];

    #[test]
    fn lab_client_reset_plaintext() {
        // §12.4: HARD_RESET_CLIENT_V2 head and tls-crypt plaintext `00 00000000`.
        let wire = h(
            "38306c9f7ce8bad2f1000000016b024a674a454a0f5708fe1995889a530eb015bb08d3b8ca577bdd59052d8cf474bceee8547e280ed1",
        );
        let (op, kid, sid) = parse_control_head(&wire).expect("head");
        assert_eq!(
            (op, kid, sid),
            (
                Opcode::ControlHardResetClientV2,
                KeyId::ZERO,
                SessionId(CLIENT_SID)
            )
        );
        let head: [u8; 9] = wire[..9].try_into().expect("9");
        let body = h("0000000000");
        let p = ControlPacket::parse(&head, &body).expect("parse");
        assert_eq!(p.acks, AckBlock::empty());
        assert_eq!(p.msg_id, Some(0));
        assert!(p.payload.is_empty());
        assert_eq!(p.head(), head);
        let mut out = Vec::new();
        p.write_body(&mut out);
        assert_eq!(out, body);
        // Plain wire form is 14 bytes (fact sheet §1.3).
        let mut plain = Vec::new();
        p.write_plain(&mut plain);
        assert_eq!(plain.len(), 14);
        assert_eq!(ControlPacket::parse_plain(&plain).expect("plain"), p);
    }

    #[test]
    fn lab_server_reset_plaintext() {
        let wire = h(
            "40078fb7bd85396133000000016b024a6782e738599f3a7d78b4b1c5f51f564cfcb5aa9326b4f319cbed2bbf447e6753a9238bcad5bdc7ef34994d4c9b7a433af76b",
        );
        let head: [u8; 9] = wire[..9].try_into().expect("9");
        let body = h("0100000000306c9f7ce8bad2f100000000");
        let p = ControlPacket::parse(&head, &body).expect("parse");
        assert_eq!(p.opcode, Opcode::ControlHardResetServerV2);
        assert_eq!(
            p.session_id,
            SessionId(h("078fb7bd85396133").try_into().expect("8"))
        );
        assert_eq!(p.acks, AckBlock::new(SessionId(CLIENT_SID), &[0]));
        assert_eq!(p.msg_id, Some(0));
        assert!(p.payload.is_empty());
        let mut out = Vec::new();
        p.write_body(&mut out);
        assert_eq!(out, body);
        assert_eq!(p.body_len(), body.len());
    }

    #[test]
    fn ack_v1_has_no_msg_id() {
        let head = ControlPacket {
            opcode: Opcode::AckV1,
            key_id: KeyId::ZERO,
            session_id: SessionId(CLIENT_SID),
            acks: AckBlock::empty(),
            msg_id: None,
            payload: &[],
        }
        .head();
        let body = h("0200000001000000001122334455667788");
        let p = ControlPacket::parse(&head, &body).expect("ack");
        assert_eq!(p.acks.ids, vec![1, 0]);
        assert_eq!(p.msg_id, None);
        let mut trailing = body.clone();
        trailing.push(0);
        assert_eq!(
            ControlPacket::parse(&head, &trailing),
            Err(WireError::TrailingBytes(1))
        );
    }

    #[test]
    fn rejects_bad_input() {
        let mut head = [0x20u8, 1, 2, 3, 4, 5, 6, 7, 8];
        // Nine acks: more than RELIABLE_ACK_SIZE.
        let mut body = vec![9u8];
        body.extend_from_slice(&[0; 9 * 4 + 8 + 4]);
        assert_eq!(
            ControlPacket::parse(&head, &body),
            Err(WireError::TooManyAcks(9))
        );
        assert_eq!(
            ControlPacket::parse(&head, &[1, 0, 0, 0]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            ControlPacket::parse(&head, &[0, 0, 0]),
            Err(WireError::Truncated)
        );
        assert_eq!(ControlPacket::parse(&head, &[]), Err(WireError::Truncated));
        head[0] = 0x48;
        assert_eq!(
            parse_control_head(&head),
            Err(WireError::NotControl(Opcode::DataV2))
        );
        head[0] = 0x60;
        assert_eq!(parse_control_head(&head), Err(WireError::BadOpcode(12)));
        assert_eq!(
            parse_control_head(&[0x38, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(WireError::ZeroSessionId)
        );
        assert_eq!(parse_control_head(&[0x38, 1, 2]), Err(WireError::Truncated));
    }

    fn arb_control_opcode() -> impl Strategy<Value = Opcode> {
        prop::sample::select(vec![
            Opcode::ControlHardResetClientV1,
            Opcode::ControlHardResetServerV1,
            Opcode::ControlSoftResetV1,
            Opcode::ControlV1,
            Opcode::AckV1,
            Opcode::ControlHardResetClientV2,
            Opcode::ControlHardResetServerV2,
            Opcode::ControlHardResetClientV3,
            Opcode::ControlWkcV1,
        ])
    }

    proptest! {
        #[test]
        fn round_trip(
            op in arb_control_opcode(),
            kid in 0u8..8,
            sid in any::<[u8; 8]>().prop_filter("non-zero", |s| *s != [0; 8]),
            peer in any::<[u8; 8]>(),
            ids in prop::collection::vec(any::<u32>(), 0..=MAX_ACKS),
            msg_id in any::<u32>(),
            payload in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let has = op.has_msg_id();
            let p = ControlPacket {
                opcode: op,
                key_id: KeyId::from_low_bits(kid),
                session_id: SessionId(sid),
                acks: AckBlock::new(SessionId(peer), &ids),
                msg_id: has.then_some(msg_id),
                payload: if has { &payload } else { &[] },
            };
            let mut body = Vec::new();
            p.write_body(&mut body);
            prop_assert_eq!(body.len(), p.body_len());
            let q = ControlPacket::parse(&p.head(), &body).expect("round trip");
            prop_assert_eq!(q, p);
        }

        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = ControlPacket::parse_plain(&data);
        }
    }
}
