use crate::Opcode;

/// Why a codec rejected its input.
///
/// Every parser in this crate returns one of these instead of panicking; the engine counts
/// and drops the packet (or, for the stream codecs, closes the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended before the structure did. For the stream codecs (key method 2, TCP
    /// framing) this can also mean "wait for more bytes".
    #[error("input truncated")]
    Truncated,
    /// The opcode bits of the first byte name no OpenVPN opcode.
    #[error("unknown opcode {0}")]
    BadOpcode(u8),
    /// A data opcode where a control packet was expected.
    #[error("opcode {0:?} is not a control opcode")]
    NotControl(Opcode),
    /// The sender's session id is all zero (OpenVPN session_id.h: never valid).
    #[error("zero session id")]
    ZeroSessionId,
    /// An ACK block announcing more than [`crate::MAX_ACKS`] ids (reliable.c reliable_ack_parse).
    #[error("ack block with {0} ids, more than 8")]
    TooManyAcks(u8),
    /// Bytes left over after a structure that must fill its input.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// A key-method byte whose low 4 bits are not 2 (ssl.c key_method_2_read).
    #[error("key method/flags byte {0:#04x} is not key method 2")]
    BadKeyMethod(u8),
    /// A length-prefixed string that is not UTF-8.
    #[error("string field is not valid UTF-8")]
    BadString,
    /// A string longer than the protocol allows (`max` includes the NUL where the protocol
    /// counts it).
    #[error("string of {len} bytes exceeds the limit of {max}")]
    StringTooLong { len: usize, max: usize },
    /// A TCP length prefix of 0 or above the configured maximum (socket.c stream_buf_added:
    /// fatal for the connection).
    #[error("bad TCP packet length {0}")]
    BadTcpLength(usize),
    /// A packet too long to be framed with a u16 length prefix.
    #[error("packet of {0} bytes is too long for TCP framing")]
    PacketTooLong(usize),
    /// A push option containing a comma or a character that is not allowed on the control
    /// channel (push.c push_option_ex).
    #[error("push option contains a comma or a control character")]
    BadPushOption,
    /// A push option that cannot fit in one PUSH_REPLY (push.c send_push_options).
    #[error("push option of {0} bytes is too long")]
    PushOptionTooLong(usize),
}
