//! OpenVPN wire codecs: pure functions and small buffers, no I/O, no crypto, no state
//! machines.
//!
//! The model is OpenVPN 2.6's packet and message formats as written down, byte for byte,
//! in `shared/docs/openvpn-protocol.md` (the "fact sheet"; section numbers below refer to
//! it), each checked against the OpenVPN source cited next to the code. Every parser takes
//! untrusted bytes and returns a [`WireError`] instead of panicking; every encoder has a
//! property test that its parser reads back what it wrote.
//!
//! * [`Opcode`], [`op_byte`], [`split_op_byte`]: the first byte of every packet.
//! * [`parse_control_head`], [`ControlPacket`], [`AckBlock`]: control packets in their
//!   logical form. Wrapping (tls-auth, tls-crypt) is the crypto crate's job; it keeps the
//!   9-byte head in place, so the head is parsed apart from the unwrapped body.
//! * [`KeyMethod2`], [`PeerInfo`]: the first TLS plaintext in each direction.
//! * [`ControlMessageReader`], [`encode_control_message`], [`build_push_replies`],
//!   [`parse_push_reply`]: NUL-terminated control messages and PUSH_REPLY.
//! * [`parse_tlvs`]: early-negotiation TLVs in a reset payload.
//! * [`is_ping`], [`parse_occ`]: in-band keepalive and OCC messages of the data channel.
//! * [`TcpFramer`], [`FrameBuf`], [`encode_tcp_frame`]: the u16 length prefix of OpenVPN over TCP.
//!
//! Data-packet headers live with their AEAD code in `warren-crypto`.
#![forbid(unsafe_code)]

mod control;
mod cursor;
mod error;
mod keepalive;
mod km2;
mod message;
mod opcode;
mod peer_info;
mod tcp;
mod tlv;

pub use control::{
    AckBlock, CONTROL_HEAD_LEN, ControlPacket, MAX_ACKS, MAX_PIGGYBACK_ACKS, parse_control_head,
};
pub use error::WireError;
pub use keepalive::{
    OCC_MAGIC, OccMessage, PING_MAGIC, encode_occ_exit, encode_ping, is_occ, is_ping, occ_type,
    parse_occ,
};
pub use km2::{
    KEY_METHOD_2, KEY_METHOD_MASK, KeyMethod2, PRE_MASTER_LEN, RANDOM_LEN, TLS_OPTIONS_LEN,
    USER_PASS_LEN,
};
pub use message::{
    ControlMessageReader, DEFAULT_MAX_CONTROL_MESSAGE, PUSH_BUNDLE_SIZE, PushReply,
    TLS_CHANNEL_BUF_SIZE, build_push_replies, encode_control_message, parse_push_reply,
    try_build_push_replies, validate_push_option,
};
pub use opcode::{Opcode, op_byte, split_op_byte};
pub use peer_info::{PeerInfo, iv_proto};
pub use tcp::{FrameBuf, MAX_TCP_PACKET, TcpFramer, encode_tcp_frame};
pub use tlv::{
    EARLY_NEG_FLAG_RESEND_WKC, EARLY_NEG_MASK, EARLY_NEG_START, TLV_TYPE_EARLY_NEG_FLAGS,
    early_neg_flags, parse_tlvs, write_tlv,
};
